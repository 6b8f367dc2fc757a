//! The one line a one-shot command (import, dead-letter replay) redraws on
//! stderr while it works: drawn only when stderr is a terminal (a log file
//! or a pipe gets the summary alone), and ended before the summary.

use std::io::{IsTerminal, Write};

/// A line redrawn in place on stderr.
#[derive(Debug)]
pub struct StatusLine {
    on: bool,
    drawn: bool,
}

impl StatusLine {
    /// On when stderr is a terminal.
    pub fn stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    /// On or off as told.
    pub fn new(on: bool) -> Self {
        Self { on, drawn: false }
    }

    /// True when it draws at all (work to build its text can be skipped otherwise).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Replaces the line with `text`.
    pub fn draw(&mut self, text: &str) {
        if !self.on {
            return;
        }
        let mut err = std::io::stderr().lock();
        // Nothing to do when the terminal is gone.
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the line, so that what follows starts on its own.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}
