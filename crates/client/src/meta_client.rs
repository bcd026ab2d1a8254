use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use flotilla_proto::metapb::{Region, Store};
use flotilla_proto::metaservicepb::meta_client::MetaClient as MetaGrpc;
use flotilla_proto::metaservicepb::*;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;
use crate::error::ClientError;

/// Timeouts and retry budgets of cluster clients.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// One RPC's timeout.
    pub request_timeout: Duration,
    /// One transaction command's timeout at a store. Short: a paused (SIGSTOP) leader
    /// must cost little more than the election that replaces it, and commands never wait
    /// at the store (lock waits happen here, between attempts).
    pub kv_timeout: Duration,
    /// Connecting to a node.
    pub connect_timeout: Duration,
    /// How long one operation keeps retrying routing errors and unreachable nodes before
    /// it fails with a retryable error. Longer than a failover (election timeout plus a
    /// heartbeat), so a failover is invisible to SQL.
    pub retry_budget: Duration,
    /// Transaction commands that may wait to be sent on one store's command stream; past
    /// it, a command fails as if the store were unreachable, and is retried.
    pub kv_stream_queue_max: usize,
    /// The largest answer taken from the meta service (the whole catalog comes in one):
    /// past tonic's 4 MiB default, a catalog of some thousands of tables or a few views of
    /// long text would stop every SQL node from loading it.
    pub meta_message_bytes_max: usize,
}

impl Default for ClientConfig {
    /// 5 s per RPC, 1 s per transaction command, 1 s to connect, 15 s of retries, 4,096
    /// commands queued per store, meta answers up to 256 MiB.
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            kv_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            retry_budget: Duration::from_secs(15),
            kv_stream_queue_max: 4_096,
            meta_message_bytes_max: 256 << 20,
        }
    }
}

/// A lazily connected channel to `addr` (host:port), whose background tasks run on
/// `runtime` if given, else on the current one. A channel made on a short-lived runtime
/// (a subquery's) would die with it and fail every later call: long-lived clients pass
/// the runtime they were made on.
pub fn channel_on(
    runtime: Option<&tokio::runtime::Handle>,
    addr: &str,
    cfg: &ClientConfig,
) -> Result<Channel, ClientError> {
    let _entered = runtime.map(|h| h.enter());
    channel_to(addr, cfg)
}

/// A lazily connected channel for long-lived streams (Raft): no per-request timeout (a
/// client stream is answered only when it ends; `request_timeout` cut it every 5 s), and
/// HTTP/2 keepalive instead, so a peer gone without closing the connection is noticed
/// within `STREAM_KEEPALIVE_INTERVAL` + `STREAM_KEEPALIVE_TIMEOUT`.
pub fn stream_channel_to(addr: &str, cfg: &ClientConfig) -> Result<Channel, ClientError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ClientError::Failed(format!("bad address {addr}: {e}")))?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(STREAM_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(STREAM_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// How often a stream's connection is pinged.
pub const STREAM_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the connection is given up.
pub const STREAM_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A lazily connected channel to `addr` (host:port).
pub fn channel_to(addr: &str, cfg: &ClientConfig) -> Result<Channel, ClientError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ClientError::Failed(format!("bad address {addr}: {e}")))?
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.request_timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// One client's timestamp stream to the meta leader: one request in flight at a time, so
/// the next response is always the answer to the last request.
pub(crate) struct TsoStream {
    addr: String,
    requests: tokio::sync::mpsc::Sender<TsoRequest>,
    responses: tonic::Streaming<TsoResponse>,
    timeout: Duration,
    /// Whether any response ever came on this stream (a redirect counts: the stream
    /// works, the member just does not lead).
    answered: bool,
}

impl TsoStream {
    /// `count` consecutive timestamps; returns the first. Any error leaves the stream
    /// unusable (an answer may still be on its way): the caller drops it.
    pub(crate) async fn next_batch(&mut self, count: u32) -> Result<u64, ClientError> {
        let addr = &self.addr;
        let gone = |why: &str| ClientError::Unavailable(format!("meta {addr}: {why}"));
        self.requests
            .send(TsoRequest { count })
            .await
            .map_err(|_| gone("the timestamp stream has ended"))?;
        let resp = match tokio::time::timeout(self.timeout, self.responses.message()).await {
            Ok(Ok(Some(r))) => {
                self.answered = true;
                r
            }
            Ok(Ok(None)) => return Err(gone("the timestamp stream was closed")),
            Ok(Err(status)) => return Err(gone(status.message())),
            Err(_) => return Err(gone("no timestamp within the request timeout")),
        };
        if let Some(h) = resp.header.as_ref().filter(|h| !h.error.is_empty()) {
            return Err(gone(&h.error));
        }
        if resp.count != count {
            return Err(ClientError::Failed(format!(
                "meta {addr}: asked for {count} timestamps, got {}",
                resp.count
            )));
        }
        Ok(resp.first_ts)
    }

    /// Whether any response ever came on this stream.
    pub(crate) fn has_answered(&self) -> bool {
        self.answered
    }
}

/// Responses that carry the meta service's header.
pub trait HasHeader {
    fn header(&self) -> Option<&ResponseHeader>;
}

macro_rules! has_header {
    ($($t:ty),*) => {
        $(impl HasHeader for $t {
            fn header(&self) -> Option<&ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

has_header!(
    TsoResponse,
    StoreHeartbeatResponse,
    RegionHeartbeatResponse,
    GetRegionResponse,
    ScanRegionsResponse,
    GetStoresResponse,
    RemoveStoreResponse,
    CancelStoreRemovalResponse,
    AllocIdResponse,
    AskSplitResponse,
    GetCatalogResponse,
    CommitSchemaResponse,
    AllocateCatalogIdsResponse,
    RestartSequenceResponse,
    WaitForResponse,
    MembersResponse,
    MemberHeartbeatResponse,
    DdlResponse
);

/// Redirects a meta call follows without a backoff in between (more than one member may
/// have moved on since the last answer).
const META_REDIRECTS_AT_ONCE_MAX: u32 = 3;

/// A client of the meta service: tries members until one leads, follows redirects, and
/// retries (with backoff, within the retry budget) across a meta failover.
pub struct MetaClient {
    endpoints: Vec<String>,
    cfg: ClientConfig,
    leader: Mutex<Option<String>>,
    next: Mutex<usize>,
    channels: Mutex<HashMap<String, Channel>>,
    /// The runtime the client was made on: its channels' tasks run there.
    runtime: Option<tokio::runtime::Handle>,
}

impl MetaClient {
    /// A client of the meta members at `endpoints` (host:port each).
    pub fn new(endpoints: Vec<String>, cfg: ClientConfig) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Failed("no meta endpoint given".into()));
        }
        Ok(Self {
            endpoints,
            cfg,
            leader: Mutex::new(None),
            next: Mutex::new(0),
            channels: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Takes `addr` as the leader, as a successful call would.
    #[cfg(test)]
    pub(crate) fn set_leader(&self, addr: &str) {
        *self.leader.lock() = Some(addr.to_string());
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = channel_on(self.runtime.as_ref(), addr, &self.cfg)?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn target(&self) -> String {
        if let Some(l) = self.leader.lock().clone() {
            return l;
        }
        let mut next = self.next.lock();
        let addr = self.endpoints[*next % self.endpoints.len()].clone();
        *next += 1;
        addr
    }

    /// Calls the leader with `f`, retrying until the budget runs out.
    pub async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, ClientError>
    where
        T: HasHeader,
        F: Fn(MetaGrpc<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = Backoff::routing(self.cfg.retry_budget);
        let mut last_error;
        // Redirects followed at once since the last backoff: members naming each other
        // (during an election) must not spin this loop past its budget.
        let mut redirects = 0;
        loop {
            let addr = self.target();
            let client = MetaGrpc::new(self.channel(&addr)?)
                .max_decoding_message_size(self.cfg.meta_message_bytes_max);
            match f(client).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    match resp.header() {
                        Some(h) if !h.error.is_empty() => {
                            last_error = format!("meta {addr}: {}", h.error);
                            let mut leader = self.leader.lock();
                            if !h.leader_address.is_empty() && h.leader_address != addr {
                                *leader = Some(h.leader_address.clone());
                                // A redirect is worth trying at once, a few times.
                                if redirects < META_REDIRECTS_AT_ONCE_MAX {
                                    redirects += 1;
                                    continue;
                                }
                            } else {
                                *leader = None;
                            }
                        }
                        _ => {
                            *self.leader.lock() = Some(addr);
                            return Ok(resp);
                        }
                    }
                }
                // The leader refuses this node for good (an older build than the
                // cluster's version): retrying cannot help.
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    return Err(ClientError::Failed(format!(
                        "meta {addr}: {}",
                        status.message()
                    )));
                }
                Err(status) => {
                    last_error = format!("meta {addr}: {}", status.message());
                    *self.leader.lock() = None;
                    // The next attempt connects afresh.
                    self.channels.lock().remove(&addr);
                }
            }
            if backoff.wait().await.is_err() {
                return Err(ClientError::Unavailable(format!(
                    "meta service did not answer {what} within {:?}: {last_error}",
                    self.cfg.retry_budget
                )));
            }
            redirects = 0;
        }
    }

    /// `count` consecutive timestamps; returns the first.
    pub async fn tso(&self, count: u32) -> Result<u64, ClientError> {
        let r = self
            .call(
                "tso",
                |mut c| async move { c.tso(TsoRequest { count }).await },
            )
            .await?;
        Ok(r.first_ts)
    }

    /// A timestamp stream to the member last seen leading, or `None` while no leader is
    /// known (a unary call finds it). The stream has a connection of its own, without
    /// the per-request timeout of `channel_to` (which would cut it).
    pub(crate) async fn open_tso_stream(&self) -> Result<Option<TsoStream>, ClientError> {
        let Some(addr) = self.leader.lock().clone() else {
            return Ok(None);
        };
        let channel = {
            let _entered = self.runtime.as_ref().map(|h| h.enter());
            stream_channel_to(&addr, &self.cfg)?
        };
        let (requests, rx) = tokio::sync::mpsc::channel::<TsoRequest>(1);
        let outbound =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let mut grpc = MetaGrpc::new(channel);
        let open = grpc.tso_stream(outbound);
        let responses =
            match tokio::time::timeout(self.cfg.connect_timeout + self.cfg.request_timeout, open)
                .await
            {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) => {
                    return Err(ClientError::Unavailable(format!(
                        "meta {addr}: opening the timestamp stream: {}",
                        status.message()
                    )));
                }
                Err(_) => {
                    return Err(ClientError::Unavailable(format!(
                        "meta {addr}: opening the timestamp stream timed out"
                    )));
                }
            };
        Ok(Some(TsoStream {
            addr,
            requests,
            responses,
            timeout: self.cfg.request_timeout,
            answered: false,
        }))
    }

    /// The region holding encoded key `key`, with its leader if known.
    pub async fn get_region(&self, key: &[u8]) -> Result<RegionInfo, ClientError> {
        let r = self
            .call("get_region", |mut c| async move {
                c.get_region(GetRegionRequest {
                    key: key.to_vec().into(),
                })
                .await
            })
            .await?;
        r.info
            .ok_or_else(|| ClientError::Unavailable("the cluster has no region yet".into()))
    }

    /// Regions overlapping [start, end) (empty end: to the end), at most `limit` (0: all),
    /// asked of the leader a page at a time. Not one snapshot of the layout: a split or
    /// merge between two pages may show a range in its old and new shape.
    pub async fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<RegionInfo>, ClientError> {
        // The leader answers a page at a time (`MetaConfig::scan_regions_page_max`): ask
        // from where the last page's last region ends until `end`, the end of the key
        // space, or `limit` regions.
        let mut regions: Vec<RegionInfo> = Vec::new();
        let mut from = start.to_vec();
        loop {
            let want = if limit == 0 {
                0
            } else {
                limit - regions.len() as u32
            };
            let page = self
                .call("scan_regions", |mut c| {
                    let from = from.clone();
                    async move {
                        c.scan_regions(ScanRegionsRequest {
                            start_key: from.into(),
                            end_key: end.to_vec().into(),
                            limit: want,
                        })
                        .await
                    }
                })
                .await?
                .regions;
            let Some(last_end) = page.last().map(|r| {
                r.region
                    .as_ref()
                    .map(|r| r.end_key.to_vec())
                    .unwrap_or_default()
            }) else {
                return Ok(regions);
            };
            regions.extend(page);
            let done = last_end.is_empty()
                || (!end.is_empty() && last_end.as_slice() >= end)
                || last_end <= from
                || (limit != 0 && regions.len() >= limit as usize);
            if done {
                return Ok(regions);
            }
            from = last_end;
        }
    }

    /// Stores (all when `store_id` is 0).
    pub async fn get_stores(&self, store_id: u64) -> Result<Vec<StoreInfo>, ClientError> {
        let r = self
            .call("get_stores", |mut c| async move {
                c.get_stores(GetStoresRequest { store_id }).await
            })
            .await?;
        Ok(r.stores)
    }

    /// The cluster's version (`None` from a meta leader that predates versions) and the
    /// nodes that hold it where it is (see `GetStoresResponse::version_held_by`).
    pub async fn cluster_version(&self) -> Result<(Option<u32>, Vec<String>), ClientError> {
        let r = self
            .call("get_stores", |mut c| async move {
                c.get_stores(GetStoresRequest { store_id: 0 }).await
            })
            .await?;
        Ok((r.cluster_version, r.version_held_by))
    }

    /// Starts removing store `store_id` (see `RemoveStoreRequest`); returns its record.
    /// A refusal (unknown store, too few stores left) is `Failed`.
    pub async fn remove_store(&self, store_id: u64) -> Result<StoreInfo, ClientError> {
        let r = self
            .call("remove_store", |mut c| async move {
                c.remove_store(RemoveStoreRequest { store_id }).await
            })
            .await?;
        if !r.refused.is_empty() {
            return Err(ClientError::Failed(r.refused));
        }
        r.store
            .ok_or_else(|| ClientError::Failed("the meta service returned no store".into()))
    }

    /// Cancels the removal of store `store_id`: it is back in service (moves already under
    /// way finish). A store not being removed is left as it is; an unknown store, or one
    /// removed already, is refused (`ClientError::Failed`).
    pub async fn cancel_store_removal(&self, store_id: u64) -> Result<StoreInfo, ClientError> {
        let r = self
            .call("cancel_store_removal", |mut c| async move {
                c.cancel_store_removal(CancelStoreRemovalRequest { store_id })
                    .await
            })
            .await?;
        if !r.refused.is_empty() {
            return Err(ClientError::Failed(r.refused));
        }
        r.store
            .ok_or_else(|| ClientError::Failed("the meta service returned no store".into()))
    }

    /// The address of store `store_id`.
    pub async fn store_address(&self, store_id: u64) -> Result<String, ClientError> {
        self.get_stores(store_id)
            .await?
            .into_iter()
            .filter_map(|s| s.store)
            .find(|s| s.id == store_id)
            .map(|s| s.address)
            .ok_or_else(|| ClientError::Unavailable(format!("store {store_id} is unknown")))
    }

    /// Registers or refreshes a store whose build understands cluster versions up to
    /// `binary_version` (`None`: a build that predates versions). A store older than the
    /// cluster's version is refused (`ClientError::Failed`, not retried).
    pub async fn store_heartbeat(
        &self,
        store: Store,
        stats: StoreStats,
        binary_version: Option<u32>,
    ) -> Result<StoreHeartbeatResponse, ClientError> {
        self.call("store_heartbeat", |mut c| {
            let req = StoreHeartbeatRequest {
                store: Some(store.clone()),
                stats: Some(stats),
                binary_version,
            };
            async move { c.store_heartbeat(req).await }
        })
        .await
    }

    /// Reports a region this store leads; the answer may ask for a leader transfer.
    pub async fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> Result<RegionHeartbeatResponse, ClientError> {
        self.call("region_heartbeat", |mut c| {
            let req = req.clone();
            async move { c.region_heartbeat(req).await }
        })
        .await
    }

    /// New ids for the right half of a split of `region`.
    pub async fn ask_split(&self, region: Region) -> Result<AskSplitResponse, ClientError> {
        self.call("ask_split", |mut c| {
            let req = AskSplitRequest {
                region: Some(region.clone()),
            };
            async move { c.ask_split(req).await }
        })
        .await
    }

    /// Records that `waiter` waits for `holder` (or, with `waiting` false, that it stopped
    /// waiting); true if that wait would close a cycle.
    pub async fn wait_for(
        &self,
        waiter_ts: u64,
        holder_ts: u64,
        waiting: bool,
    ) -> Result<bool, ClientError> {
        let r = self
            .call("wait_for", |mut c| async move {
                c.wait_for(WaitForRequest {
                    waiter_ts,
                    holder_ts,
                    waiting,
                })
                .await
            })
            .await?;
        Ok(r.deadlock)
    }

    /// Tells the meta leader which cluster version meta member `member_id`'s build
    /// understands (`None`: the base version); answers the cluster's version.
    pub async fn member_heartbeat(
        &self,
        member_id: u64,
        binary_version: Option<u32>,
    ) -> Result<Option<u32>, ClientError> {
        let r = self
            .call("member_heartbeat", |mut c| async move {
                c.member_heartbeat(MemberHeartbeatRequest {
                    member_id,
                    binary_version,
                })
                .await
            })
            .await?;
        Ok(r.cluster_version)
    }

    /// The meta members and who leads.
    pub async fn members(&self) -> Result<Vec<Member>, ClientError> {
        let r = self
            .call("members", |mut c| async move {
                c.members(MembersRequest {}).await
            })
            .await?;
        Ok(r.members)
    }
}
