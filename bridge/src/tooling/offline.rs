//! The pipeline's CPU path without I/O: deliveries decoded through the
//! routes, cut into batches by count as the intake cuts a steady stream,
//! and each batch's MySQL statements built with every value bound, as the
//! MySQL sink builds them, with no broker and no database. The benchmark
//! `co2-pipeline-cost` (bench/callgrind.sh) counts its instructions per
//! reading: a figure that, unlike time, stays put on a busy machine.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::config::{ConfigError, Settings};
use crate::model::Origin;
use crate::model::Record;
use crate::model::RouteId;
use crate::route::Routes;
use crate::sink::mysql::{build_inserts, Target};
use crate::sink::Item;

/// Decoding, batching and row building for the routes of one configuration.
pub struct Offline {
    routes: Routes,
    /// Every route's target, as if every route wrote to MySQL.
    targets: Vec<Target>,
    max_rows: usize,
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
    /// at `batch.max_rows`.
    pub fn new(settings: &Settings) -> Result<Self, ConfigError> {
        let routes = Routes::from_settings(settings)?;
        let targets = routes.iter().map(Target::new).collect();
        Ok(Self {
            routes,
            targets,
            max_rows: settings.batch.max_rows.max(1),
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
        for batch in deliveries.chunks(self.max_rows) {
            let records: Vec<Record> = batch
                .iter()
                .map(|(topic, payload)| {
                    self.routes.record(
                        &Origin::Mqtt(topic.clone()),
                        payload.clone(),
                        None,
                        received,
                    )
                })
                .collect();
            // Grouped by route in arrival order, as the MySQL sink groups them.
            let mut groups: Vec<(RouteId, Vec<Item<'_>>)> = Vec::new();
            for record in &records {
                match record {
                    Record::Decoded {
                        route,
                        message,
                        topic,
                        ..
                    } => {
                        let item = Item {
                            route: *route,
                            message,
                            topic,
                        };
                        match groups.iter_mut().find(|(r, _)| r == route) {
                            Some((_, items)) => items.push(item),
                            None => groups.push((*route, vec![item])),
                        }
                    }
                    Record::Rejected { .. } => tally.rejected += 1,
                }
            }
            for (route, items) in &groups {
                let Some(target) = self.targets.get(*route) else {
                    continue;
                };
                let refs: Vec<&Item<'_>> = items.iter().collect();
                tally.rows += build_inserts(target, &refs)?;
            }
            tally.batches += 1;
        }
        Ok(tally)
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
}
