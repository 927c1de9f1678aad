//! Fitting the preprocessing on the training split: numeric statistics,
//! vocabularies and the product list.
//!
//! [`Fitter`] takes the rows in any number of batches (a table in memory is
//! one batch, a stream of Parquet shards many), keeps only counts, running
//! moments and a fixed-size sample per numeric column (for the quantile
//! bins), and gives the same preprocessing whichever way the rows were cut:
//! so data larger than memory is fitted in one streaming pass.

use std::collections::HashMap;

use chacha20::ChaCha8Rng;
use polars::prelude::*;
use rand::{RngExt, SeedableRng};

use super::{DataError, Table};
use crate::config::Config;
use crate::preprocess::{
    HashedFeature, NumericFeature, NumericReference, Preprocessor, Product, Reference, Vocabulary,
    quantile_edges,
};

/// Fits a [`Preprocessor`] on training rows (never on validation rows, so
/// validation metrics are honest).
pub fn fit(train: &Table, config: &Config) -> Result<Preprocessor, DataError> {
    let mut fitter = Fitter::new(config);
    fitter.update(train)?;
    Ok(fitter.finish())
}

/// Count, mean and sum of squared deviations of one column, merged batch by
/// batch with Chan et al.'s pairwise update: stable in f64 over hundreds of
/// millions of rows, unlike a running sum of squares.
#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Two passes over `values()` (mean, then squared deviations).
    fn of<I: Iterator<Item = f64>>(values: impl Fn() -> I) -> Moments {
        let (mut n, mut sum) = (0.0f64, 0.0f64);
        for v in values() {
            n += 1.0;
            sum += v;
        }
        if n == 0.0 {
            return Moments::default();
        }
        let mean = sum / n;
        let m2 = values().map(|v| (v - mean) * (v - mean)).sum();
        Moments { n, mean, m2 }
    }

    fn merge(self, other: Moments) -> Moments {
        if other.n == 0.0 {
            return self;
        }
        if self.n == 0.0 {
            return other;
        }
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        Moments {
            n,
            mean: self.mean + delta * other.n / n,
            m2: self.m2 + other.m2 + delta * delta * self.n * other.n / n,
        }
    }
}

/// Values kept per numeric column to place its quantile bins: quantiles
/// of a uniform sample of this size are within about half a percentile of
/// the whole column's.
const BIN_SAMPLE: usize = 32_768;

/// A uniform sample of a stream of values (Vitter's algorithm R), seeded,
/// so the same rows in the same order give the same sample however they
/// are batched.
struct Reservoir {
    seen: u64,
    values: Vec<f64>,
    rng: ChaCha8Rng,
}

impl Reservoir {
    fn new(seed: u64) -> Reservoir {
        Reservoir {
            seen: 0,
            values: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn push(&mut self, value: f64) {
        self.seen += 1;
        if self.values.len() < BIN_SAMPLE {
            self.values.push(value);
        } else {
            let slot = self.rng.random_range(0..self.seen);
            if let Some(kept) = self.values.get_mut(slot as usize) {
                *kept = value;
            }
        }
    }
}

/// The state of a fit: moments and a sample per numeric column, counts per
/// categorical and context column.
pub struct Fitter<'a> {
    config: &'a Config,
    numeric: Vec<(NumericFeature, Moments, Reservoir)>,
    categorical: Vec<HashMap<String, u64>>,
    context: Vec<HashMap<String, u64>>,
    /// Rows seen, and per numeric then categorical column the nulls among
    /// them: the reference distribution's missing shares.
    rows: u64,
    nulls: Vec<u64>,
}

impl<'a> Fitter<'a> {
    pub fn new(config: &'a Config) -> Fitter<'a> {
        let columns = &config.columns;
        let numeric = columns
            .numeric
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let feature = NumericFeature {
                    column: name.clone(),
                    log1p: config.preprocess.log1p.contains(name),
                    mean: 0.0,
                    std: 1.0,
                    bins: Vec::new(),
                };
                // A fixed seed: the bins depend on the data alone, not on the
                // training seed.
                let sample = Reservoir::new(j as u64);
                (feature, Moments::default(), sample)
            })
            .collect();
        Fitter {
            config,
            numeric,
            categorical: vec![HashMap::new(); columns.categorical.len()],
            context: vec![HashMap::new(); columns.context.len()],
            rows: 0,
            nulls: vec![0; columns.numeric.len() + columns.categorical.len()],
        }
    }

    /// Adds a batch of canonical training rows.
    pub fn update(&mut self, batch: &Table) -> Result<(), DataError> {
        let polars = |source: PolarsError| DataError::Polars {
            path: batch.source.clone(),
            source,
        };
        let frame = &batch.frame;
        self.rows += frame.height() as u64;
        // The sample places the quantile bins and the drift reference's
        // deciles.
        for (j, (feature, moments, sample)) in self.numeric.iter_mut().enumerate() {
            let values = frame
                .column(&feature.column)
                .map_err(polars)?
                .f64()
                .map_err(polars)?;
            let batch = Moments::of(|| values.iter().flatten().map(|v| feature.raw(v)));
            *moments = moments.merge(batch);
            values
                .iter()
                .flatten()
                .for_each(|v| sample.push(feature.raw(v)));
            self.nulls[j] += values.null_count() as u64;
        }
        let numeric = self.numeric.len();
        for (j, name) in self.config.columns.categorical.iter().enumerate() {
            self.nulls[numeric + j] += frame.column(name).map_err(polars)?.null_count() as u64;
        }
        let columns = &self.config.columns;
        for (names, counts) in [
            (&columns.categorical, &mut self.categorical),
            (&columns.context, &mut self.context),
        ] {
            for (name, counts) in names.iter().zip(counts.iter_mut()) {
                let values = frame.column(name).map_err(polars)?.str().map_err(polars)?;
                for v in values.iter().flatten() {
                    match counts.get_mut(v) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert(v.to_string(), 1);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The fitted preprocessing.
    pub fn finish(self) -> Preprocessor {
        let config = self.config;
        let columns = &config.columns;
        let prep = &config.preprocess;
        let rows = self.rows.max(1) as f64;
        let mut numeric_reference = Vec::new();
        let numeric = self
            .numeric
            .into_iter()
            .zip(&self.nulls)
            .map(|((mut feature, moments, mut sample), &nulls)| {
                let std = (moments.m2 / moments.n).sqrt();
                feature.mean = if moments.n > 0.0 { moments.mean } else { 0.0 };
                feature.std = if std > 1e-12 { std } else { 1.0 };
                feature.bins = quantile_edges(&mut sample.values, prep.numeric_bins);
                numeric_reference.push(numeric_reference_of(
                    &mut sample.values,
                    nulls as f64 / rows,
                ));
                feature
            })
            .collect();
        let vocabularies = |names: &[String], counts: &[HashMap<String, u64>]| -> Vec<Vocabulary> {
            names
                .iter()
                .zip(counts)
                .map(|(name, counts)| {
                    let counts = counts.iter().map(|(value, &n)| (value.clone(), n));
                    Vocabulary::from_counts(name.clone(), counts, prep.min_count, prep.max_vocab)
                })
                .collect()
        };
        let categorical = vocabularies(&columns.categorical, &self.categorical);
        let nulls = &self.nulls[numeric_reference.len()..];
        let categorical_reference = categorical
            .iter()
            .zip(&self.categorical)
            .zip(nulls)
            .map(|((vocabulary, counts), &nulls)| {
                let mut shares = vec![0.0; vocabulary.size()];
                for (value, &n) in counts {
                    shares[vocabulary.index(Some(value)) as usize] += n as f64 / rows;
                }
                shares[vocabulary.index(None) as usize] += nulls as f64 / rows;
                shares
            })
            .collect();
        Preprocessor {
            numeric,
            reference: Some(Reference {
                numeric: numeric_reference,
                categorical: categorical_reference,
            }),
            categorical,
            hashed: columns
                .hashed
                .iter()
                .map(|(column, &buckets)| HashedFeature {
                    column: column.clone(),
                    buckets,
                })
                .collect(),
            offer: columns.offer.clone(),
            no_offer: columns.no_offer.clone(),
            context: vocabularies(&columns.context, &self.context),
            plan: columns.plan.clone(),
            products: config
                .products
                .iter()
                .map(|(name, &value)| Product {
                    name: name.clone(),
                    value,
                })
                .collect(),
        }
    }
}

/// A numeric column's drift reference from a sample of its (transformed)
/// values: decile cut points, the sample's share in each bin scaled to the
/// rows present, then the share missing.
fn numeric_reference_of(sample: &mut [f64], missing: f64) -> NumericReference {
    let edges = quantile_edges(sample, NumericReference::BINS);
    // Every edge but the minimum cuts: a flag's values 0 and 1 get a bin
    // each, and values at or above the training maximum a bin of their own.
    let cuts = edges.get(1..).unwrap_or_default().to_vec();
    let mut reference = NumericReference {
        edges: cuts,
        shares: Vec::new(),
    };
    let mut counts = vec![0usize; reference.edges.len() + 1];
    for &x in sample.iter() {
        counts[reference.bin(Some(x))] += 1;
    }
    let present = 1.0 - missing;
    let n = sample.len().max(1) as f64;
    reference.shares = counts.iter().map(|&c| present * c as f64 / n).collect();
    reference.shares.push(missing);
    reference
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_moments_equal_one_pass() {
        let values: Vec<f64> = (0..1000)
            .map(|i| ((i * 37) % 101) as f64 * 0.5 + 1e6)
            .collect();
        let whole = Moments::of(|| values.iter().copied());
        let merged = values
            .chunks(77)
            .map(|c| Moments::of(|| c.iter().copied()))
            .fold(Moments::default(), Moments::merge);
        assert_eq!(whole.n, merged.n);
        assert!((whole.mean - merged.mean).abs() < 1e-9);
        assert!((whole.m2 - merged.m2).abs() / whole.m2 < 1e-9);
    }
}
