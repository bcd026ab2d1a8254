//! A cluster in this process: one meta member and three stores (replication 3) on
//! loopback, joined by real gRPC, for tests of the cluster's SQL and transaction paths.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flotilla_client::{ClientConfig, ClusterTxnKv, MetaClient, RegionCache, RemoteTso};
use flotilla_meta::{MetaConfig, MetaNode};
use flotilla_server::{StoreNode, StoreNodeConfig};

pub struct Cluster {
    pub meta_addr: String,
    pub stores: Vec<StoreNode>,
    /// Each running store's configuration, in the order of `stores`.
    pub configs: Vec<StoreNodeConfig>,
    pub meta: MetaNode,
    _dir: tempfile::TempDir,
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

impl Cluster {
    /// Starts the cluster and returns once the stores have registered (the first region
    /// is laid out as soon as the third store registers).
    pub async fn start() -> Cluster {
        Self::start_with(|_| {}).await
    }

    /// Like `start`, with each store's configuration adjusted by `tune`.
    pub async fn start_with(tune: impl Fn(&mut StoreNodeConfig)) -> Cluster {
        Self::start_tuned(|_| {}, tune).await
    }

    /// Like `start`, with the meta member's and each store's configuration adjusted.
    pub async fn start_tuned(
        tune_meta: impl Fn(&mut MetaConfig),
        tune: impl Fn(&mut StoreNodeConfig),
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let meta_listener = listener().await;
        let meta_addr = meta_listener.local_addr().unwrap().to_string();
        let mut meta_cfg =
            MetaConfig::new(1, vec![(1, meta_addr.clone())], dir.path().join("meta"));
        meta_cfg.tick_interval = Duration::from_millis(20);
        tune_meta(&mut meta_cfg);
        let reorg =
            flotilla_server::cluster_reorg(vec![meta_addr.clone()], ClientConfig::default())
                .unwrap();
        let meta = MetaNode::start_with_reorg(meta_cfg, meta_listener, Some(reorg))
            .await
            .unwrap();
        let mut starting = Vec::new();
        let mut configs = Vec::new();
        for i in 0..3 {
            let l = listener().await;
            let addr = l.local_addr().unwrap().to_string();
            let mut cfg = StoreNodeConfig::new(
                dir.path().join(format!("store-{i}")),
                addr,
                vec![meta_addr.clone()],
            );
            cfg.tick_interval = Duration::from_millis(20);
            cfg.heartbeat_interval = Duration::from_millis(200);
            tune(&mut cfg);
            configs.push(cfg.clone());
            // Each store waits for the others to register before the first region exists.
            starting.push(tokio::spawn(StoreNode::start(cfg, l)));
        }
        let mut stores = Vec::new();
        for s in starting {
            stores.push(s.await.unwrap().unwrap());
        }
        Cluster {
            meta_addr,
            stores,
            configs,
            meta,
            _dir: dir,
        }
    }

    /// Stops the store with this id; returns its configuration, to start it again.
    pub async fn stop_store(&mut self, store_id: u64) -> StoreNodeConfig {
        let i = self
            .stores
            .iter()
            .position(|s| s.store_id() == store_id)
            .expect("a running store");
        self.stores.remove(i).stop().await;
        self.configs.remove(i)
    }

    /// Starts a stopped store again, on its data and address.
    pub async fn start_store(&mut self, cfg: StoreNodeConfig) {
        let l = tokio::net::TcpListener::bind(&cfg.advertise_addr)
            .await
            .unwrap();
        self.stores
            .push(StoreNode::start(cfg.clone(), l).await.unwrap());
        self.configs.push(cfg);
    }

    /// Starts one more store, empty, configured as the first one was; returns its id.
    pub async fn add_store(&mut self) -> u64 {
        self.add_store_with(|_| {}).await
    }

    /// Like `add_store`, with its configuration adjusted by `tune`.
    pub async fn add_store_with(&mut self, tune: impl FnOnce(&mut StoreNodeConfig)) -> u64 {
        let l = listener().await;
        let mut cfg = self.configs[0].clone();
        tune(&mut cfg);
        cfg.advertise_addr = l.local_addr().unwrap().to_string();
        cfg.data_dir = self
            ._dir
            .path()
            .join(format!("store-added-{}", cfg.advertise_addr));
        let node = StoreNode::start(cfg.clone(), l).await.unwrap();
        let id = node.store_id();
        self.stores.push(node);
        self.configs.push(cfg);
        id
    }

    /// Stops the meta member; returns what keeps the stores and their data alive.
    pub async fn stop_meta(self) -> (Vec<StoreNode>, tempfile::TempDir) {
        let Cluster {
            meta, stores, _dir, ..
        } = self;
        meta.stop().await;
        (stores, _dir)
    }

    /// A routing `TxnKv` and the TSO it uses.
    pub fn kv(&self) -> (Arc<ClusterTxnKv>, Arc<RemoteTso>) {
        self.kv_with(ClientConfig::default())
    }

    /// Like `kv`, with the client configured by `cfg`.
    pub fn kv_with(&self, cfg: ClientConfig) -> (Arc<ClusterTxnKv>, Arc<RemoteTso>) {
        let meta = Arc::new(
            MetaClient::new(vec![self.meta_addr.clone()], ClientConfig::default()).unwrap(),
        );
        let tso = Arc::new(RemoteTso::new(meta.clone()));
        let cache = Arc::new(RegionCache::new(meta, RegionCache::DEFAULT_MAX_REGIONS));
        (Arc::new(ClusterTxnKv::new(cache, tso.clone(), cfg)), tso)
    }

    /// Records every store's GC has removed so far.
    pub fn gc_removed(&self) -> u64 {
        self.stores
            .iter()
            .map(|s| s.gc_stats().records_deleted.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until the stores' GC has removed `records` records, then for `rounds` more
    /// GC rounds on every store (the safe point follows the clock meanwhile, as far as
    /// what holds it back lets it), and returns what they removed by then.
    pub async fn gc_settles_at(&self, records: u64, rounds: u64) -> u64 {
        let rounds_done = || {
            self.stores
                .iter()
                .map(|s| s.gc_stats().runs.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.gc_removed() < records {
            assert!(
                std::time::Instant::now() < deadline,
                "GC removed {} records, not {records}",
                self.gc_removed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let target = rounds_done() + rounds;
        while rounds_done() < target {
            assert!(std::time::Instant::now() < deadline, "GC stopped running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.gc_removed()
    }
}

/// The checksum of `region_id`'s data on the store at `addr`: taken through the region's
/// log when the store leads it (`at_index` 0), else the one it took at `at_index`.
pub async fn replica_checksum(
    addr: std::net::SocketAddr,
    region_id: u64,
    at_index: u64,
) -> Result<(u64, u64, u64), String> {
    use flotilla_proto::kvpb::{ReplicaChecksumRequest, store_client::StoreClient};
    let mut client = StoreClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| e.to_string())?;
    let r = client
        .replica_checksum(ReplicaChecksumRequest {
            region_id,
            at_index,
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    if r.error.is_empty() {
        Ok((r.applied_index, r.checksum, r.key_count))
    } else {
        Err(r.error)
    }
}

/// Waits until the replica of `region_id` on `addr` holds exactly the leader's data at one
/// log index, as `ctl check-replicas` compares them.
pub async fn wait_for_identical_replica(
    cluster: &Cluster,
    region_id: u64,
    addr: std::net::SocketAddr,
    within: std::time::Duration,
) -> (u64, u64, u64) {
    let deadline = std::time::Instant::now() + within;
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        let mut taken = None;
        for store in &cluster.stores {
            match replica_checksum(store.addr(), region_id, 0).await {
                Ok(sum) => {
                    taken = Some(sum);
                    break;
                }
                Err(e) => last = e,
            }
        }
        if let Some((index, sum, keys)) = taken {
            // The replica takes its checksum when it applies that entry.
            let applied_by = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while std::time::Instant::now() < applied_by {
                match replica_checksum(addr, region_id, index).await {
                    Ok(got) if got == (index, sum, keys) => return got,
                    Ok(got) => panic!("replica differs: {got:?}, leader {:?}", (index, sum, keys)),
                    Err(e) => last = e,
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    panic!("the replica on {addr} did not catch up within {within:?}: {last}");
}
