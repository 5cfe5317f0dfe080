//! The queue-wide gauges a worker keeps: pending tasks and dead letters, read from
//! Redis every `stats_interval`.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::shared::Shared;
use crate::durable::redis_util::warn_retrying;

/// Samples the queue's counts into the `durable.pending` and `durable.dead_letters`
/// gauges: once at start, then every `stats_interval`, until the worker stops.
///
/// Each read is bounded by `op_timeout` ([`DurableQueue::sample`](crate::durable::DurableQueue)).
/// A failed one keeps the gauges at their last values and logs (rate-limited): the
/// gauges are for watching the queue, never a reason to stop running it.
pub(super) async fn sample_gauges(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.config().stats_interval);
    // A slow Redis delays the next read; it never makes reads pile up to catch up.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            // A stop, or the handle dropped without one.
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if *stop.borrow() {
            return;
        }
        match shared.queue.sample().await {
            Ok((pending, dead)) => {
                shared.metrics.pending.set(pending as f64);
                shared.metrics.dead_letters.set(dead as f64);
            }
            Err(e) => warn_retrying(&shared.log, "reading the queue's counts for its gauges", &e),
        }
    }
}
