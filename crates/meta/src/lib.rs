//! The meta service (placement driver): stores, regions, the id allocator, the TSO window
//! and the catalog, replicated by the meta members' own raft-rs group.
//!
//! The group reuses raftstore: every member runs a `Store` with one region (id 1) whose
//! data is the meta state, in the `meta` column family. Only the leader serves. When a
//! member becomes leader it first waits until it has applied everything committed (a
//! ReadIndex), then loads the state and opens the TSO and catalog over a `RegionEngine`
//! fenced by its term, so everything it persists goes through the log and nothing a
//! deposed leader computed can be written. The TSO persists a window ahead of the
//! timestamps it hands out; a new leader starts above the persisted window, so
//! timestamps never go backward across failover.
//!
//! Architecture invariant: knows the wire contract, raftstore, the storage seam and the
//! catalog and TSO implementations it hosts; never SQL execution or MVCC.

pub mod merge;
mod server;
/// The leader's view of the cluster and its placement decisions; public for the benches.
#[doc(hidden)]
pub mod state;
mod wait_graph;

pub use server::{MetaConfig, MetaNode, MetaStartError};
