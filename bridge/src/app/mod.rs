//! Building and running the bridge: check the configuration, build routes
//! and sinks once, bind, ready the sinks, connect the sources, and shut down
//! in order (stop intake, flush, ack, disconnect).

mod listeners;
mod sinks;
mod sources;

use listeners::{bind, limits, routers, spawn_http};
use sinks::{
    completeness, images, keep_tables, prepare_sinks, probe_sinks, prune_dead_letters, TableKeeper,
};
use sources::{mqtt_links, run_pipeline, PipelineParts};

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
use crate::http::export::Exports;
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

/// How long the status page waits for Alertmanager before saying it did not answer.
const ALERTMANAGER_TIMEOUT: Duration = Duration::from_secs(2);

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

/// What `check-config` checks: the settings, the routes built from them,
/// and that the routes fit the sinks (no file is read, nothing connects).
pub fn check(settings: &Settings) -> Result<(), ConfigError> {
    settings.validate()?;
    let routes = Routes::from_settings(settings)?;
    sink::routes_fit_sinks(settings, &routes)
}

/// Applies pending migrations to every MySQL sink a route uses; returns how
/// many were applied in all.
pub async fn migrate(settings: &Settings) -> Result<usize, MigrateError> {
    let routes = Routes::from_settings(settings)?;
    let built = sink::from_settings(settings, &routes)?;
    let rollups = sink::rollups(settings)?;
    let mut applied = 0;
    for (sink, pool) in &built.mysql_pools {
        let database = |source| MigrateError::Database {
            sink: sink.clone(),
            source,
        };
        let pending = schema::pending_migrations(pool)
            .await
            .map_err(|e| database(e.into()))?;
        schema::migrate(
            pool,
            rollups.as_ref(),
            &sink::retention(settings, rollups.as_ref()),
        )
        .await
        .map_err(database)?;
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
    exports: Arc<Exports>,
    completeness: Option<Completeness>,
    keeper: TableKeeper,
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
        if let Some(discovery) = routes.discovery() {
            discovery.attach_gauge(metrics.discovery_sensors.clone());
        }
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
        let exports = Arc::new(Exports::new(&settings)?);
        let completeness = completeness(&settings, &routes, &built.mysql_pools, &metrics);
        let keeper = TableKeeper {
            retention: sink::retention(&settings, sink::rollups(&settings)?.as_ref()),
            pools: built.mysql_pools.clone(),
            interval: Duration::from_secs(settings.retention.interval_s),
        };
        let alertmanager = match settings.status.alertmanager()? {
            Some(url) => Some(
                crate::status::Alertmanager::new(&url, ALERTMANAGER_TIMEOUT).map_err(
                    |message| ConfigError::Invalid {
                        key: "status.alertmanager_url".into(),
                        message,
                    },
                )?,
            ),
            None => None,
        };
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
            alertmanager,
            discovery: routes.discovery().cloned(),
        });
        let listener = bind("http.listen", settings.http_listen()?).await?;
        let device_listener = match settings.device_listen()? {
            Some(addr) => Some(bind("http.device_listen", addr).await?),
            None => None,
        };
        // Resolve secrets and TLS files now, so a typo fails at start.
        if settings.mqtt.enabled {
            mqtt::connect(&settings, 0, None)?;
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
            exports,
            completeness,
            keeper,
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
            (self.images, &self.exports),
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
            exports,
            completeness,
            keeper,
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
            (images, &exports),
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
        // Partitions exist once the migrations ran, too.
        let keeping = match ready {
            Ok(true) => Some(supervisor.spawn(
                "retention",
                keep_tables(keeper, metrics.clone(), shutdown.clone()),
            )),
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
        if let Some(keeping) = keeping {
            let _ = tokio::time::timeout(Duration::from_secs(5), keeping).await;
        }
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
