//! axum routes that serve a [`MemoryProfiler`](crate::MemoryProfiler).

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

/// Routes serving a [`MemoryProfiler`](crate::MemoryProfiler):
/// - `GET /admin/memory`: the [`MemoryReport`](crate::MemoryReport) (current memory,
///   growth, comparison of the last two snapshots);
/// - `POST /admin/memory/snapshot`: take a snapshot now and answer it
///   (500 with the error text where `/proc` is missing);
/// - `GET /admin/memory/compare`: the last two snapshots compared, 404 while fewer than two
///   exist.
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
    Router::new()
        .route(
            "/admin/memory",
            get(move || {
                let r = report.report();
                async move { axum::Json(r) }
            }),
        )
        .route(
            "/admin/memory/snapshot",
            post(move || {
                let taken = profiler.take_snapshot();
                async move {
                    match taken {
                        Ok(s) => axum::Json(s).into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
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
                        None => (StatusCode::NOT_FOUND, "fewer than two snapshots").into_response(),
                    }
                }
            }),
        )
}
