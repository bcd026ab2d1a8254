//! Integer arithmetic that fails on overflow, as PostgreSQL's does (SQLSTATE 22003).
//!
//! DataFusion's `+`, `-` and `*` on integers wrap around silently (its physical
//! `BinaryExpr` can check, but the planner never asks it to), which would turn an overflow
//! into a wrong answer. An analyzer rule, run after type coercion, replaces each integer
//! `+ - *` whose operands have one type with a function that computes the same with Arrow's
//! checked kernels.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{Cast, ScalarFunction, WindowFunctionDefinition};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;

/// PostgreSQL's name for an integer type, for its "out of range" message.
fn pg_name(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        DataType::Int64 => "bigint",
        DataType::Int8
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "integer",
        _ => return None,
    })
}

/// One checked operation on two integers of the same type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Checked {
    op: Operator,
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for Checked {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(args[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "{} takes two arguments",
                self.name
            )));
        };
        let data_type = left.data_type();
        let (l, r, scalar) = operand_arrays(left, right, args.number_rows)?;
        let result = match self.op {
            Operator::Plus => numeric::add(&l, &r),
            Operator::Minus => numeric::sub(&l, &r),
            _ => numeric::mul(&l, &r),
        }
        .map_err(|e| match e {
            datafusion::arrow::error::ArrowError::ArithmeticOverflow(_) => {
                DataFusionError::Execution(format!(
                    "{} out of range",
                    pg_name(&data_type).unwrap_or("integer")
                ))
            }
            other => DataFusionError::ArrowError(Box::new(other), None),
        })?;
        answer(result, scalar)
    }
}

/// The two operands of a binary function as arrays of one length: one row if both are
/// scalars (the third value says so), else the batch's rows.
pub(crate) fn operand_arrays(
    left: &ColumnarValue,
    right: &ColumnarValue,
    number_rows: usize,
) -> DfResult<(ArrayRef, ArrayRef, bool)> {
    let scalar = matches!(
        (left, right),
        (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
    );
    let n = if scalar { 1 } else { number_rows };
    Ok((left.to_array(n)?, right.to_array(n)?, scalar))
}

/// A binary function's result: a scalar again if its operands were (`operand_arrays`).
pub(crate) fn answer(result: ArrayRef, scalar: bool) -> DfResult<ColumnarValue> {
    Ok(if scalar {
        ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?)
    } else {
        ColumnarValue::Array(result)
    })
}

/// The rewrite, registered after DataFusion's analyzer rules.
#[derive(Debug)]
pub(crate) struct CheckedIntegerArithmetic {
    add: Arc<ScalarUDF>,
    sub: Arc<ScalarUDF>,
    mul: Arc<ScalarUDF>,
}

impl CheckedIntegerArithmetic {
    pub(crate) fn new() -> Self {
        let udf = |op, name| {
            Arc::new(ScalarUDF::new_from_impl(Checked {
                op,
                name,
                signature: Signature::any(2, Volatility::Immutable),
            }))
        };
        Self {
            add: udf(Operator::Plus, "int_add_checked"),
            sub: udf(Operator::Minus, "int_sub_checked"),
            mul: udf(Operator::Multiply, "int_mul_checked"),
        }
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
        // `-x` negates with wrapping too (-(-2^63) is -2^63): it becomes `0 - x`, checked.
        if let Expr::Negative(inner) = &expr {
            let Ok(t) = inner.get_type(schema) else {
                return Ok(Transformed::no(expr));
            };
            if pg_name(&t).is_none() {
                return Ok(Transformed::no(expr));
            }
            let zero = Expr::Literal(ScalarValue::new_zero(&t)?, None);
            return Ok(Transformed::yes(Expr::ScalarFunction(
                ScalarFunction::new_udf(self.sub.clone(), vec![zero, inner.as_ref().clone()]),
            )));
        }
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
            return Ok(Transformed::no(expr));
        };
        let udf = match op {
            Operator::Plus => &self.add,
            Operator::Minus => &self.sub,
            Operator::Multiply => &self.mul,
            _ => return Ok(Transformed::no(expr)),
        };
        // Types that cannot be resolved here (e.g. outer references) keep DataFusion's
        // operator.
        let (Ok(lt), Ok(rt)) = (left.get_type(schema), right.get_type(schema)) else {
            return Ok(Transformed::no(expr));
        };
        if lt != rt || pg_name(&lt).is_none() {
            return Ok(Transformed::no(expr));
        }
        let args = vec![left.as_ref().clone(), right.as_ref().clone()];
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(udf.clone(), args),
        )))
    }
}

impl AnalyzerRule for CheckedIntegerArithmetic {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        rewrite_expressions(plan, |e, schema| self.rewrite(e, schema))
    }

    fn name(&self) -> &str {
        "flotilla_checked_integer_arithmetic"
    }
}

/// The schema a node's expressions are typed against: its inputs' (a scan's filters
/// against the scan itself).
pub(crate) fn input_schema(node: &LogicalPlan) -> DFSchema {
    match node.inputs().as_slice() {
        [] => node.schema().as_ref().clone(),
        [input] => input.schema().as_ref().clone(),
        inputs => {
            let mut merged = DFSchema::empty();
            for input in inputs {
                merged.merge(input.schema());
            }
            merged
        }
    }
}

/// Applies `rewrite` bottom-up to every expression of `plan` (subqueries included), each
/// typed against its node's inputs; a rewritten output column keeps its name.
pub(crate) fn rewrite_expressions(
    plan: LogicalPlan,
    rewrite: impl Fn(Expr, &DFSchema) -> DfResult<Transformed<Expr>>,
) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let schema = input_schema(&node);
        // Where expressions name output columns, the rewritten ones keep their names,
        // so clients and the nodes above see the same columns.
        let keep_names = matches!(
            node,
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
        );
        node.map_expressions(|e| {
            let name = keep_names.then(|| e.schema_name().to_string());
            let rewritten = e.transform_up(|e| rewrite(e, &schema))?;
            match name {
                Some(name) if rewritten.transformed => {
                    rewritten.map_data(|e| e.alias_if_changed(name))
                }
                _ => Ok(rewritten),
            }
        })
    })
    .map(|t| t.data)
}

fn narrow_literal(expr: Expr) -> DfResult<Transformed<Expr>> {
    match expr {
        Expr::Literal(datafusion::scalar::ScalarValue::Int64(Some(v)), meta)
            if i32::try_from(v).is_ok() =>
        {
            Ok(Transformed::yes(Expr::Literal(
                datafusion::scalar::ScalarValue::Int32(Some(v as i32)),
                meta,
            )))
        }
        // An explicit cast says which type the literal is; keep it whole.
        Expr::Cast(_) | Expr::TryCast(_) => Ok(Transformed::new(
            expr,
            false,
            datafusion::common::tree_node::TreeNodeRecursion::Jump,
        )),
        other => Ok(Transformed::no(other)),
    }
}

/// A VALUES list narrows a column only when every row's value in it becomes int4, so the
/// column keeps one type.
fn narrow_values(values: datafusion::logical_expr::Values) -> DfResult<Transformed<LogicalPlan>> {
    let datafusion::logical_expr::Values { schema, mut values } = values;
    let empty = DFSchema::empty();
    let mut fields: Vec<_> = schema
        .iter()
        .map(|(q, f)| (q.cloned(), f.clone()))
        .collect();
    let mut changed = false;
    for (col, (_, field)) in fields.iter_mut().enumerate() {
        if field.data_type() != &DataType::Int64 {
            continue;
        }
        let narrowed: Vec<Expr> = values
            .iter()
            .map(|row| {
                row[col]
                    .clone()
                    .transform_down(narrow_literal)
                    .map(|t| t.data)
            })
            .collect::<DfResult<_>>()?;
        if narrowed
            .iter()
            .all(|e| e.get_type(&empty).is_ok_and(|t| t == DataType::Int32))
        {
            for (row, e) in values.iter_mut().zip(narrowed) {
                row[col] = e;
            }
            *field = Arc::new(field.as_ref().clone().with_data_type(DataType::Int32));
            changed = true;
        }
    }
    let schema = if changed {
        Arc::new(DFSchema::new_with_metadata(
            fields,
            schema.metadata().clone(),
        )?)
    } else {
        schema
    };
    Ok(Transformed::new_transformed(
        LogicalPlan::Values(datafusion::logical_expr::Values { schema, values }),
        changed,
    ))
}

/// A recursive query's work table keeps the types planned before narrowing (its recursive
/// term reads `int8` where the static term's literal now gives `int4`); the static term's
/// narrowed columns are cast back to what the recursive term gives, so both terms agree.
fn widen_static_term(
    query: datafusion::logical_expr::RecursiveQuery,
) -> DfResult<Transformed<LogicalPlan>> {
    let static_fields = query.static_term.schema().fields().clone();
    let recursive_fields = query.recursive_term.schema().fields().clone();
    let differs = static_fields.len() == recursive_fields.len()
        && static_fields
            .iter()
            .zip(recursive_fields.iter())
            .any(|(s, r)| s.data_type() != r.data_type());
    if !differs {
        return Ok(Transformed::no(LogicalPlan::RecursiveQuery(query)));
    }
    let columns: Vec<Expr> = query
        .static_term
        .schema()
        .columns()
        .into_iter()
        .zip(recursive_fields.iter())
        .map(|(column, field)| {
            let name = column.name.clone();
            Expr::Column(column)
                .cast_to(field.data_type(), query.static_term.schema())
                .map(|e| e.alias(name))
        })
        .collect::<DfResult<_>>()?;
    let static_term = Arc::new(LogicalPlan::Projection(
        datafusion::logical_expr::Projection::try_new(columns, query.static_term.clone())?,
    ));
    Ok(Transformed::yes(LogicalPlan::RecursiveQuery(
        datafusion::logical_expr::RecursiveQuery {
            static_term,
            ..query
        },
    )))
}

/// PostgreSQL sums `bigint` as `numeric`, so a sum past 2^63 is still exact; DataFusion
/// sums it as `bigint` and wraps around (a wrong answer, not an error). A `sum` (or a
/// windowed one) over an `int8` sums its argument as numeric(38,0) instead: an i128, which
/// 2^64 rows of int8 values cannot overflow, and a numeric result as in PostgreSQL.
///
/// A sum over `numeric` (Decimal128) wraps its i128 past about 1.7e38 units of its scale;
/// PostgreSQL's numeric has no such bound. It adds up in Decimal256 instead, which no count
/// of rows overflows, and `cast_wide_sums_back` narrows the total to numeric(38,s): a total
/// past 38 digits is then 22003, not a wrapped value.
///
/// An `avg` over numeric has the same wrapping i128 sum, and keeps only 4 more digits after
/// the point than its argument: it reads its argument as Decimal256 too, at the scale that
/// gives the average `numeric::average_scale` places. So does an `avg` over integers,
/// which PostgreSQL answers as numeric.
fn widen_bigint_sum(e: Expr, input: &DFSchema) -> DfResult<Transformed<Expr>> {
    let is_sum = |name: &str| name.eq_ignore_ascii_case("sum") || name.eq_ignore_ascii_case("avg");
    let widen = |name: &str, args: &mut Vec<Expr>| -> bool {
        let [arg] = args.as_mut_slice() else {
            return false;
        };
        let average = name.eq_ignore_ascii_case("avg");
        let to = match arg.get_type(input) {
            Ok(DataType::Int64) if !average => BIGINT_SUM_TYPE,
            Ok(DataType::Decimal128(p, s)) if average => {
                match crate::numeric::average_argument_type(p, s) {
                    Some(t) => t,
                    None => return false,
                }
            }
            // PostgreSQL averages integers as numeric; DataFusion as a float8, which
            // rounds an int8 average to 16 digits.
            Ok(t) if average && integer_digits(&t).is_some() => {
                match integer_digits(&t).and_then(|p| crate::numeric::average_argument_type(p, 0)) {
                    Some(t) => t,
                    None => return false,
                }
            }
            Ok(DataType::Decimal128(_, scale)) => DataType::Decimal256(
                datafusion::arrow::datatypes::DECIMAL256_MAX_PRECISION,
                scale,
            ),
            _ => return false,
        };
        let whole = std::mem::replace(arg, Expr::Literal(ScalarValue::Null, None));
        *arg = Expr::Cast(Cast::new(Box::new(whole), to));
        true
    };
    match e {
        Expr::AggregateFunction(mut f) if is_sum(f.func.name()) => {
            let changed = widen(f.func.name(), &mut f.params.args);
            Ok(Transformed::new_transformed(
                Expr::AggregateFunction(f),
                changed,
            ))
        }
        Expr::WindowFunction(mut f) if matches!(&f.fun, WindowFunctionDefinition::AggregateUDF(u) if is_sum(u.name())) =>
        {
            let name = f.fun.name().to_string();
            let changed = widen(&name, &mut f.params.args);
            Ok(Transformed::new_transformed(
                Expr::WindowFunction(f),
                changed,
            ))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// The most decimal digits a value of integer type `t` has; `None` for other types.
fn integer_digits(t: &DataType) -> Option<u8> {
    match t {
        DataType::Int8 | DataType::UInt8 => Some(3),
        DataType::Int16 | DataType::UInt16 => Some(5),
        DataType::Int32 | DataType::UInt32 => Some(10),
        DataType::Int64 => Some(19),
        DataType::UInt64 => Some(20),
        _ => None,
    }
}

/// What a sum of `bigint` adds up in: numeric(38,0), an i128.
const BIGINT_SUM_TYPE: DataType = DataType::Decimal128(38, 0);

/// Narrows the Decimal256 totals and averages of `widen_bigint_sum` back to numeric(38,s),
/// in a projection over the aggregate or window node that made them. A total past 38 digits
/// fails the cast: 22003. DataFusion truncates an average; it is asked for one place more
/// than it keeps (`numeric::average_argument_type`), which the cast rounds off.
fn cast_wide_sums_back(node: LogicalPlan) -> DfResult<LogicalPlan> {
    let wide = |t: &DataType| matches!(t, DataType::Decimal256(_, _));
    if !node.schema().fields().iter().any(|f| wide(f.data_type())) {
        return Ok(node);
    }
    let is_avg = |e: &Expr| match e.clone().unalias_nested().data {
        Expr::AggregateFunction(f) => f.func.name().eq_ignore_ascii_case("avg"),
        Expr::WindowFunction(f) => f.fun.name().eq_ignore_ascii_case("avg"),
        _ => false,
    };
    // The node's own expressions are its last output columns.
    let (own, first_own): (Vec<&Expr>, usize) = match &node {
        LogicalPlan::Aggregate(a) => (a.aggr_expr.iter().collect(), a.aggr_expr.len()),
        LogicalPlan::Window(w) => (w.window_expr.iter().collect(), w.window_expr.len()),
        _ => (Vec::new(), 0),
    };
    let first_own = node.schema().fields().len().saturating_sub(first_own);
    let columns = node
        .schema()
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            let column = Expr::Column(datafusion::common::Column::from((qualifier, field)));
            let average = i
                .checked_sub(first_own)
                .and_then(|j| own.get(j))
                .is_some_and(|e| is_avg(e));
            match field.data_type() {
                DataType::Decimal256(_, scale) => Expr::Cast(Cast::new(
                    Box::new(column),
                    DataType::Decimal128(
                        datafusion::arrow::datatypes::DECIMAL128_MAX_PRECISION,
                        if average { scale - 1 } else { *scale },
                    ),
                ))
                .alias_qualified(qualifier.cloned(), field.name()),
                _ => column,
            }
        })
        .collect();
    Ok(LogicalPlan::Projection(
        datafusion::logical_expr::Projection::try_new(columns, Arc::new(node))?,
    ))
}

/// Types the integer literals of a freshly planned statement as PostgreSQL types them:
/// `int4` when the value fits, `int8` otherwise (DataFusion types every integer literal as
/// `int8`). So `SELECT 1` returns an int4, `int4_col + 1` stays int4 (and overflows as int4
/// does), and `1 << 31` shifts an int4. Apply once, before analysis: type coercion then
/// widens where the other side needs it.
pub(crate) fn narrow_int_literals(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| match node {
        // LIMIT and OFFSET take int8; the output types are the input's.
        LogicalPlan::Limit(_) => Ok(Transformed::yes(node.recompute_schema()?)),
        LogicalPlan::Values(values) => narrow_values(values),
        LogicalPlan::RecursiveQuery(query) => widen_static_term(query),
        node => {
            let keep_names = matches!(
                node,
                LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
            );
            // The input an aggregate's or a window's sums read.
            let sums_over = match (&node, node.inputs().as_slice()) {
                (LogicalPlan::Aggregate(_) | LogicalPlan::Window(_), [input]) => {
                    Some(input.schema().clone())
                }
                _ => None,
            };
            let rewritten = node.map_expressions(|e| {
                let name = keep_names.then(|| e.schema_name().to_string());
                let mut t = e.transform_down(narrow_literal)?;
                if let Some(input) = &sums_over {
                    t = t.transform_parent(|e| e.transform_up(|e| widen_bigint_sum(e, input)))?;
                }
                match name {
                    Some(name) if t.transformed => t.map_data(|e| e.alias_if_changed(name)),
                    _ => Ok(t),
                }
            })?;
            // The node's output types may have changed, through its own literals or its
            // inputs' (a projection of an aggregate's narrowed group column); nodes are
            // visited bottom-up, so each sees its inputs' new schemas.
            let node = rewritten.data.recompute_schema()?;
            let node = if sums_over.is_some() {
                cast_wide_sums_back(node)?
            } else {
                node
            };
            Ok(Transformed::yes(node))
        }
    })
    .map(|t| t.data)
}
