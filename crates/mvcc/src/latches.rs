//! Per-key latches: serialise read-modify-write operations on the same keys.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use parking_lot::{Mutex, MutexGuard};

/// A fixed array of mutexes; a key maps to one slot. Operations take the slots of all their
/// keys in ascending slot order, so two operations can never deadlock on latches.
pub(crate) struct Latches {
    slots: Vec<Mutex<()>>,
}

/// Held latches; released on drop.
pub(crate) struct LatchGuard<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
}

impl Latches {
    /// `slot_count` latches; more slots mean fewer false conflicts between unrelated keys.
    pub(crate) fn new(slot_count: usize) -> Self {
        assert!(slot_count > 0);
        Self {
            slots: (0..slot_count).map(|_| Mutex::new(())).collect(),
        }
    }

    fn slot(&self, key: &[u8]) -> usize {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % self.slots.len() as u64) as usize
    }

    /// Acquires the latches of `keys`.
    pub(crate) fn acquire<'a, K: AsRef<[u8]>>(&'a self, keys: &[K]) -> LatchGuard<'a> {
        let mut slots: Vec<usize> = keys.iter().map(|k| self.slot(k.as_ref())).collect();
        slots.sort_unstable();
        slots.dedup();
        LatchGuard {
            _guards: slots.into_iter().map(|s| self.slots[s].lock()).collect(),
        }
    }
}
