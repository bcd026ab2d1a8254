//! The `Catalog` seam: table definitions, the schema version, and id allocation; and the
//! local catalog persisted in the store's meta column family.
//!
//! The catalog is the single source of truth for schema: storage never holds a schema the
//! catalog does not. A schema change is computed in full from one snapshot and committed
//! only if the catalog is still at that snapshot's version (compare-and-swap), so a
//! change is all or nothing and concurrent DDL cannot interleave.
//!
//! Architecture invariant: knows table definitions, never SQL text parsing, execution or
//! transactions; persists only through the storage seam.

mod local;
mod schema;

use std::ops::Range;
use std::sync::Arc;

pub use local::{CatalogLimits, LocalCatalog, SEQUENCE_BATCH};
pub use schema::{
    CatalogSnapshot, CheckDef, ColumnDef, CompareOp, FkAction, ForeignKeyDef, Handle, Identity,
    IndexDef, IndexPredicate, IndexState, PredicateTerm, PredicateTest, SchemaChange, SequenceDef,
    SqlType, TableDef, ViewDef,
};

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog moved on since the snapshot the change was computed from.
    #[error(
        "schema changed concurrently (version {expected} is now {actual}); retry the statement"
    )]
    VersionMismatch {
        /// The version the change was based on.
        expected: u64,
        /// The catalog's version now.
        actual: u64,
    },
    /// The change is invalid against the current schema.
    #[error("{0}")]
    Invalid(String),
    /// Persisting failed; nothing changed.
    #[error("catalog storage failure: {0}")]
    Storage(String),
    /// The id counter has fewer ids left below `i64::MAX` than asked for: a sequence
    /// reached its maximum, or a table its last row id.
    #[error("{0}")]
    Exhausted(String),
    /// The catalog service (the meta service) could not be reached in time; whether the
    /// change was made is unknown only if the statement was DDL: retry it.
    #[error("catalog unavailable: {0}; retry")]
    Unavailable(String),
}

impl CatalogError {
    /// The SQLSTATE a statement reports for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CatalogError::Invalid(m) if m.contains("already exists") => "42P07",
            CatalogError::Invalid(m) if m.contains("more than once") => "42701",
            // program_limit_exceeded; too_many_columns
            CatalogError::Invalid(m) if m.contains("(relations_max)") => "54000",
            CatalogError::Invalid(m) if m.contains("(columns_per_table_max)") => "54011",
            CatalogError::Invalid(_) => "42P16",
            // sequence_generator_limit_exceeded
            CatalogError::Exhausted(_) => "2200H",
            CatalogError::VersionMismatch { .. } | CatalogError::Unavailable(_) => "40001",
            CatalogError::Storage(_) => "XX000",
        }
    }
}

/// What kind of identifier to allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// Table ids and storage ids (one space, so a truncated table's new storage id never
    /// collides with another table).
    Table,
    /// Hidden row handles of the given table.
    RowId(i64),
    /// Values of the sequence with this id (`SequenceDef::id`), as ordinals from 1.
    Sequence(i64),
}

/// The schema's single source of truth.
pub trait Catalog: Send + Sync + 'static {
    /// The current schema.
    fn snapshot(&self) -> Arc<CatalogSnapshot>;

    /// Commits `change`, computed from the snapshot at `change.base_version`. Fails without
    /// effect if the catalog is no longer at that version or the change is invalid.
    fn commit(&self, change: SchemaChange) -> Result<Arc<CatalogSnapshot>, CatalogError>;

    /// Allocates `count` consecutive ids of `kind`, never handed out before (also across
    /// restarts).
    fn allocate(&self, kind: IdKind, count: u64) -> Result<Range<i64>, CatalogError>;

    /// Makes `next` (an ordinal, at least 1) the next value `allocate` hands out of the
    /// sequence with id `sequence`, forward or back (`setval`). Values this node or
    /// another had reserved before are not recalled: as in PostgreSQL, a session holding
    /// cached values of a sequence hands them out first.
    fn restart_sequence(&self, sequence: i64, next: i64) -> Result<(), CatalogError>;

    /// Loads the newest schema now, if this is a cache of a catalog kept elsewhere
    /// (blocking). A local catalog is always current.
    fn sync(&self) -> Result<(), CatalogError> {
        Ok(())
    }

    /// Tells the catalog that a schema change (made elsewhere, by a DDL job) created the
    /// storage ids `ids` (new tables, truncations), before the statement returns: a
    /// cluster gives each its own region. Blocking.
    fn storage_created(&self, ids: &[i64]) {
        let _ = ids;
    }
}

/// Shared handle to a catalog.
pub type CatalogRef = Arc<dyn Catalog>;
