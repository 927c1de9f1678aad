//! The conversion head's metrics: AUC (from a logit histogram, with its
//! error bound), log loss, Brier score, PR-AUC, calibration error and the
//! reliability diagram's bins.

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
pub(super) fn is_probability(x: f32) -> bool {
    (0.0..=1.0).contains(&x)
}

/// Finite and non-negative; false for NaN.
pub(super) fn is_weight(w: f32) -> bool {
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
