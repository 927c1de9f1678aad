//! The experiment config: a TOML file, overridden from the command line with
//! `--set section.key=value`, validated once into [`ConfigError`]s.
//!
//! Unknown keys are rejected everywhere. Relative paths inside a config file
//! are resolved against the file's directory; paths given on the command line
//! are resolved against the working directory, as a shell user expects.

mod sections;

pub use crate::error::ConfigError;
pub use sections::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One experiment: where the data is, what its columns mean, what each product
/// is worth, and how to model and train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed for every random choice: splits, sampling, initialisation,
    /// shuffling. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where run directories are created. Default `checkpoints`.
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// Training and validation data, and how to split them.
    #[serde(default)]
    pub data: DataConfig,
    /// The role of each column in the data.
    pub columns: ColumnsConfig,
    /// Each product that can be offered or bought, with its value (for
    /// example a monthly price or a lifetime value). Default: none, for data
    /// with a label but no offers.
    #[serde(default)]
    pub products: BTreeMap<String, f64>,
    /// How features are turned into numbers.
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    /// The network.
    #[serde(default)]
    pub model: ModelConfig,
    /// The optimisation.
    #[serde(default)]
    pub train: TrainConfig,
    /// How scores become offers.
    #[serde(default)]
    pub policy: PolicyConfig,
}

fn default_seed() -> u64 {
    42
}

fn default_out_dir() -> PathBuf {
    PathBuf::from("checkpoints")
}

impl Config {
    /// The shipped `configs/default.toml`, compiled in so that `upsell
    /// train` runs anywhere, with `overrides` applied.
    pub fn builtin(overrides: &[String]) -> Result<Config, ConfigError> {
        Config::builtin_edited(overrides, |_| {})
    }

    /// [`builtin`](Self::builtin), with `edit` applied before validation.
    pub fn builtin_edited(
        overrides: &[String],
        edit: impl FnOnce(&mut Config),
    ) -> Result<Config, ConfigError> {
        Config::from_toml_edited(
            include_str!("../../configs/default.toml"),
            "built-in configs/default.toml",
            Path::new(""),
            overrides,
            edit,
        )
    }

    /// Reads a config file, applies `overrides` (each `section.key=value`)
    /// and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
        Config::load_edited(path, overrides, |_| {})
    }

    /// [`load`](Self::load), with `edit` applied before validation: what the
    /// command line sets besides `--set` (`--data`, `--valid`, `--backend`)
    /// is part of the config that is checked, not a change made after.
    pub fn load_edited(
        path: &Path,
        overrides: &[String],
        edit: impl FnOnce(&mut Config),
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Config::from_toml_edited(&text, &path.display().to_string(), base, overrides, edit)
    }

    /// Parses config text. `origin` names it in errors; relative data paths
    /// in the text are resolved against `base_dir`, those in `overrides`
    /// against the working directory.
    pub fn from_toml(
        text: &str,
        origin: &str,
        base_dir: &Path,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        Config::from_toml_edited(text, origin, base_dir, overrides, |_| {})
    }

    fn from_toml_edited(
        text: &str,
        origin: &str,
        base_dir: &Path,
        overrides: &[String],
        edit: impl FnOnce(&mut Config),
    ) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        };
        let mut config: Config = if overrides.is_empty() {
            // Parsing the original text keeps line numbers in errors.
            toml::from_str(text).map_err(parse_error)?
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
            let file_paths = relative_paths(&table);
            for spec in overrides {
                apply_override(&mut table, spec)?;
            }
            let merged = toml::to_string(&table).expect("a TOML table always serialises");
            let mut config: Config = toml::from_str(&merged).map_err(|e| ConfigError::Parse {
                origin: format!("{origin} with --set overrides"),
                message: e.to_string(),
            })?;
            // Only paths that still hold the file's value resolve against it.
            config.resolve_paths_if(base_dir, |key, path| file_paths.get(key) == Some(path));
            edit(&mut config);
            config.validate(origin)?;
            return Ok(config);
        };
        config.resolve_paths_if(base_dir, |_, _| true);
        edit(&mut config);
        config.validate(origin)?;
        Ok(config)
    }

    fn resolve_paths_if(&mut self, base: &Path, from_file: impl Fn(&str, &PathBuf) -> bool) {
        let join = |key: &str, path: &mut PathBuf| {
            if path.is_relative() && from_file(key, path) {
                *path = base.join(&*path);
            }
        };
        if let Some(p) = self.data.train.as_mut() {
            join("data.train", p);
        }
        if let Some(p) = self.data.valid.as_mut() {
            join("data.valid", p);
        }
    }

    /// The config as TOML, every default filled in: what a run saves and
    /// `upsell config` prints.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config always serialises")
    }

    /// Checks everything serde cannot: names, ranges and cross-references.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            reason,
        };
        let columns = &self.columns;
        if columns.converted.trim().is_empty() {
            return Err(invalid("columns.converted", "must name a column".into()));
        }
        let mut seen: BTreeMap<&str, ColumnRole> = BTreeMap::new();
        for (name, role) in columns.roles() {
            if name.trim().is_empty() {
                return Err(invalid(
                    &format!("columns.{}", role.key()),
                    "a column name is empty".into(),
                ));
            }
            if let Some(previous) = seen.insert(name, role) {
                return Err(invalid(
                    &format!("columns.{}", role.key()),
                    format!(
                        "column {name:?} is already used as columns.{}; a column has one role",
                        previous.key()
                    ),
                ));
            }
        }
        let features = columns.numeric.len() + columns.categorical.len() + columns.hashed.len();
        if features == 0 {
            return Err(invalid(
                "columns",
                "no features: name at least one numeric, categorical or hashed column".into(),
            ));
        }
        for (name, &buckets) in &columns.hashed {
            if buckets == 0 {
                return Err(invalid(
                    &format!("columns.hashed.{name}"),
                    "the number of hash buckets must be at least 1".into(),
                ));
            }
        }
        if (columns.offer.is_some() || columns.plan.is_some()) && self.products.is_empty() {
            return Err(invalid(
                "products",
                "columns.offer or columns.plan is set, so [products] must list every product with its value".into(),
            ));
        }
        if let Some(none) = &columns.no_offer {
            let reason = if columns.offer.is_none() {
                Some("needs columns.offer, the column it is a value of".to_string())
            } else if columns.propensity.is_none() {
                Some(
                    "needs columns.propensity: a no-offer row's propensity is the holdout's share, \
                     which evaluation and off-policy estimates weigh it by"
                        .to_string(),
                )
            } else if self.products.contains_key(none) {
                Some(format!(
                    "{none:?} is a product; a no-offer value must not be"
                ))
            } else {
                none.trim()
                    .is_empty()
                    .then(|| "must not be empty".to_string())
            };
            if let Some(reason) = reason {
                return Err(invalid("columns.no_offer", reason));
            }
        }
        for (product, value) in &self.products {
            if product.trim().is_empty() {
                return Err(invalid("products", "a product name is empty".into()));
            }
            if !value.is_finite() || *value < 0.0 {
                return Err(invalid(
                    &format!("products.{product}"),
                    format!("the value must be a finite number >= 0, got {value}"),
                ));
            }
        }
        for name in &self.preprocess.log1p {
            if !columns.numeric.contains(name) {
                return Err(invalid(
                    "preprocess.log1p",
                    format!("{name:?} is not one of columns.numeric"),
                ));
            }
        }
        let model = &self.model;
        if model.embedding_dim == 0 || model.offer_dim == 0 {
            return Err(invalid(
                "model",
                "embedding widths must be at least 1".into(),
            ));
        }
        if model.hidden.contains(&0) || model.tower.contains(&0) {
            return Err(invalid("model", "layer widths must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&model.dropout) {
            return Err(invalid(
                "model.dropout",
                format!("must be in [0, 1), got {}", model.dropout),
            ));
        }
        if model.members == 0 {
            return Err(invalid(
                "model.members",
                "an ensemble needs at least 1 member".into(),
            ));
        }
        if model.sharing == Sharing::Mmoe && model.experts == 0 {
            return Err(invalid(
                "model.experts",
                "mmoe needs at least 1 expert".into(),
            ));
        }
        let train = &self.train;
        if train.ipw && columns.propensity.is_none() {
            return Err(invalid(
                "train.ipw",
                "inverse-propensity weighting needs columns.propensity".into(),
            ));
        }
        if !(train.ipw_clip >= 1.0 && train.ipw_clip.is_finite()) {
            return Err(invalid(
                "train.ipw_clip",
                format!("must be a finite number >= 1, got {}", train.ipw_clip),
            ));
        }
        let positive = [
            ("train.epochs", train.epochs as f64),
            ("train.batch_size", train.batch_size as f64),
            ("train.lr", train.lr),
        ];
        for (field, value) in positive {
            if !(value > 0.0 && value.is_finite()) {
                return Err(invalid(field, format!("must be > 0, got {value}")));
            }
        }
        let non_negative = [
            ("train.weight_decay", train.weight_decay),
            ("train.grad_clip", train.grad_clip),
            ("train.conversion_weight", train.conversion_weight),
            ("train.plan_weight", train.plan_weight),
            ("train.embedding_prior", train.embedding_prior),
            ("train.wide_prior", train.wide_prior),
        ];
        for (field, value) in non_negative {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(invalid(field, format!("must be >= 0, got {value}")));
            }
        }
        if !(0.0..=1.0).contains(&train.min_lr_ratio) {
            return Err(invalid(
                "train.min_lr_ratio",
                format!("must be in [0, 1], got {}", train.min_lr_ratio),
            ));
        }
        if train.conversion_weight + train.plan_weight == 0.0 {
            return Err(invalid(
                "train",
                "conversion_weight and plan_weight are both 0: nothing to learn".into(),
            ));
        }
        let policy = &self.policy;
        if !(policy.contact_cost >= 0.0 && policy.contact_cost.is_finite()) {
            return Err(invalid(
                "policy.contact_cost",
                format!("must be a finite number >= 0, got {}", policy.contact_cost),
            ));
        }
        if !(0.0..1.0).contains(&policy.holdout) {
            return Err(invalid(
                "policy.holdout",
                format!("must be in [0, 1), got {}", policy.holdout),
            ));
        }
        for (product, &weight) in &policy.weights {
            if !self.products.contains_key(product) {
                return Err(invalid(
                    &format!("policy.weights.{product}"),
                    "not a product in [products]".into(),
                ));
            }
            if !(weight >= 0.0 && weight.is_finite()) {
                return Err(invalid(
                    &format!("policy.weights.{product}"),
                    format!("must be >= 0, got {weight}"),
                ));
            }
        }
        for (product, &cap) in &policy.caps {
            if !self.products.contains_key(product) {
                return Err(invalid(
                    &format!("policy.caps.{product}"),
                    "not a product in [products]".into(),
                ));
            }
            if !(cap > 0.0 && cap <= 1.0) {
                return Err(invalid(
                    &format!("policy.caps.{product}"),
                    format!("must be in (0, 1], got {cap}"),
                ));
            }
        }
        if let Some(budget) = policy.contact_budget
            && !(budget > 0.0 && budget <= 1.0)
        {
            return Err(invalid(
                "policy.contact_budget",
                format!("must be in (0, 1], got {budget}"),
            ));
        }
        for (i, rule) in policy.exclude.iter().enumerate() {
            if let Some(unknown) = rule
                .products
                .iter()
                .find(|p| !self.products.contains_key(*p))
            {
                return Err(invalid(
                    &format!("policy.exclude[{i}].products"),
                    format!("{unknown:?} is not a product in [products]"),
                ));
            }
            if rule.is_in.is_empty()
                && rule.not_in.is_empty()
                && !rule.equals_product
                && rule.below.is_none()
                && rule.above.is_none()
            {
                return Err(invalid(
                    &format!("policy.exclude[{i}]"),
                    "the rule matches nothing: give `in`, `not_in`, `below`, `above` or \
                     `equals_product = true`"
                        .into(),
                ));
            }
            for (field, bound) in [("below", rule.below), ("above", rule.above)] {
                if bound.is_some_and(|b| !b.is_finite()) {
                    return Err(invalid(
                        &format!("policy.exclude[{i}].{field}"),
                        "must be a finite number".into(),
                    ));
                }
            }
            if let Some(unknown) = rule
                .contexts
                .keys()
                .find(|c| !self.columns.context.contains(*c))
            {
                return Err(invalid(
                    &format!("policy.exclude[{i}].contexts"),
                    format!("{unknown:?} is not a context column (columns.context)"),
                ));
            }
        }
        if self.preprocess.min_count == 0 {
            return Err(invalid("preprocess.min_count", "must be at least 1".into()));
        }
        let fraction = self.data.valid_fraction;
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(invalid(
                "data.valid_fraction",
                format!("must be in (0, 1), got {fraction}"),
            ));
        }
        let max_invalid = self.data.max_invalid_fraction;
        if !(0.0..1.0).contains(&max_invalid) {
            return Err(invalid(
                "data.max_invalid_fraction",
                format!("must be in [0, 1), got {max_invalid}"),
            ));
        }
        for (i, spec) in self.train.devices.iter().enumerate() {
            spec.parse::<DeviceSpec>()
                .map_err(|reason| invalid(&format!("train.devices[{i}]"), reason))?;
        }
        if self.data.stream && (self.data.train.is_none() || self.data.valid.is_none()) {
            return Err(invalid(
                "data.stream",
                "streaming needs data.train (shards) and data.valid (held-out rows, read into memory)"
                    .into(),
            ));
        }
        if self.data.split == SplitRule::Time && self.data.valid.is_none() && columns.time.is_none()
        {
            return Err(invalid(
                "data.split",
                "\"time\" needs columns.time to name the exposure time column".into(),
            ));
        }
        Ok(())
    }
}

/// The relative data paths a config file names, keyed `section.key`.
fn relative_paths(table: &toml::Table) -> BTreeMap<String, PathBuf> {
    let mut paths = BTreeMap::new();
    if let Some(data) = table.get("data").and_then(toml::Value::as_table) {
        for key in ["train", "valid"] {
            if let Some(path) = data.get(key).and_then(toml::Value::as_str) {
                paths.insert(format!("data.{key}"), PathBuf::from(path));
            }
        }
    }
    paths
}

/// Sets `section.key=value` in a parsed config. The value is TOML (`0.01`,
/// `true`, `[64, 32]`, `"text"`); anything that does not parse as TOML is
/// taken as a string, so `--set data.train=logs/` works unquoted.
pub fn apply_override(table: &mut toml::Table, spec: &str) -> Result<(), ConfigError> {
    let fail = |reason: &str| ConfigError::Override {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| fail("expected section.key=value"))?;
    let path: Vec<&str> = key.trim().split('.').map(str::trim).collect();
    if path.iter().any(|part| part.is_empty()) {
        return Err(fail("the key has an empty part"));
    }
    let value = parse_value(raw.trim());
    let (last, parents) = path.split_last().expect("split yields at least one part");
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            fail(&format!(
                "{} is a value, not a section",
                path[..=depth].join(".")
            ))
        })?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let wrapped = format!("value = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut table) => table.remove("value").expect("the key was just parsed"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}
