use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_proto::Message as _;
use flotilla_proto::kvpb::store_client::StoreClient;
use flotilla_proto::metaservicepb::meta_client::MetaClient as MetaGrpc;
use flotilla_proto::raft_serverpb::{RaftMessage, RaftMessageBatch, RaftMessageChunk};
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

/// Size bounds of the Raft messages a transport sends. Every node of a cluster must use
/// the same (a receiver refuses what its own bounds refuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftMessageLimits {
    /// Largest `RaftMessageBatch` sent on a stream, encoded. A single message larger than
    /// this (a region snapshot) goes in pieces of at most this size on a `RaftChunks` call
    /// of its own. Every receiver's gRPC decoding limit must be at least this.
    pub batch_bytes_max: usize,
    /// Largest single message sent, or accepted, in pieces: the memory one incoming
    /// snapshot may take. A larger one is dropped by the sender (logged) and refused by a
    /// receiver (`RESOURCE_EXHAUSTED`).
    pub chunked_message_bytes_max: usize,
}

impl Default for RaftMessageLimits {
    /// Batches of at most 4 MiB (Raft appends are at most 1 MiB each), single messages
    /// (snapshots) of at most 2 GiB.
    fn default() -> Self {
        Self {
            batch_bytes_max: 4 << 20,
            chunked_message_bytes_max: 2 << 30,
        }
    }
}

impl RaftMessageLimits {
    /// Checks the bounds against the gRPC decoding limit of the node's own server, which
    /// stands for every receiver's: a batch it could not decode would break the stream.
    pub fn validate(&self, grpc_message_bytes_max: usize) -> Result<(), String> {
        if self.batch_bytes_max < CHUNK_OVERHEAD_BYTES * 2 {
            return Err(format!(
                "raft_batch_bytes_max {} is too small (at least {})",
                self.batch_bytes_max,
                CHUNK_OVERHEAD_BYTES * 2
            ));
        }
        if self.batch_bytes_max > grpc_message_bytes_max {
            return Err(format!(
                "raft_batch_bytes_max {} exceeds grpc_message_bytes_max {}: receivers could \
                 not decode a full batch",
                self.batch_bytes_max, grpc_message_bytes_max
            ));
        }
        Ok(())
    }

    /// Payload bytes of one piece of a chunked message.
    fn chunk_bytes(&self) -> usize {
        (self.batch_bytes_max - CHUNK_OVERHEAD_BYTES).min(CHUNK_BYTES_MAX)
    }
}

/// Room left in a batch or piece for protobuf framing (field tag and length prefix).
const CHUNK_OVERHEAD_BYTES: usize = 16;
/// Pieces of a chunked message carry at most this much each: big enough that framing
/// costs nothing, small enough that one piece never holds a stream up for long.
const CHUNK_BYTES_MAX: usize = 1 << 20;
/// Large messages waiting to go to one store; past it they are dropped (Raft resends).
const CHUNKED_QUEUE_MESSAGES: usize = 8;
/// A chunked message is given this long, plus its size at `CHUNKED_SEND_RATE_MIN`.
const CHUNKED_SEND_TIMEOUT_BASE: Duration = Duration::from_secs(10);
/// The slowest transfer a chunked message is allowed before it is given up, bytes/s.
const CHUNKED_SEND_RATE_MIN_BYTES_PER_SEC: u64 = 8 << 20;
/// A message too large to send at all is logged at most this often per destination.
const OVERSIZED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// raftstore's `Transport` over gRPC. Each destination store has a bounded queue and one
/// sender task that takes every batch waiting in it and sends them as `RaftMessageBatch`es
/// of at most `RaftMessageLimits::batch_bytes_max` on a long-lived stream (`RaftStream`),
/// so a round's messages to a store cost one HTTP/2 data frame. A message too large for a
/// batch (a region snapshot) goes in pieces on a call of its own (`RaftChunks`), one at
/// a time per store, so it neither meets the receiver's message size limit nor holds up
/// the heartbeats and appends behind it. A full queue or stream (the store is slow or
/// down) drops messages: Raft retransmits what matters.
pub struct GrpcTransport {
    runtime: tokio::runtime::Handle,
    senders: Arc<Senders>,
    queue_capacity: usize,
    queues: Mutex<HashMap<u64, mpsc::Sender<Vec<RaftMessage>>>>,
}

/// What the sender tasks of one transport share.
struct Senders {
    service: RaftService,
    resolver: Arc<dyn StoreResolver>,
    cfg: ClientConfig,
    limits: RaftMessageLimits,
    /// Streams opened so far, to every destination (a healthy peer keeps one).
    streams_opened: AtomicU64,
    /// Large messages (snapshots) delivered in pieces so far, to every destination.
    chunked_delivered: AtomicU64,
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
        limits: RaftMessageLimits,
    ) -> Self {
        Self {
            runtime,
            senders: Arc::new(Senders {
                service,
                resolver,
                cfg,
                limits,
                streams_opened: AtomicU64::new(0),
                chunked_delivered: AtomicU64::new(0),
            }),
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Messages too large for a batch (region snapshots) that receivers accepted, in
    /// pieces, so far.
    pub fn chunked_messages_delivered(&self) -> u64 {
        self.senders.chunked_delivered.load(Ordering::Relaxed)
    }

    /// Streams opened so far, to every destination: one per live peer, plus one per
    /// reconnect.
    pub fn streams_opened(&self) -> u64 {
        self.senders.streams_opened.load(Ordering::Relaxed)
    }

    fn queue(&self, store_id: u64) -> mpsc::Sender<Vec<RaftMessage>> {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(&store_id)
            && !q.is_closed()
        {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        self.runtime
            .spawn(sender(store_id, rx, self.senders.clone()));
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

async fn sender(store_id: u64, mut rx: mpsc::Receiver<Vec<RaftMessage>>, ctx: Arc<Senders>) {
    let Senders {
        service,
        ref resolver,
        ref cfg,
        limits,
        ..
    } = *ctx;
    let mut link: Option<Link> = None;
    let mut chunked: Option<mpsc::Sender<RaftMessage>> = None;
    while let Some(first) = rx.recv().await {
        let mut messages = first;
        while messages.len() < GrpcTransport::MAX_BATCH_MESSAGES {
            match rx.try_recv() {
                Ok(more) => messages.extend(more),
                Err(_) => break,
            }
        }
        let (batches, large) = into_batches(messages, limits.batch_bytes_max);
        for m in large {
            let queue = chunked.get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(CHUNKED_QUEUE_MESSAGES);
                tokio::spawn(chunked_sender(store_id, rx, ctx.clone()));
                tx
            });
            if queue.try_send(m).is_err() {
                tracing::debug!(
                    store_id,
                    "large raft message dropped: {CHUNKED_QUEUE_MESSAGES} already wait for the store"
                );
            }
        }
        if batches.is_empty() {
            continue;
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
                Ok(addr) => match stream_channel_to(&addr, cfg) {
                    Ok(ch) => {
                        ctx.streams_opened.fetch_add(1, Ordering::Relaxed);
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
        for batch in batches {
            // A full stream (the store is paused or slow to read) drops the batch rather
            // than queueing without bound; Raft retransmits what matters.
            if let Err(mpsc::error::TrySendError::Full(_)) = l.batches.try_send(batch) {
                tracing::debug!(
                    store_id,
                    "raft messages dropped: the stream to the store is full"
                );
            }
        }
    }
}

/// Splits `messages` into batches of at most `bytes_max` encoded, in order, and the
/// messages too large for any batch (each message's size is computed once: this runs for
/// every Raft round).
fn into_batches(
    messages: Vec<RaftMessage>,
    bytes_max: usize,
) -> (Vec<RaftMessageBatch>, Vec<RaftMessage>) {
    let mut batches = vec![];
    let mut large = vec![];
    let mut current = RaftMessageBatch::default();
    let mut current_bytes = 0;
    for m in messages {
        let bytes = m.encoded_len() + CHUNK_OVERHEAD_BYTES;
        if bytes > bytes_max {
            large.push(m);
            continue;
        }
        if !current.messages.is_empty() && current_bytes + bytes > bytes_max {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += bytes;
        current.messages.push(m);
    }
    if !current.messages.is_empty() {
        batches.push(current);
    }
    (batches, large)
}

/// Sends the large messages queued for one store, one at a time, each on a `RaftChunks`
/// call of its own. A failed or timed-out call loses only that message: the leader sends
/// the snapshot again when the follower still lacks it.
async fn chunked_sender(store_id: u64, mut rx: mpsc::Receiver<RaftMessage>, ctx: Arc<Senders>) {
    let Senders {
        service,
        ref resolver,
        ref cfg,
        limits,
        ..
    } = *ctx;
    // Kept across messages; a tonic channel reconnects by itself.
    let mut channel: Option<tonic::transport::Channel> = None;
    let mut oversized_logged: Option<std::time::Instant> = None;
    while let Some(m) = rx.recv().await {
        let bytes = m.encoded_len();
        if bytes > limits.chunked_message_bytes_max {
            // The leader sends the snapshot again at every try: say so once a minute.
            if oversized_logged.is_none_or(|at| at.elapsed() >= OVERSIZED_LOG_INTERVAL) {
                oversized_logged = Some(std::time::Instant::now());
                tracing::error!(
                    store_id,
                    region_id = m.region_id,
                    bytes,
                    "a raft message (a region snapshot) is larger than \
                     raft_chunked_message_bytes_max ({}) and cannot be sent; the follower \
                     stays behind until the bound is raised on every node",
                    limits.chunked_message_bytes_max
                );
            }
            continue;
        }
        let ch = match &channel {
            Some(ch) => ch.clone(),
            None => {
                let addr = match resolver.resolve(store_id).await {
                    Ok(addr) => addr,
                    Err(e) => {
                        tracing::debug!(store_id, "cannot resolve store: {e}");
                        continue;
                    }
                };
                match stream_channel_to(&addr, cfg) {
                    Ok(ch) => channel.insert(ch).clone(),
                    Err(e) => {
                        tracing::warn!(store_id, "{e}");
                        continue;
                    }
                }
            }
        };
        let encoded = flotilla_proto::Bytes::from(m.encode_to_vec());
        let chunk = limits.chunk_bytes();
        let pieces: Vec<RaftMessageChunk> = (0..encoded.len())
            .step_by(chunk)
            .map(|at| RaftMessageChunk {
                data: encoded.slice(at..(at + chunk).min(encoded.len())),
            })
            .collect();
        let call = async move {
            let pieces = futures::stream::iter(pieces);
            match service {
                RaftService::Store => StoreClient::new(ch)
                    .max_encoding_message_size(limits.batch_bytes_max)
                    .raft_chunks(pieces)
                    .await
                    .map(|_| ()),
                RaftService::Meta => MetaGrpc::new(ch)
                    .max_encoding_message_size(limits.batch_bytes_max)
                    .raft_chunks(pieces)
                    .await
                    .map(|_| ()),
            }
        };
        let timeout = CHUNKED_SEND_TIMEOUT_BASE
            + Duration::from_secs(bytes as u64 / CHUNKED_SEND_RATE_MIN_BYTES_PER_SEC);
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(())) => {
                ctx.chunked_delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(store_id, region_id = m.region_id, bytes, "sent in pieces");
            }
            Ok(Err(status)) => {
                tracing::warn!(
                    store_id,
                    region_id = m.region_id,
                    bytes,
                    "a large raft message was not delivered: {}",
                    status.message()
                );
                if status.code() == tonic::Code::Unavailable {
                    // The store may have moved: find it again for the next message.
                    channel = None;
                    resolver.forget(store_id);
                }
            }
            Err(_) => {
                tracing::warn!(
                    store_id,
                    region_id = m.region_id,
                    bytes,
                    "a large raft message was not delivered within {timeout:?}"
                );
                channel = None;
            }
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

/// The receiving end of a `RaftChunks` call: joins the pieces of one message in order and,
/// when the sender closes the call, hands the message to `router`. More than `bytes_max`
/// in all is refused (`RESOURCE_EXHAUSTED`) before it is held in memory. A stopping
/// server (`stopping` true) gives the message up rather than wait for the rest.
pub async fn deliver_raft_chunks(
    mut stream: tonic::Streaming<RaftMessageChunk>,
    router: &flotilla_raftstore::StoreRouter,
    bytes_max: usize,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    let mut joined = Vec::new();
    loop {
        let piece = tokio::select! {
            p = stream.message() => p?,
            _ = stopping.wait_for(|s| *s) => {
                return Err(tonic::Status::unavailable("the node is stopping"));
            }
        };
        let Some(piece) = piece else { break };
        if joined.len() + piece.data.len() > bytes_max {
            tracing::error!(
                bytes_max,
                "refused a raft message (a region snapshot) larger than \
                 raft_chunked_message_bytes_max"
            );
            return Err(tonic::Status::resource_exhausted(format!(
                "raft message larger than this node's raft_chunked_message_bytes_max \
                 ({bytes_max} bytes); raise it on every node"
            )));
        }
        joined.extend_from_slice(&piece.data);
    }
    let message = RaftMessage::decode(joined.as_slice())
        .map_err(|e| tonic::Status::invalid_argument(format!("bad raft message: {e}")))?;
    // A full mailbox drops the message; the leader sends the snapshot again.
    let _ = router.send(flotilla_raftstore::StoreMsg::Raft(message));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload_bytes: usize) -> RaftMessage {
        RaftMessage {
            region_id: 7,
            message: vec![1u8; payload_bytes].into(),
            ..Default::default()
        }
    }

    #[test]
    fn batches_stay_under_the_bound_and_keep_the_order() {
        let messages: Vec<_> = (0..10).map(|i| message(100 + i)).collect();
        let sizes: Vec<usize> = messages.iter().map(|m| m.message.len()).collect();
        let (batches, _) = into_batches(messages, 400);
        assert!(
            batches.len() > 1,
            "ten messages of ~120 bytes fit no 400-byte batch"
        );
        for b in &batches {
            assert!(b.encoded_len() <= 400, "batch of {} bytes", b.encoded_len());
        }
        let flattened: Vec<usize> = batches
            .iter()
            .flat_map(|b| b.messages.iter().map(|m| m.message.len()))
            .collect();
        assert_eq!(flattened, sizes);
    }

    #[test]
    fn limits_below_a_receivers_decoding_limit_are_valid() {
        let limits = RaftMessageLimits::default();
        assert!(limits.validate(4 << 20).is_ok());
        let err = limits.validate(1 << 20).unwrap_err();
        assert!(err.contains("grpc_message_bytes_max"), "{err}");
        let tiny = RaftMessageLimits {
            batch_bytes_max: 8,
            ..limits
        };
        assert!(tiny.validate(4 << 20).is_err());
        assert!(limits.chunk_bytes() <= limits.batch_bytes_max - CHUNK_OVERHEAD_BYTES);
    }
}
