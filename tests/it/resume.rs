//! Crash safety: a training process killed with SIGKILL mid-epoch resumes
//! from its last resumable state and ends exactly where an uninterrupted run
//! of the same seed ends.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{run_ok, upsell};

fn train_args(synth: &Path) -> Vec<String> {
    [
        "train",
        "--config",
        &synth.join("config.toml").display().to_string(),
        "--set",
        "train.epochs=3",
        "--set",
        "train.batch_size=256",
        "--set",
        "train.checkpoint_every_steps=10",
        "--set",
        "train.threads=2",
        "--set",
        "train.patience=0",
        "--set",
        "model.hidden=[64, 32]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    run_ok(
        upsell()
            .args(["synth", "--rows", "40000", "--seed", "9", "--out"])
            .arg(&synth),
    );
    let args = train_args(&synth);
    killed_run_resumes_identically(dir.path(), &args);
}

/// The same for a run streaming from shards (its position is the batches
/// of a seeded epoch) with two data-parallel replicas (each with its own
/// dropout stream).
#[test]
fn a_streamed_data_parallel_run_killed_mid_epoch_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    run_ok(
        upsell()
            .args(["synth", "--rows", "40000", "--seed", "9"])
            .args(["--rows-per-file", "10000", "--out"])
            .arg(&synth),
    );
    let shards = synth.join("exposures");
    let mut args = train_args(&synth);
    for set in [
        "data.stream=true".to_string(),
        "data.shuffle_buffer=4000".to_string(),
        format!("data.train=\"{}/part-0000[0-2].parquet\"", shards.display()),
        format!("data.valid=\"{}/part-00003.parquet\"", shards.display()),
        "train.devices=[\"flex\", \"flex\"]".to_string(),
    ] {
        args.extend(["--set".to_string(), set]);
    }
    killed_run_resumes_identically(dir.path(), &args);
}

/// Trains with `args` once whole and once killed with SIGKILL after its
/// first resumable state and resumed; both must end with the same weights.
fn killed_run_resumes_identically(dir: &Path, args: &[String]) {
    let whole = dir.join("whole");
    run_ok(upsell().args(args).arg("--out").arg(&whole));

    let killed = dir.join("killed");
    let binary = assert_cmd::cargo::cargo_bin("upsell");
    let mut child = Command::new(&binary)
        .args(args)
        .arg("--out")
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = killed.join(upsell::train::resume::RESUME_FILE);
    let started = Instant::now();
    while !state.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no resumable state appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run ended before it could be killed");
    assert!(!killed.join("checkpoint").exists(), "killed before the end");

    // What the crash left on disk loads and verifies.
    let saved = upsell::train::resume::ResumeState::read(&killed).unwrap();
    assert!(saved.position.step >= 10 && saved.position.step.is_multiple_of(10));
    assert!(saved.position.epoch <= 3);

    let output = run_ok(upsell().arg("train").arg("--resume").arg(&killed));
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["epochs"], 3);
    assert!(!state.exists(), "a finished run drops its resumable state");
    upsell::Scorer::load(killed.join("checkpoint")).unwrap();
    // Same seed, same data: the resumed run ends with the same weights, to
    // the byte (tolerance zero on one machine and backend).
    let weights = |run: &Path| std::fs::read(run.join("checkpoint/model.safetensors")).unwrap();
    assert!(
        weights(&killed) == weights(&whole),
        "resumed weights differ"
    );
    let lines = |run: &Path| {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines(&killed), lines(&whole));
}

#[test]
fn resume_refuses_a_corrupt_state() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[columns]\nnumeric = [\"x\"]\nconverted = \"y\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join(upsell::train::resume::RESUME_FILE),
        b"UPSELLR1\x10\0\0\0",
    )
    .unwrap();
    let output = upsell()
        .arg("train")
        .arg("--resume")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("resume.bin") && stderr.contains("truncated header"),
        "{stderr}"
    );
}

/// Issue 15, finding 6: a run that fails after fitting (here its report
/// cannot be written: `report` is already a file) keeps its resumable
/// state, and its checkpoint, rather than losing the run.
#[test]
fn a_failure_after_fitting_keeps_the_resumable_state() {
    let overrides: Vec<String> = crate::model::tiny(&[
        "train.synthetic_rows=3000",
        "train.epochs=1",
        "train.checkpoint_every_steps=2",
    ])
    .into_iter()
    .filter(|a| a != "--set")
    .collect();
    let config = upsell::Config::builtin(&overrides).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("report"), "in the way").unwrap();
    let device = upsell::model::device::device(config.train.backend).unwrap();
    let error = upsell::train::train(&config, dir.path(), &device, false).unwrap_err();
    assert!(error.to_string().contains("report"), "{error}");
    assert!(
        dir.path().join("resume.bin").is_file(),
        "the resumable state is gone"
    );
    assert!(dir.path().join("checkpoint/manifest.json").is_file());
}
