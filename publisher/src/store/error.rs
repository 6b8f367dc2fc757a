//! How a store fails (only the disk does), and what each failure means
//! for the queue.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// SQLite refused an operation.
    #[error("queue {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file failed SQLite's integrity check.
    #[error("queue {path} is damaged: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What the check said.
        reason: String,
    },
    /// A file operation next to the queue failed (creating its directory, moving it aside).
    #[error("queue {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the queue (two publishers on one file would
    /// publish each reading twice and miscount).
    #[error("queue {0} is in use by another process")]
    Locked(PathBuf),
    /// A thread panicked while holding the queue, or the blocking task died.
    #[error("queue worker failed: {0}")]
    Worker(String),
}

/// What a failure means for the queue's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The file is damaged: move it aside and start a fresh one.
    Corrupt,
    /// The disk cannot take writes now (full, read-only, I/O error): hold readings in memory.
    Unwritable,
    /// Another process has the file.
    Locked,
}

impl SpoolError {
    /// What to do about it.
    pub fn failure(&self) -> Failure {
        match self {
            SpoolError::Corrupt { .. } => Failure::Corrupt,
            SpoolError::Locked(_) => Failure::Locked,
            SpoolError::Sqlite { source, .. } => match source.sqlite_error_code() {
                Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Failure::Corrupt,
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Failure::Locked,
                _ => Failure::Unwritable,
            },
            SpoolError::Io { .. } | SpoolError::Worker(_) => Failure::Unwritable,
        }
    }

    /// A short reason for logs, events and the status file.
    pub fn reason(&self) -> String {
        match self {
            SpoolError::Sqlite { source, .. } => source.to_string(),
            SpoolError::Corrupt { reason, .. } => reason.clone(),
            SpoolError::Io { source, .. } => source.to_string(),
            SpoolError::Locked(_) => "in use by another process".into(),
            SpoolError::Worker(why) => why.clone(),
        }
    }
}
