//! Fitting the preprocessing on the training split: numeric statistics,
//! vocabularies and the product list.

use std::collections::HashMap;

use polars::prelude::*;

use super::{DataError, Table};
use crate::config::Config;
use crate::preprocess::{HashedFeature, NumericFeature, Preprocessor, Product, Vocabulary};

/// Fits a [`Preprocessor`] on training rows (never on validation rows, so
/// validation metrics are honest).
pub fn fit(train: &Table, config: &Config) -> Result<Preprocessor, DataError> {
    let polars = |source: PolarsError| DataError::Polars {
        path: train.source.clone(),
        source,
    };
    let frame = &train.frame;
    let columns = &config.columns;
    let prep = &config.preprocess;

    let mut numeric = Vec::with_capacity(columns.numeric.len());
    for name in &columns.numeric {
        let log1p = prep.log1p.contains(name);
        let values = frame.column(name).map_err(polars)?.f64().map_err(polars)?;
        let mut feature = NumericFeature {
            column: name.clone(),
            log1p,
            mean: 0.0,
            std: 1.0,
        };
        // Two passes in f64: exact enough for hundreds of millions of rows,
        // unlike a running sum of squares.
        let (mut n, mut sum) = (0usize, 0.0f64);
        for v in values.iter().flatten() {
            n += 1;
            sum += feature.raw(v);
        }
        let mean = sum / n as f64;
        let mut squares = 0.0f64;
        for v in values.iter().flatten() {
            let d = feature.raw(v) - mean;
            squares += d * d;
        }
        let std = (squares / n as f64).sqrt();
        feature.mean = mean;
        feature.std = if std > 1e-12 { std } else { 1.0 };
        numeric.push(feature);
    }

    let vocabulary = |name: &String| -> Result<Vocabulary, DataError> {
        let values = frame.column(name).map_err(polars)?.str().map_err(polars)?;
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for v in values.iter().flatten() {
            *counts.entry(v).or_default() += 1;
        }
        let counts = counts.into_iter().map(|(k, n)| (k.to_string(), n));
        Ok(Vocabulary::from_counts(
            name.clone(),
            counts,
            prep.min_count,
            prep.max_vocab,
        ))
    };
    let categorical = columns
        .categorical
        .iter()
        .map(vocabulary)
        .collect::<Result<_, _>>()?;
    let context = columns
        .context
        .iter()
        .map(vocabulary)
        .collect::<Result<_, _>>()?;
    let hashed = columns
        .hashed
        .iter()
        .map(|(column, &buckets)| HashedFeature {
            column: column.clone(),
            buckets,
        })
        .collect();
    let products = config
        .products
        .iter()
        .map(|(name, &value)| Product {
            name: name.clone(),
            value,
        })
        .collect();
    Ok(Preprocessor {
        numeric,
        categorical,
        hashed,
        offer: columns.offer.clone(),
        context,
        plan: columns.plan.clone(),
        products,
    })
}
