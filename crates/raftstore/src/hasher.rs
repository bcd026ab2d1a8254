//! Checksums of regions' data (`StoreMsg::ComputeHash`, behind `flotilla ctl
//! check-replicas`), computed on a thread of the store's own so the store thread, which
//! drives every region of the store, does not stop while a whole region is read: 0.6 s
//! for a region of the default split size in a debug build, measured by the
//! `checksum_scan` bench, more than an election timeout for a larger one.
//!
//! Every replica applies the `ComputeHash` entry at the same log index. There the store
//! thread takes a point-in-time view of its engine (`KvEngine::read_view`) and the
//! round's writes to the region that are not in the engine yet, and hands both over; the
//! checksum is of the region as of that index on every replica, so replicas agree iff
//! their data does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use flotilla_proto::metapb::Region;
use flotilla_storage::{Cf, KvIter, ReadView, WriteBatch, WriteOp};

use crate::error::RaftStoreError;
use crate::storage::{DATA_CFS, region_contains};
use crate::store::Callback;
use crate::watched::Watched;

/// A replica's checksum of its region at one log index: (checksum, key count).
pub type RegionChecksum = Result<(u64, u64), RaftStoreError>;

/// The round's writes to a region not yet in the engine: (data column family's place in
/// `DATA_CFS`, key) → the value, or `None` for a delete.
type Overlay = BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>;

/// What a checksum is computed from: the region as of one applied index.
pub(crate) struct HashTask {
    pub region: Region,
    pub index: u64,
    pub view: Box<dyn ReadView>,
    pub pending: Overlay,
}

/// The writes of `batch` (staged, not yet in the engine) to `region`'s data.
pub(crate) fn pending_writes(region: &Region, batch: &WriteBatch) -> Overlay {
    let mut overlay = Overlay::new();
    for op in batch.ops() {
        let (cf, key, value) = match op {
            WriteOp::Put { cf, key, value } => (*cf, key, Some(value.clone())),
            WriteOp::Delete { cf, key } => (*cf, key, None),
        };
        let Some(i) = DATA_CFS.iter().position(|c| *c == cf) else {
            continue;
        };
        if region_contains(region, key) {
            overlay.insert((i, key.clone()), value);
        }
    }
    overlay
}

/// FNV-1a over every (column family, key, value) of the region in order, each field
/// length-prefixed, with `pending` laid over what `scan` reads. Streams: memory does not
/// grow with the region. (The same function every build uses, so replicas of different
/// builds agree too.)
pub(crate) fn checksum<'a>(scan: impl Fn(Cf) -> KvIter<'a>, pending: &Overlay) -> RegionChecksum {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    };
    let mut keys = 0u64;
    let mut record = |i: usize, k: &[u8], v: &[u8]| {
        feed(&[i as u8]);
        feed(k);
        feed(v);
        keys += 1;
    };
    for (i, cf) in DATA_CFS.iter().enumerate() {
        let mut over = pending
            .range((i, Vec::new())..(i + 1, Vec::new()))
            .peekable();
        for item in scan(*cf) {
            let (k, v) = item?;
            // The overlay's keys up to this one go first; on this very key, the overlay's
            // value (or delete) stands instead of the engine's.
            let mut replaced = false;
            while let Some(((_, ok), ov)) = over.next_if(|((_, ok), _)| *ok <= k) {
                if let Some(ov) = ov {
                    record(i, ok, ov);
                }
                replaced = *ok == k;
            }
            if !replaced {
                record(i, &k, &v);
            }
        }
        for ((_, ok), ov) in over {
            if let Some(ov) = ov {
                record(i, ok, ov);
            }
        }
    }
    Ok((hash, keys))
}

/// A `ComputeHash` caller: answered (log index, checksum, key count).
type HashCallback = Callback<(u64, u64, u64)>;

#[derive(Default)]
struct State {
    /// Each region's newest checksum here, with its log index.
    results: HashMap<u64, (u64, RegionChecksum)>,
    /// Leaders' `ComputeHash` callers: (region, log index, callback).
    waiters: Vec<(u64, u64, HashCallback)>,
    /// Tests: checksums are held before they start.
    held: bool,
    /// The thread holds a checksum it took (tests).
    holding: bool,
    /// Checksums queued or being computed.
    queued: usize,
    /// Of those, each region's.
    queued_by_region: HashMap<u64, usize>,
    /// Regions whose peer here is gone while a checksum of theirs is queued: that
    /// checksum answers its callers but is not kept (`forget`).
    forgotten: HashSet<u64>,
    stopping: bool,
}

/// A store's checksum thread and a bounded queue of checksums to compute.
pub struct RegionHasher {
    tx: Option<SyncSender<HashTask>>,
    shared: Arc<Watched<State>>,
    queue_capacity: usize,
    thread: Option<JoinHandle<()>>,
}

impl RegionHasher {
    /// Starts store `store_id`'s checksum thread; at most `queue_capacity` (at least 1)
    /// checksums wait for it. Past that a replica records a retryable failure at the
    /// index instead of a checksum.
    pub fn spawn(store_id: u64, queue_capacity: usize) -> Arc<Self> {
        let queue_capacity = queue_capacity.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel(queue_capacity);
        let shared = Arc::new(Watched::<State>::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("hasher-{store_id}"))
            .spawn(move || run(rx, worker))
            .expect("spawn the checksum thread");
        Arc::new(Self {
            tx: Some(tx),
            shared,
            queue_capacity,
            thread: Some(thread),
        })
    }

    /// Queues `task`; with the queue full, records a retryable failure at its index.
    pub(crate) fn submit(&self, task: HashTask) {
        let (region_id, index) = (task.region.id, task.index);
        let Some(tx) = &self.tx else {
            return;
        };
        // Counted first: the thread may finish it before `try_send` returns.
        {
            let mut state = self.shared.lock();
            state.queued += 1;
            *state.queued_by_region.entry(region_id).or_default() += 1;
            // A peer of the region is here again: its checksums are kept.
            state.forgotten.remove(&region_id);
        }
        let sent = tx.try_send(task);
        if sent.is_err() {
            unqueue(&mut self.shared.lock(), region_id);
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.record(
                region_id,
                index,
                Err(RaftStoreError::ServerIsBusy(format!(
                    "{} region checksums are already queued on this store \
                     (raft_checksum_queue)",
                    self.queue_capacity
                ))),
            ),
            Err(TrySendError::Disconnected(_)) => self.record(
                region_id,
                index,
                Err(RaftStoreError::Raft("the store is closing".into())),
            ),
        }
    }

    /// Records region `region_id`'s checksum at `index` and answers whoever waits for it.
    pub(crate) fn record(&self, region_id: u64, index: u64, result: RegionChecksum) {
        record_in(&self.shared, region_id, index, result);
    }

    /// Calls `cb` with region `region_id`'s checksum at `index` once it is computed.
    pub(crate) fn when_done(&self, region_id: u64, index: u64, cb: HashCallback) {
        let mut state = self.shared.lock();
        match state.results.get(&region_id) {
            Some((at, result)) if *at >= index => {
                let answer = answer_at(region_id, index, *at, result);
                drop(state);
                cb(answer);
            }
            _ if state.stopping => {
                drop(state);
                cb(Err(RaftStoreError::Raft("the store is closing".into())));
            }
            _ => state.waiters.push((region_id, index, cb)),
        }
    }

    /// Region `region_id`'s newest checksum here: (log index, checksum or why none).
    pub fn checksum(&self, region_id: u64) -> Option<(u64, RegionChecksum)> {
        self.shared.lock().results.get(&region_id).cloned()
    }

    /// Waits up to `timeout` for region `region_id`'s checksum at `index` or a later one;
    /// returns the newest there is then.
    pub fn wait(
        &self,
        region_id: u64,
        index: u64,
        timeout: Duration,
    ) -> Option<(u64, RegionChecksum)> {
        let state = self.shared.wait_while(timeout, |s| {
            s.results.get(&region_id).is_none_or(|(at, _)| *at < index)
        });
        state.results.get(&region_id).cloned()
    }

    /// Drops region `region_id`'s checksum (its peer here is gone), and any checksum of
    /// it still queued once that one is done, so a destroyed region leaves nothing here.
    pub(crate) fn forget(&self, region_id: u64) {
        let mut state = self.shared.lock();
        state.results.remove(&region_id);
        if state.queued_by_region.contains_key(&region_id) {
            state.forgotten.insert(region_id);
        }
    }

    /// Holds (or releases) every checksum before it starts: a test's checksum that takes
    /// as long as it likes, so the queue fills.
    pub fn hold(&self, held: bool) {
        self.shared.lock().held = held;
        self.shared.notify();
    }

    /// Waits up to `timeout` until no checksum is queued or being computed; returns
    /// whether none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.shared.wait_while(timeout, |s| s.queued > 0).queued == 0
    }

    /// Waits up to `timeout` until the thread holds a checksum it took (see `hold`);
    /// returns whether it does.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        self.shared.wait_while(timeout, |s| !s.holding).holding
    }
}

/// The answer to a caller of `ComputeHash` at `asked`, from the checksum at `at`.
fn answer_at(
    region_id: u64,
    asked: u64,
    at: u64,
    result: &RegionChecksum,
) -> Result<(u64, u64, u64), RaftStoreError> {
    if at != asked {
        // A later checksum of the region finished first: this one was superseded.
        return Err(RaftStoreError::ServerIsBusy(format!(
            "region {region_id}'s checksum at index {asked} was superseded by one at {at}"
        )));
    }
    result.clone().map(|(sum, keys)| (at, sum, keys))
}

impl Drop for RegionHasher {
    fn drop(&mut self) {
        self.tx = None;
        let waiters = {
            let mut state = self.shared.lock();
            state.stopping = true;
            state.held = false;
            std::mem::take(&mut state.waiters)
        };
        self.shared.notify();
        for (_, _, cb) in waiters {
            cb(Err(RaftStoreError::Raft("the store is closing".into())));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(rx: Receiver<HashTask>, shared: Arc<Watched<State>>) {
    while let Ok(task) = rx.recv() {
        {
            let mut state = shared.lock();
            state.holding = state.held;
            shared.notify();
            while state.held {
                state = shared.wait(state);
            }
            state.holding = false;
            if state.stopping {
                return;
            }
        }
        let started = std::time::Instant::now();
        let region = &task.region;
        let result = checksum(
            |cf| task.view.scan(cf, &region.start_key, &region.end_key),
            &task.pending,
        );
        tracing::info!(
            region_id = region.id,
            index = task.index,
            keys = result.as_ref().map(|(_, k)| *k).unwrap_or_default(),
            took_ms = started.elapsed().as_millis() as u64,
            "checksummed a region"
        );
        if let Err(e) = &result {
            tracing::error!(region_id = region.id, "checksum: {e}");
        }
        record_in(&shared, region.id, task.index, result);
        unqueue(&mut shared.lock(), region.id);
        shared.notify();
    }
}

/// One checksum of region `region_id` is no longer queued.
fn unqueue(state: &mut State, region_id: u64) {
    state.queued -= 1;
    let count = state.queued_by_region.entry(region_id).or_default();
    *count = count.saturating_sub(1);
    if *count == 0 {
        state.queued_by_region.remove(&region_id);
        state.forgotten.remove(&region_id);
    }
}

/// Records region `region_id`'s checksum at `index` (unless a later one is there) and
/// answers whoever waits for one at or before it.
fn record_in(shared: &Watched<State>, region_id: u64, index: u64, result: RegionChecksum) {
    let mut state = shared.lock();
    if state
        .results
        .get(&region_id)
        .is_some_and(|(at, _)| *at > index)
    {
        return;
    }
    if !state.forgotten.contains(&region_id) {
        state.results.insert(region_id, (index, result.clone()));
    }
    let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.waiters)
        .into_iter()
        .partition(|(r, at, _)| *r == region_id && *at <= index);
    state.waiters = waiting;
    drop(state);
    shared.notify();
    for (_, at, cb) in done {
        cb(answer_at(region_id, at, index, &result));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use flotilla_storage::{FjallEngine, FjallOptions, KvEngine};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);
    /// An empty region's checksum: FNV-1a's offset basis, nothing fed.
    const FNV_EMPTY: u64 = 0xcbf2_9ce4_8422_2325;

    fn task(engine: &FjallEngine, region_id: u64, index: u64) -> HashTask {
        HashTask {
            region: Region {
                id: region_id,
                ..Default::default()
            },
            index,
            view: engine.read_view().expect("fjall has read views"),
            pending: Overlay::new(),
        }
    }

    /// A checksum still queued when its region's peer is destroyed answers its caller, but
    /// leaves no result behind; a new peer of the region keeps its own.
    #[test]
    fn a_checksum_queued_when_its_region_is_forgotten_answers_and_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let engine = FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap();
        let hasher = RegionHasher::spawn(1, 4);
        hasher.hold(true);
        hasher.submit(task(&engine, 7, 10));
        assert!(hasher.wait_held(WAIT), "the thread took no checksum");
        let answer = Arc::new(Mutex::new(None));
        let slot = answer.clone();
        hasher.when_done(7, 10, Box::new(move |r| *slot.lock().unwrap() = Some(r)));
        hasher.forget(7);
        hasher.hold(false);
        assert!(hasher.wait_idle(WAIT), "the checksum never finished");
        let answered = answer.lock().unwrap().take();
        assert!(
            matches!(answered, Some(Ok((10, FNV_EMPTY, 0)))),
            "{answered:?}"
        );
        let kept = hasher.checksum(7);
        assert!(
            kept.is_none(),
            "a destroyed region's checksum was kept: {kept:?}"
        );

        // The region's peer comes back here: its checksums are kept again.
        hasher.submit(task(&engine, 7, 20));
        assert!(hasher.wait_idle(WAIT), "the checksum never finished");
        let kept = hasher.checksum(7);
        assert!(matches!(kept, Some((20, Ok((FNV_EMPTY, 0))))), "{kept:?}");
    }
}
