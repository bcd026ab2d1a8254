//! Sequences owned by columns: the `serial` types and `GENERATED ... AS IDENTITY`, and the
//! functions that use them (`nextval`, `currval`, `lastval`, `setval`,
//! `pg_get_serial_sequence`).
//!
//! A sequence's counter is an id space of the catalog (`IdKind::Sequence`): each SQL
//! node reserves `SEQUENCE_BATCH` values at a time and hands them out from memory, so
//! `nextval` rarely leaves the node. Values are unique; within one node they increase;
//! across nodes, and across a restart (which skips the rest of a batch), they need not
//! be consecutive, as PostgreSQL's cached sequences are not. Like PostgreSQL's,
//! `nextval` is not transactional: a rolled-back INSERT does not give its value back.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    DataType as AstType, Expr, SequenceOptions, UnaryOperator, Value,
};
use flotilla_catalog::{CatalogRef, CatalogSnapshot, IdKind, Identity, SequenceDef, SqlType};
use parking_lot::Mutex;

use crate::dml::relation_name;
use crate::error::SqlError;

/// The integer type of a `serial` type name, if it is one.
pub(crate) fn serial_type(t: &AstType) -> Option<SqlType> {
    let AstType::Custom(name, modifiers) = t else {
        return None;
    };
    if !modifiers.is_empty() {
        return None;
    }
    match relation_name(name).as_str() {
        "smallserial" | "serial2" => Some(SqlType::Int16),
        "serial" | "serial4" => Some(SqlType::Int32),
        "bigserial" | "serial8" => Some(SqlType::Int64),
        _ => None,
    }
}

/// The values a column of `ty` holds, if it is an integer type.
fn type_range(ty: &SqlType) -> Option<(i64, i64)> {
    match ty {
        SqlType::Int16 => Some((i16::MIN.into(), i16::MAX.into())),
        SqlType::Int32 => Some((i32::MIN.into(), i32::MAX.into())),
        SqlType::Int64 => Some((i64::MIN, i64::MAX)),
        _ => None,
    }
}

/// A sequence option's value: an integer literal, possibly negative.
fn option_value(what: &str, expr: &Expr) -> Result<i64, SqlError> {
    let bad = || SqlError::new("22023", format!("{what} must be an integer, not {expr}"));
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().map_err(|_| bad()),
            _ => Err(bad()),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => option_value(what, expr)?.checked_neg().ok_or_else(bad),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => option_value(what, expr),
        _ => Err(bad()),
    }
}

/// The sequence of a `serial` or identity column `column` of `table`, with PostgreSQL's
/// defaults and checks. Its name is `<table>_<column>_seq`, or with a number appended if
/// `taken` says that name is used; its `id` is left 0 for the caller to allocate.
pub(crate) fn column_sequence(
    table: &str,
    column: &str,
    ty: &SqlType,
    identity: Option<Identity>,
    options: &[SequenceOptions],
    taken: impl Fn(&str) -> bool,
) -> Result<SequenceDef, SqlError> {
    let Some((type_min, type_max)) = type_range(ty) else {
        return Err(SqlError::new(
            "22023",
            format!(
                "identity column type must be smallint, integer, or bigint, not {}",
                ty.pg_name()
            ),
        ));
    };
    let (mut increment, mut min, mut max, mut start) = (1, None, None, None);
    for option in options {
        match option {
            SequenceOptions::IncrementBy(e, _) => increment = option_value("INCREMENT", e)?,
            SequenceOptions::MinValue(e) => {
                min = e
                    .as_ref()
                    .map(|e| option_value("MINVALUE", e))
                    .transpose()?
            }
            SequenceOptions::MaxValue(e) => {
                max = e
                    .as_ref()
                    .map(|e| option_value("MAXVALUE", e))
                    .transpose()?
            }
            SequenceOptions::StartWith(e, _) => start = Some(option_value("START", e)?),
            // A hint of how many values a session keeps; a node here keeps a batch.
            SequenceOptions::Cache(e) => {
                if option_value("CACHE", e)? < 1 {
                    return Err(SqlError::new(
                        "22023",
                        format!("CACHE ({e}) must be greater than zero"),
                    ));
                }
            }
            SequenceOptions::Cycle(false) => {}
            SequenceOptions::Cycle(true) => {
                return Err(SqlError::unsupported("CYCLE for a sequence"));
            }
        }
    }
    if increment == 0 {
        return Err(SqlError::new("22023", "INCREMENT must not be zero"));
    }
    let type_name = ty.pg_name();
    let min = min.unwrap_or(if increment > 0 { 1 } else { type_min });
    let max = max.unwrap_or(if increment > 0 { type_max } else { -1 });
    for (what, v) in [("MINVALUE", min), ("MAXVALUE", max)] {
        if !(type_min..=type_max).contains(&v) {
            return Err(SqlError::new(
                "22023",
                format!("{what} ({v}) is out of range for sequence data type {type_name}"),
            ));
        }
    }
    if min >= max {
        return Err(SqlError::new(
            "22023",
            format!("MINVALUE ({min}) must be less than MAXVALUE ({max})"),
        ));
    }
    let start = start.unwrap_or(if increment > 0 { min } else { max });
    if start < min {
        return Err(SqlError::new(
            "22023",
            format!("START value ({start}) cannot be less than MINVALUE ({min})"),
        ));
    }
    if start > max {
        return Err(SqlError::new(
            "22023",
            format!("START value ({start}) cannot be greater than MAXVALUE ({max})"),
        ));
    }
    let base = format!("{table}_{column}_seq");
    let name = std::iter::once(base.clone())
        .chain((1..).map(|i| format!("{base}{i}")))
        .find(|n| !taken(n))
        .expect("an unused name");
    Ok(SequenceDef {
        id: 0,
        name,
        start,
        increment,
        min,
        max,
        identity,
    })
}

/// The default of a column numbered by `sequence`.
pub(crate) fn nextval_default(sequence: &SequenceDef) -> String {
    format!("nextval('{}')", sequence.name.replace('\'', "''"))
}

/// A sequence name as `nextval` takes it (PostgreSQL's `regclass` text): optionally
/// schema-qualified, folded to lower case unless double-quoted.
fn parse_sequence_name(text: &str) -> String {
    let text = text.trim();
    let text = text
        .strip_prefix("public.")
        .or_else(|| text.strip_prefix("\"public\"."))
        .unwrap_or(text);
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => text.to_lowercase(),
    }
}

/// What `currval` and `lastval` remember: per session, as in PostgreSQL.
#[derive(Debug, Default)]
pub(crate) struct SessionSequences {
    /// The last value `nextval` returned per sequence id.
    current: Mutex<HashMap<i64, i64>>,
    /// The sequence id and value of the session's last `nextval`.
    last: Mutex<Option<(i64, i64)>>,
}

/// The sequence functions of one session, over the node's catalog.
#[derive(Clone)]
pub(crate) struct Sequences {
    catalog: CatalogRef,
    session: Arc<SessionSequences>,
}

impl std::fmt::Debug for Sequences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequences").finish_non_exhaustive()
    }
}

impl PartialEq for Sequences {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.session, &other.session)
    }
}

impl Eq for Sequences {}

impl std::hash::Hash for Sequences {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.session).hash(state)
    }
}

fn no_sequence(name: &str) -> SqlError {
    SqlError::new("42P01", format!("relation \"{name}\" does not exist"))
}

/// The sequence named `name` in `snapshot`; a table or view of that name is the wrong
/// kind of relation (42809), as in PostgreSQL.
fn sequence_named<'a>(
    snapshot: &'a CatalogSnapshot,
    name: &str,
) -> Result<&'a SequenceDef, SqlError> {
    match snapshot.sequence(name) {
        Some((_, _, sequence)) => Ok(sequence),
        None if snapshot.relation_exists(name) => Err(SqlError::new(
            "42809",
            format!("\"{name}\" is not a sequence"),
        )),
        None => Err(no_sequence(name)),
    }
}

impl Sequences {
    pub(crate) fn new(catalog: CatalogRef) -> Self {
        Self {
            catalog,
            session: Arc::default(),
        }
    }

    /// The next `n` values of the sequence named `name` (as `nextval` takes it).
    pub(crate) fn next(&self, name: &str, n: usize) -> Result<Vec<i64>, SqlError> {
        let name = parse_sequence_name(name);
        let snapshot = self.catalog.snapshot();
        let sequence = sequence_named(&snapshot, &name)?;
        self.next_of(sequence, n)
    }

    /// The next `n` values of `sequence`.
    pub(crate) fn next_of(&self, sequence: &SequenceDef, n: usize) -> Result<Vec<i64>, SqlError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let ordinals = self
            .catalog
            .allocate(IdKind::Sequence(sequence.id), n as u64)?;
        let values = ordinals
            .map(|k| {
                sequence.value(k).ok_or_else(|| {
                    let (verb, bound) = if sequence.increment > 0 {
                        ("maximum", sequence.max)
                    } else {
                        ("minimum", sequence.min)
                    };
                    SqlError::new(
                        "2200H",
                        format!(
                            "nextval: reached {verb} value of sequence \"{}\" ({bound})",
                            sequence.name
                        ),
                    )
                })
            })
            .collect::<Result<Vec<i64>, SqlError>>()?;
        let last = *values.last().expect("n > 0");
        self.session.current.lock().insert(sequence.id, last);
        *self.session.last.lock() = Some((sequence.id, last));
        Ok(values)
    }

    /// `setval(name, value, is_called)`: the next `nextval` returns the value after `value`
    /// (`is_called`) or `value` itself, on whichever node asks first. Values a node had
    /// reserved before are handed out first there, as a PostgreSQL session's cached
    /// values are; this node drops its own.
    fn set(&self, name: &str, value: i64, is_called: bool) -> Result<i64, SqlError> {
        let name = parse_sequence_name(name);
        let snapshot = self.catalog.snapshot();
        let sequence = sequence_named(&snapshot, &name)?;
        if !(sequence.min..=sequence.max).contains(&value) {
            return Err(SqlError::new(
                "22003",
                format!(
                    "setval: value {value} is out of bounds for sequence \"{name}\" ({}..{})",
                    sequence.min, sequence.max
                ),
            ));
        }
        let increment = i128::from(sequence.increment);
        let next = i128::from(value) + if is_called { increment } else { 0 };
        let offset = next - i128::from(sequence.start);
        // The counter numbers the values START + k × INCREMENT (k ≥ 0), so it can be set to
        // those only: every value of a sequence with the default START and INCREMENT 1.
        if offset % increment != 0 || offset / increment < 0 {
            return Err(SqlError::unsupported(format!(
                "setval of sequence \"{name}\" to a value it never reaches from START {} by \
                 INCREMENT {} (the next value would be {next})",
                sequence.start, sequence.increment
            )));
        }
        // Past i64 the sequence is exhausted either way: `value` says so.
        let ordinal = i64::try_from(offset / increment + 1).unwrap_or(i64::MAX);
        self.catalog.restart_sequence(sequence.id, ordinal)?;
        if is_called {
            // As in PostgreSQL: currval reports the value set; lastval is unchanged.
            self.session.current.lock().insert(sequence.id, value);
        }
        Ok(value)
    }

    fn current(&self, name: &str) -> Result<i64, SqlError> {
        let name = parse_sequence_name(name);
        let snapshot = self.catalog.snapshot();
        let sequence = sequence_named(&snapshot, &name)?;
        self.session
            .current
            .lock()
            .get(&sequence.id)
            .copied()
            .ok_or_else(|| {
                SqlError::new(
                    "55000",
                    format!("currval of sequence \"{name}\" is not yet defined in this session"),
                )
            })
    }

    fn last(&self) -> Result<i64, SqlError> {
        let (id, value) = (*self.session.last.lock())
            .ok_or_else(|| SqlError::new("55000", "lastval is not yet defined in this session"))?;
        let exists = self.catalog.snapshot().tables.values().any(|t| {
            t.columns
                .iter()
                .any(|c| matches!(&c.sequence, Some(s) if s.id == id))
        });
        if !exists {
            return Err(SqlError::new("55000", "lastval: sequence no longer exists"));
        }
        Ok(value)
    }

    /// `pg_get_serial_sequence(table, column)`: the qualified name of the sequence that
    /// numbers the column, NULL if none does.
    fn serial_sequence(&self, table: &str, column: &str) -> Result<Option<String>, SqlError> {
        let table_name = parse_sequence_name(table);
        let snapshot = self.catalog.snapshot();
        let table = snapshot
            .table(&table_name)
            .ok_or_else(|| no_sequence(&table_name))?;
        let column_name = column.to_string();
        let column = table.column(&column_name).ok_or_else(|| {
            SqlError::new(
                "42703",
                format!(
                    "column \"{column_name}\" of relation \"{}\" does not exist",
                    table.name
                ),
            )
        })?;
        Ok(column
            .sequence
            .as_ref()
            .map(|s| format!("public.{}", s.name)))
    }

    /// The session's sequence functions, to register in each statement's context.
    pub(crate) fn udfs(&self) -> Vec<Arc<ScalarUDF>> {
        let text = || vec![DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View];
        [
            (
                SequenceFn::NextVal,
                Signature::uniform(1, text(), Volatility::Volatile),
            ),
            (
                SequenceFn::CurrVal,
                Signature::uniform(1, text(), Volatility::Volatile),
            ),
            (
                SequenceFn::LastVal,
                Signature::exact(vec![], Volatility::Volatile),
            ),
            (
                SequenceFn::SerialSequence,
                Signature::uniform(2, text(), Volatility::Stable),
            ),
            (
                SequenceFn::SetVal,
                Signature::one_of(
                    vec![TypeSignature::Any(2), TypeSignature::Any(3)],
                    Volatility::Volatile,
                ),
            ),
        ]
        .into_iter()
        .map(|(function, signature)| {
            Arc::new(ScalarUDF::new_from_impl(SequenceUdf {
                function,
                signature,
                sequences: self.clone(),
            }))
        })
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SequenceFn {
    NextVal,
    CurrVal,
    LastVal,
    SerialSequence,
    SetVal,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SequenceUdf {
    function: SequenceFn,
    signature: Signature,
    sequences: Sequences,
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Argument `i` of every row as text (NULL as `None`).
fn text_arg(args: &ScalarFunctionArgs, i: usize) -> DfResult<Vec<Option<String>>> {
    let array = args.args[i].to_array(args.number_rows)?;
    let array = cast(&array, &DataType::Utf8)?;
    let strings = array
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("text argument".into()))?;
    Ok((0..strings.len())
        .map(|r| (!strings.is_null(r)).then(|| strings.value(r).to_string()))
        .collect())
}

impl ScalarUDFImpl for SequenceUdf {
    fn name(&self) -> &str {
        match self.function {
            SequenceFn::NextVal => "nextval",
            SequenceFn::CurrVal => "currval",
            SequenceFn::LastVal => "lastval",
            SequenceFn::SerialSequence => "pg_get_serial_sequence",
            SequenceFn::SetVal => "setval",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(match self.function {
            SequenceFn::SerialSequence => DataType::Utf8,
            _ => DataType::Int64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let s = &self.sequences;
        let array: ArrayRef = match self.function {
            SequenceFn::NextVal => match &args.args[0] {
                // One name for every row: one allocation for all of them.
                ColumnarValue::Scalar(v) => match v.try_as_str().flatten() {
                    Some(name) => Arc::new(Int64Array::from(s.next(name, n).map_err(external)?)),
                    None => ScalarValue::Int64(None).to_array_of_size(n)?,
                },
                ColumnarValue::Array(_) => {
                    let mut values = Vec::with_capacity(n);
                    for name in text_arg(&args, 0)? {
                        values.push(match name {
                            Some(name) => Some(s.next(&name, 1).map_err(external)?[0]),
                            None => None,
                        });
                    }
                    Arc::new(Int64Array::from(values))
                }
            },
            SequenceFn::CurrVal => {
                let mut values = Vec::with_capacity(n);
                for name in text_arg(&args, 0)? {
                    values.push(
                        name.map(|name| s.current(&name))
                            .transpose()
                            .map_err(external)?,
                    );
                }
                Arc::new(Int64Array::from(values))
            }
            SequenceFn::LastVal => {
                ScalarValue::Int64(Some(s.last().map_err(external)?)).to_array_of_size(n)?
            }
            SequenceFn::SetVal => {
                let names = text_arg(&args, 0)?;
                let values = cast(&args.args[1].to_array(n)?, &DataType::Int64)?;
                let values = values
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| DataFusionError::Internal("bigint argument".into()))?;
                let called = match args.args.get(2) {
                    Some(c) => Some(cast(&c.to_array(n)?, &DataType::Boolean)?),
                    None => None,
                };
                let called = called
                    .as_ref()
                    .map(|c| {
                        c.as_any()
                            .downcast_ref::<BooleanArray>()
                            .ok_or_else(|| DataFusionError::Internal("boolean argument".into()))
                    })
                    .transpose()?;
                let mut out = Vec::with_capacity(n);
                for (row, name) in names.into_iter().enumerate() {
                    let is_called = match called {
                        None => Some(true),
                        Some(c) => (!c.is_null(row)).then(|| c.value(row)),
                    };
                    // Strict, as in PostgreSQL: a NULL argument gives NULL and sets nothing.
                    out.push(match (name, values.is_valid(row), is_called) {
                        (Some(name), true, Some(is_called)) => Some(
                            s.set(&name, values.value(row), is_called)
                                .map_err(external)?,
                        ),
                        _ => None,
                    });
                }
                Arc::new(Int64Array::from(out))
            }
            SequenceFn::SerialSequence => {
                let (tables, columns) = (text_arg(&args, 0)?, text_arg(&args, 1)?);
                let mut values = Vec::with_capacity(n);
                for (table, column) in tables.into_iter().zip(columns) {
                    values.push(match (table, column) {
                        (Some(t), Some(c)) => s.serial_sequence(&t, &c).map_err(external)?,
                        _ => None,
                    });
                }
                Arc::new(StringArray::from(values))
            }
        };
        Ok(ColumnarValue::Array(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_names_fold_like_regclass_text() {
        assert_eq!(parse_sequence_name("T_id_seq"), "t_id_seq");
        assert_eq!(parse_sequence_name("public.t_id_seq"), "t_id_seq");
        assert_eq!(parse_sequence_name("\"Odd\"\"Seq\""), "Odd\"Seq");
    }

    #[test]
    fn options_are_checked_as_postgres_checks_them() {
        let seq = |opts: &[SequenceOptions]| {
            column_sequence("t", "id", &SqlType::Int32, None, opts, |_| false)
        };
        let lit = |n: i64| Expr::value(Value::Number(n.abs().to_string(), false));
        let neg = |n: i64| Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: Box::new(lit(n)),
        };
        let s = seq(&[]).unwrap();
        assert_eq!(
            (s.start, s.increment, s.min, s.max),
            (1, 1, 1, i32::MAX as i64)
        );
        let down = seq(&[SequenceOptions::IncrementBy(neg(2), true)]).unwrap();
        assert_eq!((down.start, down.min, down.max), (-1, i32::MIN as i64, -1));
        assert_eq!(down.value(2), Some(-3));
        let e = seq(&[SequenceOptions::IncrementBy(lit(0), true)]).unwrap_err();
        assert_eq!(e.code, "22023");
        let e = seq(&[SequenceOptions::MaxValue(Some(lit(1 << 40)))]).unwrap_err();
        assert!(
            e.message
                .contains("out of range for sequence data type integer"),
            "{e}"
        );
        let e = seq(&[SequenceOptions::StartWith(lit(0), true)]).unwrap_err();
        assert!(
            e.message.contains("cannot be less than MINVALUE (1)"),
            "{e}"
        );
        assert_eq!(
            seq(&[SequenceOptions::Cycle(true)]).unwrap_err().code,
            "0A000"
        );
        let taken = column_sequence("t", "id", &SqlType::Int64, None, &[], |n| n == "t_id_seq");
        assert_eq!(taken.unwrap().name, "t_id_seq1");
        let text = column_sequence("t", "id", &SqlType::Text, None, &[], |_| false);
        assert_eq!(text.unwrap_err().code, "22023");
    }

    #[test]
    fn values_stop_at_the_bound() {
        let s = SequenceDef {
            id: 1,
            name: "s".into(),
            start: 5,
            increment: 5,
            min: 1,
            max: 12,
            identity: None,
        };
        assert_eq!(
            (s.value(1), s.value(2), s.value(3)),
            (Some(5), Some(10), None)
        );
        assert_eq!(s.value(i64::MAX), None);
    }
}
