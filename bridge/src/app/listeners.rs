//! The operator and device listeners: their routers, limits and sockets.

use super::*;

/// The operator listener's router, and the device listener's when `devices_on`.
pub(super) fn routers(
    settings: &Settings,
    metrics: &Arc<Metrics>,
    (health, status): (&Arc<Health>, &Arc<Status>),
    routes: &Arc<Routes>,
    (images, exports): (Option<Images>, &Arc<Exports>),
    devices_on: bool,
    (tx, budget): (&mpsc::Sender<Delivery>, &Arc<ByteBudget>),
) -> (Router, Option<Router>) {
    let request_timeout = Duration::from_secs(settings.http.request_timeout_s);
    let state = AppState {
        metrics: metrics.clone(),
        health: health.clone(),
        status: Some(status.clone()),
    };
    let operator = http::operator(state, exports.clone(), request_timeout);
    let devices = devices_on.then(|| {
        let ingest = Ingest::new(
            &settings.http,
            routes.clone(),
            tx.clone(),
            metrics.clone(),
            budget.clone(),
        );
        http::devices(ingest, images, request_timeout)
    });
    (operator, devices)
}

/// What each HTTP listener allows.
pub(super) fn limits(settings: &Settings) -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(settings.http.header_read_timeout_s),
        max_connections: settings.http.max_connections,
        drain_timeout: Duration::from_secs(5),
    }
}

pub(super) fn spawn_http(
    supervisor: &Supervisor,
    listener: TcpListener,
    app: Router,
    limits: Limits,
    name: &'static str,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let (metrics, stop) = (metrics.clone(), stop.clone());
    supervisor.spawn(
        format!("http server ({name})"),
        server::serve(listener, app, limits, name, metrics, stop),
    )
}

pub(super) async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { key, addr, source })
}
