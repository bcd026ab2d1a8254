//! Percolator behaviour on one store.

use std::sync::Arc;

use flotilla_storage::{
    Cf, DurabilityTicket, FjallEngine, FjallOptions, KvIter, StorageError, WriteBatch,
};
use flotilla_types::Timestamp;

use crate::{
    IngestEntry, KeyCheck, LockKeys, LockKind, MissingPrimary, Mutation, MutationOp, Mvcc,
    MvccError, PrewriteLocks, TxnStatus,
};

fn mvcc() -> (tempfile::TempDir, Mvcc) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
    (dir, Mvcc::new(engine).unwrap())
}

fn put(key: &[u8], value: &[u8]) -> Mutation {
    Mutation {
        key: key.to_vec(),
        op: MutationOp::Put(value.to_vec()),
        check: KeyCheck::Snapshot,
    }
}

fn ts(n: u64) -> Timestamp {
    Timestamp::compose(1_000_000 + n, 0)
}

/// A pessimistic lock on `key` alone, as its own primary, for transaction `start_ts`.
fn lock_alone(
    m: &Mvcc,
    key: &[u8],
    start_ts: u64,
) -> Result<Vec<Option<Vec<u8>>>, crate::MvccError> {
    m.acquire_pessimistic_lock(
        &[(key.to_vec(), false)],
        key,
        ts(start_ts),
        ts(start_ts),
        3_000,
        false,
    )
}

fn write(m: &Mvcc, key: &[u8], value: &[u8], start: u64, commit: u64) {
    m.prewrite(
        &[put(key, value)],
        key,
        ts(start),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.commit(&[key.to_vec()], ts(start), ts(commit)).unwrap();
}

#[test]
fn committed_versions_are_visible_from_their_commit_ts() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"v1", 10, 11);
    write(&m, b"k", b"v2", 20, 21);
    assert_eq!(m.get(b"k", ts(5), None).unwrap(), None);
    assert_eq!(m.get(b"k", ts(11), None).unwrap(), Some(b"v1".to_vec()));
    assert_eq!(m.get(b"k", ts(20), None).unwrap(), Some(b"v1".to_vec()));
    assert_eq!(m.get(b"k", ts(30), None).unwrap(), Some(b"v2".to_vec()));
    // A long value goes through the default CF.
    let long = vec![7u8; 1000];
    write(&m, b"big", &long, 40, 41);
    assert_eq!(m.get(b"big", ts(50), None).unwrap(), Some(long));
    // Deletion hides the key from later snapshots only.
    m.prewrite(
        &[Mutation {
            key: b"k".to_vec(),
            op: MutationOp::Delete,
            check: KeyCheck::Snapshot,
        }],
        b"k",
        ts(60),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.commit(&[b"k".to_vec()], ts(60), ts(61)).unwrap();
    assert_eq!(m.get(b"k", ts(62), None).unwrap(), None);
    assert_eq!(m.get(b"k", ts(59), None).unwrap(), Some(b"v2".to_vec()));
}

#[test]
fn scan_returns_newest_visible_versions_in_key_order() {
    let (_d, m) = mvcc();
    write(&m, b"a", b"1", 10, 11);
    write(&m, b"b", b"2", 10, 11);
    write(&m, b"b", b"3", 20, 21);
    write(&m, b"c", b"4", 30, 31);
    let rows = m.scan(b"a", b"", ts(25), 10, None).unwrap();
    assert_eq!(
        rows,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"3".to_vec())
        ]
    );
    let limited = m.scan(b"", b"c", ts(40), 1, None).unwrap();
    assert_eq!(limited, vec![(b"a".to_vec(), b"1".to_vec())]);
}

#[test]
fn a_bounded_scan_stops_at_the_pair_that_reaches_its_bytes_and_returns_at_least_one() {
    let (_d, m) = mvcc();
    write(&m, b"a", b"1234", 10, 11);
    write(&m, b"b", b"5678", 10, 11);
    write(&m, b"c", b"9", 10, 11);
    // 5 bytes a pair: a bound of 6 ends with the second pair, one of 1 with the first.
    let rows = m.scan_bounded(b"", b"", ts(20), 10, 6, None).unwrap();
    assert_eq!(rows.len(), 2);
    let rows = m.scan_bounded(b"", b"", ts(20), 10, 1, None).unwrap();
    assert_eq!(rows, vec![(b"a".to_vec(), b"1234".to_vec())]);
    let rows = m.scan_bounded(b"", b"", ts(20), 10, 5, None).unwrap();
    assert_eq!(rows.len(), 1);
    let rows = m
        .scan_bounded(b"", b"", ts(20), 10, usize::MAX, None)
        .unwrap();
    assert_eq!(rows.len(), 3);
}

#[test]
fn prewrite_locks_block_readers_but_pessimistic_locks_do_not() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"old", 1, 2);
    m.acquire_pessimistic_lock(
        &[(b"k".to_vec(), false)],
        b"k",
        ts(10),
        ts(10),
        3_000,
        false,
    )
    .unwrap();
    assert_eq!(m.get(b"k", ts(20), None).unwrap(), Some(b"old".to_vec()));
    m.prewrite(
        &[Mutation {
            key: b"k".to_vec(),
            op: MutationOp::Put(b"new".to_vec()),
            check: KeyCheck::Locked,
        }],
        b"k",
        ts(10),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    assert!(matches!(
        m.get(b"k", ts(20), None),
        Err(MvccError::KeyIsLocked(_))
    ));
    assert!(matches!(
        m.scan(b"", b"", ts(20), 10, None),
        Err(MvccError::KeyIsLocked(_))
    ));
    // An older snapshot is not blocked, nor is the lock holder itself.
    assert_eq!(m.get(b"k", ts(5), None).unwrap(), Some(b"old".to_vec()));
    assert_eq!(
        m.get(b"k", ts(20), Some(ts(10))).unwrap(),
        Some(b"old".to_vec())
    );
}

#[test]
fn a_guarded_key_is_not_checked_against_start_ts() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"v", 10, 20);
    let guarded = Mutation {
        key: b"k".to_vec(),
        op: MutationOp::Put(b"x".to_vec()),
        check: KeyCheck::Guarded,
    };
    m.prewrite(
        std::slice::from_ref(&guarded),
        b"k",
        ts(15),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.commit(&[b"k".to_vec()], ts(15), ts(30)).unwrap();
    assert_eq!(m.get(b"k", ts(40), None).unwrap(), Some(b"x".to_vec()));
    // A prewrite retried after the commit changes nothing and leaves no lock behind.
    m.prewrite(&[guarded], b"k", ts(15), 3_000, PrewriteLocks::Durable)
        .unwrap();
    assert!(m.lock_of(b"k").unwrap().is_none());
}

#[test]
fn conflicts_are_detected() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"v", 10, 20);
    // Optimistic: a commit at or after start_ts conflicts.
    let err = m
        .prewrite(
            &[put(b"k", b"x")],
            b"k",
            ts(15),
            3_000,
            PrewriteLocks::Durable,
        )
        .unwrap_err();
    assert!(matches!(err, MvccError::WriteConflict { .. }));
    // Pessimistic: a commit after for_update_ts conflicts; a newer for_update_ts does not.
    let err = m
        .acquire_pessimistic_lock(
            &[(b"k".to_vec(), false)],
            b"k",
            ts(15),
            ts(15),
            3_000,
            false,
        )
        .unwrap_err();
    assert!(matches!(err, MvccError::WriteConflict { .. }));
    m.acquire_pessimistic_lock(
        &[(b"k".to_vec(), false)],
        b"k",
        ts(15),
        ts(25),
        3_000,
        false,
    )
    .unwrap();
    // Another transaction meets the lock.
    let err = m
        .acquire_pessimistic_lock(
            &[(b"k".to_vec(), false)],
            b"k",
            ts(30),
            ts(30),
            3_000,
            false,
        )
        .unwrap_err();
    assert!(
        matches!(err, MvccError::KeyIsLocked(ref l) if l.start_ts == ts(15) && l.kind == LockKind::Pessimistic)
    );
    m.pessimistic_rollback(&[b"k".to_vec()], ts(15)).unwrap();
    // Insert of an existing key.
    let err = m
        .acquire_pessimistic_lock(&[(b"k".to_vec(), true)], b"k", ts(30), ts(30), 3_000, false)
        .unwrap_err();
    assert!(matches!(err, MvccError::AlreadyExists { .. }));
}

/// `for_update_ts` `Timestamp::MAX` (a READ COMMITTED point UPDATE): the newest version
/// is locked and returned whatever its commit timestamp, and the lock records that
/// timestamp; other transactions' locks still block it, and the transaction commits over
/// the version it locked.
#[test]
fn a_lock_at_the_newest_version_checks_no_timestamp() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"v1", 10, 20);
    write(&m, b"k", b"v2", 30, 40);
    let newest = [(b"k".to_vec(), false)];
    // Transaction 15 started before both commits.
    let values = m
        .acquire_pessimistic_lock(&newest, b"k", ts(15), Timestamp::MAX, 3_000, true)
        .unwrap();
    assert_eq!(values, vec![Some(b"v2".to_vec())]);
    let lock = m.lock_of(b"k").unwrap().unwrap();
    assert_eq!((lock.start_ts, lock.for_update_ts), (ts(15), ts(40)));
    // Another transaction, even at the newest version, meets the lock.
    let err = m
        .acquire_pessimistic_lock(&newest, b"k", ts(50), Timestamp::MAX, 3_000, true)
        .unwrap_err();
    assert!(matches!(err, MvccError::KeyIsLocked(ref l) if l.start_ts == ts(15)));
    // Taking it again changes nothing; the transaction commits over v2.
    m.acquire_pessimistic_lock(&newest, b"k", ts(15), Timestamp::MAX, 3_000, true)
        .unwrap();
    assert_eq!(m.lock_of(b"k").unwrap().unwrap().for_update_ts, ts(40));
    let mut guarded = put(b"k", b"v3");
    guarded.check = KeyCheck::Locked;
    m.prewrite(&[guarded], b"k", ts(15), 3_000, PrewriteLocks::Durable)
        .unwrap();
    m.commit(&[b"k".to_vec()], ts(15), ts(60)).unwrap();
    assert_eq!(m.get(b"k", ts(50), None).unwrap(), Some(b"v2".to_vec()));
    assert_eq!(m.get(b"k", ts(60), None).unwrap(), Some(b"v3".to_vec()));
    // A key never written: the lock records the transaction's start.
    m.acquire_pessimistic_lock(
        &[(b"new".to_vec(), false)],
        b"new",
        ts(70),
        Timestamp::MAX,
        3_000,
        true,
    )
    .unwrap();
    assert_eq!(m.lock_of(b"new").unwrap().unwrap().for_update_ts, ts(70));
}

#[test]
fn a_rolled_back_transaction_can_neither_prewrite_late_nor_commit() {
    let (_d, m) = mvcc();
    m.prewrite(
        &[put(b"a", b"1"), put(b"b", b"2")],
        b"a",
        ts(10),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.rollback(&[b"a".to_vec(), b"b".to_vec()], ts(10)).unwrap();
    assert_eq!(m.get(b"a", ts(50), None).unwrap(), None);
    assert!(matches!(
        m.commit(&[b"a".to_vec()], ts(10), ts(11)),
        Err(MvccError::TxnLockNotFound { .. })
    ));
    assert!(matches!(
        m.prewrite(
            &[put(b"a", b"1")],
            b"a",
            ts(10),
            3_000,
            PrewriteLocks::Durable
        ),
        Err(MvccError::TxnLockNotFound { .. })
    ));
    // Rolling back a committed transaction is refused.
    write(&m, b"c", b"3", 20, 21);
    assert!(matches!(
        m.rollback(&[b"c".to_vec()], ts(20)),
        Err(MvccError::Committed { .. })
    ));
    // Commit is idempotent.
    m.commit(&[b"c".to_vec()], ts(20), ts(21)).unwrap();
}

#[test]
fn locks_of_a_coordinator_that_died_after_committing_its_primary_are_resolved_as_committed() {
    let (_d, m) = mvcc();
    m.prewrite(
        &[put(b"p", b"1"), put(b"s", b"2")],
        b"p",
        ts(10),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.commit(&[b"p".to_vec()], ts(10), ts(11)).unwrap();
    // The coordinator died here: the secondary is still locked.
    let lock = match m.get(b"s", ts(20), None) {
        Err(MvccError::KeyIsLocked(l)) => l,
        other => panic!("expected a lock, got {other:?}"),
    };
    let status = m
        .check_txn_status(
            &lock.primary,
            lock.start_ts,
            ts(20),
            false,
            MissingPrimary::Fence,
        )
        .unwrap();
    assert_eq!(status, TxnStatus::Committed { commit_ts: ts(11) });
    m.resolve_lock(&[b"s".to_vec()], lock.start_ts, Some(ts(11)))
        .unwrap();
    assert_eq!(m.get(b"s", ts(20), None).unwrap(), Some(b"2".to_vec()));
}

#[test]
fn locks_of_a_coordinator_that_died_before_committing_are_rolled_back_after_their_ttl() {
    let (_d, m) = mvcc();
    m.prewrite(
        &[put(b"p", b"1"), put(b"s", b"2")],
        b"p",
        ts(10),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    // Within the TTL the transaction is presumed alive.
    let alive = m
        .check_txn_status(b"p", ts(10), ts(100), false, MissingPrimary::Fence)
        .unwrap();
    assert!(matches!(alive, TxnStatus::Locked { .. }));
    // After it, the primary is rolled back and the secondary follows.
    let dead = m
        .check_txn_status(b"p", ts(10), ts(10 + 3_000), false, MissingPrimary::Fence)
        .unwrap();
    assert_eq!(dead, TxnStatus::RolledBack);
    m.resolve_lock(&[b"s".to_vec()], ts(10), None).unwrap();
    assert_eq!(m.get(b"s", ts(9_000), None).unwrap(), None);
    assert_eq!(m.get(b"p", ts(9_000), None).unwrap(), None);
    // The late coordinator cannot commit.
    assert!(m.commit(&[b"p".to_vec()], ts(10), ts(9_001)).is_err());
    // A heartbeat keeps a live transaction's lock from lapsing.
    m.prewrite(
        &[put(b"q", b"1")],
        b"q",
        ts(20),
        100,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.txn_heartbeat(b"q", ts(20), 10_000).unwrap();
    assert!(matches!(
        m.check_txn_status(b"q", ts(20), ts(20 + 5_000), false, MissingPrimary::Fence)
            .unwrap(),
        TxnStatus::Locked { .. }
    ));
}

#[test]
fn locks_are_seen_after_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
        let m = Mvcc::new(engine).unwrap();
        m.prewrite(
            &[put(b"k", b"v")],
            b"k",
            ts(10),
            3_000,
            PrewriteLocks::Durable,
        )
        .unwrap();
    }
    // The set of locked keys is rebuilt from the lock CF: the lock still blocks readers.
    let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
    let m = Mvcc::new(engine).unwrap();
    assert!(matches!(
        m.get(b"k", ts(20), None),
        Err(MvccError::KeyIsLocked(_))
    ));
    assert!(matches!(
        m.scan(b"", b"", ts(20), 10, None),
        Err(MvccError::KeyIsLocked(_))
    ));
    m.rollback(&[b"k".to_vec()], ts(10)).unwrap();
    assert_eq!(m.get(b"k", ts(20), None).unwrap(), None);
}

#[test]
fn a_primary_lock_given_back_is_reported_to_whoever_met_it_not_fenced() {
    let (_d, m) = mvcc();
    let lock_k = |for_update_ts: u64| {
        m.acquire_pessimistic_lock(
            &[(b"k".to_vec(), false)],
            b"k",
            ts(10),
            ts(for_update_ts),
            3_000,
            false,
        )
    };
    // Transaction 10 locks k (its primary), then gives the lock back: the row it read
    // did not match. A waiter that met that lock asks for the transaction's fate only now.
    lock_k(10).unwrap();
    m.pessimistic_rollback(&[b"k".to_vec()], ts(10)).unwrap();
    assert_eq!(
        m.check_txn_status(b"k", ts(10), ts(100), false, MissingPrimary::Report)
            .unwrap(),
        TxnStatus::Released
    );
    // Nothing was written, so the live transaction locks k again in a later statement.
    lock_k(20).unwrap();
    m.pessimistic_rollback(&[b"k".to_vec()], ts(10)).unwrap();
    // A caller that met a secondary lock naming k fences k instead: transaction 10's
    // next lock of k is refused, which is what made the first case a spurious failure.
    assert_eq!(
        m.check_txn_status(b"k", ts(10), ts(100), false, MissingPrimary::Fence)
            .unwrap(),
        TxnStatus::RolledBack
    );
    assert!(matches!(
        lock_k(30).unwrap_err(),
        MvccError::TxnLockNotFound { .. }
    ));
    // Once fenced, a report says rolled back too (the record is its fate).
    assert_eq!(
        m.check_txn_status(b"k", ts(10), ts(100), false, MissingPrimary::Report)
            .unwrap(),
        TxnStatus::RolledBack
    );
    // A lock that is there is reported whoever asks; the report never writes.
    m.acquire_pessimistic_lock(
        &[(b"p".to_vec(), false)],
        b"p",
        ts(40),
        ts(40),
        3_000,
        false,
    )
    .unwrap();
    assert!(matches!(
        m.check_txn_status(b"p", ts(40), ts(100), false, MissingPrimary::Report)
            .unwrap(),
        TxnStatus::Locked { .. }
    ));
}

#[test]
fn a_rolled_back_transaction_cannot_lock_late_even_under_newer_history() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"old", 5, 6);
    m.acquire_pessimistic_lock(
        &[(b"k".to_vec(), false)],
        b"k",
        ts(10),
        ts(10),
        3_000,
        false,
    )
    .unwrap();
    // Someone decides transaction 10 is dead and rolls it back; then others commit.
    assert_eq!(
        m.check_txn_status(b"k", ts(10), ts(100), true, MissingPrimary::Fence)
            .unwrap(),
        TxnStatus::RolledBack
    );
    write(&m, b"k", b"new", 20, 21);
    let err = m
        .acquire_pessimistic_lock(
            &[(b"k".to_vec(), false)],
            b"k",
            ts(10),
            ts(30),
            3_000,
            false,
        )
        .unwrap_err();
    assert!(matches!(err, MvccError::TxnLockNotFound { .. }), "{err:?}");
    // An optimistic prewrite of it on a key it never touched is fenced the same way once
    // rolled back there.
    m.rollback(&[b"fresh".to_vec()], ts(10)).unwrap();
    let err = m
        .prewrite(
            &[put(b"fresh", b"x")],
            b"k",
            ts(10),
            3_000,
            PrewriteLocks::Durable,
        )
        .unwrap_err();
    assert!(matches!(err, MvccError::TxnLockNotFound { .. }), "{err:?}");
}

#[test]
fn a_retried_prewrite_of_a_committed_transaction_changes_nothing() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"v1", 10, 11);
    write(&m, b"k", b"v2", 20, 21);
    // The prewrite of transaction 10 arrives again (a client retry): a no-op, not a conflict
    // and not a new lock.
    m.prewrite(
        &[put(b"k", b"v1")],
        b"k",
        ts(10),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    assert_eq!(m.lock_of(b"k").unwrap(), None);
    assert_eq!(m.get(b"k", ts(30), None).unwrap(), Some(b"v2".to_vec()));
}

/// An engine whose fsyncs wait for the test's word, to observe what a commit holds while
/// its fsync runs.
struct GatedSync {
    inner: FjallEngine,
    in_sync: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl flotilla_storage::KvEngine for GatedSync {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(cf, key)
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'a> {
        self.inner.scan(cf, start, end, reverse)
    }

    fn append(&self, batch: WriteBatch) -> Result<DurabilityTicket, StorageError> {
        self.inner.append(batch)
    }

    fn sync_through(&self, ticket: DurabilityTicket) -> Result<(), StorageError> {
        let _ = self.in_sync.send(());
        let _ = self.release.lock().unwrap().recv();
        self.inner.sync_through(ticket)
    }

    fn disk_space_bytes(&self) -> u64 {
        self.inner.disk_space_bytes()
    }
}

#[test]
fn a_commit_waiting_for_its_fsync_holds_no_latches() {
    let dir = tempfile::tempdir().unwrap();
    let (in_sync_tx, in_sync) = std::sync::mpsc::sync_channel(1);
    let (release, release_rx) = std::sync::mpsc::channel();
    let engine = Arc::new(GatedSync {
        inner: FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap(),
        in_sync: in_sync_tx,
        release: std::sync::Mutex::new(release_rx),
    });
    let m = Arc::new(Mvcc::new(engine).unwrap());
    m.prewrite(
        &[put(b"k", b"v")],
        b"k",
        ts(10),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    let committer = {
        let m = m.clone();
        std::thread::spawn(move || m.commit(&[b"k".to_vec()], ts(10), ts(11)))
    };
    in_sync.recv().unwrap();
    // The commit is appended and waiting for its fsync. Another transaction can lock the
    // key now (this would hang if the commit still held the key's latch).
    m.acquire_pessimistic_lock(&[(b"k".to_vec(), false)], b"k", ts(20), ts(20), 3_000, true)
        .map(|values| assert_eq!(values, vec![Some(b"v".to_vec())]))
        .unwrap();
    release.send(()).unwrap();
    committer.join().unwrap().unwrap();
}

#[test]
fn volatile_prewrite_locks_act_like_durable_ones_but_never_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
    let m = Mvcc::new(engine.clone()).unwrap();
    write(&m, b"a", b"old", 5, 6);
    let long = vec![9u8; 1000];
    m.prewrite(
        &[put(b"a", b"new"), put(b"b", &long)],
        b"a",
        ts(10),
        3_000,
        PrewriteLocks::Volatile,
    )
    .unwrap();
    // Readers at or after start_ts block on them, point reads and scans alike; the
    // transaction itself and older snapshots do not.
    assert!(matches!(
        m.get(b"a", ts(20), None),
        Err(MvccError::KeyIsLocked(ref l)) if l.start_ts == ts(10)
    ));
    assert!(matches!(
        m.scan(b"", b"", ts(20), 10, None),
        Err(MvccError::KeyIsLocked(_))
    ));
    assert_eq!(m.get(b"a", ts(8), None).unwrap(), Some(b"old".to_vec()));
    assert_eq!(
        m.get(b"a", ts(20), Some(ts(10))).unwrap(),
        Some(b"old".to_vec())
    );
    // Writers meet them too.
    assert!(matches!(
        m.prewrite(
            &[put(b"b", b"x")],
            b"b",
            ts(12),
            3_000,
            PrewriteLocks::Durable
        ),
        Err(MvccError::KeyIsLocked(_))
    ));
    // A heartbeat keeps them alive, still in memory.
    assert_eq!(m.txn_heartbeat(b"a", ts(10), 9_000).unwrap(), 9_000);
    assert_eq!(
        flotilla_storage::KvEngine::scan(&*engine, Cf::Lock, b"", b"", false)
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        vec![]
    );
    // A crash now (a new Mvcc over the same engine) leaves neither locks nor data.
    let after_crash = Mvcc::new(engine.clone()).unwrap();
    assert_eq!(after_crash.lock_of(b"a").unwrap(), None);
    assert_eq!(after_crash.get(b"b", ts(20), None).unwrap(), None);
    // Committed in one batch, both values are there, the long one included.
    m.commit(&[b"a".to_vec(), b"b".to_vec()], ts(10), ts(11))
        .unwrap();
    assert_eq!(m.get(b"a", ts(20), None).unwrap(), Some(b"new".to_vec()));
    assert_eq!(m.get(b"b", ts(20), None).unwrap(), Some(long.clone()));
    assert_eq!(
        m.scan(b"", b"", ts(20), 10, None).unwrap(),
        vec![(b"a".to_vec(), b"new".to_vec()), (b"b".to_vec(), long)]
    );
}

#[test]
fn an_expired_volatile_transaction_is_rolled_back_and_cannot_commit() {
    let (_d, m) = mvcc();
    m.prewrite(
        &[put(b"k", b"v")],
        b"k",
        ts(10),
        100,
        PrewriteLocks::Volatile,
    )
    .unwrap();
    assert!(matches!(
        m.check_txn_status(b"k", ts(10), ts(20), false, MissingPrimary::Fence)
            .unwrap(),
        TxnStatus::Locked { .. }
    ));
    // Long past its TTL.
    assert_eq!(
        m.check_txn_status(
            b"k",
            Timestamp::compose(1_000_010, 0),
            ts(100_000),
            false,
            MissingPrimary::Fence
        )
        .unwrap(),
        TxnStatus::RolledBack
    );
    assert_eq!(m.lock_of(b"k").unwrap(), None);
    assert!(matches!(
        m.commit(&[b"k".to_vec()], ts(10), ts(11)),
        Err(MvccError::TxnLockNotFound { .. })
    ));
    assert_eq!(m.get(b"k", ts(20), None).unwrap(), None);
}

#[test]
fn a_memory_lock_fence_refuses_new_in_memory_locks_behind_it_until_lifted() {
    let (_dir, m) = mvcc();
    let (start, end) = (crate::keys::encode_user_key(b"m"), Vec::new());
    let fence = m.raise_memory_lock_fence(&start, &end);
    let lock = |key: &[u8], start_ts: u64| lock_alone(&m, key, start_ts);
    // In front of the fence: taken.
    lock(b"a", 1).unwrap();
    // Behind it: refused with a retryable (unavailable) error, and nothing is held.
    assert!(matches!(
        lock(b"x", 2),
        Err(MvccError::Storage(StorageError::Unavailable(_)))
    ));
    let volatile = m.prewrite(
        &[put(b"y", b"v")],
        b"y",
        ts(3),
        3_000,
        PrewriteLocks::Volatile,
    );
    assert!(matches!(
        volatile,
        Err(MvccError::Storage(StorageError::Unavailable(_)))
    ));
    assert!(!m.has_memory_locks_in(&start, &end));
    // Durable prewrite locks are not in memory and move with the split: not fenced.
    m.prewrite(
        &[put(b"z", b"v")],
        b"z",
        ts(4),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.lift_memory_lock_fence(fence);
    lock(b"x", 2).unwrap();
    assert!(m.has_memory_locks_in(&start, &end));
    // A transaction already holding an in-memory lock behind a fence may go on with it
    // (the split waits for it to finish); the wait ends when it commits.
    let _fence = m.raise_memory_lock_fence(&start, &end);
    let mut pessimistic = put(b"x", b"v2");
    pessimistic.check = KeyCheck::Locked;
    m.prewrite(&[pessimistic], b"x", ts(2), 3_000, PrewriteLocks::Volatile)
        .unwrap();
    assert!(!m.wait_memory_locks_gone(&start, &end, std::time::Duration::from_millis(10)));
    m.commit(&[b"x".to_vec()], ts(2), ts(6)).unwrap();
    assert!(m.wait_memory_locks_gone(&start, &end, std::time::Duration::from_millis(10)));
}

fn entry(key: &[u8], value: &[u8], unique: bool) -> IngestEntry {
    IngestEntry {
        key: key.to_vec(),
        value: value.to_vec(),
        unique,
    }
}

#[test]
fn ingested_versions_sit_at_their_timestamp_below_newer_commits() {
    let (_d, m) = mvcc();
    // "a" was deleted after the ingest's snapshot: the deletion stays newest.
    write(&m, b"a", b"old", 10, 11);
    m.prewrite(
        &[Mutation {
            key: b"a".to_vec(),
            op: MutationOp::Delete,
            check: KeyCheck::Snapshot,
        }],
        b"a",
        ts(30),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.commit(&[b"a".to_vec()], ts(30), ts(31)).unwrap();
    let long = vec![9u8; 1000];
    m.ingest(
        &[entry(b"a", b"backfilled", false), entry(b"b", &long, false)],
        ts(20),
    )
    .unwrap();
    assert_eq!(m.get(b"a", ts(19), None).unwrap(), Some(b"old".to_vec()));
    assert_eq!(
        m.get(b"a", ts(25), None).unwrap(),
        Some(b"backfilled".to_vec())
    );
    assert_eq!(m.get(b"a", ts(40), None).unwrap(), None);
    assert_eq!(m.get(b"b", ts(19), None).unwrap(), None);
    assert_eq!(m.get(b"b", ts(40), None).unwrap(), Some(long.clone()));
    let scanned = m.scan(b"", b"", ts(40), 10, None).unwrap();
    assert_eq!(scanned, vec![(b"b".to_vec(), long)]);
    // A later writer's snapshot check sees the ingested version as committed at ts 20.
    let err = m
        .prewrite(
            &[put(b"b", b"x")],
            b"b",
            ts(15),
            3_000,
            PrewriteLocks::Durable,
        )
        .unwrap_err();
    assert!(matches!(err, MvccError::WriteConflict { .. }), "{err:?}");
}

#[test]
fn an_ingested_unique_entry_never_stands_beside_another_value() {
    let (_d, m) = mvcc();
    write(&m, b"u1", b"row1", 10, 11);
    write(&m, b"u2", b"row2", 30, 31);
    // Another row holds the key at the snapshot: a duplicate, and nothing is written.
    let err = m
        .ingest(
            &[entry(b"fresh", b"x", true), entry(b"u1", b"row9", true)],
            ts(20),
        )
        .unwrap_err();
    assert!(matches!(err, MvccError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(m.get(b"fresh", ts(40), None).unwrap(), None);
    // Another row took the key after the snapshot: the backfill must look again.
    let err = m
        .ingest(&[entry(b"u2", b"row9", true)], ts(20))
        .unwrap_err();
    assert!(matches!(err, MvccError::WriteConflict { .. }), "{err:?}");
    // The same row's entry, already written by a transaction, is left alone.
    m.ingest(&[entry(b"u2", b"row2", true)], ts(20)).unwrap();
    assert_eq!(m.get(b"u2", ts(25), None).unwrap(), None);
    // A transaction holding the key checked its absence without this entry: wait for it.
    m.acquire_pessimistic_lock(
        &[(b"u3".to_vec(), true)],
        b"u3",
        ts(40),
        ts(40),
        3_000,
        false,
    )
    .unwrap();
    let err = m
        .ingest(&[entry(b"u3", b"row3", true)], ts(45))
        .unwrap_err();
    assert!(matches!(err, MvccError::KeyIsLocked(_)), "{err:?}");
    // A non-unique entry is written below the lock: the transaction's own version is newer.
    m.ingest(&[entry(b"u3", b"row3", false)], ts(45)).unwrap();
}

/// Every record of every CF in `[start, end)` of the encoded key space of user keys.
fn records_between(m: &Mvcc, cf: Cf, start: &[u8], end: &[u8]) -> usize {
    m.engine()
        .scan(
            cf,
            &crate::keys::encode_user_key(start),
            &crate::keys::encode_user_key(end),
            false,
        )
        .count()
}

#[test]
fn delete_range_removes_whole_keys_in_bounded_chunks_and_spares_locked_keys() {
    let (_d, m) = mvcc();
    let long = vec![9u8; 1000];
    for i in 0..50u64 {
        let key = format!("d{i:03}");
        write(&m, key.as_bytes(), b"v1", 10, 11);
        write(&m, key.as_bytes(), &long, 20, 21);
    }
    // Neighbours outside the range, and a locked key inside it.
    write(&m, b"c", b"before", 10, 11);
    write(&m, b"e", b"after", 10, 11);
    m.prewrite(
        &[put(b"d025x", b"locked")],
        b"d025x",
        ts(30),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    write(&m, b"d025y", b"old", 5, 6);
    m.prewrite(
        &[put(b"d025y", &long)],
        b"d025y",
        ts(31),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();

    // 50 keys of 3 counted records (2 versions, the latest entry; long values are
    // deleted with their version): chunks of at least 20 records, whole keys each.
    let mut cursor = b"d".to_vec();
    let mut chunks = 0;
    while let Some(next) = m.delete_range(&cursor, b"e", 20).unwrap() {
        assert!(next > cursor, "no progress at {cursor:?}");
        // The key a chunk stopped at is still whole.
        if next != b"d025y" {
            assert_eq!(m.get(&next, ts(40), None).unwrap(), Some(long.clone()));
            assert_eq!(m.get(&next, ts(15), None).unwrap(), Some(b"v1".to_vec()));
        }
        cursor = next;
        chunks += 1;
        assert!(chunks < 100, "delete_range does not end");
    }
    assert!(
        chunks >= 6,
        "{chunks} chunks for 150 records at 20 per chunk"
    );
    for i in 0..50u64 {
        let key = format!("d{i:03}");
        assert_eq!(m.get(key.as_bytes(), ts(40), None).unwrap(), None);
    }
    assert_eq!(records_between(&m, Cf::Latest, b"d000", b"d025x"), 0);
    assert_eq!(records_between(&m, Cf::Default, b"d000", b"d025x"), 0);
    // The locked keys keep everything: their transactions are still to be decided.
    assert_eq!(
        m.get(b"d025y", ts(30), None).unwrap(),
        Some(b"old".to_vec())
    );
    assert!(m.lock_of(b"d025x").unwrap().is_some());
    m.commit(&[b"d025y".to_vec()], ts(31), ts(32)).unwrap();
    assert_eq!(m.get(b"d025y", ts(40), None).unwrap(), Some(long.clone()));
    // Outside the range nothing changed.
    assert_eq!(m.get(b"c", ts(40), None).unwrap(), Some(b"before".to_vec()));
    assert_eq!(m.get(b"e", ts(40), None).unwrap(), Some(b"after".to_vec()));
    // An empty range ends at once.
    assert_eq!(m.delete_range(b"x", b"y", 20).unwrap(), None);
}

fn guarded(key: &[u8], value: &[u8]) -> Mutation {
    Mutation {
        key: key.to_vec(),
        op: MutationOp::Put(value.to_vec()),
        check: KeyCheck::Locked,
    }
}

#[test]
fn a_write_prepared_without_blocking_holds_its_latches_until_it_is_written_and_finished() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
    let m = Mvcc::new(engine.clone()).unwrap();
    write(&m, b"a", b"old", 5, 6);
    let keys = [(b"a".to_vec(), false)];
    let lock = |start: u64| {
        m.try_lock_keys_in_memory(&LockKeys {
            keys: &keys,
            primary: b"a",
            start_ts: ts(start),
            for_update_ts: ts(start),
            ttl_ms: 3_000,
            need_values: true,
            shared: false,
            key_only: false,
        })
    };
    assert_eq!(lock(10).unwrap(), Some(vec![Some(b"old".to_vec())]));
    assert_eq!(
        m.lock_of(b"a").unwrap().unwrap().kind,
        LockKind::Pessimistic
    );

    let mut pending = m
        .try_prepare_prewrite(&[guarded(b"a", b"new")], b"a", ts(10), 3_000)
        .unwrap()
        .expect("no latch is held");
    // Prepared, not written: the key's state is unchanged, and its latch is held, so no
    // other operation that must not block gets in, and none changes anything.
    assert_eq!(
        m.lock_of(b"a").unwrap().unwrap().kind,
        LockKind::Pessimistic
    );
    assert_eq!(lock(20).unwrap(), None);
    assert!(
        m.try_prepare_commit(&[b"a".to_vec()], ts(10), ts(11))
            .unwrap()
            .is_none()
    );
    let batch = pending.take_batch();
    assert!(!batch.is_empty(), "a durable prewrite writes its lock");
    let _ = flotilla_storage::KvEngine::append(&*engine, batch).unwrap();
    pending.finish();
    assert_eq!(m.lock_of(b"a").unwrap().unwrap().kind, LockKind::Put);

    // A prepared write that is dropped (its Raft write failed) changes nothing and
    // releases its latches.
    let dropped = m
        .try_prepare_commit(&[b"a".to_vec()], ts(10), ts(11))
        .unwrap()
        .expect("the latch was released by finish");
    drop(dropped);
    assert_eq!(m.lock_of(b"a").unwrap().unwrap().kind, LockKind::Put);
    assert_eq!(
        m.get(b"a", ts(30), Some(ts(10))).unwrap(),
        Some(b"old".to_vec())
    );

    let mut commit = m
        .try_prepare_commit(&[b"a".to_vec()], ts(10), ts(11))
        .unwrap()
        .expect("the dropped write released its latch");
    let _ = flotilla_storage::KvEngine::append(&*engine, commit.take_batch()).unwrap();
    commit.finish();
    assert_eq!(m.lock_of(b"a").unwrap(), None);
    assert_eq!(m.get(b"a", ts(30), None).unwrap(), Some(b"new".to_vec()));
}

#[test]
fn a_volatile_commit_prepared_without_blocking_keeps_its_lock_until_finished() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
    let m = Mvcc::new(engine.clone()).unwrap();
    m.prewrite(
        &[put(b"v", b"1")],
        b"v",
        ts(10),
        3_000,
        PrewriteLocks::Volatile,
    )
    .unwrap();
    let mut commit = m
        .try_prepare_commit(&[b"v".to_vec()], ts(10), ts(11))
        .unwrap()
        .expect("no latch is held");
    let _ = flotilla_storage::KvEngine::append(&*engine, commit.take_batch()).unwrap();
    // Written but not finished: the in-memory lock still stands, so a reader that does
    // not yet see the commit record (a Raft write not yet applied) meets the lock rather
    // than an older version.
    assert!(m.lock_of(b"v").unwrap().is_some());
    commit.finish();
    assert_eq!(m.lock_of(b"v").unwrap(), None);
    assert_eq!(m.get(b"v", ts(20), None).unwrap(), Some(b"1".to_vec()));
}

#[test]
fn locking_without_blocking_leaves_a_lock_of_its_own_on_disk_to_the_blocking_call() {
    let (_d, m) = mvcc();
    m.prewrite(
        &[put(b"k", b"v")],
        b"k",
        ts(10),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    let keys = [(b"k".to_vec(), false)];
    let request = |start: u64, for_update: u64| LockKeys {
        keys: &keys,
        primary: b"k",
        start_ts: ts(start),
        for_update_ts: ts(for_update),
        ttl_ms: 3_000,
        need_values: false,
        shared: false,
        key_only: false,
    };
    // Raising a prewritten lock's for_update_ts is a disk write: not done in memory.
    assert_eq!(m.try_lock_keys_in_memory(&request(10, 15)).unwrap(), None);
    assert_eq!(m.lock_of(b"k").unwrap().unwrap().for_update_ts, ts(10));
    m.acquire_pessimistic_lock(&keys, b"k", ts(10), ts(15), 3_000, false)
        .unwrap();
    assert_eq!(m.lock_of(b"k").unwrap().unwrap().for_update_ts, ts(15));
    // Another transaction's lock is refused as by the blocking call.
    assert!(matches!(
        m.try_lock_keys_in_memory(&request(20, 20)),
        Err(MvccError::KeyIsLocked(_))
    ));
}

#[test]
fn a_volatile_prewrite_without_blocking_goes_to_memory_or_leaves_everything_alone() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
    let m = Mvcc::new(engine.clone()).unwrap();
    write(&m, b"p", b"old", 5, 6);
    // While another operation holds the key's latch, nothing happens: the caller takes
    // the blocking path.
    let held = m
        .try_prepare_commit(&[b"p".to_vec()], ts(5), ts(7))
        .unwrap()
        .expect("no latch is held");
    assert!(
        !m.try_prewrite_in_memory(&[put(b"p", b"new")], b"p", ts(10), 3_000)
            .unwrap()
    );
    assert_eq!(m.lock_of(b"p").unwrap(), None);
    drop(held);
    // Then the lock goes to memory, carrying its value, and nothing to the engine.
    let records = records_between(&m, Cf::Lock, b"a", b"z");
    assert!(
        m.try_prewrite_in_memory(&[put(b"p", b"new")], b"p", ts(10), 3_000)
            .unwrap()
    );
    assert_eq!(m.lock_of(b"p").unwrap().unwrap().kind, LockKind::Put);
    assert_eq!(records_between(&m, Cf::Lock, b"a", b"z"), records);
    // Readers meet it; another transaction's prewrite is refused.
    assert!(matches!(
        m.get(b"p", ts(20), None),
        Err(MvccError::KeyIsLocked(_))
    ));
    assert!(matches!(
        m.try_prewrite_in_memory(&[put(b"p", b"other")], b"p", ts(15), 3_000),
        Err(MvccError::KeyIsLocked(_))
    ));
    m.commit(&[b"p".to_vec()], ts(10), ts(11)).unwrap();
    assert_eq!(m.lock_of(b"p").unwrap(), None);
    assert_eq!(m.get(b"p", ts(20), None).unwrap(), Some(b"new".to_vec()));
}

fn delete(m: &Mvcc, key: &[u8], start: u64, commit: u64) {
    m.prewrite(
        &[Mutation {
            key: key.to_vec(),
            op: MutationOp::Delete,
            check: KeyCheck::Snapshot,
        }],
        key,
        ts(start),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.commit(&[key.to_vec()], ts(start), ts(commit)).unwrap();
}

/// Every visible pair at each of `at`.
fn views(m: &Mvcc, at: &[u64]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    at.iter()
        .map(|t| m.scan(b"", b"", ts(*t), usize::MAX, None).unwrap())
        .collect()
}

#[test]
fn gc_removes_only_versions_no_reader_at_or_above_the_safe_point_sees() {
    let (_d, m) = mvcc();
    let long = vec![7u8; 1000];
    // a: four versions, one long; the safe point falls between the third and fourth.
    write(&m, b"a", b"a1", 10, 11);
    write(&m, b"a", &long, 20, 21);
    write(&m, b"a", b"a3", 30, 31);
    write(&m, b"a", b"a4", 40, 41);
    // b: deleted below the safe point: nothing of it is left.
    write(&m, b"b", b"b1", 10, 11);
    delete(&m, b"b", 20, 21);
    // c: deleted below the safe point, written again above it.
    write(&m, b"c", b"c1", 10, 11);
    delete(&m, b"c", 20, 21);
    write(&m, b"c", b"c2", 40, 41);
    // d: a rollback record between two versions.
    write(&m, b"d", b"d1", 10, 11);
    m.prewrite(
        &[put(b"d", b"x")],
        b"d",
        ts(15),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    m.rollback(&[b"d".to_vec()], ts(15)).unwrap();
    write(&m, b"d", b"d2", 20, 21);
    // e: only versions above the safe point.
    write(&m, b"e", b"e1", 40, 41);
    // f: old versions under a lock taken above the safe point.
    write(&m, b"f", b"f1", 10, 11);
    write(&m, b"f", b"f2", 20, 21);
    m.prewrite(
        &[put(b"f", b"f3")],
        b"f",
        ts(50),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();

    let at = [35, 38, 45];
    let before = views(&m, &at);
    let writes_before = records_between(&m, Cf::Write, b"a", b"g");
    let progress = m.gc(b"", b"", ts(35), 1_000).unwrap();
    assert_eq!(progress.next, None);
    assert_eq!(
        views(&m, &at),
        before,
        "a reader at or above the safe point sees no change"
    );
    // Removed: a1, a2 and a2's long value; b1, b's deletion and its latest entry; c1 and
    // c's deletion; d1 and the rollback record; f1.
    assert_eq!(progress.records_deleted, 11);
    assert_eq!(
        records_between(&m, Cf::Write, b"a", b"g"),
        writes_before - 9
    );
    assert_eq!(records_between(&m, Cf::Default, b"a", b"b"), 0);
    assert_eq!(records_between(&m, Cf::Write, b"b", b"c"), 0);
    assert_eq!(records_between(&m, Cf::Latest, b"b", b"c"), 0);
    assert_eq!(m.get(b"c", ts(45), None).unwrap(), Some(b"c2".to_vec()));
    assert_eq!(m.get(b"c", ts(35), None).unwrap(), None);
    // Reads below the safe point are refused, not answered from what is left.
    assert!(matches!(
        m.get(b"a", ts(25), None),
        Err(MvccError::SnapshotTooOld { .. })
    ));
    assert!(matches!(
        m.scan(b"", b"", ts(34), 10, None),
        Err(MvccError::SnapshotTooOld { .. })
    ));
    assert_eq!(m.safe_point(), ts(35));
    // The lock's transaction goes on as if nothing happened.
    m.commit(&[b"f".to_vec()], ts(50), ts(51)).unwrap();
    assert_eq!(m.get(b"f", ts(60), None).unwrap(), Some(b"f3".to_vec()));
    assert_eq!(m.get(b"f", ts(45), None).unwrap(), Some(b"f2".to_vec()));
    // A second run at the same safe point finds nothing; a lower one lowers nothing.
    assert_eq!(m.gc(b"", b"", ts(35), 1_000).unwrap().records_deleted, 0);
    m.gc(b"", b"", ts(20), 1_000).unwrap();
    assert_eq!(m.safe_point(), ts(35));
}

#[test]
fn gc_works_in_bounded_steps_and_a_deletion_never_uncovers_an_older_value() {
    let (_d, m) = mvcc();
    // One key with a long history under a deletion, and neighbours with histories.
    for i in 0..60u64 {
        write(&m, b"k", format!("v{i}").as_bytes(), 10 + 2 * i, 11 + 2 * i);
    }
    delete(&m, b"k", 200, 201);
    for n in 0..20u64 {
        let key = format!("n{n:02}");
        write(&m, key.as_bytes(), b"old", 10, 11);
        write(&m, key.as_bytes(), b"new", 20, 21);
    }
    let at = [300, 400];
    let before = views(&m, &at);
    let work_max = 10;
    let mut cursor = Vec::new();
    let mut steps = 0;
    let mut deleted = 0;
    loop {
        let progress = m.gc(&cursor, b"", ts(300), work_max).unwrap();
        // A step may finish the key it is on: its deletion and the latest entry.
        assert!(
            progress.records_deleted as usize <= work_max + 2,
            "step removed {} records",
            progress.records_deleted
        );
        deleted += progress.records_deleted;
        // Between steps every reader still sees the deletion.
        assert_eq!(m.get(b"k", ts(300), None).unwrap(), None);
        assert_eq!(views(&m, &at), before);
        steps += 1;
        assert!(steps < 100, "gc does not end");
        match progress.next {
            Some(next) => {
                assert!(next >= cursor, "went back from {cursor:?} to {next:?}");
                cursor = next;
            }
            None => break,
        }
    }
    assert!(steps >= 8, "{steps} steps for 102 records at 10 per step");
    // k: 60 versions, its deletion and its latest entry; each neighbour: one version.
    assert_eq!(deleted, 62 + 20);
    assert_eq!(records_between(&m, Cf::Write, b"k", b"l"), 0);
    assert_eq!(records_between(&m, Cf::Write, b"n", b"o"), 20);
}

#[test]
fn the_oldest_lock_counts_prewrite_locks_on_disk_and_in_memory() {
    let (_d, m) = mvcc();
    assert_eq!(m.oldest_lock_start_ts().unwrap(), None);
    m.prewrite(
        &[put(b"a", b"x")],
        b"a",
        ts(30),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    assert_eq!(m.oldest_lock_start_ts().unwrap(), Some(ts(30)));
    // A pessimistic lock holds no fate to read: it does not count.
    m.acquire_pessimistic_lock(
        &[(b"b".to_vec(), false)],
        b"b",
        ts(25),
        ts(25),
        3_000,
        false,
    )
    .unwrap();
    assert_eq!(m.oldest_lock_start_ts().unwrap(), Some(ts(30)));
    // A volatile prewrite lock, in memory only, does.
    m.prewrite(
        &[put(b"c", b"y")],
        b"c",
        ts(20),
        3_000,
        PrewriteLocks::Volatile,
    )
    .unwrap();
    assert_eq!(m.oldest_lock_start_ts().unwrap(), Some(ts(20)));
    assert_eq!(m.oldest_memory_lock_start_ts(), Some(ts(20)));
    // What a resolver of abandoned locks sees: prewrite locks at or below a timestamp,
    // in memory and on disk, by user key, bounded.
    let keys = |max: u64, limit: usize| -> Vec<Vec<u8>> {
        m.prewrite_locks_at_or_below(ts(max), limit)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys(100, 10), [b"c".to_vec(), b"a".to_vec()]);
    assert_eq!(keys(25, 10), [b"c".to_vec()]);
    assert_eq!(keys(100, 1), [b"c".to_vec()]);
    assert!(keys(19, 10).is_empty());
    m.rollback(&[b"c".to_vec()], ts(20)).unwrap();
    m.pessimistic_rollback(&[b"b".to_vec()], ts(25)).unwrap();
    m.rollback(&[b"a".to_vec()], ts(30)).unwrap();
    assert_eq!(m.oldest_lock_start_ts().unwrap(), None);
    assert!(keys(100, 10).is_empty());
}

/// A leader transfer's fence lets the transactions already holding locks behind it take
/// more there, so a hot region drains; new transactions wait; closing it shuts the
/// holders out as well, and says whether the range is empty then.
#[test]
fn a_fence_letting_holders_in_drains_a_hot_range_and_closes_behind_them() {
    let (_dir, m) = mvcc();
    let (start, end) = (crate::keys::encode_user_key(b"m"), Vec::new());
    let lock = |key: &[u8], start_ts: u64| lock_alone(&m, key, start_ts);
    // Transaction 1 holds a row behind the fence when it goes up.
    lock(b"x", 1).unwrap();
    let fence = m.raise_memory_lock_fence_letting_holders(&start, &end);
    // It locks another row there (its next statement); a new transaction is refused.
    lock(b"y", 1).unwrap();
    assert!(matches!(
        lock(b"z", 2),
        Err(MvccError::Storage(StorageError::Unavailable(_)))
    ));
    // Not empty while it holds them: closing says so, and shuts it out too.
    assert!(!m.close_memory_lock_fence(fence));
    assert!(matches!(
        lock(b"w", 1),
        Err(MvccError::Storage(StorageError::Unavailable(_)))
    ));
    m.lift_memory_lock_fence(fence);
    // Again, and this time it finishes: the range drains and the fence closes empty.
    let fence = m.raise_memory_lock_fence_letting_holders(&start, &end);
    let mut x = put(b"x", b"1");
    x.check = KeyCheck::Locked;
    let mut y = put(b"y", b"2");
    y.check = KeyCheck::Locked;
    m.prewrite(&[x, y], b"x", ts(1), 3_000, PrewriteLocks::Volatile)
        .unwrap();
    m.commit(&[b"x".to_vec(), b"y".to_vec()], ts(1), ts(3))
        .unwrap();
    assert!(m.wait_memory_locks_gone(&start, &end, std::time::Duration::from_millis(10)));
    assert!(m.close_memory_lock_fence(fence));
    assert!(matches!(
        lock(b"z", 2),
        Err(MvccError::Storage(StorageError::Unavailable(_)))
    ));
    m.lift_memory_lock_fence(fence);
    lock(b"z", 2).unwrap();
}

/// Past the budget for in-memory locks, pessimistic and volatile locks are written to the
/// lock CF instead: memory stays bounded, the locks behave the same, and the transaction
/// commits the same values. A volatile lock never sits in memory beside a disk lock of its
/// key, which reads would find first (and commit would drop the value as never written).
#[test]
fn locks_past_the_memory_budget_go_to_the_lock_cf_and_commit_the_same() {
    use crate::MemoryLockBudget;
    use crate::keys::encode_user_key;
    use crate::memory_locks::entry_bytes;

    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
    // Room in the region for two pessimistic locks of these keys, and a few value bytes.
    let one = entry_bytes(encode_user_key(b"k0").len(), 2, 0);
    let budget = MemoryLockBudget::new(2 * one + 16, 1 << 20);
    let m = Mvcc::with_memory_lock_budget(engine, budget.clone()).unwrap();
    write(&m, b"k3", b"old", 5, 6);
    let keys: Vec<(Vec<u8>, bool)> = (0..4)
        .map(|i| (format!("k{i}").into_bytes(), false))
        .collect();
    fn request(keys: &[(Vec<u8>, bool)], for_update: u64) -> LockKeys<'_> {
        LockKeys {
            keys,
            primary: b"k0",
            start_ts: ts(10),
            for_update_ts: ts(for_update),
            ttl_ms: 3_000,
            need_values: false,
            shared: false,
            key_only: false,
        }
    }
    let on_disk = |k: &[u8]| {
        m.engine()
            .get(Cf::Lock, &encode_user_key(k))
            .unwrap()
            .is_some()
    };

    assert!(
        m.try_lock_keys_in_memory(&request(&keys[..2], 10))
            .unwrap()
            .is_some()
    );
    assert_eq!(budget.used_bytes(), 2 * one);
    // No room for two more: the path that must not block declines, and the blocking one
    // writes them to the lock CF.
    assert_eq!(
        m.try_lock_keys_in_memory(&request(&keys[2..], 10)).unwrap(),
        None
    );
    m.lock_keys(&request(&keys[2..], 10)).unwrap();
    assert_eq!(budget.used_bytes(), 2 * one);
    assert!(!on_disk(b"k0") && !on_disk(b"k1") && on_disk(b"k2") && on_disk(b"k3"));
    // A lock on disk is a lock as one in memory is: it holds off another writer, not a
    // reader.
    assert!(matches!(
        lock_alone(&m, b"k3", 20),
        Err(MvccError::KeyIsLocked(_))
    ));
    assert_eq!(m.get(b"k3", ts(30), None).unwrap(), Some(b"old".to_vec()));
    // Raising its for_update_ts is a write to the lock CF, never a copy in memory.
    assert_eq!(
        m.try_lock_keys_in_memory(&request(&keys[3..], 12)).unwrap(),
        None
    );
    m.lock_keys(&request(&keys[3..], 12)).unwrap();
    assert_eq!(m.lock_of(b"k3").unwrap().unwrap().for_update_ts, ts(12));
    assert_eq!(budget.used_bytes(), 2 * one);

    // With room in memory again, a volatile prewrite of k2 and k3 still replaces their
    // disk locks on disk.
    m.pessimistic_rollback(&[b"k0".to_vec(), b"k1".to_vec()], ts(10))
        .unwrap();
    assert_eq!(budget.used_bytes(), 0);
    let written = [b"k2".to_vec(), b"k3".to_vec()];
    let mutations: Vec<Mutation> = written.iter().map(|k| put(k, b"new")).collect();
    m.prewrite(&mutations, b"k0", ts(10), 3_000, PrewriteLocks::Volatile)
        .unwrap();
    assert!(on_disk(b"k2") && on_disk(b"k3"));
    assert_eq!(m.lock_of(b"k3").unwrap().unwrap().kind, LockKind::Put);
    m.commit(&written, ts(10), ts(11)).unwrap();
    for k in &written {
        assert_eq!(m.get(k, ts(12), None).unwrap(), Some(b"new".to_vec()));
        assert!(!on_disk(k));
    }
    assert_eq!(budget.used_bytes(), 0);

    // A volatile prewrite past the budget: the lock it has no room for is durable.
    let big = vec![1u8; 3 * one];
    m.prewrite(
        &[put(b"v0", b"x"), put(b"v1", &big)],
        b"v0",
        ts(20),
        3_000,
        PrewriteLocks::Volatile,
    )
    .unwrap();
    assert!(!on_disk(b"v0") && on_disk(b"v1"));
    m.commit(&[b"v0".to_vec(), b"v1".to_vec()], ts(20), ts(21))
        .unwrap();
    assert_eq!(m.get(b"v1", ts(22), None).unwrap(), Some(big));
    assert_eq!(m.get(b"v0", ts(22), None).unwrap(), Some(b"x".to_vec()));
    assert_eq!(budget.used_bytes(), 0);

    // Pessimistic locks on disk are released by a statement's rollback too.
    m.lock_keys(&LockKeys {
        primary: b"k2",
        start_ts: ts(30),
        ..request(&keys[..], 30)
    })
    .unwrap();
    assert!(on_disk(b"k3"));
    let all: Vec<Vec<u8>> = keys.iter().map(|(k, _)| k.clone()).collect();
    m.pessimistic_rollback(&all, ts(30)).unwrap();
    for k in &all {
        assert_eq!(m.lock_of(k).unwrap(), None);
    }
    assert_eq!(budget.used_bytes(), 0);
}

/// A lock on `key` for transaction `start_ts` (its own primary), shared or exclusive.
fn lock_as(
    m: &Mvcc,
    key: &[u8],
    start_ts: u64,
    shared: bool,
) -> Result<Vec<Option<Vec<u8>>>, MvccError> {
    lock_key_level(m, key, start_ts, start_ts, shared, false)
}

/// `lock_as`, checked against `for_update_ts`, and key-only if asked.
fn lock_key_level(
    m: &Mvcc,
    key: &[u8],
    start_ts: u64,
    for_update_ts: u64,
    shared: bool,
    key_only: bool,
) -> Result<Vec<Option<Vec<u8>>>, MvccError> {
    m.lock_keys(&LockKeys {
        keys: &[(key.to_vec(), false)],
        primary: key,
        start_ts: ts(start_ts),
        for_update_ts: ts(for_update_ts),
        ttl_ms: 3_000,
        need_values: false,
        shared,
        key_only,
    })
}

/// PostgreSQL's key-level strengths: `FOR KEY SHARE` (a foreign key's referenced row) and
/// `FOR NO KEY UPDATE` (an update that keeps the key) join each other; each keeps out
/// what changes the key's existence, and the full strengths keep out each other.
#[test]
fn key_only_locks_let_an_update_that_keeps_the_key_through_and_keep_a_delete_out() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"v", 1, 2);
    let key_share = |start: u64| lock_key_level(&m, b"k", start, start, true, true);
    let no_key_update = |start: u64| lock_key_level(&m, b"k", start, start, false, true);
    key_share(10).unwrap();
    key_share(11).unwrap();
    no_key_update(12).unwrap();
    // FOR UPDATE and FOR SHARE wait for the no-key updater; FOR KEY SHARE joins it.
    assert_eq!(holder_of(lock_as(&m, b"k", 13, false)), ts(12));
    assert_eq!(holder_of(lock_as(&m, b"k", 14, true)), ts(12));
    assert_eq!(holder_of(no_key_update(14)), ts(12));
    key_share(15).unwrap();
    // The update is prewritten over the shares, and still lets one join.
    let locked_put = Mutation {
        key: b"k".to_vec(),
        op: MutationOp::Put(b"w".to_vec()),
        check: KeyCheck::Locked,
    };
    m.prewrite(&[locked_put], b"k", ts(12), 3_000, PrewriteLocks::Durable)
        .unwrap();
    let lock = m.lock_of(b"k").unwrap().unwrap();
    assert_eq!((lock.kind, lock.key_only), (LockKind::Put, true));
    key_share(16).unwrap();
    m.commit(&[b"k".to_vec()], ts(12), ts(20)).unwrap();
    assert_eq!(m.get(b"k", ts(21), None).unwrap(), Some(b"w".to_vec()));
    // A share kept to commit is recorded; the key's value is the update's.
    let kept = Mutation {
        key: b"k".to_vec(),
        op: MutationOp::Lock,
        check: KeyCheck::SharedLocked,
    };
    m.prewrite(&[kept], b"k", ts(10), 3_000, PrewriteLocks::Durable)
        .unwrap();
    m.commit(&[b"k".to_vec()], ts(10), ts(22)).unwrap();
    assert_eq!(m.get(b"k", ts(23), None).unwrap(), Some(b"w".to_vec()));
    // A delete (a full exclusive lock) waits for every key-only sharer.
    let mut waited_for = Vec::new();
    while let Err(e) = lock_key_level(&m, b"k", 30, 30, false, false) {
        let holder = holder_of(Err(e));
        waited_for.push(holder);
        m.pessimistic_rollback(&[b"k".to_vec()], holder).unwrap();
    }
    waited_for.sort();
    assert_eq!(waited_for, vec![ts(11), ts(15), ts(16)]);
    assert_eq!(holder_of(key_share(31)), ts(30));
    m.pessimistic_rollback(&[b"k".to_vec()], ts(30)).unwrap();

    // Unlocked writes too: a key-only share lets a new value through, not a deletion.
    lock_key_level(&m, b"k", 40, 40, true, true).unwrap();
    let delete = Mutation {
        key: b"k".to_vec(),
        op: MutationOp::Delete,
        check: KeyCheck::Snapshot,
    };
    assert_eq!(
        holder_of(
            m.prewrite(&[delete], b"k", ts(41), 3_000, PrewriteLocks::Durable)
                .map(|_| Vec::new())
        ),
        ts(40)
    );
    m.prewrite(
        &[put(b"k", b"x")],
        b"k",
        ts(42),
        3_000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    // A full share keeps both out.
    write(&m, b"f", b"v", 1, 2);
    lock_as(&m, b"f", 50, true).unwrap();
    assert_eq!(
        holder_of(
            m.prewrite(
                &[put(b"f", b"x")],
                b"f",
                ts(51),
                3_000,
                PrewriteLocks::Durable
            )
            .map(|_| Vec::new())
        ),
        ts(50)
    );
}

#[test]
fn a_key_only_share_sees_a_newer_value_as_no_conflict_but_a_deletion_as_one() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"v", 10, 12);
    // FOR KEY SHARE of a row updated since the snapshot, as PostgreSQL's: the key is there.
    lock_key_level(&m, b"k", 11, 11, true, true).unwrap();
    // Made full (FOR SHARE, or an update), it is checked as it would have been.
    assert!(matches!(
        lock_key_level(&m, b"k", 11, 11, true, false),
        Err(MvccError::WriteConflict { .. })
    ));
    assert!(matches!(
        lock_key_level(&m, b"k", 11, 11, false, false),
        Err(MvccError::WriteConflict { .. })
    ));
    m.pessimistic_rollback(&[b"k".to_vec()], ts(11)).unwrap();
    // A value committed while a key-only share was held is checked when it is made full.
    lock_key_level(&m, b"k", 13, 13, true, true).unwrap();
    lock_key_level(&m, b"k", 14, 14, false, true).unwrap();
    let locked_put = Mutation {
        key: b"k".to_vec(),
        op: MutationOp::Put(b"w".to_vec()),
        check: KeyCheck::Locked,
    };
    m.prewrite(&[locked_put], b"k", ts(14), 3_000, PrewriteLocks::Durable)
        .unwrap();
    m.commit(&[b"k".to_vec()], ts(14), ts(15)).unwrap();
    assert!(matches!(
        lock_key_level(&m, b"k", 13, 13, false, true),
        Err(MvccError::WriteConflict { .. })
    ));
    m.pessimistic_rollback(&[b"k".to_vec()], ts(13)).unwrap();
    // A deletion since the snapshot is a conflict: the key is gone.
    let delete = Mutation {
        key: b"k".to_vec(),
        op: MutationOp::Delete,
        check: KeyCheck::Snapshot,
    };
    m.prewrite(&[delete], b"k", ts(16), 3_000, PrewriteLocks::Durable)
        .unwrap();
    m.commit(&[b"k".to_vec()], ts(16), ts(17)).unwrap();
    assert!(matches!(
        lock_key_level(&m, b"k", 18, 16, true, true),
        Err(MvccError::WriteConflict { .. })
    ));
}

#[test]
fn a_no_key_lock_made_full_waits_for_the_key_only_sharers_it_let_in() {
    let (_d, m) = mvcc();
    lock_key_level(&m, b"k", 10, 10, false, true).unwrap();
    lock_key_level(&m, b"k", 11, 11, true, true).unwrap();
    // Asking for a share of a key it holds exclusively changes nothing.
    lock_key_level(&m, b"k", 10, 10, true, false).unwrap();
    assert!(m.lock_of(b"k").unwrap().unwrap().key_only);
    assert_eq!(
        holder_of(lock_key_level(&m, b"k", 10, 10, false, false)),
        ts(11)
    );
    m.pessimistic_rollback(&[b"k".to_vec()], ts(11)).unwrap();
    lock_key_level(&m, b"k", 10, 10, false, false).unwrap();
    let lock = m.lock_of(b"k").unwrap().unwrap();
    assert_eq!((lock.kind, lock.key_only), (LockKind::Pessimistic, false));
    assert_eq!(
        holder_of(lock_key_level(&m, b"k", 12, 12, true, true)),
        ts(10)
    );
    // A key-only sharer's own exclusive lock keeps the key only if asked so.
    lock_key_level(&m, b"j", 20, 20, true, true).unwrap();
    lock_key_level(&m, b"j", 21, 21, true, true).unwrap();
    lock_key_level(&m, b"j", 20, 20, false, true).unwrap();
    let lock = m.lock_of(b"j").unwrap().unwrap();
    assert_eq!((lock.kind, lock.key_only), (LockKind::Pessimistic, true));
    assert!(m.is_held_by(b"j", ts(21)).unwrap());
}

fn holder_of(result: Result<Vec<Option<Vec<u8>>>, MvccError>) -> Timestamp {
    match result {
        Err(MvccError::KeyIsLocked(info)) => info.start_ts,
        other => panic!("expected KeyIsLocked, got {other:?}"),
    }
}

#[test]
fn shared_locks_are_held_by_many_and_keep_every_writer_out() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"v", 1, 2);
    lock_as(&m, b"k", 10, true).unwrap();
    lock_as(&m, b"k", 11, true).unwrap();
    // Taking it again changes nothing.
    lock_as(&m, b"k", 11, true).unwrap();
    assert!(m.is_held_by(b"k", ts(10)).unwrap());
    assert!(m.is_held_by(b"k", ts(11)).unwrap());
    // Readers are not blocked, and see the key's value, unchanged.
    assert_eq!(m.get(b"k", ts(12), None).unwrap(), Some(b"v".to_vec()));
    assert_eq!(
        m.scan(b"", b"", ts(12), 10, None).unwrap(),
        vec![(b"k".to_vec(), b"v".to_vec())]
    );
    // An exclusive lock, and a write, wait for every holder.
    let holder = holder_of(lock_as(&m, b"k", 13, false));
    assert!(holder == ts(10) || holder == ts(11), "{holder:?}");
    assert!(matches!(
        m.prewrite(
            &[put(b"k", b"w")],
            b"k",
            ts(13),
            3_000,
            PrewriteLocks::Durable
        ),
        Err(MvccError::KeyIsLocked(_))
    ));
    m.pessimistic_rollback(&[b"k".to_vec()], ts(10)).unwrap();
    assert!(!m.is_held_by(b"k", ts(10)).unwrap());
    assert_eq!(holder_of(lock_as(&m, b"k", 13, false)), ts(11));
    // A shared lock never prewritten leaves nothing at commit.
    m.commit(&[b"k".to_vec()], ts(11), ts(14)).unwrap();
    assert!(!m.is_held_by(b"k", ts(11)).unwrap());
    lock_as(&m, b"k", 13, false).unwrap();
    // Now the exclusive holder keeps shared lockers out.
    assert_eq!(holder_of(lock_as(&m, b"k", 15, true)), ts(13));
    assert_eq!(
        m.lock_of(b"k").unwrap().unwrap().kind,
        LockKind::Pessimistic
    );
}

#[test]
fn a_shared_lock_becomes_exclusive_once_its_holder_holds_it_alone() {
    let (_d, m) = mvcc();
    lock_as(&m, b"k", 10, true).unwrap();
    lock_as(&m, b"k", 11, true).unwrap();
    assert_eq!(holder_of(lock_as(&m, b"k", 10, false)), ts(11));
    m.pessimistic_rollback(&[b"k".to_vec()], ts(11)).unwrap();
    lock_as(&m, b"k", 10, false).unwrap();
    let lock = m.lock_of(b"k").unwrap().unwrap();
    assert_eq!((lock.kind, lock.start_ts), (LockKind::Pessimistic, ts(10)));
    // The shared lock it replaced is gone: one lock, released by one rollback.
    m.pessimistic_rollback(&[b"k".to_vec()], ts(10)).unwrap();
    assert!(!m.is_held_by(b"k", ts(10)).unwrap());
    assert_eq!(m.lock_of(b"k").unwrap(), None);
    // An exclusive holder asking for a shared lock keeps its exclusive one.
    lock_as(&m, b"k", 12, false).unwrap();
    lock_as(&m, b"k", 12, true).unwrap();
    assert_eq!(holder_of(lock_as(&m, b"k", 13, true)), ts(12));
}

#[test]
fn a_shared_lock_checks_for_newer_commits_as_an_exclusive_one_does() {
    let (_d, m) = mvcc();
    write(&m, b"k", b"v", 10, 12);
    assert!(matches!(
        lock_as(&m, b"k", 11, true),
        Err(MvccError::WriteConflict { .. })
    ));
    lock_as(&m, b"k", 13, true).unwrap();
}

#[test]
fn a_kept_shared_lock_is_durable_until_commit_and_records_its_transactions_fate() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
    let m = Mvcc::new(engine.clone()).unwrap();
    write(&m, b"parent", b"p", 1, 2);
    // Two transactions insert children of one parent, each sharing its lock; the first
    // makes the parent its primary.
    lock_as(&m, b"parent", 10, true).unwrap();
    lock_as(&m, b"parent", 11, true).unwrap();
    let kept = |key: &[u8]| Mutation {
        key: key.to_vec(),
        op: MutationOp::Lock,
        check: KeyCheck::SharedLocked,
    };
    m.prewrite(
        &[kept(b"parent"), put(b"child1", b"c")],
        b"parent",
        ts(10),
        3_000,
        PrewriteLocks::Volatile,
    )
    .unwrap();
    // Durable whatever the placement asked: an MVCC opened afresh on the engine sees it.
    let reopened = Mvcc::new(engine.clone()).unwrap();
    assert!(reopened.is_held_by(b"parent", ts(10)).unwrap());
    assert!(
        !reopened.is_held_by(b"parent", ts(11)).unwrap(),
        "in memory only"
    );
    // A transaction whose shared lock is gone cannot keep it.
    m.pessimistic_rollback(&[b"parent".to_vec()], ts(11))
        .unwrap();
    assert!(matches!(
        m.prewrite(
            &[kept(b"parent")],
            b"parent",
            ts(11),
            3_000,
            PrewriteLocks::Durable
        ),
        Err(MvccError::TxnLockNotFound { .. })
    ));
    // The parent cannot change before the commit; pessimistic rollback leaves a kept lock.
    assert_eq!(holder_of(lock_as(&m, b"parent", 12, false)), ts(10));
    m.pessimistic_rollback(&[b"parent".to_vec()], ts(10))
        .unwrap();
    assert_eq!(holder_of(lock_as(&m, b"parent", 12, false)), ts(10));
    m.commit(&[b"parent".to_vec(), b"child1".to_vec()], ts(10), ts(20))
        .unwrap();
    // The primary's fate is on record; committing again is harmless; the value stands.
    assert_eq!(
        m.check_txn_status(b"parent", ts(10), ts(30), false, MissingPrimary::Report)
            .unwrap(),
        TxnStatus::Committed { commit_ts: ts(20) }
    );
    m.commit(&[b"parent".to_vec()], ts(10), ts(20)).unwrap();
    assert_eq!(m.get(b"parent", ts(30), None).unwrap(), Some(b"p".to_vec()));
    assert_eq!(m.get(b"child1", ts(30), None).unwrap(), Some(b"c".to_vec()));
    lock_as(&m, b"parent", 31, false).unwrap();
}

#[test]
fn a_shared_lock_of_a_dead_transaction_is_rolled_back_at_its_ttl_and_resolved() {
    let (_d, m) = mvcc();
    // Transaction 10's primary is `p`; it shares `k`.
    lock_as(&m, b"p", 10, false).unwrap();
    m.lock_keys(&LockKeys {
        keys: &[(b"k".to_vec(), false)],
        primary: b"p",
        start_ts: ts(10),
        for_update_ts: ts(10),
        ttl_ms: 3_000,
        need_values: false,
        shared: true,
        key_only: false,
    })
    .unwrap();
    let met = match lock_as(&m, b"k", 20, false) {
        Err(MvccError::KeyIsLocked(info)) => info,
        other => panic!("expected KeyIsLocked, got {other:?}"),
    };
    assert_eq!(
        (met.primary.as_slice(), met.kind),
        (&b"p"[..], LockKind::Shared)
    );
    // Alive within its TTL, rolled back after it; the shared lock then resolves away.
    assert!(matches!(
        m.check_txn_status(b"p", ts(10), ts(11), false, MissingPrimary::Fence)
            .unwrap(),
        TxnStatus::Locked { .. }
    ));
    let late = Timestamp::compose(1_000_000 + 10 + 10_000, 0);
    assert_eq!(
        m.check_txn_status(b"p", ts(10), late, false, MissingPrimary::Fence)
            .unwrap(),
        TxnStatus::RolledBack
    );
    m.resolve_lock(&[b"k".to_vec()], ts(10), None).unwrap();
    assert!(!m.is_held_by(b"k", ts(10)).unwrap());
    lock_as(&m, b"k", 20, false).unwrap();

    // A shared primary's heartbeat and expiry work on its shared lock.
    lock_as(&m, b"s", 30, true).unwrap();
    assert_eq!(m.txn_heartbeat(b"s", ts(30), 9_000).unwrap(), 9_000);
    let past_first_ttl = Timestamp::compose(1_000_000 + 30 + 5_000, 0);
    assert!(matches!(
        m.check_txn_status(b"s", ts(30), past_first_ttl, false, MissingPrimary::Fence)
            .unwrap(),
        TxnStatus::Locked { .. }
    ));
}

#[test]
fn shared_locks_in_memory_are_taken_and_replaced_without_the_engine() {
    let (_d, m) = mvcc();
    let keys = [(b"k".to_vec(), false)];
    let request = |start: u64, shared: bool| LockKeys {
        keys: &keys,
        primary: b"k",
        start_ts: ts(start),
        for_update_ts: ts(start),
        ttl_ms: 3_000,
        need_values: false,
        shared,
        key_only: false,
    };
    assert_eq!(
        m.try_lock_keys_in_memory(&request(10, true)).unwrap(),
        Some(vec![])
    );
    assert_eq!(
        m.try_lock_keys_in_memory(&request(11, true)).unwrap(),
        Some(vec![])
    );
    assert!(m.has_memory_locks_in(b"", b""));
    assert!(matches!(
        m.try_lock_keys_in_memory(&request(10, false)),
        Err(MvccError::KeyIsLocked(_))
    ));
    m.pessimistic_rollback(&[b"k".to_vec()], ts(11)).unwrap();
    assert_eq!(
        m.try_lock_keys_in_memory(&request(10, false)).unwrap(),
        Some(vec![])
    );
    assert_eq!(
        m.lock_of(b"k").unwrap().unwrap().kind,
        LockKind::Pessimistic
    );
    m.pessimistic_rollback(&[b"k".to_vec()], ts(10)).unwrap();
    assert!(!m.has_memory_locks_in(b"", b""));
    // Shared locks are no prewrite locks: they hold back no GC safe point.
    lock_as(&m, b"k", 12, true).unwrap();
    assert_eq!(m.oldest_lock_start_ts().unwrap(), None);
}
