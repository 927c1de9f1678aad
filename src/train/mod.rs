//! Training: the optimisation loop, per-epoch validation, early stopping and
//! the export of the best weights as a checkpoint.

mod calibration;
pub mod loss;
pub mod record;
pub mod resume;
mod run;
mod step;
mod wide_prior;

pub use record::{EpochMetrics, TrainSummary};
pub use run::replicas;
pub use run::{Outcome, Run, TrainData, ValidationMetrics, evaluate};
pub use step::{ipw_scale, learning_rate};

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::{Config, Sharing, TaskWeighting};
use crate::data::{self, Batch};
use crate::model::device::Device;
use crate::model::inputs::Layout;
use crate::model::{Network, NetworkConfig};
use crate::preprocess::Preprocessor;
use crate::scoring::calibration::Calibration;
use crate::scoring::checkpoint;
use crate::{Error, Result};
use calibration::Validation;
use run::EVAL_CHUNK;

/// Creates the next free `run-NNN` directory under `base`.
pub fn new_run_dir(base: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(base).map_err(|e| Error::io(base, e))?;
    for n in 1.. {
        let dir = base.join(format!("run-{n:03}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    unreachable!("some run number is free")
}

/// Creates `dir` as a run directory; it must not exist yet.
pub fn claim_run_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// The network shape for a config and a fitted preprocessing.
pub fn network_config(config: &Config, pre: &Preprocessor) -> NetworkConfig {
    let model = &config.model;
    NetworkConfig {
        numeric_width: pre.numeric_width(),
        embedding_sizes: pre.embedding_sizes(),
        context_sizes: pre.context.iter().map(|v| v.size()).collect(),
        products: pre.products.len(),
        has_offer: pre.offer.is_some(),
        embedding_dim: model.embedding_dim,
        offer_dim: model.offer_dim,
        hidden: model.hidden.clone(),
        tower: model.tower.clone(),
        activation: model.activation,
        dropout: model.dropout,
        layer_norm: model.layer_norm,
        plan_uses_offer: model.plan_uses_offer,
        experts: match model.sharing {
            Sharing::SharedBottom => 0,
            Sharing::Mmoe => model.experts,
        },
        task_uncertainty: config.train.task_weighting == TaskWeighting::Uncertainty,
        product_heads: model.product_heads,
        wide: model.wide,
        wide_min_values: model.wide_min_values,
        members: model.members,
        no_offer: pre.no_offer.is_some(),
    }
}

/// Trains on the data `config` names (or the built-in synthetic data) and
/// writes `config.toml`, `metrics.jsonl`, `checkpoint/` and `report/` (the
/// evaluation report of the validation split) into `run_dir`, which must
/// exist and be empty.
pub fn train(
    config: &Config,
    run_dir: &Path,
    device: &Device,
    progress: bool,
) -> Result<TrainSummary> {
    train_observed(config, run_dir, device, progress, &mut |_| {})
}

/// [`train`], calling `on_epoch` after each epoch's validation (to log the
/// metrics elsewhere, e.g. to a tracking server).
pub fn train_observed(
    config: &Config,
    run_dir: &Path,
    device: &Device,
    progress: bool,
    on_epoch: &mut dyn FnMut(&EpochMetrics),
) -> Result<TrainSummary> {
    crate::atomic::write(&run_dir.join("config.toml"), config.to_toml().as_bytes())?;
    train_from(config, run_dir, device, progress, on_epoch, None)
}

/// Continues the run in `run_dir` from its last resumable state
/// (`resume.bin`), with the config it was started with. The data must be
/// the same: the split and the fitted preprocessing are recomputed. burn
/// loads the optimiser state onto its default device first (`BURN_DEVICE`,
/// else the first compiled backend: wgpu in a default build) and moves it to
/// the training device at the next step.
pub fn resume_observed(
    run_dir: &Path,
    device: &Device,
    progress: bool,
    on_epoch: &mut dyn FnMut(&EpochMetrics),
) -> Result<TrainSummary> {
    let state = resume::ResumeState::read(run_dir)?;
    let config = Config::from_toml(
        &state.config,
        &format!(
            "{} (saved config)",
            run_dir.join(resume::RESUME_FILE).display()
        ),
        Path::new(""),
        &[],
    )?;
    train_from(&config, run_dir, device, progress, on_epoch, Some(state))
}

fn train_from(
    config: &Config,
    run_dir: &Path,
    device: &Device,
    progress: bool,
    on_epoch: &mut dyn FnMut(&EpochMetrics),
    resume: Option<resume::ResumeState>,
) -> Result<TrainSummary> {
    let started = Instant::now();
    // What the training rows come from lives here; `data` borrows it.
    let (train, stream);
    let (preprocessor, data, valid) = if config.data.stream {
        let valid;
        (stream, valid) = streamed(config)?;
        let preprocessor = stream.preprocessor().clone();
        (preprocessor, TrainData::Stream(&stream), valid)
    } else {
        let prepared = data::prepare(config)?;
        train = prepared.train;
        let data = TrainData::Memory(&train);
        (prepared.preprocessor, data, prepared.valid)
    };
    // Streamed training rows are not all in memory: the validation rows
    // stand in for them.
    match &data {
        TrainData::Memory(batch) => check_holdout(config, &preprocessor, batch, "training")?,
        TrainData::Stream(_) => check_holdout(config, &preprocessor, &valid, "validation")?,
    }
    let net_config = network_config(config, &preprocessor);
    let mut run = Run::new(config, &net_config, &preprocessor, device);
    if let Some(state) = resume {
        run = run.resumed(state, &net_config)?;
    }
    let train_rows = data.rows();
    let outcome = run.fit_observed(data, &valid, run_dir, progress, on_epoch)?;
    let calibration = calibrate(config, &outcome.network, &net_config, &valid, device);

    let metrics = serde_json::to_value(&outcome.best).expect("metrics serialise");
    let weights = checkpoint::weights_bytes(&outcome.network)?;
    let mut manifest = checkpoint::manifest(
        net_config,
        preprocessor,
        config.columns.id.clone(),
        metrics,
        config.to_toml(),
        &weights,
    );
    let report = calibration.report.clone();
    manifest.calibration = Some(calibration);
    let checkpoint_dir = run_dir.join("checkpoint");
    checkpoint::write(&checkpoint_dir, &manifest, &weights)?;
    let scorer = crate::Scorer::from_parts(manifest, outcome.network.clone(), device);
    let evaluation = crate::offline::eval::evaluate_batch(
        &scorer,
        &checkpoint_dir,
        Path::new("the validation split"),
        &valid,
    );
    let mut input = evaluation.report_input(vec![
        ("run".to_string(), run_dir.display().to_string()),
        (
            "data".to_string(),
            "the validation split (calibration was fitted on it)".to_string(),
        ),
    ]);
    input.title = format!("upsell validation report: {}", run_dir.display());
    let metrics_json = serde_json::to_vec(&evaluation.summary).expect("metrics serialise");
    crate::offline::eval::write_report(&run_dir.join("report"), &input, &metrics_json)?;
    // The checkpoint and the report are in place: the resumable state has
    // served its purpose. Until now a crash could resume from it.
    let _ = std::fs::remove_file(run_dir.join(resume::RESUME_FILE));
    Ok(TrainSummary {
        status: "ok",
        run_dir: run_dir.to_path_buf(),
        checkpoint: checkpoint_dir,
        backend: config.train.backend.to_string(),
        train_rows,
        valid_rows: valid.features.rows,
        batch_size: outcome.batch_size,
        epochs: outcome.epochs,
        best_epoch: outcome.best.epoch,
        stopped_early: outcome.epochs < config.train.epochs,
        seconds: started.elapsed().as_secs_f64(),
        train_rows_per_sec: outcome.rows_per_sec,
        best: outcome.best,
        calibration: report,
    })
}

/// Fails when `columns.no_offer` is set but no row of `batch` is a no-offer
/// row: the no-offer arm would be untrained.
fn check_holdout(
    config: &Config,
    pre: &Preprocessor,
    batch: &Batch,
    part: &'static str,
) -> Result<()> {
    let Some(none) = pre.no_offer_index() else {
        return Ok(());
    };
    if batch.features.offer.contains(&none) {
        return Ok(());
    }
    let path = match part {
        "training" => config.data.train.clone(),
        _ => config
            .data
            .valid
            .clone()
            .or_else(|| config.data.train.clone()),
    };
    Err(data::DataError::NoHoldout {
        path: path.unwrap_or_else(|| "<synthetic>".into()),
        part,
        column: config.columns.offer.clone().unwrap_or_default(),
        value: pre.no_offer.clone().unwrap_or_default(),
        rows: batch.features.rows,
    }
    .into())
}

/// Removes the run directory of a fresh run that failed before it had
/// anything to resume from (no `resume.bin`) or any epoch to show (no
/// line in `metrics.jsonl`), so a failed command leaves nothing behind.
/// A later failure keeps the directory for `upsell train --resume`.
pub fn discard_unstarted_run(run_dir: &Path) {
    let resumable = run_dir.join(resume::RESUME_FILE).exists();
    let epochs = std::fs::metadata(run_dir.join("metrics.jsonl")).is_ok_and(|m| m.len() > 0);
    if !resumable && !epochs {
        let _ = std::fs::remove_dir_all(run_dir);
    }
}

/// The fitting pass over `data.train`'s shards and the validation rows, for
/// a streamed run. The validation files' columns are checked first.
fn streamed(config: &Config) -> Result<(data::stream::Stream<'_>, Batch)> {
    let train = config
        .data
        .train
        .as_deref()
        .expect("validated: streaming has data.train");
    let valid = config
        .data
        .valid
        .as_deref()
        .expect("validated: streaming has data.valid");
    for file in data::source::resolve(valid)? {
        let schema = data::source::schema(&file)?;
        data::check_schema(&file, &schema, config)?;
    }
    let files = data::source::resolve(train)?;
    let fitted = data::stream::fit(config, train, &files)?;
    let valid = data::load(valid, config)?;
    let valid = data::transform(&fitted.preprocessor, &config.columns, &valid)?;
    Ok((
        data::stream::Stream::new(config, train, files, fitted),
        valid,
    ))
}

/// Fits `train.calibration` on the validation outputs of the exported
/// weights.
pub fn calibrate(
    config: &Config,
    network: &Network,
    net: &NetworkConfig,
    valid: &Batch,
    device: &Device,
) -> Calibration {
    let layout = Layout::new(net);
    let (conversion_logits, plan_logits) = logits(network, &layout, valid, device);
    let classes = if plan_logits.is_empty() {
        0
    } else {
        net.products
    };
    let validation = Validation {
        conversion_logits: &conversion_logits,
        offers: &valid.features.offer,
        labels: &valid.targets.converted,
        weights: &valid.targets.weight,
        plan_logits: &plan_logits,
        classes,
        plan_targets: &valid.targets.plan,
    };
    Calibration::fit(config.train.calibration, &validation, net.arms())
}

/// Conversion logits of each row's own offer `[rows]` and plan logits
/// `[rows, products]` (empty without a plan head) of an inference-mode
/// network.
pub fn logits(
    network: &Network,
    layout: &Layout,
    batch: &Batch,
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let (mut conversion, mut plan) = (Vec::new(), Vec::new());
    let rows = batch.features.rows;
    for start in (0..rows).step_by(EVAL_CHUNK) {
        let range = start..(start + EVAL_CHUNK).min(rows);
        let out = network.forward(&layout.inputs(&batch.features, range, device));
        conversion.extend(crate::model::inputs::to_vec(out.conversion));
        if let Some(logits) = out.plan {
            plan.extend(crate::model::inputs::to_vec(logits));
        }
    }
    (conversion, plan)
}
