//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The built-in world's products, in index (name) order.
pub const PRODUCTS: [&str; 6] = [
    "audiobooks",
    "duo",
    "family",
    "podcast_plus",
    "premium_individual",
    "student",
];

/// The `upsell` binary under test.
pub fn upsell() -> Command {
    Command::cargo_bin("upsell").expect("the upsell binary is built with the tests")
}

/// `upsell recommend` of the demo checkpoint on its `rows.csv`, writing
/// `out`; callers add their own arguments.
pub fn recommend_demo(out: &Path) -> Command {
    let demo = repo().join("checkpoints/demo");
    let mut command = upsell();
    command
        .args(["recommend", "--checkpoint"])
        .arg(&demo)
        .arg("--input")
        .arg(demo.join("rows.csv"))
        .arg("--output")
        .arg(out);
    command
}

/// Runs a command and asserts that it succeeded, showing its stderr if not.
pub fn run_ok(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The last line of a command's stdout as JSON (a run's final summary).
pub fn last_json(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap()
}

/// Runs a command that must fail with exit `code`; returns its stderr.
pub fn run_fails(command: &mut Command, code: i32) -> String {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    stderr
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Every file in `dir`, recursively, relative to it and sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}
