//! The shipped real data sets load through the same pipeline as any other.

use upsell::config::Config;
use upsell::data;

use crate::common::repo;

fn prepare(config: &str) -> data::Prepared {
    let config = Config::load(&repo().join("configs").join(config), &[]).unwrap();
    data::prepare(&config).unwrap()
}

fn positive_rate(prepared: &data::Prepared) -> f64 {
    let labels = prepared
        .train
        .targets
        .converted
        .iter()
        .chain(&prepared.valid.targets.converted);
    let (n, positives) = labels.fold((0, 0.0), |(n, p), y| (n + 1, p + f64::from(*y)));
    positives / n as f64
}

#[test]
fn mlc_churn_loads() {
    let prepared = prepare("mlc_churn.toml");
    let report = &prepared.report;
    assert_eq!(report.train.rows_read, 5000);
    assert_eq!(report.train_rows + report.valid_rows, 5000);
    let share = report.valid_rows as f64 / 5000.0;
    assert!((share - 0.2).abs() < 0.03, "{share}");
    // 707 of the 5,000 customers churned.
    assert!((positive_rate(&prepared) - 707.0 / 5000.0).abs() < 1e-9);
    // area_code has three values, yes/no plans two each, plus OOV and missing.
    assert_eq!(report.embedding_sizes, vec![5, 4, 4, 65]);
    // 15 numeric columns: a value and a missing flag each, then their bins.
    let pre = &prepared.preprocessor;
    assert_eq!(pre.numeric.len(), 15);
    let bins: usize = pre.numeric.iter().map(|f| f.bin_width()).sum();
    assert!((15..=15 * 8).contains(&bins), "{bins}");
    assert_eq!(
        prepared.train.features.numeric.len(),
        report.train_rows * (30 + bins)
    );
}

#[test]
fn caravan_loads() {
    let prepared = prepare("caravan.toml");
    let report = &prepared.report;
    assert_eq!(report.train.rows_read, 5822);
    assert_eq!(report.train_rows + report.valid_rows, 5822);
    // 348 of the 5,822 customers bought caravan insurance.
    assert!((positive_rate(&prepared) - 348.0 / 5822.0).abs() < 1e-9);
    assert_eq!(prepared.preprocessor.numeric.len(), 83);
    assert_eq!(prepared.preprocessor.categorical.len(), 2);
}

fn churn_auc(overrides: &[&str]) -> f64 {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let config = Config::load(&repo().join("configs/mlc_churn.toml"), &overrides).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let device = upsell::model::device::device(config.train.backend).unwrap();
    let summary = upsell::train::train(&config, dir.path(), &device, false).unwrap();
    summary.best.valid_conversion_auc.unwrap()
}

/// The network must rank churners at least as well as a logistic regression
/// on the same seeded 80/20 split. The logistic regression is the same
/// pipeline with no hidden layers: a linear logit over the standardised
/// numeric features and the (one-hot equivalent) embeddings, trained with
/// the same optimiser and weight decay as an L2 penalty.
#[test]
fn mlc_churn_network_beats_logistic_regression() {
    let network = churn_auc(&[]);
    let logistic = churn_auc(&["model.hidden=[]", "model.tower=[]", "model.dropout=0.0"]);
    eprintln!("mlc_churn validation AUC: network {network:.4}, logistic regression {logistic:.4}");
    assert!(
        network >= logistic,
        "network {network} < logistic regression {logistic}"
    );
    assert!(network > 0.85, "network AUC {network}");
}
