//! Round trip against a real MLflow server; ignored unless one is running:
//!
//!   mlflow server --host 127.0.0.1 --port 15000 \
//!       --backend-store-uri sqlite:///$TMP/mlflow.db --artifacts-destination $TMP/artifacts
//!   UPSELL_MLFLOW_URI=http://127.0.0.1:15000 cargo test --release --test it tracking -- --ignored
//!
//! Everything is read back through MLflow's REST API, not through this
//! module, so a shared misunderstanding of the API cannot hide a failure.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use upsell::tracking::{RunStatus, Tracker, TrackingError, flatten_params};

fn server_uri() -> String {
    std::env::var("UPSELL_MLFLOW_URI")
        .expect("set UPSELL_MLFLOW_URI to a running MLflow server, e.g. http://127.0.0.1:15000")
}

/// A name no earlier run of this test used.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn get(url: &str) -> Value {
    let mut response = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

fn get_text(url: &str) -> String {
    let mut response = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.body_mut().read_to_string().unwrap()
}

fn post(url: &str, body: Value) -> Value {
    let (status, body) = post_status(url, body);
    assert_eq!(status, 200, "POST {url}: {body}");
    body
}

fn post_status(url: &str, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .content_type("application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// `key -> value` of a run's `params` or `tags` list.
fn entries(list: &Value) -> std::collections::BTreeMap<String, String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    (
                        e["key"].as_str().unwrap().to_owned(),
                        e["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Paths listed at `path` in a run's artifact root, directories marked with a trailing `/`.
fn list_artifacts(api: &str, run_id: &str, path: &str) -> Vec<String> {
    let listing = get(&format!("{api}/artifacts/list?run_id={run_id}&path={path}"));
    let mut paths: Vec<String> = listing["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .map(|f| {
                    let p = f["path"].as_str().unwrap().to_owned();
                    if f["is_dir"].as_bool() == Some(true) {
                        format!("{p}/")
                    } else {
                        p
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

#[test]
#[ignore = "needs a running MLflow server at $UPSELL_MLFLOW_URI"]
fn logs_a_run_and_reads_it_back() {
    let uri = server_uri();
    let api = format!("{uri}/api/2.0/mlflow");
    let experiment = unique("upsell-tracking-test");

    let config = json!({
        "seed": 42,
        "train": {"lr": 0.002, "epochs": 3, "backend": "flex"},
        "model": {"hidden": [256, 128]},
        "data": {"train": null},
    });
    let mut params = flatten_params(&config);
    params.push(("notes".to_owned(), "x".repeat(7000)));
    let tracker = Tracker::start(&uri, &experiment, "roundtrip", &params).unwrap();

    for epoch in 1..=3_i32 {
        let auc = 0.6 + 0.05 * f64::from(epoch);
        tracker
            .log_metrics(
                i64::from(epoch),
                &[
                    ("valid_conversion_auc".to_owned(), auc),
                    ("train_loss".to_owned(), 1.0 / f64::from(epoch)),
                    ("diverged".to_owned(), f64::NAN),
                ],
            )
            .unwrap();
    }

    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("report")).unwrap();
    std::fs::write(out.path().join("metrics.jsonl"), "{\"epoch\":1}\n").unwrap();
    std::fs::write(out.path().join("report/report.html"), "<html>report</html>").unwrap();
    tracker.log_artifacts(out.path(), "").unwrap();
    // A name that needs percent-encoding.
    let odd = out.path().join("odd.svg");
    std::fs::write(&odd, "<svg/>").unwrap();
    tracker
        .log_artifact(&odd, "report/roc curve \u{e9}+1.svg")
        .unwrap();
    tracker.finish(RunStatus::Finished).unwrap();
    println!(
        "run {} in experiment {}",
        tracker.run_id(),
        tracker.experiment_id()
    );

    // The run, its params and tags.
    let run = get(&format!("{api}/runs/get?run_id={}", tracker.run_id()));
    let info = &run["run"]["info"];
    assert_eq!(info["status"], "FINISHED");
    assert_eq!(info["run_name"], "roundtrip");
    assert_eq!(info["experiment_id"], tracker.experiment_id());
    assert!(info["end_time"].as_i64().unwrap() >= info["start_time"].as_i64().unwrap());
    let logged = entries(&run["run"]["data"]["params"]);
    assert_eq!(logged["train.lr"], "0.002");
    assert_eq!(logged["train.epochs"], "3");
    assert_eq!(logged["model.hidden"], "[256,128]");
    assert!(!logged.contains_key("data.train"));
    assert_eq!(logged["notes"].chars().count(), 6000);
    assert!(logged["notes"].ends_with("...[truncated from 7000 chars]"));
    let tags = entries(&run["run"]["data"]["tags"]);
    assert_eq!(tags["mlflow.runName"], "roundtrip");
    assert_eq!(tags["mlflow.source.name"], "upsell");

    // Metric histories: one point per epoch; NaN never sent.
    let history = get(&format!(
        "{api}/metrics/get-history?run_id={}&metric_key=valid_conversion_auc",
        tracker.run_id()
    ));
    let points = history["metrics"].as_array().unwrap();
    let mut steps: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p["step"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    steps.sort_by_key(|(step, _)| *step);
    assert_eq!(steps.len(), 3);
    for (i, (step, value)) in steps.iter().enumerate() {
        let epoch = i32::try_from(i).unwrap() + 1;
        assert_eq!(*step, i64::from(epoch));
        assert!((value - (0.6 + 0.05 * f64::from(epoch))).abs() < 1e-12);
    }
    let diverged = get(&format!(
        "{api}/metrics/get-history?run_id={}&metric_key=diverged",
        tracker.run_id()
    ));
    assert!(
        diverged["metrics"].as_array().is_none_or(Vec::is_empty),
        "{diverged}"
    );

    // Artifacts: listed, and their bytes intact.
    assert_eq!(
        list_artifacts(&api, tracker.run_id(), ""),
        ["metrics.jsonl", "report/"]
    );
    assert_eq!(
        list_artifacts(&api, tracker.run_id(), "report"),
        ["report/report.html", "report/roc curve \u{e9}+1.svg"]
    );
    // Downloaded through the artifact proxy, when the server serves artifacts.
    if let Some(root) = tracker.artifact_uri().strip_prefix("mlflow-artifacts:/") {
        let download = format!("{uri}/api/2.0/mlflow-artifacts/artifacts/{root}");
        assert_eq!(
            get_text(&format!("{download}/report/report.html")),
            "<html>report</html>"
        );
        assert_eq!(
            get_text(&format!("{download}/metrics.jsonl")),
            "{\"epoch\":1}\n"
        );
    }
}

#[test]
#[ignore = "needs a running MLflow server at $UPSELL_MLFLOW_URI"]
fn concurrent_starts_share_one_new_experiment() {
    let uri = server_uri();
    let experiment = unique("upsell-tracking-race");
    let trackers: Vec<Tracker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (uri, experiment) = (&uri, &experiment);
                scope.spawn(move || Tracker::start(uri, experiment, &format!("racer-{i}"), &[]))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let first = trackers[0].experiment_id();
    assert!(trackers.iter().all(|t| t.experiment_id() == first));
    for tracker in &trackers {
        tracker.finish(RunStatus::Killed).unwrap();
    }
}

#[test]
#[ignore = "needs a running MLflow server at $UPSELL_MLFLOW_URI"]
fn a_deleted_experiment_is_a_typed_error() {
    let uri = server_uri();
    let api = format!("{uri}/api/2.0/mlflow");
    let experiment = unique("upsell-tracking-deleted");
    let created = post(
        &format!("{api}/experiments/create"),
        json!({"name": experiment}),
    );
    let id = created["experiment_id"].as_str().unwrap().to_owned();
    post(
        &format!("{api}/experiments/delete"),
        json!({"experiment_id": id}),
    );

    let err = Tracker::start(&uri, &experiment, "r", &[]).unwrap_err();
    match err {
        TrackingError::ExperimentDeleted { id: got, .. } => assert_eq!(got, id),
        other => panic!("expected ExperimentDeleted, got {other:?}"),
    }
}

#[test]
#[ignore = "needs a running MLflow server at $UPSELL_MLFLOW_URI"]
fn mlflow_errors_are_reported_with_their_code() {
    let uri = server_uri();
    let tracker = Tracker::start(&uri, &unique("upsell-tracking-errors"), "r", &[]).unwrap();
    // MLflow refuses metric names with characters outside its allowed set.
    let err = tracker
        .log_metrics(0, &[("bad*name".to_owned(), 1.0)])
        .unwrap_err();
    match &err {
        TrackingError::Api {
            status: 400,
            error_code: Some(code),
            url,
            ..
        } => {
            assert_eq!(code, "INVALID_PARAMETER_VALUE");
            assert!(url.ends_with("/api/2.0/mlflow/runs/log-batch"), "{url}");
        }
        other => panic!("expected Api 400, got {other:?}"),
    }
    println!("{err}");
    tracker.finish(RunStatus::Failed).unwrap();
}

#[test]
#[ignore = "needs a running MLflow server at $UPSELL_MLFLOW_URI"]
fn an_http_artifact_root_is_written_directly() {
    let uri = server_uri();
    let api = format!("{uri}/api/2.0/mlflow");
    let experiment = unique("upsell-tracking-http-root");
    // An experiment whose artifacts live at an http: URL (MLflow's
    // HttpArtifactRepository): an artifact service, this server's unless
    // UPSELL_MLFLOW_ARTIFACT_SERVER names another (when this one does not
    // serve artifacts).
    let service = std::env::var("UPSELL_MLFLOW_ARTIFACT_SERVER").unwrap_or_else(|_| uri.clone());
    let location = format!("{service}/api/2.0/mlflow-artifacts/artifacts/{experiment}");
    let (status, body) = post_status(
        &format!("{api}/experiments/create"),
        json!({"name": experiment, "artifact_location": location}),
    );
    // MLflow 3.x refuses http: artifact locations unless the server sets
    // MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES=http.
    if status == 400
        && body["message"]
            .as_str()
            .is_some_and(|m| m.contains("'http' scheme"))
    {
        println!("skipped: the server refuses http: artifact locations: {body}");
        return;
    }
    assert_eq!(status, 200, "{body}");
    let tracker = Tracker::start(&uri, &experiment, "http-root", &[]).unwrap();
    assert!(
        tracker.artifact_uri().starts_with("http://"),
        "{}",
        tracker.artifact_uri()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.txt");
    std::fs::write(&file, "direct").unwrap();
    tracker.log_artifact(&file, "sub/a.txt").unwrap();
    tracker.finish(RunStatus::Finished).unwrap();
    assert_eq!(
        get_text(&format!("{}/sub/a.txt", tracker.artifact_uri())),
        "direct"
    );
    assert_eq!(list_artifacts(&api, tracker.run_id(), "sub"), ["sub/a.txt"]);
}
