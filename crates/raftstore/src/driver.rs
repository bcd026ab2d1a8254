//! Runs a `Store` on a thread of its own: requests arrive through a bounded mailbox, the
//! Raft clock ticks every `tick_interval`, and each loop turn handles every waiting request
//! before one `process_ready` round, so a busy store batches more per round.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::RaftStoreError;
use crate::store::{Store, StoreMsg};

/// How the driver runs its store.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The Raft clock: elections take `election_ticks` of these.
    pub tick_interval: Duration,
    /// Requests that may wait in the mailbox; past it, senders get `ServerIsBusy`.
    pub mailbox_capacity: usize,
    /// Requests handled per loop turn before a round runs, so one flood cannot starve
    /// ticks and persistence.
    pub max_batch_messages: usize,
}

impl Default for DriverConfig {
    /// 100 ms ticks (with 10 election ticks: 1–2 s failover), 65,536 queued requests,
    /// 4,096 per round.
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_millis(100),
            mailbox_capacity: 65_536,
            max_batch_messages: 4096,
        }
    }
}

/// A request the driver runs against its store on its thread.
pub type Inspect = Box<dyn FnOnce(&Store) + Send>;

enum DriverMsg {
    Store(StoreMsg),
    Inspect(Inspect),
}

/// A cloneable handle that sends requests to a running store.
#[derive(Clone)]
pub struct StoreRouter {
    tx: SyncSender<DriverMsg>,
    store_id: u64,
}

impl StoreRouter {
    /// Queues a request. A full mailbox or a stopped store is answered at once.
    pub fn send(&self, msg: StoreMsg) -> Result<(), RaftStoreError> {
        self.push(DriverMsg::Store(msg))
    }

    /// Runs `f` on the store's thread between rounds (status pages, tests).
    pub fn inspect(&self, f: Inspect) -> Result<(), RaftStoreError> {
        self.push(DriverMsg::Inspect(f))
    }

    /// The store this router reaches.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    fn push(&self, msg: DriverMsg) -> Result<(), RaftStoreError> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(RaftStoreError::ServerIsBusy(format!(
                "store {} mailbox is full (raftstore mailbox_capacity)",
                self.store_id
            ))),
            Err(TrySendError::Disconnected(_)) => Err(RaftStoreError::ServerIsBusy(format!(
                "store {} is stopped",
                self.store_id
            ))),
        }
    }
}

/// The thread running one store. Dropping it stops the thread.
pub struct StoreDriver {
    router: StoreRouter,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StoreDriver {
    /// Starts the store's thread.
    ///
    /// Panics if it would tick faster than the store's `StoreConfig::tick_interval`: the
    /// store's leases would then outlast the followers' refusal to elect anyone else.
    pub fn spawn(store: Store, cfg: DriverConfig) -> Self {
        assert!(
            cfg.tick_interval >= store.tick_interval(),
            "the driver ticks every {:?}, faster than the store's tick_interval {:?}",
            cfg.tick_interval,
            store.tick_interval()
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.mailbox_capacity);
        let store_id = store.store_id();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("raftstore-{store_id}"))
            .spawn(move || run(store, rx, cfg, thread_stop))
            .expect("spawn the raftstore thread");
        Self {
            router: StoreRouter { tx, store_id },
            stop,
            thread: Some(thread),
        }
    }

    /// A handle for sending requests.
    pub fn router(&self) -> StoreRouter {
        self.router.clone()
    }
}

impl Drop for StoreDriver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the thread if it is waiting for a message.
        let _ = self.router.inspect(Box::new(|_| {}));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A round of `Store::process_ready` that takes longer than this is logged.
const SLOW_ROUND_WARN: Duration = Duration::from_millis(200);

fn run(mut store: Store, rx: Receiver<DriverMsg>, cfg: DriverConfig, stop: Arc<AtomicBool>) {
    // The first tick comes after a random part of an interval, so that stores started
    // together (a playground) do not tick in step (see `next_tick_after`).
    let mut next_tick = Instant::now() + random_part_of(cfg.tick_interval);
    let mut busy = false;
    while !stop.load(Ordering::Acquire) {
        let wait = if busy {
            Duration::ZERO
        } else {
            next_tick.saturating_duration_since(Instant::now())
        };
        let first = match rx.recv_timeout(wait) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut handled = 0;
        let mut next = first;
        while let Some(msg) = next {
            match msg {
                DriverMsg::Store(m) => store.handle(m),
                DriverMsg::Inspect(f) => f(&store),
            }
            handled += 1;
            if handled >= cfg.max_batch_messages {
                break;
            }
            next = rx.try_recv().ok();
        }
        if Instant::now() >= next_tick {
            store.tick();
            next_tick = next_tick_after(next_tick, cfg.tick_interval, Instant::now());
        }
        let round_started = Instant::now();
        busy = match store.process_ready() {
            Ok(active) => {
                let took = round_started.elapsed();
                if took >= SLOW_ROUND_WARN {
                    // Every region of the store waited this long (its followers' acks and
                    // its leaders' answers): a cause of slow failovers and tail latency.
                    let times = store.last_round_times();
                    tracing::warn!(
                        store = store.store_id(),
                        took_ms = took.as_millis() as u64,
                        log_write_ms = times.append.as_millis() as u64,
                        log_sync_ms = times.sync.as_millis() as u64,
                        apply_write_ms = times.apply_write.as_millis() as u64,
                        "slow raftstore round"
                    );
                }
                active
            }
            Err(e) => {
                // The engine failed (I/O error, poisoned after a failed fsync): stop rather
                // than acknowledge anything that may not be durable.
                tracing::error!(store = store.store_id(), "raftstore stopped: {e}");
                return;
            }
        };
    }
}

/// When the tick after `due` (which just fired) is due. After a stall (a paused process,
/// a slow disk) the missed ticks are skipped, not replayed: one tick, then the normal
/// pace. The clock keeps its phase: restarting it at the end of the stall would put in
/// step every store that waited on the same disk flush, and stores whose ticks fall
/// together also time out together when a leader dies, both win a pre-vote, and split the
/// vote (one more election timeout; seen as a 2.6 s failover).
fn next_tick_after(due: Instant, interval: Duration, now: Instant) -> Instant {
    let next = due + interval;
    if next > now {
        return next;
    }
    let interval_ns = interval.as_nanos().max(1);
    let skipped = (now - next).as_nanos() / interval_ns + 1;
    next + Duration::from_nanos(u64::try_from(skipped * interval_ns).unwrap_or(u64::MAX))
}

/// A random duration in `[0, whole)`, from the standard library's per-process hash keys
/// (no generator needed for one draw).
fn random_part_of(whole: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let draw = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let whole_ns = u64::try_from(whole.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(draw % whole_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_on_time_is_followed_one_interval_later() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        let due = start + Duration::from_millis(30);
        let now = due + Duration::from_millis(2);
        assert_eq!(next_tick_after(due, interval, now), due + interval);
    }

    #[test]
    fn after_a_stall_missed_ticks_are_skipped_and_the_phase_is_kept() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        let due = start + Duration::from_millis(30);
        // The thread ran again 350 ms after the tick was due.
        let now = due + Duration::from_millis(350);
        let next = next_tick_after(due, interval, now);
        assert!(next > now, "a missed tick is not replayed");
        assert!(next - now <= interval, "the normal pace resumes");
        let phase = (next - due).as_nanos() % interval.as_nanos();
        assert_eq!(
            phase, 0,
            "the clock kept its phase (ticks at 30 ms past every 100 ms)"
        );
        assert_eq!(next, due + Duration::from_millis(400));
    }

    #[test]
    fn a_random_part_is_less_than_the_whole() {
        let whole = Duration::from_millis(100);
        for _ in 0..100 {
            assert!(random_part_of(whole) < whole);
        }
        assert_eq!(random_part_of(Duration::ZERO), Duration::ZERO);
    }
}
