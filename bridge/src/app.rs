//! Building and running the bridge: check the configuration, build routes
//! and sinks once, bind, ready the sinks, connect the sources, and shut down
//! in order (stop intake, flush, ack, disconnect).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clocks::{self, DeviceClocks};
use crate::config::SourceSettings;
use crate::config::{ConfigError, Settings};
use crate::fault::Faults;
use crate::health::Health;
use crate::http::images::{Access, Images};
use crate::http::server::{self, Limits};
use crate::http::{self, AppState};
use crate::metrics::{Metrics, MetricsError};
use crate::pipeline::quarantine::Quarantine;
use crate::pipeline::{InFlight, Pipeline};
use crate::route::Routes;
use crate::sink::mysql::completeness::Completeness;
use crate::sink::mysql::schema;
use crate::sink::{self, PrepareError, Sinks};
use crate::source::budget::ByteBudget;
use crate::source::http::Ingest;
use crate::source::kafka::{self, KafkaSource, KafkaSourceError};
use crate::source::mqtt::{self, ConnectionEpoch, Ingress};
use crate::source::{Acker, Delivery};
use crate::status::Status;
use crate::supervisor::{Ended, Supervisor};
use co2_wire::backoff::Backoff;

/// How long a failed bridge keeps answering its probes before it exits.
const FAILED_LINGER: Duration = Duration::from_secs(1);

/// How often readiness re-checks the sinks when nothing is being written.
const SINK_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// How often learned time zones are saved and clock offsets reach the metrics.
const CLOCKS_EVERY: Duration = Duration::from_secs(5);

/// Why the bridge stopped with an error. Anything else is retried, not fatal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// An HTTP listener could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}; is another bridge running?")]
    Bind {
        /// The setting that names it.
        key: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A sink is reachable but cannot be used as configured (e.g. the schema
    /// is behind and this account may not migrate it).
    #[error("sink {sink}: {message}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A Kafka source cannot be set up as configured.
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
    /// A task the bridge cannot work without ended or panicked; the bridge
    /// exits so that its service manager restarts it.
    #[error("{0}; exiting so that the service manager restarts the bridge (unacknowledged messages are redelivered)")]
    TaskEnded(Ended),
}

/// Why `co2-bridge migrate` failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database of sink `sink` could not be reached or migrated.
    #[error("sink {sink}: {source}")]
    Database {
        /// The sink's name.
        sink: String,
        /// What the database said.
        source: sqlx::migrate::MigrateError,
    },
}

/// Applies pending migrations to every MySQL sink a route uses; returns how
/// many were applied in all.
pub async fn migrate(settings: &Settings) -> Result<usize, MigrateError> {
    let routes = Routes::from_settings(settings)?;
    let built = sink::from_settings(settings, &routes)?;
    let mut applied = 0;
    for (sink, pool) in &built.mysql_pools {
        let database = |source| MigrateError::Database {
            sink: sink.clone(),
            source,
        };
        let pending = schema::pending_migrations(pool)
            .await
            .map_err(|e| database(e.into()))?;
        schema::migrate(pool).await.map_err(database)?;
        applied += pending.len();
        pool.close().await;
    }
    Ok(applied)
}

/// A bridge with its listener bound, ready to run.
pub struct Bridge {
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    listener: TcpListener,
    device_listener: Option<TcpListener>,
    routes: Arc<Routes>,
    sinks: Arc<Sinks>,
    images: Option<Images>,
    completeness: Option<Completeness>,
    status: Arc<Status>,
    faults: Faults,
}

impl Bridge {
    /// Validates the settings, builds routes and sinks, reads the files they
    /// name, and binds the HTTP listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, RunError> {
        settings.validate()?;
        let faults = Faults::from_env();
        let mut routes = Routes::from_settings(&settings)?;
        routes.load_tokens()?;
        let clocks = Arc::new(DeviceClocks::load(
            settings.metrics.max_devices,
            clocks::state_file(&settings.state_dir()),
        ));
        let routes = Arc::new(routes.with_faults(faults.clone()).with_clocks(clocks));
        let built = sink::from_settings(&settings, &routes)?;
        let sinks = Arc::new(built.sinks);
        let route_sinks: Vec<(&str, &str)> = routes.iter().map(|r| (r.name(), r.sink())).collect();
        let sink_names: Vec<String> = (0..sinks.len()).map(|i| sinks.name(i).to_owned()).collect();
        let sink_labels: Vec<&str> = sink_names.iter().map(String::as_str).collect();
        let mut route_labels = route_sinks.clone();
        route_labels.push((crate::route::UNROUTED, sinks.name(sinks.dead_letters())));
        let metrics = Arc::new(Metrics::new(
            settings.metrics.max_devices,
            &route_labels,
            &sink_labels,
        )?);
        let health = Arc::new(Health::new(
            metrics.clone(),
            mqtt_links(&settings),
            (0..settings.sources.len())
                .map(|i| format!("sources.{i}"))
                .collect(),
            sinks.describe(),
            Duration::from_secs(settings.batch.stall_timeout_s),
        ));
        let images = images(&settings, &routes, &built.mysql_pools)?;
        let completeness = completeness(&settings, &routes, &built.mysql_pools, &metrics);
        let status = Arc::new(Status {
            metrics: metrics.clone(),
            health: health.clone(),
            sinks: sinks.clone(),
            routes: route_labels
                .iter()
                .map(|(r, s)| ((*r).to_owned(), (*s).to_owned()))
                .collect(),
            completeness: completeness.as_ref().map(Completeness::pool),
            config: settings.to_masked_toml(),
            started: std::time::Instant::now(),
            stale_after: Duration::from_secs(settings.status.stale_after_s),
            refresh: Duration::from_secs(settings.status.refresh_s),
            window: u64::from(settings.mqtt.receive_maximum)
                * u64::from(settings.mqtt.connections.max(1)),
            max_inflight_bytes: u64::try_from(settings.batch.max_inflight_bytes)
                .unwrap_or(u64::MAX),
            clocks: (routes.clocks().clone(), routes.zones().clone()),
        });
        let listener = bind("http.listen", settings.http_listen()?).await?;
        let device_listener = match settings.device_listen()? {
            Some(addr) => Some(bind("http.device_listen", addr).await?),
            None => None,
        };
        // Resolve secrets and TLS files now, so a typo fails at start.
        if settings.mqtt.enabled {
            mqtt::connect(&settings, 0)?;
        }
        for (i, SourceSettings::Kafka(kafka)) in settings.sources.iter().enumerate() {
            kafka::client_config(kafka, &format!("sources.{i}"), 1, 1)?;
        }
        Ok(Self {
            settings,
            metrics,
            health,
            listener,
            device_listener,
            routes,
            sinks,
            images,
            completeness,
            status,
            faults,
        })
    }

    /// The address `/metrics` is served on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The address HTTP ingest and `/images` are served on, if that listener is on.
    pub fn device_addr(&self) -> Option<SocketAddr> {
        self.device_listener.as_ref()?.local_addr().ok()
    }

    /// The two listeners' routers as [`Bridge::run_until_stopped`] serves
    /// them, ingest sending to `tx`, with the routes it decodes with; for
    /// the HTTP fuzz target's exchange, which serves them without sockets.
    #[cfg(feature = "tooling")]
    pub(crate) fn into_routers(
        self,
        tx: &mpsc::Sender<Delivery>,
    ) -> (Router, Option<Router>, Arc<Routes>, Limits) {
        let budget = ByteBudget::new(self.settings.batch.max_inflight_bytes, self.metrics.clone());
        let (operator, devices) = routers(
            &self.settings,
            &self.metrics,
            (&self.health, &self.status),
            &self.routes,
            self.images,
            self.device_listener.is_some(),
            (tx, &budget),
        );
        (operator, devices, self.routes, limits(&self.settings))
    }

    /// Runs until `stop` fires, then shuts down in order. Returns
    /// [`RunError::TaskEnded`] if a task it cannot work without ends first.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> Result<(), RunError> {
        let Bridge {
            settings,
            metrics,
            health,
            listener,
            device_listener,
            routes,
            sinks,
            images,
            completeness,
            status,
            faults,
        } = self;
        let (supervisor, mut ended) = Supervisor::new();
        // Cancelled by `stop`, or by the bridge itself when a task fails.
        let shutdown = stop.child_token();
        // Created here so HTTP ingest can queue from the start; the pipeline
        // drains it once the sinks are ready. Sized to the in-flight window: the
        // broker cannot send more than that unacknowledged, so this rarely fills
        // (see the MQTT source for when it does).
        let window = usize::from(settings.mqtt.receive_maximum);
        let (tx, rx) = mpsc::channel(window.max(settings.batch.max_rows));
        let budget = ByteBudget::new(settings.batch.max_inflight_bytes, metrics.clone());
        let http_stop = CancellationToken::new();
        let limits = limits(&settings);
        let (operator, devices) = routers(
            &settings,
            &metrics,
            (&health, &status),
            &routes,
            images,
            device_listener.is_some(),
            (&tx, &budget),
        );
        let mut http_tasks = vec![spawn_http(
            &supervisor,
            listener,
            operator,
            limits,
            "operator",
            &metrics,
            &http_stop,
        )];
        if let (Some(device_listener), Some(devices)) = (device_listener, devices) {
            http_tasks.push(spawn_http(
                &supervisor,
                device_listener,
                devices,
                limits,
                "device",
                &metrics,
                &http_stop,
            ));
        }
        let probe = supervisor.spawn(
            "sink probe",
            probe_sinks(sinks.clone(), health.clone(), shutdown.clone()),
        );
        let clock_metrics = metrics.clone();
        let clock_keeper = supervisor.spawn(
            "device clocks",
            clocks::keep(
                routes.clocks().clone(),
                CLOCKS_EVERY,
                move |views| {
                    for (device, view) in views {
                        clock_metrics.clock_offset(device, view.offset.map(|o| o.seconds()));
                    }
                },
                shutdown.clone(),
            ),
        );

        let ready = tokio::select! {
            biased;
            ready = prepare_sinks(&sinks, &shutdown) => ready,
            Some(e) = ended.recv() => match shutdown.is_cancelled() {
                true => Ok(false),
                false => Err(fail(&health, e)),
            },
        };
        // The scan reads tables the migrations make: it starts once they ran.
        let scan = match ready {
            Ok(true) => {
                completeness.map(|c| supervisor.spawn("completeness scan", c.run(shutdown.clone())))
            }
            _ => None,
        };
        let result = match ready {
            Ok(true) => {
                let parts = PipelineParts {
                    routes,
                    sinks,
                    channel: (tx, rx),
                    budget,
                    metrics,
                    health: health.clone(),
                    faults,
                };
                run_pipeline(&settings, parts, &supervisor, &mut ended, &shutdown).await
            }
            Ok(false) => Ok(()), // stopped while waiting for the sinks
            Err(e) => Err(e),
        };

        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), probe).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), clock_keeper).await;
        if let Some(scan) = scan {
            let _ = tokio::time::timeout(Duration::from_secs(5), scan).await;
        }
        if matches!(result, Err(RunError::TaskEnded(_))) {
            // Keep answering /readyz and /healthz (503, naming the task) for a
            // moment, so that a probe or an operator sees why before the restart.
            tokio::time::sleep(FAILED_LINGER).await;
        }
        http_stop.cancel();
        for http in http_tasks {
            // The server drains requests in flight for up to limits.drain_timeout.
            let _ = tokio::time::timeout(Duration::from_secs(10), http).await;
        }
        result
    }
}

/// The operator listener's router, and the device listener's when `devices_on`.
fn routers(
    settings: &Settings,
    metrics: &Arc<Metrics>,
    (health, status): (&Arc<Health>, &Arc<Status>),
    routes: &Arc<Routes>,
    images: Option<Images>,
    devices_on: bool,
    (tx, budget): (&mpsc::Sender<Delivery>, &Arc<ByteBudget>),
) -> (Router, Option<Router>) {
    let request_timeout = Duration::from_secs(settings.http.request_timeout_s);
    let state = AppState {
        metrics: metrics.clone(),
        health: health.clone(),
        status: Some(status.clone()),
    };
    let operator = http::operator(state, request_timeout);
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

/// Marks the bridge failed because of `ended` and says so; returns the error to exit with.
fn fail(health: &Health, ended: Ended) -> RunError {
    tracing::error!(
        task = %ended.task,
        panic = ended.panic.as_deref().unwrap_or(""),
        "A task the bridge cannot work without has ended; /readyz and /healthz now fail and the \
         bridge exits so that its service manager restarts it (unacknowledged messages are redelivered)"
    );
    health.set_failed(ended.to_string());
    RunError::TaskEnded(ended)
}

/// What each HTTP listener allows.
fn limits(settings: &Settings) -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(settings.http.header_read_timeout_s),
        max_connections: settings.http.max_connections,
        drain_timeout: Duration::from_secs(5),
    }
}

fn spawn_http(
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

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { key, addr, source })
}

/// The completeness scan of the CO2 route's sink, when it is a MySQL one.
fn completeness(
    settings: &Settings,
    routes: &Routes,
    pools: &[(String, sqlx::MySqlPool)],
    metrics: &Arc<Metrics>,
) -> Option<Completeness> {
    let c = &settings.completeness;
    let co2 = routes.by_name(crate::route::CO2_ROUTE)?.1;
    let (_, pool) = pools.iter().find(|(n, _)| n == co2.sink())?;
    c.enabled.then(|| {
        Completeness::new(
            pool.clone(),
            metrics.clone(),
            Duration::from_secs(c.scan_interval_s),
            Duration::from_secs(c.late_after_s),
        )
    })
}

/// The images page of the binary route, if one writes to a MySQL sink and
/// viewers are configured (a token file, or `http.images_public`).
fn images(
    settings: &Settings,
    routes: &Routes,
    pools: &[(String, sqlx::MySqlPool)],
) -> Result<Option<Images>, ConfigError> {
    let Some(route) = routes.iter().find(|r| r.is_binary()) else {
        return Ok(None);
    };
    let Some((_, pool)) = pools.iter().find(|(n, _)| n == route.sink()) else {
        return Ok(None);
    };
    let access = match (
        &settings.http.viewer_tokens_file,
        settings.http.images_public,
    ) {
        (Some(path), _) => {
            Access::Viewers(crate::tokens::Tokens::load(path).map_err(|message| {
                ConfigError::Invalid {
                    key: "http.viewer_tokens_file".to_owned(),
                    message,
                }
            })?)
        }
        (None, true) => Access::Public,
        (None, false) => {
            tracing::info!(
                "The images page is off: set http.viewer_tokens_file (or http.images_public = true)"
            );
            return Ok(None);
        }
    };
    Ok(Images::new(routes, pool.clone(), access))
}

/// Keeps each sink's readiness current while nothing is being written.
async fn probe_sinks(sinks: Arc<Sinks>, health: Arc<Health>, stop: CancellationToken) {
    let mut was_up: Vec<Option<bool>> = vec![None; sinks.len()];
    loop {
        for (i, was) in was_up.iter_mut().enumerate() {
            let Some(sink) = sinks.get(i) else { continue };
            let up = sink.probe().await;
            if !up && *was != Some(false) {
                health.sink_error(i, "did not answer the readiness probe".to_owned());
            }
            health.set_sink_up(i, up);
            if *was != Some(up) {
                let name = sinks.name(i);
                if up {
                    tracing::info!(sink = name, kind = sink.kind(), "Sink reachable");
                } else {
                    tracing::warn!(
                        sink = name,
                        kind = sink.kind(),
                        "Sink unreachable; readings wait unacknowledged at their sources"
                    );
                }
                *was = Some(up);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SINK_PROBE_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Deletes old dead letters every `interval`, a little at a time, until `stop`.
async fn prune_dead_letters(
    sinks: Arc<Sinks>,
    days: u32,
    interval: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let Some(sink) = sinks.get(sinks.dead_letters()) else {
        return stop.cancelled().await;
    };
    let mut warned = false;
    loop {
        if days > 0 {
            match sink.prune_dead_letters(days).await {
                Ok(pruned) => {
                    metrics.dead_letters_pruned.inc_by(pruned.deleted);
                    if let Some(n) = pruned.remaining {
                        metrics
                            .dead_letters_stored
                            .set(i64::try_from(n).unwrap_or(i64::MAX));
                    }
                    if pruned.deleted > 0 {
                        tracing::info!(deleted = pruned.deleted, days, "Deleted old dead letters");
                    }
                    warned = false;
                }
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "Cannot delete old dead letters; they are kept");
                    warned = true;
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Waits for every sink and readies it (migrations). Returns false if stopped while waiting.
async fn prepare_sinks(sinks: &Sinks, stop: &CancellationToken) -> Result<bool, RunError> {
    for i in 0..sinks.len() {
        let Some(sink) = sinks.get(i) else { continue };
        let name = sinks.name(i);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match sink.prepare().await {
                Ok(()) => break,
                Err(PrepareError::Fatal(message)) => {
                    return Err(RunError::Sink {
                        sink: name.to_owned(),
                        message,
                    })
                }
                Err(PrepareError::Unavailable(e)) => {
                    if backoff.attempts() == 0 {
                        tracing::warn!(sink = name, error = %e, "Waiting for the sink before starting");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.cancelled() => return Ok(false),
                    }
                }
            }
        }
    }
    Ok(true)
}

/// How many MQTT connections the bridge opens (none with `[mqtt]` off).
fn mqtt_links(settings: &Settings) -> usize {
    if settings.mqtt.enabled {
        usize::from(settings.mqtt.connections)
    } else {
        0
    }
}

/// Starts every Kafka source under `supervisor`, stopped by `stop`.
fn start_kafka(
    settings: &Settings,
    window: usize,
    tx: &mpsc::Sender<Delivery>,
    budget: &Arc<ByteBudget>,
    health: &Arc<Health>,
    supervisor: &Supervisor,
    stop: &CancellationToken,
) -> Result<(kafka::Acker, Vec<JoinHandle<()>>), RunError> {
    let mut consumers = Vec::new();
    let mut tasks = Vec::new();
    for (i, SourceSettings::Kafka(s)) in settings.sources.iter().enumerate() {
        let source = KafkaSource::start(s, i, window, tx.clone(), budget.clone(), health.clone())?;
        consumers.push(source.consumer());
        tasks.push(supervisor.spawn(format!("kafka source {i}"), source.run(stop.clone())));
    }
    Ok((kafka::Acker::new(consumers), tasks))
}

/// What the pipeline is built from.
struct PipelineParts {
    routes: Arc<Routes>,
    sinks: Arc<Sinks>,
    channel: (mpsc::Sender<Delivery>, mpsc::Receiver<Delivery>),
    budget: Arc<ByteBudget>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    faults: Faults,
}

async fn run_pipeline(
    settings: &Settings,
    parts: PipelineParts,
    supervisor: &Supervisor,
    ended: &mut mpsc::UnboundedReceiver<Ended>,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let PipelineParts {
        routes,
        sinks,
        channel: (tx, rx),
        budget,
        metrics,
        health,
        faults,
    } = parts;
    let window = usize::from(settings.mqtt.receive_maximum);
    let subscriptions = settings.mqtt_subscriptions(routes.subscriptions());
    let quarantine = Arc::new(Quarantine::load(settings.state_dir().join("quarantine")));
    let in_flight = Arc::new(InFlight::default());
    let mut links = Vec::new();
    let mut ingress_stop = Vec::new();
    let mut ingress_tasks = Vec::new();
    let kafka_stop = CancellationToken::new();
    let (kafka_acker, kafka_tasks) = start_kafka(
        settings,
        window,
        &tx,
        &budget,
        &health,
        supervisor,
        &kafka_stop,
    )?;
    for link in 0..mqtt_links(settings) {
        let (client, eventloop) = mqtt::connect(settings, link)?;
        let epoch = ConnectionEpoch::default();
        let ingress = Ingress::new(
            eventloop,
            client.clone(),
            subscriptions.clone(),
            tx.clone(),
            epoch.clone(),
            metrics.clone(),
            health.clone(),
            Duration::from_millis(settings.mqtt.reconnect_max_ms),
            link,
            budget.clone(),
        );
        let stop = CancellationToken::new();
        ingress_tasks
            .push(supervisor.spawn(format!("mqtt ingress {link}"), ingress.run(stop.clone())));
        ingress_stop.push(stop);
        links.push((client, epoch));
    }
    drop(tx);
    let (mqtt_acker, forwarders) = mqtt::Acker::spawn(links.clone(), supervisor);
    let (sinks_for_retention, metrics_for_retention) = (sinks.clone(), metrics.clone());
    let pipeline = Pipeline {
        rx,
        routes,
        sinks,
        acker: Acker::new(mqtt_acker, kafka_acker.clone()),
        metrics,
        // A batch cannot outgrow the window: the broker sends nothing more until
        // it is acked, so waiting for max_delay would only add latency.
        max_rows: settings.batch.max_rows.min(window),
        max_bytes: settings.batch.max_bytes,
        max_delay: Duration::from_millis(settings.batch.max_delay_ms),
        shutdown_timeout: Duration::from_secs(settings.batch.shutdown_timeout_s),
        health: health.clone(),
        quarantine: quarantine.clone(),
        in_flight: in_flight.clone(),
        faults,
    };
    let tasks = pipeline.spawn(supervisor, shutdown.clone());
    let retention = supervisor.spawn(
        "dead-letter retention",
        prune_dead_letters(
            sinks_for_retention,
            settings.dead_letters.retention_days,
            Duration::from_secs(settings.dead_letters.prune_interval_s),
            metrics_for_retention,
            shutdown.clone(),
        ),
    );

    // Until a stop is asked for, any supervised task that ends is a failure.
    // Tasks end *because* of a stop too, so a stop seen first (or meanwhile) wins.
    let failure = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        Some(e) = ended.recv() => Some(e).filter(|_| !shutdown.is_cancelled()),
    };
    let failed = failure.map(|ended| {
        let suspects = in_flight.held_by(&ended.task);
        if ended.panic.is_some() && !suspects.is_empty() {
            quarantine.record_crash(&suspects);
            tracing::warn!(
                messages = suspects.len(),
                "Recorded the messages the crashed task held in the crash quarantine"
            );
        }
        let error = fail(&health, ended);
        shutdown.cancel();
        error
    });
    if failed.is_none() {
        tracing::info!("Shutting down: no new messages, flushing what was received");
    }
    // After a failure the surviving stages get a short deadline: the process
    // must exit within seconds, and what is not acked is redelivered.
    let flush_deadline = match failed {
        Some(_) => Duration::from_secs(3),
        None => Duration::from_secs(settings.batch.shutdown_timeout_s + 5),
    };
    let drained = async {
        let _ = tasks.intake.await;
        let _ = tasks.commit.await;
    };
    if tokio::time::timeout(flush_deadline, drained).await.is_err() {
        tracing::error!(
            "The pipeline did not finish in time; unacknowledged messages will be redelivered"
        );
    }
    // Kafka: stop reading, then commit what is durable and leave the groups
    // (their partitions move to the other members at once).
    kafka_stop.cancel();
    for task in kafka_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    kafka_acker.finish().await;
    // The pipeline has dropped its acker: the forwarders end once their queues
    // are handed to the event loops, and DISCONNECT queues behind those acks.
    forwarders.finish(Duration::from_secs(5)).await;
    for ((client, _), stop) in links.iter().zip(&ingress_stop) {
        stop.cancel();
        // Bounded: a dead event loop never makes room.
        let _ = tokio::time::timeout(Duration::from_secs(5), client.disconnect()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), retention).await;
    for mut task in ingress_tasks {
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
    tracing::info!("Stopped");
    match failed {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
