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

mod binary;
mod plan;
mod uplift;

pub use binary::{
    AUC_BIN_WIDTH, AUC_BINS, AUC_LOGIT_MAX, BinaryMetrics, BinarySummary, Binning, CalibrationBin,
    ECE_BINS, PROB_EPS, auc_exact,
};
pub use plan::{NO_TARGET, PlanMetrics, PlanSummary};
pub use uplift::{
    UpliftBin, UpliftCurve, perfect_qini_curve, perfect_uplift_curve, qini_coefficient, qini_curve,
    uplift_auc_score, uplift_by_decile, uplift_curve,
};

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
