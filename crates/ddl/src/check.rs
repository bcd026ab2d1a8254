//! CHECK constraints added to (or validated on) an existing table: the catalog side of
//! the `AddCheck` and `ValidateCheck` jobs. The rows are scanned by the reorg worker
//! (`Reorg::check_chunk`), which knows how to evaluate an expression.

use flotilla_catalog::{CatalogSnapshot, CheckDef, TableDef};
use flotilla_types::TableId;

use crate::index::table_of;
use crate::job::JobError;

/// 42704 for a constraint the table does not have.
pub fn no_constraint(table: &str, name: &str) -> JobError {
    JobError::fatal(
        "42704",
        format!("constraint \"{name}\" of relation \"{table}\" does not exist"),
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
    let taken = table.checks.iter().any(|c| c.name == check.name)
        || table.indexes.iter().any(|i| i.name == check.name);
    if taken {
        return Err(JobError::fatal(
            "42710",
            format!(
                "constraint \"{}\" for relation \"{}\" already exists",
                check.name, table.name
            ),
        ));
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

/// The table's check `name`, which must exist.
pub fn find_check(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    name: &str,
) -> Result<CheckDef, JobError> {
    let table = table_of(snapshot, table_id, table_name)?;
    table
        .checks
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .ok_or_else(|| no_constraint(&table.name, name))
}

/// The table with check `name` marked validated; `None` if it already was.
pub fn set_check_validated(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    name: &str,
) -> Result<Option<TableDef>, JobError> {
    let mut table = table_of(snapshot, table_id, table_name)?;
    let Some(check) = table.checks.iter_mut().find(|c| c.name == name) else {
        return Err(no_constraint(table_name, name));
    };
    if check.validated {
        return Ok(None);
    }
    check.validated = true;
    Ok(Some(table))
}

/// The table without check `name`; `None` if it has none of that name.
pub fn remove_check(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    name: &str,
) -> Result<Option<TableDef>, JobError> {
    let mut table = table_of(snapshot, table_id, table_name)?;
    let before = table.checks.len();
    table.checks.retain(|c| c.name != name);
    Ok((table.checks.len() < before).then_some(table))
}
