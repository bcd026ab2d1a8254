use std::net::SocketAddr;
use std::sync::Arc;

use flotilla_catalog::LocalCatalog;
use flotilla_ddl::{JobQueue, LocalDdl};
use flotilla_sql::SqlEngine;
use flotilla_storage::{EngineRef, FjallEngine, FjallOptions, SyncPolicy};
use flotilla_tso::LocalTso;
use flotilla_txn::LocalTxnKv;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::StandaloneConfig;
use crate::gc::{GcStats, GcWorker};
use crate::http::{HttpState, router};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory could not be opened (in use by another process, unreadable,
    /// corrupt).
    #[error("cannot open data directory {dir}: {message}")]
    Storage {
        /// The directory.
        dir: String,
        /// What failed.
        message: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another start-up step failed.
    #[error("start-up failed: {0}")]
    Other(String),
}

/// A running standalone node: meta, store and SQL in one process, replication factor 1,
/// wired through the same seams a cluster uses.
pub struct Standalone {
    sql_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Standalone {
    /// Opens the data directory, recovers, and starts serving.
    pub async fn start(config: StandaloneConfig) -> Result<Self, StartError> {
        let gc_config = config.gc.to_config().map_err(StartError::Config)?;
        let sync_policy = match config.storage.sync.as_str() {
            "fsync" => SyncPolicy::Fsync,
            "buffered" => SyncPolicy::Buffered,
            other => {
                return Err(StartError::Config(format!(
                    "storage.sync must be \"fsync\" or \"buffered\", not \"{other}\""
                )));
            }
        };
        let store_dir = config.data_dir.join("store");
        let storage_err = |message: String| StartError::Storage {
            dir: config.data_dir.display().to_string(),
            message,
        };
        let engine: EngineRef = Arc::new(
            FjallEngine::open(
                &store_dir,
                &FjallOptions {
                    cache_size_bytes: config.storage.cache_size_bytes,
                    point_cache_bytes: config.storage.row_cache_bytes,
                    sync_policy,
                },
            )
            .map_err(|e| storage_err(e.to_string()))?,
        );
        let tso = Arc::new(
            LocalTso::open(engine.clone(), LocalTso::DEFAULT_WINDOW_MS)
                .map_err(|e| storage_err(e.to_string()))?,
        );
        let catalog = Arc::new(
            LocalCatalog::open_with_limits(engine.clone(), config.ddl.to_config().catalog)
                .map_err(|e| storage_err(e.to_string()))?,
        );
        let mvcc = Arc::new(
            flotilla_mvcc::Mvcc::with_memory_lock_budget(
                engine.clone(),
                // One store, one MVCC: the region's bound is the store's.
                flotilla_mvcc::MemoryLockBudget::new(
                    config.storage.memory_locks_bytes_max,
                    config.storage.memory_locks_bytes_max,
                ),
            )
            .map_err(|e| storage_err(e.to_string()))?,
        );
        let kv = Arc::new(LocalTxnKv::new(mvcc.clone(), tso.clone()));
        let resolved = kv
            .recover_orphan_locks()
            .await
            .map_err(|e| storage_err(format!("resolving locks left by the previous run: {e}")))?;
        if resolved > 0 {
            tracing::info!(resolved, "resolved locks left by the previous run");
        }
        let reorg: flotilla_ddl::ReorgRef = flotilla_sql::SqlReorg::new(kv.clone(), tso.clone());
        let jobs = JobQueue::open(
            engine.clone(),
            catalog.clone(),
            config.ddl.to_config(),
            Some(reorg),
        )
        .map_err(|e| storage_err(format!("loading DDL jobs: {e}")))?;
        // Every SQL node this owner serves lives in this process: the leases registered
        // by an earlier run are its own, dead with it, and must not hold up the first
        // schema change for a lease period.
        jobs.leases()
            .forget_earlier_runs()
            .map_err(|e| storage_err(format!("clearing the schema leases of the last run: {e}")))?;
        let ddl = LocalDdl::start(jobs.clone());
        let tso_for_gc: flotilla_tso::TsoRef = tso.clone();
        let sql = SqlEngine::new(kv, tso, catalog, ddl, config.sql.sql_config())
            .map_err(|e| StartError::Other(e.to_string()))?;

        let sql_listener = tokio::net::TcpListener::bind(config.sql_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.sql_addr,
                source,
            })?;
        let http_listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.http_addr,
                source,
            })?;
        let sql_addr = sql_listener
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;

        let (shutdown, watcher) = watch::channel(false);
        let stopped = |mut w: watch::Receiver<bool>| async move {
            let _ = w.wait_for(|stop| *stop).await;
        };
        let pg = {
            let sql = sql.clone();
            let config = config.sql.pg_config();
            let stop = stopped(watcher.clone());
            tokio::spawn(async move {
                if let Err(e) = flotilla_pgserver::serve(sql_listener, sql, config, stop).await {
                    tracing::error!(error = %e, "PostgreSQL listener failed");
                }
            })
        };
        let gc_stats = Arc::new(GcStats::default());
        let gc = {
            let worker = GcWorker {
                mvcc,
                tso: tso_for_gc,
                jobs,
                config: gc_config,
                stats: gc_stats.clone(),
            };
            tokio::spawn(worker.run(watcher.clone()))
        };
        let http = {
            let state = Arc::new(HttpState::new(
                config.data_dir.clone(),
                sql.clone(),
                engine.clone(),
                Some(gc_stats.clone()),
            ));
            let stop = stopped(watcher.clone());
            tokio::spawn(async move {
                let server = axum::serve(http_listener, router(state)).with_graceful_shutdown(stop);
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "HTTP listener failed");
                }
            })
        };
        tracing::info!(%sql_addr, %http_addr, data_dir = %config.data_dir.display(), "flotilla standalone is serving");
        Ok(Self {
            sql_addr,
            http_addr,
            shutdown,
            tasks: vec![pg, http, gc],
        })
    }

    /// Where PostgreSQL clients connect.
    pub fn sql_addr(&self) -> SocketAddr {
        self.sql_addr
    }

    /// Where /metrics and /status are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops accepting connections and waits for the listeners to finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
