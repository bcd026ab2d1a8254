use std::sync::Arc;

use flotilla_mvcc::{IngestEntry, MissingPrimary, Mutation, TxnStatus};
use flotilla_types::Timestamp;

use crate::error::TxnError;

/// A request for pessimistic locks.
#[derive(Debug, Clone)]
pub struct LockRequest {
    /// Keys, each with "must not exist" (INSERT of a unique key).
    pub keys: Vec<(Vec<u8>, bool)>,
    /// The transaction's primary key.
    pub primary: Vec<u8>,
    /// The transaction.
    pub start_ts: Timestamp,
    /// Versions committed after this are conflicts.
    pub for_update_ts: Timestamp,
    /// Lock lifetime without heartbeat, from `start_ts`, as of the request's sending. A
    /// lock granted later (after a wait for another's release) must live that much longer,
    /// or it is born lapsed and a waiter rolls back its live transaction: whoever holds
    /// the request before the lock is written adds the time it held it (`lock_ttl_ms_after`).
    pub ttl_ms: u64,
    /// Return each key's newest committed value.
    pub need_values: bool,
    /// How long to wait for other transactions' locks.
    pub lock_wait_timeout_ms: u64,
    /// Shared locks, which other transactions' shared locks may join (see
    /// `flotilla_mvcc::LockKeys::shared`); exclusive ones otherwise.
    pub shared: bool,
    /// Lock only the keys' existence (`flotilla_mvcc::LockKeys::key_only`).
    pub key_only: bool,
}

/// A lock lifetime of `ttl_ms` (from the transaction's start) asked for `held` ago: the
/// same lifetime after the moment it is written.
pub fn lock_ttl_ms_after(ttl_ms: u64, held: std::time::Duration) -> u64 {
    let held_ms = u64::try_from(held.as_millis()).unwrap_or(u64::MAX);
    ttl_ms.saturating_add(held_ms)
}

/// Percolator operations over the whole key space. Implementations resolve or wait for
/// other transactions' locks themselves: a read returns what is committed at its
/// timestamp, waiting (bounded) while a transaction that may commit below it is in flight.
#[async_trait::async_trait]
pub trait TxnKv: Send + Sync + 'static {
    /// The value of `key` committed at `ts`; `reader` is the reading transaction (its own
    /// locks never block it).
    async fn get(
        &self,
        key: &[u8],
        ts: Timestamp,
        reader: Option<Timestamp>,
        lock_wait_timeout_ms: u64,
    ) -> Result<Option<Vec<u8>>, TxnError>;

    /// At most `limit` pairs in `[start, end)` (empty end = unbounded) committed at `ts`.
    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        ts: Timestamp,
        limit: usize,
        reader: Option<Timestamp>,
        lock_wait_timeout_ms: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TxnError>;

    /// Takes pessimistic locks, waiting for other holders (bounded, with deadlock
    /// detection).
    async fn acquire_pessimistic_lock(
        &self,
        request: LockRequest,
    ) -> Result<Vec<Option<Vec<u8>>>, TxnError>;

    /// Releases pessimistic locks that were never prewritten.
    async fn pessimistic_rollback(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
    ) -> Result<(), TxnError>;

    /// Prewrites mutations (first phase of commit). `one_commit_batch` promises that these
    /// are all of the transaction's mutations and that exactly their keys will be
    /// committed in one `commit` call; a store may then keep the locks in memory, since a
    /// crash can no longer leave the commit half done. `ttl_ms` is reckoned as
    /// `LockRequest::ttl_ms` is: a prewrite sent again after settling another's lock adds
    /// the time since the first sending.
    async fn prewrite(
        &self,
        mutations: Vec<Mutation>,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
        one_commit_batch: bool,
    ) -> Result<(), TxnError>;

    /// Commits keys at `commit_ts`. When `keys` contains the primary it must come first:
    /// committing the primary is the transaction's commit point.
    async fn commit(
        &self,
        keys: Vec<Vec<u8>>,
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<(), TxnError>;

    /// Rolls back keys of a transaction that will not commit.
    async fn rollback(&self, keys: Vec<Vec<u8>>, start_ts: Timestamp) -> Result<(), TxnError>;

    /// Writes `entries` as versions committed at `ts`, outside any transaction: an index
    /// backfill's entries for rows it read at snapshot `ts` (see `Mvcc::ingest`). Waits
    /// (at most `lock_wait_timeout_ms`) while a transaction holds a unique entry's key.
    /// `AlreadyExists`: another row holds a unique key at `ts`; `WriteConflict`: another
    /// row took one after `ts` (read the rows again at a newer snapshot). Each region's
    /// part is written whole. Visible when it returns, but durable only in a cluster
    /// (where each part is a committed Raft command); in a standalone only with the next
    /// synced write to the same engine (append order), which a backfill's next job step
    /// is.
    async fn ingest(
        &self,
        entries: Vec<IngestEntry>,
        ts: Timestamp,
        lock_wait_timeout_ms: u64,
    ) -> Result<(), TxnError>;

    /// Deletes the data of keys in `[start, end)` that no transaction can reach any more
    /// (a dropped index or table; see `Mvcc::delete_range`), a bounded part at a time: at
    /// least `limit` records, whole keys, within one region. Returns where the next call
    /// starts (`None`: the range holds no more data). Locked keys are left to lock
    /// resolution.
    async fn delete_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Option<Vec<u8>>, TxnError>;

    /// Keeps a live transaction's primary lock from lapsing.
    async fn txn_heartbeat(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<u64, TxnError>;

    /// The fate of transaction `lock_ts`, rolling it back if its primary lock lapsed.
    /// `missing` says what to do if the primary holds no lock or record of it: fence it
    /// when the caller met a secondary lock, report it when the caller met the primary
    /// lock itself (see `MissingPrimary`).
    async fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        missing: MissingPrimary,
    ) -> Result<TxnStatus, TxnError>;
}

/// Shared handle to a `TxnKv`.
pub type TxnKvRef = Arc<dyn TxnKv>;
