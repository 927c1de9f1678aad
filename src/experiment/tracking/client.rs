//! MLflow's REST API over HTTP(S): credentials, trusted certificates,
//! timeouts and retries; errors that quote the server; JSON bodies.

use super::wire::*;
use crate::error::TrackingError;

/// Results of the tracking client.
pub type Result<T, E = TrackingError> = std::result::Result<T, E>;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;

/// Budget for each phase of a request (see the module docs).
pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

/// How many times [`TIMEOUT`] an upload may wait for its response: a server
/// proxying to object storage (S3, ...) answers only after storing the file.
pub(super) const UPLOAD_RESPONSE_FACTOR: u32 = 6;

/// Recorded as the run's `mlflow.source.name` tag.
pub(super) const SOURCE_NAME: &str = "upsell";

/// Statuses worth another try: MLflow's own client retries these.
const RETRY_STATUSES: [u16; 5] = [429, 500, 502, 503, 504];

/// The longest wait between tries, whatever the backoff or `Retry-After` say.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Credentials sent with every request.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// HTTP basic authentication (MLflow's `basic-auth` app).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A bearer token (managed MLflow services).
    Bearer(String),
}

// Secrets stay out of logs and panic messages.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { username, .. } => write!(f, "Basic({username:?}, password hidden)"),
            Auth::Bearer(_) => f.write_str("Bearer(token hidden)"),
        }
    }
}

impl Auth {
    fn header(&self) -> String {
        use base64::Engine;
        match self {
            Auth::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
            Auth::Bearer(token) => format!("Bearer {token}"),
        }
    }
}

/// How to reach a tracking server: credentials, which certificates to
/// trust, timeouts and retries. [`Connection::from_env`] reads MLflow's
/// standard environment variables, so a run configured for MLflow's Python
/// client works unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// Credentials for every request.
    pub auth: Option<Auth>,
    /// A PEM bundle of CA certificates to trust instead of the built-in
    /// (Mozilla) roots: a server with a private or self-signed certificate.
    pub ca_bundle: Option<PathBuf>,
    /// Skip certificate verification entirely (testing only).
    pub insecure_tls: bool,
    /// Budget for each phase of a request.
    pub timeout: Duration,
    /// Further tries after a 429, a 5xx or a connection failure.
    pub max_retries: u32,
    /// The wait before try `n + 1` is `backoff * 2^(n - 1)`, unless the
    /// server's `Retry-After` says otherwise; at most 60 s.
    pub backoff: Duration,
}

impl Default for Connection {
    fn default() -> Connection {
        Connection {
            auth: None,
            ca_bundle: None,
            insecure_tls: false,
            timeout: TIMEOUT,
            max_retries: 5,
            backoff: Duration::from_secs(2),
        }
    }
}

impl Connection {
    /// The connection MLflow's environment variables describe:
    /// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` (basic
    /// authentication) or `MLFLOW_TRACKING_TOKEN` (a bearer token),
    /// `MLFLOW_TRACKING_SERVER_CERT_PATH` (a CA bundle),
    /// `MLFLOW_TRACKING_INSECURE_TLS`, `MLFLOW_HTTP_REQUEST_MAX_RETRIES` and
    /// `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` (seconds). A malformed value is
    /// an error naming its variable.
    pub fn from_env() -> Result<Connection> {
        Connection::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Connection::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Connection> {
        let var = |name: &str| var(name).filter(|value| !value.is_empty());
        let bad =
            |variable: &'static str, reason: String| TrackingError::Setting { variable, reason };
        // MLflow's order: a user name and password win over a token.
        let auth = match (
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
            var("MLFLOW_TRACKING_TOKEN"),
        ) {
            (Some(username), Some(password), _) => Some(Auth::Basic { username, password }),
            (Some(_), None, _) => {
                return Err(bad(
                    "MLFLOW_TRACKING_PASSWORD",
                    "not set, but MLFLOW_TRACKING_USERNAME is".into(),
                ));
            }
            (None, Some(_), _) => {
                return Err(bad(
                    "MLFLOW_TRACKING_USERNAME",
                    "not set, but MLFLOW_TRACKING_PASSWORD is".into(),
                ));
            }
            (None, None, token) => token.map(Auth::Bearer),
        };
        let mut connection = Connection {
            auth,
            ca_bundle: var("MLFLOW_TRACKING_SERVER_CERT_PATH").map(PathBuf::from),
            ..Connection::default()
        };
        if let Some(value) = var("MLFLOW_TRACKING_INSECURE_TLS") {
            connection.insecure_tls = match value.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(bad(
                        "MLFLOW_TRACKING_INSECURE_TLS",
                        format!("expected true or false, got {value:?}"),
                    ));
                }
            };
        }
        if let Some(value) = var("MLFLOW_HTTP_REQUEST_MAX_RETRIES") {
            connection.max_retries = value.trim().parse().map_err(|_| {
                bad(
                    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                    format!("expected a count, got {value:?}"),
                )
            })?;
        }
        if let Some(value) = var("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR") {
            connection.backoff = value
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                .ok_or_else(|| {
                    bad(
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                        format!("expected seconds (a number, 0 or more), got {value:?}"),
                    )
                })?;
        }
        Ok(connection)
    }

    /// The wait before retry `attempt` (1 for the first retry).
    fn backoff_for(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(MAX_RETRY_WAIT)
    }

    fn tls_config(&self) -> Result<ureq::tls::TlsConfig> {
        use ureq::tls::{PemItem, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder().disable_verification(self.insecure_tls);
        if let Some(path) = &self.ca_bundle {
            let bad = |reason: String| TrackingError::Certificate {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let PemItem::Certificate(cert) = item.map_err(|e| bad(e.to_string()))? {
                    certs.push(cert);
                }
            }
            if certs.is_empty() {
                return Err(bad("no PEM certificate in the file".into()));
            }
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        Ok(tls.build())
    }
}

#[derive(Debug)]
pub(super) struct Client {
    pub(super) agent: ureq::Agent,
    /// `http(s)://host:port/` plus any path prefix, always ending in `/`.
    pub(super) base: Url,
    pub(super) connection: Connection,
    /// The `Authorization` header's value, made once.
    authorization: Option<String>,
}

impl Client {
    pub(super) fn new(uri: &str, connection: Connection) -> Result<Client> {
        let base = parse_base(uri)?;
        let timeout = Some(connection.timeout);
        let agent = ureq::Agent::config_builder()
            // Error statuses carry MLflow's JSON error body; read it ourselves.
            .http_status_as_error(false)
            .tls_config(connection.tls_config()?)
            .timeout_resolve(timeout)
            .timeout_connect(timeout)
            .timeout_send_request(timeout)
            .timeout_per_write(timeout)
            .timeout_recv_response(timeout)
            .timeout_per_read(timeout)
            .build()
            .into();
        Ok(Client {
            agent,
            base,
            authorization: connection.auth.as_ref().map(Auth::header),
            connection,
        })
    }

    pub(super) fn url(&self, endpoint: &str) -> Url {
        self.base
            .join(&format!("api/2.0/mlflow/{endpoint}"))
            .expect("endpoints are relative paths")
    }

    /// Adds the credentials, when there are any.
    fn authorised<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }

    pub(super) fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T> {
        let url = self.url(endpoint);
        let body = self.send("GET", &url, || {
            let request = query
                .iter()
                .fold(self.agent.get(url.as_str()), |request, (key, value)| {
                    request.query(*key, *value)
                });
            self.authorised(request).call()
        })?;
        parse_body("GET", url.as_str(), &body)
    }

    pub(super) fn post<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        payload: &impl Serialize,
    ) -> Result<T> {
        let url = self.url(endpoint);
        let json = to_json(payload);
        let body = self.send("POST", &url, || {
            self.authorised(self.agent.post(url.as_str()))
                .content_type("application/json")
                .send(&json[..])
        })?;
        parse_body("POST", url.as_str(), &body)
    }

    pub(super) fn put_file(&self, url: &Url, local: &Path) -> Result<()> {
        // Checked up front so a missing file is an Io error naming it, not
        // a transport one; each try then reads the file from its start.
        std::fs::metadata(local).map_err(|source| TrackingError::Io {
            path: local.to_owned(),
            source,
        })?;
        self.send("PUT", url, || {
            let file = std::fs::File::open(local).map_err(ureq::Error::Io)?;
            self.authorised(self.agent.put(url.as_str()))
                .content_type("application/octet-stream")
                .config()
                .timeout_recv_response(Some(self.connection.timeout * UPLOAD_RESPONSE_FACTOR))
                .build()
                .send(file)
        })?;
        Ok(())
    }

    /// Sends a request made by `attempt`, trying again after a retryable
    /// status or connection failure, and returns the 2xx body.
    fn send(
        &self,
        method: &'static str,
        url: &Url,
        attempt: impl Fn() -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String> {
        let mut retries = 0;
        loop {
            let outcome = attempt();
            let wait = match &outcome {
                Ok(response) if RETRY_STATUSES.contains(&response.status().as_u16()) => {
                    Some(retry_after(response))
                }
                Err(error) if retryable(error) => Some(None),
                _ => None,
            };
            match wait {
                Some(hint) if retries < self.connection.max_retries => {
                    retries += 1;
                    let wait = hint
                        .unwrap_or_else(|| self.connection.backoff_for(retries))
                        .min(MAX_RETRY_WAIT);
                    tracing::debug!(
                        method,
                        url = url.as_str(),
                        retries,
                        ?wait,
                        "MLflow request retried"
                    );
                    std::thread::sleep(wait);
                }
                _ => return read_response(method, url.as_str(), outcome),
            }
        }
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
                        url: self.url("experiments/get-by-name").into(),
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

/// Failures that another try may not meet: the connection, not the
/// request. A refused certificate (rustls reports it as invalid data) stays
/// refused.
fn retryable(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::Io(e) => e.kind() != std::io::ErrorKind::InvalidData,
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        _ => false,
    }
}

/// A `Retry-After` given in seconds (the HTTP-date form is not used by
/// MLflow or the proxies in front of it).
fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The tracking server's base URL: http or https, a host, no credentials,
/// query or fragment; its path (a reverse proxy's prefix) ends in `/`.
pub(super) fn parse_base(uri: &str) -> Result<Url> {
    let invalid = |reason| TrackingError::InvalidUri {
        uri: uri.to_owned(),
        reason,
    };
    let mut url =
        Url::parse(uri).map_err(|_| invalid("expected http(s)://HOST[:PORT][/PREFIX]"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("expected an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in the URL end up in logs and run records; the error
        // itself shows the URL without them.
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(TrackingError::InvalidUri {
            uri: shown.to_string(),
            reason: "credentials in the URL are not allowed; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
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
