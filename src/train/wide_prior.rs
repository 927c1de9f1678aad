//! The wide part's Gaussian prior, one precision per id column and output
//! (`train.wide_prior_from_data`): how far an id's biases may stray from 0
//! is estimated from how much the id's values differ in the training rows,
//! beyond what the other categorical columns explain, as in a
//! random-effects model.
//!
//! One precision for every id column cannot suit them all: a household id
//! in a brand-choice panel carries most of the signal (brand loyalty, many
//! log-odds), while a region id of 5,000 values with a few conversions
//! each carries little, and biases fitted to it are mostly noise. A weak
//! prior helps the first and costs the second; a strong one the reverse.

use crate::config::{Objective, TrainConfig};
use crate::preprocess::{Features, Targets};

/// The smallest and largest prior variance of a bias, in squared log-odds:
/// a column whose values do not differ gets biases held near 0 (sd 0.01),
/// not exactly at 0; one that differs wildly still gets some shrinkage.
const VARIANCE_RANGE: (f64, f64) = (1e-4, 100.0);

/// A wide column: which embedded column it reads, and where its values sit
/// in the wide table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WideColumn {
    /// The column's name, for the training log.
    pub name: String,
    /// Index among the embedded (categorical and hashed) columns.
    pub column: usize,
    /// First row of the wide table that belongs to this column.
    pub offset: usize,
    /// Rows of the wide table (values, reserved ones included).
    pub size: usize,
}

/// The prior's precisions for one training run: per wide column and
/// output (the conversion bias, then each plan logit), the weight of that
/// block's sum of squared biases in the per-row objective.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WidePrior {
    pub columns: Vec<WideColumn>,
    /// Outputs per value: 1 + products.
    pub width: usize,
    /// `[columns, width]`, row-major.
    pub precision: Vec<f32>,
    /// `[columns, width]`: the estimated prior standard deviations, in
    /// log-odds (absent for a uniform prior).
    pub sd: Option<Vec<f64>>,
}

impl WidePrior {
    /// The same precision for every column and output: `train.wide_prior`
    /// over the training rows.
    pub fn uniform(columns: Vec<WideColumn>, width: usize, precision: f64) -> WidePrior {
        let precision = vec![precision as f32; columns.len() * width];
        WidePrior {
            columns,
            width,
            precision,
            sd: None,
        }
    }

    /// Precisions estimated from the training rows. For each column and
    /// output, the variance `tau^2` of the values' true log-odds is
    /// estimated by the method of moments (DerSimonian and Laird, 1986:
    /// the spread of the values' observed events beyond what their row
    /// counts explain), and the prior is `N(0, tau^2)` on each bias. The
    /// spread is measured around what the other categorical columns
    /// predict, so that an id nested in a coarser column (regions within
    /// countries) is not credited with the coarser column's differences,
    /// which the network learns from that column. The precision is scaled
    /// like the loss the bias enters, so that the objective stays a
    /// posterior.
    pub fn estimate(
        columns: Vec<WideColumn>,
        width: usize,
        features: &Features,
        targets: &Targets,
        cfg: &TrainConfig,
    ) -> WidePrior {
        let rows = features.rows;
        let embedded = features.embedded.len().checked_div(rows).unwrap_or(0);
        let weight_of = |i: usize| f64::from(targets.weight[i]);
        let total: f64 = (0..rows).map(weight_of).sum::<f64>().max(1e-12);
        let plan_total: f64 = (0..rows)
            .filter(|&i| targets.plan[i] >= 0)
            .map(weight_of)
            .sum();
        // The objective is each batch's weighted mean conversion loss and
        // weighted mean plan loss (over the rows with a plan, or every row
        // with the `joint` objective), plus the prior over the rows. Times
        // the rows, each output's loss is a weighted sum over rows, scaled
        // by this.
        let conversion_scale = cfg.conversion_weight * rows as f64 / total;
        let plan_scale = cfg.plan_weight * rows as f64
            / match cfg.objective {
                Objective::Mean => plan_total.max(1e-12),
                Objective::Joint => total,
            };
        let sizes: Vec<usize> = (0..embedded)
            .map(|c| {
                (0..rows)
                    .map(|i| features.embedded[i * embedded + c] as usize + 1)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        // [columns, width]: each output's variance per wide column.
        let mut variance = vec![0.0; columns.len() * width];
        for output in 0..width {
            // The conversion, or buying plan `output - 1` among the rows
            // with a plan.
            let event = |i: usize| -> Option<f64> {
                if output == 0 {
                    return Some(f64::from(targets.converted[i]));
                }
                let plan = targets.plan[i];
                (plan >= 0 && (plan as usize) + 1 < width)
                    .then(|| f64::from(u8::from(plan as usize == output - 1)))
            };
            // The rows this output's loss reads, as (row, weight, event);
            // an iterator rather than a list, which would cost 24 bytes a
            // row at the large end.
            let rows_with = || (0..rows).filter_map(|i| event(i).map(|y| (i, weight_of(i), y)));
            let (n, e) = rows_with().fold((0.0, 0.0), |(n, e), (_, w, y)| (n + w, e + w * y));
            if n <= 0.0 || e <= 0.0 || e >= n {
                continue;
            }
            let rate = e / n;
            // Each categorical column's value effects on the log-odds,
            // shrunk by its own spread (empirical Bayes).
            let effects: Vec<Vec<f64>> = (0..embedded)
                .map(|c| {
                    let mut stats = ValueStats::new(sizes[c]);
                    for (i, w, y) in rows_with() {
                        stats.add(features.embedded[i * embedded + c] as usize, w, y, rate);
                    }
                    stats.shrunk_effects(rate)
                })
                .collect();
            for (k, col) in columns.iter().enumerate() {
                let mut stats = ValueStats::new(col.size);
                let base = (rate / (1.0 - rate)).ln();
                for (i, w, y) in rows_with() {
                    let logit: f64 = base
                        + (0..embedded)
                            .filter(|&c| c != col.column)
                            .map(|c| effects[c][features.embedded[i * embedded + c] as usize])
                            .sum::<f64>();
                    let p = 1.0 / (1.0 + (-logit).exp());
                    let v = features.embedded[i * embedded + col.column] as usize;
                    stats.add(v, w, y, p);
                }
                variance[k * width + output] = stats.heterogeneity();
            }
        }
        let mut precision = Vec::with_capacity(columns.len() * width);
        let mut sd = Vec::with_capacity(columns.len() * width);
        for (j, &variance) in variance.iter().enumerate() {
            let scale = if j % width == 0 {
                conversion_scale
            } else {
                plan_scale
            };
            // A bias with prior N(0, tau^2) adds b^2 / (2 tau^2) to the
            // negative log posterior, whose likelihood part is the scaled
            // loss sum; per row of the objective, divide by the rows.
            let variance = variance.clamp(VARIANCE_RANGE.0, VARIANCE_RANGE.1);
            precision.push((scale / (2.0 * variance) / rows.max(1) as f64) as f32);
            sd.push(variance.sqrt());
        }
        WidePrior {
            columns,
            width,
            precision,
            sd: Some(sd),
        }
    }
}

/// Per value of a column, the weighted rows, the events observed and
/// expected (each row's expected probability `p` summed) and the binomial
/// information `sum w p (1 - p)`: what a value's log-odds effect is
/// estimated from.
struct ValueStats {
    rows: Vec<f64>,
    observed: Vec<f64>,
    expected: Vec<f64>,
    information: Vec<f64>,
}

impl ValueStats {
    fn new(values: usize) -> ValueStats {
        ValueStats {
            rows: vec![0.0; values],
            observed: vec![0.0; values],
            expected: vec![0.0; values],
            information: vec![0.0; values],
        }
    }

    /// A row of value `v`, weight `w`, event `y`, expected probability `p`.
    fn add(&mut self, v: usize, w: f64, y: f64, p: f64) {
        self.rows[v] += w;
        self.observed[v] += w * y;
        self.expected[v] += w * p;
        self.information[v] += w * p * (1.0 - p);
    }

    /// The variance between values of their log-odds effects, beyond
    /// sampling noise: Cochran's Q of the observed against the expected
    /// events, less its expectation without effects, over its growth per
    /// unit of variance. 0 when the values do not differ more than chance
    /// says, or there is nothing to compare.
    fn heterogeneity(&self) -> f64 {
        let seen: Vec<usize> = (0..self.observed.len())
            .filter(|&v| self.information[v] > 0.0)
            .collect();
        if seen.len() < 2 {
            return 0.0;
        }
        let q: f64 = seen
            .iter()
            .map(|&v| (self.observed[v] - self.expected[v]).powi(2) / self.information[v])
            .sum();
        let total: f64 = seen.iter().map(|&v| self.information[v]).sum();
        let squares: f64 = seen.iter().map(|&v| self.information[v].powi(2)).sum();
        let spread = total - squares / total;
        if spread <= 0.0 {
            return 0.0;
        }
        (q - (seen.len() - 1) as f64).max(0.0) / spread
    }

    /// Each value's effect on the log-odds, for stats gathered around the
    /// pooled rate `rate`: the log-odds of its own rate (half an event
    /// added, so that a value with none has one) less the pooled rate's,
    /// shrunk towards 0 by the column's spread, as the posterior mean under
    /// `N(0, tau^2)` with the value's information.
    fn shrunk_effects(&self, rate: f64) -> Vec<f64> {
        let tau2 = self.heterogeneity();
        let logit = |p: f64| (p / (1.0 - p)).ln();
        (0..self.rows.len())
            .map(|v| {
                let n = self.rows[v];
                if n <= 0.0 || tau2 <= 0.0 {
                    return 0.0;
                }
                let own = (self.observed[v] + 0.5) / (n + 1.0);
                let information = n * own * (1.0 - own);
                (logit(own) - logit(rate)) * tau2 * information / (tau2 * information + 1.0)
            })
            .collect()
    }
}

/// The variance between values of a rate's log-odds, beyond sampling
/// noise: `counts[v]` rows of value `v`, `events[v]` of them with the
/// event, around the pooled rate.
#[cfg(test)]
fn logit_heterogeneity(counts: &[f64], events: &[f64]) -> f64 {
    let total: f64 = counts.iter().sum();
    let pooled = events.iter().sum::<f64>() / total.max(1e-12);
    let mut stats = ValueStats::new(counts.len());
    for (v, (&n, &e)) in counts.iter().zip(events).enumerate() {
        stats.rows[v] = n;
        stats.observed[v] = e;
        stats.expected[v] = n * pooled;
        stats.information[v] = n * pooled * (1.0 - pooled);
    }
    stats.heterogeneity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use chacha20::ChaCha8Rng;
    use rand::{RngExt, SeedableRng};
    use rand_distr::{Distribution, Normal};

    /// Rows of `values` values, `per_value` each, whose log-odds are
    /// `base` plus a value effect drawn with standard deviation `sd`.
    fn draws(
        values: usize,
        per_value: usize,
        base: f64,
        sd: f64,
        seed: u64,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let effect = Normal::new(0.0, sd.max(1e-12)).unwrap();
        let mut counts = Vec::new();
        let mut events = Vec::new();
        for _ in 0..values {
            let p = 1.0 / (1.0 + (-(base + effect.sample(&mut rng))).exp());
            let hits = (0..per_value).filter(|_| rng.random::<f64>() < p).count();
            counts.push(per_value as f64);
            events.push(hits as f64);
        }
        (counts, events)
    }

    #[test]
    fn the_spread_between_values_is_recovered_beyond_sampling_noise() {
        // Values that truly differ by sd 0.8 in log-odds, around a rate of
        // about 0.2: the estimate lands near 0.64.
        let (n, e) = draws(2000, 200, -1.4, 0.8, 1);
        let tau2 = logit_heterogeneity(&n, &e);
        assert!((0.45..0.8).contains(&tau2), "tau^2 {tau2}");
        // Values that do not differ at all, with few rows each (whose
        // observed rates scatter widely): nothing beyond chance.
        let (n, e) = draws(5000, 40, -3.0, 0.0, 2);
        let tau2 = logit_heterogeneity(&n, &e);
        assert!(tau2 < 0.03, "tau^2 {tau2}");
    }

    /// Training rows of weight 1 from their embedded indices (row-major),
    /// conversions and plans.
    fn unit_weight_rows(
        embedded: Vec<u32>,
        converted: Vec<f32>,
        plan: Vec<i32>,
    ) -> (Features, Targets) {
        let rows = converted.len();
        let features = Features {
            rows,
            embedded,
            ..Features::default()
        };
        let targets = Targets {
            converted,
            plan,
            weight: vec![1.0; rows],
            ..Targets::default()
        };
        (features, targets)
    }

    /// Two id columns over the same rows: the first decides which of two
    /// plans a buyer takes (each value leans hard one way), the second is
    /// drawn independently of everything. The first gets a loose prior on
    /// its plan logits, the second one that holds its biases near 0.
    #[test]
    fn an_id_that_carries_the_signal_gets_a_looser_prior_than_one_that_does_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let rows = 20_000;
        let (mut embedded, mut converted, mut plan) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rows {
            let (loyal, noise) = (rng.random_range(0..200u32), rng.random_range(0..200u32));
            embedded.extend([loyal, noise]);
            let buys = rng.random::<f64>() < 0.3;
            converted.push(if buys { 1.0 } else { 0.0 });
            let first = if loyal % 2 == 0 { 0.9 } else { 0.1 };
            plan.push(match buys {
                true if rng.random::<f64>() < first => 0,
                true => 1,
                false => crate::preprocess::NO_PLAN,
            });
        }
        let (features, targets) = unit_weight_rows(embedded, converted, plan);
        let columns = vec![
            WideColumn {
                name: "loyal".into(),
                column: 0,
                offset: 0,
                size: 200,
            },
            WideColumn {
                name: "noise".into(),
                column: 1,
                offset: 200,
                size: 200,
            },
        ];
        let prior = WidePrior::estimate(columns, 3, &features, &targets, &TrainConfig::default());
        let sd = prior.sd.expect("estimated");
        // Plan logit of the first plan: log-odds 0.9 vs 0.1 around 0.5 is
        // about +-2.2 (sd 2.2 on the linear scale's approximation: 1.6).
        assert!(sd[1] > 1.0, "the loyal id's plan sd {}", sd[1]);
        for (k, &s) in sd[3..].iter().enumerate() {
            assert!(s < 0.15, "the noise id's sd {s} for output {k}");
        }
        // Conversion does not depend on either id.
        assert!(sd[0] < 0.15 && sd[3] < 0.15, "{sd:?}");
        assert!(prior.precision[4] > 50.0 * prior.precision[1]);
    }

    /// Regions nested in countries: the countries differ (sd 1 in
    /// log-odds), the regions only by `region_sd` within their country. The
    /// region id's prior measures the second, not the countries' spread
    /// that its values inherit.
    fn nested_region_sd(region_sd: f64, seed: u64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (countries, regions, rows) = (10u32, 400u32, 80_000usize);
        let country_effect: Vec<f64> = (0..countries)
            .map(|_| Normal::new(0.0, 1.0).unwrap().sample(&mut rng))
            .collect();
        let region_effect: Vec<f64> = (0..regions)
            .map(|_| {
                Normal::new(0.0, region_sd.max(1e-12))
                    .unwrap()
                    .sample(&mut rng)
            })
            .collect();
        let (mut embedded, mut converted) = (Vec::new(), Vec::new());
        for _ in 0..rows {
            let region = rng.random_range(0..regions);
            let country = region % countries;
            embedded.extend([country, region]);
            let logit = -1.5 + country_effect[country as usize] + region_effect[region as usize];
            let p = 1.0 / (1.0 + (-logit).exp());
            converted.push(if rng.random::<f64>() < p { 1.0 } else { 0.0 });
        }
        let plan = vec![crate::preprocess::NO_PLAN; rows];
        let (features, targets) = unit_weight_rows(embedded, converted, plan);
        let region = WideColumn {
            name: "region".into(),
            column: 1,
            offset: 0,
            size: regions as usize,
        };
        let prior = WidePrior::estimate(
            vec![region],
            1,
            &features,
            &targets,
            &TrainConfig::default(),
        );
        prior.sd.expect("estimated")[0]
    }

    #[test]
    fn an_id_nested_in_a_coarser_column_is_judged_within_it() {
        let alone = nested_region_sd(0.0, 4);
        assert!(
            alone < 0.1,
            "regions without effects of their own: sd {alone}"
        );
        let own = nested_region_sd(0.5, 5);
        assert!(
            (0.35..0.65).contains(&own),
            "regions with sd 0.5 of their own: sd {own}"
        );
    }

    #[test]
    fn nothing_to_compare_means_no_spread() {
        assert_eq!(logit_heterogeneity(&[10.0], &[3.0]), 0.0);
        assert_eq!(logit_heterogeneity(&[10.0, 10.0], &[0.0, 0.0]), 0.0);
        assert_eq!(logit_heterogeneity(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
    }
}
