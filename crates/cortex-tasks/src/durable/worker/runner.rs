//! Running: acting on the start script's verdict, one attempt of a handler (panic
//! caught, timeout applied), and retries with backoff while the entry stays held.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use cortex_support::backoff::Backoff;
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::reader::{Verdict, start};
use super::refresh;
use super::shared::{Done, Entry, Level, Live, Outcome, Shared, lock};
use crate::durable::redis_util::{bounded, redis_backoff, warn_retrying};
use crate::durable::registry::{AttemptError, Handler};
use crate::{Error, TaskId, TraceParent};

/// Acts on the start script's verdict for one entry.
pub(super) fn dispatch(
    shared: &Arc<Shared>,
    e: Entry,
    (code, attempts, error): Verdict,
    permits: &mut Vec<OwnedSemaphorePermit>,
) {
    match code {
        1 => {
            if attempts == 1 {
                shared
                    .metrics
                    .wait
                    .record_duration(Duration::from_millis(e.age_ms()));
            }
            let slot = e.slot();
            // Insert under the lock held across the spawn, so the task cannot finish
            // before it is registered.
            let mut live = lock(&shared.live);
            if live.contains_key(&slot) {
                // Already running here (its entry came back, e.g. reclaimed from this
                // very worker): that run finishes it.
                return;
            }
            let Some(permit) = permits.pop() else {
                // Cannot happen: the batch is never larger than the permits taken.
                drop(live);
                shared.send(Done {
                    entry: e,
                    outcome: Outcome::Skip,
                });
                return;
            };
            let id = e.id;
            let handle = tokio::spawn(run_task(shared.clone(), e, attempts, permit));
            live.insert(
                slot,
                Live {
                    id,
                    abort: handle.abort_handle(),
                },
            );
        }
        4 => shared.send(Done {
            outcome: Outcome::Dead {
                error: format!("abandoned: its worker was lost during attempt {attempts}"),
                attempts,
            },
            entry: e,
        }),
        5 => {
            tracing::warn!(entry = %e.entry_id, error = %error, "durable tasks: parking a bad entry in the dead-letter stream");
            shared.send(Done {
                outcome: Outcome::Parked { error, attempts },
                entry: e,
            });
        }
        _ => shared.send(Done {
            entry: e,
            outcome: Outcome::Skip,
        }),
    }
}

pub(super) async fn attempt(
    handler: &Handler,
    payload: &str,
    timeout: Option<Duration>,
) -> std::result::Result<String, AttemptError> {
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(payload))) {
        Ok(f) => AssertUnwindSafe(f).catch_unwind(),
        Err(p) => {
            return Err(AttemptError::Retryable(format!(
                "panicked: {}",
                cortex_support::panic_message(p.as_ref())
            )));
        }
    };
    let out = match timeout {
        Some(d) => match tokio::time::timeout(d, fut).await {
            Ok(r) => r,
            Err(_) => return Err(AttemptError::Retryable(format!("timed out after {d:?}"))),
        },
        None => fut.await,
    };
    out.unwrap_or_else(|p| {
        Err(AttemptError::Retryable(format!(
            "panicked: {}",
            cortex_support::panic_message(p.as_ref())
        )))
    })
}

/// The wait before the attempt after `attempts` failed ones: `base` doubling per
/// attempt, at most five minutes, jittered (between half and all of it) so tasks that
/// failed together (their dependency went down) do not all come back at once.
pub(super) fn retry_delay(base: Duration, attempts: u32) -> Duration {
    Backoff::new(base, Duration::from_secs(300)).delay(attempts.saturating_sub(1))
}

/// What the start script said of a retry's start: go on with attempt number `Ok(n)`,
/// or end with an outcome (abandoned, a bad entry, or nothing left to do: cancelled
/// meanwhile, or no longer this worker's).
pub(super) fn retry_started(verdict: Option<Verdict>, error: String) -> Result<u32, Outcome> {
    match verdict {
        Some((1, attempts, _)) => Ok(attempts),
        Some((4, attempts, _)) => Err(Outcome::Dead { error, attempts }),
        Some((5, attempts, error)) => Err(Outcome::Parked { error, attempts }),
        _ => Err(Outcome::Skip),
    }
}

pub(super) async fn run_task(
    shared: Arc<Shared>,
    e: Entry,
    mut attempts: u32,
    permit: OwnedSemaphorePermit,
) {
    let cfg = shared.config();
    let mut permit = Some(permit);
    let mut seq = 0;
    let handler = shared.registry.get(&e.handler).cloned();
    // Stored at enqueue (empty when none was): each attempt's span records its trace
    // id, and the handler runs in the scope of a child, so what it enqueues stays in
    // the trace. A malformed one (written by something else) is ignored.
    let traceparent = Some(e.traceparent.as_str())
        .filter(|t| !t.is_empty())
        .and_then(|t| TraceParent::parse(t).ok());
    let outcome = loop {
        let Some(h) = &handler else {
            break Outcome::Dead {
                error: Error::UnknownHandler(e.handler.clone()).to_string(),
                attempts,
            };
        };
        let span = tracing::debug_span!(
            parent: None,
            "task.run",
            queue = cfg.name.as_str(),
            task = e.handler.as_str(),
            task_id = %e.id,
            attempt = attempts,
            trace_id = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        let t0 = Instant::now();
        let running = Level::up(&shared.metrics.running);
        let run = attempt(h, &e.payload, cfg.task_timeout).instrument(span.clone());
        let r = match &traceparent {
            Some(tp) => {
                span.record("trace_id", tp.trace_id());
                tp.child().scope(run).await
            }
            None => run.await,
        };
        drop(running);
        span.record(
            "outcome",
            match &r {
                Ok(_) => "ok",
                Err(AttemptError::Permanent(_)) => "failed",
                Err(AttemptError::Retryable(_)) => "retryable",
            },
        );
        shared.metrics.run.record_duration(t0.elapsed());
        let error = match r {
            Ok(json) => break Outcome::Completed(json),
            Err(AttemptError::Permanent(error)) => break Outcome::Dead { error, attempts },
            Err(AttemptError::Retryable(error)) if attempts >= cfg.max_attempts => {
                break Outcome::Dead { error, attempts };
            }
            Err(AttemptError::Retryable(error)) => error,
        };
        shared.metrics.retried.increment();
        // Counted from the failed attempt until the next one starts (or the task ends).
        let scheduled = Level::up(&shared.metrics.scheduled);
        mark_retrying(&shared, e.id, &error).await;
        // The entry stays pending (and refreshed) through the backoff, so a crash here
        // loses nothing; the slot is free meanwhile.
        drop(permit.take());
        tokio::time::sleep(retry_delay(cfg.retry_backoff, attempts)).await;
        match shared.sem.clone().acquire_owned().await {
            Ok(p) => permit = Some(p),
            Err(_) => return,
        }
        // If this worker's refresh came too late during the backoff, another worker
        // reclaimed the entry and runs it: starting it here too would run the task
        // twice at once. Refreshing the entry asks Redis whose it is and, if it is
        // still this worker's, keeps it so through the start below.
        if !still_mine(&shared, &e).await {
            tracing::debug!(task = %e.id, "durable tasks: another worker reclaimed a task during its retry's backoff; it runs the retry");
            drop(scheduled);
            drop(permit);
            shared.forget_live(&e);
            return;
        }
        // Each retry is a new start request; the same one is sent again after an error.
        seq += 1;
        let mut failures = 0;
        let verdict = loop {
            match start(&shared, std::slice::from_ref(&e), seq).await {
                Ok(verdicts) => break verdicts.into_iter().next(),
                Err(err) => {
                    failures += 1;
                    warn_retrying(&shared.log, "starting a retry", &err);
                    tokio::time::sleep(redis_backoff(failures)).await;
                }
            }
        };
        drop(scheduled);
        match retry_started(verdict, error) {
            Ok(a) => attempts = a,
            Err(outcome) => break outcome,
        }
    };
    drop(permit);
    shared.finish_live(e, outcome);
}

/// Whether `e` is still pending for this worker, refreshing it if so (an entry that
/// came back to this worker, e.g. by its own reclaim, is refreshed again from now on).
/// Redis errors are retried: the entry stays pending meanwhile, so nothing is lost.
async fn still_mine(shared: &Shared, e: &Entry) -> bool {
    let slot = e.slot();
    let mut failures = 0;
    let lost = loop {
        match refresh(shared, std::slice::from_ref(&slot), 0, None).await {
            Ok(lost) => break lost,
            Err(err) => {
                failures += 1;
                warn_retrying(&shared.log, "checking a retry's entry", &err);
                tokio::time::sleep(redis_backoff(failures)).await;
            }
        }
    };
    if lost.contains(&slot) {
        return false;
    }
    lock(&shared.lost).remove(&slot);
    true
}

pub(super) async fn mark_retrying(shared: &Shared, id: TaskId, error: &str) {
    let keys = shared.queue.keys();
    let mut conn = shared.queue.conn();
    let r = bounded(
        shared.config().op_timeout,
        "retry",
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(keys.task(id))
            .arg("status")
            .arg("retrying")
            .arg("error")
            .arg(error)
            .ignore()
            .cmd("HINCRBY")
            .arg(&keys.stats)
            .arg("retried")
            .arg(1)
            .ignore()
            .query_async::<()>(&mut conn),
    )
    .await;
    if let Err(e) = r {
        warn_retrying(&shared.log, "recording a retry", &e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::Registry;

    #[test]
    fn retry_waits_double_with_jitter_up_to_five_minutes() {
        let base = Duration::from_millis(100);
        for attempts in 1..30 {
            let nominal = base
                .saturating_mul(1 << (attempts - 1).min(20))
                .min(Duration::from_secs(300));
            let d = retry_delay(base, attempts);
            assert!(d >= nominal / 2 && d <= nominal, "{attempts}: {d:?}");
        }
        assert_eq!(retry_delay(Duration::ZERO, 3), Duration::ZERO);
        assert!(retry_delay(Duration::MAX, u32::MAX) <= Duration::from_secs(300));
    }

    #[test]
    fn a_retry_start_goes_on_or_ends_with_the_scripts_outcome() {
        assert!(matches!(
            retry_started(Some((1, 2, String::new())), "e".into()),
            Ok(2)
        ));
        match retry_started(Some((4, 3, String::new())), "last error".into()) {
            Err(Outcome::Dead { error, attempts }) => {
                assert_eq!((error.as_str(), attempts), ("last error", 3));
            }
            other => panic!("{other:?}"),
        }
        match retry_started(Some((5, 1, "not a hash".into())), "e".into()) {
            Err(Outcome::Parked { error, attempts }) => {
                assert_eq!((error.as_str(), attempts), ("not a hash", 1));
            }
            other => panic!("{other:?}"),
        }
        // Cancelled or finished meanwhile, or no reply row: acknowledge only.
        for v in [
            Some((2, 1, String::new())),
            Some((3, 1, String::new())),
            None,
        ] {
            assert!(matches!(retry_started(v, "e".into()), Err(Outcome::Skip)));
        }
    }

    #[tokio::test]
    async fn an_attempt_catches_panics_applies_its_timeout_and_parks_bad_payloads() {
        let mut reg = Registry::new();
        reg.register(
            "ok",
            |n: u32| async move { Ok::<_, crate::BoxError>(n * 2) },
        )
        .register("fails", |_: u32| async move {
            Err::<u32, crate::BoxError>("down".into())
        })
        .register("panics", |_: u32| async move {
            if true {
                panic!("boom");
            }
            Ok::<u32, crate::BoxError>(0)
        })
        .register("hangs", |_: u32| async move {
            std::future::pending::<()>().await;
            Ok::<u32, crate::BoxError>(0)
        });
        let h = |name: &str| reg.get(name).expect("registered").clone();
        assert_eq!(attempt(&h("ok"), "21", None).await.expect("ok"), "42");
        match attempt(&h("fails"), "1", None).await {
            Err(AttemptError::Retryable(e)) => assert_eq!(e, "down"),
            other => panic!("{other:?}"),
        }
        match attempt(&h("panics"), "1", None).await {
            Err(AttemptError::Retryable(e)) => assert_eq!(e, "panicked: boom"),
            other => panic!("{other:?}"),
        }
        let limit = Duration::from_millis(10);
        match attempt(&h("hangs"), "1", Some(limit)).await {
            Err(AttemptError::Retryable(e)) => assert!(e.starts_with("timed out"), "{e}"),
            other => panic!("{other:?}"),
        }
        match attempt(&h("ok"), "\"not a number\"", None).await {
            Err(AttemptError::Permanent(e)) => assert!(e.starts_with("payload"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
