//! Transactions: the `TxnKv` seam (Percolator operations over the whole key space), its
//! local implementation for a single store, and the client-side `Transaction` that SQL
//! sessions use (write buffer, pessimistic locks, two-phase commit, heartbeats).
//!
//! Architecture invariant: knows keys, values and timestamps, never tables or SQL. The
//! `Transaction` reaches storage only through `TxnKv` and time only through `Tso`, so the
//! same client runs over a cluster once `TxnKv` is implemented by a routing client.

mod deadlock;
mod error;
mod kv;
mod local;
mod transaction;
mod waits;

pub use error::TxnError;
pub use kv::{LockRequest, TxnKv, TxnKvRef, lock_ttl_ms_after};
pub use local::LocalTxnKv;
pub use transaction::{LockStrength, Transaction, TxnOptions, TxnView, WriteMark};

pub use flotilla_mvcc::{IngestEntry, KeyCheck, Mutation, MutationOp, TxnStatus};

#[cfg(test)]
mod tests;
