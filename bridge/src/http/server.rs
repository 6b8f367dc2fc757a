//! The bridge's HTTP accept loop, with the limits `axum::serve` lacks.
//!
//! `axum::serve` runs hyper without a timer, so no header-read timeout
//! applies, and it accepts connections without bound: 2,000 idle
//! connections, or one client sending a byte a second, could use up the
//! file descriptors the MQTT and database connections need. Here:
//! - a header-read timeout (hyper's, with a Tokio timer) closes a connection
//!   that does not send a complete request head in time, also between
//!   requests on a kept-alive connection;
//! - [`deadline`] answers 503 when a handler takes too long (mounted on the
//!   routes that want it; HTTP ingest keeps its own deadlines, see
//!   `source::http`, since a generic one could not say whether it stored);
//! - at most `max_connections` are served at once; one more is answered 503
//!   with `Retry-After` (if the socket takes it at once) and closed;
//! - on shutdown the loop stops accepting and waits, up to a deadline, for
//!   the requests in flight (an ingest request waiting for its commit gets
//!   its answer).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a client to send a request head (and to start the next one).
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time shutdown waits for requests in flight.
    pub drain_timeout: Duration,
}

/// What an over-the-cap connection is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 19\r\n\
Connection: close\r\n\r\ntoo many connections";

/// Serves `app` on `listener` within `limits` until `stop` fires, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    name: &'static str,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let builder = connection_builder(&limits);
    let mut accept_errors = 0u64;
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE/ENFILE: out of descriptors. Waiting lets connections
                    // finish instead of spinning on an accept that fails at once.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(listener = name, error = %e, failures = accept_errors, "Cannot accept an HTTP connection");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http_refused(name, "connections");
            // Best effort and without waiting: a client that does not read is
            // not worth a descriptor.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are one client's (closed early, timed out, bad request).
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "HTTP requests still in flight at the shutdown deadline were cut off"
        );
    }
}

/// How every connection is served: HTTP/1.1 with the header-read timeout
/// (hyper needs the Tokio timer for it). Shared with [`super::exchange`], so
/// the fuzz target talks to connections set up exactly like these.
pub(crate) fn connection_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
}

/// `router` with every request answered 503 if its handler takes longer than `limit`.
pub fn with_deadline(router: Router, limit: Duration) -> Router {
    router.layer(axum::middleware::from_fn_with_state(limit, deadline))
}

/// Answers 503 when the handler does not finish within the deadline.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "the request took too long; try again\n",
        )
            .into_response(),
    }
}
