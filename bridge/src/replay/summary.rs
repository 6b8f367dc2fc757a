//! What a replay did, counted as it goes: the progress line on a terminal
//! and the summary at the end.

use crate::status_line::StatusLine;
use std::collections::BTreeMap;

use super::origin::Unreplayable;

/// What a replay did (or, with `--dry-run`, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Nothing was written or deleted.
    pub dry_run: bool,
    /// Letters that passed every filter.
    pub selected: u64,
    /// Letters whose messages are stored now and which are deleted (dry run:
    /// that today's routes decode).
    pub replayed: u64,
    /// Rows (or points) newly stored.
    pub rows_new: u64,
    /// Rows the store already had (an interrupted earlier run, a redelivery).
    pub rows_already: u64,
    /// Letters refused again, by today's reason; they stay, with it.
    pub refused: BTreeMap<String, u64>,
    /// Letters whose payload was kept only in part.
    pub truncated: u64,
    /// Letters that cannot be replayed, by why.
    pub unreplayable: BTreeMap<Unreplayable, u64>,
}

impl Summary {
    /// True when every selected letter was replayed (or would be).
    pub fn complete(&self) -> bool {
        self.replayed == self.selected
    }

    /// Letters refused again, in all.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Letters skipped, in all.
    pub fn skipped_total(&self) -> u64 {
        self.truncated + self.unreplayable.values().sum::<u64>()
    }

    /// The summary a person reads at the end.
    pub fn render(&self) -> String {
        if self.selected == 0 {
            return "Nothing selected: no dead letter matches these filters.\n".to_owned();
        }
        let would = if self.dry_run { "would be " } else { "" };
        let mut out = format!("Dead letters selected: {}\n", self.selected);
        out.push_str(&format!("  {would}replayed: {}", self.replayed));
        if !self.dry_run {
            out.push_str(&format!(
                " (rows new: {}, already stored: {})",
                self.rows_new, self.rows_already
            ));
        }
        out.push('\n');
        if !self.refused.is_empty() {
            let per: Vec<String> = self
                .refused
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            let stay = if self.dry_run {
                "they would stay"
            } else {
                "they stay, with today's reason"
            };
            out.push_str(&format!(
                "  still refused: {} ({}); {stay}\n",
                self.refused_total(),
                per.join(", ")
            ));
        }
        if self.truncated > 0 {
            out.push_str(&format!(
                "  skipped, payload truncated: {} (only the first bytes of the payload were \
                 kept; the rest is gone)\n",
                self.truncated
            ));
        }
        for (why, n) in &self.unreplayable {
            out.push_str(&format!(
                "  skipped, cannot be replayed: {n} {} ({})\n",
                why.as_str(),
                why.explain()
            ));
        }
        if self.dry_run {
            out.push_str("Dry run: nothing was written or deleted.\n");
        }
        out
    }
}

/// The progress line, redrawn on stderr after each chunk when stderr is a
/// terminal (a log file or a pipe gets only the summary).
#[derive(Debug)]
pub struct Progress(StatusLine);

impl Progress {
    /// On when stderr is a terminal.
    pub fn stderr() -> Self {
        Self(StatusLine::stderr())
    }

    /// On or off as told.
    pub fn new(on: bool) -> Self {
        Self(StatusLine::new(on))
    }

    /// Redraws the line: `read` letters looked at so far.
    pub fn show(&mut self, read: u64, summary: &Summary) {
        if !self.0.is_on() {
            return;
        }
        self.0.draw(&format!(
            "{read} read, {} selected, {} replayed, {} refused, {} skipped",
            summary.selected,
            summary.replayed,
            summary.refused_total(),
            summary.skipped_total()
        ));
    }

    /// Ends the line, so what follows starts on its own.
    pub fn finish(&mut self) {
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_kind_of_letter_left() {
        let mut s = Summary {
            selected: 10,
            replayed: 6,
            rows_new: 5,
            rows_already: 1,
            truncated: 1,
            ..Summary::default()
        };
        s.refused.insert("too_far_in_future".into(), 2);
        s.unreplayable.insert(Unreplayable::HttpToken, 1);
        assert!(!s.complete());
        assert_eq!((s.refused_total(), s.skipped_total()), (2, 2));
        let text = s.render();
        for part in [
            "selected: 10",
            "replayed: 6 (rows new: 5, already stored: 1)",
            "still refused: 2 (too_far_in_future 2)",
            "payload truncated: 1",
            "cannot be replayed: 1 http_token",
        ] {
            assert!(text.contains(part), "{part:?} in\n{text}");
        }
        let dry = Summary {
            dry_run: true,
            selected: 3,
            replayed: 3,
            ..Summary::default()
        };
        assert!(dry.complete());
        assert!(dry.render().contains("would be replayed: 3\n"));
        assert!(dry.render().contains("nothing was written"));
        assert!(Summary::default().complete());
        assert!(Summary::default().render().starts_with("Nothing selected"));
    }
}
