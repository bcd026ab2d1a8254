use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use datafusion::execution::SessionState;
use flotilla_catalog::CatalogRef;
use flotilla_ddl::DdlJobsRef;
use flotilla_tso::TsoRef;
use flotilla_txn::{TxnKvRef, TxnOptions};
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
    /// Woken when a transaction ends (its pin may have been the oldest).
    finished: Arc<Notify>,
    /// Serialises DDL statements of this node.
    pub(crate) ddl_lock: tokio::sync::Mutex<()>,
    /// This node's id in the schema leases (a timestamp: unique in the cluster).
    node_id: Mutex<Option<u64>>,
    /// Catalog versions pinned by open transactions (the version at each one's first
    /// statement, with multiplicity): the oldest is what this node reports in use.
    pins: Mutex<BTreeMap<u64, usize>>,
    /// Timestamps pinned by open transactions and snapshots: the oldest bounds the GC
    /// safe point.
    ts_pins: Mutex<TsPins>,
    /// Until when this node may use its schema (its lease, renewed in the background).
    lease_until: tokio::sync::watch::Sender<Option<Instant>>,
    /// The cluster's version as the last lease renewal gave it (0: not known yet).
    cluster_version: std::sync::atomic::AtomicU32,
    /// Why the DDL owner refuses this node's lease for good (its build is older than the
    /// cluster's version), until a renewal succeeds.
    refused: Mutex<Option<String>>,
}

/// How often a node without open readers fetches a timestamp for its lease report, so
/// the GC safe point can move on while it is idle (see `SqlEngine::oldest_start_ts`).
const IDLE_FLOOR_REFRESH: Duration = Duration::from_secs(60);

/// How long a lease renewal waits at the owner for a newer catalog version.
const LEASE_POLL: Duration = Duration::from_secs(1);
/// The part of a lease a node does not use, so its lease lapses at the node before the
/// owner stops waiting for it.
const LEASE_MARGIN_DIVISOR: u32 = 10;

/// Timestamps that open transactions and snapshots of this node read at, or will.
#[derive(Default)]
struct TsPins {
    /// Each holder's start_ts, or, until it has one, the `floor` when it registered (its
    /// start_ts will be newer), with multiplicity.
    pins: BTreeMap<u64, usize>,
    /// A timestamp every timestamp asked for from now on will be newer than: the newest
    /// a registered reader got, or one fetched for a lease report.
    floor: u64,
    /// When the floor was last fetched for a lease report (`None`: never).
    fetched: Option<Instant>,
}

impl TsPins {
    fn add(&mut self, ts: u64) {
        *self.pins.entry(ts).or_default() += 1;
    }

    fn remove(&mut self, ts: u64) {
        if let Some(n) = self.pins.get_mut(&ts) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(&ts);
            }
        }
    }
}

/// A registered reader's timestamp: keeps the GC safe point at or below it; removed on
/// drop. Registered before the reader asks for its timestamp.
pub(crate) struct TsPin {
    engine: Arc<SqlEngine>,
    ts: u64,
}

impl TsPin {
    /// The reader's timestamp is `ts` (newer than the floor it was registered at).
    pub(crate) fn started(&mut self, ts: flotilla_types::Timestamp) {
        let mut pins = self.engine.ts_pins.lock();
        debug_assert!(
            ts.0 >= self.ts,
            "a start_ts older than its registration's floor"
        );
        pins.remove(self.ts);
        self.ts = ts.0;
        pins.add(self.ts);
        // Readers registered from now on ask the oracle after it answered this one.
        pins.floor = pins.floor.max(ts.0);
    }
}

impl Drop for TsPin {
    fn drop(&mut self) {
        self.engine.ts_pins.lock().remove(self.ts);
    }
}

/// Registration of an open transaction; removed on drop.
pub(crate) struct ActiveTxn {
    engine: Arc<SqlEngine>,
    /// The catalog version the transaction pins (`None` once exempted).
    pin: Option<u64>,
    /// Its start_ts.
    pub(crate) ts: TsPin,
}

impl ActiveTxn {
    /// Stops pinning a catalog version: the session's own DDL must not wait for it.
    pub(crate) fn unpin(&mut self) {
        if let Some(v) = self.pin.take() {
            self.engine.unpin(v);
        }
    }
}

impl Drop for ActiveTxn {
    fn drop(&mut self) {
        self.unpin();
        self.engine.finished.notify_waiters();
    }
}

impl SqlEngine {
    /// An engine over the given seams. Must be called on the runtime that serves it: the
    /// engine's schema lease is renewed by a task spawned there.
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
            txn_size_bytes_max: config.txn_size_bytes_max,
            ..TxnOptions::default()
        };
        let engine = Arc::new(Self {
            kv,
            tso,
            catalog,
            ddl,
            config,
            txn_options,
            template,
            finished: Arc::new(Notify::new()),
            ddl_lock: tokio::sync::Mutex::new(()),
            node_id: Mutex::new(None),
            pins: Mutex::new(BTreeMap::new()),
            ts_pins: Mutex::new(TsPins::default()),
            lease_until: tokio::sync::watch::channel(None).0,
            cluster_version: std::sync::atomic::AtomicU32::new(0),
            refused: Mutex::new(None),
        });
        // The schema lease is held from the start, renewed in the background until the
        // engine is dropped; statements wait for the first grant.
        tokio::spawn(renew_schema_lease(Arc::downgrade(&engine)));
        Ok(engine)
    }

    fn unpin(&self, version: u64) {
        let mut pins = self.pins.lock();
        if let Some(n) = pins.get_mut(&version) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&version);
            }
        }
    }

    /// The oldest catalog version an open transaction uses, or `loaded` if none is older.
    fn schema_in_use(&self, loaded: u64) -> u64 {
        self.pins
            .lock()
            .keys()
            .next()
            .copied()
            .map_or(loaded, |v| v.min(loaded))
    }

    /// Fails unless this node holds a schema lease: one it cannot renew lapses, and then
    /// it refuses queries rather than use a schema that may be stale. Before the first
    /// grant it waits for it (a node just started).
    pub(crate) async fn check_schema_lease(&self) -> Result<(), SqlError> {
        let mut lease = self.lease_until.subscribe();
        let first_grant = Duration::from_secs(10);
        // A refusal wakes the wait too (it sends on `lease_until`).
        let answered = |until: &Option<Instant>| until.is_some() || self.refused.lock().is_some();
        if lease.borrow().is_none() {
            let _ = tokio::time::timeout(first_grant, lease.wait_for(answered)).await;
        }
        if let Some(why) = self.refused.lock().clone() {
            return Err(SqlError::new(
                "57P03",
                format!("the cluster refuses this SQL node: {why}"),
            )
            .with_hint("Connect to another SQL node."));
        }
        match *lease.borrow() {
            Some(until) if Instant::now() < until => Ok(()),
            Some(until) => Err(SqlError::new(
                "57P03",
                format!(
                    "this SQL node's schema lease lapsed {} ms ago (it cannot reach the DDL owner), so it refuses queries rather than use a schema that may be stale",
                    Instant::now().saturating_duration_since(until).as_millis()
                ),
            )
            .with_hint("Retry; or connect to another SQL node.")),
            None => Err(SqlError::new(
                "57P03",
                "this SQL node has no schema lease yet (it cannot reach the DDL owner)",
            )
            .with_hint("Retry; or connect to another SQL node.")),
        }
    }

    /// The cluster's version as the last lease renewal gave it (0: no renewal yet).
    pub fn cluster_version(&self) -> u32 {
        self.cluster_version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the cluster's version (as the last lease renewal gave it) lets this node
    /// use `feature`.
    pub fn may_use(&self, feature: flotilla_types::version::Feature) -> bool {
        feature.active_at(self.cluster_version())
    }

    /// The catalog this node has loaded (its schema version, its tables' states).
    pub fn catalog_snapshot(&self) -> Arc<flotilla_catalog::CatalogSnapshot> {
        self.catalog.snapshot()
    }

    /// Number of user tables in the catalog.
    pub fn table_count(&self) -> usize {
        self.catalog.snapshot().tables.len()
    }

    /// A new session (one per client connection).
    pub fn session(self: &Arc<Self>) -> Session {
        Session::new(self.clone())
    }

    /// Registers an open transaction: it pins the catalog version it starts on.
    pub(crate) fn register_txn(
        self: &Arc<Self>,
    ) -> (ActiveTxn, Arc<flotilla_catalog::CatalogSnapshot>) {
        // The snapshot is taken and pinned under one lock: a lease renewal in between
        // would report no transaction on it, and the owner could go two versions past it.
        let mut pins = self.pins.lock();
        let snapshot = self.catalog.snapshot();
        *pins.entry(snapshot.version).or_default() += 1;
        drop(pins);
        let active = ActiveTxn {
            engine: self.clone(),
            pin: Some(snapshot.version),
            ts: self.pin_ts(),
        };
        (active, snapshot)
    }

    /// Registers a reader about to ask for its timestamp (see `TsPin`).
    pub(crate) fn pin_ts(self: &Arc<Self>) -> TsPin {
        let mut pins = self.ts_pins.lock();
        let ts = pins.floor;
        pins.add(ts);
        TsPin {
            engine: self.clone(),
            ts,
        }
    }

    /// What the lease report says bounds the GC safe point: the oldest registered
    /// reader's timestamp, or the floor when none is older. An idle node's floor would
    /// not move, holding GC back for every node, so when it has no reader and its floor
    /// was not fetched for `IDLE_FLOOR_REFRESH`, it fetches a fresh one first; if that
    /// fails the older floor stands (0, unknown, before the first fetch), which only holds
    /// GC back.
    async fn oldest_start_ts(&self) -> u64 {
        let stale = {
            let pins = self.ts_pins.lock();
            pins.pins.is_empty()
                && pins
                    .fetched
                    .is_none_or(|at| at.elapsed() >= IDLE_FLOOR_REFRESH)
        };
        if stale {
            match self.tso.get_ts().await {
                Ok(fresh) => {
                    let mut pins = self.ts_pins.lock();
                    pins.floor = pins.floor.max(fresh.0);
                    pins.fetched = Some(Instant::now());
                }
                Err(e) => tracing::debug!("schema lease: no timestamp for the GC report: {e}"),
            }
        }
        let pins = self.ts_pins.lock();
        pins.pins
            .keys()
            .next()
            .map_or(pins.floor, |oldest| (*oldest).min(pins.floor))
    }
}

/// Renews the engine's schema lease until the engine is dropped: reports the newest
/// catalog version loaded and the oldest in use, loads a newer version as soon as the
/// owner publishes one, and reports again at once when an old transaction ends while a
/// schema change waits for it.
async fn renew_schema_lease(weak: Weak<SqlEngine>) {
    let mut held: Option<(DdlJobsRef, u64)> = None;
    hold_schema_lease(&weak, &mut held).await;
    // The engine is gone: give the lease up so schema changes need not wait for it to
    // lapse.
    if let Some((ddl, node)) = held
        && let Err(e) = ddl.release_lease(node).await
    {
        tracing::debug!("schema lease: release: {e}");
    }
}

async fn hold_schema_lease(weak: &Weak<SqlEngine>, held: &mut Option<(DdlJobsRef, u64)>) {
    let mut pause = Duration::from_millis(50);
    loop {
        let Some(engine) = weak.upgrade() else { return };
        let known = *engine.node_id.lock();
        let node = match known {
            Some(id) => id,
            None => match engine.tso.get_ts().await {
                Ok(ts) => {
                    let id = u64::from_be_bytes(ts.to_be_bytes());
                    *engine.node_id.lock() = Some(id);
                    id
                }
                Err(e) => {
                    tracing::warn!("schema lease: no node id yet: {e}");
                    drop(engine);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let notify = engine.finished.clone();
        let finished = notify.notified();
        tokio::pin!(finished);
        finished.as_mut().enable();
        let loaded = engine.catalog.snapshot().version;
        let in_use = engine.schema_in_use(loaded);
        let oldest_start_ts = engine.oldest_start_ts().await;
        let ddl = engine.ddl.clone();
        let binary_version = flotilla_types::version::to_report(engine.config.binary_version);
        *held = Some((ddl.clone(), node));
        drop(engine);
        let sent = Instant::now();
        // The first renewal answers at once: statements wait for it.
        let poll = if weak
            .upgrade()
            .is_some_and(|e| e.lease_until.borrow().is_some())
        {
            LEASE_POLL
        } else {
            Duration::ZERO
        };
        let renewal = ddl.renew_lease(node, loaded, in_use, oldest_start_ts, binary_version, poll);
        let grant = if in_use < loaded {
            // A transaction pins an older version: report as soon as one ends.
            tokio::select! {
                g = renewal => Some(g),
                _ = finished => None,
            }
        } else {
            Some(renewal.await)
        };
        let Some(engine) = weak.upgrade() else { return };
        match grant {
            None => {}
            Some(Ok(grant)) => {
                pause = Duration::from_millis(50);
                let lease = Duration::from_millis(grant.lease_ms);
                let until = sent + lease - lease / LEASE_MARGIN_DIVISOR;
                engine.lease_until.send_replace(Some(until));
                *engine.refused.lock() = None;
                engine.cluster_version.store(
                    flotilla_types::version::reported(grant.cluster_version),
                    std::sync::atomic::Ordering::Release,
                );
                if grant.version > loaded {
                    let catalog = engine.catalog.clone();
                    match tokio::task::spawn_blocking(move || catalog.sync()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!("schema lease: loading the catalog: {e}"),
                        Err(e) => tracing::warn!("schema lease: loading the catalog: {e}"),
                    }
                }
            }
            Some(Err(e)) => {
                if e.code == "55000" {
                    // Refused for good: no lease until this node runs a newer build.
                    *engine.refused.lock() = Some(e.message.clone());
                    engine.lease_until.send_replace(None);
                }
                tracing::warn!("schema lease: renewal failed: {e}");
                drop(engine);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}
