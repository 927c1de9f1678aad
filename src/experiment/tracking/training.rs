//! Logging a training run to MLflow as it goes: the config as parameters,
//! each epoch's metrics, then the calibration, the report and the
//! checkpoint as artifacts.

use std::path::Path;

use super::tracker::{RunOptions, RunStatus, Tracker, flatten_params};
use crate::Config;
use crate::train::{EpochMetrics, TrainSummary};

/// Where and how a training run is tracked.
#[derive(Clone, Debug)]
pub struct TrainingTracking {
    /// The server's base URL.
    pub uri: String,
    /// The MLflow experiment, created if missing.
    pub experiment: String,
    /// Connection, parent run and extra tags.
    pub run: RunOptions,
    /// Register the uploaded checkpoint as a new version of this model.
    pub register_model: Option<String>,
}

/// Runs `train` (a new or a resumed run) while logging to an MLflow server.
/// The server must be reachable at the start; later logging failures
/// (registering the model included) are reported on stderr and do not stop
/// training (the local run directory has everything), and the run is marked
/// FAILED if training fails.
pub fn track_training(
    config: &Config,
    run_dir: &Path,
    tracking: &TrainingTracking,
    train: impl FnOnce(&mut dyn FnMut(&EpochMetrics)) -> crate::Result<TrainSummary>,
) -> crate::Result<TrainSummary> {
    let params = flatten_params(&serde_json::to_value(config).expect("a config serialises"));
    let name = run_dir.file_name().map_or_else(
        || "upsell".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tracker = Tracker::start_with(
        &tracking.uri,
        &tracking.experiment,
        &name,
        &params,
        &tracking.run,
    )?;
    let mut failures = 0usize;
    let mut warn = |what: &str, e: &dyn std::fmt::Display| {
        failures += 1;
        eprintln!("warning: MLflow {what}: {e}");
    };
    let mut on_epoch = |line: &EpochMetrics| {
        let metrics = numeric_fields(&serde_json::to_value(line).expect("metrics serialise"));
        if let Err(e) = tracker.log_metrics(line.epoch as i64, &metrics) {
            warn("metrics", &e);
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
            warn("metrics", &e);
        }
    }
    let mut checkpoint_uploaded = false;
    for (local, artifact) in [("report", "report"), ("checkpoint", "checkpoint")] {
        match tracker.log_artifacts(&run_dir.join(local), artifact) {
            Ok(()) => checkpoint_uploaded |= artifact == "checkpoint",
            Err(e) => warn("artifacts", &e),
        }
    }
    if let Some(model) = &tracking.register_model {
        if checkpoint_uploaded {
            match tracker.register_model(model, "checkpoint") {
                Ok(version) => tracing::info!(
                    target: "upsell::train",
                    model = model.as_str(),
                    version = version.as_str(),
                    "checkpoint registered in the MLflow model registry"
                ),
                Err(e) => warn("model registry", &e),
            }
        } else {
            let why = format!("{model} not registered: the checkpoint did not upload");
            warn("model registry", &why);
        }
    }
    for file in ["metrics.jsonl", "config.toml", "run.json"] {
        // run.json is the command line's (a library caller may have none).
        if file == "run.json" && !run_dir.join(file).exists() {
            continue;
        }
        if let Err(e) = tracker.log_artifact(&run_dir.join(file), file) {
            warn("artifacts", &e);
        }
    }
    if let Err(e) = tracker.finish(RunStatus::Finished) {
        warn("run status", &e);
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
