use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::registry::{Metrics, Operation, global};

/// Whether a call's output counts as a success.
///
/// `Result` succeeds when `Ok`; the other provided types always succeed (the call
/// returned). A call that panics, or a future dropped before it completes (a timeout,
/// a cancelled request), counts as a failure.
pub trait Outcome {
    /// `true` when the call succeeded.
    fn is_success(&self) -> bool;
}

impl<T, E> Outcome for Result<T, E> {
    fn is_success(&self) -> bool {
        self.is_ok()
    }
}

impl<T> Outcome for Option<T> {
    fn is_success(&self) -> bool {
        true
    }
}

macro_rules! always_success {
    ($($t:ty),*) => {$(
        impl Outcome for $t {
            fn is_success(&self) -> bool { true }
        }
    )*};
}
always_success!(
    (),
    bool,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    &'static str
);

impl<T> Outcome for Vec<T> {
    fn is_success(&self) -> bool {
        true
    }
}

/// Times futures into an operation: `fut.tracked("op").await`.
///
/// ```
/// use cortex_metrics::{Metrics, TrackedExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let metrics = Metrics::new();
/// let v: Result<u32, String> = async { Ok(7) }.tracked_with(&metrics, "compute").await;
/// assert_eq!(v, Ok(7));
/// let _: Result<u32, String> = async { Err("boom".into()) }.tracked_with(&metrics, "compute").await;
/// let op = metrics.operation("compute").snapshot();
/// assert_eq!((op.window.successes, op.window.errors), (1, 1));
/// # }
/// ```
pub trait TrackedExt: Future + Sized {
    /// Record this future's duration and outcome into operation `name` of the
    /// [`global()`] registry.
    fn tracked(self, name: &str) -> Tracked<Self> {
        self.tracked_op(global().operation(name))
    }

    /// Record into operation `name` of `metrics`.
    fn tracked_with(self, metrics: &Metrics, name: &str) -> Tracked<Self> {
        self.tracked_op(metrics.operation(name))
    }

    /// Record into an operation handle (no name lookup).
    fn tracked_op(self, op: Arc<Operation>) -> Tracked<Self> {
        Tracked {
            inner: self,
            guard: Guard {
                op,
                start: None,
                armed: true,
            },
        }
    }
}

impl<F: Future> TrackedExt for F {}

/// Records a failure if dropped while armed (panic or cancellation).
#[derive(Debug)]
struct Guard {
    op: Arc<Operation>,
    start: Option<Instant>,
    armed: bool,
}

impl Guard {
    fn finish(&mut self, success: bool) {
        if std::mem::take(&mut self.armed) {
            let start = self.start.unwrap_or_else(Instant::now);
            self.op.record(start.elapsed(), success);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Never polled: nothing ran, nothing to record.
        if self.start.is_some() {
            self.finish(false);
        }
    }
}

pin_project! {
    /// A future that records its duration (from first poll) and outcome. Made by
    /// [`TrackedExt`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        guard: Guard,
    }
}

impl<F> Future for Tracked<F>
where
    F: Future,
    F::Output: Outcome,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.guard.start.get_or_insert_with(Instant::now);
        let out = std::task::ready!(this.inner.poll(cx));
        this.guard.finish(out.is_success());
        Poll::Ready(out)
    }
}

/// Time a synchronous call into operation `name` of the [`global()`] registry.
/// A panic is recorded as a failure and then continues.
///
/// ```
/// let n = cortex_metrics::track("parse", || "42".parse::<u32>());
/// assert_eq!(n, Ok(42));
/// ```
pub fn track<T: Outcome>(name: &str, f: impl FnOnce() -> T) -> T {
    track_op(&global().operation(name), f)
}

/// As [`track`], into an operation handle.
pub fn track_op<T: Outcome>(op: &Arc<Operation>, f: impl FnOnce() -> T) -> T {
    let mut guard = Guard {
        op: op.clone(),
        start: Some(Instant::now()),
        armed: true,
    };
    let out = f();
    guard.finish(out.is_success());
    out
}

use pin_project_lite::pin_project;
