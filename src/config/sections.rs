//! The config's sections, field by field: what each key means and its
//! default (each section's `impl Default`; `configs/default.toml` and the
//! "Default" in each field's documentation are checked against it).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// `[data]`: where to read, and how to hold out validation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Training data: a Parquet or CSV file, a directory of such files
    /// (shards), or a glob such as `logs/day=*/part-*.parquet`. Default: none
    /// (`upsell train` then uses built-in synthetic data).
    pub train: Option<PathBuf>,
    /// Validation data, in the same forms. Default: none, so `split` carves
    /// the validation rows out of `train`.
    pub valid: Option<PathBuf>,
    /// How to carve validation rows out of `train` when `valid` is not set.
    /// Default `random`.
    pub split: SplitRule,
    /// The fraction of rows held out for validation. Default 0.1.
    pub valid_fraction: f64,
    /// The largest fraction of rows that may be unusable (a null label, offer
    /// or propensity) before loading fails. Unusable rows under this fraction
    /// are dropped, counted and reported. Default 0: any unusable row fails.
    pub max_invalid_fraction: f64,
    /// Stream `train` shard by shard during training instead of loading it:
    /// memory stays bounded by `shuffle_buffer` whatever the row count.
    /// Needs `valid`. Default false.
    pub stream: bool,
    /// Rows held by the streaming shuffle buffer. Default 1,000,000.
    pub shuffle_buffer: usize,
    /// When streaming, the preprocessing is fitted on every training row in
    /// one pass (0) or on the first `fit_rows` rows of the shards taken in a
    /// seeded random order. Default 0.
    pub fit_rows: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            train: None,
            valid: None,
            split: SplitRule::default(),
            valid_fraction: 0.1,
            max_invalid_fraction: 0.0,
            stream: false,
            shuffle_buffer: 1_000_000,
            fit_rows: 0,
        }
    }
}

/// How validation rows are chosen when no validation data is given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitRule {
    /// A seeded random fraction. With an `id` column the choice is made per
    /// id (a user's rows stay together); otherwise per row.
    #[default]
    Random,
    /// The latest fraction by the `time` column (needs `columns.time`).
    Time,
}

/// `[columns]`: the role of each column. Columns not named here are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnsConfig {
    /// Numeric features, normalised with the training mean and standard
    /// deviation. Nulls are imputed with the mean and flagged. Default: none.
    #[serde(default)]
    pub numeric: Vec<String>,
    /// Categorical features, embedded through a vocabulary fitted on the
    /// training data. Default: none.
    #[serde(default)]
    pub categorical: Vec<String>,
    /// High-cardinality categorical features (ids), hashed into the given
    /// number of buckets instead of a vocabulary. Default: none.
    #[serde(default)]
    pub hashed: BTreeMap<String, u32>,
    /// The product shown; every value must be a key of `[products]`.
    #[serde(default)]
    pub offer: Option<String>,
    /// The value of the offer column that marks a row of a no-offer holdout
    /// (a user deliberately shown nothing), e.g. "none". Such rows train the
    /// model's no-offer arm, so that decisions count what an offer adds to
    /// what the user would have bought anyway; their context columns are
    /// ignored and their propensity is the holdout's share. Default: none
    /// (every row was shown an offer, and an uncontacted user is taken to
    /// buy nothing).
    #[serde(default)]
    pub no_offer: Option<String>,
    /// Context columns of the exposure (surface, message, ...), embedded
    /// like categorical features. Default: none.
    #[serde(default)]
    pub context: Vec<String>,
    /// The label: 1 when the user converted after the exposure, else 0.
    /// Integers, booleans and the strings 0/1, true/false and yes/no
    /// (any case) are accepted. Required.
    pub converted: String,
    /// The product bought, null when none; values must be products.
    #[serde(default)]
    pub plan: Option<String>,
    /// The logging policy's probability of the exposure shown, in (0, 1].
    #[serde(default)]
    pub propensity: Option<String>,
    /// The value realised by the exposure (0 when nothing was bought).
    #[serde(default)]
    pub value: Option<String>,
    /// A non-negative weight per row for the losses and metrics.
    #[serde(default)]
    pub weight: Option<String>,
    /// The exposure time (integer, float, date or datetime), for time splits.
    #[serde(default)]
    pub time: Option<String>,
    /// A row or user id, carried to outputs and used for random splits.
    #[serde(default)]
    pub id: Option<String>,
}

impl ColumnsConfig {
    /// The propensity column of logged decisions: `propensity` when unnamed.
    pub fn propensity_or_default(&self) -> &str {
        self.propensity.as_deref().unwrap_or("propensity")
    }

    /// The time column of logged decisions: `exposure_time` when unnamed.
    pub fn time_or_default(&self) -> &str {
        self.time.as_deref().unwrap_or("exposure_time")
    }

    /// Every configured column with its role, in a stable order.
    pub fn roles(&self) -> Vec<(&str, ColumnRole)> {
        let mut roles: Vec<(&str, ColumnRole)> = Vec::new();
        roles.extend(
            self.numeric
                .iter()
                .map(|c| (c.as_str(), ColumnRole::Numeric)),
        );
        roles.extend(
            self.categorical
                .iter()
                .map(|c| (c.as_str(), ColumnRole::Categorical)),
        );
        roles.extend(self.hashed.keys().map(|c| (c.as_str(), ColumnRole::Hashed)));
        roles.extend(self.offer.as_deref().map(|c| (c, ColumnRole::Offer)));
        roles.extend(
            self.context
                .iter()
                .map(|c| (c.as_str(), ColumnRole::Context)),
        );
        roles.push((self.converted.as_str(), ColumnRole::Converted));
        let optional = [
            (&self.plan, ColumnRole::Plan),
            (&self.propensity, ColumnRole::Propensity),
            (&self.value, ColumnRole::Value),
            (&self.weight, ColumnRole::Weight),
            (&self.time, ColumnRole::Time),
            (&self.id, ColumnRole::Id),
        ];
        for (column, role) in optional {
            roles.extend(column.as_deref().map(|c| (c, role)));
        }
        roles
    }
}

/// What a column is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    Numeric,
    Categorical,
    Hashed,
    Offer,
    Context,
    Converted,
    Plan,
    Propensity,
    Value,
    Weight,
    Time,
    Id,
}

impl ColumnRole {
    /// The `[columns]` key that declares this role.
    pub fn key(self) -> &'static str {
        match self {
            ColumnRole::Numeric => "numeric",
            ColumnRole::Categorical => "categorical",
            ColumnRole::Hashed => "hashed",
            ColumnRole::Offer => "offer",
            ColumnRole::Context => "context",
            ColumnRole::Converted => "converted",
            ColumnRole::Plan => "plan",
            ColumnRole::Propensity => "propensity",
            ColumnRole::Value => "value",
            ColumnRole::Weight => "weight",
            ColumnRole::Time => "time",
            ColumnRole::Id => "id",
        }
    }
}

/// `[preprocess]`: how raw values become model inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessConfig {
    /// A categorical or context value seen fewer times than this in the
    /// training data maps to the out-of-vocabulary index, like an unseen
    /// value does at serving time. Default 5.
    pub min_count: u64,
    /// The largest vocabulary per column (most frequent values first); 0
    /// means no limit. Default 0.
    pub max_vocab: usize,
    /// Numeric columns with heavy tails, transformed with
    /// `sign(x) * ln(1 + |x|)` before normalisation. Default: none.
    pub log1p: Vec<String>,
    /// Quantile bins of each numeric column's piecewise-linear encoding,
    /// given to the network beside the standardised value (fewer where the
    /// column has fewer distinct values); 0 gives the value alone.
    /// Default 8.
    pub numeric_bins: usize,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            min_count: 5,
            max_vocab: 0,
            log1p: Vec::new(),
            numeric_bins: 8,
        }
    }
}

/// `[model]`: the network's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Embedding width of each categorical and hashed column. Default 8.
    pub embedding_dim: usize,
    /// Embedding width of the offer and of each context column. Default 16.
    pub offer_dim: usize,
    /// Widths of the shared user encoder's layers; the last is the user
    /// embedding's width. Default [128, 64].
    pub hidden: Vec<usize>,
    /// Widths of the conversion tower (user embedding + offer + context ->
    /// logit). Default `[64]`.
    pub tower: Vec<usize>,
    /// `relu` or `gelu`. Default `relu`.
    pub activation: ActivationKind,
    /// Dropout after each hidden layer while training. Default 0.1.
    pub dropout: f64,
    /// Layer normalisation after each hidden layer. Default false.
    pub layer_norm: bool,
    /// Whether the plan-choice head also sees the offer, so that what a
    /// buyer takes (and so an offer's value) depends on what was offered.
    /// Default true.
    pub plan_uses_offer: bool,
    /// Whether the conversion tower ends in one output per product (each
    /// product reads the shared tower its own way) rather than one shared
    /// output. Default true.
    pub product_heads: bool,
    /// A wide part beside the deep one (Cheng et al., 2016): each value of
    /// each id column (`wide_min_values`) adds its own learned bias to the
    /// conversion logit and to every plan logit, as a logistic regression
    /// on one-hot columns would. Each column's biases are held to what its
    /// values' spread in the data supports (`train.wide_prior_from_data`).
    /// Default false: it gains where an id carries the signal (brand-choice
    /// panels, regions) but costs the held-out incremental world 0.007-0.010
    /// of the lift (benches/decision-quality.md, "The wide prior judged
    /// within the other columns").
    pub wide: bool,
    /// The fewest values (vocabulary entries or hash buckets, the reserved
    /// ones included) a categorical or hashed column needs for wide biases:
    /// ids, whose embeddings learn each value slowly from few rows, rather
    /// than short lists of levels, which the encoder learns well. 0 gives
    /// every column biases. Default 50.
    pub wide_min_values: usize,
    /// How the tasks share the user encoder: `shared_bottom` (one encoder)
    /// or `mmoe` (a mixture of `experts` encoders, one gate per task).
    /// Default `shared_bottom`.
    pub sharing: Sharing,
    /// Experts of `mmoe`, each an MLP of widths `hidden`. Default 4.
    pub experts: usize,
    /// Networks trained side by side on the same batches from different
    /// initial weights, stored in one checkpoint; scores average their
    /// logits. Default 3.
    pub members: usize,
}

/// How the conversion and plan tasks share the user encoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    #[default]
    SharedBottom,
    Mmoe,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            embedding_dim: 8,
            offer_dim: 16,
            hidden: vec![128, 64],
            tower: vec![64],
            activation: Default::default(),
            dropout: 0.1,
            layer_norm: false,
            plan_uses_offer: true,
            product_heads: true,
            wide: false,
            wide_min_values: 50,
            sharing: Sharing::default(),
            experts: 4,
            members: 3,
        }
    }
}

/// The compute backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn-flex: pure-Rust CPU, the fastest CPU backend here.
    #[default]
    Flex,
    /// burn-ndarray: CPU (deprecated upstream, kept selectable).
    Ndarray,
    /// burn-wgpu: GPU through Vulkan, Metal or DX12.
    Wgpu,
}

impl std::fmt::Display for BackendKind {
    /// The name `--backend` and `train.backend` take.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
        })
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flex" => Ok(BackendKind::Flex),
            "ndarray" => Ok(BackendKind::Ndarray),
            "wgpu" => Ok(BackendKind::Wgpu),
            _ => Err(format!(
                "unknown backend {s:?}; expected flex, ndarray or wgpu"
            )),
        }
    }
}

/// How the learning rate changes after warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Cosine from `lr` down to `lr * min_lr_ratio` at the last step.
    #[default]
    Cosine,
    /// Linear from `lr` down to `lr * min_lr_ratio` at the last step.
    Linear,
    /// Constant `lr`.
    None,
}

/// `[train]`: the optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `flex`, `ndarray` or `wgpu`. Default `flex`.
    pub backend: BackendKind,
    /// CPU threads for the CPU backends; 0 uses every core. Default 0.
    pub threads: usize,
    /// Passes over the training rows. Default 10.
    pub epochs: usize,
    /// Rows per optimisation step, at most. Default 1024.
    pub batch_size: usize,
    /// With `backend = "wgpu"` the batch grows past `batch_size` with the
    /// data, so that an epoch takes `gpu_steps_per_epoch` steps, up to this
    /// many rows: a GPU pays a dispatch per operation, so larger batches
    /// fill it. 0 (or at most `batch_size`) keeps `batch_size`. Default
    /// 16384.
    pub gpu_batch_size: usize,
    /// Steps per epoch that the GPU's batch keeps (see `gpu_batch_size`):
    /// enough steps that quality matches `batch_size`'s. Default 200.
    pub gpu_steps_per_epoch: usize,
    /// A batch above this many rows raises the peak learning rate by
    /// sqrt(batch / lr_reference_batch), the square-root rule for Adam; 0
    /// keeps `lr` whatever the batch. Smaller batches keep `lr`, which was
    /// chosen with the small batches small data gets. Default 1024.
    pub lr_reference_batch: usize,
    /// Small data gets smaller batches (not below 32 rows) so that an epoch
    /// takes at least this many optimisation steps; 0 keeps `batch_size`
    /// whatever the data. Default 50.
    pub min_steps_per_epoch: usize,
    /// Peak learning rate of AdamW. Default 0.002.
    pub lr: f64,
    /// AdamW's decoupled weight decay. Default 0.0001.
    pub weight_decay: f64,
    /// Steps of linear warm-up from 0 to `lr`, at most a tenth of all
    /// steps. Default 100.
    pub warmup_steps: usize,
    /// `cosine`, `linear` or `none`. Default `cosine`.
    pub decay: Decay,
    /// The final learning rate as a fraction of `lr`. Default 0.05.
    pub min_lr_ratio: f64,
    /// Largest global L2 norm of the gradients; 0 turns clipping off.
    /// Default 1.0.
    pub grad_clip: f64,
    /// Epochs without a lower validation loss before training stops; 0
    /// turns early stopping off. Default 3.
    pub patience: usize,
    /// How the task losses are averaged: `joint` or `mean` (see
    /// [`Objective`]). Early stopping watches the same objective on the
    /// validation rows. Default `joint`.
    pub objective: Objective,
    /// Weight of the conversion loss (binary cross-entropy). Default 1.0.
    pub conversion_weight: f64,
    /// Weight of the plan-choice loss (cross-entropy on rows with a plan).
    /// Default 1.0.
    pub plan_weight: f64,
    /// Precision of a Gaussian prior on the user embeddings (categorical and
    /// hashed columns): the objective adds `embedding_prior * |E|^2 / rows`,
    /// MAP estimation with the prior counted once for the whole data. A
    /// value seen in few rows is pulled towards 0 (the network's view of an
    /// average value); a frequent one hardly. 0 disables it. Default 100.
    pub embedding_prior: f64,
    /// Precision of a Gaussian prior on the wide part's biases
    /// (`model.wide`), counted like `embedding_prior`, when
    /// `wide_prior_from_data` is off or the rows are streamed. Default 1.
    pub wide_prior: f64,
    /// Estimate the wide part's prior from the training rows instead: per
    /// id column and output, a Gaussian whose variance is how much the
    /// column's values differ beyond chance and beyond what the other
    /// categorical columns predict (a random-effects estimate), so
    /// an id that carries much gets loose biases and one that carries
    /// little gets biases held near 0. Default true.
    pub wide_prior_from_data: bool,
    /// Rows of built-in synthetic data when `data.train` is not set.
    /// Default 200000.
    pub synthetic_rows: u64,
    /// `fixed` (the weights above) or `uncertainty`: learned homoscedastic
    /// uncertainty weights, `exp(-s_i) L_i + s_i` (Kendall et al., 2018).
    /// Default `fixed`.
    pub task_weighting: TaskWeighting,
    /// Weight each row's conversion loss by `1 / propensity` (capped at
    /// `ipw_clip`, then normalised to mean 1), so the model learns as if
    /// offers had been shown at random rather than by the logging policy.
    /// Needs `columns.propensity`. Default false.
    pub ipw: bool,
    /// The largest inverse-propensity weight. Default 20.
    pub ipw_clip: f64,
    /// Calibration fitted on the validation split after training and
    /// applied to every score: `temperature`, `product_temperature`,
    /// `isotonic` or `none`. Default `temperature`.
    pub calibration: CalibrationMethod,
    /// Steps between resumable states (`RUN_DIR/resume.bin`, for `upsell
    /// train --resume`); 0 writes none. Default 500.
    pub checkpoint_every_steps: usize,
    /// Data-parallel training: one model replica per entry, each computing
    /// the gradients of its share of every batch; they are summed on the
    /// first device, which holds the weights and the optimiser state.
    /// Entries: `flex`, `ndarray`, `wgpu` (the default adapter), `wgpu:N`
    /// (discrete GPU N), `wgpu:cpu`. An entry may repeat (replicas sharing
    /// a CPU use more of its cores). Default empty: one replica on
    /// `backend`'s device.
    pub devices: Vec<String>,
}

/// A device named in `train.devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Flex,
    Ndarray,
    /// A wgpu adapter: the default one, discrete GPU N, or the CPU adapter.
    Wgpu(Option<usize>),
    WgpuCpu,
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "flex" => Ok(DeviceSpec::Flex),
            "ndarray" => Ok(DeviceSpec::Ndarray),
            "wgpu" => Ok(DeviceSpec::Wgpu(None)),
            "wgpu:cpu" => Ok(DeviceSpec::WgpuCpu),
            other => other
                .strip_prefix("wgpu:")
                .and_then(|n| n.parse().ok())
                .map(|n| DeviceSpec::Wgpu(Some(n)))
                .ok_or_else(|| {
                    format!(
                        "{other:?} is not a device: use flex, ndarray, wgpu, wgpu:N or wgpu:cpu"
                    )
                }),
        }
    }
}

/// How the two task losses are averaged before they are weighted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The negative log-likelihood of each row's whole outcome (converted
    /// or not, and which plan): the conversion loss plus the buyers' plan
    /// loss, both averaged over every row. The plan task then weighs as
    /// much as buying is common, so it cannot dominate the shared encoder
    /// or early stopping when buyers are rare.
    #[default]
    Joint,
    /// Each task averaged over its own rows (conversion over every row,
    /// plan over the buyers) and summed.
    Mean,
}

/// How the task losses are combined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskWeighting {
    #[default]
    Fixed,
    Uncertainty,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            backend: BackendKind::default(),
            threads: 0,
            epochs: 10,
            batch_size: 1024,
            gpu_batch_size: 16_384,
            gpu_steps_per_epoch: 200,
            lr_reference_batch: 1024,
            min_steps_per_epoch: 50,
            lr: 0.002,
            weight_decay: 1e-4,
            warmup_steps: 100,
            decay: Decay::default(),
            min_lr_ratio: 0.05,
            grad_clip: 1.0,
            patience: 3,
            objective: Objective::default(),
            conversion_weight: 1.0,
            plan_weight: 1.0,
            embedding_prior: 100.0,
            wide_prior: 1.0,
            wide_prior_from_data: true,
            synthetic_rows: 200_000,
            task_weighting: TaskWeighting::default(),
            ipw: false,
            ipw_clip: 20.0,
            calibration: Default::default(),
            checkpoint_every_steps: 500,
            devices: Vec::new(),
        }
    }
}

impl TrainConfig {
    /// The rows per optimisation step for `rows` training rows:
    /// `batch_size`, lowered on small data so that an epoch takes
    /// `min_steps_per_epoch` steps, but not below 32 rows (nor
    /// `batch_size`); on a GPU, raised on large data so that an epoch takes
    /// `gpu_steps_per_epoch` steps, up to `gpu_batch_size`.
    pub fn batch_rows(&self, rows: usize) -> usize {
        const SMALLEST: usize = 32;
        let batch = match self.min_steps_per_epoch {
            0 => self.batch_size,
            steps => rows.div_ceil(steps).max(SMALLEST).min(self.batch_size),
        };
        let grows = self.backend == BackendKind::Wgpu
            && self.gpu_batch_size > self.batch_size
            && self.gpu_steps_per_epoch > 0;
        if grows {
            rows.div_ceil(self.gpu_steps_per_epoch)
                .clamp(batch, self.gpu_batch_size)
        } else {
            batch
        }
    }

    /// The peak learning rate for batches of `batch` rows: `lr`, raised by
    /// the square root of the batch over `lr_reference_batch` above it.
    pub fn peak_lr(&self, batch: usize) -> f64 {
        if self.lr_reference_batch == 0 || batch <= self.lr_reference_batch {
            return self.lr;
        }
        self.lr * (batch as f64 / self.lr_reference_batch as f64).sqrt()
    }
}

/// `[policy]`: how probabilities become offers. Saved with the checkpoint
/// and overridable at decision time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `greedy`, `epsilon:E` (explore uniformly with probability E) or
    /// `softmax:T` (sample by expected value at temperature T). Default
    /// `greedy`.
    #[serde(default)]
    pub exploration: Exploration,
    /// The cost of contacting a user, in value units, subtracted from every
    /// offer's value. When above 0, "no offer" is a candidate worth 0 (with
    /// a no-offer arm it always is, and an offer is worth what it adds to
    /// what the user buys anyway). Default 0.
    #[serde(default)]
    pub contact_cost: f64,
    /// Business weight per product, multiplying its expected value. Default
    /// 1 for every product.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Largest share of a batch's decisions per product, in (0, 1]. Met by
    /// per-product shadow prices on the expected value. Default: no caps.
    #[serde(default)]
    pub caps: BTreeMap<String, f64>,
    /// Largest share of a batch's users offered anything, in (0, 1]: a
    /// contact budget, met by a shadow price on every contact, so that the
    /// users left alone are those whose best offer adds least. `recommend`
    /// reports the price as `contact_price`; added to `contact_cost`, it
    /// applies the same threshold one request at a time (the server) or in
    /// other shards. Default: no budget.
    #[serde(default)]
    pub contact_budget: Option<f64>,
    /// Share of users, in [0, 1), the policy keeps as a randomised no-offer
    /// holdout (chosen by a hash of the id and the seed, so the same user is
    /// held out every time): what an offer adds is measured against them.
    /// Default 0.
    #[serde(default)]
    pub holdout: f64,
    /// Eligibility rules; a candidate that any rule matches is excluded.
    #[serde(default)]
    pub exclude: Vec<EligibilityRule>,
}

impl PolicyConfig {
    /// The input columns the eligibility rules read, each once, in rule order.
    pub fn rule_columns(&self) -> Vec<&str> {
        let mut columns: Vec<&str> = Vec::new();
        for rule in &self.exclude {
            if !columns.contains(&rule.column.as_str()) {
                columns.push(&rule.column);
            }
        }
        columns
    }
}

/// Excludes products, or contexts, for users whose `column` matches. For
/// example `{ products = ["student"], column = "age_bucket", not_in =
/// ["18-24"] }`, `{ column = "current_plan", equals_product = true }` (no
/// product the user already has), `{ contexts = { surface = ["push"] },
/// column = "push_opt_in", not_in = ["true"] }` (push only with consent), or
/// `{ column = "days_since_last_upsell", below = 7 }` (a frequency cap: no
/// offer within a week of the last).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EligibilityRule {
    /// The products the rule applies to; empty means every product.
    #[serde(default)]
    pub products: Vec<String>,
    /// The input column the rule reads (as text).
    pub column: String,
    /// Exclude when the value is one of these.
    #[serde(default, rename = "in")]
    pub is_in: Vec<String>,
    /// Exclude when the value is none of these (a null value included).
    #[serde(default)]
    pub not_in: Vec<String>,
    /// Exclude when the value is the product's own name.
    #[serde(default)]
    pub equals_product: bool,
    /// Exclude when the value is a number below this (a null never is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Exclude when the value is a number above this (a null never is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// The contexts the rule applies to, by context column: a candidate
    /// whose value of each named column is one of these. Empty means every
    /// context.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contexts: BTreeMap<String, Vec<String>>,
}

/// The non-linearity between layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    #[default]
    Relu,
    Gelu,
}

/// How the conversion head is calibrated (`train.calibration`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// No calibration: the raw network outputs.
    None,
    /// One temperature per head.
    #[default]
    Temperature,
    /// One conversion temperature per offered product.
    ProductTemperature,
    /// Isotonic regression of the conversion probability.
    Isotonic,
}

/// How a decision is drawn from the candidates' expected values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Exploration {
    /// The best candidate, with probability 1.
    #[default]
    Greedy,
    /// A uniformly random candidate with probability `epsilon`, else the best.
    Epsilon(f64),
    /// A candidate with probability proportional to `exp(ev / temperature)`.
    Softmax(f64),
}

impl FromStr for Exploration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |v: &str, what: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .map_err(|_| format!("{s:?}: {what} {v:?} is not a number"))
        };
        match s.split_once(':') {
            None if s == "greedy" => Ok(Exploration::Greedy),
            Some(("epsilon", v)) => {
                let e = parse(v, "epsilon")?;
                if (0.0..=1.0).contains(&e) {
                    Ok(Exploration::Epsilon(e))
                } else {
                    Err(format!("{s:?}: epsilon must be in [0, 1]"))
                }
            }
            Some(("softmax", v)) => {
                let t = parse(v, "temperature")?;
                if t > 0.0 && t.is_finite() {
                    Ok(Exploration::Softmax(t))
                } else {
                    Err(format!("{s:?}: the temperature must be > 0"))
                }
            }
            _ => Err(format!("{s:?}: expected greedy, epsilon:E or softmax:T")),
        }
    }
}

impl TryFrom<String> for Exploration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Exploration> for String {
    fn from(e: Exploration) -> String {
        e.to_string()
    }
}

impl fmt::Display for Exploration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exploration::Greedy => write!(f, "greedy"),
            Exploration::Epsilon(e) => write!(f, "epsilon:{e}"),
            Exploration::Softmax(t) => write!(f, "softmax:{t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TrainConfig;

    #[test]
    fn small_data_gets_smaller_batches_large_data_full_ones() {
        let cfg = TrainConfig::default();
        // 200,000 rows less validation: full batches.
        assert_eq!(cfg.batch_rows(180_000), 1024);
        // 20,000 rows less validation: 50 steps of 360 rows an epoch.
        assert_eq!(cfg.batch_rows(18_000), 360);
        // Tiny data: batches bottom out at 32 rows.
        assert_eq!(cfg.batch_rows(1_200), 32);
        let fixed = TrainConfig {
            min_steps_per_epoch: 0,
            ..cfg
        };
        assert_eq!(fixed.batch_rows(1_200), 1024);
    }

    #[test]
    fn a_gpu_takes_larger_batches_at_a_higher_learning_rate() {
        let cpu = TrainConfig::default();
        let gpu = TrainConfig {
            backend: super::BackendKind::Wgpu,
            ..cpu.clone()
        };
        assert_eq!(cpu.batch_rows(1_800_000), 1024);
        // 200 steps an epoch on large data, up to 16,384 rows.
        assert_eq!(gpu.batch_rows(1_800_000), 9000);
        assert_eq!(gpu.batch_rows(18_000_000), 16_384);
        // Below 204,800 rows, the CPU's batches.
        assert_eq!(gpu.batch_rows(180_000), 1024);
        assert_eq!(gpu.batch_rows(18_000), 360);
        // Four times the reference batch, twice the learning rate; at or
        // below it, the configured one.
        assert!((cpu.peak_lr(4096) - 2.0 * cpu.lr).abs() < 1e-12);
        assert_eq!(cpu.peak_lr(1024), cpu.lr);
        assert_eq!(cpu.peak_lr(360), cpu.lr);
        let unscaled = TrainConfig {
            lr_reference_batch: 0,
            ..cpu
        };
        assert_eq!(unscaled.peak_lr(16_384), unscaled.lr);
    }
}
