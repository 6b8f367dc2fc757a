//! The pipeline's CPU path without I/O: deliveries decoded through the
//! routes, cut into batches by the intake's own [`Batcher`] (by count and
//! bytes; every delivery arrives at once, so none is cut by age), made into
//! the commit stage's sink batch and grouped by route as the MySQL sink
//! groups it, and each group's statements built with every value bound, as
//! the MySQL sink builds them, with no broker and no database. The benchmark
//! `co2-pipeline-cost` (bench/callgrind.sh) counts its instructions per
//! reading: a figure that, unlike time, stays put on a busy machine.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::config::{ConfigError, Settings};
use crate::model::Origin;
use crate::model::Record;
use crate::pipeline::batch::Batcher;
use crate::pipeline::batch_of;
use crate::route::Routes;
use crate::sink::mysql::{build_inserts, by_route, Target};

/// Decoding, batching and row building for the routes of one configuration.
pub struct Offline {
    routes: Routes,
    /// Every route's target, as if every route wrote to MySQL.
    targets: Vec<Target>,
    max_rows: usize,
    max_bytes: usize,
    max_delay: Duration,
}

/// What one run did, so that none of it can be optimised away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Batches built.
    pub batches: usize,
    /// Rows bound into statements.
    pub rows: usize,
    /// Deliveries dead-lettered by their decoder.
    pub rejected: usize,
}

impl Offline {
    /// The routes of `settings` (the CO2 route and any `[[routes]]`), batched
    /// by `[batch]` as the intake batches them. The MQTT window, which the
    /// app also caps a batch at, is left out: its default (65,535) is above
    /// any sensible `batch.max_rows`.
    pub fn new(settings: &Settings) -> Result<Self, ConfigError> {
        let routes = Routes::from_settings(settings)?;
        let targets = routes.iter().map(Target::new).collect();
        Ok(Self {
            routes,
            targets,
            max_rows: settings.batch.max_rows,
            max_bytes: settings.batch.max_bytes,
            max_delay: Duration::from_millis(settings.batch.max_delay_ms),
        })
    }

    /// Runs MQTT deliveries (topic, payload) through decoding, batching and
    /// statement building, all received at `received`.
    pub fn run(
        &self,
        deliveries: &[(Bytes, Bytes)],
        received: DateTime<Utc>,
    ) -> Result<Tally, sqlx::Error> {
        let mut tally = Tally::default();
        let mut batcher = Batcher::new(self.max_rows, self.max_bytes, self.max_delay);
        // One instant for all: the input is there at once, as a backlog is.
        let now = Instant::now();
        for delivery in deliveries {
            if batcher.push(delivery, delivery.1.len(), now) {
                self.write(&batcher.take(), received, &mut tally)?;
            }
        }
        // The rest, as the intake writes what it holds when its input ends.
        let rest = batcher.take();
        if !rest.is_empty() {
            self.write(&rest, received, &mut tally)?;
        }
        Ok(tally)
    }

    /// Decodes one batch and builds its statements, route by route.
    fn write(
        &self,
        batch: &[&(Bytes, Bytes)],
        received: DateTime<Utc>,
        tally: &mut Tally,
    ) -> Result<(), sqlx::Error> {
        let mut records: Vec<Record> = Vec::with_capacity(batch.len());
        for (topic, payload) in batch {
            self.routes.record_into(
                &mut records,
                &Origin::Mqtt(topic.clone()),
                payload.clone(),
                None,
                received,
            );
        }
        // The records for the sink, as the commit stage splits a batch by
        // sink (here every route writes to MySQL; dead letters are counted).
        let mut decoded = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match record {
                Record::Decoded { .. } => decoded.push(i),
                Record::Rejected { .. } => tally.rejected += 1,
                Record::Absorbed { .. } => {}
            }
        }
        let batch = batch_of(&records, &decoded);
        for (route, items) in by_route(&batch.items) {
            let Some(target) = self.targets.get(route) else {
                continue;
            };
            tally.rows += build_inserts(target, &items)?;
        }
        tally.batches += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn co2_readings_become_one_row_each_and_garbage_a_rejection() {
        let settings: Settings = toml::from_str("[batch]\nmax_rows = 3\n").unwrap();
        let offline = Offline::new(&settings).unwrap();
        let topic = Bytes::from_static(b"co2/dev-1/emissions");
        let mut deliveries: Vec<(Bytes, Bytes)> = (0..5)
            .map(|i| {
                let payload = format!("2026-01-01 00:00:0{i}.000|{}.5", 400 + i);
                (topic.clone(), Bytes::from(payload))
            })
            .collect();
        deliveries.push((topic, Bytes::from_static(b"not a reading")));
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let tally = offline.run(&deliveries, now).unwrap();
        assert_eq!(
            tally,
            Tally {
                batches: 2,
                rows: 5,
                rejected: 1
            }
        );
    }

    #[test]
    fn a_batch_is_cut_by_bytes_as_the_intake_cuts_it() {
        // Each payload is 29 bytes: three reach 60, the other two are the rest.
        let settings: Settings =
            toml::from_str("[batch]\nmax_rows = 100\nmax_bytes = 60\n").unwrap();
        let offline = Offline::new(&settings).unwrap();
        let topic = Bytes::from_static(b"co2/dev-1/emissions");
        let deliveries: Vec<(Bytes, Bytes)> = (0..5)
            .map(|i| {
                let payload = format!("2026-01-01 00:00:0{i}.000|{}.5", 400 + i);
                (topic.clone(), Bytes::from(payload))
            })
            .collect();
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let tally = offline.run(&deliveries, now).unwrap();
        assert_eq!(
            tally,
            Tally {
                batches: 2,
                rows: 5,
                rejected: 0
            }
        );
    }
}
