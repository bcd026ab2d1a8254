//! A deterministic cluster in one process: real `Store`s over real fjall engines, joined by
//! an in-memory network that can drop, delay, reorder and partition messages, driven by a
//! manual clock (`tick`) and a seeded RNG. Every store's election timeout is fixed from the
//! seed, so a seed replays a run exactly; a failing test prints it.
//!
//! Set `FLOTILLA_TEST_SEED=N` to replay a run.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::metapb::{Peer, PeerRole, Region, RegionEpoch};
use flotilla_proto::raft_serverpb::RaftMessage;
use flotilla_raftstore::{
    Callback, PeerChange, PeerStatus, RaftStoreError, Store, StoreConfig, StoreMsg, Transport,
};
use flotilla_storage::{Cf, EngineRef, FjallEngine, FjallOptions, SyncPolicy, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The network every store of the cluster sends into.
#[derive(Default)]
struct Network {
    queue: Mutex<Vec<RaftMessage>>,
}

struct NetTransport(Arc<Network>);

impl Transport for NetTransport {
    fn send(&self, messages: Vec<RaftMessage>) {
        self.0.queue.lock().unwrap().extend(messages);
    }
}

/// What the network does to messages.
#[derive(Debug, Clone, Default)]
pub struct NetFaults {
    /// Probability (0..1) that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message is held back for 1..=max_delay_rounds rounds.
    pub delay_rate: f64,
    pub max_delay_rounds: u64,
    /// Deliver each round's messages in a shuffled order.
    pub reorder: bool,
}

/// Fails the test with its seed if a bound is exceeded; `Drop` prints the seed on panic.
pub struct SeedGuard(pub u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "cluster test failed with seed {0}; replay with FLOTILLA_TEST_SEED={0}",
                self.0
            );
        }
    }
}

/// The seed of this run: `FLOTILLA_TEST_SEED`, or a fresh one.
pub fn seed() -> u64 {
    match std::env::var("FLOTILLA_TEST_SEED") {
        Ok(s) => s.parse().expect("FLOTILLA_TEST_SEED is a number"),
        Err(_) => rand::rng().random(),
    }
}

struct Node {
    store: Store,
    engine: EngineRef,
}

pub struct Cluster {
    pub seed: u64,
    _guard: SeedGuard,
    rng: StdRng,
    dirs: Vec<tempfile::TempDir>,
    configs: Vec<StoreConfig>,
    nodes: Vec<Option<Node>>,
    net: Arc<Network>,
    pub faults: NetFaults,
    /// Stores in different groups cannot talk; empty means no partition.
    partition: Vec<BTreeSet<u64>>,
    /// (region, store) pairs whose messages are lost both ways: one region cut off at one
    /// store while its other regions talk.
    blocked: BTreeSet<(u64, u64)>,
    delayed: Vec<(u64, RaftMessage)>,
    round: u64,
    /// Messages delivered, for tests that check traffic happened.
    pub delivered: u64,
    /// The longest `process_ready` of each store (its thread's longest stop), for benches.
    pub longest_round: BTreeMap<u64, Duration>,
}

/// Result slot of an asynchronous request.
pub type Slot<T> = Arc<Mutex<Option<Result<T, RaftStoreError>>>>;

pub fn slot<T: Send + 'static>() -> (Slot<T>, Callback<T>) {
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let s = slot.clone();
    (slot, Box::new(move |r| *s.lock().unwrap() = Some(r)))
}

/// The key every test writes: `k` followed by the number, so they sort numerically.
pub fn key(i: u64) -> Vec<u8> {
    format!("k{i:08}").into_bytes()
}

impl Cluster {
    /// `stores` stores; region 1 covers the whole key space with a voter on each of the
    /// first `replicas` stores (peer id = 100 + store id).
    pub fn new(stores: u64, replicas: u64) -> Self {
        Self::with_config(stores, replicas, |_| {})
    }

    pub fn with_config(stores: u64, replicas: u64, tune: impl Fn(&mut StoreConfig)) -> Self {
        Self::with_seed(seed(), stores, replicas, tune)
    }

    pub fn with_seed(
        seed: u64,
        stores: u64,
        replicas: u64,
        tune: impl Fn(&mut StoreConfig),
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let net = Arc::new(Network::default());
        let region = Region {
            id: 1,
            start_key: Default::default(),
            end_key: Default::default(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: (1..=replicas)
                .map(|s| Peer {
                    id: 100 + s,
                    store_id: s,
                    role: PeerRole::Voter as i32,
                })
                .collect(),
            merging: None,
        };
        // Distinct fixed election timeouts make elections depend only on the seed.
        let mut timeouts: Vec<usize> = (10..30).collect();
        let mut cluster = Cluster {
            seed,
            _guard: SeedGuard(seed),
            rng: StdRng::seed_from_u64(0),
            dirs: Vec::new(),
            configs: Vec::new(),
            nodes: Vec::new(),
            net,
            faults: NetFaults::default(),
            partition: Vec::new(),
            blocked: BTreeSet::new(),
            delayed: Vec::new(),
            round: 0,
            delivered: 0,
            longest_round: BTreeMap::new(),
        };
        for store_id in 1..=stores {
            let pick = rng.random_range(0..timeouts.len());
            let timeout = timeouts.remove(pick);
            let mut cfg = StoreConfig::new(store_id);
            cfg.election_ticks = 10;
            cfg.min_election_ticks = timeout;
            cfg.max_election_ticks = timeout + 1;
            cfg.sync_log = true;
            tune(&mut cfg);
            let dir = tempfile::tempdir().unwrap();
            let engine = open_engine(dir.path());
            if store_id <= replicas {
                Store::bootstrap_region(&engine, &region).unwrap();
            }
            cluster.dirs.push(dir);
            cluster.configs.push(cfg);
            cluster.nodes.push(None);
            drop(engine);
            cluster.start(store_id);
        }
        cluster.rng = rng;
        cluster
    }

    fn node(&mut self, store_id: u64) -> &mut Node {
        self.nodes[(store_id - 1) as usize]
            .as_mut()
            .unwrap_or_else(|| panic!("store {store_id} is down"))
    }

    pub fn store_ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    pub fn alive(&self, store_id: u64) -> bool {
        self.nodes[(store_id - 1) as usize].is_some()
    }

    /// Starts (or restarts) a store from its directory.
    pub fn start(&mut self, store_id: u64) {
        let i = (store_id - 1) as usize;
        assert!(self.nodes[i].is_none(), "store {store_id} is already up");
        let engine = open_engine(self.dirs[i].path());
        let transport = Arc::new(NetTransport(self.net.clone()));
        let store = Store::open(self.configs[i].clone(), engine.clone(), transport).unwrap();
        self.nodes[i] = Some(Node { store, engine });
    }

    /// Stops a store as a crash would: whatever it had not written is gone, as are the
    /// messages in flight to it.
    pub fn stop(&mut self, store_id: u64) {
        self.nodes[(store_id - 1) as usize] = None;
    }

    /// Splits the stores into groups that cannot reach each other.
    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.partition = groups.iter().map(|g| g.iter().copied().collect()).collect();
    }

    /// Loses every message of `region_id` to or from `store_id` (its other regions talk).
    pub fn block_region(&mut self, region_id: u64, store_id: u64) {
        self.blocked.insert((region_id, store_id));
    }

    pub fn heal(&mut self) {
        self.partition.clear();
        self.blocked.clear();
        self.faults = NetFaults::default();
    }

    fn reachable(&self, from: u64, to: u64) -> bool {
        if self.partition.is_empty() {
            return true;
        }
        self.partition
            .iter()
            .any(|g| g.contains(&from) && g.contains(&to))
    }

    /// Delivers the network's messages (through the faults) and runs one round on every
    /// live store. Returns true if anything happened.
    pub fn round(&mut self) -> bool {
        self.round += 1;
        let mut msgs: Vec<RaftMessage> = std::mem::take(&mut *self.net.queue.lock().unwrap());
        let mut keep = Vec::new();
        for (at, m) in std::mem::take(&mut self.delayed) {
            if at <= self.round {
                msgs.push(m);
            } else {
                keep.push((at, m));
            }
        }
        self.delayed = keep;
        if self.faults.reorder {
            for i in (1..msgs.len()).rev() {
                let j = self.rng.random_range(0..=i);
                msgs.swap(i, j);
            }
        }
        let mut active = false;
        for m in msgs {
            let from = m.from_peer.as_ref().map(|p| p.store_id).unwrap_or(0);
            let to = m.to_peer.as_ref().map(|p| p.store_id).unwrap_or(0);
            if !self.reachable(from, to)
                || self.blocked.contains(&(m.region_id, from))
                || self.blocked.contains(&(m.region_id, to))
            {
                continue;
            }
            if self.faults.drop_rate > 0.0 && self.rng.random_bool(self.faults.drop_rate) {
                continue;
            }
            if self.faults.delay_rate > 0.0 && self.rng.random_bool(self.faults.delay_rate) {
                let rounds = self
                    .rng
                    .random_range(1..=self.faults.max_delay_rounds.max(1));
                self.delayed.push((self.round + rounds, m));
                continue;
            }
            if let Some(node) = self.nodes[(to - 1) as usize].as_mut() {
                node.store.handle(StoreMsg::Raft(m));
                self.delivered += 1;
                active = true;
            }
        }
        for node in self.nodes.iter_mut().flatten() {
            // Snapshots are built on a thread of their own: let any build finish, as if
            // it took less than a round, so that a seed still replays a run exactly
            // (a held build stays unfinished).
            if let Some(builder) = node.store.snapshot_builder() {
                builder.wait_idle(Duration::from_secs(60));
            }
            // So are received snapshots' data written (a write held at its gate stays
            // unfinished).
            if let Some(applier) = node.store.snapshot_applier() {
                applier.wait_idle(Duration::from_secs(60));
            }
            let started = std::time::Instant::now();
            active |= node.store.process_ready().unwrap();
            let took = started.elapsed();
            let longest = self.longest_round.entry(node.store.store_id()).or_default();
            *longest = (*longest).max(took);
        }
        active || !self.delayed.is_empty()
    }

    /// Runs rounds until nothing moves (bounded).
    pub fn settle(&mut self) {
        for _ in 0..200 {
            if !self.round() {
                return;
            }
        }
    }

    /// One tick of the manual clock on every live store, then settle.
    pub fn tick(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            node.store.tick();
        }
        self.settle();
    }

    /// One tick of one store's clock alone (a store whose clock runs ahead), then settle.
    pub fn tick_store(&mut self, store_id: u64) {
        self.node(store_id).store.tick();
        self.settle();
    }

    pub fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            self.tick();
        }
    }

    pub fn status(&self, store_id: u64, region_id: u64) -> Option<PeerStatus> {
        self.nodes[(store_id - 1) as usize]
            .as_ref()?
            .store
            .peer_status(region_id)
    }

    /// The live store whose peer leads `region_id` in the highest term, if any.
    pub fn leader_of(&self, region_id: u64) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for store_id in self.store_ids() {
            if let Some(st) = self.status(store_id, region_id)
                && st.is_leader
                && best.is_none_or(|(term, _)| st.term > term)
            {
                best = Some((st.term, store_id));
            }
        }
        best.map(|(_, s)| s)
    }

    /// Ticks until `region_id` has a leader that can serve (bounded: panics with the seed).
    pub fn wait_leader(&mut self, region_id: u64) -> u64 {
        for _ in 0..300 {
            if let Some(leader) = self.leader_of(region_id) {
                // A leader serves once it committed an entry of its term: probe with a read.
                if self.read_index(leader, region_id).is_ok() {
                    return leader;
                }
            }
            self.tick();
        }
        panic!("region {region_id} elected no leader within 300 ticks");
    }

    pub fn region(&self, store_id: u64, region_id: u64) -> Region {
        self.status(store_id, region_id)
            .unwrap_or_else(|| panic!("store {store_id} has no peer of region {region_id}"))
            .region
    }

    /// Sends a request and drives the cluster until it is answered (bounded).
    fn request<T: Send + 'static>(
        &mut self,
        store_id: u64,
        make: impl FnOnce(Callback<T>) -> StoreMsg,
        max_ticks: usize,
    ) -> Option<Result<T, RaftStoreError>> {
        let (slot, cb) = slot::<T>();
        self.node(store_id).store.handle(make(cb));
        self.settle();
        for _ in 0..max_ticks {
            if let Some(r) = slot.lock().unwrap().take() {
                return Some(r);
            }
            self.tick();
        }
        slot.lock().unwrap().take()
    }

    pub fn read_index(&mut self, store_id: u64, region_id: u64) -> Result<(), RaftStoreError> {
        let epoch = self.region(store_id, region_id).epoch.unwrap_or_default();
        self.request(
            store_id,
            |cb| StoreMsg::ReadIndex {
                region_id,
                epoch,
                term: 0,
                cb,
            },
            30,
        )
        .unwrap_or_else(|| Err(RaftStoreError::ServerIsBusy("read index timed out".into())))
    }

    /// Proposes a write of `key = value` at `store_id`; None if unanswered in `max_ticks`.
    pub fn try_put(
        &mut self,
        store_id: u64,
        region_id: u64,
        key: &[u8],
        value: &[u8],
        max_ticks: usize,
    ) -> Option<Result<(), RaftStoreError>> {
        let epoch = self.region(store_id, region_id).epoch.unwrap_or_default();
        let mut batch = WriteBatch::new();
        batch.put(Cf::Default, key.to_vec(), value.to_vec());
        self.request(
            store_id,
            |cb| StoreMsg::Write {
                region_id,
                epoch,
                term: 0,
                batch,
                cb,
            },
            max_ticks,
        )
    }

    /// Writes `pairs` in one batch (one log entry) through the region's leader, retrying
    /// routing errors as a client would.
    pub fn must_put_batch(&mut self, region_id: u64, pairs: &[(Vec<u8>, Vec<u8>)]) {
        for _ in 0..20 {
            let leader = self.wait_leader(region_id);
            let epoch = self.region(leader, region_id).epoch.unwrap_or_default();
            let mut batch = WriteBatch::new();
            for (key, value) in pairs {
                batch.put(Cf::Default, key.clone(), value.clone());
            }
            let result = self.request(
                leader,
                |cb| StoreMsg::Write {
                    region_id,
                    epoch,
                    term: 0,
                    batch,
                    cb,
                },
                50,
            );
            match result {
                Some(Ok(())) => return,
                Some(Err(e)) if e.is_retryable() => self.tick(),
                Some(Err(e)) => panic!("write failed: {e}"),
                None => self.tick(),
            }
        }
        panic!(
            "a batch of {} writes was not acknowledged after 20 attempts",
            pairs.len()
        );
    }

    /// Writes through the region's leader, retrying routing errors as a client would.
    pub fn must_put(&mut self, region_id: u64, key: &[u8], value: &[u8]) {
        self.must_put_batch(region_id, &[(key.to_vec(), value.to_vec())]);
    }

    pub fn change_peers(
        &mut self,
        region_id: u64,
        changes: Vec<PeerChange>,
    ) -> Result<Region, RaftStoreError> {
        let leader = self.wait_leader(region_id);
        self.request(
            leader,
            |cb| StoreMsg::ChangePeers {
                region_id,
                changes,
                cb,
            },
            50,
        )
        .unwrap_or_else(|| {
            Err(RaftStoreError::ServerIsBusy(
                "membership change timed out".into(),
            ))
        })
    }

    pub fn split(
        &mut self,
        region_id: u64,
        split_key: &[u8],
        new_region_id: u64,
        new_peer_ids: Vec<u64>,
    ) -> Result<Vec<Region>, RaftStoreError> {
        let leader = self.wait_leader(region_id);
        let epoch = self.region(leader, region_id).epoch.unwrap_or_default();
        let split_key = split_key.to_vec();
        self.request(
            leader,
            |cb| StoreMsg::Split {
                region_id,
                epoch,
                split_key,
                new_region_id,
                new_peer_ids,
                cb,
            },
            50,
        )
        .unwrap_or_else(|| Err(RaftStoreError::ServerIsBusy("split timed out".into())))
    }

    /// Holds (or releases) the snapshot builds of a store: they start only once released.
    pub fn hold_snapshot_builds(&mut self, store_id: u64, held: bool) {
        self.node(store_id)
            .store
            .snapshot_builder()
            .expect("the store builds snapshots on a thread of its own")
            .hold(held);
    }

    /// Lets a store's snapshot writer write at most `batches` more engine batches (`None`:
    /// any number) before it waits: a received snapshot whose data takes as long as the
    /// test likes to write, or a write cut short.
    pub fn allow_snapshot_writes(&mut self, store_id: u64, batches: Option<u64>) {
        self.node(store_id)
            .store
            .snapshot_applier()
            .expect("the store writes snapshots on a thread of its own")
            .allow_batches(batches);
    }

    /// The regions whose received snapshot's data a store is writing (see
    /// `Store::snapshots_being_written`).
    pub fn snapshots_being_written(&mut self, store_id: u64) -> Vec<u64> {
        self.node(store_id).store.snapshots_being_written()
    }

    /// Whether a store has a received snapshot's data queued or being written.
    pub fn writing_snapshot(&mut self, store_id: u64) -> bool {
        self.node(store_id)
            .store
            .snapshot_applier()
            .is_some_and(|a| a.is_writing())
    }

    /// Whether a store has a snapshot build queued or under way.
    pub fn building_snapshot(&mut self, store_id: u64) -> bool {
        self.node(store_id)
            .store
            .snapshot_builder()
            .is_some_and(|b| b.is_building())
    }

    pub fn engine(&mut self, store_id: u64) -> EngineRef {
        self.node(store_id).engine.clone()
    }

    pub fn board(&mut self, store_id: u64) -> std::sync::Arc<flotilla_raftstore::RegionBoard> {
        self.node(store_id).store.board()
    }

    /// The store's checksum thread.
    pub fn checksums(&mut self, store_id: u64) -> Arc<flotilla_raftstore::RegionHasher> {
        self.node(store_id).store.checksums()
    }

    /// The store's checksum of `region_id` at log index `index`: (checksum, key count),
    /// once its checksum thread has it (within `timeout`).
    pub fn wait_checksum(
        &mut self,
        store_id: u64,
        region_id: u64,
        index: u64,
        timeout: std::time::Duration,
    ) -> Result<(u64, u64), String> {
        let hasher = self.node(store_id).store.checksums();
        match hasher.wait(region_id, index, timeout) {
            Some((at, result)) if at == index => result.map_err(|e| e.to_string()),
            other => Err(format!("no checksum at index {index}: {other:?}")),
        }
    }

    pub fn send(&mut self, store_id: u64, msg: StoreMsg) {
        self.node(store_id).store.handle(msg);
        self.settle();
    }

    /// See `Store::transfer_target_ready`.
    pub fn transfer_target_ready(&mut self, store_id: u64, region_id: u64, peer_id: u64) -> bool {
        self.node(store_id)
            .store
            .transfer_target_ready(region_id, peer_id)
    }

    /// Hands `batch` to `store_id` as a write of `region_id` at `epoch` (any leader term)
    /// without running a round; the slot gets its answer.
    pub fn propose_write(
        &mut self,
        store_id: u64,
        region_id: u64,
        epoch: RegionEpoch,
        batch: WriteBatch,
    ) -> Slot<()> {
        let (slot, cb) = slot::<()>();
        self.handle(
            store_id,
            StoreMsg::Write {
                region_id,
                epoch,
                term: 0,
                batch,
                cb,
            },
        );
        slot
    }

    /// Hands a request to the store without running a round: nothing reaches the network.
    pub fn handle(&mut self, store_id: u64, msg: StoreMsg) {
        self.node(store_id).store.handle(msg);
    }

    pub fn get(&mut self, store_id: u64, key: &[u8]) -> Option<Vec<u8>> {
        self.node(store_id).engine.get(Cf::Default, key).unwrap()
    }

    /// Every data key-value of a store's `default` CF in `[start, end)`.
    pub fn dump(&mut self, store_id: u64, start: &[u8], end: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.node(store_id)
            .engine
            .scan(Cf::Default, start, end, false)
            .map(|r| r.unwrap())
            .collect()
    }

    /// Ticks until every live replica of the region has applied the leader's commit index.
    pub fn wait_applied(&mut self, region_id: u64, store_ids: &[u64]) {
        for _ in 0..300 {
            let leader = self.leader_of(region_id);
            if let Some(leader) = leader {
                let commit = self.status(leader, region_id).unwrap().commit_index;
                if store_ids.iter().all(|s| {
                    self.status(*s, region_id)
                        .is_some_and(|st| st.applied_index >= commit)
                }) {
                    return;
                }
            }
            self.tick();
        }
        panic!("region {region_id} replicas {store_ids:?} did not catch up within 300 ticks");
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Messages held back by the network right now.
    pub fn in_flight(&self) -> VecDeque<u64> {
        self.delayed.iter().map(|(at, _)| *at).collect()
    }
}

fn open_engine(dir: &std::path::Path) -> EngineRef {
    let options = FjallOptions {
        cache_size_bytes: 4 << 20,
        point_cache_bytes: 0,
        sync_policy: SyncPolicy::Buffered,
    };
    Arc::new(FjallEngine::open(dir, &options).unwrap())
}

// Region merge steps, each asked of the region's leader and awaited.

/// The leader of `region_id`, without `Cluster::wait_leader`'s probe (a read, which a
/// frozen region refuses).
/// Where `filled_region`'s region 2 starts: `key(FILLED_BASE)`.
pub const FILLED_BASE: u64 = 10_000_000;
/// Keys per write when filling (or emptying) a region in the benches.
pub const FILL_BATCH: u64 = 2_048;

/// Three stores; region 1 holds one key, and region 2, from `key(FILLED_BASE)` on, holds
/// `keys` keys of 100 bytes (written in batches of `FILL_BATCH`) on every replica.
pub fn filled_region(keys: u64) -> Cluster {
    let mut c = Cluster::new(3, 3);
    c.must_put(1, &key(0), b"left");
    c.split(1, &key(FILLED_BASE), 2, vec![201, 202, 203])
        .unwrap();
    c.wait_leader(2);
    let value = vec![7u8; 100];
    let mut first = 0;
    while first < keys {
        let last = (first + FILL_BATCH).min(keys);
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (first..last)
            .map(|i| (key(FILLED_BASE + i), value.clone()))
            .collect();
        c.must_put_batch(2, &pairs);
        first = last;
    }
    c.wait_applied(2, &[1, 2, 3]);
    c
}

pub fn leader_alone(c: &mut Cluster, region_id: u64) -> u64 {
    for _ in 0..300 {
        if let Some(leader) = c.leader_of(region_id) {
            return leader;
        }
        c.tick();
    }
    panic!("region {region_id} elected no leader within 300 ticks");
}

pub fn prepare(c: &mut Cluster, region_id: u64) -> Result<Region, RaftStoreError> {
    let leader = leader_alone(c, region_id);
    let epoch = c.region(leader, region_id).epoch.unwrap_or_default();
    ask(c, leader, |cb| StoreMsg::PrepareMerge {
        region_id,
        epoch,
        cb,
    })
}

pub fn commit(
    c: &mut Cluster,
    region_id: u64,
    epoch: RegionEpoch,
    source: Region,
) -> Result<Region, RaftStoreError> {
    let leader = c.wait_leader(region_id);
    ask(c, leader, |cb| StoreMsg::CommitMerge {
        region_id,
        epoch,
        source,
        cb,
    })
}

pub fn rollback(c: &mut Cluster, region_id: u64) -> Result<Region, RaftStoreError> {
    let leader = leader_alone(c, region_id);
    ask(c, leader, |cb| StoreMsg::RollbackMerge { region_id, cb })
}

pub fn ask<T: Send + 'static>(
    c: &mut Cluster,
    store_id: u64,
    make: impl FnOnce(flotilla_raftstore::Callback<T>) -> StoreMsg,
) -> Result<T, RaftStoreError> {
    let (slot, cb) = slot::<T>();
    c.send(store_id, make(cb));
    for _ in 0..50 {
        c.settle();
        if let Some(r) = slot.lock().unwrap().take() {
            return r;
        }
        c.tick();
    }
    panic!("no answer within 50 ticks");
}

/// Has `store_id`'s leader of `region_id` checksum the region (`ComputeHash`) and waits for
/// its answer, which its checksum thread gives once the entry is applied.
pub fn compute_hash(
    c: &mut Cluster,
    store_id: u64,
    region_id: u64,
) -> Result<(u64, u64, u64), RaftStoreError> {
    let (slot, cb) = slot::<(u64, u64, u64)>();
    c.send(store_id, StoreMsg::ComputeHash { region_id, cb });
    for _ in 0..50 {
        c.settle();
        let hasher = c.checksums(store_id);
        assert!(
            hasher.wait_idle(Duration::from_secs(600)),
            "store {store_id}'s checksum thread is stuck"
        );
        if let Some(r) = slot.lock().unwrap().take() {
            return r;
        }
        c.tick();
    }
    panic!("no checksum of region {region_id} within 50 ticks");
}

pub fn delete(c: &mut Cluster, region_id: u64, k: &[u8]) {
    delete_all(c, region_id, &[k.to_vec()]);
}

/// Deletes `keys` in one write.
pub fn delete_all(c: &mut Cluster, region_id: u64, keys: &[Vec<u8>]) {
    let leader = c.wait_leader(region_id);
    let epoch = c.region(leader, region_id).epoch.unwrap_or_default();
    let mut batch = WriteBatch::new();
    for k in keys {
        batch.delete(Cf::Default, k.clone());
    }
    ask(c, leader, |cb| StoreMsg::Write {
        region_id,
        epoch,
        term: 0,
        batch,
        cb,
    })
    .unwrap();
}
