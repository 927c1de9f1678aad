//! The HTTP server, driven through its router without a socket: every
//! route, every class of bad request, metrics, and hot reload under load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use tower::ServiceExt;
use upsell::serve::{AppState, Limits, Model, app};

use crate::common::repo;

pub(crate) fn demo() -> PathBuf {
    repo().join("checkpoints/demo")
}

pub(crate) fn state(limits: Limits) -> Arc<AppState> {
    let model = Model::load(&demo()).unwrap();
    Arc::new(AppState::new(model, demo(), "upsell".into(), limits))
}

pub(crate) async fn call(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, Json) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

pub(crate) async fn post(state: &Arc<AppState>, uri: &str, body: &Json) -> (StatusCode, Json) {
    call(state, "POST", uri, Some(serde_json::to_vec(body).unwrap())).await
}

/// The admin token of [`admin_state`].
pub(crate) const TOKEN: &str = "test-token-0123456789";

/// A server with reload on, for [`TOKEN`], of checkpoints under `root`.
pub(crate) fn admin_state(root: &Path) -> Arc<AppState> {
    let model = Model::load(&demo()).unwrap();
    Arc::new(
        AppState::new(model, demo(), "upsell".into(), Limits::default())
            .with_admin(upsell::serve::Admin::new(TOKEN, root).unwrap()),
    )
}

/// `POST /admin/reload` with `token` as the bearer token.
pub(crate) async fn reload(
    state: &Arc<AppState>,
    token: Option<&str>,
    body: &Json,
) -> (StatusCode, Json) {
    let mut request = Request::builder()
        .method("POST")
        .uri("/admin/reload")
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// The demo rows as CSV records: (header, rows).
fn demo_rows() -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(demo().join("rows.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn cell(value: &str, numeric: bool) -> Json {
    match (value.is_empty(), numeric) {
        (true, _) => Json::Null,
        (false, true) => json!(value.parse::<f64>().unwrap()),
        (false, false) => json!(value),
    }
}

/// A KServe v2 infer request for the demo rows.
pub(crate) fn infer_request(model: &Model) -> Json {
    let (header, rows) = demo_rows();
    let manifest = upsell::Scorer::load(demo()).unwrap();
    let pre = &manifest.manifest().preprocessor;
    let _ = model;
    let mut inputs = Vec::new();
    for column in pre.input_columns() {
        let j = header.iter().position(|h| h == column).unwrap();
        let numeric = pre.numeric.iter().any(|f| f.column == column);
        let data: Vec<Json> = rows.iter().map(|r| cell(&r[j], numeric)).collect();
        inputs.push(json!({
            "name": column,
            "shape": [rows.len(), 1],
            "datatype": if numeric { "FP32" } else { "BYTES" },
            "data": data,
        }));
    }
    json!({ "id": "req-1", "inputs": inputs })
}

pub(crate) fn users() -> Json {
    let (header, rows) = demo_rows();
    let numeric: Vec<&str> = upsell::data::synth::NUMERIC_COLUMNS.to_vec();
    let users: Vec<Json> = rows
        .iter()
        .map(|r| {
            let mut user = serde_json::Map::new();
            for (h, v) in header.iter().zip(r) {
                user.insert(h.clone(), cell(v, numeric.contains(&h.as_str())));
            }
            user.insert("id".into(), user["user_id"].clone());
            Json::Object(user)
        })
        .collect();
    Json::Array(users)
}

#[tokio::test]
async fn health_and_metadata_routes() {
    let state = state(Limits::default());
    assert_eq!(
        call(&state, "GET", "/v2/health/live", None).await,
        (StatusCode::OK, json!({ "live": true }))
    );
    assert_eq!(
        call(&state, "GET", "/v2/health/ready", None).await.0,
        StatusCode::OK
    );
    let (status, server) = call(&state, "GET", "/v2", None).await;
    assert_eq!(
        (status, server["name"].as_str()),
        (StatusCode::OK, Some("upsell"))
    );
    let (status, meta) = call(&state, "GET", "/v2/models/upsell", None).await;
    assert_eq!(status, StatusCode::OK);
    let inputs = meta["inputs"].as_array().unwrap();
    let find = |n: &str| inputs.iter().find(|i| i["name"] == n).unwrap()["datatype"].clone();
    assert_eq!(find("tenure_months"), "FP32");
    assert_eq!(find("country"), "BYTES");
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 6]));
    assert_eq!(
        call(&state, "GET", "/v2/models/upsell/ready", None).await.0,
        StatusCode::OK
    );
    let (status, body) = call(&state, "GET", "/v2/models/other", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("unknown model"));
}

#[tokio::test]
async fn infer_matches_the_score_command() {
    let state = state(Limits::default());
    let request = infer_request(&state.model());
    let (status, response) = post(&state, "/v2/models/upsell/infer", &request).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["id"], "req-1");
    let typed: upsell::api::InferResponse = serde_json::from_value(response.clone()).unwrap();
    assert_eq!(typed.outputs[0].name, "p_convert");
    assert_eq!(typed.outputs[0].data.len(), 8 * 6);
    let expected = std::fs::read_to_string(demo().join("expected.csv")).unwrap();
    let mut lines = expected.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect())
        .collect();
    let products = crate::common::PRODUCTS;
    for (output, prefix) in [(0, "p_convert__"), (1, "p_plan__")] {
        let data = response["outputs"][output]["data"].as_array().unwrap();
        assert_eq!(response["outputs"][output]["shape"], json!([8, 6]));
        for (row, expected_row) in rows.iter().enumerate() {
            for (k, product) in products.iter().enumerate() {
                let column = header
                    .iter()
                    .position(|h| *h == format!("{prefix}{product}"))
                    .unwrap()
                    - 1;
                let got = data[row * 6 + k].as_f64().unwrap();
                assert!(
                    (got - expected_row[column]).abs() < 1e-5,
                    "{prefix}{product} row {row}"
                );
            }
        }
    }
}

#[tokio::test]
async fn recommend_returns_decisions_with_propensities() {
    // Every candidate is listed, so their probabilities sum to one.
    let state = state(Limits {
        max_top_k: 1000,
        ..Limits::default()
    });
    let (status, response) = post(
        &state,
        "/v1/recommend",
        &json!({ "users": users(), "policy": "softmax:0.1", "top_k": 1000 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["model_version"].as_str().unwrap().len(), 12);
    let decisions = response["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 8);
    for d in decisions {
        let p = d["propensity"].as_f64().unwrap();
        assert!(p > 0.0 && p <= 1.0);
        let total: f64 = d["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["probability"].as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
    assert_eq!(decisions[0]["id"], "u0000000000");
    // Users without the context columns get the same decisions: the policy
    // chooses the surface and the message.
    let mut bare = users();
    for user in bare.as_array_mut().unwrap() {
        let user = user.as_object_mut().unwrap();
        user.remove("surface");
        user.remove("message");
    }
    let (status, without) = post(
        &state,
        "/v1/recommend",
        &json!({ "users": bare, "policy": "softmax:0.1", "top_k": 1000 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{without}");
    assert_eq!(without["decisions"], response["decisions"]);
    // A Rust client reads the body with the server's own types.
    let typed: upsell::api::RecommendResponse = serde_json::from_value(response.clone()).unwrap();
    assert_eq!(typed.policy, "softmax:0.1");
    assert_eq!(typed.decisions.len(), 8);
    assert_eq!(typed.decisions[0].id.as_deref(), Some("u0000000000"));
    // The same ids and seed decide the same again.
    let (_, again) = post(
        &state,
        "/v1/recommend",
        &json!({ "users": users(), "policy": "softmax:0.1", "top_k": 1000 }),
    )
    .await;
    assert_eq!(again["decisions"], response["decisions"]);
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx() {
    let limits = Limits {
        max_batch: 10,
        max_body_bytes: 64 << 10,
        ..Limits::default()
    };
    let state = state(limits);
    let infer = "/v2/models/upsell/infer";
    let good = infer_request(&state.model());
    let with_input = |name: &str, data: Json| {
        let mut r = good.clone();
        for input in r["inputs"].as_array_mut().unwrap() {
            if input["name"] == name {
                input["data"] = data.clone();
            }
        }
        r
    };
    let without = |name: &str| {
        let mut r = good.clone();
        r["inputs"]
            .as_array_mut()
            .unwrap()
            .retain(|i| i["name"] != name);
        r
    };
    let mut users = users();
    let eight = users.as_array().unwrap().len();
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            infer,
            b"{\"inputs\": [".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed JSON",
        ),
        (
            "no inputs",
            infer,
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
            "missing field `inputs`",
        ),
        (
            "missing feature",
            infer,
            serde_json::to_vec(&without("tenure_months")).unwrap(),
            StatusCode::BAD_REQUEST,
            "missing input \"tenure_months\"",
        ),
        (
            "wrong type",
            infer,
            serde_json::to_vec(&with_input("tenure_months", json!(vec!["x"; 8]))).unwrap(),
            StatusCode::BAD_REQUEST,
            "expected a number",
        ),
        (
            "NaN",
            infer,
            serde_json::to_vec(&with_input("tenure_months", json!(vec!["NaN"; 8]))).unwrap(),
            StatusCode::BAD_REQUEST,
            "expected a number",
        ),
        (
            "unknown product",
            infer,
            serde_json::to_vec(&with_input("offer", json!(vec!["platinum"; 8]))).unwrap(),
            StatusCode::BAD_REQUEST,
            "\"platinum\" is not a product",
        ),
        (
            "ragged inputs",
            infer,
            serde_json::to_vec(&with_input("country", json!(vec!["SE"; 3]))).unwrap(),
            StatusCode::BAD_REQUEST,
            "has 3 values",
        ),
        (
            "empty batch",
            "/v1/recommend",
            br#"{"users": []}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "oversized batch",
            "/v1/recommend",
            serde_json::to_vec(&json!({ "users": vec![users[0].clone(); 11] })).unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceed the limit",
        ),
        (
            "oversized body",
            "/v1/recommend",
            vec![b' '; 65 << 10],
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (
            "misspelt field",
            "/v1/recommend",
            serde_json::to_vec(&json!({ "users": users, "polcy": "greedy" })).unwrap(),
            StatusCode::BAD_REQUEST,
            "unknown field `polcy`",
        ),
        (
            "policy of the wrong type",
            "/v1/recommend",
            serde_json::to_vec(&json!({ "users": users, "policy": 3 })).unwrap(),
            StatusCode::BAD_REQUEST,
            "expected a string",
        ),
        (
            "bad policy",
            "/v1/recommend",
            serde_json::to_vec(&json!({ "users": users, "policy": "softmax:-1" })).unwrap(),
            StatusCode::BAD_REQUEST,
            "temperature",
        ),
    ];
    users.as_array_mut().unwrap()[2]
        .as_object_mut()
        .unwrap()
        .remove("country");
    let mut more = cases;
    more.push((
        "missing user feature",
        "/v1/recommend",
        serde_json::to_vec(&json!({ "users": users })).unwrap(),
        StatusCode::BAD_REQUEST,
        "users[2]: missing feature \"country\"",
    ));
    assert_eq!(eight, 8);
    for (what, uri, body, status, message) in more {
        let (got, response) = call(&state, "POST", uri, Some(body)).await;
        assert_eq!(got, status, "{what}: {response}");
        let error = response["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error field in {response}"));
        assert!(error.contains(message), "{what}: {error}");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let state = state(Limits::default());
    call(&state, "GET", "/v2/health/live", None).await;
    post(&state, "/v1/recommend", &json!({ "users": [] })).await;
    let request = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("upsell_requests_total{route=\"/v2/health/live\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("upsell_requests_total{route=\"/v1/recommend\",status=\"400\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("upsell_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "upsell_model_info{{version=\"{}\"}} 1",
        state.model().version()
    )));
}

/// A second checkpoint with other weights, for reloads.
pub(crate) fn other_checkpoint(dir: &Path) -> PathBuf {
    crate::common::run_ok(
        crate::common::upsell()
            .arg("train")
            .args(crate::model::tiny(&[
                "train.synthetic_rows=3000",
                "train.epochs=1",
                "seed=5",
            ]))
            .arg("--out")
            .arg(dir.join("run")),
    );
    dir.join("run/checkpoint")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_concurrent_requests_fails_none() {
    let tmp = tempfile::tempdir().unwrap();
    let other = other_checkpoint(tmp.path());
    let state = state(Limits::default());
    let first = state.model().version().to_string();
    let request = Arc::new(serde_json::to_vec(&infer_request(&state.model())).unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (state, request, done) = (state.clone(), request.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut versions = std::collections::BTreeSet::new();
            // Requests run until every reload has happened.
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let (status, response) = call(
                    &state,
                    "POST",
                    "/v2/models/upsell/infer",
                    Some(request.to_vec()),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{response}");
                versions.insert(response["model_version"].as_str().unwrap().to_string());
            }
            versions
        }));
    }
    for i in 0..6 {
        let dir = if i % 2 == 0 { other.clone() } else { demo() };
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.reload(Some(&dir)).unwrap())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = std::collections::BTreeSet::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    // Requests saw both models, and none failed across six swaps.
    assert!(seen.contains(&first) && seen.len() == 2, "{seen:?}");
    // The admin route reloads too; a bad checkpoint leaves the model serving.
    let state = admin_state(tmp.path());
    let (status, body) = reload(&state, Some(TOKEN), &json!({ "checkpoint": other })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = reload(&state, Some(TOKEN), &json!({ "checkpoint": "run" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        call(&state, "GET", "/v2/health/ready", None).await.0,
        StatusCode::OK
    );
}

/// An address that cannot be listened on is the environment's fault, not
/// the command's: exit 1, naming the address.
#[test]
fn a_taken_address_is_a_clear_runtime_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = crate::common::upsell()
        .args(["serve", "--checkpoint"])
        .arg(demo())
        .args(["--addr", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

/// `serve --log-decisions`: every decision of /v1/recommend becomes an
/// exposure row, in the columns `recommend --exposures` writes; a log with
/// another model's columns is refused rather than mixed.
#[tokio::test]
async fn recommend_decisions_are_logged_as_exposure_rows() {
    use upsell::serve::DecisionLog;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("decisions.csv");
    let model = Model::load(&demo()).unwrap();
    let log = DecisionLog::open(&path, model.scorer(), model.policy()).unwrap();
    let state = Arc::new(
        AppState::new(model, demo(), "upsell".into(), Limits::default()).with_decision_log(log),
    );
    for _ in 0..2 {
        let (status, response) = post(&state, "/v1/recommend", &json!({ "users": users() })).await;
        assert_eq!(status, StatusCode::OK, "{response}");
    }
    let logged = std::fs::read_to_string(&path).unwrap();
    assert_eq!(logged.lines().count(), 1 + 2 * 8, "{logged}");
    // The same header as the batch command's exposure log.
    let exposures = batch_exposures(&demo().join("rows.csv"), tmp.path());
    let batch = std::fs::read_to_string(&exposures).unwrap();
    assert_eq!(logged.lines().next(), batch.lines().next());
    // The first user's row names its id, offer and propensity.
    let header: Vec<&str> = logged.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = logged.lines().nth(1).unwrap().split(',').collect();
    let at = |c: &str| row[header.iter().position(|h| *h == c).unwrap()];
    assert_eq!(at("user_id"), "u0000000000");
    assert!(!at("offer").is_empty());
    assert_eq!(at("propensity"), "1");
    // Reopened by the same model it appends; with a holdout (another header)
    // it is refused.
    let again = Model::load(&demo()).unwrap();
    DecisionLog::open(&path, again.scorer(), again.policy()).unwrap();
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    for file in ["manifest.json", "model.safetensors"] {
        std::fs::copy(demo().join(file), other.join(file)).unwrap();
    }
    let manifest = other.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let with_holdout = text.replace("holdout = 0.0\\n", "holdout = 0.1\\n");
    assert_ne!(with_holdout, text);
    std::fs::write(&manifest, with_holdout).unwrap();
    let held = Model::load(&other).unwrap();
    let error = DecisionLog::open(&path, held.scorer(), held.policy())
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("--log-decisions") && error.contains("holdout"),
        "{error}"
    );
}

/// The exposure log `upsell recommend --exposures` writes for `input`
/// with the demo checkpoint, in `dir`.
fn batch_exposures(input: &Path, dir: &Path) -> PathBuf {
    let exposures = dir.join("exposures.csv");
    crate::common::run_ok(
        crate::common::upsell()
            .args(["recommend", "--checkpoint"])
            .arg(demo())
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(dir.join("decisions-batch.csv"))
            .arg("--exposures")
            .arg(&exposures),
    );
    exposures
}

/// Users for requests from a CSV of exposure rows (`recommend --exposures`).
fn users_from_csv(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let numeric = upsell::data::synth::NUMERIC_COLUMNS;
    lines
        .map(|line| {
            let user: serde_json::Map<String, Json> = header
                .iter()
                .zip(line.split(','))
                .map(|(h, v)| (h.to_string(), cell(v, numeric.contains(h))))
                .collect();
            Json::Object(user)
        })
        .collect()
}

/// The population stability index of each feature, from /metrics.
async fn feature_psi(state: &Arc<AppState>) -> std::collections::BTreeMap<String, f64> {
    let (_, text) = call(state, "GET", "/metrics", None).await;
    text.as_str()
        .unwrap()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("upsell_feature_psi{feature=\"")?;
            let (feature, value) = rest.split_once("\"} ")?;
            Some((feature.to_string(), value.parse().unwrap()))
        })
        .collect()
}

/// `/metrics` shows input drift per feature against the training rows
/// saved in the checkpoint: rows from the training world are stable
/// (PSI < 0.1 for every feature), a feed that changed a unit or lost a
/// vocabulary is not (PSI > 1 for those features, and only those).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_input_drift_per_feature() {
    let tmp = tempfile::tempdir().unwrap();
    crate::common::run_ok(
        crate::common::upsell()
            .args(["synth", "--rows", "3000", "--seed", "7", "--out"])
            .arg(tmp.path().join("world")),
    );
    let exposures = batch_exposures(&tmp.path().join("world/exposures"), tmp.path());
    let users = users_from_csv(&exposures);
    assert_eq!(users.len(), 3000);

    let stable = state(Limits::default());
    assert!(feature_psi(&stable).await.is_empty(), "no rows, no index");
    for batch in users.chunks(1000) {
        let (status, body) = post(&stable, "/v1/recommend", &json!({ "users": batch })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let psi = feature_psi(&stable).await;
    assert_eq!(
        psi.len(),
        12 + 5,
        "every numeric and categorical feature: {psi:?}"
    );
    assert!(psi.values().all(|&p| p < 0.1), "{psi:?}");
    let (_, metrics) = call(&stable, "GET", "/metrics", None).await;
    assert!(metrics.as_str().unwrap().contains("upsell_drift_rows 3000"));

    let shifted = state(Limits::default());
    let broken: Vec<Json> = users
        .iter()
        .map(|user| {
            let mut user = user.clone();
            user["tenure_months"] = json!(user["tenure_months"].as_f64().unwrap() * 30.0);
            user["country"] = json!("XX");
            user
        })
        .collect();
    for batch in broken.chunks(1000) {
        post(&shifted, "/v1/recommend", &json!({ "users": batch })).await;
    }
    let psi = feature_psi(&shifted).await;
    for (feature, &value) in &psi {
        let broken = feature == "tenure_months" || feature == "country";
        assert_eq!(value > 1.0, broken, "{feature}: {value} in {psi:?}");
    }
}

/// A shadow checkpoint decides every request too: its decisions go to its
/// own log with its version, the client's answer is the live model's
/// alone, and /metrics counts how often the two agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_checkpoint_is_decided_and_logged_not_returned() {
    let tmp = tempfile::tempdir().unwrap();
    let other = other_checkpoint(tmp.path());
    let log = tmp.path().join("shadow.csv");
    let shadow = upsell::serve::Shadow::load(&other, &log).unwrap();
    let shadow_version = Model::load(&other).unwrap().version().to_string();
    let with_shadow = Arc::new(
        AppState::new(
            Model::load(&demo()).unwrap(),
            demo(),
            "upsell".into(),
            Limits::default(),
        )
        .with_shadow(shadow),
    );
    let plain = state(Limits::default());
    let request = json!({ "users": users() });
    let (status, answer) = post(&with_shadow, "/v1/recommend", &request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, post(&plain, "/v1/recommend", &request).await.1);
    // The shadow decides off the request's path: wait for its log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let logged = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() == 1 + 8 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "shadow log: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        logged
            .lines()
            .skip(1)
            .all(|row| row.contains(&shadow_version)),
        "{logged}"
    );
    // The shadow counts its outcome after writing its log.
    let metrics = loop {
        let (_, metrics) = call(&with_shadow, "GET", "/metrics", None).await;
        let metrics = metrics.as_str().unwrap().to_string();
        if metrics.contains("upsell_shadow_requests_total{outcome=\"logged\"} 1") {
            break metrics;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let agreed: u64 = ["true", "false"]
        .iter()
        .map(|agrees| {
            metrics
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "upsell_shadow_decisions_total{{agrees=\"{agrees}\"}} "
                    ))
                })
                .map_or(0, |n| n.parse().unwrap())
        })
        .sum();
    assert_eq!(agreed, 8, "{metrics}");
}
