//! The sinks' side of a run: what is built beside them (completeness,
//! images), waiting until they are ready, probing them, and retention of
//! dead letters and of the tables kept by time.

use super::*;
use crate::sink::mysql::retention::Retention;
use crate::sink::mysql::schema::mysql_error_number;
use sqlx::MySqlPool;

/// The completeness scan of the CO2 route's sink, when it is a MySQL one.
pub(super) fn completeness(
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
pub(super) fn images(
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
        crate::http::viewers::tokens(settings)?,
        settings.http.images_public,
    ) {
        (Some(tokens), _) => Access::Viewers(tokens),
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
pub(super) async fn probe_sinks(sinks: Arc<Sinks>, health: Arc<Health>, stop: CancellationToken) {
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
pub(super) async fn prune_dead_letters(
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

/// The tables kept by time, in each MySQL database, and how often to look.
pub(super) struct TableKeeper {
    pub retention: Retention,
    pub pools: Vec<(String, MySqlPool)>,
    pub interval: Duration,
}

/// Runs a retention pass on every MySQL database each `interval` (the first
/// a few seconds after start), one bridge at a time, until `stop`; sets the
/// storage metrics from what it saw.
pub(super) async fn keep_tables(
    keeper: TableKeeper,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    // Zero until a partition goes, rather than absent.
    for table in keeper.retention.table_names() {
        metrics.storage.dropped(table, 0);
    }
    let mut warned = false;
    let mut wait = Duration::from_secs(5).min(keeper.interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = keeper.interval;
        for (sink, pool) in &keeper.pools {
            let today = chrono::Utc::now().date_naive();
            let pass = keeper.retention.pass(pool, today).await;
            let failed = match pass {
                Ok(Some(pass)) => {
                    for (table, partitions) in &pass.dropped {
                        metrics
                            .storage
                            .dropped(table, u64::try_from(partitions.len()).unwrap_or(0));
                    }
                    for held in &pass.held {
                        let oldest = held
                            .oldest
                            .map(|t| t.and_utc().timestamp_micros() as f64 / 1e6);
                        metrics
                            .storage
                            .held(&held.table, held.rows, held.bytes, oldest);
                    }
                    pass.failed
                }
                Ok(None) => None, // another bridge's pass
                Err(e) => Some(e),
            };
            match failed {
                None => warned = false,
                Some(e) if !warned => {
                    let hint = if matches!(mysql_error_number(&e), Some(1142 | 1044 | 1045)) {
                        "the bridge's account may not ALTER or DROP these tables' partitions; run \
                         `co2-bridge retention` as an admin from a timer, or grant ALTER, DROP on them"
                    } else {
                        "retried next pass; inserts are not affected (a partition waits ahead)"
                    };
                    tracing::warn!(sink = %sink, error = %e, hint, "Retention pass failed");
                    warned = true;
                }
                Some(_) => {}
            }
        }
    }
}

/// Waits for every sink and readies it (migrations). Returns false if stopped while waiting.
pub(super) async fn prepare_sinks(
    sinks: &Sinks,
    stop: &CancellationToken,
) -> Result<bool, RunError> {
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
