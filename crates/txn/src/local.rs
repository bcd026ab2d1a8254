use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_mvcc::{
    IngestEntry, LockInfo, LockKeys, MissingPrimary, Mutation, Mvcc, MvccError, PrewriteLocks,
    TxnStatus,
};
use flotilla_tso::TsoRef;
use flotilla_types::Timestamp;

use crate::deadlock::WaitForGraph;
use crate::error::TxnError;
use crate::kv::{LockRequest, TxnKv, lock_ttl_ms_after};
use crate::waits::LockWaits;

/// `TxnKv` over one local store: the standalone node's implementation. Lock conflicts are
/// settled here: a lock whose transaction has committed or rolled back is resolved on the
/// spot; a live one is waited for (bounded by the caller's timeout, woken when the lock is
/// released), with deadlock detection for lock waits.
pub struct LocalTxnKv {
    mvcc: Arc<Mvcc>,
    tso: TsoRef,
    waits: LockWaits,
    graph: WaitForGraph,
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What to do after a lock stopped an operation.
enum AfterLock {
    Retry,
}

impl LocalTxnKv {
    /// A `TxnKv` over `mvcc`, asking `tso` for the current time when judging lock expiry.
    pub fn new(mvcc: Arc<Mvcc>, tso: TsoRef) -> Self {
        Self {
            mvcc,
            tso,
            waits: LockWaits::new(),
            graph: WaitForGraph::default(),
        }
    }

    /// Resolves every lock left by a previous incarnation of this process. In a standalone
    /// node every transaction coordinator lives in this process, so after a restart every
    /// lock is an orphan: its transaction committed iff its primary has a commit record.
    /// Returns the number of locks resolved.
    pub async fn recover_orphan_locks(&self) -> Result<usize, TxnError> {
        let mut resolved = 0;
        loop {
            let locks = self
                .mvcc
                .scan_locks(b"", b"", Timestamp::MAX, 1024)
                .map_err(TxnError::from)?;
            if locks.is_empty() {
                return Ok(resolved);
            }
            let now = self.tso.get_ts().await?;
            for (key, lock) in locks {
                let status = self.mvcc.check_txn_status(
                    &lock.primary,
                    lock.start_ts,
                    now,
                    true,
                    MissingPrimary::Fence,
                )?;
                let commit_ts = match status {
                    TxnStatus::Committed { commit_ts } => Some(commit_ts),
                    _ => None,
                };
                self.mvcc.resolve_lock(&[key], lock.start_ts, commit_ts)?;
                resolved += 1;
            }
        }
    }

    /// Settles a lock that stopped an operation: resolves it if its transaction is
    /// decided, otherwise waits until it is released, lapses, or the deadline passes.
    async fn settle_lock(
        &self,
        info: LockInfo,
        waiter: Option<Timestamp>,
        started: Instant,
        deadline: Instant,
    ) -> Result<AfterLock, TxnError> {
        let status = self
            .check_txn_status(
                &info.primary,
                info.start_ts,
                MissingPrimary::for_lock_met_at(&info.key, &info.primary),
            )
            .await?;
        let lock = match status {
            TxnStatus::Committed { commit_ts } => {
                self.mvcc.resolve_lock(
                    std::slice::from_ref(&info.key),
                    info.start_ts,
                    Some(commit_ts),
                )?;
                self.waits.released(&[&info.key]);
                return Ok(AfterLock::Retry);
            }
            TxnStatus::RolledBack => {
                self.mvcc
                    .resolve_lock(std::slice::from_ref(&info.key), info.start_ts, None)?;
                self.waits.released(&[&info.key]);
                return Ok(AfterLock::Retry);
            }
            // The lock met was the primary, given back since: nothing to resolve.
            TxnStatus::Released => return Ok(AfterLock::Retry),
            TxnStatus::Locked { lock } => lock,
        };
        let notified = self.waits.bucket(&info.key).notified();
        tokio::pin!(notified);
        // Registered before the re-check below, so a release between the two is not lost.
        notified.as_mut().enable();
        if !self.mvcc.is_held_by(&info.key, info.start_ts)? {
            return Ok(AfterLock::Retry);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TxnError::LockWaitTimeout {
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        // Only a statement that will wait joins the wait-for graph: one that may not wait
        // is refused as timed out, never as a deadlock.
        let _edge =
            match waiter {
                Some(waiter) => Some(self.graph.wait(waiter, info.start_ts).map_err(|()| {
                    TxnError::Deadlock {
                        waiter,
                        holder: info.start_ts,
                    }
                })?),
                None => None,
            };
        let expires_at_ms = lock.start_ts.physical_ms().saturating_add(lock.ttl_ms);
        let until_expiry =
            Duration::from_millis(expires_at_ms.saturating_sub(wall_clock_ms()).max(1));
        let wake_at = deadline.min(now + until_expiry);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(wake_at.into()) => {}
        }
        Ok(AfterLock::Retry)
    }

    /// Runs `op` until it is not stopped by a lock, settling each lock it meets.
    async fn with_lock_waits<T>(
        &self,
        waiter: Option<Timestamp>,
        lock_wait_timeout_ms: u64,
        mut op: impl FnMut() -> Result<T, MvccError>,
    ) -> Result<T, TxnError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(lock_wait_timeout_ms);
        loop {
            match op() {
                Ok(v) => return Ok(v),
                // Settled even past the deadline (NOWAIT's is now): a lock whose
                // transaction is decided is resolved, not reported as held; only a live
                // one times out (in `settle_lock`).
                Err(MvccError::KeyIsLocked(info)) => {
                    match self.settle_lock(info, waiter, started, deadline).await? {
                        AfterLock::Retry => continue,
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Mvcc) -> Result<T, MvccError> + Send + 'static,
    ) -> Result<T, TxnError> {
        let mvcc = self.mvcc.clone();
        tokio::task::spawn_blocking(move || f(&mvcc))
            .await
            .map_err(|e| TxnError::Internal(format!("storage task failed: {e}")))?
            .map_err(TxnError::from)
    }
}

#[async_trait::async_trait]
impl TxnKv for LocalTxnKv {
    async fn get(
        &self,
        key: &[u8],
        ts: Timestamp,
        reader: Option<Timestamp>,
        lock_wait_timeout_ms: u64,
    ) -> Result<Option<Vec<u8>>, TxnError> {
        // Readers never join the wait-for graph: prewrite locks are held only between a
        // transaction's prewrite and commit, during which it waits for nobody.
        self.with_lock_waits(None, lock_wait_timeout_ms, || {
            self.mvcc.get(key, ts, reader)
        })
        .await
    }

    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        ts: Timestamp,
        limit: usize,
        reader: Option<Timestamp>,
        lock_wait_timeout_ms: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TxnError> {
        self.with_lock_waits(None, lock_wait_timeout_ms, || {
            self.mvcc.scan(start, end, ts, limit, reader)
        })
        .await
    }

    async fn acquire_pessimistic_lock(
        &self,
        request: LockRequest,
    ) -> Result<Vec<Option<Vec<u8>>>, TxnError> {
        let sent = Instant::now();
        self.with_lock_waits(Some(request.start_ts), request.lock_wait_timeout_ms, || {
            // Each attempt after a wait asks for the lifetime the request asked for at
            // its sending.
            self.mvcc.lock_keys(&LockKeys {
                keys: &request.keys,
                primary: &request.primary,
                start_ts: request.start_ts,
                for_update_ts: request.for_update_ts,
                ttl_ms: lock_ttl_ms_after(request.ttl_ms, sent.elapsed()),
                need_values: request.need_values,
                shared: request.shared,
                key_only: request.key_only,
            })
        })
        .await
    }

    async fn pessimistic_rollback(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
    ) -> Result<(), TxnError> {
        self.mvcc.pessimistic_rollback(keys, start_ts)?;
        self.waits.released(keys);
        Ok(())
    }

    async fn prewrite(
        &self,
        mutations: Vec<Mutation>,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
        one_commit_batch: bool,
    ) -> Result<(), TxnError> {
        let placement = if one_commit_batch {
            PrewriteLocks::Volatile
        } else {
            PrewriteLocks::Durable
        };
        // Every key a pessimistic transaction writes is already locked by it, so prewrite
        // meets no live lock in practice; a lock left by a dead transaction is settled.
        let sent = Instant::now();
        self.with_lock_waits(Some(start_ts), 10_000, || {
            let ttl_ms = lock_ttl_ms_after(ttl_ms, sent.elapsed());
            self.mvcc
                .prewrite(&mutations, primary, start_ts, ttl_ms, placement)
        })
        .await
    }

    async fn commit(
        &self,
        keys: Vec<Vec<u8>>,
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<(), TxnError> {
        // The commit becomes visible and its locks are released first, so waiters go on
        // while the fsync runs (see `Mvcc::commit_visible`); the caller hears of success
        // only once it is durable. The fsync (shared with concurrent commits) runs off the
        // async workers.
        let ticket = self.mvcc.commit_visible(&keys, start_ts, commit_ts)?;
        self.waits.released(&keys);
        self.blocking(move |mvcc| mvcc.sync_through(ticket)).await
    }

    async fn rollback(&self, keys: Vec<Vec<u8>>, start_ts: Timestamp) -> Result<(), TxnError> {
        match self.mvcc.rollback(&keys, start_ts) {
            Ok(()) => {}
            Err(MvccError::Committed { .. }) => {
                return Err(TxnError::Internal(
                    "rollback of a committed transaction".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.waits.released(&keys);
        Ok(())
    }

    async fn ingest(
        &self,
        entries: Vec<IngestEntry>,
        ts: Timestamp,
        lock_wait_timeout_ms: u64,
    ) -> Result<(), TxnError> {
        // Not synced here: the entries become durable with the next synced write to the
        // engine (durability follows append order). A backfill's checkpoint is appended
        // after its chunk, and its job's next step is a synced write, so the index goes
        // public only once every entry is durable; a crash in between loses at most
        // entries that the resumed backfill writes again. One fsync per chunk was what
        // bounded an unthrottled backfill on a slow disk.
        let _unsynced = self
            .with_lock_waits(None, lock_wait_timeout_ms, || {
                self.mvcc.ingest_visible(&entries, ts)
            })
            .await?;
        Ok(())
    }

    async fn delete_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Option<Vec<u8>>, TxnError> {
        let (start, end) = (start.to_vec(), end.to_vec());
        self.blocking(move |mvcc| mvcc.delete_range(&start, &end, limit))
            .await
    }

    async fn txn_heartbeat(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<u64, TxnError> {
        Ok(self.mvcc.txn_heartbeat(primary, start_ts, ttl_ms)?)
    }

    async fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        missing: MissingPrimary,
    ) -> Result<TxnStatus, TxnError> {
        let now = self.tso.get_ts().await?;
        let status = self
            .mvcc
            .check_txn_status(primary, lock_ts, now, false, missing)?;
        if status == TxnStatus::RolledBack {
            self.waits.released(&[primary]);
        }
        Ok(status)
    }
}
