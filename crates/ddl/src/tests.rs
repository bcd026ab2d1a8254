use std::sync::Arc;
use std::time::Duration;

use flotilla_catalog::{Catalog, ColumnDef, Handle, LocalCatalog, SchemaChange, SqlType, TableDef};
use flotilla_storage::{EngineRef, FjallEngine, FjallOptions, SyncPolicy};

use crate::{AlterAction, ColumnSpec, DdlConfig, DdlJobs, JobKind, JobQueue, JobState, LocalDdl};

const WAIT: Duration = Duration::from_secs(20);

/// The version a node of this build reports.
const NEW: Option<u32> = Some(flotilla_types::version::BINARY_CLUSTER_VERSION);

fn engine(dir: &std::path::Path) -> EngineRef {
    Arc::new(
        FjallEngine::open(
            dir,
            &FjallOptions {
                sync_policy: SyncPolicy::Buffered,
                ..FjallOptions::default()
            },
        )
        .unwrap(),
    )
}

fn table(id: i64, name: &str) -> TableDef {
    TableDef {
        id,
        storage_id: id,
        name: name.into(),
        columns: vec![ColumnDef {
            id: 0,
            name: "ts".into(),
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
    }
}

/// A catalog holding tables `t1`..`tN` (ids 1..=N).
fn catalog(engine: &EngineRef, tables: i64) -> Arc<LocalCatalog> {
    let catalog = Arc::new(LocalCatalog::open(engine.clone()).unwrap());
    if catalog.snapshot().tables.is_empty() {
        catalog
            .commit(SchemaChange {
                base_version: 0,
                upserts: (1..=tables).map(|i| table(i, &format!("t{i}"))).collect(),
                ..SchemaChange::default()
            })
            .unwrap();
    }
    catalog
}

fn add(table_id: i64, columns: &[&str]) -> JobKind {
    JobKind::AlterTable {
        table_id,
        table: format!("t{table_id}"),
        actions: columns
            .iter()
            .map(|c| AlterAction::AddColumn {
                column: ColumnSpec {
                    name: c.to_string(),
                    ty: SqlType::Int32,
                    nullable: true,
                    default: None,
                    origin_default: None,
                },
                if_not_exists: false,
            })
            .collect(),
    }
}

fn columns(catalog: &LocalCatalog, table: &str) -> Vec<String> {
    catalog
        .snapshot()
        .table(table)
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

fn fast_retries() -> DdlConfig {
    DdlConfig {
        retry_backoff_min: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(20),
        ..DdlConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_statement_fails_whole_and_a_good_one_applies_whole() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let ddl = LocalDdl::start(
        JobQueue::open(engine, catalog.clone(), DdlConfig::default(), None).unwrap(),
    );
    // ORIGINS.md §1: `ts` exists, so the whole statement fails and adds nothing.
    let bad = ddl.submit(add(1, &["a", "ts"]), "r1".into()).await.unwrap();
    let bad = ddl.wait(bad.id, WAIT).await.unwrap();
    assert_eq!(bad.state, JobState::Failed);
    assert_eq!(bad.error.as_ref().unwrap().code, "42701");
    assert_eq!(columns(&catalog, "t1"), ["ts"]);
    let good = ddl.submit(add(1, &["c", "d"]), "r2".into()).await.unwrap();
    let good = ddl.wait(good.id, WAIT).await.unwrap();
    assert_eq!(good.state, JobState::Done, "{good:?}");
    assert_eq!(good.schema_version, Some(catalog.snapshot().version));
    assert_eq!(columns(&catalog, "t1"), ["ts", "c", "d"]);
    // A client's retry of the same submission gets the finished job back, not a second
    // job that would fail with "already exists".
    let again = ddl.submit(add(1, &["c", "d"]), "r2".into()).await.unwrap();
    assert_eq!(again.id, good.id);
    assert_eq!(again.state, JobState::Done);
    assert_eq!(columns(&catalog, "t1"), ["ts", "c", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_refuses_the_excess_and_frees_up_when_jobs_finish() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 20);
    let cfg = DdlConfig {
        jobs_max: 8,
        ..fast_retries()
    };
    let queue = JobQueue::open(engine, catalog.clone(), cfg, None).unwrap();
    queue.set_failpoint(true);
    let ddl = LocalDdl::start(queue.clone());
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 1..=20 {
        match ddl.submit(add(i, &["x"]), format!("flood-{i}")).await {
            Ok(job) => accepted.push(job.id),
            Err(e) => {
                assert_eq!(e.code, "53000");
                assert!(e.retryable);
                assert!(e.message.contains("ddl_jobs_max"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(accepted.len(), 8);
    assert_eq!(refused, 12);
    assert!(queue.list().len() <= 8);
    // The jobs are retrying, not failing: they hold their slots.
    let listed = ddl
        .wait(accepted[0], Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(listed.state, JobState::Running);
    assert!(listed.attempts > 0);
    queue.set_failpoint(false);
    for id in &accepted {
        assert_eq!(ddl.wait(*id, WAIT).await.unwrap().state, JobState::Done);
    }
    let late = ddl.submit(add(20, &["y"]), "late".into()).await.unwrap();
    assert_eq!(ddl.wait(late.id, WAIT).await.unwrap().state, JobState::Done);
    assert_eq!(columns(&catalog, "t20"), ["ts", "y"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tables_jobs_run_in_order_and_identical_ones_join() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let queue = JobQueue::open(engine, catalog.clone(), fast_retries(), None).unwrap();
    queue.set_failpoint(true);
    let ddl = LocalDdl::start(queue.clone());
    let first = ddl.submit(add(1, &["a"]), "a".into()).await.unwrap();
    let joined = ddl
        .submit(add(1, &["a"]), "a-other-session".into())
        .await
        .unwrap();
    assert_eq!(joined.id, first.id);
    let second = ddl
        .submit(
            JobKind::AlterTable {
                table_id: 1,
                table: "t1".into(),
                actions: vec![AlterAction::RenameColumn {
                    from: "a".into(),
                    to: "b".into(),
                    checks: vec![],
                }],
            },
            "b".into(),
        )
        .await
        .unwrap();
    // The rename waits for the add on the same table; it would fail if it ran first.
    let early = ddl
        .wait(second.id, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(early.state, JobState::Queued);
    assert_eq!(early.attempts, 0);
    queue.set_failpoint(false);
    assert_eq!(
        ddl.wait(first.id, WAIT).await.unwrap().state,
        JobState::Done
    );
    assert_eq!(
        ddl.wait(second.id, WAIT).await.unwrap().state,
        JobState::Done
    );
    assert_eq!(columns(&catalog, "t1"), ["ts", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let queue = JobQueue::open(engine, catalog.clone(), fast_retries(), None).unwrap();
    queue.set_failpoint(true);
    let ddl = LocalDdl::start(queue.clone());
    let retrying = ddl.submit(add(1, &["a"]), "a".into()).await.unwrap();
    let queued = ddl.submit(add(1, &["b"]), "b".into()).await.unwrap();
    // Cancel both: one backing off between retries, one waiting for its turn.
    for id in [queued.id, retrying.id] {
        ddl.cancel(id).await.unwrap();
        assert_eq!(ddl.wait(id, WAIT).await.unwrap().state, JobState::Cancelled);
    }
    let e = ddl.cancel(queued.id).await.unwrap_err();
    assert_eq!(e.code, "55000");
    assert_eq!(ddl.cancel(999).await.unwrap_err().code, "42704");
    queue.set_failpoint(false);
    let after = ddl.submit(add(1, &["c"]), "c".into()).await.unwrap();
    assert_eq!(
        ddl.wait(after.id, WAIT).await.unwrap().state,
        JobState::Done
    );
    assert_eq!(columns(&catalog, "t1"), ["ts", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumes_after_a_restart_and_records_expire() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let engine = engine(dir.path());
        let catalog = catalog(&engine, 1);
        // No owner: the process dies with the job queued.
        let queue = JobQueue::open(engine, catalog, DdlConfig::default(), None).unwrap();
        let q = queue.clone();
        tokio::task::spawn_blocking(move || q.submit(add(1, &["a"]), "a".into()))
            .await
            .unwrap()
            .unwrap()
            .id
    };
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let cfg = DdlConfig {
        finished_ttl: Duration::from_millis(300),
        ..DdlConfig::default()
    };
    let queue = JobQueue::open(engine.clone(), catalog.clone(), cfg.clone(), None).unwrap();
    assert_eq!(queue.get(id).unwrap().state, JobState::Queued);
    let ddl = LocalDdl::start(queue.clone());
    assert_eq!(ddl.wait(id, WAIT).await.unwrap().state, JobState::Done);
    assert_eq!(columns(&catalog, "t1"), ["ts", "a"]);
    // The record goes after its TTL, from memory and from disk.
    let deadline = std::time::Instant::now() + WAIT;
    while queue.get(id).is_some() {
        assert!(std::time::Instant::now() < deadline, "record never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ddl);
    let reopened = JobQueue::open(engine, catalog, cfg, None).unwrap();
    assert!(reopened.list().is_empty());
    // Ids are not reused after records expire.
    let q = reopened.clone();
    let next = tokio::task::spawn_blocking(move || q.submit(add(1, &["b"]), "b".into()))
        .await
        .unwrap()
        .unwrap();
    assert!(next.id > id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_retryably_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let cfg = DdlConfig {
        retries_max: 3,
        ..fast_retries()
    };
    let queue = JobQueue::open(engine, catalog.clone(), cfg, None).unwrap();
    queue.set_failpoint(true);
    let ddl = LocalDdl::start(queue);
    let job = ddl.submit(add(1, &["a"]), "a".into()).await.unwrap();
    let job = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts, 4);
    assert!(
        job.error
            .unwrap()
            .message
            .contains("gave up after 4 attempts")
    );
    assert_eq!(columns(&catalog, "t1"), ["ts"]);
}

fn leased() -> DdlConfig {
    DdlConfig {
        schema_lease: Duration::from_millis(400),
        schema_wait_timeout: Duration::from_millis(50),
        ..fast_retries()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_is_done_only_once_every_live_node_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let queue = JobQueue::open(engine, catalog.clone(), leased(), None).unwrap();
    let ddl = LocalDdl::start(queue.clone());
    let v = catalog.snapshot().version;
    let poll = Duration::ZERO;
    ddl.renew_lease(1, v, v, 0, NEW, poll).await.unwrap();
    ddl.renew_lease(2, v, v, 0, NEW, poll).await.unwrap();
    let job = ddl.submit(add(1, &["a"]), "a".into()).await.unwrap();
    // The change is committed (its point of no return) but nodes 1 and 2 are behind.
    let waiting = ddl.wait(job.id, Duration::from_millis(150)).await.unwrap();
    assert_eq!(waiting.state, JobState::Running);
    assert_eq!(waiting.waiting_for_version, Some(v + 1));
    assert_eq!(columns(&catalog, "t1"), ["ts", "a"]);
    assert_eq!(ddl.cancel(job.id).await.unwrap_err().code, "55000");
    // A renewal answers at once when a newer version exists.
    let grant = ddl
        .renew_lease(1, v, v, 0, NEW, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(grant.version, v + 1);
    // Node 1 loaded it but a transaction of its own still uses the old one.
    ddl.renew_lease(1, v + 1, v, 0, NEW, poll).await.unwrap();
    ddl.renew_lease(2, v + 1, v + 1, 0, NEW, poll)
        .await
        .unwrap();
    let still = ddl.wait(job.id, Duration::from_millis(150)).await.unwrap();
    assert_eq!(still.state, JobState::Running);
    assert!(
        still
            .error
            .unwrap()
            .message
            .contains("transaction still using schema version"),
    );
    ddl.renew_lease(1, v + 1, v + 1, 0, NEW, poll)
        .await
        .unwrap();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.schema_version, Some(v + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_renewing_is_waited_for_only_until_its_lease_lapses() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let v = catalog.snapshot().version;
    {
        let queue = JobQueue::open(engine.clone(), catalog.clone(), leased(), None).unwrap();
        let ddl = LocalDdl::start(queue);
        // Node 7 registers, then the owner dies: the next owner must not forget it.
        ddl.renew_lease(7, v, v, 0, NEW, Duration::ZERO)
            .await
            .unwrap();
    }
    let queue = JobQueue::open(engine, catalog.clone(), leased(), None).unwrap();
    let started = std::time::Instant::now();
    let ddl = LocalDdl::start(queue.clone());
    assert_eq!(queue.leases().live_nodes(), 1);
    let job = ddl.submit(add(1, &["a"]), "a".into()).await.unwrap();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done);
    // Done only after node 7's lease could have lapsed (a lease after this owner began).
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(queue.leases().live_nodes(), 0);
    // A released node is not waited for at all.
    let v = catalog.snapshot().version;
    ddl.renew_lease(8, v, v, 0, NEW, Duration::ZERO)
        .await
        .unwrap();
    ddl.release_lease(8).await.unwrap();
    let job = ddl.submit(add(1, &["b"]), "b".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);
}

/// A standalone's owner shares its process with its SQL nodes: after a restart it drops
/// the leases of the earlier run instead of waiting a lease period for them (the first
/// schema change after each restart of a standalone used to wait 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_in_the_nodes_process_forgets_the_leases_of_its_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let v = catalog.snapshot().version;
    let cfg = DdlConfig {
        schema_lease: Duration::from_secs(3_600),
        ..DdlConfig::default()
    };
    {
        let queue = JobQueue::open(engine.clone(), catalog.clone(), cfg.clone(), None).unwrap();
        let ddl = LocalDdl::start(queue);
        ddl.renew_lease(7, v, v, 0, NEW, Duration::ZERO)
            .await
            .unwrap();
    }
    let queue = JobQueue::open(engine.clone(), catalog.clone(), cfg.clone(), None).unwrap();
    assert_eq!(
        queue.leases().live_nodes(),
        1,
        "an owner elsewhere waits for it"
    );
    queue.leases().forget_earlier_runs().unwrap();
    assert_eq!(queue.leases().live_nodes(), 0);
    // A node that renewed with this owner is not forgotten, and the forgetting persists.
    let ddl = LocalDdl::start(queue.clone());
    ddl.renew_lease(8, v, v, 0, NEW, Duration::ZERO)
        .await
        .unwrap();
    queue.leases().forget_earlier_runs().unwrap();
    assert_eq!(queue.leases().live_nodes(), 1);
    drop(ddl);
    let reopened = JobQueue::open(engine, catalog, cfg, None).unwrap();
    assert_eq!(
        reopened.leases().live_nodes(),
        1,
        "only node 8 is registered"
    );
}

/// A reorg worker that writes nothing: it hands out `chunks` chunks of 10 rows, records
/// the cursor each call starts from, and fails (fatally) at chunk `fail_at`.
struct CountingReorg {
    chunks: u64,
    fail_at: Option<u64>,
    calls: parking_lot::Mutex<Vec<Option<Vec<u8>>>>,
    /// Chunks at or past this fail retryably (to hold a backfill at a point).
    gate: parking_lot::Mutex<u64>,
    opened: parking_lot::Condvar,
}

impl CountingReorg {
    fn new(chunks: u64, fail_at: Option<u64>, gate: u64) -> Arc<Self> {
        Arc::new(Self {
            chunks,
            fail_at,
            calls: parking_lot::Mutex::new(Vec::new()),
            gate: parking_lot::Mutex::new(gate),
            opened: parking_lot::Condvar::new(),
        })
    }

    /// One chunk of a scan: waits for the gate, fails with `fail` at chunk `fail_at`.
    fn chunk(
        &self,
        cursor: Option<&[u8]>,
        fail: crate::JobError,
    ) -> Result<(Option<Vec<u8>>, u64), crate::JobError> {
        let n = cursor.map_or(0, |c| u64::from_be_bytes(c.try_into().unwrap()));
        {
            let mut gate = self.gate.lock();
            while n >= *gate {
                self.opened.wait_for(&mut gate, Duration::from_millis(50));
                if n >= *gate {
                    return Err(crate::JobError::retryable("40001", "gate closed"));
                }
            }
        }
        self.calls.lock().push(cursor.map(<[u8]>::to_vec));
        if Some(n) == self.fail_at {
            return Err(fail);
        }
        let next = n + 1;
        Ok((
            (next < self.chunks).then(|| next.to_be_bytes().to_vec()),
            10,
        ))
    }
}

impl crate::Reorg for CountingReorg {
    fn backfill_chunk(
        &self,
        _table: &TableDef,
        _index: &flotilla_catalog::IndexDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), crate::JobError> {
        self.chunk(
            cursor,
            crate::JobError::fatal(
                "23505",
                "could not create unique index \"i\": key is duplicated",
            ),
        )
    }

    fn check_chunk(
        &self,
        table: &TableDef,
        check: &flotilla_catalog::CheckDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), crate::JobError> {
        self.chunk(
            cursor,
            crate::JobError::fatal(
                "23514",
                format!(
                    "check constraint \"{}\" of relation \"{}\" is violated by some row",
                    check.name, table.name
                ),
            ),
        )
    }

    fn foreign_key_chunk(
        &self,
        table: &TableDef,
        fk: &flotilla_catalog::ForeignKeyDef,
        parent: &TableDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), crate::JobError> {
        self.chunk(
            cursor,
            crate::JobError::fatal(
                "23503",
                format!(
                    "insert or update on table \"{}\" violates foreign key constraint \"{}\" (no row in \"{}\")",
                    table.name, fk.name, parent.name
                ),
            ),
        )
    }

    fn delete_range_chunk(
        &self,
        _range: &crate::DataRange,
        _cursor: Option<&[u8]>,
        _limit: usize,
    ) -> Result<Option<Vec<u8>>, crate::JobError> {
        // It wrote nothing, so there is nothing to delete.
        Ok(None)
    }
}

fn add_index(name: &str) -> JobKind {
    JobKind::AddIndex {
        table_id: 1,
        table: "t1".into(),
        name: name.into(),
        columns: vec![0],
        unique: true,
        primary: false,
        if_not_exists: false,
        predicate: None,
    }
}

fn index_state(catalog: &LocalCatalog, name: &str) -> Option<flotilla_catalog::IndexState> {
    catalog
        .snapshot()
        .table("t1")
        .unwrap()
        .indexes
        .iter()
        .find(|i| i.name == name)
        .map(|i| i.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_goes_through_every_state_and_its_backfill_resumes_from_its_checkpoint() {
    use flotilla_catalog::IndexState;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let v = catalog.snapshot().version;
    let cfg = DdlConfig {
        backfill_rows_per_s: 0,
        ..fast_retries()
    };
    // The first owner gets through three chunks, then dies.
    let first = CountingReorg::new(5, None, 3);
    let id = {
        let (queue, ddl) = start_with(&engine, &catalog, &cfg, &first);
        let job = ddl.submit(add_index("i"), "i".into()).await.unwrap();
        await_scanned(&queue, job.id, 30).await;
        assert_eq!(index_state(&catalog, "i"), Some(IndexState::WriteReorg));
        // Three schema versions so far: delete-only, write-only, write-reorg.
        assert_eq!(catalog.snapshot().version, v + 3);
        job.id
    };
    assert_eq!(first.calls.lock().len(), 3);
    let second = CountingReorg::new(5, None, u64::MAX);
    let queue = JobQueue::open(engine, catalog.clone(), cfg, Some(second.clone())).unwrap();
    let ddl = LocalDdl::start(queue);
    let done = ddl.wait(id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.reorg_rows, 50);
    assert_eq!(index_state(&catalog, "i"), Some(IndexState::Public));
    assert_eq!(catalog.snapshot().version, v + 4);
    // The second owner started where the first left off.
    let calls = second.calls.lock().clone();
    assert_eq!(
        calls.first().unwrap().as_deref(),
        Some(&3u64.to_be_bytes()[..])
    );
    assert_eq!(calls.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_cancelled_backfill_rolls_the_index_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let cfg = DdlConfig {
        backfill_rows_per_s: 0,
        ..fast_retries()
    };
    let reorg = CountingReorg::new(10, Some(2), u64::MAX);
    let queue = JobQueue::open(engine.clone(), catalog.clone(), cfg.clone(), Some(reorg)).unwrap();
    let ddl = LocalDdl::start(queue);
    let job = ddl.submit(add_index("dup"), "dup".into()).await.unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    assert_eq!(failed.error.unwrap().code, "23505");
    assert_eq!(index_state(&catalog, "dup"), None);
    drop(ddl);

    let held = CountingReorg::new(10, None, 2);
    let queue = JobQueue::open(engine, catalog.clone(), cfg, Some(held.clone())).unwrap();
    let ddl = LocalDdl::start(queue.clone());
    let job = ddl.submit(add_index("slow"), "slow".into()).await.unwrap();
    await_scanned(&queue, job.id, 20).await;
    ddl.cancel(job.id).await.unwrap();
    let cancelled = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled, "{cancelled:?}");
    assert_eq!(index_state(&catalog, "slow"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gc_bound_is_the_oldest_start_ts_any_live_node_reports() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    // Leases that cannot lapse during the test.
    let long_leases = DdlConfig {
        schema_lease: Duration::from_secs(60),
        ..leased()
    };
    let queue = JobQueue::open(engine.clone(), catalog.clone(), long_leases.clone(), None).unwrap();
    let ddl = LocalDdl::start(queue.clone());
    let v = catalog.snapshot().version;
    let poll = Duration::ZERO;
    // No node: nothing holds GC back.
    assert_eq!(queue.leases().oldest_start_ts(), u64::MAX);
    ddl.renew_lease(1, v, v, 500, NEW, poll).await.unwrap();
    ddl.renew_lease(2, v, v, 300, NEW, poll).await.unwrap();
    assert_eq!(queue.leases().oldest_start_ts(), 300);
    // A node's newer report replaces its older one.
    ddl.renew_lease(2, v, v, 700, NEW, poll).await.unwrap();
    assert_eq!(queue.leases().oldest_start_ts(), 500);
    // A node that gave its lease up holds nothing back.
    ddl.release_lease(1).await.unwrap();
    assert_eq!(queue.leases().oldest_start_ts(), 700);
    // A new owner (after a restart or failover) knows node 2 registered but not what it
    // reads: GC waits for its report, or for its lease to lapse.
    drop(ddl);
    drop(queue);
    let queue = JobQueue::open(engine, catalog, long_leases, None).unwrap();
    assert_eq!(queue.leases().oldest_start_ts(), 0);
    let ddl = LocalDdl::start(queue.clone());
    ddl.renew_lease(2, v, v, 900, NEW, poll).await.unwrap();
    assert_eq!(queue.leases().oldest_start_ts(), 900);
}

/// Waits until job `id`'s scan has read `rows` rows.
async fn await_scanned(queue: &JobQueue, id: u64, rows: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while queue.get(id).unwrap().reorg_rows < rows {
        assert!(
            std::time::Instant::now() < deadline,
            "the scan of job {id} never read {rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A queue and its owner over `catalog`, scanning through `reorg`.
fn start_with(
    engine: &EngineRef,
    catalog: &Arc<LocalCatalog>,
    cfg: &DdlConfig,
    reorg: &Arc<CountingReorg>,
) -> (Arc<JobQueue>, Arc<LocalDdl>) {
    let queue = JobQueue::open(
        engine.clone(),
        catalog.clone(),
        cfg.clone(),
        Some(reorg.clone()),
    )
    .unwrap();
    let ddl = LocalDdl::start(queue.clone());
    (queue, ddl)
}

fn add_check(name: &str, validate: bool) -> JobKind {
    JobKind::AddCheck {
        table_id: 1,
        table: "t1".into(),
        check: flotilla_catalog::CheckDef {
            name: name.into(),
            expr: "ts > 0".into(),
            columns: vec![0],
            validated: true,
        },
        column_names: vec!["ts".into()],
        validate,
    }
}

/// The check `name` of t1: whether it is validated, if it exists.
fn check_state(catalog: &LocalCatalog, name: &str) -> Option<bool> {
    catalog
        .snapshot()
        .table("t1")
        .unwrap()
        .checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.validated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_is_enforced_before_its_scan_and_a_violating_row_rolls_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let cfg = DdlConfig {
        backfill_rows_per_s: 0,
        ..fast_retries()
    };
    let v = catalog.snapshot().version;
    // Held at its second chunk: the constraint is in the catalog, not yet validated.
    let reorg = CountingReorg::new(3, None, 1);
    let (queue, ddl) = start_with(&engine, &catalog, &cfg, &reorg);
    let job = ddl
        .submit(add_check("pos", true), "c1".into())
        .await
        .unwrap();
    await_scanned(&queue, job.id, 10).await;
    assert_eq!(check_state(&catalog, "pos"), Some(false));
    assert_eq!(catalog.snapshot().version, v + 1);
    *reorg.gate.lock() = u64::MAX;
    reorg.opened.notify_all();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.reorg_rows, 30);
    assert_eq!(check_state(&catalog, "pos"), Some(true));
    assert_eq!(catalog.snapshot().version, v + 2);

    // A second constraint of the same name is refused and changes nothing.
    let dup = ddl
        .submit(add_check("pos", true), "c2".into())
        .await
        .unwrap();
    let dup = ddl.wait(dup.id, WAIT).await.unwrap();
    assert_eq!(dup.state, JobState::Failed);
    assert_eq!(dup.error.unwrap().code, "42710");
    assert_eq!(catalog.snapshot().version, v + 2);
    drop(ddl);

    // A row that breaks it, found in the scan's third chunk: the constraint goes again.
    let failing = CountingReorg::new(5, Some(2), u64::MAX);
    let queue =
        JobQueue::open(engine.clone(), catalog.clone(), cfg.clone(), Some(failing)).unwrap();
    let ddl = LocalDdl::start(queue);
    let job = ddl
        .submit(add_check("bad", true), "c3".into())
        .await
        .unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let error = failed.error.unwrap();
    assert_eq!(error.code, "23514");
    assert!(error.message.contains("\"bad\""), "{}", error.message);
    assert_eq!(check_state(&catalog, "bad"), None);

    // NOT VALID: in the catalog at once, no scan; VALIDATE CONSTRAINT that meets a row
    // breaking it leaves it as it was, and one that does not validates it.
    let job = ddl
        .submit(add_check("later", false), "c4".into())
        .await
        .unwrap();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.reorg_rows, 0);
    assert_eq!(check_state(&catalog, "later"), Some(false));
    let validate = || JobKind::ValidateCheck {
        table_id: 1,
        table: "t1".into(),
        name: "later".into(),
    };
    let job = ddl.submit(validate(), "v1".into()).await.unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    assert_eq!(failed.error.unwrap().code, "23514");
    assert_eq!(check_state(&catalog, "later"), Some(false));
    drop(ddl);
    let clean = CountingReorg::new(2, None, u64::MAX);
    let queue = JobQueue::open(engine, catalog.clone(), cfg, Some(clean)).unwrap();
    let ddl = LocalDdl::start(queue);
    let job = ddl.submit(validate(), "v2".into()).await.unwrap();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(check_state(&catalog, "later"), Some(true));
    // A column renamed between planning and the job: the stale expression never lands.
    let mut stale = add_check("stale", true);
    if let JobKind::AddCheck { column_names, .. } = &mut stale {
        column_names[0] = "renamed".into();
    }
    let job = ddl.submit(stale, "c5".into()).await.unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.error.unwrap().code, "40001");
    assert_eq!(check_state(&catalog, "stale"), None);
}

/// Column `name` of t1: (nullable, NOT NULL pending).
fn null_state(catalog: &LocalCatalog, name: &str) -> (bool, bool) {
    let snapshot = catalog.snapshot();
    let c = snapshot.table("t1").unwrap().column(name).unwrap().clone();
    (c.nullable, c.not_null_pending)
}

fn set_not_null(column_id: u32, column: &str) -> JobKind {
    JobKind::SetNotNull {
        table_id: 1,
        table: "t1".into(),
        column_id,
        column: column.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_not_null_refuses_nulls_before_its_scan_and_a_null_found_rolls_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let cfg = DdlConfig {
        backfill_rows_per_s: 0,
        ..fast_retries()
    };
    // Held at its second chunk: writes refuse NULL, the column is not NOT NULL yet.
    let reorg = CountingReorg::new(3, None, 1);
    let (queue, ddl) = start_with(&engine, &catalog, &cfg, &reorg);
    let job = ddl.submit(add(1, &["v"]), "a1".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);
    let v = catalog.snapshot().version;
    let job = ddl.submit(set_not_null(1, "v"), "n1".into()).await.unwrap();
    await_scanned(&queue, job.id, 10).await;
    assert_eq!(null_state(&catalog, "v"), (true, true));
    assert_eq!(catalog.snapshot().version, v + 1);
    *reorg.gate.lock() = u64::MAX;
    reorg.opened.notify_all();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.reorg_rows, 30);
    assert_eq!(null_state(&catalog, "v"), (false, false));
    assert_eq!(catalog.snapshot().version, v + 2);

    // Already NOT NULL: nothing to do, no new version.
    let again = ddl.submit(set_not_null(1, "v"), "n2".into()).await.unwrap();
    assert_eq!(
        ddl.wait(again.id, WAIT).await.unwrap().state,
        JobState::Done
    );
    assert_eq!(catalog.snapshot().version, v + 2);

    // DROP NOT NULL is metadata only; a primary key column keeps its NOT NULL.
    let drop_not_null = |column: &str| JobKind::AlterTable {
        table_id: 1,
        table: "t1".into(),
        actions: vec![AlterAction::DropNotNull {
            column: column.into(),
        }],
    };
    let job = ddl.submit(drop_not_null("v"), "d1".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);
    assert_eq!(null_state(&catalog, "v"), (true, false));
    let job = ddl.submit(drop_not_null("ts"), "d2".into()).await.unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.error.unwrap().code, "42P16");
    assert_eq!(null_state(&catalog, "ts"), (false, false));
    drop(ddl);

    // A NULL found in the scan's third chunk: PostgreSQL's 23502, and the column is
    // nullable again.
    let failing = CountingReorg::new(5, Some(2), u64::MAX);
    let queue = JobQueue::open(engine, catalog.clone(), cfg, Some(failing)).unwrap();
    let ddl = LocalDdl::start(queue);
    let job = ddl.submit(set_not_null(1, "v"), "n3".into()).await.unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let error = failed.error.unwrap();
    assert_eq!(error.code, "23502");
    assert_eq!(
        error.message,
        "column \"v\" of relation \"t1\" contains null values"
    );
    assert_eq!(null_state(&catalog, "v"), (true, false));
    // A column dropped before its job ran.
    let job = ddl
        .submit(set_not_null(9, "gone"), "n4".into())
        .await
        .unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.error.unwrap().code, "42703");
}

/// ORIGINS.md §3: a job kind newer than the cluster's version is refused before it is
/// queued (an older meta member could not decode it, an older SQL node would not honour
/// it), and a SQL node of a build older than the cluster's version gets no lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_version_gates_new_job_kinds_and_refuses_older_sql_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let reorg = CountingReorg::new(3, None, u64::MAX);
    let (queue, ddl) = start_with(&engine, &catalog, &fast_retries(), &reorg);
    let job = ddl.submit(add(1, &["v"]), "a1".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);
    let v = catalog.snapshot().version;
    // A cluster still at the base version: a node reporting no version (an older build)
    // holds a lease, and SET NOT NULL is refused without a job or a schema change.
    queue.set_cluster_version(1);
    let grant = ddl
        .renew_lease(1, v, v, 0, None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(grant.cluster_version, Some(1));
    assert_eq!(queue.leases().binary_versions(), vec![(1, true, None)]);
    // Gone again, so the jobs below wait for no node.
    ddl.release_lease(1).await.unwrap();
    let e = ddl
        .submit(set_not_null(1, "v"), "n1".into())
        .await
        .unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(
        e.message.contains("needs cluster version 2"),
        "{}",
        e.message
    );
    assert!(!e.retryable);
    assert_eq!(queue.list().len(), 1, "a refused kind left a job record");
    assert_eq!(catalog.snapshot().version, v);
    // Other kinds are not gated.
    let job = ddl.submit(add(1, &["w"]), "a2".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);
    // Version 2: the job runs, and the older build is refused its lease (55000).
    queue.set_cluster_version(2);
    let job = ddl.submit(set_not_null(1, "v"), "n2".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);
    let v = catalog.snapshot().version;
    let e = ddl
        .renew_lease(1, v, v, 0, None, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.code, "55000");
    assert!(
        e.message.contains("older than the cluster's version 2"),
        "{}",
        e.message
    );
    let grant = ddl
        .renew_lease(2, v, v, 0, Some(2), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(grant.cluster_version, Some(2));
    assert_eq!(queue.leases().binary_versions(), vec![(2, true, Some(2))]);
}

/// A meta leader reads the leases from async tasks on runtime threads that its Raft
/// writes need; a registration holding the leases' lock across its (Raft) write stalled
/// them for the write's whole timeout, and a meta group of one-thread members lost its
/// quorum with it (found by the rolling-upgrade test under CPU load). Readers must not
/// wait for a registration's write.
#[test]
fn reading_the_leases_never_waits_for_a_registrations_write() {
    let dir = tempfile::tempdir().unwrap();
    let gated = Arc::new(flotilla_storage::testing::GatedEngine::new(engine(
        dir.path(),
    )));
    let leases =
        Arc::new(crate::SchemaLeases::open(gated.clone(), Duration::from_secs(10), 16).unwrap());
    leases.renew(1, 1, 1, 100, Some(2)).unwrap();
    gated.set_shut(true);
    let registering = {
        let leases = leases.clone();
        std::thread::spawn(move || leases.renew(2, 1, 1, 50, Some(2)))
    };
    // Wait (bounded) until the registration is inside its write.
    assert!(gated.await_entered(2, WAIT), "the registration never wrote");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let leases = leases.clone();
        std::thread::spawn(move || {
            let _ = tx.send((leases.binary_versions(), leases.oldest_start_ts()));
        })
    };
    let read = rx.recv_timeout(WAIT);
    gated.set_shut(false);
    let (versions, oldest) = read.expect("reading the leases waited for a registration's write");
    // Node 2 is not registered until its record is written.
    assert_eq!(versions, vec![(1, true, Some(2))]);
    assert_eq!(oldest, 100);
    registering.join().unwrap().unwrap();
    reader.join().unwrap();
    assert_eq!(leases.binary_versions().len(), 2);
}

/// A table with a foreign key to table `parent` (id 10, keyed by its column 0).
fn referencing(id: i64, name: &str, pending: bool) -> TableDef {
    let mut t = table(id, name);
    t.columns.push(ColumnDef {
        id: 1,
        name: "pid".into(),
        ty: SqlType::Int64,
        nullable: true,
        not_null_pending: false,
        default: None,
        origin_default: None,
        sequence: None,
    });
    t.next_column_id = 2;
    t.foreign_keys.push(flotilla_catalog::ForeignKeyDef {
        name: format!("{name}_pid_fkey"),
        columns: vec![1],
        ref_table: 10,
        ref_columns: vec![0],
        ref_index: 1,
        pending,
        validated: true,
        deferrable: false,
        initially_deferred: false,
        on_delete: flotilla_catalog::FkAction::NoAction,
        on_update: flotilla_catalog::FkAction::NoAction,
    });
    t
}

fn create(table: TableDef) -> JobKind {
    JobKind::CreateTable {
        table,
        if_not_exists: false,
    }
}

/// ORIGINS.md §3 and F1: a table with a foreign key needs the cluster version that knows
/// them; it is committed with the key pending (writes refused) until every SQL node uses
/// a version with it, then made ready; the table it references can be neither dropped
/// nor truncated while it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_wait_for_their_version_and_pin_what_they_reference() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let reorg = CountingReorg::new(3, None, u64::MAX);
    let (queue, ddl) = start_with(&engine, &catalog, &fast_retries(), &reorg);
    let mut parent = table(10, "parent");
    parent.indexes.push(flotilla_catalog::IndexDef {
        id: 1,
        name: "parent_pkey".into(),
        columns: vec![0],
        unique: true,
        primary: true,
        clustered: true,
        state: flotilla_catalog::IndexState::Public,
        predicate: None,
    });
    parent.next_index_id = 2;
    let job = ddl.submit(create(parent), "p".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);

    queue.set_cluster_version(4);
    let e = ddl
        .submit(create(referencing(11, "child", true)), "c1".into())
        .await
        .unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(
        e.message.contains("needs cluster version 5"),
        "{}",
        e.message
    );
    assert!(catalog.snapshot().table("child").is_none());

    queue.set_cluster_version(5);
    // A reference to a table that is not there fails the job, and creates nothing.
    let mut dangling = referencing(12, "dangling", true);
    dangling.foreign_keys[0].ref_table = 99;
    let job = ddl.submit(create(dangling), "d".into()).await.unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.error.unwrap().code, "42P01");
    assert!(catalog.snapshot().table("dangling").is_none());

    let job = ddl
        .submit(create(referencing(11, "child", true)), "c2".into())
        .await
        .unwrap();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done);
    let child = catalog.snapshot().table("child").unwrap().clone();
    assert!(!child.foreign_keys[0].pending, "ready once the job is done");

    let drop_parent = JobKind::DropTable {
        table_id: 10,
        table: "parent".into(),
    };
    let job = ddl.submit(drop_parent.clone(), "x1".into()).await.unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.error.unwrap().code, "2BP01");
    let job = ddl
        .submit(
            JobKind::Truncate {
                table_id: 10,
                table: "parent".into(),
                storage_id: 100,
            },
            "x2".into(),
        )
        .await
        .unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.error.unwrap().code, "0A000");
    assert!(catalog.snapshot().table("parent").is_some());

    // Once the referencing table is gone, so may the referenced one go.
    let job = ddl
        .submit(
            JobKind::DropTable {
                table_id: 11,
                table: "child".into(),
            },
            "x3".into(),
        )
        .await
        .unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);
    let job = ddl.submit(drop_parent, "x4".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);
}

/// A table "parent" (id 10) keyed by column 0, through index 1.
async fn create_parent(ddl: &LocalDdl) {
    let mut parent = table(10, "parent");
    parent.indexes.push(flotilla_catalog::IndexDef {
        id: 1,
        name: "parent_pkey".into(),
        columns: vec![0],
        unique: true,
        primary: true,
        clustered: true,
        state: flotilla_catalog::IndexState::Public,
        predicate: None,
    });
    parent.next_index_id = 2;
    let job = ddl.submit(create(parent), "p".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);
}

/// ALTER TABLE child ADD CONSTRAINT `name` FOREIGN KEY (pid) REFERENCES parent.
fn add_foreign_key(name: &str, validate: bool) -> JobKind {
    let mut fk = referencing(11, "child", false).foreign_keys.remove(0);
    fk.name = name.into();
    JobKind::AddForeignKey {
        table_id: 11,
        table: "child".into(),
        fk,
        validate,
        column: None,
    }
}

/// Whether foreign key `name` of "child" is validated; `None` if it has none such.
fn foreign_key_state(catalog: &LocalCatalog, name: &str) -> Option<bool> {
    let snapshot = catalog.snapshot();
    let fk = snapshot
        .table("child")
        .unwrap()
        .foreign_keys
        .iter()
        .find(|f| f.name == name)
        .cloned()?;
    assert!(!fk.pending, "an added foreign key is enforced at once");
    Some(fk.validated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_foreign_key_is_enforced_before_its_scan_and_a_missing_row_rolls_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let cfg = DdlConfig {
        backfill_rows_per_s: 0,
        ..fast_retries()
    };
    // Held at its second chunk: the constraint is in the catalog, not yet validated.
    let reorg = CountingReorg::new(3, None, 1);
    let (queue, ddl) = start_with(&engine, &catalog, &cfg, &reorg);
    create_parent(&ddl).await;
    let mut child = referencing(11, "child", false);
    child.foreign_keys.clear();
    let job = ddl.submit(create(child), "c".into()).await.unwrap();
    assert_eq!(ddl.wait(job.id, WAIT).await.unwrap().state, JobState::Done);

    // A meta member of version 5 could not decode the job.
    queue.set_cluster_version(5);
    let e = ddl
        .submit(add_foreign_key("fk", true), "f0".into())
        .await
        .unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("cluster version 6"), "{}", e.message);
    // A DEFERRABLE one needs version 7: a node of version 6 would check it as each
    // statement ends; so does a table created with one.
    queue.set_cluster_version(6);
    let mut deferrable = add_foreign_key("deferred", true);
    if let JobKind::AddForeignKey { fk, .. } = &mut deferrable {
        fk.deferrable = true;
    }
    let e = ddl.submit(deferrable, "f6".into()).await.unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("cluster version 7"), "{}", e.message);
    // ... as does one that adds its column.
    let mut with_column = add_foreign_key("with_column", true);
    if let JobKind::AddForeignKey { column, .. } = &mut with_column {
        *column = Some(crate::job::ColumnSpec {
            name: "qid".into(),
            ty: SqlType::Int64,
            nullable: true,
            default: None,
            origin_default: None,
        });
    }
    let e = ddl.submit(with_column, "f7".into()).await.unwrap_err();
    assert!(e.message.contains("cluster version 7"), "{}", e.message);
    let mut deferring = referencing(12, "deferring", false);
    deferring.foreign_keys[0].deferrable = true;
    let e = ddl
        .submit(create(deferring), "c2".into())
        .await
        .unwrap_err();
    assert!(e.message.contains("cluster version 7"), "{}", e.message);
    assert_eq!(foreign_key_state(&catalog, "deferred"), None);
    // Widening a column's type needs version 8: a meta member of version 7 could not
    // decode the action.
    queue.set_cluster_version(7);
    let widen = JobKind::AlterTable {
        table_id: 11,
        table: "child".into(),
        actions: vec![AlterAction::WidenType {
            column: "pid".into(),
            ty: SqlType::Text,
        }],
    };
    let e = ddl.submit(widen, "w7".into()).await.unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("cluster version 8"), "{}", e.message);
    // A referential action needs version 9: a node of version 8 would decode the
    // constraint as NO ACTION and refuse the deletes others cascade.
    queue.set_cluster_version(8);
    let mut cascading = add_foreign_key("cascading", true);
    if let JobKind::AddForeignKey { fk, .. } = &mut cascading {
        fk.on_delete = flotilla_catalog::FkAction::Cascade;
    }
    let e = ddl.submit(cascading, "a8".into()).await.unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("cluster version 9"), "{}", e.message);
    let mut setting = referencing(13, "setting", false);
    setting.foreign_keys[0].on_update = flotilla_catalog::FkAction::SetNull;
    let e = ddl.submit(create(setting), "c8".into()).await.unwrap_err();
    assert!(e.message.contains("cluster version 9"), "{}", e.message);
    assert_eq!(foreign_key_state(&catalog, "cascading"), None);
    // A uuid column needs version 10, in a new table or an added column: a node of
    // version 9 could not decode the table at all.
    queue.set_cluster_version(9);
    let mut uuids = table(14, "uuids");
    uuids.columns[0].ty = SqlType::Uuid;
    let e = ddl.submit(create(uuids), "u9".into()).await.unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("cluster version 10"), "{}", e.message);
    let add_uuid = JobKind::AlterTable {
        table_id: 11,
        table: "child".into(),
        actions: vec![AlterAction::AddColumn {
            column: crate::job::ColumnSpec {
                name: "token".into(),
                ty: SqlType::Uuid,
                nullable: true,
                default: None,
                origin_default: None,
            },
            if_not_exists: false,
        }],
    };
    let e = ddl.submit(add_uuid, "u9b".into()).await.unwrap_err();
    assert!(e.message.contains("cluster version 10"), "{}", e.message);
    assert!(catalog.snapshot().table("uuids").is_none());
    // So does a json or jsonb column need version 11; a table with both a uuid and a
    // jsonb column needs the newer.
    queue.set_cluster_version(10);
    let mut docs = table(15, "docs");
    docs.columns[0].ty = SqlType::Uuid;
    let mut doc = docs.columns[0].clone();
    (doc.id, doc.name, doc.ty) = (1, "doc".into(), SqlType::Jsonb);
    docs.columns.push(doc);
    let e = ddl.submit(create(docs), "j10".into()).await.unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("cluster version 11"), "{}", e.message);
    let add_json = JobKind::AlterTable {
        table_id: 11,
        table: "child".into(),
        actions: vec![AlterAction::AddColumn {
            column: crate::job::ColumnSpec {
                name: "doc".into(),
                ty: SqlType::Json,
                nullable: true,
                default: None,
                origin_default: None,
            },
            if_not_exists: false,
        }],
    };
    let e = ddl.submit(add_json, "j10b".into()).await.unwrap_err();
    assert!(e.message.contains("cluster version 11"), "{}", e.message);
    assert!(catalog.snapshot().table("docs").is_none());
    // A partial index needs version 12: a node of version 11 would decode the index
    // without its predicate and refuse rows it leaves out. The same index without one
    // is still built at version 11.
    queue.set_cluster_version(11);
    let mut partial = add_index("partial_idx");
    if let JobKind::AddIndex { predicate, .. } = &mut partial {
        *predicate = Some(flotilla_catalog::IndexPredicate {
            terms: vec![flotilla_catalog::PredicateTerm {
                column: 0,
                test: flotilla_catalog::PredicateTest::IsNull,
            }],
        });
    }
    let e = ddl.submit(partial, "p11".into()).await.unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("cluster version 12"), "{}", e.message);
    assert_eq!(add_index("partial_idx").feature(), None);
    assert!(
        catalog
            .snapshot()
            .tables
            .values()
            .all(|t| t.indexes.iter().all(|i| i.name != "partial_idx"))
    );
    // An array column needs version 13, in a new table or an added column (an array of
    // uuid needs no more): a node of version 12 could not decode the table.
    queue.set_cluster_version(12);
    let mut arrays = table(16, "arrays");
    arrays.columns[0].ty = SqlType::Array(Box::new(SqlType::Int32));
    let e = ddl.submit(create(arrays), "a12".into()).await.unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("cluster version 13"), "{}", e.message);
    let add_array = JobKind::AlterTable {
        table_id: 11,
        table: "child".into(),
        actions: vec![AlterAction::AddColumn {
            column: crate::job::ColumnSpec {
                name: "tokens".into(),
                ty: SqlType::Array(Box::new(SqlType::Uuid)),
                nullable: true,
                default: None,
                origin_default: None,
            },
            if_not_exists: false,
        }],
    };
    assert_eq!(
        add_array.feature(),
        Some(flotilla_types::version::Feature::ArrayTypes)
    );
    let e = ddl.submit(add_array, "a12b".into()).await.unwrap_err();
    assert!(e.message.contains("cluster version 13"), "{}", e.message);
    assert!(catalog.snapshot().table("arrays").is_none());
    // A time column, or an array of times, needs version 14.
    queue.set_cluster_version(13);
    for (name, ty) in [
        ("times", SqlType::Time),
        ("time_lists", SqlType::Array(Box::new(SqlType::Time))),
    ] {
        let mut t = table(17, name);
        t.columns[0].ty = ty;
        let job = create(t);
        assert_eq!(
            job.feature(),
            Some(flotilla_types::version::Feature::TimeType)
        );
        let e = ddl.submit(job, format!("{name}13")).await.unwrap_err();
        assert_eq!(e.code, "0A000");
        assert!(e.message.contains("cluster version 14"), "{}", e.message);
        assert!(catalog.snapshot().table(name).is_none());
    }
    // An interval column needs version 17.
    queue.set_cluster_version(16);
    let mut t = table(18, "spans");
    t.columns[0].ty = SqlType::Interval;
    let job = create(t);
    assert_eq!(
        job.feature(),
        Some(flotilla_types::version::Feature::IntervalType)
    );
    let e = ddl.submit(job, "spans16".into()).await.unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("cluster version 17"), "{}", e.message);
    assert!(catalog.snapshot().table("spans").is_none());
    queue.set_cluster_version(6);

    let v = catalog.snapshot().version;
    let job = ddl
        .submit(add_foreign_key("fk", true), "f1".into())
        .await
        .unwrap();
    await_scanned(&queue, job.id, 10).await;
    assert_eq!(foreign_key_state(&catalog, "fk"), Some(false));
    assert_eq!(catalog.snapshot().version, v + 1);
    *reorg.gate.lock() = u64::MAX;
    reorg.opened.notify_all();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.reorg_rows, 30);
    assert_eq!(foreign_key_state(&catalog, "fk"), Some(true));
    assert_eq!(catalog.snapshot().version, v + 2);

    // A name the table has is refused; so is an index the parent does not have.
    let job = ddl
        .submit(add_foreign_key("fk", true), "f2".into())
        .await
        .unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.error.unwrap().code, "42710");
    let mut no_index = add_foreign_key("no_index", true);
    if let JobKind::AddForeignKey { fk, .. } = &mut no_index {
        fk.ref_index = 7;
    }
    let job = ddl.submit(no_index, "f3".into()).await.unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.error.unwrap().code, "42830");
    assert_eq!(foreign_key_state(&catalog, "no_index"), None);
    assert_eq!(catalog.snapshot().version, v + 2);
    drop(ddl);

    // A row without its referenced row, found in the scan's third chunk: the constraint
    // goes again.
    let failing = CountingReorg::new(5, Some(2), u64::MAX);
    let queue =
        JobQueue::open(engine.clone(), catalog.clone(), cfg.clone(), Some(failing)).unwrap();
    let ddl = LocalDdl::start(queue);
    let job = ddl
        .submit(add_foreign_key("bad", true), "f4".into())
        .await
        .unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let error = failed.error.unwrap();
    assert_eq!(error.code, "23503");
    assert!(error.message.contains("\"bad\""), "{}", error.message);
    assert_eq!(foreign_key_state(&catalog, "bad"), None);

    // NOT VALID: in the catalog at once, no scan; VALIDATE CONSTRAINT that meets a
    // missing row leaves it as it was, and one that does not validates it.
    let job = ddl
        .submit(add_foreign_key("later", false), "f5".into())
        .await
        .unwrap();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.reorg_rows, 0);
    assert_eq!(foreign_key_state(&catalog, "later"), Some(false));
    let validate = || JobKind::ValidateForeignKey {
        table_id: 11,
        table: "child".into(),
        name: "later".into(),
    };
    let job = ddl.submit(validate(), "v1".into()).await.unwrap();
    let failed = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(failed.error.unwrap().code, "23503");
    assert_eq!(foreign_key_state(&catalog, "later"), Some(false));
    drop(ddl);
    let clean = CountingReorg::new(2, None, u64::MAX);
    let queue = JobQueue::open(engine, catalog.clone(), cfg, Some(clean)).unwrap();
    let ddl = LocalDdl::start(queue);
    let job = ddl.submit(validate(), "v2".into()).await.unwrap();
    let done = ddl.wait(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.reorg_rows, 20);
    assert_eq!(foreign_key_state(&catalog, "later"), Some(true));
}

/// ADD COLUMN ... REFERENCES: the constraint names the column by the id it was planned
/// to get; a column added meanwhile took it, so the step refuses (40001) rather than
/// constrain that other column.
#[test]
fn a_column_added_with_its_foreign_key_gets_the_id_it_was_planned_with() {
    let child = referencing(11, "child", false);
    let mut fk = child.foreign_keys[0].clone();
    fk.name = "q_fkey".into();
    let mut snapshot = flotilla_catalog::CatalogSnapshot::default();
    snapshot
        .tables
        .insert("child".into(), std::sync::Arc::new(child.clone()));
    let column = crate::job::ColumnSpec {
        name: "q".into(),
        ty: SqlType::Int64,
        nullable: true,
        default: None,
        origin_default: None,
    };
    // Planned when column 1 was the next id; it is "pid" now.
    fk.columns = vec![1];
    let e = crate::plan_add_foreign_key(&snapshot, 11, "child", &fk, Some(&column)).unwrap_err();
    assert_eq!(e.code, "40001", "{}", e.message);
    // The id the column gets: past that check, to the referenced table (not in this
    // snapshot).
    fk.columns = vec![child.next_column_id];
    let e = crate::plan_add_foreign_key(&snapshot, 11, "child", &fk, Some(&column)).unwrap_err();
    assert_eq!(e.code, "42P01", "{}", e.message);
}

/// A reorg worker over `HeldReorg::CHUNKS` chunks of 10 rows whose scans and deletions
/// stop inside chunk `HELD_AT` until the test lets them go: the owner can be stopped while
/// its work runs.
#[derive(Default)]
struct HeldReorg {
    state: parking_lot::Mutex<HeldState>,
    changed: parking_lot::Condvar,
}

#[derive(Default)]
struct HeldState {
    /// Chunks a scan finished.
    scanned: u64,
    /// Chunks a deletion finished.
    deleted: u64,
    /// A call is inside chunk `HELD_AT`.
    holding: bool,
    released: bool,
}

impl HeldReorg {
    const CHUNKS: u64 = 1_000;
    const HELD_AT: u64 = 3;

    /// One chunk from `cursor`, counted by `count`; returns the next cursor.
    fn chunk(&self, cursor: Option<&[u8]>, count: fn(&mut HeldState)) -> Option<Vec<u8>> {
        let n = cursor.map_or(0, |c| u64::from_be_bytes(c.try_into().unwrap()));
        let mut state = self.state.lock();
        if n == Self::HELD_AT {
            state.holding = true;
            self.changed.notify_all();
            let deadline = std::time::Instant::now() + WAIT;
            while !state.released {
                assert!(
                    !self.changed.wait_until(&mut state, deadline).timed_out(),
                    "the test never released the held chunk"
                );
            }
            state.holding = false;
        }
        count(&mut state);
        let next = n + 1;
        (next < Self::CHUNKS).then(|| next.to_be_bytes().to_vec())
    }

    /// Waits until a call holds in chunk `HELD_AT` (off the runtime's threads).
    async fn await_holding(self: &Arc<Self>) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = me.state.lock();
            let deadline = std::time::Instant::now() + WAIT;
            while !state.holding {
                assert!(
                    !me.changed.wait_until(&mut state, deadline).timed_out(),
                    "no scan or deletion reached the held chunk"
                );
            }
        })
        .await
        .unwrap();
    }

    fn release(&self) {
        self.state.lock().released = true;
        self.changed.notify_all();
    }
}

impl crate::Reorg for HeldReorg {
    fn backfill_chunk(
        &self,
        _table: &TableDef,
        _index: &flotilla_catalog::IndexDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), crate::JobError> {
        Ok((self.chunk(cursor, |s| s.scanned += 1), 10))
    }

    fn check_chunk(
        &self,
        _table: &TableDef,
        _check: &flotilla_catalog::CheckDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), crate::JobError> {
        Ok((self.chunk(cursor, |s| s.scanned += 1), 10))
    }

    fn foreign_key_chunk(
        &self,
        _table: &TableDef,
        _fk: &flotilla_catalog::ForeignKeyDef,
        _parent: &TableDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), crate::JobError> {
        Ok((self.chunk(cursor, |s| s.scanned += 1), 10))
    }

    fn delete_range_chunk(
        &self,
        _range: &crate::DataRange,
        cursor: Option<&[u8]>,
        _limit: usize,
    ) -> Result<Option<Vec<u8>>, crate::JobError> {
        Ok(self.chunk(cursor, |s| s.deleted += 1))
    }
}

/// Runs `queue`'s owner until `work` holds in its chunk `HELD_AT`, then stops the owner,
/// lets the chunk go, and waits for the owner to end.
async fn stop_the_owner_while_held(
    queue: &Arc<JobQueue>,
    reorg: &Arc<HeldReorg>,
    work: JobKind,
) -> u64 {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let owner = tokio::spawn(queue.clone().run_owner(stopped));
    let q = queue.clone();
    let job = tokio::task::spawn_blocking(move || q.submit(work, "held".into()))
        .await
        .unwrap()
        .unwrap();
    reorg.await_holding().await;
    stop.send(true).unwrap();
    reorg.release();
    tokio::time::timeout(WAIT, owner)
        .await
        .expect("the owner ends once its work has")
        .unwrap();
    job.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_owners_scans_and_deletions_end_at_their_next_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let catalog = catalog(&engine, 1);
    let cfg = DdlConfig {
        backfill_rows_per_s: 0,
        cleanup_records_per_s: 0,
        ..fast_retries()
    };

    // A backfill: the chunk it was in when the owner stopped is its last, and its
    // checkpoint says so (the next owner resumes there).
    let reorg = Arc::new(HeldReorg::default());
    let queue = JobQueue::open(
        engine.clone(),
        catalog.clone(),
        cfg.clone(),
        Some(reorg.clone()),
    )
    .unwrap();
    let id = stop_the_owner_while_held(&queue, &reorg, add_index("i")).await;
    assert_eq!(reorg.state.lock().scanned, HeldReorg::HELD_AT + 1);
    let job = queue.get(id).unwrap();
    assert!(!job.is_finished(), "{job:?}");
    assert_eq!(job.reorg_rows, (HeldReorg::HELD_AT + 1) * 10);
    drop(queue);

    // The deletion of a dropped table's rows (on a fresh engine: the backfill above
    // would resume).
    let dir = tempfile::tempdir().unwrap();
    let engine = self::engine(dir.path());
    let catalog = self::catalog(&engine, 1);
    let reorg = Arc::new(HeldReorg::default());
    let queue = JobQueue::open(engine, catalog, cfg, Some(reorg.clone())).unwrap();
    let drop_table = JobKind::DropTable {
        table_id: 1,
        table: "t1".into(),
    };
    let id = stop_the_owner_while_held(&queue, &reorg, drop_table).await;
    assert_eq!(reorg.state.lock().deleted, HeldReorg::HELD_AT + 1);
    let job = queue.get(id).unwrap();
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert!(job.cleanup_pending(), "rows are left to delete: {job:?}");
}
