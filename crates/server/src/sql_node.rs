//! The SQL role: PostgreSQL clients in, transactions out to the cluster's regions. Holds
//! no data: the catalog and timestamps come from the meta service, rows from the stores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::{
    ClientConfig, ClusterTxnKv, MetaClient, RegionCache, RemoteCatalog, RemoteDdl, RemoteTso,
    encode_key,
};
use flotilla_pgserver::PgServerConfig;
use flotilla_sql::{SqlConfig, SqlEngine};
use tokio::sync::watch;

use crate::standalone::StartError;

/// How a SQL node runs.
#[derive(Debug, Clone)]
pub struct SqlNodeConfig {
    pub meta_endpoints: Vec<String>,
    pub sql: SqlConfig,
    /// The PostgreSQL front end's limits (connections, statements and portals per connection).
    pub pg: PgServerConfig,
    pub client: ClientConfig,
    /// How often the cached catalog is compared with the meta service's.
    pub catalog_refresh: Duration,
}

impl SqlNodeConfig {
    /// Defaults: the standalone's SQL limits, 250 ms catalog refresh.
    pub fn new(meta_endpoints: Vec<String>) -> Self {
        Self {
            meta_endpoints,
            sql: SqlConfig::default(),
            pg: PgServerConfig::default(),
            client: ClientConfig::default(),
            catalog_refresh: Duration::from_millis(250),
        }
    }
}

/// A running SQL node.
pub struct SqlNode {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SqlNode {
    /// Connects to the meta service and serves PostgreSQL clients on `listener`.
    pub async fn start(
        cfg: SqlNodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, StartError> {
        let sql = cluster_sql_engine(&cfg).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let (shutdown, mut watcher) = watch::channel(false);
        let pg_config = cfg.pg.clone();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = watcher.wait_for(|s| *s).await;
            };
            if let Err(e) = flotilla_pgserver::serve(listener, sql, pg_config, stop).await {
                tracing::error!(error = %e, "PostgreSQL listener failed");
            }
        });
        tracing::info!(%addr, "sql node is serving");
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// The SQL engine of a cluster SQL node: transactions through `ClusterTxnKv`, timestamps
/// and the catalog from the meta service.
///
/// See also [`cluster_reorg`], the index backfill the meta leader runs for DDL jobs.
pub async fn cluster_sql_engine(cfg: &SqlNodeConfig) -> Result<Arc<SqlEngine>, StartError> {
    let meta = Arc::new(
        MetaClient::new(cfg.meta_endpoints.clone(), cfg.client.clone())
            .map_err(|e| StartError::Config(e.to_string()))?,
    );
    let tso = Arc::new(RemoteTso::new(meta.clone()));
    let cache = Arc::new(RegionCache::new(
        meta.clone(),
        RegionCache::DEFAULT_MAX_REGIONS,
    ));
    let kv = Arc::new(ClusterTxnKv::new(cache, tso.clone(), cfg.client.clone()));
    let catalog = RemoteCatalog::open(meta.clone(), cfg.catalog_refresh)
        .await
        .map_err(|e| {
            StartError::Other(format!("loading the catalog from the meta service: {e}"))
        })?;
    // Each table (and each truncation's fresh storage) starts in a region of its own.
    let splitter = kv.clone();
    catalog.on_new_storage(Arc::new(
        move |ids: Vec<i64>| -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            let kv = splitter.clone();
            Box::pin(async move {
                for id in ids {
                    let prefix = flotilla_codec::table_prefix(id);
                    for key in [
                        encode_key(&prefix),
                        encode_key(&flotilla_codec::prefix_end(&prefix)),
                    ] {
                        if let Err(e) = kv.split_at(&key).await {
                            tracing::warn!(
                                storage_id = id,
                                "could not give the table its own region: {e}"
                            );
                        }
                    }
                }
            })
        },
    ));
    let ddl = RemoteDdl::new(meta, catalog.clone());
    SqlEngine::new(kv, tso, catalog, ddl, cfg.sql.clone())
        .map_err(|e| StartError::Other(e.to_string()))
}

/// The index backfill of DDL jobs on a cluster: transactions through the stores, as a SQL
/// node makes them, for the meta leader that runs the jobs. Call on the runtime that
/// serves the meta member.
pub fn cluster_reorg(
    meta_endpoints: Vec<String>,
    client: ClientConfig,
) -> Result<flotilla_ddl::ReorgRef, StartError> {
    let meta = Arc::new(
        MetaClient::new(meta_endpoints, client.clone())
            .map_err(|e| StartError::Config(e.to_string()))?,
    );
    let tso = Arc::new(RemoteTso::new(meta.clone()));
    let cache = Arc::new(RegionCache::new(meta, RegionCache::DEFAULT_MAX_REGIONS));
    let kv = Arc::new(ClusterTxnKv::new(cache, tso.clone(), client));
    Ok(flotilla_sql::SqlReorg::new(kv, tso))
}
