//! Experimentation through the command line: evaluation reports,
//! calibration in the checkpoint, off-policy evaluation against the
//! synthetic world's truth, the sharing architectures and losses.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde_json::Value;

use crate::common::{files_under, last_json, run_fails, run_ok, upsell};

/// Writes a synthetic log of `rows` rows (in files of `per_file` rows).
fn synth(dir: &Path, rows: u64, per_file: u64, seed: u64) -> PathBuf {
    let out = dir.join("synth");
    run_ok(
        upsell()
            .args([
                "synth",
                "--rows",
                &rows.to_string(),
                "--rows-per-file",
                &per_file.to_string(),
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(&out),
    );
    out
}

/// Trains a small model on `data` and returns the summary line.
fn train(synth: &Path, data: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut command = upsell();
    command
        .arg("train")
        .arg("--config")
        .arg(synth.join("config.toml"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args([
            "--set",
            "train.epochs=3",
            "--set",
            "model.hidden=[64, 32]",
            "--set",
            "model.tower=[32]",
            "--set",
            "train.threads=2",
            "--set",
            "train.batch_size=256",
            "--set",
            "train.warmup_steps=10",
        ]);
    for setting in extra {
        command.args(["--set", setting]);
    }
    let output = run_ok(&mut command);
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// Every column of a Parquet file.
fn read_parquet(path: &Path) -> DataFrame {
    ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap()
}

#[test]
fn eval_writes_metrics_and_a_report_with_plots() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 40_000, 30_000, 3);
    let run = dir.path().join("run");
    let summary = train(&data, &data.join("exposures/part-00000.parquet"), &run, &[]);
    // Training writes the validation report into the run directory.
    assert!(run.join("report/report.html").is_file());
    let calibration = &summary["calibration"];
    assert!(
        calibration["log_loss_after"].as_f64().unwrap()
            <= calibration["log_loss_before"].as_f64().unwrap() + 1e-9,
        "{calibration}"
    );

    let report = dir.path().join("report");
    let output = run_ok(
        upsell()
            .args(["eval", "--checkpoint"])
            .arg(run.join("checkpoint"))
            .arg("--data")
            .arg(data.join("exposures/part-00001.parquet"))
            .arg("--report")
            .arg(&report)
            .args(["--by", "platform"]),
    );
    let metrics = last_json(&output);
    assert_eq!(metrics["rows_used"], 10_000);
    let auc = metrics["conversion"]["auc"].as_f64().unwrap();
    assert!(auc > 0.6, "{auc}");
    for key in ["pr_auc", "log_loss", "brier", "ece", "ece_equal_count"] {
        assert!(metrics["conversion"][key].is_number(), "{key}: {metrics}");
    }
    assert_eq!(metrics["per_product"].as_array().unwrap().len(), 6);
    assert!(metrics["plan"]["top2_accuracy"].is_number());
    assert_eq!(metrics["calibration"], "temperature");
    let segments = metrics["segments"].as_array().unwrap();
    let rows: u64 = segments
        .iter()
        .map(|s| s["conversion"]["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 10_000, "segments partition the rows");
    assert!(segments.iter().any(|s| s["value"] == "ios"), "{segments:?}");

    let files: Vec<String> = files_under(&report)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    for name in [
        "report.html",
        "report.md",
        "metrics.json",
        "reliability.svg",
        "roc.svg",
        "gains.svg",
        "confusion.svg",
    ] {
        assert!(files.contains(&name.to_string()), "{name} in {files:?}");
        let bytes = std::fs::metadata(report.join(name)).unwrap().len();
        assert!(bytes > 200, "{name} has {bytes} bytes");
    }
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Segments by platform"));
    // Opens offline: nothing is fetched from elsewhere.
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));

    // The report directory is never overwritten.
    let again = upsell()
        .args(["eval", "--checkpoint"])
        .arg(run.join("checkpoint"))
        .arg("--data")
        .arg(data.join("exposures/part-00001.parquet"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn eval_names_a_missing_segment_column() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = crate::common::repo().join("checkpoints/demo");
    let rows = crate::common::repo().join("checkpoints/demo/rows.csv");
    let mut output = upsell();
    output
        .args(["eval", "--checkpoint"])
        .arg(&checkpoint)
        .arg("--data")
        .arg(&rows)
        .args(["--by", "no_such_column"])
        .arg("--report")
        .arg(dir.path().join("r"));
    let stderr = run_fails(&mut output, 2);
    assert!(
        stderr.contains("\"no_such_column\"") && stderr.contains("--by"),
        "{stderr}"
    );
    assert!(!dir.path().join("r").exists());
}

#[test]
fn calibration_is_stored_and_applied_to_scores() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 6_000, 6_000, 4);
    let run = dir.path().join("run");
    train(
        &data,
        &data.join("exposures"),
        &run,
        &["train.calibration=\"product_temperature\""],
    );
    let scorer = upsell::Scorer::load(run.join("checkpoint")).unwrap();
    let manifest = scorer.manifest().clone();
    let calibration = manifest
        .calibration
        .clone()
        .expect("training stores a calibration");
    assert_eq!(calibration.conversion_temperature.len(), 6);
    let (uncalibrated, network) = {
        let mut m = manifest.clone();
        m.calibration = None;
        let (_, network) = upsell::scoring::checkpoint::load(
            &run.join("checkpoint"),
            &upsell::model::device::Device::flex(),
        )
        .unwrap();
        (m, network)
    };
    let raw = upsell::Scorer::from_parts(
        uncalibrated,
        network,
        &upsell::model::device::Device::flex(),
    );
    let frame = read_parquet(&data.join("exposures/part-00000.parquet"));
    let features = upsell::offline::score::input_features(
        Path::new("rows"),
        &manifest.preprocessor,
        &frame.head(Some(50)),
        0,
    )
    .unwrap();
    let (calibrated, raw) = (
        scorer.score_features(&features),
        raw.score_features(&features),
    );
    let width = calibrated.convert_width();
    for (i, (&c, &r)) in calibrated.p_convert.iter().zip(&raw.p_convert).enumerate() {
        let t = calibration.conversion_temperature[i % width];
        let logit = (f64::from(r) / (1.0 - f64::from(r))).ln();
        let expected = 1.0 / (1.0 + (-logit / t).exp());
        assert!(
            (f64::from(c) - expected).abs() < 1e-4,
            "{c} vs {expected} (t {t})"
        );
    }
}

/// Rows of the recommend output: (user index, offer, surface, message).
fn greedy_decisions(path: &Path) -> Vec<(u64, String, String, String)> {
    let frame = upsell::data::source::read(path, &["id", "offer", "surface", "message"]).unwrap();
    let text = |name: &str| -> Vec<String> {
        frame
            .column(name)
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|v| v.unwrap().to_string())
            .collect()
    };
    let (ids, offers, surfaces, messages) =
        (text("id"), text("offer"), text("surface"), text("message"));
    (0..frame.height())
        .map(|i| {
            let index: u64 = ids[i].trim_start_matches('u').parse().unwrap();
            (
                index,
                offers[i].clone(),
                surfaces[i].clone(),
                messages[i].clone(),
            )
        })
        .collect()
}

/// The truth of the greedy policy on one log: what its decisions would
/// convert and earn on average, from the synthetic world itself.
fn greedy_truth(dir: &Path, checkpoint: &Path, logs: &Path, seed: u64) -> (f64, f64) {
    let decisions = dir.join(format!(
        "greedy-{}.parquet",
        logs.file_stem().unwrap().to_string_lossy()
    ));
    run_ok(
        upsell()
            .args(["recommend", "--policy", "greedy", "--checkpoint"])
            .arg(checkpoint)
            .arg("--input")
            .arg(logs)
            .arg("--output")
            .arg(&decisions),
    );
    let oracle = upsell::data::synth::Oracle::new(seed);
    let position =
        |names: &[(&str, f64)], name: &str| names.iter().position(|(n, _)| *n == name).unwrap();
    let (mut conversion, mut value, mut n) = (0.0, 0.0, 0.0);
    for (index, offer, surface, message) in greedy_decisions(&decisions) {
        let (s, m) = (
            position(&upsell::data::synth::SURFACES, &surface),
            position(&upsell::data::synth::MESSAGES, &message),
        );
        let p = position(&upsell::data::synth::PRODUCTS, &offer);
        conversion += oracle.p_convert(index, s, m)[p];
        value += oracle.expected_value(index, s, m)[p];
        n += 1.0;
    }
    (conversion / n, value / n)
}

/// A 95% interval misses the truth one time in twenty by design, so one
/// log would make a test that fails by chance. The model is evaluated on
/// five disjoint logs of the same world instead, and each interval must
/// cover the truth on at least four (a correct 95% interval fails that about
/// 2% of the time; a biased estimator almost always).
#[test]
fn ope_intervals_cover_the_true_value_of_the_greedy_policy() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 11;
    let data = synth(dir.path(), 140_000, 20_000, seed);
    let run = dir.path().join("run");
    train(
        &data,
        &data.join("exposures/part-0000[01].parquet"),
        &run,
        &[],
    );
    let checkpoint = run.join("checkpoint");

    let mut covered: std::collections::BTreeMap<String, usize> = Default::default();
    let mut widths = Vec::new();
    for part in 2..7 {
        let logs = data.join(format!("exposures/part-{part:05}.parquet"));
        let (true_conversion, true_value) = greedy_truth(dir.path(), &checkpoint, &logs, seed);
        let output = run_ok(
            upsell()
                .args([
                    "ope",
                    "--policy",
                    "greedy",
                    "--bootstrap",
                    "300",
                    "--checkpoint",
                ])
                .arg(&checkpoint)
                .arg("--logs")
                .arg(&logs),
        );
        let ope = last_json(&output);
        eprintln!(
            "part {part}: true conversion {true_conversion:.4}, true value {true_value:.4}\n{ope}"
        );
        assert_eq!(ope["rows"], 20_000);
        assert!(ope["matched_rows"].as_u64().unwrap() > 200, "{ope}");
        for (reward, truth) in [("conversion", true_conversion), ("value", true_value)] {
            for estimator in ["doubly_robust", "snips"] {
                let e = &ope[reward][estimator];
                let (low, high) = (
                    e["ci_low"].as_f64().unwrap(),
                    e["ci_high"].as_f64().unwrap(),
                );
                *covered.entry(format!("{reward} {estimator}")).or_default() +=
                    usize::from(low <= truth && truth <= high);
                if reward == "conversion" && estimator == "doubly_robust" {
                    widths.push((high - low) / truth);
                }
            }
        }
        // The model's policy beats the logging policy it learned from.
        let logged = ope["conversion"]["logging_policy"]["estimate"]
            .as_f64()
            .unwrap();
        assert!(
            true_conversion > logged,
            "{true_conversion} vs logged {logged}"
        );
    }
    for (what, hits) in &covered {
        assert!(
            *hits >= 4,
            "the {what} interval covered the truth on {hits} of 5 logs"
        );
    }
    // The intervals are informative: narrower than the value itself.
    assert!(
        widths.iter().all(|w| *w < 1.0),
        "relative widths {widths:?}"
    );
}

#[test]
fn ope_refuses_logs_without_propensities() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 4_000, 4_000, 5);
    let run = dir.path().join("run");
    train(&data, &data.join("exposures"), &run, &["train.epochs=1"]);
    let mut frame = read_parquet(&data.join("exposures/part-00000.parquet"));
    let _ = frame.drop_in_place("propensity").unwrap();
    let logs = dir.path().join("no-propensity.parquet");
    ParquetWriter::new(std::fs::File::create(&logs).unwrap())
        .finish(&mut frame)
        .unwrap();
    let stderr = run_fails(
        upsell()
            .args(["ope", "--checkpoint"])
            .arg(run.join("checkpoint"))
            .arg("--logs")
            .arg(&logs),
        2,
    );
    assert!(
        stderr.contains("no-propensity.parquet") && stderr.contains("\"propensity\""),
        "{stderr}"
    );
}

#[test]
fn mmoe_uncertainty_weighting_and_ipw_train() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 30_000, 30_000, 6);
    let summary = train(
        &data,
        &data.join("exposures"),
        &dir.path().join("run"),
        &[
            "model.sharing=\"mmoe\"",
            "model.experts=3",
            "model.layer_norm=true",
            "model.plan_uses_offer=true",
            "train.task_weighting=\"uncertainty\"",
            "train.ipw=true",
            "train.ipw_clip=10",
        ],
    );
    let best = &summary["best"];
    let weights = best["task_weights"]
        .as_array()
        .expect("learned task weights");
    assert_eq!(weights.len(), 2);
    // Learned weights moved away from their start (exp(0) = 1).
    assert!(
        weights
            .iter()
            .any(|w| (w.as_f64().unwrap() - 1.0).abs() > 1e-3),
        "{weights:?}"
    );
    assert!(
        best["valid_conversion_auc"].as_f64().unwrap() > 0.6,
        "{summary}"
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("run/checkpoint/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["network"]["experts"], 3);

    // The few-row scoring path agrees with burn's on this architecture.
    let scorer = upsell::Scorer::load(dir.path().join("run/checkpoint")).unwrap();
    let frame = read_parquet(&data.join("exposures/part-00000.parquet")).head(Some(20));
    let pre = &scorer.manifest().preprocessor;
    let features =
        upsell::offline::score::input_features(Path::new("rows"), pre, &frame, 0).unwrap();
    let all = scorer.score_features(&features);
    let width = all.convert_width();
    for row in 0..20 {
        let one = scorer.score_features(&features.take(&[row]));
        for (a, b) in one
            .p_convert
            .iter()
            .zip(&all.p_convert[row * width..(row + 1) * width])
        {
            assert!((a - b).abs() < 1e-5, "row {row}: {a} vs {b}");
        }
        for (a, b) in one.p_plan.iter().zip(&all.p_plan[row * 6..(row + 1) * 6]) {
            assert!((a - b).abs() < 1e-5, "row {row}: {a} vs {b}");
        }
    }

    // Without offers, every product is scored, but what a buyer takes
    // depends on the offer, so there is no plan distribution.
    let mut without = frame.drop("offer").unwrap();
    let input = dir.path().join("no-offers.parquet");
    ParquetWriter::new(std::fs::File::create(&input).unwrap())
        .finish(&mut without)
        .unwrap();
    let output = dir.path().join("no-offers-scores.parquet");
    run_ok(
        upsell()
            .args(["score", "--checkpoint"])
            .arg(dir.path().join("run/checkpoint"))
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output),
    );
    let scored = read_parquet(&output);
    let names: Vec<String> = scored
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(scored.height(), 20);
    assert!(names.iter().any(|n| n == "p_convert__family"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("p_plan")), "{names:?}");

    // IPW without a propensity column is refused before any work.
    let output = upsell()
        .args([
            "train",
            "--set",
            "train.ipw=true",
            "--set",
            "columns.propensity=\"\"",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_sweep_runs_resumes_and_ranks_its_trials() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 3_000, 3_000, 8);
    let out = dir.path().join("sweep");
    let sweep = || {
        let mut command = upsell();
        command
            .arg("sweep")
            .arg("--config")
            .arg(data.join("config.toml"))
            .args([
                "--set",
                "train.epochs=1",
                "--set",
                "model.hidden=[16]",
                "--set",
                "model.tower=[8]",
                "--set",
                "train.threads=1",
                "--grid",
                "train.lr=0.0005,0.005",
                "--grid",
                "model.embedding_dim=4,8",
                "--parallel",
                "2",
                "--metric",
                "best.valid_conversion_auc",
                "--out",
            ])
            .arg(&out);
        command
    };
    let first = last_json(&run_ok(&mut sweep()));
    assert_eq!(first["trials"], 4, "{first}");

    // Interrupt: forget one finished trial's result, as if the sweep had
    // been killed while it ran; the rerun trains only that one.
    let results = out.join("results");
    let mut finished: Vec<PathBuf> = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    finished.sort();
    assert_eq!(finished.len(), 4);
    std::fs::remove_file(&finished[0]).unwrap();
    let second = last_json(&run_ok(&mut sweep()));
    assert_eq!(second["skipped"], 3, "{second}");
    assert_eq!(second["finished"], 1, "{second}");

    let csv = std::fs::read_to_string(out.join("leaderboard.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let metric = headers
        .iter()
        .position(|h| h == "best.valid_conversion_auc")
        .unwrap_or_else(|| panic!("{headers:?}"));
    let values: Vec<f64> = reader
        .records()
        .map(|r| r.unwrap()[metric].parse().unwrap())
        .collect();
    assert_eq!(values.len(), 4);
    assert!(
        values.windows(2).all(|w| w[0] >= w[1]),
        "AUC descending: {values:?}"
    );
    assert!(
        std::fs::read_to_string(out.join("leaderboard.md"))
            .unwrap()
            .contains("max")
    );

    // The config file changed: its trials are new ones, not the old
    // results under the same overrides.
    let config = data.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let edited: String = text
        .lines()
        .map(|line| match line.starts_with("min_count") {
            true => "min_count = 2\n".to_string(),
            false => format!("{line}\n"),
        })
        .collect();
    assert_ne!(edited, text);
    std::fs::write(&config, edited).unwrap();
    let third = last_json(&run_ok(&mut sweep()));
    assert_eq!(third["skipped"], 0, "{third}");
    assert_eq!(third["finished"], 4, "{third}");

    // A misspelt grid key fails before any trial starts, naming the trial.
    let typo = dir.path().join("typo");
    let stderr = crate::common::run_fails(
        upsell()
            .args(["sweep", "--grid", "train.lrate=0.1,0.2", "--out"])
            .arg(&typo),
        2,
    );
    assert!(
        stderr.contains("train.lrate=0.1") && stderr.contains("lrate"),
        "{stderr}"
    );
    assert!(!typo.join("trials").exists(), "a trial ran");
}

#[test]
fn a_search_over_ranges_prunes_bad_trials_early() {
    let dir = tempfile::tempdir().unwrap();
    // The default network on one thread: epochs of a few hundred
    // milliseconds, so the sweep sees each one before the next ends.
    let data = synth(dir.path(), 20_000, 20_000, 9);
    let out = dir.path().join("search");
    let summary = last_json(&run_ok(
        upsell()
            .arg("sweep")
            .arg("--config")
            .arg(data.join("config.toml"))
            .args([
                "--set",
                "train.epochs=4",
                "--set",
                "train.threads=1",
                "--grid",
                "train.lr=loguniform(0.00001,0.03)",
                "--grid",
                "model.embedding_dim=int(2,8)",
                "--trials",
                "5",
                "--seed",
                "1",
                "--prune",
                "asha",
                "--out",
            ])
            .arg(&out),
    ));
    assert_eq!(summary["trials"], 5, "{summary}");
    let pruned = summary["pruned"].as_u64().unwrap();
    assert!(pruned >= 1, "no trial was stopped early: {summary}");
    assert_eq!(summary["failed"], 0, "{summary}");

    let csv = std::fs::read_to_string(out.join("leaderboard.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let status = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "status")
        .unwrap();
    let run_dir = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "run_dir")
        .unwrap();
    let lr = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "train.lr")
        .unwrap();
    let mut stopped = 0;
    for record in reader.records() {
        let record = record.unwrap();
        let value: f64 = record[lr].parse().unwrap();
        assert!((0.00001..=0.03).contains(&value), "{value}");
        let epochs = std::fs::read_to_string(Path::new(&record[run_dir]).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count();
        if record[status].starts_with("pruned at epoch") {
            stopped += 1;
            assert!(epochs < 4, "a pruned trial ran {epochs} epochs");
        }
    }
    assert_eq!(stopped as u64, pruned);
    // The best trial ran to its end.
    let best = Path::new(summary["best"]["run_dir"].as_str().unwrap());
    assert!(best.join("checkpoint").is_dir(), "{summary}");

    // A misspelt key, or a range a key cannot take, fails before any trial.
    for (grid, named) in [
        ("train.lrate=loguniform(0.001,0.01)", "lrate"),
        ("train.epochs=uniform(1,3)", "train.epochs"),
    ] {
        let typo = dir.path().join("typo");
        let stderr = run_fails(
            upsell()
                .arg("sweep")
                .arg("--config")
                .arg(data.join("config.toml"))
                .args(["--grid", grid, "--trials", "3", "--out"])
                .arg(&typo),
            2,
        );
        assert!(stderr.contains(named), "{stderr}");
        assert!(!typo.join("trials").exists(), "a trial ran");
    }
}

/// A sweep killed in the middle of a trial, trial included, resumes that
/// trial from its saved state when rerun, and ends where an uninterrupted
/// trial ends.
#[cfg(unix)]
#[test]
fn a_killed_sweep_resumes_its_half_finished_trial() {
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 20_000, 20_000, 4);
    let args = |out: &Path| {
        let mut args: Vec<std::ffi::OsString> = vec!["sweep".into(), "--config".into()];
        args.push(data.join("config.toml").into());
        for arg in [
            "--set",
            "train.epochs=6",
            "--set",
            "train.threads=1",
            "--set",
            "train.checkpoint_every_steps=5",
            "--grid",
            "train.lr=0.002",
            "--out",
        ] {
            args.push(arg.into());
        }
        args.push(out.into());
        args
    };
    let sweep = |out: &Path| {
        let mut command = upsell();
        command.args(args(out));
        command
    };
    let whole = last_json(&run_ok(&mut sweep(&dir.path().join("whole"))));

    // The sweep and its trial share a process group; kill both once the
    // trial has finished two of its six epochs.
    let out = dir.path().join("killed");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("upsell"))
        .args(args(&out))
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let epochs_done = || {
        let Ok(trials) = std::fs::read_dir(out.join("trials")) else {
            return 0;
        };
        trials
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("metrics.jsonl")).ok())
            .map(|text| text.lines().count())
            .max()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while epochs_done() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no epoch within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    let interrupted = epochs_done();
    assert!(interrupted < 6, "the trial finished before the kill");

    let resumed = last_json(&run_ok(&mut sweep(&out)));
    assert_eq!(resumed["finished"], 1, "{resumed}");
    let log = std::fs::read_dir(out.join("logs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains(" train --resume "), "{log}");
    assert_eq!(epochs_done(), 6);
    // Resuming is exact: the same best validation loss as the whole run.
    assert_eq!(resumed["best"]["metric"], whole["best"]["metric"]);
}
