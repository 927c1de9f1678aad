//! Input drift: how the served rows spread over each feature's values,
//! against the training rows' spread saved in the checkpoint
//! ([`Reference`]), as a population stability index per feature. A broken
//! upstream feed (a column gone missing, a unit changed, a new category)
//! shows here before it shows in the decisions.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::preprocess::{Features, NumericReference, Preprocessor, population_stability_index};

/// Counts of the rows a model has scored, per feature and bin.
pub struct Drift {
    /// Per numeric feature: its reference and how to undo standardisation.
    numeric: Vec<(NumericReference, f64, f64)>,
    categorical: Vec<Vec<f64>>,
    /// Numeric features' names, then categorical ones'.
    names: Vec<String>,
    /// Per feature (same order), a count per bin.
    counts: Vec<Vec<AtomicU64>>,
    numeric_width: usize,
    embedded_width: usize,
    rows: AtomicU64,
}

impl Drift {
    /// Counters for the model with `pre`; `None` when its checkpoint has no
    /// reference (written before references existed).
    pub fn new(pre: &Preprocessor) -> Option<Drift> {
        let reference = pre.reference.as_ref()?;
        let numeric: Vec<(NumericReference, f64, f64)> = reference
            .numeric
            .iter()
            .zip(&pre.numeric)
            .map(|(r, f)| (r.clone(), f.mean, f.std))
            .collect();
        let names = pre
            .numeric
            .iter()
            .map(|f| f.column.clone())
            .chain(pre.categorical.iter().map(|v| v.column().to_string()))
            .collect();
        let counts = numeric
            .iter()
            .map(|(r, _, _)| r.shares.len())
            .chain(reference.categorical.iter().map(Vec::len))
            .map(|bins| (0..bins).map(|_| AtomicU64::new(0)).collect())
            .collect();
        Some(Drift {
            numeric,
            categorical: reference.categorical.clone(),
            names,
            counts,
            numeric_width: pre.numeric_width(),
            embedded_width: pre.categorical.len() + pre.hashed.len(),
            rows: AtomicU64::new(0),
        })
    }

    /// Counts the rows of `features` (model inputs, so that the bins are the
    /// training rows' exactly: the same transformation made both).
    pub fn observe(&self, features: &Features) {
        let n = self.numeric.len();
        for row in 0..features.rows {
            let inputs = &features.numeric[row * self.numeric_width..][..self.numeric_width];
            for (j, (reference, mean, std)) in self.numeric.iter().enumerate() {
                let missing = inputs[n + j] > 0.5;
                // The value comes back through f32: a count or a flag that
                // sits on a cut point (most do) may return a hair below it,
                // so it is nudged up by more than that rounding.
                let nudge = 1e-5 * (std + mean.abs());
                let raw = (!missing).then(|| f64::from(inputs[j]) * std + mean + nudge);
                self.counts[j][reference.bin(raw)].fetch_add(1, Ordering::Relaxed);
            }
            let indices = &features.embedded[row * self.embedded_width..];
            for (j, shares) in self.categorical.iter().enumerate() {
                let bin = (indices[j] as usize).min(shares.len() - 1);
                self.counts[n + j][bin].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.rows.fetch_add(features.rows as u64, Ordering::Relaxed);
    }

    /// Rows counted so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Each feature's name and population stability index over the rows
    /// counted so far (`None` before any).
    pub fn stability(&self) -> Vec<(&str, Option<f64>)> {
        let expected = self
            .numeric
            .iter()
            .map(|(r, _, _)| r.shares.as_slice())
            .chain(self.categorical.iter().map(Vec::as_slice));
        self.names
            .iter()
            .zip(expected)
            .zip(&self.counts)
            .map(|((name, expected), counts)| {
                let observed: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                (
                    name.as_str(),
                    population_stability_index(expected, &observed),
                )
            })
            .collect()
    }
}
