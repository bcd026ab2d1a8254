//! Old row versions are garbage-collected below a safe point that never passes an open
//! transaction's snapshot.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::Server;

/// A metric's value from /metrics.
fn metric(server: &Server, name: &str) -> u64 {
    let (status, body) = server.http_get("/metrics");
    assert!(status.contains("200"), "{status}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
}

/// Waits until `runs` more GC runs have finished.
fn wait_for_gc_runs(server: &Server, runs: u64) {
    let target = metric(server, "flotilla_gc_runs") + runs;
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(server, "flotilla_gc_runs") < target {
        assert!(
            Instant::now() < deadline,
            "GC did not run {runs} more times"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until GC has removed at least `records` records.
fn wait_until_deleted(server: &Server, records: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(server, "flotilla_gc_records_deleted") < records {
        assert!(
            Instant::now() < deadline,
            "GC removed {} records, not {records}",
            metric(server, "flotilla_gc_records_deleted")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn updates(n: usize) -> String {
    "UPDATE counter SET n = n + 1 WHERE id = 1;\n".repeat(n)
}

#[test]
fn gc_removes_replaced_versions_but_never_what_an_open_snapshot_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--gc-life-time-s", "1", "--gc-run-interval-s", "1"],
    );
    server.psql_ok(
        "CREATE TABLE counter (id INT PRIMARY KEY, n INT); INSERT INTO counter VALUES (1, 0);",
    );
    server.psql_ok(&updates(30));

    // A REPEATABLE READ transaction holds its snapshot (n = 30) open in its own session.
    let mut holder = server
        .psql_command()
        .args(["-A", "-t", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_holder = holder.stdin.take().unwrap();
    let mut from_holder = BufReader::new(holder.stdout.take().unwrap());
    let mut read = |to: &mut std::process::ChildStdin, sql: &str| {
        writeln!(to, "{sql}").unwrap();
        to.flush().unwrap();
        let mut line = String::new();
        from_holder.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    writeln!(to_holder, "BEGIN ISOLATION LEVEL REPEATABLE READ;").unwrap();
    assert_eq!(
        read(&mut to_holder, "SELECT n FROM counter WHERE id = 1;"),
        "30"
    );

    server.psql_ok(&updates(30));
    // The life time (1 s) soon passes every version; only the open snapshot holds GC
    // back: the 30 versions older than the one it reads go, the 30 newer ones stay, run
    // after run.
    wait_until_deleted(&server, 30);
    wait_for_gc_runs(&server, 3);
    assert_eq!(metric(&server, "flotilla_gc_records_deleted"), 30);
    assert_eq!(
        read(&mut to_holder, "SELECT n FROM counter WHERE id = 1;"),
        "30",
        "the open snapshot lost its version"
    );

    // Once it ends, everything but the newest version goes.
    assert_eq!(read(&mut to_holder, "COMMIT; SELECT 'done';"), "done");
    drop(to_holder);
    let _ = holder.wait();
    // A node reports the newest snapshot it handed out (an idle one fetches a fresh
    // timestamp only every minute): one more read moves it past the last update.
    assert_eq!(server.psql_ok("SELECT count(*) FROM counter;").trim(), "1");
    wait_until_deleted(&server, 60);
    wait_for_gc_runs(&server, 2);
    assert_eq!(metric(&server, "flotilla_gc_records_deleted"), 60);
    assert!(metric(&server, "flotilla_gc_safe_point_unix_ms") > 0);
    assert_eq!(
        server.psql_ok("SELECT n FROM counter WHERE id = 1;").trim(),
        "60"
    );
    // Nothing else changed: more writes and reads work as before.
    server.psql_ok(&updates(5));
    assert_eq!(server.psql_ok("SELECT n FROM counter;").trim(), "65");
}

#[test]
fn invalid_gc_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["standalone", "--data-dir"])
        .arg(dir.path())
        .args(["--sql-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--gc-run-interval-s", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gc.run_interval_s must be at least 1"),
        "{stderr}"
    );
}
