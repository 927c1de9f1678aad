//! Logs with a randomised no-offer holdout: the no-offer arm through every
//! command, incremental decisions, and the errors of a holdout that cannot
//! be used.
#![cfg(feature = "data")]

use std::path::Path;

use polars::prelude::{CsvWriter, DataFrame, ParquetReader, SerReader, SerWriter};
use serde_json::Value;

use crate::common::{last_json, run_fails, run_ok, upsell, write};

/// A small `incremental` world: a 10% holdout, organic buyers.
fn world(dir: &Path, rows: &str, extra: &[&str]) -> std::path::PathBuf {
    let out = dir.join("world");
    run_ok(
        upsell()
            .args([
                "synth",
                "--rows",
                rows,
                "--seed",
                "5",
                "--world",
                "incremental",
            ])
            .args(extra)
            .arg("--out")
            .arg(&out),
    );
    out
}

fn train(config: &Path, data: &Path, out: &Path, extra: &[&str]) -> Value {
    last_json(&run_ok(
        upsell()
            .args(["train", "--config"])
            .arg(config)
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(out)
            .args(["--set", "train.epochs=2", "--set", "train.threads=2"])
            .args(extra),
    ))
}

/// A holdout row goes through train, score, eval, recommend and ope; the
/// decisions, logged with `--exposures` and joined with outcomes, train
/// again and are evaluated off-policy with the holdout as the control.
#[test]
fn a_holdout_round_trips_through_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let world = world(dir, "4000", &[]);
    let (config, logs) = (world.join("config.toml"), world.join("exposures"));
    let summary = train(&config, &logs, &dir.join("run"), &[]);
    assert_eq!(summary["status"], "ok");
    let checkpoint = dir.join("run/checkpoint");

    // score: the holdout rows get P(convert) with no offer, every row the
    // no-offer column beside the products'.
    run_ok(
        upsell()
            .args(["score", "--checkpoint"])
            .arg(&checkpoint)
            .arg("--input")
            .arg(&logs)
            .arg("--output")
            .arg(dir.join("scores.csv")),
    );
    let scores = std::fs::read_to_string(dir.join("scores.csv")).unwrap();
    let header: Vec<&str> = scores.lines().next().unwrap().split(',').collect();
    let none = header.iter().position(|h| *h == "p_convert__none").unwrap();
    let p = header.iter().position(|h| *h == "p_convert").unwrap();
    let offers = world_offers(&logs);
    let mut held = 0;
    for (line, offer) in scores.lines().skip(1).zip(&offers) {
        let cells: Vec<f64> = line
            .split(',')
            .skip(1)
            .map(|c| c.parse().unwrap())
            .collect();
        let cell = |i: usize| cells[i - 1];
        assert!((0.0..=1.0).contains(&cell(none)));
        if offer == "none" {
            held += 1;
            assert_eq!(
                cell(p),
                cell(none),
                "a held-out row's own offer is no offer"
            );
        }
    }
    assert!(held > 200, "{held} held-out rows");

    // eval: "none" is one of the offers, and the uplift metrics rank each
    // product's rows against the holdout.
    let eval = last_json(&run_ok(
        upsell()
            .args(["eval", "--checkpoint"])
            .arg(&checkpoint)
            .arg("--data")
            .arg(&logs)
            .arg("--report")
            .arg(dir.join("report")),
    ));
    let report = std::fs::read_to_string(dir.join("report/report.md")).unwrap();
    assert!(
        report.contains("Uplift against the no-offer holdout"),
        "{report}"
    );
    let offered: Vec<&str> = eval["per_product"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product"].as_str().unwrap())
        .collect();
    assert!(offered.contains(&"none"), "{offered:?}");
    assert_eq!(eval["uplift"]["holdout_rows"], held);
    assert_eq!(eval["uplift"]["propensity_weighted"], true);
    for product in eval["uplift"]["per_product"].as_array().unwrap() {
        assert!(product["qini"].is_number(), "{product}");
        assert!(!product["deciles"].as_array().unwrap().is_empty());
    }

    // recommend on rows without context columns, keeping its own holdout,
    // with every decision logged as an exposure row.
    let features = dir.join("features.csv");
    strip_columns(&logs, &features, &["surface", "message", "offer"]);
    run_ok(
        upsell()
            .args(["recommend", "--policy", "epsilon:0.3", "--checkpoint"])
            .arg(&checkpoint)
            .arg("--input")
            .arg(&features)
            .arg("--output")
            .arg(dir.join("decisions.csv"))
            .arg("--exposures")
            .arg(dir.join("logged.csv"))
            .args([
                "--set",
                "policy.holdout=0.2",
                "--set",
                "policy.contact_cost=0.3",
            ]),
    );
    let logged = std::fs::read_to_string(dir.join("logged.csv")).unwrap();
    let mut lines = logged.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (offer, holdout) = (column("offer"), column("holdout"));
    // The outcomes, joined: every fifth user bought premium_individual.
    let mut joined = format!("{},converted,plan,value\n", header.join(","));
    let (mut unoffered, mut held_out) = (0, 0);
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        // A "no offer" decision is logged as the no-offer value, so that
        // it trains the no-offer arm.
        unoffered += usize::from(cells[offer] == "none");
        held_out += usize::from(cells[holdout] == "true");
        assert!(cells[holdout] != "true" || cells[offer] == "none", "{line}");
        let bought = i % 5 == 0;
        let (plan, value) = if bought {
            ("premium_individual", "11.99")
        } else {
            ("", "0")
        };
        joined += &format!("{line},{},{plan},{value}\n", u8::from(bought));
    }
    assert!(
        held_out > 500 && unoffered >= held_out,
        "{held_out} {unoffered}"
    );
    std::fs::write(dir.join("joined.csv"), joined).unwrap();
    let again = train(&config, &dir.join("joined.csv"), &dir.join("again"), &[]);
    assert_eq!(
        again["train_rows"].as_u64().unwrap() + again["valid_rows"].as_u64().unwrap(),
        4000
    );
    let ope = last_json(&run_ok(
        upsell()
            .args(["ope", "--checkpoint"])
            .arg(&checkpoint)
            .arg("--logs")
            .arg(dir.join("joined.csv")),
    ));
    assert_eq!(ope["uplift"]["holdout_rows"], unoffered, "{ope}");
    let control = &ope["uplift"]["no_offer_conversion"]["snips"]["estimate"];
    // Every fifth user converted, in the holdout as everywhere.
    assert!((control.as_f64().unwrap() - 0.2).abs() < 0.05, "{control}");
}

/// Every row of a world's exposures, in order.
fn read_logs(logs: &Path) -> DataFrame {
    let mut files: Vec<_> = std::fs::read_dir(logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            ParquetReader::new(std::fs::File::open(f).unwrap())
                .finish()
                .unwrap()
        })
        .reduce(|a, b| a.vstack(&b).unwrap())
        .unwrap()
}

/// The `offer` column of a world's exposures, in order.
fn world_offers(logs: &Path) -> Vec<String> {
    let frame = read_logs(logs);
    let offers = frame.column("offer").unwrap().str().unwrap();
    offers.iter().map(|o| o.unwrap().to_string()).collect()
}

/// Writes `logs` to `out` as CSV without `columns`.
fn strip_columns(logs: &Path, out: &Path, columns: &[&str]) {
    let mut frame = read_logs(logs).drop_many(columns.iter().copied());
    CsvWriter::new(std::fs::File::create(out).unwrap())
        .finish(&mut frame)
        .unwrap();
}

/// With the holdout as a no-offer arm, the policy leaves alone the users
/// whom no offer is worth contacting; the same model trained without the
/// holdout (every uncontacted user buys nothing) contacts nearly everyone
/// and earns less, against the world's truth.
#[test]
fn the_uplift_policy_beats_the_propensity_only_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let world = world(dir, "70000", &["--rows-per-file", "50000"]);
    let plain_dir = dir.join("plain");
    std::fs::create_dir(&plain_dir).unwrap();
    let plain = world_in(&plain_dir);
    let run = |world: &Path, out: &str| {
        train(
            &world.join("config.toml"),
            &world.join("exposures/part-00001.parquet"),
            &dir.join(out),
            &["--set", "train.epochs=10", "--set", "seed=1"],
        );
        dir.join(out).join("checkpoint")
    };
    let (uplift, propensity) = (run(&world, "uplift"), run(&plain, "propensity"));
    let truth = world.join("truth/part-00000.parquet");
    let value = |checkpoint: &Path, world: &Path| {
        let eval = last_json(&run_ok(
            upsell()
                .args(["eval", "--checkpoint"])
                .arg(checkpoint)
                .arg("--data")
                .arg(world.join("exposures/part-00000.parquet"))
                .arg("--truth")
                .arg(&truth)
                .args(["--set", "policy.contact_cost=0.5"]),
        ));
        let d = &eval["decisions"];
        (
            d["policy_value"].as_f64().unwrap(),
            d["no_offer_rate"].as_f64().unwrap(),
            d["oracle_no_offer_rate"].as_f64().unwrap(),
        )
    };
    let (with, with_none, oracle_none) = value(&uplift, &world);
    let (without, without_none, _) = value(&propensity, &plain);
    eprintln!(
        "value per user at contact cost 0.5: uplift {with:.4} (no offer {with_none:.3}), \
         propensity only {without:.4} (no offer {without_none:.3}), oracle leaves {oracle_none:.3}"
    );
    assert!(with > without + 0.01, "{with} vs {without}");
    assert!((with_none - oracle_none).abs() < (without_none - oracle_none).abs());
}

/// The same world without its holdout: the rows the holdout took are
/// offered like the rest, and nothing names a no-offer value.
fn world_in(dir: &Path) -> std::path::PathBuf {
    world(
        dir,
        "70000",
        &["--rows-per-file", "50000", "--world-set", "holdout=0"],
    )
}

#[test]
fn bad_holdout_configurations_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let world = world(dir, "2000", &[]);
    let config = world.join("config.toml");
    let runs = std::cell::Cell::new(0);
    let train_with = |sets: &[&str], data: &Path| {
        runs.set(runs.get() + 1);
        let mut command = upsell();
        command
            .args(["train", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(dir.join(format!("run{}", runs.get())));
        for set in sets {
            command.args(["--set", set]);
        }
        run_fails(&mut command, 2)
    };
    let logs = world.join("exposures");
    let error = train_with(&["columns.no_offer=family"], &logs);
    assert!(
        error.contains("columns.no_offer") && error.contains("is a product"),
        "{error}"
    );
    // Without columns.no_offer, a no-offer row is an unknown offer.
    let error = train_with(&["columns.no_offer=holdout"], &logs);
    assert!(
        error.contains("\"none\" is not a product") && error.contains("columns.no_offer"),
        "{error}"
    );
    // A log without holdout rows cannot train the no-offer arm.
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    run_ok(
        upsell()
            .args(["synth", "--rows", "2000", "--seed", "5", "--out"])
            .arg(plain.join("world")),
    );
    let error = train_with(&["columns.no_offer=none"], &plain.join("world/exposures"));
    assert!(
        error.contains("columns.no_offer") && error.contains("none of the"),
        "{error}"
    );
    let no_propensity = write(
        dir,
        "no-propensity.toml",
        &std::fs::read_to_string(&config)
            .unwrap()
            .replace("propensity = \"propensity\"\n", ""),
    );
    let error = run_fails(
        upsell()
            .args(["train", "--config"])
            .arg(&no_propensity)
            .arg("--out")
            .arg(dir.join("run-without-propensity")),
        2,
    );
    assert!(
        error.contains("columns.no_offer") && error.contains("columns.propensity"),
        "{error}"
    );
}
