//! Decisions scored against ground truth: what a checkpoint's policy earns
//! on rows whose true value of every candidate is known (`upsell synth`
//! writes it; README, "Ground truth"), next to a uniformly random eligible
//! offer, the oracle that knows the truth, and the best policy from the
//! observed features (the Bayes policy).
//!
//! The truth is a table with the same rows in the same order as the data
//! (file by file, with the same row counts). Its columns, for every product
//! `P` and context combination `C` (the context columns' values in
//! `columns.context` order, joined by `__`; absent without context columns):
//! - `value__P__C`: the true expected value of offering `P` in `C` (required);
//! - `bayes_value__P__C`: what the best model of the observed features
//!   expects it to be (optional; all or none);
//! - `value__none`, `bayes_value__none`: the same with no offer (optional, 0);
//!   where either is above 0 (users who buy unoffered), "no offer" competes
//!   in the oracle and the Bayes policy whatever the contact cost;
//! - `logging_value`, `logging_contact`: the logging policy's true expected
//!   value for the user and its probability of contacting them (optional;
//!   both or neither), for the share of the oracle's lift over the logging
//!   policy;
//! - `eligible__P`: 1 when the business rules allow offering `P` (optional;
//!   all or none; without them every product is eligible);
//! - `bayes_p_convert__P`, `p_convert__P`: P(convert) in the logged context,
//!   for the best achievable and the true AUC on the logged outcomes
//!   (optional).

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use super::recommend::Decider;
use crate::config::Exploration;
use crate::config::PolicyConfig;
use crate::data::shard::Shard;
use crate::data::{DataError, shard, source};
use crate::evaluation::metrics::BinaryMetrics;
use crate::policy::Decision;
use crate::scoring::Scorer;
use crate::{Error, Result};

/// The decision metrics of one policy against the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionQuality {
    pub truth: PathBuf,
    pub rows: usize,
    /// The contact cost subtracted from every offer's value.
    pub contact_cost: f64,
    /// True expected value per user of the policy's decisions, net of the
    /// contact cost.
    pub policy_value: f64,
    /// ... of a uniformly random eligible offer in a random context.
    pub random_value: f64,
    /// ... of the best candidate for each user.
    pub oracle_value: f64,
    /// ... of the best candidate by `bayes_value` (with Bayes columns).
    pub bayes_value: Option<f64>,
    /// `(policy - random) / (oracle - random)`: 0 is random, 1 the oracle.
    pub share_of_lift: f64,
    /// The Bayes policy's share of lift: what is reachable from the
    /// observed features.
    pub bayes_share_of_lift: Option<f64>,
    /// `(policy - random) / (bayes - random)`.
    pub share_of_bayes_lift: Option<f64>,
    /// True value per user of the policy's offers, each shown in the one
    /// context that is best for those offers on average: what choosing the
    /// surface and message per user adds is `policy_value` minus this.
    pub fixed_context_value: f64,
    /// `(policy - fixed_context) / (policy - random)`: the share of the
    /// policy's lift that comes from choosing the context per user.
    pub context_share_of_lift: f64,
    /// Share of users the policy leaves alone.
    pub no_offer_rate: f64,
    /// ... that the oracle leaves alone.
    pub oracle_no_offer_rate: f64,
    /// ... that the Bayes policy leaves alone (with Bayes columns).
    pub bayes_no_offer_rate: Option<f64>,
    /// True expected value per user of the logging policy, net of the
    /// contact cost (with `logging_value` and `logging_contact`).
    pub logging_value: Option<f64>,
    /// `(policy - logging) / (oracle - logging)`: the share of what the
    /// oracle adds over the logging policy that the policy captures.
    pub share_of_logging_lift: Option<f64>,
    /// The Bayes policy's share of the oracle's lift over the logging policy.
    pub bayes_share_of_logging_lift: Option<f64>,
    /// Share of users offered a product the truth's `eligible__<product>`
    /// forbids; such an offer is not made, and scores as no offer.
    pub ineligible_rate: f64,
    /// AUC of `bayes_p_convert__<offer>` on the logged outcomes: the best
    /// any model of the observed features can reach.
    pub best_achievable_auc: Option<f64>,
    /// AUC of the true `p_convert__<offer>` on the logged outcomes.
    pub true_auc: Option<f64>,
    /// The offers made, in ten equal groups by the value the policy expects
    /// each to add (its `expected_value`: over no offer, net of the contact
    /// cost), against the value the truth says it adds: whether the model's
    /// value estimates, which contact costs and budgets act on, are right
    /// where it is most sure of them. With `policy.weights` the predicted
    /// values are weighted, the true ones not. Empty without offers.
    pub value_calibration: Vec<ValueBin>,
}

/// One group of [`DecisionQuality::value_calibration`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueBin {
    /// Offers in the group.
    pub offers: usize,
    /// Their mean expected value added, as the policy predicted it.
    pub predicted: f64,
    /// Their mean true value added: `value__P__C - value__none - contact cost`.
    pub actual: f64,
}

/// Groups of [`DecisionQuality::value_calibration`].
const VALUE_BINS: usize = 10;

/// Where each candidate's truth lives in a truth frame.
struct Columns {
    /// `[context][product]` column names of `value`.
    value: Vec<Vec<String>>,
    bayes: Option<Vec<Vec<String>>>,
    eligible: Option<Vec<String>>,
    none: Option<String>,
    bayes_none: Option<String>,
    bayes_p: Option<Vec<String>>,
    true_p: Option<Vec<String>>,
    /// `logging_value` and `logging_contact`.
    logging: Option<[String; 2]>,
}

/// Running sums over rows.
#[derive(Default)]
struct Sums {
    rows: usize,
    policy: f64,
    random: f64,
    oracle: f64,
    bayes: f64,
    logging: f64,
    no_offer: usize,
    oracle_no_offer: usize,
    bayes_no_offer: usize,
    ineligible: usize,
    /// Per context: the sum of the chosen offers' values in that context.
    fixed_context: Vec<f64>,
    /// Per offer made: (predicted, true) value added over no offer.
    value_added: Vec<(f32, f32)>,
}

/// Scores the greedy decisions of `scorer`'s policy (`policy_config`) on
/// the rows of `data` against `truth`.
pub fn decision_quality(
    scorer: &Scorer,
    policy_config: PolicyConfig,
    seed: u64,
    data: &Path,
    truth: &Path,
) -> Result<DecisionQuality> {
    let files = source::resolve(data)?;
    let truth_files = source::resolve(truth)?;
    if files.len() != truth_files.len() {
        return Err(DataError::Mismatch {
            path: truth.to_path_buf(),
            reason: format!(
                "{} truth file(s) for {} data file(s); the truth has the data's rows in the \
                 same order, file by file",
                truth_files.len(),
                files.len()
            ),
        }
        .into());
    }
    for (file, truth_file) in files.iter().zip(&truth_files) {
        let (rows, truth_rows) = (shard::row_count(file)?, shard::row_count(truth_file)?);
        if rows != truth_rows {
            return Err(DataError::Mismatch {
                path: truth_file.clone(),
                reason: format!(
                    "{truth_rows} rows, but its data file {} has {rows}",
                    file.display()
                ),
            }
            .into());
        }
    }
    let contact_cost = policy_config.contact_cost;
    let decider = Decider::new(scorer, policy_config, Exploration::Greedy, seed, &files)?;
    let products = scorer.product_names();
    let contexts: Vec<String> = decider
        .policy()
        .contexts()
        .iter()
        .map(|c| c.iter().map(|(_, v)| format!("__{v}")).collect())
        .collect();
    let columns = Columns::find(&truth_files, &products, &contexts)?;
    // The AUCs need the logged offer and outcome, and truth to score them.
    let config = scorer.manifest().saved_config(&[])?;
    let mut logged = config
        .columns
        .offer
        .clone()
        .map(|offer| (offer, config.columns.converted.clone()))
        .filter(|_| columns.bayes_p.is_some() || columns.true_p.is_some());
    for file in &files {
        let schema = source::schema(file)?;
        if logged
            .as_ref()
            .is_some_and(|(o, c)| schema.get(o).is_none() || schema.get(c).is_none())
        {
            logged = None;
        }
    }

    let mut sums = Sums::default();
    let (mut best_auc, mut true_auc) = (BinaryMetrics::new(), BinaryMetrics::new());
    let data_units = shard::shard_units(&files, shard::UNIT_ROWS, Shard::ALL)?;
    let truth_units = shard::shard_units(&truth_files, shard::UNIT_ROWS, Shard::ALL)?;
    for (unit, truth_unit) in data_units.iter().zip(&truth_units) {
        let (_, decisions) = decider.decide(unit)?;
        let frame = shard::read_unit(truth_unit, &columns.names())?;
        let read = |name: &str| -> Result<Vec<f64>> { floats(&truth_unit.0, &frame, name) };
        let table = |names: &Vec<Vec<String>>| -> Result<Vec<Vec<Vec<f64>>>> {
            names
                .iter()
                .map(|row| row.iter().map(|n| read(n)).collect())
                .collect()
        };
        let value = table(&columns.value)?;
        let bayes = columns.bayes.as_ref().map(table).transpose()?;
        let eligible = match &columns.eligible {
            Some(names) => Some(names.iter().map(|n| read(n)).collect::<Result<Vec<_>>>()?),
            None => None,
        };
        let zeros = || vec![0.0; frame.height()];
        let none = columns
            .none
            .as_deref()
            .map(read)
            .transpose()?
            .unwrap_or_else(zeros);
        let bayes_none = columns
            .bayes_none
            .as_deref()
            .map(read)
            .transpose()?
            .unwrap_or_else(zeros);
        let logging = match &columns.logging {
            Some([value, contact]) => Some((read(value)?, read(contact)?)),
            None => None,
        };
        for (row, decision) in decisions.iter().enumerate() {
            if let Some((value, contact)) = &logging {
                sums.logging += value[row] - contact_cost * contact[row];
            }
            let allowed: Vec<usize> = (0..products.len())
                .filter(|&p| eligible.as_ref().is_none_or(|e| e[p][row] > 0.5))
                .collect();
            let truth = Truth {
                value: &value,
                bayes: bayes.as_ref(),
                none: none[row],
                bayes_none: bayes_none[row],
                row,
                contact_cost,
            };
            sums.add(&truth, &allowed, decision, &products, &contexts)?;
        }
        if let Some((offer_column, converted_column)) = &logged {
            let data = shard::read_unit(unit, &[offer_column, converted_column])?;
            let offers = strings(&unit.0, &data, offer_column)?;
            let converted = floats(&unit.0, &data, converted_column)?;
            for (metrics, names) in [
                (&mut best_auc, &columns.bayes_p),
                (&mut true_auc, &columns.true_p),
            ] {
                let Some(names) = names else { continue };
                let p: Vec<Vec<f64>> = names.iter().map(|n| read(n)).collect::<Result<_>>()?;
                for (row, offer) in offers.iter().enumerate() {
                    if let Some(k) = offer
                        .as_deref()
                        .and_then(|o| products.iter().position(|p| p == o))
                    {
                        metrics.add(p[k][row] as f32, converted[row] as f32, 1.0);
                    }
                }
            }
        }
    }
    Ok(sums.finish(truth, contact_cost, &best_auc, &true_auc, &columns))
}

/// One row's truth.
struct Truth<'a> {
    /// `[context][product][row]`.
    value: &'a [Vec<Vec<f64>>],
    bayes: Option<&'a Vec<Vec<Vec<f64>>>>,
    none: f64,
    bayes_none: f64,
    row: usize,
    contact_cost: f64,
}

impl Sums {
    fn add(
        &mut self,
        t: &Truth<'_>,
        allowed: &[usize],
        decision: &Decision,
        products: &[String],
        contexts: &[String],
    ) -> Result<()> {
        let row = t.row;
        let net = |c: usize, p: usize| t.value[c][p][row] - t.contact_cost;
        // "No offer" competes when contacts cost something, as in the
        // policy, and when users buy unoffered: an offer may then lose value.
        let with_none =
            t.contact_cost > 0.0 || t.none > 0.0 || t.bayes_none > 0.0 || allowed.is_empty();
        let mut oracle = if with_none { t.none } else { f64::NEG_INFINITY };
        let mut random = 0.0;
        let mut bayes_pick: Option<(f64, f64)> = with_none.then_some((t.bayes_none, t.none));
        for c in 0..contexts.len() {
            for &p in allowed {
                let v = net(c, p);
                oracle = oracle.max(v);
                random += v;
                if let Some(bayes) = t.bayes {
                    let b = bayes[c][p][row] - t.contact_cost;
                    if bayes_pick.is_none_or(|(best, _)| b > best) {
                        bayes_pick = Some((b, v));
                    }
                }
            }
        }
        self.oracle_no_offer += usize::from(with_none && oracle == t.none);
        self.bayes_no_offer +=
            usize::from(t.bayes.is_some() && bayes_pick.is_some_and(|(b, _)| b == t.bayes_none));
        let candidates = contexts.len() * allowed.len();
        let random = if candidates == 0 {
            t.none
        } else {
            random / candidates as f64
        };
        self.fixed_context.resize(contexts.len(), 0.0);
        let chosen = match &decision.offer {
            None => {
                self.no_offer += 1;
                for sum in &mut self.fixed_context {
                    *sum += t.none;
                }
                t.none
            }
            Some(offer) => {
                let p = products
                    .iter()
                    .position(|p| p == offer)
                    .expect("a product of the model");
                if !allowed.contains(&p) {
                    self.ineligible += 1;
                    for sum in &mut self.fixed_context {
                        *sum += t.none;
                    }
                    self.record(t.none, random, oracle, bayes_pick);
                    return Ok(());
                }
                let key: String = decision
                    .context
                    .iter()
                    .map(|(_, v)| format!("__{v}"))
                    .collect();
                let c = contexts.iter().position(|c| *c == key).ok_or_else(|| {
                    Error::from(DataError::Truth {
                        reason: format!("it has no context {key:?} of decision {offer}"),
                    })
                })?;
                for (fixed, sum) in self.fixed_context.iter_mut().enumerate() {
                    *sum += net(fixed, p);
                }
                self.value_added
                    .push((decision.expected_value as f32, (net(c, p) - t.none) as f32));
                net(c, p)
            }
        };
        self.record(chosen, random, oracle, bayes_pick);
        Ok(())
    }

    /// Adds one user's values: the policy's, the random offer's, the
    /// oracle's, and the Bayes policy's pick (its belief and true value).
    fn record(&mut self, chosen: f64, random: f64, oracle: f64, bayes_pick: Option<(f64, f64)>) {
        self.rows += 1;
        self.policy += chosen;
        self.random += random;
        self.oracle += oracle;
        self.bayes += bayes_pick.map_or(0.0, |(_, v)| v);
    }

    fn finish(
        self,
        truth: &Path,
        contact_cost: f64,
        best_auc: &BinaryMetrics,
        true_auc: &BinaryMetrics,
        columns: &Columns,
    ) -> DecisionQuality {
        let n = self.rows.max(1) as f64;
        let (policy, random, oracle) = (self.policy / n, self.random / n, self.oracle / n);
        let bayes = columns.bayes.is_some().then_some(self.bayes / n);
        let share = |v: f64, top: f64| (v - random) / (top - random);
        let logging = columns.logging.is_some().then_some(self.logging / n);
        let over_logging = |v: f64| logging.map(|l| (v - l) / (oracle - l));
        let fixed_context = self
            .fixed_context
            .iter()
            .map(|sum| sum / n)
            .reduce(f64::max)
            .unwrap_or(policy);
        DecisionQuality {
            truth: truth.to_path_buf(),
            rows: self.rows,
            contact_cost,
            policy_value: policy,
            random_value: random,
            oracle_value: oracle,
            bayes_value: bayes,
            share_of_lift: share(policy, oracle),
            bayes_share_of_lift: bayes.map(|b| share(b, oracle)),
            share_of_bayes_lift: bayes.map(|b| share(policy, b)),
            fixed_context_value: fixed_context,
            context_share_of_lift: (policy - fixed_context) / (policy - random),
            no_offer_rate: self.no_offer as f64 / n,
            oracle_no_offer_rate: self.oracle_no_offer as f64 / n,
            bayes_no_offer_rate: bayes.map(|_| self.bayes_no_offer as f64 / n),
            logging_value: logging,
            share_of_logging_lift: over_logging(policy),
            bayes_share_of_logging_lift: bayes.and_then(over_logging),
            ineligible_rate: self.ineligible as f64 / n,
            best_achievable_auc: columns.bayes_p.as_ref().and_then(|_| best_auc.finish().auc),
            true_auc: columns.true_p.as_ref().and_then(|_| true_auc.finish().auc),
            value_calibration: value_bins(self.value_added, VALUE_BINS),
        }
    }
}

/// `(predicted, actual)` pairs in `bins` groups of (nearly) equal size by
/// the prediction, lowest first.
fn value_bins(mut pairs: Vec<(f32, f32)>, bins: usize) -> Vec<ValueBin> {
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let (n, bins) = (pairs.len(), bins.min(pairs.len()));
    (0..bins)
        .map(|k| {
            let group = &pairs[k * n / bins..(k + 1) * n / bins];
            let mean = |value: fn(&(f32, f32)) -> f32| {
                group.iter().map(|p| f64::from(value(p))).sum::<f64>() / group.len() as f64
            };
            ValueBin {
                offers: group.len(),
                predicted: mean(|p| p.0),
                actual: mean(|p| p.1),
            }
        })
        .collect()
}

impl Columns {
    /// The truth's columns for these products and contexts, checked against
    /// every truth file's schema.
    fn find(files: &[PathBuf], products: &[String], contexts: &[String]) -> Result<Columns> {
        let mut schemas = Vec::new();
        for file in files {
            schemas.push((file, source::schema(file)?));
        }
        let present = |name: &str| schemas.iter().all(|(_, s)| s.get(name).is_some());
        let grid = |prefix: &str| -> Vec<Vec<String>> {
            contexts
                .iter()
                .map(|c| {
                    products
                        .iter()
                        .map(|p| format!("{prefix}__{p}{c}"))
                        .collect()
                })
                .collect()
        };
        let per_product = |prefix: &str| -> Vec<String> {
            products.iter().map(|p| format!("{prefix}__{p}")).collect()
        };
        // Optional groups count when every column of the group is there.
        let all = |names: Vec<String>| names.iter().all(|n| present(n)).then_some(names);
        let value = grid("value");
        for name in value.iter().flatten() {
            if let Some((file, schema)) = schemas.iter().find(|(_, s)| s.get(name).is_none()) {
                return Err(DataError::MissingColumn {
                    path: (*file).clone(),
                    column: name.clone(),
                    role: "truth (value of each product in each context)",
                    available: format!("{} columns", schema.len()),
                }
                .into());
            }
        }
        let bayes = grid("bayes_value");
        let bayes = bayes.iter().flatten().all(|n| present(n)).then_some(bayes);
        Ok(Columns {
            value,
            bayes,
            eligible: all(per_product("eligible")),
            none: present("value__none").then(|| "value__none".to_string()),
            bayes_none: present("bayes_value__none").then(|| "bayes_value__none".to_string()),
            bayes_p: all(per_product("bayes_p_convert")),
            true_p: all(per_product("p_convert")),
            logging: (present("logging_value") && present("logging_contact"))
                .then(|| ["logging_value".to_string(), "logging_contact".to_string()]),
        })
    }

    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.value.iter().flatten().map(String::as_str).collect();
        for group in [&self.bayes].into_iter().flatten() {
            names.extend(group.iter().flatten().map(String::as_str));
        }
        for group in [&self.eligible, &self.bayes_p, &self.true_p]
            .into_iter()
            .flatten()
        {
            names.extend(group.iter().map(String::as_str));
        }
        names.extend(self.none.as_deref());
        names.extend(self.bayes_none.as_deref());
        names.extend(self.logging.iter().flatten().map(String::as_str));
        names
    }
}

/// A column cast to `dtype`; a failed cast is an error naming the file.
fn cast(file: &Path, frame: &DataFrame, name: &str, dtype: &DataType) -> Result<Column> {
    frame
        .column(name)
        .and_then(|c| c.cast(dtype))
        .map_err(|source| polars_error(file, source))
}

fn polars_error(file: &Path, source: PolarsError) -> Error {
    Error::from(DataError::Polars {
        path: file.to_path_buf(),
        source,
    })
}

/// A column as f64s; a null or a non-number is an error naming the file
/// and column.
fn floats(file: &Path, frame: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let column = cast(file, frame, name, &DataType::Float64)?;
    let values = column.f64().map_err(|e| polars_error(file, e))?;
    if values.null_count() > 0 {
        return Err(DataError::Mismatch {
            path: file.to_path_buf(),
            reason: format!(
                "column {name:?} has {} null value(s); the truth needs a number in every row",
                values.null_count()
            ),
        }
        .into());
    }
    Ok(values.into_no_null_iter().collect())
}

fn strings(file: &Path, frame: &DataFrame, name: &str) -> Result<Vec<Option<String>>> {
    let column = cast(file, frame, name, &DataType::String)?;
    Ok(column
        .str()
        .map_err(|e| polars_error(file, e))?
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(surface: &str) -> Decision {
        Decision {
            id: None,
            offer: Some("duo".into()),
            context: vec![("surface".into(), surface.into())],
            propensity: 1.0,
            expected_value: 0.0,
            candidates: Vec::new(),
            holdout: false,
        }
    }

    /// Two users who each want the offer on a different surface: a policy
    /// that shows each theirs gets all its lift from the context choice.
    #[test]
    fn the_context_share_counts_what_choosing_the_surface_per_user_adds() {
        // [context][product][row]: user 0 answers on email, user 1 on push.
        let value = vec![vec![vec![1.0, 0.0]], vec![vec![0.0, 1.0]]];
        let contexts = ["__email".to_string(), "__push".to_string()];
        let products = ["duo".to_string()];
        let mut sums = Sums::default();
        for (row, surface) in [(0, "email"), (1, "push")] {
            let truth = Truth {
                value: &value,
                bayes: None,
                none: 0.0,
                bayes_none: 0.0,
                row,
                contact_cost: 0.0,
            };
            sums.add(&truth, &[0], &decision(surface), &products, &contexts)
                .unwrap();
        }
        let columns = Columns {
            value: Vec::new(),
            bayes: None,
            eligible: None,
            none: None,
            bayes_none: None,
            bayes_p: None,
            true_p: None,
            logging: None,
        };
        let (best, truest) = (BinaryMetrics::new(), BinaryMetrics::new());
        let q = sums.finish(Path::new("truth"), 0.0, &best, &truest, &columns);
        assert_eq!(q.policy_value, 1.0);
        assert_eq!(q.random_value, 0.5);
        // Either surface for both users is worth 0.5 on average.
        assert_eq!(q.fixed_context_value, 0.5);
        assert_eq!(q.context_share_of_lift, 1.0);
        assert_eq!(q.share_of_lift, 1.0);
    }

    /// The model expects each offer to add half what it does: every group
    /// shows it, the most promising offers last, and no offer (a user
    /// left alone) is counted.
    #[test]
    fn value_calibration_sets_predicted_against_true_value_added() {
        // [context][product][row]: offering duo is worth 2 * (row + 1);
        // unoffered, a user buys 1 anyway.
        let value = vec![vec![(1..=4).map(|v| 2.0 * f64::from(v) + 1.0).collect()]];
        let contexts = ["__email".to_string()];
        let products = ["duo".to_string()];
        let mut sums = Sums::default();
        for row in 0..5 {
            let mut d = decision("email");
            if row == 4 {
                d.offer = None;
            } else {
                d.expected_value = row as f64 + 1.0;
            }
            let truth = Truth {
                value: &value,
                bayes: None,
                none: 1.0,
                bayes_none: 0.0,
                row: row.min(3),
                contact_cost: 0.0,
            };
            sums.add(&truth, &[0], &d, &products, &contexts).unwrap();
        }
        let bins = value_bins(sums.value_added, 2);
        let pairs: Vec<(usize, f64, f64)> = bins
            .iter()
            .map(|b| (b.offers, b.predicted, b.actual))
            .collect();
        assert_eq!(pairs, [(2, 1.5, 3.0), (2, 3.5, 7.0)]);
        assert!(value_bins(Vec::new(), VALUE_BINS).is_empty());
    }
}
