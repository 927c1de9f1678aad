//! What every request shares: the model serving now (swapped atomically on
//! reload), the Prometheus metrics and the limits.

use crate::config::{Config, PolicyConfig};
use crate::scoring::Scorer;
use crate::{Error, Result};
use arc_swap::ArcSwap;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Request, connection and shutdown limits. Together they bound what load
/// can do to the process: at most `max_concurrent` requests are scored at
/// once (more are shed with 503 and `Retry-After`), each at most
/// `max_batch` rows and `max_body_bytes`, each decision with at most
/// `max_top_k` candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Largest number of rows (users) in one request.
    pub max_batch: usize,
    /// Longest time a request may take, body included.
    pub timeout: Duration,
    /// Scoring requests (infer, recommend) handled at once; more are shed.
    pub max_concurrent: usize,
    /// Open connections; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers, which is also
    /// how long a kept-alive connection may sit idle.
    pub header_timeout: Duration,
    /// How long SIGTERM waits for requests in flight before closing them.
    pub shutdown_timeout: Duration,
    /// Most candidates a `/v1/recommend` decision may list (`top_k`).
    pub max_top_k: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 << 20,
            max_batch: 4096,
            timeout: Duration::from_secs(10),
            max_concurrent: default_concurrency(),
            max_connections: 1024,
            header_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(20),
            max_top_k: 20,
        }
    }
}

/// Two scoring requests per core: scoring is CPU-bound, and the second keeps
/// a core busy while the first parses or writes JSON.
pub fn default_concurrency() -> usize {
    2 * std::thread::available_parallelism().map_or(1, usize::from)
}

/// Who may reload: `POST /admin/reload` answers only a bearer token, and
/// loads only checkpoints under `root`. Without it, reload is off (SIGHUP
/// still reloads the serving directory).
#[derive(Clone)]
pub struct Admin {
    /// The token's sha256: requests are compared by digest, so the time a
    /// comparison takes says nothing about the token's prefix.
    token: [u8; 32],
    root: PathBuf,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Reload with `token` (surrounding whitespace, such as a file's final
    /// newline, is not part of it), of checkpoints under `root`.
    pub fn new(token: &str, root: &Path) -> Result<Admin> {
        let token = token.trim();
        if token.len() < 16 {
            return Err(Error::Argument {
                argument: "--admin-token",
                message: format!(
                    "the admin token has {} characters; use at least 16 (e.g. `openssl rand -hex 32`)",
                    token.len()
                ),
            });
        }
        let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
        Ok(Admin {
            token: Sha256::digest(token.as_bytes()).into(),
            root,
        })
    }

    pub(super) fn accepts(&self, token: &str) -> bool {
        <[u8; 32]>::from(Sha256::digest(token.as_bytes())) == self.token
    }

    /// The directory a reload request names, taken from the root when
    /// relative; one outside the root (after resolving links and `..`) is
    /// refused.
    pub(super) fn resolve(&self, dir: &Path) -> std::result::Result<PathBuf, String> {
        let joined = self.root.join(dir);
        let resolved = joined
            .canonicalize()
            .map_err(|e| format!("checkpoint {}: {e}", dir.display()))?;
        if resolved.starts_with(&self.root) {
            Ok(resolved)
        } else {
            Err(format!(
                "checkpoint {} is outside the reload root {}",
                dir.display(),
                self.root.display()
            ))
        }
    }
}

/// A loaded checkpoint with what the routes need from it.
pub struct Model {
    pub(super) scorer: Scorer,
    /// The first 12 hex digits of the weights' sha256.
    pub(super) version: String,
    pub(super) policy: PolicyConfig,
    pub(super) seed: u64,
    /// Counts of the rows this model scored, against its training rows.
    pub(super) drift: Option<super::drift::Drift>,
}

impl Model {
    /// Loads a checkpoint and its saved policy.
    pub fn load(dir: &Path) -> Result<Model> {
        let scorer = Scorer::load(dir)?;
        let origin = format!("{} (saved config)", dir.display());
        let config = Config::from_toml(&scorer.manifest().config, &origin, Path::new(""), &[])?;
        let version = scorer.manifest().version();
        let drift = super::drift::Drift::new(&scorer.manifest().preprocessor);
        Ok(Model {
            scorer,
            version,
            policy: config.policy,
            seed: config.seed,
            drift,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// The checkpoint's saved policy.
    pub fn policy(&self) -> &PolicyConfig {
        &self.policy
    }
}

/// Request counts, errors and latencies per route, batch sizes, load shed,
/// connections, the model version and the process's own resources.
pub struct Metrics {
    pub(super) registry: Registry,
    pub(super) requests: IntCounterVec,
    pub(super) latency: HistogramVec,
    pub(super) batch: HistogramVec,
    pub(super) model: IntGaugeVec,
    pub(super) reloads: IntCounterVec,
    pub(super) shed: IntCounterVec,
    pub(super) in_flight: IntGauge,
    pub(super) connections: IntGauge,
    pub(super) connections_refused: IntCounter,
    pub(super) feature_psi: GaugeVec,
    pub(super) drift_rows: IntGauge,
    pub(super) shadow: IntCounterVec,
    pub(super) shadow_agreement: IntCounterVec,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "upsell_requests_total",
                "HTTP requests by route and status (shed and timed-out ones included).",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "upsell_request_duration_seconds",
                "Request latency by route.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
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
        let shed = IntCounterVec::new(
            Opts::new(
                "upsell_requests_shed_total",
                "Scoring requests refused with 503 because max_concurrent were in flight.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "upsell_requests_in_flight",
            "Scoring requests being handled now.",
        )
        .expect("valid metric");
        let connections = IntGauge::new("upsell_connections_open", "Open client connections.")
            .expect("valid metric");
        let connections_refused = IntCounter::new(
            "upsell_connections_refused_total",
            "Connections closed on accept because max_connections were open.",
        )
        .expect("valid metric");
        let feature_psi = GaugeVec::new(
            Opts::new(
                "upsell_feature_psi",
                "Population stability index of each feature over the rows the serving model \
                 scored, against its training rows (below 0.1: stable; above 0.25: shifted).",
            ),
            &["feature"],
        )
        .expect("valid metric");
        let drift_rows = IntGauge::new(
            "upsell_drift_rows",
            "Rows the serving model scored since it was loaded: what upsell_feature_psi is over.",
        )
        .expect("valid metric");
        let shadow = IntCounterVec::new(
            Opts::new(
                "upsell_shadow_requests_total",
                "Recommend requests decided by the shadow checkpoint, by outcome (logged, \
                 skipped while it was busy, error).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let shadow_agreement = IntCounterVec::new(
            Opts::new(
                "upsell_shadow_decisions_total",
                "Shadow decisions by whether they offer what the live model offered.",
            ),
            &["agrees"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(feature_psi.clone()),
            Box::new(drift_rows.clone()),
            Box::new(shadow.clone()),
            Box::new(shadow_agreement.clone()),
            Box::new(latency.clone()),
            Box::new(batch.clone()),
            Box::new(model.clone()),
            Box::new(reloads.clone()),
            Box::new(shed.clone()),
            Box::new(in_flight.clone()),
            Box::new(connections.clone()),
            Box::new(connections_refused.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
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
            shed,
            in_flight,
            connections,
            connections_refused,
            feature_psi,
            drift_rows,
            shadow,
            shadow_agreement,
        }
    }

    /// Sets the drift gauges from `model`'s counts, before a scrape.
    pub(super) fn update_drift(&self, model: &Model) {
        self.feature_psi.reset();
        let Some(drift) = &model.drift else {
            return;
        };
        self.drift_rows.set(drift.rows() as i64);
        for (feature, psi) in drift.stability() {
            if let Some(psi) = psi {
                self.feature_psi.with_label_values(&[feature]).set(psi);
            }
        }
    }
}

impl Metrics {
    /// Scoring requests being handled now.
    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }

    /// Connections closed on accept since the start.
    pub fn connections_refused_total(&self) -> u64 {
        self.connections_refused.get()
    }
}

/// What every request sees: the current model (swapped atomically on
/// reload), the metrics and the limits.
pub struct AppState {
    pub(super) model: ArcSwap<Model>,
    /// The directory the serving model came from; held only to swap.
    pub(super) checkpoint: std::sync::Mutex<PathBuf>,
    pub metrics: Metrics,
    pub limits: Limits,
    /// The name under which the model is served (`/v2/models/{name}`).
    pub name: String,
    /// Where `/v1/recommend` logs its decisions, if anywhere.
    pub decision_log: Option<super::log::DecisionLog>,
    /// Who may reload over HTTP; `None`: nobody.
    pub(super) admin: Option<Admin>,
    /// One permit per scoring request in flight (`Limits::max_concurrent`).
    pub(super) scoring: Arc<Semaphore>,
    /// A candidate checkpoint decided beside the serving one, if any.
    pub(super) shadow: Option<Shadow>,
}

/// A candidate checkpoint served in shadow: it decides for every
/// `/v1/recommend` request as the serving model does, and its decisions go
/// to its own log, never to the client.
pub struct Shadow {
    pub(super) model: Model,
    pub(super) log: super::log::DecisionLog,
    /// Shadow requests in flight; one more is skipped rather than queued.
    pub(super) slots: Arc<Semaphore>,
}

impl Shadow {
    /// The checkpoint at `dir`, logging its decisions to `log` (a file of
    /// its own: its columns are this model's).
    pub fn load(dir: &Path, log: &Path) -> Result<Shadow> {
        let model = Model::load(dir)?;
        let log = super::log::DecisionLog::open(log, model.scorer(), model.policy())?;
        Ok(Shadow {
            model,
            log,
            slots: Arc::new(Semaphore::new(2)),
        })
    }
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
            decision_log: None,
            admin: None,
            scoring: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            shadow: None,
        }
    }

    /// Decides every `/v1/recommend` request with `shadow` too.
    pub fn with_shadow(self, shadow: Shadow) -> AppState {
        AppState {
            shadow: Some(shadow),
            ..self
        }
    }

    /// Logs every decision of `/v1/recommend` to `log`.
    pub fn with_decision_log(self, log: super::log::DecisionLog) -> AppState {
        AppState {
            decision_log: Some(log),
            ..self
        }
    }

    /// Turns `POST /admin/reload` on, for `admin`'s token and root.
    pub fn with_admin(self, admin: Admin) -> AppState {
        AppState {
            admin: Some(admin),
            ..self
        }
    }

    /// The model serving now.
    pub fn model(&self) -> Arc<Model> {
        self.model.load_full()
    }

    /// Loads the checkpoint at `dir` (or the current one again) and swaps it
    /// in. Requests in flight finish on the model they started with; a load
    /// that fails leaves the serving model in place. The load itself holds
    /// no lock, so a slow or stuck one does not hold up the next reload.
    pub fn reload(&self, dir: Option<&Path>) -> Result<String> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => self
                .checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let model = Model::load(&dir).inspect_err(|_| {
            self.metrics.reloads.with_label_values(&["error"]).inc();
        })?;
        self.metrics.reloads.with_label_values(&["ok"]).inc();
        let version = model.version().to_string();
        // The swap and the directory change together, so the directory
        // always names the model serving.
        let mut current = self.checkpoint.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.model.swap(Arc::new(model));
        self.metrics
            .model
            .with_label_values(&[old.version()])
            .set(0);
        self.metrics.model.with_label_values(&[&version]).set(1);
        *current = dir;
        drop(current);
        tracing::info!(version, "model reloaded");
        Ok(version)
    }
}
