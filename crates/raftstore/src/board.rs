//! `RegionBoard`: what a store's peers look like, published by the store thread after each
//! round for readers on other threads (the RPC service routing commands, heartbeats, the
//! split checker), so they need not queue behind Raft work to learn who leads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use flotilla_proto::metapb::{Peer, Region};
use parking_lot::{Mutex, RwLock};

/// A leader's lease: until it runs out no other peer can have been elected, so the leader
/// may serve a read from what it has applied without asking a quorum first.
///
/// Taken when a quorum acknowledged a heartbeat the leader sent at (`tick`, `at`): each of
/// them refuses to vote for anyone else for an election timeout after hearing it
/// (check-quorum), so no new leader can be chosen before then. The lease ends a margin
/// earlier, in the leader's ticks (deterministic tests drive every store's clock at once)
/// and in wall-clock time (production: a leader whose thread stalls stops ticking, but not
/// aging), and must hold in both.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lease {
    /// The term the lease was taken in; a read for another term gets no lease.
    pub term: u64,
    /// The lease holds while the store's tick count is below this.
    pub until_tick: u64,
    /// And while the clock is before this (`None`: no lease).
    pub until: Option<Instant>,
    /// A read used the lease since it was last renewed: the store renews only leases in
    /// use, so an idle region costs no extra heartbeats.
    pub used: bool,
}

impl Lease {
    /// Whether the lease covers a read in `term` now, with the store at `tick`.
    pub fn covers(&self, term: u64, tick: u64, now: Instant) -> bool {
        self.term == term && tick < self.until_tick && self.until.is_some_and(|u| now < u)
    }

    /// `covers`, and if so marks the lease used (the store keeps renewing it).
    pub fn use_for(&mut self, term: u64, tick: u64, now: Instant) -> bool {
        let covered = self.covers(term, tick, now);
        self.used |= covered;
        covered
    }
}

/// One peer's lease, shared by the store thread (which renews and revokes it) and readers
/// on other threads.
pub type LeaseCell = Arc<Mutex<Lease>>;

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
    /// This peer's lease while it leads (see `Lease`).
    pub lease: LeaseCell,
    /// While it leads: the peers its log does not yet reach (see `Peer::pending_peers`).
    pub pending_peers: Vec<u64>,
}

/// Every peer of one store, by region id.
#[derive(Default)]
pub struct RegionBoard {
    entries: RwLock<HashMap<u64, BoardEntry>>,
    /// The store's Raft clock: ticks since it opened.
    ticks: AtomicU64,
}

impl RegionBoard {
    /// Whether this store's peer of `region_id` holds a lease for `term` now, so a read of
    /// what it has applied is linearizable without a round trip to a quorum. Marks the
    /// lease used, so the store keeps renewing it.
    pub fn lease_read(&self, region_id: u64, term: u64) -> bool {
        let tick = self.ticks.load(Ordering::Acquire);
        let map = self.entries.read();
        let Some(entry) = map.get(&region_id) else {
            return false;
        };
        entry.lease.lock().use_for(term, tick, Instant::now())
    }

    pub(crate) fn set_ticks(&self, ticks: u64) {
        self.ticks.store(ticks, Ordering::Release);
    }

    /// The peer of `region_id`, if this store has one.
    pub fn get(&self, region_id: u64) -> Option<BoardEntry> {
        self.entries.read().get(&region_id).cloned()
    }

    /// The id of this store's peer of `region_id`, if it has one: a read compares it before
    /// and after, since a peer that goes (removed, its data deleted) leaves the board first.
    pub fn peer_id(&self, region_id: u64) -> Option<u64> {
        self.entries.read().get(&region_id).map(|e| e.peer_id)
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
