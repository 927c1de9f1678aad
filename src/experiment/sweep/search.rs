//! Searching a space rather than enumerating a grid: parameter specs
//! (`choice`, `uniform`, `loguniform`, `int`, `logint`), the random and TPE
//! samplers that propose trials, and the median and ASHA pruners that stop
//! bad trials early.
//!
//! The sampler and pruners follow Optuna's defaults, so results read like
//! those of the tool most ML engineers know:
//! - TPE (Bergstra et al., "Algorithms for Hyper-Parameter Optimization",
//!   NeurIPS 2011), univariate as Optuna's `TPESampler`: the finished trials
//!   are split into the best `gamma(n) = min(ceil(n / 10), 25)` and the rest;
//!   each parameter gets a Parzen estimator over each group (a truncated
//!   Gaussian per observation plus a prior spanning the range, each as wide
//!   as its farther neighbour); 24 candidates drawn from the good one are
//!   scored by `log l(x) - log g(x)`, and the best is proposed.
//! - ASHA's stopping rule (Li et al., "A System for Massively Parallel
//!   Hyperparameter Tuning", MLSys 2020), as Optuna's
//!   `SuccessiveHalvingPruner`: at rung epochs `min_epochs * eta^k` a trial
//!   continues only when its value is in the top `1/eta` of every value seen
//!   at that rung.
//! - The median rule (Golovin et al., "Google Vizier", KDD 2017), as
//!   Optuna's `MedianPruner`.
//!
//! Trials run the whole `train.epochs` schedule they were planned with, and
//! pruning only stops them early, so the values compared at an epoch come
//! from the same point of the same learning-rate schedule.

use super::grid::{Trial, split_top_level};
use crate::error::SweepError;
use chacha20::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::collections::HashMap;

/// One swept parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// One of these TOML values.
    Choice(Vec<String>),
    /// A float in `[lo, hi]`, uniform or (with `log`) log-uniform.
    Float {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
        /// Sample the logarithm uniformly.
        log: bool,
    },
    /// An integer in `[lo, hi]`, uniform or (with `log`) log-uniform.
    Int {
        /// Lower bound.
        lo: i64,
        /// Upper bound.
        hi: i64,
        /// Sample the logarithm uniformly.
        log: bool,
    },
}

impl Param {
    /// The range in the sampler's coordinates: the logarithm for log
    /// scales; integers widened by half a step so each is as likely.
    fn bounds(&self) -> (f64, f64) {
        match *self {
            Param::Choice(ref values) => (0.0, values.len() as f64),
            Param::Float { lo, hi, log } => scale(lo, hi, log),
            Param::Int { lo, hi, log } => {
                let (lo, hi) = (lo as f64 - 0.5, hi as f64 + 0.5);
                if log {
                    // Keep the widened bounds positive.
                    (lo.max(0.5).ln(), hi.ln())
                } else {
                    (lo, hi)
                }
            }
        }
    }

    fn is_log(&self) -> bool {
        matches!(
            self,
            Param::Float { log: true, .. } | Param::Int { log: true, .. }
        )
    }

    /// The override value (TOML) at coordinate `x` (an index for choices).
    fn value(&self, x: f64) -> String {
        let raw = if self.is_log() { x.exp() } else { x };
        match self {
            Param::Choice(values) => values[(x as usize).min(values.len() - 1)].clone(),
            Param::Float { lo, hi, .. } => float_text(round_significant(raw.clamp(*lo, *hi), 4)),
            Param::Int { lo, hi, .. } => (raw.round() as i64).clamp(*lo, *hi).to_string(),
        }
    }

    /// The coordinate of an override value this parameter produced.
    fn coordinate(&self, value: &str) -> Option<f64> {
        match self {
            Param::Choice(values) => values.iter().position(|v| v == value).map(|i| i as f64),
            Param::Float { log, .. } | Param::Int { log, .. } => {
                let x: f64 = value.parse().ok()?;
                Some(if *log { x.ln() } else { x })
            }
        }
    }

    /// Values that exercise the parameter's extremes: every choice, or
    /// both bounds. The CLI checks a config with each before any trial.
    pub fn probe_values(&self) -> Vec<String> {
        match self {
            Param::Choice(values) => values.clone(),
            _ => {
                let (lo, hi) = self.bounds();
                vec![self.value(lo), self.value(hi)]
            }
        }
    }
}

fn scale(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if log { (lo.ln(), hi.ln()) } else { (lo, hi) }
}

fn round_significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let magnitude = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * magnitude).round() / magnitude
}

/// A float as TOML reads it back as a float (always with `.` or `e`).
fn float_text(x: f64) -> String {
    let text = x.to_string();
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// Parses one `--grid` argument: `KEY=V1,V2,...` (a choice), or
/// `KEY=choice(V1,...)`, `uniform(LO,HI)`, `loguniform(LO,HI)`,
/// `int(LO,HI)` or `logint(LO,HI)`.
pub fn parse_param(arg: &str) -> Result<(String, Param), SweepError> {
    let bad = |reason: String| SweepError::Grid {
        arg: arg.to_string(),
        reason,
    };
    let Some((key, spec)) = arg.split_once('=') else {
        return Err(bad(
            "expected KEY=V1,V2,... or KEY=uniform(LO,HI) and the like".into(),
        ));
    };
    let spec = spec.trim();
    let function = ["choice", "uniform", "loguniform", "int", "logint"]
        .into_iter()
        .find_map(|name| {
            let inner = spec.strip_prefix(name)?.trim_start().strip_prefix('(')?;
            Some((name, inner.strip_suffix(')')?))
        });
    let Some((name, inner)) = function else {
        let (key, values) = super::grid::parse_grid(arg)?;
        return Ok((key, Param::Choice(values)));
    };
    if name == "choice" {
        return match super::grid::parse_grid(&format!("{key}={inner}")) {
            Ok((key, values)) => Ok((key, Param::Choice(values))),
            Err(SweepError::Grid { reason, .. }) => Err(bad(reason)),
            Err(other) => Err(other),
        };
    }
    let key = key.trim();
    if key.is_empty() {
        return Err(bad("the key before '=' is empty".into()));
    }
    let bounds = split_top_level(inner).map_err(bad)?;
    let [lo, hi] = bounds.as_slice() else {
        return Err(bad(format!("{name} takes two bounds, LO and HI")));
    };
    let log = name.starts_with("log");
    let param = if name.ends_with("int") {
        let parse = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| bad(format!("{s:?} is not an integer")))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo >= hi {
            return Err(bad(format!("LO must be below HI, got {lo} and {hi}")));
        }
        if log && lo < 1 {
            return Err(bad("logint needs LO of 1 or more".into()));
        }
        Param::Int { lo, hi, log }
    } else {
        let parse = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(format!("{s:?} is not a finite number")))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo >= hi {
            return Err(bad(format!("LO must be below HI, got {lo} and {hi}")));
        }
        if log && lo <= 0.0 {
            return Err(bad("loguniform needs LO above 0".into()));
        }
        Param::Float { lo, hi, log }
    };
    Ok((key.to_string(), param))
}

/// How new trials are proposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// Every parameter drawn from its prior.
    Random,
    /// Tree-structured Parzen estimators after `startup` random trials.
    Tpe {
        /// Random trials before TPE takes over.
        startup: usize,
    },
}

impl Sampler {
    /// TPE with Optuna's 10 random trials, fewer for small budgets: a third
    /// of `trials`, at least 3, so that most of a small search is guided.
    pub fn tpe_for(trials: usize) -> Sampler {
        Sampler::Tpe {
            startup: (trials / 3).clamp(3, 10),
        }
    }
}

/// A finished or pruned trial as the sampler sees it.
pub struct Observation<'a> {
    /// The trial's overrides.
    pub trial: &'a Trial,
    /// The metric as a loss (lower is better); `None` for pruned trials,
    /// which count among the bad ones.
    pub loss: Option<f64>,
}

/// The search space: parameters in `--grid` order.
#[derive(Clone, Debug, PartialEq)]
pub struct Space(pub Vec<(String, Param)>);

impl Space {
    /// Parses every `--grid` argument; keys must be distinct.
    pub fn parse(args: &[String]) -> Result<Space, SweepError> {
        if args.is_empty() {
            return Err(SweepError::NoGrid);
        }
        let mut params: Vec<(String, Param)> = Vec::new();
        for arg in args {
            let (key, param) = parse_param(arg)?;
            if params.iter().any(|(k, _)| *k == key) {
                return Err(SweepError::DuplicateKey { key });
            }
            params.push((key, param));
        }
        Ok(Space(params))
    }

    /// The grid's `(key, values)` when every parameter is a choice; `None`
    /// when one is a range.
    pub fn grid(&self) -> Option<Vec<(String, Vec<String>)>> {
        self.0
            .iter()
            .map(|(key, param)| match param {
                Param::Choice(values) => Some((key.clone(), values.clone())),
                _ => None,
            })
            .collect()
    }

    /// The `index`-th proposal of a search seeded with `seed`, given what
    /// has been observed so far. Proposal `index` uses its own RNG stream,
    /// so random proposals do not depend on how trials interleaved.
    pub fn propose(
        &self,
        sampler: Sampler,
        seed: u64,
        index: u64,
        observed: &[Observation<'_>],
    ) -> Trial {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        let guided = match sampler {
            Sampler::Random => false,
            Sampler::Tpe { startup } => observed.len() >= startup.max(2),
        };
        let overrides = self
            .0
            .iter()
            .map(|(key, param)| {
                let x = if guided {
                    tpe_coordinate(key, param, observed, &mut rng)
                } else {
                    prior_sample(param, &mut rng)
                };
                (key.clone(), param.value(x))
            })
            .collect();
        Trial::new(overrides)
    }
}

fn prior_sample(param: &Param, rng: &mut ChaCha8Rng) -> f64 {
    let (lo, hi) = param.bounds();
    match param {
        Param::Choice(values) => rng.random_range(0..values.len()) as f64,
        _ => rng.random_range(lo..hi),
    }
}

/// Optuna's default split: the best `ceil(n / 10)` trials, at most 25.
fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// TPE's proposal for one parameter.
fn tpe_coordinate(
    key: &str,
    param: &Param,
    observed: &[Observation<'_>],
    rng: &mut ChaCha8Rng,
) -> f64 {
    // Best first; pruned trials (no loss) last.
    let mut ranked: Vec<(f64, f64)> = observed
        .iter()
        .filter_map(|o| {
            let value = o.trial.overrides.iter().find(|(k, _)| k == key)?;
            Some((o.loss.unwrap_or(f64::INFINITY), param.coordinate(&value.1)?))
        })
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let split = gamma(ranked.len()).max(1);
    let below: Vec<f64> = ranked[..split.min(ranked.len())]
        .iter()
        .map(|r| r.1)
        .collect();
    let above: Vec<f64> = ranked[split.min(ranked.len())..]
        .iter()
        .map(|r| r.1)
        .collect();
    const CANDIDATES: usize = 24;
    match param {
        Param::Choice(values) => {
            let good = categorical(&below, values.len());
            let bad = categorical(&above, values.len());
            (0..CANDIDATES)
                .map(|_| pick(&good, rng) as f64)
                .max_by(|&a, &b| {
                    let score = |k: f64| good[k as usize].ln() - bad[k as usize].ln();
                    score(a).total_cmp(&score(b))
                })
                .expect("24 candidates")
        }
        _ => {
            let (lo, hi) = param.bounds();
            let good = Parzen::new(&below, lo, hi);
            let bad = Parzen::new(&above, lo, hi);
            (0..CANDIDATES)
                .map(|_| good.sample(rng))
                .max_by(|&a, &b| {
                    let score = |x| good.log_pdf(x) - bad.log_pdf(x);
                    score(a).total_cmp(&score(b))
                })
                .expect("24 candidates")
        }
    }
}

/// Category probabilities: counts plus a uniform prior of weight one.
fn categorical(observed: &[f64], categories: usize) -> Vec<f64> {
    let mut weights = vec![1.0 / categories as f64; categories];
    for &x in observed {
        weights[x as usize] += 1.0;
    }
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

fn pick(weights: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let mut u = rng.random_range(0.0..1.0);
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// A mixture of Gaussians truncated to `[lo, hi]`: one per observation and
/// a prior centred on the range, equally weighted.
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn new(observed: &[f64], lo: f64, hi: f64) -> Parzen {
        let range = hi - lo;
        let mut mus: Vec<f64> = observed.to_vec();
        mus.push((lo + hi) / 2.0);
        let mut order: Vec<usize> = (0..mus.len()).collect();
        order.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]));
        // Each kernel as wide as the gap to its farther neighbour (the
        // bounds at the ends), clipped as Optuna clips it.
        let min_sigma = range / (1.0 + mus.len() as f64).min(100.0);
        let mut sigmas = vec![range; mus.len()];
        for (rank, &i) in order.iter().enumerate() {
            let left = if rank == 0 { lo } else { mus[order[rank - 1]] };
            let right = if rank + 1 == order.len() {
                hi
            } else {
                mus[order[rank + 1]]
            };
            sigmas[i] = (mus[i] - left).max(right - mus[i]).clamp(min_sigma, range);
        }
        // The prior spans the whole range.
        *sigmas.last_mut().expect("the prior") = range;
        Parzen {
            mus,
            sigmas,
            lo,
            hi,
        }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        let i = rng.random_range(0..self.mus.len());
        let normal = rand_distr::Normal::new(self.mus[i], self.sigmas[i]).expect("sigma > 0");
        // Rejection keeps the truncated shape; the kernels overlap the range
        // by construction, so a hundred tries almost never run out.
        for _ in 0..100 {
            let x = rand_distr::Distribution::sample(&normal, rng);
            if (self.lo..self.hi).contains(&x) {
                return x;
            }
        }
        rng.random_range(self.lo..self.hi)
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let cdf = |z: f64| 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
        let density: f64 = self
            .mus
            .iter()
            .zip(&self.sigmas)
            .map(|(&mu, &sigma)| {
                let z = (x - mu) / sigma;
                let mass = cdf((self.hi - mu) / sigma) - cdf((self.lo - mu) / sigma);
                (-0.5 * z * z).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt() * mass)
            })
            .sum::<f64>()
            / self.mus.len() as f64;
        density.max(f64::MIN_POSITIVE).ln()
    }
}

/// When to stop a trial early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pruner {
    /// Stop a trial whose best value so far is worse than the median of
    /// the finished trials' values at the same epoch.
    Median {
        /// Finished trials needed before any pruning.
        startup_trials: usize,
        /// Epochs every trial runs before it can be stopped.
        warmup_epochs: usize,
    },
    /// Stop a trial at rung epoch `min_epochs * reduction^k` unless its
    /// value is in the top `1/reduction` of the values seen at that rung.
    Asha {
        /// The first rung.
        min_epochs: usize,
        /// `eta`: the share promoted at each rung is `1/eta`.
        reduction: usize,
    },
}

impl std::str::FromStr for Pruner {
    type Err = String;

    /// `median`, `asha`, or with settings: `median:STARTUP:WARMUP`,
    /// `asha:MIN_EPOCHS:ETA`.
    fn from_str(s: &str) -> Result<Pruner, String> {
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or_default();
        let numbers: Vec<usize> = parts
            .map(|p| {
                p.parse()
                    .map_err(|_| format!("{p:?} is not a count in {s:?}"))
            })
            .collect::<Result<_, _>>()?;
        let at = |i: usize, default: usize| numbers.get(i).copied().unwrap_or(default);
        let pruner = match name {
            "median" if numbers.len() <= 2 => Pruner::Median {
                startup_trials: at(0, 5),
                warmup_epochs: at(1, 1),
            },
            "asha" if numbers.len() <= 2 => Pruner::Asha {
                min_epochs: at(0, 1),
                reduction: at(1, 3),
            },
            _ => {
                return Err(format!(
                    "expected median[:STARTUP:WARMUP] or asha[:MIN_EPOCHS:ETA], got {s:?}"
                ));
            }
        };
        if let Pruner::Asha {
            min_epochs,
            reduction,
        } = pruner
            && (min_epochs == 0 || reduction < 2)
        {
            return Err(format!(
                "{s:?}: asha needs MIN_EPOCHS of 1 or more and ETA of 2 or more"
            ));
        }
        Ok(pruner)
    }
}

/// What the pruner knows: each trial's value at each epoch so far, as a
/// loss, and which trials finished.
#[derive(Debug, Default)]
pub struct Intermediate {
    values: HashMap<String, Vec<f64>>,
    finished: Vec<String>,
}

impl Intermediate {
    /// Records `trial`'s values for epochs 1, 2, ... (replacing earlier ones).
    pub fn record(&mut self, trial: &str, values: Vec<f64>) {
        self.values.insert(trial.to_string(), values);
    }

    /// Marks `trial` as having run to its end.
    pub fn finish(&mut self, trial: &str) {
        if !self.finished.iter().any(|t| t == trial) {
            self.finished.push(trial.to_string());
        }
    }

    fn at(&self, trial: &str, epoch: usize) -> Option<f64> {
        self.values.get(trial)?.get(epoch.checked_sub(1)?).copied()
    }

    /// Whether `pruner` stops `trial` after `epoch` (1-based).
    pub fn should_prune(&self, pruner: Pruner, trial: &str, epoch: usize) -> bool {
        let Some(value) = self.at(trial, epoch) else {
            return false;
        };
        match pruner {
            Pruner::Median {
                startup_trials,
                warmup_epochs,
            } => {
                if self.finished.len() < startup_trials || epoch <= warmup_epochs {
                    return false;
                }
                let mut others: Vec<f64> = self
                    .finished
                    .iter()
                    .filter(|t| *t != trial)
                    .filter_map(|t| self.at(t, epoch))
                    .collect();
                if others.is_empty() {
                    return false;
                }
                others.sort_by(f64::total_cmp);
                let n = others.len();
                let median = if n % 2 == 1 {
                    others[n / 2]
                } else {
                    (others[n / 2 - 1] + others[n / 2]) / 2.0
                };
                value > median
            }
            Pruner::Asha {
                min_epochs,
                reduction,
            } => {
                // Is `epoch` a rung, min_epochs * reduction^k?
                let mut rung = min_epochs;
                while rung < epoch {
                    rung = rung.saturating_mul(reduction);
                }
                if rung != epoch {
                    return false;
                }
                let mut competing: Vec<f64> = self
                    .values
                    .keys()
                    .filter_map(|t| self.at(t, epoch))
                    .collect();
                competing.sort_by(f64::total_cmp);
                // Optuna promotes the best of fewer than eta values.
                let promotable = (competing.len() / reduction).max(1) - 1;
                value > competing[promotable]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(arg: &str) -> Param {
        parse_param(arg).unwrap().1
    }

    #[test]
    fn specs_parse_into_params() {
        assert_eq!(
            param("train.lr=loguniform(1e-4, 1e-2)"),
            Param::Float {
                lo: 1e-4,
                hi: 1e-2,
                log: true
            }
        );
        assert_eq!(
            param("model.dropout=uniform(0,0.3)"),
            Param::Float {
                lo: 0.0,
                hi: 0.3,
                log: false
            }
        );
        assert_eq!(
            param("train.batch_size=logint(256,4096)"),
            Param::Int {
                lo: 256,
                hi: 4096,
                log: true
            }
        );
        assert_eq!(
            param("model.hidden=choice([64],[128,64])"),
            Param::Choice(vec!["[64]".into(), "[128,64]".into()])
        );
        assert_eq!(
            param("model.hidden=[64],[128,64]"),
            param("model.hidden=choice([64],[128,64])")
        );
        for bad in [
            "lr=uniform(1)",
            "lr=uniform(2,1)",
            "lr=loguniform(0,1)",
            "lr=uniform(a,1)",
            "lr=int(1.5,3)",
            "lr=logint(0,8)",
            "lr=uniform(1,2,3)",
            "lr=choice()",
            "=uniform(0,1)",
        ] {
            let err = parse_param(bad).unwrap_err();
            assert!(
                matches!(&err, SweepError::Grid { arg, .. } if arg == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn sampled_values_are_toml_of_the_right_type_within_bounds() {
        let space = Space::parse(&[
            "a=loguniform(0.0001,0.01)".into(),
            "b=int(1,3)".into(),
            "c=uniform(0,2)".into(),
            "d=x,y".into(),
        ])
        .unwrap();
        let mut seen_b = std::collections::HashSet::new();
        for i in 0..200 {
            let trial = space.propose(Sampler::Random, 1, i, &[]);
            let get = |k: &str| &trial.overrides.iter().find(|(key, _)| key == k).unwrap().1;
            let a: f64 = get("a").parse().unwrap();
            assert!(
                (1e-4..=1e-2).contains(&a) && get("a").contains('.'),
                "{}",
                get("a")
            );
            let b: i64 = get("b").parse().unwrap();
            seen_b.insert(b);
            let c = get("c");
            assert!(
                c.contains(['.', 'e']),
                "a float must stay a float in TOML: {c}"
            );
            assert!(["x", "y"].contains(&get("d").as_str()));
        }
        // Every integer is reachable, the bounds included.
        assert_eq!(seen_b.len(), 3);
        // Proposals are reproducible.
        assert_eq!(
            space.propose(Sampler::Random, 1, 5, &[]),
            space.propose(Sampler::Random, 1, 5, &[])
        );
        assert_ne!(
            space.propose(Sampler::Random, 1, 5, &[]),
            space.propose(Sampler::Random, 2, 5, &[])
        );
        assert_eq!(
            param("a=int(2,9)").probe_values(),
            vec!["2".to_string(), "9".to_string()]
        );
    }

    /// Runs a sequential search on a 1-D loss and returns the proposals.
    fn optimise(sampler: Sampler, seed: u64, trials: usize) -> Vec<f64> {
        let space = Space::parse(&["x=uniform(0,1)".into()]).unwrap();
        let mut history: Vec<(Trial, f64)> = Vec::new();
        for i in 0..trials {
            let observed: Vec<Observation<'_>> = history
                .iter()
                .map(|(trial, loss)| Observation {
                    trial,
                    loss: Some(*loss),
                })
                .collect();
            let trial = space.propose(sampler, seed, i as u64, &observed);
            let x: f64 = trial.overrides[0].1.parse().unwrap();
            history.push((trial, (x - 0.3).powi(2)));
        }
        history
            .iter()
            .map(|(t, _)| t.overrides[0].1.parse().unwrap())
            .collect()
    }

    #[test]
    fn tpe_concentrates_where_the_loss_is_low() {
        let mut tpe_wins = 0;
        for seed in 0..5 {
            let distance = |xs: &[f64]| {
                xs[20..].iter().map(|x| (x - 0.3).abs()).sum::<f64>() / (xs.len() - 20) as f64
            };
            let tpe = distance(&optimise(Sampler::Tpe { startup: 5 }, seed, 40));
            let random = distance(&optimise(Sampler::Random, seed, 40));
            if tpe < random {
                tpe_wins += 1;
            }
            // Random proposals average 0.29 from 0.3 on [0, 1].
            assert!(
                tpe < 0.2,
                "seed {seed}: TPE's late proposals average {tpe} from the optimum"
            );
        }
        assert!(tpe_wins >= 4, "TPE beat random on {tpe_wins} of 5 seeds");
    }

    #[test]
    fn tpe_prefers_the_good_choice() {
        let space = Space::parse(&["k=a,b,c".into()]).unwrap();
        let trials: Vec<Trial> = ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"]
            .iter()
            .map(|v| Trial::new(vec![("k".into(), v.to_string())]))
            .collect();
        let observed: Vec<Observation<'_>> = trials
            .iter()
            .map(|t| Observation {
                trial: t,
                loss: Some(if t.overrides[0].1 == "b" { 0.1 } else { 1.0 }),
            })
            .collect();
        let picks = (0..20)
            .filter(|&i| {
                space
                    .propose(Sampler::Tpe { startup: 3 }, 0, i, &observed)
                    .overrides[0]
                    .1
                    == "b"
            })
            .count();
        assert!(picks >= 15, "b proposed {picks} times of 20");
    }

    #[test]
    fn asha_keeps_the_top_third_at_each_rung() {
        let asha: Pruner = "asha".parse().unwrap();
        assert_eq!(
            asha,
            Pruner::Asha {
                min_epochs: 1,
                reduction: 3
            }
        );
        let mut state = Intermediate::default();
        state.record("first", vec![0.5, 0.4, 0.3]);
        // Alone at its rung, the first trial goes on.
        assert!(!state.should_prune(asha, "first", 1));
        state.record("worse", vec![0.6]);
        assert!(state.should_prune(asha, "worse", 1));
        state.record("better", vec![0.45]);
        assert!(!state.should_prune(asha, "better", 1));
        // Epoch 2 is no rung; epoch 3 is.
        state.record("late", vec![0.4, 0.9, 0.9]);
        assert!(!state.should_prune(asha, "late", 2));
        assert!(state.should_prune(asha, "late", 3));
        // With six values at a rung, the best two go on.
        let mut state = Intermediate::default();
        for (i, v) in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6].iter().enumerate() {
            state.record(&format!("t{i}"), vec![*v]);
        }
        let kept: Vec<bool> = (0..6)
            .map(|i| !state.should_prune(asha, &format!("t{i}"), 1))
            .collect();
        assert_eq!(kept, [true, true, false, false, false, false]);
    }

    #[test]
    fn median_waits_for_its_startup_trials_and_warmup() {
        let median: Pruner = "median:2:1".parse().unwrap();
        let mut state = Intermediate::default();
        state.record("a", vec![0.5, 0.4]);
        state.finish("a");
        state.record("x", vec![0.9, 0.9]);
        // One finished trial of the two needed: no pruning yet.
        assert!(!state.should_prune(median, "x", 2));
        state.record("b", vec![0.6, 0.5]);
        state.finish("b");
        // Warmup: epoch 1 is never judged.
        assert!(!state.should_prune(median, "x", 1));
        assert!(state.should_prune(median, "x", 2));
        state.record("y", vec![0.5, 0.44]);
        assert!(!state.should_prune(median, "y", 2));
        for bad in [
            "asha:0:3",
            "asha:1:1",
            "median:x",
            "hyperband",
            "asha:1:2:3",
        ] {
            assert!(bad.parse::<Pruner>().is_err(), "{bad}");
        }
    }
}
