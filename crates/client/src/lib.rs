//! The cluster's clients: everything that calls another node over gRPC.
//!
//! - `MetaClient`: the meta service, following its leader across failovers.
//! - `RegionCache`: key → region → leader store, refreshed from routing errors.
//! - `ClusterTxnKv`: the `TxnKv` seam over every region of the cluster: it groups keys by
//!   region, retries routing errors with backoff, and settles other transactions' locks
//!   (resolving those of dead coordinators, waiting for live ones, with deadlock detection
//!   at the meta service), so SQL never sees a region.
//! - `RemoteTso` and `RemoteCatalog`: the `Tso` and `Catalog` seams over the meta service.
//! - `GrpcTransport`: raftstore's `Transport` over gRPC, one batching sender per store.
//!
//! Architecture invariant: knows the wire contract and the seams it implements, never SQL
//! or storage engines.

mod backoff;
mod catalog;
mod ddl;
mod error;
mod kv;
mod kv_stream;
mod meta_client;
mod region_cache;
mod transport;
mod tso;

pub use backoff::Backoff;
pub use catalog::{NewStorageHook, RemoteCatalog, WireChange, WireSnapshot};
pub use ddl::RemoteDdl;
pub use error::ClientError;
pub use kv::ClusterTxnKv;
pub use meta_client::{ClientConfig, MetaClient, channel_to};
pub use region_cache::{CachedRegion, RegionCache};
pub use transport::{
    GrpcTransport, RaftMessageLimits, RaftService, StoreResolver, deliver_raft_chunks,
    deliver_raft_stream,
};
pub use tso::RemoteTso;

/// The storage key a user key is routed by (region boundaries are encoded user keys).
pub fn encode_key(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + user_key.len() / 8 + 9);
    flotilla_codec::encode_bytes(&mut out, user_key);
    out
}

/// The user key at an encoded region boundary; `None` for the unbounded end.
pub fn decode_boundary(encoded: &[u8]) -> Option<Vec<u8>> {
    if encoded.is_empty() {
        return None;
    }
    let mut input = encoded;
    flotilla_codec::decode_bytes(&mut input).ok()
}
