use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_types::{ColumnId, IndexId, TableId};
use serde::{Deserialize, Serialize};

/// A column's SQL type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    /// BOOLEAN
    Bool,
    /// SMALLINT
    Int16,
    /// INTEGER
    Int32,
    /// BIGINT
    Int64,
    /// REAL
    Float32,
    /// DOUBLE PRECISION
    Float64,
    /// NUMERIC(precision, scale), exact.
    Numeric {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// TEXT
    Text,
    /// VARCHAR(n); `None` is unbounded.
    Varchar(Option<u32>),
    /// CHAR(n), blank-padded.
    Char(u32),
    /// BYTEA
    Bytea,
    /// DATE
    Date,
    /// TIMESTAMP (without time zone)
    Timestamp,
    /// TIMESTAMPTZ
    TimestampTz,
}

impl SqlType {
    /// The type as PostgreSQL's `format_type` prints it.
    pub fn pg_name(&self) -> String {
        match self {
            SqlType::Bool => "boolean".into(),
            SqlType::Int16 => "smallint".into(),
            SqlType::Int32 => "integer".into(),
            SqlType::Int64 => "bigint".into(),
            SqlType::Float32 => "real".into(),
            SqlType::Float64 => "double precision".into(),
            SqlType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            SqlType::Text => "text".into(),
            SqlType::Varchar(Some(n)) => format!("character varying({n})"),
            SqlType::Varchar(None) => "character varying".into(),
            SqlType::Char(n) => format!("character({n})"),
            SqlType::Bytea => "bytea".into(),
            SqlType::Date => "date".into(),
            SqlType::Timestamp => "timestamp without time zone".into(),
            SqlType::TimestampTz => "timestamp with time zone".into(),
        }
    }
}

/// A column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Stable id; row values are keyed by it, so renames and drops rewrite no data.
    pub id: ColumnId,
    /// Name (already case-folded).
    pub name: String,
    /// Type.
    pub ty: SqlType,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Default expression as SQL text, evaluated at insert.
    pub default: Option<String>,
    /// What rows written before the column existed read as (ADD COLUMN ... DEFAULT: the
    /// default evaluated once when the column was added), as an encoded one-column row
    /// value (`flotilla_codec::encode_row`). `None` reads them as NULL. Rows written
    /// after the column was added store its value, NULL included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_default: Option<Vec<u8>>,
}

/// How rows of a table are keyed in storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handle {
    /// A hidden, allocated row id (the table was created without a primary key).
    RowId,
    /// The primary key columns, in key order (clustered primary key).
    PrimaryKey(Vec<ColumnId>),
}

/// Lifecycle of an index (F1): absent -> delete-only -> write-only -> write-reorg
/// (backfill) -> public when added, and back when dropped. Each step is published only
/// once every SQL node uses the previous one, so at most two adjacent states are in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexState {
    /// Writes remove the entries of rows they delete or change, and add none; reads
    /// ignore it.
    DeleteOnly,
    /// Maintained by writes but not yet complete: never used by reads.
    WriteOnly,
    /// Maintained by writes while the existing rows are backfilled.
    WriteReorg,
    /// Complete and usable.
    Public,
}

impl IndexState {
    /// Writes add (and claim) entries of the index, not only remove them.
    pub fn takes_writes(self) -> bool {
        !matches!(self, IndexState::DeleteOnly)
    }

    /// The state's name, as listed.
    pub fn name(self) -> &'static str {
        match self {
            IndexState::DeleteOnly => "delete-only",
            IndexState::WriteOnly => "write-only",
            IndexState::WriteReorg => "write-reorg",
            IndexState::Public => "public",
        }
    }
}

/// An index (or the clustered primary key, listed for introspection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Id within the table.
    pub id: IndexId,
    /// Name (unique in the schema).
    pub name: String,
    /// Indexed columns in order.
    pub columns: Vec<ColumnId>,
    /// Unique constraint.
    pub unique: bool,
    /// This is the table's primary key.
    pub primary: bool,
    /// The primary key that rows are keyed by: no separate index entries exist.
    pub clustered: bool,
    /// Lifecycle state.
    pub state: IndexState,
}

/// A table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Stable id (also its PostgreSQL OID).
    pub id: TableId,
    /// Key prefix of its rows and index entries; TRUNCATE moves the table to a fresh one.
    pub storage_id: TableId,
    /// Name (already case-folded).
    pub name: String,
    /// Columns in display order.
    pub columns: Vec<ColumnDef>,
    /// How rows are keyed.
    pub handle: Handle,
    /// Indexes, including the primary key.
    pub indexes: Vec<IndexDef>,
    /// Next column id to assign.
    pub next_column_id: ColumnId,
    /// Next index id to assign.
    pub next_index_id: IndexId,
}

impl TableDef {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The column with id `id`.
    pub fn column_by_id(&self, id: ColumnId) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.id == id)
    }

    /// Position of the column with id `id` in `columns`.
    pub fn column_position(&self, id: ColumnId) -> Option<usize> {
        self.columns.iter().position(|c| c.id == id)
    }

    /// Indexes that have entries in storage (not the clustered primary key).
    pub fn stored_indexes(&self) -> impl Iterator<Item = &IndexDef> {
        self.indexes.iter().filter(|i| !i.clustered)
    }

    /// The primary key, if any.
    pub fn primary_key(&self) -> Option<&IndexDef> {
        self.indexes.iter().find(|i| i.primary)
    }
}

/// A view: a stored query, expanded where it is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// Stable id (from the table id space).
    pub id: TableId,
    /// Name (already case-folded).
    pub name: String,
    /// The defining query as SQL text.
    pub query: String,
    /// Column names given in `CREATE VIEW name (columns)`, if any.
    pub columns: Vec<String>,
}

/// The whole schema at one version.
#[derive(Debug, Clone, Default)]
pub struct CatalogSnapshot {
    /// Bumped by every change.
    pub version: u64,
    /// Tables by name.
    pub tables: BTreeMap<String, Arc<TableDef>>,
    /// Views by name.
    pub views: BTreeMap<String, Arc<ViewDef>>,
}

impl CatalogSnapshot {
    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&Arc<TableDef>> {
        self.tables.get(name)
    }

    /// The table that owns index `name`.
    pub fn table_of_index(&self, name: &str) -> Option<&Arc<TableDef>> {
        self.tables
            .values()
            .find(|t| t.indexes.iter().any(|i| i.name == name))
    }

    /// True if a table or index already uses `name` (they share one namespace, as in
    /// PostgreSQL).
    pub fn relation_exists(&self, name: &str) -> bool {
        self.tables.contains_key(name)
            || self.views.contains_key(name)
            || self.table_of_index(name).is_some()
    }
}

/// A schema change computed from one snapshot: tables to write (created or replaced,
/// matched by id) and tables to remove.
#[derive(Debug, Clone, Default)]
pub struct SchemaChange {
    /// The version the change was computed from.
    pub base_version: u64,
    /// Tables created or replaced.
    pub upserts: Vec<TableDef>,
    /// Ids of tables dropped.
    pub drops: Vec<TableId>,
    /// Views created or replaced.
    pub view_upserts: Vec<ViewDef>,
    /// Ids of views dropped.
    pub view_drops: Vec<TableId>,
}
