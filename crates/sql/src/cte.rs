//! WITH queries DataFusion cannot plan: a data-modifying WITH query (`WITH moved AS
//! (DELETE FROM t ... RETURNING *) INSERT INTO archive SELECT * FROM moved`), and any WITH
//! in front of an INSERT, UPDATE or DELETE. DataFusion plans a WITH only around a SELECT,
//! so here each WITH query runs on its own, in order, inside the statement's transaction:
//! a data-modifying one always (as in PostgreSQL, even if nothing reads it), a read-only
//! one if a later part names it. Its rows are held as an in-memory table under its name
//! (the session's `with_results`) for the later parts, and the main statement runs last.
//! The statement stays atomic: its parts run inside one statement of the transaction, which
//! a failure undoes as a whole.
//!
//! PostgreSQL runs all parts on one snapshot, so no part sees another's changes to a
//! table. Running them in order gives the same answer only while no part reads or changes
//! a table an earlier part changed, so a statement where one does is refused (0A000)
//! rather than answered differently. (A part before the change saw the table as it was,
//! as on the shared snapshot.) Two plain INSERTs into one table read nothing of it and may
//! both stand.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::sql::sqlparser::ast::{
    Cte, FromTable, Query, SetExpr, Statement, TableFactor, TableObject, Visit, Visitor, With,
    visit_relations,
};
use futures::future::BoxFuture;

use crate::api::QueryResult;
use crate::dml::{Described, ident_name, parse_one, quote, relation_name};
use crate::error::{SqlError, datafusion_error};
use crate::session::Session;
use flotilla_types::Timestamp;

/// What the session holds while the parts of a WITH statement run: each finished WITH
/// query's rows, by name.
pub(crate) type WithResults = HashMap<String, Arc<dyn TableProvider>>;

/// Whether DataFusion cannot plan `query` as one: it has a WITH and either it or one of
/// its WITH queries changes data.
pub(crate) fn runs_in_parts(query: &Query) -> bool {
    query.with.is_some() && (modifies(&query.body) || has_modifying_with(query))
}

fn modifies(body: &SetExpr) -> bool {
    matches!(
        body,
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
    )
}

fn has_modifying_with(query: &Query) -> bool {
    query
        .with
        .as_ref()
        .is_some_and(|w| w.cte_tables.iter().any(|c| modifies(&c.query.body)))
}

/// PostgreSQL allows a data-modifying WITH query only in the WITH of the statement itself
/// (not in a subquery, a WITH query, or the SELECT of an INSERT).
pub(crate) fn check_top_level(statement: &Statement) -> Result<(), SqlError> {
    struct Nested<'a> {
        top: Option<&'a Query>,
    }
    impl Visitor for Nested<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            let is_top = self.top.is_some_and(|top| std::ptr::eq(top, query));
            if has_modifying_with(query) && !is_top {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let top = match statement {
        Statement::Query(q) => Some(q.as_ref()),
        _ => None,
    };
    if statement.visit(&mut Nested { top }).is_break() {
        return Err(SqlError::new(
            "0A000",
            "WITH clause containing a data-modifying statement must be at the top level",
        ));
    }
    Ok(())
}

/// One part of a WITH statement: a WITH query, or the main statement (`cte: None`).
struct Part<'a> {
    cte: Option<&'a Cte>,
    statement: Statement,
    /// Whether a later part names this WITH query (so its rows are kept).
    read_later: bool,
}

impl Part<'_> {
    /// The table this part changes, and whether it only appends to it (an INSERT without
    /// ON CONFLICT, which reads nothing of its target).
    fn target(&self) -> Option<(String, bool)> {
        written_table(&self.statement)
    }

    /// Every relation this part names (its target included), once per mention.
    fn mentions(&self) -> Vec<String> {
        let mut names = Vec::new();
        let _ = visit_relations(&self.statement, |name| {
            names.push(relation_name(name));
            ControlFlow::<()>::Continue(())
        });
        names
    }
}

/// `Part::target` of `statement`.
fn written_table(statement: &Statement) -> Option<(String, bool)> {
    match statement {
        Statement::Insert(insert) => match &insert.table {
            TableObject::TableName(name) => Some((relation_name(name), insert.on.is_none())),
            _ => None,
        },
        Statement::Update(update) => factor_name(&update.table.relation).map(|n| (n, false)),
        Statement::Delete(delete) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            from.first()
                .and_then(|t| factor_name(&t.relation))
                .map(|n| (n, false))
        }
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => written_table(s),
            _ => None,
        },
        _ => None,
    }
}

fn factor_name(factor: &TableFactor) -> Option<String> {
    match factor {
        TableFactor::Table { name, .. } => Some(relation_name(name)),
        _ => None,
    }
}

/// The statement a part runs: a data-modifying WITH query as the statement it is (with
/// its own read-only WITH, if any, kept), a read-only one as `SELECT * FROM name` under
/// a WITH of just itself (so a recursive one recurses as DataFusion plans it).
fn part_statement(with: &With, cte: &Cte) -> Result<Statement, SqlError> {
    if modifies(&cte.query.body) {
        return Ok(match (&cte.query.with, cte.query.body.as_ref()) {
            (None, SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s)) => s.clone(),
            _ => Statement::Query(cte.query.clone()),
        });
    }
    let mut statement = parse_one(&format!(
        "SELECT * FROM {}",
        quote(&ident_name(&cte.alias.name))
    ))?;
    if let Statement::Query(q) = &mut statement {
        q.with = Some(With {
            with_token: with.with_token.clone(),
            recursive: with.recursive,
            cte_tables: vec![cte.clone()],
        });
    }
    Ok(statement)
}

/// The statement `query` stands for once its WITH is taken away.
fn main_statement(query: &Query) -> Statement {
    match query.body.as_ref() {
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s)
            if query.order_by.is_none() && query.limit_clause.is_none() =>
        {
            s.clone()
        }
        _ => Statement::Query(Box::new(Query {
            with: None,
            ..query.clone()
        })),
    }
}

/// Splits a statement `runs_in_parts` accepts into its parts, refusing before anything
/// runs what PostgreSQL refuses and what running in order would answer differently.
fn parts(query: &Query) -> Result<Vec<Part<'_>>, SqlError> {
    let with = query.with.as_ref().expect("runs_in_parts: a WITH");
    let mut parts = Vec::with_capacity(with.cte_tables.len() + 1);
    for cte in &with.cte_tables {
        if matches!(cte.query.body.as_ref(), SetExpr::Merge(_)) {
            return Err(SqlError::unsupported("MERGE"));
        }
        parts.push(Part {
            cte: Some(cte),
            statement: part_statement(with, cte)?,
            read_later: false,
        });
    }
    parts.push(Part {
        cte: None,
        statement: main_statement(query),
        read_later: false,
    });
    let mentions: Vec<Vec<String>> = parts.iter().map(Part::mentions).collect();
    let targets: Vec<Option<(String, bool)>> = parts.iter().map(Part::target).collect();
    for (i, part) in parts.iter_mut().enumerate() {
        let Some(cte) = part.cte else { continue };
        let name = ident_name(&cte.alias.name);
        part.read_later = mentions[i + 1..].iter().flatten().any(|m| *m == name);
        if part.read_later && modifies(&cte.query.body) && !returns_rows(&part.statement) {
            return Err(SqlError::new(
                "0A000",
                format!("WITH query \"{name}\" does not have a RETURNING clause"),
            )
            .with_hint("Add RETURNING to the data-modifying statement to read its rows."));
        }
        let Some((table, appends)) = &targets[i] else {
            continue;
        };
        // Parts run in order, so one before this saw the table as it was: as on the
        // shared snapshot. One after it would see the change.
        for (j, other) in mentions.iter().enumerate().skip(i + 1) {
            let times = other.iter().filter(|m| *m == table).count();
            // A plain INSERT into the same table names it once, as its target.
            let also_appends = *appends
                && times == 1
                && targets[j].as_ref().is_some_and(|(t, a)| t == table && *a);
            if times > 0 && !also_appends {
                return Err(SqlError::unsupported(format!(
                    "reading or changing table \"{table}\" in a statement whose WITH query \
                     \"{name}\" changes it"
                ))
                .with_hint(
                    "PostgreSQL runs every part of the statement on one snapshot, where no \
                     part sees another's changes; split it into statements inside one \
                     transaction.",
                ));
            }
        }
    }
    Ok(parts)
}

/// Whether `statement` answers with rows (a query, or DML with RETURNING).
fn returns_rows(statement: &Statement) -> bool {
    match statement {
        Statement::Insert(i) => i.returning.is_some(),
        Statement::Update(u) => u.returning.is_some(),
        Statement::Delete(d) => d.returning.is_some(),
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => returns_rows(s),
            _ => true,
        },
        _ => false,
    }
}

/// Runs a statement `runs_in_parts` accepts, at `read_ts` in the session's open
/// transaction. Its views are expanded already.
pub(crate) fn execute<'a>(
    session: &'a mut Session,
    query: &'a Query,
    read_ts: Timestamp,
) -> BoxFuture<'a, Result<QueryResult, SqlError>> {
    Box::pin(async move {
        let parts = parts(query)?;
        // A WITH query inside a data-modifying WITH query's own WITH adds to these; they
        // go when it ends, as its names go out of scope.
        let saved = session.with_results.clone();
        let result = run_parts(session, &parts, read_ts).await;
        session.with_results = saved;
        result
    })
}

async fn run_parts(
    session: &mut Session,
    parts: &[Part<'_>],
    read_ts: Timestamp,
) -> Result<QueryResult, SqlError> {
    let (main, with) = parts
        .split_last()
        .expect("parts end with the main statement");
    for part in with {
        let cte = part.cte.expect("a WITH query");
        if !part.read_later && !modifies(&cte.query.body) {
            continue;
        }
        let result = crate::dml::execute_expanded(session, &part.statement, read_ts).await?;
        if let QueryResult::Rows {
            schema, batches, ..
        } = result
            && part.read_later
        {
            let table = rows_table(cte, schema, batches)?;
            session
                .with_results
                .insert(ident_name(&cte.alias.name), table);
        }
    }
    crate::dml::execute_expanded(session, &main.statement, read_ts).await
}

/// The parameter types and result columns of a statement `runs_in_parts` accepts (for
/// the extended protocol): each part described in order, a described WITH query standing
/// for later parts as an empty table of its columns.
pub(crate) fn describe<'a>(
    session: &'a mut Session,
    query: &'a Query,
) -> BoxFuture<'a, Result<Described, SqlError>> {
    Box::pin(async move {
        let parts = parts(query)?;
        let saved = session.with_results.clone();
        let result = describe_parts(session, &parts).await;
        session.with_results = saved;
        result
    })
}

async fn describe_parts(session: &mut Session, parts: &[Part<'_>]) -> Result<Described, SqlError> {
    let mut types = HashMap::new();
    for part in parts {
        let (part_types, schema) = crate::dml::describe_expanded(session, &part.statement).await?;
        for (k, v) in part_types {
            types.entry(k).or_insert(v);
        }
        let Some(cte) = part.cte else {
            return Ok((types, schema));
        };
        if let Some(schema) = schema {
            let table = rows_table(cte, schema, Vec::new())?;
            session
                .with_results
                .insert(ident_name(&cte.alias.name), table);
        }
    }
    unreachable!("parts end with the main statement")
}

/// A WITH query's rows as a table, its columns named by the query's column list if any.
fn rows_table(
    cte: &Cte,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Arc<dyn TableProvider>, SqlError> {
    let aliases = &cte.alias.columns;
    if aliases.len() > schema.fields().len() {
        return Err(SqlError::new(
            "42P10",
            format!(
                "WITH query \"{}\" has {} columns available but {} columns specified",
                ident_name(&cte.alias.name),
                schema.fields().len(),
                aliases.len()
            ),
        ));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| match aliases.get(i) {
            Some(alias) => f.as_ref().clone().with_name(ident_name(&alias.name)),
            None => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let batches = batches
        .into_iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SqlError::internal(format!("WITH query rows: {e}")))?;
    let table = MemTable::try_new(schema, vec![batches]).map_err(datafusion_error)?;
    Ok(Arc::new(table))
}
