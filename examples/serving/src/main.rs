//! A serving crate's use of upsell: load a checkpoint once, then score users
//! as they come, each a record of column name -> value.
//!
//!     cargo run --release -p upsell-serving-example -- checkpoints/demo
//!
//! It scores the first user of `checkpoints/demo/rows.csv` and checks the
//! result against `checkpoints/demo/expected.csv`, as CI does.

use std::collections::HashMap;
use std::process::ExitCode;

use upsell::Scorer;
use upsell::preprocess::Value;

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "checkpoints/demo".into());
    // Loading checks the format version and the weights' checksum.
    let scorer = match Scorer::load(&dir) {
        Ok(scorer) => scorer,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };

    // The first row of checkpoints/demo/rows.csv. A missing feature is
    // imputed as in training; an unseen category maps to the unknown value.
    let number = Value::Number;
    let user: HashMap<String, Value<'_>> = [
        ("tenure_months", number(1.0)),
        ("listening_hours_7d", number(1.09)),
        ("active_days_28d", number(11.0)),
        ("skips_per_hour", number(0.85)),
        ("ad_impressions_7d", number(14.0)),
        ("podcast_share", number(0.346)),
        ("audiobook_hours_30d", number(15.6)),
        ("devices", number(1.0)),
        ("household_size", number(3.0)),
        ("student_signal", number(0.0)),
        ("price_sensitivity", number(0.66)),
        ("days_since_last_upsell", number(34.0)),
        ("country", Value::Text("FR")),
        ("platform", Value::Text("android")),
        ("current_plan", Value::Text("free")),
        ("age_bucket", Value::Text("35-44")),
        ("acquisition_channel", Value::Text("referral")),
        ("region_id", Value::Text("FR-0110")),
        ("offer", Value::Text("audiobooks")),
        ("surface", Value::Text("in_app_message")),
        ("message", Value::Text("discount")),
    ]
    .into_iter()
    .map(|(column, value)| (column.to_string(), value))
    .collect();

    let scores = match scorer.score_records(&[user]) {
        Ok(scores) => scores,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // One row: P(convert) for the row's offer, then for every product, and
    // which product a converting user buys.
    println!("p_convert (offer audiobooks): {:.6}", scores.p_offer[0]);
    for (j, product) in scorer.product_names().iter().enumerate() {
        println!(
            "{product:>20}  p_convert {:.6}  p_plan {:.6}",
            scores.p_convert[j], scores.p_plan[j]
        );
    }

    // checkpoints/demo/expected.csv, first row.
    let expected = 0.025034485;
    if (f64::from(scores.p_offer[0]) - expected).abs() > 1e-6 {
        eprintln!(
            "error: expected p_convert {expected}, got {}",
            scores.p_offer[0]
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
