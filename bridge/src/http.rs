//! `/metrics`, `/healthz` and `/readyz` on their own (loopback by default) listener.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::health::Health;
use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Exported metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
}

/// The router; tested without a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
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
        let metrics = Arc::new(Metrics::new(10, &["co2"]).unwrap());
        let health = Arc::new(Health::new(metrics.clone()));
        AppState { metrics, health }
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
        let (status, body) = get(app(state.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("MQTT") && body.contains("database"), "{body}");

        state.metrics.mqtt_connected.set(1);
        state.health.set_subscribed(true);
        let (status, body) = get(app(state.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: database unreachable\n");

        state.metrics.db_up.set(1);
        assert_eq!(get(app(state), "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn healthz_and_metrics_answer() {
        let state = state();
        assert_eq!(get(app(state.clone()), "/healthz").await.0, StatusCode::OK);
        let (status, body) = get(app(state), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("co2_bridge_build_info{version="), "{body}");
    }
}
