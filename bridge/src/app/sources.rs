//! Starting the sources (MQTT links, Kafka consumers) and the pipeline
//! between them and the sinks, and running until a stop or a failure.

use super::*;
use crate::metrics::TlsExpiry;
use crate::source::certificate;

/// How many MQTT connections the bridge opens (none with `[mqtt]` off).
pub(super) fn mqtt_links(settings: &Settings) -> usize {
    if settings.mqtt.enabled {
        usize::from(settings.mqtt.connections)
    } else {
        0
    }
}

/// Starts every Kafka source under `supervisor`, stopped by `stop`.
pub(super) fn start_kafka(
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

/// Exports the end dates of the Kafka sources' client certificates.
/// librdkafka checks the brokers' certificates without showing them; the
/// bridge's own is a file it can read.
fn report_kafka_client_certificates(settings: &Settings, expiry: &TlsExpiry) {
    for SourceSettings::Kafka(s) in &settings.sources {
        let own = s.tls.as_ref().and_then(|t| t.client_cert_file.as_ref());
        if let Some(end) = own
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|pem| certificate::pem_not_after(&pem))
        {
            expiry.observe("kafka", "client", "", end);
        }
    }
}

/// What the pipeline is built from.
pub(super) struct PipelineParts {
    pub(super) routes: Arc<Routes>,
    pub(super) sinks: Arc<Sinks>,
    pub(super) channel: (mpsc::Sender<Delivery>, mpsc::Receiver<Delivery>),
    pub(super) budget: Arc<ByteBudget>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    pub(super) faults: Faults,
}

pub(super) async fn run_pipeline(
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
    report_kafka_client_certificates(settings, &metrics.tls_expiry);
    for link in 0..mqtt_links(settings) {
        let (client, eventloop) = mqtt::connect(settings, link, Some(&metrics.tls_expiry))?;
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
        // Discovery follows one connection: `[discovery]` refuses more.
        let ingress = match routes.discovery().filter(|_| link == 0) {
            Some(discovery) => ingress.with_discovery(mqtt::Following::new(discovery.feed())),
            None => ingress,
        };
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
