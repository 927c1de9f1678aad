//! `upsell bench`: throughput and latency of every hot path, each set
//! against what the machine can do.
//!
//! The yardstick is the sustained single-precision matrix-multiply rate of
//! the device, measured first: the best that any selected CPU backend
//! reaches for the CPU backends, the GPU's own for wgpu. A model's cost per
//! row is counted in floating-point operations of its dense layers (a
//! multiply-add is 2); training costs 3x the forward pass (the backward pass
//! computes two products per layer: the gradients of the inputs and of the
//! weights). Embedding lookups, activations and the optimiser are not
//! counted: they are memory-bound, and counting them would flatter the
//! figures. So every throughput reads as "percent of peak matrix rate".
//!
//! Each measurement prints one JSON line; `scripts/bench.sh` turns them into
//! a Markdown table.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use burn::prelude::*;
use serde::Serialize;

use crate::config::{BackendKind, Config};
use crate::model::NetworkConfig;
use crate::preprocess::Value;
use crate::scoring::Scorer;
use crate::{Error, Result};

/// Three model sizes around the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSize {
    /// Encoder `[64, 32]`, tower `[32]`, embeddings of 8.
    Small,
    /// `configs/default.toml`: encoder `[256, 128]`, tower `[64]`, embeddings of 16.
    Default,
    /// Encoder `[1024, 512, 256]`, tower `[256]`, embeddings of 32.
    Large,
}

impl std::str::FromStr for ModelSize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "small" => Ok(ModelSize::Small),
            "default" => Ok(ModelSize::Default),
            "large" => Ok(ModelSize::Large),
            _ => Err(format!(
                "unknown model size {s:?}; expected small, default or large"
            )),
        }
    }
}

impl ModelSize {
    fn apply(self, config: &mut Config) {
        let model = &mut config.model;
        match self {
            ModelSize::Small => {
                model.hidden = vec![64, 32];
                model.tower = vec![32];
                model.embedding_dim = 8;
                model.offer_dim = 8;
            }
            ModelSize::Default => {}
            ModelSize::Large => {
                model.hidden = vec![1024, 512, 256];
                model.tower = vec![256];
                model.embedding_dim = 32;
                model.offer_dim = 32;
            }
        }
    }
}

/// One measured figure.
#[derive(Debug, Serialize)]
pub struct Measurement {
    /// `matmul`, `train`, `score`, `latency`, `score_file` or `prepare`.
    pub bench: &'static str,
    pub backend: String,
    /// What was measured, e.g. `default model, batch 4096`.
    pub case: String,
    pub value: f64,
    pub unit: &'static str,
    /// Achieved FLOP/s over the backend's measured matrix-multiply rate.
    pub share_of_matmul: Option<f64>,
    /// Further figures (FLOPs per row, p50, rows, seconds).
    pub detail: serde_json::Value,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub backends: Vec<BackendKind>,
    pub sizes: Vec<ModelSize>,
    /// Training rows per epoch (three epochs run; the last is reported).
    pub train_rows: u64,
    /// Training batch sizes, each measured; the model trained at the first
    /// is the one scored.
    pub train_batches: Vec<usize>,
    /// Rows of the end-to-end `upsell score` and `prepare` runs.
    pub file_rows: u64,
    /// Single-row scoring calls timed for the latency percentiles.
    pub latency_calls: usize,
    /// Least time spent on each throughput figure.
    pub min_time: Duration,
}

/// Floating-point operations per row of the dense layers, every member of
/// an ensemble counted: (forward of the training graph, training step,
/// scoring every product).
pub fn flops_per_row(net: &NetworkConfig) -> (f64, f64, f64) {
    let dense = |input: usize, widths: &[usize]| -> (f64, usize) {
        let mut flops = 0.0;
        let mut width = input;
        for &w in widths {
            flops += 2.0 * (width * w) as f64;
            width = w;
        }
        (flops, width)
    };
    let input = net.numeric_width + net.embedding_sizes.len() * net.embedding_dim;
    let (mut encoder, user) = dense(input, &net.hidden);
    if net.experts > 0 {
        encoder = encoder * net.experts as f64 + 2.0 * 2.0 * (input * net.experts) as f64;
    }
    let offer = if net.has_offer { net.offer_dim } else { 0 };
    let (tower, last) = dense(
        user + offer + net.context_sizes.len() * net.offer_dim,
        &net.tower,
    );
    let tower = tower + 2.0 * last as f64;
    let plan_input = user
        + if net.plan_uses_offer && net.has_offer {
            net.offer_dim
        } else {
            0
        };
    let plan = 2.0 * (plan_input * net.products) as f64;
    let members = net.members.max(1) as f64;
    let forward = (encoder + tower + plan) * members;
    let scoring = (encoder + tower * net.products.max(1) as f64 + plan) * members;
    (forward, 3.0 * forward, scoring)
}

/// The sustained f32 matrix-multiply rate (FLOP/s) of `device` on
/// `[m, k] x [k, n]`, timed over at least `min_time` after a warm-up.
pub fn matmul_rate(device: &Device, m: usize, k: usize, n: usize, min_time: Duration) -> f64 {
    let a = Tensor::<2>::random([m, k], burn::tensor::Distribution::Default, device);
    let b = Tensor::<2>::random([k, n], burn::tensor::Distribution::Default, device);
    let sync = |t: Tensor<2>| {
        // Reading one element waits for the product on every backend.
        let _ = t.slice([0..1, 0..1]).into_data();
    };
    // Warm-up: kernel compilation and autotuning happen on first use.
    for _ in 0..3 {
        sync(a.clone().matmul(b.clone()));
    }
    let mut calls = 0u64;
    let started = Instant::now();
    while started.elapsed() < min_time || calls < 3 {
        // A few products per wait, so the wait does not dominate on a GPU.
        let mut last = None;
        for _ in 0..4 {
            last = Some(a.clone().matmul(b.clone()));
            calls += 1;
        }
        sync(last.expect("four products"));
    }
    2.0 * (m * k * n) as f64 * calls as f64 / started.elapsed().as_secs_f64()
}

fn emit(m: &Measurement) {
    println!(
        "{}",
        serde_json::to_string(m).expect("measurements serialise")
    );
}

/// The synthetic training config of a model size and row count.
fn config(size: ModelSize, rows: u64, backend: BackendKind) -> Result<Config> {
    let mut config = Config::builtin(&[])?;
    size.apply(&mut config);
    config.train.synthetic_rows = rows;
    config.train.backend = backend;
    config.train.epochs = 3;
    config.train.patience = 0;
    // The batch measured is the batch asked for, not one shrunk to give
    // small data more steps.
    config.train.min_steps_per_epoch = 0;
    config.data.valid_fraction = 0.02;
    Ok(config)
}

/// Runs every benchmark `options` selects, printing each figure as one JSON
/// line as it comes.
pub fn run(options: &BenchOptions, work: &Path) -> Result<()> {
    // The yardstick per device: the best rate any CPU backend reaches is the
    // CPU's (so a slower backend is not flattered by its own slow matmul);
    // the GPU has its own.
    let mut peaks: HashMap<bool, f64> = HashMap::new();
    for &kind in &options.backends {
        let device = crate::model::device::device(kind)?;
        for (m, k, n) in [(2048, 2048, 2048), (1024, 256, 256)] {
            let rate = matmul_rate(&device, m, k, n, options.min_time);
            let peak = peaks.entry(kind == BackendKind::Wgpu).or_default();
            *peak = peak.max(rate);
            emit(&Measurement {
                bench: "matmul",
                backend: kind.to_string(),
                case: format!("f32 [{m}, {k}] x [{k}, {n}]"),
                value: rate / 1e9,
                unit: "GFLOP/s",
                share_of_matmul: None,
                detail: serde_json::json!({}),
            });
        }
    }
    // The rows are the same for every backend and size (the model is not
    // part of the data preparation): prepared once.
    let prepared = crate::data::prepare(&config(
        ModelSize::Default,
        options.train_rows,
        BackendKind::Flex,
    )?)?;
    for &kind in &options.backends {
        let device = crate::model::device::device(kind)?;
        let peak = peaks[&(kind == BackendKind::Wgpu)];
        for &size in &options.sizes {
            bench_model(options, kind, &device, size, peak, &prepared, work)?;
        }
    }
    Ok(())
}

fn share(rows_per_sec: f64, flops_per_row: f64, peak: f64) -> Option<f64> {
    (peak > 0.0).then(|| rows_per_sec * flops_per_row / peak)
}

fn bench_model(
    options: &BenchOptions,
    kind: BackendKind,
    device: &Device,
    size: ModelSize,
    peak: f64,
    prepared: &crate::data::Prepared,
    work: &Path,
) -> Result<()> {
    let backend = kind.to_string();
    let name = format!("{size:?}").to_lowercase();
    let mut trained = None;
    for &batch in &options.train_batches {
        let mut config = config(size, options.train_rows, kind)?;
        config.train.batch_size = batch;
        let net = crate::train::network_config(&config, &prepared.preprocessor);
        let (forward, train_flops, _) = flops_per_row(&net);
        let run_dir = tempfile::tempdir_in(work).map_err(|e| Error::io(work, e))?;
        let run = crate::train::Run::new(&config, &net, &prepared.preprocessor, device);
        let outcome = run.fit(&prepared.train, &prepared.valid, run_dir.path(), false)?;
        // The last epoch: the first pays for kernel compilation and warm-up.
        let steady = outcome
            .history
            .last()
            .map_or(outcome.rows_per_sec, |e| e.train_rows_per_sec);
        emit(&Measurement {
            bench: "train",
            backend: backend.clone(),
            case: format!("{name} model, batch {batch}"),
            value: steady,
            unit: "rows/s",
            share_of_matmul: share(steady, train_flops, peak),
            detail: serde_json::json!({
                "forward_flops_per_row": forward,
                "train_flops_per_row": train_flops,
                "rows": prepared.train.features.rows,
                "epochs": outcome.epochs,
                "all_epochs_rows_per_sec": outcome.rows_per_sec,
            }),
        });
        trained.get_or_insert((config, net, outcome));
    }
    let Some((config, net, outcome)) = trained else {
        return Ok(());
    };
    let (_, _, score_flops) = flops_per_row(&net);

    let weights = crate::scoring::checkpoint::weights_bytes(&outcome.network)?;
    let manifest = crate::scoring::checkpoint::manifest(
        net.clone(),
        prepared.preprocessor.clone(),
        None,
        serde_json::Value::Null,
        config.to_toml(),
        &weights,
    );
    let scorer = Scorer::from_parts(manifest, outcome.network, device);
    let features = &prepared.train.features;
    let mut batch4096 = 0.0;
    for batch in [1usize, 64, 4096] {
        let rows: Vec<usize> = (0..batch.min(features.rows)).collect();
        let slice = features.take(&rows);
        for _ in 0..3 {
            scorer.score_features(&slice);
        }
        let started = Instant::now();
        let mut scored = 0usize;
        while started.elapsed() < options.min_time {
            let scores = scorer.score_features(&slice);
            scored += scores.rows;
        }
        let rate = scored as f64 / started.elapsed().as_secs_f64();
        if batch == 4096 {
            batch4096 = rate;
        }
        emit(&Measurement {
            bench: "score",
            backend: backend.clone(),
            case: format!("{name} model, batch {batch}"),
            value: rate,
            unit: "rows/s",
            share_of_matmul: share(rate, score_flops, peak),
            detail: serde_json::json!({ "score_flops_per_row": score_flops }),
        });
    }

    if size == ModelSize::Default {
        latency(options, &scorer, &backend)?;
        if kind == BackendKind::Flex {
            files(options, &scorer, batch4096, work)?;
        }
    }
    Ok(())
}

/// Single-row scoring from a typed record, preprocessing included.
fn latency(options: &BenchOptions, scorer: &Scorer, backend: &str) -> Result<()> {
    let mut record: HashMap<String, Value<'_>> = HashMap::new();
    let numbers = [
        ("tenure_months", 14.0),
        ("listening_hours_7d", 9.5),
        ("active_days_28d", 17.0),
        ("skips_per_hour", 3.0),
        ("ad_impressions_7d", 40.0),
        ("podcast_share", 0.2),
        ("audiobook_hours_30d", 1.0),
        ("devices", 2.0),
        ("household_size", 3.0),
        ("student_signal", 0.0),
        ("price_sensitivity", 0.4),
        ("days_since_last_upsell", 30.0),
    ];
    for (column, value) in numbers {
        record.insert(column.to_string(), Value::Number(value));
    }
    let texts = [
        ("country", "SE"),
        ("platform", "ios"),
        ("current_plan", "free"),
        ("age_bucket", "25-34"),
        ("acquisition_channel", "organic"),
        ("region_id", "SE-12"),
        ("offer", "family"),
        ("surface", "push"),
        ("message", "discount"),
    ];
    for (column, value) in texts {
        record.insert(column.to_string(), Value::Text(value));
    }
    let records = [record];
    for _ in 0..100 {
        scorer.score_records(&records)?;
    }
    let mut micros: Vec<f64> = (0..options.latency_calls)
        .map(|_| {
            let started = Instant::now();
            let scores = scorer.score_records(&records).map(|s| s.rows);
            std::hint::black_box(scores).ok();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    emit(&Measurement {
        bench: "latency",
        backend: backend.to_string(),
        case: "default model, one typed record (preprocessing included)".into(),
        value: at(0.99),
        unit: "µs p99",
        share_of_matmul: None,
        detail: serde_json::json!({ "p50_us": at(0.5), "p90_us": at(0.9), "calls": micros.len() }),
    });
    Ok(())
}

/// Data preparation and `upsell score` from Parquet, end to end.
fn files(options: &BenchOptions, scorer: &Scorer, batch_rate: f64, work: &Path) -> Result<()> {
    let dir = tempfile::tempdir_in(work).map_err(|e| Error::io(work, e))?;
    let synth_dir = dir.path().join("synth");
    crate::data::synth::write(&crate::data::synth::SynthOptions::new(
        options.file_rows,
        7,
        &synth_dir,
    ))?;
    let config = Config::load(&synth_dir.join("config.toml"), &[])?;
    let prepared = crate::data::prepare(&config)?;
    let report = &prepared.report;
    let rows = (report.train_rows + report.valid_rows) as f64;
    let seconds = report.load_seconds + report.fit_seconds + report.transform_seconds;
    emit(&Measurement {
        bench: "prepare",
        backend: "cpu".into(),
        case: format!(
            "{} Parquet rows: load, split, fit, transform",
            options.file_rows
        ),
        value: rows / seconds,
        unit: "rows/s",
        share_of_matmul: None,
        detail: serde_json::json!({
            "load_seconds": report.load_seconds,
            "fit_seconds": report.fit_seconds,
            "transform_seconds": report.transform_seconds,
        }),
    });
    drop(prepared);
    let output = dir.path().join("scores.parquet");
    let scored = crate::offline::score::score_files(scorer, &synth_dir.join("exposures"), &output)?;
    let model_seconds = scored.rows as f64 / batch_rate;
    emit(&Measurement {
        bench: "score_file",
        backend: "flex".into(),
        case: format!("`upsell score`, {} rows, Parquet to Parquet", scored.rows),
        value: scored.rows_per_sec,
        unit: "rows/s",
        share_of_matmul: None,
        detail: serde_json::json!({
            "seconds": scored.seconds,
            "model_only_seconds": model_seconds,
            "ratio_to_model": scored.seconds / model_seconds,
        }),
    });
    Ok(())
}
