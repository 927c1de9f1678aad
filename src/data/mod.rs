//! Tables in, features out: reading Parquet and CSV with polars, checking them
//! against the config, splitting, fitting the preprocessing and transforming
//! rows into dense batches, in memory or streamed; and the synthetic worlds
//! that `upsell synth` writes. Nothing here knows the model.

mod fit;
pub mod progress;
pub mod shard;
pub mod source;
mod split;
pub mod stream;
pub mod synth;
pub(crate) mod table;
mod transform;

pub use crate::error::DataError;
pub use fit::{Fitter, fit};
pub use split::split;
pub use table::{LoadReport, Table, check_schema, check_type, from_frame, load};
pub use transform::{Batch, check_range, features, targets, transform};

use crate::config::Config;

/// Training and validation rows, ready to fit and transform.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub train: Table,
    pub valid: Table,
}

impl Dataset {
    /// Loads `data.train` (and `data.valid`, or the split of `data.train`
    /// that `data.split` describes).
    pub fn load(config: &Config) -> Result<Dataset, crate::Error> {
        let Some(train_path) = config.data.train.as_deref() else {
            return Dataset::synthetic(config);
        };
        // Check the validation files' columns too before reading anything.
        if let Some(valid_path) = &config.data.valid {
            for file in source::resolve(valid_path)? {
                let schema = source::schema(&file)?;
                check_schema(&file, &schema, config)?;
            }
        }
        let train = load(train_path, config)?;
        let dataset = match &config.data.valid {
            Some(valid_path) => Dataset {
                train,
                valid: load(valid_path, config)?,
            },
            None => {
                let (train, valid) = split(train, config)?;
                Dataset { train, valid }
            }
        };
        Ok(dataset)
    }
}

/// The seed of the built-in synthetic data that `upsell train` uses when no
/// data is given: fixed, so every such run sees the same world and rows.
pub const BUILTIN_DATA_SEED: u64 = 2026;

impl Dataset {
    /// The built-in synthetic data: `train.synthetic_rows` rows of the world
    /// `upsell synth` simulates, generated in memory with
    /// [`BUILTIN_DATA_SEED`], then split like any other data. The config's
    /// columns must be those of `configs/default.toml`.
    pub fn synthetic(config: &Config) -> Result<Dataset, crate::Error> {
        let rows = usize::try_from(config.train.synthetic_rows).unwrap_or(usize::MAX);
        let (exposures, _truth) = synth::generate(BUILTIN_DATA_SEED, 0, rows)?;
        let source = std::path::Path::new("<built-in synthetic data>");
        let table = from_frame(source, exposures, config)?;
        let (train, valid) = match &config.data.valid {
            Some(valid_path) => (table, load(valid_path, config)?),
            None => split(table, config)?,
        };
        Ok(Dataset { train, valid })
    }
}

/// Training and validation batches with the preprocessing fitted on the
/// training rows: everything a training run needs from the data.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub preprocessor: crate::preprocess::Preprocessor,
    pub train: Batch,
    pub valid: Batch,
    pub report: PrepareReport,
}

/// Counts and timings of [`prepare`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrepareReport {
    /// What loading the training data read and dropped.
    pub train: LoadReport,
    /// The same for separate validation data; absent when the validation
    /// rows were split off the training data.
    pub valid: Option<LoadReport>,
    pub train_rows: usize,
    pub valid_rows: usize,
    /// Embedding table sizes of the categorical then hashed columns.
    pub embedding_sizes: Vec<usize>,
    pub context_sizes: Vec<usize>,
    pub load_seconds: f64,
    pub fit_seconds: f64,
    pub transform_seconds: f64,
    /// Rows loaded and transformed per second, fitting included.
    pub rows_per_second: f64,
}

/// Loads, splits, fits and transforms the data that `config` names.
pub fn prepare(config: &Config) -> Result<Prepared, crate::Error> {
    let start = std::time::Instant::now();
    let dataset = Dataset::load(config)?;
    let loaded = start.elapsed().as_secs_f64();
    let preprocessor = fit(&dataset.train, config)?;
    let fitted = start.elapsed().as_secs_f64();
    let train = transform(&preprocessor, &config.columns, &dataset.train)?;
    let valid = transform(&preprocessor, &config.columns, &dataset.valid)?;
    let total = start.elapsed().as_secs_f64();
    let rows = dataset.train.height() + dataset.valid.height();
    let report = PrepareReport {
        train: dataset.train.report.clone(),
        valid: config
            .data
            .valid
            .is_some()
            .then(|| dataset.valid.report.clone()),
        train_rows: dataset.train.height(),
        valid_rows: dataset.valid.height(),
        embedding_sizes: preprocessor.embedding_sizes(),
        context_sizes: preprocessor.context.iter().map(|v| v.size()).collect(),
        load_seconds: loaded,
        fit_seconds: fitted - loaded,
        transform_seconds: total - fitted,
        rows_per_second: rows as f64 / total,
    };
    Ok(Prepared {
        preprocessor,
        train,
        valid,
        report,
    })
}
