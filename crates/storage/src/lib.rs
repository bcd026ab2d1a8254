//! The storage seam: what Flotilla needs from a local key-value engine, and its fjall
//! implementation.
//!
//! Architecture invariant: this is the only crate that names fjall. It knows nothing of
//! MVCC, tables or SQL: keys and values are opaque bytes in a fixed set of column families.

mod engine;
mod fjall_engine;
mod group_commit;
mod point_cache;
pub mod testing;

pub use engine::{
    Cf, DurabilityTicket, EngineRef, KvEngine, KvIter, KvPair, ReadView, StorageError, WriteBatch,
    WriteOp,
};
pub use fjall_engine::{FjallEngine, FjallOptions, SyncPolicy};
pub use point_cache::RowCacheStats;
