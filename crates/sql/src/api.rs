//! The data types of the SQL layer's public face.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::Statement;

/// An error for the client: SQLSTATE, message, and where known the position in the
/// statement text (1-based character offset, as PostgreSQL reports it) and a hint.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// Five-character SQLSTATE code, e.g. "42P01".
    pub code: &'static str,
    /// Primary message.
    pub message: String,
    /// 1-based character position of the error in the statement.
    pub position: Option<usize>,
    /// What to do about it.
    pub hint: Option<String>,
    /// More about what happened (PostgreSQL's DETAIL), e.g. the key that was missing.
    pub detail: Option<String>,
}

/// The outcome of one statement.
#[derive(Debug, Clone)]
pub enum QueryResult {
    /// Rows (SELECT, or DML with RETURNING), followed by the command tag.
    Rows {
        /// Column names and types.
        schema: SchemaRef,
        /// The rows.
        batches: Vec<RecordBatch>,
        /// Command tag, e.g. "SELECT 3" or "INSERT 0 2".
        tag: String,
    },
    /// A command without rows; its tag, e.g. "CREATE TABLE", "UPDATE 3", "BEGIN".
    Command {
        /// Command tag.
        tag: String,
    },
    /// The query string was empty.
    Empty,
}

/// Transaction state of a session, as ReadyForQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// Not in a transaction block.
    Idle,
    /// In a transaction block.
    InBlock,
    /// In a failed transaction block: everything but ROLLBACK is refused (25P02).
    Failed,
}

/// A statement parsed and described for the extended query protocol.
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    /// The statement text.
    pub sql: String,
    /// Types of $1, $2, ... (inferred where the client did not give them; `Utf8` when
    /// nothing constrains a parameter).
    pub param_types: Vec<DataType>,
    /// Result columns, or `None` when the statement returns no rows.
    pub result_schema: Option<SchemaRef>,
    /// The parsed statement (`None` for an empty query string).
    pub(crate) statement: Option<Arc<Statement>>,
}

/// Limits and defaults of the SQL layer.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    /// Largest statement text accepted, in bytes.
    pub statement_bytes_max: usize,
    /// Most rows one query may return or one statement may change.
    pub rows_per_query_max: usize,
    /// Memory one query's execution may use (DataFusion memory pool), in bytes. Also bounds
    /// the rows a writing statement reads before it writes them (INSERT ... SELECT's source,
    /// the rows an UPDATE or DELETE changes).
    pub query_memory_bytes_max: usize,
    /// Most bytes of rows one query string's results may hold (54000 past it): a node holds a
    /// result whole before sending it, and each statement of a multi-statement string until
    /// the last one ends.
    pub result_bytes_max: usize,
    /// Default lock wait (`lock_timeout`) in milliseconds; also the cap for `SET lock_timeout = 0`.
    pub lock_wait_timeout_ms: u64,
    /// Most bytes one transaction buffers (its writes, held until commit); past it a
    /// statement fails with 54000 and the transaction can roll back.
    pub txn_size_bytes_max: usize,
    /// Bytes of index entries `ADMIN CHECK TABLE` holds at once: an index is compared a
    /// slice of this size at a time, the table's rows read once per slice.
    pub check_table_slice_bytes: usize,
    /// Most bytes of names and values of one session's settings (`SET`, `set_config`); 54000
    /// past it.
    pub settings_bytes_max: usize,
    /// Most savepoints open at once in one transaction (54000 past it): each may hold a
    /// copy of the transaction's buffered writes.
    pub savepoints_max: usize,
    /// Most statements of SQL-level PREPARE one session keeps (54000 past it). The
    /// extended protocol's named statements are bounded apart, by the front end.
    pub prepared_statements_max: usize,
    /// Most foreign key checks one transaction puts off until commit (rows written
    /// and referenced keys removed under a deferred constraint); 54000 past it.
    pub deferred_checks_max: usize,
    /// Most steps of foreign key actions (ON DELETE / ON UPDATE CASCADE, SET NULL, SET
    /// DEFAULT) one statement runs, a step being the rows one action changed in one
    /// table (a cascade down a tree of rows takes one per level); 54001 past it.
    pub fk_action_steps_max: usize,
    /// The newest cluster version this node reports with its schema lease
    /// (`flotilla_types::version`): this build's, or an older one to emulate an older
    /// build in rolling-upgrade tests.
    pub binary_version: u32,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            statement_bytes_max: 1024 * 1024,
            rows_per_query_max: 10_000_000,
            query_memory_bytes_max: 1024 * 1024 * 1024,
            result_bytes_max: 256 * 1024 * 1024,
            lock_wait_timeout_ms: 50_000,
            savepoints_max: 64,
            prepared_statements_max: 1_000,
            deferred_checks_max: 1_000_000,
            fk_action_steps_max: 10_000,
            settings_bytes_max: 64 * 1024,
            check_table_slice_bytes: 64 * 1024 * 1024,
            txn_size_bytes_max: flotilla_txn::TxnOptions::default().txn_size_bytes_max,
            binary_version: flotilla_types::version::BINARY_CLUSTER_VERSION,
        }
    }
}
