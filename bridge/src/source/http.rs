//! HTTP ingest, for devices without MQTT: `POST /ingest/<route>` with a
//! device's bearer token. The body takes the same path as an MQTT message
//! (decoder, batch, sink) and the answer comes once it is stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::{mpsc, Semaphore};

use super::budget::ByteBudget;
use super::{Ack, Delivery, HttpOutcome, HttpReply};
use crate::config::HttpSettings;
use crate::metrics::Metrics;
use crate::model::Origin;
use crate::model::Reason;
use crate::route::Routes;

/// What the ingest endpoint needs.
pub struct Ingest {
    /// Route lookup and tokens.
    pub routes: Arc<Routes>,
    /// The pipeline's input, shared with MQTT.
    pub tx: mpsc::Sender<Delivery>,
    /// For the `unauthorized` and refusal counts.
    pub metrics: Arc<Metrics>,
    /// Requests in flight at once (`http.max_ingest_requests`).
    pub in_flight: Semaphore,
    /// Time to receive the body (`http.body_timeout_s`).
    pub body_timeout: Duration,
    /// Time to answer, body included (`http.request_timeout_s`).
    pub request_timeout: Duration,
    /// Payload bytes in flight, shared with every source.
    pub budget: Arc<ByteBudget>,
}

impl Ingest {
    /// The endpoint's state, with the limits of `http`.
    pub fn new(
        http: &HttpSettings,
        routes: Arc<Routes>,
        tx: mpsc::Sender<Delivery>,
        metrics: Arc<Metrics>,
        budget: Arc<ByteBudget>,
    ) -> Self {
        Self {
            routes,
            tx,
            metrics,
            in_flight: Semaphore::new(http.max_ingest_requests),
            body_timeout: Duration::from_secs(http.body_timeout_s),
            request_timeout: Duration::from_secs(http.request_timeout_s),
            budget,
        }
    }
}

fn busy(why: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        format!("{why}; retry\n"),
    )
        .into_response()
}

/// `POST /ingest/{route}`.
pub fn router(state: Arc<Ingest>) -> Router {
    Router::new()
        .route(
            "/ingest/{route}",
            // Each route enforces its own max_payload_bytes.
            post(ingest).layer(DefaultBodyLimit::disable()),
        )
        .with_state(state)
}

/// Whether reading a body failed on its size, not on the connection.
fn is_length_limit(e: &axum::Error) -> bool {
    // axum's error is a box around the body's own error.
    std::error::Error::source(e).is_some_and(|e| e.is::<http_body_util::LengthLimitError>())
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

/// `POST /ingest/<route>` with `Authorization: Bearer <token>`: the body goes
/// through the route's decoder and the same durable path as MQTT; the answer
/// comes once it is stored: 201 stored, 400 refused (and dead-lettered, with
/// the reason), 401 bad token, 408 body too slow, 413 too large, 503 not
/// stored (retry; `Retry-After`), or 503 "not confirmed" when the deadline
/// passed while the write was under way (it may be stored: a retry is a
/// no-op when the payload carries its own time).
async fn ingest(
    State(state): State<Arc<Ingest>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some((index, route)) = state
        .routes
        .by_name(&name)
        .filter(|(_, r)| r.accepts_http())
    else {
        return text(
            StatusCode::NOT_FOUND,
            "no route with HTTP ingest by that name\n",
        );
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(device) = token.and_then(|t| route.device_for_token(t)).cloned() else {
        state.metrics.reject(route.name(), Reason::Unauthorized);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid device bearer token is required\n",
        )
            .into_response();
    };
    let Ok(_permit) = state.in_flight.try_acquire() else {
        state.metrics.http_refused("device", "ingest_busy");
        return busy("too many ingest requests in flight");
    };
    let limit = route.max_payload();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {limit} bytes\n"),
        );
    }
    let payload =
        match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(payload)) => payload,
            Ok(Err(e)) if is_length_limit(&e) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("at most {limit} bytes\n"),
                )
            }
            Ok(Err(_)) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "the body ended before its declared length; nothing was stored\n",
                )
            }
            Err(_) => {
                state.metrics.http_refused("device", "body_timeout");
                return text(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive in time; nothing was stored\n",
                );
            }
        };
    let Some(held) = state.budget.try_hold(payload.len()) else {
        state.metrics.http_refused("device", "ingest_busy");
        return busy("too many bytes in flight, not stored");
    };
    let (reply, mut wait) = HttpReply::new();
    let delivery = Delivery {
        origin: Origin::Http {
            route: index,
            device,
        },
        payload,
        seq: None,
        ack: Ack::Http(reply),
        held,
    };
    state.metrics.pending_messages.inc();
    let remaining = state.request_timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(remaining, state.tx.send(delivery)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            state.metrics.pending_messages.dec();
            return busy("shutting down, not stored");
        }
        Err(_) => {
            state.metrics.pending_messages.dec();
            state.metrics.http_refused("device", "ingest_busy");
            return busy("the pipeline is full, not stored");
        }
    }
    let remaining = state.request_timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(remaining, &mut wait.answer).await {
        Ok(Ok(HttpOutcome::Stored)) => text(StatusCode::CREATED, "stored\n"),
        Ok(Ok(HttpOutcome::Rejected(reason))) => {
            text(StatusCode::BAD_REQUEST, format!("rejected: {reason}\n"))
        }
        Ok(Ok(HttpOutcome::NotStored) | Err(_)) => busy("not stored"),
        Err(_) if wait.give_up() => busy("not stored in time, and now it will not be"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "not confirmed in time: it may have been stored; a retry is a no-op when the \
             payload carries its own time\n",
        )
            .into_response(),
    }
}
