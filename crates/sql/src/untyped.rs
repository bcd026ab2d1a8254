//! String literals compared with a value of a type DataFusion cannot compare text with
//! (`uuid`, `jsonb`, arrays, `interval`) are read as that type, as PostgreSQL types an
//! untyped literal by the other operand; so is one in arithmetic (`n + '1'`, and `ts +
//! '1 day'`, which PostgreSQL reads as an interval: see `Arithmetic::literal_type`).
//! Without this, type coercion would refuse the comparison (uuid) or compare the
//! literal's bytes (jsonb).
//!
//! Where DataFusion types an expression while planning it (a select list, `COALESCE`,
//! `CASE`), it refuses the literal before a rewrite of the plan could read it, so
//! [`type_by_other_operands`] first marks such literals in the statement with the operand
//! that types them: `coalesce(j, '{}')` is planned as
//! `coalesce(j, flotilla_untyped('{}', j))`, and [`read_compared_literals`] replaces the
//! mark with the literal read as `j`'s type.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::{DataType, IntervalUnit};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{Between, InList};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{self, Statement, VisitMut, VisitorMut};

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
    } else if matches!(data_type, DataType::Interval(IntervalUnit::MonthDayNano)) {
        Some(Box::new(interval_literal))
    } else if matches!(data_type, DataType::List(_)) {
        Some(Box::new(move |e| {
            crate::pg_array::list_literal(e, &data_type)
        }))
    } else {
        None
    }
}

/// A string literal read as an interval, as PostgreSQL reads one (`crate::pg_interval`).
fn interval_literal(expr: &Expr) -> Option<DfResult<Expr>> {
    let Expr::Literal(
        ScalarValue::Utf8(text) | ScalarValue::LargeUtf8(text) | ScalarValue::Utf8View(text),
        _,
    ) = expr
    else {
        return None;
    };
    let value = match text {
        None => None,
        Some(text) => {
            match crate::pg_interval::parse_interval(text, Default::default())
                .and_then(|span| span.to_arrow())
            {
                Ok(v) => Some(v),
                Err(e) => return Some(Err(DataFusionError::External(Box::new(e)))),
            }
        }
    };
    Some(Ok(Expr::Literal(
        ScalarValue::IntervalMonthDayNano(value),
        None,
    )))
}

fn read_compared(expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    match expr {
        Expr::Between(Between {
            expr,
            negated,
            low,
            high,
        }) if let Some(read) = reader(&expr, schema) => {
            let low = Box::new(read(&low).unwrap_or(Ok(*low))?);
            let high = Box::new(read(&high).unwrap_or(Ok(*high))?);
            Ok(Transformed::yes(Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            })))
        }
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
        Expr::ScalarFunction(f)
            if f.args.len() == 2
                && let Some(arithmetic) = Arithmetic::of_mark(f.func.name()) =>
        {
            let [untyped, other] = <[Expr; 2]>::try_from(f.args).map_err(|_| {
                DataFusionError::Internal(format!("{} takes two", arithmetic.mark()))
            })?;
            Ok(Transformed::yes(operand_typed(
                arithmetic, untyped, &other, schema,
            )?))
        }
        Expr::ScalarFunction(f) if f.func.name() == UNTYPED && f.args.len() == 2 => {
            let [untyped, sample] = <[Expr; 2]>::try_from(f.args).map_err(|_| {
                datafusion::common::DataFusionError::Internal(format!("{UNTYPED} takes two"))
            })?;
            Ok(Transformed::yes(typed_as(untyped, &sample, schema)?))
        }
        // `x <> ALL('{1,2}')`, written with the literal as an untyped array of `x`.
        other => Ok(match crate::pg_array::untyped_array_typed(&other, schema) {
            Some(typed) => Transformed::yes(typed),
            None => Transformed::no(other),
        }),
    }
}

/// `untyped` (a string literal or a parameter) as a value of `sample`'s type if that is
/// a type text must be read as (uuid, jsonb, an array); otherwise as it is, for type
/// coercion to settle as before.
fn typed_as(untyped: Expr, sample: &Expr, schema: &DFSchema) -> DfResult<Expr> {
    let Some(data_type) = sample.get_type(schema).ok() else {
        return Ok(untyped);
    };
    let Some(read) = reader_of(data_type.clone()) else {
        return Ok(untyped);
    };
    match read(&untyped) {
        Some(literal) => literal,
        None if matches!(untyped, Expr::Placeholder(_)) => {
            Ok(crate::pg_array::typed(untyped, data_type))
        }
        None => Ok(untyped),
    }
}

/// The name of [`Untyped`].
const UNTYPED: &str = "flotilla_untyped";

/// `flotilla_untyped(literal, sample)`: a mark [`type_by_other_operands`] writes around
/// an untyped literal or parameter, naming the operand whose type it takes. Planning
/// types it as that operand if its type is one text must be read as (uuid, jsonb, an
/// array), else as the literal; [`read_compared_literals`] then replaces it with the
/// literal so read. Evaluated, which only a plan that skipped that rewrite would do, it
/// is the literal itself where that is its type, and an internal error otherwise.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Untyped {
    signature: Signature,
}

impl ScalarUDFImpl for Untyped {
    fn name(&self) -> &str {
        UNTYPED
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let [untyped, sample] = args else {
            return datafusion::common::plan_err!("{UNTYPED} takes a literal and a sample");
        };
        Ok(if reader_of(sample.clone()).is_some() {
            sample.clone()
        } else {
            untyped.clone()
        })
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let untyped = args.args.swap_remove(0);
        if untyped.data_type() != *args.return_field.data_type() {
            return datafusion::common::internal_err!(
                "{UNTYPED} reached execution as a {}: the plan was not rewritten by \
                 read_compared_literals",
                args.return_field.data_type()
            );
        }
        Ok(untyped)
    }
}

/// The marks this module writes into statements, registered as functions.
pub(crate) fn functions() -> Vec<std::sync::Arc<ScalarUDF>> {
    let mut all = vec![std::sync::Arc::new(ScalarUDF::new_from_impl(Untyped {
        signature: Signature::any(2, Volatility::Immutable),
    }))];
    for arithmetic in [Arithmetic::Add, Arithmetic::Subtract, Arithmetic::Multiply] {
        all.push(std::sync::Arc::new(ScalarUDF::new_from_impl(
            UntypedOperand {
                arithmetic,
                signature: Signature::any(2, Volatility::Immutable),
            },
        )));
    }
    all
}

/// The arithmetic an untyped literal is an operand of, as it decides the literal's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Arithmetic {
    /// `+`
    Add,
    /// `-`
    Subtract,
    /// `*`, `/`, `%`, `^`
    Multiply,
}

impl Arithmetic {
    fn of(op: &ast::BinaryOperator) -> Option<Self> {
        Some(match op {
            ast::BinaryOperator::Plus => Arithmetic::Add,
            ast::BinaryOperator::Minus => Arithmetic::Subtract,
            ast::BinaryOperator::Multiply
            | ast::BinaryOperator::Divide
            | ast::BinaryOperator::Modulo
            | ast::BinaryOperator::PGExp => Arithmetic::Multiply,
            _ => return None,
        })
    }

    /// The name of its mark.
    fn mark(self) -> &'static str {
        match self {
            Arithmetic::Add => "flotilla_untyped_addend",
            Arithmetic::Subtract => "flotilla_untyped_subtrahend",
            Arithmetic::Multiply => "flotilla_untyped_factor",
        }
    }

    fn of_mark(name: &str) -> Option<Self> {
        [Arithmetic::Add, Arithmetic::Subtract, Arithmetic::Multiply]
            .into_iter()
            .find(|a| a.mark() == name)
    }

    /// The type PostgreSQL reads an untyped literal as, beside an operand of `other`:
    /// the operand's own type for numbers (`1 + '2'`) and for `timestamp - '...'`
    /// (`date - '...'`), an interval added to a timestamp or an interval or subtracted
    /// from an interval. `None` leaves the literal to type coercion (`date + '...'` is
    /// ambiguous in PostgreSQL too).
    fn literal_type(self, other: &DataType) -> Option<DataType> {
        let interval = DataType::Interval(IntervalUnit::MonthDayNano);
        match (self, other) {
            (_, t) if t.is_numeric() => Some(t.clone()),
            (Arithmetic::Add, DataType::Timestamp(..) | DataType::Interval(_))
            | (Arithmetic::Subtract, DataType::Interval(_)) => Some(interval),
            (Arithmetic::Subtract, DataType::Timestamp(..) | DataType::Date32) => {
                Some(other.clone())
            }
            _ => None,
        }
    }
}

/// `flotilla_untyped_addend(literal, other)` (and `_subtrahend`, `_factor`): a mark
/// [`type_by_other_operands`] writes around an untyped string literal in arithmetic,
/// naming the other operand. Planning types it as `Arithmetic::literal_type` says (else
/// as the literal); [`read_compared_literals`] then replaces it with the literal read or
/// cast as that type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UntypedOperand {
    arithmetic: Arithmetic,
    signature: Signature,
}

impl ScalarUDFImpl for UntypedOperand {
    fn name(&self) -> &str {
        self.arithmetic.mark()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let [untyped, other] = args else {
            return datafusion::common::plan_err!("{} takes a literal and an operand", self.name());
        };
        Ok(self
            .arithmetic
            .literal_type(other)
            .unwrap_or_else(|| untyped.clone()))
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let untyped = args.args.swap_remove(0);
        if untyped.data_type() != *args.return_field.data_type() {
            return datafusion::common::internal_err!(
                "{} reached execution as a {}: the plan was not rewritten by \
                 read_compared_literals",
                self.name(),
                args.return_field.data_type()
            );
        }
        Ok(untyped)
    }
}

/// The literal of an arithmetic mark, read as the type its other operand gives it.
fn operand_typed(
    arithmetic: Arithmetic,
    untyped: Expr,
    other: &Expr,
    schema: &DFSchema,
) -> DfResult<Expr> {
    let Some(target) = other
        .get_type(schema)
        .ok()
        .and_then(|t| arithmetic.literal_type(&t))
    else {
        return Ok(untyped);
    };
    if matches!(target, DataType::Interval(_)) {
        return interval_literal(&untyped).unwrap_or(Ok(untyped));
    }
    Ok(Expr::Cast(datafusion::logical_expr::expr::Cast::new(
        Box::new(untyped),
        target,
    )))
}

/// Marks each untyped string literal or parameter whose type DataFusion would settle
/// while planning with the operand PostgreSQL types it by:
/// - `x <op> ANY(<untyped>)` and `ALL(..)`: an array of `x`'s type
///   (`pg_array::UNTYPED_ARRAY`);
/// - `IS [NOT] DISTINCT FROM`, `COALESCE`, `NULLIF`, `GREATEST`, `LEAST`, a simple
///   `CASE`'s operand and `WHEN` values, and a `CASE`'s results: the first operand of the
///   group that is neither untyped nor NULL (`flotilla_untyped`);
/// - a string literal in `+`, `-`, `*`, `/`, `%` or `^`: the other operand
///   (`flotilla_untyped_addend`, `_subtrahend`, `_factor`).
///
/// An operand holding a subquery is not copied (it would be planned twice); its
/// literals are left to type coercion as before.
pub(crate) fn type_by_other_operands(statement: &mut Statement) {
    let _ = statement.visit(&mut ByOtherOperands);
}

struct ByOtherOperands;

impl VisitorMut for ByOtherOperands {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        match expr {
            ast::Expr::AnyOp { left, right, .. } | ast::Expr::AllOp { left, right, .. }
                if is_untyped_sql(right) && !holds_subquery(left) =>
            {
                mark(right, crate::pg_array::UNTYPED_ARRAY, left);
            }
            ast::Expr::BinaryOp { left, op, right }
                if let Some(arithmetic) = Arithmetic::of(op) =>
            {
                // A string literal only: a parameter's type is inferred from the other
                // operand already.
                let literal = |e: &ast::Expr| is_untyped_sql(e) && !is_placeholder_sql(e);
                let (untyped, other) = match (literal(left), literal(right)) {
                    (true, false) => (&mut **left, &**right),
                    (false, true) => (&mut **right, &**left),
                    _ => return ControlFlow::Continue(()),
                };
                if !is_null_sql(other) && !holds_subquery(other) {
                    let other = other.clone();
                    mark(untyped, arithmetic.mark(), &other);
                }
            }
            ast::Expr::IsDistinctFrom(a, b) | ast::Expr::IsNotDistinctFrom(a, b) => {
                mark_by_first_typed([&mut **a, &mut **b]);
            }
            ast::Expr::Function(f)
                if crate::sql_ast::builtin_name(&f.name).is_some_and(|name| {
                    matches!(name.as_str(), "coalesce" | "nullif" | "greatest" | "least")
                }) =>
            {
                if let ast::FunctionArguments::List(list) = &mut f.args {
                    mark_by_first_typed(list.args.iter_mut().filter_map(|a| match a {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Some(e),
                        _ => None,
                    }));
                }
            }
            ast::Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                if let Some(operand) = operand {
                    mark_by_first_typed(
                        std::iter::once(&mut **operand)
                            .chain(conditions.iter_mut().map(|c| &mut c.condition)),
                    );
                }
                mark_by_first_typed(
                    conditions
                        .iter_mut()
                        .map(|c| &mut c.result)
                        .chain(else_result.as_deref_mut()),
                );
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Marks each untyped operand of a group with the first operand that is neither
/// untyped nor NULL.
fn mark_by_first_typed<'a>(operands: impl IntoIterator<Item = &'a mut ast::Expr>) {
    let mut operands: Vec<&mut ast::Expr> = operands.into_iter().collect();
    let Some(sample) = operands
        .iter()
        .find(|e| !is_untyped_sql(e) && !is_null_sql(e))
        .map(|e| (**e).clone())
    else {
        return;
    };
    if holds_subquery(&sample) {
        return;
    }
    for operand in operands.iter_mut().filter(|e| is_untyped_sql(e)) {
        mark(operand, UNTYPED, &sample);
    }
}

/// `untyped` as `function(untyped, sample)`.
fn mark(untyped: &mut ast::Expr, function: &str, sample: &ast::Expr) {
    let literal = std::mem::replace(untyped, ast::Expr::value(ast::Value::Null));
    *untyped = crate::sql_ast::call(
        function,
        [
            crate::sql_ast::arg(literal),
            crate::sql_ast::arg(sample.clone()),
        ],
    );
}

/// A string literal or a parameter, as written: its type is the other operand's.
fn is_untyped_sql(expr: &ast::Expr) -> bool {
    matches!(
        expr,
        ast::Expr::Value(v) if matches!(
            v.value,
            ast::Value::SingleQuotedString(_)
                | ast::Value::EscapedStringLiteral(_)
                | ast::Value::DollarQuotedString(_)
                | ast::Value::Placeholder(_)
        )
    )
}

fn is_placeholder_sql(expr: &ast::Expr) -> bool {
    matches!(expr, ast::Expr::Value(v) if matches!(v.value, ast::Value::Placeholder(_)))
}

fn is_null_sql(expr: &ast::Expr) -> bool {
    matches!(expr, ast::Expr::Value(v) if v.value == ast::Value::Null)
}

fn holds_subquery(expr: &ast::Expr) -> bool {
    ast::visit_expressions(expr, |e| match e {
        ast::Expr::Subquery(_) | ast::Expr::Exists { .. } | ast::Expr::InSubquery { .. } => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Reads the string literals compared (`=`, `<>`, `<`, `<=`, `>`, `>=`, IS [NOT]
/// DISTINCT FROM, IN lists) with a uuid, a jsonb or an array as values of its type, an
/// untyped array in `= ANY(...)` as an array of the other operand's type, and each
/// literal [`type_by_other_operands`] marked as its operand's type. Apply once, to a
/// statement as planned, before analysis.
pub(crate) fn read_compared_literals(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    crate::overflow::rewrite_expressions(plan, read_compared)
}
