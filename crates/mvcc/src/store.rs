use flotilla_codec::prefix_end;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flotilla_storage::{
    Cf, DurabilityTicket, EngineRef, KvEngine, KvPair, StorageError, WriteBatch, WriteOp,
};
use flotilla_types::Timestamp;
use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};

use crate::error::{LockInfo, MvccError};
use crate::keys::{
    decode_user_key, decode_versioned_key, encode_range, encode_user_key, shared_lock_key,
    shared_lock_range, versioned_key,
};
use crate::latches::{LatchGuard, Latches};
use crate::memory_locks::{MemoryLockBudget, MemoryLocks, entry_bytes, lock_bytes};
use crate::records::{Lock, LockKind, SHORT_VALUE_MAX_BYTES, Write, WriteKind};

/// What a transaction does to one key at prewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutationOp {
    /// Write this value.
    Put(Vec<u8>),
    /// Delete the key.
    Delete,
    /// Change nothing; only lock the key (conflict detection).
    Lock,
}

/// How prewrite makes sure nobody changed a key behind the transaction's back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// The transaction holds a pessimistic lock on the key (taken when a statement wrote
    /// it): prewrite must find that lock.
    Locked,
    /// Optimistic: any commit at or after the transaction's start_ts conflicts.
    Snapshot,
    /// Written under a pessimistic lock on another key that decides it: an index entry of
    /// a locked row, or a fresh row handle. Whoever else writes this key must hold that
    /// other lock first, so a commit newer than start_ts is an earlier holder's (a READ
    /// COMMITTED statement locked the row after it), never a conflict. As TiKV's
    /// pessimistic transactions skip the check for keys they did not lock.
    Guarded,
    /// The transaction holds a shared lock on the key (`LockKind::Shared`) and depends on
    /// it until commit: prewrite must find it, and makes it durable. Only with
    /// `MutationOp::Lock`.
    SharedLocked,
}

impl KeyCheck {
    /// The check's number on the wire (kvpb `Mutation.check`).
    pub fn code(self) -> u32 {
        match self {
            KeyCheck::Snapshot => 0,
            KeyCheck::Locked => 1,
            KeyCheck::Guarded => 2,
            KeyCheck::SharedLocked => 3,
        }
    }

    /// The check numbered `code`; an unknown number is the strictest check, which can
    /// only fail a transaction, never let a conflict through.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => KeyCheck::Locked,
            2 => KeyCheck::Guarded,
            3 => KeyCheck::SharedLocked,
            _ => KeyCheck::Snapshot,
        }
    }
}

/// One key's mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    /// The user key.
    pub key: Vec<u8>,
    /// What to do.
    pub op: MutationOp,
    /// How conflicts on the key are ruled out.
    pub check: KeyCheck,
}

/// One entry of an ingest (`Mvcc::ingest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestEntry {
    /// The user key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// The key is a unique index entry: no other value may hold it.
    pub unique: bool,
}

/// Where prewrite keeps a transaction's locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrewriteLocks {
    /// In the lock CF. Needed when the transaction commits in more than one batch: a crash
    /// between them must leave locks behind for others to resolve.
    Durable,
    /// In memory only. The caller promises to commit every prewritten key in one `commit`
    /// call; that batch is atomic, so a crash before it leaves nothing to resolve and the
    /// locks need never reach the disk (one journal write per transaction, not two).
    /// Readers and writers meet these locks exactly as they meet durable ones.
    Volatile,
}

/// The fate of a transaction as recorded at its primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnStatus {
    /// Still locked and alive: the holder may yet commit.
    Locked {
        /// The primary lock.
        lock: Lock,
    },
    /// Committed at this timestamp: its secondaries must be committed too.
    Committed {
        /// The commit timestamp.
        commit_ts: Timestamp,
    },
    /// Rolled back (or never prewritten, now fenced by a rollback record).
    RolledBack,
    /// The primary holds no lock of the transaction and no record of its fate, and the
    /// caller met that primary lock itself (`MissingPrimary::Report`): the transaction gave
    /// the lock back (a statement released a row it locked but did not change) and is
    /// alive. Nothing was written; the caller retries, with nothing to resolve.
    Released,
}

/// What `Mvcc::check_txn_status` does when the primary holds neither a lock of the
/// transaction nor a record of its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingPrimary {
    /// Write a rollback record and report `RolledBack`. For a caller that met a secondary
    /// lock: the primary's prewrite may still be on its way (or its coordinator died
    /// before it), and the record makes it fail, so the secondaries can be rolled back.
    Fence,
    /// Report `Released` and write nothing. For a caller that met the primary lock
    /// itself: that lock is gone, so no lock of this transaction depends on the caller's
    /// verdict, and a fence would refuse the transaction's next lock of this key (a
    /// spurious serialization failure for a live transaction). A late prewrite of a
    /// pessimistically locked primary fails without a fence: it must find its lock.
    Report,
}

impl MissingPrimary {
    /// The choice for a caller that met a lock on `key` naming `primary`.
    pub fn for_lock_met_at(key: &[u8], primary: &[u8]) -> Self {
        if key == primary {
            MissingPrimary::Report
        } else {
            MissingPrimary::Fence
        }
    }
}

/// Number of latch slots; a power of two well above any realistic concurrency.
const LATCH_SLOTS: usize = 4096;

/// Percolator MVCC on one store.
pub struct Mvcc {
    pub(crate) engine: EngineRef,
    pub(crate) latches: Latches,
    /// The GC safe point: versions a reader below it would need may be gone, so reads
    /// below it are refused (`SnapshotTooOld`). Only rises.
    safe_point: AtomicU64,
    /// Encoded keys that may hold a lock: every lock this store has is in the set (a key is
    /// added before its lock is written and removed after its lock is deleted), so a key
    /// outside it needs no lookup in the lock CF, which is the common case for reads.
    locked: RwLock<BTreeSet<Vec<u8>>>,
    /// Locks that live only in memory, by encoded key. Pessimistic locks (as TiKV's
    /// in-memory pessimistic locks): they are taken before a value is known, never block
    /// readers, and die with the transaction's coordinator anyway, so writing them to disk
    /// would buy nothing. And volatile prewrite locks (`PrewriteLocks::Volatile`), which
    /// hold the value (of any length) until the one commit batch writes it. Ordered, so
    /// scans can find the blocking ones in their range. Bounded in bytes (a
    /// `MemoryLockBudget`): past it, locks are written to the lock CF instead.
    memory: Mutex<MemoryLocks>,
    /// Encoded-key range `[start, end)` (empty end: unbounded) where new in-memory locks
    /// are refused, retryably, while a split moving it to a new region is in flight: that
    /// region's MVCC would not know them.
    memory_lock_fences: Mutex<Fences>,
    /// Held shared by every operation that may add in-memory locks, from its fence check
    /// to its last write, so raising a fence can wait for those already past the check.
    memory_lock_ops: RwLock<()>,
    /// Signalled when in-memory locks go (see `wait_memory_locks_gone`).
    memory_released: Condvar,
}

/// A batch as `Mvcc::stage` routed it: the part for the engine, and the in-memory
/// changes to make once that part is written.
#[derive(Default)]
struct Staged {
    disk: WriteBatch,
    removed: Vec<Vec<u8>>,
    memory_put: Vec<(Vec<u8>, Lock)>,
    memory_delete: Vec<Vec<u8>>,
}

/// A write an operation prepared under its latches but has not made: for a caller that
/// writes through an engine whose writes are durable once they complete (a region's Raft
/// group) and waits for that without blocking a thread. The caller writes `take_batch()`
/// (an empty batch must still confirm, as the engine's empty append does, that the
/// writer is current), then calls `finish`; on failure it drops this, as a failed
/// `append` leaves things. The latches are held until then (and may move to another
/// thread meanwhile), so no conflicting operation reads state this write is about to
/// change.
#[must_use = "the write is not made until the caller writes its batch and calls finish"]
pub struct PendingWrite<'a> {
    mvcc: &'a Mvcc,
    staged: Staged,
    _latch: LatchGuard<'a>,
}

impl PendingWrite<'_> {
    /// The batch to write (taken: a second call returns an empty one).
    pub fn take_batch(&mut self) -> WriteBatch {
        std::mem::take(&mut self.staged.disk)
    }

    /// Makes the in-memory half of the write, once the batch is written, and releases the
    /// latches.
    pub fn finish(self) {
        let PendingWrite { mvcc, staged, .. } = self;
        mvcc.finish(staged);
    }
}

/// `memory_lock_ops` held shared: no fence goes up until it is dropped.
type FenceOps<'a> = RwLockReadGuard<'a, ()>;

/// Whether an operation may block for a latch or the fence lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Block,
    /// Give up instead (the caller falls back to a thread that may block).
    Never,
}

/// A pessimistic-lock request (see `Mvcc::acquire_pessimistic_lock`).
#[derive(Debug, Clone, Copy)]
pub struct LockKeys<'a> {
    /// The keys, each with "must hold no committed value".
    pub keys: &'a [(Vec<u8>, bool)],
    /// The transaction's primary key.
    pub primary: &'a [u8],
    /// The transaction.
    pub start_ts: Timestamp,
    /// No version of a key may be committed after this. `Timestamp::MAX` checks nothing:
    /// it locks whatever version is newest (a READ COMMITTED statement that recomputes
    /// its write from the value the lock returns), and the lock records the newest
    /// version's commit timestamp instead.
    pub for_update_ts: Timestamp,
    /// How long the locks live without a heartbeat.
    pub ttl_ms: u64,
    /// Return each key's newest committed value.
    pub need_values: bool,
    /// Take shared locks (`LockKind::Shared`), which other transactions' shared locks may
    /// join; exclusive ones otherwise, which wait for every other holder (a transaction's
    /// own shared lock becomes exclusive).
    pub shared: bool,
    /// Lock only the keys' existence (`Lock::key_only`): shared, `FOR KEY SHARE` (a
    /// foreign key's referenced key), which joins an exclusive `key_only` lock and sees a
    /// value committed after `for_update_ts` as no conflict (the key is still there);
    /// exclusive, `FOR NO KEY UPDATE` (an update that keeps the key), which key-only
    /// sharers may join. Such a lock is made full again by a request without it.
    pub key_only: bool,
}

/// True if `locks` holds a key in `[start, end)` (empty end: unbounded).
fn any_lock_in(locks: &BTreeMap<Vec<u8>, Lock>, start: &[u8], end: &[u8]) -> bool {
    match locks.range(start.to_vec()..).next() {
        Some((k, _)) => end.is_empty() || k.as_slice() < end,
        None => false,
    }
}

/// Key ranges fenced against new in-memory locks, by id.
#[derive(Default)]
struct Fences {
    next_id: u64,
    ranges: Vec<Fence>,
}

struct Fence {
    id: u64,
    start: Vec<u8>,
    end: Vec<u8>,
    /// Transactions that held an in-memory lock behind the fence when it went up and
    /// may still take more there (see `raise_memory_lock_fence_letting_holders`).
    holders: HashSet<Timestamp>,
}

fn lock_info(key: &[u8], lock: &Lock) -> LockInfo {
    LockInfo {
        key: key.to_vec(),
        primary: lock.primary.clone(),
        start_ts: lock.start_ts,
        ttl_ms: lock.ttl_ms,
        kind: lock.kind,
    }
}

impl Mvcc {
    /// MVCC over `engine`, loading the set of locked keys from the lock CF, with a budget
    /// of its own for in-memory locks (the defaults of `MemoryLockBudget`).
    pub fn new(engine: EngineRef) -> Result<Self, MvccError> {
        Self::with_memory_lock_budget(engine, Arc::new(MemoryLockBudget::default()))
    }

    /// `new`, keeping its in-memory locks within `budget`, which other MVCCs (the
    /// store's other regions) may share.
    pub fn with_memory_lock_budget(
        engine: EngineRef,
        budget: Arc<MemoryLockBudget>,
    ) -> Result<Self, MvccError> {
        let mut locked = BTreeSet::new();
        for item in engine.scan(Cf::Lock, b"", b"", false) {
            locked.insert(item?.0);
        }
        Ok(Self {
            engine,
            latches: Latches::new(LATCH_SLOTS),
            safe_point: AtomicU64::new(0),
            locked: RwLock::new(locked),
            memory: Mutex::new(MemoryLocks::new(budget)),
            memory_lock_fences: Mutex::new(Fences::default()),
            memory_lock_ops: RwLock::new(()),
            memory_released: Condvar::new(),
        })
    }

    /// Refuses new in-memory locks in the encoded range `[start, end)` (empty end:
    /// unbounded) until `lift_memory_lock_fence`, and returns once every operation that
    /// could still add one there has finished: `has_memory_locks_in` then stays true or
    /// false. Blocks (briefly: those operations take no lock waits).
    /// Several fences may stand at once (a split and a leader transfer); each is lifted
    /// by the id this returns.
    pub fn raise_memory_lock_fence(&self, start: &[u8], end: &[u8]) -> u64 {
        let id = {
            let mut fences = self.memory_lock_fences.lock();
            fences.next_id += 1;
            let id = fences.next_id;
            fences.ranges.push(Fence {
                id,
                start: start.to_vec(),
                end: end.to_vec(),
                holders: HashSet::new(),
            });
            id
        };
        drop(self.memory_lock_ops.write());
        id
    }

    /// Like `raise_memory_lock_fence`, but the transactions holding an in-memory lock
    /// behind it once it stands may take more there, so a transaction that locks several
    /// rows of a hot region one statement at a time can finish and the range drain
    /// (`wait_memory_locks_gone`); new transactions are refused. Before relying on the
    /// range staying empty, `close_memory_lock_fence` shuts them out too.
    pub fn raise_memory_lock_fence_letting_holders(&self, start: &[u8], end: &[u8]) -> u64 {
        let id = self.raise_memory_lock_fence(start, end);
        let holders: HashSet<Timestamp> = self
            .memory
            .lock()
            .range(start.to_vec()..)
            .take_while(|(k, _)| end.is_empty() || k.as_slice() < end)
            .map(|(_, lock)| lock.start_ts)
            .collect();
        if let Some(fence) = self
            .memory_lock_fences
            .lock()
            .ranges
            .iter_mut()
            .find(|f| f.id == id)
        {
            fence.holders = holders;
        }
        id
    }

    /// Shuts the holders a fence let in out as well (see
    /// `raise_memory_lock_fence_letting_holders`) and waits for operations already past
    /// the check; returns true if no in-memory lock lies behind it then, which stays so.
    pub fn close_memory_lock_fence(&self, id: u64) -> bool {
        let range = {
            let mut fences = self.memory_lock_fences.lock();
            let Some(fence) = fences.ranges.iter_mut().find(|f| f.id == id) else {
                return false;
            };
            fence.holders.clear();
            (fence.start.clone(), fence.end.clone())
        };
        drop(self.memory_lock_ops.write());
        !self.has_memory_locks_in(&range.0, &range.1)
    }

    /// Ends the fence `raise_memory_lock_fence` returned `id` for.
    pub fn lift_memory_lock_fence(&self, id: u64) {
        self.memory_lock_fences
            .lock()
            .ranges
            .retain(|fence| fence.id != id);
    }

    /// Fails (retryably) if one of `encoded` lies behind the fence and holds no in-memory
    /// lock yet, unless the fence lets transaction `start_ts` in. Callers hold
    /// `memory_lock_ops` shared until they have written their locks.
    fn check_memory_lock_fence(
        &self,
        encoded: &[Vec<u8>],
        start_ts: Timestamp,
    ) -> Result<(), MvccError> {
        // Keys already locked in memory are on their way out (the split waits for them),
        // so their transactions may go on converting them (prewrite).
        let fences = self.memory_lock_fences.lock();
        if fences.ranges.iter().any(|f| {
            !f.holders.contains(&start_ts)
                && encoded.iter().any(|k| {
                    k >= &f.start
                        && (f.end.is_empty() || k < &f.end)
                        && !self.memory.lock().contains_key(k)
                })
        }) {
            return Err(MvccError::Storage(StorageError::Unavailable(
                "the region is splitting at this key; retry shortly".into(),
            )));
        }
        Ok(())
    }

    /// Writes a batch, visible at once but not yet durable: callers that need durability
    /// release their latches and then pass the ticket to `sync_through`. Lock CF
    /// operations are routed: pessimistic locks go to memory, the others to disk, keeping
    /// the locked-key set a superset of the lock CF's keys. Callers hold the latches of
    /// every key in the batch.
    pub(crate) fn apply(&self, batch: WriteBatch) -> Result<DurabilityTicket, MvccError> {
        let mut staged = self.stage(batch)?;
        let ticket = self.engine.append(std::mem::take(&mut staged.disk))?;
        self.finish(staged);
        Ok(ticket)
    }

    /// The first half of `apply`: routes `batch` and adds the keys of new disk locks to the
    /// locked-key set (before they are written, so the set stays a superset).
    fn stage(&self, batch: WriteBatch) -> Result<Staged, MvccError> {
        let mut staged = Staged::default();
        let mut added = Vec::new();
        let mut memory_put_bytes = 0usize;
        for op in batch.into_ops() {
            match op {
                WriteOp::Put {
                    cf: Cf::Lock,
                    key,
                    value,
                } => {
                    let lock = Lock::from_bytes(&value)?;
                    // A pessimistic lock goes to memory unless the budget is spent or the
                    // key's lock is on disk (which this one must replace there).
                    let mut in_memory = false;
                    if lock.kind.is_pessimistic() {
                        let on_disk = self.locked.read().contains(&key);
                        let bytes = lock_bytes(key.len(), &lock);
                        in_memory = !on_disk && self.memory.lock().admits(memory_put_bytes + bytes);
                        if in_memory {
                            memory_put_bytes += bytes;
                        }
                    }
                    if in_memory {
                        staged.memory_put.push((key, lock));
                    } else {
                        staged.memory_delete.push(key.clone());
                        added.push(key.clone());
                        staged.disk.put(Cf::Lock, key, value);
                    }
                }
                WriteOp::Delete { cf: Cf::Lock, key } => {
                    staged.memory_delete.push(key.clone());
                    if self.locked.read().contains(&key) {
                        staged.removed.push(key.clone());
                        staged.disk.delete(Cf::Lock, key);
                    }
                }
                WriteOp::Put { cf, key, value } => staged.disk.put(cf, key, value),
                WriteOp::Delete { cf, key } => staged.disk.delete(cf, key),
            }
        }
        if !added.is_empty() {
            self.locked.write().extend(added);
        }
        Ok(staged)
    }

    /// The second half of `apply`, once the disk batch is written: the locked-key set
    /// loses the keys whose locks were deleted, and the in-memory locks change.
    fn finish(&self, staged: Staged) {
        debug_assert!(staged.disk.is_empty(), "the disk batch was written first");
        if !staged.removed.is_empty() {
            let mut locked = self.locked.write();
            for key in &staged.removed {
                locked.remove(key);
            }
        }
        self.update_memory_locks(staged.memory_put, &staged.memory_delete);
    }

    fn update_memory_locks(&self, put: Vec<(Vec<u8>, Lock)>, delete: &[Vec<u8>]) {
        if put.is_empty() && delete.is_empty() {
            return;
        }
        let mut memory = self.memory.lock();
        let before = memory.len();
        for key in delete {
            memory.remove(key);
        }
        if memory.len() < before {
            self.memory_released.notify_all();
        }
        for (key, lock) in put {
            memory.insert(key, lock);
        }
    }

    /// Waits until the batch of `ticket` is durable. Called without latches: the batch is
    /// already visible, and the journal's order makes every later batch durable only
    /// after this one, so nothing that builds on it can outlive it in a crash.
    pub fn sync_through(&self, ticket: DurabilityTicket) -> Result<(), MvccError> {
        self.engine.sync_through(ticket)?;
        Ok(())
    }

    fn may_be_locked(&self, start: &[u8], end: &[u8]) -> bool {
        let locked = self.locked.read();
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        locked
            .range::<[u8], _>((Bound::Included(start), upper))
            .next()
            .is_some()
    }

    /// True if a lock held only in memory (pessimistic or volatile) lies in the encoded key
    /// range `[start, end)` (empty end: unbounded). A region must not split such keys
    /// off: the new region's MVCC would not know those locks.
    pub fn has_memory_locks_in(&self, start: &[u8], end: &[u8]) -> bool {
        any_lock_in(&self.memory.lock(), start, end)
    }

    /// Waits up to `timeout` until no in-memory lock lies in `[start, end)` (see
    /// `has_memory_locks_in`); true if none does. With a fence raised over the range, no
    /// new one appears, so this waits only for transactions already holding them.
    pub fn wait_memory_locks_gone(&self, start: &[u8], end: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut memory = self.memory.lock();
        loop {
            if !any_lock_in(&memory, start, end) {
                return true;
            }
            if self
                .memory_released
                .wait_until(&mut memory, deadline)
                .timed_out()
            {
                return false;
            }
        }
    }

    /// The engine underneath.
    pub fn engine(&self) -> &EngineRef {
        &self.engine
    }

    /// The GC safe point: reads below it fail with `SnapshotTooOld`.
    pub fn safe_point(&self) -> Timestamp {
        Timestamp(self.safe_point.load(Ordering::Acquire))
    }

    /// Raises the safe point to `ts` (never lowers it). GC raises it before it removes any
    /// version below it, so later reads below it fail rather than miss versions. (The
    /// safe point's owner keeps it below every open transaction's snapshot, so a read
    /// running while versions go is one whose node lost its lease.)
    pub fn raise_safe_point(&self, ts: Timestamp) {
        self.safe_point.fetch_max(ts.0, Ordering::AcqRel);
    }

    fn check_read_ts(&self, read_ts: Timestamp) -> Result<(), MvccError> {
        let safe_point = self.safe_point();
        if read_ts < safe_point {
            return Err(MvccError::SnapshotTooOld {
                read_ts,
                safe_point,
            });
        }
        Ok(())
    }

    /// The lock on `key`, if any.
    pub fn lock_of(&self, key: &[u8]) -> Result<Option<Lock>, MvccError> {
        self.load_lock(&encode_user_key(key))
    }

    pub(crate) fn load_lock(&self, ek: &[u8]) -> Result<Option<Lock>, MvccError> {
        if !self.locked.read().contains(ek) {
            return Ok(self.memory.lock().get(ek).cloned());
        }
        match self.engine.get(Cf::Lock, ek)? {
            Some(bytes) => Ok(Some(Lock::from_bytes(&bytes)?)),
            None => Ok(self.memory.lock().get(ek).cloned()),
        }
    }

    /// Write records of `ek` with commit_ts <= `ts`, newest first.
    fn writes_at_or_before<'a>(
        &'a self,
        ek: &[u8],
        ts: Timestamp,
    ) -> impl Iterator<Item = Result<(Timestamp, Write), MvccError>> + 'a {
        let start = versioned_key(ek, ts);
        let end = prefix_end(ek);
        let ek_len = ek.len();
        self.engine
            .scan(Cf::Write, &start, &end, false)
            .map(move |item| {
                let (key, value) = item?;
                if key.len() != ek_len + 8 {
                    return Err(MvccError::Corrupt("write key length".into()));
                }
                let mut ts_bytes = &key[ek_len..];
                let commit_ts = flotilla_codec::decode_u64_desc(&mut ts_bytes)
                    .map_err(|e| MvccError::Corrupt(e.to_string()))?;
                Ok((Timestamp(commit_ts), Write::from_bytes(&value)?))
            })
    }

    fn value_of(&self, ek: &[u8], write: Write) -> Result<Vec<u8>, MvccError> {
        match write.short_value {
            Some(v) => Ok(v),
            None => self
                .engine
                .get(Cf::Default, &versioned_key(ek, write.start_ts))?
                .ok_or_else(|| MvccError::Corrupt("missing value for committed write".into())),
        }
    }

    /// The newest data-changing commit of `ek` as recorded in the `latest` CF.
    pub(crate) fn latest(&self, ek: &[u8]) -> Result<Option<(Timestamp, Write)>, MvccError> {
        match self.engine.get(Cf::Latest, ek)? {
            Some(bytes) if bytes.len() >= 8 => {
                let commit_ts = Timestamp(u64::from_be_bytes(
                    bytes[..8].try_into().expect("length checked"),
                ));
                Ok(Some((commit_ts, Write::from_bytes(&bytes[8..])?)))
            }
            Some(_) => Err(MvccError::Corrupt("latest record length".into())),
            None => Ok(None),
        }
    }

    /// Records `write` at `commit_ts` as the newest data change of `ek`.
    fn put_latest(batch: &mut WriteBatch, ek: &[u8], commit_ts: Timestamp, write: &Write) {
        let mut value = commit_ts.0.to_be_bytes().to_vec();
        value.extend_from_slice(&write.to_bytes());
        batch.put(Cf::Latest, ek.to_vec(), value);
    }

    /// The committed value visible at `ts`, ignoring locks.
    fn read_committed(&self, ek: &[u8], ts: Timestamp) -> Result<Option<Vec<u8>>, MvccError> {
        // The common case, a read of the newest version, is one get.
        if let Some((commit_ts, write)) = self.latest(ek)?
            && commit_ts <= ts
        {
            return match write.kind {
                WriteKind::Put => self.value_of(ek, write).map(Some),
                _ => Ok(None),
            };
        }
        for item in self.writes_at_or_before(ek, ts) {
            let (_, write) = item?;
            match write.kind {
                WriteKind::Put => return self.value_of(ek, write).map(Some),
                WriteKind::Delete => return Ok(None),
                WriteKind::Lock | WriteKind::Rollback => continue,
            }
        }
        Ok(None)
    }

    /// The newest record that changed data (Put or Delete), with its commit_ts.
    fn newest_data_write(&self, ek: &[u8]) -> Result<Option<(Timestamp, Write)>, MvccError> {
        // Every data-changing commit updates `latest` in its own batch, so when it has no
        // entry the key has never been written.
        self.latest(ek)
    }

    /// The commit or rollback record of transaction `start_ts` on `ek`, if any.
    fn txn_record(
        &self,
        ek: &[u8],
        start_ts: Timestamp,
    ) -> Result<Option<(Timestamp, Write)>, MvccError> {
        for item in self.writes_at_or_before(ek, Timestamp::MAX) {
            let (commit_ts, write) = item?;
            if commit_ts < start_ts {
                break;
            }
            if write.start_ts == start_ts {
                return Ok(Some((commit_ts, write)));
            }
        }
        Ok(None)
    }

    /// Whether transaction `start_ts` has a rollback record on `ek`. Rollback records sit at
    /// the transaction's own start_ts, which no commit can share (both come from one TSO),
    /// so this is one point read rather than a scan of the key's history.
    fn rolled_back(&self, ek: &[u8], start_ts: Timestamp) -> Result<bool, MvccError> {
        match self.engine.get(Cf::Write, &versioned_key(ek, start_ts))? {
            Some(bytes) => {
                let write = Write::from_bytes(&bytes)?;
                Ok(write.kind == WriteKind::Rollback && write.start_ts == start_ts)
            }
            None => Ok(false),
        }
    }

    /// The first in-memory lock in `[start, end)` that blocks a reader at `read_ts`.
    fn memory_blocker(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: Timestamp,
        reader: Option<Timestamp>,
    ) -> Option<(Vec<u8>, Lock)> {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        self.memory
            .lock()
            .range::<[u8], _>((Bound::Included(start), upper))
            .find(|(_, lock)| Self::blocks_reader(lock, read_ts, reader))
            .map(|(k, l)| (k.clone(), l.clone()))
    }

    fn blocks_reader(lock: &Lock, read_ts: Timestamp, reader: Option<Timestamp>) -> bool {
        // Only a prewritten change may commit below a reader. Pessimistic and shared locks
        // are taken before any value is known, and a lock-only one changes nothing.
        matches!(lock.kind, LockKind::Put | LockKind::Delete)
            && lock.start_ts <= read_ts
            && Some(lock.start_ts) != reader
    }

    /// Transaction `start_ts`'s lock on the key encoded as `ek`, with its `lock` CF key:
    /// the key's own lock if it is that transaction's, or else its shared lock there.
    fn own_lock(
        &self,
        ek: &[u8],
        start_ts: Timestamp,
    ) -> Result<Option<(Vec<u8>, Lock)>, MvccError> {
        if let Some(lock) = self.load_lock(ek)?
            && lock.start_ts == start_ts
        {
            return Ok(Some((ek.to_vec(), lock)));
        }
        let slot = shared_lock_key(ek, start_ts);
        Ok(self.load_lock(&slot)?.map(|lock| (slot, lock)))
    }

    /// Whether another transaction's lock on a key (not a share of it) lets a key-only
    /// share join it: it is `key_only` and keeps the key, whatever its transaction does.
    fn keeps_key(lock: &Lock) -> bool {
        lock.key_only
            && matches!(
                lock.kind,
                LockKind::Pessimistic | LockKind::Put | LockKind::Lock
            )
    }

    /// Refuses (with the first holder, to wait for) where another transaction shares the
    /// key encoded as `ek`.
    fn refuse_others_shares(
        &self,
        key: &[u8],
        ek: &[u8],
        start_ts: Timestamp,
    ) -> Result<(), MvccError> {
        match self
            .shared_locks(ek)?
            .into_iter()
            .find(|(_, lock)| lock.start_ts != start_ts)
        {
            Some((_, lock)) => Err(MvccError::KeyIsLocked(lock_info(key, &lock))),
            None => Ok(()),
        }
    }

    /// The shared locks on the key encoded as `ek`, each with its `lock` CF key. Both
    /// places a lock may be are probed in memory first, so a key nobody shares costs no
    /// read of the engine.
    fn shared_locks(&self, ek: &[u8]) -> Result<Vec<(Vec<u8>, Lock)>, MvccError> {
        let (start, end) = shared_lock_range(ek);
        let mut out: Vec<(Vec<u8>, Lock)> = self
            .memory
            .lock()
            .range(start.clone()..end.clone())
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        let on_disk: Vec<Vec<u8>> = self.locked.read().range(start..end).cloned().collect();
        for slot in on_disk {
            if out.iter().any(|(k, _)| *k == slot) {
                continue;
            }
            if let Some(bytes) = self.engine.get(Cf::Lock, &slot)? {
                out.push((slot, Lock::from_bytes(&bytes)?));
            }
        }
        Ok(out)
    }

    /// True while transaction `start_ts` holds a lock on `key`, its own or a share of it:
    /// what a waiter for that lock watches.
    pub fn is_held_by(&self, key: &[u8], start_ts: Timestamp) -> Result<bool, MvccError> {
        Ok(self.own_lock(&encode_user_key(key), start_ts)?.is_some())
    }

    /// Reads `key` at `read_ts`. `reader` is the reading transaction's start_ts, whose own
    /// locks never block it. Fails with `KeyIsLocked` if a transaction that may commit
    /// before `read_ts` holds a lock on the key.
    pub fn get(
        &self,
        key: &[u8],
        read_ts: Timestamp,
        reader: Option<Timestamp>,
    ) -> Result<Option<Vec<u8>>, MvccError> {
        self.check_read_ts(read_ts)?;
        let ek = encode_user_key(key);
        // The lock is checked before the write records: a writer prewrites before it takes
        // its commit_ts, so a commit below read_ts that we could miss leaves a lock here.
        if let Some(lock) = self.load_lock(&ek)?
            && Self::blocks_reader(&lock, read_ts, reader)
        {
            return Err(MvccError::KeyIsLocked(lock_info(key, &lock)));
        }
        self.read_committed(&ek, read_ts)
    }

    /// Scans at most `limit` visible pairs in `[start, end)` (empty end = unbounded) at
    /// `read_ts`, in key order. Fails with `KeyIsLocked` as `get` does, for any blocking
    /// lock in the range.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: Timestamp,
        limit: usize,
        reader: Option<Timestamp>,
    ) -> Result<Vec<KvPair>, MvccError> {
        self.scan_bounded(start, end, read_ts, limit, usize::MAX, reader)
    }

    /// `scan`, stopping also once the pairs found hold `bytes_max` bytes of keys and values
    /// (at least one pair is returned when any is visible): a caller that must bound its
    /// answer goes on from after the last key.
    pub fn scan_bounded(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: Timestamp,
        limit: usize,
        bytes_max: usize,
        reader: Option<Timestamp>,
    ) -> Result<Vec<KvPair>, MvccError> {
        self.check_read_ts(read_ts)?;
        let (es, ee) = encode_range(start, end);
        let lock_scan = if self.may_be_locked(&es, &ee) {
            self.engine.scan(Cf::Lock, &es, &ee, false)
        } else {
            Box::new(std::iter::empty())
        };
        for item in lock_scan {
            let (lock_key, bytes) = item?;
            let lock = Lock::from_bytes(&bytes)?;
            if Self::blocks_reader(&lock, read_ts, reader) {
                return Err(MvccError::KeyIsLocked(lock_info(
                    &decode_user_key(&lock_key)?,
                    &lock,
                )));
            }
        }
        if let Some((lock_key, lock)) = self.memory_blocker(&es, &ee, read_ts, reader) {
            return Err(MvccError::KeyIsLocked(lock_info(
                &decode_user_key(&lock_key)?,
                &lock,
            )));
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut decided: Option<Vec<u8>> = None;
        for item in self.engine.scan(Cf::Write, &es, &ee, false) {
            if out.len() >= limit || bytes >= bytes_max {
                break;
            }
            let (key, value) = item?;
            if key.len() < 8 {
                return Err(MvccError::Corrupt("write key length".into()));
            }
            let ek = &key[..key.len() - 8];
            if decided.as_deref() == Some(ek) {
                continue;
            }
            let (user_key, commit_ts) = decode_versioned_key(&key)?;
            if commit_ts > read_ts {
                continue;
            }
            let write = Write::from_bytes(&value)?;
            match write.kind {
                WriteKind::Lock | WriteKind::Rollback => continue,
                WriteKind::Delete => {}
                WriteKind::Put => {
                    let value = self.value_of(ek, write)?;
                    bytes = bytes.saturating_add(user_key.len() + value.len());
                    out.push((user_key, value));
                }
            }
            decided = Some(ek.to_vec());
        }
        Ok(out)
    }

    /// Takes pessimistic locks on `keys` for transaction `start_ts`, checking each against
    /// versions committed after `for_update_ts`. `should_not_exist` keys must hold no
    /// committed value. All keys are locked or none. Returns the newest committed value of
    /// each key when `need_values`.
    #[allow(clippy::too_many_arguments)]
    pub fn acquire_pessimistic_lock(
        &self,
        keys: &[(Vec<u8>, bool)],
        primary: &[u8],
        start_ts: Timestamp,
        for_update_ts: Timestamp,
        ttl_ms: u64,
        need_values: bool,
    ) -> Result<Vec<Option<Vec<u8>>>, MvccError> {
        self.lock_keys(&LockKeys {
            keys,
            primary,
            start_ts,
            for_update_ts,
            ttl_ms,
            need_values,
            shared: false,
            key_only: false,
        })
    }

    /// `acquire_pessimistic_lock`, the request as one value.
    pub fn lock_keys(&self, request: &LockKeys<'_>) -> Result<Vec<Option<Vec<u8>>>, MvccError> {
        Ok(self
            .lock_keys_waiting(request, Waiting::Block)?
            .expect("a call that may block always finishes"))
    }

    /// `lock_keys` for a caller that must not block (an async task, whose thread may be
    /// the one the holder of a latch needs to finish) and that has already confirmed, by
    /// a read index, that this MVCC's leader is current and has applied every committed
    /// write: the locks go to memory without a call to the engine. Returns `Ok(None)`,
    /// having changed nothing, when that is not possible now: another operation holds a
    /// latch of these keys or is raising a fence, or a key already holds this
    /// transaction's lock on disk (raising its `for_update_ts` is a write), or the budget
    /// for in-memory locks is spent. The caller then uses `lock_keys`, which writes them
    /// to the lock CF where they cannot live in memory.
    pub fn try_lock_keys_in_memory(
        &self,
        request: &LockKeys<'_>,
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, MvccError> {
        self.lock_keys_waiting(request, Waiting::Never)
    }

    /// Both lock calls; `Ok(None)` only with `Waiting::Never` (see
    /// `try_lock_keys_in_memory`).
    fn lock_keys_waiting(
        &self,
        request: &LockKeys<'_>,
        waiting: Waiting,
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, MvccError> {
        let LockKeys {
            keys,
            primary,
            start_ts,
            for_update_ts,
            ttl_ms,
            need_values,
            shared,
            key_only,
        } = *request;
        let encoded: Vec<Vec<u8>> = keys.iter().map(|(k, _)| encode_user_key(k)).collect();
        let Some((_latch, _ops)) = self.enter(&encoded, true, start_ts, waiting)? else {
            return Ok(None);
        };
        let mut batch = WriteBatch::new();
        let mut in_memory = Vec::with_capacity(keys.len());
        // This transaction's shared locks that its exclusive ones replace.
        let mut replaced = Vec::new();
        let mut values = Vec::with_capacity(if need_values { keys.len() } else { 0 });
        for ((key, should_not_exist), ek) in keys.iter().zip(&encoded) {
            // What the lock records as its `for_update_ts` (see `LockKeys::for_update_ts`).
            let mut locked_at = for_update_ts;
            let main = self.load_lock(ek)?;
            // Another transaction's lock on the key itself: only a key-only share joins
            // it, and only where that lock keeps the key.
            let joins_main = match &main {
                Some(lock) if lock.start_ts != start_ts => {
                    if !(shared && key_only && Self::keeps_key(lock)) {
                        return Err(MvccError::KeyIsLocked(lock_info(key, lock)));
                    }
                    true
                }
                _ => false,
            };
            // Where the lock goes, this transaction's lock already there or replaced, and
            // whether that lock kept every other transaction from committing to the key
            // since it was checked (a key-only share does not).
            let (slot, existing, guarded) = match main {
                Some(lock) if !joins_main => {
                    if !shared && !key_only && lock.key_only {
                        // NO KEY UPDATE made full: the key-only sharers it let in go first.
                        self.refuse_others_shares(key, ek, start_ts)?;
                    }
                    (ek.clone(), Some(lock), true)
                }
                _ if shared => {
                    let slot = shared_lock_key(ek, start_ts);
                    let existing = self.load_lock(&slot)?;
                    let guarded = existing.as_ref().is_some_and(|l| !l.key_only);
                    (slot, existing, guarded)
                }
                _ => {
                    let mut own = None;
                    let mut guarded = false;
                    for (slot, lock) in self.shared_locks(ek)? {
                        if lock.start_ts != start_ts {
                            if !(key_only && lock.key_only) {
                                return Err(MvccError::KeyIsLocked(lock_info(key, &lock)));
                            }
                            continue;
                        }
                        replaced.push(slot);
                        guarded = !lock.key_only;
                        own = Some(Lock {
                            kind: LockKind::Pessimistic,
                            key_only,
                            ..lock
                        });
                    }
                    (ek.clone(), own, guarded)
                }
            };
            if let Some(lock) = &existing
                && guarded
            {
                if waiting == Waiting::Never && !lock.kind.is_pessimistic() {
                    return Ok(None);
                }
            } else {
                // Only a rollback matters here: a transaction still taking locks has not
                // committed.
                if existing.is_none() && self.rolled_back(ek, start_ts)? {
                    return Err(MvccError::TxnLockNotFound {
                        key: key.clone(),
                        start_ts,
                    });
                }
                let newest = self.newest_data_write(ek)?;
                if let Some((commit_ts, write)) = &newest
                    && *commit_ts > for_update_ts
                    // A key-only share is about the key's existence: a newer value of it
                    // is no conflict (PostgreSQL's FOR KEY SHARE of a row updated since
                    // the snapshot), a deletion is.
                    && !(shared && key_only && write.kind == WriteKind::Put)
                {
                    return Err(MvccError::WriteConflict {
                        key: key.clone(),
                        for_update_ts,
                        conflict_commit_ts: *commit_ts,
                    });
                }
                if for_update_ts == Timestamp::MAX {
                    let newest = newest.map(|(commit_ts, _)| commit_ts);
                    locked_at = newest.unwrap_or(start_ts).max(start_ts);
                }
            }
            let current = if *should_not_exist || need_values {
                self.read_committed(ek, Timestamp::MAX)?
            } else {
                None
            };
            if *should_not_exist && current.is_some() {
                return Err(MvccError::AlreadyExists { key: key.clone() });
            }
            if need_values {
                values.push(current);
            }
            let lock = match existing {
                Some(mut lock) => {
                    // Already ours: keep its kind (it may be prewritten), raise
                    // for_update_ts (checked above unless nobody can have committed
                    // since it was taken), and make it full if asked.
                    if for_update_ts != Timestamp::MAX {
                        lock.for_update_ts = lock.for_update_ts.max(for_update_ts);
                    }
                    // A share asked of a key held exclusively leaves that lock as it is:
                    // even a no-key one keeps out all a share does.
                    if !shared || slot != *ek {
                        lock.key_only &= key_only;
                    }
                    lock
                }
                None => Lock {
                    kind: if shared {
                        LockKind::Shared
                    } else {
                        LockKind::Pessimistic
                    },
                    primary: primary.to_vec(),
                    start_ts,
                    for_update_ts: locked_at,
                    ttl_ms,
                    short_value: None,
                    key_only,
                },
            };
            match waiting {
                Waiting::Block => batch.put(Cf::Lock, slot, lock.to_bytes()),
                Waiting::Never => in_memory.push((slot, lock)),
            }
        }
        // Pessimistic locks need not be durable: if this store crashes, the transaction's
        // coordinator finds them gone at prewrite and the transaction fails cleanly. Where
        // the budget for in-memory locks is spent, or a key's lock is on disk already,
        // the blocking path writes them to the lock CF instead (see `stage`).
        if waiting == Waiting::Never {
            let bytes: usize = in_memory.iter().map(|(k, l)| lock_bytes(k.len(), l)).sum();
            let on_disk = {
                let locked = self.locked.read();
                in_memory.iter().any(|(k, _)| locked.contains(k))
                    || replaced.iter().any(|k| locked.contains(k))
            };
            if on_disk || !self.memory.lock().admits(bytes) {
                return Ok(None);
            }
        }
        match waiting {
            Waiting::Block => {
                for slot in replaced {
                    batch.delete(Cf::Lock, slot);
                }
                let _ = self.apply(batch)?;
            }
            Waiting::Never => self.update_memory_locks(in_memory, &replaced),
        }
        Ok(Some(values))
    }

    /// Releases the pessimistic and shared locks of `start_ts` on `keys` (statement or
    /// transaction rollback before prewrite). Prewritten locks and other transactions'
    /// locks stay.
    pub fn pessimistic_rollback(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
    ) -> Result<(), MvccError> {
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_user_key(k)).collect();
        let _latch = self.latches.acquire(&encoded);
        let mut batch = WriteBatch::new();
        for ek in &encoded {
            if let Some((slot, lock)) = self.own_lock(ek, start_ts)?
                && lock.kind.is_pessimistic()
            {
                batch.delete(Cf::Lock, slot);
            }
        }
        let _ = self.apply(batch)?;
        Ok(())
    }

    /// Prewrites `mutations` for transaction `start_ts`, checking each key as its
    /// `KeyCheck` says.
    pub fn prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
        placement: PrewriteLocks,
    ) -> Result<(), MvccError> {
        let (pending, _ops) = self
            .prepare_prewrite(
                mutations,
                primary,
                start_ts,
                ttl_ms,
                placement,
                Waiting::Block,
            )?
            .expect("a call that may block always prepares");
        // `_ops` (volatile locks) is released after the locks are in.
        self.write_now(pending)
    }

    /// `prewrite` of durable locks for a caller that must not block (see
    /// `PendingWrite`): `Ok(None)`, having changed nothing, when another operation holds a
    /// latch of these keys; the caller then uses `prewrite`. (Volatile locks are not
    /// prepared this way: adding them must hold off a fence going up until they are in.)
    pub fn try_prepare_prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<Option<PendingWrite<'_>>, MvccError> {
        self.prepare_prewrite(
            mutations,
            primary,
            start_ts,
            ttl_ms,
            PrewriteLocks::Durable,
            Waiting::Never,
        )
        .map(|prepared| prepared.map(|(pending, _)| pending))
    }

    /// `prewrite` of volatile locks for a caller that must not block and that has
    /// already confirmed, by a read index, that this MVCC's leader is current and has
    /// applied every committed write (as for `try_lock_keys_in_memory`): volatile locks
    /// write nothing to the engine, so they go to memory here without a call to it.
    /// `Ok(false)`, having changed nothing, when another operation holds a latch of these
    /// keys or is raising a fence; the caller then uses `prewrite`.
    pub fn try_prewrite_in_memory(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<bool, MvccError> {
        let Some((pending, _ops)) = self.prepare_prewrite(
            mutations,
            primary,
            start_ts,
            ttl_ms,
            PrewriteLocks::Volatile,
            Waiting::Never,
        )?
        else {
            return Ok(false);
        };
        if !pending.staged.disk.is_empty() {
            // Not expected (volatile locks carry their values), but should a prewrite
            // here ever need the engine, the caller's blocking path writes it; dropping
            // `pending` changes nothing, as a failed append.
            return Ok(false);
        }
        pending.finish();
        Ok(true)
    }

    /// Writes a prepared write through the engine now (blocking until it is written).
    fn write_now(&self, mut pending: PendingWrite<'_>) -> Result<(), MvccError> {
        let _ = self.engine.append(pending.take_batch())?;
        pending.finish();
        Ok(())
    }

    /// Takes the latches of `encoded` (and, when `fenced`, the fence lock, then checks the
    /// fence), waiting or not as `waiting` says: `Ok(None)` when it would have to wait.
    fn enter(
        &self,
        encoded: &[Vec<u8>],
        fenced: bool,
        start_ts: Timestamp,
        waiting: Waiting,
    ) -> Result<Option<(LatchGuard<'_>, Option<FenceOps<'_>>)>, MvccError> {
        let latch = match waiting {
            Waiting::Block => self.latches.acquire(encoded),
            Waiting::Never => match self.latches.try_acquire(encoded) {
                Some(latch) => latch,
                None => return Ok(None),
            },
        };
        if !fenced {
            return Ok(Some((latch, None)));
        }
        let ops = match waiting {
            Waiting::Block => self.memory_lock_ops.read(),
            Waiting::Never => match self.memory_lock_ops.try_read() {
                Some(ops) => ops,
                None => return Ok(None),
            },
        };
        self.check_memory_lock_fence(encoded, start_ts)?;
        Ok(Some((latch, Some(ops))))
    }

    fn prepare_prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
        placement: PrewriteLocks,
        waiting: Waiting,
    ) -> Result<Option<(PendingWrite<'_>, Option<FenceOps<'_>>)>, MvccError> {
        let encoded: Vec<Vec<u8>> = mutations.iter().map(|m| encode_user_key(&m.key)).collect();
        let fenced = placement == PrewriteLocks::Volatile;
        let Some((latch, ops)) = self.enter(&encoded, fenced, start_ts, waiting)? else {
            return Ok(None);
        };
        let mut batch = WriteBatch::new();
        let mut volatile = Vec::new();
        let mut volatile_bytes = 0usize;
        for (mutation, ek) in mutations.iter().zip(&encoded) {
            if mutation.check == KeyCheck::SharedLocked {
                self.prewrite_shared(&mut batch, mutation, ek, start_ts, ttl_ms)?;
                continue;
            }
            let existing = self.load_lock(ek)?;
            // Others' shared locks keep the key from changing (a key-only one, from going);
            // this transaction's own goes, as the change (or exclusive lock) prewritten
            // here replaces it.
            let deletes = matches!(mutation.op, MutationOp::Delete);
            for (slot, lock) in self.shared_locks(ek)? {
                if lock.start_ts != start_ts {
                    if lock.key_only && !deletes {
                        continue;
                    }
                    return Err(MvccError::KeyIsLocked(lock_info(&mutation.key, &lock)));
                }
                batch.delete(Cf::Lock, slot);
            }
            // A key whose lock is on disk (its pessimistic lock went there), or one past
            // the budget for in-memory locks, gets a durable lock. Mixing them is safe: a
            // crash leaves the durable ones to be resolved, as any transaction's.
            let placement = match placement {
                PrewriteLocks::Volatile => {
                    let value = match &mutation.op {
                        MutationOp::Put(v) => v.len(),
                        _ => 0,
                    };
                    let on_disk = self.locked.read().contains(ek);
                    // The in-memory lock this one replaces (its pessimistic lock) is
                    // counted already.
                    let replaced = match &existing {
                        Some(lock) if !on_disk => lock_bytes(ek.len(), lock),
                        _ => 0,
                    };
                    let grows =
                        entry_bytes(ek.len(), primary.len(), value).saturating_sub(replaced);
                    if !on_disk && self.memory.lock().admits(volatile_bytes + grows) {
                        volatile_bytes += grows;
                        PrewriteLocks::Volatile
                    } else {
                        PrewriteLocks::Durable
                    }
                }
                PrewriteLocks::Durable => PrewriteLocks::Durable,
            };
            match &existing {
                Some(lock) if lock.start_ts != start_ts => {
                    return Err(MvccError::KeyIsLocked(lock_info(&mutation.key, lock)));
                }
                Some(_) => {}
                None => {
                    // The common case, a fresh key nobody changed since start_ts that this
                    // transaction has not rolled back, needs two point reads. Anything else
                    // (including a retried prewrite of a committed transaction, whose own
                    // commit is then newer than start_ts) takes the full check below.
                    let newest = self.newest_data_write(ek)?;
                    if mutation.check != KeyCheck::Locked
                        && newest
                            .as_ref()
                            .is_none_or(|(commit_ts, _)| *commit_ts < start_ts)
                        && !matches!(mutation.op, MutationOp::Lock)
                        && !self.rolled_back(ek, start_ts)?
                    {
                        // Fall through to writing the lock.
                    } else if let Some((_, write)) = self.txn_record(ek, start_ts)? {
                        if write.kind == WriteKind::Rollback {
                            return Err(MvccError::TxnLockNotFound {
                                key: mutation.key.clone(),
                                start_ts,
                            });
                        }
                        // Already committed: a retried prewrite after commit is a no-op.
                        continue;
                    }
                    if mutation.check == KeyCheck::Locked {
                        return Err(MvccError::TxnLockNotFound {
                            key: mutation.key.clone(),
                            start_ts,
                        });
                    }
                    if let Some((commit_ts, _)) = newest
                        && commit_ts >= start_ts
                        && mutation.check == KeyCheck::Snapshot
                    {
                        return Err(MvccError::WriteConflict {
                            key: mutation.key.clone(),
                            for_update_ts: start_ts,
                            conflict_commit_ts: commit_ts,
                        });
                    }
                }
            }
            let (kind, short_value) = match &mutation.op {
                // A volatile lock carries its value whatever its length; commit moves a long
                // one to the default CF.
                MutationOp::Put(value) if placement == PrewriteLocks::Volatile => {
                    (LockKind::Put, Some(value.clone()))
                }
                MutationOp::Put(value) if value.len() <= SHORT_VALUE_MAX_BYTES => {
                    (LockKind::Put, Some(value.clone()))
                }
                MutationOp::Put(value) => {
                    batch.put(Cf::Default, versioned_key(ek, start_ts), value.clone());
                    (LockKind::Put, None)
                }
                MutationOp::Delete => (LockKind::Delete, None),
                MutationOp::Lock => (LockKind::Lock, None),
            };
            let lock = Lock {
                kind,
                primary: primary.to_vec(),
                start_ts,
                for_update_ts: existing
                    .as_ref()
                    .map(|l| l.for_update_ts)
                    .unwrap_or(start_ts),
                ttl_ms: existing
                    .as_ref()
                    .map(|l| l.ttl_ms.max(ttl_ms))
                    .unwrap_or(ttl_ms),
                short_value,
                // A no-key update stays one: key-only sharers still join it.
                key_only: !deletes && existing.as_ref().is_some_and(|l| l.key_only),
            };
            match placement {
                PrewriteLocks::Durable => batch.put(Cf::Lock, ek.clone(), lock.to_bytes()),
                PrewriteLocks::Volatile => volatile.push((ek.clone(), lock)),
            }
        }
        // Not synced: the commit batch comes later in the same journal, and syncing it makes
        // this one durable too.
        let mut staged = self.stage(batch)?;
        // Under the latches, like any lock write, once the batch is written; replaces the
        // pessimistic locks.
        staged.memory_put.extend(volatile);
        let pending = PendingWrite {
            mvcc: self,
            staged,
            _latch: latch,
        };
        Ok(Some((pending, ops)))
    }

    /// Prewrites transaction `start_ts`'s shared lock on `mutation`'s key (encoded as
    /// `ek`), which it must still hold: durably, whatever the placement of its other
    /// locks, since nothing else would show its loss before the commit.
    fn prewrite_shared(
        &self,
        batch: &mut WriteBatch,
        mutation: &Mutation,
        ek: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<(), MvccError> {
        debug_assert_eq!(
            mutation.op,
            MutationOp::Lock,
            "a shared lock changes nothing"
        );
        let slot = shared_lock_key(ek, start_ts);
        match self.load_lock(&slot)? {
            Some(lock) => {
                let kept = Lock {
                    kind: LockKind::SharedPrewritten,
                    ttl_ms: lock.ttl_ms.max(ttl_ms),
                    ..lock
                };
                batch.put(Cf::Lock, slot, kept.to_bytes());
                Ok(())
            }
            None => match self.txn_record(ek, start_ts)? {
                // Already committed: a retried prewrite after commit is a no-op.
                Some((_, write)) if write.kind != WriteKind::Rollback => Ok(()),
                _ => Err(MvccError::TxnLockNotFound {
                    key: mutation.key.clone(),
                    start_ts,
                }),
            },
        }
    }

    fn commit_key(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        ek: &[u8],
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<(), MvccError> {
        match self.own_lock(ek, start_ts)? {
            Some((slot, lock)) => {
                let kind = match lock.kind {
                    LockKind::Put => WriteKind::Put,
                    LockKind::Delete => WriteKind::Delete,
                    // A kept shared lock is recorded as a lock-only write: the fate of a
                    // transaction whose primary it is.
                    LockKind::Lock | LockKind::SharedPrewritten => WriteKind::Lock,
                    // Locked by a statement but never prewritten: nothing to commit; just
                    // release it.
                    LockKind::Pessimistic | LockKind::Shared => {
                        batch.delete(Cf::Lock, slot);
                        return Ok(());
                    }
                };
                let mut short_value = lock.short_value;
                if let Some(value) = short_value.take_if(|v| v.len() > SHORT_VALUE_MAX_BYTES) {
                    // Only a volatile lock carries a long value.
                    batch.put(Cf::Default, versioned_key(ek, start_ts), value);
                }
                let write = Write {
                    kind,
                    start_ts,
                    short_value,
                };
                if matches!(kind, WriteKind::Put | WriteKind::Delete) {
                    Self::put_latest(batch, ek, commit_ts, &write);
                }
                batch.put(Cf::Write, versioned_key(ek, commit_ts), write.to_bytes());
                batch.delete(Cf::Lock, slot);
                Ok(())
            }
            None => match self.txn_record(ek, start_ts)? {
                Some((_, write)) if write.kind != WriteKind::Rollback => Ok(()),
                _ => Err(MvccError::TxnLockNotFound {
                    key: key.to_vec(),
                    start_ts,
                }),
            },
        }
    }

    /// Commits transaction `start_ts` on `keys` at `commit_ts`, durably. Committing a key
    /// twice is harmless; committing a key whose lock was rolled back fails.
    pub fn commit(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<(), MvccError> {
        let ticket = self.commit_visible(keys, start_ts, commit_ts)?;
        self.sync_through(ticket)
    }

    /// The first half of `commit`: writes the commit records and releases the locks, so
    /// the commit is visible and other transactions may lock the keys at once, but it is
    /// not durable (and must not be acknowledged) until `sync_through(ticket)` returns.
    /// Whatever another transaction builds on it is appended later, so it cannot become
    /// durable first: releasing locks early is safe (early lock release).
    pub fn commit_visible(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<DurabilityTicket, MvccError> {
        assert!(commit_ts > start_ts, "commit_ts must follow start_ts");
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_user_key(k)).collect();
        let _latch = self.latches.acquire(&encoded);
        let mut batch = WriteBatch::new();
        for (key, ek) in keys.iter().zip(&encoded) {
            self.commit_key(&mut batch, key, ek, start_ts, commit_ts)?;
        }
        self.apply(batch)
    }

    /// `commit` for a caller that must not block (see `PendingWrite`; the engine's write
    /// is durable once it completes): `Ok(None)`, having changed nothing, when another
    /// operation holds a latch of these keys; the caller then uses `commit`.
    pub fn try_prepare_commit(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<Option<PendingWrite<'_>>, MvccError> {
        assert!(commit_ts > start_ts, "commit_ts must follow start_ts");
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_user_key(k)).collect();
        let Some((latch, _)) = self.enter(&encoded, false, start_ts, Waiting::Never)? else {
            return Ok(None);
        };
        let mut batch = WriteBatch::new();
        for (key, ek) in keys.iter().zip(&encoded) {
            self.commit_key(&mut batch, key, ek, start_ts, commit_ts)?;
        }
        Ok(Some(PendingWrite {
            mvcc: self,
            staged: self.stage(batch)?,
            _latch: latch,
        }))
    }

    /// Writes `entries` as versions committed at `ts`, outside any transaction: an index
    /// backfill's entries for the rows it read at snapshot `ts`. Writing below newer
    /// versions is what makes this safe while others write: a row changed after `ts` was
    /// changed by a transaction that maintained the index itself, and its version of the
    /// entry, newer than `ts`, wins. Durable when it returns.
    ///
    /// A unique entry is checked: `KeyIsLocked` while a transaction holds its key (that
    /// transaction checked the key's absence without this entry), `AlreadyExists` when
    /// another value (another row) holds the key at `ts`, `WriteConflict` when another
    /// value was written after `ts` (the backfill's row may have changed since: read it
    /// again). An equal value already there is left alone. The whole batch is written or
    /// nothing.
    pub fn ingest(&self, entries: &[IngestEntry], ts: Timestamp) -> Result<(), MvccError> {
        let ticket = self.ingest_visible(entries, ts)?;
        self.sync_through(ticket)
    }

    /// The first half of `ingest`, as `commit_visible` is of `commit`.
    pub fn ingest_visible(
        &self,
        entries: &[IngestEntry],
        ts: Timestamp,
    ) -> Result<DurabilityTicket, MvccError> {
        let encoded: Vec<Vec<u8>> = entries.iter().map(|e| encode_user_key(&e.key)).collect();
        let _latch = self.latches.acquire(&encoded);
        let mut batch = WriteBatch::new();
        for (entry, ek) in entries.iter().zip(&encoded) {
            if entry.unique
                && let Some(lock) = self.load_lock(ek)?
            {
                return Err(MvccError::KeyIsLocked(lock_info(&entry.key, &lock)));
            }
            let latest = self.latest(ek)?;
            if entry.unique
                && let Some((commit_ts, write)) = &latest
                && write.kind == WriteKind::Put
            {
                if self.value_of(ek, write.clone())? == entry.value {
                    continue;
                }
                return Err(if *commit_ts <= ts {
                    MvccError::AlreadyExists {
                        key: entry.key.clone(),
                    }
                } else {
                    MvccError::WriteConflict {
                        key: entry.key.clone(),
                        for_update_ts: ts,
                        conflict_commit_ts: *commit_ts,
                    }
                });
            }
            let short_value = if entry.value.len() <= SHORT_VALUE_MAX_BYTES {
                Some(entry.value.clone())
            } else {
                batch.put(Cf::Default, versioned_key(ek, ts), entry.value.clone());
                None
            };
            let write = Write {
                kind: WriteKind::Put,
                start_ts: ts,
                short_value,
            };
            if latest.is_none_or(|(commit_ts, _)| commit_ts < ts) {
                Self::put_latest(&mut batch, ek, ts, &write);
            }
            batch.put(Cf::Write, versioned_key(ek, ts), write.to_bytes());
        }
        self.apply(batch)
    }

    fn rollback_key(
        &self,
        batch: &mut WriteBatch,
        ek: &[u8],
        start_ts: Timestamp,
    ) -> Result<(), MvccError> {
        match self.own_lock(ek, start_ts)? {
            Some((slot, lock)) => {
                batch.delete(Cf::Lock, slot);
                if lock.kind == LockKind::Put && lock.short_value.is_none() {
                    batch.delete(Cf::Default, versioned_key(ek, start_ts));
                }
            }
            None => match self.txn_record(ek, start_ts)? {
                Some((commit_ts, write)) if write.kind != WriteKind::Rollback => {
                    return Err(MvccError::Committed {
                        start_ts,
                        commit_ts,
                    });
                }
                Some(_) => return Ok(()),
                None => {}
            },
        }
        // The rollback record fences off a prewrite of this transaction that arrives late.
        let record = Write {
            kind: WriteKind::Rollback,
            start_ts,
            short_value: None,
        };
        batch.put(Cf::Write, versioned_key(ek, start_ts), record.to_bytes());
        Ok(())
    }

    /// Rolls back transaction `start_ts` on `keys`. Fails with `Committed` if it committed.
    pub fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> Result<(), MvccError> {
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_user_key(k)).collect();
        let _latch = self.latches.acquire(&encoded);
        let mut batch = WriteBatch::new();
        for ek in &encoded {
            self.rollback_key(&mut batch, ek, start_ts)?;
        }
        let _ = self.apply(batch)?;
        Ok(())
    }

    /// Decides the fate of transaction `lock_ts` at its primary key. A lock that has
    /// outlived its TTL at `current_ts` (or any lock, with `force_expire`, used when the
    /// caller knows the coordinator is gone) is rolled back; a missing lock with no record
    /// is fenced with a rollback record or reported, as `missing` says.
    pub fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        current_ts: Timestamp,
        force_expire: bool,
        missing: MissingPrimary,
    ) -> Result<TxnStatus, MvccError> {
        let ek = encode_user_key(primary);
        let _latch = self.latches.acquire(&[&ek]);
        match self.own_lock(&ek, lock_ts)? {
            Some((_, lock)) => {
                if !force_expire && !lock.is_expired(current_ts) {
                    return Ok(TxnStatus::Locked { lock });
                }
            }
            None => match self.txn_record(&ek, lock_ts)? {
                Some((commit_ts, write)) if write.kind != WriteKind::Rollback => {
                    return Ok(TxnStatus::Committed { commit_ts });
                }
                Some(_) => return Ok(TxnStatus::RolledBack),
                None if missing == MissingPrimary::Report => return Ok(TxnStatus::Released),
                None => {}
            },
        }
        let mut batch = WriteBatch::new();
        self.rollback_key(&mut batch, &ek, lock_ts)?;
        let _ = self.apply(batch)?;
        Ok(TxnStatus::RolledBack)
    }

    /// Extends the primary lock's lifetime to `ttl_ms` after its start_ts, so a live but
    /// slow transaction is not rolled back by others. Returns the lock's new TTL.
    pub fn txn_heartbeat(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<u64, MvccError> {
        let ek = encode_user_key(primary);
        let _latch = self.latches.acquire(&[&ek]);
        match self.own_lock(&ek, start_ts)? {
            Some((slot, mut lock)) => {
                if ttl_ms > lock.ttl_ms {
                    lock.ttl_ms = ttl_ms;
                    if self.locked.read().contains(&slot) {
                        let mut batch = WriteBatch::new();
                        batch.put(Cf::Lock, slot, lock.to_bytes());
                        let _ = self.apply(batch)?;
                    } else {
                        // An in-memory lock stays in memory.
                        self.memory.lock().insert(slot, lock.clone());
                    }
                }
                Ok(lock.ttl_ms)
            }
            None => Err(MvccError::TxnLockNotFound {
                key: primary.to_vec(),
                start_ts,
            }),
        }
    }

    /// Commits (with `commit_ts`) or rolls back the locks of `start_ts` on `keys`, once its
    /// fate is known from the primary.
    pub fn resolve_lock(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> Result<(), MvccError> {
        match commit_ts {
            Some(commit_ts) => {
                let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_user_key(k)).collect();
                let latch = self.latches.acquire(&encoded);
                let mut batch = WriteBatch::new();
                for (key, ek) in keys.iter().zip(&encoded) {
                    match self.commit_key(&mut batch, key, ek, start_ts, commit_ts) {
                        Ok(()) | Err(MvccError::TxnLockNotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                let ticket = self.apply(batch)?;
                drop(latch);
                self.sync_through(ticket)
            }
            None => match self.rollback(keys, start_ts) {
                Ok(()) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// Deletes the data of the keys in `[start, end)` (empty end = unbounded), which no
    /// transaction can reach any more (the keys of a dropped index or table): every
    /// version, its value and the key's latest-version entry, a whole key at a time, until
    /// at least `limit` records are gone. Returns the first key not looked at yet (`None`:
    /// the range holds no more data). A key with a lock is left alone: lock resolution
    /// decides its transaction (in a dropped range, one whose coordinator died). Not
    /// synced: a deletion lost in a crash is simply made again.
    pub fn delete_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Option<Vec<u8>>, MvccError> {
        const TS_BYTES: usize = 8;
        let (es, ee) = encode_range(start, end);
        let mut batch = WriteBatch::new();
        let mut records = 0usize;
        // The key being deleted, and whether it is locked (then skipped).
        let mut current: Option<(Vec<u8>, bool)> = None;
        let mut next = None;
        for item in self.engine.scan(Cf::Write, &es, &ee, false) {
            let (vk, _) = item?;
            let ek = &vk[..vk.len().saturating_sub(TS_BYTES)];
            if current.as_ref().is_none_or(|(c, _)| c.as_slice() != ek) {
                if records >= limit {
                    next = Some(ek.to_vec());
                    break;
                }
                let locked = self.load_lock(ek)?.is_some();
                if !locked {
                    batch.delete(Cf::Latest, ek.to_vec());
                    records += 1;
                }
                current = Some((ek.to_vec(), locked));
            }
            if current.as_ref().is_some_and(|(_, locked)| !locked) {
                batch.delete(Cf::Write, vk);
                records += 1;
            }
        }
        // Values written apart from their version (long ones), in the same keys.
        let stop = next.clone().unwrap_or_else(|| ee.clone());
        for item in self.engine.scan(Cf::Default, &es, &stop, false) {
            let (vk, _) = item?;
            let ek = &vk[..vk.len().saturating_sub(TS_BYTES)];
            if self.load_lock(ek)?.is_none() {
                batch.delete(Cf::Default, vk);
            }
        }
        let _unsynced = self.apply(batch)?;
        next.map(|ek| decode_user_key(&ek)).transpose()
    }

    /// The oldest start_ts of any prewrite lock this store holds, on disk or in memory: a
    /// GC safe point must stay below it, as a lock's fate is read from its primary's
    /// records. Pessimistic locks do not count: they have no fate to read (their
    /// transaction commits only after it has prewritten every one). Reads the whole lock
    /// CF (bounded by the transactions in flight, whose locks go when they finish).
    pub fn oldest_lock_start_ts(&self) -> Result<Option<Timestamp>, MvccError> {
        // Memory first: a lock moving to disk meanwhile is then seen there.
        let in_memory = self.oldest_memory_lock_start_ts();
        let on_disk = oldest_lock_on_disk(self.engine.as_ref())?;
        Ok(in_memory.into_iter().chain(on_disk).min())
    }

    /// The oldest start_ts of the prewrite locks held in memory only (volatile locks;
    /// pessimistic ones do not count, see `oldest_lock_start_ts`).
    pub fn oldest_memory_lock_start_ts(&self) -> Option<Timestamp> {
        self.memory
            .lock()
            .values()
            .filter(|l| !l.kind.is_pessimistic())
            .map(|l| l.start_ts)
            .min()
    }

    /// Up to `limit` prewrite locks (not pessimistic ones), in memory or on disk, with a
    /// start_ts at or below `max_ts`: what a resolver of abandoned locks looks at. Keys are
    /// user keys.
    pub fn prewrite_locks_at_or_below(
        &self,
        max_ts: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Lock)>, MvccError> {
        let wanted = |l: &Lock| !l.kind.is_pessimistic() && l.start_ts <= max_ts;
        let mut out: Vec<(Vec<u8>, Lock)> = Vec::new();
        for (ek, lock) in self.memory.lock().iter() {
            if out.len() >= limit {
                return Ok(out);
            }
            if wanted(lock) {
                out.push((decode_user_key(ek)?, lock.clone()));
            }
        }
        for item in self.engine.scan(Cf::Lock, b"", b"", false) {
            if out.len() >= limit {
                break;
            }
            let (ek, bytes) = item?;
            let lock = Lock::from_bytes(&bytes)?;
            if wanted(&lock) {
                out.push((decode_user_key(&ek)?, lock));
            }
        }
        Ok(out)
    }

    /// Up to `limit` locks in `[start, end)` (empty end = unbounded) with start_ts at or
    /// below `max_ts`.
    pub fn scan_locks(
        &self,
        start: &[u8],
        end: &[u8],
        max_ts: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Lock)>, MvccError> {
        let (es, ee) = encode_range(start, end);
        let mut out = Vec::new();
        for item in self.engine.scan(Cf::Lock, &es, &ee, false) {
            if out.len() >= limit {
                break;
            }
            let (key, bytes) = item?;
            let lock = Lock::from_bytes(&bytes)?;
            if lock.start_ts <= max_ts {
                out.push((decode_user_key(&key)?, lock));
            }
        }
        Ok(out)
    }
}

/// The oldest start_ts of the prewrite locks in `engine`'s lock CF (see
/// `Mvcc::oldest_lock_start_ts`): on a store, every lock of every replica it holds,
/// however its regions are led.
pub fn oldest_lock_on_disk(engine: &dyn KvEngine) -> Result<Option<Timestamp>, MvccError> {
    let mut oldest: Option<Timestamp> = None;
    for item in engine.scan(Cf::Lock, b"", b"", false) {
        let (_, bytes) = item?;
        let lock = Lock::from_bytes(&bytes)?;
        if lock.kind.is_pessimistic() {
            continue;
        }
        oldest = Some(oldest.map_or(lock.start_ts, |o| o.min(lock.start_ts)));
    }
    Ok(oldest)
}
