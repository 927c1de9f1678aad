//! Resumable training state: everything `upsell train --resume` needs to
//! continue a run where it stopped, in one file written atomically
//! (`RUN_DIR/resume.bin`), so a crash at any moment leaves either the
//! previous state or the new one, never a torn one.
//!
//! The file is `UPSELLR1`, the header's length (u64, little-endian), the
//! header (JSON: where training stands, the metrics so far, the dropout
//! stream's position, and the sha256 of each blob), then the blobs: the
//! training weights in burnpack (which keeps burn's parameter ids, so the
//! optimiser state still matches them), the optimiser state (burnpack), and
//! the best epoch's weights (safetensors), if any.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::EpochMetrics;
use crate::scoring::checkpoint::sha256_hex;
use crate::{Error, Result};

/// The file name inside a run directory.
pub const RESUME_FILE: &str = "resume.bin";
const MAGIC: &[u8; 8] = b"UPSELLR1";

/// Where training stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The epoch in progress (1-based).
    pub epoch: usize,
    /// Batches of that epoch already trained.
    pub batches_done: usize,
    /// Optimisation steps so far, all epochs.
    pub step: usize,
    /// The epoch's loss sums so far (weighted by rows) and rows.
    pub conversion_sum: f64,
    pub plan_sum: Option<f64>,
    pub weight_sum: f64,
    /// Seconds of training so far, for the reported rate.
    pub train_seconds: f64,
    /// Epochs without improvement (early stopping).
    pub since_best: usize,
    /// Position of the dropout masks' random stream.
    pub dropout_word_pos: String,
    /// The same for data-parallel replicas 1.. (absent in older states).
    #[serde(default)]
    pub replica_dropout: Vec<String>,
    pub history: Vec<EpochMetrics>,
    pub best: Option<EpochMetrics>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    /// The run's resolved config, which the resumed run must match.
    config: String,
    position: Position,
    /// (name, bytes, sha256) of each blob, in file order.
    blobs: Vec<(String, u64, String)>,
}

/// A saved state.
pub struct ResumeState {
    pub config: String,
    pub position: Position,
    /// Training weights (burnpack, with parameter ids).
    pub weights: Vec<u8>,
    /// The optimiser state (burnpack).
    pub optimizer: Vec<u8>,
    /// The best epoch's weights (safetensors), once an epoch has ended.
    pub best_weights: Option<Vec<u8>>,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::Resume {
        path: path.to_path_buf(),
        message: reason.into(),
    }
}

impl ResumeState {
    /// Writes the state to `run_dir/resume.bin`, atomically.
    pub fn write(&self, run_dir: &Path) -> Result<PathBuf> {
        let mut blobs: Vec<(&str, &[u8])> =
            vec![("weights", &self.weights), ("optimizer", &self.optimizer)];
        if let Some(best) = &self.best_weights {
            blobs.push(("best_weights", best));
        }
        let header = Header {
            config: self.config.clone(),
            position: self.position.clone(),
            blobs: blobs
                .iter()
                .map(|(name, bytes)| (name.to_string(), bytes.len() as u64, sha256_hex(bytes)))
                .collect(),
        };
        let header = serde_json::to_vec(&header).expect("the header serialises");
        let mut out = Vec::with_capacity(
            16 + header.len() + blobs.iter().map(|(_, b)| b.len()).sum::<usize>(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for (_, bytes) in &blobs {
            out.extend_from_slice(bytes);
        }
        let path = run_dir.join(RESUME_FILE);
        crate::atomic::write(&path, &out)?;
        Ok(path)
    }

    /// Reads and verifies `run_dir/resume.bin`.
    pub fn read(run_dir: &Path) -> Result<ResumeState> {
        let path = run_dir.join(RESUME_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if bytes.get(..8) != Some(MAGIC.as_slice()) {
            return Err(corrupt(&path, "it does not start with UPSELLR1"));
        }
        let length = bytes
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| corrupt(&path, "truncated header"))?;
        let header_end = 16usize
            .checked_add(length)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| corrupt(&path, "truncated header"))?;
        let header: Header = serde_json::from_slice(&bytes[16..header_end])
            .map_err(|e| corrupt(&path, e.to_string()))?;
        let mut offset = header_end;
        let mut blobs = std::collections::HashMap::new();
        for (name, length, sha256) in &header.blobs {
            let end = usize::try_from(*length)
                .ok()
                .and_then(|n| offset.checked_add(n))
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| corrupt(&path, format!("{name} is truncated")))?;
            let blob = &bytes[offset..end];
            if &sha256_hex(blob) != sha256 {
                return Err(corrupt(&path, format!("{name} fails its checksum")));
            }
            blobs.insert(name.clone(), blob.to_vec());
            offset = end;
        }
        let mut take = |name: &str| blobs.remove(name);
        Ok(ResumeState {
            weights: take("weights").ok_or_else(|| corrupt(&path, "no weights"))?,
            optimizer: take("optimizer").ok_or_else(|| corrupt(&path, "no optimizer state"))?,
            best_weights: take("best_weights"),
            config: header.config,
            position: header.position,
        })
    }
}
