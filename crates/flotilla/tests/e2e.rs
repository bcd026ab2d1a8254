//! End-to-end: the real binary on loopback, driven by psql.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use support::Server;

#[test]
fn help_and_version() {
    let help = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("standalone"));
    let sub = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["standalone", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&sub.stdout);
    for flag in ["--data-dir", "--sql-addr", "--http-addr", "--config"] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
    let version = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("flotilla "));
}

/// A playground that cannot start says why, at once, and keeps the logs it points at;
/// an address already taken is refused before any child starts.
#[test]
fn a_playground_that_cannot_start_names_the_child_and_keeps_its_log() {
    let playground = |dir: &std::path::Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("playground")
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    // Every child refuses an emulated version this build does not know and exits at
    // once; the playground names whichever it finds gone first (any of them: they all
    // start before it looks).
    let out = playground(dir.path(), &["--emulate-binary-version", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let (role, id) = ["meta", "store", "sql"]
        .into_iter()
        .flat_map(|role| (1..=3).map(move |id| (role, id)))
        .find(|(role, id)| err.contains(&format!("{role} {id} exited while starting")))
        .unwrap_or_else(|| panic!("no child named: {err}"));
    let log = dir.path().join("logs").join(format!("{role}-{id}.log"));
    assert!(err.contains(&log.display().to_string()), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("--emulate-binary-version 0"), "{text}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = playground(dir.path(), &["--sql-addr", &addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{addr} cannot be listened on")),
        "{err}"
    );
    assert!(!dir.path().join("logs").join("meta-1.log").exists());
}

#[test]
fn psql_runs_ddl_dml_transactions_and_describes_tables() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.psql_ok(
        "CREATE TABLE acct (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, balance NUMERIC(12,2) DEFAULT 0);
         CREATE INDEX acct_owner ON acct (owner);
         INSERT INTO acct VALUES (1, 'ada', 100), (2, 'bob', 50);
         BEGIN;
         UPDATE acct SET balance = balance - 10 WHERE id = 1;
         UPDATE acct SET balance = balance + 10 WHERE id = 2;
         COMMIT;
         BEGIN;
         DELETE FROM acct;
         ROLLBACK;",
    );
    let out = server.psql_ok("SELECT id, owner, balance FROM acct ORDER BY id;");
    assert_eq!(out, "1|ada|90.00\n2|bob|60.00\n");
    // SQL-level prepared statements, their values evaluated: on the server's runtime
    // threads such an EXECUTE once overflowed the stack and took the server down.
    server.psql_ok(
        "PREPARE pay (bigint, numeric) AS UPDATE acct SET balance = balance + $2 WHERE id = $1;
         EXECUTE pay (2, 2 * 3);
         EXECUTE pay (1, -1.5);
         DEALLOCATE pay;",
    );
    let out = server.psql_ok("SELECT id, balance FROM acct ORDER BY id;");
    assert_eq!(out, "1|88.50\n2|66.00\n");
    server.psql_ok(
        "CREATE TABLE opened (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, balance NUMERIC(12,2));
         PREPARE open (int, text, numeric) AS INSERT INTO opened VALUES ($1, $2, $3);
         EXECUTE open (3, 'c' || 'y', 2 * 3);",
    );
    assert_eq!(server.psql_ok("SELECT * FROM opened;"), "3|cy|6.00\n");
    let dt = server.psql_ok("\\dt");
    assert!(dt.contains("public|acct|table|postgres"), "{dt}");
    // Without tuples-only mode, so psql prints the index footer too.
    let out = server
        .psql_command()
        .args(["-c", "\\d acct"])
        .output()
        .unwrap();
    let d = String::from_utf8_lossy(&out.stdout);
    assert!(d.contains("Table \"public.acct\""), "{d}");
    assert!(
        d.contains(" owner   | text          |           | not null |"),
        "{d}"
    );
    assert!(d.contains("acct_pkey"), "{d}");
    assert!(d.contains("acct_owner"), "{d}");
    // Numbered columns, as psql describes them.
    server.psql_ok(
        "CREATE TABLE numbered (id SERIAL PRIMARY KEY, n BIGINT GENERATED ALWAYS AS IDENTITY, v TEXT);
         INSERT INTO numbered (v) VALUES ('a'), ('b');",
    );
    let out = server
        .psql_command()
        .args(["-c", "\\d numbered"])
        .output()
        .unwrap();
    let d = String::from_utf8_lossy(&out.stdout);
    assert!(d.contains("nextval('numbered_id_seq'::regclass)"), "{d}");
    assert!(
        d.contains("| not null | generated always as identity"),
        "{d}"
    );
    assert_eq!(
        server.psql_ok("SELECT id, n, v FROM numbered ORDER BY id;"),
        "1|1|a\n2|2|b\n"
    );
    // Check constraints, one added to the table with rows and one not yet validated.
    server.psql_ok(
        "ALTER TABLE acct ADD CHECK (balance >= 0);
         ALTER TABLE acct ADD CONSTRAINT rich CHECK (balance > 1000) NOT VALID;",
    );
    let out = server
        .psql_command()
        .args(["-c", "\\d acct"])
        .output()
        .unwrap();
    let d = String::from_utf8_lossy(&out.stdout);
    assert!(
        d.contains("Check constraints:\n    \"acct_balance_check\" CHECK (balance >= 0)\n    \"rich\" CHECK (balance > 1000) NOT VALID\n"),
        "{d}"
    );
    // Foreign keys, from both sides, and a violation with PostgreSQL's DETAIL.
    server.psql_ok(
        "CREATE TABLE owners (id INT PRIMARY KEY, email TEXT UNIQUE);
         CREATE TABLE pets (id INT PRIMARY KEY, owner INT REFERENCES owners,
                            email TEXT REFERENCES owners (email) DEFERRABLE INITIALLY DEFERRED);",
    );
    let out = server
        .psql_command()
        .args(["-c", "\\d pets", "-c", "\\d owners"])
        .output()
        .unwrap();
    let d = String::from_utf8_lossy(&out.stdout);
    assert!(
        d.contains("Foreign-key constraints:\n    \"pets_email_fkey\" FOREIGN KEY (email) REFERENCES owners(email) DEFERRABLE INITIALLY DEFERRED\n    \"pets_owner_fkey\" FOREIGN KEY (owner) REFERENCES owners(id)\n"),
        "{d}"
    );
    assert!(
        d.contains("Referenced by:\n    TABLE \"pets\" CONSTRAINT \"pets_email_fkey\" FOREIGN KEY (email) REFERENCES owners(email) DEFERRABLE INITIALLY DEFERRED\n"),
        "{d}"
    );
    let out = server
        .psql_command()
        .args(["-c", "INSERT INTO pets VALUES (1, 7, NULL)"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("violates foreign key constraint \"pets_owner_fkey\"")
            && e.contains("DETAIL:  Key (owner)=(7) is not present in table \"owners\"."),
        "{e}"
    );
    // A deferred one is checked at COMMIT: a reference may come before its row.
    server.psql_ok(
        "BEGIN; INSERT INTO pets VALUES (2, NULL, 'x@y'); INSERT INTO owners VALUES (3, 'x@y'); COMMIT;",
    );
    let e = server.psql_err("BEGIN; INSERT INTO pets VALUES (3, NULL, 'no@one'); COMMIT;");
    assert!(
        e.contains("violates foreign key constraint \"pets_email_fkey\"")
            && e.contains("DETAIL:  Key (email)=(no@one) is not present in table \"owners\"."),
        "{e}"
    );
    assert_eq!(server.psql_ok("SELECT id FROM pets ORDER BY id;"), "2\n");
    // The session functions name the user and database the client connected as.
    let out = server
        .psql_command()
        .args(["-U", "alice", "-d", "appdb", "-tA", "-c"])
        .arg("SELECT current_user, session_user, current_database(), current_schema()")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "alice|alice|appdb|public\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A deeply nested statement is answered, or refused past the parser's limit, on the
/// server's own threads as a user runs it: before their stack was set (8 MiB) and
/// DataFusion's recursion grew it on demand, a 200-deep expression overflowed a debug
/// build's stack and aborted the server for every client.
#[test]
fn deeply_nested_statements_are_answered_or_refused_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let nested = |depth: usize| format!("SELECT {}1{};", "(1 + ".repeat(depth), ")".repeat(depth));
    assert_eq!(server.psql_ok(&nested(200)), "201\n");
    let err = server.psql_err(&nested(2_000));
    assert!(err.contains("42601"), "{err}");
    assert!(err.contains("recursion limit exceeded"), "{err}");
    assert_eq!(server.psql_ok("SELECT 1;"), "1\n");
}

#[test]
fn errors_reach_psql_with_their_sqlstate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.psql_ok("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL);");
    server.psql_ok("INSERT INTO t VALUES (1, 1);");
    for (sql, code) in [
        ("SELEC 1;", "42601"),
        ("SELECT * FROM missing;", "42P01"),
        ("SELECT nope FROM t;", "42703"),
        ("INSERT INTO t VALUES (1, 2);", "23505"),
        ("INSERT INTO t (id) VALUES (2);", "23502"),
        ("SELECT 1/0;", "22012"),
        ("INSERT INTO t VALUES (3, true);", "42804"),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE;", "0A000"),
    ] {
        let err = server.psql_err(sql);
        assert!(err.contains(code), "{sql}: expected {code} in {err}");
    }
    // After an error, a transaction block refuses everything until ROLLBACK.
    let out = server
        .psql_command()
        .args([
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "BEGIN",
            "-c",
            "SELECT 1/0",
            "-c",
            "SELECT 1",
            "-c",
            "ROLLBACK",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("22012") && err.contains("25P02"), "{err}");
}

#[test]
fn status_and_metrics_are_served_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.psql_ok("CREATE TABLE a (x INT); CREATE TABLE b (x INT);");
    let (status, body) = server.http_get("/status");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("\"table_count\":2"), "{body}");
    assert!(body.contains("\"version\""), "{body}");
    assert!(body.contains("\"data_dir\""), "{body}");
    assert!(body.contains("\"uptime_seconds\""), "{body}");
    // Point reads go through the row cache, which reports its use and its bound.
    server.psql_ok("INSERT INTO a VALUES (1); SELECT * FROM a;");
    let (status, body) = server.http_get("/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("flotilla_tables 2"), "{body}");
    assert!(
        body.contains("flotilla_row_cache_capacity_bytes 536870912"),
        "{body}"
    );
    let gauge = |name: &str| -> i64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {body}"))
    };
    assert!(gauge("flotilla_row_cache_hits") + gauge("flotilla_row_cache_misses") > 0);
    assert!(gauge("flotilla_row_cache_entries") > 0);
    let (status, _) = server.http_get("/nope");
    assert!(status.contains("404"), "{status}");
}

#[test]
fn garbage_on_one_socket_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.psql_ok("CREATE TABLE t (x INT);");
    let mut garbage = TcpStream::connect(("127.0.0.1", server.sql_port)).unwrap();
    garbage
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    garbage
        .write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 8, 1, 2, 3, 4])
        .unwrap();
    let mut buf = Vec::new();
    // The server answers with an error or just closes; either way the read ends.
    let _ = garbage.read_to_end(&mut buf);
    assert_eq!(
        server.psql_ok("INSERT INTO t VALUES (1); SELECT count(*) FROM t;"),
        "1\n"
    );
}

#[test]
fn connections_past_the_limit_are_refused_with_53300() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flotilla.toml");
    std::fs::write(&config, "[sql]\nmax_connections = 1\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    // Hold the only connection open with an interactive psql.
    let mut holder = server
        .psql_command()
        .args(["-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(stdin, "SELECT 'held';").unwrap();
    let mut out = holder.stdout.take().unwrap();
    let mut seen = String::new();
    let mut byte = [0u8; 1];
    while !seen.contains("held") {
        out.read_exact(&mut byte).unwrap();
        seen.push(byte[0] as char);
    }
    let err = server.psql_err("SELECT 1;");
    assert!(err.contains("53300") || err.contains("too many"), "{err}");
    drop(stdin);
    holder.wait().unwrap();
}
