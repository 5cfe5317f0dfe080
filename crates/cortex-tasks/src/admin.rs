//! The admin routes' logic, free of any web framework: `GET /admin/tasks`,
//! `GET /admin/tasks/{id}` and `DELETE /admin/tasks/{id}` each map to one function
//! returning an HTTP status and a JSON body, so a service wires them into axum, hyper or
//! anything else in a line each.
//!
//! An error answers `{"error": {"code": "<code>", "message": "<text>"}}`, the shape
//! every Cortex JSON error has: `code` is [`Error::code`] (stable, for programs:
//! `invalid_task_id` with 400, `unknown_task` or `already_finished` with 404,
//! `unavailable` with 503 when Redis cannot be reached), `message` the error's text
//! (for people; it may change).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cortex_tasks::Error> {
//! use cortex_tasks::{admin, TaskQueue, TaskQueueConfig};
//!
//! let queue = TaskQueue::start(TaskQueueConfig::default())?;
//! let (status, body) = admin::cancel(&queue, "not-hex");
//! assert_eq!(status, 400);
//! assert_eq!(body["error"]["code"], "invalid_task_id");
//! assert!(body["error"]["message"].as_str().unwrap().contains("not-hex"));
//! let (status, body) = admin::cancel(&queue, "ff");
//! assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_task")));
//! # Ok(()) }
//! ```

use serde_json::{Value, json};

#[cfg(feature = "durable")]
use crate::durable::DurableQueue;
use crate::{Error, Result, TaskId, TaskInfo};

/// What the admin routes need of a queue; every in-process queue implements it.
pub trait TaskAdmin {
    /// One task, if known.
    fn task(&self, id: TaskId) -> Option<TaskInfo>;
    /// Every task on record.
    fn tasks(&self) -> Vec<TaskInfo>;
    /// Cancels one task.
    ///
    /// # Errors
    /// [`Error::UnknownTask`] or [`Error::AlreadyFinished`].
    fn cancel_task(&self, id: TaskId) -> Result<()>;
}

/// `GET /admin/tasks`: 200 with `{"tasks": [...], "active": n}`.
pub fn list(queue: &impl TaskAdmin) -> (u16, Value) {
    let tasks = queue.tasks();
    let active = tasks.iter().filter(|t| !t.status.is_finished()).count();
    (200, json!({ "tasks": tasks, "active": active }))
}

/// `GET /admin/tasks/{id}`: 200 with the task, 400 for a malformed id, 404 when unknown.
pub fn get(queue: &impl TaskAdmin, id: &str) -> (u16, Value) {
    match id.parse::<TaskId>() {
        Err(e) => error(400, &e),
        Ok(id) => match queue.task(id) {
            Some(info) => (200, json!(info)),
            None => error(404, &Error::UnknownTask(id)),
        },
    }
}

/// `DELETE /admin/tasks/{id}`: 200 when cancelled, 400 for a malformed id, 404 when
/// unknown or already finished; errors as the module says.
pub fn cancel(queue: &impl TaskAdmin, id: &str) -> (u16, Value) {
    let id = match id.parse::<TaskId>() {
        Err(e) => return error(400, &e),
        Ok(id) => id,
    };
    match queue.cancel_task(id) {
        Ok(()) => (200, json!({ "cancelled": id })),
        Err(e) => error(404, &e),
    }
}

#[cfg(feature = "durable")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
/// `GET /admin/tasks` for a durable queue: 200 with its counters (a durable queue may
/// hold millions of tasks across processes; it is not listed whole), 503 when Redis
/// cannot be reached.
pub async fn durable_list(queue: &DurableQueue) -> (u16, Value) {
    match queue.stats().await {
        Ok(stats) => (200, json!({ "stats": stats })),
        Err(e) => error(503, &e),
    }
}

#[cfg(feature = "durable")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
/// `GET /admin/tasks/{id}` for a durable queue: 200, 400, 404, or 503 when Redis cannot
/// be reached.
pub async fn durable_get(queue: &DurableQueue, id: &str) -> (u16, Value) {
    let id = match id.parse::<TaskId>() {
        Err(e) => return error(400, &e),
        Ok(id) => id,
    };
    match queue.status(id).await {
        Ok(info) => (200, json!(info)),
        Err(e) => error(lookup_status(&e), &e),
    }
}

#[cfg(feature = "durable")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
/// `DELETE /admin/tasks/{id}` for a durable queue: 200, 400, 404 (unknown or already
/// finished), or 503 when Redis cannot be reached.
pub async fn durable_cancel(queue: &DurableQueue, id: &str) -> (u16, Value) {
    let id = match id.parse::<TaskId>() {
        Err(e) => return error(400, &e),
        Ok(id) => id,
    };
    match queue.cancel(id).await {
        Ok(()) => (200, json!({ "cancelled": id })),
        Err(e) => error(lookup_status(&e), &e),
    }
}

#[cfg(feature = "durable")]
fn lookup_status(e: &Error) -> u16 {
    match e {
        Error::UnknownTask(_) | Error::AlreadyFinished(_) => 404,
        _ => 503,
    }
}

/// `{"error": {"code": ..., "message": ...}}` with `status`.
fn error(status: u16, e: &Error) -> (u16, Value) {
    (
        status,
        json!({ "error": { "code": e.code(), "message": e.to_string() } }),
    )
}
