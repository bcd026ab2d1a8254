//! Answers to the catalog queries that `psql` sends for its describe commands (`\d`,
//! `\dt`, `\di`, `\d NAME`, `\l`, `\dn`), computed from the live catalog.
//!
//! Flotilla has no `pg_catalog` schema; these queries are recognised by the shape psql 15
//! gives them and answered directly. Queries about features Flotilla lacks (policies,
//! extended statistics, publications, inheritance) get empty results of the right shape.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use flotilla_catalog::{CatalogSnapshot, Identity, IndexState, TableDef};

use crate::api::QueryResult;
use crate::pg_catalog::{check_def, foreign_key_def, index_def, shown_default};

enum Col {
    Text(Vec<Option<String>>),
    Bool(Vec<bool>),
    Int(Vec<i64>),
}

fn result(columns: Vec<(&str, Col)>) -> QueryResult {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, c)| {
            let t = match c {
                Col::Text(_) => DataType::Utf8,
                Col::Bool(_) => DataType::Boolean,
                Col::Int(_) => DataType::Int64,
            };
            Field::new(*name, t, true)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|(_, c)| match c {
            Col::Text(v) => Arc::new(StringArray::from(v)) as ArrayRef,
            Col::Bool(v) => Arc::new(BooleanArray::from(v)) as ArrayRef,
            Col::Int(v) => Arc::new(Int64Array::from(v)) as ArrayRef,
        })
        .collect();
    let n = arrays.first().map(|a| a.len()).unwrap_or(0);
    let batch = RecordBatch::try_new(schema.clone(), arrays).expect("columns of equal length");
    QueryResult::Rows {
        schema,
        batches: if n == 0 { vec![] } else { vec![batch] },
        tag: format!("SELECT {n}"),
    }
}

fn texts<'a>(v: impl IntoIterator<Item = &'a str>) -> Col {
    Col::Text(v.into_iter().map(|s| Some(s.to_string())).collect())
}

/// The regular expression in `relname OPERATOR(pg_catalog.~) '<re>'`, if any.
fn name_pattern(sql: &str) -> Option<regex::Regex> {
    let at = sql.find("OPERATOR(pg_catalog.~) '")? + "OPERATOR(pg_catalog.~) '".len();
    let end = sql[at..].find('\'')? + at;
    regex::Regex::new(&sql[at..end]).ok()
}

/// The quoted OID in `<column> = '<oid>'`.
fn quoted_oid(sql: &str, column: &str) -> Option<i64> {
    let at = sql.find(&format!("{column} = '"))? + column.len() + 4;
    let end = sql[at..].find('\'')? + at;
    sql[at..end].parse().ok()
}

fn table_by_oid(snapshot: &CatalogSnapshot, oid: i64) -> Option<&Arc<TableDef>> {
    snapshot.tables.values().find(|t| t.id == oid)
}

/// The answer to `sql` if it is one of psql's catalog queries.
pub(crate) fn answer(sql: &str, snapshot: &CatalogSnapshot) -> Option<QueryResult> {
    // The shapes below are matched as text: only a SELECT that names pg_catalog (not a
    // statement that merely holds their text in a literal or a comment) is one of them.
    if !sql.contains("pg_catalog.") || !crate::split::is_catalog_select(sql) {
        return None;
    }
    if sql.contains("pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\"") {
        return Some(list_relations(sql, snapshot));
    }
    if sql.contains("FROM pg_catalog.pg_database d") {
        return Some(result(vec![
            ("Name", texts(["postgres"])),
            ("Owner", texts(["postgres"])),
            ("Encoding", texts(["UTF8"])),
            ("Collate", texts(["C"])),
            ("Ctype", texts(["C"])),
            ("ICU Locale", Col::Text(vec![None])),
            ("Locale Provider", texts(["libc"])),
            ("Access privileges", Col::Text(vec![None])),
        ]));
    }
    if sql.contains("FROM pg_catalog.pg_namespace n\nWHERE n.nspname !~ '^pg_'") {
        return Some(result(vec![
            ("Name", texts(["public"])),
            ("Owner", texts(["postgres"])),
        ]));
    }
    if sql.starts_with("SELECT c.oid,\n  n.nspname,\n  c.relname\nFROM pg_catalog.pg_class c") {
        let pattern = name_pattern(sql)?;
        let matches: Vec<&Arc<TableDef>> = snapshot
            .tables
            .values()
            .filter(|t| pattern.is_match(&t.name))
            .collect();
        return Some(result(vec![
            ("oid", Col::Int(matches.iter().map(|t| t.id).collect())),
            ("nspname", texts(matches.iter().map(|_| "public"))),
            ("relname", texts(matches.iter().map(|t| t.name.as_str()))),
        ]));
    }
    if sql.starts_with("SELECT c.relchecks, c.relkind, c.relhasindex") {
        let table = table_by_oid(snapshot, quoted_oid(sql, "c.oid")?)?;
        return Some(result(vec![
            ("relchecks", Col::Int(vec![table.checks.len() as i64])),
            ("relkind", texts(["r"])),
            ("relhasindex", Col::Bool(vec![!table.indexes.is_empty()])),
            ("relhasrules", Col::Bool(vec![false])),
            // psql asks for foreign keys (and triggers) only of a table that has triggers,
            // as PostgreSQL implements foreign keys with them.
            (
                "relhastriggers",
                Col::Bool(vec![
                    !table.foreign_keys.is_empty() || !snapshot.references_to(table.id).is_empty(),
                ]),
            ),
            ("relrowsecurity", Col::Bool(vec![false])),
            ("relforcerowsecurity", Col::Bool(vec![false])),
            ("relhasoids", Col::Bool(vec![false])),
            ("relispartition", Col::Bool(vec![false])),
            ("?column?", texts([""])),
            ("reltablespace", Col::Int(vec![0])),
            ("reloftype", texts([""])),
            ("relpersistence", texts(["p"])),
            ("relreplident", texts(["d"])),
            ("amname", texts(["heap"])),
        ]));
    }
    if sql.contains("FROM pg_catalog.pg_attribute a\nWHERE a.attrelid = '") {
        let table = table_by_oid(snapshot, quoted_oid(sql, "a.attrelid")?)?;
        let cols = &table.columns;
        return Some(result(vec![
            ("attname", texts(cols.iter().map(|c| c.name.as_str()))),
            (
                "format_type",
                Col::Text(cols.iter().map(|c| Some(c.ty.pg_name())).collect()),
            ),
            (
                "pg_get_expr",
                Col::Text(cols.iter().map(shown_default).collect()),
            ),
            (
                "attnotnull",
                Col::Bool(cols.iter().map(|c| !c.nullable).collect()),
            ),
            (
                "attcollation",
                Col::Text(cols.iter().map(|_| None).collect()),
            ),
            (
                "attidentity",
                texts(
                    cols.iter()
                        .map(|c| match c.sequence.as_ref().and_then(|s| s.identity) {
                            Some(Identity::Always) => "a",
                            Some(Identity::ByDefault) => "d",
                            None => "",
                        }),
                ),
            ),
            ("attgenerated", texts(cols.iter().map(|_| ""))),
        ]));
    }
    if sql.contains("FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i") {
        let table = table_by_oid(snapshot, quoted_oid(sql, "c.oid")?)?;
        let mut indexes: Vec<_> = table.indexes.iter().collect();
        indexes.sort_by(|a, b| b.primary.cmp(&a.primary).then(a.name.cmp(&b.name)));
        let column_list = |ids: &[u32]| table.column_list(ids);
        return Some(result(vec![
            ("relname", texts(indexes.iter().map(|i| i.name.as_str()))),
            (
                "indisprimary",
                Col::Bool(indexes.iter().map(|i| i.primary).collect()),
            ),
            (
                "indisunique",
                Col::Bool(indexes.iter().map(|i| i.unique).collect()),
            ),
            (
                "indisclustered",
                Col::Bool(indexes.iter().map(|i| i.clustered).collect()),
            ),
            (
                "indisvalid",
                Col::Bool(
                    indexes
                        .iter()
                        .map(|i| i.state == IndexState::Public)
                        .collect(),
                ),
            ),
            (
                "pg_get_indexdef",
                Col::Text(
                    indexes
                        .iter()
                        .map(|i| Some(index_def(table, i, true)))
                        .collect(),
                ),
            ),
            (
                "pg_get_constraintdef",
                Col::Text(
                    indexes
                        .iter()
                        .map(|i| {
                            i.primary
                                .then(|| format!("PRIMARY KEY ({})", column_list(&i.columns)))
                        })
                        .collect(),
                ),
            ),
            (
                "contype",
                Col::Text(
                    indexes
                        .iter()
                        .map(|i| i.primary.then(|| "p".to_string()))
                        .collect(),
                ),
            ),
            (
                "condeferrable",
                Col::Bool(indexes.iter().map(|_| false).collect()),
            ),
            (
                "condeferred",
                Col::Bool(indexes.iter().map(|_| false).collect()),
            ),
            (
                "indisreplident",
                Col::Bool(indexes.iter().map(|_| false).collect()),
            ),
            (
                "reltablespace",
                Col::Int(indexes.iter().map(|_| 0).collect()),
            ),
        ]));
    }
    if sql.contains("FROM pg_catalog.pg_constraint r\nWHERE r.conrelid = '")
        && sql.contains("r.contype = 'c'")
    {
        // `\d TABLE`'s "Check constraints:" footer.
        let table = table_by_oid(snapshot, quoted_oid(sql, "r.conrelid")?)?;
        let mut checks: Vec<_> = table.checks.iter().collect();
        checks.sort_by(|a, b| a.name.cmp(&b.name));
        return Some(result(vec![
            ("conname", texts(checks.iter().map(|c| c.name.as_str()))),
            (
                "pg_get_constraintdef",
                Col::Text(checks.iter().map(|c| Some(check_def(c))).collect()),
            ),
        ]));
    }
    if sql.contains("FROM pg_catalog.pg_constraint r\nWHERE r.conrelid = '")
        && sql.contains("r.contype = 'f'")
    {
        // `\d TABLE`'s "Foreign-key constraints:" footer.
        let table = table_by_oid(snapshot, quoted_oid(sql, "r.conrelid")?)?;
        let mut fks: Vec<_> = table.foreign_keys.iter().collect();
        fks.sort_by(|a, b| a.name.cmp(&b.name));
        return Some(result(vec![
            ("sametable", Col::Bool(fks.iter().map(|_| true).collect())),
            ("conname", texts(fks.iter().map(|f| f.name.as_str()))),
            (
                "condef",
                Col::Text(
                    fks.iter()
                        .map(|f| Some(foreign_key_def(snapshot, table, f)))
                        .collect(),
                ),
            ),
            ("ontable", texts(fks.iter().map(|_| table.name.as_str()))),
        ]));
    }
    if sql.contains("FROM pg_catalog.pg_constraint c\n WHERE confrelid IN")
        && sql.contains("contype = 'f'")
    {
        // `\d TABLE`'s "Referenced by:" footer.
        let at = sql.find("VALUES ('")? + "VALUES ('".len();
        let end = sql[at..].find('\'')? + at;
        let oid = sql[at..end].parse().ok()?;
        let table = table_by_oid(snapshot, oid)?;
        let mut refs: Vec<(&TableDef, &flotilla_catalog::ForeignKeyDef)> = table
            .foreign_keys
            .iter()
            .filter(|f| f.ref_table == table.id)
            .map(|f| (table.as_ref(), f))
            .chain(
                snapshot
                    .references_to(table.id)
                    .into_iter()
                    .map(|(t, f)| (t.as_ref(), f)),
            )
            .collect();
        refs.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        return Some(result(vec![
            ("conname", texts(refs.iter().map(|(_, f)| f.name.as_str()))),
            ("ontable", texts(refs.iter().map(|(t, _)| t.name.as_str()))),
            (
                "condef",
                Col::Text(
                    refs.iter()
                        .map(|(t, f)| Some(foreign_key_def(snapshot, t, f)))
                        .collect(),
                ),
            ),
        ]));
    }
    let empty = |n: usize| result((0..n).map(|_| ("?column?", Col::Text(vec![]))).collect());
    if sql.contains("FROM pg_catalog.pg_trigger t") {
        // Flotilla has no triggers (psql asks because foreign keys are triggers in
        // PostgreSQL).
        return Some(empty(5));
    }
    if sql.contains("FROM pg_catalog.pg_policy pol") {
        return Some(empty(6));
    }
    if sql.contains("FROM pg_catalog.pg_statistic_ext") {
        return Some(empty(9));
    }
    if sql.contains("FROM pg_catalog.pg_publication p") {
        return Some(empty(3));
    }
    if sql.contains("pg_catalog.pg_inherits i") {
        return Some(empty(if sql.contains("inhdetachpending") {
            4
        } else {
            1
        }));
    }
    None
}

fn list_relations(sql: &str, snapshot: &CatalogSnapshot) -> QueryResult {
    let kinds_at = sql
        .find("c.relkind IN (")
        .map(|i| i + "c.relkind IN (".len());
    let kinds = kinds_at
        .and_then(|at| sql[at..].find(')').map(|end| &sql[at..at + end]))
        .unwrap_or("'r'");
    let want_tables = kinds.contains("'r'");
    let want_indexes = kinds.contains("'i'");
    let with_table_column = sql.contains("c2.relname as \"Table\"");
    let pattern = name_pattern(sql);
    let mut rows: Vec<(String, &'static str, String)> = Vec::new();
    for table in snapshot.tables.values() {
        if want_tables {
            rows.push((table.name.clone(), "table", table.name.clone()));
        }
        if want_indexes {
            for index in &table.indexes {
                rows.push((index.name.clone(), "index", table.name.clone()));
            }
        }
    }
    if let Some(p) = pattern {
        rows.retain(|(name, _, _)| p.is_match(name));
    }
    rows.sort();
    let mut columns = vec![
        ("Schema", texts(rows.iter().map(|_| "public"))),
        ("Name", texts(rows.iter().map(|r| r.0.as_str()))),
        ("Type", texts(rows.iter().map(|r| r.1))),
        ("Owner", texts(rows.iter().map(|_| "postgres"))),
    ];
    if with_table_column {
        columns.push(("Table", texts(rows.iter().map(|r| r.2.as_str()))));
    }
    result(columns)
}
