//! ALTER TABLE actions applied to one snapshot of a table. The same function validates
//! the statement on the SQL node that plans it and applies it in the owner that runs the
//! job, so IF [NOT] EXISTS is honoured at both points and a retried job is harmless.

use flotilla_catalog::{CatalogSnapshot, ColumnDef, Handle, SqlType, TableDef};
use flotilla_types::{ColumnId, TableId};

use crate::job::{AlterAction, ColumnSpec, JobError};

/// Applies `actions` in order to the table `table_id` of `snapshot`. Returns the changed
/// table, `None` if every action was skipped by IF [NOT] EXISTS, or the first error (then
/// nothing of the statement applies).
pub fn apply_alter(
    snapshot: &CatalogSnapshot,
    table_id: TableId,
    table_name: &str,
    actions: &[AlterAction],
) -> Result<Option<TableDef>, JobError> {
    let current = snapshot
        .tables
        .values()
        .find(|t| t.id == table_id)
        .ok_or_else(|| {
            JobError::fatal("42P01", format!("relation \"{table_name}\" does not exist"))
        })?;
    let mut table = (**current).clone();
    let mut changed = false;
    for action in actions {
        changed |= apply_one(snapshot, &mut table, action)?;
    }
    Ok(changed.then_some(table))
}

fn no_column(table: &TableDef, name: &str) -> JobError {
    JobError::fatal(
        "42703",
        format!(
            "column \"{name}\" of relation \"{}\" does not exist",
            table.name
        ),
    )
}

fn column_exists(table: &TableDef, name: &str) -> JobError {
    JobError::fatal(
        "42701",
        format!(
            "column \"{name}\" of relation \"{}\" already exists",
            table.name
        ),
    )
}

/// Adds `column` to `table` (42701 if it has one of that name); returns its id.
pub fn add_column(table: &mut TableDef, column: &ColumnSpec) -> Result<ColumnId, JobError> {
    if table.column(&column.name).is_some() {
        return Err(column_exists(table, &column.name));
    }
    let id = table.next_column_id;
    table.columns.push(ColumnDef {
        id,
        name: column.name.clone(),
        ty: column.ty.clone(),
        nullable: column.nullable,
        not_null_pending: false,
        default: column.default.clone(),
        origin_default: column.origin_default.clone(),
        sequence: None,
    });
    table.next_column_id += 1;
    Ok(id)
}

/// Whether a column of type `from` may become `to` by a change of the catalog alone:
/// every value it holds is a value of `to`, stored and compared alike. A `varchar` may
/// grow longer or unbounded and become `text`, and `text` an unbounded `varchar`.
/// (Anything else would have to check or rewrite the rows.)
pub fn widens(from: &SqlType, to: &SqlType) -> bool {
    match (from, to) {
        (SqlType::Varchar(Some(old)), SqlType::Varchar(Some(new))) => new >= old,
        (SqlType::Varchar(_) | SqlType::Text, SqlType::Varchar(None) | SqlType::Text) => true,
        _ => from == to,
    }
}

/// Applies one action; true if it changed the table.
fn apply_one(
    snapshot: &CatalogSnapshot,
    table: &mut TableDef,
    action: &AlterAction,
) -> Result<bool, JobError> {
    match action {
        AlterAction::AddColumn {
            column,
            if_not_exists,
        } => {
            if table.column(&column.name).is_some() && *if_not_exists {
                return Ok(false);
            }
            add_column(table, column)?;
            Ok(true)
        }
        AlterAction::DropColumn { name, if_exists } => {
            let Some(column) = table.column(name) else {
                if *if_exists {
                    return Ok(false);
                }
                return Err(no_column(table, name));
            };
            let id = column.id;
            if let Handle::PrimaryKey(key) = &table.handle
                && key.contains(&id)
            {
                return Err(JobError::fatal(
                    "0A000",
                    format!(
                        "cannot drop column \"{name}\" of relation \"{}\": the table's rows are keyed by its primary key, which includes it",
                        table.name
                    ),
                ));
            }
            if table.columns.len() == 1 {
                return Err(JobError::fatal(
                    "0A000",
                    format!(
                        "cannot drop column \"{name}\": it is the only column of relation \"{}\" (Flotilla has no tables without columns)",
                        table.name
                    ),
                ));
            }
            // As in PostgreSQL, the table's own foreign keys over the column go with it;
            // a foreign key referencing it stops the drop.
            table.foreign_keys.retain(|f| !f.columns.contains(&id));
            crate::foreign::check_drop_referenced_column(snapshot, table, id, name)?;
            table.columns.retain(|c| c.id != id);
            // As in PostgreSQL, a CHECK constraint that reads the column goes with it.
            table.checks.retain(|c| !c.columns.contains(&id));
            // As in PostgreSQL, indexes (and a non-clustered primary key) on the column, or
            // whose predicate reads it, go with it; their entries become garbage.
            table.indexes.retain(|i| i.clustered || !i.reads_column(id));
            Ok(true)
        }
        AlterAction::DropNotNull { column } => {
            let Some(pos) = table.columns.iter().position(|c| c.name == *column) else {
                return Err(no_column(table, column));
            };
            let id = table.columns[pos].id;
            let keyed = matches!(&table.handle, Handle::PrimaryKey(key) if key.contains(&id));
            if keyed
                || table
                    .indexes
                    .iter()
                    .any(|i| i.primary && i.columns.contains(&id))
            {
                // PostgreSQL's words: a primary key's columns are never NULL.
                return Err(JobError::fatal(
                    "42P16",
                    format!("column \"{column}\" is in a primary key"),
                ));
            }
            let c = &mut table.columns[pos];
            if !c.refuses_null() {
                return Ok(false);
            }
            c.nullable = true;
            c.not_null_pending = false;
            Ok(true)
        }
        AlterAction::WidenType { column, ty } => {
            let Some(c) = table.columns.iter_mut().find(|c| c.name == *column) else {
                return Err(no_column(table, column));
            };
            if c.ty == *ty {
                return Ok(false);
            }
            if !widens(&c.ty, ty) {
                return Err(JobError::fatal(
                    "0A000",
                    format!(
                        "ALTER COLUMN TYPE from {} to {} is not supported",
                        c.ty.pg_name(),
                        ty.pg_name()
                    ),
                ));
            }
            c.ty = ty.clone();
            Ok(true)
        }
        AlterAction::DropCheck { name, if_exists } => {
            let before = table.checks.len() + table.foreign_keys.len();
            table.checks.retain(|c| c.name != *name);
            table.foreign_keys.retain(|f| f.name != *name);
            if table.checks.len() + table.foreign_keys.len() < before {
                return Ok(true);
            }
            if *if_exists {
                return Ok(false);
            }
            Err(crate::check::no_constraint(&table.name, name))
        }
        AlterAction::RenameColumn { from, to, checks } => {
            let Some(id) = table.column(from).map(|c| c.id) else {
                return Err(no_column(table, from));
            };
            if from == to {
                return Ok(false);
            }
            if table.column(to).is_some() {
                return Err(column_exists(table, to));
            }
            // A constraint is kept as the text of its expression, which names the column:
            // each that reads it takes the text the SQL node rewrote, if it rewrote the
            // text the constraint still has.
            let table_name = table.name.clone();
            for check in table.checks.iter_mut().filter(|c| c.columns.contains(&id)) {
                let Some(rewrite) = checks
                    .iter()
                    .find(|r| r.name == check.name && r.from == check.expr)
                else {
                    return Err(JobError::fatal(
                        "40001",
                        format!(
                            "check constraint \"{}\" of relation \"{table_name}\" changed while the statement was planned; run it again",
                            check.name
                        ),
                    ));
                };
                check.expr = rewrite.to.clone();
            }
            for c in &mut table.columns {
                if c.name == *from {
                    c.name = to.clone();
                }
            }
            Ok(true)
        }
        AlterAction::RenameTable { to } => {
            if *to == table.name {
                return Ok(false);
            }
            if snapshot.relation_exists(to) {
                return Err(JobError::fatal(
                    "42P07",
                    format!("relation \"{to}\" already exists"),
                ));
            }
            table.name = to.clone();
            Ok(true)
        }
        AlterAction::SetDefault { column, default } => {
            let Some(c) = table.columns.iter_mut().find(|c| c.name == *column) else {
                return Err(no_column(table, column));
            };
            if c.default == *default {
                return Ok(false);
            }
            c.default = default.clone();
            Ok(true)
        }
        AlterAction::AddIdentity { column, sequence } => {
            if snapshot.relation_exists(&sequence.name) {
                return Err(JobError::fatal(
                    "42P07",
                    format!("relation \"{}\" already exists", sequence.name),
                ));
            }
            let table_name = table.name.clone();
            let Some(c) = table.columns.iter_mut().find(|c| c.name == *column) else {
                return Err(no_column(table, column));
            };
            // PostgreSQL's checks and words.
            if c.sequence.as_ref().is_some_and(|s| s.identity.is_some()) {
                return Err(JobError::fatal(
                    "55000",
                    format!(
                        "column \"{column}\" of relation \"{table_name}\" is already an identity column"
                    ),
                ));
            }
            if c.default.is_some() {
                return Err(JobError::fatal(
                    "55000",
                    format!(
                        "column \"{column}\" of relation \"{table_name}\" already has a default value"
                    ),
                ));
            }
            if c.nullable {
                return Err(JobError::fatal(
                    "55000",
                    format!(
                        "column \"{column}\" of relation \"{table_name}\" must be declared NOT NULL before identity can be added"
                    ),
                ));
            }
            c.default = Some(sequence.nextval_default());
            c.sequence = Some(sequence.clone());
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flotilla_catalog::{IndexDef, IndexState, SqlType};

    use super::*;
    use crate::job::{CheckRewrite, ColumnSpec};

    fn snapshot() -> CatalogSnapshot {
        let table = TableDef {
            id: 7,
            storage_id: 7,
            name: "test".into(),
            columns: ["a", "ts"]
                .iter()
                .enumerate()
                .map(|(i, n)| ColumnDef {
                    id: i as u32,
                    name: n.to_string(),
                    ty: SqlType::Int32,
                    nullable: true,
                    not_null_pending: false,
                    default: None,
                    origin_default: None,
                    sequence: None,
                })
                .collect(),
            handle: Handle::PrimaryKey(vec![1]),
            indexes: vec![IndexDef {
                id: 1,
                name: "test_pkey".into(),
                columns: vec![1],
                unique: true,
                primary: true,
                clustered: true,
                state: IndexState::Public,
                predicate: None,
            }],
            next_column_id: 2,
            next_index_id: 2,
            checks: Vec::new(),
            foreign_keys: Vec::new(),
        };
        let mut s = CatalogSnapshot::default();
        s.tables.insert("test".into(), Arc::new(table));
        s
    }

    fn add(name: &str, if_not_exists: bool) -> AlterAction {
        AlterAction::AddColumn {
            column: ColumnSpec {
                name: name.into(),
                ty: SqlType::Int32,
                nullable: true,
                default: None,
                origin_default: None,
            },
            if_not_exists,
        }
    }

    #[test]
    fn one_bad_action_fails_the_whole_statement() {
        // ORIGINS.md §1: ADD COLUMN a, ADD COLUMN b where a exists.
        let s = snapshot();
        let e = apply_alter(&s, 7, "test", &[add("a", false), add("b", false)]).unwrap_err();
        assert_eq!(e.code, "42701");
        assert!(!e.retryable);
        let e = apply_alter(&s, 7, "test", &[add("c", false), add("c", false)]).unwrap_err();
        assert_eq!(e.code, "42701");
        let t = apply_alter(&s, 7, "test", &[add("c", false), add("d", false)])
            .unwrap()
            .unwrap();
        let names: Vec<_> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "ts", "c", "d"]);
        assert_eq!(t.columns[2].id, 2);
        assert_eq!(t.columns[3].id, 3);
        assert_eq!(t.next_column_id, 4);
    }

    #[test]
    fn if_not_exists_and_if_exists_skip_quietly() {
        let s = snapshot();
        assert_eq!(apply_alter(&s, 7, "test", &[add("a", true)]).unwrap(), None);
        let drop = AlterAction::DropColumn {
            name: "zz".into(),
            if_exists: true,
        };
        assert_eq!(apply_alter(&s, 7, "test", &[drop]).unwrap(), None);
    }

    #[test]
    fn drops_and_renames_check_their_columns() {
        let s = snapshot();
        let e = apply_alter(
            &s,
            7,
            "test",
            &[AlterAction::DropColumn {
                name: "ts".into(),
                if_exists: false,
            }],
        )
        .unwrap_err();
        assert_eq!(e.code, "0A000");
        let e = apply_alter(
            &s,
            7,
            "test",
            &[AlterAction::RenameColumn {
                from: "a".into(),
                to: "ts".into(),
                checks: vec![],
            }],
        )
        .unwrap_err();
        assert_eq!(e.code, "42701");
        let e = apply_alter(
            &s,
            7,
            "test",
            &[AlterAction::RenameTable { to: "test".into() }],
        )
        .unwrap();
        assert_eq!(e, None);
        let e = apply_alter(&s, 8, "gone", &[add("x", false)]).unwrap_err();
        assert_eq!(e.code, "42P01");
    }

    #[test]
    fn a_rename_rewrites_the_checks_that_read_the_column_as_planned() {
        let mut s = snapshot();
        let mut table = (**s.tables.get("test").unwrap()).clone();
        table.checks.push(flotilla_catalog::CheckDef {
            name: "test_a_check".into(),
            expr: "a > 0".into(),
            columns: vec![0],
            validated: true,
        });
        s.tables.insert("test".into(), Arc::new(table));
        let rename = |from: &str| AlterAction::RenameColumn {
            from: "a".into(),
            to: "b".into(),
            checks: vec![CheckRewrite {
                name: "test_a_check".into(),
                from: from.into(),
                to: "b > 0".into(),
            }],
        };
        let t = apply_alter(&s, 7, "test", &[rename("a > 0")])
            .unwrap()
            .unwrap();
        assert_eq!(t.checks[0].expr, "b > 0");
        assert_eq!(t.column("b").unwrap().id, 0);
        // The constraint changed after the SQL node rewrote it: nothing applies.
        let e = apply_alter(&s, 7, "test", &[rename("a >= 0")]).unwrap_err();
        assert_eq!(e.code, "40001");
    }
}
