//! Request bodies against the HTTP router: whatever the bytes, the answer is
//! a response, and never a server error (5xx) or a panic. The first byte
//! picks the endpoint.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use upsell::serve::{AppState, Limits, Model, app};

const ENDPOINTS: [&str; 3] = [
    "/v2/models/upsell/infer",
    "/v1/recommend",
    "/v2/models/upsell/ready",
];

fn state() -> &'static (tokio::runtime::Runtime, Arc<AppState>) {
    static STATE: OnceLock<(tokio::runtime::Runtime, Arc<AppState>)> = OnceLock::new();
    STATE.get_or_init(|| {
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../checkpoints/demo");
        let model = Model::load(&demo).expect("the demo checkpoint loads");
        let state = AppState::new(model, demo, "upsell".into(), Limits::default());
        // The router's timeout layer needs the runtime's timers.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        (runtime, Arc::new(state))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (runtime, state) = state();
    let uri = ENDPOINTS[usize::from(pick) % ENDPOINTS.len()];
    let request = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let response = runtime
        .block_on(app(state.clone()).oneshot(request))
        .expect("the router answers");
    assert!(
        !response.status().is_server_error(),
        "{uri} answered {}",
        response.status()
    );
});
