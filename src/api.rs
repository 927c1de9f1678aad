//! The request and response bodies of `upsell serve`, as types: the server
//! reads and writes these, and a Rust client can use the same ones (they
//! are in the lean build). `README.md`'s tour shows each with a real body.
//!
//! Scores follow the Open Inference Protocol ("KServe v2") REST API;
//! decisions (`POST /v1/recommend`) and reloads (`POST /admin/reload`) are
//! upsell's own.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::policy::Decision;

/// `POST /v2/models/{name}/infer`: one input tensor per feature column
/// (`GET /v2/models/{name}` lists them), each `[rows, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Json>,
    pub inputs: Vec<InferInput>,
    /// Accepted as the protocol allows, and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Json>,
    /// Accepted as the protocol allows; every output is always returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Json>,
}

/// One input tensor: a column's values for every row, row-major (nested
/// arrays are flattened); numbers for `FP32` columns, strings for `BYTES`
/// ones, `null` for a missing value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferInput {
    pub name: String,
    #[serde(default)]
    pub shape: Vec<i64>,
    #[serde(default)]
    pub datatype: String,
    pub data: Json,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Json>,
}

/// The scores: `p_convert` `[rows, products]` (`[rows, 1]` for the row's
/// offer only when the model has no offers), and `p_plan` `[rows, products]`
/// when the plan can be given (with the offer input, or a plan head that
/// does not read the offer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Json>,
    pub outputs: Vec<InferOutput>,
}

/// One output tensor, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferOutput {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// `POST /v1/recommend`: users, each an object of feature column -> value
/// (and an optional `id`), and optionally the exploration policy
/// (`greedy`, `epsilon:E` or `softmax:T`) instead of the checkpoint's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    pub users: Vec<Map<String, Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// One decision per user, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendResponse {
    pub model_version: String,
    /// The exploration policy the decisions were drawn with.
    pub policy: String,
    pub decisions: Vec<Decision>,
}

/// `POST /admin/reload`: the checkpoint directory to load, or none (an
/// empty body) for the serving one again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<std::path::PathBuf>,
}

/// The version now serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub model_version: String,
}
