//! Parameters of prepared statements: finding `$n` placeholders and binding values by
//! replacing each placeholder with a typed literal, so a bound statement runs exactly like
//! the same statement written with literals.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, CastKind, DataType as SqlDataType, ExactNumberInfo, Expr, Statement,
    TimezoneInfo, UnaryOperator, Value, visit_expressions, visit_expressions_mut,
};

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

/// The SQL type DataFusion plans a CAST to for an Arrow type.
pub(crate) fn sql_type(t: &DataType) -> Option<SqlDataType> {
    Some(match t {
        DataType::Boolean => SqlDataType::Boolean,
        DataType::Int16 => SqlDataType::SmallInt(None),
        DataType::Int32 => SqlDataType::Integer(None),
        DataType::Int64 => SqlDataType::BigInt(None),
        DataType::Float32 => SqlDataType::Real,
        DataType::Float64 => SqlDataType::DoublePrecision,
        DataType::Date32 => SqlDataType::Date,
        DataType::Timestamp(_, None) => SqlDataType::Timestamp(None, TimezoneInfo::None),
        DataType::Timestamp(_, Some(_)) => SqlDataType::Timestamp(None, TimezoneInfo::WithTimeZone),
        DataType::Binary => SqlDataType::Bytea,
        t if crate::pg_uuid::is_uuid(t) => SqlDataType::Uuid,
        DataType::LargeBinary => SqlDataType::JSONB,
        DataType::BinaryView => SqlDataType::JSON,
        DataType::Decimal128(p, s) => {
            SqlDataType::Numeric(ExactNumberInfo::PrecisionAndScale(*p as u64, *s as i64))
        }
        DataType::List(f) => {
            let element = match f.data_type() {
                t if crate::types::is_string(t) => SqlDataType::Text,
                t => sql_type(t)?,
            };
            SqlDataType::Array(ArrayElemTypeDef::SquareBracket(Box::new(element), None))
        }
        _ => return None,
    })
}

fn cast(expr: Expr, data_type: SqlDataType) -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(expr),
        data_type,
        array: false,
        format: None,
    }
}

/// The text of a non-null scalar, as PostgreSQL's input functions accept it. The common
/// types are formatted directly; the rest through Arrow's display of a one-row array.
fn scalar_text(value: &ScalarValue) -> Result<String, SqlError> {
    Ok(match value {
        ScalarValue::Int16(Some(v)) => v.to_string(),
        ScalarValue::Int32(Some(v)) => v.to_string(),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        ScalarValue::FixedSizeBinary(_, Some(b)) if crate::pg_uuid::is_uuid(&value.data_type()) => {
            crate::pg_uuid::text(b)
        }
        // json and jsonb values hold their text.
        ScalarValue::LargeBinary(Some(b)) | ScalarValue::BinaryView(Some(b)) => {
            String::from_utf8(b.clone()).map_err(|e| SqlError::internal(e.to_string()))?
        }
        // An array: PostgreSQL's text form, `{1,NULL,"a b"}`.
        ScalarValue::List(list) if datafusion::arrow::array::Array::len(list.as_ref()) == 1 => {
            let values = list.value(0);
            let mut texts = Vec::with_capacity(values.len());
            for i in 0..values.len() {
                let element = ScalarValue::try_from_array(&values, i)
                    .map_err(crate::error::datafusion_error)?;
                texts.push(if element.is_null() {
                    "NULL".to_string()
                } else {
                    crate::pg_array::element_text(&scalar_text(&element)?)
                });
            }
            format!("{{{}}}", texts.join(","))
        }
        _ => {
            let array = value.to_array().map_err(crate::error::datafusion_error)?;
            let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
                .map_err(|e| SqlError::internal(e.to_string()))?;
            formatter.value(0).to_string()
        }
    })
}

/// A literal expression with the value and type of `value`, built directly (binding runs
/// on every execution of a prepared statement, so it never goes through the parser).
pub(crate) fn literal_expr(value: &ScalarValue) -> Result<Expr, SqlError> {
    let t = value.data_type();
    if value.is_null() {
        return Ok(match sql_type(&t) {
            Some(ty) => cast(Expr::value(Value::Null), ty),
            None => Expr::value(Value::Null),
        });
    }
    if let ScalarValue::Boolean(Some(b)) = value {
        return Ok(Expr::value(Value::Boolean(*b)));
    }
    if let ScalarValue::Int64(Some(v)) = value {
        // The parser reads `-5` as minus applied to 5; bind to the same shape.
        let number = Expr::value(Value::Number(v.unsigned_abs().to_string(), false));
        return Ok(if *v < 0 {
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr: Box::new(number),
            }
        } else {
            number
        });
    }
    let text = scalar_text(value)?;
    Ok(match &t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Expr::value(Value::SingleQuotedString(text))
        }
        DataType::Binary => cast(
            Expr::value(Value::HexStringLiteral(text)),
            SqlDataType::Bytea,
        ),
        other => match sql_type(other) {
            Some(ty) => cast(Expr::value(Value::SingleQuotedString(text)), ty),
            None => Expr::value(Value::SingleQuotedString(text)),
        },
    })
}

/// Replaces every `$n` with the literal of `params[n-1]`.
pub(crate) fn bind(statement: &mut Statement, params: &[ScalarValue]) -> Result<(), SqlError> {
    let mut literals = Vec::with_capacity(params.len());
    for p in params {
        literals.push(literal_expr(p)?);
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
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

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

    /// The literal built for each type is exactly the expression the parser produces for
    /// its SQL text, so a bound statement plans as if the client had written literals.
    #[test]
    fn built_literals_equal_parsed_literals() {
        let values = [
            ScalarValue::Boolean(Some(true)),
            ScalarValue::Int16(Some(-7)),
            ScalarValue::Int32(Some(i32::MIN)),
            ScalarValue::Int64(Some(42)),
            ScalarValue::Int64(Some(-9)),
            ScalarValue::Int64(Some(i64::MIN)),
            ScalarValue::Float32(Some(1.5)),
            ScalarValue::Float64(Some(-0.25)),
            ScalarValue::Utf8(Some("it's".into())),
            ScalarValue::Decimal128(Some(12345), 10, 2),
            ScalarValue::Date32(Some(19000)),
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_000_000), None),
            ScalarValue::TimestampMicrosecond(Some(1), Some("+00:00".into())),
            ScalarValue::Binary(Some(vec![0xde, 0xad])),
            ScalarValue::Int32(None),
            ScalarValue::Decimal128(None, 5, 1),
            ScalarValue::Null,
        ];
        for value in values {
            let built = literal_expr(&value).unwrap();
            let text = built.to_string();
            let parsed = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&text)
                .and_then(|mut p| p.parse_expr())
                .unwrap();
            assert_eq!(built, parsed, "{value:?} as {text}");
        }
    }

    #[test]
    fn a_missing_parameter_is_an_error() {
        let mut s = parse("SELECT $2");
        assert!(bind(&mut s, &[ScalarValue::Int64(Some(1))]).is_err());
    }
}
