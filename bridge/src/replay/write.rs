//! Writing replayed messages through their route's sink, the way the
//! pipeline writes live ones (same sinks, same idempotent writes), and
//! retiring their dead letters exactly once:
//!
//! - the sink that keeps the dead letters (MySQL) deletes them in the
//!   transaction that stores the rows ([`Batch::settles`]): both or neither;
//! - any other sink stores first, then the letters are deleted. A run cut
//!   between the two leaves letters whose rows exist; the next run writes
//!   them again, which the sinks turn into no-ops (a MySQL unique key, an
//!   InfluxDB point of the same series and time), and deletes them.
//!
//! A part a sink refuses is split in two until the message it refuses is
//! found (as the pipeline does); that letter stays, as `db_rejected` with
//! what the store said.

use sqlx::MySqlPool;

use super::letters;
use super::ReplayError;
use crate::model::Record;
use crate::sink::{self, Batch, Item, Sink, Written};

/// Tries of one write that fails transiently before the run stops.
const TRIES: u32 = 8;

/// One decoded letter: its id and what today's routes made of it.
pub struct Replayed<'a> {
    /// The dead letter's id.
    pub id: u64,
    /// Its [`Record::Decoded`]s (several for a batch).
    pub records: &'a [Record],
}

/// What storing one sink's share of a chunk did.
#[derive(Debug, Default)]
pub struct Stored {
    /// What the sink wrote.
    pub written: Written,
    /// Letters stored (and deleted).
    pub letters: u64,
    /// Letters the sink refused: (id, what it said).
    pub refused: Vec<(u64, String)>,
}

/// A sink and what its writes need around them.
pub struct Target<'s> {
    /// The sink's name, for errors and logs.
    pub name: &'s str,
    /// The sink.
    pub sink: &'s dyn Sink,
    /// True when it is the MySQL sink that keeps the dead letters.
    pub keeps_letters: bool,
    /// The dead letters' pool, for deleting after another sink stored.
    pub letters: &'s MySqlPool,
}

impl Target<'_> {
    /// Stores `todo` and retires their letters; splits what the sink refuses.
    pub async fn store(&self, todo: &[Replayed<'_>]) -> Result<Stored, ReplayError> {
        let mut stored = Stored::default();
        let mut parts = vec![todo];
        while let Some(part) = parts.pop() {
            if part.is_empty() {
                continue;
            }
            let ids: Vec<u64> = part.iter().map(|r| r.id).collect();
            let batch = Batch {
                items: part
                    .iter()
                    .flat_map(|r| r.records.iter().filter_map(item))
                    .collect(),
                letters: Vec::new(),
                settles: if self.keeps_letters {
                    ids.clone()
                } else {
                    Vec::new()
                },
                checkpoint: None,
            };
            match self.write(&batch).await? {
                Ok(written) => {
                    if !self.keeps_letters {
                        letters::delete(self.letters, &ids).await?;
                    }
                    stored.written.merge(written);
                    stored.letters += ids.len() as u64;
                }
                Err(detail) => match part {
                    [one] => {
                        tracing::warn!(sink = self.name, id = one.id, error = %detail, "The sink refused a replayed message; its dead letter stays");
                        stored.refused.push((one.id, detail));
                    }
                    _ => {
                        let (first, second) = part.split_at(part.len() / 2);
                        parts.push(second);
                        parts.push(first);
                    }
                },
            }
        }
        Ok(stored)
    }

    /// Writes `batch`, retrying transient failures a few times. The inner
    /// error is a refusal, with what the sink said.
    async fn write(&self, batch: &Batch<'_>) -> Result<Result<Written, String>, ReplayError> {
        sink::write_with_tries(self.sink, self.name, batch, TRIES)
            .await
            .map_err(|e| ReplayError::Sink {
                sink: self.name.to_owned(),
                message: format!(
                    "writes still fail after {TRIES} tries: {e}; what was replayed \
                     before is stored, so run the replay again once the sink is back"
                ),
            })
    }
}

/// The sink item of a decoded record.
fn item(record: &Record) -> Option<Item<'_>> {
    match record {
        Record::Decoded {
            route,
            message,
            topic,
            ..
        } => Some(Item {
            route: *route,
            message,
            topic,
        }),
        Record::Rejected { .. } | Record::Absorbed { .. } => None,
    }
}
