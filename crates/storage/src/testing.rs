//! Engines for the tests of code above the storage seam. Small, and compiled always: a
//! cargo feature for them would build this crate and all its dependents twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::{Cf, DurabilityTicket, EngineRef, KvEngine, KvIter, StorageError, WriteBatch};

/// An engine whose writes wait while its gate is shut, as a meta leader's writes wait for
/// a Raft round trip that needs the very threads a caller may be blocking. Tests use it to
/// show that readers of some state never wait for a write of it. Its writes can also be
/// made slow (a loaded disk or a slow quorum).
pub struct GatedEngine {
    inner: EngineRef,
    /// How long every write takes at least.
    write_delay: Mutex<Duration>,
    shut: Mutex<bool>,
    moved: Condvar,
    /// Writes that reached the gate so far (passed or waiting).
    entered: AtomicUsize,
}

impl GatedEngine {
    /// Wraps `inner` with the gate open.
    pub fn new(inner: EngineRef) -> Self {
        Self {
            inner,
            write_delay: Mutex::new(Duration::ZERO),
            shut: Mutex::new(false),
            moved: Condvar::new(),
            entered: AtomicUsize::new(0),
        }
    }

    /// Shuts the gate (true) or opens it (false), letting waiting writes through.
    pub fn set_shut(&self, shut: bool) {
        *self.shut.lock() = shut;
        self.moved.notify_all();
    }

    /// Makes every later write take at least `delay`.
    pub fn set_write_delay(&self, delay: Duration) {
        *self.write_delay.lock() = delay;
    }

    /// Writes that reached the gate so far.
    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    /// Waits until `count` writes in all have reached the gate; false if `timeout` passed
    /// first.
    pub fn await_entered(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut shut = self.shut.lock();
        while self.entered() < count {
            if self.moved.wait_until(&mut shut, deadline).timed_out() {
                return self.entered() >= count;
            }
        }
        true
    }
}

impl KvEngine for GatedEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(cf, key)
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'a> {
        self.inner.scan(cf, start, end, reverse)
    }

    fn append(&self, batch: WriteBatch) -> Result<DurabilityTicket, StorageError> {
        let mut shut = self.shut.lock();
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.moved.notify_all();
        while *shut {
            self.moved.wait(&mut shut);
        }
        drop(shut);
        let delay = *self.write_delay.lock();
        if !delay.is_zero() {
            // The slowness under test, not a wait for another thread.
            std::thread::sleep(delay);
        }
        self.inner.append(batch)
    }

    fn sync_through(&self, ticket: DurabilityTicket) -> Result<(), StorageError> {
        self.inner.sync_through(ticket)
    }

    fn disk_space_bytes(&self) -> u64 {
        self.inner.disk_space_bytes()
    }
}
