//! What keeps a [`TwoTierCache`](crate::TwoTierCache)'s memory tier coherent: versions
//! that stop a stale fill from outliving a newer write, and the listener that applies
//! other processes' invalidations, bounded in every wait, with a keepalive, and
//! resubscribing (and clearing) after any loss of its connection.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cortex_support::backoff::Backoff;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use serde::Serialize;
use tokio::sync::watch;

use crate::{Cache, Error, Result};

/// The payload meaning "clear everything" (a key can never be empty).
pub(crate) const CLEAR_ALL: &str = "";

/// Bound on connecting and subscribing.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A `PING` goes down the subscription this often...
const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
/// ...and the connection is given up when its answer takes longer than this.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Backoff between attempts to resubscribe: 50 ms doubling up to 2 s, jittered, so
/// processes that lost Redis together do not come back together.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// Version slots: keys hash to one, so a check is one atomic load. Two keys sharing a
/// slot only cost an occasional needless miss.
const SLOTS: usize = 256;

/// Per-slot change counters of the memory tier.
///
/// Every change of a key (a write, a delete, an invalidation heard, a clear) bumps its
/// slot after the change reached Redis and before the memory tier is touched. A copy
/// put in memory survives only if its slot did not move between the start of the Redis
/// call that produced it and the moment after it was stored; otherwise it is taken out
/// again, since the change that moved the slot may be newer than the copy.
pub(crate) struct Versions {
    slots: Box<[AtomicU64]>,
    hasher: foldhash::fast::FixedState,
}

impl Versions {
    fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    #[inline]
    fn slot(&self, key: &str) -> &AtomicU64 {
        let h = self.hasher.hash_one(key) as usize;
        &self.slots[h % SLOTS]
    }

    /// The version of `key`'s slot.
    #[inline]
    pub(crate) fn of(&self, key: &str) -> u64 {
        self.slot(key).load(SeqCst)
    }

    /// Bump `key`'s slot; the version before.
    #[inline]
    pub(crate) fn bump(&self, key: &str) -> u64 {
        self.slot(key).fetch_add(1, SeqCst)
    }

    /// Bump every slot (a clear).
    pub(crate) fn bump_all(&self) {
        for s in &*self.slots {
            s.fetch_add(1, SeqCst);
        }
    }
}

/// The memory tier, shared with the listener.
pub(crate) struct Local<L> {
    pub(crate) cache: L,
    pub(crate) versions: Versions,
    pub(crate) status: Status,
}

impl<L: Cache> Local<L> {
    pub(crate) fn new(cache: L) -> Self {
        Self {
            cache,
            versions: Versions::new(),
            status: Status::new(),
        }
    }

    /// Take `key` out of memory, and out of any fill under way.
    pub(crate) async fn evict(&self, key: &str) -> Result<()> {
        self.versions.bump(key);
        self.cache.delete(key).await.map(|_| ())
    }

    /// Empty memory, and abandon every fill under way.
    pub(crate) async fn evict_all(&self) -> Result<()> {
        self.versions.bump_all();
        self.cache.clear().await.map(|_| ())
    }
}

/// What the listener is doing, readable on the hot path without a lock.
pub(crate) struct Status {
    live: AtomicBool,
    subscriptions: AtomicU64,
    invalidations: AtomicU64,
    failures: AtomicU64,
    /// `live`, for those who wait on it.
    changed: watch::Sender<bool>,
}

impl Status {
    fn new() -> Self {
        Self {
            live: AtomicBool::new(false),
            subscriptions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            changed: watch::Sender::new(false),
        }
    }

    /// Subscribed now, so memory can be kept coherent.
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(SeqCst)
    }

    fn up(&self) {
        self.subscriptions.fetch_add(1, Relaxed);
        self.live.store(true, SeqCst);
        self.changed.send_replace(true);
    }

    fn down(&self) {
        self.failures.fetch_add(1, Relaxed);
        self.live.store(false, SeqCst);
        self.changed.send_replace(false);
    }

    /// Wait, at most `within`, for the listener to be subscribed.
    pub(crate) async fn ready(&self, within: Duration) -> Result<()> {
        let mut rx = self.changed.subscribe();
        match tokio::time::timeout(within, rx.wait_for(|live| *live)).await {
            Ok(Ok(_)) => Ok(()),
            // The sender lives as long as `self`: unreachable, but not worth a panic.
            Ok(Err(_)) | Err(_) => Err(Error::Timeout {
                what: "the invalidation listener's subscription",
                waited: within,
            }),
        }
    }

    pub(crate) fn stats(&self) -> ListenerStats {
        ListenerStats {
            live: self.is_live(),
            subscriptions: self.subscriptions.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            failures: self.failures.load(Relaxed),
        }
    }
}

/// What the invalidation listener of a [`TwoTierCache`](crate::TwoTierCache) has done,
/// from [`TwoTierCache::listener_stats`](crate::TwoTierCache::listener_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Subscribed now. While not, the memory tier is neither filled nor written (it
    /// could not be kept coherent), only read and evicted.
    pub live: bool,
    /// Subscriptions made: 1 after the first, one more per resubscription. Each one
    /// cleared the memory tier, since invalidations sent while away were missed.
    pub subscriptions: u64,
    /// Invalidations from other processes applied.
    pub invalidations: u64,
    /// Subscribe attempts that failed, and live subscriptions lost (closed connection,
    /// or no answer to a keepalive `PING` within 2 s).
    pub failures: u64,
}

/// Subscribe to `channel` and evict what other processes changed, for as long as the
/// memory tier lives. Every wait is bounded; a connection that closes or stops
/// answering the keepalive is replaced, with backoff, and every (re)subscription clears
/// the memory tier first.
pub(crate) async fn listen<L: Cache>(
    client: redis::Client,
    channel: String,
    origin: String,
    local: Weak<Local<L>>,
) {
    let mut attempt = 0;
    loop {
        let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            sink.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        })
        .await;
        let Some(tier) = local.upgrade() else { return };
        match subscribed {
            Ok(Ok((sink, stream))) => {
                attempt = 0;
                // Invalidations sent while we were not subscribed are lost: start clean
                // (before going live, so no copy made meanwhile survives).
                if let Err(e) = tier.evict_all().await {
                    tracing::warn!(%channel, error = %cortex_support::error_chain(&e), "memory tier not cleared on subscribe");
                }
                tier.status.up();
                drop(tier);
                let why = pump(sink, stream, &local, &origin).await;
                let Some(tier) = local.upgrade() else { return };
                tier.status.down();
                tracing::warn!(%channel, reason = %why, "invalidation subscription lost; resubscribing");
            }
            Ok(Err(e)) => {
                tier.status.failures.fetch_add(1, Relaxed);
                tracing::debug!(%channel, error = %cortex_support::error_chain(&e), "invalidation subscribe failed; retrying");
            }
            Err(_) => {
                tier.status.failures.fetch_add(1, Relaxed);
                tracing::debug!(%channel, "invalidation subscribe timed out; retrying");
            }
        }
        tokio::time::sleep(BACKOFF.delay(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Apply messages until the connection is lost; why it was.
async fn pump<L: Cache>(
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    local: &Weak<Local<L>>,
    origin: &str,
) -> String {
    let mut next_ping = tokio::time::Instant::now() + KEEPALIVE_EVERY;
    loop {
        match tokio::time::timeout_at(next_ping, stream.next()).await {
            Ok(Some(msg)) => {
                let Some(tier) = local.upgrade() else {
                    return "cache dropped".to_owned();
                };
                apply(&tier, msg.get_payload_bytes(), origin).await;
            }
            Ok(None) => return "connection closed".to_owned(),
            Err(_) => {
                match tokio::time::timeout(KEEPALIVE_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("keepalive failed: {e}"),
                    Err(_) => {
                        return format!(
                            "no answer to a keepalive PING within {KEEPALIVE_TIMEOUT:?}"
                        );
                    }
                }
                next_ping = tokio::time::Instant::now() + KEEPALIVE_EVERY;
            }
        }
    }
}

/// The message of an invalidation of `key` ([`CLEAR_ALL`] for everything) by `origin`.
pub(crate) fn message(origin: &str, key: &str) -> String {
    format!("{origin}|{key}")
}

async fn apply<L: Cache>(tier: &Local<L>, payload: &[u8], origin: &str) {
    let payload = String::from_utf8_lossy(payload);
    let Some((from, key)) = payload.split_once('|') else {
        return;
    };
    if from == origin {
        return;
    }
    tier.status.invalidations.fetch_add(1, Relaxed);
    let done = if key == CLEAR_ALL {
        tier.evict_all().await
    } else {
        tier.evict(key).await
    };
    if let Err(e) = done {
        tracing::warn!(key, error = %cortex_support::error_chain(&e), "invalidation not applied to the memory tier");
    }
}

/// A process-unique id, so a cache ignores its own invalidations.
pub(crate) fn origin_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    )
}

/// Keeps `local` alive for the caller (an `Arc`), the listener holding a `Weak`.
pub(crate) fn spawn<L: Cache + 'static>(
    client: redis::Client,
    channel: String,
    origin: String,
    local: &Arc<Local<L>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(listen(client, channel, origin, Arc::downgrade(local)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_move_per_slot_and_all_at_once() {
        let v = Versions::new();
        let a = v.of("a");
        assert_eq!(v.bump("a"), a);
        assert_eq!(v.of("a"), a + 1);
        let b = v.of("b");
        v.bump_all();
        assert_eq!((v.of("a"), v.of("b")), (a + 2, b + 1));
    }

    #[tokio::test]
    async fn ready_waits_for_the_subscription() {
        let s = Status::new();
        assert!(matches!(
            s.ready(Duration::from_millis(10)).await,
            Err(Error::Timeout { .. })
        ));
        s.up();
        s.ready(Duration::from_millis(10)).await.unwrap();
        s.down();
        assert_eq!(
            s.stats(),
            ListenerStats {
                live: false,
                subscriptions: 1,
                invalidations: 0,
                failures: 1
            }
        );
    }
}
