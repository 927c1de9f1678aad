//! Holding out validation rows: a seeded random fraction, or the latest
//! fraction by time.

use polars::prelude::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{DataError, Table};
use crate::config::{Config, SplitRule};

/// Splits `table` into (train, valid) by `config.data.split`.
///
/// `random` puts a row in validation when a seeded xxh3 hash of its id (or,
/// without an id column, of its position) falls under `valid_fraction`, so a
/// user's rows stay on one side and the split is stable for a seed. `time`
/// puts the rows at or after the `1 - valid_fraction` quantile of the time
/// column in validation.
pub fn split(table: Table, config: &Config) -> Result<(Table, Table), DataError> {
    let fraction = config.data.valid_fraction;
    let frame = &table.frame;
    let polars = |source: PolarsError| DataError::Polars {
        path: table.source.clone(),
        source,
    };
    let in_valid: Vec<bool> = match config.data.split {
        SplitRule::Random => {
            let seed = config.seed;
            let threshold = (fraction * (1u64 << 53) as f64) as u64;
            let under = |hash: u64| (hash >> 11) < threshold;
            match &config.columns.id {
                Some(id) => frame
                    .column(id)
                    .map_err(polars)?
                    .str()
                    .map_err(polars)?
                    .iter()
                    .enumerate()
                    .map(|(row, v)| match v {
                        Some(v) => under(xxh3_64_with_seed(v.as_bytes(), seed)),
                        // Rows without an id fall back to their position.
                        None => under(xxh3_64_with_seed(&(row as u64).to_le_bytes(), seed)),
                    })
                    .collect(),
                None => (0..frame.height() as u64)
                    .map(|row| under(xxh3_64_with_seed(&row.to_le_bytes(), seed)))
                    .collect(),
            }
        }
        SplitRule::Time => {
            let name = config
                .columns
                .time
                .as_deref()
                .expect("validated: a time split has a time column");
            let times: Vec<f64> = frame
                .column(name)
                .map_err(polars)?
                .f64()
                .map_err(polars)?
                .iter()
                .map(|t| t.expect("null times are dropped at load"))
                .collect();
            let mut sorted = times.clone();
            sorted.sort_by(f64::total_cmp);
            let cut = ((1.0 - fraction) * sorted.len() as f64) as usize;
            let threshold = sorted[cut.min(sorted.len() - 1)];
            times.iter().map(|&t| t >= threshold).collect()
        }
    };
    let valid_mask = BooleanChunked::from_slice("valid".into(), &in_valid);
    let valid = frame.filter(&valid_mask).map_err(polars)?;
    let train = frame.filter(&!&valid_mask).map_err(polars)?;
    for (part, rows) in [("training", train.height()), ("validation", valid.height())] {
        if rows == 0 {
            return Err(DataError::EmptySplit {
                path: table.source.clone(),
                part,
                rule: format!("{:?} split of {fraction}", config.data.split).to_lowercase(),
            });
        }
    }
    let part = |frame: DataFrame| Table {
        report: table.report.clone(),
        source: table.source.clone(),
        frame,
    };
    Ok((part(train), part(valid)))
}
