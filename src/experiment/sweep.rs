//! Hyper-parameter sweeps: many `upsell train` runs over a grid of config
//! overrides, each a child process, resumable, and ranked by one metric.
//!
//! A sweep directory holds:
//!
//! ```text
//! OUT/sweep.json          metric, goal, train arguments and trial list (informational)
//! OUT/trials/NAME/        the trial's run directory (train's --out)
//! OUT/logs/NAME.log       the trial's command line, then its stdout and stderr
//! OUT/results/NAME.json   the trial's summary line: present once, and only once, it finished
//! OUT/leaderboard.csv     one row per trial, ranked by the metric
//! OUT/leaderboard.md
//! ```
//!
//! A trial's name is a hash of its overrides, not its position, so rerunning
//! the same command skips finished trials and reruns the rest, and adding grid
//! values (or raising `--random N`) reuses every trial that already finished.

pub use crate::error::SweepError;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use chacha20::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most combinations [`trials`] enumerates without `--random`. Each one
/// is a training run, so a larger full grid is almost surely a mistake.
pub const MAX_FULL_GRID: u64 = 100_000;

/// Lines of a failed trial's stderr kept in its [`TrialStatus::Failed`].
const STDERR_TAIL_LINES: usize = 20;

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
fn split_top_level(list: &str) -> Result<Vec<String>, String> {
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
fn combination(grid: &[(String, Vec<String>)], mut index: u64) -> Vec<(String, String)> {
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
fn sample(size: u64, n: usize, seed: u64) -> Vec<u64> {
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

fn check_unique(trials: &[Trial]) -> Result<(), SweepError> {
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

/// Whether a lower or a higher metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Lower is better (losses).
    Min,
    /// Higher is better (AUC, accuracy).
    Max,
}

impl Goal {
    /// The usual goal for a metric path: `Min` when its last segment names a
    /// loss, an error or seconds, `Max` otherwise. A default for `--goal`.
    pub fn for_metric(metric: &str) -> Goal {
        let last = metric.rsplit('.').next().unwrap_or(metric);
        if ["loss", "error", "seconds"]
            .iter()
            .any(|w| last.contains(w))
        {
            Goal::Min
        } else {
            Goal::Max
        }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Goal::Min => "min",
            Goal::Max => "max",
        })
    }
}

impl FromStr for Goal {
    type Err = String;

    /// `min` or `max`.
    fn from_str(s: &str) -> Result<Goal, String> {
        match s {
            "min" => Ok(Goal::Min),
            "max" => Ok(Goal::Max),
            _ => Err(format!("expected min or max, got {s:?}")),
        }
    }
}

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The `upsell` binary (`std::env::current_exe()` in the CLI).
    pub program: PathBuf,
    /// Arguments before the trial's own, e.g. `train --config FILE --set k=v`.
    /// Each trial adds `--set key=value ...` and `--out OUT/trials/NAME`.
    pub base_args: Vec<OsString>,
    /// The sweep directory; created if missing, resumed if not.
    pub out: PathBuf,
    /// Trials run at once; at least 1.
    pub parallel: usize,
    /// Dotted path into a trial's summary JSON, e.g. `best.valid_loss`;
    /// numeric segments index arrays.
    pub metric: String,
    /// Whether a lower or higher metric ranks first.
    pub goal: Goal,
}

/// How a trial ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum TrialStatus {
    /// Ran now, exited 0 and printed this summary as its last stdout line.
    Finished {
        /// The parsed summary line.
        summary: Value,
    },
    /// Finished by an earlier run of the sweep; its saved summary.
    Skipped {
        /// The summary read back from `results/NAME.json`.
        summary: Value,
    },
    /// Exited non-zero (`code`; `None` when killed by a signal), could not
    /// start, or printed no JSON summary.
    Failed {
        /// The exit code; `None` when killed by a signal or never started.
        code: Option<i32>,
        /// The last lines of the child's stderr, or why its output was rejected.
        error: String,
    },
}

/// One trial's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrialResult {
    /// The trial, as given to [`run`].
    pub trial: Trial,
    /// How it ended.
    pub status: TrialStatus,
    /// The metric, when the summary has it as a finite number.
    pub metric: Option<f64>,
    /// Wall-clock seconds of the child; for a skipped trial, the `seconds`
    /// its summary reports (0 if none).
    pub seconds: f64,
    /// The trial's run directory (train's `--out`).
    pub run_dir: PathBuf,
    /// The trial's log: its command line, stdout and stderr.
    pub log: PathBuf,
}

impl TrialResult {
    /// The summary of a finished or skipped trial.
    pub fn summary(&self) -> Option<&Value> {
        match &self.status {
            TrialStatus::Finished { summary } | TrialStatus::Skipped { summary } => Some(summary),
            TrialStatus::Failed { .. } => None,
        }
    }

    /// Whether the trial failed.
    pub fn is_failed(&self) -> bool {
        matches!(self.status, TrialStatus::Failed { .. })
    }

    /// `ok`, `skipped` or `failed (exit N)`, as in the leaderboard.
    pub fn status_label(&self) -> String {
        match &self.status {
            TrialStatus::Finished { .. } => "ok".into(),
            TrialStatus::Skipped { .. } => "skipped".into(),
            TrialStatus::Failed { code, .. } => format!("failed ({})", exit_label(*code)),
        }
    }
}

fn exit_label(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit {code}"),
        None => "no exit code".into(),
    }
}

/// What a sweep did.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    /// The sweep directory.
    pub out: PathBuf,
    /// The metric the trials are ranked by ([`SweepOptions::metric`]).
    pub metric: String,
    /// Whether lower or higher ranks first.
    pub goal: Goal,
    /// Every trial of this run's list, in leaderboard order: by the metric per
    /// the goal, trials without it last, ties by name.
    pub results: Vec<TrialResult>,
    /// `OUT/leaderboard.csv`.
    pub leaderboard_csv: PathBuf,
    /// `OUT/leaderboard.md`.
    pub leaderboard_md: PathBuf,
}

impl SweepReport {
    /// The failed trials; the CLI exits non-zero when there are any.
    pub fn failed(&self) -> Vec<&TrialResult> {
        self.results.iter().filter(|r| r.is_failed()).collect()
    }

    /// The best trial with the metric, if any.
    pub fn best(&self) -> Option<&TrialResult> {
        self.results.first().filter(|r| r.metric.is_some())
    }

    /// A one-line JSON summary for the CLI to print: counts, the best trial
    /// (with its checkpoint when the summary names one) and the leaderboards.
    pub fn summary(&self) -> Value {
        let count =
            |f: fn(&TrialStatus) -> bool| self.results.iter().filter(|r| f(&r.status)).count();
        let failed = count(|s| matches!(s, TrialStatus::Failed { .. }));
        let best = self.best().map(|r| {
            let overrides: serde_json::Map<String, Value> = r
                .trial
                .overrides
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            serde_json::json!({
                "trial": r.trial.name,
                "metric": r.metric,
                "overrides": overrides,
                "run_dir": r.run_dir.display().to_string(),
                "checkpoint": r.summary().and_then(|s| s.get("checkpoint")),
            })
        });
        serde_json::json!({
            "status": if failed == 0 { "ok" } else { "failed" },
            "out": self.out.display().to_string(),
            "metric": self.metric,
            "goal": self.goal,
            "trials": self.results.len(),
            "finished": count(|s| matches!(s, TrialStatus::Finished { .. })),
            "skipped": count(|s| matches!(s, TrialStatus::Skipped { .. })),
            "failed": failed,
            "best": best,
            "leaderboard_csv": self.leaderboard_csv.display().to_string(),
            "leaderboard_md": self.leaderboard_md.display().to_string(),
        })
    }
}

/// The sweep directory, locked: its paths, and the lock its trials inherit.
struct SweepDir<'a> {
    out: &'a Path,
    lock: &'a File,
}

impl SweepDir<'_> {
    fn run_dir(&self, name: &str) -> PathBuf {
        self.out.join("trials").join(name)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.out.join("logs").join(format!("{name}.log"))
    }

    fn result(&self, name: &str) -> PathBuf {
        self.out.join("results").join(format!("{name}.json"))
    }
}

/// Runs the trials not finished yet under `options.out`, at most
/// `options.parallel` at once, then writes the leaderboards.
///
/// A trial with a result file is skipped; one with only a run directory was
/// interrupted or failed, so the directory is removed and the trial rerun. A
/// failed trial does not stop the others: it is in the report. Errors are
/// bad options, a locked or mismatched sweep directory, I/O failures, and a
/// metric that no finished trial's summary has (checked before running when
/// earlier trials finished, so a typo costs no training).
pub fn run(options: &SweepOptions, trials: &[Trial]) -> Result<SweepReport, SweepError> {
    if options.parallel == 0 {
        return Err(SweepError::Parallel);
    }
    if options.metric.split('.').any(str::is_empty) {
        return Err(SweepError::BadMetric {
            metric: options.metric.clone(),
        });
    }
    for trial in trials {
        let plain = trial
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        // Names become paths that are deleted on rerun: no separators, no "..".
        if !plain || trial.name.is_empty() || trial.name.starts_with('.') {
            return Err(SweepError::BadTrialName {
                name: trial.name.clone(),
            });
        }
    }
    check_unique(trials)?;

    let out = options.out.as_path();
    for dir in [
        out.to_path_buf(),
        out.join("trials"),
        out.join("logs"),
        out.join("results"),
    ] {
        fs::create_dir_all(&dir).map_err(|e| SweepError::io(&dir, e))?;
    }
    let lock = lock(out)?;
    let layout = SweepDir { out, lock: &lock };
    record_sweep(options, trials)?;

    let mut results = Vec::with_capacity(trials.len());
    let mut pending = Vec::new();
    for trial in trials {
        match read_result(&layout.result(&trial.name))? {
            Some(summary) => results.push(TrialResult {
                metric: metric_value(&summary, &options.metric),
                seconds: summary
                    .get("seconds")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
                status: TrialStatus::Skipped { summary },
                trial: trial.clone(),
                run_dir: layout.run_dir(&trial.name),
                log: layout.log(&trial.name),
            }),
            None => pending.push(trial),
        }
    }
    check_metric(&options.metric, &results, &layout)?;
    eprintln!(
        "sweep {}: {} trials, {} finished before, {} to run, {} at a time",
        out.display(),
        trials.len(),
        results.len(),
        pending.len(),
        options.parallel.min(pending.len().max(1)),
    );
    results.extend(run_pending(options, &layout, &pending)?);
    check_metric(&options.metric, &results, &layout)?;

    sort_leaderboard(&mut results, options.goal);
    let keys = override_keys(&results);
    let leaderboard_csv = out.join("leaderboard.csv");
    let csv = leaderboard_csv_bytes(&results, &keys, &options.metric)
        .map_err(|e| SweepError::io(&leaderboard_csv, e))?;
    write_atomic(&leaderboard_csv, &csv)?;
    let leaderboard_md = out.join("leaderboard.md");
    let md = leaderboard_markdown(&results, &keys, &options.metric, options.goal);
    write_atomic(&leaderboard_md, md.as_bytes())?;

    Ok(SweepReport {
        out: out.to_path_buf(),
        metric: options.metric.clone(),
        goal: options.goal,
        results,
        leaderboard_csv,
        leaderboard_md,
    })
}

/// Locks `OUT/.lock` so two sweeps cannot run the same trial at once. The
/// lock belongs to the open file, not the process: it ends when the sweep and
/// every trial given the file as stdin have exited, so a killed sweep leaves
/// no stale lock, yet cannot be rerun while its orphaned trials still write.
fn lock(out: &Path) -> Result<File, SweepError> {
    let path = out.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| SweepError::io(&path, e))?;
    // A lock just released can still be held for a moment by a process
    // that another thread of this process is starting: it shares every open
    // file until it execs. So a busy lock is tried again for a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SweepError::Busy {
                    out: out.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(SweepError::io(&path, e)),
        }
    }
}

/// `sweep.json`: what this sweep ran, for people and for the check below.
#[derive(Serialize, Deserialize)]
struct SweepRecord {
    metric: String,
    goal: Goal,
    program: String,
    base_args: Vec<String>,
    trials: Vec<Trial>,
}

/// Writes `sweep.json`, refusing to resume a sweep whose train arguments
/// differ: its finished trials would be skipped though they trained another
/// experiment. The program path is not compared, so a rebuilt binary resumes.
fn record_sweep(options: &SweepOptions, trials: &[Trial]) -> Result<(), SweepError> {
    let path = options.out.join("sweep.json");
    let base_args: Vec<String> = options
        .base_args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match fs::read_to_string(&path) {
        Ok(text) => {
            let before: SweepRecord =
                serde_json::from_str(&text).map_err(|e| SweepError::Corrupt {
                    path: path.clone(),
                    reason: format!("not a sweep record ({e})"),
                })?;
            if before.base_args != base_args {
                return Err(SweepError::ArgsChanged {
                    path,
                    before: before.base_args,
                    now: base_args,
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SweepError::io(&path, e)),
    }
    let record = SweepRecord {
        metric: options.metric.clone(),
        goal: options.goal,
        program: options.program.display().to_string(),
        base_args,
        trials: trials.to_vec(),
    };
    let mut json = serde_json::to_string_pretty(&record).map_err(|e| SweepError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    json.push('\n');
    write_atomic(&path, json.as_bytes())
}

/// A finished trial's summary, or `None` when the trial has not finished.
fn read_result(path: &Path) -> Result<Option<Value>, SweepError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SweepError::io(path, e)),
    };
    match serde_json::from_str(text.trim()) {
        Ok(summary @ Value::Object(_)) => Ok(Some(summary)),
        _ => Err(SweepError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a trial summary (a JSON object); delete it to rerun the trial".into(),
        }),
    }
}

/// Runs `pending` on `options.parallel` worker threads, each waiting on one
/// child at a time; progress is printed here, in the calling thread.
fn run_pending(
    options: &SweepOptions,
    layout: &SweepDir<'_>,
    pending: &[&Trial],
) -> Result<Vec<TrialResult>, SweepError> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (sender, receiver) = mpsc::channel();
    let mut results = Vec::with_capacity(pending.len());
    let mut first_error = None;
    std::thread::scope(|scope| {
        for _ in 0..options.parallel.min(pending.len()) {
            let sender = sender.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(trial) = pending.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    if sender.send(run_trial(options, layout, trial)).is_err() {
                        break;
                    }
                }
            });
        }
        // The loop below ends once every worker has dropped its sender.
        drop(sender);
        for outcome in receiver {
            match outcome {
                Ok(result) => {
                    results.push(result);
                    let line = progress_line(
                        results.len(),
                        pending.len(),
                        &results[results.len() - 1],
                        &options.metric,
                    );
                    eprintln!("{line}");
                }
                Err(e) => {
                    // An I/O failure of the sweep itself (a full disk, say):
                    // let running trials end, start no more.
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

fn progress_line(done: usize, total: usize, result: &TrialResult, metric: &str) -> String {
    let head = format!(
        "[{done}/{total}] {} {}",
        result.trial.name,
        result.trial.label()
    );
    match &result.status {
        TrialStatus::Failed { code, error } => format!(
            "{head}: failed ({}): {} ({:.1} s; log: {})",
            exit_label(*code),
            error.lines().last().unwrap_or(""),
            result.seconds,
            result.log.display()
        ),
        _ => format!(
            "{head}: {} {metric}={} ({:.1} s)",
            result.status_label(),
            format_metric(result.metric),
            result.seconds
        ),
    }
}

fn format_metric(metric: Option<f64>) -> String {
    metric.map_or_else(|| "-".into(), |m| m.to_string())
}

/// Runs one trial to its end. `Err` only for failures of the sweep's own
/// files; everything the child does wrong is a [`TrialStatus::Failed`].
fn run_trial(
    options: &SweepOptions,
    layout: &SweepDir<'_>,
    trial: &Trial,
) -> Result<TrialResult, SweepError> {
    let run_dir = layout.run_dir(&trial.name);
    let log_path = layout.log(&trial.name);
    let result = |status, seconds| TrialResult {
        trial: trial.clone(),
        metric: None,
        status,
        seconds,
        run_dir: run_dir.clone(),
        log: log_path.clone(),
    };
    // Train refuses an existing --out; one without a result is left over
    // from an interrupted or failed attempt.
    match fs::remove_dir_all(&run_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SweepError::io(&run_dir, e)),
    }
    let mut log = File::create(&log_path).map_err(|e| SweepError::io(&log_path, e))?;

    let mut command = Command::new(&options.program);
    command.args(&options.base_args);
    for (key, value) in &trial.overrides {
        command.arg("--set").arg(format!("{key}={value}"));
    }
    // The lock file as stdin: as empty as /dev/null, and it keeps the sweep
    // directory locked until this child exits, even if the sweep is killed.
    let stdin = layout
        .lock
        .try_clone()
        .map_err(|e| SweepError::io(layout.out.join(".lock"), e))?;
    command
        .arg("--out")
        .arg(&run_dir)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The command line first, so a trial can be rerun by hand from its log.
    writeln!(log, "$ {}", shell_words(&command)).map_err(|e| SweepError::io(&log_path, e))?;

    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let error = format!("could not start {}: {e}", options.program.display());
            writeln!(log, "{error}").map_err(|e| SweepError::io(&log_path, e))?;
            let status = TrialStatus::Failed { code: None, error };
            return Ok(result(status, 0.0));
        }
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SweepError::io(
            &log_path,
            io::Error::other("child pipes missing"),
        ));
    };
    // stdout is read apart from stderr so that the summary line is found
    // even when stderr is written last; both go to the one log.
    let (stdout_tail, stderr_tail) = std::thread::scope(|scope| {
        let log = &log;
        let stderr_copier = scope.spawn(move || copy_lines(stderr, log, STDERR_TAIL_LINES));
        let stdout_tail = copy_lines(stdout, log, 1);
        let stderr_tail = stderr_copier
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("stderr copier panicked")));
        (stdout_tail, stderr_tail)
    });
    // Wait before looking at copy errors, so no child is left unreaped.
    let exit = child
        .wait()
        .map_err(|e| SweepError::io(&options.program, e))?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout_tail = stdout_tail.map_err(|e| SweepError::io(&log_path, e))?;
    let stderr_tail = stderr_tail.map_err(|e| SweepError::io(&log_path, e))?;

    if !exit.success() {
        let tail = Vec::from(stderr_tail).join("\n");
        let error = match (exit.code(), tail.is_empty()) {
            (Some(_), false) => tail,
            (Some(_), true) => "nothing on stderr".into(),
            // Killed by a signal: say which, then what it printed.
            (None, _) => format!("{exit}\n{tail}").trim_end().to_string(),
        };
        let status = TrialStatus::Failed {
            code: exit.code(),
            error,
        };
        return Ok(result(status, seconds));
    }
    let last = stdout_tail.back().map(String::as_str).unwrap_or("");
    let summary = match serde_json::from_str(last) {
        Ok(summary @ Value::Object(_)) => summary,
        _ => {
            let shown: String = last.chars().take(200).collect();
            let status = TrialStatus::Failed {
                code: Some(0),
                error: format!(
                    "exited 0, but its last stdout line is not a JSON summary: {shown:?}"
                ),
            };
            return Ok(result(status, seconds));
        }
    };
    // The result file marks the trial finished, so it is written last and
    // atomically: a sweep killed at any point leaves it whole or absent.
    write_atomic(&layout.result(&trial.name), format!("{last}\n").as_bytes())?;
    Ok(TrialResult {
        metric: metric_value(&summary, &options.metric),
        ..result(TrialStatus::Finished { summary }, seconds)
    })
}

/// Copies `reader` to `log` line by line and keeps its last `keep` non-blank
/// lines (lossily decoded).
fn copy_lines(reader: impl Read, mut log: &File, keep: usize) -> io::Result<VecDeque<String>> {
    let mut reader = BufReader::new(reader);
    let mut tail = VecDeque::with_capacity(keep + 1);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(tail);
        }
        // Whole lines only, so stdout and stderr interleave by line.
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        log.write_all(&line)?;
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if !text.is_empty() {
            tail.push_back(text);
            if tail.len() > keep {
                tail.pop_front();
            }
        }
    }
}

/// The command as a shell line, quoting what a shell would split or expand.
fn shell_words(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| {
            let word = word.to_string_lossy();
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                word.into_owned()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value at a dotted path; numeric segments index arrays.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// The metric as a finite number; `None` when missing, null or not a number.
fn metric_value(summary: &Value, metric: &str) -> Option<f64> {
    lookup(summary, metric)?.as_f64().filter(|m| m.is_finite())
}

/// Fails when finished trials exist and none has the metric path at all (a
/// null value counts as present: the metric exists but was undefined).
fn check_metric(
    metric: &str,
    results: &[TrialResult],
    layout: &SweepDir<'_>,
) -> Result<(), SweepError> {
    let mut finished = results
        .iter()
        .filter_map(|r| Some((r, r.summary()?)))
        .peekable();
    let Some(&(first, first_summary)) = finished.peek() else {
        return Ok(());
    };
    if finished.any(|(_, summary)| lookup(summary, metric).is_some()) {
        return Ok(());
    }
    let mut available = Vec::new();
    numeric_paths(first_summary, "", &mut available);
    Err(SweepError::MetricNotFound {
        metric: metric.to_string(),
        path: layout.result(&first.trial.name),
        available,
    })
}

/// The dotted paths of the numbers in `value`, through objects only (per-epoch
/// arrays would swamp the list).
fn numeric_paths(value: &Value, prefix: &str, paths: &mut Vec<String>) {
    match value {
        Value::Number(_) => paths.push(prefix.to_string()),
        Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                numeric_paths(value, &path, paths);
            }
        }
        _ => {}
    }
}

/// By the metric per the goal; trials without it last; ties by name.
fn sort_leaderboard(results: &mut [TrialResult], goal: Goal) {
    results.sort_by(|a, b| {
        let by_metric = match (a.metric, b.metric) {
            (Some(x), Some(y)) => match goal {
                Goal::Min => x.total_cmp(&y),
                Goal::Max => y.total_cmp(&x),
            },
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_metric.then_with(|| a.trial.name.cmp(&b.trial.name))
    });
}

/// The override keys of all trials, in first-seen order.
fn override_keys(results: &[TrialResult]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (key, _) in results.iter().flat_map(|r| &r.trial.overrides) {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    keys
}

/// Leaderboard rows, header first: rank (blank without the metric), trial,
/// one column per key, metric, status, seconds, run directory.
fn leaderboard_rows(results: &[TrialResult], keys: &[String], metric: &str) -> Vec<Vec<String>> {
    let mut header = vec!["rank".to_string(), "trial".to_string()];
    header.extend(keys.iter().cloned());
    header.extend([
        metric.to_string(),
        "status".into(),
        "seconds".into(),
        "run_dir".into(),
    ]);
    let mut rows = vec![header];
    for (i, result) in results.iter().enumerate() {
        let rank = if result.metric.is_some() {
            (i + 1).to_string()
        } else {
            String::new()
        };
        let mut row = vec![rank, result.trial.name.clone()];
        row.extend(keys.iter().map(|key| {
            let value = result.trial.overrides.iter().find(|(k, _)| k == key);
            value.map(|(_, v)| v.clone()).unwrap_or_default()
        }));
        row.extend([
            result.metric.map(|m| m.to_string()).unwrap_or_default(),
            result.status_label(),
            format!("{:.1}", result.seconds),
            result.run_dir.display().to_string(),
        ]);
        rows.push(row);
    }
    rows
}

fn leaderboard_csv_bytes(
    results: &[TrialResult],
    keys: &[String],
    metric: &str,
) -> io::Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in leaderboard_rows(results, keys, metric) {
        writer.write_record(&row)?;
    }
    writer
        .into_inner()
        .map_err(|e| io::Error::other(e.to_string()))
}

fn leaderboard_markdown(
    results: &[TrialResult],
    keys: &[String],
    metric: &str,
    goal: Goal,
) -> String {
    let order = match goal {
        Goal::Min => "lowest first",
        Goal::Max => "highest first",
    };
    let failed: Vec<&TrialResult> = results.iter().filter(|r| r.is_failed()).collect();
    let skipped = results
        .iter()
        .filter(|r| matches!(r.status, TrialStatus::Skipped { .. }))
        .count();
    let mut md = format!("# Sweep leaderboard: {metric} ({goal}, {order})\n\n");
    md.push_str(&format!(
        "{} trials: {} finished now, {skipped} skipped (finished by an earlier run), {} failed.\n\n",
        results.len(),
        results.len() - skipped - failed.len(),
        failed.len()
    ));
    let escape = |cell: &str| cell.replace('|', "\\|").replace('\n', " ");
    for (i, row) in leaderboard_rows(results, keys, metric).iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| escape(c)).collect();
        md.push_str(&format!("| {} |\n", cells.join(" | ")));
        if i == 0 {
            md.push_str(&format!("|{}\n", "---|".repeat(row.len())));
        }
    }
    if !failed.is_empty() {
        md.push_str("\n## Failed\n\n");
        for result in failed {
            if let TrialStatus::Failed { code, error } = &result.status {
                md.push_str(&format!(
                    "- {} `{}` ({}): {} (log: `{}`)\n",
                    result.trial.name,
                    result.trial.label(),
                    exit_label(*code),
                    escape(error.lines().last().unwrap_or("")),
                    result.log.display()
                ));
            }
        }
    }
    md
}

/// [`crate::atomic::write`], with its I/O error as the sweep's.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
    crate::atomic::write(path, bytes).map_err(|e| match e {
        crate::Error::Io { path, source } => SweepError::Io { path, source },
        other => SweepError::io(path, io::Error::other(other.to_string())),
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A stand-in for `upsell train`: reads `--set lr=`, `hidden=`, `sleep=`
    /// and `--out`, logs each call, refuses an existing `--out`, stamps start
    /// and end times, fails on `lr=bad` (exit 2) and prints no JSON on
    /// `lr=garbage`. Its metrics are `lr` itself.
    const FAKE_TRAIN: &str = r#"#!/bin/sh
here=$(dirname "$0")
out= lr= hidden= sleep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --set)
            case "$2" in
                lr=*) lr=${2#lr=} ;;
                hidden=*) hidden=${2#hidden=} ;;
                sleep=*) sleep=${2#sleep=} ;;
            esac
            shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) shift ;;
    esac
done
echo "$out" >> "$here/calls.log"
if [ -e "$out" ]; then echo "error: $out: already exists; refusing to overwrite it" >&2; exit 2; fi
mkdir "$out"
date +%s%N > "$out/start"
sleep "$sleep"
date +%s%N > "$out/end"
echo "epoch 1/1"
case "$lr" in
    bad) echo "warning: about to fail" >&2; echo "error: train.lr: expected a number, got \"bad\"" >&2; exit 2 ;;
    garbage) echo "not json"; exit 0 ;;
esac
echo "{\"status\":\"ok\",\"seconds\":0.5,\"hidden\":\"$hidden\",\"best\":{\"epoch\":1,\"valid_loss\":$lr,\"valid_auc\":$lr}}"
echo "a late warning on stderr" >&2
"#;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("train.sh"), FAKE_TRAIN).unwrap();
            Fixture { dir }
        }

        /// Options running the fake through /bin/sh, which avoids exec'ing a
        /// just-written file ("text file busy" while other tests fork).
        fn options(&self, metric: &str, goal: Goal) -> SweepOptions {
            SweepOptions {
                program: PathBuf::from("/bin/sh"),
                base_args: vec![self.dir.path().join("train.sh").into(), "train".into()],
                out: self.dir.path().join("sweep"),
                parallel: 1,
                metric: metric.to_string(),
                goal,
            }
        }

        /// The run directories the fake was called with, in call order.
        fn calls(&self) -> Vec<String> {
            match fs::read_to_string(self.dir.path().join("calls.log")) {
                Ok(text) => text
                    .lines()
                    .map(|l| l.rsplit('/').next().unwrap().to_string())
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
    }

    fn grid(args: &[&str]) -> Vec<(String, Vec<String>)> {
        args.iter().map(|a| parse_grid(a).unwrap()).collect()
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn order(report: &SweepReport) -> Vec<String> {
        report
            .results
            .iter()
            .map(|r| r.trial.overrides[0].1.clone())
            .collect()
    }

    fn stamp(run_dir: &Path, which: &str) -> u128 {
        fs::read_to_string(run_dir.join(which))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn grid_values_split_at_top_level_commas() {
        let (key, values) = parse_grid("model.hidden=[256,128],[64]").unwrap();
        assert_eq!(key, "model.hidden");
        assert_eq!(values, strings(&["[256,128]", "[64]"]));
        let (_, values) = parse_grid(r#"x={a=1,b=[2,3]}, "p,q" ,'r,s',"t\",u",7"#).unwrap();
        assert_eq!(
            values,
            strings(&["{a=1,b=[2,3]}", r#""p,q""#, "'r,s'", r#""t\",u""#, "7"])
        );
        let (key, values) = parse_grid(" train.lr =0.01").unwrap();
        assert_eq!((key.as_str(), values), ("train.lr", strings(&["0.01"])));
    }

    #[test]
    fn malformed_grids_are_errors_naming_the_argument() {
        for arg in [
            "", "lr", "=1,2", "lr=", "lr= ", "lr=1,,2", "lr=1,", "lr=[1,2", "lr=1],2", "lr=\"a,b",
            "lr=1,1",
        ] {
            let err = parse_grid(arg).unwrap_err();
            assert!(
                matches!(&err, SweepError::Grid { arg: a, .. } if a == arg),
                "{arg:?}: {err}"
            );
            assert!(
                err.to_string().starts_with(&format!("--grid {arg}:")),
                "{err}"
            );
        }
    }

    #[test]
    fn full_grid_is_the_product_with_the_last_key_fastest() {
        let trials = trials(&grid(&["lr=1,2", "hidden=a,b,c"]), None).unwrap();
        let combos: Vec<String> = trials.iter().map(Trial::label).collect();
        assert_eq!(
            combos,
            [
                "lr=1 hidden=a",
                "lr=1 hidden=b",
                "lr=1 hidden=c",
                "lr=2 hidden=a",
                "lr=2 hidden=b",
                "lr=2 hidden=c"
            ]
        );
    }

    #[test]
    fn bad_grids_are_rejected() {
        let err = trials(&grid(&["lr=1,2", "h=a", "lr=3"]), None).unwrap_err();
        assert!(
            matches!(&err, SweepError::DuplicateKey { key } if key == "lr"),
            "{err}"
        );
        assert!(matches!(trials(&[], None), Err(SweepError::NoGrid)));
        assert!(matches!(
            trials(&grid(&["lr=1"]), Some((0, 1))),
            Err(SweepError::NoTrials)
        ));
        let values: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let huge = vec![("a".to_string(), values.clone()), ("b".to_string(), values)];
        assert!(matches!(
            trials(&huge, None),
            Err(SweepError::GridTooLarge {
                combinations: Some(1_000_000)
            })
        ));
        assert_eq!(trials(&huge, Some((3, 1))).unwrap().len(), 3);
    }

    #[test]
    fn names_depend_on_the_combination_only() {
        let a = trials(&grid(&["lr=1,2", "hidden=[8],[16,8]"]), None).unwrap();
        let b = trials(&grid(&["hidden=[16,8],[8]", "lr=2,1"]), None).unwrap();
        let names = |ts: &[Trial]| {
            let mut names: Vec<String> = ts.iter().map(|t| t.name.clone()).collect();
            names.sort();
            names
        };
        assert_eq!(names(&a), names(&b));
        assert_eq!(names(&a).len(), 4);
        for trial in &a {
            assert_eq!(trial.name.len(), 14);
            assert!(trial.name.starts_with("t-"));
            assert!(trial.name[2..].chars().all(|c| c.is_ascii_hexdigit()));
        }
        // Same pair, different position: same name.
        let alone = Trial::new(vec![
            ("hidden".into(), "[8]".into()),
            ("lr".into(), "2".into()),
        ]);
        assert!(
            a.iter()
                .any(|t| t.name == alone.name && t.label() == "lr=2 hidden=[8]")
        );
    }

    #[test]
    fn random_trials_are_seeded_distinct_and_from_the_grid() {
        let g = grid(&["a=0,1,2,3,4,5,6,7,8,9", "b=0,1,2,3,4,5,6,7,8,9", "c=x,y"]);
        let full = trials(&g, None).unwrap();
        let drawn = trials(&g, Some((15, 7))).unwrap();
        assert_eq!(drawn.len(), 15);
        assert_eq!(drawn, trials(&g, Some((15, 7))).unwrap());
        assert_ne!(drawn, trials(&g, Some((15, 8))).unwrap());
        let names: HashSet<&str> = drawn.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), 15);
        assert!(drawn.iter().all(|t| full.contains(t)));
        // Raising n with the same seed keeps what was drawn: growing a sweep.
        let more = trials(&g, Some((40, 7))).unwrap();
        assert!(drawn.iter().all(|t| more.contains(t)));
        assert_eq!(trials(&g, Some((200, 7))).unwrap(), full);
        assert_eq!(trials(&g, Some((1000, 7))).unwrap(), full);
    }

    #[test]
    fn leaderboard_ranks_by_goal_with_failures_last() {
        for (goal, metric, expected) in [
            (Goal::Min, "best.valid_loss", ["0.1", "0.2", "0.3", "bad"]),
            (Goal::Max, "best.valid_auc", ["0.3", "0.2", "0.1", "bad"]),
        ] {
            let fx = Fixture::new();
            let list = trials(&grid(&["lr=0.3,bad,0.1,0.2"]), None).unwrap();
            let report = run(&fx.options(metric, goal), &list).unwrap();
            assert_eq!(order(&report), expected);
            assert_eq!(report.failed().len(), 1);
            assert_eq!(
                report.best().unwrap().metric,
                Some(expected[0].parse().unwrap())
            );
            let TrialStatus::Failed { code, error } = &report.results[3].status else {
                panic!("{:?}", report.results[3].status);
            };
            assert_eq!(*code, Some(2));
            assert!(
                error.ends_with("error: train.lr: expected a number, got \"bad\""),
                "{error}"
            );

            let csv = fs::read_to_string(&report.leaderboard_csv).unwrap();
            let mut lines = csv.lines();
            assert_eq!(
                lines.next().unwrap(),
                format!("rank,trial,lr,{metric},status,seconds,run_dir")
            );
            let first: Vec<&str> = lines.next().unwrap().split(',').collect();
            assert_eq!(
                &first[..5],
                [
                    "1",
                    &report.results[0].trial.name,
                    expected[0],
                    expected[0],
                    "ok"
                ]
            );
            assert!(csv.lines().last().unwrap().starts_with(&format!(
                ",{},bad,,failed (exit 2),",
                report.results[3].trial.name
            )));
            let md = fs::read_to_string(&report.leaderboard_md).unwrap();
            assert!(
                md.starts_with(&format!("# Sweep leaderboard: {metric} ({goal}, ")),
                "{md}"
            );
            assert!(md.contains("## Failed"), "{md}");
            // Only finished trials have a result file.
            assert_eq!(
                fs::read_dir(fx.dir.path().join("sweep/results"))
                    .unwrap()
                    .count(),
                3
            );
        }
    }

    #[test]
    fn parallel_trials_overlap() {
        let fx = Fixture::new();
        let mut options = fx.options("best.valid_loss", Goal::Min);
        options.parallel = 2;
        options
            .base_args
            .extend(["--set".into(), "sleep=0.5".into()]);
        let report = run(&options, &trials(&grid(&["lr=0.1,0.2"]), None).unwrap()).unwrap();
        assert!(report.failed().is_empty());
        let [a, b] = [&report.results[0].run_dir, &report.results[1].run_dir];
        assert!(stamp(a, "start") < stamp(b, "end") && stamp(b, "start") < stamp(a, "end"));
    }

    #[test]
    fn sequential_trials_do_not_overlap() {
        let fx = Fixture::new();
        let mut options = fx.options("best.valid_loss", Goal::Min);
        options
            .base_args
            .extend(["--set".into(), "sleep=0.2".into()]);
        let report = run(&options, &trials(&grid(&["lr=0.1,0.2"]), None).unwrap()).unwrap();
        let [a, b] = [&report.results[0].run_dir, &report.results[1].run_dir];
        assert!(stamp(a, "end") <= stamp(b, "start") || stamp(b, "end") <= stamp(a, "start"));
    }

    #[test]
    fn rerun_skips_finished_trials_and_reruns_the_rest() {
        let fx = Fixture::new();
        let options = fx.options("best.valid_loss", Goal::Min);
        let list = trials(&grid(&["lr=0.1,bad,0.3"]), None).unwrap();
        let [done, failed, interrupted] = [&list[0].name, &list[1].name, &list[2].name];
        let first = run(&options, &list).unwrap();
        assert_eq!(first.failed().len(), 1);
        // As if the sweep was killed after the trial's run directory was made.
        fs::remove_file(
            fx.dir
                .path()
                .join(format!("sweep/results/{interrupted}.json")),
        )
        .unwrap();
        assert_eq!(fx.calls().len(), 3);

        // Growing the grid too: a new value runs, finished ones do not.
        let grown = trials(&grid(&["lr=0.1,bad,0.3,0.2"]), None).unwrap();
        let second = run(&options, &grown).unwrap();
        let calls = fx.calls();
        assert!(!calls[3..].contains(done), "{calls:?}");
        assert!(
            calls[3..].contains(failed) && calls[3..].contains(interrupted),
            "{calls:?}"
        );
        assert_eq!(calls.len(), 6);
        let status = |name: &str| {
            let r = second
                .results
                .iter()
                .find(|r| r.trial.name == name)
                .unwrap();
            (r.status_label(), r.metric)
        };
        assert_eq!(status(done), ("skipped".into(), Some(0.1)));
        assert_eq!(status(failed), ("failed (exit 2)".into(), None));
        assert_eq!(status(interrupted), ("ok".into(), Some(0.3)));
        assert_eq!(order(&second), ["0.1", "0.2", "0.3", "bad"]);
        assert_eq!(second.summary()["skipped"], 1);

        // Nothing left but the failure; the result files are untouched.
        let before =
            fs::read_to_string(fx.dir.path().join(format!("sweep/results/{done}.json"))).unwrap();
        run(&options, &grown).unwrap();
        assert_eq!(fx.calls().len(), 7);
        let after =
            fs::read_to_string(fx.dir.path().join(format!("sweep/results/{done}.json"))).unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn a_metric_in_no_summary_is_an_error_listing_the_paths() {
        let fx = Fixture::new();
        let list = trials(&grid(&["lr=0.1,0.2"]), None).unwrap();
        let err = run(&fx.options("best.valid_los", Goal::Min), &list).unwrap_err();
        let SweepError::MetricNotFound {
            metric, available, ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(metric, "best.valid_los");
        assert!(
            available.contains(&"best.valid_loss".to_string()),
            "{available:?}"
        );
        assert!(err.to_string().contains("best.valid_loss"), "{err}");
        // With the typo fixed, nothing is trained again.
        let report = run(&fx.options("best.valid_loss", Goal::Min), &list).unwrap();
        assert_eq!(fx.calls().len(), 2);
        assert_eq!(order(&report), ["0.1", "0.2"]);
        // The typo is caught before training when earlier trials finished.
        let more = trials(&grid(&["lr=0.1,0.2,0.3"]), None).unwrap();
        assert!(run(&fx.options("best.valid_los", Goal::Min), &more).is_err());
        assert_eq!(fx.calls().len(), 2);
    }

    #[test]
    fn a_summary_that_lacks_the_metric_in_some_trials_ranks_them_last() {
        let fx = Fixture::new();
        // lr=null gives `"valid_loss":null`: present, not a number.
        let list = trials(&grid(&["lr=null,0.5"]), None).unwrap();
        let report = run(&fx.options("best.valid_loss", Goal::Min), &list).unwrap();
        assert_eq!(order(&report), ["0.5", "null"]);
        assert!(report.failed().is_empty());
        assert_eq!(report.results[1].metric, None);
    }

    #[test]
    fn exit_zero_without_a_json_summary_is_a_failure() {
        let fx = Fixture::new();
        let list = trials(&grid(&["lr=garbage"]), None).unwrap();
        let report = run(&fx.options("best.valid_loss", Goal::Min), &list).unwrap();
        let TrialStatus::Failed { code, error } = &report.results[0].status else {
            panic!("{:?}", report.results[0].status);
        };
        assert_eq!(*code, Some(0));
        assert!(error.contains("not json"), "{error}");
        assert!(
            !fx.dir
                .path()
                .join(format!("sweep/results/{}.json", list[0].name))
                .exists()
        );
    }

    #[test]
    fn the_log_holds_the_command_and_both_streams() {
        let fx = Fixture::new();
        let list = trials(&grid(&["lr=0.1", "hidden=[8, 4]"]), None).unwrap();
        let report = run(&fx.options("best.valid_loss", Goal::Min), &list).unwrap();
        let log = fs::read_to_string(&report.results[0].log).unwrap();
        assert!(log.starts_with("$ /bin/sh "), "{log}");
        assert!(
            log.contains("--set lr=0.1 --set 'hidden=[8, 4]' --out "),
            "{log}"
        );
        assert!(
            log.contains("epoch 1/1") && log.contains("a late warning on stderr"),
            "{log}"
        );
        assert_eq!(report.results[0].summary().unwrap()["hidden"], "[8, 4]");
    }

    #[test]
    fn a_sweep_directory_is_locked_and_bound_to_its_train_arguments() {
        let fx = Fixture::new();
        let options = fx.options("best.valid_loss", Goal::Min);
        let list = trials(&grid(&["lr=0.1"]), None).unwrap();
        run(&options, &list).unwrap();

        let held = lock(&options.out).unwrap();
        assert!(matches!(run(&options, &list), Err(SweepError::Busy { .. })));
        drop(held);

        let mut changed = options.clone();
        changed
            .base_args
            .extend(["--set".into(), "train.epochs=5".into()]);
        assert!(matches!(
            run(&changed, &list),
            Err(SweepError::ArgsChanged { .. })
        ));
        assert_eq!(fx.calls().len(), 1);
    }

    #[test]
    fn trials_keep_the_directory_locked_after_the_sweep_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let held = lock(dir.path()).unwrap();
        // A trial is started as run_trial starts it: the lock file as stdin.
        let mut trial = Command::new("/bin/sh")
            .args(["-c", "while [ ! -e \"$1\" ]; do sleep 0.02; done", "sh"])
            .arg(&go)
            .stdin(Stdio::from(held.try_clone().unwrap()))
            .spawn()
            .unwrap();
        drop(held);
        assert!(matches!(lock(dir.path()), Err(SweepError::Busy { .. })));
        fs::write(&go, "").unwrap();
        assert!(trial.wait().unwrap().success());
        lock(dir.path()).unwrap();
    }

    #[test]
    fn bad_options_and_trial_names_are_rejected() {
        let fx = Fixture::new();
        let list = trials(&grid(&["lr=0.1"]), None).unwrap();
        let mut options = fx.options("best.valid_loss", Goal::Min);
        options.parallel = 0;
        assert!(matches!(run(&options, &list), Err(SweepError::Parallel)));
        let options = fx.options("best..valid_loss", Goal::Min);
        assert!(matches!(
            run(&options, &list),
            Err(SweepError::BadMetric { .. })
        ));
        let evil = Trial {
            name: "../x".into(),
            overrides: vec![],
        };
        let options = fx.options("best.valid_loss", Goal::Min);
        assert!(matches!(
            run(&options, &[evil]),
            Err(SweepError::BadTrialName { .. })
        ));
        assert!(fx.calls().is_empty());
    }

    #[test]
    fn a_program_that_cannot_start_fails_its_trials_only() {
        let fx = Fixture::new();
        let mut options = fx.options("best.valid_loss", Goal::Min);
        options.program = fx.dir.path().join("no-such-upsell");
        let report = run(&options, &trials(&grid(&["lr=0.1,0.2"]), None).unwrap()).unwrap();
        assert_eq!(report.failed().len(), 2);
        assert_eq!(report.summary()["status"], "failed");
    }

    #[test]
    fn goals_parse_and_default_by_metric_name() {
        assert_eq!("min".parse::<Goal>(), Ok(Goal::Min));
        assert_eq!("max".parse::<Goal>(), Ok(Goal::Max));
        assert!("up".parse::<Goal>().is_err());
        assert_eq!(Goal::for_metric("best.valid_loss"), Goal::Min);
        assert_eq!(
            Goal::for_metric("best.valid_conversion_log_loss"),
            Goal::Min
        );
        assert_eq!(Goal::for_metric("seconds"), Goal::Min);
        assert_eq!(Goal::for_metric("best.valid_conversion_auc"), Goal::Max);
        assert_eq!(Goal::for_metric("train_rows_per_sec"), Goal::Max);
    }
}
