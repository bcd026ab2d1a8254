//! The store role: hosts region peers (raftstore) and serves their Raft messages and
//! transaction commands over gRPC, running the same Percolator MVCC as the standalone on
//! every region it leads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::{
    ClientConfig, GrpcTransport, MetaClient, RaftMessageLimits, RaftService, StoreResolver,
};
use flotilla_mvcc::{
    KeyCheck, LockInfo, LockKeys, MemoryLockBudget, MissingPrimary, Mutation, MutationOp, Mvcc,
    MvccError, PrewriteLocks, TxnStatus,
};
use flotilla_proto::kvpb::store_server::{Store as StoreRpc, StoreServer};
use flotilla_proto::kvpb::{self, *};
use flotilla_proto::metapb::{PeerRole, Region, Store as StoreMeta, StoreLabel, StoreState};
use flotilla_proto::metaservicepb::{RegionHeartbeatRequest, ReplacePeer, StoreStats};
use flotilla_proto::raft_serverpb::RaftMessageBatch;
use flotilla_raftstore::{
    BoardEntry, DriverConfig, RaftStoreError, RegionBoard, RegionEngine, RegionHasher, Store,
    StoreConfig, StoreDriver, StoreMsg, StoreRouter, first_data_key, is_merging, keys,
    to_storage_error,
};
use flotilla_storage::{Cf, EngineRef, FjallEngine, FjallOptions, WriteBatch};
use flotilla_txn::lock_ttl_ms_after;
use flotilla_types::Timestamp;
use flotilla_types::version::{BINARY_CLUSTER_VERSION, ClusterVersion, to_report};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status};

use crate::gc::GcStats;
use crate::standalone::StartError;

mod gc;
mod merge_check;

use merge_check::{Admit, MergeChecks};

/// How a store runs.
#[derive(Debug, Clone)]
pub struct StoreNodeConfig {
    pub data_dir: PathBuf,
    /// The address other nodes use to reach this store (host:port).
    pub advertise_addr: String,
    pub meta_endpoints: Vec<String>,
    /// Where the store is, as (key, value) pairs such as ("zone", "eu-1"): the meta
    /// service spreads each region's replicas over the values of the keys it is told to
    /// (`MetaConfig::location_labels`). None by default.
    pub labels: Vec<(String, String)>,
    /// The newest cluster version this store reports (`flotilla_types::version`): this
    /// build's, or an older one to emulate an older build in rolling-upgrade tests (at the
    /// base version it reports none, as builds before versions did).
    pub binary_version: ClusterVersion,
    pub tick_interval: Duration,
    pub election_ticks: usize,
    /// Elections time out at a random tick in [election_ticks, max_election_ticks).
    pub max_election_ticks: usize,
    /// Store and region heartbeats to the meta service.
    pub heartbeat_interval: Duration,
    /// A region with more keys than this splits.
    pub region_split_keys: u64,
    /// A region with more bytes than this splits.
    pub region_split_bytes: u64,
    /// Commit records written into a region before its size is checked again.
    pub split_check_written_keys: u64,
    /// Bytes of each region's newest Raft log entries kept in memory (0: none).
    pub raft_entry_cache_bytes: u64,
    /// A region's Raft log is compacted once it holds this many applied entries.
    pub raft_log_gc_count_limit: u64,
    /// A leader keeps the Raft log a follower at most this many entries behind still
    /// needs (a store down or restarting included); one further behind gets a snapshot.
    pub raft_log_keep_for_lagging_entries: u64,
    /// Region snapshots waiting for the store's snapshot thread; 0 builds them on the
    /// store thread (every region of the store waits meanwhile).
    pub raft_snapshot_build_queue: usize,
    /// Received snapshots whose data the store's snapshot writer thread holds at once
    /// (each whole in memory); past it a snapshot is dropped and its leader sends it again
    /// later. 0 writes them on the store thread (every region of the store waits meanwhile).
    pub raft_snapshot_apply_queue: usize,
    /// Region checksums (`flotilla ctl check-replicas`) waiting for the store's checksum
    /// thread (at least 1); past it a replica answers a retryable error at that index.
    pub raft_checksum_queue: usize,
    /// Checks that a region frozen for a merge holds no data (each a scan of the region on
    /// a blocking thread) running at once on this store; past it a region is checked at
    /// a later heartbeat.
    pub merge_checks_max: usize,
    pub storage: FjallOptions,
    pub client: ClientConfig,
    /// Commands one KV stream (one client) may have in progress on this store; past it,
    /// the store reads no more of that stream's commands until one is answered.
    pub kv_stream_in_flight_max: usize,
    /// Commands all clients together may have in progress on this store; past it, the
    /// store reads no more commands from any stream until one is answered. A command
    /// waiting for a lock holds its place (at most `lock_wait_max`).
    pub kv_in_flight_max: usize,
    /// Scans in progress on this store at once (each answer up to
    /// `scan_response_bytes_max`); past it, a scan waits for one to finish.
    pub scans_in_flight_max: usize,
    /// Largest gRPC message the store accepts (a transaction command, a batch of Raft
    /// messages, or one piece of a larger Raft message).
    pub grpc_message_bytes_max: usize,
    /// Bytes of keys and values one scan answer holds, about (it ends with the pair that
    /// passes the bound); the client goes on from where it ended. Keeps answers of wide
    /// rows under the clients' gRPC message bound.
    pub scan_response_bytes_max: usize,
    /// Longest one pessimistic lock command waits on this store for a lock to be released,
    /// whatever its `wait_ms`; the client asks again for a longer wait.
    pub lock_wait_max: Duration,
    /// Size bounds of Raft messages between stores: batches, and single messages (region
    /// snapshots) sent in pieces. The same on every store.
    pub raft_limits: RaftMessageLimits,
    /// GC: records one step removes at most (one Raft write).
    pub gc_batch_records_max: usize,
    /// GC: records removed per second at most; 0: no limit.
    pub gc_records_per_s: u64,
    /// GC: a prewrite lock older than this whose TTL has lapsed is resolved by the store
    /// leading its region, as a reader would: its coordinator most likely died, and a
    /// lock no reader meets would hold the safe point back for ever.
    pub gc_resolve_locks_after: Duration,
    /// GC: abandoned locks the store resolves per round (a heartbeat interval) at most.
    pub gc_resolve_locks_max: usize,
    /// Bytes of locks kept only in memory (pessimistic locks, and prewrite locks of
    /// transactions committing in one batch) per region this store leads; past it, a
    /// region's new locks are written through Raft to its lock CF instead.
    pub memory_locks_region_bytes_max: usize,
    /// The same bound for all the regions of this store together.
    pub memory_locks_store_bytes_max: usize,
}

impl StoreNodeConfig {
    /// Defaults: 100 ms ticks with elections after 10–15 silent ticks (a dead leader is
    /// replaced 1–1.5 s after its last heartbeat), 1 s heartbeats,
    /// split at 200,000 keys or 96 MiB, checked every 20,000 written keys, 4 MiB of cached
    /// Raft log entries per region, the log kept for followers up to 65,536 entries behind,
    /// 16 snapshots queued for the snapshot thread, 4,096 commands in progress per KV
    /// stream and 16,384 on the store, 32 scans at once, gRPC messages of up to 256 MiB,
    /// scan answers of about 16 MiB, lock waits of
    /// at most 5 s per command, Raft batches of up to 4 MiB and snapshots of up to 2 GiB,
    /// and GC removing old versions 4,096 records per Raft write and at most 50,000
    /// records a second, and resolving up to 256 abandoned locks a round once they are a
    /// minute old; in-memory locks of up to 4 MiB per region and 256 MiB per store.
    pub fn new(data_dir: PathBuf, advertise_addr: String, meta_endpoints: Vec<String>) -> Self {
        Self {
            data_dir,
            advertise_addr,
            meta_endpoints,
            labels: Vec::new(),
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            max_election_ticks: 15,
            heartbeat_interval: Duration::from_secs(1),
            region_split_keys: 200_000,
            region_split_bytes: 96 << 20,
            split_check_written_keys: 20_000,
            raft_entry_cache_bytes: flotilla_raftstore::ENTRY_CACHE_BYTES_MAX_DEFAULT,
            raft_log_gc_count_limit: StoreConfig::new(0).log_gc_count_limit,
            raft_log_keep_for_lagging_entries:
                flotilla_raftstore::LOG_KEEP_FOR_LAGGING_ENTRIES_DEFAULT,
            raft_snapshot_build_queue: 16,
            raft_snapshot_apply_queue: StoreConfig::new(0).snapshot_apply_queue,
            raft_checksum_queue: StoreConfig::new(0).checksum_queue,
            merge_checks_max: 2,
            storage: FjallOptions::default(),
            client: ClientConfig::default(),
            kv_stream_in_flight_max: 4_096,
            kv_in_flight_max: 16_384,
            scans_in_flight_max: 32,
            grpc_message_bytes_max: GRPC_MESSAGE_BYTES_MAX_DEFAULT,
            scan_response_bytes_max: 16 << 20,
            lock_wait_max: Duration::from_secs(5),
            raft_limits: RaftMessageLimits::default(),
            gc_batch_records_max: 4_096,
            gc_records_per_s: 50_000,
            gc_resolve_locks_after: Duration::from_secs(60),
            gc_resolve_locks_max: 256,
            memory_locks_region_bytes_max: MemoryLockBudget::REGION_BYTES_MAX_DEFAULT,
            memory_locks_store_bytes_max: MemoryLockBudget::STORE_BYTES_MAX_DEFAULT,
            binary_version: BINARY_CLUSTER_VERSION,
        }
    }
}

/// This store as it reports itself to the meta service (which keeps its state).
fn store_meta(cfg: &StoreNodeConfig, store_id: u64) -> StoreMeta {
    StoreMeta {
        id: store_id,
        address: cfg.advertise_addr.clone(),
        state: StoreState::Up as i32,
        version: env!("CARGO_PKG_VERSION").into(),
        labels: cfg
            .labels
            .iter()
            .map(|(key, value)| StoreLabel {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

/// Largest message the store service accepts by default: a scan's page of rows or a
/// large write. Region snapshots do not count: they travel in pieces.
pub const GRPC_MESSAGE_BYTES_MAX_DEFAULT: usize = 256 << 20;

/// Bytes of answers sent together in one message of a KV stream (one answer may be more).
const KV_BATCH_BYTES_MAX: usize = 1 << 20;

/// How long a region command may wait for its Raft proposal.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

struct MetaResolver {
    meta: Arc<MetaClient>,
    cache: Mutex<HashMap<u64, String>>,
}

#[async_trait::async_trait]
impl StoreResolver for MetaResolver {
    async fn resolve(&self, store_id: u64) -> Result<String, flotilla_client::ClientError> {
        if let Some(a) = self.cache.lock().get(&store_id) {
            return Ok(a.clone());
        }
        let addr = self.meta.store_address(store_id).await?;
        self.cache.lock().insert(store_id, addr.clone());
        Ok(addr)
    }

    fn forget(&self, store_id: u64) {
        self.cache.lock().remove(&store_id);
    }
}

/// A running store.
pub struct StoreNode {
    store_id: u64,
    addr: SocketAddr,
    transport: Arc<GrpcTransport>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    driver: Option<StoreDriver>,
    gc_stats: Arc<GcStats>,
    shared: Arc<Shared>,
}

fn local_regions(engine: &EngineRef) -> Result<bool, String> {
    let (start, end) = keys::region_state_range();
    Ok(engine
        .scan(Cf::Raft, &start, &end, false)
        .next()
        .transpose()
        .map_err(|e| e.to_string())?
        .is_some())
}

impl StoreNode {
    /// Opens the store, registers with the meta service (bootstrapping the first region if
    /// it is one of its initial peers) and serves on `listener`.
    pub async fn start(
        cfg: StoreNodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, StartError> {
        let storage_err = |message: String| StartError::Storage {
            dir: cfg.data_dir.display().to_string(),
            message,
        };
        cfg.raft_limits
            .validate(cfg.grpc_message_bytes_max)
            .map_err(StartError::Config)?;
        let engine: EngineRef = Arc::new(
            FjallEngine::open(&cfg.data_dir.join("store"), &cfg.storage)
                .map_err(|e| storage_err(e.to_string()))?,
        );
        let meta = Arc::new(
            MetaClient::new(cfg.meta_endpoints.clone(), cfg.client.clone())
                .map_err(|e| StartError::Config(e.to_string()))?,
        );
        let mut store_id = match engine
            .get(Cf::Raft, &keys::store_ident_key())
            .map_err(|e| storage_err(e.to_string()))?
        {
            Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().expect("checked")),
            Some(_) => return Err(storage_err("corrupt store identity".into())),
            None => 0,
        };
        // Register (a new store gets its id) and, on an empty store, wait until the
        // cluster's first region is laid out: this store may be one of its peers. The GC
        // safe point comes with the answer, so reads below it are refused from the start.
        let mut gc_safe_point = 0;
        loop {
            let is_empty = !local_regions(&engine).map_err(storage_err)?;
            let resp = meta
                .store_heartbeat(
                    store_meta(&cfg, store_id),
                    StoreStats {
                        is_empty,
                        ..Default::default()
                    },
                    to_report(cfg.binary_version),
                )
                .await
                .map_err(|e| {
                    StartError::Other(format!("registering with the meta service: {e}"))
                })?;
            gc_safe_point = gc_safe_point.max(resp.gc_safe_point);
            if store_id == 0 {
                store_id = resp.store_id;
                let mut batch = WriteBatch::new();
                batch.put(
                    Cf::Raft,
                    keys::store_ident_key(),
                    store_id.to_be_bytes().to_vec(),
                );
                engine
                    .write(batch, true)
                    .map_err(|e| storage_err(e.to_string()))?;
                tracing::info!(store_id, "registered as a new store");
            }
            if let Some(region) = resp.bootstrap_region {
                if is_empty {
                    Store::bootstrap_region(&engine, &region)
                        .map_err(|e| storage_err(e.to_string()))?;
                    tracing::info!(region_id = region.id, "bootstrapped the first region");
                }
                break;
            }
            if resp.cluster_bootstrapped || !is_empty {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let resolver = Arc::new(MetaResolver {
            meta: meta.clone(),
            cache: Mutex::new(HashMap::new()),
        });
        let transport = Arc::new(GrpcTransport::new(
            tokio::runtime::Handle::current(),
            RaftService::Store,
            resolver,
            cfg.client.clone(),
            cfg.raft_limits,
        ));
        let mut store_cfg = StoreConfig::new(store_id);
        store_cfg.election_ticks = cfg.election_ticks;
        store_cfg.min_election_ticks = cfg.election_ticks;
        store_cfg.max_election_ticks = cfg.max_election_ticks;
        store_cfg.entry_cache_bytes_max = cfg.raft_entry_cache_bytes;
        store_cfg.log_gc_count_limit = cfg.raft_log_gc_count_limit;
        store_cfg.log_keep_for_lagging_entries = cfg.raft_log_keep_for_lagging_entries;
        store_cfg.snapshot_build_queue = cfg.raft_snapshot_build_queue;
        store_cfg.snapshot_apply_queue = cfg.raft_snapshot_apply_queue;
        store_cfg.checksum_queue = cfg.raft_checksum_queue;
        store_cfg.tick_interval = cfg.tick_interval;
        let store = Store::open(store_cfg, engine.clone(), transport.clone())
            .map_err(|e| storage_err(e.to_string()))?;
        let board = store.board();
        let checksums = store.checksums();
        let driver = StoreDriver::spawn(
            store,
            DriverConfig {
                tick_interval: cfg.tick_interval,
                ..DriverConfig::default()
            },
        );
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let shared = Arc::new(Shared {
            store_id,
            waits: LockWaits::new(),
            router: driver.router(),
            board,
            checksums,
            local: engine,
            meta,
            regions: Mutex::new(HashMap::new()),
            cfg: cfg.clone(),
            gc: gc::StoreGc::new(gc_safe_point),
            merge_checks: MergeChecks::new(cfg.merge_checks_max),
            kv_permits: Arc::new(tokio::sync::Semaphore::new(cfg.kv_in_flight_max.max(1))),
            scan_permits: tokio::sync::Semaphore::new(cfg.scans_in_flight_max.max(1)),
            memory_locks: MemoryLockBudget::new(
                cfg.memory_locks_region_bytes_max,
                cfg.memory_locks_store_bytes_max,
            ),
        });
        let (shutdown, watcher) = watch::channel(false);
        let service = StoreService {
            shared: shared.clone(),
            stopping: watcher.clone(),
        };
        let mut stop = watcher.clone();
        let grpc_message_bytes_max = cfg.grpc_message_bytes_max;
        let server = tokio::spawn(async move {
            // Replies are small and latency-bound: no Nagle delay.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let result = tonic::transport::Server::builder()
                .add_service(
                    StoreServer::new(service).max_decoding_message_size(grpc_message_bytes_max),
                )
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!("store RPC server failed: {e}");
            }
        });
        let heartbeats = tokio::spawn(heartbeat_loop(shared.clone(), watcher.clone()));
        let splits = tokio::spawn(split_check_loop(shared.clone(), watcher.clone()));
        let gc_stats = shared.gc.stats.clone();
        let collector = tokio::spawn(gc::collect_loop(shared.clone(), watcher));
        tracing::info!(store_id, %addr, "store is serving");
        Ok(Self {
            store_id,
            addr,
            transport,
            shutdown,
            tasks: vec![server, heartbeats, splits, collector],
            driver: Some(driver),
            gc_stats,
            shared,
        })
    }

    /// Before a planned stop: hands the leadership of every region this store leads to
    /// another voter, as leader balance does (new in-memory locks fenced off, the held
    /// ones drained first), so no transaction loses its locks with a term and clients
    /// meet a routing error at most. Bounded by `timeout`; returns how many regions it
    /// still leads then (they elect a leader after the stop, as after a crash).
    pub async fn evict_leaders(&self, timeout: Duration) -> usize {
        self.shared.evict_leaders(timeout).await
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// Bytes of locks the regions this store leads hold only in memory now (bounded by
    /// `memory_locks_store_bytes_max`).
    pub fn memory_lock_bytes(&self) -> usize {
        self.shared.memory_locks.used_bytes()
    }

    /// What this store's garbage collection has done.
    pub fn gc_stats(&self) -> Arc<GcStats> {
        self.gc_stats.clone()
    }

    /// Raft streams this store has opened to its peers so far (see
    /// `GrpcTransport::streams_opened`).
    pub fn raft_streams_opened(&self) -> u64 {
        self.transport.streams_opened()
    }

    /// Raft messages too large for a batch (region snapshots) this store has delivered to
    /// its peers in pieces so far.
    pub fn raft_chunked_messages_delivered(&self) -> u64 {
        self.transport.chunked_messages_delivered()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and stops the store thread.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        if let Some(d) = self.driver.take() {
            let _ = tokio::task::spawn_blocking(move || drop(d)).await;
        }
    }
}

impl Drop for StoreNode {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// MVCC over one region this store leads, valid for one leader term and region epoch.
struct RegionMvcc {
    term: u64,
    engine: Arc<RegionEngine>,
    mvcc: Mvcc,
}

/// Wakes pessimistic-lock waiters of this store when a key's lock goes away: waiters wait
/// here (bounded by the request's `wait_ms`) instead of polling from the client, so a hot
/// row is handed over at once.
struct LockWaits {
    buckets: Vec<tokio::sync::Notify>,
}

impl LockWaits {
    const BUCKETS: usize = 1024;

    fn new() -> Self {
        Self {
            buckets: (0..Self::BUCKETS)
                .map(|_| tokio::sync::Notify::new())
                .collect(),
        }
    }

    fn bucket(&self, key: &[u8]) -> &tokio::sync::Notify {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        &self.buckets[(h as usize) % Self::BUCKETS]
    }

    fn released<K: AsRef<[u8]>>(&self, keys: &[K]) {
        for k in keys {
            self.bucket(k.as_ref()).notify_waiters();
        }
    }
}

struct Shared {
    store_id: u64,
    waits: LockWaits,
    router: StoreRouter,
    board: Arc<RegionBoard>,
    /// Each region's newest replica checksum here (`ReplicaChecksum` at an index).
    checksums: Arc<RegionHasher>,
    local: EngineRef,
    meta: Arc<MetaClient>,
    regions: Mutex<HashMap<u64, Arc<RegionMvcc>>>,
    cfg: StoreNodeConfig,
    gc: gc::StoreGc,
    /// Emptiness checks of the regions this store leads that are frozen for a merge: one
    /// per frozen region led, forgotten when it is no longer both, at most
    /// `merge_checks_max` running.
    merge_checks: MergeChecks,
    /// The bound on the in-memory locks of the regions this store leads, together.
    memory_locks: Arc<MemoryLockBudget>,
    /// Places for commands in progress, from every client (`kv_in_flight_max`).
    kv_permits: Arc<tokio::sync::Semaphore>,
    /// Places for scans in progress (`scans_in_flight_max`).
    scan_permits: tokio::sync::Semaphore,
}

impl Shared {
    /// Whether `region`, led here, holds no data, if it is frozen for a merge and the
    /// check at its frozen epoch has finished; starts that check, off the async threads,
    /// when it has not. A frozen region applies no writes, so one check answers for its
    /// every replica (the meta leader commits the merge only on `Some(true)`).
    fn merge_source_empty(self: &Arc<Self>, region: &Region) -> Option<bool> {
        if !is_merging(region) {
            return None;
        }
        match self.merge_checks.admit(region.id, region.epoch) {
            Admit::Known(empty) => return empty,
            Admit::Busy => return None,
            Admit::Start => {}
        }
        let (shared, region) = (self.clone(), region.clone());
        tokio::task::spawn_blocking(move || {
            let empty = match first_data_key(&shared.local, &region) {
                Ok(None) => Some(true),
                Ok(Some((cf, key))) => {
                    tracing::info!(
                        region_id = region.id,
                        ?cf,
                        key = ?key,
                        "the region frozen for a merge holds data: it is rolled back"
                    );
                    Some(false)
                }
                Err(e) => {
                    // Forgotten: the next heartbeat checks again.
                    tracing::warn!(region_id = region.id, "merge emptiness check: {e}");
                    None
                }
            };
            shared.merge_checks.finish(region.id, region.epoch, empty);
        });
        None
    }
}

fn region_error(e: &RaftStoreError, board: &RegionBoard) -> RegionError {
    use region_error::Kind;
    let kind = match e {
        RaftStoreError::NotLeader { region_id, leader } => Kind::NotLeader(kvpb::NotLeader {
            region_id: *region_id,
            leader: *leader,
        }),
        RaftStoreError::EpochNotMatch { current } => {
            let mut current = current.clone();
            // After a split, the new right-hand region too, so the client can route keys
            // that moved there without asking the meta service.
            if let Some(r) = current.first().cloned()
                && !r.end_key.is_empty()
            {
                current.extend(board.regions_containing(&r.end_key));
            }
            Kind::EpochNotMatch(EpochNotMatch { current })
        }
        RaftStoreError::RegionNotFound(id) => Kind::RegionNotFound(*id),
        RaftStoreError::KeyNotInRegion { key, region_id } => {
            Kind::KeyNotInRegion(kvpb::KeyNotInRegion {
                key: key.clone().into(),
                region_id: *region_id,
            })
        }
        RaftStoreError::StaleCommand(_) => Kind::StaleCommand(true),
        other => Kind::ServerIsBusy(other.to_string()),
    };
    RegionError {
        message: e.to_string(),
        kind: Some(kind),
    }
}

fn lock_info(l: &LockInfo) -> kvpb::LockInfo {
    kvpb::LockInfo {
        key: l.key.clone().into(),
        primary: l.primary.clone().into(),
        start_ts: l.start_ts.0,
        ttl_ms: l.ttl_ms,
        kind: l.kind as u32,
    }
}

/// What a failed MVCC command tells the client.
enum Failure {
    Region(RaftStoreError),
    Key(KeyError),
}

fn mvcc_failure(e: MvccError) -> Failure {
    use key_error::Kind;
    let message = e.to_string();
    let kind = match e {
        MvccError::KeyIsLocked(l) => Kind::Locked(lock_info(&l)),
        MvccError::WriteConflict {
            key,
            for_update_ts,
            conflict_commit_ts,
        } => Kind::Conflict(kvpb::WriteConflict {
            key: key.into(),
            for_update_ts: for_update_ts.0,
            conflict_commit_ts: conflict_commit_ts.0,
        }),
        MvccError::AlreadyExists { key } => Kind::AlreadyExists(key.into()),
        MvccError::TxnLockNotFound { start_ts, .. } => Kind::TxnLockNotFound(start_ts.0),
        MvccError::Committed {
            start_ts,
            commit_ts,
        } => Kind::Committed(kvpb::Committed {
            start_ts: start_ts.0,
            commit_ts: commit_ts.0,
        }),
        MvccError::SnapshotTooOld {
            read_ts,
            safe_point,
        } => Kind::SnapshotTooOld(kvpb::SnapshotTooOld {
            read_ts: read_ts.0,
            safe_point: safe_point.0,
        }),
        // The region's Raft group refused or could not take the write (leader lost,
        // epoch changed, busy): a routing error the client retries.
        MvccError::Storage(flotilla_storage::StorageError::Unavailable(m)) => {
            return Failure::Region(RaftStoreError::ServerIsBusy(m));
        }
        other => Kind::Abort(other.to_string()),
    };
    Failure::Key(KeyError {
        message,
        kind: Some(kind),
    })
}

/// How long a split waits, with new in-memory locks fenced off its right half, for the
/// transactions holding some there to finish; then it gives up (retryably) and lets them
/// go on, so a transaction that needs more locks there is delayed, never deadlocked.
const SPLIT_LOCK_DRAIN_MAX: Duration = Duration::from_secs(2);

/// How long a graceful leader transfer waits for in-memory locks to go before giving up.
const TRANSFER_LOCK_DRAIN_MAX: Duration = Duration::from_secs(2);

/// Lifts a region's memory-lock fence if its split fails. After a split the fence stays:
/// the right half is no longer this MVCC's, and a request routed by a board not yet
/// showing the split must not lock there either.
struct FenceGuard(Arc<RegionMvcc>, u64, bool);

/// Raises a memory-lock fence over `[start, end)` of `m` (off the async workers: it waits
/// for operations past their fence check). `letting_holders`: transactions holding locks
/// there may take more (`Mvcc::raise_memory_lock_fence_letting_holders`).
async fn raise_fence(
    m: &Arc<RegionMvcc>,
    start: &[u8],
    end: &[u8],
    letting_holders: bool,
) -> Option<FenceGuard> {
    let (raised, start, end) = (m.clone(), start.to_vec(), end.to_vec());
    let id = tokio::task::spawn_blocking(move || {
        if letting_holders {
            raised
                .mvcc
                .raise_memory_lock_fence_letting_holders(&start, &end)
        } else {
            raised.mvcc.raise_memory_lock_fence(&start, &end)
        }
    })
    .await
    .ok()?;
    Some(FenceGuard(m.clone(), id, true))
}

impl FenceGuard {
    fn keep(mut self) {
        self.2 = false;
    }
}

impl Drop for FenceGuard {
    fn drop(&mut self) {
        if self.2 {
            self.0.mvcc.lift_memory_lock_fence(self.1);
        }
    }
}

impl Shared {
    /// One membership step of replica repair or balance, as the meta service asked
    /// (`ReplacePeer`): a new learner; a joint change adding (or promoting) a voter and
    /// demoting another to a learner; or the removal of that learner. raft-rs leaves the
    /// joint configuration by itself; the meta service asks for the next step when a later
    /// heartbeat shows it.
    async fn replace_peer(&self, region_id: u64, step: ReplacePeer) {
        use flotilla_raftstore::{ConfChangeType, PeerChange};
        let change = |change_type, peer| PeerChange { change_type, peer };
        let changes = match step {
            ReplacePeer {
                remove: None,
                add: None,
                add_learner: Some(learner),
            } => vec![change(ConfChangeType::AddLearnerNode, learner)],
            ReplacePeer {
                remove: Some(remove),
                add: Some(add),
                add_learner: None,
            } => vec![
                change(ConfChangeType::AddNode, add),
                change(ConfChangeType::AddLearnerNode, remove),
            ],
            ReplacePeer {
                remove: Some(remove),
                add: None,
                add_learner: None,
            } => vec![change(ConfChangeType::RemoveNode, remove)],
            other => {
                tracing::warn!(region_id, step = ?other, "membership step not understood");
                return;
            }
        };
        let outcome = ask_store(&self.router, region_id, "membership change", |cb| {
            StoreMsg::ChangePeers {
                region_id,
                changes,
                cb,
            }
        })
        .await;
        match outcome {
            Ok(region) => tracing::info!(
                region_id,
                peers = ?region.peers,
                "membership changed"
            ),
            // The meta service asks again after its step timeout.
            Err(e) => tracing::warn!(region_id, "membership step failed: {e}"),
        }
    }

    /// One step of a region merge, as the meta service asked (see `flotilla_meta::merge`).
    /// A step that fails is asked again by a later heartbeat.
    async fn merge_step(&self, region: Region, step: MergeStepAsked) {
        let region_id = region.id;
        let epoch = region.epoch.unwrap_or_default();
        let (what, outcome) = match step {
            MergeStepAsked::Prepare => (
                "prepare-merge",
                ask_store(&self.router, region_id, "prepare-merge", |cb| {
                    StoreMsg::PrepareMerge {
                        region_id,
                        epoch,
                        cb,
                    }
                })
                .await,
            ),
            MergeStepAsked::Commit { source, epoch } => (
                "commit-merge",
                ask_store(&self.router, region_id, "commit-merge", |cb| {
                    StoreMsg::CommitMerge {
                        region_id,
                        epoch,
                        source,
                        cb,
                    }
                })
                .await,
            ),
            MergeStepAsked::Rollback => (
                "rollback-merge",
                ask_store(&self.router, region_id, "rollback-merge", |cb| {
                    StoreMsg::RollbackMerge { region_id, cb }
                })
                .await,
            ),
        };
        match outcome {
            Ok(region) => tracing::info!(
                region_id,
                start = ?region.start_key,
                end = ?region.end_key,
                merging = flotilla_raftstore::is_merging(&region),
                "{what} applied"
            ),
            Err(e) => tracing::info!(region_id, "{what} not applied: {e}"),
        }
    }

    /// See `StoreNode::evict_leaders`.
    async fn evict_leaders(self: &Arc<Self>, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut round = 0usize;
        loop {
            let led: Vec<BoardEntry> = self
                .board
                .all()
                .into_iter()
                .filter(|e| e.is_leader)
                .collect();
            let mut transfers = tokio::task::JoinSet::new();
            for e in &led {
                let voters: Vec<_> = e
                    .region
                    .peers
                    .iter()
                    .filter(|p| p.store_id != self.store_id && p.role == PeerRole::Voter as i32)
                    .copied()
                    .collect();
                if voters.is_empty() {
                    continue;
                }
                // A target that is not caught up is skipped by the transfer: try the
                // next one the round after.
                let to = voters[round % voters.len()];
                let (shared, region) = (self.clone(), e.region.clone());
                transfers.spawn(async move { shared.transfer_leader_gracefully(region, to).await });
            }
            if transfers.is_empty() || tokio::time::Instant::now() >= deadline {
                if !led.is_empty() {
                    tracing::info!(
                        regions = led.len(),
                        "leader eviction ends with regions still led here"
                    );
                }
                return led.len();
            }
            tracing::info!(
                regions = led.len(),
                round,
                "handing leadership to other stores"
            );
            let _ = tokio::time::timeout_at(deadline, transfers.join_all()).await;
            round += 1;
        }
    }

    /// Hands the leadership of `region` to peer `to` (leader balance) without aborting
    /// transactions: in-memory locks die with a leader's term, so new ones are fenced off
    /// the whole region and the transfer waits (bounded) until the held ones are gone. If
    /// they do not go, or the transfer does not happen within an election timeout, the
    /// fence is lifted and this store stays leader.
    async fn transfer_leader_gracefully(&self, region: Region, to: flotilla_proto::metapb::Peer) {
        let region_id = region.id;
        let Some(entry) = self.board.get(region_id).filter(|e| e.is_leader) else {
            return;
        };
        let current = self
            .regions
            .lock()
            .get(&region_id)
            .filter(|m| m.term == entry.term)
            .cloned();
        let fence = match current {
            Some(m) => {
                let (start, end) = (region.start_key.to_vec(), region.end_key.to_vec());
                // Transactions holding locks here may take more (a hot region's rows are
                // locked one statement at a time), so they finish; new ones wait.
                let Some(guard) = raise_fence(&m, &start, &end, true).await else {
                    return;
                };
                let fence_id = guard.1;
                let drained = tokio::task::spawn_blocking(move || {
                    m.mvcc
                        .wait_memory_locks_gone(&start, &end, TRANSFER_LOCK_DRAIN_MAX)
                        // Then shut them out too: one may have released its last lock
                        // here and be about to take another.
                        && m.mvcc.close_memory_lock_fence(fence_id)
                })
                .await
                .unwrap_or(false);
                if !drained {
                    tracing::debug!(region_id, "leader transfer skipped: locks still held");
                    return;
                }
                Some(guard)
            }
            None => None,
        };
        // The meta service may still count a store that just died as up: handing it the
        // region would stall its writes until raft-rs gives the transfer up.
        let (tx, rx) = oneshot::channel();
        let to_peer_id = to.id;
        let asked = self.router.inspect(Box::new(move |store| {
            let _ = tx.send(store.transfer_target_ready(region_id, to_peer_id));
        }));
        if asked.is_err() || !rx.await.unwrap_or(false) {
            tracing::debug!(
                region_id,
                to_store = to.store_id,
                "leader transfer skipped: the target is not caught up or not heard from"
            );
            return;
        }
        tracing::info!(
            region_id,
            to_store = to.store_id,
            "transferring leadership (leader balance)"
        );
        if self
            .router
            .send(StoreMsg::TransferLeader {
                region_id,
                to_peer_id: to.id,
            })
            .is_err()
        {
            return;
        }
        // raft-rs abandons a transfer after an election timeout; until the outcome is
        // known the fence stays (a lock taken now would die with the term).
        let deadline = tokio::time::Instant::now()
            + self.cfg.tick_interval * self.cfg.max_election_ticks as u32;
        while tokio::time::Instant::now() < deadline {
            match self.board.get(region_id) {
                Some(e) if e.is_leader && e.term == entry.term => {}
                // Another leader or term: this term's MVCC is retired with its fence.
                _ => {
                    if let Some(f) = fence {
                        f.keep();
                    }
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Still the leader: the fence guard lifts the fence.
    }

    /// The MVCC of a region this store leads, as routed by `ctx`.
    async fn region_mvcc(&self, ctx: &Context) -> Result<Arc<RegionMvcc>, RaftStoreError> {
        let entry = self
            .board
            .get(ctx.region_id)
            .ok_or(RaftStoreError::RegionNotFound(ctx.region_id))?;
        if !entry.is_leader {
            return Err(RaftStoreError::NotLeader {
                region_id: ctx.region_id,
                leader: entry.leader,
            });
        }
        let asked = ctx.epoch.unwrap_or_default();
        let current = entry.region.epoch.unwrap_or_default();
        if asked.version != current.version {
            return Err(RaftStoreError::EpochNotMatch {
                current: vec![entry.region.clone()],
            });
        }
        if let Some(m) = self.regions.lock().get(&ctx.region_id)
            && m.term == entry.term
        {
            // Same leader: a split or membership change keeps the locks it holds in
            // memory (for keys still in the region).
            if m.engine.region().epoch != entry.region.epoch {
                m.engine.set_region(entry.region.clone());
            }
            return Ok(m.clone());
        }
        // A new term: whatever an earlier term kept in memory (pessimistic and volatile
        // locks) is gone, and everything committed before must be applied here before
        // MVCC reads its state.
        self.read_index(ctx.region_id, &entry, 0).await?;
        let engine = Arc::new(RegionEngine::new(
            self.local.clone(),
            self.router.clone(),
            entry.region.clone(),
            entry.term,
            WRITE_TIMEOUT,
        ));
        let for_mvcc = engine.clone();
        let budget = self.memory_locks.clone();
        let mvcc =
            tokio::task::spawn_blocking(move || Mvcc::with_memory_lock_budget(for_mvcc, budget))
                .await
                .map_err(|e| RaftStoreError::Storage(e.to_string()))?
                .map_err(|e| RaftStoreError::Storage(e.to_string()))?;
        let m = Arc::new(RegionMvcc {
            term: entry.term,
            engine,
            mvcc,
        });
        let mut regions = self.regions.lock();
        if let Some(made) = regions.get(&ctx.region_id)
            && made.term == entry.term
        {
            // A concurrent request made it first: every request of a term must share one
            // MVCC, or the locks one of them holds in memory are lost.
            return Ok(made.clone());
        }
        regions.insert(ctx.region_id, m.clone());
        // Under the map's lock, as `StoreGc::install` raises the map's regions: a safe
        // point installed meanwhile reaches this region one way or the other.
        m.mvcc.raise_safe_point(self.gc.safe_point());
        Ok(m)
    }

    /// Returns once this store's peer leads the region (in `term`; 0: any term) and has
    /// applied every write committed when it was called.
    async fn read_index(
        &self,
        region_id: u64,
        entry: &BoardEntry,
        term: u64,
    ) -> Result<(), RaftStoreError> {
        ask_store(&self.router, region_id, "read index", |cb| {
            StoreMsg::ReadIndex {
                region_id,
                epoch: entry.region.epoch.unwrap_or_default(),
                term,
                cb,
            }
        })
        .await
    }

    /// Confirms that this peer still leads in `region`'s MVCC term and has applied every
    /// write committed so far: from the leader's lease, or else a read index in that term.
    /// It is the check an empty write makes on the blocking path, for changes that live
    /// only in memory. `None` when the region's peer is gone from this store.
    async fn confirm_term(
        &self,
        region_id: u64,
        region: &RegionMvcc,
    ) -> Option<Result<(), Failure>> {
        if self.board.lease_read(region_id, region.term) {
            return Some(Ok(()));
        }
        let entry = self.board.get(region_id)?;
        Some(
            self.read_index(region_id, &entry, region.term)
                .await
                .map_err(Failure::Region),
        )
    }

    /// Takes pessimistic locks on this task, without the two thread hand-offs to the
    /// blocking pool and back: the locks live in memory, and the read index first (in the
    /// MVCC's term) is the same check the blocking path makes with an empty write. `None`
    /// when that cannot be done without waiting (a latch is held, or a key's lock is on
    /// disk): the caller takes the blocking path.
    async fn lock_in_memory(
        &self,
        region_id: u64,
        region: &RegionMvcc,
        l: &kvpb::PessimisticLockRequest,
    ) -> Option<Result<KvResponse, Failure>> {
        if let Err(e) = self.confirm_term(region_id, region).await? {
            return Some(Err(e));
        }
        let keys = lock_keys_of(l);
        match region.mvcc.try_lock_keys_in_memory(&lock_request(l, &keys)) {
            Ok(Some(values)) => Some(Ok(values_response(values))),
            Ok(None) => None,
            Err(e) => Some(Err(mvcc_failure(e))),
        }
    }

    /// A prewrite of volatile locks on this task, as `lock_in_memory` takes pessimistic
    /// locks: they live in memory, so the read index in the MVCC's term is all the check
    /// the blocking path's empty write would make. `None` when that cannot be done without
    /// waiting: the caller takes the blocking path.
    async fn prewrite_in_memory(
        &self,
        region_id: u64,
        region: &RegionMvcc,
        p: &kvpb::PrewriteRequest,
    ) -> Option<Result<KvResponse, Failure>> {
        if let Err(e) = self.confirm_term(region_id, region).await? {
            return Some(Err(e));
        }
        match region.mvcc.try_prewrite_in_memory(
            &mutations_of(&p.mutations),
            &p.primary,
            Timestamp(p.start_ts),
            p.ttl_ms,
        ) {
            Ok(true) => Some(Ok(KvResponse::default())),
            Ok(false) => None,
            Err(e) => Some(Err(mvcc_failure(e))),
        }
    }

    async fn handle(&self, req: KvRequest) -> KvResponse {
        let arrived = tokio::time::Instant::now();
        let ctx = req.context.unwrap_or_default();
        let mut resp = KvResponse::default();
        let Some(mut cmd) = req.cmd else {
            resp.key_error = Some(KeyError {
                message: "empty command".into(),
                kind: Some(key_error::Kind::Abort("empty command".into())),
            });
            return resp;
        };
        let region = match self.region_mvcc(&ctx).await {
            Ok(r) => r,
            Err(e) => {
                resp.region_error = Some(region_error(&e, &self.board));
                return resp;
            }
        };
        let reads = matches!(cmd, kv_request::Cmd::Get(_) | kv_request::Cmd::Scan(_));
        // Within the leader's lease (checked here, without a hop to the store's thread)
        // what it has applied is current; past it, ask the store for a read index.
        if reads
            && !self.board.lease_read(ctx.region_id, region.term)
            && let Some(entry) = self.board.get(ctx.region_id)
            && let Err(e) = self.read_index(ctx.region_id, &entry, 0).await
        {
            resp.region_error = Some(region_error(&e, &self.board));
            return resp;
        }
        // The peer that was confirmed to lead: a read is answered only if it is still here
        // once the read is done, since a removed peer's data is deleted after it leaves the
        // board, and a read racing that would see the region empty.
        let reader = self.board.peer_id(ctx.region_id);
        let gone = RaftStoreError::RegionNotFound(ctx.region_id);
        if reads && reader.is_none() {
            resp.region_error = Some(region_error(&gone, &self.board));
            return resp;
        }
        // A point read takes no latch and never waits for Raft: it runs on this task
        // rather than paying two thread hand-offs to the blocking pool and back. Scans
        // (up to a page of rows) and every command that may wait stay off the runtime.
        let inline = matches!(cmd, kv_request::Cmd::Get(_));
        let scan_bytes_max = self.cfg.scan_response_bytes_max;
        // Each scan answer may hold `scan_bytes_max`: so many at once, no more.
        let _scan_permit = match &cmd {
            kv_request::Cmd::Scan(_) => self.scan_permits.acquire().await.ok(),
            _ => None,
        };
        let released = released_keys(&cmd);
        // A waiting command holds a task and a place in its stream: however long a client
        // asks for, it waits at most `lock_wait_max` here (and asks again if it wants more).
        let lock_wait = match &cmd {
            kv_request::Cmd::PessimisticLock(l) => {
                Duration::from_millis(u64::from(l.wait_ms)).min(self.cfg.lock_wait_max)
            }
            _ => Duration::ZERO,
        };
        let deadline = tokio::time::Instant::now() + lock_wait;
        // The key last found locked; its waiters' bucket is registered before each attempt,
        // so a release between the attempt and the wait is not missed.
        let mut blocked_on: Option<Vec<u8>> = None;
        let asked_ttl_ms = match &cmd {
            kv_request::Cmd::PessimisticLock(l) => l.ttl_ms,
            _ => 0,
        };
        let outcome = loop {
            // A lock granted after a wait here lives as long past its grant as the client
            // asked for at its sending (see `LockRequest::ttl_ms`), or it is born lapsed.
            if let kv_request::Cmd::PessimisticLock(l) = &mut cmd {
                l.ttl_ms = lock_ttl_ms_after(asked_ttl_ms, arrived.elapsed());
            }
            let notified = blocked_on.as_ref().map(|k| self.waits.bucket(k).notified());
            tokio::pin!(notified);
            if let Some(n) = notified.as_mut().as_pin_mut() {
                n.enable();
            }
            let fast = match &cmd {
                kv_request::Cmd::PessimisticLock(l) => {
                    self.lock_in_memory(ctx.region_id, &region, l).await
                }
                kv_request::Cmd::Prewrite(p) if p.volatile_locks => {
                    self.prewrite_in_memory(ctx.region_id, &region, p).await
                }
                kv_request::Cmd::Prewrite(_) | kv_request::Cmd::Commit(_) => {
                    // On a task of its own: once proposed, the write must make its
                    // in-memory half when it applies even if this request is cancelled
                    // (its client went away), or a committed transaction's lock would
                    // stay in memory until resolved.
                    let (m, c) = (region.clone(), cmd.clone());
                    match tokio::spawn(async move { write_without_blocking(&m, &c).await }).await {
                        Ok(done) => done,
                        Err(e) => Some(Err(Failure::Key(KeyError {
                            message: e.to_string(),
                            kind: Some(key_error::Kind::Abort(e.to_string())),
                        }))),
                    }
                }
                _ => None,
            };
            let outcome = if let Some(done) = fast {
                Ok(done)
            } else if inline {
                Ok(run(&region.mvcc, cmd.clone(), scan_bytes_max))
            } else {
                let (m, c) = (region.clone(), cmd.clone());
                tokio::task::spawn_blocking(move || run(&m.mvcc, c, scan_bytes_max)).await
            };
            let locked_key = match &outcome {
                Ok(Err(Failure::Key(KeyError {
                    kind: Some(key_error::Kind::Locked(l)),
                    ..
                }))) => Some(l.key.to_vec()),
                _ => None,
            };
            let Some(key) = locked_key else { break outcome };
            if tokio::time::Instant::now() >= deadline {
                break outcome;
            }
            if blocked_on.as_ref() != Some(&key) {
                // Register for this key, then try again before waiting.
                blocked_on = Some(key);
                continue;
            }
            let woken = notified.as_mut().as_pin_mut().expect("registered");
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        };
        if matches!(outcome, Ok(Ok(_))) && !released.is_empty() {
            self.waits.released(&released);
        }
        if reads && self.board.peer_id(ctx.region_id) != reader {
            resp.region_error = Some(region_error(&gone, &self.board));
            return resp;
        }
        match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(Failure::Region(e))) => {
                resp.region_error = Some(region_error(&e, &self.board));
                resp
            }
            Ok(Err(Failure::Key(k))) => {
                resp.key_error = Some(k);
                resp
            }
            Err(e) => {
                resp.key_error = Some(KeyError {
                    message: e.to_string(),
                    kind: Some(key_error::Kind::Abort(e.to_string())),
                });
                resp
            }
        }
    }
}

/// Runs a prewrite or commit on this task, without the two thread hand-offs to the
/// blocking pool and back: MVCC prepares the write under its latches (held across the
/// wait), the region's Raft group writes it, and the callback wakes this task. `None`
/// when MVCC cannot prepare it without waiting (a latch is held), or for volatile locks:
/// the caller takes the blocking path.
async fn write_without_blocking(
    region: &RegionMvcc,
    cmd: &kv_request::Cmd,
) -> Option<Result<KvResponse, Failure>> {
    use kv_request::Cmd;
    let prepared = match cmd {
        Cmd::Prewrite(p) if !p.volatile_locks => region.mvcc.try_prepare_prewrite(
            &mutations_of(&p.mutations),
            &p.primary,
            Timestamp(p.start_ts),
            p.ttl_ms,
        ),
        Cmd::Commit(c) => region.mvcc.try_prepare_commit(
            &c.keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>(),
            Timestamp(c.start_ts),
            Timestamp(c.commit_ts),
        ),
        _ => return None,
    };
    let mut pending = match prepared {
        Ok(Some(pending)) => pending,
        Ok(None) => return None,
        Err(e) => return Some(Err(mvcc_failure(e))),
    };
    let (tx, rx) = oneshot::channel();
    let submitted = region.engine.submit(
        pending.take_batch(),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    let written = match submitted {
        Err(e) => Err(to_storage_error(e)),
        Ok(()) => match tokio::time::timeout(WRITE_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(to_storage_error(e)),
            // The outcome is unknown: the proposal may still commit. Percolator's records
            // are idempotent, so the caller's retry is safe either way.
            _ => Err(flotilla_storage::StorageError::Unavailable(format!(
                "region {}: no answer to a write within {WRITE_TIMEOUT:?}",
                region.engine.region().id
            ))),
        },
    };
    Some(match written {
        Ok(()) => {
            pending.finish();
            Ok(KvResponse::default())
        }
        // As a failed append leaves MVCC: the in-memory half is not made.
        Err(e) => Err(mvcc_failure(MvccError::Storage(e))),
    })
}

fn lock_keys_of(l: &PessimisticLockRequest) -> Vec<(Vec<u8>, bool)> {
    l.keys
        .iter()
        .map(|k| (k.key.to_vec(), k.must_not_exist))
        .collect()
}

fn lock_request<'a>(l: &'a PessimisticLockRequest, keys: &'a [(Vec<u8>, bool)]) -> LockKeys<'a> {
    LockKeys {
        keys,
        primary: &l.primary,
        start_ts: Timestamp(l.start_ts),
        for_update_ts: Timestamp(l.for_update_ts),
        ttl_ms: l.ttl_ms,
        need_values: l.need_values,
        shared: l.shared,
        key_only: l.key_only,
    }
}

/// A lock's answer: each key's newest committed value, when asked for.
fn values_response(values: Vec<Option<Vec<u8>>>) -> KvResponse {
    KvResponse {
        values: values
            .into_iter()
            .map(|v| OptionalValue {
                value: v.map(Into::into),
            })
            .collect(),
        ..Default::default()
    }
}

fn mutations_of(mutations: &[kvpb::Mutation]) -> Vec<Mutation> {
    mutations
        .iter()
        .map(|m| Mutation {
            key: m.key.to_vec(),
            op: match m.op {
                0 => MutationOp::Put(m.value.to_vec()),
                1 => MutationOp::Delete,
                _ => MutationOp::Lock,
            },
            check: KeyCheck::from_code(m.check),
        })
        .collect()
}

fn placement_of(p: &PrewriteRequest) -> PrewriteLocks {
    if p.volatile_locks {
        PrewriteLocks::Volatile
    } else {
        PrewriteLocks::Durable
    }
}

/// The keys whose locks a successful command removes (waiters on them are woken).
fn released_keys(cmd: &kv_request::Cmd) -> Vec<Vec<u8>> {
    use kv_request::Cmd;
    match cmd {
        Cmd::Commit(c) => c.keys.iter().map(|k| k.to_vec()).collect(),
        Cmd::Rollback(k) | Cmd::PessimisticRollback(k) => {
            k.keys.iter().map(|k| k.to_vec()).collect()
        }
        Cmd::ResolveLock(r) => r.keys.iter().map(|k| k.to_vec()).collect(),
        Cmd::CheckTxnStatus(c) => vec![c.primary.to_vec()],
        _ => Vec::new(),
    }
}

fn reader(ts: u64) -> Option<Timestamp> {
    (ts != 0).then_some(Timestamp(ts))
}

fn keys_of(keys: Vec<bytes_t::Bytes>) -> Vec<Vec<u8>> {
    keys.into_iter().map(|k| k.to_vec()).collect()
}

mod bytes_t {
    pub use tonic::codegen::Bytes;
}

/// Runs one command on a region's MVCC (blocking: writes wait for Raft). A scan whose
/// client follows `next_key` answers at most about `scan_bytes_max` bytes of pairs.
fn run(mvcc: &Mvcc, cmd: kv_request::Cmd, scan_bytes_max: usize) -> Result<KvResponse, Failure> {
    use kv_request::Cmd;
    let mut resp = KvResponse::default();
    match cmd {
        Cmd::Get(g) => {
            if let Some(v) = mvcc
                .get(&g.key, Timestamp(g.ts), reader(g.reader_ts))
                .map_err(mvcc_failure)?
            {
                resp.found = true;
                resp.pairs.push(KvPair {
                    key: g.key,
                    value: v.into(),
                });
            }
        }
        Cmd::Scan(s) => {
            // A client that does not follow next_key (an older build) would take a cut
            // answer for the end of the region: it gets the whole page, as before.
            let bytes_max = if s.follows_next_key {
                scan_bytes_max
            } else {
                usize::MAX
            };
            let limit = s.limit as usize;
            let pairs = mvcc
                .scan_bounded(
                    &s.start_key,
                    &s.end_key,
                    Timestamp(s.ts),
                    limit,
                    bytes_max,
                    reader(s.reader_ts),
                )
                .map_err(mvcc_failure)?;
            let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
            if pairs.len() < limit
                && bytes >= bytes_max
                && let Some((last, _)) = pairs.last()
            {
                let mut next = last.clone();
                next.push(0);
                resp.next_key = Some(next.into());
            }
            resp.pairs = pairs
                .into_iter()
                .map(|(k, v)| KvPair {
                    key: k.into(),
                    value: v.into(),
                })
                .collect();
        }
        Cmd::PessimisticLock(l) => {
            let keys = lock_keys_of(&l);
            let values = mvcc
                .lock_keys(&lock_request(&l, &keys))
                .map_err(mvcc_failure)?;
            resp = values_response(values);
        }
        Cmd::PessimisticRollback(k) => {
            mvcc.pessimistic_rollback(&keys_of(k.keys), Timestamp(k.start_ts))
                .map_err(mvcc_failure)?;
        }
        Cmd::Prewrite(p) => {
            mvcc.prewrite(
                &mutations_of(&p.mutations),
                &p.primary,
                Timestamp(p.start_ts),
                p.ttl_ms,
                placement_of(&p),
            )
            .map_err(mvcc_failure)?;
        }
        Cmd::Commit(c) => {
            mvcc.commit(
                &keys_of(c.keys),
                Timestamp(c.start_ts),
                Timestamp(c.commit_ts),
            )
            .map_err(mvcc_failure)?;
        }
        Cmd::Rollback(k) => {
            mvcc.rollback(&keys_of(k.keys), Timestamp(k.start_ts))
                .map_err(mvcc_failure)?;
        }
        Cmd::Heartbeat(h) => {
            resp.ttl_ms = mvcc
                .txn_heartbeat(&h.primary, Timestamp(h.start_ts), h.ttl_ms)
                .map_err(mvcc_failure)?;
        }
        Cmd::CheckTxnStatus(c) => {
            let status = mvcc
                .check_txn_status(
                    &c.primary,
                    Timestamp(c.lock_ts),
                    Timestamp(c.current_ts),
                    false,
                    if c.primary_met {
                        MissingPrimary::Report
                    } else {
                        MissingPrimary::Fence
                    },
                )
                .map_err(mvcc_failure)?;
            resp.txn_status = Some(match status {
                TxnStatus::Locked { lock } => kvpb::TxnStatus {
                    state: 0,
                    commit_ts: 0,
                    lock: Some(kvpb::LockInfo {
                        key: c.primary.clone(),
                        primary: lock.primary.into(),
                        start_ts: lock.start_ts.0,
                        ttl_ms: lock.ttl_ms,
                        kind: lock.kind as u32,
                    }),
                },
                TxnStatus::Committed { commit_ts } => kvpb::TxnStatus {
                    state: 1,
                    commit_ts: commit_ts.0,
                    lock: None,
                },
                TxnStatus::RolledBack => kvpb::TxnStatus {
                    state: 2,
                    commit_ts: 0,
                    lock: None,
                },
                TxnStatus::Released => kvpb::TxnStatus {
                    state: 3,
                    commit_ts: 0,
                    lock: None,
                },
            });
        }
        Cmd::ResolveLock(r) => {
            let commit = (r.commit_ts != 0).then_some(Timestamp(r.commit_ts));
            mvcc.resolve_lock(&keys_of(r.keys), Timestamp(r.start_ts), commit)
                .map_err(mvcc_failure)?;
        }
        Cmd::Ingest(i) => {
            let entries: Vec<flotilla_mvcc::IngestEntry> = i
                .entries
                .into_iter()
                .map(|e| flotilla_mvcc::IngestEntry {
                    key: e.key.to_vec(),
                    value: e.value.to_vec(),
                    unique: e.unique,
                })
                .collect();
            mvcc.ingest(&entries, Timestamp(i.ts))
                .map_err(mvcc_failure)?;
        }
        Cmd::DeleteRange(d) => {
            resp.next_key = mvcc
                .delete_range(&d.start_key, &d.end_key, d.limit as usize)
                .map_err(mvcc_failure)?
                .map(Into::into);
        }
        Cmd::ScanLocks(s) => {
            let locks = mvcc
                .scan_locks(
                    &s.start_key,
                    &s.end_key,
                    Timestamp(s.max_ts),
                    s.limit as usize,
                )
                .map_err(mvcc_failure)?;
            resp.locks = locks
                .into_iter()
                .map(|(key, l)| kvpb::LockInfo {
                    key: key.into(),
                    primary: l.primary.into(),
                    start_ts: l.start_ts.0,
                    ttl_ms: l.ttl_ms,
                    kind: l.kind as u32,
                })
                .collect();
        }
    }
    Ok(resp)
}

#[derive(Clone)]
struct StoreService {
    shared: Arc<Shared>,
    /// Set when the node stops: open Raft streams end, so the server's graceful shutdown
    /// does not wait for peers that never close theirs.
    stopping: watch::Receiver<bool>,
}

impl Shared {
    /// Splits a region this store leads at encoded key `split_key`, and tells the meta
    /// service the new layout at once.
    async fn split(
        &self,
        ctx: &Context,
        split_key: Vec<u8>,
    ) -> Result<Vec<Region>, RaftStoreError> {
        let entry = self
            .board
            .get(ctx.region_id)
            .ok_or(RaftStoreError::RegionNotFound(ctx.region_id))?;
        if !entry.is_leader {
            return Err(RaftStoreError::NotLeader {
                region_id: ctx.region_id,
                leader: entry.leader,
            });
        }
        // Locks this leader holds only in memory stay with the left half (same region,
        // same MVCC); a split that would move some to the new region waits until their
        // transactions finish, so none is lost. New ones are fenced off the right half
        // from the check until the split has applied.
        // The region's MVCC is made now if no request has made it yet: one made after
        // this check would not know the fence.
        let current = self.region_mvcc(ctx).await?;
        let fence = match Some(current).filter(|m| m.term == entry.term) {
            Some(m) => {
                let (start, end) = (split_key.clone(), entry.region.end_key.to_vec());
                Some(raise_fence(&m, &start, &end, false).await.ok_or_else(|| {
                    RaftStoreError::ServerIsBusy("raising the split fence failed".into())
                })?)
            }
            None => None,
        };
        let busy = match &fence {
            Some(f) => {
                let (m, start, end) = (
                    f.0.clone(),
                    split_key.clone(),
                    entry.region.end_key.to_vec(),
                );
                !tokio::task::spawn_blocking(move || {
                    m.mvcc
                        .wait_memory_locks_gone(&start, &end, SPLIT_LOCK_DRAIN_MAX)
                })
                .await
                .map_err(|e| RaftStoreError::Storage(e.to_string()))?
            }
            None => false,
        };
        if busy {
            return Err(RaftStoreError::ServerIsBusy(format!(
                "region {}: transactions hold in-memory locks past the split key; split later",
                ctx.region_id
            )));
        }
        let ids = self
            .meta
            .ask_split(entry.region.clone())
            .await
            .map_err(|e| RaftStoreError::ServerIsBusy(e.to_string()))?;
        let regions = ask_store(&self.router, ctx.region_id, "split", |cb| StoreMsg::Split {
            region_id: ctx.region_id,
            epoch: ctx.epoch.unwrap_or_default(),
            split_key,
            new_region_id: ids.new_region_id,
            new_peer_ids: ids.new_peer_ids,
            cb,
        })
        .await?;
        if let Some(fence) = fence {
            fence.keep();
        }
        for r in &regions {
            let leader = r
                .peers
                .iter()
                .find(|p| p.store_id == self.store_id)
                .copied();
            let _ = self
                .meta
                .region_heartbeat(RegionHeartbeatRequest {
                    region: Some(r.clone()),
                    leader,
                    ..Default::default()
                })
                .await;
        }
        tracing::info!(region_id = ctx.region_id, ?regions, "region split");
        Ok(regions)
    }
}

#[tonic::async_trait]
impl StoreRpc for StoreService {
    async fn raft(&self, request: Request<RaftMessageBatch>) -> Result<Response<RaftDone>, Status> {
        for m in request.into_inner().messages {
            // A full mailbox drops the message; Raft retransmits.
            let _ = self.shared.router.send(StoreMsg::Raft(m));
        }
        Ok(Response::new(RaftDone {}))
    }

    async fn raft_stream(
        &self,
        request: Request<tonic::Streaming<RaftMessageBatch>>,
    ) -> Result<Response<RaftDone>, Status> {
        flotilla_client::deliver_raft_stream(
            request.into_inner(),
            &self.shared.router,
            self.stopping.clone(),
        )
        .await?;
        Ok(Response::new(RaftDone {}))
    }

    async fn raft_chunks(
        &self,
        request: Request<tonic::Streaming<flotilla_proto::raft_serverpb::RaftMessageChunk>>,
    ) -> Result<Response<RaftDone>, Status> {
        flotilla_client::deliver_raft_chunks(
            request.into_inner(),
            &self.shared.router,
            self.shared.cfg.raft_limits.chunked_message_bytes_max,
            self.stopping.clone(),
        )
        .await?;
        Ok(Response::new(RaftDone {}))
    }

    type KvStreamStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<KvBatchResponse, Status>> + Send + 'static>,
    >;

    async fn kv_stream(
        &self,
        request: Request<tonic::Streaming<KvBatchRequest>>,
    ) -> Result<Response<Self::KvStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let in_flight_max = self.shared.cfg.kv_stream_in_flight_max.max(1);
        let (answers, rx) = tokio::sync::mpsc::channel::<(u64, KvResponse)>(in_flight_max);
        let permits = Arc::new(tokio::sync::Semaphore::new(in_flight_max));
        let shared = self.shared.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    b = inbound.message() => b,
                    _ = stopping.wait_for(|s| *s) => Ok(None),
                };
                // The client closed its side, or the stream broke, or this node stops:
                // commands already taken still get their answers.
                let Ok(Some(batch)) = batch else { return };
                for (id, req) in batch.ids.into_iter().zip(batch.requests) {
                    // At the bound, stop reading: the client's commands wait in TCP and
                    // HTTP/2 flow control (and its own bounded queue) instead of here.
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    // The store's bound on every client's commands together, likewise.
                    let Ok(store_permit) = shared.kv_permits.clone().acquire_owned().await else {
                        return;
                    };
                    let (shared, answers) = (shared.clone(), answers.clone());
                    tokio::spawn(async move {
                        let resp = shared.handle(req).await;
                        let _ = answers.send((id, resp)).await;
                        drop((permit, store_permit));
                    });
                }
            }
        });
        let outbound = futures::stream::unfold(rx, |mut rx| async move {
            let (id, resp) = rx.recv().await?;
            let mut bytes = flotilla_proto::Message::encoded_len(&resp);
            let mut batch = KvBatchResponse {
                ids: vec![id],
                responses: vec![resp],
            };
            // Answers ready together share a frame, up to a bound on its size.
            while bytes < KV_BATCH_BYTES_MAX {
                let Ok((id, resp)) = rx.try_recv() else { break };
                bytes += flotilla_proto::Message::encoded_len(&resp);
                batch.ids.push(id);
                batch.responses.push(resp);
            }
            Some((Ok(batch), rx))
        });
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn kv(&self, request: Request<KvRequest>) -> Result<Response<KvResponse>, Status> {
        let _permit = self
            .shared
            .kv_permits
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the store is stopping"))?;
        Ok(Response::new(
            self.shared.handle(request.into_inner()).await,
        ))
    }

    async fn split_region(
        &self,
        request: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        let req = request.into_inner();
        let ctx = req.context.unwrap_or_default();
        let mut resp = SplitRegionResponse::default();
        match self.shared.split(&ctx, req.split_key.to_vec()).await {
            Ok(regions) => resp.regions = regions,
            Err(e) if e.is_retryable() => {
                resp.region_error = Some(region_error(&e, &self.shared.board))
            }
            Err(e) => resp.error = e.to_string(),
        }
        Ok(Response::new(resp))
    }

    async fn replica_checksum(
        &self,
        request: Request<ReplicaChecksumRequest>,
    ) -> Result<Response<ReplicaChecksumResponse>, Status> {
        let req = request.into_inner();
        let mut resp = ReplicaChecksumResponse::default();
        if req.at_index == 0 {
            let region_id = req.region_id;
            let result = ask_store(&self.shared.router, region_id, "checksum", |cb| {
                StoreMsg::ComputeHash { region_id, cb }
            })
            .await;
            match result {
                Ok((index, checksum, keys)) => {
                    resp.applied_index = index;
                    resp.checksum = checksum;
                    resp.key_count = keys;
                }
                Err(e) => resp.error = e.to_string(),
            }
        } else {
            match (
                self.shared.board.get(req.region_id),
                self.shared.checksums.checksum(req.region_id),
            ) {
                (None, _) => resp.error = format!("region {} not on this store", req.region_id),
                (Some(_), Some((index, Ok((checksum, keys))))) if index == req.at_index => {
                    resp.applied_index = index;
                    resp.checksum = checksum;
                    resp.key_count = keys;
                }
                (Some(_), Some((index, Err(e)))) if index == req.at_index => {
                    resp.error = format!("no checksum at index {index}: {e}");
                }
                (Some(entry), _) => {
                    resp.error = format!(
                        "no checksum at index {} yet (applied {})",
                        req.at_index, entry.applied_index
                    )
                }
            }
        }
        resp.region = self.shared.board.get(req.region_id).map(|e| e.region);
        Ok(Response::new(resp))
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let entries = shared.board.all();
        let leaders: Vec<&BoardEntry> = entries.iter().filter(|e| e.is_leader).collect();
        // Forget MVCC state of regions this store no longer leads.
        shared.regions.lock().retain(|id, m| {
            entries
                .iter()
                .any(|e| e.region.id == *id && e.is_leader && e.term == m.term)
        });
        shared.merge_checks.retain(|id| {
            leaders
                .iter()
                .any(|e| e.region.id == id && is_merging(&e.region))
        });
        let (capacity_bytes, available_bytes) = disk_of(&shared.cfg.data_dir);
        let gc = match gc::report(&shared).await {
            Ok(report) => Some(report),
            Err(e) => {
                // Unset holds GC back until a later heartbeat reports.
                tracing::warn!("GC report: {e}");
                None
            }
        };
        let stats = StoreStats {
            capacity_bytes,
            available_bytes,
            region_count: entries.len() as u32,
            leader_count: leaders.len() as u32,
            is_empty: entries.is_empty(),
            gc,
        };
        let store = store_meta(&shared.cfg, shared.store_id);
        let binary_version = to_report(shared.cfg.binary_version);
        match shared
            .meta
            .store_heartbeat(store, stats, binary_version)
            .await
        {
            Ok(resp) => {
                shared
                    .gc
                    .install(&shared.regions, resp.gc_safe_point, resp.gc_collect_point)
            }
            // Refused: this build is older than the cluster. Its replicas serve on until
            // the meta service counts the store down and replaces them.
            Err(flotilla_client::ClientError::Failed(e)) => tracing::error!("store heartbeat: {e}"),
            Err(e) => tracing::debug!("store heartbeat: {e}"),
        }
        for e in leaders {
            let req = RegionHeartbeatRequest {
                region: Some(e.region.clone()),
                leader: e.region.peers.iter().find(|p| p.id == e.peer_id).copied(),
                approximate_keys: e.written_keys,
                approximate_bytes: 0,
                term: e.term,
                pending_peer_ids: e.pending_peers.clone(),
                pending_peers: Some(flotilla_proto::metaservicepb::PendingPeers {
                    ids: e.pending_peers.clone(),
                }),
                merge_source_empty: shared.merge_source_empty(&e.region),
            };
            match shared.meta.region_heartbeat(req).await {
                Ok(resp) => {
                    if let Some(to) = resp.transfer_leader {
                        let (shared, region) = (shared.clone(), e.region.clone());
                        tokio::spawn(async move {
                            shared.transfer_leader_gracefully(region, to).await;
                        });
                    }
                    if let Some(step) = resp.replace_peer {
                        let (shared, region_id) = (shared.clone(), e.region.id);
                        tokio::spawn(async move {
                            shared.replace_peer(region_id, step).await;
                        });
                    }
                    if let Some(step) = merge_step(&resp) {
                        let (shared, region) = (shared.clone(), e.region.clone());
                        tokio::spawn(async move {
                            shared.merge_step(region, step).await;
                        });
                    }
                }
                Err(err) => tracing::debug!(region_id = e.region.id, "region heartbeat: {err}"),
            }
        }
    }
}

/// A merge step a region heartbeat's answer asks for.
enum MergeStepAsked {
    Prepare,
    Commit {
        source: Region,
        epoch: flotilla_proto::metapb::RegionEpoch,
    },
    Rollback,
}

fn merge_step(
    resp: &flotilla_proto::metaservicepb::RegionHeartbeatResponse,
) -> Option<MergeStepAsked> {
    if resp.prepare_merge == Some(true) {
        return Some(MergeStepAsked::Prepare);
    }
    if let Some(c) = &resp.commit_merge
        && let (Some(source), Some(epoch)) = (c.source.clone(), c.epoch)
    {
        return Some(MergeStepAsked::Commit { source, epoch });
    }
    (resp.rollback_merge == Some(true)).then_some(MergeStepAsked::Rollback)
}

/// Sends the store thread the request `make` builds around a callback, and waits for its
/// answer up to `WRITE_TIMEOUT` (then `ServerIsBusy`: the outcome is unknown, and every
/// caller's request is safe to repeat).
async fn ask_store<T: Send + 'static>(
    router: &StoreRouter,
    region_id: u64,
    what: &str,
    make: impl FnOnce(flotilla_raftstore::Callback<T>) -> StoreMsg,
) -> Result<T, RaftStoreError> {
    let (tx, rx) = oneshot::channel();
    router.send(make(Box::new(move |r| {
        let _ = tx.send(r);
    })))?;
    match tokio::time::timeout(WRITE_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        _ => Err(RaftStoreError::ServerIsBusy(format!(
            "region {region_id}: {what} timed out ({WRITE_TIMEOUT:?})"
        ))),
    }
}

/// Total and available bytes of the filesystem holding `dir` (0, 0 if unknown).
fn disk_of(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed struct statvfs fills.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return (0, 0);
    }
    let block = st.f_frsize as u64;
    (st.f_blocks as u64 * block, st.f_bavail as u64 * block)
}

/// Splits regions this store leads once they pass the key or size threshold: after every
/// `split_check_written_keys` commit records, the region's keys are counted and, past a
/// threshold, it splits at its middle key.
async fn split_check_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut checked: HashMap<u64, u64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for e in shared.board.all() {
            if !e.is_leader {
                continue;
            }
            let last = checked.entry(e.region.id).or_insert(0);
            if e.written_keys < *last + shared.cfg.split_check_written_keys {
                continue;
            }
            *last = e.written_keys;
            let local = shared.local.clone();
            let region = e.region.clone();
            let (max_keys, max_bytes) =
                (shared.cfg.region_split_keys, shared.cfg.region_split_bytes);
            let split_key = tokio::task::spawn_blocking(move || {
                find_split_key(&local, &region, max_keys, max_bytes)
            })
            .await
            .ok()
            .flatten();
            if let Some(key) = split_key {
                let ctx = Context {
                    region_id: e.region.id,
                    epoch: e.region.epoch,
                };
                if let Err(err) = shared.split(&ctx, key).await {
                    tracing::info!(region_id = e.region.id, "split: {err}");
                    // Check again on the next round.
                    checked.insert(
                        e.region.id,
                        e.written_keys
                            .saturating_sub(shared.cfg.split_check_written_keys),
                    );
                }
            }
        }
    }
}

/// The middle user key of a region (as an encoded key: a valid region boundary) if it
/// holds more than `max_keys` keys or `max_bytes` bytes of newest versions.
fn find_split_key(
    engine: &EngineRef,
    region: &Region,
    max_keys: u64,
    max_bytes: u64,
) -> Option<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0u64;
    for item in engine.scan(Cf::Latest, &region.start_key, &region.end_key, false) {
        let (k, v) = item.ok()?;
        bytes += (k.len() + v.len()) as u64;
        keys.push(k);
    }
    if (keys.len() as u64) <= max_keys && bytes <= max_bytes {
        return None;
    }
    let mid = keys.get(keys.len() / 2)?.clone();
    (mid.as_slice() > region.start_key.as_ref()).then_some(mid)
}
