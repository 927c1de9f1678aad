//! Post-hoc calibration of both heads, fitted on the validation split at the
//! end of training and stored in the checkpoint's manifest, so that every
//! probability that leaves the model (the [`Scorer`](crate::Scorer), `upsell
//! score`, `recommend`, the server) is calibrated the same way.
//!
//! - **Temperature scaling** (Guo et al., 2017): logits are divided by one
//!   temperature per head, fitted by minimising the weighted log loss. It
//!   keeps the ranking (so AUC) unchanged.
//! - **Per-product temperature**: the conversion head gets one temperature
//!   per offered product, for a model that is over-confident on some
//!   products only.
//! - **Isotonic regression** of the conversion probability (pool adjacent
//!   violators), interpolated linearly between its steps as scikit-learn's
//!   `IsotonicRegression` does. More flexible; needs more validation rows.
//!
//! The plan head always uses temperature scaling (unless the method is
//! `none`). Depends on std and serde only.

use serde::{Deserialize, Serialize};

use crate::config::CalibrationMethod;

/// A monotone piecewise-linear map of probabilities: `x` increasing, `y`
/// non-decreasing, flat outside `[x[0], x[last]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isotonic {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

impl Isotonic {
    /// The calibrated probability of a raw one.
    pub fn apply(&self, p: f64) -> f64 {
        let i = self.x.partition_point(|&x| x <= p);
        if i == 0 {
            return self.y[0];
        }
        if i == self.x.len() {
            return self.y[i - 1];
        }
        let (x0, x1, y0, y1) = (self.x[i - 1], self.x[i], self.y[i - 1], self.y[i]);
        y0 + (y1 - y0) * (p - x0) / (x1 - x0)
    }
}

/// Validation metrics before and after calibration (on the rows it was
/// fitted on; `upsell eval` gives out-of-sample numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    pub rows: usize,
    pub ece_before: Option<f64>,
    pub ece_after: Option<f64>,
    pub ece_equal_count_before: Option<f64>,
    pub ece_equal_count_after: Option<f64>,
    pub log_loss_before: Option<f64>,
    pub log_loss_after: Option<f64>,
    pub plan_log_loss_before: Option<f64>,
    pub plan_log_loss_after: Option<f64>,
}

/// A fitted calibration, as stored in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub method: CalibrationMethod,
    /// Conversion logits are divided by this: one value, or one per product
    /// with `product_temperature`.
    pub conversion_temperature: Vec<f64>,
    /// The isotonic map of the conversion probability (`isotonic` only).
    pub isotonic: Option<Isotonic>,
    /// Plan-choice logits are divided by this.
    pub plan_temperature: f64,
    pub report: Option<CalibrationReport>,
}

pub(crate) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Calibration {
    /// Leaves every output as the network gives it.
    pub fn identity() -> Calibration {
        Calibration {
            method: CalibrationMethod::None,
            conversion_temperature: vec![1.0],
            isotonic: None,
            plan_temperature: 1.0,
            report: None,
        }
    }

    /// The calibrated conversion probability of a logit, for `product` when
    /// the model has offers.
    pub fn conversion(&self, logit: f32, product: Option<usize>) -> f32 {
        let temperature = match (self.conversion_temperature.as_slice(), product) {
            ([t], _) => *t,
            (ts, Some(p)) if p < ts.len() => ts[p],
            _ => 1.0,
        };
        let p = sigmoid(f64::from(logit) / temperature);
        match &self.isotonic {
            Some(map) => map.apply(p) as f32,
            None => p as f32,
        }
    }

    /// [`plan`](Self::plan) on each row of `[rows, classes]` logits.
    pub fn plans(&self, logits: &mut [f32], classes: usize) {
        for row in logits.chunks_exact_mut(classes) {
            self.plan(row);
        }
    }

    /// Turns one row of plan logits into calibrated probabilities, in place.
    pub fn plan(&self, logits: &mut [f32]) {
        let scale = 1.0 / self.plan_temperature;
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f64;
        for z in logits.iter_mut() {
            let e = (scale * f64::from(*z - top)).exp();
            *z = e as f32;
            total += e;
        }
        for z in logits.iter_mut() {
            *z = (f64::from(*z) / total) as f32;
        }
    }
}
