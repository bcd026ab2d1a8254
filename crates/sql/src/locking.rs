//! `SELECT ... FOR UPDATE` (and `FOR SHARE`, `FOR NO KEY UPDATE`, `FOR KEY SHARE`): the
//! rows a query returns are locked in its transaction until it ends, so a transaction can
//! read a row and write it back without another changing it in between.
//!
//! The query runs with the row handle of each table it locks appended to its output (every
//! table in FROM, or those named by `OF`); the table rows behind each row it returns are
//! then locked (pessimistic locks, checked against the statement's `for_update_ts`). A row
//! another transaction changed after the statement's snapshot fails its lock with a write
//! conflict: READ COMMITTED re-runs the statement on a newer snapshot (so it returns, and
//! locks, the newest version of each row that still matches, as PostgreSQL re-checks it),
//! and REPEATABLE READ fails with 40001, as PostgreSQL's does.
//!
//! Each table locks as its clauses say: waiting (up to `lock_timeout`), `NOWAIT` (55P03 at
//! once), or `SKIP LOCKED` (a row whose lock another transaction holds is left out). With
//! `SKIP LOCKED` the rows are locked before LIMIT and OFFSET count them, as PostgreSQL
//! does: the query is run for a window of rows, doubled while rows were skipped, so a
//! queue's `LIMIT 1 FOR UPDATE SKIP LOCKED` reads only a few rows past those taken.
//!
//! `FOR NO KEY UPDATE` and `FOR KEY SHARE` are PostgreSQL's key-level locks, read by
//! `key_lock_strengths_read`: they lock the row's key's existence only, so neither waits
//! for the other (nor for an update that keeps the row's keys, nor for a foreign key
//! check). `FOR SHARE` takes shared locks: any number of transactions hold one row so, and none
//! of them lets another change the row, delete it or lock it `FOR UPDATE` until it ends
//! (a writer waits for every holder). A transaction's own shared lock becomes exclusive
//! when it writes the row or locks it `FOR UPDATE`, waiting for the other holders; two
//! doing so at once is a deadlock (40P01), as in PostgreSQL. A WITH query referenced in FROM is not
//! locked, as in PostgreSQL. Set operations, grouping, DISTINCT,
//! NATURAL and parenthesized joins, the nullable side of an outer join and subqueries in
//! FROM that would be locked are refused (0A000 or PostgreSQL's error), never run without
//! their locks.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BinaryArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, Projection};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, JoinConstraint, JoinOperator, LockClause, LockType, NonBlock, ObjectName, Query,
    SelectItem, SetExpr, Statement, TableFactor, TableWithJoins, Value, Visit, Visitor,
    visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan};
use flotilla_catalog::TableDef;
use flotilla_txn::{LockStrength, TxnError};
use flotilla_types::Timestamp;
use flotilla_types::version::Feature;

use crate::api::QueryResult;
use crate::context::{Collect, StatementContext};
use crate::dml::{ident_name, prepare_query_statement, relation_name, restore_names};
use crate::error::{SqlError, datafusion_error};
use crate::rows::row_key;
use crate::session::Session;
use crate::table::HANDLE_COLUMN;

/// The output name of the row handles appended to a locking query (with the locked
/// table's position after it).
const LOCKED_HANDLE: &str = "__flotilla_locked_handle";

/// Row locks asked for per request.
const LOCK_CHUNK_ROWS: usize = 1024;

fn not_allowed(with: &str) -> SqlError {
    SqlError::new("0A000", format!("FOR UPDATE is not allowed with {with}"))
}

fn not_supported(what: &str) -> SqlError {
    SqlError::unsupported(format!("SELECT ... FOR UPDATE {what}")).with_hint(
        "lock the rows of the tables themselves: SELECT ... FROM t JOIN u ON ... FOR UPDATE OF t",
    )
}

/// How a locked table's rows meet another transaction's lock. PostgreSQL's precedence
/// when clauses name one table twice is the order here: `NOWAIT` over `SKIP LOCKED` over
/// waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum OnLocked {
    /// Wait for it, up to the session's `lock_timeout`.
    Wait,
    /// Leave the row out (`SKIP LOCKED`).
    Skip,
    /// Fail at once with 55P03 (`NOWAIT`).
    Fail,
}

/// A table whose rows a query locks.
struct Target {
    table: Arc<TableDef>,
    /// The name its columns are qualified by in the query: its alias, or its name.
    qualifier: String,
    on_locked: OnLocked,
    /// The lock its rows take: the strongest its clauses ask for (`FOR SHARE` rows take
    /// shared locks, which other transactions' `FOR SHARE` and `FOR KEY SHARE` (and
    /// foreign key checks) share, and which keep out writers and `FOR UPDATE`).
    strength: LockStrength,
}

/// A relation of a query's FROM clause.
struct Relation<'a> {
    factor: &'a TableFactor,
    /// What its columns are qualified by: the alias, or a table's name.
    qualifier: Option<String>,
    /// On the side of an outer join that may be all NULLs: no row to lock.
    nullable: bool,
}

fn relation(factor: &TableFactor) -> Relation<'_> {
    let qualifier = match factor {
        // A table function (`generate_series(1, 3) AS g`) has no rows to lock.
        TableFactor::Table {
            alias,
            args: Some(_),
            ..
        } => alias.as_ref().map(|a| ident_name(&a.name)),
        TableFactor::Table { name, alias, .. } => Some(
            alias
                .as_ref()
                .map(|a| ident_name(&a.name))
                .unwrap_or_else(|| relation_name(name)),
        ),
        TableFactor::Derived { alias, .. } => alias.as_ref().map(|a| ident_name(&a.name)),
        _ => None,
    };
    Relation {
        factor,
        qualifier,
        nullable: false,
    }
}

/// The relations of a FROM clause in order, each marked nullable when an outer join may
/// extend it with NULLs.
fn relations(from: &[TableWithJoins]) -> Result<Vec<Relation<'_>>, SqlError> {
    let mut out = Vec::new();
    for item in from {
        let first = out.len();
        if matches!(item.relation, TableFactor::NestedJoin { .. }) {
            return Err(not_supported("over a parenthesized join"));
        }
        out.push(relation(&item.relation));
        for join in &item.joins {
            let (constraint, left_nullable, right_nullable) = match &join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::StraightJoin(c) => (c, false, false),
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (c, false, true),
                JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (c, true, false),
                JoinOperator::FullOuter(c) => (c, true, true),
                _ => return Err(not_supported("over this kind of join")),
            };
            // Each locked table's row handle is in scope under one name: a NATURAL join
            // would join on it.
            if matches!(constraint, JoinConstraint::Natural) {
                return Err(not_supported("over a NATURAL join"));
            }
            if matches!(join.relation, TableFactor::NestedJoin { .. }) {
                return Err(not_supported("over a parenthesized join"));
            }
            if left_nullable {
                for r in &mut out[first..] {
                    r.nullable = true;
                }
            }
            let mut right = relation(&join.relation);
            right.nullable = right_nullable;
            out.push(right);
        }
    }
    Ok(out)
}

/// The tables whose rows `query` locks, with how each waits.
fn locking_targets(session: &Session, query: &Query) -> Result<Vec<Target>, SqlError> {
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
    // A WITH query's rows are not locked through a reference to it, as in PostgreSQL: a
    // locking clause applies to the tables of the query it is on.
    let ctes: Vec<String> = query
        .with
        .iter()
        .flat_map(|with| &with.cte_tables)
        .map(|cte| ident_name(&cte.alias.name))
        .collect();
    let is_cte = |factor: &TableFactor| match factor {
        TableFactor::Table { name, .. } => name.0.len() == 1 && ctes.contains(&relation_name(name)),
        _ => false,
    };
    let relations = relations(&select.from)?;
    let named = |lock: &LockClause| clause_of(lock).0;
    for lock in &query.locks {
        if let (Some(name), strength) = clause_of(lock)
            && !relations
                .iter()
                .any(|r| r.qualifier.as_deref() == Some(name.as_str()))
        {
            let clause = match strength {
                LockStrength::KeyShare => "FOR KEY SHARE",
                LockStrength::Share => "FOR SHARE",
                LockStrength::NoKeyUpdate => "FOR NO KEY UPDATE",
                LockStrength::Update => "FOR UPDATE",
            };
            return Err(SqlError::new(
                "42P01",
                format!("relation \"{name}\" in {clause} clause not found in FROM clause"),
            ));
        }
    }
    // Before every store can take a shared (or key-only) lock, a rolling upgrade, a clause
    // takes the nearest stronger lock they all know: it waits where it need not, but lets
    // no write through.
    let may_share = session.engine.may_use(Feature::SharedLocks);
    let key_level = session.engine.may_use(Feature::KeyShareLocks);
    let known = |strength: LockStrength| match strength {
        LockStrength::KeyShare if key_level => LockStrength::KeyShare,
        LockStrength::KeyShare | LockStrength::Share if may_share => LockStrength::Share,
        LockStrength::NoKeyUpdate if key_level => LockStrength::NoKeyUpdate,
        _ => LockStrength::Update,
    };
    let mut targets = Vec::new();
    for r in relations.iter().filter(|r| !is_cte(r.factor)) {
        let naming: Vec<&LockClause> = query
            .locks
            .iter()
            .filter(|lock| match named(lock) {
                None => true,
                Some(name) => r.qualifier.as_deref() == Some(name.as_str()),
            })
            .collect();
        // The strongest clause naming a table wins, as in PostgreSQL.
        let strength = naming.iter().map(|lock| clause_of(lock).1).max().map(known);
        let on_locked = naming
            .iter()
            .map(|lock| match lock.nonblock {
                Some(NonBlock::Nowait) => OnLocked::Fail,
                Some(NonBlock::SkipLocked) => OnLocked::Skip,
                None => OnLocked::Wait,
            })
            .max();
        let (Some(on_locked), Some(strength)) = (on_locked, strength) else {
            continue;
        };
        let (
            TableFactor::Table {
                name, args: None, ..
            },
            Some(qualifier),
        ) = (r.factor, &r.qualifier)
        else {
            return Err(not_supported("of a subquery or function"));
        };
        if r.nullable {
            return Err(SqlError::new(
                "0A000",
                "FOR UPDATE cannot be applied to the nullable side of an outer join",
            ));
        }
        targets.push(Target {
            table: crate::dml::target_table(session, &relation_name(name))?,
            qualifier: qualifier.clone(),
            on_locked,
            strength,
        });
    }
    Ok(targets)
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
    let targets = locking_targets(session, query)?;
    let mut unlocked = query.clone();
    unlocked.locks.clear();
    let (prepared, renamed) = prepare_query_statement(&Statement::Query(Box::new(unlocked)));
    let Statement::Query(mut with_handles) = prepared.clone() else {
        return Err(SqlError::internal(
            "a query was prepared as another statement",
        ));
    };
    if let SetExpr::Select(select) = with_handles.body.as_mut() {
        for (i, target) in targets.iter().enumerate() {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: Expr::CompoundIdentifier(vec![
                    Ident::with_quote('"', target.qualifier.as_str()),
                    Ident::with_quote('"', HANDLE_COLUMN),
                ]),
                alias: Ident::with_quote('"', format!("{LOCKED_HANDLE}_{i}")),
            });
        }
    }
    let tables = targets.iter().map(|t| t.table.name.clone()).collect();
    let ctx = session.context(read_ts, tables, HashMap::new());
    let plan = match ctx.plan(Statement::Query(with_handles)).await {
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
    let first_handle = plan.schema().fields().len() - targets.len();
    let locked = async {
        if targets.iter().any(|t| t.on_locked == OnLocked::Skip) {
            return skip_locked(session, &ctx, plan, &targets, first_handle, limits).await;
        }
        let (schema, batches) = ctx.run_with_schema(plan, limits).await?;
        lock_all(session, &targets, &batches, first_handle).await?;
        Ok((schema, batches))
    }
    .await;
    // NOWAIT and SKIP LOCKED are this statement's alone.
    let lock_timeout_ms = session.lock_timeout_ms;
    if let Some(open) = session.open.as_mut() {
        open.txn.set_lock_wait_timeout_ms(lock_timeout_ms);
    }
    let (schema, batches) = locked?;
    // The query's own columns: without the handles appended, and without those a `*`
    // expands to where a handle is in scope.
    let columns: Vec<usize> = (0..first_handle)
        .filter(|&i| schema.field(i).name() != HANDLE_COLUMN)
        .collect();
    let schema = Arc::new(
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

/// The row handles in `batch`'s column `column` (one locked table's).
fn handles(batch: &RecordBatch, column: usize) -> Result<&BinaryArray, SqlError> {
    batch
        .column(column)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| SqlError::internal("the row handle column is not binary"))
}

/// What a failed lock on `target`'s row tells the client.
fn lock_error(target: &Target, e: TxnError) -> SqlError {
    match e {
        TxnError::LockWaitTimeout { .. } if target.on_locked == OnLocked::Fail => SqlError::new(
            "55P03",
            format!(
                "could not obtain lock on row in relation \"{}\"",
                target.table.name
            ),
        ),
        other => other.into(),
    }
}

fn transaction(session: &mut Session) -> &mut flotilla_txn::Transaction {
    &mut session.open.as_mut().expect("open transaction").txn
}

/// Points the transaction's lock waits at `target`'s rule.
fn wait_as(session: &mut Session, target: &Target) {
    let ms = match target.on_locked {
        OnLocked::Wait => session.lock_timeout_ms,
        OnLocked::Fail | OnLocked::Skip => 0,
    };
    transaction(session).set_lock_wait_timeout_ms(ms);
}

/// What marks, in a locking clause's `OF` name, a clause that `key_lock_strengths_read`
/// read as `FOR NO KEY UPDATE` or `FOR KEY SHARE`: a first name part no identifier the
/// user wrote can be (it holds a control character).
const KEY_LEVEL_MARK: &str = "\u{1}key";

/// `FOR NO KEY UPDATE` and `FOR KEY SHARE`, which sqlparser does not read: the words
/// `NO KEY` and `KEY` are dropped from `tokens`, leaving `FOR UPDATE` and `FOR SHARE`,
/// and the clause's `OF` name gets `KEY_LEVEL_MARK` as its first part (an `OF` is added
/// where there is none) so that `clause_of` reads the strength back. (Django's
/// `select_for_update(no_key=True)` sends the first.)
pub(crate) fn key_lock_strengths_read(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let is = |t: &TokenWithSpan, keyword: Keyword| matches!(&t.token, Token::Word(w) if w.keyword == keyword && w.quote_style.is_none());
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let mut dropped = HashSet::new();
    // Token position -> what goes in before it (`usize::MAX`: at the end).
    let mut inserted: HashMap<usize, Vec<Token>> = HashMap::new();
    for (n, &at) in significant.iter().enumerate() {
        if !is(&tokens[at], Keyword::FOR) {
            continue;
        }
        let after = |k: usize, keyword: Keyword| {
            significant
                .get(n + k)
                .is_some_and(|&i| is(&tokens[i], keyword))
        };
        let words = if after(1, Keyword::KEY) && after(2, Keyword::SHARE) {
            1
        } else if after(1, Keyword::NO) && after(2, Keyword::KEY) && after(3, Keyword::UPDATE) {
            2
        } else {
            continue;
        };
        dropped.extend(significant[n + 1..=n + words].iter().copied());
        let mark = Token::make_word(KEY_LEVEL_MARK, Some('"'));
        // The k-th token after the clause's last word (`SHARE` or `UPDATE`).
        let next = |k: usize| significant.get(n + words + 1 + k).copied();
        match (next(1), next(2)) {
            // `OF name`: the mark goes before the name, as its first part.
            (Some(of), Some(name)) if is(&tokens[of], Keyword::OF) => {
                inserted.insert(name, vec![mark, Token::Period]);
            }
            (Some(of), _) if is(&tokens[of], Keyword::OF) => {}
            (Some(following), _) => {
                inserted.insert(following, vec![Token::make_keyword("OF"), mark]);
            }
            (None, _) => {
                inserted.insert(usize::MAX, vec![Token::make_keyword("OF"), mark]);
            }
        }
    }
    if dropped.is_empty() {
        return tokens;
    }
    let space = || Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space);
    let end_span = tokens.last().map(|t| t.span).unwrap_or_else(Span::empty);
    let mut out = Vec::with_capacity(tokens.len() + 4 * inserted.len());
    let spaced = |tokens: Vec<Token>, span: Span, out: &mut Vec<TokenWithSpan>| {
        for token in tokens {
            out.push(TokenWithSpan::new(space(), span));
            out.push(TokenWithSpan::new(token, span));
        }
        out.push(TokenWithSpan::new(space(), span));
    };
    for (i, token) in tokens.into_iter().enumerate() {
        if let Some(before) = inserted.remove(&i) {
            spaced(before, token.span, &mut out);
        }
        if !dropped.contains(&i) {
            out.push(token);
        }
    }
    if let Some(at_end) = inserted.remove(&usize::MAX) {
        // Before the closing EOF token, if there is one.
        let eof = out.pop_if(|t| t.token == Token::EOF);
        spaced(at_end, end_span, &mut out);
        out.extend(eof);
    }
    out
}

/// A locking clause's `OF` name (as `relation_name` gives it) and the strength it asks
/// for, reading back what `key_lock_strengths_read` marked.
fn clause_of(lock: &LockClause) -> (Option<String>, LockStrength) {
    let marked = lock.of.as_ref().is_some_and(|of| {
        of.0.first()
            .and_then(|part| part.as_ident())
            .is_some_and(|i| i.value == KEY_LEVEL_MARK)
    });
    let name = match &lock.of {
        Some(of) if marked => {
            let rest = ObjectName(of.0[1..].to_vec());
            (!rest.0.is_empty()).then(|| relation_name(&rest))
        }
        Some(of) => Some(relation_name(of)),
        None => None,
    };
    let strength = match (lock.lock_type, marked) {
        (LockType::Share, true) => LockStrength::KeyShare,
        (LockType::Share, false) => LockStrength::Share,
        (LockType::Update, true) => LockStrength::NoKeyUpdate,
        (LockType::Update, false) => LockStrength::Update,
    };
    (name, strength)
}

/// Locks the rows of `target` at `keys`, with the strength its clause asks for.
async fn lock_rows(
    txn: &mut flotilla_txn::Transaction,
    target: &Target,
    keys: Vec<(Vec<u8>, bool)>,
) -> Result<(), TxnError> {
    txn.lock_keys_as(keys, false, target.strength).await?;
    Ok(())
}

/// Locks every table row behind `batches`' rows (none is skipped).
async fn lock_all(
    session: &mut Session,
    targets: &[Target],
    batches: &[RecordBatch],
    first_handle: usize,
) -> Result<(), SqlError> {
    for (i, target) in targets.iter().enumerate() {
        // A join may return one table row many times; it is locked once.
        let mut seen = HashSet::new();
        let mut keys: Vec<(Vec<u8>, bool)> = Vec::new();
        for batch in batches {
            let handles = handles(batch, first_handle + i)?;
            for r in (0..handles.len()).filter(|&r| !handles.is_null(r)) {
                let key = row_key(&target.table, handles.value(r));
                if seen.insert(key.clone()) {
                    keys.push((key, false));
                }
            }
        }
        wait_as(session, target);
        for chunk in keys.chunks(LOCK_CHUNK_ROWS) {
            lock_rows(transaction(session), target, chunk.to_vec())
                .await
                .map_err(|e| lock_error(target, e))?;
        }
    }
    Ok(())
}

/// Locks the table rows behind row `r` (its handles in `handles`, one per target), unless
/// a `SKIP LOCKED` table's row is locked by another transaction: then false, and that row
/// is remembered in `skipped`.
async fn take_row(
    session: &mut Session,
    targets: &[Target],
    handles: &[&BinaryArray],
    r: usize,
    skipped: &mut HashSet<Vec<u8>>,
) -> Result<bool, SqlError> {
    for (target, handles) in targets.iter().zip(handles) {
        if handles.is_null(r) {
            continue;
        }
        let key = row_key(&target.table, handles.value(r));
        let txn = transaction(session);
        if txn.holds_at_least(&key, target.strength) {
            continue;
        }
        if skipped.contains(&key) {
            return Ok(false);
        }
        wait_as(session, target);
        match lock_rows(transaction(session), target, vec![(key.clone(), false)]).await {
            Ok(_) => {}
            Err(TxnError::LockWaitTimeout { .. }) if target.on_locked == OnLocked::Skip => {
                skipped.insert(key);
                return Ok(false);
            }
            Err(e) => return Err(lock_error(target, e)),
        }
    }
    Ok(true)
}

/// A LIMIT or OFFSET count: a constant (a bound parameter is a cast literal), NULL for
/// none.
fn literal_count(
    expr: &datafusion::logical_expr::Expr,
    clause: &str,
) -> Result<Option<usize>, SqlError> {
    use datafusion::logical_expr::Expr as DfExpr;
    let computed = || not_supported(&format!("SKIP LOCKED with a computed {clause}"));
    let value = match expr {
        DfExpr::Literal(v, _) => v.clone(),
        DfExpr::Cast(c) => match c.expr.as_ref() {
            DfExpr::Literal(v, _) => v.cast_to(c.field.data_type()).map_err(datafusion_error)?,
            _ => return Err(computed()),
        },
        _ => return Err(computed()),
    };
    if value.is_null() {
        return Ok(None);
    }
    let n = match value.cast_to(&DataType::Int64).map_err(datafusion_error)? {
        ScalarValue::Int64(Some(n)) => n,
        _ => return Err(SqlError::internal(format!("{clause} is not an integer"))),
    };
    let code = if clause == "LIMIT" { "2201W" } else { "2201X" };
    usize::try_from(n)
        .map(Some)
        .map_err(|_| SqlError::new(code, format!("{clause} must not be negative")))
}

/// `plan` without the LIMIT/OFFSET over its rows (under its projections), and that
/// limit's offset and count.
fn without_top_limit(plan: LogicalPlan) -> Result<(LogicalPlan, usize, Option<usize>), SqlError> {
    match plan {
        LogicalPlan::Limit(limit) => {
            let skip = match limit.skip.as_deref() {
                Some(e) => literal_count(e, "OFFSET")?.unwrap_or(0),
                None => 0,
            };
            let fetch = match limit.fetch.as_deref() {
                Some(e) => literal_count(e, "LIMIT")?,
                None => None,
            };
            Ok((Arc::unwrap_or_clone(limit.input), skip, fetch))
        }
        LogicalPlan::Projection(p) => {
            let (input, skip, fetch) = without_top_limit(Arc::unwrap_or_clone(p.input))?;
            let p = Projection::try_new_with_schema(p.expr, Arc::new(input), p.schema)
                .map_err(datafusion_error)?;
            Ok((LogicalPlan::Projection(p), skip, fetch))
        }
        other => Ok((other, 0, None)),
    }
}

/// The rows `rows` (batch, row) of `batches`, in that order.
pub(crate) fn pick(
    batches: &[RecordBatch],
    rows: &[(usize, u32)],
) -> Result<Vec<RecordBatch>, SqlError> {
    rows.chunk_by(|a, b| a.0 == b.0)
        .map(|run| {
            let indices = UInt32Array::from_iter_values(run.iter().map(|&(_, r)| r));
            take_record_batch(&batches[run[0].0], &indices)
                .map_err(|e| SqlError::internal(e.to_string()))
        })
        .collect()
}

/// Runs a query with `SKIP LOCKED`: locks its rows in order, leaving out those another
/// transaction holds, until LIMIT + OFFSET rows are taken. The query runs for a window of
/// that many rows, doubled while rows were skipped and more remain.
async fn skip_locked(
    session: &mut Session,
    ctx: &StatementContext,
    plan: LogicalPlan,
    targets: &[Target],
    first_handle: usize,
    limits: Collect,
) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
    let (unlimited, offset, count) = without_top_limit(plan)?;
    let wanted = count.map(|c| offset.saturating_add(c));
    let mut window = wanted.map(|w| w.max(1));
    let mut skipped = HashSet::new();
    loop {
        let plan = match window {
            Some(n) => LogicalPlanBuilder::from(unlimited.clone())
                .limit(0, Some(n))
                .and_then(|b| b.build())
                .map_err(datafusion_error)?,
            None => unlimited.clone(),
        };
        let (schema, batches) = ctx.run_with_schema(plan, limits).await?;
        let returned: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut taken: Vec<(usize, u32)> = Vec::new();
        'rows: for (b, batch) in batches.iter().enumerate() {
            let handles = (0..targets.len())
                .map(|i| handles(batch, first_handle + i))
                .collect::<Result<Vec<_>, _>>()?;
            for r in 0..batch.num_rows() {
                if Some(taken.len()) == wanted {
                    break 'rows;
                }
                if take_row(session, targets, &handles, r, &mut skipped).await? {
                    taken.push((b, r as u32));
                }
            }
        }
        let exhausted = window.is_none_or(|n| returned < n);
        if exhausted || Some(taken.len()) == wanted {
            // OFFSET's rows are locked too, as PostgreSQL locks them, but not returned.
            let kept = &taken[offset.min(taken.len())..];
            return Ok((schema, pick(&batches, kept)?));
        }
        window = window.map(|n| n.saturating_mul(2));
    }
}

/// Counts the queries with a locking clause, wherever they are in a statement.
#[derive(Default)]
struct LockingQueries(usize);

impl Visitor for LockingQueries {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if !query.locks.is_empty() {
            self.0 += 1;
        }
        ControlFlow::Continue(())
    }
}

fn locking_queries(node: &impl Visit) -> usize {
    let mut counter = LockingQueries::default();
    let _ = node.visit(&mut counter);
    counter.0
}

/// The subquery of a subquery expression, if it has a locking clause.
fn locking_subquery(expr: &Expr) -> Option<&Query> {
    let query = match expr {
        Expr::Subquery(q) => q,
        Expr::InSubquery { subquery, .. } => subquery,
        Expr::Exists { subquery, .. } => subquery,
        _ => return None,
    };
    (!query.locks.is_empty()).then_some(query.as_ref())
}

/// Runs each locking subquery in an expression of `statement` first (as PostgreSQL
/// locks a subquery's rows when it runs), and puts its result in its place as constants:
/// a scalar subquery's value, an `IN` subquery's list, an `EXISTS`'s truth. So the job
/// queue's `UPDATE job SET ... WHERE id = (SELECT id ... LIMIT 1 FOR UPDATE SKIP LOCKED)`
/// takes the next row no other worker holds. `None` when there is none. A locking query
/// elsewhere (in FROM, WITH, a set operation) or within another is refused, never run
/// without its locks. The subquery runs on its own, so it cannot refer to the outer query.
pub(crate) async fn settle_nested_locks(
    session: &mut Session,
    statement: &Statement,
    read_ts: Timestamp,
) -> Result<Option<Statement>, SqlError> {
    // EXPLAIN shows the plan; it takes no locks, as PostgreSQL's does not.
    if matches!(statement, Statement::Explain { .. }) {
        return Ok(None);
    }
    let all = locking_queries(statement);
    let top = matches!(statement, Statement::Query(q) if !q.locks.is_empty());
    if all == usize::from(top) {
        return Ok(None);
    }
    let mut nested: Vec<Query> = Vec::new();
    let _ = visit_expressions(statement, |expr: &Expr| {
        if let Some(query) = locking_subquery(expr)
            && !nested.contains(query)
        {
            nested.push(query.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    let found: usize = nested.iter().map(locking_queries).sum();
    if nested.iter().any(|q| locking_queries(q) > 1) || found + usize::from(top) < all {
        return Err(not_supported(
            "in FROM, WITH, a set operation or another locking subquery",
        ));
    }
    // Each subquery's rows: their count, and their values when it has one column.
    let mut results: Vec<(usize, Option<Vec<Expr>>)> = Vec::with_capacity(nested.len());
    for query in &nested {
        let (schema, batches) = match select_locking(session, query, read_ts).await {
            Ok(QueryResult::Rows {
                schema, batches, ..
            }) => (schema, batches),
            Ok(_) => return Err(SqlError::internal("a locking subquery returned no rows")),
            Err(e) if e.code == "42703" => {
                return Err(not_supported(&format!(
                    "in a subquery that refers to the outer query ({})",
                    e.message
                )));
            }
            Err(e) => return Err(e),
        };
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let values = if schema.fields().len() == 1 {
            let mut values = Vec::with_capacity(rows);
            for batch in &batches {
                for row in 0..batch.num_rows() {
                    let value = ScalarValue::try_from_array(batch.column(0), row)
                        .map_err(datafusion_error)?;
                    values.push(crate::params::literal_expr(&value)?);
                }
            }
            Some(values)
        } else {
            None
        };
        results.push((rows, values));
    }
    let mut settled = statement.clone();
    let mut failed = None;
    let _ = visit_expressions_mut(&mut settled, |expr: &mut Expr| {
        let Some(i) = locking_subquery(expr).and_then(|q| nested.iter().position(|n| n == q))
        else {
            return ControlFlow::Continue(());
        };
        let (rows, values) = &results[i];
        let replacement = match (&*expr, values) {
            (Expr::Exists { negated, .. }, _) => {
                Expr::value(Value::Boolean((*rows == 0) == *negated))
            }
            (_, None) => {
                let message = if matches!(expr, Expr::Subquery(_)) {
                    "subquery must return only one column"
                } else {
                    "subquery has too many columns"
                };
                failed = Some(SqlError::new("42601", message));
                return ControlFlow::Break(());
            }
            (Expr::Subquery(_), Some(values)) => match values.as_slice() {
                [] => Expr::value(Value::Null),
                [one] => one.clone(),
                _ => {
                    failed = Some(SqlError::new(
                        "21000",
                        "more than one row returned by a subquery used as an expression",
                    ));
                    return ControlFlow::Break(());
                }
            },
            // `x IN (no rows)` is false even for a NULL x; NOT IN, true.
            (Expr::InSubquery { negated, .. }, Some(values)) if values.is_empty() => {
                Expr::value(Value::Boolean(*negated))
            }
            (
                Expr::InSubquery {
                    expr: probe,
                    negated,
                    ..
                },
                Some(values),
            ) => Expr::InList {
                expr: probe.clone(),
                list: values.clone(),
                negated: *negated,
            },
            _ => return ControlFlow::Continue(()),
        };
        *expr = Expr::Nested(Box::new(replacement));
        ControlFlow::Continue(())
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(Some(settled)),
    }
}
