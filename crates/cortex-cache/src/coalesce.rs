//! Coalescing of concurrent single-key `GET`s into one `MGET` (single-server mode only).
//!
//! Many tasks reading through one cache each send a `GET`; the server then parses,
//! runs and answers each on its own, and the client keeps one pending reply per
//! command. Here the reads that arrive while another read is on the wire queue up, and
//! one flusher task sends whatever queued as one `MGET` (a plain `GET` for one key) on
//! the shared multiplexed connection, then answers each caller with its own value or
//! with the batch's error.
//!
//! There is no artificial wait: a read that finds no other read under way is sent at
//! once by its caller, as without coalescing, so a lone caller pays nothing. Batches
//! form only under concurrency, from the reads that arrived during the previous batch's
//! round trip.
//!
//! On a Redis Cluster nothing is coalesced: the keys of one batch would span slots and
//! masters, and one master's fault would open the breakers of keys on healthy ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
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

/// The answer to one queued read: its value or the batch's error; none when the
/// flusher could not send the batch for a reason that is not a redis error (the
/// breaker is open, the pool has no connection), and the caller should send the read
/// itself, which meets the same reason as a typed [`Error`](crate::Error) at once.
pub(super) type Answer = Option<redis::RedisResult<Option<Vec<u8>>>>;

/// One queued read: the Redis key and where its answer goes.
pub(super) struct GetReq {
    key: String,
    reply: oneshot::Sender<Answer>,
}

/// The per-cache state of the `GET` coalescer.
#[derive(Debug, Default)]
pub(super) struct Coalescer {
    /// Reads under way (sent directly or queued), for the "alone?" test.
    outstanding: AtomicUsize,
    /// The flusher's queue; none until the first queued read, or after the flusher
    /// ended (its runtime shut down), when the next queued read starts another.
    queue: ArcSwapOption<mpsc::UnboundedSender<GetReq>>,
}

/// Marks a read under way; unmarks it when dropped, so a cancelled caller never leaves
/// the count high.
pub(super) struct Outstanding<'a>(&'a AtomicUsize);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Coalescer {
    /// Count a read in; whether another read was already under way (the read should
    /// then queue), and the guard that counts it out.
    pub(super) fn enter(&self) -> (bool, Outstanding<'_>) {
        let before = self.outstanding.fetch_add(1, Ordering::AcqRel);
        (before > 0, Outstanding(&self.outstanding))
    }

    /// Queue a read of the Redis key `key` for the flusher of `cache`; the receiver of
    /// its answer, or an error when no flusher can take it (no runtime to start one
    /// on): the caller then sends it itself.
    pub(super) fn submit(
        &self,
        cache: &RedisCache,
        key: String,
    ) -> std::result::Result<oneshot::Receiver<Answer>, ()> {
        let (reply, rx) = oneshot::channel();
        let mut req = GetReq { key, reply };
        // Twice at most: the current flusher, then a fresh one if it has ended.
        for _ in 0..2 {
            if let Some(tx) = self.queue.load_full() {
                match tx.send(req) {
                    Ok(()) => return Ok(rx),
                    Err(mpsc::error::SendError(back)) => {
                        req = back;
                        self.queue.compare_and_swap(&Some(tx), None);
                    }
                }
            }
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return Err(());
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
        Err(())
    }
}

/// The flusher: take what queued, send it as one command, answer each caller. Up to
/// [`MAX_IN_FLIGHT`] batches are on the wire at once; the reads arriving meanwhile make
/// up the next batch.
async fn flush(cache: Weak<Inner>, mut queue: mpsc::UnboundedReceiver<GetReq>) {
    let mut running = FuturesUnordered::new();
    let mut open = true;
    while open || !running.is_empty() {
        let mut batch: Vec<GetReq> = Vec::new();
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
        // Callers whose wait ended (timed out, cancelled) no longer need their key.
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let Some(inner) = cache.upgrade() else {
            return;
        };
        running.push(answer(RedisCache { inner }, batch));
    }
}

/// Send `batch` and answer each of its callers.
async fn answer(cache: RedisCache, batch: Vec<GetReq>) {
    match cache.fetch(&batch).await {
        Ok(Ok(values)) => {
            for (req, value) in batch.into_iter().zip(values) {
                let _ = req.reply.send(Some(Ok(value)));
            }
        }
        Ok(Err(e)) => {
            for req in batch {
                let _ = req.reply.send(Some(Err(e.clone())));
            }
        }
        Err(_) => {
            for req in batch {
                let _ = req.reply.send(None);
            }
        }
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
        Ok(r.map_err(|e| match e {
            Error::Redis(e) => e,
            // `observe` makes only `Error::Redis`.
            other => redis::RedisError::from(std::io::Error::other(other.to_string())),
        }))
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
