//! `RegionEngine`: the storage seam (`KvEngine`) over one region of a replicated store.
//! Reads come from the local engine, clipped to the region's range; a batch is applied by
//! proposing it to the region's Raft group and waiting until it is committed and applied
//! here. So the Percolator MVCC code that runs over the local engine in standalone runs
//! unchanged on a region's leader: its latches serialize conflicting requests, and every
//! record it writes is replicated before it is acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use flotilla_proto::metapb::Region;
use flotilla_storage::{
    Cf, DurabilityTicket, EngineRef, KvEngine, KvIter, StorageError, WriteBatch,
};

use crate::driver::StoreRouter;
use crate::error::RaftStoreError;
use crate::store::{Callback, StoreMsg};

/// One region's view of a store, for a leader to run MVCC on.
pub struct RegionEngine {
    local: EngineRef,
    router: StoreRouter,
    /// The region as routed; replaced (same id, newer epoch) when a split or membership
    /// change happens under the same leader, so MVCC state kept in memory survives it.
    region: parking_lot::RwLock<Region>,
    /// The leader term this view serves (0: any); see `StoreMsg::Write::term`.
    term: u64,
    /// How long `append` waits for its proposal to apply before giving up.
    write_timeout: Duration,
    applied_batches: AtomicU64,
}

impl RegionEngine {
    /// A view of `region` (as routed: its epoch is checked by every write) on the store
    /// that `router` reaches and whose engine is `local`, for the leader of `term` (0: any
    /// term; writes are then not fenced by term).
    pub fn new(
        local: EngineRef,
        router: StoreRouter,
        region: Region,
        term: u64,
        write_timeout: Duration,
    ) -> Self {
        Self {
            local,
            router,
            region: parking_lot::RwLock::new(region),
            term,
            write_timeout,
            applied_batches: AtomicU64::new(0),
        }
    }

    /// The region as this view routes it now.
    pub fn region(&self) -> Region {
        self.region.read().clone()
    }

    /// The leader term this view serves.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Follows a split or membership change of the same region under the same leader.
    pub fn set_region(&self, region: Region) {
        assert_eq!(
            region.id,
            self.region.read().id,
            "a view never changes region"
        );
        *self.region.write() = region;
    }

    fn clip(&self, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let region = self.region.read();
        let start = start.max(region.start_key.as_ref()).to_vec();
        let end = match (end.is_empty(), region.end_key.is_empty()) {
            (true, _) => region.end_key.to_vec(),
            (false, true) => end.to_vec(),
            (false, false) => end.min(region.end_key.as_ref()).to_vec(),
        };
        (start, end)
    }
}

/// How a region's refusal of a write reaches MVCC: retryable (a routing error the client
/// retries) or not.
pub fn to_storage_error(e: RaftStoreError) -> StorageError {
    if e.is_retryable() {
        StorageError::Unavailable(e.to_string())
    } else {
        StorageError::Engine(e.to_string())
    }
}

impl KvEngine for RegionEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.local.get(cf, key)
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'a> {
        let (start, end) = self.clip(start, end);
        if !end.is_empty() && start >= end {
            return Box::new(std::iter::empty());
        }
        self.local.scan(cf, &start, &end, reverse)
    }

    fn append(&self, batch: WriteBatch) -> Result<DurabilityTicket, StorageError> {
        let (tx, rx) = mpsc::channel();
        let region_id = self.region.read().id;
        let cb: Callback<()> = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.submit(batch, cb).map_err(to_storage_error)?;
        match rx.recv_timeout(self.write_timeout) {
            Ok(Ok(())) => {
                let n = self.applied_batches.fetch_add(1, Ordering::Relaxed) + 1;
                Ok(DurabilityTicket::from_sequence(n))
            }
            Ok(Err(e)) => Err(to_storage_error(e)),
            // The outcome is unknown: the proposal may still commit. Percolator's records
            // are idempotent, so the caller's retry is safe either way.
            Err(_) => Err(StorageError::Unavailable(format!(
                "region {region_id}: no answer to a write within {:?}",
                self.write_timeout
            ))),
        }
    }

    fn sync_through(&self, _ticket: DurabilityTicket) -> Result<(), StorageError> {
        // Applied means committed: in the fsynced logs of a majority.
        Ok(())
    }

    fn disk_space_bytes(&self) -> u64 {
        self.local.disk_space_bytes()
    }
}

impl RegionEngine {
    /// What `append` does, without waiting: proposes `batch` (fenced by this view's term
    /// and epoch) and has `cb` called on the store's thread once it is applied here, or
    /// refused. For a caller that waits without blocking a thread (an async task).
    pub fn submit(&self, batch: WriteBatch, cb: Callback<()>) -> Result<(), RaftStoreError> {
        let (region_id, epoch) = {
            let r = self.region.read();
            (r.id, r.epoch.unwrap_or_default())
        };
        let msg = if batch.is_empty() {
            // Nothing to replicate (a pessimistic lock lives in memory), but the caller
            // still learns, as from a write, that this peer led `term` from its reads until
            // now and had applied every earlier write: a read index checked against the
            // term, from the leader's lease, instead of an empty entry through Raft and
            // three fsyncs.
            StoreMsg::ReadIndex {
                region_id,
                epoch,
                term: self.term,
                cb,
            }
        } else {
            StoreMsg::Write {
                region_id,
                epoch,
                term: self.term,
                batch,
                cb,
            }
        };
        self.router.send(msg)
    }
}
