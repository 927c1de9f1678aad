//! The tracking API: a run on an MLflow server, its parameters, metrics,
//! artifacts and final status.

use std::path::Path;
use std::time::Duration;

use super::artifacts::*;
use super::client::*;
use super::wire::*;
use crate::error::TrackingError;

/// How a run ended, as recorded by [`Tracker::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// The run completed.
    Finished,
    /// The run stopped on an error.
    Failed,
}

impl RunStatus {
    /// MLflow's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
        }
    }
}

/// One MLflow run being logged to.
///
/// Cheap to share across threads (`Send + Sync`); each call is one or more
/// blocking HTTP requests.
#[derive(Debug)]
pub struct Tracker {
    pub(super) client: Client,
    pub(super) run_id: String,
    pub(super) artifact_uri: String,
}

impl Tracker {
    /// Gets or creates `experiment`, creates a run named `run_name`, logs `params` (in batches).
    ///
    /// `uri` is the server's base URL, `http://HOST:PORT`, optionally with a
    /// path prefix when the server sits behind a reverse proxy. The run is
    /// tagged `mlflow.runName`, `mlflow.source.name=upsell`,
    /// `mlflow.source.type=LOCAL` and `mlflow.user` (from `$USER`, when set).
    /// An empty `run_name` lets MLflow pick one. If logging `params` fails,
    /// the run is marked `FAILED` (best effort) before the error is returned.
    pub fn start(
        uri: &str,
        experiment: &str,
        run_name: &str,
        params: &[(String, String)],
    ) -> Result<Tracker> {
        Self::start_with_timeout(uri, experiment, run_name, params, TIMEOUT)
    }

    pub(super) fn start_with_timeout(
        uri: &str,
        experiment: &str,
        run_name: &str,
        params: &[(String, String)],
        timeout: Duration,
    ) -> Result<Tracker> {
        let client = Client::new(uri, timeout)?;
        let experiment_id = client.get_or_create_experiment(experiment)?;

        let mut tags = vec![
            Tag::new("mlflow.source.name", SOURCE_NAME),
            Tag::new("mlflow.source.type", "LOCAL"),
        ];
        if !run_name.is_empty() {
            tags.push(Tag::new("mlflow.runName", run_name));
        }
        let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME"));
        if let Ok(user) = &user {
            tags.push(Tag::new("mlflow.user", user));
        }
        let request = CreateRun {
            experiment_id: &experiment_id,
            run_name: (!run_name.is_empty()).then_some(run_name),
            start_time: now_ms(),
            tags,
        };
        let created: CreateRunResponse = client.post("runs/create", &request)?;
        let tracker = Tracker {
            client,
            run_id: created.run.info.run_id,
            artifact_uri: created.run.info.artifact_uri,
        };
        if let Err(err) = tracker.log_params(params) {
            // The params error is the one worth reporting; this is cleanup.
            let _ = tracker.finish(RunStatus::Failed);
            return Err(err);
        }
        Ok(tracker)
    }

    fn log_params(&self, params: &[(String, String)]) -> Result<()> {
        for batch in param_batches(&self.run_id, params) {
            let _: serde::de::IgnoredAny = self.client.post("runs/log-batch", &batch)?;
        }
        Ok(())
    }

    /// Logs metrics at `step` (timestamp now), batched.
    ///
    /// Non-finite values are skipped; nothing is sent when none is left.
    pub fn log_metrics(&self, step: i64, metrics: &[(String, f64)]) -> Result<()> {
        for batch in metric_batches(&self.run_id, step, now_ms(), metrics) {
            let _: serde::de::IgnoredAny = self.client.post("runs/log-batch", &batch)?;
        }
        Ok(())
    }

    /// Uploads one file as artifact `artifact_path` (e.g. "report/roc.svg").
    ///
    /// `artifact_path` is relative to the run's artifact root, `/`-separated,
    /// without `.`/`..` segments or `#`. An existing artifact is overwritten.
    pub fn log_artifact(&self, local: &Path, artifact_path: &str) -> Result<()> {
        let segments = artifact_segments(artifact_path)?;
        match artifact_root(&self.client.base, &self.artifact_uri) {
            Some(ArtifactRoot::Http(prefix)) => {
                let url = format!("{prefix}/{}", encode_segments(&segments));
                self.client.put_file(&url, local)
            }
            Some(ArtifactRoot::Local(root)) => {
                let target = segments.iter().fold(root, |path, s| path.join(s));
                copy_file(local, &target)
            }
            None => Err(TrackingError::UnsupportedArtifactUri {
                run_id: self.run_id.clone(),
                uri: self.artifact_uri.clone(),
            }),
        }
    }

    /// Uploads every file under `local_dir` (recursively) below `artifact_dir`.
    ///
    /// An empty `artifact_dir` uploads to the artifact root. Files are sent
    /// in path order; symbolic links to files are followed, links to
    /// directories are skipped (they could form cycles). Empty directories
    /// leave no trace (MLflow stores files only). Stops at the first error.
    pub fn log_artifacts(&self, local_dir: &Path, artifact_dir: &str) -> Result<()> {
        let artifact_dir = artifact_dir.trim_end_matches('/');
        if !artifact_dir.is_empty() {
            artifact_segments(artifact_dir)?;
        }
        let mut files = Vec::new();
        collect_files(local_dir, &mut Vec::new(), &mut files)?;
        for (path, relative) in files {
            let artifact_path = if artifact_dir.is_empty() {
                relative
            } else {
                format!("{artifact_dir}/{relative}")
            };
            self.log_artifact(&path, &artifact_path)?;
        }
        Ok(())
    }

    /// Sets the run's status and end time.
    pub fn finish(&self, status: RunStatus) -> Result<()> {
        let request = UpdateRun {
            run_id: &self.run_id,
            status: status.as_str(),
            end_time: now_ms(),
        };
        let _: serde::de::IgnoredAny = self.client.post("runs/update", &request)?;
        Ok(())
    }
}

/// Flattens a JSON value (the resolved training config, serialised) into
/// dotted param keys: `{"train":{"lr":0.01}}` -> `("train.lr","0.01")`.
/// Arrays become their JSON text. Nulls are skipped.
///
/// Strings are given without quotes, numbers and booleans as JSON writes
/// them. An empty object becomes `"{}"` so that the key still shows up. A
/// top-level value that is not an object has no key and yields nothing.
pub fn flatten_params(value: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        use serde_json::Value;
        let text = match value {
            Value::Null => return,
            Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
                for (key, child) in map {
                    let key = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&key, child, out);
                }
                return;
            }
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push((prefix.to_owned(), text));
    }

    let mut out = Vec::new();
    if value.is_object() {
        walk("", value, &mut out);
    }
    out
}

// ---------------------------------------------------------------------------
// HTTP
