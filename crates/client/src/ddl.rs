//! DDL jobs of a SQL node in a cluster: submitted to, and run by, the meta leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_ddl::wire::{Request, Response, WAIT_SLICE_MS_MAX};
use flotilla_ddl::{DdlJobs, Job, JobError, JobKind, JobState, LeaseGrant};
use flotilla_proto::metaservicepb::DdlRequest;

use crate::catalog::RemoteCatalog;
use crate::error::ClientError;
use crate::meta_client::MetaClient;

/// The meta service's job queue, seen from a SQL node. A job that is done has its change
/// in this node's catalog before `wait` returns it.
pub struct RemoteDdl {
    meta: Arc<MetaClient>,
    catalog: Arc<RemoteCatalog>,
}

fn unavailable(e: ClientError) -> JobError {
    JobError::retryable(
        "40001",
        format!("the meta service did not answer a DDL request: {e}; retry"),
    )
}

fn unexpected(answer: Response) -> JobError {
    JobError::fatal(
        "XX000",
        format!("unexpected DDL answer from the meta service: {answer:?}"),
    )
}

impl RemoteDdl {
    /// Jobs through `meta`; done jobs are waited for in `catalog`.
    pub fn new(meta: Arc<MetaClient>, catalog: Arc<RemoteCatalog>) -> Arc<Self> {
        Arc::new(Self { meta, catalog })
    }

    async fn call(&self, request: Request) -> Result<Response, JobError> {
        let json = serde_json::to_vec(&request)
            .map_err(|e| JobError::fatal("XX000", format!("encoding a DDL request: {e}")))?;
        let r = self
            .meta
            .call("ddl", |mut c| {
                let request_json = json.clone().into();
                async move { c.ddl(DdlRequest { request_json }).await }
            })
            .await
            .map_err(unavailable)?;
        match serde_json::from_slice::<Response>(&r.response_json) {
            Ok(Response::Error(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(e) => Err(JobError::fatal(
                "XX000",
                format!("undecodable DDL answer from the meta service: {e}"),
            )),
        }
    }

    async fn job(&self, request: Request) -> Result<Job, JobError> {
        match self.call(request).await? {
            Response::Job(job) => Ok(*job),
            other => Err(unexpected(other)),
        }
    }

    /// Turns the meta leader's DDL failpoint on or off (tests).
    pub async fn set_failpoint(&self, on: bool) -> Result<(), JobError> {
        self.call(Request::SetFailpoint { on }).await.map(|_| ())
    }

    /// Refreshes the catalog until it holds `version` (a done job's change).
    async fn catch_up(&self, version: u64, deadline: Instant) -> Result<(), JobError> {
        use flotilla_catalog::Catalog;
        let mut pause = Duration::from_millis(5);
        while self.catalog.snapshot().version < version {
            if let Err(e) = self.catalog.refresh().await {
                tracing::debug!("catalog refresh after a DDL job: {e}");
            }
            if self.catalog.snapshot().version >= version {
                break;
            }
            if Instant::now() >= deadline {
                return Err(JobError::retryable(
                    "40001",
                    format!(
                        "the DDL job is done but this node could not load schema version {version}; retry"
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl DdlJobs for RemoteDdl {
    async fn submit(&self, kind: JobKind, request_id: String) -> Result<Job, JobError> {
        let job = self
            .job(Request::Submit {
                kind: Box::new(kind),
                request_id,
            })
            .await?;
        // A retried submission may find its job already done.
        if job.state == JobState::Done
            && let Some(version) = job.schema_version
        {
            self.catch_up(version, Instant::now() + Duration::from_secs(5))
                .await?;
        }
        Ok(job)
    }

    async fn wait(&self, id: u64, timeout: Duration) -> Result<Job, JobError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout_ms = (left.as_millis() as u64).min(WAIT_SLICE_MS_MAX);
            let job = self.job(Request::Wait { id, timeout_ms }).await?;
            if job.state == JobState::Done
                && let Some(version) = job.schema_version
            {
                self.catch_up(
                    version,
                    deadline.max(Instant::now() + Duration::from_secs(5)),
                )
                .await?;
            }
            if job.is_finished() || left.is_zero() {
                return Ok(job);
            }
        }
    }

    async fn list(&self) -> Result<Vec<Job>, JobError> {
        match self.call(Request::List).await? {
            Response::Jobs(jobs) => Ok(jobs),
            other => Err(unexpected(other)),
        }
    }

    async fn cancel(&self, id: u64) -> Result<Job, JobError> {
        self.job(Request::Cancel { id }).await
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
        let poll_ms = (poll.as_millis() as u64).min(WAIT_SLICE_MS_MAX);
        match self
            .call(Request::Lease {
                node,
                loaded,
                in_use,
                oldest_start_ts,
                binary_version,
                poll_ms,
            })
            .await?
        {
            Response::Lease(grant) => Ok(grant),
            other => Err(unexpected(other)),
        }
    }

    async fn release_lease(&self, node: u64) -> Result<(), JobError> {
        self.call(Request::Release { node }).await.map(|_| ())
    }
}
