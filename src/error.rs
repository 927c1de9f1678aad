//! The library's error type. Every variant carries the facts a user needs to
//! fix the problem: the file, the column or the config field.

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;
#[cfg(feature = "data")]
use crate::data::DataError;
use crate::scorer::ScoreError;

/// Everything that can go wrong in `upsell`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The experiment config is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A data file is unreadable, malformed or does not match the config.
    #[cfg(feature = "data")]
    #[error(transparent)]
    Data(#[from] DataError),

    /// A checkpoint is missing, corrupt, tampered with or too new.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),

    /// Rows could not be scored.
    #[error(transparent)]
    Score(#[from] ScoreError),

    /// Training produced a non-finite loss.
    #[error(
        "training diverged in epoch {epoch} (by step {step}): mean loss {loss}; lower train.lr or raise train.grad_clip"
    )]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
    },

    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An output already exists and would be overwritten.
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },

    /// A command-line argument or an input is malformed.
    #[error("{0}")]
    Usage(String),

    /// A run's saved state (`resume.bin`) cannot be resumed from: damaged,
    /// or not upsell's (like a corrupt checkpoint, the input is at fault).
    #[error("{}: not a usable resume state: {message}", path.display())]
    Resume { path: PathBuf, message: String },

    /// The server could not listen on its address (taken, or not allowed).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// A worker thread stopped because the loop it fed ended first (an
    /// error there is the one reported).
    #[error("stopped because its consumer stopped")]
    Stopped,

    /// An evaluation report could not be drawn or written.
    #[cfg(feature = "data")]
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),

    /// A sweep could not run (its trials' own failures are in its report).
    #[cfg(feature = "cli")]
    #[error(transparent)]
    Sweep(#[from] crate::sweep::SweepError),

    /// The MLflow tracking server refused or could not be reached.
    #[cfg(feature = "train")]
    #[error(transparent)]
    Tracking(#[from] crate::tracking::TrackingError),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The process exit code for this error: 2 for bad input (config, data,
    /// arguments: fix the input and rerun), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_)
            | Error::Usage(_)
            | Error::Resume { .. }
            | Error::AlreadyExists { .. }
            | Error::Checkpoint(_)
            | Error::Score(_) => 2,
            #[cfg(feature = "data")]
            Error::Data(_) => 2,
            Error::Io { .. } | Error::Diverged { .. } | Error::Listen { .. } | Error::Stopped => 1,
            #[cfg(feature = "data")]
            Error::Report(_) => 1,
            #[cfg(feature = "cli")]
            Error::Sweep(e) => e.exit_code(),
            #[cfg(feature = "train")]
            Error::Tracking(_) => 1,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
