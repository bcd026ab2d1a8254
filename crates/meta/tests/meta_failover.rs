//! Three meta members on loopback in one process: timestamps never go backward across a
//! leader failover, and what the old leader persisted (ids, stores) is there on the new one.

use std::time::{Duration, Instant};

use flotilla_client::{ClientConfig, MetaClient};
use flotilla_meta::{MetaConfig, MetaNode};
use flotilla_proto::metapb::Store;
use flotilla_proto::metaservicepb::StoreStats;

async fn start(id: u64, members: &[(u64, String)], dir: &std::path::Path) -> MetaNode {
    let addr = &members.iter().find(|(m, _)| *m == id).unwrap().1;
    // The port was free a moment ago; a restarted member binds its old address again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    };
    let mut cfg = MetaConfig::new(id, members.to_vec(), dir.join(format!("m{id}")));
    cfg.tick_interval = Duration::from_millis(50);
    MetaNode::start(cfg, listener).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_stay_monotonic_across_meta_leader_failover() {
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<(u64, String)> = (1..=3)
        .map(|id| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            (id, l.local_addr().unwrap().to_string())
        })
        .collect();
    let mut nodes = Vec::new();
    for (id, _) in &members {
        nodes.push(Some(start(*id, &members, dir.path()).await));
    }
    let client = MetaClient::new(
        members.iter().map(|(_, a)| a.clone()).collect(),
        ClientConfig {
            retry_budget: Duration::from_secs(30),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let mut last = 0u64;
    for _ in 0..200 {
        let ts = client.tso(1).await.unwrap();
        assert!(ts > last, "timestamp went backward: {ts} after {last}");
        last = ts;
    }
    let registered = client
        .store_heartbeat(
            Store {
                id: 0,
                address: "127.0.0.1:1".into(),
                ..Default::default()
            },
            StoreStats::default(),
        )
        .await
        .unwrap()
        .store_id;
    assert!(registered > 0);

    for round in 0..2 {
        let leader = client
            .members()
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.is_leader)
            .expect("a leader")
            .id;
        let node = nodes[(leader - 1) as usize].take().unwrap();
        node.stop().await;
        // The survivors elect a leader; the client follows it. Timestamps keep rising.
        for _ in 0..200 {
            let ts = client.tso(1).await.unwrap();
            assert!(
                ts > last,
                "round {round}: timestamp went backward: {ts} after {last}"
            );
            last = ts;
        }
        let stores = client.get_stores(registered).await.unwrap();
        assert_eq!(
            stores.len(),
            1,
            "the registered store survived the failover"
        );
        // A new id is above every id handed out before.
        let fresh = client
            .store_heartbeat(
                Store {
                    id: 0,
                    address: "127.0.0.1:2".into(),
                    ..Default::default()
                },
                StoreStats::default(),
            )
            .await
            .unwrap()
            .store_id;
        assert!(fresh > registered);
        nodes[(leader - 1) as usize] = Some(start(leader, &members, dir.path()).await);
    }
}
