//! Sinks: where batches are stored. A sink writes a batch durably, all or
//! nothing, or says how it failed: [`SinkError::Transient`] (retry later;
//! nothing is acknowledged meanwhile) or [`SinkError::Refused`] (something in
//! the batch can never be stored as it is). The pipeline owns what follows
//! for every sink alike: retries with back-off, splitting a refused batch
//! down to the message, dead letters and acknowledgements.

mod check;
pub use check::routes_fit_sinks;
pub(crate) mod influx;
pub(crate) mod mysql;

use futures_util::future::BoxFuture;
use sqlx::MySqlPool;

use crate::config::{sink_name, ConfigError, Settings, SinkSettings};
use crate::model::DeadLetter;
use crate::model::{Message, RouteId};
use crate::route::{Routes, DEFAULT_SINK};

/// A message for a sink, with what it needs besides the message.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The route that decoded it (the sink prepared a target per route).
    pub route: RouteId,
    /// The decoded message.
    pub message: &'a Message,
    /// The topic it arrived on.
    pub topic: &'a str,
}

/// What one write holds: messages for this sink, and dead letters if this
/// sink keeps them. Both are written in one unit.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// Messages, in arrival order.
    pub items: Vec<Item<'a>>,
    /// Dead letters, in arrival order.
    pub letters: Vec<&'a DeadLetter>,
    /// Ids of stored dead letters that `items` replace (`co2-bridge
    /// dead-letters replay`): the MySQL sink deletes them from its
    /// `rejected_messages` in the same transaction, so a replayed letter and
    /// its rows never both exist or both vanish. Only the sink that keeps
    /// those letters is given any; live batches leave it empty.
    pub settles: Vec<u64>,
    /// How far an import from a legacy table got once this batch is stored
    /// (`co2-bridge import --from-mysql`): a MySQL sink records it in the
    /// same transaction, so a rerun goes on after exactly what was
    /// committed; other sinks ignore it (a rerun then reads from the start,
    /// which their idempotent writes make harmless).
    pub checkpoint: Option<Checkpoint<'a>>,
}

/// A position in an import's source, recorded with the rows read before it.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint<'a> {
    /// The source's name (server, database, table; no password).
    pub source: &'a str,
    /// The last key read, as text.
    pub key: &'a str,
    /// Rows read up to and including it.
    pub rows: u64,
}

/// What a successful write stored, per route.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Rows (or points) newly stored.
    pub inserted: Vec<(RouteId, u64)>,
    /// Those that were stored already (redeliveries).
    pub duplicates: Vec<(RouteId, u64)>,
}

impl Written {
    /// Adds another write's counts.
    pub fn merge(&mut self, other: Written) {
        add(&mut self.inserted, other.inserted);
        add(&mut self.duplicates, other.duplicates);
    }
}

fn add(into: &mut Vec<(RouteId, u64)>, from: Vec<(RouteId, u64)>) {
    for (route, n) in from {
        match into.iter_mut().find(|(r, _)| *r == route) {
            Some((_, total)) => *total += n,
            None => into.push((route, n)),
        }
    }
}

/// Why a write stored nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The store is unreachable, busy or failing; the same write can succeed later.
    #[error("{0}")]
    Transient(String),
    /// The store refused something in the batch, for good: the message the
    /// store gave (kept with the dead letter once splitting finds the message).
    #[error("{0}")]
    Refused(String),
}

/// Why a sink is not ready for writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// The store cannot be reached yet; the bridge waits and tries again.
    #[error("{0}")]
    Unavailable(String),
    /// The store is reachable but cannot be used as configured; the bridge exits.
    #[error("{0}")]
    Fatal(String),
}

/// A store for batches.
pub trait Sink: Send + Sync {
    /// Readies the store for writes (MySQL: brings the schema up to date, or
    /// checks that it is).
    fn prepare(&self) -> BoxFuture<'_, Result<(), PrepareError>>;
    /// Stores `batch` durably, all or nothing.
    fn write<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, Result<Written, SinkError>>;
    /// True when the store answers (for readiness while nothing is written).
    fn probe(&self) -> BoxFuture<'_, bool>;
    /// What kind of store it is (`mysql`, `influxdb`), for logs and readiness.
    fn kind(&self) -> &'static str;
    /// The longest back-off between retries of a failing write.
    fn retry_max(&self) -> std::time::Duration;
    /// How many times the store moved to another of its nodes so far (a
    /// clustered database's `hosts`).
    fn failovers(&self) -> u64 {
        0
    }
    /// Deletes the dead letters older than `days`, a little at a time so no
    /// table is locked for long; returns how many went and how many are left
    /// (`None` when the store cannot tell). A store that keeps time-limited
    /// data by itself (InfluxDB's retention policies) deletes nothing here.
    fn prune_dead_letters(&self, days: u32) -> BoxFuture<'_, Result<Pruned, String>> {
        let _ = days;
        Box::pin(async { Ok(Pruned::default()) })
    }
    /// The newest `n` dead letters, newest first, for the status page; a
    /// store that cannot list them returns none.
    fn recent_dead_letters(&self, n: u32) -> BoxFuture<'_, Result<Vec<StoredLetter>, String>> {
        let _ = n;
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Writes `batch` to `sink` (called `name` in logs), retrying a transient
/// failure with back-off up to `tries` attempts in all: for the one-shot
/// commands (replay, import) that have nobody to hold unacknowledged
/// messages for them. `Ok(Err(detail))` is a refusal, with what the sink
/// said; `Err(error)` a failure that outlasted the tries.
pub async fn write_with_tries(
    sink: &dyn Sink,
    name: &str,
    batch: &Batch<'_>,
    tries: u32,
) -> Result<Result<Written, String>, String> {
    let mut backoff =
        co2_wire::backoff::Backoff::new(std::time::Duration::from_millis(100), sink.retry_max());
    loop {
        match sink.write(batch).await {
            Ok(written) => return Ok(Ok(written)),
            Err(SinkError::Refused(detail)) => return Ok(Err(detail)),
            Err(SinkError::Transient(e)) if backoff.attempts() + 1 < tries => {
                let delay = backoff.next_delay();
                tracing::warn!(sink = name, error = %e, delay_ms = delay.as_millis() as u64, "Write failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(SinkError::Transient(e)) => return Err(e),
        }
    }
}

/// A dead letter as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLetter {
    /// When it was received (UTC).
    pub received_at: chrono::NaiveDateTime,
    /// The topic (or HTTP path) it came on.
    pub topic: String,
    /// Why it was rejected (a `co2_bridge_messages_rejected_total` reason).
    pub reason: String,
    /// What the decoder or the store said, if anything.
    pub detail: Option<String>,
    /// The first bytes of the payload.
    pub preview: Vec<u8>,
    /// The payload's real size.
    pub payload_bytes: u64,
}

/// What one pass of dead-letter retention did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Dead letters deleted.
    pub deleted: u64,
    /// Dead letters kept, if the store can tell.
    pub remaining: Option<u64>,
}

/// The sinks of a configuration, and what else needs their connections.
pub struct Built {
    /// Every sink a route or the dead letters use.
    pub sinks: Sinks,
    /// The pool of each MySQL sink, by name (for the images page).
    pub mysql_pools: Vec<(String, MySqlPool)>,
}

/// Creates every sink the routes or the dead letters use (no I/O: pools
/// connect lazily), each with a target per route that writes to it.
pub fn from_settings(settings: &Settings, routes: &Routes) -> Result<Built, ConfigError> {
    routes_fit_sinks(settings, routes)?;
    let dead_letters = dead_letter_sink(settings, routes);
    let rollups = rollups(settings)?;
    let mut sinks = Vec::new();
    let mut mysql_pools = Vec::new();
    for (key, sink) in settings.sink_settings() {
        let name = sink_name(&key).to_owned();
        let used = routes.iter().any(|r| r.sink() == name) || name == dead_letters;
        if !used {
            continue;
        }
        let built: Box<dyn Sink> = match sink {
            SinkSettings::Mysql(db) => {
                let (pool, nodes) = mysql::schema::pool(&db, &key)?;
                mysql_pools.push((name.clone(), pool.clone()));
                Box::new(mysql::MysqlSink::new(
                    pool,
                    nodes,
                    routes,
                    &name,
                    &db,
                    rollups.clone(),
                    retention(settings, rollups.as_ref()),
                ))
            }
            SinkSettings::Influxdb(influx) => {
                Box::new(influx::InfluxSink::new(&influx, &key, routes, &name)?)
            }
        };
        sinks.push((name, built));
    }
    let position = sinks
        .iter()
        .position(|(n, _)| *n == dead_letters)
        .ok_or_else(|| ConfigError::Invalid {
            key: "dead_letters.sink".to_owned(),
            message: format!("no sink {dead_letters:?}"),
        })?;
    Ok(Built {
        sinks: Sinks::new(sinks, position),
        mysql_pools,
    })
}

/// The rollups MySQL sinks keep, if enabled.
pub fn rollups(settings: &Settings) -> Result<Option<mysql::rollup::Rollups>, ConfigError> {
    Ok(if settings.rollups.enabled {
        mysql::rollup::Rollups::new(settings.rollups.tiers()?)
    } else {
        None
    })
}

/// The tables kept by time, per `[retention]`.
pub fn retention(
    settings: &Settings,
    rollups: Option<&mysql::rollup::Rollups>,
) -> mysql::retention::Retention {
    mysql::retention::Retention::new(&settings.retention, rollups)
}

/// The configured dead-letter sink, or `mysql` when a route writes there, or
/// the first sink a route uses.
fn dead_letter_sink(settings: &Settings, routes: &Routes) -> String {
    if let Some(sink) = &settings.dead_letters.sink {
        return sink.clone();
    }
    if routes.iter().any(|r| r.sink() == DEFAULT_SINK) {
        return DEFAULT_SINK.to_owned();
    }
    routes
        .iter()
        .next()
        .map_or_else(|| DEFAULT_SINK.to_owned(), |r| r.sink().to_owned())
}

/// Every sink the routes use, by name, and the one that keeps dead letters.
pub struct Sinks {
    sinks: Vec<(String, Box<dyn Sink>)>,
    dead_letters: usize,
}

impl Sinks {
    /// The sinks, in order; `dead_letters` is the position of the one that keeps dead letters.
    pub fn new(sinks: Vec<(String, Box<dyn Sink>)>, dead_letters: usize) -> Self {
        Self {
            sinks,
            dead_letters,
        }
    }

    /// The sink at `index`.
    pub fn get(&self, index: usize) -> Option<&dyn Sink> {
        self.sinks.get(index).map(|(_, s)| s.as_ref())
    }

    /// The name of the sink at `index` (the `sink` metric label).
    pub fn name(&self, index: usize) -> &str {
        self.sinks.get(index).map_or("", |(n, _)| n.as_str())
    }

    /// The position of the sink called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.sinks.iter().position(|(n, _)| n == name)
    }

    /// How many sinks there are.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// The position of the sink that keeps dead letters.
    pub fn dead_letters(&self) -> usize {
        self.dead_letters
    }

    /// (name, kind) of every sink, in order.
    pub fn describe(&self) -> Vec<(String, &'static str)> {
        self.sinks
            .iter()
            .map(|(n, s)| (n.clone(), s.kind()))
            .collect()
    }
}
