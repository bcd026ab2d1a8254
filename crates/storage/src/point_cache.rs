//! A bounded cache of point reads for one column family (a row cache, as RocksDB's).
//!
//! An LSM point read probes the memtables and a table per level; for the `latest` CF, which
//! serves nearly every read of a row's newest version, that was a third of the server's CPU
//! under pgbench. The cache maps a key to its value or to "absent", and is kept exact:
//!
//! - A writer locks the shards of the keys it writes, commits to the engine, stores the new
//!   values, bumps each shard's generation and unlocks. A reader of those shards waits for
//!   that, so it never sees an entry older than the engine.
//! - A reader that misses notes the shard's generation, reads the engine without any lock
//!   and fills the entry only if the generation is unchanged: a value read from the engine
//!   while a writer was at work is never cached.
//!
//! Memory is bounded by `capacity_bytes` (split evenly between shards); past it the oldest
//! entries are evicted first.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;

use parking_lot::{Mutex, MutexGuard};

/// Independently locked parts; a power of two well above the number of cores.
const SHARDS: usize = 64;
/// Bookkeeping per entry besides its key and value bytes (map slot, queue slot, vectors).
const ENTRY_OVERHEAD_BYTES: usize = 96;

struct Entry {
    value: Option<Vec<u8>>,
    /// Matches the queue element that will evict this entry.
    stamp: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Vec<u8>, Entry, RandomState>,
    /// Keys in insertion order with their stamps; an element whose stamp no longer matches
    /// its entry is stale and skipped.
    queue: VecDeque<(Vec<u8>, u64)>,
    bytes: usize,
    next_stamp: u64,
    /// Bumped by every write to the shard; fills read before a write are refused.
    generation: u64,
}

fn entry_bytes(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    // The key is held twice: in the map and in the queue.
    2 * key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES
}

impl Shard {
    fn put(&mut self, key: &[u8], value: Option<Vec<u8>>, capacity_bytes: usize) {
        let size = entry_bytes(key, &value);
        if size > capacity_bytes {
            self.remove(key);
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(old) = self.map.insert(key.to_vec(), Entry { value, stamp }) {
            self.bytes -= entry_bytes(key, &old.value);
        }
        self.bytes += size;
        self.queue.push_back((key.to_vec(), stamp));
        while self.bytes > capacity_bytes {
            let Some((old_key, old_stamp)) = self.queue.pop_front() else {
                break;
            };
            if self.map.get(&old_key).is_some_and(|e| e.stamp == old_stamp) {
                let entry = self.map.remove(&old_key).expect("just seen");
                self.bytes -= entry_bytes(&old_key, &entry.value);
            }
        }
        // Rewrites leave stale queue elements behind; drop them before they outnumber the
        // live ones, so the queue stays within a constant factor of the map.
        if self.queue.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.queue
                .retain(|(k, s)| map.get(k).is_some_and(|e| e.stamp == *s));
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= entry_bytes(key, &old.value);
        }
    }
}

/// The outcome of a lookup.
pub(crate) enum Lookup {
    /// The value (or its absence) as the engine holds it now.
    Hit(Option<Vec<u8>>),
    /// Not cached; pass the ticket to `fill` with what the engine returns.
    Miss(FillTicket),
}

/// Lets a reader fill an entry only if no write touched its shard since the miss.
pub(crate) struct FillTicket {
    shard: usize,
    generation: u64,
}

/// A bounded, exact cache of point reads.
pub(crate) struct PointCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity_bytes: usize,
    hasher: RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What the row cache holds and how well it serves, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCacheStats {
    /// Lookups answered from the cache since start.
    pub hits: u64,
    /// Lookups that went to the engine since start.
    pub misses: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now, as the capacity counts them.
    pub bytes: u64,
    /// The configured bound.
    pub capacity_bytes: u64,
}

/// The shards a writer holds while its batch commits; see `PointCache::lock_for_write`.
pub(crate) struct WriteGuard<'a> {
    cache: &'a PointCache,
    shards: Vec<(usize, MutexGuard<'a, Shard>)>,
}

impl WriteGuard<'_> {
    fn shard(&mut self, key: &[u8]) -> &mut Shard {
        let index = self.cache.shard_of(key);
        let (_, guard) = self
            .shards
            .iter_mut()
            .find(|(i, _)| *i == index)
            .expect("the shard of every written key is locked");
        guard
    }

    /// Records the committed value of `key` (`None` = deleted).
    pub(crate) fn committed(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        let capacity = self.cache.shard_capacity_bytes;
        self.shard(key).put(key, value, capacity);
    }

    /// Forgets `key` (its commit failed, so the engine's state is unknown).
    pub(crate) fn forget(&mut self, key: &[u8]) {
        self.shard(key).remove(key);
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        for (_, shard) in &mut self.shards {
            shard.generation += 1;
        }
    }
}

impl PointCache {
    /// A cache holding at most about `capacity_bytes` of keys, values and bookkeeping.
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity_bytes: (capacity_bytes as usize) / SHARDS,
            hasher: RandomState::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    pub(crate) fn lookup(&self, key: &[u8]) -> Lookup {
        let index = self.shard_of(key);
        let shard = self.shards[index].lock();
        match shard.map.get(key) {
            Some(entry) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(entry.value.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss(FillTicket {
                    shard: index,
                    generation: shard.generation,
                })
            }
        }
    }

    /// Caches what the engine returned after a miss, unless a write intervened.
    pub(crate) fn fill(&self, ticket: FillTicket, key: &[u8], value: Option<Vec<u8>>) {
        let mut shard = self.shards[ticket.shard].lock();
        if shard.generation == ticket.generation {
            shard.put(key, value, self.shard_capacity_bytes);
        }
    }

    /// Locks the shards of `keys` (in shard order, so writers cannot deadlock) for the
    /// duration of a commit.
    pub(crate) fn lock_for_write<'k>(
        &self,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> WriteGuard<'_> {
        let mut indexes: Vec<usize> = keys.map(|k| self.shard_of(k)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        WriteGuard {
            cache: self,
            shards: indexes
                .into_iter()
                .map(|i| (i, self.shards[i].lock()))
                .collect(),
        }
    }

    pub(crate) fn stats(&self) -> RowCacheStats {
        let mut stats = RowCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            capacity_bytes: (self.shard_capacity_bytes * SHARDS) as u64,
            ..RowCacheStats::default()
        };
        for shard in &self.shards {
            let shard = shard.lock();
            stats.entries += shard.map.len() as u64;
            stats.bytes += shard.bytes as u64;
        }
        stats
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.stats().bytes as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(cache: &PointCache, key: &[u8]) -> Option<Option<Vec<u8>>> {
        match cache.lookup(key) {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn fills_and_writes_are_served_until_evicted() {
        let cache = PointCache::new(1 << 20);
        let Lookup::Miss(ticket) = cache.lookup(b"a") else {
            panic!("empty cache hit")
        };
        cache.fill(ticket, b"a", Some(b"1".to_vec()));
        assert_eq!(hit(&cache, b"a"), Some(Some(b"1".to_vec())));
        {
            let mut w = cache.lock_for_write([&b"a"[..], b"b"].into_iter());
            w.committed(b"a", None);
            w.committed(b"b", Some(b"2".to_vec()));
        }
        assert_eq!(hit(&cache, b"a"), Some(None));
        assert_eq!(hit(&cache, b"b"), Some(Some(b"2".to_vec())));
    }

    #[test]
    fn a_fill_read_before_a_write_is_refused() {
        let cache = PointCache::new(1 << 20);
        let Lookup::Miss(ticket) = cache.lookup(b"k") else {
            panic!("empty cache hit")
        };
        // A writer commits k after the reader missed but before it fills.
        {
            let mut w = cache.lock_for_write([&b"k"[..]].into_iter());
            w.committed(b"k", Some(b"new".to_vec()));
        }
        cache.fill(ticket, b"k", Some(b"old".to_vec()));
        assert_eq!(hit(&cache, b"k"), Some(Some(b"new".to_vec())));
        // Likewise when the writer failed and forgot the key.
        let Lookup::Miss(ticket) = cache.lookup(b"j") else {
            panic!("empty cache hit")
        };
        cache.lock_for_write([&b"j"[..]].into_iter()).forget(b"j");
        cache.fill(ticket, b"j", Some(b"stale".to_vec()));
        assert_eq!(hit(&cache, b"j"), None);
    }

    #[test]
    fn memory_stays_within_capacity_under_churn() {
        let capacity = 64 * 1024;
        let cache = PointCache::new(capacity as u64);
        for round in 0..20u32 {
            for i in 0..2_000u32 {
                let key = i.to_be_bytes();
                let mut w = cache.lock_for_write([&key[..]].into_iter());
                w.committed(&key, Some(vec![round as u8; 40]));
            }
            assert!(cache.bytes() <= capacity, "{} > {capacity}", cache.bytes());
        }
        for shard in &cache.shards {
            let shard = shard.lock();
            assert!(shard.queue.len() <= 2 * shard.map.len() + 65);
        }
        // The newest entries survive eviction.
        let key = 1_999u32.to_be_bytes();
        assert_eq!(hit(&cache, &key), Some(Some(vec![19; 40])));
        // An entry larger than a shard is not cached at all.
        let big = vec![0u8; capacity];
        let mut w = cache.lock_for_write([&b"big"[..]].into_iter());
        w.committed(b"big", Some(big));
        drop(w);
        assert_eq!(hit(&cache, b"big"), None);
    }
}
