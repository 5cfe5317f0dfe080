//! The durable backend: a task queue on Redis Streams shared by many processes.
//!
//! Producers call [`DurableQueue::enqueue`]; any number of [`Worker`]s, in any number of
//! processes, read the same streams through one consumer group. A task is acknowledged
//! only after its handler finished, so a worker that dies mid-task leaves it pending and
//! another worker reclaims it once it has been idle for the visibility timeout.
//!
//! Needs Redis 6.2 or later (`XAUTOCLAIM`, `XPENDING` ranges, `XGROUP CREATECONSUMER`).
//!
//! # How a worker reads
//!
//! Under load, one Lua script (`take`) reads up to the number of free slots, highest
//! priority first, and starts every entry it read (status `running`, `attempts` + 1), in
//! one round trip; a second, helper reader keeps another `take` in flight. Only when
//! nothing is waiting does the worker block in `XREADGROUP .. BLOCK` on a connection of
//! its own (a blocking read on the shared multiplexed socket would stall every other
//! command). That read's `COUNT` applies per stream, so it may return more entries than
//! free slots; the surplus waits in the worker (held and refreshed) and starts first.
//!
//! Outcomes are recorded in one Lua script (`finish`) per batch: whatever finished while
//! the previous batch was in flight (final status, `PEXPIRE`, dead letters, counters,
//! `XACK`, `XDEL`), all or nothing.
//!
//! # Guarantees
//!
//! * **At least once.** A task accepted by [`DurableQueue::enqueue`] runs until it gets
//!   a final status (completed, failed, cancelled), across worker crashes and Redis
//!   restarts (with persistence). A task may run more than once: when its worker died
//!   or stalled past the visibility timeout mid-run, or when an outcome could not be
//!   recorded before the worker stopped. Handlers must tolerate a second run.
//! * **One outcome, recorded with its acknowledgement.** The final status, the dead
//!   letter, the counters and the `XACK`/`XDEL` of an entry are written by one script,
//!   and only while the entry is still pending: when two workers ran the same task, the
//!   first to finish records it and the other records nothing. A task is never both
//!   completed and dead-lettered, and no counter counts it twice, even when a batch is
//!   sent again after its reply was lost.
//! * **Nothing is acknowledged unrecorded.** When Redis refuses writes (`maxmemory`
//!   with `noeviction`, `MISCONF`, a read-only replica) the finish script fails before
//!   writing anything; the entries stay pending and refreshed, the worker retries with
//!   jittered backoff (50 ms doubling to 2 s) and takes no new tasks while more than
//!   `max(2 × concurrency, 4096)` outcomes wait to be recorded.
//! * **An acknowledged task never runs again**: the start script refuses a task whose
//!   status is final.
//! * **Attempts count runs, not deliveries.** Each start is named by its worker, entry
//!   and retry number; a start sent again because its reply was lost (a timeout, a
//!   dropped connection) finds its own name and starts nothing new. Entries a lost
//!   reply delivered are found in the worker's pending list and run at once, before the
//!   visibility timeout hands them to another worker. An attempt counts as used when a
//!   worker died (or stalled past the visibility timeout) while it ran; `max_attempts`
//!   such attempts dead-letter the task as "abandoned".
//! * **Reclaiming reaches every idle entry.** `XAUTOCLAIM` scans a bounded part of the
//!   pending list per call; each worker carries the scan's cursor from call to call, so
//!   an entry of a dead worker behind any number of live ones is reclaimed. A worker
//!   only claims as many entries as it has free slots.
//! * **A reclaimed entry stays reclaimed.** Refreshes (every third of the visibility
//!   timeout) only touch entries still pending for the refreshing worker.
//! * **Bad entries are parked, not retried.** An entry whose `id` field is not a task id,
//!   or whose task record is not a hash, goes to the dead-letter stream with the error
//!   (its [`DeadLetter::id`] is 0 when the id is malformed) and the tasks around it run.
//! * **Retries stay with the worker that ran the attempt**: the entry stays pending (and
//!   refreshed) through the backoff, so a crash during the backoff loses nothing.
//! * **Enqueue is all or nothing**: a batch's records, stream entries and counter are
//!   written by one script, under ids no existing record uses. An error from Redis
//!   ([`Error::Redis`](crate::Error::Redis)) means nothing was enqueued. When no reply
//!   comes within `op_timeout` or the connection drops,
//!   [`Error::EnqueueUnconfirmed`](crate::Error::EnqueueUnconfirmed) carries the ids:
//!   the tasks may have been enqueued (all of them) or may still be; [`DurableQueue::status`]
//!   on an id says so once Redis answers. Enqueueing them again may run them twice.
//!   The same request sent again by the client after a broken connection (a cluster
//!   connection resends such a command, and the first may have run) finds its own
//!   records and enqueues nothing more.
//! * **Bounded growth.** Dead letters are capped at `dead_letter_cap` (default 100 000,
//!   `TASKS_DEAD_LETTER_CAP`; 0 keeps all): beyond it the oldest are deleted, with a
//!   warning at most once a minute and the `durable.dead_trimmed{queue}` counter. Task
//!   records expire `result_ttl` after they finish, and acknowledged entries are
//!   deleted. Consumers with no pending entry idle for twice the visibility timeout are
//!   removed from the group, and heartbeats that old from the `workers` set.
//!
//! # Keys
//!
//! Every key of a queue named `q` starts with [`key_prefix`]`("q")`, `cortex:tasks:{q}:`,
//! braces included (under [`Component::Tasks`](cortex_support::keyspace::Component::Tasks)'s
//! reserved prefix; a queue name cannot hold `:`, braces or glob characters, so no
//! queue's keys fall under another's prefix). `{q}` is a Redis Cluster hash tag: every
//! key of the queue hashes to the slot of `q`, so on a cluster each script and
//! multi-key command of the queue finds all its keys on one master. Each script gets
//! its keys in `KEYS`, except the task records `take` starts, whose ids it reads from
//! the streams (it checks their prefix carries the streams' tag). Keys of the layout
//! without the tag (`cortex:tasks:q:…`, earlier releases) are never read: a queue whose
//! old streams still hold entries refuses to start with
//! [`Error::LegacyKeys`](crate::Error::LegacyKeys) (the crate README, "Upgrading", says
//! how to drain them). In the table below a key is named after the prefix:
//!
//! | key | type | content | written by | trimmed / deleted by |
//! |-----|------|---------|------------|----------------------|
//! | `stream:high`, `stream:normal`, `stream:low` | stream + group | `id`, `handler`, `payload` (JSON) | `enqueue` (`XADD`), workers (`XREADGROUP`, `XCLAIM`, `XAUTOCLAIM`, `XGROUP CREATE`) | `XACK` + `XDEL` when finished; `XGROUP DELCONSUMER` of idle consumers |
//! | `task:<id>` (16 hex digits) | hash | `status`, `handler`, `priority`, `queued_at`, `started_at`, `finished_at` (unix ms), `attempts`, `start` (the start request that began the attempt), `enq` (the enqueue request that wrote it), `error`, `result` (JSON), `cancel` | `enqueue`, start, finish, retry, cancel, shutdown release (`HSET`, `HDEL`) | expires `result_ttl` after a final status (`PEXPIRE`) |
//! | `dead` | stream | dead letters: `id`, `handler`, `payload`, `error`, `attempts` | finish (`XADD`) | `XTRIM MAXLEN dead_letter_cap` after each batch that adds some |
//! | `stats` | hash | counters `enqueued`, `completed`, `failed`, `cancelled`, `retried` | `HINCRBY` | never |
//! | `workers` | sorted set | consumer name scored by its last heartbeat (unix ms) | heartbeat (`ZADD`) | `ZREM` at shutdown, `ZREMRANGEBYSCORE` of heartbeats older than twice the visibility timeout |
//!
//! [`DurableQueue::purge`] deletes every key matching `cortex:tasks:{q}:*` (`SCAN` of
//! every master + `UNLINK`; braces are not glob characters), nothing else.
//!
//! # On a Redis Cluster
//!
//! The Redis config decides the mode: `REDIS_URL` for one server, `REDIS_CLUSTER_URLS`
//! for a cluster (see cortex-pool's `RedisConfig`). Behaviour is the same in both. On a
//! cluster, a queue lives on the master serving its slot (one queue is never spread
//! over masters; spread the load with several queues, whose names hash to different
//! slots). Every connection of the queue and its workers routes by slot and follows it
//! to the replica promoted by a failover; calls meanwhile fail with retryable errors
//! and the worker retries them with backoff. Redis replicates asynchronously, so a
//! master that crashes may take its last writes with it: a finished task whose outcome
//! was lost runs again (at least once, as above), and an enqueue confirmed in the
//! moment before the crash can be lost with it.

mod config;
mod connect;
mod queue;
mod redis_util;
mod registry;
mod scripts;
mod status;
mod worker;

pub use self::config::{DurableConfig, MAX_BATCH, MAX_CONCURRENCY, MAX_DURATION, key_prefix};
pub use self::connect::RedisTarget;
pub use self::queue::{DeadLetter, DurableQueue};
pub use self::registry::Registry;
pub use self::worker::{Worker, WorkerHandle, WorkerShutdownReport, WorkerStats};
