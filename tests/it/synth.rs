//! The synthetic exposure log: its marginals, its truth, determinism and the
//! on-disk layout written by `upsell::data::synth::write`.
#![cfg(feature = "data")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::OnceLock;

use polars::prelude::{DataFrame, DataType, ParquetReader, SerReader, TimeUnit};
use upsell::data::synth::{
    self, MESSAGES, PRODUCTS, SPAN_MS, START_MS, SURFACES, SynthOptions, generate, generate_part,
};
use upsell::{Config, Error};

const ROWS: usize = 50_000;
const SEED: u64 = 7;

/// One 50k-row log shared by the statistical tests.
fn log() -> &'static (DataFrame, DataFrame) {
    static LOG: OnceLock<(DataFrame, DataFrame)> = OnceLock::new();
    LOG.get_or_init(|| generate(SEED, 0, ROWS).expect("generation succeeds"))
}

fn f64s(df: &DataFrame, name: &str) -> Vec<f64> {
    let column = df.column(name).unwrap();
    assert_eq!(column.null_count(), 0, "{name} has nulls");
    column.f64().unwrap().into_no_null_iter().collect()
}

fn opt_f64s(df: &DataFrame, name: &str) -> Vec<Option<f64>> {
    df.column(name).unwrap().f64().unwrap().iter().collect()
}

fn i32s(df: &DataFrame, name: &str) -> Vec<i32> {
    let column = df.column(name).unwrap();
    assert_eq!(column.null_count(), 0, "{name} has nulls");
    column.i32().unwrap().into_no_null_iter().collect()
}

fn strs(df: &DataFrame, name: &str) -> Vec<Option<String>> {
    df.column(name)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}

fn required_strs(df: &DataFrame, name: &str) -> Vec<String> {
    strs(df, name)
        .into_iter()
        .map(|s| s.unwrap_or_else(|| panic!("{name} has nulls")))
        .collect()
}

fn product_index(name: &str) -> usize {
    PRODUCTS
        .iter()
        .position(|(p, _)| *p == name)
        .unwrap_or_else(|| panic!("{name:?} is not a product"))
}

/// Per product, one vector of `prefix__<product>` values.
fn per_product(truth: &DataFrame, prefix: &str) -> Vec<Vec<f64>> {
    PRODUCTS
        .iter()
        .map(|(p, _)| f64s(truth, &format!("{prefix}__{p}")))
        .collect()
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    assert!(n > 0, "mean of nothing");
    sum / n as f64
}

#[test]
fn columns_and_types_match_the_config() {
    let (exposures, truth) = log();
    assert_eq!(exposures.height(), ROWS);
    assert_eq!(truth.height(), ROWS);
    let config = synth::config();
    let names: BTreeSet<String> = exposures
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (column, role) in config.columns.roles() {
        assert!(
            names.contains(column),
            "{column} ({role:?}) is not in the log"
        );
    }
    // Every column of the log has a role: nothing is generated for nothing.
    assert_eq!(names.len(), config.columns.roles().len());
    let products: BTreeMap<String, f64> =
        PRODUCTS.iter().map(|(p, v)| (p.to_string(), *v)).collect();
    assert_eq!(config.products, products);
    assert_eq!(config.columns.hashed.get("region_id"), Some(&1024));
    for heavy in [
        "listening_hours_7d",
        "ad_impressions_7d",
        "audiobook_hours_30d",
    ] {
        assert!(
            config.preprocess.log1p.iter().any(|c| c == heavy),
            "{heavy}"
        );
    }
    config.validate("synth::config()").unwrap();

    assert_eq!(
        exposures.column("exposure_time").unwrap().dtype(),
        &DataType::Datetime(TimeUnit::Milliseconds, None)
    );
    assert_eq!(
        exposures.column("converted").unwrap().dtype(),
        &DataType::Int32
    );
    for name in [
        "user_id",
        "country",
        "region_id",
        "offer",
        "surface",
        "message",
        "plan",
    ] {
        assert_eq!(
            exposures.column(name).unwrap().dtype(),
            &DataType::String,
            "{name}"
        );
    }
    let user_ids = required_strs(exposures, "user_id");
    assert_eq!(user_ids[42], "u0000000042");
    assert_eq!(
        user_ids.iter().collect::<BTreeSet<_>>().len(),
        ROWS,
        "users are distinct"
    );
    assert_eq!(
        required_strs(truth, "user_id"),
        user_ids,
        "truth rows follow the log"
    );
    let contexts = SURFACES.len() * MESSAGES.len();
    assert_eq!(
        truth.width(),
        // P(convert) and value with no offer (true and Bayes), and the
        // logging policy's value and contact probability.
        1 + 5 * PRODUCTS.len() + 3 * PRODUCTS.len() * contexts + 6
    );
}

/// The truth of every decision: each (product, surface, message) has its
/// true P(convert) and value, the logged context agrees with the per-row
/// columns, values match `Oracle`, the Bayes columns average out the hidden
/// effect, and eligibility follows the config's rules.
#[test]
fn the_truth_values_every_decision() {
    let (exposures, truth) = log();
    let oracle = synth::Oracle::new(SEED);
    let surfaces = required_strs(exposures, "surface");
    let messages = required_strs(exposures, "message");
    let current = required_strs(exposures, "current_plan");
    let ages = required_strs(exposures, "age_bucket");
    let index =
        |names: &[(&str, f64)], name: &str| names.iter().position(|(n, _)| *n == name).unwrap();
    let (mut true_mean, mut bayes_mean, mut n) = (0.0, 0.0, 0.0);
    for (k, (product, _)) in PRODUCTS.iter().enumerate() {
        let logged = f64s(truth, &format!("p_convert__{product}"));
        let bayes_logged = f64s(truth, &format!("bayes_p_convert__{product}"));
        let eligible = f64s(truth, &format!("eligible__{product}"));
        for row in 0..ROWS {
            let expected = current[row] != *product
                && (*product != "student" || ["13-17", "18-24"].contains(&ages[row].as_str()));
            assert_eq!(eligible[row] == 1.0, expected, "row {row} {product}");
        }
        for (surface, _) in SURFACES {
            for (message, _) in MESSAGES {
                let suffix = format!("{product}__{surface}__{message}");
                let p = f64s(truth, &format!("p_convert__{suffix}"));
                let value = f64s(truth, &format!("value__{suffix}"));
                let bayes = f64s(truth, &format!("bayes_value__{suffix}"));
                for row in 0..ROWS {
                    if surfaces[row] == surface && messages[row] == message {
                        assert_eq!(p[row], logged[row], "row {row} {suffix}");
                    }
                    // A buyer pays between the cheapest and the dearest price.
                    let worth = value[row] / p[row];
                    assert!((4.99 - 1e-9..=19.99 + 1e-9).contains(&worth), "{worth}");
                    assert!(bayes[row] >= 0.0 && bayes[row].is_finite());
                }
                for row in [0, 17, 4_321] {
                    let s = index(&SURFACES, surface);
                    let m = index(&MESSAGES, message);
                    let from_oracle = oracle.expected_value(row as u64, s, m)[k];
                    assert!(
                        (from_oracle - value[row]).abs() < 1e-12,
                        "{suffix} row {row}"
                    );
                }
            }
        }
        true_mean += logged.iter().sum::<f64>();
        bayes_mean += bayes_logged.iter().sum::<f64>();
        n += ROWS as f64;
    }
    // Integrating out the hidden effect keeps the average probability.
    let (true_mean, bayes_mean) = (true_mean / n, bayes_mean / n);
    assert!(
        (true_mean - bayes_mean).abs() < 0.002,
        "{true_mean} vs {bayes_mean}"
    );
    assert!(f64s(truth, "value__none").iter().all(|&v| v == 0.0));
}

#[test]
fn marginals_are_realistic() {
    let (exposures, _) = log();
    let converted = i32s(exposures, "converted");
    assert!(converted.iter().all(|&c| c == 0 || c == 1));
    let rate = mean(converted.iter().map(|&c| f64::from(c)));
    assert!((0.02..=0.06).contains(&rate), "conversion rate {rate}");

    // Nullable columns: the documented fractions, and nothing else is null.
    let null_rate = |name: &str| {
        mean(
            opt_f64s(exposures, name)
                .iter()
                .map(|v| f64::from(u8::from(v.is_none()))),
        )
    };
    let audiobook_nulls = null_rate("audiobook_hours_30d");
    let upsell_nulls = null_rate("days_since_last_upsell");
    assert!(
        (audiobook_nulls - 0.15).abs() < 0.01,
        "audiobook nulls {audiobook_nulls}"
    );
    assert!(
        (upsell_nulls - 0.20).abs() < 0.01,
        "days_since_last_upsell nulls {upsell_nulls}"
    );
    for column in exposures.columns() {
        let name = column.name().as_str();
        if !["audiobook_hours_30d", "days_since_last_upsell", "plan"].contains(&name) {
            assert_eq!(column.null_count(), 0, "{name} has nulls");
        }
    }

    // Ranges.
    let in_range = |name: &str, lo: i32, hi: i32| {
        let values = i32s(exposures, name);
        assert!(
            values.iter().all(|v| (lo..=hi).contains(v)),
            "{name} outside {lo}..={hi}"
        );
        values
    };
    in_range("active_days_28d", 0, 28);
    let devices = in_range("devices", 1, 8);
    let household = in_range("household_size", 1, 6);
    assert!(devices.iter().any(|&d| d >= 5) && household.contains(&6));
    for name in ["podcast_share", "price_sensitivity", "student_signal"] {
        let values = f64s(exposures, name);
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)), "{name}");
    }
    assert!(
        f64s(exposures, "student_signal")
            .iter()
            .all(|&v| v == 0.0 || v == 1.0)
    );
    assert!(
        opt_f64s(exposures, "audiobook_hours_30d")
            .iter()
            .flatten()
            .all(|&v| v >= 0.0)
    );
    assert!(
        opt_f64s(exposures, "days_since_last_upsell")
            .iter()
            .flatten()
            .all(|&v| v >= 1.0)
    );

    // Listening hours are heavy-tailed: the 99th percentile is far above the median.
    let mut hours = f64s(exposures, "listening_hours_7d");
    hours.sort_by(f64::total_cmp);
    let (median, p99) = (hours[ROWS / 2], hours[ROWS * 99 / 100]);
    assert!(
        hours[0] >= 0.0 && p99 > 6.0 * median,
        "median {median}, p99 {p99}"
    );

    // Only free users see ads; most users are free.
    let plans = required_strs(exposures, "current_plan");
    let ads = i32s(exposures, "ad_impressions_7d");
    let free = plans.iter().filter(|p| *p == "free").count() as f64 / ROWS as f64;
    assert!((0.6..0.9).contains(&free), "free share {free}");
    for (plan, ads) in plans.iter().zip(&ads) {
        assert!(*ads >= 0);
        if plan != "free" {
            assert_eq!(*ads, 0, "a {plan} user sees ads");
        }
    }
    assert!(mean(ads.iter().map(|&a| f64::from(a))) > 10.0);

    // Countries: about 30, Zipf-like with US first; regions in the thousands.
    let countries = required_strs(exposures, "country");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &countries {
        *counts.entry(c).or_default() += 1;
    }
    assert_eq!(counts.len(), 30);
    let (top, top_count) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
    assert_eq!(*top, "US");
    let smallest = *counts.values().min().unwrap();
    assert!(
        *top_count > 10 * smallest,
        "US {top_count}, smallest {smallest}"
    );
    let regions: BTreeSet<String> = required_strs(exposures, "region_id").into_iter().collect();
    assert!(regions.len() > 2_000, "{} regions", regions.len());
    // A region belongs to one country.
    let mut region_country: BTreeMap<String, String> = BTreeMap::new();
    for (region, country) in required_strs(exposures, "region_id")
        .into_iter()
        .zip(&countries)
    {
        let previous = region_country.insert(region.clone(), country.clone());
        assert!(
            previous.is_none_or(|p| &p == country),
            "{region} in two countries"
        );
    }

    // Contexts follow their fixed distributions.
    for (name, table) in [("surface", &SURFACES[..]), ("message", &MESSAGES[..])] {
        let values = required_strs(exposures, name);
        for (value, p) in table {
            let share = values.iter().filter(|v| v == value).count() as f64 / ROWS as f64;
            assert!((share - p).abs() < 0.01, "{name} {value}: {share} vs {p}");
        }
        assert!(values.iter().all(|v| table.iter().any(|(t, _)| t == v)));
    }

    // Exposure times: 28 days from 2026-01-05, non-decreasing with the row.
    let times: Vec<i64> = exposures
        .column("exposure_time")
        .unwrap()
        .datetime()
        .unwrap()
        .physical()
        .into_no_null_iter()
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "times decrease");
    assert!(times[0] >= START_MS && times[ROWS - 1] < START_MS + SPAN_MS);
    assert!(times[ROWS - 1] - times[0] > SPAN_MS - 86_400_000);
    assert!(
        times.windows(2).filter(|w| w[0] == w[1]).count() < ROWS / 10,
        "times are jittered"
    );
}

#[test]
fn the_logging_policy_is_recorded_exactly() {
    let (exposures, truth) = log();
    let offers: Vec<usize> = required_strs(exposures, "offer")
        .iter()
        .map(|o| product_index(o))
        .collect();
    let surface_p = |s: &str| SURFACES.iter().find(|(n, _)| *n == s).unwrap().1;
    let message_p = |m: &str| MESSAGES.iter().find(|(n, _)| *n == m).unwrap().1;
    let surfaces = required_strs(exposures, "surface");
    let messages = required_strs(exposures, "message");
    let propensity = f64s(exposures, "propensity");
    let logging = per_product(truth, "logging_p");
    let p_plan = per_product(truth, "p_plan");
    let p_convert = per_product(truth, "p_convert");

    let mut smallest = 1.0f64;
    for row in 0..ROWS {
        let sum: f64 = logging.iter().map(|p| p[row]).sum();
        assert!(
            (sum - 1.0).abs() < 1e-9,
            "row {row}: logging_p sums to {sum}"
        );
        let sum: f64 = p_plan.iter().map(|p| p[row]).sum();
        assert!((sum - 1.0).abs() < 1e-9, "row {row}: p_plan sums to {sum}");
        for k in 0..PRODUCTS.len() {
            assert!(logging[k][row] > 0.0 && logging[k][row] <= 1.0);
            assert!((0.0..=1.0).contains(&p_plan[k][row]));
            assert!(p_convert[k][row] > 0.0 && p_convert[k][row] < 1.0);
            smallest = smallest.min(logging[k][row]);
        }
        let expected =
            logging[offers[row]][row] * surface_p(&surfaces[row]) * message_p(&messages[row]);
        let p = propensity[row];
        assert!(p > 0.0 && p <= 1.0, "row {row}: propensity {p}");
        assert!(
            (p - expected).abs() <= 1e-12 * expected,
            "row {row}: propensity {p} vs {expected}"
        );
    }
    assert!(smallest < 0.02, "no small offer probability: {smallest}");
    assert!(smallest >= synth::LOGGING_EPSILON / PRODUCTS.len() as f64 - 1e-12);

    // Offers follow the logged distributions, and every product is offered.
    for (k, (product, _)) in PRODUCTS.iter().enumerate() {
        let share = offers.iter().filter(|&&o| o == k).count() as f64 / ROWS as f64;
        let expected = mean(logging[k].iter().copied());
        assert!(share > 0.02, "{product} offered {share}");
        assert!(
            (share - expected).abs() < 0.01,
            "{product}: offered {share}, logging mean {expected}"
        );
    }
    // The policy is not uniform: it depends on the user.
    let spread = logging[0].iter().fold(0.0f64, |m, &p| m.max(p))
        - logging[0].iter().fold(1.0f64, |m, &p| m.min(p));
    assert!(
        spread > 0.5,
        "logging_p__premium_individual spread {spread}"
    );
}

#[test]
fn outcomes_follow_the_truth() {
    let (exposures, truth) = log();
    let offers: Vec<usize> = required_strs(exposures, "offer")
        .iter()
        .map(|o| product_index(o))
        .collect();
    let converted = i32s(exposures, "converted");
    let plans = strs(exposures, "plan");
    let values = f64s(exposures, "value");
    let p_convert = per_product(truth, "p_convert");

    let (mut conversions, mut sticky) = (0usize, 0usize);
    for row in 0..ROWS {
        match &plans[row] {
            None => {
                assert_eq!(converted[row], 0, "row {row}: a plan without a conversion");
                assert_eq!(values[row], 0.0);
            }
            Some(plan) => {
                assert_eq!(converted[row], 1, "row {row}: a conversion without a plan");
                let k = product_index(plan);
                assert_eq!(values[row], PRODUCTS[k].1, "row {row}: value of {plan}");
                conversions += 1;
                sticky += usize::from(k == offers[row]);
            }
        }
    }
    let stick = sticky as f64 / conversions as f64;
    assert!(
        (0.7..=0.9).contains(&stick),
        "plan == offer in {stick} of conversions"
    );

    // The realised rate matches the truth's probability of the logged offer.
    let expected = mean((0..ROWS).map(|r| p_convert[offers[r]][r]));
    let rate = conversions as f64 / ROWS as f64;
    let se = (expected * (1.0 - expected) / ROWS as f64).sqrt();
    assert!(
        (rate - expected).abs() < 4.0 * se,
        "rate {rate}, expected {expected}"
    );

    // Plans follow the truth's plan distribution given the offer.
    let p_plan = per_product(truth, "p_plan");
    for (k, (product, _)) in PRODUCTS.iter().enumerate() {
        let bought = plans
            .iter()
            .filter(|p| p.as_deref() == Some(product))
            .count() as f64;
        let expected: f64 = (0..ROWS)
            .filter(|&r| converted[r] == 1)
            .map(|r| p_plan[k][r])
            .sum();
        assert!(
            (bought - expected).abs() < 4.0 * expected.sqrt() + 3.0,
            "{product}: bought {bought}, expected {expected:.1}"
        );
    }
}

#[test]
fn the_best_product_differs_between_users() {
    let (exposures, truth) = log();
    let p_convert = per_product(truth, "p_convert");
    // The product with the highest expected value p_convert * value, per row.
    let best_product = |row: usize| {
        let ev = |k: usize| p_convert[k][row] * PRODUCTS[k].1;
        (0..PRODUCTS.len())
            .max_by(|&a, &b| ev(a).total_cmp(&ev(b)))
            .unwrap()
    };
    let mut best = [0usize; PRODUCTS.len()];
    for top in (0..exposures.height()).map(best_product) {
        best[top] += 1;
    }
    let winners = best
        .iter()
        .filter(|&&n| n as f64 > 0.01 * ROWS as f64)
        .count();
    assert!(winners >= 4, "best-product counts {best:?}");
    assert!(
        best.iter().all(|&n| (n as f64) < 0.8 * ROWS as f64),
        "one product dominates: {best:?}"
    );

    let p = |name: &str| &p_convert[product_index(name)];
    let household = i32s(exposures, "household_size");
    let devices = i32s(exposures, "devices");
    let student = f64s(exposures, "student_signal");
    let podcast = f64s(exposures, "podcast_share");
    let plans = required_strs(exposures, "current_plan");
    let ages = required_strs(exposures, "age_bucket");
    let mean_where = |values: &[f64], keep: &dyn Fn(usize) -> bool| {
        mean((0..ROWS).filter(|&r| keep(r)).map(|r| values[r]))
    };
    let free = |r: usize| plans[r] == "free";

    // Family sells to large households with many devices.
    let big = mean_where(p("family"), &|r| {
        free(r) && household[r] >= 4 && devices[r] >= 4
    });
    let single = mean_where(p("family"), &|r| free(r) && household[r] == 1);
    assert!(
        big > 4.0 * single,
        "family: big homes {big}, singles {single}"
    );
    // Duo sells to two-person households.
    let pairs = mean_where(p("duo"), &|r| free(r) && household[r] == 2);
    let others = mean_where(p("duo"), &|r| free(r) && household[r] != 2);
    assert!(pairs > 3.0 * others, "duo: pairs {pairs}, others {others}");
    // Student sells only with the edu signal, at young ages.
    let young_students = mean_where(p("student"), &|r| {
        free(r) && student[r] == 1.0 && ["13-17", "18-24"].contains(&ages[r].as_str())
    });
    let non_students = mean_where(p("student"), &|r| free(r) && student[r] == 0.0);
    assert!(
        non_students < 0.005,
        "student without the signal: {non_students}"
    );
    assert!(
        young_students > 10.0 * non_students,
        "student: {young_students} vs {non_students}"
    );
    // Podcast Plus sells to podcast listeners.
    let fans = mean_where(p("podcast_plus"), &|r| podcast[r] > 0.6);
    let casual = mean_where(p("podcast_plus"), &|r| podcast[r] < 0.2);
    assert!(
        fans > 3.0 * casual,
        "podcast_plus: fans {fans}, casual {casual}"
    );

    // A plan at or below the current plan almost never sells.
    let tier = |plan: &str| match plan {
        "student" => 1,
        "premium_individual" => 2,
        "duo" => 3,
        "family" => 4,
        _ => 0,
    };
    let (mut below, mut above) = (Vec::new(), Vec::new());
    for (row, plan) in plans.iter().enumerate() {
        let current = tier(plan);
        for name in ["student", "premium_individual", "duo", "family"] {
            let value = p(name)[row];
            if tier(name) <= current {
                below.push(value)
            } else {
                above.push(value)
            }
        }
    }
    let (below, above) = (mean(below), mean(above));
    assert!(
        below < 0.005 && below < above / 5.0,
        "at or below the current plan {below}, above {above}"
    );
}

#[test]
fn generation_is_deterministic_and_chunk_independent() {
    let (exposures, truth) = generate(3, 0, 3_000).unwrap();
    let (again, again_truth) = generate(3, 0, 3_000).unwrap();
    assert!(exposures.equals_missing(&again) && truth.equals_missing(&again_truth));

    // Parts of one log concatenate to the whole log.
    let (head, head_truth) = generate_part(3, 3_000, 0, 1_000).unwrap();
    let (tail, tail_truth) = generate_part(3, 3_000, 1_000, 2_000).unwrap();
    assert!(head.equals_missing(&exposures.slice(0, 1_000)));
    assert!(tail.equals_missing(&exposures.slice(1_000, 2_000)));
    assert!(head_truth.equals_missing(&truth.slice(0, 1_000)));
    assert!(tail_truth.equals_missing(&truth.slice(1_000, 2_000)));
    // generate() ends the log with its rows: the same as a part of a log of that length.
    let (ending, _) = generate(3, 1_000, 2_000).unwrap();
    assert!(ending.equals_missing(&tail));

    // Only the exposure time depends on the log's length.
    let (longer, longer_truth) = generate_part(3, 1_000_000, 1_000, 2_000).unwrap();
    assert!(longer_truth.equals_missing(&tail_truth));
    let drop_time = |df: &DataFrame| df.drop("exposure_time").unwrap();
    assert!(drop_time(&longer).equals_missing(&drop_time(&tail)));
    assert!(
        !longer
            .column("exposure_time")
            .unwrap()
            .equals(tail.column("exposure_time").unwrap())
    );

    // Another seed gives another log, in features, decisions and truth.
    let (other, other_truth) = generate(4, 0, 3_000).unwrap();
    for name in [
        "tenure_months",
        "country",
        "region_id",
        "offer",
        "propensity",
    ] {
        let same = exposures
            .column(name)
            .unwrap()
            .equals(other.column(name).unwrap());
        assert!(!same, "{name} is the same under another seed");
    }
    assert!(!truth.equals_missing(&other_truth));

    // Rows beyond the log are refused.
    assert!(generate_part(3, 10, 0, 11).is_err());
    assert!(generate_part(3, 10, 5, 5).is_ok());
}

fn read_parquet_dir(dir: &Path) -> DataFrame {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let mut frames = paths
        .iter()
        .map(|p| ParquetReader::new(File::open(p).unwrap()).finish().unwrap());
    let mut all = frames.next().expect("at least one file");
    for df in frames {
        all.vstack_mut_owned(df).unwrap();
    }
    all
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn write_creates_the_dataset_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("synth");
    let opts = SynthOptions {
        rows_per_file: 2_000,
        chunk_rows: 700,
        ..SynthOptions::new(5_000, 11, out.clone())
    };
    let summary = synth::write(&opts).unwrap();
    assert_eq!(summary.rows, 5_000);
    assert_eq!(summary.files, 3);
    assert!(summary.seconds > 0.0 && summary.rows_per_sec > 0.0);
    assert_eq!(
        entries(tmp.path()),
        BTreeSet::from(["synth".to_string()]),
        "no staging left"
    );

    let parts: BTreeSet<String> = (0..3).map(|i| format!("part-{i:05}.parquet")).collect();
    assert_eq!(entries(&out.join("exposures")), parts);
    assert_eq!(entries(&out.join("truth")), parts);
    for name in ["config.toml", "summary.json", "README.md"] {
        assert!(out.join(name).is_file(), "{name} is missing");
    }

    // The files hold exactly the generated log, in order.
    let exposures = read_parquet_dir(&out.join("exposures"));
    let truth = read_parquet_dir(&out.join("truth"));
    let (expected, expected_truth) = generate(11, 0, 5_000).unwrap();
    assert!(
        exposures.equals_missing(&expected),
        "written exposures differ"
    );
    assert!(
        truth.equals_missing(&expected_truth),
        "written truth differs"
    );
    let rate = mean(i32s(&exposures, "converted").iter().map(|&c| f64::from(c)));
    assert!((summary.conversion_rate - rate).abs() < 1e-12);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["rows"], 5_000);
    assert_eq!(json["seed"], 11);

    // The config names the data relative to itself and says how it was made.
    let config_path = out.join("config.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    assert!(text.starts_with('#'));
    assert!(text.contains(&format!(
        "upsell synth --out {} --rows 5000 --seed 11",
        out.display()
    )));
    assert!(text.contains(&format!("upsell train --config {}", config_path.display())));
    let config = Config::load(&config_path, &[]).unwrap();
    assert_eq!(config.data.train, Some(out.join("exposures")));
    let mut expected_config = synth::config();
    expected_config.data.train = Some(out.join("exposures"));
    assert_eq!(config, expected_config);

    // A second write refuses to touch the existing dataset.
    let before = entries(&out);
    match synth::write(&opts) {
        Err(Error::AlreadyExists { path }) => assert_eq!(path, out),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(entries(&out), before);
    assert_eq!(entries(tmp.path()), BTreeSet::from(["synth".to_string()]));
}

/// `truth_files` keeps the truth of the first files only, the same rows as
/// a full write's, and the recorded command repeats it.
#[test]
fn truth_can_be_limited_to_the_first_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("synth");
    let opts = SynthOptions {
        rows_per_file: 2_000,
        truth_files: Some(1),
        ..SynthOptions::new(5_000, 11, out.clone())
    };
    synth::write(&opts).unwrap();
    let parts: BTreeSet<String> = (0..3).map(|i| format!("part-{i:05}.parquet")).collect();
    assert_eq!(entries(&out.join("exposures")), parts);
    assert_eq!(
        entries(&out.join("truth")),
        BTreeSet::from(["part-00000.parquet".to_string()])
    );
    let truth = read_parquet_dir(&out.join("truth"));
    let (_, expected_truth) = generate(11, 0, 2_000).unwrap();
    assert!(
        truth.equals_missing(&expected_truth),
        "written truth differs"
    );
    let text = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(text.contains("--truth-files 1"), "{text}");
}

#[test]
fn write_refuses_non_empty_targets_and_accepts_empty_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let small = |out: &Path| SynthOptions::new(300, 5, out);

    let occupied = tmp.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    assert!(matches!(
        synth::write(&small(&occupied)),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(entries(&occupied), BTreeSet::from(["keep.txt".to_string()]));

    let file = tmp.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    assert!(matches!(
        synth::write(&small(&file)),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");

    // Bad options fail before anything is created.
    let nothing = tmp.path().join("nothing");
    assert!(synth::write(&SynthOptions::new(0, 5, &nothing)).is_err());
    let mut zero_chunk = small(&nothing);
    zero_chunk.chunk_rows = 0;
    assert!(synth::write(&zero_chunk).is_err());
    assert!(!nothing.exists());
    assert_eq!(
        entries(tmp.path()),
        BTreeSet::from(["a-file".to_string(), "occupied".to_string()]),
        "a refused write leaves nothing behind"
    );

    // An existing empty directory is replaced; a missing parent is created.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let summary = synth::write(&small(&empty)).unwrap();
    assert_eq!((summary.rows, summary.files), (300, 1));
    assert_eq!(read_parquet_dir(&empty.join("exposures")).height(), 300);
    let nested = tmp.path().join("new/parent/log");
    synth::write(&small(&nested)).unwrap();
    assert_eq!(read_parquet_dir(&nested.join("truth")).height(), 300);
}

/// Named worlds differ in the way their names say, settings override them
/// by key, and unknown names and keys are refused with the valid ones.
#[test]
fn worlds_are_named_presets_with_overrides() {
    use upsell::data::synth::{WORLDS, WorldParams, generate_in};
    for name in WORLDS {
        WorldParams::preset(name).unwrap();
    }
    let noisy = WorldParams::preset("noisy").unwrap();
    let tuned = noisy.with_overrides(&["stickiness=0.5".into()]).unwrap();
    assert_eq!(tuned.stickiness, 0.5);
    assert_eq!(tuned.hidden_sd, noisy.hidden_sd);
    let error = WorldParams::preset("moon").unwrap_err();
    // A bad argument names the flag and is the user's to fix (exit 2).
    assert!(
        matches!(
            error,
            upsell::Error::Argument {
                argument: "--world",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), 2);
    let error = error.to_string();
    assert!(
        error.contains("moon") && error.contains("holdout"),
        "{error}"
    );
    let error = noisy
        .with_overrides(&["stickyness=0.5".into()])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("stickyness") && error.contains("stickiness"),
        "{error}"
    );
    assert!(noisy.with_overrides(&["stickiness=2".into()]).is_err());

    // Switchers take the offered product less often than default buyers.
    let offered_share = |params: WorldParams| {
        let (exposures, truth) = generate_in(params, SEED, 5_000, 0, 5_000).unwrap();
        let offers = required_strs(&exposures, "offer");
        let p_plan = per_product(&truth, "p_plan");
        mean((0..offers.len()).map(|row| p_plan[product_index(&offers[row])][row]))
    };
    let default = offered_share(WorldParams::default());
    let switchers = offered_share(WorldParams::preset("switchers").unwrap());
    // 0.7 and 0.3, plus the share who would have picked the offer anyway.
    assert!(
        default > 0.7 && default - switchers > 0.2,
        "{default} vs {switchers}"
    );
}

/// The `incremental` world: a randomised no-offer holdout in the log,
/// users who buy unoffered, offers that can cost a sale, and a truth that
/// values "no offer" and the logging policy.
#[test]
fn the_incremental_world_has_a_holdout_and_organic_buyers() {
    use upsell::data::synth::{NO_OFFER, Oracle, WorldParams, generate_in};
    let params = WorldParams::preset("incremental").unwrap();
    let rows = 20_000;
    let (exposures, truth) = generate_in(params, SEED, rows as u64, 0, rows).unwrap();
    let offers = required_strs(&exposures, "offer");
    let surfaces = strs(&exposures, "surface");
    let propensity = f64s(&exposures, "propensity");
    let converted = i32s(&exposures, "converted");
    let held: Vec<usize> = (0..rows).filter(|&r| offers[r] == NO_OFFER).collect();
    let share = held.len() as f64 / rows as f64;
    assert!((share - params.holdout).abs() < 0.01, "{share}");
    for &r in &held {
        assert!(surfaces[r].is_none(), "a held-out row has no context");
        assert_eq!(propensity[r], params.holdout);
    }
    // Held-out users buy at the rate the truth says they would unoffered,
    // and fewer of them than of the offered.
    let p_none = f64s(&truth, "p_convert__none");
    let rate = |rows: &[usize]| mean(rows.iter().map(|&r| f64::from(converted[r])));
    let expected = mean(held.iter().map(|&r| p_none[r]));
    assert!(
        (rate(&held) - expected).abs() < 0.02,
        "{} vs {expected}",
        rate(&held)
    );
    let offered: Vec<usize> = (0..rows).filter(|&r| offers[r] != NO_OFFER).collect();
    let p_offered = per_product(&truth, "p_convert");
    let expected = mean(
        offered
            .iter()
            .map(|&r| p_offered[product_index(&offers[r])][r]),
    );
    assert!(
        (rate(&offered) - expected).abs() < 0.01,
        "{} vs {expected}",
        rate(&offered)
    );
    assert!(rate(&offered) > rate(&held), "offers add buyers");

    let oracle = Oracle::of(SEED, params);
    let none = f64s(&truth, "value__none");
    let (mut cannibal, mut logging_checked) = (0usize, 0usize);
    let logging_value = f64s(&truth, "logging_value");
    let logging_p = per_product(&truth, "logging_p");
    let contact = f64s(&truth, "logging_contact");
    for row in [0usize, 11, 2_024] {
        assert!((oracle.no_offer_value(row as u64) - none[row]).abs() < 1e-12);
        let mut logged = 0.0;
        for (s, (surface, ps)) in SURFACES.iter().enumerate() {
            for (m, (message, pm)) in MESSAGES.iter().enumerate() {
                let from_oracle = oracle.expected_value(row as u64, s, m);
                for (k, (product, _)) in PRODUCTS.iter().enumerate() {
                    let v = f64s(&truth, &format!("value__{product}__{surface}__{message}"))[row];
                    assert!((from_oracle[k] - v).abs() < 1e-12);
                    logged += ps * pm * logging_p[k][row] * v;
                }
            }
        }
        // The logging policy offers with its distribution, or holds out.
        let expected = contact[row] * logged + params.holdout * none[row];
        assert!((logging_value[row] - expected).abs() < 1e-9);
        logging_checked += 1;
    }
    assert_eq!(logging_checked, 3);
    // Some offers are worth less than leaving the user alone.
    for (product, _) in PRODUCTS {
        let v = f64s(&truth, &format!("value__{product}__email__discount"));
        cannibal += (0..rows).filter(|&r| v[r] < none[r]).count();
    }
    assert!(cannibal > 0);
    assert!((contact[0] - (1.0 - params.holdout)).abs() < 1e-12);
}
