//! Errors for the client, with their SQLSTATE, and the mapping from lower layers.

use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use flotilla_catalog::CatalogError;
use flotilla_txn::TxnError;

pub use crate::api::SqlError;

impl SqlError {
    /// An error with SQLSTATE `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            position: None,
            hint: None,
            detail: None,
        }
    }

    /// Adds a detail (PostgreSQL's DETAIL field).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a 1-based character position.
    pub fn with_position(mut self, position: usize) -> Self {
        self.position = Some(position);
        self
    }

    /// 0A000: a feature Flotilla does not have yet, named.
    pub fn unsupported(feature: impl std::fmt::Display) -> Self {
        Self::new("0A000", format!("{feature} is not supported"))
    }

    /// XX000: a bug or an unexpected failure below.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new("XX000", message.to_string())
    }

    /// True for errors after which the client should retry the transaction.
    pub fn is_serialization_failure(&self) -> bool {
        self.code == "40001" || self.code == "40P01"
    }
}

/// 23502: a NULL for a NOT NULL column.
pub(crate) fn not_null_violation(table: &str, column: &str) -> SqlError {
    SqlError::new(
        "23502",
        format!(
            "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
        ),
    )
}

/// PostgreSQL's name for an Arrow type, for messages.
pub(crate) fn pg_type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => "numeric".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary => "bytea".into(),
        DataType::LargeBinary => "jsonb".into(),
        DataType::BinaryView => "json".into(),
        t if crate::pg_uuid::is_uuid(t) => "uuid".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Null => "unknown".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("{}[]", pg_type_name(f.data_type()))
        }
        other => other.to_string().to_lowercase(),
    }
}

impl From<TxnError> for SqlError {
    fn from(e: TxnError) -> Self {
        match &e {
            TxnError::LockWaitTimeout { .. } => SqlError::new("55P03", e.to_string())
                .with_hint("Raise lock_timeout, or retry when the other transaction has finished."),
            TxnError::Deadlock { .. } => {
                SqlError::new("40P01", e.to_string()).with_hint("Retry the transaction.")
            }
            TxnError::WriteConflict { .. } | TxnError::Aborted => {
                SqlError::new("40001", e.to_string()).with_hint("Retry the transaction.")
            }
            TxnError::AlreadyExists { .. } => {
                SqlError::new("23505", "duplicate key value violates unique constraint")
            }
            // PostgreSQL's snapshot_too_old.
            TxnError::SnapshotTooOld { .. } => SqlError::new("72000", e.to_string()).with_hint(
                "Retry the transaction: its snapshot is gone (its SQL node could not renew its lease for a while).",
            ),
            TxnError::TooLarge { .. } => SqlError::new("54000", e.to_string())
                .with_hint("Split the change into smaller transactions."),
            TxnError::Unavailable(_) | TxnError::Tso(flotilla_tso::TsoError::Unavailable(_)) => {
                SqlError::new("40001", e.to_string())
                    .with_hint("The cluster is recovering from a failure; retry the transaction.")
            }
            TxnError::Tso(_) | TxnError::Internal(_) => SqlError::new("XX000", e.to_string()),
        }
    }
}

impl From<CatalogError> for SqlError {
    fn from(e: CatalogError) -> Self {
        let code = e.sqlstate();
        match e {
            CatalogError::Invalid(m) => SqlError::new(code, m),
            e @ CatalogError::Unavailable(_) => SqlError::new(code, e.to_string())
                .with_hint("The cluster is recovering from a failure; retry the statement."),
            e => SqlError::new(code, e.to_string()),
        }
    }
}

/// Converts a parser error, turning its "Line: l, Column: c" into a character position.
pub(crate) fn parser_error(e: &ParserError, sql: &str) -> SqlError {
    let text = e.to_string();
    let message = text
        .strip_prefix("sql parser error: ")
        .unwrap_or(&text)
        .to_string();
    let mut err = SqlError::new("42601", format!("syntax error: {message}"));
    if let Some(pos) = line_column_position(&message, sql) {
        err = err.with_position(pos);
    }
    err
}

fn line_column_position(message: &str, sql: &str) -> Option<usize> {
    let line_at = message.find("Line: ")?;
    let rest = &message[line_at + 6..];
    let line: usize = rest.split(',').next()?.trim().parse().ok()?;
    let col_at = rest.find("Column: ")?;
    let column: usize = rest[col_at + 8..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()?;
    let mut position = 0;
    for (i, l) in sql.split('\n').enumerate() {
        if i + 1 == line {
            return Some(position + column);
        }
        position += l.chars().count() + 1;
    }
    None
}

/// Classifies a DataFusion error into a SQLSTATE by what it says.
pub(crate) fn datafusion_error(e: DataFusionError) -> SqlError {
    let e = e.find_root();
    // An error of ours raised inside DataFusion (a function of ours) keeps its SQLSTATE.
    if let DataFusionError::External(inner) = e
        && let Some(ours) = inner.downcast_ref::<SqlError>()
    {
        return ours.clone();
    }
    let text = e.to_string();
    let lower = text.to_lowercase();
    // PostgreSQL's wording and codes for a negative row count (DataFusion's planner checks
    // literals: "LIMIT must be >= 0, '-1' was provided").
    if lower.contains("limit must be >=") {
        return SqlError::new("2201W", "LIMIT must not be negative");
    }
    if lower.contains("offset must be >=") {
        return SqlError::new("2201X", "OFFSET must not be negative");
    }
    // `encode` / `decode` with a format there is none of.
    if let Some(at) = text.find("no built-in encoding named '") {
        let rest = &text[at + "no built-in encoding named '".len()..];
        let name = rest.split('\'').next().unwrap_or(rest);
        return SqlError::new("22023", format!("unrecognized encoding: \"{name}\""));
    }
    // Arrow's cast past an integer type's range ("value of 2147483648 is out of range
    // Int32") in PostgreSQL's words.
    if lower.contains("is out of range int") {
        for (arrow, pg) in [
            ("int16", "smallint"),
            ("int32", "integer"),
            ("int64", "bigint"),
        ] {
            if lower.ends_with(arrow) {
                return SqlError::new("22003", format!("{pg} out of range"));
            }
        }
    }
    let code = match e {
        DataFusionError::SQL(_, _) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ArrowError(a, _)
            if matches!(
                a.as_ref(),
                datafusion::arrow::error::ArrowError::DivideByZero
            ) =>
        {
            "22012"
        }
        _ if lower.contains("divide by zero") || lower.contains("division by zero") => "22012",
        _ if lower.contains("table '") && lower.contains("not found") => "42P01",
        // PostgreSQL's grouping_error: a selected column neither grouped, determined by a
        // grouped primary key, nor aggregated.
        _ if lower.contains("group by")
            && (lower.contains("must appear") || lower.contains("must be in")) =>
        {
            "42803"
        }
        _ if lower.contains("no field named") || lower.contains("not found in schema") => "42703",
        _ if lower.contains("overflow")
            || lower.contains("out of range")
            || lower.contains("too large to store") =>
        {
            "22003"
        }
        _ if lower.contains("cannot cast")
            || lower.contains("can't cast")
            || lower.contains("cast error") =>
        {
            "22P02"
        }
        // PostgreSQL's undefined_function: no function of that name, or none taking
        // these argument types.
        _ if lower.contains("invalid function") || lower.contains("no function matches") => "42883",
        _ if lower.contains("coercion")
            || lower.contains("cannot infer common")
            || lower.contains("does not support")
            || lower.contains("unsupported data type") =>
        {
            "42804"
        }
        _ if lower.contains("ambiguous") => "42702",
        _ if lower.contains("resources exhausted") || lower.contains("memory") => "53200",
        _ if matches!(
            e,
            DataFusionError::Plan(_) | DataFusionError::SchemaError(_, _)
        ) =>
        {
            "42601"
        }
        _ if matches!(e, DataFusionError::Execution(_)) => "22023",
        _ => "XX000",
    };
    let message = text
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Execution error: ")
        .trim_start_matches("Arrow error: ")
        .trim_start_matches("Schema error: ")
        .trim_start_matches("This feature is not implemented: ")
        .to_string();
    if let Some(e) = invalid_input(&message) {
        return e;
    }
    let message = if code == "42P01" {
        match extract_quoted(&message) {
            Some(name) => format!(
                "relation \"{}\" does not exist",
                name.trim_start_matches("datafusion.public.")
                    .trim_start_matches("public.")
            ),
            None => message,
        }
    } else if code == "22012" {
        "division by zero".to_string()
    } else {
        message
    };
    SqlError::new(code, message)
}

/// PostgreSQL's error for text a type's input function refuses, from Arrow's failed cast
/// (`Cast error: Cannot cast string 'x' to value of Int32 type`) or its timestamp parser
/// (`Parser error: Error parsing timestamp from 'x': ...`): `invalid input syntax for
/// type integer: "x"`, 22P02 (22007 for dates and times). `None` for anything else.
pub(crate) fn invalid_input(arrow_message: &str) -> Option<SqlError> {
    let message = arrow_message.trim_start_matches("Arrow error: ");
    let (value, type_name) = if let Some(rest) = message
        .strip_prefix("Cast error: Cannot cast string '")
        .or_else(|| message.strip_prefix("Cast error: Cannot cast value '"))
    {
        let (value, ty) = rest.rsplit_once("' to value of ")?;
        let ty: DataType = ty.strip_suffix(" type")?.parse().ok()?;
        (value, pg_type_name(&ty))
    } else {
        let rest = message.strip_prefix("Parser error: Error parsing timestamp from '")?;
        let (value, _) = rest.split_once("': ")?;
        (value, "timestamp".to_string())
    };
    let code = if type_name == "date" || type_name.starts_with("timestamp") {
        "22007"
    } else {
        "22P02"
    };
    Some(SqlError::new(
        code,
        format!("invalid input syntax for type {type_name}: \"{value}\""),
    ))
}

fn extract_quoted(s: &str) -> Option<&str> {
    let start = s.find('\'')? + 1;
    let end = s[start..].find('\'')? + start;
    Some(&s[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_cast_failures_read_as_postgresql_input_errors() {
        let read = |m: &str| invalid_input(m).map(|e| (e.code, e.message));
        assert_eq!(
            read("Cast error: Cannot cast string 'x' to value of Int32 type"),
            Some((
                "22P02",
                "invalid input syntax for type integer: \"x\"".into()
            ))
        );
        assert_eq!(
            read("Arrow error: Cast error: Cannot cast value 'maybe' to value of Boolean type"),
            Some((
                "22P02",
                "invalid input syntax for type boolean: \"maybe\"".into()
            ))
        );
        assert_eq!(
            read("Cast error: Cannot cast string 'a' to value of Decimal128(38, 10) type"),
            Some((
                "22P02",
                "invalid input syntax for type numeric: \"a\"".into()
            ))
        );
        assert_eq!(
            read("Cast error: Cannot cast string 'nope' to value of Date32 type"),
            Some((
                "22007",
                "invalid input syntax for type date: \"nope\"".into()
            ))
        );
        assert_eq!(
            read(
                "Parser error: Error parsing timestamp from 'x': timestamp must contain at least 10 characters"
            ),
            Some((
                "22007",
                "invalid input syntax for type timestamp: \"x\"".into()
            ))
        );
        // A value holding the separator is still read whole.
        assert_eq!(
            read("Cast error: Cannot cast string 'a' to value of b' to value of Int64 type"),
            Some((
                "22P02",
                "invalid input syntax for type bigint: \"a' to value of b\"".into()
            ))
        );
        assert_eq!(read("Cast error: Cannot cast string 'x' to Int32"), None);
        assert_eq!(read("Execution error: something else"), None);
    }

    #[test]
    fn parser_positions_count_characters_across_lines() {
        assert_eq!(
            line_column_position("Expected x, found: y at Line: 2, Column: 3", "ab\ncdef"),
            Some(6)
        );
        assert_eq!(line_column_position("no position here", "x"), None);
    }
}
