//! Training: the optimisation loop, per-epoch validation, early stopping and
//! the export of the best weights as a checkpoint.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use burn::tensor::activation::{sigmoid, softmax};
use chacha20::ChaCha8Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::batch::{Layout, TargetTensors};
use crate::calibrate::{Calibration, CalibrationReport, Validation};
use crate::checkpoint;
use crate::config::{Config, Decay, Objective, Sharing, TaskWeighting, TrainConfig};
use crate::data::{self, Batch};
use crate::loss::{binary_cross_entropy_sum, masked_cross_entropy_sum};
use crate::metrics::{BinaryMetrics, PlanMetrics};
use crate::model::{Member, Network, NetworkConfig};
use crate::preprocess::{Features, Preprocessor, Targets};
use crate::{Error, Result};

/// Rows per forward pass when validating.
const EVAL_CHUNK: usize = 8192;

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
        members: model.members,
    }
}

/// The learning rate at `step` of `total`: linear warm-up, then the decay.
pub fn learning_rate(config: &crate::config::TrainConfig, step: usize, total: usize) -> f64 {
    let peak = config.lr;
    // Short runs (small data) warm up for a tenth of their steps at most.
    let warmup = config.warmup_steps.min(total / 10);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let floor = peak * config.min_lr_ratio;
    match config.decay {
        Decay::None => peak,
        Decay::Linear => peak - (peak - floor) * progress,
        Decay::Cosine => {
            floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
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
    let state = crate::resume::ResumeState::read(run_dir)?;
    let config = Config::from_toml(
        &state.config,
        &format!(
            "{} (saved config)",
            run_dir.join(crate::resume::RESUME_FILE).display()
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
    resume: Option<crate::resume::ResumeState>,
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
    let evaluation = crate::data::eval::evaluate_batch(
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
    crate::data::eval::write_report(&run_dir.join("report"), &input, &metrics_json)?;
    Ok(TrainSummary {
        status: "ok",
        run_dir: run_dir.to_path_buf(),
        checkpoint: checkpoint_dir,
        backend: config.train.backend.to_string(),
        train_rows,
        valid_rows: valid.features.rows,
        epochs: outcome.epochs,
        best_epoch: outcome.best.epoch,
        stopped_early: outcome.epochs < config.train.epochs,
        seconds: started.elapsed().as_secs_f64(),
        train_rows_per_sec: outcome.rows_per_sec,
        best: outcome.best,
        calibration: report,
    })
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
    Calibration::fit(config.train.calibration, &validation, net.products)
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
        conversion.extend(crate::batch::to_vec(out.conversion));
        if let Some(logits) = out.plan {
            plan.extend(crate::batch::to_vec(logits));
        }
    }
    (conversion, plan)
}

/// The factor that brings the inverse-propensity weights of the conversion
/// loss, `w / propensity` capped at `clip` times the row weight, to the row
/// weights' sum (so the loss keeps its scale, and the learning rate its
/// meaning).
pub fn ipw_scale(weights: &[f32], propensity: &[f32], clip: f64) -> f64 {
    let raw: f64 = weights
        .iter()
        .zip(propensity)
        .map(|(&w, &p)| f64::from(w) * (1.0 / f64::from(p)).min(clip))
        .sum();
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    total / raw.max(f64::MIN_POSITIVE)
}

/// The state of one training run.
pub struct Run<'a> {
    config: &'a Config,
    layout: Layout,
    device: Device,
    network: Network,
    /// Where a resumed run picks up, with the best epoch's network so far.
    resume: Option<(crate::resume::Position, Vec<u8>, Option<Network>)>,
}

/// What [`Run::fit`] ends with.
pub struct Outcome {
    /// The best epoch's weights, in inference mode.
    pub network: Network,
    pub best: EpochMetrics,
    pub epochs: usize,
    pub history: Vec<EpochMetrics>,
    pub rows_per_sec: f64,
}

impl<'a> Run<'a> {
    /// A fresh network, seeded from `config.seed`, on `device`.
    pub fn new(
        config: &'a Config,
        net: &NetworkConfig,
        _pre: &Preprocessor,
        device: &Device,
    ) -> Run<'a> {
        device.seed(config.seed);
        let network = net.init(&device.clone().autodiff());
        Run::with_network(config, net, network, device)
    }

    /// A run that starts from given weights (for parity tests across
    /// backends), moved onto `device` for training.
    pub fn with_network(
        config: &'a Config,
        net: &NetworkConfig,
        network: Network,
        device: &Device,
    ) -> Run<'a> {
        Run {
            config,
            layout: Layout::new(net),
            device: device.clone(),
            // Weights built on a plain device start tracking gradients here.
            network: network.fork(device).train(),
            resume: None,
        }
    }

    /// This run, continuing from a saved state: its weights, optimiser
    /// state, best epoch and position.
    pub fn resumed(
        mut self,
        state: crate::resume::ResumeState,
        net: &NetworkConfig,
    ) -> Result<Run<'a>> {
        let bad = |message: String| {
            Error::Checkpoint(checkpoint::CheckpointError::Weights {
                path: PathBuf::from(crate::resume::RESUME_FILE),
                message,
            })
        };
        let mut store = burn::store::BurnpackStore::from_bytes(Some(
            burn::tensor::Bytes::from_bytes_vec(state.weights),
        ));
        let result = self
            .network
            .load_from(&mut store)
            .map_err(|e| bad(e.to_string()))?;
        if !result.is_success() {
            return Err(bad(format!(
                "missing {:?}, errors {:?}",
                result.missing, result.errors
            )));
        }
        let best = state
            .best_weights
            .map(|bytes| checkpoint::network_from_safetensors(net, bytes, &self.device))
            .transpose()
            .map_err(bad)?
            .map(|network| network.valid());
        self.resume = Some((state.position, state.optimizer, best));
        Ok(self)
    }

    /// Trains for `train.epochs` epochs (fewer when validation stops
    /// improving), writing one line per epoch to `run_dir/metrics.jsonl`.
    pub fn fit(
        self,
        train: &Batch,
        valid: &Batch,
        run_dir: &Path,
        progress: bool,
    ) -> Result<Outcome> {
        self.fit_observed(
            TrainData::Memory(train),
            valid,
            run_dir,
            progress,
            &mut |_| {},
        )
    }

    /// [`fit`](Self::fit) on rows in memory or streamed, calling `on_epoch`
    /// after each epoch (and, when resuming, for each epoch already done).
    pub fn fit_observed(
        self,
        data: TrainData<'_>,
        valid: &Batch,
        run_dir: &Path,
        progress: bool,
        on_epoch: &mut dyn FnMut(&EpochMetrics),
    ) -> Result<Outcome> {
        let cfg = &self.config.train;
        crate::model::seed_dropout(self.config.seed);
        let rows = data.rows();
        let batch_size = cfg.batch_rows(rows);
        let steps_per_epoch = rows.div_ceil(batch_size);
        let replicas = if cfg.devices.is_empty() {
            vec![self.device.clone()]
        } else {
            crate::device::replicas(cfg)?
        };
        let mut stepper = Stepper {
            cfg,
            layout: &self.layout,
            seed: self.config.seed,
            device: self.device.clone(),
            replica_dropout: vec![0; replicas.len().saturating_sub(1)],
            replicas,
            network: Some(self.network),
            optimizer: AdamWConfig::new()
                .with_weight_decay(cfg.weight_decay as f32)
                .with_epsilon(1e-8)
                .init(),
            ipw_scale: match &data {
                _ if !cfg.ipw => None,
                TrainData::Memory(train) => Some(ipw_scale(
                    &train.targets.weight,
                    &train.targets.propensity,
                    cfg.ipw_clip,
                )),
                TrainData::Stream(stream) => stream.ipw_scale(),
            },
            embedding_prior: cfg.embedding_prior / rows.max(1) as f64,
            wide_prior: cfg.wide_prior / rows.max(1) as f64,
            step: 0,
            total_steps: steps_per_epoch * cfg.epochs,
            lr: cfg.lr,
            conv_sum: None,
            plan_sum: None,
            weight_sum: 0.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        let mut order: Vec<usize> = match &data {
            TrainData::Memory(_) => (0..rows).collect(),
            TrainData::Stream(_) => Vec::new(),
        };
        let (position, best_network) = match self.resume {
            Some((position, optimizer_state, best)) => {
                let record = burn::optim::OptimizerRecord::from_bytes(
                    burn::tensor::Bytes::from_bytes_vec(optimizer_state),
                )
                .map_err(|e| Error::Resume {
                    path: PathBuf::from(crate::resume::RESUME_FILE),
                    message: format!("the optimiser state does not load: {e}"),
                })?;
                stepper.optimizer = stepper.optimizer.load_record(record);
                let parse = |text: &str| text.parse::<u128>().unwrap_or(0);
                crate::model::set_dropout_position(parse(&position.dropout_word_pos));
                for (saved, pos) in position
                    .replica_dropout
                    .iter()
                    .zip(&mut stepper.replica_dropout)
                {
                    *pos = parse(saved);
                }
                // The shuffles of the finished epochs, replayed from the seed
                // (a stream's epochs are seeded independently).
                for _ in 1..position.epoch {
                    order.shuffle(&mut rng);
                }
                (Some(position), best)
            }
            None => (None, None),
        };
        let every = cfg.checkpoint_every_steps;
        let valid_plan_share = plan_share(cfg.objective, valid);
        let bar = progress_bar(progress, (rows * cfg.epochs) as u64);
        let metrics_path = run_dir.join("metrics.jsonl");
        let mut metrics_file =
            std::fs::File::create(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;

        let mut history: Vec<EpochMetrics> = Vec::new();
        let mut best: Option<(EpochMetrics, Network)> = None;
        let mut since_best = 0;
        let mut train_seconds = 0.0;
        let mut first_epoch = 1;
        if let Some(p) = &position {
            history = p.history.clone();
            for line in &history {
                let json = serde_json::to_string(line).expect("metrics serialise");
                writeln!(metrics_file, "{json}").map_err(|e| Error::io(&metrics_path, e))?;
                // An observer sees every epoch of the run, as if unbroken.
                on_epoch(line);
            }
            best = p.best.clone().zip(best_network);
            since_best = p.since_best;
            stepper.step = p.step;
            // The finished epochs' time; the current one's part is added
            // when it ends.
            train_seconds = history.iter().map(|e| e.seconds).sum();
            first_epoch = p.epoch;
            bar.inc((rows * (p.epoch - 1)) as u64);
        }
        for epoch in first_epoch..=cfg.epochs {
            let epoch_start = Instant::now();
            let resuming = position.as_ref().filter(|p| p.epoch == epoch);
            let skip = resuming.map_or(0, |p| p.batches_done);
            stepper.start_epoch(resuming);
            let epoch_seconds_before =
                resuming.map_or(0.0, |p| (p.train_seconds - train_seconds).max(0.0));
            let mut batches = 0;
            let mut epoch_rows = 0;
            let mut on_batch = |features: &Features,
                                targets: &Targets,
                                range: Range<usize>|
             -> Result<()> {
                let batch = batches;
                batches += 1;
                epoch_rows += range.len();
                if batch < skip {
                    return Ok(());
                }
                bar.inc(range.len() as u64);
                stepper.step(features, targets, range);
                if every > 0 && stepper.step.is_multiple_of(every) {
                    let position = stepper.position(
                        epoch,
                        batch + 1,
                        train_seconds + epoch_seconds_before + epoch_start.elapsed().as_secs_f64(),
                        since_best,
                        &history,
                        best.as_ref().map(|(m, _)| m),
                    );
                    save_resume(
                        self.config,
                        run_dir,
                        stepper.network(),
                        &stepper.optimizer,
                        best.as_ref().map(|(_, n)| n),
                        position,
                    )?;
                }
                Ok(())
            };
            match &data {
                TrainData::Memory(train) => {
                    order.shuffle(&mut rng);
                    let features = train.features.take(&order);
                    let targets = train.targets.take(&order);
                    for start in (0..rows).step_by(batch_size) {
                        on_batch(&features, &targets, start..(start + batch_size).min(rows))?;
                    }
                }
                TrainData::Stream(stream) => {
                    stream.epoch(epoch, batch_size, &mut |batch| {
                        let rows = 0..batch.features.rows;
                        on_batch(&batch.features, &batch.targets, rows)
                    })?;
                }
            }
            let (conv_total, plan_total, weight_sum) = stepper.epoch_sums();
            if !conv_total.is_finite() {
                return Err(Error::Diverged {
                    epoch,
                    step: stepper.step,
                    loss: conv_total / weight_sum,
                });
            }
            let seconds = epoch_start.elapsed().as_secs_f64() + epoch_seconds_before;
            train_seconds += seconds;
            let eval = stepper.network().valid();
            let valid_metrics = evaluate(&eval, &self.layout, valid, &self.device);
            let has_plan = eval_has_plan(&eval);
            let plan_train = has_plan.then(|| plan_total.unwrap_or(0.0) / weight_sum);
            let conv_train = conv_total / weight_sum;
            let task_log_variance = eval.task_log_variance().map(crate::batch::to_vec);
            // The objective that training minimises: fixed weights, or the
            // learned ones (so early stopping follows what is optimised).
            let objective = |conversion: f64, plan: Option<f64>| match &task_log_variance {
                Some(s) => {
                    let (s0, s1) = (f64::from(s[0]), f64::from(s[1]));
                    (-s0).exp() * conversion + s0 + plan.map_or(0.0, |p| (-s1).exp() * p + s1)
                }
                None => cfg.conversion_weight * conversion + cfg.plan_weight * plan.unwrap_or(0.0),
            };
            let train_loss = objective(conv_train, plan_train);
            let valid_conversion_loss = valid_metrics.conversion.log_loss.unwrap_or(f64::NAN);
            let valid_plan_loss = valid_metrics
                .plan_log_loss()
                .map(|loss| loss * valid_plan_share);
            let valid_loss = objective(valid_conversion_loss, valid_plan_loss);
            let line = EpochMetrics {
                epoch,
                lr: stepper.lr,
                seconds,
                train_rows_per_sec: epoch_rows as f64 / seconds,
                train_loss,
                train_conversion_loss: conv_train,
                train_plan_loss: plan_train,
                valid_loss,
                valid_conversion_loss,
                valid_plan_loss,
                valid_conversion_auc: valid_metrics.conversion.auc,
                valid_conversion_log_loss: valid_conversion_loss,
                valid_plan_accuracy: valid_metrics.plan.as_ref().and_then(|p| p.accuracy),
                valid_plan_log_loss: valid_metrics.plan_log_loss(),
                task_weights: task_log_variance
                    .as_ref()
                    .map(|s| [f64::from(-s[0]).exp(), f64::from(-s[1]).exp()]),
            };
            let json = serde_json::to_string(&line).expect("metrics serialise");
            writeln!(metrics_file, "{json}").map_err(|e| Error::io(&metrics_path, e))?;
            bar.set_message(format!("epoch {epoch}: valid loss {valid_loss:.4}"));
            on_epoch(&line);
            history.push(line.clone());
            let improved = best
                .as_ref()
                .is_none_or(|(b, _)| valid_loss < b.valid_loss - 1e-7);
            if improved {
                best = Some((line, eval));
                since_best = 0;
            } else {
                since_best += 1;
                if cfg.patience > 0 && since_best >= cfg.patience {
                    break;
                }
            }
        }
        bar.finish_and_clear();
        metrics_file
            .sync_all()
            .map_err(|e| Error::io(&metrics_path, e))?;
        // The run is complete: its resumable state has served its purpose.
        let _ = std::fs::remove_file(run_dir.join(crate::resume::RESUME_FILE));
        let (best, network) = best.expect("at least one epoch runs");
        let rows_trained: f64 = history
            .iter()
            .map(|e| e.train_rows_per_sec * e.seconds)
            .sum();
        Ok(Outcome {
            network,
            best,
            epochs: history.len(),
            rows_per_sec: rows_trained / train_seconds,
            history,
        })
    }
}

/// Where an epoch's training rows come from.
pub enum TrainData<'d> {
    /// Rows in memory, shuffled whole each epoch.
    Memory(&'d Batch),
    /// Shards streamed through a shuffle buffer ([`data.stream`](crate::config::DataConfig::stream)).
    Stream(&'d crate::data::stream::Stream<'d>),
}

impl TrainData<'_> {
    fn rows(&self) -> usize {
        match self {
            TrainData::Memory(train) => train.features.rows,
            TrainData::Stream(stream) => stream.rows(),
        }
    }
}

/// The optimisation, one step at a time: the weights, the optimiser, the
/// schedule and the epoch's loss sums.
struct Stepper<'r> {
    cfg: &'r TrainConfig,
    layout: &'r Layout,
    seed: u64,
    /// Where the weights and the optimiser state live.
    device: Device,
    /// One per data-parallel replica (usually just one). Replica 0 runs on
    /// `device`, on this thread; each other one on its device, on a thread
    /// of its own.
    replicas: Vec<Device>,
    /// Where the dropout streams of replicas 1.. stand (replica 0 uses
    /// this thread's).
    replica_dropout: Vec<u128>,
    /// Always `Some` between steps (a step consumes and replaces it).
    network: Option<Network>,
    optimizer: ModuleOptimizer,
    ipw_scale: Option<f64>,
    /// `train.embedding_prior` over the training rows.
    embedding_prior: f64,
    /// `train.wide_prior` over the training rows.
    wide_prior: f64,
    step: usize,
    total_steps: usize,
    lr: f64,
    // Loss sums stay on the device and are read once per epoch: a read per
    // step would make the device wait for the host (and a GPU idle) at
    // every step.
    conv_sum: Option<Tensor<1>>,
    plan_sum: Option<Tensor<1>>,
    weight_sum: f64,
}

/// One replica's share of a step.
struct ReplicaStep {
    grads: GradientsParams,
    /// The replica's parts of the batch's mean losses times the batch's
    /// rows (detached): summed over replicas and steps, the epoch's loss
    /// sums.
    conversion: Tensor<1>,
    plan: Option<Tensor<1>>,
}

impl Stepper<'_> {
    fn network(&self) -> &Network {
        self.network.as_ref().expect("a network between steps")
    }

    /// Starts an epoch's loss sums, from a saved position when resuming.
    fn start_epoch(&mut self, resuming: Option<&crate::resume::Position>) {
        let device = self.device.clone().autodiff();
        let scalar = |v: f64| Tensor::<1>::from_data(TensorData::new(vec![v as f32], [1]), &device);
        (self.conv_sum, self.plan_sum) = match resuming {
            Some(p) => (Some(scalar(p.conversion_sum)), p.plan_sum.map(scalar)),
            None => (None, None),
        };
        self.weight_sum = resuming.map_or(0.0, |p| p.weight_sum);
    }

    /// The epoch's conversion and plan loss sums and its rows (reads the
    /// device).
    fn epoch_sums(&mut self) -> (f64, Option<f64>, f64) {
        let read = |sum: Option<Tensor<1>>| sum.map(|s| f64::from(s.into_scalar::<f32>()));
        (
            read(self.conv_sum.take()).unwrap_or(0.0),
            read(self.plan_sum.take()),
            self.weight_sum,
        )
    }

    /// Where the run stands, to resume from after this step.
    fn position(
        &self,
        epoch: usize,
        batches_done: usize,
        train_seconds: f64,
        since_best: usize,
        history: &[EpochMetrics],
        best: Option<&EpochMetrics>,
    ) -> crate::resume::Position {
        let read = |sum: &Option<Tensor<1>>| sum.clone().map(|s| f64::from(s.into_scalar::<f32>()));
        crate::resume::Position {
            epoch,
            batches_done,
            step: self.step,
            conversion_sum: read(&self.conv_sum).unwrap_or(0.0),
            plan_sum: read(&self.plan_sum),
            weight_sum: self.weight_sum,
            train_seconds,
            since_best,
            dropout_word_pos: crate::model::dropout_position().to_string(),
            replica_dropout: self.replica_dropout.iter().map(u128::to_string).collect(),
            history: history.to_vec(),
            best: best.cloned(),
        }
    }

    /// One optimisation step on rows `range`: each replica takes a
    /// contiguous share, their gradients (of the row-weighted mean loss)
    /// are summed on the weights' device, clipped, and applied.
    fn step(&mut self, features: &Features, targets: &Targets, range: Range<usize>) {
        let network = self.network.take().expect("a network between steps");
        let n = range.len();
        let parts = self.replicas.len().min(n).max(1);
        let shares: Vec<Range<usize>> = (0..parts)
            .map(|i| range.start + i * n / parts..range.start + (i + 1) * n / parts)
            .collect();
        let (cfg, layout) = (self.cfg, self.layout);
        let share = |rows: &Range<usize>| rows.len() as f64 / n as f64;
        // The whole batch's loss normalisers, so that the replicas' parts
        // add up to the batch's mean loss (and their gradients to its
        // gradient) whatever rows each one holds.
        let conversion_weights: Option<Vec<f32>> = self.ipw_scale.map(|scale| {
            range
                .clone()
                .map(|i| {
                    let (w, p) = (targets.weight[i], targets.propensity[i]);
                    (f64::from(w) * (1.0 / f64::from(p)).min(cfg.ipw_clip) * scale) as f32
                })
                .collect()
        });
        let weights = &targets.weight[range.clone()];
        let total = |values: &[f32]| values.iter().map(|&w| f64::from(w)).sum::<f64>();
        let norms = Normalisers {
            rows: n,
            embedding_prior: self.embedding_prior,
            wide_prior: self.wide_prior,
            conversion: total(conversion_weights.as_deref().unwrap_or(weights)).max(1e-12),
            plan: match cfg.objective {
                Objective::Joint => total(weights),
                Objective::Mean => weights
                    .iter()
                    .zip(&targets.plan[range.clone()])
                    .filter(|(_, plan)| **plan >= 0)
                    .map(|(&w, _)| f64::from(w))
                    .sum::<f64>(),
            }
            .max(1e-12),
        };
        let part = |rows: &Range<usize>| Part {
            rows: rows.clone(),
            conversion_weights: conversion_weights
                .as_ref()
                .map(|w| &w[rows.start - range.start..rows.end - range.start]),
            share: share(rows),
        };
        let main = self.device.clone().autodiff();
        let outs: Vec<ReplicaStep> = if parts == 1 {
            let whole = part(&range);
            vec![replica_step(
                &network, layout, cfg, features, targets, whole, &norms, &main,
            )]
        } else {
            let seed = self.seed;
            let replicas = &self.replicas;
            let dropout = &mut self.replica_dropout;
            std::thread::scope(|scope| {
                let others: Vec<_> = (1..parts)
                    .map(|r| {
                        let device = replicas[r].clone();
                        let model = network.clone().fork(&device).train();
                        let part = part(&shares[r]);
                        let position = dropout[r - 1];
                        let norms = &norms;
                        scope.spawn(move || {
                            // Each replica draws its own dropout masks.
                            crate::model::seed_dropout(replica_seed(seed, r));
                            crate::model::set_dropout_position(position);
                            let autodiff = device.autodiff();
                            let out = replica_step(
                                &model, layout, cfg, features, targets, part, norms, &autodiff,
                            );
                            (out, crate::model::dropout_position())
                        })
                    })
                    .collect();
                let first = part(&shares[0]);
                let mut outs = vec![replica_step(
                    &network, layout, cfg, features, targets, first, &norms, &main,
                )];
                for (r, handle) in others.into_iter().enumerate() {
                    let (out, position) = handle.join().expect("a replica does not panic");
                    dropout[r] = position;
                    outs.push(out);
                }
                outs
            })
        };
        let mut grads = MultiGradientsParams::default();
        // Replica 0 ran on the weights' device; the others on their own.
        let devices = std::iter::once(&self.device).chain(&self.replicas[1..]);
        for (out, device) in outs.into_iter().zip(devices) {
            let conversion = out.conversion.to_device(&main);
            self.conv_sum = Some(add(self.conv_sum.take(), conversion));
            if let Some(plan) = out.plan {
                let plan = plan.to_device(&main);
                self.plan_sum = Some(add(self.plan_sum.take(), plan));
            }
            grads.grads.push((out.grads, device.clone()));
        }
        self.weight_sum += n as f64;
        // Gradients live on the plain (inner) device, like the optimiser's
        // state.
        let grads = merge_gradients(&network, grads, &self.device);
        let grads = clip_global_norm(&network, grads, self.cfg.grad_clip);
        self.lr = learning_rate(self.cfg, self.step, self.total_steps);
        self.network = Some(self.optimizer.step(self.lr, network, grads));
        self.step += 1;
    }
}

/// The factor that turns the plan head's log loss per buyer into the plan
/// term of the objective on `batch`: 1 for `mean`, the weight share of the
/// rows with a plan for `joint`.
fn plan_share(objective: Objective, batch: &Batch) -> f64 {
    match objective {
        Objective::Mean => 1.0,
        Objective::Joint => {
            let t = &batch.targets;
            let all: f64 = t.weight.iter().map(|&w| f64::from(w)).sum();
            let buyers: f64 = t
                .weight
                .iter()
                .zip(&t.plan)
                .filter(|(_, plan)| **plan >= 0)
                .map(|(&w, _)| f64::from(w))
                .sum();
            buyers / all.max(1e-12)
        }
    }
}

/// The whole batch's sums that the losses are divided by.
struct Normalisers {
    rows: usize,
    /// The conversion loss's row weights (inverse-propensity ones with
    /// `train.ipw`).
    conversion: f64,
    /// The weights of the rows with a plan (`mean`), or of every row
    /// (`joint`).
    plan: f64,
    /// The user embeddings' Gaussian prior per step: `train.embedding_prior`
    /// over the training rows.
    embedding_prior: f64,
    /// The wide part's prior per step, likewise.
    wide_prior: f64,
}

/// One replica's rows of a batch.
struct Part<'a> {
    rows: Range<usize>,
    /// The conversion loss's weights of these rows, when not the row
    /// weights.
    conversion_weights: Option<&'a [f32]>,
    /// These rows' fraction of the batch.
    share: f64,
}

/// The forward and backward pass of one replica on its part of a batch:
/// its losses are its rows' contributions to the batch's mean losses, so
/// the replicas' gradients sum to the whole batch's.
#[allow(clippy::too_many_arguments)]
fn replica_step(
    network: &Network,
    layout: &Layout,
    cfg: &TrainConfig,
    features: &Features,
    targets: &Targets,
    part: Part<'_>,
    norms: &Normalisers,
    device: &Device,
) -> ReplicaStep {
    let rows = part.rows;
    let inputs = layout.inputs(features, rows.clone(), device);
    let y = TargetTensors::new(targets, rows.clone(), device);
    let conversion_weight = match part.conversion_weights {
        Some(weights) => Tensor::from_data(TensorData::new(weights.to_vec(), [rows.len()]), device),
        None => y.weight.clone(),
    };
    // Each member minimises its own objective on the same rows; their sum
    // has the same gradient per member as each alone.
    let members = network.members();
    let mut total: Option<Tensor<1>> = None;
    let (mut conversion_sum, mut plan_sum): (Option<Tensor<1>>, Option<Tensor<1>>) = (None, None);
    for member in members {
        let out = member.forward(&inputs);
        let conv_loss = binary_cross_entropy_sum(
            out.conversion,
            y.converted.clone(),
            conversion_weight.clone(),
        )
        .div_scalar(norms.conversion);
        let plan_loss = out.plan.map(|logits| {
            masked_cross_entropy_sum(logits, y.plan.clone(), y.weight.clone())
                .div_scalar(norms.plan)
        });
        let loss = match member.task_log_variance() {
            // exp(-s) L + s per task: a task with noisier loss learns a
            // larger s and so a smaller weight. Each replica adds its share
            // of s.
            Some(s) => {
                let term = |loss: Tensor<1>, task: usize| {
                    let s = s.clone().narrow(0, task, 1);
                    loss * s.clone().neg().exp() + s * part.share
                };
                let mut loss = term(conv_loss.clone(), 0);
                if let Some(plan_loss) = &plan_loss {
                    loss = loss + term(plan_loss.clone(), 1);
                }
                loss
            }
            None => {
                let mut loss = conv_loss.clone() * cfg.conversion_weight;
                if let Some(plan_loss) = &plan_loss {
                    loss = loss + plan_loss.clone() * cfg.plan_weight;
                }
                loss
            }
        };
        // The prior's term of the objective is a whole-data one: each
        // replica adds its share, as with the task log-variances.
        let mut loss = loss;
        for (square_sum, precision) in [
            (member.user_embedding_square_sum(), norms.embedding_prior),
            (member.wide_square_sum(), norms.wide_prior),
        ] {
            if let Some(square_sum) = square_sum.filter(|_| precision > 0.0) {
                loss = loss + square_sum * (precision * part.share);
            }
        }
        total = Some(add(total, loss));
        conversion_sum = Some(add(conversion_sum, conv_loss.detach()));
        plan_sum = plan_loss.map(|loss| add(plan_sum.take(), loss.detach()));
    }
    // The reported losses are the members' mean, per row of the batch.
    let n = norms.rows as f64 / members.len() as f64;
    let loss = total.expect("a network has at least one member");
    ReplicaStep {
        grads: GradientsParams::from_grads(loss.backward(), network),
        conversion: conversion_sum.expect("a network has at least one member") * n,
        plan: plan_sum.map(|loss| loss * n),
    }
}

/// `sum + value`, or `value` when there is no sum yet.
fn add(sum: Option<Tensor<1>>, value: Tensor<1>) -> Tensor<1> {
    match sum {
        Some(sum) => sum + value,
        None => value,
    }
}

/// The seed of replica `r`'s dropout stream (replica 0 uses the run's).
fn replica_seed(seed: u64, replica: usize) -> u64 {
    seed ^ (replica as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Sums the replicas' gradients per parameter with burn's
/// [`MultiGradientsParams`], onto `device`.
fn merge_gradients(
    network: &Network,
    mut multi: MultiGradientsParams,
    device: &Device,
) -> GradientsParams {
    if multi.grads.len() == 1 {
        return multi.grads.pop().expect("one replica").0;
    }
    struct Merge<'a> {
        multi: &'a mut MultiGradientsParams,
        merged: GradientsParams,
        device: &'a Device,
    }
    impl ModuleVisitor for Merge<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some((grad, _)) = self.multi.remove::<D>(param.id) {
                self.merged.register(param.id, grad.to_device(self.device));
            }
        }
    }
    let mut merge = Merge {
        multi: &mut multi,
        merged: GradientsParams::new(),
        device,
    };
    network.visit(&mut merge);
    merge.merged
}

/// Writes the run's resumable state (see [`crate::resume`]).
fn save_resume(
    config: &Config,
    run_dir: &Path,
    network: &Network,
    optimizer: &burn::optim::ModuleOptimizer,
    best: Option<&Network>,
    position: crate::resume::Position,
) -> Result<()> {
    let mut store = burn::store::BurnpackStore::from_bytes(None);
    let fail = |message: String| {
        Error::Checkpoint(checkpoint::CheckpointError::Weights {
            path: run_dir.join(crate::resume::RESUME_FILE),
            message,
        })
    };
    network
        .save_into(&mut store)
        .map_err(|e| fail(e.to_string()))?;
    let weights = store.get_bytes().map_err(|e| fail(e.to_string()))?.to_vec();
    let optimizer = optimizer
        .to_record()
        .into_bytes()
        .map_err(|e| fail(e.to_string()))?
        .to_vec();
    let best_weights = best.map(checkpoint::weights_bytes).transpose()?;
    crate::resume::ResumeState {
        config: config.to_toml(),
        position,
        weights,
        optimizer,
        best_weights,
    }
    .write(run_dir)?;
    Ok(())
}

fn eval_has_plan(network: &Network) -> bool {
    network.has_plan_head()
}

fn progress_bar(visible: bool, total: u64) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} rows, {per_sec} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Validation metrics of a network on a batch.
pub struct Evaluation {
    pub conversion: crate::metrics::BinarySummary,
    pub plan: Option<crate::metrics::PlanSummary>,
}

impl Evaluation {
    fn plan_log_loss(&self) -> Option<f64> {
        self.plan.as_ref().and_then(|p| p.log_loss)
    }
}

/// Scores `batch` with an inference-mode network and summarises the
/// conversion head (on each row's own offer) and the plan head.
pub fn evaluate(network: &Network, layout: &Layout, batch: &Batch, device: &Device) -> Evaluation {
    let mut conversion = BinaryMetrics::default();
    let mut plan = PlanMetrics::default();
    let rows = batch.features.rows;
    let weights = &batch.targets.weight;
    for start in (0..rows).step_by(EVAL_CHUNK) {
        let range = start..(start + EVAL_CHUNK).min(rows);
        let inputs = layout.inputs(&batch.features, range.clone(), device);
        let out = network.forward(&inputs);
        let p: Vec<f32> = crate::batch::to_vec(sigmoid(out.conversion));
        conversion.update(
            &p,
            &batch.targets.converted[range.clone()],
            Some(&weights[range.clone()]),
        );
        if let Some(logits) = out.plan {
            let [_, classes] = logits.dims();
            let probs = crate::batch::to_vec(softmax(logits, 1));
            plan.update(
                &probs,
                classes,
                &batch.targets.plan[range.clone()],
                Some(&weights[range]),
            );
        }
    }
    Evaluation {
        conversion: conversion.finish(),
        plan: network.has_plan_head().then(|| plan.finish()),
    }
}

/// Scales each member's gradients so that their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`; burn's own clipping is per
/// parameter). Per member, so that an ensemble's members train as each
/// would alone.
fn clip_global_norm(network: &Network, grads: GradientsParams, max_norm: f64) -> GradientsParams {
    network
        .members()
        .iter()
        .fold(grads, |grads, member| clip_member(member, grads, max_norm))
}

fn clip_member(network: &Member, grads: GradientsParams, max_norm: f64) -> GradientsParams {
    if max_norm <= 0.0 {
        return grads;
    }
    struct SquaredNorm<'a> {
        grads: &'a GradientsParams,
        sum: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SquaredNorm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum();
                self.sum = Some(match self.sum.take() {
                    Some(total) => total + s,
                    None => s,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: Tensor<1>,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let factor = self.factor.clone().reshape([1usize; D]);
                self.grads.register(param.id, g.mul(factor));
            }
        }
    }
    let mut norm = SquaredNorm {
        grads: &grads,
        sum: None,
    };
    network.visit(&mut norm);
    let Some(sum) = norm.sum else { return grads };
    // min(1, max_norm / norm) as a one-element tensor: scaling by it on the
    // device avoids reading the norm back at every step.
    let factor = (sum.sqrt() + 1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0);
    let mut grads = grads;
    network.visit(&mut Scale {
        grads: &mut grads,
        factor,
    });
    grads
}
