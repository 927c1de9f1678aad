//! `upsell synth`: the log and its truth written as Parquet shards, in
//! parallel chunks, into a hidden directory renamed into place at the end.

use super::params::{WorldParams, params_table};
use super::schema::*;
use super::world::*;
use crate::config::Config;
use crate::error::DataError;
use crate::{Error, Result};
use polars::io::parquet::write::BatchedWriter;
use polars::prelude::{DataFrame, ParquetCompression, ParquetWriter};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

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

/// [`config`](super::config) for a world with these parameters: with a holdout in the log,
/// `columns.no_offer` names its rows.
pub fn config_for(params: &WorldParams) -> Config {
    let mut config = config();
    if params.holdout > 0.0 {
        config.columns.no_offer = Some(NO_OFFER.into());
    }
    config
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
pub(super) fn refuse_non_empty(path: &Path) -> Result<()> {
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
pub(super) struct Task {
    file: usize,
    start: u64,
    rows: usize,
}

/// The open Parquet files of one part.
pub(super) struct Part {
    exposures: (PathBuf, BatchedWriter<File>),
    /// Absent past `truth_files`.
    truth: Option<(PathBuf, BatchedWriter<File>)>,
}

/// Writes everything into `dir`; returns the number of files per table and
/// of conversions.
pub(super) fn write_into(dir: &Path, opts: &SynthOptions) -> Result<(usize, u64)> {
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
        let mut progress = crate::data::progress::Progress::new("synth");
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
            progress.add(exposures.height());
        }
        if let Some((_, done)) = part.take() {
            finish_part(done)?;
        }
        progress.finish();
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
    let text = format!("{header}{}", config_for(&opts.world.1).to_toml());
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

pub(super) fn polars_error(path: &Path, source: polars::prelude::PolarsError) -> Error {
    Error::from(DataError::Polars {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn open_parquet(
    path: &Path,
    like: &DataFrame,
) -> Result<(PathBuf, BatchedWriter<File>)> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let writer = ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .batched(like.schema())
        .map_err(|source| polars_error(path, source))?;
    Ok((path.to_path_buf(), writer))
}

pub(super) fn finish_part(part: Part) -> Result<()> {
    for (path, writer) in std::iter::once(part.exposures).chain(part.truth) {
        writer
            .finish()
            .map_err(|source| polars_error(&path, source))?;
    }
    Ok(())
}

pub(super) fn readme(opts: &SynthOptions, files: usize) -> String {
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
