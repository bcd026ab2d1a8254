//! The store: every region peer a node hosts, driven together in rounds.
//!
//! A round (`Store::process_ready`) collects the Ready of every peer that has one, writes
//! all their log entries and hard states in **one** engine batch with one fsync, then sends
//! the messages that had to wait for it, applies committed entries of all peers in one more
//! batch (data and applied index together), and answers proposals and reads. Outgoing
//! messages of a round go to the transport together, so it can batch them per store.
//! Thousands of regions therefore cost one thread and two batch writes per round, not a
//! thread or a task each.
//!
//! The store is single-threaded by design (`&mut self` everywhere): the production loop
//! (`crate::driver`) owns it on one thread, and the deterministic tests drive it directly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_proto::Message as _;
use flotilla_proto::metapb::{Peer as PeerMeta, PeerRole, Region, RegionEpoch};
use flotilla_proto::raft_serverpb::{
    ChangePeerContext, CommitMergeRequest, ComputeHashRequest, KvOp, PeerState,
    PrepareMergeRequest, RaftCommand, RaftMessage, RegionLocalState, RollbackMergeRequest,
    SplitRequest, WriteRequest, raft_command,
};
use flotilla_storage::{Cf, EngineRef, WriteBatch, WriteOp};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry, EntryType,
    Message as RaftMsg, MessageType,
};
use raft::{RawNode, SnapshotStatus, StateRole};

use crate::board::{BoardEntry, Lease, LeaseCell, RegionBoard};
use crate::error::RaftStoreError;
use crate::hasher::{HashTask, RegionChecksum, RegionHasher, checksum, pending_writes};
use crate::keys;
use crate::snap_apply::{ApplyTask, SnapApplier};
use crate::snap_gen::SnapGenerator;
use crate::storage::{
    DATA_CFS, PeerStorage, data_cf_from_proto, data_cf_to_proto, region_contains, snapshot_region,
    stage_clear_range, write_initial_state, write_split_state,
};

/// Tuning of a store's Raft groups. Every bound here is enforced and answered with a
/// retryable error (`ServerIsBusy`) when reached.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This store's id (non-zero, unique in the cluster).
    pub store_id: u64,
    /// Ticks without a leader's heartbeat before a follower campaigns (randomised up to 2×).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// The randomised election timeout is drawn from `[min, max)` ticks; 0 means raft-rs's
    /// default `[election_ticks, 2 × election_ticks)`. Deterministic tests fix it per store.
    pub min_election_ticks: usize,
    /// See `min_election_ticks`.
    pub max_election_ticks: usize,
    /// Upper bound of one append message's entries, in bytes.
    pub max_size_per_msg_bytes: u64,
    /// Append messages in flight to one follower before the leader waits for acks.
    pub max_inflight_msgs: usize,
    /// A peer compacts its log once it holds this many applied entries.
    pub log_gc_count_limit: u64,
    /// A leader keeps the entries a follower at most this many entries behind still
    /// needs (a store that is down or restarting included), past `log_gc_count_limit`;
    /// a follower further behind is sent a snapshot of the whole region instead.
    pub log_keep_for_lagging_entries: u64,
    /// Proposals waiting to be applied, per region.
    pub max_pending_proposals: usize,
    /// Linearizable reads waiting for their read index, per region.
    pub max_pending_reads: usize,
    /// fsync the Raft log before acknowledging (off only in tests that cannot crash).
    pub sync_log: bool,
    /// A leader answers ReadIndex from its lease (no round trip, see `Lease`) instead of
    /// confirming leadership with a quorum first; readers on other threads may check the
    /// lease themselves (`RegionBoard::lease_read`). Off: every read asks a quorum.
    pub lease_reads: bool,
    /// The Raft clock the driver ticks this store at (`DriverConfig::tick_interval`, which
    /// must be the same): the lease's wall-clock length is derived from it.
    pub tick_interval: Duration,
    /// Bytes of a peer's newest log entries kept in memory for applying them and for
    /// appends to followers (see `PeerStorage::set_entry_cache_bytes_max`).
    pub entry_cache_bytes_max: u64,
    /// Region snapshots waiting to be built on the store's snapshot thread (`SnapGenerator`);
    /// past it a follower waits for a later try. 0 builds them on the store thread, which
    /// stalls every region of the store meanwhile.
    pub snapshot_build_queue: usize,
    /// Snapshots a follower received whose data is written into the engine on the store's
    /// snapshot writer thread (`SnapApplier`) rather than on the store thread: queued,
    /// being written, or written and not yet installed. Each is held whole in memory; past
    /// it a new snapshot is dropped and its leader sends it again later. 0 writes them on
    /// the store thread, which stalls every region of the store meanwhile.
    pub snapshot_apply_queue: usize,
    /// Bytes of keys and values per engine batch when a snapshot's data is written off the
    /// store thread: a batch holds the engine's journal while it goes into the memtables,
    /// so the store thread's own writes wait for at most one.
    pub snapshot_apply_batch_bytes: usize,
    /// Region checksums (`StoreMsg::ComputeHash`) waiting for the store's checksum thread
    /// (`RegionHasher`; at least 1). Each holds a point-in-time view of the engine, which
    /// keeps the versions it sees from being compacted away; past it a replica records a
    /// retryable failure at the index instead of a checksum.
    pub checksum_queue: usize,
}

impl StoreConfig {
    /// A lease's length in ticks: a follower refuses other candidates for `election_ticks`
    /// of its ticks after hearing the leader, and up to two of them may come early (one
    /// late tick carried over, one on the heartbeat's heels), so two fewer.
    pub fn lease_ticks(&self) -> u64 {
        (self.election_ticks as u64).saturating_sub(2)
    }

    /// A lease's length in time: `lease_ticks` of the clock, less a tenth for clocks that
    /// run at slightly different rates (TiKV: a 9 s lease for 10 s elections).
    pub fn lease_duration(&self) -> Duration {
        self.tick_interval * self.lease_ticks() as u32 * 9 / 10
    }

    /// Defaults for `store_id`: 10 ticks election, 2 ticks heartbeat (1–2 s elections at
    /// the default 100 ms tick), 1 MiB messages, 256 in flight, log compaction every 1,024
    /// entries, 4,096 pending proposals and reads per region, fsync on, lease reads (720 ms
    /// leases), 4 MiB of cached log entries per region, 16 snapshots queued for building,
    /// 4 received snapshots written off the store thread at once, in 1 MiB batches, 8
    /// region checksums queued.
    pub fn new(store_id: u64) -> Self {
        Self {
            store_id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            min_election_ticks: 0,
            max_election_ticks: 0,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            log_gc_count_limit: 1024,
            log_keep_for_lagging_entries: LOG_KEEP_FOR_LAGGING_ENTRIES_DEFAULT,
            max_pending_proposals: 4096,
            max_pending_reads: 4096,
            sync_log: true,
            lease_reads: true,
            tick_interval: Duration::from_millis(100),
            entry_cache_bytes_max: crate::storage::ENTRY_CACHE_BYTES_MAX_DEFAULT,
            snapshot_build_queue: 16,
            snapshot_apply_queue: 4,
            snapshot_apply_batch_bytes: 1 << 20,
            checksum_queue: 8,
        }
    }
}

/// Where a store's outgoing Raft messages go. Called once per round with every message of
/// the round, so implementations can batch them per destination store.
pub trait Transport: Send + Sync {
    /// Sends the messages; delivery is best effort (Raft retries).
    fn send(&self, messages: Vec<RaftMessage>);
}

/// Called with the outcome of a request, on the store's thread: keep it short.
pub type Callback<T> = Box<dyn FnOnce(Result<T, RaftStoreError>) + Send>;

/// One membership change of a region.
#[derive(Debug, Clone)]
pub struct PeerChange {
    /// `AddNode` (a voter, or promote a learner), `AddLearnerNode`, or `RemoveNode`.
    pub change_type: ConfChangeType,
    /// The peer (its id and store; the role follows from the change).
    pub peer: PeerMeta,
}

/// A request to the store.
pub enum StoreMsg {
    /// A Raft message from another store.
    Raft(RaftMessage),
    /// Replicate and apply a batch of data writes in the region (leader only).
    Write {
        region_id: u64,
        epoch: RegionEpoch,
        /// The leader term the batch was computed in (0: any). A leader that lost and
        /// regained leadership refuses batches computed from its older term's in-memory
        /// state (`StaleCommand`).
        term: u64,
        batch: WriteBatch,
        cb: Callback<()>,
    },
    /// Every replica checksums the region's data as of this command's log index, off the
    /// store thread (`Store::checksums`); the leader answers (log index, checksum, key
    /// count) once its own is computed.
    ComputeHash {
        region_id: u64,
        cb: Callback<(u64, u64, u64)>,
    },
    /// Resolves once this leader has applied everything committed before the request, so
    /// a read of the local engine after it is linearizable.
    ReadIndex {
        region_id: u64,
        epoch: RegionEpoch,
        /// The leader term the reader serves (0: any); another term is `StaleCommand`, as
        /// for a write (see `Write::term`).
        term: u64,
        cb: Callback<()>,
    },
    /// Change the region's membership; several changes go through joint consensus.
    ChangePeers {
        region_id: u64,
        changes: Vec<PeerChange>,
        cb: Callback<Region>,
    },
    /// Split the region at `split_key`; the right part becomes `new_region_id`.
    Split {
        region_id: u64,
        epoch: RegionEpoch,
        split_key: Vec<u8>,
        new_region_id: u64,
        new_peer_ids: Vec<u64>,
        cb: Callback<Vec<Region>>,
    },
    /// Freeze the region to be absorbed by its left neighbour (`Region::merging`): applied
    /// only if it holds no data. Answers the frozen region (at once if it already is).
    PrepareMerge {
        region_id: u64,
        epoch: RegionEpoch,
        cb: Callback<Region>,
    },
    /// Absorb `source`, the right neighbour a prepare-merge froze, as its leader reported
    /// it; `epoch` is this region's epoch the caller saw it colocated with the source at.
    /// Answers the grown region.
    CommitMerge {
        region_id: u64,
        epoch: RegionEpoch,
        source: Region,
        cb: Callback<Region>,
    },
    /// Unfreeze a region whose merge will not happen. Answers the region.
    RollbackMerge {
        region_id: u64,
        cb: Callback<Region>,
    },
    /// Hand leadership to another voter.
    TransferLeader { region_id: u64, to_peer_id: u64 },
    /// Campaign now (bootstrap and tests).
    Campaign { region_id: u64 },
}

enum ProposalCb {
    Write(Callback<()>),
    ConfChange(Callback<Region>),
    Split(Callback<Vec<Region>>),
    Hash(Callback<(u64, u64, u64)>),
    Merge(Callback<Region>),
}

impl ProposalCb {
    fn fail(self, e: RaftStoreError) {
        match self {
            ProposalCb::Write(cb) => cb(Err(e)),
            ProposalCb::ConfChange(cb) => cb(Err(e)),
            ProposalCb::Split(cb) => cb(Err(e)),
            ProposalCb::Hash(cb) => cb(Err(e)),
            ProposalCb::Merge(cb) => cb(Err(e)),
        }
    }
}

struct Proposal {
    index: u64,
    term: u64,
    cb: ProposalCb,
}

struct PendingRead {
    id: u64,
    /// The commit index to wait for, once the leader has confirmed it with a quorum.
    index: Option<u64>,
    /// For a read that asked a quorum: the term, tick and time it asked at. Its answer
    /// renews the lease from then.
    asked: Option<(u64, u64, Instant)>,
    cb: Callback<()>,
}

/// A snapshot a follower received, held back from raft-rs while its data is written off
/// the store thread (`SnapApplier`). Meanwhile the peer takes no appends or snapshots,
/// applies nothing, does not tick (so it never campaigns), and no other peer's snapshot
/// may overlap `region`; once the data is written, `msg` is stepped.
struct Applying {
    /// The peer the snapshot is for (a newer peer of the region here makes it stale).
    peer_id: u64,
    /// The region the snapshot fills.
    region: Region,
    msg: RaftMsg,
}

/// What applying an entry produced, answered after the apply batch is written.
enum Applied {
    Write(Result<(), RaftStoreError>),
    ConfChange(Result<Region, RaftStoreError>),
    Split(Result<Vec<Region>, RaftStoreError>),
    /// A checksum at this index, computed off the thread (`RegionHasher`).
    Hash {
        region_id: u64,
        index: u64,
    },
    Merge(Result<Region, RaftStoreError>),
    Noop,
}

/// What applying entries asks of the store once the round's apply batch is staged.
#[derive(Default)]
struct ApplyEffects {
    /// Peers a split created here: (region, this store's peer, campaign at once).
    created: Vec<(u64, PeerMeta, bool)>,
    /// Regions a merge absorbed: their peers here are destroyed in the same batch.
    merged: Vec<Region>,
    /// Checksums to compute off the thread once the round is applied.
    hashes: Vec<HashTask>,
    /// Checksums computed here: (region, log index, checksum).
    hashed: Vec<(u64, u64, RegionChecksum)>,
}

/// Whether a prepare-merge froze the region (`Region::merging`).
pub fn is_merging(region: &Region) -> bool {
    region.merging == Some(true)
}

fn merging_error(region_id: u64) -> RaftStoreError {
    RaftStoreError::ServerIsBusy(format!(
        "region {region_id} is frozen to be merged into its left neighbour, which takes over \
         its range; refresh the route after a backoff"
    ))
}

struct Peer {
    raw: RawNode<PeerStorage>,
    meta: PeerMeta,
    /// Every peer of the region this peer has heard of, for addressing messages.
    peer_cache: HashMap<u64, PeerMeta>,
    proposals: VecDeque<Proposal>,
    reads: VecDeque<PendingRead>,
    /// Snapshots handed to the transport this round, reported to raft after `advance`.
    sent_snapshots: Vec<u64>,
    /// Set when this peer applied its own removal.
    removed: bool,
    /// See `BoardEntry::written_keys`.
    written_keys: u64,
    /// The log index of the last admin proposal (split, checksum) this leader made:
    /// until it is applied, commits are broadcast at once (see `raft_config`).
    admin_index: Option<u64>,
    /// The log index of this leader's prepare-merge proposal until it is applied: no
    /// membership change is proposed meanwhile, so the frozen region's peers are the ones
    /// its prepare-merge saw.
    merge_index: Option<u64>,
    /// See `Lease`; shared with the board.
    lease: LeaseCell,
    /// A read asked a quorum only to renew the lease and is not answered yet.
    renewing: bool,
    /// The store tick at which each other peer last sent this one a message.
    heard_at_tick: HashMap<u64, u64>,
    /// As a follower: how far its leader had compacted its log when it last said so
    /// (`RaftMessage::leader_truncated_index`). See `maybe_compact_log`.
    leader_truncated: Option<u64>,
}

impl Peer {
    fn region(&self) -> &Region {
        self.raw.store().region()
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// As leader: whether `peer_id`'s log is being replicated and at most
    /// `TRANSFER_LAG_MAX_ENTRIES` behind (not probing, not taking a snapshot).
    fn caught_up(&self, peer_id: u64) -> bool {
        let last = self.raw.raft.raft_log.last_index();
        self.raw.raft.prs().get(peer_id).is_some_and(|pr| {
            pr.state == raft::ProgressState::Replicate
                && pr.matched + TRANSFER_LAG_MAX_ENTRIES >= last
        })
    }

    /// As leader: the other peers that are not `caught_up` (reported to the meta service,
    /// which promotes a new learner only once it is not among them). Empty otherwise.
    fn pending_peers(&self) -> Vec<u64> {
        if !self.is_leader() {
            return Vec::new();
        }
        let me = self.meta.id;
        self.region()
            .peers
            .iter()
            .map(|p| p.id)
            .filter(|id| *id != me && !self.caught_up(*id))
            .collect()
    }
    fn leader(&self) -> Option<PeerMeta> {
        self.peer_cache.get(&self.raw.raft.leader_id).cloned()
    }

    fn not_leader(&self) -> RaftStoreError {
        RaftStoreError::NotLeader {
            region_id: self.region().id,
            leader: self.leader(),
        }
    }

    /// Ends the lease: leadership is moving (a transfer, a membership change) or gone.
    fn revoke_lease(&self) {
        *self.lease.lock() = Lease::default();
    }

    /// Whether a lease may be taken or used now: a leader with an entry of its term
    /// committed, handing leadership to no one (the target campaigns at once, past the
    /// followers' refusal) and changing no membership (a new quorum need not have heard
    /// the heartbeats that gave the lease), of a region not frozen for a merge (its left
    /// neighbour may already serve its range).
    fn lease_allowed(&self) -> bool {
        !is_merging(self.region())
            && self.is_leader()
            && self.raw.raft.commit_to_current_term()
            && self.raw.raft.lead_transferee.is_none()
            && !self.raw.raft.has_pending_conf()
    }

    fn refresh_peer_cache(&mut self) {
        let peers = self.region().peers.clone();
        for p in peers {
            self.peer_cache.insert(p.id, p);
        }
    }

    fn fail_all(&mut self, e: &RaftStoreError) {
        for p in self.proposals.drain(..) {
            p.cb.fail(e.clone());
        }
        for r in self.reads.drain(..) {
            (r.cb)(Err(e.clone()));
        }
    }
}

/// Bridges raft-rs's slog logging to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, _values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", "{}", record.msg()),
            _ => tracing::trace!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}

/// A summary of one peer, for status pages and tests.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub region: Region,
    pub peer_id: u64,
    pub is_leader: bool,
    pub leader_peer_id: u64,
    pub term: u64,
    /// The peer this one voted for in `term` (0: none).
    pub vote: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub truncated_index: u64,
}

/// Default of `StoreConfig::log_keep_for_lagging_entries`: about a minute of a busy
/// region's writes (the failover benchmark makes 1,100 entries a second).
pub const LOG_KEEP_FOR_LAGGING_ENTRIES_DEFAULT: u64 = 65_536;

/// Time one `Store::process_ready` spent in the engine (for the driver's slow-round log).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RoundTimes {
    /// Writing the Raft log and hard states (may wait out an engine write stall).
    pub(crate) append: Duration,
    /// Syncing them.
    pub(crate) sync: Duration,
    /// Writing what was applied.
    pub(crate) apply_write: Duration,
}

/// Every region peer of one store. See the module documentation.
pub struct Store {
    cfg: StoreConfig,
    engine: EngineRef,
    transport: Arc<dyn Transport>,
    peers: BTreeMap<u64, Peer>,
    /// Regions whose peer here was removed, with the region as of the removal.
    tombstones: HashMap<u64, Region>,
    logger: slog::Logger,
    next_read_id: u64,
    outbox: Vec<RaftMessage>,
    board: Arc<RegionBoard>,
    /// The Raft clock: ticks since this store opened (see `Lease`).
    ticks: u64,
    /// Where the last `process_ready` spent its time writing (for slow-round logs).
    last_persist: RoundTimes,
    /// Builds the snapshots of this store's leaders off its thread (none: on it).
    snap_gen: Option<Arc<SnapGenerator>>,
    /// Computes its replicas' checksums off its thread.
    hasher: Arc<RegionHasher>,
    /// Writes the data of the snapshots its followers receive off its thread (none: on it).
    snap_apply: Option<Arc<SnapApplier>>,
    /// Snapshots whose data `snap_apply` is writing, by region.
    applying: HashMap<u64, Applying>,
    /// Regions whose snapshot's data was written off the thread and whose message was
    /// stepped this round, with the snapshot's index: its Ready installs only the states.
    data_written: HashMap<u64, u64>,
}

impl Store {
    /// Writes the initial state of `region` on this store's engine (cluster bootstrap: every
    /// initial member writes the same state). Refuses a region that already exists.
    pub fn bootstrap_region(engine: &EngineRef, region: &Region) -> Result<(), RaftStoreError> {
        if engine
            .get(Cf::Raft, &keys::region_state_key(region.id))?
            .is_some()
        {
            return Err(RaftStoreError::Raft(format!(
                "region {} is already bootstrapped on this store",
                region.id
            )));
        }
        let mut batch = WriteBatch::new();
        write_initial_state(&mut batch, region);
        engine.write(batch, true)?;
        Ok(())
    }

    /// Opens the store, recreating a peer for every region it holds.
    pub fn open(
        cfg: StoreConfig,
        engine: EngineRef,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, RaftStoreError> {
        assert!(cfg.store_id != 0, "store id must be non-zero");
        let logger = slog::Logger::root(TracingDrain, slog::o!("store" => cfg.store_id));
        let snap_gen = (cfg.snapshot_build_queue > 0)
            .then(|| SnapGenerator::spawn(cfg.store_id, cfg.snapshot_build_queue));
        let snap_apply = (cfg.snapshot_apply_queue > 0).then(|| {
            SnapApplier::spawn(
                cfg.store_id,
                engine.clone(),
                cfg.snapshot_apply_queue,
                cfg.snapshot_apply_batch_bytes,
            )
        });
        let hasher = RegionHasher::spawn(cfg.store_id, cfg.checksum_queue);
        let mut store = Self {
            cfg,
            engine,
            transport,
            peers: BTreeMap::new(),
            tombstones: HashMap::new(),
            logger,
            next_read_id: 1,
            outbox: Vec::new(),
            board: Arc::new(RegionBoard::default()),
            ticks: 0,
            last_persist: RoundTimes::default(),
            snap_gen,
            hasher,
            snap_apply,
            applying: HashMap::new(),
            data_written: HashMap::new(),
        };
        let (start, end) = keys::region_state_range();
        let mut states = Vec::new();
        for item in store.engine.scan(Cf::Raft, &start, &end, false) {
            let (key, value) = item?;
            let region_id = keys::region_id_of_state_key(&key)
                .ok_or_else(|| RaftStoreError::Corrupt("bad region state key".into()))?;
            let state = RegionLocalState::decode(value.as_slice())
                .map_err(|e| RaftStoreError::Corrupt(format!("region state: {e}")))?;
            states.push((region_id, state));
        }
        for (region_id, state) in states {
            let region = state.region.clone().unwrap_or_default();
            if state.state() == PeerState::Tombstone {
                store.tombstones.insert(region_id, region);
                continue;
            }
            let Some(me) = region
                .peers
                .iter()
                .find(|p| p.store_id == store.cfg.store_id)
                .cloned()
            else {
                return Err(RaftStoreError::Corrupt(format!(
                    "region {region_id} has no peer on store {}",
                    store.cfg.store_id
                )));
            };
            store.create_peer(region_id, me)?;
        }
        Ok(store)
    }

    /// The thread that builds this store's snapshots, if they are not built on the store
    /// thread (`StoreConfig::snapshot_build_queue`).
    pub fn snapshot_builder(&self) -> Option<Arc<SnapGenerator>> {
        self.snap_gen.clone()
    }

    /// The thread that computes this store's replicas' checksums (`StoreMsg::ComputeHash`),
    /// which holds each region's newest.
    pub fn checksums(&self) -> Arc<RegionHasher> {
        self.hasher.clone()
    }

    /// The thread that writes the data of snapshots this store's followers receive, if
    /// they are not written on the store thread (`StoreConfig::snapshot_apply_queue`).
    pub fn snapshot_applier(&self) -> Option<Arc<SnapApplier>> {
        self.snap_apply.clone()
    }

    /// The regions whose received snapshot's data is being written off the store thread.
    pub fn snapshots_being_written(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.applying.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The peers of this store as of the last round, readable from any thread.
    pub fn board(&self) -> Arc<RegionBoard> {
        self.board.clone()
    }

    fn board_entry(peer: &Peer) -> BoardEntry {
        BoardEntry {
            region: peer.region().clone(),
            peer_id: peer.meta.id,
            is_leader: peer.is_leader(),
            leader: peer.leader(),
            term: peer.raw.raft.term,
            applied_index: peer.raw.store().applied_index(),
            written_keys: peer.written_keys,
            lease: peer.lease.clone(),
            pending_peers: peer.pending_peers(),
        }
    }

    /// This store's id.
    pub fn store_id(&self) -> u64 {
        self.cfg.store_id
    }

    /// Whether leadership of `region_id` may be handed to `peer_id` now: this store leads
    /// it, the target sent a message within the last two heartbeats, and its log is being
    /// replicated and at most `TRANSFER_LAG_MAX_ENTRIES` behind. A leader refuses
    /// proposals while a transfer is pending, until an election timeout if the target
    /// never campaigns (a dead store the meta service still counts as up), so a transfer
    /// to a target that cannot take over at once stalls the region's writes.
    pub fn transfer_target_ready(&self, region_id: u64, peer_id: u64) -> bool {
        let Some(peer) = self.peers.get(&region_id) else {
            return false;
        };
        if !peer.is_leader() || peer_id == peer.meta.id {
            return false;
        }
        let recent = self.cfg.heartbeat_ticks as u64 * 2;
        let heard = peer
            .heard_at_tick
            .get(&peer_id)
            .is_some_and(|t| self.ticks.saturating_sub(*t) <= recent);
        heard && peer.caught_up(peer_id)
    }

    /// Where the last `process_ready` spent its time in the engine.
    pub(crate) fn last_round_times(&self) -> RoundTimes {
        self.last_persist
    }

    /// The Raft clock this store expects to be ticked at (`StoreConfig::tick_interval`).
    pub fn tick_interval(&self) -> Duration {
        self.cfg.tick_interval
    }

    fn create_peer(&mut self, region_id: u64, meta: PeerMeta) -> Result<(), RaftStoreError> {
        let mut storage = PeerStorage::open(self.engine.clone(), region_id)?;
        storage.set_entry_cache_bytes_max(self.cfg.entry_cache_bytes_max);
        if let Some(generator) = &self.snap_gen {
            storage.set_snapshot_generator(generator.clone());
        }
        let applied = storage.applied_index();
        let config = raft_config(&self.cfg, meta.id, applied);
        let raw = RawNode::new(&config, storage, &self.logger)?;
        let mut peer = Peer {
            raw,
            meta,
            peer_cache: HashMap::new(),
            proposals: VecDeque::new(),
            reads: VecDeque::new(),
            sent_snapshots: Vec::new(),
            removed: false,
            written_keys: 0,
            admin_index: None,
            merge_index: None,
            lease: LeaseCell::default(),
            renewing: false,
            heard_at_tick: HashMap::new(),
            leader_truncated: None,
        };
        peer.peer_cache.insert(meta.id, meta);
        peer.refresh_peer_cache();
        self.board.publish(vec![Self::board_entry(&peer)], &[]);
        self.peers.insert(region_id, peer);
        Ok(())
    }

    /// The region ids this store hosts a peer of.
    pub fn region_ids(&self) -> Vec<u64> {
        self.peers.keys().copied().collect()
    }

    /// The state of this store's peer of `region_id`.
    pub fn peer_status(&self, region_id: u64) -> Option<PeerStatus> {
        let peer = self.peers.get(&region_id)?;
        let store = peer.raw.store();
        Some(PeerStatus {
            region: store.region().clone(),
            peer_id: peer.meta.id,
            is_leader: peer.is_leader(),
            leader_peer_id: peer.raw.raft.leader_id,
            term: peer.raw.raft.term,
            vote: peer.raw.raft.vote,
            commit_index: peer.raw.raft.raft_log.committed,
            applied_index: store.applied_index(),
            truncated_index: store.truncated_index(),
        })
    }

    /// Advances every peer's logical clock by one tick, and renews the leases in use that
    /// are past half their length.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.board.set_ticks(self.ticks);
        let half_ticks = self.cfg.lease_ticks() / 2;
        let half = self.cfg.lease_duration() / 2;
        let now = Instant::now();
        for (region_id, peer) in self.peers.iter_mut() {
            if self.applying.contains_key(region_id) {
                // Never campaigns while its snapshot's data is written under it.
                continue;
            }
            peer.raw.tick();
            if !self.cfg.lease_reads || peer.renewing || !peer.lease_allowed() {
                continue;
            }
            let term = peer.raw.raft.term;
            let renew = {
                let mut lease = peer.lease.lock();
                let late = lease.until_tick.saturating_sub(self.ticks) <= half_ticks
                    || lease
                        .until
                        .is_none_or(|u| u.saturating_duration_since(now) <= half);
                let renew = lease.used && lease.term == term && late;
                if renew {
                    lease.used = false;
                }
                renew
            };
            if renew {
                let id = self.next_read_id;
                self.next_read_id += 1;
                peer.raw.read_index(id.to_be_bytes().to_vec());
                peer.renewing = true;
                peer.reads.push_back(PendingRead {
                    id,
                    index: None,
                    asked: Some((term, self.ticks, now)),
                    cb: Box::new(|_| {}),
                });
            }
        }
    }

    /// Handles one request. Its effects reach the disk and the network in the next
    /// `process_ready`.
    pub fn handle(&mut self, msg: StoreMsg) {
        match msg {
            StoreMsg::Raft(m) => self.on_raft_message(m),
            StoreMsg::Write {
                region_id,
                epoch,
                term,
                batch,
                cb,
            } => self.propose_write(region_id, epoch, term, batch, cb),
            StoreMsg::ComputeHash { region_id, cb } => self.propose_at_current_epoch(
                region_id,
                raft_command::Request::ComputeHash(ComputeHashRequest {}),
                ProposalCb::Hash(cb),
            ),
            StoreMsg::ReadIndex {
                region_id,
                epoch,
                term,
                cb,
            } => self.read_index(region_id, epoch, term, cb),
            StoreMsg::ChangePeers {
                region_id,
                changes,
                cb,
            } => self.propose_change_peers(region_id, changes, cb),
            StoreMsg::Split {
                region_id,
                epoch,
                split_key,
                new_region_id,
                new_peer_ids,
                cb,
            } => self.propose_split(region_id, epoch, split_key, new_region_id, new_peer_ids, cb),
            StoreMsg::PrepareMerge {
                region_id,
                epoch,
                cb,
            } => self.propose_prepare_merge(region_id, epoch, cb),
            StoreMsg::CommitMerge {
                region_id,
                epoch,
                source,
                cb,
            } => {
                let cmd = RaftCommand {
                    region_id,
                    epoch: Some(epoch),
                    request: Some(raft_command::Request::CommitMerge(CommitMergeRequest {
                        source: Some(source),
                    })),
                };
                self.propose(region_id, cmd.encode_to_vec(), ProposalCb::Merge(cb));
            }
            StoreMsg::RollbackMerge { region_id, cb } => self.propose_at_current_epoch(
                region_id,
                raft_command::Request::RollbackMerge(RollbackMergeRequest {}),
                ProposalCb::Merge(cb),
            ),
            StoreMsg::TransferLeader {
                region_id,
                to_peer_id,
            } => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    // Before the target can campaign: it is elected without waiting out
                    // the followers' refusal, so the lease no longer protects reads here.
                    peer.revoke_lease();
                    peer.raw.transfer_leader(to_peer_id);
                }
            }
            StoreMsg::Campaign { region_id } => {
                if !self.applying.contains_key(&region_id)
                    && let Some(peer) = self.peers.get_mut(&region_id)
                    && let Err(e) = peer.raw.campaign()
                {
                    tracing::debug!(region_id, "campaign: {e}");
                }
            }
        }
    }

    /// Finds the leader peer of `region_id` and checks the request's epoch against it.
    fn leader_peer(
        &mut self,
        region_id: u64,
        epoch: Option<&RegionEpoch>,
    ) -> Result<&mut Peer, RaftStoreError> {
        let peer = self
            .peers
            .get_mut(&region_id)
            .ok_or(RaftStoreError::RegionNotFound(region_id))?;
        if !peer.is_leader() {
            return Err(peer.not_leader());
        }
        if let Some(epoch) = epoch {
            let current = peer.region().epoch.unwrap_or_default();
            if epoch.version != current.version {
                return Err(RaftStoreError::EpochNotMatch {
                    current: vec![peer.region().clone()],
                });
            }
        }
        Ok(peer)
    }

    /// Proposes an admin command at the region's epoch as this store has it (a command
    /// whose caller names no epoch: checksums, rollbacks of a merge).
    fn propose_at_current_epoch(
        &mut self,
        region_id: u64,
        request: raft_command::Request,
        cb: ProposalCb,
    ) {
        let epoch = match self.peers.get(&region_id) {
            Some(p) => p.region().epoch,
            None => return cb.fail(RaftStoreError::RegionNotFound(region_id)),
        };
        let cmd = RaftCommand {
            region_id,
            epoch,
            request: Some(request),
        };
        self.propose(region_id, cmd.encode_to_vec(), cb);
    }

    fn propose(&mut self, region_id: u64, data: Vec<u8>, cb: ProposalCb) {
        let max = self.cfg.max_pending_proposals;
        let peer = match self.leader_peer(region_id, None) {
            Ok(peer) => peer,
            Err(e) => return cb.fail(e),
        };
        if peer.proposals.len() >= max {
            return cb.fail(RaftStoreError::ServerIsBusy(format!(
                "region {region_id} has {max} proposals pending (raftstore max_pending_proposals)"
            )));
        }
        let admin = !matches!(cb, ProposalCb::Write(_));
        if admin {
            // Followers must learn this commit now, not at the next heartbeat: a split's
            // new peers on other stores exist only once they apply it, and a checksum is
            // compared across replicas at its index.
            peer.raw.raft.skip_bcast_commit(false);
        }
        if let Err(e) = peer.raw.propose(vec![], data) {
            // ProposalDropped: a leader transfer is in progress, or the uncommitted log
            // is over its bound.
            return cb.fail(RaftStoreError::ServerIsBusy(format!(
                "region {region_id}: proposal dropped ({e})"
            )));
        }
        let index = peer.raw.raft.raft_log.last_index();
        let term = peer.raw.raft.term;
        if admin {
            peer.admin_index = Some(index);
        }
        peer.proposals.push_back(Proposal { index, term, cb });
    }

    fn propose_write(
        &mut self,
        region_id: u64,
        epoch: RegionEpoch,
        term: u64,
        batch: WriteBatch,
        cb: Callback<()>,
    ) {
        let peer = match self.leader_peer(region_id, Some(&epoch)) {
            Ok(peer) => peer,
            Err(e) => return cb(Err(e)),
        };
        if term != 0 && peer.raw.raft.term != term {
            return cb(Err(RaftStoreError::StaleCommand(region_id)));
        }
        if is_merging(peer.region()) {
            return cb(Err(merging_error(region_id)));
        }
        let region = peer.region().clone();
        let mut ops = Vec::with_capacity(batch.len());
        for op in batch.into_ops() {
            let (cf, key, value) = match op {
                WriteOp::Put { cf, key, value } => (cf, key, Some(value)),
                WriteOp::Delete { cf, key } => (cf, key, None),
            };
            let Some(proto_cf) = data_cf_to_proto(cf) else {
                return cb(Err(RaftStoreError::Raft(format!(
                    "column family {} is node-local and cannot be replicated",
                    cf.name()
                ))));
            };
            if !region_contains(&region, &key) {
                return cb(Err(RaftStoreError::KeyNotInRegion { key, region_id }));
            }
            ops.push(KvOp {
                cf: proto_cf as i32,
                key: key.into(),
                value: value.map(Into::into),
            });
        }
        let cmd = RaftCommand {
            region_id,
            epoch: Some(epoch),
            request: Some(raft_command::Request::Write(WriteRequest { ops })),
        };
        self.propose(region_id, cmd.encode_to_vec(), ProposalCb::Write(cb));
    }

    fn propose_split(
        &mut self,
        region_id: u64,
        epoch: RegionEpoch,
        split_key: Vec<u8>,
        new_region_id: u64,
        new_peer_ids: Vec<u64>,
        cb: Callback<Vec<Region>>,
    ) {
        let peer = match self.leader_peer(region_id, Some(&epoch)) {
            Ok(peer) => peer,
            Err(e) => return cb(Err(e)),
        };
        let region = peer.region();
        if is_merging(region) {
            return cb(Err(merging_error(region_id)));
        }
        if split_key.as_slice() <= region.start_key.as_ref() || !region_contains(region, &split_key)
        {
            return cb(Err(RaftStoreError::KeyNotInRegion {
                key: split_key,
                region_id,
            }));
        }
        if new_peer_ids.len() != region.peers.len() {
            return cb(Err(RaftStoreError::Raft(format!(
                "split of region {region_id} needs {} new peer ids, got {}",
                region.peers.len(),
                new_peer_ids.len()
            ))));
        }
        let cmd = RaftCommand {
            region_id,
            epoch: Some(epoch),
            request: Some(raft_command::Request::Split(SplitRequest {
                split_key: split_key.into(),
                new_region_id,
                new_peer_ids,
            })),
        };
        self.propose(region_id, cmd.encode_to_vec(), ProposalCb::Split(cb));
    }

    fn propose_change_peers(
        &mut self,
        region_id: u64,
        changes: Vec<PeerChange>,
        cb: Callback<Region>,
    ) {
        let max = self.cfg.max_pending_proposals;
        let peer = match self.leader_peer(region_id, None) {
            Ok(peer) => peer,
            Err(e) => return cb(Err(e)),
        };
        let region = peer.region().clone();
        if is_merging(&region) || peer.merge_index.is_some() {
            return cb(Err(merging_error(region_id)));
        }
        if changes.is_empty() {
            return cb(Err(RaftStoreError::Raft(
                "no membership change given".into(),
            )));
        }
        // A voter leaves through a single change; in joint consensus it can only be
        // demoted (a learner), as in TiKV, so every role stays expressible.
        if changes.len() > 1 {
            for c in &changes {
                let is_voter = region
                    .peers
                    .iter()
                    .any(|p| p.id == c.peer.id && p.role() == PeerRole::Voter);
                if c.change_type == ConfChangeType::RemoveNode && is_voter {
                    return cb(Err(RaftStoreError::Raft(format!(
                        "peer {} is a voter: remove it in a change of its own, or demote it to a learner first",
                        c.peer.id
                    ))));
                }
            }
        }
        if peer.proposals.len() >= max {
            return cb(Err(RaftStoreError::ServerIsBusy(format!(
                "region {region_id} has {max} proposals pending"
            ))));
        }
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        for c in &changes {
            let mut single = ConfChangeSingle::default();
            single.set_change_type(c.change_type);
            single.node_id = c.peer.id;
            cc.mut_changes().push(single);
        }
        let context = ChangePeerContext {
            peers: changes.iter().map(|c| c.peer).collect(),
        };
        cc.set_context(context.encode_to_vec().into());
        // Reads ask a quorum until the change is applied (`Peer::lease_allowed`).
        peer.revoke_lease();
        if let Err(e) = peer.raw.propose_conf_change(vec![], cc) {
            return cb(Err(RaftStoreError::ServerIsBusy(format!(
                "region {region_id}: membership change dropped ({e})"
            ))));
        }
        let index = peer.raw.raft.raft_log.last_index();
        let term = peer.raw.raft.term;
        peer.proposals.push_back(Proposal {
            index,
            term,
            cb: ProposalCb::ConfChange(cb),
        });
    }

    /// Proposes freezing the region for a merge. Refused while a membership change is
    /// pending or a peer is behind (a snapshot of its data may be in flight): the frozen
    /// region's peers must be exactly those of its region, each holding its applied data.
    fn propose_prepare_merge(&mut self, region_id: u64, epoch: RegionEpoch, cb: Callback<Region>) {
        let peer = match self.leader_peer(region_id, Some(&epoch)) {
            Ok(peer) => peer,
            Err(e) => return cb(Err(e)),
        };
        if is_merging(peer.region()) {
            return cb(Ok(peer.region().clone()));
        }
        if peer.region().epoch.unwrap_or_default().conf_ver != epoch.conf_ver {
            return cb(Err(RaftStoreError::EpochNotMatch {
                current: vec![peer.region().clone()],
            }));
        }
        if peer.raw.raft.has_pending_conf() || !peer.pending_peers().is_empty() {
            return cb(Err(RaftStoreError::ServerIsBusy(format!(
                "region {region_id}: a membership change is pending or a peer is behind; \
                 the merge waits"
            ))));
        }
        let cmd = RaftCommand {
            region_id,
            epoch: Some(epoch),
            request: Some(raft_command::Request::PrepareMerge(PrepareMergeRequest {})),
        };
        self.propose(region_id, cmd.encode_to_vec(), ProposalCb::Merge(cb));
        if let Some(peer) = self.peers.get_mut(&region_id)
            && let Some(p) = peer.proposals.back()
            && matches!(p.cb, ProposalCb::Merge(_))
            && p.index == peer.raw.raft.raft_log.last_index()
        {
            peer.merge_index = Some(p.index);
        }
    }

    fn read_index(&mut self, region_id: u64, epoch: RegionEpoch, term: u64, cb: Callback<()>) {
        let max = self.cfg.max_pending_reads;
        let id = self.next_read_id;
        self.next_read_id += 1;
        let (lease_reads, ticks) = (self.cfg.lease_reads, self.ticks);
        let peer = match self.leader_peer(region_id, Some(&epoch)) {
            Ok(peer) => peer,
            Err(e) => return cb(Err(e)),
        };
        // Checked when the read index is taken: a caller that read under its term's latches
        // before asking (an empty `RegionEngine::append`) was leader of that term from its
        // read until now, so what it read was current.
        if term != 0 && peer.raw.raft.term != term {
            return cb(Err(RaftStoreError::StaleCommand(region_id)));
        }
        if is_merging(peer.region()) {
            return cb(Err(merging_error(region_id)));
        }
        // raft-rs drops a read index silently until the leader has committed an entry of
        // its own term; say so instead of letting the caller time out.
        if !peer.raw.raft.commit_to_current_term() {
            return cb(Err(RaftStoreError::ServerIsBusy(format!(
                "region {region_id}: the new leader has not committed its first entry yet"
            ))));
        }
        if peer.reads.len() >= max {
            return cb(Err(RaftStoreError::ServerIsBusy(format!(
                "region {region_id} has {max} reads pending (raftstore max_pending_reads)"
            ))));
        }
        let now = Instant::now();
        let term = peer.raw.raft.term;
        if lease_reads && peer.lease_allowed() && peer.lease.lock().use_for(term, ticks, now) {
            let committed = peer.raw.raft.raft_log.committed;
            if peer.raw.store().applied_index() >= committed {
                return cb(Ok(()));
            }
            // Answered once applied (there is a Ready to apply it).
            peer.reads.push_back(PendingRead {
                id,
                index: Some(committed),
                asked: None,
                cb,
            });
            return;
        }
        peer.raw.read_index(id.to_be_bytes().to_vec());
        peer.reads.push_back(PendingRead {
            id,
            index: None,
            asked: Some((term, ticks, now)),
            cb,
        });
    }

    fn on_raft_message(&mut self, msg: RaftMessage) {
        let Some(to_peer) = msg.to_peer else {
            return;
        };
        if to_peer.store_id != self.cfg.store_id {
            tracing::warn!(
                store = self.cfg.store_id,
                "message for store {} dropped",
                to_peer.store_id
            );
            return;
        }
        let mut raft_msg = match RaftMsg::parse_from_bytes(&msg.message) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(
                    region_id = msg.region_id,
                    "undecodable raft message dropped: {e}"
                );
                return;
            }
        };
        let region_id = msg.region_id;
        if msg.is_tombstone {
            self.on_tombstone(&msg);
            return;
        }
        if self.is_stale_incarnation(&msg) {
            // This store's peer was removed from the region while its store was down, and
            // the region has since added a new peer here: the old one gives way.
            tracing::info!(
                region_id,
                new_peer = to_peer.id,
                "a removed peer of this store gives way to the region's new one"
            );
            if let Err(e) = self.destroy_peer(region_id, false) {
                tracing::warn!(region_id, "cannot destroy the removed peer: {e}");
                return;
            }
        }
        if !self.peers.contains_key(&region_id) && !self.maybe_create_peer(&msg, &raft_msg) {
            return;
        }
        if raft_msg.get_msg_type() == MessageType::MsgSnapshot {
            self.destroy_peers_covered_by(region_id, &raft_msg);
            if !snapshot_fits(&self.peers, &self.applying, region_id, &raft_msg) {
                return;
            }
        }
        let peer = self.peers.get_mut(&region_id).expect("peer exists");
        if peer.meta.id != to_peer.id {
            // For an older incarnation of this store's peer, or a newer one we have not
            // learned of yet; the leader will retry.
            return;
        }
        let ours = peer.region().epoch.unwrap_or_default().conf_ver;
        let theirs = msg.region_epoch.unwrap_or_default().conf_ver;
        if let Some(from) = msg.from_peer
            && theirs > 0
            && theirs < ours
            && !peer.region().peers.iter().any(|p| p.id == from.id)
        {
            // A peer removed from the region while its store was down still reaches out
            // (a pre-vote, once its election timer runs out): tell it to go. (Not a new
            // peer still empty, conf_ver 0: this member may not have applied its addition
            // yet.)
            self.outbox.push(RaftMessage {
                region_id,
                from_peer: Some(peer.meta),
                to_peer: Some(from),
                region_epoch: peer.region().epoch,
                message: Default::default(),
                start_key: Default::default(),
                end_key: Default::default(),
                is_tombstone: true,
                leader_truncated_index: None,
            });
            return;
        }
        if let Some(from) = msg.from_peer {
            peer.peer_cache.insert(from.id, from);
            peer.heard_at_tick.insert(from.id, self.ticks);
        }
        if self.applying.contains_key(&region_id) {
            match raft_msg.get_msg_type() {
                // The peer's log and data wait for the snapshot whose data is being
                // written: the leader sends these again once it hears the snapshot taken.
                MessageType::MsgAppend | MessageType::MsgSnapshot | MessageType::MsgTimeoutNow => {
                    return;
                }
                // Heard (the peer does not time out), but it commits nothing it would then
                // apply under the data being written.
                MessageType::MsgHeartbeat => raft_msg.commit = 0,
                _ => {}
            }
        } else if raft_msg.get_msg_type() == MessageType::MsgSnapshot
            && let Some(applier) = &self.snap_apply
            && writes_off_thread(peer, &raft_msg)
        {
            let region = match snapshot_region(raft_msg.get_snapshot().get_data()) {
                Ok(region) => region,
                Err(e) => {
                    tracing::warn!(region_id, "undecodable snapshot dropped: {e}");
                    return;
                }
            };
            let snapshot = raft_msg.get_snapshot();
            let task = ApplyTask {
                region_id,
                snapshot: snapshot.clone(),
            };
            if !applier.submit(task) {
                tracing::info!(
                    store = self.cfg.store_id,
                    region_id,
                    "the snapshot writer is full (raftstore snapshot_apply_queue); the leader sends the snapshot again later"
                );
                return;
            }
            tracing::info!(
                store = self.cfg.store_id,
                region_id,
                index = snapshot.get_metadata().index,
                bytes = snapshot.get_data().len(),
                "writing a snapshot's data off the store thread"
            );
            self.applying.insert(
                region_id,
                Applying {
                    peer_id: peer.meta.id,
                    region,
                    msg: raft_msg,
                },
            );
            return;
        }
        // A pre-vote from a voter whose log is behind ours is refused, but it shows that
        // voter's election timer ran out: it no longer counts a leader as alive, so our
        // own pre-vote would now be granted. When we have no leader either, we campaign at
        // once rather than after a whole new election timeout. Without this, a failover
        // whose first pre-vote met a follower still "in lease" (its clock ticking late)
        // took one timeout more (found in bench/failover.py's slow rounds). Raft's safety
        // never depends on when a node campaigns, and only a peer whose log is longer than
        // the candidate's hurries.
        let behind_pre_vote = raft_msg.get_msg_type() == MessageType::MsgRequestPreVote
            && !peer
                .raw
                .raft
                .raft_log
                .is_up_to_date(raft_msg.index, raft_msg.log_term);
        let term = raft_msg.term;
        if let Err(e) = peer.raw.step(raft_msg) {
            tracing::debug!(region_id, "step: {e}");
        }
        if let Some(index) = msg.leader_truncated_index
            && msg
                .from_peer
                .is_some_and(|from| from.id == peer.raw.raft.leader_id)
            && term == peer.raw.raft.term
        {
            peer.leader_truncated = Some(index);
        }
        let raft = &peer.raw.raft;
        if behind_pre_vote
            && raft.leader_id == raft::INVALID_ID
            && raft.state != StateRole::Leader
            && raft.promotable()
        {
            tracing::debug!(
                region_id,
                "a pre-vote from a peer with a shorter log: campaigning now"
            );
            if let Err(e) = peer.raw.campaign() {
                tracing::debug!(region_id, "campaign: {e}");
            }
        }
    }

    /// A member of a newer membership told this store's peer it was removed from the
    /// region (while its store was down, so it never applied its own removal): it is
    /// destroyed with its data, and a message of an older incarnation cannot recreate it.
    fn on_tombstone(&mut self, msg: &RaftMessage) {
        let region_id = msg.region_id;
        let Some(peer) = self.peers.get(&region_id) else {
            return;
        };
        let to = msg.to_peer.map(|p| p.id);
        let ours = peer.region().epoch.unwrap_or_default().conf_ver;
        let theirs = msg.region_epoch.unwrap_or_default().conf_ver;
        if to != Some(peer.meta.id) || ours == 0 || theirs <= ours {
            return;
        }
        tracing::info!(
            region_id,
            peer_id = peer.meta.id,
            "this store's peer was removed from the region while away: destroying it"
        );
        if let Err(e) = self.destroy_peer(region_id, false) {
            tracing::warn!(region_id, "cannot destroy the removed peer: {e}");
        }
    }

    /// Whether `msg` is for a newer peer of this store than the one it hosts, in a newer
    /// membership: peer ids only grow, and a region has one peer per store, so the hosted
    /// one has been removed.
    fn is_stale_incarnation(&self, msg: &RaftMessage) -> bool {
        let (Some(peer), Some(to)) = (self.peers.get(&msg.region_id), msg.to_peer) else {
            return false;
        };
        let ours = peer.region().epoch.unwrap_or_default().conf_ver;
        let theirs = msg.region_epoch.unwrap_or_default().conf_ver;
        to.id > peer.meta.id && theirs > ours
    }

    /// Creates an uninitialized peer when a member of a region this store does not host
    /// yet reaches out (a new replica); it will be filled by a snapshot.
    fn maybe_create_peer(&mut self, msg: &RaftMessage, raft_msg: &RaftMsg) -> bool {
        let creates = match raft_msg.get_msg_type() {
            MessageType::MsgRequestVote
            | MessageType::MsgRequestPreVote
            | MessageType::MsgAppend
            | MessageType::MsgSnapshot => true,
            MessageType::MsgHeartbeat => raft_msg.commit == 0,
            _ => false,
        };
        if !creates {
            return false;
        }
        if let Some(tombstone) = self.tombstones.get(&msg.region_id) {
            let gone = tombstone.epoch.unwrap_or_default().conf_ver;
            let asked = msg.region_epoch.unwrap_or_default().conf_ver;
            if asked <= gone {
                return false;
            }
        }
        let to_peer = msg.to_peer.expect("checked");
        match self.create_peer(msg.region_id, to_peer) {
            Ok(()) => {
                self.tombstones.remove(&msg.region_id);
                true
            }
            Err(e) => {
                tracing::warn!(region_id = msg.region_id, "cannot create peer: {e}");
                false
            }
        }
    }

    fn wrap_messages(&mut self, region_id: u64, msgs: Vec<RaftMsg>) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let region = peer.raw.store().region();
        let leader_truncated_index =
            (peer.raw.raft.state == StateRole::Leader).then(|| peer.raw.store().truncated_index());
        for m in msgs {
            let Some(to_peer) = peer.peer_cache.get(&m.to).cloned() else {
                tracing::warn!(region_id, "message to unknown peer {} dropped", m.to);
                continue;
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                peer.sent_snapshots.push(m.to);
            }
            self.outbox.push(RaftMessage {
                region_id,
                from_peer: Some(peer.meta),
                to_peer: Some(to_peer),
                region_epoch: region.epoch,
                message: m.write_to_bytes().expect("raft message encodes").into(),
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                is_tombstone: false,
                leader_truncated_index,
            });
        }
    }

    /// Runs one round: persists every peer's Ready in one batch, sends, applies, answers.
    /// Returns true when it did anything (the caller may loop until it returns false).
    pub fn process_ready(&mut self) -> Result<bool, RaftStoreError> {
        self.take_written_snapshots()?;
        let mut persist = WriteBatch::new();
        let mut must_sync = false;
        let mut readies = Vec::new();
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for region_id in ids {
            let peer = self.peers.get_mut(&region_id).expect("listed");
            if !peer.raw.has_ready() {
                continue;
            }
            let mut rd = peer.raw.ready();
            if let Some(ss) = rd.ss() {
                // Leadership changes are rare and explain latency spikes and aborted
                // transactions (in-memory locks die with a leader's term): log them.
                tracing::info!(
                    store = self.cfg.store_id,
                    region_id,
                    role = ?ss.raft_state,
                    leader = ss.leader_id,
                    term = peer.raw.raft.term,
                    "raft role changed"
                );
            }
            if let Some(ss) = rd.ss()
                && ss.raft_state != StateRole::Leader
            {
                peer.revoke_lease();
                peer.renewing = false;
                let e = peer.not_leader();
                for r in peer.reads.drain(..) {
                    (r.cb)(Err(e.clone()));
                }
            }
            for rs in rd.take_read_states() {
                let Ok(id) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                    continue;
                };
                let id = u64::from_be_bytes(id);
                if let Some(read) = peer.reads.iter_mut().find(|r| r.id == id) {
                    read.index = Some(rs.index);
                }
            }
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                let held = peer
                    .raw
                    .store()
                    .is_initialized()
                    .then(|| peer.region().clone());
                let shared = held.is_some_and(|held| {
                    self.shares_range(region_id, &held, "its data outside the new range")
                });
                let data_written =
                    self.data_written.remove(&region_id) == Some(snap.get_metadata().index);
                let peer = self.peers.get_mut(&region_id).expect("listed");
                let (started, ops_before) = (Instant::now(), persist.len());
                let region = peer.raw.mut_store().stage_snapshot(
                    &mut persist,
                    &snap,
                    shared,
                    data_written,
                )?;
                tracing::info!(
                    store = self.cfg.store_id,
                    region_id,
                    start = ?region.start_key,
                    end = ?region.end_key,
                    index = snap.get_metadata().index,
                    bytes = snap.data.len(),
                    writes = persist.len() - ops_before,
                    staged_ms = started.elapsed().as_millis() as u64,
                    data_written,
                    "applying a snapshot"
                );
                peer.refresh_peer_cache();
            }
            let peer = self.peers.get_mut(&region_id).expect("listed");
            peer.raw
                .mut_store()
                .stage_entries(&mut persist, rd.entries());
            if let Some(hs) = rd.hs() {
                let hs = hs.clone();
                peer.raw.mut_store().stage_hard_state(&mut persist, &hs);
            }
            must_sync |= rd.must_sync();
            let committed = rd.take_committed_entries();
            let msgs = rd.take_messages();
            self.wrap_messages(region_id, msgs);
            readies.push((region_id, rd, committed));
        }
        // A snapshot message stepped after its data was written but not taken by raft-rs
        // (a newer term came meanwhile) leaves that data to the next snapshot's write.
        self.data_written.clear();
        if readies.is_empty() {
            return Ok(false);
        }
        // What is in the outbox now is leaders' messages only (raft-rs puts a follower's in
        // `persisted_messages`), and a leader may send its appends before its own log write
        // (Raft thesis §10.2.1): raft-rs counts the leader's entries toward a commit only
        // once `advance` reports them persisted. So the followers' fsyncs overlap the
        // leader's instead of following it.
        if !self.outbox.is_empty() {
            self.transport.send(std::mem::take(&mut self.outbox));
        }
        self.last_persist = RoundTimes::default();
        if !persist.is_empty() {
            let started = Instant::now();
            let ticket = self.engine.append(persist)?;
            self.last_persist.append = started.elapsed();
            if must_sync && self.cfg.sync_log {
                let started = Instant::now();
                self.engine.sync_through(ticket)?;
                self.last_persist.sync = started.elapsed();
            }
        }

        let mut apply = WriteBatch::new();
        let mut answers: Vec<(ProposalCb, Applied)> = Vec::new();
        let mut effects = ApplyEffects::default();
        let touched: Vec<u64> = readies.iter().map(|(id, _, _)| *id).collect();
        for (region_id, mut rd, committed) in readies {
            let persisted = rd.take_persisted_messages();
            // A region merged away by an earlier one of this round's applies has gone.
            if !self.peers.contains_key(&region_id) {
                continue;
            }
            self.wrap_messages(region_id, persisted);
            let peer = self.peers.get_mut(&region_id).expect("listed");
            // Not `advance`: it tells raft-rs that `rd`'s committed entries are applied
            // before they are. raft-rs leaves a joint configuration (auto-leave) when a
            // leader's applied index passes its pending-change index, checked when it
            // hears of the new index: told early, a new leader whose first commit
            // includes its dead predecessor's joint entry passed that index with the old
            // configuration still in place, and never left the joint one. So: apply
            // first, then `advance_apply`.
            let mut light = peer.raw.advance_append(rd);
            if let Some(commit) = light.commit_index() {
                let mut hs = peer.raw.raft.hard_state();
                hs.commit = commit;
                peer.raw.mut_store().stage_hard_state(&mut apply, &hs);
            }
            let light_msgs = light.take_messages();
            let light_committed = light.take_committed_entries();
            self.wrap_messages(region_id, light_msgs);
            for entry in committed.into_iter().chain(light_committed) {
                let peer = self.peers.get_mut(&region_id).expect("listed");
                apply_entry(
                    peer,
                    &entry,
                    &self.engine,
                    &mut apply,
                    &mut answers,
                    &mut effects,
                    self.cfg.store_id,
                )?;
                // In log order: a later entry of the grown region may write into the
                // absorbed range in this very batch, and a clear staged after it would
                // delete that write here.
                for source in std::mem::take(&mut effects.merged) {
                    self.stage_merged_away(&source, &mut apply)?;
                }
            }
            let peer = self.peers.get_mut(&region_id).expect("listed");
            peer.raw.advance_apply();
            if let Some(index) = peer.admin_index
                && peer.raw.store().applied_index() >= index
            {
                peer.admin_index = None;
                peer.raw.raft.skip_bcast_commit(true);
            }
            if peer
                .merge_index
                .is_some_and(|index| peer.raw.store().applied_index() >= index || !peer.is_leader())
            {
                peer.merge_index = None;
            }
            for to in std::mem::take(&mut peer.sent_snapshots) {
                peer.raw.report_snapshot(to, SnapshotStatus::Finish);
            }
            maybe_compact_log(
                peer,
                &mut apply,
                self.cfg.log_gc_count_limit,
                self.cfg.log_keep_for_lagging_entries,
            )?;
        }
        if !apply.is_empty() {
            // Not synced: the Raft log is durable, so a crash replays what this loses.
            let started = Instant::now();
            let _ticket = self.engine.append(apply)?;
            self.last_persist.apply_write = started.elapsed();
        }
        for task in std::mem::take(&mut effects.hashes) {
            self.hasher.submit(task);
        }
        for (region_id, index, result) in std::mem::take(&mut effects.hashed) {
            self.hasher.record(region_id, index, result);
        }
        for (cb, applied) in answers {
            answer(cb, applied, &self.hasher);
        }
        let touched: Vec<BoardEntry> = touched
            .iter()
            .filter_map(|id| self.peers.get(id))
            .map(Self::board_entry)
            .collect();
        self.board.publish(touched, &[]);
        // Reads whose index is applied are answered now; peers that removed themselves go.
        let mut removed = Vec::new();
        let lease_ticks = self.cfg.lease_ticks();
        let lease_duration = self.cfg.lease_duration();
        for (region_id, peer) in self.peers.iter_mut() {
            let applied = peer.raw.store().applied_index();
            while let Some(read) = peer.reads.front() {
                match read.index {
                    Some(index) if index <= applied => {
                        let read = peer.reads.pop_front().expect("front");
                        if let Some((term, tick, at)) = read.asked {
                            if term == peer.raw.raft.term {
                                peer.renewing = false;
                            }
                            // A quorum heard this leader at (tick, at) or later.
                            if self.cfg.lease_reads
                                && lease_ticks > 0
                                && term == peer.raw.raft.term
                                && peer.lease_allowed()
                            {
                                let mut lease = peer.lease.lock();
                                let renewed = Lease {
                                    term,
                                    until_tick: tick + lease_ticks,
                                    until: Some(at + lease_duration),
                                    used: lease.used,
                                };
                                if lease.term != term || lease.until_tick < renewed.until_tick {
                                    *lease = renewed;
                                }
                            }
                        }
                        (read.cb)(Ok(()));
                    }
                    _ => break,
                }
            }
            if peer.removed {
                removed.push(*region_id);
            }
        }
        for region_id in removed {
            self.destroy_peer(region_id, false)?;
        }
        for (region_id, meta, campaign) in effects.created {
            if let Some(existing) = self.peers.get(&region_id)
                && (existing.raw.store().is_initialized() || self.applying.contains_key(&region_id))
            {
                continue;
            }
            self.peers.remove(&region_id);
            self.create_peer(region_id, meta)?;
            if campaign && let Some(peer) = self.peers.get_mut(&region_id) {
                let _ = peer.raw.campaign();
            }
        }
        if !self.outbox.is_empty() {
            self.transport.send(std::mem::take(&mut self.outbox));
        }
        Ok(true)
    }

    /// Steps the snapshot messages whose data the snapshot writer has written: their
    /// Ready, this round, installs the peers' states over it.
    fn take_written_snapshots(&mut self) -> Result<(), RaftStoreError> {
        let Some(applier) = &self.snap_apply else {
            return Ok(());
        };
        for written in applier.take_written() {
            let region_id = written.region_id;
            let Some(applying) = self.applying.remove(&region_id) else {
                continue;
            };
            let Some(done) = written.result? else {
                // Stopped: the store is closing.
                continue;
            };
            tracing::info!(
                store = self.cfg.store_id,
                region_id,
                index = written.index,
                writes = done.writes,
                bytes = done.bytes,
                batches = done.chunks,
                took_ms = written.took.as_millis() as u64,
                "wrote a snapshot's data off the store thread"
            );
            let Some(peer) = self.peers.get_mut(&region_id) else {
                continue;
            };
            if peer.meta.id != applying.peer_id {
                continue;
            }
            self.data_written.insert(region_id, written.index);
            if let Err(e) = peer.raw.step(applying.msg) {
                tracing::debug!(region_id, "step: {e}");
            }
        }
        Ok(())
    }

    /// Whether `held` (the range `region_id`'s peer here holds data in) overlaps another
    /// filled peer of this store. It must not (see `overlapping_peer`); if it does, the
    /// data is kept rather than deleted from under that peer, and the breach is logged.
    fn shares_range(&self, region_id: u64, held: &Region, kept: &str) -> bool {
        let Some(other) = overlapping_peer(
            &self.peers,
            &self.applying,
            region_id,
            &held.start_key,
            &held.end_key,
        ) else {
            return false;
        };
        tracing::error!(
            store = self.cfg.store_id,
            region_id,
            other,
            "a peer's range overlaps another peer's here: {kept} is kept"
        );
        true
    }

    /// A merge absorbed `source` into its left neighbour: this store's peer of it goes in
    /// the same batch as the neighbour's new range, so a crash never leaves both. A peer
    /// that applied the freeze `source` carries holds nothing (its leader checked the
    /// frozen region empty, and it applied no write since), so its range is left as it
    /// is, with no scan. Otherwise the range is cleared: whatever a lagging peer (or no
    /// peer) left there is the past of a region that ended empty. A snapshot of it still
    /// being written here is left to finish with no peer to fill.
    fn stage_merged_away(
        &mut self,
        source: &Region,
        batch: &mut WriteBatch,
    ) -> Result<(), RaftStoreError> {
        let region_id = source.id;
        self.applying.remove(&region_id);
        let peer = self.peers.remove(&region_id);
        let frozen_here = peer.as_ref().is_some_and(|p| {
            p.raw.store().is_initialized()
                && is_merging(p.region())
                && p.region().epoch == source.epoch
        });
        if !frozen_here {
            stage_clear_range(&self.engine, batch, &source.start_key, &source.end_key)?;
        }
        let Some(mut peer) = peer else {
            return Ok(());
        };
        tracing::info!(
            store = self.cfg.store_id,
            region_id,
            cleared = !frozen_here,
            "region merged into its left neighbour: its peer here goes"
        );
        self.board.publish(vec![], &[region_id]);
        self.hasher.forget(region_id);
        peer.raw.mut_store().stage_destroy(batch, true)?;
        peer.fail_all(&RaftStoreError::RegionNotFound(region_id));
        self.tombstones.insert(region_id, peer.region().clone());
        Ok(())
    }

    /// Destroys the peers here that a snapshot of `region_id` proves stale: each lies
    /// wholly inside the snapshot's range at an older version. A key range's owner only
    /// ever gets a higher version (a split gives both halves the old version + 1, a merge
    /// the larger of both + 1), so such a peer was merged away while this store's peer of
    /// `region_id` lagged (it never applied the merge that would have destroyed it here).
    fn destroy_peers_covered_by(&mut self, region_id: u64, msg: &RaftMsg) {
        let Ok(region) = snapshot_region(msg.get_snapshot().get_data()) else {
            return;
        };
        let version = region.epoch.unwrap_or_default().version;
        let within = |o: &Region| {
            o.start_key.as_ref() >= region.start_key.as_ref()
                && (region.end_key.is_empty()
                    || (!o.end_key.is_empty() && o.end_key.as_ref() <= region.end_key.as_ref()))
        };
        let stale: Vec<u64> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                **id != region_id
                    && p.raw.store().is_initialized()
                    && !self.applying.contains_key(id)
                    && within(p.region())
                    && p.region().epoch.unwrap_or_default().version < version
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            tracing::info!(
                store = self.cfg.store_id,
                region_id = id,
                by = region_id,
                "a snapshot of a newer region covers this peer's range: it was merged away"
            );
            if let Err(e) = self.destroy_peer(id, false) {
                tracing::warn!(region_id = id, "cannot destroy the merged-away peer: {e}");
            }
        }
    }

    fn destroy_peer(&mut self, region_id: u64, keep_data: bool) -> Result<(), RaftStoreError> {
        if self.applying.contains_key(&region_id) {
            // Its range is being written: it goes once the snapshot is in, when the
            // message that asked for this comes again.
            tracing::info!(
                store = self.cfg.store_id,
                region_id,
                "a peer whose snapshot is being written is not destroyed yet"
            );
            return Ok(());
        }
        let Some(mut peer) = self.peers.remove(&region_id) else {
            return Ok(());
        };
        let shared = peer.raw.store().is_initialized()
            && self.shares_range(region_id, peer.region(), "its data");
        // Off the board before its data goes: a request arriving from now on finds no
        // region here, rather than an empty one.
        self.board.publish(vec![], &[region_id]);
        self.hasher.forget(region_id);
        let mut batch = WriteBatch::new();
        peer.raw
            .mut_store()
            .stage_destroy(&mut batch, keep_data || shared)?;
        self.engine.write(batch, self.cfg.sync_log)?;
        peer.fail_all(&RaftStoreError::RegionNotFound(region_id));
        self.tombstones.insert(region_id, peer.region().clone());
        Ok(())
    }
}

/// How far behind the leader's log a transfer target may be (see
/// `Store::transfer_target_ready`): it must catch up before it campaigns, and proposals
/// wait meanwhile.
pub const TRANSFER_LAG_MAX_ENTRIES: u64 = 128;

/// The raft-rs configuration of one peer: pre-vote and check-quorum always on.
fn raft_config(cfg: &StoreConfig, peer_id: u64, applied: u64) -> raft::Config {
    raft::Config {
        id: peer_id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        min_election_tick: cfg.min_election_ticks,
        max_election_tick: cfg.max_election_ticks,
        applied,
        max_size_per_msg: cfg.max_size_per_msg_bytes,
        max_inflight_msgs: cfg.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        // A commit reaches followers with the next append or heartbeat instead of a
        // message of its own (half the messages per write; followers serve no reads).
        // Admin commands turn broadcasting back on until they apply (`Store::propose`).
        skip_bcast_commit: true,
        // Appends queued for one follower in a round go as one message.
        batch_append: true,
        // Every read index asks a quorum (a heartbeat round); the store answers from its
        // own lease instead where it holds one (`Lease`), which raft-rs's lease mode
        // cannot tell readers on other threads about.
        read_only_option: raft::ReadOnlyOption::Safe,
        ..raft::Config::default()
    }
}

/// A snapshot may only fill a peer if its range overlaps no other initialized peer here
/// (one that has not yet learned of a split or a removal would otherwise share keys), nor
/// another snapshot whose data is being written.
fn snapshot_fits(
    peers: &BTreeMap<u64, Peer>,
    applying: &HashMap<u64, Applying>,
    region_id: u64,
    msg: &RaftMsg,
) -> bool {
    let Ok(region) = snapshot_region(msg.get_snapshot().get_data()) else {
        return false;
    };
    match overlapping_peer(
        peers,
        applying,
        region_id,
        &region.start_key,
        &region.end_key,
    ) {
        Some(other) => {
            tracing::info!(
                region_id,
                other,
                "snapshot overlaps another region; dropped"
            );
            false
        }
        None => true,
    }
}

/// Another initialized peer of this store whose range overlaps `[start, end)` (an empty
/// end: unbounded), or another region whose snapshot's data is being written there, if
/// any. The initialized peers of a store hold disjoint ranges, which is what lets a peer
/// delete its whole range when it goes or is refilled.
fn overlapping_peer(
    peers: &BTreeMap<u64, Peer>,
    applying: &HashMap<u64, Applying>,
    region_id: u64,
    start: &[u8],
    end: &[u8],
) -> Option<u64> {
    let overlaps = |o: &Region| {
        let disjoint = (!o.end_key.is_empty() && o.end_key.as_ref() <= start)
            || (!end.is_empty() && end <= o.start_key.as_ref());
        !disjoint
    };
    let held = peers
        .iter()
        .filter(|(_, other)| other.raw.store().is_initialized())
        .map(|(id, other)| (*id, other.region()));
    let being_written = applying.iter().map(|(id, a)| (*id, &a.region));
    held.chain(being_written)
        .find(|(id, o)| *id != region_id && overlaps(o))
        .map(|(id, _)| id)
}

/// Whether `msg`, a snapshot for `peer`, may have its data written off the store thread
/// first: it comes from the leader this follower follows in its term (a newer term would
/// first change the peer's state), fills more than the peer has committed, includes the
/// peer, and the peer has applied all it committed (nothing of its own left to write
/// under the snapshot's data). Otherwise it is stepped as it comes (raft-rs drops what it
/// would not take) and applied on the store thread.
fn writes_off_thread(peer: &Peer, msg: &RaftMsg) -> bool {
    let raft = &peer.raw.raft;
    let meta = msg.get_snapshot().get_metadata();
    let cs = meta.get_conf_state();
    let me = peer.meta.id;
    let included = cs.voters.contains(&me)
        || cs.learners.contains(&me)
        || cs.voters_outgoing.contains(&me)
        || cs.learners_next.contains(&me);
    raft.state == StateRole::Follower
        && raft.term == msg.term
        && raft.leader_id == msg.from
        && raft.raft_log.committed == peer.raw.store().applied_index()
        && meta.index > raft.raft_log.committed
        && included
}

fn answer(cb: ProposalCb, applied: Applied, hasher: &RegionHasher) {
    let stale = |cb: ProposalCb| {
        cb.fail(RaftStoreError::Raft(
            "the command was dropped by raft (another membership change is pending)".into(),
        ))
    };
    match (cb, applied) {
        (ProposalCb::Write(cb), Applied::Write(r)) => cb(r),
        (ProposalCb::ConfChange(cb), Applied::ConfChange(r)) => cb(r),
        (ProposalCb::Split(cb), Applied::Split(r)) => cb(r),
        (ProposalCb::Hash(cb), Applied::Hash { region_id, index }) => {
            hasher.when_done(region_id, index, cb)
        }
        (ProposalCb::Merge(cb), Applied::Merge(r)) => cb(r),
        (cb, _) => stale(cb),
    }
}

/// Applies one committed entry into `batch`, matching it with its proposal.
fn apply_entry(
    peer: &mut Peer,
    entry: &Entry,
    engine: &EngineRef,
    batch: &mut WriteBatch,
    answers: &mut Vec<(ProposalCb, Applied)>,
    effects: &mut ApplyEffects,
    store_id: u64,
) -> Result<(), RaftStoreError> {
    if peer.removed {
        return Ok(());
    }
    let applied = match entry.get_entry_type() {
        EntryType::EntryNormal if entry.data.is_empty() => Applied::Noop,
        EntryType::EntryNormal => {
            let cmd = RaftCommand::decode(entry.data.as_ref())
                .map_err(|e| RaftStoreError::Corrupt(format!("raft command: {e}")))?;
            apply_command(peer, cmd, entry.index, engine, batch, effects, store_id)
        }
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
            Applied::ConfChange(apply_conf_change(peer, entry, batch, store_id))
        }
    };
    peer.raw
        .mut_store()
        .stage_applied(batch, entry.index, entry.term);
    // Proposals are queued in the order they were made, so by term and, within a term, by
    // index. Once an entry of term T is applied, no proposal of an older term can ever
    // commit (a log's terms never decrease), wherever its index.
    while let Some(front) = peer.proposals.front() {
        let superseded =
            front.term < entry.term || (front.term == entry.term && front.index < entry.index);
        let matched = front.term == entry.term && front.index == entry.index;
        if !superseded && !matched {
            break;
        }
        let p = peer.proposals.pop_front().expect("front");
        if matched {
            answers.push((p.cb, applied));
            break;
        }
        p.cb.fail(RaftStoreError::StaleCommand(peer.region().id));
    }
    Ok(())
}

fn apply_command(
    peer: &mut Peer,
    cmd: RaftCommand,
    index: u64,
    engine: &EngineRef,
    batch: &mut WriteBatch,
    effects: &mut ApplyEffects,
    store_id: u64,
) -> Applied {
    let region = peer.region().clone();
    let current = region.epoch.unwrap_or_default();
    let asked = cmd.epoch.unwrap_or_default();
    let epoch_error = || RaftStoreError::EpochNotMatch {
        current: vec![region.clone()],
    };
    match cmd.request {
        Some(raft_command::Request::Write(write)) => {
            if asked.version != current.version {
                return Applied::Write(Err(epoch_error()));
            }
            if is_merging(&region) {
                return Applied::Write(Err(merging_error(region.id)));
            }
            if let Some(op) = write
                .ops
                .iter()
                .find(|op| !region_contains(&region, &op.key))
            {
                return Applied::Write(Err(RaftStoreError::KeyNotInRegion {
                    key: op.key.to_vec(),
                    region_id: region.id,
                }));
            }
            for op in write.ops {
                let cf = data_cf_from_proto(op.cf());
                if cf == Cf::Write && op.value.is_some() {
                    peer.written_keys += 1;
                }
                match op.value {
                    Some(value) => batch.put(cf, op.key.to_vec(), value.to_vec()),
                    None => batch.delete(cf, op.key.to_vec()),
                }
            }
            Applied::Write(Ok(()))
        }
        Some(raft_command::Request::Split(split)) => {
            if asked.version != current.version {
                return Applied::Split(Err(epoch_error()));
            }
            if is_merging(&region) {
                return Applied::Split(Err(merging_error(region.id)));
            }
            if !region_contains(&region, &split.split_key)
                || split.split_key.as_ref() <= region.start_key.as_ref()
            {
                return Applied::Split(Err(RaftStoreError::KeyNotInRegion {
                    key: split.split_key.to_vec(),
                    region_id: region.id,
                }));
            }
            let version = current.version + 1;
            let mut left = region.clone();
            left.end_key = split.split_key.clone();
            left.epoch = Some(RegionEpoch {
                conf_ver: current.conf_ver,
                version,
            });
            let mut right = Region {
                id: split.new_region_id,
                start_key: split.split_key.clone(),
                end_key: region.end_key.clone(),
                epoch: left.epoch,
                peers: Vec::with_capacity(region.peers.len()),
                merging: None,
            };
            for (old, new_id) in region.peers.iter().zip(&split.new_peer_ids) {
                let mut p = *old;
                p.id = *new_id;
                right.peers.push(p);
            }
            // This store may have held the new region already: filled by a snapshot (this
            // peer lagging behind the split), or since removed (a tombstone). Its state
            // stands; the split's initial state would turn it back into a stale copy.
            let held = match engine.get(Cf::Raft, &keys::region_state_key(right.id)) {
                Ok(state) => state.is_some(),
                Err(e) => return Applied::Split(Err(RaftStoreError::from(e))),
            };
            peer.raw
                .mut_store()
                .stage_region(batch, left.clone(), PeerState::Normal);
            if held {
                tracing::info!(
                    region_id = right.id,
                    "split: this store already held the new region; its state is kept"
                );
            } else {
                if let Err(e) = write_split_state(engine, batch, &right) {
                    return Applied::Split(Err(e));
                }
                if let Some(me) = right.peers.iter().find(|p| p.store_id == store_id) {
                    effects.created.push((right.id, *me, peer.is_leader()));
                }
            }
            Applied::Split(Ok(vec![left, right]))
        }
        Some(raft_command::Request::ComputeHash(_)) => {
            // The region as of this entry: the engine now (none of this round's applies is
            // in it yet) with the round's writes to the region so far laid over it.
            let pending = pending_writes(&region, batch);
            match engine.read_view() {
                Some(view) => effects.hashes.push(HashTask {
                    region: region.clone(),
                    index,
                    view,
                    pending,
                }),
                // An engine without views: on this thread.
                None => effects.hashed.push((
                    region.id,
                    index,
                    checksum(
                        |cf| engine.scan(cf, &region.start_key, &region.end_key, false),
                        &pending,
                    ),
                )),
            }
            Applied::Hash {
                region_id: region.id,
                index,
            }
        }
        Some(raft_command::Request::PrepareMerge(_)) => {
            Applied::Merge(apply_prepare_merge(peer, &region, asked, batch))
        }
        Some(raft_command::Request::CommitMerge(commit)) => Applied::Merge(apply_commit_merge(
            peer, &region, asked, commit, batch, effects,
        )),
        Some(raft_command::Request::RollbackMerge(_)) => {
            if !is_merging(&region) {
                return Applied::Merge(Ok(region));
            }
            let unfrozen = stage_merging(peer, &region, false, batch);
            tracing::info!(
                region_id = region.id,
                "merge rolled back: the region serves again"
            );
            Applied::Merge(Ok(unfrozen))
        }
        Some(raft_command::Request::CompactLog(_)) | None => Applied::Noop,
    }
}

/// Freezes the region for a merge: from here on it applies no writes, so what it holds is
/// fixed, and its leader checks off the store thread that this is nothing at all
/// ([`first_data_key`]) before the merge may commit. (Checking here would scan the range
/// on the store thread, through every tombstone a dropped table's deletion left: a stop
/// of every region of the store, hundreds of milliseconds for a full region.)
fn apply_prepare_merge(
    peer: &mut Peer,
    region: &Region,
    asked: RegionEpoch,
    batch: &mut WriteBatch,
) -> Result<Region, RaftStoreError> {
    if is_merging(region) {
        return Ok(region.clone());
    }
    exact_epoch(region, asked)?;
    peer.revoke_lease();
    let frozen = stage_merging(peer, region, true, batch);
    tracing::info!(
        region_id = region.id,
        "region frozen to be merged into its left neighbour"
    );
    Ok(frozen)
}

/// The region's epoch, if it is exactly `asked` (a merge command applies at the epoch it
/// was proposed for, or not at all).
fn exact_epoch(region: &Region, asked: RegionEpoch) -> Result<RegionEpoch, RaftStoreError> {
    let current = region.epoch.unwrap_or_default();
    if asked != current {
        return Err(RaftStoreError::EpochNotMatch {
            current: vec![region.clone()],
        });
    }
    Ok(current)
}

/// Stages `region` frozen for a merge (`merging`) or unfrozen, at the next version.
fn stage_merging(
    peer: &mut Peer,
    region: &Region,
    merging: bool,
    batch: &mut WriteBatch,
) -> Region {
    let current = region.epoch.unwrap_or_default();
    let mut next = region.clone();
    next.merging = merging.then_some(true);
    next.epoch = Some(RegionEpoch {
        conf_ver: current.conf_ver,
        version: current.version + 1,
    });
    peer.raw
        .mut_store()
        .stage_region(batch, next.clone(), PeerState::Normal);
    next
}

/// Absorbs `commit.source` into the region if the two are adjacent and colocated (see
/// `CommitMergeRequest`). This store's peer of the source goes in the same batch
/// (`Store::stage_merged_away`), which clears the source's range unless that peer is the
/// frozen, checked-empty region itself.
fn apply_commit_merge(
    peer: &mut Peer,
    region: &Region,
    asked: RegionEpoch,
    commit: CommitMergeRequest,
    batch: &mut WriteBatch,
    effects: &mut ApplyEffects,
) -> Result<Region, RaftStoreError> {
    let current = exact_epoch(region, asked)?;
    let source = commit
        .source
        .ok_or_else(|| RaftStoreError::Raft("commit-merge without a source region".into()))?;
    if is_merging(region) {
        return Err(merging_error(region.id));
    }
    if !is_merging(&source) {
        return Err(RaftStoreError::Raft(format!(
            "region {} is not frozen for a merge",
            source.id
        )));
    }
    if region.end_key.is_empty() || region.end_key != source.start_key {
        return Err(RaftStoreError::Raft(format!(
            "region {} does not end where region {} starts",
            region.id, source.id
        )));
    }
    if voter_stores(region) != voter_stores(&source) {
        return Err(RaftStoreError::Raft(format!(
            "regions {} and {} do not have their voters on the same stores",
            region.id, source.id
        )));
    }
    let mut grown = region.clone();
    grown.end_key = source.end_key.clone();
    grown.epoch = Some(RegionEpoch {
        conf_ver: current.conf_ver,
        version: current
            .version
            .max(source.epoch.unwrap_or_default().version)
            + 1,
    });
    peer.raw
        .mut_store()
        .stage_region(batch, grown.clone(), PeerState::Normal);
    tracing::info!(
        region_id = region.id,
        source = source.id,
        end = ?grown.end_key,
        "region absorbed its right neighbour"
    );
    effects.merged.push(source);
    Ok(grown)
}

/// The stores of a region's peers, sorted, if every peer is a voter (`None` otherwise: a
/// region changing membership is never merged).
fn voter_stores(region: &Region) -> Option<Vec<u64>> {
    let mut stores = Vec::with_capacity(region.peers.len());
    for p in &region.peers {
        if p.role() != PeerRole::Voter {
            return None;
        }
        stores.push(p.store_id);
    }
    stores.sort_unstable();
    Some(stores)
}

/// The first data key in `region`'s range on this store, if any. A scan through every
/// tombstone in the range: run it off the store thread (the leader of a region frozen
/// for a merge does, before the merge may commit).
pub fn first_data_key(
    engine: &EngineRef,
    region: &Region,
) -> Result<Option<(Cf, Vec<u8>)>, RaftStoreError> {
    for cf in DATA_CFS {
        if let Some(item) = engine
            .scan(cf, &region.start_key, &region.end_key, false)
            .next()
        {
            return Ok(Some((cf, item?.0)));
        }
    }
    Ok(None)
}

fn apply_conf_change(
    peer: &mut Peer,
    entry: &Entry,
    batch: &mut WriteBatch,
    _store_id: u64,
) -> Result<Region, RaftStoreError> {
    let cc: ConfChangeV2 = if entry.get_entry_type() == EntryType::EntryConfChange {
        // Flotilla proposes only V2 changes; a V1 entry is not something it wrote.
        return Err(RaftStoreError::Corrupt(format!(
            "region {}: unexpected v1 membership change at index {}",
            peer.region().id,
            entry.index
        )));
    } else if entry.data.is_empty() {
        // raft-rs's own "leave joint" entry carries no data.
        ConfChangeV2::default()
    } else {
        ConfChangeV2::parse_from_bytes(&entry.data)
            .map_err(|e| RaftStoreError::Corrupt(format!("conf change: {e}")))?
    };
    let context = if cc.context.is_empty() {
        ChangePeerContext::default()
    } else {
        ChangePeerContext::decode(cc.context.as_ref())
            .map_err(|e| RaftStoreError::Corrupt(format!("conf change context: {e}")))?
    };
    let cs = peer.raw.apply_conf_change(&cc)?;
    let mut region = peer.region().clone();
    let mut known: HashMap<u64, PeerMeta> = region.peers.iter().map(|p| (p.id, *p)).collect();
    for p in context.peers {
        known.insert(p.id, p);
    }
    let joint = !cs.voters_outgoing.is_empty();
    let mut ids: Vec<u64> = region.peers.iter().map(|p| p.id).collect();
    for id in cs
        .voters
        .iter()
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners)
        .chain(&cs.learners_next)
    {
        if !ids.contains(id) {
            ids.push(*id);
        }
    }
    let mut peers = Vec::new();
    for id in ids {
        let incoming = cs.voters.contains(&id);
        let outgoing = cs.voters_outgoing.contains(&id);
        let role = if !joint {
            if incoming {
                PeerRole::Voter
            } else if cs.learners.contains(&id) {
                PeerRole::Learner
            } else {
                continue;
            }
        } else if incoming && outgoing {
            PeerRole::Voter
        } else if incoming {
            PeerRole::IncomingVoter
        } else if outgoing && cs.learners_next.contains(&id) {
            PeerRole::DemotingVoter
        } else if outgoing {
            // Refused at proposal time; keep it a voter of the outgoing side.
            PeerRole::Voter
        } else if cs.learners.contains(&id) {
            PeerRole::Learner
        } else {
            continue;
        };
        let Some(mut p) = known.get(&id).cloned() else {
            return Err(RaftStoreError::Corrupt(format!(
                "membership change names peer {id} without its store"
            )));
        };
        p.set_role(role);
        peers.push(p);
    }
    let mut epoch = region.epoch.unwrap_or_default();
    epoch.conf_ver += 1;
    region.epoch = Some(epoch);
    region.peers = peers;
    let me = peer.meta.id;
    let still_member = region.peers.iter().any(|p| p.id == me);
    peer.raw
        .mut_store()
        .stage_region(batch, region.clone(), PeerState::Normal);
    peer.refresh_peer_cache();
    if !still_member {
        peer.removed = true;
    }
    Ok(region)
}

/// Drops applied log entries once there are more than `limit`. A leader keeps what any
/// follower at most `keep_max` entries behind still needs, a store that is down or
/// restarting included: a short absence then costs a log replay, not a snapshot of the
/// whole region, which the store thread builds and applies inline (in the failover
/// benchmark, every restarted store took one and stalled all its regions for 0.2–0.9 s,
/// growing with the region). A follower further behind gets a snapshot, so the log stays
/// bounded. A follower compacts no further than its leader, so whoever leads next holds
/// the same entries.
fn maybe_compact_log(
    peer: &mut Peer,
    batch: &mut WriteBatch,
    limit: u64,
    keep_max: u64,
) -> Result<(), RaftStoreError> {
    let store = peer.raw.store();
    let applied = store.applied_index();
    let truncated = store.truncated_index();
    if applied.saturating_sub(truncated) < limit {
        return Ok(());
    }
    let mut compact_to = applied;
    if peer.is_leader() {
        let me = peer.meta.id;
        // A follower not heard from since this peer was elected shows `matched` 0
        // (raft-rs resets it). It may need anything this peer still holds: the old
        // leader, killed, whose own log write may have trailed its followers'; a replica
        // that was lagging. So nothing is dropped for it until `keep_max` entries pile up.
        let slowest_kept = peer
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, p)| if p.matched == 0 { truncated } else { p.matched })
            .filter(|needs| applied.saturating_sub(*needs) < keep_max)
            .min();
        if let Some(slowest) = slowest_kept {
            compact_to = compact_to.min(slowest);
        }
    } else if let Some(leader_truncated) = peer.leader_truncated {
        // A follower keeps what its leader keeps. Compacting to its own applied index
        // instead dropped the entries the leader was keeping for a lagging or absent
        // peer (and for the leader itself, whose own log write may trail its followers'),
        // so when this peer took over, that peer needed a snapshot of the whole region.
        // (A follower whose leader never said, an older version, compacts on its own.)
        compact_to = compact_to.min(leader_truncated);
    }
    if compact_to <= truncated {
        return Ok(());
    }
    peer.raw.mut_store().stage_compact(batch, compact_to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_satisfies_raft_rs() {
        raft_config(&StoreConfig::new(1), 1, 0).validate().unwrap();
    }
}
