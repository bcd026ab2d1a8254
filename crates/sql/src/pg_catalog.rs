//! A read-only `pg_catalog` schema computed from the catalog snapshot, for the
//! introspection queries drivers and ORMs send (SQLAlchemy's `has_table`, for one):
//! `pg_namespace`, `pg_class`, `pg_attribute`, `pg_type`, `pg_constraint`, `pg_index`,
//! `pg_attrdef`, `pg_depend`, `pg_am` and `pg_collation`, with PostgreSQL's column names
//! and a subset of its columns. OIDs are `bigint` here (PostgreSQL's `oid` is an unsigned
//! 32-bit type): a table's is its id, a sequence's its id, an index's its table's id
//! times 65,536 plus its own, and a constraint's its table's id times 65,536 plus 32,768
//! plus its place among the table's constraints (so a constraint's OID holds only within
//! one catalog version). Everything lives in the one schema `public` (OID 2200).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::Array;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int16Array, Int64Array, ListArray, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::Int16Type;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use flotilla_catalog::{
    CatalogRef, CatalogSnapshot, CheckDef, ColumnDef, ForeignKeyDef, Identity, IndexDef,
    IndexState, SqlType, TableDef,
};

use flotilla_types::ColumnId;

use crate::sequence::nextval_default;

use crate::error::SqlError;

const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
/// The bootstrap superuser's OID, owner of everything.
const OWNER_OID: i64 = 10;

/// The tables of the schema; also found unqualified, as PostgreSQL searches `pg_catalog`
/// first (a user table of the same name wins here).
pub(crate) const TABLES: [&str; 10] = [
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_type",
    "pg_constraint",
    "pg_index",
    "pg_attrdef",
    "pg_depend",
    "pg_am",
    "pg_collation",
];

/// The OIDs PostgreSQL gives its catalog tables, which `'pg_class'::regclass` names (as
/// `pg_depend.classid` holds them).
const CATALOG_TABLE_OIDS: [(&str, i64); 10] = [
    ("pg_namespace", 2615),
    ("pg_class", 1259),
    ("pg_attribute", 1249),
    ("pg_type", 1247),
    ("pg_constraint", 2606),
    ("pg_index", 2610),
    ("pg_attrdef", 2604),
    ("pg_depend", 2608),
    ("pg_am", 2601),
    ("pg_collation", 3456),
];
const PG_CLASS_OID: i64 = 1259;
/// `btree`'s OID in `pg_am`, the access method of every index.
const BTREE_OID: i64 = 403;
/// `heap`'s OID in `pg_am`, the access method of every table.
const HEAP_OID: i64 = 2;
/// The OID of collation `default`, which every text column has.
const DEFAULT_COLLATION_OID: i64 = 100;

/// Every type name `regtype` knows, with its OID.
const TYPE_NAMES: [(&str, i64); 24] = [
    ("boolean", 16),
    ("bool", 16),
    ("smallint", 21),
    ("int2", 21),
    ("integer", 23),
    ("int", 23),
    ("int4", 23),
    ("bigint", 20),
    ("int8", 20),
    ("real", 700),
    ("float4", 700),
    ("double precision", 701),
    ("float8", 701),
    ("numeric", 1700),
    ("text", 25),
    ("character varying", 1043),
    ("varchar", 1043),
    ("bpchar", 1042),
    ("bytea", 17),
    ("date", 1082),
    ("time", 1083),
    ("time without time zone", 1083),
    ("timestamp", 1114),
    ("timestamptz", 1184),
];

/// PostgreSQL's OID and name of a column type.
fn pg_type(ty: &SqlType) -> (i64, &'static str) {
    match ty {
        SqlType::Bool => (16, "bool"),
        SqlType::Int16 => (21, "int2"),
        SqlType::Int32 => (23, "int4"),
        SqlType::Int64 => (20, "int8"),
        SqlType::Float32 => (700, "float4"),
        SqlType::Float64 => (701, "float8"),
        SqlType::Numeric { .. } => (1700, "numeric"),
        SqlType::Text => (25, "text"),
        SqlType::Varchar(_) => (1043, "varchar"),
        SqlType::Char(_) => (1042, "bpchar"),
        SqlType::Bytea => (17, "bytea"),
        SqlType::Date => (1082, "date"),
        SqlType::Time => (1083, "time"),
        SqlType::Timestamp => (1114, "timestamp"),
        SqlType::Interval => (1186, "interval"),
        SqlType::TimestampTz => (1184, "timestamptz"),
        SqlType::Uuid => (2950, "uuid"),
        SqlType::Json => (114, "json"),
        SqlType::Jsonb => (3802, "jsonb"),
        SqlType::Array(element) => array_pg_type(element),
    }
}

/// PostgreSQL's OID and name of the array type of `element`.
fn array_pg_type(element: &SqlType) -> (i64, &'static str) {
    match element {
        SqlType::Bool => (1000, "_bool"),
        SqlType::Int16 => (1005, "_int2"),
        SqlType::Int32 => (1007, "_int4"),
        SqlType::Int64 => (1016, "_int8"),
        SqlType::Float32 => (1021, "_float4"),
        SqlType::Float64 => (1022, "_float8"),
        SqlType::Numeric { .. } => (1231, "_numeric"),
        SqlType::Text => (1009, "_text"),
        SqlType::Varchar(_) => (1015, "_varchar"),
        SqlType::Char(_) => (1014, "_bpchar"),
        SqlType::Bytea => (1001, "_bytea"),
        SqlType::Date => (1182, "_date"),
        SqlType::Time => (1183, "_time"),
        SqlType::Timestamp => (1115, "_timestamp"),
        SqlType::Interval => (1187, "_interval"),
        SqlType::TimestampTz => (1185, "_timestamptz"),
        SqlType::Uuid => (2951, "_uuid"),
        SqlType::Json => (199, "_json"),
        SqlType::Jsonb => (3807, "_jsonb"),
        // One-dimensional arrays only: an array's array type is its own, as in PostgreSQL.
        SqlType::Array(element) => array_pg_type(element),
    }
}

/// The column type of the PostgreSQL type `oid` that `pg_type` lists, with no modifier.
pub(crate) fn type_of_oid(oid: i64) -> Option<SqlType> {
    PG_TYPES
        .iter()
        .flat_map(|t| [t.clone(), SqlType::Array(Box::new(t.clone()))])
        .find(|t| pg_type(t).0 == oid)
}

/// The types `pg_type` lists (each with its array type).
const PG_TYPES: [SqlType; 19] = [
    SqlType::Bool,
    SqlType::Int16,
    SqlType::Int32,
    SqlType::Int64,
    SqlType::Float32,
    SqlType::Float64,
    SqlType::Numeric {
        precision: 1,
        scale: 0,
    },
    SqlType::Text,
    SqlType::Varchar(None),
    SqlType::Char(1),
    SqlType::Bytea,
    SqlType::Date,
    SqlType::Time,
    SqlType::Timestamp,
    SqlType::TimestampTz,
    SqlType::Interval,
    SqlType::Uuid,
    SqlType::Json,
    SqlType::Jsonb,
];

/// PostgreSQL's OID of a column type (`atttypid`).
pub(crate) fn pg_type_oid(ty: &SqlType) -> i64 {
    pg_type(ty).0
}

/// PostgreSQL's name of a column type (`udt_name` in `information_schema.columns`).
pub(crate) fn pg_type_name(ty: &SqlType) -> &'static str {
    pg_type(ty).1
}

/// A column type's `atttypmod`: its declared length or precision and scale, encoded as
/// PostgreSQL does (plus 4, the varlena header), or -1 for none.
fn type_modifier(ty: &SqlType) -> i64 {
    match ty {
        // An array's is its element's.
        SqlType::Array(element) => type_modifier(element),
        SqlType::Varchar(Some(n)) | SqlType::Char(n) => i64::from(*n) + 4,
        SqlType::Numeric { precision, scale } => {
            ((i64::from(*precision) << 16) | (i64::from(*scale) & 0xffff)) + 4
        }
        _ => -1,
    }
}

/// The collation of values of the type: the default one for text, none (0) otherwise.
fn collation_oid(ty: &SqlType) -> i64 {
    // An array's is its elements'.
    let ty = ty.element().unwrap_or(ty);
    if matches!(ty, SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_)) {
        DEFAULT_COLLATION_OID
    } else {
        0
    }
}

/// The OID of index `index_id` of table `table_id`.
pub(crate) fn index_oid(table_id: i64, index_id: i64) -> i64 {
    (table_id << 16) + index_id
}

/// A column's number in `pg_attribute` (`attnum`): its place in the table, from 1.
pub(crate) fn attnum(table: &TableDef, column: ColumnId) -> i16 {
    table
        .column_position(column)
        .map_or(0, |p| i16::try_from(p + 1).unwrap_or(i16::MAX))
}

fn attnums(table: &TableDef, columns: &[ColumnId]) -> Vec<i16> {
    columns.iter().map(|c| attnum(table, *c)).collect()
}

/// What a constraint is, with its definition in the catalog.
pub(crate) enum ConstraintKind<'a> {
    /// A primary key or unique constraint, and its index.
    Index(&'a IndexDef),
    Check(&'a CheckDef),
    Foreign(&'a ForeignKeyDef),
}

/// A constraint as `pg_constraint` lists it.
pub(crate) struct Constraint<'a> {
    pub(crate) oid: i64,
    pub(crate) table: &'a TableDef,
    pub(crate) kind: ConstraintKind<'a>,
}

impl<'a> Constraint<'a> {
    fn foreign(&self) -> Option<&'a ForeignKeyDef> {
        match self.kind {
            ConstraintKind::Foreign(f) => Some(f),
            _ => None,
        }
    }

    fn name(&self) -> &str {
        match self.kind {
            ConstraintKind::Index(i) => &i.name,
            ConstraintKind::Check(c) => &c.name,
            ConstraintKind::Foreign(f) => &f.name,
        }
    }

    /// `contype`: p(rimary key), u(nique), c(heck) or f(oreign key).
    fn contype(&self) -> &'static str {
        match self.kind {
            ConstraintKind::Index(i) if i.primary => "p",
            ConstraintKind::Index(_) => "u",
            ConstraintKind::Check(_) => "c",
            ConstraintKind::Foreign(_) => "f",
        }
    }

    fn columns(&self) -> &[ColumnId] {
        match self.kind {
            ConstraintKind::Index(i) => &i.columns,
            ConstraintKind::Check(c) => &c.columns,
            ConstraintKind::Foreign(f) => &f.columns,
        }
    }

    /// The definition as `pg_get_constraintdef` prints it.
    pub(crate) fn definition(&self, snapshot: &CatalogSnapshot) -> String {
        let table = self.table;
        match self.kind {
            ConstraintKind::Index(i) => format!(
                "{} ({})",
                if i.primary { "PRIMARY KEY" } else { "UNIQUE" },
                table.column_list(&i.columns)
            ),
            ConstraintKind::Check(c) => check_def(c),
            ConstraintKind::Foreign(fk) => foreign_key_def(snapshot, table, fk),
        }
    }
}

/// A check constraint as `pg_get_constraintdef` prints it: `CHECK (a > 0)`.
pub(crate) fn check_def(check: &CheckDef) -> String {
    format!(
        "CHECK ({}){}",
        check.expr,
        if check.validated { "" } else { " NOT VALID" }
    )
}

/// A foreign key as `pg_get_constraintdef` prints it:
/// `FOREIGN KEY (a) REFERENCES parent(id)`.
pub(crate) fn foreign_key_def(
    snapshot: &CatalogSnapshot,
    table: &TableDef,
    fk: &ForeignKeyDef,
) -> String {
    let Some(parent) = snapshot.referenced_table(table, fk) else {
        return format!("FOREIGN KEY ({})", table.column_list(&fk.columns));
    };
    // PostgreSQL prints the actions other than NO ACTION, update first.
    let actions: String = [("UPDATE", fk.on_update), ("DELETE", fk.on_delete)]
        .iter()
        .filter(|(_, a)| !a.is_no_action())
        .map(|(on, a)| format!(" ON {on} {}", a.sql()))
        .collect();
    format!(
        "FOREIGN KEY ({}) REFERENCES {}({}){actions}{}{}{}",
        table.column_list(&fk.columns),
        parent.name,
        parent.column_list(&fk.ref_columns),
        if fk.deferrable { " DEFERRABLE" } else { "" },
        if fk.initially_deferred {
            " INITIALLY DEFERRED"
        } else {
            ""
        },
        if fk.validated { "" } else { " NOT VALID" }
    )
}

/// An index as `pg_get_indexdef` prints it.
pub(crate) fn index_def(table: &TableDef, index: &IndexDef, pretty: bool) -> String {
    format!(
        "CREATE {}INDEX {} ON public.{} USING btree ({}){}",
        if index.unique { "UNIQUE " } else { "" },
        index.name,
        table.name,
        table.column_list(&index.columns),
        match &index.predicate {
            Some(p) => format!(" WHERE {}", crate::partial::predicate_sql(table, p, pretty)),
            None => String::new(),
        }
    )
}

/// Where a table's constraints' OIDs begin, after its indexes' (table id << 16 plus
/// this plus the constraint's place).
const CONSTRAINT_OID_BASE: i64 = 0x8000;
/// Where a table's column defaults' OIDs (`pg_attrdef.oid`) begin: plus the column's
/// number.
const ATTRDEF_OID_BASE: i64 = 0x4000;

/// The constraints of `table`: its primary key and unique indexes (every unique index
/// but a partial one is a constraint here, as Flotilla keeps no other kind), checks and
/// foreign keys.
pub(crate) fn table_constraints(table: &TableDef) -> impl Iterator<Item = Constraint<'_>> {
    let indexes = table
        .indexes
        .iter()
        .filter(|i| i.is_unique_constraint())
        .map(ConstraintKind::Index);
    let checks = table.checks.iter().map(ConstraintKind::Check);
    let fks = table.foreign_keys.iter().map(ConstraintKind::Foreign);
    indexes
        .chain(checks)
        .chain(fks)
        .enumerate()
        .map(move |(n, kind)| Constraint {
            oid: (table.id << 16) + CONSTRAINT_OID_BASE + n as i64,
            table,
            kind,
        })
}

/// The constraint with OID `oid`.
pub(crate) fn constraint_by_oid(snapshot: &CatalogSnapshot, oid: i64) -> Option<Constraint<'_>> {
    let table = snapshot.table_by_id(oid >> 16)?;
    table_constraints(table).find(|c| c.oid == oid)
}

/// The index with OID `oid`, and its table.
pub(crate) fn index_by_oid(snapshot: &CatalogSnapshot, oid: i64) -> Option<(&TableDef, &IndexDef)> {
    let table = snapshot.table_by_id(oid >> 16)?;
    let index = table
        .indexes
        .iter()
        .find(|i| index_oid(table.id, i.id) == oid)?;
    Some((table, index))
}

/// A column's default as PostgreSQL shows it (`pg_attrdef`): a serial column's sequence
/// as a `regclass`; an identity column has none (its identity stands instead).
pub(crate) fn shown_default(c: &ColumnDef) -> Option<String> {
    match &c.sequence {
        Some(s) if s.identity.is_some() => None,
        Some(s) if c.default.as_deref() == Some(nextval_default(s).as_str()) => Some(format!(
            "nextval('{}'::regclass)",
            s.name.replace('\'', "''")
        )),
        _ => c.default.clone(),
    }
}

/// The values of one column of a catalog table.
pub(crate) enum Column {
    Int(Vec<i64>),
    OptInt(Vec<Option<i64>>),
    Small(Vec<i16>),
    Text(Vec<String>),
    OptText(Vec<Option<String>>),
    Bool(Vec<bool>),
    /// An `int2[]` (or `int2vector`), NULL where None.
    SmallList(Vec<Option<Vec<i16>>>),
}

/// A catalog table of `columns`, each named.
pub(crate) fn table(columns: Vec<(&str, Column)>) -> DfResult<Arc<dyn TableProvider>> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, c)| {
            let (ty, nullable) = match c {
                Column::Int(_) => (DataType::Int64, false),
                Column::OptInt(_) => (DataType::Int64, true),
                Column::Small(_) => (DataType::Int16, false),
                Column::Text(_) => (DataType::Utf8, false),
                Column::OptText(_) => (DataType::Utf8, true),
                Column::Bool(_) => (DataType::Boolean, false),
                Column::SmallList(_) => (
                    DataType::List(Arc::new(Field::new_list_field(DataType::Int16, true))),
                    true,
                ),
            };
            Field::new(*name, ty, nullable)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|(_, c)| match c {
            Column::Int(v) => Arc::new(Int64Array::from(v)) as ArrayRef,
            Column::OptInt(v) => Arc::new(Int64Array::from(v)),
            Column::Small(v) => Arc::new(Int16Array::from(v)),
            Column::Text(v) => Arc::new(StringArray::from(v)),
            Column::OptText(v) => Arc::new(StringArray::from(v)),
            Column::Bool(v) => Arc::new(BooleanArray::from(v)),
            Column::SmallList(v) => Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(
                v.into_iter()
                    .map(|l| l.map(|l| l.into_iter().map(Some).collect::<Vec<_>>())),
            )),
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// The `pg_catalog` schema of one statement, over its catalog snapshot.
#[derive(Debug)]
pub(crate) struct PgCatalogSchema {
    pub(crate) snapshot: Arc<CatalogSnapshot>,
}

impl PgCatalogSchema {
    fn pg_namespace(&self) -> DfResult<Arc<dyn TableProvider>> {
        table(vec![
            ("oid", Column::Int(vec![PG_CATALOG_OID, PUBLIC_OID])),
            (
                "nspname",
                Column::Text(vec!["pg_catalog".into(), "public".into()]),
            ),
            ("nspowner", Column::Int(vec![OWNER_OID, OWNER_OID])),
        ])
    }

    fn pg_class(&self) -> DfResult<Arc<dyn TableProvider>> {
        // (oid, name, kind, has indexes)
        let mut rows: Vec<(i64, String, &str, bool)> = Vec::new();
        for t in self.snapshot.tables.values() {
            rows.push((t.id, t.name.clone(), "r", !t.indexes.is_empty()));
            for i in &t.indexes {
                rows.push((index_oid(t.id, i.id), i.name.clone(), "i", false));
            }
            for c in &t.columns {
                if let Some(s) = &c.sequence {
                    rows.push((s.id, s.name.clone(), "S", false));
                }
            }
        }
        for v in self.snapshot.views.values() {
            rows.push((v.id, v.name.clone(), "v", false));
        }
        for s in self.snapshot.sequences.values() {
            rows.push((s.id, s.name.clone(), "S", false));
        }
        let n = rows.len();
        table(vec![
            ("oid", Column::Int(rows.iter().map(|r| r.0).collect())),
            (
                "relname",
                Column::Text(rows.iter().map(|r| r.1.clone()).collect()),
            ),
            ("relnamespace", Column::Int(vec![PUBLIC_OID; n])),
            (
                "relkind",
                Column::Text(rows.iter().map(|r| r.2.to_string()).collect()),
            ),
            ("relowner", Column::Int(vec![OWNER_OID; n])),
            (
                "relhasindex",
                Column::Bool(rows.iter().map(|r| r.3).collect()),
            ),
            ("relpersistence", Column::Text(vec!["p".into(); n])),
            ("relispartition", Column::Bool(vec![false; n])),
            ("reltablespace", Column::Int(vec![0; n])),
            (
                "relam",
                Column::Int(
                    rows.iter()
                        .map(|r| match r.2 {
                            "i" => BTREE_OID,
                            "r" => HEAP_OID,
                            _ => 0,
                        })
                        .collect(),
                ),
            ),
            ("reloptions", Column::OptText(vec![None; n])),
        ])
    }

    fn pg_attribute(&self) -> DfResult<Arc<dyn TableProvider>> {
        let (mut relid, mut name, mut typid, mut num) = (vec![], vec![], vec![], vec![]);
        let (mut notnull, mut hasdef, mut identity) = (vec![], vec![], vec![]);
        let (mut typmod, mut collation) = (vec![], vec![]);
        for t in self.snapshot.tables.values() {
            for (pos, c) in t.columns.iter().enumerate() {
                relid.push(t.id);
                name.push(c.name.clone());
                typid.push(pg_type(&c.ty).0);
                typmod.push(type_modifier(&c.ty));
                collation.push(collation_oid(&c.ty));
                num.push(i16::try_from(pos + 1).unwrap_or(i16::MAX));
                notnull.push(!c.nullable);
                hasdef.push(c.default.is_some());
                identity.push(
                    match c.sequence.as_ref().and_then(|s| s.identity) {
                        Some(Identity::Always) => "a",
                        Some(Identity::ByDefault) => "d",
                        None => "",
                    }
                    .to_string(),
                );
            }
        }
        let n = relid.len();
        table(vec![
            ("attrelid", Column::Int(relid)),
            ("attname", Column::Text(name)),
            ("atttypid", Column::Int(typid)),
            ("attnum", Column::Small(num)),
            ("attnotnull", Column::Bool(notnull)),
            ("atthasdef", Column::Bool(hasdef)),
            ("attisdropped", Column::Bool(vec![false; n])),
            ("attidentity", Column::Text(identity)),
            ("attgenerated", Column::Text(vec![String::new(); n])),
            ("atttypmod", Column::Int(typmod)),
            ("attcollation", Column::Int(collation)),
        ])
    }

    fn pg_type(&self) -> DfResult<Arc<dyn TableProvider>> {
        // Each type, then its array type (whose element it is).
        let types: Vec<SqlType> = PG_TYPES
            .iter()
            .flat_map(|t| [t.clone(), SqlType::Array(Box::new(t.clone()))])
            .collect();
        let n = types.len();
        table(vec![
            (
                "oid",
                Column::Int(types.iter().map(|t| pg_type(t).0).collect()),
            ),
            (
                "typname",
                Column::Text(types.iter().map(|t| pg_type(t).1.to_string()).collect()),
            ),
            ("typnamespace", Column::Int(vec![PG_CATALOG_OID; n])),
            ("typtype", Column::Text(vec!["b".into(); n])),
            (
                "typarray",
                Column::Int(
                    types
                        .iter()
                        .map(|t| match t {
                            SqlType::Array(_) => 0,
                            t => array_pg_type(t).0,
                        })
                        .collect(),
                ),
            ),
            ("typdelim", Column::Text(vec![",".into(); n])),
            ("typnotnull", Column::Bool(vec![false; n])),
            ("typbasetype", Column::Int(vec![0; n])),
            (
                "typelem",
                Column::Int(
                    types
                        .iter()
                        .map(|t| t.element().map_or(0, |e| pg_type(e).0))
                        .collect(),
                ),
            ),
            (
                "typcollation",
                Column::Int(types.iter().map(collation_oid).collect()),
            ),
        ])
    }

    fn pg_constraint(&self) -> DfResult<Arc<dyn TableProvider>> {
        let snapshot = &self.snapshot;
        let all: Vec<Constraint<'_>> = snapshot
            .tables
            .values()
            .flat_map(|t| table_constraints(t))
            .collect();
        let n = all.len();
        // Referential actions and match type: NO ACTION (`a`) and MATCH SIMPLE (`s`) for
        // a foreign key, a blank for any other constraint, as in PostgreSQL.
        let fk_char =
            |c: &Constraint<'_>, ch: &str| if c.foreign().is_some() { ch } else { " " }.to_string();
        table(vec![
            ("oid", Column::Int(all.iter().map(|c| c.oid).collect())),
            (
                "conname",
                Column::Text(all.iter().map(|c| c.name().to_string()).collect()),
            ),
            ("connamespace", Column::Int(vec![PUBLIC_OID; n])),
            (
                "contype",
                Column::Text(all.iter().map(|c| c.contype().to_string()).collect()),
            ),
            (
                "condeferrable",
                Column::Bool(
                    all.iter()
                        .map(|c| c.foreign().is_some_and(|f| f.deferrable))
                        .collect(),
                ),
            ),
            (
                "condeferred",
                Column::Bool(
                    all.iter()
                        .map(|c| c.foreign().is_some_and(|f| f.initially_deferred))
                        .collect(),
                ),
            ),
            (
                "convalidated",
                Column::Bool(
                    all.iter()
                        .map(|c| match c.kind {
                            ConstraintKind::Index(_) => true,
                            ConstraintKind::Check(k) => k.validated,
                            ConstraintKind::Foreign(f) => f.validated,
                        })
                        .collect(),
                ),
            ),
            (
                "conrelid",
                Column::Int(all.iter().map(|c| c.table.id).collect()),
            ),
            ("contypid", Column::Int(vec![0; n])),
            (
                "conindid",
                Column::Int(
                    all.iter()
                        .map(|c| match c.kind {
                            ConstraintKind::Index(i) => index_oid(c.table.id, i.id),
                            ConstraintKind::Check(_) => 0,
                            ConstraintKind::Foreign(f) => index_oid(f.ref_table, f.ref_index),
                        })
                        .collect(),
                ),
            ),
            ("conparentid", Column::Int(vec![0; n])),
            (
                "confrelid",
                Column::Int(
                    all.iter()
                        .map(|c| c.foreign().map_or(0, |f| f.ref_table))
                        .collect(),
                ),
            ),
            (
                "confupdtype",
                Column::Text(
                    all.iter()
                        .map(|c| c.foreign().map_or(" ", |f| f.on_update.pg_code()).into())
                        .collect(),
                ),
            ),
            (
                "confdeltype",
                Column::Text(
                    all.iter()
                        .map(|c| c.foreign().map_or(" ", |f| f.on_delete.pg_code()).into())
                        .collect(),
                ),
            ),
            (
                "confmatchtype",
                Column::Text(all.iter().map(|c| fk_char(c, "s")).collect()),
            ),
            ("conislocal", Column::Bool(vec![true; n])),
            ("coninhcount", Column::Int(vec![0; n])),
            ("connoinherit", Column::Bool(vec![false; n])),
            (
                "conkey",
                Column::SmallList(
                    all.iter()
                        .map(|c| Some(attnums(c.table, c.columns())))
                        .collect(),
                ),
            ),
            (
                "confkey",
                Column::SmallList(
                    all.iter()
                        .map(|c| {
                            let f = c.foreign()?;
                            let parent = snapshot.referenced_table(c.table, f)?;
                            Some(attnums(parent, &f.ref_columns))
                        })
                        .collect(),
                ),
            ),
        ])
    }

    fn pg_index(&self) -> DfResult<Arc<dyn TableProvider>> {
        let all: Vec<(&TableDef, &IndexDef)> = self
            .snapshot
            .tables
            .values()
            .flat_map(|t| t.indexes.iter().map(move |i| (t.as_ref(), i)))
            .collect();
        let n = all.len();
        let natts = |i: &IndexDef| i16::try_from(i.columns.len()).unwrap_or(i16::MAX);
        table(vec![
            (
                "indexrelid",
                Column::Int(all.iter().map(|(t, i)| index_oid(t.id, i.id)).collect()),
            ),
            (
                "indrelid",
                Column::Int(all.iter().map(|(t, _)| t.id).collect()),
            ),
            (
                "indnatts",
                Column::Small(all.iter().map(|(_, i)| natts(i)).collect()),
            ),
            (
                "indnkeyatts",
                Column::Small(all.iter().map(|(_, i)| natts(i)).collect()),
            ),
            (
                "indisunique",
                Column::Bool(all.iter().map(|(_, i)| i.unique).collect()),
            ),
            (
                "indisprimary",
                Column::Bool(all.iter().map(|(_, i)| i.primary).collect()),
            ),
            ("indisexclusion", Column::Bool(vec![false; n])),
            ("indimmediate", Column::Bool(vec![true; n])),
            // CLUSTER has not ordered any table by an index (a clustered primary key is
            // how rows are keyed, which PostgreSQL has no word for).
            ("indisclustered", Column::Bool(vec![false; n])),
            (
                "indisvalid",
                Column::Bool(
                    all.iter()
                        .map(|(_, i)| i.state == IndexState::Public)
                        .collect(),
                ),
            ),
            (
                "indisready",
                Column::Bool(all.iter().map(|(_, i)| i.state.takes_writes()).collect()),
            ),
            ("indislive", Column::Bool(vec![true; n])),
            ("indisreplident", Column::Bool(vec![false; n])),
            (
                "indkey",
                Column::SmallList(
                    all.iter()
                        .map(|(t, i)| Some(attnums(t, &i.columns)))
                        .collect(),
                ),
            ),
            // Every key column ascending, NULLs last.
            (
                "indoption",
                Column::SmallList(
                    all.iter()
                        .map(|(_, i)| Some(vec![0; i.columns.len()]))
                        .collect(),
                ),
            ),
            ("indexprs", Column::OptText(vec![None; n])),
            // The predicate's text, as `pg_get_expr` returns what it is given.
            (
                "indpred",
                Column::OptText(
                    all.iter()
                        .map(|(t, i)| {
                            i.predicate
                                .as_ref()
                                .map(|p| crate::partial::predicate_sql(t, p, false))
                        })
                        .collect(),
                ),
            ),
        ])
    }

    fn pg_attrdef(&self) -> DfResult<Arc<dyn TableProvider>> {
        let (mut relid, mut num, mut expr) = (vec![], vec![], vec![]);
        for t in self.snapshot.tables.values() {
            for c in &t.columns {
                if let Some(shown) = shown_default(c) {
                    relid.push(t.id);
                    num.push(attnum(t, c.id));
                    expr.push(shown);
                }
            }
        }
        table(vec![
            (
                "oid",
                Column::Int(
                    relid
                        .iter()
                        .zip(&num)
                        .map(|(t, n)| (t << 16) + ATTRDEF_OID_BASE + i64::from(*n))
                        .collect(),
                ),
            ),
            ("adrelid", Column::Int(relid)),
            ("adnum", Column::Small(num)),
            // PostgreSQL keeps the parsed expression here, which `pg_get_expr` prints;
            // this holds the printed text, and `pg_get_expr` returns it.
            ("adbin", Column::Text(expr)),
        ])
    }

    /// What depends on what: a sequence on the column it numbers (`a`uto for `serial`,
    /// `i`nternal for an identity column), as drivers find a column's sequence.
    fn pg_depend(&self) -> DfResult<Arc<dyn TableProvider>> {
        let (mut objid, mut refobjid, mut refobjsubid, mut deptype) =
            (vec![], vec![], vec![], vec![]);
        for t in self.snapshot.tables.values() {
            for c in &t.columns {
                if let Some(s) = &c.sequence {
                    objid.push(s.id);
                    refobjid.push(t.id);
                    refobjsubid.push(i64::from(attnum(t, c.id)));
                    deptype.push(if s.identity.is_some() { "i" } else { "a" }.to_string());
                }
            }
        }
        let n = objid.len();
        table(vec![
            ("classid", Column::Int(vec![PG_CLASS_OID; n])),
            ("objid", Column::Int(objid)),
            ("objsubid", Column::Int(vec![0; n])),
            ("refclassid", Column::Int(vec![PG_CLASS_OID; n])),
            ("refobjid", Column::Int(refobjid)),
            ("refobjsubid", Column::Int(refobjsubid)),
            ("deptype", Column::Text(deptype)),
        ])
    }

    fn pg_am(&self) -> DfResult<Arc<dyn TableProvider>> {
        table(vec![
            ("oid", Column::Int(vec![HEAP_OID, BTREE_OID])),
            ("amname", Column::Text(vec!["heap".into(), "btree".into()])),
            ("amtype", Column::Text(vec!["t".into(), "i".into()])),
        ])
    }

    fn pg_collation(&self) -> DfResult<Arc<dyn TableProvider>> {
        table(vec![
            ("oid", Column::Int(vec![DEFAULT_COLLATION_OID, 950, 951])),
            (
                "collname",
                Column::Text(vec!["default".into(), "C".into(), "POSIX".into()]),
            ),
            ("collnamespace", Column::Int(vec![PG_CATALOG_OID; 3])),
        ])
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(Some(match name {
            "pg_namespace" => self.pg_namespace()?,
            "pg_class" => self.pg_class()?,
            "pg_attribute" => self.pg_attribute()?,
            "pg_type" => self.pg_type()?,
            "pg_constraint" => self.pg_constraint()?,
            "pg_index" => self.pg_index()?,
            "pg_attrdef" => self.pg_attrdef()?,
            "pg_depend" => self.pg_depend()?,
            "pg_am" => self.pg_am()?,
            "pg_collation" => self.pg_collation()?,
            _ => return Ok(None),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}

/// Which OID type a cast names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RegKind {
    /// `regclass`: a relation's OID from its name.
    Class,
    /// `regtype`: a type's OID from its name.
    Type,
}

impl RegKind {
    /// The function a cast to this type becomes.
    pub(crate) fn function(self) -> &'static str {
        match self {
            RegKind::Class => "flotilla_regclass",
            RegKind::Type => "flotilla_regtype",
        }
    }

    /// The kind of a cast's target type name, if it is one of these.
    pub(crate) fn of(type_name: &str) -> Option<Self> {
        match type_name {
            "regclass" => Some(RegKind::Class),
            "regtype" => Some(RegKind::Type),
            _ => None,
        }
    }
}

/// `x::regclass` and `x::regtype`: a name (text) becomes its OID, an OID stays; an
/// unknown name is an error (42P01, 42704), as in PostgreSQL, which drivers rely on.
struct RegCast {
    kind: RegKind,
    catalog: CatalogRef,
    signature: Signature,
}

impl std::fmt::Debug for RegCast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegCast").field("kind", &self.kind).finish()
    }
}

impl PartialEq for RegCast {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}

impl Eq for RegCast {}

impl std::hash::Hash for RegCast {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

impl RegCast {
    fn lookup(&self, name: &str) -> Result<i64, SqlError> {
        let trimmed = name.trim();
        let bare = trimmed
            .strip_prefix("public.")
            .or_else(|| trimmed.strip_prefix("pg_catalog."))
            .unwrap_or(trimmed);
        let folded = match bare.strip_prefix('"').and_then(|b| b.strip_suffix('"')) {
            Some(quoted) => quoted.to_string(),
            None => bare.to_lowercase(),
        };
        match self.kind {
            RegKind::Type => TYPE_NAMES
                .iter()
                .find(|(n, _)| *n == folded)
                .map(|(_, oid)| *oid)
                .ok_or_else(|| SqlError::new("42704", format!("type \"{folded}\" does not exist"))),
            RegKind::Class => {
                let snapshot = self.catalog.snapshot();
                let found = snapshot.tables.values().find_map(|t| {
                    if t.name == folded {
                        return Some(t.id);
                    }
                    t.indexes
                        .iter()
                        .find(|i| i.name == folded)
                        .map(|i| index_oid(t.id, i.id))
                        .or_else(|| {
                            t.columns.iter().find_map(|c| {
                                c.sequence
                                    .as_ref()
                                    .filter(|s| s.name == folded)
                                    .map(|s| s.id)
                            })
                        })
                });
                found
                    .or_else(|| snapshot.views.get(&folded).map(|v| v.id))
                    .or_else(|| {
                        CATALOG_TABLE_OIDS
                            .iter()
                            .find(|(n, _)| *n == folded)
                            .map(|(_, oid)| *oid)
                    })
                    .or_else(|| snapshot.sequences.get(&folded).map(|s| s.id))
                    .ok_or_else(|| {
                        SqlError::new("42P01", format!("relation \"{folded}\" does not exist"))
                    })
            }
        }
    }
}

impl ScalarUDFImpl for RegCast {
    fn name(&self) -> &str {
        self.kind.function()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let input = args.args[0].to_array(args.number_rows)?;
        let out: Int64Array = match input.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let names = cast(&input, &DataType::Utf8)?;
                let names = names
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| DataFusionError::Internal("names".into()))?;
                let mut oids = Vec::with_capacity(names.len());
                for i in 0..names.len() {
                    oids.push(if names.is_null(i) {
                        None
                    } else {
                        Some(
                            self.lookup(names.value(i))
                                .map_err(|e| DataFusionError::External(Box::new(e)))?,
                        )
                    });
                }
                Int64Array::from(oids)
            }
            _ => {
                let oids = cast(&input, &DataType::Int64)?;
                oids.as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| DataFusionError::Internal("oids".into()))?
                    .clone()
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The `regclass` and `regtype` casts of a session, over its catalog.
pub(crate) fn reg_udfs(catalog: &CatalogRef) -> Vec<Arc<ScalarUDF>> {
    [RegKind::Class, RegKind::Type]
        .into_iter()
        .map(|kind| {
            Arc::new(ScalarUDF::new_from_impl(RegCast {
                kind,
                catalog: catalog.clone(),
                signature: Signature::any(1, Volatility::Stable),
            }))
        })
        .collect()
}
