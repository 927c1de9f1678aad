//! Running a sweep: the locked sweep directory, each trial a child
//! `upsell train` process with its log, results written atomically, and
//! the leaderboard rewritten as trials finish.

use super::grid::{Trial, check_unique};
use super::results::*;
use super::search::{Intermediate, Observation, Pruner, Sampler, Space};
use crate::error::SweepError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `train`'s resume state in a run directory (`train::resume::RESUME_FILE`;
/// the sweep does not link the training code).
pub(super) const RESUME_FILE: &str = "resume.bin";

/// How often a running trial's `metrics.jsonl` is read for pruning.
const PRUNE_POLL: Duration = Duration::from_millis(100);

/// Lines of a failed trial's stderr kept in its [`TrialStatus::Failed`].
pub(super) const STDERR_TAIL_LINES: usize = 20;

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
    /// Stop bad trials early, judged by their `metrics.jsonl` as they run.
    /// Needs a metric `best.FIELD`, FIELD being a column of that file.
    pub pruner: Option<Pruner>,
    /// Arguments before `--resume RUN_DIR`, which continues a trial that
    /// was interrupted after saving its resume state (`train`).
    pub resume_args: Vec<OsString>,
    /// Environment variables set for every trial.
    pub env: Vec<(OsString, OsString)>,
}

/// A search: how many trials, proposed how.
#[derive(Clone, Debug)]
pub struct Search {
    /// Trials in all, those of earlier runs of the sweep included.
    pub trials: usize,
    /// How trials are proposed.
    pub sampler: Sampler,
    /// Seed of the proposals.
    pub seed: u64,
    /// What every trial shares (the resolved base config), in trial names:
    /// see [`Trial::within`].
    pub context: String,
}

/// Where trials come from.
enum Source<'a> {
    /// A list given up front (a grid or a sample of one).
    Fixed(&'a [Trial]),
    /// Proposals, each made when a worker is free, from what finished.
    Search(&'a Space, &'a Search),
}

/// The sweep directory, locked: its paths, and the lock its trials inherit.
pub(super) struct SweepDir<'a> {
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
/// A trial with a result file is skipped. One with only a run directory
/// was interrupted or failed: it is resumed (`train --resume`) when it saved
/// its resume state, else its directory is removed and it is rerun. A failed
/// trial does not stop the others: it is in the report. Errors are bad
/// options, a locked or mismatched sweep directory, I/O failures, and a
/// metric that no finished trial's summary has (checked before running when
/// earlier trials finished, so a typo costs no training).
pub fn run(options: &SweepOptions, trials: &[Trial]) -> Result<SweepReport, SweepError> {
    check_unique(trials)?;
    execute(options, Source::Fixed(trials))
}

/// Searches `space`: `search.trials` trials in all, proposed one at a time
/// by `search.sampler` from the trials finished so far. Proposals are
/// recorded in `sweep.json`, so rerunning the command resumes the search:
/// finished trials are kept, interrupted ones resumed, and the rest
/// proposed anew. Otherwise as [`run`].
pub fn search(
    options: &SweepOptions,
    space: &Space,
    search: &Search,
) -> Result<SweepReport, SweepError> {
    if search.trials == 0 {
        return Err(SweepError::NoTrials);
    }
    execute(options, Source::Search(space, search))
}

/// The per-epoch field the pruner reads: `FIELD` of a `best.FIELD` metric.
fn epoch_field(metric: &str) -> Option<&str> {
    metric.strip_prefix("best.").filter(|f| !f.contains('.'))
}

fn execute(options: &SweepOptions, source: Source<'_>) -> Result<SweepReport, SweepError> {
    if options.parallel == 0 {
        return Err(SweepError::Parallel);
    }
    if options.metric.split('.').any(str::is_empty) {
        return Err(SweepError::BadMetric {
            metric: options.metric.clone(),
        });
    }
    if options.pruner.is_some() && epoch_field(&options.metric).is_none() {
        return Err(SweepError::PruneMetric {
            metric: options.metric.clone(),
        });
    }
    if let Source::Fixed(trials) = source {
        check_names(trials)?;
    }

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
    let recorded = read_record(options)?;
    let (listed, planned) = match source {
        Source::Fixed(trials) => (trials.to_vec(), trials.len()),
        Source::Search(_, search) => {
            // Named again within today's base config: after an edit of the
            // config file the same proposals are trained again, not reused.
            let mut listed: Vec<Trial> = recorded
                .map(|r| r.trials)
                .unwrap_or_default()
                .into_iter()
                .map(|t| Trial::new(t.overrides).within(&search.context))
                .collect();
            listed.truncate(search.trials);
            check_names(&listed)?;
            (listed, search.trials)
        }
    };
    write_record(options, &listed)?;

    let mut results = Vec::with_capacity(planned);
    let mut pending = VecDeque::new();
    let mut intermediate = Intermediate::default();
    for trial in &listed {
        match read_result(&layout.result(&trial.name))? {
            Some(summary) => {
                let result = stored_result(options, &layout, trial, summary);
                if options.pruner.is_some() {
                    remember(options, &mut intermediate, &result);
                }
                results.push(result);
            }
            None => pending.push_back(trial.clone()),
        }
    }
    check_metric(&options.metric, &results, &layout)?;
    eprintln!(
        "sweep {}: {planned} trials, {} finished before, {} to run, {} at a time",
        out.display(),
        results.len(),
        planned - results.len(),
        options.parallel.min((planned - results.len()).max(1)),
    );
    let state = Mutex::new(State {
        listed,
        pending,
        results,
        intermediate,
        planned,
    });
    run_workers(options, &layout, &source, &state)?;
    let mut results = state.into_inner().expect("workers ended").results;
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

fn check_names(trials: &[Trial]) -> Result<(), SweepError> {
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
    check_unique(trials)
}

/// A trial an earlier run of the sweep finished or pruned.
fn stored_result(
    options: &SweepOptions,
    layout: &SweepDir<'_>,
    trial: &Trial,
    summary: Value,
) -> TrialResult {
    let metric = metric_value(&summary, &options.metric);
    let seconds = summary
        .get("seconds")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let status = match summary.get("pruned_at_epoch").and_then(Value::as_u64) {
        Some(epoch) => TrialStatus::Pruned {
            epoch: epoch as usize,
            summary,
        },
        None => TrialStatus::Skipped { summary },
    };
    TrialResult {
        metric,
        seconds,
        status,
        trial: trial.clone(),
        run_dir: layout.run_dir(&trial.name),
        log: layout.log(&trial.name),
    }
}

/// Feeds a finished or pruned trial's epochs to the pruner's record.
fn remember(options: &SweepOptions, intermediate: &mut Intermediate, result: &TrialResult) {
    let Some(field) = epoch_field(&options.metric) else {
        return;
    };
    if let Ok(text) = fs::read_to_string(result.run_dir.join("metrics.jsonl")) {
        intermediate.record(&result.trial.name, epoch_values(&text, field, options.goal));
    }
    if matches!(
        result.status,
        TrialStatus::Finished { .. } | TrialStatus::Skipped { .. }
    ) {
        intermediate.finish(&result.trial.name);
    }
}

/// A trial's value after each epoch, as a loss (negated for `Goal::Max`):
/// `field` at the epoch of lowest `valid_loss` so far, as the summary's
/// `best.FIELD` is at the end. A missing or null value counts as the worst.
pub(super) fn epoch_values(metrics_jsonl: &str, field: &str, goal: Goal) -> Vec<f64> {
    let mut values = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    for line in metrics_jsonl.lines() {
        // A line being written is incomplete: stop there.
        let Ok(epoch) = serde_json::from_str::<Value>(line) else {
            break;
        };
        let as_loss = |v: Option<f64>| match (v, goal) {
            (Some(v), Goal::Min) if v.is_finite() => v,
            (Some(v), Goal::Max) if v.is_finite() => -v,
            _ => f64::INFINITY,
        };
        let value = as_loss(epoch.get(field).and_then(Value::as_f64));
        let loss = epoch
            .get("valid_loss")
            .and_then(Value::as_f64)
            .unwrap_or(f64::INFINITY);
        if best.is_none_or(|(best_loss, _)| loss < best_loss) {
            best = Some((loss, value));
        }
        values.push(best.map_or(f64::INFINITY, |(_, v)| v));
    }
    values
}

/// What the workers share.
struct State {
    /// Every trial of the sweep so far, in proposal order (`sweep.json`).
    listed: Vec<Trial>,
    /// Listed trials still to run.
    pending: VecDeque<Trial>,
    /// Every trial that ended, in this run or before.
    results: Vec<TrialResult>,
    /// Per-epoch values, for the pruner.
    intermediate: Intermediate,
    /// Trials in all.
    planned: usize,
}

impl State {
    /// The next trial to run: a pending one, else a new proposal.
    fn next(
        &mut self,
        options: &SweepOptions,
        source: &Source<'_>,
    ) -> Result<Option<Trial>, SweepError> {
        if let Some(trial) = self.pending.pop_front() {
            return Ok(Some(trial));
        }
        let Source::Search(space, search) = source else {
            return Ok(None);
        };
        if self.listed.len() >= search.trials {
            return Ok(None);
        }
        let observed: Vec<Observation<'_>> = self
            .results
            .iter()
            .filter_map(|r| match r.status {
                TrialStatus::Finished { .. } | TrialStatus::Skipped { .. } => Some(Observation {
                    trial: &r.trial,
                    loss: r.metric.map(|m| match options.goal {
                        Goal::Min => m,
                        Goal::Max => -m,
                    }),
                }),
                TrialStatus::Pruned { .. } => Some(Observation {
                    trial: &r.trial,
                    loss: None,
                }),
                TrialStatus::Failed { .. } => None,
            })
            .collect();
        // A proposal equal to an earlier trial is drawn again, from
        // another stream; a space that small is exhausted.
        let index = self.listed.len() as u64;
        for attempt in 0..100u64 {
            let trial = space
                .propose(
                    search.sampler,
                    search.seed,
                    index + (attempt << 32),
                    &observed,
                )
                .within(&search.context);
            if self.listed.iter().all(|t| t.name != trial.name) {
                self.listed.push(trial.clone());
                write_record(options, &self.listed)?;
                return Ok(Some(trial));
            }
        }
        Ok(None)
    }
}

/// Locks `OUT/.lock` so two sweeps cannot run the same trial at once. The
/// lock belongs to the open file, not the process: it ends when the sweep and
/// every trial given the file as stdin have exited, so a killed sweep leaves
/// no stale lock, yet cannot be rerun while its orphaned trials still write.
pub(super) fn lock(out: &Path) -> Result<File, SweepError> {
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
pub(super) struct SweepRecord {
    metric: String,
    goal: Goal,
    program: String,
    base_args: Vec<String>,
    trials: Vec<Trial>,
}

/// Reads `sweep.json`, refusing to resume a sweep whose train arguments
/// differ: its finished trials would be skipped though they trained another
/// experiment. The program path is not compared, so a rebuilt binary resumes.
pub(super) fn read_record(options: &SweepOptions) -> Result<Option<SweepRecord>, SweepError> {
    let path = options.out.join("sweep.json");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let before: SweepRecord =
                serde_json::from_str(&text).map_err(|e| SweepError::Corrupt {
                    path: path.clone(),
                    reason: format!("not a sweep record ({e})"),
                })?;
            let now = base_args(options);
            if before.base_args != now {
                return Err(SweepError::ArgsChanged {
                    path,
                    before: before.base_args,
                    now,
                });
            }
            Ok(Some(before))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SweepError::io(&path, e)),
    }
}

fn base_args(options: &SweepOptions) -> Vec<String> {
    options
        .base_args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Writes `sweep.json`: the arguments and every trial so far.
pub(super) fn write_record(options: &SweepOptions, trials: &[Trial]) -> Result<(), SweepError> {
    let path = options.out.join("sweep.json");
    let record = SweepRecord {
        metric: options.metric.clone(),
        goal: options.goal,
        program: options.program.display().to_string(),
        base_args: base_args(options),
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
pub(super) fn read_result(path: &Path) -> Result<Option<Value>, SweepError> {
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

/// Runs trials on `options.parallel` worker threads until none is left;
/// progress lines are printed as trials end.
fn run_workers(
    options: &SweepOptions,
    layout: &SweepDir<'_>,
    source: &Source<'_>,
    state: &Mutex<State>,
) -> Result<(), SweepError> {
    let stop = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    let fail = |e: SweepError| {
        // An I/O failure of the sweep itself (a full disk, say): let
        // running trials end, start no more.
        stop.store(true, Ordering::Relaxed);
        first_error.lock().expect("not poisoned").get_or_insert(e);
    };
    std::thread::scope(|scope| {
        for _ in 0..options.parallel {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let next = state.lock().expect("not poisoned").next(options, source);
                    let trial = match next {
                        Ok(Some(trial)) => trial,
                        Ok(None) => break,
                        Err(e) => return fail(e),
                    };
                    let result = match run_trial(options, layout, &trial, state) {
                        Ok(result) => result,
                        Err(e) => return fail(e),
                    };
                    let mut state = state.lock().expect("not poisoned");
                    if options.pruner.is_some() {
                        remember(options, &mut state.intermediate, &result);
                    }
                    let done = state.results.len() + 1;
                    eprintln!(
                        "{}",
                        progress_line(done, state.planned, &result, &options.metric)
                    );
                    state.results.push(result);
                }
            });
        }
    });
    match first_error.into_inner().expect("not poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub(super) fn progress_line(
    done: usize,
    total: usize,
    result: &TrialResult,
    metric: &str,
) -> String {
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

/// Runs one trial to its end, or until the pruner stops it. `Err` only for
/// failures of the sweep's own files; everything the child does wrong is a
/// [`TrialStatus::Failed`].
fn run_trial(
    options: &SweepOptions,
    layout: &SweepDir<'_>,
    trial: &Trial,
    state: &Mutex<State>,
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
    let mut command = Command::new(&options.program);
    // An interrupted trial that saved its state picks up where it stopped;
    // one without (it failed before its first epoch ended) starts again,
    // and train refuses an existing --out.
    let resume = run_dir.join(RESUME_FILE).is_file();
    if resume {
        command
            .args(&options.resume_args)
            .arg("--resume")
            .arg(&run_dir);
    } else {
        match fs::remove_dir_all(&run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SweepError::io(&run_dir, e)),
        }
        command.args(&options.base_args);
        for (key, value) in &trial.overrides {
            command.arg("--set").arg(format!("{key}={value}"));
        }
        command.arg("--out").arg(&run_dir);
    }
    // A resumed trial's log keeps what the interrupted attempt wrote.
    let mut log = OpenOptions::new()
        .create(true)
        .append(resume)
        .write(true)
        .truncate(!resume)
        .open(&log_path)
        .map_err(|e| SweepError::io(&log_path, e))?;

    // The lock file as stdin: as empty as /dev/null, and it keeps the sweep
    // directory locked until this child exits, even if the sweep is killed.
    let stdin = layout
        .lock
        .try_clone()
        .map_err(|e| SweepError::io(layout.out.join(".lock"), e))?;
    command
        .envs(options.env.iter().map(|(k, v)| (k, v)))
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
    // even when stderr is written last; both go to the one log. This thread
    // waits for the child, reading its metrics for the pruner meanwhile.
    let (exit, pruned, stdout_tail, stderr_tail) = std::thread::scope(|scope| {
        let log = &log;
        let stderr_copier = scope.spawn(move || copy_lines(stderr, log, STDERR_TAIL_LINES));
        let stdout_copier = scope.spawn(move || copy_lines(stdout, log, 1));
        let (exit, pruned) = watch(options, trial, &run_dir, &mut child, state);
        let join = |copier: std::thread::ScopedJoinHandle<'_, io::Result<VecDeque<String>>>| {
            copier
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("output copier panicked")))
        };
        (exit, pruned, join(stdout_copier), join(stderr_copier))
    });
    let exit = exit.map_err(|e| SweepError::io(&options.program, e))?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout_tail = stdout_tail.map_err(|e| SweepError::io(&log_path, e))?;
    let stderr_tail = stderr_tail.map_err(|e| SweepError::io(&log_path, e))?;

    if let Some((epoch, value)) = pruned {
        // Recorded like a finished trial's summary, so the trial is not
        // run again and its metric path resolves.
        let mut summary = serde_json::json!({
            "status": "pruned",
            "pruned_at_epoch": epoch,
            "seconds": seconds,
        });
        if let Some(field) = epoch_field(&options.metric) {
            summary["best"] = serde_json::json!({ field: value });
        }
        writeln!(log, "pruned after epoch {epoch}").map_err(|e| SweepError::io(&log_path, e))?;
        write_atomic(
            &layout.result(&trial.name),
            format!("{summary}\n").as_bytes(),
        )?;
        return Ok(TrialResult {
            metric: metric_value(&summary, &options.metric),
            ..result(TrialStatus::Pruned { epoch, summary }, seconds)
        });
    }
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

/// Waits for the child. With a pruner, reads the trial's `metrics.jsonl`
/// as it grows and kills the child when the pruner says so; returns the
/// exit status and, for a pruned trial, its epoch and value (as reported).
fn watch(
    options: &SweepOptions,
    trial: &Trial,
    run_dir: &Path,
    child: &mut std::process::Child,
    state: &Mutex<State>,
) -> (io::Result<std::process::ExitStatus>, Option<(usize, f64)>) {
    let (Some(pruner), Some(field)) = (options.pruner, epoch_field(&options.metric)) else {
        return (child.wait(), None);
    };
    let metrics = run_dir.join("metrics.jsonl");
    let mut judged = 0;
    loop {
        match child.try_wait() {
            Ok(Some(exit)) => return (Ok(exit), None),
            Ok(None) => {}
            Err(e) => return (Err(e), None),
        }
        let values = fs::read_to_string(&metrics)
            .map(|text| epoch_values(&text, field, options.goal))
            .unwrap_or_default();
        if values.len() > judged {
            let mut state = state.lock().expect("not poisoned");
            state.intermediate.record(&trial.name, values.clone());
            let stop = (judged + 1..=values.len())
                .find(|&epoch| state.intermediate.should_prune(pruner, &trial.name, epoch));
            drop(state);
            judged = values.len();
            if let Some(epoch) = stop {
                let _ = child.kill();
                let exit = child.wait();
                let value = match options.goal {
                    Goal::Min => values[epoch - 1],
                    Goal::Max => -values[epoch - 1],
                };
                return (exit, Some((epoch, value)));
            }
        }
        std::thread::sleep(PRUNE_POLL);
    }
}

/// Copies `reader` to `log` line by line and keeps its last `keep` non-blank
/// lines (lossily decoded).
pub(super) fn copy_lines(
    reader: impl Read,
    mut log: &File,
    keep: usize,
) -> io::Result<VecDeque<String>> {
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
pub(super) fn shell_words(command: &Command) -> String {
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

/// [`crate::atomic::write`], with its I/O error as the sweep's.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
    crate::atomic::write(path, bytes).map_err(|e| match e {
        crate::Error::Io { path, source } => SweepError::Io { path, source },
        other => SweepError::io(path, io::Error::other(other.to_string())),
    })
}

/// Fails when finished trials exist and none has the metric path at all (a
/// null value counts as present: the metric exists but was undefined).
pub(super) fn check_metric(
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

/// The `upsell train` arguments every trial shares (its overrides follow):
/// the sweep's own config file, data paths, backend and `--set` overrides.
pub fn train_args(
    config: Option<&Path>,
    data: Option<&Path>,
    valid: Option<&Path>,
    backend: Option<crate::config::BackendKind>,
    overrides: &[String],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["train".into()];
    for (flag, path) in [("--config", config), ("--data", data), ("--valid", valid)] {
        if let Some(path) = path {
            args.extend([flag.into(), path.as_os_str().to_owned()]);
        }
    }
    if let Some(backend) = backend {
        args.extend(["--backend".into(), backend.to_string().into()]);
    }
    for setting in overrides {
        args.extend(["--set".into(), setting.into()]);
    }
    args
}
