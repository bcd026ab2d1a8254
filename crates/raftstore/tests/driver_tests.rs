//! Stores on their own threads with a wall clock, as in production: a leader is elected,
//! writes replicate, the leader's thread stops and another takes over.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use flotilla_proto::metapb::{Peer, PeerRole, Region, RegionEpoch};
use flotilla_proto::raft_serverpb::RaftMessage;
use flotilla_raftstore::{
    DriverConfig, PeerStatus, RaftStoreError, Store, StoreConfig, StoreDriver, StoreMsg,
    StoreRouter, Transport,
};
use flotilla_storage::{Cf, EngineRef, FjallEngine, FjallOptions, SyncPolicy, WriteBatch};

/// Delivers messages straight into the destination store's mailbox.
#[derive(Default)]
struct Routers(RwLock<HashMap<u64, StoreRouter>>);

impl Transport for Routers {
    fn send(&self, messages: Vec<RaftMessage>) {
        let routers = self.0.read().unwrap();
        for m in messages {
            let to = m.to_peer.map(|p| p.store_id).unwrap_or(0);
            if let Some(router) = routers.get(&to) {
                // A full or stopped mailbox loses the message; Raft retries.
                let _ = router.send(StoreMsg::Raft(m));
            }
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(20);

fn status(router: &StoreRouter, region_id: u64) -> Option<PeerStatus> {
    let (tx, rx) = mpsc::channel();
    router
        .inspect(Box::new(move |s| {
            let _ = tx.send(s.peer_status(region_id));
        }))
        .ok()?;
    rx.recv_timeout(TIMEOUT).ok().flatten()
}

fn put(router: &StoreRouter, epoch: RegionEpoch, key: &[u8]) -> Result<(), RaftStoreError> {
    let (tx, rx) = mpsc::channel();
    let mut batch = WriteBatch::new();
    batch.put(Cf::Default, key.to_vec(), b"v".to_vec());
    router.send(StoreMsg::Write {
        region_id: 1,
        epoch,
        term: 0,
        batch,
        cb: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    })?;
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| Err(RaftStoreError::ServerIsBusy("no answer".into())))
}

/// Writes through whichever store leads, retrying routing errors until `TIMEOUT`.
fn must_put(routers: &HashMap<u64, StoreRouter>, key: &[u8]) {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        for router in routers.values() {
            let Some(st) = status(router, 1) else {
                continue;
            };
            if st.is_leader && put(router, st.region.epoch.unwrap(), key).is_ok() {
                return;
            }
        }
        // Poll interval while an election runs (the outcome is checked, not assumed).
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("write of {key:?} not acknowledged within {TIMEOUT:?}");
}

struct Threaded {
    _dirs: Vec<tempfile::TempDir>,
    engines: HashMap<u64, EngineRef>,
    drivers: HashMap<u64, StoreDriver>,
    transport: Arc<Routers>,
}

impl Threaded {
    /// The stores' routers once a write has gone through, the store that led it, and its
    /// status of region 1.
    fn with_a_leader(&self) -> (HashMap<u64, StoreRouter>, u64, PeerStatus) {
        let routers: HashMap<u64, StoreRouter> = self
            .drivers
            .iter()
            .map(|(id, d)| (*id, d.router()))
            .collect();
        must_put(&routers, b"warm-up");
        let (leader, st) = routers
            .iter()
            .find_map(|(id, r)| status(r, 1).filter(|s| s.is_leader).map(|s| (*id, s)))
            .expect("a leader");
        (routers, leader, st)
    }
}

/// Three stores on their own threads, 10 ms ticks, region 1 on all of them.
fn start_threaded() -> Threaded {
    let region = Region {
        id: 1,
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: (1..=3)
            .map(|s| Peer {
                id: 100 + s,
                store_id: s,
                role: PeerRole::Voter as i32,
            })
            .collect(),
        ..Region::default()
    };
    let transport = Arc::new(Routers::default());
    let mut dirs = Vec::new();
    let mut engines: HashMap<u64, EngineRef> = HashMap::new();
    let mut drivers: HashMap<u64, StoreDriver> = HashMap::new();
    for store_id in 1..=3u64 {
        let dir = tempfile::tempdir().unwrap();
        let options = FjallOptions {
            cache_size_bytes: 4 << 20,
            point_cache_bytes: 0,
            sync_policy: SyncPolicy::Fsync,
        };
        let engine: EngineRef = Arc::new(FjallEngine::open(dir.path(), &options).unwrap());
        Store::bootstrap_region(&engine, &region).unwrap();
        let mut cfg = StoreConfig::new(store_id);
        cfg.tick_interval = Duration::from_millis(10);
        let store = Store::open(cfg, engine.clone(), transport.clone()).unwrap();
        let driver = StoreDriver::spawn(
            store,
            DriverConfig {
                tick_interval: Duration::from_millis(10),
                ..DriverConfig::default()
            },
        );
        transport
            .0
            .write()
            .unwrap()
            .insert(store_id, driver.router());
        drivers.insert(store_id, driver);
        engines.insert(store_id, engine);
        dirs.push(dir);
    }
    Threaded {
        _dirs: dirs,
        engines,
        drivers,
        transport,
    }
}

#[test]
fn stores_on_threads_elect_replicate_and_fail_over() {
    let Threaded {
        _dirs,
        engines,
        mut drivers,
        transport,
    } = start_threaded();
    let routers: HashMap<u64, StoreRouter> =
        drivers.iter().map(|(id, d)| (*id, d.router())).collect();
    for i in 0..50 {
        must_put(&routers, format!("a{i:03}").as_bytes());
    }
    let leader = routers
        .iter()
        .find(|(_, r)| status(r, 1).is_some_and(|s| s.is_leader))
        .map(|(id, _)| *id)
        .expect("a leader");

    // Stop the leader's thread: the others elect a new leader and keep taking writes.
    transport.0.write().unwrap().remove(&leader);
    drop(drivers.remove(&leader));
    let survivors: HashMap<u64, StoreRouter> = routers
        .into_iter()
        .filter(|(id, _)| *id != leader)
        .collect();
    for i in 0..50 {
        must_put(&survivors, format!("b{i:03}").as_bytes());
    }
    // Both survivors hold all 100 writes once they have applied the commit index.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let statuses: Vec<PeerStatus> = survivors.values().filter_map(|r| status(r, 1)).collect();
        let commit = statuses.iter().map(|s| s.commit_index).max().unwrap_or(0);
        if statuses.len() == 2 && statuses.iter().all(|s| s.applied_index >= commit) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "survivors did not converge: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for id in survivors.keys() {
        let n = engines[id].scan(Cf::Default, b"", b"", false).count();
        assert_eq!(n, 100, "store {id} holds {n} of 100 acknowledged writes");
    }
}

/// The Percolator MVCC of standalone, unchanged, over a region: a transaction prewritten and
/// committed on the leader is replicated record by record, and a follower refuses writes.
#[test]
fn mvcc_runs_over_a_region_and_its_records_replicate() {
    use flotilla_mvcc::{Mutation, MutationOp, Mvcc, MvccError, PrewriteLocks};
    use flotilla_raftstore::RegionEngine;
    use flotilla_storage::StorageError;
    use flotilla_types::Timestamp;

    let t = start_threaded();
    let (routers, leader, st) = t.with_a_leader();
    let region = st.region;
    let on = |store: u64| {
        let engine = RegionEngine::new(
            t.engines[&store].clone(),
            routers[&store].clone(),
            region.clone(),
            0,
            TIMEOUT,
        );
        Mvcc::new(Arc::new(engine)).unwrap()
    };
    let mvcc = on(leader);
    let put = |k: &[u8], v: &[u8]| Mutation {
        key: k.to_vec(),
        op: MutationOp::Put(v.to_vec()),
        check: flotilla_mvcc::KeyCheck::Snapshot,
    };
    let start = Timestamp(100);
    let keys = vec![b"x".to_vec(), b"y".to_vec()];
    mvcc.prewrite(
        &[put(b"x", b"1"), put(b"y", b"2")],
        b"x",
        start,
        3000,
        PrewriteLocks::Durable,
    )
    .unwrap();
    mvcc.commit(&keys, start, Timestamp(101)).unwrap();
    assert_eq!(
        mvcc.get(b"y", Timestamp(102), None).unwrap(),
        Some(b"2".to_vec())
    );

    // A follower refuses to write, retryably, and changes nothing.
    let follower = *routers.keys().find(|id| **id != leader).unwrap();
    let refused = on(follower).prewrite(
        &[put(b"z", b"3")],
        b"z",
        Timestamp(200),
        3000,
        PrewriteLocks::Durable,
    );
    assert!(
        matches!(
            refused,
            Err(MvccError::Storage(StorageError::Unavailable(_)))
        ),
        "{refused:?}"
    );

    // Every replica holds the committed transaction once it has applied the commit index.
    let deadline = Instant::now() + TIMEOUT;
    for (id, router) in &routers {
        loop {
            let commit = status(&routers[&leader], 1).unwrap().commit_index;
            if status(router, 1).is_some_and(|s| s.applied_index >= commit) {
                break;
            }
            assert!(Instant::now() < deadline, "store {id} did not catch up");
            std::thread::sleep(Duration::from_millis(10));
        }
        let local = Mvcc::new(t.engines[id].clone()).unwrap();
        assert_eq!(
            local.get(b"x", Timestamp(102), None).unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            local.get(b"y", Timestamp(102), None).unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(local.get(b"z", Timestamp(300), None).unwrap(), None);
        assert_eq!(local.lock_of(b"x").unwrap(), None, "store {id} kept a lock");
    }
}

/// An empty batch (what taking a pessimistic lock, kept in memory, writes) confirms that
/// the peer still leads the view's term, as a write would, but adds no entry to the log.
#[test]
fn an_empty_write_confirms_the_leaders_term_without_a_log_entry() {
    use flotilla_mvcc::Mvcc;
    use flotilla_raftstore::RegionEngine;
    use flotilla_storage::{KvEngine, StorageError};
    use flotilla_types::Timestamp;

    let t = start_threaded();
    let (routers, leader, st) = t.with_a_leader();
    let view = |store: u64, term: u64| {
        RegionEngine::new(
            t.engines[&store].clone(),
            routers[&store].clone(),
            st.region.clone(),
            term,
            TIMEOUT,
        )
    };

    let _ticket = view(leader, st.term).append(WriteBatch::new()).unwrap();
    let mvcc = Mvcc::new(Arc::new(view(leader, st.term))).unwrap();
    mvcc.acquire_pessimistic_lock(
        &[(b"k".to_vec(), false)],
        b"k",
        Timestamp(100),
        Timestamp(100),
        3000,
        true,
    )
    .unwrap();
    let after = status(&routers[&leader], 1).unwrap();
    assert_eq!(after.term, st.term, "no election happened");
    assert_eq!(
        after.commit_index, st.commit_index,
        "an empty write or an in-memory lock added a log entry"
    );

    // Another term's view, and a follower, are refused retryably.
    for (store, term) in [
        (leader, st.term + 1),
        (*routers.keys().find(|id| **id != leader).unwrap(), st.term),
    ] {
        let refused = view(store, term).append(WriteBatch::new());
        assert!(
            matches!(refused, Err(StorageError::Unavailable(_))),
            "store {store}, term {term}: {refused:?}"
        );
    }
}

/// A full mailbox refuses at once with a retryable error; nothing waits without bound.
#[test]
fn a_full_mailbox_answers_server_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let options = FjallOptions {
        cache_size_bytes: 4 << 20,
        point_cache_bytes: 0,
        sync_policy: SyncPolicy::Buffered,
    };
    let engine: EngineRef = Arc::new(FjallEngine::open(dir.path(), &options).unwrap());
    let store = Store::open(StoreConfig::new(1), engine, Arc::new(Routers::default())).unwrap();
    let driver = StoreDriver::spawn(
        store,
        DriverConfig {
            mailbox_capacity: 4,
            ..DriverConfig::default()
        },
    );
    let router = driver.router();
    // Hold the store's thread inside a request until the test lets go.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    router
        .inspect(Box::new(move |_| {
            entered_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(TIMEOUT);
        }))
        .unwrap();
    entered_rx.recv_timeout(TIMEOUT).unwrap();
    for _ in 0..4 {
        router.inspect(Box::new(|_| {})).unwrap();
    }
    let refused = router.send(StoreMsg::Campaign { region_id: 1 });
    assert!(
        matches!(refused, Err(RaftStoreError::ServerIsBusy(_))),
        "{refused:?}"
    );
    release_tx.send(()).unwrap();
    // Once drained, the mailbox takes requests again.
    let (tx, rx) = mpsc::channel();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let tx = tx.clone();
        if router
            .inspect(Box::new(move |_| tx.send(()).unwrap()))
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the mailbox never drained");
        std::thread::sleep(Duration::from_millis(5));
    }
    rx.recv_timeout(TIMEOUT).unwrap();
}
