//! `GET /export` on the operator listener: what `co2-bridge export` writes,
//! streamed as the answer (`crate::export`).
//!
//! Query parameters: `route` or `table`, `tier`, `device` (comma-separated;
//! `*`, Grafana's "All", or none: every device), `from` (inclusive) and `to`
//! (exclusive), RFC 3339 or UTC `YYYY-MM-DD[ hh:mm:ss]`, and `format`
//! (`csv`, the default, or `ndjson`).
//!
//! On a listener bound to loopback anyone who reaches it may export (the
//! other operator endpoints are as open there); on any other address a
//! viewer token is required ([`super::viewers`], `http.viewer_tokens_file`).
//!
//! An export must never hold up the bridge: it reads through a pool of its
//! own ([`CONNECTIONS`] connections, apart from the sinks' pools, so the
//! writers are never short of one), at most [`AT_ONCE`] run at a time, a
//! connection is held only while a chunk is read (never while the client
//! reads), and a client that takes no bytes for `http.export_idle_timeout_s`
//! is dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sqlx::MySqlPool;
use tokio::sync::Semaphore;

use super::text;
use super::viewers::Access;
use crate::config::{ConfigError, Settings};
use crate::export::{self, Export, ExportError, Filter, Format, Request, Source};
use crate::retime::TimeBound;

/// Connections each database's export pool may open.
pub const CONNECTIONS: u32 = 2;

/// Exports streamed at once; one more is answered 503.
pub const AT_ONCE: usize = 2;

/// What `/export` needs: the settings to resolve tables with, who may
/// export, and a pool per database.
pub struct Exports {
    settings: Settings,
    access: Option<Access>,
    pools: Mutex<BTreeMap<String, MySqlPool>>,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl Exports {
    /// Exports under `settings`: open on a loopback listener, for viewers
    /// with a token elsewhere (closed when no token file is set).
    pub fn new(settings: &Settings) -> Result<Self, ConfigError> {
        let loopback = settings.http_listen()?.ip().is_loopback();
        let access = match super::viewers::tokens(settings)? {
            _ if loopback => Some(Access::Public),
            Some(tokens) => Some(Access::Viewers(tokens)),
            None => None,
        };
        Ok(Self {
            settings: settings.clone(),
            access,
            pools: Mutex::new(BTreeMap::new()),
            permits: Arc::new(Semaphore::new(AT_ONCE)),
            idle: Duration::from_secs(settings.http.export_idle_timeout_s),
        })
    }

    /// The export pool of `table`'s database, made on first use.
    fn pool(&self, table: &export::Table) -> Result<MySqlPool, ConfigError> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(&table.sink_key) {
            return Ok(pool.clone());
        }
        let pool = export::pool(table, CONNECTIONS)?;
        pools.insert(table.sink_key.clone(), pool.clone());
        Ok(pool)
    }
}

/// `GET /export`.
pub fn router(exports: Arc<Exports>) -> Router {
    Router::new()
        .route("/export", get(export))
        .with_state(exports)
}

/// The query string of `/export`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    route: Option<String>,
    table: Option<String>,
    tier: Option<String>,
    device: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<Format>,
}

impl Params {
    /// The export these parameters ask for.
    fn request(&self) -> Result<Request, String> {
        let time = |text: &Option<String>| {
            text.as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<TimeBound>()
                        .map(|b| b.0)
                        .map_err(|e| e.to_string())
                })
                .transpose()
        };
        let (from, to) = (time(&self.from)?, time(&self.to)?);
        if let (Some(from), Some(to)) = (from, to) {
            if from >= to {
                return Err(format!("from {from} is not before to {to}"));
            }
        }
        let devices: Vec<String> = self
            .device
            .as_deref()
            .unwrap_or_default()
            .split(',')
            // Grafana's sqlstring format, and the dashboards' All (`'*'`), quote.
            .map(|d| d.trim().trim_matches('\''))
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect();
        // Grafana's "All" of the dashboards' device variable is `*`.
        let devices = if devices.iter().any(|d| d == "*" || d == "$__all") {
            Vec::new()
        } else {
            devices
        };
        Ok(Request {
            source: Source {
                route: self.route.clone().filter(|r| !r.is_empty()),
                table: self.table.clone().filter(|t| !t.is_empty()),
                tier: self.tier.clone().filter(|t| !t.is_empty()),
            },
            filter: Filter { devices, from, to },
            format: self.format.unwrap_or(Format::Csv),
        })
    }
}

async fn export(
    State(exports): State<Arc<Exports>>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(access) = &exports.access else {
        return text(
            StatusCode::UNAUTHORIZED,
            "exports on a listener that is not loopback-only need viewer tokens: \
             set http.viewer_tokens_file\n",
        );
    };
    if let Some(refusal) = access.refuse(&headers, "co2-bridge export") {
        return refusal;
    }
    let request = match params.map_err(|e| e.body_text()).and_then(|p| p.request()) {
        Ok(request) => request,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let Ok(permit) = exports.permits.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            format!("{AT_ONCE} exports are running; try again later\n"),
        )
            .into_response();
    };
    let prepared = async {
        let table = request.source.resolve(&exports.settings)?;
        let pool = exports.pool(&table)?;
        Export::prepare(&request, table, pool, export::CHUNK_ROWS).await
    };
    let export = match prepared.await {
        Ok(export) => export,
        Err(e) if e.is_request() => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot start an export");
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
        }
    };
    let filename = format!("{}.{}", export.table.name, request.format.extension());
    tracing::info!(table = %export.table.name, devices = request.filter.devices.len(), "Export started");
    // The slot goes with the export's task: freed when it ends, which it
    // does when the body is dropped (the client went away) or the client
    // takes nothing for the idle limit (while it may keep its connection).
    let pieces = export.stream(None, true, exports.idle, Box::new(permit));
    // A stream that ends without its end piece (dropped after the idle
    // limit, or a task that died) ends in an error, so the answer is cut
    // off (no last chunk) rather than ended as if complete.
    let body = futures_util::stream::unfold(Some(pieces), |state| async move {
        let mut pieces = state?;
        match pieces.recv().await {
            Some(Ok(piece)) if piece.end => None,
            Some(Ok(piece)) => Some((Ok(piece.bytes), Some(pieces))),
            Some(Err(e)) => Some((Err(e), None)),
            None => Some((Err(ExportError::Abandoned), None)),
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                request.format.content_type().to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Result<Request, String> {
        let Query(p): Query<Params> =
            Query::try_from_uri(&format!("/export?{query}").parse().unwrap()).unwrap();
        p.request()
    }

    #[test]
    fn parameters_as_grafana_sends_them() {
        let r = params(
            "device=a,b&from=2024-05-01T10:00:00.000Z&to=2024-05-02T00:00:00.000Z&format=ndjson",
        )
        .unwrap();
        assert_eq!(r.filter.devices, ["a", "b"]);
        assert_eq!(r.format, Format::Ndjson);
        assert_eq!(
            r.filter.from.unwrap().to_string(),
            "2024-05-01 10:00:00",
            "{r:?}"
        );
        assert!(params("device=*").unwrap().filter.devices.is_empty());
        assert!(params("device='*'").unwrap().filter.devices.is_empty());
        assert_eq!(params("device='a','b'").unwrap().filter.devices, ["a", "b"]);
        assert!(params("from=2024-05-02&to=2024-05-01").is_err());
        assert!(params("from=yesterday").is_err());
    }
}
