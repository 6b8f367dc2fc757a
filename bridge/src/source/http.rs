//! HTTP ingest, for devices without MQTT: `POST /ingest/<route>` with a
//! device's bearer token. The body takes the same path as an MQTT message
//! (decoder, batch, sink) and the answer comes once it is stored.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::{mpsc, oneshot};

use super::{Ack, Delivery, HttpOutcome, Origin};
use crate::metrics::Metrics;
use crate::pipeline::Reason;
use crate::route::Routes;

/// How long an ingest request waits for its batch to be stored.
const INGEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the ingest endpoint needs.
pub struct Ingest {
    /// Route lookup and tokens.
    pub routes: Arc<Routes>,
    /// The pipeline's input, shared with MQTT.
    pub tx: mpsc::Sender<Delivery>,
    /// For the `unauthorized` count.
    pub metrics: Arc<Metrics>,
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

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

/// `POST /ingest/<route>` with `Authorization: Bearer <token>`: the body goes
/// through the route's decoder and the same durable path as MQTT; the answer
/// comes after the commit: 201 stored, 400 refused (and dead-lettered, with
/// the reason), 401 bad token, 413 too large, 503 not stored (retry).
async fn ingest(
    State(state): State<Arc<Ingest>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
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
    let Ok(payload) = axum::body::to_bytes(body, limit).await else {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {limit} bytes\n"),
        );
    };
    let (reply, answer) = oneshot::channel();
    let delivery = Delivery {
        origin: Origin::Http {
            route: index,
            device,
        },
        payload,
        ack: Ack::Http(reply),
    };
    state.metrics.pending_messages.inc();
    if state.tx.send(delivery).await.is_err() {
        state.metrics.pending_messages.dec();
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down; retry\n");
    }
    match tokio::time::timeout(INGEST_TIMEOUT, answer).await {
        Ok(Ok(HttpOutcome::Stored)) => text(StatusCode::CREATED, "stored\n"),
        Ok(Ok(HttpOutcome::Rejected(reason))) => {
            text(StatusCode::BAD_REQUEST, format!("rejected: {reason}\n"))
        }
        // Not committed (yet): the caller must retry; a duplicate is harmless.
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "not stored; retry\n"),
    }
}
