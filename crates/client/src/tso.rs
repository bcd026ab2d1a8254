use std::sync::Arc;

use flotilla_tso::{Tso, TsoError};
use flotilla_types::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::meta_client::MetaClient;

type Waiter = oneshot::Sender<Result<Timestamp, TsoError>>;

/// Timestamps from the meta service's leader. The leader persists a window ahead of what
/// it hands out through the meta Raft group, and a new leader starts above the persisted
/// window, so timestamps never go backward, also across a meta failover.
///
/// Requests are batched: one task sends one `Tso` call at a time for every request that
/// arrived before it was sent, and hands each waiter one of the consecutive timestamps.
/// A timestamp is therefore always taken after its request arrived (never from a call
/// already in flight), which keeps it newer than every commit that finished before.
pub struct RemoteTso {
    requests: mpsc::Sender<Waiter>,
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
        tokio::spawn(dispatch(meta, rx));
        Self { requests }
    }
}

async fn dispatch(meta: Arc<MetaClient>, mut rx: mpsc::Receiver<Waiter>) {
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
        match meta.tso(waiters.len() as u32).await {
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
