//! The library's error type. Every variant carries the facts a user needs to
//! fix the problem: the file, the column or the config field.

use std::path::PathBuf;

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

    /// A command-line argument is malformed or out of range.
    #[error("{argument}: {message}")]
    Argument {
        argument: &'static str,
        message: String,
    },

    /// The config asks for a backend this build leaves out.
    #[error("this build has no {backend} backend: rebuild with --features {backend}")]
    MissingBackend { backend: &'static str },

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
    Report(#[from] ReportError),

    /// A sweep could not run (its trials' own failures are in its report).
    #[cfg(feature = "cli")]
    #[error(transparent)]
    Sweep(#[from] SweepError),

    /// The MLflow tracking server refused or could not be reached.
    #[cfg(feature = "train")]
    #[error(transparent)]
    Tracking(#[from] TrackingError),
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
            | Error::Argument { .. }
            | Error::MissingBackend { .. }
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
            // A tracking setting the user can fix, before anything ran.
            #[cfg(feature = "train")]
            Error::Tracking(
                TrackingError::InvalidUri { .. }
                | TrackingError::Setting { .. }
                | TrackingError::Certificate { .. },
            ) => 2,
            #[cfg(feature = "train")]
            Error::Tracking(_) => 1,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A config that cannot be read, parsed or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("--set {spec:?}: {reason}")]
    Override { spec: String, reason: String },
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        origin: String,
        field: String,
        reason: String,
    },
}

/// A checkpoint that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: not a checkpoint: {file} is missing", dir.display())]
    MissingManifest { dir: PathBuf, file: &'static str },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid manifest: {message}", path.display())]
    BadManifest { path: PathBuf, message: String },
    #[error(
        "{}: format version {found} is newer than this upsell reads ({supported}); upgrade upsell",
        path.display()
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{}: checksum mismatch: the manifest says sha256 {expected}, the file has {found}; the weights were changed or truncated",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{}: cannot load weights: {message}", path.display())]
    Weights { path: PathBuf, message: String },
}

/// Why scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("this checkpoint has no offers (columns.offer) to decide between")]
    NoOffers,
    #[error("column {column:?} has {found} values; expected {expected}")]
    Length {
        column: String,
        found: usize,
        expected: usize,
    },
}

/// Why a report could not be written.
#[cfg(feature = "data")]
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// plotters failed to draw a plot.
    #[error("cannot draw {plot}: {message}")]
    Plot {
        /// The plot's name: "reliability", "roc", "gains" or "confusion".
        plot: &'static str,
        /// plotters' error, as text.
        message: String,
    },
}

/// Everything that can stop a sweep. A failed trial is not an error: it is
/// reported in [`SweepReport`](crate::experiment::sweep::SweepReport).
#[cfg(feature = "cli")]
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A `--grid` argument is malformed.
    #[error("--grid {arg}: {reason}")]
    Grid { arg: String, reason: String },

    /// Two `--grid` arguments vary the same key.
    #[error("--grid {key}=...: the key is given twice; list all its values in one --grid")]
    DuplicateKey { key: String },

    /// No `--grid` argument at all.
    #[error("no --grid given: a sweep needs at least one KEY=V1,V2,... to vary")]
    NoGrid,

    /// `--random 0`.
    #[error("--random 0: a sweep needs at least one trial")]
    NoTrials,

    /// The grid is too large to run in full (or to count).
    #[error(
        "the grid has {} combinations, too many to run them all; sample some with --random N --seed S",
        count_words(*.combinations)
    )]
    GridTooLarge { combinations: Option<u64> },

    /// Two trials would share a run directory.
    #[error("trials {first} and {second} are both named {name}")]
    DuplicateTrial {
        name: String,
        first: String,
        second: String,
    },

    /// A trial name that is not a plain file name.
    #[error("trial name {name:?}: use letters, digits, '.', '_' and '-' only")]
    BadTrialName { name: String },

    /// `--parallel 0`.
    #[error(
        "--prune needs a metric best.FIELD, FIELD being a column of metrics.jsonl \
         (e.g. best.valid_loss); got {metric}"
    )]
    PruneMetric {
        /// The metric given.
        metric: String,
    },
    #[error("--parallel 0: at least one trial must run at a time")]
    Parallel,

    /// `--metric` is not a dotted path.
    #[error(
        "--metric {metric:?}: expected a dotted path into the summary, such as best.valid_loss"
    )]
    BadMetric { metric: String },

    /// The metric is in no finished trial's summary: most likely a typo.
    #[error(
        "--metric {metric}: no finished trial's summary has it; numeric values in {}: {}",
        .path.display(),
        .available.join(", ")
    )]
    MetricNotFound {
        metric: String,
        /// The result file whose paths are listed.
        path: PathBuf,
        available: Vec<String>,
    },

    /// Another sweep, or a trial of a killed one, is running in the directory.
    #[error("{}: another sweep, or a trial of one, is running in this directory", .out.display())]
    Busy { out: PathBuf },

    /// The sweep directory was started with other train arguments, so its
    /// finished trials would not be comparable with new ones.
    #[error(
        "{}: this sweep was started with other train arguments\n  then: {}\n  now:  {}\nuse a new --out, or delete that file to mix the two",
        .path.display(),
        .before.join(" "),
        .now.join(" ")
    )]
    ArgsChanged {
        path: PathBuf,
        before: Vec<String>,
        now: Vec<String>,
    },

    /// A sweep file (result or `sweep.json`) exists but cannot be used.
    #[error("{}: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// A file or directory could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(feature = "cli")]
impl SweepError {
    /// The process exit code for this error, as `upsell` uses them: 2 for bad
    /// arguments (fix them and rerun), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            SweepError::Io { .. } | SweepError::Busy { .. } => 1,
            _ => 2,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SweepError::Io {
            path: path.into(),
            source,
        }
    }
}

/// What went wrong talking to the tracking server.
#[cfg(feature = "train")]
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// The tracking URI is not one this client can talk to.
    #[error("tracking URI {uri:?} is not supported: {reason}")]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An MLflow environment variable holds a value that cannot be used.
    #[error("{variable}: {reason}")]
    Setting {
        /// The variable, e.g. `MLFLOW_HTTP_REQUEST_MAX_RETRIES`.
        variable: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA bundle to trust (`MLFLOW_TRACKING_SERVER_CERT_PATH`) cannot be used.
    #[error("{}: not a usable PEM certificate bundle (MLFLOW_TRACKING_SERVER_CERT_PATH): {reason}", .path.display())]
    Certificate {
        /// The bundle's path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The request did not complete: connection refused, timeout, broken
    /// connection, unreadable response.
    #[error("MLflow request {method} {url} failed: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// The URL requested (without its query string).
        url: String,
        /// What ureq reported (boxed to keep this enum small).
        #[source]
        source: Box<ureq::Error>,
    },
    /// MLflow answered with an error status.
    #[error(
        "MLflow request {method} {url} failed with HTTP {status}: {}{message}",
        .error_code.as_deref().map(|code| format!("{code}: ")).unwrap_or_default()
    )]
    Api {
        /// HTTP method.
        method: &'static str,
        /// The URL requested (without its query string).
        url: String,
        /// HTTP status code.
        status: u16,
        /// MLflow's `error_code` (e.g. `RESOURCE_DOES_NOT_EXIST`); `None`
        /// when the body was not MLflow's JSON error (e.g. a proxy's page).
        error_code: Option<String>,
        /// MLflow's `message`, or the start of the body when it was not JSON.
        message: String,
    },
    /// MLflow answered with success but a body this client cannot read.
    #[error("MLflow request {method} {url} returned an unexpected response: {reason}")]
    Response {
        /// HTTP method.
        method: &'static str,
        /// The URL requested (without its query string).
        url: String,
        /// What was wrong with the body.
        reason: String,
    },
    /// The experiment exists but is deleted, so no run can be created in it
    /// (and its name cannot be reused until it is purged).
    #[error(
        "MLflow experiment {name:?} (id {id}) is deleted; restore it \
         (mlflow experiments restore --experiment-id {id}) or choose another name"
    )]
    ExperimentDeleted {
        /// Experiment name.
        name: String,
        /// Experiment id.
        id: String,
    },
    /// The run's artifact root uses a scheme this client cannot write.
    #[error(
        "run {run_id} stores artifacts at {uri:?}, which this client cannot write: \
         only mlflow-artifacts: (start `mlflow server` with artifact serving, the default), \
         http: and local file roots are supported"
    )]
    UnsupportedArtifactUri {
        /// The run id.
        run_id: String,
        /// The run's `artifact_uri`.
        uri: String,
    },
    /// An artifact path MLflow would refuse or that could escape the run's root.
    #[error("invalid artifact path {path:?}: {reason}")]
    InvalidArtifactPath {
        /// The path as given (or as derived from a local file name).
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Reading a local file or directory, or copying to a local artifact root, failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A data file that cannot be used, with the file and column at fault.
#[cfg(feature = "data")]
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Polars {
        path: PathBuf,
        #[source]
        source: polars::prelude::PolarsError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadPath { path: PathBuf, reason: String },
    /// A file's contents do not fit the other inputs (a truth file and its
    /// data, files of one input with different columns).
    #[error("{}: {reason}", path.display())]
    Mismatch { path: PathBuf, reason: String },
    /// A truth file does not describe the model's decisions.
    #[error("the truth does not match the model: {reason}")]
    Truth { reason: String },
    #[error("{}: the {rule} leaves no {part} rows", path.display())]
    EmptySplit {
        path: PathBuf,
        part: &'static str,
        rule: String,
    },
    /// `columns.no_offer` names a holdout that the data does not have.
    #[error(
        "{}: columns.no_offer is {value:?}, but none of the {rows} {part} rows has {column:?} = \
         {value:?}, so the model cannot learn what users do unoffered; log a randomised no-offer \
         holdout, or unset columns.no_offer",
        path.display()
    )]
    NoHoldout {
        path: PathBuf,
        part: &'static str,
        column: String,
        value: String,
        rows: usize,
    },
    #[error("{}: no data files (*.parquet, *.pq, *.csv) found", path.display())]
    NoFiles { path: PathBuf },
    #[error("{}: unsupported file type; expected .parquet, .pq or .csv", path.display())]
    UnsupportedFormat { path: PathBuf },
    #[error("{}: the file is empty (no rows)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: column {column:?} (columns.{role}) is missing; the file has {available}", path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        role: &'static str,
        available: String,
    },
    #[error("{}: column {column:?} (columns.{role}) has type {found}; expected {expected}", path.display())]
    WrongType {
        path: PathBuf,
        column: String,
        role: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("{}: column {column:?} appears more than once in the header", path.display())]
    DuplicateColumn { path: PathBuf, column: String },
    #[error("{}: column {column:?} (columns.{role}) is null in every row", path.display())]
    AllNull {
        path: PathBuf,
        column: String,
        role: &'static str,
    },
    #[error("{}: column {column:?}, row {row}: {reason}", path.display())]
    BadValue {
        path: PathBuf,
        column: String,
        /// 1-based data row within the file (the header is not counted).
        row: usize,
        reason: String,
    },
    #[error(
        "{}: {invalid} of {total} rows are unusable ({reasons}); data.max_invalid_fraction allows {allowed}",
        path.display()
    )]
    TooManyInvalid {
        path: PathBuf,
        invalid: usize,
        total: usize,
        reasons: String,
        allowed: f64,
    },
}

/// A value that the preprocessing cannot use, by row and column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("row {row}, field {column:?}: {reason}")]
pub struct FieldError {
    /// 0-based row within the request or batch.
    pub row: usize,
    pub column: String,
    pub reason: String,
}

#[cfg(feature = "cli")]
fn count_words(combinations: Option<u64>) -> String {
    match combinations {
        Some(n) => n.to_string(),
        None => "more than 2^64".to_string(),
    }
}
