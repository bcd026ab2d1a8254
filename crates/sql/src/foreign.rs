//! FOREIGN KEY constraints (MATCH SIMPLE), checked as each statement writes, as
//! PostgreSQL checks a constraint that is not deferred, with its ON DELETE and ON UPDATE
//! actions:
//!
//! - **A row written** to the referencing table (INSERT, an UPDATE that changes its key
//!   columns, the insert of an upsert) whose key columns are all non-NULL must find its
//!   referenced row: the referenced key's entry (the unique index's, or the row itself
//!   for a primary key) is read and locked with a shared lock, checked against the statement's
//!   `for_update_ts` like any pessimistic lock, and the lock is recorded at commit. So a
//!   concurrent DELETE of the referenced row either waits for this transaction, or (if it
//!   committed first) makes this statement fail with a write conflict: READ COMMITTED
//!   re-runs it on a newer snapshot, where the key is gone (23503), and REPEATABLE READ
//!   fails with 40001, as PostgreSQL's does.
//! - **A row deleted** from the referenced table, or an UPDATE that changes its key,
//!   takes the same lock (so no new reference can commit meanwhile), then carries out
//!   each constraint's action (`check_unreferenced`): NO ACTION and RESTRICT look for a
//!   referencing row at a fresh timestamp, with the transaction's own writes, and fail
//!   with 23503 if one is left; CASCADE, SET NULL and SET DEFAULT delete or update the
//!   referencing rows, whose own constraints are then carried out in turn.
//!
//! A DEFERRABLE NO ACTION constraint that its transaction defers (INITIALLY DEFERRED, or
//! SET CONSTRAINTS) has both checks put off until commit (`deferred`); the lock of a
//! deleted referenced key is still taken as the statement runs. Actions (and RESTRICT)
//! are never put off: they run as the statement does.
//!
//! The lock of a referenced key is PostgreSQL's `FOR KEY SHARE` (`LockStrength::KeyShare`;
//! `FOR SHARE`, or exclusive, before every store knows it): any number of transactions
//! add references to one row at once, while a delete of the row, or a change of its key,
//! waits for them all. An update that keeps every key of its row (`FOR NO KEY UPDATE`,
//! see `dml::update_strength`) neither waits for them nor makes them wait: a key
//! referenced through its primary key is locked at the row itself, which such an update
//! only gives a new value; one referenced through a unique index, at its index entry,
//! which it does not touch.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    ConstraintReferenceMatchKind, DeferrableInitial, ForeignKeyConstraint, ReferentialAction,
};
use flotilla_catalog::{
    CatalogSnapshot, FkAction, ForeignKeyDef, IndexDef, IndexState, SqlType, TableDef,
};
use flotilla_codec::{Datum, encode_key_tuple, index_key, record_key};
use flotilla_txn::{LockStrength, TxnView};
use flotilla_types::version::Feature;
use flotilla_types::{ColumnId, Timestamp};
use futures::StreamExt;

use crate::context::Collect;
use crate::dml::{RowChange, key_text, parse_one, quote, relation_name};
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

/// What a FOREIGN KEY says beyond its columns, once checked.
struct Characteristics {
    deferrable: bool,
    initially_deferred: bool,
    on_delete: FkAction,
    on_update: FkAction,
}

fn action(a: Option<ReferentialAction>) -> FkAction {
    match a {
        None | Some(ReferentialAction::NoAction) => FkAction::NoAction,
        Some(ReferentialAction::Restrict) => FkAction::Restrict,
        Some(ReferentialAction::Cascade) => FkAction::Cascade,
        Some(ReferentialAction::SetNull) => FkAction::SetNull,
        Some(ReferentialAction::SetDefault) => FkAction::SetDefault,
    }
}

/// Refuses what Flotilla does not implement; returns whether the constraint is
/// DEFERRABLE, whether INITIALLY DEFERRED, and its actions.
fn characteristics(fk: &ForeignKeyConstraint) -> Result<Characteristics, SqlError> {
    let (on_delete, on_update) = (action(fk.on_delete), action(fk.on_update));
    if let Some(
        kind @ (ConstraintReferenceMatchKind::Full | ConstraintReferenceMatchKind::Partial),
    ) = fk.match_kind
    {
        return Err(SqlError::unsupported(format!("MATCH {kind}")).with_hint(
            "Flotilla's foreign keys are MATCH SIMPLE: a key with a NULL is not checked.",
        ));
    }
    let Some(c) = &fk.characteristics else {
        return Ok(Characteristics {
            deferrable: false,
            initially_deferred: false,
            on_delete,
            on_update,
        });
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
    Ok(Characteristics {
        deferrable: c.deferrable == Some(true) || initially_deferred,
        initially_deferred,
        on_delete,
        on_update,
    })
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
    let Characteristics {
        deferrable,
        initially_deferred,
        on_delete,
        on_update,
    } = characteristics(w.fk)?;
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
        i.is_unique_constraint()
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
        on_delete,
        on_update,
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
        key_text(table, &fk.columns, values),
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
    // Before every store can take a key-only (or any) shared lock (a rolling upgrade),
    // the lock is the strongest one they all know.
    let strength = if session.engine.may_use(Feature::KeyShareLocks) {
        LockStrength::KeyShare
    } else if session.engine.may_use(Feature::SharedLocks) {
        LockStrength::Share
    } else {
        LockStrength::Update
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
            txn.lock_keys_newest_as(keys, strength).await?
        } else {
            txn.lock_keys_as(keys, true, strength).await?
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
    let select = fk
        .columns
        .iter()
        .map(|id| {
            quote(
                &child
                    .column_by_id(*id)
                    .expect("a constraint's columns exist")
                    .name,
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "SELECT {select} FROM {} WHERE {} LIMIT 1",
        quote(&child.name),
        referencing_condition(child, fk, keys)?
    ))
}

/// SQL that holds for a row of `child` whose `fk` columns equal one of `keys`.
fn referencing_condition(
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
    if let [(name, ty)] = cols.as_slice() {
        let list = keys
            .iter()
            .map(|k| literal(ty, &k[0]))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(format!("{name} IN ({})", list.join(", ")));
    }
    let mut ors = Vec::with_capacity(keys.len());
    for k in keys {
        let ands = cols
            .iter()
            .zip(k.iter())
            .map(|((name, ty), d)| Ok(format!("{name} = {}", literal(ty, d)?)))
            .collect::<Result<Vec<_>, SqlError>>()?;
        ors.push(format!("({})", ands.join(" AND ")));
    }
    Ok(ors.join(" OR "))
}

/// The keys of `gone` that a column of `child`'s `fk` can hold (one of a wider type that
/// a narrower referencing column cannot hold is referenced by no row).
fn candidates<'a>(
    child: &TableDef,
    fk: &ForeignKeyDef,
    gone: &'a BTreeMap<Vec<u8>, Vec<Datum>>,
) -> Vec<&'a Vec<Datum>> {
    gone.values()
        .filter(|v| {
            fk.columns
                .iter()
                .zip(v.iter())
                .all(|(id, d)| child.column_by_id(*id).is_some_and(|c| fits(&c.ty, d)))
        })
        .collect()
}

/// Rows of a table an action deleted (with no new rows) or updated (with the new rows,
/// in the same order), whose own references are yet to be carried out.
type Cascaded = (TableDef, Vec<Vec<Datum>>, Vec<Vec<Datum>>);

/// A NO ACTION or RESTRICT check left for the end of the statement: no row of `child`
/// may still reference (through `fk`) a key of `parent` in `gone`.
struct LeftToCheck {
    parent: TableDef,
    child: TableDef,
    fk: ForeignKeyDef,
    gone: BTreeMap<Vec<u8>, Vec<Datum>>,
}

/// Carries out the foreign keys referencing `table` for `removed`, its rows deleted (with
/// `kept` empty) or updated (with `kept` the new rows, paired with `removed` in order),
/// in its column order. Called once the statement's writes are buffered, so rows it
/// deleted from a referencing table (or from `table` itself) no longer count.
///
/// - **NO ACTION, RESTRICT:** no row may still reference a key of `removed` that no row
///   of `kept` holds again. Checked after every action has run, as PostgreSQL checks
///   them as the statement ends; a NO ACTION constraint the transaction defers has its
///   keys locked now and recorded to check at commit.
/// - **CASCADE:** the referencing rows are deleted (and their own references carried
///   out in turn, breadth first, until no cascade is left), or, for an update, their
///   key changed to the new key of the row they reference.
/// - **SET NULL, SET DEFAULT:** their key columns are set so, checked like any update
///   (NOT NULL, CHECK, a default that must reference a row).
///
/// An action applies to each row whose key the statement changed, and reads the
/// referencing rows before it changes any. Rows are read at a fresh timestamp, taken
/// once the referenced keys are locked (no new reference can commit after it), and
/// locked against the statement's snapshot: one changed since fails with a write
/// conflict (the statement re-runs under READ COMMITTED, 40001 under REPEATABLE READ).
pub(crate) async fn check_unreferenced(
    session: &mut Session,
    table: &TableDef,
    removed: &[&[Datum]],
    kept: &[&[Datum]],
) -> Result<(), SqlError> {
    assert!(
        kept.is_empty() || kept.len() == removed.len(),
        "an update pairs each old row with its new row"
    );
    let mut cascaded: VecDeque<Cascaded> = VecDeque::new();
    let mut checks: Vec<LeftToCheck> = Vec::new();
    act(session, table, removed, kept, &mut cascaded, &mut checks).await?;
    // A step is the rows one action changed in one table, whose own references are
    // then carried out: breadth first, never nested, so a cascade down a tree of rows of
    // any depth needs no stack. Each step reads at least once, and a cycle of
    // constraints could go round for as long as it changes rows: bounded, 54001 past it
    // (PostgreSQL's code for its stack depth).
    let steps_max = session.engine.config.fk_action_steps_max;
    let mut steps = 0;
    while let Some((child, olds, news)) = cascaded.pop_front() {
        steps += 1;
        if steps > steps_max {
            return Err(SqlError::new(
                "54001",
                format!(
                    "foreign key actions took more than {steps_max} steps (at table \"{}\")",
                    child.name
                ),
            )
            .with_hint(
                "Change the rows a part at a time, in separate statements, or raise the \
                 server's fk_action_steps_max.",
            ));
        }
        let removed: Vec<&[Datum]> = olds.iter().map(Vec::as_slice).collect();
        let kept: Vec<&[Datum]> = news.iter().map(Vec::as_slice).collect();
        act(session, &child, &removed, &kept, &mut cascaded, &mut checks).await?;
    }
    let mut read_ts: Option<Timestamp> = None;
    for c in &checks {
        find_referencing(session, &c.parent, &c.child, &c.fk, &c.gone, &mut read_ts).await?;
    }
    Ok(())
}

/// One step of `check_unreferenced`: the constraints referencing `table`, for its rows
/// `removed` (and `kept`). Rows deleted by a cascade are queued on `cascaded`; checks
/// are left on `checks`.
async fn act(
    session: &mut Session,
    table: &TableDef,
    removed: &[&[Datum]],
    kept: &[&[Datum]],
    cascaded: &mut VecDeque<Cascaded>,
    checks: &mut Vec<LeftToCheck>,
) -> Result<(), SqlError> {
    if removed.is_empty() {
        return Ok(());
    }
    let snapshot = session.catalog();
    let mut refs: Vec<(TableDef, ForeignKeyDef)> = table
        .foreign_keys
        .iter()
        .filter(|f| f.ref_table == table.id)
        .map(|f| (table.clone(), f.clone()))
        .collect();
    refs.extend(
        snapshot
            .references_to(table.id)
            .into_iter()
            .map(|(t, f)| (t.as_ref().clone(), f.clone())),
    );
    let updating = !kept.is_empty();
    for (child, fk) in refs {
        let action = if updating { fk.on_update } else { fk.on_delete };
        let index = ref_index(table, &fk)?;
        let at = positions(table, &fk.ref_columns);
        let values_of =
            |row: &[Datum]| -> Vec<Datum> { at.iter().map(|p| row[*p].clone()).collect() };
        // Referenced key -> its values, and, for an update's action, the new values.
        let mut gone: BTreeMap<Vec<u8>, Vec<Datum>> = BTreeMap::new();
        let mut moved: HashMap<Vec<u8>, Vec<Datum>> = HashMap::new();
        // Keys the statement's rows hold again.
        let still: HashSet<Vec<u8>> = kept
            .iter()
            .map(|r| values_of(r))
            .filter(|v| !v.iter().any(Datum::is_null))
            .map(|v| referenced_key(table, index, &fk, &v))
            .collect();
        if action.only_checks() {
            for row in removed {
                let v = values_of(row);
                if !v.iter().any(Datum::is_null) {
                    let key = referenced_key(table, index, &fk, &v);
                    if !still.contains(&key) {
                        gone.insert(key, v);
                    }
                }
            }
        } else {
            for (i, row) in removed.iter().enumerate() {
                let v = values_of(row);
                let new = kept.get(i).map(|k| values_of(k));
                if v.iter().any(Datum::is_null) || new.as_ref() == Some(&v) {
                    continue;
                }
                let key = referenced_key(table, index, &fk, &v);
                if let Some(new) = new {
                    moved.insert(key.clone(), new);
                }
                gone.insert(key, v);
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
        match action {
            FkAction::NoAction | FkAction::Restrict => {
                // RESTRICT is never put off (PostgreSQL's difference between the two).
                if action == FkAction::NoAction && session.constraint_deferred(child.id, &fk) {
                    crate::deferred::defer_removals(session, table.id, child.id, &fk.name, gone)?;
                } else {
                    checks.push(LeftToCheck {
                        parent: table.clone(),
                        child,
                        fk,
                        gone,
                    });
                }
            }
            FkAction::Cascade if !updating => {
                let rows = referencing_rows(session, &child, &fk, &gone).await?;
                let deleted = crate::dml::delete_rows(session, &child, rows).await?;
                if !deleted.is_empty() {
                    cascaded.push_back((child, deleted, Vec::new()));
                }
            }
            FkAction::Cascade | FkAction::SetNull | FkAction::SetDefault => {
                let rows = referencing_rows(session, &child, &fk, &gone).await?;
                let changes =
                    changed_references(session, table, index, &child, &fk, action, &moved, rows)
                        .await?;
                if action == FkAction::SetDefault {
                    // A default may be the very key that went: then the rows still
                    // reference it, which the check at the end refuses, as PostgreSQL's
                    // SET DEFAULT does.
                    let gone: BTreeMap<Vec<u8>, Vec<Datum>> = gone
                        .iter()
                        .filter(|(k, _)| !still.contains(*k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    checks.push(LeftToCheck {
                        parent: table.clone(),
                        child: child.clone(),
                        fk: fk.clone(),
                        gone,
                    });
                }
                if !changes.is_empty() {
                    let stored = vec![None; changes.len()];
                    let (news, olds) =
                        crate::dml::write_updates(session, &child, changes, stored).await?;
                    if let Some(olds) = olds {
                        cascaded.push_back((child, olds, news));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The rows of `child` referencing (through `fk`) a key of `gone`, with their handles,
/// read at a fresh timestamp with the transaction's own writes.
async fn referencing_rows(
    session: &mut Session,
    child: &TableDef,
    fk: &ForeignKeyDef,
    gone: &BTreeMap<Vec<u8>, Vec<Datum>>,
) -> Result<Vec<(Vec<Datum>, Vec<u8>)>, SqlError> {
    let ts = {
        let txn = &session.open.as_ref().expect("open transaction").txn;
        txn.fresh_ts().await?
    };
    let mut rows = Vec::new();
    for chunk in candidates(child, fk, gone).chunks(KEYS_PER_REQUEST) {
        let condition = referencing_condition(child, fk, chunk)?;
        rows.extend(crate::dml::rows_where(session, child, &condition, ts).await?);
    }
    Ok(rows)
}

/// The updates `action` (CASCADE of an update, SET NULL, SET DEFAULT) makes to `rows`,
/// rows of `child` referencing `parent` through `fk`; `moved`: each changed referenced
/// key's new values (in `fk.ref_columns` order).
#[allow(clippy::too_many_arguments)]
async fn changed_references(
    session: &Session,
    parent: &TableDef,
    index: &IndexDef,
    child: &TableDef,
    fk: &ForeignKeyDef,
    action: FkAction,
    moved: &HashMap<Vec<u8>, Vec<Datum>>,
    rows: Vec<(Vec<Datum>, Vec<u8>)>,
) -> Result<Vec<RowChange>, SqlError> {
    let at = positions(child, &fk.columns);
    let defaults = if action == FkAction::SetDefault {
        let mut d = Vec::with_capacity(at.len());
        for p in &at {
            d.push(crate::dml::evaluate_default(session, &child.columns[*p]).await?);
        }
        d
    } else {
        Vec::new()
    };
    let mut changes = Vec::with_capacity(rows.len());
    for (old, handle) in rows {
        let mut new = old.clone();
        // CASCADE: the new key of the row this one references (it was read as
        // referencing a changed key).
        let to = if action == FkAction::Cascade {
            let values: Vec<Datum> = at.iter().map(|p| old[*p].clone()).collect();
            let key = referenced_key(parent, index, fk, &values);
            Some(moved.get(&key).ok_or_else(|| {
                SqlError::internal(format!(
                    "a row of \"{}\" references a key of \"{}\" that did not change",
                    child.name, parent.name
                ))
            })?)
        } else {
            None
        };
        for (k, p) in at.iter().enumerate() {
            new[*p] = match (action, to) {
                (FkAction::SetNull, _) => Datum::Null,
                (FkAction::SetDefault, _) => defaults[k].clone(),
                // Fitted to the referencing column: 22003 or 22001 if it cannot hold it.
                (_, Some(to)) => crate::types::fit_to_column(to[k].clone(), &child.columns[*p].ty)?,
                (_, None) => unreachable!("only CASCADE, SET NULL and SET DEFAULT change rows"),
            };
        }
        if new != old {
            let new_handle =
                crate::rows::primary_handle(child, &new).unwrap_or_else(|| handle.clone());
            changes.push((old, handle, new, new_handle));
        }
    }
    Ok(changes)
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
    for chunk in candidates(child, fk, gone).chunks(KEYS_PER_REQUEST) {
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
