//! The wire contract of Flotilla: the messages nodes exchange and persist, generated from
//! the `.proto` files in the workspace's `proto/` folder.
//!
//! Rules (BLUEPRINT.md, "The wire contract"): never renumber or reuse a field; every field
//! added after v1 is `optional`, absent means unknown, and nobody acts on unknown.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// Cluster metadata: stores, regions, peers and epochs.
pub mod metapb {
    include!(concat!(env!("OUT_DIR"), "/flotilla.metapb.rs"));
}

/// What a store persists about its regions and what travels in their Raft logs.
pub mod raft_serverpb {
    include!(concat!(env!("OUT_DIR"), "/flotilla.raft_serverpb.rs"));
}

pub use prost::Message;
/// The type of every `bytes` field.
pub use prost::bytes::Bytes;

/// The store's gRPC service: Raft messages and transaction commands.
pub mod kvpb {
    include!(concat!(env!("OUT_DIR"), "/flotilla.kvpb.rs"));
}

/// The meta service's gRPC service.
pub mod metaservicepb {
    include!(concat!(env!("OUT_DIR"), "/flotilla.metaservicepb.rs"));
}
