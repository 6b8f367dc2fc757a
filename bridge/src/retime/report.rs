//! What a retime says it did (or would do): per table, the rows selected,
//! their times before and after, the collisions and how they were resolved.

use std::fmt::Write as _;

use chrono::NaiveDateTime;

use super::plan::{Plan, Table};
use super::store::{Collision, Selection};
use super::{OnCollision, RetimeError};

/// One table's part of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub table: String,
    /// Its device column.
    pub device: String,
    /// Its time column.
    pub time: String,
    /// Rows selected.
    pub rows: u64,
    /// Their first and last stored time, before the shift.
    pub range: Option<(NaiveDateTime, NaiveDateTime)>,
    /// Selected rows whose new time is taken by a row that stays.
    pub collisions: u64,
    /// The first few of them.
    pub shown: Vec<Collision>,
    /// Rows deleted to resolve the collisions.
    pub deleted: u64,
    /// Rows moved.
    pub moved: u64,
}

impl TableReport {
    /// A table with `rows` selected over `range`, before anything is done.
    pub fn new(table: &Table, rows: u64, range: Option<(NaiveDateTime, NaiveDateTime)>) -> Self {
        Self {
            table: table.name.clone(),
            device: table.device.clone(),
            time: table.time.clone(),
            rows,
            range,
            collisions: 0,
            shown: Vec::new(),
            deleted: 0,
            moved: 0,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which rows, by how much.
    pub selection: Selection,
    /// The sink whose database it ran in.
    pub sink: String,
    /// What was to be done about collisions.
    pub on_collision: OnCollision,
    /// Nothing was to change.
    pub dry_run: bool,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// Completeness records of the device whose times are selected (`None`:
    /// the CO2 table was not among the tables).
    pub gaps: Option<u64>,
    /// What was left alone, and why.
    pub notes: Vec<String>,
    /// The changes were committed.
    pub committed: bool,
}

impl Report {
    /// An empty report of a run of `plan` over `selection`.
    pub fn new(
        plan: &Plan,
        selection: &Selection,
        on_collision: OnCollision,
        dry_run: bool,
    ) -> Self {
        Self {
            selection: selection.clone(),
            sink: plan.sink.clone(),
            on_collision,
            dry_run,
            tables: Vec::new(),
            gaps: None,
            notes: plan.notes.clone(),
            committed: false,
        }
    }

    /// Collisions in all tables.
    pub fn collisions(&self) -> u64 {
        self.tables.iter().map(|t| t.collisions).sum()
    }

    /// Rows moved in all tables.
    pub fn moved(&self) -> u64 {
        self.tables.iter().map(|t| t.moved).sum()
    }

    /// `Err(Refused)` when the run changed nothing because rows would collide.
    pub fn outcome(&self) -> Result<(), RetimeError> {
        match self.collisions() {
            n if n > 0 && !self.dry_run && !self.committed => Err(RetimeError::Refused(n)),
            _ => Ok(()),
        }
    }

    /// The report as text, for stdout.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let sel = &self.selection;
        let shift = sel.shift;
        let range = match (sel.from, sel.to) {
            (None, None) => "all stored times".to_owned(),
            (Some(f), None) => format!("stored times from {}", time(f)),
            (None, Some(t)) => format!("stored times before {}", time(t)),
            (Some(f), Some(t)) => format!("stored times from {} to before {}", time(f), time(t)),
        };
        let _ = writeln!(
            out,
            "retime {} by {shift} ({range}, UTC) in sink {}{}:",
            sel.device,
            self.sink,
            if self.dry_run { ", dry run" } else { "" }
        );
        for t in &self.tables {
            let _ = write!(
                out,
                "  {} ({}, {}): {} row(s)",
                t.table, t.device, t.time, t.rows
            );
            if let Some((first, last)) = t.range {
                let moved = |x| shift.apply(x).map_or_else(|| "?".to_owned(), time);
                let _ = write!(
                    out,
                    " {} .. {} -> {} .. {}",
                    time(first),
                    time(last),
                    moved(first),
                    moved(last)
                );
            }
            let _ = writeln!(out, "; {} collision(s){}", t.collisions, self.resolution(t));
            for c in &t.shown {
                let after = shift.apply(c.time).map_or_else(|| "?".to_owned(), time);
                let key = if c.key.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.key.join(", "))
                };
                let _ = writeln!(
                    out,
                    "      {} {} -> {after} is taken by a row that stays{key}",
                    c.device,
                    time(c.time)
                );
            }
            if t.collisions > t.shown.len() as u64 {
                let _ = writeln!(
                    out,
                    "      ... and {} more",
                    t.collisions - t.shown.len() as u64
                );
            }
        }
        if let Some(gaps) = self.gaps {
            let _ = writeln!(
                out,
                "  reading_gaps (from_time, to_time): {gaps} completeness record(s) of {} name selected times",
                sel.device
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        let _ = writeln!(out, "{}", self.verdict());
        out
    }

    /// What happens to a table's collisions, as a suffix.
    fn resolution(&self, t: &TableReport) -> String {
        if t.collisions == 0 {
            return String::new();
        }
        let (deleted, which) = match self.on_collision {
            OnCollision::Refuse => return String::new(),
            OnCollision::KeepStored => (t.deleted, "moving row(s) deleted, the stored ones kept"),
            OnCollision::Replace => (
                t.deleted,
                "stored row(s) deleted, replaced by the moving ones",
            ),
        };
        if self.committed {
            format!(": {deleted} {which}")
        } else {
            format!(": {} {which}", t.collisions)
        }
    }

    fn verdict(&self) -> String {
        let gaps = self.gaps.unwrap_or(0);
        let collisions = self.collisions();
        if self.committed {
            let touched = self.tables.iter().filter(|t| t.moved > 0).count();
            return format!(
                "Moved {} row(s) in {touched} of {} table(s) and {gaps} completeness record(s), \
                 in one transaction.",
                self.moved(),
                self.tables.len()
            );
        }
        if !self.dry_run {
            return format!("Refused: {collisions} collision(s); nothing changed.");
        }
        let rows: u64 = self.tables.iter().map(|t| t.rows).sum();
        let then = match (collisions, self.on_collision) {
            (0, _) => String::new(),
            (_, OnCollision::Refuse) => " A run would refuse because of the collisions.".to_owned(),
            (n, OnCollision::KeepStored) => format!(" A run would delete {n} moving row(s)."),
            (n, OnCollision::Replace) => format!(" A run would delete {n} stored row(s)."),
        };
        format!("Dry run: nothing changed; {rows} row(s) and {gaps} completeness record(s) selected.{then}")
    }
}

/// A stored time as text (fractions only when there are any).
fn time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.f").to_string()
}
