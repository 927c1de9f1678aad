//! The tracking API: a run on an MLflow server, its parameters, metrics,
//! artifacts and final status.

use std::path::Path;

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
    /// Gets or creates `experiment`, creates a run named `run_name`, logs
    /// `params` (in batches), connecting as MLflow's environment variables
    /// say ([`Connection::from_env`]). See [`Tracker::start_with`].
    pub fn start(
        uri: &str,
        experiment: &str,
        run_name: &str,
        params: &[(String, String)],
    ) -> Result<Tracker> {
        let options = RunOptions {
            connection: Connection::from_env()?,
            ..RunOptions::default()
        };
        Self::start_with(uri, experiment, run_name, params, &options)
    }

    /// Gets or creates `experiment`, creates a run named `run_name`, logs
    /// `params` (in batches).
    ///
    /// `uri` is the server's base URL, `http(s)://HOST:PORT`, optionally
    /// with a path prefix when the server sits behind a reverse proxy. The
    /// run is tagged `mlflow.runName`, `mlflow.source.name=upsell`,
    /// `mlflow.source.type=LOCAL`, `mlflow.user` (from `$USER`, when set),
    /// `mlflow.source.git.commit` (when built from a git checkout),
    /// `upsell.command` (this process's command line), `upsell.host` and
    /// `upsell.version`; with `mlflow.parentRunId` when it has a parent, and
    /// with `options.tags`. An empty `run_name` lets MLflow pick one. If
    /// logging `params` fails, the run is marked `FAILED` (best effort)
    /// before the error is returned.
    pub fn start_with(
        uri: &str,
        experiment: &str,
        run_name: &str,
        params: &[(String, String)],
        options: &RunOptions,
    ) -> Result<Tracker> {
        let client = Client::new(uri, options.connection.clone())?;
        let experiment_id = client.get_or_create_experiment(experiment)?;

        let provenance = provenance_tags();
        let mut tags = vec![
            Tag::new("mlflow.source.name", SOURCE_NAME),
            Tag::new("mlflow.source.type", "LOCAL"),
        ];
        tags.extend(provenance.iter().map(|(k, v)| Tag::new(k, v)));
        if !run_name.is_empty() {
            tags.push(Tag::new("mlflow.runName", run_name));
        }
        let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME"));
        if let Ok(user) = &user {
            tags.push(Tag::new("mlflow.user", user));
        }
        if let Some(parent) = &options.parent_run_id {
            tags.push(Tag::new("mlflow.parentRunId", parent));
        }
        tags.extend(options.tags.iter().map(|(k, v)| Tag::new(k, v)));
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
            Some(ArtifactRoot::Http(root)) => {
                let url = ArtifactRoot::file_url(&root, &segments);
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

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Sets tags on the run (an existing tag is overwritten).
    pub fn set_tags(&self, tags: &[(String, String)]) -> Result<()> {
        for (key, value) in tags {
            let request = SetTag {
                run_id: &self.run_id,
                key,
                value: truncate_tag(value),
            };
            let _: serde::de::IgnoredAny = self.client.post("runs/set-tag", &request)?;
        }
        Ok(())
    }

    /// Registers the run's artifact directory `artifact_path` (e.g. the
    /// uploaded `checkpoint`) as a new version of registered model `name`,
    /// creating the model when it does not exist; returns the version.
    pub fn register_model(&self, name: &str, artifact_path: &str) -> Result<String> {
        artifact_segments(artifact_path)?;
        match self.client.post::<serde::de::IgnoredAny>(
            "registered-models/create",
            &CreateRegisteredModel { name },
        ) {
            Ok(_) => {}
            Err(TrackingError::Api {
                error_code: Some(code),
                ..
            }) if code == "RESOURCE_ALREADY_EXISTS" => {}
            Err(err) => return Err(err),
        }
        let source = format!(
            "{}/{artifact_path}",
            self.artifact_uri.trim_end_matches('/')
        );
        let created: CreateModelVersionResponse = self.client.post(
            "model-versions/create",
            &CreateModelVersion {
                name,
                source: &source,
                run_id: &self.run_id,
            },
        )?;
        Ok(created.model_version.version)
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

/// Options of [`Tracker::start_with`].
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Credentials, certificates, timeouts, retries.
    pub connection: Connection,
    /// Log the run as a child of this run (a sweep's parent run).
    pub parent_run_id: Option<String>,
    /// More tags for the run.
    pub tags: Vec<(String, String)>,
}

/// Where this run comes from: the code's commit and version, the command
/// line and the host.
fn provenance_tags() -> Vec<(&'static str, String)> {
    let mut tags = vec![
        ("upsell.version", env!("CARGO_PKG_VERSION").to_string()),
        (
            "upsell.command",
            truncate_tag(&std::env::args().collect::<Vec<_>>().join(" ")).into_owned(),
        ),
    ];
    if let Some(commit) = option_env!("UPSELL_GIT_COMMIT") {
        tags.push(("mlflow.source.git.commit", commit.to_string()));
    }
    if let Some(host) = hostname() {
        tags.push(("upsell.host", host));
    }
    tags
}

/// This machine's host name, when the system gives one.
fn hostname() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes and the result is read only up to its first NUL.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0)?;
    String::from_utf8(buffer[..end].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

// ---------------------------------------------------------------------------
// HTTP
