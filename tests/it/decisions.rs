//! Decisions against ground truth: `upsell eval --truth` and its arithmetic
//! on hand-made truth tables.

use std::path::Path;

use polars::prelude::{CsvReadOptions, SerReader};
use serde_json::Value;

use crate::common::{last_json, recommend_demo, repo, run_fails, run_ok, upsell};

/// The demo checkpoint's products and context values, in its order.
fn demo_candidates() -> (Vec<String>, Vec<String>) {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("checkpoints/demo/manifest.json")).unwrap(),
    )
    .unwrap();
    let pre = &manifest["preprocessor"];
    let products = pre["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let mut contexts = vec![String::new()];
    for column in pre["context"].as_array().unwrap() {
        let tokens: Vec<&str> = column["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        contexts = contexts
            .iter()
            .flat_map(|c| tokens.iter().map(move |t| format!("{c}__{t}")))
            .collect();
    }
    (products, contexts)
}

/// The demo policy's greedy choice per row of `rows.csv`, as the truth's
/// column suffix `product__surface__message`.
fn demo_choices(dir: &Path) -> Vec<String> {
    let out = dir.join("decisions.csv");
    run_ok(&mut recommend_demo(&out));
    let frame = CsvReadOptions::default()
        .try_into_reader_with_file_path(Some(out))
        .unwrap()
        .finish()
        .unwrap();
    let text = |name: &str| -> Vec<String> {
        let column = frame.column(name).unwrap();
        column
            .str()
            .unwrap()
            .iter()
            .map(|v| v.unwrap().to_string())
            .collect()
    };
    let (offers, surfaces, messages) = (text("offer"), text("surface"), text("message"));
    (0..offers.len())
        .map(|i| format!("{}__{}__{}", offers[i], surfaces[i], messages[i]))
        .collect()
}

/// The truth's `value__<product><context>` columns for the demo, but
/// `skip`.
fn value_columns(skip: Option<&str>) -> Vec<String> {
    let (products, contexts) = demo_candidates();
    products
        .iter()
        .flat_map(|p| contexts.iter().map(move |c| format!("value__{p}{c}")))
        .filter(|name| Some(name.as_str()) != skip.map(|s| format!("value__{s}")).as_deref())
        .collect()
}

/// A truth CSV for the demo rows: `value(row, column)` in every column.
fn write_truth(path: &Path, rows: usize, columns: &[String], value: impl Fn(usize, &str) -> f64) {
    let mut text = columns.join(",");
    text.push('\n');
    for row in 0..rows {
        let line: Vec<String> = columns.iter().map(|c| value(row, c).to_string()).collect();
        text.push_str(&line.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn eval_truth(truth: &Path) -> Value {
    let demo = repo().join("checkpoints/demo");
    let output = run_ok(
        upsell()
            .args(["eval", "--checkpoint"])
            .arg(&demo)
            .arg("--data")
            .arg(demo.join("rows.csv"))
            .arg("--truth")
            .arg(truth),
    );
    let line: Value = serde_json::from_slice(&output.stdout).unwrap();
    line["decisions"].clone()
}

#[test]
fn eval_scores_decisions_against_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let choices = demo_choices(dir.path());
    let rows = choices.len();
    let candidates = {
        let (products, contexts) = demo_candidates();
        (products.len() * contexts.len()) as f64
    };

    // Worth 1 where the policy chose, 0 elsewhere: the policy is the oracle.
    let truth = dir.path().join("oracle.csv");
    let columns = value_columns(None);
    let chosen = |row: usize, column: &str| column == format!("value__{}", choices[row]);
    write_truth(&truth, rows, &columns, |row, c| {
        f64::from(u8::from(chosen(row, c)))
    });
    let d = eval_truth(&truth);
    assert_eq!(d["rows"], rows);
    assert_eq!(d["policy_value"], 1.0);
    assert_eq!(d["oracle_value"], 1.0);
    assert!((d["random_value"].as_f64().unwrap() - 1.0 / candidates).abs() < 1e-12);
    assert!((d["share_of_lift"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(
        d["bayes_value"],
        Value::Null,
        "no Bayes columns, no Bayes policy"
    );
    assert_eq!(d["ineligible_rate"], 0.0);
    // Every offer adds 1, whatever the policy expected of it, and the groups
    // go from its least to its most promising offers.
    let bins = d["value_calibration"].as_array().unwrap();
    let offers: u64 = bins.iter().map(|b| b["offers"].as_u64().unwrap()).sum();
    assert_eq!(offers, rows as u64);
    assert!(bins.iter().all(|b| b["actual"] == 1.0));
    let predicted: Vec<f64> = bins
        .iter()
        .map(|b| b["predicted"].as_f64().unwrap())
        .collect();
    assert!(predicted.windows(2).all(|w| w[0] <= w[1]), "{predicted:?}");

    // The same, but the truth's rules forbid every chosen product: such an
    // offer is not made, and scores as no offer (worth 0 here).
    let truth = dir.path().join("forbidden.csv");
    let (products, _) = demo_candidates();
    let mut with_rules = columns.clone();
    with_rules.extend(products.iter().map(|p| format!("eligible__{p}")));
    write_truth(&truth, rows, &with_rules, |row, c| {
        match c.strip_prefix("eligible__") {
            Some(product) => {
                f64::from(u8::from(!choices[row].starts_with(&format!("{product}__"))))
            }
            None => f64::from(u8::from(chosen(row, c))),
        }
    });
    let d = eval_truth(&truth);
    assert_eq!(d["ineligible_rate"], 1.0);
    assert_eq!(d["policy_value"], 0.0);

    // Worth 0 where the policy chose and 2 at one other candidate.
    let other = |row: usize| {
        if choices[row].starts_with("duo__") {
            "family__push__discount"
        } else {
            "duo__push__discount"
        }
    };
    let truth = dir.path().join("worst.csv");
    write_truth(&truth, rows, &columns, |row, c| {
        if c == format!("value__{}", other(row)) {
            2.0
        } else {
            0.0
        }
    });
    let d = eval_truth(&truth);
    let random = 2.0 / candidates;
    assert_eq!(d["policy_value"], 0.0);
    assert_eq!(d["oracle_value"], 2.0);
    let expected = (0.0 - random) / (2.0 - random);
    assert!((d["share_of_lift"].as_f64().unwrap() - expected).abs() < 1e-12);
}

#[test]
fn a_truth_that_does_not_match_the_data_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let demo = repo().join("checkpoints/demo");
    let eval = |truth: &Path| {
        let mut command = upsell();
        command
            .args(["eval", "--checkpoint"])
            .arg(&demo)
            .arg("--data")
            .arg(demo.join("rows.csv"))
            .arg("--truth")
            .arg(truth);
        run_fails(&mut command, 2)
    };
    let rows = demo_choices(dir.path()).len();

    let short = dir.path().join("short.csv");
    write_truth(&short, rows - 1, &value_columns(None), |_, _| 0.0);
    let stderr = eval(&short);
    assert!(
        stderr.contains("short.csv") && stderr.contains("rows"),
        "{stderr}"
    );

    let missing = dir.path().join("missing.csv");
    let columns = value_columns(Some("family__push__discount"));
    write_truth(&missing, rows, &columns, |_, _| 0.0);
    let stderr = eval(&missing);
    assert!(
        stderr.contains("missing.csv") && stderr.contains("value__family__push__discount"),
        "{stderr}"
    );
}

/// LightGBM's share of the achievable lift on the `default` world of seed
/// 21 with 20,000 training rows, mean over its seeds 1-5:
/// `scripts/decision-quality.sh 20000 5 21 default`, in
/// benches/decision-quality/20000/default.md.
const LIGHTGBM_SHARE_20K: f64 = 0.7006;

/// The default config's decisions must stay at least as good as LightGBM's
/// on the benchmark's small tier: the same world, rows and held-out users as
/// `scripts/decision-quality.sh 20000 5 21 default`, training seed 1.
#[test]
fn default_decisions_beat_lightgbm_on_a_small_world() {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("world");
    run_ok(
        upsell()
            .args([
                "synth",
                "--rows",
                "70000",
                "--rows-per-file",
                "50000",
                "--seed",
                "21",
            ])
            .args(["--world", "default", "--out"])
            .arg(&world),
    );
    let run = dir.path().join("run");
    run_ok(
        upsell()
            .arg("train")
            .arg("--config")
            .arg(world.join("config.toml"))
            .arg("--data")
            .arg(world.join("exposures/part-00001.parquet"))
            .arg("--out")
            .arg(&run)
            .args(["--set", "seed=1", "--set", "train.threads=2"]),
    );
    let output = run_ok(
        upsell()
            .args(["eval", "--checkpoint"])
            .arg(run.join("checkpoint"))
            .arg("--data")
            .arg(world.join("exposures/part-00000.parquet"))
            .arg("--truth")
            .arg(world.join("truth/part-00000.parquet")),
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let share = report["decisions"]["share_of_lift"].as_f64().unwrap();
    eprintln!("share of the achievable lift: upsell {share:.4}, LightGBM {LIGHTGBM_SHARE_20K:.4}");
    assert!(
        share >= LIGHTGBM_SHARE_20K,
        "upsell's decisions reach {share:.4} of the achievable lift, LightGBM's {LIGHTGBM_SHARE_20K:.4}"
    );
}

/// Closing the loop: `recommend --exposures` logs each decision as an
/// exposure row; with outcomes joined, `train` learns from it and `ope`
/// evaluates a policy on it.
#[test]
fn logged_decisions_round_trip_into_train_and_ope() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_ok(
        upsell()
            .args(["synth", "--rows", "3000", "--seed", "5", "--out"])
            .arg(dir.join("logs")),
    );
    let config = dir.join("logs/config.toml");
    run_ok(
        upsell()
            .args(["train", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(dir.join("run"))
            .args(["--set", "train.epochs=1"]),
    );
    let checkpoint = dir.join("run/checkpoint");
    run_ok(
        upsell()
            .args(["recommend", "--policy", "epsilon:0.3", "--checkpoint"])
            .arg(&checkpoint)
            .arg("--input")
            .arg(dir.join("logs/exposures"))
            .arg("--output")
            .arg(dir.join("decisions.csv"))
            .arg("--exposures")
            .arg(dir.join("logged.csv")),
    );
    let logged = std::fs::read_to_string(dir.join("logged.csv")).unwrap();
    let mut lines = logged.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for column in [
        "user_id",
        "tenure_months",
        "offer",
        "surface",
        "message",
        "propensity",
        "exposure_time",
        "model_version",
    ] {
        assert!(header.contains(&column), "{column} missing from {header:?}");
    }
    assert!(!header.contains(&"converted"), "outcomes are joined later");
    let offer = header.iter().position(|h| *h == "offer").unwrap();
    let propensity = header.iter().position(|h| *h == "propensity").unwrap();
    // The outcomes, joined: every seventh user bought what was offered.
    let mut joined = format!("{},converted,plan,value\n", header.join(","));
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        let p: f64 = cells[propensity].parse().unwrap();
        assert!(p > 0.0 && p <= 1.0, "{line}");
        let bought = i % 7 == 0;
        let plan = if bought { cells[offer] } else { "" };
        let value = if bought { "9.99" } else { "0" };
        joined += &format!("{line},{},{plan},{value}\n", u8::from(bought));
    }
    std::fs::write(dir.join("joined.csv"), joined).unwrap();
    let trained = run_ok(
        upsell()
            .args(["train", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(dir.join("joined.csv"))
            .arg("--out")
            .arg(dir.join("again"))
            .args(["--set", "train.epochs=1"]),
    );
    let summary = last_json(&trained);
    assert_eq!(summary["status"], "ok");
    assert_eq!(
        summary["train_rows"].as_u64().unwrap() + summary["valid_rows"].as_u64().unwrap(),
        3000
    );
    // Small data: batches that give an epoch 50 steps, and the summary says so.
    assert_eq!(
        summary["batch_size"].as_u64().unwrap(),
        summary["train_rows"].as_u64().unwrap().div_ceil(50)
    );
    let ope = run_ok(
        upsell()
            .args(["ope", "--checkpoint"])
            .arg(&checkpoint)
            .arg("--logs")
            .arg(dir.join("joined.csv")),
    );
    let ope: Value = serde_json::from_str(String::from_utf8(ope.stdout).unwrap().trim()).unwrap();
    assert_eq!(ope["rows"], 3000, "{ope}");
}
