//! String literals compared with a value of a type DataFusion cannot compare text with
//! (`uuid`, `jsonb`, arrays) are read as that type, as PostgreSQL types an untyped
//! literal by the other operand. Without this, type coercion would refuse the comparison (uuid) or
//! compare the literal's bytes (jsonb).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan};

/// Reads a string literal as a value of one type: `None` if `expr` is not a string
/// literal, an error if its text is not a value of the type.
type ReadLiteral = Box<dyn Fn(&Expr) -> Option<DfResult<Expr>>>;

/// How a literal compared with `expr` is read, if `expr` is of a type that needs it.
/// Types that cannot be resolved here (outer references) are left to coercion.
fn reader(expr: &Expr, schema: &DFSchema) -> Option<ReadLiteral> {
    reader_of(expr.get_type(schema).ok()?)
}

/// How a literal compared with a value of `data_type` is read, if the type needs it.
fn reader_of(data_type: DataType) -> Option<ReadLiteral> {
    if crate::pg_uuid::is_uuid(&data_type) {
        Some(Box::new(crate::pg_uuid::uuid_literal))
    } else if crate::pg_json::Kind::of(&data_type) == Some(crate::pg_json::Kind::Jsonb) {
        Some(Box::new(crate::pg_json::jsonb_literal))
    } else if matches!(data_type, DataType::List(_)) {
        Some(Box::new(move |e| {
            crate::pg_array::list_literal(e, &data_type)
        }))
    } else {
        None
    }
}

fn read_compared(expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if crate::bpchar::compares(op) => {
            let read_right = reader(&left, schema).and_then(|read| read(&right));
            let read_left = reader(&right, schema).and_then(|read| read(&left));
            let (left, right, transformed) = match (read_left, read_right) {
                (_, Some(lit)) => (left, Box::new(lit?), true),
                (Some(lit), None) => (Box::new(lit?), right, true),
                (None, None) => (left, right, false),
            };
            let expr = Expr::BinaryExpr(BinaryExpr { left, op, right });
            Ok(if transformed {
                Transformed::yes(expr)
            } else {
                Transformed::no(expr)
            })
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let Some(read) =
                reader(&expr, schema).filter(|read| list.iter().any(|e| read(e).is_some()))
            else {
                return Ok(Transformed::no(Expr::InList(InList {
                    expr,
                    list,
                    negated,
                })));
            };
            let list = list
                .into_iter()
                .map(|e| read(&e).unwrap_or(Ok(e)))
                .collect::<DfResult<Vec<_>>>()?;
            Ok(Transformed::yes(Expr::InList(InList {
                expr,
                list,
                negated,
            })))
        }
        // `'<literal>' = ANY(ids)` (planned as `array_has(ids, '<literal>')`) with `ids` a
        // `uuid[]` or `jsonb[]`: the literal read as an element, as for `=`.
        Expr::ScalarFunction(mut f)
            if f.func.name() == "array_has"
                && f.args.len() == 2
                && let Ok(DataType::List(element)) = f.args[0].get_type(schema)
                && let Some(read) = reader_of(element.data_type().clone())
                && let Some(needle) = read(&f.args[1]) =>
        {
            f.args[1] = needle?;
            Ok(Transformed::yes(Expr::ScalarFunction(f)))
        }
        // `x = ANY(<untyped>)` (planned as `array_has(<untyped>, x)`): an array of x's
        // type, as PostgreSQL reads `name = ANY('{a,b}')` or `name = ANY($1)`.
        Expr::ScalarFunction(mut f)
            if f.func.name() == "array_has"
                && f.args.len() == 2
                && crate::pg_array::is_untyped(&f.args[0]) =>
        {
            let element = f.args[1]
                .get_type(schema)
                .ok()
                .filter(|t| !matches!(t, DataType::Null));
            let Some(element) = element else {
                return Ok(Transformed::no(Expr::ScalarFunction(f)));
            };
            let haystack = std::mem::replace(
                &mut f.args[0],
                Expr::Literal(datafusion::scalar::ScalarValue::Null, None),
            );
            f.args[0] = crate::pg_array::typed(haystack, crate::types::list_type(element));
            Ok(Transformed::yes(Expr::ScalarFunction(f)))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// Reads the string literals compared (`=`, `<>`, `<`, `<=`, `>`, `>=`, IS [NOT]
/// DISTINCT FROM, IN lists) with a uuid, a jsonb or an array as values of its type, and
/// an untyped array in `= ANY(...)` as an array of the other operand's type. Apply once,
/// to a statement as planned, before analysis.
pub(crate) fn read_compared_literals(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    crate::overflow::rewrite_expressions(plan, read_compared)
}
