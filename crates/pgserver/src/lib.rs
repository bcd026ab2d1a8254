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
mod frame;
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
    /// Largest inbound protocol message, in bytes, length word included: a longer one ends
    /// the connection with FATAL 54000 before it is buffered. It bounds one Bind's
    /// parameters and one COPY data message; statement text has its own, smaller bound.
    pub message_bytes_max: usize,
}

impl Default for PgServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 256,
            startup_timeout_ms: 10_000,
            prepared_statements_max: 1_000,
            portals_max: 64,
            message_bytes_max: 64 * 1024 * 1024,
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
                        connections.spawn(refuse_connection(
                            stream,
                            permit,
                            startup_timeout,
                            config.message_bytes_max,
                        ));
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
    let message_bytes_max = config.message_bytes_max;
    drive(
        stream,
        Admitted(handler),
        started,
        startup_timeout,
        message_bytes_max,
    )
    .await;
}

/// Answers one connection past the limit with 53300 and closes it.
async fn refuse_connection(
    stream: TcpStream,
    permit: ConnectionPermit,
    timeout: Duration,
    message_bytes_max: usize,
) {
    let _permit = permit;
    // Never signalled: the refusal is bounded by the startup deadline alone.
    drive(
        stream,
        Rejected,
        Arc::new(Notify::new()),
        timeout,
        message_bytes_max,
    )
    .await;
}

/// Runs the protocol loop on `stream`, dropping the connection if startup has not
/// finished (`started` not signalled) within `startup_timeout`.
async fn drive<H: PgWireServerHandlers>(
    stream: TcpStream,
    handlers: H,
    started: Arc<Notify>,
    startup_timeout: Duration,
    message_bytes_max: usize,
) {
    let peer = stream.peer_addr().ok();
    let connection = serve_socket(stream, handlers, message_bytes_max);
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

/// pgwire's protocol loop (`pgwire::tokio::process_socket`, whose steps are public), over a
/// socket whose inbound messages are bounded by `message_bytes_max` (see `frame`). TLS is
/// refused, as before. A message past the bound ends the connection with FATAL 54000.
async fn serve_socket<H: PgWireServerHandlers>(
    stream: TcpStream,
    handlers: H,
    message_bytes_max: usize,
) -> std::io::Result<()> {
    use futures::{SinkExt, StreamExt};
    use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState};
    use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
    use tokio_util::codec::{Framed, FramedParts};

    let Some(negotiated) = pgwire::tokio::server::negotiate_tls(stream, None).await? else {
        // A direct TLS handshake, which this server does not offer.
        return Ok(());
    };
    let parts = negotiated.into_parts();
    // What negotiation read past its own messages is the start of the startup packet.
    let mut scanner = frame::Scanner::new(message_bytes_max);
    if let Err(e) = scanner.pass(&parts.read_buf) {
        tracing::debug!(error = %e, "pg startup packet refused");
        return Ok(());
    }
    let mut limited = FramedParts::new(frame::MessageLimit::new(parts.io, scanner), parts.codec);
    limited.read_buf = parts.read_buf;
    limited.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(limited);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let message = match socket.next().await {
            Some(Ok(message)) => message,
            Some(Err(pgwire::error::PgWireError::IoError(e))) => {
                if let Some(too_large) = frame::message_too_large(&e) {
                    let info = pgwire::error::ErrorInfo::new(
                        "FATAL".to_string(),
                        "54000".to_string(),
                        too_large.to_string(),
                    );
                    // The connection ends either way; a failed send changes nothing.
                    let _ = socket
                        .send(PgWireBackendMessage::ErrorResponse(info.into()))
                        .await;
                }
                return Err(e);
            }
            _ => break,
        };
        // The client is leaving (some wait for the server to close first).
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        if let Err(mut e) = pgwire::tokio::server::process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await
        {
            errors.on_error(&socket, &mut e);
            let fatal = e.is_fatal();
            pgwire::tokio::server::process_error(&mut socket, e, extended_query).await?;
            if fatal {
                break;
            }
        }
        if is_cancel {
            break;
        }
    }
    Ok(())
}
