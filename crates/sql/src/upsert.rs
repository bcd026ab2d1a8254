//! `INSERT ... ON CONFLICT (target) DO UPDATE SET ... [WHERE ...]`: each proposed row is
//! inserted, or, if a row already holds its values of the arbiter (the unique index or
//! primary key the target names), that row is locked and updated instead, with the
//! proposed row readable as `excluded`.
//!
//! Row by row, as PostgreSQL does it: look for the conflicting row and lock it (under
//! READ COMMITTED its newest version, whoever committed it; under REPEATABLE READ a row
//! changed after the snapshot is a serialization failure), update it if found, else claim
//! the row's keys. A row that a concurrent transaction inserts or deletes in between
//! sends the row round again, a bounded number of times.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{Assignment, ConflictTarget, DoUpdate, Expr};
use flotilla_catalog::{Handle, IndexDef, IndexState, TableDef};
use flotilla_codec::Datum;
use flotilla_txn::TxnError;
use flotilla_types::Timestamp;

use crate::dml::{
    RowChange, always_generated, apply_updates, assignment_positions, claimed_keys, default_array,
    ident_name, is_default_keyword, no_such_column, parse_one, put_row, quote, relation_name,
    rows_to_batch, unique_violation,
};
use crate::error::{SqlError, datafusion_error};
use crate::fast::{Lookup, buffered, fetch};
use crate::rows::{index_entry, primary_handle, row_id_handle, row_key};
use crate::session::{Isolation, Session};
use crate::types::{cast_to_column, datum_at, fit_to_column};

/// Times one proposed row is tried again after a concurrent transaction inserted or
/// deleted its conflicting row between the look and the claim.
const UPSERT_ATTEMPTS_MAX: u32 = 16;

/// The name the proposed row is read by in the SET and WHERE expressions.
const EXCLUDED: &str = "excluded";

/// A resolved `ON CONFLICT (target) DO UPDATE` or `ON CONFLICT (target) DO NOTHING`.
pub(crate) struct Upsert<'a> {
    /// The unique index (or clustered primary key) whose conflicts turn into updates, or
    /// are skipped.
    arbiter: &'a IndexDef,
    /// DO UPDATE (else DO NOTHING: a row conflicting on the arbiter is skipped, one
    /// conflicting on another unique key is an error).
    update: bool,
    /// Assigned column positions and their expressions (`None`: DEFAULT).
    assignments: Vec<(usize, Option<&'a Expr>)>,
    selection: Option<&'a Expr>,
    /// The name the existing row is read by: the table's alias, or its name.
    target_name: String,
}

/// Resolves the conflict target and the assignments (`None`: DO NOTHING) against
/// `table`.
pub(crate) fn resolve<'a>(
    table: &'a TableDef,
    alias: Option<String>,
    target: Option<&ConflictTarget>,
    update: Option<&'a DoUpdate>,
) -> Result<Upsert<'a>, SqlError> {
    // A partial unique index is no arbiter: PostgreSQL infers one only from an ON
    // CONFLICT that repeats its predicate, which the parser does not take.
    let usable = |i: &&IndexDef| i.is_unique_constraint() && i.state == IndexState::Public;
    let arbiter = match target {
        None => {
            return Err(SqlError::new(
                "42601",
                "ON CONFLICT DO UPDATE requires inference specification or constraint name",
            )
            .with_hint("For example, ON CONFLICT (column) DO UPDATE SET ..."));
        }
        Some(ConflictTarget::Columns(columns)) => {
            let mut wanted = Vec::with_capacity(columns.len());
            for c in columns {
                let name = ident_name(c);
                let column = table
                    .column(&name)
                    .ok_or_else(|| no_such_column(table, &name))?;
                wanted.push(column.id);
            }
            wanted.sort_unstable();
            wanted.dedup();
            table.indexes.iter().filter(usable).find(|i| {
                let mut have = i.columns.clone();
                have.sort_unstable();
                have == wanted
            })
        }
        Some(ConflictTarget::OnConstraint(name)) => {
            let name = relation_name(name);
            let index = table
                .indexes
                .iter()
                .find(|i| i.name == name)
                .ok_or_else(|| {
                    SqlError::new(
                        "42704",
                        format!(
                            "constraint \"{name}\" for table \"{}\" does not exist",
                            table.name
                        ),
                    )
                })?;
            Some(index).filter(usable)
        }
    };
    let arbiter = arbiter.ok_or_else(|| {
        SqlError::new(
            "42P10",
            "there is no unique or exclusion constraint matching the ON CONFLICT specification",
        )
    })?;
    let (set, selection): (&[Assignment], _) = match update {
        Some(u) => (&u.assignments, u.selection.as_ref()),
        None => (&[], None),
    };
    let positions = assignment_positions(table, set)?;
    let mut assignments: Vec<(usize, Option<&Expr>)> = Vec::with_capacity(positions.len());
    for (pos, Assignment { value, .. }) in positions.into_iter().zip(set) {
        let default = is_default_keyword(value);
        if always_generated(&table.columns[pos]) && !default {
            return Err(SqlError::new(
                "428C9",
                format!(
                    "column \"{}\" can only be updated to DEFAULT",
                    table.columns[pos].name
                ),
            ));
        }
        assignments.push((pos, (!default).then_some(value)));
    }
    Ok(Upsert {
        arbiter,
        update: update.is_some(),
        assignments,
        selection,
        target_name: alias.unwrap_or_else(|| table.name.clone()),
    })
}

/// Where the row holding `row`'s arbiter values lives, if any may: its record key.
/// `None` when no row can conflict (an arbiter value is NULL, and NULLs never equal).
async fn arbiter_record(
    session: &Session,
    table: &TableDef,
    arbiter: &IndexDef,
    row: &[Datum],
    read_ts: Timestamp,
) -> Result<Option<Vec<u8>>, SqlError> {
    if arbiter.clustered {
        return Ok(primary_handle(table, row).map(|h| row_key(table, &h)));
    }
    // The entry's key does not depend on the handle (unique entries carry it as value).
    let Some((ikey, _, true)) = index_entry(table, arbiter, row, &[]) else {
        return Ok(None);
    };
    let txn = &session.open.as_ref().expect("open transaction").txn;
    let handle = match txn.buffered(&ikey) {
        Some(value) => value.map(<[u8]>::to_vec),
        // Under READ COMMITTED the newest entry, committed by whomever (the row it names
        // is then locked at its newest version); under REPEATABLE READ the snapshot's.
        None => {
            let ts = match session.isolation() {
                Isolation::ReadCommitted => Timestamp::MAX,
                _ => read_ts,
            };
            session.view(ts).get(&ikey).await?
        }
    };
    Ok(handle.map(|h| row_key(table, &h)))
}

/// True if a row holds `row`'s arbiter values now (newest versions, or this
/// transaction's own).
async fn arbiter_row_exists(
    session: &Session,
    table: &TableDef,
    arbiter: &IndexDef,
    row: &[Datum],
) -> Result<bool, SqlError> {
    let Some(key) = arbiter_record(session, table, arbiter, row, Timestamp::MAX).await? else {
        return Ok(false);
    };
    let txn = &session.open.as_ref().expect("open transaction").txn;
    Ok(match txn.buffered(&key) {
        Some(value) => value.is_some(),
        None => session.view(Timestamp::MAX).get(&key).await?.is_some(),
    })
}

/// The row at `key`, locked (or this transaction's own), if it still holds `row`'s
/// arbiter values.
async fn lock_existing(
    session: &mut Session,
    table: &TableDef,
    arbiter: &IndexDef,
    key: &[u8],
    row: &[Datum],
    read_ts: Timestamp,
) -> Result<Option<(Vec<Datum>, Vec<u8>, Vec<u8>)>, SqlError> {
    let filters: Vec<(usize, Datum)> = arbiter
        .columns
        .iter()
        .filter_map(|id| table.column_position(*id))
        .map(|pos| (pos, row[pos].clone()))
        .collect();
    if buffered(session, key) {
        let lookup = Lookup::Record(key.to_vec());
        return fetch(session, table, &lookup, &filters, read_ts).await;
    }
    // Locked as a point UPDATE locks (the newest version under READ COMMITTED), and kept
    // locked even when no row matches: the insert that follows claims the key anyway, so
    // giving the lock back would cost a release and a second lock for nothing.
    let handle = crate::rows::handle_of_key(table, key)?.to_vec();
    let newest = session.isolation() == Isolation::ReadCommitted;
    let txn = &mut session.open.as_mut().expect("open transaction").txn;
    let keys = vec![(key.to_vec(), false)];
    let locked = if newest {
        txn.lock_keys_newest(keys).await?
    } else {
        txn.lock_keys(keys, true).await?
    };
    let Some(value) = locked.into_iter().next().flatten() else {
        return Ok(None);
    };
    let existing = crate::rows::decode_row_value(table, &value)?;
    Ok(filters
        .iter()
        .all(|(c, d)| &existing[*c] == d)
        .then_some((existing, handle, value)))
}

/// Inserts `row` unless one of its unique keys is taken; returns the key taken.
async fn try_insert(
    session: &mut Session,
    table: &TableDef,
    row: &[Datum],
) -> Result<Result<Vec<u8>, Vec<u8>>, SqlError> {
    crate::check::enforce(session, table, &[row.to_vec()]).await?;
    let (handle, fresh) = match table.handle {
        Handle::RowId => {
            let id = session
                .engine
                .catalog
                .allocate(flotilla_catalog::IdKind::RowId(table.id), 1)?
                .start;
            (row_id_handle(id), true)
        }
        Handle::PrimaryKey(_) => (primary_handle(table, row).expect("pk table"), false),
    };
    let keys = match claimed_keys(session, table, row, &handle, fresh) {
        Ok(keys) => keys,
        Err(key) => return Ok(Err(key)),
    };
    let txn = &mut session.open.as_mut().expect("open transaction").txn;
    match txn.lock_keys(keys, false).await {
        Ok(_) => {
            put_row(session, table, row, &handle)?;
            crate::foreign::check_references(session, table, &[(row, &handle)]).await?;
            Ok(Ok(handle))
        }
        Err(TxnError::AlreadyExists { key }) => Ok(Err(key)),
        Err(e) => Err(e.into()),
    }
}

impl Upsert<'_> {
    /// True if the row at `key` holds `row`'s arbiter values: the newest version under
    /// READ COMMITTED, the snapshot's under REPEATABLE READ (this transaction's own in
    /// either).
    async fn holder(
        &self,
        session: &Session,
        table: &TableDef,
        key: &[u8],
        row: &[Datum],
        read_ts: Timestamp,
    ) -> Result<bool, SqlError> {
        let filters: Vec<(usize, Datum)> = self
            .arbiter
            .columns
            .iter()
            .filter_map(|id| table.column_position(*id))
            .map(|pos| (pos, row[pos].clone()))
            .collect();
        let ts = match session.isolation() {
            Isolation::ReadCommitted => Timestamp::MAX,
            _ => read_ts,
        };
        let lookup = Lookup::Record(key.to_vec());
        Ok(fetch(session, table, &lookup, &filters, ts)
            .await?
            .is_some())
    }

    /// The arbiter's key of `row` (its record key for the primary key).
    fn arbiter_key(&self, table: &TableDef, row: &[Datum]) -> Option<Vec<u8>> {
        if self.arbiter.clustered {
            primary_handle(table, row).map(|h| row_key(table, &h))
        } else {
            match index_entry(table, self.arbiter, row, &[]) {
                Some((key, _, true)) => Some(key),
                _ => None,
            }
        }
    }

    /// The new version of `old` for proposed row `excluded`, or `None` if the WHERE
    /// condition leaves it as it is.
    async fn updated(
        &self,
        session: &Session,
        table: &TableDef,
        old: &[Datum],
        excluded: &[Datum],
        read_ts: Timestamp,
    ) -> Result<Option<Vec<Datum>>, SqlError> {
        let mut items: Vec<String> = self
            .assignments
            .iter()
            .map(|(_, e)| match e {
                Some(e) => format!("({e})"),
                None => "NULL".to_string(),
            })
            .collect();
        items.push(match self.selection {
            Some(w) => format!("({w})"),
            None => "TRUE".to_string(),
        });
        let mut overrides: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
        for (name, row) in [(&table.name, old), (&EXCLUDED.to_string(), excluded)] {
            let batch = rows_to_batch(table, &[row.to_vec()])?;
            let mem =
                MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(datafusion_error)?;
            overrides.insert(name.clone(), Arc::new(mem));
        }
        let sql = format!(
            "SELECT {} FROM {} AS {}, {}",
            items.join(", "),
            quote(&table.name),
            quote(&self.target_name),
            quote(EXCLUDED)
        );
        let ctx = session.context(read_ts, Vec::new(), overrides);
        let plan = ctx.plan(parse_one(&sql)?).await?;
        let batches = ctx.run(plan, crate::context::Collect::derived(1)).await?;
        let batch = batches
            .iter()
            .find(|b| b.num_rows() == 1)
            .ok_or_else(|| SqlError::internal("ON CONFLICT evaluation gave no row"))?;
        let condition = ScalarValue::try_from_array(batch.column(items.len() - 1), 0)
            .map_err(datafusion_error)?;
        if condition != ScalarValue::Boolean(Some(true)) {
            return Ok(None);
        }
        let mut new = old.to_vec();
        for (j, (pos, expr)) in self.assignments.iter().enumerate() {
            let def = &table.columns[*pos];
            let source = match expr {
                Some(_) => batch.column(j).slice(0, 1),
                None => default_array(session, table, *pos, 1, read_ts).await?,
            };
            let value = cast_to_column(&source, &def.ty, &def.name)?;
            new[*pos] = fit_to_column(datum_at(&value, 0, &def.ty), &def.ty)?;
        }
        Ok(Some(new))
    }

    /// Inserts or updates for each proposed row; returns the rows inserted and the new
    /// versions of the rows updated, in order.
    pub(crate) async fn run(
        &self,
        session: &mut Session,
        table: &TableDef,
        rows: Vec<Vec<Datum>>,
        read_ts: Timestamp,
    ) -> Result<Vec<Vec<Datum>>, SqlError> {
        // Rows this statement inserted or updated: a second proposal for one of them is
        // an error, as the outcome would depend on the order of the proposals.
        let mut touched: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let arbiter_key = self.arbiter_key(table, &row);
            let mut attempt = 0;
            loop {
                attempt += 1;
                if attempt > UPSERT_ATTEMPTS_MAX {
                    return Err(SqlError::new(
                        "40001",
                        format!(
                            "ON CONFLICT: the row conflicting on \"{}\" kept changing \
                             ({UPSERT_ATTEMPTS_MAX} attempts); retry the transaction",
                            self.arbiter.name
                        ),
                    ));
                }
                let record = arbiter_record(session, table, self.arbiter, &row, read_ts).await?;
                if !self.update {
                    // DO NOTHING: skip a row whose arbiter values a row holds, without
                    // locking that row (PostgreSQL does not lock it either).
                    if let Some(key) = &record
                        && self.holder(session, table, key, &row, read_ts).await?
                    {
                        break;
                    }
                } else if let Some(key) = record
                    && let Some((old, handle, stored)) =
                        lock_existing(session, table, self.arbiter, &key, &row, read_ts).await?
                {
                    if touched.contains(&key) {
                        return Err(SqlError::new(
                            "21000",
                            "ON CONFLICT DO UPDATE command cannot affect row a second time",
                        )
                        .with_hint(
                            "Ensure that no rows proposed for insertion within the same \
                                 command have duplicate constrained values.",
                        ));
                    }
                    if let Some(new) = self.updated(session, table, &old, &row, read_ts).await? {
                        let new_handle =
                            primary_handle(table, &new).unwrap_or_else(|| handle.clone());
                        touched.insert(row_key(table, &new_handle));
                        let change: RowChange = (old, handle, new, new_handle);
                        out.extend(
                            apply_updates(session, table, vec![change], vec![Some(stored)]).await?,
                        );
                    }
                    break;
                }
                match try_insert(session, table, &row).await? {
                    Ok(handle) => {
                        touched.insert(row_key(table, &handle));
                        out.push(row);
                        break;
                    }
                    Err(key) => {
                        // A key other than the arbiter's is taken: an error, unless a row
                        // holding the arbiter's values appeared meanwhile too (one row may
                        // hold both, and the lock wait may report either key).
                        if Some(&key) != arbiter_key.as_ref()
                            && !arbiter_row_exists(session, table, self.arbiter, &row).await?
                        {
                            return Err(unique_violation(table, &key, Some(&row)));
                        }
                        // The arbiter's row appeared meanwhile: look again. Under
                        // REPEATABLE READ the snapshot cannot see it, which is a
                        // serialization failure.
                        if session.isolation() != Isolation::ReadCommitted {
                            return Err(SqlError::new(
                                "40001",
                                "could not serialize access due to concurrent insert",
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
