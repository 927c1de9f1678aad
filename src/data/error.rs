use std::path::PathBuf;

use polars::prelude::PolarsError;

/// A data file that cannot be used, with the file and column at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Polars {
        path: PathBuf,
        #[source]
        source: PolarsError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadPath { path: PathBuf, reason: String },
    #[error("{}: the {rule} leaves no {part} rows", path.display())]
    EmptySplit {
        path: PathBuf,
        part: &'static str,
        rule: String,
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
