//! The HTTP server: the Open Inference Protocol ("KServe v2") REST API for
//! scores, `/v1/recommend` for decisions, Prometheus metrics, limits,
//! graceful shutdown and hot reload. It only wraps [`Scorer`](crate::Scorer) and
//! [`crate::policy`]; [`app`] builds the router so tests drive it without a
//! socket.

mod drift;
mod kserve;
mod log;
mod recommend;
mod request;
mod state;

pub use log::DecisionLog;
pub use request::ApiError;
pub use state::{Admin, AppState, Limits, Metrics, Model, Shadow, default_concurrency};

use crate::api::{ReloadRequest, ReloadResponse};
use kserve::*;
use recommend::recommend;
use request::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus::Encoder;
use serde_json::json;

use crate::{Error, Result};

/// The router, with every route, the limits and the metrics.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v2/health/live",
            get(|| async { json_response(&json!({ "live": true })) }),
        )
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(version_infer),
        )
        .route("/v1/recommend", post(recommend))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(admin_reload))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method".into(),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the server logged it".into(),
                )
                .into_response()
            },
        ))
        .with_state(state)
}

/// Bounds every request by the timeout, then counts, times and logs it by
/// its route pattern: one log line per request, timed-out ones included.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().clone();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let start = Instant::now();
    let timeout = state.limits.timeout;
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {} ms", timeout.as_millis()),
        )
        .into_response(),
    };
    let elapsed = start.elapsed();
    let status = response.status();
    state
        .metrics
        .requests
        .with_label_values(&[&route, status.as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[&route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "upsell::request",
        %method,
        route,
        status = status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1e3,
        peer = peer.map(tracing::field::display),
    );
    response
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.update_drift(&state.model());
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

/// How long a reload may take before the request gives up on it; the load
/// holds no lock, so one stuck on a bad file delays nothing else.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Loads `{"checkpoint": DIR}` (a directory under the reload root; a
/// relative one is taken from the root) or the serving directory again.
/// Off unless the server has an admin token; the request must carry it as
/// `Authorization: Bearer TOKEN`.
async fn admin_reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(admin) = &state.admin else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "reload over HTTP is off; start serve with --admin-token-file (or send SIGHUP)".into(),
        ));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| admin.accepts(t.trim())) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "reload needs the admin token: Authorization: Bearer TOKEN".into(),
        ));
    }
    let body = read_body(body, state.limits.max_body_bytes).await?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest { checkpoint: None }
    } else {
        parse::<ReloadRequest>(&body)?
    };
    let dir = request
        .checkpoint
        .map(|dir| admin.resolve(&dir))
        .transpose()
        .map_err(|message| ApiError(StatusCode::FORBIDDEN, message))?;
    let reloading = state.clone();
    let load = blocking(move || reloading.reload(dir.as_deref()));
    let version = tokio::time::timeout(RELOAD_TIMEOUT, load)
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the checkpoint did not load within {} s; still serving the previous model",
                    RELOAD_TIMEOUT.as_secs()
                ),
            )
        })??
        .map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(json_response(&ReloadResponse {
        model_version: version,
    }))
}

/// Serves until SIGTERM or ctrl-c; SIGHUP reloads the checkpoint.
///
/// The accept loop is hyper's, configured for hostile clients: at most
/// `max_connections` open (more are closed on accept), a client that takes
/// longer than `header_timeout` to send a request's headers, or leaves a
/// kept-alive connection idle that long, is disconnected. On shutdown the
/// listener closes, connections finish the request they are on, and after
/// `shutdown_timeout` whatever is left is closed.
pub async fn serve(state: Arc<AppState>, addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    tracing::info!(%addr, model = state.name, version = state.model().version(), "serving");
    reload_on_hangup(state.clone());
    serve_until(state, listener, shutdown_signal()).await;
    Ok(())
}

/// Serves on `listener` until `shutdown` completes, as [`serve`] does after
/// a signal.
pub async fn serve_until(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = state.limits;
    let router = app(state.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file handles, or a client gone before accept:
                    // pause rather than spin, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state.metrics.connections_refused.inc();
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(router.clone(), request.map(Body::new))
        });
        let mut stopping = stopping.clone();
        let open = state.metrics.connections.clone();
        connections.spawn(async move {
            let _slot = slot;
            open.inc();
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            open.dec();
        });
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "shutting down: finishing requests in flight"
    );
    let _ = stop.send(true);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown deadline passed: closing the connections still open"
        );
        connections.abort_all();
    }
}

fn reload_on_hangup(state: Arc<AppState>) {
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangups.recv().await.is_some() {
            let state = state.clone();
            match tokio::task::spawn_blocking(move || state.reload(None)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reload failed; still serving the previous model")
                }
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    });
}

async fn shutdown_signal() {
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
}
