//! Where a probability becomes an offer: expected values of the eligible
//! candidates (rules per product and per context), per-product caps and a
//! contact budget through shadow prices, exploration, a randomised no-offer
//! holdout, and the propensity of every decision.
//!
//! The value of offering product `p` in context `c` to user `u` is what the
//! offer adds:
//! `P(convert | u, p, c) * sum_k P(plan k | u, p) * value(k) * weight(p)`
//! minus the same with no offer (what `u` buys anyway, when the model has a
//! no-offer arm; else 0) minus the contact cost. "No offer" is a candidate
//! worth 0 whenever contacting has a cost, a contact budget applies or the
//! model knows what users do unoffered, so an offer that only moves a sale
//! (a cheaper plan instead of the one the user would have bought) loses to
//! leaving the user alone.
//! Plans are thereby weighed against add-ons by value, not by conversion
//! rate.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::{EligibilityRule, Exploration, PolicyConfig};

/// One thing the policy may do for a user: an offer in a context, or
/// nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The product offered; `None` for "no offer".
    pub offer: Option<String>,
    /// Context column -> value (empty for "no offer").
    pub context: Vec<(String, String)>,
    /// P(convert | user, offer, context); for "no offer", P(convert) with no
    /// offer (0 without a no-offer arm).
    pub p_convert: f64,
    /// The expected value the candidate adds over no offer, net of the
    /// contact cost, before shadow prices; 0 for "no offer".
    pub expected_value: f64,
    /// The probability that the policy chooses this candidate.
    pub probability: f64,
}

/// A candidate while deciding: indices where [`Candidate`] has names, so
/// building one allocates nothing (a user has one per product and context
/// combination, 72 in the default world). Only the choice and the listed
/// candidates are named.
#[derive(Debug, Clone, Copy)]
struct Scored {
    /// The product's index; `None` for "no offer".
    product: Option<usize>,
    /// The context combination's index (0 for "no offer").
    context: usize,
    p_convert: f64,
    expected_value: f64,
    probability: f64,
}

/// The policy's choice for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub id: Option<String>,
    /// The chosen offer (`None`: no offer).
    pub offer: Option<String>,
    pub context: Vec<(String, String)>,
    /// The probability with which this decision was drawn.
    pub propensity: f64,
    pub expected_value: f64,
    /// Every eligible candidate, best expected value first.
    pub candidates: Vec<Candidate>,
    /// Whether the user is in the policy's randomised no-offer holdout
    /// (`policy.holdout`).
    #[serde(default)]
    pub holdout: bool,
}

/// What the policy needs to know about one user's candidates: for each
/// product and context combination, P(convert), and the value a converting
/// user brings per product offered.
#[derive(Debug, Clone, PartialEq)]
pub struct UserScores {
    /// `[contexts][products]`: P(convert | user, product, context).
    pub p_convert: Vec<Vec<f64>>,
    /// `[products]`: expected value of the purchase if the user converts
    /// after being offered each product (plan-choice head times values).
    pub value_if_converted: Vec<f64>,
    /// What the user does with no offer, from a model with a no-offer arm.
    pub no_offer: Option<NoOffer>,
}

/// A user's outcome with no offer: what any offer is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoOffer {
    /// P(convert) with no offer.
    pub p_convert: f64,
    /// The expected value of what the user buys with no offer.
    pub value: f64,
}

/// The decision policy for one model: its products, context combinations
/// and the business's rules.
#[derive(Debug, Clone)]
pub struct Policy {
    products: Vec<String>,
    /// Each context combination as (column, value) pairs.
    contexts: Vec<Vec<(String, String)>>,
    config: PolicyConfig,
    seed: u64,
    /// How many candidates a decision lists (all when `None`).
    listed: Option<usize>,
}

impl Policy {
    /// Decisions list their best `top_k` candidates only; the choice is
    /// made over all of them either way.
    pub fn listing(self, top_k: usize) -> Policy {
        Policy {
            listed: Some(top_k),
            ..self
        }
    }

    /// A policy over `products` (in the model's order) and context
    /// combinations; `seed` makes exploration reproducible per row id.
    pub fn new(
        products: Vec<String>,
        contexts: Vec<Vec<(String, String)>>,
        config: PolicyConfig,
        seed: u64,
    ) -> Policy {
        let contexts = if contexts.is_empty() {
            vec![Vec::new()]
        } else {
            contexts
        };
        Policy {
            products,
            contexts,
            config,
            seed,
            listed: None,
        }
    }

    pub fn products(&self) -> &[String] {
        &self.products
    }

    pub fn contexts(&self) -> &[Vec<(String, String)>] {
        &self.contexts
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    fn weight(&self, product: usize) -> f64 {
        self.config
            .weights
            .get(&self.products[product])
            .copied()
            .unwrap_or(1.0)
    }

    /// Whether the rules allow `product` for a user whose column values
    /// `value(column)` returns.
    pub fn eligible(&self, product: usize, value: &dyn Fn(&str) -> Option<String>) -> bool {
        let name = &self.products[product];
        !self
            .config
            .exclude
            .iter()
            .filter(|rule| rule.contexts.is_empty())
            .any(|rule| excludes(rule, name, value))
    }

    /// Candidates with expected values (no probabilities yet), in a fixed
    /// order: contexts outer, products inner, then "no offer".
    fn candidates(
        &self,
        scores: &UserScores,
        value: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<Scored> {
        let cost = self.config.contact_cost;
        let baseline = scores.no_offer.map_or(0.0, |n| n.value);
        let eligible: Vec<bool> = (0..self.products.len())
            .map(|p| self.eligible(p, value))
            .collect();
        // Rules for some contexts only are checked per candidate.
        let per_context: Vec<&EligibilityRule> = self
            .config
            .exclude
            .iter()
            .filter(|r| !r.contexts.is_empty())
            .collect();
        let mut out = Vec::new();
        for (c, context) in self.contexts.iter().enumerate() {
            for (p, product) in self.products.iter().enumerate() {
                if !eligible[p]
                    || per_context
                        .iter()
                        .any(|r| applies_to(r, context) && excludes(r, product, value))
                {
                    continue;
                }
                let p_convert = scores.p_convert[c][p];
                out.push(Scored {
                    product: Some(p),
                    context: c,
                    p_convert,
                    expected_value: p_convert * scores.value_if_converted[p] * self.weight(p)
                        - baseline
                        - cost,
                    probability: 0.0,
                });
            }
        }
        let budget = self.config.contact_budget.is_some();
        if cost > 0.0 || scores.no_offer.is_some() || budget || out.is_empty() {
            out.push(Scored {
                product: None,
                context: 0,
                p_convert: scores.no_offer.map_or(0.0, |n| n.p_convert),
                expected_value: 0.0,
                probability: 0.0,
            });
        }
        out
    }

    /// Shadow prices per product that bring each capped product's share of
    /// greedy decisions in this batch to at most its cap, then one more, on
    /// every contact, that brings the share of users offered anything to at
    /// most `contact_budget` (the users left out are those whose best offer
    /// adds least). Found by bisection per price, repeated until no limit is
    /// exceeded (counts fall as a price rises). The contact price is a
    /// threshold on what an offer adds: applied as extra contact cost, it
    /// makes the same choice one user at a time (online, or in other shards).
    fn shadow_prices(&self, batch: &[Vec<Scored>]) -> Vec<f64> {
        let products = self.products.len();
        let mut prices = vec![0.0; products + 1];
        let budget = self.config.contact_budget.filter(|&b| b < 1.0);
        if (self.config.caps.is_empty() && budget.is_none()) || batch.is_empty() {
            return prices;
        }
        let index: std::collections::HashMap<&str, usize> = self
            .products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let n = batch.len() as f64;
        let spread = batch
            .iter()
            .flatten()
            .map(|c| c.expected_value.abs())
            .fold(0.0, f64::max)
            * 2.0
            + 1.0;
        // The caps' products, then the budget on contacts (index `products`).
        let limits: Vec<(usize, f64)> = self
            .config
            .caps
            .iter()
            .map(|(product, &cap)| (index[product.as_str()], cap))
            .chain(budget.map(|b| (products, b)))
            .collect();
        for _pass in 0..20 {
            let mut changed = false;
            for &(p, cap) in &limits {
                let allowed = (cap * n).floor();
                if self.count(batch, &prices, p) as f64 <= allowed {
                    continue;
                }
                let (mut lo, mut hi) = (prices[p], prices[p] + spread);
                for _ in 0..60 {
                    let mid = 0.5 * (lo + hi);
                    prices[p] = mid;
                    if self.count(batch, &prices, p) as f64 <= allowed {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                prices[p] = hi;
                changed = true;
            }
            if !changed {
                break;
            }
        }
        prices
    }

    fn adjusted(&self, candidate: &Scored, prices: &[f64]) -> f64 {
        match candidate.product {
            None => candidate.expected_value,
            Some(p) => candidate.expected_value - prices[p] - prices[self.products.len()],
        }
    }

    fn best(&self, candidates: &[Scored], prices: &[f64]) -> usize {
        // Ties go to the first candidate, so decisions are deterministic.
        let mut best = 0;
        for (i, c) in candidates.iter().enumerate() {
            if self.adjusted(c, prices) > self.adjusted(&candidates[best], prices) {
                best = i;
            }
        }
        best
    }

    /// Users whose best candidate is `product`, or any offer for index
    /// `products` (the contact budget's).
    fn count(&self, batch: &[Vec<Scored>], prices: &[f64], product: usize) -> usize {
        batch
            .iter()
            .filter(|candidates| {
                let offered = candidates[self.best(candidates, prices)].product;
                if product < self.products.len() {
                    offered == Some(product)
                } else {
                    offered.is_some()
                }
            })
            .count()
    }

    /// The candidate with names, as decisions report it.
    fn named(&self, candidate: &Scored) -> Candidate {
        Candidate {
            offer: candidate.product.map(|p| self.products[p].clone()),
            context: match candidate.product {
                Some(_) => self.contexts[candidate.context].clone(),
                None => Vec::new(),
            },
            p_convert: candidate.p_convert,
            expected_value: candidate.expected_value,
            probability: candidate.probability,
        }
    }

    /// One user's decision from its candidates (in [`candidates`]'s
    /// order) and the batch's shadow prices: the exploration policy's
    /// probabilities, the draw seeded by the id (or `#row`), the holdout,
    /// and the candidates listed best first.
    ///
    /// [`candidates`]: Self::candidates
    fn decide_user(
        &self,
        exploration: Exploration,
        prices: &[f64],
        id: Option<String>,
        row: usize,
        mut candidates: Vec<Scored>,
    ) -> Decision {
        let adjusted: Vec<f64> = candidates
            .iter()
            .map(|c| self.adjusted(c, prices))
            .collect();
        let probabilities = probabilities(exploration, &adjusted, self.best(&candidates, prices));
        for (c, p) in candidates.iter_mut().zip(&probabilities) {
            c.probability = *p;
        }
        let key = id.clone().unwrap_or_else(|| format!("#{row}"));
        let u = uniform(self.seed, &key);
        let mut chosen = sample(&probabilities, u);
        let share = self.config.holdout;
        // The holdout is drawn from its own hash, independent of the
        // exploration draw: a held-out user gets no offer, everyone
        // else the exploration policy's draw. The probabilities are
        // the mixture's, so that logged propensities are true.
        let holdout = share > 0.0 && uniform(self.seed, &format!("holdout:{key}")) < share;
        if share > 0.0 {
            let none = match candidates.iter().position(|c| c.product.is_none()) {
                Some(none) => none,
                None => {
                    candidates.push(Scored {
                        product: None,
                        context: 0,
                        p_convert: 0.0,
                        expected_value: 0.0,
                        probability: 0.0,
                    });
                    candidates.len() - 1
                }
            };
            for c in &mut candidates {
                c.probability *= 1.0 - share;
            }
            candidates[none].probability += share;
            if holdout {
                chosen = none;
            }
        }
        let choice = self.named(&candidates[chosen]);
        candidates.sort_by(|a, b| b.expected_value.total_cmp(&a.expected_value));
        let listed = self.listed.unwrap_or(candidates.len());
        Decision {
            id,
            offer: choice.offer,
            context: choice.context,
            propensity: choice.probability,
            expected_value: choice.expected_value,
            candidates: candidates
                .iter()
                .take(listed)
                .map(|c| self.named(c))
                .collect(),
            holdout,
        }
    }

    /// Decides for a batch of users. `value(row, column)` returns a user's
    /// raw input value as text (for the eligibility rules); `ids` seed each
    /// row's draw (the row's position stands in for a missing id).
    pub fn decide(
        &self,
        exploration: Exploration,
        scores: &[UserScores],
        ids: &[Option<String>],
        value: &(dyn Fn(usize, &str) -> Option<String> + Sync),
    ) -> Vec<Decision> {
        self.decide_priced(exploration, scores, ids, value).0
    }

    /// [`decide`](Self::decide), also returning the batch's shadow prices:
    /// one per product, then the contact price. They bring each capped
    /// product's share of greedy decisions to at most its cap and the share
    /// of users offered anything to at most `contact_budget`; the contact
    /// price, applied as extra contact cost, makes the same choice one user
    /// at a time (online, or in other shards).
    pub fn decide_priced(
        &self,
        exploration: Exploration,
        scores: &[UserScores],
        ids: &[Option<String>],
        value: &(dyn Fn(usize, &str) -> Option<String> + Sync),
    ) -> (Vec<Decision>, Vec<f64>) {
        // Caps and a contact budget price the whole batch, so every user's
        // candidates are built first; without them each user's are built,
        // decided and cut to `listed` in turn, which keeps a large batch's
        // memory to what is returned.
        let constrained =
            !self.config.caps.is_empty() || self.config.contact_budget.is_some_and(|b| b < 1.0);
        let candidates = |row: usize| self.candidates(&scores[row], &|column| value(row, column));
        let batch: Vec<Vec<Scored>> = if constrained {
            map_rows(scores.len(), candidates)
        } else {
            Vec::new()
        };
        let prices = if constrained {
            self.shadow_prices(&batch)
        } else {
            vec![0.0; self.products.len() + 1]
        };
        // A user's decision depends on its own candidates and id (and the
        // batch's prices) only, so users are decided side by side.
        let decisions = map_rows(scores.len(), |row| {
            let id = ids.get(row).cloned().flatten();
            let candidates = match batch.get(row) {
                Some(built) => built.clone(),
                None => candidates(row),
            };
            self.decide_user(exploration, &prices, id, row, candidates)
        });
        (decisions, prices)
    }
}

/// Batches of at least this many users are decided side by side on the CPU
/// pool; a request of a few stays on its own thread, as handing work to the
/// pool costs a thread wake-up.
const PARALLEL_ROWS: usize = 512;

/// `f` over `0..rows`, in order.
fn map_rows<T: Send>(rows: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if rows >= PARALLEL_ROWS {
        (0..rows).into_par_iter().map(&f).collect()
    } else {
        (0..rows).map(f).collect()
    }
}

fn excludes(rule: &EligibilityRule, product: &str, value: &dyn Fn(&str) -> Option<String>) -> bool {
    if !rule.products.is_empty() && !rule.products.iter().any(|p| p == product) {
        return false;
    }
    let v = value(&rule.column);
    let v = v.as_deref();
    let number = v.and_then(|v| v.trim().parse::<f64>().ok());
    (v.is_some_and(|v| rule.is_in.iter().any(|x| x == v)))
        || (!rule.not_in.is_empty() && !v.is_some_and(|v| rule.not_in.iter().any(|x| x == v)))
        || (rule.equals_product && v == Some(product))
        || rule.below.zip(number).is_some_and(|(b, x)| x < b)
        || rule.above.zip(number).is_some_and(|(a, x)| x > a)
}

/// Whether a rule limited to some contexts covers this candidate's context.
fn applies_to(rule: &EligibilityRule, context: &[(String, String)]) -> bool {
    rule.contexts.iter().all(|(column, values)| {
        context
            .iter()
            .any(|(c, v)| c == column && values.iter().any(|x| x == v))
    })
}

/// The probability of each candidate under an exploration rule, given the
/// (shadow-priced) expected values and the index of the best.
pub fn probabilities(exploration: Exploration, values: &[f64], best: usize) -> Vec<f64> {
    let k = values.len() as f64;
    match exploration {
        Exploration::Greedy => (0..values.len())
            .map(|i| f64::from(u8::from(i == best)))
            .collect(),
        Exploration::Epsilon(e) => (0..values.len())
            .map(|i| e / k + if i == best { 1.0 - e } else { 0.0 })
            .collect(),
        Exploration::Softmax(t) => {
            let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = values.iter().map(|v| ((v - top) / t).exp()).collect();
            let total: f64 = weights.iter().sum();
            weights.iter().map(|w| w / total).collect()
        }
    }
}

/// A uniform number in [0, 1) from the seed and a row's id: the same id and
/// seed always draw the same decision.
pub fn uniform(seed: u64, id: &str) -> f64 {
    (xxh3_64_with_seed(id.as_bytes(), seed) >> 11) as f64 / (1u64 << 53) as f64
}

/// The index whose cumulative probability first exceeds `u`.
fn sample(probabilities: &[f64], u: f64) -> usize {
    let mut total = 0.0;
    for (i, p) in probabilities.iter().enumerate() {
        total += p;
        if u < total {
            return i;
        }
    }
    // Rounding: the last candidate with any probability.
    probabilities.iter().rposition(|p| *p > 0.0).unwrap_or(0)
}
