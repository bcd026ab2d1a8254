//! Writes the data of the snapshots a store's followers receive on a thread of the store's
//! own, so the store thread, which drives every region of the store, does not stop while a
//! whole region is written into the engine (a brand-new replica writes all of it: 0.2–0.9 s
//! for 5–10 MB measured here, far longer than an election timeout for a region of the
//! default split size, during which every region this store leads stopped heartbeating).
//!
//! The store holds the snapshot's message back from raft-rs while its data is written here
//! (see `Store::on_raft_message`): the peer takes no appends and applies nothing meanwhile,
//! and no other peer's snapshot may overlap its range. Once the data is in the engine, the
//! store steps the message, and the Ready that follows persists only the peer's states
//! (`PeerStorage::stage_snapshot` with `data_written`), synced, after the data in the
//! engine's journal: a crash before it leaves the peer as it was, over data it ignores.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flotilla_storage::EngineRef;
use raft::eraftpb::Snapshot;

use crate::error::RaftStoreError;
use crate::storage::{SnapshotWrite, write_snapshot_data};
use crate::watched::Watched;

/// One snapshot whose data to write.
pub(crate) struct ApplyTask {
    pub region_id: u64,
    pub snapshot: Snapshot,
}

/// A finished write, to be taken by the store thread.
pub(crate) struct Written {
    pub region_id: u64,
    /// The snapshot's index.
    pub index: u64,
    /// `Ok(None)`: stopped before it was whole (the store is closing).
    pub result: Result<Option<SnapshotWrite>, RaftStoreError>,
    pub took: Duration,
}

#[derive(Default)]
struct State {
    /// Queued or being written.
    writing: usize,
    /// Written, not yet taken by the store.
    written: Vec<Written>,
    /// Batches that may still be written before the writer waits (tests: a write that
    /// stops part-way, as a crash would leave it); `None`: any number.
    batches_allowed: Option<u64>,
    /// The writer is waiting for `batches_allowed`.
    at_gate: bool,
    /// The store is closing: the write under way stops before its next batch.
    stopping: bool,
}

type Shared = Watched<State>;

/// A store's snapshot writer: one thread and a bounded number of snapshots in its hands.
pub struct SnapApplier {
    tx: Option<SyncSender<ApplyTask>>,
    shared: Arc<Shared>,
    capacity: usize,
    thread: Option<JoinHandle<()>>,
}

impl SnapApplier {
    /// Starts the writer thread of store `store_id` over `engine`. At most `capacity`
    /// snapshots are queued, being written or written and not yet taken (each is held
    /// whole in memory); past it the store drops a new snapshot and its leader sends it
    /// again later. Each engine batch holds about `batch_bytes` of keys and values.
    pub fn spawn(
        store_id: u64,
        engine: EngineRef,
        capacity: usize,
        batch_bytes: usize,
    ) -> Arc<Self> {
        let capacity = capacity.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("snap-apply-{store_id}"))
            .spawn(move || run(rx, worker, engine, batch_bytes.max(1)))
            .expect("spawn the snapshot writer thread");
        Arc::new(Self {
            tx: Some(tx),
            shared,
            capacity,
            thread: Some(thread),
        })
    }

    /// Hands a snapshot over; false (and nothing queued) when there is no room.
    pub(crate) fn submit(&self, task: ApplyTask) -> bool {
        let mut state = self.shared.lock();
        if state.writing + state.written.len() >= self.capacity {
            return false;
        }
        let Some(tx) = &self.tx else {
            return false;
        };
        if tx.try_send(task).is_err() {
            return false;
        }
        state.writing += 1;
        true
    }

    /// The writes finished since the last call.
    pub(crate) fn take_written(&self) -> Vec<Written> {
        std::mem::take(&mut self.shared.lock().written)
    }

    /// Waits until no write is queued or under way, or the one under way waits at the
    /// test gate (`allow_batches`), or `timeout` passes; returns whether one of the first
    /// two happened.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let state = self
            .shared
            .wait_while(timeout, |s| s.writing > 0 && !s.at_gate);
        state.writing == 0 || state.at_gate
    }

    /// Whether a write is queued or under way.
    pub fn is_writing(&self) -> bool {
        self.shared.lock().writing > 0
    }

    /// Tests: lets at most `batches` more engine batches be written before the writer
    /// waits (`Some(0)`: it writes nothing more), or any number (`None`).
    pub fn allow_batches(&self, batches: Option<u64>) {
        self.shared.lock().batches_allowed = batches;
        self.shared.notify();
    }
}

impl Drop for SnapApplier {
    fn drop(&mut self) {
        self.tx = None;
        self.shared.lock().stopping = true;
        self.shared.notify();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(rx: Receiver<ApplyTask>, shared: Arc<Shared>, engine: EngineRef, batch_bytes: usize) {
    while let Ok(task) = rx.recv() {
        let started = Instant::now();
        let index = task.snapshot.get_metadata().index;
        let mut may_write = || {
            let mut state = shared.lock();
            loop {
                if state.stopping {
                    return false;
                }
                match state.batches_allowed {
                    Some(0) => {
                        state.at_gate = true;
                        shared.notify();
                        state = shared.wait(state);
                    }
                    Some(n) => {
                        state.batches_allowed = Some(n - 1);
                        break;
                    }
                    None => break,
                }
            }
            state.at_gate = false;
            true
        };
        let result = write_snapshot_data(
            &engine,
            task.snapshot.get_data(),
            batch_bytes,
            &mut may_write,
        );
        let mut state = shared.lock();
        state.at_gate = false;
        state.writing -= 1;
        let stopping = state.stopping;
        state.written.push(Written {
            region_id: task.region_id,
            index,
            result,
            took: started.elapsed(),
        });
        drop(state);
        shared.notify();
        if stopping {
            return;
        }
    }
}
