use flotilla_storage::StorageError;
use flotilla_types::Timestamp;

use crate::records::LockKind;

/// What a reader or writer needs to know about a lock that stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The locked key.
    pub key: Vec<u8>,
    /// The primary key of the lock holder's transaction (where its fate is decided).
    pub primary: Vec<u8>,
    /// The holder's start_ts: its transaction's identity.
    pub start_ts: Timestamp,
    /// How long the holder's lock lives without a heartbeat, from `start_ts`.
    pub ttl_ms: u64,
    /// Kind of the lock.
    pub kind: LockKind,
}

/// Errors from MVCC operations. The transaction layer turns each into a wait, a retry or a
/// SQL error.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// Another transaction holds a lock on the key.
    #[error("key is locked by transaction {}", .0.start_ts)]
    KeyIsLocked(LockInfo),
    /// A transaction committed a newer version of the key after this one's snapshot.
    #[error("write conflict on key: committed at {conflict_commit_ts} after {for_update_ts}")]
    WriteConflict {
        /// The contested key.
        key: Vec<u8>,
        /// The timestamp the writer checked against.
        for_update_ts: Timestamp,
        /// Commit timestamp of the conflicting version.
        conflict_commit_ts: Timestamp,
    },
    /// The key was expected to be absent but holds a committed value.
    #[error("key already exists")]
    AlreadyExists {
        /// The existing key.
        key: Vec<u8>,
    },
    /// The transaction's lock is gone: it was rolled back by a resolver (its TTL lapsed)
    /// or never written.
    #[error("transaction {start_ts} lost its lock (rolled back by another transaction)")]
    TxnLockNotFound {
        /// The key whose lock is gone.
        key: Vec<u8>,
        /// The transaction.
        start_ts: Timestamp,
    },
    /// Tried to roll back a transaction that already committed.
    #[error("transaction {start_ts} is already committed at {commit_ts}")]
    Committed {
        /// The transaction.
        start_ts: Timestamp,
        /// Its commit timestamp.
        commit_ts: Timestamp,
    },
    /// The read's snapshot is older than the GC safe point: versions it would need may be
    /// gone.
    #[error(
        "snapshot too old: read at {read_ts}, but versions below the GC safe point {safe_point} are being removed"
    )]
    SnapshotTooOld {
        /// The refused snapshot.
        read_ts: Timestamp,
        /// The safe point.
        safe_point: Timestamp,
    },
    /// Stored bytes could not be decoded: corruption or a bug.
    #[error("corrupt MVCC record: {0}")]
    Corrupt(String),
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
