//! `co2-bridge retime`: moves the stored times of one device's rows by a
//! fixed shift, to repair readings stored at the wrong time (a device that
//! sends its local time without an offset to a bridge reading it in another
//! zone, or a device whose clock was off).
//!
//! It moves the device's rows in every MySQL table a configured route writes
//! (found from the routes' tables and layouts, not from a list of names).

mod plan;
mod shift;

use crate::config::ConfigError;
pub use plan::{Plan, Table};
pub use shift::{Shift, ShiftError, TimeBound, TimeError, MAX_SHIFT_S};

/// Why a retime changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RetimeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--route` names no route.
    #[error("--route {name:?}: no such route; the routes are {known}")]
    UnknownRoute {
        /// The name given.
        name: String,
        /// The configured routes.
        known: String,
    },
    /// A route whose rows retime cannot move.
    #[error("{0}")]
    Unsupported(String),
    /// No selected route writes a MySQL table with a device and a time.
    #[error("no selected route writes device rows to a MySQL table; nothing to move")]
    NothingToMove,
    /// The routes write to more than one database.
    #[error(
        "the routes write to more than one MySQL sink: {0}. One transaction cannot span two \
         databases; run once per sink with --route"
    )]
    SeveralDatabases(String),
}
