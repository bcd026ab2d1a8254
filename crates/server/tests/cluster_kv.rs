//! The routing `TxnKv` against a cluster in this process.

mod common;

use std::time::Duration;

use flotilla_client::encode_key;
use flotilla_mvcc::{KeyCheck, Mutation, MutationOp};
use flotilla_tso::Tso;
use flotilla_txn::TxnKv;

fn put(key: &[u8], value: &[u8]) -> Mutation {
    Mutation {
        key: key.to_vec(),
        op: MutationOp::Put(value.to_vec()),
        check: KeyCheck::Snapshot,
    }
}

/// The route of the region holding `key` (its leader already found by a request), the
/// leader's store id, and a raw gRPC client of that store.
async fn leader_client(
    cluster: &common::Cluster,
    kv: &flotilla_client::ClusterTxnKv,
    key: &[u8],
) -> (
    flotilla_client::CachedRegion,
    u64,
    flotilla_proto::kvpb::store_client::StoreClient<tonic::transport::Channel>,
) {
    let route = kv.cache().locate(&encode_key(key)).await.unwrap();
    let leader = route
        .leader
        .as_ref()
        .expect("a request found the leader")
        .store_id;
    let leader_addr = cluster
        .stores
        .iter()
        .find(|s| s.store_id() == leader)
        .unwrap()
        .addr();
    let client =
        flotilla_proto::kvpb::store_client::StoreClient::connect(format!("http://{leader_addr}"))
            .await
            .unwrap();
    (route, leader, client)
}

/// Writes one key in a transaction of its own (prewrite, then commit).
async fn write_one(
    kv: &flotilla_client::ClusterTxnKv,
    tso: &flotilla_client::RemoteTso,
    key: &[u8],
    value: &[u8],
) {
    write_all(kv, tso, &[key.to_vec()], value).await;
}

/// Writes `value` under every key of `keys` in one transaction of its own, the first key
/// its primary (prewrite, then commit).
async fn write_all(
    kv: &flotilla_client::ClusterTxnKv,
    tso: &flotilla_client::RemoteTso,
    keys: &[Vec<u8>],
    value: &[u8],
) {
    let start_ts = tso.get_ts().await.unwrap();
    kv.prewrite(
        keys.iter().map(|k| put(k, value)).collect(),
        &keys[0],
        start_ts,
        10_000,
        true,
    )
    .await
    .unwrap();
    let commit_ts = tso.get_ts().await.unwrap();
    kv.commit(keys.to_vec(), start_ts, commit_ts).await.unwrap();
}

/// A split under the same leader keeps the locks that leader holds only in memory: a
/// transaction prewritten before the split commits after it. (Before the fix, the store
/// rebuilt a region's MVCC on every epoch change and such a commit failed as aborted; the
/// first inserts into a new table, which splits off its own region, hit it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_keeps_the_leaders_in_memory_locks() {
    let cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv();
    let start_ts = tso.get_ts().await.unwrap();
    kv.prewrite(
        vec![put(b"a1", b"one"), put(b"a2", b"two")],
        b"a1",
        start_ts,
        10_000,
        true,
    )
    .await
    .unwrap();
    kv.split_at(&encode_key(b"m")).await.unwrap();
    let commit_ts = tso.get_ts().await.unwrap();
    kv.commit(vec![b"a1".to_vec(), b"a2".to_vec()], start_ts, commit_ts)
        .await
        .expect("commit after the split");
    let read_ts = tso.get_ts().await.unwrap();
    assert_eq!(
        kv.get(b"a2", read_ts, None, 1_000).await.unwrap(),
        Some(b"two".to_vec())
    );
    // The split is real: keys on both sides live in different regions now.
    let left = kv.cache().locate(&encode_key(b"a1")).await.unwrap();
    let right = kv.cache().locate(&encode_key(b"z")).await.unwrap();
    assert_ne!(left.region.id, right.region.id);
}

/// Transactions across regions: a write to keys on both sides of a split commits
/// atomically, and reads across the boundary see all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_spans_regions() {
    let cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv();
    kv.split_at(&encode_key(b"m")).await.unwrap();
    let start_ts = tso.get_ts().await.unwrap();
    kv.prewrite(
        vec![put(b"b", b"left"), put(b"x", b"right")],
        b"b",
        start_ts,
        10_000,
        true,
    )
    .await
    .unwrap();
    let commit_ts = tso.get_ts().await.unwrap();
    kv.commit(vec![b"b".to_vec(), b"x".to_vec()], start_ts, commit_ts)
        .await
        .unwrap();
    let read_ts = tso.get_ts().await.unwrap();
    let rows = kv.scan(b"", b"", read_ts, 100, None, 1_000).await.unwrap();
    assert_eq!(
        rows,
        vec![
            (b"b".to_vec(), b"left".to_vec()),
            (b"x".to_vec(), b"right".to_vec())
        ]
    );
}

/// A coordinator that dies after prewrite leaves durable locks; a reader resolves them once
/// the primary's TTL lapses (rolled back, since the primary never committed), and a
/// coordinator that committed its primary before dying has its secondaries committed by
/// the reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_of_a_dead_coordinator_are_resolved() {
    let cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv();
    kv.split_at(&encode_key(b"m")).await.unwrap();
    // Dead before commit: short TTL, never committed.
    let t1 = tso.get_ts().await.unwrap();
    kv.prewrite(
        vec![put(b"c", b"lost"), put(b"y", b"lost")],
        b"c",
        t1,
        100,
        false,
    )
    .await
    .unwrap();
    // Dead after committing only its primary.
    let t2 = tso.get_ts().await.unwrap();
    kv.prewrite(
        vec![put(b"d", b"kept"), put(b"z", b"kept")],
        b"d",
        t2,
        100,
        false,
    )
    .await
    .unwrap();
    let c2 = tso.get_ts().await.unwrap();
    kv.commit(vec![b"d".to_vec()], t2, c2).await.unwrap();
    let read_ts = tso.get_ts().await.unwrap();
    // The reader waits out the TTL (bounded by its lock wait), then resolves.
    assert_eq!(kv.get(b"y", read_ts, None, 10_000).await.unwrap(), None);
    assert_eq!(
        kv.get(b"z", read_ts, None, 10_000).await.unwrap(),
        Some(b"kept".to_vec())
    );
}

/// A waiter that met a transaction's primary lock and asks for its fate only after the
/// transaction gave that lock back (a statement that locked a row it did not change) is
/// told so, with nothing written: the live transaction locks the key again. A waiter that
/// met a secondary lock naming the same primary fences it as before. (Both through the
/// store's `CheckTxnStatus`, `primary_met` set or not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_lock_given_back_is_not_fenced_by_whoever_met_it() {
    use flotilla_mvcc::{MissingPrimary, TxnStatus};
    use flotilla_txn::LockRequest;

    let cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv();
    let start_ts = tso.get_ts().await.unwrap();
    let lock = |key: &[u8], for_update_ts| LockRequest {
        keys: vec![(key.to_vec(), false)],
        primary: key.to_vec(),
        start_ts,
        for_update_ts,
        ttl_ms: 10_000,
        need_values: true,
        lock_wait_timeout_ms: 1_000,
        shared: false,
        key_only: false,
    };
    for (key, missing, fenced) in [
        (&b"k"[..], MissingPrimary::Report, false),
        (&b"q"[..], MissingPrimary::Fence, true),
    ] {
        kv.acquire_pessimistic_lock(lock(key, start_ts))
            .await
            .unwrap();
        kv.pessimistic_rollback(&[key.to_vec()], start_ts)
            .await
            .unwrap();
        let status = kv.check_txn_status(key, start_ts, missing).await.unwrap();
        let again = kv
            .acquire_pessimistic_lock(lock(key, tso.get_ts().await.unwrap()))
            .await;
        if fenced {
            assert_eq!(status, TxnStatus::RolledBack);
            assert!(
                again.is_err(),
                "a fenced transaction locked again: {again:?}"
            );
        } else {
            assert_eq!(status, TxnStatus::Released);
            again.expect("the live transaction locks the key it gave back");
        }
    }
}

/// A lock granted after a wait longer than its TTL (in the store's wait, and the client's
/// asking again) lives that TTL past its grant, not past the request's sending: before,
/// it was born lapsed, and the next waiter rolled back its live transaction (40001 "its
/// locks lapsed" at COMMIT for clients updating one row under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_granted_after_a_wait_longer_than_its_ttl_is_not_born_lapsed() {
    use flotilla_txn::LockRequest;

    let cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv();
    let wall_clock_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let lock = |start_ts: flotilla_types::Timestamp, ttl_ms| LockRequest {
        keys: vec![(b"k".to_vec(), false)],
        primary: b"k".to_vec(),
        start_ts,
        for_update_ts: start_ts,
        ttl_ms: wall_clock_ms().saturating_sub(start_ts.physical_ms()) + ttl_ms,
        need_values: false,
        lock_wait_timeout_ms: 10_000,
        shared: false,
        key_only: false,
    };
    let holder = tso.get_ts().await.unwrap();
    kv.acquire_pessimistic_lock(lock(holder, 60_000))
        .await
        .unwrap();
    let waiter = tso.get_ts().await.unwrap();
    let ttl_ms = 200;
    // `join!` polls the request first, so it is sent before the holder lets three of its
    // TTLs pass and gives the key up.
    let wait = kv.acquire_pessimistic_lock(lock(waiter, ttl_ms));
    let release = async {
        tokio::time::sleep(Duration::from_millis(3 * ttl_ms)).await;
        let released_at_ms = wall_clock_ms();
        kv.pessimistic_rollback(&[b"k".to_vec()], holder)
            .await
            .unwrap();
        released_at_ms
    };
    let (granted, released_at_ms) = tokio::join!(wait, release);
    granted.unwrap();
    // A heartbeat asking for no more than the lock has answers its lifetime, unchanged.
    let lock_ttl_ms = kv.txn_heartbeat(b"k", waiter, 0).await.unwrap();
    let expires_at_ms = waiter.physical_ms() + lock_ttl_ms;
    // Granted after the release, so it lives about `ttl_ms` past it: less what nobody
    // counts, a request's way to the store, which load stretches to milliseconds. Before,
    // it had lapsed two TTLs before the release.
    assert!(
        expires_at_ms >= released_at_ms + ttl_ms / 2,
        "the lock expires at {expires_at_ms} ms, {} ms after its holder's release",
        expires_at_ms as i64 - released_at_ms as i64
    );
}

/// The log index of `key`'s region at its leader: the index of a checksum entry the
/// leader proposes for it, so each call itself adds one entry to the region's log.
async fn log_index_of(
    cluster: &common::Cluster,
    kv: &flotilla_client::ClusterTxnKv,
    key: &[u8],
) -> u64 {
    use flotilla_proto::kvpb::{ReplicaChecksumRequest, store_client::StoreClient};
    let route = kv.cache().locate(&encode_key(key)).await.unwrap();
    let mut refusals = Vec::new();
    for store in &cluster.stores {
        let mut client = StoreClient::connect(format!("http://{}", store.addr()))
            .await
            .unwrap();
        let r = client
            .replica_checksum(ReplicaChecksumRequest {
                region_id: route.region.id,
                at_index: 0,
            })
            .await
            .unwrap()
            .into_inner();
        if r.error.is_empty() {
            return r.applied_index;
        }
        refusals.push(r.error);
    }
    panic!("no store leads the region of {key:?}: {refusals:?}");
}

/// A transaction across regions keeps the locks of its primary's region in memory (that
/// region's keys commit in one batch with the primary's commit record, so a crash before
/// it leaves nothing there to resolve): its prewrite there adds nothing to the region's
/// log. The other regions' prewrites are durable, since they must outlive a crash once
/// the primary commits. (Before, only a transaction in one region kept its locks in
/// memory: this prewrite was one more Raft write, with three fsyncs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_across_regions_prewrites_its_primarys_region_in_memory() {
    let cluster = common::Cluster::start_tuned(
        |meta| meta.leader_balance_interval = std::time::Duration::ZERO,
        |_| {},
    )
    .await;
    let (kv, tso) = cluster.kv();
    kv.split_at(&encode_key(b"m")).await.unwrap();
    // Warm the route cache, so no lookup happens in between.
    write_one(&kv, &tso, b"a", b"0").await;
    write_one(&kv, &tso, b"w", b"0").await;
    let primary_before = log_index_of(&cluster, &kv, b"b").await;
    let secondary_before = log_index_of(&cluster, &kv, b"x").await;
    let start_ts = tso.get_ts().await.unwrap();
    kv.prewrite(
        vec![put(b"b", b"left"), put(b"c", b"left"), put(b"x", b"right")],
        b"b",
        start_ts,
        10_000,
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        log_index_of(&cluster, &kv, b"b").await,
        primary_before + 1,
        "only the checksum entry: the primary's region was prewritten in memory"
    );
    assert_eq!(
        log_index_of(&cluster, &kv, b"x").await,
        secondary_before + 2,
        "the secondary region's prewrite went through its log"
    );
    // Readers meet the in-memory locks as they meet durable ones.
    let early = tso.get_ts().await.unwrap();
    assert!(kv.get(b"c", early, None, 0).await.is_err());
    let commit_ts = tso.get_ts().await.unwrap();
    kv.commit(
        vec![b"b".to_vec(), b"c".to_vec(), b"x".to_vec()],
        start_ts,
        commit_ts,
    )
    .await
    .unwrap();
    let read_ts = tso.get_ts().await.unwrap();
    let rows = kv.scan(b"b", b"", read_ts, 100, None, 5_000).await.unwrap();
    assert_eq!(
        rows,
        vec![
            (b"b".to_vec(), b"left".to_vec()),
            (b"c".to_vec(), b"left".to_vec()),
            (b"w".to_vec(), b"0".to_vec()),
            (b"x".to_vec(), b"right".to_vec()),
        ]
    );
}

/// The in-memory locks of a primary's region die with its leader's term. A reader that
/// meets one of the transaction's durable secondary locks then finds the primary neither
/// locked nor committed, rolls the transaction back and reads past it at once; the
/// coordinator's commit afterwards fails (it must: a secondary was rolled back), and
/// nothing of the transaction is ever visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_lost_with_its_leaders_term_rolls_the_transaction_back() {
    let mut cluster = common::Cluster::start_tuned(
        |meta| meta.leader_balance_interval = std::time::Duration::ZERO,
        |_| {},
    )
    .await;
    let (kv, tso) = cluster.kv();
    kv.split_at(&encode_key(b"m")).await.unwrap();
    write_one(&kv, &tso, b"b", b"old").await;
    write_one(&kv, &tso, b"x", b"old").await;
    let start_ts = tso.get_ts().await.unwrap();
    // A TTL far beyond the test: only the lost term can end this transaction early.
    kv.prewrite(
        vec![put(b"b", b"new"), put(b"x", b"new")],
        b"b",
        start_ts,
        600_000,
        true,
    )
    .await
    .unwrap();
    let primary_leader = kv
        .cache()
        .locate(&encode_key(b"b"))
        .await
        .unwrap()
        .leader
        .expect("the prewrite found the leader")
        .store_id;
    // If the same store leads the secondary's region, that leader moves too: its lock is
    // durable, so the next leader holds it all the same.
    let stopped = cluster.stop_store(primary_leader).await;
    let read_ts = tso.get_ts().await.unwrap();
    assert_eq!(
        kv.get(b"x", read_ts, None, 5_000).await.unwrap(),
        Some(b"old".to_vec()),
        "the reader rolled the transaction back from its lost primary"
    );
    let commit_ts = tso.get_ts().await.unwrap();
    assert!(
        kv.commit(vec![b"b".to_vec(), b"x".to_vec()], start_ts, commit_ts)
            .await
            .is_err(),
        "a transaction rolled back must not commit"
    );
    cluster.start_store(stopped).await;
    let read_ts = tso.get_ts().await.unwrap();
    for key in [b"b", b"x"] {
        assert_eq!(
            kv.get(key, read_ts, None, 5_000).await.unwrap(),
            Some(b"old".to_vec())
        );
    }
}

/// A region that passes the key threshold splits by itself, and the meta service learns
/// the new layout; reads across the new boundary still see every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_past_its_key_threshold_splits() {
    let cluster = common::Cluster::start_with(|cfg| {
        cfg.region_split_keys = 200;
        cfg.split_check_written_keys = 50;
    })
    .await;
    let (kv, tso) = cluster.kv();
    let meta = kv.cache().meta().clone();
    let before = meta.scan_regions(b"", b"", 0).await.unwrap().len();
    for batch in 0..10 {
        let start_ts = tso.get_ts().await.unwrap();
        let keys: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("k{:05}", batch * 50 + i).into_bytes())
            .collect();
        let muts = keys.iter().map(|k| put(k, b"v")).collect();
        kv.prewrite(muts, &keys[0], start_ts, 10_000, true)
            .await
            .unwrap();
        let commit_ts = tso.get_ts().await.unwrap();
        kv.commit(keys, start_ts, commit_ts).await.unwrap();
    }
    // The split checker runs every second; wait (bounded) for the layout to change.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = meta.scan_regions(b"", b"", 0).await.unwrap().len();
        if now > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no split after 500 keys"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let read_ts = tso.get_ts().await.unwrap();
    let rows = kv
        .scan(b"k", b"l", read_ts, 10_000, None, 1_000)
        .await
        .unwrap();
    assert_eq!(rows.len(), 500);
}

/// The meta leader answers a region scan a page at a time, whatever limit it is asked
/// for, and the client asks page after page: a listing of every region (`ctl regions`,
/// `ctl check-replicas`) stays whole and each answer small however many regions there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_scan_is_answered_in_pages_and_read_whole() {
    use flotilla_proto::metaservicepb::ScanRegionsRequest;
    let cluster = common::Cluster::start_tuned(|meta| meta.scan_regions_page_max = 2, |_| {}).await;
    let (kv, _tso) = cluster.kv();
    for key in [b"c", b"f", b"i", b"l", b"o"] {
        kv.split_at(&encode_key(key)).await.unwrap();
    }
    let meta = kv.cache().meta().clone();
    let regions = meta.scan_regions(b"", b"", 0).await.unwrap();
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = regions
        .iter()
        .map(|r| {
            let r = r.region.clone().unwrap();
            (r.start_key.to_vec(), r.end_key.to_vec())
        })
        .collect();
    assert!(ranges.len() >= 6, "{ranges:?}");
    assert!(
        ranges[0].0.is_empty() && ranges.last().unwrap().1.is_empty(),
        "{ranges:?}"
    );
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "a gap or an overlap: {ranges:?}");
    }
    // A limit is honoured across pages, and a range in the middle is read whole too.
    assert_eq!(meta.scan_regions(b"", b"", 5).await.unwrap().len(), 5);
    let from = &ranges[1].0;
    let to = &ranges[5].0;
    let middle = meta.scan_regions(from, to, 0).await.unwrap();
    assert_eq!(middle.len(), 4, "{middle:?}");
    // One answer holds at most a page, whatever it is asked for.
    for limit in [0, 100] {
        let page = meta
            .call("scan_regions", |mut c| async move {
                c.scan_regions(ScanRegionsRequest {
                    start_key: Vec::new().into(),
                    end_key: Vec::new().into(),
                    limit,
                })
                .await
            })
            .await
            .unwrap()
            .regions;
        assert_eq!(page.len(), 2, "limit {limit}");
    }
}

/// Two transactions that lock keys in two regions in opposite orders: one of them is
/// refused as a deadlock (detected at the meta service), the other gets its locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_across_regions_is_detected() {
    use flotilla_txn::LockRequest;
    let cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv();
    kv.split_at(&encode_key(b"m")).await.unwrap();
    let t1 = tso.get_ts().await.unwrap();
    let t2 = tso.get_ts().await.unwrap();
    let lock = |key: &[u8], ts, primary: &[u8]| LockRequest {
        keys: vec![(key.to_vec(), false)],
        primary: primary.to_vec(),
        start_ts: ts,
        for_update_ts: ts,
        ttl_ms: 20_000,
        need_values: false,
        lock_wait_timeout_ms: 10_000,
        shared: false,
        key_only: false,
    };
    kv.acquire_pessimistic_lock(lock(b"a", t1, b"a"))
        .await
        .unwrap();
    kv.acquire_pessimistic_lock(lock(b"x", t2, b"x"))
        .await
        .unwrap();
    // Each now waits for the other. Whichever closes the cycle is refused (its wait-for
    // edge would close it at the meta service), gives up its lock, and the other goes on.
    let attempt = |kv: std::sync::Arc<flotilla_client::ClusterTxnKv>,
                   want: &'static [u8],
                   own: &'static [u8],
                   ts| {
        tokio::spawn(async move {
            match kv.acquire_pessimistic_lock(lock(want, ts, own)).await {
                Err(flotilla_txn::TxnError::Deadlock { .. }) => {
                    kv.pessimistic_rollback(&[own.to_vec()], ts).await.unwrap();
                    "deadlock"
                }
                Ok(_) => "locked",
                Err(e) => panic!("unexpected: {e}"),
            }
        })
    };
    let first = attempt(kv.clone(), b"x", b"a", t1);
    let second = attempt(kv.clone(), b"a", b"x", t2);
    let mut outcomes = vec![first.await.unwrap(), second.await.unwrap()];
    outcomes.sort();
    assert_eq!(outcomes, vec!["deadlock", "locked"]);
}

/// A split never moves a lock its leader holds only in memory to the new region: it waits
/// until the transaction holding it finishes. (Before, ALTER TABLE ADD PRIMARY KEY on a
/// large table, whose backfill holds row locks, failed as aborted when the table's region
/// split under it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_waits_for_in_memory_locks_on_its_right_half() {
    use flotilla_txn::LockRequest;
    let cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv();
    let start_ts = tso.get_ts().await.unwrap();
    kv.acquire_pessimistic_lock(LockRequest {
        keys: vec![(b"z".to_vec(), false)],
        primary: b"z".to_vec(),
        start_ts,
        for_update_ts: start_ts,
        ttl_ms: 20_000,
        need_values: false,
        lock_wait_timeout_ms: 1_000,
        shared: false,
        key_only: false,
    })
    .await
    .unwrap();
    let splitter = kv.clone();
    let split = tokio::spawn(async move { splitter.split_at(&encode_key(b"m")).await });
    // The transaction goes on and commits; its lock was never lost.
    kv.prewrite(
        vec![Mutation {
            key: b"z".to_vec(),
            op: MutationOp::Put(b"kept".to_vec()),
            check: KeyCheck::Locked,
        }],
        b"z",
        start_ts,
        20_000,
        true,
    )
    .await
    .expect("prewrite finds its pessimistic lock");
    let commit_ts = tso.get_ts().await.unwrap();
    kv.commit(vec![b"z".to_vec()], start_ts, commit_ts)
        .await
        .unwrap();
    split
        .await
        .unwrap()
        .expect("the split happens once the lock is gone");
    let left = kv.cache().locate(&encode_key(b"a")).await.unwrap();
    let right = kv.cache().locate(&encode_key(b"z")).await.unwrap();
    assert_ne!(left.region.id, right.region.id);
    let read_ts = tso.get_ts().await.unwrap();
    assert_eq!(
        kv.get(b"z", read_ts, None, 1_000).await.unwrap(),
        Some(b"kept".to_vec())
    );
}

/// Split under writes: transactions keep taking in-memory locks on a region's keys while
/// it splits under them again and again. None loses a lock (each prewrite finds its
/// pessimistic lock, each commits), every split happens, and every last write reads back.
/// (Checking for such locks and proposing the split were not atomic: a lock taken in
/// between stayed with the left region's MVCC and was lost to the new region, which
/// aborted ALTER TABLE ADD PRIMARY KEY's backfill at pgbench scale 10.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_keep_their_locks_while_their_region_splits_under_them() {
    use flotilla_txn::LockRequest;
    const WORKERS: usize = 4;
    const TXNS_PER_WORKER: usize = 40;
    let cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv();
    let key_of = |w: usize, i: usize| format!("t{:02}w{w}", (i * 7 + w * 13) % 50).into_bytes();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (kv, tso) = (kv.clone(), tso.clone());
        workers.push(tokio::spawn(async move {
            for i in 0..TXNS_PER_WORKER {
                let key = key_of(w, i);
                let start_ts = tso.get_ts().await.unwrap();
                kv.acquire_pessimistic_lock(LockRequest {
                    keys: vec![(key.clone(), false)],
                    primary: key.clone(),
                    start_ts,
                    for_update_ts: start_ts,
                    ttl_ms: 20_000,
                    need_values: false,
                    lock_wait_timeout_ms: 5_000,
                    shared: false,
                    key_only: false,
                })
                .await
                .unwrap_or_else(|e| panic!("worker {w} txn {i}: lock: {e}"));
                kv.prewrite(
                    vec![Mutation {
                        key: key.clone(),
                        op: MutationOp::Put(format!("{w}-{i}").into_bytes()),
                        check: KeyCheck::Locked,
                    }],
                    &key,
                    start_ts,
                    20_000,
                    true,
                )
                .await
                .unwrap_or_else(|e| panic!("worker {w} txn {i}: prewrite lost its lock: {e}"));
                let commit_ts = tso.get_ts().await.unwrap();
                kv.commit(vec![key], start_ts, commit_ts)
                    .await
                    .unwrap_or_else(|e| panic!("worker {w} txn {i}: commit: {e}"));
            }
        }));
    }
    for at in ["t10", "t20", "t30", "t40"] {
        kv.split_at(&encode_key(at.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("split at {at}: {e}"));
    }
    for w in workers {
        w.await.unwrap();
    }
    let mut ids = std::collections::HashSet::new();
    for probe in ["t05", "t15", "t25", "t35", "t45"] {
        let r = kv
            .cache()
            .locate(&encode_key(probe.as_bytes()))
            .await
            .unwrap();
        ids.insert(r.region.id);
    }
    assert_eq!(ids.len(), 5, "every split happened");
    let read_ts = tso.get_ts().await.unwrap();
    for w in 0..WORKERS {
        let mut last = std::collections::HashMap::new();
        for i in 0..TXNS_PER_WORKER {
            last.insert(key_of(w, i), format!("{w}-{i}").into_bytes());
        }
        for (key, value) in last {
            assert_eq!(
                kv.get(&key, read_ts, None, 1_000).await.unwrap(),
                Some(value),
                "key {}",
                String::from_utf8_lossy(&key)
            );
        }
    }
}

/// Leader balance: regions split off one leader spread their leadership over the stores,
/// and a transaction holding in-memory locks in every region meanwhile is not aborted by
/// it (a region is handed over only once no such lock is held in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_spread_over_the_stores_without_aborting_transactions() {
    use flotilla_txn::LockRequest;
    let cluster = common::Cluster::start_tuned(
        |meta| meta.leader_balance_interval = std::time::Duration::from_millis(100),
        |_| {},
    )
    .await;
    let (kv, tso) = cluster.kv();
    for at in ["b", "c", "d", "e", "f"] {
        kv.split_at(&encode_key(at.as_bytes())).await.unwrap();
    }
    let keys: Vec<Vec<u8>> = ["a1", "b1", "c1", "d1", "e1", "f1"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let start_ts = tso.get_ts().await.unwrap();
    kv.acquire_pessimistic_lock(LockRequest {
        keys: keys.iter().map(|k| (k.clone(), false)).collect(),
        primary: keys[0].clone(),
        start_ts,
        for_update_ts: start_ts,
        ttl_ms: 60_000,
        need_values: false,
        lock_wait_timeout_ms: 1_000,
        shared: false,
        key_only: false,
    })
    .await
    .unwrap();
    // One store leads all six regions: the balancer asks for a transfer every 100 ms
    // (heartbeats come every 200 ms). Give it time to try while the locks are held; a
    // transfer that went ahead would take the locks of its region with the old term.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    kv.prewrite(
        keys.iter()
            .map(|k| Mutation {
                key: k.clone(),
                op: MutationOp::Put(b"kept".to_vec()),
                check: KeyCheck::Locked,
            })
            .collect(),
        &keys[0],
        start_ts,
        60_000,
        false,
    )
    .await
    .expect("the pessimistic locks survived leader balancing");
    let commit_ts = tso.get_ts().await.unwrap();
    kv.commit(keys.clone(), start_ts, commit_ts).await.unwrap();
    // With the locks gone the regions move.
    let meta = kv.cache().meta().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let leading = loop {
        let regions = meta.scan_regions(b"", b"", 100).await.unwrap();
        let mut leading = std::collections::HashMap::new();
        for r in &regions {
            if let Some(l) = r.leader {
                *leading.entry(l.store_id).or_insert(0usize) += 1;
            }
        }
        if leading.len() == 3 || std::time::Instant::now() > deadline {
            break leading;
        }
        // Polls the meta service's view (bounded by the deadline).
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(leading.len(), 3, "every store leads a region: {leading:?}");
    let read_ts = tso.get_ts().await.unwrap();
    for k in &keys {
        assert_eq!(
            kv.get(k, read_ts, None, 1_000).await.unwrap(),
            Some(b"kept".to_vec())
        );
    }
}

/// A store keeps one Raft stream per peer: streams outlive the client's request timeout.
/// (They were opened on a channel with a per-request timeout, so every stream was cut
/// after 5 s and reopened, dropping the batch in flight each time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_streams_outlive_the_request_timeout() {
    let request_timeout = std::time::Duration::from_millis(200);
    let cluster =
        common::Cluster::start_with(|cfg| cfg.client.request_timeout = request_timeout).await;
    let (kv, tso) = cluster.kv();
    write_one(&kv, &tso, b"s1", b"v").await;
    let opened: Vec<u64> = cluster
        .stores
        .iter()
        .map(|s| s.raft_streams_opened())
        .collect();
    // Heartbeats keep every stream busy meanwhile; a stream cut by the timeout would be
    // reopened about once per `request_timeout`.
    tokio::time::sleep(request_timeout * 8).await;
    let later: Vec<u64> = cluster
        .stores
        .iter()
        .map(|s| s.raft_streams_opened())
        .collect();
    assert_eq!(later, opened, "streams were reopened");
    for n in &later {
        assert!(*n <= 2, "a store opened {n} streams to its two peers");
    }
}

/// A commit whose request is cancelled after its write was proposed still finishes once
/// the write applies: the transaction's lock leaves the leader's memory. (Before the fix,
/// cancelling the request dropped the write's in-memory half, so the committed
/// transaction's volatile lock stayed and every reader met it until one resolved it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_commit_still_releases_its_lock_once_written() {
    use flotilla_proto::kvpb::{self, kv_request};
    // Elections after 2–3 s without a heartbeat: the leader keeps its term while its
    // followers restart, so the proposal it holds is the one that commits.
    let mut cluster = common::Cluster::start_tuned(
        |meta| meta.leader_balance_interval = std::time::Duration::ZERO,
        |cfg| {
            cfg.election_ticks = 100;
            cfg.max_election_ticks = 150;
        },
    )
    .await;
    let (kv, tso) = cluster.kv();
    let start_ts = tso.get_ts().await.unwrap();
    kv.prewrite(vec![put(b"c1", b"v")], b"c1", start_ts, 60_000, true)
        .await
        .unwrap();
    let (route, leader, mut client) = leader_client(&cluster, &kv, b"c1").await;
    let request = |cmd| kvpb::KvRequest {
        context: Some(kvpb::Context {
            region_id: route.region.id,
            epoch: route.region.epoch,
        }),
        cmd: Some(cmd),
    };
    // Without its followers the leader cannot commit the write: the request waits for it
    // until the client gives up, which cancels the request on the store.
    let followers: Vec<u64> = cluster
        .stores
        .iter()
        .map(|s| s.store_id())
        .filter(|&id| id != leader)
        .collect();
    let mut stopped = Vec::new();
    for id in followers {
        stopped.push(cluster.stop_store(id).await);
    }
    let commit_ts = tso.get_ts().await.unwrap();
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        client.kv(request(kv_request::Cmd::Commit(kvpb::CommitRequest {
            keys: vec![b"c1".to_vec().into()],
            start_ts: start_ts.0,
            commit_ts: commit_ts.0,
        }))),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the commit cannot finish without a quorum"
    );
    for cfg in stopped {
        cluster.start_store(cfg).await;
    }
    // Once the write applies, a read finds the committed value, not the lock.
    let read_ts = tso.get_ts().await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let resp = client
            .kv(request(kv_request::Cmd::Get(kvpb::GetRequest {
                key: b"c1".to_vec().into(),
                ts: read_ts.0,
                reader_ts: 0,
            })))
            .await
            .unwrap()
            .into_inner();
        if resp.region_error.is_none() && resp.key_error.is_none() && resp.found {
            assert_eq!(resp.pairs[0].value.as_ref(), b"v");
            return;
        }
        last = Some(resp);
        // Polling for the restarted followers and the write's apply: there is no event
        // to wait on from outside the store.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the committed write's lock is still in the leader's memory: {last:?}");
}

/// Writes `n` keys at once, each in a transaction of its own, and reads them all back.
async fn concurrent_writes(
    kv: &std::sync::Arc<flotilla_client::ClusterTxnKv>,
    tso: &std::sync::Arc<flotilla_client::RemoteTso>,
    n: usize,
) {
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..n {
        let (kv, tso) = (kv.clone(), tso.clone());
        writers.spawn(async move {
            let key = format!("w{i:03}").into_bytes();
            write_one(&kv, &tso, &key, &key).await;
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let read_ts = tso.get_ts().await.unwrap();
    let rows = kv
        .scan(b"w", b"x", read_ts, 1_000, None, 1_000)
        .await
        .unwrap();
    assert_eq!(rows.len(), n);
    assert!(rows.iter().all(|(k, v)| k == v));
}

/// A store takes at most `kv_stream_in_flight_max` commands of one stream at a time; the
/// rest wait in the stream, and every command is answered (its own answer: ids match).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_past_a_streams_in_flight_bound_wait_and_are_all_answered() {
    let cluster = common::Cluster::start_with(|cfg| cfg.kv_stream_in_flight_max = 1).await;
    let (kv, tso) = cluster.kv();
    concurrent_writes(&kv, &tso, 64).await;
}

/// A store cuts a scan answer at its bound on bytes and the client goes on from where it
/// ended: every pair comes back once, in order, however wide, and a row limit still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_answers_are_cut_at_the_stores_byte_bound_and_the_client_goes_on() {
    let cluster = common::Cluster::start_with(|cfg| cfg.scan_response_bytes_max = 1_000).await;
    let (kv, tso) = cluster.kv();
    let keys: Vec<Vec<u8>> = (0..60)
        .map(|i| format!("wide{i:02}").into_bytes())
        .collect();
    let value = vec![b'v'; 300];
    write_all(&kv, &tso, &keys, &value).await;
    let read_ts = tso.get_ts().await.unwrap();
    // 60 pairs of about 306 bytes: answers of 4 pairs each, 15 of them.
    let rows = kv
        .scan(b"wide", b"widf", read_ts, 1_000, None, 1_000)
        .await
        .unwrap();
    let got: Vec<Vec<u8>> = rows.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(got, keys);
    assert!(rows.iter().all(|(_, v)| *v == value));
    let rows = kv
        .scan(b"wide", b"widf", read_ts, 37, None, 1_000)
        .await
        .unwrap();
    assert_eq!(rows.len(), 37);
    assert_eq!(rows.last().unwrap().0, keys[36]);
}

/// A store waits for a lock at most `lock_wait_max`, whatever `wait_ms` a client asks for:
/// a command that asks to wait for ever is answered `locked` once the bound passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_is_bounded_by_the_store_whatever_the_client_asks() {
    use flotilla_proto::kvpb::{self, kv_request};
    let cluster = common::Cluster::start_with(|cfg| {
        cfg.lock_wait_max = std::time::Duration::from_millis(200);
    })
    .await;
    let (kv, tso) = cluster.kv();
    let holder_ts = tso.get_ts().await.unwrap();
    kv.prewrite(vec![put(b"lw", b"v")], b"lw", holder_ts, 60_000, true)
        .await
        .unwrap();
    let (route, _, mut client) = leader_client(&cluster, &kv, b"lw").await;
    let waiter_ts = tso.get_ts().await.unwrap();
    let lock = kvpb::KvRequest {
        context: Some(kvpb::Context {
            region_id: route.region.id,
            epoch: route.region.epoch,
        }),
        cmd: Some(kv_request::Cmd::PessimisticLock(
            kvpb::PessimisticLockRequest {
                keys: vec![kvpb::LockKey {
                    key: b"lw".to_vec().into(),
                    must_not_exist: false,
                }],
                primary: b"lw".to_vec().into(),
                start_ts: waiter_ts.0,
                for_update_ts: waiter_ts.0,
                ttl_ms: 10_000,
                need_values: false,
                wait_ms: u32::MAX,
                shared: false,
                key_only: false,
            },
        )),
    };
    // About 49 days asked for; the answer comes after the store's 200 ms (the bound here
    // is only how long this test waits before calling the wait unbounded).
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.kv(lock))
        .await
        .expect("the store answers once its bound on lock waits passes")
        .unwrap()
        .into_inner();
    let locked = matches!(
        resp.key_error.and_then(|e| e.kind),
        Some(kvpb::key_error::Kind::Locked(_))
    );
    assert!(locked, "the key is still locked by the holder");
}

/// Past the client's bound on commands queued for a store, a command fails as if the
/// store were unreachable and is retried: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_past_the_clients_queue_bound_are_retried() {
    let cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv_with(flotilla_client::ClientConfig {
        kv_stream_queue_max: 1,
        ..Default::default()
    });
    concurrent_writes(&kv, &tso, 64).await;
}

/// A store that stops ends its command streams (its stop does not wait for clients), and
/// the client reaches the region's new leader over a new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_ends_its_command_streams_and_clients_move_on() {
    let mut cluster = common::Cluster::start().await;
    let (kv, tso) = cluster.kv();
    write_one(&kv, &tso, b"s", b"before").await;
    let route = kv.cache().locate(&encode_key(b"s")).await.unwrap();
    let leader = route.leader.expect("a write found the leader").store_id;
    let _stopped = cluster.stop_store(leader).await;
    let read_ts = tso.get_ts().await.unwrap();
    assert_eq!(
        kv.get(b"s", read_ts, None, 1_000).await.unwrap(),
        Some(b"before".to_vec())
    );
}

/// A store that was down while its region's log moved past what the leader keeps catches
/// up by a snapshot of the whole region, here larger than any gRPC message the stores
/// accept: it travels in pieces on a call of its own. (Before, a snapshot travelled whole
/// in a batch of Raft messages, so a region larger than the receivers' message limit,
/// 256 MiB by default and reached by any hot region since old versions are never
/// collected, could never catch a follower up: the receiver refused it, every time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_store_catches_up_by_a_snapshot_larger_than_a_grpc_message() {
    const MESSAGE_MAX_BYTES: usize = 256 << 10;
    let mut cluster = common::Cluster::start_tuned(
        |meta| meta.leader_balance_interval = std::time::Duration::ZERO,
        |cfg| {
            cfg.grpc_message_bytes_max = MESSAGE_MAX_BYTES;
            cfg.raft_limits = flotilla_client::RaftMessageLimits {
                batch_bytes_max: 64 << 10,
                chunked_message_bytes_max: 64 << 20,
            };
            cfg.raft_log_gc_count_limit = 8;
            cfg.raft_log_keep_for_lagging_entries = 4;
        },
    )
    .await;
    let (kv, tso) = cluster.kv();
    write_one(&kv, &tso, b"k000", b"first").await;
    let route = kv.cache().locate(&encode_key(b"k000")).await.unwrap();
    let leader = route.leader.expect("the region has a leader").store_id;
    let follower = cluster
        .stores
        .iter()
        .map(|s| s.store_id())
        .find(|id| *id != leader)
        .unwrap();
    let stopped = cluster.stop_store(follower).await;
    // 96 writes of 4 KiB: 384 KiB of region, and the log compacted far past the stopped
    // store, which now needs a snapshot.
    let value = vec![7u8; 4 << 10];
    for i in 1..=96 {
        write_one(&kv, &tso, format!("k{i:03}").as_bytes(), &value).await;
    }
    let delivered = |c: &common::Cluster| -> u64 {
        c.stores
            .iter()
            .map(|s| s.raft_chunked_messages_delivered())
            .sum()
    };
    assert_eq!(
        delivered(&cluster),
        0,
        "appends to the live follower fit in batches"
    );
    let addr = stopped.advertise_addr.parse().unwrap();
    cluster.start_store(stopped).await;
    let (_, _, keys) = common::wait_for_identical_replica(
        &cluster,
        route.region.id,
        addr,
        std::time::Duration::from_secs(30),
    )
    .await;
    assert!(keys >= 97, "the replica holds {keys} keys");
    assert!(
        delivered(&cluster) >= 1,
        "the snapshot was not sent in pieces"
    );
}

/// A Raft message sent in pieces that grows past `chunked_message_bytes_max` is refused
/// with RESOURCE_EXHAUSTED before it is held whole, and a malformed one with
/// INVALID_ARGUMENT; the store serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_message_past_the_chunked_bound_is_refused_and_the_store_serves_on() {
    use flotilla_proto::kvpb::store_client::StoreClient;
    use flotilla_proto::raft_serverpb::RaftMessageChunk;
    let cluster = common::Cluster::start_with(|cfg| {
        cfg.raft_limits.chunked_message_bytes_max = 1 << 20;
    })
    .await;
    let (kv, tso) = cluster.kv();
    let mut client = StoreClient::connect(format!("http://{}", cluster.stores[0].addr()))
        .await
        .unwrap();
    let pieces = (0..20).map(|_| RaftMessageChunk {
        data: vec![0u8; 64 << 10].into(),
    });
    let refused = client
        .raft_chunks(futures::stream::iter(pieces))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("raft_chunked_message_bytes_max"),
        "{}",
        refused.message()
    );
    let garbage = vec![RaftMessageChunk {
        data: vec![0xffu8; 100].into(),
    }];
    let bad = client
        .raft_chunks(futures::stream::iter(garbage))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    write_one(&kv, &tso, b"after", b"served").await;
    let read_ts = tso.get_ts().await.unwrap();
    assert_eq!(
        kv.get(b"after", read_ts, None, 1_000).await.unwrap(),
        Some(b"served".to_vec())
    );
}

/// Replica repair: a store down longer than `replica_repair_after` loses its replicas to a
/// live store holding none (one joint change adding the new voter and demoting the lost
/// one, then the removal of that learner), so every region is back to three voters on
/// live stores, the new replicas identical to their leaders', and nothing written is lost.
/// (Before, nothing replaced a replica: a region that lost one stayed one failure away
/// from losing its quorum for as long as the store stayed down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_store_down_too_long_move_to_a_live_store() {
    use flotilla_proto::metapb::PeerRole;
    use std::time::{Duration, Instant};
    let mut cluster = common::Cluster::start_tuned(
        |meta| {
            meta.leader_balance_interval = Duration::ZERO;
            // Repair alone fills the added store here.
            meta.replica_balance_interval = Duration::ZERO;
            meta.store_down_after = Duration::from_secs(1);
            meta.replica_repair_after = Duration::from_secs(2);
        },
        |_| {},
    )
    .await;
    let (kv, tso) = cluster.kv();
    kv.split_at(&encode_key(b"m")).await.unwrap();
    write_one(&kv, &tso, b"a", b"left").await;
    write_one(&kv, &tso, b"x", b"right").await;
    let added = cluster.add_store().await;
    let lost = cluster.stores[0].store_id();
    cluster.stop_store(lost).await;
    write_one(&kv, &tso, b"b", b"while down").await;
    let meta = flotilla_client::MetaClient::new(
        vec![cluster.meta_addr.clone()],
        flotilla_client::ClientConfig::default(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let regions = loop {
        let regions = meta.scan_regions(b"", b"", 0).await.unwrap();
        let repaired = regions.iter().all(|info| {
            let peers = &info.region.as_ref().unwrap().peers;
            peers.len() == 3
                && peers.iter().all(|p| p.role() == PeerRole::Voter)
                && peers.iter().all(|p| p.store_id != lost)
                && peers.iter().any(|p| p.store_id == added)
        });
        if repaired {
            break regions;
        }
        assert!(
            Instant::now() < deadline,
            "not repaired within 30 s: {regions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(regions.len(), 2);
    let added_addr = cluster
        .stores
        .iter()
        .find(|s| s.store_id() == added)
        .unwrap()
        .addr();
    for info in &regions {
        let region_id = info.region.as_ref().unwrap().id;
        common::wait_for_identical_replica(
            &cluster,
            region_id,
            added_addr,
            Duration::from_secs(30),
        )
        .await;
    }
    let read_ts = tso.get_ts().await.unwrap();
    let rows = kv.scan(b"", b"", read_ts, 100, None, 1_000).await.unwrap();
    assert_eq!(
        rows,
        vec![
            (b"a".to_vec(), b"left".to_vec()),
            (b"b".to_vec(), b"while down".to_vec()),
            (b"x".to_vec(), b"right".to_vec()),
        ]
    );
}

/// A store added to a cluster fills up by replica balance while transactions across
/// regions commit: each move adds a learner on the new store, promotes it once its log
/// reaches the leader's while demoting the replica it replaces (one joint change), then
/// removes that one. The stores end within one replica of each other. Then one of the
/// first stores is removed (scale-in) the same way, writes still going. Every
/// acknowledged write is there, and every region's replicas are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_to_an_added_store_and_off_a_removed_one_while_transactions_commit() {
    use flotilla_proto::metapb::{PeerRole, StoreState};
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let mut cluster = common::Cluster::start_tuned(
        |meta| {
            meta.leader_balance_interval = Duration::from_millis(200);
            meta.replica_balance_interval = Duration::from_millis(100);
        },
        |_| {},
    )
    .await;
    let (kv, tso) = cluster.kv();
    for at in ["b", "c", "d", "e", "f"] {
        kv.split_at(&encode_key(at.as_bytes())).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (kv, tso, stop) = (kv.clone(), tso.clone(), stop.clone());
        async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Two regions per transaction: a two-phase commit every time.
                let left = format!("{}{i:06}", ["a", "b", "c"][i % 3]).into_bytes();
                let right = format!("{}{i:06}", ["d", "e", "f"][i % 3]).into_bytes();
                let value = i.to_be_bytes().to_vec();
                let start_ts = tso.get_ts().await.unwrap();
                let mutations = vec![put(&left, &value), put(&right, &value)];
                let mut outcome = kv.prewrite(mutations, &left, start_ts, 10_000, true).await;
                if outcome.is_ok() {
                    let commit_ts = tso.get_ts().await.unwrap();
                    outcome = kv
                        .commit(vec![left.clone(), right.clone()], start_ts, commit_ts)
                        .await;
                }
                match outcome {
                    Ok(()) => acked.push((left, right, value)),
                    Err(e) => failed.push(e.to_string()),
                }
                i += 1;
            }
            (acked, failed)
        }
    });
    let meta = kv.cache().meta().clone();
    let conf_vers = |regions: &[flotilla_proto::metaservicepb::RegionInfo]| -> u64 {
        regions
            .iter()
            .map(|info| info.region.as_ref().unwrap().epoch.unwrap().conf_ver)
            .sum()
    };
    let conf_vers_before = conf_vers(&meta.scan_regions(b"", b"", 0).await.unwrap());
    let added = cluster.add_store().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let regions = loop {
        let regions = meta.scan_regions(b"", b"", 0).await.unwrap();
        let mut replicas: HashMap<u64, usize> = HashMap::new();
        for info in &regions {
            for p in &info.region.as_ref().unwrap().peers {
                *replicas.entry(p.store_id).or_default() += 1;
            }
        }
        let settled = regions.iter().all(|info| {
            let peers = &info.region.as_ref().unwrap().peers;
            peers.len() == 3 && peers.iter().all(|p| p.role() == PeerRole::Voter)
        });
        let (most, fewest) = (
            replicas.values().max().copied().unwrap_or(0),
            replicas.values().min().copied().unwrap_or(0),
        );
        if settled && replicas.len() == 4 && most - fewest <= 1 {
            // 18 replicas over 4 stores: the added one took 4 (it stops at 6, 5, 5, 4
            // plus the last move).
            assert_eq!(replicas.get(&added), Some(&4), "{replicas:?}");
            break regions;
        }
        assert!(
            Instant::now() < deadline,
            "replicas not balanced within 60 s: {replicas:?} {regions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(regions.len(), 6);
    // Four moves and no more (each is four membership changes: the learner, the joint
    // change, leaving it, the removal): replicas went only to the added store, never
    // back and forth among the full ones while it was busy receiving.
    assert_eq!(conf_vers(&regions) - conf_vers_before, 4 * 4);

    // Scale back in: remove one of the first stores, writes still going. Its replicas
    // move to the other three (one each per region), then it is marked removed. A
    // removal cancelled at once leaves the store in service, with the replicas no move
    // under way took away.
    let removed = cluster.stores[0].store_id();
    let state_of = |info: flotilla_proto::metaservicepb::StoreInfo| info.store.unwrap().state();
    assert_eq!(
        state_of(meta.cancel_store_removal(removed).await.unwrap()),
        StoreState::Up,
        "a store in service stays so"
    );
    let info = meta.remove_store(removed).await.unwrap();
    assert_eq!(state_of(info), StoreState::Offline);
    let info = meta.cancel_store_removal(removed).await.unwrap();
    assert_eq!(state_of(info), StoreState::Up);
    let regions = meta.scan_regions(b"", b"", 0).await.unwrap();
    assert!(
        regions.iter().any(|r| r
            .region
            .as_ref()
            .unwrap()
            .peers
            .iter()
            .any(|p| p.store_id == removed)),
        "a cancelled removal keeps the store's replicas: {regions:?}"
    );
    let info = meta.remove_store(removed).await.unwrap();
    assert_eq!(state_of(info), StoreState::Offline);
    let deadline = Instant::now() + Duration::from_secs(60);
    let regions = loop {
        let regions = meta.scan_regions(b"", b"", 0).await.unwrap();
        let state = meta.get_stores(removed).await.unwrap()[0]
            .store
            .as_ref()
            .unwrap()
            .state();
        let drained = regions.iter().all(|info| {
            let peers = &info.region.as_ref().unwrap().peers;
            peers.len() == 3
                && peers
                    .iter()
                    .all(|p| p.role() == PeerRole::Voter && p.store_id != removed)
        });
        if drained && state == StoreState::Tombstone {
            break regions;
        }
        assert!(
            Instant::now() < deadline,
            "store {removed} not removed within 60 s ({state:?}): {regions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Three stores in service for three replicas: none more may go. Nor an unknown one.
    let refused = meta.remove_store(added).await.unwrap_err().to_string();
    assert!(refused.contains("add a store first"), "{refused}");
    let refused = meta.remove_store(9_999).await.unwrap_err().to_string();
    assert!(refused.contains("not part of this cluster"), "{refused}");
    // A removed store cannot be put back in service.
    let refused = meta
        .cancel_store_removal(removed)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("removed already"), "{refused}");
    let up: Vec<StoreState> = meta
        .get_stores(0)
        .await
        .unwrap()
        .iter()
        .map(|s| s.store.as_ref().unwrap().state())
        .collect();
    assert_eq!(
        up.iter().filter(|s| **s == StoreState::Up).count(),
        3,
        "{up:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.await.unwrap();
    assert!(acked.len() > 10, "the writer committed: {acked:?}");
    // A membership change keeps the leader and its term, so no transaction aborts.
    assert!(failed.is_empty(), "failed transactions: {failed:?}");
    let read_ts = tso.get_ts().await.unwrap();
    for (left, right, value) in &acked {
        for key in [left, right] {
            assert_eq!(
                kv.get(key, read_ts, None, 1_000).await.unwrap().as_ref(),
                Some(value),
                "acknowledged write of {}",
                String::from_utf8_lossy(key)
            );
        }
    }
    let addr_of = |store_id: u64| {
        cluster
            .stores
            .iter()
            .find(|s| s.store_id() == store_id)
            .unwrap()
            .addr()
    };
    for info in &regions {
        let region = info.region.as_ref().unwrap();
        for p in &region.peers {
            common::wait_for_identical_replica(
                &cluster,
                region.id,
                addr_of(p.store_id),
                Duration::from_secs(30),
            )
            .await;
        }
    }
}

/// Replicas spread over zones (store labels, the meta service's location labels): with
/// two of three stores in zone a, each region has two replicas there until a store in
/// zone c joins, when one of them moves to it; a second store in zone b then takes its
/// share by balance without ever doubling a zone up. Then zone a fails whole, both its
/// stores at once, and every region still commits and reads every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_over_zones_so_a_whole_zone_can_fail() {
    use flotilla_proto::metapb::PeerRole;
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let zone = |z: &str| vec![("zone".to_string(), z.to_string())];
    let next = AtomicUsize::new(0);
    let mut cluster = common::Cluster::start_tuned(
        |meta| {
            meta.location_labels = vec!["zone".into()];
            meta.leader_balance_interval = Duration::from_millis(200);
            meta.replica_balance_interval = Duration::from_millis(100);
        },
        |store| store.labels = zone(["a", "a", "b"][next.fetch_add(1, Ordering::Relaxed)]),
    )
    .await;
    let (kv, tso) = cluster.kv();
    for at in ["b", "c", "d", "e", "f"] {
        kv.split_at(&encode_key(at.as_bytes())).await.unwrap();
    }
    for at in ["a", "b", "c", "d", "e", "f"] {
        write_one(&kv, &tso, format!("{at}1").as_bytes(), b"before").await;
    }
    cluster
        .add_store_with(|store| store.labels = zone("c"))
        .await;
    cluster
        .add_store_with(|store| store.labels = zone("b"))
        .await;
    let zone_of: HashMap<u64, String> = cluster
        .stores
        .iter()
        .zip(&cluster.configs)
        .map(|(s, cfg)| (s.store_id(), cfg.labels[0].1.clone()))
        .collect();
    let meta = kv.cache().meta().clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let regions = meta.scan_regions(b"", b"", 0).await.unwrap();
        let mut replicas: HashMap<u64, usize> = HashMap::new();
        let mut spread = true;
        for info in &regions {
            let peers = &info.region.as_ref().unwrap().peers;
            let zones: HashSet<&String> = peers.iter().map(|p| &zone_of[&p.store_id]).collect();
            spread &= peers.len() == 3
                && zones.len() == 3
                && peers.iter().all(|p| p.role() == PeerRole::Voter);
            for p in peers {
                *replicas.entry(p.store_id).or_default() += 1;
            }
        }
        // Zone c's only store holds all six regions; zones a and b share theirs evenly
        // (balance moves a replica only within its zone here).
        let even = zone_of
            .iter()
            .all(|(id, z)| replicas.get(id).copied().unwrap_or(0) == if z == "c" { 6 } else { 3 });
        if spread && even {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not spread over the zones within 90 s: {replicas:?} {regions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Zone a fails whole.
    let zone_a: Vec<u64> = zone_of
        .iter()
        .filter(|(_, z)| *z == "a")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(zone_a.len(), 2);
    for id in zone_a {
        cluster.stop_store(id).await;
    }
    for at in ["a", "b", "c", "d", "e", "f"] {
        write_one(&kv, &tso, format!("{at}2").as_bytes(), b"after").await;
    }
    let read_ts = tso.get_ts().await.unwrap();
    let rows = kv.scan(b"", b"", read_ts, 100, None, 1_000).await.unwrap();
    assert_eq!(rows.len(), 12, "{rows:?}");
    for (key, value) in rows {
        let expected: &[u8] = if key.ends_with(b"1") {
            b"before"
        } else {
            b"after"
        };
        assert_eq!(value, expected, "{}", String::from_utf8_lossy(&key));
    }
}

/// Garbage collection on a cluster: the meta leader moves the safe point on, never to a
/// lock a store holds (a dead coordinator's here); each region's leader removes what no
/// reader at or above it can see, through Raft, so every replica stays identical; and
/// every store, a new leader after a failover included, refuses reads below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_old_versions_on_every_replica_and_never_past_a_lock() {
    let mut cluster = common::Cluster::start_tuned(
        |meta| {
            meta.leader_balance_interval = std::time::Duration::ZERO;
            meta.gc_life_time = std::time::Duration::from_secs(1);
            meta.gc_run_interval = std::time::Duration::from_millis(100);
        },
        |_| {},
    )
    .await;
    let (kv, tso) = cluster.kv();
    let before_writes = tso.get_ts().await.unwrap();
    for i in 0..10 {
        write_one(&kv, &tso, b"k", format!("v{i}").as_bytes()).await;
    }
    // A coordinator that died after prewrite, with a TTL beyond the test: nothing resolves
    // its lock, which holds the safe point below its start_ts.
    let held_ts = tso.get_ts().await.unwrap();
    kv.prewrite(vec![put(b"held", b"x")], b"held", held_ts, 600_000, false)
        .await
        .unwrap();
    for i in 10..20 {
        write_one(&kv, &tso, b"k", format!("v{i}").as_bytes()).await;
    }
    // v9 is what a reader at the safe point sees: v0..v8 go, the 10 newer ones stay,
    // round after round.
    assert_eq!(cluster.gc_settles_at(9, 5).await, 9);
    for s in &cluster.stores {
        let sp = s
            .gc_stats()
            .safe_point
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(sp > 0 && sp < held_ts.0, "safe point {sp} passed the lock");
    }
    // The lock ends: everything but the newest version goes, and the rollback record too.
    kv.rollback(vec![b"held".to_vec()], held_ts).await.unwrap();
    assert_eq!(cluster.gc_settles_at(20, 5).await, 20);

    let now = tso.get_ts().await.unwrap();
    assert_eq!(
        kv.get(b"k", now, None, 1_000).await.unwrap(),
        Some(b"v19".to_vec())
    );
    let err = kv.get(b"k", before_writes, None, 1_000).await.unwrap_err();
    assert!(
        matches!(err, flotilla_txn::TxnError::SnapshotTooOld { .. }),
        "{err}"
    );
    // The removals went through the region's log: every replica holds the same data.
    let region = kv.cache().locate(&encode_key(b"k")).await.unwrap();
    for store in &cluster.stores {
        common::wait_for_identical_replica(
            &cluster,
            region.region.id,
            store.addr(),
            std::time::Duration::from_secs(10),
        )
        .await;
    }
    // A new leader refuses the old snapshot too: every store installed the safe point
    // before any removed a version.
    let leader = region.leader.expect("a leader served the reads").store_id;
    cluster.stop_store(leader).await;
    let err = kv.get(b"k", before_writes, None, 5_000).await.unwrap_err();
    assert!(
        matches!(err, flotilla_txn::TxnError::SnapshotTooOld { .. }),
        "{err}"
    );
    let now = tso.get_ts().await.unwrap();
    assert_eq!(
        kv.get(b"k", now, None, 5_000).await.unwrap(),
        Some(b"v19".to_vec())
    );
}

/// A lock whose coordinator died, on a key no reader meets, would hold the GC safe point
/// back for ever: the store leading its region resolves it once it is old and its TTL has
/// lapsed (its primary decides: here rolled back), and GC goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_resolves_abandoned_locks_that_no_reader_meets() {
    let cluster = common::Cluster::start_tuned(
        |meta| {
            meta.gc_life_time = std::time::Duration::from_secs(1);
            meta.gc_run_interval = std::time::Duration::from_millis(100);
        },
        |store| store.gc_resolve_locks_after = std::time::Duration::from_secs(1),
    )
    .await;
    let (kv, tso) = cluster.kv();
    // Two coordinators die after prewrite: one with durable locks, one with volatile ones
    // (in the leader's memory only). TTLs of 100 ms, never heartbeated.
    let durable_ts = tso.get_ts().await.unwrap();
    kv.prewrite(
        vec![put(b"durable", b"x")],
        b"durable",
        durable_ts,
        100,
        false,
    )
    .await
    .unwrap();
    let volatile_ts = tso.get_ts().await.unwrap();
    kv.prewrite(
        vec![put(b"volatile", b"x")],
        b"volatile",
        volatile_ts,
        100,
        true,
    )
    .await
    .unwrap();
    for i in 0..10 {
        write_one(&kv, &tso, b"k", format!("v{i}").as_bytes()).await;
    }
    // Without the resolver nothing would go (every version is above the locks); with it,
    // the 9 versions under the newest and the 2 rollback records go.
    assert_eq!(cluster.gc_settles_at(11, 5).await, 11);
    let resolved: u64 = cluster
        .stores
        .iter()
        .map(|s| {
            s.gc_stats()
                .locks_resolved
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert!(resolved >= 2, "{resolved} locks resolved");
    let now = tso.get_ts().await.unwrap();
    // Rolled back: nothing to wait for, nothing written.
    for key in [&b"durable"[..], b"volatile"] {
        assert_eq!(kv.get(key, now, None, 0).await.unwrap(), None);
    }
    assert_eq!(
        kv.get(b"k", now, None, 0).await.unwrap(),
        Some(b"v9".to_vec())
    );
}

/// GC leaves out a region with no write since a collection that already reached past every
/// version it holds, and still removes what a region's last writes leave collectable once
/// the safe point passes them (a rule of "no write since the last collection" alone would
/// keep those for ever: the first collection after the writes comes before the safe point
/// reaches them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_skips_idle_regions_but_not_what_their_last_writes_left() {
    use std::sync::atomic::Ordering;
    let cluster = common::Cluster::start_tuned(
        |meta| {
            meta.gc_life_time = std::time::Duration::from_secs(1);
            meta.gc_run_interval = std::time::Duration::from_millis(100);
        },
        |_| {},
    )
    .await;
    let (kv, tso) = cluster.kv();
    kv.split_at(&encode_key(b"m")).await.unwrap();
    for i in 0..10 {
        write_one(&kv, &tso, b"a", format!("a{i}").as_bytes()).await;
        write_one(&kv, &tso, b"x", format!("x{i}").as_bytes()).await;
    }
    // The 9 versions under the newest, in each region.
    assert_eq!(cluster.gc_settles_at(18, 5).await, 18);
    let skipped = || -> u64 {
        cluster
            .stores
            .iter()
            .map(|s| s.gc_stats().regions_skipped.load(Ordering::Relaxed))
            .sum()
    };
    // Both regions idle now: left out, round after round.
    let before = skipped();
    assert_eq!(cluster.gc_settles_at(18, 5).await, 18);
    assert!(
        skipped() >= before + 5,
        "idle regions were read again: {} skips in 5 rounds",
        skipped() - before
    );
    // A write makes its region collectable again.
    for i in 0..5 {
        write_one(&kv, &tso, b"a", format!("b{i}").as_bytes()).await;
    }
    assert_eq!(cluster.gc_settles_at(23, 5).await, 23);
    let now = tso.get_ts().await.unwrap();
    assert_eq!(
        kv.get(b"a", now, None, 0).await.unwrap(),
        Some(b"b4".to_vec())
    );
    assert_eq!(
        kv.get(b"x", now, None, 0).await.unwrap(),
        Some(b"x9".to_vec())
    );
}
