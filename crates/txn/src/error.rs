use flotilla_mvcc::MvccError;
use flotilla_tso::TsoError;
use flotilla_types::Timestamp;

/// Errors a transaction can meet. Each says what the caller should do: retry the
/// statement, retry the transaction, or give up.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// Waited longer than the lock wait timeout for another transaction's lock.
    #[error(
        "canceling statement due to lock timeout: waited {waited_ms} ms for a row locked by another transaction"
    )]
    LockWaitTimeout {
        /// How long the statement waited.
        waited_ms: u64,
    },
    /// Waiting would close a cycle of transactions waiting for each other.
    #[error(
        "deadlock detected: transaction {waiter} waits for {holder}, which waits (transitively) for {waiter}"
    )]
    Deadlock {
        /// The transaction that was refused.
        waiter: Timestamp,
        /// The transaction it wanted to wait for.
        holder: Timestamp,
    },
    /// A newer version of a key was committed after the statement's snapshot.
    #[error("could not serialize access due to concurrent update")]
    WriteConflict {
        /// The snapshot the writer checked against.
        for_update_ts: Timestamp,
        /// Commit timestamp of the newer version.
        conflict_commit_ts: Timestamp,
    },
    /// A key that must not exist does.
    #[error("key already exists")]
    AlreadyExists {
        /// The key.
        key: Vec<u8>,
    },
    /// The transaction was rolled back by another transaction (its locks lapsed) and
    /// cannot commit; retry it.
    #[error("transaction was aborted by a concurrent transaction (its locks lapsed); retry it")]
    Aborted,
    /// The transaction's write set grew past the configured limit.
    #[error(
        "transaction too large: {size_bytes} bytes buffered, limit is {limit_bytes} (txn_size_bytes_max)"
    )]
    TooLarge {
        /// Buffered bytes.
        size_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// The snapshot is older than the GC safe point: versions it needs may be gone.
    #[error(
        "snapshot too old: the snapshot at {read_ts} is below the garbage-collection safe point {safe_point}"
    )]
    SnapshotTooOld {
        /// The refused snapshot.
        read_ts: Timestamp,
        /// The safe point.
        safe_point: Timestamp,
    },
    /// The timestamp oracle failed.
    #[error(transparent)]
    Tso(#[from] TsoError),
    /// The cluster could not serve the request in time (a region without a leader during
    /// failover, an unreachable store); nothing was acknowledged, so retrying the
    /// transaction is safe.
    #[error("cluster unavailable: {0}; retry the transaction")]
    Unavailable(String),
    /// A storage-level failure; not retryable by the client.
    #[error("storage failure: {0}")]
    Internal(String),
}

impl From<MvccError> for TxnError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::WriteConflict {
                for_update_ts,
                conflict_commit_ts,
                ..
            } => TxnError::WriteConflict {
                for_update_ts,
                conflict_commit_ts,
            },
            MvccError::AlreadyExists { key } => TxnError::AlreadyExists { key },
            MvccError::TxnLockNotFound { .. } => TxnError::Aborted,
            MvccError::SnapshotTooOld {
                read_ts,
                safe_point,
            } => TxnError::SnapshotTooOld {
                read_ts,
                safe_point,
            },
            other => TxnError::Internal(other.to_string()),
        }
    }
}
