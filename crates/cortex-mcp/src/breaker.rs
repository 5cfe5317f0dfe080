//! The circuit breaker of one service: closed, open after N consecutive failed
//! attempts, half-open for one probe after the cooldown.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// The state of a service's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail at once with [`Error::CircuitOpen`](crate::Error::CircuitOpen).
    Open,
    /// The cooldown is over; one probe call is (or may be) in flight and decides.
    HalfOpen,
}

#[derive(Debug)]
struct OpenState {
    opened_at: Instant,
    probing: bool,
}

/// Lock-free while closed (one relaxed load per call, a store only when a failure
/// streak ends); the mutex is taken only while open or when opening.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    open: AtomicBool,
    failures: AtomicU32,
    state: Mutex<Option<OpenState>>,
}

/// What [`Breaker::admit`] let through; report its outcome.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Breaker {
    /// `threshold` 0 turns the breaker off.
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            state: Mutex::new(None),
        }
    }

    /// A permit for one attempt, or the time until the next probe.
    pub(crate) fn admit(&self) -> Result<Permit<'_>, (u32, Duration)> {
        if !self.open.load(Ordering::Acquire) {
            return Ok(self.permit(false));
        }
        let mut guard = self.lock();
        let Some(open) = guard.as_mut() else {
            return Ok(self.permit(false));
        };
        let since = open.opened_at.elapsed();
        if since >= self.cooldown && !open.probing {
            open.probing = true;
            return Ok(self.permit(true));
        }
        let retry_in = self.cooldown.saturating_sub(since);
        Err((self.failures.load(Ordering::Relaxed), retry_in))
    }

    pub(crate) fn state(&self) -> CircuitState {
        match self.lock().as_ref() {
            None => CircuitState::Closed,
            Some(open) if open.probing || open.opened_at.elapsed() >= self.cooldown => {
                CircuitState::HalfOpen
            }
            Some(_) => CircuitState::Open,
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            done: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OpenState>> {
        // The state is a plain value with no invariant a panic could break halfway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_success(&self, probe: bool) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if probe || self.open.load(Ordering::Acquire) {
            *self.lock() = None;
            self.open.store(false, Ordering::Release);
        }
    }

    /// Returns true when this failure opened the circuit.
    fn on_failure(&self, probe: bool) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let mut guard = self.lock();
        match guard.as_mut() {
            Some(open) if probe => {
                // The probe failed: another full cooldown.
                open.opened_at = Instant::now();
                open.probing = false;
                false
            }
            Some(_) => false,
            None if failures >= self.threshold => {
                *guard = Some(OpenState {
                    opened_at: Instant::now(),
                    probing: false,
                });
                self.open.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }
}

impl Permit<'_> {
    /// Whether this is the half-open circuit's one probe.
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    /// The service answered (a tool error counts: the service is up).
    pub(crate) fn success(mut self) {
        self.done = true;
        self.breaker.on_success(self.probe);
    }

    /// The attempt failed in a way that says the service is unwell. Returns true when
    /// this opened the circuit.
    pub(crate) fn failure(mut self) -> bool {
        self.done = true;
        self.breaker.on_failure(self.probe)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // A probe whose caller went away decided nothing: let the next call probe.
        if self.probe
            && !self.done
            && let Some(open) = self.breaker.lock().as_mut()
        {
            open.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_probes_after_cooldown_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(!b.admit().unwrap().failure());
        }
        b.admit().unwrap().success();
        for _ in 0..2 {
            assert!(!b.admit().unwrap().failure());
        }
        assert!(
            b.admit().unwrap().failure(),
            "the third consecutive failure opens"
        );
        assert_eq!(b.state(), CircuitState::Open);
        let (failures, retry_in) = b.admit().unwrap_err();
        assert_eq!((failures, retry_in), (3, Duration::from_secs(10)));

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let probe = b.admit().unwrap();
        assert!(b.admit().is_err(), "one probe at a time");
        probe.failure();
        assert_eq!(b.state(), CircuitState::Open, "a failed probe reopens");

        tokio::time::advance(Duration::from_secs(10)).await;
        drop(b.admit().unwrap());
        let probe = b.admit().expect("an abandoned probe frees the slot");
        assert!(probe.is_probe());
        probe.success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(!b.admit().unwrap().is_probe(), "closed: no probes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_decided_nothing_keeps_the_cooldown_and_lets_the_next_call_probe() {
        let b = Breaker::new(1, Duration::from_secs(10));
        assert!(b.admit().unwrap().failure());
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.admit().unwrap();
        assert!(probe.is_probe());
        // E.g. no session was up to send it on: it is given back, not failed.
        drop(probe);
        assert_eq!(b.state(), CircuitState::HalfOpen, "no new cooldown");
        assert!(
            b.admit().unwrap().is_probe(),
            "the next call probes at once"
        );
    }

    #[test]
    fn threshold_zero_never_opens() {
        let b = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            assert!(!b.admit().unwrap().failure());
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
