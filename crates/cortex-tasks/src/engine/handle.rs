//! What callers hold: a task's handle, and a shutdown's report.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::record::Record;
use crate::{Error, Result, TaskId};

/// What a shutdown left undone.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks that finished (any final status) while the queue drained.
    pub drained: u64,
    /// Tasks that never started: cancelled when the deadline passed.
    pub not_started: Vec<TaskId>,
    /// Tasks that were running when the deadline passed, and were cancelled.
    pub aborted: Vec<TaskId>,
}

impl ShutdownReport {
    /// `true` when everything accepted ran to the end.
    pub fn is_complete(&self) -> bool {
        self.not_started.is_empty() && self.aborted.is_empty()
    }
}

/// A handle to one task's outcome: await it for the value, or drop it to detach (the
/// task still runs and its record still tells its outcome).
#[must_use = "a dropped handle detaches the task; keep it to learn its outcome"]
pub struct TaskHandle<T> {
    record: Arc<Record>,
    _value: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.record.id)
            .finish()
    }
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(record: Arc<Record>) -> Self {
        Self {
            record,
            _value: std::marker::PhantomData,
        }
    }

    /// The task's id, for status queries and cancellation.
    pub fn id(&self) -> TaskId {
        self.record.id
    }

    /// Lets the task run on without anyone awaiting its value (dropping the handle
    /// does the same); returns its id.
    pub fn detach(self) -> TaskId {
        self.record.id
    }
}

impl<T: 'static> Future for TaskHandle<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.record.handle_waker.register(cx.waker());
        let mut s = self.record.lock();
        match s.outcome.take() {
            Some(outcome) => Poll::Ready(outcome.and_then(|value| {
                value
                    .downcast::<T>()
                    .map(|v| *v)
                    .map_err(|_| Error::Failed("task value of an unexpected type".into()))
            })),
            // Finished and already taken: a handle polled after it was ready.
            None if s.status.is_finished() => Poll::Ready(Err(Error::Cancelled)),
            None => Poll::Pending,
        }
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        self.record.detached.store(true, Ordering::Release);
        // Frees a value that finished before the handle went.
        self.record.lock().outcome.take();
    }
}
