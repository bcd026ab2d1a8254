//! CHECK and NOT NULL constraints added to (or validated on) an existing table: the
//! catalog side of the `AddCheck`, `ValidateCheck` and `SetNotNull` jobs, and the steps
//! those share with `AddForeignKey` and `ValidateForeignKey`. The rows are scanned by the reorg worker
//! (`Reorg::check_chunk`), which knows how to evaluate an expression.

use flotilla_catalog::{CatalogSnapshot, CheckDef, ForeignKeyDef, TableDef};
use flotilla_types::{ColumnId, TableId};

use crate::index::table_of;
use crate::job::JobError;

/// 42704 for a constraint the table does not have.
pub fn no_constraint(table: &str, name: &str) -> JobError {
    JobError::fatal(
        "42704",
        format!("constraint \"{name}\" of relation \"{table}\" does not exist"),
    )
}

/// 42710 for a constraint named as one `table` has.
pub(crate) fn name_taken(table: &TableDef, name: &str) -> JobError {
    JobError::fatal(
        "42710",
        format!(
            "constraint \"{name}\" for relation \"{}\" already exists",
            table.name
        ),
    )
}

/// The table with `check` added, enforced but not validated. `planned_columns` are the
/// names its columns had when the SQL node planned the expression (which names them):
/// if one has been renamed or dropped since, the expression would no longer plan, so the
/// job fails and the statement is to be run again.
pub fn plan_add_check(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    check: &CheckDef,
    planned_columns: &[String],
) -> Result<TableDef, JobError> {
    let mut table = table_of(snapshot, table_id, table_name)?;
    if table.has_constraint(&check.name) {
        return Err(name_taken(&table, &check.name));
    }
    let unchanged = check.columns.len() == planned_columns.len()
        && check
            .columns
            .iter()
            .zip(planned_columns)
            .all(|(id, name)| table.column_by_id(*id).is_some_and(|c| c.name == *name));
    if !unchanged {
        return Err(JobError::fatal(
            "40001",
            format!(
                "the columns of relation \"{}\" changed while the constraint was planned; run the statement again",
                table.name
            ),
        ));
    }
    let mut check = check.clone();
    check.validated = false;
    table.checks.push(check);
    Ok(table)
}

/// A constraint that a job may add unvalidated and validate by scanning the table's rows:
/// a CHECK or a FOREIGN KEY.
pub trait Validated: Clone {
    /// The table's constraints of this kind.
    fn of(table: &mut TableDef) -> &mut Vec<Self>;
    /// The constraint's name.
    fn name(&self) -> &str;
    /// Whether every row is known to satisfy it.
    fn is_validated(&self) -> bool;
    /// Records that every row satisfies it.
    fn mark_validated(&mut self);
}

impl Validated for CheckDef {
    fn of(table: &mut TableDef) -> &mut Vec<Self> {
        &mut table.checks
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn is_validated(&self) -> bool {
        self.validated
    }
    fn mark_validated(&mut self) {
        self.validated = true;
    }
}

impl Validated for ForeignKeyDef {
    fn of(table: &mut TableDef) -> &mut Vec<Self> {
        &mut table.foreign_keys
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn is_validated(&self) -> bool {
        self.validated
    }
    fn mark_validated(&mut self) {
        self.validated = true;
    }
}

/// The table's constraint `name` (of kind `C`), which must exist.
pub fn find_constraint<C: Validated>(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    name: &str,
) -> Result<C, JobError> {
    let mut table = table_of(snapshot, table_id, table_name)?;
    let table_name = table.name.clone();
    C::of(&mut table)
        .iter()
        .find(|c| c.name() == name)
        .cloned()
        .ok_or_else(|| no_constraint(&table_name, name))
}

/// The table with constraint `name` (of kind `C`) marked validated; `None` if it
/// already was.
pub fn set_validated<C: Validated>(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    name: &str,
) -> Result<Option<TableDef>, JobError> {
    let mut table = table_of(snapshot, table_id, table_name)?;
    let Some(c) = C::of(&mut table).iter_mut().find(|c| c.name() == name) else {
        return Err(no_constraint(table_name, name));
    };
    if c.is_validated() {
        return Ok(None);
    }
    c.mark_validated();
    Ok(Some(table))
}

/// The table without constraint `name` (of kind `C`); `None` if it has none of that name.
pub fn remove_constraint<C: Validated>(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    name: &str,
    column: Option<&str>,
) -> Result<Option<TableDef>, JobError> {
    let mut table = table_of(snapshot, table_id, table_name)?;
    let list = C::of(&mut table);
    let before = list.len();
    list.retain(|c| c.name() != name);
    let mut removed = list.len() < before;
    if let Some(column) = column {
        // Added by the same job, which ran alone on the table: nothing else uses it.
        let before = table.columns.len();
        table.columns.retain(|c| c.name != column);
        removed |= table.columns.len() < before;
    }
    Ok(removed.then_some(table))
}

/// The step of a `SetNotNull` job, applied to the current table: the column as it should
/// be at that step, or `None` when it already is (or is gone, for a rollback).
pub fn set_not_null_step(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    column_id: ColumnId,
    column_name: &str,
    step: NotNullStep,
) -> Result<Option<TableDef>, JobError> {
    let mut table = table_of(snapshot, table_id, table_name)?;
    let name = table.name.clone();
    let Some(c) = table.columns.iter_mut().find(|c| c.id == column_id) else {
        return match step {
            NotNullStep::Rollback => Ok(None),
            _ => Err(JobError::fatal(
                "42703",
                format!("column \"{column_name}\" of relation \"{name}\" does not exist"),
            )),
        };
    };
    let (nullable, pending) = match step {
        NotNullStep::Enforce if !c.nullable => return Ok(None),
        NotNullStep::Enforce => (true, true),
        NotNullStep::Validated => (false, false),
        NotNullStep::Rollback if !c.nullable => return Ok(None),
        NotNullStep::Rollback => (true, false),
    };
    if (c.nullable, c.not_null_pending) == (nullable, pending) {
        return Ok(None);
    }
    c.nullable = nullable;
    c.not_null_pending = pending;
    Ok(Some(table))
}

/// Where a `SetNotNull` job takes its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNullStep {
    /// Writes refuse NULL; the rows are not checked yet.
    Enforce,
    /// Every row was found to hold a value: NOT NULL.
    Validated,
    /// A NULL was found, or a cancel: nullable again.
    Rollback,
}

/// The scan of a `SetNotNull` job, as a check the reorg worker evaluates: `column IS NOT
/// NULL` over the column's current name.
pub fn not_null_check(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    column_id: ColumnId,
) -> Result<CheckDef, JobError> {
    let table = table_of(snapshot, table_id, table_name)?;
    let column = table.column_by_id(column_id).ok_or_else(|| {
        JobError::fatal(
            "42703",
            format!("a column of relation \"{}\" was dropped", table.name),
        )
    })?;
    Ok(CheckDef {
        name: format!("{}_{}_not_null", table.name, column.name),
        expr: format!("\"{}\" IS NOT NULL", column.name.replace('"', "\"\"")),
        columns: vec![column_id],
        validated: false,
    })
}

/// PostgreSQL's error for SET NOT NULL over a column holding NULL.
pub fn nulls_found(table: &str, column: &str) -> JobError {
    JobError::fatal(
        "23502",
        format!("column \"{column}\" of relation \"{table}\" contains null values"),
    )
}
