//! Parameters of prepared statements: finding `$n` placeholders and binding values by
//! replacing each placeholder with a typed literal, so a bound statement runs exactly like
//! the same statement written with literals.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr, Statement, Value, visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::SqlError;

fn placeholder_index(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => p.strip_prefix('$')?.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The number of parameters: the highest `$n` in the statement.
pub(crate) fn parameter_count(statement: &Statement) -> usize {
    let mut max = 0;
    let _ = visit_expressions(statement, |e: &Expr| {
        if let Some(n) = placeholder_index(e) {
            max = max.max(n);
        }
        ControlFlow::<()>::Continue(())
    });
    max
}

/// The SQL type name DataFusion plans a CAST to for an Arrow type.
fn sql_type_name(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Boolean => "BOOLEAN",
        DataType::Int16 => "SMALLINT",
        DataType::Int32 => "INTEGER",
        DataType::Int64 => "BIGINT",
        DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE PRECISION",
        DataType::Date32 => "DATE",
        DataType::Timestamp(_, None) => "TIMESTAMP",
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE",
        DataType::Binary => "BYTEA",
        _ => return None,
    })
}

/// SQL text of a literal with the value and type of `value`.
fn literal_sql(value: &ScalarValue) -> Result<String, SqlError> {
    let t = value.data_type();
    if value.is_null() {
        return Ok(match (&t, sql_type_name(&t)) {
            (DataType::Decimal128(p, s), _) => format!("CAST(NULL AS NUMERIC({p},{s}))"),
            (_, Some(name)) => format!("CAST(NULL AS {name})"),
            _ => "NULL".into(),
        });
    }
    let array = value.to_array().map_err(crate::error::datafusion_error)?;
    let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
        .map_err(|e| SqlError::internal(e.to_string()))?;
    let text = formatter.value(0).to_string();
    let quoted = format!("'{}'", text.replace('\'', "''"));
    Ok(match &t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => quoted,
        DataType::Boolean => text.to_uppercase(),
        DataType::Int64 => text,
        DataType::Decimal128(p, s) => format!("CAST({quoted} AS NUMERIC({p},{s}))"),
        DataType::Binary | DataType::LargeBinary => format!("CAST(X'{text}' AS BYTEA)"),
        other => match sql_type_name(other) {
            Some(name) => format!("CAST({quoted} AS {name})"),
            None => quoted,
        },
    })
}

/// Replaces every `$n` with the literal of `params[n-1]`.
pub(crate) fn bind(statement: &mut Statement, params: &[ScalarValue]) -> Result<(), SqlError> {
    let mut literals = Vec::with_capacity(params.len());
    for p in params {
        let sql = literal_sql(p)?;
        let expr = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&sql)
            .and_then(|mut parser| parser.parse_expr())
            .map_err(|e| SqlError::internal(format!("bind literal {sql}: {e}")))?;
        literals.push(expr);
    }
    let mut missing = None;
    let _ = visit_expressions_mut(statement, |e: &mut Expr| {
        if let Some(n) = placeholder_index(e) {
            match literals.get(n.wrapping_sub(1)) {
                Some(lit) => *e = lit.clone(),
                None => missing = Some(n),
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match missing {
        Some(n) => Err(SqlError::new(
            "08P01",
            format!(
                "bind message supplies {} parameters, but the statement requires ${n}",
                params.len()
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn binds_typed_literals_in_place_of_placeholders() {
        let mut s = parse("UPDATE t SET a = a + $1, b = $3 WHERE k = $2");
        assert_eq!(parameter_count(&s), 3);
        bind(
            &mut s,
            &[
                ScalarValue::Int32(Some(-5)),
                ScalarValue::Utf8(Some("it's".into())),
                ScalarValue::Float64(None),
            ],
        )
        .unwrap();
        assert_eq!(
            s.to_string(),
            "UPDATE t SET a = a + CAST('-5' AS INTEGER), b = CAST(NULL AS DOUBLE PRECISION) WHERE k = 'it''s'"
        );
    }

    #[test]
    fn a_missing_parameter_is_an_error() {
        let mut s = parse("SELECT $2");
        assert!(bind(&mut s, &[ScalarValue::Int64(Some(1))]).is_err());
    }
}
