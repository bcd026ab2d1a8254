//! One client connection: pgwire handlers that map protocol messages onto a `Session`.
//!
//! pgwire drives the socket (framing, SSL refusal, message dispatch, discarding messages
//! after an extended-protocol error until Sync); these handlers decide what each message
//! means. Every handler that ends a query cycle reports the transaction status the session
//! itself holds, so ReadyForQuery never drifts from the SQL layer's view.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::scalar::ScalarValue;
use flotilla_sql::{PreparedStatement, QueryResult, Session, SqlError, TransactionState};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, ErrorHandler, METADATA_APPLICATION_NAME,
    METADATA_DATABASE, METADATA_USER, PgWireConnectionState, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::{
    DataRow, FieldDescription, NoData, ParameterDescription, RowDescription,
};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
    PortalSuspended, Sync as PgSync, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{EmptyQueryResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::{Mutex, Notify};

use crate::{PgServerConfig, copy, values};

/// Version reported to clients; drivers parse the leading number to pick features.
pub(crate) const SERVER_VERSION: &str = "15.0 (Flotilla)";

/// Process ids and cancel keys for BackendKeyData (cancel requests are accepted but ignored).
static PID_GENERATOR: LazyLock<RandomPidSecretKeyGenerator> =
    LazyLock::new(RandomPidSecretKeyGenerator::default);

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The ErrorResponse fields for a SQL error: severity ERROR, its SQLSTATE, message, and the
/// position ('P'), detail ('D') and hint ('H') when known.
pub(crate) fn error_info(error: &SqlError) -> ErrorInfo {
    let mut info = ErrorInfo::new(
        "ERROR".to_owned(),
        error.code.to_owned(),
        error.message.clone(),
    );
    info.severity_nonlocalized = Some("ERROR".to_owned());
    info.position = error.position.map(|p| p.to_string());
    info.hint = error.hint.clone();
    info.detail = error.detail.clone();
    info
}

/// A SQL error as a pgwire error, so pgwire sends it and (in the extended protocol) skips
/// to the next Sync, as PostgreSQL does.
fn pg_error(error: &SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(error)))
}

fn protocol_error(code: &'static str, message: String) -> PgWireError {
    pg_error(&SqlError {
        code,
        message,
        position: None,
        hint: None,
        detail: None,
    })
}

/// How error messages name a statement or portal: the unnamed one is `""`.
fn display_name(name: &str) -> &str {
    if name == DEFAULT_NAME { "" } else { name }
}

/// ReadyForQuery's status byte for a session transaction state.
pub(crate) fn transaction_status(state: TransactionState) -> TransactionStatus {
    match state {
        TransactionState::Idle => TransactionStatus::Idle,
        TransactionState::InBlock => TransactionStatus::Transaction,
        TransactionState::Failed => TransactionStatus::Error,
    }
}

/// The command part of a tag whose trailing number is a row count ("SELECT 5" → "SELECT",
/// "INSERT 0 5" → "INSERT 0"), for completing a portal fetched in pieces.
pub(crate) fn tag_command(tag: &str) -> &str {
    match tag.rsplit_once(' ') {
        Some((command, count))
            if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) =>
        {
            command
        }
        _ => tag,
    }
}

// ---------------------------------------------------------------------------------------------
// Startup
// ---------------------------------------------------------------------------------------------

/// Server parameters sent after authentication (the ones drivers read to pick encodings and
/// date formats).
struct ServerParameters;

impl ServerParameterProvider for ServerParameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut params: HashMap<String, String> = [
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
            ("is_superuser", "on"),
            ("default_transaction_read_only", "off"),
            ("in_hot_standby", "off"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let metadata = client.metadata();
        params.insert(
            METADATA_APPLICATION_NAME.to_owned(),
            metadata
                .get(METADATA_APPLICATION_NAME)
                .cloned()
                .unwrap_or_default(),
        );
        if let Some(user) = metadata.get(METADATA_USER) {
            params.insert("session_authorization".to_owned(), user.clone());
        }
        Some(params)
    }
}

/// Bytes of `COPY ... TO STDOUT` data sent in one CopyData message, about.
const COPY_OUT_CHUNK_BYTES: usize = 64 << 10;

/// The fields of an encoded DataRow (length-prefixed, -1 for NULL).
fn data_row_fields(row: &DataRow) -> Vec<Option<&[u8]>> {
    let mut fields = Vec::with_capacity(usize::try_from(row.field_count).unwrap_or(0));
    let mut rest: &[u8] = &row.data;
    while rest.len() >= 4 {
        let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        rest = &rest[4..];
        match usize::try_from(len) {
            Ok(len) if len <= rest.len() => {
                fields.push(Some(&rest[..len]));
                rest = &rest[len..];
            }
            _ => fields.push(None),
        }
    }
    fields
}

/// Trust authentication: any user, any database, no password.
async fn accept_startup<C>(client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<bool>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let PgWireFrontendMessage::Startup(startup) = message else {
        return Ok(false);
    };
    protocol_negotiation(client, &startup).await?;
    save_startup_parameters_to_metadata(client, &startup);
    if !client.metadata().contains_key(METADATA_USER) {
        return Err(PgWireError::UserNameRequired);
    }
    let (pid, secret_key) = PID_GENERATOR.generate(client);
    client.set_pid_and_secret_key(pid, secret_key);
    // Sends AuthenticationOk, ParameterStatus, BackendKeyData and ReadyForQuery(Idle).
    finish_authentication(client, &ServerParameters).await?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Admitted connections
// ---------------------------------------------------------------------------------------------

/// Handlers for an admitted connection; pgwire asks for each handler once per connection.
pub(crate) struct Admitted(pub(crate) Arc<ConnectionHandler>);

impl PgWireServerHandlers for Admitted {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.0.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.0.clone()
    }
}

/// Logs protocol-level errors (the client is told separately by pgwire).
struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        tracing::debug!(peer = %client.socket_addr(), error = %error, "pgwire error");
    }
}

/// The per-connection state behind every handler: the client's session.
pub(crate) struct ConnectionHandler {
    /// Messages on one connection are handled one at a time, so this lock is never contended;
    /// it exists because pgwire hands handlers out as shared references.
    session: Mutex<Session>,
    /// Names of the named statements in pgwire's store (which cannot list them), so
    /// `DEALLOCATE ALL` can remove them.
    statement_names: Mutex<HashSet<String>>,
    /// Signalled once startup completes, which ends the startup deadline.
    started: Arc<Notify>,
    describer: Arc<StatementDescriber>,
    /// The `COPY ... FROM STDIN` in progress, between its statement and CopyDone.
    copy: Mutex<Option<CopyIn>>,
    /// Most named statements kept (`PgServerConfig::prepared_statements_max`).
    prepared_statements_max: usize,
    /// Most named portals open at once (`PgServerConfig::portals_max`).
    portals_max: usize,
    /// The portals open in pgwire's store (which cannot list them) and what they hold.
    portals: Mutex<PortalBook>,
}

/// The named portals of a connection, and the bytes of encoded rows each suspended portal
/// (the unnamed one included) still holds.
#[derive(Default)]
struct PortalBook {
    named: HashSet<String>,
    suspended_bytes: HashMap<String, usize>,
}

impl PortalBook {
    /// Bytes of rows all suspended portals hold.
    fn held_bytes(&self) -> usize {
        self.suspended_bytes
            .values()
            .fold(0, |sum, b| sum.saturating_add(*b))
    }

    fn forget(&mut self, name: &str) {
        self.named.remove(name);
        self.suspended_bytes.remove(name);
    }
}

/// A `COPY ... FROM STDIN` in progress (see `copy`).
struct CopyIn {
    spec: copy::CopySpec,
    decoder: copy::Decoder,
    /// The columns filled, as SQL identifiers.
    columns: Vec<String>,
    /// Rows decoded and not inserted yet, and their bytes.
    rows: Vec<copy::Row>,
    rows_bytes: usize,
    inserted: u64,
    /// The COPY began its own transaction (the session was idle), committed at the end.
    own_txn: bool,
    /// The first error: the rest of the data is read and dropped, then reported.
    failed: Option<SqlError>,
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl ConnectionHandler {
    pub(crate) fn new(session: Session, started: Arc<Notify>, config: &PgServerConfig) -> Self {
        Self {
            session: Mutex::new(session),
            statement_names: Mutex::new(HashSet::new()),
            started,
            describer: Arc::new(StatementDescriber),
            copy: Mutex::new(None),
            prepared_statements_max: config.prepared_statements_max,
            portals_max: config.portals_max,
            portals: Mutex::new(PortalBook::default()),
        }
    }

    /// Closes every portal once no transaction is open, as PostgreSQL does at a
    /// transaction's end: what a suspended portal held is freed with it.
    async fn close_portals_if_idle<S: PortalStore>(&self, store: &S, state: TransactionState) {
        if state == TransactionState::Idle {
            store.clear_portals();
            *self.portals.lock().await = PortalBook::default();
        }
    }

    async fn status(&self) -> TransactionStatus {
        transaction_status(self.session.lock().await.transaction_state())
    }

    /// Runs `DEALLOCATE`: protocol-level prepared statements live in this front end, not in
    /// the session, so this is the one statement answered here. Returns its command tag.
    async fn deallocate<S>(&self, store: &S, target: Deallocate) -> Result<&'static str, SqlError>
    where
        S: PortalStore,
    {
        if self.session.lock().await.transaction_state() == TransactionState::Failed {
            return Err(SqlError {
                code: "25P02",
                message: "current transaction is aborted, commands ignored until end of transaction block".to_owned(),
                position: None,
                hint: None,
                detail: None,
            });
        }
        let mut names = self.statement_names.lock().await;
        match target {
            Deallocate::All => {
                for name in names.drain() {
                    store.rm_statement(&name);
                }
                // And the session's, of SQL-level PREPARE.
                self.session.lock().await.deallocate_named(None)
            }
            Deallocate::Name(name) => {
                if !names.remove(&name) || store.get_statement(&name).is_none() {
                    // Not one of the protocol's: one of SQL-level PREPARE, or none (26000).
                    return self.session.lock().await.deallocate_named(Some(&name));
                }
                store.rm_statement(&name);
                Ok("DEALLOCATE")
            }
        }
    }
}

/// A statement in pgwire's store.
#[derive(Debug, Clone)]
pub(crate) enum Statement {
    /// Prepared (parsed and described) by the session.
    Session(PreparedStatement),
    /// `DEALLOCATE`, which this front end answers itself.
    Deallocate(Deallocate),
}

impl Statement {
    fn param_types(&self) -> &[DataType] {
        match self {
            Statement::Session(prepared) => &prepared.param_types,
            Statement::Deallocate(_) => &[],
        }
    }

    fn result_schema(&self) -> Option<&SchemaRef> {
        match self {
            Statement::Session(prepared) => prepared.result_schema.as_ref(),
            Statement::Deallocate(_) => None,
        }
    }
}

/// What a `DEALLOCATE` statement removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deallocate {
    All,
    Name(String),
}

/// Recognises a query that is exactly `DEALLOCATE [PREPARE] { name | ALL }` (drivers such as
/// psycopg send it to drop statements they prepared with Parse).
pub(crate) fn parse_deallocate(sql: &str) -> Option<Deallocate> {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    let mut words = sql.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("DEALLOCATE") {
        return None;
    }
    let mut target = words.next()?;
    if target.eq_ignore_ascii_case("PREPARE") {
        target = words.next()?;
    }
    if words.next().is_some() || target.contains(';') {
        return None;
    }
    if target.eq_ignore_ascii_case("ALL") {
        return Some(Deallocate::All);
    }
    let name = match target.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?.replace("\"\"", "\""),
        None => target.to_lowercase(),
    };
    Some(Deallocate::Name(name))
}

#[async_trait]
impl StartupHandler for ConnectionHandler {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if accept_startup(client, message).await? {
            let metadata = client.metadata();
            let user = metadata.get(METADATA_USER).cloned().unwrap_or_default();
            // A client that names no database gets the one named like its user.
            let database = metadata
                .get(METADATA_DATABASE)
                .cloned()
                .unwrap_or_else(|| user.clone());
            self.session.lock().await.set_client(&user, &database);
            self.started.notify_one();
        }
        Ok(())
    }
}

/// Sends one statement's result in the simple protocol (text format throughout).
async fn send_simple_result<C>(client: &mut C, result: &QueryResult) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match result {
        QueryResult::Rows {
            schema,
            batches,
            tag,
        } => {
            // Encode first, so an unencodable value becomes an error without partial rows.
            let rows = values::encode_batches(batches, &[]).map_err(|e| pg_error(&e))?;
            client
                .feed(PgWireBackendMessage::RowDescription(row_description(
                    schema,
                    &[],
                )))
                .await?;
            for row in rows {
                client.feed(PgWireBackendMessage::DataRow(row)).await?;
            }
            client
                .feed(PgWireBackendMessage::CommandComplete(Tag::new(tag).into()))
                .await?;
        }
        QueryResult::Command { tag } => {
            client
                .feed(PgWireBackendMessage::CommandComplete(Tag::new(tag).into()))
                .await?;
        }
        QueryResult::Empty => {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
    }
    Ok(())
}

fn row_description(schema: &Schema, formats: &[FieldFormat]) -> RowDescription {
    RowDescription::new(
        values::field_infos(schema, formats)
            .iter()
            .map(FieldDescription::from)
            .collect(),
    )
}

#[async_trait]
impl SimpleQueryHandler for ConnectionHandler {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        if let Some(target) = parse_deallocate(&query.query) {
            let message = match self.deallocate(client.portal_store(), target).await {
                Ok(tag) => PgWireBackendMessage::CommandComplete(Tag::new(tag).into()),
                Err(e) => PgWireBackendMessage::ErrorResponse(error_info(&e).into()),
            };
            client.feed(message).await?;
            let status = self.status().await;
            client.set_state(PgWireConnectionState::ReadyForQuery);
            client.set_transaction_status(status);
            client
                .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                    status,
                )))
                .await?;
            return Ok(());
        }
        if let Some(spec) = copy::parse(&query.query) {
            return self.start_copy(client, spec).await;
        }
        if let Some(out) = copy::parse_out(&query.query) {
            return self.copy_out(client, out).await;
        }
        // A simple query replaces the unnamed portal, as in PostgreSQL.
        client.portal_store().rm_portal(DEFAULT_NAME);
        let held_bytes = {
            let mut portals = self.portals.lock().await;
            portals.forget(DEFAULT_NAME);
            portals.held_bytes()
        };
        let mut session = self.session.lock().await;
        session.hold_result_bytes(held_bytes);
        let (results, mut error) = session.simple_query(&query.query).await;
        for result in &results {
            if let Err(e) = send_simple_result(client, result).await {
                match e {
                    // An unencodable result ends the query string like a statement error.
                    PgWireError::UserError(info) => {
                        client
                            .feed(PgWireBackendMessage::ErrorResponse((*info).into()))
                            .await?;
                        error = None;
                        break;
                    }
                    other => return Err(other),
                }
            }
        }
        if let Some(error) = &error {
            client
                .feed(PgWireBackendMessage::ErrorResponse(
                    error_info(error).into(),
                ))
                .await?;
        } else if results.is_empty() {
            // Only whitespace and semicolons: PostgreSQL answers EmptyQueryResponse.
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        let state = session.transaction_state();
        drop(session);
        // DISCARD ALL drops the connection's prepared statements too, which live here.
        let discarded = results
            .iter()
            .any(|r| matches!(r, QueryResult::Command { tag } if tag == "DISCARD ALL"));
        if discarded {
            for name in self.statement_names.lock().await.drain() {
                client.portal_store().rm_statement(&name);
            }
        }
        self.close_portals_if_idle(client.portal_store(), state)
            .await;
        let status = transaction_status(state);
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` is overridden and never calls this.
        Err(protocol_error(
            "XX000",
            "simple query path not available".to_owned(),
        ))
    }
}

/// Describes stored statements from what `Session::prepare` returned; pgwire requires a
/// parser type, but parsing itself happens in `on_parse` through the session.
pub(crate) struct StatementDescriber;

#[async_trait]
impl QueryParser for StatementDescriber {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        _sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        // `on_parse` is overridden and prepares through the session instead.
        Err(protocol_error(
            "XX000",
            "statements are prepared by the session".to_owned(),
        ))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types().iter().map(values::pg_type_of).collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match stmt.result_schema() {
            Some(schema) => {
                let formats = result_formats(column_format, schema.fields().len());
                values::field_infos(schema, &formats)
            }
            None => Vec::new(),
        })
    }
}

/// Whether parameter or column `idx` uses binary format; out-of-range entries (rejected at
/// Bind anyway) read as text rather than panic.
fn is_binary(format: &Format, idx: usize) -> bool {
    match format {
        Format::UnifiedText => false,
        Format::UnifiedBinary => true,
        Format::Individual(codes) => codes.get(idx) == Some(&1),
    }
}

fn result_formats(format: Option<&Format>, columns: usize) -> Vec<FieldFormat> {
    (0..columns)
        .map(|idx| match format {
            Some(f) if is_binary(f, idx) => FieldFormat::Binary,
            _ => FieldFormat::Text,
        })
        .collect()
}

/// Checks a Bind's counts and format codes against the statement, as PostgreSQL does, so
/// nothing later indexes past what the client sent.
fn check_bind(bind: &Bind, statement: &Statement, name: &str) -> PgWireResult<()> {
    let params = bind.parameters.len();
    let param_formats = bind.parameter_format_codes.len();
    if param_formats > 1 && param_formats != params {
        return Err(protocol_error(
            "08P01",
            format!("bind message has {param_formats} parameter formats but {params} parameters"),
        ));
    }
    if params != statement.param_types().len() {
        return Err(protocol_error(
            "08P01",
            format!(
                "bind message supplies {params} parameters, but prepared statement \"{}\" requires {}",
                display_name(name),
                statement.param_types().len()
            ),
        ));
    }
    let columns = statement.result_schema().map_or(0, |s| s.fields().len());
    let result_formats = bind.result_column_format_codes.len();
    if result_formats > 1 && result_formats != columns {
        return Err(protocol_error(
            "08P01",
            format!(
                "bind message has {result_formats} result formats but query has {columns} columns"
            ),
        ));
    }
    if let Some(code) = bind
        .parameter_format_codes
        .iter()
        .chain(&bind.result_column_format_codes)
        .find(|c| **c != 0 && **c != 1)
    {
        return Err(protocol_error(
            "22023",
            format!("unsupported format code: {code}"),
        ));
    }
    Ok(())
}

/// Decodes a portal's parameters into the statement's parameter types.
fn decode_params(
    parameters: &[Option<impl std::ops::Deref<Target = [u8]>>],
    format: &Format,
    statement: &StoredStatement<Statement>,
) -> Result<Vec<ScalarValue>, SqlError> {
    parameters
        .iter()
        .enumerate()
        .map(|(idx, raw)| {
            let target = statement
                .statement
                .param_types()
                .get(idx)
                .ok_or_else(|| SqlError {
                    code: "08P01",
                    message: format!("parameter ${} is not in the statement", idx + 1),
                    position: None,
                    hint: None,
                    detail: None,
                })?;
            let declared = statement.parameter_types.get(idx).and_then(Option::as_ref);
            values::decode_param(
                raw.as_deref(),
                is_binary(format, idx),
                declared,
                target,
                idx,
            )
        })
        .collect()
}

impl ConnectionHandler {
    /// The statement of a `COPY ... FROM STDIN`: checks the table and columns (by
    /// preparing the INSERT the rows will go through), begins a transaction unless one is
    /// open, and asks the client for the data.
    async fn start_copy<C>(
        &self,
        client: &mut C,
        spec: Result<copy::CopySpec, SqlError>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        let started = async {
            let spec = spec?;
            if session.transaction_state() == TransactionState::Failed {
                return Err(SqlError::new(
                    "25P02",
                    "current transaction is aborted, commands ignored until end of transaction block",
                ));
            }
            let columns = if spec.columns.is_empty() {
                let all = session
                    .prepare(&format!("SELECT * FROM {}", spec.table), &[])
                    .await?;
                all.result_schema
                    .map(|s| s.fields().iter().map(|f| quote_ident(f.name())).collect())
                    .unwrap_or_default()
            } else {
                spec.columns.clone()
            };
            // Checks that the table and columns exist and may be written.
            session
                .prepare(&copy::insert_sql(&spec.table, &columns, 1), &[])
                .await?;
            let own_txn = session.transaction_state() == TransactionState::Idle;
            if own_txn && let (_, Some(e)) = session.simple_query("BEGIN").await {
                return Err(e);
            }
            Ok(CopyIn {
                decoder: copy::Decoder::new(spec.clone()),
                spec,
                columns,
                rows: Vec::new(),
                rows_bytes: 0,
                inserted: 0,
                own_txn,
                failed: None,
            })
        }
        .await;
        let status = transaction_status(session.transaction_state());
        drop(session);
        client.set_transaction_status(status);
        match started {
            Ok(state) => {
                let columns = state.columns.len();
                *self.copy.lock().await = Some(state);
                client.set_state(PgWireConnectionState::CopyInProgress(false));
                pgwire::api::copy::send_copy_in_response(
                    client,
                    pgwire::api::results::CopyResponse::new(0, columns, futures::stream::empty()),
                )
                .await
            }
            Err(e) => {
                client
                    .feed(PgWireBackendMessage::ErrorResponse(error_info(&e).into()))
                    .await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                client
                    .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                        status,
                    )))
                    .await?;
                Ok(())
            }
        }
    }

    /// `COPY ... TO STDOUT`: runs the query (in the session, as any statement), then
    /// streams its rows in the COPY's format, `COPY_OUT_CHUNK_BYTES` to a message.
    async fn copy_out<C>(
        &self,
        client: &mut C,
        out: Result<(copy::CopySpec, String), SqlError>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        let result = async {
            let (spec, query) = out?;
            let (mut results, error) = session.simple_query(&query).await;
            if let Some(e) = error {
                return Err(e);
            }
            match results.pop() {
                Some(QueryResult::Rows {
                    schema, batches, ..
                }) => {
                    let rows = values::encode_batches(&batches, &[])?;
                    Ok((spec, schema, rows))
                }
                _ => Err(SqlError::new(
                    "42601",
                    "COPY needs a query that returns rows",
                )),
            }
        }
        .await;
        let status = transaction_status(session.transaction_state());
        drop(session);
        match result {
            Ok((spec, schema, rows)) => {
                let columns = schema.fields().len();
                client
                    .feed(PgWireBackendMessage::CopyOutResponse(
                        pgwire::messages::copy::CopyOutResponse::new(
                            0,
                            i16::try_from(columns).unwrap_or(i16::MAX),
                            vec![0; columns],
                        ),
                    ))
                    .await?;
                let mut chunk = Vec::with_capacity(COPY_OUT_CHUNK_BYTES);
                if spec.header {
                    let names: Vec<Option<&[u8]>> = schema
                        .fields()
                        .iter()
                        .map(|f| Some(f.name().as_bytes()))
                        .collect();
                    copy::encode_row(&spec, &names, &mut chunk);
                }
                for row in &rows {
                    copy::encode_row(&spec, &data_row_fields(row), &mut chunk);
                    if chunk.len() >= COPY_OUT_CHUNK_BYTES {
                        let data = std::mem::take(&mut chunk);
                        client
                            .feed(PgWireBackendMessage::CopyData(
                                pgwire::messages::copy::CopyData::new(data.into()),
                            ))
                            .await?;
                    }
                }
                if !chunk.is_empty() {
                    client
                        .feed(PgWireBackendMessage::CopyData(
                            pgwire::messages::copy::CopyData::new(chunk.into()),
                        ))
                        .await?;
                }
                client
                    .feed(PgWireBackendMessage::CopyDone(
                        pgwire::messages::copy::CopyDone::new(),
                    ))
                    .await?;
                client
                    .feed(PgWireBackendMessage::CommandComplete(
                        Tag::new(&format!("COPY {}", rows.len())).into(),
                    ))
                    .await?;
            }
            Err(e) => {
                client
                    .feed(PgWireBackendMessage::ErrorResponse(error_info(&e).into()))
                    .await?;
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    /// Inserts the rows decoded so far, as one INSERT.
    async fn insert_copied(session: &mut Session, state: &mut CopyIn) -> Result<(), SqlError> {
        if state.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut state.rows);
        state.rows_bytes = 0;
        let n = state.columns.len();
        let statement = session
            .prepare(
                &copy::insert_sql(&state.spec.table, &state.columns, rows.len()),
                &[],
            )
            .await?;
        let mut params = Vec::with_capacity(rows.len() * n);
        for (r, (line, row)) in rows.iter().enumerate() {
            let context = |what: String| format!("{what} (COPY {}, line {line})", state.spec.table);
            if row.len() < n {
                return Err(SqlError::new(
                    "22P04",
                    context("missing data for a column".into()),
                ));
            }
            if row.len() > n {
                return Err(SqlError::new(
                    "22P04",
                    context("extra data after last expected column".into()),
                ));
            }
            for (c, field) in row.iter().enumerate() {
                let target = statement
                    .param_types
                    .get(r * n + c)
                    .cloned()
                    .unwrap_or(DataType::Utf8);
                let value =
                    copy::decode_field(field.as_deref(), &target, r * n + c).map_err(|e| {
                        SqlError {
                            message: format!(
                                "{} (COPY {}, line {line}, column {})",
                                e.message, state.spec.table, state.columns[c]
                            ),
                            ..e
                        }
                    })?;
                params.push(value);
            }
        }
        session.execute_copied(&statement, params).await?;
        state.inserted += rows.len() as u64;
        Ok(())
    }

    /// Ends a failed COPY: its own transaction is rolled back, an enclosing one aborted.
    async fn abort_copy(session: &mut Session, state: &CopyIn) {
        if state.own_txn {
            if session.transaction_state() != TransactionState::Idle {
                let _ = session.simple_query("ROLLBACK").await;
            }
        } else {
            session.fail_transaction().await;
        }
    }
}

#[async_trait]
impl pgwire::api::copy::CopyHandler for ConnectionHandler {
    async fn on_copy_data<C>(
        &self,
        _client: &mut C,
        data: pgwire::messages::copy::CopyData,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut copy = self.copy.lock().await;
        let Some(state) = copy.as_mut() else {
            return Err(protocol_error(
                "08P01",
                "COPY data without a COPY".to_owned(),
            ));
        };
        if state.failed.is_some() {
            return Ok(());
        }
        match state.decoder.feed(&data.data) {
            Ok(rows) => {
                state.rows_bytes += data.data.len();
                state.rows.extend(rows);
            }
            Err(e) => {
                state.failed = Some(e);
                return Ok(());
            }
        }
        if state.rows.len() >= copy::BATCH_ROWS_MAX || state.rows_bytes >= copy::BATCH_BYTES_MAX {
            let mut session = self.session.lock().await;
            if let Err(e) = Self::insert_copied(&mut session, state).await {
                state.failed = Some(e);
            }
        }
        Ok(())
    }

    async fn on_copy_done<C>(
        &self,
        client: &mut C,
        _done: pgwire::messages::copy::CopyDone,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(mut state) = self.copy.lock().await.take() else {
            return Err(protocol_error(
                "08P01",
                "CopyDone without a COPY".to_owned(),
            ));
        };
        let mut session = self.session.lock().await;
        let outcome = async {
            if let Some(e) = state.failed.take() {
                return Err(e);
            }
            let last = state.decoder.finish()?;
            state.rows.extend(last);
            Self::insert_copied(&mut session, &mut state).await?;
            if state.own_txn
                && let (_, Some(e)) = session.simple_query("COMMIT").await
            {
                return Err(e);
            }
            Ok(state.inserted)
        }
        .await;
        if outcome.is_err() {
            Self::abort_copy(&mut session, &state).await;
        }
        client.set_transaction_status(transaction_status(session.transaction_state()));
        drop(session);
        match outcome {
            Ok(rows) => {
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new("COPY").with_rows(rows as usize).into(),
                    ))
                    .await?;
                Ok(())
            }
            Err(e) => Err(pg_error(&e)),
        }
    }

    async fn on_copy_fail<C>(
        &self,
        client: &mut C,
        fail: pgwire::messages::copy::CopyFail,
    ) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(state) = self.copy.lock().await.take() {
            let mut session = self.session.lock().await;
            Self::abort_copy(&mut session, &state).await;
            client.set_transaction_status(transaction_status(session.transaction_state()));
        }
        protocol_error("57014", format!("COPY from stdin failed: {}", fail.message))
    }
}

fn is_empty_query(sql: &str) -> bool {
    sql.chars().all(|c| c == ';' || c.is_whitespace())
}

impl ConnectionHandler {
    /// Bind proper: checks and decodes the parameters, then stores the portal.
    async fn bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        if portal_name != DEFAULT_NAME && client.portal_store().get_portal(portal_name).is_some() {
            return Err(protocol_error(
                "42P03",
                format!("cursor \"{portal_name}\" already exists"),
            ));
        }
        if portal_name != DEFAULT_NAME && self.portals.lock().await.named.len() >= self.portals_max
        {
            return Err(protocol_error(
                "54000",
                format!(
                    "too many open portals: one connection keeps at most {} (portals_max); \
                     close portals no longer needed, or end the transaction, which closes them",
                    self.portals_max
                ),
            ));
        }
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                check_bind(&message, &statement.statement, statement_name)?;
                let portal = Portal::try_new(&message, statement)?;
                // Decode now so a malformed parameter fails the Bind, as in PostgreSQL; the
                // values are decoded again at Execute (portals keep only the raw bytes).
                decode_params(
                    &portal.parameters,
                    &portal.parameter_format,
                    &portal.statement,
                )
                .map_err(|e| pg_error(&e))?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                if !message.parameters.is_empty() {
                    return Err(protocol_error(
                        "08P01",
                        format!(
                            "bind message supplies {} parameters, but prepared statement \"{}\" requires 0",
                            message.parameters.len(),
                            display_name(statement_name)
                        ),
                    ));
                }
                client.portal_store().put_empty_portal(portal_name);
            }
            None => {
                return Err(protocol_error(
                    "26000",
                    format!(
                        "prepared statement \"{}\" does not exist",
                        display_name(statement_name)
                    ),
                ));
            }
        }
        // A new portal replaces an unnamed one, and what it held.
        let mut portals = self.portals.lock().await;
        portals.forget(portal_name);
        if portal_name != DEFAULT_NAME {
            portals.named.insert(portal_name.to_owned());
        }
        drop(portals);
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    /// Runs or resumes a portal, sending its rows (at most `max_rows` when non-zero) and its
    /// completion or suspension.
    async fn execute_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Statement>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = portal.state();
        let mut state = state.lock().await;
        match &mut *state {
            PortalExecutionState::Initial => {
                let prepared = match &portal.statement.statement {
                    Statement::Session(prepared) => prepared,
                    Statement::Deallocate(target) => {
                        let tag = self
                            .deallocate(client.portal_store(), target.clone())
                            .await
                            .map_err(|e| pg_error(&e))?;
                        client
                            .feed(PgWireBackendMessage::CommandComplete(Tag::new(tag).into()))
                            .await?;
                        *state = PortalExecutionState::Finished;
                        return Ok(());
                    }
                };
                let params = decode_params(
                    &portal.parameters,
                    &portal.parameter_format,
                    &portal.statement,
                )
                .map_err(|e| pg_error(&e))?;
                let held_bytes = self.portals.lock().await.held_bytes();
                let result = {
                    let mut session = self.session.lock().await;
                    session.hold_result_bytes(held_bytes);
                    session.execute_prepared(prepared, params).await
                }
                .map_err(|e| pg_error(&e))?;
                match result {
                    QueryResult::Rows {
                        schema,
                        batches,
                        tag,
                    } => {
                        let formats = result_formats(
                            Some(&portal.result_column_format),
                            schema.fields().len(),
                        );
                        let rows =
                            values::encode_batches(&batches, &formats).map_err(|e| pg_error(&e))?;
                        // Like PostgreSQL, a fetch that fills `max_rows` exactly suspends.
                        if max_rows == 0 || rows.len() < max_rows {
                            for row in rows {
                                client.feed(PgWireBackendMessage::DataRow(row)).await?;
                            }
                            client
                                .feed(PgWireBackendMessage::CommandComplete(Tag::new(&tag).into()))
                                .await?;
                            *state = PortalExecutionState::Finished;
                        } else {
                            let mut rows = rows.into_iter();
                            for row in rows.by_ref().take(max_rows) {
                                client.feed(PgWireBackendMessage::DataRow(row)).await?;
                            }
                            client
                                .feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                                .await?;
                            let rest: Vec<DataRow> = rows.collect();
                            let rest_bytes = rest.iter().map(|r| r.data.len()).sum();
                            self.portals
                                .lock()
                                .await
                                .suspended_bytes
                                .insert(portal.name.clone(), rest_bytes);
                            let rest: Vec<PgWireResult<DataRow>> =
                                rest.into_iter().map(Ok).collect();
                            let fields = Arc::new(values::field_infos(&schema, &formats));
                            let mut response =
                                QueryResponse::new(fields, futures::stream::iter(rest));
                            response.set_command_tag(tag_command(&tag));
                            *state = PortalExecutionState::Suspended(response);
                        }
                    }
                    QueryResult::Command { tag } => {
                        client
                            .feed(PgWireBackendMessage::CommandComplete(Tag::new(&tag).into()))
                            .await?;
                        *state = PortalExecutionState::Finished;
                    }
                    QueryResult::Empty => {
                        client
                            .feed(PgWireBackendMessage::EmptyQueryResponse(
                                EmptyQueryResponse::new(),
                            ))
                            .await?;
                        *state = PortalExecutionState::Finished;
                    }
                }
            }
            PortalExecutionState::Suspended(response) => {
                let command = response.command_tag().to_owned();
                let rows = response.data_rows();
                let mut sent = 0;
                let mut sent_bytes = 0;
                let mut exhausted = false;
                while max_rows == 0 || sent < max_rows {
                    match rows.next().await {
                        Some(row) => {
                            let row = row?;
                            sent_bytes += row.data.len();
                            client.feed(PgWireBackendMessage::DataRow(row)).await?;
                            sent += 1;
                        }
                        None => {
                            exhausted = true;
                            break;
                        }
                    }
                }
                {
                    let mut portals = self.portals.lock().await;
                    if exhausted {
                        portals.suspended_bytes.remove(&portal.name);
                    } else if let Some(held) = portals.suspended_bytes.get_mut(&portal.name) {
                        *held = held.saturating_sub(sent_bytes);
                    }
                }
                if exhausted {
                    client
                        .feed(PgWireBackendMessage::CommandComplete(
                            Tag::new(&command).with_rows(sent).into(),
                        ))
                        .await?;
                    *state = PortalExecutionState::Finished;
                } else {
                    client
                        .feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                        .await?;
                }
            }
            PortalExecutionState::Finished => {
                if portal.statement.statement.result_schema().is_some() {
                    // A drained row-returning portal completes again with no rows.
                    client
                        .feed(PgWireBackendMessage::CommandComplete(
                            Tag::new("SELECT").with_rows(0).into(),
                        ))
                        .await?;
                } else {
                    return Err(protocol_error(
                        "55000",
                        format!("portal \"{}\" cannot be run", display_name(&portal.name)),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ExtendedQueryHandler for ConnectionHandler {
    type Statement = Statement;
    type QueryParser = StatementDescriber;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.describer.clone()
    }

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        // Only the unnamed statement may be silently replaced.
        if name != DEFAULT_NAME && client.portal_store().get_statement(&name).is_some() {
            return Err(protocol_error(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            ));
        }
        // OID 0 (unspecified) and unknown OIDs become `None`: the server infers those.
        let declared: Vec<Option<Type>> = message
            .type_oids
            .iter()
            .map(|oid| Type::from_oid(*oid))
            .collect();
        if name != DEFAULT_NAME
            && self.statement_names.lock().await.len() >= self.prepared_statements_max
        {
            // As any error in a transaction block, this one fails the block.
            self.session.lock().await.fail_transaction().await;
            return Err(protocol_error(
                "54000",
                format!(
                    "too many prepared statements: one connection keeps at most {} \
                     (prepared_statements_max); close or DEALLOCATE statements no longer needed",
                    self.prepared_statements_max
                ),
            ));
        }
        if name != DEFAULT_NAME {
            self.statement_names.lock().await.insert(name.clone());
        }
        if is_empty_query(&message.query) {
            client.portal_store().put_empty_statement(&name);
        } else if let Some(target) = parse_deallocate(&message.query) {
            // Answered by this front end at Execute; the session never sees it.
            client
                .portal_store()
                .put_statement(Arc::new(StoredStatement::new(
                    name,
                    Statement::Deallocate(target),
                    declared,
                )));
        } else {
            let arrow_types: Vec<_> = declared
                .iter()
                .map(|t| t.as_ref().and_then(values::arrow_type_of))
                .collect();
            let statement = self
                .session
                .lock()
                .await
                .prepare(&message.query, &arrow_types)
                .await
                .map_err(|e| pg_error(&e))?;
            client
                .portal_store()
                .put_statement(Arc::new(StoredStatement::new(
                    name,
                    Statement::Session(statement),
                    declared,
                )));
        }
        client
            .feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = self.bind(client, message).await;
        if result.is_err() {
            // A Bind that fails (malformed parameter, wrong count) aborts the transaction
            // block, as in PostgreSQL.
            self.session.lock().await.fail_transaction().await;
        }
        result
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let portal_name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(portal_name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                return Ok(());
            }
            None => {
                return Err(protocol_error(
                    "34000",
                    format!("portal \"{}\" does not exist", display_name(portal_name)),
                ));
            }
        };
        // Zero or negative means "no limit".
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        client.set_state(PgWireConnectionState::QueryInProgress);
        let result = self.execute_portal(client, &portal, max_rows).await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        let status = self.status().await;
        client.set_transaction_status(status);
        result
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        // Describe answers NoData exactly when the statement returns no rows (pgwire's
        // default would send an empty RowDescription for a parameterised DML statement).
        let schema = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                Some(Entry::Value(stored)) => {
                    let param_oids = stored
                        .statement
                        .param_types()
                        .iter()
                        .enumerate()
                        .map(|(idx, data_type)| {
                            // The client's declared type, when it gave one, is the encoding
                            // it will send; otherwise the type the server will decode.
                            stored
                                .parameter_types
                                .get(idx)
                                .and_then(Option::as_ref)
                                .cloned()
                                .unwrap_or_else(|| values::pg_type_of(data_type))
                                .oid()
                        })
                        .collect();
                    client
                        .feed(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(param_oids),
                        ))
                        .await?;
                    stored
                        .statement
                        .result_schema()
                        .cloned()
                        .map(|schema| (schema, Vec::new()))
                }
                Some(Entry::Empty) => {
                    client
                        .feed(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(Vec::new()),
                        ))
                        .await?;
                    None
                }
                None => {
                    return Err(protocol_error(
                        "26000",
                        format!(
                            "prepared statement \"{}\" does not exist",
                            display_name(name)
                        ),
                    ));
                }
            },
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => portal
                    .statement
                    .statement
                    .result_schema()
                    .cloned()
                    .map(|schema| {
                        let formats = result_formats(
                            Some(&portal.result_column_format),
                            schema.fields().len(),
                        );
                        (schema, formats)
                    }),
                Some(Entry::Empty) => None,
                None => {
                    return Err(protocol_error(
                        "34000",
                        format!("portal \"{}\" does not exist", display_name(name)),
                    ));
                }
            },
            other => return Err(PgWireError::InvalidTargetType(other)),
        };
        match schema {
            Some((schema, formats)) => {
                client
                    .feed(PgWireBackendMessage::RowDescription(row_description(
                        &schema, &formats,
                    )))
                    .await?;
            }
            None => {
                client
                    .feed(PgWireBackendMessage::NoData(NoData::new()))
                    .await?
            }
        }
        Ok(())
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(DEFAULT_NAME);
        self.portals.lock().await.forget(DEFAULT_NAME);
        // The session, not pgwire's bookkeeping, knows whether an error failed the block.
        let state = self.session.lock().await.transaction_state();
        self.close_portals_if_idle(client.portal_store(), state)
            .await;
        let status = transaction_status(state);
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                self.statement_names.lock().await.remove(name);
                client.portal_store().rm_statement(name);
            }
            TARGET_TYPE_BYTE_PORTAL => {
                self.portals.lock().await.forget(name);
                client.portal_store().rm_portal(name);
            }
            other => return Err(PgWireError::InvalidTargetType(other)),
        }
        client
            .feed(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        _portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_execute` is overridden and never calls this.
        Err(protocol_error(
            "XX000",
            "extended query path not available".to_owned(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Rejected connections
// ---------------------------------------------------------------------------------------------

/// Handlers for a connection past `max_connections`: answer the startup packet with
/// `53300 sorry, too many clients already` and close, as PostgreSQL does.
pub(crate) struct Rejected;

impl PgWireServerHandlers for Rejected {
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(RejectStartup)
    }
}

struct RejectStartup;

#[async_trait]
impl StartupHandler for RejectStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if matches!(message, PgWireFrontendMessage::Startup(_)) {
            let mut info = ErrorInfo::new(
                "FATAL".to_owned(),
                "53300".to_owned(),
                "sorry, too many clients already".to_owned(),
            );
            info.severity_nonlocalized = Some("FATAL".to_owned());
            // Sent directly rather than returned: pgwire would follow a returned error
            // with ReadyForQuery, which a refused client must not see.
            client
                .send(PgWireBackendMessage::ErrorResponse(info.into()))
                .await?;
            client.close().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_drop_trailing_row_counts() {
        assert_eq!(tag_command("SELECT 5"), "SELECT");
        assert_eq!(tag_command("INSERT 0 2"), "INSERT 0");
        assert_eq!(tag_command("SHOW"), "SHOW");
        assert_eq!(tag_command("CREATE TABLE"), "CREATE TABLE");
    }

    #[test]
    fn transaction_states_map_to_status_bytes() {
        assert_eq!(
            transaction_status(TransactionState::Idle),
            TransactionStatus::Idle
        );
        assert_eq!(
            transaction_status(TransactionState::InBlock),
            TransactionStatus::Transaction
        );
        assert_eq!(
            transaction_status(TransactionState::Failed),
            TransactionStatus::Error
        );
    }

    #[test]
    fn sql_errors_carry_position_hint_and_detail() {
        let info = error_info(&SqlError {
            code: "42601",
            message: "syntax error at or near \"FORM\"".to_owned(),
            position: Some(10),
            hint: Some("check the spelling".to_owned()),
            detail: Some("Key (id)=(1) is not present in table \"p\".".to_owned()),
        });
        assert_eq!(info.severity, "ERROR");
        assert_eq!(info.code, "42601");
        assert_eq!(info.position.as_deref(), Some("10"));
        assert_eq!(info.hint.as_deref(), Some("check the spelling"));
        assert_eq!(
            info.detail.as_deref(),
            Some("Key (id)=(1) is not present in table \"p\".")
        );
    }

    #[test]
    fn deallocate_statements_are_recognised() {
        assert_eq!(parse_deallocate("DEALLOCATE ALL"), Some(Deallocate::All));
        assert_eq!(
            parse_deallocate(" deallocate prepare all ; "),
            Some(Deallocate::All)
        );
        assert_eq!(
            parse_deallocate("DEALLOCATE _pg3_1"),
            Some(Deallocate::Name("_pg3_1".to_owned()))
        );
        assert_eq!(
            parse_deallocate("DEALLOCATE \"My\"\"S\""),
            Some(Deallocate::Name("My\"S".to_owned()))
        );
        assert_eq!(
            parse_deallocate("DEALLOCATE Foo"),
            Some(Deallocate::Name("foo".to_owned()))
        );
        assert_eq!(parse_deallocate("DEALLOCATE"), None);
        assert_eq!(parse_deallocate("DEALLOCATE a; SELECT 1"), None);
        assert_eq!(parse_deallocate("SELECT 1"), None);
    }

    #[test]
    fn empty_queries() {
        assert!(is_empty_query(""));
        assert!(is_empty_query(" ;\n; "));
        assert!(!is_empty_query("select 1"));
    }

    #[test]
    fn format_lookups_never_panic() {
        assert!(!is_binary(&Format::UnifiedText, 3));
        assert!(is_binary(&Format::UnifiedBinary, 3));
        assert!(is_binary(&Format::Individual(vec![0, 1]), 1));
        assert!(!is_binary(&Format::Individual(vec![0, 1]), 7));
        assert_eq!(
            result_formats(Some(&Format::UnifiedBinary), 2),
            vec![FieldFormat::Binary, FieldFormat::Binary]
        );
        assert_eq!(result_formats(None, 1), vec![FieldFormat::Text]);
    }
}
