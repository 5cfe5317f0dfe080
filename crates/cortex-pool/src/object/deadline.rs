//! The time budget of one acquire, started only when it first has to wait.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

/// The time budget of one get, started lazily.
pub(super) struct Deadline {
    pub(super) start: Option<Instant>,
    pub(super) deadline: Option<Instant>,
    pub(super) timeout: Duration,
}

impl Deadline {
    pub(super) fn deadline(&mut self) -> Instant {
        if let Some(d) = self.deadline {
            return d;
        }
        let start = *self.start.get_or_insert_with(Instant::now);
        // An absurd timeout waits "forever" (30 years) rather than overflowing.
        let d = start
            .checked_add(self.timeout)
            .or_else(|| start.checked_add(Duration::from_secs(30 * 365 * 86_400)))
            .unwrap_or(start);
        self.deadline = Some(d);
        d
    }

    pub(super) fn waited(&self) -> Duration {
        self.start.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// Run `fut` under the get's deadline, arming the timer only if it does not finish
/// on its first poll. `None` on timeout.
pub(super) async fn bounded<F: Future>(fut: F, clock: &mut Deadline) -> Option<F::Output> {
    let mut fut = pin!(fut);
    if let Poll::Ready(v) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Some(v);
    }
    tokio::time::timeout_at(clock.deadline(), fut).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(timeout: Duration) -> Deadline {
        Deadline {
            start: None,
            deadline: None,
            timeout,
        }
    }

    #[test]
    fn the_clock_starts_only_when_a_deadline_is_asked_for() {
        let mut c = clock(Duration::from_secs(5));
        assert_eq!(c.waited(), Duration::ZERO);
        assert!(c.start.is_none());
        let d = c.deadline();
        assert!(c.start.is_some());
        // Asked again, the same deadline: the budget is for the whole acquire.
        assert_eq!(c.deadline(), d);
        assert_eq!(d, c.start.unwrap() + Duration::from_secs(5));
    }

    #[test]
    fn an_absurd_timeout_does_not_overflow() {
        let mut c = clock(Duration::MAX);
        let d = c.deadline();
        assert!(d > c.start.unwrap());
    }

    #[tokio::test]
    async fn a_ready_future_never_starts_the_clock() {
        let mut c = clock(Duration::from_secs(5));
        assert_eq!(bounded(async { 7 }, &mut c).await, Some(7));
        assert!(c.start.is_none() && c.deadline.is_none());
    }

    #[tokio::test]
    async fn a_future_still_pending_at_the_deadline_gives_none() {
        let mut c = clock(Duration::from_millis(10));
        let never = std::future::pending::<()>();
        assert_eq!(bounded(never, &mut c).await, None);
        assert!(c.start.is_some());
    }
}
