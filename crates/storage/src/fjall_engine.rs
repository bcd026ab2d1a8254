use std::path::Path;

use fjall::Readable;

use crate::engine::{
    Cf, DurabilityTicket, KvEngine, KvIter, ReadView, StorageError, WriteBatch, WriteOp, bounds,
};
use crate::group_commit::GroupCommit;
use crate::point_cache::{Lookup, PointCache};

/// When a write asked to be durable is considered durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// fsync (fdatasync) the journal before acknowledging; concurrent writers share one
    /// fsync. Survives power loss. The default.
    #[default]
    Fsync,
    /// Write to the OS page cache only: survives a process crash (kill -9) but not power
    /// loss or a kernel crash.
    Buffered,
}

/// Tunables of the fjall engine.
#[derive(Debug, Clone)]
pub struct FjallOptions {
    /// Block cache size in bytes.
    pub cache_size_bytes: u64,
    /// Bytes of the point-read cache of the `latest` CF (newest version of each row);
    /// 0 disables it. See `point_cache`.
    pub point_cache_bytes: u64,
    /// Durability of writes that ask for it.
    pub sync_policy: SyncPolicy,
}

impl Default for FjallOptions {
    fn default() -> Self {
        Self {
            cache_size_bytes: 256 * 1024 * 1024,
            point_cache_bytes: 512 * 1024 * 1024,
            sync_policy: SyncPolicy::Fsync,
        }
    }
}

/// The storage engine on fjall: one database, one keyspace per column family.
pub struct FjallEngine {
    db: fjall::Database,
    keyspaces: [fjall::Keyspace; 6],
    sync_policy: SyncPolicy,
    group_commit: GroupCommit,
    /// Point reads of `Cf::Latest`, when enabled.
    latest_cache: Option<PointCache>,
}

fn engine_err(e: fjall::Error) -> StorageError {
    StorageError::Engine(e.to_string())
}

impl FjallEngine {
    /// Opens (or creates) the engine in `dir`, recovering from the journal after a crash.
    pub fn open(dir: &Path, options: &FjallOptions) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Engine(format!("create {}: {e}", dir.display())))?;
        let db = fjall::Database::builder(dir)
            .cache_size(options.cache_size_bytes)
            .open()
            .map_err(engine_err)?;
        let open = |cf: Cf| {
            db.keyspace(cf.name(), || {
                let options = fjall::KeyspaceCreateOptions::default();
                match cf {
                    // Serves nearly every point read: a hash index in each data block
                    // finds a key without a binary search and linear scan of the block.
                    Cf::Latest => options
                        .data_block_hash_ratio_policy(fjall::config::HashRatioPolicy::all(0.75)),
                    _ => options,
                }
            })
        };
        let keyspaces = [
            open(Cf::Default).map_err(engine_err)?,
            open(Cf::Lock).map_err(engine_err)?,
            open(Cf::Write).map_err(engine_err)?,
            open(Cf::Meta).map_err(engine_err)?,
            open(Cf::Latest).map_err(engine_err)?,
            open(Cf::Raft).map_err(engine_err)?,
        ];
        Ok(Self {
            db,
            keyspaces,
            sync_policy: options.sync_policy,
            group_commit: GroupCommit::default(),
            latest_cache: (options.point_cache_bytes > 0)
                .then(|| PointCache::new(options.point_cache_bytes)),
        })
    }

    fn keyspace(&self, cf: Cf) -> &fjall::Keyspace {
        &self.keyspaces[cf_slot(cf)]
    }
}

/// Where a column family's keyspace sits in `FjallEngine::keyspaces` (the order `open`
/// makes them in).
fn cf_slot(cf: Cf) -> usize {
    match cf {
        Cf::Default => 0,
        Cf::Lock => 1,
        Cf::Write => 2,
        Cf::Meta => 3,
        Cf::Latest => 4,
        Cf::Raft => 5,
    }
}

/// Drops every op that a later op of the same batch on the same key overrides. fjall gives
/// all items of a batch one sequence number, so two writes of one key in a batch must not
/// both reach it: which one a reader would see is not defined.
fn last_write_per_key(ops: Vec<WriteOp>) -> Vec<WriteOp> {
    fn key_of(op: &WriteOp) -> (Cf, &[u8]) {
        match op {
            WriteOp::Put { cf, key, .. } | WriteOp::Delete { cf, key } => (*cf, key.as_slice()),
        }
    }
    if ops.len() < 2 {
        return ops;
    }
    let mut last = std::collections::HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        last.insert(key_of(op), i);
    }
    if last.len() == ops.len() {
        return ops;
    }
    let keep: Vec<bool> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| last.get(&key_of(op)) == Some(&i))
        .collect();
    drop(last);
    ops.into_iter()
        .zip(keep)
        .filter_map(|(op, keep)| keep.then_some(op))
        .collect()
}

/// A fjall snapshot: reads see the sequence number it was taken at.
struct FjallView {
    snapshot: fjall::Snapshot,
    keyspaces: [fjall::Keyspace; 6],
}

impl ReadView for FjallView {
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: &[u8]) -> KvIter<'a> {
        let keyspace = &self.keyspaces[cf_slot(cf)];
        Box::new(
            self.snapshot
                .range(keyspace, bounds(start, end))
                .map(|guard: fjall::Guard| {
                    guard
                        .into_inner()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .map_err(engine_err)
                }),
        )
    }
}

impl KvEngine for FjallEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let read = || -> Result<Option<Vec<u8>>, StorageError> {
            let value = self.keyspace(cf).get(key).map_err(engine_err)?;
            Ok(value.map(|v| v.to_vec()))
        };
        match (&self.latest_cache, cf) {
            (Some(cache), Cf::Latest) => match cache.lookup(key) {
                Lookup::Hit(value) => Ok(value),
                Lookup::Miss(ticket) => {
                    let value = read()?;
                    cache.fill(ticket, key, value.clone());
                    Ok(value)
                }
            },
            _ => read(),
        }
    }

    fn read_view(&self) -> Option<Box<dyn ReadView>> {
        Some(Box::new(FjallView {
            snapshot: self.db.snapshot(),
            keyspaces: self.keyspaces.clone(),
        }))
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'a> {
        let iter = self.keyspace(cf).range(bounds(start, end));
        let convert = |guard: fjall::Guard| {
            guard
                .into_inner()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(engine_err)
        };
        if reverse {
            Box::new(iter.rev().map(convert))
        } else {
            Box::new(iter.map(convert))
        }
    }

    fn append(&self, batch: WriteBatch) -> Result<DurabilityTicket, StorageError> {
        if batch.is_empty() {
            // Nothing new to make durable; a ticket for what is already appended is exact.
            return Ok(DurabilityTicket(self.group_commit.current()));
        }
        // The new `latest` values, for the cache, whose shards stay locked until the batch
        // is in the engine.
        let latest: Vec<(Vec<u8>, Option<Vec<u8>>)> = match &self.latest_cache {
            Some(_) => batch
                .ops()
                .iter()
                .filter_map(|op| match op {
                    WriteOp::Put {
                        cf: Cf::Latest,
                        key,
                        value,
                    } => Some((key.clone(), Some(value.clone()))),
                    WriteOp::Delete {
                        cf: Cf::Latest,
                        key,
                    } => Some((key.clone(), None)),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        let mut cache_guard = match &self.latest_cache {
            Some(cache) if !latest.is_empty() => {
                Some(cache.lock_for_write(latest.iter().map(|(k, _)| k.as_slice())))
            }
            _ => None,
        };
        let mut fjall_batch = self.db.batch();
        for op in last_write_per_key(batch.into_ops()) {
            match op {
                WriteOp::Put { cf, key, value } => {
                    fjall_batch.insert(self.keyspace(cf), key, value)
                }
                WriteOp::Delete { cf, key } => fjall_batch.remove(self.keyspace(cf), key),
            }
        }
        // Appending to the journal is atomic for the whole batch: recovery replays it whole
        // or not at all. Durability is added by sync_through, shared between writers. The
        // sequence number is taken after the append, so a sync that covers it covers the
        // batch.
        let committed = fjall_batch.commit().map_err(engine_err);
        if let Some(guard) = &mut cache_guard {
            for (key, value) in latest {
                match &committed {
                    Ok(()) => guard.committed(&key, value),
                    Err(_) => guard.forget(&key),
                }
            }
        }
        drop(cache_guard);
        committed?;
        Ok(DurabilityTicket(self.group_commit.appended()))
    }

    fn sync_through(&self, ticket: DurabilityTicket) -> Result<(), StorageError> {
        let mode = match self.sync_policy {
            SyncPolicy::Fsync => fjall::PersistMode::SyncData,
            SyncPolicy::Buffered => fjall::PersistMode::Buffer,
        };
        self.group_commit
            .wait_durable(ticket.0, || {
                self.db.persist(mode).map_err(|e| e.to_string())
            })
            .map_err(StorageError::Poisoned)
    }

    fn disk_space_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    fn row_cache_stats(&self) -> crate::RowCacheStats {
        self.latest_cache
            .as_ref()
            .map(PointCache::stats)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(
        engine: &FjallEngine,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        reverse: bool,
    ) -> Vec<Vec<u8>> {
        engine
            .scan(cf, start, end, reverse)
            .map(|r| r.unwrap().0)
            .collect()
    }

    #[test]
    fn a_read_view_sees_what_was_appended_before_it_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let engine = FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(Cf::Write, b"a".to_vec(), b"1".to_vec());
        batch.put(Cf::Latest, b"b".to_vec(), b"2".to_vec());
        // Appended, not synced: a view sees what is visible, durable or not.
        let _ticket = engine.append(batch).unwrap();
        let view = engine.read_view().expect("fjall has read views");
        let mut batch = WriteBatch::new();
        batch.put(Cf::Write, b"a".to_vec(), b"changed".to_vec());
        batch.put(Cf::Write, b"c".to_vec(), b"3".to_vec());
        batch.delete(Cf::Latest, b"b".to_vec());
        let _ticket = engine.append(batch).unwrap();
        // Read on another thread, as a snapshot build does.
        let seen = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for cf in [Cf::Write, Cf::Latest] {
                for item in view.scan(cf, b"", b"") {
                    seen.push(item.unwrap());
                }
            }
            seen
        })
        .join()
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(collect(&engine, Cf::Write, b"", b"", false).len(), 2);
    }

    #[test]
    fn batches_are_atomic_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap();
            let mut batch = WriteBatch::new();
            batch.put(Cf::Write, b"a".to_vec(), b"1".to_vec());
            batch.put(Cf::Lock, b"a".to_vec(), b"L".to_vec());
            batch.put(Cf::Write, b"b".to_vec(), b"2".to_vec());
            engine.write(batch, true).unwrap();
            let mut batch = WriteBatch::new();
            batch.delete(Cf::Lock, b"a".to_vec());
            engine.write(batch, true).unwrap();
        }
        let engine = FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap();
        assert_eq!(engine.get(Cf::Write, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(Cf::Lock, b"a").unwrap(), None);
        assert_eq!(engine.get(Cf::Default, b"a").unwrap(), None);
    }

    #[test]
    fn the_last_write_of_a_key_in_a_batch_wins_also_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap();
            let mut batch = WriteBatch::new();
            for i in 0..50u8 {
                batch.put(Cf::Raft, b"state".to_vec(), vec![i]);
                batch.put(Cf::Raft, vec![b'k', i], vec![i]);
            }
            batch.put(Cf::Raft, b"gone".to_vec(), b"x".to_vec());
            batch.delete(Cf::Raft, b"gone".to_vec());
            batch.delete(Cf::Latest, b"back".to_vec());
            batch.put(Cf::Latest, b"back".to_vec(), b"y".to_vec());
            engine.write(batch, true).unwrap();
            assert_eq!(engine.get(Cf::Raft, b"state").unwrap(), Some(vec![49]));
            assert_eq!(engine.get(Cf::Raft, b"gone").unwrap(), None);
            assert_eq!(
                engine.get(Cf::Latest, b"back").unwrap(),
                Some(b"y".to_vec())
            );
        }
        // Journal replay must come to the same answer.
        let engine = FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap();
        assert_eq!(engine.get(Cf::Raft, b"state").unwrap(), Some(vec![49]));
        assert_eq!(engine.get(Cf::Raft, b"gone").unwrap(), None);
        assert_eq!(engine.get(Cf::Raft, &[b'k', 7]).unwrap(), Some(vec![7]));
        assert_eq!(
            engine.get(Cf::Latest, b"back").unwrap(),
            Some(b"y".to_vec())
        );
    }

    #[test]
    fn scan_respects_bounds_and_direction() {
        let dir = tempfile::tempdir().unwrap();
        let engine = FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap();
        let mut batch = WriteBatch::new();
        for k in [b"a", b"b", b"c", b"d"] {
            batch.put(Cf::Default, k.to_vec(), vec![]);
        }
        engine.write(batch, false).unwrap();
        assert_eq!(
            collect(&engine, Cf::Default, b"b", b"d", false),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            collect(&engine, Cf::Default, b"b", b"", true),
            vec![b"d".to_vec(), b"c".to_vec(), b"b".to_vec()]
        );
        assert!(collect(&engine, Cf::Meta, b"", b"", false).is_empty());
    }

    /// The latest-CF cache never serves a value older than one a reader has already seen:
    /// readers racing a writer see the key's values in commit order, and the final one.
    #[test]
    fn cached_latest_reads_follow_commits_under_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let options = FjallOptions {
            sync_policy: SyncPolicy::Buffered,
            // Small enough that entries are evicted and refilled during the run.
            point_cache_bytes: 64 * 200,
            ..FjallOptions::default()
        };
        let engine = std::sync::Arc::new(FjallEngine::open(dir.path(), &options).unwrap());
        const WRITES: u32 = 20_000;
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    let mut last = 0u32;
                    let mut n = 0u64;
                    while last < WRITES {
                        // Reads of other keys evict the counter, so its reads keep missing
                        // and refilling while the writer runs.
                        for _ in 0..4 {
                            n += 1;
                            let _ = engine.get(Cf::Latest, &n.to_be_bytes()).unwrap();
                        }
                        if let Some(v) = engine.get(Cf::Latest, b"counter").unwrap() {
                            let v = u32::from_be_bytes(v.try_into().unwrap());
                            assert!(v >= last, "read {v} after {last}");
                            last = v;
                        }
                    }
                })
            })
            .collect();
        for i in 1..=WRITES {
            let mut batch = WriteBatch::new();
            batch.put(Cf::Latest, b"counter".to_vec(), i.to_be_bytes().to_vec());
            engine.write(batch, false).unwrap();
        }
        for r in readers {
            r.join().unwrap();
        }
        let mut batch = WriteBatch::new();
        batch.delete(Cf::Latest, b"counter".to_vec());
        engine.write(batch, false).unwrap();
        assert_eq!(engine.get(Cf::Latest, b"counter").unwrap(), None);
    }
}
