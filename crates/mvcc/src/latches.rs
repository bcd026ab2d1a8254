//! Per-key latches: serialise read-modify-write operations on the same keys.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Condvar, Mutex};

/// One latch: whether it is held, and where its waiters sleep. The mutex guards only the
/// flag, for an instant; the latch itself may be held across a wait for Raft, and its
/// guard may move between threads (an async task), which a mutex guard cannot.
#[derive(Default)]
struct Slot {
    held: Mutex<bool>,
    released: Condvar,
}

/// A fixed array of latches; a key maps to one slot. Operations take the slots of all their
/// keys in ascending slot order, so two operations can never deadlock on latches.
pub(crate) struct Latches {
    slots: Vec<Slot>,
}

/// Held latches; released on drop.
pub(crate) struct LatchGuard<'a> {
    latches: &'a Latches,
    slots: Vec<usize>,
}

impl Drop for LatchGuard<'_> {
    fn drop(&mut self) {
        for &s in self.slots.iter().rev() {
            self.latches.release(s);
        }
    }
}

impl Latches {
    /// `slot_count` latches; more slots mean fewer false conflicts between unrelated keys.
    pub(crate) fn new(slot_count: usize) -> Self {
        assert!(slot_count > 0);
        Self {
            slots: (0..slot_count).map(|_| Slot::default()).collect(),
        }
    }

    fn slot(&self, key: &[u8]) -> usize {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % self.slots.len() as u64) as usize
    }

    fn slots_of<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<usize> {
        let mut slots: Vec<usize> = keys.iter().map(|k| self.slot(k.as_ref())).collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    fn flag(&self, s: usize) -> std::sync::MutexGuard<'_, bool> {
        // The flag's mutex is never held while user code runs, so it cannot be poisoned by
        // a panic that left a latch half-changed.
        self.slots[s]
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn release(&self, s: usize) {
        let mut held = self.flag(s);
        debug_assert!(*held, "released a latch that was not held");
        *held = false;
        drop(held);
        // All waiters: another slot's keys may hash here, and each re-checks the flag.
        self.slots[s].released.notify_all();
    }

    /// Acquires the latches of `keys`, waiting for their holders.
    pub(crate) fn acquire<'a, K: AsRef<[u8]>>(&'a self, keys: &[K]) -> LatchGuard<'a> {
        let slots = self.slots_of(keys);
        for &s in &slots {
            let mut held = self.flag(s);
            while *held {
                held = self.slots[s]
                    .released
                    .wait(held)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            *held = true;
        }
        LatchGuard {
            latches: self,
            slots,
        }
    }

    /// Acquires the latches of `keys` if none is held, without waiting; `None` (holding
    /// nothing) otherwise. For callers that must not block: an async task whose thread
    /// may be the one that lets the holder finish.
    pub(crate) fn try_acquire<'a, K: AsRef<[u8]>>(&'a self, keys: &[K]) -> Option<LatchGuard<'a>> {
        let slots = self.slots_of(keys);
        let mut taken = LatchGuard {
            latches: self,
            slots: Vec::with_capacity(slots.len()),
        };
        for s in slots {
            let mut held = self.flag(s);
            if *held {
                // `taken` releases what was acquired so far.
                return None;
            }
            *held = true;
            taken.slots.push(s);
        }
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_held_latch_refuses_try_and_blocks_acquire_until_released() {
        let latches = Latches::new(8);
        let guard = latches.try_acquire(&[b"a"]).expect("free");
        assert!(latches.try_acquire(&[b"a"]).is_none());
        // Refused as a whole: another key taken along is not left held.
        assert!(latches.try_acquire(&[b"a".as_slice(), b"b"]).is_none());
        let released = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _g = latches.acquire(&[b"a"]);
                assert!(released.load(Ordering::SeqCst), "acquired while still held");
            });
            // The guard may be released by another thread than the one that took it.
            scope.spawn(|| {
                released.store(true, Ordering::SeqCst);
                drop(guard);
            });
        });
        assert!(latches.try_acquire(&[b"a".as_slice(), b"b"]).is_some());
    }
}
