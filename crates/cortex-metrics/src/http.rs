//! axum routes that expose a [`Metrics`] registry.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::Metrics;
use crate::prometheus::Format;

/// Routes serving `metrics`:
/// - `GET /metrics`: the text exposition, Prometheus text format 0.0.4 unless the
///   `Accept` header asks for `application/openmetrics-text` (then OpenMetrics 1.0,
///   see [`Format::from_accept`]);
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
            get(move |headers: axum::http::HeaderMap| {
                let format = headers
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(Format::from_accept)
                    .find(|f| *f == Format::OpenMetrics)
                    .unwrap_or_default();
                let text = prom.exposition(format);
                async move { ([(header::CONTENT_TYPE, format.content_type())], text) }
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
