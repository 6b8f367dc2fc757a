//! `co2-bridge dead-letters list|replay`: the dead letters in MySQL fed
//! through today's configuration again, for when the configuration was what
//! refused them (a device's time zone, a range, a route that was missing).
//!
//! Each selected letter goes through [`Routes::record`] as a delivery of the
//! topic it was stored with (see [`origin`]), with "now" set to the letter's
//! `received_at`: the future check compares a reading with when it arrived,
//! not with when it is replayed. What decodes is written through the route's
//! sink like a live message and its letter deleted, exactly once (see
//! [`write`]); what is refused again stays, with today's reason. Letters are
//! read in chunks by id, up to the newest id when the run started, so a run
//! ends and is safe beside a running bridge.

mod letters;
mod origin;
mod selection;
mod summary;
mod write;

use std::sync::Arc;

use bytes::Bytes;
use co2_wire::DeviceId;
use sqlx::MySqlPool;

use crate::clocks::{self, DeviceClocks};
use crate::config::{ConfigError, Settings};
use crate::model::RouteId;
use crate::model::{DeadLetter, Reason, Record};
use crate::route::Routes;
use crate::sink::{self, PrepareError, Sinks};
use letters::Letter;
use origin::{KeyedTopics, Unreplayable};
pub use selection::{parse_reason, parse_time, Selection};
pub use summary::{Progress, Summary};
use write::{Replayed, Target};

/// Letters read per query (and written per batch at most).
const CHUNK: u32 = 1000;

/// Payload bytes `list` shows.
const PREVIEW_BYTES: usize = 60;

/// Why listing or replaying stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The dead letters are not in a MySQL database.
    #[error(
        "dead letters are kept by sink {sink:?} ({kind}); only dead letters in MySQL \
         (rejected_messages) can be listed or replayed"
    )]
    NotMysql {
        /// The dead-letter sink's name.
        sink: String,
        /// What kind of store it is.
        kind: &'static str,
    },
    /// `--route` names no route of today's configuration.
    #[error("--route {name:?}: no such route; routes are {routes}")]
    NoRoute {
        /// The name given.
        name: String,
        /// The routes there are.
        routes: String,
    },
    /// A sink cannot be used now, or failed for good.
    #[error("sink {sink}: {message}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What failed, and what to do.
        message: String,
    },
    /// The list could not be written out.
    #[error("cannot write the list: {0}")]
    Output(#[from] std::io::Error),
    /// Reading or updating `rejected_messages` failed.
    #[error(
        "rejected_messages: {0} (a replay can be run again: what it stored stays stored, \
         and its letters are gone)"
    )]
    Database(sqlx::Error),
}

// By hand rather than `#[from]`: the message already shows the error, and a
// source would print it twice in the chain.
impl From<sqlx::Error> for ReplayError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl ReplayError {
    /// True when the configuration or the command line is at fault.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Config(_) | Self::NotMysql { .. } | Self::NoRoute { .. }
        )
    }
}

/// What today's routes make of one selected letter.
enum Outcome {
    /// Decodes: [`Record::Decoded`]s for the route's sink (one per element
    /// of a batch, which replays whole or not at all).
    Decoded(Vec<Record>),
    /// Refused again, with today's reason.
    Refused(DeadLetter),
    /// Only the payload's first bytes were kept.
    Truncated,
    /// Its origin cannot be worked out again.
    Unreplayable(Unreplayable),
}

/// A selected letter and what today's configuration makes of it.
struct Classified {
    letter: Letter,
    route: Option<RouteId>,
    device: Option<DeviceId>,
    outcome: Outcome,
}

/// The dead letters of a configuration, with today's routes and sinks.
pub struct DeadLetters {
    routes: Routes,
    sinks: Sinks,
    pool: MySqlPool,
    keyed: KeyedTopics,
}

impl DeadLetters {
    /// Builds the routes and sinks the bridge would build from `settings`
    /// (pools connect when first used), with the time zones the bridge has
    /// learned for `time_zone = "auto"` devices. Those are only read: what
    /// the replay learns is not saved, the running bridge owns the file.
    pub fn from_settings(settings: &Settings) -> Result<Self, ReplayError> {
        settings.validate()?;
        let learned = clocks::state_file(&settings.state_dir());
        let clocks = DeviceClocks::load(settings.metrics.max_devices, learned);
        let routes = Routes::from_settings(settings)?.with_clocks(Arc::new(clocks));
        let built = sink::from_settings(settings, &routes)?;
        let sinks = built.sinks;
        let name = sinks.name(sinks.dead_letters()).to_owned();
        let pool = built
            .mysql_pools
            .into_iter()
            .find_map(|(n, pool)| (n == name).then_some(pool))
            .ok_or_else(|| ReplayError::NotMysql {
                kind: sinks.get(sinks.dead_letters()).map_or("none", |s| s.kind()),
                sink: name,
            })?;
        Ok(Self {
            routes,
            sinks,
            pool,
            keyed: KeyedTopics::from_settings(settings),
        })
    }

    /// Writes the selected letters to `out`, a tab-separated line each (id,
    /// received_at, reason, route, device, what a replay would do today,
    /// detail, payload preview); returns how many.
    pub async fn list(
        &self,
        selection: &Selection,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, ReplayError> {
        self.check(selection)?;
        let mut scan = Scan::new(self, selection).await?;
        writeln!(
            out,
            "id\treceived_at\treason\troute\tdevice\ttoday\tdetail\tpayload"
        )?;
        while let Some(chunk) = scan.next().await? {
            for c in &chunk {
                let l = &c.letter;
                let preview = l.payload.get(..PREVIEW_BYTES).unwrap_or(&l.payload);
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}{}",
                    l.id,
                    l.received_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    l.reason,
                    self.routes.label(c.route),
                    c.device.as_ref().map_or("-", DeviceId::as_str),
                    today(&c.outcome),
                    l.detail.as_deref().unwrap_or("-").escape_debug(),
                    preview.escape_ascii(),
                    if preview.len() < l.payload_bytes as usize {
                        "..."
                    } else {
                        ""
                    },
                )?;
            }
        }
        Ok(scan.taken)
    }

    /// Replays the selected letters (or, with `dry_run`, decodes them and
    /// counts); `progress` is redrawn after each chunk.
    pub async fn replay(
        &self,
        selection: &Selection,
        dry_run: bool,
        progress: &mut Progress,
    ) -> Result<Summary, ReplayError> {
        self.check(selection)?;
        let mut summary = Summary {
            dry_run,
            ..Summary::default()
        };
        let mut prepared = vec![false; self.sinks.len()];
        let mut scan = Scan::new(self, selection).await?;
        while let Some(chunk) = scan.next().await? {
            self.settle(chunk, &mut summary, &mut prepared).await?;
            progress.show(scan.read, &summary);
        }
        progress.finish();
        tracing::info!(
            selected = summary.selected,
            replayed = summary.replayed,
            refused = summary.refused_total(),
            skipped = summary.skipped_total(),
            dry_run,
            "Dead-letter replay finished"
        );
        Ok(summary)
    }

    /// Fails on a `--route` today's configuration does not have.
    fn check(&self, selection: &Selection) -> Result<(), ReplayError> {
        match &selection.route {
            Some(name) if self.routes.by_name(name).is_none() => Err(ReplayError::NoRoute {
                name: name.clone(),
                routes: self
                    .routes
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            _ => Ok(()),
        }
    }

    /// Writes a chunk's decoded letters, sink by sink, and counts the rest.
    async fn settle(
        &self,
        chunk: Vec<Classified>,
        summary: &mut Summary,
        prepared: &mut [bool],
    ) -> Result<(), ReplayError> {
        let mut by_sink: Vec<Vec<Replayed<'_>>> =
            (0..self.sinks.len()).map(|_| Vec::new()).collect();
        let mut refused: Vec<(u64, String, Option<String>)> = Vec::new();
        for c in &chunk {
            summary.selected += 1;
            match &c.outcome {
                Outcome::Truncated => summary.truncated += 1,
                Outcome::Unreplayable(why) => {
                    *summary.unreplayable.entry(*why).or_default() += 1;
                }
                Outcome::Refused(letter) => refused.push((
                    c.letter.id,
                    letter.reason.as_str().to_owned(),
                    letter.detail.clone(),
                )),
                Outcome::Decoded(_) if summary.dry_run => summary.replayed += 1,
                Outcome::Decoded(records) => {
                    let sink = self.sink_of(c.route)?;
                    if let Some(list) = by_sink.get_mut(sink) {
                        list.push(Replayed {
                            id: c.letter.id,
                            records,
                        });
                    }
                }
            }
        }
        for (sink, todo) in by_sink.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            let target = self.target(sink, prepared).await?;
            let stored = target.store(todo).await?;
            summary.replayed += stored.letters;
            summary.rows_new += stored.written.inserted.iter().map(|(_, n)| n).sum::<u64>();
            summary.rows_already += stored
                .written
                .duplicates
                .iter()
                .map(|(_, n)| n)
                .sum::<u64>();
            for (id, detail) in stored.refused {
                // As the pipeline dead-letters what a sink refuses (detail bounded alike).
                let letter = self
                    .routes
                    .dead_letter("", b"", Reason::DbRejected)
                    .with_detail(&detail);
                refused.push((id, letter.reason.as_str().to_owned(), letter.detail));
            }
        }
        for (_, reason, _) in &refused {
            *summary.refused.entry(reason.clone()).or_default() += 1;
        }
        if !summary.dry_run {
            // One statement per distinct (reason, detail), not one per letter.
            refused.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
            for group in refused.chunk_by(|a, b| (&a.1, &a.2) == (&b.1, &b.2)) {
                let ids: Vec<u64> = group.iter().map(|(id, _, _)| *id).collect();
                if let Some((_, reason, detail)) = group.first() {
                    letters::refuse_again(&self.pool, reason, detail.as_deref(), &ids).await?;
                }
            }
        }
        Ok(())
    }

    /// The position of the sink `route` writes to.
    fn sink_of(&self, route: Option<RouteId>) -> Result<usize, ReplayError> {
        let name = route
            .and_then(|r| self.routes.get(r))
            .map_or("", |r| r.sink());
        self.sinks.position(name).ok_or_else(|| ReplayError::Sink {
            sink: name.to_owned(),
            message: "no such sink (a bug: routes are checked against the sinks)".to_owned(),
        })
    }

    /// The sink at `position`, readied for writes the first time it is used
    /// (its schema checked, or migrated where the bridge would migrate it).
    async fn target(
        &self,
        position: usize,
        prepared: &mut [bool],
    ) -> Result<Target<'_>, ReplayError> {
        let name = self.sinks.name(position);
        let failed = |message: String| ReplayError::Sink {
            sink: name.to_owned(),
            message,
        };
        let sink = self
            .sinks
            .get(position)
            .ok_or_else(|| failed("no such sink".to_owned()))?;
        if let Some(done @ false) = prepared.get_mut(position) {
            match sink.prepare().await {
                Ok(()) => *done = true,
                Err(PrepareError::Fatal(m)) => return Err(failed(m)),
                Err(PrepareError::Unavailable(m)) => {
                    return Err(failed(format!(
                        "not reachable: {m}; run the replay again once it is"
                    )))
                }
            }
        }
        Ok(Target {
            name,
            sink,
            keeps_letters: position == self.sinks.dead_letters(),
            letters: &self.pool,
        })
    }

    /// What today's configuration makes of `letter`.
    fn classify(&self, letter: Letter, selection: &Selection) -> Classified {
        let located = origin::locate(&letter.topic, &self.routes, &self.keyed);
        let (mut route, mut device) = (located.route, located.device);
        let outcome = match located.origin {
            _ if letter.truncated() => Outcome::Truncated,
            Err(why) => Outcome::Unreplayable(why),
            // It crashed the bridge: decoding it here could crash this run too.
            Ok(_)
                if letter.reason == Reason::CrashedBridge.as_str()
                    && !selection.names_reason(Reason::CrashedBridge.as_str()) =>
            {
                Outcome::Unreplayable(Unreplayable::CrashedBridge)
            }
            Ok(origin) => {
                let payload = Bytes::copy_from_slice(&letter.payload);
                let now = letter.received_at.and_utc();
                let mut records = self.routes.records(&origin, payload, None, now);
                let refused = records
                    .iter()
                    .position(|r| !matches!(r, Record::Decoded { .. }));
                match refused {
                    None => {
                        if let Some(Record::Decoded {
                            route: r, message, ..
                        }) = records.first()
                        {
                            route = Some(*r);
                            device = Some(message.device.clone());
                        }
                        Outcome::Decoded(records)
                    }
                    Some(i) => match records.swap_remove(i) {
                        Record::Rejected { route: r, letter } => {
                            route = r.or(route);
                            Outcome::Refused(letter)
                        }
                        // A discovery announcement: the running bridge reads it
                        // from the broker's retained copy, not from a replay.
                        Record::Absorbed { route: r } => {
                            route = Some(r);
                            Outcome::Refused(
                                self.routes
                                    .dead_letter(&letter.topic, &letter.payload, Reason::NoRoute)
                                    .with_detail(
                                        "a discovery announcement; publish it again (retained) to the broker",
                                    ),
                            )
                        }
                        // Not reached: `i` is the position of a record that is not one.
                        Record::Decoded { .. } => Outcome::Truncated,
                    },
                }
            }
        };
        Classified {
            letter,
            route,
            device,
            outcome,
        }
    }
}

/// What a replay would do with a letter today, for `list`.
fn today(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Decoded(_) => "replay".to_owned(),
        Outcome::Refused(letter) => format!("refused:{}", letter.reason),
        Outcome::Truncated => "skip:truncated".to_owned(),
        Outcome::Unreplayable(why) => format!("skip:{}", why.as_str()),
    }
}

/// The selected letters, a chunk at a time.
struct Scan<'a> {
    letters: &'a DeadLetters,
    selection: &'a Selection,
    /// The last id read.
    after: u64,
    /// The newest id when the run started.
    upto: u64,
    /// Letters read so far.
    read: u64,
    /// Letters selected so far (for `--limit`).
    taken: u64,
}

impl<'a> Scan<'a> {
    async fn new(letters: &'a DeadLetters, selection: &'a Selection) -> Result<Self, ReplayError> {
        let upto = letters::newest_id(&letters.pool).await?;
        Ok(Self {
            letters,
            selection,
            after: 0,
            upto,
            read: 0,
            taken: 0,
        })
    }

    /// The next chunk's selected letters; `None` once there are no more.
    async fn next(&mut self) -> Result<Option<Vec<Classified>>, ReplayError> {
        let limit = self.selection.limit.unwrap_or(u64::MAX);
        if self.after >= self.upto || self.taken >= limit {
            return Ok(None);
        }
        let chunk = letters::chunk(
            &self.letters.pool,
            self.selection,
            self.after,
            self.upto,
            CHUNK,
        )
        .await?;
        let Some(last) = chunk.last() else {
            return Ok(None);
        };
        self.after = last.id;
        self.read += chunk.len() as u64;
        let mut selected = Vec::new();
        for letter in chunk {
            if self.taken >= limit {
                break;
            }
            let c = self.letters.classify(letter, self.selection);
            if self.passes(&c) {
                self.taken += 1;
                selected.push(c);
            }
        }
        Ok(Some(selected))
    }

    /// The filters SQL cannot apply: route and device.
    fn passes(&self, c: &Classified) -> bool {
        let s = self.selection;
        let route = s
            .route
            .as_deref()
            .is_none_or(|name| self.letters.routes.label(c.route) == name && c.route.is_some());
        let device = s
            .device
            .as_ref()
            .is_none_or(|d| c.device.as_ref() == Some(d));
        route && device
    }
}
