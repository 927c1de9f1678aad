//! The search space: `--grid KEY=V1,V2,...` arguments, and the trials drawn
//! from their combinations (all of them, or `--random N` of them).

use crate::error::SweepError;
use chacha20::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// The most combinations [`trials`] enumerates without `--random`. Each one
/// is a training run, so a larger full grid is almost surely a mistake.
pub const MAX_FULL_GRID: u64 = 100_000;

/// Parses one `--grid KEY=V1,V2,...` argument into its key and values.
///
/// Values split at top-level commas only: not inside `[...]`, `{...}` or
/// quotes, so `model.hidden=[256,128],[64]` gives `[256,128]` and `[64]`.
/// Values are TOML, as for `--set`, and are passed on as given (trimmed).
/// An empty key, no `=`, no values, an empty or repeated value, or an
/// unbalanced bracket or quote is an error naming the argument.
pub fn parse_grid(arg: &str) -> Result<(String, Vec<String>), SweepError> {
    let bad = |reason: String| SweepError::Grid {
        arg: arg.to_string(),
        reason,
    };
    let Some((key, list)) = arg.split_once('=') else {
        return Err(bad("expected KEY=V1,V2,...".into()));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(bad("the key before '=' is empty".into()));
    }
    if list.trim().is_empty() {
        return Err(bad("no values after '='".into()));
    }
    let values = split_top_level(list).map_err(bad)?;
    let mut seen = HashSet::new();
    for (i, value) in values.iter().enumerate() {
        if value.is_empty() {
            return Err(bad(format!("value {} is empty", i + 1)));
        }
        // A repeated value would make two identical trials share a directory.
        if !seen.insert(value.as_str()) {
            return Err(bad(format!("value {value} is given twice")));
        }
    }
    Ok((key.to_string(), values))
}

/// Splits at commas outside brackets, braces and TOML strings.
pub(super) fn split_top_level(list: &str) -> Result<Vec<String>, String> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut closers: Vec<char> = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in list.chars() {
        if let Some(q) = quote {
            current.push(c);
            if escaped {
                escaped = false;
            } else if q == '"' && c == '\\' {
                // Only basic ("...") TOML strings have escapes; literal ones do not.
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '[' => closers.push(']'),
            '{' => closers.push('}'),
            ']' | '}' if closers.pop() != Some(c) => return Err(format!("unbalanced '{c}'")),
            ',' if closers.is_empty() => {
                values.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {q} quote"));
    }
    if let Some(c) = closers.last() {
        return Err(format!("missing '{c}'"));
    }
    values.push(current.trim().to_string());
    Ok(values)
}

/// One combination of overrides: a training run of the sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// `t-` and 12 hex digits of a hash of the overrides; the trial's
    /// directory and file names under the sweep directory.
    pub name: String,
    /// `(key, value)` pairs passed as `--set key=value`, in grid order.
    pub overrides: Vec<(String, String)>,
}

impl Trial {
    /// A trial for these overrides, named by [`Trial::name_for`].
    pub fn new(overrides: Vec<(String, String)>) -> Trial {
        Trial {
            name: Trial::name_for(&overrides),
            overrides,
        }
    }

    /// `t-` and 12 hex digits of xxh3 of the overrides sorted by key, so the
    /// same combination gets the same name whatever the order of the grid.
    pub fn name_for(overrides: &[(String, String)]) -> String {
        let mut sorted: Vec<_> = overrides.iter().collect();
        sorted.sort();
        // Length prefixes keep the encoding unambiguous. Changing it renames
        // every trial, so finished trials would no longer be found.
        let mut canonical = String::new();
        for (key, value) in sorted {
            canonical.push_str(&format!("{}:{key}={}:{value}\n", key.len(), value.len()));
        }
        let hash = xxhash_rust::xxh3::xxh3_64(canonical.as_bytes());
        format!("t-{:012x}", hash >> 16)
    }

    /// The same trial, named within `context`: what every trial of the
    /// sweep shares (the resolved base config: the config file's contents,
    /// the base overrides, the data paths). A sweep rerun after the config
    /// file changed then reruns its trials instead of reusing results of the
    /// old config.
    pub fn within(self, context: &str) -> Trial {
        let hash = xxhash_rust::xxh3::xxh3_64(format!("{}\n{context}", self.name).as_bytes());
        Trial {
            name: format!("t-{:012x}", hash >> 16),
            ..self
        }
    }

    /// The overrides as `key=value key=value`, for people to read.
    pub fn label(&self) -> String {
        let pairs: Vec<String> = self
            .overrides
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        pairs.join(" ")
    }
}

/// The trials of a grid of `(key, values)`, as [`parse_grid`] returns them.
///
/// Without `random`: the full cartesian product, in argument order with the
/// last key varying fastest (at most [`MAX_FULL_GRID`] trials). With
/// `random = Some((n, seed))`: `n` distinct combinations drawn without
/// replacement by a ChaCha8 RNG seeded with `seed`, in grid order; all of them
/// when `n` is at least the grid size. The first `n` draws do not depend on
/// `n`, so raising `n` with the same seed keeps every trial drawn before.
pub fn trials(
    grid: &[(String, Vec<String>)],
    random: Option<(usize, u64)>,
) -> Result<Vec<Trial>, SweepError> {
    if grid.is_empty() {
        return Err(SweepError::NoGrid);
    }
    let mut keys = HashSet::new();
    for (key, values) in grid {
        if !keys.insert(key.as_str()) {
            return Err(SweepError::DuplicateKey { key: key.clone() });
        }
        if values.is_empty() {
            return Err(SweepError::Grid {
                arg: key.clone(),
                reason: "no values".into(),
            });
        }
    }
    let size = grid
        .iter()
        .try_fold(1u64, |n, (_, values)| n.checked_mul(values.len() as u64));
    let indices: Vec<u64> = match (random, size) {
        (Some((0, _)), _) => return Err(SweepError::NoTrials),
        (Some((n, seed)), Some(size)) if (n as u64) < size => sample(size, n, seed),
        (Some(_), Some(size)) => (0..size).collect(),
        (None, Some(size)) if size <= MAX_FULL_GRID => (0..size).collect(),
        (_, combinations) => return Err(SweepError::GridTooLarge { combinations }),
    };
    let trials: Vec<Trial> = indices
        .into_iter()
        .map(|index| Trial::new(combination(grid, index)))
        .collect();
    check_unique(&trials)?;
    Ok(trials)
}

/// The overrides of the `index`-th combination, the last key varying fastest.
pub(super) fn combination(grid: &[(String, Vec<String>)], mut index: u64) -> Vec<(String, String)> {
    let mut overrides = vec![(String::new(), String::new()); grid.len()];
    for (slot, (key, values)) in overrides.iter_mut().zip(grid).rev() {
        let n = values.len() as u64;
        *slot = (key.clone(), values[(index % n) as usize].clone());
        index /= n;
    }
    overrides
}

/// `n` distinct indices below `size`, sorted: the first `n` steps of a
/// Fisher-Yates shuffle, with only the swapped slots stored so a huge grid
/// costs nothing.
pub(super) fn sample(size: u64, n: usize, seed: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut swapped: HashMap<u64, u64> = HashMap::new();
    let mut picked = Vec::with_capacity(n);
    for i in 0..n as u64 {
        // u64, not usize, so the draws are the same on every platform.
        let j = rng.random_range(i..size);
        let at_i = swapped.get(&i).copied().unwrap_or(i);
        let at_j = swapped.get(&j).copied().unwrap_or(j);
        swapped.insert(j, at_i);
        picked.push(at_j);
    }
    picked.sort_unstable();
    picked
}

pub(super) fn check_unique(trials: &[Trial]) -> Result<(), SweepError> {
    let mut seen: HashMap<&str, &Trial> = HashMap::new();
    for trial in trials {
        if let Some(first) = seen.insert(&trial.name, trial) {
            return Err(SweepError::DuplicateTrial {
                name: trial.name.clone(),
                first: first.label(),
                second: trial.label(),
            });
        }
    }
    Ok(())
}
