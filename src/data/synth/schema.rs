//! The log's vocabulary: products and their prices, contexts, feature
//! columns and their values, and the config that reads the log.

use crate::config::{ColumnsConfig, Config, EligibilityRule, SplitRule};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Every product that can be offered or bought, with its value (monthly
/// price).
pub const PRODUCTS: [(&str, f64); 6] = [
    ("premium_individual", 11.99),
    ("duo", 16.99),
    ("family", 19.99),
    ("student", 5.99),
    ("audiobooks", 9.99),
    ("podcast_plus", 4.99),
];

/// The surfaces an offer is shown on, with the logging policy's probability.
pub const SURFACES: [(&str, f64); 4] = [
    ("home_banner", 0.40),
    ("in_app_message", 0.30),
    ("push", 0.15),
    ("email", 0.15),
];

/// The messages an offer is shown with, with the logging policy's
/// probability.
pub const MESSAGES: [(&str, f64); 3] = [
    ("discount", 0.40),
    ("feature", 0.35),
    ("social_proof", 0.25),
];

/// Countries, most frequent first (Zipf-like frequencies).
pub const COUNTRIES: [&str; 30] = [
    "US", "BR", "GB", "DE", "MX", "FR", "IN", "ID", "JP", "ES", "CA", "IT", "AU", "PH", "NL", "PL",
    "SE", "TR", "AR", "CO", "CL", "ZA", "KR", "NG", "EG", "PT", "BE", "CH", "NO", "IE",
];

/// Platforms with their frequencies.
pub const PLATFORMS: [(&str, f64); 5] = [
    ("ios", 0.30),
    ("android", 0.42),
    ("web", 0.10),
    ("desktop", 0.10),
    ("tv", 0.08),
];

/// The plans a user can be on before the exposure.
pub const CURRENT_PLANS: [&str; 5] = ["free", "premium_individual", "duo", "family", "student"];

/// Age buckets with their frequencies.
pub const AGE_BUCKETS: [(&str, f64); 6] = [
    ("13-17", 0.08),
    ("18-24", 0.26),
    ("25-34", 0.28),
    ("35-44", 0.18),
    ("45-54", 0.11),
    ("55+", 0.09),
];

/// Acquisition channels with their frequencies.
pub const ACQUISITION_CHANNELS: [(&str, f64); 5] = [
    ("organic", 0.45),
    ("paid_social", 0.20),
    ("referral", 0.12),
    ("partner", 0.10),
    ("app_store", 0.13),
];

/// Numeric feature columns of the exposure log.
pub const NUMERIC_COLUMNS: [&str; 12] = [
    "tenure_months",
    "listening_hours_7d",
    "active_days_28d",
    "skips_per_hour",
    "ad_impressions_7d",
    "podcast_share",
    "audiobook_hours_30d",
    "devices",
    "household_size",
    "student_signal",
    "price_sensitivity",
    "days_since_last_upsell",
];

/// Categorical feature columns of the exposure log.
pub const CATEGORICAL_COLUMNS: [&str; 5] = [
    "country",
    "platform",
    "current_plan",
    "age_bucket",
    "acquisition_channel",
];

/// Numeric columns with heavy tails, log-transformed by the config.
pub const LOG1P_COLUMNS: [&str; 5] = [
    "tenure_months",
    "listening_hours_7d",
    "ad_impressions_7d",
    "audiobook_hours_30d",
    "days_since_last_upsell",
];

/// The hashed region column and its number of buckets in [`config`].
pub const REGION_BUCKETS: u32 = 1024;

/// The first exposure time: 2026-01-05T00:00:00Z, in milliseconds.
pub const START_MS: i64 = 1_767_571_200_000;

/// The log covers this many milliseconds (28 days).
pub const SPAN_MS: i64 = 28 * 86_400_000;

/// The weight of the uniform floor in the logging policy's offer
/// distribution: every product has a probability of at least
/// `LOGGING_EPSILON / 6`.
pub const LOGGING_EPSILON: f64 = 0.06;

/// The probability that a buyer takes the offered product rather than one
/// drawn from their own affinities.
pub const OFFER_STICKINESS: f64 = 0.7;

/// The offer value of a row in the logging policy's no-offer holdout.
pub const NO_OFFER: &str = "none";

/// The config that trains on a log written by [`write()`](super::write): every column with
/// its role, the products with their values, `data.train = "exposures"`
/// (relative to the config file), a random split, `log1p` on the
/// heavy-tailed columns and `region_id` hashed into [`REGION_BUCKETS`]
/// buckets.
pub fn config() -> Config {
    // Starting from parsed TOML fills every other field with its default.
    let mut config: Config = toml::from_str("[columns]\nconverted = \"converted\"\n")
        .expect("the minimal synthetic config parses");
    let strings = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    config.data.train = Some(PathBuf::from("exposures"));
    config.data.split = SplitRule::Random;
    config.columns = ColumnsConfig {
        numeric: strings(&NUMERIC_COLUMNS),
        categorical: strings(&CATEGORICAL_COLUMNS),
        hashed: BTreeMap::from([("region_id".to_string(), REGION_BUCKETS)]),
        offer: Some("offer".into()),
        context: strings(&["surface", "message"]),
        converted: "converted".into(),
        plan: Some("plan".into()),
        propensity: Some("propensity".into()),
        value: Some("value".into()),
        time: Some("exposure_time".into()),
        id: Some("user_id".into()),
        ..ColumnsConfig::default()
    };
    config.products = PRODUCTS
        .iter()
        .map(|(name, value)| (name.to_string(), *value))
        .collect();
    config.preprocess.log1p = strings(&LOG1P_COLUMNS);
    // The world's business rules, which the truth's `eligible__<product>`
    // columns follow.
    config.policy.exclude = vec![
        EligibilityRule {
            column: "current_plan".into(),
            equals_product: true,
            ..EligibilityRule::default()
        },
        EligibilityRule {
            products: vec![PRODUCTS[STUDENT].0.into()],
            column: "age_bucket".into(),
            not_in: STUDENT_AGES
                .iter()
                .map(|&a| AGE_BUCKETS[a].0.into())
                .collect(),
            ..EligibilityRule::default()
        },
    ];
    config
}

pub(super) const STUDENT: usize = 3;

/// Ages (indices into [`AGE_BUCKETS`]) that may be offered `student`.
pub(super) const STUDENT_AGES: [usize; 2] = [0, 1];
