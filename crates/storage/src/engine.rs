use std::ops::Bound;
use std::sync::Arc;

/// The column families every store has. Fixed at compile time so a typo cannot create one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cf {
    /// Percolator data: values at their writer's start_ts.
    Default,
    /// Percolator locks: one per locked key.
    Lock,
    /// Percolator commit records at their commit_ts.
    Write,
    /// The newest data-changing commit record of each key (an index over `write`, kept in
    /// the same batches), so reads of the newest version need a get, not a seek.
    Latest,
    /// Node-local metadata: catalog, timestamp window, id allocators.
    Meta,
    /// Raft logs, hard states and apply states of the region peers a store hosts. In the
    /// same engine as the data so one atomic batch can move both (applied data together
    /// with its applied index).
    Raft,
}

impl Cf {
    /// Every column family, in a stable order.
    pub const ALL: [Cf; 6] = [
        Cf::Default,
        Cf::Lock,
        Cf::Write,
        Cf::Latest,
        Cf::Meta,
        Cf::Raft,
    ];

    /// The on-disk name of the column family.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Default => "default",
            Cf::Lock => "lock",
            Cf::Write => "write",
            Cf::Latest => "latest",
            Cf::Meta => "meta",
            Cf::Raft => "raft",
        }
    }
}

/// Errors from the storage engine. Any of them means the engine could not do what was asked;
/// none is retryable by the caller without operator action except `Busy`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The underlying engine failed (I/O, corruption, poisoned after a failed fsync).
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A background sync failed earlier; the engine refuses writes to avoid acknowledging
    /// data that may not be durable.
    #[error("storage is read-only after a failed sync: {0}")]
    Poisoned(String),
    /// The engine cannot take the write here and now (a replicated engine that is not the
    /// region's leader, or whose route is stale); nothing was written. Retry after
    /// refreshing the route.
    #[error("storage unavailable here, retry: {0}")]
    Unavailable(String),
}

/// A key-value pair as read from the engine.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An iterator over a key range, in key order (or reverse order when asked).
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair, StorageError>> + Send + 'a>;

/// One write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete { cf: Cf, key: Vec<u8> },
}

/// Writes applied atomically: after a crash either all of them are present or none.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
    size_bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.size_bytes += key.len() + value.len();
        self.ops.push(WriteOp::Put { cf, key, value });
    }

    /// Adds a delete.
    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.size_bytes += key.len();
        self.ops.push(WriteOp::Delete { cf, key });
    }

    /// Adds a put or a delete.
    pub fn push(&mut self, op: WriteOp) {
        match op {
            WriteOp::Put { cf, key, value } => self.put(cf, key, value),
            WriteOp::Delete { cf, key } => self.delete(cf, key),
        }
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate payload size in bytes (keys plus values).
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// The operations, in insertion order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Consumes the batch into its operations.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }
}

/// Names an appended batch for `KvEngine::sync_through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "an appended batch is not durable until sync_through(ticket)"]
pub struct DurabilityTicket(pub(crate) u64);

impl DurabilityTicket {
    /// A ticket numbered by an engine outside this crate (engines number their own
    /// batches; a ticket means nothing to another engine).
    pub fn from_sequence(sequence: u64) -> Self {
        DurabilityTicket(sequence)
    }
}

/// What Flotilla needs from a local storage engine.
pub trait KvEngine: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Iterates keys in `[start, end)` (an empty `end` means unbounded) in ascending order,
    /// or descending when `reverse`.
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'a>;

    /// Applies a batch atomically. With `sync`, returns only after the batch is durable
    /// (fsync), sharing the fsync with concurrent writers (group commit).
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let ticket = self.append(batch)?;
        if sync {
            self.sync_through(ticket)?;
        }
        Ok(())
    }

    /// Applies a batch atomically and makes it visible to readers, without waiting for it
    /// to become durable. Ops apply in order: of several writes of one key, the last wins. Returns the ticket to pass to `sync_through`. Durability follows
    /// append order: once a batch is durable, so is every batch appended before it.
    fn append(&self, batch: WriteBatch) -> Result<DurabilityTicket, StorageError>;

    /// Returns once the batch that got `ticket` (and every batch appended before it) is
    /// durable, sharing the fsync with concurrent writers (group commit). Lets a caller
    /// release its latches between appending and waiting.
    fn sync_through(&self, ticket: DurabilityTicket) -> Result<(), StorageError>;

    /// Approximate bytes on disk, for status reporting.
    fn disk_space_bytes(&self) -> u64;

    /// The row cache's counters (all zero when the engine has none).
    fn row_cache_stats(&self) -> crate::RowCacheStats {
        crate::RowCacheStats::default()
    }

    /// A consistent view of the engine as of now (every batch appended so far, none
    /// appended later), to read at length on another thread while writes go on. `None`
    /// when the engine has no such views; the caller then reads the engine itself.
    fn read_view(&self) -> Option<Box<dyn ReadView>> {
        None
    }
}

/// A point-in-time view of an engine (see `KvEngine::read_view`). It pins the versions it
/// sees, so holders should drop it when done.
pub trait ReadView: Send + 'static {
    /// Iterates keys in `[start, end)` (an empty `end` means unbounded) in ascending order.
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: &[u8]) -> KvIter<'a>;
}

/// Shared handle to an engine.
pub type EngineRef = Arc<dyn KvEngine>;

/// Converts `[start, end)` with "empty end = unbounded" into range bounds.
pub(crate) fn bounds(start: &[u8], end: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end.to_vec())
    };
    (Bound::Included(start.to_vec()), upper)
}
