//! The checkpoint directory: `manifest.json` (format version, versions,
//! network shape, fitted preprocessing, products, metrics, weights checksum)
//! and `model.safetensors`. Written atomically: a directory is complete or it
//! does not exist under its final name.

pub use crate::error::CheckpointError;
use std::path::Path;

use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Network, NetworkConfig};
use crate::preprocess::Preprocessor;

/// The manifest format this build writes and the newest it reads. 2 added
/// the numeric columns' bin edges (`preprocessor.numeric[].bins`); a
/// version 1 manifest reads as one without bins. 3 added seed ensembles
/// (`network.members`); an older manifest reads as one member.
pub const FORMAT_VERSION: u32 = 3;
/// The burn release the weights were written with (pinned in Cargo.toml).
pub const BURN_VERSION: &str = "0.22.1";
pub const MANIFEST: &str = "manifest.json";
pub const WEIGHTS: &str = "model.safetensors";

/// The weights file and its checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsEntry {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Everything needed to score, besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub upsell_version: String,
    pub burn_version: String,
    pub network: NetworkConfig,
    /// The fitted preprocessing: vocabularies, normalisation, products and
    /// their values, offer/context/plan columns.
    pub preprocessor: Preprocessor,
    /// The id column carried to outputs, if the config named one.
    pub id_column: Option<String>,
    /// Final validation metrics of the exported weights.
    pub metrics: serde_json::Value,
    /// The resolved experiment config, as TOML, for provenance.
    pub config: String,
    pub weights: WeightsEntry,
    /// The calibration applied to every score; absent in checkpoints written
    /// before calibration existed (they score uncalibrated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::scoring::calibration::Calibration>,
}

impl Manifest {
    /// The model version: the first 12 hex digits of the weights' sha256,
    /// as the server reports it and decision logs record it.
    pub fn version(&self) -> String {
        self.weights.sha256.chars().take(12).collect()
    }
}

impl Manifest {
    /// The resolved config the checkpoint was trained with, with
    /// `overrides` applied (`--set` syntax); relative paths stay relative.
    pub fn saved_config(
        &self,
        overrides: &[String],
    ) -> Result<crate::Config, crate::config::ConfigError> {
        crate::Config::from_toml(
            &self.config,
            "the checkpoint's saved config",
            Path::new(""),
            overrides,
        )
    }
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(feature = "train")]
/// The safetensors bytes of a network's weights. A one-member network's
/// tensors are named as the member's (`encoder.0.linear.weight`), as
/// before ensembles existed; an ensemble's carry the member's index
/// (`members.1.encoder.0.linear.weight`).
pub fn weights_bytes(network: &Network) -> Result<Vec<u8>, CheckpointError> {
    let fail = |e: burn::store::SafetensorsStoreError| CheckpointError::Weights {
        path: std::path::PathBuf::from(WEIGHTS),
        message: e.to_string(),
    };
    let mut store = SafetensorsStore::from_bytes(None);
    match network.members() {
        [member] => member.save_into(&mut store),
        _ => network.save_into(&mut store),
    }
    .map_err(fail)?;
    let bytes = store.get_bytes().map_err(fail)?;
    canonical_safetensors(&bytes).ok_or_else(|| CheckpointError::Weights {
        path: std::path::PathBuf::from(WEIGHTS),
        message: "burn wrote a malformed safetensors buffer".into(),
    })
}

/// A network of shape `config` with the weights of a safetensors buffer.
pub fn network_from_safetensors(
    config: &NetworkConfig,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<Network, String> {
    let mut network = config.init(device);
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = match network.members_mut() {
        [member] => member.load_from(&mut store),
        _ => network.load_from(&mut store),
    }
    .map_err(|e| e.to_string())?;
    if !result.is_success() {
        return Err(format!(
            "missing {:?}, errors {:?}",
            result.missing, result.errors
        ));
    }
    Ok(network)
}

/// The number of values in a safetensors buffer, from its header.
fn stored_parameters(bytes: &[u8]) -> Option<u64> {
    let header_len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(header_len)?)?).ok()?;
    let mut total = 0u64;
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let shape = entry.get("shape")?.as_array()?;
        let count = shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(d.as_u64()?))?;
        total = total.checked_add(count)?;
    }
    Some(total)
}

#[cfg(feature = "train")]
/// Rewrites a safetensors buffer with its tensors in name order. burn's
/// writer orders the header by hash map iteration, so identical weights
/// would otherwise give different bytes (and checksums) from run to run.
fn canonical_safetensors(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::collections::BTreeMap;
    let header_len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8 + header_len)?).ok()?;
    let data = bytes.get(8 + header_len..)?;
    let mut out_header: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut out_data = Vec::with_capacity(data.len());
    for (name, entry) in header {
        if name == "__metadata__" {
            // Through a BTreeMap, so the metadata's keys are sorted too.
            let metadata: BTreeMap<String, serde_json::Value> =
                serde_json::from_value(entry).ok()?;
            out_header.insert(name, serde_json::to_value(metadata).ok()?);
            continue;
        }
        let offsets = entry.get("data_offsets")?.as_array()?;
        let (start, end) = (
            offsets.first()?.as_u64()? as usize,
            offsets.get(1)?.as_u64()? as usize,
        );
        let begin = out_data.len();
        out_data.extend_from_slice(data.get(start..end)?);
        let mut entry = entry.clone();
        entry["data_offsets"] = serde_json::json!([begin, out_data.len()]);
        out_header.insert(name, entry);
    }
    let mut json = serde_json::to_vec(&out_header).ok()?;
    // The data must start 8-byte aligned: pad the header with spaces.
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + out_data.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&out_data);
    Some(out)
}

#[cfg(feature = "train")]
/// Writes a checkpoint directory at `dir` (which must not exist): into a
/// hidden sibling first, renamed into place once every file is synced.
pub fn write(dir: &Path, manifest: &Manifest, weights: &[u8]) -> Result<(), CheckpointError> {
    let io = |path: &Path, source: std::io::Error| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let exists = || CheckpointError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "already exists; refusing to overwrite it",
        ),
    };
    crate::atomic::write_dir(dir, ".checkpoint-", io, exists, |staging| {
        let put = |name: &str, bytes: &[u8]| -> Result<(), CheckpointError> {
            use std::io::Write;
            let path = staging.join(name);
            let mut file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
            file.write_all(bytes).map_err(|e| io(&path, e))?;
            file.sync_all().map_err(|e| io(&path, e))
        };
        put(WEIGHTS, weights)?;
        let json = serde_json::to_vec_pretty(manifest).expect("a manifest always serialises");
        put(MANIFEST, &json)
    })
}

#[cfg(feature = "train")]
/// Builds the manifest for a trained network.
pub fn manifest(
    network: NetworkConfig,
    preprocessor: Preprocessor,
    id_column: Option<String>,
    metrics: serde_json::Value,
    config: String,
    weights: &[u8],
) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        upsell_version: env!("CARGO_PKG_VERSION").to_string(),
        burn_version: BURN_VERSION.to_string(),
        network,
        preprocessor,
        id_column,
        metrics,
        config,
        weights: WeightsEntry {
            file: WEIGHTS.to_string(),
            sha256: sha256_hex(weights),
            bytes: weights.len() as u64,
        },
        calibration: None,
    }
}

/// The largest manifest read; real ones are a few kilobytes (vocabularies
/// included), so this only stops a wrong file from being read whole.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Reads and checks a checkpoint's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, CheckpointError> {
    let path = dir.join(MANIFEST);
    // A manifest is a small regular file: anything else (a FIFO, a device, a
    // directory) would block or mislead the read, so it is refused unread.
    let text = match std::fs::metadata(&path).and_then(|m| {
        if m.is_file() && m.len() <= MAX_MANIFEST_BYTES {
            std::fs::read(&path).map(Some)
        } else {
            Ok(None)
        }
    }) {
        Ok(Some(text)) => text,
        Ok(None) => {
            return Err(CheckpointError::BadManifest {
                path,
                message: format!("not a regular file of at most {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::MissingManifest {
                dir: dir.to_path_buf(),
                file: MANIFEST,
            });
        }
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    // The version is read on its own first, so a newer manifest is reported
    // as newer rather than as whatever field it added.
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let bad = |e: serde_json::Error| CheckpointError::BadManifest {
        path: path.clone(),
        message: e.to_string(),
    };
    let version: Version = serde_json::from_slice(&text).map_err(bad)?;
    if version.format_version > FORMAT_VERSION {
        return Err(CheckpointError::NewerFormat {
            path,
            found: version.format_version,
            supported: FORMAT_VERSION,
        });
    }
    let manifest: Manifest = serde_json::from_slice(&text).map_err(bad)?;
    if let Some(reason) = manifest.inconsistency() {
        return Err(CheckpointError::BadManifest {
            path,
            message: reason,
        });
    }
    Ok(manifest)
}

impl Manifest {
    /// What makes a parsed manifest unusable, beyond its JSON shape.
    fn inconsistency(&self) -> Option<String> {
        let net = &self.network;
        if net.members == 0 {
            return Some("network members must be at least 1".into());
        }
        if net.embedding_dim == 0 || net.offer_dim == 0 {
            return Some("network embedding widths must be at least 1".into());
        }
        if net.hidden.contains(&0) || net.tower.contains(&0) {
            return Some("network layer widths must be at least 1".into());
        }
        if !(0.0..1.0).contains(&net.dropout) {
            return Some(format!("network dropout {} is not in [0, 1)", net.dropout));
        }
        if net.products != self.preprocessor.products.len() {
            return Some(format!(
                "the network has {} products but the preprocessing {}",
                net.products,
                self.preprocessor.products.len()
            ));
        }
        let pre = &self.preprocessor;
        let file = Path::new(&self.weights.file);
        if file.file_name() != Some(file.as_os_str()) {
            return Some(format!(
                "weights.file {:?} must be a plain file name inside the checkpoint directory",
                self.weights.file
            ));
        }
        if let Some(f) = pre
            .numeric
            .iter()
            .find(|f| !(f.mean.is_finite() && f.std.is_finite() && f.std > 0.0))
        {
            return Some(format!(
                "numeric column {:?}: the mean must be finite and the standard deviation finite \
                 and above 0 (mean {}, std {})",
                f.column, f.mean, f.std
            ));
        }
        if let Some(h) = pre.hashed.iter().find(|h| h.buckets == 0) {
            return Some(format!(
                "hashed column {:?}: the number of buckets must be at least 1",
                h.column
            ));
        }
        if net.no_offer != pre.no_offer.is_some() {
            return Some(
                "the network's no-offer arm and the preprocessing's no_offer value disagree".into(),
            );
        }
        if let Some(f) = pre.numeric.iter().find(|f| {
            f.bins.iter().any(|e| !e.is_finite()) || f.bins.windows(2).any(|e| e[0] >= e[1])
        }) {
            return Some(format!(
                "numeric column {:?}: bin edges must be finite and increasing",
                f.column
            ));
        }
        if let Some(reference) = &pre.reference {
            let share = |x: &f64| x.is_finite() && *x >= 0.0;
            let numeric_fits = reference.numeric.len() == pre.numeric.len()
                && reference.numeric.iter().all(|r| {
                    r.shares.len() == r.edges.len() + 2
                        && r.shares.iter().all(share)
                        && r.edges.iter().all(|e| e.is_finite())
                        && r.edges.windows(2).all(|e| e[0] < e[1])
                });
            let categorical_fits = reference.categorical.len() == pre.categorical.len()
                && reference
                    .categorical
                    .iter()
                    .zip(&pre.categorical)
                    .all(|(shares, v)| shares.len() == v.size() && shares.iter().all(share));
            if !(numeric_fits && categorical_fits) {
                return Some(
                    "the drift reference does not match the preprocessing's features".into(),
                );
            }
        }
        let context: Vec<usize> = pre.context.iter().map(|v| v.size()).collect();
        if net.embedding_sizes != pre.embedding_sizes()
            || net.context_sizes != context
            || net.numeric_width != pre.numeric_width()
            || net.has_offer != pre.offer.is_some()
        {
            return Some("the network's inputs do not match the preprocessing".into());
        }
        if let Some(calibration) = &self.calibration
            && let Some(map) = &calibration.isotonic
            && (map.x.is_empty()
                || map.x.len() != map.y.len()
                || map
                    .x
                    .windows(2)
                    .any(|w| w[0] > w[1] || w[0].is_nan() || w[1].is_nan()))
        {
            return Some("the isotonic calibration is malformed".into());
        }
        None
    }
}

/// Loads a checkpoint onto `device`, verifying the weights' checksum.
pub fn load(dir: &Path, device: &Device) -> Result<(Manifest, Network), CheckpointError> {
    let manifest = read_manifest(dir)?;
    let path = dir.join(&manifest.weights.file);
    // The size is compared before reading, so that a wrong file (or a
    // FIFO, or a huge file) is refused without reading it.
    let metadata = std::fs::metadata(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    if !metadata.is_file() || metadata.len() != manifest.weights.bytes {
        return Err(CheckpointError::Weights {
            path,
            message: if metadata.is_file() {
                format!(
                    "{} bytes where weights.bytes says {}: truncated or replaced",
                    metadata.len(),
                    manifest.weights.bytes
                )
            } else {
                "not a regular file".to_string()
            },
        });
    }
    let bytes = std::fs::read(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    let found = sha256_hex(&bytes);
    if found != manifest.weights.sha256 {
        return Err(CheckpointError::Checksum {
            path,
            expected: manifest.weights.sha256.clone(),
            found,
        });
    }
    // A manifest that does not describe these weights is refused before
    // anything is allocated: a corrupted width could ask for terabytes.
    let stored = stored_parameters(&bytes).ok_or_else(|| CheckpointError::Weights {
        path: path.clone(),
        message: "not a safetensors file".into(),
    })?;
    let expected = manifest.network.parameter_count();
    if stored != expected {
        return Err(CheckpointError::BadManifest {
            path: dir.join(MANIFEST),
            message: format!(
                "its network has {expected} parameters but {} holds {stored}",
                manifest.weights.file
            ),
        });
    }
    let network = network_from_safetensors(&manifest.network, bytes, device)
        .map_err(|message| CheckpointError::Weights { path, message })?;
    Ok((manifest, network))
}

/// A manifest in readable form, for `upsell inspect`.
pub fn describe(manifest: &Manifest) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let net = &manifest.network;
    let pre = &manifest.preprocessor;
    let _ = writeln!(
        out,
        "checkpoint format {} (upsell {}, burn {})",
        manifest.format_version, manifest.upsell_version, manifest.burn_version
    );
    let _ = writeln!(
        out,
        "weights: {} ({} bytes, sha256 {})",
        manifest.weights.file, manifest.weights.bytes, manifest.weights.sha256
    );
    let _ = writeln!(
        out,
        "network: {} member(s), encoder {:?} ({:?}, dropout {}, layer norm {}), tower {:?}, embeddings {}d, offer/context {}d{}",
        net.members,
        net.hidden,
        net.activation,
        net.dropout,
        net.layer_norm,
        net.tower,
        net.embedding_dim,
        net.offer_dim,
        if net.wide { ", wide part" } else { "" }
    );
    let _ = writeln!(out, "numeric features ({}):", pre.numeric.len());
    for f in &pre.numeric {
        let log = if f.log1p { " log1p," } else { "" };
        let _ = writeln!(
            out,
            "  {:<28}{log} mean {:.4}, std {:.4}, {} bins",
            f.column,
            f.mean,
            f.std,
            f.bin_width()
        );
    }
    let _ = writeln!(out, "categorical features ({}):", pre.categorical.len());
    for v in &pre.categorical {
        let _ = writeln!(
            out,
            "  {:<28} {} values + oov + missing",
            v.column(),
            v.tokens().len()
        );
    }
    for h in &pre.hashed {
        let _ = writeln!(out, "  {:<28} hashed into {} buckets", h.column, h.buckets);
    }
    if let Some(offer) = &pre.offer {
        let _ = writeln!(out, "offer column: {offer}");
    }
    for v in &pre.context {
        let _ = writeln!(out, "context {:<20} {:?}", v.column(), v.tokens());
    }
    if let Some(plan) = &pre.plan {
        let _ = writeln!(out, "plan column: {plan}");
    }
    let _ = writeln!(out, "products ({}):", pre.products.len());
    for p in &pre.products {
        let _ = writeln!(out, "  {:<28} value {}", p.name, p.value);
    }
    if let Some(id) = &manifest.id_column {
        let _ = writeln!(out, "id column: {id}");
    }
    let _ = writeln!(out, "validation metrics:");
    if let Some(metrics) = manifest.metrics.as_object() {
        for (key, value) in metrics {
            let _ = writeln!(out, "  {key:<28} {value}");
        }
    }
    out
}
