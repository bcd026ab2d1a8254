//! COPY ... FROM STDIN through psql and pgbench, unmodified, against the real binary.

mod support;

use std::fmt::Write as _;
use std::process::Command;

use support::Server;

/// A script loading `rows` rows into `t (id, name, score)` with COPY FROM STDIN (text
/// format); the row numbered `bad` (1-based), if any, has a malformed score.
fn copy_script(rows: usize, bad: Option<usize>) -> String {
    let mut script = String::from("COPY t (id, name, score) FROM STDIN;\n");
    for i in 1..=rows {
        let score = match (i % 10, Some(i) == bad) {
            (_, true) => "not-a-number".to_string(),
            (0, _) => "\\N".to_string(),
            _ => format!("{i}.5"),
        };
        writeln!(script, "{i}\tname\\t{i}\t{score}").unwrap();
    }
    script.push_str("\\.\n");
    script
}

#[test]
fn copy_from_stdin_loads_every_row_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.psql_ok("CREATE TABLE t (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION);");

    // More rows than one INSERT batch takes: text format, escapes and NULLs.
    server.psql_ok(&copy_script(2_500, None));
    assert_eq!(
        server.psql_ok(
            "SELECT count(*), count(score), min(id), max(id) FROM t;
             SELECT name, score FROM t WHERE id = 7;
             SELECT score IS NULL FROM t WHERE id = 20;"
        ),
        "2500|2250|1|2500\nname\t7|7.5\nt\n"
    );

    // A malformed value anywhere fails the whole COPY with its SQLSTATE and line, and
    // changes nothing.
    server.psql_ok("DELETE FROM t;");
    let err = server.psql_err(&copy_script(2_500, Some(1_500)));
    assert!(err.contains("22P02"), "{err}");
    assert!(err.contains("line 1500"), "{err}");
    assert_eq!(server.psql_ok("SELECT count(*) FROM t;"), "0\n");
    // A row with too few columns too.
    let err = server.psql_err("COPY t FROM STDIN;\n1\tone\n\\.\n");
    assert!(err.contains("22P04"), "{err}");
    // A duplicate key fails it as an INSERT would.
    let err = server.psql_err("COPY t FROM STDIN;\n1\ta\t1\n1\tb\t2\n\\.\n");
    assert!(err.contains("23505"), "{err}");
    assert_eq!(server.psql_ok("SELECT count(*) FROM t;"), "0\n");

    // Inside a transaction block it is part of the transaction.
    server.psql_ok(&format!("BEGIN;\n{}ROLLBACK;", copy_script(10, None)));
    assert_eq!(server.psql_ok("SELECT count(*) FROM t;"), "0\n");
    server.psql_ok(&format!("BEGIN;\n{}COMMIT;", copy_script(10, None)));
    assert_eq!(server.psql_ok("SELECT count(*) FROM t;"), "10\n");

    // CSV with a header, through psql's \copy from a file: quoted values and NULLs.
    let csv = dir.path().join("rows.csv");
    std::fs::write(
        &csv,
        "id,name,score\n100,\"a, \"\"quoted\"\" name\",1.25\n101,,\n102,\"\",2.5\n",
    )
    .unwrap();
    server.psql_ok(&format!(
        "\\copy t FROM '{}' WITH (FORMAT csv, HEADER)",
        csv.display()
    ));
    assert_eq!(
        server.psql_ok(
            "SELECT id, coalesce(name, '<null>'), coalesce(score::text, '<null>') FROM t
             WHERE id >= 100 ORDER BY id;"
        ),
        "100|a, \"quoted\" name|1.25\n101|<null>|<null>\n102||2.5\n"
    );

    // An unknown table or option is refused before any data is asked for.
    let err = server.psql_err("COPY nope FROM STDIN;\n\\.\n");
    assert!(err.contains("42P01"), "{err}");
    let err = server.psql_err("COPY t FROM STDIN WITH (FORMAT binary);\n\\.\n");
    assert!(err.contains("0A000"), "{err}");
    // The session goes on.
    assert_eq!(server.psql_ok("SELECT count(*) FROM t;"), "13\n");
}

#[test]
fn pgbench_initialises_with_client_side_copy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // `g`: pgbench generates the rows and sends them with COPY ... FROM STDIN.
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(server.sql_port.to_string())
        .args(["-i", "-I", "dtg", "-s", "1", "postgres"])
        .output()
        .expect("pgbench is installed");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.psql_ok(
            "SELECT count(*) FROM pgbench_accounts; SELECT count(*) FROM pgbench_tellers;"
        ),
        "100000\n10\n"
    );
}

/// `COPY ... TO STDOUT` through psql, in text and CSV, of a table and of a query, and a
/// round trip through psql's `\copy` to a file and back: the copy equals the original,
/// NULLs, empty strings, escapes and quotes included.
#[test]
fn copy_to_stdout_writes_what_copy_from_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.psql_ok(
        "CREATE TABLE t (id INT PRIMARY KEY, s TEXT, f DOUBLE PRECISION, b BYTEA);
         INSERT INTO t VALUES (1, E'tab\\there', 1.5, '\\x00ff'), (2, NULL, NULL, NULL),
           (3, 'q\"uote,comma', 2, ''), (4, '', 0, NULL), (5, E'back\\\\slash\\nnl', 1e20, NULL);",
    );
    // As PostgreSQL 15 writes the same rows.
    assert_eq!(
        server.psql_ok("COPY t TO STDOUT;"),
        "1\ttab\\there\t1.5\t\\\\x00ff\n2\t\\N\t\\N\t\\N\n3\tq\"uote,comma\t2\t\\\\x\n\
         4\t\t0\t\\N\n5\tback\\\\slash\\nnl\t1e+20\t\\N\n"
    );
    assert_eq!(
        server.psql_ok("COPY (SELECT id, s FROM t WHERE id >= 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER);"),
        "id,s\n3,\"q\"\"uote,comma\"\n4,\"\"\n5,\"back\\slash\nnl\"\n"
    );
    for (to, from) in [("", ""), (" WITH (FORMAT csv)", " WITH (FORMAT csv)")] {
        let file = dir.path().join("out.data");
        let file = file.display();
        server.psql_ok(&format!(
            "DROP TABLE IF EXISTS t2;
             CREATE TABLE t2 (id INT PRIMARY KEY, s TEXT, f DOUBLE PRECISION, b BYTEA);
             \\copy t TO '{file}'{to}
             \\copy t2 FROM '{file}'{from}"
        ));
        assert_eq!(
            server.psql_ok(
                "SELECT count(*) FROM (SELECT * FROM t EXCEPT SELECT * FROM t2) AS d;
                 SELECT count(*) FROM t2 WHERE s = '';"
            ),
            "0\n1\n",
            "{to}"
        );
    }
    // A server-side file or an unknown table is refused and the session goes on.
    let out = server.psql("COPY t TO '/tmp/flotilla-copy-out';");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0A000"),
        "{out:?}"
    );
    let out = server.psql("COPY nope TO STDOUT;");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("42P01"),
        "{out:?}"
    );
}
