//! The bridge's HTTP listener (loopback by default): `/metrics`, `/healthz`,
//! `/readyz`, `POST /ingest/<route>` for devices that cannot speak MQTT, and
//! the `/images` page of the binary route.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::NaiveDateTime;
use sqlx::MySqlPool;
use tokio::sync::{mpsc, oneshot};

use crate::acks::{AckToken, HttpOutcome};
use crate::health::Health;
use crate::ingress::Delivery;
use crate::metrics::Metrics;
use crate::route::{Routes, Source};

/// How long an ingest request waits for its batch to commit.
const INGEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Exported metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
    /// HTTP ingest and the images page; absent in tests of the basics.
    pub data: Option<Arc<DataPaths>>,
}

/// What ingest and the images page need.
pub struct DataPaths {
    /// Route lookup and decoding.
    pub routes: Arc<Routes>,
    /// The pipeline's input, shared with MQTT ingress.
    pub tx: mpsc::Sender<Delivery>,
    /// For the images page.
    pub pool: MySqlPool,
}

/// The router; tested without a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // Each route enforces its own max_payload_bytes.
        .route(
            "/ingest/{route}",
            post(ingest).layer(DefaultBodyLimit::disable()),
        )
        .route("/images", get(images_page))
        .route("/images/{id}", get(image))
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
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(data) = &state.data else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some((index, route)) = data.routes.by_name(&name).filter(|(_, r)| r.accepts_http()) else {
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
        state.metrics.reject(route.name(), "unauthorized");
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
        source: Source::Http {
            route: index,
            device,
        },
        payload,
        ack: AckToken::Http(reply),
    };
    state.metrics.pending_messages.inc();
    if data.tx.send(delivery).await.is_err() {
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

/// Column names of the binary route's table, and the table.
struct ImageTable {
    table: String,
    device: String,
    time: String,
    content_type: String,
    size: String,
    data: String,
}

fn image_table(state: &AppState) -> Option<(ImageTable, MySqlPool)> {
    let data = state.data.as_ref()?;
    let route = data.routes.iter().find(|r| r.is_binary())?;
    let target = route.target();
    let [device, time, content_type, size, blob] = target.columns.as_slice() else {
        return None;
    };
    Some((
        ImageTable {
            table: target.table.clone(),
            device: device.clone(),
            time: time.clone(),
            content_type: content_type.clone(),
            size: size.clone(),
            data: blob.clone(),
        },
        data.pool.clone(),
    ))
}

/// `GET /images`: the latest image of every device, server-rendered.
async fn images_page(State(state): State<AppState>) -> Response {
    let Some((t, pool)) = image_table(&state) else {
        return text(StatusCode::NOT_FOUND, "no binary route is configured\n");
    };
    // Names are checked identifiers (route config), so quoting them is safe.
    let sql = format!(
        "SELECT i.id, CAST(i.`{dev}` AS CHAR), i.`{time}`, CAST(i.`{ct}` AS CHAR), i.`{size}` \
         FROM `{table}` i JOIN (SELECT `{dev}` AS d, MAX(`{time}`) AS t FROM `{table}` GROUP BY `{dev}`) l \
         ON i.`{dev}` = l.d AND i.`{time}` = l.t ORDER BY i.`{dev}`",
        dev = t.device,
        time = t.time,
        ct = t.content_type,
        size = t.size,
        table = t.table,
    );
    let rows: Vec<(u64, String, NaiveDateTime, String, u32)> =
        match sqlx::query_as(&sql).fetch_all(&pool).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot list images");
                return text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n");
            }
        };
    Html(render_images(&rows)).into_response()
}

fn render_images(rows: &[(u64, String, NaiveDateTime, String, u32)]) -> String {
    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Latest images</title><style>\
         body{font-family:sans-serif;margin:2rem;background:#fafafa}\
         .grid{display:flex;flex-wrap:wrap;gap:1.5rem}\
         figure{margin:0;background:#fff;padding:.75rem;border:1px solid #ddd}\
         img{display:block;max-width:360px;max-height:270px}\
         figcaption{margin-top:.5rem;font-size:.9rem;color:#333}\
         </style></head><body><h1>Latest image per device</h1>\n",
    );
    if rows.is_empty() {
        html.push_str("<p>No images yet.</p>\n");
    }
    html.push_str("<div class=\"grid\">\n");
    for (id, device, time, content_type, size) in rows {
        let device = escape(device);
        let time = time.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        html.push_str(&format!(
            "<figure id=\"device-{device}\"><img src=\"/images/{id}\" alt=\"{device} at {time}\" \
             onload=\"this.dataset.loaded=this.naturalWidth\">\
             <figcaption><strong>{device}</strong> &middot; {time} &middot; {} &middot; {} KiB</figcaption></figure>\n",
            escape(content_type),
            size.div_ceil(1024),
        ));
    }
    html.push_str("</div></body></html>\n");
    html
}

/// HTML-escapes text for element content and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /images/<id>`: the stored bytes with their sniffed content type.
async fn image(State(state): State<AppState>, Path(id): Path<u64>) -> Response {
    let Some((t, pool)) = image_table(&state) else {
        return text(StatusCode::NOT_FOUND, "no binary route is configured\n");
    };
    let sql = format!(
        "SELECT CAST(`{}` AS CHAR), `{}` FROM `{}` WHERE id = ?",
        t.content_type, t.data, t.table
    );
    match sqlx::query_as::<_, (String, Vec<u8>)>(&sql)
        .bind(id)
        .fetch_optional(&pool)
        .await
    {
        Ok(Some((content_type, bytes))) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => text(StatusCode::NOT_FOUND, "no such image\n"),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read an image");
            text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
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
        let metrics = Arc::new(Metrics::new(10, &["co2"]).unwrap());
        let health = Arc::new(Health::new(metrics.clone(), 1, Duration::from_secs(30)));
        AppState {
            metrics,
            health,
            data: None,
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
        let (status, body) = get(app(state.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("MQTT") && body.contains("database"), "{body}");

        state.health.set_connected(0, true);
        state.health.set_subscribed(0, true);
        let (status, body) = get(app(state.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: database unreachable\n");

        state.metrics.db_up.set(1);
        assert_eq!(get(app(state), "/readyz").await.0, StatusCode::OK);
    }

    #[test]
    fn the_images_page_escapes_what_it_shows() {
        let t = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        let html = render_images(&[(
            7,
            "<script>x</script>".into(),
            t,
            "image/png\"".into(),
            2048,
        )]);
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!html.contains("<script>x"));
        assert!(html.contains("image/png&quot;"));
        assert!(html.contains("src=\"/images/7\""));
        assert!(html.contains("2 KiB"));
    }

    #[tokio::test]
    async fn a_failed_task_fails_both_probes() {
        let state = state();
        state.health.set_connected(0, true);
        state.health.set_subscribed(0, true);
        state.metrics.db_up.set(1);
        state
            .health
            .set_failed("task \"commit\" panicked: boom".into());
        let (status, body) = get(app(state.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"commit\" panicked: boom"), "{body}");
        assert_eq!(
            get(app(state), "/healthz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
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
