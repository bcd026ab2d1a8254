//! Subqueries DataFusion cannot turn into joins (correlated through non-equality
//! predicates, or IN / EXISTS outside WHERE) are executed the way PostgreSQL executes
//! them: once per distinct set of outer values, with the outer values substituted into the
//! subquery's plan. Each such subquery becomes a call to a volatile scalar function whose
//! arguments are the outer columns it references.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, ListArray, StructArray, new_empty_array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, Projection, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Sort, Subquery, TypeSignature, Volatility, check_subquery_expr, expr::Exists,
    expr::InSubquery, expr::ScalarFunction,
};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use futures::future::BoxFuture;

/// Stack size of the thread that runs subqueries (DataFusion plans recursively).
const SUBQUERY_THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Scalar,
    In {
        negated: bool,
    },
    Exists {
        negated: bool,
    },
    /// Every row, as a list of structs of the row type (a lateral join's right side).
    Rows,
}

/// A subquery evaluated per row.
struct SubqueryFunction {
    id: usize,
    name: String,
    kind: Kind,
    plan: Arc<LogicalPlan>,
    /// Outer columns in argument order (after the IN operand, for IN).
    outer: Vec<Expr>,
    return_type: DataType,
    state: SessionState,
    signature: Signature,
}

impl std::fmt::Debug for SubqueryFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)
    }
}

impl PartialEq for SubqueryFunction {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for SubqueryFunction {}

impl Hash for SubqueryFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

fn ext(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(e.to_string())
}

/// Replaces outer references with the given values.
fn bind_outer(plan: &LogicalPlan, outer: &[Expr], values: &[ScalarValue]) -> DfResult<LogicalPlan> {
    // A nested subquery no longer reads the columns bound here: left on its list, they
    // would make DataFusion treat it as correlated still.
    let unbound = |sq: &mut Subquery| {
        sq.outer_ref_columns.retain(|r| match r {
            Expr::OuterReferenceColumn(_, c) => !outer
                .iter()
                .any(|o| matches!(o, Expr::OuterReferenceColumn(_, oc) if oc == c)),
            _ => true,
        })
    };
    let bind = |e: Expr| -> DfResult<Transformed<Expr>> {
        if let Expr::OuterReferenceColumn(field, column) = &e {
            for (o, v) in outer.iter().zip(values) {
                if let Expr::OuterReferenceColumn(_, oc) = o
                    && oc == column
                {
                    let v = if v.data_type() == *field.data_type() {
                        v.clone()
                    } else {
                        v.cast_to(field.data_type())?
                    };
                    return Ok(Transformed::yes(Expr::Literal(v, None)));
                }
            }
        }
        Ok(match e {
            Expr::ScalarSubquery(mut sq) => {
                unbound(&mut sq);
                Transformed::yes(Expr::ScalarSubquery(sq))
            }
            Expr::Exists(mut x) => {
                unbound(&mut x.subquery);
                Transformed::yes(Expr::Exists(x))
            }
            Expr::InSubquery(mut x) => {
                unbound(&mut x.subquery);
                Transformed::yes(Expr::InSubquery(x))
            }
            e => Transformed::no(e),
        })
    };
    plan.clone()
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|e| e.transform_up(bind))?
                .transform_data(|node| {
                    // A FROM item that read the columns bound here (`unnest(t.tags)` in a
                    // subquery's FROM) reads none now: the planner's wrapper goes. (Among
                    // the inputs only: a subquery expression's own plan stays one.)
                    node.map_children(|child| match child {
                        LogicalPlan::Subquery(mut sq) => {
                            unbound(&mut sq);
                            if sq.outer_ref_columns.is_empty() {
                                Ok(Transformed::yes(Arc::unwrap_or_clone(sq.subquery)))
                            } else {
                                Ok(Transformed::yes(LogicalPlan::Subquery(sq)))
                            }
                        }
                        other => Ok(Transformed::no(other)),
                    })
                })
        })
        .map(|t| t.data)
}

/// Optimises, rewrites remaining subqueries, and starts a plan: its rows as they come, so
/// a caller that has its answer stops reading (and the plan stops running).
fn stream_plan(
    state: SessionState,
    plan: LogicalPlan,
) -> BoxFuture<'static, DfResult<SendableRecordBatchStream>> {
    Box::pin(async move {
        let ctx = SessionContext::new_with_state(state.clone());
        // The statement's `now()` (its transaction's start), not the current time.
        let mut fresh = ctx.state();
        fresh.execution_props_mut().query_execution_start_time =
            state.execution_props().query_execution_start_time;
        let plan = per_row_where_refused(plan, &state)?;
        let optimized = fresh.optimize(&plan)?;
        let rewritten = rewrite(optimized, &state)?;
        ctx.execute_logical_plan(rewritten)
            .await?
            .execute_stream()
            .await
    })
}

/// The next non-empty batch of `rows`, or `None` at its end.
fn next_rows(
    rt: &tokio::runtime::Runtime,
    rows: &mut SendableRecordBatchStream,
) -> DfResult<Option<RecordBatch>> {
    loop {
        match rt.block_on(rows.next()).transpose()? {
            Some(b) if b.num_rows() == 0 => continue,
            other => return Ok(other),
        }
    }
}

impl SubqueryFunction {
    fn evaluate(
        &self,
        operand: Option<&ScalarValue>,
        values: &[ScalarValue],
        rt: &tokio::runtime::Runtime,
    ) -> DfResult<ScalarValue> {
        let plan = bind_outer(&self.plan, &self.outer, values)?;
        // Rows are read only until the answer is known: one for EXISTS, two for a scalar
        // subquery, up to the first match for IN. None is kept past its batch.
        let mut rows = rt.block_on(stream_plan(self.state.clone(), plan))?;
        match self.kind {
            Kind::Exists { negated } => {
                let any = next_rows(rt, &mut rows)?.is_some();
                Ok(ScalarValue::Boolean(Some(any != negated)))
            }
            Kind::Scalar => {
                let Some(first) = next_rows(rt, &mut rows)? else {
                    return ScalarValue::try_from(&self.return_type);
                };
                if first.num_rows() > 1 || next_rows(rt, &mut rows)?.is_some() {
                    return Err(DataFusionError::External(Box::new(
                        crate::error::SqlError::new(
                            "21000",
                            "more than one row returned by a subquery used as an expression",
                        ),
                    )));
                }
                ScalarValue::try_from_array(first.column(0), 0)
            }
            Kind::Rows => {
                let DataType::List(item) = &self.return_type else {
                    return Err(ext("a lateral subquery's rows are a list"));
                };
                let DataType::Struct(fields) = item.data_type() else {
                    return Err(ext("a lateral subquery's rows are structs"));
                };
                // The rows are held until the list is built: counted against the
                // statement's memory pool (`query_memory_bytes_max`, 53200 past it).
                let held = datafusion::execution::memory_pool::MemoryConsumer::new(
                    "lateral subquery rows",
                )
                .register(&self.state.runtime_env().memory_pool);
                let mut parts: Vec<ArrayRef> = Vec::new();
                while let Some(b) = next_rows(rt, &mut rows)? {
                    held.try_grow(b.get_array_memory_size())?;
                    let columns = b
                        .columns()
                        .iter()
                        .zip(fields.iter())
                        .map(|(c, f)| {
                            if c.data_type() == f.data_type() {
                                Ok(c.clone())
                            } else {
                                cast(c, f.data_type())
                            }
                        })
                        .collect::<Result<Vec<ArrayRef>, _>>()?;
                    parts.push(Arc::new(StructArray::try_new(
                        fields.clone(),
                        columns,
                        None,
                    )?));
                }
                let values: ArrayRef = match parts.len() {
                    0 => new_empty_array(item.data_type()),
                    1 => parts.pop().expect("one part"),
                    _ => {
                        let parts: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                        concat(&parts)?
                    }
                };
                let offsets = OffsetBuffer::from_lengths([values.len()]);
                let list = ListArray::try_new(Arc::clone(item), offsets, values, None)?;
                Ok(ScalarValue::List(Arc::new(list)))
            }
            Kind::In { negated } => {
                let operand = operand.expect("IN has an operand");
                let mut any = false;
                let mut saw_null = false;
                let mut found = false;
                while let Some(b) = next_rows(rt, &mut rows)? {
                    any = true;
                    if operand.is_null() {
                        // NULL IN (a non-empty set) is NULL, whatever the set holds.
                        break;
                    }
                    let target = operand.data_type();
                    let col: ArrayRef = if b.column(0).data_type() == &target {
                        b.column(0).clone()
                    } else {
                        cast(b.column(0), &target)?
                    };
                    for r in 0..col.len() {
                        if col.is_null(r) {
                            saw_null = true;
                        } else if ScalarValue::try_from_array(&col, r)? == *operand {
                            found = true;
                            break;
                        }
                    }
                    if found {
                        break;
                    }
                }
                let result = if found {
                    Some(true)
                } else if !any {
                    Some(false)
                } else if operand.is_null() || saw_null {
                    None
                } else {
                    Some(false)
                };
                Ok(ScalarValue::Boolean(result.map(|r| r != negated)))
            }
        }
    }
}

impl ScalarUDFImpl for SubqueryFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<DfResult<_>>()?;
        let with_operand = matches!(self.kind, Kind::In { .. });
        // Subqueries run to completion on their own thread and runtime: this function is
        // called synchronously from inside an executing plan. Meanwhile this thread
        // leaves the caller's runtime (`block_in_place`): the subquery may need that
        // runtime's tasks (a gRPC channel's connection, the TSO batcher), and with every
        // worker blocked in a subquery they would never run.
        let run = || -> DfResult<Vec<ScalarValue>> {
            std::thread::scope(|scope| {
                let handle = std::thread::Builder::new()
                    .name("flotilla-subquery".into())
                    .stack_size(SUBQUERY_THREAD_STACK_BYTES)
                    .spawn_scoped(scope, || -> DfResult<Vec<ScalarValue>> {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(ext)?;
                        let mut cache: HashMap<Vec<ScalarValue>, ScalarValue> = HashMap::new();
                        let mut out = Vec::with_capacity(n);
                        for row in 0..n {
                            let key: Vec<ScalarValue> = arrays
                                .iter()
                                .map(|a| ScalarValue::try_from_array(a, row))
                                .collect::<DfResult<_>>()?;
                            if let Some(v) = cache.get(&key) {
                                out.push(v.clone());
                                continue;
                            }
                            let (operand, outer) = if with_operand {
                                (Some(&key[0]), &key[1..])
                            } else {
                                (None, &key[..])
                            };
                            let v = self.evaluate(operand, outer, &rt)?;
                            cache.insert(key, v.clone());
                            out.push(v);
                        }
                        Ok(out)
                    })
                    .map_err(ext)?;
                handle.join().map_err(|_| ext("subquery thread panicked"))?
            })
        };
        let result = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        };
        let values = result?;
        if n == 0 {
            return Ok(ColumnarValue::Array(
                ScalarValue::try_from(&self.return_type)?.to_array_of_size(0)?,
            ));
        }
        let array = ScalarValue::iter_to_array(values)?;
        let array = if array.data_type() == &self.return_type {
            array
        } else {
            cast(&array, &self.return_type)?
        };
        Ok(ColumnarValue::Array(array))
    }
}

/// A call of a per-row function running `sq` with `outer` (outer reference columns)
/// bound to the call's arguments.
fn function_call(
    kind: Kind,
    sq: &Subquery,
    outer: Vec<Expr>,
    operand: Option<Expr>,
    return_type: DataType,
    state: &SessionState,
) -> Expr {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut args: Vec<Expr> = operand.into_iter().collect();
    for o in &outer {
        if let Expr::OuterReferenceColumn(_, c) = o {
            args.push(Expr::Column(c.clone()));
        }
    }
    let udf = SubqueryFunction {
        id,
        name: format!("__flotilla_subquery_{id}"),
        kind,
        plan: sq.subquery.clone(),
        outer,
        return_type,
        state: state.clone(),
        // An uncorrelated EXISTS outside WHERE binds nothing: the call has no arguments.
        signature: Signature::one_of(
            vec![TypeSignature::VariadicAny, TypeSignature::Nullary],
            Volatility::Volatile,
        ),
    };
    let udf = Arc::new(ScalarUDF::new_from_impl(udf));
    Expr::ScalarFunction(ScalarFunction::new_udf(udf, args))
}

/// A name no other column has (a per-row function's output, before it is taken apart).
pub(crate) fn fresh_name(prefix: &str) -> String {
    format!("{prefix}_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// A call of a per-row function returning every row of `plan` (one column per field of
/// `row_type`, a struct) with `outer` bound to the call's arguments, as a list.
pub(crate) fn rows_call(
    plan: Arc<LogicalPlan>,
    outer: Vec<Expr>,
    row_type: DataType,
    state: &SessionState,
) -> Expr {
    let sq = Subquery {
        subquery: plan,
        outer_ref_columns: outer.clone(),
        spans: Default::default(),
    };
    let list = DataType::List(Arc::new(Field::new_list_field(row_type, true)));
    function_call(Kind::Rows, &sq, outer, None, list, state)
}

/// Correlated scalar subqueries DataFusion's planner refuses (it decorrelates only those
/// that are aggregated, or limited to one row, and only in a projection, filter or
/// aggregate) become per-row function calls before the plan is analyzed, so they run as
/// PostgreSQL runs them: once per distinct set of outer values, and 21000 if one returns
/// more than one row. Innermost first, so a subquery whose nested subquery was refused
/// can still be decorrelated itself. A subquery of more than one column, or one that
/// refers past the query enclosing it, is left for DataFusion to refuse.
pub(crate) fn per_row_where_refused(
    plan: LogicalPlan,
    state: &SessionState,
) -> DfResult<LogicalPlan> {
    let mut refused = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|sub| {
                let sq = match sub {
                    Expr::ScalarSubquery(sq) => sq,
                    Expr::Exists(Exists { subquery, .. })
                    | Expr::InSubquery(InSubquery { subquery, .. }) => subquery,
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                let mut past = Vec::new();
                read_past(&sq.subquery, &mut Vec::new(), &mut past)?;
                refused = past.iter().any(|o| !sq.outer_ref_columns.contains(o))
                    || correlated_from(&sq.subquery)
                    || matches!(sub, Expr::ScalarSubquery(_)) && scalar_refused(node, sq, sub);
                Ok(if refused {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })
    })?;
    if !refused {
        return Ok(plan);
    }
    plan.transform_up_with_subqueries(|node| match widened_sort(&node)? {
        Some((sort, shown)) => {
            let sorted = per_row_in_node(sort, state)?.data;
            Ok(Transformed::yes(LogicalPlan::Projection(
                Projection::try_new(shown, Arc::new(sorted))?,
            )))
        }
        None => per_row_in_node(node, state),
    })
    .map(|t| t.data)
}

/// Whether a FROM item of `plan` (not of a subquery nested in it) reads the columns of an
/// enclosing query: `(SELECT count(*) FROM unnest(t.tags))`. DataFusion plans it as a
/// `Subquery` node, which it cannot execute or decorrelate; bound per row, it goes.
fn correlated_from(plan: &LogicalPlan) -> bool {
    plan.exists(|node| Ok(matches!(node, LogicalPlan::Subquery(_))))
        .unwrap_or(false)
}

/// Whether the scalar subquery `e` (of `sq`) in `node` runs per row: DataFusion refuses
/// it, or it is correlated and not aggregated (see `aggregated`).
fn scalar_refused(node: &LogicalPlan, sq: &Subquery, e: &Expr) -> bool {
    check_subquery_expr(node, &sq.subquery, e).is_err()
        || !sq.outer_ref_columns.is_empty() && !aggregated(&sq.subquery)
}

/// Whether a subquery's rows come from an aggregate (under projections, aliases and a
/// HAVING filter). A correlated scalar subquery that is not aggregated runs per row even
/// when DataFusion would accept it because a filter on a primary key limits it to one
/// row: DataFusion 55 then decorrelates it into a join that loses the `coalesce` around
/// it, giving NULL where no row matches and the default belongs
/// (`a_correlated_scalar_subquery_needs_no_aggregate` shows it).
fn aggregated(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => aggregated(&p.input),
        LogicalPlan::SubqueryAlias(a) => aggregated(&a.input),
        LogicalPlan::Filter(f) => matches!(f.input.as_ref(), LogicalPlan::Aggregate(_)),
        LogicalPlan::Aggregate(_) => true,
        _ => false,
    }
}

/// `node` with each of its refused correlated scalar subqueries a per-row function call.
fn per_row_in_node(node: LogicalPlan, state: &SessionState) -> DfResult<Transformed<LogicalPlan>> {
    let inputs: Vec<Arc<DFSchema>> = node
        .inputs()
        .iter()
        .map(|i| Arc::clone(i.schema()))
        .collect();
    let outer_plan = node.clone();
    map_node_expressions(node, |e| {
        let (kind, sq, operand) = match &e {
            Expr::ScalarSubquery(sq) => (Kind::Scalar, sq, None),
            Expr::Exists(x) => (Kind::Exists { negated: x.negated }, &x.subquery, None),
            Expr::InSubquery(x) => (
                Kind::In { negated: x.negated },
                &x.subquery,
                Some(x.expr.as_ref().clone()),
            ),
            _ => return Ok(Transformed::no(e)),
        };
        if sq.subquery.schema().fields().len() != 1 {
            return Ok(Transformed::no(e));
        }
        let Some(outer) = outer_columns(sq, &inputs)? else {
            return Ok(Transformed::no(e));
        };
        // DataFusion plans a correlated subquery it accepts (IN and EXISTS it may turn
        // into joins, or they run per row after optimizing), unless a nested one reads
        // past it: the planner lists only the subquery's own outer references.
        let skips_a_level = outer.iter().any(|o| !sq.outer_ref_columns.contains(o));
        let refused = correlated_from(&sq.subquery)
            || match kind {
                Kind::Scalar => scalar_refused(&outer_plan, sq, &e),
                _ => false,
            };
        if outer.is_empty() || !(skips_a_level || refused) {
            return Ok(Transformed::no(e));
        }
        let t = match kind {
            Kind::Scalar => sq.subquery.schema().field(0).data_type().clone(),
            _ => DataType::Boolean,
        };
        Ok(Transformed::yes(function_call(
            kind, sq, outer, operand, t, state,
        )))
    })
}

/// `node` with `f` applied bottom-up to each of its expressions; a rewritten projection or
/// aggregate keeps each expression's name, as columns above are referenced by name.
fn map_node_expressions(
    node: LogicalPlan,
    mut f: impl FnMut(Expr) -> DfResult<Transformed<Expr>>,
) -> DfResult<Transformed<LogicalPlan>> {
    let keeps_names = matches!(node, LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_));
    let rewritten = node.map_expressions(|e| {
        let name = e.schema_name().to_string();
        let t = e.transform_up(&mut f)?;
        if t.transformed && keeps_names {
            Ok(Transformed::yes(t.data.alias_if_changed(name)?))
        } else {
            Ok(t)
        }
    })?;
    if rewritten.transformed {
        Ok(Transformed::yes(rewritten.data.recompute_schema()?))
    } else {
        Ok(rewritten)
    }
}

/// An ORDER BY subquery reading an outer column the select list leaves out: the planner
/// adds a sort key's missing columns to the projection below the sort, but does not see
/// those a subquery reads. Returns the sort over the projection widened by them, and the
/// columns the query shows (to project back to above the sort).
fn widened_sort(node: &LogicalPlan) -> DfResult<Option<(LogicalPlan, Vec<Expr>)>> {
    let LogicalPlan::Sort(sort) = node else {
        return Ok(None);
    };
    let LogicalPlan::Projection(p) = sort.input.as_ref() else {
        return Ok(None);
    };
    let mut missing: Vec<Column> = Vec::new();
    for key in &sort.expr {
        key.expr.apply(|e| {
            if let Expr::ScalarSubquery(sq) = e {
                for o in &sq.outer_ref_columns {
                    if let Expr::OuterReferenceColumn(_, c) = o
                        && !p.schema.has_column(c)
                        && p.input.schema().has_column(c)
                        && !missing.contains(c)
                    {
                        missing.push(c.clone());
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    if missing.is_empty() {
        return Ok(None);
    }
    let shown: Vec<Expr> = p.schema.columns().into_iter().map(Expr::Column).collect();
    let mut exprs = p.expr.clone();
    exprs.extend(missing.into_iter().map(Expr::Column));
    let widened = Projection::try_new(exprs, Arc::clone(&p.input))?;
    let sort = LogicalPlan::Sort(Sort {
        expr: sort.expr.clone(),
        input: Arc::new(LogicalPlan::Projection(widened)),
        fetch: sort.fetch,
    });
    Ok(Some((sort, shown)))
}

/// The outer columns `sq` reads from the query enclosing it (whose node has `inputs`),
/// those its own nested subqueries read past it included. `None` if some reference
/// reaches past the enclosing query too (the subquery is then left as it is).
fn outer_columns(sq: &Subquery, inputs: &[Arc<DFSchema>]) -> DfResult<Option<Vec<Expr>>> {
    let mut found = Vec::new();
    read_past(&sq.subquery, &mut Vec::new(), &mut found)?;
    let ours = |o: &Expr| match o {
        Expr::OuterReferenceColumn(_, c) => inputs.iter().any(|s| s.has_column(c)),
        _ => false,
    };
    Ok(found.iter().all(ours).then_some(found))
}

/// Collects the outer references in `plan` (and its nested subqueries) that none of
/// `scopes` (the inputs of the nodes holding those nested subqueries, within the
/// subquery being examined) resolves: the ones reaching past it.
pub(crate) fn read_past(
    plan: &LogicalPlan,
    scopes: &mut Vec<Arc<DFSchema>>,
    found: &mut Vec<Expr>,
) -> DfResult<()> {
    plan.apply(|node| {
        let inputs: Vec<Arc<DFSchema>> = node
            .inputs()
            .iter()
            .map(|i| Arc::clone(i.schema()))
            .collect();
        node.apply_expressions(|e| {
            e.apply(|x| {
                match x {
                    Expr::OuterReferenceColumn(_, c)
                        if !scopes.iter().any(|s| s.has_column(c)) && !found.contains(x) =>
                    {
                        found.push(x.clone());
                    }
                    Expr::ScalarSubquery(sq)
                    | Expr::Exists(Exists { subquery: sq, .. })
                    | Expr::InSubquery(InSubquery { subquery: sq, .. }) => {
                        let depth = scopes.len();
                        scopes.extend(inputs.iter().cloned());
                        read_past(&sq.subquery, scopes, found)?;
                        scopes.truncate(depth);
                    }
                    _ => {}
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(())
}

/// True if the plan still holds subquery expressions that the physical planner cannot
/// execute.
fn needs_rewrite(e: &Expr) -> bool {
    match e {
        Expr::ScalarSubquery(sq) => !sq.outer_ref_columns.is_empty(),
        Expr::InSubquery(_) | Expr::Exists(_) => true,
        _ => false,
    }
}

/// Rewrites remaining subqueries of an optimised plan into per-row function calls.
pub(crate) fn rewrite(plan: LogicalPlan, state: &SessionState) -> DfResult<LogicalPlan> {
    let mut found = false;
    plan.apply(|node| {
        node.apply_expressions(|e| {
            e.apply(|sub| {
                if needs_rewrite(sub) {
                    found = true;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    if !found {
        return Ok(plan);
    }
    plan.transform_up(|node| {
        let inputs: Vec<Arc<DFSchema>> = node
            .inputs()
            .iter()
            .map(|i| Arc::clone(i.schema()))
            .collect();
        // Bound per row: the subquery's own outer columns and those its nested subqueries
        // read past it.
        let outer_of = |sq: &Subquery| -> DfResult<Vec<Expr>> {
            Ok(outer_columns(sq, &inputs)?.unwrap_or_else(|| sq.outer_ref_columns.clone()))
        };
        map_node_expressions(node, |e| {
            Ok(match e {
                Expr::ScalarSubquery(sq) if !sq.outer_ref_columns.is_empty() => {
                    let t = sq.subquery.schema().field(0).data_type().clone();
                    let outer = outer_of(&sq)?;
                    Transformed::yes(function_call(Kind::Scalar, &sq, outer, None, t, state))
                }
                Expr::InSubquery(InSubquery {
                    expr,
                    subquery,
                    negated,
                }) => Transformed::yes(function_call(
                    Kind::In { negated },
                    &subquery,
                    outer_of(&subquery)?,
                    Some(*expr),
                    DataType::Boolean,
                    state,
                )),
                Expr::Exists(Exists { subquery, negated }) => Transformed::yes(function_call(
                    Kind::Exists { negated },
                    &subquery,
                    outer_of(&subquery)?,
                    None,
                    DataType::Boolean,
                    state,
                )),
                other => Transformed::no(other),
            })
        })
    })
    .map(|t| t.data)
}

// ---------------------------------------------------------------------------------------------
// A scalar subquery may be NULL
// ---------------------------------------------------------------------------------------------

/// A scalar subquery is NULL when it returns no row, whatever its column holds. DataFusion
/// 55 takes a scalar subquery's nullability from its column alone (apache/datafusion#24513,
/// fixed after 55), so a subquery of a literal or of a NOT NULL column was typed never
/// NULL: `(SELECT 1 WHERE false) IS NULL` was folded to false, a `WHERE (SELECT ...) IS
/// NULL` kept no row, and a subquery that did return NULL failed its batch ("declared as
/// non-nullable but contains null values"). Such a subquery's column is passed through
/// `flotilla_nullable`, which says it may be NULL; a subquery that always returns one row
/// (an aggregate without GROUP BY) is left as it is.
#[derive(Debug, Default)]
pub(crate) struct NullableScalarSubqueries;

impl NullableScalarSubqueries {
    pub(crate) fn new() -> Self {
        Self
    }
}

/// Whether `plan` returns exactly one row whatever its input: an aggregate without
/// grouping, under projections.
fn one_row_always(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => one_row_always(&p.input),
        LogicalPlan::SubqueryAlias(a) => one_row_always(&a.input),
        LogicalPlan::Aggregate(a) => a.group_expr.is_empty(),
        _ => false,
    }
}

/// `sq` with its column declared nullable, if it was not.
fn nullable_subquery(sq: &Subquery) -> DfResult<Option<Subquery>> {
    let plan = sq.subquery.as_ref();
    let field = plan.schema().field(0);
    if field.is_nullable() || one_row_always(plan) {
        return Ok(None);
    }
    let (qualifier, field) = plan.schema().qualified_field(0);
    let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
    let call = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(MayBeNull::new())),
        vec![column],
    ))
    .alias(field.name());
    let projection = Projection::try_new(vec![call], sq.subquery.clone())?;
    Ok(Some(Subquery {
        subquery: Arc::new(LogicalPlan::Projection(projection)),
        outer_ref_columns: sq.outer_ref_columns.clone(),
        spans: sq.spans.clone(),
    }))
}

impl datafusion::optimizer::AnalyzerRule for NullableScalarSubqueries {
    fn name(&self) -> &str {
        "flotilla_nullable_scalar_subqueries"
    }

    fn analyze(
        &self,
        plan: LogicalPlan,
        _config: &datafusion::common::config::ConfigOptions,
    ) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let rewritten = node.map_expressions(|e| {
                e.transform_up(|e| match &e {
                    Expr::ScalarSubquery(sq) => Ok(match nullable_subquery(sq)? {
                        Some(sq) => Transformed::yes(Expr::ScalarSubquery(sq)),
                        None => Transformed::no(e),
                    }),
                    _ => Ok(Transformed::no(e)),
                })
            })?;
            if rewritten.transformed {
                rewritten.map_data(|node| node.recompute_schema())
            } else {
                Ok(rewritten)
            }
        })
        .map(|t| t.data)
    }
}

/// `flotilla_nullable(x)`: `x`, typed as possibly NULL. Volatile, so constant folding
/// does not replace it by a literal typed never NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MayBeNull {
    signature: Signature,
}

impl MayBeNull {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for MayBeNull {
    fn name(&self) -> &str {
        "flotilla_nullable"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(args[0].clone())
    }

    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> DfResult<datafusion::arrow::datatypes::FieldRef> {
        let field = args.arg_fields[0].as_ref().clone().with_nullable(true);
        Ok(Arc::new(field.with_name(self.name())))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(args.args[0].clone())
    }
}
