//! Garbage collection of old row versions on a store.
//!
//! The meta leader moves the GC safe point on; it reaches the store in every heartbeat's
//! answer, and the store installs it at once: every region it leads, and every region it
//! comes to lead, refuses reads below it. The answer also carries the collect point, the
//! safe point every store that may lead a region has installed (each reports what it has
//! in its next heartbeat), so no leader, old or new, would answer a read that a removed
//! version was needed for. Up to the collect point the store removes, in each region it
//! leads, the versions no reader at or above it can see (`Mvcc::gc`), a bounded batch at a
//! time and at a bounded rate; each batch is a Raft write, so every replica removes the
//! same records at the same log index.
//!
//! The store also reports its oldest prewrite lock, so the safe point stays below it: a
//! lock's fate is read from its primary's records, which GC must keep. And it resolves, as
//! a reader would, the old locks whose TTL has lapsed in the regions it leads: a lock left
//! by a coordinator that died, on a key no reader meets, would otherwise hold the safe
//! point back for ever.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_client::{ClusterTxnKv, RegionCache, RemoteTso};
use flotilla_proto::kvpb::Context;
use flotilla_proto::metaservicepb::GcReport;
use flotilla_raftstore::BoardEntry;
use flotilla_tso::Tso;
use flotilla_txn::TxnKv;
use flotilla_types::Timestamp;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{RegionMvcc, Shared};
use crate::gc::GcStats;

/// A store's GC state.
pub(super) struct StoreGc {
    /// The safe point installed: every region this store leads refuses reads below it.
    safe_point: AtomicU64,
    /// Up to where this store may remove versions (at most the safe point).
    collect_point: AtomicU64,
    pub(super) stats: Arc<GcStats>,
}

impl StoreGc {
    /// Starts with the safe point the meta service named at registration.
    pub(super) fn new(safe_point: u64) -> Self {
        Self {
            safe_point: AtomicU64::new(safe_point),
            collect_point: AtomicU64::new(0),
            stats: Arc::new(GcStats::default()),
        }
    }

    pub(super) fn safe_point(&self) -> Timestamp {
        Timestamp(self.safe_point.load(Ordering::Acquire))
    }

    /// Installs the safe point and the collect point from a heartbeat's answer: neither
    /// ever moves back.
    pub(super) fn install(
        &self,
        regions: &Mutex<HashMap<u64, Arc<RegionMvcc>>>,
        safe_point: u64,
        collect_point: u64,
    ) {
        debug_assert!(
            collect_point <= safe_point,
            "collecting past the safe point"
        );
        self.safe_point.fetch_max(safe_point, Ordering::AcqRel);
        let installed = self.safe_point();
        // Under the map's lock: a region made meanwhile raises itself after it is in the
        // map (see `Shared::region_mvcc`).
        for m in regions.lock().values() {
            m.mvcc.raise_safe_point(installed);
        }
        self.collect_point
            .fetch_max(collect_point.min(installed.0), Ordering::AcqRel);
    }
}

/// What the store tells the meta leader for GC: the safe point it has installed, and its
/// oldest lock, in memory in a region it leads or on disk in any replica.
pub(super) async fn report(shared: &Arc<Shared>) -> Result<GcReport, String> {
    // Read before the locks are: a lock taken after this is above it.
    let safe_point_installed = shared.gc.safe_point().0;
    // Memory first: a lock moving to disk meanwhile is then seen there.
    let in_memory = shared
        .regions
        .lock()
        .values()
        .filter_map(|m| m.mvcc.oldest_memory_lock_start_ts())
        .min();
    let local = shared.local.clone();
    let on_disk =
        tokio::task::spawn_blocking(move || flotilla_mvcc::oldest_lock_on_disk(local.as_ref()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    Ok(GcReport {
        safe_point_installed,
        oldest_lock_ts: in_memory.into_iter().chain(on_disk).min().map(|ts| ts.0),
    })
}

/// The regions this store leads now.
fn leading_regions(shared: &Shared) -> Vec<BoardEntry> {
    shared
        .board
        .all()
        .into_iter()
        .filter(|e| e.is_leader)
        .collect()
}

/// The route to a region as this store knows it.
fn context_of(entry: &BoardEntry) -> Context {
    Context {
        region_id: entry.region.id,
        epoch: entry.region.epoch,
    }
}

/// How far a region was last collected.
#[derive(Clone, Copy)]
struct Collected {
    /// The collect point it was collected up to.
    point: u64,
    /// Its commit records applied (`BoardEntry::written_keys`) when it was read for that
    /// collection.
    written_keys: u64,
    /// A timestamp above every version it held then: versions it gets later change
    /// `written_keys`.
    versions_below: u64,
}

/// Collects, every heartbeat interval, the regions this store leads that have not been
/// collected up to the collect point yet.
pub(super) async fn collect_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Region id → how far it was last collected, while this store leads it (a new leader
    // collects it again: little is left to remove).
    let mut done: HashMap<u64, Collected> = HashMap::new();
    // A client of the cluster, as a reader: abandoned locks are resolved by their primary's
    // fate, which may live on another store.
    let tso = Arc::new(RemoteTso::new(shared.meta.clone()));
    let cache = Arc::new(RegionCache::new(
        shared.meta.clone(),
        RegionCache::DEFAULT_MAX_REGIONS,
    ));
    let kv = ClusterTxnKv::new(cache, tso.clone(), shared.cfg.client.clone());
    let mut tick = tokio::time::interval(shared.cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            outcome = resolve_abandoned_locks(&shared, &kv, tso.as_ref()) => match outcome {
                Ok(0) => {}
                Ok(resolved) => tracing::info!(resolved, "GC resolved abandoned locks"),
                Err(e) => tracing::info!("GC: resolving abandoned locks (tried again next round): {e}"),
            },
        }
        let point = shared.gc.collect_point.load(Ordering::Acquire);
        if point == 0 {
            continue;
        }
        let leading = leading_regions(&shared);
        done.retain(|id, _| leading.iter().any(|e| e.region.id == *id));
        // Every version applied by the time `leading` was read has a commit timestamp
        // below this one (it was taken from the TSO before its commit was proposed).
        let mut now: Option<u64> = None;
        let mut complete = true;
        for entry in leading {
            let last = done.get(&entry.region.id).copied();
            if last.is_some_and(|d| d.point >= point) {
                continue;
            }
            let idle = last.filter(|d| d.written_keys == entry.written_keys);
            if idle.is_some_and(|d| d.point >= d.versions_below) {
                // Nothing written since a collection past every version it holds: nothing
                // more can have become collectable. (Without this every region, idle
                // ones included, was read whole every time the safe point moved.)
                shared
                    .gc
                    .stats
                    .regions_skipped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let versions_below = match idle {
                Some(d) => d.versions_below,
                None => match now {
                    Some(ts) => ts,
                    None => match tso.get_ts().await {
                        Ok(ts) => *now.insert(ts.0),
                        Err(e) => {
                            tracing::info!("GC: no timestamp (tried again next round): {e}");
                            complete = false;
                            break;
                        }
                    },
                },
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                outcome = collect_region(&shared, &entry, Timestamp(point)) => match outcome {
                    Ok(removed) => {
                        if removed > 0 {
                            tracing::info!(
                                region_id = entry.region.id,
                                collect_point = point,
                                removed,
                                "GC removed old versions"
                            );
                        }
                        done.insert(
                            entry.region.id,
                            Collected {
                                point,
                                written_keys: entry.written_keys,
                                versions_below,
                            },
                        );
                    }
                    Err(e) => {
                        complete = false;
                        tracing::info!(
                            region_id = entry.region.id,
                            "GC of the region stopped (tried again next round): {e}"
                        );
                    }
                },
            }
        }
        if complete {
            shared.gc.stats.safe_point.store(point, Ordering::Relaxed);
        }
        shared.gc.stats.runs.fetch_add(1, Ordering::Relaxed);
    }
}

/// Removes from one region the versions no reader at or above `point` can see, a batch
/// (one Raft write) at a time at the configured pace; returns the records removed.
async fn collect_region(
    shared: &Arc<Shared>,
    entry: &BoardEntry,
    point: Timestamp,
) -> Result<u64, String> {
    let region = shared
        .region_mvcc(&context_of(entry))
        .await
        .map_err(|e| e.to_string())?;
    let batch = shared.cfg.gc_batch_records_max;
    let records_per_s = shared.cfg.gc_records_per_s;
    let mut cursor = Vec::new();
    let mut removed = 0;
    loop {
        let m = region.clone();
        let from = std::mem::take(&mut cursor);
        // The region's engine clips the range to the region and makes the removals a Raft
        // write fenced by the leader's term and the region's epoch.
        let progress = tokio::task::spawn_blocking(move || m.mvcc.gc(&from, b"", point, batch))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        removed += progress.records_deleted;
        shared
            .gc
            .stats
            .records_deleted
            .fetch_add(progress.records_deleted, Ordering::Relaxed);
        if records_per_s > 0 && progress.records_deleted > 0 {
            // Pacing, so GC never takes the disk or the Raft log from the foreground.
            let secs = progress.records_deleted as f64 / records_per_s as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
        match progress.next {
            Some(next) => cursor = next,
            None => return Ok(removed),
        }
    }
}

/// Resolves, in the regions this store leads, up to `gc_resolve_locks_max` prewrite locks
/// older than `gc_resolve_locks_after` whose TTL has lapsed, by reading each key as a
/// reader would without waiting: the lock's primary decides (committed: the lock is
/// committed; expired: rolled back; still heartbeated: left alone). Returns the locks
/// resolved.
async fn resolve_abandoned_locks(
    shared: &Arc<Shared>,
    kv: &ClusterTxnKv,
    tso: &RemoteTso,
) -> Result<u64, String> {
    let mut budget = shared.cfg.gc_resolve_locks_max;
    if budget == 0 {
        return Ok(0);
    }
    let leading = leading_regions(shared);
    if leading.is_empty() {
        return Ok(0);
    }
    // Timestamps, not this machine's clock: a lock's start_ts and TTL are on the
    // oracle's clock.
    let now = tso
        .get_ts()
        .await
        .map_err(|e| format!("no timestamp: {e}"))?;
    let after_ms = shared.cfg.gc_resolve_locks_after.as_millis() as u64;
    let max_start = Timestamp::compose(now.physical_ms().saturating_sub(after_ms), 0);
    let mut resolved = 0;
    for entry in leading {
        if budget == 0 {
            break;
        }
        let Ok(region) = shared.region_mvcc(&context_of(&entry)).await else {
            continue;
        };
        let limit = budget;
        let locks = tokio::task::spawn_blocking(move || {
            region.mvcc.prewrite_locks_at_or_below(max_start, limit)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        for (key, lock) in locks {
            budget = budget.saturating_sub(1);
            let expires_ms = lock.start_ts.physical_ms().saturating_add(lock.ttl_ms);
            if expires_ms >= now.physical_ms() {
                continue;
            }
            match kv.get(&key, now, None, 0).await {
                Ok(_) => resolved += 1,
                Err(e) => tracing::debug!(
                    start_ts = %lock.start_ts,
                    "GC: a lock stays (its transaction may be alive): {e}"
                ),
            }
        }
    }
    shared
        .gc
        .stats
        .locks_resolved
        .fetch_add(resolved, Ordering::Relaxed);
    Ok(resolved)
}
