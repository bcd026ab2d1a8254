//! ORIGINS.md §3 end to end through the real binary: a rolling upgrade under load.
//!
//! A `flotilla playground` of 3 meta members, 3 stores and 2 SQL nodes starts with every
//! process emulating a build from before cluster versions (`--emulate-binary-version 1`:
//! it reports no version, as those builds did). A bank workload runs throughout. One
//! process at a time is stopped with SIGTERM and started again on its data as the new
//! build: the meta followers, then the meta leader, then each store, then each SQL node
//! (its clients moved to the other one first, as a load balancer drains a node). While
//! any process runs the old build the cluster stays at version 1 and SET NOT NULL is
//! refused; once every one runs the new build the version rises to the new build's by
//! itself and the statement runs, under the workload. No transfer fails, no replica is repaired or moved (every region keeps
//! its membership: the meta service took no stopped or old process for a broken one), the
//! total is exact, every acknowledged transfer is there, and `ctl check-replicas` finds
//! every region's replicas identical.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use support::bank::{self, Transfers};
use support::cluster::Playground;

/// The cluster version of this build: the version every node upgraded to reaches.
const NEW: u32 = flotilla_types::version::BINARY_CLUSTER_VERSION;

const WORKERS: i64 = 4;
/// Liveness bound for each step, far above what a step takes.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

struct Bank {
    acked: Mutex<Vec<i64>>,
    committed: AtomicU64,
    stop: AtomicBool,
    /// Every failed transfer, whatever the error.
    failed: Mutex<Vec<String>>,
    /// Which SQL node (index) the workers use; they move between transactions.
    target: AtomicUsize,
    /// Workers connected to each SQL node.
    connected: [AtomicUsize; 2],
}

async fn worker(bank: Arc<Bank>, urls: [String; 2], worker: i64) {
    let mut client: Option<(usize, tokio_postgres::Client)> = None;
    let mut transfers = Transfers::new(worker);
    while !bank.stop.load(Ordering::Relaxed) {
        let target = bank.target.load(Ordering::Relaxed);
        if client.as_ref().is_some_and(|(node, _)| *node != target) {
            let (node, _) = client.take().unwrap();
            bank.connected[node].fetch_sub(1, Ordering::Relaxed);
        }
        let Some((_, c)) = client.as_ref() else {
            match tokio_postgres::connect(&urls[target], tokio_postgres::NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    bank.connected[target].fetch_add(1, Ordering::Relaxed);
                    client = Some((target, c));
                }
                Err(e) => bank
                    .failed
                    .lock()
                    .push(format!("connect to SQL node {}: {e}", target + 1)),
            }
            continue;
        };
        // Transfers lock their rows in id order: they never deadlock one another, so any
        // failure is the cluster's.
        let t = transfers.next();
        match bank::transfer(c, t).await {
            Ok(()) => {
                bank.acked.lock().push(t.0);
                bank.committed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let code = e.code().map(|c| c.code().to_string());
                bank.failed.lock().push(format!("{code:?}: {e:?}"));
                if code.is_none() {
                    let (node, _) = client.take().unwrap();
                    bank.connected[node].fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Waits until `n` more transfers commit after this call.
fn await_progress(bank: &Bank, n: u64, what: &str) {
    bank::await_progress(&bank.committed, n, what, STEP_DEADLINE);
}

fn ctl_ok(pg: &Playground, args: &[&str]) -> String {
    let out = pg.ctl(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ctl {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `ctl version`'s cluster version.
fn cluster_version(pg: &Playground) -> (u32, String) {
    let out = ctl_ok(pg, &["version"]);
    let v = out
        .lines()
        .find_map(|l| l.strip_prefix("cluster version: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cluster version in {out}"));
    (v, out)
}

/// Each region's membership as `ctl regions` shows it: id -> (conf_ver, peers).
fn memberships(pg: &Playground) -> BTreeMap<u64, (String, String)> {
    ctl_ok(pg, &["regions"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let id = cols.first()?.parse().ok()?;
            Some((id, (cols.get(3)?.to_string(), cols.get(5)?.to_string())))
        })
        .collect()
}

/// Waits until `ctl stores` shows store `id` up with a build of `version`.
fn await_store_version(pg: &Playground, id: u64, version: u32) {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let out = ctl_ok(pg, &["stores"]);
        let row: Vec<String> = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        // No labels here: the build's version is the last column.
        if row.get(2).map(String::as_str) == Some("up")
            && row.last().map(String::as_str) == Some(&version.to_string())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "store {id} not up with version {version}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn psql_code(url: &str, sql: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    client.batch_execute(sql).await.map_err(|e| {
        e.code()
            .map(|c| format!("{}: {e:?}", c.code()))
            .unwrap_or_else(|| e.to_string())
    })
}

#[test]
fn a_rolling_upgrade_under_load_fails_no_request_and_repairs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Playground::start(
        dir.path(),
        &["--meta", "3", "--sql", "2", "--emulate-binary-version", "1"],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let urls = [pg.sql_url(0), pg.sql_url(1)];
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&urls[0], tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        bank::create(&c).await;
    });
    let (version, out) = cluster_version(&pg);
    assert_eq!(version, 1, "{out}");
    let refused = rt
        .block_on(psql_code(
            &urls[0],
            "ALTER TABLE accounts ALTER COLUMN balance SET NOT NULL",
        ))
        .unwrap_err();
    assert!(refused.starts_with("0A000"), "{refused}");
    let before = memberships(&pg);
    assert!(!before.is_empty());

    let bank = Arc::new(Bank {
        acked: Mutex::new(Vec::new()),
        committed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        failed: Mutex::new(Vec::new()),
        target: AtomicUsize::new(0),
        connected: [AtomicUsize::new(0), AtomicUsize::new(0)],
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| rt.spawn(worker(bank.clone(), urls.clone(), w)))
        .collect();
    await_progress(&bank, 50, "the workload started");

    // The meta members: followers first, the leader last.
    let leader = pg.meta_leader();
    let mut metas: Vec<u64> = pg
        .ids("meta")
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    metas.push(leader);
    for id in metas {
        pg.terminate("meta", id);
        pg.restart_upgraded("meta", id);
        pg.meta_leader();
        await_progress(&bank, 30, &format!("meta member {id} upgraded"));
        assert_eq!(cluster_version(&pg).0, 1);
    }
    // A new meta leader names what holds the version back.
    let (_, out) = cluster_version(&pg);
    assert!(out.contains("held by: store"), "{out}");
    assert!(out.contains("held by: SQL node"), "{out}");
    // The stores, one at a time, each back and heartbeating before the next.
    for id in pg.ids("store") {
        pg.terminate("store", id);
        pg.restart_upgraded("store", id);
        await_store_version(&pg, id, NEW);
        await_progress(&bank, 30, &format!("store {id} upgraded"));
    }
    assert_eq!(
        cluster_version(&pg).0,
        1,
        "SQL nodes still run the old build"
    );
    // The SQL nodes: the clients move to the other one first.
    for (i, id) in pg.ids("sql").into_iter().enumerate() {
        bank.target.store(1 - i, Ordering::Relaxed);
        let deadline = Instant::now() + STEP_DEADLINE;
        while bank.connected[i].load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < deadline, "SQL node {id} not drained");
            std::thread::sleep(Duration::from_millis(20));
        }
        pg.terminate("sql", id);
        pg.restart_upgraded("sql", id);
        let deadline = Instant::now() + STEP_DEADLINE;
        while rt.block_on(psql_code(&urls[i], "SELECT 1")).is_err() {
            assert!(Instant::now() < deadline, "SQL node {id} not back");
            std::thread::sleep(Duration::from_millis(100));
        }
        bank.target.store(i, Ordering::Relaxed);
        await_progress(&bank, 30, &format!("SQL node {id} upgraded"));
    }

    // Every process runs the new build: the version rises by itself.
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let (version, out) = cluster_version(&pg);
        if version == NEW {
            assert!(out.contains("every node runs"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster version did not rise:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    await_progress(&bank, 30, "the cluster version rose");
    // The gated feature now runs, under the workload: its job's scan and schema changes
    // run on the meta leader beside the transfers' timestamps and leases.
    rt.block_on(psql_code(
        &urls[0],
        "ALTER TABLE accounts ALTER COLUMN balance SET NOT NULL",
    ))
    .unwrap();
    await_progress(&bank, 30, "SET NOT NULL ran");
    bank.stop.store(true, Ordering::Relaxed);
    for w in workers {
        rt.block_on(w).unwrap();
    }
    let failed = bank.failed.lock().clone();
    assert!(
        failed.is_empty(),
        "{} transfers failed: {failed:#?}",
        failed.len()
    );
    // The version is persisted in the meta group: a new meta leader keeps it.
    let leader = pg.meta_leader();
    pg.terminate("meta", leader);
    pg.meta_leader();
    assert_eq!(cluster_version(&pg).0, NEW);
    let after = memberships(&pg);
    assert_eq!(
        before, after,
        "a region's membership changed: a replica was repaired or moved"
    );

    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&urls[1], tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let acked = bank.acked.lock().clone();
        bank::check(&c, &acked).await;
        println!("{} transfers acknowledged, none failed", acked.len());
    });
    let out = ctl_ok(&pg, &["check-replicas"]);
    assert!(out.contains("replicas identical"), "{out}");
}
