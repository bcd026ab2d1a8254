//! Transactions over the local TxnKv: lock waits, timeouts, deadlocks, crash recovery.

use std::sync::Arc;

use flotilla_mvcc::Mvcc;
use flotilla_storage::{FjallEngine, FjallOptions};
use flotilla_tso::{LocalTso, TsoRef};

use crate::transaction::wall_clock_ms;
use crate::{LocalTxnKv, Transaction, TxnError, TxnKv, TxnKvRef, TxnOptions};

struct Fixture {
    _dir: tempfile::TempDir,
    mvcc: Arc<Mvcc>,
    kv: Arc<LocalTxnKv>,
    tso: TsoRef,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
    let tso: TsoRef = Arc::new(LocalTso::open(engine.clone(), 3_000).unwrap());
    let mvcc = Arc::new(Mvcc::new(engine).unwrap());
    let kv = Arc::new(LocalTxnKv::new(mvcc.clone(), tso.clone()));
    Fixture {
        _dir: dir,
        mvcc,
        kv,
        tso,
    }
}

impl Fixture {
    async fn begin(&self, lock_wait_timeout_ms: u64) -> Transaction {
        let options = TxnOptions {
            lock_wait_timeout_ms,
            ..TxnOptions::default()
        };
        Transaction::begin(self.kv.clone() as TxnKvRef, self.tso.clone(), options)
            .await
            .unwrap()
    }

    /// Writes `v` to `primary` and `secondary` in one transaction and commits only the
    /// primary, as a coordinator that died at the commit point leaves them.
    async fn commit_leaving_the_secondary_locked(&self, primary: &[u8], secondary: &[u8]) {
        let kv = self.kv.clone() as TxnKvRef;
        let start = self.tso.get_ts().await.unwrap();
        let put = |k: &[u8]| flotilla_mvcc::Mutation {
            key: k.to_vec(),
            op: flotilla_mvcc::MutationOp::Put(b"v".to_vec()),
            check: flotilla_mvcc::KeyCheck::Snapshot,
        };
        kv.prewrite(
            vec![put(primary), put(secondary)],
            primary,
            start,
            60_000,
            false,
        )
        .await
        .unwrap();
        let commit = self.tso.get_ts().await.unwrap();
        kv.commit(vec![primary.to_vec()], start, commit)
            .await
            .unwrap();
    }

    async fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        let t = self.begin(1_000).await;
        let ts = t.fresh_ts().await.unwrap();
        let v = t.view(ts).get(key).await.unwrap();
        t.rollback().await.unwrap();
        v
    }
}

#[tokio::test]
async fn reads_see_own_writes_and_commits_become_visible() {
    let f = fixture();
    let mut t = f.begin(1_000).await;
    t.lock_keys(vec![(b"a".to_vec(), true)], false)
        .await
        .unwrap();
    t.put(b"a".to_vec(), b"1".to_vec()).unwrap();
    t.put(b"c".to_vec(), b"3".to_vec()).unwrap();
    let ts = t.fresh_ts().await.unwrap();
    assert_eq!(t.view(ts).get(b"a").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        f.read(b"a").await,
        None,
        "uncommitted writes are invisible to others"
    );
    t.commit().await.unwrap();
    assert_eq!(f.read(b"a").await, Some(b"1".to_vec()));

    // A scan merges the buffer (including deletions) with committed data, in order.
    let mut t = f.begin(1_000).await;
    t.put(b"b".to_vec(), b"2".to_vec()).unwrap();
    t.lock_keys(vec![(b"c".to_vec(), false)], false)
        .await
        .unwrap();
    t.delete(b"c".to_vec()).unwrap();
    let ts = t.fresh_ts().await.unwrap();
    let rows = t.view(ts).scan(b"", b"", 1).await.unwrap();
    assert_eq!(rows, vec![(b"a".to_vec(), b"1".to_vec())]);
    let rows = t.view(ts).scan(b"", b"", 10).await.unwrap();
    assert_eq!(
        rows,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ]
    );
    t.rollback().await.unwrap();
    assert_eq!(f.read(b"c").await, Some(b"3".to_vec()));
}

#[tokio::test]
async fn a_second_writer_waits_for_the_first_and_then_sees_its_commit_as_a_conflict() {
    let f = fixture();
    let mut first = f.begin(10_000).await;
    first
        .lock_keys(vec![(b"k".to_vec(), false)], false)
        .await
        .unwrap();
    first.put(b"k".to_vec(), b"first".to_vec()).unwrap();

    let mut second = f.begin(10_000).await;
    let waiter = tokio::spawn(async move {
        let r = second.lock_keys(vec![(b"k".to_vec(), false)], false).await;
        (second, r)
    });
    first.commit().await.unwrap();
    let (mut second, r) = waiter.await.unwrap();
    // It waited (a timeout would say so) and then found the newer commit.
    assert!(
        matches!(r, Err(TxnError::WriteConflict { .. })),
        "got {r:?}"
    );
    // READ COMMITTED retries with a newer for_update_ts and succeeds.
    let ts = second.fresh_ts().await.unwrap();
    second.set_for_update_ts(ts);
    let values = second
        .lock_keys(vec![(b"k".to_vec(), false)], true)
        .await
        .unwrap();
    assert_eq!(values, vec![Some(b"first".to_vec())]);
    second.put(b"k".to_vec(), b"second".to_vec()).unwrap();
    second.commit().await.unwrap();
    assert_eq!(f.read(b"k").await, Some(b"second".to_vec()));
}

#[tokio::test]
async fn lock_waits_are_bounded() {
    let f = fixture();
    let mut holder = f.begin(1_000).await;
    holder
        .lock_keys(vec![(b"k".to_vec(), false)], false)
        .await
        .unwrap();
    let mut waiter = f.begin(50).await;
    let r = waiter.lock_keys(vec![(b"k".to_vec(), false)], false).await;
    assert!(
        matches!(r, Err(TxnError::LockWaitTimeout { .. })),
        "got {r:?}"
    );
    holder.rollback().await.unwrap();
    waiter
        .lock_keys(vec![(b"k".to_vec(), false)], false)
        .await
        .unwrap();
    waiter.rollback().await.unwrap();
}

#[tokio::test]
async fn a_deadlock_is_broken_by_failing_one_of_its_transactions() {
    let f = fixture();
    let mut a = f.begin(20_000).await;
    let mut b = f.begin(20_000).await;
    a.lock_keys(vec![(b"x".to_vec(), false)], false)
        .await
        .unwrap();
    b.lock_keys(vec![(b"y".to_vec(), false)], false)
        .await
        .unwrap();
    let a_task = tokio::spawn(async move {
        let r = a.lock_keys(vec![(b"y".to_vec(), false)], false).await;
        (a, r)
    });
    let b_task = tokio::spawn(async move {
        let r = b.lock_keys(vec![(b"x".to_vec(), false)], false).await;
        (b, r)
    });
    // Whichever closes the cycle is refused; the other then gets its lock once the
    // refused one rolls back.
    let (a_result, b_result) = tokio::join!(
        async {
            let (a, r) = a_task.await.unwrap();
            if r.is_err() {
                a.rollback().await.unwrap();
            } else {
                a.commit().await.unwrap();
            }
            r
        },
        async {
            let (b, r) = b_task.await.unwrap();
            if r.is_err() {
                b.rollback().await.unwrap();
            } else {
                b.commit().await.unwrap();
            }
            r
        }
    );
    let deadlocks = [&a_result, &b_result]
        .iter()
        .filter(|r| matches!(r, Err(TxnError::Deadlock { .. })))
        .count();
    assert_eq!(deadlocks, 1, "a: {a_result:?}, b: {b_result:?}");
    assert!(a_result.is_ok() || b_result.is_ok());
}

#[tokio::test]
async fn restart_recovery_commits_or_rolls_back_every_orphan_lock() {
    let f = fixture();
    let kv = f.kv.clone() as TxnKvRef;
    let start = f.tso.get_ts().await.unwrap();
    let put = |k: &[u8], v: &[u8]| flotilla_mvcc::Mutation {
        key: k.to_vec(),
        op: flotilla_mvcc::MutationOp::Put(v.to_vec()),
        check: flotilla_mvcc::KeyCheck::Snapshot,
    };
    // Transaction 1 committed its primary and died before its secondary.
    kv.prewrite(
        vec![put(b"p1", b"1"), put(b"s1", b"1")],
        b"p1",
        start,
        60_000,
        false,
    )
    .await
    .unwrap();
    let commit = f.tso.get_ts().await.unwrap();
    kv.commit(vec![b"p1".to_vec()], start, commit)
        .await
        .unwrap();
    // Transaction 2 died after prewrite.
    let start2 = f.tso.get_ts().await.unwrap();
    kv.prewrite(
        vec![put(b"p2", b"2"), put(b"s2", b"2")],
        b"p2",
        start2,
        60_000,
        false,
    )
    .await
    .unwrap();
    assert_eq!(f.kv.recover_orphan_locks().await.unwrap(), 3);
    assert_eq!(f.read(b"s1").await, Some(b"1".to_vec()));
    assert_eq!(f.read(b"p2").await, None);
    assert_eq!(f.read(b"s2").await, None);
}

#[tokio::test]
async fn a_reader_resolves_the_secondary_of_a_committed_transaction() {
    let f = fixture();
    f.commit_leaving_the_secondary_locked(b"p", b"s").await;
    // The lock on s has a long TTL, but its primary says committed: no waiting.
    assert_eq!(f.read(b"s").await, Some(b"v".to_vec()));
}

#[tokio::test]
async fn a_lock_that_may_not_wait_still_resolves_a_decided_lock_and_times_out_on_a_live_one() {
    let f = fixture();
    f.commit_leaving_the_secondary_locked(b"p", b"s").await;
    // NOWAIT (no time to wait) takes the row: the lock on it holds nobody's place.
    let mut nowait = f.begin(0).await;
    let values = nowait
        .lock_keys(vec![(b"s".to_vec(), false)], true)
        .await
        .unwrap();
    assert_eq!(values, vec![Some(b"v".to_vec())]);
    // A live lock is refused at once, as timed out (not as a deadlock).
    let mut other = f.begin(0).await;
    let r = other.lock_keys(vec![(b"s".to_vec(), false)], false).await;
    assert!(matches!(r, Err(TxnError::LockWaitTimeout { .. })), "{r:?}");
    other.rollback().await.unwrap();
    nowait.rollback().await.unwrap();
}

/// A transaction whose first lock is refused goes on (NOWAIT, SKIP LOCKED, a savepoint)
/// and locks other keys: their primary must be one of them. It was the refused key, which
/// the transaction never held, so anyone meeting its later locks judged it rolled back and
/// removed them, and its commit lost them.
#[tokio::test]
async fn a_transaction_whose_first_lock_was_refused_keeps_the_locks_it_takes_after() {
    let f = fixture();
    let mut holder = f.begin(0).await;
    holder
        .lock_keys(vec![(b"a".to_vec(), false)], false)
        .await
        .unwrap();
    let mut t = f.begin(0).await;
    let r = t.lock_keys(vec![(b"a".to_vec(), false)], false).await;
    assert!(matches!(r, Err(TxnError::LockWaitTimeout { .. })), "{r:?}");
    t.lock_keys(vec![(b"b".to_vec(), false)], false)
        .await
        .unwrap();
    let mut third = f.begin(0).await;
    let r = third.lock_keys(vec![(b"b".to_vec(), false)], false).await;
    assert!(
        matches!(r, Err(TxnError::LockWaitTimeout { .. })),
        "the lock on b was taken from its live transaction: {r:?}"
    );
    third.rollback().await.unwrap();
    holder.rollback().await.unwrap();
    t.put(b"b".to_vec(), b"v".to_vec()).unwrap();
    t.commit().await.unwrap();
    assert_eq!(f.read(b"b").await, Some(b"v".to_vec()));
}

#[tokio::test]
async fn transactions_commit_whole_whether_they_fit_one_request_or_not() {
    let f = fixture();
    for (keys, per_request) in [(3usize, 4usize), (7, 2)] {
        let options = TxnOptions {
            keys_per_request_max: per_request,
            ..TxnOptions::default()
        };
        let mut t = Transaction::begin(f.kv.clone() as TxnKvRef, f.tso.clone(), options)
            .await
            .unwrap();
        let key = |i: usize| format!("k{keys}-{i}").into_bytes();
        t.lock_keys((0..keys).map(|i| (key(i), true)).collect(), false)
            .await
            .unwrap();
        for i in 0..keys {
            t.put(key(i), vec![i as u8; 300]).unwrap();
        }
        t.commit().await.unwrap();
        for i in 0..keys {
            assert_eq!(f.read(&key(i)).await, Some(vec![i as u8; 300]));
        }
    }
}

#[tokio::test]
async fn a_lock_given_back_then_taken_again_survives_a_waiter_judging_its_fate_between() {
    use crate::TxnKv;
    use flotilla_mvcc::{MissingPrimary, TxnStatus};

    let f = fixture();
    let mut t = f.begin(1_000).await;
    // A statement locks a row to read it (the transaction's first lock, so its primary),
    // finds it does not match, and gives the lock back.
    t.lock_keys(vec![(b"k".to_vec(), false)], true)
        .await
        .unwrap();
    t.unlock_key(b"k").await;
    assert!(!t.is_locked(b"k"));
    // A writer that met that lock before it went asks for the transaction's fate only
    // now, as a waiter racing the release does. The lock it met was the primary itself.
    let status =
        f.kv.check_txn_status(
            b"k",
            t.start_ts(),
            MissingPrimary::for_lock_met_at(b"k", b"k"),
        )
        .await
        .unwrap();
    assert_eq!(status, TxnStatus::Released);
    // A later statement of the same, live transaction locks and writes the row. Before
    // the waiter's check reported instead of fencing, this was a spurious "aborted by a
    // concurrent transaction (its locks lapsed)".
    t.lock_keys(vec![(b"k".to_vec(), false)], true)
        .await
        .unwrap();
    t.put(b"k".to_vec(), b"v".to_vec()).unwrap();
    t.commit().await.unwrap();
    assert_eq!(f.read(b"k").await, Some(b"v".to_vec()));
}

/// A key a transaction read and depends on, but does not write (a row a foreign key
/// references), is kept locked until commit: if its lock was lost meanwhile (its store
/// restarted; in-memory pessimistic locks are not durable) and another transaction
/// changed the key, the commit fails instead of committing on a stale read.
#[tokio::test]
async fn a_key_kept_locked_until_commit_fails_the_commit_if_its_lock_was_lost() {
    let f = fixture();
    let mut setup = f.begin(1_000).await;
    setup.put(b"parent".to_vec(), b"row".to_vec()).unwrap();
    setup.commit().await.unwrap();

    let mut t = f.begin(1_000).await;
    // The written key is locked first, so it (not the kept key) is the primary.
    t.lock_keys(vec![(b"child".to_vec(), true)], false)
        .await
        .unwrap();
    let found = t
        .lock_keys(vec![(b"parent".to_vec(), false)], true)
        .await
        .unwrap();
    assert_eq!(found, vec![Some(b"row".to_vec())]);
    t.keep_locked_until_commit(&[b"parent".to_vec()]);
    t.put(b"child".to_vec(), b"ref".to_vec()).unwrap();
    // The lock vanishes, as with a store restart, and another transaction deletes the key.
    let kv = f.kv.clone() as TxnKvRef;
    kv.pessimistic_rollback(&[b"parent".to_vec()], t.start_ts())
        .await
        .unwrap();
    let mut other = f.begin(1_000).await;
    other
        .lock_keys(vec![(b"parent".to_vec(), false)], false)
        .await
        .unwrap();
    other.delete(b"parent".to_vec()).unwrap();
    other.commit().await.unwrap();

    assert!(t.commit().await.is_err(), "committed on a lost lock");
    assert_eq!(f.read(b"child").await, None);

    // With the lock held, the commit goes through and records nothing for the key.
    let mut setup = f.begin(1_000).await;
    setup.put(b"parent".to_vec(), b"row".to_vec()).unwrap();
    setup.commit().await.unwrap();
    let mut t = f.begin(1_000).await;
    t.lock_keys(vec![(b"parent".to_vec(), false)], true)
        .await
        .unwrap();
    t.keep_locked_until_commit(&[b"parent".to_vec()]);
    t.put(b"child".to_vec(), b"ref".to_vec()).unwrap();
    t.commit().await.unwrap();
    assert_eq!(f.read(b"parent").await, Some(b"row".to_vec()));
    assert_eq!(f.read(b"child").await, Some(b"ref".to_vec()));
}

/// A timestamp oracle whose first timestamp is `lag_ms` in the past: a transaction begun
/// with it is as old as one that began then.
struct Lagging {
    inner: TsoRef,
    lag_ms: u64,
    first: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl flotilla_tso::Tso for Lagging {
    async fn get_ts(&self) -> Result<flotilla_types::Timestamp, flotilla_tso::TsoError> {
        let ts = self.inner.get_ts().await?;
        if self.first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(flotilla_types::Timestamp::compose(
                ts.physical_ms() - self.lag_ms,
                0,
            ));
        }
        Ok(ts)
    }
}

/// A transaction older than `lock_ttl_ms` (it waited long for another's lock) takes a
/// lock: the lock lives its age plus the TTL, so a waiter waits for it rather than
/// finding it lapsed and rolling back a live transaction ("aborted by a concurrent
/// transaction (its locks lapsed)" at its commit, before its first heartbeat).
#[tokio::test]
async fn a_lock_taken_late_in_a_long_transaction_is_not_born_lapsed() {
    let f = fixture();
    let options = TxnOptions::default();
    let old = Arc::new(Lagging {
        inner: f.tso.clone(),
        lag_ms: 2 * options.lock_ttl_ms,
        first: std::sync::atomic::AtomicBool::new(true),
    });
    let mut t = Transaction::begin(f.kv.clone() as TxnKvRef, old, options)
        .await
        .unwrap();
    t.lock_keys(vec![(b"k".to_vec(), false)], false)
        .await
        .unwrap();
    t.put(b"k".to_vec(), b"old".to_vec()).unwrap();
    let mut waiter = f.begin(50).await;
    let e = waiter
        .lock_keys(vec![(b"k".to_vec(), false)], false)
        .await
        .expect_err("the lock is held");
    assert!(matches!(e, TxnError::LockWaitTimeout { .. }), "{e:?}");
    waiter.rollback().await.unwrap();
    t.commit().await.unwrap();
    assert_eq!(f.read(b"k").await, Some(b"old".to_vec()));
}

/// A lock granted after a wait longer than its TTL lives that TTL past its grant. Before,
/// its lifetime was reckoned from the request's sending, so it was born lapsed: the next
/// waiter found it expired and rolled back the live transaction, whose COMMIT then failed
/// with "aborted by a concurrent transaction (its locks lapsed)" (40001). Four clients
/// updating one row of a cluster under load met this.
#[tokio::test]
async fn a_lock_granted_after_a_wait_longer_than_its_ttl_is_not_born_lapsed() {
    let f = fixture();
    let mut holder = f.begin(10_000).await;
    holder
        .lock_keys(vec![(b"k".to_vec(), false)], false)
        .await
        .unwrap();
    let ttl_ms = 100;
    let options = TxnOptions {
        lock_ttl_ms: ttl_ms,
        lock_wait_timeout_ms: 10_000,
        ..TxnOptions::default()
    };
    let mut waiter = Transaction::begin(f.kv.clone() as TxnKvRef, f.tso.clone(), options)
        .await
        .unwrap();
    // `join!` polls the wait first, so the request is made and waiting before the holder
    // lets three of its TTLs pass and gives the key up.
    let wait = waiter.lock_keys(vec![(b"k".to_vec(), false)], false);
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(3 * ttl_ms)).await;
        let released_at_ms = wall_clock_ms();
        holder.rollback().await.unwrap();
        released_at_ms
    };
    let (granted, released_at_ms) = tokio::join!(wait, release);
    granted.unwrap();
    let lock = f.mvcc.lock_of(b"k").unwrap().expect("the waiter's lock");
    assert_eq!(lock.start_ts, waiter.start_ts());
    let expires_at_ms = lock.start_ts.physical_ms() + lock.ttl_ms;
    // Granted after the release, so it lives about `ttl_ms` past it (less the moments
    // between the reckoning and the request's first attempt, which load can stretch).
    // Before, it had lapsed two TTLs before the release.
    assert!(
        expires_at_ms >= released_at_ms + ttl_ms / 2,
        "the lock expires at {expires_at_ms} ms, {} ms after its holder's release",
        expires_at_ms as i64 - released_at_ms as i64
    );
    waiter.rollback().await.unwrap();
}

/// The same for a prewrite that settles another's lock and is sent again: its primary's
/// lock lives its TTL past its writing.
#[tokio::test]
async fn a_prewrite_sent_again_after_a_wait_longer_than_its_ttl_is_not_born_lapsed() {
    let f = fixture();
    let mut holder = f.begin(10_000).await;
    holder
        .lock_keys(vec![(b"b".to_vec(), false)], false)
        .await
        .unwrap();
    let ttl_ms = 100;
    let start_ts = f.tso.get_ts().await.unwrap();
    let put = |k: &[u8]| flotilla_mvcc::Mutation {
        key: k.to_vec(),
        op: flotilla_mvcc::MutationOp::Put(b"v".to_vec()),
        check: flotilla_mvcc::KeyCheck::Snapshot,
    };
    let prewrite = f.kv.prewrite(
        vec![put(b"a"), put(b"b")],
        b"a",
        start_ts,
        wall_clock_ms().saturating_sub(start_ts.physical_ms()) + ttl_ms,
        false,
    );
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(3 * ttl_ms)).await;
        let released_at_ms = wall_clock_ms();
        holder.rollback().await.unwrap();
        released_at_ms
    };
    let (written, released_at_ms) = tokio::join!(prewrite, release);
    written.unwrap();
    let lock = f.mvcc.lock_of(b"a").unwrap().expect("the primary's lock");
    let expires_at_ms = lock.start_ts.physical_ms() + lock.ttl_ms;
    assert!(
        expires_at_ms >= released_at_ms + ttl_ms / 2,
        "the lock expires at {expires_at_ms} ms, {} ms after the other's release",
        expires_at_ms as i64 - released_at_ms as i64
    );
    f.kv.rollback(vec![b"a".to_vec(), b"b".to_vec()], start_ts)
        .await
        .unwrap();
}
