//! The meta state held in memory by the leader, and its persisted form.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use flotilla_proto::Message;
use flotilla_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store, StoreState};
use flotilla_proto::metaservicepb::{RegionInfo, StoreStats};
use flotilla_storage::{Cf, KvEngine, StorageError, WriteBatch};
use flotilla_types::version::{CLUSTER_VERSION_BASE, ClusterVersion};

const STORE_PREFIX: &[u8] = b"meta/store/";
const REGION_PREFIX: &[u8] = b"meta/region/";
const ALLOC_KEY: &[u8] = b"meta/alloc_end";
const BOOTSTRAP_KEY: &[u8] = b"meta/bootstrap";
const GC_SAFE_POINT_KEY: &[u8] = b"meta/gc_safe_point";
const CLUSTER_VERSION_KEY: &[u8] = b"meta/cluster_version";
/// Ids are persisted this many at a time ahead of use.
const ALLOC_STEP: u64 = 1000;

fn key(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut e = prefix.to_vec();
    *e.last_mut().expect("non-empty") += 1;
    e
}

pub struct StoreRec {
    pub store: Store,
    pub stats: StoreStats,
    pub last_heartbeat: Option<Instant>,
    /// The cluster version the store's build understands, as its last heartbeat to this
    /// leader said (`None`: not heard from yet, or a build that predates versions).
    pub binary_version: Option<ClusterVersion>,
}

#[derive(Clone)]
pub struct RegionRec {
    pub region: Region,
    pub leader: Option<Peer>,
    pub keys: u64,
    pub bytes: u64,
}

impl RegionRec {
    pub fn info(&self) -> RegionInfo {
        RegionInfo {
            region: Some(self.region.clone()),
            leader: self.leader,
            approximate_keys: self.keys,
            approximate_bytes: self.bytes,
        }
    }
}

/// The regions the leader knows, with the per-store counts that leader and replica balance
/// weigh kept up to date as regions change: every leader's heartbeat (one per region and
/// second) asks for them, and recounting every region each time made a heartbeat cost
/// grow with the number of regions, so a second's heartbeats with it squared. Reads go
/// through `Deref` to the map; changes go through the methods, which keep the counts.
#[derive(Default)]
pub struct Regions {
    map: HashMap<u64, RegionRec>,
    /// Regions led, by store (no entry: none).
    leading: HashMap<u64, usize>,
    /// Replicas (voters and learners), by store (no entry: none).
    replicas: HashMap<u64, i64>,
}

impl std::ops::Deref for Regions {
    type Target = HashMap<u64, RegionRec>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Regions {
    /// Adds (`sign` 1) or takes away (-1) what `rec` counts for.
    fn count(&mut self, rec: &RegionRec, sign: i64) {
        if let Some(l) = rec.leader {
            let v = self.leading.entry(l.store_id).or_default();
            if sign > 0 {
                *v += 1;
            } else {
                *v = v.checked_sub(1).expect("a region's leader was counted");
            }
            if *v == 0 {
                self.leading.remove(&l.store_id);
            }
        }
        for p in &rec.region.peers {
            let v = self.replicas.entry(p.store_id).or_default();
            *v += sign;
            assert!(*v >= 0, "store {}: a replica taken away twice", p.store_id);
            if *v == 0 {
                self.replicas.remove(&p.store_id);
            }
        }
    }

    /// Puts `rec` in (replacing the record of its id); returns the one it replaced.
    pub fn insert(&mut self, id: u64, rec: RegionRec) -> Option<RegionRec> {
        let old = self.remove(&id);
        self.count(&rec, 1);
        self.map.insert(id, rec);
        old
    }

    pub fn remove(&mut self, id: &u64) -> Option<RegionRec> {
        let old = self.map.remove(id)?;
        self.count(&old, -1);
        Some(old)
    }

    /// Changes region `id`'s record with `f`, if known, keeping the counts.
    pub fn update<T>(&mut self, id: u64, f: impl FnOnce(&mut RegionRec) -> T) -> Option<T> {
        let mut rec = self.map.remove(&id)?;
        self.count(&rec, -1);
        let out = f(&mut rec);
        self.count(&rec, 1);
        self.map.insert(id, rec);
        Some(out)
    }

    /// How many regions store `store_id`'s peers lead.
    pub fn leading(&self, store_id: u64) -> usize {
        self.leading.get(&store_id).copied().unwrap_or(0)
    }

    /// Replicas per store (stores with none left out).
    pub fn replicas(&self) -> &HashMap<u64, i64> {
        &self.replicas
    }

    /// The counts recomputed from every region (the invariant the methods keep).
    #[cfg(test)]
    fn recount(&self) -> (HashMap<u64, usize>, HashMap<u64, i64>) {
        let mut fresh = Regions::default();
        for (id, rec) in &self.map {
            fresh.insert(*id, rec.clone());
        }
        (fresh.leading, fresh.replicas)
    }
}

/// One step of replica repair (see `MetaData::replica_repair_step`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRepair {
    /// The replica on the down store: a voter to demote, or a learner to remove.
    pub remove: Peer,
    /// The store of the new voter replacing it (only with a voter to demote).
    pub add_on_store: Option<u64>,
}

/// A replica move to start (see `MetaData::replica_move`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaMove {
    /// The voter to move away.
    pub source: Peer,
    /// The store to hold the region's new replica.
    pub target_store: u64,
}

/// What a replica move of a region needs next (see `MetaData::replica_move_plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MovePlan {
    /// Add the learner on the target store.
    AddLearner,
    /// The learner is still taking its snapshot or catching up on the log.
    CatchUp,
    /// The replica to move leads the region: hand its leadership to this voter first
    /// (demoting a leader would end its term, and its in-memory locks with it).
    TransferLeader(Peer),
    /// One joint change: promote the learner, demote the source to a learner.
    Promote,
    /// raft-rs is leaving the joint configuration by itself.
    LeaveJoint,
    /// Remove the demoted source.
    RemoveSource,
    Done,
    GiveUp(&'static str),
}

/// The leader's view of the cluster.
#[derive(Default)]
pub struct MetaData {
    pub stores: HashMap<u64, StoreRec>,
    pub regions: Regions,
    /// Region ids by start key.
    pub by_start: BTreeMap<Vec<u8>, u64>,
    pub alloc_next: u64,
    pub alloc_end: u64,
    pub bootstrap: Option<Region>,
    /// The GC safe point: never moves back, across leaders included (0: none yet).
    pub gc_safe_point: u64,
    /// The cluster's version (`flotilla_types::version`): never moves back, across
    /// leaders included (the base version when none was ever persisted).
    pub cluster_version: ClusterVersion,
    /// The store label keys each region's replicas are spread over, outermost first
    /// (`MetaConfig::location_labels`; configuration, not persisted).
    pub location_labels: Vec<String>,
}

/// How much a store would share its location with a region's other replicas: for each
/// location label, outermost first, how many of them have the same values as it up to
/// that label (same zone; same zone and rack; ...). Compared in that order, less is
/// better spread, so one replica fewer in a zone outweighs any number fewer in a rack.
pub type Sharing = Vec<i64>;

/// What the stores' reports allow GC (see `MetaData::gc_store_bounds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcStoreBounds {
    /// The oldest lock any counted store holds (`u64::MAX`: none); 0 when a counted store
    /// has not reported.
    pub oldest_lock_ts: u64,
    /// The lowest safe point a counted store has installed (`u64::MAX` with no store).
    pub installed: u64,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Engine(format!("corrupt meta record {what}: {e}"))
}

fn newer(a: &RegionEpoch, b: &RegionEpoch) -> bool {
    (a.version, a.conf_ver) > (b.version, b.conf_ver)
}

/// A region's peers are exactly `replication` voters, each on a store `ok` accepts: no
/// move or repair is under way, so another may start.
fn full_voter_set(peers: &[Peer], replication: usize, ok: impl Fn(u64) -> bool) -> bool {
    peers.len() == replication
        && peers
            .iter()
            .all(|p| p.role == PeerRole::Voter as i32 && ok(p.store_id))
}

fn overlaps(a: &Region, b: &Region) -> bool {
    let a_before_b = !a.end_key.is_empty() && a.end_key.as_ref() <= b.start_key.as_ref();
    let b_before_a = !b.end_key.is_empty() && b.end_key.as_ref() <= a.start_key.as_ref();
    !(a_before_b || b_before_a)
}

impl MetaData {
    /// Loads the persisted state.
    pub fn load(engine: &dyn KvEngine) -> Result<Self, StorageError> {
        let mut data = MetaData::default();
        for item in engine.scan(Cf::Meta, STORE_PREFIX, &prefix_end(STORE_PREFIX), false) {
            let (_, v) = item?;
            let store = Store::decode(v.as_slice()).map_err(|e| corrupt("store", e))?;
            data.stores.insert(
                store.id,
                StoreRec {
                    store,
                    stats: StoreStats::default(),
                    last_heartbeat: None,
                    binary_version: None,
                },
            );
        }
        for item in engine.scan(Cf::Meta, REGION_PREFIX, &prefix_end(REGION_PREFIX), false) {
            let (_, v) = item?;
            let region = Region::decode(v.as_slice()).map_err(|e| corrupt("region", e))?;
            data.by_start.insert(region.start_key.to_vec(), region.id);
            data.regions.insert(
                region.id,
                RegionRec {
                    region,
                    leader: None,
                    keys: 0,
                    bytes: 0,
                },
            );
        }
        let end = match engine.get(Cf::Meta, ALLOC_KEY)? {
            Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().expect("checked")),
            Some(_) => return Err(corrupt("alloc", "bad length")),
            None => 1,
        };
        // Ids between the last handed out and the persisted end are skipped: they may have
        // been handed out by the previous leader.
        data.alloc_next = end;
        data.alloc_end = end;
        data.gc_safe_point = match engine.get(Cf::Meta, GC_SAFE_POINT_KEY)? {
            Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().expect("checked")),
            Some(_) => return Err(corrupt("gc safe point", "bad length")),
            None => 0,
        };
        data.cluster_version = match engine.get(Cf::Meta, CLUSTER_VERSION_KEY)? {
            Some(b) if b.len() == 4 => u32::from_be_bytes(b.try_into().expect("checked")),
            Some(_) => return Err(corrupt("cluster version", "bad length")),
            None => CLUSTER_VERSION_BASE,
        };
        if let Some(b) = engine.get(Cf::Meta, BOOTSTRAP_KEY)? {
            data.bootstrap =
                Some(Region::decode(b.as_slice()).map_err(|e| corrupt("bootstrap", e))?);
        }
        Ok(data)
    }

    /// The peers of region `region_id` its leader's log does not yet reach, as its
    /// heartbeat `reported` them; unreported (a store too old to say) is no information,
    /// so every peer counts as pending and no learner is promoted on it.
    pub fn pending_peers(&self, region_id: u64, reported: Option<&[u64]>) -> Vec<u64> {
        match reported {
            Some(ids) => ids.to_vec(),
            None => self
                .regions
                .get(&region_id)
                .map(|r| r.region.peers.iter().map(|p| p.id).collect())
                .unwrap_or_default(),
        }
    }

    /// Allocates `count` ids; `batch` gets the new persisted end when the window moves.
    pub fn alloc(&mut self, count: u64, batch: &mut WriteBatch) -> u64 {
        let first = self.alloc_next;
        self.alloc_next += count;
        if self.alloc_next > self.alloc_end {
            self.alloc_end = self.alloc_next + ALLOC_STEP;
            batch.put(
                Cf::Meta,
                ALLOC_KEY.to_vec(),
                self.alloc_end.to_be_bytes().to_vec(),
            );
        }
        first
    }

    /// Adds the persisted GC safe point `ts` to `batch`. Only the leader's loop that
    /// moves it on writes it, one write at a time, so it never moves back on disk.
    pub fn persist_gc_safe_point(ts: u64, batch: &mut WriteBatch) {
        batch.put(
            Cf::Meta,
            GC_SAFE_POINT_KEY.to_vec(),
            ts.to_be_bytes().to_vec(),
        );
    }

    /// Adds the persisted cluster version `v` to `batch`. Only the leader's loop that
    /// raises it writes it, one write at a time, so it never moves back on disk.
    pub fn persist_cluster_version(v: ClusterVersion, batch: &mut WriteBatch) {
        batch.put(
            Cf::Meta,
            CLUSTER_VERSION_KEY.to_vec(),
            v.to_be_bytes().to_vec(),
        );
    }

    /// Raises the GC safe point handed to stores to `ts`, once persisted (never lowers
    /// it); returns whether it moved.
    pub fn raise_gc_safe_point(&mut self, ts: u64) -> bool {
        let moved = ts > self.gc_safe_point;
        self.gc_safe_point = self.gc_safe_point.max(ts);
        moved
    }

    /// GC's bounds from the stores' reports. The lock bound counts every store that
    /// `holds_locks` (its replicas may hold the only copy of a lock); the installed bound
    /// every store that `may_lead` (it may serve a read now). A counted store this leader
    /// has not heard from holds its bound at 0: what it holds or refuses is unknown.
    pub fn gc_store_bounds(
        &self,
        holds_locks: impl Fn(&StoreRec) -> bool,
        may_lead: impl Fn(&StoreRec) -> bool,
    ) -> GcStoreBounds {
        let mut bounds = GcStoreBounds {
            oldest_lock_ts: u64::MAX,
            installed: u64::MAX,
        };
        for rec in self.stores.values() {
            let report = rec.last_heartbeat.and(rec.stats.gc);
            if holds_locks(rec) {
                let lock = report.map_or(0, |gc| gc.oldest_lock_ts.unwrap_or(u64::MAX));
                bounds.oldest_lock_ts = bounds.oldest_lock_ts.min(lock);
            }
            if may_lead(rec) {
                let installed = report.map_or(0, |gc| gc.safe_point_installed);
                bounds.installed = bounds.installed.min(installed);
            }
        }
        bounds
    }

    pub fn put_store(&mut self, store: Store, batch: &mut WriteBatch) {
        batch.put(Cf::Meta, key(STORE_PREFIX, store.id), store.encode_to_vec());
        let rec = self.stores.entry(store.id).or_insert_with(|| StoreRec {
            store: store.clone(),
            stats: StoreStats::default(),
            last_heartbeat: None,
            binary_version: None,
        });
        rec.store = store;
    }

    /// The first region, laid over the first `replication` stores.
    pub fn plan_bootstrap(&mut self, store_ids: &[u64], batch: &mut WriteBatch) -> Region {
        let region_id = self.alloc(1, batch);
        let peers = store_ids
            .iter()
            .map(|s| Peer {
                id: self.alloc(1, batch),
                store_id: *s,
                role: PeerRole::Voter as i32,
            })
            .collect();
        let region = Region {
            id: region_id,
            start_key: Default::default(),
            end_key: Default::default(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers,
            merging: None,
        };
        batch.put(Cf::Meta, BOOTSTRAP_KEY.to_vec(), region.encode_to_vec());
        self.bootstrap = Some(region.clone());
        self.upsert_region(region.clone(), None, batch);
        region
    }

    /// Learns of `region` (from a heartbeat or a split): kept if it is newer than what is
    /// known of its id and of every region it overlaps; returns whether it was.
    pub fn upsert_region(
        &mut self,
        region: Region,
        leader: Option<Peer>,
        batch: &mut WriteBatch,
    ) -> bool {
        let epoch = region.epoch.unwrap_or_default();
        if let Some(rec) = self.regions.get(&region.id) {
            let known = rec.region.epoch.unwrap_or_default();
            if !newer(&epoch, &known) {
                if rec.region.epoch == region.epoch && leader.is_some() && rec.leader != leader {
                    self.regions.update(region.id, |rec| rec.leader = leader);
                }
                return false;
            }
        }
        // A stale report (older than a region it overlaps) is ignored.
        let overlapping: Vec<u64> = self
            .regions
            .values()
            .filter(|r| r.region.id != region.id && overlaps(&r.region, &region))
            .map(|r| r.region.id)
            .collect();
        for id in &overlapping {
            let other = &self.regions[id].region;
            if other.epoch.unwrap_or_default().version > epoch.version {
                return false;
            }
        }
        for id in overlapping {
            if let Some(old) = self.regions.remove(&id) {
                self.by_start.remove(old.region.start_key.as_ref());
                batch.delete(Cf::Meta, key(REGION_PREFIX, id));
            }
        }
        if let Some(old) = self.regions.remove(&region.id) {
            self.by_start.remove(old.region.start_key.as_ref());
        }
        batch.put(
            Cf::Meta,
            key(REGION_PREFIX, region.id),
            region.encode_to_vec(),
        );
        self.by_start.insert(region.start_key.to_vec(), region.id);
        self.regions.insert(
            region.id,
            RegionRec {
                region,
                leader,
                keys: 0,
                bytes: 0,
            },
        );
        true
    }

    /// The region holding encoded key `key`.
    /// Leader balance: the voter of `region_id` that should lead it instead, on the live
    /// store leading the fewest regions, if that store leads at least two fewer than the
    /// current leader's store (one fewer would only move the imbalance).
    pub fn leader_transfer_target(
        &self,
        region_id: u64,
        live: impl Fn(u64) -> bool,
    ) -> Option<Peer> {
        let rec = self.regions.get(&region_id)?;
        let leader = rec.leader?;
        let count = |store_id: u64| self.regions.leading(store_id);
        rec.region
            .peers
            .iter()
            .filter(|p| {
                p.store_id != leader.store_id
                    && p.role == PeerRole::Voter as i32
                    && live(p.store_id)
            })
            .min_by_key(|p| (count(p.store_id), p.store_id))
            .filter(|p| count(p.store_id) + 2 <= count(leader.store_id))
            .copied()
    }

    /// Store `store_id`'s value of label `key` ("" when it has none: stores without a
    /// label count as one location for it).
    fn label(&self, store_id: u64, key: &str) -> &str {
        self.stores
            .get(&store_id)
            .and_then(|r| r.store.labels.iter().find(|l| l.key == key))
            .map_or("", |l| l.value.as_str())
    }

    /// How much store `store_id` shares its location with the stores `others` (itself
    /// left out); empty without location labels, so every store is then equally good.
    pub fn sharing(&self, store_id: u64, others: impl IntoIterator<Item = u64>) -> Sharing {
        let mut sharing = vec![0; self.location_labels.len()];
        for other in others.into_iter().filter(|o| *o != store_id) {
            for (level, key) in self.location_labels.iter().enumerate() {
                if self.label(store_id, key) != self.label(other, key) {
                    break;
                }
                sharing[level] += 1;
            }
        }
        sharing
    }

    /// `n` of the `candidates` stores, spread over the location labels as far as they
    /// allow, lower ids first (the first region's stores).
    pub fn spread_pick(&self, candidates: &[u64], n: usize) -> Vec<u64> {
        let mut chosen: Vec<u64> = Vec::with_capacity(n);
        while chosen.len() < n {
            let Some(next) = candidates
                .iter()
                .copied()
                .filter(|s| !chosen.contains(s))
                .min_by_key(|s| (self.sharing(*s, chosen.iter().copied()), *s))
            else {
                break;
            };
            chosen.push(next);
        }
        chosen
    }

    /// The stores of `peers` other than `except`'s.
    fn other_stores(peers: &[Peer], except: u64) -> impl Iterator<Item = u64> + '_ {
        peers
            .iter()
            .map(|p| p.store_id)
            .filter(move |s| *s != except)
    }

    /// Replica placement: the move that best spreads `region_id`'s replicas over the
    /// location labels, if one spreads them better, or `None` (also without location
    /// labels). Each replica is weighed against the `placeable` stores without one of the
    /// region and receiving no other move (`moving`), by how much it and they share
    /// their location with the region's other replicas; the pair that lowers it most
    /// wins (then: not the leader's replica, which must hand its leadership over first,
    /// the fuller source, the emptier target, the lower ids). Every such move lowers the
    /// region's total sharing, so placement never moves a replica back. The region must
    /// be healthy: `replication` voters, no learner, every replica on a placeable store.
    pub fn placement_move(
        &self,
        region_id: u64,
        replication: usize,
        placeable: impl Fn(u64) -> bool,
        moving: &[(u64, u64)],
    ) -> Option<ReplicaMove> {
        if self.location_labels.is_empty() {
            return None;
        }
        let rec = self.regions.get(&region_id)?;
        let peers = &rec.region.peers;
        if !full_voter_set(peers, replication, &placeable) {
            return None;
        }
        let replicas = self.replica_counts(moving);
        let count = |store_id: u64| replicas.get(&store_id).copied().unwrap_or(0);
        let targets: Vec<u64> = self
            .stores
            .keys()
            .copied()
            .filter(|s| {
                placeable(*s)
                    && peers.iter().all(|p| p.store_id != *s)
                    && moving.iter().all(|(_, t)| t != s)
            })
            .collect();
        type Rank = (Sharing, bool, i64, i64, u64, u64);
        let mut best: Option<(Rank, Peer)> = None;
        for source in peers {
            let now = self.sharing(source.store_id, Self::other_stores(peers, source.store_id));
            for target in &targets {
                let then = self.sharing(*target, Self::other_stores(peers, source.store_id));
                if then >= now {
                    continue;
                }
                let change: Sharing = then.iter().zip(&now).map(|(t, n)| t - n).collect();
                let is_leader = rec.leader.is_some_and(|l| l.id == source.id);
                let rank = (
                    change,
                    is_leader,
                    -count(source.store_id),
                    count(*target),
                    source.store_id,
                    *target,
                );
                if best.as_ref().is_none_or(|(b, _)| rank < *b) {
                    best = Some((rank, *source));
                }
            }
        }
        best.map(|((.., target_store), source)| ReplicaMove {
            source,
            target_store,
        })
    }

    /// Replica repair: the next membership change for a region with a replica on a store
    /// that is `down`, or `None`. A learner on a down store (what a repair's first step
    /// leaves), or any learner once the region has `replication` voters (its store came
    /// back between the two steps), is removed. A voter on a down store is replaced, in one joint change, by a
    /// new voter on the `live` store holding the fewest replicas among those without one
    /// of this region, while the down voter becomes a learner: the joint quorums need only the region's live voters, so the
    /// change commits while the down store stays down. A region in a joint configuration
    /// is left alone until raft-rs leaves it.
    pub fn replica_repair_step(
        &self,
        region_id: u64,
        replication: usize,
        down: impl Fn(u64) -> bool,
        live: impl Fn(u64) -> bool,
    ) -> Option<ReplicaRepair> {
        let rec = self.regions.get(&region_id)?;
        let peers = &rec.region.peers;
        let joint = peers.iter().any(|p| {
            p.role == PeerRole::IncomingVoter as i32 || p.role == PeerRole::DemotingVoter as i32
        });
        if joint {
            return None;
        }
        let voters = peers
            .iter()
            .filter(|p| p.role == PeerRole::Voter as i32)
            .count();
        if let Some(learner) = peers.iter().find(|p| {
            p.role == PeerRole::Learner as i32 && (down(p.store_id) || voters >= replication)
        }) {
            return Some(ReplicaRepair {
                remove: *learner,
                add_on_store: None,
            });
        }
        let lost = peers
            .iter()
            .find(|p| p.role == PeerRole::Voter as i32 && down(p.store_id))?;
        let mut replicas: HashMap<u64, usize> = HashMap::new();
        for r in self.regions.values() {
            for p in &r.region.peers {
                *replicas.entry(p.store_id).or_default() += 1;
            }
        }
        // Best spread over the location labels first, then the emptiest.
        let target = self
            .stores
            .keys()
            .copied()
            .filter(|s| live(*s) && !down(*s) && peers.iter().all(|p| p.store_id != *s))
            .min_by_key(|s| {
                (
                    self.sharing(*s, Self::other_stores(peers, lost.store_id)),
                    replicas.get(s).copied().unwrap_or(0),
                    *s,
                )
            })?;
        Some(ReplicaRepair {
            remove: *lost,
            add_on_store: Some(target),
        })
    }

    /// The state an operator gave store `store_id` (`Up` unless it is being removed or
    /// was removed; unknown stores are `Up`).
    pub fn store_state(&self, store_id: u64) -> StoreState {
        self.stores
            .get(&store_id)
            .map_or(StoreState::Up, |r| r.store.state())
    }

    /// Store removal: the move of `region_id`'s replica on an `Offline` store, if it has
    /// one, to the store holding the fewest replicas among the `placeable` ones without one
    /// of the region and receiving no other move (`moving`: source and target of each).
    /// The region must have `replication` voters and no learner; the replica may be its
    /// leader's (the move hands the leadership over first) or on a store that is down (a
    /// dead store is removed this way without waiting for repair).
    pub fn drain_move(
        &self,
        region_id: u64,
        replication: usize,
        placeable: impl Fn(u64) -> bool,
        moving: &[(u64, u64)],
    ) -> Option<ReplicaMove> {
        let rec = self.regions.get(&region_id)?;
        let peers = &rec.region.peers;
        if !full_voter_set(peers, replication, |_| true) {
            return None;
        }
        let source = peers
            .iter()
            .find(|p| self.store_state(p.store_id) == StoreState::Offline)?;
        let replicas = self.replica_counts(moving);
        let target = self
            .stores
            .keys()
            .copied()
            .filter(|s| {
                placeable(*s)
                    && peers.iter().all(|p| p.store_id != *s)
                    && moving.iter().all(|(_, t)| t != s)
            })
            // Best spread over the location labels first, then the emptiest.
            .min_by_key(|s| {
                (
                    self.sharing(*s, Self::other_stores(peers, source.store_id)),
                    replicas.get(s).copied().unwrap_or(0),
                    *s,
                )
            })?;
        Some(ReplicaMove {
            source: *source,
            target_store: target,
        })
    }

    /// Replicas per store over every region, with the moves in progress (`moving`: source
    /// and target store of each) counted as done.
    fn replica_counts(&self, moving: &[(u64, u64)]) -> HashMap<u64, i64> {
        let mut replicas = self.regions.replicas().clone();
        for (source, target) in moving {
            *replicas.entry(*source).or_default() -= 1;
            *replicas.entry(*target).or_default() += 1;
        }
        replicas
    }

    /// `Offline` stores no region has a replica on any more, to be marked `Tombstone`.
    pub fn drained_stores(&self) -> Vec<u64> {
        let mut drained: Vec<u64> = self
            .stores
            .values()
            .filter(|r| r.store.state() == StoreState::Offline)
            .map(|r| r.store.id)
            .filter(|id| !self.regions.replicas().contains_key(id))
            .collect();
        drained.sort_unstable();
        drained
    }

    /// The configuration version of `region_id` as its leader last reported it.
    pub fn conf_ver(&self, region_id: u64) -> Option<u64> {
        self.regions
            .get(&region_id)
            .and_then(|r| r.region.epoch)
            .map(|e| e.conf_ver)
    }

    /// Replica balance: the move to start for `region_id`, or `None`. Counts replicas per
    /// store over every region, with the moves in progress (`moving`: source and target
    /// store of each) counted as done. The region must be healthy: `replication` voters,
    /// no learner, not joint, every replica on a `live` store. Its replica on a live store
    /// holding the most replicas of all (never the leader's: a leader is moved by leader
    /// balance, not demoted) moves to a live store holding the fewest of all, without one
    /// of the region and receiving no other move, if that store holds at least two fewer
    /// (one fewer would only move the imbalance). A region that offers no such pair waits:
    /// another one will. A move never spreads the region worse over the location labels
    /// (see `placement_move`).
    pub fn replica_move(
        &self,
        region_id: u64,
        replication: usize,
        live: impl Fn(u64) -> bool,
        moving: &[(u64, u64)],
    ) -> Option<ReplicaMove> {
        let rec = self.regions.get(&region_id)?;
        let leader = rec.leader?;
        let peers = &rec.region.peers;
        if !full_voter_set(peers, replication, &live) {
            return None;
        }
        let replicas = self.replica_counts(moving);
        let count = |store_id: u64| replicas.get(&store_id).copied().unwrap_or(0);
        // Only from a store holding the most to one holding the fewest, cluster-wide: a
        // move chosen within this region alone (its fullest follower, its emptiest
        // missing store) would also shuffle replicas among stores already within one of
        // each other while the emptiest store is busy receiving.
        let live_counts = || self.stores.keys().copied().filter(|s| live(*s)).map(count);
        let (most, fewest) = (live_counts().max()?, live_counts().min()?);
        let mut sources: Vec<&Peer> = peers
            .iter()
            .filter(|p| p.store_id != leader.store_id)
            .collect();
        sources.sort_by_key(|p| (-count(p.store_id), p.store_id));
        // Balance never spreads a region worse over the location labels: its target
        // shares no more with the other replicas than its source did.
        let spread_kept = |source: &Peer, target: u64| {
            self.sharing(target, Self::other_stores(peers, source.store_id))
                <= self.sharing(source.store_id, Self::other_stores(peers, source.store_id))
        };
        let eligible = |source: &Peer, s: u64| {
            live(s) && peers.iter().all(|p| p.store_id != s) && spread_kept(source, s)
        };
        for source in sources.iter().filter(|p| count(p.store_id) == most) {
            let target = self
                .stores
                .keys()
                .copied()
                .filter(|s| {
                    count(*s) == fewest
                        && eligible(source, *s)
                        && moving.iter().all(|(_, t)| t != s)
                })
                .min();
            if let Some(target) = target
                && count(target) + 2 <= count(source.store_id)
            {
                return Some(ReplicaMove {
                    source: **source,
                    target_store: target,
                });
            }
        }
        // With location labels, the fullest store may be one no other can relieve (the
        // only store of its zone holds every region): then the region's fullest replica
        // that can go moves to the emptiest store it may go to, two fewer at least. Only
        // while no other move is under way, so replicas are not shuffled among the full
        // stores while the emptiest one is busy receiving.
        if self.location_labels.is_empty() || !moving.is_empty() {
            return None;
        }
        sources.into_iter().find_map(|source| {
            let target = self
                .stores
                .keys()
                .copied()
                .filter(|s| eligible(source, *s))
                .min_by_key(|s| (count(*s), *s))?;
            (count(target) + 2 <= count(source.store_id)).then_some(ReplicaMove {
                source: *source,
                target_store: target,
            })
        })
    }

    /// The next step of moving `source`'s replica of `region_id` to `learner` (a new peer
    /// on the target store), from the region's membership as its leader last reported
    /// it, the peers that leader's log does not yet reach (`pending`), and which stores
    /// are `live`. The learner is promoted only once it is not pending, so the region
    /// never counts a replica without its data in a quorum.
    pub fn replica_move_plan(
        &self,
        region_id: u64,
        source: Peer,
        learner: Peer,
        pending: &[u64],
        live: impl Fn(u64) -> bool,
    ) -> MovePlan {
        let Some(rec) = self.regions.get(&region_id) else {
            return MovePlan::GiveUp("the region is gone");
        };
        let peers = &rec.region.peers;
        let role_of = |id: u64| peers.iter().find(|p| p.id == id).map(|p| p.role());
        match (role_of(source.id), role_of(learner.id)) {
            (Some(PeerRole::Voter), None | Some(PeerRole::Learner)) if !live(learner.store_id) => {
                MovePlan::GiveUp("the target store is down or being removed")
            }
            (Some(PeerRole::Voter), None) => MovePlan::AddLearner,
            (Some(PeerRole::Voter), Some(PeerRole::Learner)) => {
                if pending.contains(&learner.id) {
                    return MovePlan::CatchUp;
                }
                if rec.leader.is_some_and(|l| l.id == source.id) {
                    return match peers.iter().find(|p| {
                        p.id != source.id && p.role() == PeerRole::Voter && live(p.store_id)
                    }) {
                        Some(to) => MovePlan::TransferLeader(*to),
                        None => MovePlan::GiveUp("no other live voter to lead the region"),
                    };
                }
                MovePlan::Promote
            }
            (Some(PeerRole::DemotingVoter), Some(PeerRole::IncomingVoter)) => MovePlan::LeaveJoint,
            (Some(PeerRole::Learner), Some(PeerRole::Voter)) => MovePlan::RemoveSource,
            (None, Some(PeerRole::Voter)) => MovePlan::Done,
            _ => MovePlan::GiveUp("the region's membership changed otherwise"),
        }
    }

    pub fn region_of(&self, key: &[u8]) -> Option<&RegionRec> {
        let (_, id) = self.by_start.range(..=key.to_vec()).next_back()?;
        let rec = self.regions.get(id)?;
        flotilla_raftstore::region_contains(&rec.region, key).then_some(rec)
    }
}

/// One node's part in the cluster version (see [`next_cluster_version`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersion {
    /// Who: "store 3", "meta member 2", "SQL node 5a1f...".
    pub node: String,
    /// Whether this leader has heard from it.
    pub heard: bool,
    /// The version its build reported (`None`: a build that predates versions).
    pub reported: Option<ClusterVersion>,
}

impl NodeVersion {
    /// The version it counts as: the base one until heard from with a report. Absent
    /// means no information, and no information never lets the cluster version rise.
    pub fn counts_as(&self) -> ClusterVersion {
        if self.heard {
            flotilla_types::version::reported(self.reported)
        } else {
            CLUSTER_VERSION_BASE
        }
    }

    fn describe(&self) -> String {
        if self.heard {
            format!("{} (version {})", self.node, self.counts_as())
        } else {
            format!("{} (not heard from yet)", self.node)
        }
    }
}

/// The cluster version to move to from `current` when the meta leader's build
/// understands up to `newest` and `nodes` are every node that counts: the oldest of
/// them, never below `current` (a cluster never goes back), never above `newest`. Also
/// the nodes that hold it below `newest`, for operators.
pub fn next_cluster_version(
    current: ClusterVersion,
    newest: ClusterVersion,
    nodes: &[NodeVersion],
) -> (ClusterVersion, Vec<String>) {
    let floor = nodes
        .iter()
        .map(NodeVersion::counts_as)
        .min()
        .unwrap_or(newest)
        .min(newest);
    let held_by = nodes
        .iter()
        .filter(|n| n.counts_as() < newest)
        .map(NodeVersion::describe)
        .collect();
    (current.max(floor), held_by)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, stores: &[u64], leader_store: u64) -> RegionRec {
        let peers: Vec<Peer> = stores
            .iter()
            .map(|s| Peer {
                id: id * 10 + s,
                store_id: *s,
                role: PeerRole::Voter as i32,
            })
            .collect();
        let leader = peers.iter().find(|p| p.store_id == leader_store).copied();
        RegionRec {
            region: Region {
                id,
                peers,
                ..Default::default()
            },
            leader,
            keys: 0,
            bytes: 0,
        }
    }

    /// The per-store counts are kept as regions change (not recounted per heartbeat), so
    /// they must follow every kind of change: heartbeats moving the leader, splits
    /// replacing overlapping regions, membership changes, size reports.
    #[test]
    fn the_per_store_counts_follow_every_change_of_a_region() {
        let mut data = MetaData::default();
        let mut batch = WriteBatch::new();
        // A fixed linear congruential sequence: the same changes every run.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % n
        };
        let bounds = |i: u64| format!("k{i:04}").into_bytes();
        for step in 0..2_000u64 {
            let id = 1 + next(40);
            let stores: Vec<u64> = {
                let mut s = vec![1 + next(6)];
                while s.len() < 3 {
                    let c = 1 + next(6);
                    if !s.contains(&c) {
                        s.push(c);
                    }
                }
                s
            };
            let leader_store = stores[next(3) as usize];
            match next(4) {
                // A newer report of the region, possibly over others' ranges (a split or
                // a stale neighbour replaced).
                0 => {
                    let start = next(40);
                    let mut rec = region(id, &stores, leader_store);
                    rec.region.start_key = bounds(start).into();
                    rec.region.end_key = bounds(start + 1 + next(3)).into();
                    rec.region.epoch = Some(RegionEpoch {
                        conf_ver: 1,
                        version: step + 1,
                    });
                    data.upsert_region(rec.region, rec.leader, &mut batch);
                }
                // A heartbeat of the same epoch naming another leader.
                1 => {
                    if let Some(known) = data.regions.get(&id).map(|r| r.region.clone())
                        && !known.peers.is_empty()
                    {
                        let leader = known.peers[next(known.peers.len() as u64) as usize];
                        data.upsert_region(known, Some(leader), &mut batch);
                    }
                }
                // A membership change.
                2 => {
                    data.regions.update(id, |rec| {
                        if rec.region.peers.len() > 1 {
                            rec.region.peers.pop();
                        }
                        rec.leader = rec.region.peers.first().copied();
                    });
                }
                _ => {
                    data.regions.update(id, |rec| rec.keys += 1);
                }
            }
            let (leading, replicas) = data.regions.recount();
            assert_eq!(data.regions.leading, leading, "leaders after step {step}");
            assert_eq!(
                data.regions.replicas, replicas,
                "replicas after step {step}"
            );
        }
        assert!(
            data.regions.len() > 5,
            "the sequence exercised several regions"
        );
    }

    #[test]
    fn leaders_move_from_the_busiest_store_to_the_idlest_live_one_and_only_past_one() {
        let mut data = MetaData::default();
        // Store 1 leads 4 regions, store 2 leads 1, store 3 none.
        for (id, leader) in [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2)] {
            data.regions.insert(id, region(id, &[1, 2, 3], leader));
        }
        let all_live = |_: u64| true;
        let to = data
            .leader_transfer_target(1, all_live)
            .expect("unbalanced");
        assert_eq!(to.store_id, 3, "the store leading the fewest regions");
        // A dead store is never chosen.
        let to = data
            .leader_transfer_target(1, |s| s != 3)
            .expect("unbalanced");
        assert_eq!(to.store_id, 2);
        // Store 2's region stays: store 2 does not lead two more than anyone.
        assert!(data.leader_transfer_target(5, all_live).is_none());
        // Balanced within one: nothing moves.
        let mut data = MetaData::default();
        for (id, leader) in [(1, 1), (2, 1), (3, 2), (4, 3)] {
            data.regions.insert(id, region(id, &[1, 2, 3], leader));
        }
        assert!(data.leader_transfer_target(1, all_live).is_none());
    }

    fn insert_store(data: &mut MetaData, store: Store) {
        data.stores.insert(
            store.id,
            StoreRec {
                store,
                stats: StoreStats::default(),
                last_heartbeat: None,
                binary_version: None,
            },
        );
    }

    fn with_stores(data: &mut MetaData, ids: &[u64]) {
        for id in ids {
            let store = Store {
                id: *id,
                ..Default::default()
            };
            insert_store(data, store);
        }
    }

    #[test]
    fn a_replica_on_a_down_store_moves_to_the_live_store_with_the_fewest() {
        let mut data = MetaData::default();
        with_stores(&mut data, &[1, 2, 3, 4, 5]);
        data.regions.insert(1, region(1, &[1, 2, 3], 1));
        data.regions.insert(2, region(2, &[1, 2, 4], 1));
        let down = |s: u64| s == 3;
        let live = |s: u64| s != 3;
        // Region 1 lost store 3: store 5 holds fewer replicas than store 4.
        let step = data.replica_repair_step(1, 3, down, live).expect("repair");
        assert_eq!(step.remove.store_id, 3);
        assert_eq!(step.add_on_store, Some(5));
        // No replica on a down store: nothing to do.
        assert!(data.replica_repair_step(2, 3, down, live).is_none());
        // Store 5 not live: the only live store without a replica, 4.
        let step = data
            .replica_repair_step(1, 3, down, |s| s <= 4 && s != 3)
            .expect("repair");
        assert_eq!(step.add_on_store, Some(4));
        // No live store without a replica of the region: nothing to do.
        assert!(data.replica_repair_step(1, 3, down, |s| s <= 2).is_none());
        // In a joint configuration: wait for raft-rs to leave it.
        data.regions.update(1, |rec| {
            rec.region.peers[2].role = PeerRole::DemotingVoter as i32;
            rec.region.peers.push(Peer {
                id: 99,
                store_id: 5,
                role: PeerRole::IncomingVoter as i32,
            });
        });
        assert!(data.replica_repair_step(1, 3, down, live).is_none());
        // Out of it, the demoted replica is a learner on the down store: remove it.
        data.regions.update(1, |rec| {
            rec.region.peers[2].role = PeerRole::Learner as i32;
            rec.region.peers[3].role = PeerRole::Voter as i32;
        });
        let step = data
            .replica_repair_step(1, 3, down, live)
            .expect("remove the learner");
        assert_eq!((step.remove.store_id, step.add_on_store), (3, None));
        // Its store came back meanwhile: the region has its three voters, so the learner
        // still goes.
        let step = data
            .replica_repair_step(1, 3, |_| false, |_| true)
            .expect("remove the learner");
        assert_eq!((step.remove.store_id, step.add_on_store), (3, None));
        // With too few voters, a learner on a live store stays (nothing to do).
        assert!(
            data.replica_repair_step(1, 4, |_| false, |_| true)
                .is_none()
        );
    }

    #[test]
    fn replicas_move_from_the_fullest_follower_store_to_the_emptiest_and_only_past_one() {
        let mut data = MetaData::default();
        with_stores(&mut data, &[1, 2, 3, 4]);
        // Four regions on stores 1-3 (4 replicas each), store 4 empty; store 1 leads all.
        for id in 1..=4 {
            data.regions.insert(id, region(id, &[1, 2, 3], 1));
        }
        let all_live = |_: u64| true;
        let mv = data.replica_move(1, 3, all_live, &[]).expect("unbalanced");
        // Stores 2 and 3 tie: the lower id moves; the leader's store never does.
        assert_eq!((mv.source.store_id, mv.target_store), (2, 4));
        // A move in progress counts as done, and its target takes no second one: with
        // 2 -> 4 under way, the next would go to no store (4 is busy, 1-3 hold the region).
        assert!(data.replica_move(2, 3, all_live, &[(2, 4)]).is_none());
        // A dead target is never chosen; a region with a replica on a dead store waits
        // for repair.
        assert!(data.replica_move(1, 3, |s| s != 4, &[]).is_none());
        assert!(data.replica_move(1, 3, |s| s != 3, &[]).is_none());
        // Not healthy: a learner, or fewer voters than the replication.
        data.regions.update(1, |rec| {
            rec.region.peers[2].role = PeerRole::Learner as i32;
        });
        assert!(data.replica_move(1, 3, all_live, &[]).is_none());
        assert!(data.replica_move(2, 4, all_live, &[]).is_none());
        // Balanced within one (3, 3, 3, 3 over four regions): nothing moves.
        let mut data = MetaData::default();
        with_stores(&mut data, &[1, 2, 3, 4]);
        for (id, stores) in [
            (1, [1, 2, 3]),
            (2, [1, 2, 4]),
            (3, [1, 3, 4]),
            (4, [2, 3, 4]),
        ] {
            data.regions.insert(id, region(id, &stores, stores[0]));
        }
        for id in 1..=4 {
            assert!(data.replica_move(id, 3, all_live, &[]).is_none());
        }
        // One fewer is not enough: store 4 holds 3, stores 1 and 2 hold 4.
        data.regions.insert(5, region(5, &[1, 2, 3], 3));
        assert!(data.replica_move(5, 3, all_live, &[]).is_none());
        // Only from the fullest store to the emptiest, cluster-wide. Replicas 5, 5, 3, 2:
        // region 5's own fullest follower (store 1, 5) holds two more than the store it
        // misses (3), but store 3 is not the emptiest, so that move would only shuffle
        // replicas among the full stores; region 1's goes to store 4.
        let mut data = MetaData::default();
        with_stores(&mut data, &[1, 2, 3, 4]);
        for (id, stores, leader) in [
            (1, [1, 2, 3], 1),
            (2, [1, 2, 3], 1),
            (3, [1, 2, 3], 1),
            (4, [1, 2, 4], 2),
            (5, [1, 2, 4], 2),
        ] {
            data.regions.insert(id, region(id, &stores, leader));
        }
        assert!(data.replica_move(5, 3, all_live, &[]).is_none());
        let mv = data.replica_move(1, 3, all_live, &[]).expect("unbalanced");
        assert_eq!((mv.source.store_id, mv.target_store), (2, 4));
    }

    #[test]
    fn a_replica_move_promotes_its_learner_only_once_caught_up_and_never_demotes_a_leader() {
        let mut data = MetaData::default();
        with_stores(&mut data, &[1, 2, 3, 4]);
        data.regions.insert(1, region(1, &[1, 2, 3], 1));
        let source = data.regions[&1].region.peers[1]; // store 2, a follower
        let learner = Peer {
            id: 14,
            store_id: 4,
            role: PeerRole::Learner as i32,
        };
        let all_live = |_: u64| true;
        let plan = |data: &MetaData, pending: &[u64], live: &dyn Fn(u64) -> bool| {
            data.replica_move_plan(1, source, learner, pending, live)
        };
        assert_eq!(plan(&data, &[], &all_live), MovePlan::AddLearner);
        assert!(matches!(plan(&data, &[], &|s| s != 4), MovePlan::GiveUp(_)));
        let set_roles = |data: &mut MetaData, roles: &[(u64, PeerRole)]| {
            data.regions.update(1, |rec| {
                let peers = &mut rec.region.peers;
                for (id, role) in roles {
                    match peers.iter_mut().find(|p| p.id == *id) {
                        Some(p) => p.role = *role as i32,
                        None => peers.push(Peer {
                            role: *role as i32,
                            ..learner
                        }),
                    }
                }
            });
        };
        set_roles(&mut data, &[(learner.id, PeerRole::Learner)]);
        // Taking its snapshot: wait, however long (the move's own timeout bounds it).
        assert_eq!(plan(&data, &[learner.id], &all_live), MovePlan::CatchUp);
        // A heartbeat that does not say which peers are pending (a store too old to)
        // promotes nothing: absent is no information, not "none pending".
        let unreported = data.pending_peers(1, None);
        assert_eq!(plan(&data, &unreported, &all_live), MovePlan::CatchUp);
        assert_eq!(data.pending_peers(1, Some(&[])), Vec::<u64>::new());
        assert_eq!(plan(&data, &[], &all_live), MovePlan::Promote);
        // Had the source become the leader meanwhile: hand the leadership over first.
        data.regions.update(1, |rec| rec.leader = Some(source));
        assert_eq!(
            plan(&data, &[], &all_live),
            MovePlan::TransferLeader(data.regions[&1].region.peers[0])
        );
        data.regions
            .update(1, |rec| rec.leader = Some(rec.region.peers[0]));
        set_roles(
            &mut data,
            &[
                (source.id, PeerRole::DemotingVoter),
                (learner.id, PeerRole::IncomingVoter),
            ],
        );
        assert_eq!(plan(&data, &[], &all_live), MovePlan::LeaveJoint);
        set_roles(
            &mut data,
            &[
                (source.id, PeerRole::Learner),
                (learner.id, PeerRole::Voter),
            ],
        );
        assert_eq!(plan(&data, &[], &all_live), MovePlan::RemoveSource);
        data.regions
            .update(1, |rec| rec.region.peers.retain(|p| p.id != source.id));
        assert_eq!(plan(&data, &[], &all_live), MovePlan::Done);
        // Someone else removed the learner before it was promoted: give up.
        let mut data = MetaData::default();
        data.regions.insert(1, region(1, &[1, 3], 1));
        assert!(matches!(plan(&data, &[], &all_live), MovePlan::GiveUp(_)));
    }

    #[test]
    fn a_removed_store_is_drained_to_the_emptiest_placeable_store_then_marked_drained() {
        let mut data = MetaData::default();
        with_stores(&mut data, &[1, 2, 3, 4, 5]);
        data.regions.insert(1, region(1, &[1, 2, 3], 1));
        data.regions.insert(2, region(2, &[1, 2, 4], 1));
        data.regions.insert(3, region(3, &[2, 3, 4], 2));
        let all = |_: u64| true;
        // No store being removed: nothing to drain, nothing drained.
        assert!(data.drain_move(1, 3, all, &[]).is_none());
        assert!(data.drained_stores().is_empty());
        data.stores
            .get_mut(&1)
            .unwrap()
            .store
            .set_state(StoreState::Offline);
        // Store 1 leads region 1: its replica moves all the same (the leadership is
        // handed over first), to the emptiest store without one: 5 (none) before 4 (2).
        let mv = data.drain_move(1, 3, all, &[]).expect("drain");
        assert_eq!((mv.source.store_id, mv.target_store), (1, 5));
        // Store 5 busy receiving: region 2 goes to store 3, the only other choice.
        let mv = data.drain_move(2, 3, all, &[(1, 5)]).expect("drain");
        assert_eq!((mv.source.store_id, mv.target_store), (1, 3));
        // Nowhere placeable (a store down or being removed is not): wait.
        assert!(data.drain_move(2, 3, |s| s == 1 || s == 2, &[]).is_none());
        // A region without a replica there, or not steady, is not drained.
        assert!(data.drain_move(3, 3, all, &[]).is_none());
        data.regions
            .update(2, |rec| rec.region.peers[2].role = PeerRole::Learner as i32);
        assert!(data.drain_move(2, 3, all, &[]).is_none());
        // Drained once no region has a replica there, learners included.
        assert!(data.drained_stores().is_empty());
        for id in [1, 2] {
            data.regions
                .update(id, |rec| rec.region.peers.retain(|p| p.store_id != 1));
        }
        assert_eq!(data.drained_stores(), vec![1]);
        // Once marked removed it is listed no more.
        data.stores
            .get_mut(&1)
            .unwrap()
            .store
            .set_state(StoreState::Tombstone);
        assert!(data.drained_stores().is_empty());
    }

    /// Stores `(id, [(key, value)...])`, and `keys` as the location labels.
    fn with_labels(data: &mut MetaData, keys: &[&str], stores: &[(u64, &[(&str, &str)])]) {
        data.location_labels = keys.iter().map(|k| k.to_string()).collect();
        for (id, labels) in stores {
            let labels = labels
                .iter()
                .map(|(k, v)| flotilla_proto::metapb::StoreLabel {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect();
            let store = Store {
                id: *id,
                labels,
                ..Default::default()
            };
            insert_store(data, store);
        }
    }

    #[test]
    fn replicas_spread_over_the_zones_as_far_as_the_stores_allow() {
        let mut data = MetaData::default();
        let zone = |z| [("zone", z)];
        let (a, b, c) = (zone("a"), zone("b"), zone("c"));
        with_labels(
            &mut data,
            &["zone"],
            &[(1, &a), (2, &a), (3, &b), (4, &c), (5, &c)],
        );
        // Two of region 1's replicas share zone a: the follower's goes to zone c (the
        // leader's would have to hand its leadership over first), to the lower id of the
        // two equally empty stores there.
        data.regions.insert(1, region(1, &[1, 2, 3], 1));
        let all = |_: u64| true;
        let mv = data.placement_move(1, 3, all, &[]).expect("badly spread");
        assert_eq!((mv.source.store_id, mv.target_store), (2, 4));
        // Store 4 busy receiving: store 5, in zone c too.
        let mv = data
            .placement_move(1, 3, all, &[(9, 4)])
            .expect("badly spread");
        assert_eq!((mv.source.store_id, mv.target_store), (2, 5));
        // Zone c down: nowhere better to go.
        assert!(data.placement_move(1, 3, |s| s < 4, &[]).is_none());
        // One replica per zone: nothing to do.
        data.regions.insert(2, region(2, &[1, 3, 4], 1));
        assert!(data.placement_move(2, 3, all, &[]).is_none());
        // Not healthy (a learner): left to repair.
        data.regions
            .update(1, |rec| rec.region.peers[1].role = PeerRole::Learner as i32);
        assert!(data.placement_move(1, 3, all, &[]).is_none());
        // Without location labels every store is a location of its own.
        data.location_labels.clear();
        data.regions.insert(1, region(1, &[1, 2, 3], 1));
        assert!(data.placement_move(1, 3, all, &[]).is_none());

        // Two levels: a zone first, then a host within it. Zone b has one store, so two
        // replicas stay in zone a, but on different hosts.
        let mut data = MetaData::default();
        with_labels(
            &mut data,
            &["zone", "host"],
            &[
                (1, &[("zone", "a"), ("host", "h1")]),
                (2, &[("zone", "a"), ("host", "h1")]),
                (3, &[("zone", "a"), ("host", "h2")]),
                (4, &[("zone", "b"), ("host", "h3")]),
            ],
        );
        data.regions.insert(1, region(1, &[1, 2, 4], 4));
        let mv = data.placement_move(1, 3, all, &[]).expect("two on host h1");
        assert_eq!((mv.source.store_id, mv.target_store), (1, 3));
        data.regions.insert(2, region(2, &[1, 3, 4], 4));
        assert!(data.placement_move(2, 3, all, &[]).is_none());
        // A store without the label counts as one location with the others without it.
        assert_eq!(data.sharing(9, [8, 1]), vec![1, 1]);
        // The first region's stores: one per zone before a second in any.
        assert_eq!(data.spread_pick(&[1, 2, 3, 4], 3), vec![1, 4, 3]);
        assert_eq!(data.spread_pick(&[1, 2, 3], 3), vec![1, 3, 2]);
    }

    #[test]
    fn repair_and_removal_choose_the_best_spread_target_before_the_emptiest() {
        let mut data = MetaData::default();
        let zone = |z| [("zone", z)];
        let (a, b, c) = (zone("a"), zone("b"), zone("c"));
        with_labels(
            &mut data,
            &["zone"],
            &[(1, &a), (2, &a), (3, &b), (4, &c), (5, &c), (6, &a)],
        );
        data.regions.insert(1, region(1, &[1, 3, 4], 1));
        // Store 5 (zone c) holds more replicas than store 6 (zone a).
        data.regions.insert(2, region(2, &[2, 3, 5], 2));
        data.regions.insert(3, region(3, &[2, 3, 5], 2));
        // Store 4 down: its replica goes to zone c again, the fuller store 5.
        let step = data
            .replica_repair_step(1, 3, |s| s == 4, |s| s != 4)
            .expect("repair");
        assert_eq!((step.remove.store_id, step.add_on_store), (4, Some(5)));
        // Store 4 removed: the same.
        data.stores
            .get_mut(&4)
            .unwrap()
            .store
            .set_state(StoreState::Offline);
        let mv = data.drain_move(1, 3, |s| s != 4, &[]).expect("drain");
        assert_eq!((mv.source.store_id, mv.target_store), (4, 5));
        // Zone c has no other store: the emptiest then.
        let mv = data
            .drain_move(1, 3, |s| s != 4 && s != 5, &[])
            .expect("drain");
        assert_eq!(mv.target_store, 6);
    }

    #[test]
    fn balance_never_spreads_a_region_worse_and_works_around_a_store_none_can_relieve() {
        let all = |_: u64| true;
        let zone = |z| [("zone", z)];
        let (a, b, c) = (zone("a"), zone("b"), zone("c"));
        // Four regions over zones a (store 1), b (3) and c (4); store 2 (zone a) empty.
        let mut data = MetaData::default();
        with_labels(&mut data, &["zone"], &[(1, &a), (2, &a), (3, &b), (4, &c)]);
        for id in 1..=4 {
            data.regions.insert(id, region(id, &[1, 3, 4], 1));
        }
        // Store 1 leads: the followers' stores 3 and 4 hold as many, but a move to store
        // 2 would put two replicas in zone a.
        assert!(data.replica_move(1, 3, all, &[]).is_none());
        // Store 3 leads: store 1's replica goes to store 2, in its own zone.
        data.regions.insert(1, region(1, &[1, 3, 4], 3));
        let mv = data.replica_move(1, 3, all, &[]).expect("unbalanced");
        assert_eq!((mv.source.store_id, mv.target_store), (1, 2));

        // Store 5, alone in zone c, holds every region, so no move relieves the fullest
        // store; the fullest that can go moves to the emptiest it may go to.
        let mut data = MetaData::default();
        with_labels(
            &mut data,
            &["zone"],
            &[(1, &a), (2, &a), (3, &b), (4, &b), (5, &c)],
        );
        for (id, stores) in [
            (1, [1, 3, 5]),
            (2, [2, 4, 5]),
            (3, [1, 4, 5]),
            (4, [1, 3, 5]),
        ] {
            data.regions.insert(id, region(id, &stores, 5));
        }
        // Replicas 3, 1, 2, 2, 4: store 1's goes to store 2 (store 4 is in zone b).
        let mv = data.replica_move(1, 3, all, &[]).expect("unbalanced");
        assert_eq!((mv.source.store_id, mv.target_store), (1, 2));
        // Not while another move is under way.
        assert!(data.replica_move(1, 3, all, &[(3, 4)]).is_none());
        // Two fewer at least: region 2's stores 2 and 4 hold 1 and 2.
        assert!(data.replica_move(2, 3, all, &[]).is_none());
    }

    fn report(safe_point_installed: u64, oldest_lock_ts: Option<u64>) -> StoreStats {
        StoreStats {
            gc: Some(flotilla_proto::metaservicepb::GcReport {
                safe_point_installed,
                oldest_lock_ts,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn gc_bounds_come_from_the_counted_stores_and_an_unheard_one_holds_them() {
        let mut data = MetaData::default();
        with_stores(&mut data, &[1, 2, 3, 4]);
        let heard = |data: &mut MetaData, id: u64, stats: StoreStats| {
            let rec = data.stores.get_mut(&id).unwrap();
            rec.stats = stats;
            rec.last_heartbeat = Some(Instant::now());
        };
        heard(&mut data, 1, report(100, Some(500)));
        heard(&mut data, 2, report(90, None));
        heard(&mut data, 3, report(120, Some(300)));
        // Store 4 has not been heard from: counted, it holds both bounds at 0.
        let bounds = data.gc_store_bounds(|_| true, |_| true);
        assert_eq!(
            bounds,
            GcStoreBounds {
                oldest_lock_ts: 0,
                installed: 0
            }
        );
        let not_4 = |r: &StoreRec| r.store.id != 4;
        let bounds = data.gc_store_bounds(not_4, not_4);
        assert_eq!((bounds.oldest_lock_ts, bounds.installed), (300, 90));
        // Each bound counts its own stores: store 3's lock counts though it cannot lead.
        let bounds = data.gc_store_bounds(not_4, |r| r.store.id <= 1);
        assert_eq!((bounds.oldest_lock_ts, bounds.installed), (300, 100));
        // A store that predates GC (no report) holds them too.
        heard(&mut data, 4, StoreStats::default());
        let bounds = data.gc_store_bounds(|_| true, |_| true);
        assert_eq!((bounds.oldest_lock_ts, bounds.installed), (0, 0));
        // Nothing counted: no bound.
        let bounds = data.gc_store_bounds(|_| false, |_| false);
        assert_eq!(
            (bounds.oldest_lock_ts, bounds.installed),
            (u64::MAX, u64::MAX)
        );
    }

    #[test]
    fn the_gc_safe_point_never_moves_back_and_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let engine = flotilla_storage::FjallEngine::open(dir.path(), &Default::default()).unwrap();
        let mut data = MetaData::load(&engine).unwrap();
        assert_eq!(data.gc_safe_point, 0);
        assert!(data.raise_gc_safe_point(50));
        assert!(!data.raise_gc_safe_point(40), "moved back");
        assert!(!data.raise_gc_safe_point(50));
        assert_eq!(data.gc_safe_point, 50);
        let mut batch = WriteBatch::new();
        MetaData::persist_gc_safe_point(50, &mut batch);
        engine.write(batch, true).unwrap();
        // A new leader loads it.
        assert_eq!(MetaData::load(&engine).unwrap().gc_safe_point, 50);
    }

    fn node(name: &str, heard: bool, reported: Option<u32>) -> NodeVersion {
        NodeVersion {
            node: name.into(),
            heard,
            reported,
        }
    }

    #[test]
    fn the_cluster_version_rises_to_the_oldest_node_and_never_falls() {
        let new = |n: &str| node(n, true, Some(2));
        // Every node at 2: the cluster moves from 1 to 2, and nobody holds it.
        let (v, held) = next_cluster_version(1, 2, &[new("store 1"), new("meta member 1")]);
        assert_eq!((v, held.len()), (2, 0));
        // A node whose report has no version (an older build) holds it at 1.
        let (v, held) = next_cluster_version(1, 2, &[new("store 1"), node("store 2", true, None)]);
        assert_eq!(v, 1);
        assert_eq!(held, vec!["store 2 (version 1)".to_string()]);
        // A node not heard from yet counts as the base version, whatever it may run:
        // unknown is no information.
        let (v, held) =
            next_cluster_version(1, 2, &[new("store 1"), node("store 3", false, Some(2))]);
        assert_eq!(v, 1);
        assert_eq!(held, vec!["store 3 (not heard from yet)".to_string()]);
        // Once at 2, an older node does not lower it (it is refused instead).
        let (v, _) = next_cluster_version(2, 2, &[node("store 2", true, None)]);
        assert_eq!(v, 2);
        // Never above what the leader's own build understands.
        let (v, held) = next_cluster_version(1, 2, &[node("store 1", true, Some(3))]);
        assert_eq!((v, held.len()), (2, 0));
        // No node counted: the leader's own.
        assert_eq!(next_cluster_version(1, 2, &[]).0, 2);
    }
}
