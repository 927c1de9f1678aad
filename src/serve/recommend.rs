//! `POST /v1/recommend`: decisions for a batch of users with the
//! checkpoint's policy.

use super::log::text;
use super::request::*;
use super::state::{AppState, Model};
use crate::Result;
use crate::api::{DEFAULT_TOP_K, RecommendRequest, RecommendResponse};
use crate::config::Exploration;
use crate::policy::Decision;
use crate::preprocess::Value;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::sync::Arc;

const ROUTE: &str = "/v1/recommend";

pub(super) async fn recommend(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let (admitted, body) = admit(&state, ROUTE, body).await?;
    let request: RecommendRequest = parse(&read_body(body, state.limits.max_body_bytes).await?)?;
    let model = state.model();
    batch_size(request.users.len(), &state.limits)?;
    let top_k = request.top_k.unwrap_or(DEFAULT_TOP_K);
    if top_k > state.limits.max_top_k {
        return Err(ApiError::bad(format!(
            "top_k: {top_k} is over this server's limit of {}",
            state.limits.max_top_k
        )));
    }
    let exploration = match &request.policy {
        None => model.policy.exploration,
        Some(s) => s
            .parse::<Exploration>()
            .map_err(|e| ApiError::bad(format!("policy {e}")))?,
    };
    state
        .metrics
        .batch
        .with_label_values(&[ROUTE])
        .observe(request.users.len() as f64);
    let users = Arc::new(request.users);
    let (deciding, logging, for_shadow) = (model.clone(), state.clone(), users.clone());
    // Deciding and logging are blocking work, done off the async threads.
    let decisions = blocking(move || -> Result<Vec<Decision>, ApiError> {
        let _admitted = admitted;
        let decisions = decide(&deciding, &users, exploration, Some(top_k), true)?;
        if let Some(log) = &logging.decision_log {
            log.append(&users, &decisions, deciding.version())
                .map_err(|e| {
                    ApiError(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("decision log: {e}"),
                    )
                })?;
        }
        Ok(decisions)
    })
    .await??;
    shadow(&state, for_shadow, &decisions, exploration);
    let response = RecommendResponse {
        model_version: model.version().to_string(),
        policy: exploration.to_string(),
        decisions,
    };
    Ok(json_response(&response))
}

/// `model`'s decisions for `users`, listing `top_k` candidates each (all
/// with `None`); with `observe`, the rows count towards the model's drift.
fn decide(
    model: &Model,
    users: &[Map<String, Json>],
    exploration: Exploration,
    top_k: Option<usize>,
    observe: bool,
) -> Result<Vec<Decision>, ApiError> {
    let required = model.scorer.decision_columns();
    let mut records: Vec<HashMap<&str, Value<'_>>> = Vec::with_capacity(users.len());
    let mut ids: Vec<Option<String>> = Vec::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        let mut record = HashMap::with_capacity(required.len());
        for &column in &required {
            let value = user
                .get(column)
                .ok_or_else(|| ApiError::bad(format!("users[{i}]: missing feature {column:?}")))?;
            record.insert(column, to_value(value, &format!("users[{i}].{column}"))?);
        }
        records.push(record);
        ids.push(text(user.get("id")));
    }
    let features = model
        .scorer
        .transform_records(&records)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    if observe && let Some(drift) = &model.drift {
        drift.observe(&features);
    }
    let scores = model
        .scorer
        .user_scores(&features)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let mut policy = model.scorer.policy(model.policy.clone(), model.seed);
    if let Some(top_k) = top_k {
        policy = policy.listing(top_k);
    }
    let value = |row: usize, column: &str| text(users[row].get(column));
    Ok(policy.decide(exploration, &scores, &ids, &value))
}

/// Decides for the same users with the shadow checkpoint, if the server
/// has one, off the request's path: its decisions are logged (and their
/// agreement with the live ones counted), never returned. When the shadow
/// is busy with earlier requests this one is skipped, so a slow candidate
/// cannot build a backlog.
fn shadow(
    state: &Arc<AppState>,
    users: Arc<Vec<Map<String, Json>>>,
    live: &[Decision],
    exploration: Exploration,
) {
    let Some(shadow) = &state.shadow else {
        return;
    };
    let Ok(slot) = shadow.slots.clone().try_acquire_owned() else {
        state.metrics.shadow.with_label_values(&["skipped"]).inc();
        return;
    };
    let live: Vec<Option<String>> = live.iter().map(|d| d.offer.clone()).collect();
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let shadow = state.shadow.as_ref().expect("checked above");
        let outcome =
            decide(&shadow.model, &users, exploration, Some(0), false).and_then(|decisions| {
                shadow
                    .log
                    .append(&users, &decisions, shadow.model.version())
                    .map_err(|e| ApiError::bad(e.to_string()))?;
                let agree = live
                    .iter()
                    .zip(&decisions)
                    .filter(|(offer, d)| **offer == d.offer)
                    .count();
                let agreement = &state.metrics.shadow_agreement;
                agreement.with_label_values(&["true"]).inc_by(agree as u64);
                agreement
                    .with_label_values(&["false"])
                    .inc_by((decisions.len() - agree) as u64);
                Ok(())
            });
        let outcomes = &state.metrics.shadow;
        match outcome {
            Ok(()) => outcomes.with_label_values(&["logged"]).inc(),
            Err(e) => {
                tracing::warn!(error = e.1, "shadow decisions failed");
                outcomes.with_label_values(&["error"]).inc();
            }
        }
    });
}
