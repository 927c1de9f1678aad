//! MLflow's request and response bodies, and the batches that keep each
//! request within the server's limits.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

// MLflow's limits for `runs/log-batch` (mlflow/utils/validation.py).
pub(super) const MAX_PARAMS_PER_BATCH: usize = 100;

pub(super) const MAX_METRICS_PER_BATCH: usize = 1000;

pub(super) const MAX_ITEMS_PER_BATCH: usize = 1000;

/// The server rejects request bodies over 1 MB; keep a margin for the envelope.
pub(super) const MAX_BATCH_BYTES: usize = 900_000;

/// Longest param value MLflow accepts, in characters (Python `len`).
pub(super) const MAX_PARAM_VALUE_CHARS: usize = 6000;

/// Longest tag value every MLflow 2.x and 3.x server accepts.
pub(super) const MAX_TAG_VALUE_CHARS: usize = 5000;

#[derive(Serialize)]
pub(super) struct CreateExperiment<'a> {
    pub(super) name: &'a str,
}

#[derive(Deserialize)]
pub(super) struct CreateExperimentResponse {
    pub(super) experiment_id: String,
}

#[derive(Deserialize)]
pub(super) struct GetExperimentResponse {
    pub(super) experiment: Experiment,
}

#[derive(Deserialize)]
pub(super) struct Experiment {
    pub(super) experiment_id: String,
    pub(super) lifecycle_stage: Option<String>,
}

#[derive(Serialize)]
pub(super) struct Tag<'a> {
    pub(super) key: &'a str,
    pub(super) value: &'a str,
}

impl<'a> Tag<'a> {
    pub(super) fn new(key: &'a str, value: &'a str) -> Self {
        Tag { key, value }
    }
}

#[derive(Serialize)]
pub(super) struct CreateRun<'a> {
    pub(super) experiment_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) run_name: Option<&'a str>,
    pub(super) start_time: i64,
    pub(super) tags: Vec<Tag<'a>>,
}

#[derive(Deserialize)]
pub(super) struct CreateRunResponse {
    pub(super) run: RunResponse,
}

#[derive(Deserialize)]
pub(super) struct RunResponse {
    pub(super) info: RunInfo,
}

#[derive(Deserialize)]
pub(super) struct RunInfo {
    pub(super) run_id: String,
    pub(super) artifact_uri: String,
}

#[derive(Serialize)]
pub(super) struct UpdateRun<'a> {
    pub(super) run_id: &'a str,
    pub(super) status: &'static str,
    pub(super) end_time: i64,
}

#[derive(Serialize)]
pub(super) struct SetTag<'a> {
    pub(super) run_id: &'a str,
    pub(super) key: &'a str,
    pub(super) value: Cow<'a, str>,
}

#[derive(Serialize)]
pub(super) struct CreateRegisteredModel<'a> {
    pub(super) name: &'a str,
}

#[derive(Serialize)]
pub(super) struct CreateModelVersion<'a> {
    pub(super) name: &'a str,
    pub(super) source: &'a str,
    pub(super) run_id: &'a str,
}

#[derive(Deserialize)]
pub(super) struct CreateModelVersionResponse {
    pub(super) model_version: ModelVersion,
}

#[derive(Deserialize)]
pub(super) struct ModelVersion {
    pub(super) version: String,
}

/// One `runs/log-batch` request body.
#[derive(Debug, Serialize)]
pub(super) struct LogBatch<'a> {
    pub(super) run_id: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) metrics: Vec<Metric<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) params: Vec<Param<'a>>,
}

#[derive(Debug, Serialize)]
pub(super) struct Metric<'a> {
    pub(super) key: &'a str,
    pub(super) value: f64,
    pub(super) timestamp: i64,
    pub(super) step: i64,
}

#[derive(Debug, Serialize)]
pub(super) struct Param<'a> {
    pub(super) key: &'a str,
    pub(super) value: Cow<'a, str>,
}

// ---------------------------------------------------------------------------
// Batching (pure, so tests need no server)

/// `runs/log-batch` bodies carrying `params`, within MLflow's limits, with
/// over-long values truncated.
pub(super) fn param_batches<'a>(
    run_id: &'a str,
    params: &'a [(String, String)],
) -> Vec<LogBatch<'a>> {
    let items = params.iter().map(|(key, value)| Param {
        key,
        value: truncate_param(value),
    });
    chunk(items, MAX_PARAMS_PER_BATCH)
        .into_iter()
        .map(|params| LogBatch {
            run_id,
            metrics: Vec::new(),
            params,
        })
        .collect()
}

/// `runs/log-batch` bodies carrying the finite `metrics`, within MLflow's limits.
pub(super) fn metric_batches<'a>(
    run_id: &'a str,
    step: i64,
    timestamp: i64,
    metrics: &'a [(String, f64)],
) -> Vec<LogBatch<'a>> {
    let items = metrics
        .iter()
        .filter(|(_, value)| value.is_finite())
        .map(|(key, value)| Metric {
            key,
            value: *value,
            timestamp,
            step,
        });
    chunk(items, MAX_METRICS_PER_BATCH.min(MAX_ITEMS_PER_BATCH))
        .into_iter()
        .map(|metrics| LogBatch {
            run_id,
            metrics,
            params: Vec::new(),
        })
        .collect()
}

/// Groups `items` greedily into chunks of at most `max_items` whose JSON
/// stays under [`MAX_BATCH_BYTES`].
pub(super) fn chunk<T: Serialize>(items: impl Iterator<Item = T>, max_items: usize) -> Vec<Vec<T>> {
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        // +1 for the separating comma.
        let size = to_json(&item).len() + 1;
        if !current.is_empty() && (current.len() == max_items || bytes + size > MAX_BATCH_BYTES) {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// `value`, cut to MLflow's param limit with a marker saying how long it was.
pub(super) fn truncate_param(value: &str) -> Cow<'_, str> {
    truncate(value, MAX_PARAM_VALUE_CHARS)
}

/// `value`, cut to MLflow's tag limit with a marker saying how long it was.
pub(super) fn truncate_tag(value: &str) -> Cow<'_, str> {
    truncate(value, MAX_TAG_VALUE_CHARS)
}

fn truncate(value: &str, max: usize) -> Cow<'_, str> {
    let chars = value.chars().count();
    if chars <= max {
        return Cow::Borrowed(value);
    }
    let marker = format!("...[truncated from {chars} chars]");
    let keep = max - marker.len();
    let end = value
        .char_indices()
        .nth(keep)
        .map_or(value.len(), |(i, _)| i);
    Cow::Owned(format!("{}{marker}", &value[..end]))
}

// ---------------------------------------------------------------------------
// Artifacts

pub(super) fn to_json(value: &impl Serialize) -> Vec<u8> {
    // The request types are plain structs of strings and numbers, which
    // serde_json always serialises.
    serde_json::to_vec(value).expect("MLflow request bodies always serialise")
}
