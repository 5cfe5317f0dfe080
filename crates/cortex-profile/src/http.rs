//! axum routes that serve a [`MemoryProfiler`](crate::MemoryProfiler).
//!
//! Every answer is JSON. An error is `{"error": {"code": "...", "message": "..."}}`:
//! `code` is a stable snake_case name to branch on, `message` is for people and may
//! change.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::Error;

/// Routes serving a [`MemoryProfiler`](crate::MemoryProfiler):
/// - `GET /admin/memory`: the [`MemoryReport`](crate::MemoryReport) (current memory,
///   growth, comparison of the last two snapshots);
/// - `GET /admin/memory/stats`: the profiler's
///   [`MemoryProfilerStats`](crate::MemoryProfilerStats);
/// - `POST /admin/memory/snapshot`: take a snapshot now and answer it; where process
///   memory cannot be read, 501 with code `unsupported` (no `/proc`) or 500 with code
///   `io`;
/// - `GET /admin/memory/compare`: the last two snapshots compared; 404 with code
///   `not_enough_snapshots` while fewer than two exist.
///
/// ```
/// use cortex_profile::{MemoryProfiler, ProfilerConfig};
///
/// let profiler = MemoryProfiler::new(ProfilerConfig::default())?;
/// let app: axum::Router = cortex_profile::http::memory_routes(profiler);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn memory_routes(profiler: crate::MemoryProfiler) -> Router {
    let report = profiler.clone();
    let compare = profiler.clone();
    let stats = profiler.clone();
    Router::new()
        .route(
            "/admin/memory",
            get(move || {
                let r = report.report();
                async move { axum::Json(r) }
            }),
        )
        .route(
            "/admin/memory/stats",
            get(move || {
                let s = stats.stats();
                async move { axum::Json(s) }
            }),
        )
        .route(
            "/admin/memory/snapshot",
            post(move || {
                let taken = profiler.take_snapshot();
                async move {
                    match taken {
                        Ok(s) => axum::Json(s).into_response(),
                        Err(e) => error_response(&e),
                    }
                }
            }),
        )
        .route(
            "/admin/memory/compare",
            get(move || {
                let c = compare.compare();
                async move {
                    match c {
                        Some(c) => axum::Json(c).into_response(),
                        None => json_error(
                            StatusCode::NOT_FOUND,
                            "not_enough_snapshots",
                            "fewer than two snapshots have been taken",
                        ),
                    }
                }
            }),
        )
}

/// The JSON answer for a failed snapshot: the status and code say what kind of failure.
fn error_response(e: &Error) -> Response {
    let (status, code) = match e {
        Error::Unsupported { .. } => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
        Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    json_error(status, code, &cortex_support::error_chain(e))
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(r: Response) -> (StatusCode, serde_json::Value) {
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    // A failing snapshot cannot be provoked on Linux (where `/proc` exists), so the
    // mapping is checked on the errors a snapshot can return.
    #[tokio::test]
    async fn snapshot_errors_answer_json_with_a_code() {
        let (status, body) = body_of(error_response(&Error::Unsupported {
            what: "process memory from /proc",
        }))
        .await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(body["error"]["code"], "unsupported", "{body}");

        let io = Error::Io {
            path: "/proc/self/status".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no VmRSS line"),
        };
        let (status, body) = body_of(error_response(&io)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "io", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("/proc/self/status") && message.contains("no VmRSS line"),
            "{message}"
        );
    }
}
