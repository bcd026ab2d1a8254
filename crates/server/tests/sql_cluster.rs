//! SQL on a cluster in this process (one meta member, three stores, SQL engines routing
//! through the region cache): schema changes as DDL jobs run by the meta leader.

mod common;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flotilla_client::{ClientConfig, MetaClient, RemoteCatalog, RemoteDdl};
use flotilla_server::{SqlNodeConfig, cluster_sql_engine};
use flotilla_sql::{QueryResult, Session, SqlEngine, SqlError};

async fn run(session: &mut Session, sql: &str) -> Result<QueryResult, SqlError> {
    let (mut results, error) = session.simple_query(sql).await;
    match error {
        Some(e) => Err(e),
        None => Ok(results.pop().unwrap_or(QueryResult::Empty)),
    }
}

async fn ok(session: &mut Session, sql: &str) {
    if let Err(e) = run(session, sql).await {
        panic!("{sql}: {} ({})", e.message, e.code);
    }
}

async fn code(session: &mut Session, sql: &str) -> &'static str {
    match run(session, sql).await {
        Ok(r) => panic!("{sql}: expected an error, got {r:?}"),
        Err(e) => e.code,
    }
}

async fn rows(session: &mut Session, sql: &str) -> Vec<String> {
    let Ok(QueryResult::Rows { batches, .. }) = run(session, sql).await else {
        panic!("{sql}: expected rows");
    };
    let mut out = Vec::new();
    for b in &batches {
        let options = FormatOptions::default().with_null("NULL");
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            out.push(cells.join("|"));
        }
    }
    out
}

async fn sql_node(cluster: &common::Cluster) -> Arc<SqlEngine> {
    cluster_sql_engine(&SqlNodeConfig::new(vec![cluster.meta_addr.clone()]))
        .await
        .unwrap()
}

/// ORIGINS.md §1 on a cluster: the job runs at the meta leader, and the SQL node that
/// submitted it reads and writes the new columns as soon as the statement returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_1_on_a_cluster() {
    let cluster = common::Cluster::start().await;
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    ok(
        &mut s,
        "CREATE TABLE test (a INT, ts TIMESTAMP PRIMARY KEY)",
    )
    .await;
    let e = run(
        &mut s,
        "ALTER TABLE test ADD COLUMN a INT, ADD COLUMN b INT",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "42701");
    ok(
        &mut s,
        "ALTER TABLE test ADD COLUMN c INT, ADD COLUMN d INT",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO test (a, ts, c, d) VALUES (1, '2026-01-01 00:00:00', 3, 4)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT * FROM test").await,
        ["1|2026-01-01T00:00:00|3|4"]
    );
    // Another SQL node lists the same jobs: they live in the meta service.
    let other = sql_node(&cluster).await;
    let jobs = rows(&mut other.session(), "SHOW DDL JOBS").await;
    assert_eq!(jobs.len(), 2, "CREATE TABLE and the valid ALTER: {jobs:?}");
    assert!(jobs.iter().all(|j| j.contains("|done|")), "{jobs:?}");
}

/// A CHECK constraint (or NOT NULL, or a FOREIGN KEY) added to a table with rows on a
/// cluster: the meta leader's job validates it by scanning the rows through the stores,
/// and a row that breaks it rolls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_added_on_a_cluster_is_validated_against_the_rows() {
    let cluster = common::Cluster::start().await;
    // A new cluster starts at this build's version (persisted with its first region),
    // so SET NOT NULL below runs on its first try: no window in which a version-gated
    // statement is refused while the version is about to rise.
    let meta = MetaClient::new(vec![cluster.meta_addr.clone()], ClientConfig::default()).unwrap();
    let (version, held_by) = cluster_version(&meta).await;
    assert_eq!(
        (version, held_by),
        (flotilla_types::version::BINARY_CLUSTER_VERSION, vec![])
    );
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY, a INT)").await;
    ok(
        &mut s,
        "INSERT INTO t SELECT x, x FROM generate_series(1, 1500) AS x",
    )
    .await;
    let e = run(
        &mut s,
        "ALTER TABLE t ADD CONSTRAINT small CHECK (a < 1500)",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "23514", "{}", e.message);
    ok(&mut s, "INSERT INTO t VALUES (2000, 2000)").await;
    ok(&mut s, "ALTER TABLE t ADD CONSTRAINT pos CHECK (a > 0)").await;
    // Another node enforces it too.
    let other = sql_node(&cluster).await;
    let e = run(&mut other.session(), "UPDATE t SET a = -1 WHERE id = 7")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23514", "{}", e.message);
    // SET NOT NULL scans the rows the same way.
    ok(&mut s, "UPDATE t SET a = NULL WHERE id = 1499").await;
    let e = run(&mut s, "ALTER TABLE t ALTER COLUMN a SET NOT NULL")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23502", "{}", e.message);
    ok(&mut s, "DELETE FROM t WHERE a IS NULL").await;
    ok(&mut s, "ALTER TABLE t ALTER COLUMN a SET NOT NULL").await;
    let e = run(&mut other.session(), "UPDATE t SET a = NULL WHERE id = 7")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23502", "{}", e.message);
    assert_eq!(rows(&mut s, "SELECT count(*) FROM t").await, ["1500"]);

    // A foreign key: each row's referenced row is looked up at the scan's snapshot.
    ok(&mut s, "CREATE TABLE r (id INT PRIMARY KEY, tid INT)").await;
    ok(
        &mut s,
        "INSERT INTO r SELECT x, x + 1 FROM generate_series(1, 1500) AS x",
    )
    .await;
    let add = "ALTER TABLE r ADD FOREIGN KEY (tid) REFERENCES t";
    let e = run(&mut s, add).await.unwrap_err();
    assert_eq!(e.code, "23503", "{}", e.message);
    // Row 1499 went with its NULL above; 1501 was never there.
    ok(&mut s, "UPDATE r SET tid = 2000 WHERE tid IN (1499, 1501)").await;
    ok(&mut s, add).await;
    let e = run(&mut other.session(), "DELETE FROM t WHERE id = 2000")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23503", "{}", e.message);
    let e = run(&mut other.session(), "INSERT INTO r VALUES (9999, 9999)")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23503", "{}", e.message);
}

/// ORIGINS.md §2 (the DDL flood), on a cluster: more concurrent DDL than the cap while
/// every job fails retryably. The excess is refused at once with 53000, the records stay
/// bounded, and once the failure clears the accepted jobs finish and new DDL runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_flood_is_refused_past_the_cap_on_a_cluster() {
    const CAP: usize = 4;
    const SESSIONS: usize = 12;
    let cluster = common::Cluster::start_tuned(|m| m.ddl.jobs_max = CAP, |_| {}).await;
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    for i in 0..SESSIONS {
        ok(&mut s, &format!("CREATE TABLE t{i} (id INT PRIMARY KEY)")).await;
    }
    let meta = Arc::new(
        MetaClient::new(vec![cluster.meta_addr.clone()], ClientConfig::default()).unwrap(),
    );
    let catalog = RemoteCatalog::open(meta.clone(), Duration::from_millis(250))
        .await
        .unwrap();
    let control = RemoteDdl::new(meta, catalog);
    control.set_failpoint(true).await.unwrap();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..SESSIONS {
        let mut session = node.session();
        flood.spawn(async move {
            run(&mut session, &format!("ALTER TABLE t{i} ADD COLUMN x INT"))
                .await
                .map_err(|e| (e.code, e.message))
        });
    }
    // The refused ones return while the accepted ones are still retrying.
    let mut refused = 0;
    while refused < SESSIONS - CAP {
        let outcome = flood.join_next().await.unwrap().unwrap();
        let (code, message) = outcome.expect_err("no job can finish while the failpoint is on");
        assert_eq!(code, "53000", "{message}");
        assert!(message.contains("ddl_jobs_max = 4"), "{message}");
        refused += 1;
    }
    let jobs = rows(&mut s, "SHOW DDL JOBS").await;
    let active = jobs
        .iter()
        .filter(|j| j.contains("|running|") || j.contains("|queued|"))
        .count();
    assert_eq!(active, CAP, "{jobs:?}");
    // The CREATE TABLEs' records, and the accepted jobs: nothing else was recorded.
    assert_eq!(jobs.len(), SESSIONS + CAP, "{jobs:?}");
    control.set_failpoint(false).await.unwrap();
    while let Some(outcome) = flood.join_next().await {
        outcome
            .unwrap()
            .expect("accepted jobs finish once the failure clears");
    }
    ok(&mut s, "ALTER TABLE t0 ADD COLUMN y INT").await;
    assert_eq!(
        rows(&mut s, "SHOW DDL JOBS").await.len(),
        SESSIONS + CAP + 1
    );
}

/// F1 across two SQL nodes: a schema change is done only once every node uses it. A
/// transaction open on node B (pinning the old schema) holds node A's ALTER TABLE back;
/// once it ends, the ALTER returns and node B reads the new column at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_waits_for_transactions_on_other_nodes() {
    let cluster = common::Cluster::start_tuned(
        |m| m.ddl.schema_wait_timeout = Duration::from_millis(100),
        |_| {},
    )
    .await;
    let a = sql_node(&cluster).await;
    let b = sql_node(&cluster).await;
    let mut on_a = a.session();
    let mut on_b = b.session();
    ok(&mut on_a, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    ok(&mut on_a, "INSERT INTO t VALUES (1, 10)").await;
    // B's transaction starts on a schema that has `t`.
    let mut b_catalog_has_t = false;
    for _ in 0..200 {
        ok(&mut on_b, "BEGIN").await;
        if run(&mut on_b, "SELECT v FROM t").await.is_ok() {
            b_catalog_has_t = true;
            break;
        }
        ok(&mut on_b, "ROLLBACK").await;
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b_catalog_has_t, "node B never loaded table t");
    let mut alter = tokio::spawn(async move {
        ok(&mut on_a, "ALTER TABLE t ADD COLUMN w INT DEFAULT 5").await;
        on_a
    });
    // The job reports what it waits for.
    let mut control = a.session();
    let mut waiting = false;
    for _ in 0..500 {
        let jobs = rows(&mut control, "SHOW DDL JOBS").await;
        if jobs
            .iter()
            .any(|j| j.contains("transaction still using schema version"))
        {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(waiting, "the job never waited for node B's transaction");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut alter)
            .await
            .is_err(),
        "the ALTER returned while node B's transaction used the old schema"
    );
    ok(&mut on_b, "COMMIT").await;
    let mut on_a = alter.await.unwrap();
    // Node B has the new version: the job was done only once B used it.
    assert_eq!(rows(&mut on_b, "SELECT id, v, w FROM t").await, ["1|10|5"]);
    ok(&mut on_a, "INSERT INTO t VALUES (2, 20, 7)").await;
    assert_eq!(
        rows(&mut on_b, "SELECT w FROM t ORDER BY id").await,
        ["5", "7"]
    );
}

/// A SQL node that cannot renew its schema lease refuses queries once it lapses, rather
/// than use a schema that may be stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_lapses_refuses_queries() {
    let cluster =
        common::Cluster::start_tuned(|m| m.ddl.schema_lease = Duration::from_millis(1500), |_| {})
            .await;
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY)").await;
    ok(&mut s, "SELECT * FROM t").await;
    let _alive = cluster.stop_meta().await;
    let mut refused = None;
    for _ in 0..100 {
        // SHOW needs no timestamp, so it fails only for want of a lease.
        match run(&mut s, "SHOW server_version").await {
            Err(e) if e.code == "57P03" => {
                refused = Some(e.message);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let message = refused.expect("the node kept serving without a lease");
    assert!(message.contains("schema lease lapsed"), "{message}");
}

/// F1 with two SQL nodes writing while an index is added, then dropped, and a column
/// dropped: every row's index entries stay exact (ADMIN CHECK TABLE), and a unique index
/// that meets a duplicate leaves no half index behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_stay_exact_while_two_nodes_write_through_schema_changes() {
    let cluster = common::Cluster::start().await;
    let a = sql_node(&cluster).await;
    let b = sql_node(&cluster).await;
    let mut s = a.session();
    ok(
        &mut s,
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, extra INT, hidden INT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO t SELECT x, x % 50, x AS e FROM generate_series(1, 2000) AS x",
    )
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for (n, node) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let stop = stop.clone();
        writers.spawn(async move {
            let mut w = node.session();
            let mut i = 0i64;
            let mut done = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let id = 10_000 + (n as i64) * 1_000_000 + i;
                let statements = [
                    format!("INSERT INTO t (id, k) VALUES ({id}, {})", i % 50),
                    // Moves the row in or out of the partial indexes (WHERE hidden IS
                    // NULL).
                    format!(
                        "UPDATE t SET k = k + 1, hidden = CASE WHEN hidden IS NULL THEN {i} \
                         ELSE NULL END WHERE id = {}",
                        (i * 7 + n as i64) % 2000 + 1
                    ),
                    format!("DELETE FROM t WHERE id = {}", id - 3),
                ];
                for sql in &statements {
                    match run(&mut w, sql).await {
                        Ok(_) => done += 1,
                        // Write conflicts between the writers are fine, and so is a
                        // duplicate while the unique index is being built (it holds new
                        // writes to its constraint from write-only on); nothing else is.
                        Err(e) if matches!(e.code, "40001" | "40P01" | "23505") => {}
                        Err(e) => panic!("{sql}: {} ({})", e.message, e.code),
                    }
                }
            }
            done
        });
    }
    ok(&mut s, "CREATE INDEX t_k ON t (k)").await;
    // Partial indexes, built while the writers move rows in and out of them.
    ok(
        &mut s,
        "CREATE INDEX t_k_live ON t (k) WHERE hidden IS NULL",
    )
    .await;
    ok(
        &mut s,
        "CREATE UNIQUE INDEX t_id_live ON t (id) WHERE hidden IS NULL",
    )
    .await;
    let check = rows(&mut s, "ADMIN CHECK TABLE t").await;
    assert_eq!(check.len(), 3, "{check:?}");
    assert!(check.iter().all(|r| r.ends_with("|ok")), "{check:?}");
    // A unique index on k meets duplicates: the job rolls back, no half index stays.
    let e = run(&mut s, "CREATE UNIQUE INDEX t_k_u ON t (k)")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23505", "{}", e.message);
    let e = run(&mut s, "DROP INDEX t_k_u").await.unwrap_err();
    assert_eq!(e.code, "42704");
    ok(&mut s, "CREATE INDEX t_extra ON t (extra)").await;
    ok(&mut s, "DROP INDEX t_k").await;
    ok(&mut s, "DROP INDEX t_k_live").await;
    ok(&mut s, "DROP INDEX t_id_live").await;
    ok(&mut s, "ALTER TABLE t DROP COLUMN extra").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut writes = 0;
    while let Some(done) = writers.join_next().await {
        writes += done.unwrap();
    }
    assert!(writes > 0);
    let check = rows(&mut s, "ADMIN CHECK TABLE t").await;
    assert!(check.iter().all(|r| r.ends_with("|ok")), "{check:?}");
    ok(&mut s, "CREATE INDEX t_k2 ON t (k)").await;
    let check = rows(&mut s, "ADMIN CHECK TABLE t").await;
    assert_eq!(check.len(), 1, "{check:?}");
    assert!(
        check[0].starts_with("t_k2|") && check[0].ends_with("|ok"),
        "{check:?}"
    );
    let jobs = rows(&mut s, "SHOW DDL JOBS").await;
    assert!(
        jobs.iter().any(|j| j.contains("|add index|failed|")),
        "{jobs:?}"
    );
}

#[path = "../../sql/tests/common/f1.rs"]
mod f1;
#[path = "../../sql/tests/common/f1_engine.rs"]
mod f1_engine;

/// F1 on a cluster: two SQL nodes, the second held one schema version behind the first
/// at every step of an index added, a unique index added, an index dropped and a column
/// dropped, both writing meanwhile; every index is exact after each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_schema_changes_with_a_node_one_version_behind() {
    let cluster = common::Cluster::start().await;
    let ahead = sql_node(&cluster).await;
    let behind = sql_node(&cluster).await;
    f1::scenario(&ahead, &behind).await;
}

#[path = "../../sql/tests/common/incident1.rs"]
mod incident1;

/// The meta leader's DDL failpoint, reached through the meta service.
struct MetaFailpoint(Arc<RemoteDdl>);

impl incident1::DdlFailpoint for MetaFailpoint {
    async fn set(&self, on: bool) {
        self.0.set_failpoint(on).await.unwrap()
    }
}

/// ORIGINS.md §1 on a cluster with a client's retry: the ALTER submitted on one SQL
/// node, its answer lost, submitted again on another while the job runs; the retry joins
/// the job and the change applies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_1_with_a_client_retry_on_a_cluster() {
    let cluster = common::Cluster::start().await;
    let a = sql_node(&cluster).await;
    let b = sql_node(&cluster).await;
    let meta = Arc::new(
        MetaClient::new(vec![cluster.meta_addr.clone()], ClientConfig::default()).unwrap(),
    );
    let catalog = RemoteCatalog::open(meta.clone(), Duration::from_millis(250))
        .await
        .unwrap();
    let failpoint = MetaFailpoint(RemoteDdl::new(meta, catalog));
    incident1::with_a_client_retry(&a, &b, &failpoint).await;
}

/// A dropped table's data is deleted in every region it spans once no SQL node can read
/// it; a neighbour's is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_tables_data_is_deleted_across_its_regions() {
    use flotilla_codec::{Datum, encode_key_datum, prefix_end, record_prefix, table_prefix};
    use flotilla_tso::Tso;
    use flotilla_txn::TxnKv;
    let cluster = common::Cluster::start().await;
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    for t in ["gone", "kept"] {
        ok(
            &mut s,
            &format!("CREATE TABLE {t} (id INT PRIMARY KEY, k INT)"),
        )
        .await;
        ok(
            &mut s,
            &format!("INSERT INTO {t} SELECT x, x % 10 FROM generate_series(1, 3000) AS x"),
        )
        .await;
    }
    ok(&mut s, "CREATE INDEX gone_k ON gone (k)").await;
    let storage_id = node
        .catalog_snapshot()
        .tables
        .values()
        .find(|t| t.name == "gone")
        .unwrap()
        .storage_id;
    // Three regions: the index entries, rows 1..1499, rows 1500..
    let (kv, tso) = cluster.kv();
    let mut middle = record_prefix(storage_id);
    encode_key_datum(&mut middle, &Datum::Int(1500));
    for at in [record_prefix(storage_id), middle] {
        kv.split_at(&flotilla_client::encode_key(&at))
            .await
            .unwrap();
    }
    let live = |prefix: Vec<u8>| {
        let (kv, tso) = (kv.clone(), tso.clone());
        async move {
            let ts = tso.get_ts().await.unwrap();
            kv.scan(&prefix, &prefix_end(&prefix), ts, 100_000, None, 1_000)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(live(table_prefix(storage_id)).await, 6000);
    ok(&mut s, "DROP TABLE gone").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = rows(&mut s, "SHOW DDL JOBS").await;
        if jobs
            .iter()
            .any(|j| j.contains("|drop table|") && j.contains("(data deleted)"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped table's data was not deleted: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live(table_prefix(storage_id)).await, 0);
    assert_eq!(rows(&mut s, "SELECT count(*) FROM kept").await, ["3000"]);
}

/// GC on a cluster never passes the snapshot a SQL node's open transaction reads: the
/// node reports its oldest snapshot with its schema lease, and the meta leader keeps the
/// safe point at or below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_on_a_cluster_never_removes_what_an_open_snapshot_reads() {
    let cluster = common::Cluster::start_tuned(
        |m| {
            m.gc_life_time = Duration::from_secs(1);
            m.gc_run_interval = Duration::from_millis(100);
        },
        |_| {},
    )
    .await;
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    ok(&mut s, "CREATE TABLE counter (id INT PRIMARY KEY, n INT)").await;
    ok(&mut s, "INSERT INTO counter VALUES (1, 0)").await;
    let updates = "UPDATE counter SET n = n + 1 WHERE id = 1;".repeat(30);
    ok(&mut s, &updates).await;
    let mut holder = node.session();
    ok(&mut holder, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    assert_eq!(
        rows(&mut holder, "SELECT n FROM counter WHERE id = 1").await,
        ["30"]
    );
    ok(&mut s, &updates).await;
    // The 30 versions older than the one the snapshot reads go; the 30 newer stay.
    assert_eq!(cluster.gc_settles_at(30, 10).await, 30);
    assert_eq!(
        rows(&mut holder, "SELECT n FROM counter WHERE id = 1").await,
        ["30"],
        "the open snapshot lost its version"
    );
    ok(&mut holder, "COMMIT").await;
    // The node reports the newest snapshot it handed out: one more read moves it past the
    // last update.
    assert_eq!(rows(&mut s, "SELECT n FROM counter").await, ["60"]);
    assert_eq!(cluster.gc_settles_at(60, 10).await, 60);
    assert_eq!(rows(&mut s, "SELECT n FROM counter").await, ["60"]);
}

/// A serial column on a cluster: two SQL nodes number rows from one sequence kept by the
/// meta service, each from batches of its own. Every value is unique, each node's values
/// rise, and a new node (a restarted one) never hands out a value again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sql_nodes_number_rows_from_one_sequence() {
    let cluster = common::Cluster::start().await;
    let a = sql_node(&cluster).await;
    let b = sql_node(&cluster).await;
    let mut s = a.session();
    ok(
        &mut s,
        "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, node INT)",
    )
    .await;
    let mut writers = tokio::task::JoinSet::new();
    for (n, node) in [a.clone(), b.clone()].into_iter().enumerate() {
        writers.spawn(async move {
            let mut w = node.session();
            let mut ids = Vec::new();
            for _ in 0..20 {
                let sql = format!("INSERT INTO t (node) VALUES ({n}), ({n}) RETURNING id");
                ids.extend(
                    rows(&mut w, &sql)
                        .await
                        .iter()
                        .map(|r| r.parse::<i64>().unwrap()),
                );
            }
            ids
        });
    }
    let mut all = Vec::new();
    while let Some(ids) = writers.join_next().await {
        let ids = ids.unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        all.extend(ids);
    }
    let mut unique = all.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 80, "{all:?}");
    assert_eq!(rows(&mut s, "SELECT count(*) FROM t").await, vec!["80"]);
    // A node started later reserves past every batch handed out before.
    let c = sql_node(&cluster).await;
    let mut w = c.session();
    let next: i64 = rows(&mut w, "SELECT nextval('t_id_seq')").await[0]
        .parse()
        .unwrap();
    assert!(next > *unique.last().unwrap(), "{next} after {unique:?}");
    assert_eq!(
        rows(&mut w, "SELECT currval('t_id_seq')").await,
        vec![next.to_string()]
    );
    // setval goes to the meta service's counter: the node that set it drops its own
    // batch and continues from the value, and so does a node that had none; one that
    // holds a batch hands that out first, as a PostgreSQL session's cached values.
    assert_eq!(
        rows(&mut w, "SELECT setval('t_id_seq', 10000)").await,
        vec!["10000"]
    );
    assert_eq!(
        rows(&mut w, "SELECT nextval('t_id_seq')").await,
        vec!["10001"]
    );
    let d = sql_node(&cluster).await;
    let fresh: i64 = rows(&mut d.session(), "SELECT nextval('t_id_seq')").await[0]
        .parse()
        .unwrap();
    assert!(fresh > 10_001, "{fresh}");
    let cached: i64 = rows(&mut a.session(), "SELECT nextval('t_id_seq')").await[0]
        .parse()
        .unwrap();
    assert!(cached < 10_000, "{cached}");
    // Back, too.
    ok(&mut w, "SELECT setval('t_id_seq', 500, false)").await;
    assert_eq!(
        rows(&mut w, "INSERT INTO t (node) VALUES (9) RETURNING id").await,
        vec!["500"]
    );
    // CREATE SEQUENCE goes to the meta service's catalog, which a node started later
    // loads; that node's values follow the first node's batch.
    ok(&mut w, "CREATE SEQUENCE q START WITH 7").await;
    assert_eq!(rows(&mut w, "SELECT nextval('q')").await, vec!["7"]);
    let e = sql_node(&cluster).await;
    let later: i64 = rows(&mut e.session(), "SELECT nextval('q')").await[0]
        .parse()
        .unwrap();
    assert!(later > 7, "{later}");
    ok(&mut w, "DROP SEQUENCE q").await;
    assert_eq!(
        run(&mut w, "SELECT nextval('q')").await.unwrap_err().code,
        "42P01"
    );
    // Near the top of bigint the meta service's counter runs out (fewer ids left than a
    // node's batch: the node takes what it needs) instead of wrapping and starting again.
    ok(&mut w, "CREATE SEQUENCE top").await;
    ok(&mut w, "SELECT setval('top', 9223372036854775804)").await;
    let mut values = Vec::new();
    let error = loop {
        match run(&mut w, "SELECT nextval('top')").await {
            Ok(_) => values.push(rows(&mut w, "SELECT currval('top')").await[0].clone()),
            Err(e) => break e,
        }
        assert!(values.len() <= 3, "{values:?}");
    };
    assert_eq!(values, ["9223372036854775805", "9223372036854775806"]);
    assert_eq!(error.code, "2200H", "{}", error.message);
    let other = sql_node(&cluster).await;
    assert_eq!(
        run(&mut other.session(), "SELECT nextval('top')")
            .await
            .unwrap_err()
            .code,
        "2200H"
    );
}

async fn cluster_version(meta: &MetaClient) -> (u32, Vec<String>) {
    let (version, held_by) = meta.cluster_version().await.unwrap();
    (flotilla_types::version::reported(version), held_by)
}

/// Polls the meta service until the cluster version reaches `version` (30 s at most).
async fn wait_for_cluster_version(meta: &MetaClient, version: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster_version(meta).await.0 < version {
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster version did not rise to {version}: {:?}",
            cluster_version(meta).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ORIGINS.md §3 in one process: a store of an older build (it reports no version, as
/// builds before versions did) holds the cluster at the base version, where SET NOT NULL
/// is refused with what to do; once that store runs the new build the version rises by
/// itself and the statement runs; from then on an older SQL node or store is refused,
/// with the reason, and the version does not go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_version_rises_once_every_node_runs_the_newer_build() {
    const NEW: u32 = flotilla_types::version::BINARY_CLUSTER_VERSION;
    let old_store = std::sync::atomic::AtomicBool::new(true);
    let mut cluster = common::Cluster::start_with(|cfg| {
        if old_store.swap(false, std::sync::atomic::Ordering::Relaxed) {
            cfg.binary_version = 1;
        }
    })
    .await;
    let meta = MetaClient::new(vec![cluster.meta_addr.clone()], ClientConfig::default()).unwrap();
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    ok(&mut s, "INSERT INTO t VALUES (1, 10)").await;
    assert_eq!(rows(&mut s, "SHOW cluster_version").await, ["1"]);
    assert_eq!(rows(&mut s, "SHOW binary_version").await, [NEW.to_string()]);
    let (version, held_by) = cluster_version(&meta).await;
    assert_eq!(version, 1);
    let old = cluster
        .configs
        .iter()
        .position(|c| c.binary_version == 1)
        .unwrap();
    let old_id = cluster.stores[old].store_id();
    assert_eq!(held_by, [format!("store {old_id} (version 1)")]);
    let e = run(&mut s, "ALTER TABLE t ALTER COLUMN v SET NOT NULL")
        .await
        .unwrap_err();
    assert_eq!(e.code, "0A000", "{}", e.message);
    assert!(
        e.message.contains("needs cluster version 2"),
        "{}",
        e.message
    );
    // Nothing changed: the column still takes NULL.
    ok(&mut s, "INSERT INTO t VALUES (2, NULL)").await;
    ok(&mut s, "DELETE FROM t WHERE id = 2").await;
    // Until every store takes shared locks, FOR SHARE locks exclusively: two of them
    // wait for each other.
    let mut other = node.session();
    ok(&mut other, "SET lock_timeout = '100ms'").await;
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "SELECT * FROM t WHERE id = 1 FOR SHARE").await;
    assert_eq!(
        code(&mut other, "SELECT * FROM t WHERE id = 1 FOR SHARE").await,
        "55P03"
    );
    ok(&mut s, "ROLLBACK").await;
    // And FOR KEY SHARE as FOR UPDATE, the strongest lock every store knows.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "SELECT * FROM t WHERE id = 1 FOR KEY SHARE").await;
    assert_eq!(
        code(&mut other, "SELECT * FROM t WHERE id = 1 FOR KEY SHARE").await,
        "55P03"
    );
    ok(&mut s, "ROLLBACK").await;

    // The old store is upgraded: stopped and started on its data with the new build.
    let mut cfg = cluster.stop_store(old_id).await;
    cfg.binary_version = flotilla_types::version::BINARY_CLUSTER_VERSION;
    cluster.start_store(cfg).await;
    wait_for_cluster_version(&meta, NEW).await;
    assert!(cluster_version(&meta).await.1.is_empty());
    ok(&mut s, "ALTER TABLE t ALTER COLUMN v SET NOT NULL").await;
    assert_eq!(
        run(&mut s, "INSERT INTO t VALUES (3, NULL)")
            .await
            .unwrap_err()
            .code,
        "23502"
    );
    // The SQL node learns the new version with its next lease renewal.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rows(&mut s, "SHOW cluster_version").await != [NEW.to_string()] {
        assert!(
            std::time::Instant::now() < deadline,
            "the SQL node never learned version {NEW}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Now FOR SHARE is shared, and FOR KEY SHARE lets an update that keeps the key
    // through, but not a delete.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "SELECT * FROM t WHERE id = 1 FOR SHARE").await;
    ok(&mut other, "SELECT * FROM t WHERE id = 1 FOR SHARE").await;
    ok(&mut s, "ROLLBACK").await;
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "SELECT * FROM t WHERE id = 1 FOR KEY SHARE").await;
    ok(&mut other, "UPDATE t SET v = v WHERE id = 1").await;
    assert_eq!(
        code(&mut other, "DELETE FROM t WHERE id = 1").await,
        "55P03"
    );
    ok(&mut s, "ROLLBACK").await;

    // An older SQL node is refused, and says why.
    let mut old_cfg = SqlNodeConfig::new(vec![cluster.meta_addr.clone()]);
    old_cfg.sql.binary_version = 1;
    let old_node = cluster_sql_engine(&old_cfg).await.unwrap();
    let mut old_session = old_node.session();
    let e = run(&mut old_session, "SELECT * FROM t").await.unwrap_err();
    assert_eq!(e.code, "57P03", "{}", e.message);
    assert!(
        e.message
            .contains(&format!("older than the cluster's version {NEW}")),
        "{}",
        e.message
    );
    // So is an older store, before it is registered.
    let refused = meta
        .store_heartbeat(
            flotilla_proto::metapb::Store {
                id: 0,
                address: "127.0.0.1:1".into(),
                ..Default::default()
            },
            Default::default(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains(&format!("older than the cluster's version {NEW}")),
        "{refused}"
    );
    assert_eq!(meta.get_stores(0).await.unwrap().len(), 3);
    // The new build serves on, and the version stays.
    assert_eq!(rows(&mut s, "SELECT id, v FROM t").await, ["1|10"]);
    assert_eq!(cluster_version(&meta).await.0, NEW);
}

/// The regions of the cluster, in key order: (start, end, merging).
async fn regions(meta: &MetaClient) -> Vec<(Vec<u8>, Vec<u8>, bool)> {
    meta.scan_regions(b"", b"", 0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|info| info.region)
        .map(|r| {
            let merging = flotilla_raftstore::is_merging(&r);
            (r.start_key.to_vec(), r.end_key.to_vec(), merging)
        })
        .collect()
}

/// Each table starts in a region of its own, so dropping and truncating tables used to
/// leave ever more regions (Raft groups on every store) behind. Once a dropped table's
/// data is deleted its region holds no live table's keys and is merged into its left
/// neighbour, as is the gap between tables: after three tables dropped and one truncated
/// twice, the cluster is back to three regions (the key space before the live table,
/// the live table, the rest), and the live table's rows are all there and take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_regions_of_dropped_and_truncated_tables_are_merged_away() {
    let cluster = common::Cluster::start_tuned(
        |meta| meta.region_merge_after = Duration::from_millis(300),
        |_| {},
    )
    .await;
    let meta = MetaClient::new(vec![cluster.meta_addr.clone()], ClientConfig::default()).unwrap();
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    ok(&mut s, "CREATE TABLE keep (id INT PRIMARY KEY, v TEXT)").await;
    for i in 0..3 {
        ok(
            &mut s,
            &format!("CREATE TABLE gone{i} (id INT PRIMARY KEY)"),
        )
        .await;
        ok(
            &mut s,
            &format!("INSERT INTO gone{i} SELECT x FROM generate_series(1, 3000) AS x"),
        )
        .await;
    }
    for _ in 0..2 {
        ok(&mut s, "INSERT INTO keep VALUES (1, 'a'), (2, 'b')").await;
        ok(&mut s, "TRUNCATE keep").await;
    }
    ok(
        &mut s,
        "INSERT INTO keep SELECT x, 'v' FROM generate_series(1, 100) AS x",
    )
    .await;
    let grown = regions(&meta).await.len();
    assert!(
        grown >= 7,
        "every table and truncation got a region: {grown}"
    );
    // Enough rows that their deletion outlasts `region_merge_after`: a region is frozen
    // while it still holds data, found so by its leader and unfrozen, and the deletion
    // (refused while it is frozen) goes on to the end.
    for i in 0..3 {
        ok(&mut s, &format!("DROP TABLE gone{i}")).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let now = regions(&meta).await;
        let jobs = rows(&mut s, "SHOW DDL JOBS").await;
        let deleted = jobs
            .iter()
            .filter(|j| j.contains("|drop table|") && j.contains("(data deleted)"))
            .count();
        if now.len() == 3 && !now.iter().any(|r| r.2) && deleted == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "regions not merged: {} left ({} before the drops): {now:?}",
            now.len(),
            grown
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rows(&mut s, "SELECT count(*) FROM keep").await, ["100"]);
    ok(&mut s, "INSERT INTO keep VALUES (1000, 'after')").await;
    ok(&mut s, "CREATE TABLE later (id INT PRIMARY KEY)").await;
    ok(&mut s, "INSERT INTO later VALUES (1), (2)").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM keep").await, ["101"]);
    assert_eq!(rows(&mut s, "SELECT count(*) FROM later").await, ["2"]);
    // Every store's replicas of every region hold the same data.
    let ids: Vec<u64> = meta
        .scan_regions(b"", b"", 0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|info| info.region.map(|r| r.id))
        .collect();
    assert!(ids.len() >= 4, "{ids:?}");
    for id in ids {
        for store in &cluster.stores {
            common::wait_for_identical_replica(&cluster, id, store.addr(), Duration::from_secs(10))
                .await;
        }
    }
}

/// A catalog past gRPC's default 4 MiB (here five views of long text) still loads on a
/// SQL node started later: the meta client takes answers up to `meta_message_bytes_max`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_larger_than_a_default_grpc_message_loads_on_a_new_sql_node() {
    let cluster = common::Cluster::start().await;
    let a = sql_node(&cluster).await;
    let mut s = a.session();
    let text = "x".repeat(900_000);
    for i in 0..5 {
        ok(
            &mut s,
            &format!("CREATE VIEW v{i} AS SELECT '{text}' AS t, {i} AS i"),
        )
        .await;
    }
    let b = sql_node(&cluster).await;
    let mut w = b.session();
    assert_eq!(
        rows(&mut w, "SELECT i, length(t) FROM v4").await,
        vec!["4|900000"]
    );
    ok(&mut w, "CREATE TABLE after_views (k INT PRIMARY KEY)").await;
    ok(&mut s, "INSERT INTO after_views VALUES (1)").await;
}

/// A transaction that locks more rows than the stores' budget for in-memory locks: the
/// locks past it go through Raft to the lock CF, so no store holds more than its bound in
/// memory, and the transaction commits exactly as it would have, leaving no lock behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_past_the_memory_budget_go_through_raft_and_commit_the_same() {
    const STORE_BYTES_MAX: usize = 8 * 1024;
    let cluster = common::Cluster::start_with(|c| {
        c.memory_locks_region_bytes_max = 4 * 1024;
        c.memory_locks_store_bytes_max = STORE_BYTES_MAX;
    })
    .await;
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    ok(&mut s, "CREATE TABLE acct (id INT PRIMARY KEY, n INT)").await;
    ok(
        &mut s,
        "INSERT INTO acct SELECT g, 1 FROM generate_series(1, 400) AS t(g)",
    )
    .await;
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        rows(&mut s, "SELECT id FROM acct FOR UPDATE").await.len(),
        400
    );
    // 400 row locks are some 50 KiB.
    for store in &cluster.stores {
        assert!(
            store.memory_lock_bytes() <= STORE_BYTES_MAX,
            "store {} holds {} bytes of in-memory locks",
            store.store_id(),
            store.memory_lock_bytes()
        );
    }
    ok(&mut s, "UPDATE acct SET n = n + id").await;
    ok(&mut s, "COMMIT").await;
    assert_eq!(
        rows(&mut s, "SELECT sum(n), count(*) FROM acct").await,
        ["80600|400"]
    );
    for store in &cluster.stores {
        assert_eq!(store.memory_lock_bytes(), 0);
    }
    // No lock is left: another transaction changes every row at once.
    let mut other = node.session();
    ok(&mut other, "BEGIN").await;
    ok(&mut other, "UPDATE acct SET n = 0").await;
    ok(&mut other, "COMMIT").await;
    assert_eq!(rows(&mut s, "SELECT sum(n) FROM acct").await, ["0"]);
}

/// A job queue across regions and stores: workers claim jobs with a locking subquery and
/// `SKIP LOCKED`, each taking the next row no other holds without waiting; a worker whose
/// first lock was refused keeps the locks it takes after (NOWAIT on them fails), and a
/// join locks the rows of the table it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_claim_jobs_with_skip_locked_across_the_cluster() {
    let cluster = common::Cluster::start().await;
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    let mut other = node.session();
    let mut third = node.session();
    ok(&mut s, "CREATE TABLE job (id INT PRIMARY KEY, state TEXT)").await;
    ok(
        &mut s,
        "INSERT INTO job SELECT g, 'new' FROM generate_series(1, 20) AS t(g)",
    )
    .await;
    ok(&mut s, "CREATE TABLE note (job INT PRIMARY KEY, body TEXT)").await;
    ok(&mut s, "INSERT INTO note VALUES (1, 'a'), (2, 'b')").await;
    ok(&mut third, "SET lock_timeout = '200ms'").await;
    let claim = "UPDATE job SET state = 'taken' WHERE id = (SELECT id FROM job \
                 WHERE state = 'new' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id";
    ok(&mut s, "BEGIN").await;
    ok(&mut other, "BEGIN").await;
    assert_eq!(rows(&mut s, claim).await, ["1"]);
    assert_eq!(rows(&mut other, claim).await, ["2"]);
    assert_eq!(
        rows(
            &mut other,
            "SELECT id FROM job ORDER BY id LIMIT 3 FOR UPDATE SKIP LOCKED"
        )
        .await,
        ["2", "3", "4"]
    );
    assert_eq!(
        code(
            &mut third,
            "SELECT id FROM job WHERE id = 2 FOR UPDATE NOWAIT"
        )
        .await,
        "55P03"
    );
    ok(&mut s, "COMMIT").await;
    ok(&mut other, "COMMIT").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM job WHERE state = 'taken' ORDER BY id"
        )
        .await,
        ["1", "2"]
    );
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT j.id, n.body FROM job j JOIN note n ON n.job = j.id ORDER BY j.id \
             FOR UPDATE OF n"
        )
        .await,
        ["1|a", "2|b"]
    );
    assert_eq!(
        code(&mut third, "UPDATE note SET body = 'z' WHERE job = 2").await,
        "55P03"
    );
    ok(&mut third, "UPDATE job SET state = 'done' WHERE id = 2").await;
    ok(&mut s, "COMMIT").await;
}

/// At the stores' bounds on commands in progress (`kv_in_flight_max`) and scans
/// (`scans_in_flight_max`), set to the least here, concurrent writers of one row and
/// concurrent scans queue and all finish, exactly: a command waiting for a lock holds its
/// place only up to `lock_wait_max`, so the holder's commit gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_stores_command_bounds_clients_queue_and_all_finish() {
    let cluster = common::Cluster::start_with(|c| {
        c.kv_in_flight_max = 1;
        c.scans_in_flight_max = 1;
        c.lock_wait_max = Duration::from_millis(50);
    })
    .await;
    let node = sql_node(&cluster).await;
    let mut s = node.session();
    ok(&mut s, "CREATE TABLE counter (id INT PRIMARY KEY, n INT)").await;
    ok(&mut s, "INSERT INTO counter VALUES (1, 0), (2, 0)").await;
    let mut clients = Vec::new();
    for c in 0..4 {
        let node = node.clone();
        clients.push(tokio::spawn(async move {
            let mut s = node.session();
            for _ in 0..5 {
                ok(&mut s, "BEGIN").await;
                ok(&mut s, "UPDATE counter SET n = n + 1 WHERE id = 1").await;
                assert_eq!(rows(&mut s, "SELECT count(*) FROM counter").await, ["2"]);
                ok(&mut s, "COMMIT").await;
            }
            c
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        rows(&mut s, "SELECT n FROM counter WHERE id = 1").await,
        ["20"]
    );
}

/// Shared locks through the stores: two SQL nodes add references to one row at once,
/// a delete of the row waits for both, and then finds their rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_to_one_row_share_its_lock_across_sql_nodes() {
    let cluster = common::Cluster::start().await;
    let (one, two) = (sql_node(&cluster).await, sql_node(&cluster).await);
    let (mut a, mut b, mut w) = (one.session(), two.session(), one.session());
    ok(&mut a, "CREATE TABLE parent (id INT PRIMARY KEY)").await;
    ok(
        &mut a,
        "CREATE TABLE child (id INT PRIMARY KEY, pid INT REFERENCES parent)",
    )
    .await;
    ok(&mut a, "INSERT INTO parent VALUES (1)").await;
    ok(&mut b, "SET lock_timeout = '2s'").await;
    ok(&mut w, "SET lock_timeout = '200ms'").await;
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO child VALUES (1, 1)").await;
    ok(&mut b, "BEGIN").await;
    ok(&mut b, "INSERT INTO child VALUES (2, 1)").await;
    assert_eq!(
        code(&mut w, "DELETE FROM parent WHERE id = 1").await,
        "55P03"
    );
    ok(&mut a, "COMMIT").await;
    assert_eq!(
        code(&mut w, "DELETE FROM parent WHERE id = 1").await,
        "55P03"
    );
    ok(&mut b, "COMMIT").await;
    assert_eq!(
        code(&mut w, "DELETE FROM parent WHERE id = 1").await,
        "23503"
    );
    assert_eq!(
        rows(&mut w, "SELECT id FROM child ORDER BY id").await,
        ["1", "2"]
    );
}
