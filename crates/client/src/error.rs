/// Why a cluster request failed after its retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No answer within the retry deadline (failover in progress, node down); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The server answered with an error that retrying will not fix.
    #[error("{0}")]
    Failed(String),
}
