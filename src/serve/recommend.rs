//! `POST /v1/recommend`: decisions for a batch of users with the
//! checkpoint's policy.

use super::log::text;
use super::request::*;
use super::state::AppState;
use crate::Result;
use crate::api::{DEFAULT_TOP_K, RecommendRequest, RecommendResponse};
use crate::config::Exploration;
use crate::preprocess::Value;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

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
    let users = &request.users;
    batch_size(users.len(), &state.limits)?;
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
    let required = model.scorer.decision_columns();
    let mut records: Vec<HashMap<String, Value<'_>>> = Vec::with_capacity(users.len());
    let mut ids: Vec<Option<String>> = Vec::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        let mut record = HashMap::new();
        for column in &required {
            let value = user
                .get(*column)
                .ok_or_else(|| ApiError::bad(format!("users[{i}]: missing feature {column:?}")))?;
            let field = format!("users[{i}].{column}");
            let value = to_value(value, &field)?;
            record.insert(column.to_string(), value);
        }
        records.push(record);
        ids.push(text(user.get("id")));
    }
    let features = model
        .scorer
        .transform_records(&records)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    state
        .metrics
        .batch
        .with_label_values(&[ROUTE])
        .observe(users.len() as f64);
    let texts: Vec<Vec<(String, Option<String>)>> = users
        .iter()
        .map(|user| {
            model
                .policy
                .exclude
                .iter()
                .map(|rule| (rule.column.clone(), text(user.get(&rule.column))))
                .collect()
        })
        .collect();
    let (deciding, logging) = (model.clone(), state.clone());
    let users = request.users;
    // Deciding and logging are blocking work, done off the async threads.
    let decisions = blocking(move || -> Result<Vec<crate::policy::Decision>, ApiError> {
        let _admitted = admitted;
        let scores = deciding
            .scorer
            .user_scores(&features)
            .map_err(|e| ApiError::bad(e.to_string()))?;
        let policy = deciding
            .scorer
            .policy(deciding.policy.clone(), deciding.seed)
            .listing(top_k);
        let value = |row: usize, column: &str| -> Option<String> {
            texts[row]
                .iter()
                .find(|(c, _)| c == column)
                .and_then(|(_, v)| v.clone())
        };
        let decisions = policy.decide(exploration, &scores, &ids, &value);
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
    let response = RecommendResponse {
        model_version: model.version().to_string(),
        policy: exploration.to_string(),
        decisions,
    };
    Ok(json_response(&response))
}
