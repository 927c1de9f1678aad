//! The Open Inference Protocol ("KServe v2") REST API: health, metadata
//! and `infer`.

use super::request::*;
use super::state::{AppState, Model};
use crate::Result;
use crate::api::{InferInput, InferOutput, InferRequest, InferResponse};
use crate::preprocess::Value;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::Arc;

pub(super) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let _ = state.model();
    json_response(&json!({ "ready": true }))
}

pub(super) async fn server_metadata() -> Response {
    json_response(&json!({
        "name": "upsell",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

pub(super) async fn model_metadata(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    check_name(&state, &name)?;
    Ok(metadata(&state, &state.model()))
}

pub(super) async fn version_metadata(
    State(state): State<Arc<AppState>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let model = check_version(&state, &name, &version)?;
    Ok(metadata(&state, &model))
}

fn metadata(state: &AppState, model: &Model) -> Response {
    let products = model.scorer.manifest().preprocessor.products.len().max(1);
    let inputs: Vec<Json> = input_types(model)
        .into_iter()
        .map(|(name, datatype)| json!({ "name": name, "datatype": datatype, "shape": [-1, 1] }))
        .collect();
    let mut outputs =
        vec![json!({ "name": P_CONVERT, "datatype": "FP32", "shape": [-1, products] })];
    if model.scorer.manifest().network.products > 0 {
        outputs.push(json!({ "name": P_PLAN, "datatype": "FP32", "shape": [-1, products] }));
    }
    json_response(&json!({
        "name": state.name,
        "versions": [model.version()],
        "platform": "upsell",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "products": model.scorer.manifest().preprocessor.products.iter().map(|p| &p.name).collect::<Vec<_>>(),
        },
    }))
}

pub(super) async fn model_ready(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    check_name(&state, &name)?;
    Ok(json_response(&json!({ "name": name, "ready": true })))
}

pub(super) async fn version_ready(
    State(state): State<Arc<AppState>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    check_version(&state, &name, &version)?;
    Ok(json_response(
        &json!({ "name": name, "version": version, "ready": true }),
    ))
}

/// The serving model if it is `name` at `version`: a version that is not
/// the one serving (an older one, after a reload) is not found.
fn check_version(state: &AppState, name: &str, version: &str) -> Result<Arc<Model>, ApiError> {
    check_name(state, name)?;
    let model = state.model();
    if model.version() == version {
        Ok(model)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "model {name:?} has no version {version:?}; version {:?} is serving",
                model.version()
            ),
        ))
    }
}

const ROUTE: &str = "/v2/models/{name}/infer";
const P_CONVERT: &str = "p_convert";
const P_PLAN: &str = "p_plan";
/// The binary tensor extension's header: the length of the JSON part of a
/// body whose tensors follow it as bytes.
const JSON_LENGTH: &str = "inference-header-content-length";

pub(super) async fn infer(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_name(&state, &name)?;
    run(state, None, &headers, body).await
}

pub(super) async fn version_infer(
    State(state): State<Arc<AppState>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_version(&state, &name, &version)?;
    run(state, Some(version), &headers, body).await
}

async fn run(
    state: Arc<AppState>,
    version: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (admitted, body) = admit(&state, ROUTE, body).await?;
    let body = read_body(body, state.limits.max_body_bytes).await?;
    let (json, mut binary) = split_binary(headers, &body)?;
    let request: InferRequest = parse(json)?;
    let model = state.model();
    if let Some(version) = version
        && model.version() != version
    {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("version {version:?} was replaced while the request was read"),
        ));
    }
    let pre = &model.scorer.manifest().preprocessor;
    let types: HashMap<String, &'static str> = input_types(&model).into_iter().collect();
    let mut columns: HashMap<String, Vec<Value<'_>>> = HashMap::new();
    let mut rows = None;
    for input in &request.inputs {
        let name = &input.name;
        let Some(&kind) = types.get(name) else {
            return Err(ApiError::bad(format!(
                "unknown input {name:?}; GET /v2/models/{} lists the inputs",
                state.name
            )));
        };
        if columns.contains_key(name) {
            return Err(ApiError::bad(format!("input {name:?} is given twice")));
        }
        check_datatype(name, &input.datatype, kind)?;
        let count = shape_count(name, &input.shape)?;
        let values = match (&input.data, binary_size(input)?) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(format!(
                    "input {name:?}: both data and parameters.binary_data_size"
                )));
            }
            (Some(data), None) => {
                let mut flat = Vec::new();
                flatten(data, &mut flat);
                if flat.len() != count {
                    return Err(ApiError::bad(format!(
                        "input {name:?} has {} values where its shape {:?} says {count}",
                        flat.len(),
                        input.shape
                    )));
                }
                flat.iter()
                    .enumerate()
                    .map(|(row, v)| to_value(v, &format!("input {name:?}, row {row}")))
                    .collect::<Result<Vec<_>, _>>()?
            }
            (None, Some(size)) => {
                if size > binary.len() {
                    return Err(ApiError::bad(format!(
                        "input {name:?}: binary_data_size {size} is more than the {} bytes left in the body",
                        binary.len()
                    )));
                }
                let (bytes, rest) = binary.split_at(size);
                binary = rest;
                decode_binary(name, &input.datatype, bytes, count)?
            }
            (None, None) => {
                return Err(ApiError::bad(format!(
                    "input {name:?}: no data (and no parameters.binary_data_size)"
                )));
            }
        };
        match rows {
            None => rows = Some(values.len()),
            Some(rows) if rows != values.len() => {
                return Err(ApiError::bad(format!(
                    "input {name:?} has {} values; the other inputs have {rows}",
                    values.len()
                )));
            }
            Some(_) => {}
        }
        columns.insert(name.clone(), values);
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!(
            "{} bytes of binary data follow the inputs' binary_data_size",
            binary.len()
        )));
    }
    let rows = rows.unwrap_or(0);
    batch_size(rows, &state.limits)?;
    for column in types.keys() {
        let is_offer = pre.offer.as_deref() == Some(column.as_str());
        if !is_offer && !columns.contains_key(column) {
            return Err(ApiError::bad(format!("missing input {column:?}")));
        }
    }
    let binary_default = request
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_output"))
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let plan_available = model.scorer.manifest().network.products > 0;
    // Unasked, p_plan is returned when it can be given (see below).
    let asked = request.outputs.is_some();
    let requested: Vec<(String, bool)> = match &request.outputs {
        None => std::iter::once(P_CONVERT)
            .chain(plan_available.then_some(P_PLAN))
            .map(|name| (name.to_string(), binary_default))
            .collect(),
        Some(outputs) => outputs
            .iter()
            .map(|output| {
                let binary = output
                    .parameters
                    .as_ref()
                    .and_then(|p| p.get("binary_data"))
                    .and_then(Json::as_bool)
                    .unwrap_or(binary_default);
                match output.name.as_str() {
                    P_CONVERT => Ok((output.name.clone(), binary)),
                    P_PLAN if plan_available => Ok((output.name.clone(), binary)),
                    other => Err(ApiError::bad(format!(
                        "unknown output {other:?}; GET /v2/models/{} lists the outputs",
                        state.name
                    ))),
                }
            })
            .collect::<Result<_, _>>()?,
    };
    let features = model
        .scorer
        .transform_columns(&columns)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    if let Some(drift) = &model.drift {
        drift.observe(&features);
    }
    let with_offer = pre.offer.as_ref().is_some_and(|o| columns.contains_key(o));
    state
        .metrics
        .batch
        .with_label_values(&[ROUTE])
        .observe(rows as f64);
    let scoring = model.clone();
    let mut scores = blocking(move || {
        let _admitted = admitted;
        scoring.scorer.score_features(&features)
    })
    .await?;
    if !with_offer {
        model.scorer.without_offers(&mut scores);
    }
    let width = scores.convert_width();
    let plan_width = scores.products.len();
    let (mut p_convert, mut p_plan) = (Some(scores.p_convert), Some(scores.p_plan));
    let mut outputs = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    for (name, binary) in requested {
        let (data, width) = if name == P_CONVERT {
            (p_convert.take(), width)
        } else {
            (p_plan.take(), plan_width)
        };
        let data = data.unwrap_or_default();
        if data.is_empty() && !asked {
            continue;
        }
        if data.is_empty() {
            return Err(ApiError::bad(format!(
                "output {name:?} needs the offer input: this model's plan head reads the offer"
            )));
        }
        let mut output = InferOutput {
            name,
            datatype: "FP32".into(),
            shape: vec![rows, width],
            data: Vec::new(),
            parameters: None,
        };
        if binary {
            let size = 4 * data.len();
            tail.extend(data.iter().flat_map(|x| x.to_le_bytes()));
            output.parameters = Some(
                [("binary_data_size".to_string(), json!(size))]
                    .into_iter()
                    .collect(),
            );
        } else {
            output.data = data;
        }
        outputs.push(output);
    }
    let response = InferResponse {
        model_name: state.name.clone(),
        model_version: model.version().to_string(),
        id: request.id,
        outputs,
    };
    if tail.is_empty() {
        return Ok(json_response(&response));
    }
    let mut body = serde_json::to_vec(&response).expect("a response serialises");
    let json_length = body.len();
    body.extend_from_slice(&tail);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(JSON_LENGTH),
                json_length.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

/// The JSON part of a body and the binary tensor data after it (empty
/// without the binary extension's header).
fn split_binary<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(length) = headers.get(JSON_LENGTH) else {
        return Ok((body, &[]));
    };
    let length: usize = length
        .to_str()
        .ok()
        .and_then(|l| l.trim().parse().ok())
        .filter(|&l| l <= body.len())
        .ok_or_else(|| {
            ApiError::bad(format!(
                "header Inference-Header-Content-Length: {length:?} is not a length within the {}-byte body",
                body.len()
            ))
        })?;
    Ok(body.split_at(length))
}

/// `parameters.binary_data_size` of an input, if it has one.
fn binary_size(input: &InferInput) -> Result<Option<usize>, ApiError> {
    let Some(size) = input
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
    else {
        return Ok(None);
    };
    size.as_u64()
        .and_then(|s| usize::try_from(s).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad(format!(
                "input {:?}: parameters.binary_data_size {size} is not a byte count",
                input.name
            ))
        })
}

const NUMERIC_TYPES: [&str; 10] = [
    "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
];

/// Numeric columns take any numeric datatype; the others `BYTES` (or
/// `BOOL`, for a column of flags).
fn check_datatype(name: &str, datatype: &str, kind: &str) -> Result<(), ApiError> {
    let fits = if kind == "FP32" {
        NUMERIC_TYPES.contains(&datatype)
    } else {
        matches!(datatype, "BYTES" | "BOOL")
    };
    if fits {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "input {name:?}: datatype {datatype:?} does not fit a {kind} column{}",
            if kind == "FP32" {
                " (send a numeric datatype such as FP32)"
            } else {
                " (send BYTES)"
            }
        )))
    }
}

/// The number of values a `[rows]` or `[rows, 1]` shape holds.
fn shape_count(name: &str, shape: &[i64]) -> Result<usize, ApiError> {
    match shape {
        [rows] | [rows, 1] if *rows >= 0 => Ok(*rows as usize),
        _ => Err(ApiError::bad(format!(
            "input {name:?}: shape {shape:?} is not [rows, 1] or [rows]"
        ))),
    }
}

/// Binary tensor data as values: little-endian numbers (NaN, which binary
/// floats have instead of null, is a missing value), or `BYTES` as 4-byte
/// little-endian lengths each followed by that many bytes of UTF-8.
fn decode_binary<'a>(
    name: &str,
    datatype: &str,
    bytes: &'a [u8],
    count: usize,
) -> Result<Vec<Value<'a>>, ApiError> {
    let numbers = |width: usize, read: fn(&[u8]) -> f64| -> Result<Vec<Value<'a>>, ApiError> {
        if bytes.len() != count * width {
            return Err(ApiError::bad(format!(
                "input {name:?}: {} bytes of {datatype} where its shape says {count} values ({} bytes)",
                bytes.len(),
                count * width
            )));
        }
        bytes
            .chunks_exact(width)
            .enumerate()
            .map(|(row, chunk)| match read(chunk) {
                x if x.is_nan() => Ok(Value::Null),
                x if x.is_finite() => Ok(Value::Number(x)),
                x => Err(ApiError::bad(format!(
                    "input {name:?}, row {row}: {x} is not a finite number"
                ))),
            })
            .collect()
    };
    macro_rules! le {
        ($t:ty) => {
            |c: &[u8]| <$t>::from_le_bytes(c.try_into().expect("chunk width")) as f64
        };
    }
    match datatype {
        "FP32" => numbers(4, le!(f32)),
        "FP64" => numbers(8, le!(f64)),
        "INT8" => numbers(1, le!(i8)),
        "INT16" => numbers(2, le!(i16)),
        "INT32" => numbers(4, le!(i32)),
        "INT64" => numbers(8, le!(i64)),
        "UINT8" => numbers(1, le!(u8)),
        "UINT16" => numbers(2, le!(u16)),
        "UINT32" => numbers(4, le!(u32)),
        "UINT64" => numbers(8, le!(u64)),
        "BOOL" if bytes.len() == count => Ok(bytes.iter().map(|&b| Value::Bool(b != 0)).collect()),
        "BOOL" => Err(ApiError::bad(format!(
            "input {name:?}: {} bytes of BOOL where its shape says {count}",
            bytes.len()
        ))),
        _ => {
            let mut values = Vec::with_capacity(count);
            let mut rest = bytes;
            while !rest.is_empty() {
                let row = values.len();
                let truncated = || {
                    ApiError::bad(format!(
                        "input {name:?}, row {row}: BYTES element cut short"
                    ))
                };
                let (length, tail) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
                let length = u32::from_le_bytes(*length) as usize;
                if tail.len() < length {
                    return Err(truncated());
                }
                let (text, tail) = tail.split_at(length);
                let text = std::str::from_utf8(text).map_err(|_| {
                    ApiError::bad(format!("input {name:?}, row {row}: not UTF-8 text"))
                })?;
                values.push(Value::Text(text));
                rest = tail;
            }
            if values.len() != count {
                return Err(ApiError::bad(format!(
                    "input {name:?} has {} BYTES elements where its shape says {count}",
                    values.len()
                )));
            }
            Ok(values)
        }
    }
}
