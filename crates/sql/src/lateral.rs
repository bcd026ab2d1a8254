//! FROM items that read the columns of the items before them, as PostgreSQL allows: a
//! set-returning function of a column (`FROM t, unnest(t.tags) AS u(tag)`, implicitly
//! lateral), a `LATERAL` subquery (`LEFT JOIN LATERAL (SELECT ... WHERE o.cid = c.id
//! ORDER BY ts DESC LIMIT 1) x ON true`), and `WITH ORDINALITY`.
//!
//! DataFusion plans such an item as a join whose right side holds outer references to
//! the left side's columns, and executes only those its optimizer decorrelates (a
//! subquery correlated through its WHERE alone). The rest are rewritten here, before the
//! optimizer (which would prune the columns the outer references read):
//! - a set-returning function (`unnest`, `generate_series`) of the left side's columns
//!   becomes an `Unnest` of the left side itself, vectorized: each left row repeated for
//!   each element, and for `LEFT JOIN LATERAL ... ON true` a row of NULLs where the set
//!   is empty, as in PostgreSQL;
//! - any other lateral subquery runs once per distinct set of the left values it reads
//!   (a nested loop, as PostgreSQL's), its rows gathered by a per-row function as a list
//!   and unnested: no rows drop the left row from an inner join and give it NULLs in a
//!   left join. The join's ON condition is evaluated inside, per left row.
//!
//! Before planning, `generate_series` and `unnest` in FROM with column arguments or
//! `WITH ORDINALITY` become the `UNNEST` relation (ordinality as a zipped
//! `generate_series(1, cardinality(..))`), and their columns are named as PostgreSQL
//! names them: after the function, or after the alias of a one-column function.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, FunctionalDependencies, NullHandling, UnnestOptions};
use datafusion::error::Result as DfResult;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    Expr, Filter, Join, JoinType, LogicalPlan, Projection, SubqueryAlias, Unnest,
};
use datafusion::optimizer::OptimizerContext;
use datafusion::optimizer::OptimizerRule;
use datafusion::optimizer::decorrelate_lateral_join::DecorrelateLateralJoin;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr as AstExpr, FunctionArg, FunctionArgExpr, Ident, Statement, TableAlias,
    TableAliasColumnDef, TableFactor, VisitMut, VisitorMut,
};

use crate::sql_ast::{arg, call, folded};

// ---------------------------------------------------------------------------------------------
// Before planning: set-returning functions in FROM as UNNEST, and their column names
// ---------------------------------------------------------------------------------------------

/// Rewrites `unnest` and `generate_series` in FROM clauses as described above.
pub(crate) fn prepare(statement: &mut Statement) {
    let _ = statement.visit(&mut Prepare);
}

struct Prepare;

impl VisitorMut for Prepare {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let Some(unnest) = as_unnest(factor) {
            *factor = unnest;
        }
        // The table function: its column is `value`, PostgreSQL's is named as above.
        if let TableFactor::Table {
            name,
            alias,
            args: Some(_),
            ..
        } = factor
            && let [part] = name.0.as_slice()
            && part.as_ident().map(folded).as_deref() == Some("generate_series")
        {
            name_columns(alias, 1, "generate_series", false);
        }
        if let TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_offset_alias: None,
            with_ordinality,
        } = factor
        {
            name_columns(alias, array_exprs.len(), "unnest", *with_ordinality);
            if *with_ordinality {
                array_exprs.push(ordinals(array_exprs));
                *with_ordinality = false;
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether every argument is a number written out: DataFusion's table function
/// `generate_series` takes those (as int8) and nothing else, not a column, a parameter
/// (bound as an int2 or int4) or a cast.
fn numbers_only(args: &[FunctionArg]) -> bool {
    fn number(e: &AstExpr) -> bool {
        match e {
            AstExpr::Value(v) => {
                matches!(v.value, datafusion::sql::sqlparser::ast::Value::Number(..))
            }
            AstExpr::UnaryOp { expr, .. } | AstExpr::Nested(expr) => number(expr),
            _ => false,
        }
    }
    args.iter()
        .all(|a| matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if number(e)))
}

/// `generate_series(...)` or `unnest(...)` in FROM as the UNNEST relation, unless it is
/// `generate_series` of numbers written out (the table function streams its rows; it
/// has no ordinality and takes nothing else).
fn as_unnest(factor: &TableFactor) -> Option<TableFactor> {
    let (name, args, alias, with_ordinality, lateral) = match factor {
        TableFactor::Table {
            name,
            alias,
            args: Some(args),
            with_ordinality,
            ..
        } => (name, &args.args, alias, *with_ordinality, false),
        TableFactor::Function {
            lateral,
            name,
            args,
            with_ordinality,
            alias,
        } => (name, args, alias, *with_ordinality, *lateral),
        _ => return None,
    };
    let [part] = name.0.as_slice() else {
        return None;
    };
    let function = folded(part.as_ident()?);
    if !matches!(function.as_str(), "unnest" | "generate_series") {
        return None;
    }
    if !(with_ordinality || lateral || !numbers_only(args) || function == "unnest") {
        return None;
    }
    let exprs: Vec<AstExpr> = args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let array_exprs = if function == "unnest" {
        exprs
    } else {
        vec![call("generate_series", exprs.into_iter().map(arg))]
    };
    let mut alias = alias.clone();
    if function == "generate_series" {
        name_columns(&mut alias, 1, &function, with_ordinality);
    }
    Some(TableFactor::UNNEST {
        alias,
        array_exprs,
        with_offset: false,
        with_offset_alias: None,
        with_ordinality,
    })
}

/// Names the columns of `function` of `count` results as PostgreSQL does where the alias
/// leaves them unnamed: a single one after the alias (the function without one, which
/// then is the alias), several after the function (numbered past the first: DataFusion
/// refuses two columns of one name), and the ordinality `ordinality`.
fn name_columns(
    alias: &mut Option<TableAlias>,
    count: usize,
    function: &str,
    with_ordinality: bool,
) {
    let alias = alias.get_or_insert_with(|| TableAlias {
        explicit: true,
        name: Ident::new(function),
        columns: Vec::new(),
        at: None,
    });
    let wanted = count + usize::from(with_ordinality);
    if alias.columns.len() >= wanted || (count > 1 && !with_ordinality) {
        return;
    }
    for i in alias.columns.len()..wanted {
        let name = if i == count {
            Ident::new("ordinality")
        } else if count == 1 {
            // As written: a quoted alias names its column with the same case.
            alias.name.clone()
        } else if i == 0 {
            Ident::new(function)
        } else {
            Ident::new(format!("{function}_{}", i + 1))
        };
        alias.columns.push(TableAliasColumnDef {
            name,
            data_type: None,
        });
    }
}

/// `generate_series(1, cardinality(a))` (`greatest` of several): 1, 2, ... zipped with the
/// elements as their ordinality.
pub(crate) fn ordinals(arrays: &[AstExpr]) -> AstExpr {
    let mut lengths: Vec<AstExpr> = arrays
        .iter()
        .map(|a| call("cardinality", [arg(a.clone())]))
        .collect();
    let last = if lengths.len() == 1 {
        lengths.pop().expect("one length")
    } else {
        call("greatest", lengths.into_iter().map(arg))
    };
    let one = AstExpr::value(datafusion::sql::sqlparser::ast::Value::Number(
        "1".to_string(),
        false,
    ));
    call("generate_series", [arg(one), arg(last)])
}

// ---------------------------------------------------------------------------------------------
// After planning: lateral joins DataFusion would not execute
// ---------------------------------------------------------------------------------------------

/// Rewrites each lateral join of `plan` (innermost first) that DataFusion's optimizer
/// would leave correlated, as described above.
pub(crate) fn plan_lateral_joins(plan: LogicalPlan, state: &SessionState) -> DfResult<LogicalPlan> {
    if !has_lateral_join(&plan)? {
        return Ok(plan);
    }
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::Join(join) => lateral_join(join, state),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

fn has_lateral_join(plan: &LogicalPlan) -> DfResult<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Join(join) = node
            && join.right.exists(|n| Ok(n.contains_outer_reference()))?
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// The right side of a lateral join: its alias and the correlated plan under the
/// planner's `Subquery` wrapper, or (an item joined to a lateral one, `FROM a, b LEFT JOIN
/// LATERAL f(a.x) ON ...`, whose join reads `a`) the whole side.
fn lateral_side(right: &LogicalPlan) -> (Option<&SubqueryAlias>, &LogicalPlan) {
    match right {
        LogicalPlan::SubqueryAlias(a) => match a.input.as_ref() {
            LogicalPlan::Subquery(sq) => (Some(a), sq.subquery.as_ref()),
            _ => (None, right),
        },
        LogicalPlan::Subquery(sq) => (None, sq.subquery.as_ref()),
        _ => (None, right),
    }
}

/// The columns `plan` reads from outside it (its nested subqueries' included, not those
/// they read of `plan`'s own).
fn outer_references(plan: &LogicalPlan) -> DfResult<Vec<(Arc<Field>, Column)>> {
    let mut found = Vec::new();
    crate::subquery::read_past(plan, &mut Vec::new(), &mut found)?;
    Ok(found
        .into_iter()
        .filter_map(|e| match e {
            Expr::OuterReferenceColumn(field, c) => Some((field, c)),
            _ => None,
        })
        .collect())
}

/// The left side's columns, as expressions (to carry them through a projection).
fn columns_of(schema: &DFSchema) -> Vec<Expr> {
    schema.columns().into_iter().map(Expr::Column).collect()
}

/// Whether a join condition is absent or `true`.
fn always_true(filter: &Option<Expr>) -> bool {
    matches!(
        filter,
        None | Some(Expr::Literal(ScalarValue::Boolean(Some(true)), _))
    )
}

/// `join` rewritten if it is a lateral join DataFusion would not execute: the unnest of
/// the left side, or the per-row call; as it is otherwise.
fn lateral_join(join: Join, state: &SessionState) -> DfResult<Transformed<LogicalPlan>> {
    let keep = |join: Join| Ok(Transformed::no(LogicalPlan::Join(join)));
    if !matches!(join.join_type, JoinType::Inner | JoinType::Left) || !join.on.is_empty() {
        return keep(join);
    }
    let right = Arc::clone(&join.right);
    let (alias, correlated) = lateral_side(&right);
    let outer = outer_references(correlated)?;
    let left_schema = Arc::clone(join.left.schema());
    if outer.is_empty() || !outer.iter().all(|(_, c)| left_schema.has_column(c)) {
        return keep(join);
    }
    if let Some(plan) = unnest_of_left(&join, correlated)? {
        return Ok(Transformed::yes(plan));
    }
    if decorrelated_by_datafusion(&join)? {
        return keep(join);
    }
    per_row(join, alias.map(|a| a.alias.clone()), correlated, state).map(Transformed::yes)
}

/// Whether DataFusion's own rule turns the join into one without outer references (it
/// does for a subquery correlated through its WHERE alone, as a hash join: better than
/// running it per row).
fn decorrelated_by_datafusion(join: &Join) -> DfResult<bool> {
    let rewritten = DecorrelateLateralJoin::new()
        .rewrite(LogicalPlan::Join(join.clone()), &OptimizerContext::new())?;
    if !rewritten.transformed {
        return Ok(false);
    }
    let mut correlated = false;
    rewritten.data.apply_with_subqueries(|node| {
        if node.contains_outer_reference() || matches!(node, LogicalPlan::Subquery(_)) {
            correlated = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(!correlated)
}

/// Replaces the outer references with the columns they name (of the left side, below).
fn uncorrelated(e: Expr) -> DfResult<Expr> {
    e.transform_up(|x| match x {
        Expr::OuterReferenceColumn(_, c) => Ok(Transformed::yes(Expr::Column(c))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// A set-returning function of the left side's columns (the planner's shape for
/// `unnest(...)` in FROM or in a lateral subquery's select list: projections over an
/// `Unnest` of a projection of one empty row) as an `Unnest` of the left side: the left
/// columns, then the function's under the right side's names. A left join takes only
/// renaming projections: its row of NULLs for an empty set has NULL in every column,
/// where a computed one (`t.id * 2`) would not be.
fn unnest_of_left(join: &Join, correlated: &LogicalPlan) -> DfResult<Option<LogicalPlan>> {
    let left_join = join.join_type == JoinType::Left;
    if left_join && !always_true(&join.filter) {
        return Ok(None);
    }
    let mut node = correlated;
    let mut projections: Vec<&Projection> = Vec::new();
    while let LogicalPlan::Projection(p) = node {
        projections.push(p);
        node = p.input.as_ref();
    }
    let LogicalPlan::Unnest(unnest) = node else {
        return Ok(None);
    };
    let LogicalPlan::Projection(lower) = unnest.input.as_ref() else {
        return Ok(None);
    };
    if !unnest.struct_type_columns.is_empty()
        || !matches!(lower.input.as_ref(), LogicalPlan::EmptyRelation(e) if e.produce_one_row)
    {
        return Ok(None);
    }
    let Some(outputs) = composed(&projections, &unnest.schema)? else {
        return Ok(None);
    };
    if left_join && !outputs.iter().all(|e| matches!(e, Expr::Column(_))) {
        return Ok(None);
    }
    let left = Arc::clone(&join.left);
    let mut exprs = columns_of(left.schema());
    for e in &lower.expr {
        exprs.push(uncorrelated(e.clone())?);
    }
    let lower = LogicalPlan::Projection(Projection::try_new(exprs, left)?);
    let options = if left_join {
        // A row of NULLs for an empty or NULL set: the outer join's unmatched row.
        unnest
            .options
            .clone()
            .with_null_handling(NullHandling::PreserveAndExpandEmpty)
    } else {
        unnest.options.clone()
    };
    let unnested = LogicalPlan::Unnest(Unnest::try_new(
        Arc::new(lower),
        unnest.exec_columns.clone(),
        options,
    )?);
    let mut exprs = columns_of(join.left.schema());
    for ((qualifier, field), value) in join.right.schema().iter().zip(outputs) {
        exprs.push(value.alias_qualified(qualifier.cloned(), field.name()));
    }
    let mut plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(unnested))?);
    if let Some(filter) = &join.filter
        && !always_true(&join.filter)
    {
        plan = LogicalPlan::Filter(Filter::try_new(filter.clone(), Arc::new(plan))?);
    }
    Ok(Some(plan))
}

/// The outputs of the top one of `projections` (top first, over an `Unnest` whose output
/// is `unnested`) as expressions of the `Unnest`'s columns and the left side's (outer
/// references become columns): each projection's columns replaced by what the one below
/// computes. `None` if one holds a subquery, or reads a column it cannot be traced to.
fn composed(projections: &[&Projection], unnested: &DFSchema) -> DfResult<Option<Vec<Expr>>> {
    let Some(top) = projections.first() else {
        return Ok(Some(columns_of(unnested)));
    };
    let mut exprs: Vec<Expr> = top.expr.iter().map(|e| e.clone().unalias()).collect();
    for below in &projections[1..] {
        let mut missing = false;
        exprs = exprs
            .into_iter()
            .map(|e| {
                e.transform_up(|x| match x {
                    Expr::Column(c) => match below.schema.maybe_index_of_column(&c) {
                        Some(i) => Ok(Transformed::yes(below.expr[i].clone().unalias())),
                        None => {
                            missing = true;
                            Ok(Transformed::no(Expr::Column(c)))
                        }
                    },
                    other => Ok(Transformed::no(other)),
                })
                .map(|t| t.data)
            })
            .collect::<DfResult<_>>()?;
        if missing {
            return Ok(None);
        }
    }
    let mut usable = true;
    let exprs = exprs
        .into_iter()
        .map(|e| {
            e.apply(|x| {
                match x {
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                        usable = false
                    }
                    Expr::Column(c) if !unnested.has_column(c) => usable = false,
                    _ => {}
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            uncorrelated(e)
        })
        .collect::<DfResult<Vec<Expr>>>()?;
    Ok(usable.then_some(exprs))
}

/// The general lateral join: the right side (with the join's condition inside it) run per
/// row by `crate::subquery::rows_call` and its rows unnested beside the left row's.
fn per_row(
    join: Join,
    alias: Option<datafusion::common::TableReference>,
    correlated: &LogicalPlan,
    state: &SessionState,
) -> DfResult<LogicalPlan> {
    let left_schema = Arc::clone(join.left.schema());
    let mut right = correlated.clone();
    if let Some(alias) = &alias {
        right = LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(right), alias.clone())?);
    }
    if let Some(filter) = &join.filter
        && !always_true(&join.filter)
    {
        // The left side's columns in the condition are outer references inside.
        let inside = filter
            .clone()
            .transform_up(|x| match x {
                Expr::Column(c) if left_schema.has_column(&c) => {
                    let (_, field) = left_schema.qualified_field_from_column(&c)?;
                    Ok(Transformed::yes(Expr::OuterReferenceColumn(
                        Arc::clone(field),
                        c,
                    )))
                }
                other => Ok(Transformed::no(other)),
            })?
            .data;
        right = LogicalPlan::Filter(Filter::try_new(inside, Arc::new(right))?);
    }
    let outer: Vec<Expr> = outer_references(&right)?
        .into_iter()
        .map(|(field, c)| Expr::OuterReferenceColumn(field, c))
        .collect();
    let fields: Fields = right
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
        .collect();
    let row_type = DataType::Struct(fields.clone());
    let name = crate::subquery::fresh_name("__flotilla_lateral");
    let rows = crate::subquery::rows_call(Arc::new(right.clone()), outer, row_type, state)
        .alias(name.clone());
    let mut exprs = columns_of(&left_schema);
    exprs.push(rows);
    let with_rows = LogicalPlan::Projection(Projection::try_new(exprs, Arc::clone(&join.left))?);
    let handling = if join.join_type == JoinType::Left {
        NullHandling::PreserveAndExpandEmpty
    } else {
        NullHandling::Drop
    };
    let unnested = LogicalPlan::Unnest(Unnest::try_new(
        Arc::new(with_rows),
        vec![Column::from_name(name.clone())],
        UnnestOptions::new().with_null_handling(handling),
    )?);
    let mut exprs = columns_of(&left_schema);
    for (i, (qualifier, field)) in join.right.schema().iter().enumerate() {
        let value = datafusion::functions::core::expr_fn::get_field(
            Expr::Column(Column::from_name(name.clone())),
            fields[i].name().as_str(),
        );
        exprs.push(value.alias_qualified(qualifier.cloned(), field.name()));
    }
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(unnested),
    )?))
}

// ---------------------------------------------------------------------------------------------
// An Unnest repeats its input's rows
// ---------------------------------------------------------------------------------------------

/// Takes from every `Unnest` the functional dependencies DataFusion 55 copies from its
/// input: a primary key of the input is no key of the output, where each row repeats per
/// element. Kept, they let the optimizer drop a sort key or grouping column after the
/// key as "determined" by it (`SELECT id, unnest(tags) u ... ORDER BY id, u DESC`
/// ignored `u DESC`). First among the optimizer's rules, so each pass starts without
/// them (a rule rebuilding an `Unnest` brings them back).
#[derive(Debug, Default)]
pub(crate) struct UnnestRepeatsRows;

impl OptimizerRule for UnnestRepeatsRows {
    fn name(&self) -> &str {
        "flotilla_unnest_repeats_rows"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn datafusion::optimizer::OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let keyed_unnest = |node: &LogicalPlan| {
            matches!(node, LogicalPlan::Unnest(u)
                if !u.schema.functional_dependencies().is_empty())
        };
        let mut found = false;
        plan.apply_with_subqueries(|node| {
            found = keyed_unnest(node);
            Ok(if found {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })?;
        if !found {
            return Ok(Transformed::no(plan));
        }
        plan.transform_up_with_subqueries(|node| match node {
            LogicalPlan::Unnest(mut u) => {
                let schema = u.schema.as_ref().clone();
                u.schema =
                    Arc::new(schema.with_functional_dependencies(FunctionalDependencies::empty())?);
                Ok(Transformed::yes(LogicalPlan::Unnest(u)))
            }
            // Above one, the dependencies derived from it go too. Every node recomputes
            // (one pass; a node not above an Unnest gets the schema it had).
            other => Ok(Transformed::yes(other.recompute_schema()?)),
        })
    }
}
