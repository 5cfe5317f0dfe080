//! The axum routes of a `MemoryProfiler`.

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;

#[tokio::test]
async fn memory_routes_answer() {
    let profiler = cortex_profile::MemoryProfiler::new(Default::default()).unwrap();
    let app = cortex_profile::http::memory_routes(profiler);
    let call = |req: Request<Body>| {
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body).ok(),
            )
        }
    };
    let (status, body) = call(
        Request::get("/admin/memory/compare")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no snapshots yet");
    // Errors are JSON like every other answer, with a stable code to branch on.
    let body = body.expect("the 404 body is JSON");
    assert_eq!(body["error"]["code"], "not_enough_snapshots", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("two snapshots")),
        "{body}"
    );
    for _ in 0..2 {
        let (status, body) = call(
            Request::post("/admin/memory/snapshot")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let rss = body.unwrap()["process"]["rss_bytes"].as_u64().unwrap();
        assert!(rss > 1 << 20, "rss {rss}");
    }
    let (status, body) = call(
        Request::get("/admin/memory/compare")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.unwrap().get("rss_delta_bytes").is_some());
    let (status, body) = call(Request::get("/admin/memory").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body.unwrap()["growth"]["points"].as_array().map(Vec::len),
        Some(2)
    );
}
