//! What a DDL job is: the change it makes, its state, and its record.

use flotilla_catalog::{SequenceDef, SqlType};
use flotilla_types::{ColumnId, TableId};
use serde::{Deserialize, Serialize};

/// A column to add, fully resolved by the SQL node that planned the statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// Name (already case-folded).
    pub name: String,
    /// Type.
    pub ty: SqlType,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Default expression as SQL text, evaluated at insert.
    pub default: Option<String>,
    /// What existing rows read as: the default evaluated once when the statement was
    /// planned, as an encoded one-column row value; `None` for NULL.
    pub origin_default: Option<Vec<u8>>,
}

/// A CHECK constraint's expression with a column renamed in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRewrite {
    /// The constraint's name.
    pub name: String,
    /// Its expression when the statement was planned.
    pub from: String,
    /// The same expression naming the column by its new name.
    pub to: String,
}

/// One change of an ALTER TABLE. The actions of one statement apply in order to one
/// snapshot of the table and commit as one schema change: all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlterAction {
    /// ADD COLUMN [IF NOT EXISTS].
    AddColumn {
        /// The column.
        column: ColumnSpec,
        /// Skip (rather than fail) if a column of that name exists.
        if_not_exists: bool,
    },
    /// DROP COLUMN [IF EXISTS]; indexes on the column go with it.
    DropColumn {
        /// The column's name.
        name: String,
        /// Skip (rather than fail) if there is no such column.
        if_exists: bool,
    },
    /// RENAME COLUMN from TO to.
    RenameColumn {
        /// Current name.
        from: String,
        /// New name.
        to: String,
        /// The CHECK constraints that read the column, their expressions rewritten by the
        /// SQL node (a constraint is kept as SQL text naming its columns).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<CheckRewrite>,
    },
    /// RENAME TO.
    RenameTable {
        /// New name.
        to: String,
    },
    /// ALTER COLUMN SET DEFAULT / DROP DEFAULT.
    SetDefault {
        /// The column's name.
        column: String,
        /// The new default expression; `None` drops it.
        default: Option<String>,
    },
    /// ALTER COLUMN ADD GENERATED ... AS IDENTITY: the column is numbered by `sequence`
    /// from now on; its existing values stay.
    AddIdentity {
        /// The column's name.
        column: String,
        /// Its new sequence (id allocated, identity set).
        sequence: SequenceDef,
    },
    /// ALTER COLUMN DROP NOT NULL. (A node still on the version before refuses NULL a
    /// little longer, which is only stricter.)
    DropNotNull {
        /// The column's name.
        column: String,
    },
    /// ALTER COLUMN TYPE to a type that holds every value of the old one, stored alike
    /// (see `alter::widens`): no row is rewritten or checked.
    WidenType {
        /// The column's name.
        column: String,
        /// Its new type.
        ty: SqlType,
    },
    /// DROP CONSTRAINT [IF EXISTS] of a CHECK or FOREIGN KEY constraint. (A node still on
    /// the version before enforces it a little longer, which is only stricter.)
    DropCheck {
        /// The constraint's name.
        name: String,
        /// Skip (rather than fail) if there is no such constraint.
        if_exists: bool,
    },
}

impl AlterAction {
    fn describe(&self) -> String {
        match self {
            AlterAction::AddColumn {
                column,
                if_not_exists,
            } => format!(
                "ADD COLUMN {}{} {}",
                if *if_not_exists { "IF NOT EXISTS " } else { "" },
                column.name,
                column.ty.pg_name()
            ),
            AlterAction::DropColumn { name, if_exists } => format!(
                "DROP COLUMN {}{name}",
                if *if_exists { "IF EXISTS " } else { "" }
            ),
            AlterAction::RenameColumn { from, to, .. } => {
                format!("RENAME COLUMN {from} TO {to}")
            }
            AlterAction::RenameTable { to } => format!("RENAME TO {to}"),
            AlterAction::SetDefault {
                column,
                default: Some(d),
            } => format!("ALTER COLUMN {column} SET DEFAULT {d}"),
            AlterAction::SetDefault {
                column,
                default: None,
            } => format!("ALTER COLUMN {column} DROP DEFAULT"),
            AlterAction::DropNotNull { column } => {
                format!("ALTER COLUMN {column} DROP NOT NULL")
            }
            AlterAction::WidenType { column, ty } => {
                format!("ALTER COLUMN {column} TYPE {}", ty.pg_name())
            }
            AlterAction::DropCheck { name, if_exists } => format!(
                "DROP CONSTRAINT {}{name}",
                if *if_exists { "IF EXISTS " } else { "" }
            ),
            AlterAction::AddIdentity { column, sequence } => format!(
                "ALTER COLUMN {column} ADD GENERATED {} AS IDENTITY",
                match sequence.identity {
                    Some(flotilla_catalog::Identity::Always) => "ALWAYS",
                    _ => "BY DEFAULT",
                }
            ),
        }
    }
}

/// The change a job makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// Metadata-only ALTER TABLE actions on one table, applied as one schema change.
    AlterTable {
        /// The table (by id: a concurrent rename does not redirect the job).
        table_id: TableId,
        /// Its name when the statement was planned (for messages and listings).
        table: String,
        /// The actions, in statement order.
        actions: Vec<AlterAction>,
    },
    /// CREATE [UNIQUE] INDEX, or ADD PRIMARY KEY / UNIQUE on an existing table: the index
    /// goes absent -> delete-only -> write-only -> write-reorg (backfill) -> public.
    AddIndex {
        /// The table.
        table_id: TableId,
        /// Its name when planned.
        table: String,
        /// The index's name.
        name: String,
        /// Indexed columns, by id.
        columns: Vec<u32>,
        /// UNIQUE.
        unique: bool,
        /// The table's (non-clustered) primary key: its columns become NOT NULL.
        primary: bool,
        /// Skip if a relation of that name exists.
        if_not_exists: bool,
        /// A partial index's predicate (needs `Feature::PartialIndexes`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        predicate: Option<flotilla_catalog::IndexPredicate>,
    },
    /// CREATE TABLE: the table (its ids allocated when planned) becomes public in one
    /// step.
    CreateTable {
        /// The table.
        table: flotilla_catalog::TableDef,
        /// Skip if a relation of that name exists.
        if_not_exists: bool,
    },
    /// DROP TABLE: the table leaves the catalog in one step; its rows become garbage.
    DropTable {
        /// The table.
        table_id: TableId,
        /// Its name when planned.
        table: String,
    },
    /// TRUNCATE: the table moves to a fresh, empty storage id in one step; the old rows
    /// become garbage.
    Truncate {
        /// The table.
        table_id: TableId,
        /// Its name when planned.
        table: String,
        /// The fresh storage id (allocated when planned).
        storage_id: TableId,
    },
    /// DROP INDEX: public -> write-only -> delete-only -> absent.
    DropIndex {
        /// The table.
        table_id: TableId,
        /// Its name when planned.
        table: String,
        /// The index's name.
        name: String,
    },
    /// ADD CHECK on an existing table: absent -> enforced on every write (not validated)
    /// -> validated, once a scan of the rows written before found none that makes it
    /// false. A row that does rolls the constraint back (23514). `NOT VALID` stops at
    /// the second state.
    AddCheck {
        /// The table.
        table_id: TableId,
        /// Its name when planned.
        table: String,
        /// The constraint, planned (its expression checked) by the SQL node.
        check: flotilla_catalog::CheckDef,
        /// The names of `check.columns` when it was planned (its expression names them).
        column_names: Vec<String>,
        /// Scan the existing rows (false: `NOT VALID`).
        validate: bool,
    },
    /// ALTER COLUMN SET NOT NULL: nullable -> writes refuse NULL (the rows not checked
    /// yet) -> NOT NULL, once a scan of the rows written before found no NULL in the
    /// column. A NULL found rolls it back (23502).
    SetNotNull {
        /// The table.
        table_id: TableId,
        /// Its name when planned.
        table: String,
        /// The column (by id: a concurrent rename does not redirect the job).
        column_id: ColumnId,
        /// Its name when planned.
        column: String,
    },
    /// VALIDATE CONSTRAINT of a `NOT VALID` check: a scan of the rows, then validated. A
    /// row that makes it false fails the job (23514) and leaves the constraint as it was.
    ValidateCheck {
        /// The table.
        table_id: TableId,
        /// Its name when planned.
        table: String,
        /// The constraint's name.
        name: String,
    },
    /// ADD FOREIGN KEY on an existing table: absent -> enforced (each write of a
    /// reference, and each delete of a referenced row, checked on every SQL node; the
    /// rows written before not checked yet) -> validated, once a scan found that every
    /// row written before references an existing row. A row that does not rolls the
    /// constraint back (23503). `NOT VALID` stops at the second state.
    AddForeignKey {
        /// The referencing table.
        table_id: TableId,
        /// Its name when planned.
        table: String,
        /// The constraint, planned by the SQL node (its columns and referenced index
        /// resolved, its types checked); checked again against the snapshot it commits on.
        fk: flotilla_catalog::ForeignKeyDef,
        /// Scan the existing rows (false: `NOT VALID`).
        validate: bool,
        /// ADD COLUMN ... REFERENCES: the column to add with the constraint, in the same
        /// step (the constraint's columns name it by the id it is to get); a rollback
        /// removes both.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        column: Option<ColumnSpec>,
    },
    /// VALIDATE CONSTRAINT of a `NOT VALID` foreign key: a scan of the rows, then
    /// validated. A row without its referenced row fails the job (23503) and leaves the
    /// constraint as it was.
    ValidateForeignKey {
        /// The referencing table.
        table_id: TableId,
        /// Its name when planned.
        table: String,
        /// The constraint's name.
        name: String,
    },
}

impl JobKind {
    /// The cluster-version gate of this kind of job, if it is newer than the base.
    pub fn feature(&self) -> Option<flotilla_types::version::Feature> {
        use flotilla_types::version::Feature;
        let acts = |fk: &flotilla_catalog::ForeignKeyDef| {
            !fk.on_delete.is_no_action() || !fk.on_update.is_no_action()
        };
        let column_where = |test: &dyn Fn(&flotilla_catalog::SqlType) -> bool| match self {
            JobKind::CreateTable { table, .. } => table.columns.iter().any(|c| test(&c.ty)),
            JobKind::AlterTable { actions, .. } => actions
                .iter()
                .any(|a| matches!(a, AlterAction::AddColumn { column, .. } if test(&column.ty))),
            _ => false,
        };
        let column_of =
            |types: &[flotilla_catalog::SqlType]| column_where(&|ty| types.contains(ty));
        // The newest feature first: a job needing several needs the newest of them.
        if let JobKind::AddIndex {
            predicate: Some(_), ..
        } = self
        {
            return Some(Feature::PartialIndexes);
        }
        if column_of(&[flotilla_catalog::SqlType::Interval]) {
            return Some(Feature::IntervalType);
        }
        let time = |ty: &flotilla_catalog::SqlType| {
            *ty == flotilla_catalog::SqlType::Time
                || ty.element() == Some(&flotilla_catalog::SqlType::Time)
        };
        if column_where(&time) {
            return Some(Feature::TimeType);
        }
        if column_where(&|ty| ty.element().is_some()) {
            return Some(Feature::ArrayTypes);
        }
        if column_of(&[
            flotilla_catalog::SqlType::Json,
            flotilla_catalog::SqlType::Jsonb,
        ]) {
            return Some(Feature::JsonTypes);
        }
        if column_of(&[flotilla_catalog::SqlType::Uuid]) {
            return Some(Feature::UuidType);
        }
        match self {
            JobKind::CreateTable { table, .. } if table.foreign_keys.iter().any(acts) => {
                Some(Feature::ReferentialActions)
            }
            JobKind::AddForeignKey { fk, .. } if acts(fk) => Some(Feature::ReferentialActions),
            JobKind::CreateTable { table, .. }
                if table.foreign_keys.iter().any(|fk| fk.deferrable) =>
            {
                Some(Feature::DeferrableForeignKeys)
            }
            JobKind::AddForeignKey { fk, column, .. } if fk.deferrable || column.is_some() => {
                Some(Feature::DeferrableForeignKeys)
            }
            JobKind::AlterTable { actions, .. }
                if actions
                    .iter()
                    .any(|a| matches!(a, AlterAction::WidenType { .. })) =>
            {
                Some(Feature::WidenColumnType)
            }
            JobKind::SetNotNull { .. } => Some(flotilla_types::version::Feature::SetNotNull),
            JobKind::CreateTable { table, .. } if !table.foreign_keys.is_empty() => {
                Some(flotilla_types::version::Feature::ForeignKeys)
            }
            JobKind::AddForeignKey { .. } | JobKind::ValidateForeignKey { .. } => {
                Some(flotilla_types::version::Feature::AddForeignKey)
            }
            _ => None,
        }
    }

    /// The table whose jobs run one after the other.
    pub fn table_id(&self) -> TableId {
        match self {
            JobKind::AlterTable { table_id, .. }
            | JobKind::AddIndex { table_id, .. }
            | JobKind::DropIndex { table_id, .. }
            | JobKind::AddCheck { table_id, .. }
            | JobKind::ValidateCheck { table_id, .. }
            | JobKind::AddForeignKey { table_id, .. }
            | JobKind::ValidateForeignKey { table_id, .. }
            | JobKind::SetNotNull { table_id, .. }
            | JobKind::DropTable { table_id, .. }
            | JobKind::Truncate { table_id, .. } => *table_id,
            JobKind::CreateTable { table, .. } => table.id,
        }
    }

    /// The table's name as planned.
    pub fn table_name(&self) -> &str {
        match self {
            JobKind::AlterTable { table, .. }
            | JobKind::AddIndex { table, .. }
            | JobKind::DropIndex { table, .. }
            | JobKind::AddCheck { table, .. }
            | JobKind::ValidateCheck { table, .. }
            | JobKind::AddForeignKey { table, .. }
            | JobKind::ValidateForeignKey { table, .. }
            | JobKind::SetNotNull { table, .. }
            | JobKind::DropTable { table, .. }
            | JobKind::Truncate { table, .. } => table,
            JobKind::CreateTable { table, .. } => &table.name,
        }
    }

    /// The job as a statement, for listings.
    pub fn describe(&self) -> String {
        match self {
            JobKind::AlterTable { table, actions, .. } => format!(
                "ALTER TABLE {table} {}",
                actions
                    .iter()
                    .map(AlterAction::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            JobKind::AddIndex {
                table,
                name,
                unique,
                primary,
                ..
            } => format!(
                "CREATE {}INDEX {name} ON {table}{}",
                if *unique { "UNIQUE " } else { "" },
                if *primary { " (primary key)" } else { "" }
            ),
            JobKind::DropIndex { name, .. } => format!("DROP INDEX {name}"),
            JobKind::AddCheck {
                table,
                check,
                validate,
                ..
            } => format!(
                "ALTER TABLE {table} ADD CONSTRAINT {} CHECK ({}){}",
                check.name,
                check.expr,
                if *validate { "" } else { " NOT VALID" }
            ),
            JobKind::ValidateCheck { table, name, .. }
            | JobKind::ValidateForeignKey { table, name, .. } => {
                format!("ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
            }
            JobKind::AddForeignKey {
                table,
                fk,
                validate,
                column: None,
                ..
            } => format!(
                "ALTER TABLE {table} ADD CONSTRAINT {} FOREIGN KEY{}",
                fk.name,
                if *validate { "" } else { " NOT VALID" }
            ),
            JobKind::AddForeignKey {
                table,
                fk,
                column: Some(column),
                ..
            } => format!(
                "ALTER TABLE {table} ADD COLUMN {} {} CONSTRAINT {} REFERENCES",
                column.name,
                column.ty.pg_name(),
                fk.name
            ),
            JobKind::SetNotNull { table, column, .. } => {
                format!("ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL")
            }
            JobKind::CreateTable { table, .. } => {
                let mut parts: Vec<String> = table
                    .columns
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.ty.pg_name()))
                    .collect();
                if let flotilla_catalog::Handle::PrimaryKey(ids) = &table.handle {
                    parts.push(format!("PRIMARY KEY ({})", table.column_list(ids)));
                }
                format!("CREATE TABLE {} ({})", table.name, parts.join(", "))
            }
            JobKind::DropTable { table, .. } => format!("DROP TABLE {table}"),
            JobKind::Truncate { table, .. } => format!("TRUNCATE {table}"),
        }
    }

    /// The job's type, for listings.
    pub fn type_name(&self) -> &'static str {
        match self {
            JobKind::AlterTable { .. } => "alter table",
            JobKind::AddIndex { .. } => "add index",
            JobKind::DropIndex { .. } => "drop index",
            JobKind::AddCheck { .. } | JobKind::AddForeignKey { .. } => "add constraint",
            JobKind::ValidateCheck { .. } | JobKind::ValidateForeignKey { .. } => {
                "validate constraint"
            }
            JobKind::SetNotNull { .. } => "set not null",
            JobKind::CreateTable { .. } => "create table",
            JobKind::DropTable { .. } => "drop table",
            JobKind::Truncate { .. } => "truncate table",
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for its table's earlier jobs, or for the owner.
    Queued,
    /// Being run (possibly between retries of a step).
    Running,
    /// Finished; its change is in the catalog.
    Done,
    /// Failed; nothing of it is in the catalog.
    Failed,
    /// Cancelled before its point of no return; nothing of it is in the catalog.
    Cancelled,
}

impl JobState {
    /// Queued or running: counts against the queue's cap.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }

    /// The state as listed by SHOW DDL JOBS.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Why a job (or a submission) failed, with the SQLSTATE the statement reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// SQLSTATE.
    pub code: String,
    /// What went wrong, for the user.
    pub message: String,
    /// Running the step again may succeed (a concurrent schema change, an unavailable
    /// service); anything else rolls the job back.
    pub retryable: bool,
}

impl JobError {
    /// A failure that no retry will fix.
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that a later attempt may not meet.
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: true,
        }
    }
}

/// A job's record: persisted with every change of state, listed by SHOW DDL JOBS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Id, increasing in submission order.
    pub id: u64,
    /// The change.
    pub kind: JobKind,
    /// Its state.
    pub state: JobState,
    /// Attempts of its current step that failed retryably.
    pub attempts: u32,
    /// The last error: of the failed attempt while running, the final one once failed.
    pub error: Option<JobError>,
    /// Wall-clock milliseconds since the Unix epoch of the submission.
    pub created_ms: u64,
    /// ... of the last change of its record.
    pub updated_ms: u64,
    /// ... when it finished.
    pub finished_ms: Option<u64>,
    /// The catalog version that holds its change (set when done).
    pub schema_version: Option<u64>,
    /// Cancellation was asked while a step was running; honoured before the next one.
    pub cancel_requested: bool,
    /// The submitter's idempotency key: a retried submission with the same key gets this
    /// job back rather than a second one.
    pub request_id: String,
    /// The job's change is committed as this catalog version (its point of no return);
    /// the job is done once every live SQL node uses it.
    #[serde(default)]
    pub waiting_for_version: Option<u64>,
    /// Where a multi-step job is (see the queue's step functions).
    #[serde(default)]
    pub step: u32,
    /// The index an index job adds or drops, once it has an id.
    #[serde(default)]
    pub index_id: Option<i64>,
    /// The backfill's checkpoint: the first row key not yet backfilled.
    #[serde(default)]
    pub reorg_cursor: Option<Vec<u8>>,
    /// Rows backfilled so far.
    #[serde(default)]
    pub reorg_rows: u64,
    /// The schema state the job's element is in, for listings.
    #[serde(default)]
    pub schema_state: String,
    /// Why the job is rolling back (`None` while rolling back: it was cancelled).
    #[serde(default)]
    pub rollback_cause: Option<JobError>,
    /// Later submissions this job answers: identical ones that joined it while it was
    /// active, and clients' retries of its own submission.
    #[serde(default)]
    pub joined: u32,
    /// Data the job leaves unreachable (a dropped table or index, a rolled-back index),
    /// deleted by the owner after the job finished.
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
}

/// The keys of one table's or index's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRange {
    /// Every row and index entry stored under a table's storage id.
    Table { storage_id: TableId },
    /// The entries of one index.
    Index { storage_id: TableId, index_id: i64 },
}

/// The deletion of a finished job's unreachable data: once every SQL node uses the
/// schema without it, nothing can read it, and it is deleted chunk by chunk at
/// `cleanup_records_per_s`, its cursor persisted after each chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleanup {
    /// Ranges still to delete; the first is in progress.
    pub ranges: Vec<DataRange>,
    /// Where the deletion of the first range goes on (`None`: at its start).
    pub cursor: Option<Vec<u8>>,
}

impl Cleanup {
    /// The deletion of `ranges`, not started.
    pub fn of(ranges: Vec<DataRange>) -> Self {
        Self {
            ranges,
            cursor: None,
        }
    }
}

impl Job {
    /// Done, failed or cancelled.
    pub fn is_finished(&self) -> bool {
        !self.state.is_active()
    }

    /// Finished, with data of its left to delete.
    pub fn cleanup_pending(&self) -> bool {
        self.is_finished() && self.cleanup.as_ref().is_some_and(|c| !c.ranges.is_empty())
    }
}
