//! The sqllogictest harness shared by the standalone run (`crates/sql/tests/slt.rs`) and
//! the cluster run (`crates/server/tests/slt_cluster.rs`): the runner adapter, the corpus,
//! and the list of records PostgreSQL 15 fails too.

#![allow(dead_code)]

use std::any::Any;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flotilla_sql::{QueryResult, Session, SqlError};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Record};

/// Opens a fresh database for one file: a session and whatever keeps it alive.
pub type Factory = fn() -> Opened;

/// A database being opened: its session and whatever keeps it alive.
pub type Opened = Pin<Box<dyn Future<Output = (Session, Box<dyn Any + Send>)> + Send>>;

/// The database under test: Flotilla in process, or (to establish what PostgreSQL itself
/// passes) a real PostgreSQL named by `FLOTILLA_SLT_POSTGRES`.
enum Db {
    Flotilla {
        session: Box<Session>,
        /// Whatever keeps the session's database alive.
        _db: Box<dyn Any + Send>,
    },
    Postgres(tokio_postgres::Client),
}

#[derive(Debug)]
struct DbError(SqlError);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.0.message, self.0.code)
    }
}

impl std::error::Error for DbError {}

fn cell(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    let text = match array.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            let v = datafusion::arrow::compute::cast(array, &DataType::Float64).unwrap();
            let v = v
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Float64Array>()
                .unwrap()
                .value(row);
            format!("{v:.3}")
        }
        DataType::Boolean => {
            let b = array
                .as_any()
                .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                .unwrap()
                .value(row);
            // The corpus was written for SQLite, where truth values are the integers 1 and 0.
            if b { "1" } else { "0" }.into()
        }
        _ => ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
            .unwrap()
            .value(row)
            .to_string(),
    };
    if text.is_empty() {
        "(empty)".into()
    } else {
        text
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Boolean => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

#[async_trait::async_trait]
impl AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let session = match self {
            Db::Flotilla { session, .. } => session,
            Db::Postgres(client) => return run_postgres(client, sql).await,
        };
        let (mut results, error) = session.simple_query(sql).await;
        if let Some(e) = error {
            return Err(DbError(e));
        }
        match results.pop() {
            Some(QueryResult::Rows {
                schema, batches, ..
            }) => {
                let types = schema
                    .fields()
                    .iter()
                    .map(|f| column_type(f.data_type()))
                    .collect();
                let mut rows = Vec::new();
                for b in &batches {
                    for r in 0..b.num_rows() {
                        rows.push(b.columns().iter().map(|c| cell(c, r)).collect());
                    }
                }
                Ok(DBOutput::Rows { types, rows })
            }
            _ => Ok(DBOutput::StatementComplete(0)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "flotilla"
    }
}

/// Runs one record's SQL on PostgreSQL, formatting values as the Flotilla side does.
async fn run_postgres(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<DBOutput<DefaultColumnType>, DbError> {
    use tokio_postgres::types::Type;
    let pg_err = |e: tokio_postgres::Error| {
        DbError(SqlError {
            code: "XX000",
            message: e.to_string(),
            position: None,
            hint: None,
            detail: None,
        })
    };
    let trimmed = sql.trim_start().to_ascii_lowercase();
    if !(trimmed.starts_with("select")
        || trimmed.starts_with("with")
        || trimmed.starts_with("values"))
    {
        client.batch_execute(sql).await.map_err(pg_err)?;
        return Ok(DBOutput::StatementComplete(0));
    }
    let rows = client.query(sql, &[]).await.map_err(pg_err)?;
    let Some(first) = rows.first() else {
        return Ok(DBOutput::Rows {
            types: vec![],
            rows: vec![],
        });
    };
    let types: Vec<DefaultColumnType> = first
        .columns()
        .iter()
        .map(|c| match *c.type_() {
            Type::INT2 | Type::INT4 | Type::INT8 | Type::BOOL => DefaultColumnType::Integer,
            Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DefaultColumnType::FloatingPoint,
            _ => DefaultColumnType::Text,
        })
        .collect();
    let mut out = Vec::new();
    for row in &rows {
        let mut cells = Vec::new();
        for (i, c) in row.columns().iter().enumerate() {
            let cell = match *c.type_() {
                Type::INT2 => row.get::<_, Option<i16>>(i).map(|v| v.to_string()),
                Type::INT4 => row.get::<_, Option<i32>>(i).map(|v| v.to_string()),
                Type::INT8 => row.get::<_, Option<i64>>(i).map(|v| v.to_string()),
                Type::BOOL => row
                    .get::<_, Option<bool>>(i)
                    .map(|v| if v { "1" } else { "0" }.to_string()),
                Type::FLOAT4 => row
                    .get::<_, Option<f32>>(i)
                    .map(|v| format!("{:.3}", v as f64)),
                Type::FLOAT8 => row.get::<_, Option<f64>>(i).map(|v| format!("{v:.3}")),
                Type::NUMERIC => row
                    .get::<_, Option<rust_decimal::Decimal>>(i)
                    .map(|v| format!("{:.3}", f64::try_from(v).unwrap_or(f64::NAN))),
                _ => row.try_get::<_, Option<String>>(i).ok().flatten(),
            };
            cells.push(match cell {
                None => "NULL".to_string(),
                Some(s) if s.is_empty() => "(empty)".to_string(),
                Some(s) => s,
            });
        }
        out.push(cells);
    }
    Ok(DBOutput::Rows { types, rows: out })
}

pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/sqllogictest")
}

/// Records PostgreSQL 15 fails too, and records where Flotilla knowingly differs (see
/// the files' headers).
fn postgres_failures() -> std::collections::HashSet<String> {
    let mut known = locations("tests/slt-postgres15-failures.txt");
    known.extend(locations("tests/slt-flotilla-divergences.txt"));
    known
}

fn locations(file: &str) -> std::collections::HashSet<String> {
    // Relative to the sql crate, wherever this harness is compiled from.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sql")
        .join(file);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// "dir/file.test:LINE" of a failure, from the runner's "at PATH:LINE".
fn failure_location(message: &str) -> Option<String> {
    let at = message.rfind("at /")?;
    let location = message[at + 3..].lines().next()?.trim();
    let rel = location.split("sqllogictest/").nth(1)?;
    Some(rel.to_string())
}

/// Outcome of one file: (records passed, records failed, failure messages).
pub async fn run_file(path: &Path, factory: Factory) -> (usize, usize, Vec<String>) {
    let records = sqllogictest::parse_file::<DefaultColumnType>(path)
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let mut runner = sqllogictest::Runner::new(move || async move {
        if let Ok(url) = std::env::var("FLOTILLA_SLT_POSTGRES") {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to FLOTILLA_SLT_POSTGRES");
            tokio::spawn(connection);
            // A fresh schema per file, as the Flotilla side gets a fresh database.
            client
                .batch_execute(
                    "DROP SCHEMA IF EXISTS slt CASCADE; CREATE SCHEMA slt; SET search_path = slt",
                )
                .await
                .unwrap();
            return Ok::<_, DbError>(Db::Postgres(client));
        }
        let (session, db) = factory().await;
        Ok::<_, DbError>(Db::Flotilla {
            session: Box::new(session),
            _db: db,
        })
    });
    runner.add_label("postgresql");
    let (mut passed, mut failed, mut failures) = (0, 0, Vec::new());
    for record in records {
        let counted = matches!(record, Record::Statement { .. } | Record::Query { .. });
        match runner.run_async(record).await {
            Ok(_) if counted => passed += 1,
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                if let Ok(log) = std::env::var("FLOTILLA_SLT_FAILURES") {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(log)
                        .unwrap();
                    writeln!(f, "{}\n----", e).unwrap();
                }
                failures.push(e.to_string());
            }
        }
    }
    (passed, failed, failures)
}

pub fn files(dir: &str) -> Vec<PathBuf> {
    let root = corpus().join(dir);
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "test") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every record must pass, except records PostgreSQL 15 fails too.
pub async fn must_pass(paths: Vec<PathBuf>, factory: Factory) {
    let known = postgres_failures();
    let mut regressions = Vec::new();
    for path in paths {
        let (passed, failed, failures) = run_file(&path, factory).await;
        let mut also_postgres = 0;
        for f in failures {
            match failure_location(&f) {
                Some(loc) if known.contains(&loc) => also_postgres += 1,
                _ => regressions.push(f),
            }
        }
        println!(
            "{}: {passed} passed, {failed} failed ({also_postgres} of them listed: PostgreSQL 15 fails them too, or a known divergence)",
            path.display()
        );
    }
    assert!(
        regressions.is_empty(),
        "{} records failed that PostgreSQL 15 passes:\n{}",
        regressions.len(),
        regressions.join("\n")
    );
}

/// Runs a directory and checks its pass count has not regressed below `min_passed`.
pub async fn report_dir(dir: &str, min_passed: usize, factory: Factory) {
    let known = postgres_failures();
    let (mut passed, mut failed, mut listed, mut unlisted) = (0, 0, 0, 0);
    for path in files(dir) {
        let (p, f, failures) = run_file(&path, factory).await;
        println!("{}: {p} passed, {f} failed", path.display());
        for fail in &failures {
            if failure_location(fail).is_some_and(|l| known.contains(&l)) {
                listed += 1;
            } else {
                unlisted += 1;
                println!("  {}", fail.lines().next().unwrap_or(""));
            }
        }
        passed += p;
        failed += f;
    }
    println!(
        "{dir}: {passed} passed, {failed} failed ({listed} of them fail on PostgreSQL 15 too)"
    );
    assert!(
        passed >= min_passed,
        "{dir}: {passed} passed, fewer than the {min_passed} recorded"
    );
    assert_eq!(
        unlisted, 0,
        "{dir}: {unlisted} records failed that PostgreSQL 15 passes"
    );
}
