//! Bad input: each case is a clear error naming the file and column, a
//! non-zero exit code, and nothing written.

use std::path::Path;

use crate::common::{files_under, upsell, write};

const CONFIG: &str = r#"
[data]
train = "train.csv"
valid = "train.csv"

[columns]
numeric = ["hours"]
categorical = ["country"]
offer = "offer"
converted = "converted"
propensity = "propensity"

[products]
pro = 10.0
basic = 5.0
"#;

const GOOD: &str = "\
hours,country,offer,converted,propensity
1.5,se,pro,1,0.5
2.5,de,basic,0,0.25
";

/// Runs `upsell prepare --out` on `train.csv` holding `data` and checks the
/// exit code, that stderr has every expected fragment, and that nothing new
/// was written.
fn assert_rejected(data: Option<&[u8]>, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "exp.toml", CONFIG);
    if let Some(bytes) = data {
        std::fs::write(dir.path().join("train.csv"), bytes).unwrap();
    }
    let before = files_under(dir.path());
    let output = upsell()
        .args(["prepare", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("preprocessor.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Bad input, an unreadable file included, exits 2.
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for fragment in expected {
        assert!(
            stderr.contains(fragment),
            "missing {fragment:?} in: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "printed once: {stderr}"
    );
    assert_eq!(files_under(dir.path()), before, "nothing may be written");
}

#[test]
fn good_input_is_accepted_and_writes_the_preprocessor() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "exp.toml", CONFIG);
    write(dir.path(), "train.csv", GOOD);
    let out = dir.path().join("preprocessor.json");
    upsell()
        .args(["prepare", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let pre: upsell::preprocess::Preprocessor =
        serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    assert_eq!(pre.numeric[0].column, "hours");
}

#[test]
fn missing_column() {
    let data = GOOD.replace("country", "land");
    assert_rejected(
        Some(data.as_bytes()),
        &[
            "train.csv",
            "column \"country\" (columns.categorical) is missing",
        ],
    );
}

#[test]
fn wrong_type() {
    let data = GOOD.replace("1.5", "lots").replace("2.5", "few");
    assert_rejected(
        Some(data.as_bytes()),
        &[
            "train.csv",
            "column \"hours\" (columns.numeric) has type str",
            "expected a number",
        ],
    );
}

#[test]
fn empty_file() {
    assert_rejected(Some(b""), &["train.csv", "empty"]);
}

#[test]
fn header_only_file() {
    let header = GOOD.lines().next().unwrap();
    assert_rejected(
        Some(format!("{header}\n").as_bytes()),
        &["train.csv", "empty"],
    );
}

#[test]
fn unreadable_file() {
    assert_rejected(None, &["train.csv", "No such file"]);
}

#[test]
fn corrupt_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "exp.toml",
        &CONFIG.replace("train.csv", "train.parquet"),
    );
    write(dir.path(), "train.parquet", "this is not parquet");
    let output = upsell()
        .args(["prepare", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("train.parquet"), "{stderr}");
}

#[test]
fn null_label() {
    let data = GOOD.replace("1.5,se,pro,1,", "1.5,se,pro,,");
    assert_rejected(
        Some(data.as_bytes()),
        &[
            "train.csv",
            "1 of 2 rows are unusable",
            "null label",
            "max_invalid_fraction",
        ],
    );
}

#[test]
fn label_that_is_not_zero_or_one() {
    let data = GOOD.replace("2.5,de,basic,0,", "2.5,de,basic,2,");
    assert_rejected(
        Some(data.as_bytes()),
        &[
            "train.csv",
            "column \"converted\", row 2",
            "label 2 is not 0 or 1",
        ],
    );
    let data = GOOD.replace("2.5,de,basic,0,", "2.5,de,basic,maybe,");
    assert_rejected(
        Some(data.as_bytes()),
        &["column \"converted\", row 2", "\"maybe\""],
    );
}

#[test]
fn propensity_outside_zero_one() {
    for bad in ["1.5", "0", "-0.2"] {
        let data = GOOD.replace("0.25", bad);
        assert_rejected(
            Some(data.as_bytes()),
            &[
                "train.csv",
                "column \"propensity\", row 2",
                "outside (0, 1]",
            ],
        );
    }
}

#[test]
fn nan_and_infinite_numbers() {
    for bad in ["NaN", "inf"] {
        let data = GOOD.replace("2.5", bad);
        assert_rejected(
            Some(data.as_bytes()),
            &["column \"hours\", row 2", "not a finite number"],
        );
    }
}

#[test]
fn unknown_product_in_the_offer_column() {
    let data = GOOD.replace("basic", "platinum");
    assert_rejected(
        Some(data.as_bytes()),
        &["column \"offer\", row 2", "\"platinum\" is not a product"],
    );
}

#[test]
fn a_directory_without_data_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let config = write(
        dir.path(),
        "exp.toml",
        &CONFIG.replace("valid = \"train.csv\"\n", ""),
    );
    let output = upsell()
        .args(["prepare", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("empty"))
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no data files"), "{stderr}");
}

#[test]
fn synth_refuses_a_non_empty_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "keep.txt", "precious");
    let output = upsell()
        .args(["synth", "--rows", "100", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        files_under(dir.path()),
        vec![Path::new("keep.txt").to_path_buf()]
    );
}
