//! Statements sqlparser does not parse, recognised before parsing: Flotilla's own
//! `ADMIN CANCEL DDL JOB n [, m ...]` and `ADMIN CHECK TABLE name`, and PostgreSQL's
//! `ALTER SEQUENCE` (see `alter_sequence`).

use std::collections::BTreeMap;

use flotilla_codec::{index_prefix, prefix_end, record_prefix};

use crate::api::QueryResult;
use crate::error::SqlError;
use crate::rows::{decode_row_value, handle_of_key, index_entry};
use crate::session::Session;

/// Rows (and index entries) read per request while checking a table.
const CHECK_CHUNK_ROWS: usize = 1024;
/// Differences an index mismatch lists in its error.
const CHECK_DIFFERENCES_SHOWN: usize = 10;

/// An ADMIN statement.
pub(crate) enum Admin {
    /// ADMIN CANCEL DDL JOB ids.
    CancelJobs(Vec<u64>),
    /// ADMIN CHECK TABLE name.
    CheckTable(String),
    /// ALTER SEQUENCE.
    AlterSequence(crate::alter_sequence::AlterSequence),
}

/// The ADMIN statement `sql` is, if it starts with ADMIN.
pub(crate) fn parse(sql: &str) -> Option<Result<Admin, SqlError>> {
    if let Some(alter) = crate::alter_sequence::parse(sql) {
        return Some(alter.map(Admin::AlterSequence));
    }
    let text = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.first()?.eq_ignore_ascii_case("admin") {
        return None;
    }
    let is = |i: usize, w: &str| words.get(i).is_some_and(|x| x.eq_ignore_ascii_case(w));
    if is(1, "cancel") && is(2, "ddl") && (is(3, "job") || is(3, "jobs")) {
        let ids = words[4..].join("");
        let parsed: Result<Vec<u64>, _> = ids.split(',').map(|s| s.trim().parse()).collect();
        return Some(match parsed {
            Ok(ids) if !ids.is_empty() => Ok(Admin::CancelJobs(ids)),
            _ => Err(SqlError::new(
                "42601",
                format!("syntax error: ADMIN CANCEL DDL JOB expects job ids, got \"{ids}\""),
            )
            .with_hint("Write ADMIN CANCEL DDL JOB 12, or several ids separated by commas.")),
        });
    }
    if is(1, "check") && is(2, "table") && words.len() == 4 {
        let name = words[3];
        let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(quoted) => quoted.to_string(),
            None => name.to_ascii_lowercase(),
        };
        return Some(Ok(Admin::CheckTable(name)));
    }
    Some(Err(SqlError::new(
        "42601",
        format!("syntax error: unknown ADMIN statement \"{text}\""),
    )
    .with_hint(
        "Flotilla has ADMIN CANCEL DDL JOB n and ADMIN CHECK TABLE name.",
    )))
}

/// Runs an ADMIN statement.
pub(crate) async fn execute(session: &mut Session, admin: Admin) -> Result<QueryResult, SqlError> {
    session.engine.check_schema_lease().await?;
    match admin {
        Admin::CancelJobs(ids) => crate::ddl::cancel_jobs(session, &ids).await,
        Admin::CheckTable(name) => check_table(session, &name).await,
        Admin::AlterSequence(alter) => crate::alter_sequence::execute(session, alter).await,
    }
}

/// ADMIN CHECK TABLE: reads the table and every public index at one timestamp and
/// compares each index with the entries its rows imply: an entry missing, an entry with
/// no row (dangling), an entry pointing at the wrong row. Succeeds with one row per index
/// or fails with SQLSTATE XX001 naming the differences.
async fn check_table(session: &Session, name: &str) -> Result<QueryResult, SqlError> {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    let snapshot = session.engine.catalog.snapshot();
    let table = snapshot
        .table(name)
        .ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" does not exist")))?
        .clone();
    let (txn, read_ts, _pin) = session.read_snapshot().await?;
    let view = txn.view(read_ts);
    let indexes: Vec<_> = table
        .stored_indexes()
        .filter(|i| i.state == flotilla_catalog::IndexState::Public)
        .cloned()
        .collect();
    // Expected entries of every index, from the rows.
    let mut expected: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = vec![BTreeMap::new(); indexes.len()];
    let mut rows = 0i64;
    let prefix = record_prefix(table.storage_id);
    let end = prefix_end(&prefix);
    let mut cursor = prefix.clone();
    loop {
        let chunk = view.scan(&cursor, &end, CHECK_CHUNK_ROWS).await?;
        let Some((last, _)) = chunk.last() else { break };
        let mut next = last.clone();
        next.push(0);
        for (key, value) in &chunk {
            let row = decode_row_value(&table, value)?;
            let handle = handle_of_key(&table, key)?;
            for (i, index) in indexes.iter().enumerate() {
                let (k, v, _) = index_entry(&table, index, &row, handle);
                expected[i].insert(k, v);
            }
            rows += 1;
        }
        cursor = next;
    }
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    for (index, mut want) in indexes.iter().zip(expected) {
        let prefix = index_prefix(table.storage_id, index.id);
        let end = prefix_end(&prefix);
        let mut cursor = prefix.clone();
        let mut entries = 0i64;
        let (mut missing, mut dangling, mut wrong) = (0i64, 0i64, 0i64);
        loop {
            let chunk = view.scan(&cursor, &end, CHECK_CHUNK_ROWS).await?;
            let Some((last, _)) = chunk.last() else { break };
            let mut next = last.clone();
            next.push(0);
            for (key, value) in chunk {
                entries += 1;
                match want.remove(&key) {
                    Some(v) if v == value => {}
                    Some(_) => {
                        wrong += 1;
                        problems.push(format!(
                            "index {}: an entry points at the wrong row",
                            index.name
                        ));
                    }
                    None => {
                        dangling += 1;
                        problems.push(format!("index {}: an entry has no row", index.name));
                    }
                }
            }
            cursor = next;
        }
        missing += want.len() as i64;
        for _ in want.keys().take(CHECK_DIFFERENCES_SHOWN) {
            problems.push(format!("index {}: a row has no entry", index.name));
        }
        let status = if missing + dangling + wrong == 0 {
            "ok"
        } else {
            "MISMATCH"
        };
        summary.push((
            index.name.clone(),
            entries,
            missing,
            dangling + wrong,
            status,
        ));
    }
    txn.rollback().await?;
    if !problems.is_empty() {
        let counts: Vec<String> = summary
            .iter()
            .filter(|s| s.4 != "ok")
            .map(|(n, e, m, d, _)| {
                format!("{n}: {rows} rows, {e} entries, {m} missing, {d} dangling or wrong")
            })
            .collect();
        problems.truncate(CHECK_DIFFERENCES_SHOWN);
        return Err(SqlError::new(
            "XX001",
            format!(
                "table \"{}\" and its indexes differ ({}); first differences: {}",
                table.name,
                counts.join("; "),
                problems.join("; ")
            ),
        ));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("index", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("entries", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            summary.iter().map(|s| s.0.clone()),
        )),
        Arc::new(Int64Array::from_iter_values(summary.iter().map(|_| rows))),
        Arc::new(Int64Array::from_iter_values(summary.iter().map(|s| s.1))),
        Arc::new(StringArray::from_iter_values(summary.iter().map(|s| s.4))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| SqlError::internal(e.to_string()))?;
    Ok(QueryResult::Rows {
        schema,
        batches: vec![batch],
        tag: format!("SELECT {}", summary.len()),
    })
}
