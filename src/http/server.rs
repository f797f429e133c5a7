//! The accept loop of one listener, on hyper directly: axum's own `serve` has no
//! header-read timeout and no cap on connections, and a crowd of slow clients (slowloris)
//! would hold every file the process may open.
//!
//! A connection takes a slot before it is accepted; with every slot taken the listener
//! stops accepting, and new connections wait in the kernel's backlog, holding nothing of
//! the daemon's. A connection that does not send a whole request head within
//! `header_read_timeout` of opening, or of its last answer, is closed.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, error};

use crate::events;

/// What bounds one listener.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// The metric label of the listener: `operator` or `api`.
    pub(crate) name: &'static str,
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets the open
/// connections finish their requests and close. Each request is served by the router
/// `router` holds when it arrives: a reload's limits apply from the next request on, on
/// connections already open too.
pub(super) async fn serve(
    listener: TcpListener,
    router: watch::Receiver<Router>,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let routers = router.clone();
        let service = tower::service_fn(move |request| routers.borrow().clone().oneshot(request));
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let shutdown = shutdown.clone();
        events::http_connections(limits.name, 1.0);
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "connection ended");
            }
            events::http_connections(limits.name, -1.0);
            drop(slot);
        });
    }
    // Every slot back means every connection has closed.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
    Ok(())
}

/// A failed accept. A connection reset before it was accepted is the peer's business;
/// anything else (out of files, out of memory) is logged, and the loop waits a moment
/// rather than spinning on it.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    error!(error = %e, "cannot accept a connection; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
