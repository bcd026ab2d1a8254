//! FOREIGN KEY constraints (MATCH SIMPLE, NO ACTION), checked as each statement writes,
//! as PostgreSQL checks a constraint that is not deferred:
//!
//! - **A row written** to the referencing table (INSERT, an UPDATE that changes its key
//!   columns, the insert of an upsert) whose key columns are all non-NULL must find its
//!   referenced row: the referenced key's entry (the unique index's, or the row itself
//!   for a primary key) is read and locked, checked against the statement's
//!   `for_update_ts` like any pessimistic lock, and the lock is recorded at commit. So a
//!   concurrent DELETE of the referenced row either waits for this transaction, or (if it
//!   committed first) makes this statement fail with a write conflict: READ COMMITTED
//!   re-runs it on a newer snapshot, where the key is gone (23503), and REPEATABLE READ
//!   fails with 40001, as PostgreSQL's does.
//! - **A row deleted** from the referenced table, or an UPDATE that changes its key,
//!   takes the same lock (so no new reference can commit meanwhile), then looks for a
//!   referencing row at a fresh timestamp, with the transaction's own writes, and fails
//!   with 23503 if one is left.
//!
//! A DEFERRABLE constraint that its transaction defers (INITIALLY DEFERRED, or SET
//! CONSTRAINTS) has both checks put off until commit (`deferred`); the lock of a deleted
//! referenced key is still taken as the statement runs.
//!
//! The lock is exclusive (Flotilla has no shared locks yet): two transactions adding
//! references to one row wait for each other, where PostgreSQL's `FOR KEY SHARE` lets
//! them both proceed. A key referenced through a unique index (not the primary key) is
//! locked at its index entry, so an update of the row's other columns does not wait.

use std::collections::{BTreeMap, HashMap, HashSet};

use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    ConstraintReferenceMatchKind, DeferrableInitial, ForeignKeyConstraint, ReferentialAction,
};
use flotilla_catalog::{CatalogSnapshot, ForeignKeyDef, IndexDef, IndexState, SqlType, TableDef};
use flotilla_codec::{Datum, encode_key_tuple, index_key, record_key};
use flotilla_txn::TxnView;
use flotilla_types::{ColumnId, Timestamp};
use futures::StreamExt;

use crate::context::Collect;
use crate::dml::{datum_text, parse_one, quote, relation_name};
use crate::error::{SqlError, datafusion_error};
use crate::session::Session;
use crate::types::ColumnBuilder;

/// Keys locked, or looked for in a referencing table, per request.
const KEYS_PER_REQUEST: usize = 512;

/// A FOREIGN KEY as written in CREATE TABLE: a column's `REFERENCES` or a table
/// constraint.
pub(crate) struct Written<'a> {
    /// The constraint's name, if given.
    pub(crate) name: Option<String>,
    /// The referencing columns' names.
    pub(crate) columns: Vec<String>,
    /// The rest of it.
    pub(crate) fk: &'a ForeignKeyConstraint,
}

/// Refuses what Flotilla does not implement; returns whether the constraint is
/// DEFERRABLE and whether INITIALLY DEFERRED.
fn characteristics(fk: &ForeignKeyConstraint) -> Result<(bool, bool), SqlError> {
    for (when, action) in [("DELETE", &fk.on_delete), ("UPDATE", &fk.on_update)] {
        if let Some(
            a @ (ReferentialAction::Cascade
            | ReferentialAction::SetNull
            | ReferentialAction::SetDefault),
        ) = action
        {
            return Err(SqlError::unsupported(format!("ON {when} {a}")).with_hint(
                "Flotilla checks foreign keys as NO ACTION (or RESTRICT) only: change the \
                 referencing rows in the same transaction, before the referenced ones.",
            ));
        }
    }
    if let Some(
        kind @ (ConstraintReferenceMatchKind::Full | ConstraintReferenceMatchKind::Partial),
    ) = fk.match_kind
    {
        return Err(SqlError::unsupported(format!("MATCH {kind}")).with_hint(
            "Flotilla's foreign keys are MATCH SIMPLE: a key with a NULL is not checked.",
        ));
    }
    let Some(c) = &fk.characteristics else {
        return Ok((false, false));
    };
    if c.enforced == Some(false) {
        return Err(SqlError::unsupported("a NOT ENFORCED foreign key"));
    }
    let initially_deferred = c.initially == Some(DeferrableInitial::Deferred);
    if initially_deferred && c.deferrable == Some(false) {
        return Err(SqlError::new(
            "42601",
            "constraint declared INITIALLY DEFERRED must be DEFERRABLE",
        ));
    }
    // INITIALLY DEFERRED alone implies DEFERRABLE, as in PostgreSQL.
    Ok((
        c.deferrable == Some(true) || initially_deferred,
        initially_deferred,
    ))
}

/// Whether a key column of type `a` may reference one of type `b`: the same type, or
/// types whose values compare and encode alike (the integers; text and varchar).
fn comparable(a: &SqlType, b: &SqlType) -> bool {
    use SqlType::*;
    a == b
        || matches!(
            (a, b),
            (Int16 | Int32 | Int64, Int16 | Int32 | Int64) | (Text | Varchar(_), Text | Varchar(_))
        )
}

fn no_key_column(name: &str) -> SqlError {
    SqlError::new(
        "42703",
        format!("column \"{name}\" referenced in foreign key constraint does not exist"),
    )
}

fn column_ids(table: &TableDef, names: &[String]) -> Result<Vec<ColumnId>, SqlError> {
    names
        .iter()
        .map(|n| {
            table
                .column(n)
                .map(|c| c.id)
                .ok_or_else(|| no_key_column(n))
        })
        .collect()
}

/// Adds the foreign keys `written` in CREATE TABLE to `table` (its id already
/// allocated), each `pending` until every SQL node knows it.
pub(crate) fn plan(
    snapshot: &CatalogSnapshot,
    table: &mut TableDef,
    written: &[Written<'_>],
) -> Result<(), SqlError> {
    for w in written {
        let mut def = plan_one(snapshot, table, w)?;
        def.pending = true;
        table.foreign_keys.push(def);
    }
    Ok(())
}

/// The foreign key of ALTER TABLE ... ADD [CONSTRAINT] FOREIGN KEY on `table`, for its
/// job (which checks it again against the snapshot it commits on).
pub(crate) fn plan_added(
    snapshot: &CatalogSnapshot,
    table: &TableDef,
    fk: &ForeignKeyConstraint,
) -> Result<ForeignKeyDef, SqlError> {
    let written = Written {
        name: fk.name.as_ref().map(crate::dml::ident_name),
        columns: fk.columns.iter().map(crate::dml::ident_name).collect(),
        fk,
    };
    plan_one(snapshot, table, &written)
}

/// `written` on `own`, resolved against `snapshot`: its columns, the referenced table
/// and the unique index the references go through. A name not given is PostgreSQL's
/// `table_columns_fkey`, numbered if the table has a constraint of that name.
pub(crate) fn plan_one(
    snapshot: &CatalogSnapshot,
    own: &TableDef,
    w: &Written<'_>,
) -> Result<ForeignKeyDef, SqlError> {
    let (deferrable, initially_deferred) = characteristics(w.fk)?;
    let parent_name = relation_name(&w.fk.foreign_table);
    let parent: &TableDef = if parent_name == own.name {
        own
    } else if let Some(t) = snapshot.table(&parent_name) {
        t
    } else if snapshot.views.contains_key(&parent_name) {
        return Err(SqlError::new(
            "42809",
            format!("referenced relation \"{parent_name}\" is not a table"),
        ));
    } else {
        return Err(SqlError::new(
            "42P01",
            format!("relation \"{parent_name}\" does not exist"),
        ));
    };
    let columns = column_ids(own, &w.columns)?;
    let ref_columns = if w.fk.referred_columns.is_empty() {
        match parent.primary_key() {
            Some(pk) => pk.columns.clone(),
            None => {
                return Err(SqlError::new(
                    "42830",
                    format!("there is no primary key for referenced table \"{parent_name}\""),
                ));
            }
        }
    } else {
        let names: Vec<String> =
            w.fk.referred_columns
                .iter()
                .map(crate::dml::ident_name)
                .collect();
        column_ids(parent, &names)?
    };
    if columns.len() != ref_columns.len() {
        return Err(SqlError::new(
            "42830",
            "number of referencing and referenced columns for foreign key disagree",
        ));
    }
    let index = parent.indexes.iter().find(|i| {
        i.unique
            && i.state == IndexState::Public
            && i.columns.len() == ref_columns.len()
            && ref_columns.iter().all(|c| i.columns.contains(c))
    });
    let Some(index) = index else {
        return Err(SqlError::new(
            "42830",
            format!(
                "there is no unique constraint matching given keys for referenced table \"{parent_name}\""
            ),
        ));
    };
    let name = match &w.name {
        Some(name) if own.has_constraint(name) => {
            return Err(SqlError::new(
                "42710",
                format!(
                    "constraint \"{name}\" for relation \"{}\" already exists",
                    own.name
                ),
            ));
        }
        Some(name) => name.clone(),
        None => {
            let base = format!("{}_{}_fkey", own.name, w.columns.join("_"));
            (0..)
                .map(|n| {
                    if n == 0 {
                        base.clone()
                    } else {
                        format!("{base}{n}")
                    }
                })
                .find(|n| !own.has_constraint(n))
                .expect("some number is free")
        }
    };
    for (c, r) in columns.iter().zip(&ref_columns) {
        let (c, r) = (
            own.column_by_id(*c).expect("resolved above"),
            parent.column_by_id(*r).expect("resolved above"),
        );
        if !comparable(&c.ty, &r.ty) {
            return Err(SqlError::new(
                "42804",
                format!("foreign key constraint \"{name}\" cannot be implemented"),
            )
            .with_detail(format!(
                "Key columns \"{}\" and \"{}\" are of incompatible types: {} and {}.",
                c.name,
                r.name,
                c.ty.pg_name(),
                r.ty.pg_name()
            )));
        }
    }
    Ok(ForeignKeyDef {
        name,
        columns,
        ref_table: parent.id,
        ref_columns,
        ref_index: index.id,
        pending: false,
        validated: true,
        deferrable,
        initially_deferred,
    })
}

/// The referenced table of `fk` (of `table`) and the index its keys are found through.
fn referenced<'a>(
    snapshot: &'a CatalogSnapshot,
    table: &'a TableDef,
    fk: &ForeignKeyDef,
) -> Result<(&'a TableDef, &'a IndexDef), SqlError> {
    let parent = snapshot
        .referenced_table(table, fk)
        .ok_or_else(|| SqlError::internal(format!("foreign key \"{}\" lost its table", fk.name)))?;
    Ok((parent, ref_index(parent, fk)?))
}

/// The index of `parent` (the table `fk` references) that its keys are found through.
fn ref_index<'a>(parent: &'a TableDef, fk: &ForeignKeyDef) -> Result<&'a IndexDef, SqlError> {
    parent
        .indexes
        .iter()
        .find(|i| i.id == fk.ref_index)
        .ok_or_else(|| SqlError::internal(format!("foreign key \"{}\" lost its index", fk.name)))
}

fn positions(table: &TableDef, columns: &[ColumnId]) -> Vec<usize> {
    columns
        .iter()
        .map(|id| {
            table
                .column_position(*id)
                .expect("a constraint's columns exist")
        })
        .collect()
}

/// The key that holds the referenced row of `values` (in the order of
/// `fk.ref_columns`): the unique index's entry, or the row's own key for a primary key
/// that keys the rows.
fn referenced_key(
    parent: &TableDef,
    index: &IndexDef,
    fk: &ForeignKeyDef,
    values: &[Datum],
) -> Vec<u8> {
    let ordered: Vec<Datum> = index
        .columns
        .iter()
        .map(|id| {
            let k = fk
                .ref_columns
                .iter()
                .position(|c| c == id)
                .expect("the index is over the referenced columns");
            values[k].clone()
        })
        .collect();
    if index.clustered {
        record_key(parent.storage_id, &encode_key_tuple(&ordered))
    } else {
        index_key(parent.storage_id, index.id, &ordered, None)
    }
}

fn missing(table: &TableDef, parent: &TableDef, fk: &ForeignKeyDef, values: &[Datum]) -> SqlError {
    SqlError::new(
        "23503",
        format!(
            "insert or update on table \"{}\" violates foreign key constraint \"{}\"",
            table.name, fk.name
        ),
    )
    .with_detail(format!(
        "Key ({})=({}) is not present in table \"{}\".",
        table.column_list(&fk.columns),
        values.iter().map(datum_text).collect::<Vec<_>>().join(", "),
        parent.name
    ))
}

/// Checks that every row of `rows` (written to `table`, in its column order, each with
/// its handle) finds the rows its foreign keys reference, and locks them until commit;
/// for a constraint the transaction defers, records the rows to check at commit instead.
/// Called once the statement's rows are buffered, so a row may reference one the same
/// statement wrote.
pub(crate) async fn check_references(
    session: &mut Session,
    table: &TableDef,
    rows: &[(&[Datum], &[u8])],
) -> Result<(), SqlError> {
    if table.foreign_keys.is_empty() || rows.is_empty() {
        return Ok(());
    }
    let mut now = Vec::with_capacity(table.foreign_keys.len());
    for (f, fk) in table.foreign_keys.iter().enumerate() {
        if fk.pending {
            return Err(SqlError::new(
                "55000",
                format!(
                    "table \"{}\" cannot be written yet: its foreign key \"{}\" is still being created",
                    table.name, fk.name
                ),
            )
            .with_hint("Retry once CREATE TABLE has returned."));
        }
        if session.constraint_deferred(table.id, fk) {
            let at = positions(table, &fk.columns);
            let keys = rows
                .iter()
                .filter(|(row, _)| !at.iter().any(|p| row[*p].is_null()))
                .map(|(_, handle)| crate::rows::row_key(table, handle));
            crate::deferred::defer_references(session, table.id, &fk.name, keys)?;
        } else {
            now.push(f);
        }
    }
    let rows: Vec<&[Datum]> = rows.iter().map(|(row, _)| *row).collect();
    check_rows(session, table, &now, &rows, false).await
}

/// Checks that every row of `rows` (of `table`, in its column order) finds the rows its
/// foreign keys at positions `fks` reference, and locks them until commit. `newest`:
/// lock the newest version of each (a deferred check under READ COMMITTED, which has no
/// statement snapshot to check against), else check against `for_update_ts`.
pub(crate) async fn check_rows(
    session: &mut Session,
    table: &TableDef,
    fks: &[usize],
    rows: &[&[Datum]],
    newest: bool,
) -> Result<(), SqlError> {
    if fks.is_empty() || rows.is_empty() {
        return Ok(());
    }
    let snapshot = session.catalog();
    // Each referenced key once: (constraint, values) for the error.
    let mut wanted: BTreeMap<Vec<u8>, (usize, Vec<Datum>)> = BTreeMap::new();
    for &f in fks {
        let fk = &table.foreign_keys[f];
        let (parent, index) = referenced(&snapshot, table, fk)?;
        let at = positions(table, &fk.columns);
        for row in rows {
            let values: Vec<Datum> = at.iter().map(|p| row[*p].clone()).collect();
            if values.iter().any(Datum::is_null) {
                continue;
            }
            let key = referenced_key(parent, index, fk, &values);
            wanted.entry(key).or_insert((f, values));
        }
    }
    let violation = |f: usize, values: &[Datum]| -> SqlError {
        let fk = &table.foreign_keys[f];
        match referenced(&snapshot, table, fk) {
            Ok((parent, _)) => missing(table, parent, fk, values),
            Err(e) => e,
        }
    };
    let txn = &mut session.open.as_mut().expect("open transaction").txn;
    let mut to_lock = Vec::new();
    for (key, (f, values)) in &wanted {
        match txn.buffered(key) {
            // Written by this transaction, which holds its lock.
            Some(Some(_)) => {}
            Some(None) => return Err(violation(*f, values)),
            None => to_lock.push(key.clone()),
        }
    }
    for chunk in to_lock.chunks(KEYS_PER_REQUEST) {
        let keys = chunk.iter().map(|k| (k.clone(), false)).collect();
        let found = if newest {
            txn.lock_keys_newest(keys).await?
        } else {
            txn.lock_keys(keys, true).await?
        };
        txn.keep_locked_until_commit(chunk);
        for (key, value) in chunk.iter().zip(found) {
            if value.is_none() {
                let (f, values) = &wanted[key];
                return Err(violation(*f, values));
            }
        }
    }
    Ok(())
}

/// The hint of a failed validation of `fk` (of `table`): a query for the rows that
/// reference nothing.
pub(crate) fn unreferenced_rows_hint(
    snapshot: &CatalogSnapshot,
    table: &TableDef,
    fk: &ForeignKeyDef,
) -> String {
    let Ok((parent, _)) = referenced(snapshot, table, fk) else {
        return String::new();
    };
    let name = |t: &TableDef, id: &ColumnId| {
        t.column_by_id(*id)
            .map(|c| quote(&c.name))
            .unwrap_or_default()
    };
    let not_null: Vec<String> = fk
        .columns
        .iter()
        .map(|c| format!("r.{} IS NOT NULL", name(table, c)))
        .collect();
    let equal: Vec<String> = fk
        .columns
        .iter()
        .zip(&fk.ref_columns)
        .map(|(c, k)| format!("k.{} = r.{}", name(parent, k), name(table, c)))
        .collect();
    format!(
        "Find the rows that reference nothing with: SELECT * FROM {} AS r WHERE {} AND NOT EXISTS \
         (SELECT 1 FROM {} AS k WHERE {}); then fix or delete them.",
        quote(&table.name),
        not_null.join(" AND "),
        quote(&parent.name),
        equal.join(" AND ")
    )
}

/// Reads referenced keys looked up at once while a foreign key is validated.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// Fails with 23503 unless every row of `rows` (of `table`, in its column order, read by
/// `view`) whose `fk` columns are all non-NULL finds its row in `parent` at the view's
/// timestamp: one chunk of the validation of a foreign key added to a table with rows.
pub(crate) async fn validate(
    view: &TxnView,
    table: &TableDef,
    parent: &TableDef,
    fk: &ForeignKeyDef,
    rows: &[Vec<Datum>],
) -> Result<(), SqlError> {
    let index = ref_index(parent, fk)?;
    let at = positions(table, &fk.columns);
    let mut wanted: BTreeMap<Vec<u8>, Vec<Datum>> = BTreeMap::new();
    for row in rows {
        let values: Vec<Datum> = at.iter().map(|p| row[*p].clone()).collect();
        if !values.iter().any(Datum::is_null) {
            wanted
                .entry(referenced_key(parent, index, fk, &values))
                .or_insert(values);
        }
    }
    let mut found = futures::stream::iter(wanted.iter())
        .map(|(key, values)| async move { (view.get(key).await, values) })
        .buffered(LOOKUPS_IN_FLIGHT);
    while let Some((value, values)) = found.next().await {
        if value?.is_none() {
            return Err(missing(table, parent, fk, values));
        }
    }
    Ok(())
}

/// Whether writes of `table` may need a foreign key checked: it has one, or one
/// references it.
pub(crate) fn involved(session: &Session, table: &TableDef) -> bool {
    !table.foreign_keys.is_empty() || !session.catalog().references_to(table.id).is_empty()
}

/// Whether an update of `old` to `new` (rows of `table`) changed the columns of one of
/// its foreign keys (an unchanged reference is not checked again, as in PostgreSQL).
pub(crate) fn references_changed(table: &TableDef, old: &[Datum], new: &[Datum]) -> bool {
    table.foreign_keys.iter().any(|fk| {
        fk.columns.iter().any(|id| {
            let p = table
                .column_position(*id)
                .expect("a constraint's columns exist");
            old[p] != new[p]
        })
    })
}

/// True if `d` can be a value of a column of type `ty` (a key of a wider type that a
/// narrower referencing column cannot hold is referenced by no row).
fn fits(ty: &SqlType, d: &Datum) -> bool {
    match (ty, d) {
        (SqlType::Int16, Datum::Int(v)) => i16::try_from(*v).is_ok(),
        (SqlType::Int32, Datum::Int(v)) => i32::try_from(*v).is_ok(),
        (SqlType::Varchar(Some(n)), Datum::String(s)) => s.chars().count() <= *n as usize,
        _ => true,
    }
}

/// `d` as a SQL literal of type `ty`.
fn literal(ty: &SqlType, d: &Datum) -> Result<String, SqlError> {
    let mut b = ColumnBuilder::new(ty, 1);
    b.push(d);
    let array = b.finish();
    let value = ScalarValue::try_from_array(&array, 0).map_err(datafusion_error)?;
    Ok(crate::params::literal_expr(&value)?.to_string())
}

/// A query for the first row of `child` whose `fk` columns equal one of `keys`.
fn referencing_query(
    child: &TableDef,
    fk: &ForeignKeyDef,
    keys: &[&Vec<Datum>],
) -> Result<String, SqlError> {
    let cols: Vec<(String, &SqlType)> = fk
        .columns
        .iter()
        .map(|id| {
            let c = child
                .column_by_id(*id)
                .expect("a constraint's columns exist");
            (quote(&c.name), &c.ty)
        })
        .collect();
    let select = cols
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let condition = if cols.len() == 1 {
        let (name, ty) = &cols[0];
        let list = keys
            .iter()
            .map(|k| literal(ty, &k[0]))
            .collect::<Result<Vec<_>, _>>()?;
        format!("{name} IN ({})", list.join(", "))
    } else {
        let mut ors = Vec::with_capacity(keys.len());
        for k in keys {
            let ands = cols
                .iter()
                .zip(k.iter())
                .map(|((name, ty), d)| Ok(format!("{name} = {}", literal(ty, d)?)))
                .collect::<Result<Vec<_>, SqlError>>()?;
            ors.push(format!("({})", ands.join(" AND ")));
        }
        ors.join(" OR ")
    };
    Ok(format!(
        "SELECT {select} FROM {} WHERE {condition} LIMIT 1",
        quote(&child.name)
    ))
}

/// Checks that no row still references a key of `removed` (rows of `table` deleted, or
/// updated away from their key, in its column order) that `kept` (the rows the statement
/// wrote) does not hold again. Called once the statement's writes are buffered, so rows
/// it deleted from a referencing table (or from `table` itself) no longer count. For a
/// constraint the transaction defers, the keys are locked now and recorded to check at
/// commit.
pub(crate) async fn check_unreferenced(
    session: &mut Session,
    table: &TableDef,
    removed: &[&[Datum]],
    kept: &[&[Datum]],
) -> Result<(), SqlError> {
    if removed.is_empty() {
        return Ok(());
    }
    let snapshot = session.catalog();
    let mut refs: Vec<(&TableDef, &ForeignKeyDef)> = table
        .foreign_keys
        .iter()
        .filter(|f| f.ref_table == table.id)
        .map(|f| (table, f))
        .collect();
    refs.extend(
        snapshot
            .references_to(table.id)
            .into_iter()
            .map(|(t, f)| (t.as_ref(), f)),
    );
    if refs.is_empty() {
        return Ok(());
    }
    let mut read_ts: Option<Timestamp> = None;
    for (child, fk) in refs {
        let index = ref_index(table, fk)?;
        let at = positions(table, &fk.ref_columns);
        let values_of = |row: &[Datum]| -> Option<Vec<Datum>> {
            let v: Vec<Datum> = at.iter().map(|p| row[*p].clone()).collect();
            (!v.iter().any(Datum::is_null)).then_some(v)
        };
        let still: HashSet<Vec<u8>> = kept
            .iter()
            .filter_map(|r| values_of(r))
            .map(|v| referenced_key(table, index, fk, &v))
            .collect();
        let mut gone: BTreeMap<Vec<u8>, Vec<Datum>> = BTreeMap::new();
        for row in removed {
            if let Some(v) = values_of(row) {
                let key = referenced_key(table, index, fk, &v);
                if !still.contains(&key) {
                    gone.insert(key, v);
                }
            }
        }
        if gone.is_empty() {
            continue;
        }
        let txn = &mut session.open.as_mut().expect("open transaction").txn;
        if !index.clustered {
            // The rows' own keys are locked by the statement; a reference locks the
            // index entry, so take it too: no new reference commits until this ends.
            let keys: Vec<Vec<u8>> = gone.keys().cloned().collect();
            for chunk in keys.chunks(KEYS_PER_REQUEST) {
                txn.lock_keys(chunk.iter().map(|k| (k.clone(), false)).collect(), false)
                    .await?;
            }
        }
        if session.constraint_deferred(child.id, fk) {
            crate::deferred::defer_removals(session, table.id, child.id, &fk.name, gone)?;
            continue;
        }
        find_referencing(session, table, child, fk, &gone, &mut read_ts).await?;
    }
    Ok(())
}

/// Fails with 23503 if a row of `child` references (through `fk`) one of the keys of
/// `table` in `gone` (referenced key -> its values), all locked by the transaction. Reads
/// at `read_ts`, taken now if `None` (after the locks: every reference committed before
/// them is older), with the transaction's own writes.
pub(crate) async fn find_referencing(
    session: &mut Session,
    table: &TableDef,
    child: &TableDef,
    fk: &ForeignKeyDef,
    gone: &BTreeMap<Vec<u8>, Vec<Datum>>,
    read_ts: &mut Option<Timestamp>,
) -> Result<(), SqlError> {
    let ts = match *read_ts {
        Some(ts) => ts,
        None => {
            let txn = &session.open.as_ref().expect("open transaction").txn;
            *read_ts.insert(txn.fresh_ts().await?)
        }
    };
    let candidates: Vec<&Vec<Datum>> = gone
        .values()
        .filter(|v| {
            fk.columns
                .iter()
                .zip(v.iter())
                .all(|(id, d)| child.column_by_id(*id).is_some_and(|c| fits(&c.ty, d)))
        })
        .collect();
    for chunk in candidates.chunks(KEYS_PER_REQUEST) {
        let sql = referencing_query(child, fk, chunk)?;
        // The statement's WITH queries must not stand in for the referencing table.
        let with = std::mem::take(&mut session.with_results);
        let ctx = session.context(ts, Vec::new(), HashMap::new());
        session.with_results = with;
        let plan = ctx.plan(parse_one(&sql)?).await?;
        let batches = ctx.run(plan, Collect::derived(1)).await?;
        if let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) {
            return Err(SqlError::new(
                "23503",
                format!(
                    "update or delete on table \"{}\" violates foreign key constraint \"{}\" on table \"{}\"",
                    table.name, fk.name, child.name
                ),
            )
            .with_detail(format!(
                "Key ({})=({}) is still referenced from table \"{}\".",
                table.column_list(&fk.ref_columns),
                crate::check::row_text(batch, 0),
                child.name
            )));
        }
    }
    Ok(())
}
