//! `PeerStorage`: one region peer's Raft log, hard state and apply state in the store's
//! engine (`Cf::Raft`), implementing raft-rs's `Storage`.
//!
//! The in-memory copy of the states is updated when a write is staged; the store commits
//! the staged batch (and fsyncs it) before it tells raft-rs the entries are persisted or
//! sends any message that depends on them.

use std::collections::VecDeque;
use std::sync::Arc;

use flotilla_proto::Message as _;
use flotilla_proto::metapb::{PeerRole, Region};
use flotilla_proto::raft_serverpb::{
    DataCf, KvOp, PeerState, RaftApplyState, RaftLocalState, RegionLocalState, SnapshotData,
    SnapshotHeader,
};
use flotilla_storage::{Cf, EngineRef, KvIter, ReadView, WriteBatch, WriteOp};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};

use crate::error::RaftStoreError;
use crate::keys;
use crate::snap_gen::{self, SnapGenerator, SnapPoll, SnapTask};

/// The log index (and term) every region starts at, as in TiKV. A peer created later with
/// an empty log is behind index 5 and so always catches up by snapshot, never by replaying
/// a log it might disagree with.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
/// See `RAFT_INIT_LOG_INDEX`.
pub const RAFT_INIT_LOG_TERM: u64 = 5;

/// The column families a region replicates; only `Raft` is node-local. `Meta` carries the
/// meta service's state in its own group; data regions never write it.
pub const DATA_CFS: [Cf; 5] = [Cf::Default, Cf::Lock, Cf::Write, Cf::Latest, Cf::Meta];

/// The proto name of a data column family.
pub fn data_cf_to_proto(cf: Cf) -> Option<DataCf> {
    match cf {
        Cf::Default => Some(DataCf::Default),
        Cf::Lock => Some(DataCf::Lock),
        Cf::Write => Some(DataCf::Write),
        Cf::Latest => Some(DataCf::Latest),
        Cf::Meta => Some(DataCf::Meta),
        Cf::Raft => None,
    }
}

/// The column family a proto `DataCf` names.
pub fn data_cf_from_proto(cf: DataCf) -> Cf {
    match cf {
        DataCf::Default => Cf::Default,
        DataCf::Lock => Cf::Lock,
        DataCf::Write => Cf::Write,
        DataCf::Latest => Cf::Latest,
        DataCf::Meta => Cf::Meta,
    }
}

/// The raft-rs configuration a region's peer list implies. In a joint configuration the
/// outgoing voters are the voters and demoting voters, and auto-leave is on.
pub fn conf_state_from_region(region: &Region) -> ConfState {
    let mut cs = ConfState::default();
    let mut joint = false;
    for peer in &region.peers {
        match peer.role() {
            PeerRole::Voter => {
                cs.mut_voters().push(peer.id);
                cs.mut_voters_outgoing().push(peer.id);
            }
            PeerRole::Learner => cs.mut_learners().push(peer.id),
            PeerRole::IncomingVoter => {
                joint = true;
                cs.mut_voters().push(peer.id);
            }
            PeerRole::DemotingVoter => {
                joint = true;
                cs.mut_voters_outgoing().push(peer.id);
                cs.mut_learners_next().push(peer.id);
            }
        }
    }
    if joint {
        cs.auto_leave = true;
    } else {
        cs.mut_voters_outgoing().clear();
    }
    cs
}

/// True when `key` lies in the region's range.
pub fn region_contains(region: &Region, key: &[u8]) -> bool {
    key >= region.start_key.as_ref() && (region.end_key.is_empty() || key < region.end_key.as_ref())
}

fn storage_error(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(e.to_string().into()))
}

fn decode<M: flotilla_proto::Message + Default>(
    bytes: &[u8],
    what: &str,
) -> Result<M, RaftStoreError> {
    M::decode(bytes).map_err(|e| RaftStoreError::Corrupt(format!("{what}: {e}")))
}

/// Stages the state of a brand-new region peer (bootstrap or split): its region, an empty
/// log truncated at `RAFT_INIT_LOG_INDEX`, and that index as applied and committed.
pub fn write_initial_state(batch: &mut WriteBatch, region: &Region) {
    write_initial_state_with(batch, region, HardState::default());
}

/// Stages the state a split gives its new region's peer on this store, over whatever an
/// uninitialized peer of that region left here. Such a peer (created by the new region's
/// election before this store applied the split) holds no data, but it may have voted:
/// its term and vote are kept, or it could vote twice in one term.
pub(crate) fn write_split_state(
    engine: &EngineRef,
    batch: &mut WriteBatch,
    region: &Region,
) -> Result<(), RaftStoreError> {
    let voted = match engine.get(Cf::Raft, &keys::raft_state_key(region.id))? {
        Some(bytes) => {
            let state: RaftLocalState = decode(&bytes, "raft state")?;
            HardState::parse_from_bytes(&state.hard_state)
                .map_err(|e| RaftStoreError::Corrupt(format!("hard state: {e}")))?
        }
        None => HardState::default(),
    };
    write_initial_state_with(batch, region, voted);
    Ok(())
}

/// `write_initial_state`, keeping `voted`'s term and vote when its term is past the
/// initial one.
fn write_initial_state_with(batch: &mut WriteBatch, region: &Region, voted: HardState) {
    let region_id = region.id;
    let state = RegionLocalState {
        state: PeerState::Normal as i32,
        region: Some(region.clone()),
    };
    batch.put(
        Cf::Raft,
        keys::region_state_key(region_id),
        state.encode_to_vec(),
    );
    let (term, vote) = if voted.term > RAFT_INIT_LOG_TERM {
        (voted.term, voted.vote)
    } else {
        (RAFT_INIT_LOG_TERM, 0)
    };
    let hs = HardState {
        term,
        vote,
        commit: RAFT_INIT_LOG_INDEX,
        ..HardState::default()
    };
    let raft_state = RaftLocalState {
        hard_state: hs.write_to_bytes().expect("hard state encodes").into(),
        last_index: RAFT_INIT_LOG_INDEX,
        last_term: RAFT_INIT_LOG_TERM,
    };
    batch.put(
        Cf::Raft,
        keys::raft_state_key(region_id),
        raft_state.encode_to_vec(),
    );
    let apply = RaftApplyState {
        applied_index: RAFT_INIT_LOG_INDEX,
        applied_term: RAFT_INIT_LOG_TERM,
        truncated_index: RAFT_INIT_LOG_INDEX,
        truncated_term: RAFT_INIT_LOG_TERM,
    };
    batch.put(
        Cf::Raft,
        keys::apply_state_key(region_id),
        apply.encode_to_vec(),
    );
}

/// One region peer's durable Raft state, cached in memory.
pub struct PeerStorage {
    engine: EngineRef,
    region_id: u64,
    region: Region,
    peer_state: PeerState,
    hard_state: HardState,
    last_index: u64,
    last_term: u64,
    apply: RaftApplyState,
    conf_state: ConfState,
    /// The region as this store last held it, when the peer was opened over the tombstone
    /// of an earlier one of its peers: kept only to write the tombstone back should this
    /// peer go before it is filled (so stale messages stay refused).
    tombstone: Option<Region>,
    cache: EntryCache,
    /// Where snapshots are built, if not on the store thread.
    snap_gen: Option<Arc<SnapGenerator>>,
}

/// The peer's newest log entries from its applied index on, newest last and contiguous
/// (the last one is the log's last entry), so that applying what was just committed and
/// looking up recent terms read memory instead of the engine, where every read of the
/// log is a merge over all its memtables and tables (13 % of a raftstore thread's time
/// under pgbench before this cache). Bounded by `bytes_max`: the oldest entries go first,
/// and whatever is not cached is read from the engine, which holds every entry the cache
/// does (entries are cached when staged, and raft-rs reads only persisted ones).
struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: u64,
    bytes_max: u64,
}

impl EntryCache {
    fn size(entry: &Entry) -> u64 {
        u64::from(entry.compute_size())
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.first_index()?;
        let entry = self.entries.get(index.checked_sub(first)? as usize)?;
        debug_assert_eq!(entry.index, index, "the cache is contiguous");
        Some(entry)
    }

    /// Appends entries that overwrite the log from `entries[0].index` on.
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        while self.entries.back().is_some_and(|e| e.index >= first.index) {
            let e = self.entries.pop_back().expect("checked");
            self.bytes -= Self::size(&e);
        }
        if self
            .entries
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            self.clear();
        }
        for entry in entries {
            self.bytes += Self::size(entry);
            self.entries.push_back(entry.clone());
        }
        while self.bytes > self.bytes_max {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= Self::size(&e);
        }
    }

    /// Drops the entries below `index`.
    fn evict_below(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index < index) {
            let e = self.entries.pop_front().expect("checked");
            self.bytes -= Self::size(&e);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// The default bound of a peer's entry cache (`PeerStorage::set_entry_cache_bytes_max`).
pub const ENTRY_CACHE_BYTES_MAX_DEFAULT: u64 = 4 << 20;

impl PeerStorage {
    /// Loads a peer's state. A region with no stored state is an uninitialized peer (created
    /// by a message from a new region member): empty log, waiting for a snapshot. So is a
    /// region whose stored state is a tombstone (an earlier peer of this store, removed):
    /// the new peer holds nothing yet. Opening it with the tombstone's region made it look
    /// filled, with the range the region had when the old peer left; the snapshot that
    /// filled it then deleted that whole range here, other regions' data included.
    pub fn open(engine: EngineRef, region_id: u64) -> Result<Self, RaftStoreError> {
        let empty = || Region {
            id: region_id,
            ..Region::default()
        };
        let (peer_state, region, tombstone) =
            match engine.get(Cf::Raft, &keys::region_state_key(region_id))? {
                Some(bytes) => {
                    let state: RegionLocalState = decode(&bytes, "region state")?;
                    let region = state.region.clone().unwrap_or_default();
                    match state.state() {
                        PeerState::Tombstone => (PeerState::Normal, empty(), Some(region)),
                        live => (live, region, None),
                    }
                }
                None => (PeerState::Normal, empty(), None),
            };
        let (hard_state, last_index, last_term) =
            match engine.get(Cf::Raft, &keys::raft_state_key(region_id))? {
                Some(bytes) => {
                    let state: RaftLocalState = decode(&bytes, "raft state")?;
                    let hs = HardState::parse_from_bytes(&state.hard_state)
                        .map_err(|e| RaftStoreError::Corrupt(format!("hard state: {e}")))?;
                    (hs, state.last_index, state.last_term)
                }
                None => (HardState::default(), 0, 0),
            };
        let apply = match engine.get(Cf::Raft, &keys::apply_state_key(region_id))? {
            Some(bytes) => decode(&bytes, "apply state")?,
            None => RaftApplyState::default(),
        };
        let conf_state = conf_state_from_region(&region);
        Ok(Self {
            engine,
            region_id,
            region,
            peer_state,
            hard_state,
            last_index,
            last_term,
            apply,
            conf_state,
            tombstone,
            cache: EntryCache {
                entries: VecDeque::new(),
                bytes: 0,
                bytes_max: ENTRY_CACHE_BYTES_MAX_DEFAULT,
            },
            snap_gen: None,
        })
    }

    /// Bounds the memory of cached log entries (see `EntryCache`); 0 turns the cache off.
    pub fn set_entry_cache_bytes_max(&mut self, bytes: u64) {
        self.cache.bytes_max = bytes;
        while self.cache.bytes > bytes
            && let Some(first) = self.cache.first_index()
        {
            self.cache.evict_below(first + 1);
        }
    }

    /// Bytes of log entries held in memory.
    pub fn entry_cache_bytes(&self) -> u64 {
        self.cache.bytes
    }

    /// The region as of the applied index.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// True once the peer has a region (bootstrapped, split off, or filled by a snapshot).
    pub fn is_initialized(&self) -> bool {
        !self.region.peers.is_empty()
    }

    /// Whether the peer is normal, applying a snapshot, or removed.
    pub fn peer_state(&self) -> PeerState {
        self.peer_state
    }

    /// The applied index.
    pub fn applied_index(&self) -> u64 {
        self.apply.applied_index
    }

    /// The term of the applied index.
    pub fn applied_term(&self) -> u64 {
        self.apply.applied_term
    }

    /// The last index dropped from the log.
    pub fn truncated_index(&self) -> u64 {
        self.apply.truncated_index
    }

    /// The committed index as persisted.
    pub fn committed_index(&self) -> u64 {
        self.hard_state.commit
    }

    /// Stages `entries` (from a Ready) into `batch`, overwriting any conflicting suffix:
    /// entries above the new last index left from an older leader are deleted in the same
    /// batch, or the follower would disagree with its leader forever.
    pub fn stage_entries(&mut self, batch: &mut WriteBatch, entries: &[Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        assert!(
            first.index > self.apply.truncated_index,
            "region {}: appending entry {} at or below the truncated index {}",
            self.region_id,
            first.index,
            self.apply.truncated_index
        );
        for entry in entries {
            let bytes = entry.write_to_bytes().expect("entry encodes");
            batch.put(Cf::Raft, keys::log_key(self.region_id, entry.index), bytes);
        }
        for stale in last.index + 1..=self.last_index {
            batch.delete(Cf::Raft, keys::log_key(self.region_id, stale));
        }
        self.cache.append(entries);
        self.last_index = last.index;
        self.last_term = last.term;
        self.stage_raft_state(batch);
    }

    /// Stages a new hard state.
    pub fn stage_hard_state(&mut self, batch: &mut WriteBatch, hs: &HardState) {
        self.hard_state = hs.clone();
        self.stage_raft_state(batch);
    }

    fn stage_raft_state(&self, batch: &mut WriteBatch) {
        let state = RaftLocalState {
            hard_state: self
                .hard_state
                .write_to_bytes()
                .expect("hard state encodes")
                .into(),
            last_index: self.last_index,
            last_term: self.last_term,
        };
        batch.put(
            Cf::Raft,
            keys::raft_state_key(self.region_id),
            state.encode_to_vec(),
        );
    }

    fn stage_apply_state(&self, batch: &mut WriteBatch) {
        batch.put(
            Cf::Raft,
            keys::apply_state_key(self.region_id),
            self.apply.encode_to_vec(),
        );
    }

    /// Stages the applied index (written in the same batch as the data it covers).
    pub fn stage_applied(&mut self, batch: &mut WriteBatch, index: u64, term: u64) {
        debug_assert!(index >= self.apply.applied_index);
        self.apply.applied_index = index;
        self.apply.applied_term = term;
        // The applied entry itself stays: it is the previous entry of the next append.
        self.cache.evict_below(index);
        self.stage_apply_state(batch);
    }

    /// Stages a new region (membership or range change), as of the applied index.
    pub fn stage_region(&mut self, batch: &mut WriteBatch, region: Region, state: PeerState) {
        let local = RegionLocalState {
            state: state as i32,
            region: Some(region.clone()),
        };
        batch.put(
            Cf::Raft,
            keys::region_state_key(self.region_id),
            local.encode_to_vec(),
        );
        self.conf_state = conf_state_from_region(&region);
        self.region = region;
        self.peer_state = state;
    }

    /// Stages dropping log entries up to and including `index`, which must be applied.
    pub fn stage_compact(
        &mut self,
        batch: &mut WriteBatch,
        index: u64,
    ) -> Result<(), RaftStoreError> {
        if index <= self.apply.truncated_index {
            return Ok(());
        }
        assert!(
            index <= self.apply.applied_index,
            "region {}: compacting to {index} above the applied index {}",
            self.region_id,
            self.apply.applied_index
        );
        let term = self
            .term(index)
            .map_err(|e| RaftStoreError::Corrupt(e.to_string()))?;
        for i in self.apply.truncated_index + 1..=index {
            batch.delete(Cf::Raft, keys::log_key(self.region_id, i));
        }
        self.cache.evict_below(index + 1);
        self.apply.truncated_index = index;
        self.apply.truncated_term = term;
        self.stage_apply_state(batch);
        Ok(())
    }

    /// Stages the installation of a snapshot received from the leader: the region's data
    /// replaced by the snapshot's, the log dropped, and the snapshot's index as applied,
    /// committed and truncated, all in one batch. Returns the new region. What this peer
    /// held outside the snapshot's range (it missed a split) is deleted unless
    /// `keep_outside`: another peer here owns part of that range. With `data_written`, the
    /// data in the snapshot's range is already in the engine (`write_snapshot_data`, off
    /// the store thread) and only the rest is staged.
    pub fn stage_snapshot(
        &mut self,
        batch: &mut WriteBatch,
        snap: &Snapshot,
        keep_outside: bool,
        data_written: bool,
    ) -> Result<Region, RaftStoreError> {
        let region = snapshot_region(&snap.data)?;
        let meta = snap.get_metadata();
        let new = (&region.start_key[..], &region.end_key[..]);
        let old = (self.is_initialized() && !keep_outside)
            .then(|| (&self.region.start_key[..], &self.region.end_key[..]));
        if data_written {
            stage_clear_outside(&self.engine, batch, old, new)?;
        } else {
            let data: SnapshotData = decode(&snap.data, "snapshot data")?;
            stage_replace_data(&self.engine, batch, old, new, &data.kvs)?;
        }
        for i in self.apply.truncated_index + 1..=self.last_index {
            batch.delete(Cf::Raft, keys::log_key(self.region_id, i));
        }
        self.cache.clear();
        self.last_index = meta.index;
        self.last_term = meta.term;
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.stage_raft_state(batch);
        self.apply = RaftApplyState {
            applied_index: meta.index,
            applied_term: meta.term,
            truncated_index: meta.index,
            truncated_term: meta.term,
        };
        self.stage_apply_state(batch);
        self.stage_region(batch, region.clone(), PeerState::Normal);
        Ok(region)
    }

    /// Stages removing this peer: its data range and log are deleted and its region state
    /// becomes a tombstone, so stale messages for it cannot bring it back.
    pub fn stage_destroy(
        &mut self,
        batch: &mut WriteBatch,
        keep_data: bool,
    ) -> Result<(), RaftStoreError> {
        if self.is_initialized() && !keep_data {
            stage_clear_range(
                &self.engine,
                batch,
                &self.region.start_key,
                &self.region.end_key,
            )?;
        }
        for i in self.apply.truncated_index + 1..=self.last_index {
            batch.delete(Cf::Raft, keys::log_key(self.region_id, i));
        }
        self.cache.clear();
        batch.delete(Cf::Raft, keys::raft_state_key(self.region_id));
        batch.delete(Cf::Raft, keys::apply_state_key(self.region_id));
        // A peer never filled leaves the tombstone it was opened over (its epoch refuses
        // stale messages), not an empty region.
        let region = match self.tombstone.take() {
            Some(old) if !self.is_initialized() => old,
            _ => self.region.clone(),
        };
        self.stage_region(batch, region, PeerState::Tombstone);
        Ok(())
    }

    /// Lets this peer's snapshots be built on `generator`'s thread (when the engine has
    /// point-in-time views); without one they are built on the calling thread.
    pub fn set_snapshot_generator(&mut self, generator: Arc<SnapGenerator>) {
        self.snap_gen = Some(generator);
    }

    /// The region as of the applied index, and a view of the engine at that index, or
    /// `None` if the engine has no point-in-time views.
    fn snap_task(&self) -> Option<SnapTask> {
        Some(self.snap_task_over(self.engine.read_view()?))
    }

    /// Builds a snapshot here and now, reading the live engine: nothing is applied while
    /// the calling (store) thread is busy building it.
    fn build_snapshot_inline(&self) -> Result<Snapshot, RaftStoreError> {
        snap_gen::build(self.snap_task_over(Box::new(LiveView(self.engine.clone()))))
    }

    /// A snapshot of the region as of the applied index, read from `view`.
    fn snap_task_over(&self, view: Box<dyn ReadView>) -> SnapTask {
        SnapTask {
            region: self.region.clone(),
            index: self.apply.applied_index,
            term: self.apply.applied_term,
            conf_state: self.conf_state.clone(),
            view,
        }
    }
}

/// The engine itself read as a view: consistent only while nothing writes to it.
struct LiveView(EngineRef);

impl ReadView for LiveView {
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: &[u8]) -> KvIter<'a> {
        self.0.scan(cf, start, end, false)
    }
}

/// The region a snapshot's data (`SnapshotData` bytes) fills, read without decoding the
/// data itself.
pub(crate) fn snapshot_region(data: &[u8]) -> Result<Region, RaftStoreError> {
    let header: SnapshotHeader = decode(data, "snapshot header")?;
    header
        .region
        .ok_or_else(|| RaftStoreError::Corrupt("snapshot without a region".into()))
}

/// Stages making the data this store holds in `new` exactly the snapshot's `kvs`, and
/// clearing what it held in `old` (the peer's range before, if any) outside `new`.
fn stage_replace_data(
    engine: &EngineRef,
    batch: &mut WriteBatch,
    old: Option<(&[u8], &[u8])>,
    new: (&[u8], &[u8]),
    kvs: &[KvOp],
) -> Result<(), RaftStoreError> {
    stage_clear_outside(engine, batch, old, new)?;
    diff_snapshot_data(engine, new, kvs, &mut |op| {
        batch.push(op);
        Ok(())
    })
}

/// Stages clearing what this store held in `old` (the peer's range before, if any) outside
/// `new` (the snapshot's range: the peer missed a split).
fn stage_clear_outside(
    engine: &EngineRef,
    batch: &mut WriteBatch,
    old: Option<(&[u8], &[u8])>,
    new: (&[u8], &[u8]),
) -> Result<(), RaftStoreError> {
    let in_new = |key: &[u8]| key >= new.0 && (new.1.is_empty() || key < new.1);
    if let Some((start, end)) = old
        && (start, end) != new
    {
        for cf in DATA_CFS {
            for item in engine.scan(cf, start, end, false) {
                let (key, _) = item?;
                if !in_new(&key) {
                    batch.delete(cf, key);
                }
            }
        }
    }
    Ok(())
}

/// Emits the writes that make the data this store holds in `new` exactly the snapshot's
/// `kvs`. Only the differences are written: a store that was down for a while still holds
/// most of its region's versions (MVCC versions never change once written), and rewriting
/// them all (deleting, then putting back) cost 0.2–0.9 s for 5–10 MB. Reading them to
/// compare is far cheaper than writing them into the memtables.
fn diff_snapshot_data(
    engine: &EngineRef,
    new: (&[u8], &[u8]),
    kvs: &[KvOp],
    emit: &mut dyn FnMut(WriteOp) -> Result<(), RaftStoreError>,
) -> Result<(), RaftStoreError> {
    for cf in DATA_CFS {
        let wanted: Vec<&KvOp> = kvs
            .iter()
            .filter(|kv| data_cf_from_proto(kv.cf()) == cf)
            .collect();
        // Snapshots are built by scanning each column family in order; one that is not
        // (from another builder) is applied the plain way.
        let sorted = wanted.windows(2).all(|w| w[0].key < w[1].key);
        let mut wanted = wanted.into_iter().peekable();
        for item in engine.scan(cf, new.0, new.1, false) {
            let (key, value) = item?;
            if !sorted {
                emit(WriteOp::Delete { cf, key })?;
                continue;
            }
            // The snapshot's keys before this one are not held here: put them.
            while let Some(kv) = wanted.next_if(|kv| kv.key.as_ref() < key.as_slice()) {
                emit(kv_write(cf, kv))?;
            }
            match wanted.next_if(|kv| kv.key.as_ref() == key.as_slice()) {
                Some(kv) if kv.value.as_deref() == Some(value.as_slice()) => {}
                Some(kv) => emit(kv_write(cf, kv))?,
                None => emit(WriteOp::Delete { cf, key })?,
            }
        }
        for kv in wanted {
            emit(kv_write(cf, kv))?;
        }
    }
    Ok(())
}

/// What writing a snapshot's data off the store thread did (`write_snapshot_data`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SnapshotWrite {
    /// Puts and deletes written.
    pub writes: u64,
    /// Bytes of keys and values written.
    pub bytes: u64,
    /// Batches the writes went in.
    pub chunks: u64,
}

/// Writes a snapshot's data (`SnapshotData` bytes) into the engine: the writes that make
/// what this store holds in the snapshot's range exactly the snapshot's, in batches of
/// about `chunk_bytes_max` (each holds the engine's journal while its entries go into the
/// memtables, so one batch of a whole region would stall every other writer), not synced.
/// Nothing else here writes in that range meanwhile (the store keeps the peer from
/// applying, and other peers' snapshots from overlapping it). `may_write` is asked before
/// each batch; false stops the write (`Ok(None)`). A write stopped or cut short by a crash
/// leaves part of the range at the snapshot's state under the peer's older states, which
/// is harmless: the peer serves nothing from that range, a log it replays over the data
/// ends with the same values (its entries are plain puts and deletes), and the next
/// snapshot it takes writes whatever still differs.
pub(crate) fn write_snapshot_data(
    engine: &EngineRef,
    data: &[u8],
    chunk_bytes_max: usize,
    may_write: &mut dyn FnMut() -> bool,
) -> Result<Option<SnapshotWrite>, RaftStoreError> {
    let data: SnapshotData = decode(data, "snapshot data")?;
    let region = data
        .region
        .as_ref()
        .ok_or_else(|| RaftStoreError::Corrupt("snapshot without a region".into()))?;
    let mut done = SnapshotWrite::default();
    let mut batch = WriteBatch::new();
    let mut stopped = false;
    let mut flush = |batch: &mut WriteBatch, done: &mut SnapshotWrite| {
        if batch.is_empty() {
            return Ok(());
        }
        if !may_write() {
            stopped = true;
            return Err(RaftStoreError::ServerIsBusy(
                "the snapshot's write was stopped".into(),
            ));
        }
        done.writes += batch.len() as u64;
        done.bytes += batch.size_bytes() as u64;
        done.chunks += 1;
        // Not synced: the peer's states are written after it and synced, and the engine's
        // journal makes durable in order.
        let _ticket = engine.append(std::mem::take(batch))?;
        Ok(())
    };
    let written = diff_snapshot_data(
        engine,
        (&region.start_key[..], &region.end_key[..]),
        &data.kvs,
        &mut |op| {
            batch.push(op);
            if batch.size_bytes() >= chunk_bytes_max {
                flush(&mut batch, &mut done)?;
            }
            Ok(())
        },
    )
    .and_then(|()| flush(&mut batch, &mut done));
    match written {
        Ok(()) => Ok(Some(done)),
        Err(_) if stopped => Ok(None),
        Err(e) => Err(e),
    }
}

fn kv_write(cf: Cf, kv: &KvOp) -> WriteOp {
    match &kv.value {
        Some(value) => WriteOp::Put {
            cf,
            key: kv.key.to_vec(),
            value: value.to_vec(),
        },
        None => WriteOp::Delete {
            cf,
            key: kv.key.to_vec(),
        },
    }
}

/// Stages deletes of every data key in `[start, end)`.
pub fn stage_clear_range(
    engine: &EngineRef,
    batch: &mut WriteBatch,
    start: &[u8],
    end: &[u8],
) -> Result<(), RaftStoreError> {
    for cf in DATA_CFS {
        for item in engine.scan(cf, start, end, false) {
            batch.delete(cf, item?.0);
        }
    }
    // And what the batch itself writes there (a lagging peer's entries applied in the
    // same round): the engine does not hold those yet.
    let in_range = |k: &[u8]| k >= start && (end.is_empty() || k < end);
    let pending: Vec<(Cf, Vec<u8>)> = batch
        .ops()
        .iter()
        .filter_map(|op| match op {
            WriteOp::Put { cf, key, .. } if DATA_CFS.contains(cf) && in_range(key) => {
                Some((*cf, key.clone()))
            }
            _ => None,
        })
        .collect();
    for (cf, key) in pending {
        batch.delete(cf, key);
    }
    Ok(())
}

impl Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.apply.truncated_index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        assert!(
            high <= self.last_index + 1,
            "region {}: entries [{low}, {high}) beyond the last index {}",
            self.region_id,
            self.last_index
        );
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut entries = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        if low < high && self.cache.get(low).is_some() {
            // `high - 1 <= last_index`, the cache's last entry: all of it is cached.
            for index in low..high {
                let entry = self
                    .cache
                    .get(index)
                    .expect("cached through the last index");
                size += EntryCache::size(entry);
                if !entries.is_empty() && size > max_size {
                    break;
                }
                entries.push(entry.clone());
            }
            return Ok(entries);
        }
        let start = keys::log_key(self.region_id, low);
        let end = keys::log_key(self.region_id, high);
        for item in self.engine.scan(Cf::Raft, &start, &end, false) {
            let (key, value) = item.map_err(storage_error)?;
            let entry = Entry::parse_from_bytes(&value).map_err(storage_error)?;
            let expected = low + entries.len() as u64;
            if keys::log_index(&key) != Some(expected) || entry.index != expected {
                return Err(storage_error(format!(
                    "region {}: log hole at index {expected}",
                    self.region_id
                )));
            }
            size += value.len() as u64;
            if !entries.is_empty() && size > max_size {
                break;
            }
            entries.push(entry);
        }
        if entries.is_empty() && low < high {
            return Err(storage_error(format!(
                "region {}: log entries [{low}, {high}) missing",
                self.region_id
            )));
        }
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.apply.truncated_index {
            return Ok(self.apply.truncated_term);
        }
        if idx < self.apply.truncated_index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        if idx == self.last_index {
            return Ok(self.last_term);
        }
        if let Some(entry) = self.cache.get(idx) {
            return Ok(entry.term);
        }
        let bytes = self
            .engine
            .get(Cf::Raft, &keys::log_key(self.region_id, idx))
            .map_err(storage_error)?
            .ok_or_else(|| {
                storage_error(format!(
                    "region {}: log entry {idx} missing",
                    self.region_id
                ))
            })?;
        let entry = Entry::parse_from_bytes(&bytes).map_err(storage_error)?;
        Ok(entry.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.apply.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.apply.applied_index < request_index || !self.is_initialized() {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let Some(generator) = &self.snap_gen else {
            return self.build_snapshot_inline().map_err(storage_error);
        };
        // A snapshot built earlier is still good if the log still holds what follows
        // it, so the follower can go on from it by log.
        let min_index = request_index.max(self.apply.truncated_index);
        match generator.poll(self.region_id, min_index, || self.snap_task()) {
            SnapPoll::Ready(snap) => Ok(snap),
            SnapPoll::NotYet => Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            )),
            SnapPoll::NoView => self.build_snapshot_inline().map_err(storage_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flotilla_proto::metapb::{Peer as PeerMeta, RegionEpoch};
    use flotilla_storage::{FjallEngine, FjallOptions};

    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 100].into(),
            ..Default::default()
        }
    }

    fn region() -> Region {
        Region {
            id: 1,
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![PeerMeta {
                id: 1,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A region bootstrapped on a fresh engine, and its peer's storage.
    fn bootstrapped() -> (tempfile::TempDir, EngineRef, PeerStorage) {
        let dir = tempfile::tempdir().unwrap();
        let engine: EngineRef =
            Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
        let mut batch = WriteBatch::new();
        write_initial_state(&mut batch, &region());
        engine.write(batch, true).unwrap();
        let storage = PeerStorage::open(engine.clone(), 1).unwrap();
        (dir, engine, storage)
    }

    fn stage(
        engine: &EngineRef,
        storage: &mut PeerStorage,
        f: impl FnOnce(&mut PeerStorage, &mut WriteBatch),
    ) {
        let mut batch = WriteBatch::new();
        f(storage, &mut batch);
        engine.write(batch, false).unwrap();
    }

    /// The log as this peer reads it against the log as a reopened peer (no cache) reads
    /// it from the engine: every entry and term the same.
    fn assert_reads_match_the_engine(engine: &EngineRef, storage: &PeerStorage, low: u64) {
        let fresh = PeerStorage::open(engine.clone(), 1).unwrap();
        assert_eq!(fresh.entry_cache_bytes(), 0);
        let high = storage.last_index + 1;
        let ctx = GetEntriesContext::empty(false);
        assert_eq!(
            storage.entries(low, high, None, ctx).unwrap(),
            fresh
                .entries(low, high, None, GetEntriesContext::empty(false))
                .unwrap()
        );
        for idx in low..high {
            assert_eq!(
                storage.term(idx).unwrap(),
                fresh.term(idx).unwrap(),
                "term of {idx}"
            );
        }
    }

    /// A range cleared in a batch that also writes into it (a lagging peer's entries
    /// applied in the round that merges it away) ends empty: the batch's own puts there
    /// are deleted too, not only what the engine held.
    #[test]
    fn a_cleared_range_loses_the_batchs_own_writes_there_too() {
        let (_dir, engine, _storage) = bootstrapped();
        let mut batch = WriteBatch::new();
        batch.put(Cf::Default, b"b1".to_vec(), b"old".to_vec());
        batch.put(Cf::Default, b"z1".to_vec(), b"outside".to_vec());
        engine.write(batch, false).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(Cf::Default, b"b2".to_vec(), b"pending".to_vec());
        batch.put(Cf::Default, b"a2".to_vec(), b"outside".to_vec());
        stage_clear_range(&engine, &mut batch, b"b", b"c").unwrap();
        engine.write(batch, false).unwrap();
        let left: Vec<Vec<u8>> = engine
            .scan(Cf::Default, b"", b"", false)
            .map(|kv| kv.unwrap().0)
            .collect();
        assert_eq!(left, [b"a2".to_vec(), b"z1".to_vec()]);
    }

    #[test]
    fn the_entry_cache_serves_the_same_log_as_the_engine_through_overwrites_applies_and_compaction()
    {
        let (_dir, engine, mut storage) = bootstrapped();
        let first = RAFT_INIT_LOG_INDEX + 1;

        let entries: Vec<Entry> = (first..first + 10).map(|i| entry(i, 6)).collect();
        stage(&engine, &mut storage, |s, b| s.stage_entries(b, &entries));
        assert!(storage.entry_cache_bytes() > 0);
        assert_reads_match_the_engine(&engine, &storage, first);
        // A size limit still returns at least one entry, from the cache as from the engine.
        let one = storage
            .entries(first, first + 10, Some(0), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one, vec![entries[0].clone()]);

        // A new leader overwrites the suffix from first + 6 with a shorter one.
        let newer: Vec<Entry> = (first + 6..first + 8).map(|i| entry(i, 7)).collect();
        stage(&engine, &mut storage, |s, b| s.stage_entries(b, &newer));
        assert_eq!(storage.last_index, first + 7);
        assert_eq!(storage.term(first + 7).unwrap(), 7);
        assert_reads_match_the_engine(&engine, &storage, first);

        // Applying evicts what is below the applied index; reads below it use the engine.
        let cached = storage.entry_cache_bytes();
        stage(&engine, &mut storage, |s, b| {
            s.stage_applied(b, first + 3, 6)
        });
        assert!(storage.entry_cache_bytes() < cached);
        assert_eq!(storage.cache.first_index(), Some(first + 3));
        assert_reads_match_the_engine(&engine, &storage, first);

        stage(&engine, &mut storage, |s, b| {
            s.stage_compact(b, first + 3).unwrap()
        });
        assert_eq!(storage.cache.first_index(), Some(first + 4));
        assert_reads_match_the_engine(&engine, &storage, first + 4);
    }

    #[test]
    fn the_entry_cache_stays_within_its_bound_and_what_does_not_fit_is_read_from_the_engine() {
        let (_dir, engine, mut storage) = bootstrapped();
        let first = RAFT_INIT_LOG_INDEX + 1;
        let one_entry = EntryCache::size(&entry(first, 6));
        storage.set_entry_cache_bytes_max(3 * one_entry);

        for chunk in 0..4 {
            let entries: Vec<Entry> = (first + chunk * 5..first + chunk * 5 + 5)
                .map(|i| entry(i, 6))
                .collect();
            stage(&engine, &mut storage, |s, b| s.stage_entries(b, &entries));
            assert!(storage.entry_cache_bytes() <= 3 * one_entry);
            // The newest entries are the ones kept.
            assert_eq!(storage.cache.first_index(), Some(storage.last_index - 2));
            assert_reads_match_the_engine(&engine, &storage, first);
        }

        // Shrinking the bound (0: off) evicts at once.
        storage.set_entry_cache_bytes_max(0);
        assert_eq!(storage.entry_cache_bytes(), 0);
        let more: Vec<Entry> = (first + 20..first + 22).map(|i| entry(i, 6)).collect();
        stage(&engine, &mut storage, |s, b| s.stage_entries(b, &more));
        assert_eq!(storage.entry_cache_bytes(), 0);
        assert_reads_match_the_engine(&engine, &storage, first);
    }

    fn cf_contents(engine: &EngineRef, cf: Cf) -> Vec<(Vec<u8>, Vec<u8>)> {
        engine
            .scan(cf, b"", b"", false)
            .map(|item| item.unwrap())
            .collect()
    }

    fn op(cf: DataCf, key: &str, value: &str) -> KvOp {
        KvOp {
            cf: cf as i32,
            key: key.as_bytes().to_vec().into(),
            value: Some(value.as_bytes().to_vec().into()),
        }
    }

    /// Installing a snapshot leaves exactly its data in the new range and nothing of the
    /// old range outside it, and writes only what differs from what the store held.
    #[test]
    fn a_snapshot_writes_only_what_differs_from_the_data_held() {
        let (_dir, engine, _storage) = bootstrapped();
        let held = [
            (Cf::Default, "a1", "old range only"),
            (Cf::Default, "d1", "same"),
            (Cf::Default, "d2", "changed"),
            (Cf::Default, "d3", "not in the snapshot"),
            (Cf::Default, "p1", "stale, in the new range only"),
            (Cf::Default, "z1", "outside both ranges"),
            (Cf::Write, "e1", "same"),
        ];
        let mut batch = WriteBatch::new();
        for (cf, k, v) in held {
            batch.put(cf, k.into(), v.into());
        }
        engine.write(batch, false).unwrap();
        let kvs = vec![
            op(DataCf::Default, "c0", "new, before every held key"),
            op(DataCf::Default, "d1", "same"),
            op(DataCf::Default, "d2", "new value"),
            op(DataCf::Default, "q1", "new, after every held key"),
            op(DataCf::Write, "e1", "same"),
            op(DataCf::Lock, "f1", "new, in a family held empty"),
        ];

        let mut batch = WriteBatch::new();
        stage_replace_data(&engine, &mut batch, Some((b"a", b"m")), (b"c", b"x"), &kvs).unwrap();
        // a1, d3 and p1 deleted; c0, d2, q1 and f1 put; d1 and e1 left alone.
        assert_eq!(batch.len(), 7);
        engine.write(batch, false).unwrap();

        let pairs = |xs: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
            xs.iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(
            cf_contents(&engine, Cf::Default),
            pairs(&[
                ("c0", "new, before every held key"),
                ("d1", "same"),
                ("d2", "new value"),
                ("q1", "new, after every held key"),
                ("z1", "outside both ranges"),
            ])
        );
        assert_eq!(cf_contents(&engine, Cf::Write), pairs(&[("e1", "same")]));
        assert_eq!(
            cf_contents(&engine, Cf::Lock),
            pairs(&[("f1", "new, in a family held empty")])
        );

        // A snapshot not sorted by key is applied whole: the end state is the same.
        let mut shuffled = kvs.clone();
        shuffled.swap(0, 3);
        let mut batch = WriteBatch::new();
        stage_replace_data(&engine, &mut batch, None, (b"c", b"x"), &shuffled).unwrap();
        engine.write(batch, false).unwrap();
        assert_eq!(cf_contents(&engine, Cf::Default).len(), 5);
        assert_eq!(cf_contents(&engine, Cf::Lock).len(), 1);
    }

    /// Written off the store thread, in batches, a snapshot leaves the same data as staged
    /// in one batch; stopped after its first batch and written again whole, too.
    #[test]
    fn a_snapshot_written_in_batches_leaves_the_data_one_batch_would() {
        let (_dir, engine, _storage) = bootstrapped();
        let mut batch = WriteBatch::new();
        for (cf, k, v) in [
            (Cf::Default, "c5", "changed"),
            (Cf::Default, "c7", "not in the snapshot"),
            (Cf::Default, "z1", "outside the range"),
        ] {
            batch.put(cf, k.into(), v.into());
        }
        engine.write(batch, false).unwrap();
        let mut kvs: Vec<KvOp> = (0..40)
            .map(|i| op(DataCf::Default, &format!("c{i:02}"), &format!("value {i}")))
            .collect();
        kvs.push(op(DataCf::Write, "c10", "a write record"));
        let data = SnapshotData {
            region: Some(Region {
                id: 1,
                start_key: b"c".to_vec().into(),
                end_key: b"d".to_vec().into(),
                ..Region::default()
            }),
            kvs,
        }
        .encode_to_vec();
        let mut expected: Vec<(Vec<u8>, Vec<u8>)> = (0..40)
            .map(|i| {
                (
                    format!("c{i:02}").into_bytes(),
                    format!("value {i}").into_bytes(),
                )
            })
            .collect();
        expected.push((b"z1".to_vec(), b"outside the range".to_vec()));

        // Stopped before its second batch: part of the range is written, and no more.
        let mut batches_allowed = 1;
        let stopped = write_snapshot_data(&engine, &data, 64, &mut || {
            batches_allowed -= 1;
            batches_allowed >= 0
        })
        .unwrap();
        assert!(stopped.is_none(), "the write was stopped");
        let partial = cf_contents(&engine, Cf::Default);
        assert_ne!(
            partial, expected,
            "one batch of 64 bytes is not the whole snapshot"
        );
        assert!(partial.iter().any(|(k, _)| k == b"c00"));

        // Written again, whole: exactly the snapshot's data in its range, in batches.
        let written = write_snapshot_data(&engine, &data, 64, &mut || true)
            .unwrap()
            .expect("not stopped");
        assert!(written.chunks > 1, "{written:?}");
        assert_eq!(cf_contents(&engine, Cf::Default), expected);
        assert_eq!(
            cf_contents(&engine, Cf::Write),
            vec![(b"c10".to_vec(), b"a write record".to_vec())]
        );

        // Written a third time, nothing differs: nothing is written.
        let again = write_snapshot_data(&engine, &data, 64, &mut || true)
            .unwrap()
            .expect("not stopped");
        assert_eq!(again.writes, 0);
    }
}
