use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_catalog::{Catalog, CatalogError, IdKind, LocalCatalog};
use flotilla_client::{
    ClientConfig, GrpcTransport, RaftMessageLimits, RaftService, StoreResolver, WireChange,
    WireSnapshot,
};
use flotilla_ddl::{DdlConfig, JobQueue, ReorgRef};
use flotilla_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, StoreState};
use flotilla_proto::metaservicepb::meta_server::{Meta, MetaServer};
use flotilla_proto::metaservicepb::*;
use flotilla_raftstore::{
    DriverConfig, RegionBoard, RegionEngine, Store, StoreConfig, StoreDriver, StoreMsg, StoreRouter,
};
use flotilla_storage::{EngineRef, FjallEngine, FjallOptions, KvEngine, WriteBatch};
use flotilla_tso::LocalTso;
use flotilla_types::Timestamp;
use flotilla_types::version::{self, BINARY_CLUSTER_VERSION, ClusterVersion};
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::merge::{MergeConfig, MergeState, MergeStep, live_ranges};
use crate::state::{
    GcStoreBounds, MetaData, MovePlan, NodeVersion, ReplicaRepair, StoreRec, next_cluster_version,
};
use crate::wait_graph::WaitGraph;

/// The meta group's only region.
const META_REGION_ID: u64 = 1;

/// How a meta member runs.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// This member's id (1-based; also its peer id in the meta group).
    pub member_id: u64,
    /// Every member: id and address (host:port), this one included.
    pub members: Vec<(u64, String)>,
    /// Where the member keeps its Raft log and the meta state.
    pub data_dir: PathBuf,
    /// Replicas per region.
    pub replication: usize,
    /// The Raft clock.
    pub tick_interval: Duration,
    /// Ticks without a leader before an election.
    pub election_ticks: usize,
    /// A store silent this long counts as down.
    pub store_down_after: Duration,
    /// Length of the persisted TSO window.
    pub tso_window_ms: u64,
    /// Leader balance: at most one leader transfer per this interval, asked of a store
    /// leading at least two regions more than another live store holding a voter of the
    /// region. Zero turns balancing off.
    pub leader_balance_interval: Duration,
    /// Replica repair: a replica on a store silent this long is replaced by one on a live
    /// store (see `MetaData::replica_repair_step`). Long enough that a restart or a
    /// maintenance never triggers it. Zero turns repair off.
    pub replica_repair_after: Duration,
    /// Replica repair steps in progress at once, cluster-wide (each new replica is a
    /// region snapshot to send); more wait for a later heartbeat.
    pub replica_repairs_max: usize,
    /// Replica balance: at most one new replica move per this interval, from the store
    /// holding the most replicas to one holding at least two fewer (see
    /// `MetaData::replica_move`). Zero turns replica balance off.
    pub replica_balance_interval: Duration,
    /// Replica moves in progress at once, cluster-wide (each is a region snapshot to
    /// send); a store receives one at a time.
    pub replica_moves_max: usize,
    /// Store label keys, outermost first (e.g. zone, rack, host): each region's replicas
    /// go to stores with different values of the first, then of the next, as far as the
    /// stores allow. Repair and removal choose targets by it, balance never spreads a
    /// region worse, and a region spread worse than its stores allow is moved (paced like
    /// balance, and on even when balance is off). Empty (the default): every store is a
    /// location of its own.
    pub location_labels: Vec<String>,
    /// DDL job queue bounds.
    pub ddl: DdlConfig,
    /// GC: how long a replaced row version stays readable. Zero turns GC off (the safe
    /// point never moves).
    pub gc_life_time: Duration,
    /// GC: how often the leader moves the safe point on.
    pub gc_run_interval: Duration,
    /// Largest gRPC message a member accepts.
    pub grpc_message_bytes_max: usize,
    /// Size bounds of Raft messages between members: batches, and single messages (the
    /// meta group's snapshots: every store, region and table) sent in pieces.
    pub raft_limits: RaftMessageLimits,
    /// Region merge: a region whose range has held no live table's keys for this long (a
    /// dropped or truncated table's, once its data is deleted) is folded into its left
    /// neighbour. Zero turns merge off.
    pub region_merge_after: Duration,
    /// Region merges under way at once, cluster-wide.
    pub region_merges_max: usize,
    /// Regions one `ScanRegions` answer holds at most (a request's limit of 0 or more is
    /// cut to it); `MetaClient::scan_regions` asks page after page. Bounds the answer to
    /// well under a client's 4 MiB gRPC message limit (a region's entry is a few hundred
    /// bytes) and the time the leader's state is locked to copy it out.
    pub scan_regions_page_max: usize,
    /// The newest cluster version this member understands (`flotilla_types::version`):
    /// this build's, or an older one to emulate an older build in rolling-upgrade tests.
    pub binary_version: ClusterVersion,
}

impl MetaConfig {
    /// A member with the defaults: replication 3, 100 ms ticks, 10-tick elections, stores
    /// down after 10 s of silence, a 3 s TSO window, a leader transfer per 5 s at most,
    /// replicas on a store silent for 30 minutes replaced, 4 repair steps at once, a
    /// replica move started per second at most with 4 in progress at once, regions without
    /// live tables' keys merged after a minute (4 merges at once), old row
    /// versions readable for 10 minutes with the GC safe point moved every minute, gRPC
    /// messages of up to 64 MiB, Raft batches of up to 4 MiB and snapshots of up to
    /// 2 GiB, 4,096 regions per `ScanRegions` answer.
    pub fn new(member_id: u64, members: Vec<(u64, String)>, data_dir: PathBuf) -> Self {
        Self {
            member_id,
            members,
            data_dir,
            replication: 3,
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            store_down_after: Duration::from_secs(10),
            tso_window_ms: LocalTso::DEFAULT_WINDOW_MS,
            leader_balance_interval: Duration::from_secs(5),
            replica_repair_after: Duration::from_secs(30 * 60),
            replica_repairs_max: 4,
            replica_balance_interval: Duration::from_secs(1),
            replica_moves_max: 4,
            location_labels: Vec::new(),
            ddl: DdlConfig::default(),
            gc_life_time: Duration::from_secs(600),
            gc_run_interval: Duration::from_secs(60),
            grpc_message_bytes_max: GRPC_MESSAGE_BYTES_MAX_DEFAULT,
            raft_limits: RaftMessageLimits::default(),
            binary_version: BINARY_CLUSTER_VERSION,
            region_merge_after: Duration::from_secs(60),
            region_merges_max: 4,
            scan_regions_page_max: SCAN_REGIONS_PAGE_MAX_DEFAULT,
        }
    }
}

/// How often the leader looks whether the cluster version may rise, and how often a
/// member that does not lead reports its own version to the leader.
const CLUSTER_VERSION_INTERVAL: Duration = Duration::from_secs(1);

/// A replica repair step not seen done (the region's conf_ver unchanged) within this long
/// is asked again.
const REPAIR_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A replica move not finished within this long is given up (its learner, if any, is
/// removed by a later heartbeat): a region snapshot on a live store takes seconds.
const REPLICA_MOVE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Largest message a meta member accepts by default.
pub const GRPC_MESSAGE_BYTES_MAX_DEFAULT: usize = 64 << 20;

/// Why a meta member could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetaStartError {
    #[error("invalid meta configuration: {0}")]
    Config(String),
    #[error("cannot open meta data directory {dir}: {message}")]
    Storage { dir: String, message: String },
}

/// What the leader holds while it leads.
struct LeaderState {
    term: u64,
    engine: Arc<RegionEngine>,
    tso: LocalTso,
    catalog: Arc<LocalCatalog>,
    /// DDL jobs, persisted in the meta group and run by this leader's owner task.
    ddl: Arc<JobQueue>,
    /// Stops the owner task when this term's leadership ends.
    ddl_stop: watch::Sender<bool>,
    data: Mutex<MetaData>,
    /// When this leader last asked for a leader transfer (leader balance).
    last_balance: Mutex<Option<Instant>>,
    /// When this leader took over: a store it has not heard from since counts as down
    /// once `replica_repair_after` has passed.
    since: Instant,
    /// Replica repair steps asked for and not yet seen done: region id, the region's
    /// conf_ver when asked, and when (see `MetaConfig::replica_repairs_max`).
    repairs: Mutex<HashMap<u64, (u64, Instant)>>,
    /// Replica moves in progress, by region (bounded by `MetaConfig::replica_moves_max`).
    /// Kept in memory only: a new leader finds a move's learner and removes it.
    moves: Mutex<HashMap<u64, ReplicaMoveOp>>,
    /// When this leader last started a replica move (or removed a stray learner).
    last_move: Mutex<Option<Instant>>,
    /// What each other meta member reported of its build's cluster version (absent: not
    /// heard from by this leader).
    member_versions: Mutex<HashMap<u64, Option<ClusterVersion>>>,
    /// Wakes `cluster_version_loop` before its next interval: a node's build version
    /// became known or changed, so the cluster version may rise now.
    version_wake: Arc<tokio::sync::Notify>,
    /// Region merges (see `crate::merge`).
    merge: Mutex<MergeState>,
}

/// Replica balance, one region: `learner` is added on the target store and catches up,
/// then one joint change promotes it and demotes `source`, then `source` is removed. The
/// region never has fewer than `replication` up-to-date voters, and the new replica
/// counts in no quorum until it holds the region.
struct ReplicaMoveOp {
    source: Peer,
    learner: Peer,
    started: Instant,
    /// The region's conf_ver when the last step was asked, and when: a step is asked once
    /// per configuration, again after `REPAIR_STEP_TIMEOUT`.
    asked: Option<(u64, Instant)>,
}

/// What a replica move needs next.
enum MoveStep {
    /// Nothing now (the learner is catching up, raft-rs is leaving a joint configuration,
    /// or the step was just asked).
    Wait,
    /// The leader is the replica to move: hand its leadership to this voter first.
    Transfer(Peer),
    Change(ReplacePeer),
}

impl Drop for LeaderState {
    fn drop(&mut self) {
        let _ = self.ddl_stop.send(true);
    }
}

struct Shared {
    cfg: MetaConfig,
    /// Backfills indexes for DDL jobs.
    reorg: Option<ReorgRef>,
    router: StoreRouter,
    board: Arc<RegionBoard>,
    local: EngineRef,
    leader: parking_lot::RwLock<Option<Arc<LeaderState>>>,
    /// Deadlock detection: each waiting transaction's holder, and when it started.
    waits: Mutex<WaitGraph>,
}

/// Default of `MetaConfig::scan_regions_page_max`.
pub const SCAN_REGIONS_PAGE_MAX_DEFAULT: usize = 4096;

/// Bound on recorded lock waits; past it new waits are not checked for deadlock (they
/// are still bounded by their lock wait timeout).
const MAX_WAIT_EDGES: usize = 100_000;
/// A wait edge older than this is dropped (its waiter's node may have died).
const WAIT_EDGE_TTL: Duration = Duration::from_secs(60);
/// Answers a TSO stream holds that its client has not read yet; past it the stream reads
/// no more requests. The client sends one at a time, so this is only met by misuse.
const TSO_STREAM_RESPONSES_MAX: usize = 4;

struct StaticResolver(HashMap<u64, String>);

#[async_trait::async_trait]
impl StoreResolver for StaticResolver {
    async fn resolve(&self, id: u64) -> Result<String, flotilla_client::ClientError> {
        self.0
            .get(&id)
            .cloned()
            .ok_or_else(|| flotilla_client::ClientError::Failed(format!("no meta member {id}")))
    }
}

/// A running meta member.
pub struct MetaNode {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The meta group's Raft thread; `stop` joins it off the async threads.
    driver: Option<StoreDriver>,
    shared: Arc<Shared>,
}

impl MetaNode {
    /// Opens the member's data, joins the meta group and serves on `listener`. Without a
    /// reorg worker, index jobs fail (and roll back) at their backfill.
    pub async fn start(
        cfg: MetaConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, MetaStartError> {
        Self::start_with_reorg(cfg, listener, None).await
    }

    /// Like `start`, with the worker that backfills indexes for DDL jobs this member runs
    /// while it leads.
    pub async fn start_with_reorg(
        cfg: MetaConfig,
        listener: tokio::net::TcpListener,
        reorg: Option<ReorgRef>,
    ) -> Result<Self, MetaStartError> {
        if !cfg.members.iter().any(|(id, _)| *id == cfg.member_id) {
            return Err(MetaStartError::Config(format!(
                "member {} is not in the member list",
                cfg.member_id
            )));
        }
        if cfg.gc_run_interval.is_zero() {
            return Err(MetaStartError::Config(
                "the GC run interval must be positive".into(),
            ));
        }
        if cfg.replication == 0 {
            return Err(MetaStartError::Config(
                "replication must be at least 1".into(),
            ));
        }
        let storage_err = |e: String| MetaStartError::Storage {
            dir: cfg.data_dir.display().to_string(),
            message: e,
        };
        cfg.raft_limits
            .validate(cfg.grpc_message_bytes_max)
            .map_err(MetaStartError::Config)?;
        let (raft_limits, grpc_message_bytes_max) = (cfg.raft_limits, cfg.grpc_message_bytes_max);
        let engine: EngineRef = Arc::new(
            FjallEngine::open(&cfg.data_dir.join("meta"), &FjallOptions::default())
                .map_err(|e| storage_err(e.to_string()))?,
        );
        let region = Region {
            id: META_REGION_ID,
            start_key: Default::default(),
            end_key: Default::default(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: cfg
                .members
                .iter()
                .map(|(id, _)| Peer {
                    id: *id,
                    store_id: *id,
                    role: PeerRole::Voter as i32,
                })
                .collect(),
            merging: None,
        };
        if engine
            .get(
                flotilla_storage::Cf::Raft,
                &flotilla_raftstore::keys::region_state_key(META_REGION_ID),
            )
            .map_err(|e| storage_err(e.to_string()))?
            .is_none()
        {
            Store::bootstrap_region(&engine, &region).map_err(|e| storage_err(e.to_string()))?;
        }
        let resolver = Arc::new(StaticResolver(cfg.members.iter().cloned().collect()));
        let transport = Arc::new(GrpcTransport::new(
            tokio::runtime::Handle::current(),
            RaftService::Meta,
            resolver,
            ClientConfig::default(),
            cfg.raft_limits,
        ));
        let mut store_cfg = StoreConfig::new(cfg.member_id);
        store_cfg.election_ticks = cfg.election_ticks;
        store_cfg.min_election_ticks = cfg.election_ticks;
        store_cfg.max_election_ticks = (cfg.election_ticks * 3 / 2).max(cfg.election_ticks + 1);
        store_cfg.tick_interval = cfg.tick_interval;
        let store = Store::open(store_cfg, engine.clone(), transport)
            .map_err(|e| storage_err(e.to_string()))?;
        let board = store.board();
        let driver = StoreDriver::spawn(
            store,
            DriverConfig {
                tick_interval: cfg.tick_interval,
                ..DriverConfig::default()
            },
        );
        let router = driver.router();
        if cfg.members.len() == 1 {
            let _ = router.send(StoreMsg::Campaign {
                region_id: META_REGION_ID,
            });
        }
        let shared = Arc::new(Shared {
            cfg,
            reorg,
            router,
            board,
            local: engine,
            leader: parking_lot::RwLock::new(None),
            waits: Mutex::new(WaitGraph::new(MAX_WAIT_EDGES, WAIT_EDGE_TTL)),
        });
        let addr = listener
            .local_addr()
            .map_err(|e| MetaStartError::Config(e.to_string()))?;
        let (shutdown, watcher) = watch::channel(false);
        let leadership = tokio::spawn(watch_leadership(shared.clone(), watcher.clone()));
        let member_heartbeat = tokio::spawn(member_heartbeat_loop(shared.clone(), watcher.clone()));
        let service = MetaService {
            shared: shared.clone(),
            raft_chunked_message_bytes_max: raft_limits.chunked_message_bytes_max,
            stopping: watcher.clone(),
        };
        let mut stop = watcher.clone();
        let server = tokio::spawn(async move {
            // Replies are small and latency-bound: no Nagle delay.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let result = tonic::transport::Server::builder()
                .add_service(
                    MetaServer::new(service).max_decoding_message_size(grpc_message_bytes_max),
                )
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!("meta RPC server failed: {e}");
            }
        });
        Ok(Self {
            addr,
            shutdown,
            tasks: vec![leadership, member_heartbeat, server],
            driver: Some(driver),
            shared,
        })
    }

    /// Before a planned stop: if this member leads, hands the leadership to a caught-up
    /// member, so clients meet a redirect rather than an election timeout. Waits at most
    /// an election timeout; returns whether this member no longer leads.
    pub async fn hand_over_leadership(&self) -> bool {
        let shared = &self.shared;
        let leads = || {
            shared
                .board
                .get(META_REGION_ID)
                .is_some_and(|e| e.is_leader)
        };
        if !leads() {
            return true;
        }
        let election = shared.cfg.tick_interval * shared.cfg.election_ticks as u32;
        for (to, _) in shared
            .cfg
            .members
            .iter()
            .filter(|(id, _)| *id != shared.cfg.member_id)
        {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let to = *to;
            let asked = shared.router.inspect(Box::new(move |store| {
                let _ = tx.send(store.transfer_target_ready(META_REGION_ID, to));
            }));
            if asked.is_err() || !rx.await.unwrap_or(false) {
                continue;
            }
            tracing::info!(to, "handing the meta leadership over before stopping");
            if shared
                .router
                .send(StoreMsg::TransferLeader {
                    region_id: META_REGION_ID,
                    to_peer_id: to,
                })
                .is_err()
            {
                return false;
            }
            let deadline = tokio::time::Instant::now() + election;
            while tokio::time::Instant::now() < deadline {
                if !leads() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return !leads();
        }
        false
    }

    /// Where the member serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and stops the meta group's Raft thread.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        // Joining the Raft thread waits out its round (a sync of the log): not on an async
        // worker, whose other tasks would wait too.
        if let Some(d) = self.driver.take() {
            let _ = tokio::task::spawn_blocking(move || drop(d)).await;
        }
    }
}

impl Drop for MetaNode {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        step_down(&self.shared);
    }
}

/// Ends this member's term's work (the DDL owner and the loops of the term) now, not when
/// the last handle on the leader state goes: a stopped member's DDL work must not run on
/// against a cluster that is going away.
fn step_down(shared: &Shared) {
    if let Some(old) = shared.leader.write().take() {
        let _ = old.ddl_stop.send(true);
    }
}

/// Follows this member's role: loads the state when it becomes leader (or its term
/// changes), drops it when it stops leading.
async fn watch_leadership(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => {
                step_down(&shared);
                return;
            }
        }
        let entry = shared.board.get(META_REGION_ID);
        let current_term = shared.leader.read().as_ref().map(|l| l.term);
        match entry {
            Some(e) if e.is_leader => {
                if current_term == Some(e.term) {
                    continue;
                }
                step_down(&shared);
                let s = shared.clone();
                let term = e.term;
                let region = e.region.clone();
                match tokio::task::spawn_blocking(move || activate(&s, term, region)).await {
                    Ok(Ok(state)) => {
                        tracing::info!(
                            member = shared.cfg.member_id,
                            term,
                            "meta leader is serving"
                        );
                        // This term's DDL owner: resumes the jobs the last leader left.
                        tokio::spawn(state.ddl.clone().run_owner(state.ddl_stop.subscribe()));
                        let state = Arc::new(state);
                        // Holds neither the member nor the state: it ends with the term.
                        tokio::spawn(gc_safe_point_loop(
                            shared.cfg.clone(),
                            Arc::downgrade(&state),
                            state.ddl_stop.subscribe(),
                        ));
                        tokio::spawn(cluster_version_loop(
                            shared.cfg.clone(),
                            Arc::downgrade(&state),
                            state.version_wake.clone(),
                            state.ddl_stop.subscribe(),
                        ));
                        *shared.leader.write() = Some(state);
                    }
                    Ok(Err(e)) => tracing::info!(term, "meta leader not ready yet: {e}"),
                    Err(e) => tracing::error!("meta activation task failed: {e}"),
                }
            }
            _ => {
                if current_term.is_some() {
                    tracing::info!(member = shared.cfg.member_id, "no longer the meta leader");
                    step_down(&shared);
                }
            }
        }
    }
}

/// Raises the cluster version while this term lasts, once every node that counts runs a
/// build that understands a newer one (see `state::next_cluster_version`).
async fn cluster_version_loop(
    cfg: MetaConfig,
    leader: std::sync::Weak<LeaderState>,
    wake: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CLUSTER_VERSION_INTERVAL) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(leader) = leader.upgrade() else {
            return;
        };
        let (current, (next, _)) = {
            let data = leader.data.lock();
            // Not before the first region is laid out: until then the stores that will
            // make up the cluster may not have registered yet.
            if data.bootstrap.is_none() {
                continue;
            }
            let nodes = node_versions(&cfg, &leader, &data);
            (
                data.cluster_version,
                next_cluster_version(data.cluster_version, cfg.binary_version, &nodes),
            )
        };
        if next <= current {
            continue;
        }
        // Persisted before any node hears of it: a later leader never goes back.
        let mut batch = WriteBatch::new();
        MetaData::persist_cluster_version(next, &mut batch);
        match MetaService::persist(&leader, batch).await {
            Ok(()) => {
                let mut data = leader.data.lock();
                data.cluster_version = data.cluster_version.max(next);
                leader.ddl.set_cluster_version(data.cluster_version);
                tracing::info!(from = current, to = next, "cluster version raised");
            }
            Err(e) => tracing::warn!("cluster version not raised (tried again): {e}"),
        }
    }
}

/// Every node that counts in the cluster version: each store until it is removed (a
/// store that is down may come back with its build), each meta member, and each SQL node
/// that may hold a schema lease.
fn node_versions(cfg: &MetaConfig, leader: &LeaderState, data: &MetaData) -> Vec<NodeVersion> {
    let mut nodes: Vec<NodeVersion> = Vec::new();
    let mut stores: Vec<&StoreRec> = data
        .stores
        .values()
        .filter(|r| r.store.state() != StoreState::Tombstone)
        .collect();
    stores.sort_by_key(|r| r.store.id);
    for rec in stores {
        nodes.push(NodeVersion {
            node: format!("store {}", rec.store.id),
            heard: rec.last_heartbeat.is_some(),
            reported: rec.binary_version,
        });
    }
    let members = leader.member_versions.lock();
    for (id, _) in &cfg.members {
        let (heard, reported) = if *id == cfg.member_id {
            (true, version::to_report(cfg.binary_version))
        } else {
            match members.get(id) {
                Some(v) => (true, *v),
                None => (false, None),
            }
        };
        nodes.push(NodeVersion {
            node: format!("meta member {id}"),
            heard,
            reported,
        });
    }
    for (id, heard, reported) in leader.ddl.leases().binary_versions() {
        nodes.push(NodeVersion {
            node: format!("SQL node {id:x}"),
            heard,
            reported,
        });
    }
    nodes
}

/// Reports this member's build version to the meta leader while it does not lead, so
/// the cluster version rises only once every member understands the newer one. A member
/// emulating a build from before versions sends nothing, as those builds did.
async fn member_heartbeat_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(binary_version) = version::to_report(shared.cfg.binary_version) else {
        return;
    };
    let others: Vec<String> = shared
        .cfg
        .members
        .iter()
        .filter(|(id, _)| *id != shared.cfg.member_id)
        .map(|(_, a)| a.clone())
        .collect();
    if others.is_empty() {
        return;
    }
    let client = match flotilla_client::MetaClient::new(
        others,
        ClientConfig {
            retry_budget: CLUSTER_VERSION_INTERVAL,
            ..ClientConfig::default()
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("meta member heartbeat: no client: {e}");
            return;
        }
    };
    // The first report goes at once (the client retries until a leader answers, within
    // its budget): a new cluster bootstraps at the versions heard by then.
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(CLUSTER_VERSION_INTERVAL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        first = false;
        if shared.leader.read().is_some() {
            continue;
        }
        match client
            .member_heartbeat(shared.cfg.member_id, Some(binary_version))
            .await
        {
            Ok(Some(cluster)) if cluster > binary_version => tracing::error!(
                "{}",
                version::too_old(
                    &format!("meta member {}", shared.cfg.member_id),
                    binary_version,
                    cluster
                )
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!("meta member heartbeat: {e}"),
        }
    }
}

/// Moves the GC safe point on every `gc_run_interval` while this term lasts (see
/// `next_gc_safe_point`).
async fn gc_safe_point_loop(
    cfg: MetaConfig,
    leader: std::sync::Weak<LeaderState>,
    mut stop: watch::Receiver<bool>,
) {
    if cfg.gc_life_time.is_zero() {
        tracing::info!("GC is off (life time 0): the safe point stays where it is");
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.gc_run_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(leader) = leader.upgrade() else {
            return;
        };
        match next_gc_safe_point(&cfg, &leader).await {
            Ok(Some(ts)) => tracing::debug!(safe_point = ts, "GC safe point moved on"),
            Ok(None) => {}
            Err(e) => tracing::warn!("GC safe point not moved (tried again next run): {e}"),
        }
    }
}

/// The GC safe point now, persisted through the meta group when it moves on (returned
/// then): `gc_life_time` before now, but never past the oldest snapshot a SQL node has
/// open or is about to take (its schema lease reports it), nor to the oldest lock a store
/// holds (a lock's fate is read from its primary's records).
async fn next_gc_safe_point(
    cfg: &MetaConfig,
    leader: &Arc<LeaderState>,
) -> Result<Option<u64>, String> {
    let l = leader.clone();
    let now = tokio::task::spawn_blocking(move || l.tso.next_ts())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("no timestamp: {e}"))?;
    let life_ms = cfg.gc_life_time.as_millis() as u64;
    let by_life = Timestamp::compose(now.physical_ms().saturating_sub(life_ms), 0);
    let by_readers = Timestamp(leader.ddl.leases().oldest_start_ts());
    let safe_point = {
        let data = leader.data.lock();
        let bounds = gc_store_bounds(cfg, leader, &data);
        // Below the lock: its own transaction's records sit at and above its start_ts.
        let by_locks = match bounds.oldest_lock_ts {
            u64::MAX => Timestamp::MAX,
            ts => Timestamp(ts).prev(),
        };
        let safe_point = by_life.min(by_readers).min(by_locks).0;
        if safe_point <= data.gc_safe_point {
            return Ok(None);
        }
        safe_point
    };
    // Persisted before any store hears of it: a later leader never hands out a lower one.
    let mut batch = WriteBatch::new();
    MetaData::persist_gc_safe_point(safe_point, &mut batch);
    MetaService::persist(leader, batch)
        .await
        .map_err(|e| e.message().to_string())?;
    leader.data.lock().raise_gc_safe_point(safe_point);
    Ok(Some(safe_point))
}

/// GC's bounds from the stores' reports (see `MetaData::gc_store_bounds`): a store's locks
/// count until its replicas would be replaced (`replica_repair_after`; for ever with
/// repair off), as its replicas may hold a lock no other store reports; what it refuses
/// to read counts while it may lead a region (until it is down).
fn gc_store_bounds(cfg: &MetaConfig, leader: &LeaderState, data: &MetaData) -> GcStoreBounds {
    let silent_for = |rec: &StoreRec| {
        rec.last_heartbeat
            .map_or_else(|| leader.since.elapsed(), |t| t.elapsed())
    };
    // A removed store holds no replica, so neither a lock nor a region it may lead.
    let removed = |rec: &StoreRec| rec.store.state() == StoreState::Tombstone;
    data.gc_store_bounds(
        |rec| {
            !removed(rec)
                && (cfg.replica_repair_after.is_zero()
                    || silent_for(rec) < cfg.replica_repair_after)
        },
        |rec| !removed(rec) && silent_for(rec) < cfg.store_down_after,
    )
}

fn activate(shared: &Shared, term: u64, region: Region) -> Result<LeaderState, String> {
    // Everything committed before this term must be applied here before the state is
    // read: a ReadIndex answers only then.
    let (tx, rx) = std::sync::mpsc::channel();
    shared
        .router
        .send(StoreMsg::ReadIndex {
            region_id: META_REGION_ID,
            epoch: region.epoch.unwrap_or_default(),
            term: 0,
            cb: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })
        .map_err(|e| e.to_string())?;
    rx.recv_timeout(Duration::from_secs(5))
        .map_err(|_| "read index timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let engine = Arc::new(RegionEngine::new(
        shared.local.clone(),
        shared.router.clone(),
        region,
        term,
        Duration::from_secs(5),
    ));
    let erased: EngineRef = engine.clone();
    let tso =
        LocalTso::open(erased.clone(), shared.cfg.tso_window_ms).map_err(|e| e.to_string())?;
    let catalog = Arc::new(
        LocalCatalog::open_with_limits(erased.clone(), shared.cfg.ddl.catalog)
            .map_err(|e| e.to_string())?,
    );
    let ddl = JobQueue::open(
        erased,
        catalog.clone(),
        shared.cfg.ddl.clone(),
        shared.reorg.clone(),
    )
    .map_err(|e| e.to_string())?;
    let mut data = MetaData::load(engine.as_ref()).map_err(|e| e.to_string())?;
    data.location_labels = shared.cfg.location_labels.clone();
    if data.cluster_version > shared.cfg.binary_version {
        // This build would misread what the cluster now writes: hand the leadership to a
        // member that may be newer, and never serve.
        if let Some((to, _)) = shared
            .cfg
            .members
            .iter()
            .find(|(id, _)| *id != shared.cfg.member_id)
        {
            let _ = shared.router.send(StoreMsg::TransferLeader {
                region_id: META_REGION_ID,
                to_peer_id: *to,
            });
        }
        return Err(version::too_old(
            &format!("meta member {}", shared.cfg.member_id),
            shared.cfg.binary_version,
            data.cluster_version,
        ));
    }
    ddl.set_cluster_version(data.cluster_version);
    let (ddl_stop, _) = watch::channel(false);
    Ok(LeaderState {
        term,
        engine,
        tso,
        catalog,
        ddl,
        ddl_stop,
        data: Mutex::new(data),
        last_balance: Mutex::new(None),
        since: Instant::now(),
        repairs: Mutex::new(HashMap::new()),
        moves: Mutex::new(HashMap::new()),
        last_move: Mutex::new(None),
        member_versions: Mutex::new(HashMap::new()),
        version_wake: Arc::new(tokio::sync::Notify::new()),
        merge: Mutex::new(MergeState::default()),
    })
}

#[derive(Clone)]
struct MetaService {
    shared: Arc<Shared>,
    /// See `RaftMessageLimits::chunked_message_bytes_max`.
    raft_chunked_message_bytes_max: usize,
    /// Set when the member stops: open Raft streams end (see the store's service).
    stopping: watch::Receiver<bool>,
}

fn ok_header() -> Option<ResponseHeader> {
    None
}

/// An operator's store-state change as its answer carries it: why it was refused, or
/// the store afterwards.
fn refused_or_store(outcome: Result<StoreInfo, String>) -> (String, Option<StoreInfo>) {
    match outcome {
        Ok(info) => (String::new(), Some(info)),
        Err(why) => (why, None),
    }
}

/// A store as `GetStores` and the removal calls show it.
fn store_info(rec: &StoreRec) -> StoreInfo {
    StoreInfo {
        store: Some(rec.store.clone()),
        stats: Some(rec.stats),
        last_heartbeat_ago_ms: rec
            .last_heartbeat
            .map(|t| t.elapsed().as_millis() as u64)
            .unwrap_or(u64::MAX),
        binary_version: rec
            .last_heartbeat
            .map(|_| version::reported(rec.binary_version)),
    }
}

impl MetaService {
    /// The merge step for `region_id` (see `crate::merge`), once every node understands
    /// merges (`Feature::RegionMerge`). `quiet`: no peer of it is behind. `empty`: what
    /// its leader found of a frozen region (`merge_source_empty`).
    fn merge_step(
        &self,
        leader: &LeaderState,
        data: &MetaData,
        region_id: u64,
        quiet: bool,
        empty: Option<bool>,
    ) -> Option<MergeStep> {
        let cfg = &self.shared.cfg;
        if !version::Feature::RegionMerge.active_at(data.cluster_version) {
            return None;
        }
        let moving = leader.moves.lock().contains_key(&region_id)
            || leader.repairs.lock().contains_key(&region_id);
        let mut merge = leader.merge.lock();
        let catalog = leader.catalog.snapshot();
        if merge.live.as_ref().map(|(v, _)| *v) != Some(catalog.version) {
            let ids = catalog.tables.values().map(|t| t.storage_id);
            merge.live = Some((catalog.version, live_ranges(ids)));
        }
        let bounds = MergeConfig {
            after: cfg.region_merge_after,
            max: cfg.region_merges_max,
        };
        merge.step(
            data,
            region_id,
            quiet && !moving,
            empty,
            bounds,
            cfg.replication,
            Instant::now(),
        )
    }

    /// The peer that should take over the leadership of `region_id`, if leaders are
    /// unbalanced and no transfer was asked within `leader_balance_interval`.
    fn leader_balance(
        &self,
        leader: &LeaderState,
        data: &MetaData,
        region_id: u64,
    ) -> Option<Peer> {
        let interval = self.shared.cfg.leader_balance_interval;
        if interval.is_zero() {
            return None;
        }
        let mut last = leader.last_balance.lock();
        if last.is_some_and(|t| t.elapsed() < interval) {
            return None;
        }
        let target = data
            .leader_transfer_target(region_id, |store_id| self.store_placeable(data, store_id))?;
        *last = Some(Instant::now());
        Some(target)
    }

    /// Replica repair: the next step for the region whose leader just reported, if it has
    /// a replica on a store down for `replica_repair_after` and no step of its own is in
    /// progress, within `replica_repairs_max` steps cluster-wide. A step counts as done
    /// once the region's conf_ver moves on; one not done within `REPAIR_STEP_TIMEOUT` is
    /// asked again.
    fn replica_repair(
        &self,
        leader: &LeaderState,
        data: &mut MetaData,
        region_id: u64,
        batch: &mut WriteBatch,
    ) -> Option<ReplacePeer> {
        let after = self.shared.cfg.replica_repair_after;
        if after.is_zero() {
            return None;
        }
        let mut repairs = leader.repairs.lock();
        repairs.retain(|id, (ver, at)| {
            at.elapsed() < REPAIR_STEP_TIMEOUT && data.conf_ver(*id) == Some(*ver)
        });
        if repairs.contains_key(&region_id) || repairs.len() >= self.shared.cfg.replica_repairs_max
        {
            return None;
        }
        let down_after = self.shared.cfg.store_down_after;
        let heard = |store_id: u64| data.stores.get(&store_id).and_then(|s| s.last_heartbeat);
        let step = data.replica_repair_step(
            region_id,
            self.shared.cfg.replication,
            |s| match heard(s) {
                Some(t) => t.elapsed() >= after,
                None => leader.since.elapsed() >= after,
            },
            |s| {
                heard(s).is_some_and(|t| t.elapsed() < down_after)
                    && data.store_state(s) == StoreState::Up
            },
        )?;
        let ReplicaRepair {
            remove,
            add_on_store,
        } = step;
        let add = add_on_store.map(|store_id| Peer {
            id: data.alloc(1, batch),
            store_id,
            role: PeerRole::Voter as i32,
        });
        tracing::info!(
            region_id,
            remove_peer = remove.id,
            store = remove.store_id,
            add_store = ?add.map(|p| p.store_id),
            "replica repair: a replica is on a store down too long, or a learner is not needed"
        );
        repairs.insert(region_id, (data.conf_ver(region_id)?, Instant::now()));
        Some(ReplacePeer {
            remove: Some(remove),
            add,
            add_learner: None,
        })
    }

    /// Whether new replicas and leaders may go to `store_id`: it is live and not being
    /// removed.
    fn store_placeable(&self, data: &MetaData, store_id: u64) -> bool {
        data.store_state(store_id) == StoreState::Up && self.store_live(data, store_id)
    }

    /// Whether `store_id` has sent a heartbeat within `store_down_after`.
    fn store_live(&self, data: &MetaData, store_id: u64) -> bool {
        let down_after = self.shared.cfg.store_down_after;
        data.stores
            .get(&store_id)
            .and_then(|s| s.last_heartbeat)
            .is_some_and(|t| t.elapsed() < down_after)
    }

    /// The next step of the replica move of `region_id`, or `None` if it has none in
    /// progress. `pending` is the leader's list of peers its log does not yet reach.
    fn drive_replica_move(
        &self,
        leader: &LeaderState,
        data: &MetaData,
        region_id: u64,
        pending: &[u64],
    ) -> Option<MoveStep> {
        let mut moves = leader.moves.lock();
        let op = moves.get_mut(&region_id)?;
        let conf_ver = data.conf_ver(region_id).unwrap_or(0);
        let (source, learner) = (op.source, op.learner);
        let plan = if op.started.elapsed() >= REPLICA_MOVE_TIMEOUT {
            MovePlan::GiveUp("not done in time")
        } else {
            // A target being removed meanwhile is given up, and a leader is never handed
            // to a store being removed.
            data.replica_move_plan(region_id, source, learner, pending, |s| {
                self.store_placeable(data, s)
            })
        };
        let step = match plan {
            MovePlan::AddLearner => MoveStep::Change(ReplacePeer {
                add_learner: Some(learner),
                ..Default::default()
            }),
            MovePlan::CatchUp | MovePlan::LeaveJoint => return Some(MoveStep::Wait),
            // Asked each heartbeat until the leadership moves (the store ignores it while
            // a transfer is under way).
            MovePlan::TransferLeader(to) => return Some(MoveStep::Transfer(to)),
            MovePlan::Promote => MoveStep::Change(ReplacePeer {
                remove: Some(source),
                add: Some(Peer {
                    role: PeerRole::Voter as i32,
                    ..learner
                }),
                add_learner: None,
            }),
            MovePlan::RemoveSource => MoveStep::Change(ReplacePeer {
                remove: Some(source),
                ..Default::default()
            }),
            MovePlan::Done => {
                tracing::info!(
                    region_id,
                    source_store = source.store_id,
                    target_store = learner.store_id,
                    "replica moved"
                );
                moves.remove(&region_id);
                return Some(MoveStep::Wait);
            }
            MovePlan::GiveUp(why) => {
                // Its learner, if added, is removed by a later heartbeat.
                tracing::warn!(
                    region_id,
                    source_store = source.store_id,
                    target_store = learner.store_id,
                    "replica move given up: {why}"
                );
                moves.remove(&region_id);
                return Some(MoveStep::Wait);
            }
        };
        if op
            .asked
            .is_some_and(|(v, at)| v == conf_ver && at.elapsed() < REPAIR_STEP_TIMEOUT)
        {
            return Some(MoveStep::Wait);
        }
        op.asked = Some((conf_ver, Instant::now()));
        Some(step)
    }

    /// Replica balance, placement and store removal: starts a move of `region_id`'s
    /// replica (its first step: the new learner) off a store being removed, or else to
    /// spread the region better over the location labels, or else to balance the
    /// stores, or removes a learner the region no longer needs (one left by a move that
    /// was given up, or by a former meta leader's), at most once per
    /// `replica_balance_interval` (a second for removals and placement while balance is
    /// off) and within `replica_moves_max` moves in progress.
    fn start_replica_move(
        &self,
        leader: &LeaderState,
        data: &mut MetaData,
        region_id: u64,
        batch: &mut WriteBatch,
    ) -> Option<ReplacePeer> {
        let interval = self.shared.cfg.replica_balance_interval;
        // Store removal and placement move replicas even with balance off, at a move a
        // second.
        let balance = !interval.is_zero();
        let pace = if balance {
            interval
        } else {
            Duration::from_secs(1)
        };
        let mut last = leader.last_move.lock();
        if last.is_some_and(|t| t.elapsed() < pace) {
            return None;
        }
        let replication = self.shared.cfg.replication;
        let live = |s: u64| self.store_live(data, s);
        if let Some(stray) = data.replica_repair_step(region_id, replication, |_| false, live) {
            *last = Some(Instant::now());
            tracing::info!(
                region_id,
                peer = stray.remove.id,
                store = stray.remove.store_id,
                "removing a learner the region no longer needs"
            );
            return Some(ReplacePeer {
                remove: Some(stray.remove),
                ..Default::default()
            });
        }
        let mut moves = leader.moves.lock();
        // A move whose region no longer reports (every store of it down) would hold its
        // slot for the rest of this term.
        moves.retain(|_, op| op.started.elapsed() < REPLICA_MOVE_TIMEOUT);
        if moves.len() >= self.shared.cfg.replica_moves_max {
            return None;
        }
        let moving: Vec<(u64, u64)> = moves
            .values()
            .map(|op| (op.source.store_id, op.learner.store_id))
            .collect();
        let placeable = |s: u64| self.store_placeable(data, s);
        let (mv, why) = if let Some(mv) =
            data.drain_move(region_id, replication, placeable, &moving)
        {
            (mv, "store removal")
        } else if let Some(mv) = data.placement_move(region_id, replication, placeable, &moving) {
            (mv, "replica placement (location labels)")
        } else if balance {
            (
                data.replica_move(region_id, replication, placeable, &moving)?,
                "replica balance",
            )
        } else {
            return None;
        };
        let learner = Peer {
            id: data.alloc(1, batch),
            store_id: mv.target_store,
            role: PeerRole::Learner as i32,
        };
        let conf_ver = data.conf_ver(region_id).unwrap_or(0);
        tracing::info!(
            region_id,
            source_store = mv.source.store_id,
            target_store = mv.target_store,
            "{why}: moving a replica"
        );
        moves.insert(
            region_id,
            ReplicaMoveOp {
                source: mv.source,
                learner,
                started: Instant::now(),
                asked: Some((conf_ver, Instant::now())),
            },
        );
        *last = Some(Instant::now());
        Some(ReplacePeer {
            add_learner: Some(learner),
            ..Default::default()
        })
    }

    /// An operator's change of store `store_id`'s state (removal, its cancel): `decide`
    /// sees the state and returns the new one (`None`: left as it is) or why the change
    /// is refused (then nothing changes). Returns the store as it is afterwards.
    async fn change_store_state(
        leader: &Arc<LeaderState>,
        store_id: u64,
        decide: impl FnOnce(&MetaData, StoreState) -> Result<Option<StoreState>, String>,
    ) -> Result<Result<StoreInfo, String>, Status> {
        let mut batch = WriteBatch::new();
        let info = {
            let mut data = leader.data.lock();
            let Some(rec) = data.stores.get(&store_id) else {
                return Ok(Err(format!("store {store_id} is not part of this cluster")));
            };
            let mut store = rec.store.clone();
            match decide(&data, store.state()) {
                Err(why) => return Ok(Err(why)),
                Ok(None) => {}
                Ok(Some(state)) => {
                    store.set_state(state);
                    data.put_store(store, &mut batch);
                }
            }
            store_info(&data.stores[&store_id])
        };
        Self::persist(leader, batch).await?;
        Ok(Ok(info))
    }

    /// The leader's state, or the header telling the caller where to go.
    fn leader(&self) -> Result<Arc<LeaderState>, ResponseHeader> {
        if let Some(l) = self.shared.leader.read().clone() {
            return Ok(l);
        }
        let leader_address = self
            .shared
            .board
            .get(META_REGION_ID)
            .and_then(|e| e.leader)
            .filter(|p| p.store_id != self.shared.cfg.member_id)
            .and_then(|p| {
                self.shared
                    .cfg
                    .members
                    .iter()
                    .find(|(id, _)| *id == p.store_id)
                    .map(|(_, a)| a.clone())
            })
            .unwrap_or_default();
        Err(ResponseHeader {
            error: "not the meta leader (or not ready yet)".into(),
            leader_address,
        })
    }

    /// `count` consecutive timestamps, for the unary call and the stream alike.
    async fn tso_batch(&self, count: u32) -> Result<TsoResponse, Status> {
        let leader = match self.leader() {
            Ok(l) => l,
            Err(header) => {
                return Ok(TsoResponse {
                    header: Some(header),
                    ..Default::default()
                });
            }
        };
        let count = count.max(1);
        if count > LocalTso::BATCH_MAX {
            return Err(Status::invalid_argument(format!(
                "a TSO request takes at most {} timestamps, not {count}",
                LocalTso::BATCH_MAX
            )));
        }
        // Within the persisted window a batch is a counter bump; only raising the window
        // writes (through the meta group's log) and so leaves the async thread.
        let first = match leader.tso.try_next_batch(count) {
            Some(ts) => Ok(ts),
            None => {
                let l = leader.clone();
                tokio::task::spawn_blocking(move || l.tso.next_batch(count))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
            }
        };
        Ok(match first {
            Ok(ts) => TsoResponse {
                header: ok_header(),
                first_ts: ts.0,
                count,
            },
            Err(e) => TsoResponse {
                header: Some(ResponseHeader {
                    error: format!("tso: {e}"),
                    leader_address: String::new(),
                }),
                ..Default::default()
            },
        })
    }

    /// Persists `batch` through the meta group (blocking; run off the async workers).
    async fn persist(leader: &Arc<LeaderState>, batch: WriteBatch) -> Result<(), Status> {
        if batch.is_empty() {
            return Ok(());
        }
        let l = leader.clone();
        tokio::task::spawn_blocking(move || l.engine.write(batch, true))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(format!("meta write failed: {e}")))
    }
}

macro_rules! leader_or_redirect {
    ($self:ident, $resp:ident) => {
        match $self.leader() {
            Ok(l) => l,
            Err(header) => {
                #[allow(clippy::needless_update)]
                return Ok(Response::new($resp {
                    header: Some(header),
                    ..Default::default()
                }));
            }
        }
    };
}

fn catalog_error_kind(e: &CatalogError) -> u32 {
    match e {
        CatalogError::Invalid(_) => 0,
        CatalogError::VersionMismatch { .. } => 1,
        CatalogError::Storage(_) | CatalogError::Unavailable(_) | CatalogError::Exhausted(_) => 2,
    }
}

#[tonic::async_trait]
impl Meta for MetaService {
    async fn raft(
        &self,
        request: Request<flotilla_proto::raft_serverpb::RaftMessageBatch>,
    ) -> Result<Response<RaftDoneMeta>, Status> {
        for m in request.into_inner().messages {
            // A full mailbox drops the message; Raft retransmits.
            let _ = self.shared.router.send(StoreMsg::Raft(m));
        }
        Ok(Response::new(RaftDoneMeta {}))
    }

    async fn raft_stream(
        &self,
        request: Request<tonic::Streaming<flotilla_proto::raft_serverpb::RaftMessageBatch>>,
    ) -> Result<Response<RaftDoneMeta>, Status> {
        flotilla_client::deliver_raft_stream(
            request.into_inner(),
            &self.shared.router,
            self.stopping.clone(),
        )
        .await?;
        Ok(Response::new(RaftDoneMeta {}))
    }

    async fn raft_chunks(
        &self,
        request: Request<tonic::Streaming<flotilla_proto::raft_serverpb::RaftMessageChunk>>,
    ) -> Result<Response<RaftDoneMeta>, Status> {
        flotilla_client::deliver_raft_chunks(
            request.into_inner(),
            &self.shared.router,
            self.raft_chunked_message_bytes_max,
            self.stopping.clone(),
        )
        .await?;
        Ok(Response::new(RaftDoneMeta {}))
    }

    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        let leader = self
            .shared
            .board
            .get(META_REGION_ID)
            .and_then(|e| e.leader)
            .map(|p| p.store_id);
        let members = self
            .shared
            .cfg
            .members
            .iter()
            .map(|(id, address)| Member {
                id: *id,
                address: address.clone(),
                is_leader: Some(*id) == leader,
            })
            .collect();
        Ok(Response::new(MembersResponse {
            header: ok_header(),
            members,
        }))
    }

    async fn member_heartbeat(
        &self,
        request: Request<MemberHeartbeatRequest>,
    ) -> Result<Response<MemberHeartbeatResponse>, Status> {
        let leader = leader_or_redirect!(self, MemberHeartbeatResponse);
        let req = request.into_inner();
        if !self
            .shared
            .cfg
            .members
            .iter()
            .any(|(id, _)| *id == req.member_id)
        {
            return Err(Status::invalid_argument(format!(
                "meta member {} is not in the member list",
                req.member_id
            )));
        }
        let before = leader
            .member_versions
            .lock()
            .insert(req.member_id, req.binary_version);
        if before != Some(req.binary_version) {
            leader.version_wake.notify_one();
        }
        let cluster_version = leader.data.lock().cluster_version;
        Ok(Response::new(MemberHeartbeatResponse {
            header: ok_header(),
            cluster_version: Some(cluster_version),
        }))
    }

    async fn tso(&self, request: Request<TsoRequest>) -> Result<Response<TsoResponse>, Status> {
        self.tso_batch(request.into_inner().count)
            .await
            .map(Response::new)
    }

    type TsoStreamStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<TsoResponse, Status>> + Send + 'static>,
    >;

    async fn tso_stream(
        &self,
        request: Request<tonic::Streaming<TsoRequest>>,
    ) -> Result<Response<Self::TsoStreamStream>, Status> {
        let mut requests = request.into_inner();
        let (responses, rx) = tokio::sync::mpsc::channel(TSO_STREAM_RESPONSES_MAX);
        let service = self.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    r = requests.message() => r,
                _ = stopping.wait_for(|s| *s) => Ok(None),
                };
                // The client closed its side, or the stream broke, or this member stops.
                let Ok(Some(req)) = next else { return };
                // In order, one at a time: at the bound of unread responses this stops
                // reading requests, and the client waits in HTTP/2 flow control.
                let resp = service.tso_batch(req.count).await;
                if responses.send(resp).await.is_err() {
                    return;
                }
            }
        });
        let outbound =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn store_heartbeat(
        &self,
        request: Request<StoreHeartbeatRequest>,
    ) -> Result<Response<StoreHeartbeatResponse>, Status> {
        let leader = leader_or_redirect!(self, StoreHeartbeatResponse);
        let req = request.into_inner();
        let mut store = req.store.unwrap_or_default();
        let stats = req.stats.unwrap_or_default();
        let binary_version = version::reported(req.binary_version);
        let mut batch = WriteBatch::new();
        // The cluster version a new cluster starts at, persisted with its first region.
        let mut start_version = None;
        let mut version_news = false;
        let (store_id, bootstrap_region, bootstrapped, gc_safe_point, gc_collect_point, cluster) = {
            let mut data = leader.data.lock();
            // Refused before anything of it is recorded: to this leader it stays silent,
            // and its replicas are replaced once it is down long enough.
            if binary_version < data.cluster_version {
                let who = match store.id {
                    0 => format!("a new store at {}", store.address),
                    id => format!("store {id}"),
                };
                return Err(Status::failed_precondition(version::too_old(
                    &who,
                    binary_version,
                    data.cluster_version,
                )));
            }
            if store.id == 0 {
                store.id = data.alloc(1, &mut batch);
                tracing::info!(store_id = store.id, address = %store.address, "new store registered");
            }
            let known = data.stores.get(&store.id).map(|r| r.store.clone());
            // The state is the meta service's to set (store removal), not the store's.
            if let Some(known) = &known {
                store.state = known.state;
            }
            if known.as_ref() != Some(&store) {
                data.put_store(store.clone(), &mut batch);
            }
            for id in data.drained_stores() {
                if let Some(mut drained) = data.stores.get(&id).map(|r| r.store.clone()) {
                    drained.set_state(StoreState::Tombstone);
                    data.put_store(drained, &mut batch);
                    tracing::info!(store_id = id, "store removed: it holds no replica any more");
                }
            }
            if let Some(rec) = data.stores.get_mut(&store.id) {
                rec.stats = stats;
                rec.last_heartbeat = Some(Instant::now());
                version_news = rec.binary_version != req.binary_version;
                rec.binary_version = req.binary_version;
            }
            if data.bootstrap.is_none() {
                let down_after = self.shared.cfg.store_down_after;
                let mut live: Vec<u64> = data
                    .stores
                    .values()
                    .filter(|r| r.last_heartbeat.is_some_and(|t| t.elapsed() < down_after))
                    .map(|r| r.store.id)
                    .collect();
                live.sort_unstable();
                if live.len() >= self.shared.cfg.replication {
                    let live = data.spread_pick(&live, self.shared.cfg.replication);
                    let region = data.plan_bootstrap(&live, &mut batch);
                    // A new cluster holds no data a newer behaviour could misread: it
                    // starts at the oldest version of the nodes heard from so far, not
                    // at the base version for `cluster_version_loop` to raise a second
                    // later (DDL gated on a version would be refused until then). A node
                    // older than that is refused when it joins, as after any rise.
                    let nodes = node_versions(&self.shared.cfg, &leader, &data);
                    let (v, _) = next_cluster_version(
                        data.cluster_version,
                        self.shared.cfg.binary_version,
                        &nodes,
                    );
                    if v > data.cluster_version {
                        MetaData::persist_cluster_version(v, &mut batch);
                        start_version = Some(v);
                    }
                    tracing::info!(
                        region_id = region.id,
                        stores = ?live,
                        cluster_version = v,
                        "cluster bootstrapped"
                    );
                }
            }
            let bootstrap_region = data
                .bootstrap
                .clone()
                .filter(|r| stats.is_empty && r.peers.iter().any(|p| p.store_id == store.id));
            // Collect only up to what every store that may lead a region refuses to read
            // below: a new leader must never serve a read a removed version would answer.
            let installed = gc_store_bounds(&self.shared.cfg, &leader, &data).installed;
            (
                store.id,
                bootstrap_region,
                data.bootstrap.is_some(),
                data.gc_safe_point,
                data.gc_safe_point.min(installed),
                data.cluster_version,
            )
        };
        Self::persist(&leader, batch).await?;
        // Raised only once persisted: no node may hear of a version a later leader
        // would not find.
        let cluster = match start_version {
            Some(v) => {
                let mut data = leader.data.lock();
                data.cluster_version = data.cluster_version.max(v);
                leader.ddl.set_cluster_version(data.cluster_version);
                data.cluster_version
            }
            None => cluster,
        };
        if version_news {
            leader.version_wake.notify_one();
        }
        Ok(Response::new(StoreHeartbeatResponse {
            header: ok_header(),
            store_id,
            bootstrap_region,
            cluster_bootstrapped: bootstrapped,
            gc_safe_point,
            gc_collect_point,
            cluster_version: Some(cluster),
        }))
    }

    async fn region_heartbeat(
        &self,
        request: Request<RegionHeartbeatRequest>,
    ) -> Result<Response<RegionHeartbeatResponse>, Status> {
        let leader = leader_or_redirect!(self, RegionHeartbeatResponse);
        let req = request.into_inner();
        let Some(region) = req.region else {
            return Err(Status::invalid_argument(
                "region heartbeat without a region",
            ));
        };
        let mut batch = WriteBatch::new();
        let (transfer_leader, replace_peer, merge) = {
            let mut data = leader.data.lock();
            let id = region.id;
            data.upsert_region(region, req.leader, &mut batch);
            data.regions.update(id, |rec| {
                rec.keys = req.approximate_keys;
                rec.bytes = req.approximate_bytes;
            });
            // A split's report (term 0) says nothing of which peers are pending: moves
            // go on only with a leader's periodic heartbeat.
            let periodic = req.term != 0;
            let pending = if periodic {
                data.pending_peers(id, req.pending_peers.as_ref().map(|p| &p.ids[..]))
            } else {
                Vec::new()
            };
            let moving = if periodic {
                self.drive_replica_move(&leader, &data, id, &pending)
            } else {
                leader
                    .moves
                    .lock()
                    .contains_key(&id)
                    .then_some(MoveStep::Wait)
            };
            match moving {
                Some(MoveStep::Wait) => (None, None, None),
                Some(MoveStep::Transfer(to)) => (Some(to), None, None),
                Some(MoveStep::Change(step)) => (None, Some(step), None),
                None => {
                    // A region frozen for a merge takes no membership change.
                    let frozen = data
                        .regions
                        .get(&id)
                        .is_some_and(|r| flotilla_raftstore::is_merging(&r.region));
                    let transfer = self.leader_balance(&leader, &data, id);
                    let mut replace = None;
                    if transfer.is_none() && !frozen {
                        replace = self.replica_repair(&leader, &mut data, id, &mut batch);
                    }
                    if transfer.is_none() && replace.is_none() && periodic && !frozen {
                        replace = self.start_replica_move(&leader, &mut data, id, &mut batch);
                    }
                    let mut merge = None;
                    if transfer.is_none() && replace.is_none() && periodic {
                        merge = self.merge_step(
                            &leader,
                            &data,
                            id,
                            pending.is_empty(),
                            req.merge_source_empty,
                        );
                    }
                    (transfer, replace, merge)
                }
            }
        };
        let (prepare_merge, commit_merge, rollback_merge) = match merge {
            None => (None, None, None),
            Some(MergeStep::Prepare) => (Some(true), None, None),
            Some(MergeStep::Commit { source, epoch }) => (
                None,
                Some(CommitMerge {
                    source: Some(source),
                    epoch: Some(epoch),
                }),
                None,
            ),
            Some(MergeStep::Rollback) => (None, None, Some(true)),
        };
        Self::persist(&leader, batch).await?;
        Ok(Response::new(RegionHeartbeatResponse {
            header: ok_header(),
            transfer_leader,
            replace_peer,
            prepare_merge,
            commit_merge,
            rollback_merge,
        }))
    }

    async fn get_region(
        &self,
        request: Request<GetRegionRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let leader = leader_or_redirect!(self, GetRegionResponse);
        let key = request.into_inner().key;
        let info = leader.data.lock().region_of(&key).map(|r| r.info());
        Ok(Response::new(GetRegionResponse {
            header: ok_header(),
            info,
        }))
    }

    async fn scan_regions(
        &self,
        request: Request<ScanRegionsRequest>,
    ) -> Result<Response<ScanRegionsResponse>, Status> {
        let leader = leader_or_redirect!(self, ScanRegionsResponse);
        let req = request.into_inner();
        let page_max = self.shared.cfg.scan_regions_page_max.max(1);
        let limit = match req.limit as usize {
            0 => page_max,
            n => n.min(page_max),
        };
        let data = leader.data.lock();
        let first = data
            .region_of(&req.start_key)
            .map(|r| r.region.start_key.to_vec())
            .unwrap_or_else(|| req.start_key.to_vec());
        let regions = data
            .by_start
            .range(first..)
            .take_while(|(start, _)| {
                req.end_key.is_empty() || start.as_slice() < req.end_key.as_ref()
            })
            .filter_map(|(_, id)| data.regions.get(id))
            .take(limit)
            .map(|r| r.info())
            .collect();
        Ok(Response::new(ScanRegionsResponse {
            header: ok_header(),
            regions,
        }))
    }

    async fn get_stores(
        &self,
        request: Request<GetStoresRequest>,
    ) -> Result<Response<GetStoresResponse>, Status> {
        let leader = leader_or_redirect!(self, GetStoresResponse);
        let id = request.into_inner().store_id;
        let data = leader.data.lock();
        let mut stores: Vec<StoreInfo> = data
            .stores
            .values()
            .filter(|r| id == 0 || r.store.id == id)
            .map(store_info)
            .collect();
        stores.sort_by_key(|s| s.store.as_ref().map(|s| s.id));
        let (cluster_version, version_held_by) = (
            data.cluster_version,
            next_cluster_version(
                data.cluster_version,
                self.shared.cfg.binary_version,
                &node_versions(&self.shared.cfg, &leader, &data),
            )
            .1,
        );
        Ok(Response::new(GetStoresResponse {
            header: ok_header(),
            stores,
            cluster_version: Some(cluster_version),
            version_held_by,
        }))
    }

    async fn remove_store(
        &self,
        request: Request<RemoveStoreRequest>,
    ) -> Result<Response<RemoveStoreResponse>, Status> {
        let leader = leader_or_redirect!(self, RemoveStoreResponse);
        let store_id = request.into_inner().store_id;
        let replication = self.shared.cfg.replication;
        let outcome = Self::change_store_state(&leader, store_id, |data, state| {
            if state != StoreState::Up {
                return Ok(None);
            }
            // The replicas go to the other stores in service: there must be enough.
            let staying = data
                .stores
                .values()
                .filter(|r| r.store.id != store_id && r.store.state() == StoreState::Up)
                .count();
            if staying < replication {
                return Err(format!(
                    "removing store {store_id} would leave {staying} stores for {replication} \
                     replicas of every region: add a store first"
                ));
            }
            tracing::info!(store_id, "store removal: moving its replicas away");
            Ok(Some(StoreState::Offline))
        })
        .await?;
        let (refused, store) = refused_or_store(outcome);
        Ok(Response::new(RemoveStoreResponse {
            header: ok_header(),
            refused,
            store,
        }))
    }

    async fn cancel_store_removal(
        &self,
        request: Request<CancelStoreRemovalRequest>,
    ) -> Result<Response<CancelStoreRemovalResponse>, Status> {
        let leader = leader_or_redirect!(self, CancelStoreRemovalResponse);
        let store_id = request.into_inner().store_id;
        let outcome = Self::change_store_state(&leader, store_id, |_, state| match state {
            StoreState::Up => Ok(None),
            StoreState::Offline => {
                // Moves already under way off it finish (balance may bring replicas back
                // later); no new one starts.
                tracing::info!(store_id, "store removal cancelled: back in service");
                Ok(Some(StoreState::Up))
            }
            StoreState::Tombstone => Err(format!(
                "store {store_id} is removed already and holds no replica: to use its \
                 machine again, start a new store there on an empty data directory"
            )),
        })
        .await?;
        let (refused, store) = refused_or_store(outcome);
        Ok(Response::new(CancelStoreRemovalResponse {
            header: ok_header(),
            refused,
            store,
        }))
    }

    async fn alloc_id(
        &self,
        request: Request<AllocIdRequest>,
    ) -> Result<Response<AllocIdResponse>, Status> {
        let leader = leader_or_redirect!(self, AllocIdResponse);
        let count = request.into_inner().count.max(1);
        let mut batch = WriteBatch::new();
        let first = leader.data.lock().alloc(u64::from(count), &mut batch);
        Self::persist(&leader, batch).await?;
        Ok(Response::new(AllocIdResponse {
            header: ok_header(),
            first_id: first,
            count,
        }))
    }

    async fn ask_split(
        &self,
        request: Request<AskSplitRequest>,
    ) -> Result<Response<AskSplitResponse>, Status> {
        let leader = leader_or_redirect!(self, AskSplitResponse);
        let region = request.into_inner().region.unwrap_or_default();
        let mut batch = WriteBatch::new();
        let (new_region_id, new_peer_ids) = {
            let mut data = leader.data.lock();
            let id = data.alloc(1, &mut batch);
            let peers = region
                .peers
                .iter()
                .map(|_| data.alloc(1, &mut batch))
                .collect();
            (id, peers)
        };
        Self::persist(&leader, batch).await?;
        Ok(Response::new(AskSplitResponse {
            header: ok_header(),
            new_region_id,
            new_peer_ids,
        }))
    }

    async fn get_catalog(
        &self,
        request: Request<GetCatalogRequest>,
    ) -> Result<Response<GetCatalogResponse>, Status> {
        let leader = leader_or_redirect!(self, GetCatalogResponse);
        let known = request.into_inner().known_version;
        let snapshot = leader.catalog.snapshot();
        let snapshot_json = if snapshot.version == known && known != 0 {
            Vec::new()
        } else {
            serde_json::to_vec(&WireSnapshot::from_snapshot(&snapshot))
                .map_err(|e| Status::internal(e.to_string()))?
        };
        Ok(Response::new(GetCatalogResponse {
            header: ok_header(),
            version: snapshot.version,
            snapshot_json: snapshot_json.into(),
        }))
    }

    async fn commit_schema(
        &self,
        request: Request<CommitSchemaRequest>,
    ) -> Result<Response<CommitSchemaResponse>, Status> {
        let leader = leader_or_redirect!(self, CommitSchemaResponse);
        let change: WireChange = serde_json::from_slice(&request.into_inner().change_json)
            .map_err(|e| Status::invalid_argument(format!("undecodable schema change: {e}")))?;
        let l = leader.clone();
        let result = tokio::task::spawn_blocking(move || l.catalog.commit(change.into_change()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if result.is_ok() {
            // SQL nodes waiting in a lease renewal learn of the new version at once.
            leader.ddl.catalog_changed();
        }
        let snapshot = leader.catalog.snapshot();
        let snapshot_json = serde_json::to_vec(&WireSnapshot::from_snapshot(&snapshot))
            .map_err(|e| Status::internal(e.to_string()))?
            .into();
        let mut resp = CommitSchemaResponse {
            header: ok_header(),
            snapshot_json,
            ..Default::default()
        };
        if let Err(e) = result {
            resp.error = e.to_string();
            resp.error_kind = catalog_error_kind(&e);
            if let CatalogError::VersionMismatch { expected, actual } = e {
                resp.expected_version = expected;
                resp.actual_version = actual;
            }
        }
        Ok(Response::new(resp))
    }

    async fn allocate_catalog_ids(
        &self,
        request: Request<AllocateCatalogIdsRequest>,
    ) -> Result<Response<AllocateCatalogIdsResponse>, Status> {
        let leader = leader_or_redirect!(self, AllocateCatalogIdsResponse);
        let req = request.into_inner();
        let kind = if req.table_ids {
            IdKind::Table
        } else if req.sequence != 0 {
            IdKind::Sequence(req.sequence)
        } else {
            IdKind::RowId(req.row_ids_of_table)
        };
        let l = leader.clone();
        let result = tokio::task::spawn_blocking(move || l.catalog.allocate(kind, req.count))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(match result {
            Ok(r) => AllocateCatalogIdsResponse {
                header: ok_header(),
                error: String::new(),
                start: r.start,
                end: r.end,
                exhausted: None,
            },
            Err(e) => AllocateCatalogIdsResponse {
                header: ok_header(),
                error: e.to_string(),
                exhausted: Some(matches!(e, CatalogError::Exhausted(_))),
                ..Default::default()
            },
        }))
    }

    async fn restart_sequence(
        &self,
        request: Request<RestartSequenceRequest>,
    ) -> Result<Response<RestartSequenceResponse>, Status> {
        let leader = leader_or_redirect!(self, RestartSequenceResponse);
        let req = request.into_inner();
        let l = leader.clone();
        let result =
            tokio::task::spawn_blocking(move || l.catalog.restart_sequence(req.sequence, req.next))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RestartSequenceResponse {
            header: ok_header(),
            error: result.err().map(|e| e.to_string()).unwrap_or_default(),
        }))
    }

    async fn ddl(&self, request: Request<DdlRequest>) -> Result<Response<DdlResponse>, Status> {
        use flotilla_ddl::wire::{Request as DdlOp, Response as DdlAnswer, WAIT_SLICE_MS_MAX};
        let leader = leader_or_redirect!(self, DdlResponse);
        let op: DdlOp = serde_json::from_slice(&request.into_inner().request_json)
            .map_err(|e| Status::invalid_argument(format!("undecodable DDL request: {e}")))?;
        let queue = leader.ddl.clone();
        let blocking = |f: Box<dyn FnOnce() -> DdlAnswer + Send>| async move {
            tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| Status::internal(e.to_string()))
        };
        let answer = match op {
            DdlOp::Submit { kind, request_id } => {
                blocking(Box::new(move || match queue.submit(*kind, request_id) {
                    Ok(job) => DdlAnswer::Job(Box::new(job)),
                    Err(e) => DdlAnswer::Error(e),
                }))
                .await?
            }
            DdlOp::Cancel { id } => {
                blocking(Box::new(move || match queue.cancel(id) {
                    Ok(job) => DdlAnswer::Job(Box::new(job)),
                    Err(e) => DdlAnswer::Error(e),
                }))
                .await?
            }
            DdlOp::Wait { id, timeout_ms } => {
                let timeout = Duration::from_millis(timeout_ms.min(WAIT_SLICE_MS_MAX));
                match queue.wait(id, timeout).await {
                    Ok(job) => DdlAnswer::Job(Box::new(job)),
                    Err(e) => DdlAnswer::Error(e),
                }
            }
            DdlOp::List => DdlAnswer::Jobs(queue.list()),
            DdlOp::Lease {
                node,
                loaded,
                in_use,
                oldest_start_ts,
                binary_version,
                poll_ms,
            } => {
                let poll = Duration::from_millis(poll_ms.min(WAIT_SLICE_MS_MAX));
                match queue
                    .renew_lease(node, loaded, in_use, oldest_start_ts, binary_version, poll)
                    .await
                {
                    Ok(grant) => DdlAnswer::Lease(grant),
                    Err(e) => DdlAnswer::Error(e),
                }
            }
            DdlOp::Release { node } => {
                blocking(Box::new(move || match queue.leases().release(node) {
                    Ok(()) => DdlAnswer::Ok,
                    Err(e) => DdlAnswer::Error(e),
                }))
                .await?
            }
            DdlOp::SetFailpoint { on } => {
                queue.set_failpoint(on);
                DdlAnswer::Ok
            }
        };
        let response_json = serde_json::to_vec(&answer)
            .map_err(|e| Status::internal(e.to_string()))?
            .into();
        Ok(Response::new(DdlResponse {
            header: ok_header(),
            response_json,
        }))
    }

    async fn wait_for(
        &self,
        request: Request<WaitForRequest>,
    ) -> Result<Response<WaitForResponse>, Status> {
        let _leader = leader_or_redirect!(self, WaitForResponse);
        let req = request.into_inner();
        let mut waits = self.shared.waits.lock();
        if !req.waiting {
            waits.done(req.waiter_ts);
            return Ok(Response::new(WaitForResponse {
                header: ok_header(),
                deadlock: false,
            }));
        }
        let deadlock = waits.wait(req.waiter_ts, req.holder_ts, Instant::now());
        drop(waits);
        Ok(Response::new(WaitForResponse {
            header: ok_header(),
            deadlock,
        }))
    }
}
