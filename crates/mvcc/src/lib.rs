//! Percolator MVCC over the storage seam: the store-side half of Flotilla's transactions.
//!
//! Three column families hold a transaction's state: `lock` (one lock per key being
//! written), `default` (large values at the writer's start_ts) and `write` (commit and
//! rollback records at their commit_ts). Every operation here is a read-modify-write on one
//! store, serialised per key by latches, and applied in one atomic write batch.
//!
//! Architecture invariant: knows keys and timestamps, never tables, schemas or SQL; never
//! waits for other transactions (waiting and deadlock detection live above, in the
//! `TxnKv` implementation) and never asks for timestamps.

mod error;
mod gc;
mod keys;
mod latches;
mod memory_locks;
mod records;
mod store;

pub use error::{LockInfo, MvccError};
pub use gc::GcProgress;
pub use memory_locks::MemoryLockBudget;
pub use records::{Lock, LockKind, Write, WriteKind};
pub use store::{
    IngestEntry, KeyCheck, LockKeys, MissingPrimary, Mutation, MutationOp, Mvcc, PendingWrite,
    PrewriteLocks, TxnStatus, oldest_lock_on_disk,
};

#[cfg(test)]
mod tests;
