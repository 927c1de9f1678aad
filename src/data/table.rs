//! Loading a data set: every file's columns are checked against the config
//! before any data is read, then each file is read and its columns are
//! brought to one canonical type per role, with every bad value reported by
//! file, column and row.
//!
//! Canonical types: numeric features, propensity, value, weight, the label
//! and time are `Float64`; categorical, hashed, context, offer, plan and id
//! columns are `String`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use super::{DataError, source};
use crate::config::{ColumnRole, Config};

/// Rows loaded from one or more files, columns in their canonical types.
#[derive(Debug, Clone)]
pub struct Table {
    pub frame: DataFrame,
    /// The path the rows were loaded from (a file, directory or glob).
    pub source: PathBuf,
    pub report: LoadReport,
}

impl Table {
    pub fn height(&self) -> usize {
        self.frame.height()
    }
}

/// What loading read and what it dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    pub files: usize,
    pub rows_read: usize,
    pub rows_used: usize,
    /// Unusable rows by reason; they are dropped only while their share
    /// stays within `data.max_invalid_fraction`.
    pub dropped: BTreeMap<String, usize>,
}

/// The type a role accepts, for checks and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Text,
    Label,
    Time,
}

impl Kind {
    fn of(role: ColumnRole) -> Kind {
        match role {
            ColumnRole::Numeric
            | ColumnRole::Propensity
            | ColumnRole::Value
            | ColumnRole::Weight => Kind::Number,
            ColumnRole::Categorical
            | ColumnRole::Hashed
            | ColumnRole::Offer
            | ColumnRole::Context
            | ColumnRole::Plan
            | ColumnRole::Id => Kind::Text,
            ColumnRole::Converted => Kind::Label,
            ColumnRole::Time => Kind::Time,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Number => "a number (integer, float or boolean)",
            Kind::Text => "a string, integer or boolean",
            Kind::Label => "0/1 (integer, float, boolean, or the strings 0/1, true/false, yes/no)",
            Kind::Time => "a time (integer, float, date or datetime)",
        }
    }

    fn accepts(self, dtype: &DataType) -> bool {
        if dtype.is_null() {
            return true;
        }
        let number = dtype.is_primitive_numeric() || dtype.is_bool();
        match self {
            Kind::Number => number,
            Kind::Text => {
                dtype.is_string()
                    || dtype.is_integer()
                    || dtype.is_bool()
                    || dtype.is_categorical()
                    || dtype.is_enum()
            }
            Kind::Label => number || dtype.is_string(),
            Kind::Time => number || matches!(dtype, DataType::Date | DataType::Datetime(_, _)),
        }
    }
}

/// Checks that a file has every configured column with a usable type.
pub fn check_schema(path: &Path, schema: &Schema, config: &Config) -> Result<(), DataError> {
    for (column, role) in config.columns.roles() {
        let Some(dtype) = schema.get(column) else {
            let mut names: Vec<&str> = schema.iter_names().map(|n| n.as_str()).collect();
            names.truncate(30);
            return Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_string(),
                role: role.key(),
                available: format!("columns {names:?}"),
            });
        };
        check_type(path, column, role, dtype)?;
    }
    Ok(())
}

/// Refuses a column whose type cannot hold its role's values (text in a
/// numeric column, say), as training and evaluation do; an all-null text
/// column says so instead.
pub fn check_type(
    path: &Path,
    column: &str,
    role: ColumnRole,
    dtype: &DataType,
) -> Result<(), DataError> {
    let kind = Kind::of(role);
    if kind.accepts(dtype) {
        return Ok(());
    }
    if dtype.is_string() && super::source::all_null(path, column).unwrap_or(false) {
        return Err(DataError::AllNull {
            path: path.to_path_buf(),
            column: column.to_string(),
            role: role.key(),
        });
    }
    Err(DataError::WrongType {
        path: path.to_path_buf(),
        column: column.to_string(),
        role: role.key(),
        found: dtype.to_string(),
        expected: kind.expected(),
    })
}

/// Loads every file that `path` names, checking all their schemas first.
pub fn load(path: &Path, config: &Config) -> Result<Table, DataError> {
    let files = source::resolve(path)?;
    for file in &files {
        let schema = source::schema(file)?;
        check_schema(file, &schema, config)?;
    }
    let names: Vec<&str> = config.columns.roles().iter().map(|(c, _)| *c).collect();
    let mut parts = Vec::with_capacity(files.len());
    for file in &files {
        let raw = source::read(file, &names)?;
        parts.push((file.clone(), raw));
    }
    assemble(path, parts, config)
}

/// A table from frames already in memory (built-in synthetic data, tests):
/// the same checks as files get, with `source` naming the frame in errors.
pub fn from_frame(source: &Path, frame: DataFrame, config: &Config) -> Result<Table, DataError> {
    check_schema(source, frame.schema(), config)?;
    let names: Vec<&str> = config.columns.roles().iter().map(|(c, _)| *c).collect();
    let frame = frame.select(names).map_err(|e| DataError::Polars {
        path: source.to_path_buf(),
        source: e,
    })?;
    assemble(source, vec![(source.to_path_buf(), frame)], config)
}

fn assemble(
    path: &Path,
    parts: Vec<(PathBuf, DataFrame)>,
    config: &Config,
) -> Result<Table, DataError> {
    let roles = config.columns.roles();
    let mut report = LoadReport {
        files: parts.len(),
        ..LoadReport::default()
    };
    let mut frame: Option<DataFrame> = None;
    for (file, raw) in parts {
        report.rows_read += raw.height();
        let (part, dropped) = canonicalise(&file, &raw, config)?;
        for (reason, n) in dropped {
            *report.dropped.entry(reason).or_default() += n;
        }
        match frame.as_mut() {
            None => frame = Some(part),
            Some(all) => {
                all.vstack_mut_owned(part)
                    .map_err(|source| DataError::Polars {
                        path: file.clone(),
                        source,
                    })?;
            }
        }
    }
    let mut frame = frame.ok_or_else(|| DataError::NoFiles {
        path: path.to_path_buf(),
    })?;
    frame.rechunk_mut_par();
    report.rows_used = frame.height();

    check_invalid(path, &report, config)?;
    if frame.height() == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    for (column, role) in &roles {
        let feature = is_feature(*role);
        let all_null = frame
            .column(column)
            .map(|c| c.null_count() == c.len())
            .unwrap_or(false);
        if feature && all_null {
            return Err(DataError::AllNull {
                path: path.to_path_buf(),
                column: column.to_string(),
                role: role.key(),
            });
        }
    }
    Ok(Table {
        frame,
        source: path.to_path_buf(),
        report,
    })
}

/// Fails when the unusable rows exceed `data.max_invalid_fraction`, naming
/// them by reason.
pub(crate) fn check_invalid(
    path: &Path,
    report: &LoadReport,
    config: &Config,
) -> Result<(), DataError> {
    let invalid = report.rows_read - report.rows_used;
    let allowed = config.data.max_invalid_fraction;
    if invalid > 0 && invalid as f64 > allowed * report.rows_read as f64 {
        let reasons = report
            .dropped
            .iter()
            .map(|(reason, n)| format!("{n} with {reason}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(DataError::TooManyInvalid {
            path: path.to_path_buf(),
            invalid,
            total: report.rows_read,
            reasons,
            allowed,
        });
    }
    Ok(())
}

/// Whether a role is a model input (which must not be null in every row).
pub(crate) fn is_feature(role: ColumnRole) -> bool {
    matches!(
        role,
        ColumnRole::Numeric | ColumnRole::Categorical | ColumnRole::Hashed | ColumnRole::Context
    )
}

/// [`canonicalise`] for a batch of a file that starts at its 0-based row
/// `first_row`, so that errors name the row within the file.
pub(crate) fn canonical_chunk(
    path: &Path,
    raw: &DataFrame,
    first_row: usize,
    config: &Config,
) -> Result<(DataFrame, BTreeMap<String, usize>), DataError> {
    canonicalise(path, raw, config).map_err(|e| match e {
        DataError::BadValue {
            path,
            column,
            row,
            reason,
        } => DataError::BadValue {
            path,
            column,
            row: row + first_row,
            reason,
        },
        other => other,
    })
}

/// Brings one file's columns to their canonical types and drops the rows
/// that cannot be used, returning the dropped counts by reason.
fn canonicalise(
    path: &Path,
    raw: &DataFrame,
    config: &Config,
) -> Result<(DataFrame, BTreeMap<String, usize>), DataError> {
    let height = raw.height();
    let polars = |source: PolarsError| DataError::Polars {
        path: path.to_path_buf(),
        source,
    };
    let bad = |column: &str, row: usize, reason: String| DataError::BadValue {
        path: path.to_path_buf(),
        column: column.to_string(),
        row: row + 1,
        reason,
    };
    let mut keep = vec![true; height];
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let mut drop_row = |keep: &mut [bool], row: usize, reason: &str| {
        if std::mem::replace(&mut keep[row], false) {
            *dropped.entry(reason.to_string()).or_default() += 1;
        }
    };

    let mut columns: Vec<Column> = Vec::new();
    let mut label: Vec<Option<f64>> = Vec::new();
    for (name, role) in config.columns.roles() {
        let column = raw.column(name).map_err(polars)?;
        let canonical = match Kind::of(role) {
            Kind::Text => column.cast(&DataType::String).map_err(polars)?,
            Kind::Number => {
                let values = column.cast(&DataType::Float64).map_err(polars)?;
                for (row, v) in values.f64().map_err(polars)?.iter().enumerate() {
                    let Some(v) = v else { continue };
                    if !v.is_finite() {
                        return Err(bad(name, row, format!("{v} is not a finite number")));
                    }
                    match role {
                        ColumnRole::Propensity if !(v > 0.0 && v <= 1.0) => {
                            return Err(bad(
                                name,
                                row,
                                format!("propensity {v} is outside (0, 1]"),
                            ));
                        }
                        ColumnRole::Weight if v < 0.0 => {
                            return Err(bad(name, row, format!("weight {v} is negative")));
                        }
                        _ => {}
                    }
                }
                values
            }
            Kind::Label => {
                label = parse_label(column).map_err(|(row, reason)| bad(name, row, reason))?;
                Column::new(name.into(), &label)
            }
            Kind::Time => {
                let physical = column.to_physical_repr();
                physical.cast(&DataType::Float64).map_err(polars)?
            }
        };
        columns.push(canonical);
    }

    // Row-level rules that involve several columns, and nulls where a value is
    // required.
    let frame = DataFrame::new(height, columns).map_err(polars)?;
    let text = |name: &str| -> Result<StringChunked, DataError> {
        Ok(frame
            .column(name)
            .map_err(polars)?
            .str()
            .map_err(polars)?
            .clone())
    };
    for (row, v) in label.iter().enumerate() {
        if v.is_none() {
            drop_row(&mut keep, row, "a null label");
        }
    }
    let products = &config.products;
    let product_list = || products.keys().cloned().collect::<Vec<_>>().join(", ");
    if let Some(offer) = &config.columns.offer {
        for (row, v) in text(offer)?.iter().enumerate() {
            match v {
                None => drop_row(&mut keep, row, "a null offer"),
                Some(v)
                    if !products.contains_key(v)
                        && config.columns.no_offer.as_deref() != Some(v) =>
                {
                    let no_offer = match &config.columns.no_offer {
                        Some(none) => format!(" or the no-offer value {none:?} (columns.no_offer)"),
                        None => String::new(),
                    };
                    return Err(bad(
                        offer,
                        row,
                        format!(
                            "{v:?} is not a product in [products] ({}){no_offer}",
                            product_list()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    if let Some(plan) = &config.columns.plan {
        for (row, v) in text(plan)?.iter().enumerate() {
            let Some(v) = v else { continue };
            if !products.contains_key(v) {
                return Err(bad(
                    plan,
                    row,
                    format!("{v:?} is not a product in [products] ({})", product_list()),
                ));
            }
            if label[row] == Some(0.0) {
                drop_row(&mut keep, row, "a plan but no conversion");
            }
        }
    }
    let required = [
        (&config.columns.propensity, "a null propensity"),
        (&config.columns.weight, "a null weight"),
        (&config.columns.time, "a null time"),
    ];
    for (column, reason) in required {
        let Some(name) = column else { continue };
        let values = frame.column(name).map_err(polars)?;
        if values.null_count() > 0 {
            for (row, v) in values.f64().map_err(polars)?.iter().enumerate() {
                if v.is_none() {
                    drop_row(&mut keep, row, reason);
                }
            }
        }
    }
    let mut frame = frame;
    if let Some(value) = &config.columns.value {
        // No value recorded means nothing was bought.
        let filled = frame
            .column(value)
            .map_err(polars)?
            .fill_null(FillNullStrategy::Zero)
            .map_err(polars)?;
        frame.with_column(filled).map_err(polars)?;
    }
    if dropped.is_empty() {
        return Ok((frame, dropped));
    }
    let mask = BooleanChunked::from_slice("keep".into(), &keep);
    let frame = frame.filter(&mask).map_err(polars)?;
    Ok((frame, dropped))
}

/// Parses a label column into 0/1 (null stays null); the error is the
/// 0-based row and the reason.
fn parse_label(column: &Column) -> Result<Vec<Option<f64>>, (usize, String)> {
    let dtype = column.dtype();
    if dtype.is_string() {
        let values = column.str().expect("checked string type");
        return values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                let Some(v) = v else { return Ok(None) };
                match v.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" => Ok(Some(1.0)),
                    "0" | "false" | "no" => Ok(Some(0.0)),
                    _ => Err((row, format!("label {v:?} is not 0/1, true/false or yes/no"))),
                }
            })
            .collect();
    }
    let values = column
        .cast(&DataType::Float64)
        .map_err(|e| (0, e.to_string()))?;
    let values = values.f64().expect("cast to f64");
    values
        .iter()
        .enumerate()
        .map(|(row, v)| match v {
            None => Ok(None),
            Some(v) if v == 0.0 || v == 1.0 => Ok(Some(v)),
            Some(v) => Err((row, format!("label {v} is not 0 or 1"))),
        })
        .collect()
}
