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
