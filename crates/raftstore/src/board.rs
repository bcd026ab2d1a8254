//! `RegionBoard`: what a store's peers look like, published by the store thread after each
//! round for readers on other threads (the RPC service routing commands, heartbeats, the
//! split checker), so they need not queue behind Raft work to learn who leads.

use std::collections::HashMap;

use flotilla_proto::metapb::{Peer, Region};
use parking_lot::RwLock;

/// One peer as of the end of the last round that touched it.
#[derive(Debug, Clone, Default)]
pub struct BoardEntry {
    pub region: Region,
    pub peer_id: u64,
    pub is_leader: bool,
    /// The leader this peer believes in, if any.
    pub leader: Option<Peer>,
    pub term: u64,
    pub applied_index: u64,
    /// Commit records applied in this region since the peer was created here: a cheap
    /// measure of growth for the split checker.
    pub written_keys: u64,
    /// The last replica checksum: (log index, checksum, key count).
    pub checksum: Option<(u64, u64, u64)>,
}

/// Every peer of one store, by region id.
#[derive(Default)]
pub struct RegionBoard {
    entries: RwLock<HashMap<u64, BoardEntry>>,
}

impl RegionBoard {
    /// The peer of `region_id`, if this store has one.
    pub fn get(&self, region_id: u64) -> Option<BoardEntry> {
        self.entries.read().get(&region_id).cloned()
    }

    /// Every peer.
    pub fn all(&self) -> Vec<BoardEntry> {
        self.entries.read().values().cloned().collect()
    }

    /// The initialized regions whose range holds `key`.
    pub fn regions_containing(&self, key: &[u8]) -> Vec<Region> {
        self.entries
            .read()
            .values()
            .filter(|e| !e.region.peers.is_empty() && crate::region_contains(&e.region, key))
            .map(|e| e.region.clone())
            .collect()
    }

    pub(crate) fn publish(&self, entries: Vec<BoardEntry>, removed: &[u64]) {
        if entries.is_empty() && removed.is_empty() {
            return;
        }
        let mut map = self.entries.write();
        for id in removed {
            map.remove(id);
        }
        for e in entries {
            map.insert(e.region.id, e);
        }
    }
}
