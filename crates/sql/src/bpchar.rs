//! `character(n)` comparisons with PostgreSQL's meaning: trailing blanks do not count.
//!
//! A `character(n)` value is stored blank-padded to `n` characters and read as Arrow
//! `Utf8`, so DataFusion would compare the stored `'ab  '` with a literal `'ab'` as unequal.
//! PostgreSQL compares `bpchar` values without their trailing blanks. The column's field
//! carries its length in metadata; a pass over each freshly planned statement pads the
//! string literal a `character(n)` column is compared with to `n` characters. Padding the
//! literal, rather than trimming the column, keeps the comparison usable as a key range.
//!
//! Where PostgreSQL converts a `character(n)` value to `text` (which drops its trailing
//! blanks): the string functions that take `text` (`length`, `upper`, `substr`, ...), the
//! `||` operator, `string_agg`, a cast to a string type, and a comparison with a value
//! that is not a `character(n)` of the same length, the column is read without its
//! trailing blanks. `octet_length`, `concat`, `format` and `LIKE` see the padded value, as
//! in PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::Field;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result as DfResult};
use datafusion::logical_expr::expr::{Cast, InList};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::scalar::ScalarValue;

/// The field metadata key that holds a `character(n)` column's `n`.
const LENGTH_KEY: &str = "flotilla.bpchar_length";

/// The field metadata of a `character(n)` column.
pub(crate) fn field_metadata(length: u32) -> HashMap<String, String> {
    HashMap::from([(LENGTH_KEY.to_string(), length.to_string())])
}

/// Pads the string literals that `character(n)` columns are compared with (`=`, `<>`,
/// `<`, `<=`, `>`, `>=`, IS [NOT] DISTINCT FROM, and IN lists) to `n` characters. Apply
/// once, to a statement as planned, before analysis.
pub(crate) fn pad_compared_literals(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        // The schemas the node's expressions read, held apart from the node it rewrites.
        let inputs: Vec<_> = node.inputs().iter().map(|p| p.schema().clone()).collect();
        if !inputs.iter().any(|s| has_bpchar(s)) {
            return Ok(Transformed::no(node));
        }
        let length_of = |e: &Expr| -> Option<usize> {
            let Expr::Column(column) = e else {
                return None;
            };
            inputs
                .iter()
                .find_map(|schema| bpchar_length(schema, column))
        };
        let keep_names = matches!(
            node,
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
        );
        let rewritten = node.map_expressions(|e| {
            let name = keep_names.then(|| e.schema_name().to_string());
            let t = e.transform_up(|e| {
                pad(e, &length_of)?.transform_data(|e| strip_blanks(e, &length_of))
            })?;
            match name {
                Some(name) if t.transformed => t.map_data(|e| e.alias_if_changed(name)),
                _ => Ok(t),
            }
        })?;
        if rewritten.transformed {
            rewritten.map_data(|p| p.recompute_schema())
        } else {
            Ok(rewritten)
        }
    })
    .map(|t| t.data)
}

/// A result column as a value assigned to a column of type `to`: a `character(n)`
/// column's values without their trailing blanks when assigned to `text` or `varchar`,
/// as PostgreSQL converts `bpchar` to `text` (`INSERT INTO t SELECT c`, `SET v = c`).
pub(crate) fn assigned(
    values: &ArrayRef,
    field: &Field,
    to: &flotilla_catalog::SqlType,
) -> ArrayRef {
    use flotilla_catalog::SqlType;
    if !field.metadata().contains_key(LENGTH_KEY)
        || !matches!(to, SqlType::Text | SqlType::Varchar(_))
    {
        return values.clone();
    }
    let Some(strings) = values.as_string_opt::<i32>() else {
        return values.clone();
    };
    Arc::new(
        strings
            .iter()
            .map(|v| v.map(|s| s.trim_end_matches(' ')))
            .collect::<StringArray>(),
    )
}

fn has_bpchar(schema: &DFSchema) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| f.metadata().contains_key(LENGTH_KEY))
}

fn bpchar_length(schema: &DFSchema, column: &Column) -> Option<usize> {
    let (_, field) = schema.qualified_field_from_column(column).ok()?;
    field.metadata().get(LENGTH_KEY)?.parse().ok()
}

fn pad(e: Expr, length_of: &impl Fn(&Expr) -> Option<usize>) -> DfResult<Transformed<Expr>> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if compares(op) => {
            if let Some(n) = length_of(&left)
                && let Some(padded) = padded_literal(&right, n)
            {
                return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op,
                    right: Box::new(padded),
                })));
            }
            if let Some(n) = length_of(&right)
                && let Some(padded) = padded_literal(&left, n)
            {
                return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                    left: Box::new(padded),
                    op,
                    right,
                })));
            }
            Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                left,
                op,
                right,
            })))
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => match length_of(&expr) {
            Some(n) if list.iter().any(|item| padded_literal(item, n).is_some()) => {
                let list = list
                    .into_iter()
                    .map(|item| padded_literal(&item, n).unwrap_or(item))
                    .collect();
                Ok(Transformed::yes(Expr::InList(InList {
                    expr,
                    list,
                    negated,
                })))
            }
            _ => Ok(Transformed::no(Expr::InList(InList {
                expr,
                list,
                negated,
            }))),
        },
        other => Ok(Transformed::no(other)),
    }
}

/// The functions (by DataFusion's names) whose string arguments PostgreSQL takes as
/// `text`, so a `character(n)` argument loses its trailing blanks.
const TEXT_FUNCTIONS: &[&str] = &[
    "ascii",
    "bit_length",
    "btrim",
    "char_length",
    "character_length",
    "ends_with",
    "initcap",
    "left",
    "length",
    "levenshtein",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "overlay",
    "position",
    "regexp_count",
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "translate",
    "upper",
];

/// `e` without its trailing blanks (only blanks: PostgreSQL keeps a trailing tab).
fn without_trailing_blanks(e: Expr) -> Expr {
    datafusion::functions::string::expr_fn::rtrim(vec![
        e,
        Expr::Literal(ScalarValue::Utf8(Some(" ".into())), None),
    ])
}

/// Reads the `character(n)` columns of `e` that PostgreSQL would convert to `text` there
/// without their trailing blanks (see the module's comment).
fn strip_blanks(
    e: Expr,
    length_of: &impl Fn(&Expr) -> Option<usize>,
) -> DfResult<Transformed<Expr>> {
    let strip = |arg: Expr| match length_of(&arg) {
        Some(_) => Transformed::yes(without_trailing_blanks(arg)),
        None => Transformed::no(arg),
    };
    // Strips the `character(n)` columns among `args`: (the arguments, whether any was).
    let strip_all = |args: Vec<Expr>| {
        let mut transformed = false;
        let args = args
            .into_iter()
            .map(|arg| {
                let t = strip(arg);
                transformed |= t.transformed;
                t.data
            })
            .collect::<Vec<_>>();
        (args, transformed)
    };
    Ok(match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if op == Operator::StringConcat
                || (compares(op)
                    && length_of(&left) != length_of(&right)
                    && !is_given(&left)
                    && !is_given(&right)) =>
        {
            let (left, right) = (strip(*left), strip(*right));
            let transformed = left.transformed || right.transformed;
            let e = Expr::BinaryExpr(BinaryExpr {
                left: Box::new(left.data),
                op,
                right: Box::new(right.data),
            });
            Transformed::new_transformed(e, transformed)
        }
        Expr::ScalarFunction(mut f) if TEXT_FUNCTIONS.contains(&f.name()) => {
            let (args, transformed) = strip_all(std::mem::take(&mut f.args));
            f.args = args;
            Transformed::new_transformed(Expr::ScalarFunction(f), transformed)
        }
        // Only the aggregated value: the delimiter keeps its blanks.
        Expr::AggregateFunction(mut f)
            if f.func.name() == "string_agg" && !f.params.args.is_empty() =>
        {
            let first = strip(f.params.args.remove(0));
            f.params.args.insert(0, first.data);
            Transformed::new_transformed(Expr::AggregateFunction(f), first.transformed)
        }
        Expr::Cast(Cast { expr, field }) if field.data_type().is_string() => {
            let inner = strip(*expr);
            let e = Expr::Cast(Cast {
                expr: Box::new(inner.data),
                field,
            });
            Transformed::new_transformed(e, inner.transformed)
        }
        other => Transformed::no(other),
    })
}

/// A literal or a parameter (which `pad` pads once bound): a `character(n)` column
/// compared with one keeps its blanks, so the comparison stays a key range.
fn is_given(e: &Expr) -> bool {
    match e {
        Expr::Literal(..) | Expr::Placeholder(_) => true,
        Expr::Cast(Cast { expr, .. }) => is_given(expr),
        _ => false,
    }
}

/// Whether `op` compares its operands (the operators a literal takes its type from).
pub(crate) fn compares(op: Operator) -> bool {
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    )
}

/// A string literal (or a literal cast to text, as a bound parameter is) compared with a
/// `character(n)` value, without its trailing blanks and then padded to `n` characters:
/// what the stored value is when the two are equal. `None` when `e` is no such literal, or
/// when it is already that.
fn padded_literal(e: &Expr, n: usize) -> Option<Expr> {
    let text = match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => s,
        Expr::Cast(Cast { expr, field }) if field.data_type().is_string() => match expr.as_ref() {
            Expr::Literal(ScalarValue::Utf8(Some(s)), _) => s,
            _ => return None,
        },
        _ => return None,
    };
    let trimmed = text.trim_end_matches(' ');
    let chars = trimmed.chars().count();
    let wanted = if chars <= n {
        let mut padded = trimmed.to_string();
        padded.extend(std::iter::repeat_n(' ', n - chars));
        padded
    } else {
        // Longer than any stored value: equal to none, ordered as PostgreSQL orders it.
        trimmed.to_string()
    };
    (matches!(e, Expr::Cast(_)) || wanted != *text)
        .then(|| Expr::Literal(ScalarValue::Utf8(Some(wanted)), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Expr {
        Expr::Literal(ScalarValue::Utf8(Some(s.into())), None)
    }

    #[test]
    fn literals_lose_trailing_blanks_and_are_padded_to_the_length() {
        assert_eq!(padded_literal(&lit("ab"), 4), Some(lit("ab  ")));
        assert_eq!(padded_literal(&lit("ab      "), 4), Some(lit("ab  ")));
        assert_eq!(padded_literal(&lit("ab  "), 4), None);
        assert_eq!(padded_literal(&lit("abcdef  "), 4), Some(lit("abcdef")));
        assert_eq!(padded_literal(&lit(""), 2), Some(lit("  ")));
        assert_eq!(padded_literal(&lit("é"), 2), Some(lit("é ")));
        assert_eq!(
            padded_literal(&Expr::Literal(ScalarValue::Int32(Some(1)), None), 4),
            None
        );
    }
}
