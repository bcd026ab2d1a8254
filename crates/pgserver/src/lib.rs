//! PostgreSQL wire protocol front end.
//!
//! Architecture invariant: maps the protocol to `flotilla_sql::Session` and back; never plans
//! or executes SQL itself and never touches storage.
//!
//! Each accepted socket runs in its own tokio task driven by pgwire, so a protocol violation,
//! an error or even a panic on one connection closes only that connection.
//!
//! Protocol-level prepared statements (Parse) live here, in pgwire's per-connection store, so
//! the one statement this crate answers without the session is `DEALLOCATE`, which drops them.

mod connection;
mod copy;
mod limit;
mod values;

use std::sync::Arc;
use std::time::Duration;

use flotilla_sql::SqlEngine;
use pgwire::api::PgWireServerHandlers;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::connection::{Admitted, ConnectionHandler, Rejected};
use crate::limit::{ConnectionLimiter, ConnectionPermit};

/// Connections being refused (53300) at once; beyond this, excess sockets are just closed so
/// a connection flood cannot pile up refusal tasks.
const REJECTING_MAX: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits of the PostgreSQL front end.
#[derive(Debug, Clone)]
pub struct PgServerConfig {
    /// Most concurrent client connections; more are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// Bound on the time a client may take to finish startup, in milliseconds.
    pub startup_timeout_ms: u64,
    /// Most named prepared statements one connection keeps (54000 past it).
    pub prepared_statements_max: usize,
    /// Most named portals one connection keeps open at once (54000 past it). Portals close
    /// with the transaction, as in PostgreSQL; the rows suspended portals hold count against
    /// the session's `result_bytes_max`.
    pub portals_max: usize,
}

impl Default for PgServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 256,
            startup_timeout_ms: 10_000,
            prepared_statements_max: 1_000,
            portals_max: 64,
        }
    }
}

/// Serves PostgreSQL clients on `listener` until `shutdown` resolves; each connection gets its own `Session` from `engine.session()`.
///
/// On shutdown, stops accepting and closes all open connections (their sessions are dropped,
/// which ends any open transaction) before returning.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<SqlEngine>,
    config: PgServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let admitted = ConnectionLimiter::new(config.max_connections);
    let rejecting = ConnectionLimiter::new(REJECTING_MAX);
    let startup_timeout = Duration::from_millis(config.startup_timeout_ms);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = finished
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "pg connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Some(permit) = admitted.try_acquire() {
                        connections.spawn(serve_connection(
                            stream,
                            engine.clone(),
                            permit,
                            startup_timeout,
                            config.clone(),
                        ));
                    } else if let Some(permit) = rejecting.try_acquire() {
                        tracing::warn!(%peer, "refusing pg connection: too many clients");
                        connections.spawn(refuse_connection(stream, permit, startup_timeout));
                    } else {
                        tracing::warn!(%peer, "dropping pg connection: too many clients");
                    }
                }
                Err(e) => {
                    // Usually transient (descriptor exhaustion, aborted handshakes): keep serving.
                    tracing::warn!(error = %e, "pg accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// Serves one admitted connection; the permit is held (and so counted) until it closes.
async fn serve_connection(
    stream: TcpStream,
    engine: Arc<SqlEngine>,
    permit: ConnectionPermit,
    startup_timeout: Duration,
    config: PgServerConfig,
) {
    let _permit = permit;
    let started = Arc::new(Notify::new());
    let handler = Arc::new(ConnectionHandler::new(
        engine.session(),
        started.clone(),
        &config,
    ));
    drive(stream, Admitted(handler), started, startup_timeout).await;
}

/// Answers one connection past the limit with 53300 and closes it.
async fn refuse_connection(stream: TcpStream, permit: ConnectionPermit, timeout: Duration) {
    let _permit = permit;
    // Never signalled: the refusal is bounded by the startup deadline alone.
    drive(stream, Rejected, Arc::new(Notify::new()), timeout).await;
}

/// Runs pgwire's protocol loop on `stream`, dropping the connection if startup has not
/// finished (`started` not signalled) within `startup_timeout`.
async fn drive<H: PgWireServerHandlers>(
    stream: TcpStream,
    handlers: H,
    started: Arc<Notify>,
    startup_timeout: Duration,
) {
    let peer = stream.peer_addr().ok();
    let connection = pgwire::tokio::process_socket(stream, None, handlers);
    tokio::pin!(connection);
    tokio::select! {
        result = &mut connection => {
            if let Err(e) = result {
                tracing::debug!(?peer, error = %e, "pg connection ended with error");
            }
            return;
        }
        in_time = tokio::time::timeout(startup_timeout, started.notified()) => {
            if in_time.is_err() {
                tracing::debug!(?peer, "pg client did not finish startup in time");
                return;
            }
        }
    }
    if let Err(e) = connection.await {
        tracing::debug!(?peer, error = %e, "pg connection ended with error");
    }
}
