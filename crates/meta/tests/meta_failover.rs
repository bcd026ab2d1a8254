//! Three meta members on loopback in one process: timestamps never go backward across a
//! leader failover, and what the old leader persisted (ids, stores) is there on the new one;
//! the timestamp stream follows the leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_client::{ClientConfig, MetaClient, RemoteTso};
use flotilla_meta::{MetaConfig, MetaNode};
use flotilla_proto::metapb::Store;
use flotilla_proto::metaservicepb::StoreStats;
use flotilla_tso::Tso;

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

/// Three members on free loopback ports, started.
async fn start_group() -> (tempfile::TempDir, Vec<(u64, String)>, Vec<Option<MetaNode>>) {
    let dir = tempfile::tempdir().unwrap();
    // Each probe stays bound until all three are picked, so no port is handed out twice.
    let probes: Vec<std::net::TcpListener> = (1..=3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let members: Vec<(u64, String)> = (1..=3)
        .zip(&probes)
        .map(|(id, l)| (id, l.local_addr().unwrap().to_string()))
        .collect();
    drop(probes);
    let mut nodes = Vec::new();
    for (id, _) in &members {
        nodes.push(Some(start(*id, &members, dir.path()).await));
    }
    (dir, members, nodes)
}

/// A client of `members` whose retries outlast a failover.
fn client_of(members: &[(u64, String)]) -> MetaClient {
    MetaClient::new(
        members.iter().map(|(_, a)| a.clone()).collect(),
        ClientConfig {
            retry_budget: Duration::from_secs(30),
            ..ClientConfig::default()
        },
    )
    .unwrap()
}

async fn leader_id(client: &MetaClient) -> u64 {
    client
        .members()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.is_leader)
        .expect("a leader")
        .id
}

/// The SQL nodes' timestamp client: its calls go on a stream to the leader; when the
/// leader stops (which must end its streams, or the stop would hang) one batch takes the
/// unary call to find the next leader, and the calls after it go on a stream to that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_travel_on_a_stream_that_follows_the_meta_leader() {
    let (_dir, members, mut nodes) = start_group().await;
    let meta = Arc::new(client_of(&members));
    let tso = RemoteTso::new(meta.clone());
    let mut last = 0u64;
    let take = async |n: usize, last: &mut u64| {
        for _ in 0..n {
            let ts = tso.get_ts().await.unwrap().0;
            assert!(ts > *last, "timestamp went backward: {ts} after {last}");
            *last = ts;
        }
    };
    take(100, &mut last).await;
    let (streamed, unary) = tso.calls();
    assert!(
        unary >= 1 && streamed >= 90,
        "the first call finds the leader, the rest stream: {streamed} streamed, {unary} unary"
    );

    let leader = leader_id(&meta).await;
    nodes[(leader - 1) as usize].take().unwrap().stop().await;
    take(100, &mut last).await;
    let (streamed_after, unary_after) = tso.calls();
    assert!(
        unary_after > unary,
        "the batch that met the stopped leader went unary"
    );
    assert!(
        streamed_after >= streamed + 90,
        "later calls stream to the new leader: {streamed_after} streamed in all, {streamed} before"
    );
    assert_ne!(leader_id(&meta).await, leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_stay_monotonic_across_meta_leader_failover() {
    let (dir, members, mut nodes) = start_group().await;
    let client = client_of(&members);
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
            None,
        )
        .await
        .unwrap()
        .store_id;
    assert!(registered > 0);

    for round in 0..2 {
        let leader = leader_id(&client).await;
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
                None,
            )
            .await
            .unwrap()
            .store_id;
        assert!(fresh > registered);
        nodes[(leader - 1) as usize] = Some(start(leader, &members, dir.path()).await);
    }
}

/// A DDL job persisted by one meta leader is resumed by the next: the old leader is
/// stopped while the job retries (a failpoint fails its steps), and the new leader's
/// owner runs it to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_job_resumes_on_the_next_meta_leader() {
    use flotilla_catalog::{Catalog, ColumnDef, Handle, IdKind, SchemaChange, SqlType, TableDef};
    use flotilla_client::{RemoteCatalog, RemoteDdl};
    use flotilla_ddl::{AlterAction, ColumnSpec, DdlJobs, JobKind, JobState};

    let (_dir, members, mut nodes) = start_group().await;
    let client = Arc::new(client_of(&members));
    let catalog = RemoteCatalog::open(client.clone(), Duration::from_millis(100))
        .await
        .unwrap();
    let id = catalog.allocate(IdKind::Table, 1).unwrap().start;
    let table = TableDef {
        id,
        storage_id: id,
        name: "t".into(),
        columns: vec![ColumnDef {
            id: 0,
            name: "id".into(),
            ty: SqlType::Int64,
            nullable: false,
            not_null_pending: false,
            default: None,
            origin_default: None,
            sequence: None,
        }],
        handle: Handle::PrimaryKey(vec![0]),
        indexes: vec![],
        next_column_id: 1,
        next_index_id: 1,
        checks: Vec::new(),
        foreign_keys: Vec::new(),
    };
    catalog
        .commit(SchemaChange {
            base_version: catalog.snapshot().version,
            upserts: vec![table],
            ..SchemaChange::default()
        })
        .unwrap();
    let ddl = RemoteDdl::new(client.clone(), catalog.clone());
    ddl.set_failpoint(true).await.unwrap();
    let kind = JobKind::AlterTable {
        table_id: id,
        table: "t".into(),
        actions: vec![AlterAction::AddColumn {
            column: ColumnSpec {
                name: "added".into(),
                ty: SqlType::Int32,
                nullable: true,
                default: None,
                origin_default: None,
            },
            if_not_exists: false,
        }],
    };
    let job = ddl.submit(kind, "resume".into()).await.unwrap();
    let retrying = ddl.wait(job.id, Duration::from_millis(500)).await.unwrap();
    assert_eq!(retrying.state, JobState::Running);
    assert!(retrying.attempts > 0);
    let leader = leader_id(&client).await;
    nodes[(leader - 1) as usize].take().unwrap().stop().await;
    // The failpoint was the old leader's; the new leader resumes the job.
    let done = ddl.wait(job.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert!(
        catalog
            .snapshot()
            .table("t")
            .unwrap()
            .column("added")
            .is_some()
    );
    let listed = ddl.list().await.unwrap();
    assert_eq!(listed.len(), 1);
}

/// A meta member takes Raft messages too large for a batch (its group's snapshot: every
/// store, region and table) in pieces, within `chunked_message_bytes_max`: past it the
/// call is refused with RESOURCE_EXHAUSTED before the message is held whole, and the
/// member serves on. (Before, a member's gRPC server took messages of at most 4 MiB, so
/// a meta group whose state outgrew that could never catch a lagging member up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_member_refuses_a_raft_message_past_its_chunked_bound() {
    use flotilla_proto::metaservicepb::meta_client::MetaClient as MetaGrpc;
    use flotilla_proto::raft_serverpb::RaftMessageChunk;
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cfg = MetaConfig::new(1, vec![(1, addr.clone())], dir.path().join("m1"));
    cfg.tick_interval = Duration::from_millis(50);
    cfg.raft_limits.chunked_message_bytes_max = 1 << 20;
    let node = MetaNode::start(cfg, listener).await.unwrap();
    let mut grpc = MetaGrpc::connect(format!("http://{addr}")).await.unwrap();
    let pieces = (0..20).map(|_| RaftMessageChunk {
        data: vec![0u8; 64 << 10].into(),
    });
    let refused = grpc
        .raft_chunks(futures::stream::iter(pieces))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("raft_chunked_message_bytes_max"),
        "{}",
        refused.message()
    );
    let client = client_of(&[(1, addr)]);
    assert!(client.tso(1).await.unwrap() > 0, "the member serves on");
    node.stop().await;
}
