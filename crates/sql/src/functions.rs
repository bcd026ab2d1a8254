//! Functions PostgreSQL clients call that DataFusion lacks or answers differently.

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

/// `version()`: drivers and tools parse it as PostgreSQL's, so it starts the same way.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(format!(
            "PostgreSQL 15.0 (Flotilla {}) on {}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        )))))
    }
}

/// A text fixed for the session: `current_user`, `current_database()`, `current_schema`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionText {
    name: &'static str,
    value: String,
    signature: Signature,
}

impl ScalarUDFImpl for SessionText {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            self.value.clone(),
        ))))
    }
}

/// The session functions of a client connected as `user` to `database`: PostgreSQL's
/// names for them, with and without parentheses as the SQL standard spells them. There
/// is one schema, `public`.
pub(crate) fn session_texts(user: &str, database: &str) -> Vec<Arc<ScalarUDF>> {
    [
        ("current_user", user),
        ("session_user", user),
        ("user", user),
        ("current_role", user),
        ("current_database", database),
        ("current_catalog", database),
        ("current_schema", "public"),
    ]
    .into_iter()
    .map(|(name, value)| {
        Arc::new(ScalarUDF::new_from_impl(SessionText {
            name,
            value: value.to_string(),
            signature: Signature::exact(vec![], Volatility::Stable),
        }))
    })
    .collect()
}

/// `localtimestamp`: the transaction's start time as a `timestamp` without time zone,
/// in the session's time zone (UTC), fixed when the statement is planned, as `now()`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LocalTimestamp {
    signature: Signature,
}

impl ScalarUDFImpl for LocalTimestamp {
    fn name(&self) -> &str {
        "localtimestamp"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
    }

    fn simplify(
        &self,
        args: Vec<datafusion::logical_expr::Expr>,
        info: &SimplifyContext,
    ) -> DfResult<ExprSimplifyResult> {
        Ok(match info.query_execution_start_time() {
            Some(now) => ExprSimplifyResult::Simplified(datafusion::logical_expr::Expr::Literal(
                ScalarValue::TimestampMicrosecond(Some(now.timestamp_micros()), None),
                None,
            )),
            None => ExprSimplifyResult::Original(args),
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Err(datafusion::error::DataFusionError::Internal(
            "localtimestamp is replaced by its value when planned".into(),
        ))
    }
}

/// The time on the clock, as a `timestamptz`: `clock_timestamp()` each time it is
/// computed, `statement_timestamp()` once, when the statement is planned (PostgreSQL's is
/// when the statement arrived; `now()` is the transaction's start).
#[derive(Debug, PartialEq, Eq, Hash)]
struct WallClock {
    name: &'static str,
    once_per_statement: bool,
    signature: Signature,
}

impl WallClock {
    fn now() -> ScalarValue {
        ScalarValue::TimestampMicrosecond(
            Some(chrono::Utc::now().timestamp_micros()),
            Some(crate::types::UTC.into()),
        )
    }
}

impl ScalarUDFImpl for WallClock {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some(crate::types::UTC.into()),
        ))
    }

    fn simplify(
        &self,
        args: Vec<datafusion::logical_expr::Expr>,
        _info: &SimplifyContext,
    ) -> DfResult<ExprSimplifyResult> {
        Ok(match self.once_per_statement {
            true => ExprSimplifyResult::Simplified(datafusion::logical_expr::Expr::Literal(
                Self::now(),
                None,
            )),
            false => ExprSimplifyResult::Original(args),
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(Self::now()))
    }
}

/// `pg_table_is_visible(oid)`: whether a relation is on the search path. Every relation
/// is, in the one schema `public`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TableIsVisible {
    signature: Signature,
}

impl ScalarUDFImpl for TableIsVisible {
    fn name(&self) -> &str {
        "pg_table_is_visible"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let oids = args.args[0].to_array(args.number_rows)?;
        let visible: datafusion::arrow::array::BooleanArray = (0..oids.len())
            .map(|i| (!oids.is_null(i)).then_some(true))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(visible)))
    }
}

/// `pg_typeof(any)`: the name of its argument's type, as PostgreSQL prints a `regtype`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeOf {
    signature: Signature,
}

impl ScalarUDFImpl for PgTypeOf {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let name = crate::error::pg_type_name(&args.args[0].data_type());
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
    }
}

/// The functions to register in every statement's context.
pub(crate) fn all() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::new_from_impl(Version {
            signature: Signature::exact(vec![], Volatility::Stable),
        })),
        Arc::new(ScalarUDF::new_from_impl(LocalTimestamp {
            signature: Signature::exact(vec![], Volatility::Stable),
        })),
        Arc::new(ScalarUDF::new_from_impl(WallClock {
            name: "clock_timestamp",
            once_per_statement: false,
            signature: Signature::exact(vec![], Volatility::Volatile),
        })),
        Arc::new(ScalarUDF::new_from_impl(WallClock {
            name: "statement_timestamp",
            once_per_statement: true,
            signature: Signature::exact(vec![], Volatility::Stable),
        })),
        crate::pg_uuid::gen_random_uuid(),
        Arc::new(ScalarUDF::new_from_impl(PgTypeOf {
            signature: Signature::any(1, Volatility::Immutable),
        })),
        Arc::new(ScalarUDF::new_from_impl(TableIsVisible {
            signature: Signature::any(1, Volatility::Stable),
        })),
        // Replaces DataFusion's, which takes chrono's patterns, not PostgreSQL's.
        Arc::new(ScalarUDF::new_from_impl(crate::to_char::ToChar::new())),
    ]
    .into_iter()
    .chain(crate::pg_json::functions())
    .chain(crate::json_edit::functions())
    .chain(crate::json_sets::functions())
    .chain(crate::pg_array::functions())
    .chain(crate::untyped::functions())
    .chain(crate::pg_builtins::functions())
    .chain(crate::pg_date_functions::functions())
    .collect()
}
