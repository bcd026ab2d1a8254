//! Schema leases (F1): every SQL node holds the schema under a lease it renews, reporting
//! the newest catalog version it has loaded and the oldest one any of its transactions
//! still uses. The DDL owner moves a schema change on only once every live node uses the
//! version it published; a node whose lease lapsed refuses queries, so it counts as gone.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_storage::{Cf, EngineRef, WriteBatch};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use flotilla_types::version::ClusterVersion;

use crate::job::JobError;

const NODE_PREFIX: &[u8] = b"ddl/node/";

fn node_key(id: u64) -> Vec<u8> {
    let mut k = NODE_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A node's last report.
#[derive(Debug, Clone, Copy)]
struct NodeLease {
    /// Newest catalog version loaded.
    loaded: u64,
    /// Oldest catalog version any of its open transactions uses.
    in_use: u64,
    /// At or below the start_ts of every transaction it has open or will open; 0:
    /// unknown.
    oldest_start_ts: u64,
    /// When this owner last heard from it (`None`: registered before this owner
    /// started, not heard from since).
    renewed: Option<Instant>,
    /// The cluster version its build understands, as it reported (`None`: not heard
    /// from, or a build that predates versions).
    binary_version: Option<ClusterVersion>,
}

#[derive(Serialize, Deserialize)]
struct NodeRecord {
    registered_ms: u64,
}

/// What a renewal grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// How long the lease lasts from when the renewal was sent.
    pub lease_ms: u64,
    /// The newest catalog version published by the owner.
    pub version: u64,
    /// The cluster's version (`None`: an owner that predates versions, the base one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_version: Option<ClusterVersion>,
}

/// The leases of the SQL nodes, kept by the DDL owner. Nodes are registered (persisted)
/// on their first renewal, so an owner that takes over after a failover knows which nodes
/// may still be serving and waits for each to renew or for its lease to lapse.
pub struct SchemaLeases {
    engine: EngineRef,
    lease: Duration,
    nodes_max: usize,
    started: Instant,
    nodes: Mutex<HashMap<u64, NodeLease>>,
    renewed: Condvar,
    /// Serialises the writers of node records (registrations, releases, forgetting the
    /// lapsed), each with its change to `nodes`, without holding `nodes` across a write.
    writes: Mutex<()>,
}

fn storage_error(e: impl std::fmt::Display) -> JobError {
    JobError::retryable(
        "40001",
        format!("schema lease storage unavailable: {e}; retry"),
    )
}

impl SchemaLeases {
    /// Loads the registered nodes from `engine`.
    pub fn open(engine: EngineRef, lease: Duration, nodes_max: usize) -> Result<Self, JobError> {
        let mut nodes = HashMap::new();
        let mut end = NODE_PREFIX.to_vec();
        *end.last_mut().expect("non-empty") += 1;
        for item in engine.scan(Cf::Meta, NODE_PREFIX, &end, false) {
            let (key, _) = item.map_err(storage_error)?;
            let Ok(id) = <[u8; 8]>::try_from(&key[NODE_PREFIX.len()..]) else {
                continue;
            };
            nodes.insert(
                u64::from_be_bytes(id),
                NodeLease {
                    loaded: 0,
                    in_use: 0,
                    oldest_start_ts: 0,
                    renewed: None,
                    binary_version: None,
                },
            );
        }
        Ok(Self {
            engine,
            lease,
            nodes_max,
            started: Instant::now(),
            nodes: Mutex::new(nodes),
            renewed: Condvar::new(),
            writes: Mutex::new(()),
        })
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Renews `node`'s lease with its report (blocking: a node's first renewal is
    /// persisted).
    pub fn renew(
        &self,
        node: u64,
        loaded: u64,
        in_use: u64,
        oldest_start_ts: u64,
        binary_version: Option<ClusterVersion>,
    ) -> Result<(), JobError> {
        // No write under the lock: in a cluster a write is a Raft round trip, and the
        // meta leader's async tasks read the leases (`binary_versions`, `oldest_start_ts`)
        // on runtime threads that the round trip's messages need.
        // A node unknown, or known but lapsed (it may be being forgotten, its record
        // deleted), is registered: under `writes`, so no forgetting interleaves.
        let registered = |nodes: &HashMap<u64, NodeLease>| {
            nodes
                .get(&node)
                .is_some_and(|l| self.live(l, Instant::now()))
        };
        let mut _writes = None;
        if !registered(&self.nodes.lock()) {
            _writes = Some(self.writes.lock());
        }
        if _writes.is_some() && !registered(&self.nodes.lock()) {
            let full = self.nodes.lock().len() >= self.nodes_max;
            if full {
                self.forget_lapsed();
            }
            let count = self.nodes.lock().len();
            if count >= self.nodes_max {
                return Err(JobError::retryable(
                    "53000",
                    format!(
                        "too many SQL nodes hold schema leases ({}); retry later",
                        self.nodes_max
                    ),
                ));
            }
            let record = NodeRecord {
                registered_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            };
            let mut batch = WriteBatch::new();
            batch.put(
                Cf::Meta,
                node_key(node),
                serde_json::to_vec(&record).map_err(storage_error)?,
            );
            self.engine.write(batch, true).map_err(storage_error)?;
        }
        let mut nodes = self.nodes.lock();
        nodes.insert(
            node,
            NodeLease {
                loaded,
                in_use: in_use.min(loaded),
                oldest_start_ts,
                renewed: Some(Instant::now()),
                binary_version,
            },
        );
        drop(nodes);
        self.renewed.notify_all();
        Ok(())
    }

    /// Forgets `node` (it stopped serving).
    pub fn release(&self, node: u64) -> Result<(), JobError> {
        let _writes = self.writes.lock();
        let mut batch = WriteBatch::new();
        batch.delete(Cf::Meta, node_key(node));
        self.engine.write(batch, true).map_err(storage_error)?;
        self.nodes.lock().remove(&node);
        self.renewed.notify_all();
        Ok(())
    }

    /// Forgets every node registered before this owner started and not heard from since.
    /// Only for an owner that shares its process with every SQL node it serves (a
    /// standalone): such nodes belonged to an earlier run of the process, so none can be
    /// serving, and waiting for their leases to lapse would hold up the first schema
    /// change after every restart by up to a lease.
    pub fn forget_earlier_runs(&self) -> Result<(), JobError> {
        // The record is written under `writes`, never under `nodes`, as everywhere here.
        let _writes = self.writes.lock();
        let earlier: Vec<u64> = self
            .nodes
            .lock()
            .iter()
            .filter(|(_, l)| l.renewed.is_none())
            .map(|(id, _)| *id)
            .collect();
        if earlier.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for id in &earlier {
            batch.delete(Cf::Meta, node_key(*id));
        }
        self.engine.write(batch, true).map_err(storage_error)?;
        // A renewal in between only refreshed a known node (registrations wait for
        // `writes`): forgotten with its record, it registers again at its next renewal.
        let mut nodes = self.nodes.lock();
        for id in earlier {
            nodes.remove(&id);
        }
        drop(nodes);
        self.renewed.notify_all();
        Ok(())
    }

    /// True while `lease` may still be held: heard from within a lease, or registered and
    /// not heard from since this owner started less than a lease ago.
    fn live(&self, lease: &NodeLease, now: Instant) -> bool {
        let since = lease.renewed.unwrap_or(self.started);
        now.saturating_duration_since(since) < self.lease
    }

    /// Drops nodes whose lease lapsed (they refuse queries now) from memory and disk
    /// (written without the lock held, as in `renew`).
    fn forget_lapsed(&self) {
        // Callers hold `writes`.
        let lapsed: Vec<u64> = {
            let now = Instant::now();
            self.nodes
                .lock()
                .iter()
                .filter(|(_, l)| !self.live(l, now))
                .map(|(id, _)| *id)
                .collect()
        };
        if lapsed.is_empty() {
            return;
        }
        let mut batch = WriteBatch::new();
        for id in &lapsed {
            batch.delete(Cf::Meta, node_key(*id));
        }
        if self.engine.write(batch, true).is_ok() {
            // A renewal in between only refreshed a known node (registrations wait
            // for `writes`), so each of them is forgotten, as its record is.
            let mut nodes = self.nodes.lock();
            for id in lapsed {
                nodes.remove(&id);
            }
        }
    }

    /// Blocks until every live node uses `version` or newer (its oldest transaction too),
    /// or fails retryably after `timeout` naming a node that does not.
    pub fn wait_for(&self, version: u64, timeout: Duration) -> Result<(), JobError> {
        let deadline = Instant::now() + timeout;
        let mut nodes = self.nodes.lock();
        loop {
            let now = Instant::now();
            let behind = nodes
                .iter()
                .filter(|(_, l)| self.live(l, now) && l.in_use < version)
                .map(|(id, l)| (*id, *l))
                .min_by_key(|(_, l)| l.renewed.is_some());
            let Some((id, lease)) = behind else {
                return Ok(());
            };
            if now >= deadline {
                let what = match lease.renewed {
                    None => "has not renewed its lease since this owner started".to_string(),
                    Some(_) if lease.loaded < version => {
                        format!("has loaded schema version {} only", lease.loaded)
                    }
                    Some(_) => format!(
                        "has a transaction still using schema version {}",
                        lease.in_use
                    ),
                };
                return Err(JobError::retryable(
                    "55P03",
                    format!(
                        "waited {} ms for SQL nodes to use schema version {version}: node {id:x} {what}",
                        timeout.as_millis()
                    ),
                ));
            }
            // Wake when a report arrives, or when the laggard's lease would lapse.
            let lapse = lease.renewed.unwrap_or(self.started) + self.lease;
            let until = deadline.min(lapse).max(now + Duration::from_millis(1));
            self.renewed.wait_until(&mut nodes, until);
        }
    }

    /// A timestamp at or below the start_ts of every transaction a live node has open or
    /// will open: the GC safe point must not pass it. `u64::MAX` with no live node; 0
    /// while a node registered before this owner started has not reported yet (it may
    /// still be serving old snapshots).
    pub fn oldest_start_ts(&self) -> u64 {
        let now = Instant::now();
        self.nodes
            .lock()
            .values()
            .filter(|l| self.live(l, now))
            .map(|l| l.oldest_start_ts)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Each node that may hold a lease: its id, whether this owner has heard from it, and
    /// the cluster version it reported (`None`: not heard from, or a build that predates
    /// versions).
    pub fn binary_versions(&self) -> Vec<(u64, bool, Option<ClusterVersion>)> {
        let now = Instant::now();
        let mut versions: Vec<_> = self
            .nodes
            .lock()
            .iter()
            .filter(|(_, l)| self.live(l, now))
            .map(|(id, l)| (*id, l.renewed.is_some(), l.binary_version))
            .collect();
        versions.sort_unstable();
        versions
    }

    /// Nodes currently holding a lease.
    pub fn live_nodes(&self) -> usize {
        let now = Instant::now();
        self.nodes
            .lock()
            .values()
            .filter(|l| self.live(l, now))
            .count()
    }
}
