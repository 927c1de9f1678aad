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
/// (`GET /v2/models/{name}` lists them), each `[rows, 1]` or `[rows]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Json>,
    pub inputs: Vec<InferInput>,
    /// `binary_data_output: true` asks for every output as binary data;
    /// other parameters are accepted and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Json>>,
    /// The outputs to return (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One input tensor: a column's values for every row, row-major (nested
/// arrays are flattened); numbers for `FP32` columns (any numeric datatype
/// is read), strings for `BYTES` ones, `null` for a missing value. With the
/// binary tensor extension, `parameters.binary_data_size` replaces `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Json>>,
}

/// One output a request asks for; `parameters.binary_data: true` asks for
/// it as binary data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Json>>,
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

/// One output tensor, row-major: `data`, or with binary data
/// `parameters.binary_data_size` bytes of little-endian `f32` after the
/// JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferOutput {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Json>>,
}

/// `POST /v1/recommend`: users, each an object of feature column -> value
/// (and an optional `id`), and optionally the exploration policy
/// (`greedy`, `epsilon:E` or `softmax:T`) instead of the checkpoint's, and
/// how many candidates each decision lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    pub users: Vec<Map<String, Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Candidates listed per decision, best first: [`DEFAULT_TOP_K`] when
    /// absent, at most the server's `--max-top-k`; 0 lists none. The
    /// decision itself is made over every candidate either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
}

/// Candidates a `/v1/recommend` decision lists unless the request asks for
/// another `top_k`: enough to see the runner-up and the margin, while a
/// full batch's answer stays a few megabytes.
pub const DEFAULT_TOP_K: usize = 3;

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
