//! F1's hard case (ORIGINS.md §4, issue 4), shared by the standalone, the in-process
//! cluster and the playground tests: a schema change while two nodes write, one of them
//! held a schema version behind the other at every step of the change. On a standalone
//! both "nodes" are one engine and the one behind is a transaction pinned on the older
//! version.
//!
//! The scenario sees a node only through [`Node`] and [`Conn`], so the same steps run
//! against engines in this process (`f1_engine.rs`) and against `flotilla` processes
//! over the PostgreSQL protocol.

use std::future::Future;
use std::time::{Duration, Instant};

/// Rows `CREATE TABLE t` of `seed_sql` starts with; each round of writes takes its own.
pub const SEED_ROWS: i64 = 400;

/// The table the schema changes run on: `u` is unique, `extra` is there to be dropped.
pub fn seed_sql() -> [String; 2] {
    [
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, u INT, extra INT)".to_string(),
        format!("INSERT INTO t SELECT x, x % 7, x, x FROM generate_series(1, {SEED_ROWS}) AS x"),
    ]
}

/// A session on one SQL node.
pub trait Conn: Send + 'static {
    /// Runs one statement: its rows as text (cells joined by `|`), or its error as
    /// "message (SQLSTATE)".
    fn run(&mut self, sql: &str) -> impl Future<Output = Result<Vec<String>, String>> + Send;
}

/// One SQL node.
pub trait Node: Sync {
    type Conn: Conn;
    /// A new session.
    fn connect(&self) -> impl Future<Output = Self::Conn> + Send;
    /// The newest schema version this node has loaded.
    fn schema_version(&self) -> impl Future<Output = u64> + Send;
}

async fn exec<C: Conn>(session: &mut C, sql: &str) -> Result<Vec<String>, String> {
    session.run(sql).await
}

async fn must<C: Conn>(session: &mut C, sql: &str) {
    if let Err(e) = exec(session, sql).await {
        panic!("{sql}: {e}");
    }
}

/// The writes of one party in one round: updates of five seed rows of its own (their
/// indexed values change), a delete of one of them and two inserts. Parties never share
/// a row, so nobody waits for anybody's lock.
fn writes(round: i64, party: i64) -> Vec<String> {
    let first = 1 + (round * 4 + party) * 5;
    assert!(first + 4 <= SEED_ROWS, "more rounds than seed rows");
    let fresh = 100_000 + round * 100 + party * 10;
    vec![
        format!(
            "UPDATE t SET k = k + 1 + id % 3 WHERE id BETWEEN {first} AND {}",
            first + 4
        ),
        format!("DELETE FROM t WHERE id = {}", first + 2),
        format!(
            "INSERT INTO t (id, k, u) VALUES ({fresh}, {}, {fresh}), ({}, {}, {})",
            fresh % 7,
            fresh + 1,
            (fresh + 1) % 7,
            fresh + 1
        ),
    ]
}

async fn version<N: Node>(node: &N) -> u64 {
    node.schema_version().await
}

/// Runs `ddl` on `ahead` while, at every schema version the change goes through,
/// `behind` keeps a transaction open on the version before it: the owner cannot move on
/// until that transaction ends, and meanwhile `ahead` writes on the new version and
/// `behind` on the old one. `round` numbers the rounds of writes across calls (each round
/// takes its own rows). Returns how many versions the change went through, each of them
/// with the two nodes a version apart.
pub async fn change_with_a_node_one_version_behind<N: Node>(
    ahead: &N,
    behind: &N,
    ddl: &str,
    round: &mut i64,
) -> u64 {
    let before = version(ahead).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while version(behind).await < before {
        assert!(Instant::now() < deadline, "the node behind never caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut holder = behind.connect().await;
    must(&mut holder, "BEGIN").await;
    for sql in writes(*round, 0) {
        must(&mut holder, &sql).await;
    }
    let mut pinned = version(behind).await;
    let ddl = ddl.to_string();
    let mut submitter = ahead.connect().await;
    let change = tokio::spawn(async move {
        let result = exec(&mut submitter, &ddl).await;
        (ddl, result)
    });
    let mut writer = ahead.connect().await;
    let mut steps = 0;
    loop {
        // The owner publishes the next version and waits for the holder's transaction.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !change.is_finished()
            && (version(ahead).await <= pinned || version(behind).await <= pinned)
        {
            assert!(
                Instant::now() < deadline,
                "the schema change made no step in 60 s (pinned version {pinned})"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if change.is_finished() {
            must(&mut holder, "COMMIT").await;
            break;
        }
        assert_eq!(
            version(ahead).await,
            pinned + 1,
            "the owner went two versions past a transaction"
        );
        // The next holder pins the new version before the old one lets go, so the owner
        // meets a transaction a version behind at every step.
        let mut next = behind.connect().await;
        must(&mut next, "BEGIN").await;
        for sql in writes(*round, 1) {
            must(&mut next, &sql).await;
        }
        // One node writes on the new version, the other on the one before.
        for sql in writes(*round, 2) {
            must(&mut writer, &sql).await;
        }
        for sql in writes(*round, 3) {
            must(&mut holder, &sql).await;
        }
        must(&mut holder, "COMMIT").await;
        steps += 1;
        *round += 1;
        holder = next;
        pinned += 1;
        for sql in writes(*round, 0) {
            must(&mut holder, &sql).await;
        }
    }
    *round += 1;
    let (ddl, result) = change.await.unwrap();
    if let Err(e) = result {
        panic!("{ddl}: {e}");
    }
    assert_eq!(
        steps,
        version(ahead).await - before,
        "{ddl}: a version went by without a node behind it"
    );
    steps
}

/// Every index of `t` matches its rows exactly.
pub async fn assert_indexes_exact<N: Node>(node: &N) {
    let mut s = node.connect().await;
    let report = exec(&mut s, "ADMIN CHECK TABLE t")
        .await
        .unwrap_or_else(|e| panic!("ADMIN CHECK TABLE t: {e}"));
    assert!(
        !report.is_empty() && report.iter().all(|r| r.ends_with("|ok")),
        "{report:?}"
    );
}

/// The whole scenario: an index added, a unique index added, an index dropped and a
/// column dropped, each with a node a version behind, the indexes exact after each.
pub async fn scenario<N: Node>(ahead: &N, behind: &N) {
    let mut s = ahead.connect().await;
    for sql in seed_sql() {
        must(&mut s, &sql).await;
    }
    let mut round = 0;
    for (ddl, versions) in [
        ("CREATE INDEX t_k ON t (k)", 4),
        ("CREATE UNIQUE INDEX t_u ON t (u)", 4),
        ("DROP INDEX t_k", 3),
        ("ALTER TABLE t DROP COLUMN extra", 1),
    ] {
        let steps = change_with_a_node_one_version_behind(ahead, behind, ddl, &mut round).await;
        assert_eq!(steps, versions, "{ddl}");
        assert_indexes_exact(ahead).await;
    }
}
