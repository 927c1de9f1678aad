//! Checkpoints: the committed golden checkpoint, round trips, scoring
//! parity between the lean scorer and the training pipeline, and corrupt
//! checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use upsell::Scorer;
use upsell::preprocess::Value;

use crate::common::{repo, run_ok, upsell, write};

fn demo() -> PathBuf {
    repo().join("checkpoints/demo")
}

fn read_csv(path: &Path) -> DataFrame {
    CsvReadOptions::default()
        .with_has_header(true)
        .map_parse_options(|o| o.with_try_parse_dates(true))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .unwrap()
        .finish()
        .unwrap()
}

fn column_f64(frame: &DataFrame, name: &str) -> Vec<f64> {
    frame
        .column(name)
        .unwrap()
        .cast(&DataType::Float64)
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

/// Converts a frame's rows into scorer records.
fn records(frame: &DataFrame) -> Vec<HashMap<String, Value<'_>>> {
    let mut rows: Vec<HashMap<String, Value<'_>>> = vec![HashMap::new(); frame.height()];
    for column in frame.columns() {
        let name = column.name().to_string();
        match column.dtype() {
            DataType::String => {
                for (row, v) in column.str().unwrap().iter().enumerate() {
                    rows[row].insert(name.clone(), v.map_or(Value::Null, Value::Text));
                }
            }
            _ => {
                let values = column.cast(&DataType::Float64).unwrap();
                for (row, v) in values.f64().unwrap().iter().enumerate() {
                    rows[row].insert(name.clone(), v.map_or(Value::Null, Value::Number));
                }
            }
        }
    }
    rows
}

#[test]
fn the_golden_checkpoint_still_scores_its_stored_rows() {
    scores_its_stored_rows(&demo());
}

/// A checkpoint of format 1 (before numeric bins), kept to show that
/// serving reads what older upsell wrote.
#[test]
fn a_format_1_checkpoint_still_scores_its_stored_rows() {
    let dir = repo().join("tests/data/checkpoint-format-1");
    let manifest = upsell::scoring::checkpoint::read_manifest(&dir).unwrap();
    assert_eq!(manifest.format_version, 1);
    scores_its_stored_rows(&dir);
}

/// Scores the checkpoint's `rows.csv` and compares with its `expected.csv`.
fn scores_its_stored_rows(dir: &Path) {
    let scorer = Scorer::load(dir).unwrap();
    let rows = read_csv(&dir.join("rows.csv"));
    let expected = read_csv(&dir.join("expected.csv"));
    let scores = scorer.score_records(&records(&rows)).unwrap();
    let products = scores.products.clone();
    assert_eq!(products.len(), 6);
    let mut checked = 0;
    for (j, product) in products.iter().enumerate() {
        let want = column_f64(&expected, &format!("p_convert__{product}"));
        let width = scores.convert_width();
        for (row, w) in want.iter().enumerate() {
            let got = f64::from(scores.p_convert[row * width + j]);
            assert!(
                (got - w).abs() < 1e-5,
                "p_convert__{product} row {row}: {got} vs {w}"
            );
            checked += 1;
        }
        let want = column_f64(&expected, &format!("p_plan__{product}"));
        for (row, w) in want.iter().enumerate() {
            let got = f64::from(scores.p_plan[row * products.len() + j]);
            assert!(
                (got - w).abs() < 1e-5,
                "p_plan__{product} row {row}: {got} vs {w}"
            );
        }
    }
    let want = column_f64(&expected, "p_convert");
    for (row, w) in want.iter().enumerate() {
        assert!((f64::from(scores.p_offer[row]) - w).abs() < 1e-5);
    }
    assert!(checked >= 6 * 8);
}

#[test]
fn inspect_prints_the_manifest() {
    let output = upsell()
        .args(["inspect", "--checkpoint"])
        .arg(demo())
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for fragment in [
        "checkpoint format 3",
        "network: 3 member(s)",
        "burn 0.22.1",
        "premium_individual",
        "region_id",
        "sha256",
    ] {
        assert!(text.contains(fragment), "{fragment}: {text}");
    }
    let output = upsell()
        .args(["inspect", "--json", "--checkpoint"])
        .arg(demo())
        .output()
        .unwrap();
    let manifest: upsell::scoring::checkpoint::Manifest =
        serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        manifest.format_version,
        upsell::scoring::checkpoint::FORMAT_VERSION
    );
}

#[test]
fn the_score_command_matches_the_scorer_in_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    for ext in ["csv", "parquet"] {
        let out = tmp.path().join(format!("scores.{ext}"));
        run_ok(
            upsell()
                .args(["score", "--checkpoint"])
                .arg(demo())
                .arg("--input")
                .arg(demo().join("rows.csv"))
                .arg("--output")
                .arg(&out),
        );
        let scored = match ext {
            "csv" => read_csv(&out),
            _ => ParquetReader::new(std::fs::File::open(&out).unwrap())
                .finish()
                .unwrap(),
        };
        let expected = read_csv(&demo().join("expected.csv"));
        assert_eq!(scored.height(), expected.height());
        let ids: Vec<String> = scored
            .column("user_id")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .flatten()
            .map(str::to_string)
            .collect();
        let rows = read_csv(&demo().join("rows.csv"));
        let input_ids: Vec<String> = rows
            .column("user_id")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .flatten()
            .map(str::to_string)
            .collect();
        assert_eq!(ids, input_ids, "input order and ids are kept");
        for name in expected.get_column_names() {
            if name.as_str() == "user_id" {
                continue;
            }
            let got = column_f64(&scored, name);
            let want = column_f64(&expected, name);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{name}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn the_scorer_and_the_training_pipeline_agree() {
    let scorer = Scorer::load(demo()).unwrap();
    let manifest = scorer.manifest();
    let config =
        upsell::Config::from_toml(&manifest.config, "manifest", Path::new(""), &[]).unwrap();
    let rows = read_csv(&demo().join("rows.csv"));
    let table = upsell::data::from_frame(Path::new("rows.csv"), rows.clone(), &config).unwrap();
    let features = upsell::data::features(&manifest.preprocessor, &table.frame).unwrap();
    let from_pipeline = scorer.score_features(&features);
    let from_records = scorer.score_records(&records(&rows)).unwrap();
    assert_eq!(from_pipeline, from_records);
}

fn broken_copy(tmp: &Path, change: impl FnOnce(&Path)) -> PathBuf {
    let dir = tmp.join("ckpt");
    std::fs::create_dir(&dir).unwrap();
    for name in ["manifest.json", "model.safetensors"] {
        std::fs::copy(demo().join(name), dir.join(name)).unwrap();
    }
    change(&dir);
    dir
}

/// `upsell score` of `input` with the demo checkpoint.
fn score_demo(input: &Path, output: &Path) -> std::process::Output {
    upsell()
        .args(["score", "--checkpoint"])
        .arg(demo())
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .output()
        .unwrap()
}

fn score_error(checkpoint: &Path) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let output = upsell()
        .args(["score", "--checkpoint"])
        .arg(checkpoint)
        .arg("--input")
        .arg(demo().join("rows.csv"))
        .arg("--output")
        .arg(tmp.path().join("out.csv"))
        .output()
        .unwrap();
    assert!(!tmp.path().join("out.csv").exists(), "nothing written");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap(), stderr)
}

/// Rewrites the copy's manifest through `edit`.
fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

/// Every class of broken checkpoint: exit 2, one error line holding the
/// expected fragments, no panic, nothing written.
#[test]
fn every_class_of_broken_checkpoint_is_a_clear_error() {
    type Break = Box<dyn FnOnce(&Path)>;
    let cases: Vec<(&str, Break, Vec<&str>)> = vec![
        (
            "tampered weights",
            Box::new(|dir| {
                let path = dir.join("model.safetensors");
                let mut bytes = std::fs::read(&path).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 0x40;
                std::fs::write(&path, bytes).unwrap();
            }),
            vec!["model.safetensors", "checksum mismatch"],
        ),
        (
            "truncated weights",
            Box::new(|dir| {
                let path = dir.join("model.safetensors");
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }),
            vec!["truncated"],
        ),
        (
            "missing manifest",
            Box::new(|dir| std::fs::remove_file(dir.join("manifest.json")).unwrap()),
            vec!["manifest.json is missing"],
        ),
        (
            "newer format",
            Box::new(|dir| {
                edit_manifest(dir, |m| {
                    m["format_version"] = 99.into();
                    m["a_field_from_the_future"] = true.into();
                })
            }),
            vec!["format version 99 is newer"],
        ),
        (
            "manifest that is not JSON",
            Box::new(|dir| {
                std::fs::write(dir.join("manifest.json"), "{\"format_version\": 1,").unwrap()
            }),
            vec!["manifest.json", "invalid manifest"],
        ),
        (
            "network that does not match the weights",
            Box::new(|dir| {
                edit_manifest(dir, |m| {
                    m["network"]["hidden"] = serde_json::json!([64, 16])
                })
            }),
            vec!["manifest.json", "parameters but model.safetensors holds"],
        ),
        (
            "network that does not match the preprocessing",
            Box::new(|dir| edit_manifest(dir, |m| m["network"]["products"] = 7.into())),
            vec!["manifest.json", "7 products"],
        ),
        (
            "dropout out of range",
            Box::new(|dir| edit_manifest(dir, |m| m["network"]["dropout"] = 1.5.into())),
            vec!["manifest.json", "dropout 1.5"],
        ),
        // Issue 15, finding 8: what used to load and then panic or score
        // wrongly, and a weights path outside the checkpoint.
        (
            "no hash buckets",
            Box::new(|dir| {
                edit_manifest(dir, |m| {
                    m["preprocessor"]["hashed"][0]["buckets"] = 0.into()
                })
            }),
            vec!["manifest.json", "buckets must be at least 1"],
        ),
        (
            "a standard deviation of 0",
            Box::new(|dir| {
                edit_manifest(dir, |m| m["preprocessor"]["numeric"][0]["std"] = 0.0.into())
            }),
            vec!["manifest.json", "standard deviation"],
        ),
        (
            "weights outside the checkpoint",
            Box::new(|dir| {
                edit_manifest(dir, |m| {
                    m["weights"]["file"] = "../model.safetensors".into()
                })
            }),
            vec!["manifest.json", "plain file name"],
        ),
        (
            "weights of another size",
            Box::new(|dir| {
                let path = dir.join("model.safetensors");
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.extend_from_slice(&[0; 16]);
                std::fs::write(&path, bytes).unwrap();
            }),
            vec!["model.safetensors", "weights.bytes says"],
        ),
    ];
    for (name, breakage, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = broken_copy(tmp.path(), breakage);
        let (code, stderr) = score_error(&dir);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert_eq!(stderr.matches("error:").count(), 1, "{name}: {stderr}");
        for fragment in expected {
            assert!(
                stderr.contains(fragment),
                "{name}: missing {fragment:?} in {stderr}"
            );
        }
    }
}

#[test]
fn an_input_without_a_feature_column_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = std::fs::read_to_string(demo().join("rows.csv")).unwrap();
    let (header, body) = rows.split_once('\n').unwrap();
    let columns: Vec<&str> = header.split(',').collect();
    let drop = columns.iter().position(|c| *c == "tenure_months").unwrap();
    let keep = |line: &str| -> String {
        line.split(',')
            .enumerate()
            .filter(|(i, _)| *i != drop)
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut text = keep(header) + "\n";
    for line in body.lines() {
        text += &(keep(line) + "\n");
    }
    let input = write(tmp.path(), "rows.csv", &text);
    let output = score_demo(&input, &tmp.path().join("out.parquet"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rows.csv") && stderr.contains("\"tenure_months\""),
        "{stderr}"
    );
    assert!(!tmp.path().join("out.parquet").exists());
}

#[test]
fn rows_without_an_offer_are_scored_for_every_product() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = read_csv(&demo().join("rows.csv"));
    let mut without = rows.drop("offer").unwrap();
    let input = tmp.path().join("rows.parquet");
    ParquetWriter::new(std::fs::File::create(&input).unwrap())
        .finish(&mut without)
        .unwrap();
    let out = tmp.path().join("scores.csv");
    run_ok(
        upsell()
            .args(["score", "--checkpoint"])
            .arg(demo())
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out),
    );
    let scored = read_csv(&out);
    let expected = read_csv(&demo().join("expected.csv"));
    assert!(
        scored.column("p_convert").is_err(),
        "no offer, no p_convert"
    );
    // The demo's plan head reads the offer: without one, no plan either.
    assert!(Scorer::load(demo()).unwrap().plan_needs_offer());
    assert!(scored.column("p_plan__duo").is_err(), "no offer, no p_plan");
    let mut compared = 0;
    for name in expected.get_column_names() {
        if name.as_str() == "user_id"
            || name.as_str() == "p_convert"
            || name.starts_with("p_plan__")
        {
            continue;
        }
        compared += 1;
        for (g, w) in column_f64(&scored, name)
            .iter()
            .zip(&column_f64(&expected, name))
        {
            assert!((g - w).abs() < 1e-6, "{name}: {g} vs {w}");
        }
    }
    assert_eq!(compared, 6, "a p_convert column per product");
}

#[test]
fn an_unknown_product_in_a_scored_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = std::fs::read_to_string(demo().join("rows.csv")).unwrap();
    let input = tmp.path().join("rows.csv");
    std::fs::write(&input, rows.replace("family", "platinum")).unwrap();
    let output = score_demo(&input, &tmp.path().join("out.csv"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rows.csv")
            && stderr.contains("column \"offer\"")
            && stderr.contains("platinum"),
        "{stderr}"
    );
    assert!(!tmp.path().join("out.csv").exists());
}

/// Without a terminal, the batch commands log their progress (here only
/// the final line: a short run) on stderr, as JSON with `--log-format json`;
/// stdout keeps only the result.
#[test]
fn batch_commands_log_their_progress_when_no_one_watches_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    for command in ["score", "recommend"] {
        let output = crate::common::run_ok(
            upsell()
                .args(["--log-format", "json", command, "--checkpoint"])
                .arg(demo())
                .arg("--input")
                .arg(demo().join("rows.csv"))
                .arg("--output")
                .arg(tmp.path().join(format!("{command}.csv"))),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let done: serde_json::Value = stderr
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .find(|line| line["message"] == "done")
            .unwrap_or_else(|| panic!("{command}: {stderr}"));
        assert_eq!(done["command"], command);
        assert_eq!(done["rows"], 8);
        assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 1);
    }
    let output = crate::common::run_ok(
        upsell()
            .args(["--log-format", "json", "synth", "--rows", "3000", "--out"])
            .arg(tmp.path().join("synth")),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#""message":"done","command":"synth","rows":3000"#),
        "{stderr}"
    );
}
