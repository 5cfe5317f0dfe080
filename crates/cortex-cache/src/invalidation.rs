//! What keeps a [`TwoTierCache`](crate::TwoTierCache)'s memory tier coherent: versions
//! that stop a stale fill from outliving a newer write, and the listener that applies
//! other processes' invalidations, bounded in every wait, with a keepalive, and
//! resubscribing (and clearing) after any loss of its connection.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cortex_pool::{NodeRole, RedisConfig, RedisNode, RedisPool};
use cortex_support::backoff::Backoff;
use futures_util::StreamExt;
use redis::ConnectionAddr;
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
    /// `host:port` of the cluster node subscribed on now (cluster mode only).
    node: std::sync::Mutex<Option<String>>,
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
            node: std::sync::Mutex::new(None),
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

    fn set_node(&self, node: Option<String>) {
        if let Ok(mut n) = self.node.lock() {
            *n = node;
        }
    }

    /// The cluster node subscribed on now, `host:port`.
    pub(crate) fn node(&self) -> Option<String> {
        self.node.lock().ok().and_then(|n| n.clone())
    }

    fn down(&self) {
        self.set_node(None);
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

/// Where the listener subscribes.
pub(crate) enum Source {
    /// One server, through this client (the pool's own).
    Single(Box<redis::Client>),
    /// A Redis Cluster: any node that is up will do, since the cluster relays every
    /// classic `PUBLISH` to every node over its bus. The pool tells which nodes are up.
    Cluster(RedisPool),
}

/// A live subscription: its two halves, and the cluster node it is on.
type Subscription = (PubSubSink, PubSubStream, Option<String>);

/// Subscribe to `channel` and evict what other processes changed, for as long as the
/// memory tier lives. Every wait is bounded; a connection that closes or stops
/// answering the keepalive is replaced, with backoff, and every (re)subscription clears
/// the memory tier first. On a cluster a lost node is replaced by another node that is
/// up (the lost one is tried last).
pub(crate) async fn listen<L: Cache>(
    source: Source,
    channel: String,
    origin: String,
    local: Weak<Local<L>>,
) {
    let mut attempt = 0;
    // Spreads the listeners of many processes over the masters of a cluster.
    let spread = foldhash::fast::FixedState::default().hash_one(&origin);
    let mut lost: Option<String> = None;
    loop {
        let subscribed = match &source {
            Source::Single(client) => subscribe(client, &channel)
                .await
                .map(|(sink, stream)| (sink, stream, None)),
            Source::Cluster(pool) => {
                subscribe_cluster(pool, &channel, spread, lost.as_deref()).await
            }
        };
        let Some(tier) = local.upgrade() else { return };
        match subscribed {
            Ok((sink, stream, node)) => {
                attempt = 0;
                // Invalidations sent while we were not subscribed are lost: start clean
                // (before going live, so no copy made meanwhile survives).
                if let Err(e) = tier.evict_all().await {
                    tracing::warn!(%channel, error = %cortex_support::error_chain(&e), "memory tier not cleared on subscribe");
                }
                tier.status.set_node(node.clone());
                tier.status.up();
                drop(tier);
                let why = pump(sink, stream, &local, &origin).await;
                let Some(tier) = local.upgrade() else { return };
                tier.status.down();
                tracing::warn!(%channel, node = node.as_deref().unwrap_or(""), reason = %why, "invalidation subscription lost; resubscribing");
                lost = node;
            }
            Err(why) => {
                tier.status.failures.fetch_add(1, Relaxed);
                tracing::debug!(%channel, reason = %why, "invalidation subscribe failed; retrying");
            }
        }
        tokio::time::sleep(BACKOFF.delay(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// `SUBSCRIBE channel` on a new connection of `client`, within [`SUBSCRIBE_TIMEOUT`].
async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> std::result::Result<(PubSubSink, PubSubStream), String> {
    let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    })
    .await;
    match subscribed {
        Ok(Ok(halves)) => Ok(halves),
        Ok(Err(e)) => Err(cortex_support::error_chain(&e)),
        Err(_) => Err(format!("no subscription within {SUBSCRIBE_TIMEOUT:?}")),
    }
}

/// Subscribe on the first node of the cluster that takes it: the nodes up as the pool
/// sees them now, masters first (starting at the `spread`-th), then replicas, the node
/// just `lost` last; the pool's seeds when the cluster cannot be asked.
async fn subscribe_cluster(
    pool: &RedisPool,
    channel: &str,
    spread: u64,
    lost: Option<&str>,
) -> std::result::Result<Subscription, String> {
    let config = pool.config();
    let Some(seed) = config.cluster_urls.first() else {
        return Err("no cluster seed configured".to_owned());
    };
    // A client of the first seed carries the credentials and TLS settings every node
    // is reached with; only its address changes.
    let base = RedisConfig {
        url: seed.clone(),
        cluster_urls: Vec::new(),
        ..config.clone()
    }
    .client()
    .map_err(|e| cortex_support::error_chain(&e))?;
    let base = base.get_connection_info().clone();
    let mut targets: Vec<(String, redis::ConnectionInfo)> = Vec::new();
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, pool.nodes()).await {
        Ok(Ok(nodes)) => {
            for role in [NodeRole::Master, NodeRole::Replica] {
                let mut group: Vec<&RedisNode> =
                    nodes.iter().filter(|n| n.up && n.role == role).collect();
                group.sort_by(|a, b| a.address.cmp(&b.address));
                if !group.is_empty() {
                    let start = usize::try_from(spread % group.len() as u64).unwrap_or(0);
                    group.rotate_left(start);
                }
                for node in group {
                    if let Some(info) = at_address(&base, &node.address) {
                        targets.push((node.address.clone(), info));
                    }
                }
            }
        }
        // The cluster could not be asked: the seeds, as configured.
        Ok(Err(_)) | Err(_) => {
            for url in &config.cluster_urls {
                let client = RedisConfig {
                    url: url.clone(),
                    cluster_urls: Vec::new(),
                    ..config.clone()
                }
                .client();
                if let Ok(client) = client {
                    let info = client.get_connection_info().clone();
                    targets.push((address_of(&info), info));
                }
            }
        }
    }
    if let Some(lost) = lost
        && let Some(i) = targets.iter().position(|(a, _)| a == lost)
    {
        let t = targets.remove(i);
        targets.push(t);
    }
    let mut why = "no node of the cluster is up".to_owned();
    for (address, info) in targets {
        let client = match redis::Client::open(info) {
            Ok(c) => c,
            Err(e) => {
                why = format!("{address}: {}", cortex_support::error_chain(&e));
                continue;
            }
        };
        match subscribe(&client, channel).await {
            Ok((sink, stream)) => return Ok((sink, stream, Some(address))),
            Err(e) => why = format!("{address}: {e}"),
        }
    }
    Err(why)
}

/// `info` pointed at `address` (`host:port`), everything else kept; `None` for an
/// address that is not `host:port` or a connection that is not TCP.
fn at_address(info: &redis::ConnectionInfo, address: &str) -> Option<redis::ConnectionInfo> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port: u16 = port.parse().ok()?;
    let addr = match info.addr() {
        ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host, port),
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => return None,
    };
    Some(info.clone().set_addr(addr))
}

/// `host:port` of a TCP connection, for logs and [`Status::node`].
fn address_of(info: &redis::ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => format!("{other:?}"),
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
    source: Source,
    channel: String,
    origin: String,
    local: &Arc<Local<L>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(listen(source, channel, origin, Arc::downgrade(local)))
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
