//! What an import did: a line on a terminal redrawn every second while it
//! runs (lines, rows/s, rejects, the time left from the position in the
//! input when its size is known), and the summary at the end.

use crate::status_line::StatusLine;
use std::time::{Duration, Instant};

/// Between two redraws of the progress line.
const EVERY: Duration = Duration::from_secs(1);

/// Counts of one import.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Lines (or legacy rows) read, blank ones included.
    pub lines: u64,
    /// Blank lines skipped.
    pub blank: u64,
    /// Rows the route decoded (what a dry run would store).
    pub decoded: u64,
    /// Rows newly stored.
    pub stored: u64,
    /// Rows that were stored already (a rerun, an overlap): not stored twice.
    pub duplicates: u64,
    /// Lines refused: dead letters (none written by a dry run).
    pub rejected: u64,
    /// Nothing was written.
    pub dry_run: bool,
}

impl Summary {
    /// True when nothing was refused.
    pub fn complete(&self) -> bool {
        self.rejected == 0
    }

    /// The summary as printed at the end.
    pub fn render(&self, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let mut out = String::new();
        let mut line = |label: &str, n: u64| out.push_str(&format!("{label:<18}{n:>12}\n"));
        line("lines read", self.lines);
        if self.blank > 0 {
            line("blank (skipped)", self.blank);
        }
        if self.dry_run {
            line("would store", self.decoded);
            line("would reject", self.rejected);
        } else {
            line("stored", self.stored);
            line("already present", self.duplicates);
            line("rejected", self.rejected);
        }
        out.push_str(&format!(
            "in {seconds:.1} s, {:.0} rows/s{}\n",
            self.decoded as f64 / seconds,
            if self.dry_run {
                " (dry run: nothing written)"
            } else if self.rejected > 0 {
                "; rejected lines are dead letters: co2-bridge dead-letters list"
            } else {
                ""
            }
        ));
        out
    }
}

/// The progress line on stderr, when stderr is a terminal.
pub struct Progress {
    line: StatusLine,
    started: Instant,
    shown: Instant,
    /// Position in the input against its size, for the time left.
    bytes: co2_wire::Progress,
}

impl Progress {
    /// Progress on stderr (nothing unless it is a terminal); `size` is the
    /// inputs' size in bytes when known.
    pub fn stderr(size: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            line: StatusLine::stderr(),
            started: now,
            shown: now,
            bytes: co2_wire::Progress::new(size, EVERY, now),
        }
    }

    /// Redraws the line if a second has passed; `position` is how far into
    /// the input (bytes, or rows of a legacy table) the import is.
    pub fn show(&mut self, summary: &Summary, position: u64) {
        let now = Instant::now();
        if !self.line.is_on() || now.saturating_duration_since(self.shown) < EVERY {
            return;
        }
        self.shown = now;
        let update = self.bytes.at(position, now);
        let seconds = now.saturating_duration_since(self.started).as_secs_f64();
        let mut line = format!(
            "import: {} lines, {:.0} rows/s, {} rejected",
            summary.lines,
            summary.decoded as f64 / seconds.max(1e-3),
            summary.rejected
        );
        if let (Some(left), Some(eta)) = (update.left, update.eta) {
            let total = position + left;
            line.push_str(&format!(
                ", {:.0}%, about {} s left",
                position as f64 * 100.0 / total.max(1) as f64,
                eta.as_secs()
            ));
        }
        let _ = self.bytes.tick(position, now);
        self.line.draw(&line);
    }

    /// Ends the progress line, so the summary starts on its own.
    pub fn finish(&mut self) {
        self.line.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_happened() {
        let s = Summary {
            lines: 10,
            blank: 1,
            decoded: 8,
            stored: 6,
            duplicates: 2,
            rejected: 1,
            dry_run: false,
        };
        let text = s.render(Duration::from_secs(2));
        assert!(text.contains("stored                       6"), "{text}");
        assert!(text.contains("already present              2"), "{text}");
        assert!(text.contains("dead-letters list"), "{text}");
        assert!(!s.complete());
        let dry = Summary { dry_run: true, ..s };
        assert!(dry.render(Duration::from_secs(1)).contains("would store"));
    }
}
