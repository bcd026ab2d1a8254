//! The job queue and its owner: jobs persisted next to the catalog they change, run one
//! step at a time by the one owner (the standalone process, or the meta leader).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_catalog::{
    Catalog, CatalogError, CheckDef, ForeignKeyDef, IndexState, LocalCatalog, SchemaChange,
    TableDef,
};
use flotilla_storage::{Cf, EngineRef, WriteBatch};
use flotilla_types::TableId;
use flotilla_types::version::{self, BINARY_CLUSTER_VERSION, ClusterVersion};
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::watch;

use crate::ReorgRef;
use crate::alter::apply_alter;
use crate::check::{
    NotNullStep, Validated, find_constraint, not_null_check, nulls_found, plan_add_check,
    remove_constraint, set_not_null_step, set_validated,
};
use crate::foreign::plan_add_foreign_key;
use crate::index::{NewIndex, index_to_drop, plan_add_index, set_index_state};
use crate::job::{Cleanup, DataRange, Job, JobError, JobKind, JobState};
use crate::leases::{LeaseGrant, SchemaLeases};

const JOB_PREFIX: &[u8] = b"ddl/job/";
const NEXT_JOB_ID_KEY: &[u8] = b"ddl/next_job_id";

fn job_key(id: u64) -> Vec<u8> {
    let mut k = JOB_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Bounds and pacing of the job queue.
#[derive(Debug, Clone)]
pub struct DdlConfig {
    /// Most jobs queued or running at once; a submission past it fails at once with a
    /// retryable error (SQLSTATE 53000) rather than wait in an unbounded queue.
    pub jobs_max: usize,
    /// Most jobs whose steps run at the same moment (on different tables).
    pub running_max: usize,
    /// Finished job records are removed this long after they finished.
    pub finished_ttl: Duration,
    /// Most finished job records kept; past it the oldest are removed early.
    pub finished_max: usize,
    /// Backoff before the first retry of a step that failed retryably; it doubles per
    /// attempt (with jitter) up to `retry_backoff_max`.
    pub retry_backoff_min: Duration,
    /// Longest backoff between retries of a step.
    pub retry_backoff_max: Duration,
    /// Retryable failures of one job before it fails for good.
    pub retries_max: u32,
    /// How long a SQL node's schema lease lasts after it renews it; a node that cannot
    /// renew refuses queries once it lapses, and the owner stops waiting for it.
    pub schema_lease: Duration,
    /// How long one step waits for every SQL node to use a new schema version before it
    /// fails retryably (and is retried).
    pub schema_wait_timeout: Duration,
    /// Most SQL nodes holding schema leases.
    pub nodes_max: usize,
    /// Rows an index backfill writes per second at most (0: no limit).
    pub backfill_rows_per_s: u64,
    /// Records per second at most that the deletion of dropped tables' and indexes'
    /// data removes (0: no limit).
    pub cleanup_records_per_s: u64,
    /// Bounds on the catalog's size (relations, columns of a table), applied by the
    /// catalog the queue commits to.
    pub catalog: flotilla_catalog::CatalogLimits,
}

impl Default for DdlConfig {
    /// 128 jobs, 8 running, finished records kept 10 minutes (at most 1,024), retries
    /// backing off from 100 ms to 5 s, 100 retries; 10 s schema leases, a 10 s wait for
    /// SQL nodes per step, 1,024 SQL nodes, backfills at up to 5,000 rows/s (on two cores
    /// busy with pgbench, its p99 latency stays within 1.5x of idle at this rate and not at
    /// 10,000; BENCHMARKS.md). A 1M-row index takes about 200 s at it. Dropped data is
    /// deleted at up to 20,000 records/s (a 1M-row table of one index, about 3M records,
    /// in under 3 minutes).
    fn default() -> Self {
        Self {
            jobs_max: 128,
            running_max: 8,
            finished_ttl: Duration::from_secs(600),
            finished_max: 1024,
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            retries_max: 100,
            schema_lease: Duration::from_secs(10),
            schema_wait_timeout: Duration::from_secs(10),
            nodes_max: 1024,
            backfill_rows_per_s: 5_000,
            cleanup_records_per_s: 20_000,
            catalog: flotilla_catalog::CatalogLimits::default(),
        }
    }
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<u64, Job>,
    next_id: u64,
    /// Jobs whose step runs now.
    executing: HashSet<u64>,
    /// Jobs backing off after a retryable failure: not before then.
    next_attempt: HashMap<u64, Instant>,
}

/// The persisted DDL jobs of one catalog and the machinery that runs them.
pub struct JobQueue {
    engine: EngineRef,
    catalog: Arc<LocalCatalog>,
    cfg: DdlConfig,
    /// Memory of the jobs. Held only briefly, never across a write: async readers (waits,
    /// listings, the owner's picks) take it on the runtime's threads, and a playground
    /// child may have only one.
    inner: Mutex<Inner>,
    /// Serialises the writers of job records (blocking threads only): each re-reads the
    /// job under it, writes, then installs the result in `inner`.
    writes: Mutex<()>,
    /// Bumped on every change of a job (waiters and the owner watch it).
    changed: watch::Sender<u64>,
    /// Test and operator hook: every step fails retryably while set.
    failpoint: AtomicBool,
    /// The SQL nodes' schema leases.
    leases: SchemaLeases,
    /// Writes index entries of existing rows (index jobs fail without one).
    reorg: Option<ReorgRef>,
    /// The cluster's version (`flotilla_types::version`): job kinds of a newer one are
    /// refused, and so are SQL nodes of an older build. A standalone's is its build's; a
    /// meta leader sets the persisted one.
    cluster_version: AtomicU32,
    /// The owner's stop signal. A queue has one owner in its life (a new term or process
    /// opens the queue again): once it is stopped, scans and deletions still running end
    /// at their next chunk, so no work of an ended owner outlives it by more than one.
    owner_stop: Mutex<Option<watch::Receiver<bool>>>,
}

/// One chunk of a job's scan from a cursor: where the next starts (`None`: done) and the
/// rows it covered (`Reorg::backfill_chunk`, `Reorg::check_chunk`).
type ScanChunk<'a> = dyn Fn(Option<&[u8]>) -> Result<(Option<Vec<u8>>, u64), JobError> + 'a;

/// The validation scan of a constraint job's step, for the constraint as found.
type ConstraintScan<'a, C> = dyn Fn(&JobQueue, &mut Job, C) -> Outcome + 'a;

/// One chunk of a constraint's validation, with the reorg worker and the table.
type ValidateChunk<'a> = dyn Fn(&dyn crate::Reorg, &TableDef, Option<&[u8]>) -> Result<(Option<Vec<u8>>, u64), JobError>
    + Sync
    + 'a;

/// A step that moved the job to its end, not to another step.
const STEP_DONE: u32 = u32::MAX;
/// A step after which a rolled-back job ends failed (or cancelled).
const STEP_ROLLED_BACK: u32 = u32::MAX - 1;
/// An index job's first rollback step: back to delete-only.
const STEP_ROLLBACK: u32 = 100;
/// How long one backfill step runs before it yields to the owner (its checkpoint is
/// persisted after every chunk regardless).
const REORG_STEP_BUDGET: Duration = Duration::from_secs(2);
/// Records one chunk of a dropped range's deletion removes (one write batch).
const CLEANUP_CHUNK_RECORDS: usize = 1_024;

fn storage_error(e: impl std::fmt::Display) -> JobError {
    JobError::retryable("40001", format!("DDL job storage unavailable: {e}; retry"))
}

/// How a step went.
enum Outcome {
    /// The step's change and the job's new record were committed together.
    Committed,
    /// A retryable failure: back off and run the step again.
    Retry(JobError),
    /// A failure no retry fixes: the job fails (nothing of it was committed).
    Fail(JobError),
}

impl JobQueue {
    /// Loads the jobs persisted in `engine` (the engine `catalog` lives in).
    pub fn open(
        engine: EngineRef,
        catalog: Arc<LocalCatalog>,
        cfg: DdlConfig,
        reorg: Option<ReorgRef>,
    ) -> Result<Arc<Self>, JobError> {
        let mut inner = Inner::default();
        let mut end = JOB_PREFIX.to_vec();
        *end.last_mut().expect("non-empty") += 1;
        for item in engine.scan(Cf::Meta, JOB_PREFIX, &end, false) {
            let (_, value) = item.map_err(storage_error)?;
            let job: Job = serde_json::from_slice(&value)
                .map_err(|e| JobError::fatal("XX001", format!("corrupt DDL job record: {e}")))?;
            inner.next_id = inner.next_id.max(job.id + 1);
            inner.jobs.insert(job.id, job);
        }
        if let Some(b) = engine
            .get(Cf::Meta, NEXT_JOB_ID_KEY)
            .map_err(storage_error)?
            && let Ok(bytes) = <[u8; 8]>::try_from(b.as_slice())
        {
            inner.next_id = inner.next_id.max(u64::from_be_bytes(bytes));
        }
        inner.next_id = inner.next_id.max(1);
        let (changed, _) = watch::channel(0);
        let leases = SchemaLeases::open(engine.clone(), cfg.schema_lease, cfg.nodes_max)?;
        Ok(Arc::new(Self {
            reorg,
            leases,
            engine,
            catalog,
            cfg,
            inner: Mutex::new(inner),
            writes: Mutex::new(()),
            changed,
            failpoint: AtomicBool::new(false),
            cluster_version: AtomicU32::new(BINARY_CLUSTER_VERSION),
            owner_stop: Mutex::new(None),
        }))
    }

    /// The cluster's version as this queue gates by it.
    pub fn cluster_version(&self) -> ClusterVersion {
        self.cluster_version.load(Ordering::Acquire)
    }

    /// Sets the cluster's version (the meta leader, from its persisted state; it never
    /// lowers it).
    pub fn set_cluster_version(&self, v: ClusterVersion) {
        self.cluster_version.store(v, Ordering::Release);
    }

    /// The queue's bounds.
    pub fn config(&self) -> &DdlConfig {
        &self.cfg
    }

    /// The SQL nodes' schema leases.
    pub fn leases(&self) -> &SchemaLeases {
        &self.leases
    }

    /// Tells lease holders waiting for a new catalog version to look (the catalog changed
    /// outside a job).
    pub fn catalog_changed(&self) {
        self.notify();
    }

    /// Renews `node`'s schema lease with its report, then waits up to `poll` for a catalog
    /// version newer than `loaded` (so nodes learn of a schema change at once). A node
    /// whose build is older than the cluster's version (`binary_version`; `None`: a build
    /// that predates versions) is refused (55000): it would not understand the schema.
    pub async fn renew_lease(
        self: &Arc<Self>,
        node: u64,
        loaded: u64,
        in_use: u64,
        oldest_start_ts: u64,
        binary_version: Option<ClusterVersion>,
        poll: Duration,
    ) -> Result<LeaseGrant, JobError> {
        let cluster = self.cluster_version();
        let binary = version::reported(binary_version);
        if binary < cluster {
            return Err(JobError::fatal(
                "55000",
                version::too_old(&format!("SQL node {node:x}"), binary, cluster),
            ));
        }
        let q = self.clone();
        tokio::task::spawn_blocking(move || {
            q.leases
                .renew(node, loaded, in_use, oldest_start_ts, binary_version)
        })
        .await
        .map_err(|e| JobError::fatal("XX000", format!("lease task failed: {e}")))??;
        let deadline = tokio::time::Instant::now() + poll.min(self.cfg.schema_lease / 2);
        let mut changed = self.changed.subscribe();
        loop {
            let version = self.catalog.snapshot().version;
            if version > loaded
                || tokio::time::timeout_at(deadline, changed.changed())
                    .await
                    .is_err()
            {
                return Ok(LeaseGrant {
                    lease_ms: self.cfg.schema_lease.as_millis() as u64,
                    version: self.catalog.snapshot().version,
                    cluster_version: Some(self.cluster_version()),
                });
            }
        }
    }

    /// While `on`, every step fails retryably (tests of the retry path and of the cap).
    pub fn set_failpoint(&self, on: bool) {
        self.failpoint.store(on, Ordering::Release);
        self.notify();
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Queues `kind`. A submission with the `request_id` of an earlier one (a client's
    /// retry) gets that job back, finished or not; one identical to an active job joins
    /// it. Blocking: persists the job before returning.
    pub fn submit(&self, kind: JobKind, request_id: String) -> Result<Job, JobError> {
        if let Some(feature) = kind.feature() {
            let cluster = self.cluster_version();
            if !feature.active_at(cluster) {
                return Err(JobError::fatal(
                    "0A000",
                    format!(
                        "{} needs cluster version {}, and the cluster is at version {cluster} \
                         until every node runs a build of version {} or newer (`flotilla ctl \
                         version` names the nodes holding it back): finish the upgrade, then \
                         retry",
                        feature.what(),
                        feature.since(),
                        feature.since()
                    ),
                ));
            }
        }
        let _writes = self.writes.lock();
        let inner = self.inner.lock();
        let earlier = inner
            .jobs
            .values()
            .find(|j| !request_id.is_empty() && j.request_id == request_id)
            .or_else(|| {
                inner
                    .jobs
                    .values()
                    .find(|j| j.state.is_active() && !j.cancel_requested && j.kind == kind)
            });
        if let Some(job) = earlier {
            let mut job = job.clone();
            drop(inner);
            job.joined = job.joined.saturating_add(1);
            let mut batch = WriteBatch::new();
            put_job(&mut batch, &job)?;
            self.engine.write(batch, true).map_err(storage_error)?;
            self.inner.lock().jobs.insert(job.id, job.clone());
            return Ok(job);
        }
        let active = inner.jobs.values().filter(|j| j.state.is_active()).count();
        if active >= self.cfg.jobs_max {
            return Err(JobError::retryable(
                "53000",
                format!(
                    "too many DDL jobs: {active} are queued or running (ddl_jobs_max = {}); retry later",
                    self.cfg.jobs_max
                ),
            ));
        }
        let id = inner.next_id;
        let now = now_ms();
        let job = Job {
            id,
            kind,
            state: JobState::Queued,
            attempts: 0,
            error: None,
            created_ms: now,
            updated_ms: now,
            finished_ms: None,
            schema_version: None,
            cancel_requested: false,
            request_id,
            waiting_for_version: None,
            step: 0,
            index_id: None,
            reorg_cursor: None,
            reorg_rows: 0,
            schema_state: String::new(),
            rollback_cause: None,
            joined: 0,
            cleanup: None,
        };
        let mut batch = WriteBatch::new();
        put_job(&mut batch, &job)?;
        batch.put(
            Cf::Meta,
            NEXT_JOB_ID_KEY.to_vec(),
            (id + 1).to_be_bytes().to_vec(),
        );
        drop(inner);
        self.engine.write(batch, true).map_err(storage_error)?;
        let mut inner = self.inner.lock();
        inner.next_id = id + 1;
        inner.jobs.insert(id, job.clone());
        drop(inner);
        self.notify();
        Ok(job)
    }

    /// The job `id`, if its record still exists.
    pub fn get(&self, id: u64) -> Option<Job> {
        self.inner.lock().jobs.get(&id).cloned()
    }

    /// Every job record, oldest first.
    pub fn list(&self) -> Vec<Job> {
        self.inner.lock().jobs.values().cloned().collect()
    }

    /// Waits until job `id` finishes or `timeout` passes; returns its record either way.
    pub async fn wait(&self, id: u64, timeout: Duration) -> Result<Job, JobError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.subscribe();
        loop {
            let job = self.get(id).ok_or_else(|| not_found(id))?;
            if job.is_finished() {
                return Ok(job);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.get(id).ok_or_else(|| not_found(id)),
            }
        }
    }

    /// Cancels job `id` if it has not passed its point of no return: a job waiting for
    /// its turn or backing off is cancelled at once; one whose step is running is
    /// cancelled before its next step (a step that commits first finishes the job).
    /// Blocking.
    pub fn cancel(&self, id: u64) -> Result<Job, JobError> {
        let _writes = self.writes.lock();
        let (mut job, executing) = {
            let inner = self.inner.lock();
            let job = inner.jobs.get(&id).cloned().ok_or_else(|| not_found(id))?;
            (job, inner.executing.contains(&id))
        };
        if job.is_finished() {
            return Err(JobError::fatal(
                "55000",
                format!("DDL job {id} has already finished ({})", job.state.name()),
            ));
        }
        if past_no_return(&job) {
            return Err(JobError::fatal(
                "55000",
                format!(
                    "DDL job {id} has passed its point of no return ({})",
                    job.schema_state
                ),
            ));
        }
        job.updated_ms = now_ms();
        if executing || job.step > 0 {
            // Running, or with changes to roll back: the owner handles it.
            job.cancel_requested = true;
        } else {
            finish(&mut job, JobState::Cancelled, None);
        }
        let mut batch = WriteBatch::new();
        put_job(&mut batch, &job)?;
        self.engine.write(batch, true).map_err(storage_error)?;
        self.inner.lock().jobs.insert(id, job.clone());
        self.notify();
        Ok(job)
    }

    /// Picks the jobs whose step may start now and marks them executing: the oldest
    /// active job of each table (so one table's jobs run one after the other), not
    /// backing off, at most `running_max` at once. Also returns when the next backoff
    /// ends.
    fn pick(&self, now: Instant) -> (Vec<u64>, Option<Instant>) {
        let mut inner = self.inner.lock();
        let mut tables: HashSet<TableId> = HashSet::new();
        let mut start = Vec::new();
        let mut wake: Option<Instant> = None;
        let mut running = inner.executing.len();
        for job in inner.jobs.values().filter(|j| j.state.is_active()) {
            if !tables.insert(job.kind.table_id()) || inner.executing.contains(&job.id) {
                continue;
            }
            if running >= self.cfg.running_max {
                break;
            }
            if let Some(at) = inner.next_attempt.get(&job.id)
                && *at > now
            {
                wake = Some(wake.map_or(*at, |w| w.min(*at)));
                continue;
            }
            start.push(job.id);
            running += 1;
        }
        for id in &start {
            inner.executing.insert(*id);
            inner.next_attempt.remove(id);
        }
        (start, wake)
    }

    /// Runs one step of job `id` and records the outcome (blocking).
    fn step(&self, id: u64) {
        let Some(mut job) = self.get(id) else { return };
        if job.is_finished() {
            return;
        }
        if job.cancel_requested && job.waiting_for_version.is_none() && !past_no_return(&job) {
            if job.step == 0 {
                finish(&mut job, JobState::Cancelled, None);
                self.record(job, None);
                return;
            }
            if job.step < STEP_ROLLBACK {
                // An index job with changes made: undo them first.
                job.step = STEP_ROLLBACK;
            }
        }
        let outcome = if self.failpoint.load(Ordering::Acquire) {
            Outcome::Retry(JobError::retryable(
                "40001",
                "DDL failpoint: the step failed retryably",
            ))
        } else {
            self.run_step(&mut job)
        };
        match outcome {
            Outcome::Committed => {}
            Outcome::Retry(e) => {
                job.attempts += 1;
                // Past its point of no return a job cannot fail: its change is in the
                // catalog. It waits for the SQL nodes until they catch up or lapse.
                if job.attempts > self.cfg.retries_max
                    && job.waiting_for_version.is_none()
                    && job.step == 0
                {
                    let e = JobError::fatal(
                        &e.code,
                        format!("gave up after {} attempts: {}", job.attempts, e.message),
                    );
                    finish(&mut job, JobState::Failed, Some(e));
                    self.record(job, None);
                } else {
                    tracing::info!(job = id, attempt = job.attempts, error = %e, "DDL job step will be retried");
                    let backoff = self.backoff(job.attempts);
                    job.state = JobState::Running;
                    job.error = Some(e);
                    job.updated_ms = now_ms();
                    self.record(job, Some(Instant::now() + backoff));
                }
            }
            Outcome::Fail(e) => {
                finish(&mut job, JobState::Failed, Some(e));
                self.record(job, None);
            }
        }
    }

    /// Runs the job's current step: a schema change committed together with the job's
    /// record, then a wait until every SQL node uses it; or a chunk of backfill.
    fn run_step(&self, job: &mut Job) -> Outcome {
        if let Some(version) = job.waiting_for_version {
            return self.await_nodes(job, version);
        }
        let snapshot = self.catalog.snapshot();
        match job.kind.clone() {
            JobKind::AlterTable {
                table_id,
                table,
                actions,
            } => match apply_alter(&snapshot, table_id, &table, &actions) {
                Ok(Some(changed)) => {
                    self.commit_and_wait(job, snapshot.version, changed, STEP_DONE, "public")
                }
                Ok(None) => self.finish_unchanged(job, snapshot.version),
                Err(e) if e.retryable => Outcome::Retry(e),
                Err(e) => Outcome::Fail(e),
            },
            JobKind::AddIndex {
                table_id,
                table,
                name,
                columns,
                unique,
                primary,
                if_not_exists,
                predicate,
            } => {
                let next = |state: Option<IndexState>| {
                    set_index_state(
                        &snapshot,
                        table_id,
                        &table,
                        job.index_id.unwrap_or(-1),
                        state,
                    )
                };
                let (changed, step, state) = match job.step {
                    0 => {
                        let new = NewIndex {
                            table_id,
                            table: &table,
                            name: &name,
                            columns: &columns,
                            unique,
                            primary,
                            if_not_exists,
                            predicate: predicate.as_ref(),
                        };
                        match plan_add_index(&snapshot, &new) {
                            Ok(Some(t)) => {
                                job.index_id =
                                    t.indexes.iter().find(|i| i.name == name).map(|i| i.id);
                                (Ok(t), 1, "delete-only")
                            }
                            Ok(None) => return self.finish_unchanged(job, snapshot.version),
                            Err(e) => (Err(e), 0, ""),
                        }
                    }
                    1 => (next(Some(IndexState::WriteOnly)), 2, "write-only"),
                    2 => (next(Some(IndexState::WriteReorg)), 3, "write-reorg"),
                    3 => return self.backfill(job, &snapshot, table_id),
                    4 => (next(Some(IndexState::Public)), STEP_DONE, "public"),
                    STEP_ROLLBACK => (
                        next(Some(IndexState::DeleteOnly)),
                        STEP_ROLLBACK + 1,
                        "delete-only (rolling back)",
                    ),
                    _ => {
                        let absent = next(None);
                        // Entries written since write-only, and the backfill's.
                        job.cleanup =
                            index_cleanup(&snapshot, table_id, job.index_id.unwrap_or(-1));
                        (absent, STEP_ROLLED_BACK, "absent (rolled back)")
                    }
                };
                match changed {
                    Ok(t) => self.commit_and_wait(job, snapshot.version, t, step, state),
                    Err(e) if e.retryable => Outcome::Retry(e),
                    Err(e) => Outcome::Fail(e),
                }
            }
            JobKind::CreateTable {
                table,
                if_not_exists,
            } => {
                if job.step == 1 {
                    // Every SQL node now checks the new foreign keys from the referenced
                    // side too: the table's rows may be written.
                    let Some(current) = snapshot.table_by_id(table.id) else {
                        return self.finish_unchanged(job, snapshot.version);
                    };
                    let mut ready = (**current).clone();
                    for fk in &mut ready.foreign_keys {
                        fk.pending = false;
                    }
                    return self.commit_and_wait(job, snapshot.version, ready, STEP_DONE, "public");
                }
                if snapshot.tables.values().any(|t| t.id == table.id) {
                    // This job's own change (a step re-run after a crash).
                    return self.finish_unchanged(job, snapshot.version);
                }
                if snapshot.relation_exists(&table.name) {
                    if if_not_exists {
                        return self.finish_unchanged(job, snapshot.version);
                    }
                    return Outcome::Fail(JobError::fatal(
                        "42P07",
                        format!("relation \"{}\" already exists", table.name),
                    ));
                }
                if let Err(e) = crate::foreign::check_references_exist(&snapshot, &table) {
                    return Outcome::Fail(e);
                }
                if table.foreign_keys.iter().any(|f| f.pending) {
                    return self.commit_and_wait(
                        job,
                        snapshot.version,
                        table,
                        1,
                        "public (foreign keys pending)",
                    );
                }
                self.commit_and_wait(job, snapshot.version, table, STEP_DONE, "public")
            }
            JobKind::DropTable { table_id, table } => {
                if !snapshot.tables.values().any(|t| t.id == table_id) {
                    return if job.step == 0 {
                        Outcome::Fail(JobError::fatal(
                            "42P01",
                            format!("table \"{table}\" does not exist"),
                        ))
                    } else {
                        self.finish_unchanged(job, snapshot.version)
                    };
                }
                let change = SchemaChange {
                    base_version: snapshot.version,
                    drops: vec![table_id],
                    ..SchemaChange::default()
                };
                if let Some(t) = snapshot.table_by_id(table_id)
                    && let Err(e) = crate::foreign::check_drop_table(&snapshot, t)
                {
                    return Outcome::Fail(e);
                }
                if let Some(t) = snapshot.tables.values().find(|t| t.id == table_id) {
                    job.cleanup = Some(Cleanup::of(vec![DataRange::Table {
                        storage_id: t.storage_id,
                    }]));
                }
                self.commit_change_and_wait(job, change, STEP_DONE, "absent")
            }
            JobKind::Truncate {
                table_id,
                table,
                storage_id,
            } => {
                let Some(current) = snapshot.tables.values().find(|t| t.id == table_id) else {
                    return Outcome::Fail(JobError::fatal(
                        "42P01",
                        format!("relation \"{table}\" does not exist"),
                    ));
                };
                if current.storage_id == storage_id {
                    return self.finish_unchanged(job, snapshot.version);
                }
                if let Err(e) = crate::foreign::check_truncate(&snapshot, current) {
                    return Outcome::Fail(e);
                }
                // The rows stored under the old storage id are unreachable once no SQL
                // node uses the version before.
                job.cleanup = Some(Cleanup::of(vec![DataRange::Table {
                    storage_id: current.storage_id,
                }]));
                let mut moved = (**current).clone();
                moved.storage_id = storage_id;
                self.commit_and_wait(job, snapshot.version, moved, STEP_DONE, "public")
            }
            JobKind::AddCheck {
                table_id,
                table,
                check,
                column_names,
                validate,
            } => self.add_constraint_step::<CheckDef>(
                job,
                &snapshot,
                (table_id, &table, &check.name),
                (validate, None),
                || plan_add_check(&snapshot, table_id, &table, &check, &column_names),
                &|queue, job, check| queue.check_rows(job, &snapshot, table_id, check, 2, None),
            ),
            JobKind::ValidateCheck {
                table_id,
                table,
                name,
            } => self.validate_constraint_step::<CheckDef>(
                job,
                &snapshot,
                (table_id, &table, &name),
                &|queue, job, check| queue.check_rows(job, &snapshot, table_id, check, 1, None),
            ),
            JobKind::AddForeignKey {
                table_id,
                table,
                fk,
                validate,
                column,
            } => self.add_constraint_step::<ForeignKeyDef>(
                job,
                &snapshot,
                (table_id, &table, &fk.name),
                (validate, column.as_ref().map(|c| c.name.as_str())),
                || plan_add_foreign_key(&snapshot, table_id, &table, &fk, column.as_ref()),
                &|queue, job, fk| queue.check_references(job, &snapshot, table_id, fk, 2),
            ),
            JobKind::ValidateForeignKey {
                table_id,
                table,
                name,
            } => self.validate_constraint_step::<ForeignKeyDef>(
                job,
                &snapshot,
                (table_id, &table, &name),
                &|queue, job, fk| queue.check_references(job, &snapshot, table_id, fk, 1),
            ),
            JobKind::SetNotNull {
                table_id,
                table,
                column_id,
                column,
            } => {
                let step =
                    |s| set_not_null_step(&snapshot, table_id, &table, column_id, &column, s);
                let changed = match job.step {
                    0 => step(NotNullStep::Enforce).map(|t| (t, 1, "write-only (validating)")),
                    1 => {
                        return match not_null_check(&snapshot, table_id, &table, column_id) {
                            Ok(check) => {
                                let found = nulls_found(&table, &column);
                                self.check_rows(job, &snapshot, table_id, check, 2, Some(found))
                            }
                            Err(e) => Outcome::Fail(e),
                        };
                    }
                    2 => step(NotNullStep::Validated).map(|t| (t, STEP_DONE, "public")),
                    STEP_ROLLBACK => step(NotNullStep::Rollback)
                        .map(|t| (t, STEP_ROLLED_BACK, "nullable (rolled back)")),
                    _ => return self.end_unchanged(job, snapshot.version),
                };
                self.commit_or_end(job, snapshot.version, changed)
            }
            JobKind::DropIndex {
                table_id,
                table,
                name,
            } => {
                if job.step == 0 {
                    match index_to_drop(&snapshot, table_id, &table, &name) {
                        Ok(index) => job.index_id = Some(index.id),
                        Err(e) => return Outcome::Fail(e),
                    }
                    if let (Some(t), Some(id)) = (snapshot.table_by_id(table_id), job.index_id)
                        && let Err(e) = crate::foreign::check_drop_index(&snapshot, t, id, &name)
                    {
                        return Outcome::Fail(e);
                    }
                }
                let id = job.index_id.unwrap_or(-1);
                let (state, step, name) = match job.step {
                    0 => (Some(IndexState::WriteOnly), 1, "write-only"),
                    1 => (Some(IndexState::DeleteOnly), 2, "delete-only"),
                    _ => {
                        job.cleanup = index_cleanup(&snapshot, table_id, id);
                        (None, STEP_DONE, "absent")
                    }
                };
                match set_index_state(&snapshot, table_id, &table, id, state) {
                    Ok(t) => self.commit_and_wait(job, snapshot.version, t, step, name),
                    Err(e) => Outcome::Fail(e),
                }
            }
        }
    }

    /// A step of a job adding constraint `name` (of kind `C`) to table `table_id`
    /// (ADD CHECK, ADD FOREIGN KEY): step 0 commits what `plan` makes of the table (the
    /// constraint enforced, not validated), then stops there if not `validate`; step 1
    /// scans the rows with `scan`; step 2 marks it validated. A rollback removes it, and
    /// `column`, the column `plan` added with it (ADD COLUMN ... REFERENCES).
    fn add_constraint_step<C: Validated>(
        &self,
        job: &mut Job,
        snapshot: &flotilla_catalog::CatalogSnapshot,
        (table_id, table, name): (TableId, &str, &str),
        (validate, column): (bool, Option<&str>),
        plan: impl FnOnce() -> Result<TableDef, JobError>,
        scan: &ConstraintScan<'_, C>,
    ) -> Outcome {
        let changed = match job.step {
            0 => {
                let (next, state) = if validate {
                    (1, "write-only (validating)")
                } else {
                    (STEP_DONE, "public (not valid)")
                };
                plan().map(|t| (Some(t), next, state))
            }
            1 => {
                return match find_constraint::<C>(snapshot, table_id, table, name) {
                    Ok(c) => scan(self, job, c),
                    Err(e) => Outcome::Fail(e),
                };
            }
            2 => set_validated::<C>(snapshot, table_id, table, name)
                .map(|t| (t, STEP_DONE, "public")),
            STEP_ROLLBACK => remove_constraint::<C>(snapshot, table_id, table, name, column)
                .map(|t| (t, STEP_ROLLED_BACK, "absent (rolled back)")),
            _ => return self.end_unchanged(job, snapshot.version),
        };
        self.commit_or_end(job, snapshot.version, changed)
    }

    /// A step of VALIDATE CONSTRAINT of `name` (of kind `C`): step 0 scans the rows with
    /// `scan` (nothing to do if it is validated), step 1 marks it validated. A row that
    /// breaks it, or a cancel, leaves it as it was.
    fn validate_constraint_step<C: Validated>(
        &self,
        job: &mut Job,
        snapshot: &flotilla_catalog::CatalogSnapshot,
        (table_id, table, name): (TableId, &str, &str),
        scan: &ConstraintScan<'_, C>,
    ) -> Outcome {
        let changed = match job.step {
            0 => {
                return match find_constraint::<C>(snapshot, table_id, table, name) {
                    Ok(c) if c.is_validated() => self.finish_unchanged(job, snapshot.version),
                    Ok(c) => scan(self, job, c),
                    Err(e) => Outcome::Fail(e),
                };
            }
            1 => set_validated::<C>(snapshot, table_id, table, name)
                .map(|t| (t, STEP_DONE, "public")),
            _ => return self.end_unchanged(job, snapshot.version),
        };
        self.commit_or_end(job, snapshot.version, changed)
    }

    /// Ends a job whose change was already there (IF [NOT] EXISTS): nothing to wait for.
    fn finish_unchanged(&self, job: &mut Job, version: u64) -> Outcome {
        let mut done = job.clone();
        done.schema_version = Some(version);
        finish(&mut done, JobState::Done, None);
        match self.write_record(done) {
            Ok(()) => Outcome::Committed,
            Err(e) => Outcome::Retry(e),
        }
    }

    /// Ends a rolled-back (or cancelled) job whose rollback has nothing left to change:
    /// failed with its cause, or cancelled.
    fn end_unchanged(&self, job: &mut Job, version: u64) -> Outcome {
        job.step = STEP_ROLLED_BACK;
        self.await_nodes(job, version)
    }

    /// The end of a constraint job's step: its change committed (moving the job to the
    /// step given with it), the job finished when there was nothing to change, or the
    /// step's error.
    fn commit_or_end(
        &self,
        job: &mut Job,
        base_version: u64,
        changed: Result<(Option<TableDef>, u32, &str), JobError>,
    ) -> Outcome {
        match changed {
            Ok((Some(t), step, state)) => self.commit_and_wait(job, base_version, t, step, state),
            Ok((None, STEP_ROLLED_BACK, _)) => self.end_unchanged(job, base_version),
            Ok((None, _, _)) => self.finish_unchanged(job, base_version),
            Err(e) if e.retryable => Outcome::Retry(e),
            Err(e) => Outcome::Fail(e),
        }
    }

    /// Commits `table` as the next schema version together with the job's record (moved
    /// to `next_step`), then waits for every SQL node to use that version.
    fn commit_and_wait(
        &self,
        job: &mut Job,
        base_version: u64,
        table: TableDef,
        next_step: u32,
        state: &str,
    ) -> Outcome {
        let change = SchemaChange {
            base_version,
            upserts: vec![table],
            ..SchemaChange::default()
        };
        self.commit_change_and_wait(job, change, next_step, state)
    }

    /// Commits `change` together with the job's record (moved to `next_step`), then waits
    /// for every SQL node to use the new version.
    fn commit_change_and_wait(
        &self,
        job: &mut Job,
        change: SchemaChange,
        next_step: u32,
        state: &str,
    ) -> Outcome {
        let version = change.base_version + 1;
        let mut next = job.clone();
        next.state = JobState::Running;
        // The error of a failed attempt is history now.
        next.error = None;
        next.waiting_for_version = Some(version);
        next.step = next_step;
        next.schema_state = state.to_string();
        next.updated_ms = now_ms();
        let writes = self.writes.lock();
        match self.inner.lock().jobs.get(&job.id) {
            // Cancelled (or removed) meanwhile: its change must not be made.
            Some(current) if current.is_finished() => return Outcome::Committed,
            None => return Outcome::Committed,
            Some(current) => carry_over(&mut next, current),
        }
        let mut batch = WriteBatch::new();
        if let Err(e) = put_job(&mut batch, &next) {
            return Outcome::Retry(e);
        }
        match self.catalog.commit_with(change, batch) {
            Ok(_) => {}
            Err(e @ CatalogError::Invalid(_)) if job.step == 0 => {
                return Outcome::Fail(catalog_error(e));
            }
            Err(e) => return Outcome::Retry(catalog_error(e)),
        }
        install(&mut self.inner.lock(), next.clone(), vec![]);
        drop(writes);
        self.notify();
        *job = next;
        self.await_nodes(job, version)
    }

    /// Waits for every SQL node to use `version`; then the job goes on to its next step,
    /// or ends.
    fn await_nodes(&self, job: &mut Job, version: u64) -> Outcome {
        if let Err(e) = self.leases.wait_for(version, self.cfg.schema_wait_timeout) {
            return Outcome::Retry(e);
        }
        let mut next = job.clone();
        next.waiting_for_version = None;
        next.attempts = 0;
        match next.step {
            STEP_DONE => {
                next.schema_version = Some(version);
                finish(&mut next, JobState::Done, None);
            }
            STEP_ROLLED_BACK => {
                let cause = next.rollback_cause.take();
                let state = if cause.is_some() {
                    JobState::Failed
                } else {
                    JobState::Cancelled
                };
                finish(&mut next, state, cause);
            }
            _ => next.updated_ms = now_ms(),
        }
        match self.write_record(next.clone()) {
            Ok(()) => {
                *job = next;
                Outcome::Committed
            }
            Err(e) => Outcome::Retry(e),
        }
    }

    /// The write-reorg step: backfills chunk after chunk from the job's checkpoint,
    /// persisting it after each, at the configured rate, for up to `REORG_STEP_BUDGET`.
    fn backfill(
        &self,
        job: &mut Job,
        snapshot: &flotilla_catalog::CatalogSnapshot,
        table_id: i64,
    ) -> Outcome {
        let Some(reorg) = &self.reorg else {
            job.rollback_cause = Some(JobError::fatal(
                "0A000",
                "this DDL owner cannot backfill indexes (no reorg worker)",
            ));
            job.step = STEP_ROLLBACK;
            return self.save_progress(job);
        };
        let Some(table) = snapshot.tables.values().find(|t| t.id == table_id).cloned() else {
            return Outcome::Fail(JobError::fatal(
                "42P01",
                format!("relation \"{}\" does not exist", job.kind.table_name()),
            ));
        };
        let Some(index) = table
            .indexes
            .iter()
            .find(|i| Some(i.id) == job.index_id)
            .cloned()
        else {
            return Outcome::Fail(JobError::fatal(
                "XX000",
                "the index vanished during its backfill",
            ));
        };
        at_background_priority(|| {
            self.scan_chunks(job, "write-reorg", "backfilled", 4, &|cursor| {
                reorg.backfill_chunk(&table, &index, cursor)
            })
        })
    }

    /// The validation scan of a CHECK constraint's job: chunk after chunk from the job's
    /// checkpoint, as `backfill`; `done_step` follows it. A row that makes `check` false
    /// fails the job with `violation` if given, else with the check's own error.
    fn check_rows(
        &self,
        job: &mut Job,
        snapshot: &flotilla_catalog::CatalogSnapshot,
        table_id: i64,
        check: CheckDef,
        done_step: u32,
        violation: Option<JobError>,
    ) -> Outcome {
        self.validate_rows(
            job,
            snapshot,
            table_id,
            done_step,
            &|reorg, table, cursor| {
                reorg
                    .check_chunk(table, &check, cursor)
                    .map_err(|e| match &violation {
                        Some(v) if !e.retryable && e.code == "23514" => v.clone(),
                        _ => e,
                    })
            },
        )
    }

    /// The validation scan of a FOREIGN KEY's job, as `check_rows`: every row must find
    /// the row `fk` references.
    fn check_references(
        &self,
        job: &mut Job,
        snapshot: &flotilla_catalog::CatalogSnapshot,
        table_id: i64,
        fk: ForeignKeyDef,
        done_step: u32,
    ) -> Outcome {
        self.validate_rows(
            job,
            snapshot,
            table_id,
            done_step,
            &|reorg, table, cursor| {
                let parent = snapshot.referenced_table(table, &fk).ok_or_else(|| {
                JobError::fatal(
                    "42P01",
                    format!(
                        "the table referenced by foreign key constraint \"{}\" no longer exists",
                        fk.name
                    ),
                )
            })?;
                reorg.foreign_key_chunk(table, &fk, parent, cursor)
            },
        )
    }

    /// The scan of `check_rows` and `check_references`: `chunk` with the reorg worker
    /// and the table as `snapshot` has it.
    fn validate_rows(
        &self,
        job: &mut Job,
        snapshot: &flotilla_catalog::CatalogSnapshot,
        table_id: i64,
        done_step: u32,
        chunk: &ValidateChunk<'_>,
    ) -> Outcome {
        let Some(reorg) = &self.reorg else {
            job.rollback_cause = Some(JobError::fatal(
                "0A000",
                "this DDL owner cannot validate constraints (no reorg worker)",
            ));
            job.step = STEP_ROLLBACK;
            return self.save_progress(job);
        };
        let table_name = job.kind.table_name().to_string();
        let Some(table) = snapshot.tables.values().find(|t| t.id == table_id).cloned() else {
            return Outcome::Fail(JobError::fatal(
                "42P01",
                format!("relation \"{table_name}\" does not exist"),
            ));
        };
        at_background_priority(|| {
            self.scan_chunks(job, "validating", "checked", done_step, &|cursor| {
                chunk(reorg.as_ref(), &table, cursor)
            })
        })
    }

    /// The loop of a job's scan over a table's rows (`backfill`, `check_rows`): `chunk`
    /// after chunk from the job's checkpoint, persisting it after each, at the configured
    /// rate, for up to `REORG_STEP_BUDGET`. Done, the job moves to `done_step`; a fatal
    /// error from a chunk (a duplicate key, a row that breaks a constraint) rolls it back.
    fn scan_chunks(
        &self,
        job: &mut Job,
        state: &str,
        verb: &str,
        done_step: u32,
        chunk: &ScanChunk<'_>,
    ) -> Outcome {
        let started = Instant::now();
        loop {
            if self.owner_stopped() {
                // The checkpoint is saved: the next owner resumes from it.
                return Outcome::Committed;
            }
            if self
                .inner
                .lock()
                .jobs
                .get(&job.id)
                .is_some_and(|j| j.cancel_requested)
            {
                job.cancel_requested = true;
                job.step = STEP_ROLLBACK;
                return self.save_progress(job);
            }
            let chunk_started = Instant::now();
            match chunk(job.reorg_cursor.as_deref()) {
                Ok((next, rows)) => {
                    job.reorg_rows += rows;
                    job.reorg_cursor = next.clone();
                    job.error = None;
                    job.schema_state = format!("{state} ({} rows {verb})", job.reorg_rows);
                    if next.is_none() {
                        job.step = done_step;
                        return self.save_progress(job);
                    }
                    if let Outcome::Retry(e) = self.save_checkpoint(job) {
                        return Outcome::Retry(e);
                    }
                    pace(chunk_started, rows, self.cfg.backfill_rows_per_s);
                    if started.elapsed() >= REORG_STEP_BUDGET {
                        return Outcome::Committed;
                    }
                }
                Err(e) if e.retryable => return Outcome::Retry(e),
                Err(e) => {
                    // A duplicate or a NULL key, or a row that breaks the constraint: the
                    // change cannot be made. Roll back.
                    job.rollback_cause = Some(e);
                    job.error = None;
                    job.step = STEP_ROLLBACK;
                    return self.save_progress(job);
                }
            }
        }
    }

    /// Persists a running job's progress (its checkpoint, its next step).
    fn save_progress(&self, job: &mut Job) -> Outcome {
        job.updated_ms = now_ms();
        match self.write_record(job.clone()) {
            Ok(()) => Outcome::Committed,
            Err(e) => Outcome::Retry(e),
        }
    }

    /// Persists a backfill's checkpoint without waiting for an fsync: a checkpoint lost
    /// in a crash only means chunks backfilled again (ingesting a chunk twice is
    /// harmless), and the chunk's own write is durable already. Half the fsyncs of a
    /// chunk, which bound an unthrottled backfill on a slow disk.
    fn save_checkpoint(&self, job: &mut Job) -> Outcome {
        job.updated_ms = now_ms();
        match self.write_record_synced(job.clone(), false) {
            Ok(()) => Outcome::Committed,
            Err(e) => Outcome::Retry(e),
        }
    }

    /// Writes a finished job's record (removing expired ones) and installs it.
    fn write_record(&self, job: Job) -> Result<(), JobError> {
        self.write_record_synced(job, true)
    }

    /// `write_record`, durable before it returns when `sync`.
    fn write_record_synced(&self, mut job: Job, sync: bool) -> Result<(), JobError> {
        let writes = self.writes.lock();
        let removed = {
            let inner = self.inner.lock();
            match inner.jobs.get(&job.id) {
                // Cancelled meanwhile: that record stands.
                Some(current) if current.is_finished() => return Ok(()),
                None => return Ok(()),
                Some(current) => carry_over(&mut job, current),
            }
            self.expired(&inner, Some(job.id))
        };
        let mut batch = WriteBatch::new();
        for id in &removed {
            batch.delete(Cf::Meta, job_key(*id));
        }
        put_job(&mut batch, &job)?;
        self.engine.write(batch, sync).map_err(storage_error)?;
        install(&mut self.inner.lock(), job, removed);
        drop(writes);
        self.notify();
        Ok(())
    }

    /// Writes `job`'s record (and removes expired ones), then installs it; `retry_at`
    /// schedules its next attempt. A failed write leaves the job as it was: the owner
    /// runs the step again later (steps are idempotent).
    fn record(&self, mut job: Job, retry_at: Option<Instant>) {
        let writes = self.writes.lock();
        let removed = {
            let inner = self.inner.lock();
            match inner.jobs.get(&job.id) {
                // Cancelled meanwhile: that record stands.
                Some(current) if current.is_finished() => return,
                None => return,
                // A cancellation asked while the step ran must survive this rewrite.
                Some(current) => carry_over(&mut job, current),
            }
            self.expired(&inner, Some(job.id))
        };
        let mut batch = WriteBatch::new();
        for id in &removed {
            batch.delete(Cf::Meta, job_key(*id));
        }
        let id = job.id;
        let written = put_job(&mut batch, &job)
            .and_then(|()| self.engine.write(batch, true).map_err(storage_error));
        let mut inner = self.inner.lock();
        if let Err(e) = written {
            tracing::warn!(job = id, "recording a DDL job failed: {e}");
            let at = Instant::now() + self.cfg.retry_backoff_max;
            inner.next_attempt.insert(id, at);
            return;
        }
        if let Some(at) = retry_at {
            inner.next_attempt.insert(id, at);
        }
        install(&mut inner, job, removed);
        drop(inner);
        drop(writes);
        self.notify();
    }

    /// Finished records to remove: older than the TTL, or the oldest past
    /// `finished_max` (`keep` is about to be rewritten and is never removed).
    fn expired(&self, inner: &Inner, keep: Option<u64>) -> Vec<u64> {
        let now = now_ms();
        let ttl_ms = self.cfg.finished_ttl.as_millis() as u64;
        let finished: Vec<&Job> = inner
            .jobs
            .values()
            // A record with data left to delete stays until the data is gone.
            .filter(|j| j.is_finished() && !j.cleanup_pending() && Some(j.id) != keep)
            .collect();
        let excess = finished.len().saturating_sub(self.cfg.finished_max);
        finished
            .iter()
            .enumerate()
            .filter(|(i, j)| {
                *i < excess || j.finished_ms.unwrap_or(0).saturating_add(ttl_ms) <= now
            })
            .map(|(_, j)| j.id)
            .collect()
    }

    /// Deletes the data finished jobs left unreachable, oldest job first, chunk by chunk
    /// at `cleanup_records_per_s`, persisting the cursor after each chunk, for up to
    /// `REORG_STEP_BUDGET` (blocking; the owner calls it again while data is left). A
    /// failure is logged and the chunk is tried again on the next call.
    fn clean_up(&self) {
        let Some(reorg) = &self.reorg else { return };
        let started = Instant::now();
        while started.elapsed() < REORG_STEP_BUDGET && !self.owner_stopped() {
            let pending = self
                .inner
                .lock()
                .jobs
                .values()
                .find(|j| j.cleanup_pending())
                .cloned();
            let Some(job) = pending else { return };
            let mut cleanup = job.cleanup.clone().expect("pending");
            let chunk_started = Instant::now();
            match reorg.delete_range_chunk(
                &cleanup.ranges[0],
                cleanup.cursor.as_deref(),
                CLEANUP_CHUNK_RECORDS,
            ) {
                Ok(Some(next)) => cleanup.cursor = Some(next),
                Ok(None) => {
                    cleanup.ranges.remove(0);
                    cleanup.cursor = None;
                }
                Err(e) => {
                    tracing::warn!(
                        job = job.id,
                        "deleting dropped data failed; will retry: {e}"
                    );
                    return;
                }
            }
            if let Err(e) = self.save_cleanup(job.id, cleanup) {
                tracing::warn!(job = job.id, "recording a deletion's progress failed: {e}");
                return;
            }
            pace(
                chunk_started,
                CLEANUP_CHUNK_RECORDS as u64,
                self.cfg.cleanup_records_per_s,
            );
        }
    }

    /// Whether a finished job has data left to delete.
    fn cleanup_pending(&self) -> bool {
        self.inner.lock().jobs.values().any(Job::cleanup_pending)
    }

    /// Persists a deletion's progress in its job's record, without waiting for an fsync:
    /// a cursor lost in a crash only means a chunk deleted again.
    fn save_cleanup(&self, id: u64, cleanup: Cleanup) -> Result<(), JobError> {
        let _writes = self.writes.lock();
        let Some(mut job) = self.get(id) else {
            return Ok(());
        };
        job.cleanup = Some(cleanup);
        let mut batch = WriteBatch::new();
        put_job(&mut batch, &job)?;
        self.engine.write(batch, false).map_err(storage_error)?;
        self.inner.lock().jobs.insert(id, job);
        drop(_writes);
        self.notify();
        Ok(())
    }

    /// Removes expired finished records (blocking).
    fn collect_garbage(&self) {
        let _writes = self.writes.lock();
        let removed = {
            let inner = self.inner.lock();
            self.expired(&inner, None)
        };
        if removed.is_empty() {
            return;
        }
        let mut batch = WriteBatch::new();
        for id in &removed {
            batch.delete(Cf::Meta, job_key(*id));
        }
        if let Err(e) = self.engine.write(batch, true) {
            tracing::warn!("removing expired DDL job records failed: {e}");
            return;
        }
        let mut inner = self.inner.lock();
        for id in removed {
            inner.jobs.remove(&id);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .cfg
            .retry_backoff_min
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.cfg.retry_backoff_max);
        // Full jitter on the upper half, so retries of many jobs do not march in step.
        let half = capped / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    fn done_executing(&self, id: u64) {
        self.inner.lock().executing.remove(&id);
        self.notify();
    }

    /// Runs jobs until `stop` turns true: the owner. There must be one owner per queue
    /// (the standalone process, or the meta leader for its term). Returns once the steps
    /// and the deletion it started have ended too, each at its next chunk at most.
    pub async fn run_owner(self: Arc<Self>, stop: watch::Receiver<bool>) {
        assert!(
            self.owner_stop.lock().replace(stop.clone()).is_none(),
            "a DDL job queue has one owner in its life"
        );
        let (mut steps, cleaning) = self.clone().own(stop).await;
        // The blocking work below the steps' tasks keeps running when they are dropped:
        // wait for it, so the owner's end is the end of its work.
        while steps.join_next().await.is_some() {}
        if let Some(cleaning) = cleaning {
            let _ = cleaning.await;
        }
    }

    /// Whether the owner was told to stop (or its stop signal is gone). Read by the blocking
    /// work between chunks, the moment the signal is sent: not when the owner's task next
    /// runs.
    fn owner_stopped(&self) -> bool {
        self.owner_stop
            .lock()
            .as_ref()
            .is_some_and(|stop| *stop.borrow() || stop.has_changed().is_err())
    }

    /// The owner's loop, until `stop`: returns the steps and the deletion still running.
    async fn own(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> (
        tokio::task::JoinSet<()>,
        Option<tokio::task::JoinHandle<()>>,
    ) {
        let mut changed = self.changed.subscribe();
        let mut steps = tokio::task::JoinSet::new();
        let gc_every = Duration::from_secs(1);
        let mut next_gc = Instant::now() + gc_every;
        // The deletion of dropped data: one task at a time, started at the GC ticks.
        let mut cleaning: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            if *stop.borrow() {
                return (steps, cleaning);
            }
            let now = Instant::now();
            let (start, wake) = self.pick(now);
            for id in start {
                let q = self.clone();
                steps.spawn(async move {
                    let worker = q.clone();
                    let _ = tokio::task::spawn_blocking(move || worker.step(id)).await;
                    q.done_executing(id);
                });
            }
            if now >= next_gc {
                let q = self.clone();
                let _ = tokio::task::spawn_blocking(move || q.collect_garbage()).await;
                next_gc = Instant::now() + gc_every;
                if cleaning.as_ref().is_none_or(|h| h.is_finished()) && self.cleanup_pending() {
                    let q = self.clone();
                    cleaning = Some(tokio::task::spawn_blocking(move || {
                        at_background_priority(|| q.clean_up())
                    }));
                }
            }
            let until = wake.map_or(next_gc, |w| w.min(next_gc));
            tokio::select! {
                _ = stop.changed() => {}
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(until.into()) => {}
                Some(_) = steps.join_next(), if !steps.is_empty() => {}
            }
        }
    }
}

/// Past its point of no return a job can no longer be cancelled: its change is (or is
/// about to be) public.
fn past_no_return(job: &Job) -> bool {
    match job.kind {
        JobKind::AlterTable { .. } => job.waiting_for_version.is_some(),
        JobKind::AddIndex { .. } => (4..STEP_ROLLBACK).contains(&job.step) || job.step == STEP_DONE,
        JobKind::DropIndex { .. } => job.step > 0,
        JobKind::AddCheck { .. } | JobKind::AddForeignKey { .. } => {
            job.step == 2 || job.step == STEP_DONE
        }
        JobKind::ValidateCheck { .. } | JobKind::ValidateForeignKey { .. } => {
            job.step == 1 || job.step == STEP_DONE
        }
        JobKind::SetNotNull { .. } => job.step == 2 || job.step == STEP_DONE,
        JobKind::CreateTable { .. } | JobKind::DropTable { .. } | JobKind::Truncate { .. } => {
            job.waiting_for_version.is_some()
        }
    }
}

fn install(inner: &mut Inner, job: Job, removed: Vec<u64>) {
    for id in removed {
        inner.jobs.remove(&id);
    }
    inner.jobs.insert(job.id, job);
}

fn not_found(id: u64) -> JobError {
    JobError::fatal("42704", format!("DDL job {id} does not exist"))
}

fn finish(job: &mut Job, state: JobState, error: Option<JobError>) {
    let now = now_ms();
    job.state = state;
    job.error = error;
    job.updated_ms = now;
    job.finished_ms = Some(now);
}

/// Sleeps as long as a chunk of `units` begun at `started` must take at `per_s` units
/// per second at most (0: no limit).
fn pace(started: Instant, units: u64, per_s: u64) {
    if per_s == 0 {
        return;
    }
    let due = Duration::from_secs_f64(units as f64 / per_s as f64);
    let spent = started.elapsed();
    if due > spent {
        std::thread::sleep(due - spent);
    }
}

/// The deletion of index `index_id`'s entries, stored under its table's storage id.
fn index_cleanup(
    snapshot: &flotilla_catalog::CatalogSnapshot,
    table_id: TableId,
    index_id: i64,
) -> Option<Cleanup> {
    let table = snapshot.tables.values().find(|t| t.id == table_id)?;
    Some(Cleanup::of(vec![DataRange::Index {
        storage_id: table.storage_id,
        index_id,
    }]))
}

/// What a step's rewrite of `job` must keep of the `current` record: changes made by
/// others while the step ran (a cancellation asked, submissions joined).
fn carry_over(job: &mut Job, current: &Job) {
    job.cancel_requested |= current.cancel_requested;
    job.joined = job.joined.max(current.joined);
}

fn put_job(batch: &mut WriteBatch, job: &Job) -> Result<(), JobError> {
    let bytes = serde_json::to_vec(job)
        .map_err(|e| JobError::fatal("XX000", format!("encoding a DDL job: {e}")))?;
    batch.put(Cf::Meta, job_key(job.id), bytes);
    Ok(())
}

/// A catalog error met by a step: invalid changes fail the job, anything else (a
/// concurrent change, an unavailable or failing store) is retried.
fn catalog_error(e: CatalogError) -> JobError {
    let code = e.sqlstate();
    match e {
        CatalogError::Invalid(m) => JobError::fatal(code, m),
        other => JobError::retryable("40001", other.to_string()),
    }
}

/// Runs `work` on a thread of its own at the lowest CPU priority (nice 19 on Linux), so
/// that the backfill's own reading and encoding of rows yields the CPU to foreground
/// statements. The work done for it elsewhere (its storage writes, flushed and compacted
/// by the engine's threads; a cluster's RPCs) keeps its priority, and that is most of
/// what a backfill costs the foreground (BENCHMARKS.md): the rate limit bounds it.
fn at_background_priority<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("ddl-backfill".into())
            .spawn_scoped(scope, || {
                lower_this_threads_priority();
                work()
            })
            .expect("the OS refused a thread for the backfill");
        match worker.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Sets the calling thread's nice value to 19 (Linux keeps one per thread).
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers.
        let failed = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0
        };
        if failed {
            tracing::warn!("the backfill thread runs at normal priority: setpriority failed");
        }
    }
}
