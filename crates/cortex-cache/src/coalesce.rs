//! Coalescing of concurrent single-key `GET`s into one `MGET`, and of concurrent `SET`s
//! into one pipeline (single-server mode only).
//!
//! Many tasks reading through one cache each send a `GET`; the server then parses,
//! runs and answers each on its own, and the client keeps one pending reply per
//! command. Here the reads that arrive while another read is on the wire queue up, and
//! one flusher task sends whatever queued as one `MGET` (a plain `GET` for one key) on
//! the shared multiplexed connection, then answers each caller with its own value or
//! with the batch's error. Writes go the same way in a lane of their own, as one
//! pipeline of `SET k v PX ttl` (not `MSET`, which sets no expiry), each caller
//! answered with its own command's outcome.
//!
//! There is no artificial wait: a call that finds no other of its kind under way is
//! sent at once by its caller, as without coalescing, so a lone caller pays nothing.
//! Batches form only under concurrency, from the calls that arrived during the previous
//! batch's round trip.
//!
//! On a Redis Cluster nothing is coalesced: the keys of one batch would span slots and
//! masters, and one master's fault would open the breakers of keys on healthy ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use super::{Inner, RedisCache, is_dropped};
use crate::{Error, Result};

/// Most keys in one `MGET`: a bigger batch holds the server (single-threaded) longer
/// and delays the replies of every caller in it.
const MAX_BATCH: usize = 256;

/// Most batches on the wire at once, per cache. One makes the biggest batches: on the
/// bench (50 tasks, 2 cores) two or more in flight split the waiting reads into
/// smaller batches and ran 10-20 % slower.
const MAX_IN_FLIGHT: usize = 1;

/// The answer to one queued call: its outcome, or none when the flusher could not
/// send the batch for a reason that is not a redis error (the breaker is open, the
/// pool has no connection), and the caller should send the call itself, which meets
/// the same reason as a typed [`Error`](crate::Error) at once.
pub(super) type Answer<T> = Option<redis::RedisResult<T>>;

/// A call that can wait in a [`Lane`] for its batch.
pub(super) trait Request: Send + Sized + 'static {
    /// Whether its caller stopped waiting (timed out, cancelled).
    fn is_closed(&self) -> bool;
    /// Send `batch` and answer each of its callers.
    fn run(cache: RedisCache, batch: Vec<Self>) -> BoxFuture<'static, ()>;
}

/// One queued read: the Redis key and where its answer goes.
pub(super) struct GetReq {
    pub(super) key: String,
    pub(super) reply: oneshot::Sender<Answer<Option<Vec<u8>>>>,
}

/// One queued write: `SET key value PX ttl_ms`, and where its outcome goes.
pub(super) struct SetReq {
    pub(super) key: String,
    pub(super) value: Vec<u8>,
    pub(super) ttl_ms: u64,
    pub(super) reply: oneshot::Sender<Answer<()>>,
}

/// The per-cache coalescer: a lane for reads, one for writes (a batch is one command
/// kind, and a write never waits behind reads).
#[derive(Debug, Default)]
pub(super) struct Coalescer {
    pub(super) gets: Lane<GetReq>,
    pub(super) sets: Lane<SetReq>,
}

/// One kind of call: the count of those under way, and the queue of its flusher.
pub(super) struct Lane<R> {
    /// Calls under way (sent directly or queued), for the "alone?" test.
    outstanding: AtomicUsize,
    /// The flusher's queue; none until the first queued call, or after the flusher
    /// ended (its runtime shut down), when the next queued call starts another.
    queue: ArcSwapOption<mpsc::UnboundedSender<R>>,
}

impl<R> std::fmt::Debug for Lane<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("outstanding", &self.outstanding.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<R> Default for Lane<R> {
    fn default() -> Self {
        Self {
            outstanding: AtomicUsize::new(0),
            queue: ArcSwapOption::empty(),
        }
    }
}

/// Marks a call under way; unmarks it when dropped, so a cancelled caller never leaves
/// the count high.
pub(super) struct Outstanding<'a>(&'a AtomicUsize);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<R: Request> Lane<R> {
    /// Count a call in; whether another was already under way (the call should then
    /// queue), and the guard that counts it out.
    pub(super) fn enter(&self) -> (bool, Outstanding<'_>) {
        let before = self.outstanding.fetch_add(1, Ordering::AcqRel);
        (before > 0, Outstanding(&self.outstanding))
    }

    /// Queue `req` for the flusher of `cache`; false when no flusher can take it (no
    /// runtime to start one on): the caller then sends it itself.
    pub(super) fn submit(&self, cache: &RedisCache, mut req: R) -> bool {
        // Twice at most: the current flusher, then a fresh one if it has ended.
        for _ in 0..2 {
            if let Some(tx) = self.queue.load_full() {
                match tx.send(req) {
                    Ok(()) => return true,
                    Err(mpsc::error::SendError(back)) => {
                        req = back;
                        self.queue.compare_and_swap(&Some(tx), None);
                    }
                }
            }
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return false;
            };
            let (tx, queue) = mpsc::unbounded_channel();
            let tx = Arc::new(tx);
            let current = self.queue.compare_and_swap(&None::<Arc<_>>, Some(tx));
            if current.is_none() {
                // Ours is in: start its flusher. It holds the cache weakly, so that the
                // cache's drop closes the queue and ends it.
                handle.spawn(flush(Arc::downgrade(&cache.inner), queue));
            }
        }
        false
    }
}

/// The flusher: take what queued, send it as one batch, answer each caller. Up to
/// [`MAX_IN_FLIGHT`] batches are on the wire at once; the calls arriving meanwhile
/// make up the next batch.
async fn flush<R: Request>(cache: Weak<Inner>, mut queue: mpsc::UnboundedReceiver<R>) {
    let mut running = FuturesUnordered::new();
    let mut open = true;
    while open || !running.is_empty() {
        let mut batch: Vec<R> = Vec::new();
        let got = std::future::poll_fn(|cx| {
            // Finished batches make room; their futures answered their callers.
            while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
            if open && running.len() < MAX_IN_FLIGHT {
                match queue.poll_recv_many(cx, &mut batch, MAX_BATCH) {
                    Poll::Ready(0) => open = false,
                    Poll::Ready(_) => return Poll::Ready(true),
                    Poll::Pending => {}
                }
            }
            if !open && running.is_empty() {
                Poll::Ready(false)
            } else {
                Poll::Pending
            }
        })
        .await;
        if !got {
            continue;
        }
        // Callers whose wait ended (timed out, cancelled) no longer need their call; a
        // write not sent yet is dropped too: its caller was answered with an error.
        batch.retain(|r| !r.is_closed());
        if batch.is_empty() {
            continue;
        }
        let Some(inner) = cache.upgrade() else {
            return;
        };
        running.push(R::run(RedisCache { inner }, batch));
    }
}

/// Answer every caller of a batch from `outcome`: each its own, or the batch's error.
fn answer_all<T: Send, I: IntoIterator<Item = redis::RedisResult<T>>>(
    replies: impl IntoIterator<Item = oneshot::Sender<Answer<T>>>,
    outcome: Result<redis::RedisResult<I>>,
) {
    match outcome {
        Ok(Ok(values)) => {
            for (reply, value) in replies.into_iter().zip(values) {
                let _ = reply.send(Some(value));
            }
        }
        Ok(Err(e)) => {
            for reply in replies {
                let _ = reply.send(Some(Err(e.clone())));
            }
        }
        Err(_) => {
            for reply in replies {
                let _ = reply.send(None);
            }
        }
    }
}

impl Request for GetReq {
    fn is_closed(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(cache: RedisCache, batch: Vec<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let outcome = cache.fetch(&batch).await;
            let outcome = outcome.map(|r| r.map(|values| values.into_iter().map(Ok)));
            answer_all(batch.into_iter().map(|r| r.reply), outcome);
        })
    }
}

impl Request for SetReq {
    fn is_closed(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(cache: RedisCache, batch: Vec<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let outcome = cache.store(&batch).await;
            answer_all(batch.into_iter().map(|r| r.reply), outcome);
        })
    }
}

impl RedisCache {
    /// The values of `batch`'s keys, in order: `GET` for one, `MGET` for more, sent once
    /// more on a fresh connection if the shared one was dropped (reads are harmless to
    /// repeat). A connection fault drops the shared connection and opens the breaker,
    /// as for any command; the error goes to every caller of the batch. The outer error:
    /// no connection to send on (breaker open, pool empty).
    async fn fetch(&self, batch: &[GetReq]) -> Result<redis::RedisResult<Vec<Option<Vec<u8>>>>> {
        let cmd = if let [one] = batch {
            redis::cmd("GET").arg(&one.key).to_owned()
        } else {
            let mut cmd = redis::cmd("MGET");
            for r in batch {
                cmd.arg(&r.key);
            }
            cmd
        };
        let n = batch.len();
        let mut conn = self.conn().await?;
        let first = self.bounded_n(n, query(&cmd, n, &mut conn.conn)).await;
        let r = match first {
            Err(e) if is_dropped(&e) => {
                self.forget(&conn);
                let mut conn = self.fresh_conn().await?;
                let second = self.bounded_n(n, query(&cmd, n, &mut conn.conn)).await;
                self.observe(&conn, &[], second)
            }
            r => self.observe(&conn, &[], r),
        };
        Ok(r.map_err(into_redis))
    }

    /// Send `batch`'s writes: a `SET k v PX ttl` for one, a pipeline of them for more,
    /// each command's outcome its caller's. Never sent twice: a late duplicate could
    /// land after a newer write. A connection fault drops the shared connection and
    /// opens the breaker; the error goes to every caller of the batch.
    async fn store(
        &self,
        batch: &[SetReq],
    ) -> Result<redis::RedisResult<Vec<redis::RedisResult<()>>>> {
        let mut conn = self.conn().await?;
        let n = batch.len();
        let r = if let [one] = batch {
            let cmd = redis::cmd("SET")
                .arg(&one.key)
                .arg(&one.value)
                .arg("PX")
                .arg(one.ttl_ms)
                .to_owned();
            let r = self.bounded(cmd.query_async::<()>(&mut conn.conn)).await;
            self.observe(&conn, &[], r).map(|()| vec![Ok(())])
        } else {
            let mut pipe = redis::pipe();
            // Each command's error stays its own caller's.
            pipe.ignore_errors();
            for r in batch {
                pipe.cmd("SET")
                    .arg(&r.key)
                    .arg(&r.value)
                    .arg("PX")
                    .arg(r.ttl_ms);
            }
            let r = self
                .bounded_n(n, pipe.query_async::<Vec<redis::Value>>(&mut conn.conn))
                .await;
            self.observe(&conn, &[], r).and_then(|values| {
                if values.len() == n {
                    Ok(values
                        .into_iter()
                        .map(|v| match v {
                            redis::Value::ServerError(e) => Err(redis::RedisError::from(e)),
                            _ => Ok(()),
                        })
                        .collect())
                } else {
                    Err(Error::Redis(redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "a pipeline answered a different number of replies than commands",
                    ))))
                }
            })
        };
        Ok(r.map_err(into_redis))
    }
}

/// The redis error of a failed batch (`observe` makes only `Error::Redis`).
fn into_redis(e: Error) -> redis::RedisError {
    match e {
        Error::Redis(e) => e,
        other => redis::RedisError::from(std::io::Error::other(other.to_string())),
    }
}

/// `cmd` (a `GET` or an `MGET` of `n` keys) on `conn`, as one value per key.
async fn query(
    cmd: &redis::Cmd,
    n: usize,
    conn: &mut cortex_pool::RedisConnection,
) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
    if n == 1 {
        let v: Option<Vec<u8>> = cmd.query_async(conn).await?;
        Ok(vec![v])
    } else {
        let v: Vec<Option<Vec<u8>>> = cmd.query_async(conn).await?;
        if v.len() == n {
            Ok(v)
        } else {
            Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "MGET answered a different number of values than keys asked",
            )))
        }
    }
}
