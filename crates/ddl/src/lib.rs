//! The DDL job framework: a schema change is a job, persisted next to the catalog it
//! changes and run one idempotent step at a time by a single owner: in a cluster the meta
//! leader (so a job survives the death of the SQL node that submitted it and resumes on
//! the next leader), in standalone the process itself.
//!
//! - **Bounded.** At most `jobs_max` (128) jobs queued or running; past it a submission
//!   fails at once with a retryable error (SQLSTATE 53000). Finished records are removed
//!   after `finished_ttl` (and past `finished_max`).
//! - **One table at a time.** A table's jobs run one after the other, in submission
//!   order; jobs on different tables run side by side.
//! - **Retries** only for retryable failures, with exponential backoff and jitter; any
//!   other failure fails the job, and nothing of it stays in the catalog.
//! - **Idempotent steps.** A step commits its schema change and the job's new record in
//!   one write, so a step re-run after a crash finds itself done.
//! - **Joined submissions.** A submission identical to an active job (same table, same
//!   change) joins it; a client's retry of a submission (same request id) gets the
//!   original job back.
//!
//! Architecture invariant: knows catalog definitions and persists through the storage
//! seam; never parses SQL, never reaches the network (the meta service and the SQL node
//! carry its jobs over the wire).

mod alter;
mod check;
mod foreign;
mod index;
mod job;
mod leases;
mod queue;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use alter::{add_column, apply_alter, widens};
pub use check::{
    Validated, find_constraint, no_constraint, plan_add_check, remove_constraint, set_validated,
};
pub use foreign::{check_references_exist, plan_add_foreign_key};
pub use index::{NewIndex, index_to_drop, plan_add_index, set_index_state};
pub use job::{
    AlterAction, CheckRewrite, Cleanup, ColumnSpec, DataRange, Job, JobError, JobKind, JobState,
};
pub use leases::{LeaseGrant, SchemaLeases};
pub use queue::{DdlConfig, JobQueue};
use tokio::sync::watch;

/// How a SQL node submits and follows DDL jobs: in process (standalone) or through the
/// meta service (cluster).
#[async_trait::async_trait]
pub trait DdlJobs: Send + Sync + 'static {
    /// Submits a job (see [`JobQueue::submit`] for joining and idempotency).
    async fn submit(&self, kind: JobKind, request_id: String) -> Result<Job, JobError>;

    /// Waits until job `id` finishes or `timeout` passes and returns its record. Once a
    /// job is done, this node's catalog already holds its change.
    async fn wait(&self, id: u64, timeout: Duration) -> Result<Job, JobError>;

    /// Every job record, oldest first.
    async fn list(&self) -> Result<Vec<Job>, JobError>;

    /// Cancels job `id` (see [`JobQueue::cancel`]).
    async fn cancel(&self, id: u64) -> Result<Job, JobError>;

    /// Renews this SQL node's schema lease, reporting the newest catalog version it has
    /// loaded, the oldest one its open transactions use, and a timestamp at or below the
    /// start_ts of every transaction it has open or will open (0: unknown; the GC safe
    /// point stays below it); answers within `poll`, at once if a newer catalog version is
    /// published.
    /// `binary_version` is the cluster version the node's build understands (`None`: the
    /// base one); a node older than the cluster is refused (55000).
    #[allow(clippy::too_many_arguments)]
    async fn renew_lease(
        &self,
        node: u64,
        loaded: u64,
        in_use: u64,
        oldest_start_ts: u64,
        binary_version: Option<u32>,
        poll: Duration,
    ) -> Result<LeaseGrant, JobError>;

    /// Gives the lease up: the node stops serving.
    async fn release_lease(&self, node: u64) -> Result<(), JobError>;
}

/// Writes the entries of an index for a table's existing rows (the write-reorg step of
/// an index job), one bounded transaction at a time. The SQL layer implements it: it knows
/// how rows and index entries are encoded.
pub trait Reorg: Send + Sync + 'static {
    /// Backfills `index` for the rows of `table` from row key `cursor` (`None`: the
    /// first) in one transaction. Returns where the next chunk starts (`None`: done) and
    /// the rows it covered. A duplicate in a unique index (23505) or a NULL in a primary
    /// key (23502) is a fatal error. Blocking.
    fn backfill_chunk(
        &self,
        table: &flotilla_catalog::TableDef,
        index: &flotilla_catalog::IndexDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), JobError>;

    /// Checks the rows of `table` from row key `cursor` (`None`: the first), one bounded
    /// chunk read at a fresh snapshot, against `check`. Returns where the next chunk
    /// starts (`None`: done) and the rows it read. A row that makes the check false is a
    /// fatal error (23514). Blocking.
    fn check_chunk(
        &self,
        table: &flotilla_catalog::TableDef,
        check: &flotilla_catalog::CheckDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), JobError>;

    /// Checks the rows of `table` from row key `cursor` (`None`: the first), one bounded
    /// chunk read at a fresh snapshot, against foreign key `fk`: each row whose key
    /// columns are all non-NULL must find its row in `parent` at the same snapshot.
    /// Returns where the next chunk starts (`None`: done) and the rows it read. A row
    /// without its referenced row is a fatal error (23503). Blocking.
    fn foreign_key_chunk(
        &self,
        table: &flotilla_catalog::TableDef,
        fk: &flotilla_catalog::ForeignKeyDef,
        parent: &flotilla_catalog::TableDef,
        cursor: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, u64), JobError>;

    /// Deletes a bounded part of `range`'s data from `cursor` (`None`: its start): at
    /// least `limit` records, whole keys. Returns where the next part starts (`None`: the
    /// range holds no more data). Only for data no SQL node can reach any more. Blocking.
    fn delete_range_chunk(
        &self,
        range: &DataRange,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, JobError>;
}

/// Shared handle to a reorg worker.
pub type ReorgRef = Arc<dyn Reorg>;

/// Shared handle to the DDL jobs service.
pub type DdlJobsRef = Arc<dyn DdlJobs>;

/// The in-process job service of a standalone node: the queue and its owner task, which
/// stops when this is dropped.
pub struct LocalDdl {
    queue: Arc<JobQueue>,
    stop: watch::Sender<bool>,
}

impl LocalDdl {
    /// Starts the owner of `queue` on the current runtime.
    pub fn start(queue: Arc<JobQueue>) -> Arc<Self> {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(queue.clone().run_owner(stopped));
        Arc::new(Self { queue, stop })
    }

    /// The queue (tests, failpoints).
    pub fn queue(&self) -> &Arc<JobQueue> {
        &self.queue
    }
}

impl Drop for LocalDdl {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobError::fatal("XX000", format!("DDL task failed: {e}")))?
}

#[async_trait::async_trait]
impl DdlJobs for LocalDdl {
    async fn submit(&self, kind: JobKind, request_id: String) -> Result<Job, JobError> {
        let q = self.queue.clone();
        blocking(move || q.submit(kind, request_id)).await
    }

    async fn wait(&self, id: u64, timeout: Duration) -> Result<Job, JobError> {
        self.queue.wait(id, timeout).await
    }

    async fn list(&self) -> Result<Vec<Job>, JobError> {
        Ok(self.queue.list())
    }

    async fn cancel(&self, id: u64) -> Result<Job, JobError> {
        let q = self.queue.clone();
        blocking(move || q.cancel(id)).await
    }

    async fn renew_lease(
        &self,
        node: u64,
        loaded: u64,
        in_use: u64,
        oldest_start_ts: u64,
        binary_version: Option<u32>,
        poll: Duration,
    ) -> Result<LeaseGrant, JobError> {
        self.queue
            .renew_lease(node, loaded, in_use, oldest_start_ts, binary_version, poll)
            .await
    }

    async fn release_lease(&self, node: u64) -> Result<(), JobError> {
        let q = self.queue.clone();
        blocking(move || q.leases().release(node)).await
    }
}

#[cfg(test)]
mod tests;
