//! Out-of-core training: the streaming fit gives what loading gives, every
//! training row arrives exactly once per epoch in a seeded order, bad values
//! deep inside a shard are named by file and row, and data-parallel replicas
//! train like one device.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use upsell::config::Config;
use upsell::data::{self, stream};

use crate::common::{run_ok, upsell};

/// `upsell synth` rows in shards of `per_file`; returns the log directory.
fn synth(dir: &Path, rows: usize, per_file: usize) -> PathBuf {
    let out = dir.join("synth");
    run_ok(
        upsell()
            .args(["synth", "--rows", &rows.to_string(), "--seed", "5"])
            .args(["--rows-per-file", &per_file.to_string(), "--out"])
            .arg(&out),
    );
    out
}

/// The synthetic world's config with every shard but the last as training
/// data (a glob) and the last as validation data.
fn config(synth: &Path, shards: usize, overrides: &[&str]) -> Config {
    let mut sets: Vec<String> = vec![
        format!(
            "data.train=\"{}/exposures/part-0000[0-{}].parquet\"",
            synth.display(),
            shards - 2
        ),
        format!(
            "data.valid=\"{}/exposures/part-0000{}.parquet\"",
            synth.display(),
            shards - 1
        ),
        "data.stream=true".into(),
    ];
    sets.extend(overrides.iter().map(|s| s.to_string()));
    Config::load(&synth.join("config.toml"), &sets).unwrap()
}

#[test]
fn the_streaming_fit_equals_fitting_the_loaded_rows() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth(dir.path(), 30_000, 7_500);
    let config = config(&synth, 4, &[]);
    let train = config.data.train.clone().unwrap();
    let files = data::source::resolve(&train).unwrap();
    assert_eq!(files.len(), 3);

    let streamed = stream::fit(&config, &train, &files).unwrap();
    let table = data::load(&train, &config).unwrap();
    let loaded = data::fit(&table, &config).unwrap();
    assert_eq!(streamed.rows, table.height());
    assert_eq!(streamed.report.rows_read, 22_500);
    let fitted = &streamed.preprocessor;
    assert_eq!(fitted.categorical, loaded.categorical);
    assert_eq!(fitted.context, loaded.context);
    for (a, b) in fitted.numeric.iter().zip(&loaded.numeric) {
        assert!((a.mean - b.mean).abs() <= 1e-9 * b.mean.abs().max(1.0));
        assert!((a.std - b.std).abs() <= 1e-9 * b.std);
    }

    // A seeded sample: the same for a seed, and the epoch's size is
    // estimated from the shards' row counts.
    let sampled = config_with(&config, |c| c.data.fit_rows = 5_000);
    let a = stream::fit(&sampled, &train, &files).unwrap();
    let b = stream::fit(&sampled, &train, &files).unwrap();
    assert_eq!(a.preprocessor, b.preprocessor);
    assert_eq!(a.rows, 22_500);
    assert!(a.report.rows_used < 22_500, "{:?}", a.report);
}

fn config_with(config: &Config, change: impl FnOnce(&mut Config)) -> Config {
    let mut config = config.clone();
    change(&mut config);
    config
}

/// Every training row once per epoch, in an order fixed by the seed and
/// the epoch (so a resumed epoch replays it), different across epochs.
#[test]
fn an_epoch_streams_every_row_once_in_a_seeded_order() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth(dir.path(), 20_000, 5_000);
    // A buffer smaller than a shard, so the shard order matters too.
    let config = config(&synth, 4, &["data.shuffle_buffer=3000"]);
    let train = config.data.train.clone().unwrap();
    let files = data::source::resolve(&train).unwrap();
    let fitted = stream::fit(&config, &train, &files).unwrap();
    let stream = stream::Stream::new(&config, &train, files, fitted);

    // The standardised tenure and listening hours identify a row well
    // enough to compare orders; the multiset of rows must match exactly.
    let epoch = |n: usize| {
        let mut rows: Vec<(u32, u32, u32)> = Vec::new();
        let mut sizes = Vec::new();
        let streamed = stream
            .epoch(n, 1000, &mut |batch| {
                let width = batch.features.numeric.len() / batch.features.rows;
                sizes.push(batch.features.rows);
                for row in batch.features.numeric.chunks(width) {
                    rows.push((row[0].to_bits(), row[1].to_bits(), row[2].to_bits()));
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(streamed, 15_000);
        assert!(sizes.iter().all(|&s| s == 1000), "{sizes:?}");
        rows
    };
    let first = epoch(1);
    assert_eq!(first, epoch(1), "an epoch's order is reproducible");
    let second = epoch(2);
    assert_ne!(first, second, "each epoch has its own order");

    let table = data::load(&train, &config).unwrap();
    let all = data::transform(stream.preprocessor(), &config.columns, &table).unwrap();
    let width = all.features.numeric.len() / all.features.rows;
    let mut expected: Vec<(u32, u32, u32)> = all
        .features
        .numeric
        .chunks(width)
        .map(|r| (r[0].to_bits(), r[1].to_bits(), r[2].to_bits()))
        .collect();
    let in_file_order = expected.clone();
    expected.sort();
    for order in [first.clone(), second] {
        let mut sorted = order;
        sorted.sort();
        assert_eq!(sorted, expected, "every row exactly once");
    }
    assert_ne!(first, in_file_order, "the rows are shuffled");
}

#[test]
fn a_bad_value_deep_in_a_shard_is_named_by_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth(dir.path(), 200_000, 100_000);
    let shard = synth.join("exposures/part-00000.parquet");
    let mut frame = ParquetReader::new(std::fs::File::open(&shard).unwrap())
        .finish()
        .unwrap();
    let hours: Vec<Option<f64>> = frame
        .column("listening_hours_7d")
        .unwrap()
        .cast(&DataType::Float64)
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, v)| if i == 80_000 { Some(f64::NAN) } else { v })
        .collect();
    frame
        .with_column(Column::new("listening_hours_7d".into(), hours))
        .unwrap();
    let mut file = std::fs::File::create(&shard).unwrap();
    ParquetWriter::new(&mut file).finish(&mut frame).unwrap();

    let config = config(&synth, 2, &[]);
    let train = config.data.train.clone().unwrap();
    let files = data::source::resolve(&train).unwrap();
    let message = stream::fit(&config, &train, &files)
        .unwrap_err()
        .to_string();
    assert!(message.contains("part-00000.parquet"), "{message}");
    assert!(
        message.contains("column \"listening_hours_7d\", row 80001"),
        "{message}"
    );
    assert!(message.contains("not a finite number"), "{message}");
}

/// Streaming needs held-out data, which `--valid` may give, and a device
/// must be one burn knows.
#[test]
fn streaming_and_device_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth(dir.path(), 2_000, 1_000);
    let config = synth.join("config.toml");
    // --data and --valid are part of the config that is validated.
    run_ok(
        upsell()
            .args(["train", "--config"])
            .arg(&config)
            .args(["--set", "data.stream=true", "--set", "train.epochs=1"])
            .args(["--set", "model.members=1", "--data"])
            .arg(synth.join("exposures/part-00000.parquet"))
            .arg("--valid")
            .arg(synth.join("exposures/part-00001.parquet"))
            .arg("--out")
            .arg(dir.path().join("run")),
    );
    let stderr = crate::common::run_fails(
        upsell()
            .args(["train", "--config"])
            .arg(&config)
            .args(["--set", "data.stream=true", "--data"])
            .arg(synth.join("exposures")),
        2,
    );
    assert!(
        stderr.contains("data.stream") && stderr.contains("data.valid"),
        "{stderr}"
    );
    let stderr = crate::common::run_fails(
        upsell()
            .args(["train", "--config"])
            .arg(&config)
            .args(["--set", "train.devices=[\"flex\", \"gpu7\"]"]),
        2,
    );
    assert!(
        stderr.contains("train.devices[1]") && stderr.contains("gpu7"),
        "{stderr}"
    );
}

/// Two replicas on two burn devices (flex and ndarray, the CPU backends)
/// follow the single-device run step for step when nothing is random
/// (no dropout): the replicas' parts of the loss, each divided by the whole
/// batch's normaliser, sum to the batch's loss, and so their gradients to
/// its gradient. Only the order of float additions differs.
#[test]
fn two_replicas_train_like_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth(dir.path(), 24_000, 8_000);
    let losses = |devices: &str| {
        let out = dir.path().join(format!("run-{}", devices.len()));
        run_ok(
            upsell()
                .args(["train", "--config"])
                .arg(synth.join("config.toml"))
                .args(["--set", "data.stream=true", "--set", "train.epochs=2"])
                .args([
                    "--set",
                    "model.dropout=0.0",
                    "--set",
                    "train.batch_size=512",
                ])
                .args(["--set", &format!("train.devices={devices}")])
                .arg("--set")
                .arg(format!(
                    "data.train=\"{}/exposures/part-0000[0-1].parquet\"",
                    synth.display()
                ))
                .arg("--set")
                .arg(format!(
                    "data.valid=\"{}/exposures/part-00002.parquet\"",
                    synth.display()
                ))
                .arg("--out")
                .arg(&out),
        );
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    v["train_loss"].as_f64().unwrap(),
                    v["valid_loss"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let one = losses("[]");
    let two = losses("[\"flex\", \"ndarray\"]");
    assert_eq!(one.len(), 2);
    for ((train_1, valid_1), (train_2, valid_2)) in one.iter().zip(&two) {
        assert!(
            (train_1 - train_2).abs() < 1e-5 * train_1,
            "{one:?} vs {two:?}"
        );
        assert!(
            (valid_1 - valid_2).abs() < 1e-5 * valid_1,
            "{one:?} vs {two:?}"
        );
    }
}
