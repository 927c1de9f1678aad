//! What a training run reports: a line per epoch in `metrics.jsonl` and
//! the summary printed at the end.

use crate::scoring::calibration::CalibrationReport;
use serde::Serialize;
use std::path::PathBuf;

/// One epoch's line in `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    pub seconds: f64,
    pub train_rows_per_sec: f64,
    pub train_loss: f64,
    pub train_conversion_loss: f64,
    /// The plan term of the objective: per buyer with `train.objective =
    /// "mean"`, per row with `"joint"`.
    pub train_plan_loss: Option<f64>,
    /// The training objective on the validation split (with the learned
    /// task weights under uncertainty weighting); early stopping watches it.
    pub valid_loss: f64,
    pub valid_conversion_loss: f64,
    /// The plan term of the objective, as `train_plan_loss`.
    pub valid_plan_loss: Option<f64>,
    pub valid_conversion_auc: Option<f64>,
    pub valid_conversion_log_loss: f64,
    pub valid_plan_accuracy: Option<f64>,
    /// The plan head's log loss per buyer.
    pub valid_plan_log_loss: Option<f64>,
    /// Learned task weights `exp(-s)` (conversion, plan) with
    /// `train.task_weighting = "uncertainty"`.
    pub task_weights: Option<[f64; 2]>,
}

/// What `upsell train` prints as its last line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSummary {
    pub status: &'static str,
    pub run_dir: PathBuf,
    pub checkpoint: PathBuf,
    pub backend: String,
    pub train_rows: usize,
    pub valid_rows: usize,
    /// Rows per optimisation step: `train.batch_size`, fitted to the data
    /// and, on a GPU, grown with it (`TrainConfig::batch_rows`).
    pub batch_size: usize,
    pub epochs: usize,
    pub best_epoch: usize,
    pub stopped_early: bool,
    pub seconds: f64,
    pub train_rows_per_sec: f64,
    /// The best epoch's metrics (those of the exported weights).
    pub best: EpochMetrics,
    /// Validation metrics before and after the fitted calibration.
    pub calibration: Option<CalibrationReport>,
}
