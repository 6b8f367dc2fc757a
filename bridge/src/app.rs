//! Building and running the bridge: bind, prepare the schema, connect, and
//! shut down in order (stop intake, flush, ack, disconnect).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::MySqlPool;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::acks::{Acker, ConnectionEpoch};
use crate::backoff::Backoff;
use crate::config::{ConfigError, Settings};
use crate::db;
use crate::fault::Faults;
use crate::health::Health;
use crate::http::{self, AppState, DataPaths};
use crate::ingress::Delivery;
use crate::ingress::Ingress;
use crate::metrics::{Metrics, MetricsError};
use crate::mqtt;
use crate::pipeline::{InFlight, Pipeline};
use crate::quarantine::Quarantine;
use crate::route::Routes;
use crate::supervisor::{Ended, Supervisor};
use crate::writer::Writer;

/// How long a failed bridge keeps answering its probes before it exits.
const FAILED_LINGER: Duration = Duration::from_secs(1);

/// How often readiness re-checks the database when nothing is being written.
const DB_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Why the bridge stopped with an error. Anything else is retried, not fatal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr} (http.listen): {source}; is another bridge running?")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The schema is behind and this account may not migrate it.
    #[error(
        "the database schema is behind ({pending} migration(s) pending) and this account may not \
         change it; run `co2-bridge migrate` with an admin account"
    )]
    SchemaBehind {
        /// How many migrations are pending.
        pending: usize,
    },
    /// A migration failed for a reason other than a missing privilege.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A task the bridge cannot work without ended or panicked; the bridge
    /// exits so that its service manager restarts it.
    #[error("{0}; exiting so that the service manager restarts the bridge (unacknowledged messages are redelivered)")]
    TaskEnded(Ended),
}

/// A bridge with its listener bound, ready to run.
pub struct Bridge {
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    listener: TcpListener,
    pool: MySqlPool,
    routes: Arc<Routes>,
    faults: Faults,
}

impl Bridge {
    /// Validates the settings and binds the HTTP listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, RunError> {
        settings.validate()?;
        let faults = Faults::from_env();
        let routes = Arc::new(Routes::from_settings(&settings)?.with_faults(faults.clone()));
        let metrics = Arc::new(Metrics::new(
            settings.metrics.max_devices,
            &routes.labels(),
        )?);
        let health = Arc::new(Health::new(
            metrics.clone(),
            usize::from(settings.mqtt.connections),
            Duration::from_secs(settings.batch.stall_timeout_s),
        ));
        let addr = settings.http_listen()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source })?;
        let pool = db::pool(&settings)?;
        // Resolve secrets and TLS files now, so a typo fails at start.
        mqtt::connect(&settings, 0)?;
        Ok(Self {
            settings,
            metrics,
            health,
            listener,
            pool,
            routes,
            faults,
        })
    }

    /// The address `/metrics` is served on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Runs until `stop` fires, then shuts down in order. Returns
    /// [`RunError::TaskEnded`] if a task it cannot work without ends first.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> Result<(), RunError> {
        let Bridge {
            settings,
            metrics,
            health,
            listener,
            pool,
            routes,
            faults,
        } = self;
        let (supervisor, mut ended) = Supervisor::new();
        // Cancelled by `stop`, or by the bridge itself when a task fails.
        let shutdown = stop.child_token();
        // Created here so HTTP ingest can queue from the start; the pipeline
        // drains it once the schema is ready. Sized to the in-flight window: the
        // broker cannot send more than that unacknowledged, so this rarely fills
        // (see ingress for when it does).
        let window = usize::from(settings.mqtt.receive_maximum);
        let (tx, rx) = mpsc::channel(window.max(settings.batch.max_rows));
        let http_stop = CancellationToken::new();
        let state = AppState {
            metrics: metrics.clone(),
            health: health.clone(),
            data: Some(Arc::new(DataPaths {
                routes: routes.clone(),
                tx: tx.clone(),
                pool: pool.clone(),
            })),
        };
        let http = spawn_http(&supervisor, listener, state, http_stop.clone());
        let probe = supervisor.spawn(
            "database probe",
            probe_database(pool.clone(), metrics.clone(), shutdown.clone()),
        );

        let ready = tokio::select! {
            biased;
            ready = prepare_schema(&settings, &pool, &shutdown) => ready,
            Some(e) = ended.recv() => match shutdown.is_cancelled() {
                true => Ok(false),
                false => Err(fail(&health, e)),
            },
        };
        let result = match ready {
            Ok(true) => {
                let parts = PipelineParts {
                    pool: pool.clone(),
                    routes,
                    channel: (tx, rx),
                    metrics,
                    health: health.clone(),
                    faults,
                };
                run_pipeline(&settings, parts, &supervisor, &mut ended, &shutdown).await
            }
            Ok(false) => Ok(()), // stopped while waiting for the database
            Err(e) => Err(e),
        };

        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), probe).await;
        if matches!(result, Err(RunError::TaskEnded(_))) {
            // Keep answering /readyz and /healthz (503, naming the task) for a
            // moment, so that a probe or an operator sees why before the restart.
            tokio::time::sleep(FAILED_LINGER).await;
        }
        http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
        pool.close().await;
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

fn spawn_http(
    supervisor: &Supervisor,
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let app = http::app(state);
    supervisor.spawn("http server", async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    })
}

/// Keeps `db_up` current while nothing is being written.
async fn probe_database(pool: MySqlPool, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut was_up: Option<bool> = None;
    loop {
        let up = db::ping(&pool, Duration::from_secs(2)).await;
        metrics.db_up.set(i64::from(up));
        if was_up != Some(up) {
            if up {
                tracing::info!("Database reachable");
            } else {
                tracing::warn!("Database unreachable; readings wait unacknowledged at the broker");
            }
            was_up = Some(up);
        }
        tokio::select! {
            _ = tokio::time::sleep(DB_PROBE_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Waits for the database and brings the schema up to date (or checks it is).
/// Returns false if stopped while waiting.
async fn prepare_schema(
    settings: &Settings,
    pool: &MySqlPool,
    stop: &CancellationToken,
) -> Result<bool, RunError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let pending = match db::pending_migrations(pool).await {
            Ok(pending) => pending,
            Err(e) => {
                if backoff.attempts() == 0 {
                    tracing::warn!(error = %e, "Waiting for the database before starting");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = stop.cancelled() => return Ok(false),
                }
            }
        };
        if pending.is_empty() {
            return Ok(true);
        }
        if !settings.database.migrate_on_start {
            return Err(RunError::SchemaBehind {
                pending: pending.len(),
            });
        }
        match db::migrate(pool).await {
            Ok(()) => {
                tracing::info!(applied = pending.len(), "Database schema migrated");
                return Ok(true);
            }
            Err(e) if db::is_access_denied(&e) => {
                return Err(RunError::SchemaBehind {
                    pending: pending.len(),
                })
            }
            Err(sqlx::migrate::MigrateError::Execute(e)) if crate::writer::is_transient(&e) => {
                tracing::warn!(error = %e, "Migration interrupted; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.cancelled() => return Ok(false),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the pipeline is built from.
struct PipelineParts {
    pool: MySqlPool,
    routes: Arc<Routes>,
    channel: (mpsc::Sender<Delivery>, mpsc::Receiver<Delivery>),
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
        pool,
        routes,
        channel: (tx, rx),
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
    for link in 0..usize::from(settings.mqtt.connections) {
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
        );
        let stop = CancellationToken::new();
        ingress_tasks
            .push(supervisor.spawn(format!("mqtt ingress {link}"), ingress.run(stop.clone())));
        ingress_stop.push(stop);
        links.push((client, epoch));
    }
    drop(tx);
    let (acker, forwarders) = Acker::spawn(links.clone(), supervisor);
    let pipeline = Pipeline {
        rx,
        routes,
        writer: Writer::new(
            pool,
            Duration::from_millis(settings.database.retry_max_ms),
            settings.wire.dead_letter_payload_bytes,
            metrics.clone(),
        ),
        acker,
        metrics,
        // A batch cannot outgrow the window: the broker sends nothing more until
        // it is acked, so waiting for max_delay would only add latency.
        max_rows: settings.batch.max_rows.min(window),
        max_delay: Duration::from_millis(settings.batch.max_delay_ms),
        shutdown_timeout: Duration::from_secs(settings.batch.shutdown_timeout_s),
        health: health.clone(),
        quarantine: quarantine.clone(),
        in_flight: in_flight.clone(),
        faults,
    };
    let tasks = pipeline.spawn(supervisor, shutdown.clone());

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
    // The pipeline has dropped its acker: the forwarders end once their queues
    // are handed to the event loops, and DISCONNECT queues behind those acks.
    forwarders.finish(Duration::from_secs(5)).await;
    for ((client, _), stop) in links.iter().zip(&ingress_stop) {
        stop.cancel();
        // Bounded: a dead event loop never makes room.
        let _ = tokio::time::timeout(Duration::from_secs(5), client.disconnect()).await;
    }
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
