//! The meta state held in memory by the leader, and its persisted form.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use flotilla_proto::Message;
use flotilla_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use flotilla_proto::metaservicepb::{RegionInfo, StoreStats};
use flotilla_storage::{Cf, KvEngine, StorageError, WriteBatch};

const STORE_PREFIX: &[u8] = b"meta/store/";
const REGION_PREFIX: &[u8] = b"meta/region/";
const ALLOC_KEY: &[u8] = b"meta/alloc_end";
const BOOTSTRAP_KEY: &[u8] = b"meta/bootstrap";
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

/// The leader's view of the cluster.
#[derive(Default)]
pub struct MetaData {
    pub stores: HashMap<u64, StoreRec>,
    pub regions: HashMap<u64, RegionRec>,
    /// Region ids by start key.
    pub by_start: BTreeMap<Vec<u8>, u64>,
    pub alloc_next: u64,
    pub alloc_end: u64,
    pub bootstrap: Option<Region>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Engine(format!("corrupt meta record {what}: {e}"))
}

fn newer(a: &RegionEpoch, b: &RegionEpoch) -> bool {
    (a.version, a.conf_ver) > (b.version, b.conf_ver)
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
        if let Some(b) = engine.get(Cf::Meta, BOOTSTRAP_KEY)? {
            data.bootstrap =
                Some(Region::decode(b.as_slice()).map_err(|e| corrupt("bootstrap", e))?);
        }
        Ok(data)
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

    pub fn put_store(&mut self, store: Store, batch: &mut WriteBatch) {
        batch.put(Cf::Meta, key(STORE_PREFIX, store.id), store.encode_to_vec());
        let rec = self.stores.entry(store.id).or_insert_with(|| StoreRec {
            store: store.clone(),
            stats: StoreStats::default(),
            last_heartbeat: None,
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
        if let Some(rec) = self.regions.get_mut(&region.id) {
            let known = rec.region.epoch.unwrap_or_default();
            if !newer(&epoch, &known) {
                if rec.region.epoch == region.epoch && leader.is_some() {
                    rec.leader = leader;
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
        let mut leading: HashMap<u64, usize> = HashMap::new();
        for r in self.regions.values() {
            if let Some(l) = r.leader {
                *leading.entry(l.store_id).or_default() += 1;
            }
        }
        let count = |store_id: u64| leading.get(&store_id).copied().unwrap_or(0);
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

    pub fn region_of(&self, key: &[u8]) -> Option<&RegionRec> {
        let (_, id) = self.by_start.range(..=key.to_vec()).next_back()?;
        let rec = self.regions.get(id)?;
        flotilla_raftstore::region_contains(&rec.region, key).then_some(rec)
    }
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
}
