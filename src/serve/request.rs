//! Reading requests and answering failures: JSON bodies, values by field,
//! the batch limit, blocking work off the async threads, and `{"error": ...}`
//! with the status that fits.

use super::state::{AppState, Limits, Model};
use crate::Result;
use crate::preprocess::Value;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use prometheus::IntGauge;
use serde_json::{Value as Json, json};
use tokio::sync::OwnedSemaphorePermit;

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
        let mut response =
            (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        // A shed request may be sent again shortly; a missing or wrong admin
        // token is a bearer-token challenge.
        let extra = match self.0 {
            StatusCode::SERVICE_UNAVAILABLE => Some((header::RETRY_AFTER, "1")),
            StatusCode::UNAUTHORIZED => Some((header::WWW_AUTHENTICATE, "Bearer")),
            _ => None,
        };
        if let Some((name, value)) = extra {
            response
                .headers_mut()
                .insert(name, header::HeaderValue::from_static(value));
        }
        response
    }
}

/// A scoring request's slot under `Limits::max_concurrent`, held until its
/// blocking work is done (move it into the closure), then given back.
pub(super) struct Admitted {
    _permit: OwnedSemaphorePermit,
    in_flight: IntGauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// Admits a scoring request, or sheds it with 503 when `max_concurrent`
/// are in flight. A shed request's body is read and dropped as it arrives,
/// never held: a client still sending it would otherwise see the
/// connection reset instead of the 503.
pub(super) async fn admit(
    state: &AppState,
    route: &str,
    body: Body,
) -> Result<(Admitted, Body), ApiError> {
    match state.scoring.clone().try_acquire_owned() {
        Ok(permit) => {
            state.metrics.in_flight.inc();
            let admitted = Admitted {
                _permit: permit,
                in_flight: state.metrics.in_flight.clone(),
            };
            Ok((admitted, body))
        }
        Err(_) => {
            state.metrics.shed.with_label_values(&[route]).inc();
            let mut body = body;
            let mut read = 0;
            while read <= state.limits.max_body_bytes {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    _ => break,
                }
            }
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "overloaded: {} scoring requests in flight; retry shortly",
                    state.limits.max_concurrent
                ),
            ))
        }
    }
}

/// A request body of at most `limit` bytes.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let e = e.into_inner();
        if e.is::<http_body_util::LengthLimitError>() {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body exceeds the limit of {limit} bytes"),
            )
        } else {
            ApiError::bad(format!("reading the body: {e}"))
        }
    })
}

/// `value` as a JSON response, serialised straight to bytes.
pub(super) fn json_response(value: &impl serde::Serialize) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(value).expect("JSON serialises"),
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
