use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use flotilla_proto::metapb::{Peer, Region};
use flotilla_proto::metaservicepb::RegionInfo;
use parking_lot::RwLock;

use crate::error::ClientError;
use crate::meta_client::MetaClient;

/// A region as the cache knows it: its range and epoch, and the peer believed to lead.
#[derive(Debug, Clone)]
pub struct CachedRegion {
    pub region: Region,
    pub leader: Option<Peer>,
}

impl CachedRegion {
    fn contains(&self, key: &[u8]) -> bool {
        flotilla_raftstore::region_contains(&self.region, key)
    }
}

/// Maps encoded keys to regions and store ids to addresses, learning from the meta
/// service on a miss and from routing errors on a stale entry. Bounded: past
/// `max_regions` entries the cache is cleared (the next lookups refill it).
pub struct RegionCache {
    meta: Arc<MetaClient>,
    max_regions: usize,
    by_start: RwLock<BTreeMap<Vec<u8>, CachedRegion>>,
    stores: RwLock<HashMap<u64, String>>,
}

impl RegionCache {
    /// Default bound on cached regions.
    pub const DEFAULT_MAX_REGIONS: usize = 100_000;

    /// An empty cache over `meta`.
    pub fn new(meta: Arc<MetaClient>, max_regions: usize) -> Self {
        Self {
            meta,
            max_regions,
            by_start: RwLock::new(BTreeMap::new()),
            stores: RwLock::new(HashMap::new()),
        }
    }

    /// The meta client behind the cache.
    pub fn meta(&self) -> &Arc<MetaClient> {
        &self.meta
    }

    fn lookup(&self, key: &[u8]) -> Option<CachedRegion> {
        let map = self.by_start.read();
        let (_, r) = map.range(..=key.to_vec()).next_back()?;
        r.contains(key).then(|| r.clone())
    }

    /// The region holding encoded key `key`.
    pub async fn locate(&self, key: &[u8]) -> Result<CachedRegion, ClientError> {
        if let Some(r) = self.lookup(key) {
            return Ok(r);
        }
        let info = self.meta.get_region(key).await?;
        let cached = self.insert_info(info);
        match cached {
            Some(c) if c.contains(key) => Ok(c),
            _ => Err(ClientError::Unavailable(
                "the meta service has no region for the key yet".into(),
            )),
        }
    }

    fn insert_info(&self, info: RegionInfo) -> Option<CachedRegion> {
        let region = info.region?;
        let leader = info.leader.filter(|p| p.id != 0);
        let cached = CachedRegion { region, leader };
        self.insert(cached.clone());
        Some(cached)
    }

    /// Caches `r`, dropping every entry it overlaps.
    pub fn insert(&self, r: CachedRegion) {
        let mut map = self.by_start.write();
        if map.len() >= self.max_regions {
            map.clear();
        }
        let overlapping: Vec<Vec<u8>> = map
            .iter()
            .filter(|(_, o)| overlaps(&o.region, &r.region))
            .map(|(k, _)| k.clone())
            .collect();
        for k in overlapping {
            map.remove(&k);
        }
        map.insert(r.region.start_key.to_vec(), r);
    }

    /// Forgets a region (its route proved wrong).
    pub fn invalidate(&self, region_id: u64) {
        self.by_start
            .write()
            .retain(|_, r| r.region.id != region_id);
    }

    /// Records who leads `region_id`, or that nobody is known to (`None`: the next try goes
    /// to another peer).
    pub fn set_leader(&self, region_id: u64, leader: Option<Peer>) {
        let mut map = self.by_start.write();
        if let Some(r) = map.values_mut().find(|r| r.region.id == region_id) {
            r.leader = leader;
        }
    }

    /// Replaces cached entries with the regions a store reported after a split or
    /// membership change.
    pub fn update_regions(&self, current: &[Region]) {
        for region in current {
            let leader = self
                .by_start
                .read()
                .values()
                .find(|r| r.region.id == region.id)
                .and_then(|r| r.leader);
            self.insert(CachedRegion {
                region: region.clone(),
                leader,
            });
        }
    }

    /// The address of a store.
    pub async fn store_address(&self, store_id: u64) -> Result<String, ClientError> {
        if let Some(a) = self.stores.read().get(&store_id) {
            return Ok(a.clone());
        }
        let addr = self.meta.store_address(store_id).await?;
        self.stores.write().insert(store_id, addr.clone());
        Ok(addr)
    }

    /// Forgets a store's address (it may have moved).
    pub fn forget_store(&self, store_id: u64) {
        self.stores.write().remove(&store_id);
    }
}

fn overlaps(a: &Region, b: &Region) -> bool {
    let a_before_b = !a.end_key.is_empty() && a.end_key.as_ref() <= b.start_key.as_ref();
    let b_before_a = !b.end_key.is_empty() && b.end_key.as_ref() <= a.start_key.as_ref();
    !(a_before_b || b_before_a)
}
