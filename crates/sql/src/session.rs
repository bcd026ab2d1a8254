//! A client's session: statement dispatch, transaction blocks and isolation, settings, and
//! the extended protocol's prepare/execute.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr, Query, Reset, Set, Statement, TransactionIsolationLevel, TransactionMode, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Tokenizer;
use flotilla_catalog::{CatalogSnapshot, ForeignKeyDef};
use flotilla_txn::{Transaction, TxnView, WriteMark};

use crate::dml::ident_name;
use crate::split::{split_statements, statement_spans};
use flotilla_types::{TableId, Timestamp};

use crate::api::{PreparedStatement, QueryResult, TransactionState};
use crate::context::StatementContext;
use crate::deferred::ConstraintModes;
use crate::engine::{ActiveTxn, SqlEngine};
use crate::error::{SqlError, parser_error};
use crate::params;

/// Isolation levels Flotilla implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// Each statement reads a fresh snapshot; a write that meets a newer committed version
    /// waits for its lock and re-runs the statement on the newest data.
    ReadCommitted,
    /// Snapshot isolation: one snapshot for the whole transaction; a write that meets a
    /// newer committed version fails with 40001.
    RepeatableRead,
}

impl Isolation {
    fn name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read committed",
            Isolation::RepeatableRead => "repeatable read",
        }
    }
}

/// An explicit transaction block (BEGIN ... COMMIT).
struct Block {
    isolation: Isolation,
    failed: bool,
    /// Open savepoints, oldest first, each with the transaction's buffered writes when it
    /// was taken (`None`: no transaction had begun, so nothing was written) and the
    /// constraint modes then (ROLLBACK TO puts them back, as in PostgreSQL).
    savepoints: Vec<Savepoint>,
    /// What SET CONSTRAINTS has set.
    modes: ConstraintModes,
}

/// A savepoint: its name, and the block's writes and constraint modes when it was taken.
struct Savepoint {
    name: String,
    writes: Option<WriteMark>,
    modes: ConstraintModes,
}

impl Block {
    /// Marks the block failed; true if its transaction must end now (with no savepoint
    /// to roll back to, only ROLLBACK can follow, so its locks go at once).
    fn fail(&mut self) -> bool {
        self.failed = true;
        self.savepoints.is_empty()
    }
}

/// An open transaction and its registration with the engine.
pub(crate) struct OpenTxn {
    pub(crate) txn: Transaction,
    pub(crate) active: ActiveTxn,
    /// No statement has run yet: the first one reads at `start_ts`, which was taken
    /// for it (one timestamp fewer per statement under READ COMMITTED).
    fresh: bool,
    /// The schema the transaction pins, taken before its start timestamp: every index it
    /// shows public was backfilled below that timestamp. A REPEATABLE READ transaction
    /// plans every statement with it (reading at its start timestamp through an index
    /// made public later would miss the entries backfilled after it); `None` once the
    /// session's own DDL unpinned it.
    pub(crate) catalog: Option<Arc<CatalogSnapshot>>,
    /// When the transaction began: `now()` and `current_timestamp` in every statement of
    /// the transaction (PostgreSQL's transaction timestamp, not the statement's).
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    /// The foreign key checks put off until commit.
    pub(crate) deferred: crate::deferred::Pending,
}

/// The current time at PostgreSQL's precision (microseconds), so a `now()` written into a
/// `timestamptz` column compares equal to `now()` itself.
fn now_micros() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Most times a READ COMMITTED statement is re-run after meeting newer versions of the
/// rows it writes before it gives up with 40001.
const STATEMENT_RETRIES_MAX: usize = 100;

/// Message prefix of the error that makes a READ COMMITTED statement re-run.
pub(crate) const WRITE_CONFLICT_MESSAGE: &str =
    "could not serialize access due to concurrent update";

/// One client's session: its transaction, settings and prepared statements.
pub struct Session {
    pub(crate) engine: Arc<SqlEngine>,
    /// The schema the running statement uses: one snapshot for all of it, so a schema
    /// change committed meanwhile cannot show a plan one table definition and its
    /// execution another.
    statement_catalog: Option<Arc<CatalogSnapshot>>,
    pub(crate) open: Option<OpenTxn>,
    block: Option<Block>,
    default_isolation: Isolation,
    pub(crate) lock_timeout_ms: u64,
    settings: BTreeMap<String, String>,
    /// `nextval`, `currval`, `lastval` and `pg_get_serial_sequence`, with this session's
    /// `currval` state.
    pub(crate) sequences: crate::sequence::Sequences,
    /// Functions of this session: the sequence functions and `current_user` and its
    /// kind, registered in each statement's context.
    session_udfs: Vec<Arc<datafusion::logical_expr::ScalarUDF>>,
    /// The database the client connected to (`current_database()`).
    database: String,
    /// True while rows of a `COPY ... FROM` are inserted (`execute_copied`).
    pub(crate) copying: bool,
    /// Bytes of rows the results of the running query string's earlier statements hold:
    /// they count against `result_bytes_max` with the next statement's result.
    result_bytes_held: usize,
    /// Bytes of rows the client's front end holds for this session outside any statement
    /// (suspended portals): they count against `result_bytes_max` too.
    result_bytes_elsewhere: usize,
    /// The rows of the WITH queries of the statement running, by name, while its later
    /// parts run (`cte`): every statement context reads them as tables.
    pub(crate) with_results: crate::cte::WithResults,
    /// The statements of SQL-level PREPARE (`prepared`).
    pub(crate) named: crate::prepared::NamedStatements,
}

/// How deeply expressions may nest. sqlparser's default (50) refuses machine-generated
/// queries that PostgreSQL accepts; deeper nesting costs stack, which runtime threads have
/// 8 MiB of.
const PARSER_RECURSION_LIMIT: usize = 500;

/// 25P01: a transaction-block command outside a block.
fn no_block(what: &str) -> SqlError {
    SqlError::new(
        "25P01",
        format!("{what} can only be used in transaction blocks"),
    )
}

/// The newest open savepoint named `name` (3B001 if none is).
fn savepoint_position(block: &Block, name: &str) -> Result<usize, SqlError> {
    block
        .savepoints
        .iter()
        .rposition(|s| s.name == name)
        .ok_or_else(|| SqlError::new("3B001", format!("savepoint \"{name}\" does not exist")))
}

fn parse(sql: &str) -> Result<Vec<Statement>, SqlError> {
    let rewritten = crate::orm::rewrite(sql);
    let sql = rewritten.as_ref();
    let mut sequence_names = Vec::new();
    let reordered = crate::sequence::canonical_option_order(sql, &mut sequence_names);
    let sql = reordered.as_deref().unwrap_or(sql);
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| parser_error(&e.into(), sql))?;
    let mut statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .with_tokens_with_locations(crate::locking::key_lock_strengths_read(tokens))
        .parse_statements()
        .map_err(|e| parser_error(&e, sql))?;
    for statement in &mut statements {
        unqualify_builtin_functions(statement);
    }
    crate::sequence::check_identity_sequence_names(&statements, &sequence_names)?;
    Ok(statements)
}

/// What drivers and ORMs send that DataFusion reads otherwise: `current_schema` and
/// `current_role` without parentheses, built-in functions called schema-qualified (`pg_catalog.version()`, as SQLAlchemy does on connect; the functions
/// live unqualified here, so the qualifier goes), and casts to `regclass` and `regtype`
/// (`'t'::regclass`), which become the functions that look the names up.
fn unqualify_builtin_functions(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{
        DataType as AstType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
        FunctionArguments, Ident, ObjectName, visit_expressions_mut,
    };
    let _ = visit_expressions_mut(statement, |e: &mut Expr| {
        if let Expr::Function(f) = e
            && f.name.0.len() == 2
            && f.name.0[0]
                .as_ident()
                .is_some_and(|i| i.value.eq_ignore_ascii_case("pg_catalog"))
        {
            f.name.0.remove(0);
        }
        // Reserved words in PostgreSQL that name functions without parentheses;
        // sqlparser reads these two as column names.
        if let Expr::Identifier(i) = e
            && i.quote_style.is_none()
            && ["current_schema", "current_role"]
                .iter()
                .any(|w| i.value.eq_ignore_ascii_case(w))
        {
            *e = Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new(i.value.to_lowercase())]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::None,
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
        }
        let reg = match e {
            Expr::Cast {
                data_type: AstType::Regclass,
                ..
            } => Some(crate::pg_catalog::RegKind::Class),
            Expr::Cast {
                data_type: AstType::Custom(name, _),
                ..
            } => crate::pg_catalog::RegKind::of(&crate::dml::relation_name(name)),
            _ => None,
        };
        if let (Some(kind), Expr::Cast { expr, .. }) = (reg, &*e) {
            let arg = FunctionArg::Unnamed(FunctionArgExpr::Expr((**expr).clone()));
            *e = Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new(kind.function())]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![arg],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// `SELECT set_config('name', 'value', is_local)` with literal arguments and nothing
/// else (pg_dump scripts begin with `SELECT pg_catalog.set_config('search_path', '',
/// false)`): the parameter and value, to set as SET does. A `set_config` in any other
/// query is not a function here, and fails as an unknown one.
fn set_config_call(query: &Query) -> Option<(String, String)> {
    use datafusion::sql::sqlparser::ast::{
        FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr,
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    if !select.from.is_empty() || select.selection.is_some() || select.projection.len() != 1 {
        return None;
    }
    let SelectItem::UnnamedExpr(Expr::Function(f)) = &select.projection[0] else {
        return None;
    };
    if !f.name.to_string().eq_ignore_ascii_case("set_config") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let texts: Vec<String> = list
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                Value::Boolean(b) => Some(b.to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    match texts.as_slice() {
        [name, value, local] if local == "true" || local == "false" => {
            Some((name.to_ascii_lowercase(), value.clone()))
        }
        _ => None,
    }
}

fn single_text_column(name: &str, value: &str) -> QueryResult {
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec![value.to_string()]))],
    )
    .expect("one text column");
    QueryResult::Rows {
        schema,
        batches: vec![batch],
        tag: "SHOW".into(),
    }
}

/// One statement of a simple query, read and ready to run.
enum Step {
    /// Answered without running anything (a no-op, psql's catalog queries).
    Answer(QueryResult),
    Admin(crate::admin::Admin),
    Statement(Box<Statement>),
}

fn command(tag: &str) -> QueryResult {
    QueryResult::Command { tag: tag.into() }
}

/// Statements that are accepted and do nothing in Flotilla (maintenance that the storage
/// engine does by itself), recognised before parsing because the parser lacks them.
fn no_op_tag(sql: &str) -> Option<&'static str> {
    let first = sql.split_whitespace().next()?.to_ascii_lowercase();
    let first = first.trim_end_matches(';');
    match first {
        "vacuum" => Some("VACUUM"),
        "checkpoint" => Some("CHECKPOINT"),
        _ => None,
    }
}

fn isolation_of(modes: &[TransactionMode]) -> Result<Option<Isolation>, SqlError> {
    let mut isolation = None;
    for mode in modes {
        if let TransactionMode::IsolationLevel(level) = mode {
            isolation = Some(match level {
                TransactionIsolationLevel::ReadUncommitted
                | TransactionIsolationLevel::ReadCommitted => Isolation::ReadCommitted,
                TransactionIsolationLevel::RepeatableRead | TransactionIsolationLevel::Snapshot => {
                    Isolation::RepeatableRead
                }
                TransactionIsolationLevel::Serializable => {
                    return Err(SqlError::unsupported("SERIALIZABLE isolation")
                        .with_hint("Use REPEATABLE READ (snapshot isolation) or READ COMMITTED."));
                }
            });
        }
    }
    Ok(isolation)
}

fn parse_isolation_name(value: &str) -> Result<Isolation, SqlError> {
    match value.trim().to_ascii_lowercase().replace('_', " ").as_str() {
        "read committed" | "read uncommitted" | "default" => Ok(Isolation::ReadCommitted),
        "repeatable read" => Ok(Isolation::RepeatableRead),
        "serializable" => Err(SqlError::unsupported("SERIALIZABLE isolation")
            .with_hint("Use REPEATABLE READ (snapshot isolation) or READ COMMITTED.")),
        other => Err(SqlError::new(
            "22023",
            format!("invalid value for parameter \"transaction_isolation\": \"{other}\""),
        )),
    }
}

fn expr_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// Parses PostgreSQL's duration syntax for lock_timeout: a number of milliseconds or a
/// number with a unit.
fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = t[digits.len()..].trim();
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

impl Session {
    pub(crate) fn new(engine: Arc<SqlEngine>) -> Self {
        let lock_timeout_ms = engine.config.lock_wait_timeout_ms;
        let sequences = crate::sequence::Sequences::new(engine.catalog.clone());
        let mut session_udfs = sequences.udfs();
        session_udfs.extend(crate::pg_catalog::reg_udfs(&engine.catalog));
        session_udfs.extend(crate::pg_functions::catalog_udfs(&engine.catalog));
        session_udfs.extend(crate::functions::session_texts("postgres", "postgres"));
        Self {
            sequences,
            session_udfs,
            database: "postgres".into(),
            engine,
            statement_catalog: None,
            open: None,
            block: None,
            default_isolation: Isolation::ReadCommitted,
            lock_timeout_ms,
            settings: BTreeMap::new(),
            copying: false,
            result_bytes_held: 0,
            result_bytes_elsewhere: 0,
            with_results: HashMap::new(),
            named: Default::default(),
        }
    }

    /// Names the client: the user and database it connected as, which `current_user`
    /// and `current_database()` return (both `postgres` until this is called).
    pub fn set_client(&mut self, user: &str, database: &str) {
        self.database = database.to_string();
        self.session_udfs = self.sequences.udfs();
        self.session_udfs
            .extend(crate::pg_catalog::reg_udfs(&self.engine.catalog));
        self.session_udfs
            .extend(crate::pg_functions::catalog_udfs(&self.engine.catalog));
        self.session_udfs
            .extend(crate::functions::session_texts(user, database));
    }

    /// The session's transaction state.
    pub fn transaction_state(&self) -> TransactionState {
        match &self.block {
            None => TransactionState::Idle,
            Some(b) if b.failed => TransactionState::Failed,
            Some(_) => TransactionState::InBlock,
        }
    }

    /// Marks an open transaction block failed (25P02 until ROLLBACK, or ROLLBACK TO a
    /// savepoint) and, without a savepoint, releases its locks: for errors the wire protocol meets outside the session (a malformed Bind).
    pub async fn fail_transaction(&mut self) {
        if let Some(block) = &mut self.block
            && !block.failed
            && block.fail()
        {
            let _ = self.finish_txn(false).await;
        }
    }

    fn check_size(&self, sql: &str) -> Result<(), SqlError> {
        let max = self.engine.config.statement_bytes_max;
        if sql.len() > max {
            return Err(SqlError::new(
                "54000",
                format!(
                    "statement is {} bytes, more than the limit of {max} (statement_bytes_max)",
                    sql.len()
                ),
            ));
        }
        Ok(())
    }

    /// Tells the session how many bytes of its results the front end still holds (the rest of
    /// suspended portals): the next results may add only what `result_bytes_max` leaves.
    pub fn hold_result_bytes(&mut self, bytes: usize) {
        self.result_bytes_elsewhere = bytes;
    }

    /// Bytes of results held now: the running query string's and the front end's.
    pub(crate) fn result_bytes_held(&self) -> usize {
        self.result_bytes_held
            .saturating_add(self.result_bytes_elsewhere)
    }

    /// Runs a simple-protocol query string, statement by statement, stopping at the first
    /// error. Returns the results of the statements that ran and the error, if any.
    pub async fn simple_query(&mut self, sql: &str) -> (Vec<QueryResult>, Option<SqlError>) {
        if let Err(e) = self.check_size(sql) {
            return (vec![], Some(e));
        }
        // Every statement is read before any runs: a syntax error anywhere in the string
        // runs none of it, as in PostgreSQL.
        let steps = match statement_spans(sql).and_then(|spans| {
            let mut steps = Vec::new();
            for (from, to) in spans {
                let read = self.read_statement(&sql[from..to]).map_err(|mut e| {
                    // A position counts from the start of the whole string.
                    if let Some(p) = e.position.as_mut() {
                        *p += sql[..from].chars().count();
                    }
                    e
                });
                steps.extend(read?);
            }
            Ok(steps)
        }) {
            Ok(steps) => steps,
            Err(e) => return (vec![], Some(e)),
        };
        if steps.is_empty() {
            return (vec![QueryResult::Empty], None);
        }
        let mut results = Vec::with_capacity(steps.len());
        self.result_bytes_held = 0;
        let mut error = None;
        for step in steps {
            let result = match step {
                Step::Answer(r) => Ok(r),
                Step::Admin(admin) => crate::admin::execute(self, admin).await,
                Step::Statement(statement) => self.execute_statement(*statement).await,
            };
            match result {
                Ok(r) => {
                    if let QueryResult::Rows { batches, .. } = &r {
                        let bytes: usize = batches.iter().map(crate::context::batch_bytes).sum();
                        self.result_bytes_held = self.result_bytes_held.saturating_add(bytes);
                    }
                    results.push(r);
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        self.result_bytes_held = 0;
        (results, error)
    }

    /// What one statement of a simple query (`piece`, without its `;`) is to run.
    fn read_statement(&self, piece: &str) -> Result<Vec<Step>, SqlError> {
        if let Some(tag) = no_op_tag(piece) {
            return Ok(vec![Step::Answer(command(tag))]);
        }
        if let Some(admin) = crate::admin::parse(piece) {
            return Ok(vec![Step::Admin(admin?)]);
        }
        if let Some(answer) = crate::psql::answer(piece, &self.engine.catalog.snapshot()) {
            return Ok(vec![Step::Answer(answer)]);
        }
        Ok(parse(piece)?
            .into_iter()
            .map(|s| Step::Statement(Box::new(s)))
            .collect())
    }

    /// Parses and describes one statement for the extended protocol. `param_types` are the
    /// types the client declared (`None` = let the server infer).
    pub async fn prepare(
        &mut self,
        sql: &str,
        param_types: &[Option<DataType>],
    ) -> Result<PreparedStatement, SqlError> {
        let result = self.prepare_inner(sql, param_types).await;
        if result.is_err() {
            // As in PostgreSQL, a statement that fails to parse aborts the block.
            self.fail_transaction().await;
        }
        result
    }

    pub(crate) async fn prepare_inner(
        &mut self,
        sql: &str,
        param_types: &[Option<DataType>],
    ) -> Result<PreparedStatement, SqlError> {
        self.check_size(sql)?;
        if split_statements(sql)?.len() > 1 {
            return Err(SqlError::new(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        if let Some(admin) = crate::admin::parse(sql) {
            admin?;
            return Ok(PreparedStatement {
                sql: sql.to_string(),
                param_types: vec![],
                result_schema: None,
                statement: None,
            });
        }
        if no_op_tag(sql).is_some() {
            return Ok(PreparedStatement {
                sql: sql.to_string(),
                param_types: vec![],
                result_schema: None,
                statement: None,
            });
        }
        let mut statements = parse(sql)?;
        if statements.len() > 1 {
            return Err(SqlError::new(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(statement) = statements.pop() else {
            return Ok(PreparedStatement {
                sql: sql.to_string(),
                param_types: vec![],
                result_schema: None,
                statement: None,
            });
        };
        let count = params::parameter_count(&statement).max(param_types.len());
        let (inferred, result_schema) = crate::dml::describe(self, &statement).await?;
        let param_types = (0..count)
            .map(|i| {
                param_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| inferred.get(&format!("${}", i + 1)).cloned())
                    .unwrap_or(DataType::Utf8)
            })
            .collect();
        Ok(PreparedStatement {
            sql: sql.to_string(),
            param_types,
            result_schema,
            statement: Some(Arc::new(statement)),
        })
    }

    /// Executes a prepared statement with parameter values (already converted to the
    /// statement's `param_types`; NULL as a typed null).
    pub async fn execute_prepared(
        &mut self,
        statement: &PreparedStatement,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult, SqlError> {
        let Some(parsed) = &statement.statement else {
            if let Some(admin) = crate::admin::parse(&statement.sql) {
                return crate::admin::execute(self, admin?).await;
            }
            return Ok(match no_op_tag(&statement.sql) {
                Some(tag) => command(tag),
                None => QueryResult::Empty,
            });
        };
        let mut bound = (**parsed).clone();
        if !params.is_empty() || params::parameter_count(&bound) > 0 {
            params::bind(&mut bound, &params)?;
        }
        self.execute_statement(bound).await
    }

    /// Executes the prepared INSERT of rows a `COPY ... FROM` read. As in PostgreSQL,
    /// COPY writes the values it is given, also into a `GENERATED ALWAYS` identity column
    /// (which an INSERT may not give one): a pg_dump of such a table loads.
    pub async fn execute_copied(
        &mut self,
        statement: &PreparedStatement,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult, SqlError> {
        self.copying = true;
        let result = self.execute_prepared(statement, params).await;
        self.copying = false;
        result
    }

    pub(crate) fn isolation(&self) -> Isolation {
        self.block
            .as_ref()
            .map(|b| b.isolation)
            .unwrap_or(Isolation::ReadCommitted)
    }

    async fn begin_txn(&mut self) -> Result<(), SqlError> {
        let mut options = self.engine.txn_options.clone();
        options.lock_wait_timeout_ms = self.lock_timeout_ms;
        // The schema first, then the start timestamp (see `OpenTxn::catalog`).
        let (mut active, catalog) = self.engine.register_txn();
        let txn =
            Transaction::begin(self.engine.kv.clone(), self.engine.tso.clone(), options).await?;
        active.ts.started(txn.start_ts());
        self.statement_catalog = Some(catalog.clone());
        self.open = Some(OpenTxn {
            txn,
            active,
            fresh: true,
            catalog: Some(catalog),
            started_at: now_micros(),
            deferred: Default::default(),
        });
        Ok(())
    }

    async fn finish_txn(&mut self, commit: bool) -> Result<(), SqlError> {
        // Boxed: the checks plan queries, and their future inlined would grow every
        // caller's (each statement's) by as much.
        if commit && let Err(e) = Box::pin(crate::deferred::check(self, true)).await {
            // The deferred checks failed: the transaction ends, undone, as in PostgreSQL.
            if let Some(open) = self.open.take() {
                let _ = open.txn.rollback().await;
            }
            return Err(e);
        }
        if let Some(open) = self.open.take() {
            if commit {
                open.txn.commit().await?;
            } else {
                open.txn.rollback().await?;
            }
        }
        Ok(())
    }

    /// Runs one parsed statement with PostgreSQL's transaction semantics.
    pub(crate) async fn execute_statement(
        &mut self,
        statement: Statement,
    ) -> Result<QueryResult, SqlError> {
        // DDL validates against the newest schema, as the job that runs it will.
        let pinned = match &self.open {
            Some(open)
                if self.isolation() == Isolation::RepeatableRead
                    && !crate::ddl::is_ddl(&statement) =>
            {
                open.catalog.clone()
            }
            _ => None,
        };
        self.statement_catalog = Some(pinned.unwrap_or_else(|| self.engine.catalog.snapshot()));
        let result = self.execute_statement_inner(statement).await;
        self.statement_catalog = None;
        result
    }

    /// A transaction of its own for reading at a fresh timestamp, apart from the session's
    /// (DDL checks, ADMIN CHECK TABLE); the caller rolls it back, and keeps the pin until
    /// it has read (it holds the GC safe point below the snapshot).
    pub(crate) async fn read_snapshot(
        &self,
    ) -> Result<(Transaction, Timestamp, crate::engine::TsPin), SqlError> {
        let engine = &self.engine;
        let mut pin = engine.pin_ts();
        let txn = Transaction::begin(
            engine.kv.clone(),
            engine.tso.clone(),
            engine.txn_options.clone(),
        )
        .await?;
        pin.started(txn.start_ts());
        let read_ts = txn.fresh_ts().await?;
        Ok((txn, read_ts, pin))
    }

    /// The schema of the running statement (the newest, outside one).
    pub(crate) fn catalog(&self) -> Arc<CatalogSnapshot> {
        self.statement_catalog
            .clone()
            .unwrap_or_else(|| self.engine.catalog.snapshot())
    }

    async fn execute_statement_inner(
        &mut self,
        statement: Statement,
    ) -> Result<QueryResult, SqlError> {
        match &statement {
            Statement::StartTransaction { modes, .. } => {
                let isolation = isolation_of(modes)?.unwrap_or(self.default_isolation);
                if self.block.is_some() {
                    // PostgreSQL warns and carries on; so do we.
                    return Ok(command("BEGIN"));
                }
                // The transaction (and its snapshot) starts with its first statement, as
                // in PostgreSQL: a snapshot taken at BEGIN would miss what commits between
                // BEGIN and that statement.
                self.block = Some(Block {
                    isolation,
                    failed: false,
                    savepoints: Vec::new(),
                    modes: ConstraintModes::default(),
                });
                return Ok(command("BEGIN"));
            }
            Statement::Discard { object_type } => {
                use datafusion::sql::sqlparser::ast::DiscardObject;
                let all = matches!(object_type, DiscardObject::ALL);
                if all && self.block.is_some() {
                    // An error in a block fails it, as any statement's does.
                    self.fail_transaction().await;
                    return Err(SqlError::new(
                        "25001",
                        "DISCARD ALL cannot run inside a transaction block",
                    ));
                }
                // No plan cache and no temporary tables: PLANS and TEMP have nothing to
                // drop. The front end drops prepared statements and portals on DISCARD ALL.
                if all {
                    self.reset_all();
                    self.named.clear();
                }
                if all || matches!(object_type, DiscardObject::SEQUENCES) {
                    self.sequences.discard();
                }
                return Ok(command(&format!("DISCARD {object_type}")));
            }
            Statement::Commit { .. } => {
                let Some(block) = self.block.take() else {
                    return Ok(command("COMMIT"));
                };
                if block.failed {
                    self.finish_txn(false).await?;
                    return Ok(command("ROLLBACK"));
                }
                self.finish_txn(true).await?;
                return Ok(command("COMMIT"));
            }
            Statement::Rollback {
                savepoint: None, ..
            } => {
                self.block = None;
                self.finish_txn(false).await?;
                return Ok(command("ROLLBACK"));
            }
            // Allowed in a failed block: it is the way back.
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => {
                let result = self.rollback_to_savepoint(&ident_name(name));
                // An unknown name fails the block like any error in it (the savepoints
                // there are stay, so the transaction stays too).
                if result.is_err()
                    && let Some(block) = &mut self.block
                    && block.fail()
                {
                    let _ = self.finish_txn(false).await;
                }
                return result;
            }
            _ => {}
        }
        self.engine.check_schema_lease().await?;
        self.refuse_in_failed_block()?;
        let result = match statement {
            Statement::Prepare { .. }
            | Statement::Execute { .. }
            | Statement::Deallocate { .. } => self.run_sql_prepared(statement).await,
            statement => self.execute_in_transaction(statement).await,
        };
        self.fail_block_on_error(&result).await;
        result
    }

    /// PREPARE, EXECUTE or DEALLOCATE (`prepared`). Its future is built here and boxed,
    /// behind a pointer: built in `execute_statement_inner`, a second statement's future
    /// beside `execute_in_transaction`'s would double that function's stack frame (debug
    /// builds keep both), which every statement's deepest call chain passes through.
    fn run_sql_prepared(
        &mut self,
        statement: Statement,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<QueryResult, SqlError>> + Send + '_>,
    > {
        Box::pin(async move {
            match statement {
                Statement::Prepare {
                    name,
                    data_types,
                    statement,
                } => self.prepare_named(&name, &data_types, &statement).await,
                Statement::Deallocate { name, .. } => {
                    // `ALL` unquoted is every statement.
                    let all = name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
                    self.deallocate_named((!all).then(|| ident_name(&name)).as_deref())
                        .map(command)
                }
                Statement::Execute {
                    name, parameters, ..
                } => {
                    let bound = self.bind_named(name.as_ref(), &parameters).await?;
                    self.execute_in_transaction(bound).await
                }
                other => Err(SqlError::internal(format!(
                    "not a prepared-statement command: {other}"
                ))),
            }
        })
    }

    /// 25P02 in a failed transaction block.
    fn refuse_in_failed_block(&self) -> Result<(), SqlError> {
        if let Some(block) = &self.block
            && block.failed
        {
            return Err(SqlError::new(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            )
            .with_hint("Issue ROLLBACK to end the failed transaction."));
        }
        Ok(())
    }

    /// Fails the transaction block, if `result` is an error.
    async fn fail_block_on_error<T>(&mut self, result: &Result<T, SqlError>) {
        if result.is_err()
            && let Some(block) = &mut self.block
            && block.fail()
        {
            // The whole block fails, as in PostgreSQL; with no savepoint to go back to,
            // release its locks now rather than at ROLLBACK so others need not wait for a
            // client that may never send it.
            let _ = self.finish_txn(false).await;
        }
    }

    /// Whether foreign key `fk` of table `table` is checked at commit, not as each
    /// statement ends: it is DEFERRABLE, and INITIALLY DEFERRED or set DEFERRED by SET
    /// CONSTRAINTS in this transaction block.
    pub(crate) fn constraint_deferred(&self, table: TableId, fk: &ForeignKeyDef) -> bool {
        match &self.block {
            Some(block) => block.modes.deferred(table, fk),
            None => fk.deferrable && fk.initially_deferred,
        }
    }

    /// SET CONSTRAINTS: outside a transaction block it does nothing (PostgreSQL warns);
    /// in one, it sets the constraints named (or all) deferred or immediate, and runs at
    /// once the checks put off for those now immediate.
    pub(crate) async fn set_constraints(
        &mut self,
        set: crate::deferred::SetConstraints,
    ) -> Result<QueryResult, SqlError> {
        if self.block.is_none() {
            return Ok(command("SET CONSTRAINTS"));
        }
        self.refuse_in_failed_block()?;
        let result = self.set_constraints_in_block(set).await;
        self.fail_block_on_error(&result).await;
        result
    }

    async fn set_constraints_in_block(
        &mut self,
        set: crate::deferred::SetConstraints,
    ) -> Result<QueryResult, SqlError> {
        let named = match &set.names {
            Some(names) => Some(crate::deferred::resolve(&self.catalog(), names)?),
            None => None,
        };
        let block = self.block.as_mut().expect("checked by the caller");
        crate::deferred::apply(&mut block.modes, named, set.deferred);
        if !set.deferred {
            Box::pin(crate::deferred::check(self, false)).await?;
        }
        Ok(command("SET CONSTRAINTS"))
    }

    /// `SAVEPOINT name`: remembers the block's writes so far.
    fn savepoint(&mut self, name: String) -> Result<QueryResult, SqlError> {
        let max = self.engine.config.savepoints_max;
        let mark = self.open.as_ref().map(|o| o.txn.write_mark());
        let Some(block) = &mut self.block else {
            return Err(no_block("SAVEPOINT"));
        };
        if block.savepoints.len() >= max {
            return Err(SqlError::new(
                "54000",
                format!("more than {max} savepoints open in one transaction"),
            )
            .with_hint("Release savepoints no longer needed (RELEASE SAVEPOINT name)."));
        }
        block.savepoints.push(Savepoint {
            name,
            writes: mark,
            modes: block.modes.clone(),
        });
        Ok(command("SAVEPOINT"))
    }

    /// `RELEASE SAVEPOINT name`: forgets it and every savepoint taken after it; the
    /// writes since stay.
    fn release_savepoint(&mut self, name: &str) -> Result<QueryResult, SqlError> {
        let Some(block) = &mut self.block else {
            return Err(no_block("RELEASE SAVEPOINT"));
        };
        let at = savepoint_position(block, name)?;
        block.savepoints.truncate(at);
        Ok(command("RELEASE"))
    }

    /// `ROLLBACK TO SAVEPOINT name`: undoes the writes made since it (the locks taken
    /// stay until the transaction ends), forgets the savepoints taken after it, keeps it,
    /// and lifts a failure of the block.
    fn rollback_to_savepoint(&mut self, name: &str) -> Result<QueryResult, SqlError> {
        let Some(block) = &mut self.block else {
            return Err(no_block("ROLLBACK TO SAVEPOINT"));
        };
        let at = savepoint_position(block, name)?;
        block.savepoints.truncate(at + 1);
        let mark = block.savepoints[at].writes.clone();
        block.modes = block.savepoints[at].modes.clone();
        block.failed = false;
        if let Some(open) = &mut self.open {
            open.txn.rollback_to_mark(mark.as_ref());
        }
        Ok(command("ROLLBACK"))
    }

    pub(crate) async fn execute_in_transaction(
        &mut self,
        statement: Statement,
    ) -> Result<QueryResult, SqlError> {
        if let Statement::Query(q) = &statement
            && let Some((name, value)) = set_config_call(q)
        {
            self.assign(&name, &value)?;
            return Ok(single_text_column("set_config", &value));
        }
        match &statement {
            Statement::Set(set) => return self.set(set),
            Statement::Reset(reset) => {
                match &reset.reset {
                    Reset::ALL => self.reset_all(),
                    Reset::ConfigurationParameter(name) => {
                        self.reset(&name.to_string().to_ascii_lowercase());
                    }
                }
                return Ok(command("RESET"));
            }
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(" ");
                if name == "ddl jobs" {
                    return crate::ddl::show_jobs(self).await;
                }
                return self.show(&name);
            }
            Statement::Savepoint { name } => return self.savepoint(ident_name(name)),
            Statement::ReleaseSavepoint { name } => {
                return self.release_savepoint(&ident_name(name));
            }
            _ => {}
        }
        if let Statement::Explain {
            statement: inner, ..
        } = &statement
            && matches!(
                **inner,
                Statement::AlterTable(_) | Statement::CreateIndex(_)
            )
        {
            let Statement::Explain {
                statement: inner, ..
            } = statement
            else {
                unreachable!("matched above");
            };
            return crate::ddl::explain(self, *inner).await;
        }
        if crate::ddl::is_ddl(&statement) {
            return crate::ddl::execute(self, statement).await;
        }
        let autocommit = self.block.is_none();
        if self.open.is_none() {
            if autocommit {
                // Pinned as a transaction's would be, so a schema change waits for it.
                let (active, catalog) = self.engine.register_txn();
                self.statement_catalog = Some(catalog);
                let read = crate::fast::read_latest(self, &statement).await;
                drop(active);
                if let Some(result) = read? {
                    return Ok(result);
                }
            }
            self.begin_txn().await?;
        }
        let result = self.run_with_retries(&statement).await;
        if autocommit {
            match &result {
                Ok(_) => self.finish_txn(true).await?,
                Err(_) => {
                    let _ = self.finish_txn(false).await;
                }
            }
        }
        result
    }

    /// Runs a DML statement or query inside the open transaction. Under READ COMMITTED a
    /// statement that meets a row changed after its snapshot is undone and re-run on a
    /// newer snapshot (PostgreSQL re-checks the newest row version; re-running the
    /// statement gives the same outcome).
    async fn run_with_retries(&mut self, statement: &Statement) -> Result<QueryResult, SqlError> {
        let isolation = self.isolation();
        let mut attempts = 0;
        loop {
            let open = self.open.as_mut().expect("a transaction is open");
            open.txn.set_lock_wait_timeout_ms(self.lock_timeout_ms);
            open.txn.start_statement();
            let first = std::mem::replace(&mut open.fresh, false) && attempts == 0;
            // Under READ COMMITTED a point statement runs without a snapshot timestamp if
            // it can (`fast::try_execute_without_snapshot`); a retry always takes one.
            let without_snapshot =
                if isolation == Isolation::ReadCommitted && !first && attempts == 0 {
                    crate::dml::execute_without_snapshot(self, statement)
                        .await
                        .transpose()
                } else {
                    None
                };
            let result = match without_snapshot {
                Some(result) => result,
                None => {
                    let open = self.open.as_mut().expect("a transaction is open");
                    let read_ts = match isolation {
                        Isolation::RepeatableRead => open.txn.start_ts(),
                        // The start timestamp was taken for this very statement.
                        Isolation::ReadCommitted if first => open.txn.start_ts(),
                        Isolation::ReadCommitted => {
                            let ts = open.txn.fresh_ts().await?;
                            open.txn.set_for_update_ts(ts);
                            ts
                        }
                    };
                    crate::dml::execute(self, statement, read_ts).await
                }
            };
            let open = self.open.as_mut().expect("a transaction is open");
            match result {
                Err(e)
                    if isolation == Isolation::ReadCommitted
                        && e.code == "40001"
                        && e.message.starts_with(WRITE_CONFLICT_MESSAGE)
                        && attempts < STATEMENT_RETRIES_MAX =>
                {
                    open.txn.rollback_statement();
                    attempts += 1;
                }
                other => {
                    open.txn.finish_statement();
                    return other;
                }
            }
        }
    }

    /// A view for reading at `read_ts` within the open transaction (or without one).
    /// The open transaction's start time (`now()`); the current time outside one.
    pub(crate) fn transaction_time(&self) -> chrono::DateTime<chrono::Utc> {
        self.open.as_ref().map_or_else(now_micros, |o| o.started_at)
    }

    pub(crate) fn view(&self, read_ts: Timestamp) -> TxnView {
        match &self.open {
            Some(open) => open.txn.view(read_ts),
            None => TxnView::detached(self.engine.kv.clone(), read_ts, self.lock_timeout_ms),
        }
    }

    /// A statement context reading at `read_ts`.
    pub(crate) fn context(
        &self,
        read_ts: Timestamp,
        with_handle: Vec<String>,
        mut overrides: HashMap<String, Arc<dyn datafusion::catalog::TableProvider>>,
    ) -> StatementContext {
        for (name, rows) in &self.with_results {
            overrides
                .entry(name.clone())
                .or_insert_with(|| rows.clone());
        }
        let mut udfs = self.session_udfs.clone();
        udfs.push(crate::pg_builtins::current_setting(self.settings_shown()));
        StatementContext::new(
            &self.engine.template,
            self.catalog(),
            self.view(read_ts),
            with_handle,
            overrides,
            crate::context::SessionScope {
                now: self.transaction_time(),
                udfs: &udfs,
                database: &self.database,
            },
        )
    }

    fn set(&mut self, set: &Set) -> Result<QueryResult, SqlError> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_ascii_lowercase();
                let value = values.iter().map(expr_text).collect::<Vec<_>>().join(", ");
                self.assign(&name, &value)?;
                Ok(command("SET"))
            }
            Set::SetTransaction { modes, session, .. } => {
                if let Some(level) = isolation_of(modes)? {
                    if *session {
                        self.default_isolation = level;
                    } else if let Some(b) = &mut self.block {
                        b.isolation = level;
                    }
                }
                Ok(command("SET"))
            }
            Set::SetTimeZone { value, .. } => {
                let value = expr_text(value);
                self.check_setting_room("timezone", &value)?;
                self.settings.insert("timezone".into(), value);
                Ok(command("SET"))
            }
            _ => Ok(command("SET")),
        }
    }

    /// Sets run-time parameter `name` (lower case) to `value` for the session, as SET and
    /// `set_config` do.
    fn assign(&mut self, name: &str, value: &str) -> Result<(), SqlError> {
        self.check_setting_room(name, value)?;
        match name {
            "lock_timeout" => {
                let ms = parse_duration_ms(value).ok_or_else(|| {
                    SqlError::new(
                        "22023",
                        format!("invalid value for parameter \"lock_timeout\": \"{value}\""),
                    )
                })?;
                let max = self.engine.config.lock_wait_timeout_ms;
                // 0 means "wait forever" in PostgreSQL; every wait here is bounded.
                self.lock_timeout_ms = if ms == 0 { max } else { ms.min(max) };
            }
            "default_transaction_isolation" => {
                self.default_isolation = parse_isolation_name(value)?;
            }
            "transaction_isolation" => {
                let level = parse_isolation_name(value)?;
                if let Some(b) = &mut self.block {
                    b.isolation = level;
                }
            }
            _ => {}
        }
        self.settings.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// `RESET name`: the parameter's default again.
    fn reset(&mut self, name: &str) {
        match name {
            "lock_timeout" => self.lock_timeout_ms = self.engine.config.lock_wait_timeout_ms,
            "default_transaction_isolation" => self.default_isolation = Isolation::ReadCommitted,
            _ => {}
        }
        self.settings.remove(name);
    }

    /// `RESET ALL`.
    fn reset_all(&mut self) {
        let names: Vec<String> = self.settings.keys().cloned().collect();
        for name in names {
            self.reset(&name);
        }
        self.reset("lock_timeout");
        self.reset("default_transaction_isolation");
    }

    /// Whether a setting fits `settings_bytes_max`, which bounds all of a session's names
    /// and values together (54000 past it, before anything changes).
    fn check_setting_room(&self, name: &str, value: &str) -> Result<(), SqlError> {
        let max = self.engine.config.settings_bytes_max;
        let others: usize = self
            .settings
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(n, v)| n.len() + v.len())
            .sum();
        if others + name.len() + value.len() > max {
            return Err(SqlError::new(
                "54000",
                format!(
                    "session settings would take more than {max} bytes (settings_bytes_max); \
                     parameter \"{name}\" is unchanged"
                ),
            )
            .with_hint(
                "RESET settings no longer needed, or raise the limit in the configuration.",
            ));
        }
        Ok(())
    }

    fn show(&self, name: &str) -> Result<QueryResult, SqlError> {
        Ok(single_text_column(name, &self.setting(name)?))
    }

    /// The names `SHOW` knows besides those `SET` has given a value.
    const SHOWN: [&'static str; 12] = [
        "transaction_isolation",
        "default_transaction_isolation",
        "lock_timeout",
        "server_version",
        "server_encoding",
        "client_encoding",
        "standard_conforming_strings",
        "timezone",
        "datestyle",
        "schema_version",
        "cluster_version",
        "binary_version",
    ];

    /// Every setting `SHOW` and `current_setting` know, by name.
    fn settings_shown(&self) -> HashMap<String, String> {
        Self::SHOWN
            .iter()
            .map(|n| n.to_string())
            .chain(self.settings.keys().cloned())
            .filter_map(|n| self.setting(&n).ok().map(|v| (n, v)))
            .chain([("server_version_num".to_string(), "150000".to_string())])
            .collect()
    }

    /// A setting's value as `SHOW` prints it; 42704 for a name it does not know.
    fn setting(&self, name: &str) -> Result<String, SqlError> {
        Ok(match name {
            "transaction isolation level" | "transaction_isolation" => {
                self.isolation().name().to_string()
            }
            "default_transaction_isolation" => self.default_isolation.name().to_string(),
            "lock_timeout" => format!("{}ms", self.lock_timeout_ms),
            "server_version" => "15.0".to_string(),
            "server_encoding" | "client_encoding" => "UTF8".to_string(),
            "standard_conforming_strings" => "on".to_string(),
            "timezone" => self
                .settings
                .get("timezone")
                .cloned()
                .unwrap_or_else(|| "UTC".into()),
            "datestyle" => "ISO, MDY".to_string(),
            // The newest schema version this node has loaded (its transactions may still
            // use an older one): how an operator or a test sees a node lag a schema change.
            "schema_version" => self.engine.catalog_snapshot().version.to_string(),
            // The cluster's version as this node's last lease renewal gave it, and the
            // newest its build understands (`flotilla_types::version`).
            "cluster_version" => self.engine.cluster_version().to_string(),
            "binary_version" => self.engine.config.binary_version.to_string(),
            other => match self.settings.get(other) {
                Some(v) => v.clone(),
                None => {
                    return Err(SqlError::new(
                        "42704",
                        format!("unrecognized configuration parameter \"{other}\""),
                    ));
                }
            },
        })
    }
}
