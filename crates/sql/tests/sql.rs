//! SQL semantics against an in-process engine: DDL, DML, types, errors with their
//! SQLSTATE, transactions and isolation, indexes, limits.

mod common;

use common::{TestDb, run};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flotilla_sql::{QueryResult, Session, SqlConfig, TransactionState};

/// The rows of a query as text, cells joined by '|'.
async fn rows(session: &mut Session, sql: &str) -> Vec<String> {
    match run(session, sql).await {
        Ok(QueryResult::Rows { batches, .. }) => batch_rows(&batches),
        other => panic!("{sql}: expected rows, got {other:?}"),
    }
}

/// Rows as text, cells joined by '|', NULL as `NULL`.
fn batch_rows(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        // json (BinaryView) and jsonb (LargeBinary) as their text, not hex.
        let columns: Vec<_> = b
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::LargeBinary | DataType::BinaryView => {
                    datafusion::arrow::compute::cast(c, &DataType::Utf8).unwrap()
                }
                _ => c.clone(),
            })
            .collect();
        let formatters: Vec<_> = columns
            .iter()
            .map(|c| {
                ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default().with_null("NULL"))
                    .unwrap()
            })
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

async fn ok(session: &mut Session, sql: &str) -> String {
    match run(session, sql).await {
        Ok(QueryResult::Command { tag }) | Ok(QueryResult::Rows { tag, .. }) => tag,
        Ok(QueryResult::Empty) => String::new(),
        Err(e) => panic!("{sql}: {} ({})", e.message, e.code),
    }
}

async fn code(session: &mut Session, sql: &str) -> &'static str {
    match run(session, sql).await {
        Ok(r) => panic!("{sql}: expected an error, got {r:?}"),
        Err(e) => e.code,
    }
}

#[tokio::test]
async fn tables_rows_and_returning() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE t (id INT PRIMARY KEY, name TEXT NOT NULL, score INT DEFAULT 7)",
    )
    .await;
    assert_eq!(
        ok(&mut s, "CREATE TABLE IF NOT EXISTS t (x INT)").await,
        "CREATE TABLE"
    );
    assert_eq!(
        ok(
            &mut s,
            "INSERT INTO t (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')"
        )
        .await,
        "INSERT 0 3"
    );
    assert_eq!(
        rows(&mut s, "SELECT id, name, score FROM t ORDER BY id").await,
        vec!["1|a|7", "2|b|7", "3|c|7"]
    );
    assert_eq!(
        rows(
            &mut s,
            "UPDATE t SET score = score + id WHERE id >= 2 RETURNING id, score"
        )
        .await,
        vec!["2|9", "3|10"]
    );
    assert_eq!(
        rows(&mut s, "DELETE FROM t WHERE id = 1 RETURNING name").await,
        vec!["a"]
    );
    assert_eq!(
        rows(&mut s, "INSERT INTO t VALUES (4, 'd', DEFAULT) RETURNING *").await,
        vec!["4|d|7"]
    );
    assert_eq!(
        ok(
            &mut s,
            "INSERT INTO t (id, name) VALUES (4, 'x') ON CONFLICT DO NOTHING"
        )
        .await,
        "INSERT 0 0"
    );
    ok(&mut s, "CREATE TABLE u (id INT, name TEXT)").await;
    assert_eq!(
        ok(&mut s, "INSERT INTO u SELECT id * 10, name FROM t").await,
        "INSERT 0 3"
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT t.name, u.id FROM t JOIN u ON u.id = t.id * 10 ORDER BY 2"
        )
        .await,
        vec!["b|20", "c|30", "d|40"]
    );
    assert_eq!(
        rows(&mut s, "WITH x AS (SELECT id, rank() OVER (ORDER BY score DESC) r FROM t) SELECT id FROM x WHERE r = 1").await,
        vec!["3"]
    );
    assert_eq!(ok(&mut s, "TRUNCATE u").await, "TRUNCATE TABLE");
    assert_eq!(rows(&mut s, "SELECT count(*) FROM u").await, vec!["0"]);
    assert_eq!(ok(&mut s, "DROP TABLE u").await, "DROP TABLE");
    assert_eq!(ok(&mut s, "DROP TABLE IF EXISTS u").await, "DROP TABLE");
    assert_eq!(code(&mut s, "SELECT * FROM u").await, "42P01");
}

#[tokio::test]
async fn every_type_round_trips() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE ty (b BOOLEAN, s SMALLINT, i INTEGER, g BIGINT, r REAL, d DOUBLE PRECISION, \
                n NUMERIC(10,2), t TEXT, v VARCHAR(5), c CHAR(3), y BYTEA, dt DATE, ts TIMESTAMP, tz TIMESTAMPTZ)").await;
    ok(
        &mut s,
        "INSERT INTO ty VALUES (true, 1, 2, 3, 1.5, 2.25, 12.345, 'text', 'abc', 'x', '\\x0102', \
                '2024-01-31', '2024-01-31 12:34:56', '2024-01-31 12:34:56+00')",
    )
    .await;
    ok(&mut s, "INSERT INTO ty (i) VALUES (NULL)").await;
    let got = rows(
        &mut s,
        "SELECT b, s, i, g, r, d, n, t, v, c, dt FROM ty WHERE i = 2",
    )
    .await;
    assert_eq!(
        got,
        vec!["true|1|2|3|1.5|2.25|12.35|text|abc|x  |2024-01-31"]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM ty WHERE b IS NULL").await,
        vec!["1"]
    );
    // NUMERIC is exact.
    assert_eq!(
        rows(&mut s, "SELECT n * 3 FROM ty WHERE i = 2").await,
        vec!["37.05"]
    );
    assert_eq!(
        code(&mut s, "INSERT INTO ty (v) VALUES ('toolong')").await,
        "22001"
    );
}

#[tokio::test]
async fn errors_carry_their_sqlstate() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL, u TEXT UNIQUE)",
    )
    .await;
    ok(&mut s, "INSERT INTO t VALUES (1, 1, 'a')").await;
    let (_, e) = s.simple_query("SELECT * FRM t").await;
    let e = e.unwrap();
    assert_eq!(e.code, "42601");
    assert!(e.position.is_some(), "syntax errors carry a position");
    assert_eq!(code(&mut s, "SELECT * FROM nope").await, "42P01");
    assert_eq!(code(&mut s, "SELECT nope FROM t").await, "42703");
    assert_eq!(
        code(&mut s, "INSERT INTO t VALUES (1, 2, 'b')").await,
        "23505"
    );
    assert_eq!(
        code(&mut s, "INSERT INTO t VALUES (2, 2, 'a')").await,
        "23505"
    );
    assert_eq!(code(&mut s, "INSERT INTO t (id) VALUES (3)").await, "23502");
    assert_eq!(code(&mut s, "UPDATE t SET v = NULL").await, "23502");
    assert_eq!(code(&mut s, "SELECT 1 / 0").await, "22012");
    assert_eq!(
        code(&mut s, "SELECT no_such_function(1)").await,
        "42883",
        "an unknown function is undefined_function, as in PostgreSQL"
    );
    assert_eq!(
        code(&mut s, "INSERT INTO t VALUES (3, true, 'c')").await,
        "42804"
    );
    assert_eq!(
        code(&mut s, "BEGIN ISOLATION LEVEL SERIALIZABLE").await,
        "0A000"
    );
    assert_eq!(code(&mut s, "CREATE TABLE t (x INT)").await, "42P07");
    // Nothing above changed the table.
    assert_eq!(rows(&mut s, "SELECT id, v, u FROM t").await, vec!["1|1|a"]);
}

/// An autocommit query reading one row by a unique key reads the newest committed versions
/// without asking the oracle for a timestamp; it never sees an uncommitted change and sees
/// a commit at once. Inside a transaction block a query still reads its snapshot.
#[tokio::test]
async fn an_autocommit_point_read_takes_no_timestamp_and_sees_the_newest_commit() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(
        &mut a,
        "CREATE TABLE acc (id INT PRIMARY KEY, v INT, u INT UNIQUE)",
    )
    .await;
    ok(&mut a, "INSERT INTO acc VALUES (1, 10, 100), (2, 20, 200)").await;
    let before = db.sql_tso.calls();
    for _ in 0..10 {
        assert_eq!(rows(&mut b, "SELECT v FROM acc WHERE id = 1").await, ["10"]);
    }
    assert!(
        rows(&mut b, "SELECT * FROM acc WHERE id = 3")
            .await
            .is_empty()
    );
    assert_eq!(
        db.sql_tso.calls(),
        before,
        "an autocommit point read asked for a timestamp"
    );
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "UPDATE acc SET v = 11 WHERE id = 1").await;
    assert_eq!(rows(&mut b, "SELECT v FROM acc WHERE id = 1").await, ["10"]);
    ok(&mut a, "COMMIT").await;
    assert_eq!(rows(&mut b, "SELECT v FROM acc WHERE id = 1").await, ["11"]);

    // Through a unique index: the entry, then the row, which must still match.
    let before = db.sql_tso.calls();
    assert_eq!(
        rows(&mut b, "SELECT v FROM acc WHERE u = 200").await,
        ["20"]
    );
    assert!(
        rows(&mut b, "SELECT v FROM acc WHERE u = 999")
            .await
            .is_empty()
    );
    assert_eq!(db.sql_tso.calls(), before);
    // A row that does not match is left to a snapshot read (it may have changed between
    // the two reads).
    assert!(
        rows(&mut b, "SELECT v FROM acc WHERE u = 200 AND v = 99")
            .await
            .is_empty()
    );
    assert!(db.sql_tso.calls() > before, "no snapshot read was made");
    ok(&mut a, "UPDATE acc SET u = 201 WHERE id = 2").await;
    assert!(
        rows(&mut b, "SELECT v FROM acc WHERE u = 200")
            .await
            .is_empty()
    );
    assert_eq!(
        rows(&mut b, "SELECT v FROM acc WHERE u = 201").await,
        ["20"]
    );
    let before = db.sql_tso.calls();
    ok(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    assert_eq!(rows(&mut b, "SELECT v FROM acc WHERE id = 2").await, ["20"]);
    assert!(
        db.sql_tso.calls() > before,
        "a transaction block takes its snapshot"
    );
    ok(&mut a, "UPDATE acc SET v = 21 WHERE id = 2").await;
    assert_eq!(
        rows(&mut b, "SELECT v FROM acc WHERE id = 2").await,
        ["20"],
        "a transaction block keeps its snapshot"
    );
    ok(&mut b, "COMMIT").await;
    assert_eq!(rows(&mut b, "SELECT v FROM acc WHERE id = 2").await, ["21"]);
}

/// PostgreSQL's `now()` and `current_timestamp` are the transaction's start time: every
/// statement of a transaction sees the same one, whichever path runs it (the point fast
/// path for `INSERT ... VALUES`, DataFusion for the rest). Each statement used to see its
/// own.
#[tokio::test]
async fn now_is_the_transactions_start_time_in_every_statement() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE ev (id INT PRIMARY KEY, at TIMESTAMPTZ)",
    )
    .await;
    ok(&mut s, "BEGIN").await;
    let first = rows(&mut s, "SELECT now()").await;
    match run(&mut s, "SELECT now()").await {
        Ok(QueryResult::Rows { schema, .. }) => assert!(
            matches!(
                schema.field(0).data_type(),
                datafusion::arrow::datatypes::DataType::Timestamp(_, Some(_))
            ),
            "now() is a timestamptz: {schema:?}"
        ),
        other => panic!("SELECT now(): {other:?}"),
    }
    for i in 1..=3 {
        ok(&mut s, &format!("INSERT INTO ev VALUES ({i}, now())")).await;
    }
    ok(&mut s, "INSERT INTO ev VALUES (4, current_timestamp)").await;
    ok(&mut s, "INSERT INTO ev SELECT 5, now()").await;
    assert_eq!(rows(&mut s, "SELECT now()").await, first);
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM ev WHERE at = now()").await,
        vec!["5"],
        "every row holds the transaction's now()"
    );
    ok(&mut s, "COMMIT").await;
    assert_eq!(
        rows(&mut s, "SELECT count(DISTINCT at) FROM ev").await,
        vec!["1"]
    );
    // The next transaction starts later.
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM ev WHERE at < now()").await,
        vec!["5"]
    );
}

#[tokio::test]
async fn a_failed_statement_aborts_the_transaction_block() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY)").await;
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO t VALUES (1)").await;
    assert_eq!(
        rows(&mut s, "SELECT id FROM t").await,
        vec!["1"],
        "reads its own writes"
    );
    code(&mut s, "SELECT 1 / 0").await;
    assert_eq!(s.transaction_state(), TransactionState::Failed);
    assert_eq!(code(&mut s, "SELECT 1").await, "25P02");
    assert_eq!(ok(&mut s, "COMMIT").await, "ROLLBACK");
    assert_eq!(s.transaction_state(), TransactionState::Idle);
    assert!(rows(&mut s, "SELECT id FROM t").await.is_empty());
}

#[tokio::test]
async fn read_committed_never_loses_an_update() {
    let db = TestDb::new().await;
    let mut setup = db.session();
    ok(&mut setup, "CREATE TABLE c (id INT PRIMARY KEY, n INT)").await;
    ok(&mut setup, "INSERT INTO c VALUES (1, 0)").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut s = db.session();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                ok(&mut s, "BEGIN").await;
                ok(&mut s, "UPDATE c SET n = n + 1 WHERE id = 1").await;
                ok(&mut s, "COMMIT").await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(rows(&mut setup, "SELECT n FROM c").await, vec!["100"]);
}

#[tokio::test]
async fn second_writer_waits_then_sees_the_newest_row_under_read_committed() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(&mut a, "CREATE TABLE c (id INT PRIMARY KEY, n INT)").await;
    ok(&mut a, "INSERT INTO c VALUES (1, 10)").await;
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "UPDATE c SET n = n * 2 WHERE id = 1").await;
    let waiter = tokio::spawn(async move {
        let tag = ok(&mut b, "UPDATE c SET n = n + 1 WHERE id = 1").await;
        (b, tag)
    });
    ok(&mut a, "COMMIT").await;
    let (_b, tag) = waiter.await.unwrap();
    assert_eq!(tag, "UPDATE 1");
    assert_eq!(rows(&mut a, "SELECT n FROM c").await, vec!["21"]);
}

/// Under READ COMMITTED a point UPDATE locks the newest version of its row and computes
/// the new row from it, a point SELECT reads the newest versions, and an INSERT of literals
/// reads nothing, so after its start a transaction of such statements (pgbench's TPC-B)
/// asks the timestamp oracle only for its commit: two timestamps, not one per statement.
#[tokio::test]
async fn a_read_committed_transaction_of_point_statements_takes_two_timestamps() {
    let db = TestDb::new().await;
    let mut a = db.session();
    ok(&mut a, "CREATE TABLE acc (aid INT NOT NULL, bal INT)").await;
    ok(&mut a, "ALTER TABLE acc ADD PRIMARY KEY (aid)").await;
    ok(&mut a, "CREATE TABLE tel (tid INT PRIMARY KEY, bal INT)").await;
    ok(
        &mut a,
        "CREATE TABLE hist (tid INT, delta INT, at TIMESTAMP)",
    )
    .await;
    ok(&mut a, "INSERT INTO acc VALUES (1, 0), (2, 0)").await;
    ok(&mut a, "INSERT INTO tel VALUES (1, 0)").await;
    for round in 1..=3 {
        let before = db.sql_tso.calls();
        ok(&mut a, "BEGIN").await;
        assert_eq!(
            ok(&mut a, "UPDATE acc SET bal = bal + 5 WHERE aid = 1").await,
            "UPDATE 1"
        );
        assert_eq!(
            rows(&mut a, "SELECT bal FROM acc WHERE aid = 1").await,
            [(5 * round).to_string()]
        );
        assert_eq!(
            ok(&mut a, "UPDATE acc SET bal = bal - 5 WHERE aid = 2").await,
            "UPDATE 1"
        );
        assert_eq!(
            ok(&mut a, "UPDATE tel SET bal = bal + 5 WHERE tid = 1").await,
            "UPDATE 1"
        );
        assert_eq!(
            ok(&mut a, "UPDATE acc SET bal = bal + 1 WHERE aid = 3").await,
            "UPDATE 0"
        );
        ok(&mut a, "INSERT INTO hist VALUES (1, 5, CURRENT_TIMESTAMP)").await;
        ok(&mut a, "COMMIT").await;
        assert_eq!(
            db.sql_tso.calls() - before,
            2,
            "round {round}: a start and a commit timestamp"
        );
    }
    assert_eq!(
        rows(&mut a, "SELECT aid, bal FROM acc ORDER BY aid").await,
        ["1|15", "2|-15"]
    );
    assert_eq!(rows(&mut a, "SELECT bal FROM tel").await, ["15"]);
    assert_eq!(rows(&mut a, "SELECT count(*) FROM hist").await, ["3"]);
}

/// A READ COMMITTED UPDATE through a unique index that waits for another transaction's
/// lock on the row then changes the newest version (no update is lost, no write conflict
/// is retried), or, if the row no longer holds the looked-up key, finds what a fresh
/// snapshot finds. REPEATABLE READ still refuses a row changed since its snapshot.
#[tokio::test]
async fn a_read_committed_update_through_a_unique_index_changes_the_newest_row() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(&mut a, "CREATE TABLE acc (aid INT NOT NULL, bal INT)").await;
    ok(&mut a, "ALTER TABLE acc ADD PRIMARY KEY (aid)").await;
    ok(&mut a, "INSERT INTO acc VALUES (1, 10), (2, 10)").await;

    // b's snapshot predates a's change; b waits for a's lock, then adds to a's value.
    ok(&mut b, "BEGIN").await;
    assert_eq!(
        rows(&mut b, "SELECT bal FROM acc WHERE aid = 2").await,
        ["10"]
    );
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "UPDATE acc SET bal = bal * 2 WHERE aid = 1").await;
    let waiter = tokio::spawn(async move {
        let before = db.sql_tso.calls();
        let tag = ok(&mut b, "UPDATE acc SET bal = bal + 1 WHERE aid = 1").await;
        let calls = db.sql_tso.calls() - before;
        ok(&mut b, "COMMIT").await;
        (b, db, tag, calls)
    });
    ok(&mut a, "COMMIT").await;
    let (mut b, _db, tag, calls) = waiter.await.unwrap();
    assert_eq!(tag, "UPDATE 1");
    assert_eq!(calls, 0, "the waiting UPDATE was retried at a new snapshot");
    assert_eq!(
        rows(&mut a, "SELECT bal FROM acc WHERE aid = 1").await,
        ["21"]
    );

    // The key moves while b waits: the row b found no longer matches, and no row does.
    ok(&mut b, "BEGIN").await;
    assert_eq!(
        rows(&mut b, "SELECT bal FROM acc WHERE aid = 2").await,
        ["10"]
    );
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "UPDATE acc SET aid = 100 WHERE aid = 1").await;
    let waiter = tokio::spawn(async move {
        let tag = ok(&mut b, "UPDATE acc SET bal = 0 WHERE aid = 1").await;
        ok(&mut b, "COMMIT").await;
        (b, tag)
    });
    ok(&mut a, "COMMIT").await;
    let (mut b, tag) = waiter.await.unwrap();
    assert_eq!(tag, "UPDATE 0");
    assert_eq!(
        rows(&mut b, "SELECT aid, bal FROM acc ORDER BY aid").await,
        ["2|10", "100|21"]
    );

    // REPEATABLE READ: a row committed after the snapshot is a serialization failure.
    ok(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    assert_eq!(
        rows(&mut b, "SELECT bal FROM acc WHERE aid = 2").await,
        ["10"]
    );
    ok(&mut a, "UPDATE acc SET bal = 11 WHERE aid = 2").await;
    assert_eq!(
        code(&mut b, "UPDATE acc SET bal = bal + 1 WHERE aid = 2").await,
        "40001"
    );
    ok(&mut b, "ROLLBACK").await;
    assert_eq!(
        rows(&mut b, "SELECT bal FROM acc WHERE aid = 2").await,
        ["11"]
    );
}

#[tokio::test]
async fn read_committed_updates_indexed_columns_another_transaction_changed_since_it_began() {
    // A row's index entries were checked against the transaction's start_ts at COMMIT, so
    // changing a row that another transaction had changed (and committed) since BEGIN
    // failed with 40001 where PostgreSQL commits: the row lock already orders the two.
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(
        &mut a,
        "CREATE TABLE t (id INT PRIMARY KEY, v INT, u INT UNIQUE)",
    )
    .await;
    ok(&mut a, "CREATE INDEX tv ON t (v)").await;
    ok(&mut a, "INSERT INTO t VALUES (1, 1, 1)").await;
    ok(&mut a, "BEGIN").await;
    assert_eq!(rows(&mut a, "SELECT v FROM t").await, vec!["1"]);
    ok(&mut b, "UPDATE t SET v = 2, u = 2 WHERE id = 1").await;
    ok(&mut a, "UPDATE t SET v = 3, u = 3 WHERE id = 1").await;
    ok(&mut a, "COMMIT").await;
    assert_eq!(rows(&mut b, "SELECT v, u FROM t").await, vec!["3|3"]);
    assert_eq!(
        rows(&mut b, "SELECT id FROM t WHERE v = 3").await,
        vec!["1"]
    );
    assert!(
        rows(&mut b, "SELECT id FROM t WHERE v = 2")
            .await
            .is_empty()
    );
    let check = rows(&mut b, "ADMIN CHECK TABLE t").await;
    assert!(check.iter().all(|r| r.ends_with("|ok")), "{check:?}");
}

#[tokio::test]
async fn repeatable_read_keeps_its_snapshot_and_refuses_a_lost_update() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(&mut a, "CREATE TABLE c (id INT PRIMARY KEY, n INT)").await;
    ok(&mut a, "INSERT INTO c VALUES (1, 10)").await;
    ok(&mut a, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    assert_eq!(rows(&mut a, "SELECT n FROM c").await, vec!["10"]);
    ok(&mut b, "UPDATE c SET n = 11 WHERE id = 1").await;
    assert_eq!(
        rows(&mut a, "SELECT n FROM c").await,
        vec!["10"],
        "snapshot kept"
    );
    assert_eq!(
        code(&mut a, "UPDATE c SET n = n + 1 WHERE id = 1").await,
        "40001"
    );
    ok(&mut a, "ROLLBACK").await;
    assert_eq!(rows(&mut a, "SELECT n FROM c").await, vec!["11"]);
}

#[tokio::test]
async fn an_update_that_matches_no_row_leaves_it_unlocked() {
    // A point UPDATE locks its row to read it; a row that does not match must not stay
    // locked (PostgreSQL locks only rows it changes), whether or not its lock was the
    // transaction's first.
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(&mut a, "CREATE TABLE c (id INT PRIMARY KEY, n INT)").await;
    ok(&mut a, "INSERT INTO c VALUES (1, 0), (2, 0)").await;
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "UPDATE c SET n = 5 WHERE id = 1 AND n = 99").await;
    ok(&mut a, "UPDATE c SET n = 5 WHERE id = 2 AND n = 99").await;
    ok(&mut a, "UPDATE c SET n = 5 WHERE id = 3").await;
    ok(&mut b, "SET lock_timeout = '100ms'").await;
    ok(&mut b, "UPDATE c SET n = 7 WHERE id = 1").await;
    ok(&mut b, "UPDATE c SET n = 7 WHERE id = 2").await;
    ok(&mut b, "INSERT INTO c VALUES (3, 7)").await;
    // READ COMMITTED: a's next statement sees b's commit.
    ok(&mut a, "UPDATE c SET n = n + 1 WHERE id = 1").await;
    ok(&mut a, "COMMIT").await;
    assert_eq!(
        rows(&mut b, "SELECT n FROM c ORDER BY id").await,
        vec!["8", "7", "7"]
    );
}

#[tokio::test]
async fn lock_waits_time_out_and_deadlocks_are_broken() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(&mut a, "CREATE TABLE c (id INT PRIMARY KEY, n INT)").await;
    ok(&mut a, "INSERT INTO c VALUES (1, 0), (2, 0)").await;
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "UPDATE c SET n = 1 WHERE id = 1").await;
    ok(&mut b, "SET lock_timeout = '100ms'").await;
    assert_eq!(
        code(&mut b, "UPDATE c SET n = 2 WHERE id = 1").await,
        "55P03"
    );
    ok(&mut b, "SET lock_timeout = '20s'").await;
    ok(&mut b, "BEGIN").await;
    ok(&mut b, "UPDATE c SET n = 2 WHERE id = 2").await;
    // a waits for b; b then waits for a: one of them is chosen as the deadlock victim.
    let a_task = tokio::spawn(async move {
        let r = run(&mut a, "UPDATE c SET n = 1 WHERE id = 2")
            .await
            .map(|_| ())
            .map_err(|e| e.code);
        (a, r)
    });
    let b_result = run(&mut b, "UPDATE c SET n = 2 WHERE id = 1")
        .await
        .map(|_| ())
        .map_err(|e| e.code);
    // Whoever was refused rolled back (its block failed), so the other proceeds.
    if b_result.is_ok() {
        ok(&mut b, "COMMIT").await;
    } else {
        ok(&mut b, "ROLLBACK").await;
    }
    let (mut a, a_result) = a_task.await.unwrap();
    if a_result.is_ok() {
        ok(&mut a, "COMMIT").await;
    } else {
        ok(&mut a, "ROLLBACK").await;
    }
    let codes: Vec<_> = [a_result, b_result]
        .into_iter()
        .filter_map(|r| r.err())
        .collect();
    assert_eq!(codes, vec!["40P01"]);
}

#[tokio::test]
async fn indexes_are_backfilled_used_and_kept_up_to_date() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id INT, k INT, v TEXT)").await;
    ok(
        &mut s,
        "INSERT INTO t SELECT x, x % 10, 'v' || x FROM generate_series(1, 300) AS x",
    )
    .await;
    ok(&mut s, "CREATE INDEX t_k ON t (k)").await;
    assert_eq!(
        ok(&mut s, "CREATE INDEX IF NOT EXISTS t_k ON t (k)").await,
        "CREATE INDEX"
    );
    let plan = rows(&mut s, "EXPLAIN SELECT v FROM t WHERE k = 3")
        .await
        .join("\n");
    assert!(plan.contains("index t_k"), "{plan}");
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM t WHERE k = 3").await,
        vec!["30"]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM t WHERE k > 7").await,
        vec!["60"]
    );
    ok(&mut s, "UPDATE t SET k = 100 WHERE id <= 5").await;
    ok(&mut s, "DELETE FROM t WHERE id = 13").await;
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM t WHERE k = 3").await,
        vec!["28"]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM t WHERE k = 100").await,
        vec!["5"]
    );
    // Unique index creation fails on duplicates and leaves no index behind.
    assert_eq!(
        code(&mut s, "CREATE UNIQUE INDEX t_k_u ON t (k)").await,
        "23505"
    );
    ok(&mut s, "CREATE UNIQUE INDEX t_id ON t (id)").await;
    assert_eq!(
        code(&mut s, "INSERT INTO t VALUES (1, 1, 'dup')").await,
        "23505"
    );
    ok(&mut s, "DROP INDEX t_k").await;
    let plan = rows(&mut s, "EXPLAIN SELECT v FROM t WHERE k = 3")
        .await
        .join("\n");
    assert!(!plan.contains("index t_k"), "{plan}");
    // Primary-key access paths show too.
    ok(
        &mut s,
        "CREATE TABLE p (a INT, b INT, c INT, PRIMARY KEY (a, b))",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO p SELECT x / 10, x % 10, x FROM generate_series(0, 99) AS x",
    )
    .await;
    let plan = rows(&mut s, "EXPLAIN SELECT c FROM p WHERE a = 3 AND b = 4")
        .await
        .join("\n");
    assert!(plan.contains("point get"), "{plan}");
    assert_eq!(
        rows(&mut s, "SELECT c FROM p WHERE a = 3 AND b = 4").await,
        vec!["34"]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM p WHERE a = 3 AND b >= 5").await,
        vec!["5"]
    );
    assert_eq!(
        rows(&mut s, "SELECT sum(c) FROM p WHERE a BETWEEN 2 AND 3").await,
        vec!["590"]
    );
}

#[tokio::test]
async fn add_primary_key_on_a_table_created_without_one() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE a (aid INT NOT NULL, bal INT)").await;
    ok(
        &mut s,
        "INSERT INTO a SELECT x, 0 FROM generate_series(1, 100) AS x",
    )
    .await;
    ok(&mut s, "ALTER TABLE a ADD PRIMARY KEY (aid)").await;
    assert_eq!(
        code(&mut s, "ALTER TABLE a ADD PRIMARY KEY (bal)").await,
        "42P16"
    );
    assert_eq!(code(&mut s, "INSERT INTO a VALUES (5, 1)").await, "23505");
    ok(&mut s, "UPDATE a SET bal = bal + 5 WHERE aid = 7").await;
    assert_eq!(
        rows(&mut s, "SELECT bal FROM a WHERE aid = 7").await,
        vec!["5"]
    );
    ok(&mut s, "CREATE TABLE n (x INT, y INT)").await;
    ok(&mut s, "INSERT INTO n VALUES (1, 1), (NULL, 2)").await;
    assert_eq!(
        code(&mut s, "ALTER TABLE n ADD PRIMARY KEY (x)").await,
        "23502"
    );
}

#[tokio::test]
async fn limits_are_enforced_with_clear_errors() {
    let db = TestDb::with_config(SqlConfig {
        statement_bytes_max: 200,
        rows_per_query_max: 50,
        ..SqlConfig::default()
    })
    .await;
    let mut s = db.session();
    let long = format!("SELECT '{}'", "x".repeat(300));
    assert_eq!(code(&mut s, &long).await, "54000");
    assert_eq!(
        code(&mut s, "SELECT * FROM generate_series(1, 100)").await,
        "54000"
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM generate_series(1, 100)").await,
        vec!["100"]
    );
}

#[tokio::test]
async fn results_are_bounded_in_bytes_across_a_query_string() {
    const MIB: usize = 1024 * 1024;
    let db = TestDb::with_config(SqlConfig {
        result_bytes_max: MIB,
        query_memory_bytes_max: 32 * MIB,
        ..SqlConfig::default()
    })
    .await;
    let mut s = db.session();
    // About 2 MB of rows: refused, whatever the row count.
    let e = run(
        &mut s,
        "SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "54000");
    assert!(e.message.contains("result_bytes_max"), "{}", e.message);
    // Half a megabyte is served.
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM (SELECT repeat('x', 1000) FROM generate_series(1, 500))"
        )
        .await,
        vec!["500"]
    );
    let (results, error) = s
        .simple_query("SELECT repeat('x', 1000) FROM generate_series(1, 500)")
        .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(results.len(), 1);
    // About 800 kB, sorted (the sort's own memory is execution memory, not result).
    let (results, error) = s
        .simple_query(
            "SELECT lpad(g::text, 20, '0') FROM generate_series(1, 40000) g ORDER BY 1 DESC",
        )
        .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(results.len(), 1);
    // Two statements of 600 kB each: the second fails, the first's rows are returned.
    let two = "SELECT repeat('x', 1000) FROM generate_series(1, 600); \
               SELECT repeat('y', 1000) FROM generate_series(1, 600)";
    let (results, error) = s.simple_query(two).await;
    assert_eq!(results.len(), 1);
    let error = error.expect("the second result passes the bound with the first");
    assert_eq!(error.code, "54000");
    // Each query string starts with the whole budget, and the session serves on.
    let (results, error) = s
        .simple_query("SELECT repeat('y', 1000) FROM generate_series(1, 600)")
        .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(results.len(), 1);
    // Rows a statement reads to write are bounded by query_memory_bytes_max, and a refused
    // statement writes nothing.
    ok(&mut s, "CREATE TABLE big (v TEXT)").await;
    let e = run(
        &mut s,
        "INSERT INTO big SELECT repeat('x', 1000) FROM generate_series(1, 40000)",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "54000");
    assert!(
        e.message.contains("query_memory_bytes_max"),
        "{}",
        e.message
    );
    assert_eq!(rows(&mut s, "SELECT count(*) FROM big").await, vec!["0"]);
    ok(
        &mut s,
        "INSERT INTO big SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
    )
    .await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM big").await, vec!["2000"]);
}

#[tokio::test]
async fn prepared_statements_bind_typed_parameters() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE a (aid INT PRIMARY KEY, bal INT, note TEXT)",
    )
    .await;
    ok(&mut s, "INSERT INTO a VALUES (1, 10, 'x')").await;
    let upd = s
        .prepare("UPDATE a SET bal = bal + $1 WHERE aid = $2", &[])
        .await
        .unwrap();
    assert_eq!(
        upd.param_types,
        vec![
            datafusion::arrow::datatypes::DataType::Int32,
            datafusion::arrow::datatypes::DataType::Int32
        ]
    );
    assert!(upd.result_schema.is_none());
    use datafusion::scalar::ScalarValue;
    let r = s
        .execute_prepared(
            &upd,
            vec![ScalarValue::Int32(Some(5)), ScalarValue::Int32(Some(1))],
        )
        .await
        .unwrap();
    assert!(matches!(r, QueryResult::Command { ref tag } if tag == "UPDATE 1"));
    let sel = s
        .prepare("SELECT bal, note FROM a WHERE aid = $1", &[])
        .await
        .unwrap();
    assert_eq!(sel.result_schema.as_ref().unwrap().fields().len(), 2);
    let ins = s
        .prepare("INSERT INTO a (aid, bal, note) VALUES ($1, $2, $3)", &[])
        .await
        .unwrap();
    assert_eq!(
        ins.param_types[2],
        datafusion::arrow::datatypes::DataType::Utf8
    );
    s.execute_prepared(
        &ins,
        vec![
            ScalarValue::Int32(Some(2)),
            ScalarValue::Int32(None),
            ScalarValue::Utf8(Some("it's".into())),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        rows(&mut s, "SELECT aid, bal, note FROM a ORDER BY aid").await,
        vec!["1|15|x", "2|NULL|it's"]
    );
}

#[tokio::test]
async fn an_in_list_naming_a_value_twice_returns_each_row_once() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY, k INT)").await;
    ok(&mut s, "CREATE INDEX t_k ON t (k)").await;
    ok(&mut s, "INSERT INTO t VALUES (1, 10), (2, 20), (3, 10)").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM t WHERE k IN (10, 10, 20) ORDER BY id"
        )
        .await,
        vec!["1", "2", "3"]
    );
    assert_eq!(
        rows(&mut s, "SELECT k FROM t WHERE id IN (1, 1, 3) ORDER BY id").await,
        vec!["10", "10"]
    );
}

/// Adjacent keys in an IN list over the whole primary key: each key's range ends where
/// the next begins, and merging them as ranges kept only the first key, so
/// `id IN (2, 3, 4, 5)` read one row and Django's `DELETE ... WHERE id IN (6, 5, 4, 3,
/// 2)` deleted one.
#[tokio::test]
async fn an_in_list_of_adjacent_keys_reads_and_deletes_every_row() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id BIGINT PRIMARY KEY, v INT)").await;
    ok(
        &mut s,
        "INSERT INTO t SELECT g, g FROM generate_series(1, 8) g",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM t WHERE id IN (7, 3, 2, 1, 3) ORDER BY id"
        )
        .await,
        vec!["1", "2", "3", "7"]
    );
    assert_eq!(
        ok(&mut s, "UPDATE t SET v = 0 WHERE id IN (4, 5, 6, 7)").await,
        "UPDATE 4"
    );
    assert_eq!(
        ok(&mut s, "DELETE FROM t WHERE id IN (6, 5, 4, 3, 2)").await,
        "DELETE 5"
    );
    assert_eq!(
        rows(&mut s, "SELECT id, v FROM t ORDER BY id").await,
        vec!["1|1", "7|0", "8|8"]
    );
    // A composite key, both columns fixed: (1, 1) and (1, 2) are adjacent too.
    ok(&mut s, "CREATE TABLE p (a INT, b INT, PRIMARY KEY (a, b))").await;
    ok(
        &mut s,
        "INSERT INTO p SELECT a, b FROM generate_series(1, 3) a, generate_series(1, 3) b",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT a, b FROM p WHERE a IN (1, 2, 4, 3) AND b IN (2, 1, 5, 6) ORDER BY a, b"
        )
        .await,
        vec!["1|1", "1|2", "2|1", "2|2", "3|1", "3|2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prepared_updates_of_one_row_all_apply() {
    let db = TestDb::new().await;
    let mut setup = db.session();
    ok(
        &mut setup,
        "CREATE TABLE b (bid INT NOT NULL, bal INT, filler CHAR(88))",
    )
    .await;
    ok(&mut setup, "INSERT INTO b (bid, bal) VALUES (1, 0)").await;
    ok(&mut setup, "ALTER TABLE b ADD PRIMARY KEY (bid)").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut s = db.session();
        tasks.push(tokio::spawn(async move {
            let upd = s
                .prepare("UPDATE b SET bal = bal + $1 WHERE bid = $2", &[])
                .await
                .unwrap();
            for _ in 0..20 {
                ok(&mut s, "BEGIN").await;
                use datafusion::scalar::ScalarValue;
                s.execute_prepared(
                    &upd,
                    vec![ScalarValue::Int32(Some(1)), ScalarValue::Int32(Some(1))],
                )
                .await
                .unwrap_or_else(|e| panic!("{} ({})", e.message, e.code));
                ok(&mut s, "COMMIT").await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(rows(&mut setup, "SELECT bal FROM b").await, vec!["80"]);
}

#[tokio::test]
async fn bytea_accepts_postgres_text_forms_and_version_names_postgres() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE b (v BYTEA)").await;
    ok(&mut s, "INSERT INTO b VALUES ('\\x0a0b'), ('a\\000b')").await;
    assert_eq!(
        rows(&mut s, "SELECT length(v) FROM b ORDER BY 1").await,
        vec!["2", "3"]
    );
    assert_eq!(code(&mut s, "INSERT INTO b VALUES ('\\x0')").await, "22P02");
    let v = rows(&mut s, "SELECT version()").await;
    assert!(v[0].starts_with("PostgreSQL 15"), "{v:?}");
}

#[tokio::test]
async fn a_failed_prepare_aborts_the_transaction_block() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "BEGIN").await;
    assert!(s.prepare("SELECT * FROM missing", &[]).await.is_err());
    assert_eq!(s.transaction_state(), TransactionState::Failed);
    ok(&mut s, "ROLLBACK").await;
}

#[tokio::test]
async fn views_are_expanded_where_they_are_named() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (x INT, y TEXT)").await;
    ok(&mut s, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')").await;
    assert_eq!(
        ok(&mut s, "CREATE VIEW big AS SELECT x, y FROM t WHERE x > 1").await,
        "CREATE VIEW"
    );
    ok(&mut s, "CREATE VIEW named (n) AS SELECT x * 10 FROM big").await;
    assert_eq!(
        rows(&mut s, "SELECT y FROM big ORDER BY x").await,
        vec!["b", "c"]
    );
    assert_eq!(
        rows(&mut s, "SELECT n FROM named ORDER BY n").await,
        vec!["20", "30"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM t WHERE x IN (SELECT x FROM big)"
        )
        .await,
        vec!["2"]
    );
    assert_eq!(code(&mut s, "CREATE VIEW big AS SELECT 1").await, "42P07");
    assert_eq!(
        code(&mut s, "CREATE VIEW bad AS SELECT nope FROM t").await,
        "42703"
    );
    assert_eq!(code(&mut s, "DROP TABLE big").await, "42809");
    ok(&mut s, "DROP VIEW named").await;
    assert_eq!(code(&mut s, "SELECT * FROM named").await, "42P01");
    assert_eq!(code(&mut s, "DROP VIEW named").await, "42P01");
    ok(&mut s, "DROP VIEW IF EXISTS named").await;
}

#[tokio::test]
async fn a_cte_hides_a_view_of_the_same_name_where_postgres_says_it_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (x INT)").await;
    ok(&mut s, "INSERT INTO t VALUES (1), (2), (3)").await;
    ok(&mut s, "CREATE VIEW v AS SELECT x FROM t WHERE x > 1").await;
    // The CTE, not the view.
    assert_eq!(
        rows(&mut s, "WITH v AS (SELECT 7 AS x) SELECT x FROM v").await,
        vec!["7"]
    );
    // Also from a subquery inside the WITH's body.
    assert_eq!(
        rows(
            &mut s,
            "WITH v AS (SELECT 7 AS x) SELECT (SELECT max(x) FROM v) FROM t WHERE x = 1"
        )
        .await,
        vec!["7"]
    );
    // A non-recursive CTE does not see itself: its `v` is the view.
    assert_eq!(
        rows(
            &mut s,
            "WITH v AS (SELECT x * 10 AS x FROM v) SELECT x FROM v ORDER BY x"
        )
        .await,
        vec!["20", "30"]
    );
    // A later CTE sees an earlier one; an earlier one sees the view.
    assert_eq!(
        rows(
            &mut s,
            "WITH a AS (SELECT count(*) AS n FROM v), v AS (SELECT 0 AS x) \
             SELECT n, (SELECT x FROM v) FROM a"
        )
        .await,
        vec!["2|0"]
    );
    // A schema-qualified name is the view, whatever the CTEs.
    assert_eq!(
        rows(
            &mut s,
            "WITH v AS (SELECT 7 AS x) SELECT count(*) FROM public.v"
        )
        .await,
        vec!["2"]
    );
    // The CTE's scope ends with its query: the view is seen outside it.
    assert_eq!(
        rows(
            &mut s,
            "SELECT (WITH v AS (SELECT 7 AS x) SELECT x FROM v), (SELECT count(*) FROM v)"
        )
        .await,
        vec!["7|2"]
    );
    // A view's own names resolve where it was defined, not among the caller's CTEs.
    ok(&mut s, "CREATE VIEW w AS SELECT count(*) AS n FROM v").await;
    assert_eq!(
        rows(&mut s, "WITH v AS (SELECT 7 AS x) SELECT n FROM w").await,
        vec!["2"]
    );
}

#[tokio::test]
async fn point_statements_agree_with_the_general_path() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE k (a INT, b TEXT, c CHAR(3), n SMALLINT, PRIMARY KEY (a, b))",
    )
    .await;
    ok(&mut s, "CREATE TABLE r (id INT NOT NULL, v BIGINT, w INT)").await;
    ok(
        &mut s,
        "INSERT INTO k VALUES (1, 'x', 'ab', 1), (2, 'y', 'cd', 32767)",
    )
    .await;
    ok(&mut s, "INSERT INTO r VALUES (1, 10, 1), (2, 20, 2)").await;
    ok(&mut s, "ALTER TABLE r ADD PRIMARY KEY (id)").await;
    // Point reads through a clustered key, a unique index, and with extra filters.
    assert_eq!(
        rows(&mut s, "SELECT c, n FROM k WHERE a = 1 AND b = 'x'").await,
        vec!["ab |1"]
    );
    assert_eq!(
        rows(&mut s, "SELECT * FROM k WHERE b = 'y' AND a = 2").await,
        vec!["2|y|cd |32767"]
    );
    assert!(
        rows(&mut s, "SELECT c FROM k WHERE a = 1 AND b = 'x' AND n = 2")
            .await
            .is_empty()
    );
    assert!(
        rows(&mut s, "SELECT c FROM k WHERE a = 1 AND b = NULL")
            .await
            .is_empty()
    );
    assert!(
        rows(&mut s, "SELECT c FROM k WHERE a = 1.5 AND b = 'x'")
            .await
            .is_empty()
    );
    assert_eq!(
        rows(&mut s, "SELECT v AS value FROM r WHERE id = 2").await,
        vec!["20"]
    );
    // Updates by key, with arithmetic, overflow and NOT NULL checks.
    assert_eq!(
        ok(&mut s, "UPDATE r SET v = v + 5, w = -3 WHERE id = 1").await,
        "UPDATE 1"
    );
    assert_eq!(
        ok(&mut s, "UPDATE r SET v = v + 5 WHERE id = 99").await,
        "UPDATE 0"
    );
    assert_eq!(
        rows(&mut s, "SELECT v, w FROM r WHERE id = 1").await,
        vec!["15|-3"]
    );
    assert_eq!(
        code(&mut s, "UPDATE k SET n = n + 1 WHERE a = 2 AND b = 'y'").await,
        "22003"
    );
    assert_eq!(
        code(&mut s, "UPDATE r SET id = NULL WHERE id = 1").await,
        "23502"
    );
    assert_eq!(
        ok(&mut s, "UPDATE k SET a = 3 WHERE a = 1 AND b = 'x'").await,
        "UPDATE 1"
    );
    assert_eq!(
        rows(&mut s, "SELECT a FROM k ORDER BY a").await,
        vec!["2", "3"]
    );
    // Inserts of literal rows, with the unique checks.
    assert_eq!(
        code(&mut s, "INSERT INTO r (id, v) VALUES (2, 1)").await,
        "23505"
    );
    assert_eq!(
        ok(&mut s, "INSERT INTO r (id, v) VALUES (3, 30)").await,
        "INSERT 0 1"
    );
    assert_eq!(
        rows(&mut s, "SELECT v, w FROM r WHERE id = 3").await,
        vec!["30|NULL"]
    );
    assert_eq!(code(&mut s, "INSERT INTO r (v) VALUES (1)").await, "23502");
}

#[tokio::test]
async fn output_columns_may_share_a_name_as_in_postgres() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (a INT, b INT)").await;
    ok(&mut s, "INSERT INTO t VALUES (1, 2)").await;
    match run(&mut s, "SELECT a AS x, b AS x, 7 AS x FROM t")
        .await
        .unwrap()
    {
        QueryResult::Rows { schema, .. } => {
            let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
            assert_eq!(names, vec!["x", "x", "x"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rows(&mut s, "SELECT a AS x, b AS x FROM t").await,
        vec!["1|2"]
    );
}

#[tokio::test]
async fn integer_overflow_is_an_error_not_a_wrapped_value() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE n (k INT PRIMARY KEY, i INT, b BIGINT, h SMALLINT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO n VALUES (1, 2147483647, 9223372036854775807, 32767), (2, 5, 7, 3)",
    )
    .await;
    // PostgreSQL: ERROR 22003, integer/bigint/smallint out of range.
    for sql in [
        "SELECT 9223372036854775807 + 1",
        "SELECT b + 1 FROM n",
        "SELECT b * 2 FROM n WHERE k = 1",
        "SELECT -b - 2 FROM n WHERE k = 1",
        "SELECT i + i FROM n",
        "SELECT h * h FROM n WHERE k = 1",
        "SELECT sum(i + i) FROM n",
        "SELECT k FROM n WHERE b + 1 > 0",
        "UPDATE n SET i = i + i WHERE k = 1",
    ] {
        assert_eq!(code(&mut s, sql).await, "22003", "{sql}");
    }
    // The failed UPDATE changed nothing; arithmetic in range is unchanged, and so are the
    // names of computed columns.
    assert_eq!(
        code(&mut s, "SELECT i, b - 1, h + h FROM n ORDER BY k").await,
        "22003",
        "h + h overflows smallint on the first row"
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT i, b - 1, h + h, i * i - 1 FROM n WHERE k = 2"
        )
        .await,
        vec!["5|6|6|24"]
    );
    assert_eq!(
        rows(&mut s, "SELECT i, b - 1 FROM n WHERE k = 1").await,
        vec!["2147483647|9223372036854775806"]
    );
    match run(&mut s, "SELECT k + 1, k + 1 AS named FROM n WHERE k = 2")
        .await
        .unwrap()
    {
        QueryResult::Rows { schema, .. } => {
            let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
            // The rewrite to checked arithmetic does not show in column names.
            assert_eq!(names, vec!["?column?", "named"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT k + 1 AS x, count(*) FROM n GROUP BY k + 1 ORDER BY k + 1"
        )
        .await,
        vec!["2|1", "3|1"]
    );
    // `smallint + 1` adds in int4 (the literal's type), on the point path as on the
    // general one: 32767 + 1 fits the int4 column it is assigned to.
    for (sql, tag) in [
        ("UPDATE n SET i = h + 1 WHERE k = 1", "UPDATE 1"),
        ("UPDATE n SET i = h + 1 WHERE k + 0 = 1", "UPDATE 1"),
        ("UPDATE n SET i = 1 + h WHERE k = 1", "UPDATE 1"),
    ] {
        assert_eq!(ok(&mut s, sql).await, tag, "{sql}");
        assert_eq!(
            rows(&mut s, "SELECT i FROM n WHERE k = 1").await,
            vec!["32768"],
            "{sql}"
        );
    }
    // Assigned back to the smallint it overflows; as does smallint + smallint, and an
    // integer too large for the column it is written to.
    for sql in [
        "INSERT INTO n VALUES (3, 1, 1, 40000)",
        "INSERT INTO n VALUES (3, 4294967296, 1, 1)",
        "INSERT INTO n SELECT 3, 1, 1, 40000",
        "UPDATE n SET h = 40000 WHERE k = 1",
        "UPDATE n SET h = b WHERE k + 0 = 1",
    ] {
        let e = run(&mut s, sql).await.unwrap_err();
        assert_eq!(e.code, "22003", "{sql}: {e:?}");
    }
    // A column assigned another column's value, on the general path (the internal read
    // once named both alike and failed).
    assert_eq!(
        ok(&mut s, "UPDATE n SET h = i, b = i WHERE k + 0 = 2").await,
        "UPDATE 1"
    );
    assert_eq!(
        rows(&mut s, "SELECT h, b FROM n WHERE k = 2").await,
        vec!["5|5"]
    );
    assert_eq!(
        code(&mut s, "UPDATE n SET h = h + 1 WHERE k = 1").await,
        "22003"
    );
    assert_eq!(
        code(&mut s, "UPDATE n SET i = h + 1::smallint WHERE k = 1").await,
        "22003"
    );
    assert_eq!(
        code(&mut s, "UPDATE n SET i = h + 1::smallint WHERE k + 0 = 1").await,
        "22003"
    );
}

#[tokio::test]
async fn integer_literals_are_int4_when_they_fit_as_in_postgres() {
    let db = TestDb::new().await;
    let mut s = db.session();
    let types = |r: QueryResult| match r {
        QueryResult::Rows { schema, .. } => schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        types(
            run(&mut s, "SELECT 1, 2147483648, -5, 1 + 1")
                .await
                .unwrap()
        ),
        vec!["Int32", "Int64", "Int32", "Int32"]
    );
    // int4 arithmetic: a shift wraps its count as PostgreSQL's does; overflow is an error.
    assert_eq!(
        rows(&mut s, "SELECT 1 << 31, 1 << 63").await,
        vec!["-2147483648|-2147483648"]
    );
    assert_eq!(code(&mut s, "SELECT 2147483647 + 1").await, "22003");
    assert_eq!(
        rows(&mut s, "SELECT 2147483647 + 1::bigint").await,
        vec!["2147483648"]
    );
    // The sqllogictest record this came from: it fits an INTEGER column in PostgreSQL.
    ok(&mut s, "CREATE TABLE t (x INTEGER, y VARCHAR(8))").await;
    ok(&mut s, "INSERT INTO t VALUES (1<<63, 'true')").await;
    // A VALUES column mixing sizes is int8; LIMIT, OFFSET and ORDER BY positions still work.
    ok(&mut s, "CREATE TABLE w (v BIGINT)").await;
    ok(&mut s, "INSERT INTO w VALUES (1), (3000000000)").await;
    assert_eq!(
        rows(&mut s, "SELECT x, y FROM t ORDER BY 1 LIMIT 1 OFFSET 0").await,
        vec!["-2147483648|true"]
    );
    assert_eq!(
        rows(&mut s, "SELECT v * 2 FROM w ORDER BY 1 DESC LIMIT 1").await,
        vec!["6000000000"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT * FROM (VALUES (1), (3000000000)) AS v(a) ORDER BY 1"
        )
        .await,
        vec!["1", "3000000000"]
    );
}

#[tokio::test]
async fn unnamed_output_columns_get_postgres_names() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (a INT, b TEXT)").await;
    ok(&mut s, "INSERT INTO t VALUES (1, 'x')").await;
    let names = |r: QueryResult| match r {
        QueryResult::Rows { schema, .. } => schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    // As PostgreSQL 15 names them (checked against it).
    let sql = "SELECT a, t.b, a + 1, count(*) OVER (), 1::text, a::bigint, \
               CASE WHEN a > 0 THEN 1 END, upper(b), (SELECT max(a) FROM t), 7 AS seven \
               FROM t";
    assert_eq!(
        names(run(&mut s, sql).await.unwrap()),
        vec![
            "a", "b", "?column?", "count", "text", "a", "case", "upper", "max", "seven"
        ]
    );
    // A CASE by its ELSE result, where that names it strongly.
    let sql = "SELECT CASE WHEN a > 0 THEN 1 ELSE a END, CASE WHEN a > 0 THEN 'y' ELSE 'x' END, \
               CASE WHEN a > 0 THEN 'y' ELSE upper(b) END, CASE WHEN a > 0 THEN 2 ELSE b::int END \
               FROM t";
    assert_eq!(
        names(run(&mut s, sql).await.unwrap()),
        vec!["a", "case", "upper", "b"]
    );
    assert_eq!(
        names(run(&mut s, "SELECT count(*), sum(a) FROM t").await.unwrap()),
        vec!["count", "sum"]
    );
    // A cast of a column alone (DataFusion names it by the qualified column), and the
    // SQL value functions, which PostgreSQL names without parentheses.
    assert_eq!(
        names(run(&mut s, "SELECT a::bigint FROM t").await.unwrap()),
        vec!["a"]
    );
    assert_eq!(
        names(
            run(
                &mut s,
                "SELECT b::text, t.a::text, current_timestamp, current_date, now() FROM t"
            )
            .await
            .unwrap()
        ),
        vec!["b", "a", "current_timestamp", "current_date", "now"]
    );
    assert_eq!(
        names(
            run(&mut s, "SELECT ARRAY[1, 2], current_schema, current_user")
                .await
                .unwrap()
        ),
        vec!["array", "current_schema", "current_user"]
    );
    // Around a `*`, and repeating a column the `*` expands to.
    assert_eq!(
        names(
            run(&mut s, "SELECT a + 1, *, a * 2, a FROM t")
                .await
                .unwrap()
        ),
        vec!["?column?", "a", "b", "?column?", "a"]
    );
    // Names hold in ORDER BY and through prepared statements' descriptions.
    assert_eq!(
        rows(&mut s, "SELECT a + 1, a + 1 FROM t ORDER BY a + 1").await,
        vec!["2|2"]
    );
    let prepared = s
        .prepare("SELECT a * 10, count(*) FROM t GROUP BY a * 10", &[])
        .await
        .unwrap();
    let described: Vec<_> = prepared
        .result_schema
        .as_ref()
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(described, vec!["?column?", "count"]);
}

/// ORIGINS.md §1: an ALTER TABLE that adds an existing column together with a new one
/// must fail whole and change nothing; a valid one applies whole, and the table is usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_1_an_alter_table_applies_whole_or_not_at_all() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE test (a INT, ts TIMESTAMP PRIMARY KEY)",
    )
    .await;
    ok(&mut s, "INSERT INTO test VALUES (1, '2026-01-01 00:00:00')").await;
    assert_eq!(
        code(
            &mut s,
            "ALTER TABLE test ADD COLUMN a INT, ADD COLUMN b INT"
        )
        .await,
        "42701"
    );
    assert_eq!(
        rows(&mut s, "SELECT * FROM test").await,
        ["1|2026-01-01T00:00:00"]
    );
    assert_eq!(
        code(
            &mut s,
            "ALTER TABLE test ADD COLUMN c INT, ADD COLUMN c INT"
        )
        .await,
        "42701"
    );
    ok(
        &mut s,
        "ALTER TABLE test ADD COLUMN c INT, ADD COLUMN d INT",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO test (a, ts, c, d) VALUES (2, '2026-01-02 00:00:00', 3, 4)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT * FROM test ORDER BY ts").await,
        [
            "1|2026-01-01T00:00:00|NULL|NULL",
            "2|2026-01-02T00:00:00|3|4"
        ]
    );
    // The invalid statements were refused when planned, against one catalog snapshot,
    // so only the valid one became a job (after the CREATE TABLE's).
    let jobs = rows(&mut s, "SHOW DDL JOBS").await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(jobs[1].contains("|create table|done|"), "{jobs:?}");
    assert!(
        jobs[1].contains(
            "CREATE TABLE test (a integer, ts timestamp without time zone, PRIMARY KEY (ts))"
        ),
        "{jobs:?}"
    );
    assert!(jobs[0].contains("|done|"), "{jobs:?}");
    assert!(
        jobs[0].contains("ADD COLUMN c integer, ADD COLUMN d integer"),
        "{jobs:?}"
    );
    // IF NOT EXISTS is honoured when planned and again when the job runs.
    ok(&mut s, "ALTER TABLE test ADD COLUMN IF NOT EXISTS c INT").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM test").await, ["2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_are_added_dropped_renamed_and_given_defaults_without_rewriting_rows() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)").await;
    ok(&mut s, "INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    // Existing rows read as the default evaluated when the column was added.
    ok(&mut s, "ALTER TABLE t ADD COLUMN n INT NOT NULL DEFAULT 7").await;
    ok(&mut s, "INSERT INTO t (id, v) VALUES (3, 'c')").await;
    ok(&mut s, "INSERT INTO t VALUES (4, 'd', 9)").await;
    assert_eq!(
        rows(&mut s, "SELECT id, n FROM t ORDER BY id").await,
        ["1|7", "2|7", "3|7", "4|9"]
    );
    // A NULL written after the column was added stays NULL (not the origin default).
    ok(&mut s, "ALTER TABLE t ADD COLUMN m INT DEFAULT 5").await;
    ok(
        &mut s,
        "INSERT INTO t (id, v, n, m) VALUES (5, 'e', 1, NULL)",
    )
    .await;
    ok(&mut s, "UPDATE t SET m = NULL WHERE id = 1").await;
    assert_eq!(
        rows(&mut s, "SELECT id, m FROM t ORDER BY id").await,
        ["1|NULL", "2|5", "3|5", "4|5", "5|NULL"]
    );
    // NOT NULL without a default cannot be added to a table with rows.
    assert_eq!(
        code(&mut s, "ALTER TABLE t ADD COLUMN z INT NOT NULL").await,
        "23502"
    );
    ok(&mut s, "CREATE INDEX t_v ON t (v)").await;
    ok(&mut s, "ALTER TABLE t RENAME COLUMN v TO label").await;
    assert_eq!(
        rows(&mut s, "SELECT label FROM t WHERE id = 2").await,
        ["b"]
    );
    assert_eq!(
        code(&mut s, "ALTER TABLE t RENAME COLUMN label TO n").await,
        "42701"
    );
    assert_eq!(
        code(&mut s, "ALTER TABLE t DROP COLUMN nope").await,
        "42703"
    );
    ok(&mut s, "ALTER TABLE t DROP COLUMN IF EXISTS nope").await;
    assert_eq!(code(&mut s, "ALTER TABLE t DROP COLUMN id").await, "0A000");
    // Dropping an indexed column drops its index, as in PostgreSQL.
    ok(&mut s, "ALTER TABLE t DROP COLUMN label").await;
    assert_eq!(code(&mut s, "SELECT label FROM t").await, "42703");
    assert_eq!(code(&mut s, "DROP INDEX t_v").await, "42704");
    ok(&mut s, "ALTER TABLE t ALTER COLUMN n SET DEFAULT 42").await;
    ok(&mut s, "INSERT INTO t (id) VALUES (6)").await;
    ok(&mut s, "ALTER TABLE t ALTER COLUMN n DROP DEFAULT").await;
    assert_eq!(code(&mut s, "INSERT INTO t (id) VALUES (7)").await, "23502");
    assert_eq!(
        rows(&mut s, "SELECT id, n, m FROM t WHERE id = 6").await,
        ["6|42|5"]
    );
    ok(&mut s, "ALTER TABLE t RENAME TO u").await;
    assert_eq!(code(&mut s, "SELECT * FROM t").await, "42P01");
    assert_eq!(rows(&mut s, "SELECT count(*) FROM u").await, ["6"]);
    ok(&mut s, "CREATE TABLE w (x INT)").await;
    assert_eq!(code(&mut s, "ALTER TABLE u RENAME TO w").await, "42P07");
    ok(&mut s, "ALTER TABLE IF EXISTS nothing ADD COLUMN x INT").await;
    assert_eq!(
        code(&mut s, "ALTER TABLE nothing ADD COLUMN x INT").await,
        "42P01"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cancel_ddl_job_refuses_finished_and_unknown_jobs() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY)").await;
    ok(&mut s, "ALTER TABLE t ADD COLUMN x INT").await;
    let jobs = rows(&mut s, "SHOW DDL JOBS").await;
    let id = jobs[0].split('|').next().unwrap().to_string();
    assert_eq!(
        code(&mut s, &format!("ADMIN CANCEL DDL JOB {id}")).await,
        "55000"
    );
    assert_eq!(code(&mut s, "ADMIN CANCEL DDL JOB 999999").await, "42704");
    assert_eq!(code(&mut s, "ADMIN CANCEL DDL JOB x").await, "42601");
}

/// ADMIN CHECK TABLE compares every index with its rows and names what differs: an entry
/// taken away or one added behind SQL's back is found.
#[tokio::test]
async fn admin_check_table_finds_missing_and_dangling_index_entries() {
    check_table_finds_missing_and_dangling_entries(SqlConfig::default()).await;
}

/// The same, with an index compared a slice of one entry at a time (the rows read once per
/// slice): the verdicts and counts do not depend on the slices.
#[tokio::test]
async fn admin_check_table_in_slices_finds_the_same() {
    check_table_finds_missing_and_dangling_entries(SqlConfig {
        check_table_slice_bytes: 1,
        ..SqlConfig::default()
    })
    .await;
}

async fn check_table_finds_missing_and_dangling_entries(config: SqlConfig) {
    use flotilla_catalog::Catalog;
    use flotilla_codec::{index_prefix, prefix_end};
    use flotilla_txn::{Transaction, TxnOptions};

    let db = TestDb::with_config(config).await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, u INT UNIQUE)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO t VALUES (1, 10, 100), (2, 20, 200), (3, 30, NULL)",
    )
    .await;
    ok(&mut s, "CREATE INDEX t_k ON t (k)").await;
    assert_eq!(
        rows(&mut s, "ADMIN CHECK TABLE t").await,
        ["t_u_key|3|3|ok", "t_k|3|3|ok"]
    );
    assert_eq!(code(&mut s, "ADMIN CHECK TABLE nope").await, "42P01");
    assert_eq!(code(&mut s, "ADMIN CHECKS").await, "42601");
    let table = db.catalog.snapshot().table("t").unwrap().clone();
    let t_k = table.indexes.iter().find(|i| i.name == "t_k").unwrap().id;
    let prefix = index_prefix(table.storage_id, t_k);
    let entry = {
        let txn = Transaction::begin(db.kv.clone(), db.tso.clone(), TxnOptions::default())
            .await
            .unwrap();
        let ts = txn.fresh_ts().await.unwrap();
        let first = txn
            .view(ts)
            .scan(&prefix, &prefix_end(&prefix), 1)
            .await
            .unwrap();
        txn.rollback().await.unwrap();
        first[0].0.clone()
    };
    let mut txn = Transaction::begin(db.kv.clone(), db.tso.clone(), TxnOptions::default())
        .await
        .unwrap();
    txn.delete(entry.clone()).unwrap();
    txn.commit().await.unwrap();
    let (_, error) = s.simple_query("ADMIN CHECK TABLE t").await;
    let error = error.expect("a missing entry is an error");
    assert_eq!(error.code, "XX001");
    assert!(
        error.message.contains("t_k: 3 rows, 2 entries, 1 missing"),
        "{}",
        error.message
    );
    let mut txn = Transaction::begin(db.kv.clone(), db.tso.clone(), TxnOptions::default())
        .await
        .unwrap();
    txn.put(entry, vec![]).unwrap();
    let mut dangling = prefix.clone();
    dangling.extend_from_slice(b"\xff\xffno-such-row");
    txn.put(dangling, vec![]).unwrap();
    txn.commit().await.unwrap();
    let (_, error) = s.simple_query("ADMIN CHECK TABLE t").await;
    let error = error.expect("a dangling entry is an error");
    assert!(
        error.message.contains("an entry has no row"),
        "{}",
        error.message
    );
}

/// EXPLAIN of a schema change validates it as running it would, shows the job's steps and
/// schema states, and changes nothing.
#[tokio::test]
async fn explain_alter_table_and_create_index_validate_without_executing() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE test (a INT, ts TIMESTAMP PRIMARY KEY)",
    )
    .await;
    let plan = rows(
        &mut s,
        "EXPLAIN ALTER TABLE test ADD COLUMN c INT, ADD COLUMN d INT DEFAULT 1",
    )
    .await
    .join("\n");
    assert!(plan.contains("DDL job (alter table)"), "{plan}");
    assert!(
        plan.contains("column c: absent -> public; column d: absent -> public"),
        "{plan}"
    );
    assert!(
        plan.contains("wait until every live SQL node uses schema version"),
        "{plan}"
    );
    assert_eq!(
        code(
            &mut s,
            "EXPLAIN ALTER TABLE test ADD COLUMN a INT, ADD COLUMN b INT"
        )
        .await,
        "42701"
    );
    let plan = rows(&mut s, "EXPLAIN CREATE UNIQUE INDEX t_a ON test (a)")
        .await
        .join("\n");
    assert!(plan.contains("absent -> delete-only"), "{plan}");
    assert!(plan.contains("write-only -> write-reorg"), "{plan}");
    assert!(plan.contains("a duplicate rolls the job back"), "{plan}");
    assert!(plan.contains("no row locked"), "{plan}");
    assert_eq!(
        code(&mut s, "EXPLAIN CREATE INDEX t_z ON test (z)").await,
        "42703"
    );
    // The jobs that scan the rows: a CHECK (named as it would be) and SET NOT NULL.
    let plan = rows(&mut s, "EXPLAIN ALTER TABLE test ADD CHECK (a > 0)")
        .await
        .join("\n");
    assert!(plan.contains("DDL job (add constraint)"), "{plan}");
    assert!(
        plan.contains("constraint test_a_check: absent -> enforced on every write"),
        "{plan}"
    );
    assert!(plan.contains("scan the rows in chunks"), "{plan}");
    let plan = rows(
        &mut s,
        "EXPLAIN ALTER TABLE test ADD CHECK (a > 0) NOT VALID",
    )
    .await
    .join("\n");
    assert!(plan.contains("NOT VALID"), "{plan}");
    assert!(!plan.contains("scan the rows"), "{plan}");
    assert_eq!(
        code(&mut s, "EXPLAIN ALTER TABLE test ADD CHECK (z > 0)").await,
        "42703"
    );
    let plan = rows(
        &mut s,
        "EXPLAIN ALTER TABLE test ALTER COLUMN a SET NOT NULL",
    )
    .await
    .join("\n");
    assert!(plan.contains("DDL job (set not null)"), "{plan}");
    assert!(plan.contains("a NULL rolls the job back"), "{plan}");
    let plan = rows(
        &mut s,
        "EXPLAIN ALTER TABLE test ALTER COLUMN ts SET NOT NULL",
    )
    .await
    .join("\n");
    assert!(plan.contains("nothing to do"), "{plan}");
    // Nothing ran.
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM (SELECT * FROM test) x").await,
        ["0"]
    );
    assert_eq!(code(&mut s, "SELECT c FROM test").await, "42703");
    assert_eq!(code(&mut s, "DROP INDEX t_a").await, "42704");
    let jobs = rows(&mut s, "SHOW DDL JOBS").await;
    assert_eq!(jobs.len(), 1, "only the CREATE TABLE ran: {jobs:?}");
}

#[tokio::test]
async fn insert_select_may_repeat_an_output_name_as_in_postgres() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (a INT, b INT, c INT)").await;
    ok(
        &mut s,
        "INSERT INTO t SELECT x, x % 2, x FROM generate_series(1, 3) AS x",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT a, b, c FROM t ORDER BY a").await,
        ["1|1|1", "2|0|2", "3|1|3"]
    );
}

/// F1 on the standalone: sessions keep writing while an index is built, dropped, and a
/// column dropped; every index stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_stay_exact_while_sessions_write_through_schema_changes() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, extra INT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO t SELECT x, x % 50, x FROM generate_series(1, 3000) AS x",
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for n in 0..3i64 {
        let mut w = db.session();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let id = 10_000 + n * 1_000_000 + i;
                for sql in [
                    format!("INSERT INTO t (id, k) VALUES ({id}, {})", i % 50),
                    format!(
                        "UPDATE t SET k = k + 1 WHERE id = {}",
                        (i * 7 + n) % 3000 + 1
                    ),
                    format!("DELETE FROM t WHERE id = {}", id - 3),
                ] {
                    if let Err(e) = run(&mut w, &sql).await {
                        assert!(
                            matches!(e.code, "40001" | "40P01" | "23505"),
                            "{sql}: {}",
                            e.message
                        );
                    }
                }
            }
            i
        }));
    }
    ok(&mut s, "CREATE INDEX t_k ON t (k)").await;
    let check = rows(&mut s, "ADMIN CHECK TABLE t").await;
    assert!(check.iter().all(|r| r.ends_with("|ok")), "{check:?}");
    assert_eq!(
        code(&mut s, "CREATE UNIQUE INDEX t_k_u ON t (k)").await,
        "23505"
    );
    ok(&mut s, "CREATE INDEX t_extra ON t (extra)").await;
    ok(&mut s, "DROP INDEX t_k").await;
    ok(&mut s, "ALTER TABLE t DROP COLUMN extra").await;
    ok(&mut s, "CREATE INDEX t_k2 ON t (k)").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        assert!(w.await.unwrap() > 0);
    }
    assert_eq!(rows(&mut s, "ADMIN CHECK TABLE t").await.len(), 1);
    let check = rows(&mut s, "ADMIN CHECK TABLE t").await;
    assert!(
        check[0].starts_with("t_k2|") && check[0].ends_with("|ok"),
        "{check:?}"
    );
}

#[path = "common/f1.rs"]
mod f1;
#[path = "common/f1_engine.rs"]
mod f1_engine;

/// F1 on a standalone: each step of an index added, a unique index added, an index
/// dropped and a column dropped meets a transaction on the version before it, and both
/// write meanwhile; every index is exact after each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_schema_changes_with_a_transaction_one_version_behind() {
    let db = TestDb::new().await;
    f1::scenario(&db.engine, &db.engine).await;
}

#[path = "common/incident1.rs"]
mod incident1;

/// The job queue's failpoint, set in process.
struct QueueFailpoint(std::sync::Arc<flotilla_ddl::JobQueue>);

impl incident1::DdlFailpoint for QueueFailpoint {
    async fn set(&self, on: bool) {
        self.0.set_failpoint(on);
    }
}

/// ORIGINS.md §1 with a client's retry: the valid ALTER's answer is lost and the client
/// submits it again while the job runs; the retry joins the job, the change applies once,
/// and a retry after the job finished is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_1_with_a_client_retry() {
    let db = TestDb::new().await;
    let failpoint = QueueFailpoint(db.jobs.clone());
    incident1::with_a_client_retry(&db.engine, &db.engine, &failpoint).await;
}

/// Versions of keys under `prefix` visible now (dropped data stays visible to a raw scan
/// until it is deleted: DROP and TRUNCATE write no tombstones).
async fn live_keys(db: &TestDb, prefix: &[u8]) -> usize {
    use flotilla_txn::TxnKv;
    let ts = flotilla_tso::Tso::get_ts(db.tso.as_ref()).await.unwrap();
    db.kv
        .scan(
            prefix,
            &flotilla_codec::prefix_end(prefix),
            ts,
            100_000,
            None,
            1_000,
        )
        .await
        .unwrap()
        .len()
}

/// The data a DROP INDEX, a rolled-back index, a DROP TABLE and a TRUNCATE leave behind
/// is deleted once no session can read it, and SHOW DDL JOBS says so; the data of what
/// is still there is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_tables_and_indexes_have_their_data_deleted() {
    use flotilla_codec::{index_prefix, table_prefix};
    let db = TestDb::new().await;
    let mut s = db.session();
    for t in ["a", "b", "c"] {
        ok(
            &mut s,
            &format!("CREATE TABLE {t} (id INT PRIMARY KEY, k INT, u INT, pad TEXT)"),
        )
        .await;
        // Long values go to their own column family.
        ok(
            &mut s,
            &format!(
                "INSERT INTO {t} SELECT x, x % 10, CASE WHEN x = 3000 THEN 1 ELSE x END, repeat('p', 300 * (x % 2)) FROM generate_series(1, 3000) AS x"
            ),
        )
        .await;
    }
    ok(&mut s, "CREATE INDEX a_k ON a (k)").await;
    ok(&mut s, "CREATE INDEX b_k ON b (k)").await;
    // u's one duplicate is in the last chunk: the unique index is rolled back after two
    // chunks of entries were written.
    assert_eq!(
        code(&mut s, "CREATE UNIQUE INDEX a_ku ON a (u)").await,
        "23505"
    );
    let jobs = rows(&mut s, "SHOW DDL JOBS").await;
    assert!(
        jobs.iter()
            .any(|j| j.contains("|add index|failed|") && j.contains("|2048|")),
        "{jobs:?}"
    );
    let before = db.engine.catalog_snapshot();
    let table = |name: &str| {
        before
            .tables
            .values()
            .find(|t| t.name == name)
            .unwrap()
            .clone()
    };
    let (a, b, c) = (table("a"), table("b"), table("c"));
    let a_k = index_prefix(
        a.storage_id,
        a.indexes.iter().find(|i| i.name == "a_k").unwrap().id,
    );
    // The rolled-back index had the last id the table handed out.
    let a_ku = index_prefix(a.storage_id, a.next_index_id - 1);
    let dropped = [
        ("a_k", a_k.clone()),
        ("a_ku", a_ku.clone()),
        ("b", table_prefix(b.storage_id)),
        ("c", table_prefix(c.storage_id)),
    ];
    assert_eq!(live_keys(&db, &a_k).await, 3000);
    ok(&mut s, "DROP INDEX a_k").await;
    ok(&mut s, "DROP TABLE b").await;
    ok(&mut s, "TRUNCATE c").await;
    ok(&mut s, "INSERT INTO c VALUES (1, 1, 1, 'after')").await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let jobs = rows(&mut s, "SHOW DDL JOBS").await;
        let cleaned: Vec<&String> = jobs
            .iter()
            .filter(|j| j.contains("(data deleted)"))
            .collect();
        if cleaned.len() == 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped data was not deleted: {jobs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (what, prefix) in &dropped {
        assert_eq!(
            live_keys(&db, prefix).await,
            0,
            "{what}'s data is still there"
        );
    }
    assert_eq!(rows(&mut s, "SELECT count(*) FROM a").await, ["3000"]);
    assert_eq!(rows(&mut s, "SELECT pad FROM c").await, ["after"]);
    let check = rows(&mut s, "ADMIN CHECK TABLE a").await;
    assert!(check.iter().all(|r| r.ends_with("|ok")), "{check:?}");
}

/// A REPEATABLE READ transaction that began while an index was being backfilled keeps
/// planning with the schema it began on: reading at its start timestamp through the index
/// made public meanwhile would miss every entry backfilled after that timestamp (it
/// returned 0 rows here instead of 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeatable_read_transaction_keeps_its_schema_while_an_index_goes_public() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY, k INT)").await;
    ok(
        &mut s,
        "INSERT INTO t SELECT x, x % 10 FROM generate_series(1, 1000) AS x",
    )
    .await;
    let engine = db.engine.clone();
    let await_version = move |v: u64| {
        let engine = engine.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while engine.catalog_snapshot().version < v {
                assert!(
                    std::time::Instant::now() < deadline,
                    "version {v} never came"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    let v0 = db.engine.catalog_snapshot().version;
    // A transaction pinned on each version holds the index job there until the next
    // holder has pinned the next version: delete-only, write-only, write-reorg.
    let mut holder = db.session();
    ok(&mut holder, "BEGIN").await;
    ok(&mut holder, "SELECT count(*) FROM t").await;
    let mut builder = db.session();
    let build = tokio::spawn(async move { run(&mut builder, "CREATE INDEX t_k ON t (k)").await });
    for step in 1..=3 {
        await_version(v0 + step).await;
        let mut next = db.session();
        ok(&mut next, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
        ok(&mut next, "SELECT count(*) FROM t").await;
        ok(&mut holder, "COMMIT").await;
        holder = next;
    }
    // `holder` began in write-reorg, before the backfill read anything. The index goes
    // public without waiting for it (it is only one version behind).
    await_version(v0 + 4).await;
    assert_eq!(
        rows(&mut holder, "SELECT count(*) FROM t WHERE k = 3").await,
        ["100"]
    );
    ok(&mut holder, "COMMIT").await;
    build.await.unwrap().unwrap();
    // A new transaction uses the index, and sees every row through it.
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM t WHERE k = 3").await,
        ["100"]
    );
    let plan = rows(&mut s, "EXPLAIN SELECT count(*) FROM t WHERE k = 3").await;
    assert!(plan.iter().any(|l| l.contains("t_k")), "{plan:?}");
    // The transaction's own DDL unpins it: it goes on with the newest schema.
    ok(&mut s, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    ok(&mut s, "SELECT count(*) FROM t").await;
    ok(&mut s, "ALTER TABLE t ADD COLUMN extra INT DEFAULT 7").await;
    assert_eq!(
        rows(&mut s, "SELECT extra FROM t WHERE id = 1").await,
        ["7"]
    );
    ok(&mut s, "COMMIT").await;
}

/// A float cast to text reads as PostgreSQL prints it (`2`, not Arrow's `2.0`), explicit
/// casts and implicit ones (concatenation) alike, in every string type, with NULLs kept.
#[tokio::test]
async fn floats_cast_to_text_read_as_postgresql_prints_them() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE fl (k INT PRIMARY KEY, f DOUBLE PRECISION, r REAL)",
    )
    .await;
    ok(
        &mut s,
        // `-0.0` is numeric, which has no negative zero (PostgreSQL stores 0 from it too).
        "INSERT INTO fl VALUES (1, 2, 1e6), (2, NULL, 0.5), (3, '-0'::FLOAT8, 3), (4, 1e20, 0.1)",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT f::text, CAST(r AS VARCHAR), 'x' || f, concat(f, '/', r) FROM fl ORDER BY k"
        )
        .await,
        vec![
            "2|1e+06|x2|2/1e+06",
            "NULL|0.5|NULL|/0.5",
            "-0|3|x-0|-0/3",
            "1e+20|0.1|x1e+20|1e+20/0.1",
        ]
    );
    assert_eq!(
        rows(&mut s, "SELECT 2::float8::text, (1.0 / 3)::float8::text").await,
        vec!["2|0.3333333333333333"]
    );
    // In a filter too: the text compared is PostgreSQL's.
    assert_eq!(
        rows(&mut s, "SELECT k FROM fl WHERE f::text = '2'").await,
        vec!["1"]
    );
    // Dates and timestamps as text, PostgreSQL's way (Arrow's is 2024-01-02T03:04:05Z).
    assert_eq!(
        rows(
            &mut s,
            "SELECT TIMESTAMP '2024-01-02 03:04:05.5'::text, \
             CAST(TIMESTAMPTZ '2024-01-02 03:04:05+00' AS VARCHAR), DATE '2024-01-02'::text, \
             'at ' || TIMESTAMP '2024-01-02 03:04:05', NULL::timestamp::text"
        )
        .await,
        vec!["2024-01-02 03:04:05.5|2024-01-02 03:04:05+00|2024-01-02|at 2024-01-02 03:04:05|NULL"]
    );
}

#[tokio::test]
async fn create_sequence_makes_a_sequence_of_its_own() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id SERIAL PRIMARY KEY, x INT)").await;
    // Every expectation below is what PostgreSQL 15 answered to the same statements.
    ok(&mut s, "CREATE SEQUENCE s").await;
    assert_eq!(
        rows(&mut s, "SELECT nextval('s'), nextval('s')").await,
        vec!["1|2"]
    );
    assert_eq!(code(&mut s, "CREATE SEQUENCE s").await, "42P07");
    ok(&mut s, "CREATE SEQUENCE IF NOT EXISTS s").await;
    assert_eq!(code(&mut s, "CREATE SEQUENCE t").await, "42P07");
    ok(
        &mut s,
        "CREATE SEQUENCE public.s2 AS integer INCREMENT BY 50 MINVALUE 1 START WITH 1 NO CYCLE",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT nextval('s2'), nextval('s2')").await,
        vec!["1|51"]
    );
    // Options in any order, as PostgreSQL takes them (Hibernate's form).
    ok(
        &mut s,
        "create sequence hib_seq start with 1 increment by 50",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT nextval('hib_seq'), nextval('hib_seq')").await,
        vec!["1|51"]
    );
    assert_eq!(code(&mut s, "CREATE SEQUENCE s4 AS text").await, "22023");
    assert_eq!(code(&mut s, "CREATE SEQUENCE s4 CYCLE").await, "0A000");
    assert_eq!(code(&mut s, "SELECT nextval('s4')").await, "42P01");
    // A column's default may use it; the sequence then cannot go, nor can a column's own.
    ok(&mut s, "SELECT setval('s', 100)").await;
    ok(
        &mut s,
        "CREATE TABLE u (id BIGINT DEFAULT nextval('s'), v INT)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "INSERT INTO u (v) VALUES (1) RETURNING id").await,
        vec!["101"]
    );
    assert_eq!(code(&mut s, "DROP SEQUENCE s").await, "2BP01");
    assert_eq!(code(&mut s, "DROP SEQUENCE t_id_seq").await, "2BP01");
    assert_eq!(code(&mut s, "DROP SEQUENCE t").await, "42809");
    assert_eq!(code(&mut s, "DROP SEQUENCE nope").await, "42P01");
    assert_eq!(
        rows(
            &mut s,
            "SELECT relname, relkind FROM pg_class WHERE relname IN ('s', 's2', 't_id_seq') \
             ORDER BY relname"
        )
        .await,
        vec!["s|S", "s2|S", "t_id_seq|S"]
    );
    ok(&mut s, "DROP SEQUENCE IF EXISTS nope, s2").await;
    assert_eq!(code(&mut s, "SELECT nextval('s2')").await, "42P01");
    // Once no default uses it, it goes; a new one of the same name starts afresh.
    ok(&mut s, "ALTER TABLE u ALTER COLUMN id DROP DEFAULT").await;
    ok(&mut s, "DROP SEQUENCE s").await;
    assert_eq!(code(&mut s, "SELECT nextval('s')").await, "42P01");
    ok(&mut s, "CREATE SEQUENCE s").await;
    assert_eq!(rows(&mut s, "SELECT nextval('s')").await, vec!["1"]);
}

#[tokio::test]
async fn setval_moves_a_sequence_as_bulk_loads_and_pg_dump_need() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id SERIAL PRIMARY KEY, x INT)").await;
    // Rows loaded with their ids leave the sequence behind, and the next default
    // collides, until setval moves it past them (every expectation below is what
    // PostgreSQL 15 answered to the same statements).
    ok(
        &mut s,
        "INSERT INTO t VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0)",
    )
    .await;
    assert_eq!(code(&mut s, "INSERT INTO t (x) VALUES (1)").await, "23505");
    assert_eq!(
        rows(
            &mut s,
            "SELECT setval(pg_get_serial_sequence('t', 'id'), (SELECT max(id) FROM t))"
        )
        .await,
        vec!["5"]
    );
    assert_eq!(rows(&mut s, "SELECT currval('t_id_seq')").await, vec!["5"]);
    assert_eq!(
        rows(&mut s, "INSERT INTO t (x) VALUES (1) RETURNING id").await,
        vec!["6"]
    );
    // pg_dump's form; then is_called false (the value itself comes next), then back.
    assert_eq!(
        rows(
            &mut s,
            "SELECT pg_catalog.setval('public.t_id_seq', 42, true)"
        )
        .await,
        vec!["42"]
    );
    assert_eq!(rows(&mut s, "SELECT nextval('t_id_seq')").await, vec!["43"]);
    assert_eq!(
        rows(&mut s, "SELECT setval('t_id_seq', 100, false)").await,
        vec!["100"]
    );
    assert_eq!(rows(&mut s, "SELECT currval('t_id_seq')").await, vec!["43"]);
    assert_eq!(
        rows(&mut s, "SELECT nextval('t_id_seq')").await,
        vec!["100"]
    );
    assert_eq!(
        rows(&mut s, "SELECT setval('t_id_seq', 10)").await,
        vec!["10"]
    );
    // Another session, and a default, see the moved sequence too.
    let mut other = db.session();
    assert_eq!(
        rows(&mut other, "INSERT INTO t (x) VALUES (2) RETURNING id").await,
        vec!["11"]
    );
    // A NULL argument gives NULL and moves nothing.
    assert_eq!(
        rows(
            &mut s,
            "SELECT setval('t_id_seq', NULL), setval('t_id_seq', 5, NULL)"
        )
        .await,
        vec!["NULL|NULL"]
    );
    assert_eq!(rows(&mut s, "SELECT nextval('t_id_seq')").await, vec!["12"]);
    // Out of bounds, unknown, or not a sequence: refused, nothing moves.
    assert_eq!(code(&mut s, "SELECT setval('t_id_seq', 0)").await, "22003");
    assert_eq!(code(&mut s, "SELECT setval('nope', 1)").await, "42P01");
    assert_eq!(code(&mut s, "SELECT setval('t', 3)").await, "42809");
    assert_eq!(rows(&mut s, "SELECT nextval('t_id_seq')").await, vec!["13"]);
    // At the bound, the next value is past it.
    ok(&mut s, "SELECT setval('t_id_seq', 2147483647)").await;
    assert_eq!(code(&mut s, "SELECT nextval('t_id_seq')").await, "2200H");

    // A sequence with its own START and INCREMENT moves along its values; a value off
    // them cannot be kept by its counter and is refused (PostgreSQL takes it).
    ok(
        &mut s,
        "CREATE TABLE g (id BIGINT GENERATED ALWAYS AS IDENTITY (INCREMENT BY 10 START WITH 100) \
         PRIMARY KEY, v INT)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT setval('g_id_seq', 150)").await,
        vec!["150"]
    );
    assert_eq!(
        rows(&mut s, "SELECT nextval('g_id_seq'), lastval()").await,
        vec!["160|160"]
    );
    assert_eq!(
        code(&mut s, "SELECT setval('g_id_seq', 155)").await,
        "0A000"
    );
    assert_eq!(
        rows(&mut s, "INSERT INTO g (v) VALUES (1) RETURNING id").await,
        vec!["170"]
    );
}

#[tokio::test]
async fn serial_and_identity_columns_number_rows_from_their_sequences() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id SERIAL PRIMARY KEY, x INT)").await;
    // Every way a row leaves the column out, or asks for DEFAULT, takes the next value:
    // one per row, in order, within a statement and across them.
    assert_eq!(
        rows(&mut s, "INSERT INTO t (x) VALUES (1), (2) RETURNING id").await,
        vec!["1", "2"]
    );
    ok(
        &mut s,
        "INSERT INTO t (x) SELECT 10 FROM generate_series(1, 3)",
    )
    .await;
    ok(&mut s, "INSERT INTO t VALUES (DEFAULT, 7), (DEFAULT, 8)").await;
    ok(&mut s, "INSERT INTO t DEFAULT VALUES").await;
    assert_eq!(
        rows(&mut s, "SELECT id FROM t ORDER BY id").await,
        (1..=8).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT currval('t_id_seq'), lastval(), pg_get_serial_sequence('t', 'id'), \
             pg_get_serial_sequence('t', 'x')"
        )
        .await,
        vec!["8|8|public.t_id_seq|NULL"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT nextval('public.T_ID_SEQ') FROM generate_series(1, 2)"
        )
        .await,
        vec!["9", "10"]
    );
    // An explicit value does not move the sequence (as in PostgreSQL): the next default
    // meets it as a duplicate.
    ok(&mut s, "INSERT INTO t VALUES (11, 0)").await;
    assert_eq!(code(&mut s, "INSERT INTO t (x) VALUES (0)").await, "23505");
    ok(&mut s, "INSERT INTO t (x) VALUES (0)").await;
    // currval is per session; a name that is no sequence is an unknown relation.
    let mut other = db.session();
    assert_eq!(
        code(&mut other, "SELECT currval('t_id_seq')").await,
        "55000"
    );
    assert_eq!(code(&mut other, "SELECT lastval()").await, "55000");
    assert_eq!(code(&mut other, "SELECT nextval('t')").await, "42809");
    assert_eq!(code(&mut other, "SELECT nextval('nope')").await, "42P01");
    assert_eq!(
        rows(&mut other, "SELECT nextval('t_id_seq')").await,
        vec!["13"]
    );

    // GENERATED ALWAYS refuses values, in INSERT and UPDATE, and takes DEFAULT.
    ok(
        &mut s,
        "CREATE TABLE g (id BIGINT GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 10 \
         NO CYCLE) PRIMARY KEY, v INT)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "INSERT INTO g (v) VALUES (1), (2) RETURNING id").await,
        vec!["100", "110"]
    );
    assert_eq!(code(&mut s, "INSERT INTO g VALUES (1, 5)").await, "428C9");
    assert_eq!(
        code(&mut s, "INSERT INTO g (id, v) SELECT 1, 5").await,
        "428C9"
    );
    assert_eq!(
        code(&mut s, "UPDATE g SET id = 3 WHERE v = 1").await,
        "428C9"
    );
    assert_eq!(
        rows(&mut s, "INSERT INTO g VALUES (DEFAULT, 9) RETURNING id").await,
        vec!["120"]
    );
    ok(&mut s, "UPDATE g SET id = DEFAULT WHERE v = 9").await;
    assert_eq!(
        rows(&mut s, "SELECT id FROM g WHERE v = 9").await,
        vec!["130"]
    );
    assert_eq!(rows(&mut s, "SELECT count(*) FROM g").await, vec!["3"]);

    // BY DEFAULT takes given values; a sequence stops at its bound (2200H) and
    // changes nothing.
    ok(
        &mut s,
        "CREATE TABLE b (id SMALLINT GENERATED BY DEFAULT AS IDENTITY (MAXVALUE 2), \
         r DOUBLE PRECISION DEFAULT random())",
    )
    .await;
    ok(&mut s, "INSERT INTO b (id) VALUES (50)").await;
    ok(
        &mut s,
        "INSERT INTO b (r) SELECT 1 FROM generate_series(1, 2)",
    )
    .await;
    assert_eq!(code(&mut s, "INSERT INTO b DEFAULT VALUES").await, "2200H");
    assert_eq!(
        rows(&mut s, "SELECT id FROM b ORDER BY id").await,
        vec!["1", "2", "50"]
    );
    // A volatile default is evaluated per row, not once per statement.
    ok(
        &mut s,
        "CREATE TABLE v (i INT, r DOUBLE PRECISION DEFAULT random())",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO v (i) SELECT * FROM generate_series(1, 50)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT count(DISTINCT r) FROM v").await,
        vec!["50"]
    );

    // Conflicting or impossible definitions are refused and create nothing.
    for (sql, state) in [
        ("CREATE TABLE z (id SERIAL DEFAULT 3)", "42601"),
        ("CREATE TABLE z (id SERIAL NULL)", "42601"),
        (
            "CREATE TABLE z (id INT GENERATED ALWAYS AS IDENTITY GENERATED BY DEFAULT AS IDENTITY)",
            "42601",
        ),
        (
            "CREATE TABLE z (id TEXT GENERATED ALWAYS AS IDENTITY)",
            "22023",
        ),
        (
            "CREATE TABLE z (id INT GENERATED ALWAYS AS IDENTITY (START WITH 0))",
            "22023",
        ),
        (
            "CREATE TABLE z (id INT GENERATED ALWAYS AS IDENTITY (INCREMENT BY 0))",
            "22023",
        ),
        ("CREATE TABLE t_id_seq (a INT)", "42P07"),
        ("ALTER TABLE v ADD COLUMN n SERIAL", "0A000"),
        (
            "CREATE TABLE z (id INT GENERATED ALWAYS AS IDENTITY (START WITH 9 CYCLE))",
            "0A000",
        ),
    ] {
        assert_eq!(code(&mut s, sql).await, state, "{sql}");
    }
    assert_eq!(code(&mut s, "SELECT * FROM z").await, "42P01");
    // A name already taken gets a number, and the sequence goes with its table.
    ok(&mut s, "CREATE TABLE q (a_b SERIAL)").await;
    ok(&mut s, "CREATE TABLE q_a (b SERIAL)").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT pg_get_serial_sequence('q', 'a_b'), pg_get_serial_sequence('q_a', 'b')"
        )
        .await,
        vec!["public.q_a_b_seq|public.q_a_b_seq1"]
    );
    ok(&mut s, "DROP TABLE t").await;
    assert_eq!(code(&mut s, "SELECT nextval('t_id_seq')").await, "42P01");
    // The session's last value came from b's sequence, until b goes too.
    assert_eq!(rows(&mut s, "SELECT lastval()").await, vec!["2"]);
    ok(&mut s, "DROP TABLE b").await;
    assert_eq!(code(&mut s, "SELECT lastval()").await, "55000");
}

#[tokio::test]
async fn session_functions_name_the_client_and_the_transaction_time() {
    let db = TestDb::new().await;
    let mut s = db.session();
    assert_eq!(
        rows(&mut s, "SELECT current_user, current_database()").await,
        vec!["postgres|postgres"]
    );
    s.set_client("alice", "appdb");
    assert_eq!(
        rows(
            &mut s,
            "SELECT current_user, session_user, user, current_role, current_database(), \
             current_catalog, current_schema(), current_schema AS bare"
        )
        .await,
        vec!["alice|alice|alice|alice|appdb|appdb|public|public"]
    );
    // localtimestamp is the transaction's start, like now(), without a time zone.
    ok(&mut s, "BEGIN").await;
    let first = rows(
        &mut s,
        "SELECT localtimestamp, localtimestamp = now()::timestamp",
    )
    .await;
    assert!(first[0].ends_with("|true"), "{first:?}");
    let again = rows(&mut s, "SELECT localtimestamp").await;
    assert_eq!(first[0].split('|').next().unwrap(), again[0]);
    ok(&mut s, "COMMIT").await;
    // gen_random_uuid() is PostgreSQL's name for a random UUID; as a default, one per row.
    ok(
        &mut s,
        "CREATE TABLE u (id TEXT PRIMARY KEY DEFAULT gen_random_uuid(), v INT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO u (v) SELECT * FROM generate_series(1, 20)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT count(DISTINCT id), min(length(id)) FROM u").await,
        vec!["20|36"]
    );
}

#[tokio::test]
async fn insert_on_conflict_do_update_inserts_or_updates_each_row() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE kv (k INT PRIMARY KEY, v TEXT, n INT DEFAULT 0, email TEXT UNIQUE)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO kv VALUES (1, 'a', 1, 'a@x'), (2, 'b', 1, 'b@x')",
    )
    .await;
    // One new row and one conflicting row: the conflict updates from the existing row and
    // the proposed one (`excluded`); RETURNING shows both outcomes, the tag counts both.
    let out = rows(
        &mut s,
        "INSERT INTO kv AS t (k, v) VALUES (2, 'B'), (3, 'c') \
         ON CONFLICT (k) DO UPDATE SET v = t.v || excluded.v, n = t.n + 1 \
         RETURNING k, v, n",
    )
    .await;
    assert_eq!(out, vec!["2|bB|2", "3|c|0"]);
    assert_eq!(
        ok(
            &mut s,
            "INSERT INTO kv (k, v) VALUES (1, 'z') ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        )
        .await,
        "INSERT 0 1"
    );
    // A unique index is an arbiter too (by its columns or its name); WHERE may leave the
    // row as it is, which counts as no row.
    ok(
        &mut s,
        "INSERT INTO kv VALUES (9, 'q', 0, 'a@x') ON CONFLICT (email) DO UPDATE SET n = 100",
    )
    .await;
    assert_eq!(
        ok(
            &mut s,
            "INSERT INTO kv VALUES (9, 'q', 0, 'a@x') ON CONFLICT ON CONSTRAINT kv_email_key \
             DO UPDATE SET n = 200 WHERE kv.n < 50"
        )
        .await,
        "INSERT 0 0"
    );
    assert_eq!(
        rows(&mut s, "SELECT k, v, n, email FROM kv ORDER BY k").await,
        vec!["1|z|100|a@x", "2|bB|2|b@x", "3|c|0|NULL"]
    );
    // A conflict on a unique key other than the arbiter is an error; so is proposing
    // one row twice in a statement. Neither changes anything.
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO kv VALUES (5, 'e', 0, 'b@x') ON CONFLICT (k) DO UPDATE SET n = 7"
        )
        .await,
        "23505"
    );
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO kv (k, v) VALUES (3, 'x'), (3, 'y') ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        )
        .await,
        "21000"
    );
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO kv (k, v) VALUES (7, 'x'), (7, 'y') ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        )
        .await,
        "21000"
    );
    for (sql, state) in [
        (
            "INSERT INTO kv (k) VALUES (1) ON CONFLICT DO UPDATE SET n = 1",
            "42601",
        ),
        (
            "INSERT INTO kv (k) VALUES (1) ON CONFLICT (v) DO UPDATE SET n = 1",
            "42P10",
        ),
        (
            "INSERT INTO kv (k) VALUES (1) ON CONFLICT (nope) DO UPDATE SET n = 1",
            "42703",
        ),
        (
            "INSERT INTO kv (k) VALUES (1) ON CONFLICT ON CONSTRAINT nope DO UPDATE SET n = 1",
            "42704",
        ),
        (
            "INSERT INTO kv (k) VALUES (1) ON CONFLICT (k) DO UPDATE SET nope = 1",
            "42703",
        ),
        (
            "INSERT INTO kv (k) VALUES (1) ON CONFLICT (k) DO UPDATE SET n = 'x'",
            "22P02",
        ),
    ] {
        assert_eq!(code(&mut s, sql).await, state, "{sql}");
    }
    assert_eq!(
        rows(&mut s, "SELECT k, v, n, email FROM kv ORDER BY k").await,
        vec!["1|z|100|a@x", "2|bB|2|b@x", "3|c|0|NULL"]
    );
    // DO NOTHING with a target skips rows conflicting on it (a row proposed twice too),
    // and refuses one conflicting on another unique key; without a target it skips both.
    assert_eq!(
        ok(
            &mut s,
            "INSERT INTO kv (k, v) VALUES (1, 'skip'), (6, 'six'), (6, 'again') \
             ON CONFLICT (k) DO NOTHING"
        )
        .await,
        "INSERT 0 1"
    );
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO kv VALUES (8, 'e', 0, 'a@x') ON CONFLICT (k) DO NOTHING"
        )
        .await,
        "23505"
    );
    assert_eq!(
        ok(
            &mut s,
            "INSERT INTO kv VALUES (8, 'e', 0, 'a@x') ON CONFLICT DO NOTHING"
        )
        .await,
        "INSERT 0 0"
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT k, v FROM kv WHERE k IN (1, 6, 8) ORDER BY k"
        )
        .await,
        vec!["1|z", "6|six"]
    );
    ok(&mut s, "DELETE FROM kv WHERE k = 6").await;
    // Changing the primary key on conflict moves the row; DEFAULT takes the default.
    ok(
        &mut s,
        "INSERT INTO kv (k) VALUES (3) ON CONFLICT (k) DO UPDATE SET k = 30, n = DEFAULT",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT k, n FROM kv WHERE k IN (3, 30)").await,
        vec!["30|0"]
    );
    // Inside a transaction block the update sees the block's own writes, and ROLLBACK
    // undoes it.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO kv (k, v) VALUES (40, 'new')").await;
    ok(
        &mut s,
        "INSERT INTO kv (k, v) VALUES (40, 'again') ON CONFLICT (k) DO UPDATE SET v = kv.v || '+' || excluded.v",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT v FROM kv WHERE k = 40").await,
        vec!["new+again"]
    );
    ok(&mut s, "ROLLBACK").await;
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM kv WHERE k = 40").await,
        vec!["0"]
    );
}

/// Sessions upserting the same counter rows at once: every increment lands (the losers of
/// each insert race update the winner's row), under READ COMMITTED, through the primary
/// key and through a unique index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upserts_of_one_row_lose_no_increment() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE counter (name TEXT PRIMARY KEY, hits INT NOT NULL, alt INT UNIQUE)",
    )
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4 {
        let mut w = db.session();
        tasks.spawn(async move {
            for key in 0..30 {
                // Half the tasks name the row by its primary key, half by its unique alt.
                let target = if task % 2 == 0 { "name" } else { "alt" };
                ok(
                    &mut w,
                    &format!(
                        "INSERT INTO counter VALUES ('k{key}', 1, {key}) \
                         ON CONFLICT ({target}) DO UPDATE SET hits = counter.hits + 1"
                    ),
                )
                .await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(
        rows(&mut s, "SELECT count(*), min(hits), max(hits) FROM counter").await,
        vec!["30|4|4"]
    );
}

/// Under REPEATABLE READ an upsert whose conflicting row was committed after the
/// snapshot fails with 40001 (as in PostgreSQL), through the primary key and through a
/// unique index, and changes nothing.
#[tokio::test]
async fn an_upsert_meeting_a_row_newer_than_its_snapshot_is_a_serialization_failure() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(
        &mut a,
        "CREATE TABLE t (k INT PRIMARY KEY, u INT UNIQUE, v INT)",
    )
    .await;
    for target in ["k", "u"] {
        ok(&mut a, "DELETE FROM t").await;
        ok(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
        assert_eq!(rows(&mut b, "SELECT count(*) FROM t").await, vec!["0"]);
        ok(&mut a, "INSERT INTO t VALUES (1, 1, 0)").await;
        let sql =
            format!("INSERT INTO t VALUES (1, 1, 5) ON CONFLICT ({target}) DO UPDATE SET v = 9");
        assert_eq!(code(&mut b, &sql).await, "40001", "{target}");
        ok(&mut b, "ROLLBACK").await;
        // DO NOTHING too: the snapshot cannot see the row it would skip for.
        ok(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
        ok(&mut b, "SELECT count(*) FROM t WHERE k < 0").await;
        ok(&mut a, "INSERT INTO t VALUES (2, 2, 0)").await;
        let nothing = format!("INSERT INTO t VALUES (2, 2, 5) ON CONFLICT ({target}) DO NOTHING");
        assert_eq!(code(&mut b, &nothing).await, "40001", "{target}");
        ok(&mut b, "ROLLBACK").await;
        ok(&mut b, &nothing).await;
        ok(&mut a, "DELETE FROM t WHERE k = 2").await;
        assert_eq!(rows(&mut a, "SELECT v FROM t").await, vec!["0"]);
        // The same under READ COMMITTED updates the row.
        ok(&mut b, &sql).await;
        assert_eq!(rows(&mut a, "SELECT v FROM t").await, vec!["9"]);
    }
}

#[tokio::test]
async fn to_char_takes_postgres_templates() {
    let db = TestDb::new().await;
    let mut s = db.session();
    assert_eq!(
        rows(
            &mut s,
            "SELECT to_char(DATE '2024-03-05', 'FMDay, FMDDth \"of\" FMMonth YYYY'), \
             to_char(TIMESTAMP '2024-03-05 17:08:09.5', 'YYYY-MM-DD HH24:MI:SS.MS HH12 PM'), \
             to_char(TIMESTAMPTZ '2024-03-05 17:08:09+00', 'DD Mon YYYY TZ'), \
             to_char(NULL::timestamp, 'YYYY')"
        )
        .await,
        vec!["Tuesday, 5th of March 2024|2024-03-05 17:08:09.500 05 PM|05 Mar 2024 UTC|NULL"]
    );
    ok(&mut s, "CREATE TABLE e (at TIMESTAMP, fmt TEXT)").await;
    ok(
        &mut s,
        "INSERT INTO e VALUES ('2021-12-31 23:59:59', 'IYYY-IW'), ('2021-01-01 00:00:00', 'Q')",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT to_char(at, fmt) FROM e ORDER BY at").await,
        vec!["1", "2021-52"]
    );
    assert_eq!(rows(&mut s, "SELECT to_char(1.5, '9.9')").await, [" 1.5"]);
    assert_eq!(
        code(&mut s, "SELECT to_char(1.5, '9.9EEEE')").await,
        "0A000"
    );
    assert_eq!(code(&mut s, "SELECT to_char(now(), 'DDSP')").await, "0A000");
}

#[tokio::test]
async fn recursive_queries_over_integer_literals_plan_and_run() {
    let db = TestDb::new().await;
    let mut s = db.session();
    assert_eq!(
        rows(
            &mut s,
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) \
             SELECT sum(n), count(*) FROM r"
        )
        .await,
        vec!["15|5"]
    );
    // A tree walked from its root, the common use.
    ok(
        &mut s,
        "CREATE TABLE node (id INT PRIMARY KEY, parent INT, name TEXT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO node VALUES (1, NULL, 'root'), (2, 1, 'a'), (3, 2, 'b'), (4, 1, 'c')",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "WITH RECURSIVE t(id, depth, path) AS ( \
               SELECT id, 0, name FROM node WHERE parent IS NULL \
               UNION ALL \
               SELECT n.id, t.depth + 1, t.path || '/' || n.name FROM node n JOIN t ON n.parent = t.id) \
             SELECT depth, path FROM t ORDER BY path"
        )
        .await,
        vec!["0|root", "1|root/a", "2|root/a/b", "1|root/c"]
    );
}

/// The introspection ORMs send: SQLAlchemy's `has_table` query word for word, and
/// `pg_catalog`-qualified calls.
#[tokio::test]
async fn pg_catalog_answers_orm_introspection() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE users (id SERIAL PRIMARY KEY, name VARCHAR(30) NOT NULL, n BIGINT)",
    )
    .await;
    ok(&mut s, "CREATE VIEW v AS SELECT id FROM users").await;
    let has_table = |name: &str| {
        format!(
            "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace \
             ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace \
             WHERE pg_catalog.pg_class.relname IN ('{name}'::VARCHAR) AND pg_catalog.pg_class.relkind = \
             ANY (ARRAY['r'::VARCHAR, 'p'::VARCHAR, 'f'::VARCHAR, 'v'::VARCHAR, 'm'::VARCHAR]) \
             AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) \
             AND pg_catalog.pg_namespace.nspname != 'pg_catalog'::VARCHAR"
        )
    };
    assert_eq!(rows(&mut s, &has_table("users")).await, vec!["users"]);
    assert_eq!(rows(&mut s, &has_table("v")).await, vec!["v"]);
    assert!(rows(&mut s, &has_table("nope")).await.is_empty());
    assert_eq!(
        rows(
            &mut s,
            "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c \
             WHERE c.relname LIKE 'users%' ORDER BY c.relname"
        )
        .await,
        vec!["users|r", "users_id_seq|S", "users_pkey|i"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT a.attname, t.typname, a.attnotnull FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON a.attrelid = c.oid \
             JOIN pg_catalog.pg_type t ON a.atttypid = t.oid \
             WHERE c.relname = 'users' ORDER BY a.attnum"
        )
        .await,
        vec!["id|int4|true", "name|varchar|true", "n|int8|false"]
    );
    // psycopg's TypeInfo.fetch, word for word: pg_type unqualified, names cast to
    // regtype; an unknown type is 42704, which psycopg takes for "no such type".
    let type_info = |name: &str| {
        format!(
            "SELECT typname AS name, oid, typarray AS array_oid, oid::regtype::text AS regtype, \
             typdelim AS delimiter FROM pg_type t WHERE t.oid = '{name}'::regtype ORDER BY t.oid"
        )
    };
    assert_eq!(
        rows(&mut s, &type_info("int4")).await,
        vec!["int4|23|1007|23|,"]
    );
    assert_eq!(code(&mut s, &type_info("hstore")).await, "42704");
    assert_eq!(
        rows(
            &mut s,
            "SELECT 'users'::regclass = c.oid FROM pg_class c WHERE relname = 'users'"
        )
        .await,
        vec!["true"]
    );
    assert_eq!(code(&mut s, "SELECT 'nope'::regclass").await, "42P01");
    let version = rows(
        &mut s,
        "SELECT pg_catalog.version(), pg_catalog.current_schema()",
    )
    .await;
    assert!(
        version[0].starts_with("PostgreSQL 15.0 (Flotilla"),
        "{version:?}"
    );
    assert!(version[0].ends_with("|public"), "{version:?}");
}

#[tokio::test]
async fn savepoints_undo_part_of_a_transaction_and_recover_a_failed_block() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)").await;
    // Outside a block they are refused, as in PostgreSQL.
    assert_eq!(code(&mut s, "SAVEPOINT a").await, "25P01");
    assert_eq!(code(&mut s, "ROLLBACK TO SAVEPOINT a").await, "25P01");
    assert_eq!(code(&mut s, "RELEASE SAVEPOINT a").await, "25P01");

    ok(&mut s, "BEGIN").await;
    // A savepoint before the first statement rolls back to nothing written.
    ok(&mut s, "SAVEPOINT first").await;
    ok(&mut s, "INSERT INTO t VALUES (1, 'one')").await;
    ok(&mut s, "SAVEPOINT a").await;
    ok(&mut s, "INSERT INTO t VALUES (2, 'two')").await;
    ok(&mut s, "UPDATE t SET v = 'uno' WHERE id = 1").await;
    ok(&mut s, "SAVEPOINT b").await;
    ok(&mut s, "DELETE FROM t").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM t").await, vec!["0"]);
    ok(&mut s, "ROLLBACK TO SAVEPOINT b").await;
    assert_eq!(
        rows(&mut s, "SELECT id, v FROM t ORDER BY id").await,
        vec!["1|uno", "2|two"]
    );
    ok(&mut s, "ROLLBACK TO a").await;
    assert_eq!(
        rows(&mut s, "SELECT id, v FROM t ORDER BY id").await,
        vec!["1|one"]
    );
    // b was taken after a: rolling back to a forgot it.
    assert_eq!(code(&mut s, "ROLLBACK TO SAVEPOINT b").await, "3B001");
    // The unknown savepoint failed the block; rolling back to a known one recovers it.
    assert_eq!(code(&mut s, "SELECT 1").await, "25P02");
    ok(&mut s, "ROLLBACK TO SAVEPOINT a").await;
    // A failing statement fails the block, and ROLLBACK TO undoes it and its writes.
    ok(&mut s, "INSERT INTO t VALUES (3, 'three')").await;
    assert_eq!(
        code(&mut s, "INSERT INTO t VALUES (1, 'dup')").await,
        "23505"
    );
    assert_eq!(code(&mut s, "SELECT 1").await, "25P02");
    ok(&mut s, "ROLLBACK TO SAVEPOINT a").await;
    ok(&mut s, "INSERT INTO t VALUES (4, 'four')").await;
    ok(&mut s, "RELEASE SAVEPOINT a").await;
    assert_eq!(code(&mut s, "RELEASE SAVEPOINT a").await, "3B001");
    ok(&mut s, "ROLLBACK TO SAVEPOINT first").await;
    ok(&mut s, "INSERT INTO t VALUES (5, 'five')").await;
    ok(&mut s, "COMMIT").await;
    assert_eq!(
        rows(&mut s, "SELECT id, v FROM t ORDER BY id").await,
        vec!["5|five"]
    );

    // Savepoints are bounded per transaction; past the bound, 54000 fails the block.
    ok(&mut s, "BEGIN").await;
    for i in 0..64 {
        ok(&mut s, &format!("SAVEPOINT s{i}")).await;
    }
    assert_eq!(code(&mut s, "SAVEPOINT one_too_many").await, "54000");
    ok(&mut s, "ROLLBACK TO SAVEPOINT s63").await;
    ok(&mut s, "RELEASE SAVEPOINT s0").await;
    ok(&mut s, "SAVEPOINT again").await;
    ok(&mut s, "ROLLBACK").await;

    // Another session waits for rows locked before a savepoint rolled back to, until
    // the transaction ends (PostgreSQL releases them earlier; holding them is safe).
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "SAVEPOINT a").await;
    ok(&mut s, "UPDATE t SET v = 'x' WHERE id = 5").await;
    ok(&mut s, "ROLLBACK TO SAVEPOINT a").await;
    let mut other = db.session();
    ok(&mut other, "SET lock_timeout = '50ms'").await;
    assert_eq!(
        code(&mut other, "UPDATE t SET v = 'y' WHERE id = 5").await,
        "55P03"
    );
    ok(&mut s, "COMMIT").await;
    ok(&mut other, "UPDATE t SET v = 'y' WHERE id = 5").await;
    assert_eq!(rows(&mut s, "SELECT v FROM t").await, vec!["y"]);
}

#[tokio::test]
async fn check_constraints_refuse_what_postgres_refuses_and_go_with_their_column() {
    let db = TestDb::new().await;
    let mut s = db.session();
    // The codes PostgreSQL 15 gives for the same statements.
    assert_eq!(
        code(&mut s, "CREATE TABLE c1 (a INT CHECK (a))").await,
        "42804"
    );
    assert_eq!(
        code(&mut s, "CREATE TABLE c2 (a INT CHECK (a > (SELECT 1)))").await,
        "0A000"
    );
    assert_eq!(
        code(&mut s, "CREATE TABLE c3 (a INT CHECK (sum(a) > 1))").await,
        "42803"
    );
    assert_eq!(
        code(&mut s, "CREATE TABLE c4 (a INT CHECK (b > 1))").await,
        "42703"
    );
    ok(
        &mut s,
        "CREATE TABLE t (a INT CHECK (a > 0), b INT, CHECK (b <> 5))",
    )
    .await;
    assert_eq!(code(&mut s, "INSERT INTO t VALUES (0, 1)").await, "23514");
    assert_eq!(code(&mut s, "INSERT INTO t VALUES (1, 5)").await, "23514");
    ok(&mut s, "INSERT INTO t VALUES (1, 1), (NULL, NULL)").await;
    assert_eq!(code(&mut s, "UPDATE t SET a = -1").await, "23514");
    // A rename carries the constraint along.
    ok(&mut s, "ALTER TABLE t RENAME COLUMN a TO z").await;
    assert_eq!(
        code(&mut s, "INSERT INTO t (z, b) VALUES (0, 1)").await,
        "23514"
    );
    let combined = code(
        &mut s,
        "ALTER TABLE t RENAME COLUMN z TO y, ADD COLUMN q INT",
    )
    .await;
    assert!(matches!(combined, "0A000" | "42601"), "{combined}");
    ok(&mut s, "ALTER TABLE t RENAME COLUMN z TO a").await;
    // Dropping a column drops the constraints that read it, as in PostgreSQL.
    ok(&mut s, "ALTER TABLE t DROP COLUMN a").await;
    assert_eq!(code(&mut s, "INSERT INTO t VALUES (5)").await, "23514");
    ok(&mut s, "INSERT INTO t VALUES (-3)").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM t").await, vec!["3"]);
}

#[tokio::test]
async fn check_constraints_are_added_validated_and_dropped_on_a_table_with_rows() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE t (id INT PRIMARY KEY, a INT, b TEXT UNIQUE)",
    )
    .await;
    // More rows than one chunk of the validation scan.
    ok(
        &mut s,
        "INSERT INTO t SELECT x, x, 'v' || x FROM generate_series(1, 2500) AS x",
    )
    .await;
    ok(&mut s, "ALTER TABLE t ADD CHECK (a > 0)").await;
    // Named after its one column, as PostgreSQL names it.
    let e = run(&mut s, "INSERT INTO t VALUES (0, 0, 'z')")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23514");
    assert!(e.message.contains("\"t_a_check\""), "{}", e.message);
    assert_eq!(
        code(
            &mut s,
            "ALTER TABLE t ADD CONSTRAINT t_a_check CHECK (a > 1)"
        )
        .await,
        "42710"
    );
    // A row breaks it (the last one written): refused, and nothing of it stays.
    let e = run(
        &mut s,
        "ALTER TABLE t ADD CONSTRAINT small CHECK (a < 2500)",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "23514");
    assert_eq!(
        e.message,
        "check constraint \"small\" of relation \"t\" is violated by some row"
    );
    ok(&mut s, "INSERT INTO t VALUES (3000, 3000, 'z')").await;
    // NOT VALID: enforced from now on, the rows before are not checked until VALIDATE.
    ok(
        &mut s,
        "ALTER TABLE t ADD CONSTRAINT small CHECK (a < 2500) NOT VALID",
    )
    .await;
    assert_eq!(
        code(&mut s, "INSERT INTO t VALUES (3001, 3001, 'y')").await,
        "23514"
    );
    assert_eq!(
        code(&mut s, "ALTER TABLE t VALIDATE CONSTRAINT small").await,
        "23514"
    );
    ok(&mut s, "DELETE FROM t WHERE a >= 2500").await;
    ok(&mut s, "ALTER TABLE t VALIDATE CONSTRAINT small").await;
    ok(&mut s, "ALTER TABLE t VALIDATE CONSTRAINT small").await;
    assert_eq!(
        code(&mut s, "ALTER TABLE t VALIDATE CONSTRAINT t_b_key").await,
        "42809"
    );
    // DROP CONSTRAINT: a check, then a unique constraint (its index).
    ok(&mut s, "ALTER TABLE t DROP CONSTRAINT small").await;
    ok(&mut s, "INSERT INTO t VALUES (4000, 4000, 'w')").await;
    assert_eq!(
        code(&mut s, "INSERT INTO t VALUES (4001, 1, 'w')").await,
        "23505"
    );
    ok(&mut s, "ALTER TABLE t DROP CONSTRAINT t_b_key").await;
    ok(&mut s, "INSERT INTO t VALUES (4001, 1, 'w')").await;
    assert_eq!(
        code(&mut s, "ALTER TABLE t DROP CONSTRAINT small").await,
        "42704"
    );
    ok(&mut s, "ALTER TABLE t DROP CONSTRAINT IF EXISTS small").await;
    assert_eq!(
        code(&mut s, "ALTER TABLE t DROP CONSTRAINT t_pkey").await,
        "0A000"
    );
    // A rename rewrites the constraints that read the column (to a name that must be
    // quoted, then back) and they go on being enforced.
    ok(&mut s, "ALTER TABLE t RENAME COLUMN a TO \"Order\"").await;
    let e = run(&mut s, "INSERT INTO t VALUES (5000, -1, 'q')")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23514");
    assert!(e.message.contains("\"t_a_check\""), "{}", e.message);
    ok(&mut s, "ALTER TABLE t RENAME COLUMN \"Order\" TO a").await;
    assert_eq!(
        code(&mut s, "UPDATE t SET a = 0 WHERE id = 1").await,
        "23514"
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM t WHERE a > 0").await,
        vec!["2501"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_not_null_checks_the_rows_and_drop_not_null_frees_the_column() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE n (id INT PRIMARY KEY, a INT, b INT)").await;
    // More rows than one chunk of the scan; the one NULL of b is in the last.
    ok(
        &mut s,
        "INSERT INTO n SELECT x, x, CASE WHEN x = 2500 THEN NULL ELSE x END \
         FROM generate_series(1, 2500) AS x",
    )
    .await;
    let nullable = |column: &str| {
        format!(
            "SELECT NOT a.attnotnull FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON a.attrelid = c.oid \
             WHERE c.relname = 'n' AND a.attname = '{column}'"
        )
    };
    assert_eq!(rows(&mut s, &nullable("a")).await, vec!["true"]);
    ok(&mut s, "ALTER TABLE n ALTER COLUMN a SET NOT NULL").await;
    assert_eq!(rows(&mut s, &nullable("a")).await, vec!["false"]);
    let e = run(&mut s, "INSERT INTO n VALUES (5000, NULL, 1)")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23502");
    // Every way of writing a row refuses it, ON CONFLICT's update too.
    assert_eq!(
        code(&mut s, "UPDATE n SET a = NULL WHERE id = 1").await,
        "23502"
    );
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO n VALUES (1, 1, 1) ON CONFLICT (id) DO UPDATE SET a = NULL"
        )
        .await,
        "23502"
    );
    // A NULL in the rows: PostgreSQL's error, and the column stays nullable.
    let e = run(&mut s, "ALTER TABLE n ALTER COLUMN b SET NOT NULL")
        .await
        .unwrap_err();
    assert_eq!(e.code, "23502");
    assert_eq!(
        e.message,
        "column \"b\" of relation \"n\" contains null values"
    );
    assert_eq!(rows(&mut s, &nullable("b")).await, vec!["true"]);
    ok(&mut s, "INSERT INTO n VALUES (5001, 1, NULL)").await;
    ok(&mut s, "UPDATE n SET b = 0 WHERE b IS NULL").await;
    ok(&mut s, "ALTER TABLE n ALTER COLUMN b SET NOT NULL").await;
    // Again: nothing to do.
    ok(&mut s, "ALTER TABLE n ALTER COLUMN b SET NOT NULL").await;
    // Rows written before a column was added read as its default, or NULL.
    ok(&mut s, "ALTER TABLE n ADD COLUMN c INT DEFAULT 7").await;
    ok(&mut s, "ALTER TABLE n ADD COLUMN d INT").await;
    ok(&mut s, "ALTER TABLE n ALTER COLUMN c SET NOT NULL").await;
    assert_eq!(
        code(&mut s, "ALTER TABLE n ALTER COLUMN d SET NOT NULL").await,
        "23502"
    );
    // DROP NOT NULL, except on the primary key.
    ok(&mut s, "ALTER TABLE n ALTER COLUMN a DROP NOT NULL").await;
    ok(&mut s, "INSERT INTO n VALUES (5002, NULL, 2)").await;
    assert_eq!(rows(&mut s, &nullable("a")).await, vec!["true"]);
    assert_eq!(
        code(&mut s, "ALTER TABLE n ALTER COLUMN id DROP NOT NULL").await,
        "42P16"
    );
    assert_eq!(
        code(&mut s, "ALTER TABLE n ALTER COLUMN zz SET NOT NULL").await,
        "42703"
    );
    assert_eq!(
        code(
            &mut s,
            "ALTER TABLE n ALTER COLUMN a SET NOT NULL, ADD COLUMN e INT"
        )
        .await,
        "0A000"
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*), count(a), count(b), count(c), count(d) FROM n"
        )
        .await,
        vec!["2502|2501|2502|2502|0"]
    );
}

/// Statements recognised before parsing (VACUUM, ADMIN, psql's catalog queries) are
/// recognised one statement at a time: `VACUUM; DELETE ...` runs the DELETE too, and a
/// statement holding a catalog query's text in a literal or a comment runs as written.
#[tokio::test]
async fn a_query_string_runs_every_statement_whatever_its_first_or_its_literals_are() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (id INT PRIMARY KEY, note TEXT)").await;
    ok(&mut s, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')").await;

    let (results, error) = s.simple_query("VACUUM; DELETE FROM t WHERE id = 1").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(results.len(), 2);
    assert!(matches!(&results[1], QueryResult::Command { tag } if tag == "DELETE 1"));
    let (results, error) = s
        .simple_query("DELETE FROM t WHERE id = 2; CHECKPOINT; SELECT count(*) FROM t")
        .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(results.len(), 3);
    assert_eq!(rows(&mut s, "SELECT id FROM t").await, vec!["3"]);

    // psql's catalog shapes inside a literal or after a comment marker are text.
    ok(
        &mut s,
        "INSERT INTO t VALUES (4, 'FROM pg_catalog.pg_database d')",
    )
    .await;
    ok(
        &mut s,
        "DELETE FROM t WHERE id = 3 -- FROM pg_catalog.pg_policy pol",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT id, note FROM t").await,
        vec!["4|FROM pg_catalog.pg_database d"]
    );
    assert_eq!(
        rows(&mut s, "SELECT 'FROM pg_catalog.pg_database d' AS x").await,
        vec!["FROM pg_catalog.pg_database d"]
    );

    // A syntax error anywhere runs none of the string, and its position counts from the
    // start of the string.
    let (results, error) = s
        .simple_query("VACUUM; DELETE FROM t; SELECT * FRM t")
        .await;
    let error = error.expect("a syntax error");
    assert!(results.is_empty());
    assert_eq!(error.code, "42601");
    assert!(error.position.is_some_and(|p| p > 25), "{error:?}");
    assert_eq!(rows(&mut s, "SELECT id FROM t").await, vec!["4"]);
    let (_, error) = s.simple_query("ADMIN CHECK TABLE t; SELECT * FRM t").await;
    assert_eq!(error.expect("a syntax error").code, "42601");

    // ADMIN after another statement is recognised too.
    let (results, error) = s.simple_query("SELECT 1; ADMIN CHECK TABLE t").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(results.len(), 2);

    // The extended protocol takes one statement.
    for sql in ["VACUUM; DELETE FROM t", "SELECT 1; ADMIN CHECK TABLE t"] {
        let e = s.prepare(sql, &[]).await.expect_err(sql);
        assert_eq!(e.code, "42601", "{sql}");
    }
    assert_eq!(rows(&mut s, "SELECT id FROM t").await, vec!["4"]);
}

/// A sequence moved near the top of bigint runs out with 2200H, as in PostgreSQL, and
/// stays out: its counter used to wrap past 2^63 and start again from 1, handing out
/// values it had handed out before.
#[tokio::test]
async fn a_sequence_at_the_top_of_bigint_runs_out_instead_of_starting_again() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE SEQUENCE s").await;
    ok(&mut s, "SELECT setval('s', 9223372036854775000)").await;
    let mut last = 9_223_372_036_854_775_000_i64;
    let mut handed = 0;
    let error = loop {
        match run(&mut s, "SELECT nextval('s')").await {
            Ok(QueryResult::Rows { .. }) => {
                let value: i64 = rows(&mut s, "SELECT currval('s')").await[0]
                    .parse()
                    .unwrap();
                assert!(value > last, "{value} after {last}");
                last = value;
                handed += 1;
                assert!(handed <= 1_000, "the sequence never ran out");
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(error.code, "2200H", "{}", error.message);
    assert!(
        error.message.contains("reached maximum value"),
        "{}",
        error.message
    );
    assert!(
        last >= 9_223_372_036_854_775_800,
        "ran out early, at {last}"
    );
    for _ in 0..3 {
        assert_eq!(code(&mut s, "SELECT nextval('s')").await, "2200H");
    }
    // setval and RESTART to the top: nothing left either.
    ok(&mut s, "SELECT setval('s', 9223372036854775807)").await;
    assert_eq!(code(&mut s, "SELECT nextval('s')").await, "2200H");
    ok(&mut s, "ALTER SEQUENCE s RESTART WITH 5").await;
    assert_eq!(rows(&mut s, "SELECT nextval('s')").await, vec!["5"]);
}

/// char(n) and varchar(n) take 1 to 10,485,760, as in PostgreSQL: a longer length used to
/// be cut to 32 bits (varchar(4294967297) became varchar(1)), and char(4294967295) padded
/// every value to 4 GiB.
#[tokio::test]
async fn character_lengths_are_checked_like_postgres() {
    let db = TestDb::new().await;
    let mut s = db.session();
    for sql in [
        "CREATE TABLE t (v VARCHAR(4294967297))",
        "CREATE TABLE t (c CHAR(4294967295))",
        "CREATE TABLE t (c CHAR(10485761))",
        "CREATE TABLE t (v VARCHAR(0))",
        "CREATE TABLE t (c CHARACTER(0))",
    ] {
        assert_eq!(code(&mut s, sql).await, "22023", "{sql}");
    }
    assert_eq!(code(&mut s, "SELECT * FROM t").await, "42P01");
    ok(&mut s, "CREATE TABLE t (v VARCHAR(10485760), c CHAR(2))").await;
    ok(&mut s, "INSERT INTO t VALUES ('abc', 'ab')").await;
    assert_eq!(rows(&mut s, "SELECT v, c FROM t").await, vec!["abc|ab"]);
}

/// PostgreSQL sums bigint as numeric, exact past 2^63, and `-x` past the type's range is
/// 22003. DataFusion's sum and negation wrapped around: sum(9223372036854775807, 7) was
/// -9223372036854775802.
#[tokio::test]
async fn sums_of_bigint_are_exact_and_negation_overflows_with_22003() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE n (k INT PRIMARY KEY, g INT, b BIGINT, i INT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO n VALUES (1, 1, 9223372036854775807, -2147483648), (2, 1, 7, 5), \
         (3, 2, -9223372036854775808, 1), (4, 2, -9223372036854775808, 2)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT sum(b) FROM n WHERE k < 3").await,
        vec!["9223372036854775814"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT g, sum(b) AS total FROM n GROUP BY g ORDER BY g"
        )
        .await,
        vec!["1|9223372036854775814", "2|-18446744073709551616"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT k, sum(b) OVER (ORDER BY k) FROM n WHERE k < 3 ORDER BY k"
        )
        .await,
        vec!["1|9223372036854775807", "2|9223372036854775814"]
    );
    assert_eq!(
        rows(&mut s, "SELECT sum(i) FROM n").await,
        vec!["-2147483640"]
    );
    for sql in [
        "SELECT -b FROM n WHERE k = 3",
        "SELECT -i FROM n WHERE k = 1",
        "SELECT k FROM n WHERE -b > 0",
    ] {
        assert_eq!(code(&mut s, sql).await, "22003", "{sql}");
    }
    assert_eq!(
        rows(&mut s, "SELECT -b, -i FROM n WHERE k = 2").await,
        vec!["-7|-5"]
    );
}

/// PostgreSQL gives each existing row its own value of a volatile default it adds a column
/// with (it rewrites the table); ADD COLUMN here rewrites no row, so it refuses one on a
/// table with rows instead of giving every row the same value. Stable and constant
/// defaults are evaluated once, as in PostgreSQL.
#[tokio::test]
async fn add_column_with_a_volatile_default_to_a_table_with_rows_is_refused() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE SEQUENCE q").await;
    ok(&mut s, "CREATE TABLE empty (k INT PRIMARY KEY)").await;
    ok(
        &mut s,
        "ALTER TABLE empty ADD COLUMN r FLOAT8 DEFAULT random()",
    )
    .await;
    ok(&mut s, "CREATE TABLE t (k INT PRIMARY KEY)").await;
    ok(&mut s, "INSERT INTO t VALUES (1), (2)").await;
    for sql in [
        "ALTER TABLE t ADD COLUMN r FLOAT8 DEFAULT random()",
        "ALTER TABLE t ADD COLUMN id BIGINT DEFAULT nextval('q')",
    ] {
        assert_eq!(code(&mut s, sql).await, "0A000", "{sql}");
    }
    assert_eq!(code(&mut s, "SELECT r FROM t").await, "42703");
    ok(&mut s, "ALTER TABLE t ADD COLUMN c INT DEFAULT 5").await;
    ok(
        &mut s,
        "ALTER TABLE t ADD COLUMN at TIMESTAMPTZ DEFAULT now()",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT k, c, count(DISTINCT at) OVER () FROM t ORDER BY k"
        )
        .await,
        vec!["1|5|1", "2|5|1"]
    );
}

/// RETURNING columns are named as a SELECT list's are: an expression by its function
/// or `?column?`, a repeated name repeated (checked against PostgreSQL 15). They were
/// named by DataFusion's text for the expression (`length(t.c)`, `t.c || Utf8("#")`).
#[tokio::test]
async fn returning_columns_are_named_as_a_select_lists_are() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE t (id INT PRIMARY KEY, c CHAR(4), v VARCHAR(4))",
    )
    .await;
    for (q, want) in [
        (
            "INSERT INTO t VALUES (1, 'z', 'z') RETURNING length(c), c || '#', id, id",
            vec!["length", "?column?", "id", "id"],
        ),
        (
            "UPDATE t SET v = 'y' WHERE id = 1 RETURNING v || '#', upper(v) AS u, t.v",
            vec!["?column?", "u", "v"],
        ),
        (
            "DELETE FROM t WHERE id = 1 RETURNING id + 1",
            vec!["?column?"],
        ),
    ] {
        match run(&mut s, q).await {
            Ok(QueryResult::Rows { schema, .. }) => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                assert_eq!(names, want, "{q}");
            }
            other => panic!("{q}: {other:?}"),
        }
    }
}

/// Where PostgreSQL converts a `character(n)` value to `text` (string functions, `||`,
/// casts, `string_agg`, a comparison with a value of another type or length), its
/// trailing blanks go; `octet_length`, `concat` and `LIKE` keep them. Each expectation was
/// checked against PostgreSQL 15. Before, `length('ab'::char(4))` was 4 and
/// `c || 'x'` was `ab  x`.
#[tokio::test]
async fn character_n_reads_without_trailing_blanks_where_postgresql_takes_text() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE bp (id INT PRIMARY KEY, c CHAR(4), v VARCHAR(4), d CHAR(6))",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO bp VALUES (1, 'ab', 'ab', 'ab'), (2, 'abcd', 'abcd', 'abcd'), \
         (3, '', '', ''), (4, NULL, NULL, NULL)",
    )
    .await;
    for (q, want) in [
        (
            "SELECT length(c), char_length(c), character_length(c), octet_length(c), \
             bit_length(c) FROM bp ORDER BY id",
            [
                "2|2|2|4|16",
                "4|4|4|4|32",
                "0|0|0|4|0",
                "NULL|NULL|NULL|NULL|NULL",
            ],
        ),
        (
            "SELECT c || 'x', 'x' || c, c || c FROM bp ORDER BY id",
            [
                "abx|xab|abab",
                "abcdx|xabcd|abcdabcd",
                "x|x|",
                "NULL|NULL|NULL",
            ],
        ),
        (
            "SELECT upper(c) || '#', lower(c) || '#', reverse(c) || '#', c::text || '#', \
             CAST(c AS varchar(3)) || '#' FROM bp ORDER BY id",
            [
                "AB#|ab#|ba#|ab#|ab#",
                "ABCD#|abcd#|dcba#|abcd#|abc#",
                "#|#|#|#|#",
                "NULL|NULL|NULL|NULL|NULL",
            ],
        ),
        (
            "SELECT concat(c, '#'), concat_ws(',', c, 'y') FROM bp ORDER BY id",
            ["ab  #|ab  ,y", "abcd#|abcd,y", "    #|    ,y", "#|y"],
        ),
        (
            "SELECT c LIKE 'ab', c LIKE 'ab%', c LIKE 'ab  ' FROM bp ORDER BY id",
            [
                "false|true|true",
                "false|true|false",
                "false|false|false",
                "NULL|NULL|NULL",
            ],
        ),
        (
            "SELECT substr(c, 1, 3) || '#', left(c, 3) || '#', right(c, 3) || '#', \
             position('b' in c), strpos(c, ' ') FROM bp ORDER BY id",
            [
                "ab#|ab#|ab#|2|0",
                "abc#|abc#|bcd#|2|0",
                "#|#|#|0|0",
                "NULL|NULL|NULL|NULL|NULL",
            ],
        ),
        (
            "SELECT replace(c, 'a', 'z') || '#', lpad(c, 6, '*'), rpad(c, 6, '*'), md5(c) \
             FROM bp ORDER BY id",
            [
                "zb#|****ab|ab****|187ef4436122d1cc2f40dc2b92f0eba0",
                "zbcd#|**abcd|abcd**|e2fc714c4727ee9395f324cd2e7f331f",
                "#|******|******|d41d8cd98f00b204e9800998ecf8427e",
                "NULL|NULL|NULL|NULL",
            ],
        ),
        (
            "SELECT c = 'ab', c = v, v = c, c = d, c < 'abc' FROM bp ORDER BY id",
            [
                "true|true|true|true|true",
                "false|true|true|true|false",
                "false|true|true|true|true",
                "NULL|NULL|NULL|NULL|NULL",
            ],
        ),
    ] {
        assert_eq!(rows(&mut s, q).await, want, "{q}");
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM bp AS a JOIN bp AS b ON a.c = b.d"
        )
        .await,
        ["3"]
    );
    assert_eq!(
        rows(&mut s, "SELECT string_agg(c, ',' ORDER BY id) FROM bp").await,
        ["ab,abcd,"]
    );
    // Two casts written apart that plan as one expression are two columns, as in
    // PostgreSQL (this was "Projections require unique expression names").
    assert_eq!(
        rows(
            &mut s,
            "SELECT c::text || '#', CAST(c AS varchar) || '#', c::text, CAST(c AS varchar) \
             FROM bp WHERE id = 1"
        )
        .await,
        ["ab#|ab#|ab|ab"]
    );
    // The column keeps its padding where it is read as itself, and a literal compared
    // with it is still a key.
    assert_eq!(
        rows(&mut s, "SELECT c, id FROM bp WHERE c = 'ab'").await,
        ["ab  |1"]
    );
}

/// A `character(n)` value assigned to a `text` or `varchar` column loses its trailing
/// blanks, as PostgreSQL converts `bpchar` to `text`; assigned to another `character(n)`
/// it is padded to that length. Checked against PostgreSQL 15 (this stored `'z   '`).
#[tokio::test]
async fn character_n_assigned_to_text_loses_its_trailing_blanks() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE bpa (id INT PRIMARY KEY, c CHAR(4), t TEXT, v VARCHAR(6), d CHAR(6))",
    )
    .await;
    ok(&mut s, "INSERT INTO bpa (id, c) VALUES (1, 'z'), (2, NULL)").await;
    ok(&mut s, "UPDATE bpa SET t = c, v = c, d = c").await;
    ok(
        &mut s,
        "INSERT INTO bpa (id, t, v, d) SELECT id + 10, c, c, c FROM bpa",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, t || '#', v || '#', octet_length(t), octet_length(v), octet_length(d) \
             FROM bpa ORDER BY id"
        )
        .await,
        [
            "1|z#|z#|1|1|6",
            "2|NULL|NULL|NULL|NULL|NULL",
            "11|z#|z#|1|1|6",
            "12|NULL|NULL|NULL|NULL|NULL",
        ]
    );
}

#[tokio::test]
async fn character_n_compares_without_trailing_blanks_on_every_path() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE c (id INT PRIMARY KEY, code CHAR(4) UNIQUE, note TEXT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO c VALUES (1, 'ab', 'x'), (2, 'abc', 'y'), (3, 'b', 'z')",
    )
    .await;
    // The point path (a unique key) and the general path (an aggregate, a scan, a join)
    // agree: trailing blanks do not count on either side.
    for q in [
        "SELECT count(*) FROM c WHERE code = 'ab'",
        "SELECT count(*) FROM c WHERE code = 'ab   '",
        "SELECT count(*) FROM c WHERE 'ab' = code",
        "SELECT count(*) FROM c WHERE code IN ('ab', 'zz')",
        "SELECT count(*) FROM c WHERE code = 'ab' AND note = 'x'",
        "SELECT count(*) FROM c AS k WHERE k.code = 'ab'",
        "SELECT count(*) FROM c WHERE code IS NOT DISTINCT FROM 'ab'",
    ] {
        assert_eq!(rows(&mut s, q).await, vec!["1"], "{q}");
    }
    assert_eq!(
        rows(&mut s, "SELECT id FROM c WHERE code = 'ab'").await,
        vec!["1"]
    );
    assert_eq!(
        rows(&mut s, "SELECT id FROM c WHERE code <> 'ab' ORDER BY id").await,
        vec!["2", "3"]
    );
    assert_eq!(
        rows(&mut s, "SELECT id FROM c WHERE code <= 'ab' ORDER BY id").await,
        vec!["1"]
    );
    assert_eq!(
        rows(&mut s, "SELECT id FROM c WHERE code > 'ab' ORDER BY id").await,
        vec!["2", "3"]
    );
    assert_eq!(
        rows(&mut s, "SELECT code = 'ab' FROM c ORDER BY id").await,
        vec!["true", "false", "false"]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM c WHERE code = 'abcdef'").await,
        vec!["0"]
    );
    // The length the column's field carries does not get in the way of set operations,
    // joins, subqueries or copying rows between tables.
    assert_eq!(
        rows(
            &mut s,
            "SELECT code FROM c UNION SELECT note FROM c UNION ALL SELECT 'q' ORDER BY 1"
        )
        .await,
        vec!["ab  ", "abc ", "b   ", "q", "x", "y", "z"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM c JOIN c AS d ON c.code = d.code \
             WHERE d.code IN (SELECT code FROM c WHERE code = 'b')"
        )
        .await,
        vec!["1"]
    );
    ok(&mut s, "CREATE TABLE c2 (id INT, code CHAR(4), note TEXT)").await;
    ok(&mut s, "INSERT INTO c2 SELECT * FROM c").await;
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM c2 WHERE code = 'abc'").await,
        vec!["1"]
    );
    // UPDATE and DELETE find the row the same way.
    assert_eq!(
        ok(
            &mut s,
            "UPDATE c SET note = 'u' WHERE code = 'b' AND id > 0"
        )
        .await,
        "UPDATE 1"
    );
    assert_eq!(
        ok(&mut s, "DELETE FROM c WHERE code IN ('abc') AND note = 'y'").await,
        "DELETE 1"
    );
    // A bound parameter compares the same way as a literal.
    let prepared = s
        .prepare("SELECT count(*) FROM c WHERE code = $1", &[])
        .await
        .unwrap();
    let result = s
        .execute_prepared(
            &prepared,
            vec![datafusion::scalar::ScalarValue::Utf8(Some("b".into()))],
        )
        .await
        .unwrap();
    let QueryResult::Rows { batches, .. } = result else {
        panic!("a SELECT returns rows");
    };
    let counted = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(counted.contains("| 1 "), "{counted}");
}

#[tokio::test]
async fn session_settings_are_bounded_and_reset() {
    let db = TestDb::with_config(SqlConfig {
        settings_bytes_max: 1024,
        ..SqlConfig::default()
    })
    .await;
    let mut s = db.session();
    ok(&mut s, "SET application_name = 'app'").await;
    ok(&mut s, "SET lock_timeout = '250ms'").await;
    assert_eq!(rows(&mut s, "SHOW application_name").await, vec!["app"]);
    // Settings past the bound are refused, and leave the parameter as it was.
    let mut refused = None;
    for i in 0..100 {
        if let Err(e) = run(
            &mut s,
            &format!("SET my.setting_{i} = '{}'", "v".repeat(40)),
        )
        .await
        {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("some setting passes 1024 bytes");
    assert_eq!(e.code, "54000");
    assert!(e.message.contains("settings_bytes_max"), "{}", e.message);
    assert_eq!(code(&mut s, &format!("SHOW my.setting_{i}")).await, "42704");
    let long = "x".repeat(2000);
    assert_eq!(
        run(
            &mut s,
            &format!("SELECT set_config('application_name', '{long}', false)")
        )
        .await
        .unwrap_err()
        .code,
        "54000"
    );
    assert_eq!(rows(&mut s, "SHOW application_name").await, vec!["app"]);
    assert_eq!(
        code(
            &mut s,
            &format!("SET lock_timeout = '{}1ms'", "0".repeat(2000))
        )
        .await,
        "54000"
    );
    assert_eq!(rows(&mut s, "SHOW lock_timeout").await, vec!["250ms"]);
    // Replacing a value does not count it twice.
    ok(&mut s, "SET my.setting_0 = 'short'").await;
    ok(&mut s, &format!("SET my.setting_{i} = 'fits now'")).await;
    // RESET frees one; RESET ALL frees every one and restores defaults.
    ok(&mut s, "RESET my.setting_0").await;
    assert_eq!(code(&mut s, "SHOW my.setting_0").await, "42704");
    assert_eq!(ok(&mut s, "RESET ALL").await, "RESET");
    assert_eq!(code(&mut s, "SHOW application_name").await, "42704");
    assert_eq!(rows(&mut s, "SHOW lock_timeout").await, vec!["50000ms"]);
    ok(&mut s, &format!("SET my.long = '{}'", "v".repeat(900))).await;
}

#[tokio::test]
async fn a_correlated_subquery_reads_only_until_its_answer_is_known() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (x INT)").await;
    ok(&mut s, "INSERT INTO t VALUES (1), (2)").await;
    // Each subquery's rows fail once g reaches 50000 (a division by zero): reading all of
    // them, as collecting a whole result does, fails; stopping at the answer does not.
    // (These are subqueries in the select list, which run once per outer row as in
    // PostgreSQL; DataFusion joins those in WHERE.)
    let rows_until_50000 = "FROM generate_series(1, 100000) g \
                            WHERE g > t.x AND 1 / (50000 - g) >= 0";
    assert_eq!(
        rows(
            &mut s,
            &format!(
                "SELECT x, EXISTS (SELECT 1 {rows_until_50000}), \
                 x + 1 IN (SELECT g {rows_until_50000}) FROM t ORDER BY x"
            )
        )
        .await,
        vec!["1|true|true", "2|true|true"]
    );
    // Answers that need every row still read them all.
    assert_eq!(
        rows(
            &mut s,
            "SELECT x, 0 IN (SELECT g FROM generate_series(1, 20000) g WHERE g > t.x), \
             NOT EXISTS (SELECT 1 FROM generate_series(1, 3) g WHERE g > t.x + 5) \
             FROM t ORDER BY x"
        )
        .await,
        vec!["1|false|true", "2|false|true"]
    );
}

#[tokio::test]
async fn grouping_by_the_primary_key_groups_by_every_column_it_determines() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE au (id INT PRIMARY KEY, name TEXT, email TEXT UNIQUE)",
    )
    .await;
    ok(
        &mut s,
        "CREATE TABLE bk (id INT PRIMARY KEY, au INT, title TEXT)",
    )
    .await;
    ok(
        &mut s,
        "CREATE TABLE kv (k INT, s INT, v TEXT, PRIMARY KEY (k, s))",
    )
    .await;
    ok(&mut s, "CREATE TABLE nk (a INT, b TEXT)").await;
    ok(
        &mut s,
        "INSERT INTO au VALUES (1, 'ann', 'a@x'), (2, 'bob', 'b@x'), (3, 'cy', NULL)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO bk VALUES (10, 1, 't1'), (11, 1, 't2'), (12, 2, 't3')",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO kv VALUES (1, 1, 'x'), (1, 2, 'y'), (2, 1, 'z')",
    )
    .await;
    // Django's `Author.objects.annotate(n=Count('book'))`: every column of the author,
    // grouped by its primary key alone.
    assert_eq!(
        rows(
            &mut s,
            "SELECT au.id, au.name, au.email, COUNT(bk.id) AS n FROM au \
             LEFT OUTER JOIN bk ON (au.id = bk.au) GROUP BY au.id ORDER BY au.id"
        )
        .await,
        vec!["1|ann|a@x|2", "2|bob|b@x|1", "3|cy|NULL|0"]
    );
    // In HAVING and ORDER BY too, and through a composite key.
    assert_eq!(
        rows(
            &mut s,
            "SELECT name FROM au JOIN bk ON au.id = bk.au GROUP BY au.id \
             HAVING count(*) > 1 OR name = 'bob' ORDER BY name DESC"
        )
        .await,
        vec!["bob", "ann"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT k, s, v FROM kv GROUP BY k, s ORDER BY v DESC"
        )
        .await,
        vec!["2|1|z", "1|2|y", "1|1|x"]
    );
    // Part of a composite key, a unique column, or a table without a primary key
    // determines nothing, as in PostgreSQL.
    assert_eq!(
        code(&mut s, "SELECT k, v FROM kv GROUP BY k").await,
        "42803"
    );
    assert_eq!(
        code(&mut s, "SELECT email, name FROM au GROUP BY email").await,
        "42803"
    );
    assert_eq!(
        code(&mut s, "SELECT a, b FROM nk GROUP BY a").await,
        "42803"
    );
    // The joined table's columns are not determined by the other's key.
    assert_eq!(
        code(
            &mut s,
            "SELECT au.id, bk.title FROM au JOIN bk ON au.id = bk.au GROUP BY au.id"
        )
        .await,
        "42803"
    );
}

#[tokio::test]
async fn a_scalar_subquery_that_returns_no_row_is_null_whatever_its_column() {
    // DataFusion 55 typed these by their column (a literal, a NOT NULL column) as never
    // NULL: `IS NULL` of one was folded to false, and one that was NULL failed its batch.
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE t (a INT NOT NULL, b TEXT)").await;
    ok(&mut s, "INSERT INTO t VALUES (1, 'x'), (2, NULL), (3, 'z')").await;
    for (sql, want) in [
        ("SELECT (SELECT 'x' WHERE false)", vec!["NULL"]),
        ("SELECT (SELECT 1 WHERE false) IS NULL", vec!["true"]),
        ("SELECT coalesce((SELECT 1 WHERE false), 2)", vec!["2"]),
        ("SELECT (SELECT a FROM t WHERE a > 10) + 1", vec!["NULL"]),
        (
            "SELECT a FROM t WHERE (SELECT 1 FROM t WHERE a > 5) IS NULL ORDER BY a",
            vec!["1", "2", "3"],
        ),
        (
            "SELECT a, (SELECT 'y' FROM t t2 WHERE t2.a = t1.a + 1) FROM t t1 ORDER BY a",
            vec!["1|y", "2|y", "3|NULL"],
        ),
        (
            "SELECT a, (SELECT t2.a FROM t t2 WHERE t2.a = t1.a + 1) IS NULL FROM t t1 ORDER BY a",
            vec!["1|false", "2|false", "3|true"],
        ),
        (
            "SELECT (SELECT a FROM t WHERE a > 5 LIMIT 1) IS NULL",
            vec!["true"],
        ),
        // An aggregate without GROUP BY returns a row, empty input or not.
        (
            "SELECT a, (SELECT count(*) FROM t t2 WHERE t2.a > t1.a) FROM t t1 ORDER BY a",
            vec!["1|2", "2|1", "3|0"],
        ),
        ("SELECT (SELECT count(*) FROM t WHERE a > 10)", vec!["0"]),
    ] {
        assert_eq!(rows(&mut s, sql).await, want, "{sql}");
    }
}

#[tokio::test]
async fn a_correlated_scalar_subquery_needs_no_aggregate() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE u (id INT PRIMARY KEY, name TEXT)").await;
    ok(&mut s, "CREATE TABLE o (id INT PRIMARY KEY, uid INT)").await;
    ok(&mut s, "INSERT INTO u VALUES (1, 'a'), (2, 'b')").await;
    ok(
        &mut s,
        "INSERT INTO o VALUES (10, 1), (11, 2), (12, 3), (13, 1)",
    )
    .await;
    // A lookup per row, NULL where nothing matches.
    assert_eq!(
        rows(
            &mut s,
            "SELECT o.id, (SELECT name FROM u WHERE u.id = o.uid) AS name FROM o ORDER BY 1"
        )
        .await,
        vec!["10|a", "11|b", "12|NULL", "13|a"]
    );
    // In a condition, in ORDER BY, and inside an expression.
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM o WHERE (SELECT name FROM u WHERE u.id = o.uid) = 'a' ORDER BY id"
        )
        .await,
        vec!["10", "13"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM o ORDER BY (SELECT name FROM u WHERE u.id = o.uid) DESC NULLS LAST, id"
        )
        .await,
        vec!["11", "10", "13", "12"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, coalesce((SELECT u.id * 100 FROM u WHERE u.id = o.uid), -1) + 1 \
             FROM o ORDER BY id"
        )
        .await,
        vec!["10|101", "11|201", "12|0", "13|101"]
    );
    // The same through an aggregate, which DataFusion decorrelates, and through a
    // LIMIT.
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, coalesce((SELECT max(u.id) * 100 FROM u WHERE u.id = o.uid), -1) + 1, \
             coalesce((SELECT u.id FROM u WHERE u.id = o.uid LIMIT 1), -1) FROM o ORDER BY id"
        )
        .await,
        vec!["10|101|1", "11|201|2", "12|0|-1", "13|101|1"]
    );
    // Nested in an aggregated subquery, which DataFusion still decorrelates.
    assert_eq!(
        rows(
            &mut s,
            "SELECT o.id, (SELECT count(*) FROM u WHERE u.id <= o.uid \
             AND (SELECT u2.name FROM u u2 WHERE u2.id = u.id) <> 'b') FROM o ORDER BY 1"
        )
        .await,
        vec!["10|1", "11|1", "12|1", "13|1"]
    );
    // A subquery nested in it reading the outer row (past the subquery), and one in a
    // subquery that reads no outer column of its own.
    assert_eq!(
        rows(
            &mut s,
            "SELECT o.id, (SELECT name FROM u WHERE u.id = o.uid \
             AND EXISTS (SELECT 1 FROM o o2 WHERE o2.uid = o.uid AND o2.id <> o.id)) \
             FROM o ORDER BY 1"
        )
        .await,
        vec!["10|a", "11|NULL", "12|NULL", "13|a"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT o.id, (SELECT name FROM u WHERE u.id = \
             (SELECT max(o2.uid) FROM o o2 WHERE o2.id <= o.id)) FROM o ORDER BY 1"
        )
        .await,
        vec!["10|a", "11|b", "12|NULL", "13|NULL"]
    );
    // Likewise under EXISTS and NOT IN, in the select list and in WHERE, and a scalar
    // subquery nested in one without a FROM.
    assert_eq!(
        rows(
            &mut s,
            "SELECT o.id, EXISTS (SELECT 1 FROM u WHERE u.id = o.uid \
             AND EXISTS (SELECT 1 FROM o o2 WHERE o2.id > o.id)) FROM o ORDER BY 1"
        )
        .await,
        vec!["10|true", "11|true", "12|false", "13|false"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT o.id FROM o WHERE o.uid NOT IN (SELECT u.id FROM u WHERE EXISTS \
             (SELECT 1 FROM o o2 WHERE o2.id > o.id AND o2.uid = u.id)) ORDER BY 1"
        )
        .await,
        vec!["11", "12", "13"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT o.id, (SELECT (SELECT name FROM u WHERE u.id = o.uid)) FROM o ORDER BY 1"
        )
        .await,
        vec!["10|a", "11|b", "12|NULL", "13|a"]
    );
    // An aggregated one in ORDER BY, which DataFusion refuses there.
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM o ORDER BY (SELECT max(name) FROM u WHERE u.id = o.uid), id"
        )
        .await,
        vec!["10", "13", "11", "12"]
    );
    // In an UPDATE's SET, read before the write.
    ok(
        &mut s,
        "UPDATE o SET uid = (SELECT u.id + 10 FROM u WHERE u.id = o.uid) WHERE id < 13",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT id, uid FROM o ORDER BY id").await,
        vec!["10|11", "11|12", "12|NULL", "13|1"]
    );
    // More than one row for an outer row is PostgreSQL's 21000, and changes nothing.
    assert_eq!(
        code(
            &mut s,
            "SELECT o.id, (SELECT name FROM u WHERE u.id >= o.uid) FROM o"
        )
        .await,
        "21000"
    );
    assert_eq!(
        code(
            &mut s,
            "UPDATE o SET uid = (SELECT u.id FROM u WHERE u.id >= o.uid)"
        )
        .await,
        "21000"
    );
    assert_eq!(
        rows(&mut s, "SELECT uid FROM o WHERE id = 13").await,
        vec!["1"]
    );
    // A subquery of two columns is still refused.
    assert_eq!(
        code(
            &mut s,
            "SELECT (SELECT id, name FROM u WHERE u.id = o.uid) FROM o"
        )
        .await,
        "42601"
    );
}

#[tokio::test]
async fn update_from_and_delete_using_join_other_tables() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE acct (id INT PRIMARY KEY, bal INT)").await;
    ok(&mut s, "CREATE TABLE mv (src INT, amt INT)").await;
    ok(
        &mut s,
        "INSERT INTO acct VALUES (1, 100), (2, 100), (3, 100)",
    )
    .await;
    ok(&mut s, "INSERT INTO mv VALUES (1, 10), (1, 20), (2, 5)").await;
    // A row joined to several FROM rows changes once, with one of them (as PostgreSQL).
    assert_eq!(
        ok(
            &mut s,
            "UPDATE acct SET bal = bal - m.amt FROM mv m WHERE m.src = acct.id"
        )
        .await,
        "UPDATE 2"
    );
    let after = rows(&mut s, "SELECT id, bal FROM acct ORDER BY id").await;
    assert!(after[0] == "1|90" || after[0] == "1|80", "{after:?}");
    assert_eq!(after[1..], ["2|95", "3|100"]);
    // From a derived table, with the target aliased and RETURNING by that alias.
    assert_eq!(
        rows(
            &mut s,
            "UPDATE acct AS a SET bal = t.total FROM \
             (SELECT src, sum(amt) AS total FROM mv GROUP BY src) t \
             WHERE t.src = a.id RETURNING a.id, a.bal"
        )
        .await,
        vec!["1|30", "2|5"]
    );
    // Bound parameters, prepared.
    let upd = s
        .prepare(
            "UPDATE acct SET bal = $1 FROM mv WHERE mv.src = acct.id AND mv.amt = $2",
            &[],
        )
        .await
        .unwrap();
    let r = s
        .execute_prepared(
            &upd,
            vec![
                datafusion::scalar::ScalarValue::Int32(Some(7)),
                datafusion::scalar::ScalarValue::Int32(Some(5)),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(r, QueryResult::Command { ref tag } if tag == "UPDATE 1"));
    // Refused before anything is written: the target's name twice (42712), and RETURNING
    // of a FROM table's column.
    assert_eq!(
        code(
            &mut s,
            "UPDATE acct SET bal = 0 FROM acct WHERE acct.id = 1"
        )
        .await,
        "42712"
    );
    assert_eq!(
        code(&mut s, "DELETE FROM acct USING acct WHERE acct.id = 1").await,
        "42712"
    );
    assert_eq!(
        code(
            &mut s,
            "UPDATE acct SET bal = 0 FROM mv WHERE mv.src = acct.id RETURNING mv.amt"
        )
        .await,
        "42703"
    );
    assert_eq!(
        rows(&mut s, "SELECT id, bal FROM acct ORDER BY id").await,
        vec!["1|30", "2|7", "3|100"]
    );
    // DELETE ... USING a join; a row matched twice is deleted once.
    ok(&mut s, "INSERT INTO mv VALUES (2, 5)").await;
    assert_eq!(
        rows(
            &mut s,
            "DELETE FROM acct a USING mv JOIN acct b ON b.id = mv.src \
             WHERE a.id = b.id + 1 RETURNING a.id"
        )
        .await,
        vec!["2", "3"]
    );
    assert_eq!(rows(&mut s, "SELECT id FROM acct").await, vec!["1"]);
}

#[tokio::test]
async fn a_transactions_buffered_writes_are_bounded_by_the_configured_size() {
    let db = TestDb::with_config(SqlConfig {
        txn_size_bytes_max: 100_000,
        ..SqlConfig::default()
    })
    .await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE w (id INT PRIMARY KEY, v TEXT)").await;
    let e = run(
        &mut s,
        "INSERT INTO w SELECT g, repeat('x', 1000) FROM generate_series(1, 200) g",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "54000");
    assert!(e.message.contains("txn_size_bytes_max"), "{}", e.message);
    assert_eq!(rows(&mut s, "SELECT count(*) FROM w").await, vec!["0"]);
    ok(
        &mut s,
        "INSERT INTO w SELECT g, repeat('x', 1000) FROM generate_series(1, 50) g",
    )
    .await;
    // In a block: the statement that passes the bound fails, and so the block.
    ok(&mut s, "BEGIN").await;
    ok(
        &mut s,
        "INSERT INTO w SELECT g, repeat('x', 1000) FROM generate_series(51, 90) g",
    )
    .await;
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO w SELECT g, repeat('x', 1000) FROM generate_series(91, 150) g"
        )
        .await,
        "54000"
    );
    ok(&mut s, "ROLLBACK").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM w").await, vec!["50"]);
}

#[tokio::test]
async fn sums_of_numeric_never_wrap_exact_or_22003() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE m (k INT PRIMARY KEY, g INT, big NUMERIC(38, 0), scaled NUMERIC(38, 10), \
         small NUMERIC(20, 2))",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO m VALUES \
         (1, 1, 99999999999999999999999999999999999999, 9000000000000000000000000000, 100000000000000000.25), \
         (2, 1, 99999999999999999999999999999999999999, 9000000000000000000000000000, 100000000000000000.25), \
         (3, 2, -5, -1.5, 100000000000000000.25)",
    )
    .await;
    // Past 38 digits: an error, never a wrapped (negative) total.
    for sql in [
        "SELECT sum(big) FROM m",
        "SELECT sum(scaled) FROM m WHERE g = 1",
        "SELECT k, sum(big) OVER (ORDER BY k) FROM m",
    ] {
        let e = run(&mut s, sql).await.unwrap_err();
        assert_eq!(e.code, "22003", "{sql}: {e:?}");
    }
    // Within 38 digits: exact, grouped, windowed, filtered by HAVING, ordered.
    assert_eq!(
        rows(&mut s, "SELECT sum(small) FROM m").await,
        vec!["300000000000000000.75"]
    );
    assert_eq!(
        rows(&mut s, "SELECT sum(scaled) FROM m WHERE g = 2").await,
        vec!["-1.5000000000"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT g, sum(small) AS total FROM m GROUP BY g \
             HAVING sum(small) > 100000000000000000.25 ORDER BY sum(small)"
        )
        .await,
        vec!["1|200000000000000000.50"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT k, sum(small) OVER (ORDER BY k) FROM m ORDER BY k"
        )
        .await,
        vec![
            "1|100000000000000000.25",
            "2|200000000000000000.50",
            "3|300000000000000000.75"
        ]
    );
    assert_eq!(
        rows(&mut s, "SELECT sum(DISTINCT small), count(*) FROM m").await,
        vec!["100000000000000000.25|3"]
    );
    // An average of integers is numeric, as in PostgreSQL: as a float8 it was rounded
    // to 16 digits (9223372036854775806 for both).
    assert_eq!(
        rows(
            &mut s,
            "SELECT avg(x), avg(x) OVER () FROM (VALUES (9223372036854775807::INT8), \
             (9223372036854775806::INT8)) v(x) GROUP BY x ORDER BY x"
        )
        .await,
        vec![
            "9223372036854775806.0000000000000000000|9223372036854775806.5000000000000000000",
            "9223372036854775807.0000000000000000000|9223372036854775806.5000000000000000000"
        ]
    );
    // DISTINCT sums add up as widely: an int8 one was a wrapped (negative) total.
    assert_eq!(
        rows(
            &mut s,
            "SELECT sum(DISTINCT x) FROM (VALUES (9223372036854775807::INT8), \
             (9223372036854775806::INT8), (9223372036854775806::INT8)) v(x)"
        )
        .await,
        vec!["18446744073709551613"]
    );
    assert_eq!(
        rows(&mut s, "SELECT sum(DISTINCT big) FROM m").await,
        vec!["99999999999999999999999999999999999994"]
    );
}

/// A literal such as `0.1` is numeric, as in PostgreSQL, on every path: exact in sums and
/// in multi-row VALUES lists, where a float would have lost digits. Numeric division and
/// `avg` keep PostgreSQL's precision (20 places where the types leave room, never fewer
/// than 16) and round half away from zero, where Arrow would truncate to the dividend's
/// scale plus 4.
#[tokio::test]
async fn numeric_literals_and_quotients_keep_postgresqls_digits() {
    let db = TestDb::new().await;
    let mut s = db.session();
    assert_eq!(
        rows(
            &mut s,
            "SELECT 0.1 + 0.2, 1.0 / 3, 2 / 3.0, -2 / 3.0, 1e3, 1.5e-3"
        )
        .await,
        vec![
            "0.3|0.33333333333333333333|0.66666666666666666667|-0.66666666666666666667|1000|0.0015"
        ]
    );
    ok(
        &mut s,
        "CREATE TABLE q (k INT PRIMARY KEY, n NUMERIC(20, 2), u NUMERIC, f DOUBLE PRECISION, i INT)",
    )
    .await;
    // Multi-row, so not the single-row point path, which always parsed literals exactly.
    ok(
        &mut s,
        "INSERT INTO q VALUES (1, 100000000000000000.25, 1.0, 0.1, 1e3), \
         (2, 2.00, 2, 2.5, 7), (3, 2, 2.0, 2.5, 7)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT n, i FROM q WHERE k = 1").await,
        vec!["100000000000000000.25|1000"]
    );
    // A float column still compares with a decimal literal as a float.
    assert_eq!(
        rows(&mut s, "SELECT k FROM q WHERE f = 0.1").await,
        vec!["1"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT n / 3, u / 3, i / 2, i / 2.0, f / 2.0 FROM q WHERE k > 1 ORDER BY k"
        )
        .await,
        vec![
            "0.66666666666666666667|0.6666666666666667|3|3.50000000000000000000|1.25",
            "0.66666666666666666667|0.6666666666666667|3|3.50000000000000000000|1.25"
        ]
    );
    // avg, and sum / count, over numeric(20,2) and unconstrained numeric, grouped, windowed.
    ok(&mut s, "DELETE FROM q WHERE k = 1").await;
    ok(&mut s, "INSERT INTO q VALUES (1, 1.00, 1, 0, 0)").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT avg(n), avg(u), sum(n) / count(*), avg(-n) FROM q"
        )
        .await,
        vec![
            "1.66666666666666666667|1.6666666666666667|1.6666666666666667|-1.66666666666666666667"
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT i, avg(n) FROM q GROUP BY i HAVING avg(n) > 1 ORDER BY i"
        )
        .await,
        vec!["7|2.00000000000000000000"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT k, avg(u) OVER (ORDER BY k) FROM q ORDER BY k"
        )
        .await,
        vec![
            "1|1.0000000000000000",
            "2|1.5000000000000000",
            "3|1.6666666666666667"
        ]
    );
    // A quotient named in GROUP BY and ORDER BY is found under its name.
    assert_eq!(
        rows(
            &mut s,
            "SELECT i / 2.0 AS h, count(*) FROM q GROUP BY i / 2.0 ORDER BY i / 2.0"
        )
        .await,
        vec!["0.00000000000000000000|1", "3.50000000000000000000|2"]
    );
    // Quotients take part in coercion as numeric: UNION, CASE.
    assert_eq!(
        rows(&mut s, "SELECT 1.0 / 3 UNION ALL SELECT 2.5").await,
        vec!["0.33333333333333333333", "2.50000000000000000000"]
    );
    // Quotients in a VALUES row, stored or selected: the column is typed from them.
    assert_eq!(
        rows(&mut s, "VALUES (1.0 / 3, 1), (NULL, 2), (2, 3)").await,
        vec![
            "0.33333333333333333333|1",
            "NULL|2",
            "2.00000000000000000000|3"
        ]
    );
    ok(
        &mut s,
        "INSERT INTO q VALUES (4, 2.0 / 3, 1.0 / 3, 0, 0), (5, 0, 0, 0, 0)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT n, u FROM q WHERE k = 4").await,
        // Unconstrained NUMERIC keeps 10 places; Arrow's quotient had 5.
        vec!["0.67|0.3333333333"]
    );
    ok(&mut s, "DELETE FROM q WHERE k > 3").await;
    // DISTINCT averages too: of 1, 2, 2 and 7, 7, 0.
    assert_eq!(
        rows(&mut s, "SELECT avg(DISTINCT n), avg(DISTINCT i) FROM q").await,
        vec!["1.50000000000000000000|3.50000000000000000000"]
    );
    ok(&mut s, "UPDATE q SET n = 4 WHERE k = 3").await;
    assert_eq!(
        rows(&mut s, "SELECT avg(DISTINCT n) FROM q").await,
        vec!["2.33333333333333333333"]
    );
    assert_eq!(code(&mut s, "SELECT n / 0 FROM q").await, "22012");
    // A quotient too large for the places it keeps is an error, never a wrong value.
    ok(
        &mut s,
        "UPDATE q SET u = 1000000000000000000000000000 WHERE k = 1",
    )
    .await;
    assert_eq!(
        code(&mut s, "SELECT u / 0.0000000001 FROM q WHERE k = 1").await,
        "22003"
    );
}

/// A query's columns have the types its values have once coerced: a CASE of `1` and a
/// float is a float, though as written it is typed by its first branch. Before, the
/// statement failed (XX000), described its column as int4, or both.
#[tokio::test]
async fn result_columns_are_typed_as_coerced() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE c (k INT PRIMARY KEY)").await;
    ok(&mut s, "INSERT INTO c VALUES (1), (2)").await;
    let sql = "SELECT CASE WHEN k = 1 THEN 1 ELSE 2.5::FLOAT8 END AS v, \
               CASE WHEN k = 1 THEN 1.5 ELSE 2 END AS w FROM c ORDER BY k";
    assert_eq!(rows(&mut s, sql).await, vec!["1.0|1.5", "2.5|2.0"]);
    let prepared = s.prepare(sql, &[]).await.unwrap();
    let schema = prepared.result_schema.unwrap();
    assert_eq!(
        schema.field(0).data_type(),
        &datafusion::arrow::datatypes::DataType::Float64
    );
    assert!(matches!(
        schema.field(1).data_type(),
        datafusion::arrow::datatypes::DataType::Decimal128(_, 1)
    ));
}

/// Where a float meets a numeric (a decimal literal included), the numeric becomes a
/// float8, as PostgreSQL resolves it; DataFusion would make the float a numeric(30,15),
/// failing past 10^15 and comparing below 10^-15 as zero. A literal no decimal holds
/// (`1e300`) is its nearest float8 rather than an error.
#[tokio::test]
async fn floats_meet_numerics_as_float8() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE ff (k INT PRIMARY KEY, f DOUBLE PRECISION, n NUMERIC(10, 2))",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO ff VALUES (1, 1e300, 1.5), (2, 1e-20, 2.5), (3, 0.1, 3)",
    )
    .await;
    let cases: [(&str, Vec<&str>); 14] = [
        ("SELECT k FROM ff WHERE f > 1e20 ORDER BY k", vec!["1"]),
        (
            "SELECT k FROM ff WHERE f < 0.000000000000000001 ORDER BY k",
            vec!["2"],
        ),
        (
            "SELECT k, coalesce(f, 0.0), CASE WHEN k = 1 THEN f ELSE 0.5 END FROM ff ORDER BY k",
            vec!["1|1e300|1e300", "2|1e-20|0.5", "3|0.1|0.5"],
        ),
        (
            "SELECT k FROM ff WHERE f IN (0.1, 1e300) ORDER BY k",
            vec!["1", "3"],
        ),
        ("SELECT k FROM ff WHERE f BETWEEN 0.05 AND 0.2", vec!["3"]),
        (
            "SELECT f FROM ff WHERE k = 2 UNION ALL SELECT 0.5",
            vec!["1e-20", "0.5"],
        ),
        (
            "SELECT x FROM (VALUES (1e-20::FLOAT8), (0.5)) v(x) ORDER BY x",
            vec!["1e-20", "0.5"],
        ),
        (
            "SELECT greatest(f, 0.5), n + f FROM ff ORDER BY k",
            vec!["1e300|1e300", "0.5|2.5", "0.5|3.1"],
        ),
        ("SELECT 1e300, 1e-300", vec!["1e300|1e-300"]),
        // Through a subquery (IN, NOT IN, = ANY) and a join's keys, either side a float.
        (
            "SELECT k FROM ff WHERE f IN (SELECT 1e300 UNION ALL SELECT 0.1) ORDER BY k",
            vec!["1", "3"],
        ),
        (
            "SELECT k FROM ff WHERE f NOT IN (SELECT 0.1) ORDER BY k",
            vec!["1", "2"],
        ),
        (
            "SELECT k FROM ff WHERE f = ANY (SELECT 0.00000000000000000001)",
            vec!["2"],
        ),
        (
            "SELECT k FROM ff WHERE n IN (SELECT 2.5::FLOAT8)",
            vec!["2"],
        ),
        (
            "SELECT k FROM ff JOIN (SELECT 1e-20 AS f) v USING (f)",
            vec!["2"],
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(rows(&mut s, sql).await, want, "{sql}");
    }
}

/// The catalog's size is bounded (`relations_max`, `columns_per_table_max`): CREATE TABLE,
/// CREATE INDEX, CREATE VIEW and ALTER TABLE ADD COLUMN past a bound fail with 54000 or
/// 54011 and change nothing, and dropping makes room again.
#[tokio::test]
async fn the_catalog_is_bounded_in_relations_and_columns() {
    let db = TestDb::with_limits(
        flotilla_sql::SqlConfig::default(),
        flotilla_catalog::CatalogLimits {
            // a, its primary key, a_v, va.
            relations_max: 4,
            columns_per_table_max: 2,
        },
    )
    .await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE a (k INT PRIMARY KEY, v INT)").await;
    assert_eq!(
        code(&mut s, "CREATE TABLE wide (a INT, b INT, c INT)").await,
        "54011"
    );
    assert_eq!(
        code(&mut s, "ALTER TABLE a ADD COLUMN w INT").await,
        "54011"
    );
    ok(&mut s, "CREATE INDEX a_v ON a (v)").await;
    ok(&mut s, "CREATE VIEW va AS SELECT k FROM a").await;
    for sql in [
        "CREATE TABLE b (k INT PRIMARY KEY)",
        "CREATE INDEX a_k ON a (k)",
        "CREATE VIEW vb AS SELECT v FROM a",
    ] {
        assert_eq!(code(&mut s, sql).await, "54000", "{sql}");
    }
    assert_eq!(code(&mut s, "SELECT * FROM b").await, "42P01");
    ok(&mut s, "DROP VIEW va").await;
    ok(&mut s, "DROP INDEX a_v").await;
    ok(&mut s, "CREATE TABLE b (k INT PRIMARY KEY)").await;
    ok(&mut s, "INSERT INTO b VALUES (1)").await;
    assert_eq!(rows(&mut s, "SELECT k FROM b").await, vec!["1"]);
}

/// DISCARD SEQUENCES forgets `currval`/`lastval`; DISCARD ALL also resets settings, and is
/// refused in a transaction block (25001); PLANS and TEMP have nothing to drop.
#[tokio::test]
async fn discard_forgets_session_state() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE SEQUENCE sq").await;
    assert_eq!(rows(&mut s, "SELECT nextval('sq')").await, vec!["1"]);
    assert_eq!(rows(&mut s, "SELECT currval('sq')").await, vec!["1"]);
    assert_eq!(ok(&mut s, "DISCARD SEQUENCES").await, "DISCARD SEQUENCES");
    assert_eq!(code(&mut s, "SELECT currval('sq')").await, "55000");
    assert_eq!(code(&mut s, "SELECT lastval()").await, "55000");
    ok(&mut s, "DISCARD PLANS").await;
    ok(&mut s, "DISCARD TEMP").await;
    ok(&mut s, "SET lock_timeout = 777").await;
    ok(&mut s, "BEGIN").await;
    assert_eq!(code(&mut s, "DISCARD ALL").await, "25001");
    ok(&mut s, "ROLLBACK").await;
    assert_eq!(rows(&mut s, "SHOW lock_timeout").await, vec!["777ms"]);
    assert_eq!(ok(&mut s, "DISCARD ALL").await, "DISCARD ALL");
    assert_ne!(rows(&mut s, "SHOW lock_timeout").await, vec!["777ms"]);
}

/// SELECT ... FOR UPDATE locks the rows it returns until the transaction ends: another
/// writer waits (here past its lock_timeout: 55P03), NOWAIT fails at once, and a row
/// changed after a REPEATABLE READ snapshot fails the lock (40001) rather than being read
/// stale and written back. Before, the clause was accepted and ignored.
/// `FOR SHARE` as PostgreSQL 15 answers it: any number of transactions share a row's
/// lock, and none lets another change, delete or lock the row `FOR UPDATE` until it ends.
#[tokio::test]
async fn for_share_is_shared_by_readers_and_keeps_writers_out() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    let mut w = db.session();
    ok(&mut a, "CREATE TABLE acct (id INT PRIMARY KEY, n INT)").await;
    ok(&mut a, "INSERT INTO acct VALUES (1, 10), (2, 20)").await;
    ok(&mut w, "SET lock_timeout = '100ms'").await;
    ok(&mut b, "SET lock_timeout = '100ms'").await;

    ok(&mut a, "BEGIN").await;
    assert_eq!(
        rows(&mut a, "SELECT n FROM acct WHERE id = 1 FOR SHARE").await,
        vec!["10"]
    );
    ok(&mut b, "BEGIN").await;
    assert_eq!(
        rows(&mut b, "SELECT n FROM acct WHERE id = 1 FOR SHARE NOWAIT").await,
        vec!["10"]
    );
    // Every writer, and FOR UPDATE, waits for both; a third FOR SHARE does not.
    for sql in [
        "UPDATE acct SET n = 0 WHERE id = 1",
        "DELETE FROM acct WHERE id = 1",
        "SELECT n FROM acct WHERE id = 1 FOR UPDATE",
    ] {
        assert_eq!(code(&mut w, sql).await, "55P03", "{sql}");
    }
    assert_eq!(
        rows(&mut w, "SELECT n FROM acct WHERE id = 1 FOR SHARE NOWAIT").await,
        vec!["10"]
    );
    assert_eq!(
        rows(&mut w, "SELECT id FROM acct FOR SHARE SKIP LOCKED").await,
        vec!["1", "2"]
    );
    assert_eq!(
        rows(&mut w, "SELECT id FROM acct FOR UPDATE SKIP LOCKED").await,
        vec!["2"]
    );
    // Readers never wait.
    assert_eq!(
        rows(&mut w, "SELECT n FROM acct WHERE id = 1").await,
        vec!["10"]
    );
    // One holder gone, the other still keeps the row.
    ok(&mut a, "ROLLBACK").await;
    assert_eq!(
        code(&mut w, "UPDATE acct SET n = 0 WHERE id = 1").await,
        "55P03"
    );
    ok(&mut b, "COMMIT").await;
    ok(&mut w, "UPDATE acct SET n = 11 WHERE id = 1").await;

    // A holder alone may write the row: its lock becomes exclusive, and keeps others'
    // FOR SHARE out until it ends. An update that finds the row no longer matching
    // keeps the lock as well.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "SELECT n FROM acct WHERE id = 1 FOR SHARE").await;
    ok(&mut a, "UPDATE acct SET n = 0 WHERE id = 1 AND n = 999").await;
    assert_eq!(
        code(&mut w, "UPDATE acct SET n = 0 WHERE id = 1").await,
        "55P03"
    );
    ok(&mut a, "UPDATE acct SET n = n + 1 WHERE id = 1").await;
    assert_eq!(
        code(&mut w, "SELECT n FROM acct WHERE id = 1 FOR SHARE").await,
        "55P03"
    );
    ok(&mut a, "COMMIT").await;
    assert_eq!(
        rows(&mut w, "SELECT n FROM acct WHERE id = 1 FOR SHARE").await,
        vec!["12"]
    );

    // FOR KEY SHARE and FOR NO KEY UPDATE join each other, not FOR UPDATE and FOR SHARE
    // (PostgreSQL's conflict table).
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "SELECT n FROM acct WHERE id = 1 FOR KEY SHARE").await;
    ok(
        &mut a,
        "SELECT n FROM acct WHERE id = 2 FOR NO KEY UPDATE NOWAIT",
    )
    .await;
    assert_eq!(
        rows(&mut w, "SELECT n FROM acct WHERE id = 1 FOR KEY SHARE").await,
        vec!["12"]
    );
    assert_eq!(
        rows(&mut w, "SELECT n FROM acct WHERE id = 1 FOR NO KEY UPDATE").await,
        vec!["12"]
    );
    assert_eq!(
        code(&mut w, "SELECT n FROM acct WHERE id = 1 FOR UPDATE").await,
        "55P03"
    );
    ok(&mut w, "SELECT n FROM acct WHERE id = 2 FOR KEY SHARE").await;
    assert_eq!(
        code(&mut w, "SELECT n FROM acct WHERE id = 2 FOR SHARE").await,
        "55P03"
    );
    ok(&mut a, "COMMIT").await;
    // The strongest clause naming a table wins among them too; a clause names its kind.
    ok(&mut a, "BEGIN").await;
    ok(
        &mut a,
        "SELECT x.n FROM acct x JOIN acct y ON y.id = x.id + 1 \
         FOR KEY SHARE OF x FOR NO KEY UPDATE OF y FOR SHARE OF x",
    )
    .await;
    ok(&mut w, "SELECT n FROM acct WHERE id = 1 FOR KEY SHARE").await;
    assert_eq!(
        code(&mut w, "SELECT n FROM acct WHERE id = 1 FOR NO KEY UPDATE").await,
        "55P03"
    );
    ok(&mut w, "SELECT n FROM acct WHERE id = 2 FOR KEY SHARE").await;
    assert_eq!(
        code(&mut w, "SELECT n FROM acct WHERE id = 2 FOR SHARE").await,
        "55P03"
    );
    ok(&mut a, "COMMIT").await;
    for (clause, name) in [
        ("FOR KEY SHARE OF nope", "FOR KEY SHARE"),
        ("FOR NO KEY UPDATE OF nope", "FOR NO KEY UPDATE"),
        ("FOR SHARE OF nope", "FOR SHARE"),
    ] {
        let e = run(&mut w, &format!("SELECT n FROM acct {clause}"))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                "42P01",
                format!("relation \"nope\" in {name} clause not found in FROM clause").as_str()
            )
        );
    }

    // The strongest clause naming a table wins.
    ok(&mut a, "BEGIN").await;
    ok(
        &mut a,
        "SELECT * FROM acct x JOIN acct y ON y.id = x.id + 1 FOR SHARE OF x FOR UPDATE OF y",
    )
    .await;
    assert_eq!(
        rows(&mut w, "SELECT n FROM acct WHERE id = 1 FOR SHARE").await,
        vec!["12"]
    );
    assert_eq!(
        code(&mut w, "SELECT n FROM acct WHERE id = 2 FOR SHARE").await,
        "55P03"
    );
    ok(&mut a, "COMMIT").await;

    // REPEATABLE READ: a row changed after the snapshot cannot be locked as read.
    ok(&mut a, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    ok(&mut a, "SELECT n FROM acct WHERE id = 2").await;
    ok(&mut w, "UPDATE acct SET n = 21 WHERE id = 2").await;
    assert_eq!(
        code(&mut a, "SELECT n FROM acct WHERE id = 2 FOR SHARE").await,
        "40001"
    );
    ok(&mut a, "ROLLBACK").await;
}

/// Two holders of a shared lock that both go on to write the row wait for each other:
/// one is refused as a deadlock (40P01), the other then writes, as in PostgreSQL.
#[tokio::test]
async fn two_sharers_writing_their_row_are_a_deadlock_one_of_them_survives() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(&mut a, "CREATE TABLE c (id INT PRIMARY KEY, n INT)").await;
    ok(&mut a, "INSERT INTO c VALUES (1, 0)").await;
    ok(&mut b, "SET lock_timeout = '20s'").await;
    ok(&mut a, "SET lock_timeout = '20s'").await;
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "SELECT * FROM c WHERE id = 1 FOR SHARE").await;
    ok(&mut b, "BEGIN").await;
    ok(&mut b, "SELECT * FROM c WHERE id = 1 FOR SHARE").await;
    let a_task = tokio::spawn(async move {
        let r = run(&mut a, "UPDATE c SET n = n + 1 WHERE id = 1")
            .await
            .map(|_| ())
            .map_err(|e| e.code);
        (a, r)
    });
    let b_result = run(&mut b, "UPDATE c SET n = n + 10 WHERE id = 1")
        .await
        .map(|_| ())
        .map_err(|e| e.code);
    if b_result.is_ok() {
        ok(&mut b, "COMMIT").await;
    } else {
        ok(&mut b, "ROLLBACK").await;
    }
    let (mut a, a_result) = a_task.await.unwrap();
    if a_result.is_ok() {
        ok(&mut a, "COMMIT").await;
    } else {
        ok(&mut a, "ROLLBACK").await;
    }
    let survivor = if a_result.is_ok() { "1" } else { "10" };
    let codes: Vec<_> = [a_result, b_result]
        .into_iter()
        .filter_map(|r| r.err())
        .collect();
    assert_eq!(codes, vec!["40P01"]);
    assert_eq!(rows(&mut a, "SELECT n FROM c").await, vec![survivor]);
}

/// PostgreSQL's key-level row locks: a foreign key check locks its referenced row `FOR
/// KEY SHARE`, and an UPDATE that keeps every key of its row locks it `FOR NO KEY
/// UPDATE`; neither waits for the other, so transactions that add a child and then update
/// its parent (an order and its total) run side by side instead of deadlocking. A
/// delete, or a change of a key, still waits for every reference in flight. Each step
/// was checked against PostgreSQL 15.
#[tokio::test]
async fn foreign_key_checks_and_updates_that_keep_the_key_do_not_wait_for_each_other() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(
        &mut a,
        "CREATE TABLE parent (id INT PRIMARY KEY, total INT, u INT UNIQUE)",
    )
    .await;
    ok(
        &mut a,
        "CREATE TABLE child (id INT PRIMARY KEY, pid INT REFERENCES parent (id))",
    )
    .await;
    ok(
        &mut a,
        "CREATE TABLE by_u (id INT PRIMARY KEY, pu INT REFERENCES parent (u))",
    )
    .await;
    ok(&mut a, "INSERT INTO parent VALUES (1, 0, 10), (2, 0, 20)").await;
    ok(&mut a, "SET lock_timeout = '100ms'").await;
    ok(&mut b, "SET lock_timeout = '100ms'").await;

    // Two orders of one parent, each adding a child, then updating the parent: the first
    // update does not wait for the other's reference; the second waits for the first.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO child VALUES (1, 1)").await;
    ok(&mut b, "BEGIN").await;
    ok(&mut b, "INSERT INTO child VALUES (2, 1)").await;
    ok(&mut a, "UPDATE parent SET total = total + 1 WHERE id = 1").await;
    ok(&mut b, "SET lock_timeout = '20s'").await;
    let b_update = tokio::spawn(async move {
        let r = run(&mut b, "UPDATE parent SET total = total + 1 WHERE id = 1")
            .await
            .map(|_| ())
            .map_err(|e| e.code);
        (b, r)
    });
    ok(&mut a, "COMMIT").await;
    let (mut b, result) = b_update.await.unwrap();
    assert_eq!(result, Ok(()));
    ok(&mut b, "COMMIT").await;
    ok(&mut b, "SET lock_timeout = '100ms'").await;
    assert_eq!(
        rows(
            &mut a,
            "SELECT total, (SELECT count(*) FROM child) FROM parent WHERE id = 1"
        )
        .await,
        vec!["2|2"]
    );

    // An update in flight lets a new reference through; so does one committed since a
    // REPEATABLE READ snapshot.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "UPDATE parent SET total = 5 WHERE id = 1").await;
    ok(&mut b, "INSERT INTO child VALUES (3, 1)").await;
    ok(&mut a, "COMMIT").await;
    ok(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    ok(&mut b, "SELECT 1").await;
    ok(&mut a, "UPDATE parent SET total = 6 WHERE id = 1").await;
    ok(&mut b, "INSERT INTO child VALUES (4, 1)").await;
    ok(&mut b, "COMMIT").await;

    // A reference in flight keeps out a delete and a change of any key of the row (its
    // primary key or a unique column), not an update that sets a key to the value it had.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO child VALUES (5, 2)").await;
    for changes_key in [
        "DELETE FROM parent WHERE id = 2",
        "UPDATE parent SET id = 3 WHERE id = 2",
        "UPDATE parent SET u = 21 WHERE id = 2",
    ] {
        assert_eq!(code(&mut b, changes_key).await, "55P03", "{changes_key}");
    }
    ok(
        &mut b,
        "UPDATE parent SET id = 2, u = 20, total = 1 WHERE id = 2",
    )
    .await;
    ok(&mut b, "UPDATE parent SET u = u, total = 2 WHERE u = 20").await;
    ok(&mut a, "ROLLBACK").await;
    // A reference through a unique column is a lock of that key alone.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO by_u VALUES (1, 20)").await;
    ok(&mut b, "UPDATE parent SET id = 4, total = 3 WHERE id = 2").await;
    assert_eq!(
        code(&mut b, "UPDATE parent SET u = 22 WHERE id = 4").await,
        "55P03"
    );
    ok(&mut a, "COMMIT").await;

    // The locking clauses: FOR KEY SHARE lets FOR NO KEY UPDATE and an update that keeps
    // the key through; FOR NO KEY UPDATE lets FOR KEY SHARE and a reference through.
    ok(&mut a, "BEGIN").await;
    assert_eq!(
        rows(
            &mut a,
            "SELECT total FROM parent p WHERE id = 1 FOR KEY SHARE OF p"
        )
        .await,
        vec!["6"]
    );
    ok(&mut b, "UPDATE parent SET total = 7 WHERE id = 1").await;
    ok(
        &mut b,
        "SELECT * FROM parent WHERE id = 1 FOR NO KEY UPDATE",
    )
    .await;
    for refused in [
        "SELECT * FROM parent WHERE id = 1 FOR UPDATE",
        "DELETE FROM parent WHERE id = 1",
    ] {
        assert_eq!(code(&mut b, refused).await, "55P03", "{refused}");
    }
    ok(&mut a, "ROLLBACK").await;
    ok(&mut a, "BEGIN").await;
    ok(
        &mut a,
        "SELECT * FROM parent WHERE id = 1 FOR NO KEY UPDATE NOWAIT",
    )
    .await;
    ok(&mut b, "SELECT * FROM parent WHERE id = 1 FOR KEY SHARE").await;
    ok(&mut b, "INSERT INTO child VALUES (6, 1)").await;
    for refused in [
        "SELECT * FROM parent WHERE id = 1 FOR SHARE",
        "SELECT * FROM parent WHERE id = 1 FOR NO KEY UPDATE",
        "UPDATE parent SET total = 8 WHERE id = 1",
    ] {
        assert_eq!(code(&mut b, refused).await, "55P03", "{refused}");
    }
    // Made FOR UPDATE in the same transaction, it waits for no reference, as none is
    // in flight; FOR KEY SHARE then waits.
    ok(&mut a, "SELECT * FROM parent WHERE id = 1 FOR UPDATE").await;
    assert_eq!(
        code(&mut b, "SELECT * FROM parent WHERE id = 1 FOR KEY SHARE").await,
        "55P03"
    );
    ok(&mut a, "ROLLBACK").await;

    // REPEATABLE READ: FOR KEY SHARE of a row updated since the snapshot reads the
    // snapshot's version; FOR SHARE and FOR NO KEY UPDATE fail, as PostgreSQL's do.
    for (clause, expected) in [
        ("FOR KEY SHARE", Ok(vec!["7".to_string()])),
        ("FOR SHARE", Err("40001")),
        ("FOR NO KEY UPDATE", Err("40001")),
    ] {
        ok(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
        ok(&mut b, "SELECT 1").await;
        ok(&mut a, "UPDATE parent SET total = total + 1 WHERE id = 1").await;
        ok(&mut a, "UPDATE parent SET total = total - 1 WHERE id = 1").await;
        let got = match run(
            &mut b,
            &format!("SELECT total FROM parent WHERE id = 1 {clause}"),
        )
        .await
        {
            Ok(QueryResult::Rows { batches, .. }) => Ok(batch_rows(&batches)),
            Ok(other) => panic!("{clause}: expected rows, got {other:?}"),
            Err(e) => Err(e.code),
        };
        assert_eq!(got, expected, "{clause}");
        ok(&mut b, "ROLLBACK").await;
    }
}

#[tokio::test]
async fn select_for_update_locks_the_rows_it_returns() {
    let db = TestDb::new().await;
    let mut s = db.session();
    let mut other = db.session();
    ok(&mut s, "CREATE TABLE acct (id INT PRIMARY KEY, n INT)").await;
    ok(&mut s, "INSERT INTO acct VALUES (1, 10), (2, 20), (3, 30)").await;
    ok(&mut other, "SET lock_timeout = '100ms'").await;

    ok(&mut s, "BEGIN").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT n AS v, id FROM acct a WHERE id >= 2 ORDER BY id DESC LIMIT 1 FOR UPDATE OF a"
        )
        .await,
        vec!["30|3"]
    );
    assert_eq!(
        code(&mut other, "UPDATE acct SET n = 0 WHERE id = 3").await,
        "55P03"
    );
    // Only the rows returned are locked.
    ok(&mut other, "UPDATE acct SET n = 21 WHERE id = 2").await;
    ok(&mut other, "BEGIN").await;
    let e = run(
        &mut other,
        "SELECT * FROM acct WHERE id = 3 FOR UPDATE NOWAIT",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "55P03", "{e:?}");
    assert!(e.message.contains("could not obtain lock"), "{e:?}");
    ok(&mut other, "ROLLBACK").await;
    ok(&mut s, "UPDATE acct SET n = n + 1 WHERE id = 3").await;
    ok(&mut s, "COMMIT").await;
    ok(&mut other, "UPDATE acct SET n = n + 1 WHERE id = 3").await;
    assert_eq!(
        rows(&mut s, "SELECT n FROM acct WHERE id = 3").await,
        vec!["32"]
    );

    // A rollback releases the locks too; so does the end of an autocommit statement.
    for (take, end) in [
        ("SELECT id FROM acct WHERE id = 1 FOR SHARE", "ROLLBACK"),
        ("SELECT id FROM acct WHERE id = 1 FOR UPDATE", "COMMIT"),
    ] {
        ok(&mut s, "BEGIN").await;
        assert_eq!(rows(&mut s, take).await, vec!["1"]);
        assert_eq!(
            code(&mut other, "UPDATE acct SET n = 0 WHERE id = 1").await,
            "55P03",
            "{take}"
        );
        ok(&mut s, end).await;
        ok(&mut other, "UPDATE acct SET n = 11 WHERE id = 1").await;
    }
    assert_eq!(
        rows(&mut s, "SELECT * FROM acct WHERE id = 1 FOR UPDATE").await,
        vec!["1|11"]
    );
    ok(&mut other, "UPDATE acct SET n = 10 WHERE id = 1").await;

    // REPEATABLE READ: a row changed after the snapshot cannot be locked as read.
    ok(&mut s, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    assert_eq!(
        rows(&mut s, "SELECT n FROM acct WHERE id = 1").await,
        vec!["10"]
    );
    ok(&mut other, "UPDATE acct SET n = 12 WHERE id = 1").await;
    assert_eq!(
        code(&mut s, "SELECT n FROM acct WHERE id = 1 FOR UPDATE").await,
        "40001"
    );
    ok(&mut s, "ROLLBACK").await;

    // What cannot be locked row by row is refused, never run without its locks.
    for (sql, want) in [
        ("SELECT count(*) FROM acct FOR UPDATE", "0A000"),
        (
            "SELECT n, count(*) FROM acct GROUP BY n FOR UPDATE",
            "0A000",
        ),
        ("SELECT DISTINCT n FROM acct FOR UPDATE", "0A000"),
        ("SELECT * FROM (SELECT id FROM acct) s FOR UPDATE", "0A000"),
        ("SELECT id FROM acct FOR UPDATE OF elsewhere", "42P01"),
        ("SELECT id FROM missing FOR UPDATE", "42P01"),
    ] {
        assert_eq!(code(&mut s, sql).await, want, "{sql}");
    }
    assert_eq!(rows(&mut s, "SELECT sum(n) FROM acct").await, vec!["65"]);
}

/// FOR UPDATE over a join locks the row of each table it names (every table without
/// OF), each once however often the join returns it; SKIP LOCKED leaves out the rows
/// another transaction holds and still fills its LIMIT, as a job queue needs. Before,
/// both were refused (0A000).
#[tokio::test]
async fn for_update_locks_each_joined_table_and_skip_locked_fills_its_limit() {
    let db = TestDb::new().await;
    let mut s = db.session();
    let mut other = db.session();
    let mut third = db.session();
    ok(&mut s, "CREATE TABLE job (id INT PRIMARY KEY, state TEXT)").await;
    ok(
        &mut s,
        "CREATE TABLE worker (id INT PRIMARY KEY, job INT, name TEXT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO job SELECT i, 'new' FROM generate_series(1, 100) AS g(i)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO worker VALUES (1, 1, 'ann'), (2, 2, 'bob'), (3, 2, 'cy')",
    )
    .await;
    for session in [&mut other, &mut third] {
        ok(session, "SET lock_timeout = '100ms'").await;
    }

    // Without OF every table's rows are locked; a row the join returns twice, once.
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT j.id, w.name FROM job j JOIN worker w ON w.job = j.id \
             WHERE j.id <= 2 ORDER BY w.id FOR UPDATE"
        )
        .await,
        vec!["1|ann", "2|bob", "2|cy"]
    );
    for sql in [
        "UPDATE job SET state = 'x' WHERE id = 2",
        "UPDATE worker SET name = 'x' WHERE id = 3",
    ] {
        assert_eq!(code(&mut other, sql).await, "55P03", "{sql}");
    }
    ok(&mut s, "ROLLBACK").await;
    // OF one table locks only its rows, with that table's NOWAIT.
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT w.name FROM job j, worker w WHERE w.job = j.id AND j.id = 1 \
             FOR UPDATE OF w"
        )
        .await,
        vec!["ann"]
    );
    ok(&mut other, "UPDATE job SET state = 'seen' WHERE id = 1").await;
    assert_eq!(
        code(&mut other, "UPDATE worker SET name = 'x' WHERE id = 1").await,
        "55P03"
    );
    assert_eq!(
        code(
            &mut other,
            "SELECT j.id FROM job j JOIN worker w ON w.job = j.id WHERE w.id = 1 \
             FOR UPDATE OF j FOR UPDATE OF w NOWAIT"
        )
        .await,
        "55P03"
    );
    ok(&mut s, "COMMIT").await;
    // The outer side of an outer join can be locked; its nullable side cannot.
    assert_eq!(
        rows(
            &mut s,
            "SELECT j.id, w.name FROM job j LEFT JOIN worker w ON w.job = j.id \
             WHERE j.id IN (1, 3) ORDER BY j.id FOR UPDATE OF j"
        )
        .await,
        vec!["1|ann", "3|NULL"]
    );
    for sql in [
        "SELECT j.id FROM job j LEFT JOIN worker w ON w.job = j.id FOR UPDATE",
        "SELECT j.id FROM job j RIGHT JOIN worker w ON w.job = j.id FOR UPDATE OF j",
        "SELECT j.id FROM job j NATURAL JOIN worker w FOR UPDATE",
        "SELECT j.id FROM job j, generate_series(1, 2) AS g(i) WHERE j.id = g.i FOR UPDATE",
        "SELECT j.id FROM job j, (SELECT job FROM worker) w WHERE w.job = j.id FOR UPDATE",
    ] {
        assert_eq!(code(&mut s, sql).await, "0A000", "{sql}");
    }
    // A WITH query in FROM is not locked (as in PostgreSQL); the tables beside it are.
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        rows(
            &mut s,
            "WITH busy AS (SELECT job FROM worker WHERE name = 'ann') \
             SELECT j.id FROM job j JOIN busy b ON b.job = j.id FOR UPDATE"
        )
        .await,
        vec!["1"]
    );
    assert_eq!(
        code(&mut other, "UPDATE job SET state = 'x' WHERE id = 1").await,
        "55P03"
    );
    ok(&mut other, "UPDATE worker SET name = 'ann' WHERE id = 1").await;
    ok(&mut s, "COMMIT").await;
    // A subquery in FROM that is not locked is fine.
    assert_eq!(
        rows(
            &mut s,
            "SELECT j.id FROM job j, (SELECT job FROM worker) w WHERE w.job = j.id \
             ORDER BY j.id FOR UPDATE OF j"
        )
        .await,
        vec!["1", "2", "2"]
    );

    // SKIP LOCKED: each worker takes the next rows nobody holds.
    let take = "SELECT id FROM job WHERE state = 'new' ORDER BY id LIMIT 2 \
                FOR UPDATE SKIP LOCKED";
    ok(&mut other, "BEGIN").await;
    assert_eq!(rows(&mut other, take).await, vec!["2", "3"]);
    ok(&mut s, "BEGIN").await;
    assert_eq!(rows(&mut s, take).await, vec!["4", "5"]);
    // Rows the transaction holds itself are not skipped; OFFSET's rows (1 and 4) are
    // locked too.
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM job WHERE id <= 8 ORDER BY id OFFSET 2 FOR UPDATE SKIP LOCKED"
        )
        .await,
        vec!["5", "6", "7", "8"]
    );
    assert_eq!(
        rows(
            &mut third,
            "SELECT id FROM job WHERE id <= 9 ORDER BY id FOR UPDATE SKIP LOCKED"
        )
        .await,
        vec!["9"]
    );
    // Far more rows held than asked for: the window widens until the LIMIT is met.
    ok(&mut s, "ROLLBACK").await;
    ok(&mut other, "COMMIT").await;
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM job WHERE id <= 60 ORDER BY id FOR UPDATE"
        )
        .await
        .len(),
        60
    );
    assert_eq!(
        rows(
            &mut third,
            "SELECT id FROM job ORDER BY id LIMIT 3 FOR UPDATE SKIP LOCKED"
        )
        .await,
        vec!["61", "62", "63"]
    );
    // Outside a transaction block the statement's locks end with it.
    assert_eq!(
        ok(&mut other, "UPDATE job SET state = 'x' WHERE id = 61").await,
        "UPDATE 1"
    );
    ok(&mut s, "ROLLBACK").await;

    // A bound LIMIT, as a driver sends it.
    use datafusion::scalar::ScalarValue;
    let prepared = s
        .prepare(
            "SELECT id FROM job ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await
        .unwrap();
    ok(&mut other, "BEGIN").await;
    assert_eq!(
        rows(&mut other, "SELECT id FROM job WHERE id = 1 FOR UPDATE").await,
        vec!["1"]
    );
    ok(&mut s, "BEGIN").await;
    let result = s
        .execute_prepared(&prepared, vec![ScalarValue::Int64(Some(2))])
        .await
        .unwrap();
    let QueryResult::Rows { batches, .. } = result else {
        panic!("a SELECT returns rows");
    };
    let taken: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(taken, 2);
    assert_eq!(
        code(&mut other, "UPDATE job SET state = 'x' WHERE id = 2").await,
        "55P03"
    );
    ok(&mut s, "COMMIT").await;
    ok(&mut other, "COMMIT").await;

    // The job queue: a locking subquery runs first and takes the next free row, so two
    // workers take two jobs at once rather than one waiting for the other.
    let claim = "UPDATE job SET state = 'taken' WHERE id = (SELECT id FROM job \
                 WHERE state = 'new' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id";
    ok(&mut s, "BEGIN").await;
    ok(&mut other, "BEGIN").await;
    assert_eq!(rows(&mut s, claim).await, vec!["2"]);
    assert_eq!(rows(&mut other, claim).await, vec!["3"]);
    assert_eq!(
        rows(
            &mut third,
            "DELETE FROM job WHERE id IN (SELECT id FROM job WHERE state = 'new' \
             ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED) RETURNING id"
        )
        .await,
        vec!["4", "5"]
    );
    ok(&mut s, "COMMIT").await;
    ok(&mut other, "COMMIT").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT state, count(*) FROM job WHERE id BETWEEN 2 AND 5 GROUP BY state"
        )
        .await,
        vec!["taken|2"]
    );
    // EXISTS locks what it finds; a subquery finding nothing is NULL (no row matches).
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT 1 WHERE EXISTS (SELECT id FROM job WHERE id = 6 FOR UPDATE)"
        )
        .await,
        vec!["1"]
    );
    assert_eq!(
        code(&mut other, "UPDATE job SET state = 'x' WHERE id = 6").await,
        "55P03"
    );
    assert_eq!(
        ok(
            &mut s,
            "UPDATE job SET state = 'x' WHERE id = (SELECT id FROM job WHERE id = 5 FOR UPDATE)"
        )
        .await,
        "UPDATE 0"
    );
    ok(&mut s, "COMMIT").await;
    // EXPLAIN takes no lock.
    ok(&mut s, "BEGIN").await;
    ok(
        &mut s,
        "EXPLAIN SELECT id FROM job WHERE id IN (SELECT id FROM job WHERE id = 7 FOR UPDATE)",
    )
    .await;
    ok(&mut other, "UPDATE job SET state = 'x' WHERE id = 7").await;
    ok(&mut s, "COMMIT").await;
    // Locking queries it cannot run first are refused, never run without their locks.
    for (sql, want) in [
        ("SELECT * FROM (SELECT id FROM job FOR UPDATE) s", "0A000"),
        (
            "SELECT id FROM job j WHERE id = (SELECT w.job FROM worker w \
             WHERE w.job = j.id FOR UPDATE)",
            "0A000",
        ),
        (
            "SELECT id FROM job WHERE id = (SELECT id FROM job WHERE id < 9 FOR UPDATE)",
            "21000",
        ),
        (
            "SELECT id FROM job WHERE id IN (SELECT id, state FROM job FOR UPDATE)",
            "42601",
        ),
    ] {
        assert_eq!(code(&mut s, sql).await, want, "{sql}");
    }
}

/// `information_schema` describes the catalog as tools and ORMs read it: tables and
/// views, columns with PostgreSQL's type names, sequences, and the constraints with their
/// columns. Before, the schema did not exist (42P01).
#[tokio::test]
async fn information_schema_describes_the_catalog() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE item (id SERIAL PRIMARY KEY, name VARCHAR(40) NOT NULL UNIQUE, \
         price NUMERIC(10, 2) DEFAULT 0, at TIMESTAMPTZ, CHECK (price >= 0))",
    )
    .await;
    ok(
        &mut s,
        "CREATE TABLE tag (item INT REFERENCES item, label TEXT, PRIMARY KEY (item, label))",
    )
    .await;
    ok(
        &mut s,
        "CREATE TABLE note (id INT PRIMARY KEY, item_name VARCHAR(40), tag_item INT, \
         tag_label TEXT, FOREIGN KEY (item_name) REFERENCES item (name), \
         CONSTRAINT on_tag FOREIGN KEY (tag_label, tag_item) REFERENCES tag (label, item))",
    )
    .await;
    ok(
        &mut s,
        "CREATE VIEW cheap AS SELECT id FROM item WHERE price < 1",
    )
    .await;
    ok(&mut s, "CREATE SEQUENCE tickets").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_catalog = current_database() \
             ORDER BY table_name"
        )
        .await,
        vec![
            "cheap|VIEW",
            "item|BASE TABLE",
            "note|BASE TABLE",
            "tag|BASE TABLE"
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT column_name, ordinal_position, data_type, is_nullable, \
             character_maximum_length, numeric_precision, numeric_scale, udt_name, \
             column_default FROM information_schema.columns WHERE table_name = 'item' \
             ORDER BY ordinal_position"
        )
        .await,
        vec![
            "id|1|integer|NO|NULL|32|0|int4|nextval('item_id_seq')",
            "name|2|character varying|NO|40|NULL|NULL|varchar|NULL",
            "price|3|numeric|YES|NULL|10|2|numeric|0",
            "at|4|timestamp with time zone|YES|NULL|NULL|NULL|timestamptz|NULL"
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT constraint_type, count(*) FROM information_schema.table_constraints \
             WHERE table_name = 'item' GROUP BY constraint_type ORDER BY constraint_type"
        )
        .await,
        vec!["CHECK|1", "PRIMARY KEY|1", "UNIQUE|1"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT k.column_name, k.ordinal_position \
             FROM information_schema.table_constraints c \
             JOIN information_schema.key_column_usage k \
               ON c.constraint_name = k.constraint_name AND c.table_name = k.table_name \
             WHERE c.table_name = 'tag' AND c.constraint_type = 'PRIMARY KEY' \
             ORDER BY k.ordinal_position"
        )
        .await,
        vec!["item|1", "label|2"]
    );
    // Foreign keys as the usual introspection query joins them (PostgreSQL 15 answers
    // exactly this).
    assert_eq!(
        rows(
            &mut s,
            "SELECT tc.table_name, tc.constraint_name, kcu.column_name, kcu.ordinal_position, \
             kcu.position_in_unique_constraint, ccu.table_name, ccu.column_name, \
             rc.unique_constraint_name, rc.match_option, rc.update_rule, rc.delete_rule \
             FROM information_schema.table_constraints tc \
             JOIN information_schema.key_column_usage kcu \
               ON tc.constraint_name = kcu.constraint_name AND tc.table_name = kcu.table_name \
             JOIN information_schema.referential_constraints rc \
               ON rc.constraint_name = tc.constraint_name \
             JOIN information_schema.constraint_column_usage ccu \
               ON ccu.constraint_name = tc.constraint_name \
             WHERE tc.constraint_type = 'FOREIGN KEY' ORDER BY 1, 2, 4, 7"
        )
        .await,
        vec![
            "note|note_item_name_fkey|item_name|1|1|item|name|item_name_key|NONE|NO ACTION|NO ACTION",
            "note|on_tag|tag_label|1|2|tag|item|tag_pkey|NONE|NO ACTION|NO ACTION",
            "note|on_tag|tag_label|1|2|tag|label|tag_pkey|NONE|NO ACTION|NO ACTION",
            "note|on_tag|tag_item|2|1|tag|item|tag_pkey|NONE|NO ACTION|NO ACTION",
            "note|on_tag|tag_item|2|1|tag|label|tag_pkey|NONE|NO ACTION|NO ACTION",
            "tag|tag_item_fkey|item|1|1|item|id|item_pkey|NONE|NO ACTION|NO ACTION",
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT constraint_name, table_name, column_name \
             FROM information_schema.constraint_column_usage \
             WHERE table_name IN ('item', 'tag') ORDER BY 1, 3"
        )
        .await,
        vec![
            "item_name_key|item|name",
            "item_pkey|item|id",
            "item_price_check|item|price",
            "note_item_name_fkey|item|name",
            "on_tag|tag|item",
            "on_tag|tag|label",
            "tag_item_fkey|item|id",
            "tag_pkey|tag|item",
            "tag_pkey|tag|label",
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT sequence_name, start_value, increment FROM information_schema.sequences \
             ORDER BY sequence_name"
        )
        .await,
        vec!["item_id_seq|1|1", "tickets|1|1"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT schema_name FROM information_schema.schemata ORDER BY schema_name"
        )
        .await,
        vec!["information_schema", "pg_catalog", "public"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT view_definition IS NOT NULL FROM information_schema.views"
        )
        .await,
        vec!["true"]
    );
}

#[tokio::test]
async fn offset_fetch_first_limits_rows_as_limit_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE f (id INT PRIMARY KEY)").await;
    ok(&mut s, "INSERT INTO f VALUES (1), (2), (3), (4)").await;
    for (sql, want) in [
        (
            "SELECT id FROM f ORDER BY id FETCH FIRST 2 ROWS ONLY",
            vec!["1", "2"],
        ),
        (
            "SELECT id FROM f ORDER BY id OFFSET 1 ROWS FETCH NEXT 2 ROWS ONLY",
            vec!["2", "3"],
        ),
        // No count is one row; NULL is no limit, as LIMIT NULL.
        (
            "SELECT id FROM f ORDER BY id FETCH FIRST ROW ONLY",
            vec!["1"],
        ),
        (
            "SELECT id FROM f ORDER BY id FETCH FIRST NULL ROWS ONLY",
            vec!["1", "2", "3", "4"],
        ),
        (
            "SELECT count(*) FROM (SELECT id FROM f ORDER BY id DESC \
             FETCH FIRST 3 ROWS ONLY) s WHERE id > 1",
            vec!["3"],
        ),
    ] {
        assert_eq!(rows(&mut s, sql).await, want, "{sql}");
    }
    ok(
        &mut s,
        "CREATE VIEW top_f AS SELECT id FROM f ORDER BY id DESC FETCH FIRST 1 ROW ONLY",
    )
    .await;
    assert_eq!(rows(&mut s, "SELECT id FROM top_f").await, vec!["4"]);
    for (sql, want) in [
        ("SELECT id FROM f LIMIT 1 FETCH FIRST 1 ROWS ONLY", "42601"),
        ("SELECT id FROM f FETCH FIRST 1 ROWS WITH TIES", "42601"),
        (
            "SELECT id FROM f ORDER BY id FETCH FIRST 1 ROWS WITH TIES",
            "0A000",
        ),
        ("SELECT id FROM f LIMIT -1", "2201W"),
        ("SELECT id FROM f OFFSET -1", "2201X"),
    ] {
        assert_eq!(code(&mut s, sql).await, want, "{sql}");
    }
}

#[tokio::test]
async fn data_modifying_with_queries_run_once_before_the_main_statement() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE live (id INT PRIMARY KEY, v TEXT)").await;
    ok(&mut s, "CREATE TABLE archive (id INT PRIMARY KEY, v TEXT)").await;
    ok(
        &mut s,
        "INSERT INTO live VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')",
    )
    .await;
    // Rows move from one table to another in one statement.
    assert_eq!(
        ok(
            &mut s,
            "WITH moved AS (DELETE FROM live WHERE id <= 2 RETURNING *) \
             INSERT INTO archive SELECT * FROM moved"
        )
        .await,
        "INSERT 0 2"
    );
    assert_eq!(
        rows(&mut s, "SELECT id FROM live ORDER BY id").await,
        vec!["3", "4"]
    );
    assert_eq!(
        rows(&mut s, "SELECT id, v FROM archive ORDER BY id").await,
        vec!["1|a", "2|b"]
    );
    // A column list names the RETURNING columns; the main statement may be a SELECT.
    assert_eq!(
        rows(
            &mut s,
            "WITH d(k, val) AS (UPDATE live SET v = 'z' WHERE id = 3 RETURNING id, v) \
             SELECT k, val FROM d"
        )
        .await,
        vec!["3|z"]
    );
    // A data-modifying WITH query runs even if nothing reads it.
    ok(
        &mut s,
        "WITH gone AS (DELETE FROM archive WHERE id = 1) SELECT 1",
    )
    .await;
    assert_eq!(rows(&mut s, "SELECT id FROM archive").await, vec!["2"]);
    // A read-only WITH query feeds a data-modifying one, and one stands before a DELETE.
    assert_eq!(
        rows(
            &mut s,
            "WITH src AS (SELECT 10 AS id, 'x' AS v), \
             ins AS (INSERT INTO live SELECT * FROM src RETURNING id) \
             SELECT count(*) FROM ins"
        )
        .await,
        vec!["1"]
    );
    assert_eq!(
        rows(
            &mut s,
            "WITH x AS (SELECT 3 AS id) DELETE FROM live WHERE id IN (SELECT id FROM x) \
             RETURNING v"
        )
        .await,
        vec!["z"]
    );
    // Two plain INSERTs into one table read nothing of it: both stand.
    assert_eq!(
        ok(
            &mut s,
            "WITH a AS (INSERT INTO archive VALUES (50, 'p') RETURNING id) \
             INSERT INTO archive SELECT id + 1, 'q' FROM a"
        )
        .await,
        "INSERT 0 1"
    );
    assert_eq!(
        rows(&mut s, "SELECT id FROM archive ORDER BY id").await,
        vec!["2", "50", "51"]
    );
    // The statement is atomic: the main INSERT's duplicate key undoes the DELETE.
    assert_eq!(
        code(
            &mut s,
            "WITH d AS (DELETE FROM live RETURNING id, v) \
             INSERT INTO archive SELECT 2, v FROM d"
        )
        .await,
        "23505"
    );
    assert_eq!(
        rows(&mut s, "SELECT id FROM live ORDER BY id").await,
        vec!["4", "10"]
    );
    // Refused before anything runs: a WITH query read without RETURNING, one below the
    // top level, and a table one part changes and another reads (PostgreSQL would read
    // it as before the change).
    for sql in [
        "WITH d AS (DELETE FROM live) SELECT * FROM d",
        "SELECT * FROM (WITH d AS (DELETE FROM live RETURNING *) SELECT * FROM d) s",
        "INSERT INTO archive WITH d AS (DELETE FROM live RETURNING *) SELECT * FROM d",
        "WITH d AS (DELETE FROM live WHERE id = 4 RETURNING *) SELECT count(*) FROM live",
        "WITH d AS (DELETE FROM live RETURNING *) UPDATE live SET v = 'w'",
    ] {
        assert_eq!(code(&mut s, sql).await, "0A000", "{sql}");
    }
    assert_eq!(
        rows(&mut s, "SELECT id FROM live ORDER BY id").await,
        vec!["4", "10"]
    );
    // Prepared, with a parameter inside the WITH query; ROLLBACK undoes it.
    let del = s
        .prepare(
            "WITH d AS (DELETE FROM live WHERE id = $1 RETURNING v) SELECT v FROM d",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        del.param_types,
        vec![datafusion::arrow::datatypes::DataType::Int32]
    );
    assert_eq!(del.result_schema.as_ref().unwrap().fields().len(), 1);
    ok(&mut s, "BEGIN").await;
    let r = s
        .execute_prepared(&del, vec![datafusion::scalar::ScalarValue::Int32(Some(4))])
        .await
        .unwrap();
    assert!(
        matches!(r, QueryResult::Rows { ref tag, .. } if tag == "SELECT 1"),
        "{r:?}"
    );
    assert_eq!(rows(&mut s, "SELECT id FROM live").await, vec!["10"]);
    ok(&mut s, "ROLLBACK").await;
    assert_eq!(
        rows(&mut s, "SELECT id FROM live ORDER BY id").await,
        vec!["4", "10"]
    );
    // A part before the change reads the table as it was, as on PostgreSQL's one
    // snapshot: a recursive WITH query picks the rows, a later one deletes them.
    ok(&mut s, "CREATE TABLE tree (id INT PRIMARY KEY, parent INT)").await;
    ok(
        &mut s,
        "INSERT INTO tree VALUES (1, NULL), (2, 1), (3, 2), (4, NULL)",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "WITH RECURSIVE sub AS (SELECT id FROM tree WHERE id = 1              UNION ALL SELECT t.id FROM tree t JOIN sub ON t.parent = sub.id),              before AS (SELECT count(*) AS n FROM tree),              pruned AS (DELETE FROM tree WHERE id IN (SELECT id FROM sub) RETURNING id)              SELECT (SELECT n FROM before), count(*) FROM pruned"
        )
        .await,
        vec!["4|3"]
    );
    assert_eq!(rows(&mut s, "SELECT id FROM tree").await, vec!["4"]);
}

#[tokio::test]
async fn an_uncorrelated_exists_outside_where_is_evaluated() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE ex (id INT PRIMARY KEY, k TEXT)").await;
    ok(&mut s, "INSERT INTO ex VALUES (1, 'a'), (2, 'b')").await;
    // It binds no outer column, so its per-row call has no arguments (this was refused
    // as "does not support zero arguments").
    for (sql, want) in [
        (
            "SELECT EXISTS (SELECT 1 FROM ex WHERE k = 'a')",
            vec!["true"],
        ),
        ("SELECT NOT EXISTS (SELECT 1 FROM ex)", vec!["false"]),
        ("SELECT EXISTS (SELECT 1)", vec!["true"]),
        (
            "SELECT id, EXISTS (SELECT 1 FROM ex WHERE k = 'z') FROM ex ORDER BY id",
            vec!["1|false", "2|false"],
        ),
        (
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM ex WHERE id = 2) THEN 'y' ELSE 'n' END",
            vec!["y"],
        ),
    ] {
        assert_eq!(rows(&mut s, sql).await, want, "{sql}");
    }
}

/// The SQLSTATE and the DETAIL of a statement's error.
async fn error_detail(session: &mut Session, sql: &str) -> (&'static str, String) {
    match run(session, sql).await {
        Ok(r) => panic!("{sql}: expected an error, got {r:?}"),
        Err(e) => (e.code, e.detail.unwrap_or_default()),
    }
}

#[tokio::test]
async fn foreign_keys_refuse_missing_and_still_referenced_keys() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE parent (id INT PRIMARY KEY, code TEXT UNIQUE, v INT)",
    )
    .await;
    ok(
        &mut s,
        "CREATE TABLE child (id INT PRIMARY KEY, pid INT REFERENCES parent, \
         pcode VARCHAR(10), note TEXT, FOREIGN KEY (pcode) REFERENCES parent (code))",
    )
    .await;
    ok(&mut s, "INSERT INTO parent VALUES (1, 'a', 0), (2, 'b', 0)").await;
    ok(&mut s, "INSERT INTO child VALUES (1, 1, 'a', NULL)").await;
    assert_eq!(
        error_detail(&mut s, "INSERT INTO child VALUES (2, 3, NULL, NULL)").await,
        (
            "23503",
            "Key (pid)=(3) is not present in table \"parent\".".to_string()
        )
    );
    // MATCH SIMPLE: a NULL key references nothing.
    ok(&mut s, "INSERT INTO child VALUES (3, NULL, NULL, NULL)").await;
    assert_eq!(
        code(&mut s, "INSERT INTO child VALUES (4, 2, 'zz', NULL)").await,
        "23503"
    );
    // One bad row stops the whole statement.
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO child VALUES (5, 2, 'b', NULL), (6, 9, NULL, NULL)"
        )
        .await,
        "23503"
    );
    assert_eq!(rows(&mut s, "SELECT count(*) FROM child").await, vec!["2"]);
    assert_eq!(
        code(&mut s, "UPDATE child SET pid = 9 WHERE id = 1").await,
        "23503"
    );
    ok(&mut s, "UPDATE child SET note = 'x' WHERE id = 1").await;
    assert_eq!(
        error_detail(&mut s, "DELETE FROM parent WHERE id = 1").await,
        (
            "23503",
            "Key (id)=(1) is still referenced from table \"child\".".to_string()
        )
    );
    assert_eq!(
        code(&mut s, "UPDATE parent SET id = 10 WHERE id = 1").await,
        "23503"
    );
    assert_eq!(
        code(&mut s, "UPDATE parent SET code = 'c' WHERE id = 1").await,
        "23503"
    );
    // Keys that stay, and keys nobody references, change freely.
    ok(&mut s, "UPDATE parent SET v = 5 WHERE id = 1").await;
    ok(
        &mut s,
        "UPDATE parent SET id = 20, code = 'bb' WHERE id = 2",
    )
    .await;
    ok(&mut s, "DELETE FROM parent WHERE id = 20").await;
    // The transaction's own writes count: references deleted first, then their row.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "DELETE FROM child WHERE id = 1").await;
    ok(&mut s, "DELETE FROM parent WHERE id = 1").await;
    ok(&mut s, "COMMIT").await;
    // ... and a row referenced in the transaction that wrote it.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO parent VALUES (7, 'g', 0)").await;
    ok(&mut s, "INSERT INTO child VALUES (7, 7, 'g', NULL)").await;
    ok(&mut s, "COMMIT").await;
    // Upserts: the insert and the update are both checked.
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO child VALUES (8, 99, NULL, NULL) ON CONFLICT (id) DO NOTHING"
        )
        .await,
        "23503"
    );
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO child VALUES (7, 99, NULL, NULL) ON CONFLICT (id) \
             DO UPDATE SET pid = excluded.pid"
        )
        .await,
        "23503"
    );
    assert_eq!(
        rows(&mut s, "SELECT id, pid, pcode FROM child ORDER BY id").await,
        vec!["3|NULL|NULL", "7|7|g"]
    );

    // A table referencing itself: rows of one statement may reference each other.
    ok(
        &mut s,
        "CREATE TABLE tree (id INT PRIMARY KEY, up INT REFERENCES tree (id))",
    )
    .await;
    ok(&mut s, "INSERT INTO tree VALUES (1, NULL), (2, 1), (3, 2)").await;
    assert_eq!(
        code(&mut s, "INSERT INTO tree VALUES (4, 5)").await,
        "23503"
    );
    assert_eq!(code(&mut s, "DELETE FROM tree WHERE id = 2").await, "23503");
    assert_eq!(ok(&mut s, "DELETE FROM tree").await, "DELETE 3");

    // Integer keys of different widths: a key a SMALLINT cannot hold is referenced by
    // no row.
    ok(&mut s, "CREATE TABLE big (id BIGINT PRIMARY KEY)").await;
    ok(&mut s, "CREATE TABLE small (s SMALLINT REFERENCES big)").await;
    ok(&mut s, "INSERT INTO big VALUES (100000), (5)").await;
    ok(&mut s, "INSERT INTO small VALUES (5)").await;
    assert_eq!(code(&mut s, "INSERT INTO small VALUES (6)").await, "23503");
    ok(&mut s, "DELETE FROM big WHERE id = 100000").await;
    assert_eq!(code(&mut s, "DELETE FROM big WHERE id = 5").await, "23503");
}

#[tokio::test]
async fn foreign_key_definitions_are_checked_and_protect_what_they_reference() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE parent (id INT PRIMARY KEY, code TEXT UNIQUE, v INT)",
    )
    .await;
    ok(&mut s, "CREATE TABLE nopk (id INT)").await;
    ok(&mut s, "CREATE VIEW pv AS SELECT id FROM parent").await;
    for (sql, expected) in [
        ("CREATE TABLE c (p INT REFERENCES nosuch)", "42P01"),
        ("CREATE TABLE c (p INT REFERENCES pv)", "42809"),
        ("CREATE TABLE c (p INT REFERENCES nopk)", "42830"),
        ("CREATE TABLE c (p INT REFERENCES parent (v))", "42830"),
        ("CREATE TABLE c (p INT REFERENCES parent (nosuch))", "42703"),
        ("CREATE TABLE c (p TEXT REFERENCES parent)", "42804"),
        (
            "CREATE TABLE c (p INT, q INT, FOREIGN KEY (p, q) REFERENCES parent (id))",
            "42830",
        ),
        (
            "CREATE TABLE c (p INT, FOREIGN KEY (nosuch) REFERENCES parent)",
            "42703",
        ),
        (
            "CREATE TABLE c (p INT REFERENCES parent MATCH FULL ON DELETE CASCADE)",
            "0A000",
        ),
        (
            "CREATE TABLE c (p INT REFERENCES parent NOT DEFERRABLE INITIALLY DEFERRED)",
            "42601",
        ),
        (
            "CREATE TABLE c (p INT, CONSTRAINT k CHECK (p > 0), \
             CONSTRAINT k FOREIGN KEY (p) REFERENCES parent)",
            "42710",
        ),
    ] {
        assert_eq!(code(&mut s, sql).await, expected, "{sql}");
    }
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM pg_class WHERE relname = 'c'").await,
        vec!["0"],
        "a refused definition created nothing"
    );
    ok(
        &mut s,
        "CREATE TABLE child (id INT PRIMARY KEY, pid INT REFERENCES parent ON DELETE RESTRICT, \
         pcode TEXT, CONSTRAINT by_code FOREIGN KEY (pcode) REFERENCES parent (code) \
         ON UPDATE NO ACTION NOT DEFERRABLE)",
    )
    .await;
    ok(&mut s, "INSERT INTO parent VALUES (1, 'a', 0)").await;
    ok(&mut s, "INSERT INTO child VALUES (1, 1, 'a')").await;
    // What the constraints reference stays.
    assert_eq!(code(&mut s, "DROP TABLE parent").await, "2BP01");
    assert_eq!(code(&mut s, "TRUNCATE parent").await, "0A000");
    assert_eq!(
        code(&mut s, "ALTER TABLE parent DROP COLUMN code").await,
        "2BP01"
    );
    assert_eq!(
        code(&mut s, "ALTER TABLE parent DROP CONSTRAINT parent_code_key").await,
        "2BP01"
    );
    assert_eq!(rows(&mut s, "SELECT count(*) FROM parent").await, vec!["1"]);
    // Dropping a constraint, or the referencing column, ends its checks.
    ok(&mut s, "ALTER TABLE child DROP CONSTRAINT child_pid_fkey").await;
    assert_eq!(
        code(&mut s, "ALTER TABLE child DROP CONSTRAINT child_pid_fkey").await,
        "42704"
    );
    ok(&mut s, "INSERT INTO child VALUES (2, 99, NULL)").await;
    assert_eq!(code(&mut s, "DELETE FROM parent").await, "23503");
    ok(&mut s, "ALTER TABLE child DROP COLUMN pcode").await;
    ok(&mut s, "DELETE FROM parent").await;
    ok(&mut s, "TRUNCATE parent").await;
    ok(&mut s, "DROP TABLE parent").await;
    // A table referencing itself may be dropped.
    ok(
        &mut s,
        "CREATE TABLE tree (id INT PRIMARY KEY, up INT REFERENCES tree)",
    )
    .await;
    ok(&mut s, "DROP TABLE tree").await;
}

/// A reference and a delete of the row it references never both commit: whichever locks
/// the row's key second waits for the first, then sees what it did.
/// References to one row share its lock, as PostgreSQL's `FOR KEY SHARE` lets them: two
/// transactions add children of one parent at once, while a delete of the parent waits
/// for both and then finds their children.
#[tokio::test]
async fn references_to_one_row_share_its_lock_and_a_delete_waits_for_them_all() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    let mut w = db.session();
    ok(
        &mut a,
        "CREATE TABLE parent (id INT PRIMARY KEY, note TEXT)",
    )
    .await;
    ok(
        &mut a,
        "CREATE TABLE child (id INT PRIMARY KEY, pid INT REFERENCES parent)",
    )
    .await;
    ok(&mut a, "INSERT INTO parent VALUES (1, 'x'), (2, 'y')").await;
    ok(&mut b, "SET lock_timeout = '100ms'").await;
    ok(&mut w, "SET lock_timeout = '100ms'").await;

    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO child VALUES (1, 1)").await;
    ok(&mut b, "BEGIN").await;
    ok(&mut b, "INSERT INTO child VALUES (2, 1)").await;
    ok(&mut b, "INSERT INTO child VALUES (3, 1)").await;
    assert_eq!(
        code(&mut w, "DELETE FROM parent WHERE id = 1").await,
        "55P03"
    );
    assert_eq!(
        code(&mut w, "UPDATE parent SET id = 9 WHERE id = 1").await,
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
        rows(&mut w, "SELECT id, pid FROM child ORDER BY id").await,
        vec!["1|1", "2|1", "3|1"]
    );

    // A transaction whose first lock is a shared one (its primary) commits its writes.
    ok(&mut a, "BEGIN").await;
    assert_eq!(
        rows(&mut a, "SELECT note FROM parent WHERE id = 2 FOR SHARE").await,
        vec!["y"]
    );
    ok(&mut a, "INSERT INTO child VALUES (4, 2)").await;
    ok(&mut b, "BEGIN").await;
    ok(&mut b, "INSERT INTO child VALUES (5, 2)").await;
    ok(&mut b, "COMMIT").await;
    ok(&mut a, "COMMIT").await;
    assert_eq!(
        rows(&mut w, "SELECT id FROM child WHERE pid = 2 ORDER BY id").await,
        vec!["4", "5"]
    );
    // Every lock went with its transaction.
    ok(&mut w, "DELETE FROM child WHERE pid = 2").await;
    ok(&mut w, "DELETE FROM parent WHERE id = 2").await;
}

#[tokio::test]
async fn a_reference_and_a_delete_of_its_row_never_both_commit() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(
        &mut a,
        "CREATE TABLE parent (id INT PRIMARY KEY, code TEXT UNIQUE, v INT)",
    )
    .await;
    ok(
        &mut a,
        "CREATE TABLE child (id INT PRIMARY KEY, pid INT REFERENCES parent, \
         pcode TEXT REFERENCES parent (code))",
    )
    .await;
    ok(
        &mut a,
        "INSERT INTO parent VALUES (1, 'a', 0), (2, 'b', 0), (3, 'c', 0), (4, 'd', 0)",
    )
    .await;

    // The reference first: the delete waits for it, then finds it.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO child VALUES (1, 1, NULL)").await;
    // It waits (here, until its lock timeout) ...
    ok(&mut b, "SET lock_timeout = '100ms'").await;
    assert_eq!(
        code(&mut b, "DELETE FROM parent WHERE id = 1").await,
        "55P03"
    );
    ok(&mut b, "SET lock_timeout = '20s'").await;
    // ... and once the reference commits, fails.
    let deleter = tokio::spawn(async move {
        let c = code(&mut b, "DELETE FROM parent WHERE id = 1").await;
        (b, c)
    });
    ok(&mut a, "COMMIT").await;
    let (mut b, c) = deleter.await.unwrap();
    assert_eq!(c, "23503");

    // The delete first: the reference waits for it, then (READ COMMITTED re-runs the
    // statement) finds the row gone.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "DELETE FROM parent WHERE id = 2").await;
    ok(&mut b, "SET lock_timeout = '100ms'").await;
    assert_eq!(
        code(&mut b, "INSERT INTO child VALUES (2, 2, NULL)").await,
        "55P03"
    );
    ok(&mut b, "SET lock_timeout = '20s'").await;
    let inserter = tokio::spawn(async move {
        let c = code(&mut b, "INSERT INTO child VALUES (2, 2, NULL)").await;
        (b, c)
    });
    ok(&mut a, "COMMIT").await;
    let (mut b, c) = inserter.await.unwrap();
    assert_eq!(c, "23503");

    // Under REPEATABLE READ the reference cannot see the newer state: 40001.
    ok(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    ok(&mut b, "SELECT count(*) FROM parent").await;
    ok(&mut a, "DELETE FROM parent WHERE id = 3").await;
    assert_eq!(
        code(&mut b, "INSERT INTO child VALUES (3, 3, NULL)").await,
        "40001"
    );
    ok(&mut b, "ROLLBACK").await;

    // A reference through a unique index locks that index entry only: an update of the
    // row's other columns goes ahead while the referencing transaction is open.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO child VALUES (4, NULL, 'd')").await;
    ok(&mut b, "SET lock_timeout = '100ms'").await;
    assert_eq!(
        ok(&mut b, "UPDATE parent SET v = v + 1 WHERE code = 'd'").await,
        "UPDATE 1"
    );
    ok(&mut a, "COMMIT").await;
    assert_eq!(
        rows(
            &mut a,
            "SELECT c.id, p.v FROM child c JOIN parent p ON p.code = c.pcode"
        )
        .await,
        vec!["4|1"]
    );
    assert_eq!(
        code(&mut b, "DELETE FROM parent WHERE id = 4").await,
        "23503"
    );
}

/// ON DELETE and ON UPDATE actions change the referencing rows as PostgreSQL 15's do
/// (each result here is what PostgreSQL gives for the same statements).
#[tokio::test]
async fn foreign_key_actions_change_the_referencing_rows() {
    let db = TestDb::new().await;
    let mut s = db.session();
    for sql in [
        "CREATE TABLE parent (id INT PRIMARY KEY, code TEXT UNIQUE)",
        "CREATE TABLE kids (id INT PRIMARY KEY, \
         pid INT REFERENCES parent ON DELETE CASCADE ON UPDATE CASCADE, note TEXT)",
        "CREATE TABLE grandkids (id INT PRIMARY KEY, kid INT REFERENCES kids ON DELETE CASCADE)",
        "CREATE TABLE notes (id INT PRIMARY KEY, pid INT DEFAULT 0 \
         REFERENCES parent ON DELETE SET DEFAULT ON UPDATE SET DEFAULT)",
        "CREATE TABLE tags (id INT PRIMARY KEY, pcode TEXT \
         REFERENCES parent (code) ON DELETE SET NULL ON UPDATE SET NULL)",
        "INSERT INTO parent VALUES (0, 'z'), (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e')",
        "INSERT INTO kids VALUES (10, 1, NULL), (11, 1, NULL), (12, 2, NULL), (14, 4, NULL), \
         (115, 5, NULL), (16, NULL, NULL)",
        "INSERT INTO grandkids VALUES (100, 10), (101, 11), (102, 12)",
        "INSERT INTO notes VALUES (20, 1), (21, 2), (22, NULL)",
        "INSERT INTO tags VALUES (30, 'a'), (31, 'c'), (32, 'b')",
    ] {
        ok(&mut s, sql).await;
    }
    // A delete cascades through two tables, sets a default, and sets NULL; the tag
    // counts the statement's own rows.
    assert_eq!(
        ok(&mut s, "DELETE FROM parent WHERE id = 1").await,
        "DELETE 1"
    );
    assert_eq!(
        rows(&mut s, "SELECT id, pid FROM kids ORDER BY id").await,
        vec!["12|2", "14|4", "16|NULL", "115|5"]
    );
    assert_eq!(
        rows(&mut s, "SELECT * FROM grandkids").await,
        vec!["102|12"]
    );
    assert_eq!(
        rows(&mut s, "SELECT * FROM notes ORDER BY id").await,
        vec!["20|0", "21|2", "22|NULL"]
    );
    assert_eq!(
        rows(&mut s, "SELECT * FROM tags ORDER BY id").await,
        vec!["30|NULL", "31|c", "32|b"]
    );
    // A key changed: CASCADE follows it, SET DEFAULT and SET NULL let go of it; a
    // change of another column (tags reference `code`) touches nothing.
    ok(&mut s, "UPDATE parent SET id = 20 WHERE id = 2").await;
    ok(&mut s, "UPDATE parent SET code = 'cc' WHERE id = 3").await;
    assert_eq!(
        ok(&mut s, "UPDATE parent SET id = id + 100 WHERE id IN (4, 5)").await,
        "UPDATE 2"
    );
    assert_eq!(
        rows(&mut s, "SELECT id, pid FROM kids ORDER BY id").await,
        vec!["12|20", "14|104", "16|NULL", "115|105"]
    );
    assert_eq!(
        rows(&mut s, "SELECT * FROM notes ORDER BY id").await,
        vec!["20|0", "21|0", "22|NULL"]
    );
    assert_eq!(
        rows(&mut s, "SELECT * FROM tags ORDER BY id").await,
        vec!["30|NULL", "31|NULL", "32|b"]
    );
    // A default that is the key deleted still references it: 23503, nothing changed.
    assert_eq!(
        error_message(&mut s, "DELETE FROM parent WHERE id = 0").await,
        "update or delete on table \"parent\" violates foreign key constraint \
         \"notes_pid_fkey\" on table \"notes\""
    );
    // A new key the referencing column cannot hold: 22003, nothing changed.
    ok(
        &mut s,
        "CREATE TABLE small (id INT PRIMARY KEY, pid SMALLINT REFERENCES parent ON UPDATE CASCADE)",
    )
    .await;
    ok(&mut s, "INSERT INTO small VALUES (1, 3)").await;
    assert_eq!(
        code(&mut s, "UPDATE parent SET id = 100000 WHERE id = 3").await,
        "22003"
    );
    ok(&mut s, "UPDATE parent SET id = 30 WHERE id = 3").await;
    assert_eq!(rows(&mut s, "SELECT pid FROM small").await, vec!["30"]);
    ok(&mut s, "UPDATE parent SET id = 3 WHERE id = 30").await;
    // SET NULL on a NOT NULL column: 23502.
    ok(
        &mut s,
        "CREATE TABLE strict (id INT PRIMARY KEY, pid INT NOT NULL REFERENCES parent ON DELETE SET NULL)",
    )
    .await;
    ok(&mut s, "INSERT INTO strict VALUES (1, 3)").await;
    assert_eq!(
        code(&mut s, "DELETE FROM parent WHERE id = 3").await,
        "23502"
    );
    // A NO ACTION reference to a row a cascade would delete stops the whole statement.
    ok(
        &mut s,
        "CREATE TABLE blockers (id INT PRIMARY KEY, kid INT REFERENCES kids)",
    )
    .await;
    ok(&mut s, "INSERT INTO blockers VALUES (1, 115)").await;
    assert_eq!(
        error_message(&mut s, "DELETE FROM parent WHERE id = 105").await,
        "update or delete on table \"kids\" violates foreign key constraint \
         \"blockers_kid_fkey\" on table \"blockers\""
    );
    assert_eq!(
        rows(&mut s, "SELECT id FROM parent ORDER BY id").await,
        vec!["0", "3", "20", "104", "105"]
    );
    assert_eq!(
        rows(&mut s, "SELECT id FROM kids ORDER BY id").await,
        vec!["12", "14", "16", "115"]
    );
    // ... unless another cascade deletes it first: NO ACTION is checked once every
    // action has run.
    ok(
        &mut s,
        "CREATE TABLE pairs (id INT PRIMARY KEY, pid INT REFERENCES parent ON DELETE CASCADE, \
         kid INT REFERENCES kids)",
    )
    .await;
    ok(&mut s, "INSERT INTO pairs VALUES (1, 104, 14)").await;
    ok(&mut s, "DELETE FROM parent WHERE id = 104").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM pairs").await, vec!["0"]);
    // RESTRICT is never deferred.
    ok(
        &mut s,
        "CREATE TABLE r (id INT PRIMARY KEY, pid INT REFERENCES parent ON DELETE RESTRICT \
         DEFERRABLE INITIALLY DEFERRED)",
    )
    .await;
    ok(&mut s, "INSERT INTO r VALUES (1, 20)").await;
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        code(&mut s, "DELETE FROM parent WHERE id = 20").await,
        "23503"
    );
    ok(&mut s, "ROLLBACK").await;
    // The catalog shows the actions as PostgreSQL does.
    assert_eq!(
        rows(
            &mut s,
            "SELECT conname, confupdtype, confdeltype, pg_get_constraintdef(oid) \
             FROM pg_constraint WHERE conname IN ('kids_pid_fkey', 'notes_pid_fkey', \
             'tags_pcode_fkey', 'grandkids_kid_fkey') ORDER BY conname"
        )
        .await,
        vec![
            "grandkids_kid_fkey|a|c|FOREIGN KEY (kid) REFERENCES kids(id) ON DELETE CASCADE",
            "kids_pid_fkey|c|c|FOREIGN KEY (pid) REFERENCES parent(id) ON UPDATE CASCADE ON DELETE CASCADE",
            "notes_pid_fkey|d|d|FOREIGN KEY (pid) REFERENCES parent(id) ON UPDATE SET DEFAULT ON DELETE SET DEFAULT",
            "tags_pcode_fkey|n|n|FOREIGN KEY (pcode) REFERENCES parent(code) ON UPDATE SET NULL ON DELETE SET NULL",
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT constraint_name, update_rule, delete_rule \
             FROM information_schema.referential_constraints \
             WHERE constraint_name IN ('kids_pid_fkey', 'r_pid_fkey') ORDER BY 1"
        )
        .await,
        vec![
            "kids_pid_fkey|CASCADE|CASCADE",
            "r_pid_fkey|NO ACTION|RESTRICT"
        ]
    );
}

/// Actions carry on through chains of constraints without nesting: a cascade through a tree of rows, or one key followed
/// through a chain of tables, runs on a server worker's stack whatever its depth, up to
/// the configured number of steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_key_actions_follow_chains_of_any_depth_within_their_bound() {
    let db = TestDb::with_config(SqlConfig {
        fk_action_steps_max: 80,
        ..SqlConfig::default()
    })
    .await;
    let mut s = db.session();
    // Run on a runtime worker, whose stack is a server's (2 MiB), not the test thread's.
    let mut s = tokio::spawn(async move {
        ok(
            &mut s,
            "CREATE TABLE tree (id INT PRIMARY KEY, up INT REFERENCES tree ON DELETE CASCADE)",
        )
        .await;
        ok(
            &mut s,
            "INSERT INTO tree SELECT g, NULLIF(g - 1, 0) FROM generate_series(1, 60) g",
        )
        .await;
        assert_eq!(
            ok(&mut s, "DELETE FROM tree WHERE id = 2").await,
            "DELETE 1"
        );
        assert_eq!(rows(&mut s, "SELECT id FROM tree").await, vec!["1"]);
        // 40 tables, each keyed by a reference to the one before: a new key goes down
        // all of them.
        ok(&mut s, "CREATE TABLE c0 (id INT PRIMARY KEY)").await;
        ok(&mut s, "INSERT INTO c0 VALUES (1)").await;
        for i in 1..40 {
            ok(
                &mut s,
                &format!(
                    "CREATE TABLE c{i} (id INT PRIMARY KEY REFERENCES c{} ON UPDATE CASCADE)",
                    i - 1
                ),
            )
            .await;
            ok(&mut s, &format!("INSERT INTO c{i} VALUES (1)")).await;
        }
        ok(&mut s, "UPDATE c0 SET id = 2").await;
        assert_eq!(
            rows(&mut s, "SELECT (SELECT id FROM c1), (SELECT id FROM c39)").await,
            vec!["2|2"]
        );
        s
    })
    .await
    .unwrap();
    // Past the bound: 54001, and nothing changed.
    ok(
        &mut s,
        "INSERT INTO tree SELECT g, g - 1 FROM generate_series(2, 90) g",
    )
    .await;
    let e = run(&mut s, "DELETE FROM tree WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(e.code, "54001");
    assert!(e.message.contains("more than 80 steps"), "{}", e.message);
    assert_eq!(rows(&mut s, "SELECT count(*) FROM tree").await, vec!["90"]);
    ok(&mut s, "DELETE FROM tree WHERE id = 50").await;
    ok(&mut s, "DELETE FROM tree WHERE id = 1").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM tree").await, vec!["0"]);
}

/// An action meets concurrent transactions as PostgreSQL's does: it waits for a row
/// another transaction changes, then acts on its newest version (READ COMMITTED re-runs
/// the statement) or fails with 40001 (REPEATABLE READ); a reference written meanwhile
/// waits for the action, then finds its row gone.
#[tokio::test]
async fn foreign_key_actions_meet_concurrent_transactions() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(&mut a, "CREATE TABLE parent (id INT PRIMARY KEY)").await;
    ok(
        &mut a,
        "CREATE TABLE kids (id INT PRIMARY KEY, pid INT REFERENCES parent ON DELETE CASCADE, \
         note TEXT, UNIQUE (note))",
    )
    .await;
    ok(&mut a, "INSERT INTO parent VALUES (1), (2), (3)").await;
    ok(
        &mut a,
        "INSERT INTO kids VALUES (10, 1, 'a'), (20, 2, 'b'), (30, 3, 'c')",
    )
    .await;

    // A kid changed by an open transaction: the cascade waits for it, then deletes the
    // kid as it was committed (its index entry too).
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "UPDATE kids SET note = 'x' WHERE id = 10").await;
    let deleter = tokio::spawn(async move {
        let tag = ok(&mut b, "DELETE FROM parent WHERE id = 1").await;
        (b, tag)
    });
    ok(&mut a, "COMMIT").await;
    let (mut b, tag) = deleter.await.unwrap();
    assert_eq!(tag, "DELETE 1");
    assert_eq!(
        rows(&mut a, "SELECT id, note FROM kids ORDER BY id").await,
        vec!["20|b", "30|c"]
    );
    ok(&mut a, "INSERT INTO parent VALUES (1)").await;
    ok(&mut a, "INSERT INTO kids VALUES (11, 1, 'x')").await;

    // Under REPEATABLE READ a kid changed after the snapshot: 40001.
    ok(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    ok(&mut b, "SELECT count(*) FROM kids").await;
    ok(&mut a, "UPDATE kids SET note = 'y' WHERE id = 20").await;
    assert_eq!(
        code(&mut b, "DELETE FROM parent WHERE id = 2").await,
        "40001"
    );
    ok(&mut b, "ROLLBACK").await;

    // A kid written while the cascade's transaction is open waits, then finds no row.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "DELETE FROM parent WHERE id = 3").await;
    let inserter = tokio::spawn(async move {
        let c = code(&mut b, "INSERT INTO kids VALUES (31, 3, 'd')").await;
        (b, c)
    });
    ok(&mut a, "COMMIT").await;
    let (_b, c) = inserter.await.unwrap();
    assert_eq!(c, "23503");
    assert_eq!(
        rows(&mut a, "SELECT id FROM kids ORDER BY id").await,
        vec!["11", "20"]
    );
}

/// The message of the error `sql` fails with.
async fn error_message(session: &mut Session, sql: &str) -> String {
    match run(session, sql).await {
        Ok(r) => panic!("{sql}: expected an error, got {r:?}"),
        Err(e) => e.message,
    }
}

#[tokio::test]
async fn foreign_keys_added_to_tables_with_rows_check_them_or_wait_for_validate() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE parent (id INT PRIMARY KEY, code TEXT UNIQUE)",
    )
    .await;
    ok(
        &mut s,
        "CREATE TABLE child (id INT PRIMARY KEY, pid BIGINT, pcode TEXT)",
    )
    .await;
    ok(&mut s, "INSERT INTO parent VALUES (1, 'a'), (2, 'b')").await;
    ok(
        &mut s,
        "INSERT INTO child VALUES (1, 1, 'a'), (2, NULL, 'b'), (3, 7, NULL)",
    )
    .await;

    // A row referencing nothing fails the statement, with PostgreSQL's message, and
    // leaves no constraint behind.
    let add = "ALTER TABLE child ADD FOREIGN KEY (pid) REFERENCES parent";
    let e = run(&mut s, add).await.unwrap_err();
    assert_eq!(
        e.message,
        "insert or update on table \"child\" violates foreign key constraint \"child_pid_fkey\""
    );
    // Its hint is a query that lists the rows referencing nothing.
    let hint = e.hint.unwrap_or_default();
    let query = hint
        .split_once("with: ")
        .and_then(|(_, q)| q.split_once("; then"))
        .map(|(q, _)| q.to_string())
        .unwrap_or_else(|| panic!("no query in {hint:?}"));
    assert_eq!(rows(&mut s, &query).await, vec!["3|7|NULL"]);
    ok(&mut s, "INSERT INTO child VALUES (4, 8, NULL)").await;
    ok(&mut s, "DELETE FROM child WHERE id IN (3, 4)").await;
    ok(&mut s, add).await;
    assert_eq!(
        code(&mut s, "INSERT INTO child VALUES (5, 9, NULL)").await,
        "23503"
    );
    assert_eq!(
        code(&mut s, "DELETE FROM parent WHERE id = 1").await,
        "23503"
    );
    ok(&mut s, "DELETE FROM parent WHERE id = 2").await;
    // A second unnamed key on the same columns is numbered, as PostgreSQL names it.
    ok(&mut s, add).await;
    ok(&mut s, "ALTER TABLE child DROP CONSTRAINT child_pid_fkey1").await;
    ok(&mut s, "INSERT INTO parent VALUES (2, 'b')").await;

    // NOT VALID: the rows are not checked, every write from now on is; VALIDATE checks
    // the rows, and fails (changing nothing) while one references nothing.
    ok(&mut s, "UPDATE child SET pcode = 'zz' WHERE id = 2").await;
    ok(
        &mut s,
        "ALTER TABLE child ADD CONSTRAINT by_code FOREIGN KEY (pcode) REFERENCES parent (code) NOT VALID",
    )
    .await;
    assert_eq!(
        code(&mut s, "INSERT INTO child VALUES (6, NULL, 'zz')").await,
        "23503"
    );
    assert_eq!(
        code(&mut s, "DELETE FROM parent WHERE code = 'a'").await,
        "23503"
    );
    let validate = "ALTER TABLE child VALIDATE CONSTRAINT by_code";
    assert_eq!(
        error_message(&mut s, validate).await,
        "insert or update on table \"child\" violates foreign key constraint \"by_code\""
    );
    assert_eq!(
        code(&mut s, "DELETE FROM parent WHERE code = 'a'").await,
        "23503"
    );
    ok(&mut s, "UPDATE child SET pcode = 'b' WHERE id = 2").await;
    ok(&mut s, validate).await;
    ok(&mut s, validate).await;

    // A table referencing itself, with a composite key and MATCH SIMPLE rows.
    ok(
        &mut s,
        "CREATE TABLE emp (org INT, id INT, boss_org INT, boss INT, PRIMARY KEY (org, id))",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO emp VALUES (1, 1, NULL, NULL), (1, 2, 1, 1), (2, 1, 2, NULL)",
    )
    .await;
    ok(
        &mut s,
        "ALTER TABLE emp ADD CONSTRAINT boss FOREIGN KEY (boss_org, boss) REFERENCES emp (org, id)",
    )
    .await;
    assert_eq!(
        code(&mut s, "INSERT INTO emp VALUES (1, 3, 2, 2)").await,
        "23503"
    );
    assert_eq!(
        code(&mut s, "DELETE FROM emp WHERE id = 1 AND org = 1").await,
        "23503"
    );

    // What it names is checked as in CREATE TABLE, and a refused one changes nothing.
    for (sql, expected) in [
        (
            "ALTER TABLE child ADD FOREIGN KEY (pid) REFERENCES nope",
            "42P01",
        ),
        (
            "ALTER TABLE child ADD FOREIGN KEY (nope) REFERENCES parent",
            "42703",
        ),
        (
            "ALTER TABLE child ADD FOREIGN KEY (pcode) REFERENCES parent",
            "42804",
        ),
        (
            "ALTER TABLE child ADD FOREIGN KEY (pid, pcode) REFERENCES parent",
            "42830",
        ),
        (
            "ALTER TABLE child ADD CONSTRAINT by_code FOREIGN KEY (pcode) REFERENCES parent (code)",
            "42710",
        ),
        (
            "ALTER TABLE child ADD FOREIGN KEY (pid) REFERENCES parent MATCH FULL",
            "0A000",
        ),
    ] {
        assert_eq!(code(&mut s, sql).await, expected, "{sql}");
    }
    ok(&mut s, "DELETE FROM child WHERE id = 1").await;
    ok(&mut s, "DELETE FROM parent WHERE id = 1").await;

    // EXPLAIN shows the job's steps and runs nothing.
    let plan = rows(
        &mut s,
        "EXPLAIN ALTER TABLE child ADD FOREIGN KEY (pid) REFERENCES parent",
    )
    .await;
    assert!(
        plan[0].contains("ADD CONSTRAINT child_pid_fkey1 FOREIGN KEY"),
        "{plan:?}"
    );
    assert!(plan.iter().any(|l| l.contains("23503")), "{plan:?}");
    assert_eq!(
        code(&mut s, "ALTER TABLE child DROP CONSTRAINT child_pid_fkey1").await,
        "42704"
    );
}

/// A job that reads a table's rows (an index backfill, a constraint's validation) reads
/// committed rows only: run in a transaction that had written to the table, it built a
/// unique index without the transaction's duplicate, or validated a CHECK or a foreign
/// key without its violating row, and the commit stored them anyway.
#[tokio::test]
async fn a_schema_change_reading_rows_is_refused_after_writes_to_them_in_its_transaction() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE p (id INT PRIMARY KEY)").await;
    ok(
        &mut s,
        "CREATE TABLE c (id INT PRIMARY KEY, pid INT, v INT)",
    )
    .await;
    ok(&mut s, "INSERT INTO p VALUES (1)").await;
    ok(&mut s, "INSERT INTO c VALUES (1, 1, 1)").await;
    for (write, change) in [
        (
            "INSERT INTO c VALUES (2, 1, 1)",
            "CREATE UNIQUE INDEX c_v ON c (v)",
        ),
        (
            "INSERT INTO c VALUES (2, 1, -1)",
            "ALTER TABLE c ADD CHECK (v > 0)",
        ),
        (
            "INSERT INTO c VALUES (2, 1, NULL)",
            "ALTER TABLE c ALTER COLUMN v SET NOT NULL",
        ),
        (
            "INSERT INTO c VALUES (2, 5, 1)",
            "ALTER TABLE c ADD FOREIGN KEY (pid) REFERENCES p",
        ),
        (
            "DELETE FROM p WHERE id = 1",
            "ALTER TABLE c ADD FOREIGN KEY (pid) REFERENCES p",
        ),
    ] {
        ok(&mut s, "BEGIN").await;
        ok(&mut s, write).await;
        let e = run(&mut s, change).await.unwrap_err();
        assert_eq!(e.code, "0A000", "{change}: {e:?}");
        assert!(
            e.message.contains("already written to table"),
            "{}",
            e.message
        );
        ok(&mut s, "ROLLBACK").await;
    }
    // Before the writes, or with writes to other tables only, the change runs.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO p VALUES (2)").await;
    ok(&mut s, "CREATE UNIQUE INDEX c_v ON c (v)").await;
    ok(&mut s, "ALTER TABLE c ADD CHECK (v > 0)").await;
    assert_eq!(
        error_detail(&mut s, "INSERT INTO c VALUES (4, 2, -4)").await,
        ("23514", "Failing row contains (4, 2, -4).".to_string())
    );
    ok(&mut s, "ROLLBACK").await;
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO c VALUES (2, 2, 2)").await;
    // The duplicate's key is in DETAIL, where PostgreSQL puts it.
    assert_eq!(
        error_detail(&mut s, "INSERT INTO c VALUES (3, 2, 2)").await,
        ("23505", "Key (v)=(2) already exists.".to_string())
    );
    ok(&mut s, "ROLLBACK").await;
    ok(&mut s, "ADMIN CHECK TABLE c").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM c").await, vec!["1"]);
}

/// Tables p and c, c with an INITIALLY DEFERRED, a DEFERRABLE (INITIALLY IMMEDIATE) and
/// a NOT DEFERRABLE foreign key to p.
async fn deferring_tables(s: &mut Session) {
    ok(s, "CREATE TABLE p (id INT PRIMARY KEY, code TEXT UNIQUE)").await;
    ok(
        s,
        "CREATE TABLE c (id INT PRIMARY KEY, \
         pid INT REFERENCES p DEFERRABLE INITIALLY DEFERRED, \
         pcode TEXT CONSTRAINT c_code REFERENCES p (code) DEFERRABLE, \
         q INT CONSTRAINT c_q REFERENCES p)",
    )
    .await;
}

/// DEFERRABLE foreign keys, as PostgreSQL 15 answers (checked against it): INITIALLY
/// DEFERRED ones are checked at commit, on the rows as they are then, in both
/// directions; a failed check at COMMIT ends the transaction undone.
#[tokio::test]
async fn deferred_foreign_keys_are_checked_at_commit_on_the_rows_as_they_are_then() {
    let db = TestDb::new().await;
    let mut s = db.session();
    deferring_tables(&mut s).await;

    // A reference written before its row, in one transaction.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO c VALUES (1, 5, NULL, NULL)").await;
    ok(&mut s, "INSERT INTO p VALUES (5, 'a')").await;
    ok(&mut s, "COMMIT").await;
    // One whose row never comes fails at COMMIT, which ends the transaction undone.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO c VALUES (2, 6, NULL, NULL)").await;
    ok(&mut s, "INSERT INTO p VALUES (7, 'b')").await;
    let (code_, detail) = error_detail(&mut s, "COMMIT").await;
    assert_eq!(code_, "23503");
    assert_eq!(detail, "Key (pid)=(6) is not present in table \"p\".");
    assert_eq!(s.transaction_state(), TransactionState::Idle);
    assert_eq!(rows(&mut s, "SELECT id FROM c").await, vec!["1"]);
    assert_eq!(rows(&mut s, "SELECT id FROM p").await, vec!["5"]);
    // Outside a block the statement is its transaction: checked as it ends.
    assert_eq!(
        error_message(&mut s, "INSERT INTO c VALUES (2, 6, NULL, NULL)").await,
        "insert or update on table \"c\" violates foreign key constraint \"c_pid_fkey\""
    );
    assert_eq!(rows(&mut s, "SELECT count(*) FROM c").await, vec!["1"]);

    // The rows as they are at commit count: one deleted, or updated to a good key, since.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO c VALUES (3, 8, NULL, NULL)").await;
    ok(&mut s, "DELETE FROM c WHERE id = 3").await;
    ok(&mut s, "INSERT INTO c VALUES (4, 9, NULL, NULL)").await;
    ok(&mut s, "UPDATE c SET pid = 5 WHERE id = 4").await;
    ok(&mut s, "COMMIT").await;
    assert_eq!(
        rows(&mut s, "SELECT id, pid FROM c ORDER BY id").await,
        vec!["1|5", "4|5"]
    );
    // ... and a row written under a savepoint rolled back to is not checked.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "SAVEPOINT a").await;
    ok(&mut s, "INSERT INTO c VALUES (3, 8, NULL, NULL)").await;
    ok(&mut s, "ROLLBACK TO SAVEPOINT a").await;
    ok(&mut s, "COMMIT").await;

    // The referenced side: a row deleted and written again, or whose references go too,
    // passes; one still referenced at COMMIT fails it.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "DELETE FROM p WHERE id = 5").await;
    ok(&mut s, "INSERT INTO p VALUES (5, 'a')").await;
    ok(&mut s, "COMMIT").await;
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "UPDATE p SET id = 6 WHERE id = 5").await;
    let (code_, detail) = error_detail(&mut s, "COMMIT").await;
    assert_eq!(code_, "23503");
    assert_eq!(detail, "Key (id)=(5) is still referenced from table \"c\".");
    assert_eq!(
        rows(&mut s, "SELECT id FROM p WHERE id = 5").await,
        vec!["5"]
    );
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "DELETE FROM p WHERE id = 5").await;
    ok(&mut s, "UPDATE c SET pid = 7 WHERE pid = 5").await;
    ok(&mut s, "INSERT INTO p VALUES (7, 'c')").await;
    ok(&mut s, "COMMIT").await;
    assert_eq!(
        rows(&mut s, "SELECT id, pid FROM c ORDER BY id").await,
        vec!["1|7", "4|7"]
    );
    // A NOT DEFERRABLE one is still checked as each statement ends.
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        code(&mut s, "INSERT INTO c VALUES (3, NULL, NULL, 42)").await,
        "23503"
    );
    ok(&mut s, "ROLLBACK").await;

    // A self-reference written in either order; REPEATABLE READ checks at commit too.
    ok(
        &mut s,
        "CREATE TABLE tree (id INT PRIMARY KEY, up INT REFERENCES tree INITIALLY DEFERRED)",
    )
    .await;
    ok(&mut s, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    ok(&mut s, "INSERT INTO tree VALUES (1, 2)").await;
    ok(&mut s, "INSERT INTO tree VALUES (2, 1)").await;
    ok(&mut s, "COMMIT").await;
    assert_eq!(code(&mut s, "DELETE FROM tree WHERE id = 1").await, "23503");
    ok(&mut s, "DELETE FROM tree").await;

    // ADD CONSTRAINT ... DEFERRABLE INITIALLY DEFERRED on a table with rows (as Django
    // adds every foreign key).
    ok(&mut s, "CREATE TABLE d (id INT PRIMARY KEY, pid INT)").await;
    ok(&mut s, "INSERT INTO d VALUES (1, 7)").await;
    ok(
        &mut s,
        "ALTER TABLE d ADD CONSTRAINT d_pid_fk FOREIGN KEY (pid) REFERENCES p (id) \
         DEFERRABLE INITIALLY DEFERRED",
    )
    .await;
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO d VALUES (2, 10)").await;
    ok(&mut s, "INSERT INTO p VALUES (10, 'd')").await;
    ok(&mut s, "COMMIT").await;

    // What introspection shows, as PostgreSQL's does.
    assert_eq!(
        rows(
            &mut s,
            "SELECT constraint_name, is_deferrable, initially_deferred \
             FROM information_schema.table_constraints WHERE table_name = 'c' ORDER BY 1"
        )
        .await,
        vec![
            "c_code|YES|NO",
            "c_pid_fkey|YES|YES",
            "c_pkey|NO|NO",
            "c_q|NO|NO"
        ]
    );
}

/// SET CONSTRAINTS, as PostgreSQL 15 answers: it defers DEFERRABLE foreign keys or makes
/// them immediate (running the checks put off), ROLLBACK TO SAVEPOINT restores what it
/// set, and it names only constraints that are there and deferrable.
#[tokio::test]
async fn set_constraints_defers_foreign_keys_or_checks_them_at_once() {
    let db = TestDb::new().await;
    let mut s = db.session();
    deferring_tables(&mut s).await;
    ok(&mut s, "INSERT INTO p VALUES (5, 'a')").await;
    // A DEFERRABLE (INITIALLY IMMEDIATE) constraint is checked as the statement ends,
    // unless SET CONSTRAINTS defers it; setting it IMMEDIATE again runs the checks.
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        code(&mut s, "INSERT INTO c VALUES (3, NULL, 'zz', NULL)").await,
        "23503"
    );
    ok(&mut s, "ROLLBACK").await;
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        ok(&mut s, "SET CONSTRAINTS c_code DEFERRED").await,
        "SET CONSTRAINTS"
    );
    ok(&mut s, "INSERT INTO c VALUES (3, NULL, 'zz', NULL)").await;
    let (code_, detail) = error_detail(&mut s, "SET CONSTRAINTS public.c_code IMMEDIATE").await;
    assert_eq!(code_, "23503");
    assert_eq!(detail, "Key (pcode)=(zz) is not present in table \"p\".");
    assert_eq!(s.transaction_state(), TransactionState::Failed);
    assert_eq!(code(&mut s, "SET CONSTRAINTS ALL DEFERRED").await, "25P02");
    ok(&mut s, "ROLLBACK").await;
    // Checks that pass at SET CONSTRAINTS ... IMMEDIATE are done with.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "SET CONSTRAINTS ALL DEFERRED").await;
    ok(&mut s, "INSERT INTO c VALUES (3, NULL, 'b', NULL)").await;
    ok(&mut s, "INSERT INTO p VALUES (8, 'b')").await;
    ok(&mut s, "SET CONSTRAINTS c_code, c_pid_fkey IMMEDIATE").await;
    // Now immediate: checked as the statement ends.
    assert_eq!(
        code(&mut s, "INSERT INTO c VALUES (9, 99, NULL, NULL)").await,
        "23503"
    );
    ok(&mut s, "ROLLBACK").await;
    // SET CONSTRAINTS ALL IMMEDIATE makes an INITIALLY DEFERRED one immediate; ROLLBACK TO
    // SAVEPOINT puts back what was set before it.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "SAVEPOINT a").await;
    ok(&mut s, "SET CONSTRAINTS ALL IMMEDIATE").await;
    assert_eq!(
        code(&mut s, "INSERT INTO c VALUES (3, 99, NULL, NULL)").await,
        "23503"
    );
    ok(&mut s, "ROLLBACK TO SAVEPOINT a").await;
    ok(&mut s, "INSERT INTO c VALUES (3, 99, NULL, NULL)").await;
    assert_eq!(code(&mut s, "SET CONSTRAINTS ALL IMMEDIATE").await, "23503");
    ok(&mut s, "ROLLBACK").await;

    // SET CONSTRAINTS names constraints that are there and deferrable.
    ok(&mut s, "BEGIN").await;
    assert_eq!(
        code(&mut s, "SET CONSTRAINTS nosuch DEFERRED").await,
        "42704"
    );
    ok(&mut s, "ROLLBACK").await;
    for name in ["c_q", "c_pkey", "p_code_key"] {
        ok(&mut s, "BEGIN").await;
        let sql = format!("SET CONSTRAINTS {name} DEFERRED");
        assert_eq!(
            error_message(&mut s, &sql).await,
            format!("constraint \"{name}\" is not deferrable")
        );
        ok(&mut s, "ROLLBACK").await;
    }
    assert_eq!(code(&mut s, "SET CONSTRAINTS ALL LATER").await, "42601");
    assert_eq!(code(&mut s, "SET CONSTRAINTS DEFERRED").await, "42601");
    // Outside a block it does nothing (PostgreSQL warns).
    assert_eq!(
        ok(&mut s, "SET CONSTRAINTS ALL IMMEDIATE").await,
        "SET CONSTRAINTS"
    );
    assert_eq!(
        code(&mut s, "INSERT INTO c VALUES (3, NULL, 'zz', NULL)").await,
        "23503"
    );
    // Over the extended protocol too.
    ok(&mut s, "BEGIN").await;
    let set = s
        .prepare("SET CONSTRAINTS ALL DEFERRED", &[])
        .await
        .unwrap();
    s.execute_prepared(&set, vec![]).await.unwrap();
    ok(&mut s, "INSERT INTO c VALUES (3, NULL, 'zz', NULL)").await;
    assert_eq!(code(&mut s, "COMMIT").await, "23503");
}

/// The checks a transaction defers are bounded (`deferred_checks_max`): past it the
/// statement fails with 54000 and nothing is written.
#[tokio::test]
async fn deferred_foreign_key_checks_are_bounded_per_transaction() {
    let db = TestDb::with_config(SqlConfig {
        deferred_checks_max: 3,
        ..SqlConfig::default()
    })
    .await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE p (id INT PRIMARY KEY)").await;
    ok(
        &mut s,
        "CREATE TABLE c (id INT PRIMARY KEY, pid INT REFERENCES p INITIALLY DEFERRED)",
    )
    .await;
    ok(&mut s, "INSERT INTO p SELECT * FROM generate_series(1, 10)").await;
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO c VALUES (1, 1), (2, 2)").await;
    // A row written twice is one check.
    ok(&mut s, "UPDATE c SET pid = 3 WHERE id = 1").await;
    ok(&mut s, "INSERT INTO c VALUES (3, 3)").await;
    let e = run(&mut s, "INSERT INTO c VALUES (4, 4)")
        .await
        .unwrap_err();
    assert_eq!(e.code, "54000");
    assert!(e.message.contains("more than 3"), "{}", e.message);
    assert_eq!(s.transaction_state(), TransactionState::Failed);
    ok(&mut s, "ROLLBACK").await;
    // Checked as they go, they are not kept.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "INSERT INTO c VALUES (1, 1), (2, 2), (3, 3)").await;
    ok(&mut s, "SET CONSTRAINTS ALL IMMEDIATE").await;
    ok(&mut s, "SET CONSTRAINTS ALL DEFERRED").await;
    ok(&mut s, "INSERT INTO c VALUES (4, 4), (5, 5)").await;
    ok(&mut s, "COMMIT").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM c").await, vec!["5"]);
    // A referenced key removed counts too.
    ok(&mut s, "BEGIN").await;
    let e = run(&mut s, "DELETE FROM p WHERE id > 6").await.unwrap_err();
    assert_eq!(e.code, "54000");
    ok(&mut s, "ROLLBACK").await;
    assert_eq!(rows(&mut s, "SELECT count(*) FROM p").await, vec!["10"]);
}

/// A deferred reference is checked against the newest rows at commit, and locks what it
/// found until the transaction ends.
#[tokio::test]
async fn a_deferred_reference_is_checked_and_locked_at_commit() {
    let db = TestDb::new().await;
    let mut a = db.session();
    let mut b = db.session();
    ok(&mut a, "CREATE TABLE p (id INT PRIMARY KEY)").await;
    ok(
        &mut a,
        "CREATE TABLE c (id INT PRIMARY KEY, pid INT REFERENCES p INITIALLY DEFERRED)",
    )
    .await;
    ok(&mut a, "INSERT INTO p VALUES (1), (2)").await;
    // Its referenced row committed by another transaction before the commit: found.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO c VALUES (1, 3)").await;
    ok(&mut b, "INSERT INTO p VALUES (3)").await;
    ok(&mut a, "COMMIT").await;
    // Deleted by another before the commit (nothing locked it yet): the commit fails.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO c VALUES (2, 1)").await;
    ok(&mut b, "DELETE FROM p WHERE id = 1").await;
    assert_eq!(code(&mut a, "COMMIT").await, "23503");
    // Once checked (SET CONSTRAINTS ... IMMEDIATE), the row is locked until the end.
    ok(&mut a, "BEGIN").await;
    ok(&mut a, "INSERT INTO c VALUES (2, 2)").await;
    ok(&mut a, "SET CONSTRAINTS ALL IMMEDIATE").await;
    ok(&mut b, "SET lock_timeout = '100ms'").await;
    assert_eq!(code(&mut b, "DELETE FROM p WHERE id = 2").await, "55P03");
    ok(&mut a, "COMMIT").await;
    assert_eq!(code(&mut b, "DELETE FROM p WHERE id = 2").await, "23503");
}

/// ALTER TABLE ... ADD COLUMN ... REFERENCES (as Django adds a foreign key field), as
/// PostgreSQL 15 answers: the column and its constraint come together, the rows are
/// checked (a DEFAULT gives them a value), and a failure leaves neither.
#[tokio::test]
async fn a_column_added_with_references_comes_with_its_checked_foreign_key() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE p2 (id INT PRIMARY KEY)").await;
    ok(&mut s, "CREATE TABLE k (id INT PRIMARY KEY)").await;
    ok(&mut s, "INSERT INTO p2 VALUES (1)").await;
    ok(&mut s, "INSERT INTO k VALUES (10), (11)").await;
    // Django's statement, then its SET CONSTRAINTS (outside a block: nothing to do).
    run(
        &mut s,
        "ALTER TABLE k ADD COLUMN p_id INT NULL CONSTRAINT k_p_id_fk REFERENCES p2 (id) \
         DEFERRABLE INITIALLY DEFERRED; SET CONSTRAINTS k_p_id_fk IMMEDIATE",
    )
    .await
    .unwrap();
    let (code_, detail) = error_detail(&mut s, "INSERT INTO k VALUES (12, 2)").await;
    assert_eq!(code_, "23503");
    assert_eq!(detail, "Key (p_id)=(2) is not present in table \"p2\".");
    ok(&mut s, "INSERT INTO k VALUES (12, 1)").await;
    // A DEFAULT that references nothing fails the rows' check: no column is left.
    assert_eq!(
        error_message(
            &mut s,
            "ALTER TABLE k ADD COLUMN q INT DEFAULT 5 REFERENCES p2"
        )
        .await,
        "insert or update on table \"k\" violates foreign key constraint \"k_q_fkey\""
    );
    assert_eq!(code(&mut s, "SELECT q FROM k").await, "42703");
    ok(
        &mut s,
        "ALTER TABLE k ADD COLUMN r INT DEFAULT 1 REFERENCES p2",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT id, p_id, r FROM k ORDER BY id").await,
        vec!["10|NULL|1", "11|NULL|1", "12|1|1"]
    );
    assert_eq!(code(&mut s, "DELETE FROM p2 WHERE id = 1").await, "23503");
    // A self-reference.
    ok(&mut s, "ALTER TABLE k ADD COLUMN up INT REFERENCES k").await;
    ok(&mut s, "INSERT INTO k (id, up) VALUES (13, 10)").await;
    assert_eq!(
        code(&mut s, "INSERT INTO k (id, up) VALUES (14, 99)").await,
        "23503"
    );
    // Refused before anything changes.
    for (sql, expected) in [
        ("ALTER TABLE k ADD COLUMN s TEXT REFERENCES p2", "42804"),
        ("ALTER TABLE k ADD COLUMN s INT REFERENCES nosuch", "42P01"),
        ("ALTER TABLE k ADD COLUMN id INT REFERENCES p2", "42701"),
        (
            "ALTER TABLE k ADD COLUMN s INT REFERENCES p2, ADD COLUMN t INT",
            "0A000",
        ),
        (
            "ALTER TABLE k ADD COLUMN s INT REFERENCES p2 REFERENCES k",
            "0A000",
        ),
    ] {
        assert_eq!(code(&mut s, sql).await, expected, "{sql}");
    }
    ok(
        &mut s,
        "ALTER TABLE k ADD COLUMN IF NOT EXISTS id INT REFERENCES p2",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'k' \
             ORDER BY ordinal_position"
        )
        .await,
        vec!["id", "p_id", "r", "up"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT constraint_name, is_deferrable, initially_deferred \
             FROM information_schema.table_constraints \
             WHERE table_name = 'k' AND constraint_type = 'FOREIGN KEY' ORDER BY 1"
        )
        .await,
        vec!["k_p_id_fk|YES|YES", "k_r_fkey|NO|NO", "k_up_fkey|NO|NO"]
    );
}

/// `pg_constraint`, `pg_index`, `pg_attrdef`, `pg_depend` and the catalog functions (lists
/// print here as Arrow shows them; clients get `int2[]` and `text[]`), as
/// Django's introspection reads them (its `get_constraints` queries word for word: they
/// are rewritten, see `orm.rs`).
#[tokio::test]
async fn pg_catalog_lists_constraints_and_indexes_as_orms_read_them() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE p (id SERIAL PRIMARY KEY, code VARCHAR(10) UNIQUE)",
    )
    .await;
    ok(
        &mut s,
        "CREATE TABLE c (id INT PRIMARY KEY, note TEXT DEFAULT 'x', b INT, a INT CHECK (a > 0), \
         CONSTRAINT c_a_fk FOREIGN KEY (a) REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED, \
         UNIQUE (b, a))",
    )
    .await;
    ok(&mut s, "CREATE INDEX c_note ON c (note)").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT conname, contype, conkey, confkey, condeferrable, condeferred, \
             pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'c'::regclass \
             ORDER BY conname"
        )
        .await,
        vec![
            "c_a_check|c|[4]|NULL|false|false|CHECK (a > 0)",
            "c_a_fk|f|[4]|[1]|true|true|FOREIGN KEY (a) REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED",
            "c_b_a_key|u|[3, 4]|NULL|false|false|UNIQUE (b, a)",
            "c_pkey|p|[1]|NULL|false|false|PRIMARY KEY (id)",
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT i.relname, x.indisunique, x.indisprimary, x.indkey, \
             pg_get_indexdef(x.indexrelid), pg_get_indexdef(x.indexrelid, 2, true) \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             WHERE x.indrelid = 'c'::regclass ORDER BY i.relname"
        )
        .await,
        vec![
            "c_b_a_key|true|false|[3, 4]|CREATE UNIQUE INDEX c_b_a_key ON public.c USING btree (b, a)|a",
            "c_note|false|false|[2]|CREATE INDEX c_note ON public.c USING btree (note)|NULL",
            "c_pkey|true|true|[1]|CREATE UNIQUE INDEX c_pkey ON public.c USING btree (id)|NULL",
        ]
    );
    // Defaults (a serial's as PostgreSQL shows it), the sequence a serial depends on,
    // type names, and no comments.
    assert_eq!(
        rows(
            &mut s,
            "SELECT a.attname, pg_get_expr(d.adbin, d.adrelid), format_type(a.atttypid, a.atttypmod), \
             col_description(a.attrelid, a.attnum) FROM pg_attribute a \
             LEFT JOIN pg_attrdef d ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
             WHERE a.attrelid = 'p'::regclass ORDER BY a.attnum"
        )
        .await,
        vec![
            "id|nextval('p_id_seq'::regclass)|integer|NULL",
            "code|NULL|character varying(10)|NULL",
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT s.relname, a.attname FROM pg_class s \
             JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass \
             JOIN pg_attribute a ON d.refobjid = a.attrelid AND d.refobjsubid = a.attnum \
             WHERE s.relkind = 'S'"
        )
        .await,
        vec!["p_id_seq|id"]
    );
    assert_eq!(
        rows(&mut s, "SELECT obj_description('p'::regclass, 'pg_class'), current_schemas(false), current_schemas(true)").await,
        vec!["NULL|[public]|[pg_catalog, public]"]
    );
    // Django's get_constraints, both queries as Django 5.1 sends them.
    let django_constraints = "
            SELECT
                c.conname,
                array(
                    SELECT attname
                    FROM unnest(c.conkey) WITH ORDINALITY cols(colid, arridx)
                    JOIN pg_attribute AS ca ON cols.colid = ca.attnum
                    WHERE ca.attrelid = c.conrelid
                    ORDER BY cols.arridx
                ),
                c.contype,
                (SELECT fkc.relname || '.' || fka.attname
                FROM pg_attribute AS fka
                JOIN pg_class AS fkc ON fka.attrelid = fkc.oid
                WHERE fka.attrelid = c.confrelid AND fka.attnum = c.confkey[1]),
                cl.reloptions
            FROM pg_constraint AS c
            JOIN pg_class AS cl ON c.conrelid = cl.oid
            WHERE cl.relname = 'c' AND pg_catalog.pg_table_is_visible(cl.oid)
            ORDER BY 1";
    assert_eq!(
        rows(&mut s, django_constraints).await,
        vec![
            "c_a_check|[a]|c|NULL|NULL",
            "c_a_fk|[a]|f|p.id|NULL",
            "c_b_a_key|[b, a]|u|NULL|NULL",
            "c_pkey|[id]|p|NULL|NULL",
        ]
    );
    let django_indexes = "
            SELECT
                indexname,
                array_agg(attname ORDER BY arridx),
                indisunique,
                indisprimary,
                array_agg(ordering ORDER BY arridx),
                amname,
                exprdef,
                s2.attoptions
            FROM (
                SELECT
                    c2.relname as indexname, idx.*, attr.attname, am.amname,
                    CASE
                        WHEN idx.indexprs IS NOT NULL THEN
                            pg_get_indexdef(idx.indexrelid)
                    END AS exprdef,
                    CASE am.amname
                        WHEN 'btree' THEN
                            CASE (option & 1)
                                WHEN 1 THEN 'DESC' ELSE 'ASC'
                            END
                    END as ordering,
                    c2.reloptions as attoptions
                FROM (
                    SELECT *
                    FROM
                        pg_index i,
                        unnest(i.indkey, i.indoption)
                            WITH ORDINALITY koi(key, option, arridx)
                ) idx
                LEFT JOIN pg_class c ON idx.indrelid = c.oid
                LEFT JOIN pg_class c2 ON idx.indexrelid = c2.oid
                LEFT JOIN pg_am am ON c2.relam = am.oid
                LEFT JOIN
                    pg_attribute attr ON attr.attrelid = c.oid AND attr.attnum = idx.key
                WHERE c.relname = 'c' AND pg_catalog.pg_table_is_visible(c.oid)
            ) s2
            GROUP BY indexname, indisunique, indisprimary, amname, exprdef, attoptions
            ORDER BY 1;";
    assert_eq!(
        rows(&mut s, django_indexes).await,
        vec![
            "c_b_a_key|[b, a]|true|false|[ASC, ASC]|btree|NULL|NULL",
            "c_note|[note]|false|false|[ASC]|btree|NULL|NULL",
            "c_pkey|[id]|true|true|[ASC]|btree|NULL|NULL",
        ]
    );
}

/// ALTER COLUMN TYPE widens a varchar or text column in the catalog alone; anything that
/// would check or rewrite rows is refused and changes nothing.
#[tokio::test]
async fn alter_column_type_widens_text_columns_and_refuses_the_rest() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE w (id INT PRIMARY KEY, name VARCHAR(3) NOT NULL, n INT)",
    )
    .await;
    ok(&mut s, "CREATE INDEX w_name ON w (name)").await;
    ok(&mut s, "INSERT INTO w VALUES (1, 'abc', 1), (2, 'de', 2)").await;
    assert_eq!(
        code(&mut s, "INSERT INTO w VALUES (3, 'long', 3)").await,
        "22001"
    );
    ok(&mut s, "ALTER TABLE w ALTER COLUMN name TYPE VARCHAR(10)").await;
    ok(&mut s, "INSERT INTO w VALUES (3, 'longer', 3)").await;
    assert_eq!(
        code(&mut s, "INSERT INTO w VALUES (4, 'much too long', 4)").await,
        "22001"
    );
    ok(&mut s, "ALTER TABLE w ALTER COLUMN name SET DATA TYPE TEXT").await;
    ok(&mut s, "INSERT INTO w VALUES (4, 'much too long', 4)").await;
    assert_eq!(
        rows(&mut s, "SELECT id FROM w WHERE name = 'longer'").await,
        vec!["3"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT data_type FROM information_schema.columns \
             WHERE table_name = 'w' AND column_name = 'name'"
        )
        .await,
        vec!["text"]
    );
    for refused in [
        "ALTER TABLE w ALTER COLUMN name TYPE VARCHAR(2)",
        "ALTER TABLE w ALTER COLUMN n TYPE BIGINT",
        "ALTER TABLE w ALTER COLUMN name TYPE VARCHAR(20) USING upper(name)",
    ] {
        assert_eq!(code(&mut s, refused).await, "0A000", "{refused}");
    }
    assert_eq!(
        code(&mut s, "ALTER TABLE w ALTER COLUMN nope TYPE TEXT").await,
        "42703"
    );
}

/// The uuid type as PostgreSQL 15 has it: its input forms, comparisons with string
/// literals (keys, indexes, IN lists), casts both ways, `gen_random_uuid()`, foreign keys
/// between uuid columns, bound parameters, and errors that change nothing.
#[tokio::test]
async fn uuid_columns_read_compare_and_print_as_in_postgres() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE u (id UUID PRIMARY KEY DEFAULT gen_random_uuid(), name TEXT, other uuid)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO u (id, name) VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'a'), \
         ('{B0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}', 'b'), ('00eebc999c0b4ef8bb6d6bb9bd380a11', 'c')",
    )
    .await;
    ok(&mut s, "INSERT INTO u (name) VALUES ('random')").await;
    // Printed in PostgreSQL's form; ordered by their bytes.
    assert_eq!(
        rows(
            &mut s,
            "SELECT id::text, name FROM u WHERE name <> 'random' ORDER BY id"
        )
        .await,
        vec![
            "00eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|c",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|a",
            "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|b",
        ]
    );
    // A string literal compared with a uuid is read as one, in any of its forms.
    for sql in [
        "SELECT name FROM u WHERE id = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
        "SELECT name FROM u WHERE 'a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11' = id",
        "SELECT name FROM u WHERE id IN ('a0eebc999c0b4ef8bb6d6bb9bd380a11', 'ffffffff-9c0b-4ef8-bb6d-6bb9bd380a11')",
        "SELECT name FROM u WHERE id = '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'::uuid",
        "SELECT name FROM u WHERE id::text = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
    ] {
        assert_eq!(rows(&mut s, sql).await, vec!["a"], "{sql}");
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM u WHERE id > 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' AND name <> 'random'"
        )
        .await,
        vec!["1"]
    );
    // gen_random_uuid() is a version 4 uuid, a new one per row.
    assert_eq!(
        rows(
            &mut s,
            "SELECT substr(id::text, 15, 1), length(id::text) FROM u WHERE name = 'random'"
        )
        .await,
        vec!["4|36"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(DISTINCT g) FROM (SELECT gen_random_uuid() AS g FROM u) AS x"
        )
        .await,
        vec!["4"]
    );
    // A secondary index on a uuid column, and UPDATE through it.
    ok(&mut s, "CREATE INDEX u_other ON u (other)").await;
    ok(
        &mut s,
        "UPDATE u SET other = 'c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' WHERE id = 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
    )
    .await;
    ok(&mut s, "UPDATE u SET other = id WHERE name = 'a'").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT name FROM u WHERE other = 'c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"
        )
        .await,
        vec!["b"]
    );
    assert_eq!(
        rows(&mut s, "SELECT name FROM u WHERE other = id").await,
        vec!["a"]
    );
    // Text that is not a uuid: 22P02, and nothing changes.
    for sql in [
        "SELECT name FROM u WHERE id = 'a0eebc99'",
        "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 '::uuid",
        "INSERT INTO u (id, name) VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g', 'bad')",
        "UPDATE u SET other = 'abcdefghijklmnop' WHERE name = 'c'",
        "DELETE FROM u WHERE id IN ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'x')",
    ] {
        assert_eq!(code(&mut s, sql).await, "22P02", "{sql}");
    }
    assert_eq!(
        error_message(&mut s, "SELECT * FROM u WHERE id = 'nope'").await,
        "invalid input syntax for type uuid: \"nope\""
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*), count(other) FROM u").await,
        vec!["4|2"]
    );
    // A duplicate key and a missing reference name the uuid as PostgreSQL prints it.
    let (c, detail) = error_detail(
        &mut s,
        "INSERT INTO u (id) VALUES ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11')",
    )
    .await;
    assert_eq!(c, "23505");
    assert_eq!(
        detail,
        "Key (id)=(a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11) already exists."
    );
    ok(
        &mut s,
        "CREATE TABLE r (n INT PRIMARY KEY, u uuid REFERENCES u ON DELETE CASCADE)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO r VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), (2, 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
    )
    .await;
    let (c, detail) = error_detail(
        &mut s,
        "INSERT INTO r VALUES (3, 'd0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
    )
    .await;
    assert_eq!(c, "23503");
    assert_eq!(
        detail,
        "Key (u)=(d0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11) is not present in table \"u\"."
    );
    ok(
        &mut s,
        "DELETE FROM u WHERE id = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
    )
    .await;
    assert_eq!(rows(&mut s, "SELECT n FROM r").await, vec!["2"]);
    // A uuid column neither takes nor compares with a number or a text column.
    assert_eq!(code(&mut s, "INSERT INTO r VALUES (4, 7)").await, "42804");
    // Bound parameters: a uuid, or its text.
    use datafusion::scalar::ScalarValue;
    let sel = s
        .prepare("SELECT name FROM u WHERE id = $1", &[])
        .await
        .unwrap();
    assert_eq!(
        sel.param_types,
        vec![datafusion::arrow::datatypes::DataType::FixedSizeBinary(16)]
    );
    let b0 = flotilla_sql::pg_uuid::parse("b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
    let bound = s
        .execute_prepared(
            &sel,
            vec![ScalarValue::FixedSizeBinary(16, Some(b0.to_vec()))],
        )
        .await
        .unwrap();
    let QueryResult::Rows { batches, .. } = bound else {
        panic!("rows expected")
    };
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let by_text = s
        .prepare("SELECT name FROM u WHERE id = $1::uuid", &[])
        .await
        .unwrap();
    let bound = s
        .execute_prepared(
            &by_text,
            vec![ScalarValue::Utf8(Some(
                "B0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11".into(),
            ))],
        )
        .await
        .unwrap();
    let QueryResult::Rows { batches, .. } = bound else {
        panic!("rows expected")
    };
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    // The catalog says uuid.
    assert_eq!(
        rows(
            &mut s,
            "SELECT data_type, udt_name FROM information_schema.columns WHERE table_name = 'u' AND column_name = 'id'"
        )
        .await,
        vec!["uuid|uuid"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'u'::regclass AND attname = 'other'"
        )
        .await,
        vec!["uuid"]
    );
}

/// Keys in a DETAIL are printed as PostgreSQL prints their values: a date as a date, a
/// numeric with its scale, a timestamp as a timestamp (they were raw day, unscaled and
/// microsecond counts).
#[tokio::test]
async fn key_details_print_values_as_postgres_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE k (d DATE UNIQUE, n NUMERIC(8,2) UNIQUE, t TIMESTAMP UNIQUE, f FLOAT8 UNIQUE)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO k VALUES ('2024-03-01', -0.5, '2024-03-01 10:00:00', 2.0)",
    )
    .await;
    for (sql, detail) in [
        (
            "INSERT INTO k (d) VALUES ('2024-03-01')",
            "Key (d)=(2024-03-01) already exists.",
        ),
        (
            "INSERT INTO k (n) VALUES (-0.50)",
            "Key (n)=(-0.50) already exists.",
        ),
        (
            "INSERT INTO k (t) VALUES ('2024-03-01 10:00:00')",
            "Key (t)=(2024-03-01 10:00:00) already exists.",
        ),
        (
            "INSERT INTO k (f) VALUES (2)",
            "Key (f)=(2) already exists.",
        ),
    ] {
        assert_eq!(
            error_detail(&mut s, sql).await,
            ("23505", detail.into()),
            "{sql}"
        );
    }
}

/// A cast of a column is named after the column, and may stand beside the column or be
/// ordered by its name (DataFusion refused both: apache/datafusion#13558). As in
/// PostgreSQL, `ORDER BY f` then sorts by the output column `f`, the text.
#[tokio::test]
async fn a_cast_of_a_column_stands_beside_it_and_orders_by_its_name() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE ft (f FLOAT8, n INT)").await;
    ok(&mut s, "INSERT INTO ft VALUES (10, 1), (9, 2)").await;
    assert_eq!(
        rows(&mut s, "SELECT f::text FROM ft ORDER BY f").await,
        vec!["10", "9"]
    );
    assert_eq!(
        rows(&mut s, "SELECT ft.f::int, f FROM ft ORDER BY n").await,
        vec!["10|10.0", "9|9.0"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT CAST(n AS text), sum(n) FROM ft GROUP BY n ORDER BY n DESC"
        )
        .await,
        vec!["2|2", "1|1"]
    );
    let QueryResult::Rows { schema, .. } = run(&mut s, "SELECT f::text, n::int8 FROM ft")
        .await
        .unwrap()
    else {
        panic!("rows expected")
    };
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["f", "n"]);
}

#[tokio::test]
async fn json_and_jsonb_columns_read_query_and_print_as_in_postgres() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE d (id INT PRIMARY KEY, j JSON, b JSONB NOT NULL DEFAULT '{}')",
    )
    .await;
    ok(&mut s, "CREATE UNIQUE INDEX d_b ON d (b)").await;
    ok(
        &mut s,
        r#"INSERT INTO d VALUES (1, ' {"b":1, "a":[1,2,{"c":"x"}]} ', '{"b":1, "a":[1,2,{"c":"x"}]}'),
           (2, '[1, 2.50, "three", null]', '[1, 2.50, "three", null]'),
           (3, NULL, '{"a":1, "a":2, "name":"Ann", "n":1e2, "tags":["x","y"]}')"#,
    )
    .await;
    ok(&mut s, "INSERT INTO d (id) VALUES (4)").await;
    // json keeps the text as written; jsonb prints its canonical form (outputs checked
    // against PostgreSQL 15).
    assert_eq!(
        rows(&mut s, "SELECT id, j::text, b::text FROM d ORDER BY id").await,
        vec![
            r#"1| {"b":1, "a":[1,2,{"c":"x"}]} |{"a": [1, 2, {"c": "x"}], "b": 1}"#,
            r#"2|[1, 2.50, "three", null]|[1, 2.50, "three", null]"#,
            r#"3|NULL|{"a": 2, "n": 100, "name": "Ann", "tags": ["x", "y"]}"#,
            "4|NULL|{}",
        ]
    );
    // ->, ->>, #>, #>> on both; json's -> returns the member's text as written.
    assert_eq!(
        rows(
            &mut s,
            "SELECT (j -> 'a')::text, (b -> 'a')::text, b ->> 'name', (b -> -1)::text, \
             b #>> '{a,2,c}', (j #> ARRAY['a','2'])::text FROM d ORDER BY id"
        )
        .await,
        vec![
            r#"[1,2,{"c":"x"}]|[1, 2, {"c": "x"}]|NULL|NULL|x|{"c":"x"}"#,
            "NULL|NULL|NULL|null|NULL|NULL",
            "NULL|2|Ann|NULL|NULL|NULL",
            "NULL|NULL|NULL|NULL|NULL|NULL",
        ]
    );
    // Containment, key existence, equality in any spelling, IN lists.
    for (sql, ids) in [
        (r#"SELECT id FROM d WHERE b @> '{"tags":["y"]}'"#, vec!["3"]),
        (r#"SELECT id FROM d WHERE '{"b":1}' <@ b"#, vec!["1"]),
        ("SELECT id FROM d WHERE b @> '2.5'", vec!["2"]),
        ("SELECT id FROM d WHERE b ? 'name'", vec!["3"]),
        ("SELECT id FROM d WHERE b ? 'three'", vec!["2"]),
        (
            "SELECT id FROM d WHERE b ?| ARRAY['b','name'] ORDER BY id",
            vec!["1", "3"],
        ),
        ("SELECT id FROM d WHERE b ?& '{a,n}'", vec!["3"]),
        (
            r#"SELECT id FROM d WHERE b = '{ "b" : 1, "a" : [1,2,{"c":"x"}] }'"#,
            vec!["1"],
        ),
        (
            r#"SELECT id FROM d WHERE b IN ('{}', '[1]') ORDER BY id"#,
            vec!["4"],
        ),
        ("SELECT id FROM d WHERE b ->> 'name' = 'Ann'", vec!["3"]),
    ] {
        assert_eq!(rows(&mut s, sql).await, ids, "{sql}");
    }
    // The unique index compares canonical forms.
    assert_eq!(
        code(
            &mut s,
            r#"INSERT INTO d (id, b) VALUES (5, '{"b": 1, "a": [1, 2, {"c": "x"}]}')"#
        )
        .await,
        "23505"
    );
    // Functions and operators that build values.
    assert_eq!(
        rows(
            &mut s,
            r#"SELECT ('{"a":1}'::jsonb || '{"a":2,"b":3}')::text, ('[1]'::jsonb || '2')::text,
                      jsonb_build_object('a', 1, 'b', 'two', 'c', NULL, 'd', 1.50)::text,
                      json_build_object('a', 1)::text, jsonb_build_array(1, 'x', NULL)::text,
                      to_jsonb('say "hi"'::text)::text, jsonb_typeof(b -> 'tags'),
                      jsonb_array_length(b -> 'tags'), (b -> 'n')::int + 1, pg_typeof(b)
               FROM d WHERE id = 3"#
        )
        .await,
        vec![
            r#"{"a": 2, "b": 3}|[1, 2]|{"a": 1, "b": "two", "c": null, "d": 1.50}|{"a" : 1}|[1, "x", null]|"say \"hi\""|array|2|101|jsonb"#
        ]
    );
    ok(
        &mut s,
        r#"UPDATE d SET b = b || '{"seen": true}' WHERE id = 4"#,
    )
    .await;
    ok(&mut s, "ALTER TABLE d ADD COLUMN extra jsonb DEFAULT '[]'").await;
    assert_eq!(
        rows(&mut s, "SELECT b::text, extra::text FROM d WHERE id = 4").await,
        vec![r#"{"seen": true}|[]"#]
    );
    // A parameter compared with a jsonb is read as one.
    let sel = s
        .prepare("SELECT id FROM d WHERE b @> $1 ORDER BY id", &[])
        .await
        .unwrap();
    let r = s
        .execute_prepared(
            &sel,
            vec![datafusion::scalar::ScalarValue::Utf8(Some(
                r#"{"a":2}"#.into(),
            ))],
        )
        .await
        .unwrap();
    match r {
        QueryResult::Rows { batches, .. } => {
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1)
        }
        other => panic!("{other:?}"),
    }
    // Errors as PostgreSQL's, changing nothing.
    for (sql, want) in [
        ("INSERT INTO d (id, b) VALUES (6, '{\"a\":}')", "22P02"),
        ("INSERT INTO d (id, j) VALUES (6, '[1,]')", "22P02"),
        (r#"INSERT INTO d (id, b) VALUES (6, '"\u0000"')"#, "22P05"),
        ("SELECT 1::jsonb", "42846"),
        ("SELECT j = j FROM d", "42883"),
        (r#"SELECT ('{"a":"x"}'::jsonb -> 'a')::int"#, "22023"),
        ("SELECT jsonb_array_length('{}')", "22023"),
        ("SELECT jsonb_build_object('a')", "22023"),
    ] {
        assert_eq!(code(&mut s, sql).await, want, "{sql}");
    }
    assert_eq!(rows(&mut s, "SELECT count(*) FROM d").await, vec!["4"]);
}

/// json_agg, jsonb_agg, json_object_agg and jsonb_object_agg print what PostgreSQL
/// prints, keep ORDER BY, FILTER and DISTINCT within the aggregate, work as window
/// functions, and are NULL over no rows (every output checked against PostgreSQL 15).
#[tokio::test]
async fn json_aggregates_collect_rows_as_postgres_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE t (id INT PRIMARY KEY, k TEXT, v INT, j JSONB, g INT)",
    )
    .await;
    ok(
        &mut s,
        r#"INSERT INTO t VALUES (1, 'a', 1, '{"x":1}', 1), (2, 'b', 2, '[1,2]', 1),
           (3, 'c', NULL, NULL, 2), (4, 'a', 4, '"s"', 2)"#,
    )
    .await;
    for (sql, want) in [
        (
            "SELECT json_agg(v ORDER BY id)::text FROM t",
            vec!["[1, 2, null, 4]"],
        ),
        (
            "SELECT jsonb_agg(v ORDER BY id)::text FROM t",
            vec!["[1, 2, null, 4]"],
        ),
        // DESC puts NULL first, as in PostgreSQL.
        (
            "SELECT json_agg(v ORDER BY v DESC)::text FROM t",
            vec!["[null, 4, 2, 1]"],
        ),
        (
            "SELECT g, jsonb_agg(j ORDER BY k)::text FROM t GROUP BY g ORDER BY g",
            vec![r#"1|[{"x": 1}, [1, 2]]"#, r#"2|["s", null]"#],
        ),
        (
            "SELECT json_agg(j ORDER BY id)::text FROM t",
            vec![r#"[{"x": 1}, [1, 2], null, "s"]"#],
        ),
        // Arrays after the first start a line of their own.
        (
            "SELECT json_agg(ARRAY[v, v] ORDER BY id)::text FROM t",
            vec!["[[1,1], \n [2,2], \n [null,null], \n [4,4]]"],
        ),
        (
            "SELECT json_agg(json_build_object('k', k, 'v', v) ORDER BY v)::text FROM t",
            vec![
                r#"[{"k" : "a", "v" : 1}, {"k" : "b", "v" : 2}, {"k" : "a", "v" : 4}, {"k" : "c", "v" : null}]"#,
            ],
        ),
        ("SELECT json_agg(v)::text FROM t WHERE false", vec!["NULL"]),
        (
            "SELECT json_agg(DISTINCT k ORDER BY k)::text FROM t",
            vec![r#"["a", "b", "c"]"#],
        ),
        (
            "SELECT json_agg(v ORDER BY id) FILTER (WHERE v > 1)::text FROM t",
            vec!["[2, 4]"],
        ),
        (
            "SELECT json_object_agg(k, v ORDER BY id)::text FROM t",
            vec![r#"{ "a" : 1, "b" : 2, "c" : null, "a" : 4 }"#],
        ),
        // jsonb keeps the last value of a key, and sorts the keys.
        (
            "SELECT jsonb_object_agg(k, v ORDER BY id)::text FROM t",
            vec![r#"{"a": 4, "b": 2, "c": null}"#],
        ),
        (
            "SELECT json_object_agg(k, j ORDER BY id)::text FROM t",
            vec![r#"{ "a" : {"x": 1}, "b" : [1, 2], "c" : null, "a" : "s" }"#],
        ),
        // A key of any type is a string.
        (
            "SELECT jsonb_object_agg(v, k)::text FROM t WHERE v IS NOT NULL",
            vec![r#"{"1": "a", "2": "b", "4": "a"}"#],
        ),
        (
            "SELECT json_object_agg(k, v)::text FROM t WHERE false",
            vec!["NULL"],
        ),
        (
            "SELECT json_agg(v) OVER (ORDER BY v)::text FROM t ORDER BY v",
            vec!["[1]", "[1, 2]", "[1, 2, 4]", "[1, 2, 4, null]"],
        ),
        (
            "SELECT k, json_agg(v) OVER (PARTITION BY k)::text FROM t ORDER BY k, v",
            vec!["a|[1, 4]", "a|[1, 4]", "b|[2]", "c|[null]"],
        ),
        (
            r#"SELECT json_agg(x ORDER BY x)::text FROM (VALUES ('a"b'), (NULL)) s(x)"#,
            vec![r#"["a\"b", null]"#],
        ),
        (
            "SELECT json_agg(x)::text FROM (VALUES ('2024-01-01 10:00:00.120+00'::timestamptz)) s(x)",
            vec![r#"["2024-01-01T10:00:00.12+00:00"]"#],
        ),
    ] {
        assert_eq!(rows(&mut s, sql).await, want, "{sql}");
    }
    // A NULL key is refused, as in PostgreSQL; a NULL key filtered out is not seen.
    assert_eq!(
        code(&mut s, "SELECT json_object_agg(v, k) FROM t").await,
        "22023"
    );
    assert_eq!(
        error_message(&mut s, "SELECT jsonb_object_agg(v, k) FROM t").await,
        "field name must not be null"
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT jsonb_object_agg(v, k) FILTER (WHERE v IS NOT NULL)::text FROM t"
        )
        .await,
        vec![r#"{"1": "a", "2": "b", "4": "a"}"#]
    );
    assert_eq!(code(&mut s, "SELECT json_agg(v, k) FROM t").await, "42883");
}

/// jsonb's `-`, `#-`, jsonb_set, jsonb_insert, json[b]_strip_nulls and jsonb_pretty
/// return what PostgreSQL returns and refuse what it refuses, with its codes (each
/// checked against PostgreSQL 15); an UPDATE can edit a document in place with them.
#[tokio::test]
async fn jsonb_edits_return_and_refuse_what_postgres_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    for (sql, want) in [
        (
            r#"SELECT ('{"a":1,"b":2}'::jsonb - 'a')::text"#,
            r#"{"b": 2}"#,
        ),
        (r#"SELECT ('["a","b","a"]'::jsonb - 'a')::text"#, r#"["b"]"#),
        (
            r#"SELECT ('{"a":1,"b":2,"c":3}'::jsonb - '{a,c}'::text[])::text"#,
            r#"{"b": 2}"#,
        ),
        (
            r#"SELECT ('{"a":1,"b":2,"c":3}'::jsonb - ARRAY['a','c'])::text"#,
            r#"{"b": 2}"#,
        ),
        ("SELECT ('[1,2,3]'::jsonb - 1)::text", "[1, 3]"),
        ("SELECT ('[1,2,3]'::jsonb - -1)::text", "[1, 2]"),
        ("SELECT ('[1,2,3]'::jsonb - 5)::text", "[1, 2, 3]"),
        (r#"SELECT ('{"a":1}'::jsonb - NULL::text)::text"#, "NULL"),
        (
            r#"SELECT ('{"a":{"b":[1,2,3]}}'::jsonb #- '{a,b,1}')::text"#,
            r#"{"a": {"b": [1, 3]}}"#,
        ),
        (
            r#"SELECT ('{"a":{"b":[1,2,3]}}'::jsonb #- '{a,x,1}')::text"#,
            r#"{"a": {"b": [1, 2, 3]}}"#,
        ),
        ("SELECT ('[1,2]'::jsonb #- '{}')::text", "[1, 2]"),
        (
            r#"SELECT jsonb_set('{"a":{"b":1}}', '{a,b}', '2')::text"#,
            r#"{"a": {"b": 2}}"#,
        ),
        (
            r#"SELECT jsonb_set('{"a":{"b":1}}', '{a,c}', '[2]')::text"#,
            r#"{"a": {"b": 1, "c": [2]}}"#,
        ),
        (
            r#"SELECT jsonb_set('{"a":{"b":1}}', '{a,c}', '[2]', false)::text"#,
            r#"{"a": {"b": 1}}"#,
        ),
        (
            r#"SELECT jsonb_set('{"a":{"b":1}}', '{x,c}', '2')::text"#,
            r#"{"a": {"b": 1}}"#,
        ),
        (
            r#"SELECT jsonb_set('{"a":{"b":1}}', '{a,b,c}', '2')::text"#,
            r#"{"a": {"b": 1}}"#,
        ),
        (
            r#"SELECT jsonb_set('[1,2,3]', '{1}', '"x"')::text"#,
            r#"[1, "x", 3]"#,
        ),
        (
            r#"SELECT jsonb_set('[1,2,3]', '{10}', '"x"')::text"#,
            r#"[1, 2, 3, "x"]"#,
        ),
        (
            r#"SELECT jsonb_set('[1,2,3]', '{-10}', '"x"')::text"#,
            r#"["x", 1, 2, 3]"#,
        ),
        (
            r#"SELECT jsonb_set('[1,2,3]', '{-1}', '"x"')::text"#,
            r#"[1, 2, "x"]"#,
        ),
        (r#"SELECT jsonb_set('{"a":1}', '{a}', NULL)::text"#, "NULL"),
        (
            r#"SELECT jsonb_set('{"a":1}', '{}', '1')::text"#,
            r#"{"a": 1}"#,
        ),
        (
            r#"SELECT jsonb_insert('[1,2,3]', '{1}', '"x"')::text"#,
            r#"[1, "x", 2, 3]"#,
        ),
        (
            r#"SELECT jsonb_insert('[1,2,3]', '{1}', '"x"', true)::text"#,
            r#"[1, 2, "x", 3]"#,
        ),
        (
            r#"SELECT jsonb_insert('[1,2,3]', '{-1}', '"x"', true)::text"#,
            r#"[1, 2, 3, "x"]"#,
        ),
        (
            r#"SELECT jsonb_insert('{"a":1}', '{b}', '2')::text"#,
            r#"{"a": 1, "b": 2}"#,
        ),
        (
            r#"SELECT jsonb_strip_nulls('{"a":null,"b":[null,{"c":null}]}')::text"#,
            r#"{"b": [null, {}]}"#,
        ),
        (
            r#"SELECT json_strip_nulls('{"a":null, "b":[null,{"c":null}]}')::text"#,
            r#"{"b":[null,{}]}"#,
        ),
        (
            r#"SELECT jsonb_pretty('{"a":[1,{"b":null}],"c":{},"d":[]}')"#,
            "{\n    \"a\": [\n        1,\n        {\n            \"b\": null\n        }\n    ],\n    \"c\": {\n    },\n    \"d\": [\n    ]\n}",
        ),
        ("SELECT jsonb_pretty('1')", "1"),
    ] {
        assert_eq!(rows(&mut s, sql).await, vec![want], "{sql}");
    }
    for (sql, want) in [
        (r#"SELECT '{"a":1}'::jsonb - 1"#, "22023"),
        ("SELECT '1'::jsonb - 'a'", "22023"),
        ("SELECT '1'::jsonb - 0", "22023"),
        (
            r#"SELECT '{"a":{"b":[1,2,3]}}'::jsonb #- '{a,b,x}'"#,
            "22P02",
        ),
        ("SELECT '1'::jsonb #- '{a}'", "22023"),
        (r#"SELECT jsonb_set('[1,2,3]', '{a}', '"x"')"#, "22P02"),
        (r#"SELECT jsonb_set('1', '{a}', '"x"')"#, "22023"),
        (r#"SELECT jsonb_set('{"a":1}', '{a,NULL}', '2')"#, "22004"),
        (r#"SELECT jsonb_insert('{"a":1}', '{a}', '2')"#, "22023"),
        (r#"SELECT '{"a":1}'::json - 'a'"#, "42883"),
    ] {
        assert_eq!(code(&mut s, sql).await, want, "{sql}");
    }
    assert_eq!(
        error_message(&mut s, r#"SELECT jsonb_set('{"a":[1]}', '{a,x}', '2')"#).await,
        r#"path element at position 2 is not an integer: "x""#
    );
    // Editing a stored document in place.
    ok(&mut s, "CREATE TABLE docs (id INT PRIMARY KEY, d JSONB)").await;
    ok(
        &mut s,
        r#"INSERT INTO docs VALUES (1, '{"name":"a","tags":["x"],"old":true}')"#,
    )
    .await;
    ok(
        &mut s,
        r#"UPDATE docs SET d = (jsonb_insert(d, '{tags,-1}', '"y"', true) #- '{tags,0}') - 'old'
           WHERE id = 1"#,
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT d::text FROM docs").await,
        vec![r#"{"name": "a", "tags": ["y"]}"#]
    );
}

/// json[b]_array_elements[_text] and json[b]_object_keys in a select list yield a row
/// per element or key, named as in PostgreSQL (every output checked against
/// PostgreSQL 15); in a FROM clause they are refused with a hint.
#[tokio::test]
async fn json_set_returning_functions_yield_rows_in_a_select_list() {
    let db = TestDb::new().await;
    let mut s = db.session();
    let all = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (sql, want) in [
        (
            r#"SELECT jsonb_array_elements('[1, "a", null, {"b":2}]')::text"#,
            all(&["1", r#""a""#, "null", r#"{"b": 2}"#]),
        ),
        (
            r#"SELECT jsonb_array_elements_text('[1, "a", null, {"b":2}]')"#,
            all(&["1", "a", "NULL", r#"{"b": 2}"#]),
        ),
        (
            r#"SELECT json_array_elements('[1,  "a" , {"b":2}]')::text"#,
            all(&["1", r#""a""#, r#"{"b":2}"#]),
        ),
        (
            r#"SELECT json_array_elements_text('[1,"a\"b",null]')"#,
            all(&["1", "a\"b", "NULL"]),
        ),
        // jsonb's keys come sorted and once; json's as written.
        (
            r#"SELECT jsonb_object_keys('{"b":1,"a":2}')"#,
            all(&["a", "b"]),
        ),
        (
            r#"SELECT json_object_keys('{"b":1,"a":2,"b":3}')"#,
            all(&["b", "a", "b"]),
        ),
        ("SELECT jsonb_array_elements(NULL)", all(&[])),
    ] {
        assert_eq!(rows(&mut s, sql).await, want, "{sql}");
    }
    for (sql, message) in [
        (
            r#"SELECT jsonb_array_elements('{"a":1}')"#,
            "cannot extract elements from an object",
        ),
        (
            "SELECT jsonb_array_elements('1')",
            "cannot extract elements from a scalar",
        ),
        (
            "SELECT jsonb_object_keys('[1]')",
            "cannot call jsonb_object_keys on an array",
        ),
        (
            "SELECT json_object_keys('1')",
            "cannot call json_object_keys on a scalar",
        ),
    ] {
        assert_eq!(code(&mut s, sql).await, "22023", "{sql}");
        assert_eq!(error_message(&mut s, sql).await, message, "{sql}");
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT * FROM jsonb_array_elements('[1]') WITH ORDINALITY"
        )
        .await,
        ["1|1"]
    );
    ok(&mut s, "CREATE TABLE dj (id INT PRIMARY KEY, d JSONB)").await;
    ok(
        &mut s,
        r#"INSERT INTO dj VALUES (1, '{"tags":["x","y"]}'), (2, '{"tags":[]}'), (3, '{}')"#,
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, jsonb_array_elements_text(d -> 'tags') AS tag FROM dj ORDER BY id, tag"
        )
        .await,
        vec!["1|x", "1|y"]
    );
    // A scalar jsonb's element 0 (or -1) is the scalar itself, as in PostgreSQL.
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, jsonb_array_elements(d -> 'tags') ->> 0 FROM dj ORDER BY id"
        )
        .await,
        vec!["1|x", "1|y"]
    );
    assert_eq!(
        rows(
            &mut s,
            r#"SELECT ('"x"'::jsonb -> -1)::text, '"x"'::jsonb ->> 1, '1'::json ->> 0"#
        )
        .await,
        vec![r#""x"|NULL|NULL"#]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM (SELECT jsonb_object_keys(d) k FROM dj) s"
        )
        .await,
        vec!["2"]
    );
}

/// An array in PostgreSQL's text form cast to an array type is read element by element,
/// as PostgreSQL reads it (Arrow's cast alone would make a one-element array).
#[tokio::test]
async fn array_literals_in_text_form_are_read_as_postgres_reads_them() {
    let db = TestDb::new().await;
    let mut s = db.session();
    for (sql, want) in [
        ("SELECT '{1,2,NULL}'::int[]", "[1, 2, NULL]"),
        (r#"SELECT cardinality('{a,"b c"}'::text[])"#, "2"),
        (r#"SELECT ('{a,"b c"}'::text[])[2]"#, "b c"),
        ("SELECT 2 = ANY('{1,2,3}'::int[])", "true"),
        ("SELECT cardinality('{}'::text[])", "0"),
        ("SELECT array_length('{1.5,2}'::float8[], 1)", "2"),
    ] {
        assert_eq!(rows(&mut s, sql).await, vec![want], "{sql}");
    }
    for (sql, want) in [
        ("SELECT '{1,x}'::int[]", "22P02"),
        ("SELECT 'x'::int[]", "22P02"),
        ("SELECT '{{1,2},{3,4}}'::int[]", "0A000"),
    ] {
        assert_eq!(code(&mut s, sql).await, want, "{sql}");
    }
}

/// A partial index (CREATE INDEX ... WHERE) has entries for the rows its predicate
/// covers and no others: a unique one constrains only them (the soft-delete pattern),
/// its backfill skips the rest, writes move rows in and out of it, a query uses it only
/// when its own conditions include the predicate, and it is an index, not a constraint.
#[tokio::test]
async fn partial_indexes_index_and_constrain_only_the_rows_their_predicate_covers() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE users (id INT PRIMARY KEY, email TEXT, deleted_at TIMESTAMP, \
         active BOOLEAN, n INT, status VARCHAR(10))",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO users VALUES (1, 'a@x', NULL, true, 1, 'new'), \
         (2, 'a@x', '2024-01-01', true, 2, 'old'), (3, 'b@x', '2024-01-01', false, 3, 'new')",
    )
    .await;
    // Rows 1 and 2 share an email, but only row 1 is live: the backfill indexes it alone.
    ok(
        &mut s,
        "CREATE UNIQUE INDEX users_email_live ON users (email) WHERE deleted_at IS NULL",
    )
    .await;
    assert_eq!(
        rows(&mut s, "ADMIN CHECK TABLE users").await,
        ["users_email_live|3|1|ok"]
    );
    // Deleted rows may repeat a live email; a second live one may not.
    ok(
        &mut s,
        "INSERT INTO users VALUES (4, 'a@x', '2024-02-02', true, 4, 'x')",
    )
    .await;
    assert_eq!(
        error_detail(
            &mut s,
            "INSERT INTO users VALUES (5, 'a@x', NULL, true, 5, 'x')"
        )
        .await,
        ("23505", "Key (email)=(a@x) already exists.".to_string())
    );
    // An UPDATE that brings a row into the predicate claims its key; one that takes a
    // row out frees it.
    assert_eq!(
        code(&mut s, "UPDATE users SET deleted_at = NULL WHERE id = 2").await,
        "23505"
    );
    ok(&mut s, "UPDATE users SET deleted_at = now() WHERE id = 1").await;
    ok(&mut s, "UPDATE users SET deleted_at = NULL WHERE id = 2").await;
    ok(&mut s, "UPDATE users SET email = 'c@x' WHERE id = 3").await;
    ok(&mut s, "DELETE FROM users WHERE id = 4").await;
    // A proposed row colliding with a live one is skipped by a DO NOTHING without
    // target; PostgreSQL infers no partial index from a bare column list.
    assert_eq!(
        ok(
            &mut s,
            "INSERT INTO users VALUES (6, 'a@x', NULL, true, 6, 'x') ON CONFLICT DO NOTHING"
        )
        .await,
        "INSERT 0 0"
    );
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO users VALUES (6, 'a@x', NULL, true, 6, 'x') \
             ON CONFLICT (email) DO NOTHING"
        )
        .await,
        "42P10"
    );
    assert_eq!(
        rows(&mut s, "ADMIN CHECK TABLE users").await,
        ["users_email_live|3|1|ok"]
    );
    // A query reads the index only when its conditions include the predicate.
    let plan = rows(
        &mut s,
        "EXPLAIN SELECT id FROM users WHERE email = 'a@x' AND deleted_at IS NULL",
    )
    .await
    .join("\n");
    assert!(plan.contains("index users_email_live"), "{plan}");
    let plan = rows(&mut s, "EXPLAIN SELECT id FROM users WHERE email = 'a@x'")
        .await
        .join("\n");
    assert!(!plan.contains("users_email_live"), "{plan}");
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM users WHERE email = 'a@x' AND deleted_at IS NULL"
        )
        .await,
        ["2"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM users WHERE email = 'a@x' ORDER BY id"
        )
        .await,
        ["1", "2"]
    );

    // Other shapes: a boolean column, IN (and the ORs the optimizer makes of a short
    // one), NOT IN, comparisons either way round, and a literal read as the column's
    // type.
    ok(
        &mut s,
        "CREATE INDEX users_n_active ON users (n) WHERE active",
    )
    .await;
    ok(
        &mut s,
        "CREATE INDEX users_status ON users (status) \
         WHERE status IN ('new', 'old') AND 1 < n AND NOT active",
    )
    .await;
    ok(
        &mut s,
        "CREATE INDEX users_recent ON users (n) \
         WHERE deleted_at >= '2024-01-15' AND status NOT IN ('x', 'y') AND n <> 0",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO users VALUES (7, 'd@x', '2024-03-01', false, 7, 'new'), \
         (8, 'e@x', '2024-01-10', true, 8, 'old'), (9, 'f@x', '2024-05-01', true, 9, 'x')",
    )
    .await;
    assert_eq!(
        rows(&mut s, "ADMIN CHECK TABLE users").await,
        [
            "users_email_live|6|1|ok",
            "users_n_active|6|4|ok",
            "users_status|6|2|ok",
            "users_recent|6|2|ok"
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM users WHERE n IN (2, 3, 7, 8) AND active ORDER BY id"
        )
        .await,
        ["2", "8"]
    );
    let plan = rows(
        &mut s,
        "EXPLAIN SELECT id FROM users WHERE n = 8 AND active",
    )
    .await
    .join("\n");
    assert!(plan.contains("index users_n_active"), "{plan}");
    assert_eq!(
        rows(
            &mut s,
            "EXPLAIN CREATE INDEX users_q ON users (n) WHERE 0 < n AND status = 'x'"
        )
        .await[0],
        "CREATE INDEX users_q ON users (n) WHERE n > 0 AND \"status\" = 'x'::text"
    );
    // Definitions as pg_get_indexdef prints them, and psql's pretty form.
    assert_eq!(
        rows(
            &mut s,
            "SELECT pg_get_indexdef(indexrelid), pg_get_indexdef(indexrelid, 0, true) \
             FROM pg_index WHERE indpred IS NOT NULL ORDER BY indexrelid"
        )
        .await,
        [
            "CREATE UNIQUE INDEX users_email_live ON public.users USING btree (email) \
             WHERE (deleted_at IS NULL)|CREATE UNIQUE INDEX users_email_live ON \
             public.users USING btree (email) WHERE deleted_at IS NULL",
            "CREATE INDEX users_n_active ON public.users USING btree (n) WHERE active|\
             CREATE INDEX users_n_active ON public.users USING btree (n) WHERE active",
            "CREATE INDEX users_status ON public.users USING btree (status) WHERE \
             ((\"status\" = ANY (ARRAY['new'::text, 'old'::text])) AND (n > 1) AND \
             (NOT active))|CREATE INDEX users_status ON public.users USING btree \
             (status) WHERE \"status\" = ANY (ARRAY['new'::text, 'old'::text]) AND \
             n > 1 AND NOT active",
            "CREATE INDEX users_recent ON public.users USING btree (n) WHERE \
             ((deleted_at >= '2024-01-15 00:00:00'::timestamp without time zone) AND \
             (\"status\" <> 'x'::text) AND (\"status\" <> 'y'::text) AND (n <> 0))|\
             CREATE INDEX users_recent ON public.users USING btree (n) WHERE \
             deleted_at >= '2024-01-15 00:00:00'::timestamp without time zone AND \
             \"status\" <> 'x'::text AND \"status\" <> 'y'::text AND n <> 0"
        ]
    );
    // A partial unique index is no constraint: not in pg_constraint, not droppable as
    // one, not a foreign key's target.
    assert_eq!(
        rows(
            &mut s,
            "SELECT conname FROM pg_constraint WHERE conrelid = 'users'::regclass"
        )
        .await,
        ["users_pkey"]
    );
    assert_eq!(
        code(&mut s, "ALTER TABLE users DROP CONSTRAINT users_email_live").await,
        "42704"
    );
    assert_eq!(
        code(
            &mut s,
            "CREATE TABLE orders (id INT PRIMARY KEY, email TEXT REFERENCES users (email))"
        )
        .await,
        "42830"
    );

    // Predicates outside the kept shape are refused, and change nothing.
    for (predicate, expected) in [
        ("n > 1 OR active", "0A000"),
        ("n + 1 > 2", "0A000"),
        ("lower(email) = 'x'", "0A000"),
        ("n IN (SELECT 1)", "0A000"),
        ("n > 1.5", "0A000"),
        ("nope IS NULL", "42703"),
        ("n = 'abc'", "22P02"),
        ("deleted_at < now()", "42P17"),
        ("deleted_at < CURRENT_TIMESTAMP", "42P17"),
        ("n > abs(-1)", "0A000"),
    ] {
        assert_eq!(
            code(
                &mut s,
                &format!("CREATE INDEX users_bad ON users (n) WHERE {predicate}")
            )
            .await,
            expected,
            "{predicate}"
        );
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM pg_index WHERE indpred IS NOT NULL"
        )
        .await,
        ["4"]
    );
    // A duplicate among the covered rows fails the build and leaves no index.
    ok(
        &mut s,
        "UPDATE users SET deleted_at = NULL, email = 'e@x' WHERE id = 9",
    )
    .await;
    assert_eq!(
        code(
            &mut s,
            "CREATE UNIQUE INDEX users_email_active ON users (email) WHERE active"
        )
        .await,
        "23505"
    );
    // Renaming a column the predicate reads renames it there; dropping it drops the
    // index, as in PostgreSQL.
    ok(
        &mut s,
        "ALTER TABLE users RENAME COLUMN deleted_at TO gone_at",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT pg_get_indexdef('users_email_live'::regclass)"
        )
        .await,
        [
            "CREATE UNIQUE INDEX users_email_live ON public.users USING btree (email) \
          WHERE (gone_at IS NULL)"
        ]
    );
    ok(&mut s, "ALTER TABLE users DROP COLUMN active").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE indpred IS NOT NULL ORDER BY 1"
        )
        .await,
        ["users_email_live", "users_recent"]
    );
    assert!(
        rows(&mut s, "ADMIN CHECK TABLE users")
            .await
            .iter()
            .all(|r| r.ends_with("|ok"))
    );
}

/// Inside a subquery, `t.c` names column `c` of the enclosing query's relation `t` even
/// where a relation of the subquery has a column `t`, as PostgreSQL reads it (relations
/// first, innermost out). DataFusion read it as field `c` of that column and failed
/// ("Cannot access field ... is not Struct"): a time-series table with a column `t`
/// aliased `t` could not be queried with a correlated subquery. Results checked against
/// PostgreSQL 15.
#[tokio::test]
async fn a_qualified_name_in_a_subquery_is_the_outer_relations_before_an_inner_column() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE metrics (host TEXT, t TIMESTAMPTZ, v FLOAT8)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO metrics VALUES ('a', '2024-01-01', 1), ('a', '2024-01-02', 3), \
         ('b', '2024-01-01', 5)",
    )
    .await;
    ok(&mut s, "CREATE TABLE t2 (id INT PRIMARY KEY, a INT)").await;
    ok(&mut s, "INSERT INTO t2 VALUES (1, 10), (2, 20), (3, 30)").await;
    ok(
        &mut s,
        "CREATE TABLE host (name TEXT PRIMARY KEY, rack INT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO host VALUES ('a', 1), ('b', 2), ('c', 3)",
    )
    .await;
    for (q, want) in [
        (
            "SELECT t.host, t.v FROM metrics t \
             WHERE t.v > (SELECT avg(v) FROM metrics m WHERE m.host = t.host) ORDER BY 1",
            vec!["a|3.0"],
        ),
        (
            "SELECT host, v FROM metrics t WHERE EXISTS \
             (SELECT 1 FROM metrics m WHERE m.host = t.host AND m.v > t.v) ORDER BY 1, 2",
            vec!["a|1.0"],
        ),
        // `t.*` and `count(t.*)` of the renamed relation.
        (
            "SELECT t.host, t.t::date, (SELECT count(*) FROM metrics m WHERE m.host = t.host) \
             FROM metrics t ORDER BY 1, 2",
            vec!["a|2024-01-01|2", "a|2024-01-02|2", "b|2024-01-01|1"],
        ),
        (
            "SELECT t.* FROM metrics t \
             WHERE t.v = (SELECT max(v) FROM metrics m WHERE m.host = t.host) ORDER BY 1",
            vec!["a|2024-01-02T00:00:00Z|3.0", "b|2024-01-01T00:00:00Z|5.0"],
        ),
        (
            "SELECT count(t.*), max(t.v) FROM metrics t \
             WHERE EXISTS (SELECT 1 FROM metrics m WHERE m.v > t.v)",
            vec!["2|3.0"],
        ),
        // LATERAL, where `y.t < t.t` reads both.
        (
            "SELECT t.host, l.n FROM metrics t, LATERAL (SELECT count(*) n FROM metrics y \
             WHERE y.host = t.host AND y.t < t.t) l ORDER BY 1, 2",
            vec!["a|0", "a|1", "b|0"],
        ),
        (
            "SELECT a.id, x.id FROM t2 a, LATERAL (SELECT * FROM t2 b WHERE b.id >= a.id) x \
             WHERE a.id > 1 ORDER BY 1, 2",
            vec!["2|2", "2|3", "3|3"],
        ),
        // A table without an alias, and a subquery in the select list.
        (
            "SELECT host.name, (SELECT count(*) FROM metrics WHERE metrics.host = host.name) \
             FROM host ORDER BY 1",
            vec!["a|2", "b|1", "c|0"],
        ),
        (
            "SELECT (SELECT a.id FROM t2 b WHERE b.id = a.id) FROM t2 a ORDER BY 1",
            vec!["1", "2", "3"],
        ),
        // A reference to the subquery's own relation of that name is its own.
        (
            "SELECT count(*) FROM t2 a WHERE EXISTS (SELECT 1 FROM metrics t2 WHERE t2.v = 5)",
            vec!["3"],
        ),
    ] {
        assert_eq!(rows(&mut s, q).await, want, "{q}");
    }
    // UPDATE and DELETE of a relation whose name is its own column.
    ok(
        &mut s,
        "UPDATE t2 a SET a = a.a + 100 WHERE EXISTS \
         (SELECT 1 FROM t2 b WHERE b.id = a.id AND b.a > 15)",
    )
    .await;
    ok(
        &mut s,
        "DELETE FROM t2 a WHERE EXISTS (SELECT 1 FROM t2 b WHERE b.id = a.id AND b.a > 120)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT id, a FROM t2 ORDER BY id").await,
        ["1|10", "2|120"]
    );
}

/// A relation's name used as a value is the row of its columns, as in PostgreSQL:
/// `row_to_json(t)`, `to_jsonb(t.*)`, `json_agg(t ORDER BY ...)` over tables, derived
/// tables, CTEs and VALUES, NULL for a row an outer join made up, and a column of the same
/// name winning over the relation.
#[tokio::test]
async fn whole_row_references_are_rows_of_the_relations_columns() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE a (id INT PRIMARY KEY, name TEXT, tags JSONB)",
    )
    .await;
    ok(
        &mut s,
        "CREATE TABLE b (id INT PRIMARY KEY, a_id INT, note TEXT)",
    )
    .await;
    ok(&mut s, "CREATE TABLE c (id INT PRIMARY KEY, c TEXT)").await;
    ok(
        &mut s,
        r#"INSERT INTO a VALUES (1, 'x', '["p"]'), (2, 'y z', NULL), (3, '', '{"k":1}')"#,
    )
    .await;
    ok(&mut s, "INSERT INTO b VALUES (10, 1, 'n1'), (11, 1, 'a,b')").await;
    ok(&mut s, "INSERT INTO c VALUES (1, 'column')").await;
    for (sql, want) in [
        (
            "SELECT row_to_json(a)::text FROM a ORDER BY id",
            vec![
                r#"{"id":1,"name":"x","tags":["p"]}"#,
                r#"{"id":2,"name":"y z","tags":null}"#,
                r#"{"id":3,"name":"","tags":{"k": 1}}"#,
            ],
        ),
        // An alias, `t.*`, and an upper-case (folded) name all name the same row.
        (
            "SELECT row_to_json(t.*)::text, to_jsonb(T)::text FROM a AS t WHERE id = 1",
            vec![r#"{"id":1,"name":"x","tags":["p"]}|{"id": 1, "name": "x", "tags": ["p"]}"#],
        ),
        (
            "SELECT row_to_json(t, true)::text FROM a t WHERE id = 1",
            vec!["{\"id\":1,\n \"name\":\"x\",\n \"tags\":[\"p\"]}"],
        ),
        (
            "SELECT json_agg(t ORDER BY t.id DESC)::text FROM a t WHERE id < 3",
            vec![
                "[{\"id\":2,\"name\":\"y z\",\"tags\":null}, \n {\"id\":1,\"name\":\"x\",\"tags\":[\"p\"]}]",
            ],
        ),
        // A derived table's columns are its select list's, under their aliases.
        (
            "SELECT jsonb_agg(s)::text FROM (SELECT a.id, b.note AS n FROM a JOIN b ON b.a_id = a.id ORDER BY b.id) s",
            vec![r#"[{"n": "n1", "id": 1}, {"n": "a,b", "id": 1}]"#],
        ),
        (
            "WITH w AS (SELECT id, name FROM a WHERE id = 2) SELECT row_to_json(w)::text FROM w",
            vec![r#"{"id":2,"name":"y z"}"#],
        ),
        (
            "SELECT row_to_json(v)::text FROM (VALUES (1, 'q')) AS v(p, q)",
            vec![r#"{"p":1,"q":"q"}"#],
        ),
        // The row an outer join makes up for a missing match is NULL, not a row of NULLs.
        (
            "SELECT a.id, row_to_json(b)::text FROM a LEFT JOIN b ON b.a_id = a.id ORDER BY a.id, b.id",
            vec![
                r#"1|{"id":10,"a_id":1,"note":"n1"}"#,
                r#"1|{"id":11,"a_id":1,"note":"a,b"}"#,
                "2|NULL",
                "3|NULL",
            ],
        ),
        // Correlated: the inner query's relation, not the outer one.
        (
            "SELECT a.id, (SELECT json_agg(b ORDER BY b.id) FROM b WHERE b.a_id = a.id)::text FROM a ORDER BY a.id",
            vec![
                "1|[{\"id\":10,\"a_id\":1,\"note\":\"n1\"}, \n {\"id\":11,\"a_id\":1,\"note\":\"a,b\"}]",
                "2|NULL",
                "3|NULL",
            ],
        ),
        (
            "SELECT json_build_object('id', t.id, 'row', t)::text FROM a t WHERE id = 3",
            vec![r#"{"id" : 3, "row" : {"id":3,"name":"","tags":{"k": 1}}}"#],
        ),
        (
            "SELECT row_to_json(t)::text FROM a t WHERE id = 1 UNION ALL SELECT row_to_json(u)::text FROM b u WHERE id = 10",
            vec![
                r#"{"id":1,"name":"x","tags":["p"]}"#,
                r#"{"id":10,"a_id":1,"note":"n1"}"#,
            ],
        ),
        // A column named like its table is the column.
        ("SELECT c FROM c", vec!["column"]),
        // ROW(...) and a parenthesised list passed to a function name fields f1, f2, ...
        (
            "SELECT json_agg(ROW(id, name) ORDER BY id)::text FROM a WHERE id < 3",
            vec!["[{\"f1\":1,\"f2\":\"x\"}, \n {\"f1\":2,\"f2\":\"y z\"}]"],
        ),
        (
            "SELECT to_jsonb((1, 'a'))::text, json_build_array(row(1, 2), (3, 4))::text",
            vec![r#"{"f1": 1, "f2": "a"}|[{"f1":1,"f2":2}, {"f1":3,"f2":4}]"#],
        ),
        ("SELECT (1, 2) = (1, 2)", vec!["true"]),
        // `x.l[1]` is a qualified column, subscripted: `x` there names no row.
        ("SELECT x.l[2] FROM (SELECT ARRAY[5, 6] AS l) x", vec!["6"]),
        ("SELECT count(t.*) FROM a t", vec!["3"]),
    ] {
        assert_eq!(rows(&mut s, sql).await, want, "{sql}");
    }
    // A bare relation in a select list is a column named after it.
    match run(&mut s, "SELECT t FROM a t WHERE id = 1").await {
        Ok(QueryResult::Rows { schema, .. }) => {
            assert_eq!(schema.field(0).name(), "t");
            assert!(matches!(
                schema.field(0).data_type(),
                DataType::Struct(f) if f.len() == 3
            ));
        }
        other => panic!("expected rows, got {other:?}"),
    }
    // Writes read whole rows too: INSERT ... SELECT, and UPDATE's SET and RETURNING.
    ok(&mut s, "CREATE TABLE d (id INT PRIMARY KEY, doc JSONB)").await;
    ok(&mut s, "INSERT INTO d SELECT id, to_jsonb(t) FROM a t").await;
    assert_eq!(
        rows(
            &mut s,
            "UPDATE d SET doc = to_jsonb(d) - 'doc' WHERE id = 2 RETURNING row_to_json(d)::text"
        )
        .await,
        vec![r#"{"id":2,"doc":{"id": 2}}"#]
    );
    assert_eq!(code(&mut s, "SELECT row_to_json(1)").await, "42883");
    assert_eq!(
        code(&mut s, "SELECT row_to_json(x) FROM a t").await,
        "42703"
    );
}

/// The JSON set-returning functions in FROM, as PostgreSQL runs them: of constants or
/// parameters, or of the columns of the one table before them (`FROM t,
/// jsonb_array_elements(t.d) e`, `CROSS JOIN LATERAL`), with PostgreSQL's column names
/// (`value`, `key`, or the alias), alias column lists, `e.*`, and `(row).field`.
#[tokio::test]
async fn json_set_returning_functions_in_from_yield_rows() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE sd (id INT PRIMARY KEY, d JSONB, j JSON)",
    )
    .await;
    ok(
        &mut s,
        r#"INSERT INTO sd VALUES (1, '{"b":[1,2],"a":"x"}', '{"b":1,"a":2,"b":3}'),
           (2, '[10, "y", null]', '[1]'), (3, NULL, NULL)"#,
    )
    .await;
    for (sql, names, want) in [
        (
            r#"SELECT * FROM jsonb_array_elements('[1,"a",{"k":2}]')"#,
            "value",
            vec!["1", "\"a\"", "{\"k\": 2}"],
        ),
        (
            r#"SELECT * FROM jsonb_array_elements_text('[1,"a",null]') AS e"#,
            "value",
            vec!["1", "a", "NULL"],
        ),
        (
            "SELECT x FROM jsonb_array_elements('[1,2]') e(x)",
            "x",
            vec!["1", "2"],
        ),
        (
            r#"SELECT * FROM jsonb_object_keys('{"b":1,"a":2}') k"#,
            "k",
            vec!["a", "b"],
        ),
        (
            r#"SELECT * FROM jsonb_each('{"b":1,"a":"s"}')"#,
            "key,value",
            vec!["a|\"s\"", "b|1"],
        ),
        (
            r#"SELECT key, value FROM jsonb_each_text('{"b":1,"a":"s","n":null}') ORDER BY key"#,
            "key,value",
            vec!["a|s", "b|1", "n|NULL"],
        ),
        // json keeps duplicate keys, in the order written.
        (
            r#"SELECT * FROM json_each('{"b":1,"a":2,"b":3}')"#,
            "key,value",
            vec!["b|1", "a|2", "b|3"],
        ),
        (
            r#"SELECT k, v FROM jsonb_each('{"x":[1]}') AS t(k, v)"#,
            "k,v",
            vec!["x|[1]"],
        ),
        (
            "SELECT sd.id, e.value FROM sd, jsonb_array_elements(sd.d) e WHERE sd.id = 2",
            "id,value",
            vec!["2|10", "2|\"y\"", "2|null"],
        ),
        (
            "SELECT id, value FROM sd CROSS JOIN LATERAL jsonb_array_elements_text(sd.d) WHERE id = 2",
            "id,value",
            vec!["2|10", "2|y", "2|NULL"],
        ),
        (
            "SELECT s.id, kv.key, kv.value FROM sd s, jsonb_each(s.d) kv WHERE s.id = 1 ORDER BY 2",
            "id,key,value",
            vec!["1|a|\"x\"", "1|b|[1, 2]"],
        ),
        (
            "SELECT kv.* FROM sd s, jsonb_each(s.d) kv WHERE s.id = 1 ORDER BY 1",
            "key,value",
            vec!["a|\"x\"", "b|[1, 2]"],
        ),
        // The alias of a one-column function, used as a value, is its column.
        (
            "SELECT x.id, v FROM (SELECT id, d FROM sd) x, jsonb_array_elements_text(x.d) v WHERE x.id = 2",
            "id,v",
            vec!["2|10", "2|y", "2|NULL"],
        ),
        (
            "SELECT count(*) FROM sd, jsonb_array_elements(sd.d) WHERE id = 2",
            "count",
            vec!["3"],
        ),
        (
            "SELECT id, e.value FROM sd JOIN jsonb_array_elements('[1,2]') e ON true WHERE id = 1",
            "id,value",
            vec!["1|1", "1|2"],
        ),
        (
            r#"SELECT (jsonb_each('{"b":1}')).key, (t).id FROM sd t WHERE id = 1"#,
            "key,id",
            vec!["b|1"],
        ),
    ] {
        assert_eq!(rows(&mut s, sql).await, want, "{sql}");
        match run(&mut s, sql).await {
            Ok(QueryResult::Rows { schema, .. }) => {
                let got: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                assert_eq!(got.join(","), names, "{sql}");
            }
            other => panic!("{sql}: expected rows, got {other:?}"),
        }
    }
    // Parameters are constants too.
    let statement = s
        .prepare("SELECT key FROM jsonb_each($1::jsonb) ORDER BY key", &[])
        .await
        .expect("prepares");
    match s
        .execute_prepared(
            &statement,
            vec![datafusion::scalar::ScalarValue::Utf8(Some(
                r#"{"b":1,"a":2}"#.into(),
            ))],
        )
        .await
    {
        Ok(QueryResult::Rows { batches, .. }) => {
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        }
        other => panic!("expected rows, got {other:?}"),
    }
    assert_eq!(
        error_message(&mut s, "SELECT * FROM jsonb_each('[1]')").await,
        "cannot call jsonb_each on a non-object"
    );
    assert_eq!(
        error_message(&mut s, r#"SELECT * FROM jsonb_array_elements('{"a":1}')"#).await,
        "cannot extract elements from an object"
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM jsonb_each(NULL)").await,
        vec!["0"]
    );
    // After a join, of a column of any item before it, with its ordinality, in a left
    // join: as PostgreSQL 15 gives them.
    for (sql, want) in [
        (
            "SELECT a.id, value FROM sd a JOIN sd b ON a.id = b.id, \
             jsonb_array_elements(b.d) WHERE a.id = 2",
            vec!["2|10", "2|\"y\"", "2|null"],
        ),
        (
            "SELECT a.id, k.* FROM sd a LEFT JOIN LATERAL jsonb_each_text(a.d) \
             WITH ORDINALITY k(name, v, n) ON true WHERE a.id <> 2 ORDER BY 1, 4",
            vec!["1|a|x|1", "1|b|[1, 2]|2", "3|NULL|NULL|NULL"],
        ),
        (
            "SELECT a.id, e.*, k FROM sd a JOIN sd b ON a.id = b.id, \
             jsonb_array_elements(b.d -> 'b') WITH ORDINALITY e, jsonb_object_keys(a.d) k \
             WHERE a.id = 1 ORDER BY 1, 3, 4",
            vec!["1|1|1|a", "1|1|1|b", "1|2|2|a", "1|2|2|b"],
        ),
    ] {
        assert_eq!(rows(&mut s, sql).await, want, "{sql}");
    }
}

/// An explicit cast to `varchar(n)` or `char(n)` cuts the value to `n` characters, as in
/// PostgreSQL, on the general path and on the fast path of a single-row INSERT; assigning
/// a longer value to such a column is still 22001. Outputs as PostgreSQL 15 gives them.
#[tokio::test]
async fn explicit_casts_to_a_string_length_cut_the_value() {
    let db = TestDb::new().await;
    let mut s = db.session();
    assert_eq!(
        rows(
            &mut s,
            "SELECT 'abcdef'::varchar(3), CAST('abcdef' AS character varying(2)), \
             'héllo'::varchar(2), 12345::varchar(3), 'xyz'::char(2), 'abc'::char, \
             NULL::varchar(2), 'ab'::char(4) = 'ab'"
        )
        .await,
        vec!["abc|ab|hé|123|xy|a|NULL|true"]
    );
    assert_eq!(
        error_message(&mut s, "SELECT 'a'::varchar(0)").await,
        "length for type varchar must be at least 1"
    );
    assert_eq!(
        error_message(&mut s, "SELECT 'a'::char(20000000)").await,
        "length for type char cannot exceed 10485760"
    );
    assert_eq!(code(&mut s, "SELECT 'a'::char(0)").await, "22023");

    ok(
        &mut s,
        "CREATE TABLE vc (id INT PRIMARY KEY, a VARCHAR(3), b CHAR(2))",
    )
    .await;
    // One row of literals (the fast path), several, and a SELECT.
    ok(
        &mut s,
        "INSERT INTO vc VALUES (1, 'abcdef'::varchar(3), 'xyz'::char(2))",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO vc VALUES (2, 'pqrst'::varchar(2), 'q'::char), (3, 'uvw', 'mn')",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO vc SELECT 4, 'ghijk'::varchar(3), 'rst'::char(2)",
    )
    .await;
    assert_eq!(
        code(&mut s, "INSERT INTO vc VALUES (5, 'abcdef', 'x')").await,
        "22001"
    );
    let insert = s
        .prepare("INSERT INTO vc VALUES ($1, $2::varchar(3), 'z')", &[])
        .await
        .unwrap();
    use datafusion::scalar::ScalarValue;
    s.execute_prepared(
        &insert,
        vec![
            ScalarValue::Int32(Some(6)),
            ScalarValue::Utf8(Some("longer".into())),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        rows(&mut s, "SELECT id, a, b FROM vc ORDER BY id").await,
        vec!["1|abc|xy", "2|pq|q ", "3|uvw|mn", "4|ghi|rs", "6|lon|z "]
    );
}

/// SQL-level PREPARE, EXECUTE and DEALLOCATE, with PostgreSQL 15's results and errors.
#[tokio::test]
async fn sql_prepared_statements_prepare_execute_and_deallocate() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE pt (id INT PRIMARY KEY, name TEXT, score NUMERIC(5,2))",
    )
    .await;
    assert_eq!(
        ok(
            &mut s,
            "PREPARE ins (int, text, numeric) AS INSERT INTO pt VALUES ($1, $2, $3)"
        )
        .await,
        "PREPARE"
    );
    // Values are expressions, evaluated once and cast to the parameter's type.
    assert_eq!(ok(&mut s, "EXECUTE ins (1, 'a', 1.5)").await, "INSERT 0 1");
    assert_eq!(
        ok(&mut s, "EXECUTE ins (2, 'b' || 'c', 2 * 3)").await,
        "INSERT 0 1"
    );
    assert_eq!(
        ok(&mut s, "EXECUTE ins (3, NULL, NULL)").await,
        "INSERT 0 1"
    );
    ok(
        &mut s,
        "PREPARE sel AS SELECT id, name, score FROM pt WHERE id >= $1 ORDER BY id",
    )
    .await;
    assert_eq!(
        rows(&mut s, "EXECUTE sel (2)").await,
        vec!["2|bc|6.00", "3|NULL|NULL"]
    );
    assert_eq!(rows(&mut s, "EXECUTE sel ('3')").await, vec!["3|NULL|NULL"]);
    ok(&mut s, "PREPARE twice AS SELECT $1::int + $1::int").await;
    assert_eq!(rows(&mut s, "EXECUTE twice (20)").await, vec!["40"]);

    assert_eq!(code(&mut s, "PREPARE sel AS SELECT 1").await, "42P05");
    assert_eq!(code(&mut s, "EXECUTE nope").await, "26000");
    assert_eq!(
        error_detail(&mut s, "EXECUTE sel").await,
        ("42601", "Expected 1 parameters but got 0.".to_string())
    );
    assert_eq!(code(&mut s, "EXECUTE sel (1, 2)").await, "42601");
    assert_eq!(code(&mut s, "EXECUTE ins (4, 'x', 'nan?')").await, "22P02");
    assert_eq!(
        code(&mut s, "PREPARE bad AS CREATE TABLE q (a INT)").await,
        "42601"
    );
    assert_eq!(
        code(&mut s, "PREPARE bad AS SELECT * FROM nosuch").await,
        "42P01"
    );

    // Not transactional: a statement prepared in a rolled-back block stays.
    ok(&mut s, "BEGIN").await;
    ok(&mut s, "PREPARE n AS SELECT count(*) FROM pt").await;
    ok(&mut s, "ROLLBACK").await;
    assert_eq!(rows(&mut s, "EXECUTE n").await, vec!["3"]);
    // In a failed block EXECUTE is refused like any statement.
    ok(&mut s, "BEGIN").await;
    code(&mut s, "SELECT 1/0").await;
    assert_eq!(code(&mut s, "EXECUTE n").await, "25P02");
    ok(&mut s, "ROLLBACK").await;

    assert_eq!(ok(&mut s, "DEALLOCATE n").await, "DEALLOCATE");
    assert_eq!(code(&mut s, "DEALLOCATE n").await, "26000");
    assert_eq!(ok(&mut s, "DEALLOCATE PREPARE sel").await, "DEALLOCATE");
    assert_eq!(ok(&mut s, "DEALLOCATE ALL").await, "DEALLOCATE ALL");
    assert_eq!(code(&mut s, "EXECUTE ins (5, 'y', 1)").await, "26000");
    assert_eq!(
        rows(&mut s, "SELECT id, name, score FROM pt ORDER BY id").await,
        vec!["1|a|1.50", "2|bc|6.00", "3|NULL|NULL"]
    );
}

/// A session keeps at most `prepared_statements_max` SQL-level prepared statements: one
/// more is 54000 and changes nothing; DEALLOCATE makes room.
#[tokio::test]
async fn sql_prepared_statements_are_bounded_per_session() {
    let db = TestDb::with_config(SqlConfig {
        prepared_statements_max: 2,
        ..SqlConfig::default()
    })
    .await;
    let mut s = db.session();
    ok(&mut s, "PREPARE a AS SELECT 1").await;
    ok(&mut s, "PREPARE b AS SELECT 2").await;
    assert_eq!(code(&mut s, "PREPARE c AS SELECT 3").await, "54000");
    assert_eq!(code(&mut s, "EXECUTE c").await, "26000");
    ok(&mut s, "DEALLOCATE a").await;
    ok(&mut s, "PREPARE c AS SELECT 3").await;
    assert_eq!(rows(&mut s, "EXECUTE c").await, vec!["3"]);
}

/// Text a type cannot take is PostgreSQL's input error, in casts, in values assigned to
/// a column and in comparisons with a column (messages and codes as PostgreSQL 15's).
#[tokio::test]
async fn input_errors_say_what_postgresql_says() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE ie (a INT, b DATE)").await;
    for (sql, code, message) in [
        (
            "SELECT 'x'::int",
            "22P02",
            "invalid input syntax for type integer: \"x\"",
        ),
        (
            "SELECT '1.5'::bigint",
            "22P02",
            "invalid input syntax for type bigint: \"1.5\"",
        ),
        (
            "SELECT 'x'::numeric",
            "22P02",
            "invalid input syntax for type numeric: \"x\"",
        ),
        (
            "SELECT 'x'::boolean",
            "22P02",
            "invalid input syntax for type boolean: \"x\"",
        ),
        (
            "SELECT 'x'::date",
            "22007",
            "invalid input syntax for type date: \"x\"",
        ),
        (
            "SELECT 'x'::timestamp",
            "22007",
            "invalid input syntax for type timestamp: \"x\"",
        ),
        (
            "INSERT INTO ie VALUES ('x', NULL)",
            "22P02",
            "invalid input syntax for type integer: \"x\"",
        ),
        (
            "INSERT INTO ie VALUES (1, 'nope')",
            "22007",
            "invalid input syntax for type date: \"nope\"",
        ),
        (
            "SELECT * FROM ie WHERE a = 'zz'",
            "22P02",
            "invalid input syntax for type integer: \"zz\"",
        ),
    ] {
        let e = run(&mut s, sql).await.expect_err(sql);
        assert_eq!((e.code, e.message.as_str()), (code, message), "{sql}");
    }
}

/// An untyped literal or parameter on one side of an array operator (`=`, `<`, `||`),
/// quantified by ANY or ALL, or beside a typed operand of `COALESCE`, `NULLIF`,
/// `GREATEST`, `LEAST`, `CASE` or `IS DISTINCT FROM` takes the other operand's type, as
/// PostgreSQL types it; each result checked against PostgreSQL 15. Before, these failed to
/// plan in a select list ("Cannot infer common argument type for comparison operation
/// List(Int64) = Utf8"), `<> ALL('{..}')`, `< ANY('{..}')` and `coalesce(j, '{}')` (a
/// jsonb, uuid or array) failed anywhere, and `a || '{c}'` appended the text `{c}` as one
/// element.
#[tokio::test]
async fn untyped_literals_take_the_type_of_the_operand_beside_them() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE ua (id INT PRIMARY KEY, tags TEXT[], n INT[], j JSONB, u UUID)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO ua VALUES (1, '{a,b}', '{1,2}', NULL, NULL), \
         (2, '{c}', '{3}', '{\"b\":2}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), \
         (3, NULL, '{}', NULL, NULL)",
    )
    .await;
    for (q, want) in [
        (
            "SELECT ARRAY[1] = '{1}', '{1,2}' = ARRAY[1,2], ARRAY[1,2] <> '{1}', \
             ARRAY[1,2] < '{1,3}'",
            vec!["true|true|true|true"],
        ),
        (
            "SELECT 1 <> ALL('{2,3}'), 2 <> ALL('{2,3}'), 3 = ANY('{3}'), 3 < ANY('{3,4}'), \
             5 > ALL('{1,2}'), 'a' = ANY('{a,b}'), NULL = ANY('{a}')",
            vec!["true|false|true|true|true|true|NULL"],
        ),
        (
            "SELECT (ARRAY['a','b'] || '{c}')::text, ('{z}' || ARRAY['a'])::text",
            vec!["{a,b,c}|{z,a}"],
        ),
        (
            "SELECT id, tags = '{a,b}', (n || '{9}')::text, 2 = ANY(n), 2 <> ALL(n) \
             FROM ua ORDER BY id",
            vec![
                "1|true|{1,2,9}|true|false",
                "2|false|{3,9}|false|true",
                "3|NULL|{9}|false|true",
            ],
        ),
        (
            "SELECT id FROM ua WHERE id <> ALL('{1,3}') ORDER BY id",
            vec!["2"],
        ),
        (
            "SELECT id FROM ua WHERE id >= ANY('{2,9}') AND id <= ALL('{3}') ORDER BY id",
            vec!["2", "3"],
        ),
        // Inside a correlated subquery, and with a subquery on the left (left as
        // DataFusion plans it).
        (
            "SELECT id FROM ua t WHERE EXISTS (SELECT 1 FROM ua u WHERE u.id = t.id \
             AND u.id = ANY('{2,3}')) AND id <> ALL('{3}')",
            vec!["2"],
        ),
        (
            "SELECT id FROM ua WHERE (SELECT 1) = ANY('{1}') AND id = 1",
            vec!["1"],
        ),
        (
            "SELECT id, (coalesce(j, '{}') || '{\"a\":1}')::text, \
             coalesce(u, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12')::text, \
             (coalesce(tags, '{}') || '{y}')::text FROM ua ORDER BY id",
            vec![
                "1|{\"a\": 1}|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12|{a,b,y}",
                "2|{\"a\": 1, \"b\": 2}|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|{c,y}",
                "3|{\"a\": 1}|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12|{y}",
            ],
        ),
        (
            "SELECT id, (CASE WHEN id = 1 THEN '{}' ELSE tags END)::text, \
             CASE n WHEN '{3}' THEN 'three' WHEN '{}' THEN 'none' ELSE 'other' END, \
             nullif(tags, '{c}')::text, tags IS DISTINCT FROM '{a,b}', \
             n IS NOT DISTINCT FROM '{}', greatest(n, '{2}')::text, least('{2}', n)::text \
             FROM ua ORDER BY id",
            vec![
                "1|{}|other|{a,b}|false|false|{2}|{1,2}",
                "2|{c}|three|NULL|true|false|{3}|{2}",
                "3|NULL|none|NULL|true|true|{2}|{}",
            ],
        ),
    ] {
        assert_eq!(rows(&mut s, q).await, want, "{q}");
    }
    // A literal that is not an array of the type is refused as PostgreSQL refuses it:
    // `tags || 'q'` is not an append there either.
    for (q, want) in [
        ("SELECT id FROM ua WHERE id = ANY('{1,x}')", "22P02"),
        ("SELECT id FROM ua WHERE id <> ALL('1,2')", "22P02"),
        ("SELECT tags || 'q' FROM ua", "22P02"),
        ("SELECT n = '{1,x}' FROM ua", "22P02"),
    ] {
        assert_eq!(code(&mut s, q).await, want, "{q}");
    }
    // In an UPDATE's assignments, the idiom for adding to a value that may be NULL.
    ok(
        &mut s,
        "UPDATE ua SET j = coalesce(j, '{}') || '{\"c\":3}', \
         tags = coalesce(tags, '{}') || '{z}' WHERE id <> 2",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT id, j::text, tags::text FROM ua ORDER BY id").await,
        [
            "1|{\"c\": 3}|{a,b,z}",
            "2|{\"b\": 2}|{c}",
            "3|{\"c\": 3}|{z}"
        ]
    );
    // A parameter is typed the same way.
    let int_list = DataType::new_list(DataType::Int32, true);
    let ints = |values: &[i32]| {
        datafusion::scalar::ScalarValue::List(datafusion::scalar::ScalarValue::new_list_nullable(
            &values
                .iter()
                .map(|v| datafusion::scalar::ScalarValue::Int32(Some(*v)))
                .collect::<Vec<_>>(),
            &DataType::Int32,
        ))
    };
    for (q, want) in [
        (
            "SELECT id FROM ua WHERE id <> ALL($1) ORDER BY id",
            vec!["3"],
        ),
        ("SELECT id FROM ua WHERE n = $1 ORDER BY id", vec!["1"]),
        (
            "SELECT (n || $1)::text FROM ua WHERE id = 2",
            vec!["{3,1,2}"],
        ),
        (
            "SELECT id < ALL($1) FROM ua ORDER BY id",
            vec!["false", "false", "false"],
        ),
        (
            "SELECT coalesce(n, $1)::text FROM ua WHERE id = 2",
            vec!["{3}"],
        ),
    ] {
        let prepared = s.prepare(q, &[]).await.expect(q);
        assert_eq!(prepared.param_types, std::slice::from_ref(&int_list), "{q}");
        let result = s.execute_prepared(&prepared, vec![ints(&[1, 2])]).await;
        let QueryResult::Rows { batches, .. } = result.expect(q) else {
            panic!("{q}: expected rows");
        };
        assert_eq!(batch_rows(&batches), want, "{q}");
    }
}

/// Columns of array types (`integer[]`, `text[]`, `varchar(n)[]`), each result checked
/// against PostgreSQL 15: their text form in and out, `ARRAY[...]`, elements checked as
/// their type's values, comparisons with a literal, `&&`, `@>`, `<@`, `ANY`, subscripts,
/// and what is refused (keys, multidimensional values).
#[tokio::test]
async fn array_columns_store_and_compare_as_postgresql_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE arr (id INT PRIMARY KEY, nums INT[], tags TEXT[], v VARCHAR(3)[], \
         at TIMESTAMPTZ[])",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO arr VALUES (1, '{1,2,3}', '{a,\"b c\",NULL}', '{ab}', \
         '{2024-01-01 00:00:00+00}')",
    )
    .await;
    // A VALUES list may mix the text form with ARRAY[...] (DataFusion alone would refuse
    // to unify a string with a list). `varchar(3)` keeps three of "ab  ", as PostgreSQL
    // cuts trailing blanks to fit.
    ok(
        &mut s,
        "INSERT INTO arr VALUES (2, ARRAY[4,5], ARRAY['x','y'], NULL, NULL), \
         (3, '{}', '{}', '{\"ab  \"}', NULL)",
    )
    .await;
    let text = "SELECT id, nums::text, tags::text, v::text, at::text FROM arr ORDER BY id";
    assert_eq!(
        rows(&mut s, text).await,
        [
            "1|{1,2,3}|{a,\"b c\",NULL}|{ab}|{\"2024-01-01 00:00:00+00\"}",
            "2|{4,5}|{x,y}|NULL|NULL",
            "3|{}|{}|{\"ab \"}|NULL",
        ]
    );
    for (q, want) in [
        (
            "SELECT id, nums[2], tags[1], cardinality(nums), pg_typeof(nums)::text \
             FROM arr ORDER BY id",
            vec![
                "1|2|a|3|integer[]",
                "2|5|x|2|integer[]",
                "3|NULL|NULL|0|integer[]",
            ],
        ),
        ("SELECT id FROM arr WHERE tags = '{x,y}'", vec!["2"]),
        ("SELECT id FROM arr WHERE '{}' = nums", vec!["3"]),
        (
            "SELECT id FROM arr WHERE nums && '{5,9}' OR tags && ARRAY['b c'] ORDER BY id",
            vec!["1", "2"],
        ),
        (
            "SELECT id FROM arr WHERE nums @> '{2}' ORDER BY id",
            vec!["1"],
        ),
        ("SELECT id FROM arr WHERE '{4}' <@ nums", vec!["2"]),
        ("SELECT id FROM arr WHERE 3 = ANY(nums)", vec!["1"]),
        // An empty array has no dimensions: its length is NULL, its cardinality 0.
        (
            "SELECT id, array_length(nums, 1), array_length(nums, 2), \
             pg_typeof(array_length(nums, 1))::text FROM arr ORDER BY id",
            vec![
                "1|3|NULL|integer",
                "2|2|NULL|integer",
                "3|NULL|NULL|integer",
            ],
        ),
        (
            "SELECT id, array_lower(nums, 1), array_upper(nums, 1), array_upper(nums, 2) \
             FROM arr ORDER BY id",
            vec!["1|1|3|NULL", "2|1|2|NULL", "3|NULL|NULL|NULL"],
        ),
        // A string literal in ANY over a uuid[] is read as a uuid, as by `=`.
        (
            "SELECT count(*) FROM (SELECT ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid] \
             AS ids) AS u WHERE 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' = ANY(ids)",
            vec!["1"],
        ),
    ] {
        assert_eq!(rows(&mut s, q).await, want, "{q}");
    }
    // Each element is checked as a value of the element type, and nothing is written.
    for (q, want) in [
        ("INSERT INTO arr VALUES (9, '{1,x}')", "22P02"),
        ("INSERT INTO arr (id, v) VALUES (9, '{abcd}')", "22001"),
        (
            "INSERT INTO arr (id, nums) VALUES (9, '{{1,2},{3,4}}')",
            "0A000",
        ),
        ("INSERT INTO arr (id, nums) VALUES (9, '1,2')", "22P02"),
        ("UPDATE arr SET v = ARRAY['long'] WHERE id = 1", "22001"),
        ("CREATE INDEX ON arr (tags)", "0A000"),
        ("CREATE TABLE arr_key (k INT[] PRIMARY KEY)", "0A000"),
        ("CREATE TABLE arr_json (j JSONB[])", "0A000"),
    ] {
        assert_eq!(code(&mut s, q).await, want, "{q}");
    }
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM arr").await,
        ["3"],
        "refused writes wrote nothing"
    );
    // `= ANY` of an untyped array reads it as an array of the other side's type, a
    // literal as a parameter (psycopg sends a list of strings untyped; this failed with
    // "array_has(Utf8, Utf8)").
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM arr WHERE id = ANY('{1,3}') ORDER BY id"
        )
        .await,
        ["1", "3"]
    );
    let any = s
        .prepare(
            "SELECT id FROM arr WHERE tags[1] = ANY($1) ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let text_list = DataType::new_list(DataType::Utf8, true);
    assert_eq!(any.param_types, [text_list]);
    let names =
        datafusion::scalar::ScalarValue::List(datafusion::scalar::ScalarValue::new_list_nullable(
            &[
                datafusion::scalar::ScalarValue::Utf8(Some("x".into())),
                datafusion::scalar::ScalarValue::Utf8(Some("a".into())),
            ],
            &DataType::Utf8,
        ));
    match s.execute_prepared(&any, vec![names]).await.unwrap() {
        QueryResult::Rows { batches, .. } => {
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2)
        }
        other => panic!("expected rows, got {other:?}"),
    }
    // An update by primary key (the single-row fast path) with an explicit cast, as
    // Django writes it; this once stored the whole text as one element.
    ok(
        &mut s,
        "UPDATE arr SET tags = '{\"p q\",r}'::varchar(50)[], nums = array_append(nums, 6) \
         WHERE id = 2",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT tags::text, nums::text FROM arr WHERE id = 2"
        )
        .await,
        ["{\"p q\",r}|{4,5,6}"]
    );
    // ADD COLUMN with a default: rows before it read the default.
    ok(
        &mut s,
        "ALTER TABLE arr ADD COLUMN flags BOOL[] DEFAULT '{t,f}'",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT DISTINCT flags::text FROM arr").await,
        ["{t,f}"]
    );
    // The catalog names the types as PostgreSQL does (`int[][]` is `int[]`).
    ok(&mut s, "CREATE TABLE arr2 (a INT[][], b VARCHAR(7)[])").await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT attname, format_type(atttypid, atttypmod), atttypid::int FROM pg_attribute \
             WHERE attrelid = 'arr2'::regclass AND attnum > 0 ORDER BY attnum"
        )
        .await,
        ["a|integer[]|1007", "b|character varying(7)[]|1015"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT data_type, udt_name FROM information_schema.columns \
             WHERE table_name = 'arr2' ORDER BY ordinal_position"
        )
        .await,
        ["ARRAY|_int4", "ARRAY|_varchar"]
    );
}

/// The names of a query's columns.
async fn column_names(session: &mut Session, sql: &str) -> Vec<String> {
    match run(session, sql).await {
        Ok(QueryResult::Rows { schema, .. }) => {
            schema.fields().iter().map(|f| f.name().clone()).collect()
        }
        other => panic!("{sql}: expected rows, got {other:?}"),
    }
}

/// FROM items reading the columns of the items before them: set-returning functions
/// (implicitly lateral), LATERAL subqueries DataFusion does not decorrelate (run per row),
/// WITH ORDINALITY. Every expectation is PostgreSQL 15's output for the same statements.
#[tokio::test]
async fn lateral_joins_and_set_returning_functions_in_from_as_postgresql_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE doc (id INT PRIMARY KEY, lo INT, hi INT, tags TEXT[])",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO doc VALUES (1, 1, 3, '{x,y}'), (2, 5, 4, NULL), (3, 2, 2, '{z,NULL}'), \
         (4, 0, 1, '{}')",
    )
    .await;
    ok(
        &mut s,
        "CREATE TABLE ord (id INT PRIMARY KEY, doc_id INT, amount NUMERIC(8,2), at INT)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO ord VALUES (1, 1, 10.50, 3), (2, 1, 20.00, 1), (3, 1, 5.25, 2), \
         (4, 3, 7.00, 1)",
    )
    .await;
    for (q, want) in [
        (
            "SELECT doc.id, t FROM doc, unnest(doc.tags) t ORDER BY 1, 2",
            vec!["1|x", "1|y", "3|z", "3|NULL"],
        ),
        // A left join keeps the rows whose set is empty or NULL, with NULLs.
        (
            "SELECT d.id, u.tag, u.n FROM doc d LEFT JOIN LATERAL unnest(d.tags) \
             WITH ORDINALITY AS u(tag, n) ON true ORDER BY 1, 3",
            vec![
                "1|x|1",
                "1|y|2",
                "2|NULL|NULL",
                "3|z|1",
                "3|NULL|2",
                "4|NULL|NULL",
            ],
        ),
        (
            "SELECT d.id, g FROM doc d CROSS JOIN LATERAL generate_series(d.lo, d.hi) g \
             ORDER BY 1, 2",
            vec!["1|1", "1|2", "1|3", "3|2", "4|0", "4|1"],
        ),
        (
            "SELECT d.id, u.tag FROM doc d JOIN LATERAL unnest(d.tags) u(tag) \
             ON u.tag <> 'x' ORDER BY 1, 2",
            vec!["1|y", "3|z"],
        ),
        // The condition is the join's: a row none of whose elements passes gets NULLs.
        (
            "SELECT d.id, u.tag FROM doc d LEFT JOIN LATERAL unnest(d.tags) u(tag) \
             ON u.tag <> 'x' ORDER BY 1, 2",
            vec!["1|y", "2|NULL", "3|z", "4|NULL"],
        ),
        // The newest two orders of each document: a subquery run per row.
        (
            "SELECT d.id, x.id, x.amount FROM doc d LEFT JOIN LATERAL (SELECT o.id, o.amount \
             FROM ord o WHERE o.doc_id = d.id ORDER BY o.at DESC LIMIT 2) x ON true \
             ORDER BY 1, 2",
            vec![
                "1|1|10.50",
                "1|3|5.25",
                "2|NULL|NULL",
                "3|4|7.00",
                "4|NULL|NULL",
            ],
        ),
        (
            "SELECT d.id, x.total FROM doc d, LATERAL (SELECT sum(o.amount) AS total \
             FROM ord o WHERE o.doc_id = d.id AND o.at >= d.lo) x ORDER BY 1",
            vec!["1|35.75", "2|NULL", "3|NULL", "4|NULL"],
        ),
        // A lateral item may read the one before it, itself lateral.
        (
            "SELECT d.id, x.c, y.e FROM doc d, LATERAL (SELECT d.lo * 10 AS c) x, \
             LATERAL (SELECT x.c + d.hi AS e) y ORDER BY 1",
            vec!["1|10|13", "2|50|54", "3|20|22", "4|0|1"],
        ),
        // A subquery whose FROM is a function of the enclosing row.
        (
            "SELECT d.id, (SELECT count(*) FROM unnest(d.tags)) FROM doc d ORDER BY 1",
            vec!["1|2", "2|0", "3|2", "4|0"],
        ),
        (
            "SELECT id FROM doc WHERE EXISTS (SELECT 1 FROM unnest(tags) v WHERE v = 'z') \
             ORDER BY 1",
            vec!["3"],
        ),
        // The key of the table is no key of its unnested rows: `u DESC` still sorts.
        (
            "SELECT id, unnest(tags) AS u FROM doc ORDER BY id, u DESC",
            vec!["1|y", "1|x", "3|NULL", "3|z"],
        ),
        (
            "SELECT * FROM generate_series(3, 1, -1) WITH ORDINALITY",
            vec!["3|1", "2|2", "1|3"],
        ),
        (
            "SELECT * FROM unnest(ARRAY['a','b'], ARRAY[1,2,3]) WITH ORDINALITY AS u(s, i, o)",
            vec!["a|1|1", "b|2|2", "NULL|3|3"],
        ),
    ] {
        assert_eq!(rows(&mut s, q).await, want, "{q}");
    }
    for (q, want) in [
        ("SELECT * FROM unnest(ARRAY[1,2])", vec!["unnest"]),
        ("SELECT * FROM unnest(ARRAY[1,2]) u", vec!["u"]),
        (
            "SELECT * FROM unnest(ARRAY[1,2]) AS \"Mixed\"",
            vec!["Mixed"],
        ),
        (
            "SELECT * FROM generate_series(1, 2)",
            vec!["generate_series"],
        ),
        (
            "SELECT * FROM generate_series(1, 2) WITH ORDINALITY",
            vec!["generate_series", "ordinality"],
        ),
        (
            "SELECT * FROM doc d, unnest(d.tags) WITH ORDINALITY AS u(tag) WHERE d.id = 1",
            vec!["id", "lo", "hi", "tags", "tag", "ordinality"],
        ),
    ] {
        assert_eq!(column_names(&mut s, q).await, want, "{q}");
    }
    // An error inside the per-row subquery is the statement's.
    assert_eq!(
        code(
            &mut s,
            "SELECT d.id, x.v FROM doc d, LATERAL (SELECT 10 / (d.lo - 1) AS v) x ORDER BY 1"
        )
        .await,
        "22012"
    );
}

/// Dates and timestamps are read from text as PostgreSQL reads them, in literal casts,
/// comparisons, INSERT and UPDATE: a time without seconds, an hour of one digit, a zone
/// after it, month names, `epoch`, and `now`/`today`/`tomorrow`/`yesterday` at the
/// statement's time. Every expectation is PostgreSQL 15's output (TimeZone UTC).
#[tokio::test]
async fn dates_and_timestamps_are_read_from_text_as_postgresql_reads_them() {
    let db = TestDb::new().await;
    let mut s = db.session();
    for (q, want) in [
        (
            "SELECT '2024-01-01 02:00'::timestamp, '2024-01-01T02:00'::timestamp, \
             '2024-01-01 2:05'::timestamp, '2024-01-05 10:00:00.'::timestamp, \
             ' 2024-01-05 '::date",
            "2024-01-01T02:00:00|2024-01-01T02:00:00|2024-01-01T02:05:00|\
             2024-01-05T10:00:00|2024-01-05",
        ),
        // A zone moves a timestamptz; a timestamp ignores it.
        (
            "SELECT '2024-01-01 02:00+02'::timestamptz, '2024-01-05 10:00 UTC'::timestamptz, \
             '2024-01-01 02:00+02'::timestamp",
            "2024-01-01T00:00:00Z|2024-01-05T10:00:00Z|2024-01-01T02:00:00",
        ),
        (
            "SELECT 'Jan 5 2024'::date, 'January 5, 2024'::date, '5 Jan 2024'::date, \
             'Sep 30 2024 10:30'::timestamp, 'epoch'::timestamptz, 'epoch'::date",
            "2024-01-05|2024-01-05|2024-01-05|2024-09-30T10:30:00|1970-01-01T00:00:00Z|\
             1970-01-01",
        ),
        (
            "SELECT 'today'::date = current_date, 'now'::timestamptz = now(), \
             'tomorrow'::date - 'yesterday'::date, \
             'today'::timestamp = date_trunc('day', now())::timestamp",
            "true|true|2|true",
        ),
    ] {
        assert_eq!(rows(&mut s, q).await, [want], "{q}");
    }
    ok(
        &mut s,
        "CREATE TABLE ev (id INT PRIMARY KEY, at TIMESTAMP, az TIMESTAMPTZ, d DATE)",
    )
    .await;
    // The single-row path, a VALUES list, INSERT ... SELECT and UPDATE.
    for sql in [
        "INSERT INTO ev VALUES (1, '2024-01-01 02:00', '2024-01-01 02:00+02', \
         'Mar 3 2024 10:00')",
        "INSERT INTO ev VALUES (2, '2024-01-01 02:30', '2024-01-01 02:30 UTC', '2024-01-02'), \
         (3, '2024-01-01 03:00:00', '2024-01-01 03:00:00+02', '2024-01-03')",
        "INSERT INTO ev SELECT 4, '2024-01-01 4:00', '2024-01-01 04:00-01:30', \
         '2024-01-04 23:59'",
        "UPDATE ev SET at = '2024-02-02 05:06' WHERE id = 1",
    ] {
        ok(&mut s, sql).await;
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, at, az, d FROM ev WHERE at >= '2024-01-01 02:30' ORDER BY 1"
        )
        .await,
        [
            "1|2024-02-02T05:06:00|2024-01-01T00:00:00Z|2024-03-03",
            "2|2024-01-01T02:30:00|2024-01-01T02:30:00Z|2024-01-02",
            "3|2024-01-01T03:00:00|2024-01-01T01:00:00Z|2024-01-03",
            "4|2024-01-01T04:00:00|2024-01-01T05:30:00Z|2024-01-04",
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM ev WHERE az < '2024-01-01 03:00 UTC'"
        )
        .await,
        ["3"]
    );
    // What neither PostgreSQL's forms nor Arrow's read is still an error, and changes
    // nothing; what Arrow read before (a compact date) it still reads.
    assert_eq!(code(&mut s, "SELECT 'x'::timestamp").await, "22007");
    assert_eq!(
        code(
            &mut s,
            "INSERT INTO ev VALUES (5, '2024-01-01 02:00 nowhere')"
        )
        .await,
        "22007"
    );
    assert_eq!(rows(&mut s, "SELECT count(*) FROM ev").await, ["4"]);
    assert_eq!(
        rows(&mut s, "SELECT '20240105'::date").await,
        ["2024-01-05"]
    );
}

/// Functions PostgreSQL has and DataFusion lacked or answered otherwise: `width_bucket`,
/// `make_interval` (by name or position), `encode`/`decode` (escape, base64 as
/// PostgreSQL writes and reads it), the
/// ordered-set aggregates `mode()` and `percentile_disc`, `regexp_matches` and a
/// `generate_series` of timestamps in FROM. Every expectation is PostgreSQL 15's.
#[tokio::test]
async fn width_bucket_encodings_ordered_set_aggregates_and_series_answer_as_postgresql() {
    let db = TestDb::new().await;
    let mut s = db.session();
    for (q, want) in [
        (
            "SELECT width_bucket(5.35, 0.024, 10.06, 5), width_bucket(5, 0, 10, 4), \
             width_bucket(0.3, 0, 0.9, 3), width_bucket(0.3::float8, 0, 0.9, 3)",
            vec!["3|3|2|2"],
        ),
        (
            "SELECT width_bucket(5, 10, 0, 4), width_bucket(10, 10, 0, 4), \
             width_bucket(0, 10, 0, 4), width_bucket(-1, 0, 10, 4), width_bucket(10, 0, 10, 4), \
             width_bucket(5, 0, 10, 2147483647)",
            vec!["3|1|5|0|5|1073741824"],
        ),
        (
            "SELECT width_bucket(x, 0, 100, 10), count(*) FROM (VALUES (5), (15), (17), (99), \
             (100), (-3)) v(x) GROUP BY 1 ORDER BY 1",
            vec!["0|1", "1|1", "2|2", "10|1", "11|1"],
        ),
        (
            "SELECT encode('abc'::bytea, 'base64'), decode('YWJj', 'base64')::text, \
             encode(decode('616263', 'hex'), 'escape'), encode('a', 'base64'), \
             decode('YW Jj', 'base64')::text",
            vec![r"YWJj|\x616263|abc|YQ==|\x616263"],
        ),
        (
            r"SELECT encode('a\\b'::bytea || '\x00ff'::bytea, 'escape'), decode('a\\000b', 'escape')::text",
            vec![r"a\\b\000\377|\x615c30303062"],
        ),
        // Lines of 76 characters, each ended, as PostgreSQL writes base64.
        (
            "SELECT length(encode(repeat('x', 57)::bytea, 'base64')), \
             length(encode(repeat('x', 114)::bytea, 'base64')), \
             decode(encode(repeat('xy', 100)::bytea, 'base64'), 'base64') = repeat('xy', 100)::bytea",
            vec!["77|154|true"],
        ),
        ("SELECT 2 ^ '3'", vec!["8.0"]),
        (
            "SELECT make_interval(days => 3)::text, make_interval(1, 2, 3, 4, 5, 6, 7.5)::text, \
             make_interval(secs => 1.5, hours => 2)::text, make_interval()::text, \
             make_interval(weeks => -1, mins => 90)::text, make_interval(days => NULL)",
            vec![
                "3 days|1 year 2 mons 25 days 05:06:07.5|02:00:01.5|00:00:00|-7 days +01:30:00|NULL",
            ],
        ),
        (
            "SELECT mode() WITHIN GROUP (ORDER BY x), mode() WITHIN GROUP (ORDER BY x DESC) \
             FROM (VALUES (1), (2), (2), (3), (3)) v(x)",
            vec!["2|3"],
        ),
        (
            "SELECT g, mode() WITHIN GROUP (ORDER BY x) FROM (VALUES (1, 'b'), (1, 'b'), \
             (1, 'a'), (1, NULL), (1, NULL), (2, 'c')) v(g, x) GROUP BY g ORDER BY g",
            vec!["1|b", "2|c"],
        ),
        (
            "SELECT mode() WITHIN GROUP (ORDER BY x) FROM (VALUES (1)) v(x) WHERE false",
            vec!["NULL"],
        ),
        (
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY x), \
             percentile_disc(0) WITHIN GROUP (ORDER BY x), \
             percentile_disc(1) WITHIN GROUP (ORDER BY x), \
             percentile_disc(0.25) WITHIN GROUP (ORDER BY x DESC), \
             percentile_disc(NULL) WITHIN GROUP (ORDER BY x) \
             FROM (VALUES (1), (2), (3), (4), (5)) v(x)",
            vec!["3|1|5|4|NULL"],
        ),
        (
            "SELECT g::text FROM generate_series('2020-01-01'::timestamp, '2020-01-02', \
             interval '12 hours') g",
            vec![
                "2020-01-01 00:00:00",
                "2020-01-01 12:00:00",
                "2020-01-02 00:00:00",
            ],
        ),
        (
            "SELECT generate_series(timestamp '2020-01-01', '2020-01-02', '1 day')::text",
            vec!["2020-01-01 00:00:00", "2020-01-02 00:00:00"],
        ),
        (
            "SELECT m::text, m[1] FROM regexp_matches('foobarbequebaz', 'ba(.)', 'g') AS m",
            vec!["{r}|r", "{z}|z"],
        ),
        (
            "SELECT x::text, ordinality FROM regexp_matches('foobarbequebaz', 'ba(.)', 'g') \
             WITH ORDINALITY AS m(x)",
            vec!["{r}|1", "{z}|2"],
        ),
    ] {
        assert_eq!(rows(&mut s, q).await, want, "{q}");
    }
    for (sql, want) in [
        ("SELECT width_bucket(5, 0, 0, 4)", "2201G"),
        ("SELECT width_bucket(5, 0, 10, 0)", "2201G"),
        ("SELECT width_bucket('nan'::float8, 0, 10, 3)", "2201G"),
        (
            "SELECT percentile_disc(1.5) WITHIN GROUP (ORDER BY x) FROM (VALUES (1)) v(x)",
            "22003",
        ),
        ("SELECT decode('zz', 'hex')", "22023"),
        ("SELECT decode('abc', 'foo')", "22023"),
        ("SELECT make_interval(secs => 'infinity')", "22008"),
    ] {
        assert_eq!(code(&mut s, sql).await, want, "{sql}");
    }
}

/// `interval` literals and columns: PostgreSQL's interval text (a time of day, a day
/// count before one, years-months, ISO 8601, `ago`, qualifiers), stored, compared with
/// a month as 30 days, and an untyped literal in arithmetic read as PostgreSQL reads it.
/// Every expectation is PostgreSQL 15's output for the same statements.
#[tokio::test]
async fn interval_columns_and_literals_read_as_postgresql_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE ev (id INT PRIMARY KEY, took INTERVAL, at TIMESTAMP, n INT)",
    )
    .await;
    for sql in [
        "INSERT INTO ev VALUES (1, '1 day 02:00', '2024-01-01 10:00', 5), \
         (2, '-1:30', '2024-02-01', 7), (3, 'P2D', NULL, NULL), (4, NULL, NULL, NULL)",
        "INSERT INTO ev SELECT 5, interval '1 year 2 mons 3 days 04:05:06.5', NULL, 1",
        "UPDATE ev SET took = took + '00:30' WHERE id = 2",
        "ALTER TABLE ev ADD COLUMN pause INTERVAL DEFAULT '1 hour'",
    ] {
        ok(&mut s, sql).await;
    }
    for (q, want) in [
        (
            // `took` here is the output column, text, as in PostgreSQL.
            "SELECT id, took::text, pause::text FROM ev ORDER BY took NULLS FIRST, id",
            vec![
                "4|NULL|01:00:00",
                "2|-01:00:00|01:00:00",
                "1|1 day 02:00:00|01:00:00",
                "5|1 year 2 mons 3 days 04:05:06.5|01:00:00",
                "3|2 days|01:00:00",
            ],
        ),
        (
            "SELECT id FROM ev ORDER BY took NULLS FIRST, id",
            vec!["4", "2", "1", "3", "5"],
        ),
        // Sorted with a month as 30 days.
        (
            "SELECT x::text AS t FROM (VALUES (interval '40 days'), (interval '1 mon'), \
             (interval '29 days 23:00')) v(x) ORDER BY x",
            vec!["29 days 23:00:00", "1 mon", "40 days"],
        ),
        // Compared with a month as 30 days and a day as 24 hours.
        (
            "SELECT id FROM ev WHERE took = '48:00:00' OR took > '1 mon' ORDER BY id",
            vec!["3", "5"],
        ),
        (
            "SELECT count(*) FROM ev WHERE took BETWEEN '1 day' AND '3 days'",
            vec!["2"],
        ),
        (
            "SELECT id FROM ev WHERE took IN ('2 days', '-1:00') ORDER BY id",
            vec!["2", "3"],
        ),
        (
            "SELECT max(took)::text, min(took)::text, sum(took)::text FROM ev WHERE id < 5",
            vec!["2 days|-01:00:00|3 days 01:00:00"],
        ),
        // An untyped literal in arithmetic: an interval beside a timestamp or an
        // interval, the operand's own type otherwise.
        (
            "SELECT id, (at + '1 day 02:03')::text, (took - '2 hours')::text, n + '1', \
             n * '2' FROM ev WHERE id < 3 ORDER BY id",
            vec![
                "1|2024-01-02 12:03:00|1 day|6|10",
                "2|2024-02-02 02:03:00|-03:00:00|8|14",
            ],
        ),
        (
            "SELECT (timestamp '2024-01-02' - '2024-01-01')::text, \
             ('1 day' + timestamp '2024-01-02')::text",
            vec!["1 day|2024-01-03 00:00:00"],
        ),
        ("SELECT date '2024-01-02' - '2024-01-01'", vec!["1"]),
        (
            "SELECT interval '1 day 02:03:04'::text, interval '-1 day +02:00'::text, \
             interval '1 2:03:04'::text, interval '1-2'::text, interval 'P1Y2M3DT4H5M6S'::text",
            vec![
                "1 day 02:03:04|-1 days +02:00:00|1 day 02:03:04|1 year 2 mons|1 year 2 mons 3 days 04:05:06",
            ],
        ),
        (
            "SELECT '1 day 2 hours ago'::interval::text, interval '1.5 months'::text, \
             interval '1 year 2 days 3:04:05' HOUR TO MINUTE::text, \
             interval '1:30' MINUTE TO SECOND::text, interval '2' HOUR::text",
            vec!["-1 days -02:00:00|1 mon 15 days|1 year 2 days 03:04:00|00:01:30|02:00:00"],
        ),
        (
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'ev'::regclass AND attname = 'took'",
            vec!["interval"],
        ),
        (
            "SELECT data_type FROM information_schema.columns \
             WHERE table_name = 'ev' AND column_name = 'took'",
            vec!["interval"],
        ),
    ] {
        assert_eq!(rows(&mut s, q).await, want, "{q}");
    }
    // Not an interval: 22007; a field out of range: 22015; out of range: 22008; none
    // changes a row.
    for (sql, want) in [
        ("SELECT interval '1 day 1 day'", "22007"),
        ("SELECT '1 :30'::interval", "22007"),
        ("INSERT INTO ev (id, took) VALUES (6, 'soon')", "22007"),
        ("UPDATE ev SET took = '1:60' WHERE id = 1", "22015"),
        ("UPDATE ev SET took = took + 'x' WHERE id = 1", "22007"),
        ("SELECT interval '178956971 years'", "22008"),
        ("SELECT 1 + 'x'", "22P02"),
        ("INSERT INTO ev (id, took) VALUES (6, 5)", "42804"),
        // Keys and indexes on an interval are refused, as are fields on a column type.
        ("CREATE INDEX ev_took ON ev (took)", "0A000"),
        ("CREATE TABLE k (d INTERVAL PRIMARY KEY)", "0A000"),
        ("CREATE TABLE k (d INTERVAL HOUR TO MINUTE)", "0A000"),
        ("CREATE TABLE k (d INTERVAL[])", "0A000"),
    ] {
        assert_eq!(code(&mut s, sql).await, want, "{sql}");
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*), min(took)::text FROM ev WHERE id = 1"
        )
        .await,
        vec!["1|1 day 02:00:00"]
    );
}

/// `time` columns (and `time[]`): read from PostgreSQL's text forms, compared, indexed,
/// printed as PostgreSQL prints them, and described in the catalog as there. Every
/// expectation is PostgreSQL 15's output for the same statements.
#[tokio::test]
async fn time_columns_store_compare_and_print_as_postgresql_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE sh (id INT PRIMARY KEY, opens TIME, closes TIME WITHOUT TIME ZONE, \
         slots TIME[])",
    )
    .await;
    for sql in [
        "INSERT INTO sh VALUES (1, '09:00', '17:30:00', '{08:00,12:15:30.5}'), \
         (2, '9:05:01.25', '23:59:59.999999', NULL), (3, NULL, '00:00', '{}')",
        "INSERT INTO sh SELECT 4, '10:00'::time + interval '30 minutes', time '11:00', \
         ARRAY['10:00'::time]",
        "UPDATE sh SET closes = '18:00' WHERE id = 1",
        "CREATE INDEX sh_opens ON sh (opens)",
    ] {
        ok(&mut s, sql).await;
    }
    for (q, want) in [
        (
            "SELECT id, opens::text, closes::text, slots::text FROM sh ORDER BY opens NULLS FIRST",
            vec![
                "3|NULL|00:00:00|{}",
                "1|09:00:00|18:00:00|{08:00:00,12:15:30.5}",
                "2|09:05:01.25|23:59:59.999999|NULL",
                "4|10:30:00|11:00:00|{10:00:00}",
            ],
        ),
        (
            "SELECT id FROM sh WHERE opens > '09:01' ORDER BY 1",
            vec!["2", "4"],
        ),
        // Through the index.
        ("SELECT id FROM sh WHERE opens = '09:05:01.25'", vec!["2"]),
        (
            "SELECT id, (closes - opens)::text, pg_typeof(opens)::text FROM sh ORDER BY 1",
            vec![
                "1|09:00:00|time without time zone",
                "2|14:54:58.749999|time without time zone",
                "3|NULL|time without time zone",
                "4|00:30:00|time without time zone",
            ],
        ),
        (
            "SELECT max(opens)::text, min(closes)::text, count(DISTINCT opens) FROM sh",
            vec!["10:30:00|00:00:00|3"],
        ),
        (
            "SELECT '10:00:01.5'::time::text, '1:2'::time::text, '10:00+02'::time::text",
            vec!["10:00:01.5|01:02:00|10:00:00"],
        ),
        (
            "SELECT ('2024-01-01'::date + '10:30'::time)::text",
            vec!["2024-01-01 10:30:00"],
        ),
        // A difference of timestamps is PostgreSQL's interval of days and a time of day.
        (
            "SELECT (timestamp '2024-01-03' - timestamp '2024-01-01 10:00')::text, \
             (timestamp '2024-01-01' - timestamp '2024-01-03 10:00:00.5')::text, \
             pg_typeof(timestamp '2024-01-03' - timestamp '2024-01-01')::text",
            vec!["1 day 14:00:00|-2 days -10:00:00.5|interval"],
        ),
        (
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'sh'::regclass AND attnum > 0 ORDER BY attnum",
            vec![
                "integer",
                "time without time zone",
                "time without time zone",
                "time without time zone[]",
            ],
        ),
        (
            "SELECT data_type, udt_name FROM information_schema.columns \
             WHERE table_name = 'sh' ORDER BY ordinal_position",
            vec![
                "integer|int4",
                "time without time zone|time",
                "time without time zone|time",
                "ARRAY|_time",
            ],
        ),
    ] {
        assert_eq!(rows(&mut s, q).await, want, "{q}");
    }
    // Out of range is PostgreSQL's 22008; not a time at all, 22007; neither changes a row.
    assert_eq!(code(&mut s, "SELECT '25:00'::time").await, "22008");
    assert_eq!(
        code(&mut s, "UPDATE sh SET opens = 'noon' WHERE id = 1").await,
        "22007"
    );
    assert_eq!(
        code(&mut s, "CREATE TABLE tz (t TIME WITH TIME ZONE)").await,
        "0A000"
    );
    assert_eq!(
        rows(&mut s, "SELECT opens::text FROM sh WHERE id = 1").await,
        ["09:00:00"]
    );
}

/// A database whose queries may hold 32 MiB (`query_memory_bytes_max`).
async fn db_with_32_mib_of_query_memory() -> TestDb {
    const MIB: usize = 1024 * 1024;
    TestDb::with_config(SqlConfig {
        query_memory_bytes_max: 32 * MIB,
        ..SqlConfig::default()
    })
    .await
}

/// The rows a lateral subquery returns for one outer row are held until they are joined:
/// they count against `query_memory_bytes_max` (53200 past it), and the session serves on.
#[tokio::test]
async fn a_lateral_subquerys_rows_are_bounded_by_query_memory() {
    let db = db_with_32_mib_of_query_memory().await;
    let mut s = db.session();
    // About 40 MB of rows for the one outer row: refused.
    let lateral = |n: usize| {
        format!(
            "SELECT count(*) FROM (VALUES ({n})) v(n), \
             LATERAL (SELECT repeat('x', 1000) AS r FROM generate_series(1, v.n)) x"
        )
    };
    let e = run(&mut s, &lateral(40_000)).await.unwrap_err();
    assert_eq!(e.code, "53200", "{}", e.message);
    assert!(e.message.contains("lateral subquery rows"), "{}", e.message);
    assert_eq!(rows(&mut s, &lateral(2_000)).await, ["2000"]);
}

/// The values an ordered-set aggregate holds for a group count against the query's
/// memory: past `query_memory_bytes_max`, 53200, and the session goes on.
#[tokio::test]
async fn an_ordered_set_aggregates_values_are_bounded_by_query_memory() {
    let db = db_with_32_mib_of_query_memory().await;
    let mut s = db.session();
    // About 60 MB of distinct values in one group: refused.
    let mode = |n: usize| {
        format!(
            "SELECT length(mode() WITHIN GROUP (ORDER BY r)) FROM \
             (SELECT repeat('x', 1000) || g AS r FROM generate_series(1, {n}) g) t"
        )
    };
    let e = run(&mut s, &mode(60_000)).await.unwrap_err();
    assert_eq!(e.code, "53200", "{}", e.message);
    assert_eq!(rows(&mut s, &mode(2_000)).await, ["1001"]);
    // The same rows streamed through an aggregate that holds none of them fit.
    assert_eq!(
        rows(
            &mut s,
            "SELECT max(length(r)) FROM \
             (SELECT repeat('x', 1000) || g AS r FROM generate_series(1, 60000) g) t"
        )
        .await,
        ["1005"]
    );
}

/// `interval * n`, `n * interval` and `interval / n` as PostgreSQL computes them: a month's
/// fraction becomes days of 30, a day's fraction time. Expectations are PostgreSQL 15's.
#[tokio::test]
async fn an_interval_scales_by_a_number_as_postgresql_scales_it() {
    let db = TestDb::new().await;
    let mut s = db.session();
    assert_eq!(
        rows(
            &mut s,
            "SELECT (interval '1 day' * 3)::text, (3 * interval '1 minute')::text, \
             (interval '1 hour' / 2)::text, (interval '1 mon' * 1.5)::text, \
             (interval '1 mon 1 day' / 3)::text, (interval '-1 day 2 hours' * 2.5)::text, \
             (2 * interval '36 hours')::text, (interval '1 year' * 0.1)::text"
        )
        .await,
        [
            "3 days|00:03:00|00:30:00|1 mon 15 days|10 days 08:00:00|-2 days -07:00:00|\
          72:00:00|1 mon 6 days"
        ]
    );
    assert_eq!(
        rows(&mut s, "SELECT now() + interval '1 minute' * 5 > now()").await,
        ["true"]
    );
    assert_eq!(code(&mut s, "SELECT interval '1 day' / 0").await, "22012");
    assert_eq!(
        code(&mut s, "SELECT interval '1000000000 days' * 10").await,
        "22008"
    );
}

/// PostgreSQL 15's answers to the same statements (checked against it).
#[tokio::test]
async fn generate_series_in_a_select_list_yields_rows_as_in_postgresql() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE gs (id int PRIMARY KEY)").await;
    ok(&mut s, "INSERT INTO gs VALUES (1), (2)").await;
    assert_eq!(
        rows(&mut s, "SELECT generate_series(1, 3)").await,
        ["1", "2", "3"]
    );
    assert_eq!(
        column_names(&mut s, "SELECT generate_series(1, 3)").await,
        ["generate_series"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT generate_series(timestamp '2024-01-01', timestamp '2024-01-02', \
             interval '12 hours')::text"
        )
        .await,
        [
            "2024-01-01 00:00:00",
            "2024-01-01 12:00:00",
            "2024-01-02 00:00:00"
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, generate_series(1, id) FROM gs ORDER BY 1, 2"
        )
        .await,
        ["1|1", "2|1", "2|2"]
    );
    assert_eq!(
        rows(&mut s, "SELECT generate_series(1, 2) + 1 AS x, 'a'").await,
        ["2|a", "3|a"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM (SELECT generate_series(1, 5)) AS s"
        )
        .await,
        ["5"]
    );
}

/// PostgreSQL 15's answers to the same statements (checked against it).
#[tokio::test]
async fn date_and_time_functions_answer_as_postgresql_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    // A date moved by an interval is a timestamp: the hour is kept.
    assert_eq!(
        rows(
            &mut s,
            "SELECT (date '2024-03-01' + interval '1 hour')::text, \
             pg_typeof(date '2024-03-01' + interval '1 hour'), \
             (interval '1 day' + date '2024-03-01')::text, \
             (date '2024-03-01' - interval '1 month')::text, \
             ('2024-01-31'::date + interval '1 month')::text"
        )
        .await,
        [
            "2024-03-01 01:00:00|timestamp without time zone|2024-03-02 00:00:00|\
             2024-02-01 00:00:00|2024-02-29 00:00:00"
        ]
    );
    // The days between two dates are an integer (this was a bigint).
    assert_eq!(
        rows(
            &mut s,
            "SELECT date '2024-03-01' - date '2024-02-01', \
             pg_typeof(date '2024-03-01' - date '2024-02-01'), \
             date '2024-01-01' - date '2024-03-01', (date '2024-03-01' - date '2024-02-01') / 2"
        )
        .await,
        ["29|integer|-60|14"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT age(timestamp '2024-03-01', timestamp '2023-01-15')::text, \
             age(date '2024-03-01', timestamp '2023-01-15 10:00')::text, \
             age(timestamp '2000-01-01') > interval '20 years'"
        )
        .await,
        ["1 year 1 mon 17 days|1 year 1 mon 16 days 14:00:00|true"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT justify_days(interval '35 days')::text, \
             justify_hours(interval '50 hours')::text, \
             justify_interval(interval '1 mon -1 hour')::text"
        )
        .await,
        ["1 mon 5 days|2 days 02:00:00|29 days 23:00:00"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT make_timestamp(2024, 1, 2, 3, 4, 5.5)::text, \
             to_date('2024-03-05', 'YYYY-MM-DD')::text, \
             to_timestamp('2024-03-05 10:11', 'YYYY-MM-DD HH24:MI')::text, \
             to_timestamp('05 Mar 2024', 'DD Mon YYYY')::text"
        )
        .await,
        ["2024-01-02 03:04:05.5|2024-03-05|2024-03-05 10:11:00+00|2024-03-05 00:00:00+00"]
    );
    assert_eq!(
        code(&mut s, "SELECT make_timestamp(2024, 2, 30, 0, 0, 0)").await,
        "22008"
    );
    assert_eq!(
        code(&mut s, "SELECT to_date('2024-02-30', 'YYYY-MM-DD')").await,
        "22008"
    );
    assert_eq!(
        code(&mut s, "SELECT to_date('March', 'YYYY')").await,
        "22007"
    );
    // Intervals compare with a month as 30 days and a day as 24 hours.
    assert_eq!(
        rows(
            &mut s,
            "SELECT '1 day'::interval = '24 hours'::interval, \
             interval '1 mon' > interval '29 days', interval '1 mon' = interval '30 days', \
             (timestamp '2024-03-02' - timestamp '2024-03-01') = interval '24 hours'"
        )
        .await,
        ["true|true|true|true"]
    );
    // EXTRACT is numeric and keeps fractions of a second; date_part is a float.
    assert_eq!(
        rows(
            &mut s,
            "SELECT extract(second from timestamp '2024-03-01 10:30:15.5'), \
             extract(epoch from timestamp '2024-03-01'), extract(year from date '2024-03-01'), \
             extract(epoch from interval '1 day 2 hours'), \
             extract(epoch from interval '1 year 1 month'), \
             extract(epoch from (timestamp '2024-03-01' - timestamp '2024-02-01')), \
             extract(milliseconds from timestamp '2024-03-01 10:30:15.5'), \
             extract(epoch from date '2024-03-01'), \
             date_part('second', timestamp '2024-03-01 10:30:15.5'), \
             pg_typeof(extract(year from now())), pg_typeof(date_part('year', now()))"
        )
        .await,
        [
            "15.500000|1709251200.000000|2024|93600.000000|34149600.000000|2505600.000000|\
             15500.000|1709251200|15.5|numeric|double precision"
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT extract(dow from date '2024-03-03'), extract(isodow from date '2024-03-03'), \
             extract(doy from date '2024-03-03'), extract(week from date '2024-03-03'), \
             extract(quarter from date '2024-05-03'), extract(century from date '2024-05-03'), \
             extract(decade from date '2024-05-03'), extract(isoyear from date '2024-12-31'), \
             extract(minute from time '10:30:15.5'), extract(day from interval '3 days 4 hours')"
        )
        .await,
        ["0|7|63|9|2|21|202|2025|30|3"]
    );
    assert_eq!(
        code(&mut s, "SELECT extract(hour from date '2024-03-01')").await,
        "0A000"
    );
    assert_eq!(
        code(&mut s, "SELECT extract(foo from date '2024-03-01')").await,
        "22023"
    );
    // AT TIME ZONE: a timestamptz becomes the zone's wall-clock time, and a timestamp is
    // read as one; a bare offset is POSIX's (hours west).
    assert_eq!(
        rows(
            &mut s,
            "SELECT (timestamptz '2024-01-01 00:00+02' AT TIME ZONE 'Europe/Paris')::text, \
             (timestamptz '2024-07-01 12:00+00' AT TIME ZONE 'america/new_york')::text, \
             (timestamp '2024-01-01 00:00' AT TIME ZONE 'Europe/Paris')::text, \
             (timestamptz '2024-01-01 00:00+00' AT TIME ZONE '+02')::text, \
             pg_typeof(now() AT TIME ZONE 'UTC'), \
             pg_typeof(localtimestamp AT TIME ZONE 'UTC'), \
             (date '2024-01-01' AT TIME ZONE 'Europe/Paris')::text"
        )
        .await,
        [
            "2023-12-31 23:00:00|2024-07-01 08:00:00|2023-12-31 23:00:00+00|\
             2023-12-31 22:00:00|timestamp without time zone|timestamp with time zone|\
             2024-01-01 01:00:00"
        ]
    );
    assert_eq!(
        code(&mut s, "SELECT now() AT TIME ZONE 'Mars/Olympus'").await,
        "22023"
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT statement_timestamp() >= now(), clock_timestamp() >= now(), \
             transaction_timestamp() = now(), pg_typeof(localtime), \
             isfinite(date '2024-01-01')"
        )
        .await,
        ["true|true|true|time without time zone|true"]
    );
}

/// PostgreSQL 15's answers to the same statements (checked against it).
#[tokio::test]
async fn string_bytea_array_and_math_functions_answer_as_postgresql_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(
        &mut s,
        "CREATE TABLE fb (id int PRIMARY KEY, name text, b bytea, amount numeric(8,2))",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO fb VALUES (1, 'Ann', '\\x4142', 10.5), (2, 'Bob', 'a\\\\b', -5), \
         (3, 'Cy', NULL, 20)",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT 'abc' SIMILAR TO 'a%', 'abc' SIMILAR TO '(a|b)%', 'abc' NOT SIMILAR TO 'b%', \
             'a.c' SIMILAR TO 'a.c', 'abc' SIMILAR TO 'a.c', 'a%' SIMILAR TO 'a\\%'"
        )
        .await,
        ["true|true|true|true|false|true"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT name FROM fb WHERE name SIMILAR TO '(A|C)%' ORDER BY 1"
        )
        .await,
        ["Ann", "Cy"]
    );
    // A string cast to bytea is read as PostgreSQL's text of bytea, and printed so.
    assert_eq!(
        rows(
            &mut s,
            "SELECT '\\x41'::bytea::text, E'\\\\x41'::bytea::text, 'a\\\\b'::bytea::text, \
             'abc'::bytea::text"
        )
        .await,
        ["\\x41|\\x41|\\x615c62|\\x616263"]
    );
    assert_eq!(
        rows(&mut s, "SELECT id, b::text FROM fb WHERE b = '\\x4142'").await,
        ["1|\\x4142"]
    );
    assert_eq!(code(&mut s, "SELECT '\\x4'::bytea").await, "22P02");
    assert_eq!(
        rows(
            &mut s,
            "SELECT quote_ident('Foo'), quote_ident('foo'), quote_ident('select'), \
             quote_literal('it''s'), quote_literal(E'a\\\\b'), quote_nullable(NULL), \
             quote_nullable(5)"
        )
        .await,
        ["\"Foo\"|foo|\"select\"|'it''s'|E'a\\\\b'|NULL|'5'"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT format('%s has %I %L', 'x', 'Col', 'v'), format('%2$s %1$s', 'a', 'b'), \
             format('[%5s][%-5s]', 'ab', 'cd'), format('%s|%L|%s', NULL, NULL, 1.5::float8), \
             format('%s', timestamp '2024-01-01 10:00')"
        )
        .await,
        ["x has \"Col\" 'v'|b a|[   ab][cd   ]||NULL|1.5|2024-01-01 10:00:00"]
    );
    assert_eq!(code(&mut s, "SELECT format('%s %s', 1)").await, "22023");
    assert_eq!(code(&mut s, "SELECT format('%x', 1)").await, "22023");
    assert_eq!(code(&mut s, "SELECT format('%I', NULL)").await, "22004");
    assert_eq!(
        rows(
            &mut s,
            "SELECT regexp_split_to_array('a1b2c', '[0-9]')::text, \
             array_remove(ARRAY['a','b','a'], 'a')::text, array_remove(ARRAY[1,2,1], 1)::text, \
             array_dims(ARRAY[1,2]), array_dims(ARRAY[[1,2,3],[4,5,6]])"
        )
        .await,
        ["{a,b,c}|{b}|{2}|[1:2]|[1:2][1:3]"]
    );
    // ARRAY(subquery): in the subquery's order, correlated or not, empty for no rows.
    assert_eq!(
        rows(
            &mut s,
            "SELECT ARRAY(SELECT x FROM generate_series(1, 3) x ORDER BY x DESC)::text, \
             ARRAY(SELECT name FROM fb WHERE id > 10)::text, \
             ARRAY(SELECT x AS v FROM generate_series(1, 5) x ORDER BY v DESC LIMIT 2)::text, \
             ARRAY(SELECT count(*) FROM fb GROUP BY amount > 0 ORDER BY 1)::text"
        )
        .await,
        ["{3,2,1}|{}|{5,4}|{1,2}"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT c.id, ARRAY(SELECT d.name FROM fb d WHERE d.id <> c.id ORDER BY d.name DESC)::text \
             FROM fb c ORDER BY 1"
        )
        .await,
        ["1|{Cy,Bob}", "2|{Cy,Ann}", "3|{Bob,Ann}"]
    );
    assert_eq!(
        code(&mut s, "SELECT ARRAY(SELECT id, name FROM fb)").await,
        "42601"
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT mod(7, 3), mod(-7, 3), mod(7.5, 2), sign(-3)::text, sign(2.5)::text, \
             variance(amount)::numeric(10,4), every(amount > 0) FROM fb"
        )
        .await,
        ["1|-1|1.5|-1|1|159.2500|false"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT current_setting('TimeZone'), current_setting('server_version_num'), \
             current_setting('nope', true) IS NULL"
        )
        .await,
        ["UTC|150000|true"]
    );
    assert_eq!(
        code(&mut s, "SELECT current_setting('nope')").await,
        "42704"
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT name FROM fb ORDER BY name COLLATE \"C\" DESC"
        )
        .await,
        ["Cy", "Bob", "Ann"]
    );
    assert_eq!(
        code(
            &mut s,
            "SELECT name FROM fb ORDER BY name COLLATE \"en_US\""
        )
        .await,
        "0A000"
    );
    assert_eq!(
        column_names(
            &mut s,
            "SELECT date '2024-01-01', trim(' x '), trim(leading ' x '), \
             extract(year from now()), interval '1 day', substring('abc' from 1 for 1), \
             ceil(1.5), now() AT TIME ZONE 'UTC', '1'::interval, time '10:00'"
        )
        .await,
        [
            "date",
            "btrim",
            "ltrim",
            "extract",
            "interval",
            "substring",
            "ceil",
            "timezone",
            "interval",
            "time"
        ]
    );
    // Expressions written apart that plan alike keep their own columns.
    assert_eq!(
        rows(
            &mut s,
            "SELECT btrim('xax', 'x'), trim(both 'x' from 'xax'), \
             interval '90 minutes' = interval '1.5 hours', count(*), count(*) FROM fb"
        )
        .await,
        ["a|a|true|3|3"]
    );
}

/// PostgreSQL 15's answers to the same statements (checked against it).
#[tokio::test]
async fn fractions_become_integers_and_numbers_print_as_postgresql_rounds_them() {
    let db = TestDb::new().await;
    let mut s = db.session();
    // A numeric rounds half away from zero, a float half to even; Arrow's cast truncated.
    assert_eq!(
        rows(
            &mut s,
            "SELECT '12.5'::numeric::int, 12.5::int, 13.5::int, (-12.5)::int, \
             '2.5'::float8::int, 3.5::float8::int, (-2.5)::float8::int4, 2.7::float4::int, \
             0.49999::int, 10.5::bigint, 10.5::smallint"
        )
        .await,
        ["13|13|14|-13|2|4|-2|3|0|11|11"]
    );
    assert_eq!(code(&mut s, "SELECT 2147483647.5::int").await, "22003");
    assert_eq!(code(&mut s, "SELECT 1e10::int").await, "22003");
    // Assigned to an integer column, the same.
    ok(
        &mut s,
        "CREATE TABLE ri (id int PRIMARY KEY, n int, s smallint)",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO ri VALUES (1, 10.5, 2.5), (2, -3.5, 1.5::float8)",
    )
    .await;
    assert_eq!(
        rows(&mut s, "SELECT id, n, s FROM ri ORDER BY id").await,
        ["1|11|3", "2|-4|2"]
    );
    assert_eq!(
        rows(&mut s, "UPDATE ri SET n = 7.5 WHERE id = 1 RETURNING n").await,
        ["8"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT to_char(1234.5, 'FM9,999.00'), to_char(0.5, '0.99'), to_char(-12, '999'), \
             to_char(1234567, '9G999G999'), to_char(3.14159::float8, '9.999'), \
             to_char(125::int, '9,999'), to_char(-125::bigint, 'FM0000'), \
             to_char(-12, '999PR'), to_char(12345, '999')"
        )
        .await,
        ["1,234.50| 0.50| -12| 1,234,567| 3.142|   125|-0125| <12>| ###"]
    );
    assert_eq!(
        code(&mut s, "SELECT to_char(1.5, '9.9EEEE')").await,
        "0A000"
    );
    // round of a float rounds half to even; ceil, floor and trunc of a numeric have
    // PostgreSQL's scale; floor(-0.5) is -1 (it overflowed the argument's precision).
    assert_eq!(
        rows(
            &mut s,
            "SELECT round(2.5::float8)::text, round(-2.5::float8)::text, round(3.5::float8)::text, \
             round(0.5::float4)::text, log(1000)::text"
        )
        .await,
        ["2|-2|4|0|3"]
    );
    ok(
        &mut s,
        "CREATE TABLE rn (id int PRIMARY KEY, amount numeric(12,2))",
    )
    .await;
    ok(
        &mut s,
        "INSERT INTO rn VALUES (1, 10.5), (2, 99.99), (3, -5)",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT round(amount), trunc(amount), round(amount, 1), trunc(amount, 1), \
             ceil(amount), floor(amount), abs(amount) FROM rn ORDER BY id"
        )
        .await,
        [
            "11|10|10.5|10.5|11|10|10.50",
            "100|99|100.0|99.9|100|99|99.99",
            "-5|-5|-5.0|-5.0|-5|-5|5.00"
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT trunc(12.345, 2), trunc(-12.345, 1), trunc(1.5, 3), \
             trunc(99.99::numeric(4,2), 5), ceil(-0.5), floor(-0.5)"
        )
        .await,
        ["12.34|-12.3|1.500|99.99000|0|-1"]
    );
}

/// PostgreSQL 15's answers to the same statements (checked against it).
#[tokio::test]
async fn regular_expression_functions_answer_as_postgresql_does() {
    let db = TestDb::new().await;
    let mut s = db.session();
    ok(&mut s, "CREATE TABLE rx (id int PRIMARY KEY, email text)").await;
    ok(
        &mut s,
        "INSERT INTO rx VALUES (1, 'ann@x.org'), (2, NULL), (3, 'cy@y.com')",
    )
    .await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT regexp_matches('foo123bar45', '[0-9]+', 'g')::text"
        )
        .await,
        ["{123}", "{45}"]
    );
    assert_eq!(
        column_names(&mut s, "SELECT regexp_matches('foo123bar45', '[0-9]+')").await,
        ["regexp_matches"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT regexp_matches('foo123bar45', '[0-9]+')::text"
        )
        .await,
        ["{123}"]
    );
    assert!(
        rows(&mut s, "SELECT regexp_matches('abc', 'x')")
            .await
            .is_empty()
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT regexp_matches('a1b2', '([a-z])([0-9])', 'g')::text"
        )
        .await,
        ["{a,1}", "{b,2}"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT regexp_matches('ABC', 'b', 'i')::text, regexp_matches('a.c', '.', 'q')::text"
        )
        .await,
        ["{B}|{.}"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, regexp_matches(email, '@(.*)$')::text FROM rx ORDER BY id"
        )
        .await,
        ["1|{x.org}", "3|{y.com}"]
    );
    assert_eq!(
        rows(&mut s, "SELECT (regexp_matches('k=v', '(\\w)=(\\w)'))[2]").await,
        ["v"]
    );
    assert_eq!(
        code(&mut s, "SELECT regexp_matches('abc', 'b', 'z')").await,
        "22023"
    );
    assert_eq!(
        code(&mut s, "SELECT regexp_matches('abc', '(')").await,
        "2201B"
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT substring('hello' from 'l+'), substring('foo123' from '[0-9]+'), \
             substring('abc' from 'x') IS NULL, substring('k=v' from '=(.)'), \
             substring('hello' from 2 for 2), substring('hello', 2), substring('hello' from 3)"
        )
        .await,
        ["ll|123|true|v|el|ello|llo"]
    );
}
