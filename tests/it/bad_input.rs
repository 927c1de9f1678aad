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

/// Every class of bad data file, each with the fragments its one error line
/// must hold. `None` is a file that does not exist.
#[test]
fn every_class_of_bad_data_file_is_a_clear_error() {
    let header = GOOD.lines().next().unwrap();
    let cases: Vec<(&str, Option<String>, Vec<&str>)> = vec![
        (
            "missing column",
            Some(GOOD.replace("country", "land")),
            vec![
                "train.csv",
                "column \"country\" (columns.categorical) is missing",
            ],
        ),
        (
            "wrong type",
            Some(GOOD.replace("1.5", "lots").replace("2.5", "few")),
            vec![
                "train.csv",
                "column \"hours\" (columns.numeric) has type str",
                "expected a number",
            ],
        ),
        (
            "all-null column",
            Some(GOOD.replace("1.5", "").replace("2.5", "")),
            vec![
                "train.csv",
                "column \"hours\" (columns.numeric) is null in every row",
            ],
        ),
        (
            "NaN",
            Some(GOOD.replace("2.5", "NaN")),
            vec!["column \"hours\", row 2", "not a finite number"],
        ),
        (
            "infinite number",
            Some(GOOD.replace("2.5", "inf")),
            vec!["column \"hours\", row 2", "not a finite number"],
        ),
        (
            "null label",
            Some(GOOD.replace("1.5,se,pro,1,", "1.5,se,pro,,")),
            vec![
                "train.csv",
                "1 of 2 rows are unusable",
                "null label",
                "max_invalid_fraction",
            ],
        ),
        (
            "label 2",
            Some(GOOD.replace("2.5,de,basic,0,", "2.5,de,basic,2,")),
            vec![
                "train.csv",
                "column \"converted\", row 2",
                "label 2 is not 0 or 1",
            ],
        ),
        (
            "label that is a word",
            Some(GOOD.replace("2.5,de,basic,0,", "2.5,de,basic,maybe,")),
            vec!["column \"converted\", row 2", "\"maybe\""],
        ),
        (
            "propensity above 1",
            Some(GOOD.replace("0.25", "1.5")),
            vec![
                "train.csv",
                "column \"propensity\", row 2",
                "outside (0, 1]",
            ],
        ),
        (
            "propensity 0",
            Some(GOOD.replace("0.25", "0")),
            vec!["column \"propensity\", row 2", "outside (0, 1]"],
        ),
        (
            "negative propensity",
            Some(GOOD.replace("0.25", "-0.2")),
            vec!["column \"propensity\", row 2", "outside (0, 1]"],
        ),
        (
            "unknown product in the offer column",
            Some(GOOD.replace("basic", "platinum")),
            vec!["column \"offer\", row 2", "\"platinum\" is not a product"],
        ),
        (
            "empty file",
            Some(String::new()),
            vec!["train.csv", "empty"],
        ),
        (
            "header only",
            Some(format!("{header}\n")),
            vec!["train.csv", "empty"],
        ),
        ("missing file", None, vec!["train.csv", "No such file"]),
        (
            "ragged CSV row, too long",
            Some(GOOD.replace("1.5,se,pro,1,0.5", "1.5,se,pro,1,0.5,7")),
            vec![
                "train.csv",
                "row 1 has 6 fields where the header has 5",
                "ragged CSV row",
            ],
        ),
        (
            "ragged CSV row, too short",
            Some(GOOD.replace("2.5,de,basic,0,0.25", "2.5,de,basic,0")),
            vec![
                "train.csv",
                "row 2 has 4 fields where the header has 5",
                "ragged CSV row",
            ],
        ),
        (
            "duplicate column names",
            Some(
                GOOD.replace("hours,country", "hours,hours,country")
                    .replace("1.5,", "1.5,1,")
                    .replace("2.5,", "2.5,2,"),
            ),
            vec!["train.csv", "column \"hours\" appears more than once"],
        ),
    ];
    for (name, data, expected) in cases {
        eprintln!("case: {name}");
        assert_rejected(data.as_deref().map(str::as_bytes), &expected);
    }
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

/// `score` and `recommend` never write over their input, and replace an
/// existing output only with `--force` (issue 15: no lost data).
#[test]
fn outputs_never_replace_inputs_or_existing_files_unasked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let checkpoint = crate::common::repo().join("checkpoints/demo");
    let rows = crate::common::repo().join("checkpoints/demo/rows.csv");
    let input = dir.join("rows.csv");
    std::fs::copy(&rows, &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    let command_to = |command: &str, output: &Path, force: bool| {
        let mut cmd = upsell();
        cmd.args([command, "--checkpoint"])
            .arg(&checkpoint)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(output);
        if force {
            cmd.arg("--force");
        }
        cmd
    };
    for command in ["score", "recommend"] {
        for force in [false, true] {
            let stderr = crate::common::run_fails(&mut command_to(command, &input, force), 2);
            assert!(stderr.contains("also an input"), "{command}: {stderr}");
            assert_eq!(std::fs::read(&input).unwrap(), original, "{command}");
        }
        let output = dir.join(format!("{command}.csv"));
        std::fs::write(&output, "keep me").unwrap();
        let run = |force: bool| command_to(command, &output, force).output().unwrap();
        let refused = run(false);
        assert_eq!(refused.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("already exists") && stderr.contains("--force"),
            "{stderr}"
        );
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "keep me");
        assert!(run(true).status.success(), "{command} --force");
        assert_ne!(std::fs::read_to_string(&output).unwrap(), "keep me");
    }
}

/// A `train` that fails before its first step (here: on its data) leaves
/// no run directory behind, so the same command can run again once fixed.
#[test]
fn a_train_that_fails_on_its_data_leaves_no_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = write(dir, "exp.toml", CONFIG);
    std::fs::write(
        dir.join("train.csv"),
        "hours,country,offer,converted,propensity\n1,se,gold,1,0.5\n",
    )
    .unwrap();
    let run = dir.join("run");
    let stderr = crate::common::run_fails(
        upsell()
            .args(["train", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&run),
        2,
    );
    assert!(stderr.contains("gold"), "{stderr}");
    assert!(!run.exists(), "a failed run left {}", run.display());
}

/// Issue 15's findings on the command line, one case each: the input is
/// refused with exit 2 and a message naming the file, column and row, and
/// nothing is written or lost (the input is unchanged, no output appears).
#[test]
fn every_cli_finding_is_refused_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = crate::common::repo().join("checkpoints/demo");
    let case_dir = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let rows = std::fs::read_to_string(checkpoint.join("rows.csv")).unwrap();
    // A FIFO as a checkpoint's manifest: a read would wait for a writer.
    let fifo = case_dir("fifo-checkpoint");
    std::fs::copy(
        checkpoint.join("model.safetensors"),
        fifo.join("model.safetensors"),
    )
    .unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(fifo.join("manifest.json"))
            .status()
            .unwrap()
            .success()
    );
    let same = case_dir("same");
    let same_input = write(&same, "rows.csv", &rows);
    type Case = (
        &'static str,
        &'static str,
        std::path::PathBuf,
        std::path::PathBuf,
        std::path::PathBuf,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "3: a number beyond the model",
            "score",
            checkpoint.clone(),
            demo_rows_with(&case_dir("huge"), 2, "tenure_months", "1e308"),
            tmp.path().join("huge/out.csv"),
            vec![
                "rows.csv",
                "\"tenure_months\", row 2",
                "standard deviations",
            ],
        ),
        (
            "4: the output is the input",
            "score",
            checkpoint.clone(),
            same_input.clone(),
            same_input.clone(),
            vec!["rows.csv", "also an input"],
        ),
        (
            "5: text in a numeric column (score)",
            "score",
            checkpoint.clone(),
            demo_rows_with(&case_dir("text"), 1, "tenure_months", "abc"),
            tmp.path().join("text/out.csv"),
            vec!["rows.csv", "\"tenure_months\"", "expected a number"],
        ),
        (
            "5: a decimal comma (recommend)",
            "recommend",
            checkpoint.clone(),
            demo_rows_with(&case_dir("comma"), 3, "listening_hours_7d", "\"12,5\""),
            tmp.path().join("comma/out.csv"),
            vec!["rows.csv", "\"listening_hours_7d\"", "expected a number"],
        ),
        (
            "5: a row with an extra field",
            "score",
            checkpoint.clone(),
            {
                let mut lines: Vec<String> = rows.lines().map(str::to_string).collect();
                lines[4].push_str(",7");
                write(&case_dir("ragged"), "rows.csv", &(lines.join("\n") + "\n"))
            },
            tmp.path().join("ragged/out.csv"),
            vec!["rows.csv", "row 4 has 28 fields where the header has 27"],
        ),
        (
            "8: a FIFO as the manifest",
            "score",
            fifo.clone(),
            demo_rows_with(&case_dir("fifo"), 1, "tenure_months", "10"),
            tmp.path().join("fifo/out.csv"),
            vec!["manifest.json", "not a regular file"],
        ),
    ];
    for (what, command, checkpoint, input, output, fragments) in cases {
        let before = std::fs::read(&input).unwrap();
        let stderr = crate::common::run_fails(
            upsell()
                .args([command, "--checkpoint"])
                .arg(&checkpoint)
                .arg("--input")
                .arg(&input)
                .arg("--output")
                .arg(&output),
            2,
        );
        for fragment in fragments {
            assert!(
                stderr.contains(fragment),
                "{what}: {fragment:?} not in {stderr}"
            );
        }
        assert_eq!(
            std::fs::read(&input).unwrap(),
            before,
            "{what}: the input changed"
        );
        if output != input {
            assert!(!output.exists(), "{what}: wrote {}", output.display());
        }
    }
}

/// The demo checkpoint's rows, written to `dir/rows.csv` with data row
/// `row` (1-based) of `column` set to `value`.
fn demo_rows_with(dir: &Path, row: usize, column: &str, value: &str) -> std::path::PathBuf {
    let rows =
        std::fs::read_to_string(crate::common::repo().join("checkpoints/demo/rows.csv")).unwrap();
    let mut lines: Vec<String> = rows.lines().map(str::to_string).collect();
    let at = lines[0].split(',').position(|c| c == column).unwrap();
    let mut cells: Vec<&str> = lines[row].split(',').collect();
    cells[at] = value;
    lines[row] = cells.join(",");
    write(dir, "rows.csv", &(lines.join("\n") + "\n"))
}
