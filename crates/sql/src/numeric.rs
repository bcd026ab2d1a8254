//! `numeric` arithmetic with PostgreSQL's precision where Arrow's falls short.
//!
//! A literal such as `0.1` is planned as a decimal (`sql_parser.parse_float_as_decimal`),
//! as PostgreSQL types it `numeric`. Arrow then divides two decimals to the dividend's scale
//! plus 4, truncating: `1.0 / 3` would be `0.33333` where PostgreSQL says
//! `0.33333333333333333333`, and DataFusion's `avg` of numeric(p,s) keeps only `s + 4`
//! digits after the point. PostgreSQL picks a quotient's scale per value (at least 16
//! significant digits, 20 after the point for a quotient below 1 of operands of one
//! magnitude); an Arrow column has one scale for all its values, so here it is picked per
//! type: `DIVISION_SCALE` digits after the point where the integer digits the operand
//! types allow leave room in numeric's 38, never fewer than `SIGNIFICANT_DIGITS_MIN` (a
//! quotient too large for the integer digits left is then 22003), and never fewer than
//! either operand has. A quotient is rounded half away from zero, as PostgreSQL rounds.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array};
use datafusion::arrow::datatypes::{
    DECIMAL128_MAX_PRECISION, DECIMAL256_MAX_PRECISION, DataType, Decimal128Type, i256,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, Operator,
    Projection, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Subquery, Union, Values,
    Volatility,
};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr as AstExpr, Statement, Value as AstValue, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::SqlError;

/// The fewest digits after the point a `numeric` quotient or average has where its type
/// leaves room: PostgreSQL's scale for a quotient below 1 of operands of one magnitude.
pub(crate) const DIVISION_SCALE: i8 = 20;

/// The fewest digits after the point a quotient or average has, where its operand types
/// would leave it fewer: PostgreSQL's `NUMERIC_MIN_SIG_DIGITS`. A value of more integer
/// digits than 38 minus this is then out of range (22003), not rounded to fewer places.
pub(crate) const SIGNIFICANT_DIGITS_MIN: i8 = 16;

/// The type of a quotient of numeric(p1,s1) by a numeric of scale `s2`: its integer digits
/// are at most `p1 - s1 + s2` (the divisor's smallest nonzero magnitude is `10^-s2`), and
/// its scale is `DIVISION_SCALE` where that leaves room in 38 digits.
pub(crate) fn quotient_type(p1: u8, s1: i8, s2: i8) -> (u8, i8) {
    let integer_digits = i32::from(p1) - i32::from(s1) + i32::from(s2);
    fitted_type(integer_digits, i32::from(s1.max(s2)))
}

/// The scale DataFusion's `avg` is asked to keep for numeric(p,s): an average lies within
/// its values' range, so it has at most `p - s` integer digits.
pub(crate) fn average_scale(p: u8, s: i8) -> i8 {
    fitted_type(i32::from(p) - i32::from(s), i32::from(s)).1
}

/// Precision and scale for a value of at most `integer_digits` integer digits: at least
/// `scale_floor` digits after the point, `DIVISION_SCALE` if 38 digits leave room for it,
/// and never fewer than `SIGNIFICANT_DIGITS_MIN`.
fn fitted_type(integer_digits: i32, scale_floor: i32) -> (u8, i8) {
    let max = i32::from(DECIMAL128_MAX_PRECISION);
    let integer_digits = integer_digits.clamp(1, max);
    let room = max - integer_digits;
    let scale = scale_floor
        .max(room.clamp(i32::from(SIGNIFICANT_DIGITS_MIN), i32::from(DIVISION_SCALE)))
        .clamp(0, max);
    let precision = (integer_digits + scale).clamp(1, max);
    // Both are clamped to 0..=38 above.
    (precision as u8, scale as i8)
}

/// `l` (of scale `s1`) divided by `r` (of scale `s2`) to `scale` digits after the point,
/// rounded half away from zero; `Ok(None)` if the quotient does not fit `precision` digits.
fn divide_rounded(
    l: i128,
    s1: i8,
    r: i128,
    s2: i8,
    precision: u8,
    scale: i8,
) -> Result<Option<i128>, SqlError> {
    if r == 0 {
        return Err(SqlError::new("22012", "division by zero"));
    }
    // l·10^-s1 / (r·10^-s2) · 10^scale = l·10^(scale - s1 + s2) / r
    let shift = i32::from(scale) - i32::from(s1) + i32::from(s2);
    let ten = i256::from_i128(10);
    let pow = |e: i32| ten.checked_pow(e.unsigned_abs());
    let (n, d) = if shift >= 0 {
        let Some(n) = pow(shift).and_then(|p| i256::from_i128(l).checked_mul(p)) else {
            return Ok(None);
        };
        (n, i256::from_i128(r))
    } else {
        let Some(d) = pow(shift).and_then(|p| i256::from_i128(r).checked_mul(p)) else {
            // A divisor past 10^76 makes any quotient round to zero at this scale.
            return Ok(Some(0));
        };
        (i256::from_i128(l), d)
    };
    let (Some(q), Some(rem)) = (n.checked_div(d), n.checked_rem(d)) else {
        return Ok(None);
    };
    // |rem| < |d| <= 10^76, so doubling it stays within i256.
    let twice = rem.wrapping_abs().wrapping_mul(i256::from_i128(2));
    let q = if twice >= d.wrapping_abs() {
        if n.is_negative() == d.is_negative() {
            q.wrapping_add(i256::ONE)
        } else {
            q.wrapping_sub(i256::ONE)
        }
    } else {
        q
    };
    let bound = pow(i32::from(precision)).unwrap_or(i256::MAX);
    if q.wrapping_abs() >= bound {
        return Ok(None);
    }
    Ok(q.to_i128())
}

/// `numeric / numeric` with PostgreSQL's precision (see the module comment). Integer
/// operands are taken as numeric of scale 0.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct NumericDivide {
    signature: Signature,
}

impl NumericDivide {
    fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The decimal an operand of a numeric division is read as.
fn as_decimal(t: &DataType) -> Option<DataType> {
    let digits = match t {
        DataType::Decimal128(_, _) => return Some(t.clone()),
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 => 19,
        DataType::UInt64 => 20,
        _ => return None,
    };
    Some(DataType::Decimal128(digits, 0))
}

impl ScalarUDFImpl for NumericDivide {
    fn name(&self) -> &str {
        "numeric_div"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    // Named as the `/` it replaces, so a GROUP BY, ORDER BY or outer query that names the
    // expression still finds it.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        match args {
            [l, r] => Ok(format!("{} / {}", l.schema_name(), r.schema_name())),
            _ => Ok("numeric_div".to_string()),
        }
    }

    fn display_name(&self, args: &[Expr]) -> DfResult<String> {
        self.schema_name(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        arg_types
            .iter()
            .map(|t| {
                as_decimal(t).ok_or_else(|| {
                    DataFusionError::Plan(format!("numeric division does not take {t}"))
                })
            })
            .collect()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types {
            [DataType::Decimal128(p1, s1), DataType::Decimal128(_, s2)] => {
                let (p, s) = quotient_type(*p1, *s1, *s2);
                Ok(DataType::Decimal128(p, s))
            }
            other => Err(DataFusionError::Internal(format!(
                "numeric_div takes two decimals, not {other:?}"
            ))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(
                "numeric_div takes two arguments".into(),
            ));
        };
        let (DataType::Decimal128(p1, s1), DataType::Decimal128(_, s2)) =
            (left.data_type(), right.data_type())
        else {
            return Err(DataFusionError::Internal(
                "numeric_div takes two decimals".into(),
            ));
        };
        let (precision, scale) = quotient_type(p1, s1, s2);
        let (l, r, scalar) = crate::overflow::operand_arrays(left, right, args.number_rows)?;
        let n = l.len();
        let (l, r) = (
            l.as_primitive::<Decimal128Type>(),
            r.as_primitive::<Decimal128Type>(),
        );
        let mut out = Vec::with_capacity(n);
        for row in 0..n {
            if l.is_null(row) || r.is_null(row) {
                out.push(None);
                continue;
            }
            let q = divide_rounded(l.value(row), s1, r.value(row), s2, precision, scale)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let Some(q) = q else {
                return Err(DataFusionError::External(Box::new(SqlError::new(
                    "22003",
                    format!(
                        "numeric value out of range: a quotient of {} does not fit numeric({precision},{scale})",
                        l.value_as_string(row)
                    ),
                ))));
            };
            out.push(Some(q));
        }
        let result: ArrayRef =
            Arc::new(Decimal128Array::from(out).with_precision_and_scale(precision, scale)?);
        crate::overflow::answer(result, scalar)
    }
}

/// Rewrites a freshly planned statement so `numeric` follows PostgreSQL (see the module
/// comment). Apply once, before analysis, so type coercion sees the types set here.
///
/// - Every `/` with a decimal operand and a decimal or integer other operand becomes
///   `numeric_div`.
/// - Where a numeric meets a float (an operator, CASE, IN, BETWEEN, COALESCE, NULLIF,
///   GREATEST, LEAST, a VALUES column, a UNION column), the numeric is cast to float8, as
///   PostgreSQL resolves it. DataFusion would cast the float to numeric(30,15) instead: a
///   float past 10^15 would fail, and one below 10^-15 would compare as 0.
/// - A literal of negative scale (`1e3`) becomes one of scale 0.
pub(crate) fn numeric_as_postgres(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    let divide = Arc::new(ScalarUDF::new_from_impl(NumericDivide::new()));
    plan.transform_up_with_subqueries(|node| {
        let node = match node {
            // A VALUES list holds the types of its rows in its schema, so its rows are
            // rewritten and its columns typed again here.
            LogicalPlan::Values(values) => {
                return float_values_columns(values_rewritten(values, &divide)?);
            }
            LogicalPlan::Union(union) => float_union_columns(union)?,
            LogicalPlan::Join(mut join) => {
                // Equality keys (USING) resolve each pair to one type.
                let mut schema = join.left.schema().as_ref().clone();
                schema.merge(join.right.schema());
                for (l, r) in &mut join.on {
                    floats_win(&mut [l, r], &schema);
                }
                LogicalPlan::Join(join)
            }
            node => node,
        };
        let schema = crate::overflow::input_schema(&node);
        let rewritten =
            node.map_expressions(|e| e.transform_up(|e| rewrite(e, &schema, &divide)))?;
        // Types may have changed here or below; each node is visited after its inputs.
        rewritten
            .map_data(|p| p.recompute_schema())
            .map(|t| Transformed::yes(t.data))
    })
    .map(|t| t.data)
}

/// Whether values of type `t` are floats, numerics, or neither.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Numeric,
    Other,
}

fn kind(t: &DataType) -> Kind {
    match t {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Kind::Float,
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => Kind::Numeric,
        _ => Kind::Other,
    }
}

fn to_float8(e: Expr) -> Expr {
    Expr::Cast(Cast::new(Box::new(e), DataType::Float64))
}

/// Casts the numerics among `exprs` to float8 if a float is among them; whether it did.
fn floats_win(exprs: &mut [&mut Expr], schema: &DFSchema) -> bool {
    let kinds: Vec<Kind> = exprs
        .iter()
        .map(|e| e.get_type(schema).map_or(Kind::Other, |t| kind(&t)))
        .collect();
    if !kinds.contains(&Kind::Float) || !kinds.contains(&Kind::Numeric) {
        return false;
    }
    for (e, k) in exprs.iter_mut().zip(kinds) {
        if k == Kind::Numeric {
            let whole = std::mem::replace(&mut **e, Expr::Literal(ScalarValue::Null, None));
            **e = to_float8(whole);
        }
    }
    true
}

/// Float8 for whichever of `expr` and the one column of `subquery` (`IN`, `= ANY`) is a
/// numeric, where the other is a float; whether it changed either.
fn float_against_subquery(
    expr: &mut Expr,
    subquery: &mut Subquery,
    schema: &DFSchema,
) -> DfResult<bool> {
    let Some(column) = subquery.subquery.schema().fields().first().cloned() else {
        return Ok(false);
    };
    let left = expr.get_type(schema).map_or(Kind::Other, |t| kind(&t));
    match (left, kind(column.data_type())) {
        (Kind::Numeric, Kind::Float) => {
            let whole = std::mem::replace(expr, Expr::Literal(ScalarValue::Null, None));
            *expr = to_float8(whole);
            Ok(true)
        }
        (Kind::Float, Kind::Numeric) => {
            subquery.subquery = Arc::new(with_float8_columns(subquery.subquery.clone(), &[0])?);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// `input` with its columns at `positions` cast to float8, under their names.
fn with_float8_columns(input: Arc<LogicalPlan>, positions: &[usize]) -> DfResult<LogicalPlan> {
    let columns = input
        .schema()
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            let column = Expr::Column(datafusion::common::Column::from((q, f)));
            if positions.contains(&i) {
                to_float8(column).alias_qualified(q.cloned(), f.name())
            } else {
                column
            }
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        columns, input,
    )?))
}

/// Functions whose arguments resolve to one type, as CASE branches do.
fn resolves_arguments_together(name: &str) -> bool {
    ["coalesce", "nullif", "greatest", "least", "nvl", "ifnull"]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

/// A row value as written: without the cast to its column's type the planner put on it
/// (a typed NULL becomes an untyped one again).
fn as_written(e: &Expr, column_type: &DataType) -> Expr {
    match e {
        Expr::Cast(c) if c.field.data_type() == column_type => c.expr.as_ref().clone(),
        Expr::Literal(v, meta) if v.is_null() => Expr::Literal(ScalarValue::Null, meta.clone()),
        other => other.clone(),
    }
}

/// A VALUES list whose rows are rewritten as any other expression is (`rewrite`). Where
/// a row changed, the columns are typed again from the rows as written, as the planner
/// typed them: a quotient of `numeric_div` has more places than Arrow's, and the column
/// type made for Arrow's would cast them away.
fn values_rewritten(values: Values, divide: &Arc<ScalarUDF>) -> DfResult<Values> {
    let Values { schema, values } = values;
    let empty = DFSchema::empty();
    let mut changed = false;
    // Each expression is moved through the rewrite, not copied: a multi-row INSERT's
    // VALUES list may be long.
    let rows = values
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|e| {
                    let t = e.transform_up(|e| rewrite(e, &empty, divide))?;
                    changed |= t.transformed;
                    Ok(t.data)
                })
                .collect::<DfResult<Vec<Expr>>>()
        })
        .collect::<DfResult<Vec<Vec<Expr>>>>()?;
    if !changed {
        return Ok(Values {
            schema,
            values: rows,
        });
    }
    let written = rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(schema.fields())
                .map(|(e, field)| as_written(e, field.data_type()))
                .collect()
        })
        .collect();
    match LogicalPlanBuilder::values(written)?.build()? {
        LogicalPlan::Values(v) => Ok(v),
        other => Err(DataFusionError::Internal(format!(
            "a VALUES list was planned as {}",
            other.display()
        ))),
    }
}

/// Float8 for each VALUES column where floats and numerics meet (see
/// `numeric_as_postgres`). The planner has cast every row to the column's resolved type;
/// that cast is taken off before the row is cast to float8.
fn float_values_columns(values: Values) -> DfResult<Transformed<LogicalPlan>> {
    let Values { schema, mut values } = values;
    let empty = DFSchema::empty();
    let mut floated = Vec::new();
    for (col, field) in schema.fields().iter().enumerate() {
        if kind(field.data_type()) != Kind::Numeric {
            continue;
        }
        let written = |e: &Expr| as_written(e, field.data_type());
        let has_float = values.iter().any(|row| {
            row.get(col)
                .and_then(|e| written(e).get_type(&empty).ok())
                .is_some_and(|t| kind(&t) == Kind::Float)
        });
        if !has_float {
            continue;
        }
        for row in &mut values {
            if let Some(e) = row.get_mut(col) {
                *e = to_float8(written(e));
            }
        }
        floated.push(col);
    }
    if floated.is_empty() {
        return Ok(Transformed::no(LogicalPlan::Values(Values {
            schema,
            values,
        })));
    }
    let fields: Vec<_> = schema
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            let f = if floated.contains(&i) {
                Arc::new(f.as_ref().clone().with_data_type(DataType::Float64))
            } else {
                f.clone()
            };
            (q.cloned(), f)
        })
        .collect();
    let schema = Arc::new(DFSchema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )?);
    Ok(Transformed::yes(LogicalPlan::Values(Values {
        schema,
        values,
    })))
}

/// Float8 for each UNION column where one input has a float and another a numeric: the
/// numeric inputs are cast in a projection over them.
fn float_union_columns(union: Union) -> DfResult<LogicalPlan> {
    let width = union.schema.fields().len();
    let kinds = |col: usize| -> Vec<Kind> {
        union
            .inputs
            .iter()
            .map(|i| {
                i.schema()
                    .fields()
                    .get(col)
                    .map_or(Kind::Other, |f| kind(f.data_type()))
            })
            .collect()
    };
    let mixed: Vec<usize> = (0..width)
        .filter(|&c| {
            let k = kinds(c);
            k.contains(&Kind::Float) && k.contains(&Kind::Numeric)
        })
        .collect();
    if mixed.is_empty() {
        return Ok(LogicalPlan::Union(union));
    }
    let inputs = union
        .inputs
        .into_iter()
        .map(|input| {
            let casts: Vec<usize> = mixed
                .iter()
                .copied()
                .filter(|&c| {
                    input
                        .schema()
                        .fields()
                        .get(c)
                        .is_some_and(|f| kind(f.data_type()) == Kind::Numeric)
                })
                .collect();
            if casts.is_empty() {
                return Ok(input);
            }
            Ok(Arc::new(with_float8_columns(input, &casts)?))
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(LogicalPlan::Union(Union::try_new_with_loose_types(inputs)?))
}

fn rewrite(e: Expr, schema: &DFSchema, divide: &Arc<ScalarUDF>) -> DfResult<Transformed<Expr>> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            mut left,
            op,
            mut right,
        }) if op != Operator::Divide => {
            let changed = floats_win(&mut [left.as_mut(), right.as_mut()], schema);
            Ok(Transformed::new_transformed(
                Expr::BinaryExpr(BinaryExpr { left, op, right }),
                changed,
            ))
        }
        Expr::Case(mut case) => {
            let mut changed = false;
            if let Some(base) = case.expr.as_mut() {
                let mut operands: Vec<&mut Expr> = vec![base.as_mut()];
                operands.extend(case.when_then_expr.iter_mut().map(|(w, _)| w.as_mut()));
                changed |= floats_win(&mut operands, schema);
            }
            let mut results: Vec<&mut Expr> = case
                .when_then_expr
                .iter_mut()
                .map(|(_, t)| t.as_mut())
                .collect();
            if let Some(e) = case.else_expr.as_mut() {
                results.push(e.as_mut());
            }
            changed |= floats_win(&mut results, schema);
            Ok(Transformed::new_transformed(Expr::Case(case), changed))
        }
        Expr::Between(mut b) => {
            let changed = floats_win(
                &mut [b.expr.as_mut(), b.low.as_mut(), b.high.as_mut()],
                schema,
            );
            Ok(Transformed::new_transformed(Expr::Between(b), changed))
        }
        Expr::InList(mut l) => {
            let mut all: Vec<&mut Expr> = vec![l.expr.as_mut()];
            all.extend(l.list.iter_mut());
            let changed = floats_win(&mut all, schema);
            Ok(Transformed::new_transformed(Expr::InList(l), changed))
        }
        Expr::InSubquery(mut i) => {
            let changed = float_against_subquery(i.expr.as_mut(), &mut i.subquery, schema)?;
            Ok(Transformed::new_transformed(Expr::InSubquery(i), changed))
        }
        Expr::SetComparison(mut c) => {
            let changed = float_against_subquery(c.expr.as_mut(), &mut c.subquery, schema)?;
            Ok(Transformed::new_transformed(
                Expr::SetComparison(c),
                changed,
            ))
        }
        Expr::ScalarFunction(mut f) if resolves_arguments_together(f.func.name()) => {
            let changed = floats_win(&mut f.args.iter_mut().collect::<Vec<_>>(), schema);
            Ok(Transformed::new_transformed(
                Expr::ScalarFunction(f),
                changed,
            ))
        }
        Expr::Literal(ScalarValue::Decimal128(Some(v), p, s), meta) if s < 0 => {
            let digits = i32::from(p) - i32::from(s);
            let widened = u32::try_from(-i32::from(s))
                .ok()
                .and_then(|e| 10i128.checked_pow(e))
                .and_then(|m| v.checked_mul(m));
            match widened {
                Some(v) if digits <= i32::from(DECIMAL128_MAX_PRECISION) => Ok(Transformed::yes(
                    Expr::Literal(ScalarValue::Decimal128(Some(v), digits as u8, 0), meta),
                )),
                _ => Ok(Transformed::no(Expr::Literal(
                    ScalarValue::Decimal128(Some(v), p, s),
                    meta,
                ))),
            }
        }
        Expr::BinaryExpr(BinaryExpr {
            mut left,
            op: Operator::Divide,
            mut right,
        }) => {
            if floats_win(&mut [left.as_mut(), right.as_mut()], schema) {
                return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Divide,
                    right,
                })));
            }
            // Types that cannot be resolved here (outer references, parameters) keep
            // Arrow's division.
            let types = (left.get_type(schema), right.get_type(schema));
            let numeric = match &types {
                (Ok(l), Ok(r)) => {
                    let decimal = |t: &DataType| matches!(t, DataType::Decimal128(_, _));
                    (decimal(l) || decimal(r)) && as_decimal(l).is_some() && as_decimal(r).is_some()
                }
                _ => false,
            };
            if numeric {
                Ok(Transformed::yes(Expr::ScalarFunction(
                    ScalarFunction::new_udf(divide.clone(), vec![*left, *right]),
                )))
            } else {
                Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Divide,
                    right,
                })))
            }
        }
        other => Ok(Transformed::no(other)),
    }
}

/// Whether DataFusion can hold the number literal `n` (unsigned, as written) as a decimal:
/// at most 76 digits, and a scale within an i8 (`1e300` has scale -300).
fn decimal_holds(n: &str) -> bool {
    let (mantissa, exponent) = match n.find(['e', 'E']) {
        Some(i) => (&n[..i], n[i + 1..].parse::<i64>()),
        None => (n, Ok(0)),
    };
    let Ok(exponent) = exponent else {
        // Not a number DataFusion reads; let it say so.
        return true;
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let significant = format!("{whole}{fraction}");
    let digits = significant.trim_start_matches('0').len().max(1) as i64;
    let scale = (fraction.len() as i64).saturating_sub(exponent);
    let precision = if scale > 0 { digits.max(scale) } else { digits };
    (i64::from(i8::MIN)..=i64::from(i8::MAX)).contains(&scale)
        && precision <= i64::from(DECIMAL256_MAX_PRECISION)
}

/// Makes each number literal a decimal cannot hold (`1e300`, `1e-300`, 80 digits) a
/// float8, its nearest value PostgreSQL's numeric would also store in a float column.
/// Without this DataFusion refuses the statement (`parse_float_as_decimal` reads every
/// number as a decimal). Apply to a statement before it is planned.
pub(crate) fn float_literals_past_decimal(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |e: &mut AstExpr| {
        if let AstExpr::Value(v) = e
            && let AstValue::Number(n, _) = &v.value
            && !decimal_holds(n)
            && let Ok(float) = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&format!("CAST('{n}' AS DOUBLE PRECISION)"))
                .and_then(|mut p| p.parse_expr())
        {
            *e = float;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// The Decimal256 type an `avg` over numeric(p,s) reads its argument as. DataFusion sums
/// it in an i256 (no count of rows overflows one, where its i128 sum wraps) and answers to
/// the argument's scale plus 4, truncated; the argument's scale is set so that answer has
/// one place more than `average_scale`, which the narrowing cast back rounds off. `None`
/// where the answer would pass numeric's 38 places.
pub(crate) fn average_argument_type(p: u8, s: i8) -> Option<DataType> {
    let scale = (average_scale(p, s) - 3).max(s);
    (i32::from(scale) + 4 <= i32::from(DECIMAL128_MAX_PRECISION))
        .then_some(DataType::Decimal256(DECIMAL256_MAX_PRECISION, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotients_round_half_away_from_zero_at_their_scale() {
        // 2 / 3 to 20 places: ...667, as PostgreSQL's 0.66666666666666666667.
        let (p, s) = quotient_type(2, 1, 0);
        assert_eq!((p, s), (21, 20));
        assert_eq!(
            divide_rounded(20, 1, 3, 0, p, s).unwrap(),
            Some(66_666_666_666_666_666_667)
        );
        assert_eq!(
            divide_rounded(-20, 1, 3, 0, p, s).unwrap(),
            Some(-66_666_666_666_666_666_667)
        );
        assert_eq!(
            divide_rounded(20, 1, -3, 0, p, s).unwrap(),
            Some(-66_666_666_666_666_666_667)
        );
        // 1 / 8 = 0.125 to 2 places rounds up to 0.13.
        assert_eq!(divide_rounded(1, 0, 8, 0, 10, 2).unwrap(), Some(13));
        assert_eq!(divide_rounded(-1, 0, 8, 0, 10, 2).unwrap(), Some(-13));
        assert_eq!(divide_rounded(1, 0, 0, 0, 10, 2).unwrap_err().code, "22012");
        // A quotient past its precision is reported, not wrapped.
        assert_eq!(divide_rounded(i128::MAX, 0, 1, 30, 38, 0).unwrap(), None);
    }

    #[test]
    fn literals_past_a_decimal_are_told_apart() {
        for n in [
            "0.1",
            "1e3",
            "1.5e-3",
            "1e127",
            "1e-76",
            "99999999999999999999999",
        ] {
            assert!(decimal_holds(n), "{n}");
        }
        for n in ["1e300", "1e-300", "1e129", "1e-77", &"9".repeat(77)] {
            assert!(!decimal_holds(n), "{n}");
        }
    }

    #[test]
    fn quotient_types_keep_twenty_places_where_38_digits_leave_room() {
        // numeric(20,2) / int4: 18 integer digits leave 20 places.
        assert_eq!(quotient_type(20, 2, 0), (38, 20));
        // Unconstrained numeric (38,10) by itself: 16 places, 22 integer digits.
        assert_eq!(quotient_type(38, 10, 10), (38, 16));
        // A sum of numeric(20,2), typed (38,2), by a count.
        assert_eq!(quotient_type(38, 2, 0), (38, 16));
        // Never fewer places than the divisor has.
        assert_eq!(quotient_type(5, 0, 30), (38, 30));
        assert_eq!(average_scale(10, 2), 20);
        assert_eq!(average_scale(38, 10), 16);
        assert_eq!(
            average_argument_type(10, 2),
            Some(DataType::Decimal256(76, 17))
        );
        assert_eq!(
            average_argument_type(38, 10),
            Some(DataType::Decimal256(76, 13))
        );
        assert_eq!(average_argument_type(38, 36), None);
    }
}
