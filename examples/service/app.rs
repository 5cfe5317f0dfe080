//! Shared state, the router, and the layers every request goes through.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cortex_core::batch::{BatchFn, Batcher, Loaded};
use cortex_core::metrics::MetricsLayer;
use cortex_core::tasks::TraceParent;
use cortex_core::{Cortex, Database};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::jobs::Jobs;
use crate::model::User;
use crate::repo::Repo;
use crate::settings::Settings;
use crate::{admin, handlers, openapi};

/// Loads users by id in batches: concurrent lookups share one query.
pub struct UserLoader(pub Arc<dyn Repo>);

impl BatchFn for UserLoader {
    type Key = i64;
    type Value = User;
    type Error = sqlx::Error;

    async fn load(&self, keys: &[i64]) -> Result<Loaded<i64, User>, sqlx::Error> {
        let users = self.0.users_by_ids(keys).await?;
        Ok(Loaded::ByKey(
            users
                .into_iter()
                .map(|u| (u.id, u))
                .collect::<HashMap<_, _>>(),
        ))
    }
}

/// Everything a handler needs, shared by all requests.
pub struct AppState {
    pub cortex: Cortex,
    pub repo: Arc<dyn Repo>,
    pub users: Batcher<UserLoader>,
    pub jobs: Jobs,
    pub settings: Settings,
    pub admin_token: String,
}

pub type Shared = Arc<AppState>;

/// The whole service. Layers, outermost first: panics become 500, then tracing (a
/// `http.request` span and the W3C trace context, see [`trace_context`]),
/// metrics per route template, admission and the request timeout on one budget (503 +
/// `Retry-After`, 504; see [`admit_within_timeout`]), read-your-writes across requests ([`read_your_writes`]), and the body limit
/// (413).
pub fn router(state: Shared) -> Router {
    let (public, admin_ops) = (
        handlers::operations()
            .into_iter()
            .chain(admin::public_operations())
            .collect::<Vec<_>>(),
        admin::operations(),
    );
    let spec_op = openapi::op("get", "/openapi.json", "This document", 200, &[]);
    let spec = {
        let ops: Vec<&openapi::Op> = public
            .iter()
            .chain(&admin_ops)
            .map(|(op, _)| op)
            .chain([&spec_op])
            .collect();
        Arc::new(openapi::document(&ops))
    };
    let admin = openapi::router(admin_ops)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let api = openapi::router(public)
        .route(
            spec_op.path,
            get(move || async move { Json(spec.as_ref().clone()) }),
        )
        .merge(admin)
        .fallback(not_found)
        .with_state(state.clone());
    let keep_alive = state.settings.keep_alive;
    api.layer(DefaultBodyLimit::max(state.settings.body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            read_your_writes,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admit_within_timeout,
        ))
        .layer(MetricsLayer::new(state.cortex.metrics().clone()))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                let mut response = next.run(req).await;
                if !keep_alive {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            },
        ))
        .layer(middleware::from_fn(trace_context))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // The route template, not the path, so spans group like the metrics do.
            let route = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or("-", |p| p.as_str())
                .to_owned();
            tracing::debug_span!(
                "http.request",
                method = %req.method(),
                route,
                trace_id = tracing::field::Empty
            )
        }))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request failed",
            )
            .into_response()
        }))
}

/// The request's W3C trace context: a child of the caller's `traceparent` header, or a
/// new trace. The request span records its trace id, the handler runs in its scope (so
/// a durable task enqueued there, or an MCP call made there, stays in the trace), and
/// the response's `traceparent` header names it so a caller can find the logs.
async fn trace_context(req: Request, next: Next) -> Response {
    let tp = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceParent::parse(v).ok())
        .map_or_else(TraceParent::generate, |parent| parent.child());
    tracing::Span::current().record("trace_id", tp.trace_id());
    let mut response = tp.clone().scope(next.run(req)).await;
    if let Ok(value) = HeaderValue::from_str(tp.as_str()) {
        response.headers_mut().insert("traceparent", value);
    }
    response
}

/// The header that carries the primary's WAL position after a client's writes.
pub const WRITTEN_LSN_HEADER: &str = "x-cortex-written-lsn";

/// Read-your-writes across requests, on PostgreSQL with read replicas
/// (`DB_REPLICA_URLS`): a request's `x-cortex-written-lsn` (a decimal WAL position, as
/// an earlier response gave it) is handed to the handler's replica reads
/// ([`crate::repo::read_conn`]), which then use only a replica that has replayed past
/// it, else the primary. Every successful request that is not a `GET`/`HEAD` answers
/// the header, the primary's WAL position after it (never lower than the one it was
/// given), so a client that keeps sending back the last one it got reads its own
/// writes. A value that is not a number is a 400 naming it; without replicas (or on
/// SQLite) nothing is added and the header is only checked.
async fn read_your_writes(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let given = match req.headers().get(WRITTEN_LSN_HEADER) {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(lsn) => Some(lsn),
            None => {
                return ApiError::bad_request(
                    "bad_written_lsn",
                    format!(
                        "{WRITTEN_LSN_HEADER} {value:?} is not a WAL position (the decimal number a response gave)"
                    ),
                )
                .into_response();
            }
        },
    };
    let pool = match state.cortex.database() {
        Database::Postgres(pool) if !pool.config().replica_urls.is_empty() => pool.clone(),
        _ => return next.run(req).await,
    };
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
    let mut response = match given {
        Some(lsn) => crate::repo::WRITTEN_LSN.scope(lsn, next.run(req)).await,
        None => next.run(req).await,
    };
    if writes && response.status().is_success() {
        // After the handler: its writes have committed, so the position read now is at
        // or past every one of them.
        let mut session = pool.session().with_written_lsn(given);
        match session.mark_written_now().await {
            Ok(()) => {
                if let Some(value) = session
                    .written_lsn()
                    .and_then(|lsn| HeaderValue::from_str(&lsn.to_string()).ok())
                {
                    response.headers_mut().insert(WRITTEN_LSN_HEADER, value);
                }
            }
            // The write is done; only the client's read-your-writes is lost, and its
            // lists may lag by at most `DB_REPLICA_MAX_LAG`.
            Err(e) => {
                tracing::warn!(error = %e, "the WAL position after a write could not be read")
            }
        }
    }
    response
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// Admission and the request timeout, one budget: the wait for a limiter slot is
/// part of the request's time, so no answer comes later than `CORTEX_REQUEST_TIMEOUT`.
/// No slot within the limiter's wait (or the request's whole budget, if shorter):
/// 503 `overloaded` with `Retry-After`. Admitted but not answered in what is left: 504.
async fn admit_within_timeout(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let limit = state.settings.request_timeout;
    let started = tokio::time::Instant::now();
    let limiter = state.cortex.limiter();
    let admission = match limiter.acquire_within(limit).await {
        Ok(admission) => admission,
        Err(e) => {
            let secs = limiter.retry_after().as_secs().max(1);
            return ApiError::unavailable("overloaded", e.to_string(), secs).into_response();
        }
    };
    let response = match tokio::time::timeout_at(started + limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no answer within {:.1} s", limit.as_secs_f64()),
        )
        .into_response(),
    };
    drop(admission);
    response
}

/// `Authorization: Bearer <CORTEX_ADMIN_TOKEN>` on every admin route.
async fn require_admin(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin routes need Authorization: Bearer <token>",
        )
        .into_response(),
        Some(token) if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", "wrong admin token").into_response()
        }
    }
}

/// Compares without stopping at the first difference, so timing does not reveal how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random token of 32 hex digits from the operating system's generator.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Bounded wait for shutdown signals: Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

pub const CACHE_WORKSPACE_TTL: Duration = Duration::from_secs(300);
pub const CACHE_USER_LIST_TTL: Duration = Duration::from_secs(60);
