//! The timestamp oracle seam (`Tso`) and its local implementation.
//!
//! Architecture invariant: knows nothing of transactions, tables or SQL; depends only on the
//! storage seam (to persist the window upper bound), never on fjall directly.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_storage::{Cf, EngineRef, StorageError, WriteBatch};
use flotilla_types::Timestamp;
use flotilla_types::timestamp_bits::LOGICAL_MAX;
use parking_lot::Mutex;

/// Errors from a timestamp oracle.
#[derive(Debug, thiserror::Error)]
pub enum TsoError {
    /// The window bound could not be persisted; handing out timestamps could then go
    /// backward after a restart, so none is handed out.
    #[error("timestamp oracle cannot persist its window: {0}")]
    Storage(#[from] StorageError),
    /// The remote timestamp oracle (the meta service) could not be reached in time;
    /// retry.
    #[error("timestamp oracle unavailable: {0}; retry")]
    Unavailable(String),
}

/// Hands out strictly increasing timestamps, also across restarts and failovers.
#[async_trait::async_trait]
pub trait Tso: Send + Sync + 'static {
    /// A timestamp greater than every one handed out before.
    async fn get_ts(&self) -> Result<Timestamp, TsoError>;
}

/// Shared handle to a timestamp oracle.
pub type TsoRef = Arc<dyn Tso>;

const WINDOW_KEY: &[u8] = b"tso/window_end_ms";

struct State {
    physical_ms: u64,
    logical: u64,
    /// Persisted upper bound: no timestamp at or above this physical time was handed out
    /// by a previous incarnation, and none is handed out by this one before raising it.
    window_end_ms: u64,
}

/// A timestamp oracle for one process: wall-clock milliseconds plus a logical counter,
/// with a persisted window so that a restart never reissues a timestamp even if the clock
/// went backward.
pub struct LocalTso {
    engine: EngineRef,
    window_ms: u64,
    /// The counters. Held only to read or bump them, never across a write: async callers
    /// take it (`try_next_batch`), and on a meta leader the write of a raised window is a
    /// Raft round trip that needs those callers' runtime threads. Holding it across the
    /// write stalled a one-thread meta member for the write's whole timeout, and its group
    /// lost quorum.
    state: Mutex<State>,
    /// Serialises the raising of the window: written first, then published in `state`.
    raising: Mutex<()>,
}

/// How many times `next_batch` raises the window before giving up: each raise reaches a
/// whole window past the clock, so a second one is needed only when a write took longer
/// than the window.
const RAISES_PER_BATCH_MAX: u32 = 3;

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LocalTso {
    /// Default length of the persisted window.
    pub const DEFAULT_WINDOW_MS: u64 = 3_000;

    /// Opens the oracle, resuming above the window persisted by the previous incarnation.
    pub fn open(engine: EngineRef, window_ms: u64) -> Result<Self, TsoError> {
        assert!(window_ms > 0, "tso window must be positive");
        let saved_end_ms = match engine.get(Cf::Meta, WINDOW_KEY)? {
            Some(bytes) if bytes.len() == 8 => {
                u64::from_be_bytes(bytes.try_into().expect("length checked"))
            }
            _ => 0,
        };
        let start_ms = wall_clock_ms().max(saved_end_ms);
        let tso = Self {
            engine,
            window_ms,
            state: Mutex::new(State {
                physical_ms: start_ms,
                logical: 0,
                window_end_ms: 0,
            }),
            raising: Mutex::new(()),
        };
        tso.raise_window(start_ms + window_ms)?;
        Ok(tso)
    }

    /// Persists `end_ms` as the window's end, then lets timestamps below it out. Call
    /// with `raising` held and `state` not.
    fn raise_window(&self, end_ms: u64) -> Result<(), TsoError> {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, WINDOW_KEY.to_vec(), end_ms.to_be_bytes().to_vec());
        self.engine.write(batch, true)?;
        let mut state = self.state.lock();
        state.window_end_ms = state.window_end_ms.max(end_ms);
        Ok(())
    }

    /// Hands out the next timestamp (synchronous form of [`Tso::get_ts`]).
    pub fn next_ts(&self) -> Result<Timestamp, TsoError> {
        self.next_batch(1)
    }

    /// The most timestamps one batch may take (one millisecond's logical range).
    pub const BATCH_MAX: u32 = (LOGICAL_MAX + 1) as u32;

    /// Hands out `count` consecutive timestamps in one step and returns the first; the
    /// rest are `first + 1 ..= first + count - 1`. Concurrent callers never interleave.
    /// May block persisting a raised window.
    pub fn next_batch(&self, count: u32) -> Result<Timestamp, TsoError> {
        for _ in 0..RAISES_PER_BATCH_MAX {
            if let Some(first) = self.take(count, false) {
                return Ok(first);
            }
            let _raising = self.raising.lock();
            let needed_ms = {
                let state = self.state.lock();
                let (physical_ms, _) = Self::reserve(&state, count, wall_clock_ms());
                (physical_ms >= state.window_end_ms).then_some(physical_ms)
            };
            // None: raised by another caller while this one waited for its turn.
            if let Some(physical_ms) = needed_ms {
                self.raise_window(physical_ms + self.window_ms)?;
            }
            // A write that outlasted the window leaves the clock past it again: hand out
            // just past the last timestamp instead, below the window all the same.
            if let Some(first) = self.take(count, true) {
                return Ok(first);
            }
        }
        Err(TsoError::Unavailable(format!(
            "the persisted window ({} ms) could not be raised past the timestamps asked \
             for in {RAISES_PER_BATCH_MAX} writes",
            self.window_ms
        )))
    }

    /// `next_batch` when it needs no write (the window covers it), else `None` and
    /// nothing handed out: callers on an async thread try this before blocking. Never
    /// waits for a write.
    pub fn try_next_batch(&self, count: u32) -> Option<Timestamp> {
        self.take(count, false)
    }

    /// Hands out `count` timestamps below the persisted window: from the clock, or with
    /// `lagging` (the clock past the window) just past the last one handed out.
    fn take(&self, count: u32, lagging: bool) -> Option<Timestamp> {
        let mut state = self.state.lock();
        let (mut physical_ms, mut first) = Self::reserve(&state, count, wall_clock_ms());
        if physical_ms >= state.window_end_ms && lagging {
            (physical_ms, first) = Self::reserve(&state, count, 0);
        }
        if physical_ms >= state.window_end_ms {
            return None;
        }
        state.physical_ms = physical_ms;
        state.logical = first + u64::from(count) - 1;
        Some(Timestamp::compose(physical_ms, first))
    }

    /// Where the next `count` timestamps start with the clock at `now` ms: (physical ms,
    /// first logical). A `now` not past the last timestamp continues from it.
    fn reserve(state: &State, count: u32, now: u64) -> (u64, u64) {
        assert!(
            (1..=Self::BATCH_MAX).contains(&count),
            "a timestamp batch takes 1..={} timestamps, not {count}",
            Self::BATCH_MAX
        );
        let (physical_ms, first) = if now > state.physical_ms {
            (now, 0)
        } else {
            (state.physical_ms, state.logical + 1)
        };
        if first + u64::from(count) - 1 > LOGICAL_MAX {
            // This millisecond's logical range cannot hold the batch: borrow the next one.
            (physical_ms + 1, 0)
        } else {
            (physical_ms, first)
        }
    }
}

#[async_trait::async_trait]
impl Tso for LocalTso {
    async fn get_ts(&self) -> Result<Timestamp, TsoError> {
        if let Some(ts) = self.try_next_batch(1) {
            return Ok(ts);
        }
        // Raising the window is a durable write (an fsync; on a meta leader a Raft round
        // trip): on a multi-threaded runtime this worker hands its other tasks to another
        // thread for it, rather than stopping them for the write. A one-thread runtime
        // has no other thread to hand them to.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.next_ts())
            }
            _ => self.next_ts(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_storage::{FjallEngine, FjallOptions, KvEngine};

    fn engine(dir: &std::path::Path) -> EngineRef {
        Arc::new(FjallEngine::open(dir, &FjallOptions::default()).unwrap())
    }

    #[test]
    fn timestamps_strictly_increase() {
        let dir = tempfile::tempdir().unwrap();
        let tso = LocalTso::open(engine(dir.path()), LocalTso::DEFAULT_WINDOW_MS).unwrap();
        let mut last = Timestamp::ZERO;
        for _ in 0..10_000 {
            let ts = tso.next_ts().unwrap();
            assert!(ts > last);
            last = ts;
        }
    }

    #[test]
    fn concurrent_batches_are_consecutive_and_disjoint() {
        let dir = tempfile::tempdir().unwrap();
        let tso = Arc::new(LocalTso::open(engine(dir.path()), 50).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let tso = tso.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for n in 0..2_000u32 {
                        // Sizes up to a whole millisecond's range, to cross borrows.
                        let count = if n % 500 == 0 {
                            LocalTso::BATCH_MAX
                        } else {
                            1 + (n + i) % 7
                        };
                        let first = match n % 2 {
                            0 => tso.next_batch(count).unwrap(),
                            _ => tso
                                .try_next_batch(count)
                                .unwrap_or_else(|| tso.next_batch(count).unwrap()),
                        };
                        got.push((first.0, u64::from(count)));
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<(u64, u64)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        for w in all.windows(2) {
            let (first, count) = w[0];
            let last = first + count - 1;
            assert!(last < w[1].0, "batches overlap: {:?} and {:?}", w[0], w[1]);
            assert_eq!(
                Timestamp(first).physical_ms(),
                Timestamp(last).physical_ms(),
                "a batch stays within one millisecond"
            );
        }
    }

    /// On a meta leader the window's write is a Raft round trip that needs the runtime
    /// threads async callers of `try_next_batch` run on; a raise holding the counters'
    /// lock across it stalled them (and the round trip) for the write's whole timeout.
    #[test]
    fn trying_for_a_batch_never_waits_for_the_windows_write() {
        const WAIT: std::time::Duration = std::time::Duration::from_secs(20);
        let dir = tempfile::tempdir().unwrap();
        let gated = Arc::new(flotilla_storage::testing::GatedEngine::new(engine(
            dir.path(),
        )));
        // A 1 ms window runs out at once, so the next batch must raise it.
        let tso = Arc::new(LocalTso::open(gated.clone(), 1).unwrap());
        let before = tso.next_ts().unwrap();
        let written = gated.entered();
        gated.set_shut(true);
        let raising = {
            let tso = tso.clone();
            std::thread::spawn(move || {
                // Bounded: the clock reaches past the window within a few milliseconds.
                loop {
                    if tso.try_next_batch(1).is_none() {
                        return tso.next_batch(1);
                    }
                }
            })
        };
        assert!(
            gated.await_entered(written + 1, WAIT),
            "the window was never raised"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let trying = {
            let tso = tso.clone();
            std::thread::spawn(move || {
                let _ = tx.send(tso.try_next_batch(1));
            })
        };
        let tried = rx.recv_timeout(WAIT);
        gated.set_shut(false);
        let tried = tried.expect("try_next_batch waited for the window's write");
        // The window is spent until the write lands: nothing is handed out past it.
        assert_eq!(tried, None);
        let raised = raising.join().unwrap().unwrap();
        trying.join().unwrap();
        assert!(raised > before);
        assert!(tso.next_ts().unwrap() > raised);
    }

    /// `get_ts` raising the window on an async worker thread must not stop the other
    /// tasks of that thread for the write: with one worker, a task that would free the
    /// write still runs while it waits.
    #[test]
    fn get_ts_raising_the_window_leaves_the_async_thread_to_other_tasks() {
        const WAIT: std::time::Duration = std::time::Duration::from_secs(20);
        let dir = tempfile::tempdir().unwrap();
        let gated = Arc::new(flotilla_storage::testing::GatedEngine::new(engine(
            dir.path(),
        )));
        let tso = Arc::new(LocalTso::open(gated.clone(), 1).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let written = gated.entered();
        gated.set_shut(true);
        let raising = {
            let tso = tso.clone();
            rt.spawn(async move {
                // Bounded: the clock passes the 1 ms window within a few milliseconds.
                while tso.try_next_batch(1).is_some() {}
                tso.get_ts().await
            })
        };
        assert!(
            gated.await_entered(written + 1, WAIT),
            "the window was never raised"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(());
        });
        let ran = rx.recv_timeout(WAIT);
        gated.set_shut(false);
        ran.expect("a task on the runtime waited for the window's write");
        let ts = rt.block_on(raising).unwrap().unwrap();
        assert!(tso.next_ts().unwrap() > ts);
    }

    /// A raise whose write takes longer than the window leaves the clock past the new
    /// window too; the batch is then handed out just past the last timestamp, below the
    /// window, rather than raising again and again (and failing).
    #[test]
    fn a_raise_slower_than_the_window_still_hands_out_timestamps_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let gated = Arc::new(flotilla_storage::testing::GatedEngine::new(engine(
            dir.path(),
        )));
        let tso = LocalTso::open(gated.clone(), 2).unwrap();
        gated.set_write_delay(std::time::Duration::from_millis(10));
        let persisted_end_ms = || {
            let bytes = gated.get(Cf::Meta, WINDOW_KEY).unwrap().unwrap();
            u64::from_be_bytes(bytes.try_into().unwrap())
        };
        let mut last = Timestamp::ZERO;
        for _ in 0..5 {
            // Let the clock pass the window (2 ms at most), so the call must raise it.
            let spent_at_ms = persisted_end_ms();
            while wall_clock_ms() < spent_at_ms {
                std::hint::spin_loop();
            }
            let raised_before = gated.entered();
            let ts = tso.next_ts().expect("a slow write is no reason to fail");
            assert!(ts > last);
            last = ts;
            assert!(
                ts.physical_ms() < persisted_end_ms(),
                "handed out past the persisted window"
            );
            // Raised once, its write outlasting the new window too.
            assert_eq!(gated.entered() - raised_before, 1);
            assert!(wall_clock_ms() >= persisted_end_ms());
        }
    }

    #[test]
    fn restart_resumes_above_the_persisted_window() {
        let dir = tempfile::tempdir().unwrap();
        let opened_after_ms = wall_clock_ms();
        let last = {
            // A window far in the future stands in for a clock that went backward after
            // the restart: the new incarnation must still not reissue timestamps.
            let tso = LocalTso::open(engine(dir.path()), 3_600_000).unwrap();
            tso.next_ts().unwrap()
        };
        let tso = LocalTso::open(engine(dir.path()), 1_000).unwrap();
        let first = tso.next_ts().unwrap();
        // Above the persisted window's end, which is an hour past the first open. (Not
        // an hour past `last`: the clock may move on between the open and `last`, as it
        // did on a loaded CI machine, failing the earlier form of this check.)
        assert!(first.physical_ms() >= opened_after_ms + 3_600_000);
        assert!(first > last);
    }
}
