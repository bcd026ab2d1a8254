//! Garbage collection of old row versions on a standalone node.
//!
//! Every `run_interval` the worker picks a safe point: `life_time` before now, but never
//! past the oldest snapshot a SQL session has open or is about to take (the schema leases
//! report it) nor past the oldest lock (a lock's fate is read from its primary's
//! records). Then it removes, a bounded batch at a time and at a bounded rate, every
//! version no reader at or above the safe point can see (`Mvcc::gc`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_ddl::JobQueue;
use flotilla_mvcc::Mvcc;
use flotilla_tso::TsoRef;
use flotilla_types::Timestamp;
use tokio::sync::watch;

/// The GC worker's settings (see `GcSection`).
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// How long a replaced version stays readable; zero turns GC off.
    pub life_time: Duration,
    /// Time between runs.
    pub run_interval: Duration,
    /// Records one step removes at most.
    pub batch_records_max: usize,
    /// Records removed per second at most; 0: no limit.
    pub records_per_s: u64,
}

/// What the worker has done, for /metrics and tests.
#[derive(Debug, Default)]
pub struct GcStats {
    /// The safe point of the last run (0: none yet).
    pub safe_point: AtomicU64,
    /// Records removed since start.
    pub records_deleted: AtomicU64,
    /// Runs finished since start (whether or not they removed anything).
    pub runs: AtomicU64,
    /// Abandoned locks resolved since start (a cluster's stores; see `StoreNodeConfig`).
    pub locks_resolved: AtomicU64,
    /// Region collections a cluster's store left out since start: no write since a
    /// collection that already reached past every version the region holds.
    pub regions_skipped: AtomicU64,
}

/// The standalone node's GC worker.
pub(crate) struct GcWorker {
    pub(crate) mvcc: Arc<Mvcc>,
    pub(crate) tso: TsoRef,
    pub(crate) jobs: Arc<JobQueue>,
    pub(crate) config: GcConfig,
    pub(crate) stats: Arc<GcStats>,
}

impl GcWorker {
    /// Runs until `stop` turns true. Does nothing when the life time is zero.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        if self.config.life_time.is_zero() {
            tracing::info!("GC is off (gc.life_time_s = 0)");
            return;
        }
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(self.config.run_interval) => {}
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                outcome = self.run_once() => match outcome {
                    Ok((safe_point, removed)) => {
                        if removed > 0 {
                            tracing::info!(%safe_point, removed, "GC removed old versions");
                        }
                    }
                    Err(e) => tracing::warn!("GC run failed (the next run tries again): {e}"),
                },
            }
            self.stats.runs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The safe point now: see the module comment.
    async fn safe_point(&self) -> Result<Timestamp, String> {
        let now = self
            .tso
            .get_ts()
            .await
            .map_err(|e| format!("no timestamp: {e}"))?;
        let life_ms = self.config.life_time.as_millis() as u64;
        let by_life = Timestamp::compose(now.physical_ms().saturating_sub(life_ms), 0);
        let by_readers = Timestamp(self.jobs.leases().oldest_start_ts());
        let mvcc = self.mvcc.clone();
        let oldest_lock = tokio::task::spawn_blocking(move || mvcc.oldest_lock_start_ts())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        // Below the lock: its own transaction's records sit at and above its start_ts.
        let by_locks = oldest_lock.map_or(Timestamp::MAX, |ts| ts.prev());
        Ok(by_life.min(by_readers).min(by_locks))
    }

    /// One run: returns its safe point and the records removed.
    async fn run_once(&self) -> Result<(Timestamp, u64), String> {
        let safe_point = self.safe_point().await?;
        if safe_point <= self.mvcc.safe_point() {
            return Ok((safe_point, 0));
        }
        let mut cursor = Vec::new();
        let mut removed = 0;
        loop {
            let mvcc = self.mvcc.clone();
            let batch = self.config.batch_records_max;
            let from = std::mem::take(&mut cursor);
            let progress =
                tokio::task::spawn_blocking(move || mvcc.gc(&from, b"", safe_point, batch))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            removed += progress.records_deleted;
            self.stats
                .records_deleted
                .fetch_add(progress.records_deleted, Ordering::Relaxed);
            if self.config.records_per_s > 0 && progress.records_deleted > 0 {
                // Pacing, so GC never takes the disk from the foreground.
                let secs = progress.records_deleted as f64 / self.config.records_per_s as f64;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
            match progress.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        self.stats.safe_point.store(safe_point.0, Ordering::Relaxed);
        Ok((safe_point, removed))
    }
}
