//! Fitting the calibration that [`crate::scoring::calibration`] applies, on
//! the validation outputs at the end of training.

use crate::config::CalibrationMethod;
use crate::evaluation::metrics::{BinaryMetrics, PROB_EPS, PlanMetrics};
use crate::scoring::calibration::{Calibration, CalibrationReport, Isotonic, sigmoid};

/// Temperatures are searched in `[1 / MAX_SCALE, 1 / MIN_SCALE]`.
const MIN_SCALE: f64 = 0.05;
const MAX_SCALE: f64 = 20.0;
/// Products with fewer validation rows keep the shared temperature.
const MIN_ROWS_PER_PRODUCT: usize = 200;
/// Isotonic outputs stay this far from 0 and 1, so no score is certain.
const ISOTONIC_EPS: f64 = 1e-6;

/// The validation outputs calibration is fitted on.
pub struct Validation<'a> {
    /// `[rows]` conversion logits of each row's own offer.
    pub conversion_logits: &'a [f32],
    /// `[rows]` offered product index per row (empty without offers).
    pub offers: &'a [u32],
    pub labels: &'a [f32],
    pub weights: &'a [f32],
    /// `[rows, classes]` plan logits (empty without a plan head).
    pub plan_logits: &'a [f32],
    pub classes: usize,
    pub plan_targets: &'a [i32],
}

/// Minimises a convex function of `ln scale` over `[MIN_SCALE, MAX_SCALE]`
/// by golden-section search; returns the temperature `1 / scale`.
fn fit_temperature(loss: impl Fn(f64) -> f64) -> f64 {
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (MIN_SCALE.ln(), MAX_SCALE.ln());
    let mut c = b - ratio * (b - a);
    let mut d = a + ratio * (b - a);
    let (mut fc, mut fd) = (loss(c.exp()), loss(d.exp()));
    for _ in 0..60 {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - ratio * (b - a);
            fc = loss(c.exp());
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + ratio * (b - a);
            fd = loss(d.exp());
        }
    }
    1.0 / (0.5 * (a + b)).exp()
}

/// Weighted log loss of `sigmoid(scale · z)` over the rows in `rows`.
fn binary_loss(v: &Validation<'_>, rows: &[usize], scale: f64) -> f64 {
    rows.iter()
        .map(|&i| {
            let p =
                sigmoid(scale * f64::from(v.conversion_logits[i])).clamp(PROB_EPS, 1.0 - PROB_EPS);
            let y = f64::from(v.labels[i]);
            -f64::from(v.weights[i]) * (y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum()
}

fn plan_loss(v: &Validation<'_>, scale: f64) -> f64 {
    let mut total = 0.0;
    for (row, logits) in v.plan_logits.chunks_exact(v.classes).enumerate() {
        let Ok(target) = usize::try_from(v.plan_targets[row]) else {
            continue;
        };
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = logits
            .iter()
            .map(|&z| (scale * f64::from(z - top)).exp())
            .sum::<f64>()
            .ln();
        total -= f64::from(v.weights[row]) * (scale * f64::from(logits[target] - top) - log_sum);
    }
    total
}

impl Isotonic {
    /// Fits by pool adjacent violators on `(prediction, label, weight)`.
    /// `None` without positive weight.
    pub fn fit(rows: &mut [(f64, f64, f64)]) -> Option<Isotonic> {
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Blocks of (Σ w·y, Σ w, min x, max x), merged while they decrease.
        let mut blocks: Vec<(f64, f64, f64, f64)> = Vec::new();
        for &(x, y, w) in rows.iter().filter(|r| r.2 > 0.0) {
            match blocks.last_mut() {
                // Equal predictions share one block, as in scikit-learn.
                Some(last) if last.3 == x => {
                    last.0 += w * y;
                    last.1 += w;
                }
                _ => blocks.push((w * y, w, x, x)),
            }
            while blocks.len() > 1 {
                let n = blocks.len();
                let (a, b) = (blocks[n - 2], blocks[n - 1]);
                if a.0 / a.1 < b.0 / b.1 {
                    break;
                }
                blocks[n - 2] = (a.0 + b.0, a.1 + b.1, a.2, b.3);
                blocks.pop();
            }
        }
        if blocks.is_empty() {
            return None;
        }
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (sum, weight, lo, hi) in blocks {
            let value = (sum / weight).clamp(ISOTONIC_EPS, 1.0 - ISOTONIC_EPS);
            x.push(lo);
            y.push(value);
            if hi > lo {
                x.push(hi);
                y.push(value);
            }
        }
        Some(Isotonic { x, y })
    }
}

impl Calibration {
    /// Fits `method` on validation outputs and reports the metrics before
    /// and after.
    pub fn fit(method: CalibrationMethod, v: &Validation<'_>, products: usize) -> Calibration {
        let mut calibration = Calibration::identity();
        calibration.method = method;
        let all: Vec<usize> = (0..v.labels.len()).collect();
        if method != CalibrationMethod::None && !all.is_empty() {
            match method {
                CalibrationMethod::None => {}
                CalibrationMethod::Temperature | CalibrationMethod::ProductTemperature => {
                    let shared = fit_temperature(|s| binary_loss(v, &all, s));
                    calibration.conversion_temperature = vec![shared];
                    if method == CalibrationMethod::ProductTemperature && !v.offers.is_empty() {
                        calibration.conversion_temperature = (0..products)
                            .map(|p| {
                                let rows: Vec<usize> = all
                                    .iter()
                                    .copied()
                                    .filter(|&i| v.offers[i] as usize == p)
                                    .collect();
                                let positives = rows.iter().filter(|&&i| v.labels[i] > 0.0).count();
                                if rows.len() < MIN_ROWS_PER_PRODUCT || positives == 0 {
                                    shared
                                } else {
                                    fit_temperature(|s| binary_loss(v, &rows, s))
                                }
                            })
                            .collect();
                    }
                }
                CalibrationMethod::Isotonic => {
                    let mut rows: Vec<(f64, f64, f64)> = all
                        .iter()
                        .map(|&i| {
                            (
                                sigmoid(f64::from(v.conversion_logits[i])),
                                f64::from(v.labels[i]),
                                f64::from(v.weights[i]),
                            )
                        })
                        .collect();
                    calibration.isotonic = Isotonic::fit(&mut rows);
                }
            }
            if v.classes > 0 && !v.plan_logits.is_empty() {
                calibration.plan_temperature = fit_temperature(|s| plan_loss(v, s));
            }
        }
        calibration.report = Some(calibration.compare(v));
        calibration
    }

    fn compare(&self, v: &Validation<'_>) -> CalibrationReport {
        let identity = Calibration::identity();
        let summarise = |c: &Calibration| {
            let mut conversion = BinaryMetrics::new();
            let probs: Vec<f32> = (0..v.labels.len())
                .map(|i| c.conversion(v.conversion_logits[i], v.offers.get(i).map(|&o| o as usize)))
                .collect();
            conversion.update(&probs, v.labels, Some(v.weights));
            let mut plan = PlanMetrics::new();
            if v.classes > 0 && !v.plan_logits.is_empty() {
                let mut probs = v.plan_logits.to_vec();
                for row in probs.chunks_exact_mut(v.classes) {
                    c.plan(row);
                }
                plan.update(&probs, v.classes, v.plan_targets, Some(v.weights));
            }
            (conversion.finish(), plan.finish().log_loss)
        };
        let (before, plan_before) = summarise(&identity);
        let (after, plan_after) = summarise(self);
        CalibrationReport {
            rows: v.labels.len(),
            ece_before: before.ece,
            ece_after: after.ece,
            ece_equal_count_before: before.ece_equal_count,
            ece_equal_count_after: after.ece_equal_count,
            log_loss_before: before.log_loss,
            log_loss_after: after.log_loss,
            plan_log_loss_before: plan_before,
            plan_log_loss_after: plan_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels drawn with P(y) = sigmoid(z / 2): the logits are twice as
    /// confident as they should be, so the fitted temperature is about 2.
    fn overconfident(rows: usize) -> (Vec<f32>, Vec<f32>) {
        let mut state = 7u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..rows)
            .map(|_| {
                let z = 8.0 * uniform() - 6.0;
                let y = f32::from(u8::from(uniform() < sigmoid(z / 2.0)));
                (z as f32, y)
            })
            .unzip()
    }

    fn validation<'a>(logits: &'a [f32], labels: &'a [f32], weights: &'a [f32]) -> Validation<'a> {
        Validation {
            conversion_logits: logits,
            offers: &[],
            labels,
            weights,
            plan_logits: &[],
            classes: 0,
            plan_targets: &[],
        }
    }

    #[test]
    fn temperature_undoes_overconfidence() {
        let (logits, labels) = overconfident(40_000);
        let weights = vec![1.0; labels.len()];
        let v = validation(&logits, &labels, &weights);
        let c = Calibration::fit(CalibrationMethod::Temperature, &v, 0);
        let t = c.conversion_temperature[0];
        assert!((t - 2.0).abs() < 0.1, "temperature {t}");
        let report = c.report.unwrap();
        assert!(
            report.ece_after.unwrap() < report.ece_before.unwrap() / 3.0,
            "{report:?}"
        );
        assert!(report.log_loss_after.unwrap() < report.log_loss_before.unwrap());
    }

    #[test]
    fn isotonic_matches_scikit_learn() {
        // sklearn.isotonic.IsotonicRegression(out_of_bounds="clip")
        //   .fit([0.1, 0.2, 0.3, 0.4, 0.5], [0, 1, 0, 1, 1])
        //   .predict([0.05, 0.2, 0.25, 0.45, 0.9]) = [0, 0.5, 0.5, 1, 1]
        let mut rows: Vec<(f64, f64, f64)> = [0.1, 0.2, 0.3, 0.4, 0.5]
            .iter()
            .zip([0.0, 1.0, 0.0, 1.0, 1.0])
            .map(|(&x, y)| (x, y, 1.0))
            .collect();
        let map = Isotonic::fit(&mut rows).unwrap();
        let got: Vec<f64> = [0.05, 0.2, 0.25, 0.45, 0.9]
            .iter()
            .map(|&p| map.apply(p))
            .collect();
        let expected = [
            ISOTONIC_EPS,
            0.5,
            0.5,
            1.0 - ISOTONIC_EPS,
            1.0 - ISOTONIC_EPS,
        ];
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-12, "{got:?}");
        }
        // Non-decreasing everywhere.
        let grid: Vec<f64> = (0..=100).map(|i| map.apply(f64::from(i) / 100.0)).collect();
        assert!(grid.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn plan_temperature_softens_and_sums_to_one() {
        let c = Calibration {
            plan_temperature: 2.0,
            ..Calibration::identity()
        };
        let mut row = [2.0f32, 0.0, 0.0];
        c.plan(&mut row);
        // softmax([1, 0, 0]) = e / (e + 2).
        let e = std::f32::consts::E;
        assert!((row[0] - e / (e + 2.0)).abs() < 1e-6, "{row:?}");
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn product_temperatures_fall_back_when_rows_are_few() {
        let (logits, labels) = overconfident(4_000);
        let weights = vec![1.0; labels.len()];
        // Product 0 gets every row but the first 100; product 1 too few.
        let offers: Vec<u32> = (0..labels.len()).map(|i| u32::from(i < 100)).collect();
        let v = Validation {
            offers: &offers,
            ..validation(&logits, &labels, &weights)
        };
        let c = Calibration::fit(CalibrationMethod::ProductTemperature, &v, 2);
        let t = &c.conversion_temperature;
        assert_eq!(t.len(), 2);
        let shared = Calibration::fit(CalibrationMethod::Temperature, &v, 2);
        assert_eq!(t[1], shared.conversion_temperature[0]);
        assert!((t[0] - 2.0).abs() < 0.3, "{t:?}");
    }
}
