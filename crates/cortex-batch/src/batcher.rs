use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cortex_metrics::{Counter, Histogram, Metrics};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::{BatchConfig, BatchFn, BatchStats, Error, Loaded, Result};

type Reply<V> = oneshot::Sender<Result<V>>;

/// One waiting request.
struct Request<K, V> {
    key: K,
    tx: Reply<V>,
    at: Instant,
}

/// Everything the lock guards: the queue and the counters that change with it, so a
/// request costs one lock and no extra atomics.
struct State<K, V> {
    /// Requests not yet dispatched, oldest first; a batch is drained from the front.
    pending: VecDeque<Request<K, V>>,
    in_flight: usize,
    /// Bumped whenever a batch leaves `pending`, so a timer armed for an earlier batch
    /// knows it is stale.
    generation: u64,
    timer_armed: bool,
    closed: bool,
    requests: u64,
    batches: u64,
    duplicates: u64,
    abandoned: u64,
    saturated: u64,
}

/// The label key naming a batcher in every `batch.*` family.
const LABEL: &str = "batcher";

/// The batcher's series in its registry, looked up once at build: one family per
/// measure, this batcher's series labeled `batcher="<name>"`.
struct Instruments {
    size: Arc<Histogram>,
    wait: Arc<Histogram>,
    load: Arc<Histogram>,
    requests: Arc<Counter>,
    errors: Arc<Counter>,
}

impl Instruments {
    /// `batch.size`, `batch.wait`, `batch.load`, `batch.requests`, `batch.errors` and
    /// the scrape-time gauge `batch.pending` (read from `pending`, NaN once the batcher
    /// is gone), each labeled `batcher=name`, in `metrics`.
    fn new(metrics: &Metrics, name: &str, pending: &Arc<AtomicUsize>) -> Self {
        let labels = [(LABEL, name)];
        // `batcher` is a valid label name, so these cannot fail; the unlabeled series
        // is the fallback that keeps recording if a registry ever refused one.
        let values = |what: &str| {
            metrics
                .histogram_with(what, &labels)
                .unwrap_or_else(|_| metrics.histogram(what))
        };
        let seconds = |what: &str| {
            metrics
                .histogram_seconds_with(what, &labels)
                .unwrap_or_else(|_| metrics.histogram_seconds(what))
        };
        let counter = |what: &str| {
            metrics
                .counter_with(what, &labels)
                .unwrap_or_else(|_| metrics.counter(what))
        };
        // A `Weak`: the registry outlives the batcher and must not keep it alive.
        let weak = Arc::downgrade(pending);
        let read = move || weak.upgrade().map_or(f64::NAN, |n| n.load(Relaxed) as f64);
        if metrics.gauge_fn("batch.pending", &labels, read).is_err() {
            tracing::warn!(batcher = name, "batch.pending gauge not registered");
        }
        Self {
            size: values("batch.size"),
            wait: seconds("batch.wait"),
            load: seconds("batch.load"),
            requests: counter("batch.requests"),
            errors: counter("batch.errors"),
        }
    }
}

struct Shared<F: BatchFn> {
    f: F,
    config: BatchConfig,
    name: String,
    state: Mutex<State<F::Key, F::Value>>,
    errors: AtomicU64,
    timeouts: AtomicU64,
    /// `state.pending.len()`, published by every [`Locked`] guard as it is released,
    /// so the `batch.pending` gauge reads it at scrape time without the lock.
    pending_len: Arc<AtomicUsize>,
    metrics: Instruments,
}

/// The state lock, held: on release it publishes the queue length to `pending_len`,
/// so every path that changes the queue keeps the gauge current at the cost of one
/// relaxed store, and none can forget to.
struct Locked<'a, K, V> {
    guard: MutexGuard<'a, State<K, V>>,
    pending_len: &'a AtomicUsize,
}

impl<K, V> std::ops::Deref for Locked<'_, K, V> {
    type Target = State<K, V>;

    fn deref(&self) -> &State<K, V> {
        &self.guard
    }
}

impl<K, V> std::ops::DerefMut for Locked<'_, K, V> {
    fn deref_mut(&mut self) -> &mut State<K, V> {
        &mut self.guard
    }
}

impl<K, V> Drop for Locked<'_, K, V> {
    fn drop(&mut self) {
        // Runs before `guard` is dropped: the length stored is the one the lock saw.
        self.pending_len.store(self.guard.pending.len(), Relaxed);
    }
}

/// What to do once the lock is released.
struct Plan<K, V> {
    batches: Vec<Vec<Request<K, V>>>,
    timer: Option<(u64, Instant)>,
}

/// Batches the keys of concurrent [`load`](Self::load) calls into calls of one
/// [`BatchFn`]. One `Batcher` per batch type; clones share it.
///
/// See the [crate docs](crate) for when a batch fires.
pub struct Batcher<F: BatchFn> {
    shared: Arc<Shared<F>>,
}

impl<F: BatchFn> Clone for Batcher<F> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<F: BatchFn> fmt::Debug for Batcher<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("name", &self.shared.name)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Batcher`]: [`Batcher::builder`].
#[must_use]
pub struct BatcherBuilder<F: BatchFn> {
    f: F,
    config: BatchConfig,
    name: String,
    /// `None`: the global registry, looked up at build.
    metrics: Option<Metrics>,
}

impl<F: BatchFn> fmt::Debug for BatcherBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatcherBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("own_metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl<F: BatchFn> BatcherBuilder<F> {
    /// All settings at once, e.g. from [`BatchConfig::from_env_prefixed`].
    pub fn config(mut self, config: BatchConfig) -> Self {
        self.config = config;
        self
    }

    /// Most keys in one load. Default: 50.
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.config.max_batch_size = n;
        self
    }

    /// Longest a request waits for its batch to fill while another batch loads.
    /// Default: 100 ms.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = wait;
        self
    }

    /// Most batches loading at once. Default: 4.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n;
        self
    }

    /// Most requests queued; a load past it fails at once with [`Error::Saturated`].
    /// Default: 10 000.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.config.max_pending = n;
        self
    }

    /// Longest a caller waits for its result; zero means no bound. Default: 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Loads slower than this are logged at WARN. Default: 1 s.
    pub fn slow_batch(mut self, threshold: Duration) -> Self {
        self.config.slow_batch = threshold;
        self
    }

    /// The batcher's name, in logs, [`BatchStats`] and the `batcher` label of its
    /// metric series (`batch.size{batcher="<name>"}`, ...). Default: `batch`; give
    /// each batch type its own, or their series add up (and the last one built
    /// reports `batch.pending`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The registry to record into (default: [`cortex_metrics::global()`]). One
    /// family per measure, this batcher's series labeled `batcher="<name>"` (see
    /// [`name`](Self::name)):
    ///
    /// | registry name | kind | exposed as |
    /// |---|---|---|
    /// | `batch.size` | histogram of requests per batch | `cortex_batch_size{batcher}` |
    /// | `batch.wait` | histogram, submit to dispatch | `cortex_batch_wait_seconds{batcher}` |
    /// | `batch.load` | histogram, one loader call | `cortex_batch_load_seconds{batcher}` |
    /// | `batch.requests` | counter of requests dispatched | `cortex_batch_requests_total{batcher}` |
    /// | `batch.errors` | counter of requests answered with an error by their batch | `cortex_batch_errors_total{batcher}` |
    /// | `batch.pending` | gauge of requests queued for the next dispatch, read at scrape time (NaN once the batcher is dropped) | `cortex_batch_pending{batcher}` |
    ///
    /// ```
    /// use cortex_batch::{Batcher, batch_fn};
    /// use cortex_metrics::Metrics;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let registry = Metrics::new();
    /// let users = Batcher::builder(batch_fn(|ids: Vec<u64>| async move {
    ///     Ok::<_, std::io::Error>(ids)
    /// }))
    /// .name("users")
    /// .with_metrics(registry.clone())
    /// .build()
    /// .unwrap();
    /// users.load(7).await.unwrap();
    /// let text = registry.prometheus();
    /// assert!(text.contains("cortex_batch_requests_total{batcher=\"users\"} 1\n"));
    /// assert!(text.contains("cortex_batch_load_seconds_count{batcher=\"users\"} 1\n"));
    /// assert!(text.contains("cortex_batch_pending{batcher=\"users\"} 0\n"));
    /// # });
    /// ```
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// `.name(name).with_metrics(metrics.clone())`, the spelling of earlier releases;
    /// kept until every caller moves to the two setters.
    #[doc(hidden)]
    pub fn metrics(self, metrics: &Metrics, name: &str) -> Self {
        self.name(name).with_metrics(metrics.clone())
    }

    /// Check the settings and build. Needs no runtime; loads spawn onto the runtime of
    /// the caller of [`Batcher::load`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a size or limit is zero.
    pub fn build(self) -> Result<Batcher<F>> {
        self.config.validate()?;
        Ok(self.build_validated())
    }

    /// Build with a config already validated.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn build_validated(self) -> Batcher<F> {
        let pending_len = Arc::new(AtomicUsize::new(0));
        let metrics = Instruments::new(
            self.metrics
                .as_ref()
                .unwrap_or_else(|| cortex_metrics::global()),
            &self.name,
            &pending_len,
        );
        Batcher {
            shared: Arc::new(Shared {
                f: self.f,
                config: self.config,
                name: self.name,
                state: Mutex::new(State {
                    pending: VecDeque::new(),
                    in_flight: 0,
                    generation: 0,
                    timer_armed: false,
                    closed: false,
                    requests: 0,
                    batches: 0,
                    duplicates: 0,
                    abandoned: 0,
                    saturated: 0,
                }),
                errors: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                pending_len,
                metrics,
            }),
        }
    }
}

impl<F: BatchFn> Batcher<F> {
    /// A builder with the default [`BatchConfig`].
    pub fn builder(f: F) -> BatcherBuilder<F> {
        BatcherBuilder {
            f,
            config: BatchConfig::default(),
            name: "batch".to_owned(),
            metrics: None,
        }
    }

    /// A batcher with `config`, named `batch`, recording into the global registry.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a size or limit is zero.
    pub fn new(f: F, config: BatchConfig) -> Result<Self> {
        Self::builder(f).config(config).build()
    }

    /// The value of `key`, loaded in a batch with the keys of concurrent calls.
    ///
    /// Dropping the returned future (a timeout around it, a `select!`) withdraws the
    /// request: no batch formed after that loads its key.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Saturated`] (at once, when `max_pending` requests
    /// are queued), [`Error::Timeout`], or the batch's failure: [`Error::Loader`],
    /// [`Error::LoaderPanicked`], [`Error::WrongCount`], [`Error::Missing`].
    ///
    /// # Panics
    /// Outside a tokio runtime (loads are spawned onto it).
    pub async fn load(&self, key: F::Key) -> Result<F::Value> {
        let (tx, rx) = oneshot::channel();
        let at = Instant::now();
        let plan = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            if st.pending.len() >= self.shared.config.max_pending && !self.shared.make_room(&mut st)
            {
                return Err(self.shared.refuse(&mut st));
            }
            st.pending.push_back(Request { key, tx, at });
            self.shared.plan(&mut st, false)
        };
        self.shared.execute(plan);
        self.shared.wait(rx, at).await
    }

    /// The values of `keys`, in order, each with its own result. The keys join the
    /// current batch together (split at `max_batch_size`); keys past `max_pending`
    /// queued requests get [`Error::Saturated`] at once, the others are queued.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn load_many(&self, keys: impl IntoIterator<Item = F::Key>) -> Vec<Result<F::Value>> {
        let at = Instant::now();
        // `Err`: refused at once, the queue was full.
        let mut receivers = Vec::new();
        let plan = {
            let mut st = self.shared.lock();
            if st.closed {
                drop(st);
                return keys.into_iter().map(|_| Err(Error::Closed)).collect();
            }
            for key in keys {
                if st.pending.len() >= self.shared.config.max_pending
                    && !self.shared.make_room(&mut st)
                {
                    receivers.push(Err(self.shared.refuse(&mut st)));
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                st.pending.push_back(Request { key, tx, at });
                receivers.push(Ok(rx));
            }
            self.shared.plan(&mut st, false)
        };
        self.shared.execute(plan);
        let mut out = Vec::with_capacity(receivers.len());
        for rx in receivers {
            out.push(match rx {
                Ok(rx) => self.shared.wait(rx, at).await,
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Stop: every request not yet dispatched gets [`Error::Closed`], and so does
    /// every later call. Batches already loading finish and deliver their results.
    pub fn close(&self) {
        let drained = {
            let mut st = self.shared.lock();
            st.closed = true;
            std::mem::take(&mut st.pending)
        };
        for r in drained {
            let _ = r.tx.send(Err(Error::Closed));
        }
    }

    /// `true` after [`close`](Self::close).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// The loader.
    pub fn batch_fn(&self) -> &F {
        &self.shared.f
    }

    /// The settings.
    pub fn config(&self) -> &BatchConfig {
        &self.shared.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BatchStats {
        let max = self.shared.config.max_batch_size;
        let st = self.shared.lock();
        let avg = if st.batches == 0 {
            0.0
        } else {
            st.requests as f64 / st.batches as f64
        };
        BatchStats {
            name: self.shared.name.clone(),
            requests: st.requests,
            batches: st.batches,
            avg_batch_size: avg,
            efficiency: avg / max as f64,
            duplicates_saved: st.duplicates,
            errors: self.shared.errors.load(Relaxed),
            timeouts: self.shared.timeouts.load(Relaxed),
            abandoned: st.abandoned,
            saturated: st.saturated,
            in_flight: st.in_flight,
            pending: st.pending.len(),
            max_batch_size: max,
            closed: st.closed,
        }
    }
}

impl<F: BatchFn> Shared<F> {
    fn lock(&self) -> Locked<'_, F::Key, F::Value> {
        Locked {
            // No code that can panic runs under the lock; recover rather than propagate.
            guard: self.state.lock().unwrap_or_else(PoisonError::into_inner),
            pending_len: &self.pending_len,
        }
    }

    /// The queue holds `max_pending` requests: drop those at its front whose callers
    /// gave up, and say whether one more fits now. The front holds the oldest, the
    /// first to time out; dropping only from there looks at each request at most
    /// once, however long the overload lasts. (Out of line: the callers test the
    /// length first, so the common path costs one comparison.)
    #[cold]
    fn make_room(&self, st: &mut State<F::Key, F::Value>) -> bool {
        while st.pending.front().is_some_and(|r| r.tx.is_closed()) {
            st.pending.pop_front();
            st.abandoned += 1;
        }
        st.pending.len() < self.config.max_pending
    }

    /// Count a load refused for a full queue, and its error.
    fn refuse(&self, st: &mut State<F::Key, F::Value>) -> Error {
        st.saturated += 1;
        Error::Saturated {
            limit: self.config.max_pending,
        }
    }

    /// Decide, under the lock, which batches fire now and whether to arm a timer.
    ///
    /// A batch fires when a loading slot is free and: the batcher is idle (the fast
    /// path), the batch is full, the wait is zero, or `force` (its timer ran out).
    fn plan(&self, st: &mut State<F::Key, F::Value>, force: bool) -> Plan<F::Key, F::Value> {
        let c = &self.config;
        let mut plan = Plan {
            batches: Vec::new(),
            timer: None,
        };
        while !st.pending.is_empty()
            && st.in_flight < c.max_in_flight
            && (force
                || st.in_flight == 0
                || st.pending.len() >= c.max_batch_size
                || c.max_wait.is_zero())
        {
            let batch = self.take(st);
            if batch.is_empty() {
                break; // every queued caller had given up; the queue is empty now
            }
            st.in_flight += 1;
            plan.batches.push(batch);
        }
        self.arm(st, &mut plan);
        plan
    }

    /// Form the next batch from the front of the queue: up to `max_batch_size`
    /// requests whose callers still wait. The others are dropped (counted as
    /// abandoned), so a caller that gave up is never loaded by a batch formed after.
    /// Empty only when the queue is.
    fn take(&self, st: &mut State<F::Key, F::Value>) -> Vec<Request<F::Key, F::Value>> {
        let max = self.config.max_batch_size;
        let n = st.pending.len().min(max);
        let mut batch: Vec<_> = st.pending.drain(..n).collect();
        if batch.iter().any(|r| r.tx.is_closed()) {
            // Drop those that gave up and refill their places one by one (the rare
            // path; the scan above is the common one).
            batch.retain(|r| !r.tx.is_closed());
            st.abandoned += (n - batch.len()) as u64;
            while batch.len() < max {
                let Some(r) = st.pending.pop_front() else {
                    break;
                };
                if r.tx.is_closed() {
                    st.abandoned += 1;
                } else {
                    batch.push(r);
                }
            }
        }
        st.generation += 1;
        st.timer_armed = false;
        if !batch.is_empty() {
            st.requests += batch.len() as u64;
            st.batches += 1;
        }
        batch
    }

    /// Arm a timer for the oldest pending request, unless one is armed or no slot is
    /// free (then the next load to finish takes the batch anyway).
    fn arm(&self, st: &mut State<F::Key, F::Value>, plan: &mut Plan<F::Key, F::Value>) {
        if st.timer_armed || st.closed || st.in_flight >= self.config.max_in_flight {
            return;
        }
        if let Some(front) = st.pending.front() {
            st.timer_armed = true;
            plan.timer = Some((st.generation, front.at + self.config.max_wait));
        }
    }

    fn execute(self: &Arc<Self>, plan: Plan<F::Key, F::Value>) {
        if plan.batches.is_empty() && plan.timer.is_none() {
            return;
        }
        let rt = Handle::try_current().ok();
        // The span that made these batches due (the request whose load filled one, or
        // none for the timer): each batch's `batch.load` follows from it. Read only
        // when debug spans can be on, so the disabled path costs a level check.
        let cause = if tracing::level_enabled!(tracing::Level::DEBUG) {
            tracing::Span::current()
        } else {
            tracing::Span::none()
        };
        for batch in plan.batches {
            // The batch holds its loading slot before its task exists, so a task
            // dropped unpolled still gives the slot back. Without a runtime nothing is
            // spawned: batch and slot are dropped here and the callers see Closed.
            let slot = Slot {
                shared: Arc::clone(self),
                started: false,
                released: false,
            };
            if let Some(rt) = &rt {
                rt.spawn(run(slot, batch, cause.clone()));
            }
        }
        if let (Some(rt), Some((generation, deadline))) = (rt, plan.timer) {
            let shared = Arc::clone(self);
            rt.spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                let plan = {
                    let mut st = shared.lock();
                    if st.generation != generation || !st.timer_armed {
                        return;
                    }
                    shared.plan(&mut st, true)
                };
                shared.execute(plan);
            });
        }
    }

    async fn wait(&self, rx: oneshot::Receiver<Result<F::Value>>, at: Instant) -> Result<F::Value> {
        let limit = self.config.request_timeout;
        if limit.is_zero() {
            return rx.await.unwrap_or(Err(Error::Closed));
        }
        match tokio::time::timeout_at((at + limit).into(), rx).await {
            Ok(Ok(result)) => result,
            // The sender went away unanswered: the runtime is shutting down.
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                self.timeouts.fetch_add(1, Relaxed);
                Err(Error::Timeout {
                    waited: at.elapsed(),
                })
            }
        }
    }

    /// Load `batch` in a `batch.load` debug span (batcher name, `size` requests,
    /// `keys` distinct keys) that follows from `cause`, the span that made it due.
    async fn load_batch(&self, batch: Vec<Request<F::Key, F::Value>>, cause: &tracing::Span) {
        let n = batch.len();
        let dispatched = Instant::now();
        let m = &self.metrics;
        m.size.record(n as u64);
        m.requests.add(n as u64);
        for r in &batch {
            m.wait
                .record_duration(dispatched.saturating_duration_since(r.at));
        }
        // Distinct keys, and for each request the index of its key.
        let (keys, slots) = distinct(&batch);
        if keys.len() < n {
            self.lock().duplicates += (n - keys.len()) as u64;
        }
        // A batch serves many callers: it is a root of its own, linked to its cause.
        let span = tracing::debug_span!(
            parent: None,
            "batch.load",
            batch = self.name.as_str(),
            size = n,
            keys = keys.len()
        );
        span.follows_from(cause);
        let outcome = CatchUnwind(pin!(async { self.f.load(&keys).await }.instrument(span))).await;
        let elapsed = dispatched.elapsed();
        self.metrics.load.record_duration(elapsed);
        if elapsed > self.config.slow_batch {
            tracing::warn!(
                batch = %self.name,
                size = n,
                keys = keys.len(),
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                "slow batch"
            );
        }
        let errors = match outcome {
            Ok(Ok(Loaded::InOrder(values))) if values.len() != keys.len() => fail(
                batch,
                Error::WrongCount {
                    expected: keys.len(),
                    got: values.len(),
                },
            ),
            Ok(Ok(Loaded::InOrder(values))) => {
                if slots.is_empty() {
                    // No duplicates: move each value to its request.
                    for (r, v) in batch.into_iter().zip(values) {
                        let _ = r.tx.send(Ok(v));
                    }
                } else {
                    for (r, &i) in batch.into_iter().zip(&slots) {
                        let _ = r.tx.send(Ok(values[i].clone()));
                    }
                }
                0
            }
            Ok(Ok(Loaded::ByKey(mut values))) => {
                let mut missing = 0;
                for r in batch {
                    let v = if slots.is_empty() {
                        values.remove(&r.key)
                    } else {
                        values.get(&r.key).cloned()
                    };
                    missing += usize::from(v.is_none());
                    let _ = r.tx.send(v.ok_or(Error::Missing));
                }
                missing
            }
            Ok(Err(e)) => fail(batch, Error::Loader(Arc::new(e.into()))),
            Err(message) => {
                tracing::error!(batch = %self.name, size = n, %message, "loader panicked");
                fail(batch, Error::LoaderPanicked(message))
            }
        };
        if errors > 0 {
            self.errors.fetch_add(errors as u64, Relaxed);
            self.metrics.errors.add(errors as u64);
        }
    }
}

/// A batch task: load `batch`, then keep taking whatever queued meanwhile, so a busy
/// batcher reuses this task instead of spawning one per batch.
async fn run<F: BatchFn>(
    mut slot: Slot<F>,
    mut batch: Vec<Request<F::Key, F::Value>>,
    cause: tracing::Span,
) {
    slot.started = true;
    let shared = &slot.shared;
    // Callers may have given up while this task waited to be scheduled: check the
    // batch again, so it is as fresh as one the loop below forms and loads without
    // yielding.
    if batch.iter().any(|r| r.tx.is_closed()) {
        let before = batch.len();
        batch.retain(|r| !r.tx.is_closed());
        let mut st = shared.lock();
        st.abandoned += (before - batch.len()) as u64;
        st.requests -= (before - batch.len()) as u64;
        if batch.is_empty() {
            st.batches -= 1;
        }
    }
    loop {
        if !batch.is_empty() {
            shared.load_batch(batch, &cause).await;
        }
        let plan = {
            let mut st = shared.lock();
            batch = shared.take(&mut st);
            if batch.is_empty() {
                st.in_flight -= 1;
                slot.released = true;
                return;
            }
            let mut plan = Plan {
                batches: Vec::new(),
                timer: None,
            };
            shared.arm(&mut st, &mut plan);
            plan
        };
        shared.execute(plan);
    }
}

/// The distinct keys of `batch` in first-seen order, and the key index of each request
/// (empty when there are no duplicates, the common case, so answers can be moved).
fn distinct<K: Clone + Eq + std::hash::Hash, V>(batch: &[Request<K, V>]) -> (Vec<K>, Vec<usize>) {
    if batch.len() == 1 {
        return (vec![batch[0].key.clone()], Vec::new());
    }
    let mut index: HashMap<&K, usize> = HashMap::with_capacity(batch.len());
    let mut keys = Vec::with_capacity(batch.len());
    let mut slots = Vec::with_capacity(batch.len());
    for r in batch {
        let i = *index.entry(&r.key).or_insert_with(|| {
            keys.push(r.key.clone());
            keys.len() - 1
        });
        slots.push(i);
    }
    if keys.len() == batch.len() {
        slots = Vec::new();
    }
    (keys, slots)
}

fn fail<K, V>(batch: Vec<Request<K, V>>, error: Error) -> usize {
    let n = batch.len();
    for r in batch {
        let _ = r.tx.send(Err(error.clone()));
    }
    n
}

/// A batch's claim on one loading slot, taken (with `in_flight`) when the batch is
/// formed and moved into its task before the task is spawned. Gives the slot back if
/// the task ends without doing so itself: a panic outside the loader, the runtime
/// dropping the task mid-load, or dropping it before its first poll.
struct Slot<F: BatchFn> {
    shared: Arc<Shared<F>>,
    /// The task has been polled.
    started: bool,
    /// The task gave the slot back itself.
    released: bool,
}

impl<F: BatchFn> Drop for Slot<F> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let plan = {
            let mut st = self.shared.lock();
            st.in_flight -= 1;
            if !self.started {
                // Dropped unpolled: tokio drops unpolled tasks only when their runtime
                // shuts down (or nothing was spawned, outside a runtime), and a task
                // spawned now would go the same way, each nested in the last one's
                // drop. What is queued waits for the next load, from any runtime.
                return;
            }
            self.shared.plan(&mut st, false)
        };
        self.shared.execute(plan);
    }
}

/// Catches a panic of the loader's future, so the batch gets
/// [`Error::LoaderPanicked`] and the batcher keeps working. Polls a pinned borrow, so
/// it costs no allocation (and no `futures-util`).
struct CatchUnwind<'a, T>(Pin<&'a mut T>);

impl<T: Future> Future for CatchUnwind<'_, T> {
    type Output = std::result::Result<T::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned()))),
        }
    }
}
