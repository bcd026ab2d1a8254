//! The SQLite sqllogictest corpus (in ../shared/testdata/sqllogictest) against an
//! in-process Flotilla, with the label `postgresql`.
//!
//! `select1.test` ... `select5.test` and `evidence/` must pass in full. For `index/` and
//! `random/` the pass counts are printed and guarded against regression.

mod common;

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flotilla_sql::{QueryResult, Session, SqlError};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Record};

struct Db {
    session: Session,
    _db: common::TestDb,
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
        let (mut results, error) = self.session.simple_query(sql).await;
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

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/sqllogictest")
}

/// Outcome of one file: (records passed, records failed, first failures).
async fn run_file(path: &Path) -> (usize, usize, Vec<String>) {
    let records = sqllogictest::parse_file::<DefaultColumnType>(path)
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let mut runner = sqllogictest::Runner::new(|| async {
        let db = common::TestDb::new().await;
        Ok::<_, DbError>(Db {
            session: db.session(),
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
                if failures.len() < 5 {
                    failures.push(e.to_string());
                }
            }
        }
    }
    (passed, failed, failures)
}

fn files(dir: &str) -> Vec<PathBuf> {
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

async fn must_pass(paths: Vec<PathBuf>) {
    let mut report = Vec::new();
    let mut total_failed = 0;
    for path in paths {
        let (passed, failed, failures) = run_file(&path).await;
        println!("{}: {passed} passed, {failed} failed", path.display());
        total_failed += failed;
        if failed > 0 {
            report.push(format!("{}:\n  {}", path.display(), failures.join("\n  ")));
        }
    }
    assert_eq!(total_failed, 0, "failures:\n{}", report.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select1() {
    must_pass(vec![corpus().join("select1.test")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select2() {
    must_pass(vec![corpus().join("select2.test")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select3() {
    must_pass(vec![corpus().join("select3.test")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select4() {
    must_pass(vec![corpus().join("select4.test")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select5() {
    must_pass(vec![corpus().join("select5.test")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence() {
    must_pass(files("evidence")).await;
}

/// Runs a directory and checks its pass count has not regressed below `min_passed`.
async fn report_dir(dir: &str, min_passed: usize) {
    let (mut passed, mut failed) = (0, 0);
    for path in files(dir) {
        let (p, f, failures) = run_file(&path).await;
        println!("{}: {p} passed, {f} failed", path.display());
        for fail in failures.iter().take(2) {
            println!("  {}", fail.lines().next().unwrap_or(""));
        }
        passed += p;
        failed += f;
    }
    println!("{dir}: {passed} passed, {failed} failed");
    assert!(
        passed >= min_passed,
        "{dir}: {passed} passed, fewer than the {min_passed} recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_dir() {
    report_dir("index", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_dir() {
    report_dir("random", 0).await;
}
