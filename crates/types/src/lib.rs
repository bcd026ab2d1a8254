//! Core vocabulary shared by every Flotilla layer: timestamps and identifiers.
//!
//! Architecture invariant: this crate depends on nothing of Flotilla's and holds no logic
//! beyond the arithmetic of its types.

mod timestamp;
pub mod version;

/// Bit layout of [`Timestamp`].
pub mod timestamp_bits {
    pub use crate::timestamp::{LOGICAL_BITS, LOGICAL_MAX};
}

pub use timestamp::Timestamp;

/// Identifier of a table in the catalog (also its PostgreSQL OID).
pub type TableId = i64;
/// Identifier of an index within its table.
pub type IndexId = i64;
/// Identifier of a column within its table; never reused after a drop.
pub type ColumnId = u32;
