//! Uplift evaluation on logs with a randomised no-offer holdout: how well a
//! model with a no-offer arm ranks users by what an offer adds.
//!
//! For each product `P`, the rows offered `P` are the treated group and the
//! holdout rows the control. Each row is scored by the model's predicted
//! uplift of `P`: its P(convert) averaged over the context combinations
//! minus P(convert) with no offer (and the same for value). Rows weigh
//! `1 / propensity` when the logs carry propensities, so that a logging
//! policy that offers `P` to some users more than to others does not bias
//! the comparison (inverse propensity weighting); the treated side then
//! stands for `P` shown in every context alike, as the score does.
//!
//! Reported per product: the Qini coefficient and the area under the uplift
//! curve (Radcliffe, 2007; scikit-uplift's `qini_auc_score` and
//! `uplift_auc_score`), the Qini coefficient of the value, and the observed
//! uplift by decile of the predicted uplift (its calibration).

use serde::Serialize;

use crate::evaluation::metrics::{UpliftBin, qini_coefficient, uplift_auc_score, uplift_by_decile};
use crate::policy::UserScores;

/// Bins of the uplift calibration table.
const DECILES: usize = 10;

/// The uplift metrics of one product against the holdout.
#[derive(Debug, Clone, Serialize)]
pub struct ProductUplift {
    pub product: String,
    /// Rows offered this product.
    pub treated_rows: usize,
    /// Normalised Qini coefficient of the conversion uplift: 1 is the best
    /// ranking of these rows, 0 a random one.
    pub qini: Option<f64>,
    /// Normalised area under the uplift curve.
    pub uplift_auc: Option<f64>,
    /// Qini coefficient of the value uplift.
    pub value_qini: Option<f64>,
    /// Observed against predicted conversion uplift, by decile of the
    /// predicted uplift, highest first.
    pub deciles: Vec<UpliftBin>,
}

/// What `upsell eval` reports on logs with a holdout.
#[derive(Debug, Clone, Serialize)]
pub struct UpliftSummary {
    /// Logged no-offer rows: the control group.
    pub holdout_rows: usize,
    /// Whether rows weigh `1 / propensity`.
    pub propensity_weighted: bool,
    pub per_product: Vec<ProductUplift>,
}

/// Rows kept for the uplift metrics, which rank all rows at once.
#[derive(Default)]
pub struct UpliftRows {
    offer: Vec<u32>,
    converted: Vec<f64>,
    value: Vec<f64>,
    weight: Vec<f64>,
    /// `[rows, products]`: predicted conversion and value uplift.
    conversion_uplift: Vec<f64>,
    value_uplift: Vec<f64>,
    weighted: bool,
}

/// One batch's rows: the logged offer index (the number of products for a
/// no-offer row), outcomes, and weights.
pub struct Logged<'a> {
    pub offer: &'a [u32],
    pub converted: &'a [f32],
    /// Realised values (empty: none recorded, conversions count 1).
    pub value: &'a [f32],
    pub weight: &'a [f32],
    /// Logging propensities (empty: rows weigh their weight alone).
    pub propensity: &'a [f32],
}

impl UpliftRows {
    /// Adds a batch's rows with the model's scores of every candidate.
    pub fn add(&mut self, logged: &Logged<'_>, scores: &[UserScores]) {
        self.weighted = !logged.propensity.is_empty();
        for (row, s) in scores.iter().enumerate() {
            let none = s
                .no_offer
                .expect("uplift rows come from a model with a no-offer arm");
            let contexts = s.p_convert.len() as f64;
            for (p, worth) in s.value_if_converted.iter().enumerate() {
                let p_convert = s.p_convert.iter().map(|c| c[p]).sum::<f64>() / contexts;
                self.conversion_uplift.push(p_convert - none.p_convert);
                self.value_uplift.push(p_convert * worth - none.value);
            }
            let converted = f64::from(logged.converted[row]);
            self.offer.push(logged.offer[row]);
            self.converted.push(converted);
            self.value
                .push(logged.value.get(row).map_or(converted, |&v| f64::from(v)));
            let inverse = logged
                .propensity
                .get(row)
                .map_or(1.0, |&p| 1.0 / f64::from(p));
            self.weight.push(f64::from(logged.weight[row]) * inverse);
        }
    }

    /// The metrics per product (`products` in offer-index order; the
    /// no-offer index is `products.len()`).
    pub fn finish(&self, products: &[String]) -> UpliftSummary {
        let none = products.len() as u32;
        let width = products.len();
        let per_product = products
            .iter()
            .enumerate()
            .map(|(p, product)| {
                let rows: Vec<usize> = (0..self.offer.len())
                    .filter(|&r| self.offer[r] == p as u32 || self.offer[r] == none)
                    .collect();
                // Per-row values, and this product's column of the per-product ones.
                let per_row =
                    |values: &[f64]| -> Vec<f64> { rows.iter().map(|&r| values[r]).collect() };
                let column = |values: &[f64]| -> Vec<f64> {
                    rows.iter().map(|&r| values[r * width + p]).collect()
                };
                let treated: Vec<bool> = rows.iter().map(|&r| self.offer[r] != none).collect();
                let conversion = column(&self.conversion_uplift);
                let value = column(&self.value_uplift);
                let (converted, realised) = (per_row(&self.converted), per_row(&self.value));
                let weight = per_row(&self.weight);
                let weight = Some(weight.as_slice());
                ProductUplift {
                    product: product.clone(),
                    treated_rows: treated.iter().filter(|&&t| t).count(),
                    qini: qini_coefficient(&conversion, &treated, &converted, weight),
                    uplift_auc: uplift_auc_score(&conversion, &treated, &converted, weight),
                    value_qini: qini_coefficient(&value, &treated, &realised, weight),
                    deciles: uplift_by_decile(&conversion, &treated, &converted, weight, DECILES),
                }
            })
            .collect();
        UpliftSummary {
            holdout_rows: self.offer.iter().filter(|&&o| o == none).count(),
            propensity_weighted: self.weighted,
            per_product,
        }
    }
}
