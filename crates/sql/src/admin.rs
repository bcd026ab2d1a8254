//! Statements sqlparser does not parse, recognised before parsing: Flotilla's own
//! `ADMIN CANCEL DDL JOB n [, m ...]` and `ADMIN CHECK TABLE name`, and PostgreSQL's
//! `ALTER SEQUENCE` (see `alter_sequence`) and `SET CONSTRAINTS` (see `deferred`).

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
    /// SET CONSTRAINTS.
    SetConstraints(crate::deferred::SetConstraints),
}

/// The ADMIN statement `sql` is, if it starts with ADMIN.
pub(crate) fn parse(sql: &str) -> Option<Result<Admin, SqlError>> {
    if let Some(alter) = crate::alter_sequence::parse(sql) {
        return Some(alter.map(Admin::AlterSequence));
    }
    if let Some(set) = crate::deferred::parse(sql) {
        return Some(set.map(Admin::SetConstraints));
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
        Admin::SetConstraints(set) => session.set_constraints(set).await,
    }
}

/// Calls `visit` with every (key, value) of `[start, end)`, read in chunks.
async fn for_each_row(
    view: &flotilla_txn::TxnView,
    start: &[u8],
    end: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), SqlError>,
) -> Result<(), SqlError> {
    let mut cursor = start.to_vec();
    loop {
        let chunk = view.scan(&cursor, end, CHECK_CHUNK_ROWS).await?;
        let Some((last, _)) = chunk.last() else {
            return Ok(());
        };
        let mut next = last.clone();
        next.push(0);
        for (key, value) in &chunk {
            visit(key, value)?;
        }
        cursor = next;
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
    let prefix = record_prefix(table.storage_id);
    let rows_end = prefix_end(&prefix);
    let slice_bytes_max = session.engine.config.check_table_slice_bytes;
    let mut rows = 0i64;
    for_each_row(&view, &prefix, &rows_end, |_, _| {
        rows += 1;
        Ok(())
    })
    .await?;
    let mut problems = Vec::new();
    let mut note = |problem: String| {
        if problems.len() < CHECK_DIFFERENCES_SHOWN {
            problems.push(problem);
        }
    };
    let mut summary = Vec::new();
    for index in &indexes {
        // The index is compared a slice at a time: its entries in [lo, hi), at most about
        // `check_table_slice_bytes` of them in memory, against the entries every row
        // implies in that range. Slices cover the index's whole key range, so an entry a
        // row implies falls in exactly one.
        let index_start = index_prefix(table.storage_id, index.id);
        let index_end = prefix_end(&index_start);
        let mut lo = index_start.clone();
        let (mut entries, mut missing, mut dangling, mut wrong) = (0i64, 0i64, 0i64, 0i64);
        loop {
            // This slice's entries: key -> (value, implied by a row).
            let mut slice: BTreeMap<Vec<u8>, (Vec<u8>, bool)> = BTreeMap::new();
            let mut slice_bytes = 0usize;
            let mut cursor = lo.clone();
            let mut hi = index_end.clone();
            'load: loop {
                let chunk = view.scan(&cursor, &index_end, CHECK_CHUNK_ROWS).await?;
                if chunk.is_empty() {
                    break;
                }
                for (key, value) in chunk {
                    slice_bytes += key.len() + value.len();
                    cursor = key.clone();
                    cursor.push(0);
                    slice.insert(key, (value, false));
                    if slice_bytes >= slice_bytes_max {
                        hi = cursor.clone();
                        break 'load;
                    }
                }
            }
            entries += slice.len() as i64;
            for_each_row(&view, &prefix, &rows_end, |key, value| {
                let row = decode_row_value(&table, value)?;
                let handle = handle_of_key(&table, key)?;
                let Some((k, v, _)) = index_entry(&table, index, &row, handle) else {
                    return Ok(());
                };
                if k < lo || k >= hi {
                    return Ok(());
                }
                match slice.get_mut(&k) {
                    Some((found, implied)) if !*implied => {
                        *implied = true;
                        if *found != v {
                            wrong += 1;
                            note(format!(
                                "index {}: an entry points at the wrong row",
                                index.name
                            ));
                        }
                    }
                    // Two rows implying one entry: a unique index holding a duplicate.
                    Some(_) => {
                        wrong += 1;
                        note(format!("index {}: two rows imply one entry", index.name));
                    }
                    None => {
                        missing += 1;
                        note(format!("index {}: a row has no entry", index.name));
                    }
                }
                Ok(())
            })
            .await?;
            for _ in slice.values().filter(|(_, implied)| !implied) {
                dangling += 1;
                note(format!("index {}: an entry has no row", index.name));
            }
            if hi == index_end {
                break;
            }
            lo = hi;
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
