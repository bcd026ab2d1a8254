//! The locks an MVCC keeps only in memory, and the bound on their bytes.
//!
//! Pessimistic locks and volatile prewrite locks live in memory (see `Mvcc`): a statement
//! that locks a million rows, or many transactions at once, would otherwise hold as much
//! memory as they like. Past a region's or the store's budget a lock is written to the
//! lock CF instead, as any durable lock is: slower (a journal or Raft write), never
//! refused. TiKV bounds its in-memory pessimistic locks the same way.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::records::Lock;

/// What one in-memory lock is counted as, besides its key, primary and value: the map
/// node and the lock's fixed fields.
const LOCK_OVERHEAD_BYTES: usize = 96;

/// Bytes of in-memory locks allowed per region (one MVCC) and per store (every MVCC
/// sharing this budget).
#[derive(Debug)]
pub struct MemoryLockBudget {
    region_bytes_max: usize,
    store_bytes_max: usize,
    store_used_bytes: AtomicUsize,
}

impl MemoryLockBudget {
    /// Default bytes of in-memory locks per region: 4 MiB, some 30,000 row locks.
    pub const REGION_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
    /// Default bytes of in-memory locks per store: 256 MiB.
    pub const STORE_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;

    /// A budget shared by the MVCCs given it.
    pub fn new(region_bytes_max: usize, store_bytes_max: usize) -> Arc<Self> {
        Arc::new(Self {
            region_bytes_max,
            store_bytes_max,
            store_used_bytes: AtomicUsize::new(0),
        })
    }

    /// Bytes of in-memory locks held now under this budget, by every MVCC sharing it.
    pub fn used_bytes(&self) -> usize {
        self.store_used_bytes.load(Ordering::Relaxed)
    }
}

impl Default for MemoryLockBudget {
    fn default() -> Self {
        Self {
            region_bytes_max: Self::REGION_BYTES_MAX_DEFAULT,
            store_bytes_max: Self::STORE_BYTES_MAX_DEFAULT,
            store_used_bytes: AtomicUsize::new(0),
        }
    }
}

/// What `lock` on a key of `key_len` bytes counts as against the budget.
pub(crate) fn lock_bytes(key_len: usize, lock: &Lock) -> usize {
    entry_bytes(
        key_len,
        lock.primary.len(),
        lock.short_value.as_ref().map_or(0, Vec::len),
    )
}

/// What a lock on a key of `key_len` bytes, of a primary of `primary_len` bytes, holding
/// a value of `value_len` bytes, counts as against the budget.
pub(crate) fn entry_bytes(key_len: usize, primary_len: usize, value_len: usize) -> usize {
    key_len + primary_len + value_len + LOCK_OVERHEAD_BYTES
}

/// One MVCC's in-memory locks by encoded key, with their bytes counted here and in the
/// shared budget. Reads go through `Deref`; every change through `insert` and `remove`.
#[derive(Debug)]
pub(crate) struct MemoryLocks {
    locks: BTreeMap<Vec<u8>, Lock>,
    bytes: usize,
    budget: Arc<MemoryLockBudget>,
}

impl MemoryLocks {
    pub(crate) fn new(budget: Arc<MemoryLockBudget>) -> Self {
        Self {
            locks: BTreeMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// Whether `added` more bytes stay within the region's and the store's budget.
    pub(crate) fn admits(&self, added: usize) -> bool {
        self.bytes.saturating_add(added) <= self.budget.region_bytes_max
            && self.budget.used_bytes().saturating_add(added) <= self.budget.store_bytes_max
    }

    pub(crate) fn insert(&mut self, key: Vec<u8>, lock: Lock) {
        let key_len = key.len();
        let added = lock_bytes(key_len, &lock);
        let removed = self
            .locks
            .insert(key, lock)
            .map_or(0, |old| lock_bytes(key_len, &old));
        self.count(added, removed);
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Lock> {
        let old = self.locks.remove(key)?;
        self.count(0, lock_bytes(key.len(), &old));
        Some(old)
    }

    fn count(&mut self, added: usize, removed: usize) {
        self.bytes = self.bytes + added - removed;
        self.budget
            .store_used_bytes
            .fetch_add(added, Ordering::Relaxed);
        self.budget
            .store_used_bytes
            .fetch_sub(removed, Ordering::Relaxed);
    }
}

impl Deref for MemoryLocks {
    type Target = BTreeMap<Vec<u8>, Lock>;

    fn deref(&self) -> &Self::Target {
        &self.locks
    }
}

impl Drop for MemoryLocks {
    fn drop(&mut self) {
        // The MVCC goes (its region moved away or lost its leader): so do its locks.
        self.budget
            .store_used_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::LockKind;
    use flotilla_types::Timestamp;

    fn lock(value_len: usize) -> Lock {
        Lock {
            kind: LockKind::Put,
            primary: b"p".to_vec(),
            start_ts: Timestamp(1),
            for_update_ts: Timestamp(1),
            ttl_ms: 1,
            short_value: Some(vec![0; value_len]),
            key_only: false,
        }
    }

    #[test]
    fn bytes_are_counted_per_region_and_per_store_and_given_back() {
        let one = lock_bytes(1, &lock(100));
        let budget = MemoryLockBudget::new(2 * one, 3 * one);
        let mut a = MemoryLocks::new(budget.clone());
        let mut b = MemoryLocks::new(budget.clone());
        a.insert(b"a".to_vec(), lock(100));
        assert!(a.admits(one));
        a.insert(b"b".to_vec(), lock(100));
        assert!(!a.admits(1), "the region's bound");
        // Replacing a lock counts the difference only.
        a.insert(b"b".to_vec(), lock(100));
        assert_eq!(budget.used_bytes(), 2 * one);
        assert!(b.admits(one));
        b.insert(b"c".to_vec(), lock(100));
        assert!(!b.admits(1), "the store's bound, though b holds one lock");
        assert_eq!(a.remove(b"a").map(|l| l.primary), Some(b"p".to_vec()));
        assert_eq!(a.remove(b"a"), None);
        assert!(b.admits(one));
        drop(a);
        assert_eq!(budget.used_bytes(), one);
        drop(b);
        assert_eq!(budget.used_bytes(), 0);
    }
}
