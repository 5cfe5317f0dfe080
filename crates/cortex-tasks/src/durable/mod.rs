//! The durable backend: a task queue on Redis Streams shared by many processes.
//!
//! Producers call [`DurableQueue::enqueue`]; any number of [`Worker`]s, in any number of
//! processes, read the same streams through one consumer group. A task is acknowledged
//! only after its handler finished, so a worker that dies mid-task leaves it pending and
//! another worker reclaims it once it has been idle for the visibility timeout.
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
//! Results and acknowledgements are flushed in one pipeline per batch: whatever finished
//! while the previous flush was in flight (`HSET` final status, `PEXPIRE`, `XACK`,
//! `XDEL`, counters).
//!
//! # Guarantees
//!
//! * A task is acknowledged only after its final status is written, and the start script
//!   refuses a task whose status is final, so an acknowledged task never runs again.
//! * A task whose worker died is reclaimed (`XAUTOCLAIM`) once idle for the visibility
//!   timeout, and runs again: delivery is at least once for unacknowledged work. Running
//!   tasks are refreshed every third of the timeout, so long tasks are not stolen.
//! * Retries stay with the worker that ran the attempt: the entry stays pending (and
//!   refreshed) through the backoff, so a crash during the backoff loses nothing.
//!
//! Keys of a queue named `q` (all under `cortex:tasks:q:`):
//!
//! | key | type | content |
//! |-----|------|---------|
//! | `stream:{high,normal,low}` | stream | `id`, `handler`, `payload` (JSON) |
//! | `task:{id}` | hash | `status`, `handler`, `priority`, `queued_at`, `started_at`, `finished_at` (unix ms), `attempts`, `error`, `result` (JSON), `cancel` |
//! | `dead` | stream | dead letters: `id`, `handler`, `payload`, `error`, `attempts` |
//! | `stats` | hash | counters `enqueued`, `completed`, `failed`, `cancelled`, `retried` |
//! | `workers` | sorted set | consumer name scored by its last heartbeat (unix ms) |

mod config;
mod queue;
mod redis_util;
mod registry;
mod scripts;
mod worker;

pub use self::config::DurableConfig;
pub use self::queue::{DeadLetter, DurableQueue};
pub use self::registry::Registry;
pub use self::worker::{ShutdownReport, Worker, WorkerHandle};
