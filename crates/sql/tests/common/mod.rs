//! An in-process standalone engine for the SQL layer's tests: real fjall, MVCC, TSO and
//! catalog, wired exactly as `flotilla standalone` wires them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flotilla_catalog::LocalCatalog;
use flotilla_mvcc::Mvcc;
use flotilla_sql::{QueryResult, Session, SqlConfig, SqlEngine, SqlError};
use flotilla_storage::{FjallEngine, FjallOptions, SyncPolicy};
use flotilla_tso::LocalTso;
use flotilla_txn::LocalTxnKv;

#[allow(dead_code)] // the slt harness uses the engine only
pub struct TestDb {
    pub engine: Arc<SqlEngine>,
    /// The seams under the engine, for tests that reach past SQL.
    pub kv: Arc<LocalTxnKv>,
    pub tso: Arc<LocalTso>,
    /// Timestamps the SQL engine asked for (the transaction layer's own are not counted).
    pub sql_tso: Arc<CountingTso>,
    pub catalog: Arc<LocalCatalog>,
    /// The DDL job queue, for tests that hold jobs with its failpoint.
    pub jobs: Arc<flotilla_ddl::JobQueue>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::with_config(SqlConfig::default()).await
    }

    pub async fn with_config(config: SqlConfig) -> Self {
        Self::with_limits(config, flotilla_catalog::CatalogLimits::default()).await
    }

    pub async fn with_limits(config: SqlConfig, limits: flotilla_catalog::CatalogLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(
            FjallEngine::open(
                dir.path(),
                &FjallOptions {
                    // Tests check semantics, not power-loss durability.
                    sync_policy: SyncPolicy::Buffered,
                    ..FjallOptions::default()
                },
            )
            .unwrap(),
        );
        let tso = Arc::new(LocalTso::open(storage.clone(), 3_000).unwrap());
        let storage_for_ddl: flotilla_storage::EngineRef = storage.clone();
        let catalog = Arc::new(LocalCatalog::open_with_limits(storage.clone(), limits).unwrap());
        let kv = Arc::new(LocalTxnKv::new(
            Arc::new(Mvcc::new(storage).unwrap()),
            tso.clone(),
        ));
        let jobs = flotilla_ddl::JobQueue::open(
            storage_for_ddl,
            catalog.clone(),
            flotilla_ddl::DdlConfig::default(),
            Some(flotilla_sql::SqlReorg::new(kv.clone(), tso.clone())),
        )
        .unwrap();
        let sql_tso = Arc::new(CountingTso {
            inner: tso.clone(),
            calls: AtomicU64::new(0),
        });
        let engine = SqlEngine::new(
            kv.clone(),
            sql_tso.clone(),
            catalog.clone(),
            flotilla_ddl::LocalDdl::start(jobs.clone()),
            config,
        )
        .unwrap();
        Self {
            engine,
            kv,
            tso,
            sql_tso,
            catalog,
            jobs,
            _dir: dir,
        }
    }

    pub fn session(&self) -> Session {
        self.engine.session()
    }
}

/// The oracle, counting what is asked of it.
pub struct CountingTso {
    inner: Arc<LocalTso>,
    calls: AtomicU64,
}

#[allow(dead_code)] // not every test binary counts
impl CountingTso {
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl flotilla_tso::Tso for CountingTso {
    async fn get_ts(&self) -> Result<flotilla_types::Timestamp, flotilla_tso::TsoError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.get_ts().await
    }
}

/// Runs one statement, returning its result or error.
#[allow(dead_code)]
pub async fn run(session: &mut Session, sql: &str) -> Result<QueryResult, SqlError> {
    let (mut results, error) = session.simple_query(sql).await;
    match error {
        Some(e) => Err(e),
        None => Ok(results.pop().unwrap_or(QueryResult::Empty)),
    }
}
