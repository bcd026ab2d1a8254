use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::kvpb::store_client::StoreClient;
use flotilla_proto::metaservicepb::meta_client::MetaClient as MetaGrpc;
use flotilla_proto::raft_serverpb::{RaftMessage, RaftMessageBatch};
use flotilla_raftstore::Transport;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::error::ClientError;
use crate::meta_client::{ClientConfig, stream_channel_to};

/// Which service receives the Raft messages: data stores, or the meta members' own group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftService {
    Store,
    Meta,
}

/// Finds the address of a store (or meta member) by id.
#[async_trait::async_trait]
pub trait StoreResolver: Send + Sync + 'static {
    async fn resolve(&self, store_id: u64) -> Result<String, ClientError>;
    /// The address proved stale or unreachable.
    fn forget(&self, _store_id: u64) {}
}

/// raftstore's `Transport` over gRPC. Each destination store has a bounded queue and one
/// sender task that takes every batch waiting in it and sends them as one
/// `RaftMessageBatch` on a long-lived stream (`RaftStream`), so a round's messages to a
/// store cost one HTTP/2 data frame. A full queue or stream (the store is slow or down)
/// drops messages: Raft retransmits what matters.
pub struct GrpcTransport {
    runtime: tokio::runtime::Handle,
    service: RaftService,
    resolver: Arc<dyn StoreResolver>,
    cfg: ClientConfig,
    queue_capacity: usize,
    queues: Mutex<HashMap<u64, mpsc::Sender<Vec<RaftMessage>>>>,
    /// Streams opened so far, to every destination (a healthy peer keeps one).
    streams_opened: Arc<std::sync::atomic::AtomicU64>,
}

impl GrpcTransport {
    /// Queued rounds per destination before messages are dropped.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
    /// Messages per batch at most.
    const MAX_BATCH_MESSAGES: usize = 4096;
    /// Batches waiting to go out on a store's stream; past it they are dropped.
    const STREAM_DEPTH_BATCHES: usize = 256;

    /// A transport whose sender tasks run on `runtime`.
    pub fn new(
        runtime: tokio::runtime::Handle,
        service: RaftService,
        resolver: Arc<dyn StoreResolver>,
        cfg: ClientConfig,
    ) -> Self {
        Self {
            runtime,
            service,
            resolver,
            cfg,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            queues: Mutex::new(HashMap::new()),
            streams_opened: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Streams opened so far, to every destination: one per live peer, plus one per
    /// reconnect.
    pub fn streams_opened(&self) -> u64 {
        self.streams_opened
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn queue(&self, store_id: u64) -> mpsc::Sender<Vec<RaftMessage>> {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(&store_id)
            && !q.is_closed()
        {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        self.runtime.spawn(sender(
            store_id,
            rx,
            self.service,
            self.resolver.clone(),
            self.cfg.clone(),
            self.streams_opened.clone(),
        ));
        queues.insert(store_id, tx.clone());
        tx
    }
}

impl Transport for GrpcTransport {
    fn send(&self, messages: Vec<RaftMessage>) {
        let mut by_store: HashMap<u64, Vec<RaftMessage>> = HashMap::new();
        for m in messages {
            let Some(to) = m.to_peer else { continue };
            by_store.entry(to.store_id).or_default().push(m);
        }
        for (store_id, batch) in by_store {
            if self.queue(store_id).try_send(batch).is_err() {
                tracing::debug!(
                    store_id,
                    "raft messages dropped: the queue to the store is full"
                );
            }
        }
    }
}

/// An open stream of Raft batches to one store, and the call carrying it.
struct Link {
    addr: String,
    batches: mpsc::Sender<RaftMessageBatch>,
    call: tokio::task::JoinHandle<Result<(), tonic::Status>>,
}

/// Opens the stream: batches pushed into the returned link go out as data frames of one
/// long-lived call, in order.
fn open_link(addr: String, channel: tonic::transport::Channel, service: RaftService) -> Link {
    let (batches, rx) = mpsc::channel::<RaftMessageBatch>(GrpcTransport::STREAM_DEPTH_BATCHES);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|batch| (batch, rx))
    });
    let call = tokio::spawn(async move {
        match service {
            RaftService::Store => StoreClient::new(channel)
                .raft_stream(stream)
                .await
                .map(|_| ()),
            RaftService::Meta => MetaGrpc::new(channel).raft_stream(stream).await.map(|_| ()),
        }
    });
    Link {
        addr,
        batches,
        call,
    }
}

async fn sender(
    store_id: u64,
    mut rx: mpsc::Receiver<Vec<RaftMessage>>,
    service: RaftService,
    resolver: Arc<dyn StoreResolver>,
    cfg: ClientConfig,
    streams_opened: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut link: Option<Link> = None;
    while let Some(first) = rx.recv().await {
        let mut messages = first;
        while messages.len() < GrpcTransport::MAX_BATCH_MESSAGES {
            match rx.try_recv() {
                Ok(more) => messages.extend(more),
                Err(_) => break,
            }
        }
        if let Some(l) = &link
            && l.call.is_finished()
        {
            // The store went away (or restarted): find it again before the next batch.
            let l = link.take().expect("checked");
            let why = match l.call.await {
                Ok(Err(status)) => status.message().to_string(),
                _ => "stream closed".to_string(),
            };
            tracing::debug!(store_id, addr = %l.addr, "raft stream ended: {why}");
            resolver.forget(store_id);
            // A down store would otherwise cost a connect attempt per round.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if link.is_none() {
            match resolver.resolve(store_id).await {
                Ok(addr) => match stream_channel_to(&addr, &cfg) {
                    Ok(ch) => {
                        streams_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        link = Some(open_link(addr, ch, service));
                    }
                    Err(e) => tracing::warn!(store_id, "{e}"),
                },
                Err(e) => tracing::debug!(store_id, "cannot resolve store: {e}"),
            }
        }
        let Some(l) = &link else {
            // Dropped; Raft retries after its own timeouts.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // A full stream (the store is paused or slow to read) drops the batch rather than
        // queueing without bound; Raft retransmits what matters.
        if let Err(mpsc::error::TrySendError::Full(_)) =
            l.batches.try_send(RaftMessageBatch { messages })
        {
            tracing::debug!(
                store_id,
                "raft messages dropped: the stream to the store is full"
            );
        }
    }
}

/// The receiving end of a `RaftStream`: hands every message to `router` until the sender
/// closes the stream or `stopping` turns true (so a stopping server's graceful shutdown
/// does not wait for peers that never close theirs). A full mailbox drops the message;
/// Raft retransmits.
pub async fn deliver_raft_stream(
    mut stream: tonic::Streaming<RaftMessageBatch>,
    router: &flotilla_raftstore::StoreRouter,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    loop {
        let batch = tokio::select! {
            b = stream.message() => b?,
            _ = stopping.wait_for(|s| *s) => None,
        };
        let Some(batch) = batch else { return Ok(()) };
        for m in batch.messages {
            let _ = router.send(flotilla_raftstore::StoreMsg::Raft(m));
        }
    }
}
