//! Logging a training run to MLflow as it goes: the config as parameters,
//! each epoch's metrics, then the calibration, the report and the
//! checkpoint as artifacts.

use std::path::Path;

use super::tracker::{RunStatus, Tracker, flatten_params};
use crate::Config;
use crate::error::TrackingError;
use crate::train::{EpochMetrics, TrainSummary};

/// Runs `train` (a new or a resumed run) while logging to an MLflow server.
/// The server must be reachable at the start; later logging failures are
/// reported on stderr and do not stop training (the local run directory has
/// everything), and the run is marked FAILED if training fails.
pub fn track_training(
    config: &Config,
    run_dir: &Path,
    uri: &str,
    experiment: &str,
    train: impl FnOnce(&mut dyn FnMut(&EpochMetrics)) -> crate::Result<TrainSummary>,
) -> crate::Result<TrainSummary> {
    let params = flatten_params(&serde_json::to_value(config).expect("a config serialises"));
    let name = run_dir.file_name().map_or_else(
        || "upsell".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tracker = Tracker::start(uri, experiment, &name, &params)?;
    let mut failures = 0usize;
    let mut warn = |what: &str, e: TrackingError| {
        failures += 1;
        eprintln!("warning: MLflow {what}: {e}");
    };
    let mut on_epoch = |line: &EpochMetrics| {
        let metrics = numeric_fields(&serde_json::to_value(line).expect("metrics serialise"));
        if let Err(e) = tracker.log_metrics(line.epoch as i64, &metrics) {
            warn("metrics", e);
        }
    };
    let outcome = train(&mut on_epoch);
    let summary = match outcome {
        Ok(summary) => summary,
        Err(e) => {
            let _ = tracker.finish(RunStatus::Failed);
            return Err(e);
        }
    };
    if let Some(calibration) = &summary.calibration {
        let metrics = numeric_fields(
            &serde_json::to_value(calibration).expect("a calibration report serialises"),
        )
        .into_iter()
        .map(|(k, v)| (format!("calibration.{k}"), v))
        .collect::<Vec<_>>();
        if let Err(e) = tracker.log_metrics(summary.best.epoch as i64, &metrics) {
            warn("metrics", e);
        }
    }
    for (local, artifact) in [("report", "report"), ("checkpoint", "checkpoint")] {
        if let Err(e) = tracker.log_artifacts(&run_dir.join(local), artifact) {
            warn("artifacts", e);
        }
    }
    for file in ["metrics.jsonl", "config.toml", "run.json"] {
        // run.json is the command line's (a library caller may have none).
        if file == "run.json" && !run_dir.join(file).exists() {
            continue;
        }
        if let Err(e) = tracker.log_artifact(&run_dir.join(file), file) {
            warn("artifacts", e);
        }
    }
    if let Err(e) = tracker.finish(RunStatus::Finished) {
        warn("run status", e);
    }
    if failures > 0 {
        eprintln!(
            "warning: {failures} MLflow request(s) failed; the run directory {} has everything",
            run_dir.display()
        );
    }
    Ok(summary)
}

/// The numeric top-level fields of a JSON object, as MLflow metrics.
fn numeric_fields(value: &serde_json::Value) -> Vec<(String, f64)> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
        .collect()
}
