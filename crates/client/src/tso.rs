use std::sync::Arc;

use flotilla_tso::{Tso, TsoError};
use flotilla_types::Timestamp;

use crate::meta_client::MetaClient;

/// Timestamps from the meta service's leader. The leader persists a window ahead of what
/// it hands out through the meta Raft group, and a new leader starts above the persisted
/// window, so timestamps never go backward, also across a meta failover.
pub struct RemoteTso {
    meta: Arc<MetaClient>,
}

impl RemoteTso {
    /// A TSO client over `meta`.
    pub fn new(meta: Arc<MetaClient>) -> Self {
        Self { meta }
    }
}

#[async_trait::async_trait]
impl Tso for RemoteTso {
    async fn get_ts(&self) -> Result<Timestamp, TsoError> {
        self.meta
            .tso(1)
            .await
            .map(Timestamp)
            .map_err(|e| TsoError::Unavailable(e.to_string()))
    }
}
