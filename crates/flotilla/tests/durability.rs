//! Every COMMIT acknowledged to a client survives kill -9 and restart, and no transaction
//! is ever half present.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use rand::Rng;
use support::Server;

/// Rows each transaction writes.
const PARTS: u64 = 3;

/// Commits transactions through one psql session until the server dies; returns the ids
/// of the transactions whose COMMIT was acknowledged.
fn write_until_killed(port: u16, first_id: u64) -> Vec<u64> {
    let mut psql = support::psql_at(port)
        .args(["-A", "-t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = psql.stdin.take().unwrap();
    let mut stdout = BufReader::new(psql.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut id = first_id;
    'txns: loop {
        let mut script = String::from("BEGIN;\n");
        for part in 1..=PARTS {
            script.push_str(&format!("INSERT INTO ledger VALUES ({id}, {part}, 'x');\n"));
        }
        script.push_str("COMMIT;\n");
        if stdin
            .write_all(script.as_bytes())
            .and_then(|_| stdin.flush())
            .is_err()
        {
            break;
        }
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break 'txns,
                Ok(_) if line.trim() == "COMMIT" => {
                    acked.push(id);
                    break;
                }
                Ok(_) => {}
            }
        }
        id += 1;
    }
    let _ = psql.kill();
    let _ = psql.wait();
    acked
}

#[test]
fn acknowledged_commits_survive_kill_9_and_none_is_partial() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut all_acked: Vec<u64> = Vec::new();
    let mut next_id = 1;
    {
        let server = Server::start(dir.path(), &[]);
        server.psql_ok(
            "CREATE TABLE ledger (txn BIGINT, part INT, tag TEXT, PRIMARY KEY (txn, part));",
        );
    }
    for round in 0..3 {
        let server = Server::start(dir.path(), &[]);
        let port = server.sql_port;
        // The kill lands at a random moment while the writer is mid-stream: that moment is
        // the fault being injected, not a synchronisation.
        let delay = Duration::from_millis(rng.random_range(300..2_000));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            server.kill9();
        });
        let acked = write_until_killed(port, next_id);
        killer.join().unwrap();
        next_id = acked.last().copied().unwrap_or(next_id) + 10;
        all_acked.extend(&acked);

        let server = Server::start(dir.path(), &[]);
        let rows = server.psql_ok("SELECT txn, count(*) FROM ledger GROUP BY txn ORDER BY txn;");
        let counts: BTreeMap<u64, u64> = rows
            .lines()
            .map(|l| {
                let (t, c) = l.split_once('|').unwrap();
                (t.parse().unwrap(), c.parse().unwrap())
            })
            .collect();
        for (txn, count) in &counts {
            assert_eq!(*count, PARTS, "round {round}: transaction {txn} is partial");
        }
        for txn in &all_acked {
            assert!(
                counts.contains_key(txn),
                "round {round}: acknowledged transaction {txn} is lost"
            );
        }
        println!(
            "round {round}: {} acknowledged this round, {} transactions present",
            acked.len(),
            counts.len()
        );
    }
    assert!(
        !all_acked.is_empty(),
        "no transaction was acknowledged before any kill"
    );
}
