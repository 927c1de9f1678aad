//! One optimisation step: each replica's forward and backward pass on its
//! share of the batch, the losses and priors, gradients merged, clipped and
//! applied.

use super::loss::{binary_cross_entropy_sum, masked_cross_entropy_sum};
use super::record::EpochMetrics;
use crate::config::{Decay, Objective, TrainConfig};
use crate::data::Batch;
use crate::model::inputs::{Layout, TargetTensors};
use crate::model::{Member, Network};
use crate::preprocess::{Features, Targets};
use burn::module::{ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::prelude::*;
use std::ops::Range;

/// The learning rate at `step` of `total` in batches of `batch` rows:
/// linear warm-up to [`TrainConfig::peak_lr`], then the decay.
pub fn learning_rate(
    config: &crate::config::TrainConfig,
    batch: usize,
    step: usize,
    total: usize,
) -> f64 {
    let peak = config.peak_lr(batch);
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

/// The optimisation, one step at a time: the weights, the optimiser, the
/// schedule and the epoch's loss sums.
pub(super) struct Stepper<'r> {
    pub(super) cfg: &'r TrainConfig,
    pub(super) layout: &'r Layout,
    pub(super) seed: u64,
    /// Where the weights and the optimiser state live.
    pub(super) device: Device,
    /// One per data-parallel replica (usually just one). Replica 0 runs on
    /// `device`, on this thread; each other one on its device, on a thread
    /// of its own.
    pub(super) replicas: Vec<Device>,
    /// Where the dropout streams of replicas 1.. stand (replica 0 uses
    /// this thread's).
    pub(super) replica_dropout: Vec<u128>,
    /// Always `Some` between steps (a step consumes and replaces it).
    pub(super) network: Option<Network>,
    pub(super) optimizer: ModuleOptimizer,
    pub(super) ipw_scale: Option<f64>,
    /// `train.embedding_prior` over the training rows.
    pub(super) embedding_prior: f64,
    /// The wide part's prior precisions per column and output, over the
    /// training rows.
    pub(super) wide_prior: super::wide_prior::WidePrior,
    pub(super) step: usize,
    pub(super) total_steps: usize,
    /// Rows per step (the last of an epoch may have fewer), for the peak
    /// learning rate.
    pub(super) batch_size: usize,
    pub(super) lr: f64,
    // Loss sums stay on the device and are read once per epoch: a read per
    // step would make the device wait for the host (and a GPU idle) at
    // every step.
    pub(super) conv_sum: Option<Tensor<1>>,
    pub(super) plan_sum: Option<Tensor<1>>,
    pub(super) weight_sum: f64,
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
    pub(super) fn network(&self) -> &Network {
        self.network.as_ref().expect("a network between steps")
    }

    /// Starts an epoch's loss sums, from a saved position when resuming.
    pub(super) fn start_epoch(&mut self, resuming: Option<&super::resume::Position>) {
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
    pub(super) fn epoch_sums(&mut self) -> (f64, Option<f64>, f64) {
        let read = |sum: Option<Tensor<1>>| sum.map(|s| f64::from(s.into_scalar::<f32>()));
        (
            read(self.conv_sum.take()).unwrap_or(0.0),
            read(self.plan_sum.take()),
            self.weight_sum,
        )
    }

    /// Where the run stands, to resume from after this step.
    pub(super) fn position(
        &self,
        epoch: usize,
        batches_done: usize,
        train_seconds: f64,
        since_best: usize,
        history: &[EpochMetrics],
        best: Option<&EpochMetrics>,
    ) -> super::resume::Position {
        let read = |sum: &Option<Tensor<1>>| sum.clone().map(|s| f64::from(s.into_scalar::<f32>()));
        super::resume::Position {
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
    pub(super) fn step(&mut self, features: &Features, targets: &Targets, range: Range<usize>) {
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
            wide_prior: &self.wide_prior,
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
        self.lr = learning_rate(self.cfg, self.batch_size, self.step, self.total_steps);
        self.network = Some(self.optimizer.step(self.lr, network, grads));
        self.step += 1;
    }
}

/// The factor that turns the plan head's log loss per buyer into the plan
/// term of the objective on `batch`: 1 for `mean`, the weight share of the
/// rows with a plan for `joint`.
pub(super) fn plan_share(objective: Objective, batch: &Batch) -> f64 {
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
struct Normalisers<'a> {
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
    /// The wide part's prior per step, per column and output.
    wide_prior: &'a super::wide_prior::WidePrior,
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
    norms: &Normalisers<'_>,
    device: &Device,
) -> ReplicaStep {
    let rows = part.rows;
    let inputs = layout.inputs(features, rows.clone(), device);
    let y = TargetTensors::new(targets, rows.clone(), device);
    let conversion_weight = match part.conversion_weights {
        Some(weights) => Tensor::from_data(TensorData::new(weights.to_vec(), [rows.len()]), device),
        None => y.weight.clone(),
    };
    // The wide prior's blocks and precisions, once for every member.
    let wide = norms.wide_prior;
    let wide_blocks: Vec<(usize, usize)> =
        wide.columns.iter().map(|c| (c.offset, c.size)).collect();
    let wide_precision = (!wide_blocks.is_empty()).then(|| {
        Tensor::<2>::from_data(
            TensorData::new(wide.precision.clone(), [wide_blocks.len(), wide.width]),
            device,
        )
    });
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
        if let Some(square_sum) = member
            .user_embedding_square_sum()
            .filter(|_| norms.embedding_prior > 0.0)
        {
            loss = loss + square_sum * (norms.embedding_prior * part.share);
        }
        if let (Some(square_sums), Some(precision)) =
            (member.wide_block_square_sums(&wide_blocks), &wide_precision)
        {
            loss = loss + (square_sums * precision.clone()).sum() * part.share;
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
