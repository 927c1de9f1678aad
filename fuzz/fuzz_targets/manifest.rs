//! Manifests against the checkpoint loader: whatever the bytes, loading is
//! a typed error or a scorer that scores, never a panic.
#![no_main]

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use upsell::preprocess::Value;

/// A checkpoint directory holding the demo's weights; each input becomes
/// its manifest.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../checkpoints/demo");
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::copy(
            demo.join("model.safetensors"),
            dir.path().join("model.safetensors"),
        )
        .expect("the demo weights copy");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    std::fs::write(dir.path().join("manifest.json"), data).expect("the manifest is written");
    if let Ok(scorer) = upsell::Scorer::load(dir.path()) {
        let mut record: HashMap<String, Value<'_>> = HashMap::new();
        record.insert("tenure_months".into(), Value::Number(14.0));
        record.insert("country".into(), Value::Text("SE"));
        record.insert("offer".into(), Value::Text("family"));
        let _ = scorer.score_records(std::slice::from_ref(&record));
    }
});
