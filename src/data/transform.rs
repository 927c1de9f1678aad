//! Where columns become model inputs: canonical columns in, dense row-major
//! arrays out.

use polars::prelude::*;

use super::{DataError, Table};
use crate::config::ColumnsConfig;
use crate::preprocess::{Features, NO_PLAN, Preprocessor, Targets};

/// Features and targets of the same rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub features: Features,
    pub targets: Targets,
}

/// Transforms a loaded table with a fitted preprocessor.
pub fn transform(
    pre: &Preprocessor,
    columns: &ColumnsConfig,
    table: &Table,
) -> Result<Batch, DataError> {
    check_range(pre, &table.frame, &table.source, 0)?;
    let features = features(pre, &table.frame).map_err(|source| DataError::Polars {
        path: table.source.clone(),
        source,
    })?;
    let targets = targets(pre, columns, &table.frame).map_err(|source| DataError::Polars {
        path: table.source.clone(),
        source,
    })?;
    Ok(Batch { features, targets })
}

/// Refuses a numeric value the model cannot score
/// ([`NumericFeature::out_of_range`](crate::preprocess::NumericFeature::out_of_range)),
/// naming the file, column and row (`first_row` rows precede the frame in
/// its file).
pub fn check_range(
    pre: &Preprocessor,
    frame: &DataFrame,
    path: &std::path::Path,
    first_row: usize,
) -> Result<(), DataError> {
    for feature in &pre.numeric {
        let Ok(column) = frame.column(&feature.column) else {
            continue;
        };
        let Ok(values) = column.f64() else { continue };
        for (row, x) in values.iter().enumerate() {
            if let Some(reason) = x.and_then(|x| feature.out_of_range(x)) {
                return Err(DataError::BadValue {
                    path: path.to_path_buf(),
                    column: feature.column.clone(),
                    row: first_row + row + 1,
                    reason,
                });
            }
        }
    }
    Ok(())
}

/// The model inputs of every row of a canonical frame.
pub fn features(pre: &Preprocessor, frame: &DataFrame) -> PolarsResult<Features> {
    let rows = frame.height();
    let n_numeric = pre.numeric.len();
    let width = pre.numeric_width();
    let mut numeric = vec![0.0f32; rows * width];
    // Each column's bins follow the previous column's.
    let mut bins = 2 * n_numeric;
    for (j, feature) in pre.numeric.iter().enumerate() {
        let values = frame.column(&feature.column)?.f64()?;
        for (inputs, v) in numeric.chunks_exact_mut(width).zip(values.iter()) {
            let (value, missing) = feature.apply(v);
            inputs[j] = value;
            inputs[n_numeric + j] = missing;
            feature.encode_bins(v, &mut inputs[bins..bins + feature.bin_width()]);
        }
        bins += feature.bin_width();
    }

    let n_embedded = pre.embedded_columns();
    let mut embedded = vec![0u32; rows * n_embedded];
    for (j, vocab) in pre.categorical.iter().enumerate() {
        let values = frame.column(vocab.column())?.str()?;
        for (row, v) in values.iter().enumerate() {
            embedded[row * n_embedded + j] = vocab.index(v);
        }
    }
    let offset = pre.categorical.len();
    for (j, hashed) in pre.hashed.iter().enumerate() {
        let values = frame.column(&hashed.column)?.str()?;
        for (row, v) in values.iter().enumerate() {
            embedded[row * n_embedded + offset + j] = hashed.index(v);
        }
    }

    let offer = match &pre.offer {
        None => Vec::new(),
        Some(name) => frame
            .column(name)?
            .str()?
            .iter()
            .map(|v| {
                pre.offer_index(v.expect("null offers are dropped at load"))
                    .expect("offers are checked at load")
            })
            .collect(),
    };

    // A no-offer row's context is missing, whatever the log says: the
    // no-offer arm is scored without one.
    let none = pre.no_offer_index();
    let n_context = pre.context.len();
    let mut context = vec![0u32; rows * n_context];
    for (j, vocab) in pre.context.iter().enumerate() {
        let values = frame.column(vocab.column())?.str()?;
        for (row, v) in values.iter().enumerate() {
            let shown = none.is_none_or(|none| offer.get(row) != Some(&none));
            context[row * n_context + j] = vocab.index(v.filter(|_| shown));
        }
    }
    Ok(Features {
        rows,
        numeric,
        embedded,
        offer,
        context,
    })
}

fn product_indices(
    pre: &Preprocessor,
    frame: &DataFrame,
    column: &str,
) -> PolarsResult<Vec<Option<i32>>> {
    let values = frame.column(column)?.str()?;
    Ok(values
        .iter()
        .map(|v| {
            v.map(|name| {
                pre.product_index(name)
                    .expect("products are checked at load") as i32
            })
        })
        .collect())
}

/// The training targets of every row of a canonical frame.
pub fn targets(
    pre: &Preprocessor,
    columns: &ColumnsConfig,
    frame: &DataFrame,
) -> PolarsResult<Targets> {
    let rows = frame.height();
    let floats = |name: &str| -> PolarsResult<Vec<f32>> {
        Ok(frame
            .column(name)?
            .f64()?
            .iter()
            .map(|v| v.unwrap_or(0.0) as f32)
            .collect())
    };
    let converted = floats(&columns.converted)?;
    let plan = match &columns.plan {
        None => vec![NO_PLAN; rows],
        Some(name) => product_indices(pre, frame, name)?
            .into_iter()
            .map(|i| i.unwrap_or(NO_PLAN))
            .collect(),
    };
    let weight = match &columns.weight {
        None => vec![1.0; rows],
        Some(name) => floats(name)?,
    };
    let optional = |column: &Option<String>| match column {
        None => Ok(Vec::new()),
        Some(name) => floats(name),
    };
    Ok(Targets {
        converted,
        plan,
        weight,
        propensity: optional(&columns.propensity)?,
        value: optional(&columns.value)?,
    })
}
