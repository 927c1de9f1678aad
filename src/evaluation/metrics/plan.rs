//! The plan-choice head's metrics: accuracy, log loss and the confusion
//! matrix of the plan bought against the plan predicted.

use super::binary::{PROB_EPS, is_probability, is_weight};
use serde::{Deserialize, Serialize};

/// Plan target of a row without a known purchase (the value of
/// `preprocess::NO_PLAN`); such rows are skipped silently.
pub const NO_TARGET: i32 = -1;

/// Streaming metrics of the plan-choice head: a probability distribution over
/// `classes` products per row, scored against the product bought.
///
/// Rows with target [`NO_TARGET`] (no purchase known) are skipped silently;
/// rows with another target outside `0..classes`, a probability that is NaN
/// or outside `[0, 1]`, or an invalid weight are skipped and counted.
///
/// A row is top-`k` correct when its target's rank is below `k`, where the
/// rank counts the classes with a higher probability, plus the classes with
/// an equal probability and a lower index: ties go to the lower index, as
/// with `argmax` in numpy, so that accuracy is deterministic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanMetrics {
    rows: u64,
    skipped_rows: u64,
    /// Σ w.
    weight: f64,
    /// Σ w over rows with rank 0.
    top1: f64,
    /// Σ w over rows with rank < 2.
    top2: f64,
    /// Σ w·(−ln p_target), p clamped.
    log_loss_sum: f64,
    /// `[target][predicted]` weights, row-major over the classes seen in
    /// the first batch; empty until then.
    confusion: Vec<f64>,
    classes: usize,
}

/// What [`PlanMetrics::finish`] reports. Averages are weighted over labelled
/// rows, and `None` when there are none (or their weight is zero).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PlanSummary {
    /// Labelled rows scored.
    pub rows: u64,
    /// Labelled rows left out because a target, probability or weight was
    /// invalid.
    pub skipped_rows: u64,
    /// Share of rows whose target is the most probable class.
    pub accuracy: Option<f64>,
    /// Share of rows whose target is one of the two most probable classes.
    pub top2_accuracy: Option<f64>,
    /// Mean of `-ln p_target`, with `p_target` clamped to
    /// `[1e-7, 1 - 1e-7]`. Rows are not renormalised: the head outputs a
    /// softmax.
    pub log_loss: Option<f64>,
}

impl PlanMetrics {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a batch: `probs` is row-major `[rows, classes]`, `targets` holds
    /// each row's class index or [`NO_TARGET`], `weights` is optional (1 when
    /// `None`).
    ///
    /// # Panics
    ///
    /// If `classes` is 0, if `probs` is not `targets.len() * classes` long, or
    /// if `weights` is not as long as `targets`.
    pub fn update(
        &mut self,
        probs: &[f32],
        classes: usize,
        targets: &[i32],
        weights: Option<&[f32]>,
    ) {
        assert!(classes > 0, "PlanMetrics::update: zero classes");
        assert_eq!(
            Some(probs.len()),
            targets.len().checked_mul(classes),
            "PlanMetrics::update: {} probabilities for {} rows of {} classes",
            probs.len(),
            targets.len(),
            classes
        );
        if let Some(weights) = weights {
            assert_eq!(
                targets.len(),
                weights.len(),
                "PlanMetrics::update: {} targets but {} weights",
                targets.len(),
                weights.len()
            );
        }
        for (i, (row, &target)) in probs.chunks_exact(classes).zip(targets).enumerate() {
            let w = weights.map_or(1.0, |weights| weights[i]);
            self.add(row, target, w);
        }
    }

    /// Adds one row of `row.len()` class probabilities (as
    /// [`update`](Self::update) does for each row).
    pub fn add(&mut self, row: &[f32], target: i32, w: f32) {
        if target == NO_TARGET {
            return;
        }
        let target = match usize::try_from(target) {
            Ok(t) if t < row.len() => t,
            _ => {
                self.skipped_rows += 1;
                return;
            }
        };
        if !(is_weight(w) && row.iter().all(|&p| is_probability(p))) {
            self.skipped_rows += 1;
            return;
        }
        let p_target = row[target];
        let classes = row.len();
        if self.confusion.is_empty() {
            self.classes = classes;
            self.confusion = vec![0.0; classes * classes];
        }
        // Ties go to the lower index, as in the ranks below.
        let predicted = row
            .iter()
            .enumerate()
            .fold(0, |best, (j, &p)| if p > row[best] { j } else { best });
        if classes == self.classes {
            self.confusion[target * classes + predicted] += f64::from(w);
        }
        let rank = row
            .iter()
            .enumerate()
            .filter(|&(j, &p)| p > p_target || (p == p_target && j < target))
            .count();
        let w = f64::from(w);
        self.rows += 1;
        self.weight += w;
        if rank < 1 {
            self.top1 += w;
        }
        if rank < 2 {
            self.top2 += w;
        }
        let clamped = f64::from(p_target).clamp(PROB_EPS, 1.0 - PROB_EPS);
        self.log_loss_sum -= w * clamped.ln();
    }

    /// Adds `other`'s rows to `self`, as if they had been passed to
    /// [`update`](Self::update) (up to floating-point rounding).
    pub fn merge(&mut self, other: &Self) {
        self.rows += other.rows;
        self.skipped_rows += other.skipped_rows;
        self.weight += other.weight;
        self.top1 += other.top1;
        self.top2 += other.top2;
        self.log_loss_sum += other.log_loss_sum;
        if self.confusion.is_empty() {
            self.confusion.clone_from(&other.confusion);
            self.classes = other.classes;
        } else if other.classes == self.classes {
            for (a, b) in self.confusion.iter_mut().zip(&other.confusion) {
                *a += b;
            }
        }
    }

    /// The confusion matrix: `matrix[target][predicted]` is the weight of
    /// rows bought `target` whose most probable class was `predicted`.
    /// Empty before the first scored row.
    #[must_use]
    pub fn confusion(&self) -> Vec<Vec<f64>> {
        self.confusion
            .chunks_exact(self.classes.max(1))
            .map(<[f64]>::to_vec)
            .collect()
    }

    /// The metrics of every row seen so far.
    #[must_use]
    pub fn finish(&self) -> PlanSummary {
        let mean = |sum: f64| (self.weight > 0.0).then(|| sum / self.weight);
        PlanSummary {
            rows: self.rows,
            skipped_rows: self.skipped_rows,
            accuracy: mean(self.top1),
            top2_accuracy: mean(self.top2),
            log_loss: mean(self.log_loss_sum),
        }
    }
}
