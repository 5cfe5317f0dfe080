//! A task's work: where its attempts come from (a plain future runs once, a factory
//! makes a fresh future per attempt), and how its value is recorded.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{BoxError, Result};

/// A task's value, type-erased on its way from the worker to its handle. A `()` value
/// (the common case) boxes without allocating.
pub(crate) type AnyBox = Box<dyn Any + Send>;

/// What a queued task knows how to do. The task's future lives inside the same
/// allocation as the rest of its job (one `Box` per task, not one per layer).
pub(crate) trait Work: Send + 'static {
    /// Prepares the next attempt; `false` when none can run (a plain future runs once;
    /// a factory runs as often as asked).
    fn start(self: Pin<&mut Self>) -> bool;
    /// Polls the current attempt.
    fn poll_attempt(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<AnyBox, String>>;
    /// Drops the attempt; returns the value as JSON when the task asked for its result
    /// to be recorded.
    fn finish(self: Pin<&mut Self>, outcome: &Result<AnyBox>) -> Option<serde_json::Value>;
    /// Whether a failed attempt can be followed by another.
    fn retryable(&self) -> bool;
}

/// Records a value as JSON, or not.
pub(crate) type ToJson<T> = fn(&T) -> Option<serde_json::Value>;

/// Where a task's attempts come from.
pub(crate) trait Source<F>: Send + 'static {
    /// Whether a failed attempt can be followed by another.
    const RETRYABLE: bool;
    /// The next attempt's future, if there is one.
    fn next(&mut self) -> Option<F>;
}

/// A plain future: one attempt.
pub(crate) struct Once<F>(Option<F>);

impl<F: Send + 'static> Source<F> for Once<F> {
    const RETRYABLE: bool = false;

    fn next(&mut self) -> Option<F> {
        self.0.take()
    }
}

/// A function making a fresh future per attempt.
pub(crate) struct Factory<G>(G);

impl<G, F> Source<F> for Factory<G>
where
    G: FnMut() -> F + Send + 'static,
{
    const RETRYABLE: bool = true;

    fn next(&mut self) -> Option<F> {
        Some((self.0)())
    }
}

pin_project_lite::pin_project! {
    /// A task: where its attempts come from, the current one, how to record its value.
    pub(crate) struct Task<S, F, T> {
        source: S,
        #[pin]
        fut: Option<F>,
        json: ToJson<T>,
    }
}

pub(super) fn recorded<T: 'static>(
    outcome: &Result<AnyBox>,
    json: ToJson<T>,
) -> Option<serde_json::Value> {
    outcome.as_ref().ok()?.downcast_ref::<T>().and_then(json)
}

/// For tasks whose value is not recorded.
pub(crate) fn no_json<T>(_: &T) -> Option<serde_json::Value> {
    None
}

/// For tasks whose value is recorded in [`TaskInfo::result`].
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

impl<S, F, T, E> Work for Task<S, F, T>
where
    S: Source<F>,
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    fn start(self: Pin<&mut Self>) -> bool {
        let mut this = self.project();
        match this.source.next() {
            Some(fut) => {
                this.fut.set(Some(fut));
                true
            }
            None => false,
        }
    }

    fn poll_attempt(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<AnyBox, String>> {
        match self.project().fut.as_pin_mut() {
            None => Poll::Ready(Err("the task has no attempt to run".into())),
            Some(f) => f.poll(cx).map(|r| match r {
                Ok(v) => Ok(Box::new(v) as AnyBox),
                Err(e) => Err(e.into().to_string()),
            }),
        }
    }

    fn finish(self: Pin<&mut Self>, outcome: &Result<AnyBox>) -> Option<serde_json::Value> {
        let mut this = self.project();
        this.fut.set(None);
        recorded(outcome, *this.json)
    }

    fn retryable(&self) -> bool {
        S::RETRYABLE
    }
}

/// The boxed work of one task.
pub(crate) type BoxWork = Pin<Box<dyn Work>>;

/// The work of a plain future, run once.
pub(crate) fn once<F, T, E>(fut: F, json: ToJson<T>) -> BoxWork
where
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    Box::pin(Task {
        source: Once(Some(fut)),
        fut: None,
        json,
    })
}

/// The work of a factory, called once per attempt.
pub(crate) fn factory<G, F, T, E>(make: G, json: ToJson<T>) -> BoxWork
where
    G: FnMut() -> F + Send + 'static,
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    Box::pin(Task {
        source: Factory(make),
        fut: None,
        json,
    })
}
