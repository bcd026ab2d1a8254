use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::execution::SessionState;
use flotilla_catalog::CatalogRef;
use flotilla_ddl::DdlJobsRef;
use flotilla_tso::TsoRef;
use flotilla_txn::{TxnKvRef, TxnOptions};
use flotilla_types::Timestamp;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::api::SqlConfig;
use crate::context::template_state;
use crate::error::SqlError;
use crate::session::Session;

/// The SQL engine shared by all sessions of a node.
pub struct SqlEngine {
    pub(crate) kv: TxnKvRef,
    pub(crate) tso: TsoRef,
    pub(crate) catalog: CatalogRef,
    /// Where schema changes run as jobs (in process, or at the meta service).
    pub(crate) ddl: DdlJobsRef,
    pub(crate) config: SqlConfig,
    pub(crate) txn_options: TxnOptions,
    pub(crate) template: SessionState,
    /// Start timestamps of this node's open transactions (with multiplicity), so schema
    /// changes can wait until every transaction older than the change has finished.
    active: Mutex<BTreeMap<Timestamp, usize>>,
    finished: Notify,
    /// Serialises DDL statements of this node.
    pub(crate) ddl_lock: tokio::sync::Mutex<()>,
}

/// Registration of an open transaction; removed on drop.
pub(crate) struct ActiveTxn {
    engine: Arc<SqlEngine>,
    start_ts: Timestamp,
}

impl Drop for ActiveTxn {
    fn drop(&mut self) {
        let mut active = self.engine.active.lock();
        if let Some(n) = active.get_mut(&self.start_ts) {
            *n -= 1;
            if *n == 0 {
                active.remove(&self.start_ts);
            }
        }
        drop(active);
        self.engine.finished.notify_waiters();
    }
}

impl SqlEngine {
    /// An engine over the given seams.
    pub fn new(
        kv: TxnKvRef,
        tso: TsoRef,
        catalog: CatalogRef,
        ddl: DdlJobsRef,
        config: SqlConfig,
    ) -> Result<Arc<Self>, SqlError> {
        let template = template_state(config.query_memory_bytes_max)?;
        let txn_options = TxnOptions {
            lock_wait_timeout_ms: config.lock_wait_timeout_ms,
            ..TxnOptions::default()
        };
        Ok(Arc::new(Self {
            kv,
            tso,
            catalog,
            ddl,
            config,
            txn_options,
            template,
            active: Mutex::new(BTreeMap::new()),
            finished: Notify::new(),
            ddl_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Number of user tables in the catalog.
    pub fn table_count(&self) -> usize {
        self.catalog.snapshot().tables.len()
    }

    /// A new session (one per client connection).
    pub fn session(self: &Arc<Self>) -> Session {
        Session::new(self.clone())
    }

    pub(crate) fn register_txn(self: &Arc<Self>, start_ts: Timestamp) -> ActiveTxn {
        *self.active.lock().entry(start_ts).or_default() += 1;
        ActiveTxn {
            engine: self.clone(),
            start_ts,
        }
    }

    /// Waits until no transaction that started before `ts` is open, or fails after
    /// `timeout`.
    pub(crate) async fn wait_for_transactions_before(
        &self,
        ts: Timestamp,
        except: Option<Timestamp>,
        timeout: Duration,
    ) -> Result<(), SqlError> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // The caller's own transaction (DDL inside a transaction block) is not waited for.
            let oldest = self
                .active
                .lock()
                .keys()
                .copied()
                .find(|t| Some(*t) != except);
            match oldest {
                Some(oldest) if oldest < ts => {}
                _ => return Ok(()),
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return Err(SqlError::new(
                    "55P03",
                    format!(
                        "schema change waited {} ms for transactions that started before it to finish",
                        timeout.as_millis()
                    ),
                )
                .with_hint("Commit or roll back long-running transactions, then retry."));
            }
        }
    }
}
