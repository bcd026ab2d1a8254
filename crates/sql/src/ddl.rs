//! Schema changes: CREATE/DROP TABLE, TRUNCATE, CREATE/DROP INDEX and ALTER TABLE ADD
//! PRIMARY KEY / UNIQUE. Each is validated in full against one catalog snapshot before
//! anything changes, and committed as one catalog change. Indexes on tables that hold data
//! are built in three steps: the index becomes write-only (new writes maintain it), older
//! transactions drain, then existing rows are backfilled under row locks before the index
//! becomes public.

use std::collections::HashMap;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, ArrayElemTypeDef, CharacterLength,
    ColumnDef as AstColumnDef, ColumnOption, CreateIndex, CreateTable, CreateView,
    DataType as AstType, ExactNumberInfo, Expr, GeneratedAs, IndexColumn, ObjectName, ObjectType,
    RenameTableNameKind, SequenceOptions, Statement, TableConstraint, TimezoneInfo,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use flotilla_catalog::{
    ColumnDef, Handle, IdKind, Identity, IndexDef, IndexState, SchemaChange, SqlType, TableDef,
    ViewDef,
};
use flotilla_codec::{Datum, encode_row, index_prefix, prefix_end, record_prefix, table_prefix};
use flotilla_ddl::{
    AlterAction, ColumnSpec, DataRange, Job, JobError, JobKind, JobState, NewIndex, Reorg,
    apply_alter, plan_add_index,
};
use flotilla_tso::TsoRef;
use flotilla_txn::{IngestEntry, TxnError, TxnKvRef, TxnOptions, TxnView};
use flotilla_types::Timestamp;

use crate::api::QueryResult;
use crate::dml::{ident_name, relation_name};
use crate::error::SqlError;
use crate::rows::{decode_row_value, handle_of_key, index_entry};
use crate::session::Session;

/// How long one wait for a DDL job's end lasts before the statement asks again.
const JOB_WAIT_SLICE: Duration = Duration::from_secs(30);
/// Rows backfilled per chunk, one ingest each (an index job retries a chunk that fails
/// retryably, with backoff, from its checkpoint).
const BACKFILL_CHUNK_ROWS: usize = 1024;
/// Times a backfill chunk reads its rows again at a newer snapshot after another row took
/// one of its unique keys, before the chunk fails (and the job retries it).
const BACKFILL_CONFLICT_RETRIES: u32 = 20;
/// Most digits a NUMERIC column may have (Arrow's Decimal128).
const NUMERIC_PRECISION_MAX: u64 = 38;

/// True for the statements this module executes.
pub(crate) fn is_ddl(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateTable(_)
            | Statement::Drop { .. }
            | Statement::Truncate(_)
            | Statement::CreateIndex(_)
            | Statement::AlterTable(_)
            | Statement::CreateView(_)
            | Statement::CreateSequence { .. }
    )
}

fn command(tag: &str) -> QueryResult {
    QueryResult::Command { tag: tag.into() }
}

/// Runs a schema change.
pub(crate) async fn execute(
    session: &mut Session,
    statement: Statement,
) -> Result<QueryResult, SqlError> {
    // Jobs: the queue orders one table's changes, and other tables' DDL need not wait
    // for them.
    match statement {
        Statement::AlterTable(at) => return alter_table(session, at).await,
        Statement::CreateIndex(ci) => return create_index(session, ci).await,
        Statement::CreateTable(ct) => return create_table(session, ct).await,
        Statement::Drop {
            object_type: ObjectType::Table,
            if_exists,
            names,
            ..
        } => return drop_tables(session, &names, if_exists).await,
        Statement::Truncate(t) => {
            let names: Vec<ObjectName> = t.table_names.iter().map(|n| n.name.clone()).collect();
            return truncate(session, &names).await;
        }
        Statement::Drop {
            object_type: ObjectType::Index,
            if_exists,
            names,
            ..
        } => return drop_indexes(session, &names, if_exists).await,
        _ => {}
    }
    let engine = session.engine.clone();
    let _serial = engine.ddl_lock.lock().await;
    match statement {
        Statement::Drop {
            object_type,
            if_exists,
            names,
            ..
        } => match object_type {
            ObjectType::View => drop_views(session, &names, if_exists),
            ObjectType::Sequence => drop_sequences(session, &names, if_exists),
            other => Err(SqlError::unsupported(format!("DROP {other}"))),
        },
        Statement::CreateView(cv) => create_view(session, cv).await,
        Statement::CreateSequence {
            temporary,
            if_not_exists,
            name,
            data_type,
            sequence_options,
            owned_by,
        } => {
            if temporary {
                return Err(SqlError::unsupported("CREATE TEMPORARY SEQUENCE"));
            }
            if owned_by.is_some_and(|o| relation_name(&o) != "none") {
                return Err(SqlError::unsupported(
                    "OWNED BY for a sequence (a serial or identity column owns one)",
                ));
            }
            create_sequence(
                session,
                &name,
                if_not_exists,
                data_type.as_ref(),
                &sequence_options,
            )
        }
        other => Err(SqlError::unsupported(format!("statement {other}"))),
    }
}

/// PostgreSQL's longest `char(n)` or `varchar(n)` (`MaxAttrSize`).
const CHAR_LENGTH_MAX: u64 = 10_485_760;

/// The length of `char(n)` or `varchar(n)`: 1 to `CHAR_LENGTH_MAX`, as in PostgreSQL.
pub(crate) fn char_length(
    l: &Option<CharacterLength>,
    type_name: &str,
) -> Result<Option<u32>, SqlError> {
    match l {
        Some(CharacterLength::IntegerLength { length, .. }) => {
            let message = if *length < 1 {
                format!("length for type {type_name} must be at least 1")
            } else if *length > CHAR_LENGTH_MAX {
                format!("length for type {type_name} cannot exceed {CHAR_LENGTH_MAX}")
            } else {
                return Ok(Some(*length as u32));
            };
            Err(SqlError::new("22023", message))
        }
        _ => Ok(None),
    }
}

/// The catalog type of a SQL type name.
pub(crate) fn sql_type(t: &AstType) -> Result<SqlType, SqlError> {
    Ok(match t {
        AstType::Bool | AstType::Boolean => SqlType::Bool,
        AstType::SmallInt(_) | AstType::Int2(_) => SqlType::Int16,
        AstType::Int(_) | AstType::Integer(_) | AstType::Int4(_) => SqlType::Int32,
        AstType::BigInt(_) | AstType::Int8(_) => SqlType::Int64,
        AstType::Real | AstType::Float4 => SqlType::Float32,
        AstType::DoublePrecision | AstType::Float8 | AstType::Double(_) | AstType::Float64 => {
            SqlType::Float64
        }
        AstType::Float(info) => match info {
            ExactNumberInfo::Precision(p) if *p <= 24 => SqlType::Float32,
            _ => SqlType::Float64,
        },
        AstType::Numeric(info) | AstType::Decimal(info) => {
            let (precision, scale) = match info {
                // Unconstrained NUMERIC is stored with 38 digits, 10 after the point.
                ExactNumberInfo::None => (38, 10),
                ExactNumberInfo::Precision(p) => (*p, 0),
                ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
            };
            if precision == 0 || precision > NUMERIC_PRECISION_MAX {
                return Err(SqlError::new(
                    "22023",
                    format!(
                        "NUMERIC precision {precision} must be between 1 and {NUMERIC_PRECISION_MAX}"
                    ),
                ));
            }
            if scale < 0 || scale as u64 > precision {
                return Err(SqlError::new(
                    "22023",
                    format!("NUMERIC scale {scale} must be between 0 and precision {precision}"),
                ));
            }
            SqlType::Numeric {
                precision: precision as u8,
                scale: scale as i8,
            }
        }
        AstType::Text | AstType::String(_) => SqlType::Text,
        AstType::Varchar(l) | AstType::CharacterVarying(l) | AstType::CharVarying(l) => {
            SqlType::Varchar(char_length(l, "varchar")?)
        }
        AstType::Char(l) | AstType::Character(l) => {
            SqlType::Char(char_length(l, "char")?.unwrap_or(1))
        }
        AstType::Bytea => SqlType::Bytea,
        AstType::Uuid => SqlType::Uuid,
        AstType::JSON => SqlType::Json,
        AstType::JSONB => SqlType::Jsonb,
        AstType::Date => SqlType::Date,
        AstType::Interval {
            fields: None,
            precision: None,
        } => SqlType::Interval,
        AstType::Interval { .. } => {
            return Err(
                SqlError::unsupported("an interval type with fields or a precision")
                    .with_hint("Declare the column interval; values keep every field."),
            );
        }
        AstType::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => SqlType::Time,
        AstType::Time(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            return Err(SqlError::unsupported("type time with time zone")
                .with_hint("Use time (without time zone), or timestamptz for a moment in time."));
        }
        AstType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            SqlType::Timestamp
        }
        AstType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            SqlType::TimestampTz
        }
        AstType::Array(ArrayElemTypeDef::SquareBracket(element, _)) => {
            // PostgreSQL ignores a declared size (`int[3]`) and number of dimensions
            // (`int[][]` is `int[]`), as here; only one-dimensional values are stored.
            let element = sql_type(element)?;
            match element {
                array @ SqlType::Array(_) => array,
                SqlType::Json | SqlType::Jsonb | SqlType::Interval => {
                    return Err(SqlError::unsupported(format!(
                        "an array of {}",
                        element.pg_name()
                    ))
                    .with_hint("Store the array as one jsonb value, or its elements as rows."));
                }
                element => SqlType::Array(Box::new(element)),
            }
        }
        AstType::Custom(name, _) => match relation_name(name).as_str() {
            "timestamptz" => SqlType::TimestampTz,
            "time" => SqlType::Time,
            "int2" => SqlType::Int16,
            "int4" => SqlType::Int32,
            "int8" => SqlType::Int64,
            "float4" => SqlType::Float32,
            "float8" => SqlType::Float64,
            "bpchar" => SqlType::Char(1),
            other => return Err(SqlError::unsupported(format!("type \"{other}\""))),
        },
        other => return Err(SqlError::unsupported(format!("type \"{other}\""))),
    })
}

fn index_column_names(columns: &[IndexColumn]) -> Result<Vec<String>, SqlError> {
    columns
        .iter()
        .map(|c| match &c.column.expr {
            Expr::Identifier(i) => Ok(ident_name(i)),
            other => Err(SqlError::unsupported(format!(
                "index on expression {other}"
            ))),
        })
        .collect()
}

fn column_ids(table: &TableDef, names: &[String]) -> Result<Vec<u32>, SqlError> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        let col = table.column(name).ok_or_else(|| {
            SqlError::new(
                "42703",
                format!("column \"{name}\" named in key does not exist"),
            )
        })?;
        if ids.contains(&col.id) {
            return Err(SqlError::new(
                "42701",
                format!("column \"{name}\" appears twice in index definition"),
            ));
        }
        if let SqlType::Array(_) = col.ty {
            // Keys are encoded to sort as their values do; an array has no such encoding.
            return Err(SqlError::unsupported(format!(
                "a key or index on column \"{name}\" of type {}",
                col.ty.pg_name()
            ))
            .with_hint("Index the values in a table of their own, one row per element."));
        }
        if col.ty == SqlType::Interval {
            // An interval key would have to sort and be equal as PostgreSQL's do (a month
            // as 30 days: `1 mon` = `30 days`), which the stored form does not.
            return Err(SqlError::unsupported(format!(
                "a key or index on column \"{name}\" of type interval"
            ))
            .with_hint("Key or index a bigint column holding its length in microseconds."));
        }
        ids.push(col.id);
    }
    Ok(ids)
}

/// Checks that a default expression is a valid expression of no columns.
async fn validate_default(session: &Session, expr: &Expr) -> Result<(), SqlError> {
    plan_default(session, expr).await.map(|_| ())
}

/// `SELECT expr`, planned.
async fn plan_default(
    session: &Session,
    expr: &Expr,
) -> Result<datafusion::logical_expr::LogicalPlan, SqlError> {
    let ctx = session.context(Timestamp::MAX, Vec::new(), HashMap::new());
    let statement = Parser::parse_sql(&PostgreSqlDialect {}, &format!("SELECT {expr}"))
        .map_err(|e| SqlError::new("42601", e.to_string()))?
        .pop()
        .ok_or_else(|| SqlError::internal("empty default"))?;
    ctx.plan(statement).await
}

/// Whether the default `expr` gives each row its own value (`random()`, `nextval`,
/// `clock_timestamp()`): volatile, in DataFusion's terms.
async fn default_is_volatile(session: &Session, expr: &Expr) -> Result<bool, SqlError> {
    let plan = plan_default(session, expr).await?;
    Ok(plan.expressions().iter().any(|e| e.is_volatile()))
}

async fn create_table(session: &mut Session, ct: CreateTable) -> Result<QueryResult, SqlError> {
    let catalog = session.engine.catalog.clone();
    let snapshot = catalog.snapshot();
    let name = relation_name(&ct.name);
    if snapshot.relation_exists(&name) {
        if ct.if_not_exists {
            return Ok(command("CREATE TABLE"));
        }
        return Err(SqlError::new(
            "42P07",
            format!("relation \"{name}\" already exists"),
        ));
    }
    if ct.query.is_some() {
        return Err(SqlError::unsupported("CREATE TABLE ... AS"));
    }
    if ct.columns.is_empty() {
        return Err(SqlError::unsupported("a table without columns"));
    }
    let mut table = TableDef {
        id: 0,
        storage_id: 0,
        name: name.clone(),
        columns: Vec::new(),
        handle: Handle::RowId,
        indexes: Vec::new(),
        next_column_id: 0,
        next_index_id: 1,
        checks: Vec::new(),
        foreign_keys: Vec::new(),
    };
    let mut primary: Option<Vec<String>> = None;
    let mut uniques: Vec<(Option<String>, Vec<String>)> = Vec::new();
    let mut checks: Vec<crate::check::Written> = Vec::new();
    let mut foreign_keys: Vec<crate::foreign::Written> = Vec::new();
    let set_primary = |primary: &mut Option<Vec<String>>, cols: Vec<String>| {
        if primary.is_some() {
            return Err(SqlError::new(
                "42P16",
                format!("multiple primary keys for table \"{name}\" are not allowed"),
            ));
        }
        *primary = Some(cols);
        Ok(())
    };
    for column in &ct.columns {
        let col_name = ident_name(&column.name);
        if table.column(&col_name).is_some() {
            return Err(SqlError::new(
                "42701",
                format!("column \"{col_name}\" specified more than once"),
            ));
        }
        let serial = crate::sequence::serial_type(&column.data_type);
        let mut def = ColumnDef {
            id: table.next_column_id,
            name: col_name.clone(),
            ty: match &serial {
                Some(ty) => ty.clone(),
                None => sql_type(&column.data_type)?,
            },
            nullable: true,
            not_null_pending: false,
            default: None,
            origin_default: None,
            sequence: None,
        };
        table.next_column_id += 1;
        // A serial column is numbered by a sequence (its default); so is an identity one.
        let mut numbered: Option<(Option<Identity>, &[SequenceOptions])> =
            serial.as_ref().map(|_| (None, &[][..]));
        let mut explicit_null = false;
        for option in &column.options {
            match &option.option {
                ColumnOption::Null => {
                    def.nullable = true;
                    explicit_null = true;
                }
                ColumnOption::NotNull => def.nullable = false,
                ColumnOption::Default(expr) => {
                    validate_default(session, expr).await?;
                    def.default = Some(expr.to_string());
                }
                ColumnOption::Generated {
                    generated_as: generated @ (GeneratedAs::Always | GeneratedAs::ByDefault),
                    sequence_options,
                    generation_expr: None,
                    ..
                } => {
                    if numbered.is_some() {
                        return Err(SqlError::new(
                            "42601",
                            format!(
                                "multiple identity specifications for column \"{col_name}\" of table \"{name}\""
                            ),
                        ));
                    }
                    let identity = match generated {
                        GeneratedAs::Always => Identity::Always,
                        _ => Identity::ByDefault,
                    };
                    numbered = Some((
                        Some(identity),
                        sequence_options.as_deref().unwrap_or_default(),
                    ));
                }
                ColumnOption::Generated { .. } => {
                    return Err(SqlError::unsupported("a generated column"));
                }
                ColumnOption::PrimaryKey(_) => set_primary(&mut primary, vec![col_name.clone()])?,
                ColumnOption::Unique(u) => {
                    uniques.push((u.name.as_ref().map(ident_name), vec![col_name.clone()]))
                }
                ColumnOption::ForeignKey(fk) => foreign_keys.push(crate::foreign::Written {
                    name: option.name.as_ref().or(fk.name.as_ref()).map(ident_name),
                    columns: vec![col_name.clone()],
                    fk,
                }),
                ColumnOption::Check(check) => checks.push(crate::check::Written {
                    option_name: option.name.as_ref(),
                    check,
                }),
                other => {
                    return Err(SqlError::unsupported(format!("column option {other}")));
                }
            }
        }
        if let Some((identity, options)) = numbered {
            if def.default.is_some() {
                let what = if identity.is_some() {
                    "both default and identity specified"
                } else {
                    "multiple default values specified"
                };
                return Err(SqlError::new(
                    "42601",
                    format!("{what} for column \"{col_name}\" of table \"{name}\""),
                ));
            }
            if explicit_null {
                return Err(SqlError::new(
                    "42601",
                    format!(
                        "conflicting NULL/NOT NULL declarations for column \"{col_name}\" of table \"{name}\""
                    ),
                ));
            }
            let taken = |n: &str| {
                n == name
                    || snapshot.relation_exists(n)
                    || table
                        .columns
                        .iter()
                        .any(|c| c.sequence.as_ref().is_some_and(|s| s.name == n))
            };
            let sequence = crate::sequence::column_sequence(
                &name, &col_name, &def.ty, identity, options, taken,
            )?;
            def.nullable = false;
            def.default = Some(crate::sequence::nextval_default(&sequence));
            def.sequence = Some(sequence);
        }
        table.columns.push(def);
    }
    for constraint in &ct.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                set_primary(&mut primary, index_column_names(&pk.columns)?)?
            }
            TableConstraint::Unique(u) => uniques.push((
                u.name.as_ref().map(ident_name),
                index_column_names(&u.columns)?,
            )),
            TableConstraint::Check(check) => checks.push(crate::check::Written {
                option_name: None,
                check,
            }),
            TableConstraint::ForeignKey(fk) => foreign_keys.push(crate::foreign::Written {
                name: fk.name.as_ref().map(ident_name),
                columns: fk.columns.iter().map(ident_name).collect(),
                fk,
            }),
            other => return Err(SqlError::unsupported(format!("constraint {other}"))),
        }
    }
    table.checks = crate::check::plan_checks(session, &table, &checks).await?;
    if let Some(cols) = primary {
        let ids = column_ids(&table, &cols)?;
        for id in &ids {
            if let Some(c) = table.columns.iter_mut().find(|c| c.id == *id) {
                c.nullable = false;
            }
        }
        table.handle = Handle::PrimaryKey(ids.clone());
        table.indexes.push(IndexDef {
            id: table.next_index_id,
            name: format!("{name}_pkey"),
            columns: ids,
            unique: true,
            primary: true,
            clustered: true,
            state: IndexState::Public,
            predicate: None,
        });
        table.next_index_id += 1;
    }
    for (index_name, cols) in uniques {
        let ids = column_ids(&table, &cols)?;
        table.indexes.push(IndexDef {
            id: table.next_index_id,
            name: index_name.unwrap_or_else(|| format!("{name}_{}_key", cols.join("_"))),
            columns: ids,
            unique: true,
            primary: false,
            clustered: false,
            state: IndexState::Public,
            predicate: None,
        });
        table.next_index_id += 1;
    }
    let id = catalog.allocate(IdKind::Table, 1)?.start;
    table.id = id;
    table.storage_id = id;
    crate::foreign::plan(&snapshot, &mut table, &foreign_keys)?;
    for column in &mut table.columns {
        if let Some(sequence) = &mut column.sequence {
            sequence.id = catalog.allocate(IdKind::Table, 1)?.start;
        }
    }
    run_job(
        session,
        JobKind::CreateTable {
            table,
            if_not_exists: ct.if_not_exists,
        },
    )
    .await?;
    // Before the statement returns, so no transaction on the new table's keys is in
    // flight while its region splits off.
    catalog.storage_created(&[id]);
    Ok(command("CREATE TABLE"))
}

async fn drop_tables(
    session: &mut Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<QueryResult, SqlError> {
    // Validated in full first: nothing is dropped if any name is wrong.
    let snapshot = session.engine.catalog.snapshot();
    let mut jobs = Vec::new();
    for name in names {
        let name = relation_name(name);
        match snapshot.table(&name) {
            Some(t) => jobs.push(JobKind::DropTable {
                table_id: t.id,
                table: name,
            }),
            None if snapshot.views.contains_key(&name) => {
                return Err(SqlError::new("42809", format!("\"{name}\" is not a table"))
                    .with_hint("Use DROP VIEW to remove a view."));
            }
            None if if_exists => {}
            None => {
                return Err(SqlError::new(
                    "42P01",
                    format!("table \"{name}\" does not exist"),
                ));
            }
        }
    }
    // The rows stay behind as unreachable keys under the old storage id; reclaiming them
    // is left to garbage collection.
    for job in jobs {
        run_job(session, job).await?;
    }
    Ok(command("DROP TABLE"))
}

async fn create_view(session: &mut Session, cv: CreateView) -> Result<QueryResult, SqlError> {
    if cv.materialized {
        return Err(SqlError::unsupported("materialized views"));
    }
    let catalog = session.engine.catalog.clone();
    let snapshot = catalog.snapshot();
    let name = relation_name(&cv.name);
    let existing = snapshot.views.get(&name).cloned();
    if snapshot.relation_exists(&name) && !(cv.or_replace && existing.is_some()) {
        if cv.if_not_exists {
            return Ok(command("CREATE VIEW"));
        }
        return Err(SqlError::new(
            "42P07",
            format!("relation \"{name}\" already exists"),
        ));
    }
    // The query must plan now, against the current schema; it is stored as text and
    // expanded wherever the view is named.
    let mut query = cv.query.clone();
    crate::dml::expand_views_in_query(&mut query, &snapshot)?;
    let ctx = session.context(Timestamp::MAX, Vec::new(), HashMap::new());
    let plan = ctx.plan(Statement::Query(query)).await?;
    let columns: Vec<String> = cv.columns.iter().map(|c| ident_name(&c.name)).collect();
    if !columns.is_empty() && columns.len() > plan.schema().fields().len() {
        return Err(SqlError::new(
            "42601",
            "CREATE VIEW specifies more column names than columns",
        ));
    }
    let id = match &existing {
        Some(v) => v.id,
        None => catalog.allocate(IdKind::Table, 1)?.start,
    };
    catalog.commit(SchemaChange {
        base_version: snapshot.version,
        view_upserts: vec![ViewDef {
            id,
            name,
            query: cv.query.to_string(),
            columns,
        }],
        ..SchemaChange::default()
    })?;
    Ok(command("CREATE VIEW"))
}

fn drop_views(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<QueryResult, SqlError> {
    let catalog = session.engine.catalog.clone();
    let snapshot = catalog.snapshot();
    let mut drops = Vec::new();
    for name in names {
        let name = relation_name(name);
        match snapshot.views.get(&name) {
            Some(v) => drops.push(v.id),
            None if if_exists => {}
            None => {
                return Err(SqlError::new(
                    "42P01",
                    format!("view \"{name}\" does not exist"),
                ));
            }
        }
    }
    if !drops.is_empty() {
        catalog.commit(SchemaChange {
            base_version: snapshot.version,
            view_drops: drops,
            ..SchemaChange::default()
        })?;
    }
    Ok(command("DROP VIEW"))
}

/// CREATE SEQUENCE: a sequence of its own in the catalog, of type bigint unless `AS`
/// says otherwise.
fn create_sequence(
    session: &Session,
    name: &ObjectName,
    if_not_exists: bool,
    data_type: Option<&AstType>,
    options: &[SequenceOptions],
) -> Result<QueryResult, SqlError> {
    let catalog = session.engine.catalog.clone();
    let snapshot = catalog.snapshot();
    let name = relation_name(name);
    if snapshot.relation_exists(&name) {
        if if_not_exists {
            return Ok(command("CREATE SEQUENCE"));
        }
        return Err(SqlError::new(
            "42P07",
            format!("relation \"{name}\" already exists"),
        ));
    }
    let ty = data_type
        .map(sql_type)
        .transpose()?
        .unwrap_or(SqlType::Int64);
    let mut sequence = crate::sequence::sequence_def(name, "sequence", &ty, None, options)?;
    sequence.id = catalog.allocate(IdKind::Table, 1)?.start;
    catalog.commit(SchemaChange {
        base_version: snapshot.version,
        sequence_upserts: vec![sequence],
        ..SchemaChange::default()
    })?;
    Ok(command("CREATE SEQUENCE"))
}

/// DROP SEQUENCE of sequences made by CREATE SEQUENCE. One a column's default uses (a
/// column's own sequence, or `DEFAULT nextval('s')`) stays, with 2BP01, as PostgreSQL
/// refuses it without CASCADE (which is not supported here).
fn drop_sequences(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<QueryResult, SqlError> {
    let catalog = session.engine.catalog.clone();
    let snapshot = catalog.snapshot();
    let mut drops = Vec::new();
    for name in names {
        let name = relation_name(name);
        let call = format!("nextval('{}')", name.replace('\'', "''"));
        let dependent = snapshot.tables.values().find_map(|t| {
            t.columns
                .iter()
                .find(|c| c.default.as_deref().is_some_and(|d| d.contains(&call)))
                .map(|c| (t, c))
        });
        if let Some((table, column)) = dependent {
            return Err(SqlError::new(
                "2BP01",
                format!("cannot drop sequence {name} because other objects depend on it"),
            )
            .with_hint(format!(
                "default value for column {} of table {} depends on sequence {name}; drop or \
                 change that default first (DROP ... CASCADE is not supported)",
                column.name, table.name
            )));
        }
        if let Some((table, column, _)) = snapshot.owned_sequence(&name) {
            return Err(SqlError::new(
                "2BP01",
                format!(
                    "cannot drop sequence {name} because column {} of table {} requires it",
                    column.name, table.name
                ),
            )
            .with_hint(format!(
                "You can drop column {} of table {} instead, or first detach the sequence \
                 with ALTER SEQUENCE {name} OWNED BY NONE.",
                column.name, table.name
            )));
        }
        if let Some(sequence) = snapshot.sequences.get(&name) {
            drops.push(sequence.id);
        } else if snapshot.relation_exists(&name) {
            return Err(crate::sequence::not_a_sequence(&name));
        } else if !if_exists {
            return Err(SqlError::new(
                "42P01",
                format!("sequence \"{name}\" does not exist"),
            ));
        }
    }
    if !drops.is_empty() {
        catalog.commit(SchemaChange {
            base_version: snapshot.version,
            sequence_drops: drops,
            ..SchemaChange::default()
        })?;
    }
    Ok(command("DROP SEQUENCE"))
}

async fn drop_indexes(
    session: &mut Session,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<QueryResult, SqlError> {
    // Validated in full first: nothing is dropped if any name is wrong.
    let snapshot = session.engine.catalog.snapshot();
    let mut jobs = Vec::new();
    for name in names {
        let name = relation_name(name);
        let Some(table) = snapshot.table_of_index(&name) else {
            if if_exists {
                continue;
            }
            return Err(SqlError::new(
                "42704",
                format!("index \"{name}\" does not exist"),
            ));
        };
        flotilla_ddl::index_to_drop(&snapshot, table.id, &table.name, &name).map_err(job_error)?;
        jobs.push(JobKind::DropIndex {
            table_id: table.id,
            table: table.name.clone(),
            name,
        });
    }
    for job in jobs {
        run_job(session, job).await?;
    }
    Ok(command("DROP INDEX"))
}

async fn truncate(session: &mut Session, names: &[ObjectName]) -> Result<QueryResult, SqlError> {
    let catalog = session.engine.catalog.clone();
    let snapshot = catalog.snapshot();
    let mut jobs = Vec::new();
    for name in names {
        let name = relation_name(name);
        let table = snapshot
            .table(&name)
            .ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" does not exist")))?;
        // A fresh key prefix empties the table at once; the old rows become garbage.
        let storage_id = catalog.allocate(IdKind::Table, 1)?.start;
        jobs.push((
            JobKind::Truncate {
                table_id: table.id,
                table: name,
                storage_id,
            },
            storage_id,
        ));
    }
    for (job, storage_id) in jobs {
        run_job(session, job).await?;
        catalog.storage_created(&[storage_id]);
    }
    Ok(command("TRUNCATE TABLE"))
}

async fn create_index(session: &mut Session, ci: CreateIndex) -> Result<QueryResult, SqlError> {
    let table_name = relation_name(&ci.table_name);
    let snapshot = session.engine.catalog.snapshot();
    let table = snapshot.table(&table_name).ok_or_else(|| {
        SqlError::new("42P01", format!("relation \"{table_name}\" does not exist"))
    })?;
    let cols = index_column_names(&ci.columns)?;
    let name = match &ci.name {
        Some(n) => relation_name(n),
        None => format!("{table_name}_{}_idx", cols.join("_")),
    };
    let columns = column_ids(table, &cols)?;
    let predicate = match &ci.predicate {
        Some(p) => Some(crate::partial::plan(session, table, p).await?),
        None => None,
    };
    let table_id = table.id;
    add_index(
        session,
        &snapshot,
        NewIndex {
            table_id,
            table: &table_name,
            name: &name,
            columns: &columns,
            unique: ci.unique,
            primary: false,
            if_not_exists: ci.if_not_exists,
            predicate: predicate.as_ref(),
        },
    )
    .await?;
    Ok(command("CREATE INDEX"))
}

/// Validates a new index against `snapshot` exactly as the job will when it runs (the
/// same function), then submits the job, unless IF NOT EXISTS found the name taken.
async fn add_index(
    session: &mut Session,
    snapshot: &flotilla_catalog::CatalogSnapshot,
    new: NewIndex<'_>,
) -> Result<(), SqlError> {
    if plan_add_index(snapshot, &new).map_err(job_error)?.is_none() {
        return Ok(());
    }
    run_job(
        session,
        JobKind::AddIndex {
            table_id: new.table_id,
            table: new.table.to_string(),
            name: new.name.to_string(),
            columns: new.columns.to_vec(),
            unique: new.unique,
            primary: new.primary,
            if_not_exists: new.if_not_exists,
            predicate: new.predicate.cloned(),
        },
    )
    .await?;
    Ok(())
}

async fn add_constraint(
    session: &mut Session,
    table_name: &str,
    constraint: TableConstraint,
    not_valid: bool,
) -> Result<QueryResult, SqlError> {
    let snapshot = session.engine.catalog.snapshot();
    let table = snapshot.table(table_name).ok_or_else(|| {
        SqlError::new("42P01", format!("relation \"{table_name}\" does not exist"))
    })?;
    let (name, cols, primary) = match &constraint {
        TableConstraint::PrimaryKey(pk) => {
            if table.primary_key().is_some() {
                return Err(SqlError::new(
                    "42P16",
                    format!("multiple primary keys for table \"{table_name}\" are not allowed"),
                ));
            }
            let cols = index_column_names(&pk.columns)?;
            let name = pk
                .name
                .as_ref()
                .map(ident_name)
                .unwrap_or_else(|| format!("{table_name}_pkey"));
            (name, cols, true)
        }
        TableConstraint::Unique(u) => {
            let cols = index_column_names(&u.columns)?;
            let name = u
                .name
                .as_ref()
                .map(ident_name)
                .unwrap_or_else(|| format!("{table_name}_{}_key", cols.join("_")));
            (name, cols, false)
        }
        TableConstraint::ForeignKey(fk) => {
            let fk = crate::foreign::plan_added(&snapshot, table, fk)?;
            let hint = format!(
                "{} Or add the constraint NOT VALID, to check new writes only.",
                crate::foreign::unreferenced_rows_hint(&snapshot, table, &fk)
            );
            let kind = JobKind::AddForeignKey {
                table_id: table.id,
                table: table_name.to_string(),
                fk,
                validate: !not_valid,
                column: None,
            };
            run_job(session, kind)
                .await
                .map_err(|e| with_hint_on(e, "23503", hint))?;
            return Ok(command("ALTER TABLE"));
        }
        TableConstraint::Check(check) => {
            let (check, column_names) = crate::check::plan_added(session, table, check).await?;
            run_job(
                session,
                JobKind::AddCheck {
                    table_id: table.id,
                    table: table_name.to_string(),
                    check,
                    column_names,
                    validate: !not_valid,
                },
            )
            .await?;
            return Ok(command("ALTER TABLE"));
        }
        other => return Err(SqlError::unsupported(format!("constraint {other}"))),
    };
    let columns = column_ids(table, &cols)?;
    let table_id = table.id;
    add_index(
        session,
        &snapshot,
        NewIndex {
            table_id,
            table: table_name,
            name: &name,
            columns: &columns,
            unique: true,
            primary,
            if_not_exists: false,
            predicate: None,
        },
    )
    .await?;
    Ok(command("ALTER TABLE"))
}

/// The index backfill of DDL jobs (the write-reorg step), over the same seams as SQL.
pub struct SqlReorg {
    kv: TxnKvRef,
    tso: TsoRef,
    options: TxnOptions,
    runtime: tokio::runtime::Handle,
    /// The DataFusion state CHECK constraints are evaluated in when validated.
    template: datafusion::execution::SessionState,
}

/// Memory one chunk of a CHECK constraint's validation may use in DataFusion (its rows
/// are at most `BACKFILL_CHUNK_ROWS`).
const CHECK_SCAN_MEMORY_BYTES: usize = 64 << 20;

impl SqlReorg {
    /// A backfill worker whose transactions run on the current runtime.
    pub fn new(kv: TxnKvRef, tso: TsoRef) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            kv,
            tso,
            options: TxnOptions::default(),
            runtime: tokio::runtime::Handle::current(),
            template: crate::context::template_state(CHECK_SCAN_MEMORY_BYTES)
                .expect("a DataFusion state of the default settings builds"),
        })
    }
}

/// A reorg error as a job's: conflicts, lapsed locks and unavailable stores pass; a
/// duplicate, a NULL key or a row that breaks a constraint does not.
fn reorg_error(e: SqlError) -> JobError {
    let retryable = matches!(e.code, "40001" | "55P03" | "57P03" | "53000" | "40P01");
    JobError {
        code: e.code.to_string(),
        // Not the hint: a failing row's values do not belong in job records.
        message: e.message,
        retryable,
    }
}

impl SqlReorg {
    /// One chunk of a constraint's validation scan: up to `BACKFILL_CHUNK_ROWS` rows of
    /// `table` from `cursor` (`None`: the first), read at a fresh snapshot, with the view
    /// that read them and where the next chunk starts; `None` when no rows are left.
    async fn read_chunk(
        &self,
        table: &TableDef,
        cursor: Option<&[u8]>,
    ) -> Result<Option<(TxnView, Vec<u8>, Vec<Vec<Datum>>)>, SqlError> {
        let prefix = record_prefix(table.storage_id);
        let end = prefix_end(&prefix);
        let cursor = cursor.map_or(prefix, <[u8]>::to_vec);
        // Every node enforces the constraint before the scan starts (the job waited for
        // that), so a snapshot taken now sees every row written without it.
        let snapshot_ts = self.tso.get_ts().await.map_err(TxnError::from)?;
        let view = TxnView::detached(
            self.kv.clone(),
            snapshot_ts,
            self.options.lock_wait_timeout_ms,
        );
        let rows = view.scan(&cursor, &end, BACKFILL_CHUNK_ROWS).await?;
        let Some((last, _)) = rows.last() else {
            return Ok(None);
        };
        let mut next = last.clone();
        next.push(0);
        let values = rows
            .iter()
            .map(|(_, value)| decode_row_value(table, value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((view, next, values)))
    }
}

impl Reorg for SqlReorg {
    fn backfill_chunk(
        &self,
        table: &TableDef,
        index: &IndexDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), JobError> {
        let prefix = record_prefix(table.storage_id);
        let end = prefix_end(&prefix);
        let cursor = cursor.map_or(prefix, <[u8]>::to_vec);
        let chunk = backfill_chunk(
            &self.kv,
            &self.tso,
            &self.options,
            table,
            index,
            index.primary,
            &cursor,
            &end,
        );
        self.runtime.block_on(chunk).map_err(reorg_error)
    }

    fn check_chunk(
        &self,
        table: &TableDef,
        check: &flotilla_catalog::CheckDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), JobError> {
        let chunk = async {
            let Some((view, next, values)) = self.read_chunk(table, cursor).await? else {
                return Ok((None, 0));
            };
            crate::check::validate(&self.template, view, table, check, &values).await?;
            Ok((Some(next), values.len() as u64))
        };
        self.runtime.block_on(chunk).map_err(reorg_error)
    }

    fn foreign_key_chunk(
        &self,
        table: &TableDef,
        fk: &flotilla_catalog::ForeignKeyDef,
        parent: &TableDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), JobError> {
        let chunk = async {
            let Some((view, next, values)) = self.read_chunk(table, cursor).await? else {
                return Ok((None, 0));
            };
            crate::foreign::validate(&view, table, parent, fk, &values).await?;
            Ok((Some(next), values.len() as u64))
        };
        self.runtime.block_on(chunk).map_err(reorg_error)
    }

    fn delete_range_chunk(
        &self,
        range: &DataRange,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, JobError> {
        let prefix = match range {
            DataRange::Table { storage_id } => table_prefix(*storage_id),
            DataRange::Index {
                storage_id,
                index_id,
            } => index_prefix(*storage_id, *index_id),
        };
        let end = prefix_end(&prefix);
        let start = cursor.map_or(prefix, <[u8]>::to_vec);
        self.runtime
            .block_on(self.kv.delete_range(&start, &end, limit))
            .map_err(|e| {
                let e = SqlError::from(e);
                JobError::retryable(e.code, format!("deleting dropped data: {}", e.message))
            })
    }
}

/// One chunk of an index backfill from `cursor`: reads up to `BACKFILL_CHUNK_ROWS` rows
/// at a fresh snapshot and ingests their entries as committed at that snapshot's
/// timestamp (`TxnKv::ingest`), so it locks nothing and writes one record per entry.
/// Writers need not wait for it: every transaction that commits after the snapshot
/// maintains the index itself (write-only), and its newer version of an entry wins.
/// Returns where the next chunk starts (`None` when the table is done) and the rows read.
#[allow(clippy::too_many_arguments)]
async fn backfill_chunk(
    kv: &TxnKvRef,
    tso: &TsoRef,
    options: &TxnOptions,
    table: &TableDef,
    index: &IndexDef,
    not_null: bool,
    cursor: &[u8],
    end: &[u8],
) -> Result<(Option<Vec<u8>>, u64), SqlError> {
    let duplicate = || {
        SqlError::new(
            "23505",
            format!(
                "could not create unique index \"{}\": key is duplicated",
                index.name
            ),
        )
    };
    let mut attempt = 0;
    loop {
        // A timestamp of the backfill's own: no transaction starts or commits at it.
        let snapshot_ts = tso.get_ts().await.map_err(TxnError::from)?;
        let rows = TxnView::detached(kv.clone(), snapshot_ts, options.lock_wait_timeout_ms)
            .scan(cursor, end, BACKFILL_CHUNK_ROWS)
            .await?;
        let Some((last, _)) = rows.last() else {
            return Ok((None, 0));
        };
        let mut next = last.clone();
        next.push(0);
        let mut seen = std::collections::HashSet::new();
        let mut entries = Vec::with_capacity(rows.len());
        for (key, value) in &rows {
            let row = decode_row_value(table, value)?;
            let handle = handle_of_key(table, key)?.to_vec();
            if not_null {
                for id in &index.columns {
                    let pos = table.column_position(*id).expect("index column");
                    if row[pos].is_null() {
                        return Err(SqlError::new(
                            "23502",
                            format!(
                                "column \"{}\" of relation \"{}\" contains null values",
                                table.columns[pos].name, table.name
                            ),
                        ));
                    }
                }
            }
            let Some((ikey, ivalue, unique)) = index_entry(table, index, &row, &handle) else {
                continue;
            };
            if unique && !seen.insert(ikey.clone()) {
                return Err(duplicate());
            }
            entries.push(IngestEntry {
                key: ikey,
                value: ivalue,
                unique,
            });
        }
        match kv
            .ingest(entries, snapshot_ts, options.lock_wait_timeout_ms)
            .await
        {
            Ok(()) => return Ok((Some(next), rows.len() as u64)),
            Err(TxnError::AlreadyExists { .. }) => return Err(duplicate()),
            // Another row took a unique key after the snapshot; this chunk's row may have
            // changed since, so read again at a newer snapshot, which settles it.
            Err(TxnError::WriteConflict { .. }) if attempt < BACKFILL_CONFLICT_RETRIES => {
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A job error as the statement's error.
pub(crate) fn job_error(e: JobError) -> SqlError {
    // SqlError carries static SQLSTATEs; these are the ones jobs report.
    let code = match e.code.as_str() {
        "0A000" => "0A000",
        "23502" => "23502",
        "23505" => "23505",
        "23514" => "23514",
        "23503" => "23503",
        "2BP01" => "2BP01",
        "40001" => "40001",
        "42701" => "42701",
        "42703" => "42703",
        "42704" => "42704",
        "42710" => "42710",
        "42809" => "42809",
        "42830" => "42830",
        "42P01" => "42P01",
        "42P07" => "42P07",
        "42P16" => "42P16",
        "53000" => "53000",
        "54000" => "54000",
        "54011" => "54011",
        "55000" => "55000",
        "57014" => "57014",
        "XX001" => "XX001",
        _ => "XX000",
    };
    let err = SqlError::new(code, e.message);
    if code == "53000" {
        err.with_hint("Too many schema changes are queued or running; retry later.")
    } else {
        err
    }
}

/// Fails if `kind` reads a table's rows in a job of its own (an index backfill, a
/// constraint's validation) and the session's transaction has written to that table (or,
/// for a foreign key, to the table it references). The job reads committed rows only: it
/// would build the index without the transaction's rows, or validate the constraint
/// without them, and the commit that follows would store rows the index misses or the
/// constraint forbids.
fn refuse_after_writes(session: &Session, kind: &JobKind) -> Result<(), SqlError> {
    let Some(open) = session.open.as_ref() else {
        return Ok(());
    };
    if !open.txn.has_writes() {
        return Ok(());
    }
    let snapshot = session.engine.catalog.snapshot();
    let Some(table) = snapshot.table_by_id(kind.table_id()) else {
        return Ok(());
    };
    let mut read = vec![table.as_ref()];
    match kind {
        JobKind::AddIndex { .. }
        | JobKind::AddCheck { validate: true, .. }
        | JobKind::ValidateCheck { .. }
        | JobKind::SetNotNull { .. } => {}
        JobKind::AddForeignKey { fk, .. } => read.extend(snapshot.referenced_table(table, fk)),
        JobKind::ValidateForeignKey { name, .. } => read.extend(
            table
                .foreign_keys
                .iter()
                .filter(|f| f.name == *name)
                .filter_map(|f| snapshot.referenced_table(table, f)),
        ),
        _ => return Ok(()),
    }
    for t in read {
        let prefix = table_prefix(t.storage_id);
        if open.txn.has_writes_in(&prefix, &prefix_end(&prefix)) {
            return Err(SqlError::unsupported(format!(
                "{} in a transaction that has already written to table \"{}\"",
                kind.describe(),
                t.name
            ))
            .with_hint(
                "The change reads the table's committed rows: commit the transaction's writes \
                 first, or run the schema change before them.",
            ));
        }
    }
    Ok(())
}

/// `e` with `hint` if it is of SQLSTATE `code`.
fn with_hint_on(e: SqlError, code: &str, hint: String) -> SqlError {
    if e.code == code && !hint.is_empty() {
        e.with_hint(hint)
    } else {
        e
    }
}

/// Submits `kind` as a DDL job and waits for its end: done, or the job's error.
pub(crate) async fn run_job(session: &mut Session, kind: JobKind) -> Result<Job, SqlError> {
    refuse_after_writes(session, &kind)?;
    // The job waits until no transaction uses an older schema: not for the session's own
    // (DDL in a transaction block), which uses the newest schema from here on.
    if let Some(open) = session.open.as_mut() {
        open.active.unpin();
        open.catalog = None;
    }
    let ddl = session.engine.ddl.clone();
    // A timestamp is unique across the cluster: the submission's idempotency key, so a
    // retried submission (a lost answer) joins the first rather than running twice.
    let request_id = session
        .engine
        .tso
        .get_ts()
        .await
        .map_err(|e| SqlError::new("40001", format!("timestamp oracle unavailable: {e}")))?
        .to_string();
    let mut job = ddl.submit(kind, request_id).await.map_err(job_error)?;
    while !job.is_finished() {
        job = ddl.wait(job.id, JOB_WAIT_SLICE).await.map_err(job_error)?;
    }
    match job.state {
        JobState::Done => Ok(job),
        JobState::Cancelled => Err(SqlError::new(
            "57014",
            format!("DDL job {} was cancelled", job.id),
        )),
        _ => Err(job_error(job.error.clone().unwrap_or_else(|| {
            JobError::fatal("XX000", format!("DDL job {} failed", job.id))
        }))),
    }
}

/// ALTER TABLE. Column changes, renames and defaults of one statement become one job,
/// validated first against one catalog snapshot (nothing is submitted if any part is
/// invalid) and applied by the job as one schema change. ADD PRIMARY KEY / UNIQUE build
/// an index and must come alone.
async fn alter_table(session: &mut Session, at: AlterTable) -> Result<QueryResult, SqlError> {
    let name = relation_name(&at.name);
    let snapshot = session.engine.catalog.snapshot();
    // Flotilla has no roles yet: every relation belongs to the one superuser, so a change
    // of owner (pg_dump writes one after each CREATE) records nothing, for any relation.
    if at
        .operations
        .iter()
        .all(|op| matches!(op, AlterTableOperation::OwnerTo { .. }))
    {
        if !snapshot.relation_exists(&name) && !at.if_exists {
            return Err(SqlError::new(
                "42P01",
                format!("relation \"{name}\" does not exist"),
            ));
        }
        return Ok(command("ALTER TABLE"));
    }
    let Some(table) = snapshot.table(&name).cloned() else {
        if at.if_exists {
            return Ok(command("ALTER TABLE"));
        }
        return Err(SqlError::new(
            "42P01",
            format!("relation \"{name}\" does not exist"),
        ));
    };
    let constraints = at
        .operations
        .iter()
        .filter(|op| matches!(op, AlterTableOperation::AddConstraint { .. }))
        .count();
    if constraints > 0 {
        if at.operations.len() > 1 {
            return Err(SqlError::unsupported(
                "ADD CONSTRAINT together with other changes in one ALTER TABLE; run them as separate statements",
            ));
        }
        let Some(AlterTableOperation::AddConstraint {
            constraint,
            not_valid,
        }) = at.operations.into_iter().next()
        else {
            unreachable!("counted one constraint");
        };
        return add_constraint(session, &name, constraint, not_valid).await;
    }
    if let [
        op @ (AlterTableOperation::DropConstraint { .. }
        | AlterTableOperation::ValidateConstraint { .. }),
    ] = at.operations.as_slice()
    {
        return alter_constraint(session, &table, op).await;
    }
    if at.operations.iter().any(adds_referencing_column) {
        let [_] = at.operations.as_slice() else {
            return Err(SqlError::unsupported(
                "ADD COLUMN ... REFERENCES together with other changes in one ALTER TABLE; run them as separate statements",
            ));
        };
        let op = at.operations.into_iter().next().expect("one operation");
        return add_referencing_column(session, &snapshot, &table, op).await;
    }
    let set_not_null = |op: &AlterTableOperation| {
        matches!(
            op,
            AlterTableOperation::AlterColumn {
                op: AlterColumnOperation::SetNotNull,
                ..
            }
        )
    };
    if at.operations.iter().any(set_not_null) {
        let [AlterTableOperation::AlterColumn { column_name, .. }] = at.operations.as_slice()
        else {
            return Err(SqlError::unsupported(
                "SET NOT NULL together with other changes in one ALTER TABLE; run them as separate statements",
            ));
        };
        let column = ident_name(column_name);
        let def = table
            .column(&column)
            .ok_or_else(|| crate::dml::no_such_column(&table, &column))?;
        run_job(
            session,
            JobKind::SetNotNull {
                table_id: table.id,
                table: name,
                column_id: def.id,
                column,
            },
        )
        .await?;
        return Ok(command("ALTER TABLE"));
    }
    let mut actions = Vec::new();
    for op in at.operations {
        actions.extend(alter_actions(session, &table, op).await?);
    }
    // Each rewrite is of the constraint as it is now, not as an earlier action of the
    // same statement would leave it. (PostgreSQL takes RENAME alone anyway.)
    let rewrites = actions
        .iter()
        .any(|a| matches!(a, AlterAction::RenameColumn { checks, .. } if !checks.is_empty()));
    if rewrites && actions.len() > 1 {
        return Err(SqlError::unsupported(
            "renaming a column a CHECK constraint reads together with other changes in one ALTER TABLE; run it alone",
        ));
    }
    apply_alter(&snapshot, table.id, &name, &actions).map_err(job_error)?;
    run_job(
        session,
        JobKind::AlterTable {
            table_id: table.id,
            table: name,
            actions,
        },
    )
    .await?;
    Ok(command("ALTER TABLE"))
}

/// DROP CONSTRAINT and VALIDATE CONSTRAINT, alone in their statement. A unique or
/// primary key constraint is its index: dropping it drops the index.
async fn alter_constraint(
    session: &mut Session,
    table: &TableDef,
    op: &AlterTableOperation,
) -> Result<QueryResult, SqlError> {
    let (name, drop, if_exists) = match op {
        AlterTableOperation::DropConstraint {
            name, if_exists, ..
        } => (ident_name(name), true, *if_exists),
        AlterTableOperation::ValidateConstraint { name } => (ident_name(name), false, false),
        _ => unreachable!("matched by the caller"),
    };
    let is_check = table.checks.iter().any(|c| c.name == name);
    if let Some(fk) = table.foreign_keys.iter().find(|f| f.name == name) {
        let kind = if drop {
            JobKind::AlterTable {
                table_id: table.id,
                table: table.name.clone(),
                actions: vec![AlterAction::DropCheck { name, if_exists }],
            }
        } else if fk.validated {
            return Ok(command("ALTER TABLE"));
        } else {
            JobKind::ValidateForeignKey {
                table_id: table.id,
                table: table.name.clone(),
                name,
            }
        };
        let hint = crate::foreign::unreferenced_rows_hint(&session.catalog(), table, fk);
        run_job(session, kind)
            .await
            .map_err(|e| with_hint_on(e, "23503", hint))?;
        return Ok(command("ALTER TABLE"));
    }
    let index = table
        .indexes
        .iter()
        .find(|i| i.name == name && i.is_unique_constraint());
    let kind = match (drop, is_check, index) {
        (true, true, _) => JobKind::AlterTable {
            table_id: table.id,
            table: table.name.clone(),
            actions: vec![AlterAction::DropCheck { name, if_exists }],
        },
        (true, false, Some(index)) => {
            if index.clustered {
                return Err(SqlError::unsupported(format!(
                    "dropping the primary key \"{name}\" that keys the rows of \"{}\"",
                    table.name
                ))
                .with_hint("Create a new table with the key you want and copy the rows over."));
            }
            JobKind::DropIndex {
                table_id: table.id,
                table: table.name.clone(),
                name,
            }
        }
        (false, true, _) => JobKind::ValidateCheck {
            table_id: table.id,
            table: table.name.clone(),
            name,
        },
        (false, false, Some(_)) => {
            return Err(SqlError::new(
                "42809",
                format!(
                    "constraint \"{name}\" of relation \"{}\" is not a foreign key or check constraint",
                    table.name
                ),
            ));
        }
        (_, false, None) if if_exists => return Ok(command("ALTER TABLE")),
        (_, false, None) => return Err(job_error(flotilla_ddl::no_constraint(&table.name, &name))),
    };
    run_job(session, kind).await?;
    Ok(command("ALTER TABLE"))
}

/// Whether `op` is ADD COLUMN with a REFERENCES option.
fn adds_referencing_column(op: &AlterTableOperation) -> bool {
    matches!(op, AlterTableOperation::AddColumn { column_def, .. }
        if column_def.options.iter().any(|o| matches!(o.option, ColumnOption::ForeignKey(_))))
}

/// ALTER TABLE t ADD COLUMN c ... REFERENCES p: one job adds the column and its foreign
/// key in one schema version, then checks the rows (a column with a DEFAULT gives them a
/// value) as ADD FOREIGN KEY does; a failure removes both.
async fn add_referencing_column(
    session: &mut Session,
    snapshot: &flotilla_catalog::CatalogSnapshot,
    table: &TableDef,
    op: AlterTableOperation,
) -> Result<QueryResult, SqlError> {
    let AlterTableOperation::AddColumn {
        if_not_exists,
        mut column_def,
        column_position: None,
        ..
    } = op
    else {
        return Err(SqlError::unsupported(format!("ALTER TABLE {op}")));
    };
    let mut references = Vec::new();
    column_def.options.retain(|o| match &o.option {
        ColumnOption::ForeignKey(fk) => {
            references.push((
                o.name.as_ref().or(fk.name.as_ref()).map(ident_name),
                fk.clone(),
            ));
            false
        }
        _ => true,
    });
    let [(name, fk)] = references.as_slice() else {
        return Err(SqlError::unsupported(
            "more than one REFERENCES on one added column; add the others with ADD FOREIGN KEY",
        ));
    };
    let column = ident_name(&column_def.name);
    if if_not_exists && table.column(&column).is_some() {
        return Ok(command("ALTER TABLE"));
    }
    let spec = column_spec(session, table, &column_def).await?;
    // The key is planned over the table as it is to be, with the column (under the id it
    // is to get; the job checks it does).
    let mut planned = table.clone();
    flotilla_ddl::add_column(&mut planned, &spec).map_err(job_error)?;
    let written = crate::foreign::Written {
        name: name.clone(),
        columns: vec![column],
        fk,
    };
    let fk = crate::foreign::plan_one(snapshot, &planned, &written)?;
    let hint = crate::foreign::unreferenced_rows_hint(snapshot, &planned, &fk);
    let kind = JobKind::AddForeignKey {
        table_id: table.id,
        table: table.name.clone(),
        fk,
        validate: true,
        column: Some(spec),
    };
    run_job(session, kind)
        .await
        .map_err(|e| with_hint_on(e, "23503", hint))?;
    Ok(command("ALTER TABLE"))
}

/// The job actions of one ALTER TABLE operation.
async fn alter_actions(
    session: &Session,
    table: &TableDef,
    op: AlterTableOperation,
) -> Result<Vec<AlterAction>, SqlError> {
    Ok(match op {
        AlterTableOperation::AddColumn {
            if_not_exists,
            column_def,
            column_position: None,
            ..
        } => vec![AlterAction::AddColumn {
            column: column_spec(session, table, &column_def).await?,
            if_not_exists,
        }],
        AlterTableOperation::DropColumn {
            column_names,
            if_exists,
            ..
        } => column_names
            .iter()
            .map(|c| AlterAction::DropColumn {
                name: ident_name(c),
                if_exists,
            })
            .collect(),
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => {
            let (from, to) = (ident_name(&old_column_name), ident_name(&new_column_name));
            let checks = crate::check::renamed_checks(table, &from, &to)?;
            vec![AlterAction::RenameColumn { from, to, checks }]
        }
        AlterTableOperation::RenameTable {
            table_name: RenameTableNameKind::To(to) | RenameTableNameKind::As(to),
        } => vec![AlterAction::RenameTable {
            to: relation_name(&to),
        }],
        AlterTableOperation::AlterColumn { column_name, op } => {
            let column = ident_name(&column_name);
            match op {
                AlterColumnOperation::SetDefault { value } => {
                    validate_default(session, &value).await?;
                    vec![AlterAction::SetDefault {
                        column,
                        default: Some(value.to_string()),
                    }]
                }
                AlterColumnOperation::DropDefault => {
                    vec![AlterAction::SetDefault {
                        column,
                        default: None,
                    }]
                }
                AlterColumnOperation::DropNotNull => vec![AlterAction::DropNotNull { column }],
                AlterColumnOperation::SetDataType {
                    data_type, using, ..
                } => {
                    if using.is_some() {
                        return Err(SqlError::unsupported("ALTER COLUMN TYPE ... USING")
                            .with_hint(WIDEN_HINT));
                    }
                    let Some(def) = table.column(&column) else {
                        return Err(crate::dml::no_such_column(table, &column));
                    };
                    let ty = sql_type(&data_type)?;
                    if !flotilla_ddl::widens(&def.ty, &ty) {
                        return Err(SqlError::unsupported(format!(
                            "ALTER COLUMN TYPE from {} to {}",
                            def.ty.pg_name(),
                            ty.pg_name()
                        ))
                        .with_hint(WIDEN_HINT));
                    }
                    vec![AlterAction::WidenType { column, ty }]
                }
                AlterColumnOperation::AddGenerated {
                    generated_as,
                    sequence_options,
                } => {
                    let Some(def) = table.column(&column) else {
                        return Err(crate::dml::no_such_column(table, &column));
                    };
                    let identity = match generated_as {
                        Some(GeneratedAs::Always) => Identity::Always,
                        _ => Identity::ByDefault,
                    };
                    let snapshot = session.engine.catalog.snapshot();
                    let mut sequence = crate::sequence::column_sequence(
                        &table.name,
                        &column,
                        &def.ty,
                        Some(identity),
                        sequence_options.as_deref().unwrap_or_default(),
                        |n| snapshot.relation_exists(n),
                    )?;
                    sequence.id = session.engine.catalog.allocate(IdKind::Table, 1)?.start;
                    vec![AlterAction::AddIdentity { column, sequence }]
                }
                other => {
                    return Err(SqlError::unsupported(format!(
                        "ALTER TABLE ... ALTER COLUMN {other}"
                    )));
                }
            }
        }
        other => return Err(SqlError::unsupported(format!("ALTER TABLE {other}"))),
    })
}

/// What ALTER COLUMN TYPE can do, for its refusals.
const WIDEN_HINT: &str = "Only a varchar or text column can change type, to a longer varchar or to text (no row is rewritten). Add a new column, copy the values over, and drop the old one.";

/// A column to add, with the value existing rows read as.
async fn column_spec(
    session: &Session,
    table: &TableDef,
    def: &AstColumnDef,
) -> Result<ColumnSpec, SqlError> {
    let name = ident_name(&def.name);
    // Existing rows would each need a value of the sequence; ADD COLUMN rewrites no row.
    let numbered = crate::sequence::serial_type(&def.data_type).is_some()
        || def
            .options
            .iter()
            .any(|o| matches!(o.option, ColumnOption::Generated { .. }));
    if numbered {
        return Err(SqlError::unsupported(
            "adding a serial, identity or generated column to an existing table",
        )
        .with_hint("Create the table with the column, or add an integer column with a default."));
    }
    let ty = sql_type(&def.data_type)?;
    let mut nullable = true;
    let mut default = None;
    for option in &def.options {
        match &option.option {
            ColumnOption::Null => nullable = true,
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Default(expr) => {
                // PostgreSQL rewrites the table to give each row its own value; ADD COLUMN
                // here rewrites no row, so the existing rows would all share one.
                if default_is_volatile(session, expr).await?
                    && table_has_rows(session, table).await?
                {
                    return Err(SqlError::unsupported(format!(
                        "ADD COLUMN with the volatile DEFAULT {expr} to a table with rows"
                    ))
                    .with_hint(
                        "Add the column without the default (or with a constant one), UPDATE \
                         the rows to their values, then ALTER COLUMN ... SET DEFAULT.",
                    ));
                }
                default = Some(expr.to_string());
            }
            ColumnOption::PrimaryKey(_) | ColumnOption::Unique(_) => {
                return Err(SqlError::unsupported(
                    "ADD COLUMN with PRIMARY KEY or UNIQUE; add the column, then the constraint",
                ));
            }
            other => {
                return Err(SqlError::unsupported(format!("column option {other}")));
            }
        }
    }
    let column = ColumnDef {
        id: 0,
        name: name.clone(),
        ty: ty.clone(),
        nullable,
        not_null_pending: false,
        default: default.clone(),
        origin_default: None,
        sequence: None,
    };
    // Existing rows read as the default evaluated now (as PostgreSQL fills them in when
    // it adds the column), without rewriting a row: ADD COLUMN is metadata-only.
    let origin = crate::dml::evaluate_default(session, &column).await?;
    if origin.is_null() && !nullable && table_has_rows(session, table).await? {
        return Err(SqlError::new(
            "23502",
            format!(
                "column \"{name}\" of relation \"{}\" contains null values",
                table.name
            ),
        )
        .with_hint("Give the column a DEFAULT, or add it as nullable."));
    }
    Ok(ColumnSpec {
        name,
        ty,
        nullable,
        default,
        origin_default: (!origin.is_null()).then(|| encode_row(&[(0, origin)])),
    })
}

/// True if `table` holds at least one row (read at a fresh timestamp).
async fn table_has_rows(session: &Session, table: &TableDef) -> Result<bool, SqlError> {
    let (txn, read_ts, _pin) = session.read_snapshot().await?;
    let prefix = record_prefix(table.storage_id);
    let rows = txn
        .view(read_ts)
        .scan(&prefix, &prefix_end(&prefix), 1)
        .await?;
    txn.rollback().await?;
    Ok(!rows.is_empty())
}

/// How long ADMIN CANCEL DDL JOB waits for a job to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// ADMIN CANCEL DDL JOB: cancels each job and waits until it has stopped; fails if one
/// finished first (or does not exist).
pub(crate) async fn cancel_jobs(session: &Session, ids: &[u64]) -> Result<QueryResult, SqlError> {
    let ddl = session.engine.ddl.clone();
    for id in ids {
        let mut job = ddl.cancel(*id).await.map_err(job_error)?;
        if !job.is_finished() {
            job = ddl.wait(*id, CANCEL_WAIT).await.map_err(job_error)?;
        }
        match job.state {
            JobState::Cancelled => {}
            JobState::Queued | JobState::Running => {
                return Err(SqlError::new(
                    "55000",
                    format!(
                        "DDL job {id} is still running {} s after it was asked to cancel; it stops before its next step",
                        CANCEL_WAIT.as_secs()
                    ),
                ));
            }
            other => {
                return Err(SqlError::new(
                    "55000",
                    format!(
                        "DDL job {id} finished ({}) before it could be cancelled",
                        other.name()
                    ),
                ));
            }
        }
    }
    Ok(command("ADMIN CANCEL DDL JOB"))
}

/// SHOW DDL JOBS: every job record, newest first.
pub(crate) async fn show_jobs(session: &Session) -> Result<QueryResult, SqlError> {
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    let mut jobs = session.engine.ddl.list().await.map_err(job_error)?;
    jobs.reverse();
    let time = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f+00").to_string())
    };
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Int64, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("job_type", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("schema_state", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("attempts", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("statement", DataType::Utf8, false),
        Field::new("created", DataType::Utf8, true),
        Field::new("finished", DataType::Utf8, true),
        Field::new("joined", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        std::sync::Arc::new(Int64Array::from_iter_values(
            jobs.iter().map(|j| j.id as i64),
        )),
        std::sync::Arc::new(StringArray::from_iter_values(
            jobs.iter().map(|j| j.kind.table_name().to_string()),
        )),
        std::sync::Arc::new(StringArray::from_iter_values(
            jobs.iter().map(|j| j.kind.type_name()),
        )),
        std::sync::Arc::new(StringArray::from_iter_values(jobs.iter().map(|j| {
            if j.cancel_requested && j.state.is_active() {
                "cancelling"
            } else {
                j.state.name()
            }
        }))),
        std::sync::Arc::new(StringArray::from_iter_values(jobs.iter().map(
            |j| match &j.cleanup {
                Some(c) if j.is_finished() && c.ranges.is_empty() => {
                    format!("{} (data deleted)", j.schema_state)
                }
                Some(_) if j.is_finished() => format!("{} (deleting data)", j.schema_state),
                _ => j.schema_state.clone(),
            },
        ))),
        std::sync::Arc::new(Int64Array::from_iter_values(
            jobs.iter().map(|j| j.reorg_rows as i64),
        )),
        std::sync::Arc::new(Int64Array::from_iter_values(
            jobs.iter().map(|j| i64::from(j.attempts)),
        )),
        std::sync::Arc::new(StringArray::from_iter(jobs.iter().map(|j| {
            j.error
                .as_ref()
                .map(|e| format!("{} ({})", e.message, e.code))
        }))),
        std::sync::Arc::new(StringArray::from_iter_values(
            jobs.iter().map(|j| j.kind.describe()),
        )),
        std::sync::Arc::new(StringArray::from_iter(
            jobs.iter().map(|j| time(j.created_ms)),
        )),
        std::sync::Arc::new(StringArray::from_iter(
            jobs.iter().map(|j| j.finished_ms.and_then(time)),
        )),
        std::sync::Arc::new(Int64Array::from_iter_values(
            jobs.iter().map(|j| i64::from(j.joined)),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| SqlError::internal(e.to_string()))?;
    Ok(QueryResult::Rows {
        schema,
        batches: vec![batch],
        tag: format!("SELECT {}", jobs.len()),
    })
}

/// The lines of EXPLAIN for a metadata-only ALTER TABLE (one `AlterTable` job).
async fn explain_alter(
    session: &Session,
    snapshot: &flotilla_catalog::CatalogSnapshot,
    table: &TableDef,
    operations: Vec<AlterTableOperation>,
    lines: &mut Vec<String>,
) -> Result<(), SqlError> {
    let name = table.name.clone();
    let mut actions = Vec::new();
    for op in operations {
        actions.extend(alter_actions(session, table, op).await?);
    }
    let changed = apply_alter(snapshot, table.id, &name, &actions).map_err(job_error)?;
    let kind = JobKind::AlterTable {
        table_id: table.id,
        table: name.clone(),
        actions,
    };
    lines.push(format!(
        "DDL job ({}): {}",
        kind.type_name(),
        kind.describe()
    ));
    lines.push(format!(
        "  validated against schema version {}",
        snapshot.version
    ));
    match changed {
        None => lines
            .push("  step 1: nothing to change (every action skipped by IF [NOT] EXISTS)".into()),
        Some(after) => {
            let next = snapshot.version + 1;
            let mut changes = Vec::new();
            for c in &after.columns {
                match table.column_by_id(c.id) {
                    None => changes.push(format!("column {}: absent -> public", c.name)),
                    Some(before) if before.name != c.name => {
                        changes.push(format!("column {} renamed to {}", before.name, c.name))
                    }
                    Some(before) if before.nullable != c.nullable => {
                        changes.push(format!("column {}: NOT NULL dropped", c.name))
                    }
                    Some(before) if before.default != c.default => changes.push(format!(
                        "column {}: default {}",
                        c.name,
                        c.default.as_deref().unwrap_or("dropped")
                    )),
                    _ => {}
                }
            }
            for c in &table.columns {
                if after.column_by_id(c.id).is_none() {
                    changes.push(format!("column {}: public -> absent", c.name));
                }
            }
            for c in &after.checks {
                match table.checks.iter().find(|b| b.name == c.name) {
                    Some(before) if before.expr != c.expr => changes.push(format!(
                        "check {}: ({}) rewritten as ({})",
                        c.name, before.expr, c.expr
                    )),
                    _ => {}
                }
            }
            for c in &table.checks {
                if !after.checks.iter().any(|a| a.name == c.name) {
                    changes.push(format!("check {}: dropped", c.name));
                }
            }
            for i in &table.indexes {
                if !after.indexes.iter().any(|a| a.id == i.id) {
                    changes.push(format!("index {}: public -> absent", i.name));
                }
            }
            if after.name != table.name {
                changes.push(format!("table renamed to {}", after.name));
            }
            lines.push(format!(
                "  step 1: commit schema version {next}, metadata only (the point of no return): {}",
                changes.join("; ")
            ));
            lines.push(format!(
                "  step 2: wait until every live SQL node uses schema version {next} (or its lease lapses)"
            ));
        }
    }
    Ok(())
}

/// The lines of EXPLAIN for an ALTER TABLE that runs a job scanning the rows (ADD CHECK,
/// ADD FOREIGN KEY, SET NOT NULL); `None` for any other operation.
async fn explain_scan_job(
    session: &Session,
    table: &TableDef,
    op: &AlterTableOperation,
) -> Result<Option<Vec<String>>, SqlError> {
    let v = session.engine.catalog.snapshot().version;
    let (kind, already, enforced, done, undo): ScanSteps = match op {
        AlterTableOperation::AddConstraint {
            constraint: TableConstraint::Check(check),
            not_valid,
        } => {
            let (check, column_names) = crate::check::plan_added(session, table, check).await?;
            let name = check.name.clone();
            let kind = JobKind::AddCheck {
                table_id: table.id,
                table: table.name.clone(),
                check,
                column_names,
                validate: !not_valid,
            };
            let added = added_constraint(
                kind,
                v,
                &name,
                "every write",
                "a row that makes it false rolls the job back (23514: the constraint is removed)",
                *not_valid,
            );
            match added {
                Ok(steps) => steps,
                Err(lines) => return Ok(Some(lines)),
            }
        }
        AlterTableOperation::AddConstraint {
            constraint: TableConstraint::ForeignKey(fk),
            not_valid,
        } => {
            let fk = crate::foreign::plan_added(&session.engine.catalog.snapshot(), table, fk)?;
            let name = fk.name.clone();
            let kind = JobKind::AddForeignKey {
                table_id: table.id,
                table: table.name.clone(),
                fk,
                validate: !not_valid,
                column: None,
            };
            let added = added_constraint(
                kind,
                v,
                &name,
                "every write of a reference and every delete or key update of a referenced row",
                "a row whose referenced row is missing rolls the job back (23503: the constraint is removed)",
                *not_valid,
            );
            match added {
                Ok(steps) => steps,
                Err(lines) => return Ok(Some(lines)),
            }
        }
        AlterTableOperation::AlterColumn {
            column_name,
            op: AlterColumnOperation::SetNotNull,
        } => {
            let column = ident_name(column_name);
            let def = table
                .column(&column)
                .ok_or_else(|| crate::dml::no_such_column(table, &column))?;
            let kind = JobKind::SetNotNull {
                table_id: table.id,
                table: table.name.clone(),
                column_id: def.id,
                column: column.clone(),
            };
            (
                kind,
                (!def.nullable).then(|| format!("  nothing to do: column {column} is NOT NULL")),
                format!("column {column}: writes refuse NULL, not NOT NULL yet"),
                format!("column {column}: NOT NULL (the point of no return)"),
                "a NULL rolls the job back (23502: the column stays nullable)",
            )
        }
        _ => return Ok(None),
    };
    let mut lines = vec![
        format!("DDL job ({}): {}", kind.type_name(), kind.describe()),
        format!("  validated against schema version {v}"),
    ];
    if let Some(already) = already {
        lines.push(already);
        return Ok(Some(lines));
    }
    lines.push(format!("  step 1: schema version {}: {enforced}", v + 1));
    lines.push(format!(
        "  step 2: once no transaction of schema version {v} is open, scan the rows in chunks of {BACKFILL_CHUNK_ROWS}, each at a fresh snapshot, checkpointed after each; {undo}"
    ));
    lines.push(format!("  step 3: schema version {}: {done}", v + 2));
    Ok(Some(lines))
}

/// What EXPLAIN shows of a job that scans the rows: the job, a line when it has nothing
/// to do, the state its first step enforces, the state its last step reaches, and what a
/// failing row does.
type ScanSteps = (JobKind, Option<String>, String, String, &'static str);

/// The EXPLAIN of `kind`, which adds constraint `name` enforced on `enforced_on`: its
/// steps, or (`Err`) the whole text for one added `NOT VALID` (one step, no scan).
fn added_constraint(
    kind: JobKind,
    version: u64,
    name: &str,
    enforced_on: &str,
    undo: &'static str,
    not_valid: bool,
) -> Result<ScanSteps, Vec<String>> {
    let enforced = format!("constraint {name}: absent -> enforced on {enforced_on}");
    if not_valid {
        return Err(vec![
            format!("DDL job ({}): {}", kind.type_name(), kind.describe()),
            format!("  validated against schema version {version}"),
            format!(
                "  step 1: schema version {}: {enforced}, NOT VALID (the existing rows are not checked)",
                version + 1
            ),
        ]);
    }
    Ok((
        kind,
        None,
        format!("{enforced}, not validated"),
        format!("constraint {name}: validated (the point of no return)"),
        undo,
    ))
}

/// EXPLAIN of a schema change: validates it against the current schema exactly as running
/// it would (nothing changes, nothing is submitted) and shows the job that would run,
/// with its steps and the schema states each element goes through.
pub(crate) async fn explain(
    session: &mut Session,
    statement: Statement,
) -> Result<QueryResult, SqlError> {
    let snapshot = session.engine.catalog.snapshot();
    let mut lines = Vec::new();
    match statement {
        Statement::AlterTable(at) => {
            let name = relation_name(&at.name);
            let table = snapshot.table(&name).cloned().ok_or_else(|| {
                SqlError::new("42P01", format!("relation \"{name}\" does not exist"))
            })?;
            if let [op] = at.operations.as_slice()
                && let Some(scan) = explain_scan_job(session, &table, op).await?
            {
                lines = scan;
            } else if at.operations.iter().any(|op| {
                matches!(
                    op,
                    AlterTableOperation::AddConstraint { .. }
                        | AlterTableOperation::AlterColumn {
                            op: AlterColumnOperation::SetNotNull,
                            ..
                        }
                )
            }) {
                return Err(SqlError::unsupported(
                    "EXPLAIN of this ALTER TABLE (for a key, EXPLAIN the equivalent CREATE UNIQUE INDEX; EXPLAIN a CHECK, FOREIGN KEY or SET NOT NULL alone)",
                ));
            } else {
                explain_alter(session, &snapshot, &table, at.operations, &mut lines).await?;
            }
        }
        Statement::CreateIndex(ci) => {
            let table_name = relation_name(&ci.table_name);
            let table = snapshot.table(&table_name).cloned().ok_or_else(|| {
                SqlError::new("42P01", format!("relation \"{table_name}\" does not exist"))
            })?;
            let cols = index_column_names(&ci.columns)?;
            column_ids(&table, &cols)?;
            let name = match &ci.name {
                Some(n) => relation_name(n),
                None => format!("{table_name}_{}_idx", cols.join("_")),
            };
            let predicate = match &ci.predicate {
                Some(p) => format!(
                    " WHERE {}",
                    crate::partial::predicate_sql(
                        &table,
                        &crate::partial::plan(session, &table, p).await?,
                        true
                    )
                ),
                None => String::new(),
            };
            lines.push(format!(
                "CREATE {}INDEX {name} ON {table_name} ({}){predicate}",
                if ci.unique { "UNIQUE " } else { "" },
                cols.join(", ")
            ));
            lines.push(format!(
                "  validated against schema version {}",
                snapshot.version
            ));
            if snapshot.relation_exists(&name) {
                if !ci.if_not_exists {
                    return Err(SqlError::new(
                        "42P07",
                        format!("relation \"{name}\" already exists"),
                    ));
                }
                lines.push(format!(
                    "  nothing to do: \"{name}\" exists (IF NOT EXISTS)"
                ));
            } else {
                let v = snapshot.version;
                lines.push(
                    "DDL job (add index), run by the DDL owner; each step is committed, then waited on until every live SQL node uses it"
                        .to_string(),
                );
                lines.push(format!(
                    "  step 1: schema version {}: index {name}: absent -> delete-only (writes remove its entries)",
                    v + 1
                ));
                lines.push(format!(
                    "  step 2: schema version {}: delete-only -> write-only (writes maintain it, reads ignore it)",
                    v + 2
                ));
                lines.push(format!(
                    "  step 3: schema version {}: write-only -> write-reorg; backfill the existing rows in chunks of {BACKFILL_CHUNK_ROWS} (each read at a snapshot and its entries written as of that snapshot, no row locked), checkpointed after each{}",
                    v + 3,
                    if ci.unique {
                        "; a duplicate rolls the job back (write-reorg -> delete-only -> absent)"
                    } else {
                        ""
                    }
                ));
                lines.push(format!(
                    "  step 4: schema version {}: write-reorg -> public (the point of no return)",
                    v + 4
                ));
            }
        }
        other => return Err(SqlError::unsupported(format!("EXPLAIN {other}"))),
    }
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new(
        "QUERY PLAN",
        DataType::Utf8,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![std::sync::Arc::new(StringArray::from(lines))],
    )
    .map_err(|e| SqlError::internal(e.to_string()))?;
    Ok(QueryResult::Rows {
        schema,
        batches: vec![batch],
        tag: "EXPLAIN".into(),
    })
}
