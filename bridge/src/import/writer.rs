//! Writing an import's chunks through the route's sink as the pipeline
//! writes a batch (pipeline/commit.rs): one sink write per chunk, all or
//! nothing (the MySQL sink's multi-row INSERT with the rollups of the
//! buckets it touched, in one transaction), the dead letters with the rows
//! when the same sink keeps them. A refused part is split in two until the
//! row the sink refuses is found; that row becomes a dead letter naming its
//! line, and the rest is stored. A checkpoint (`--from-mysql`) is written
//! in the transaction of the chunk's rows, or, when the chunk had to be
//! split, after its last part: never ahead of a row not yet committed.

use crate::model::Record;
use crate::pipeline::batch_of;
use crate::sink::{self, Checkpoint, Sinks, Written};

use super::mapping::{Location, Mapper};
use super::seen::Seen;
use super::{Chunk, ImportError};

/// Tries of one write that fails transiently before the import stops.
const TRIES: u32 = 8;

/// Writes chunks to the sink of one route and to the dead-letter sink.
pub struct Writer<'a> {
    /// The sinks of the configuration.
    pub sinks: &'a Sinks,
    /// The position of the route's sink.
    pub route_sink: usize,
    /// Labels the dead letters of rows a sink refuses.
    pub mapper: &'a Mapper,
    /// The name a checkpoint is recorded under (`--from-mysql`).
    pub source: &'a str,
    /// The dead letters an earlier run stored, when a MySQL sink keeps them.
    pub seen: Option<tokio::sync::Mutex<Seen>>,
}

impl Writer<'_> {
    /// Stores a chunk's rows and dead letters; returns what the sinks wrote.
    /// Rows the sink refused are dead letters in `chunk.records` afterwards.
    pub async fn store(&self, chunk: &mut Chunk) -> Result<Written, ImportError> {
        let letters_sink = self.sinks.dead_letters();
        let stored_before = self.stored_before(chunk).await?;
        let (mut rows, mut letters): (Vec<usize>, Vec<usize>) = (0..chunk.records.len())
            .filter(|i| !stored_before.contains(i))
            .partition(|i| matches!(chunk.records.get(*i), Some(Record::Decoded { .. })));
        let key = chunk.checkpoint.take();
        let checkpoint = key.as_ref().map(|(key, rows)| Checkpoint {
            source: self.source,
            key,
            rows: *rows,
        });
        let mut written = Written::default();
        if self.route_sink == letters_sink {
            rows.append(&mut letters);
            rows.sort_unstable();
            let (w, _) = self.split(letters_sink, chunk, rows, checkpoint).await?;
            written.merge(w);
        } else {
            let (w, refused) = self.split(self.route_sink, chunk, rows, None).await?;
            written.merge(w);
            letters.extend(refused);
            letters.sort_unstable();
            let (w, _) = self.split(letters_sink, chunk, letters, checkpoint).await?;
            written.merge(w);
        }
        Ok(written)
    }

    /// The dead letters of `chunk` an earlier run already stored: refused
    /// again (and counted), not stored twice.
    async fn stored_before(&self, chunk: &Chunk) -> Result<Vec<usize>, ImportError> {
        let Some(seen) = &self.seen else {
            return Ok(Vec::new());
        };
        let mut seen = seen.lock().await;
        let mut found = Vec::new();
        for (i, record) in chunk.records.iter().enumerate() {
            let (Record::Rejected { letter, .. }, Some(line)) = (record, chunk.lines.get(i)) else {
                continue;
            };
            if seen
                .contains(&chunk.source, *line, &letter.payload)
                .await
                .map_err(ImportError::Target)?
            {
                found.push(i);
            }
        }
        Ok(found)
    }

    /// Writes `chunk.records[i]` for every `i` of `part` to `sink`, splitting
    /// what it refuses; returns what was stored and the rows refused (dead
    /// letters now, stored too when `sink` keeps them).
    async fn split(
        &self,
        sink: usize,
        chunk: &mut Chunk,
        part: Vec<usize>,
        checkpoint: Option<Checkpoint<'_>>,
    ) -> Result<(Written, Vec<usize>), ImportError> {
        let keeps_letters = sink == self.sinks.dead_letters();
        let name = self.sinks.name(sink).to_owned();
        let store = self.sinks.get(sink).ok_or_else(|| ImportError::Sink {
            sink: name.clone(),
            message: "no such sink".to_owned(),
        })?;
        let mut stored = Written::default();
        let mut refused = Vec::new();
        let mut pending = checkpoint;
        let mut todo = vec![part];
        while let Some(part) = todo.pop() {
            if part.is_empty() {
                continue;
            }
            let result = {
                let mut batch = batch_of(&chunk.records, &part);
                // Only a write of the whole part may carry it: see the module's note.
                batch.checkpoint = pending.filter(|_| todo.is_empty());
                let result = sink::write_with_tries(store, &name, &batch, TRIES).await;
                if matches!(result, Ok(Ok(_))) && batch.checkpoint.is_some() {
                    pending = None;
                }
                result
            };
            let failed = |e: String| ImportError::Sink {
                sink: name.clone(),
                message: format!(
                    "writes still fail after {TRIES} tries: {e}; what was imported before is \
                     stored, so run the import again once the sink is back"
                ),
            };
            match result.map_err(failed)? {
                Ok(written) => stored.merge(written),
                Err(detail) => match part.as_slice() {
                    [i] => {
                        let i = *i;
                        let Some(record @ Record::Decoded { .. }) = chunk.records.get(i) else {
                            // A dead letter is built to fit its table: a store
                            // that refuses one is broken, not this row.
                            return Err(ImportError::Sink {
                                sink: name,
                                message: format!("refused a dead letter: {detail}"),
                            });
                        };
                        tracing::warn!(sink = %name, line = chunk.lines.get(i).copied().unwrap_or(0), error = %detail, "The sink refused a row; it becomes a dead letter");
                        let at = Location {
                            source: &chunk.source,
                            line: chunk.lines.get(i).copied().unwrap_or(0),
                        };
                        let letter = self.mapper.refused_by_sink(at, record, &detail);
                        if let Some(slot) = chunk.records.get_mut(i) {
                            *slot = letter;
                        }
                        refused.push(i);
                        if keeps_letters {
                            todo.push(part);
                        }
                    }
                    _ => {
                        let (first, second) = part.split_at(part.len() / 2);
                        todo.push(second.to_vec());
                        todo.push(first.to_vec());
                    }
                },
            }
        }
        if let Some(checkpoint) = pending {
            let batch = sink::Batch {
                checkpoint: Some(checkpoint),
                ..sink::Batch::default()
            };
            match sink::write_with_tries(store, &name, &batch, TRIES).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) | Err(e) => {
                    return Err(ImportError::Sink {
                        sink: name,
                        message: format!("cannot record how far the import got: {e}"),
                    })
                }
            }
        }
        Ok((stored, refused))
    }
}
