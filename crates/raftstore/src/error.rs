//! Errors of region peers. The routing errors (`NotLeader`, `EpochNotMatch`,
//! `RegionNotFound`, `KeyNotInRegion`, `StaleCommand`, `ServerIsBusy`) tell a client its
//! route is stale or the peer cannot take the request now: it refreshes its route and
//! retries. The others are faults of this store.

use flotilla_proto::metapb::{Peer, Region};
use flotilla_storage::StorageError;

/// What went wrong with a request to a region peer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RaftStoreError {
    /// This peer is not the leader; `leader` is who it believes leads, if anyone.
    #[error("region {region_id}: not the leader (leader: {leader:?}); retry at the leader")]
    NotLeader {
        region_id: u64,
        leader: Option<Peer>,
    },
    /// The request was routed with a stale epoch; `current` is what this store has now
    /// (after a split, the regions that replaced the old one).
    #[error("region epoch changed; refresh the route and retry (now: {current:?})")]
    EpochNotMatch { current: Vec<Region> },
    /// This store has no peer of the region.
    #[error("region {0} not found on this store; refresh the route and retry")]
    RegionNotFound(u64),
    /// A key of the request lies outside the region's range.
    #[error("key {key:?} is not in region {region_id}; refresh the route and retry")]
    KeyNotInRegion { key: Vec<u8>, region_id: u64 },
    /// The proposal lost its place in the log to another leader's entry: it was not applied.
    #[error("region {0}: the command was superseded by a new leader and not applied; retry")]
    StaleCommand(u64),
    /// A bound was reached (pending proposals or reads); retry after a backoff.
    #[error("store is busy: {0}; retry after a backoff")]
    ServerIsBusy(String),
    /// The local engine failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Persisted state could not be decoded.
    #[error("corrupt raft state: {0}")]
    Corrupt(String),
    /// raft-rs refused the request.
    #[error("raft: {0}")]
    Raft(String),
}

impl RaftStoreError {
    /// True for the routing errors a client answers by refreshing its route and retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RaftStoreError::NotLeader { .. }
                | RaftStoreError::EpochNotMatch { .. }
                | RaftStoreError::RegionNotFound(_)
                | RaftStoreError::KeyNotInRegion { .. }
                | RaftStoreError::StaleCommand(_)
                | RaftStoreError::ServerIsBusy(_)
        )
    }
}

impl From<StorageError> for RaftStoreError {
    fn from(e: StorageError) -> Self {
        RaftStoreError::Storage(e.to_string())
    }
}

impl From<raft::Error> for RaftStoreError {
    fn from(e: raft::Error) -> Self {
        RaftStoreError::Raft(e.to_string())
    }
}
