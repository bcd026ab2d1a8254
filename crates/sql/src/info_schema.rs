//! A read-only `information_schema` computed from the catalog snapshot, for the
//! introspection queries of tools and ORMs (schema browsers, migration tools, Django's and
//! Rails' table listings): `schemata`, `tables`, `columns`, `views`, `sequences`,
//! `table_constraints`, `key_column_usage`, `constraint_column_usage` and
//! `referential_constraints`, with the SQL standard's column names and
//! PostgreSQL's values for them. Only user relations are listed (schema `public`); the
//! columns are `text` and `bigint` where PostgreSQL has its own domains over them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;
use flotilla_catalog::{CatalogSnapshot, ColumnDef, Identity, IndexState, SqlType, TableDef};

use crate::pg_catalog::{Column, table};

/// The tables of the schema.
pub(crate) const TABLES: [&str; 9] = [
    "schemata",
    "tables",
    "columns",
    "views",
    "sequences",
    "table_constraints",
    "key_column_usage",
    "constraint_column_usage",
    "referential_constraints",
];

/// The schema every user relation is in.
pub(crate) const SCHEMA: &str = "public";

/// The `information_schema` of one statement, over its catalog snapshot, for a client
/// connected to `database` (each row's catalog).
#[derive(Debug)]
pub(crate) struct InformationSchema {
    pub(crate) snapshot: Arc<CatalogSnapshot>,
    pub(crate) database: String,
}

/// The standard's name of a column type, as PostgreSQL reports it in `data_type`.
fn data_type(ty: &SqlType) -> &'static str {
    match ty {
        SqlType::Bool => "boolean",
        SqlType::Int16 => "smallint",
        SqlType::Int32 => "integer",
        SqlType::Int64 => "bigint",
        SqlType::Float32 => "real",
        SqlType::Float64 => "double precision",
        SqlType::Numeric { .. } => "numeric",
        SqlType::Text => "text",
        SqlType::Varchar(_) => "character varying",
        SqlType::Char(_) => "character",
        SqlType::Bytea => "bytea",
        SqlType::Uuid => "uuid",
        SqlType::Json => "json",
        SqlType::Jsonb => "jsonb",
        SqlType::Date => "date",
        SqlType::Time => "time without time zone",
        SqlType::Timestamp => "timestamp without time zone",
        SqlType::Interval => "interval",
        SqlType::TimestampTz => "timestamp with time zone",
        SqlType::Array(_) => "ARRAY",
    }
}

/// `numeric_precision`, `numeric_precision_radix` and `numeric_scale` of a column type.
fn numeric_shape(ty: &SqlType) -> (Option<i64>, Option<i64>, Option<i64>) {
    match ty {
        SqlType::Int16 => (Some(16), Some(2), Some(0)),
        SqlType::Int32 => (Some(32), Some(2), Some(0)),
        SqlType::Int64 => (Some(64), Some(2), Some(0)),
        SqlType::Float32 => (Some(24), Some(2), None),
        SqlType::Float64 => (Some(53), Some(2), None),
        SqlType::Numeric { precision, scale } => (
            Some(i64::from(*precision)),
            Some(10),
            Some(i64::from(*scale)),
        ),
        _ => (None, None, None),
    }
}

/// `character_maximum_length` of a column type.
fn character_length(ty: &SqlType) -> Option<i64> {
    match ty {
        SqlType::Varchar(n) => n.map(i64::from),
        SqlType::Char(n) => Some(i64::from(*n)),
        _ => None,
    }
}

fn yes_no(b: bool) -> String {
    if b { "YES" } else { "NO" }.to_string()
}

/// The tables, in name order (the snapshot's), so listings are stable.
fn tables_by_name(snapshot: &CatalogSnapshot) -> impl Iterator<Item = &Arc<TableDef>> {
    snapshot.tables.values()
}

/// A table's column of id `id`.
fn column_named(table: &TableDef, id: flotilla_types::ColumnId) -> Option<&ColumnDef> {
    table.columns.iter().find(|c| c.id == id)
}

impl InformationSchema {
    fn texts(&self, n: usize, value: &str) -> Column {
        Column::Text(vec![value.to_string(); n])
    }

    fn schemata(&self) -> DfResult<Arc<dyn TableProvider>> {
        let names = ["information_schema", "pg_catalog", SCHEMA];
        table(vec![
            ("catalog_name", self.texts(names.len(), &self.database)),
            (
                "schema_name",
                Column::Text(names.iter().map(|s| s.to_string()).collect()),
            ),
            ("schema_owner", self.texts(names.len(), "postgres")),
        ])
    }

    fn tables(&self) -> DfResult<Arc<dyn TableProvider>> {
        // (name, type, insertable)
        let mut rows: Vec<(String, &str, bool)> = tables_by_name(&self.snapshot)
            .map(|t| (t.name.clone(), "BASE TABLE", true))
            .collect();
        rows.extend(
            self.snapshot
                .views
                .values()
                .map(|v| (v.name.clone(), "VIEW", false)),
        );
        let n = rows.len();
        table(vec![
            ("table_catalog", self.texts(n, &self.database)),
            ("table_schema", self.texts(n, SCHEMA)),
            (
                "table_name",
                Column::Text(rows.iter().map(|r| r.0.clone()).collect()),
            ),
            (
                "table_type",
                Column::Text(rows.iter().map(|r| r.1.to_string()).collect()),
            ),
            (
                "is_insertable_into",
                Column::Text(rows.iter().map(|r| yes_no(r.2)).collect()),
            ),
            ("is_typed", self.texts(n, "NO")),
        ])
    }

    fn columns(&self) -> DfResult<Arc<dyn TableProvider>> {
        let mut t_name = Vec::new();
        let mut c_name = Vec::new();
        let mut position = Vec::new();
        let mut default = Vec::new();
        let mut nullable = Vec::new();
        let mut d_type = Vec::new();
        let mut length = Vec::new();
        let (mut precision, mut radix, mut scale) = (Vec::new(), Vec::new(), Vec::new());
        let mut udt = Vec::new();
        let (mut identity, mut generation) = (Vec::new(), Vec::new());
        for t in tables_by_name(&self.snapshot) {
            for (pos, c) in t.columns.iter().enumerate() {
                t_name.push(t.name.clone());
                c_name.push(c.name.clone());
                position.push(i64::try_from(pos + 1).unwrap_or(i64::MAX));
                let identity_of = c.sequence.as_ref().and_then(|s| s.identity);
                // An identity column shows no default, as in PostgreSQL.
                default.push(c.default.clone().filter(|_| identity_of.is_none()));
                nullable.push(yes_no(c.nullable));
                d_type.push(data_type(&c.ty).to_string());
                length.push(character_length(&c.ty));
                let (p, r, s) = numeric_shape(&c.ty);
                precision.push(p);
                radix.push(r);
                scale.push(s);
                udt.push(crate::pg_catalog::pg_type_name(&c.ty).to_string());
                identity.push(yes_no(identity_of.is_some()));
                generation.push(identity_of.map(|i| {
                    match i {
                        Identity::Always => "ALWAYS",
                        Identity::ByDefault => "BY DEFAULT",
                    }
                    .to_string()
                }));
            }
        }
        let n = t_name.len();
        table(vec![
            ("table_catalog", self.texts(n, &self.database)),
            ("table_schema", self.texts(n, SCHEMA)),
            ("table_name", Column::Text(t_name)),
            ("column_name", Column::Text(c_name)),
            ("ordinal_position", Column::Int(position)),
            ("column_default", Column::OptText(default)),
            ("is_nullable", Column::Text(nullable)),
            ("data_type", Column::Text(d_type)),
            ("character_maximum_length", Column::OptInt(length)),
            ("numeric_precision", Column::OptInt(precision)),
            ("numeric_precision_radix", Column::OptInt(radix)),
            ("numeric_scale", Column::OptInt(scale)),
            ("udt_catalog", self.texts(n, &self.database)),
            ("udt_schema", self.texts(n, "pg_catalog")),
            ("udt_name", Column::Text(udt)),
            ("is_identity", Column::Text(identity)),
            ("identity_generation", Column::OptText(generation)),
            ("is_generated", self.texts(n, "NEVER")),
            ("is_updatable", self.texts(n, "YES")),
        ])
    }

    fn views(&self) -> DfResult<Arc<dyn TableProvider>> {
        let views: Vec<_> = self.snapshot.views.values().collect();
        let n = views.len();
        table(vec![
            ("table_catalog", self.texts(n, &self.database)),
            ("table_schema", self.texts(n, SCHEMA)),
            (
                "table_name",
                Column::Text(views.iter().map(|v| v.name.clone()).collect()),
            ),
            (
                "view_definition",
                Column::Text(views.iter().map(|v| v.query.clone()).collect()),
            ),
            ("check_option", self.texts(n, "NONE")),
            ("is_updatable", self.texts(n, "NO")),
            ("is_insertable_into", self.texts(n, "NO")),
        ])
    }

    fn sequences(&self) -> DfResult<Arc<dyn TableProvider>> {
        let mut sequences: Vec<&flotilla_catalog::SequenceDef> = self
            .snapshot
            .sequences
            .values()
            .map(|s| s.as_ref())
            .collect();
        for t in self.snapshot.tables.values() {
            sequences.extend(t.columns.iter().filter_map(|c| c.sequence.as_ref()));
        }
        sequences.sort_by(|a, b| a.name.cmp(&b.name));
        let n = sequences.len();
        let numbers = |f: fn(&flotilla_catalog::SequenceDef) -> i64| {
            Column::Text(sequences.iter().map(|s| f(s).to_string()).collect())
        };
        table(vec![
            ("sequence_catalog", self.texts(n, &self.database)),
            ("sequence_schema", self.texts(n, SCHEMA)),
            (
                "sequence_name",
                Column::Text(sequences.iter().map(|s| s.name.clone()).collect()),
            ),
            ("data_type", self.texts(n, "bigint")),
            ("numeric_precision", Column::Int(vec![64; n])),
            ("numeric_precision_radix", Column::Int(vec![2; n])),
            ("numeric_scale", Column::Int(vec![0; n])),
            ("start_value", numbers(|s| s.start)),
            ("minimum_value", numbers(|s| s.min)),
            ("maximum_value", numbers(|s| s.max)),
            ("increment", numbers(|s| s.increment)),
            ("cycle_option", self.texts(n, "NO")),
        ])
    }

    /// Every constraint of every table, tables by name.
    fn constraints(&self) -> Vec<Constraint<'_>> {
        let mut out = Vec::new();
        for t in tables_by_name(&self.snapshot) {
            let names = |ids: &[flotilla_types::ColumnId], of: &TableDef| -> Vec<String> {
                ids.iter()
                    .filter_map(|id| column_named(of, *id).map(|c| c.name.clone()))
                    .collect()
            };
            for index in &t.indexes {
                if index.state != IndexState::Public || !index.is_unique_constraint() {
                    continue;
                }
                let kind = if index.primary {
                    "PRIMARY KEY"
                } else {
                    "UNIQUE"
                };
                let columns = names(&index.columns, t);
                out.push(Constraint {
                    table: t.as_ref(),
                    name: index.name.clone(),
                    kind,
                    used: (t.as_ref(), columns.clone()),
                    columns,
                    reference: None,
                });
            }
            for check in &t.checks {
                out.push(Constraint {
                    table: t.as_ref(),
                    name: check.name.clone(),
                    kind: "CHECK",
                    columns: Vec::new(),
                    used: (t.as_ref(), names(&check.columns, t)),
                    reference: None,
                });
            }
            for fk in &t.foreign_keys {
                let Some(parent) = self.snapshot.referenced_table(t, fk) else {
                    continue;
                };
                let Some(index) = parent.indexes.iter().find(|i| i.id == fk.ref_index) else {
                    continue;
                };
                // Each referencing column's place in the referenced unique constraint.
                let positions = fk
                    .ref_columns
                    .iter()
                    .map(|c| {
                        index
                            .columns
                            .iter()
                            .position(|i| i == c)
                            .map(|p| i64::try_from(p + 1).unwrap_or(i64::MAX))
                    })
                    .collect();
                out.push(Constraint {
                    table: t.as_ref(),
                    name: fk.name.clone(),
                    kind: "FOREIGN KEY",
                    columns: names(&fk.columns, t),
                    used: (parent, names(&fk.ref_columns, parent)),
                    reference: Some(Reference {
                        unique: index.name.clone(),
                        positions,
                        deferrable: fk.deferrable,
                        initially_deferred: fk.initially_deferred,
                        update_rule: fk.on_update.sql(),
                        delete_rule: fk.on_delete.sql(),
                    }),
                });
            }
        }
        out
    }

    fn table_constraints(&self) -> DfResult<Arc<dyn TableProvider>> {
        let constraints = self.constraints();
        let n = constraints.len();
        table(vec![
            ("constraint_catalog", self.texts(n, &self.database)),
            ("constraint_schema", self.texts(n, SCHEMA)),
            (
                "constraint_name",
                Column::Text(constraints.iter().map(|c| c.name.clone()).collect()),
            ),
            ("table_catalog", self.texts(n, &self.database)),
            ("table_schema", self.texts(n, SCHEMA)),
            (
                "table_name",
                Column::Text(constraints.iter().map(|c| c.table.name.clone()).collect()),
            ),
            (
                "constraint_type",
                Column::Text(constraints.iter().map(|c| c.kind.to_string()).collect()),
            ),
            (
                "is_deferrable",
                Column::Text(
                    constraints
                        .iter()
                        .map(|c| yes_no(c.reference.as_ref().is_some_and(|r| r.deferrable)))
                        .collect(),
                ),
            ),
            (
                "initially_deferred",
                Column::Text(
                    constraints
                        .iter()
                        .map(|c| yes_no(c.reference.as_ref().is_some_and(|r| r.initially_deferred)))
                        .collect(),
                ),
            ),
            ("enforced", self.texts(n, "YES")),
        ])
    }

    fn key_column_usage(&self) -> DfResult<Arc<dyn TableProvider>> {
        let (mut constraint, mut t_name, mut c_name, mut position, mut in_unique) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for c in self.constraints() {
            for (i, column) in c.columns.into_iter().enumerate() {
                constraint.push(c.name.clone());
                t_name.push(c.table.name.clone());
                c_name.push(column);
                position.push(i64::try_from(i + 1).unwrap_or(i64::MAX));
                in_unique.push(c.reference.as_ref().and_then(|r| r.positions[i]));
            }
        }
        let n = constraint.len();
        table(vec![
            ("constraint_catalog", self.texts(n, &self.database)),
            ("constraint_schema", self.texts(n, SCHEMA)),
            ("constraint_name", Column::Text(constraint)),
            ("table_catalog", self.texts(n, &self.database)),
            ("table_schema", self.texts(n, SCHEMA)),
            ("table_name", Column::Text(t_name)),
            ("column_name", Column::Text(c_name)),
            ("ordinal_position", Column::Int(position)),
            ("position_in_unique_constraint", Column::OptInt(in_unique)),
        ])
    }

    /// The columns each constraint uses: its own, or for a foreign key the referenced
    /// table's (as PostgreSQL lists them).
    fn constraint_column_usage(&self) -> DfResult<Arc<dyn TableProvider>> {
        let (mut t_name, mut c_name, mut constraint) = (Vec::new(), Vec::new(), Vec::new());
        for c in self.constraints() {
            let (used, columns) = c.used;
            for column in columns {
                t_name.push(used.name.clone());
                c_name.push(column);
                constraint.push(c.name.clone());
            }
        }
        let n = constraint.len();
        table(vec![
            ("table_catalog", self.texts(n, &self.database)),
            ("table_schema", self.texts(n, SCHEMA)),
            ("table_name", Column::Text(t_name)),
            ("column_name", Column::Text(c_name)),
            ("constraint_catalog", self.texts(n, &self.database)),
            ("constraint_schema", self.texts(n, SCHEMA)),
            ("constraint_name", Column::Text(constraint)),
        ])
    }

    /// A row per foreign key: the unique constraint it references and its rules (Flotilla's
    /// are MATCH SIMPLE, reported as `NONE`).
    fn referential_constraints(&self) -> DfResult<Arc<dyn TableProvider>> {
        let (mut name, mut unique) = (Vec::new(), Vec::new());
        let (mut update_rule, mut delete_rule) = (Vec::new(), Vec::new());
        for c in self.constraints() {
            if let Some(r) = c.reference {
                name.push(c.name);
                unique.push(r.unique);
                update_rule.push(r.update_rule.to_string());
                delete_rule.push(r.delete_rule.to_string());
            }
        }
        let n = name.len();
        table(vec![
            ("constraint_catalog", self.texts(n, &self.database)),
            ("constraint_schema", self.texts(n, SCHEMA)),
            ("constraint_name", Column::Text(name)),
            ("unique_constraint_catalog", self.texts(n, &self.database)),
            ("unique_constraint_schema", self.texts(n, SCHEMA)),
            ("unique_constraint_name", Column::Text(unique)),
            ("match_option", self.texts(n, "NONE")),
            ("update_rule", Column::Text(update_rule)),
            ("delete_rule", Column::Text(delete_rule)),
        ])
    }
}

/// A constraint as `information_schema` lists it.
struct Constraint<'a> {
    table: &'a TableDef,
    name: String,
    /// `constraint_type`.
    kind: &'static str,
    /// Its key columns in order (none for a CHECK).
    columns: Vec<String>,
    /// The table and columns it uses (`constraint_column_usage`).
    used: (&'a TableDef, Vec<String>),
    /// For a foreign key, what it references.
    reference: Option<Reference>,
}

/// The referenced side of a foreign key.
struct Reference {
    /// The referenced unique constraint (index).
    unique: String,
    /// Each key column's 1-based position in it.
    positions: Vec<Option<i64>>,
    /// DEFERRABLE.
    deferrable: bool,
    /// INITIALLY DEFERRED.
    initially_deferred: bool,
    /// ON UPDATE, in SQL words.
    update_rule: &'static str,
    /// ON DELETE, in SQL words.
    delete_rule: &'static str,
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(Some(match name {
            "schemata" => self.schemata()?,
            "tables" => self.tables()?,
            "columns" => self.columns()?,
            "views" => self.views()?,
            "sequences" => self.sequences()?,
            "table_constraints" => self.table_constraints()?,
            "key_column_usage" => self.key_column_usage()?,
            "constraint_column_usage" => self.constraint_column_usage()?,
            "referential_constraints" => self.referential_constraints()?,
            _ => return Ok(None),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
