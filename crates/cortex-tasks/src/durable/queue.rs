use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cortex_pool::{RedisManagedConnection, RedisPool};
use serde::Serialize;

use super::config::{DurableConfig, key_prefix, legacy_key_prefix};
use super::connect::RedisTarget;
use super::status::parse_info;
use cortex_support::backoff::random_u64;

use super::redis_util::{Keys, bounded, ms, now_ms};
use super::scripts::Scripts;
use crate::{Error, Priority, QueueStats, Result, TaskId, TaskInfo, TraceParent};

/// A task that failed its last attempt, as kept in the dead-letter stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The task; id 0 for a malformed stream entry parked here (its `error` quotes
    /// the entry's id field).
    pub id: TaskId,
    /// Its handler name.
    pub handler: String,
    /// Its payload (`null` if it was not valid JSON).
    pub payload: serde_json::Value,
    /// The error of the last attempt.
    pub error: String,
    /// Attempts started.
    pub attempts: u32,
}

/// The producer and status side of a durable queue. Cheap to clone: clones share one
/// pipelined connection.
#[derive(Clone)]
pub struct DurableQueue {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: RedisPool,
    pub(crate) conn: RedisManagedConnection,
    pub(crate) config: DurableConfig,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
}

impl fmt::Debug for DurableQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableQueue")
            .field("name", &self.inner.config.name)
            .field("group", &self.inner.config.group)
            .finish_non_exhaustive()
    }
}

impl DurableQueue {
    /// Connects to Redis and creates the streams and the consumer group if they do
    /// not exist yet.
    ///
    /// `redis` is where the connections come from: a [`RedisConfig`](cortex_pool::RedisConfig)
    /// or a [`RedisPool`](cortex_pool::RedisPool), the one place a URL becomes a
    /// connection (with its TLS settings), so the queue connects exactly as the rest of
    /// the application. A URL (`&str`, `&String`) is accepted as well and goes through
    /// the same place, as a `RedisConfig` with that URL and default settings.
    ///
    /// The mode follows the config: one server at `REDIS_URL`, or a Redis Cluster when
    /// `REDIS_CLUSTER_URLS` is set. Every key of a queue hashes to one slot, so on a
    /// cluster a queue lives on the master serving that slot, and its connections
    /// follow the slot to the new master after a failover.
    ///
    /// The queue keeps one multiplexed connection
    /// ([`RedisPool::dedicated_connection_with`](cortex_pool::RedisPool::dedicated_connection_with)),
    /// shared by its clones and its workers; each worker adds one of its own for
    /// blocking reads. Connections reconnect by themselves after Redis comes back;
    /// every call is bounded by `op_timeout`.
    ///
    /// ```no_run
    /// use cortex_pool::{RedisConfig, RedisPool};
    /// use cortex_tasks::durable::{DurableConfig, DurableQueue};
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = RedisConfig::from_env()?;
    /// let queue = DurableQueue::connect(&redis, DurableConfig::from_env()?).await?;
    /// // Or share a pool's client (and its settings) with the rest of the service:
    /// let pool = RedisPool::new(redis).await?;
    /// let same = DurableQueue::connect(&pool, queue.config().clone()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a rejected setting or URL (the URL redacted);
    /// [`Error::Pool`] when Redis cannot be reached within the Redis config's
    /// `pool_timeout`; [`Error::Redis`] when it refuses a command.
    pub async fn connect<R>(redis: &R, config: DurableConfig) -> Result<Self>
    where
        R: RedisTarget + ?Sized,
    {
        config.validate()?;
        let pool = redis.redis_pool().await?;
        Self::with_pool(pool, config).await
    }

    async fn with_pool(pool: RedisPool, config: DurableConfig) -> Result<Self> {
        let keys = Keys::new(key_prefix(&config.name)?);
        let conn = pool.dedicated_connection_with(config.op_timeout).await?;
        let queue = Self {
            inner: Arc::new(Inner {
                pool,
                conn,
                keys,
                config,
                scripts: Scripts::new(),
            }),
        };
        queue.refuse_legacy_keys().await?;
        queue.ensure_groups().await?;
        Ok(queue)
    }

    /// Refuses to start over tasks of the previous key layout (`cortex:tasks:<name>:…`,
    /// no hash tag): this release never reads them, so starting would leave them
    /// behind unseen. Counts the entries of the old streams and dead-letter stream in
    /// one pipelined round trip, bounded by `op_timeout`; anything else there (counters,
    /// heartbeats, records of finished tasks) is history and does not hold a start up.
    async fn refuse_legacy_keys(&self) -> Result<()> {
        let old = legacy_key_prefix(&self.inner.config.name)?;
        let mut pipe = redis::pipe();
        for p in Priority::ALL {
            pipe.cmd("XLEN").arg(format!("{old}stream:{}", p.as_str()));
        }
        pipe.cmd("XLEN").arg(format!("{old}dead"));
        pipe.ignore_errors();
        let mut conn = self.conn();
        let replies: Vec<redis::RedisResult<u64>> = if conn.is_cluster() {
            // The old keys hash to different slots (no tag), so on a cluster each goes
            // on its own to its slot's master; a failed one fails the start, as in the
            // pipeline (not swallowed by the cross-slot split).
            let mut replies = Vec::with_capacity(4);
            for cmd in pipe.cmd_iter() {
                let reply = bounded(self.inner.config.op_timeout, "XLEN", async {
                    Ok(cmd.query_async::<u64>(&mut conn).await)
                })
                .await?;
                replies.push(reply);
            }
            replies
        } else {
            self.bounded("XLEN", pipe.query_async(&mut conn)).await?
        };
        let mut counts = [0u64; 4];
        for (count, reply) in counts.iter_mut().zip(replies) {
            match reply {
                Ok(n) => *count = n,
                // Not a stream: someone else's key, no task of ours. MOVED/ASK: a
                // plain connection to one cluster node that does not serve the old
                // key's slot; the old layout could not run on a cluster (its keys
                // spanned slots), so no task was ever stored there that way.
                Err(e) if matches!(e.code(), Some("WRONGTYPE" | "MOVED" | "ASK")) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let tasks = counts[..3].iter().sum::<u64>();
        let dead_letters = counts[3];
        if tasks + dead_letters == 0 {
            return Ok(());
        }
        Err(Error::LegacyKeys {
            queue: self.inner.config.name.clone(),
            old_prefix: old,
            tasks,
            dead_letters,
        })
    }

    /// A connection of its own for blocking reads (`XREADGROUP BLOCK`): on the shared
    /// multiplexed one a blocking read would hold up every other command. Made by the
    /// same pool as the shared one, in the same mode, waiting up to the block time
    /// plus `op_timeout` for an answer.
    pub(crate) async fn blocking_connection(&self) -> Result<RedisManagedConnection> {
        let cfg = &self.inner.config;
        Ok(self
            .inner
            .pool
            .dedicated_connection_with(cfg.block.saturating_add(cfg.op_timeout))
            .await?)
    }

    /// The settings this queue was opened with.
    pub fn config(&self) -> &DurableConfig {
        &self.inner.config
    }

    pub(crate) fn conn(&self) -> RedisManagedConnection {
        self.inner.conn.clone()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) async fn bounded<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        bounded(self.inner.config.op_timeout, what, fut).await
    }

    /// Creates the three streams and the group; an existing group is kept.
    pub(crate) async fn ensure_groups(&self) -> Result<()> {
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for key in &self.inner.keys.streams {
            // From "0", not "$": entries added before the group existed (after a purge)
            // must still be delivered.
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(&self.inner.config.group)
                .arg("0")
                .arg("MKSTREAM");
        }
        pipe.ignore_errors();
        let replies: Vec<redis::RedisResult<redis::Value>> = self
            .bounded("XGROUP CREATE", pipe.query_async(&mut conn))
            .await?;
        for r in replies {
            if let Err(e) = r
                && e.code() != Some("BUSYGROUP")
            {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Enqueues one task for `handler` at [`Priority::Normal`].
    ///
    /// # Errors
    /// [`Error::Payload`] when `payload` does not serialize; [`Error::Redis`] when Redis
    /// refused the command (nothing was enqueued); [`Error::EnqueueUnconfirmed`] when no
    /// reply came within `op_timeout` or the connection dropped: the task may be enqueued
    /// anyway (see [`enqueue_many`](Self::enqueue_many)).
    pub async fn enqueue<P: Serialize>(&self, handler: &str, payload: &P) -> Result<TaskId> {
        self.enqueue_with(handler, payload, Priority::Normal).await
    }

    /// Enqueues one task at `priority`.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub async fn enqueue_with<P: Serialize>(
        &self,
        handler: &str,
        payload: &P,
        priority: Priority,
    ) -> Result<TaskId> {
        let ids = self
            .enqueue_many(handler, std::slice::from_ref(payload), priority)
            .await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| Error::Failed("enqueue returned no id".to_owned()))
    }

    /// Enqueues many tasks in one atomic round trip: all of them or none.
    ///
    /// Each task gets a random id that no existing task record uses (Redis checks, and
    /// the ids are drawn again in the rare case one is taken).
    ///
    /// # Errors
    /// - [`Error::Payload`] when a payload does not serialize: nothing was sent.
    /// - [`Error::Redis`] when Redis answered with an error (out of memory, a wrong key
    ///   type, ...) or the connection was refused: nothing was enqueued.
    /// - [`Error::EnqueueUnconfirmed`] when the command was sent but no reply came within
    ///   `op_timeout` (or the connection dropped): Redis may have enqueued the tasks, or
    ///   may still do so, under the ids the error carries. Enqueueing again may run them
    ///   twice; to find out, look the ids up with [`status`](Self::status) once Redis
    ///   answers again (a record means they are enqueued, all of them).
    pub async fn enqueue_many<P: Serialize>(
        &self,
        handler: &str,
        payloads: &[P],
        priority: Priority,
    ) -> Result<Vec<TaskId>> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let json = payloads
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let mut drawn = HashSet::with_capacity(json.len());
        let ids = json.iter().map(|_| fresh_id(&mut drawn)).collect();
        self.enqueue_ids(handler, &json, priority, ids).await
    }

    /// Enqueues `json` payloads under `ids`, drawing new ids for those a record uses.
    pub(crate) async fn enqueue_ids(
        &self,
        handler: &str,
        json: &[String],
        priority: Priority,
        mut ids: Vec<TaskId>,
    ) -> Result<Vec<TaskId>> {
        // Names this request in its records, so that the same request sent again
        // after a lost reply enqueues nothing more (see the enqueue script).
        let token = format!("{:016x}", random_u64());
        for _ in 0..8 {
            let taken = self
                .enqueue_round(handler, json, priority, &ids, &token)
                .await?;
            if taken.is_empty() {
                return Ok(ids);
            }
            tracing::debug!(
                count = taken.len(),
                "durable tasks: task ids already in use; drawing others"
            );
            let mut drawn: HashSet<u64> = ids.iter().map(|id| id.as_u64()).collect();
            for i in taken {
                let fresh = fresh_id(&mut drawn);
                if let Some(slot) = ids.get_mut(i) {
                    *slot = fresh;
                }
            }
        }
        Err(Error::Failed(
            "enqueue: could not draw unused task ids in 8 rounds".to_owned(),
        ))
    }

    /// One run of the enqueue script for `ids` under the request `token`: the
    /// positions of ids a record of another request uses (nothing written then).
    pub(crate) async fn enqueue_round(
        &self,
        handler: &str,
        json: &[String],
        priority: Priority,
        ids: &[TaskId],
        token: &str,
    ) -> Result<Vec<usize>> {
        let keys = &self.inner.keys;
        // The enqueuing code's trace context goes with the tasks (see `TraceParent`).
        let traceparent = TraceParent::current();
        let mut inv = self.inner.scripts.enqueue.key(keys.stream(priority));
        inv.key(&keys.stats)
            .arg(handler)
            .arg(priority.as_str())
            .arg(now_ms())
            .arg(traceparent.as_ref().map_or("", TraceParent::as_str))
            .arg(token);
        for (id, payload) in ids.iter().zip(json) {
            inv.key(keys.task(*id)).arg(id.to_string()).arg(payload);
        }
        let mut conn = self.conn();
        self.bounded("enqueue", inv.invoke_async(&mut conn))
            .await
            .map_err(|e| unconfirmed(e, ids))
    }

    /// The current state of a task.
    ///
    /// # Errors
    /// [`Error::UnknownTask`] when no record exists (never enqueued, purged, or expired
    /// `result_ttl` after it finished); [`Error::Redis`].
    pub async fn status(&self, id: TaskId) -> Result<TaskInfo> {
        let mut conn = self.conn();
        let key = self.inner.keys.task(id);
        let map: HashMap<String, String> = self
            .bounded(
                "HGETALL",
                redis::cmd("HGETALL").arg(&key).query_async(&mut conn),
            )
            .await?;
        parse_info(id, &map).ok_or(Error::UnknownTask(id))
    }

    /// Polls [`status`](Self::status) until the task is finished or `timeout` passed,
    /// and returns the last snapshot: check `status.is_finished()` to tell the two apart.
    ///
    /// # Errors
    /// As [`status`](Self::status).
    pub async fn wait(&self, id: TaskId, timeout: Duration) -> Result<TaskInfo> {
        let until = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let info = self.status(id).await?;
            let now = tokio::time::Instant::now();
            if info.status.is_finished() || now >= until {
                return Ok(info);
            }
            tokio::time::sleep(pause.min(until - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Cancels a task.
    ///
    /// A queued (or retrying) task becomes `cancelled` at once, and a worker that later
    /// reads it acknowledges it without running it. A running task gets a cancel
    /// request: its worker aborts it at its next check (about every 500 ms) and records
    /// it as `cancelled`.
    ///
    /// # Errors
    /// [`Error::UnknownTask`], [`Error::AlreadyFinished`], [`Error::Redis`].
    pub async fn cancel(&self, id: TaskId) -> Result<()> {
        let mut conn = self.conn();
        let keys = &self.inner.keys;
        let mut inv = self.inner.scripts.cancel.key(keys.task(id));
        inv.key(&keys.stats)
            .arg(now_ms())
            .arg(ms(self.inner.config.result_ttl));
        let r: String = self.bounded("cancel", inv.invoke_async(&mut conn)).await?;
        match r.as_str() {
            "unknown" => Err(Error::UnknownTask(id)),
            "finished" => Err(Error::AlreadyFinished(id)),
            _ => Ok(()),
        }
    }

    /// Counters of this queue, across every process.
    ///
    /// `queued` counts stream entries not yet acknowledged: never delivered plus
    /// delivered and pending (those are also counted in `running`). `workers` counts
    /// workers whose heartbeat is younger than twice the visibility timeout.
    ///
    /// # Errors
    /// [`Error::Redis`].
    pub async fn stats(&self) -> Result<QueueStats> {
        let mut conn = self.conn();
        let keys = &self.inner.keys;
        let (len, pending) = self.counts().await?;
        let alive_since =
            now_ms().saturating_sub(ms(self.inner.config.visibility_timeout).saturating_mul(2));
        let (counters, workers): (HashMap<String, u64>, u64) = self
            .bounded(
                "stats",
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(&keys.stats)
                    .cmd("ZCOUNT")
                    .arg(&keys.workers)
                    .arg(alive_since)
                    .arg("+inf")
                    .query_async(&mut conn),
            )
            .await?;
        let c = |k: &str| counters.get(k).copied().unwrap_or(0);
        Ok(QueueStats {
            queued: len,
            running: pending,
            workers,
            enqueued: c("enqueued"),
            completed: c("completed"),
            failed: c("failed"),
            cancelled: c("cancelled"),
            retried: c("retried"),
        })
    }

    /// Stream entries not yet acknowledged (every priority), and of them those
    /// delivered and pending: the counts script of [`stats`](Self::stats), bounded by
    /// `op_timeout`.
    async fn counts(&self) -> Result<(u64, u64)> {
        let mut conn = self.conn();
        let mut inv = self.inner.scripts.counts.prepare_invoke();
        for s in &self.inner.keys.streams {
            inv.key(s);
        }
        inv.arg(&self.inner.config.group);
        self.bounded("stats", inv.invoke_async(&mut conn)).await
    }

    /// What a worker's gauges show: tasks accepted and not yet finished (the `queued`
    /// of [`stats`](Self::stats)) and dead letters kept now. Two calls, each bounded by
    /// `op_timeout`, reading only this queue's keys.
    pub(crate) async fn sample(&self) -> Result<(u64, u64)> {
        let (len, _) = self.counts().await?;
        let mut conn = self.conn();
        let dead: u64 = self
            .bounded(
                "XLEN",
                redis::cmd("XLEN")
                    .arg(&self.inner.keys.dead)
                    .query_async(&mut conn),
            )
            .await?;
        Ok((len, dead))
    }

    /// The oldest `count` dead letters.
    ///
    /// # Errors
    /// [`Error::Redis`].
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>> {
        let mut conn = self.conn();
        let reply: redis::streams::StreamRangeReply = self
            .bounded(
                "XRANGE",
                redis::cmd("XRANGE")
                    .arg(&self.inner.keys.dead)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(reply
            .ids
            .iter()
            .map(|e| {
                let id = e
                    .get::<String>("id")
                    .and_then(|id| id.parse().ok())
                    .unwrap_or(TaskId::from_u64(0));
                DeadLetter {
                    id,
                    handler: e.get("handler").unwrap_or_default(),
                    payload: e
                        .get::<String>("payload")
                        .and_then(|p| serde_json::from_str(&p).ok())
                        .unwrap_or(serde_json::Value::Null),
                    error: e.get("error").unwrap_or_default(),
                    attempts: e.get("attempts").unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Deletes every key of this queue (`SCAN` + `UNLINK`, never `KEYS`): tasks, streams,
    /// group, counters and dead letters. Running workers recreate the group.
    ///
    /// On a cluster every master is scanned (`SCAN` sees one node's keys); the keys
    /// found all share the queue's slot, so one `UNLINK` per batch is one slot.
    ///
    /// # Errors
    /// [`Error::Redis`]; [`Error::Pool`] when a master cannot be reached or a failover
    /// is under way (a master of some slots is down): try again.
    pub async fn purge(&self) -> Result<()> {
        let pattern = format!("{}*", self.inner.keys.prefix);
        for mut conn in self.inner.pool.masters().await? {
            self.purge_node(&mut conn, &pattern).await?;
        }
        Ok(())
    }

    /// `SCAN` + `UNLINK` of the keys matching `pattern` on one node.
    async fn purge_node(
        &self,
        conn: &mut cortex_pool::RedisConnection,
        pattern: &str,
    ) -> Result<()> {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .bounded(
                    "SCAN",
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(conn),
                )
                .await?;
            if !keys.is_empty() {
                self.bounded(
                    "UNLINK",
                    redis::cmd("UNLINK").arg(&keys).query_async::<()>(conn),
                )
                .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// A random id not in `drawn` (and now in it).
fn fresh_id(drawn: &mut HashSet<u64>) -> TaskId {
    loop {
        let id = random_u64();
        if drawn.insert(id) {
            return TaskId::from_u64(id);
        }
    }
}

/// An error from the enqueue script: when Redis answered (or was never reached),
/// nothing was written; otherwise the outcome is unknown.
fn unconfirmed(e: Error, ids: &[TaskId]) -> Error {
    match e {
        Error::Redis(r) if r.code().is_none() && !r.is_connection_refusal() => {
            Error::EnqueueUnconfirmed {
                ids: ids.to_vec(),
                source: r,
            }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskStatus;

    /// An id that a record already uses is never handed out again (its record
    /// would be overwritten); the enqueue draws another one, still in one atomic step.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enqueue_draws_new_ids_for_ids_in_use() {
        let url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let config = DurableConfig {
            name: format!(
                "unit-collide-{}-{}",
                std::process::id(),
                now_ms() % 1_000_000
            ),
            ..DurableConfig::default()
        };
        let redis = cortex_pool::RedisConfig {
            url,
            ..cortex_pool::RedisConfig::default()
        };
        let q = DurableQueue::connect(&redis, config)
            .await
            .unwrap_or_else(|e| panic!("cannot reach Redis at {} ({e}); set REDIS_URL", redis.url));
        let taken = TaskId::from_u64(0xc0ff_ee00_0000_0001);
        let free = TaskId::from_u64(0xc0ff_ee00_0000_0002);
        let mut conn = q.conn();
        redis::cmd("HSET")
            .arg(q.keys().task(taken))
            .arg("status")
            .arg("completed")
            .arg("result")
            .arg("\"kept\"")
            .query_async::<()>(&mut conn)
            .await
            .expect("HSET");
        let ids = q
            .enqueue_ids(
                "h",
                &["1".to_owned(), "2".to_owned()],
                Priority::Normal,
                vec![taken, free],
            )
            .await
            .expect("enqueue");
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], taken, "an id in use was handed out again");
        assert_eq!(ids[1], free);
        let old = q.status(taken).await.expect("status");
        assert_eq!(
            (old.status, old.result),
            (TaskStatus::Completed, Some(serde_json::json!("kept")))
        );
        for id in &ids {
            assert_eq!(
                q.status(*id).await.expect("status").status,
                TaskStatus::Queued
            );
        }
        let s = q.stats().await.expect("stats");
        assert_eq!((s.enqueued, s.queued), (2, 2), "{s:?}");
        q.purge().await.expect("purge");
    }

    /// The same enqueue request arriving twice (a cluster client resends a command
    /// whose connection broke after it ran) enqueues its tasks once: the second run
    /// finds the records of its own request and writes nothing, rather than reporting
    /// the ids taken (which would enqueue the tasks again under new ids).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_enqueue_request_sent_twice_enqueues_once() {
        let url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let config = DurableConfig {
            name: format!(
                "unit-resend-{}-{}",
                std::process::id(),
                now_ms() % 1_000_000
            ),
            ..DurableConfig::default()
        };
        let q = DurableQueue::connect(url.as_str(), config)
            .await
            .unwrap_or_else(|e| panic!("cannot reach Redis at {url} ({e}); set REDIS_URL"));
        let json = ["1".to_owned(), "2".to_owned()];
        let ids = [
            TaskId::from_u64(random_u64()),
            TaskId::from_u64(random_u64()),
        ];
        for round in 0..2 {
            let taken = q
                .enqueue_round("h", &json, Priority::Normal, &ids, "req-1")
                .await
                .expect("enqueue");
            assert!(taken.is_empty(), "round {round}: taken {taken:?}");
        }
        // Another request with the same ids is told they are taken.
        let taken = q
            .enqueue_round("h", &json, Priority::Normal, &ids, "req-2")
            .await
            .expect("enqueue");
        assert_eq!(taken, vec![0, 1]);
        let s = q.stats().await.expect("stats");
        assert_eq!((s.enqueued, s.queued), (2, 2), "{s:?}");
        q.purge().await.expect("purge");
    }
}
