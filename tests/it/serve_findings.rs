//! The server against hostile but ordinary clients: one case per finding
//! of issue 15 (the number in each case's name), each of which failed
//! before the fix. Router-level cases run in one table; what needs a real
//! socket (timeouts, the connection cap, the shutdown deadline) runs the
//! accept loop on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use upsell::serve::{Admin, AppState, Limits, Model, app};

use crate::serve::{TOKEN, demo, infer_request, state, users};

/// A request body that arrives when the test says so: the request is
/// admitted (and holds its slot) while its body is pending.
struct Pending(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Pending {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// One request to the router: status, headers and the body as JSON (or
/// as a string when it is not JSON).
async fn send(state: &Arc<AppState>, request: Request<Body>) -> (StatusCode, HeaderMap, Json) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, json)
}

fn request(method: &str, uri: &str, body: &Json) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn reload_request(token: Option<&str>, body: &str, peer: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method("POST").uri("/admin/reload");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let mut request = builder.body(Body::from(body.to_string())).unwrap();
    if let Some(peer) = peer {
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
    }
    request
}

/// The demo infer request with `input`'s data replaced.
fn infer_with(state: &Arc<AppState>, input: &str, edit: impl Fn(&mut Json)) -> Json {
    let mut body = infer_request(&state.model());
    for tensor in body["inputs"].as_array_mut().unwrap() {
        if tensor["name"] == input {
            edit(tensor);
        }
    }
    body
}

/// A copy of the demo checkpoint under `root` with its manifest edited.
fn edited_checkpoint(root: &Path, name: &str, edit: impl Fn(&mut Json)) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(demo()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let path = dir.join("manifest.json");
    let mut manifest: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_finding_gets_a_clear_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("models");
    std::fs::create_dir_all(&root).unwrap();
    let good = edited_checkpoint(&root, "good", |_| {});
    edited_checkpoint(&root, "absolute-weights", |m| {
        m["weights"]["file"] = json!("/etc/passwd");
    });
    edited_checkpoint(&root, "zero-buckets", |m| {
        if let Some(hashed) = m["preprocessor"]["hashed"].as_array_mut() {
            hashed[0]["buckets"] = json!(0);
        }
    });
    // A FIFO as the manifest: a read of it would block until a writer came.
    let fifo = root.join("fifo");
    std::fs::create_dir_all(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(fifo.join("manifest.json"))
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::create_dir_all(tmp.path().join("outside")).unwrap();

    let locked = Arc::new(
        AppState::new(
            Model::load(&demo()).unwrap(),
            demo(),
            "upsell".into(),
            Limits {
                max_top_k: 5,
                ..Limits::default()
            },
        )
        .with_admin(Admin::new(TOKEN, &root).unwrap()),
    );
    let open = state(Limits::default());
    let version = open.model().version().to_string();
    let one_user = json!({ "users": [users()[0].clone()] });
    let mut huge_user = users()[0].clone();
    huge_user["tenure_months"] = json!(1e308);
    let nine_huge = infer_with(&open, "tenure_months", |t| {
        t["data"] = json!(vec![1e308; 8]);
    });
    let good_infer = infer_request(&open.model());
    let mut without_offer = good_infer.clone();
    without_offer["inputs"]
        .as_array_mut()
        .unwrap()
        .retain(|input| input["name"] != "offer");

    type Case = (
        &'static str,
        Arc<AppState>,
        Request<Body>,
        StatusCode,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        // 1: responses are bounded: top_k over the limit is refused.
        (
            "1: top_k over the limit",
            locked.clone(),
            request(
                "POST",
                "/v1/recommend",
                &json!({ "users": one_user["users"], "top_k": 6 }),
            ),
            StatusCode::BAD_REQUEST,
            "top_k: 6 is over this server's limit of 5",
        ),
        // 2: the admin surface.
        (
            "2: reload is off without a token",
            open.clone(),
            reload_request(Some(TOKEN), "", None),
            StatusCode::FORBIDDEN,
            "reload over HTTP is off",
        ),
        (
            "2: no token, even from loopback",
            locked.clone(),
            reload_request(None, "", Some("127.0.0.1:5000")),
            StatusCode::UNAUTHORIZED,
            "needs the admin token",
        ),
        (
            "2: a wrong token",
            locked.clone(),
            reload_request(Some("not-the-token-at-all"), "", None),
            StatusCode::UNAUTHORIZED,
            "needs the admin token",
        ),
        (
            "2: the token from an IPv4-mapped loopback peer",
            locked.clone(),
            reload_request(Some(TOKEN), "", Some("[::ffff:127.0.0.1]:5000")),
            StatusCode::OK,
            "",
        ),
        (
            "2: the token from behind a proxy",
            locked.clone(),
            reload_request(
                Some(TOKEN),
                r#"{"checkpoint": "good"}"#,
                Some("10.1.2.3:5000"),
            ),
            StatusCode::OK,
            "",
        ),
        (
            "2: a misspelt key",
            locked.clone(),
            reload_request(Some(TOKEN), r#"{"checkpiont": "good"}"#, None),
            StatusCode::BAD_REQUEST,
            "unknown field `checkpiont`",
        ),
        (
            "2: a wrong type",
            locked.clone(),
            reload_request(Some(TOKEN), r#"{"checkpoint": 3}"#, None),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            "2: a directory outside the root",
            locked.clone(),
            reload_request(Some(TOKEN), r#"{"checkpoint": "/etc"}"#, None),
            StatusCode::FORBIDDEN,
            "outside the reload root",
        ),
        (
            "2: out of the root by ..",
            locked.clone(),
            reload_request(Some(TOKEN), r#"{"checkpoint": "../outside"}"#, None),
            StatusCode::FORBIDDEN,
            "outside the reload root",
        ),
        (
            "2: weights.file outside the checkpoint",
            locked.clone(),
            reload_request(Some(TOKEN), r#"{"checkpoint": "absolute-weights"}"#, None),
            StatusCode::BAD_REQUEST,
            "must be a plain file name",
        ),
        // 3: numbers the model cannot score, on the few-row and batched paths.
        (
            "3: 1e308 in one row of recommend",
            open.clone(),
            request("POST", "/v1/recommend", &json!({ "users": [huge_user] })),
            StatusCode::BAD_REQUEST,
            "standard deviations",
        ),
        (
            "3: 1e308 in eight infer rows",
            open.clone(),
            request("POST", "/v2/models/upsell/infer", &nine_huge),
            StatusCode::BAD_REQUEST,
            "standard deviations",
        ),
        // 8: manifests checked in full before use.
        (
            "8: hashed buckets of 0",
            locked.clone(),
            reload_request(Some(TOKEN), r#"{"checkpoint": "zero-buckets"}"#, None),
            StatusCode::BAD_REQUEST,
            "buckets",
        ),
        (
            "8: a FIFO as the manifest",
            locked.clone(),
            reload_request(Some(TOKEN), r#"{"checkpoint": "fifo"}"#, None),
            StatusCode::BAD_REQUEST,
            "not a regular file",
        ),
        // 9: protocol edges.
        (
            "9: 404 has a JSON body",
            open.clone(),
            request("GET", "/v2/nowhere", &json!(null)),
            StatusCode::NOT_FOUND,
            "no such route",
        ),
        (
            "9: 405 has a JSON body",
            open.clone(),
            request("DELETE", "/v1/recommend", &json!(null)),
            StatusCode::METHOD_NOT_ALLOWED,
            "does not take that method",
        ),
        (
            "9: a shape that does not hold the data",
            open.clone(),
            request(
                "POST",
                "/v2/models/upsell/infer",
                &infer_with(&open, "tenure_months", |t| t["shape"] = json!([3, 1])),
            ),
            StatusCode::BAD_REQUEST,
            "shape [3, 1] says 3",
        ),
        (
            "9: a shape that is not a column",
            open.clone(),
            request(
                "POST",
                "/v2/models/upsell/infer",
                &infer_with(&open, "tenure_months", |t| t["shape"] = json!([4, 2])),
            ),
            StatusCode::BAD_REQUEST,
            "is not [rows, 1] or [rows]",
        ),
        (
            "9: a datatype that does not fit the column",
            open.clone(),
            request(
                "POST",
                "/v2/models/upsell/infer",
                &infer_with(&open, "country", |t| t["datatype"] = json!("FP32")),
            ),
            StatusCode::BAD_REQUEST,
            "datatype \"FP32\" does not fit a BYTES column",
        ),
        (
            "9: an unknown input",
            open.clone(),
            request("POST", "/v2/models/upsell/infer", &{
                let mut body = good_infer.clone();
                let mut extra = body["inputs"][0].clone();
                extra["name"] = json!("tenure_mnths");
                body["inputs"].as_array_mut().unwrap().push(extra);
                body
            }),
            StatusCode::BAD_REQUEST,
            "unknown input \"tenure_mnths\"",
        ),
        (
            "9: an unknown output",
            open.clone(),
            request("POST", "/v2/models/upsell/infer", &{
                let mut body = good_infer.clone();
                body["outputs"] = json!([{ "name": "p_churn" }]);
                body
            }),
            StatusCode::BAD_REQUEST,
            "unknown output \"p_churn\"",
        ),
        (
            "9: p_plan asked for without the offer its plan head reads",
            open.clone(),
            request("POST", "/v2/models/upsell/infer", &{
                let mut body = without_offer.clone();
                body["outputs"] = json!([{ "name": "p_plan" }]);
                body
            }),
            StatusCode::BAD_REQUEST,
            "needs the offer input",
        ),
        (
            "9: a version that is not serving",
            open.clone(),
            request(
                "POST",
                "/v2/models/upsell/versions/000000000000/infer",
                &good_infer,
            ),
            StatusCode::NOT_FOUND,
            "has no version \"000000000000\"",
        ),
        (
            "9: a misspelt request field",
            open.clone(),
            request("POST", "/v2/models/upsell/infer", &{
                let mut body = good_infer.clone();
                body["ouputs"] = json!([]);
                body
            }),
            StatusCode::BAD_REQUEST,
            "unknown field `ouputs`",
        ),
    ];
    for (what, state, request, status, fragment) in cases {
        let (got, headers, body) = send(&state, request).await;
        assert_eq!(got, status, "{what}: {body}");
        if status.is_success() {
            continue;
        }
        assert_eq!(
            headers["content-type"], "application/json",
            "{what}: every error has a JSON body"
        );
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(error.contains(fragment), "{what}: {error}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(headers["www-authenticate"], "Bearer", "{what}");
        }
    }
    // The FIFO did not wedge reloads: the next one works, and nothing
    // revealed a file's checksum from outside the checkpoint.
    let (status, _, body) = send(
        &locked,
        reload_request(Some(TOKEN), &format!(r#"{{"checkpoint": {good:?}}}"#), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], version);

    // Unasked, p_plan is left out when it cannot be given.
    let (status, _, body) = send(
        &open,
        request("POST", "/v2/models/upsell/infer", &without_offer),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["outputs"][0]["name"], "p_convert");

    // 9: versioned routes answer for the version serving.
    for uri in [
        format!("/v2/models/upsell/versions/{version}"),
        format!("/v2/models/upsell/versions/{version}/ready"),
    ] {
        let (status, _, body) = send(&open, request("GET", &uri, &json!(null))).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
    let (status, _, body) = send(
        &open,
        request(
            "POST",
            &format!("/v2/models/upsell/versions/{version}/infer"),
            &good_infer,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], version);
}

/// Finding 1: at most `max_concurrent` scoring requests are in flight; the
/// next is shed with 503 and Retry-After (before its body is read) and
/// counted, and health still answers. Decisions list `top_k` candidates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_load_is_shed_and_answers_are_bounded() {
    let state = state(Limits {
        max_concurrent: 1,
        ..Limits::default()
    });
    let (feed, pending) = tokio::sync::mpsc::channel(1);
    let slow = Request::builder()
        .method("POST")
        .uri("/v1/recommend")
        .body(Body::new(Pending(pending)))
        .unwrap();
    let first = tokio::spawn({
        let state = state.clone();
        async move { send(&state, slow).await }
    });
    // The first request holds the only slot while its body is pending.
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.metrics.in_flight_now() == 0 {
        assert!(
            Instant::now() < deadline,
            "the first request was not admitted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let one_user = json!({ "users": [users()[0].clone()] });
    let (status, headers, body) = send(&state, request("POST", "/v1/recommend", &one_user)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(body["error"].as_str().unwrap().contains("overloaded"));
    let (status, _, _) = send(&state, request("GET", "/v2/health/ready", &json!(null))).await;
    assert_eq!(status, StatusCode::OK);
    feed.send(Bytes::from(serde_json::to_vec(&one_user).unwrap()))
        .await
        .unwrap();
    drop(feed);
    let (status, _, body) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let metrics = send(&state, request("GET", "/metrics", &json!(null)))
        .await
        .2;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("upsell_requests_shed_total{route=\"/v1/recommend\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("upsell_requests_total{route=\"/v1/recommend\",status=\"503\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );

    // The answer lists DEFAULT_TOP_K candidates per decision unless asked.
    let all = json!({ "users": users() });
    let (_, _, body) = send(&state, request("POST", "/v1/recommend", &all)).await;
    for decision in body["decisions"].as_array().unwrap() {
        assert_eq!(
            decision["candidates"].as_array().unwrap().len(),
            upsell::api::DEFAULT_TOP_K
        );
    }
    let none = json!({ "users": users(), "top_k": 0 });
    let (_, _, body) = send(&state, request("POST", "/v1/recommend", &none)).await;
    assert!(
        body["decisions"][0]["candidates"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(body["decisions"][0]["offer"].is_string(), "{body}");
}

/// Finding 9: a request over the timeout gets a JSON 408 and is counted.
#[tokio::test]
async fn a_timed_out_request_is_answered_and_counted() {
    let state = state(Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    });
    let (feed, pending) = tokio::sync::mpsc::channel::<Bytes>(1);
    let request = Request::builder()
        .method("POST")
        .uri("/v2/models/upsell/infer")
        .body(Body::new(Pending(pending)))
        .unwrap();
    let (status, headers, body) = send(&state, request).await;
    drop(feed);
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(headers["content-type"], "application/json");
    assert!(body["error"].as_str().unwrap().contains("100 ms"), "{body}");
    let metrics = send(&state, self::request("GET", "/metrics", &json!(null)))
        .await
        .2;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("upsell_requests_total{route=\"/v2/models/{name}/infer\",status=\"408\"} 1"),
        "{metrics}"
    );
}

/// Finding 9: tritonclient's default, the binary tensor extension: inputs
/// as bytes after the JSON, outputs asked for as bytes, the same scores as
/// JSON.
#[tokio::test]
async fn binary_tensor_data_scores_as_json_does() {
    let state = state(Limits::default());
    let json_body = infer_request(&state.model());
    let (status, _, by_json) = send(
        &state,
        request("POST", "/v2/models/upsell/infer", &json_body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_json}");

    let mut header = json_body.clone();
    let mut tail = Vec::new();
    for input in header["inputs"].as_array_mut().unwrap() {
        let data = input["data"].take();
        let mut bytes = Vec::new();
        for value in data.as_array().unwrap() {
            match (input["datatype"].as_str().unwrap(), value) {
                ("FP32", Json::Null) => bytes.extend(f32::NAN.to_le_bytes()),
                ("FP32", v) => bytes.extend((v.as_f64().unwrap() as f32).to_le_bytes()),
                (_, v) => {
                    let text = v.as_str().unwrap_or("");
                    bytes.extend((text.len() as u32).to_le_bytes());
                    bytes.extend(text.as_bytes());
                }
            }
        }
        input.as_object_mut().unwrap().remove("data");
        input["parameters"] = json!({ "binary_data_size": bytes.len() });
        tail.extend(bytes);
    }
    // Missing categorical values have no binary form but the empty string;
    // the demo rows have none, so both bodies hold the same values.
    header["outputs"] = json!([
        { "name": "p_plan", "parameters": { "binary_data": true } },
        { "name": "p_convert", "parameters": { "binary_data": false } },
    ]);
    let mut body = serde_json::to_vec(&header).unwrap();
    let json_length = body.len();
    body.extend(tail);
    let request = Request::builder()
        .method("POST")
        .uri("/v2/models/upsell/infer")
        .header("inference-header-content-length", json_length.to_string())
        .body(Body::from(body))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let (head, binary) = bytes.split_at(length);
    let head: Json = serde_json::from_slice(head).unwrap();
    let outputs = head["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2, "only the outputs asked for, in order");
    assert_eq!(outputs[0]["name"], "p_plan");
    let plan: Vec<f32> = binary
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want_plan = by_json["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "p_plan")
        .unwrap();
    assert_eq!(
        outputs[0]["parameters"]["binary_data_size"],
        json!(4 * plan.len())
    );
    for (got, want) in plan.iter().zip(want_plan["data"].as_array().unwrap()) {
        assert!((got - want.as_f64().unwrap() as f32).abs() < 1e-5);
    }
    // p_convert as JSON, as asked; the binary inputs were rounded to f32,
    // the JSON ones were not.
    let (got, want) = (&outputs[1]["data"], &by_json["outputs"][0]["data"]);
    assert_eq!(outputs[1]["name"], "p_convert");
    for (got, want) in got.as_array().unwrap().iter().zip(want.as_array().unwrap()) {
        assert!((got.as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-6);
    }
}

/// Runs the accept loop on a loopback port until the returned sender fires.
async fn listen(
    limits: Limits,
) -> (
    SocketAddr,
    Arc<AppState>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let state = state(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(upsell::serve::serve_until(
        state.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, state, stop, server)
}

/// Reads until the server closes the connection; the bytes it sent.
async fn until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    seen
}

/// Finding 7: a client that sends half a header, or a kept-alive
/// connection left idle, is disconnected after the header timeout; past
/// `max_connections`, connections are closed on accept; shutdown ends at
/// its deadline even with a client stuck mid-header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    let header_timeout = Duration::from_millis(300);
    let (addr, _, stop, server) = listen(Limits {
        header_timeout,
        ..Limits::default()
    })
    .await;
    let started = Instant::now();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until_closed(&mut partial, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= header_timeout);
    let answered = until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(
        String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"),
        "the idle connection was answered first"
    );
    stop.send(()).unwrap();
    server.await.unwrap();

    // The connection cap.
    let (addr, state, stop, server) = listen(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 512];
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let refused = until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(refused.is_empty(), "closed without an answer");
    assert_eq!(state.metrics.connections_refused_total(), 1);
    drop(held);
    stop.send(()).unwrap();
    server.await.unwrap();

    // The shutdown deadline, with a client stuck mid-header.
    let (addr, _, stop, server) = listen(Limits {
        header_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut stuck = tokio::net::TcpStream::connect(addr).await.unwrap();
    stuck
        .write_all(b"POST /v1/recommend HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("shutdown ends at its deadline")
        .unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(3));
}
