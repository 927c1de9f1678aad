//! Reading requests and answering failures: JSON bodies, values by field,
//! the batch limit, blocking work off the async threads, and `{"error": ...}`
//! with the status that fits.

use super::state::{AppState, Limits, Model};
use crate::Result;
use crate::preprocess::Value;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

/// A failed request: a status and a message, sent as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl ApiError {
    pub(super) fn bad(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&json!({ "error": self.1 })).expect("JSON serialises");
        (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        ApiError(rejection.status(), rejection.body_text())
    }
}

pub(super) fn json_response(value: Json) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&value).expect("JSON serialises"),
    )
        .into_response()
}

pub(super) fn check_name(state: &AppState, name: &str) -> Result<(), ApiError> {
    if name == state.name {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "unknown model {name:?}; this server serves {:?}",
                state.name
            ),
        ))
    }
}

/// A request body as `T`: malformed JSON and a body of the wrong shape
/// (a missing or misspelt field, a wrong type) are both a 400 that says
/// which.
pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad(format!("malformed JSON: {e}"))
            }
            Category::Data => ApiError::bad(format!("invalid request: {e}")),
        }
    })
}

/// Flattens KServe `data`, which may be nested row-major arrays.
pub(super) fn flatten<'a>(data: &'a Json, out: &mut Vec<&'a Json>) {
    match data {
        Json::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

/// One JSON value as a scorer value; `field` names it in errors.
pub(super) fn to_value<'a>(value: &'a Json, field: &str) -> Result<Value<'a>, ApiError> {
    match value {
        Json::Null => Ok(Value::Null),
        Json::Bool(b) => Ok(Value::Bool(*b)),
        Json::Number(n) => n
            .as_f64()
            .map(Value::Number)
            .ok_or_else(|| ApiError::bad(format!("{field}: {n} is not a finite number"))),
        Json::String(s) => Ok(Value::Text(s)),
        _ => Err(ApiError::bad(format!(
            "{field}: expected a number, string, boolean or null"
        ))),
    }
}

pub(super) fn batch_size(rows: usize, limits: &Limits) -> Result<(), ApiError> {
    if rows == 0 {
        return Err(ApiError::bad("the batch is empty"));
    }
    if rows > limits.max_batch {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{rows} rows exceed the limit of {} per request",
                limits.max_batch
            ),
        ));
    }
    Ok(())
}

/// Runs CPU-bound model work off the async executor.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scoring failed: {e}"),
        )
    })
}

/// The KServe datatype of each input column.
pub(super) fn input_types(model: &Model) -> Vec<(String, &'static str)> {
    let pre = &model.scorer.manifest().preprocessor;
    let mut inputs: Vec<(String, &'static str)> = pre
        .numeric
        .iter()
        .map(|f| (f.column.clone(), "FP32"))
        .collect();
    let text = pre
        .categorical
        .iter()
        .map(|v| v.column())
        .chain(pre.hashed.iter().map(|h| h.column.as_str()))
        .chain(pre.offer.as_deref())
        .chain(pre.context.iter().map(|v| v.column()));
    inputs.extend(text.map(|c| (c.to_string(), "BYTES")));
    inputs
}
