//! The `/images` page of the binary route: the newest image of each device,
//! server-rendered, and `/images/<id>` with the bytes. Served on the device
//! listener, to viewers with a token (`http.viewer_tokens_file`; a browser
//! sends it as the password of HTTP Basic auth, a script as a bearer token)
//! unless `http.images_public` says anyone may look.
//!
//! The page reads one index entry per device: the newest time of each comes
//! from the `(device, time)` unique key by a loose index scan (checked with
//! EXPLAIN in the route tests), never from a scan of the table.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDateTime;
use sqlx::MySqlPool;

use super::text;
pub use super::viewers::Access;
use crate::route::Routes;
use crate::status::html::escape;

/// The realm a browser shows when it asks for the viewer token.
const REALM: &str = "co2-bridge images";

/// The binary route's table and its column names.
pub struct Images {
    access: Access,
    pool: MySqlPool,
    table: String,
    device: String,
    time: String,
    content_type: String,
    size: String,
    data: String,
}

impl Images {
    /// The page of the first binary route, read through `pool` (its MySQL sink's).
    pub fn new(routes: &Routes, pool: MySqlPool, access: Access) -> Option<Self> {
        let route = routes.iter().find(|r| r.is_binary())?;
        let [device, time, content_type, size, data] = route.column_names() else {
            return None;
        };
        Some(Self {
            access,
            pool,
            table: route.table().to_owned(),
            device: device.clone(),
            time: time.clone(),
            content_type: content_type.clone(),
            size: size.clone(),
            data: data.clone(),
        })
    }
}

/// `GET /images` and `GET /images/{id}`.
pub fn router(images: Arc<Images>) -> Router {
    Router::new()
        .route("/images", get(images_page))
        .route("/images/{id}", get(image))
        .with_state(images)
}

/// `GET /images`: the latest image of every device, server-rendered.
async fn images_page(State(t): State<Arc<Images>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = t.access.refuse(&headers, REALM) {
        return refusal;
    }
    let pool = &t.pool;
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
        match sqlx::query_as(&sql).fetch_all(pool).await {
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

/// `GET /images/<id>`: the stored bytes with their sniffed content type.
async fn image(State(t): State<Arc<Images>>, Path(id): Path<u64>, headers: HeaderMap) -> Response {
    if let Some(refusal) = t.access.refuse(&headers, REALM) {
        return refusal;
    }
    let sql = format!(
        "SELECT CAST(`{}` AS CHAR), `{}` FROM `{}` WHERE id = ?",
        t.content_type, t.data, t.table
    );
    match sqlx::query_as::<_, (String, Vec<u8>)>(&sql)
        .bind(id)
        .fetch_optional(&t.pool)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
