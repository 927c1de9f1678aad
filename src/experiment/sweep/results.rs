//! What trials report, and the leaderboard that ranks them by one metric.

use super::grid::Trial;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

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
    /// Stopped early by the pruner after `epoch`, now or by an earlier run.
    Pruned {
        /// The last epoch it ran.
        epoch: usize,
        /// `{"status": "pruned", "pruned_at_epoch": N, "best": {FIELD: value}}`.
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
    /// The trial, as given to [`run`](super::run).
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
    /// The summary of a finished, skipped or pruned trial.
    pub fn summary(&self) -> Option<&Value> {
        match &self.status {
            TrialStatus::Finished { summary }
            | TrialStatus::Skipped { summary }
            | TrialStatus::Pruned { summary, .. } => Some(summary),
            TrialStatus::Failed { .. } => None,
        }
    }

    /// Whether the trial was stopped early by the pruner.
    pub fn is_pruned(&self) -> bool {
        matches!(self.status, TrialStatus::Pruned { .. })
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
            TrialStatus::Pruned { epoch, .. } => format!("pruned at epoch {epoch}"),
            TrialStatus::Failed { code, .. } => format!("failed ({})", exit_label(*code)),
        }
    }
}

pub(super) fn exit_label(code: Option<i32>) -> String {
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
    /// The metric the trials are ranked by ([`SweepOptions::metric`](super::SweepOptions::metric)).
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

    /// The best trial that ran to its end with the metric, if any.
    pub fn best(&self) -> Option<&TrialResult> {
        self.results
            .first()
            .filter(|r| r.metric.is_some() && !r.is_pruned())
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
            "pruned": count(|s| matches!(s, TrialStatus::Pruned { .. })),
            "failed": failed,
            "best": best,
            "leaderboard_csv": self.leaderboard_csv.display().to_string(),
            "leaderboard_md": self.leaderboard_md.display().to_string(),
        })
    }
}

pub(super) fn format_metric(metric: Option<f64>) -> String {
    metric.map_or_else(|| "-".into(), |m| m.to_string())
}

/// The value at a dotted path; numeric segments index arrays.
pub(super) fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// The metric as a finite number; `None` when missing, null or not a number.
pub(super) fn metric_value(summary: &Value, metric: &str) -> Option<f64> {
    lookup(summary, metric)?.as_f64().filter(|m| m.is_finite())
}

/// The dotted paths of the numbers in `value`, through objects only (per-epoch
/// arrays would swamp the list).
pub(super) fn numeric_paths(value: &Value, prefix: &str, paths: &mut Vec<String>) {
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

/// By the metric per the goal; pruned trials after those that ran to
/// their end (a pruned value is from an earlier epoch); trials without the
/// metric last; ties by name.
pub(super) fn sort_leaderboard(results: &mut [TrialResult], goal: Goal) {
    results.sort_by(|a, b| {
        let class = |r: &TrialResult| (r.metric.is_none(), r.is_pruned());
        let by_class = class(a).cmp(&class(b));
        let by_metric = match (a.metric, b.metric) {
            (Some(x), Some(y)) => match goal {
                Goal::Min => x.total_cmp(&y),
                Goal::Max => y.total_cmp(&x),
            },
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_class
            .then(by_metric)
            .then_with(|| a.trial.name.cmp(&b.trial.name))
    });
}

/// The override keys of all trials, in first-seen order.
pub(super) fn override_keys(results: &[TrialResult]) -> Vec<String> {
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
pub(super) fn leaderboard_rows(
    results: &[TrialResult],
    keys: &[String],
    metric: &str,
) -> Vec<Vec<String>> {
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

pub(super) fn leaderboard_csv_bytes(
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

pub(super) fn leaderboard_markdown(
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
    let pruned = results.iter().filter(|r| r.is_pruned()).count();
    let mut md = format!("# Sweep leaderboard: {metric} ({goal}, {order})\n\n");
    md.push_str(&format!(
        "{} trials: {} finished now, {skipped} skipped (finished by an earlier run), {pruned} pruned, {} failed.\n\n",
        results.len(),
        results.len() - skipped - pruned - failed.len(),
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
