//! MLflow's REST API over HTTP: requests with a timeout, errors that quote
//! the server, JSON bodies.

use super::wire::*;
use crate::error::TrackingError;

/// Results of the tracking client.
pub type Result<T, E = TrackingError> = std::result::Result<T, E>;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Budget for each phase of a request (see the module docs).
pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

/// How many times [`TIMEOUT`] an upload may wait for its response: a server
/// proxying to object storage (S3, ...) answers only after storing the file.
pub(super) const UPLOAD_RESPONSE_FACTOR: u32 = 6;

/// Recorded as the run's `mlflow.source.name` tag.
pub(super) const SOURCE_NAME: &str = "upsell";

#[derive(Debug)]
pub(super) struct Client {
    pub(super) agent: ureq::Agent,
    /// `http://host:port` plus any path prefix, without a trailing slash.
    pub(super) base: String,
    pub(super) timeout: Duration,
}

impl Client {
    pub(super) fn new(uri: &str, timeout: Duration) -> Result<Client> {
        let invalid = |reason| TrackingError::InvalidUri {
            uri: uri.to_owned(),
            reason,
        };
        let Some(rest) = uri.strip_prefix("http://") else {
            return Err(invalid(if uri.starts_with("https://") {
                "https is not supported (this build has no TLS); use http://HOST:PORT"
            } else {
                "expected http://HOST:PORT"
            }));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid("no host"));
        }
        if rest.contains(['?', '#']) {
            return Err(invalid("a query or fragment is not allowed"));
        }
        let agent = ureq::Agent::config_builder()
            // Error statuses carry MLflow's JSON error body; read it ourselves.
            .http_status_as_error(false)
            .timeout_resolve(Some(timeout))
            .timeout_connect(Some(timeout))
            .timeout_send_request(Some(timeout))
            .timeout_per_write(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .build()
            .into();
        Ok(Client {
            agent,
            base: uri.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    pub(super) fn url(&self, endpoint: &str) -> String {
        format!("{}/api/2.0/mlflow/{endpoint}", self.base)
    }

    pub(super) fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T> {
        let url = self.url(endpoint);
        let request = query
            .iter()
            .fold(self.agent.get(&url), |request, (key, value)| {
                request.query(*key, *value)
            });
        let body = read_response("GET", &url, request.call())?;
        parse_body("GET", &url, &body)
    }

    pub(super) fn post<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        payload: &impl Serialize,
    ) -> Result<T> {
        let url = self.url(endpoint);
        let response = self
            .agent
            .post(&url)
            .content_type("application/json")
            .send(to_json(payload));
        let body = read_response("POST", &url, response)?;
        parse_body("POST", &url, &body)
    }

    pub(super) fn put_file(&self, url: &str, local: &Path) -> Result<()> {
        let file = std::fs::File::open(local).map_err(|source| TrackingError::Io {
            path: local.to_owned(),
            source,
        })?;
        let response = self
            .agent
            .put(url)
            .content_type("application/octet-stream")
            .config()
            .timeout_recv_response(Some(self.timeout * UPLOAD_RESPONSE_FACTOR))
            .build()
            .send(file);
        read_response("PUT", url, response)?;
        Ok(())
    }

    /// The experiment's id, creating it when missing.
    pub(super) fn get_or_create_experiment(&self, name: &str) -> Result<String> {
        if let Some(id) = self.find_experiment(name)? {
            return Ok(id);
        }
        match self
            .post::<CreateExperimentResponse>("experiments/create", &CreateExperiment { name })
        {
            Ok(created) => Ok(created.experiment_id),
            // Another process created it between our lookup and create.
            Err(TrackingError::Api {
                error_code: Some(code),
                ..
            }) if code == "RESOURCE_ALREADY_EXISTS" => {
                self.find_experiment(name)?
                    .ok_or_else(|| TrackingError::Response {
                        method: "GET",
                        url: self.url("experiments/get-by-name"),
                        reason: format!(
                            "experiment {name:?} was reported to exist but cannot be found"
                        ),
                    })
            }
            Err(err) => Err(err),
        }
    }

    /// The id of the active experiment `name`; `None` when there is none.
    pub(super) fn find_experiment(&self, name: &str) -> Result<Option<String>> {
        match self
            .get::<GetExperimentResponse>("experiments/get-by-name", &[("experiment_name", name)])
        {
            Ok(found) => {
                let experiment = found.experiment;
                if experiment.lifecycle_stage.as_deref() == Some("deleted") {
                    return Err(TrackingError::ExperimentDeleted {
                        name: name.to_owned(),
                        id: experiment.experiment_id,
                    });
                }
                Ok(Some(experiment.experiment_id))
            }
            Err(TrackingError::Api {
                error_code: Some(code),
                ..
            }) if code == "RESOURCE_DOES_NOT_EXIST" => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// The body of a 2xx response, or the error the response stands for.
pub(super) fn read_response(
    method: &'static str,
    url: &str,
    result: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<String> {
    let transport = |source| TrackingError::Transport {
        method,
        url: url.to_owned(),
        source: Box::new(source),
    };
    let mut response = result.map_err(transport)?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .lossy_utf8(true)
        .read_to_string()
        .map_err(transport)?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(api_error(method, url, status, &body))
    }
}

/// Turns an error response into [`TrackingError::Api`], keeping MLflow's
/// `error_code` and `message` when the body is its JSON error.
pub(super) fn api_error(method: &'static str, url: &str, status: u16, body: &str) -> TrackingError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error_code: Option<String>,
        message: Option<String>,
        // MLflow 3's FastAPI routes (the artifact proxy) answer {"detail": ...}.
        detail: Option<serde_json::Value>,
    }
    let (error_code, message) = match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody {
            error_code,
            message: Some(message),
            ..
        }) => (error_code, message),
        Ok(ErrorBody {
            error_code,
            detail: Some(detail),
            ..
        }) => (
            error_code,
            detail
                .as_str()
                .map_or_else(|| detail.to_string(), str::to_owned),
        ),
        Ok(ErrorBody {
            error_code: Some(code),
            ..
        }) => (Some(code), String::new()),
        // Not MLflow's error (a proxy's HTML page, a bare 404): show its start.
        _ => (None, excerpt(body, 300)),
    };
    TrackingError::Api {
        method,
        url: url.to_owned(),
        status,
        error_code,
        message,
    }
}

pub(super) fn parse_body<T: DeserializeOwned>(
    method: &'static str,
    url: &str,
    body: &str,
) -> Result<T> {
    serde_json::from_str(body).map_err(|err| TrackingError::Response {
        method,
        url: url.to_owned(),
        reason: format!("{err} in {:?}", excerpt(body, 200)),
    })
}

/// The first `max` characters of `text`, trimmed, marked when cut.
pub(super) fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------
// Request and response bodies
