//! The Open Inference Protocol ("KServe v2") REST API: health, metadata
//! and `infer`.

use super::request::*;
use super::state::AppState;
use crate::Result;
use crate::api::{InferOutput, InferRequest, InferResponse};
use crate::preprocess::Value;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::response::Response;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::Arc;

pub(super) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let _ = state.model();
    json_response(json!({ "ready": true }))
}

pub(super) async fn server_metadata() -> Response {
    json_response(json!({
        "name": "upsell",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

pub(super) async fn model_metadata(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    check_name(&state, &name)?;
    let model = state.model();
    let products = model.scorer.manifest().preprocessor.products.len().max(1);
    let inputs: Vec<Json> = input_types(&model)
        .into_iter()
        .map(|(name, datatype)| json!({ "name": name, "datatype": datatype, "shape": [-1, 1] }))
        .collect();
    let mut outputs =
        vec![json!({ "name": "p_convert", "datatype": "FP32", "shape": [-1, products] })];
    if model.scorer.manifest().network.products > 0 {
        outputs.push(json!({ "name": "p_plan", "datatype": "FP32", "shape": [-1, products] }));
    }
    Ok(json_response(json!({
        "name": state.name,
        "versions": [model.version()],
        "platform": "upsell",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "products": model.scorer.manifest().preprocessor.products.iter().map(|p| &p.name).collect::<Vec<_>>(),
        },
    })))
}

pub(super) async fn model_ready(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    check_name(&state, &name)?;
    Ok(json_response(json!({ "name": name, "ready": true })))
}

pub(super) async fn infer(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_name(&state, &name)?;
    let request: InferRequest = parse(&body?)?;
    let model = state.model();
    let mut columns: HashMap<String, Vec<&Json>> = HashMap::new();
    for input in &request.inputs {
        let mut values = Vec::new();
        flatten(&input.data, &mut values);
        columns.insert(input.name.clone(), values);
    }
    let pre = &model.scorer.manifest().preprocessor;
    let rows = columns.values().map(Vec::len).max().unwrap_or(0);
    batch_size(rows, &state.limits)?;
    for (column, _) in input_types(&model) {
        let is_offer = pre.offer.as_deref() == Some(column.as_str());
        match columns.get(&column) {
            None if is_offer => {}
            None => return Err(ApiError::bad(format!("missing input {column:?}"))),
            Some(values) if values.len() != rows => {
                return Err(ApiError::bad(format!(
                    "input {column:?} has {} values; the other inputs have {rows}",
                    values.len()
                )));
            }
            Some(_) => {}
        }
    }
    let mut typed: HashMap<String, Vec<Value<'_>>> = HashMap::new();
    for (column, values) in &columns {
        let mut out = Vec::with_capacity(values.len());
        for (row, v) in values.iter().enumerate() {
            let field = format!("input {column:?}, row {row}");
            let value = to_value(v, &field)?;
            out.push(value);
        }
        typed.insert(column.clone(), out);
    }
    let features = model
        .scorer
        .transform_columns(&typed)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let with_offer = pre.offer.as_ref().is_some_and(|o| columns.contains_key(o));
    state
        .metrics
        .batch
        .with_label_values(&["/v2/models/{name}/infer"])
        .observe(rows as f64);
    let scoring = model.clone();
    let mut scores = blocking(move || scoring.scorer.score_features(&features)).await?;
    if !with_offer {
        model.scorer.without_offers(&mut scores);
    }
    let width = scores.convert_width();
    let mut outputs = vec![InferOutput {
        name: "p_convert".into(),
        datatype: "FP32".into(),
        shape: vec![rows, width],
        data: scores.p_convert,
    }];
    if !scores.p_plan.is_empty() {
        outputs.push(InferOutput {
            name: "p_plan".into(),
            datatype: "FP32".into(),
            shape: vec![rows, scores.products.len()],
            data: scores.p_plan,
        });
    }
    let response = InferResponse {
        model_name: state.name.clone(),
        model_version: model.version().to_string(),
        id: request.id,
        outputs,
    };
    Ok(json_response(
        serde_json::to_value(&response).expect("a response serialises"),
    ))
}
