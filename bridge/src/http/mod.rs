//! The bridge's HTTP listeners. The operator listener (`http.listen`,
//! loopback by default) serves the status page (`/`, `/status.json`, see
//! [`crate::status`]), `/metrics`, `/healthz`, `/readyz` and `/export`
//! ([`export`]); the
//! device listener (`http.device_listen`, off unless set) serves HTTP ingest
//! ([`crate::source::http`]) and the `/images` page ([`images`]). Both run
//! the accept loop of [`server`], with its timeouts and connection cap.

pub(crate) mod export;
pub(crate) mod images;
pub(crate) mod server;
pub(crate) mod viewers;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::source::http::Ingest;
use crate::status::Status;
use images::Images;

/// What the operator endpoints read.
#[derive(Clone)]
pub struct AppState {
    /// Exported metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
    /// The status page's sources (`None`: no page, `/` is a 404).
    pub status: Option<Arc<Status>>,
}

/// The operator endpoints, merged with `extra` (ingest, images); tested without a socket.
pub fn app(state: AppState, extra: Router) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/status.json", get(status_json))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(extra)
}

/// The operator listener's routes with `/export`, each answered (its head:
/// an export's body streams on) within `request_timeout`.
pub(crate) fn operator(
    state: AppState,
    exports: Arc<export::Exports>,
    request_timeout: Duration,
) -> Router {
    server::with_deadline(app(state, export::router(exports)), request_timeout)
}

/// The device listener's routes: HTTP ingest (which keeps its own
/// deadlines), and the images page when it is on.
pub(crate) fn devices(ingest: Ingest, images: Option<Images>, request_timeout: Duration) -> Router {
    let routes = crate::source::http::router(Arc::new(ingest));
    match images {
        Some(images) => routes.merge(server::with_deadline(
            images::router(Arc::new(images)),
            request_timeout,
        )),
        None => routes,
    }
}

pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

async fn status_page(State(state): State<AppState>) -> Response {
    match &state.status {
        Some(status) => Html(crate::status::page::render(&status.snapshot().await)).into_response(),
        None => text(StatusCode::NOT_FOUND, "no status page\n"),
    }
}

async fn status_json(State(state): State<AppState>) -> Response {
    match &state.status {
        Some(status) => match serde_json::to_string_pretty(&status.snapshot().await) {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
        None => text(StatusCode::NOT_FOUND, "no status page\n"),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Alive unless a task the bridge cannot work without has ended (the process
/// is then exiting, so a liveness probe restarts it if the exit hangs).
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.failure() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {why}\n")),
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state() -> AppState {
        let metrics = Arc::new(Metrics::new(10, &[("co2", "mysql")], &["mysql"]).unwrap());
        let health = Arc::new(Health::new(
            metrics.clone(),
            1,
            Vec::new(),
            vec![("mysql".into(), "mysql")],
            std::time::Duration::from_secs(30),
        ));
        AppState {
            metrics,
            health,
            status: None,
        }
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_names_what_is_missing_until_everything_is_up() {
        let state = state();
        let (status, body) = get(app(state.clone(), Router::new()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("MQTT") && body.contains("database"), "{body}");

        state.health.set_connected(0, true);
        state.health.set_subscribed(0, true);
        let (status, body) = get(app(state.clone(), Router::new()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: database unreachable (sink mysql)\n");

        state.health.set_sink_up(0, true);
        assert_eq!(
            get(app(state, Router::new()), "/readyz").await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn healthz_and_metrics_answer() {
        let state = state();
        assert_eq!(
            get(app(state.clone(), Router::new()), "/healthz").await.0,
            StatusCode::OK
        );
        let (status, body) = get(app(state, Router::new()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("co2_bridge_build_info{version="), "{body}");
    }

    #[tokio::test]
    async fn a_failed_task_fails_both_probes() {
        let state = state();
        state.health.set_connected(0, true);
        state.health.set_subscribed(0, true);
        state.health.set_sink_up(0, true);
        state
            .health
            .set_failed("task \"commit\" panicked: boom".into());
        let (status, body) = get(app(state.clone(), Router::new()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"commit\" panicked: boom"), "{body}");
        assert_eq!(
            get(app(state, Router::new()), "/healthz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
