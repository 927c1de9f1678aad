//! Running a sweep: the locked sweep directory, each trial a child
//! `upsell train` process with its log, results written atomically, and
//! the leaderboard rewritten as trials finish.

use super::grid::{Trial, check_unique};
use super::results::*;
use crate::error::SweepError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

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

/// Writes `sweep.json`, refusing to resume a sweep whose train arguments
/// differ: its finished trials would be skipped though they trained another
/// experiment. The program path is not compared, so a rebuilt binary resumes.
pub(super) fn record_sweep(options: &SweepOptions, trials: &[Trial]) -> Result<(), SweepError> {
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

/// Runs `pending` on `options.parallel` worker threads, each waiting on one
/// child at a time; progress is printed here, in the calling thread.
pub(super) fn run_pending(
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

/// Runs one trial to its end. `Err` only for failures of the sweep's own
/// files; everything the child does wrong is a [`TrialStatus::Failed`].
pub(super) fn run_trial(
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
