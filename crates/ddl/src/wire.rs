//! DDL job requests and answers as they travel between a SQL node and the meta service
//! (JSON inside the `Ddl` RPC).

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobError, JobKind};
use crate::leases::LeaseGrant;

/// Longest wait one `Wait` request may ask for; longer waits are several requests, each
/// within the RPC timeout.
pub const WAIT_SLICE_MS_MAX: u64 = 2_000;

/// What a SQL node asks of the meta leader's job queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Submit a job.
    Submit {
        /// The change (boxed: a job kind is far larger than any other request; the
        /// JSON is the same).
        kind: Box<JobKind>,
        /// The submission's idempotency key.
        request_id: String,
    },
    /// Wait (up to `timeout_ms`, at most `WAIT_SLICE_MS_MAX`) for a job to finish.
    Wait {
        /// The job.
        id: u64,
        /// How long.
        timeout_ms: u64,
    },
    /// Every job record.
    List,
    /// Cancel a job.
    Cancel {
        /// The job.
        id: u64,
    },
    /// Renew a SQL node's schema lease (see `DdlJobs::renew_lease`).
    Lease {
        /// The node.
        node: u64,
        /// Newest catalog version it loaded.
        loaded: u64,
        /// Oldest catalog version its transactions use.
        in_use: u64,
        /// At or below every start_ts it has open or will open (0, or absent from an
        /// older node: unknown).
        #[serde(default)]
        oldest_start_ts: u64,
        /// The cluster version the node's build understands (absent: a build that
        /// predates versions, the base one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary_version: Option<u32>,
        /// Longest wait for a newer version, at most `WAIT_SLICE_MS_MAX`.
        poll_ms: u64,
    },
    /// Give a node's lease up.
    Release {
        /// The node.
        node: u64,
    },
    /// Turn the failpoint that fails every step retryably on or off (tests).
    SetFailpoint {
        /// On or off.
        on: bool,
    },
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// One job's record.
    Job(Box<Job>),
    /// Every record.
    Jobs(Vec<Job>),
    /// A renewed lease.
    Lease(LeaseGrant),
    /// Done, nothing to return.
    Ok,
    /// The request failed.
    Error(JobError),
}
