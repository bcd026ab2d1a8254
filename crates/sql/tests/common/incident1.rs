//! ORIGINS.md §1 (incident 1) with a client's retry, shared by the standalone, the
//! in-process cluster and the playground tests. The ALTER TABLE that adds an existing
//! column together with a new one fails whole; the valid one is submitted, its client
//! loses the answer and submits it again from another session (on a cluster: another
//! SQL node) while the first job is still running. The retry must join that job, not run
//! the change a second time or fail half way, and a retry after the job finished must be
//! refused without changing anything.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::f1::{Conn, Node};

/// The DDL owner's test failpoint: while on, every job step fails retryably, so a job
/// stays active for as long as the test needs.
pub trait DdlFailpoint: Sync {
    fn set(&self, on: bool) -> impl Future<Output = ()> + Send;
}

const VALID: &str = "ALTER TABLE test ADD COLUMN c INT, ADD COLUMN d INT";

/// SHOW DDL JOBS's cells: job_id, table_name, job_type, state, schema_state, rows,
/// attempts, error, statement, created, finished, joined.
async fn jobs<C: Conn>(c: &mut C) -> Vec<Vec<String>> {
    c.run("SHOW DDL JOBS")
        .await
        .unwrap_or_else(|e| panic!("SHOW DDL JOBS: {e}"))
        .iter()
        .map(|r| r.split('|').map(str::to_string).collect())
        .collect()
}

/// Polls the ALTER's job record until `done` holds for it.
async fn await_alter<C: Conn>(c: &mut C, what: &str, done: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = jobs(c).await;
        if rows
            .iter()
            .any(|r| r[8].contains("ADD COLUMN c integer") && done(r))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn with_a_client_retry<N: Node, F: DdlFailpoint>(a: &N, b: &N, failpoint: &F) {
    let mut s = a.connect().await;
    s.run("CREATE TABLE test (a INT, ts TIMESTAMP PRIMARY KEY)")
        .await
        .unwrap();
    s.run("INSERT INTO test VALUES (1, '2026-01-01 00:00:00')")
        .await
        .unwrap();
    let e = s
        .run("ALTER TABLE test ADD COLUMN a INT, ADD COLUMN b INT")
        .await
        .unwrap_err();
    assert!(e.ends_with("(42701)"), "{e}");

    // The valid ALTER's job is held active; its client then gives up on the answer.
    failpoint.set(true).await;
    let mut first = a.connect().await;
    let lost = tokio::spawn(async move { first.run(VALID).await });
    let mut watcher = b.connect().await;
    await_alter(&mut watcher, "a failed attempt of the ALTER", |r| {
        r[6].parse::<u32>().unwrap() >= 1
    })
    .await;
    lost.abort();
    // The client retries on the other node; the job has not applied, so the statement is
    // valid there and joins the job.
    let mut second = b.connect().await;
    let retry = tokio::spawn(async move { second.run(VALID).await });
    await_alter(&mut watcher, "the retry joining the job", |r| {
        r.last().unwrap() == "1"
    })
    .await;
    failpoint.set(false).await;
    retry
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the retried ALTER: {e}"));
    let rows = jobs(&mut watcher).await;
    assert_eq!(rows.len(), 2, "CREATE TABLE and one ALTER job: {rows:?}");
    assert_eq!(rows[0][3], "done", "{rows:?}");
    assert_eq!(rows[0].last().unwrap(), "1", "{rows:?}");

    // A retry after the job finished is refused when planned and changes nothing.
    let e = watcher.run(VALID).await.unwrap_err();
    assert!(e.ends_with("(42701)"), "{e}");
    assert_eq!(jobs(&mut watcher).await.len(), 2);
    watcher
        .run("INSERT INTO test (a, ts, c, d) VALUES (2, '2026-01-02 00:00:00', 3, 4)")
        .await
        .unwrap();
    for node in [&mut s, &mut watcher] {
        assert_eq!(
            node.run("SELECT a, coalesce(c, -1), coalesce(d, -1) FROM test ORDER BY ts")
                .await
                .unwrap(),
            ["1|-1|-1", "2|3|4"]
        );
    }
}
