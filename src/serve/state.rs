//! What every request shares: the model serving now (swapped atomically on
//! reload), the Prometheus metrics and the limits.

use crate::Result;
use crate::config::{Config, PolicyConfig};
use crate::scoring::Scorer;
use arc_swap::ArcSwap;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    pub(super) scorer: Scorer,
    /// The first 12 hex digits of the weights' sha256.
    pub(super) version: String,
    pub(super) policy: PolicyConfig,
    pub(super) seed: u64,
}

impl Model {
    /// Loads a checkpoint and its saved policy.
    pub fn load(dir: &Path) -> Result<Model> {
        let scorer = Scorer::load(dir)?;
        let origin = format!("{} (saved config)", dir.display());
        let config = Config::from_toml(&scorer.manifest().config, &origin, Path::new(""), &[])?;
        let version = scorer.manifest().version();
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

    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// The checkpoint's saved policy.
    pub fn policy(&self) -> &PolicyConfig {
        &self.policy
    }
}

/// Request counts, errors and latencies per route, batch sizes, model version.
pub struct Metrics {
    pub(super) registry: Registry,
    pub(super) requests: IntCounterVec,
    pub(super) latency: HistogramVec,
    pub(super) batch: HistogramVec,
    pub(super) model: IntGaugeVec,
    pub(super) reloads: IntCounterVec,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
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
    pub(super) model: ArcSwap<Model>,
    pub(super) checkpoint: std::sync::Mutex<PathBuf>,
    pub metrics: Metrics,
    pub limits: Limits,
    /// The name under which the model is served (`/v2/models/{name}`).
    pub name: String,
    /// Where `/v1/recommend` logs its decisions, if anywhere.
    pub decision_log: Option<super::log::DecisionLog>,
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
        }
    }

    /// Logs every decision of `/v1/recommend` to `log`.
    pub fn with_decision_log(self, log: super::log::DecisionLog) -> AppState {
        AppState {
            decision_log: Some(log),
            ..self
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
