//! Logs a training run to an MLflow tracking server through its REST API.
//!
//! Speaks MLflow 2.x/3.x's `/api/2.0/mlflow/...` endpoints over HTTP or
//! HTTPS (rustls) with one blocking `ureq` agent; no MLflow client library
//! is involved. Credentials, trusted certificates and retries come from
//! MLflow's own environment variables ([`Connection::from_env`]).
//!
//! ```no_run
//! # use upsell::experiment::tracking::{RunStatus, Tracker};
//! # fn main() -> Result<(), upsell::experiment::tracking::TrackingError> {
//! let params = vec![("train.lr".to_string(), "0.002".to_string())];
//! let tracker = Tracker::start("http://127.0.0.1:5000", "upsell", "run-001", &params)?;
//! tracker.log_metrics(1, &[("valid_loss".to_string(), 0.41)])?;
//! tracker.log_artifacts(std::path::Path::new("checkpoints/run-001/report"), "report")?;
//! tracker.finish(RunStatus::Finished)?;
//! # Ok(())
//! # }
//! ```
//!
//! Behaviour worth knowing:
//! - Every request has a 10 s budget per phase (resolve, connect, send,
//!   wait for the response, each read and write), so a dead or stalled
//!   server fails a call instead of hanging training. Uploads are not capped
//!   as a whole, only per read/write, and may wait 60 s for their response
//!   (a server proxying to object storage answers after storing the file).
//! - A 429, a 5xx or a failed connection is tried again, up to
//!   `MLFLOW_HTTP_REQUEST_MAX_RETRIES` times (5), waiting
//!   `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` (2 s) times 1, 2, 4, ... or what
//!   the server's `Retry-After` asks, at most 60 s. As with MLflow's own
//!   client, a retried POST may be applied twice when only its answer was
//!   lost.
//! - `HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` are honoured (ureq's default).
//! - Param values longer than MLflow's 6000-character limit are truncated
//!   with a visible `...[truncated from N chars]` marker rather than failing
//!   the run: one over-long value (a long list in the config) should not cost
//!   the run its tracking, and the full config can be logged as an artifact.
//! - Non-finite metric values (NaN, ±inf) are skipped: plain JSON numbers
//!   cannot carry them.
//! - Artifacts go through the server's artifact proxy
//!   (`PUT /api/2.0/mlflow-artifacts/artifacts/...`) when the run's
//!   `artifact_uri` is `mlflow-artifacts:`, or straight to the URI when it is
//!   `http:`. A local root (`file:` or a bare path, from a server started with
//!   `--no-serve-artifacts`) is written by copying, as MLflow's own client
//!   does; that is only right when the server shares this file system. Any
//!   other scheme (`s3:`, `gs:`, ...) is [`TrackingError::UnsupportedArtifactUri`].
//! - A run is left `RUNNING` until [`Tracker::finish`] is called; call it
//!   with [`RunStatus::Failed`] on error paths too.

mod artifacts;
mod client;
mod tracker;
mod training;
mod wire;

pub use crate::error::TrackingError;
pub use client::{Auth, Connection};
pub use tracker::{RunOptions, RunStatus, Tracker, flatten_params};
pub use training::{TrainingTracking, track_training};

/// Shorthand for this module's results.
pub use client::Result;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::artifacts::*;
    use super::client::*;
    use super::wire::*;
    use super::*;
    use serde_json::{Value, json};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use url::Url;

    fn body(batch: &LogBatch) -> Value {
        serde_json::from_slice(&to_json(batch)).unwrap()
    }

    #[test]
    fn tracker_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tracker>();
        assert_send_sync::<TrackingError>();
    }

    #[test]
    fn flattens_nested_objects_into_dotted_keys() {
        let config = json!({
            "seed": 42,
            "train": {"lr": 0.01, "backend": "flex", "layer_norm": false},
            "model": {"hidden": [256, 128]},
            "data": {"train": null, "split": "random"},
            "policy": {"weights": {}, "caps": {"family": 0.3}},
        });
        let mut params = flatten_params(&config);
        params.sort();
        let expected: Vec<(String, String)> = [
            ("data.split", "random"),
            ("model.hidden", "[256,128]"),
            ("policy.caps.family", "0.3"),
            ("policy.weights", "{}"),
            ("seed", "42"),
            ("train.backend", "flex"),
            ("train.layer_norm", "false"),
            ("train.lr", "0.01"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(params, expected);
    }

    #[test]
    fn flatten_of_a_non_object_is_empty() {
        assert!(flatten_params(&json!(3)).is_empty());
        assert!(flatten_params(&json!(null)).is_empty());
        assert!(flatten_params(&json!({})).is_empty());
    }

    #[test]
    fn splits_2500_metrics_into_three_requests() {
        let metrics: Vec<(String, f64)> =
            (0..2500).map(|i| (format!("m{i}"), f64::from(i))).collect();
        let batches = metric_batches("run", 7, 1234, &metrics);
        let sizes: Vec<usize> = batches.iter().map(|b| b.metrics.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let first = body(&batches[0]);
        assert_eq!(first["run_id"], "run");
        assert_eq!(
            first["metrics"][0],
            json!({"key": "m0", "value": 0.0, "timestamp": 1234, "step": 7})
        );
        assert!(first.get("params").is_none());
        assert_eq!(body(&batches[2])["metrics"][499]["key"], "m2499");
    }

    #[test]
    fn skips_non_finite_metrics() {
        let metrics = vec![
            ("nan".to_string(), f64::NAN),
            ("auc".to_string(), 0.75),
            ("inf".to_string(), f64::INFINITY),
            ("neg_inf".to_string(), f64::NEG_INFINITY),
        ];
        let batches = metric_batches("run", 1, 0, &metrics);
        assert_eq!(batches.len(), 1);
        let keys: Vec<&str> = batches[0].metrics.iter().map(|m| m.key).collect();
        assert_eq!(keys, ["auc"]);

        let only_nan = vec![("nan".to_string(), f64::NAN)];
        assert!(metric_batches("run", 1, 0, &only_nan).is_empty());
    }

    #[test]
    fn splits_params_by_count_and_by_bytes() {
        let params: Vec<(String, String)> = (0..250)
            .map(|i| (format!("p{i}"), "v".to_string()))
            .collect();
        let sizes: Vec<usize> = param_batches("run", &params)
            .iter()
            .map(|b| b.params.len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);

        // 100 values of 6000 four-byte characters are 2.4 MB: over the
        // server's 1 MB request limit although under its count limit.
        let wide: Vec<(String, String)> = (0..100)
            .map(|i| (format!("p{i}"), "\u{1F600}".repeat(6000)))
            .collect();
        let batches = param_batches("run", &wide);
        assert!(batches.len() >= 3);
        assert_eq!(batches.iter().map(|b| b.params.len()).sum::<usize>(), 100);
        for batch in &batches {
            assert!(to_json(batch).len() < 1_000_000);
        }
    }

    #[test]
    fn truncates_long_param_values_with_a_marker() {
        let short = "x".repeat(MAX_PARAM_VALUE_CHARS);
        assert_eq!(truncate_param(&short), short);

        let long = "\u{e9}".repeat(7000);
        let cut = truncate_param(&long);
        assert_eq!(cut.chars().count(), MAX_PARAM_VALUE_CHARS);
        assert!(cut.ends_with("...[truncated from 7000 chars]"));
        assert!(cut.starts_with('\u{e9}'));
    }

    #[test]
    fn parses_mlflow_error_bodies() {
        let body = r#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Could not find experiment with name 'x'"}"#;
        let err = api_error(
            "GET",
            "http://h/api/2.0/mlflow/experiments/get-by-name",
            404,
            body,
        );
        let TrackingError::Api {
            status,
            error_code,
            message,
            ..
        } = &err
        else {
            panic!("expected Api, got {err:?}");
        };
        assert_eq!(*status, 404);
        assert_eq!(error_code.as_deref(), Some("RESOURCE_DOES_NOT_EXIST"));
        assert_eq!(message, "Could not find experiment with name 'x'");
        assert_eq!(
            err.to_string(),
            "MLflow request GET http://h/api/2.0/mlflow/experiments/get-by-name failed with \
             HTTP 404: RESOURCE_DOES_NOT_EXIST: Could not find experiment with name 'x'"
        );
    }

    #[test]
    fn parses_fastapi_error_bodies() {
        let body = r#"{"detail":"Artifact serving is disabled."}"#;
        let err = api_error("PUT", "http://h/x", 503, body);
        assert_eq!(
            err.to_string(),
            "MLflow request PUT http://h/x failed with HTTP 503: Artifact serving is disabled."
        );
    }

    #[test]
    fn keeps_the_start_of_non_json_error_bodies() {
        let html = format!(
            "<html><body>502 Bad Gateway{}</body></html>",
            " ".repeat(1000)
        );
        let err = api_error("POST", "http://h/x", 502, &html);
        let TrackingError::Api {
            error_code,
            message,
            ..
        } = &err
        else {
            panic!("expected Api, got {err:?}");
        };
        assert_eq!(*error_code, None);
        assert!(message.starts_with("<html><body>502 Bad Gateway"));
        assert!(message.len() <= 303);
    }

    fn base(uri: &str) -> Url {
        Url::parse(uri).unwrap()
    }

    /// No retries, a short timeout: what tests of failures want.
    fn impatient() -> Connection {
        Connection {
            timeout: Duration::from_millis(500),
            max_retries: 0,
            ..Connection::default()
        }
    }

    fn impatient_run() -> RunOptions {
        RunOptions {
            connection: impatient(),
            ..RunOptions::default()
        }
    }

    #[test]
    fn refuses_tracking_uris_it_cannot_use() {
        for uri in [
            "databricks",
            "file:///tmp/mlruns",
            "http://",
            "http://h/?x=1",
            "https://user:secret@h",
            "ftp://h",
        ] {
            let err = Client::new(uri, Connection::default()).unwrap_err();
            assert!(
                matches!(err, TrackingError::InvalidUri { .. }),
                "{uri}: {err:?}"
            );
        }
        // The refusal does not repeat the password.
        let err = Client::new("https://user:secret@h/x", Connection::default()).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let url = |uri| Client::new(uri, Connection::default()).unwrap().base;
        assert_eq!(url("http://h:5000"), base("http://h:5000/"));
        assert_eq!(url("https://h/mlflow"), base("https://h/mlflow/"));
        assert_eq!(
            Client::new("https://h/mlflow/", Connection::default())
                .unwrap()
                .url("runs/create")
                .as_str(),
            "https://h/mlflow/api/2.0/mlflow/runs/create"
        );
    }

    #[test]
    fn reads_mlflow_environment_variables() {
        let from = |pairs: &[(&str, &str)]| {
            let map: std::collections::HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Connection::from_vars(|name| map.get(name).cloned())
        };
        assert_eq!(from(&[]).unwrap(), Connection::default());
        let c = from(&[
            ("MLFLOW_TRACKING_USERNAME", "u"),
            ("MLFLOW_TRACKING_PASSWORD", "p"),
            ("MLFLOW_TRACKING_TOKEN", "t"),
            ("MLFLOW_TRACKING_SERVER_CERT_PATH", "/ca.pem"),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.25"),
        ])
        .unwrap();
        // MLflow's order: user and password before the token.
        assert_eq!(
            c.auth,
            Some(Auth::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(c.ca_bundle, Some(PathBuf::from("/ca.pem")));
        assert_eq!((c.max_retries, c.backoff), (2, Duration::from_millis(250)));
        assert_eq!(
            from(&[("MLFLOW_TRACKING_TOKEN", "t")]).unwrap().auth,
            Some(Auth::Bearer("t".into()))
        );
        assert!(
            from(&[("MLFLOW_TRACKING_INSECURE_TLS", "true")])
                .unwrap()
                .insecure_tls
        );
        for (name, value) in [
            ("MLFLOW_TRACKING_USERNAME", "u"),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "-1"),
            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "soon"),
            ("MLFLOW_TRACKING_INSECURE_TLS", "maybe"),
        ] {
            let err = from(&[(name, value)]).unwrap_err();
            let TrackingError::Setting { variable, .. } = &err else {
                panic!("{name}: {err:?}");
            };
            let expected = if name == "MLFLOW_TRACKING_USERNAME" {
                "MLFLOW_TRACKING_PASSWORD"
            } else {
                name
            };
            assert_eq!(*variable, expected, "{err}");
        }
        // Secrets never show in debug output.
        let debug = format!("{c:?}");
        assert!(!debug.contains("\"p\""), "{debug}");
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let connection = Connection {
            ca_bundle: Some(path.clone()),
            ..Connection::default()
        };
        let err = Client::new("https://h", connection).unwrap_err();
        assert!(
            matches!(&err, TrackingError::Certificate { path: p, .. } if *p == path),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("MLFLOW_TRACKING_SERVER_CERT_PATH"),
            "{err}"
        );
    }

    #[test]
    fn resolves_artifact_roots_like_mlflow() {
        let http = |s: &str| Some(ArtifactRoot::Http(base(s)));
        let artifact_root = |b: &str, uri: &str| artifact_root(&base(b), uri);
        let local = |s: &str| Some(ArtifactRoot::Local(PathBuf::from(s)));
        assert_eq!(
            artifact_root("http://h:5000", "mlflow-artifacts:/1/abc/artifacts"),
            http("http://h:5000/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts")
        );
        // A path prefix (reverse proxy) is kept; a host in the URI wins.
        assert_eq!(
            artifact_root(
                "http://h/mlflow",
                "mlflow-artifacts://other:81/1/abc/artifacts"
            ),
            http("http://other:81/mlflow/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts")
        );
        assert_eq!(
            artifact_root(
                "http://h",
                "http://store:9000/api/2.0/mlflow-artifacts/artifacts/x/"
            ),
            http("http://store:9000/api/2.0/mlflow-artifacts/artifacts/x")
        );
        assert_eq!(
            artifact_root("http://h", "file:///tmp/a%20b/1"),
            local("/tmp/a b/1")
        );
        assert_eq!(artifact_root("http://h", "file:/tmp/a"), local("/tmp/a"));
        assert_eq!(
            artifact_root("http://h", "file://localhost/tmp/a"),
            local("/tmp/a")
        );
        assert_eq!(
            artifact_root("http://h", "/srv/mlruns/1/abc/artifacts"),
            local("/srv/mlruns/1/abc/artifacts")
        );
        assert_eq!(
            artifact_root("http://h", r"C:\mlruns\1"),
            local(r"C:\mlruns\1")
        );
        assert_eq!(artifact_root("http://h", "file://server/share/a"), None);
        assert_eq!(
            artifact_root("http://h", "s3://bucket/1/abc/artifacts"),
            None
        );
        assert_eq!(
            artifact_root("https://h/", "https://store/x/"),
            http("https://store/x")
        );
    }

    #[test]
    fn validates_and_encodes_artifact_paths() {
        assert_eq!(
            artifact_segments("report/roc.svg").unwrap(),
            ["report", "roc.svg"]
        );
        for bad in ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "a#b", "a/"] {
            assert!(
                matches!(
                    artifact_segments(bad),
                    Err(TrackingError::InvalidArtifactPath { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            ArtifactRoot::file_url(
                &base("http://h/api/2.0/mlflow-artifacts/artifacts/1"),
                &["my report", "r\u{e9}sum\u{e9}?1%.html"]
            )
            .as_str(),
            "http://h/api/2.0/mlflow-artifacts/artifacts/1/my%20report/r%C3%A9sum%C3%A9%3F1%25.html"
        );
    }

    #[test]
    fn collects_files_recursively_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        for file in ["z.txt", "a.txt", "b/c/d.txt", "b/e.txt"] {
            std::fs::write(dir.path().join(file), file).unwrap();
        }
        let mut files = Vec::new();
        collect_files(dir.path(), &mut Vec::new(), &mut files).unwrap();
        let relative: Vec<&str> = files.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(relative, ["a.txt", "b/c/d.txt", "b/e.txt", "z.txt"]);
        assert_eq!(files[1].0, dir.path().join("b/c/d.txt"));
    }

    #[test]
    fn copies_artifacts_to_a_local_root() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir_all(source.join("report")).unwrap();
        std::fs::write(source.join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::write(source.join("report/report.html"), "<html/>").unwrap();
        let root = dir.path().join("artifacts");
        let tracker = Tracker {
            client: Client::new("http://127.0.0.1:9", impatient()).unwrap(),
            run_id: "abc".into(),
            artifact_uri: format!("file://{}", root.display()),
        };
        tracker.log_artifacts(&source, "run/").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("run/report/report.html")).unwrap(),
            "<html/>"
        );
        assert!(root.join("run/metrics.jsonl").is_file());
    }

    #[test]
    fn unsupported_artifact_roots_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let tracker = Tracker {
            client: Client::new("http://127.0.0.1:9", impatient()).unwrap(),
            run_id: "abc".into(),
            artifact_uri: "s3://bucket/1/abc/artifacts".into(),
        };
        let err = tracker.log_artifact(&file, "f").unwrap_err();
        assert!(
            matches!(err, TrackingError::UnsupportedArtifactUri { .. }),
            "{err:?}"
        );
    }

    /// A server on a free loopback port that answers one connection with
    /// `response` (or never answers when it is `None`).
    fn one_shot_server(response: Option<String>) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            match response {
                Some(response) => {
                    let _ = stream.write_all(response.as_bytes());
                }
                // Hold the connection open past the client's timeout.
                None => std::thread::sleep(Duration::from_secs(1)),
            }
        });
        (uri, handle)
    }

    #[test]
    fn a_stalled_server_times_out() {
        let (uri, handle) = one_shot_server(None);
        let started = std::time::Instant::now();
        let options = RunOptions {
            connection: Connection {
                timeout: Duration::from_millis(200),
                ..impatient()
            },
            ..RunOptions::default()
        };
        let err = Tracker::start_with(&uri, "e", "r", &[], &options).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let TrackingError::Transport { method, url, .. } = &err else {
            panic!("expected Transport, got {err:?}");
        };
        assert_eq!(*method, "GET");
        assert!(
            url.ends_with("/api/2.0/mlflow/experiments/get-by-name"),
            "{url}"
        );
        handle.join().unwrap();
    }

    #[test]
    fn a_refused_connection_is_a_transport_error() {
        // Bind then drop to get a port nothing listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = impatient_run();
        let uri = format!("http://127.0.0.1:{port}");
        let err = Tracker::start_with(&uri, "e", "r", &[], &options).unwrap_err();
        assert!(matches!(err, TrackingError::Transport { .. }), "{err:?}");
    }

    #[test]
    fn server_errors_carry_mlflow_error_code() {
        let body = r#"{"error_code": "PERMISSION_DENIED", "message": "no access"}"#;
        let (uri, handle) = one_shot_server(Some(format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )));
        let options = impatient_run();
        let err = Tracker::start_with(&uri, "e", "r", &[], &options).unwrap_err();
        handle.join().unwrap();
        let TrackingError::Api {
            status,
            error_code,
            message,
            ..
        } = &err
        else {
            panic!("expected Api, got {err:?}");
        };
        assert_eq!(*status, 403);
        assert_eq!(error_code.as_deref(), Some("PERMISSION_DENIED"));
        assert_eq!(message, "no access");
    }

    /// A server answering successive connections with `responses`, in
    /// order; returns each request's head, lower-cased.
    fn scripted_server(responses: Vec<String>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for response in responses {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                heads.push(String::from_utf8_lossy(&request).to_lowercase());
                stream.write_all(response.as_bytes()).unwrap();
            }
            heads
        });
        (uri, handle)
    }

    fn response(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn overloaded_servers_are_retried_with_credentials_each_time() {
        let found = r#"{"experiment": {"experiment_id": "7"}}"#;
        let (uri, handle) = scripted_server(vec![
            response("503 Service Unavailable", "", "busy"),
            response("429 Too Many Requests", "Retry-After: 0\r\n", "{}"),
            response("200 OK", "", found),
        ]);
        let connection = Connection {
            auth: Some(Auth::Basic {
                username: "u".into(),
                password: "p".into(),
            }),
            max_retries: 2,
            backoff: Duration::from_millis(10),
            ..impatient()
        };
        let client = Client::new(&uri, connection).unwrap();
        assert_eq!(client.find_experiment("e").unwrap().as_deref(), Some("7"));
        let heads = handle.join().unwrap();
        assert_eq!(heads.len(), 3);
        // base64("u:p")
        assert!(
            heads
                .iter()
                .all(|h| h.contains("authorization: basic dtpw")),
            "{heads:?}"
        );
    }

    #[test]
    fn retries_end_with_the_last_error() {
        let (uri, handle) = scripted_server(vec![
            response("502 Bad Gateway", "", "down"),
            response(
                "503 Service Unavailable",
                "",
                r#"{"message": "still down"}"#,
            ),
        ]);
        let connection = Connection {
            max_retries: 1,
            backoff: Duration::from_millis(10),
            ..impatient()
        };
        let client = Client::new(&uri, connection).unwrap();
        let err = client.find_experiment("e").unwrap_err();
        assert_eq!(handle.join().unwrap().len(), 2);
        assert!(
            matches!(&err, TrackingError::Api { status: 503, message, .. } if message == "still down"),
            "{err:?}"
        );
    }

    #[test]
    fn client_errors_are_not_retried() {
        let (uri, handle) = scripted_server(vec![response(
            "401 Unauthorized",
            "WWW-Authenticate: Basic\r\n",
            "",
        )]);
        let connection = Connection {
            max_retries: 3,
            backoff: Duration::from_millis(10),
            ..impatient()
        };
        let err = Client::new(&uri, connection)
            .unwrap()
            .find_experiment("e")
            .unwrap_err();
        assert_eq!(handle.join().unwrap().len(), 1);
        assert!(
            matches!(err, TrackingError::Api { status: 401, .. }),
            "{err:?}"
        );
    }
}
