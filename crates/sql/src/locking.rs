//! `SELECT ... FOR UPDATE` (and `FOR SHARE`; the parser has no `FOR NO KEY UPDATE`): the
//! rows a query returns are locked in its transaction until it ends, so a transaction can
//! read a row and write it back without another changing it in between.
//!
//! The query runs with the table's row handle appended to its output; the rows it returns
//! are then locked (pessimistic locks, checked against the statement's `for_update_ts`).
//! A row another transaction changed after the statement's snapshot fails its lock with a
//! write conflict: READ COMMITTED re-runs the statement on a newer snapshot (so it returns,
//! and locks, the newest version of each row that still matches, as PostgreSQL re-checks
//! it), and REPEATABLE READ fails with 40001, as PostgreSQL's does.
//!
//! Every lock is exclusive: `FOR SHARE` locks as `FOR UPDATE` does, so
//! two of them wait for each other where PostgreSQL lets them share. A query over one
//! table is supported; joins, set operations, subqueries in FROM and `SKIP LOCKED` are
//! refused (0A000), never run without their locks.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, BinaryArray};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, NonBlock, Query, SelectItem, SetExpr, Statement, TableFactor,
};
use flotilla_txn::TxnError;
use flotilla_types::Timestamp;

use crate::api::QueryResult;
use crate::context::Collect;
use crate::dml::{ident_name, prepare_query_statement, relation_name, restore_names};
use crate::error::SqlError;
use crate::rows::row_key;
use crate::session::Session;
use crate::table::HANDLE_COLUMN;

/// The output name of the row handle appended to a locking query.
const LOCKED_HANDLE: &str = "__flotilla_locked_handle";

/// Row locks asked for per request.
const LOCK_CHUNK_ROWS: usize = 1024;

fn not_allowed(with: &str) -> SqlError {
    SqlError::new("0A000", format!("FOR UPDATE is not allowed with {with}"))
}

fn not_supported(what: &str) -> SqlError {
    SqlError::unsupported(format!("SELECT ... FOR UPDATE {what}"))
        .with_hint("lock the rows of one table at a time: SELECT ... FROM t WHERE ... FOR UPDATE")
}

/// The table whose rows `query` locks, the name its columns are qualified by there (its
/// alias, if any), and whether the query must not wait for a lock (`NOWAIT`).
fn locking_target(
    session: &Session,
    query: &Query,
) -> Result<(std::sync::Arc<flotilla_catalog::TableDef>, String, bool), SqlError> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(not_allowed("UNION/INTERSECT/EXCEPT"));
    };
    if select.distinct.is_some() {
        return Err(not_allowed("DISTINCT clause"));
    }
    let grouped = match &select.group_by {
        datafusion::sql::sqlparser::ast::GroupByExpr::All(_) => true,
        datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, _) => !e.is_empty(),
    };
    if grouped {
        return Err(not_allowed("GROUP BY clause"));
    }
    if select.having.is_some() {
        return Err(not_allowed("HAVING clause"));
    }
    if query.with.is_some() {
        return Err(not_supported("with a WITH clause"));
    }
    let [from] = select.from.as_slice() else {
        return Err(not_supported("over several tables"));
    };
    if !from.joins.is_empty() {
        return Err(not_supported("over a join"));
    }
    let TableFactor::Table { name, alias, .. } = &from.relation else {
        return Err(not_supported("of a subquery or function"));
    };
    let table = crate::dml::target_table(session, &relation_name(name))?;
    let qualifier = alias
        .as_ref()
        .map(|a| ident_name(&a.name))
        .unwrap_or_else(|| table.name.clone());
    let mut nowait = false;
    for lock in &query.locks {
        if let Some(of) = &lock.of {
            let named = relation_name(of);
            if named != qualifier {
                return Err(SqlError::new(
                    "42P01",
                    format!("relation \"{named}\" in FOR UPDATE clause not found in FROM clause"),
                ));
            }
        }
        match lock.nonblock {
            Some(NonBlock::Nowait) => nowait = true,
            Some(NonBlock::SkipLocked) => return Err(not_supported("SKIP LOCKED")),
            None => {}
        }
    }
    Ok((table, qualifier, nowait))
}

/// Whether `plan` groups or windows its rows: each output row is then no one table row
/// to lock.
fn aggregates(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found |= matches!(
            node,
            LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) | LogicalPlan::Distinct(_)
        );
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Runs a query with a locking clause (see the module comment) at `read_ts` in the
/// session's open transaction.
pub(crate) async fn select_locking(
    session: &mut Session,
    query: &Query,
    read_ts: Timestamp,
) -> Result<QueryResult, SqlError> {
    let (table, qualifier, nowait) = locking_target(session, query)?;
    let mut unlocked = query.clone();
    unlocked.locks.clear();
    let (prepared, renamed) = prepare_query_statement(&Statement::Query(Box::new(unlocked)));
    let Statement::Query(mut with_handle) = prepared.clone() else {
        return Err(SqlError::internal(
            "a query was prepared as another statement",
        ));
    };
    if let SetExpr::Select(select) = with_handle.body.as_mut() {
        select.projection.push(SelectItem::ExprWithAlias {
            expr: Expr::CompoundIdentifier(vec![
                Ident::with_quote('"', qualifier.as_str()),
                Ident::with_quote('"', HANDLE_COLUMN),
            ]),
            alias: Ident::with_quote('"', LOCKED_HANDLE),
        });
    }
    let ctx = session.context(read_ts, Some(table.name.clone()), HashMap::new());
    let plan = match ctx.plan(Statement::Query(with_handle)).await {
        Ok(plan) => plan,
        Err(e) => {
            // An aggregate without GROUP BY (`count(*)`) cannot take the handle column;
            // say why, as PostgreSQL does.
            if let Ok(plain) = ctx.plan(prepared).await
                && aggregates(&plain)
            {
                return Err(not_allowed("aggregate functions"));
            }
            return Err(e);
        }
    };
    if aggregates(&plan) {
        return Err(not_allowed("aggregate or window functions"));
    }
    let limits = Collect::result(&session.engine.config, session.result_bytes_held());
    let (schema, batches) = ctx.run_with_schema(plan, limits).await?;
    let handle = schema.fields().len() - 1;
    let mut keys: Vec<(Vec<u8>, bool)> = Vec::new();
    for batch in &batches {
        let handles = batch
            .column(handle)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| SqlError::internal("the row handle column is not binary"))?;
        keys.extend((0..handles.len()).map(|r| (row_key(&table, handles.value(r)), false)));
    }
    let txn = &mut session.open.as_mut().expect("open transaction").txn;
    if nowait {
        // Only this statement: the next one sets the session's wait again.
        txn.set_lock_wait_timeout_ms(0);
    }
    for chunk in keys.chunks(LOCK_CHUNK_ROWS) {
        txn.lock_keys(chunk.to_vec(), false)
            .await
            .map_err(|e| match e {
                TxnError::LockWaitTimeout { .. } if nowait => SqlError::new(
                    "55P03",
                    format!(
                        "could not obtain lock on row in relation \"{}\"",
                        table.name
                    ),
                ),
                other => other.into(),
            })?;
    }
    // The query's own columns: without the handle appended, and without the one a `*`
    // expands to where the handle is in scope.
    let columns: Vec<usize> = (0..handle)
        .filter(|&i| schema.field(i).name() != HANDLE_COLUMN)
        .collect();
    let schema = std::sync::Arc::new(
        schema
            .project(&columns)
            .map_err(|e| SqlError::internal(e.to_string()))?,
    );
    let batches = batches
        .iter()
        .map(|b| b.project(&columns))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SqlError::internal(e.to_string()))?;
    let (schema, batches) = restore_names(schema, batches, &renamed)?;
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    Ok(QueryResult::Rows {
        schema,
        batches,
        tag: format!("SELECT {n}"),
    })
}
