//! Streaming evaluation metrics for the conversion and plan-choice heads.
//!
//! Training (validation after each epoch) and serving (offline evaluation of
//! a checkpoint) must report the same numbers, so both use these
//! accumulators. Each one takes batches through `update`, keeps a fixed
//! amount of state whatever the number of rows (about 1 MiB for
//! [`BinaryMetrics`], a few words for [`PlanMetrics`]), and combines with
//! another through `merge`, so per-thread or per-shard accumulators can be
//! reduced at the end. `finish` turns the state into a serialisable summary.
//!
//! Sums are kept in `f64`: an `f32` sum of 100M unit weights would stop
//! growing at 2^24 ≈ 16.8M. This module depends on std and serde only, so that
//! serving crates can use it without the training stack.
//!
//! Rows that cannot be scored (a NaN or out-of-range probability, a label
//! outside `[0, 1]`, a negative or non-finite weight, an out-of-range plan
//! index) are not fatal, because they come from data: they are left out of
//! every metric and counted in the summary's `skipped_rows`, so a broken
//! batch shows up instead of poisoning the averages with NaN.

use serde::{Deserialize, Serialize};

/// Probabilities are clamped to `[PROB_EPS, 1 - PROB_EPS]` before taking
/// logarithms, so one confident mistake costs at most `-ln(1e-7) ≈ 16.1`
/// rather than infinity (the same clipping as scikit-learn's `log_loss`).
pub const PROB_EPS: f64 = 1e-7;

/// Number of histogram bins behind [`BinaryMetrics`]' AUC.
pub const AUC_BINS: usize = 1 << 16;

/// The histogram covers logits in `[-AUC_LOGIT_MAX, AUC_LOGIT_MAX]`, which
/// contains every clamped probability (`logit(1 - 1e-7) ≈ 16.118`).
pub const AUC_LOGIT_MAX: f64 = 16.2;

/// Width of one AUC bin in logit units: `2 · 16.2 / 65536 ≈ 4.94e-4`.
pub const AUC_BIN_WIDTH: f64 = 2.0 * AUC_LOGIT_MAX / AUC_BINS as f64;

/// Plan target of a row without a known purchase (the value of
/// `preprocess::NO_PLAN`); such rows are skipped silently.
pub const NO_TARGET: i32 = -1;

/// Streaming metrics of a binary probability (the conversion head).
///
/// Labels may be fractional: a row with label `y` and weight `w` counts as
/// weight `w·y` of positives and `w·(1 - y)` of negatives, which for 0/1
/// labels is the usual definition. A weight of 2 is the same as the row
/// appearing twice.
///
/// # AUC approximation
///
/// ROC AUC is computed from a histogram of the predictions in logit space:
/// [`AUC_BINS`] = 65536 equal bins over logits `[-16.2, 16.2]`, so a bin is
/// [`AUC_BIN_WIDTH`] ≈ 4.94e-4 wide in logit, i.e. spans a relative change of
/// about 0.05% in `p / (1 - p)` (for `p = 3%`, a bin is about `1.4e-5` wide
/// in probability). Logit bins resolve small conversion probabilities as
/// finely as the middle of the range, where a uniform grid over `[0, 1]`
/// would not.
///
/// Binning is monotone, so a positive/negative pair in different bins is
/// ranked exactly as by the exact AUC; a pair in the same bin counts as half
/// (the trapezoid rule), while the exact AUC gives it 0, ½ or 1. Hence the
/// bound, which holds for every data set:
///
/// ```text
/// |auc - auc_exact| <= ½ · Σ_b P_b · N_b / (P · N)  =: auc_error_bound
/// ```
///
/// where `P_b`, `N_b` are the positive and negative weight in bin `b` and
/// `P`, `N` the totals. The summary reports this bound. A priori it is at most
/// half the largest share of the negatives that falls into one bin; for
/// negatives whose logits have a density of at most `g` per logit unit it is
/// at most `½ · g · 4.94e-4`, e.g. `≤ 1e-4` for `g = 0.4` (logits spread with a
/// standard deviation of 1; about 5.6e-5 on the 100k-row test sample). It is
/// conservative: pairs that tie exactly count in it although they contribute
/// no error, and within a bin the pairs ordered either way largely cancel, so
/// the actual error is usually one to two orders of magnitude smaller (7e-7
/// on that sample). Probabilities below `1e-7` (above `1 - 1e-7`) share the
/// first (last) bin.
#[derive(Clone, Default)]
pub struct BinaryMetrics {
    rows: u64,
    skipped_rows: u64,
    /// Σ w.
    weight: f64,
    /// Σ w·y.
    positives: f64,
    /// Σ w·p.
    prediction_sum: f64,
    /// Σ w·(−y ln p − (1 − y) ln(1 − p)), p clamped.
    log_loss_sum: f64,
    /// Σ w·(p − y)².
    brier_sum: f64,
    /// Positive weight per bin; empty until the first scored row, so an
    /// unused accumulator costs nothing.
    bin_positives: Vec<f64>,
    /// Negative weight per bin; same length as `bin_positives`.
    bin_negatives: Vec<f64>,
    /// Σ w·p per bin, for reliability diagrams and calibration error.
    bin_predictions: Vec<f64>,
    /// Number of bins; 0 means [`AUC_BINS`].
    bins: usize,
}

/// What [`BinaryMetrics::finish`] reports. Averages are weighted, and `None`
/// when the total weight is zero.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BinarySummary {
    /// Rows scored, including rows of weight 0.
    pub rows: u64,
    /// Rows left out because a probability, label or weight was invalid.
    pub skipped_rows: u64,
    /// Weighted number of positives, Σ w·y.
    pub positives: f64,
    /// ROC AUC from the histogram; `None` unless both classes have positive
    /// weight.
    pub auc: Option<f64>,
    /// Guaranteed bound on `|auc - exact AUC|` (see [`BinaryMetrics`]).
    pub auc_error_bound: Option<f64>,
    /// Mean negative log-likelihood (natural log), probabilities clamped to
    /// `[1e-7, 1 - 1e-7]`.
    pub log_loss: Option<f64>,
    /// Mean squared error of the probability, `(p - y)²`.
    pub brier: Option<f64>,
    /// Mean predicted probability; compare with `base_rate` for calibration.
    pub mean_prediction: Option<f64>,
    /// Mean label, Σ w·y / Σ w.
    pub base_rate: Option<f64>,
    /// Area under the precision-recall curve as average precision (the
    /// step-wise sum of scikit-learn's `average_precision_score`), with the
    /// predictions in one histogram bin taken as one threshold.
    #[serde(default)]
    pub pr_auc: Option<f64>,
    /// Expected calibration error over [`ECE_BINS`] equal-width probability
    /// bins: Σ_b (W_b / W) · |mean prediction_b - observed rate_b|.
    #[serde(default)]
    pub ece: Option<f64>,
    /// The same over [`ECE_BINS`] bins of equal weight, which resolves the
    /// low probabilities where conversions live.
    #[serde(default)]
    pub ece_equal_count: Option<f64>,
}

/// Bins of the expected calibration errors in [`BinarySummary`] (Guo et al.,
/// 2017, use 15).
pub const ECE_BINS: usize = 15;

/// How [`BinaryMetrics::reliability`] groups predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binning {
    /// Equal-width probability intervals `[k/n, (k+1)/n)`.
    EqualWidth,
    /// Consecutive groups of (about) equal weight, in increasing score.
    EqualCount,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Total weight of the rows in the bin.
    pub weight: f64,
    /// Weighted mean predicted probability.
    pub mean_prediction: f64,
    /// Weighted mean label.
    pub observed_rate: f64,
}

impl BinaryMetrics {
    /// An empty accumulator. Allocates nothing until the first row.
    pub fn new() -> Self {
        Self::default()
    }

    /// An accumulator with `bins` histogram bins instead of [`AUC_BINS`]:
    /// `24 · bins` bytes of state, for many small accumulators (per segment).
    /// The AUC error bound grows accordingly and is reported as before.
    ///
    /// # Panics
    ///
    /// If `bins` is 0.
    pub fn with_bins(bins: usize) -> Self {
        assert!(bins > 0, "BinaryMetrics::with_bins: zero bins");
        BinaryMetrics {
            bins,
            ..Self::default()
        }
    }

    fn bin_count(&self) -> usize {
        if self.bins == 0 { AUC_BINS } else { self.bins }
    }

    /// Adds a batch of predicted probabilities `probs` with `labels` in
    /// `[0, 1]` and optional non-negative `weights` (1 when `None`).
    ///
    /// Invalid rows are skipped and counted (see the module documentation).
    ///
    /// # Panics
    ///
    /// If `labels` or `weights` is not as long as `probs`: that is a bug in
    /// the caller, not bad data.
    pub fn update(&mut self, probs: &[f32], labels: &[f32], weights: Option<&[f32]>) {
        assert_eq!(
            probs.len(),
            labels.len(),
            "BinaryMetrics::update: {} probabilities but {} labels",
            probs.len(),
            labels.len()
        );
        match weights {
            None => {
                for (&p, &y) in probs.iter().zip(labels) {
                    self.add(p, y, 1.0);
                }
            }
            Some(weights) => {
                assert_eq!(
                    probs.len(),
                    weights.len(),
                    "BinaryMetrics::update: {} probabilities but {} weights",
                    probs.len(),
                    weights.len()
                );
                for ((&p, &y), &w) in probs.iter().zip(labels).zip(weights) {
                    self.add(p, y, w);
                }
            }
        }
    }

    /// Adds one row (as [`update`](Self::update) does for each).
    pub fn add(&mut self, p: f32, y: f32, w: f32) {
        if !(is_probability(p) && is_probability(y) && is_weight(w)) {
            self.skipped_rows += 1;
            return;
        }
        if self.bin_positives.is_empty() {
            let bins = self.bin_count();
            self.bin_positives = vec![0.0; bins];
            self.bin_negatives = vec![0.0; bins];
            self.bin_predictions = vec![0.0; bins];
        }
        let (p, y, w) = (f64::from(p), f64::from(y), f64::from(w));
        let clamped = p.clamp(PROB_EPS, 1.0 - PROB_EPS);
        let ln_p = clamped.ln();
        let ln_q = (1.0 - clamped).ln();

        self.rows += 1;
        self.weight += w;
        self.positives += w * y;
        self.prediction_sum += w * p;
        self.log_loss_sum -= w * (y * ln_p + (1.0 - y) * ln_q);
        self.brier_sum += w * (p - y) * (p - y);

        let bin = logit_bin(ln_p - ln_q, self.bin_positives.len());
        self.bin_positives[bin] += w * y;
        self.bin_negatives[bin] += w * (1.0 - y);
        self.bin_predictions[bin] += w * p;
    }

    /// Adds `other`'s rows to `self`, as if they had been passed to
    /// [`update`](Self::update). Sums are added in another order than a
    /// single pass would, so results agree up to floating-point rounding.
    pub fn merge(&mut self, other: &Self) {
        self.rows += other.rows;
        self.skipped_rows += other.skipped_rows;
        self.weight += other.weight;
        self.positives += other.positives;
        self.prediction_sum += other.prediction_sum;
        self.log_loss_sum += other.log_loss_sum;
        self.brier_sum += other.brier_sum;
        if other.bin_positives.is_empty() {
            return;
        }
        if self.bin_positives.is_empty() {
            self.bin_positives.clone_from(&other.bin_positives);
            self.bin_negatives.clone_from(&other.bin_negatives);
            self.bin_predictions.clone_from(&other.bin_predictions);
            return;
        }
        assert_eq!(
            self.bin_positives.len(),
            other.bin_positives.len(),
            "BinaryMetrics::merge: accumulators with different bin counts"
        );
        for (a, b) in self.bin_positives.iter_mut().zip(&other.bin_positives) {
            *a += b;
        }
        for (a, b) in self.bin_negatives.iter_mut().zip(&other.bin_negatives) {
            *a += b;
        }
        for (a, b) in self.bin_predictions.iter_mut().zip(&other.bin_predictions) {
            *a += b;
        }
    }

    /// The metrics of every row seen so far. Does not consume the
    /// accumulator, so running metrics can be reported mid-evaluation.
    #[must_use]
    pub fn finish(&self) -> BinarySummary {
        let mean = |sum: f64| (self.weight > 0.0).then(|| sum / self.weight);
        let auc = auc_from_groups(
            self.bin_positives
                .iter()
                .copied()
                .zip(self.bin_negatives.iter().copied()),
        );
        BinarySummary {
            rows: self.rows,
            skipped_rows: self.skipped_rows,
            positives: self.positives,
            auc: auc.map(|a| a.auc),
            auc_error_bound: auc.map(|a| a.tie_fraction / 2.0),
            log_loss: mean(self.log_loss_sum),
            brier: mean(self.brier_sum),
            mean_prediction: mean(self.prediction_sum),
            base_rate: mean(self.positives),
            pr_auc: self.average_precision(),
            ece: self.ece(Binning::EqualWidth, ECE_BINS),
            ece_equal_count: self.ece(Binning::EqualCount, ECE_BINS),
        }
    }

    /// Rows scored so far, as [`finish`](Self::finish) reports them, without
    /// computing the rest.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Histogram bins as (positive, negative, Σ w·p) in increasing score.
    fn groups(&self) -> impl DoubleEndedIterator<Item = (f64, f64, f64)> + '_ {
        self.bin_positives
            .iter()
            .zip(&self.bin_negatives)
            .zip(&self.bin_predictions)
            .map(|((&pos, &neg), &pred)| (pos, neg, pred))
    }

    /// Average precision: Σ over thresholds, from the highest, of the
    /// recall gained times the precision there. `None` without positives.
    #[must_use]
    pub fn average_precision(&self) -> Option<f64> {
        if self.positives <= 0.0 || self.positives.is_nan() {
            return None;
        }
        let (mut tp, mut fp, mut ap) = (0.0, 0.0, 0.0);
        for (pos, neg, _) in self.groups().rev() {
            if pos + neg <= 0.0 {
                continue;
            }
            tp += pos;
            fp += neg;
            ap += pos / self.positives * (tp / (tp + fp));
        }
        Some(ap.clamp(0.0, 1.0))
    }

    /// The reliability diagram: `n` bins of predictions, each with its mean
    /// prediction and observed rate. Rows are grouped by histogram bin, so
    /// a bin edge falls within one histogram bin's width (≈ 0.05% in odds)
    /// of where it would fall row by row. Empty bins are left out.
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    #[must_use]
    pub fn reliability(&self, binning: Binning, n: usize) -> Vec<CalibrationBin> {
        assert!(n > 0, "BinaryMetrics::reliability: zero bins");
        let mut sums = vec![(0.0f64, 0.0f64, 0.0f64); n];
        let mut cumulative = 0.0;
        for (pos, neg, pred) in self.groups() {
            let weight = pos + neg;
            if weight <= 0.0 {
                continue;
            }
            let k = match binning {
                // The bin of the histogram bin's mean prediction.
                Binning::EqualWidth => ((pred / weight * n as f64) as usize).min(n - 1),
                // The bin of the histogram bin's middle in cumulative weight.
                Binning::EqualCount => {
                    (((cumulative + weight / 2.0) / self.weight * n as f64) as usize).min(n - 1)
                }
            };
            cumulative += weight;
            sums[k].0 += weight;
            sums[k].1 += pred;
            sums[k].2 += pos;
        }
        sums.into_iter()
            .filter(|&(weight, _, _)| weight > 0.0)
            .map(|(weight, pred, pos)| CalibrationBin {
                weight,
                mean_prediction: pred / weight,
                observed_rate: pos / weight,
            })
            .collect()
    }

    /// Expected calibration error over `n` bins; `None` without rows.
    #[must_use]
    pub fn ece(&self, binning: Binning, n: usize) -> Option<f64> {
        (self.weight > 0.0).then(|| {
            self.reliability(binning, n)
                .iter()
                .map(|b| b.weight * (b.mean_prediction - b.observed_rate).abs())
                .sum::<f64>()
                / self.weight
        })
    }

    /// The ROC curve as (false positive rate, true positive rate) from the
    /// highest threshold down, starting at (0, 0) and ending at (1, 1), with
    /// at most about `max_points` points (thresholds are merged evenly by
    /// rank). Empty unless both classes are present.
    #[must_use]
    pub fn roc_curve(&self, max_points: usize) -> Vec<(f64, f64)> {
        let negatives = self.weight - self.positives;
        if !(self.positives > 0.0 && negatives > 0.0) {
            return Vec::new();
        }
        self.cumulative_curve(max_points, |tp, fp| (fp / negatives, tp / self.positives))
    }

    /// The cumulative gains curve: (share of the weight targeted, share of
    /// the positives captured) when targeting the highest scores first.
    /// Empty without positives.
    #[must_use]
    pub fn gains_curve(&self, max_points: usize) -> Vec<(f64, f64)> {
        if self.positives <= 0.0 || self.positives.is_nan() {
            return Vec::new();
        }
        self.cumulative_curve(max_points, |tp, fp| {
            ((tp + fp) / self.weight, tp / self.positives)
        })
    }

    fn cumulative_curve(
        &self,
        max_points: usize,
        point: impl Fn(f64, f64) -> (f64, f64),
    ) -> Vec<(f64, f64)> {
        let used: Vec<(f64, f64)> = self
            .groups()
            .rev()
            .filter(|(pos, neg, _)| pos + neg > 0.0)
            .map(|(pos, neg, _)| (pos, neg))
            .collect();
        let stride = used.len().div_ceil(max_points.max(1)).max(1);
        let mut curve = vec![point(0.0, 0.0)];
        let (mut tp, mut fp) = (0.0, 0.0);
        for (i, (pos, neg)) in used.iter().enumerate() {
            tp += pos;
            fp += neg;
            if (i + 1) % stride == 0 || i + 1 == used.len() {
                curve.push(point(tp, fp));
            }
        }
        curve
    }
}

impl std::fmt::Debug for BinaryMetrics {
    /// Prints the summary rather than 131072 bin weights.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryMetrics")
            .field("summary", &self.finish())
            .finish_non_exhaustive()
    }
}

/// In `[0, 1]`; false for NaN.
fn is_probability(x: f32) -> bool {
    (0.0..=1.0).contains(&x)
}

/// Finite and non-negative; false for NaN.
fn is_weight(w: f32) -> bool {
    w.is_finite() && w >= 0.0
}

/// The bin of a logit. Monotone in `z`: the logits of distinct `f32`
/// probabilities differ by at least ~6e-8, far more than the ~1e-15 rounding
/// error of computing them in `f64`, so binning never swaps two predictions.
fn logit_bin(z: f64, bins: usize) -> usize {
    let scale = bins as f64 / (2.0 * AUC_LOGIT_MAX);
    // `as` saturates (and maps NaN to 0), so this cannot index out of range.
    (((z + AUC_LOGIT_MAX) * scale) as usize).min(bins - 1)
}

#[derive(Clone, Copy)]
struct Auc {
    auc: f64,
    /// Fraction of positive/negative pair weight within one group.
    tie_fraction: f64,
}

/// AUC from groups of (positive weight, negative weight) in increasing score
/// order. A pair in different groups counts 1 when the positive is in the
/// later group; a pair in the same group counts ½. Shared by the histogram
/// and the exact AUC so that both use one tie rule.
fn auc_from_groups(groups: impl Iterator<Item = (f64, f64)>) -> Option<Auc> {
    let (mut positives, mut negatives) = (0.0, 0.0);
    let (mut wins, mut ties) = (0.0, 0.0);
    for (pos, neg) in groups {
        wins += pos * negatives;
        ties += pos * neg;
        positives += pos;
        negatives += neg;
    }
    let pairs = positives * negatives;
    (positives > 0.0 && negatives > 0.0 && pairs.is_finite()).then(|| Auc {
        auc: ((wins + 0.5 * ties) / pairs).clamp(0.0, 1.0),
        tie_fraction: ties / pairs,
    })
}

/// Exact ROC AUC by sorting: the probability that a random positive scores
/// above a random negative, exact ties counting ½ (the trapezoid rule, as in
/// scikit-learn's `roc_auc_score`). Labels may be fractional, as in
/// [`BinaryMetrics`]. Rows with a NaN score or a label outside `[0, 1]` are
/// ignored. `None` unless both classes are present.
///
/// Needs O(n) memory and O(n log n) time: the reference for tests and small
/// sets; use [`BinaryMetrics`] for large ones.
///
/// # Panics
///
/// If `labels` is not as long as `probs`.
#[must_use]
pub fn auc_exact(probs: &[f32], labels: &[f32]) -> Option<f64> {
    assert_eq!(
        probs.len(),
        labels.len(),
        "auc_exact: {} probabilities but {} labels",
        probs.len(),
        labels.len()
    );
    let mut rows: Vec<(f32, f32)> = probs
        .iter()
        .copied()
        .zip(labels.iter().copied())
        .filter(|&(p, y)| !p.is_nan() && (0.0..=1.0).contains(&y))
        .collect();
    // No NaN is left, so `partial_cmp` always answers; -0.0 and 0.0 tie.
    rows.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let groups = rows.chunk_by(|a, b| a.0 == b.0).map(|group| {
        group.iter().fold((0.0, 0.0), |(pos, neg), &(_, y)| {
            let y = f64::from(y);
            (pos + y, neg + (1.0 - y))
        })
    });
    auc_from_groups(groups).map(|a| a.auc)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[track_caller]
    fn assert_close(actual: Option<f64>, expected: f64, tol: f64) {
        let actual = actual.expect("metric is None");
        assert!(
            close(actual, expected, tol),
            "{actual} != {expected} (tolerance {tol})"
        );
    }

    fn binary(probs: &[f32], labels: &[f32], weights: Option<&[f32]>) -> BinarySummary {
        let mut m = BinaryMetrics::new();
        m.update(probs, labels, weights);
        m.finish()
    }

    /// Summaries equal up to rounding, ignoring the unweighted row count.
    #[track_caller]
    fn assert_binary_close(a: &BinarySummary, b: &BinarySummary, tol: f64) {
        assert_eq!(a.skipped_rows, b.skipped_rows);
        assert!(close(a.positives, b.positives, tol), "{a:?} vs {b:?}");
        let fields = |s: &BinarySummary| {
            [
                s.auc,
                s.auc_error_bound,
                s.log_loss,
                s.brier,
                s.mean_prediction,
                s.base_rate,
            ]
        };
        for (x, y) in fields(a).into_iter().zip(fields(b)) {
            match (x, y) {
                (Some(x), Some(y)) => assert!(close(x, y, tol), "{a:?} vs {b:?}"),
                (x, y) => assert_eq!(x, y, "{a:?} vs {b:?}"),
            }
        }
    }

    /// Knuth's MMIX LCG; the top 24 bits give a uniform in [0, 1).
    struct Lcg(u64);

    impl Lcg {
        fn uniform(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 40) as f64 / (1u64 << 24) as f64
        }
    }

    /// A calibrated conversion model: logits ~ N(-3.5, 1) (Irwin-Hall
    /// approximation), labels drawn with that probability; base rate ≈ 4.5%.
    fn conversion_sample(rows: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Lcg(seed);
        (0..rows)
            .map(|_| {
                let normal = (0..12).map(|_| rng.uniform()).sum::<f64>() - 6.0;
                let p = 1.0 / (1.0 + (3.5 - normal).exp());
                let y = if rng.uniform() < p { 1.0 } else { 0.0 };
                (p as f32, y)
            })
            .unzip()
    }

    #[test]
    fn auc_of_the_scikit_learn_example() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        // == 0.75 (its documentation's example): 3 of the 4 pairs are ordered.
        let (probs, labels) = ([0.1, 0.4, 0.35, 0.8], [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(auc_exact(&probs, &labels), Some(0.75));
        let summary = binary(&probs, &labels, None);
        assert_eq!(summary.auc, Some(0.75));
        // Every prediction has a bin of its own.
        assert_eq!(summary.auc_error_bound, Some(0.0));
    }

    #[test]
    fn perfect_and_inverse_rankings() {
        let probs = [0.1, 0.2, 0.8, 0.9];
        let labels = [0.0, 0.0, 1.0, 1.0];
        let inverse = [1.0, 1.0, 0.0, 0.0];
        assert_eq!(auc_exact(&probs, &labels), Some(1.0));
        assert_eq!(auc_exact(&probs, &inverse), Some(0.0));
        assert_eq!(binary(&probs, &labels, None).auc, Some(1.0));
        assert_eq!(binary(&probs, &inverse, None).auc, Some(0.0));
    }

    #[test]
    fn ties_count_half() {
        // All tied: every pair counts ½.
        let labels = [0.0, 1.0, 0.0, 1.0, 1.0];
        assert_eq!(auc_exact(&[0.3; 5], &labels), Some(0.5));
        let summary = binary(&[0.3; 5], &labels, None);
        assert_eq!(summary.auc, Some(0.5));
        assert_eq!(summary.auc_error_bound, Some(0.5));
        // Pairs (pos, neg): (0.5, 0.2) = 1, (0.5, 0.5) = ½, (0.9, 0.2) = 1,
        // (0.9, 0.5) = 1, so 3.5 / 4; sklearn's roc_auc_score agrees.
        let (probs, labels) = ([0.2, 0.5, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(auc_exact(&probs, &labels), Some(0.875));
        assert_eq!(binary(&probs, &labels, None).auc, Some(0.875));
        // -0.0 and 0.0 are the same score.
        assert_eq!(auc_exact(&[-0.0, 0.0], &[1.0, 0.0]), Some(0.5));
    }

    #[test]
    fn auc_needs_both_classes() {
        assert_eq!(auc_exact(&[0.1, 0.9], &[1.0, 1.0]), None);
        assert_eq!(auc_exact(&[], &[]), None);
        let summary = binary(&[0.1, 0.9], &[0.0, 0.0], None);
        assert_eq!(summary.auc, None);
        assert_eq!(summary.auc_error_bound, None);
        assert_eq!(summary.base_rate, Some(0.0));
        let empty = BinaryMetrics::new().finish();
        assert_eq!(empty.rows, 0);
        assert_eq!(empty.auc, None);
        assert_eq!(empty.log_loss, None);
        assert_eq!(empty.mean_prediction, None);
    }

    #[test]
    fn histogram_auc_is_within_its_bound_of_the_exact_auc() {
        let (probs, labels) = conversion_sample(100_000, 42);
        let exact = auc_exact(&probs, &labels).unwrap();
        let summary = binary(&probs, &labels, None);
        let (auc, bound) = (summary.auc.unwrap(), summary.auc_error_bound.unwrap());
        let error = (auc - exact).abs();
        assert!(error <= bound, "error {error} > bound {bound}");
        // The documented a priori bound: ½ · 0.4 · 4.94e-4 for unit-variance
        // logits.
        assert!(bound <= 1e-4, "bound {bound}");
        // Within-bin pairs mostly cancel: the actual error (7e-7) is far
        // below the bound (5.6e-5).
        assert!(error <= bound / 10.0, "error {error}, bound {bound}");
        // A calibrated model: mean prediction ≈ base rate ≈ 4.5%.
        let base_rate = summary.base_rate.unwrap();
        assert!((0.03..0.06).contains(&base_rate), "{base_rate}");
        assert!((summary.mean_prediction.unwrap() - base_rate).abs() < 0.003);
        // N(0, 1) logits give AUC ≈ 0.74 at this base rate.
        assert!((0.7..0.8).contains(&exact), "{exact}");
    }

    #[test]
    fn log_loss_brier_and_means_by_hand() {
        // sklearn.metrics.log_loss([1, 0], [0.9, 0.2])
        // = -(ln 0.9 + ln 0.8) / 2 = (0.1053605 + 0.2231436) / 2 = 0.1642520.
        // Brier: (0.1² + 0.2²) / 2 = 0.025.
        let s = binary(&[0.9, 0.2], &[1.0, 0.0], None);
        assert_eq!(s.rows, 2);
        assert_eq!(s.positives, 1.0);
        assert_close(s.log_loss, 0.164_252_033_486_018_1, 1e-7);
        assert_close(s.brier, 0.025, 1e-7);
        assert_close(s.mean_prediction, 0.55, 1e-7);
        assert_close(s.base_rate, 0.5, 0.0);
    }

    #[test]
    fn log_loss_clamps_certain_predictions() {
        // A certain miss costs -ln(1e-7) = 7 ln 10 = 16.118095650958319.
        let s = binary(&[0.0], &[1.0], None);
        assert_close(s.log_loss, 16.118_095_650_958_32, 1e-9);
        assert_close(s.brier, 1.0, 0.0);
        // A certain hit costs -ln(1 - 1e-7) ≈ 1e-7.
        let s = binary(&[1.0, 0.0], &[1.0, 0.0], None);
        assert_close(s.log_loss, 1.000_000_05e-7, 1e-14);
    }

    #[test]
    fn fractional_labels_split_a_row_between_classes() {
        // y = 0.25 at p = 0.5: log loss is ln 2 whatever y; Brier (0.25)².
        let s = binary(&[0.5], &[0.25], None);
        assert_close(s.log_loss, std::f64::consts::LN_2, 1e-12);
        assert_close(s.brier, 0.0625, 0.0);
        assert_eq!(s.positives, 0.25);
    }

    #[test]
    fn weight_two_equals_duplicating_the_row() {
        let probs = [0.1, 0.4, 0.35, 0.8];
        let labels = [0.0, 0.0, 1.0, 1.0];
        let weighted = binary(&probs, &labels, Some(&[1.0, 2.0, 1.0, 1.0]));
        let duplicated = binary(
            &[0.1, 0.4, 0.4, 0.35, 0.8],
            &[0.0, 0.0, 0.0, 1.0, 1.0],
            None,
        );
        assert_binary_close(&weighted, &duplicated, 1e-12);
        // Negatives 0.1 (weight 1) and 0.4 (weight 2): 0.35 beats 1 of 3,
        // 0.8 beats all 3, so AUC = 4 / 6.
        assert_close(weighted.auc, 2.0 / 3.0, 1e-12);
        assert_eq!(weighted.rows, 4);
        assert_eq!(weighted.positives, 2.0);
        // Weight 0 is the same as leaving the row out.
        let zero = binary(&probs, &labels, Some(&[1.0, 0.0, 1.0, 1.0]));
        let left_out = binary(&[0.1, 0.35, 0.8], &[0.0, 1.0, 1.0], None);
        assert_binary_close(&zero, &left_out, 1e-12);
    }

    #[test]
    fn invalid_rows_are_skipped_and_counted() {
        let probs = [0.9, f32::NAN, 0.5, 0.5, 1.5, 0.2, 0.5];
        let labels = [1.0, 1.0, 2.0, 1.0, 0.0, 0.0, f32::NAN];
        let weights = [1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0];
        let s = binary(&probs, &labels, Some(&weights));
        assert_eq!(s.skipped_rows, 5);
        let clean = binary(&[0.9, 0.2], &[1.0, 0.0], None);
        assert_eq!(s.rows, 2);
        assert_binary_close(
            &s,
            &BinarySummary {
                skipped_rows: 5,
                ..clean
            },
            0.0,
        );
        let s = binary(&[0.5], &[1.0], Some(&[f32::INFINITY]));
        assert_eq!((s.rows, s.skipped_rows, s.log_loss), (0, 1, None));
    }

    #[test]
    fn merge_equals_a_single_pass() {
        let (probs, labels) = conversion_sample(30_000, 7);
        let weights: Vec<f32> = (0..probs.len()).map(|i| (i % 3) as f32).collect();
        let mut single = BinaryMetrics::new();
        single.update(&probs, &labels, Some(&weights));

        let mut merged = BinaryMetrics::new();
        // An empty accumulator merges as a no-op, on either side.
        merged.merge(&BinaryMetrics::new());
        for ((p, y), w) in probs
            .chunks(7_000)
            .zip(labels.chunks(7_000))
            .zip(weights.chunks(7_000))
        {
            let mut part = BinaryMetrics::new();
            part.update(p, y, Some(w));
            merged.merge(&part);
        }
        merged.merge(&BinaryMetrics::new());
        let (a, b) = (single.finish(), merged.finish());
        assert_eq!(a.rows, b.rows);
        assert_binary_close(&a, &b, 1e-9);
    }

    #[test]
    #[should_panic(expected = "labels")]
    fn mismatched_lengths_panic() {
        BinaryMetrics::new().update(&[0.5, 0.5], &[1.0], None);
    }

    #[test]
    #[should_panic(expected = "weights")]
    fn mismatched_weights_panic() {
        BinaryMetrics::new().update(&[0.5], &[1.0], Some(&[1.0, 1.0]));
    }

    /// Rows: target 0 is first (top-1), target 2 is second (top-2 only),
    /// target 2 is third (neither), and an unlabelled row.
    const PLAN_PROBS: [f32; 12] = [
        0.7, 0.2, 0.1, //
        0.2, 0.5, 0.3, //
        0.6, 0.3, 0.1, //
        0.1, 0.1, 0.8,
    ];
    const PLAN_TARGETS: [i32; 4] = [0, 2, 2, NO_TARGET];

    #[test]
    fn plan_metrics_by_hand() {
        let mut m = PlanMetrics::new();
        m.update(&PLAN_PROBS, 3, &PLAN_TARGETS, None);
        let s = m.finish();
        assert_eq!((s.rows, s.skipped_rows), (3, 0));
        assert_close(s.accuracy, 1.0 / 3.0, 1e-12);
        // sklearn.metrics.top_k_accuracy_score([0, 2, 2], probs, k=2) = 2/3.
        assert_close(s.top2_accuracy, 2.0 / 3.0, 1e-12);
        // sklearn.metrics.log_loss([0, 2, 2], probs) =
        // -(ln 0.7 + ln 0.3 + ln 0.1) / 3
        // = (0.3566749 + 1.2039728 + 2.3025851) / 3 = 1.2877443.
        assert_close(s.log_loss, 1.287_744_277_086_484, 1e-7);
    }

    #[test]
    fn plan_ties_go_to_the_lower_index() {
        let probs = [0.4, 0.4, 0.2, 0.4, 0.4, 0.2];
        let mut m = PlanMetrics::new();
        m.update(&probs, 3, &[0, 1], None);
        let s = m.finish();
        assert_close(s.accuracy, 0.5, 0.0);
        assert_close(s.top2_accuracy, 1.0, 0.0);
    }

    #[test]
    fn plan_rows_without_a_target_are_ignored() {
        let mut m = PlanMetrics::new();
        m.update(&PLAN_PROBS[9..], 3, &[NO_TARGET], None);
        m.update(&[], 3, &[], None);
        let s = m.finish();
        assert_eq!(
            s,
            PlanSummary {
                rows: 0,
                skipped_rows: 0,
                accuracy: None,
                top2_accuracy: None,
                log_loss: None,
            }
        );
        // An unlabelled row's weight does not matter, even if invalid.
        let mut weighted = PlanMetrics::new();
        weighted.update(
            &PLAN_PROBS,
            3,
            &PLAN_TARGETS,
            Some(&[1.0, 1.0, 1.0, f32::NAN]),
        );
        let mut plain = PlanMetrics::new();
        plain.update(&PLAN_PROBS[..9], 3, &PLAN_TARGETS[..3], None);
        assert_eq!(weighted, plain);
    }

    #[test]
    fn plan_invalid_rows_are_skipped_and_counted() {
        let probs = [
            [0.7, 0.2, 0.1],      // valid, correct
            [0.5, 0.5, 0.0],      // target 3 out of range
            [f32::NAN, 0.5, 0.5], // NaN probability
            [0.5, 0.5, 0.0],      // target -2
            [0.5, 0.5, 0.0],      // negative weight
        ]
        .concat();
        let mut m = PlanMetrics::new();
        m.update(
            &probs,
            3,
            &[0, 3, 1, -2, 0],
            Some(&[1.0, 1.0, 1.0, 1.0, -1.0]),
        );
        let s = m.finish();
        assert_eq!((s.rows, s.skipped_rows), (1, 4));
        assert_close(s.accuracy, 1.0, 0.0);
    }

    #[test]
    fn plan_weight_two_equals_duplicating_the_row() {
        let mut weighted = PlanMetrics::new();
        weighted.update(&PLAN_PROBS, 3, &PLAN_TARGETS, Some(&[1.0, 2.0, 1.0, 1.0]));
        let mut duplicated = PlanMetrics::new();
        let mut probs = PLAN_PROBS[..6].to_vec();
        probs.extend_from_slice(&PLAN_PROBS[3..]);
        duplicated.update(&probs, 3, &[0, 2, 2, 2, NO_TARGET], None);
        let (a, b) = (weighted.finish(), duplicated.finish());
        assert_eq!((a.rows, b.rows), (3, 4));
        // Top-1: 1 of 4; top-2: 3 of 4.
        assert_close(a.accuracy, 0.25, 1e-12);
        assert_close(a.top2_accuracy, 0.75, 1e-12);
        for (x, y) in [
            (a.accuracy, b.accuracy),
            (a.top2_accuracy, b.top2_accuracy),
            (a.log_loss, b.log_loss),
        ] {
            assert_close(x, y.unwrap(), 1e-12);
        }
    }

    #[test]
    fn plan_merge_equals_a_single_pass() {
        let mut single = PlanMetrics::new();
        single.update(&PLAN_PROBS, 3, &PLAN_TARGETS, None);
        let mut merged = PlanMetrics::new();
        for (probs, targets) in PLAN_PROBS.chunks(3).zip(PLAN_TARGETS.chunks(1)) {
            let mut part = PlanMetrics::new();
            part.update(probs, 3, targets, None);
            merged.merge(&part);
        }
        let (a, b) = (single.finish(), merged.finish());
        assert_eq!((a.rows, a.skipped_rows), (b.rows, b.skipped_rows));
        for (x, y) in [
            (a.accuracy, b.accuracy),
            (a.top2_accuracy, b.top2_accuracy),
            (a.log_loss, b.log_loss),
        ] {
            assert_close(x, y.unwrap(), 1e-12);
        }
    }

    #[test]
    #[should_panic(expected = "rows of 3 classes")]
    fn plan_mismatched_lengths_panic() {
        PlanMetrics::new().update(&[0.5, 0.5], 3, &[0], None);
    }

    #[test]
    fn summaries_round_trip_through_json() {
        let binary = binary(&[0.9, 0.2], &[1.0, 0.0], None);
        let json = serde_json::to_string(&binary).unwrap();
        assert_eq!(
            serde_json::from_str::<BinarySummary>(&json).unwrap(),
            binary
        );
        let plan = PlanMetrics::new().finish();
        let json = serde_json::to_string(&plan).unwrap();
        assert!(json.contains("\"accuracy\":null"), "{json}");
        assert_eq!(serde_json::from_str::<PlanSummary>(&json).unwrap(), plan);
    }

    #[test]
    fn average_precision_matches_scikit_learn() {
        // sklearn.metrics.average_precision_score(y, p) for each case.
        let ap = |p: &[f32], y: &[f32]| binary(p, y, None).pr_auc.unwrap();
        assert!(close(
            ap(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]),
            0.833_333_333,
            1e-9
        ));
        let p2 = [0.9, 0.8, 0.7, 0.6, 0.55, 0.54, 0.53, 0.1];
        let y2 = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        assert!(close(ap(&p2, &y2), 0.747_023_809_5, 1e-9));
        // Tied scores form one threshold: 0.5 there as in scikit-learn.
        assert!(close(
            ap(&[0.5, 0.5, 0.2, 0.2], &[1.0, 0.0, 1.0, 0.0]),
            0.5,
            1e-9
        ));
        assert_eq!(binary(&[0.3], &[0.0], None).pr_auc, None);
    }

    #[test]
    fn calibration_error_by_hand() {
        let m = {
            let mut m = BinaryMetrics::new();
            m.update(&[0.1, 0.2, 0.7, 0.9], &[0.0, 1.0, 1.0, 1.0], None);
            m
        };
        // Two bins, {0.1, 0.2} and {0.7, 0.9}, either way:
        // ½·|0.15 − 0.5| + ½·|0.8 − 1| = 0.275.
        assert_close(m.ece(Binning::EqualWidth, 2), 0.275, 1e-6);
        assert_close(m.ece(Binning::EqualCount, 2), 0.275, 1e-6);
        // One row per bin: (0.1 + 0.8 + 0.3 + 0.1) / 4.
        assert_close(m.ece(Binning::EqualCount, 4), 0.325, 1e-6);
        let bins = m.reliability(Binning::EqualWidth, 10);
        let shown: Vec<(f64, f64, f64)> = bins
            .iter()
            .map(|b| (b.weight, b.mean_prediction, b.observed_rate))
            .collect();
        let expected = [
            (1.0, 0.1, 0.0),
            (1.0, 0.2, 1.0),
            (1.0, 0.7, 1.0),
            (1.0, 0.9, 1.0),
        ];
        for (a, e) in shown.iter().zip(&expected) {
            assert!(close(a.0, e.0, 1e-9) && close(a.1, e.1, 1e-6) && close(a.2, e.2, 1e-9));
        }
        assert_eq!(shown.len(), 4, "empty bins are left out: {shown:?}");
        // A perfectly calibrated bin has no error.
        let mut fair = BinaryMetrics::new();
        fair.update(&[0.25; 4], &[1.0, 0.0, 0.0, 0.0], None);
        assert_close(fair.ece(Binning::EqualWidth, ECE_BINS), 0.0, 1e-7);
    }

    #[test]
    fn roc_and_gains_curves_by_hand() {
        let mut m = BinaryMetrics::new();
        m.update(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0], None);
        // Thresholds from the top: 0.8 (+), 0.4 (−), 0.35 (+), 0.1 (−).
        assert_eq!(
            m.roc_curve(100),
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        assert_eq!(
            m.gains_curve(100),
            vec![(0.0, 0.0), (0.25, 0.5), (0.5, 0.5), (0.75, 1.0), (1.0, 1.0)]
        );
        // Thinned curves keep both ends.
        let thin = m.roc_curve(2);
        assert_eq!((thin[0], *thin.last().unwrap()), ((0.0, 0.0), (1.0, 1.0)));
        assert_eq!(thin.len(), 3);
        let mut one_class = BinaryMetrics::new();
        one_class.update(&[0.2, 0.3], &[0.0, 0.0], None);
        assert!(one_class.roc_curve(10).is_empty() && one_class.gains_curve(10).is_empty());
    }

    #[test]
    fn coarse_histograms_keep_their_bound() {
        let (probs, labels) = conversion_sample(20_000, 5);
        let mut coarse = BinaryMetrics::with_bins(1024);
        coarse.update(&probs, &labels, None);
        let summary = coarse.finish();
        let exact = auc_exact(&probs, &labels).unwrap();
        let bound = summary.auc_error_bound.unwrap();
        assert!(
            (summary.auc.unwrap() - exact).abs() <= bound,
            "{summary:?} vs {exact}"
        );
        assert!(bound > binary(&probs, &labels, None).auc_error_bound.unwrap());
    }

    #[test]
    fn plan_confusion_matrix_by_hand() {
        let mut m = PlanMetrics::new();
        // Rows: target 0 predicted 0; target 2 predicted 1; target 2
        // predicted 2 (weight 2); a tie between 0 and 1 goes to 0.
        let probs = [
            0.7, 0.2, 0.1, //
            0.1, 0.6, 0.3, //
            0.1, 0.2, 0.7, //
            0.4, 0.4, 0.2,
        ];
        m.update(&probs, 3, &[0, 2, 2, 1], Some(&[1.0, 1.0, 2.0, 1.0]));
        assert_eq!(
            m.confusion(),
            vec![
                vec![1.0, 0.0, 0.0],
                vec![1.0, 0.0, 0.0],
                vec![0.0, 1.0, 2.0]
            ]
        );
        let mut halves = PlanMetrics::new();
        halves.update(&probs[..6], 3, &[0, 2], Some(&[1.0, 1.0]));
        let mut rest = PlanMetrics::new();
        rest.update(&probs[6..], 3, &[2, 1], Some(&[2.0, 1.0]));
        halves.merge(&rest);
        assert_eq!(halves.confusion(), m.confusion());
    }
}
