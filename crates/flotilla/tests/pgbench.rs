//! pgbench, unmodified, against the real binary: initialisation with server-side data
//! generation and primary keys, then a TPC-B-like run with prepared statements.

mod support;

use std::process::Command;

use support::Server;

fn pgbench(server: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(server.sql_port.to_string())
        .args(args)
        .arg("postgres")
        .output()
        .expect("pgbench is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn pgbench_initialises_and_runs_without_failed_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (ok, text) = pgbench(&server, &["-i", "-I", "dtGp", "-s", "1"]);
    assert!(ok, "pgbench -i failed:\n{text}");
    assert_eq!(
        server.psql_ok("SELECT count(*) FROM pgbench_accounts;"),
        "100000\n"
    );
    let (ok, text) = pgbench(
        &server,
        &["-c", "8", "-j", "2", "-T", "5", "-M", "prepared"],
    );
    assert!(ok, "pgbench run failed:\n{text}");
    assert!(text.contains("number of failed transactions: 0 "), "{text}");
    let processed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(processed > 0, "{text}");
    // TPC-B keeps the sums of the three balance tables equal.
    let sums = server.psql_ok(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(bbalance) FROM pgbench_branches),
                (SELECT sum(tbalance) FROM pgbench_tellers) = (SELECT sum(bbalance) FROM pgbench_branches),
                (SELECT count(*) FROM pgbench_history);",
    );
    assert_eq!(sums, format!("t|t|{processed}\n"), "{text}");
}
