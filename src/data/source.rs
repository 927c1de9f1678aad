//! Finding data files (a file, a directory of shards or a glob) and reading
//! them with polars, one file at a time so that every error can name its file.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::DataError;

/// A supported file format, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
}

impl Format {
    /// The format of a path by its extension (`.parquet`, `.pq`, `.csv`).
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// The data files a path names, in a stable (sorted) order: the file itself,
/// the data files directly inside a directory, or the matches of a glob.
pub fn resolve(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let text = path.to_string_lossy();
    let files: Vec<PathBuf> = if text.contains(['*', '?', '[']) {
        let matches = glob::glob(&text).map_err(|e| DataError::BadPath {
            path: path.to_path_buf(),
            reason: format!("invalid glob pattern: {e}"),
        })?;
        let mut files: Vec<PathBuf> = matches
            .filter_map(Result::ok)
            .filter(|p| p.is_file() && Format::of(p).is_some())
            .collect();
        files.sort();
        files
    } else if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| io_error(path, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(path, e))?;
            let p = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if p.is_file() && !hidden && Format::of(&p).is_some() {
                files.push(p);
            }
        }
        files.sort();
        files
    } else {
        if Format::of(path).is_none() {
            return Err(DataError::UnsupportedFormat {
                path: path.to_path_buf(),
            });
        }
        // Opening it here turns "no such file" and permission problems into
        // an error that names the file, before any other work.
        std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(DataError::NoFiles {
            path: path.to_path_buf(),
        });
    }
    Ok(files)
}

fn io_error(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn polars_error(path: &Path) -> impl Fn(PolarsError) -> DataError + '_ {
    move |source| {
        // polars' own advice here names a reader option users cannot set.
        if source
            .to_string()
            .contains("found more fields than defined in 'Schema'")
        {
            return DataError::BadPath {
                path: path.to_path_buf(),
                reason: "a row has more fields than the header (a ragged CSV row)".into(),
            };
        }
        DataError::Polars {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub(crate) fn scan(path: &Path) -> Result<LazyFrame, DataError> {
    let format = Format::of(path).ok_or_else(|| DataError::UnsupportedFormat {
        path: path.to_path_buf(),
    })?;
    let metadata = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if metadata.len() == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let source = PlRefPath::try_from_path(path).map_err(polars_error(path))?;
    let frame = match format {
        Format::Parquet => LazyFrame::scan_parquet(source, ScanArgsParquet::default()),
        Format::Csv => LazyCsvReader::new(source)
            .with_has_header(true)
            // Enough rows to see a column's real type in small files, and
            // bounded for large ones.
            .with_infer_schema_length(Some(10_000))
            // Timestamps in CSV become dates and datetimes, as in Parquet.
            .with_try_parse_dates(true)
            .finish(),
    };
    frame.map_err(polars_error(path))
}

/// Refuses a CSV file with a row of more or fewer fields than its header.
/// polars checks this only when it parses every column, so a reader that
/// projects a few (score, recommend) would otherwise take a shifted or
/// short row as values. One pass of the csv crate's parser, which costs
/// far less than the polars read it precedes; Parquet needs none.
pub(crate) fn check_ragged(path: &Path) -> Result<(), DataError> {
    if Format::of(path) != Some(Format::Csv) {
        return Ok(());
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let mut record = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e))?
    {}
    Ok(())
}

fn csv_error(path: &Path, error: csv::Error) -> DataError {
    let reason = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "row {} has {len} fields where the header has {expected_len} (a ragged CSV row)",
            // The csv crate counts the header as record 0.
            pos.as_ref().map_or(0, csv::Position::record)
        ),
        csv::ErrorKind::Io(e) => {
            return DataError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(e.kind(), e.to_string()),
            };
        }
        _ => error.to_string(),
    };
    DataError::BadPath {
        path: path.to_path_buf(),
        reason,
    }
}

/// The column names and types of a file, read from its metadata (Parquet) or
/// inferred from its first rows (CSV), without reading the data.
pub fn schema(path: &Path) -> Result<SchemaRef, DataError> {
    let schema = scan(path)?.collect_schema().map_err(polars_error(path))?;
    // A header without rows infers every CSV column as a string: report the
    // file as empty rather than as mistyped.
    let first = schema.iter_names().next().cloned();
    let has_rows = match first {
        None => false,
        Some(name) => {
            scan(path)?
                .select([col(name)])
                .limit(1)
                .collect()
                .map_err(polars_error(path))?
                .height()
                > 0
        }
    };
    if !has_rows {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    // polars' CSV reader renames a repeated header name to NAME_duplicated_N;
    // which of the two columns was meant is unknowable, so refuse.
    for name in schema.iter_names() {
        if let Some((original, n)) = name.rsplit_once("_duplicated_")
            && n.parse::<u32>().is_ok()
            && schema.get(original).is_some()
        {
            return Err(DataError::DuplicateColumn {
                path: path.to_path_buf(),
                column: original.to_string(),
            });
        }
    }
    Ok(schema)
}

/// Whether every value of `column` is null (an empty CSV column, which
/// polars reads as text).
pub fn all_null(path: &Path, column: &str) -> Result<bool, DataError> {
    let frame = scan(path)?
        .select([col(column).is_not_null().sum()])
        .collect()
        .map_err(polars_error(path))?;
    let present = frame.columns()[0]
        .get(0)
        .map_err(polars_error(path))?
        .extract::<u64>()
        .unwrap_or(0);
    Ok(present == 0)
}

/// Reads the named columns of a file.
pub fn read(path: &Path, columns: &[&str]) -> Result<DataFrame, DataError> {
    check_ragged(path)?;
    let selection: Vec<Expr> = columns.iter().map(|c| col(*c)).collect();
    let frame = scan(path)?
        .select(selection)
        .collect()
        .map_err(polars_error(path))?;
    if frame.height() == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(frame)
}
