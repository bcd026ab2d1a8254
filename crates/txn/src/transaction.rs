use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_mvcc::{KeyCheck, Mutation, MutationOp};
use flotilla_tso::TsoRef;
use flotilla_types::Timestamp;

use crate::error::TxnError;
use crate::kv::{LockRequest, TxnKvRef};

/// Tunables of client-side transactions. Every bound is named here.
#[derive(Debug, Clone)]
pub struct TxnOptions {
    /// Lifetime of a lock without a heartbeat; a crashed coordinator's locks lapse after it.
    pub lock_ttl_ms: u64,
    /// How often a transaction holding locks extends its primary lock.
    pub heartbeat_interval_ms: u64,
    /// How long a statement waits for another transaction's lock (PostgreSQL's
    /// `lock_timeout`), never unbounded.
    pub lock_wait_timeout_ms: u64,
    /// Largest write buffer of one transaction.
    pub txn_size_bytes_max: usize,
    /// Keys per prewrite, commit or lock request.
    pub keys_per_request_max: usize,
    /// Pessimistic: every key the transaction writes is either locked by it or decided by a
    /// key it locked (SQL: a statement locks the rows it changes; their index entries and
    /// fresh row handles follow from those locks), so unlocked writes need no check against
    /// start_ts (`KeyCheck::Guarded`). Otherwise unlocked writes are checked optimistically.
    pub pessimistic: bool,
}

impl Default for TxnOptions {
    fn default() -> Self {
        Self {
            lock_ttl_ms: 3_000,
            heartbeat_interval_ms: 1_000,
            lock_wait_timeout_ms: 50_000,
            txn_size_bytes_max: 2 * 1024 * 1024 * 1024,
            keys_per_request_max: 4_096,
            pessimistic: true,
        }
    }
}

pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Undo record of one buffered write: the key and what the buffer held before.
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// A transaction's buffered writes at one moment (`Transaction::write_mark`).
#[derive(Clone)]
pub struct WriteMark {
    buffer: Arc<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    bytes: usize,
}

/// How strongly a statement locks a key, after PostgreSQL's row-level lock modes. Each
/// conflicts with the ones PostgreSQL's does: `KeyShare` only with `Update`; `Share`
/// with both exclusive ones; `NoKeyUpdate` with all but `KeyShare`; `Update` with all.
/// Ordered weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockStrength {
    /// `FOR KEY SHARE`, a foreign key's referenced key: the key may change, not go.
    KeyShare,
    /// `FOR SHARE`: the key may not change.
    Share,
    /// `FOR NO KEY UPDATE`, an update that keeps the key (and every unique key of its row).
    NoKeyUpdate,
    /// `FOR UPDATE`, a delete, or an update of a key.
    Update,
}

impl LockStrength {
    /// Other transactions' shares may join it.
    pub fn shared(self) -> bool {
        matches!(self, LockStrength::KeyShare | LockStrength::Share)
    }

    /// It is about the key's existence only (`LockRequest::key_only`).
    pub fn key_only(self) -> bool {
        matches!(self, LockStrength::KeyShare | LockStrength::NoKeyUpdate)
    }
}

/// A client-side transaction: buffers writes, takes pessimistic locks as statements write,
/// and commits with two-phase commit (prewrite all, commit the primary, then the rest).
pub struct Transaction {
    kv: TxnKvRef,
    tso: TsoRef,
    options: TxnOptions,
    start_ts: Timestamp,
    for_update_ts: Timestamp,
    /// Buffered writes: `None` is a deletion.
    buffer: Arc<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    buffer_bytes: usize,
    /// Keys this transaction holds an exclusive lock on.
    locked: HashSet<Vec<u8>>,
    /// Keys it holds a shared lock on (and no exclusive one).
    shared: HashSet<Vec<u8>>,
    /// Keys of `locked` or `shared` whose lock is about the key's existence only
    /// (`LockStrength::NoKeyUpdate`, `LockStrength::KeyShare`).
    key_only: HashSet<Vec<u8>>,
    /// Keys locked, not written, whose locks must still be held at commit (a row a foreign
    /// key references): prewritten as lock-only mutations, so a lock lost meanwhile fails
    /// the commit instead of letting a conflicting change through unseen.
    lock_only: HashSet<Vec<u8>>,
    primary: Option<Vec<u8>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// Undo log of the current statement, when one is open.
    statement_undo: Option<Vec<Undo>>,
    finished: bool,
}

impl Transaction {
    /// Starts a transaction at a fresh timestamp.
    pub async fn begin(kv: TxnKvRef, tso: TsoRef, options: TxnOptions) -> Result<Self, TxnError> {
        let start_ts = tso.get_ts().await?;
        Ok(Self {
            kv,
            tso,
            options,
            start_ts,
            for_update_ts: start_ts,
            buffer: Arc::new(BTreeMap::new()),
            buffer_bytes: 0,
            locked: HashSet::new(),
            shared: HashSet::new(),
            key_only: HashSet::new(),
            lock_only: HashSet::new(),
            primary: None,
            heartbeat: None,
            statement_undo: None,
            finished: false,
        })
    }

    /// The transaction's identity and snapshot timestamp.
    pub fn start_ts(&self) -> Timestamp {
        self.start_ts
    }

    /// The timestamp that statements' locks are checked against.
    pub fn for_update_ts(&self) -> Timestamp {
        self.for_update_ts
    }

    /// Moves the lock-check timestamp forward (READ COMMITTED: each statement, and each
    /// retry of a statement, checks against a newer snapshot).
    pub fn set_for_update_ts(&mut self, ts: Timestamp) {
        assert!(
            ts >= self.start_ts,
            "for_update_ts must not precede start_ts"
        );
        self.for_update_ts = self.for_update_ts.max(ts);
    }

    /// A fresh timestamp from the oracle.
    pub async fn fresh_ts(&self) -> Result<Timestamp, TxnError> {
        Ok(self.tso.get_ts().await?)
    }

    /// Changes how long statements wait for locks.
    pub fn set_lock_wait_timeout_ms(&mut self, ms: u64) {
        self.options.lock_wait_timeout_ms = ms;
    }

    /// True when the transaction has buffered writes.
    pub fn has_writes(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// True when the transaction has buffered writes to a key in `[start, end)`.
    pub fn has_writes_in(&self, start: &[u8], end: &[u8]) -> bool {
        self.buffer
            .range::<[u8], _>((
                std::ops::Bound::Included(start),
                std::ops::Bound::Excluded(end),
            ))
            .next()
            .is_some()
    }

    /// What the write buffer says about `key`: `Some(None)` if deleted, `Some(Some(v))` if
    /// written, `None` if untouched.
    pub fn buffered(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.buffer.get(key).map(|v| v.as_deref())
    }

    /// A read-only view at `read_ts` that sees this transaction's writes so far; cheap to
    /// make and to clone, and independent of later writes' borrow of the transaction.
    pub fn view(&self, read_ts: Timestamp) -> TxnView {
        TxnView {
            kv: self.kv.clone(),
            reader: Some(self.start_ts),
            read_ts,
            buffer: self.buffer.clone(),
            lock_wait_timeout_ms: self.options.lock_wait_timeout_ms,
        }
    }

    /// The time to live of a lock taken now. A lock lives from its transaction's start
    /// (`start_ts`), so one taken by a transaction older than `lock_ttl_ms` (it waited
    /// for another's lock, or ran long statements) lives its age plus `lock_ttl_ms`, as
    /// the heartbeat extends it: with `lock_ttl_ms` alone it would be born lapsed, and a
    /// waiter would roll back a live transaction before its first heartbeat.
    fn lock_ttl_now_ms(&self) -> u64 {
        wall_clock_ms()
            .saturating_sub(self.start_ts.physical_ms())
            .saturating_add(self.options.lock_ttl_ms)
    }

    fn start_heartbeat(&mut self, primary: &[u8]) {
        if self.heartbeat.is_some() {
            return;
        }
        let kv = self.kv.clone();
        let primary = primary.to_vec();
        let start_ts = self.start_ts;
        let ttl_ms = self.options.lock_ttl_ms;
        let interval_ms = self.options.heartbeat_interval_ms.max(1);
        self.heartbeat = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let age_ms = wall_clock_ms().saturating_sub(start_ts.physical_ms());
                // Failure (lock not yet written, or gone) is not fatal here: commit finds out.
                let _ = kv.txn_heartbeat(&primary, start_ts, age_ms + ttl_ms).await;
            }
        }));
    }

    /// Takes pessimistic locks on `keys` (each with "must not exist"), checked against
    /// `for_update_ts`. Returns each key's newest committed value when `need_values`.
    pub async fn lock_keys(
        &mut self,
        keys: Vec<(Vec<u8>, bool)>,
        need_values: bool,
    ) -> Result<Vec<Option<Vec<u8>>>, TxnError> {
        self.lock_keys_as(keys, need_values, LockStrength::Update)
            .await
    }

    /// `lock_keys` with the given strength. A shared lock lets other transactions share
    /// the key, but none may change it (a key-only one: delete it) or lock it exclusively
    /// (a key-only one: fully) until this one ends or gives it back. A key this
    /// transaction already holds exclusively stays so; a stronger lock asked for later
    /// replaces a weaker one (waiting for the holders it may not join).
    pub async fn lock_keys_as(
        &mut self,
        keys: Vec<(Vec<u8>, bool)>,
        need_values: bool,
        strength: LockStrength,
    ) -> Result<Vec<Option<Vec<u8>>>, TxnError> {
        let for_update_ts = self.for_update_ts;
        self.lock_keys_checked(keys, need_values, for_update_ts, strength)
            .await
    }

    /// Locks `keys` at whatever version of each is newest, checking no timestamp, and
    /// returns those versions' values: for a READ COMMITTED statement that computes what it
    /// writes from the returned values (as PostgreSQL re-checks the newest version of a row
    /// it waited for), so it needs no snapshot timestamp and never fails with a write
    /// conflict. Never use it for a write computed from an earlier read.
    pub async fn lock_keys_newest(
        &mut self,
        keys: Vec<(Vec<u8>, bool)>,
    ) -> Result<Vec<Option<Vec<u8>>>, TxnError> {
        self.lock_keys_newest_as(keys, LockStrength::Update).await
    }

    /// `lock_keys_newest` with the given strength (see `lock_keys_as`).
    pub async fn lock_keys_newest_as(
        &mut self,
        keys: Vec<(Vec<u8>, bool)>,
        strength: LockStrength,
    ) -> Result<Vec<Option<Vec<u8>>>, TxnError> {
        self.lock_keys_checked(keys, true, Timestamp::MAX, strength)
            .await
    }

    /// Whether the lock this transaction holds on `key`, if any, is at least as strong as
    /// `strength`: then nobody else can have done what that lock keeps out since.
    pub fn holds_at_least(&self, key: &[u8], strength: LockStrength) -> bool {
        let weak = self.key_only.contains(key) && !strength.key_only();
        if self.locked.contains(key) {
            // A no-key exclusive lock covers every strength but a full exclusive one.
            !weak || strength.shared()
        } else {
            self.shared.contains(key) && strength.shared() && !weak
        }
    }

    async fn lock_keys_checked(
        &mut self,
        keys: Vec<(Vec<u8>, bool)>,
        need_values: bool,
        for_update_ts: Timestamp,
        strength: LockStrength,
    ) -> Result<Vec<Option<Vec<u8>>>, TxnError> {
        // A lock this transaction holds (at least as strong as the one asked for) needs no
        // request: nobody else can have committed to its key since. Keys that must not
        // exist are still asked (the request checks that), as are keys whose values are
        // wanted.
        let keys: Vec<(Vec<u8>, bool)> = if need_values {
            keys
        } else {
            keys.into_iter()
                .filter(|(key, must_not_exist)| {
                    *must_not_exist || !self.holds_at_least(key, strength)
                })
                .collect()
        };
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let primary = match &self.primary {
            Some(p) => p.clone(),
            None => {
                let p = keys[0].0.clone();
                self.primary = Some(p.clone());
                p
            }
        };
        let shared = strength.shared();
        let mut values = Vec::with_capacity(if need_values { keys.len() } else { 0 });
        for chunk in keys.chunks(self.options.keys_per_request_max) {
            let request = LockRequest {
                keys: chunk.to_vec(),
                primary: primary.clone(),
                start_ts: self.start_ts,
                for_update_ts,
                ttl_ms: self.lock_ttl_now_ms(),
                need_values,
                lock_wait_timeout_ms: self.options.lock_wait_timeout_ms,
                shared,
                key_only: strength.key_only(),
            };
            let got = match self.kv.acquire_pessimistic_lock(request).await {
                Ok(got) => got,
                Err(e) => {
                    self.after_failed_lock(chunk, &primary).await;
                    return Err(e);
                }
            };
            for (key, _) in chunk {
                self.note_lock(key, strength);
            }
            values.extend(got);
        }
        self.start_heartbeat(&primary);
        Ok(values)
    }

    /// Records that this transaction now holds `key` at `strength` or stronger, as the
    /// store combines them: an exclusive lock replaces a shared one (keeping the key
    /// only if asked so), a shared one joins an exclusive one, and a lock is key-only
    /// while every request for it was.
    fn note_lock(&mut self, key: &[u8], strength: LockStrength) {
        let was_held = self.holds(key);
        let was_exclusive = self.locked.contains(key);
        let was_key_only = self.key_only.contains(key);
        let key_only = if strength.shared() {
            if was_exclusive {
                was_key_only
            } else {
                self.shared.insert(key.to_vec());
                strength.key_only() && (!was_held || was_key_only)
            }
        } else {
            self.shared.remove(key);
            self.locked.insert(key.to_vec());
            // A full share made exclusive keeps what the exclusive request asked.
            strength.key_only() && (!was_exclusive || was_key_only)
        };
        if key_only {
            self.key_only.insert(key.to_vec());
        } else {
            self.key_only.remove(key);
        }
    }

    /// Cleans up after a lock request for `chunk` failed (a lock held past the wait, a
    /// deadlock, a key that must not exist): the transaction goes on (a NOWAIT or SKIP
    /// LOCKED statement, a savepoint, an upsert row by row), so
    /// - the primary, if this request was to be its first lock, is chosen again: others
    ///   judge the transaction's fate by its primary's lock, and one it never took would
    ///   make every later lock of it look rolled back, for anyone to remove;
    /// - any key of the request locked before another refused (a request spanning regions)
    ///   is given back, so no lock outlives the transaction unknown to it.
    async fn after_failed_lock(&mut self, chunk: &[(Vec<u8>, bool)], primary: &[u8]) {
        if !self.holds(primary) {
            self.primary = None;
        }
        let untracked: Vec<Vec<u8>> = chunk
            .iter()
            .filter(|(key, _)| !self.holds(key))
            .map(|(key, _)| key.clone())
            .collect();
        if let Err(e) = self
            .kv
            .pessimistic_rollback(&untracked, self.start_ts)
            .await
        {
            tracing::warn!(error = %e, "releasing a failed request's locks failed; they will lapse");
        }
    }

    /// Gives back the pessimistic lock on `key` that a statement took but did not need (the
    /// row it locked to read turned out not to match). Keys written in this transaction
    /// stay locked, as does the primary while other locks or writes refer to it.
    pub async fn unlock_key(&mut self, key: &[u8]) {
        if self.buffer.contains_key(key) || !self.holds(key) {
            return;
        }
        if self.primary.as_deref() == Some(key) {
            if self.locked.len() + self.shared.len() > 1 || !self.buffer.is_empty() {
                return;
            }
            // Nothing else refers to it: the next lock or write picks a new primary.
            self.stop_heartbeat();
            self.primary = None;
        }
        self.locked.remove(key);
        self.shared.remove(key);
        self.key_only.remove(key);
        if let Err(e) = self
            .kv
            .pessimistic_rollback(&[key.to_vec()], self.start_ts)
            .await
        {
            tracing::warn!(error = %e, "releasing a pessimistic lock failed; it will lapse");
        }
    }

    /// Makes commit check that the locks on `keys` (taken by this transaction, exclusive
    /// or shared) are still held, and record them (a lock-only write): for keys read, not
    /// written, whose staying unchanged until commit the transaction depends on.
    pub fn keep_locked_until_commit(&mut self, keys: &[Vec<u8>]) {
        for key in keys {
            debug_assert!(self.holds(key), "a key kept locked is locked");
            self.lock_only.insert(key.clone());
        }
    }

    /// True when this transaction holds an exclusive lock on `key`.
    pub fn is_locked(&self, key: &[u8]) -> bool {
        self.locked.contains(key)
    }

    /// True when this transaction holds a lock on `key`, exclusive or shared.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.locked.contains(key) || self.shared.contains(key)
    }

    fn record(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), TxnError> {
        let added = key.len() + value.as_ref().map_or(0, |v| v.len());
        if self.buffer_bytes + added > self.options.txn_size_bytes_max {
            return Err(TxnError::TooLarge {
                size_bytes: self.buffer_bytes + added,
                limit_bytes: self.options.txn_size_bytes_max,
            });
        }
        self.buffer_bytes += added;
        let previous = Arc::make_mut(&mut self.buffer).insert(key.clone(), value);
        if let Some(undo) = &mut self.statement_undo {
            undo.push((key, previous));
        }
        Ok(())
    }

    /// Buffers a write of `key`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), TxnError> {
        self.record(key, Some(value))
    }

    /// Buffers a deletion of `key`.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<(), TxnError> {
        self.record(key, None)
    }

    /// The buffered writes as they are now, to come back to (a savepoint). Cheap: the
    /// buffer is shared until the next write copies it.
    pub fn write_mark(&self) -> WriteMark {
        WriteMark {
            buffer: self.buffer.clone(),
            bytes: self.buffer_bytes,
        }
    }

    /// Puts the buffered writes back as they were at `mark` (`None`: before the first
    /// write). Locks taken since stay until the end of the transaction.
    pub fn rollback_to_mark(&mut self, mark: Option<&WriteMark>) {
        assert!(
            self.statement_undo.is_none(),
            "no statement is open at a savepoint"
        );
        match mark {
            Some(m) => {
                self.buffer = m.buffer.clone();
                self.buffer_bytes = m.bytes;
            }
            None => {
                self.buffer = Arc::new(BTreeMap::new());
                self.buffer_bytes = 0;
            }
        }
    }

    /// Opens a statement: its writes can be undone as a unit.
    pub fn start_statement(&mut self) {
        self.statement_undo = Some(Vec::new());
    }

    /// Undoes the open statement's buffered writes (locks it took stay until the end of
    /// the transaction).
    pub fn rollback_statement(&mut self) {
        if let Some(undo) = self.statement_undo.take() {
            for (key, previous) in undo.into_iter().rev() {
                match previous {
                    Some(v) => {
                        Arc::make_mut(&mut self.buffer).insert(key, v);
                    }
                    None => {
                        Arc::make_mut(&mut self.buffer).remove(&key);
                    }
                }
            }
            self.statement_undo = Some(Vec::new());
        }
    }

    /// Closes the open statement, keeping its writes.
    pub fn finish_statement(&mut self) {
        self.statement_undo = None;
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// Commits: prewrites every buffered write (primary first), takes a commit timestamp,
    /// commits the primary (the commit point) and then the rest. Returns the commit
    /// timestamp, or `None` when there was nothing to write.
    pub async fn commit(mut self) -> Result<Option<Timestamp>, TxnError> {
        self.finished = true;
        let result = self.commit_inner().await;
        self.stop_heartbeat();
        result
    }

    async fn commit_inner(&mut self) -> Result<Option<Timestamp>, TxnError> {
        if self.buffer.is_empty() {
            self.release_locks().await;
            return Ok(None);
        }
        let primary = match &self.primary {
            Some(p) => p.clone(),
            None => {
                let p = self.buffer.keys().next().expect("non-empty").clone();
                self.primary = Some(p.clone());
                p
            }
        };
        self.start_heartbeat(&primary);
        let buffer = std::mem::take(Arc::make_mut(&mut self.buffer));
        let mut mutations = Vec::with_capacity(buffer.len() + 1);
        let primary_op = match buffer.get(&primary) {
            Some(Some(v)) => MutationOp::Put(v.clone()),
            Some(None) => MutationOp::Delete,
            None => MutationOp::Lock,
        };
        let unlocked = if self.options.pessimistic {
            KeyCheck::Guarded
        } else {
            KeyCheck::Snapshot
        };
        let check = |key: &Vec<u8>| {
            if self.locked.contains(key) {
                KeyCheck::Locked
            } else {
                unlocked
            }
        };
        // A key read under a lock and kept (or the primary, whose lock records the
        // transaction's fate): its lock must still be there.
        let kept = |key: &Vec<u8>| {
            if self.shared.contains(key) {
                KeyCheck::SharedLocked
            } else {
                KeyCheck::Locked
            }
        };
        mutations.push(Mutation {
            check: if primary_op == MutationOp::Lock {
                kept(&primary)
            } else {
                check(&primary)
            },
            key: primary.clone(),
            op: primary_op,
        });
        let lock_only: Vec<Vec<u8>> = self
            .lock_only
            .drain()
            .filter(|k| *k != primary && !buffer.contains_key(k))
            .collect();
        for (key, value) in buffer {
            if key == primary {
                continue;
            }
            let op = match value {
                Some(v) => MutationOp::Put(v),
                None => MutationOp::Delete,
            };
            mutations.push(Mutation {
                check: check(&key),
                key,
                op,
            });
        }
        for key in lock_only {
            mutations.push(Mutation {
                check: kept(&key),
                key,
                op: MutationOp::Lock,
            });
        }
        let written: Vec<Vec<u8>> = mutations.iter().map(|m| m.key.clone()).collect();
        // A transaction that fits one request commits in one batch (below), so its
        // prewrite locks need not be durable.
        let one_commit_batch = mutations.len() <= self.options.keys_per_request_max;
        for chunk in mutations.chunks(self.options.keys_per_request_max) {
            if let Err(e) = self
                .kv
                .prewrite(
                    chunk.to_vec(),
                    &primary,
                    self.start_ts,
                    self.lock_ttl_now_ms(),
                    one_commit_batch,
                )
                .await
            {
                let _ = self.kv.rollback(written.clone(), self.start_ts).await;
                self.release_locks().await;
                return Err(e);
            }
        }
        let commit_ts = self.tso.get_ts().await?;
        let mut chunks = written.chunks(self.options.keys_per_request_max);
        let first = chunks.next().expect("at least the primary").to_vec();
        if let Err(e) = self.kv.commit(first, self.start_ts, commit_ts).await {
            let _ = self.kv.rollback(written.clone(), self.start_ts).await;
            self.release_locks().await;
            return Err(e);
        }
        // The primary is committed: the transaction is committed. A secondary that fails
        // here is resolved later by whoever meets its lock.
        for chunk in chunks {
            if let Err(e) = self
                .kv
                .commit(chunk.to_vec(), self.start_ts, commit_ts)
                .await
            {
                tracing::warn!(error = %e, "commit of secondaries failed; readers will resolve them");
            }
        }
        let written: HashSet<Vec<u8>> = written.into_iter().collect();
        self.locked.retain(|k| !written.contains(k));
        self.shared.retain(|k| !written.contains(k));
        self.release_locks().await;
        Ok(Some(commit_ts))
    }

    async fn release_locks(&mut self) {
        if self.locked.is_empty() && self.shared.is_empty() {
            return;
        }
        self.key_only.clear();
        let keys: Vec<Vec<u8>> = self.locked.drain().chain(self.shared.drain()).collect();
        for chunk in keys.chunks(self.options.keys_per_request_max) {
            if let Err(e) = self.kv.pessimistic_rollback(chunk, self.start_ts).await {
                tracing::warn!(error = %e, "releasing pessimistic locks failed; they will lapse");
            }
        }
    }

    /// Abandons the transaction, releasing its locks.
    pub async fn rollback(mut self) -> Result<(), TxnError> {
        self.finished = true;
        self.stop_heartbeat();
        Arc::make_mut(&mut self.buffer).clear();
        self.release_locks().await;
        Ok(())
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.stop_heartbeat();
        if self.finished || self.locked.is_empty() && self.shared.is_empty() {
            return;
        }
        // Dropped without commit or rollback (a client disconnected mid-transaction):
        // release the locks in the background rather than make others wait for the TTL.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let kv = self.kv.clone();
            let keys: Vec<Vec<u8>> = self.locked.drain().chain(self.shared.drain()).collect();
            let start_ts = self.start_ts;
            handle.spawn(async move {
                let _ = kv.pessimistic_rollback(&keys, start_ts).await;
            });
        }
    }
}

/// A transaction's reads at one timestamp, including its own buffered writes.
#[derive(Clone)]
pub struct TxnView {
    kv: TxnKvRef,
    reader: Option<Timestamp>,
    read_ts: Timestamp,
    buffer: Arc<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    lock_wait_timeout_ms: u64,
}

impl std::fmt::Debug for TxnView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnView")
            .field("reader", &self.reader)
            .field("read_ts", &self.read_ts)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl TxnView {
    /// A view outside any transaction: committed data at `read_ts`.
    pub fn detached(kv: TxnKvRef, read_ts: Timestamp, lock_wait_timeout_ms: u64) -> Self {
        Self {
            kv,
            reader: None,
            read_ts,
            buffer: Arc::new(BTreeMap::new()),
            lock_wait_timeout_ms,
        }
    }

    /// The timestamp the view reads at.
    pub fn read_ts(&self) -> Timestamp {
        self.read_ts
    }

    /// Reads `key` at the view's timestamp, seeing this transaction's own writes.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TxnError> {
        if let Some(v) = self.buffer.get(key) {
            return Ok(v.clone());
        }
        self.kv
            .get(key, self.read_ts, self.reader, self.lock_wait_timeout_ms)
            .await
    }

    /// At most `limit` pairs of `[start, end)` at the view's timestamp, merged with this transaction's
    /// own writes, in key order.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TxnError> {
        assert!(limit > 0);
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut cursor = start.to_vec();
        loop {
            let batch = self
                .kv
                .scan(
                    &cursor,
                    end,
                    self.read_ts,
                    limit,
                    self.reader,
                    self.lock_wait_timeout_ms,
                )
                .await?;
            let exhausted = batch.len() < limit;
            // Buffered keys up to the last stored key returned are merged now; later ones
            // wait for the next batch so the merge stays in order.
            let upper: Vec<u8> = if exhausted {
                end.to_vec()
            } else {
                let mut k = batch.last().expect("non-empty batch").0.clone();
                k.push(0);
                k
            };
            let mut buffered = self
                .buffer
                .range::<[u8], _>((
                    std::ops::Bound::Included(cursor.as_slice()),
                    if upper.is_empty() {
                        std::ops::Bound::Unbounded
                    } else {
                        std::ops::Bound::Excluded(upper.as_slice())
                    },
                ))
                .peekable();
            let mut stored = batch.into_iter().peekable();
            loop {
                let take_buffered = match (stored.peek(), buffered.peek()) {
                    (None, None) => break,
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                    (Some((sk, _)), Some((bk, _))) => bk.as_slice() <= sk.as_slice(),
                };
                if take_buffered {
                    let (bk, bv) = buffered.next().expect("peeked");
                    if stored.peek().is_some_and(|(sk, _)| sk == bk) {
                        stored.next();
                    }
                    if let Some(v) = bv {
                        out.push((bk.clone(), v.clone()));
                    }
                } else {
                    out.push(stored.next().expect("peeked"));
                }
            }
            if out.len() >= limit || exhausted {
                out.truncate(limit);
                return Ok(out);
            }
            cursor = upper;
        }
    }
}
