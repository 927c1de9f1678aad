//! The network, its losses and its training, through the library and the CLI.

use burn::prelude::*;
use upsell::config::Config;
use upsell::train::loss::{binary_cross_entropy, masked_cross_entropy};

use crate::common::{run_ok, upsell};

fn cpu() -> Device {
    Device::flex()
}

fn scalar(t: Tensor<1>) -> f64 {
    f64::from(t.into_scalar::<f32>())
}

#[test]
fn binary_cross_entropy_matches_the_formula_and_weights_rows() {
    let device = cpu();
    let logits = Tensor::<1>::from_floats([2.0, -1.0, 0.0], &device);
    let targets = Tensor::<1>::from_floats([1.0, 0.0, 1.0], &device);
    // -ln(sigmoid(2)), -ln(1 - sigmoid(-1)), -ln(0.5)
    let per_row = [0.126_928_0, 0.313_261_7, std::f64::consts::LN_2];
    let ones = Tensor::<1>::from_floats([1.0, 1.0, 1.0], &device);
    let mean = scalar(binary_cross_entropy(logits.clone(), targets.clone(), ones));
    assert!(
        (mean - per_row.iter().sum::<f64>() / 3.0).abs() < 1e-5,
        "{mean}"
    );
    // A weight of 2 counts a row twice; a weight of 0 drops it.
    let weights = Tensor::<1>::from_floats([2.0, 0.0, 1.0], &device);
    let weighted = scalar(binary_cross_entropy(logits, targets, weights));
    let expected = (2.0 * per_row[0] + per_row[2]) / 3.0;
    assert!((weighted - expected).abs() < 1e-5, "{weighted}");
    // Large logits stay finite.
    let extreme = scalar(binary_cross_entropy(
        Tensor::<1>::from_floats([100.0, -100.0], &device),
        Tensor::<1>::from_floats([0.0, 1.0], &device),
        Tensor::<1>::from_floats([1.0, 1.0], &device),
    ));
    assert!((extreme - 100.0).abs() < 1e-3, "{extreme}");
}

#[test]
fn cross_entropy_masks_rows_without_a_plan() {
    let device = cpu();
    let logits = Tensor::<2>::from_floats([[0.0, 0.0], [2.0, 0.0], [5.0, -5.0]], &device);
    let ones = Tensor::<1>::from_floats([1.0, 1.0, 1.0], &device);
    // Row 0: -ln(0.5); row 1 (class 1): -ln(1 / (1 + e^2)) = ln(1 + e^2);
    // row 2 has no plan and must not count.
    let targets = Tensor::<1, Int>::from_ints([0, 1, -1], &device);
    let loss = scalar(masked_cross_entropy(logits.clone(), targets, ones.clone()));
    let expected = (std::f64::consts::LN_2 + (1.0 + 2f64.exp()).ln()) / 2.0;
    assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    // No labelled row at all: 0, not NaN.
    let none = Tensor::<1, Int>::from_ints([-1, -1, -1], &device);
    assert_eq!(scalar(masked_cross_entropy(logits, none, ones)), 0.0);
}

/// A small, fast training config on the built-in synthetic data.
pub fn tiny(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train.synthetic_rows=30000",
        "train.epochs=3",
        "train.batch_size=256",
        "train.warmup_steps=20",
        "model.hidden=[64, 32]",
        "model.tower=[32]",
        "train.threads=2",
    ]
    .iter()
    .flat_map(|s| ["--set".to_string(), s.to_string()])
    .collect();
    for e in extra {
        args.push("--set".into());
        args.push(e.to_string());
    }
    args
}

fn train_cli(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let output = run_ok(
        upsell()
            .arg("train")
            .args(tiny(extra))
            .arg("--out")
            .arg(dir),
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last = stdout.lines().last().expect("a final JSON line");
    serde_json::from_str(last).unwrap()
}

fn epochs(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn training_through_the_cli_learns_and_exports_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let summary = train_cli(&run, &[]);
    assert_eq!(summary["status"], "ok");
    let history = epochs(&run);
    assert_eq!(history.len(), 3);
    let first = history[0]["train_loss"].as_f64().unwrap();
    let last = history[2]["train_loss"].as_f64().unwrap();
    assert!(last < first, "training loss should fall: {first} -> {last}");
    let auc = summary["best"]["valid_conversion_auc"].as_f64().unwrap();
    assert!(auc > 0.65, "validation AUC {auc}");
    let accuracy = summary["best"]["valid_plan_accuracy"].as_f64().unwrap();
    assert!(accuracy > 1.0 / 6.0, "plan accuracy {accuracy}");
    for file in [
        "config.toml",
        "metrics.jsonl",
        "checkpoint/manifest.json",
        "checkpoint/model.safetensors",
    ] {
        assert!(run.join(file).is_file(), "{file}");
    }
    // The saved config is the resolved one and loads again.
    let saved = Config::load(&run.join("config.toml"), &[]).unwrap();
    assert_eq!(saved.train.epochs, 3);
    // An existing run directory is never reused.
    let output = upsell()
        .arg("train")
        .args(tiny(&[]))
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
}

/// A small trained checkpoint of the built-in world (one epoch, 5,000
/// rows, no calibration, so scores are the network's own), with `extra`
/// settings; the temporary directory holds it.
fn small_checkpoint(extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut settings = vec![
        "train.epochs=1",
        "train.synthetic_rows=5000",
        "train.calibration=\"none\"",
    ];
    settings.extend_from_slice(extra);
    train_cli(&run, &settings);
    (tmp, run.join("checkpoint"))
}

/// Twelve records of the built-in world, each offered one of the six
/// products in turn.
fn sample_records() -> Vec<std::collections::HashMap<String, upsell::preprocess::Value<'static>>> {
    use upsell::preprocess::Value;
    (0..12)
        .map(|i| {
            let i = i as usize;
            std::collections::HashMap::from([
                ("tenure_months".into(), Value::Number(i as f64 * 5.0)),
                ("country".into(), Value::Text(["SE", "US", "BR"][i % 3])),
                (
                    "region_id".into(),
                    Value::Text(["SE-0001", "US-0002"][i % 2]),
                ),
                ("offer".into(), Value::Text(crate::common::PRODUCTS[i % 6])),
                ("surface".into(), Value::Text("push")),
            ])
        })
        .collect()
}

/// The few-row path scores each record as the batched path does, and the
/// batched conversion scores are sigmoid(`logits`).
fn assert_scoring_paths_agree(
    scorer: &upsell::Scorer,
    records: &[std::collections::HashMap<String, upsell::preprocess::Value<'_>>],
    logits: &[f32],
) {
    let close = |a: &f32, b: &f32| (a - b).abs() < 1e-5;
    let batched = scorer.score_records(records).unwrap();
    assert_eq!(batched.p_convert.len(), logits.len());
    for (p, logit) in batched.p_convert.iter().zip(logits) {
        assert!(close(p, &(1.0 / (1.0 + (-logit).exp()))), "{p} vs {logit}");
    }
    for (row, record) in records.iter().enumerate() {
        let one = scorer.score_records(std::slice::from_ref(record)).unwrap();
        let rows = row * 6..(row + 1) * 6;
        assert!(
            one.p_convert
                .iter()
                .zip(&batched.p_convert[rows.clone()])
                .all(|(a, b)| close(a, b))
        );
        assert!(
            one.p_plan
                .iter()
                .zip(&batched.p_plan[rows])
                .all(|(a, b)| close(a, b))
        );
    }
}

/// The wide part learns per-value biases, on every column or on the ids
/// alone (`model.wide_min_values`; here `region_id`'s 1,024 buckets and not
/// `country`'s few values), and every scoring path adds them the same way:
/// each row's own offer (training's forward pass), every product as the
/// offer (batched scoring) and the few-row path.
#[test]
fn the_wide_part_learns_and_every_scoring_path_adds_it() {
    for (min_values, columns) in [("0", 6), ("100", 1)] {
        let (_tmp, dir) = small_checkpoint(&[
            "model.members=2",
            "model.wide=true",
            &format!("model.wide_min_values={min_values}"),
        ]);
        let device = cpu();
        let (manifest, network) = upsell::scoring::checkpoint::load(&dir, &device).unwrap();
        assert_eq!(manifest.network.wide_columns().len(), columns);
        let table_rows = manifest.network.embedding_sizes.iter().sum();
        for member in network.members() {
            let sums = member.wide_block_square_sums(&[(0, table_rows)]);
            let learned = scalar(sums.expect("a wide part").sum());
            assert!(learned > 1e-6, "the wide biases stayed at 0: {learned}");
        }
        let scorer = upsell::Scorer::load(&dir).unwrap();
        let records = sample_records();
        let features = scorer.transform_records(&records).unwrap();
        let layout = upsell::model::inputs::Layout::new(&manifest.network);
        let inputs = layout.inputs(&features, 0..records.len(), &device);
        let own = upsell::model::inputs::to_vec(network.forward(&inputs).conversion);
        let all = upsell::model::inputs::to_vec(network.score_all_logits(&inputs).0);
        for (row, logit) in own.iter().enumerate() {
            let at_offer = all[row * 6 + row % 6];
            assert!(
                (logit - at_offer).abs() < 1e-5,
                "row {row}: {logit} vs {at_offer}"
            );
        }
        assert_scoring_paths_agree(&scorer, &records, &all);
    }
}

/// A decision's scores (every product in every context, and what a buyer
/// picks given each offer) are the same from a batch, whose users burn
/// encodes once for every context and offer, and from one record at a time
/// on the few-row path.
#[test]
fn decision_scores_agree_between_the_batched_and_few_row_paths() {
    let (_tmp, dir) = small_checkpoint(&[
        "model.members=2",
        "model.wide=true",
        "train.calibration=\"temperature\"",
    ]);
    let scorer = upsell::Scorer::load(&dir).unwrap();
    let records = sample_records();
    assert!(records.len() > upsell::model::few_rows::FEW_ROWS_MAX);
    let batched = scorer
        .user_scores(&scorer.transform_records(&records).unwrap())
        .unwrap();
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-5)
    };
    for (record, batched) in records.iter().zip(&batched) {
        let features = scorer
            .transform_records(std::slice::from_ref(record))
            .unwrap();
        let one = &scorer.user_scores(&features).unwrap()[0];
        assert_eq!(one.p_convert.len(), batched.p_convert.len());
        for (a, b) in one.p_convert.iter().zip(&batched.p_convert) {
            assert!(close(a, b), "{a:?} vs {b:?}");
        }
        assert!(
            close(&one.value_if_converted, &batched.value_if_converted),
            "{:?} vs {:?}",
            one.value_if_converted,
            batched.value_if_converted
        );
    }
    // The offer-aware plan head makes the value depend on the offer.
    let values = &batched[0].value_if_converted;
    assert!(
        values.iter().any(|v| (v - values[0]).abs() > 1e-6),
        "{values:?}"
    );
}

/// A seed ensemble lives in one checkpoint, its members differ, and the
/// scorer gives the mean of their logits on the few-row path and on the
/// batched one.
#[test]
fn an_ensemble_checkpoint_scores_the_mean_of_its_members() {
    let (_tmp, dir) = small_checkpoint(&["model.members=3"]);
    let device = cpu();
    let (manifest, network) = upsell::scoring::checkpoint::load(&dir, &device).unwrap();
    assert_eq!(manifest.network.members, 3);
    assert_eq!(network.members().len(), 3);
    let scorer = upsell::Scorer::load(&dir).unwrap();
    let records = sample_records();
    let features = scorer.transform_records(&records).unwrap();
    let layout = upsell::model::inputs::Layout::new(&manifest.network);
    let inputs = layout.inputs(&features, 0..records.len(), &device);
    let members: Vec<Vec<f32>> = network
        .members()
        .iter()
        .map(|m| upsell::model::inputs::to_vec(m.score_all_logits(&inputs).0))
        .collect();
    assert!(
        members[0] != members[1],
        "the members start from the same weights"
    );
    let mean: Vec<f32> = (0..members[0].len())
        .map(|i| members.iter().map(|m| m[i]).sum::<f32>() / 3.0)
        .collect();
    assert_scoring_paths_agree(&scorer, &records, &mean);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let a = train_cli(&tmp.path().join("a"), &["train.epochs=1"]);
    let b = train_cli(&tmp.path().join("b"), &["train.epochs=1"]);
    assert_eq!(a["best"]["train_loss"], b["best"]["train_loss"]);
    assert_eq!(a["best"]["valid_loss"], b["best"]["valid_loss"]);
    let weights = |run: &str| {
        std::fs::read(tmp.path().join(run).join("checkpoint/model.safetensors")).unwrap()
    };
    assert!(weights("a") == weights("b"), "the weights differ");
    let c = train_cli(&tmp.path().join("c"), &["train.epochs=1", "seed=7"]);
    assert_ne!(a["best"]["valid_loss"], c["best"]["valid_loss"]);
}

#[test]
fn runs_get_numbered_directories_under_out_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = format!(
        "out_dir={:?}",
        tmp.path().join("runs").display().to_string()
    );
    let first = upsell()
        .arg("train")
        .args(tiny(&[
            "train.epochs=1",
            "train.synthetic_rows=5000",
            &out_dir,
        ]))
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = upsell()
        .arg("train")
        .args(tiny(&[
            "train.epochs=1",
            "train.synthetic_rows=5000",
            &out_dir,
        ]))
        .output()
        .unwrap();
    assert!(second.status.success());
    assert!(tmp.path().join("runs/run-001/checkpoint").is_dir());
    assert!(tmp.path().join("runs/run-002/checkpoint").is_dir());
}

#[test]
fn a_model_trained_on_wgpu_scores_on_the_cpu_and_ndarray_trains_too() {
    let tmp = tempfile::tempdir().unwrap();
    let small = ["train.synthetic_rows=3000", "train.epochs=1"];
    for backend in ["wgpu", "ndarray"] {
        let output = upsell()
            .arg("train")
            .args(tiny(&small))
            .args(["--backend", backend, "--out"])
            .arg(tmp.path().join(backend))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: serde_json::Value = serde_json::from_str(
            String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .last()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(summary["backend"], backend);
    }
    let checkpoint = tmp.path().join("wgpu/checkpoint");
    let on_cpu = upsell::Scorer::load(&checkpoint).unwrap();
    let wgpu = upsell::model::device::device(upsell::config::BackendKind::Wgpu).unwrap();
    let on_gpu = upsell::Scorer::load_on(&checkpoint, &wgpu).unwrap();
    let rows = crate::common::repo().join("checkpoints/demo/rows.csv");
    let config = Config::from_toml(
        &on_cpu.manifest().config,
        "manifest",
        std::path::Path::new(""),
        &[],
    )
    .unwrap();
    let table = upsell::data::load(&rows, &config).unwrap();
    let features = upsell::data::features(&on_cpu.manifest().preprocessor, &table.frame).unwrap();
    let (a, b) = (
        on_cpu.score_features(&features),
        on_gpu.score_features(&features),
    );
    for (x, y) in a
        .p_convert
        .iter()
        .zip(&b.p_convert)
        .chain(a.p_plan.iter().zip(&b.p_plan))
    {
        assert!((x - y).abs() < 1e-4, "cpu {x} vs wgpu {y}");
    }
}

/// Without a terminal (a sweep, a pod, `nohup`), `train` logs one line per
/// epoch on stderr, as text or as JSON objects (`--log-format json`), and
/// stdout still holds only the final JSON line.
#[test]
fn train_logs_each_epoch_when_no_one_watches_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let output = crate::common::run_ok(
        crate::common::upsell()
            .arg("train")
            .args(tiny(&["train.synthetic_rows=3000", "train.epochs=2"]))
            .args(["--log-format", "json", "--out"])
            .arg(tmp.path().join("run")),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let epochs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .filter(|line: &serde_json::Value| line["message"] == "epoch done")
        .collect();
    assert_eq!(epochs.len(), 2, "{stderr}");
    for (i, line) in epochs.iter().enumerate() {
        assert_eq!(line["epoch"], i + 1, "{line}");
        assert!(
            line["valid_conversion_loss"].as_f64().unwrap() > 0.0,
            "{line}"
        );
        assert!(line["rows_per_sec"].as_f64().unwrap() > 0.0, "{line}");
    }
}

/// A run records where it came from: the command line, the version, the
/// commit it was built from, its start and end times and how it ended, in
/// `run.json`.
#[test]
fn a_run_records_its_command_version_start_and_end() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    crate::common::run_ok(
        crate::common::upsell()
            .arg("train")
            .args(tiny(&["train.synthetic_rows=2000", "train.epochs=1"]))
            .arg("--out")
            .arg(&run),
    );
    let provenance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    let command: Vec<&str> = provenance["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(command[1], "train");
    assert!(command.contains(&"train.epochs=1"), "{command:?}");
    assert_eq!(provenance["version"], env!("CARGO_PKG_VERSION"));
    // Built from this checkout: a commit is recorded.
    assert_eq!(
        provenance["commit"].as_str().unwrap().len(),
        12,
        "{provenance}"
    );
    let started = provenance["started"].as_str().unwrap();
    assert!(
        started.starts_with("20") && started.ends_with('Z'),
        "{started}"
    );
    let ended = provenance["ended"].as_str().unwrap();
    assert!(ended >= started, "{provenance}");
    assert_eq!(provenance["status"], "finished");
}
