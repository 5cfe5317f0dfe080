//! axum routes that expose a [`Metrics`] registry.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::Metrics;

/// Routes serving `metrics`:
/// - `GET /metrics`: Prometheus text exposition;
/// - `GET /metrics/performance`: the [`MetricsSnapshot`](crate::MetricsSnapshot) as JSON;
/// - `POST /metrics/performance/reset`: start a new window (totals keep counting),
///   answers the snapshot of the window that ended.
///
/// ```
/// let app: axum::Router = cortex_metrics::http::routes(cortex_metrics::Metrics::new());
/// ```
pub fn routes(metrics: Metrics) -> Router {
    let prom = metrics.clone();
    let perf = metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = prom.prometheus();
                async move {
                    (
                        [(header::CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)],
                        text,
                    )
                }
            }),
        )
        .route(
            "/metrics/performance",
            get(move || {
                let snap = perf.snapshot();
                async move { axum::Json(snap) }
            }),
        )
        .route(
            "/metrics/performance/reset",
            post(move || {
                let ended = metrics.snapshot();
                metrics.reset();
                async move { axum::Json(ended).into_response() }
            }),
        )
}

/// Routes serving a [`MemoryProfiler`](crate::MemoryProfiler):
/// - `GET /admin/memory`: the [`MemoryReport`](crate::MemoryReport) (current memory,
///   growth, comparison of the last two snapshots);
/// - `POST /admin/memory/snapshot`: take a snapshot now and answer it
///   (500 with the error text where `/proc` is missing);
/// - `GET /admin/memory/compare`: the last two snapshots compared, 404 while fewer than two
///   exist.
///
/// ```
/// use cortex_metrics::{MemoryConfig, MemoryProfiler};
///
/// let profiler = MemoryProfiler::new(MemoryConfig::default())?;
/// let app: axum::Router = cortex_metrics::http::memory_routes(profiler);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn memory_routes(profiler: crate::MemoryProfiler) -> Router {
    use axum::http::StatusCode;

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
