//! The HTTP server: the Open Inference Protocol ("KServe v2") REST API for
//! scores, `/v1/recommend` for decisions, Prometheus metrics, limits,
//! graceful shutdown and hot reload. It only wraps [`Scorer`](crate::Scorer) and
//! [`crate::policy`]; [`app`] builds the router so tests drive it without a
//! socket.

mod kserve;
mod log;
mod recommend;
mod request;
mod state;

pub use log::DecisionLog;
pub use request::ApiError;
pub use state::{AppState, Limits, Metrics, Model};

use crate::api::{ReloadRequest, ReloadResponse};
use kserve::{infer, model_metadata, model_ready, ready, server_metadata};
use recommend::recommend;
use request::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus::Encoder;
use serde_json::json;

use crate::{Error, Result};

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
        parse::<ReloadRequest>(&body)?.checkpoint
    };
    let reloading = state.clone();
    let version = blocking(move || reloading.reload(dir.as_deref()))
        .await?
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let response = ReloadResponse {
        model_version: version,
    };
    Ok(json_response(
        serde_json::to_value(&response).expect("a response serialises"),
    ))
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
