//! The `uuid` type: 16 bytes, read and written as Arrow `FixedSizeBinary(16)`.
//!
//! Flotilla has no other `FixedSizeBinary(16)` (`bytea` is `Binary`), so the Arrow type
//! alone says "uuid", in plans and on the wire. DataFusion knows nothing of PostgreSQL's
//! uuid: it plans no `::uuid`, compares no text with a `FixedSizeBinary`, and Arrow's
//! casts between them copy raw bytes. So:
//!
//! - a type planner (`types::PgTypes`) plans `uuid` in casts as `FixedSizeBinary(16)`;
//! - a pass over each statement as planned (`untyped`) turns a string literal
//!   compared with a uuid into a uuid, as PostgreSQL types an untyped literal by the
//!   other operand (22P02 if it is not one, as there);
//! - an analyzer rule after type coercion ([`UuidCasts`]) replaces each cast between a
//!   string type and uuid with a function reading or printing PostgreSQL's text forms;
//! - `gen_random_uuid()` returns a uuid (version 4).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryBuilder, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;

use crate::error::SqlError;

/// Bytes in a uuid.
pub const UUID_BYTES: usize = 16;

/// The Arrow type of a uuid.
pub const ARROW_TYPE: DataType = DataType::FixedSizeBinary(UUID_BYTES as i32);

/// Whether values of `data_type` are uuids.
pub fn is_uuid(data_type: &DataType) -> bool {
    *data_type == ARROW_TYPE
}

/// Reads a uuid as PostgreSQL's `uuid_in` does: 32 hex digits, upper or lower case, with
/// an optional hyphen after any group of four and optionally inside braces. No blanks.
pub fn parse(text: &str) -> Option<[u8; UUID_BYTES]> {
    let inner = match text.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => text,
    };
    let bytes = inner.as_bytes();
    let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
    let mut out = [0u8; UUID_BYTES];
    let mut at = 0;
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (hex(at)? * 16 + hex(at + 1)?) as u8;
        at += 2;
        // A hyphen may follow each pair of bytes but the last.
        if i % 2 == 1 && i < UUID_BYTES - 1 && bytes.get(at) == Some(&b'-') {
            at += 1;
        }
    }
    (at == bytes.len()).then_some(out)
}

/// A uuid as PostgreSQL prints it: lower-case hex in groups of 8-4-4-4-12.
pub fn text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// PostgreSQL's error for text that is not a uuid.
pub(crate) fn invalid(text: &str) -> SqlError {
    SqlError::new(
        "22P02",
        format!("invalid input syntax for type uuid: \"{text}\""),
    )
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The uuid a string literal stands for; `None` if `expr` is not a string literal.
pub(crate) fn uuid_literal(expr: &Expr) -> Option<DfResult<Expr>> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let text = match value {
        ScalarValue::Utf8(t) | ScalarValue::LargeUtf8(t) | ScalarValue::Utf8View(t) => t,
        _ => return None,
    };
    let bytes = match text {
        None => None,
        Some(t) => match parse(t) {
            Some(b) => Some(b.to_vec()),
            None => return Some(Err(external(invalid(t)))),
        },
    };
    Some(Ok(Expr::Literal(
        ScalarValue::FixedSizeBinary(UUID_BYTES as i32, bytes),
        None,
    )))
}

/// Reads text as uuids (`'…'::uuid`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct UuidIn {
    signature: Signature,
}

impl ScalarUDFImpl for UuidIn {
    fn name(&self) -> &str {
        "uuid_in"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(ARROW_TYPE)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        map_array(&args.args[0], |input| {
            let strings = datafusion::arrow::compute::cast(input, &DataType::Utf8)?;
            let strings = strings.as_string::<i32>();
            let mut out = FixedSizeBinaryBuilder::with_capacity(strings.len(), UUID_BYTES as i32);
            for v in strings {
                match v {
                    None => out.append_null(),
                    Some(t) => out.append_value(parse(t).ok_or_else(|| external(invalid(t)))?)?,
                }
            }
            Ok(Arc::new(out.finish()))
        })
    }
}

/// Prints uuids as text (`id::text`), as PostgreSQL does.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UuidOut {
    to: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for UuidOut {
    fn name(&self) -> &str {
        "uuid_out"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.to.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        map_array(&args.args[0], |input| {
            let uuids = input.as_fixed_size_binary_opt().ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "uuid_out takes a uuid, not {}",
                    input.data_type()
                ))
            })?;
            let mut out = StringBuilder::with_capacity(uuids.len(), uuids.len() * 36);
            for v in uuids {
                out.append_option(v.map(text));
            }
            let out: ArrayRef = Arc::new(out.finish());
            Ok(if self.to == DataType::Utf8 {
                out
            } else {
                datafusion::arrow::compute::cast(&out, &self.to)?
            })
        })
    }
}

/// Applies `f` to an argument, keeping a scalar a scalar.
fn map_array(
    arg: &ColumnarValue,
    f: impl Fn(&ArrayRef) -> DfResult<ArrayRef>,
) -> DfResult<ColumnarValue> {
    Ok(match arg {
        ColumnarValue::Array(a) => ColumnarValue::Array(f(a)?),
        ColumnarValue::Scalar(s) => {
            let out = f(&s.to_array()?)?;
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        }
    })
}

/// `gen_random_uuid()`: a random (version 4) uuid per row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct GenRandomUuid {
    signature: Signature,
}

impl ScalarUDFImpl for GenRandomUuid {
    fn name(&self) -> &str {
        "gen_random_uuid"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(ARROW_TYPE)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let mut out = FixedSizeBinaryBuilder::with_capacity(args.number_rows, UUID_BYTES as i32);
        for _ in 0..args.number_rows {
            let mut b: [u8; UUID_BYTES] = rand::random();
            // RFC 9562: version 4 (random), variant 10.
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            out.append_value(b)?;
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `gen_random_uuid()`, registered in every statement's context.
pub(crate) fn gen_random_uuid() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(GenRandomUuid {
        signature: Signature::exact(vec![], Volatility::Volatile),
    }))
}

/// The cast rewrite, registered after DataFusion's analyzer rules.
#[derive(Debug)]
pub(crate) struct UuidCasts {
    uuid_in: Arc<ScalarUDF>,
    utf8: Arc<ScalarUDF>,
    large_utf8: Arc<ScalarUDF>,
    utf8_view: Arc<ScalarUDF>,
}

impl UuidCasts {
    pub(crate) fn new() -> Self {
        let out = |to: DataType| {
            Arc::new(ScalarUDF::new_from_impl(UuidOut {
                to,
                signature: Signature::exact(vec![ARROW_TYPE], Volatility::Immutable),
            }))
        };
        Self {
            uuid_in: Arc::new(ScalarUDF::new_from_impl(UuidIn {
                signature: Signature::any(1, Volatility::Immutable),
            })),
            utf8: out(DataType::Utf8),
            large_utf8: out(DataType::LargeUtf8),
            utf8_view: out(DataType::Utf8View),
        }
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
        let Some((inner, to, from)) = crate::types::cast_parts(&expr, schema) else {
            return Ok(Transformed::no(expr));
        };
        let udf = if is_uuid(to) && crate::types::is_string(&from) {
            &self.uuid_in
        } else if is_uuid(&from) {
            match to {
                DataType::Utf8 => &self.utf8,
                DataType::LargeUtf8 => &self.large_utf8,
                DataType::Utf8View => &self.utf8_view,
                _ => return Ok(Transformed::no(expr)),
            }
        } else {
            return Ok(Transformed::no(expr));
        };
        let args = vec![inner.clone()];
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(udf.clone(), args),
        )))
    }
}

impl AnalyzerRule for UuidCasts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        crate::overflow::rewrite_expressions(plan, |e, schema| self.rewrite(e, schema))
    }

    fn name(&self) -> &str {
        "flotilla_uuid_casts"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_read_every_form_postgresql_reads() {
        let canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for form in [
            canonical,
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        ] {
            let bytes = parse(form).unwrap_or_else(|| panic!("{form} is a uuid"));
            assert_eq!(text(&bytes), canonical, "{form}");
        }
        for not_one in [
            "",
            "a0eebc99",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "a0e-ebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            assert_eq!(parse(not_one), None, "{not_one:?}");
        }
    }
}
