//! Region peers: the key space split into regions, each replicated by its own raft-rs
//! group, all of a store's groups driven together in rounds over the store's engine.
//!
//! Architecture invariant: this crate knows raft-rs, the proto contract and the storage
//! seam (`KvEngine`); it knows nothing of MVCC, SQL or the network. Messages leave through
//! the `Transport` trait, so the same code runs over gRPC and in the deterministic
//! in-memory cluster of the tests.

mod board;
mod driver;
mod error;
mod hasher;
pub mod keys;
mod region_engine;
mod snap_apply;
mod snap_gen;
mod storage;
mod store;
mod watched;

pub use board::{BoardEntry, Lease, LeaseCell, RegionBoard};
pub use driver::{DriverConfig, Inspect, StoreDriver, StoreRouter};
pub use error::RaftStoreError;
pub use hasher::{RegionChecksum, RegionHasher};
pub use raft::eraftpb::ConfChangeType;
pub use region_engine::{RegionEngine, to_storage_error};
pub use snap_apply::SnapApplier;
pub use snap_gen::SnapGenerator;
pub use storage::{
    DATA_CFS, ENTRY_CACHE_BYTES_MAX_DEFAULT, PeerStorage, RAFT_INIT_LOG_INDEX, RAFT_INIT_LOG_TERM,
    conf_state_from_region, region_contains,
};
pub use store::{
    Callback, LOG_KEEP_FOR_LAGGING_ENTRIES_DEFAULT, PeerChange, PeerStatus, Store, StoreConfig,
    StoreMsg, Transport, first_data_key, is_merging,
};
