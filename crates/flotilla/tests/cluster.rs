//! End to end through the real binary: a `flotilla playground` of 3 meta members and 3
//! stores runs a bank workload while stores are killed with kill -9 and restarted, one is
//! paused with SIGSTOP, and the meta leader is killed. Afterwards the total is exact, every
//! acknowledged transfer is reflected, and `ctl check-replicas` finds every region's
//! replicas identical, with garbage collection of old versions on.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use support::bank::{self, INITIAL, Transfers};
use support::cluster::Playground;

/// How long a fault may keep the cluster from committing before the test fails. Far above
/// the failover target (see BENCHMARKS.md); this is a liveness bound, not a timing test.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(45);

struct Bank {
    acked: Mutex<Vec<i64>>,
    committed: AtomicU64,
    stop: AtomicBool,
    unexpected: Mutex<Vec<String>>,
}

async fn connect(url: &str) -> Option<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(client)
}

async fn worker(bank: Arc<Bank>, url: String, worker: i64) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut transfers = Transfers::new(worker);
    while !bank.stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_ref() else {
            client = connect(&url).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let t = transfers.next();
        match bank::transfer(c, t).await {
            Ok(()) => {
                bank.acked.lock().push(t.0);
                bank.committed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let code = e.code().map(|c| c.code().to_string());
                match code.as_deref() {
                    // Retryable: serialization failure (failover), deadlock, lock timeout.
                    Some("40001") | Some("40P01") | Some("55P03") => {}
                    // A connection error: reconnect.
                    None => client = None,
                    Some(other) => bank.unexpected.lock().push(format!("{other}: {e}")),
                }
            }
        }
    }
}

/// Waits until `n` more transfers commit after this call.
fn await_progress(bank: &Bank, n: u64, what: &str) -> Duration {
    bank::await_progress(&bank.committed, n, what, PROGRESS_DEADLINE)
}

#[test]
fn a_bank_survives_kill_9_sigstop_and_a_meta_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    // GC as eager as it goes (1 s life time, a new safe point every second).
    let mut pg = Playground::start(
        dir.path(),
        &[
            "--meta",
            "3",
            "--stores",
            "3",
            "--gc-life-time-s",
            "1",
            "--gc-run-interval-s",
            "1",
        ],
    );
    let url = pg.sql_url(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = connect(&url).await.expect("connect");
        bank::create(&c).await;
    });
    let bank = Arc::new(Bank {
        acked: Mutex::new(Vec::new()),
        committed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        unexpected: Mutex::new(Vec::new()),
    });
    let workers: Vec<_> = (0..4)
        .map(|w| rt.spawn(worker(bank.clone(), url.clone(), w)))
        .collect();
    await_progress(&bank, 20, "start");

    for store in pg.ids("store") {
        pg.kill9("store", store);
        await_progress(&bank, 20, &format!("kill -9 of store {store}"));
        pg.restart("store", store);
        await_progress(&bank, 20, &format!("restart of store {store}"));
    }
    let paused = pg.ids("store")[0];
    pg.pause("store", paused);
    await_progress(&bank, 20, &format!("SIGSTOP of store {paused}"));
    pg.resume("store", paused);
    await_progress(&bank, 20, &format!("SIGCONT of store {paused}"));

    let leader = pg.meta_leader();
    pg.kill9("meta", leader);
    await_progress(&bank, 20, &format!("kill -9 of meta leader {leader}"));
    pg.restart("meta", leader);
    await_progress(&bank, 20, &format!("restart of meta {leader}"));

    bank.stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in workers {
            w.await.unwrap();
        }
    });
    let unexpected = bank.unexpected.lock().clone();
    assert!(
        unexpected.is_empty(),
        "errors a client must never see: {unexpected:?}"
    );

    rt.block_on(async {
        let c = connect(&url).await.expect("connect");
        let acked = bank.acked.lock().clone();
        let logged = bank::check(&c, &acked).await;
        // Every account's balance is what the transfer log says it is.
        let rows = c
            .query(
                "SELECT a.id, a.balance,
                        CAST(COALESCE((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
                           - COALESCE((SELECT sum(amount) FROM transfers WHERE src = a.id), 0) AS BIGINT)
                 FROM accounts a ORDER BY a.id",
                &[],
            )
            .await
            .unwrap();
        for r in rows {
            let (id, balance, net): (i32, i64, i64) = (r.get(0), r.get(1), r.get(2));
            assert_eq!(balance, INITIAL + net, "account {id} disagrees with the transfer log");
        }
        println!("{} transfers acknowledged, {logged} logged", acked.len());
    });

    // GC ran (each store logs the regions it collected): the faults hold it back (a store
    // the meta leader has not heard from holds the collect point), so it may only get its
    // turn once they are over. The replicas are compared after it.
    let deadline = Instant::now() + PROGRESS_DEADLINE;
    while !pg.ids("store").into_iter().any(|id| {
        std::fs::read_to_string(&pg.proc("store", id).log)
            .unwrap()
            .contains("GC removed old versions")
    }) {
        assert!(Instant::now() < deadline, "no store removed an old version");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = pg.ctl(&["stores"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("gc_safe_point") && stdout.contains("s ago"),
        "ctl stores shows no installed safe point:\n{stdout}"
    );

    let out = pg.ctl(&["check-replicas"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "replicas differ");
    assert!(stdout.contains("replicas identical"));
}

/// A playground of four stores (replication 3): the first region is laid out on the first
/// three to register, and replica balance then moves replicas to the fourth until no
/// store holds two more than another, while SQL writes. Then `ctl remove-store` drains
/// one store to the other three. Every row is there afterwards and `ctl check-replicas`
/// finds every region's replicas identical.
#[test]
fn four_stores_share_the_replicas_and_one_is_removed() {
    const TABLES: usize = 4;
    const ROWS: i64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let pg = Playground::start(dir.path(), &["--stores", "4"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = connect(&pg.sql_url(0)).await.expect("connect");
        // Each table starts in a region of its own.
        for t in 0..TABLES {
            client
                .batch_execute(&format!(
                    "CREATE TABLE t{t} (id BIGINT PRIMARY KEY, v TEXT NOT NULL)"
                ))
                .await
                .unwrap();
            for id in 0..ROWS {
                client
                    .execute(
                        &format!("INSERT INTO t{t} VALUES ($1, $2)"),
                        &[&id, &format!("row {id}")],
                    )
                    .await
                    .unwrap();
            }
        }
        let meta = flotilla_client::MetaClient::new(
            pg.meta_endpoints.split(',').map(String::from).collect(),
            flotilla_client::ClientConfig::default(),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let regions = meta.scan_regions(b"", b"", 0).await.unwrap();
            let mut replicas = std::collections::HashMap::<u64, usize>::new();
            let mut settled = true;
            for info in &regions {
                let peers = &info.region.as_ref().unwrap().peers;
                settled &= peers.len() == 3
                    && peers
                        .iter()
                        .all(|p| p.role() == flotilla_proto::metapb::PeerRole::Voter);
                for p in peers {
                    *replicas.entry(p.store_id).or_default() += 1;
                }
            }
            let most = replicas.values().max().copied().unwrap_or(0);
            let fewest = replicas.values().min().copied().unwrap_or(0);
            if settled && replicas.len() == 4 && most - fewest <= 1 {
                println!("replicas per store: {replicas:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replicas not balanced within 60 s: {replicas:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Scale back in: `ctl remove-store` drains the first store to the other three.
        let removed = pg.ids("store")[0];
        let addr = pg.proc("store", removed).addr.clone();
        let id = meta
            .get_stores(0)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|s| s.store)
            .find(|s| s.address == addr)
            .expect("the first store is registered")
            .id;
        let out = pg.ctl(&["remove-store", &id.to_string()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("is being removed"), "{stdout}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = pg.ctl(&["stores"]);
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let row = stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
                .unwrap_or_default()
                .to_string();
            if row.contains("removed") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "store {id} not removed within 60 s:\n{stdout}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let regions = meta.scan_regions(b"", b"", 0).await.unwrap();
        assert!(
            regions.iter().all(|r| r
                .region
                .as_ref()
                .unwrap()
                .peers
                .iter()
                .all(|p| p.store_id != id)),
            "a replica is left on the removed store: {regions:?}"
        );
        // Three stores stay for three replicas: no further removal.
        let other = regions[0].region.as_ref().unwrap().peers[0].store_id;
        let out = pg.ctl(&["remove-store", &other.to_string()]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("add a store first"));
        // Nor can the removed one come back.
        let out = pg.ctl(&["cancel-remove-store", &id.to_string()]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("removed already"));
        for t in 0..TABLES {
            let count = || async {
                let row = client
                    .query_one(
                        &format!("SELECT count(*), count(DISTINCT v) FROM t{t}"),
                        &[],
                    )
                    .await
                    .unwrap();
                (row.get::<_, i64>(0), row.get::<_, i64>(1))
            };
            let first = count().await;
            if first != (ROWS, ROWS) {
                // A wrong answer: say whether it lasts, and where the regions are.
                let again = count().await;
                let out = pg.ctl(&["regions"]);
                panic!(
                    "t{t} read {first:?} (then {again:?}), not {:?}; regions:\n{}",
                    (ROWS, ROWS),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    });
    let out = pg.ctl(&["check-replicas"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "replicas differ");
    assert!(stdout.contains("replicas identical"));
}

/// `flotilla playground --stores 4 --zones 3`: stores 1 and 4 are in zone-1, and the meta
/// service spreads every region's replicas over the three zones (whatever stores the
/// first region was laid on). Then zone-1 fails whole, both its stores killed with
/// kill -9 at once, and SQL still reads and writes every table.
#[test]
fn stores_in_three_zones_keep_serving_when_a_whole_zone_fails() {
    const TABLES: usize = 3;
    const ROWS: i64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Playground::start(dir.path(), &["--stores", "4", "--zones", "3"]);
    // Each store's zone, by address, from the labels the playground gave it.
    let zone_by_addr: std::collections::HashMap<String, String> = pg
        .procs
        .iter()
        .filter(|p| p.role == "store")
        .map(|p| {
            let at = p.command.iter().position(|a| a == "--labels").unwrap();
            (p.addr.clone(), p.command[at + 1].clone())
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = connect(&pg.sql_url(0)).await.expect("connect");
        for t in 0..TABLES {
            client
                .batch_execute(&format!(
                    "CREATE TABLE z{t} (id BIGINT PRIMARY KEY, v TEXT NOT NULL)"
                ))
                .await
                .unwrap();
            for id in 0..ROWS {
                client
                    .execute(&format!("INSERT INTO z{t} VALUES ($1, 'before')"), &[&id])
                    .await
                    .unwrap();
            }
        }
        let meta = flotilla_client::MetaClient::new(
            pg.meta_endpoints.split(',').map(String::from).collect(),
            flotilla_client::ClientConfig::default(),
        )
        .unwrap();
        let zone_of: std::collections::HashMap<u64, String> = meta
            .get_stores(0)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|s| s.store)
            .map(|s| (s.id, zone_by_addr[&s.address].clone()))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let regions = meta.scan_regions(b"", b"", 0).await.unwrap();
            let spread = regions.iter().all(|info| {
                let peers = &info.region.as_ref().unwrap().peers;
                let zones: std::collections::HashSet<&String> =
                    peers.iter().map(|p| &zone_of[&p.store_id]).collect();
                peers.len() == 3
                    && zones.len() == 3
                    && peers
                        .iter()
                        .all(|p| p.role() == flotilla_proto::metapb::PeerRole::Voter)
            });
            if spread {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replicas not spread over the zones within 60 s: {regions:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let out = pg.ctl(&["stores"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("zone=zone-1"), "{stdout}");
        // Zone 1 fails whole.
        let zone_1: Vec<u64> = pg
            .ids("store")
            .into_iter()
            .filter(|id| zone_by_addr[&pg.proc("store", *id).addr] == "zone=zone-1")
            .collect();
        assert_eq!(zone_1.len(), 2, "{zone_by_addr:?}");
        for id in zone_1 {
            pg.kill9("store", id);
        }
        for t in 0..TABLES {
            client
                .execute(&format!("INSERT INTO z{t} VALUES ({ROWS}, 'after')"), &[])
                .await
                .unwrap();
            let row = client
                .query_one(
                    &format!("SELECT count(*), count(*) FILTER (WHERE v = 'before') FROM z{t}"),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(
                (row.get::<_, i64>(0), row.get::<_, i64>(1)),
                (ROWS + 1, ROWS)
            );
        }
    });
}
