//! A read-only `pg_catalog` schema computed from the catalog snapshot, for the
//! introspection queries drivers and ORMs send (SQLAlchemy's `has_table`, for one):
//! `pg_namespace`, `pg_class`, `pg_attribute` and `pg_type`, with PostgreSQL's column
//! names and a subset of its columns. OIDs are `bigint` here (PostgreSQL's `oid` is an
//! unsigned 32-bit type): a table's is its id, a sequence's its id, an index's its table's
//! id times 65,536 plus its own. Everything lives in the one schema `public` (OID 2200).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int16Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use flotilla_catalog::{CatalogSnapshot, Identity, SqlType};

const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
/// The bootstrap superuser's OID, owner of everything.
const OWNER_OID: i64 = 10;

const TABLES: [&str; 4] = ["pg_namespace", "pg_class", "pg_attribute", "pg_type"];

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
        SqlType::Timestamp => (1114, "timestamp"),
        SqlType::TimestampTz => (1184, "timestamptz"),
    }
}

/// The OID of index `index_id` of table `table_id`.
fn index_oid(table_id: i64, index_id: i64) -> i64 {
    (table_id << 16) + index_id
}

enum Column {
    Int(Vec<i64>),
    Small(Vec<i16>),
    Text(Vec<String>),
    Bool(Vec<bool>),
}

fn table(columns: Vec<(&str, Column)>) -> DfResult<Arc<dyn TableProvider>> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, c)| {
            let ty = match c {
                Column::Int(_) => DataType::Int64,
                Column::Small(_) => DataType::Int16,
                Column::Text(_) => DataType::Utf8,
                Column::Bool(_) => DataType::Boolean,
            };
            Field::new(*name, ty, false)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|(_, c)| match c {
            Column::Int(v) => Arc::new(Int64Array::from(v)) as ArrayRef,
            Column::Small(v) => Arc::new(Int16Array::from(v)),
            Column::Text(v) => Arc::new(StringArray::from(v)),
            Column::Bool(v) => Arc::new(BooleanArray::from(v)),
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
            ("relhasindex", Column::Bool(rows.iter().map(|r| r.3).collect())),
            ("relpersistence", Column::Text(vec!["p".into(); n])),
            ("relispartition", Column::Bool(vec![false; n])),
            ("reltablespace", Column::Int(vec![0; n])),
        ])
    }

    fn pg_attribute(&self) -> DfResult<Arc<dyn TableProvider>> {
        let (mut relid, mut name, mut typid, mut num) = (vec![], vec![], vec![], vec![]);
        let (mut notnull, mut hasdef, mut identity) = (vec![], vec![], vec![]);
        for t in self.snapshot.tables.values() {
            for (pos, c) in t.columns.iter().enumerate() {
                relid.push(t.id);
                name.push(c.name.clone());
                typid.push(pg_type(&c.ty).0);
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
        ])
    }

    fn pg_type(&self) -> DfResult<Arc<dyn TableProvider>> {
        let types = [
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
            SqlType::Timestamp,
            SqlType::TimestampTz,
        ];
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
            _ => return Ok(None),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
