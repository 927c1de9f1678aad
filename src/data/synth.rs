//! Synthetic exposure logs with a known ground truth.
//!
//! A streaming audio service shows upsell offers to its users. Each row of
//! the log is one exposure of a distinct user: the user's features, the offer
//! and its context (surface, message), the probability with which the logging
//! policy chose them, and what happened next. A second table holds the truth
//! the log was drawn from, so that models and policies can be scored against
//! it rather than against noisy outcomes.
//!
//! # The world
//!
//! - **Users.** Country (30 ISO codes, Zipf-like), a region within the country
//!   (about 5,000 in all, each with its own random effect), platform, age,
//!   acquisition channel, household size, devices, an edu-email signal, the
//!   current plan (mostly free), engagement (active days, heavy-tailed
//!   listening hours, skips, ads for free users), podcast share, audiobook
//!   hours (null for 15%: unknown, which the world treats as moderate
//!   interest), price sensitivity and the days since the last upsell (null
//!   for 20%: never shown one).
//! - **What each user wants.** A non-linear affinity per product: family for
//!   large households with many devices, duo for two-person households,
//!   student only with the edu signal at young ages, audiobooks for audiobook
//!   listeners, podcast_plus for a high podcast share, premium_individual for
//!   heavy free listeners who see many ads and skip a lot. A plan at or below
//!   the current plan almost never sells; price sensitivity hurts expensive
//!   products; countries carry a price shift and per-product tastes; regions
//!   carry a base effect and a family/duo tilt.
//! - **Conversion.** `P(convert | user, offer, surface, message)` is a
//!   sigmoid of a base rate, the country and region effects, engagement,
//!   tenure, channel, platform, fatigue from a recent upsell, an unobserved
//!   per-user effect, the surface and message effects (push and email work
//!   differently by age), the product affinity, and message-by-product
//!   interactions (a discount helps price-sensitive users with expensive
//!   products, social proof helps duo and family, a feature message helps
//!   the add-ons).
//! - **Plan choice.** A buyer takes the offered product with probability
//!   [`OFFER_STICKINESS`]; otherwise the plan is drawn from the softmax of the
//!   user's own affinities.
//! - **Logging policy.** A softmax over a noisy, imperfect heuristic score
//!   per product, mixed with a uniform floor ([`LOGGING_EPSILON`]) so every
//!   product has a probability of at least `LOGGING_EPSILON / 6`; surface and
//!   message are drawn independently from [`SURFACES`] and [`MESSAGES`].
//!
//! # Determinism
//!
//! Row `i` is drawn from its own ChaCha8 stream (`seed`, stream `i`), and the
//! world's parameters from a separate stream of the same seed, so a row never
//! depends on chunking, file splitting or threads. The exposure time spreads
//! the whole log over 28 days, so it alone also depends on the log's length:
//! [`generate_part`] takes that length, [`generate`] assumes the log ends
//! with the rows it generates.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use chacha20::ChaCha8Rng;
use polars::io::parquet::write::BatchedWriter;
use polars::prelude::{
    Column, DataFrame, Float64Chunked, Int32Chunked, Int64Chunked, IntoColumn, ParquetCompression,
    ParquetWriter, PolarsResult, TimeUnit,
};
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Gamma, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::config::{ColumnsConfig, Config, EligibilityRule, SplitRule};
use crate::error::DataError;
use crate::{Error, Result};

/// Every product that can be offered or bought, with its value (monthly
/// price).
pub const PRODUCTS: [(&str, f64); 6] = [
    ("premium_individual", 11.99),
    ("duo", 16.99),
    ("family", 19.99),
    ("student", 5.99),
    ("audiobooks", 9.99),
    ("podcast_plus", 4.99),
];

/// The surfaces an offer is shown on, with the logging policy's probability.
pub const SURFACES: [(&str, f64); 4] = [
    ("home_banner", 0.40),
    ("in_app_message", 0.30),
    ("push", 0.15),
    ("email", 0.15),
];

/// The messages an offer is shown with, with the logging policy's
/// probability.
pub const MESSAGES: [(&str, f64); 3] = [
    ("discount", 0.40),
    ("feature", 0.35),
    ("social_proof", 0.25),
];

/// Countries, most frequent first (Zipf-like frequencies).
pub const COUNTRIES: [&str; 30] = [
    "US", "BR", "GB", "DE", "MX", "FR", "IN", "ID", "JP", "ES", "CA", "IT", "AU", "PH", "NL", "PL",
    "SE", "TR", "AR", "CO", "CL", "ZA", "KR", "NG", "EG", "PT", "BE", "CH", "NO", "IE",
];

/// Platforms with their frequencies.
pub const PLATFORMS: [(&str, f64); 5] = [
    ("ios", 0.30),
    ("android", 0.42),
    ("web", 0.10),
    ("desktop", 0.10),
    ("tv", 0.08),
];

/// The plans a user can be on before the exposure.
pub const CURRENT_PLANS: [&str; 5] = ["free", "premium_individual", "duo", "family", "student"];

/// Age buckets with their frequencies.
pub const AGE_BUCKETS: [(&str, f64); 6] = [
    ("13-17", 0.08),
    ("18-24", 0.26),
    ("25-34", 0.28),
    ("35-44", 0.18),
    ("45-54", 0.11),
    ("55+", 0.09),
];

/// Acquisition channels with their frequencies.
pub const ACQUISITION_CHANNELS: [(&str, f64); 5] = [
    ("organic", 0.45),
    ("paid_social", 0.20),
    ("referral", 0.12),
    ("partner", 0.10),
    ("app_store", 0.13),
];

/// Numeric feature columns of the exposure log.
pub const NUMERIC_COLUMNS: [&str; 12] = [
    "tenure_months",
    "listening_hours_7d",
    "active_days_28d",
    "skips_per_hour",
    "ad_impressions_7d",
    "podcast_share",
    "audiobook_hours_30d",
    "devices",
    "household_size",
    "student_signal",
    "price_sensitivity",
    "days_since_last_upsell",
];

/// Categorical feature columns of the exposure log.
pub const CATEGORICAL_COLUMNS: [&str; 5] = [
    "country",
    "platform",
    "current_plan",
    "age_bucket",
    "acquisition_channel",
];

/// Numeric columns with heavy tails, log-transformed by the config.
pub const LOG1P_COLUMNS: [&str; 5] = [
    "tenure_months",
    "listening_hours_7d",
    "ad_impressions_7d",
    "audiobook_hours_30d",
    "days_since_last_upsell",
];

/// The hashed region column and its number of buckets in [`config`].
pub const REGION_BUCKETS: u32 = 1024;

/// The first exposure time: 2026-01-05T00:00:00Z, in milliseconds.
pub const START_MS: i64 = 1_767_571_200_000;
/// The log covers this many milliseconds (28 days).
pub const SPAN_MS: i64 = 28 * 86_400_000;

/// The weight of the uniform floor in the logging policy's offer
/// distribution: every product has a probability of at least
/// `LOGGING_EPSILON / 6`.
pub const LOGGING_EPSILON: f64 = 0.06;

/// The probability that a buyer takes the offered product rather than one
/// drawn from their own affinities.
pub const OFFER_STICKINESS: f64 = 0.7;

/// What makes a world hard to decide in. The default world is `default`;
/// [`WorldParams::preset`] names others, and `upsell synth --world NAME
/// --world-set key=value` changes any field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldParams {
    /// Scale of the user-by-product affinities around a common level: how
    /// much the best product differs between users. Default 1.
    pub interaction: f64,
    /// Standard deviation of an unobserved per-user effect on the
    /// conversion log-odds: what no model of the features can know.
    /// Default 0.35.
    pub hidden_sd: f64,
    /// Probability that a buyer takes the offered product rather than one
    /// drawn from their own affinities. Default 0.7.
    pub stickiness: f64,
    /// Weight of price sensitivity against a product's price, in log-odds
    /// at the dearest price. Default 2.2.
    pub price_weight: f64,
    /// Standard deviation of each region's effect on conversion (its
    /// family/duo tilt is 8/7 of it): how much the high-cardinality id
    /// carries. Default 0.35.
    pub region_sd: f64,
    /// Log-odds taken from `duo` and `audiobooks`, in what users want and in
    /// how often the logging policy offers them: rare products. Default 0.
    pub rare_shift: f64,
    /// Log-odds of converting for an average user on the home banner with
    /// a feature message, before product affinities. Default -2.85.
    pub base_logit: f64,
}

impl Default for WorldParams {
    fn default() -> Self {
        WorldParams {
            interaction: 1.0,
            hidden_sd: 0.35,
            stickiness: OFFER_STICKINESS,
            price_weight: 2.2,
            region_sd: 0.35,
            rare_shift: 0.0,
            base_logit: -2.85,
        }
    }
}

/// A bad `--world-set` value.
fn setting(message: String) -> Error {
    Error::Argument {
        argument: "--world-set",
        message,
    }
}

/// World parameters as a TOML table, key by key.
fn params_table(params: &WorldParams) -> toml::Table {
    match toml::Value::try_from(params) {
        Ok(toml::Value::Table(table)) => table,
        _ => unreachable!("a struct of numbers serialises to a table"),
    }
}

/// The named worlds, each hard in one way (the last, `holdout`, in several
/// at once; it is kept out of all tuning).
pub const WORLDS: [&str; 8] = [
    "default",
    "weak_interactions",
    "noisy",
    "switchers",
    "rare",
    "regional",
    "price_sensitive",
    "holdout",
];

impl WorldParams {
    /// The parameters of a named world ([`WORLDS`]).
    pub fn preset(name: &str) -> Result<WorldParams> {
        let d = WorldParams::default();
        Ok(match name {
            "default" => d,
            // The best product hardly differs between users.
            "weak_interactions" => WorldParams {
                interaction: 0.4,
                ..d
            },
            // Much of who buys is invisible in the features.
            "noisy" => WorldParams {
                hidden_sd: 1.0,
                ..d
            },
            // Most buyers take a plan other than the one offered.
            "switchers" => WorldParams {
                stickiness: 0.3,
                ..d
            },
            // Two products are rarely wanted and rarely logged.
            "rare" => WorldParams {
                rare_shift: 1.5,
                ..d
            },
            // Regions (a hashed id of ~5,000 values) carry much of the signal.
            "regional" => WorldParams {
                region_sd: 0.9,
                ..d
            },
            // Price decides: cheap products win for most users.
            "price_sensitive" => WorldParams {
                price_weight: 4.0,
                ..d
            },
            "holdout" => WorldParams {
                interaction: 1.3,
                hidden_sd: 0.6,
                stickiness: 0.5,
                price_weight: 3.0,
                region_sd: 0.6,
                rare_shift: 0.8,
                base_logit: -3.1,
            },
            _ => {
                return Err(Error::Argument {
                    argument: "--world",
                    message: format!(
                        "unknown world {name:?}; the worlds are {}",
                        WORLDS.join(", ")
                    ),
                });
            }
        })
    }

    /// Applies `key=value` overrides (TOML values) to these parameters.
    pub fn with_overrides(self, overrides: &[String]) -> Result<WorldParams> {
        let mut table = params_table(&self);
        for o in overrides {
            let (key, value) = o
                .split_once('=')
                .ok_or_else(|| setting(format!("{o:?} is not key=value")))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .ok_or_else(|| setting(format!("{o:?}: not a number")))?;
            if !table.contains_key(key.trim()) {
                return Err(setting(format!(
                    "unknown setting {:?}; the settings are {}",
                    key.trim(),
                    table.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            table.insert(key.trim().to_string(), value);
        }
        let params: WorldParams = toml::Value::Table(table)
            .try_into()
            .map_err(|e| setting(e.to_string()))?;
        params.check()?;
        Ok(params)
    }

    pub(crate) fn check(&self) -> Result<()> {
        let finite = [
            self.interaction,
            self.hidden_sd,
            self.stickiness,
            self.price_weight,
            self.region_sd,
            self.rare_shift,
            self.base_logit,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !finite
            || self.hidden_sd < 0.0
            || self.region_sd < 0.0
            || !(0.0..=1.0).contains(&self.stickiness)
        {
            return Err(setting(format!(
                "out of range (finite numbers; hidden_sd and region_sd >= 0; stickiness in \
                 [0, 1]): {self:?}"
            )));
        }
        Ok(())
    }
}

/// Default rows per Parquet file.
pub const DEFAULT_ROWS_PER_FILE: u64 = 1_000_000;
/// Default rows per generated chunk and Parquet row group.
pub const DEFAULT_CHUNK_ROWS: usize = 65_536;

/// What [`write()`] generates and where.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    /// The number of exposures.
    pub rows: u64,
    /// The seed of the world and of every row.
    pub seed: u64,
    /// The directory to create; it must not exist or be empty.
    pub out_dir: PathBuf,
    /// Rows per Parquet file. Default [`DEFAULT_ROWS_PER_FILE`].
    pub rows_per_file: u64,
    /// Rows per generated chunk and Parquet row group. Default
    /// [`DEFAULT_CHUNK_ROWS`].
    pub chunk_rows: usize,
    /// The world's name (for the record) and parameters. Default
    /// `default`.
    pub world: (String, WorldParams),
    /// Write the truth of the first this many files only (`None`: every
    /// file). The truth is about ten times the size of the exposures, so a
    /// large training log needs it only for the files that are scored.
    pub truth_files: Option<usize>,
}

impl SynthOptions {
    /// Options with the default file and chunk sizes.
    pub fn new(rows: u64, seed: u64, out_dir: impl Into<PathBuf>) -> Self {
        SynthOptions {
            rows,
            seed,
            out_dir: out_dir.into(),
            rows_per_file: DEFAULT_ROWS_PER_FILE,
            chunk_rows: DEFAULT_CHUNK_ROWS,
            world: ("default".into(), WorldParams::default()),
            truth_files: None,
        }
    }
}

/// What [`write()`] did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SynthSummary {
    /// Exposures written.
    pub rows: u64,
    /// Parquet files per table (exposures and truth have as many each).
    pub files: usize,
    /// Wall-clock seconds, everything included.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_sec: f64,
    /// The fraction of exposures that converted.
    pub conversion_rate: f64,
}

/// Generates rows `[start, start + rows)` of the log with this seed, as
/// `(exposures, truth)` frames in memory. The log is taken to end with these
/// rows: its exposure times run over 28 days up to row `start + rows`. Every
/// other column depends only on the seed and the row index.
pub fn generate(seed: u64, start: u64, rows: usize) -> Result<(DataFrame, DataFrame)> {
    let total = start
        .checked_add(rows as u64)
        .ok_or_else(|| Error::Argument {
            argument: "--rows",
            message: format!("{start}+{rows} overflows"),
        })?;
    generate_part(seed, total, start, rows)
}

/// Generates rows `[start, start + rows)` of a log of `total` rows with this
/// seed, as `(exposures, truth)` frames in memory. The result depends only on
/// `(seed, total, row index)`: concatenating parts gives the whole log.
pub fn generate_part(
    seed: u64,
    total: u64,
    start: u64,
    rows: usize,
) -> Result<(DataFrame, DataFrame)> {
    generate_in(WorldParams::default(), seed, total, start, rows)
}

/// [`generate_part`] in a world with these parameters.
pub fn generate_in(
    params: WorldParams,
    seed: u64,
    total: u64,
    start: u64,
    rows: usize,
) -> Result<(DataFrame, DataFrame)> {
    check_range(total, start, rows)?;
    params.check()?;
    let world = World::new(seed, params);
    world
        .chunk(total, start, rows)
        .frames(&world)
        .map_err(|source| {
            Error::from(DataError::Polars {
                path: PathBuf::from("<synthetic>"),
                source,
            })
        })
}

fn check_range(total: u64, start: u64, rows: usize) -> Result<()> {
    match start.checked_add(rows as u64) {
        Some(end) if end <= total && total < u64::MAX => Ok(()),
        _ => Err(Error::Argument {
            argument: "--rows",
            message: format!("rows {start}..{start}+{rows} lie outside a log of {total} rows"),
        }),
    }
}

/// The world behind every log of one seed, for scoring policies against the
/// truth rather than against noisy outcomes.
pub struct Oracle {
    world: World,
}

impl Oracle {
    /// The default world of `seed`.
    pub fn new(seed: u64) -> Oracle {
        Oracle::of(seed, WorldParams::default())
    }

    /// The world of `seed` with these parameters.
    pub fn of(seed: u64, params: WorldParams) -> Oracle {
        Oracle {
            world: World::new(seed, params),
        }
    }

    /// The true P(convert) of the user of row `index` (in any log of this
    /// seed: users depend on the row index only) for each product of
    /// [`PRODUCTS`], offered on `surface` with `message` (indices into
    /// [`SURFACES`] and [`MESSAGES`]).
    ///
    /// # Panics
    ///
    /// If `surface` or `message` is out of range.
    pub fn p_convert(&self, index: u64, surface: usize, message: usize) -> [f64; NP] {
        assert!(surface < SURFACES.len() && message < MESSAGES.len());
        let mut rng = ChaCha8Rng::from_seed(self.world.key);
        rng.set_stream(index);
        let user = self.world.user(&mut rng);
        let preference = self.world.preference(&user);
        self.world.p_convert(&user, &preference, surface, message)
    }

    /// The true expected value of offering each product to the user of row
    /// `index` on `surface` with `message`: P(convert) times the expected
    /// price of the plan a buyer takes (the offer with probability
    /// [`OFFER_STICKINESS`], else one drawn from the user's affinities).
    pub fn expected_value(&self, index: u64, surface: usize, message: usize) -> [f64; NP] {
        let mut rng = ChaCha8Rng::from_seed(self.world.key);
        rng.set_stream(index);
        let user = self.world.user(&mut rng);
        let preference = self.world.preference(&user);
        let p = self.world.p_convert(&user, &preference, surface, message);
        let worth = self.world.value_if_converted(&preference);
        std::array::from_fn(|k| p[k] * worth[k])
    }
}

/// The config that trains on a log written by [`write()`]: every column with
/// its role, the products with their values, `data.train = "exposures"`
/// (relative to the config file), a random split, `log1p` on the
/// heavy-tailed columns and `region_id` hashed into [`REGION_BUCKETS`]
/// buckets.
pub fn config() -> Config {
    // Starting from parsed TOML fills every other field with its default.
    let mut config: Config = toml::from_str("[columns]\nconverted = \"converted\"\n")
        .expect("the minimal synthetic config parses");
    let strings = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    config.data.train = Some(PathBuf::from("exposures"));
    config.data.split = SplitRule::Random;
    config.columns = ColumnsConfig {
        numeric: strings(&NUMERIC_COLUMNS),
        categorical: strings(&CATEGORICAL_COLUMNS),
        hashed: BTreeMap::from([("region_id".to_string(), REGION_BUCKETS)]),
        offer: Some("offer".into()),
        context: strings(&["surface", "message"]),
        converted: "converted".into(),
        plan: Some("plan".into()),
        propensity: Some("propensity".into()),
        value: Some("value".into()),
        time: Some("exposure_time".into()),
        id: Some("user_id".into()),
        ..ColumnsConfig::default()
    };
    config.products = PRODUCTS
        .iter()
        .map(|(name, value)| (name.to_string(), *value))
        .collect();
    config.preprocess.log1p = strings(&LOG1P_COLUMNS);
    // The world's business rules, which the truth's `eligible__<product>`
    // columns follow.
    config.policy.exclude = vec![
        EligibilityRule {
            column: "current_plan".into(),
            equals_product: true,
            ..EligibilityRule::default()
        },
        EligibilityRule {
            products: vec![PRODUCTS[STUDENT].0.into()],
            column: "age_bucket".into(),
            not_in: STUDENT_AGES
                .iter()
                .map(|&a| AGE_BUCKETS[a].0.into())
                .collect(),
            ..EligibilityRule::default()
        },
    ];
    config
}

/// The `upsell synth` command that writes a log with these options (the
/// chunk size changes only the Parquet row groups, so it is left out).
pub fn command(opts: &SynthOptions) -> String {
    let mut command = format!(
        "upsell synth --out {} --rows {} --seed {}",
        opts.out_dir.display(),
        opts.rows,
        opts.seed
    );
    if opts.rows_per_file != DEFAULT_ROWS_PER_FILE {
        command.push_str(&format!(" --rows-per-file {}", opts.rows_per_file));
    }
    if let Some(files) = opts.truth_files {
        command.push_str(&format!(" --truth-files {files}"));
    }
    let (name, params) = &opts.world;
    if name != "default" {
        command.push_str(&format!(" --world {name}"));
    }
    // Settings that differ from the named world's, so the command repeats it.
    let preset = WorldParams::preset(name).unwrap_or_default();
    let (mine, theirs) = (params_table(params), params_table(&preset));
    for (key, value) in &mine {
        if theirs.get(key) != Some(value) {
            command.push_str(&format!(" --world-set {key}={value}"));
        }
    }
    command
}

/// Writes the log to `opts.out_dir`: `exposures/part-00000.parquet`, ...,
/// `truth/part-00000.parquet`, ... (the same rows in the same order),
/// `config.toml`, `summary.json` and `README.md`. Rows are generated and
/// written chunk by chunk, so memory does not grow with the row count.
///
/// The directory appears whole or not at all: everything is written into a
/// hidden sibling and renamed at the end. An existing non-empty `out_dir` is
/// refused with [`Error::AlreadyExists`].
pub fn write(opts: &SynthOptions) -> Result<SynthSummary> {
    let started = Instant::now();
    if opts.rows == 0 {
        return Err(Error::Argument {
            argument: "--rows",
            message: "must be at least 1".into(),
        });
    }
    if opts.rows_per_file == 0 || opts.chunk_rows == 0 {
        return Err(Error::Argument {
            argument: "--rows-per-file",
            message: "rows per file and per chunk must be at least 1".into(),
        });
    }
    check_range(opts.rows, 0, 0)?;
    let out = opts.out_dir.as_path();
    refuse_non_empty(out)?;
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".synth-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o755));
    }
    let staging = builder
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let (files, conversions) = write_into(staging.path(), opts)?;

    refuse_non_empty(out)?;
    if out.is_dir() {
        fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
    }
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, out) {
        let _ = fs::remove_dir_all(&staged);
        return Err(Error::io(out, e));
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(SynthSummary {
        rows: opts.rows,
        files,
        seconds,
        rows_per_sec: opts.rows as f64 / seconds.max(1e-9),
        conversion_rate: conversions as f64 / opts.rows as f64,
    })
}

/// Fails when `path` exists and is anything but an empty directory.
fn refuse_non_empty(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(path).map_err(|e| Error::io(path, e))?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(Error::AlreadyExists {
                    path: path.to_path_buf(),
                }),
            }
        }
        Ok(_) => Err(Error::AlreadyExists {
            path: path.to_path_buf(),
        }),
    }
}

/// One chunk to generate: rows `[start, start + rows)` of file `file`.
#[derive(Debug, Clone, Copy)]
struct Task {
    file: usize,
    start: u64,
    rows: usize,
}

/// The open Parquet files of one part.
struct Part {
    exposures: (PathBuf, BatchedWriter<File>),
    /// Absent past `truth_files`.
    truth: Option<(PathBuf, BatchedWriter<File>)>,
}

/// Writes everything into `dir`; returns the number of files per table and
/// of conversions.
fn write_into(dir: &Path, opts: &SynthOptions) -> Result<(usize, u64)> {
    let exposures_dir = dir.join("exposures");
    let truth_dir = dir.join("truth");
    for d in [&exposures_dir, &truth_dir] {
        fs::create_dir(d).map_err(|e| Error::io(d, e))?;
    }

    let mut tasks = Vec::new();
    let mut file_start = 0u64;
    let mut file = 0usize;
    while file_start < opts.rows {
        let file_end = (file_start.saturating_add(opts.rows_per_file)).min(opts.rows);
        let mut start = file_start;
        while start < file_end {
            let rows = (file_end - start).min(opts.chunk_rows as u64) as usize;
            tasks.push(Task { file, start, rows });
            start += rows as u64;
        }
        file_start = file_end;
        file += 1;
    }
    let files = file;

    opts.world.1.check()?;
    let world = World::new(opts.seed, opts.world.1);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(tasks.len());
    let total = opts.rows;
    let conversions = std::thread::scope(|scope| -> Result<u64> {
        let mut receivers = Vec::with_capacity(workers);
        for worker in 0..workers {
            // One chunk in flight per worker bounds the memory.
            let (sender, receiver) = mpsc::sync_channel(1);
            receivers.push(receiver);
            let (world, tasks) = (&world, &tasks);
            scope.spawn(move || {
                for task in tasks.iter().skip(worker).step_by(workers) {
                    let chunk = world.chunk(total, task.start, task.rows);
                    let conversions = chunk.conversions;
                    let frames = chunk.frames(world).map(|f| (f, conversions));
                    if sender.send(frames).is_err() {
                        break;
                    }
                }
            });
        }

        let mut conversions = 0u64;
        let mut part: Option<(usize, Part)> = None;
        for (i, task) in tasks.iter().enumerate() {
            let received = receivers[i % workers]
                .recv()
                .expect("a worker sends one result per task");
            let ((exposures, truth), converted) = received.map_err(|source| DataError::Polars {
                path: exposures_dir.clone(),
                source,
            })?;
            conversions += converted;
            if part.as_ref().map(|(f, _)| *f) != Some(task.file) {
                if let Some((_, done)) = part.take() {
                    finish_part(done)?;
                }
                let name = format!("part-{:05}.parquet", task.file);
                part = Some((
                    task.file,
                    Part {
                        exposures: open_parquet(&exposures_dir.join(&name), &exposures)?,
                        truth: match opts.truth_files {
                            Some(files) if task.file >= files => None,
                            _ => Some(open_parquet(&truth_dir.join(&name), &truth)?),
                        },
                    },
                ));
            }
            let (_, open) = part.as_mut().expect("a part was just opened");
            let truth = open.truth.as_mut().map(|t| (t, &truth));
            for ((path, writer), df) in
                std::iter::once((&mut open.exposures, &exposures)).chain(truth)
            {
                writer
                    .write_batch(df)
                    .map_err(|source| polars_error(path, source))?;
            }
        }
        if let Some((_, done)) = part.take() {
            finish_part(done)?;
        }
        Ok(conversions)
    })?;

    let config_path = dir.join("config.toml");
    let header = format!(
        "# A synthetic upsell exposure log: {rows} rows, seed {seed}, with its ground truth in truth/.\n\
         # Generated by: {command}\n\
         # Train on it:  upsell train --config {config}\n\n",
        rows = opts.rows,
        seed = opts.seed,
        command = command(opts),
        config = opts.out_dir.join("config.toml").display(),
    );
    let text = format!("{header}{}", config().to_toml());
    fs::write(&config_path, text).map_err(|e| Error::io(&config_path, e))?;

    let summary_path = dir.join("summary.json");
    let summary = serde_json::json!({
        "rows": opts.rows,
        "seed": opts.seed,
        "files": files,
        "rows_per_file": opts.rows_per_file,
        "chunk_rows": opts.chunk_rows,
        "conversions": conversions,
        "conversion_rate": conversions as f64 / opts.rows as f64,
        "products": PRODUCTS.iter().map(|(n, v)| (n.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "world": opts.world.0,
        "world_params": opts.world.1,
        "command": command(opts),
    });
    let text = serde_json::to_string_pretty(&summary).expect("JSON values serialise") + "\n";
    fs::write(&summary_path, text).map_err(|e| Error::io(&summary_path, e))?;

    let readme_path = dir.join("README.md");
    fs::write(&readme_path, readme(opts, files)).map_err(|e| Error::io(&readme_path, e))?;
    Ok((files, conversions))
}

fn polars_error(path: &Path, source: polars::prelude::PolarsError) -> Error {
    Error::from(DataError::Polars {
        path: path.to_path_buf(),
        source,
    })
}

fn open_parquet(path: &Path, like: &DataFrame) -> Result<(PathBuf, BatchedWriter<File>)> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let writer = ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .batched(like.schema())
        .map_err(|source| polars_error(path, source))?;
    Ok((path.to_path_buf(), writer))
}

fn finish_part(part: Part) -> Result<()> {
    for (path, writer) in std::iter::once(part.exposures).chain(part.truth) {
        writer
            .finish()
            .map_err(|source| polars_error(&path, source))?;
    }
    Ok(())
}

fn readme(opts: &SynthOptions, files: usize) -> String {
    let products = PRODUCTS
        .iter()
        .map(|(name, value)| format!("`{name}` ({value})"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "# Synthetic upsell exposure log\n\n\
         {rows} exposures (seed {seed}) in {files} file(s) per table, written by\n\
         `{command}`.\n\n\
         Train on it with `upsell train --config {config}`.\n\n\
         - `exposures/`: one row per exposure of a distinct user: features, the offer, its\n  \
           context (`surface`, `message`), `propensity` (the logging policy's probability of\n  \
           the logged offer, surface and message), `converted`, the `plan` bought and its `value`.\n\
         - `truth/`: the same rows in the same order{truth_scope} (join on `user_id`), in the truth format of\n  \
           upsell's README (\"Ground truth\"): for the logged context, `p_convert__<product>`,\n  \
           `bayes_p_convert__<product>` (the best any model of the observed features can know),\n  \
           `p_plan__<product>` (plan bought given a conversion under the logged offer) and\n  \
           `logging_p__<product>`; `eligible__<product>` (1 when the business rules allow the\n  \
           offer); and for every product in every context `p_convert__<product>__<surface>__<message>`,\n  \
           `value__...` (true expected value of the offer) and `bayes_value__...`, with\n  \
           `value__none` and `bayes_value__none` for no offer.\n\
         - `config.toml`: the column roles and product values ({products}).\n\
         - `summary.json`: the row count, seed and conversion rate.\n",
        rows = opts.rows,
        seed = opts.seed,
        command = command(opts),
        config = opts.out_dir.join("config.toml").display(),
        truth_scope = match opts.truth_files {
            Some(n) => format!(" of the first {n} file(s) only"),
            None => String::new(),
        },
    )
}

// ---------------------------------------------------------------------------
// The world.

const NP: usize = PRODUCTS.len();

const PREMIUM_INDIVIDUAL: usize = 0;
const DUO: usize = 1;
const FAMILY: usize = 2;
const STUDENT: usize = 3;
const AUDIOBOOKS: usize = 4;
const PODCAST_PLUS: usize = 5;

/// The tier of each product; 0 for add-ons, which any user may buy.
const PRODUCT_RANK: [u8; NP] = [2, 3, 4, 1, 0, 0];
/// The tier of each current plan, on the same scale.
const CURRENT_RANK: [u8; 5] = [0, 2, 3, 4, 1];
const FREE: usize = 0;
const CURRENT_STUDENT: usize = 4;
const TV: usize = 4;

const DISCOUNT: usize = 0;
const PUSH: usize = 2;
const EMAIL: usize = 3;

const SURFACE_EFFECT: [f64; 4] = [0.0, 0.3, -0.25, -0.55];
const MESSAGE_EFFECT: [f64; 3] = [0.15, 0.0, -0.05];
/// Message-by-product interactions (rows: messages, columns: products).
const MESSAGE_PRODUCT: [[f64; NP]; 3] = [
    [0.1, 0.2, 0.3, -0.3, 0.0, -0.2],
    [0.0, -0.1, -0.1, 0.0, 0.45, 0.4],
    [0.0, 0.45, 0.4, 0.2, -0.2, -0.1],
];
const PUSH_BY_AGE: [f64; 6] = [0.3, 0.2, 0.0, 0.0, -0.2, -0.3];
const EMAIL_BY_AGE: [f64; 6] = [-0.4, -0.2, 0.0, 0.1, 0.2, 0.3];
const PLATFORM_EFFECT: [f64; 5] = [0.15, 0.0, -0.1, 0.05, -0.3];
const CHANNEL_EFFECT: [f64; 5] = [0.0, -0.2, 0.25, 0.1, 0.0];
const STUDENT_BY_AGE: [f64; 6] = [0.35, 0.40, 0.08, 0.02, 0.01, 0.005];
/// Household sizes 1..=6 by age bucket.
const HOUSEHOLD_BY_AGE: [[f64; 6]; 6] = [
    [0.03, 0.07, 0.30, 0.33, 0.18, 0.09],
    [0.35, 0.30, 0.15, 0.12, 0.06, 0.02],
    [0.30, 0.36, 0.14, 0.12, 0.05, 0.03],
    [0.15, 0.25, 0.20, 0.25, 0.10, 0.05],
    [0.15, 0.30, 0.20, 0.22, 0.09, 0.04],
    [0.30, 0.50, 0.09, 0.06, 0.03, 0.02],
];
/// The affinity level that `WorldParams::interaction` scales tastes around.
const TASTE_LEVEL: f64 = -2.0;
/// The products that `WorldParams::rare_shift` makes rare.
const RARE: [usize; 2] = [DUO, AUDIOBOOKS];
/// Audiobook hours the world assumes when they are unknown (null).
const UNKNOWN_AUDIOBOOK_HOURS: f64 = 3.0;
/// Ages (indices into [`AGE_BUCKETS`]) that may be offered `student`.
const STUDENT_AGES: [usize; 2] = [0, 1];
/// 10-point Gauss-Hermite nodes and weights (physicists' form, positive
/// half): `E[f(h)]` for `h ~ N(0, s^2)` is `sum w_i f(sqrt(2) s x_i) /
/// sqrt(pi)` over both signs, exact to about 1e-10 for the smooth sigmoid.
const HERMITE: [(f64, f64); 5] = [
    (0.342_901_327_223_705, 0.610_862_633_735_325_8),
    (1.036_610_829_789_514, 0.240_138_611_082_314_7),
    (1.756_683_649_299_882, 0.033_874_394_455_481_06),
    (2.532_731_674_232_79, 0.001_343_645_746_781_233),
    (3.436_159_118_837_738, 7.640_432_855_232_62e-6),
];
/// Context combinations, surface outer and message inner (the order of the
/// truth's per-context columns).
const CONTEXTS: usize = SURFACES.len() * MESSAGES.len();

/// One user's features (and the hidden traits behind them).
#[derive(Debug, Clone)]
struct User {
    country: usize,
    region: usize,
    platform: usize,
    age: usize,
    channel: usize,
    current: usize,
    tenure_months: f64,
    listening_hours: f64,
    active_days: i32,
    skips_per_hour: f64,
    ad_impressions: i32,
    podcast_share: f64,
    audiobook_hours: Option<f64>,
    devices: i32,
    household: i32,
    student: bool,
    price_sensitivity: f64,
    days_since_upsell: Option<f64>,
    engagement: f64,
    hidden: f64,
}

/// One exposure with its truth.
#[derive(Debug, Clone)]
struct Row {
    user: User,
    time_ms: i64,
    offer: usize,
    surface: usize,
    message: usize,
    plan: Option<usize>,
    propensity: f64,
    p_convert: [f64; NP],
    p_plan: [f64; NP],
    logging: [f64; NP],
    decisions: Decisions,
}

/// The truth about every decision for one user: what each offer in each
/// context is worth, and what the best policy from the observed features
/// believes it is worth.
#[derive(Debug, Clone)]
struct Decisions {
    /// P(convert) given the observed features alone, in the logged context.
    bayes_p_convert: [f64; NP],
    /// Whether the business rules allow offering each product.
    eligible: [bool; NP],
    /// Per context (surface outer, message inner): true P(convert).
    p_convert: [[f64; NP]; CONTEXTS],
    /// Per context: the true expected value of the offer.
    value: [[f64; NP]; CONTEXTS],
    /// Per context: the expected value given the observed features alone.
    bayes_value: [[f64; NP]; CONTEXTS],
}

/// The parameters drawn once from the seed, and the row generator.
struct World {
    params: WorldParams,
    /// The ChaCha key every row's stream starts from.
    key: [u8; 32],
    country_cum: Vec<f64>,
    country_effect: Vec<f64>,
    country_price: Vec<f64>,
    country_product: Vec<[f64; NP]>,
    /// Regions of country `c` are `region_start[c]..region_start[c + 1]`.
    region_start: Vec<usize>,
    /// Cumulative frequencies within each country.
    region_cum: Vec<f64>,
    region_names: Vec<String>,
    region_effect: Vec<f64>,
    region_family: Vec<f64>,
    platform_cum: Vec<f64>,
    age_cum: Vec<f64>,
    channel_cum: Vec<f64>,
    surface_cum: Vec<f64>,
    message_cum: Vec<f64>,
    household_cum: Vec<Vec<f64>>,
    tenure: Gamma<f64>,
    gamma2: Gamma<f64>,
    podcast_casual: Beta<f64>,
    podcast_fan: Beta<f64>,
}

fn normal(rng: &mut impl Rng) -> f64 {
    StandardNormal.sample(rng)
}

fn exponential(rng: &mut impl Rng) -> f64 {
    -(1.0 - rng.random::<f64>()).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax(x: &[f64; NP]) -> [f64; NP] {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut out = x.map(|v| (v - max).exp());
    let sum: f64 = out.iter().sum();
    for v in &mut out {
        *v /= sum;
    }
    out
}

fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let weights: Vec<f64> = weights.into_iter().collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let mut cum: Vec<f64> = weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect();
    if let Some(last) = cum.last_mut() {
        *last = 1.0;
    }
    cum
}

/// The index whose cumulative bucket holds `u` in [0, 1).
fn pick(cum: &[f64], u: f64) -> usize {
    cum.partition_point(|&c| c <= u).min(cum.len() - 1)
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

impl World {
    fn new(seed: u64, params: WorldParams) -> World {
        let key = ChaCha8Rng::seed_from_u64(seed).get_seed();
        let mut rng = ChaCha8Rng::from_seed(key);
        // Rows use streams 0, 1, ...; the world uses the last one.
        rng.set_stream(u64::MAX);

        let countries = COUNTRIES.len();
        let country_weight: Vec<f64> = (0..countries)
            .map(|c| 1.0 / (c as f64 + 1.0).powf(1.1))
            .collect();
        let country_effect = (0..countries).map(|_| 0.3 * normal(&mut rng)).collect();
        let country_price = (0..countries).map(|_| 0.6 * normal(&mut rng)).collect();
        let country_product = (0..countries)
            .map(|_| std::array::from_fn(|_| 0.2 * normal(&mut rng)))
            .collect();

        let sqrt_total: f64 = country_weight.iter().map(|w| w.sqrt()).sum();
        let mut region_start = vec![0];
        let mut region_cum = Vec::new();
        let mut region_names = Vec::new();
        for (c, w) in country_weight.iter().enumerate() {
            let n = 40 + (4200.0 * w.sqrt() / sqrt_total).round() as usize;
            region_cum.extend(cumulative((0..n).map(|j| 1.0 / (j as f64 + 1.0).powf(0.9))));
            region_names.extend((0..n).map(|j| format!("{}-{:04}", COUNTRIES[c], j + 1)));
            region_start.push(region_start[c] + n);
        }
        let regions = region_names.len();
        let sd = params.region_sd;
        let region_effect = (0..regions).map(|_| sd * normal(&mut rng)).collect();
        let region_family = (0..regions)
            .map(|_| sd * 8.0 / 7.0 * normal(&mut rng))
            .collect();

        World {
            params,
            key,
            country_cum: cumulative(country_weight),
            country_effect,
            country_price,
            country_product,
            region_start,
            region_cum,
            region_names,
            region_effect,
            region_family,
            platform_cum: cumulative(PLATFORMS.iter().map(|p| p.1)),
            age_cum: cumulative(AGE_BUCKETS.iter().map(|p| p.1)),
            channel_cum: cumulative(ACQUISITION_CHANNELS.iter().map(|p| p.1)),
            surface_cum: cumulative(SURFACES.iter().map(|p| p.1)),
            message_cum: cumulative(MESSAGES.iter().map(|p| p.1)),
            household_cum: HOUSEHOLD_BY_AGE
                .iter()
                .map(|w| cumulative(w.iter().copied()))
                .collect(),
            tenure: Gamma::new(1.3, 1.0).expect("valid gamma"),
            gamma2: Gamma::new(2.0, 1.0).expect("valid gamma"),
            podcast_casual: Beta::new(1.1, 3.5).expect("valid beta"),
            podcast_fan: Beta::new(5.0, 2.0).expect("valid beta"),
        }
    }

    fn user(&self, rng: &mut ChaCha8Rng) -> User {
        let country = pick(&self.country_cum, rng.random());
        let (r0, r1) = (self.region_start[country], self.region_start[country + 1]);
        let region = r0 + pick(&self.region_cum[r0..r1], rng.random());
        let platform = pick(&self.platform_cum, rng.random());
        let age = pick(&self.age_cum, rng.random());
        let channel = pick(&self.channel_cum, rng.random());
        let student = rng.random::<f64>() < STUDENT_BY_AGE[age];
        let household = 1 + pick(&self.household_cum[age], rng.random()) as i32;
        let devices_mean =
            0.35 + 0.45 * (household - 1) as f64 + if platform == TV { 0.6 } else { 0.0 };
        let devices = (1.0 + (exponential(rng) * devices_mean).floor()).min(8.0) as i32;

        let (u, v) = (rng.random::<f64>(), rng.random::<f64>());
        let current = if student && age <= 1 && u < 0.18 {
            CURRENT_STUDENT
        } else {
            let duo = if household == 2 { 0.08 } else { 0.01 };
            let family = if household >= 3 { 0.08 } else { 0.005 };
            if v < 0.11 {
                1
            } else if v < 0.11 + duo {
                2
            } else if v < 0.11 + duo + family {
                3
            } else {
                FREE
            }
        };
        let paid = current != FREE;

        let engagement = normal(rng) + if paid { 0.35 } else { 0.0 };
        let tenure_scale = if paid { 22.0 } else { 11.0 };
        let tenure_months = round_to((self.tenure.sample(rng) * tenure_scale).min(180.0), 1);
        let active_days =
            (28.0 * sigmoid(0.9 + 1.4 * engagement + 0.5 * normal(rng))).round() as i32;
        let daily = (-0.35 + 0.55 * engagement + 0.75 * normal(rng)).exp();
        let listening_hours = round_to((active_days as f64 / 4.0 * daily).min(160.0), 2);
        let skip_scale = if paid { 1.6 } else { 3.2 };
        let skips_per_hour = round_to(self.gamma2.sample(rng) * skip_scale, 2);
        let ad_rate = 7.0 + 7.0 * rng.random::<f64>();
        let ad_impressions = if paid {
            0
        } else {
            (listening_hours * ad_rate).round() as i32
        };
        let fan = 0.07 + if age >= 3 { 0.05 } else { 0.0 };
        let podcast_share = if rng.random::<f64>() < fan {
            self.podcast_fan.sample(rng)
        } else {
            self.podcast_casual.sample(rng)
        };
        let podcast_share = round_to(podcast_share, 3);
        let reader = 0.09 + if age >= 3 { 0.05 } else { 0.0 };
        let (w, x) = (rng.random::<f64>(), rng.random::<f64>());
        let audiobook_true = if w < reader {
            self.gamma2.sample(rng) * 6.0
        } else if x < 0.6 {
            0.0
        } else {
            exponential(rng)
        };
        let audiobook_hours = (rng.random::<f64>() >= 0.15).then(|| round_to(audiobook_true, 1));
        let price_logit = self.country_price[country]
            + if age <= 1 { 0.6 } else { 0.0 }
            + if student { 0.5 } else { 0.0 }
            - if paid { 0.4 } else { 0.0 }
            + 0.9 * normal(rng);
        let price_sensitivity = round_to(sigmoid(price_logit), 3);
        let never = rng.random::<f64>() < 0.2;
        let days = (1.0 + (exponential(rng) * 24.0).floor()).min(365.0);
        let days_since_upsell = (!never).then_some(days);
        let hidden = self.params.hidden_sd * normal(rng);

        User {
            country,
            region,
            platform,
            age,
            channel,
            current,
            tenure_months,
            listening_hours,
            active_days,
            skips_per_hour,
            ad_impressions,
            podcast_share,
            audiobook_hours,
            devices,
            household,
            student,
            price_sensitivity,
            days_since_upsell,
            engagement,
            hidden,
        }
    }

    /// The product-specific part of a user's utility: what they like,
    /// whether they may buy it, and what its price costs them.
    fn preference(&self, u: &User) -> [f64; NP] {
        let heavy = sigmoid(2.0 * (u.listening_hours.ln_1p() - 2.3));
        let (hh, dv) = (u.household as f64, u.devices as f64);
        let big_home = sigmoid(1.8 * (hh - 2.5)) * sigmoid(1.3 * (dv - 2.5));
        let tilt = self.region_family[u.region];
        let mut a = [0.0; NP];
        a[PREMIUM_INDIVIDUAL] = -0.6
            + 1.8 * heavy
            + 0.6 * (u.skips_per_hour / 8.0).tanh()
            + 0.5 * (u.ad_impressions as f64 / 120.0).tanh()
            - 0.8 * big_home;
        a[DUO] =
            -2.3 + match u.household {
                1 => -0.6,
                2 => 2.7,
                _ => 0.3,
            } + 0.3 * (dv - 1.0).tanh()
                + if (2..=3).contains(&u.age) { 0.3 } else { 0.0 }
                + 0.5 * tilt;
        a[FAMILY] = -2.7 + 3.8 * big_home + if (3..=4).contains(&u.age) { 0.4 } else { 0.0 } + tilt;
        a[STUDENT] = if u.student {
            [1.1, 1.5, 0.2, -2.0, -2.0, -2.0][u.age]
        } else {
            -4.5
        };
        let audiobook_hours = u.audiobook_hours.unwrap_or(UNKNOWN_AUDIOBOOK_HOURS);
        a[AUDIOBOOKS] = -2.4 + 1.2 * audiobook_hours.ln_1p() + if u.age >= 3 { 0.3 } else { 0.0 };
        a[PODCAST_PLUS] = -2.3 + 4.5 * u.podcast_share.powf(1.5);
        for a in &mut a {
            *a = TASTE_LEVEL + self.params.interaction * (*a - TASTE_LEVEL);
        }
        for k in RARE {
            a[k] -= self.params.rare_shift;
        }

        let current = CURRENT_RANK[u.current];
        for (k, a) in a.iter_mut().enumerate() {
            let rank = PRODUCT_RANK[k];
            if rank == 0 {
                *a += if current > 0 { 0.4 } else { -0.2 };
            } else if rank <= current {
                *a -= 4.0;
            }
            *a -= self.params.price_weight * u.price_sensitivity * PRODUCTS[k].1 / 19.99;
            *a += self.country_product[u.country][k];
        }
        a
    }

    /// The true conversion probability of each product offered to `u` on
    /// `surface` with `message`.
    fn p_convert(
        &self,
        u: &User,
        preference: &[f64; NP],
        surface: usize,
        message: usize,
    ) -> [f64; NP] {
        self.logits(u, preference, surface, message).map(sigmoid)
    }

    /// The conversion probabilities given `u`'s observed features alone:
    /// the unobserved effect integrated out over its distribution.
    fn bayes_p_convert(
        &self,
        u: &User,
        preference: &[f64; NP],
        surface: usize,
        message: usize,
    ) -> [f64; NP] {
        let observed = self
            .logits(u, preference, surface, message)
            .map(|l| l - u.hidden);
        observed.map(|l| {
            HERMITE
                .iter()
                .map(|&(x, w)| {
                    let h = std::f64::consts::SQRT_2 * self.params.hidden_sd * x;
                    w * (sigmoid(l + h) + sigmoid(l - h))
                })
                .sum::<f64>()
                / std::f64::consts::PI.sqrt()
        })
    }

    /// The conversion log-odds of each product offered to `u` on `surface`
    /// with `message`.
    fn logits(
        &self,
        u: &User,
        preference: &[f64; NP],
        surface: usize,
        message: usize,
    ) -> [f64; NP] {
        let fatigue = match u.days_since_upsell {
            Some(days) => -1.2 * (-days / 8.0).exp(),
            None => 0.1,
        };
        let context = SURFACE_EFFECT[surface]
            + MESSAGE_EFFECT[message]
            + match surface {
                PUSH => PUSH_BY_AGE[u.age],
                EMAIL => EMAIL_BY_AGE[u.age],
                _ => 0.0,
            };
        let general = self.params.base_logit
            + self.country_effect[u.country]
            + self.region_effect[u.region]
            + 0.25 * u.engagement
            + 0.2 * (u.tenure_months / 24.0).tanh()
            + CHANNEL_EFFECT[u.channel]
            + PLATFORM_EFFECT[u.platform]
            + fatigue
            + u.hidden
            + context;
        let discount = if message == DISCOUNT {
            1.2 * u.price_sensitivity - 0.4
        } else {
            0.0
        };
        std::array::from_fn(|k| {
            general + preference[k] + MESSAGE_PRODUCT[message][k] + discount * PRODUCTS[k].1 / 19.99
        })
    }

    /// The expected price of what a converting user buys when offered each
    /// product: the offer with probability [`OFFER_STICKINESS`], else a plan
    /// drawn from the user's affinities.
    fn value_if_converted(&self, preference: &[f64; NP]) -> [f64; NP] {
        let affinity = softmax(preference);
        let drawn: f64 = (0..NP).map(|k| affinity[k] * PRODUCTS[k].1).sum();
        let s = self.params.stickiness;
        std::array::from_fn(|k| s * PRODUCTS[k].1 + (1.0 - s) * drawn)
    }

    /// The business rules of this world (those of [`config`]'s policy): no
    /// product the user already has, `student` only at student ages.
    fn eligible(u: &User) -> [bool; NP] {
        std::array::from_fn(|k| {
            PRODUCTS[k].0 != CURRENT_PLANS[u.current]
                && (k != STUDENT || STUDENT_AGES.contains(&u.age))
        })
    }

    /// Every decision's truth for `u`; `logged` is the row's own context.
    fn decisions(&self, u: &User, preference: &[f64; NP], logged: (usize, usize)) -> Decisions {
        let worth = self.value_if_converted(preference);
        let mut d = Decisions {
            bayes_p_convert: self.bayes_p_convert(u, preference, logged.0, logged.1),
            eligible: Self::eligible(u),
            p_convert: [[0.0; NP]; CONTEXTS],
            value: [[0.0; NP]; CONTEXTS],
            bayes_value: [[0.0; NP]; CONTEXTS],
        };
        for surface in 0..SURFACES.len() {
            for message in 0..MESSAGES.len() {
                let c = surface * MESSAGES.len() + message;
                let p = self.p_convert(u, preference, surface, message);
                let bayes = self.bayes_p_convert(u, preference, surface, message);
                d.p_convert[c] = p;
                d.value[c] = std::array::from_fn(|k| p[k] * worth[k]);
                d.bayes_value[c] = std::array::from_fn(|k| bayes[k] * worth[k]);
            }
        }
        d
    }

    /// The logging policy's offer distribution: a softmax over a noisy
    /// heuristic, mixed with a uniform floor.
    fn logging_policy(&self, u: &User, rng: &mut ChaCha8Rng) -> [f64; NP] {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let mut s = [0.0; NP];
        s[PREMIUM_INDIVIDUAL] =
            0.7 * flag(u.current == FREE) + 0.15 * u.listening_hours.ln_1p() - 0.2;
        s[DUO] = 0.9 * flag(u.household == 2) - 0.4;
        s[FAMILY] = 0.5 * flag(u.household >= 4) + 0.3 * flag(u.devices >= 3) - 0.4;
        s[STUDENT] = 1.3 * flag(u.student) - 0.9;
        s[AUDIOBOOKS] = 0.35 * u.audiobook_hours.unwrap_or(0.0).ln_1p() - 0.5;
        s[PODCAST_PLUS] = 1.5 * u.podcast_share - 0.4;
        for k in RARE {
            s[k] -= self.params.rare_shift;
        }
        let current = CURRENT_RANK[u.current];
        for (k, s) in s.iter_mut().enumerate() {
            let rank = PRODUCT_RANK[k];
            if rank != 0 && rank <= current {
                *s -= 1.5;
            }
            *s += 0.6 * normal(rng);
        }
        softmax(&s).map(|p| (1.0 - LOGGING_EPSILON) * p + LOGGING_EPSILON / NP as f64)
    }

    /// Row `index` of a log of `total` rows.
    fn row(&self, index: u64, total: u64) -> Row {
        let mut rng = ChaCha8Rng::from_seed(self.key);
        rng.set_stream(index);
        let user = self.user(&mut rng);

        let slot = |i: u64| (u128::from(i) * SPAN_MS as u128 / u128::from(total)) as i64;
        let (lo, hi) = (slot(index), slot(index + 1));
        let time_ms = START_MS + lo + ((hi - lo) as f64 * rng.random::<f64>()) as i64;

        let logging = self.logging_policy(&user, &mut rng);
        let offer = pick(&cumulative(logging), rng.random());
        let surface = pick(&self.surface_cum, rng.random());
        let message = pick(&self.message_cum, rng.random());
        let propensity = logging[offer] * SURFACES[surface].1 * MESSAGES[message].1;

        let preference = self.preference(&user);
        let p_convert = self.p_convert(&user, &preference, surface, message);
        let affinity = softmax(&preference);
        let stickiness = self.params.stickiness;
        let mut p_plan = affinity.map(|q| (1.0 - stickiness) * q);
        p_plan[offer] += stickiness;

        let (u, v) = (rng.random::<f64>(), rng.random::<f64>());
        let plan = (u < p_convert[offer]).then(|| pick(&cumulative(p_plan), v));
        let decisions = self.decisions(&user, &preference, (surface, message));
        Row {
            user,
            time_ms,
            offer,
            surface,
            message,
            plan,
            propensity,
            p_convert,
            p_plan,
            logging,
            decisions,
        }
    }

    fn chunk(&self, total: u64, start: u64, rows: usize) -> Chunk {
        let mut chunk = Chunk::with_capacity(rows);
        for index in start..start + rows as u64 {
            chunk.push(index, self.row(index, total));
        }
        chunk
    }
}

/// Generated rows, column by column.
#[derive(Default)]
struct Chunk {
    user_id: Vec<String>,
    time: Vec<i64>,
    tenure: Vec<f64>,
    hours: Vec<f64>,
    active_days: Vec<i32>,
    skips: Vec<f64>,
    ads: Vec<i32>,
    podcast_share: Vec<f64>,
    audiobook_hours: Vec<Option<f64>>,
    devices: Vec<i32>,
    household: Vec<i32>,
    student: Vec<f64>,
    price_sensitivity: Vec<f64>,
    days_since: Vec<Option<f64>>,
    country: Vec<&'static str>,
    platform: Vec<&'static str>,
    current_plan: Vec<&'static str>,
    age_bucket: Vec<&'static str>,
    channel: Vec<&'static str>,
    region: Vec<usize>,
    offer: Vec<&'static str>,
    surface: Vec<&'static str>,
    message: Vec<&'static str>,
    converted: Vec<i32>,
    plan: Vec<Option<&'static str>>,
    propensity: Vec<f64>,
    value: Vec<f64>,
    p_convert: [Vec<f64>; NP],
    p_plan: [Vec<f64>; NP],
    logging: [Vec<f64>; NP],
    bayes_p_convert: [Vec<f64>; NP],
    eligible: [Vec<f64>; NP],
    /// `[context][product]` columns of [`Decisions`].
    context_p_convert: [[Vec<f64>; NP]; CONTEXTS],
    context_value: [[Vec<f64>; NP]; CONTEXTS],
    context_bayes_value: [[Vec<f64>; NP]; CONTEXTS],
    conversions: u64,
}

impl Chunk {
    fn with_capacity(rows: usize) -> Chunk {
        let floats = || std::array::from_fn(|_| Vec::with_capacity(rows));
        Chunk {
            user_id: Vec::with_capacity(rows),
            time: Vec::with_capacity(rows),
            p_convert: floats(),
            p_plan: floats(),
            logging: floats(),
            bayes_p_convert: floats(),
            eligible: floats(),
            context_p_convert: std::array::from_fn(|_| floats()),
            context_value: std::array::from_fn(|_| floats()),
            context_bayes_value: std::array::from_fn(|_| floats()),
            ..Chunk::default()
        }
    }

    fn push(&mut self, index: u64, row: Row) {
        let u = &row.user;
        self.user_id.push(format!("u{index:010}"));
        self.time.push(row.time_ms);
        self.tenure.push(u.tenure_months);
        self.hours.push(u.listening_hours);
        self.active_days.push(u.active_days);
        self.skips.push(u.skips_per_hour);
        self.ads.push(u.ad_impressions);
        self.podcast_share.push(u.podcast_share);
        self.audiobook_hours.push(u.audiobook_hours);
        self.devices.push(u.devices);
        self.household.push(u.household);
        self.student.push(if u.student { 1.0 } else { 0.0 });
        self.price_sensitivity.push(u.price_sensitivity);
        self.days_since.push(u.days_since_upsell);
        self.country.push(COUNTRIES[u.country]);
        self.platform.push(PLATFORMS[u.platform].0);
        self.current_plan.push(CURRENT_PLANS[u.current]);
        self.age_bucket.push(AGE_BUCKETS[u.age].0);
        self.channel.push(ACQUISITION_CHANNELS[u.channel].0);
        self.region.push(u.region);
        self.offer.push(PRODUCTS[row.offer].0);
        self.surface.push(SURFACES[row.surface].0);
        self.message.push(MESSAGES[row.message].0);
        self.converted.push(i32::from(row.plan.is_some()));
        self.plan.push(row.plan.map(|p| PRODUCTS[p].0));
        self.propensity.push(row.propensity);
        self.value.push(row.plan.map_or(0.0, |p| PRODUCTS[p].1));
        for k in 0..NP {
            self.p_convert[k].push(row.p_convert[k]);
            self.p_plan[k].push(row.p_plan[k]);
            self.logging[k].push(row.logging[k]);
            let d = &row.decisions;
            self.bayes_p_convert[k].push(d.bayes_p_convert[k]);
            self.eligible[k].push(if d.eligible[k] { 1.0 } else { 0.0 });
            for c in 0..CONTEXTS {
                self.context_p_convert[c][k].push(d.p_convert[c][k]);
                self.context_value[c][k].push(d.value[c][k]);
                self.context_bayes_value[c][k].push(d.bayes_value[c][k]);
            }
        }
        self.conversions += u64::from(row.plan.is_some());
    }

    fn frames(self, world: &World) -> PolarsResult<(DataFrame, DataFrame)> {
        let height = self.user_id.len();
        let floats =
            |name: &str, v: Vec<f64>| Float64Chunked::from_vec(name.into(), v).into_column();
        let ints = |name: &str, v: Vec<i32>| Int32Chunked::from_vec(name.into(), v).into_column();
        let user_id = Column::new("user_id".into(), self.user_id);
        let regions: Vec<&str> = self
            .region
            .iter()
            .map(|&r| world.region_names[r].as_str())
            .collect();
        let exposures = DataFrame::new(
            height,
            vec![
                user_id.clone(),
                Int64Chunked::from_vec("exposure_time".into(), self.time)
                    .into_datetime(TimeUnit::Milliseconds, None)
                    .into_column(),
                floats("tenure_months", self.tenure),
                floats("listening_hours_7d", self.hours),
                ints("active_days_28d", self.active_days),
                floats("skips_per_hour", self.skips),
                ints("ad_impressions_7d", self.ads),
                floats("podcast_share", self.podcast_share),
                Column::new("audiobook_hours_30d".into(), self.audiobook_hours),
                ints("devices", self.devices),
                ints("household_size", self.household),
                floats("student_signal", self.student),
                floats("price_sensitivity", self.price_sensitivity),
                Column::new("days_since_last_upsell".into(), self.days_since),
                Column::new("country".into(), self.country),
                Column::new("platform".into(), self.platform),
                Column::new("current_plan".into(), self.current_plan),
                Column::new("age_bucket".into(), self.age_bucket),
                Column::new("acquisition_channel".into(), self.channel),
                Column::new("region_id".into(), regions),
                Column::new("offer".into(), self.offer),
                Column::new("surface".into(), self.surface),
                Column::new("message".into(), self.message),
                ints("converted", self.converted),
                Column::new("plan".into(), self.plan),
                floats("propensity", self.propensity),
                floats("value", self.value),
            ],
        )?;
        let mut truth = vec![user_id];
        for (prefix, table) in [
            ("p_convert", self.p_convert),
            ("p_plan", self.p_plan),
            ("logging_p", self.logging),
            ("bayes_p_convert", self.bayes_p_convert),
            ("eligible", self.eligible),
        ] {
            for (k, values) in table.into_iter().enumerate() {
                truth.push(floats(&format!("{prefix}__{}", PRODUCTS[k].0), values));
            }
        }
        for (prefix, tables) in [
            ("p_convert", self.context_p_convert),
            ("value", self.context_value),
            ("bayes_value", self.context_bayes_value),
        ] {
            for (c, table) in tables.into_iter().enumerate() {
                let (surface, message) = (c / MESSAGES.len(), c % MESSAGES.len());
                for (k, values) in table.into_iter().enumerate() {
                    let name = format!(
                        "{prefix}__{}__{}__{}",
                        PRODUCTS[k].0, SURFACES[surface].0, MESSAGES[message].0
                    );
                    truth.push(floats(&name, values));
                }
            }
        }
        // Nothing sells without an offer in this world (no organic buyers).
        for name in ["value__none", "bayes_value__none"] {
            truth.push(floats(name, vec![0.0; height]));
        }
        let truth = DataFrame::new(height, truth)?;
        Ok((exposures, truth))
    }
}
