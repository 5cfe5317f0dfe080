//! Every error leaves as `{"error": {"code": "...", "message": "..."}}` with its status.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error a handler answers with.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (503 answers).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(what: &str, id: i64) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {id} does not exist"),
        )
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// A failure of ours: logged in full, answered without internals.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            _ => (rejection.status(), "bad_body"),
        };
        Self::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("bad_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("bad_path", rejection.body_text())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::from_sqlx(&e)
    }
}

impl ApiError {
    /// The answer for a database error, wherever it surfaced (directly, or as the
    /// failed load of a cached read).
    pub fn from_sqlx(e: &sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "a record with that value exists",
            ),
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                Self::validation("a referenced record does not exist")
            }
            sqlx::Error::PoolTimedOut => {
                Self::unavailable("database_busy", "no database connection free; try again", 1)
            }
            // The database went away under the query (restart, failover, a cut
            // connection) or refuses new sessions: the dependency is down, not our code
            // broken, so a 503 the caller may retry, like every other outage.
            sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Self::unavailable(
                    "database_unavailable",
                    "the database is unavailable; try again",
                    1,
                )
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| unavailable_state(&c)) => {
                Self::unavailable(
                    "database_unavailable",
                    "the database is unavailable; try again",
                    1,
                )
            }
            _ => Self::internal("database query", e),
        }
    }
}

/// SQLSTATEs of a database that is going away or not taking sessions: class 08
/// (connection exception), 57P01-57P03 (shut down by an administrator, crash shutdown,
/// cannot connect now) and 53300 (too many connections).
fn unavailable_state(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

impl From<cortex_core::pool::Error> for ApiError {
    fn from(e: cortex_core::pool::Error) -> Self {
        if e.is_retryable() {
            Self::unavailable("database_busy", e.to_string(), 1)
        } else {
            Self::internal("database", &e)
        }
    }
}

impl From<cortex_core::tasks::Error> for ApiError {
    fn from(e: cortex_core::tasks::Error) -> Self {
        use cortex_core::tasks::Error as E;
        match e {
            E::UnknownPriority(_) => Self::bad_request("bad_priority", e.to_string()),
            E::QueueFull { .. } | E::EnqueueTimeout { .. } | E::ShutDown => {
                Self::unavailable("queue_full", e.to_string(), 1)
            }
            E::Redis(_) | E::Pool(_) => Self::unavailable("queue_unavailable", e.to_string(), 1),
            // Redis took the enqueue but no reply came: the task may be queued. Still a
            // dependency failing, not a bug of ours, so a 503 like the others, naming
            // the id the task has if it was queued (the admin task route tells).
            E::EnqueueUnconfirmed { ref ids, .. } => Self::unavailable(
                "queue_unconfirmed",
                format!(
                    "{e}: look up task {} once the queue answers",
                    ids.first().map(ToString::to_string).unwrap_or_default()
                ),
                1,
            ),
            _ => Self::internal("task queue", &e),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}
