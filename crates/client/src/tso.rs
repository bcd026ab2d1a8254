use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flotilla_tso::{Tso, TsoError};
use flotilla_types::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::meta_client::{MetaClient, TsoStream};

type Waiter = oneshot::Sender<Result<Timestamp, TsoError>>;

/// Timestamps from the meta service's leader. The leader persists a window ahead of what
/// it hands out through the meta Raft group, and a new leader starts above the persisted
/// window, so timestamps never go backward, also across a meta failover.
///
/// Requests are batched: one task sends one `Tso` call at a time for every request that
/// arrived before it was sent, and hands each waiter one of the consecutive timestamps.
/// A timestamp is therefore always taken after its request arrived (never from a call
/// already in flight), which keeps it newer than every commit that finished before.
///
/// Calls go on one long-lived stream to the meta leader (a call is then one small data
/// frame each way, not a whole HTTP/2 exchange). Whenever the stream fails (the leader
/// moved, stopped or stalled) that batch takes the unary call, which finds the new
/// leader, and the next batch opens a stream to it. A stream that cannot be opened (a
/// meta member of an older version), or that fails before it ever answered, is not tried
/// again for `STREAM_RETRY_AFTER`.
pub struct RemoteTso {
    requests: mpsc::Sender<Waiter>,
    batches: Arc<Batches>,
}

/// How many calls went on the stream and how many took the unary path.
#[derive(Debug, Default)]
struct Batches {
    streamed: AtomicU64,
    unary: AtomicU64,
}

impl RemoteTso {
    /// Requests that may wait for the next call; past it, callers wait to enqueue.
    pub const QUEUE_CAPACITY: usize = 10_000;
    /// Timestamps asked for in one call at most.
    pub const BATCH_MAX: usize = 4_096;

    /// A TSO client over `meta`. Must be called within a tokio runtime (its batching
    /// task runs there until the client is dropped).
    pub fn new(meta: Arc<MetaClient>) -> Self {
        let (requests, rx) = mpsc::channel(Self::QUEUE_CAPACITY);
        let batches = Arc::new(Batches::default());
        tokio::spawn(dispatch(meta, rx, batches.clone()));
        Self { requests, batches }
    }

    /// Calls made so far: (on the stream, unary).
    pub fn calls(&self) -> (u64, u64) {
        (
            self.batches.streamed.load(Ordering::Relaxed),
            self.batches.unary.load(Ordering::Relaxed),
        )
    }
}

/// After a timestamp stream could not be opened, or failed before its first answer, how
/// long batches take the unary call before a stream is tried again.
pub const STREAM_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The stream (if any) and when one may next be opened.
#[derive(Default)]
struct StreamSlot {
    stream: Option<TsoStream>,
    retry_at: Option<Instant>,
}

impl StreamSlot {
    /// `count` timestamps on the stream if there is one (opening it if allowed), else
    /// `None`: the caller makes the unary call.
    async fn next_batch(&mut self, meta: &MetaClient, count: u32) -> Option<u64> {
        if self.stream.is_none() && self.retry_at.is_none_or(|t| Instant::now() >= t) {
            match meta.open_tso_stream().await {
                Ok(s) => {
                    self.stream = s;
                    self.retry_at = None;
                }
                Err(e) => {
                    tracing::debug!("tso: no stream, using unary calls: {e}");
                    self.retry_at = Some(Instant::now() + STREAM_RETRY_AFTER);
                }
            }
        }
        let stream = self.stream.as_mut()?;
        match stream.next_batch(count).await {
            Ok(first) => Some(first),
            Err(e) => {
                tracing::debug!("tso: the stream failed, this batch goes unary: {e}");
                // A stream that answered (even with a redirect) failed as leaders change;
                // one that never answered (opened, then silent) would cost every batch a
                // request timeout before its unary call, so streams rest for a while.
                if !stream.has_answered() {
                    self.retry_at = Some(Instant::now() + STREAM_RETRY_AFTER);
                }
                self.stream = None;
                None
            }
        }
    }
}

async fn dispatch(meta: Arc<MetaClient>, mut rx: mpsc::Receiver<Waiter>, batches: Arc<Batches>) {
    let mut slot = StreamSlot::default();
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while waiters.len() < RemoteTso::BATCH_MAX {
            match rx.try_recv() {
                Ok(w) => waiters.push(w),
                Err(_) => break,
            }
        }
        // Waiters that gave up (their statement was cancelled) need no timestamp.
        waiters.retain(|w| !w.is_closed());
        if waiters.is_empty() {
            continue;
        }
        let count = waiters.len() as u32;
        let first_ts = match slot.next_batch(&meta, count).await {
            Some(ts) => {
                batches.streamed.fetch_add(1, Ordering::Relaxed);
                Ok(ts)
            }
            None => {
                batches.unary.fetch_add(1, Ordering::Relaxed);
                meta.tso(count).await
            }
        };
        match first_ts {
            Ok(first_ts) => {
                for (i, w) in waiters.into_iter().enumerate() {
                    let _ = w.send(Ok(Timestamp(first_ts + i as u64)));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for w in waiters {
                    let _ = w.send(Err(TsoError::Unavailable(why.clone())));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Tso for RemoteTso {
    async fn get_ts(&self) -> Result<Timestamp, TsoError> {
        let (tx, rx) = oneshot::channel();
        let gone = || TsoError::Unavailable("the TSO client is shutting down".into());
        self.requests.send(tx).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::meta_client::ClientConfig;

    /// A member that accepts connections and never says a word (a stalled process): the
    /// first batch pays one open timeout and goes unary; the next ones do not try a
    /// stream again until `STREAM_RETRY_AFTER` has passed.
    #[tokio::test]
    async fn a_stream_that_cannot_be_opened_is_not_retried_for_a_while() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        let meta = MetaClient::new(
            vec![addr.clone()],
            ClientConfig {
                connect_timeout: Duration::from_millis(100),
                request_timeout: Duration::from_millis(200),
                ..ClientConfig::default()
            },
        )
        .unwrap();
        meta.set_leader(&addr);
        let mut slot = StreamSlot::default();
        assert_eq!(slot.next_batch(&meta, 1).await, None);
        assert!(slot.retry_at.is_some(), "a failed open sets when to retry");
        let tried = connections.load(Ordering::SeqCst);
        assert_eq!(tried, 1, "the open made one connection");
        for _ in 0..10 {
            assert_eq!(slot.next_batch(&meta, 1).await, None);
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            tried,
            "no stream is tried again before STREAM_RETRY_AFTER"
        );
        // Once the rest is over, a stream is tried again.
        slot.retry_at = Some(Instant::now());
        assert_eq!(slot.next_batch(&meta, 1).await, None);
        assert_eq!(connections.load(Ordering::SeqCst), tried + 1);
    }
}
