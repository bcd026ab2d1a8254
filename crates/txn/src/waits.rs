//! Wake-ups for transactions waiting on locks.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use tokio::sync::Notify;

/// Number of wake-up buckets; keys share a bucket by hash, so a wake-up may be spurious
/// (the waiter re-checks) but is never lost.
const BUCKETS: usize = 1024;

/// Lock-release notifications, bucketed by key.
pub(crate) struct LockWaits {
    buckets: Vec<Notify>,
}

impl LockWaits {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| Notify::new()).collect(),
        }
    }

    /// The notifier for `key`.
    pub(crate) fn bucket(&self, key: &[u8]) -> &Notify {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        &self.buckets[(hasher.finish() % BUCKETS as u64) as usize]
    }

    /// Wakes every waiter on any of `keys`.
    pub(crate) fn released<K: AsRef<[u8]>>(&self, keys: &[K]) {
        for key in keys {
            self.bucket(key.as_ref()).notify_waiters();
        }
    }
}
