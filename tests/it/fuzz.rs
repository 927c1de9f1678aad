//! Seeded mutation fuzzing of the two parsers that take untrusted bytes: the
//! HTTP request bodies and the checkpoint manifest. Valid inputs are mutated
//! (bit flips, random bytes, deletions, duplications, truncations, and
//! tokens that break parsers: huge numbers, NaN, nulls, unbalanced brackets)
//! thousands of times; every outcome must be a clean error, never a panic,
//! an abort or a 5xx.
//!
//! These run in `cargo test`, seeded so that a failure reproduces;
//! `UPSELL_FUZZ_ITERATIONS` runs longer (the default is a few thousand per
//! target). The coverage-guided counterparts are the cargo-fuzz targets in
//! `fuzz/` (`scripts/cargo-fuzz.sh`).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use chacha20::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use tower::ServiceExt;
use upsell::preprocess::Value;
use upsell::serve::{AppState, Limits, Model, app};

use crate::common::repo;

const TOKENS: [&str; 14] = [
    "-1",
    "0",
    "1e308",
    "-1e308",
    "NaN",
    "null",
    "[]",
    "{}",
    "\"\"",
    "99999999999999999999",
    "[[",
    "}",
    "\"\\u0000\"",
    "true",
];

fn iterations(default: usize) -> usize {
    std::env::var("UPSELL_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One to four random edits of `input`.
fn mutate(input: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len().max(1);
        let at = rng.random_range(0..len).min(out.len());
        let last = out.len().saturating_sub(1);
        match rng.random_range(0..7) {
            0 if !out.is_empty() => out[at.min(last)] ^= 1 << rng.random_range(0..8),
            1 if !out.is_empty() => out[at.min(last)] = rng.random(),
            2 => out.insert(at, rng.random()),
            3 => {
                let end = (at + rng.random_range(1..16)).min(out.len());
                out.drain(at..end);
            }
            4 => out.truncate(at),
            5 => {
                let end = (at + rng.random_range(1..64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                out.splice(at..at, token.bytes());
            }
        }
    }
    out
}

#[tokio::test]
async fn mutated_requests_get_client_errors_never_server_errors() {
    let demo = repo().join("checkpoints/demo");
    let state = Arc::new(AppState::new(
        Model::load(&demo).unwrap(),
        demo,
        "upsell".into(),
        Limits::default(),
    ));
    let infer = br#"{"inputs": [
        {"name": "tenure_months", "shape": [2, 1], "datatype": "FP32", "data": [3.0, 14.5]},
        {"name": "country", "shape": [2, 1], "datatype": "BYTES", "data": ["SE", "US"]},
        {"name": "offer", "shape": [2, 1], "datatype": "BYTES", "data": ["family", "duo"]},
        {"name": "surface", "shape": [2, 1], "datatype": "BYTES", "data": ["push", "email"]}
    ], "outputs": [{"name": "p_convert"}]}"#;
    let recommend = br#"{"users": [{"id": "u1", "tenure_months": 3, "country": "SE",
        "age_bucket": "18-24"}], "policy": "epsilon:0.1"}"#;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for i in 0..iterations(3000) {
        let (uri, base) = if i % 2 == 0 {
            ("/v2/models/upsell/infer", &infer[..])
        } else {
            ("/v1/recommend", &recommend[..])
        };
        let body = mutate(base, &mut rng);
        let request = Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let response = app(state.clone()).oneshot(request).await.unwrap();
        assert!(
            !response.status().is_server_error(),
            "{uri} answered {} to {:?}",
            response.status(),
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn mutated_manifests_are_errors_not_crashes() {
    let demo = repo().join("checkpoints/demo");
    let dir = tempfile::tempdir().unwrap();
    for file in ["manifest.json", "model.safetensors"] {
        std::fs::copy(demo.join(file), dir.path().join(file)).unwrap();
    }
    let manifest = std::fs::read(demo.join("manifest.json")).unwrap();
    let mut record: HashMap<String, Value<'_>> = HashMap::new();
    record.insert("tenure_months".into(), Value::Number(14.0));
    record.insert("country".into(), Value::Text("SE"));
    record.insert("offer".into(), Value::Text("family"));
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut loaded = 0;
    for _ in 0..iterations(1500) {
        let text = mutate(&manifest, &mut rng);
        std::fs::write(dir.path().join("manifest.json"), &text).unwrap();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            upsell::Scorer::load(dir.path()).map(|scorer| {
                // What loads must also score without a panic.
                let _ = scorer.score_records(std::slice::from_ref(&record));
            })
        }));
        match outcome {
            Ok(result) => loaded += usize::from(result.is_ok()),
            Err(_) => panic!(
                "loading this manifest panicked: {}",
                String::from_utf8_lossy(&text)
            ),
        }
    }
    // Mutations of free text (names, versions) still load: the test does
    // reach the scoring path.
    assert!(loaded > 0);
}
