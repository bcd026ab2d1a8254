//! A read-only `pg_catalog` schema computed from the catalog snapshot, for the
//! introspection queries drivers and ORMs send (SQLAlchemy's `has_table`, for one):
//! `pg_namespace`, `pg_class`, `pg_attribute` and `pg_type`, with PostgreSQL's column
//! names and a subset of its columns. OIDs are `bigint` here (PostgreSQL's `oid` is an
//! unsigned 32-bit type): a table's is its id, a sequence's its id, an index's its table's
//! id times 65,536 plus its own. Everything lives in the one schema `public` (OID 2200).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::Array;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int16Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use flotilla_catalog::{CatalogRef, CatalogSnapshot, Identity, SqlType};

use crate::error::SqlError;

const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
/// The bootstrap superuser's OID, owner of everything.
const OWNER_OID: i64 = 10;

/// The tables of the schema; also found unqualified, as PostgreSQL searches `pg_catalog`
/// first (a user table of the same name wins here).
pub(crate) const TABLES: [&str; 4] = ["pg_namespace", "pg_class", "pg_attribute", "pg_type"];

/// Every type name `regtype` knows, with its OID.
const TYPE_NAMES: [(&str, i64); 22] = [
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
        SqlType::Timestamp => (1114, "timestamp"),
        SqlType::TimestampTz => (1184, "timestamptz"),
    }
}

/// PostgreSQL's name of a column type (`udt_name` in `information_schema.columns`).
pub(crate) fn pg_type_name(ty: &SqlType) -> &'static str {
    pg_type(ty).1
}

/// The OID of index `index_id` of table `table_id`.
fn index_oid(table_id: i64, index_id: i64) -> i64 {
    (table_id << 16) + index_id
}

/// The values of one column of a catalog table.
pub(crate) enum Column {
    Int(Vec<i64>),
    OptInt(Vec<Option<i64>>),
    Small(Vec<i16>),
    Text(Vec<String>),
    OptText(Vec<Option<String>>),
    Bool(Vec<bool>),
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
            // No array types here (0, as for a type without one).
            ("typarray", Column::Int(vec![0; n])),
            ("typdelim", Column::Text(vec![",".into(); n])),
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
