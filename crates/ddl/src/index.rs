//! The schema steps of index jobs, each computed from one catalog snapshot.

use flotilla_catalog::{CatalogSnapshot, IndexDef, IndexPredicate, IndexState, TableDef};
use flotilla_types::TableId;

use crate::job::JobError;

/// The table `table_id` of `snapshot`, to change; 42P01 if it is gone.
pub(crate) fn table_of(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    name: &str,
) -> Result<TableDef, JobError> {
    snapshot
        .tables
        .values()
        .find(|t| t.id == table_id)
        .map(|t| (**t).clone())
        .ok_or_else(|| JobError::fatal("42P01", format!("relation \"{name}\" does not exist")))
}

/// What adding an index needs to know.
pub struct NewIndex<'a> {
    /// The table.
    pub table_id: TableId,
    /// Its name, for messages.
    pub table: &'a str,
    /// The index's name.
    pub name: &'a str,
    /// Indexed columns.
    pub columns: &'a [u32],
    /// UNIQUE.
    pub unique: bool,
    /// Non-clustered primary key.
    pub primary: bool,
    /// Skip if the name is taken.
    pub if_not_exists: bool,
    /// A partial index's predicate.
    pub predicate: Option<&'a IndexPredicate>,
}

/// The table with the new index in its first state (delete-only), or `None` if it exists
/// and IF NOT EXISTS was given.
pub fn plan_add_index(
    snapshot: &CatalogSnapshot,
    new: &NewIndex<'_>,
) -> Result<Option<TableDef>, JobError> {
    let mut table = table_of(snapshot, new.table_id, new.table)?;
    if snapshot.relation_exists(new.name) {
        if new.if_not_exists {
            return Ok(None);
        }
        return Err(JobError::fatal(
            "42P07",
            format!("relation \"{}\" already exists", new.name),
        ));
    }
    if new.primary && table.primary_key().is_some() {
        return Err(JobError::fatal(
            "42P16",
            format!(
                "multiple primary keys for table \"{}\" are not allowed",
                table.name
            ),
        ));
    }
    let predicate_columns = new
        .predicate
        .iter()
        .flat_map(|p| p.terms.iter().map(|t| &t.column));
    for id in new.columns.iter().chain(predicate_columns) {
        if table.column_by_id(*id).is_none() {
            return Err(JobError::fatal(
                "42703",
                format!("a column of index \"{}\" no longer exists", new.name),
            ));
        }
    }
    table.indexes.push(IndexDef {
        id: table.next_index_id,
        name: new.name.to_string(),
        columns: new.columns.to_vec(),
        unique: new.unique,
        primary: new.primary,
        clustered: false,
        state: IndexState::DeleteOnly,
        predicate: new.predicate.cloned(),
    });
    table.next_index_id += 1;
    Ok(Some(table))
}

/// The table with index `index_id` moved to `state`, or removed (`None`). Moving a
/// primary key to public makes its columns NOT NULL.
pub fn set_index_state(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    index_id: i64,
    state: Option<IndexState>,
) -> Result<TableDef, JobError> {
    let mut table = table_of(snapshot, table_id, table_name)?;
    let Some(pos) = table.indexes.iter().position(|i| i.id == index_id) else {
        return Err(JobError::fatal(
            "XX000",
            format!("index {index_id} of \"{table_name}\" vanished during its job"),
        ));
    };
    match state {
        None => {
            table.indexes.remove(pos);
        }
        Some(state) => {
            table.indexes[pos].state = state;
            if state == IndexState::Public && table.indexes[pos].primary {
                let columns = table.indexes[pos].columns.clone();
                for c in &mut table.columns {
                    if columns.contains(&c.id) {
                        c.nullable = false;
                    }
                }
            }
        }
    }
    Ok(table)
}

/// The index named `name` of the table, checked for dropping.
pub fn index_to_drop(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    name: &str,
) -> Result<IndexDef, JobError> {
    let table = table_of(snapshot, table_id, table_name)?;
    let index = table
        .indexes
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| JobError::fatal("42704", format!("index \"{name}\" does not exist")))?;
    if index.clustered {
        return Err(JobError::fatal(
            "2BP01",
            format!(
                "cannot drop index {name} because constraint {name} on table {} requires it",
                table.name
            ),
        ));
    }
    Ok(index.clone())
}
