use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_catalog::{
    Catalog, CatalogError, CatalogSnapshot, IdKind, SchemaChange, SequenceDef, TableDef, ViewDef,
};
use flotilla_proto::metaservicepb::{
    AllocateCatalogIdsRequest, CommitSchemaRequest, GetCatalogRequest, RestartSequenceRequest,
};
use flotilla_types::TableId;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::meta_client::MetaClient;

/// A catalog snapshot on the wire (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct WireSnapshot {
    pub version: u64,
    pub tables: Vec<TableDef>,
    pub views: Vec<ViewDef>,
    /// Absent from a meta service that predates CREATE SEQUENCE.
    #[serde(default)]
    pub sequences: Vec<SequenceDef>,
}

impl WireSnapshot {
    /// The wire form of `s`.
    pub fn from_snapshot(s: &CatalogSnapshot) -> Self {
        Self {
            version: s.version,
            tables: s.tables.values().map(|t| (**t).clone()).collect(),
            views: s.views.values().map(|v| (**v).clone()).collect(),
            sequences: s.sequences.values().map(|q| (**q).clone()).collect(),
        }
    }

    /// Back to a snapshot.
    pub fn into_snapshot(self) -> CatalogSnapshot {
        CatalogSnapshot {
            version: self.version,
            tables: self
                .tables
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(t)))
                .collect(),
            views: self
                .views
                .into_iter()
                .map(|v| (v.name.clone(), Arc::new(v)))
                .collect(),
            sequences: self
                .sequences
                .into_iter()
                .map(|q| (q.name.clone(), Arc::new(q)))
                .collect(),
        }
    }
}

/// A schema change on the wire (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct WireChange {
    pub base_version: u64,
    pub upserts: Vec<TableDef>,
    pub drops: Vec<TableId>,
    pub view_upserts: Vec<ViewDef>,
    pub view_drops: Vec<TableId>,
    #[serde(default)]
    pub sequence_upserts: Vec<SequenceDef>,
    #[serde(default)]
    pub sequence_drops: Vec<i64>,
}

impl WireChange {
    /// The wire form of `c`.
    pub fn from_change(c: &SchemaChange) -> Self {
        Self {
            base_version: c.base_version,
            upserts: c.upserts.clone(),
            drops: c.drops.clone(),
            view_upserts: c.view_upserts.clone(),
            view_drops: c.view_drops.clone(),
            sequence_upserts: c.sequence_upserts.clone(),
            sequence_drops: c.sequence_drops.clone(),
        }
    }

    /// Back to a change.
    pub fn into_change(self) -> SchemaChange {
        SchemaChange {
            base_version: self.base_version,
            upserts: self.upserts,
            drops: self.drops,
            view_upserts: self.view_upserts,
            view_drops: self.view_drops,
            sequence_upserts: self.sequence_upserts,
            sequence_drops: self.sequence_drops,
        }
    }
}

/// Hidden row ids are reserved this many at a time from the meta service.
const ROW_ID_BATCH: u64 = 10_000;

/// The catalog of a SQL node in a cluster: the meta service's catalog, cached here and
/// refreshed in the background. A change is a compare-and-swap at the meta service
/// against the version it was computed from, so a node with a stale cache cannot
/// overwrite a newer schema: its change fails with a retryable error and the cache is
/// refreshed at once.
pub struct RemoteCatalog {
    meta: Arc<MetaClient>,
    runtime: tokio::runtime::Handle,
    current: RwLock<Arc<CatalogSnapshot>>,
    /// Row ids and sequence values reserved here and not yet handed out.
    reserved: Mutex<HashMap<IdKind, Range<i64>>>,
    on_new_storage: Mutex<Option<NewStorageHook>>,
}

/// Called with the storage ids a committed change created (new tables, truncations), so
/// the cluster can give each its own region; the change's statement completes after it.
pub type NewStorageHook = Arc<
    dyn Fn(Vec<i64>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

fn unavailable(e: ClientError) -> CatalogError {
    match e {
        ClientError::Unavailable(m) => CatalogError::Unavailable(m),
        ClientError::Failed(m) => CatalogError::Storage(m),
    }
}

fn decode_snapshot(json: &[u8]) -> Result<CatalogSnapshot, CatalogError> {
    serde_json::from_slice::<WireSnapshot>(json)
        .map(WireSnapshot::into_snapshot)
        .map_err(|e| CatalogError::Storage(format!("undecodable catalog from meta: {e}")))
}

impl RemoteCatalog {
    /// Loads the catalog from the meta service and keeps it fresh every `refresh`.
    pub async fn open(meta: Arc<MetaClient>, refresh: Duration) -> Result<Arc<Self>, CatalogError> {
        let catalog = Arc::new(Self {
            meta,
            runtime: tokio::runtime::Handle::current(),
            current: RwLock::new(Arc::new(CatalogSnapshot::default())),
            reserved: Mutex::new(HashMap::new()),
            on_new_storage: Mutex::new(None),
        });
        catalog.refresh().await?;
        let weak: Weak<Self> = Arc::downgrade(&catalog);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { return };
                if let Err(e) = c.refresh().await {
                    tracing::debug!("catalog refresh: {e}");
                }
            }
        });
        Ok(catalog)
    }

    /// Sets the hook told of new storage ids after each successful change.
    pub fn on_new_storage(&self, hook: NewStorageHook) {
        *self.on_new_storage.lock() = Some(hook);
    }

    /// Fetches the catalog if the meta service has a newer version.
    pub async fn refresh(&self) -> Result<(), CatalogError> {
        let known = self.current.read().version;
        let r = self
            .meta
            .call("get_catalog", |mut c| async move {
                c.get_catalog(GetCatalogRequest {
                    known_version: known,
                })
                .await
            })
            .await
            .map_err(unavailable)?;
        if r.snapshot_json.is_empty() {
            return Ok(());
        }
        let snapshot = decode_snapshot(&r.snapshot_json)?;
        self.install(snapshot);
        Ok(())
    }

    fn install(&self, snapshot: CatalogSnapshot) {
        let mut current = self.current.write();
        if snapshot.version >= current.version {
            *current = Arc::new(snapshot);
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        // The `Catalog` seam is synchronous (the local catalog never waits on the
        // network); here the call leaves the async worker while it waits.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(f))
            }
            _ => self.runtime.block_on(f),
        }
    }

    async fn allocate_remote(&self, kind: IdKind, count: u64) -> Result<Range<i64>, CatalogError> {
        let (table_ids, row_ids_of_table, sequence) = match kind {
            IdKind::Table => (true, 0, 0),
            IdKind::RowId(t) => (false, t, 0),
            // Also as the row ids of table `-s`, the same counter, for a meta leader
            // that predates sequences (it ignores `sequence`).
            IdKind::Sequence(s) => (false, -s, s),
        };
        let r = self
            .meta
            .call("allocate_catalog_ids", |mut c| async move {
                c.allocate_catalog_ids(AllocateCatalogIdsRequest {
                    row_ids_of_table,
                    table_ids,
                    count,
                    sequence,
                })
                .await
            })
            .await
            .map_err(unavailable)?;
        if r.exhausted == Some(true) {
            return Err(CatalogError::Exhausted(r.error));
        }
        if !r.error.is_empty() {
            return Err(CatalogError::Storage(r.error));
        }
        // A range too short (or wrapped, from a meta leader that predates `exhausted`)
        // means the counter is used up, never ids to hand out.
        let asked = i64::try_from(count).unwrap_or(i64::MAX);
        if r.end.checked_sub(r.start).is_none_or(|n| n < asked) {
            return Err(CatalogError::Exhausted(format!(
                "the meta service answered ids {}..{} for {count}",
                r.start, r.end
            )));
        }
        Ok(r.start..r.end)
    }
}

impl Catalog for RemoteCatalog {
    fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.current.read().clone()
    }

    fn commit(&self, change: SchemaChange) -> Result<Arc<CatalogSnapshot>, CatalogError> {
        let before = self.snapshot();
        let json = serde_json::to_vec(&WireChange::from_change(&change))
            .map_err(|e| CatalogError::Storage(e.to_string()))?;
        let r = self
            .block_on(self.meta.call("commit_schema", |mut c| {
                let change_json = json.clone().into();
                async move { c.commit_schema(CommitSchemaRequest { change_json }).await }
            }))
            .map_err(unavailable)?;
        if !r.snapshot_json.is_empty() {
            self.install(decode_snapshot(&r.snapshot_json)?);
        }
        match (r.error.is_empty(), r.error_kind) {
            (true, _) => {
                // A meta leader that predates CREATE SEQUENCE drops the field it does not
                // know and commits the rest: say so rather than report a sequence made.
                let after = self.snapshot();
                if change
                    .sequence_upserts
                    .iter()
                    .any(|s| !after.sequences.contains_key(&s.name))
                {
                    return Err(CatalogError::Invalid(
                        "the meta service does not keep sequences yet (it runs an older \
                         version); upgrade it, then create the sequence again"
                            .into(),
                    ));
                }
                let fresh: Vec<i64> = change.upserts.iter().map(|t| t.storage_id).collect();
                let known: std::collections::HashSet<i64> =
                    before.tables.values().map(|t| t.storage_id).collect();
                let fresh: Vec<i64> = fresh.into_iter().filter(|id| !known.contains(id)).collect();
                let hook = self.on_new_storage.lock().clone();
                if let Some(hook) = hook
                    && !fresh.is_empty()
                {
                    // Before the statement returns, so no transaction on the new table's
                    // keys is in flight while its region splits off.
                    self.block_on(hook(fresh));
                }
                Ok(self.snapshot())
            }
            (false, 1) => Err(CatalogError::VersionMismatch {
                expected: r.expected_version,
                actual: r.actual_version,
            }),
            (false, 0) => Err(CatalogError::Invalid(r.error)),
            (false, _) => Err(CatalogError::Storage(r.error)),
        }
    }

    fn sync(&self) -> Result<(), CatalogError> {
        self.block_on(self.refresh())
    }

    fn storage_created(&self, ids: &[i64]) {
        let hook = self.on_new_storage.lock().clone();
        if let Some(hook) = hook
            && !ids.is_empty()
        {
            self.block_on(hook(ids.to_vec()));
        }
    }

    fn allocate(&self, kind: IdKind, count: u64) -> Result<Range<i64>, CatalogError> {
        let batch = match kind {
            IdKind::Table => return self.block_on(self.allocate_remote(kind, count)),
            IdKind::RowId(_) => ROW_ID_BATCH,
            IdKind::Sequence(_) => flotilla_catalog::SEQUENCE_BATCH as u64,
        };
        {
            let mut reserved = self.reserved.lock();
            if let Some(r) = reserved.get_mut(&kind)
                && (r.end - r.start) as u64 >= count
            {
                let out = r.start..r.start + count as i64;
                r.start += count as i64;
                return Ok(out);
            }
        }
        let fresh = match self.block_on(self.allocate_remote(kind, count.max(batch))) {
            // Fewer than a batch left: take just what is needed, if that is there.
            Err(CatalogError::Exhausted(_)) if batch > count => {
                self.block_on(self.allocate_remote(kind, count))?
            }
            other => other?,
        };
        let out = fresh.start..fresh.start + count as i64;
        self.reserved.lock().insert(kind, out.end..fresh.end);
        Ok(out)
    }

    fn restart_sequence(&self, sequence: i64, next: i64) -> Result<(), CatalogError> {
        let r = self
            .block_on(self.meta.call("restart_sequence", |mut c| async move {
                c.restart_sequence(RestartSequenceRequest { sequence, next })
                    .await
            }))
            .map_err(unavailable)?;
        if !r.error.is_empty() {
            return Err(CatalogError::Invalid(r.error));
        }
        // This node's own reservation would otherwise hand out old values first.
        self.reserved.lock().remove(&IdKind::Sequence(sequence));
        Ok(())
    }
}
