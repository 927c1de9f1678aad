//! The same network, from the same initial weights, trains to the same
//! losses and outputs on every backend (flex, ndarray, and wgpu on Mesa's
//! software Vulkan driver in CI).
//!
//! Tolerance: 2e-3 absolute on losses and probabilities after a few dozen
//! steps. Backends sum in different orders (and wgpu's kernels use other
//! reductions), so results agree to float rounding growing over steps, not
//! bit for bit.

use std::path::Path;

use burn::prelude::*;
use upsell::config::Config;
use upsell::train::{Run, network_config};

const TOLERANCE: f64 = 2e-3;

fn config() -> Config {
    let text = include_str!("../../configs/default.toml");
    let overrides: Vec<String> = [
        "train.synthetic_rows=3000",
        "train.epochs=2",
        "train.batch_size=256",
        "train.warmup_steps=5",
        "train.patience=0",
        "model.hidden=[32, 16]",
        "model.tower=[16]",
        // Dropout draws from each backend's own RNG: off, so runs compare.
        "model.dropout=0.0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Config::from_toml(text, "default.toml", Path::new(""), &overrides).unwrap()
}

struct Trained {
    losses: Vec<f64>,
    probabilities: Vec<f32>,
}

fn train_on(
    device: &Device,
    initial: &upsell::model::Network,
    prepared: &upsell::data::Prepared,
    config: &Config,
) -> Trained {
    let net = network_config(config, &prepared.preprocessor);
    let network = net.init(device).load_record(initial.clone().into_record());
    let dir = tempfile::tempdir().unwrap();
    let outcome = Run::with_network(config, &net, network, device)
        .fit(&prepared.train, &prepared.valid, dir.path(), false)
        .unwrap();
    let losses = outcome
        .history
        .iter()
        .flat_map(|e| [e.train_loss, e.valid_loss])
        .collect();
    let layout = upsell::model::inputs::Layout::new(&net);
    let inputs = layout.inputs(&prepared.valid.features, 0..64, device);
    let (p, _) = outcome.network.score_all(&inputs);
    let probabilities = upsell::model::inputs::to_vec(p);
    Trained {
        losses,
        probabilities,
    }
}

fn assert_close(name: &str, a: &Trained, b: &Trained) {
    for (x, y) in a.losses.iter().zip(&b.losses) {
        assert!((x - y).abs() < TOLERANCE, "{name}: loss {x} vs {y}");
    }
    let worst = a
        .probabilities
        .iter()
        .zip(&b.probabilities)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max);
    assert!(worst < TOLERANCE, "{name}: probabilities differ by {worst}");
}

#[test]
fn flex_ndarray_and_wgpu_train_alike() {
    let config = config();
    let prepared = upsell::data::prepare(&config).unwrap();
    let net = network_config(&config, &prepared.preprocessor);
    let flex = Device::flex();
    flex.seed(config.seed);
    let initial = net.init(&flex);
    // Materialise the lazily initialised weights once, on the CPU.
    let initial = net.init(&flex).load_record(initial.into_record());

    let reference = train_on(&flex, &initial, &prepared, &config);
    let ndarray = upsell::model::device::device(upsell::config::BackendKind::Ndarray).unwrap();
    assert_close(
        "ndarray",
        &reference,
        &train_on(&ndarray, &initial, &prepared, &config),
    );
    let wgpu = upsell::model::device::device(upsell::config::BackendKind::Wgpu).unwrap();
    assert_close(
        "wgpu",
        &reference,
        &train_on(&wgpu, &initial, &prepared, &config),
    );
}
