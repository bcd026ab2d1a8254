//! One multiplexed stream of transaction commands per store (as TiKV's BatchCommands).
//!
//! A unary call costs a whole HTTP/2 exchange: request headers and body in two writes, and
//! response headers, body and trailers, each a system call and a wake-up of the other
//! process. On the stream a command is one data frame each way, and commands queued
//! together (several transactions', or one commit's regions on one store) share a frame.

use std::collections::HashMap;

use flotilla_proto::Message;
use flotilla_proto::kvpb::store_client::StoreClient;
use flotilla_proto::kvpb::{KvBatchRequest, KvBatchResponse, KvRequest, KvResponse};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tonic::transport::Channel;

/// Bytes of commands sent together in one message (one command may be more).
const BATCH_BYTES_MAX: usize = 1 << 20;

/// Largest message accepted from a store (as the store accepts: a scan's page of rows).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

type Reply = oneshot::Sender<Result<KvResponse, Status>>;

/// The sending half of one store's command stream; the stream runs on a task of its own
/// and ends when this is dropped or the connection fails.
pub(crate) struct KvStream {
    calls: mpsc::Sender<(KvRequest, Reply)>,
}

impl KvStream {
    /// Opens a stream over `channel` (lazily: the first command connects), its task on
    /// `runtime` if given. At most `queue_max` commands wait to be sent.
    pub(crate) fn open(
        runtime: Option<&tokio::runtime::Handle>,
        channel: Channel,
        queue_max: usize,
    ) -> Self {
        let (calls, rx) = mpsc::channel(queue_max.max(1));
        let run = run(channel, rx);
        match runtime {
            Some(h) => drop(h.spawn(run)),
            None => drop(tokio::spawn(run)),
        }
        Self { calls }
    }

    /// False once the stream has ended: a new one must be opened.
    pub(crate) fn is_open(&self) -> bool {
        !self.calls.is_closed()
    }

    /// Sends one command and waits for its answer. A full queue is `ResourceExhausted`
    /// (the stream is fine: retry later); a stream that ended before answering is
    /// `Unavailable`, as an unreachable store is.
    pub(crate) async fn call(&self, req: KvRequest) -> Result<KvResponse, Status> {
        let (reply, answer) = oneshot::channel();
        self.calls.try_send((req, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Status::resource_exhausted(
                "too many commands queued for this store (client kv_stream_queue_max)",
            ),
            mpsc::error::TrySendError::Closed(_) => {
                Status::unavailable("the command stream to this store has ended")
            }
        })?;
        answer.await.map_err(|_| {
            Status::unavailable("the command stream to this store ended before answering")
        })?
    }
}

/// Takes the commands queued now (at least one, waiting for it) into one message.
async fn next_batch(
    rx: &mut mpsc::Receiver<(KvRequest, Reply)>,
    next_id: &mut u64,
    waiting: &mut HashMap<u64, Reply>,
) -> Option<KvBatchRequest> {
    let mut call = Some(rx.recv().await?);
    let mut batch = KvBatchRequest::default();
    let mut bytes = 0;
    while let Some((req, reply)) = call.take() {
        // A caller that gave up (its timeout) is not sent for.
        if !reply.is_closed() {
            *next_id += 1;
            bytes += req.encoded_len();
            waiting.insert(*next_id, reply);
            batch.ids.push(*next_id);
            batch.requests.push(req);
        }
        if bytes < BATCH_BYTES_MAX {
            call = rx.try_recv().ok();
        }
    }
    Some(batch)
}

async fn run(channel: Channel, mut rx: mpsc::Receiver<(KvRequest, Reply)>) {
    let mut waiting: HashMap<u64, Reply> = HashMap::new();
    let mut next_id = 0u64;
    // The stream opens with the first command, so an idle client holds no stream.
    let Some(first) = next_batch(&mut rx, &mut next_id, &mut waiting).await else {
        return;
    };
    // One message in flight to the transport at a time: the rest wait in `rx`, bounded.
    let (out, out_rx) = mpsc::channel::<KvBatchRequest>(1);
    let _ = out.send(first).await;
    let outbound =
        futures::stream::unfold(
            out_rx,
            |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
        );
    let mut client = StoreClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut inbound = match client.kv_stream(outbound).await {
        Ok(r) => r.into_inner(),
        Err(status) => return fail(waiting, &status),
    };
    // A message taken from `rx` but not yet handed to the transport. Commands are taken
    // only when there is none, so the wait for the transport never stops answers from
    // being read (the store's answers may be what frees the transport).
    let mut unsent: Option<KvBatchRequest> = None;
    loop {
        tokio::select! {
            permit = out.reserve(), if unsent.is_some() => match permit {
                Ok(p) => p.send(unsent.take().expect("guarded")),
                Err(_) => break,
            },
            batch = next_batch(&mut rx, &mut next_id, &mut waiting), if unsent.is_none() => {
                let Some(batch) = batch else { break };
                if !batch.ids.is_empty() {
                    unsent = Some(batch);
                }
            }
            answers = inbound.message() => match answers {
                Ok(Some(KvBatchResponse { ids, responses })) => {
                    for (id, resp) in ids.into_iter().zip(responses) {
                        if let Some(reply) = waiting.remove(&id) {
                            let _ = reply.send(Ok(resp));
                        }
                    }
                }
                Ok(None) => {
                    let closed = Status::unavailable("the store closed the command stream");
                    return fail(waiting, &closed);
                }
                Err(status) => return fail(waiting, &status),
            },
        }
    }
    // Every sender is gone (the client dropped this stream): whoever still waits learns.
    fail(
        waiting,
        &Status::unavailable("the command stream was closed"),
    );
}

fn fail(waiting: HashMap<u64, Reply>, status: &Status) {
    for (_, reply) in waiting {
        let _ = reply.send(Err(Status::new(status.code(), status.message())));
    }
}
