//! FOREIGN KEY constraints as the schema sees them: what a new one must find in the
//! catalog, and which changes of a referenced table they forbid. Checked in the step that
//! commits the change, against the snapshot it commits on (a concurrent change moves the
//! version, so the commit fails and the step re-runs): a constraint never points at a
//! table, column or index that is gone.

use flotilla_catalog::{CatalogSnapshot, ForeignKeyDef, IndexState, TableDef};
use flotilla_types::{ColumnId, IndexId, TableId};

use crate::check::name_taken;
use crate::index::table_of;
use crate::job::{ColumnSpec, JobError};

/// Fails unless each foreign key of `table` (about to be committed) finds its referenced
/// table and, there, a public unique index over exactly its referenced columns.
pub fn check_references_exist(
    snapshot: &CatalogSnapshot,
    table: &TableDef,
) -> Result<(), JobError> {
    for fk in &table.foreign_keys {
        let Some(parent) = snapshot.referenced_table(table, fk) else {
            return Err(JobError::fatal(
                "42P01",
                format!(
                    "the table referenced by foreign key constraint \"{}\" no longer exists",
                    fk.name
                ),
            ));
        };
        let usable = parent.indexes.iter().any(|i| {
            i.id == fk.ref_index
                && i.unique
                && i.predicate.is_none()
                && i.state == IndexState::Public
                && i.columns.len() == fk.ref_columns.len()
                && fk.ref_columns.iter().all(|c| i.columns.contains(c))
        });
        if !usable {
            return Err(JobError::fatal(
                "42830",
                format!(
                    "there is no unique constraint matching given keys for referenced table \"{}\"",
                    parent.name
                ),
            ));
        }
    }
    Ok(())
}

/// The table with `fk` (planned by a SQL node for ALTER TABLE ... ADD FOREIGN KEY) added,
/// enforced but not validated. Its columns are ids, so a concurrent rename changes
/// nothing; if one was dropped since the plan, the job fails and the statement is to be
/// run again.
pub fn plan_add_foreign_key(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    fk: &ForeignKeyDef,
    column: Option<&ColumnSpec>,
) -> Result<TableDef, JobError> {
    let mut table = table_of(snapshot, table_id, table_name)?;
    if table.has_constraint(&fk.name) {
        return Err(name_taken(&table, &fk.name));
    }
    // The column added with it must get the id the constraint was planned with (another
    // column added since would have taken it).
    let added = column
        .map(|c| crate::alter::add_column(&mut table, c))
        .transpose()?;
    if fk.columns.iter().any(|c| table.column_by_id(*c).is_none())
        || added.is_some_and(|id| !fk.columns.contains(&id))
    {
        return Err(JobError::fatal(
            "40001",
            format!(
                "the columns of relation \"{}\" changed while the constraint was planned; run the statement again",
                table.name
            ),
        ));
    }
    let mut fk = fk.clone();
    fk.pending = false;
    fk.validated = false;
    table.foreign_keys.push(fk);
    check_references_exist(snapshot, &table)?;
    Ok(table)
}

/// The first foreign key that references `table` (another table's, or one of `table`'s
/// own as `table` now stands) and for which `depends` holds, with the referencing table's
/// name.
fn first_dependent<'a>(
    snapshot: &'a CatalogSnapshot,
    table: &'a TableDef,
    depends: impl Fn(&ForeignKeyDef) -> bool,
) -> Option<(&'a str, &'a ForeignKeyDef)> {
    let own = table
        .foreign_keys
        .iter()
        .filter(|f| f.ref_table == table.id)
        .map(|f| (table.name.as_str(), f));
    let others = snapshot
        .references_to(table.id)
        .into_iter()
        .map(|(t, f)| (t.name.as_str(), f));
    own.chain(others).find(|(_, f)| depends(f))
}

/// PostgreSQL's 2BP01 for a change that would leave a foreign key without what it
/// references.
fn depended_on(what: &str, child: &str, fk: &ForeignKeyDef) -> JobError {
    JobError::fatal(
        "2BP01",
        format!(
            "cannot drop {what} because other objects depend on it: constraint \"{}\" on table \
             \"{child}\" depends on it; drop that constraint first (ALTER TABLE \"{child}\" DROP \
             CONSTRAINT \"{}\")",
            fk.name, fk.name
        ),
    )
}

/// Fails if dropping table `table` would leave another table's foreign key pointing at it
/// (its own references to itself go with it).
pub fn check_drop_table(snapshot: &CatalogSnapshot, table: &TableDef) -> Result<(), JobError> {
    match snapshot.references_to(table.id).first() {
        Some((child, fk)) => Err(depended_on(
            &format!("table \"{}\"", table.name),
            &child.name,
            fk,
        )),
        None => Ok(()),
    }
}

/// Fails if TRUNCATE of `table` would leave another table's rows referencing nothing:
/// PostgreSQL's 0A000.
pub fn check_truncate(snapshot: &CatalogSnapshot, table: &TableDef) -> Result<(), JobError> {
    match snapshot.references_to(table.id).first() {
        Some((child, _)) => Err(JobError::fatal(
            "0A000",
            format!(
                "cannot truncate a table referenced in a foreign key constraint: table \"{}\" \
                 references \"{}\"; delete its rows first, or drop its constraint",
                child.name, table.name
            ),
        )),
        None => Ok(()),
    }
}

/// Fails if a foreign key references column `column` of `table` (dropping the column
/// would drop the unique index the reference goes through).
pub fn check_drop_referenced_column(
    snapshot: &CatalogSnapshot,
    table: &TableDef,
    column: ColumnId,
    name: &str,
) -> Result<(), JobError> {
    match first_dependent(snapshot, table, |f| f.ref_columns.contains(&column)) {
        Some((child, fk)) => Err(depended_on(
            &format!("column \"{name}\" of table \"{}\"", table.name),
            child,
            fk,
        )),
        None => Ok(()),
    }
}

/// Fails if a foreign key references through index `index` of `table`.
pub fn check_drop_index(
    snapshot: &CatalogSnapshot,
    table: &TableDef,
    index: IndexId,
    name: &str,
) -> Result<(), JobError> {
    match first_dependent(snapshot, table, |f| f.ref_index == index) {
        Some((child, fk)) => Err(depended_on(&format!("index \"{name}\""), child, fk)),
        None => Ok(()),
    }
}
