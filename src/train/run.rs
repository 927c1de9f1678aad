//! The epoch loop: training batches, validation, early stopping, the best
//! weights kept, and the resume state saved as it goes.

use super::record::EpochMetrics;
use super::step::{Stepper, ipw_scale, plan_share};
use super::wide_prior::{WideColumn, WidePrior};
use crate::config::Config;
use crate::data::Batch;
use crate::evaluation::metrics::{BinaryMetrics, PlanMetrics};
use crate::model::inputs::Layout;
use crate::model::{Network, NetworkConfig};
use crate::preprocess::{Features, Preprocessor, Targets};
use crate::scoring::checkpoint;
use crate::{Error, Result};
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use burn::tensor::activation::{sigmoid, softmax};
use chacha20::ChaCha8Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Rows per forward pass when validating.
pub(super) const EVAL_CHUNK: usize = 8192;

/// The state of one training run.
pub struct Run<'a> {
    config: &'a Config,
    layout: Layout,
    /// The id columns with wide biases, and the wide table's width.
    wide: (Vec<WideColumn>, usize),
    device: Device,
    network: Network,
    /// Where a resumed run picks up, with the best epoch's network so far.
    resume: Option<(super::resume::Position, Vec<u8>, Option<Network>)>,
}

/// What [`Run::fit`] ends with.
pub struct Outcome {
    /// The best epoch's weights, in inference mode.
    pub network: Network,
    pub best: EpochMetrics,
    pub epochs: usize,
    pub history: Vec<EpochMetrics>,
    pub rows_per_sec: f64,
    /// Rows per optimisation step ([`TrainConfig::batch_rows`](crate::config::TrainConfig::batch_rows)).
    pub batch_size: usize,
}

impl<'a> Run<'a> {
    /// A fresh network, seeded from `config.seed`, on `device`.
    pub fn new(
        config: &'a Config,
        net: &NetworkConfig,
        pre: &Preprocessor,
        device: &Device,
    ) -> Run<'a> {
        device.seed(config.seed);
        let network = net.init(&device.clone().autodiff());
        let names: Vec<&str> = pre
            .categorical
            .iter()
            .map(|v| v.column())
            .chain(pre.hashed.iter().map(|h| h.column.as_str()))
            .collect();
        Run::build(config, net, network, device, &|j| names[j].to_string())
    }

    /// A run that starts from given weights (for parity tests across
    /// backends), moved onto `device` for training.
    pub fn with_network(
        config: &'a Config,
        net: &NetworkConfig,
        network: Network,
        device: &Device,
    ) -> Run<'a> {
        Run::build(config, net, network, device, &|j| {
            format!("embedded column {j}")
        })
    }

    /// A run from given weights, naming each embedded column `j` by
    /// `name(j)` in the training log.
    fn build(
        config: &'a Config,
        net: &NetworkConfig,
        network: Network,
        device: &Device,
        name: &dyn Fn(usize) -> String,
    ) -> Run<'a> {
        let layout = Layout::new(net);
        let (offsets, _) = layout.offsets();
        let wide_columns = net
            .wide_columns()
            .into_iter()
            .map(|column| WideColumn {
                name: name(column),
                column,
                offset: offsets[column],
                size: net.embedding_sizes[column],
            })
            .collect();
        Run {
            config,
            layout,
            wide: (wide_columns, net.wide_width()),
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
        state: super::resume::ResumeState,
        net: &NetworkConfig,
    ) -> Result<Run<'a>> {
        let bad = |message: String| {
            Error::Checkpoint(checkpoint::CheckpointError::Weights {
                path: PathBuf::from(super::resume::RESUME_FILE),
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
            replicas(cfg)?
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
            wide_prior: wide_prior(&self.wide, &data, cfg),
            step: 0,
            total_steps: steps_per_epoch * cfg.epochs,
            batch_size,
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
                    path: PathBuf::from(super::resume::RESUME_FILE),
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
            let task_log_variance = eval.task_log_variance().map(crate::model::inputs::to_vec);
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
            batch_size: stepper.batch_size,
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
    pub(super) fn rows(&self) -> usize {
        match self {
            TrainData::Memory(train) => train.features.rows,
            TrainData::Stream(stream) => stream.rows(),
        }
    }
}

/// Writes the run's resumable state (see [`super::resume`]).
fn save_resume(
    config: &Config,
    run_dir: &Path,
    network: &Network,
    optimizer: &burn::optim::ModuleOptimizer,
    best: Option<&Network>,
    position: super::resume::Position,
) -> Result<()> {
    let mut store = burn::store::BurnpackStore::from_bytes(None);
    let fail = |message: String| {
        Error::Checkpoint(checkpoint::CheckpointError::Weights {
            path: run_dir.join(super::resume::RESUME_FILE),
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
    super::resume::ResumeState {
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
pub struct ValidationMetrics {
    pub conversion: crate::evaluation::metrics::BinarySummary,
    pub plan: Option<crate::evaluation::metrics::PlanSummary>,
}

impl ValidationMetrics {
    fn plan_log_loss(&self) -> Option<f64> {
        self.plan.as_ref().and_then(|p| p.log_loss)
    }
}

/// Scores `batch` with an inference-mode network and summarises the
/// conversion head (on each row's own offer) and the plan head.
pub fn evaluate(
    network: &Network,
    layout: &Layout,
    batch: &Batch,
    device: &Device,
) -> ValidationMetrics {
    let mut conversion = BinaryMetrics::default();
    let mut plan = PlanMetrics::default();
    let rows = batch.features.rows;
    let weights = &batch.targets.weight;
    for start in (0..rows).step_by(EVAL_CHUNK) {
        let range = start..(start + EVAL_CHUNK).min(rows);
        let inputs = layout.inputs(&batch.features, range.clone(), device);
        let out = network.forward(&inputs);
        let p: Vec<f32> = crate::model::inputs::to_vec(sigmoid(out.conversion));
        conversion.update(
            &p,
            &batch.targets.converted[range.clone()],
            Some(&weights[range.clone()]),
        );
        if let Some(logits) = out.plan {
            let [_, classes] = logits.dims();
            let probs = crate::model::inputs::to_vec(softmax(logits, 1));
            plan.update(
                &probs,
                classes,
                &batch.targets.plan[range.clone()],
                Some(&weights[range]),
            );
        }
    }
    ValidationMetrics {
        conversion: conversion.finish(),
        plan: network.has_plan_head().then(|| plan.finish()),
    }
}

/// The training replicas' devices (for inference; the first holds the
/// weights): one per `train.devices` entry, or `backend`'s device.
pub fn replicas(train: &crate::config::TrainConfig) -> Result<Vec<Device>> {
    if train.devices.is_empty() {
        return Ok(vec![crate::model::device::device(train.backend)?]);
    }
    train
        .devices
        .iter()
        .map(|spec| {
            let spec = spec
                .parse::<crate::config::DeviceSpec>()
                .map_err(|reason| crate::config::ConfigError::Invalid {
                    origin: "config".into(),
                    field: "train.devices".into(),
                    reason,
                })?;
            crate::model::device::from_spec(spec)
        })
        .collect()
}

/// The wide part's prior: estimated from the training rows when they are in
/// memory (`train.wide_prior_from_data`), else `train.wide_prior` for every
/// column and output.
fn wide_prior(
    (columns, width): &(Vec<WideColumn>, usize),
    data: &TrainData<'_>,
    cfg: &crate::config::TrainConfig,
) -> WidePrior {
    let (columns, width) = (columns.clone(), *width);
    match data {
        TrainData::Memory(train) if cfg.wide_prior_from_data => {
            let prior = WidePrior::estimate(columns, width, &train.features, &train.targets, cfg);
            let sds = prior.sd.iter().flat_map(|sd| sd.chunks(width.max(1)));
            for (column, sd) in prior.columns.iter().zip(sds) {
                tracing::info!(column = column.name, sd = ?sd, "wide prior");
            }
            prior
        }
        _ => WidePrior::uniform(columns, width, cfg.wide_prior / data.rows().max(1) as f64),
    }
}
