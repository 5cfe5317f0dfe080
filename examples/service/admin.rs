//! `/admin/*` (behind the bearer token) and the metrics routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::Value;

use crate::app::Shared;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{Op, op};

/// Routes that need the admin token.
pub fn operations() -> Vec<(Op, MethodRouter<Shared>)> {
    vec![
        (
            op("get", "/admin/tasks", "Background tasks", 200, &[]).admin(),
            get(list_tasks),
        ),
        (
            op("get", "/admin/tasks/{id}", "One task", 200, &[400, 404]).admin(),
            get(get_task),
        ),
        (
            op(
                "delete",
                "/admin/tasks/{id}",
                "Cancel a task",
                200,
                &[400, 404],
            )
            .admin(),
            delete(cancel_task),
        ),
        (
            op("get", "/admin/memory", "Memory report", 200, &[]).admin(),
            get(memory),
        ),
        (
            op(
                "post",
                "/admin/memory/snapshot",
                "Take a memory snapshot",
                201,
                &[],
            )
            .admin(),
            post(memory_snapshot),
        ),
        (
            op(
                "get",
                "/admin/memory/compare",
                "The last two snapshots compared",
                200,
                &[404],
            )
            .admin(),
            get(memory_compare),
        ),
        (
            op(
                "get",
                "/admin/config",
                "The configuration, secrets redacted (cached 1 h)",
                200,
                &[],
            )
            .admin(),
            get(config),
        ),
        (
            op(
                "post",
                "/metrics/performance/reset",
                "Start a new metrics window; answers the one that ended",
                200,
                &[],
            )
            .admin(),
            post(reset_metrics),
        ),
    ]
}

/// Routes anyone may read: Prometheus text and the JSON snapshot.
pub fn public_operations() -> Vec<(Op, MethodRouter<Shared>)> {
    vec![
        (
            op("get", "/metrics", "Prometheus text exposition", 200, &[]),
            get(prometheus),
        ),
        (
            op("get", "/metrics/performance", "Metrics snapshot", 200, &[]),
            get(performance),
        ),
    ]
}

/// The task crate's admin answers carry `{"error": "text"}`; ours carry a code too.
fn answer((status, body): (u16, Value)) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_success() {
        return (status, Json(body)).into_response();
    }
    // The service's codes, documented in its OpenAPI, by status; the task crate's
    // answer (`{"error": {"code", "message"}}`) gives the message.
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_task_id",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    };
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("task lookup failed")
        .to_owned();
    let mut error = ApiError::new(status, code, message);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        error.retry_after = Some(1);
    }
    error.into_response()
}

async fn list_tasks(State(state): State<Shared>) -> Response {
    answer(state.jobs.list().await)
}

async fn get_task(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    answer(state.jobs.get(&id).await)
}

async fn cancel_task(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    answer(state.jobs.cancel(&id).await)
}

async fn memory(State(state): State<Shared>) -> impl IntoResponse {
    Json(state.cortex.profiler().report())
}

async fn memory_snapshot(State(state): State<Shared>) -> ApiResult<impl IntoResponse> {
    let snapshot = state
        .cortex
        .profiler()
        .take_snapshot()
        .map_err(|e| ApiError::internal("memory snapshot", &e))?;
    Ok((StatusCode::CREATED, Json(snapshot)))
}

async fn memory_compare(State(state): State<Shared>) -> ApiResult<impl IntoResponse> {
    state.cortex.profiler().compare().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_enough_snapshots",
            "fewer than two snapshots: POST /admin/memory/snapshot twice",
        )
    })
}

/// The configuration does not change while the process runs: cached for an hour, so
/// a dashboard polling it costs nothing.
async fn config(State(state): State<Shared>) -> ApiResult<Json<Value>> {
    let cortex = state.cortex.clone();
    let settings = state.settings.public();
    let value = state
        .cortex
        .cache()
        .get_or_load(
            "config",
            Some(std::time::Duration::from_secs(3600)),
            || async move {
                let parts = serde_json::to_value(cortex.config())?;
                Ok::<_, serde_json::Error>(
                    serde_json::json!({ "parts": parts, "service": settings }),
                )
            },
        )
        .await?;
    Ok(Json(value))
}

async fn reset_metrics(State(state): State<Shared>) -> impl IntoResponse {
    let metrics = state.cortex.metrics();
    let ended = metrics.snapshot();
    metrics.reset();
    Json(ended)
}

async fn prometheus(State(state): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            cortex_core::metrics::prometheus::CONTENT_TYPE,
        )],
        state.cortex.metrics().prometheus(),
    )
}

async fn performance(State(state): State<Shared>) -> impl IntoResponse {
    Json(state.cortex.metrics().snapshot())
}
