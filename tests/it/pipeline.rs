//! The data pipeline: loading, fitting and transforming, checked against
//! values computed by hand.

use std::path::Path;

use upsell::config::Config;
use upsell::data::{self, Dataset};
use upsell::preprocess::{MISSING, NO_PLAN, OOV, Preprocessor};

use crate::common::write;

/// Six exposures. By hand, over the non-null `hours` [1, 2, 3, 4, 10]:
/// mean 4, population variance (9 + 4 + 1 + 0 + 36) / 5 = 10.
const ROWS: &str = "\
id,hours,country,region,offer,surface,converted,plan,propensity
u1,1,a,abc,pro,push,1,pro,0.5
u2,2,b,r1,basic,push,0,,0.25
u3,3,a,r2,pro,email,0,,1
u4,,,abc,pro,push,yes,basic,0.5
u5,4,b,,basic,email,no,,0.5
u6,10,c,r1,pro,banner,true,pro,0.125
";

fn config(dir: &Path, extra: &str) -> Config {
    let text = format!(
        r#"
[data]
train = "rows.csv"
valid = "rows.csv"

[columns]
numeric = ["hours"]
categorical = ["country"]
hashed = {{ region = 8 }}
offer = "offer"
context = ["surface"]
converted = "converted"
plan = "plan"
propensity = "propensity"
id = "id"

[preprocess]
min_count = 2

[products]
pro = 10.0
basic = 5.0
{extra}"#
    );
    let path = write(dir, "exp.toml", &text);
    Config::load(&path, &[]).unwrap()
}

fn fitted(extra: &str) -> (Preprocessor, data::Prepared) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rows.csv", ROWS);
    let config = config(dir.path(), extra);
    let prepared = data::prepare(&config).unwrap();
    (prepared.preprocessor.clone(), prepared)
}

#[test]
fn numeric_statistics_match_hand_computation() {
    let (pre, _) = fitted("");
    let hours = &pre.numeric[0];
    assert_eq!(hours.column, "hours");
    assert!((hours.mean - 4.0).abs() < 1e-12);
    assert!((hours.std - 10f64.sqrt()).abs() < 1e-12);
}

#[test]
fn log1p_is_applied_before_standardising() {
    let (pre, _) = fitted("");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rows.csv", ROWS);
    let mut config = config(dir.path(), "");
    config.preprocess.log1p = vec!["hours".into()];
    let logged = data::prepare(&config).unwrap().preprocessor;
    let raw: Vec<f64> = [1.0f64, 2.0, 3.0, 4.0, 10.0]
        .iter()
        .map(|x| x.ln_1p())
        .collect();
    let mean = raw.iter().sum::<f64>() / 5.0;
    let var = raw.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 5.0;
    assert!(logged.numeric[0].log1p);
    assert!((logged.numeric[0].mean - mean).abs() < 1e-12);
    assert!((logged.numeric[0].std - var.sqrt()).abs() < 1e-12);
    assert!(!pre.numeric[0].log1p);
}

#[test]
fn vocabularies_keep_frequent_values_and_reserve_oov_and_missing() {
    let (pre, _) = fitted("");
    // country: a x2, b x2, c x1, null x1; min_count 2 keeps a and b (a tie,
    // so in name order).
    let country = &pre.categorical[0];
    assert_eq!(country.tokens(), ["a", "b"]);
    assert_eq!(country.index(Some("a")), 2);
    assert_eq!(country.index(Some("c")), OOV);
    assert_eq!(country.index(None), MISSING);
    // surface: push x3, email x2, banner x1.
    assert_eq!(pre.context[0].tokens(), ["push", "email"]);
    // Products are sorted by name: basic = 0, pro = 1.
    assert_eq!(pre.product_index("basic"), Some(0));
    assert_eq!(pre.product_index("pro"), Some(1));
    assert_eq!(pre.embedding_sizes(), vec![4, 9]);
}

#[test]
fn transform_produces_the_hand_computed_batch() {
    let (pre, prepared) = fitted("");
    let batch = &prepared.train;
    let f = &batch.features;
    assert_eq!(f.rows, 6);
    // hours 1, 2, 3, 4, 10 (and a null): eight quantile bins merge into one
    // per step between distinct values.
    assert_eq!(pre.numeric[0].bins, [1.0, 2.0, 3.0, 4.0, 10.0]);
    assert_eq!(pre.numeric_width(), 6);
    let s = 10f32.sqrt();
    let expected_values = [
        (1.0 - 4.0) / s,
        (2.0 - 4.0) / s,
        (3.0 - 4.0) / s,
        0.0,
        0.0,
        6.0 / s,
    ];
    let expected_missing = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    let expected_bins = [
        [0.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0, 0.0],
        [1.0, 1.0, 1.0, 1.0],
    ];
    for (row, inputs) in f.numeric.chunks_exact(6).enumerate() {
        assert!((inputs[0] - expected_values[row]).abs() < 1e-6, "row {row}");
        assert_eq!(inputs[1], expected_missing[row], "row {row}");
        assert_eq!(inputs[2..], expected_bins[row], "row {row}");
    }
    // [country, region]: region hashes are 1 + xxh3_64(value) % 8, computed
    // with the reference xxhash library: abc -> 1, r1 -> 4, r2 -> 8; null -> 0.
    assert_eq!(f.embedded, vec![2, 1, 3, 4, 2, 8, MISSING, 1, 3, 0, OOV, 4]);
    assert_eq!(f.offer, vec![1, 0, 1, 1, 0, 1]);
    // push = 2, email = 3, banner (seen once) = OOV.
    assert_eq!(f.context, vec![2, 2, 3, 2, 3, OOV]);
    let t = &batch.targets;
    assert_eq!(t.converted, vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    assert_eq!(t.plan, vec![1, NO_PLAN, NO_PLAN, 0, NO_PLAN, 1]);
    assert_eq!(t.weight, vec![1.0; 6]);
    assert_eq!(t.propensity, vec![0.5, 0.25, 1.0, 0.5, 0.5, 0.125]);
}

#[test]
fn the_fitted_preprocessing_round_trips_through_serde() {
    let (pre, prepared) = fitted("");
    let json = serde_json::to_string(&pre).unwrap();
    let back: Preprocessor = serde_json::from_str(&json).unwrap();
    assert_eq!(back, pre);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rows.csv", ROWS);
    let config = config(dir.path(), "");
    let table = data::load(&dir.path().join("rows.csv"), &config).unwrap();
    let again = data::features(&back, &table.frame).unwrap();
    assert_eq!(again, prepared.train.features);
}

#[test]
fn unusable_rows_are_dropped_and_counted_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let rows = format!("{ROWS}u7,5,a,r1,pro,push,,,0.5\nu8,5,a,r1,basic,push,0,pro,0.5\n");
    write(dir.path(), "rows.csv", &rows);
    let strict = config(dir.path(), "");
    let message = data::prepare(&strict).unwrap_err().to_string();
    assert!(message.contains("rows.csv"), "{message}");
    assert!(message.contains("2 of 8 rows are unusable"), "{message}");
    assert!(message.contains("1 with a null label"), "{message}");
    assert!(
        message.contains("1 with a plan but no conversion"),
        "{message}"
    );

    let mut lenient = strict.clone();
    lenient.data.max_invalid_fraction = 0.3;
    let prepared = data::prepare(&lenient).unwrap();
    assert_eq!(prepared.report.train.rows_read, 8);
    assert_eq!(prepared.report.train.rows_used, 6);
    assert_eq!(prepared.report.train.dropped["a null label"], 1);
    assert_eq!(prepared.report.train.dropped["a plan but no conversion"], 1);
}

fn split_config(dir: &Path, rows: usize, extra: &str) -> Config {
    let mut csv = String::from("id,x,t,y\n");
    for i in 0..rows {
        csv.push_str(&format!("user{i},{},{},{}\n", i % 7, rows - i, i % 2));
    }
    write(dir, "rows.csv", &csv);
    let text = format!(
        "[data]\ntrain = \"rows.csv\"\n{extra}\n[columns]\nnumeric = [\"x\"]\nconverted = \"y\"\ntime = \"t\"\nid = \"id\"\n"
    );
    Config::load(&write(dir, "exp.toml", &text), &[]).unwrap()
}

#[test]
fn a_random_split_is_seeded_and_keeps_the_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let config = split_config(dir.path(), 10_000, "valid_fraction = 0.2");
    let a = Dataset::load(&config).unwrap();
    let b = Dataset::load(&config).unwrap();
    assert!(a.valid.frame.equals(&b.valid.frame));
    let share = a.valid.height() as f64 / 10_000.0;
    assert!((share - 0.2).abs() < 0.02, "{share}");
    assert_eq!(a.train.height() + a.valid.height(), 10_000);
    let mut other = config.clone();
    other.seed += 1;
    let c = Dataset::load(&other).unwrap();
    assert!(!a.valid.frame.equals(&c.valid.frame));
}

#[test]
fn a_time_split_holds_out_the_latest_rows() {
    let dir = tempfile::tempdir().unwrap();
    let config = split_config(dir.path(), 1000, "split = \"time\"\nvalid_fraction = 0.1");
    let dataset = Dataset::load(&config).unwrap();
    assert_eq!(dataset.valid.height(), 100);
    let times = |t: &data::Table| -> Vec<f64> {
        t.frame
            .column("t")
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect()
    };
    let latest_train = times(&dataset.train).into_iter().fold(f64::MIN, f64::max);
    let earliest_valid = times(&dataset.valid).into_iter().fold(f64::MAX, f64::min);
    assert!(latest_train < earliest_valid);
}

#[test]
fn a_directory_of_shards_and_a_glob_load_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    let (header, body) = ROWS.split_once('\n').unwrap();
    let lines: Vec<&str> = body.lines().collect();
    write(
        &shards,
        "part-0.csv",
        &format!("{header}\n{}\n", lines[..3].join("\n")),
    );
    write(
        &shards,
        "part-1.csv",
        &format!("{header}\n{}\n", lines[3..].join("\n")),
    );
    write(&shards, "notes.txt", "ignored: not a data file");
    let mut config = config(dir.path(), "");
    for train in [shards.clone(), shards.join("part-*.csv")] {
        config.data.train = Some(train.clone());
        config.data.valid = Some(train);
        let prepared = data::prepare(&config).unwrap();
        assert_eq!(prepared.report.train.files, 2);
        assert_eq!(prepared.train.features.rows, 6);
    }
}

/// Fitting in batches (as a stream of shards is fitted) gives the
/// preprocessing that one pass over the whole table gives.
#[test]
fn fitting_in_batches_equals_fitting_the_whole_table() {
    let mut config = upsell::data::synth::config();
    config.train.synthetic_rows = 20_000;
    let table = Dataset::synthetic(&config).unwrap().train;
    let whole = data::fit(&table, &config).unwrap();
    let mut fitter = data::Fitter::new(&config);
    let rows = table.height();
    for start in (0..rows).step_by(7_001) {
        let part = data::Table {
            frame: table.frame.slice(start as i64, 7_001),
            source: table.source.clone(),
            report: data::LoadReport::default(),
        };
        fitter.update(&part).unwrap();
    }
    let batched = fitter.finish();
    assert_eq!(batched.categorical, whole.categorical);
    assert_eq!(batched.context, whole.context);
    for (a, b) in batched.numeric.iter().zip(&whole.numeric) {
        assert_eq!((&a.column, a.log1p), (&b.column, b.log1p));
        assert!(
            (a.mean - b.mean).abs() <= 1e-9 * b.mean.abs().max(1.0),
            "{a:?} vs {b:?}"
        );
        assert!((a.std - b.std).abs() <= 1e-9 * b.std, "{a:?} vs {b:?}");
        // The bins come from a sample of the same rows in the same order.
        assert_eq!(a.bins, b.bins, "{}", a.column);
        assert!(!a.bins.is_empty(), "{}", a.column);
    }
}
