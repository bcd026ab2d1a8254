use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_mvcc::{IngestEntry, Lock, LockKind, MissingPrimary, Mutation, MutationOp, TxnStatus};
use flotilla_proto::kvpb::store_client::StoreClient;
use flotilla_proto::kvpb::{
    self, CheckTxnStatusRequest, CommitRequest, Context, DeleteRangeRequest, GetRequest,
    HeartbeatRequest, IngestRequest, KeysRequest, KvRequest, KvResponse, LockKey,
    PessimisticLockRequest, PrewriteRequest, RegionError, ResolveLockRequest, ScanRequest,
    key_error, kv_request, region_error,
};
use flotilla_tso::TsoRef;
use flotilla_txn::{LockRequest, TxnError, TxnKv, lock_ttl_ms_after};
use flotilla_types::Timestamp;
use parking_lot::Mutex;
use tonic::transport::Channel;

use crate::backoff::Backoff;
use crate::kv_stream::KvStream;
use crate::meta_client::{ClientConfig, channel_on};
use crate::region_cache::{CachedRegion, RegionCache};
use crate::{decode_boundary, encode_key};

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The longest a lock waiter sleeps before looking again (waits are polled: a holder's
/// release is not pushed to waiters on other nodes).
const LOCK_POLL_MAX: Duration = Duration::from_millis(50);

/// The longest one pessimistic-lock request waits at a store for a lock's release; then
/// the client re-checks the holder (it may have died) and asks again.
const STORE_LOCK_WAIT_MAX: Duration = Duration::from_millis(500);

/// `TxnKv` over the regions of a cluster. Each command goes to the leader of the region
/// holding its keys; routing errors refresh the region cache and retry with backoff
/// within `ClientConfig::retry_budget`; a lock of another transaction is resolved when
/// its transaction is decided (a dead coordinator's lock lapses after its TTL and is then
/// rolled back at its primary) and waited for otherwise, with deadlock detection at the
/// meta service.
#[derive(Clone)]
pub struct ClusterTxnKv {
    cache: Arc<RegionCache>,
    tso: TsoRef,
    cfg: ClientConfig,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// One command stream per store address.
    streams: Arc<Mutex<HashMap<String, Arc<KvStream>>>>,
    /// The runtime the client was made on: its channels' tasks and background commits
    /// run there (not on a subquery's short-lived runtime).
    runtime: Option<tokio::runtime::Handle>,
    /// Permits for secondary commits running after `commit` returned.
    background_commits: Arc<tokio::sync::Semaphore>,
}

/// What one attempt at a region produced.
enum Attempt {
    Done(Box<KvResponse>),
    Retry(String),
}

fn key_error_to_txn(e: &kvpb::KeyError) -> TxnError {
    match &e.kind {
        Some(key_error::Kind::Conflict(c)) => TxnError::WriteConflict {
            for_update_ts: Timestamp(c.for_update_ts),
            conflict_commit_ts: Timestamp(c.conflict_commit_ts),
        },
        Some(key_error::Kind::AlreadyExists(key)) => TxnError::AlreadyExists { key: key.to_vec() },
        Some(key_error::Kind::TxnLockNotFound(_)) => TxnError::Aborted,
        Some(key_error::Kind::Committed(c)) => TxnError::Internal(format!(
            "transaction {} is already committed at {}",
            c.start_ts, c.commit_ts
        )),
        Some(key_error::Kind::SnapshotTooOld(s)) => TxnError::SnapshotTooOld {
            read_ts: Timestamp(s.read_ts),
            safe_point: Timestamp(s.safe_point),
        },
        _ => TxnError::Internal(e.message.clone()),
    }
}

fn locked(resp: &KvResponse) -> Option<kvpb::LockInfo> {
    match resp.key_error.as_ref()?.kind.as_ref()? {
        key_error::Kind::Locked(l) => Some(l.clone()),
        _ => None,
    }
}

fn check(resp: &KvResponse) -> Result<(), TxnError> {
    match &resp.key_error {
        Some(e) => Err(key_error_to_txn(e)),
        None => Ok(()),
    }
}

fn lock_kind(kind: u32) -> LockKind {
    match kind {
        0 => LockKind::Put,
        1 => LockKind::Delete,
        2 => LockKind::Lock,
        4 => LockKind::Shared,
        5 => LockKind::SharedPrewritten,
        _ => LockKind::Pessimistic,
    }
}

impl ClusterTxnKv {
    /// A `TxnKv` routing through `cache`, asking `tso` for the time when judging locks.
    pub fn new(cache: Arc<RegionCache>, tso: TsoRef, cfg: ClientConfig) -> Self {
        Self {
            cache,
            tso,
            cfg,
            channels: Arc::new(Mutex::new(HashMap::new())),
            streams: Arc::new(Mutex::new(HashMap::new())),
            runtime: tokio::runtime::Handle::try_current().ok(),
            background_commits: Arc::new(tokio::sync::Semaphore::new(Self::BACKGROUND_COMMITS_MAX)),
        }
    }

    /// Secondary commits that may run after their transaction's `commit` returned; past
    /// it, `commit` waits for its secondaries itself.
    pub const BACKGROUND_COMMITS_MAX: usize = 1_024;

    /// The region cache.
    pub fn cache(&self) -> &Arc<RegionCache> {
        &self.cache
    }

    fn client(&self, addr: &str) -> Result<StoreClient<Channel>, TxnError> {
        Ok(StoreClient::new(self.channel(addr)?))
    }

    fn channel(&self, addr: &str) -> Result<Channel, TxnError> {
        let mut channels = self.channels.lock();
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = channel_on(self.runtime.as_ref(), addr, &self.cfg)
                    .map_err(|e| TxnError::Internal(e.to_string()))?;
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(channel)
    }

    /// The command stream to `addr`, opened (or reopened, after it ended) on first use.
    fn stream(&self, addr: &str) -> Result<Arc<KvStream>, TxnError> {
        if let Some(s) = self.streams.lock().get(addr)
            && s.is_open()
        {
            return Ok(s.clone());
        }
        let channel = self.channel(addr)?;
        let opened = Arc::new(KvStream::open(
            self.runtime.as_ref(),
            channel,
            self.cfg.kv_stream_queue_max,
        ));
        let mut streams = self.streams.lock();
        // Another caller may have opened one meanwhile: every caller shares it.
        match streams.get(addr) {
            Some(s) if s.is_open() => Ok(s.clone()),
            _ => {
                streams.insert(addr.to_string(), opened.clone());
                Ok(opened)
            }
        }
    }

    fn unavailable(&self, what: &str, last: &str) -> TxnError {
        TxnError::Unavailable(format!(
            "{what} did not succeed within {:?} ({last})",
            self.cfg.retry_budget
        ))
    }

    /// Learns from a routing error; the caller retries.
    fn on_region_error(&self, region: &CachedRegion, e: &RegionError) {
        let id = region.region.id;
        match &e.kind {
            Some(region_error::Kind::NotLeader(nl)) => {
                let leader = nl.leader.filter(|p| p.id != 0);
                self.cache.set_leader(id, leader);
                if leader.is_none() {
                    self.rotate_leader(region);
                }
            }
            Some(region_error::Kind::EpochNotMatch(m)) if !m.current.is_empty() => {
                self.cache.invalidate(id);
                self.cache.update_regions(&m.current);
            }
            Some(region_error::Kind::ServerIsBusy(_))
            | Some(region_error::Kind::StaleCommand(_)) => {}
            _ => self.cache.invalidate(id),
        }
    }

    /// Points the cache at the next peer of the region (the leader is unknown or gone).
    fn rotate_leader(&self, region: &CachedRegion) {
        let peers = &region.region.peers;
        if peers.is_empty() {
            return;
        }
        let next = match region.leader {
            Some(l) => peers
                .iter()
                .position(|p| p.id == l.id)
                .map(|i| (i + 1) % peers.len())
                .unwrap_or(0),
            None => rand::random_range(0..peers.len()),
        };
        self.cache.set_leader(region.region.id, Some(peers[next]));
    }

    /// Sends `cmd` once to the peer the cache names for `region`.
    async fn attempt(&self, region: &CachedRegion, cmd: kv_request::Cmd) -> Attempt {
        let started = Instant::now();
        let attempt = self.attempt_once(region, cmd).await;
        if let Attempt::Retry(why) = &attempt {
            // Why a request waited: failovers are timed from these.
            tracing::debug!(
                region_id = region.region.id,
                to_store = region.leader.map(|p| p.store_id).unwrap_or(0),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "kv attempt to retry: {why}"
            );
        }
        attempt
    }

    async fn attempt_once(&self, region: &CachedRegion, cmd: kv_request::Cmd) -> Attempt {
        let peer = match region
            .leader
            .or_else(|| region.region.peers.first().copied())
        {
            Some(p) => p,
            None => return Attempt::Retry("region has no peers".into()),
        };
        let addr = match self.cache.store_address(peer.store_id).await {
            Ok(a) => a,
            Err(e) => return Attempt::Retry(e.to_string()),
        };
        let stream = match self.stream(&addr) {
            Ok(s) => s,
            Err(e) => return Attempt::Retry(e.to_string()),
        };
        let req = KvRequest {
            context: Some(Context {
                region_id: region.region.id,
                epoch: region.region.epoch,
            }),
            cmd: Some(cmd),
        };
        let answer = match tokio::time::timeout(self.cfg.kv_timeout, stream.call(req)).await {
            Ok(answer) => answer,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {:?} (client kv_timeout)",
                self.cfg.kv_timeout
            ))),
        };
        match answer {
            Ok(resp) => {
                if let Some(e) = &resp.region_error {
                    self.on_region_error(region, e);
                    return Attempt::Retry(format!("region {}: {}", region.region.id, e.message));
                }
                Attempt::Done(Box::new(resp))
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                // This client's queue for the store is full: the store and the stream are
                // fine, so the retry (after a backoff) goes the same way.
                Attempt::Retry(format!(
                    "store {} at {addr}: {}",
                    peer.store_id,
                    status.message()
                ))
            }
            Err(status) => {
                // The store is down or unreachable: try another peer next time, over a
                // fresh connection.
                self.rotate_leader(region);
                self.cache.forget_store(peer.store_id);
                self.channels.lock().remove(&addr);
                self.streams.lock().remove(&addr);
                Attempt::Retry(format!(
                    "store {} at {addr}: {}",
                    peer.store_id,
                    status.message()
                ))
            }
        }
    }

    /// Sends a one-key command to the leader of the region holding `key` (a user key).
    async fn route(
        &self,
        what: &str,
        key: &[u8],
        make: impl Fn() -> kv_request::Cmd,
    ) -> Result<KvResponse, TxnError> {
        let (_, resp) = self.route_in_region(what, key, |_| make()).await?;
        Ok(resp)
    }

    /// `route`, with the command made for the region that will get it (a range command
    /// clipped to it); returns that region with the answer.
    async fn route_in_region(
        &self,
        what: &str,
        key: &[u8],
        make: impl Fn(&CachedRegion) -> kv_request::Cmd,
    ) -> Result<(CachedRegion, KvResponse), TxnError> {
        let encoded = encode_key(key);
        let mut backoff = Backoff::routing(self.cfg.retry_budget);
        loop {
            let last = match self.cache.locate(&encoded).await {
                Ok(region) => match self.attempt(&region, make(&region)).await {
                    Attempt::Done(resp) => return Ok((region, *resp)),
                    Attempt::Retry(why) => why,
                },
                Err(e) => e.to_string(),
            };
            if backoff.wait().await.is_err() {
                return Err(self.unavailable(what, &last));
            }
        }
    }

    /// Sends a command per region for `items` (grouped by the region of each item's user
    /// key), retrying groups whose route failed. Answers are per group, in no order.
    async fn route_many<K: Clone>(
        &self,
        what: &str,
        items: Vec<K>,
        key_of: impl Fn(&K) -> &[u8],
        make: impl Fn(Vec<K>) -> kv_request::Cmd,
    ) -> Result<Vec<(Vec<K>, KvResponse)>, TxnError> {
        let mut backoff = Backoff::routing(self.cfg.retry_budget);
        let mut todo = items;
        let mut done = Vec::new();
        while !todo.is_empty() {
            let mut groups: Vec<(CachedRegion, Vec<K>)> = Vec::new();
            let mut last = String::new();
            let mut retry = Vec::new();
            for item in todo.drain(..) {
                match self.cache.locate(&encode_key(key_of(&item))).await {
                    Ok(region) => match groups
                        .iter_mut()
                        .find(|(r, _)| r.region.id == region.region.id)
                    {
                        Some((_, g)) => g.push(item),
                        None => groups.push((region, vec![item])),
                    },
                    Err(e) => {
                        last = e.to_string();
                        retry.push(item);
                    }
                }
            }
            let attempts = futures::future::join_all(
                groups
                    .iter()
                    .map(|(region, group)| self.attempt(region, make(group.clone()))),
            )
            .await;
            for ((_, group), attempt) in groups.into_iter().zip(attempts) {
                match attempt {
                    Attempt::Done(resp) => done.push((group, *resp)),
                    Attempt::Retry(why) => {
                        last = why;
                        retry.extend(group);
                    }
                }
            }
            todo = retry;
            if !todo.is_empty() && backoff.wait().await.is_err() {
                return Err(self.unavailable(what, &last));
            }
        }
        Ok(done)
    }

    /// Sends a keys-only command per region and fails on the first key error.
    async fn route_keys(
        &self,
        what: &str,
        keys: Vec<Vec<u8>>,
        make: impl Fn(Vec<Vec<u8>>) -> kv_request::Cmd,
    ) -> Result<(), TxnError> {
        for (_, resp) in self.route_many(what, keys, |k| k.as_slice(), make).await? {
            check(&resp)?;
        }
        Ok(())
    }

    /// Routes `items` as `route_many` does; a region's part stopped by a lock is sent again
    /// once the lock is settled (resolved, or waited for by `waiter`) until `deadline`.
    async fn route_settling<K: Clone>(
        &self,
        what: &str,
        items: Vec<K>,
        key_of: impl Fn(&K) -> &[u8],
        make: impl Fn(Vec<K>) -> kv_request::Cmd,
        waiter: Option<Timestamp>,
        deadline: Instant,
    ) -> Result<(), TxnError> {
        let started = Instant::now();
        let mut pending = items;
        while !pending.is_empty() {
            let answers = self
                .route_many(what, std::mem::take(&mut pending), &key_of, &make)
                .await?;
            let mut lock_met = None;
            for (group, resp) in answers {
                if let Some(lock) = locked(&resp) {
                    pending.extend(group);
                    lock_met = Some(lock);
                    continue;
                }
                check(&resp)?;
            }
            if let Some(lock) = lock_met {
                self.settle(lock, waiter, started, deadline).await?;
            }
        }
        Ok(())
    }

    /// Settles a lock that stopped a command: resolves it if its transaction is decided,
    /// otherwise waits a little (bounded by `deadline`) for it. `waiter` joins the
    /// wait-for graph (lock waits of writers), so a deadlock is refused, not waited out.
    async fn settle(
        &self,
        info: kvpb::LockInfo,
        waiter: Option<Timestamp>,
        started: Instant,
        deadline: Instant,
    ) -> Result<(), TxnError> {
        self.settle_then(info, waiter, started, deadline, true)
            .await
    }

    /// `settle`; with `nap` false a live lock is not waited for here (the caller asks the
    /// store to wait for its release) and the waiter's wait-for edge stays registered.
    async fn settle_then(
        &self,
        info: kvpb::LockInfo,
        waiter: Option<Timestamp>,
        started: Instant,
        deadline: Instant,
        nap: bool,
    ) -> Result<(), TxnError> {
        let missing = MissingPrimary::for_lock_met_at(&info.key, &info.primary);
        let status = self
            .check_txn_status(&info.primary, Timestamp(info.start_ts), missing)
            .await?;
        let commit_ts = match status {
            TxnStatus::Committed { commit_ts } => Some(commit_ts),
            TxnStatus::RolledBack => None,
            // The lock met was the primary, given back since: nothing to resolve.
            TxnStatus::Released => return Ok(()),
            TxnStatus::Locked { lock } => {
                if Instant::now() >= deadline {
                    return Err(TxnError::LockWaitTimeout {
                        waited_ms: started.elapsed().as_millis() as u64,
                    });
                }
                if let Some(waiter) = waiter {
                    let meta = self.cache.meta();
                    let deadlock = meta
                        .wait_for(waiter.0, info.start_ts, true)
                        .await
                        .map_err(|e| TxnError::Unavailable(e.to_string()))?;
                    if deadlock {
                        return Err(TxnError::Deadlock {
                            waiter,
                            holder: Timestamp(info.start_ts),
                        });
                    }
                }
                if !nap {
                    return Ok(());
                }
                let expires_at_ms = lock.start_ts.physical_ms().saturating_add(lock.ttl_ms);
                let until_expiry =
                    Duration::from_millis(expires_at_ms.saturating_sub(wall_clock_ms()).max(1));
                let nap = until_expiry
                    .min(LOCK_POLL_MAX)
                    .min(deadline.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(1));
                tokio::time::sleep(nap).await;
                if let Some(waiter) = waiter {
                    let _ = self
                        .cache
                        .meta()
                        .wait_for(waiter.0, info.start_ts, false)
                        .await;
                }
                return Ok(());
            }
        };
        self.resolve(vec![info.key.to_vec()], Timestamp(info.start_ts), commit_ts)
            .await
    }

    async fn resolve(
        &self,
        keys: Vec<Vec<u8>>,
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> Result<(), TxnError> {
        self.route_keys("resolve_lock", keys, |keys| {
            kv_request::Cmd::ResolveLock(ResolveLockRequest {
                keys: keys.into_iter().map(Into::into).collect(),
                start_ts: start_ts.0,
                commit_ts: commit_ts.map(|t| t.0).unwrap_or(0),
            })
        })
        .await
    }

    /// Makes encoded key `key` a region boundary (a no-op if it is one), splitting the
    /// region that holds it.
    pub async fn split_at(&self, key: &[u8]) -> Result<(), TxnError> {
        let mut backoff = Backoff::routing(self.cfg.retry_budget);
        loop {
            let last = match self.cache.locate(key).await {
                Ok(region) if region.region.start_key.as_ref() == key => return Ok(()),
                Ok(region) => {
                    let peer = region
                        .leader
                        .or_else(|| region.region.peers.first().copied());
                    match peer {
                        None => "region has no peers".to_string(),
                        Some(peer) => match self.cache.store_address(peer.store_id).await {
                            Err(e) => e.to_string(),
                            Ok(addr) => {
                                let mut client = self.client(&addr)?;
                                let req = kvpb::SplitRegionRequest {
                                    context: Some(Context {
                                        region_id: region.region.id,
                                        epoch: region.region.epoch,
                                    }),
                                    split_key: key.to_vec().into(),
                                };
                                match client.split_region(req).await {
                                    Ok(resp) => {
                                        let resp = resp.into_inner();
                                        if let Some(e) = &resp.region_error {
                                            self.on_region_error(&region, e);
                                            e.message.clone()
                                        } else if !resp.error.is_empty() {
                                            return Err(TxnError::Internal(resp.error));
                                        } else {
                                            self.cache.invalidate(region.region.id);
                                            self.cache.update_regions(&resp.regions);
                                            return Ok(());
                                        }
                                    }
                                    Err(status) => {
                                        self.rotate_leader(&region);
                                        status.message().to_string()
                                    }
                                }
                            }
                        },
                    }
                }
                Err(e) => e.to_string(),
            };
            if backoff.wait().await.is_err() {
                return Err(self.unavailable("split", &last));
            }
        }
    }

    /// Commits the group of keys with the primary first: that is the commit point. Later
    /// groups may fail without harm (their locks are resolved from the primary).
    async fn commit_groups(
        &self,
        keys: Vec<Vec<u8>>,
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<(), TxnError> {
        let Some(primary) = keys.first().cloned() else {
            return Ok(());
        };
        let make = move |keys: Vec<Vec<u8>>| {
            kv_request::Cmd::Commit(CommitRequest {
                keys: keys.into_iter().map(Into::into).collect(),
                start_ts: start_ts.0,
                commit_ts: commit_ts.0,
            })
        };
        let primary_enc = encode_key(&primary);
        let primary_region = self
            .cache
            .locate(&primary_enc)
            .await
            .map_err(|e| TxnError::Unavailable(e.to_string()))?;
        let (first, rest): (Vec<_>, Vec<_>) = keys.into_iter().partition(|k| {
            flotilla_raftstore::region_contains(&primary_region.region, &encode_key(k))
        });
        for (_, resp) in self
            .route_many("commit", first, |k| k.as_slice(), make)
            .await?
        {
            check(&resp)?;
        }
        if rest.is_empty() {
            return Ok(());
        }
        // The primary is committed, so the transaction is: the rest need not delay the
        // answer (a reader meeting one of their locks resolves it from the primary).
        match self.background_commits.clone().try_acquire_owned() {
            Ok(permit) => {
                let kv = self.clone();
                let work = async move {
                    kv.commit_secondaries(rest, make).await;
                    drop(permit);
                };
                match &self.runtime {
                    Some(h) => drop(h.spawn(work)),
                    None => drop(tokio::spawn(work)),
                }
            }
            Err(_) => self.commit_secondaries(rest, make).await,
        }
        Ok(())
    }

    async fn commit_secondaries(
        &self,
        keys: Vec<Vec<u8>>,
        make: impl Fn(Vec<Vec<u8>>) -> kv_request::Cmd,
    ) {
        match self
            .route_many("commit", keys, |k| k.as_slice(), make)
            .await
        {
            Ok(answers) => {
                for (_, resp) in answers {
                    if let Err(e) = check(&resp) {
                        tracing::warn!(error = %e, "commit of secondaries failed; readers will resolve them");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit of secondaries failed; readers will resolve them")
            }
        }
    }
}

#[async_trait::async_trait]
impl TxnKv for ClusterTxnKv {
    async fn get(
        &self,
        key: &[u8],
        ts: Timestamp,
        reader: Option<Timestamp>,
        lock_wait_timeout_ms: u64,
    ) -> Result<Option<Vec<u8>>, TxnError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(lock_wait_timeout_ms);
        loop {
            let resp = self
                .route("get", key, || {
                    kv_request::Cmd::Get(GetRequest {
                        key: key.to_vec().into(),
                        ts: ts.0,
                        reader_ts: reader.map(|r| r.0).unwrap_or(0),
                    })
                })
                .await?;
            if let Some(lock) = locked(&resp) {
                self.settle(lock, None, started, deadline).await?;
                continue;
            }
            check(&resp)?;
            return Ok(resp
                .found
                .then(|| resp.pairs.into_iter().next().map(|p| p.value.to_vec()))
                .flatten());
        }
    }

    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        ts: Timestamp,
        limit: usize,
        reader: Option<Timestamp>,
        lock_wait_timeout_ms: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TxnError> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut cursor = start.to_vec();
        let mut backoff = Backoff::routing(self.cfg.retry_budget);
        let started = Instant::now();
        let lock_deadline = started + Duration::from_millis(lock_wait_timeout_ms);
        while out.len() < limit {
            if !end.is_empty() && cursor.as_slice() >= end {
                break;
            }
            let region = match self.cache.locate(&encode_key(&cursor)).await {
                Ok(r) => r,
                Err(e) => {
                    if backoff.wait().await.is_err() {
                        return Err(self.unavailable("scan", &e.to_string()));
                    }
                    continue;
                }
            };
            let cmd = kv_request::Cmd::Scan(ScanRequest {
                start_key: cursor.clone().into(),
                end_key: end.to_vec().into(),
                ts: ts.0,
                limit: (limit - out.len()).min(u32::MAX as usize) as u32,
                reader_ts: reader.map(|r| r.0).unwrap_or(0),
                follows_next_key: true,
            });
            let resp = match self.attempt(&region, cmd).await {
                Attempt::Done(resp) => *resp,
                Attempt::Retry(why) => {
                    if backoff.wait().await.is_err() {
                        return Err(self.unavailable("scan", &why));
                    }
                    continue;
                }
            };
            if let Some(lock) = locked(&resp) {
                self.settle(lock, None, started, lock_deadline).await?;
                continue;
            }
            check(&resp)?;
            let got = resp.pairs.len();
            let asked = limit - out.len();
            out.extend(
                resp.pairs
                    .into_iter()
                    .map(|p| (p.key.to_vec(), p.value.to_vec())),
            );
            if out.len() >= limit || got >= asked {
                break;
            }
            // The store cut its answer at its bound on bytes: the region goes on from there.
            if let Some(next) = resp.next_key {
                let next = next.to_vec();
                if next <= cursor {
                    return Err(self.unavailable("scan", "a store's cut answer did not move on"));
                }
                cursor = next;
                backoff = Backoff::routing(self.cfg.retry_budget);
                continue;
            }
            match decode_boundary(&region.region.end_key) {
                Some(next) => cursor = next,
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn acquire_pessimistic_lock(
        &self,
        request: LockRequest,
    ) -> Result<Vec<Option<Vec<u8>>>, TxnError> {
        let mut values: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut pending: Vec<(Vec<u8>, bool)> = request.keys.clone();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(request.lock_wait_timeout_ms);
        // After the first lock met, the store waits for its release (bounded) instead of
        // this client polling.
        let mut wait_ms = 0u32;
        let mut waited = false;
        while !pending.is_empty() {
            let answers = self
                .route_many(
                    "pessimistic_lock",
                    std::mem::take(&mut pending),
                    |k| k.0.as_slice(),
                    |keys| {
                        kv_request::Cmd::PessimisticLock(PessimisticLockRequest {
                            keys: keys
                                .into_iter()
                                .map(|(key, must_not_exist)| LockKey {
                                    key: key.into(),
                                    must_not_exist,
                                })
                                .collect(),
                            primary: request.primary.clone().into(),
                            start_ts: request.start_ts.0,
                            for_update_ts: request.for_update_ts.0,
                            // A request sent again after a wait asks for the lifetime
                            // the first asked for at its sending.
                            ttl_ms: lock_ttl_ms_after(request.ttl_ms, started.elapsed()),
                            need_values: request.need_values,
                            wait_ms,
                            shared: request.shared,
                            key_only: request.key_only,
                        })
                    },
                )
                .await?;
            let mut lock_met = None;
            for (group, resp) in answers {
                if let Some(lock) = locked(&resp) {
                    pending.extend(group);
                    lock_met = Some(lock);
                    continue;
                }
                check(&resp)?;
                if request.need_values {
                    for ((key, _), v) in group.into_iter().zip(resp.values) {
                        values.insert(key, v.value.map(|b| b.to_vec()));
                    }
                }
            }
            if let Some(lock) = lock_met {
                waited = true;
                let settled = self
                    .settle_then(lock, Some(request.start_ts), started, deadline, false)
                    .await;
                if let Err(e) = settled {
                    let _ = self
                        .cache
                        .meta()
                        .wait_for(request.start_ts.0, 0, false)
                        .await;
                    return Err(e);
                }
                let remaining = deadline.saturating_duration_since(Instant::now());
                wait_ms = remaining.min(STORE_LOCK_WAIT_MAX).as_millis() as u32;
            }
        }
        if waited {
            let _ = self
                .cache
                .meta()
                .wait_for(request.start_ts.0, 0, false)
                .await;
        }
        if !request.need_values {
            return Ok(Vec::new());
        }
        Ok(request
            .keys
            .iter()
            .map(|(k, _)| values.remove(k).flatten())
            .collect())
    }

    async fn pessimistic_rollback(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
    ) -> Result<(), TxnError> {
        self.route_keys("pessimistic_rollback", keys.to_vec(), |keys| {
            kv_request::Cmd::PessimisticRollback(KeysRequest {
                keys: keys.into_iter().map(Into::into).collect(),
                start_ts: start_ts.0,
            })
        })
        .await
    }

    async fn prewrite(
        &self,
        mutations: Vec<Mutation>,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
        one_commit_batch: bool,
    ) -> Result<(), TxnError> {
        // The region holding the primary keeps its locks in memory (volatile) when the
        // whole transaction commits in one call: `commit_groups` commits that region's keys
        // first, in one request, so one atomic batch writes them with the primary's commit
        // record and a crash before it leaves nothing there to resolve. That region's
        // prewrite is then no Raft write at all. The other regions' locks are durable: once
        // the primary commits, they must outlive any crash until they are committed.
        // Volatile locks die with their leader's term; a commit after that fails, and a
        // reader meeting a secondary lock finds the primary neither locked nor committed
        // and rolls the transaction back (`Mvcc::check_txn_status`).
        let volatile_for = |group: &[Mutation]| {
            one_commit_batch && group.iter().any(|m| m.key.as_slice() == primary)
        };
        let sent = Instant::now();
        let deadline = sent + Duration::from_secs(10);
        self.route_settling(
            "prewrite",
            mutations,
            |m| m.key.as_slice(),
            |ms| {
                let volatile_locks = volatile_for(&ms);
                kv_request::Cmd::Prewrite(PrewriteRequest {
                    mutations: ms
                        .into_iter()
                        .map(|m| {
                            let (op, value) = match m.op {
                                MutationOp::Put(v) => (0, v),
                                MutationOp::Delete => (1, Vec::new()),
                                MutationOp::Lock => (2, Vec::new()),
                            };
                            kvpb::Mutation {
                                key: m.key.into(),
                                op,
                                value: value.into(),
                                check: m.check.code(),
                            }
                        })
                        .collect(),
                    primary: primary.to_vec().into(),
                    start_ts: start_ts.0,
                    // Sent again after settling a lock: the lifetime asked at first.
                    ttl_ms: lock_ttl_ms_after(ttl_ms, sent.elapsed()),
                    volatile_locks,
                })
            },
            Some(start_ts),
            deadline,
        )
        .await
    }

    async fn commit(
        &self,
        keys: Vec<Vec<u8>>,
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<(), TxnError> {
        self.commit_groups(keys, start_ts, commit_ts).await
    }

    async fn rollback(&self, keys: Vec<Vec<u8>>, start_ts: Timestamp) -> Result<(), TxnError> {
        self.route_keys("rollback", keys, |keys| {
            kv_request::Cmd::Rollback(KeysRequest {
                keys: keys.into_iter().map(Into::into).collect(),
                start_ts: start_ts.0,
            })
        })
        .await
    }

    async fn ingest(
        &self,
        entries: Vec<IngestEntry>,
        ts: Timestamp,
        lock_wait_timeout_ms: u64,
    ) -> Result<(), TxnError> {
        let deadline = Instant::now() + Duration::from_millis(lock_wait_timeout_ms);
        self.route_settling(
            "ingest",
            entries,
            |e| e.key.as_slice(),
            |es| {
                kv_request::Cmd::Ingest(IngestRequest {
                    entries: es
                        .into_iter()
                        .map(|e| kvpb::IngestEntry {
                            key: e.key.into(),
                            value: e.value.into(),
                            unique: e.unique,
                        })
                        .collect(),
                    ts: ts.0,
                })
            },
            None,
            deadline,
        )
        .await
    }

    async fn delete_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Option<Vec<u8>>, TxnError> {
        // The region's part of the range; the next call goes on in the next region.
        let part_end = |region: &CachedRegion| match decode_boundary(&region.region.end_key) {
            Some(region_end) if end.is_empty() || region_end.as_slice() < end => region_end,
            _ => end.to_vec(),
        };
        let (region, resp) = self
            .route_in_region("delete_range", start, |region| {
                kv_request::Cmd::DeleteRange(DeleteRangeRequest {
                    start_key: start.to_vec().into(),
                    end_key: part_end(region).into(),
                    limit: limit.min(u32::MAX as usize) as u32,
                })
            })
            .await?;
        check(&resp)?;
        let part_end = part_end(&region);
        Ok(match resp.next_key {
            Some(next) => Some(next.to_vec()),
            None if part_end.as_slice() != end => Some(part_end),
            None => None,
        })
    }

    async fn txn_heartbeat(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<u64, TxnError> {
        let resp = self
            .route("txn_heartbeat", primary, || {
                kv_request::Cmd::Heartbeat(HeartbeatRequest {
                    primary: primary.to_vec().into(),
                    start_ts: start_ts.0,
                    ttl_ms,
                })
            })
            .await?;
        check(&resp)?;
        Ok(resp.ttl_ms)
    }

    async fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        missing: MissingPrimary,
    ) -> Result<TxnStatus, TxnError> {
        let now = self.tso.get_ts().await?;
        let resp = self
            .route("check_txn_status", primary, || {
                kv_request::Cmd::CheckTxnStatus(CheckTxnStatusRequest {
                    primary: primary.to_vec().into(),
                    lock_ts: lock_ts.0,
                    current_ts: now.0,
                    primary_met: missing == MissingPrimary::Report,
                })
            })
            .await?;
        check(&resp)?;
        let status = resp.txn_status.unwrap_or_default();
        Ok(match status.state {
            1 => TxnStatus::Committed {
                commit_ts: Timestamp(status.commit_ts),
            },
            2 => TxnStatus::RolledBack,
            3 => TxnStatus::Released,
            _ => {
                let l = status.lock.unwrap_or_default();
                TxnStatus::Locked {
                    lock: Lock {
                        kind: lock_kind(l.kind),
                        primary: l.primary.to_vec(),
                        start_ts: Timestamp(l.start_ts),
                        for_update_ts: Timestamp(l.start_ts),
                        ttl_ms: l.ttl_ms,
                        short_value: None,
                        key_only: false,
                    },
                }
            }
        })
    }
}
