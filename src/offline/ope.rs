//! `upsell ope`: off-policy evaluation. Estimates what the checkpoint's
//! policy would have achieved (conversion rate and value per exposure) on
//! logged exposures that another policy chose, from the propensities the
//! logging policy recorded.
//!
//! For row `i` with logged action `a_i` (offer and context), logging
//! propensity `μ_i`, reward `r_i`, and the target policy's probability
//! `π_i = π(a_i | x_i)`, with `w_i = π_i / μ_i` (optionally capped at
//! `clip`):
//!
//! - IPS: `(1/n) Σ w_i r_i`, unbiased when `μ` is right and positive;
//! - self-normalised IPS: `Σ w_i r_i / Σ w_i`, biased but far less variable;
//! - doubly robust (Dudík et al., 2011): `(1/n) Σ [DM_i + w_i (r_i - q̂_i)]`,
//!   where `DM_i = Σ_a π(a|x_i) q̂(x_i, a)` and `q̂` is the model itself.
//!
//! With a no-offer holdout in the logs (and a model with a no-offer arm),
//! the same estimators also value "no offer to anyone" (`w_i = 1[a_i = no
//! offer] / μ_i`): the holdout is the control, and the policy's incremental
//! conversions and value are its estimates minus the control's, with
//! intervals from the same (paired) bootstrap replicates.
//!
//! Confidence intervals come from a Poisson bootstrap (each row appears
//! `Poisson(1)` times in each replicate; Chamandy et al., 2012), which is
//! computed in the same single streaming pass: memory grows with the number
//! of replicates, not rows. A row's draws depend on the seed and its
//! position only. Caps (`policy.caps`) act per batch of
//! [`BATCH_ROWS`](crate::data::shard::BATCH_ROWS) rows, as in `upsell recommend`.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::Exploration;
use crate::config::{Config, PolicyConfig};
use crate::data::{DataError, shard, source};
use crate::scoring::Scorer;
use crate::{Error, Result};

/// Sums per bootstrap replicate, in this order.
const N: usize = 0;
const W: usize = 1;
const W2: usize = 2;
const IPS_C: usize = 3;
const DR_C: usize = 4;
const OBS_C: usize = 5;
const DM_C: usize = 6;
const IPS_V: usize = 7;
const DR_V: usize = 8;
const OBS_V: usize = 9;
const DM_V: usize = 10;
/// The same for "no offer to anyone" (the holdout as the control).
const W0: usize = 11;
const IPS0_C: usize = 12;
const DR0_C: usize = 13;
const IPS0_V: usize = 14;
const DR0_V: usize = 15;
const SUMS: usize = 16;

/// How to run an off-policy evaluation.
#[derive(Debug, Clone)]
pub struct OpeOptions {
    pub exploration: Exploration,
    /// The policy's seed (exploration draws), as in `recommend`.
    pub seed: u64,
    /// Cap on the importance weights; `None` leaves them uncapped.
    pub clip: Option<f64>,
    /// Bootstrap replicates for the intervals.
    pub bootstrap: usize,
    /// Seed of the bootstrap draws.
    pub bootstrap_seed: u64,
}

/// An estimate with its bootstrap 95% percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub estimate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Every estimator of one reward.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimates {
    /// What the logging policy achieved: the mean logged reward.
    pub logging_policy: Estimate,
    pub ips: Estimate,
    pub snips: Estimate,
    pub doubly_robust: Estimate,
    /// The model's own prediction of the target policy's reward.
    pub direct_method: Estimate,
}

/// The weighted estimators of one reward for "no offer to anyone", or of
/// the target policy's difference from it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlEstimates {
    pub ips: Estimate,
    pub snips: Estimate,
    pub doubly_robust: Estimate,
}

/// The holdout as the control: what no offer achieves, and what the target
/// policy adds to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uplift {
    /// Logged no-offer rows.
    pub holdout_rows: usize,
    /// Conversion rate and value per user with no offer.
    pub no_offer_conversion: ControlEstimates,
    pub no_offer_value: ControlEstimates,
    /// The target policy minus no offer, per user.
    pub incremental_conversion: ControlEstimates,
    pub incremental_value: ControlEstimates,
}

/// What `upsell ope` prints.
#[derive(Debug, Clone, Serialize)]
pub struct OpeSummary {
    pub checkpoint: PathBuf,
    pub logs: PathBuf,
    pub policy: String,
    pub rows: usize,
    /// Rows whose logged action the target policy could take (`π > 0`).
    pub matched_rows: usize,
    /// `(Σ w)² / Σ w²`: how many rows the weighted estimates are worth.
    pub effective_sample_size: f64,
    pub max_weight: f64,
    pub clip: Option<f64>,
    /// Rows whose weight the clip lowered.
    pub clipped_rows: usize,
    pub bootstrap: usize,
    /// Reward: the exposure converted (0 or 1).
    pub conversion: Estimates,
    /// Reward: the value realised (the value column, or the offered
    /// product's value when it converted).
    pub value: Estimates,
    /// With a no-offer arm in the model: the holdout as the control.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplift: Option<Uplift>,
    pub seconds: f64,
}

/// The streaming state: sums for the point estimate (replicate 0) and
/// every bootstrap replicate.
struct Sums {
    replicates: Vec<[f64; SUMS]>,
    seed: u64,
    rows: usize,
    matched: usize,
    clipped: usize,
    max_weight: f64,
    holdout: usize,
}

/// One row's contributions.
struct Row {
    weight: f64,
    conversion: f64,
    value: f64,
    dm_conversion: f64,
    dm_value: f64,
    q_conversion: f64,
    q_value: f64,
    /// `1[no offer logged] / μ` (clipped like `weight`).
    weight_none: f64,
    /// The model's conversion and value with no offer.
    none_conversion: f64,
    none_value: f64,
}

impl Sums {
    fn add(&mut self, row: &Row) {
        let index = self.rows as u64;
        self.rows += 1;
        let w = row.weight;
        let contribution = {
            let mut c = [0.0; SUMS];
            c[N] = 1.0;
            c[W] = w;
            c[W2] = w * w;
            c[IPS_C] = w * row.conversion;
            c[DR_C] = row.dm_conversion + w * (row.conversion - row.q_conversion);
            c[OBS_C] = row.conversion;
            c[DM_C] = row.dm_conversion;
            c[IPS_V] = w * row.value;
            c[DR_V] = row.dm_value + w * (row.value - row.q_value);
            c[OBS_V] = row.value;
            c[DM_V] = row.dm_value;
            let w0 = row.weight_none;
            c[W0] = w0;
            c[IPS0_C] = w0 * row.conversion;
            c[DR0_C] = row.none_conversion + w0 * (row.conversion - row.q_conversion);
            c[IPS0_V] = w0 * row.value;
            c[DR0_V] = row.none_value + w0 * (row.value - row.q_value);
            c
        };
        for (b, sums) in self.replicates.iter_mut().enumerate() {
            let k = if b == 0 {
                1.0
            } else {
                poisson_one(xxh3_64_with_seed(
                    &index.to_le_bytes(),
                    self.seed ^ b as u64,
                ))
            };
            if k == 0.0 {
                continue;
            }
            for (s, c) in sums.iter_mut().zip(&contribution) {
                *s += k * c;
            }
        }
    }

    fn estimates(&self, ratio: impl Fn(&[f64; SUMS]) -> f64) -> Estimate {
        let estimate = ratio(&self.replicates[0]);
        let mut draws: Vec<f64> = self.replicates[1..]
            .iter()
            .map(&ratio)
            .filter(|v| v.is_finite())
            .collect();
        draws.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            if draws.is_empty() {
                return f64::NAN;
            }
            let i = ((draws.len() - 1) as f64 * q).round() as usize;
            draws[i]
        };
        Estimate {
            estimate,
            ci_low: quantile(0.025),
            ci_high: quantile(0.975),
        }
    }

    fn reward(&self, ips: usize, dr: usize, observed: usize, dm: usize) -> Estimates {
        Estimates {
            logging_policy: self.estimates(|s| s[observed] / s[N]),
            ips: self.estimates(|s| s[ips] / s[N]),
            snips: self.estimates(|s| s[ips] / s[W]),
            doubly_robust: self.estimates(|s| s[dr] / s[N]),
            direct_method: self.estimates(|s| s[dm] / s[N]),
        }
    }
}

impl Sums {
    /// "No offer to anyone", and the target policy's difference from it.
    fn uplift(&self) -> Uplift {
        let control = |ips: usize, dr: usize| ControlEstimates {
            ips: self.estimates(|s| s[ips] / s[N]),
            snips: self.estimates(|s| s[ips] / s[W0]),
            doubly_robust: self.estimates(|s| s[dr] / s[N]),
        };
        let difference = |ips: usize, dr: usize, ips0: usize, dr0: usize| ControlEstimates {
            ips: self.estimates(|s| (s[ips] - s[ips0]) / s[N]),
            snips: self.estimates(|s| s[ips] / s[W] - s[ips0] / s[W0]),
            doubly_robust: self.estimates(|s| (s[dr] - s[dr0]) / s[N]),
        };
        Uplift {
            holdout_rows: self.holdout,
            no_offer_conversion: control(IPS0_C, DR0_C),
            no_offer_value: control(IPS0_V, DR0_V),
            incremental_conversion: difference(IPS_C, DR_C, IPS0_C, DR0_C),
            incremental_value: difference(IPS_V, DR_V, IPS0_V, DR0_V),
        }
    }
}

/// A Poisson(1) draw from 64 random bits, by inversion.
fn poisson_one(bits: u64) -> f64 {
    let u = (bits >> 11) as f64 / (1u64 << 53) as f64;
    let mut p = (-1.0f64).exp();
    let mut cumulative = p;
    let mut k = 0.0;
    while u > cumulative && k < 20.0 {
        k += 1.0;
        p /= k;
        cumulative += p;
    }
    k
}

/// The config to read logs with: the checkpoint's columns, which must name
/// a propensity, plus the columns the eligibility rules read.
fn logs_config(scorer: &Scorer, policy: &PolicyConfig) -> Result<Config> {
    let manifest = scorer.manifest();
    let mut config = manifest.saved_config(&[])?;
    if config.columns.propensity.is_none() {
        return Err(crate::config::ConfigError::Invalid {
            origin: "the checkpoint's config".into(),
            field: "columns.propensity".into(),
            reason: "off-policy evaluation needs the logging propensities; it names none".into(),
        }
        .into());
    }
    if manifest.preprocessor.offer.is_none() {
        return Err(crate::scoring::ScoreError::NoOffers.into());
    }
    config.columns.time = None;
    config.columns.id = None;
    for rule in &policy.exclude {
        if !config
            .columns
            .roles()
            .iter()
            .any(|(c, _)| *c == rule.column)
        {
            config.columns.categorical.push(rule.column.clone());
        }
    }
    Ok(config)
}

/// Estimates the value of the checkpoint's policy (with `policy` rules and
/// `options.exploration`) on the logged exposures at `logs`.
pub fn evaluate(
    scorer: &Scorer,
    checkpoint: &Path,
    policy_config: PolicyConfig,
    logs: &Path,
    options: &OpeOptions,
) -> Result<OpeSummary> {
    let started = std::time::Instant::now();
    let config = logs_config(scorer, &policy_config)?;
    let propensity_column = config.columns.propensity.clone().expect("checked");
    let pre = &scorer.manifest().preprocessor;
    let policy = scorer.policy(policy_config, options.seed);
    let files = source::resolve(logs)?;
    for file in &files {
        let schema = source::schema(file)?;
        if schema.get(&propensity_column).is_none() {
            return Err(DataError::MissingColumn {
                path: file.clone(),
                column: propensity_column.clone(),
                role: "propensity",
                available: "no logging propensities: off-policy evaluation needs the probability with which the logging policy chose each logged offer".into(),
            }
            .into());
        }
        crate::data::check_schema(file, &schema, &config)?;
    }
    let product_values: Vec<f64> = pre.products.iter().map(|p| p.value).collect();
    let has_value = config.columns.value.is_some();
    let mut sums = Sums {
        replicates: vec![[0.0; SUMS]; options.bootstrap + 1],
        seed: options.bootstrap_seed,
        rows: 0,
        matched: 0,
        clipped: 0,
        max_weight: 0.0,
        holdout: 0,
    };
    let names: Vec<&str> = config.columns.roles().iter().map(|(c, _)| *c).collect();
    let mut progress = crate::data::progress::Progress::new("ope");
    for file in &files {
        let mut offset = 0usize;
        shard::for_each_batch(file, &names, shard::BATCH_ROWS, |frame| {
            progress.add(frame.height());
            let table = crate::data::from_frame(file, frame, &config)?;
            let batch = crate::data::transform(pre, &config.columns, &table)?;
            let rows = batch.features.rows;
            let polars = |source: PolarsError| {
                Error::from(DataError::Polars {
                    path: file.clone(),
                    source,
                })
            };
            let text = |column: &str| -> Result<Vec<Option<String>>> {
                let values = table
                    .frame
                    .column(column)
                    .and_then(|c| c.cast(&DataType::String))
                    .map_err(polars)?;
                Ok(values
                    .str()
                    .map_err(polars)?
                    .iter()
                    .map(|v| v.map(str::to_string))
                    .collect())
            };
            let contexts: Vec<(String, Vec<Option<String>>)> = pre
                .context
                .iter()
                .map(|v| Ok((v.column().to_string(), text(v.column())?)))
                .collect::<Result<_>>()?;
            let rules: Vec<(String, Vec<Option<String>>)> = policy
                .config()
                .exclude
                .iter()
                .map(|r| Ok((r.column.clone(), text(&r.column)?)))
                .collect::<Result<_>>()?;
            let user_scores = scorer.user_scores(&batch.features)?;
            let (q_logged, _) = scorer.score_offered(&batch.features);
            let ids: Vec<Option<String>> = (0..rows)
                .map(|r| Some(format!("{}#{}", file.display(), offset + r)))
                .collect();
            let value = |row: usize, column: &str| -> Option<String> {
                rules
                    .iter()
                    .find(|(c, _)| c == column)
                    .and_then(|(_, values)| values[row].clone())
            };
            let decisions = policy.decide(options.exploration, &user_scores, &ids, &value);
            for (row, decision) in decisions.iter().enumerate() {
                let offer = batch.features.offer[row] as usize;
                // A no-offer row's action is the "no offer" candidate.
                let logged = policy.products().get(offer).map(String::as_str);
                let pi: f64 = decision
                    .candidates
                    .iter()
                    .filter(|c| {
                        c.offer.as_deref() == logged
                            && c.context.iter().all(|(column, v)| {
                                contexts
                                    .iter()
                                    .find(|(c, _)| c == column)
                                    .is_some_and(|(_, values)| values[row].as_deref() == Some(v))
                            })
                    })
                    .map(|c| c.probability)
                    .sum();
                let mu = f64::from(batch.targets.propensity[row]);
                let raw = pi / mu;
                let weight = match options.clip {
                    Some(clip) if raw > clip => {
                        sums.clipped += 1;
                        clip
                    }
                    _ => raw,
                };
                let weight_none = if logged.is_none() {
                    sums.holdout += 1;
                    let raw = 1.0 / mu;
                    options.clip.map_or(raw, |clip| raw.min(clip))
                } else {
                    0.0
                };
                sums.matched += usize::from(pi > 0.0);
                sums.max_weight = sums.max_weight.max(weight);
                let scores = &user_scores[row];
                let index = |name: &str| policy.products().iter().position(|p| p == name);
                // What the user does unoffered (nothing, without a
                // no-offer arm).
                let unoffered = scores.no_offer.map_or(0.0, |n| n.value);
                let (mut dm_conversion, mut dm_value) = (0.0, 0.0);
                for c in &decision.candidates {
                    dm_conversion += c.probability * c.p_convert;
                    dm_value += c.probability
                        * match c.offer.as_deref().and_then(index) {
                            Some(p) => c.p_convert * scores.value_if_converted[p],
                            None => unoffered,
                        };
                }
                let converted = f64::from(batch.targets.converted[row]);
                let realised = if has_value {
                    f64::from(batch.targets.value[row])
                } else {
                    // Without a value column a buyer brings the offer's
                    // price; an unoffered one the plan's.
                    let plan = batch.targets.plan[row] as usize;
                    let price = product_values.get(offer).or(product_values.get(plan));
                    converted * price.copied().unwrap_or(0.0)
                };
                let q_conversion = f64::from(q_logged[row]);
                let q_value = match scores.value_if_converted.get(offer) {
                    Some(v) => q_conversion * v,
                    None => unoffered,
                };
                sums.add(&Row {
                    weight,
                    conversion: converted,
                    value: realised,
                    dm_conversion,
                    dm_value,
                    q_conversion,
                    q_value,
                    weight_none,
                    none_conversion: scores.no_offer.map_or(0.0, |n| n.p_convert),
                    none_value: unoffered,
                });
            }
            offset += rows;
            Ok(())
        })?;
    }
    progress.finish();
    let point = &sums.replicates[0];
    Ok(OpeSummary {
        checkpoint: checkpoint.to_path_buf(),
        logs: logs.to_path_buf(),
        policy: options.exploration.to_string(),
        rows: sums.rows,
        matched_rows: sums.matched,
        effective_sample_size: point[W] * point[W] / point[W2].max(f64::MIN_POSITIVE),
        max_weight: sums.max_weight,
        clip: options.clip,
        clipped_rows: sums.clipped,
        bootstrap: options.bootstrap,
        conversion: sums.reward(IPS_C, DR_C, OBS_C, DM_C),
        value: sums.reward(IPS_V, DR_V, OBS_V, DM_V),
        uplift: scorer.no_offer_index().map(|_| sums.uplift()),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_draws_have_mean_and_variance_one() {
        let draws: Vec<f64> = (0..200_000u64)
            .map(|i| poisson_one(xxh3_64_with_seed(&i.to_le_bytes(), 9)))
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(
            (mean - 1.0).abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
    }

    /// Estimators by hand on three rows, without bootstrap.
    #[test]
    fn estimators_by_hand() {
        let mut sums = Sums {
            replicates: vec![[0.0; SUMS]; 1],
            seed: 0,
            rows: 0,
            matched: 0,
            clipped: 0,
            max_weight: 0.0,
            holdout: 0,
        };
        // (w, r, dm, q̂): IPS = (2·1 + 0 + 0.5·1) / 3; SNIPS = 2.5 / 2.5;
        // DR = [(0.3 + 2·(1 − 0.4)) + (0.2 + 0) + (0.1 + 0.5·(1 − 0.2))] / 3.
        for (w, r, dm, q) in [
            (2.0, 1.0, 0.3, 0.4),
            (0.0, 0.0, 0.2, 0.1),
            (0.5, 1.0, 0.1, 0.2),
        ] {
            sums.add(&Row {
                weight: w,
                conversion: r,
                value: 10.0 * r,
                dm_conversion: dm,
                dm_value: 10.0 * dm,
                q_conversion: q,
                q_value: 10.0 * q,
                weight_none: 0.0,
                none_conversion: 0.0,
                none_value: 0.0,
            });
        }
        let e = sums.reward(IPS_C, DR_C, OBS_C, DM_C);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(e.ips.estimate, 2.5 / 3.0));
        assert!(close(e.snips.estimate, 1.0));
        assert!(close(e.doubly_robust.estimate, (1.5 + 0.2 + 0.5) / 3.0));
        assert!(close(e.direct_method.estimate, 0.2));
        assert!(close(e.logging_policy.estimate, 2.0 / 3.0));
        let v = sums.reward(IPS_V, DR_V, OBS_V, DM_V);
        assert!(close(v.ips.estimate, 25.0 / 3.0));
    }

    #[test]
    fn the_holdout_is_the_control() {
        let mut sums = Sums {
            replicates: vec![[0.0; SUMS]],
            seed: 0,
            rows: 0,
            matched: 0,
            clipped: 0,
            max_weight: 0.0,
            holdout: 1,
        };
        // (w, r, dm, q̂, w0, q̂ with no offer): a treated row the policy
        // would also take, a holdout row (μ = 0.1), a treated row it would not.
        for (w, r, dm, q, w0, none) in [
            (2.0, 1.0, 0.3, 0.4, 0.0, 0.1),
            (0.0, 1.0, 0.2, 0.1, 10.0, 0.1),
            (0.0, 0.0, 0.25, 0.3, 0.0, 0.05),
        ] {
            sums.add(&Row {
                weight: w,
                conversion: r,
                value: r,
                dm_conversion: dm,
                dm_value: dm,
                q_conversion: q,
                q_value: q,
                weight_none: w0,
                none_conversion: none,
                none_value: none,
            });
        }
        let u = sums.uplift();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(u.no_offer_conversion.ips.estimate, 10.0 / 3.0));
        assert!(close(u.no_offer_conversion.snips.estimate, 1.0));
        // DR with no offer: [0.1] + [0.1 + 10·(1 − 0.1)] + [0.05].
        assert!(close(u.no_offer_value.doubly_robust.estimate, 9.25 / 3.0));
        assert!(close(
            u.incremental_conversion.ips.estimate,
            (2.0 - 10.0) / 3.0
        ));
        assert!(close(u.incremental_conversion.snips.estimate, 0.0));
        // DR of the policy: [0.3 + 2·(1 − 0.4)] + [0.2] + [0.25].
        assert!(close(
            u.incremental_value.doubly_robust.estimate,
            (1.95 - 9.25) / 3.0
        ));
    }
}
