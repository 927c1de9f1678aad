//! Uplift metrics: how well a score ranks users by the *effect* of an offer,
//! measured on a randomised no-offer holdout (control) beside the treated
//! logs.
//!
//! A good conversion model can still target badly: it finds users who would
//! buy anyway. These metrics compare treated and control outcomes among the
//! users a score would target first (Radcliffe 2007, "Using control groups to
//! target on predicted lift"; Rzepakowski & Jaroszewicz 2012; Gutierrez &
//! Gerardy 2017). The definitions are scikit-uplift 0.5.1's (`sklift.metrics`:
//! `qini_curve`, `uplift_curve`, `perfect_qini_curve`, `perfect_uplift_curve`,
//! `qini_auc_score`, `uplift_auc_score`, `uplift_by_percentile`), extended
//! with weights.
//!
//! A weight of 2 is the same as the row appearing twice. Inverse-propensity
//! weights (where the offer was not assigned uniformly at random) go in the
//! same argument, which makes every metric here its IPW estimate.
//!
//! Outcomes may be any finite number (a 0/1 conversion or revenue) except
//! where noted. Rows with a non-finite score or outcome, or a negative or
//! non-finite weight, come from data and are not fatal: they are left out and
//! counted in [`UpliftCurve::skipped_rows`].

use serde::{Deserialize, Serialize};

/// A Qini or uplift curve: one point per distinct score, from the highest,
/// after a first point at (0, 0).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UpliftCurve {
    /// Weight of the rows targeted so far, `N_t + N_c`.
    pub x: Vec<f64>,
    /// The curve's value there.
    pub y: Vec<f64>,
    /// Rows left out because a score, outcome or weight was invalid.
    pub skipped_rows: u64,
}

impl UpliftCurve {
    /// Area under the curve by the trapezoid rule (scikit-learn's `auc`).
    #[must_use]
    pub fn area(&self) -> f64 {
        let (x, y) = (self.x.windows(2), self.y.windows(2));
        x.zip(y)
            .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
            .sum()
    }
}

/// One group of [`uplift_by_decile`]: predicted against observed uplift.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UpliftBin {
    /// Rows in the bin, including rows of weight 0.
    pub rows: u64,
    /// Weight of the treated rows, `n_t`.
    pub treated_weight: f64,
    /// Weight of the control rows, `n_c`.
    pub control_weight: f64,
    /// Weighted mean predicted uplift.
    pub mean_predicted: f64,
    /// Weighted mean outcome of the treated rows (`None` without any).
    pub mean_outcome_treated: Option<f64>,
    /// Weighted mean outcome of the control rows (`None` without any).
    pub mean_outcome_control: Option<f64>,
    /// `mean_outcome_treated - mean_outcome_control`.
    pub observed_uplift: Option<f64>,
    /// Standard error of `observed_uplift`: `sqrt(var_t / n_t + var_c / n_c)`
    /// with `var = p (1 - p)` when every outcome is 0 or 1 (scikit-uplift's
    /// `std_uplift`), else the weighted sample variance. `n` is each arm's
    /// effective number of rows, `(Σw)² / Σw²` (Kish): the row count with
    /// equal weights, and unchanged when inverse-propensity weights scale
    /// every row up (`None` unless both arms have more than one).
    pub std_error: Option<f64>,
}

#[derive(Clone, Copy)]
struct Row {
    score: f64,
    treated: bool,
    outcome: f64,
    weight: f64,
}

/// Cumulative weights and outcome sums of the rows targeted so far.
#[derive(Default)]
struct Totals {
    n_t: f64,
    n_c: f64,
    y_t: f64,
    y_c: f64,
}

/// `Y_t - Y_c · N_t / N_c`; the control term is 0 while no control row is
/// targeted, as in scikit-uplift.
fn qini_value(t: &Totals) -> f64 {
    let ratio = if t.n_c > 0.0 { t.n_t / t.n_c } else { 0.0 };
    t.y_t - t.y_c * ratio
}

/// `(Y_t / N_t - Y_c / N_c) · (N_t + N_c)`, a mean of 0 for an empty arm.
fn uplift_value(t: &Totals) -> f64 {
    let mean = |y: f64, n: f64| if n > 0.0 { y / n } else { 0.0 };
    (mean(t.y_t, t.n_t) - mean(t.y_c, t.n_c)) * (t.n_t + t.n_c)
}

/// The valid rows, by decreasing score, and how many were left out.
///
/// # Panics
///
/// If the slices differ in length: a bug in the caller, not bad data.
fn valid_rows(
    score: &[f64],
    treated: &[bool],
    outcome: &[f64],
    weight: Option<&[f64]>,
) -> (Vec<Row>, u64) {
    let n = score.len();
    assert!(
        treated.len() == n && outcome.len() == n && weight.is_none_or(|w| w.len() == n),
        "uplift metrics: {n} scores but {} treatment flags, {} outcomes, {:?} weights",
        treated.len(),
        outcome.len(),
        weight.map(<[f64]>::len)
    );
    let mut rows: Vec<Row> = (0..n)
        .map(|i| Row {
            score: score[i],
            treated: treated[i],
            outcome: outcome[i],
            weight: weight.map_or(1.0, |w| w[i]),
        })
        .filter(|r| r.score.is_finite() && r.outcome.is_finite())
        .filter(|r| r.weight.is_finite() && r.weight >= 0.0)
        .collect();
    let skipped = (n - rows.len()) as u64;
    sort_by_score(&mut rows);
    (rows, skipped)
}

/// Decreasing score. Scores are finite, so `partial_cmp` cannot fail, and
/// `-0.0` ties with `0.0`.
fn sort_by_score(rows: &mut [Row]) {
    rows.sort_by(|a, b| b.score.partial_cmp(&a.score).expect("finite scores"));
}

/// A point at the end of each tie group (as scikit-learn's `roc_curve`), so
/// the curve does not depend on the order of tied rows. Groups of weight 0
/// add no point, which makes a weight of 0 the same as leaving the row out.
fn curve(rows: &[Row], skipped_rows: u64, value: fn(&Totals) -> f64) -> UpliftCurve {
    let (mut x, mut y, mut t) = (vec![0.0], vec![0.0], Totals::default());
    for group in rows.chunk_by(|a, b| a.score == b.score) {
        for r in group {
            let (n, s) = if r.treated {
                (&mut t.n_t, &mut t.y_t)
            } else {
                (&mut t.n_c, &mut t.y_c)
            };
            *n += r.weight;
            *s += r.weight * r.outcome;
        }
        if group.iter().any(|r| r.weight > 0.0) {
            x.push(t.n_t + t.n_c);
            y.push(value(&t));
        }
    }
    UpliftCurve { x, y, skipped_rows }
}

/// The rows rescored by `score`, re-sorted.
fn rescored(mut rows: Vec<Row>, score: impl Fn(&Row) -> f64) -> Vec<Row> {
    rows.iter_mut().for_each(|r| r.score = score(r));
    sort_by_score(&mut rows);
    rows
}

/// The Qini curve (Radcliffe 2007; scikit-uplift's `qini_curve`): the
/// incremental outcome of targeting the top rows, `Q = Y_t - Y_c · N_t / N_c`.
#[must_use]
pub fn qini_curve(
    score: &[f64],
    treated: &[bool],
    outcome: &[f64],
    weight: Option<&[f64]>,
) -> UpliftCurve {
    let (rows, skipped) = valid_rows(score, treated, outcome, weight);
    curve(&rows, skipped, qini_value)
}

/// The uplift curve (scikit-uplift's `uplift_curve`): the observed uplift of
/// the top rows times their number, `(Y_t / N_t - Y_c / N_c) · (N_t + N_c)`.
#[must_use]
pub fn uplift_curve(
    score: &[f64],
    treated: &[bool],
    outcome: &[f64],
    weight: Option<&[f64]>,
) -> UpliftCurve {
    let (rows, skipped) = valid_rows(score, treated, outcome, weight);
    curve(&rows, skipped, uplift_value)
}

/// The Qini curve of scikit-uplift's optimum (`perfect_qini_curve` with
/// `negative_effect=True`): rows scored by `y` if treated, `-y` if not, so
/// treated responders come first and control responders last. For outcomes
/// other than 0/1 this is the same formula, a natural but unproven optimum.
fn perfect_qini_rows(rows: Vec<Row>) -> Vec<Row> {
    rescored(rows, |r| if r.treated { r.outcome } else { -r.outcome })
}

/// scikit-uplift's `perfect_uplift_curve` order: `2·[y = t] + (y if control
/// responders outweigh treated non-responders, else t)`. `None` unless every
/// outcome is 0 or 1.
fn perfect_uplift_rows(rows: Vec<Row>) -> Option<Vec<Row>> {
    if !rows.iter().all(|r| r.outcome == 0.0 || r.outcome == 1.0) {
        return None;
    }
    let weight_of = |t: bool, y: f64| -> f64 {
        let rows = rows.iter().filter(|r| r.treated == t && r.outcome == y);
        rows.map(|r| r.weight).sum()
    };
    let by_outcome = weight_of(false, 1.0) > weight_of(true, 0.0);
    Some(rescored(rows, |r| {
        let t = f64::from(u8::from(r.treated));
        let summand = if by_outcome { r.outcome } else { t };
        2.0 * f64::from(u8::from(r.outcome == t)) + summand
    }))
}

/// The optimum Qini curve of these rows (see [`qini_coefficient`]).
#[must_use]
pub fn perfect_qini_curve(
    treated: &[bool],
    outcome: &[f64],
    weight: Option<&[f64]>,
) -> UpliftCurve {
    let (rows, skipped) = valid_rows(&vec![0.0; treated.len()], treated, outcome, weight);
    curve(&perfect_qini_rows(rows), skipped, qini_value)
}

/// The optimum uplift curve of these rows; `None` unless outcomes are 0/1.
#[must_use]
pub fn perfect_uplift_curve(
    treated: &[bool],
    outcome: &[f64],
    weight: Option<&[f64]>,
) -> Option<UpliftCurve> {
    let (rows, skipped) = valid_rows(&vec![0.0; treated.len()], treated, outcome, weight);
    Some(curve(&perfect_uplift_rows(rows)?, skipped, uplift_value))
}

/// `(area(model) - area(random)) / (area(perfect) - area(random))`, random
/// being the chord from (0, 0) to the curve's end.
fn normalised(rows: &[Row], model: &UpliftCurve, perfect: &UpliftCurve) -> Option<f64> {
    let arm = |t: bool| rows.iter().any(|r| r.treated == t && r.weight > 0.0);
    if !(arm(true) && arm(false)) {
        return None;
    }
    let random = perfect.x.last()? * perfect.y.last()? / 2.0;
    let denominator = perfect.area() - random;
    (denominator != 0.0 && denominator.is_finite()).then(|| (model.area() - random) / denominator)
}

/// The Qini coefficient as scikit-uplift's `qini_auc_score`
/// (`negative_effect=True`): 1 for its optimum, 0 for random targeting,
/// negative for worse. That optimum is not a strict maximum: on small or
/// lopsided samples (say, no treated responder) another order can exceed
/// one. `None` without treated or control weight, or when the optimum is
/// no better than random (no outcome at all).
#[must_use]
pub fn qini_coefficient(
    score: &[f64],
    treated: &[bool],
    outcome: &[f64],
    weight: Option<&[f64]>,
) -> Option<f64> {
    let (rows, skipped) = valid_rows(score, treated, outcome, weight);
    let model = curve(&rows, skipped, qini_value);
    let perfect = curve(&perfect_qini_rows(rows.clone()), skipped, qini_value);
    normalised(&rows, &model, &perfect)
}

/// The normalised area under the uplift curve, as scikit-uplift's
/// `uplift_auc_score`; `None` as [`qini_coefficient`], and also unless every
/// outcome is 0 or 1 (its optimum is only defined for those).
#[must_use]
pub fn uplift_auc_score(
    score: &[f64],
    treated: &[bool],
    outcome: &[f64],
    weight: Option<&[f64]>,
) -> Option<f64> {
    let (rows, skipped) = valid_rows(score, treated, outcome, weight);
    let model = curve(&rows, skipped, uplift_value);
    let perfect = curve(&perfect_uplift_rows(rows.clone())?, skipped, uplift_value);
    normalised(&rows, &model, &perfect)
}

/// Calibration of the predicted uplift: rows by decreasing `predicted`, cut
/// into `bins` groups of about equal weight, each with its mean prediction
/// and observed uplift (scikit-uplift's `uplift_by_percentile`, strategy
/// `overall`, `std=True`).
///
/// Unlike scikit-uplift, tied predictions stay in one bin (a tie group goes
/// where its middle falls in cumulative weight): splitting them by position
/// would split by input order, and treated logs followed by the holdout
/// would give one bin only treated rows and the next only control rows.
/// Bins that get no weight are left out, so heavy ties give fewer bins.
/// Invalid rows are left out as in [`uplift_curve`], which counts them.
///
/// # Panics
///
/// If `bins` is 0, or the slices differ in length.
#[must_use]
pub fn uplift_by_decile(
    predicted: &[f64],
    treated: &[bool],
    outcome: &[f64],
    weight: Option<&[f64]>,
    bins: usize,
) -> Vec<UpliftBin> {
    assert!(bins > 0, "uplift_by_decile: zero bins");
    let (rows, _) = valid_rows(predicted, treated, outcome, weight);
    let total: f64 = rows.iter().map(|r| r.weight).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let binary = rows.iter().all(|r| r.outcome == 0.0 || r.outcome == 1.0);
    let (mut members, mut cumulative) = (vec![Vec::new(); bins], 0.0);
    for group in rows.chunk_by(|a, b| a.score == b.score) {
        let weight: f64 = group.iter().map(|r| r.weight).sum();
        let k = ((cumulative + weight / 2.0) / total * bins as f64) as usize;
        members[k.min(bins - 1)].extend_from_slice(group);
        cumulative += weight;
    }
    members
        .iter()
        .filter(|rows| rows.iter().any(|r| r.weight > 0.0))
        .map(|rows| bin_summary(rows, binary))
        .collect()
}

fn bin_summary(rows: &[Row], binary: bool) -> UpliftBin {
    // (weight, mean outcome, variance of that mean) of one arm.
    let arm = |treated: bool| {
        let rows = || rows.iter().filter(move |r| r.treated == treated);
        let w: f64 = rows().map(|r| r.weight).sum();
        let w2: f64 = rows().map(|r| r.weight * r.weight).sum();
        let n = if w2 > 0.0 { w * w / w2 } else { 0.0 };
        let mean = (w > 0.0).then(|| rows().map(|r| r.weight * r.outcome).sum::<f64>() / w);
        let variance = mean.and_then(|m| match binary {
            true => Some(m * (1.0 - m)),
            false if n > 1.0 => Some(
                rows()
                    .map(|r| r.weight * (r.outcome - m).powi(2))
                    .sum::<f64>()
                    / w
                    * n
                    / (n - 1.0),
            ),
            false => None,
        });
        (w, mean, variance.map(|v| v / n))
    };
    let ((w_t, mean_t, var_t), (w_c, mean_c, var_c)) = (arm(true), arm(false));
    let predicted: f64 = rows.iter().map(|r| r.weight * r.score).sum();
    UpliftBin {
        rows: rows.len() as u64,
        treated_weight: w_t,
        control_weight: w_c,
        mean_predicted: predicted / (w_t + w_c),
        mean_outcome_treated: mean_t,
        mean_outcome_control: mean_c,
        observed_uplift: mean_t.zip(mean_c).map(|(t, c)| t - c),
        std_error: var_t.zip(var_c).map(|(t, c)| (t + c).sqrt()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
        let close = actual
            .iter()
            .zip(expected)
            .all(|(a, e)| (a - e).abs() <= tol);
        assert!(
            close && actual.len() == expected.len(),
            "{actual:?} != {expected:?}"
        );
    }

    #[track_caller]
    fn assert_near(actual: Option<f64>, expected: f64) {
        assert_close(&[actual.expect("None")], &[expected], 1e-12);
    }

    #[test]
    fn the_true_effect_reaches_the_optimum() {
        // 10 treated rows (4 responders) then 10 control rows (2 responders),
        // as when logs are concatenated. Individual effect: treated
        // responders +1, control responders -1 ("sleeping dogs"), others 0.
        let t = [[true; 10], [false; 10]].concat();
        let y = [&[1.0; 4][..], &[0.0; 6], &[1.0; 2], &[0.0; 8]].concat();
        let effect: Vec<f64> = (0..20).map(|i| if t[i] { y[i] } else { -y[i] }).collect();
        // On paper: the 4 treated responders: Q = 4 - 0 = 4 at n = 4; the 14
        // zeros: N_t = 10, N_c = 8, Y_c = 0, Q = 4 at n = 18; the 2 control
        // responders: Q = 4 - 2·10/10 = 2 at n = 20. Area 8 + 56 + 6 = 70,
        // random 20·2/2 = 20, coefficient 50/50.
        let q = qini_curve(&effect, &t, &y, None);
        assert_close(&q.x, &[0.0, 4.0, 18.0, 20.0], 0.0);
        assert_close(&q.y, &[0.0, 4.0, 4.0, 2.0], 0.0);
        assert_eq!(q.area(), 70.0);
        assert_eq!(q, perfect_qini_curve(&t, &y, None));
        assert_near(qini_coefficient(&effect, &t, &y, None), 1.0);
        // Reversed: Q = 0 at n = 2, -2·6/10 = -1.2 at n = 16, 2 at n = 20:
        // area 0 - 8.4 + 1.6 = -6.8, coefficient (-6.8 - 20) / 50 = -0.536.
        let reversed: Vec<f64> = effect.iter().map(|e| -e).collect();
        assert_near(qini_coefficient(&reversed, &t, &y, None), -0.536);
        // The uplift curve's optimum puts control non-responders second:
        // (4, 4), (12, 12), (18, 7.2), (20, 4), area 140.8 (random 40);
        // the effect's curve (4, 4), (18, 7.2), (20, 4) has area 97.6, so
        // 57.6 / 100.8 = 4/7 (scikit-uplift: 0.5714285714285715).
        let perfect = perfect_uplift_curve(&t, &y, None).unwrap();
        assert_close(&perfect.y, &[0.0, 4.0, 12.0, 7.2, 4.0], 1e-12);
        assert_near(uplift_auc_score(&effect, &t, &y, None), 4.0 / 7.0);
    }

    // Expected values from running scikit-uplift 0.5.1's
    // sklift/metrics/metrics.py (commit 0038e65, numpy 2.4) on these rows.
    const SCORE: [f64; 12] = [0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1];
    const TREATED: [u8; 12] = [1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 0];
    const OUTCOME: [f64; 12] = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];

    fn treated() -> Vec<bool> {
        TREATED.iter().map(|&t| t == 1).collect()
    }

    #[test]
    fn matches_scikit_uplift() {
        let (s, t, y) = (&SCORE, &treated(), &OUTCOME);
        let q = qini_curve(s, t, y, None);
        assert_close(&q.x, &[0., 1., 3., 4., 5., 8., 9., 10., 11., 12.], 0.0);
        assert_close(&q.y, &[0., 1., 2., 2., 0.5, 2., 1.75, 1., 0.6, 1.], 1e-12);
        let u = uplift_curve(s, t, y, None);
        assert_close(
            &u.y,
            &[0., 1., 3., 8. / 3., 5. / 6., 4., 3.15, 2., 1.1, 2.],
            1e-12,
        );
        let perfect = perfect_qini_curve(t, y, None);
        assert_close(&perfect.x, &[0.0, 3.0, 10.0, 12.0], 0.0);
        assert_close(&perfect.y, &[0.0, 3.0, 3.0, 1.0], 0.0);
        let perfect = perfect_uplift_curve(t, y, None).unwrap();
        assert_close(&perfect.x, &[0.0, 3.0, 7.0, 10.0, 12.0], 0.0);
        assert_close(&perfect.y, &[0.0, 3.0, 7.0, 5.0, 2.0], 0.0);
        assert_near(qini_coefficient(s, t, y, None), 0.397_872_340_425_532);
        assert_near(uplift_auc_score(s, t, y, None), 0.362_222_222_222_222_17);
        // More control responders than treated non-responders: the other
        // branch of perfect_uplift_curve.
        let (t2, y2) = ([true, true, false, false, false], [1.0, 0.0, 1.0, 1.0, 0.0]);
        let perfect = perfect_uplift_curve(&t2, &y2, None).unwrap();
        assert_close(&perfect.x, &[0.0, 1.0, 2.0, 4.0, 5.0], 0.0);
        assert_close(&perfect.y, &[0.0, 1.0, 2.0, 4.0 / 3.0, -5.0 / 6.0], 1e-12);
        let score = uplift_auc_score(&[0.5, 0.4, 0.3, 0.2, 0.1], &t2, &y2, None);
        assert_near(score, 0.021_739_130_434_782_587);
        // uplift_by_percentile(y, s, t, bins=3, std=True): (n_treatment,
        // n_control, uplift, std_uplift) = (3, 1, 2/3, 0.272166),
        // (1, 3, 2/3, 0.272166), (2, 2, -0.5, 0.353553).
        let bins = uplift_by_decile(s, t, y, None, 3);
        let sd = (2.0f64 / 27.0).sqrt(); // (2/3)(1/3)/3
        let expected = [
            [3., 1., 2. / 3., sd],
            [1., 3., 2. / 3., sd],
            [2., 2., -0.5, 0.125f64.sqrt()],
        ];
        assert_eq!(bins.len(), 3);
        for (b, e) in bins.iter().zip(&expected) {
            let (u, se) = (b.observed_uplift.unwrap(), b.std_error.unwrap());
            assert_close(&[b.treated_weight, b.control_weight, u, se], e, 1e-12);
        }
    }

    #[test]
    fn tied_scores_give_one_point() {
        let (s, y) = ([0.5, 0.5, 0.1], [1.0, 1.0, 0.0]);
        let q = qini_curve(&s, &[true, false, true], &y, None);
        // After the tie: N_t = N_c = 1, Q = 1 - 1 = 0, whatever the order
        // within it.
        assert_close(&q.x, &[0.0, 2.0, 3.0], 0.0);
        assert_close(&q.y, &[0.0, 0.0, -1.0], 0.0);
        assert_eq!(q, qini_curve(&s, &[false, true, true], &y, None));
        let signed_zeros = qini_curve(&[-0.0, 0.0], &[true, false], &[1.0, 0.0], None);
        assert_eq!(signed_zeros.x.len(), 2);
    }

    #[test]
    fn weight_two_equals_duplicating_the_row() {
        let t = treated();
        let mut w = vec![1.0; 12];
        w[4] = 2.0;
        let dup = |v: &[f64]| [&v[..5], &v[4..]].concat();
        let (s2, t2, y2) = (dup(&SCORE), [&t[..5], &t[4..]].concat(), dup(&OUTCOME));
        let (s, y, w1) = (&SCORE, &OUTCOME, Some(&w[..]));
        assert_eq!(qini_curve(s, &t, y, w1), qini_curve(&s2, &t2, &y2, None));
        assert_eq!(
            uplift_curve(s, &t, y, w1),
            uplift_curve(&s2, &t2, &y2, None)
        );
        let duplicated = qini_coefficient(&s2, &t2, &y2, None).unwrap();
        assert_near(qini_coefficient(s, &t, y, w1), duplicated);
        let duplicated = uplift_auc_score(&s2, &t2, &y2, None).unwrap();
        assert_near(uplift_auc_score(s, &t, y, w1), duplicated);
        let a = uplift_by_decile(s, &t, y, w1, 3);
        let b = uplift_by_decile(&s2, &t2, &y2, None, 3);
        assert_eq!((a.len(), a[1].rows, b[1].rows), (3, 4, 5));
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.treated_weight, b.treated_weight);
            assert_eq!(a.control_weight, b.control_weight);
            assert_near(a.observed_uplift, b.observed_uplift.unwrap());
        }
        // Scaling every weight (inverse propensities) leaves the standard
        // errors as they were: they count effective rows, not weight.
        let scaled: Vec<f64> = w.iter().map(|x| 100.0 * x).collect();
        for (a, b) in a.iter().zip(&uplift_by_decile(s, &t, y, Some(&scaled), 3)) {
            assert_near(a.std_error, b.std_error.unwrap());
        }
        // Weight 0 is the same as leaving the row out.
        w[4] = 0.0;
        let out = |v: &[f64]| [&v[..4], &v[5..]].concat();
        let t3 = [&t[..4], &t[5..]].concat();
        let left_out = qini_curve(&out(s), &t3, &out(y), None);
        assert_eq!(qini_curve(s, &t, y, Some(&w)), left_out);
    }

    #[test]
    fn deciles_of_the_true_uplift_are_monotone() {
        // Ten segments of 10 treated and 10 control rows; in segment k the
        // true uplift is k/10: k treated responders, no control responder.
        // Treated rows come first, as when logs are concatenated.
        let (mut s, mut t, mut y) = (Vec::new(), Vec::new(), Vec::new());
        for treated in [true, false] {
            for k in 0..10 {
                for i in 0..10 {
                    s.push(f64::from(k) / 10.0);
                    t.push(treated);
                    y.push(if treated && i < k { 1.0 } else { 0.0 });
                }
            }
        }
        let bins = uplift_by_decile(&s, &t, &y, None, 10);
        assert_eq!(bins.iter().map(|b| b.rows).sum::<u64>(), 200);
        for (b, k) in bins.iter().zip((0..10).rev()) {
            assert_eq!(
                (b.rows, b.treated_weight, b.control_weight),
                (20, 10.0, 10.0)
            );
            let truth = f64::from(k) / 10.0;
            assert_close(
                &[b.mean_predicted, b.observed_uplift.unwrap()],
                &[truth, truth],
                1e-12,
            );
        }
        let observed: Vec<f64> = bins.iter().map(|b| b.observed_uplift.unwrap()).collect();
        assert!(observed.windows(2).all(|w| w[0] > w[1]), "{observed:?}");
        // p_t = 0.9, n_t = 10, p_c = 0: sqrt(0.9 · 0.1 / 10).
        assert_near(bins[0].std_error, 0.009f64.sqrt());
        // Quartile edges fall inside segments, whose ties stay together, so
        // no bin gets the treated half of a segment without its control half.
        let quartiles = uplift_by_decile(&s, &t, &y, None, 4);
        let rows: Vec<u64> = quartiles.iter().map(|b| b.rows).collect();
        assert_eq!(rows, [40, 60, 40, 60]);
        assert!(
            quartiles
                .iter()
                .all(|b| b.treated_weight == b.control_weight)
        );
    }

    #[test]
    fn revenue_uses_the_sample_variance() {
        let (t, y) = (
            [true, true, true, false, false],
            [10.0, 0.0, 20.0, 0.0, 5.0],
        );
        let bins = uplift_by_decile(&[0.0; 5], &t, &y, None, 1);
        // Treated mean 10, variance 200/2; control 2.5, variance 12.5/1:
        // sqrt(100/3 + 12.5/2).
        assert_eq!(bins[0].observed_uplift, Some(7.5));
        assert_near(bins[0].std_error, (100.0f64 / 3.0 + 6.25).sqrt());
        assert_eq!(uplift_auc_score(&[0.0; 5], &t, &y, None), None);
    }

    #[test]
    fn invalid_rows_are_skipped_and_counted() {
        let (mut s, mut t, mut y) = (SCORE.to_vec(), treated(), OUTCOME.to_vec());
        let mut w = vec![1.0; 12];
        let nan = f64::NAN;
        for [score, outcome, weight] in [
            [nan, 1.0, 1.0],
            [0.5, nan, 1.0],
            [0.5, 1.0, -1.0],
            [0.5, 1.0, f64::INFINITY],
        ] {
            s.push(score);
            t.push(true);
            y.push(outcome);
            w.push(weight);
        }
        let clean = qini_curve(&SCORE, &treated(), &OUTCOME, None);
        let q = qini_curve(&s, &t, &y, Some(&w));
        assert_eq!(
            q,
            UpliftCurve {
                skipped_rows: 4,
                ..clean
            }
        );
        let clean = qini_coefficient(&SCORE, &treated(), &OUTCOME, None);
        assert_eq!(qini_coefficient(&s, &t, &y, Some(&w)), clean);
        let bins = uplift_by_decile(&s, &t, &y, Some(&w), 3);
        assert_eq!(bins.iter().map(|b| b.rows).sum::<u64>(), 12);
    }

    #[test]
    fn undefined_coefficients_are_none() {
        let s = [0.3, 0.2, 0.1];
        let (t, y) = ([true, false, true], [1.0, 0.0, 1.0]);
        assert_eq!(qini_coefficient(&s, &[true; 3], &y, None), None);
        assert_eq!(
            qini_coefficient(&s, &t, &y, Some(&[1.0, 0.0, 1.0][..])),
            None
        );
        assert_eq!(qini_coefficient(&s, &t, &[0.0; 3], None), None);
        assert_eq!(uplift_auc_score(&s, &t, &[0.0; 3], None), None);
        assert!(uplift_by_decile(&s, &t, &y, Some(&[0.0; 3][..]), 2).is_empty());
    }

    #[test]
    #[should_panic(expected = "outcomes")]
    fn mismatched_lengths_panic() {
        let _ = qini_curve(&[0.5, 0.5], &[true, false], &[1.0], None);
    }
}
