//! The HTTP server: the Open Inference Protocol ("KServe v2") REST API for
//! scores, `/v1/recommend` for decisions, Prometheus metrics, limits,
//! graceful shutdown and hot reload. It only wraps [`Scorer`] and
//! [`crate::policy`]; [`app`] builds the router so tests drive it without a
//! socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, MatchedPath, Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use serde_json::{Map, Value as Json, json};

use crate::config::Exploration;
use crate::config::{Config, PolicyConfig};
use crate::preprocess::Value;
use crate::scoring::Scorer;
use crate::{Error, Result};

/// Request limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Largest number of rows (users) in one request.
    pub max_batch: usize,
    /// Longest time a request may take.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 << 20,
            max_batch: 4096,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A loaded checkpoint with what the routes need from it.
pub struct Model {
    scorer: Scorer,
    /// The first 12 hex digits of the weights' sha256.
    version: String,
    policy: PolicyConfig,
    seed: u64,
}

impl Model {
    /// Loads a checkpoint and its saved policy.
    pub fn load(dir: &Path) -> Result<Model> {
        let scorer = Scorer::load(dir)?;
        let origin = format!("{} (saved config)", dir.display());
        let config = Config::from_toml(&scorer.manifest().config, &origin, Path::new(""), &[])?;
        let version = scorer.manifest().weights.sha256.chars().take(12).collect();
        Ok(Model {
            scorer,
            version,
            policy: config.policy,
            seed: config.seed,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Request counts, errors and latencies per route, batch sizes, model version.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    batch: HistogramVec,
    model: IntGaugeVec,
    reloads: IntCounterVec,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "upsell_requests_total",
                "HTTP requests by route and status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("upsell_request_seconds", "Request latency by route.").buckets(
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ],
            ),
            &["route"],
        )
        .expect("valid metric");
        let batch = HistogramVec::new(
            HistogramOpts::new("upsell_batch_size", "Rows per scoring request by route.").buckets(
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
                ],
            ),
            &["route"],
        )
        .expect("valid metric");
        let model = IntGaugeVec::new(
            Opts::new(
                "upsell_model_info",
                "The serving model's version (value 1).",
            ),
            &["version"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "upsell_reloads_total",
                "Model reloads (SIGHUP or POST /admin/reload) by outcome.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(batch.clone()),
            Box::new(model.clone()),
            Box::new(reloads.clone()),
        ] {
            registry.register(metric).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            latency,
            batch,
            model,
            reloads,
        }
    }
}

/// What every request sees: the current model (swapped atomically on
/// reload), the metrics and the limits.
pub struct AppState {
    model: ArcSwap<Model>,
    checkpoint: std::sync::Mutex<PathBuf>,
    pub metrics: Metrics,
    pub limits: Limits,
    /// The name under which the model is served (`/v2/models/{name}`).
    pub name: String,
}

impl AppState {
    pub fn new(model: Model, checkpoint: PathBuf, name: String, limits: Limits) -> AppState {
        let metrics = Metrics::new();
        metrics.model.with_label_values(&[model.version()]).set(1);
        AppState {
            model: ArcSwap::from_pointee(model),
            checkpoint: std::sync::Mutex::new(checkpoint),
            metrics,
            limits,
            name,
        }
    }

    /// The model serving now.
    pub fn model(&self) -> Arc<Model> {
        self.model.load_full()
    }

    /// Loads the checkpoint at `dir` (or the current one again) and swaps it
    /// in. Requests in flight finish on the model they started with; a load
    /// that fails leaves the serving model in place.
    pub fn reload(&self, dir: Option<&Path>) -> Result<String> {
        let mut current = self.checkpoint.lock().expect("not poisoned");
        let dir = dir.map_or_else(|| current.clone(), Path::to_path_buf);
        let model = Model::load(&dir).inspect_err(|_| {
            self.metrics.reloads.with_label_values(&["error"]).inc();
        })?;
        self.metrics.reloads.with_label_values(&["ok"]).inc();
        let version = model.version().to_string();
        let old = self.model.swap(Arc::new(model));
        self.metrics
            .model
            .with_label_values(&[old.version()])
            .set(0);
        self.metrics.model.with_label_values(&[&version]).set(1);
        *current = dir;
        tracing::info!(version, "model reloaded");
        Ok(version)
    }
}

/// A failed request: a status and a message, sent as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
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

fn json_response(value: Json) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&value).expect("JSON serialises"),
    )
        .into_response()
}

/// The router, with every route, the limits and the metrics.
pub fn app(state: Arc<AppState>) -> Router {
    let limits = state.limits;
    Router::new()
        .route(
            "/v2/health/live",
            get(|| async { json_response(json!({ "live": true })) }),
        )
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v1/recommend", post(recommend))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(admin_reload))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.timeout,
        ))
        .with_state(state)
}

/// Counts and times every request by its route pattern.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .requests
        .with_label_values(&[&route, &status])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[&route])
        .observe(start.elapsed().as_secs_f64());
    response
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let _ = state.model();
    json_response(json!({ "ready": true }))
}

async fn server_metadata() -> Response {
    json_response(json!({
        "name": "upsell",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

fn check_name(state: &AppState, name: &str) -> Result<(), ApiError> {
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

/// The KServe datatype of each input column.
fn input_types(model: &Model) -> Vec<(String, &'static str)> {
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

async fn model_metadata(
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

async fn model_ready(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    check_name(&state, &name)?;
    Ok(json_response(json!({ "name": name, "ready": true })))
}

fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<Json, ApiError> {
    parse_json(&body?)
}

fn parse_json(body: &[u8]) -> Result<Json, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))
}

/// Flattens KServe `data`, which may be nested row-major arrays.
fn flatten<'a>(data: &'a Json, out: &mut Vec<&'a Json>) {
    match data {
        Json::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

/// One JSON value as a scorer value; `field` names it in errors.
fn to_value<'a>(value: &'a Json, field: &str) -> Result<Value<'a>, ApiError> {
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

fn batch_size(rows: usize, limits: &Limits) -> Result<(), ApiError> {
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
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scoring failed: {e}"),
        )
    })
}

async fn infer(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_name(&state, &name)?;
    let request = parse_body(body)?;
    let model = state.model();
    let inputs = request
        .get("inputs")
        .and_then(Json::as_array)
        .ok_or_else(|| ApiError::bad("the request needs an \"inputs\" array"))?;
    let mut columns: HashMap<String, Vec<&Json>> = HashMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let name = input
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| ApiError::bad(format!("inputs[{i}] has no \"name\"")))?;
        let data = input
            .get("data")
            .ok_or_else(|| ApiError::bad(format!("input {name:?} has no \"data\"")))?;
        let mut values = Vec::new();
        flatten(data, &mut values);
        columns.insert(name.to_string(), values);
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
    let mut outputs = vec![json!({
        "name": "p_convert",
        "datatype": "FP32",
        "shape": [rows, width],
        "data": scores.p_convert,
    })];
    if !scores.p_plan.is_empty() {
        outputs.push(json!({
            "name": "p_plan",
            "datatype": "FP32",
            "shape": [rows, scores.products.len()],
            "data": scores.p_plan,
        }));
    }
    let mut response = Map::new();
    response.insert("model_name".into(), json!(state.name));
    response.insert("model_version".into(), json!(model.version()));
    if let Some(id) = request.get("id") {
        response.insert("id".into(), id.clone());
    }
    response.insert("outputs".into(), Json::Array(outputs));
    Ok(json_response(Json::Object(response)))
}

async fn recommend(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = parse_body(body)?;
    let model = state.model();
    let users = request
        .get("users")
        .and_then(Json::as_array)
        .ok_or_else(|| ApiError::bad("the request needs a \"users\" array"))?;
    batch_size(users.len(), &state.limits)?;
    let exploration = match request.get("policy") {
        None | Some(Json::Null) => model.policy.exploration,
        Some(Json::String(s)) => s
            .parse::<Exploration>()
            .map_err(|e| ApiError::bad(format!("policy {e}")))?,
        Some(_) => {
            return Err(ApiError::bad(
                "\"policy\" must be a string such as \"softmax:0.1\"",
            ));
        }
    };
    let pre = &model.scorer.manifest().preprocessor;
    let required: Vec<String> = input_types(&model)
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| pre.offer.as_deref() != Some(c.as_str()))
        .collect();
    let mut records: Vec<HashMap<String, Value<'_>>> = Vec::with_capacity(users.len());
    let mut ids: Vec<Option<String>> = Vec::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        let user = user
            .as_object()
            .ok_or_else(|| ApiError::bad(format!("users[{i}] is not an object")))?;
        let mut record = HashMap::new();
        for column in &required {
            let value = user
                .get(column)
                .ok_or_else(|| ApiError::bad(format!("users[{i}]: missing feature {column:?}")))?;
            let field = format!("users[{i}].{column}");
            let value = to_value(value, &field)?;
            record.insert(column.clone(), value);
        }
        records.push(record);
        ids.push(match user.get("id") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        });
    }
    let features = model
        .scorer
        .transform_records(&records)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    state
        .metrics
        .batch
        .with_label_values(&["/v1/recommend"])
        .observe(users.len() as f64);
    let texts: Vec<Vec<(String, Option<String>)>> = users
        .iter()
        .map(|user| {
            model
                .policy
                .exclude
                .iter()
                .map(|rule| {
                    let text = user.get(&rule.column).and_then(|v| match v {
                        Json::String(s) => Some(s.clone()),
                        Json::Null => None,
                        other => Some(other.to_string()),
                    });
                    (rule.column.clone(), text)
                })
                .collect()
        })
        .collect();
    let deciding = model.clone();
    let decisions = blocking(move || -> Result<Vec<crate::policy::Decision>, String> {
        let scores = deciding
            .scorer
            .user_scores(&features)
            .map_err(|e| e.to_string())?;
        let policy = deciding
            .scorer
            .policy(deciding.policy.clone(), deciding.seed);
        let value = |row: usize, column: &str| -> Option<String> {
            texts[row]
                .iter()
                .find(|(c, _)| c == column)
                .and_then(|(_, v)| v.clone())
        };
        Ok(policy.decide(exploration, &scores, &ids, &value))
    })
    .await?
    .map_err(ApiError::bad)?;
    Ok(json_response(json!({
        "model_version": model.version(),
        "policy": exploration.to_string(),
        "decisions": decisions,
    })))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut buffer = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&state.metrics.registry.gather(), &mut buffer)
        .expect("metrics encode");
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        buffer,
    )
        .into_response()
}

/// Reloads the checkpoint (or loads `{"checkpoint": DIR}`); loopback only.
async fn admin_reload(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    // Without connection info (tests drive the router directly) there is no
    // remote peer to refuse.
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && !peer.ip().is_loopback()
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "reload is allowed from loopback only".into(),
        ));
    }
    let body = axum::body::to_bytes(request.into_body(), state.limits.max_body_bytes)
        .await
        .map_err(|e| ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
    let dir = if body.is_empty() {
        None
    } else {
        parse_json(&body)?
            .get("checkpoint")
            .and_then(Json::as_str)
            .map(PathBuf::from)
    };
    let reloading = state.clone();
    let version = blocking(move || reloading.reload(dir.as_deref()))
        .await?
        .map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(json_response(json!({ "model_version": version })))
}

/// Serves until SIGTERM or ctrl-c, finishing requests in flight; SIGHUP
/// reloads the checkpoint.
pub async fn serve(state: Arc<AppState>, addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    tracing::info!(%addr, model = state.name, version = state.model().version(), "serving");
    let reloader = state.clone();
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangups.recv().await.is_some() {
            let state = reloader.clone();
            match tokio::task::spawn_blocking(move || state.reload(None)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reload failed; still serving the previous model")
                }
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    });
    let shutdown = async {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = terminate => {},
        }
        tracing::info!("shutting down: finishing requests in flight");
    };
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|e| Error::io(PathBuf::from(addr.to_string()), e))
}
