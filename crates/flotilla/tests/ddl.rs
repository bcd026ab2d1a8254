//! Online schema change end to end through the real binary: a `flotilla playground` of 3
//! meta members, 3 stores and 2 SQL nodes.
//!
//! - ORIGINS.md §1 (incident 1): an ALTER TABLE that adds an existing column with a new
//!   one fails whole; the valid one applies whole and the other SQL node uses the new
//!   columns as soon as the statement returns.
//! - kill -9 of the meta leader during an index backfill, twice: the job resumes from its
//!   checkpoint on each next leader and completes; ADMIN CHECK TABLE passes.
//! - ORIGINS.md §2 (the DDL flood): more DDL than the cap while every job fails retryably;
//!   the excess is refused at once, job records and the meta leader's memory stay
//!   bounded, and DDL works again once the failure clears.
//! - ORIGINS.md §1 with a client's retry, and F1 with one SQL node held a schema version
//!   behind the other (the scenarios the standalone and in-process cluster tests run, here
//!   over the PostgreSQL protocol against `flotilla sql` processes).

mod support;

use std::time::{Duration, Instant};

use flotilla_ddl::DdlJobs;
use support::cluster::Playground;

/// Rows of the table indexed while meta leaders are killed: 12 s of backfill at the
/// playground's 5,000 rows/s.
const ROWS: i64 = 60_000;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// The job row of SHOW DDL JOBS whose statement contains `what`.
async fn job_row(c: &tokio_postgres::Client, what: &str) -> Option<Vec<String>> {
    let rows = c.simple_query("SHOW DDL JOBS").await.ok()?;
    rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => {
            let cells: Vec<String> = (0..r.len())
                .map(|i| r.get(i).unwrap_or("").to_string())
                .collect();
            cells.iter().any(|c| c.contains(what)).then_some(cells)
        }
        _ => None,
    })
}

/// The playground's DDL jobs as the meta service serves them (for its failpoint).
async fn ddl_control(pg: &Playground) -> std::sync::Arc<flotilla_client::RemoteDdl> {
    let meta = std::sync::Arc::new(
        flotilla_client::MetaClient::new(
            pg.meta_endpoints.split(',').map(String::from).collect(),
            flotilla_client::ClientConfig::default(),
        )
        .unwrap(),
    );
    let catalog = flotilla_client::RemoteCatalog::open(meta.clone(), Duration::from_millis(250))
        .await
        .unwrap();
    flotilla_client::RemoteDdl::new(meta, catalog)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn schema_changes_survive_two_meta_leader_kills_and_a_ddl_flood_on_a_playground() {
    let dir = tempfile::tempdir().unwrap();
    // A slow backfill, so the meta leader can be killed in the middle of one.
    let mut pg = Playground::start(
        dir.path(),
        &[
            "--meta",
            "3",
            "--stores",
            "3",
            "--sql",
            "2",
            "--ddl-backfill-rows-per-s",
            "5000",
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a_url, b_url) = (pg.sql_url(0), pg.sql_url(1));

    // Incident 1, across two SQL nodes.
    rt.block_on(async {
        let a = connect(&a_url).await;
        let b = connect(&b_url).await;
        a.batch_execute("CREATE TABLE test (a INT, ts TIMESTAMP PRIMARY KEY)")
            .await
            .unwrap();
        let e = a
            .batch_execute("ALTER TABLE test ADD COLUMN a INT, ADD COLUMN b INT")
            .await
            .unwrap_err();
        assert_eq!(e.code().unwrap().code(), "42701", "{e}");
        a.batch_execute("ALTER TABLE test ADD COLUMN c INT, ADD COLUMN d INT")
            .await
            .unwrap();
        // The ALTER returned only once every SQL node used the new schema.
        b.batch_execute("INSERT INTO test (a, ts, c, d) VALUES (1, '2026-01-01 00:00:00', 3, 4)")
            .await
            .unwrap();
        let rows = a.query("SELECT a, c, d FROM test", &[]).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].get::<_, i32>(0),
                rows[0].get::<_, i32>(1),
                rows[0].get::<_, i32>(2)
            ),
            (1, 3, 4)
        );
        a.batch_execute(&format!(
            "CREATE TABLE big (id INT PRIMARY KEY, k INT);
             INSERT INTO big SELECT x, x % 97 FROM generate_series(1, {ROWS}) AS x"
        ))
        .await
        .unwrap();
    });

    // kill -9 of the meta leader during a backfill.
    let build = {
        let url = a_url.clone();
        rt.spawn(async move {
            let a = connect(&url).await;
            a.batch_execute("CREATE INDEX big_k ON big (k)").await
        })
    };
    // Two kills, each of the leader of the moment once the backfill has gone on under
    // it; the first member killed is back before the second kill, so two of three
    // members remain.
    let mut seen: i64 = 0;
    let mut killed: Vec<u64> = Vec::new();
    for kill in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(60);
        rt.block_on(async {
            let b = connect(&b_url).await;
            loop {
                assert!(
                    Instant::now() < deadline,
                    "no backfill progress before kill {kill}"
                );
                if let Some(row) = job_row(&b, "big_k").await
                    && row[3] == "running"
                    && let Ok(rows) = row[5].parse::<i64>()
                    && rows > seen + 2 * 1024
                {
                    seen = rows;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        if let Some(previous) = killed.last() {
            pg.restart("meta", *previous);
        }
        let leader = pg.meta_leader();
        pg.kill9("meta", leader);
        killed.push(leader);
    }
    // The statement may see the failover as a retryable error; the job goes on anyway.
    let outcome = rt.block_on(build).unwrap();
    if let Err(e) = &outcome {
        assert_eq!(e.code().map(|c| c.code()), Some("40001"), "{e}");
    }
    rt.block_on(async {
        let b = connect(&b_url).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let row = loop {
            assert!(Instant::now() < deadline, "the index job never finished");
            if let Some(row) = job_row(&b, "big_k").await
                && row.iter().any(|c| c == "done")
            {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Resumed from its checkpoint: the rows were backfilled once (a chunk cut short
        // by each kill may be done twice), not from the start again.
        let backfilled: i64 = row[5].parse().unwrap();
        assert!(
            (ROWS..=ROWS + 2 * 1024).contains(&backfilled),
            "backfilled {backfilled} rows for {ROWS}: {row:?}"
        );
        let check = b.simple_query("ADMIN CHECK TABLE big").await.unwrap();
        let ok = check.iter().any(|m| matches!(m,
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("big_k") && r.get(3) == Some("ok")));
        assert!(ok, "ADMIN CHECK TABLE big did not pass");
    });
    pg.restart("meta", *killed.last().unwrap());

    // The DDL flood: cap 128 (the default), every job failing retryably.
    const TABLES: usize = 8;
    const SUBMISSIONS: usize = 200;
    const CAP: usize = 128;
    rt.block_on(async {
        let a = connect(&a_url).await;
        for i in 0..TABLES {
            a.batch_execute(&format!("CREATE TABLE f{i} (id INT PRIMARY KEY)"))
                .await
                .unwrap();
        }
    });
    let leader = pg.meta_leader();
    let leader_pid = pg.pid("meta", leader);
    let rss_before = rss_kib(leader_pid);
    let control = rt.block_on(async {
        let control = ddl_control(&pg).await;
        control.set_failpoint(true).await.unwrap();
        control
    });
    let mut flood: Vec<Option<tokio::task::JoinHandle<_>>> = Vec::new();
    for i in 0..SUBMISSIONS {
        let url = if i % 2 == 0 {
            a_url.clone()
        } else {
            b_url.clone()
        };
        flood.push(Some(rt.spawn(async move {
            let c = connect(&url).await;
            c.batch_execute(&format!("ALTER TABLE f{} ADD COLUMN c{i} INT", i % TABLES))
                .await
                .map_err(|e| (e.code().map(|c| c.code().to_string()), e.to_string()))
        })));
    }
    let (refused, records, rss_flooded) = rt.block_on(async {
        let b = connect(&b_url).await;
        // Wait until every submission is either queued or refused.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let finished = flood
                .iter()
                .filter(|h| h.as_ref().is_some_and(|h| h.is_finished()))
                .count();
            let rows = b.simple_query("SHOW DDL JOBS").await.unwrap();
            let active = rows
                .iter()
                .filter(|m| {
                    matches!(m, tokio_postgres::SimpleQueryMessage::Row(r)
                    if matches!(r.get(3), Some("queued" | "running")))
                })
                .count();
            if finished == SUBMISSIONS - CAP && active == CAP {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{finished} statements returned, {active} jobs active"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut refused = 0;
        for slot in flood.iter_mut() {
            if !slot.as_ref().is_some_and(|h| h.is_finished()) {
                continue;
            }
            let h = slot.take().unwrap();
            let (code, message) = h.await.unwrap().expect_err("a refused submission");
            assert_eq!(code.as_deref(), Some("53000"), "{message}");
            refused += 1;
        }
        let rows = b.simple_query("SHOW DDL JOBS").await.unwrap();
        let records = rows
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        (refused, records, rss_kib(leader_pid))
    });
    assert_eq!(refused, SUBMISSIONS - CAP);
    // The earlier jobs (4 CREATE TABLE/ALTER/INDEX, the flood's tables) are finished
    // records; the flood adds at most the cap.
    assert!(records <= CAP + TABLES + 4, "{records} job records");
    // The accepted jobs keep retrying (each retry rewrites its record through the meta
    // group); the leader's memory must level off, not grow with the retries.
    let mut samples = vec![rss_flooded];
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(rss_kib(leader_pid));
    }
    eprintln!(
        "DDL flood: {refused} of {SUBMISSIONS} refused, {records} job records; meta leader RSS {rss_before} KiB before, then {samples:?} KiB at 1 s intervals while {CAP} jobs retry"
    );
    let peak = *samples.iter().max().unwrap();
    assert!(
        peak < rss_before + 256 * 1024,
        "meta leader RSS grew from {rss_before} to {peak} KiB"
    );
    assert!(
        samples[5] < samples[0] + 32 * 1024,
        "meta leader RSS kept growing while the jobs retried: {samples:?} KiB"
    );
    rt.block_on(async {
        control.set_failpoint(false).await.unwrap();
        for h in flood.into_iter().flatten() {
            h.await
                .unwrap()
                .expect("accepted jobs finish once the failure clears");
        }
        let a = connect(&a_url).await;
        a.batch_execute("ALTER TABLE f0 ADD COLUMN after_flood INT")
            .await
            .unwrap();
        let _ = control.list().await.unwrap();
    });
}

#[path = "../../sql/tests/common/f1.rs"]
mod f1;
#[path = "../../sql/tests/common/incident1.rs"]
mod incident1;

/// A session: one PostgreSQL connection to a SQL node.
struct PgConn(tokio_postgres::Client);

impl f1::Conn for PgConn {
    async fn run(&mut self, sql: &str) -> Result<Vec<String>, String> {
        let messages = self
            .0
            .simple_query(sql)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => format!("{} ({})", db.message(), db.code().code()),
                None => format!("{e} (08006)"),
            })?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect())
    }
}

/// A `flotilla sql` process of the playground.
struct PgNode {
    url: String,
    /// Asks the node which schema version it has loaded.
    probe: tokio_postgres::Client,
}

impl PgNode {
    async fn new(url: String) -> PgNode {
        let probe = connect(&url).await;
        PgNode { url, probe }
    }
}

impl f1::Node for PgNode {
    type Conn = PgConn;

    async fn connect(&self) -> PgConn {
        PgConn(connect(&self.url).await)
    }

    async fn schema_version(&self) -> u64 {
        let rows = self
            .probe
            .simple_query("SHOW schema_version")
            .await
            .unwrap();
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                _ => None,
            })
            .expect("SHOW schema_version returns a number")
    }
}

/// The meta leader's DDL failpoint, reached through the meta service.
struct MetaFailpoint(std::sync::Arc<flotilla_client::RemoteDdl>);

impl incident1::DdlFailpoint for MetaFailpoint {
    async fn set(&self, on: bool) {
        self.0.set_failpoint(on).await.unwrap()
    }
}

#[test]
fn a_retried_alter_and_f1_with_a_node_behind_on_a_playground() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Playground::start(dir.path(), &["--meta", "1", "--stores", "3", "--sql", "2"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = PgNode::new(pg.sql_url(0)).await;
        let b = PgNode::new(pg.sql_url(1)).await;
        let failpoint = MetaFailpoint(ddl_control(&pg).await);
        incident1::with_a_client_retry(&a, &b, &failpoint).await;
        f1::scenario(&a, &b).await;
    });
}
