use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use cortex_metrics::{Counter, Histogram, Metrics};
use tokio::runtime::Handle;
use tracing::Instrument;

use crate::{BatchConfig, BatchFn, BatchStats, Error, Loaded, Result};

/// A request's answer slot in the batcher's slab: its caller waits on it, its batch
/// fills it. Slots are reused (through `State::free`), so once the slab has grown to
/// the peak of requests in flight a request allocates nothing: no channel, no `Arc`.
enum Reply<V> {
    /// Unused, on the free list.
    Free,
    /// The caller waits, with its waker once it has polled.
    Waiting(Option<Waker>),
    /// Answered; the caller has not taken it yet.
    Ready(Result<V>),
    /// The caller stopped waiting while the request was queued or loading.
    Gone,
}

/// One waiting request.
struct Request<K> {
    key: K,
    /// Its answer slot.
    slot: u32,
    at: Instant,
    /// Answered (or dropped) already: e.g. its deadline passed while its batch loaded.
    done: bool,
}

/// Everything the lock guards: the queue and the counters that change with it, so a
/// request costs one lock and no extra atomics.
struct State<K, V> {
    /// Requests not yet dispatched, oldest first; a batch is drained from the front.
    pending: VecDeque<Request<K>>,
    /// The answer slots of the requests queued, loading, or answered and not yet
    /// taken by their callers.
    slots: Vec<Reply<V>>,
    /// Indexes of the `Free` slots.
    free: Vec<u32>,
    in_flight: usize,
    /// The queue's timer, if one is armed: its id and when it fires. One timer serves
    /// the whole queue (the oldest request is due first); it is replaced only by one
    /// that must fire earlier, so a busy batcher arms about one per `max_wait`, not one
    /// per batch or per request.
    timer: Option<(u64, Instant)>,
    /// The id of the last timer armed.
    timers: u64,
    /// The armed timer counts `max_wait` (a slot was free when it was armed).
    timer_wait: bool,
    /// A flush is scheduled: a task that dispatches what is queued once the tasks
    /// ready to run now have had their turn (see [`Shared::plan`]).
    flush: bool,
    /// While a flush is scheduled, the clock reading of the request that scheduled
    /// it: the requests of the same burst take it as their arrival time instead of
    /// reading the clock each (the largest cost of a request otherwise).
    burst_at: Option<Instant>,
    closed: bool,
    requests: u64,
    batches: u64,
    duplicates: u64,
    abandoned: u64,
    saturated: u64,
}

impl<K, V> State<K, V> {
    /// The arrival time of a request queued now: the clock, or, in a burst (a flush
    /// is scheduled and has not run yet), the reading of the burst's first request.
    /// The burst's requests were all queued before the flush runs, i.e. while the
    /// runtime ran the tasks ready when it was scheduled: typically microseconds
    /// apart. So `batch.wait` and `request_timeout` count from the start of the
    /// burst, at most that much early.
    fn arrival(&self) -> Instant {
        self.burst_at.unwrap_or_else(Instant::now)
    }

    /// A slot for a new request, its caller waiting with `waker`.
    fn open(&mut self, waker: Option<Waker>) -> u32 {
        let reply = Reply::Waiting(waker);
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = reply;
                i
            }
            None => {
                self.slots.push(reply);
                // `max_pending` and the loading batches bound the slots in use far
                // below `u32::MAX`.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    fn release(&mut self, slot: u32) {
        self.slots[slot as usize] = Reply::Free;
        self.free.push(slot);
    }

    /// Nothing to load `r` for: its caller stopped waiting, or it was answered.
    fn gone(&self, r: &Request<K>) -> bool {
        r.done || matches!(self.slots[r.slot as usize], Reply::Gone)
    }

    /// Answer `r` (once); the waker to wake once the lock is released. A request
    /// whose caller left frees its slot instead.
    fn answer(&mut self, r: &mut Request<K>, result: Result<V>) -> Option<Waker> {
        if r.done {
            return None;
        }
        r.done = true;
        let slot = r.slot as usize;
        match &mut self.slots[slot] {
            Reply::Waiting(waker) => {
                let waker = waker.take();
                self.slots[slot] = Reply::Ready(result);
                waker
            }
            Reply::Gone => {
                self.release(r.slot);
                None
            }
            Reply::Free | Reply::Ready(_) => None,
        }
    }

    /// Drop `r` unloaded, its caller gone; counted as abandoned.
    fn discard(&mut self, mut r: Request<K>) {
        self.abandoned += 1;
        let _ = self.answer(&mut r, Err(Error::Closed));
    }
}

/// Wake the callers answered under the lock, now that it is released.
fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

/// A caller's wait for its answer. Bounded without a timer of its own: the batcher
/// answers [`Error::Timeout`] at the request's deadline (the queue's timer while it
/// is queued, its batch's while it loads), and a batch dropped unanswered (its task
/// dropped with its runtime) answers [`Error::Closed`]. Dropped before its answer, it
/// marks the slot `Gone`, so no batch formed after that loads the key.
struct Answer<'a, F: BatchFn> {
    shared: &'a Shared<F>,
    slot: u32,
    done: bool,
}

impl<F: BatchFn> Future for Answer<'_, F> {
    type Output = Result<F::Value>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = self.slot;
        let mut st = self.shared.lock();
        match &mut st.slots[slot as usize] {
            Reply::Waiting(waker) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            Reply::Ready(_) => {
                let reply = std::mem::replace(&mut st.slots[slot as usize], Reply::Free);
                st.free.push(slot);
                drop(st);
                self.done = true;
                if let Reply::Ready(result) = reply {
                    return Poll::Ready(result);
                }
            }
            Reply::Free | Reply::Gone => {}
        }
        self.done = true;
        Poll::Ready(Err(Error::Closed))
    }
}

impl<F: BatchFn> Drop for Answer<'_, F> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.shared.lock();
        match st.slots[self.slot as usize] {
            Reply::Waiting(_) => st.slots[self.slot as usize] = Reply::Gone,
            Reply::Ready(_) => st.release(self.slot),
            Reply::Free | Reply::Gone => {}
        }
    }
}

/// A batch's requests on their way to their answers. Any still unanswered when it is
/// dropped (its task dropped with its runtime, or never spawned) get
/// [`Error::Closed`], so no caller waits for a batch that is gone.
struct Batch<F: BatchFn> {
    shared: Arc<Shared<F>>,
    requests: Vec<Request<F::Key>>,
}

impl<F: BatchFn> Drop for Batch<F> {
    fn drop(&mut self) {
        if self.requests.iter().all(|r| r.done) {
            return;
        }
        let wakers = {
            let mut st = self.shared.lock();
            let st = &mut *st;
            self.requests
                .iter_mut()
                .filter_map(|r| st.answer(r, Err(Error::Closed)))
                .collect()
        };
        wake_all(wakers);
    }
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
struct Plan<K> {
    batches: Vec<Vec<Request<K>>>,
    /// A timer to spawn: its id and deadline.
    timer: Option<(u64, Instant)>,
    /// Spawn the flush task.
    flush: bool,
}

impl<K> Plan<K> {
    fn none() -> Self {
        Self {
            batches: Vec::new(),
            timer: None,
            flush: false,
        }
    }
}

/// What made [`Shared::plan`] run.
#[derive(Clone, Copy)]
enum Cause {
    /// A caller queued requests that arrived at this time.
    Queued(Instant),
    /// A loading slot came back without its task taking the queue.
    Freed,
    /// The queue's timer fired at this time.
    Timer(Instant),
    /// The flush task ran.
    Flush,
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

    /// Most batches loading at once. Default: 16.
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
                    slots: Vec::new(),
                    free: Vec::new(),
                    in_flight: 0,
                    timer: None,
                    timers: 0,
                    timer_wait: false,
                    flush: false,
                    burst_at: None,
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
    /// Batches load on tasks spawned onto the caller's tokio runtime: outside one, a
    /// request that would start a batch gets [`Error::Closed`].
    pub async fn load(&self, key: F::Key) -> Result<F::Value> {
        let shared = &*self.shared;
        let mut key = Some(key);
        let mut answer: Option<Answer<'_, F>> = None;
        poll_fn(|cx| {
            if let Some(answer) = answer.as_mut() {
                return Pin::new(answer).poll(cx);
            }
            let Some(key) = key.take() else {
                return Poll::Ready(Err(Error::Closed));
            };
            // First poll: queue the key with this task's waker, in one lock.
            let plan = {
                let mut st = shared.lock();
                let at = st.arrival();
                if st.closed {
                    return Poll::Ready(Err(Error::Closed));
                }
                if st.pending.len() >= shared.config.max_pending && !shared.make_room(&mut st) {
                    return Poll::Ready(Err(shared.refuse(&mut st)));
                }
                let slot = st.open(Some(cx.waker().clone()));
                st.pending.push_back(Request {
                    key,
                    slot,
                    at,
                    done: false,
                });
                answer = Some(Answer {
                    shared,
                    slot,
                    done: false,
                });
                shared.plan(&mut st, Cause::Queued(at))
            };
            self.shared.execute(plan);
            Poll::Pending
        })
        .await
    }

    /// The values of `keys`, in order, each with its own result. The keys join the
    /// current batch together (split at `max_batch_size`); keys past `max_pending`
    /// queued requests get [`Error::Saturated`] at once, the others are queued.
    ///
    /// As [`load`](Self::load), batches load on the caller's tokio runtime.
    pub async fn load_many(&self, keys: impl IntoIterator<Item = F::Key>) -> Vec<Result<F::Value>> {
        let shared = &*self.shared;
        // `Err`: refused at once, the queue was full.
        let mut answers = Vec::new();
        let plan = {
            let mut st = shared.lock();
            let at = st.arrival();
            if st.closed {
                drop(st);
                return keys.into_iter().map(|_| Err(Error::Closed)).collect();
            }
            for key in keys {
                if st.pending.len() >= shared.config.max_pending && !shared.make_room(&mut st) {
                    answers.push(Err(shared.refuse(&mut st)));
                    continue;
                }
                let slot = st.open(None);
                st.pending.push_back(Request {
                    key,
                    slot,
                    at,
                    done: false,
                });
                answers.push(Ok(Answer {
                    shared,
                    slot,
                    done: false,
                }));
            }
            shared.plan(&mut st, Cause::Queued(at))
        };
        self.shared.execute(plan);
        let mut out = Vec::with_capacity(answers.len());
        // Awaited in order; those not reached yet keep their slots (and withdraw
        // their requests if this future is dropped).
        for answer in answers {
            out.push(match answer {
                Ok(answer) => answer.await,
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Stop: every request not yet dispatched gets [`Error::Closed`], and so does
    /// every later call. Batches already loading finish and deliver their results.
    pub fn close(&self) {
        let wakers = {
            let mut st = self.shared.lock();
            st.closed = true;
            let drained = std::mem::take(&mut st.pending);
            let mut wakers = Vec::new();
            for mut r in drained {
                wakers.extend(st.answer(&mut r, Err(Error::Closed)));
            }
            wakers
        };
        wake_all(wakers);
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
        while st.pending.front().is_some_and(|r| st.gone(r)) {
            if let Some(r) = st.pending.pop_front() {
                st.discard(r);
            }
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

    /// Decide, under the lock, which batches fire now and whether to arm a timer or
    /// schedule a flush.
    ///
    /// A batch fires when a loading slot is free and: the batcher is idle (the fast
    /// path), the batch is full, the wait is zero, its oldest request has waited
    /// `max_wait` (the queue's timer fired), or the flush ran. The flush is natural
    /// batching: a request that fires nothing while a slot is free does not wait for
    /// the timer, only for the tasks that are ready to run now (the rest of its
    /// burst) to queue theirs, so it pays no latency a direct call would not. With
    /// every slot loading, requests accumulate until a load finishes (its task takes
    /// them).
    ///
    /// Why not wait for the batch to fill while a slot is free: with a backend bound
    /// by latency, a request held back for a fuller batch arrives a round trip late,
    /// and the callers behind it do too; a burst is batched anyway.
    fn plan(&self, st: &mut State<F::Key, F::Value>, cause: Cause) -> Plan<F::Key> {
        let c = &self.config;
        let few = self.few_in_flight();
        let mut plan = Plan::none();
        while let Some(front) = st.pending.front() {
            let fire = st.in_flight == 0
                || st.pending.len() >= c.max_batch_size
                || c.max_wait.is_zero()
                || match cause {
                    Cause::Queued(_) | Cause::Freed => false,
                    Cause::Timer(now) => front.at + c.max_wait <= now,
                    Cause::Flush => st.in_flight < few,
                };
            if !fire || st.in_flight >= c.max_in_flight {
                break;
            }
            let batch = self.take(st);
            if batch.is_empty() {
                break; // every queued caller had given up; the queue is empty now
            }
            st.in_flight += 1;
            plan.batches.push(batch);
        }
        // Scheduled even with every slot loading: it also ends the burst, so the
        // shared arrival time (`burst_at`) is never older than one. Only by a caller:
        // the request it just queued read the clock (no flush was pending), so its
        // time starts the burst; a flush or timer re-scheduling itself would spin.
        if let Cause::Queued(at) = cause
            && !st.pending.is_empty()
            && !st.flush
            && !st.closed
        {
            st.flush = true;
            st.burst_at = Some(at);
            plan.flush = true;
        }
        self.arm(st, &mut plan);
        plan
    }

    /// Below this many batches loading, a flush dispatches what is queued: every
    /// slot. (Measured with `batch/latency_bound`: flushing only below half the slots
    /// left requests that queued behind the half waiting a round trip longer.)
    fn few_in_flight(&self) -> usize {
        self.config.max_in_flight
    }

    /// The flush task ran: dispatch what queued meanwhile if few batches load.
    fn on_flush(self: &Arc<Self>) {
        let plan = {
            let mut st = self.lock();
            st.flush = false;
            st.burst_at = None;
            self.plan(&mut st, Cause::Flush)
        };
        self.execute(plan);
    }

    /// Form the next batch from the front of the queue: up to `max_batch_size`
    /// requests whose callers still wait. The others are dropped (counted as
    /// abandoned), so a caller that gave up is never loaded by a batch formed after.
    /// Empty only when the queue is.
    fn take(&self, st: &mut State<F::Key, F::Value>) -> Vec<Request<F::Key>> {
        let max = self.config.max_batch_size;
        let n = st.pending.len().min(max);
        let mut batch: Vec<_> = st.pending.drain(..n).collect();
        if batch.iter().any(|r| st.gone(r)) {
            // Drop those that gave up and refill their places one by one (the rare
            // path; the scan above is the common one).
            let mut kept = Vec::with_capacity(batch.len());
            for r in batch {
                if st.gone(&r) {
                    st.discard(r);
                } else {
                    kept.push(r);
                }
            }
            batch = kept;
            while batch.len() < max {
                let Some(r) = st.pending.pop_front() else {
                    break;
                };
                if st.gone(&r) {
                    st.discard(r);
                } else {
                    batch.push(r);
                }
            }
        }
        if !batch.is_empty() {
            st.requests += batch.len() as u64;
            st.batches += 1;
        }
        batch
    }

    /// When the queue's timer must fire: when its oldest request has waited
    /// `max_wait` (only while a loading slot is free: otherwise the next load to
    /// finish takes the batch) or reaches its `request_timeout`, whichever is first.
    fn due(&self, st: &State<F::Key, F::Value>) -> Option<Instant> {
        let c = &self.config;
        let front = st.pending.front().filter(|_| !st.closed)?;
        let wait = (st.in_flight < c.max_in_flight).then(|| front.at + c.max_wait);
        let timeout = (!c.request_timeout.is_zero()).then(|| front.at + c.request_timeout);
        match (wait, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arm the queue's timer for [`due`](Self::due), unless one armed already fires
    /// by then (a timer that fires early finds nothing due and re-arms).
    fn arm(&self, st: &mut State<F::Key, F::Value>, plan: &mut Plan<F::Key>) {
        // Arrival times never decrease along the queue, so a timer armed while a slot
        // was free fires no later than anything due since: the common case, checked
        // without computing a deadline.
        if st.timer.is_some() && st.timer_wait {
            return;
        }
        let Some(deadline) = self.due(st) else {
            return;
        };
        if st.timer.is_some_and(|(_, armed)| armed <= deadline) {
            return;
        }
        st.timers += 1;
        st.timer = Some((st.timers, deadline));
        st.timer_wait = st.in_flight < self.config.max_in_flight;
        plan.timer = st.timer;
    }

    /// The queue's timer `id`, armed for `deadline`, fired (unless a later one replaced
    /// it): answer the queued requests past their `request_timeout`, fire the batches
    /// whose wait ran out, and re-arm for the next.
    fn on_timer(self: &Arc<Self>, id: u64, deadline: Instant) {
        let limit = self.config.request_timeout;
        let mut wakers = Vec::new();
        let plan = {
            let mut st = self.lock();
            if st.timer.is_none_or(|(armed, _)| armed != id) {
                return;
            }
            st.timer = None;
            // The runtime's clock says `deadline` has passed, even when it is paused
            // (tests) and the system clock lags behind it.
            let now = Instant::now().max(deadline);
            // The queue is in arrival order, so the expired requests are at its front.
            while !limit.is_zero() && st.pending.front().is_some_and(|r| r.at + limit <= now) {
                let Some(mut r) = st.pending.pop_front() else {
                    break;
                };
                if st.gone(&r) {
                    st.discard(r);
                    continue;
                }
                self.timeouts.fetch_add(1, Relaxed);
                let waited = now.saturating_duration_since(r.at);
                wakers.extend(st.answer(&mut r, Err(Error::Timeout { waited })));
            }
            self.plan(&mut st, Cause::Timer(now))
        };
        wake_all(wakers);
        self.execute(plan);
    }

    fn execute(self: &Arc<Self>, plan: Plan<F::Key>) {
        if plan.batches.is_empty() && plan.timer.is_none() && !plan.flush {
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
            let batch = Batch {
                shared: Arc::clone(self),
                requests: batch,
            };
            if let Some(rt) = &rt {
                rt.spawn(run(slot, batch, cause.clone()));
            }
        }
        if plan.flush {
            match &rt {
                Some(rt) => {
                    let shared = Arc::downgrade(self);
                    rt.spawn(async move {
                        // Spawned behind the tasks ready now; the yield lets those that
                        // are woken meanwhile run too, so the burst is in the queue.
                        tokio::task::yield_now().await;
                        if let Some(shared) = shared.upgrade() {
                            shared.on_flush();
                        }
                    });
                }
                None => {
                    let mut st = self.lock();
                    st.flush = false;
                    st.burst_at = None;
                }
            }
        }
        if let Some((id, deadline)) = plan.timer {
            match rt {
                Some(rt) => {
                    // A `Weak`: a timer armed for a `request_timeout` far away must not
                    // keep a dropped batcher (and its registry gauge) alive that long.
                    let shared = Arc::downgrade(self);
                    rt.spawn(async move {
                        tokio::time::sleep_until(deadline.into()).await;
                        if let Some(shared) = shared.upgrade() {
                            shared.on_timer(id, deadline);
                        }
                    });
                }
                // No runtime to sleep on: disarm, so the next load from one re-arms.
                None => {
                    let mut st = self.lock();
                    if st.timer.is_some_and(|(armed, _)| armed == id) {
                        st.timer = None;
                    }
                }
            }
        }
    }

    /// Answer the requests of a loading batch whose `request_timeout` has passed by
    /// `now`; the others' earliest deadline, if any still wait.
    fn expire(&self, batch: &mut [Request<F::Key>], now: Instant) -> Option<Instant> {
        let limit = self.config.request_timeout;
        let mut next: Option<Instant> = None;
        let mut wakers = Vec::new();
        if batch.iter().any(|r| !r.done && r.at + limit <= now) {
            let mut st = self.lock();
            for r in batch.iter_mut().filter(|r| !r.done && r.at + limit <= now) {
                self.timeouts.fetch_add(1, Relaxed);
                let waited = now.saturating_duration_since(r.at);
                wakers.extend(st.answer(r, Err(Error::Timeout { waited })));
            }
        }
        wake_all(wakers);
        for r in batch.iter().filter(|r| !r.done) {
            let deadline = r.at + limit;
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
        }
        next
    }

    /// Drive `load` to its end while answering each request of `batch` whose
    /// `request_timeout` passes first with [`Error::Timeout`]: one timer for the
    /// whole batch (reset to the next deadline), none for the caller. A loader that
    /// answers before the first deadline never arms it.
    async fn load_within<T>(
        &self,
        mut load: Pin<&mut impl Future<Output = T>>,
        batch: &mut [Request<F::Key>],
    ) -> T {
        let mut next = if self.config.request_timeout.is_zero() {
            None
        } else {
            self.expire(batch, Instant::now())
        };
        let Some(first) = next else {
            return load.await;
        };
        let mut timer = pin!(tokio::time::sleep_until(first.into()));
        poll_fn(|cx| {
            if let Poll::Ready(out) = load.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            while let Some(deadline) = next {
                if timer.as_mut().poll(cx).is_pending() {
                    break;
                }
                next = self.expire(batch, Instant::now().max(deadline));
                if let Some(d) = next {
                    timer.as_mut().reset(d.into());
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Load the requests of `batch` in a `batch.load` debug span (batcher name, `size`
    /// requests, `keys` distinct keys) that follows from `cause`, the span that made
    /// it due, and answer them all under one lock. Leaves `batch` empty.
    async fn load_batch(&self, batch: &mut Batch<F>, cause: &tracing::Span) {
        let requests = &mut batch.requests;
        let n = requests.len();
        let dispatched = Instant::now();
        let m = &self.metrics;
        m.size.record(n as u64);
        m.requests.add(n as u64);
        for r in requests.iter() {
            m.wait
                .record_duration(dispatched.saturating_duration_since(r.at));
        }
        // Distinct keys, and for each request the index of its key.
        let (keys, slots) = distinct(requests);
        // A batch serves many callers: it is a root of its own, linked to its cause.
        let span = tracing::debug_span!(
            parent: None,
            "batch.load",
            batch = self.name.as_str(),
            size = n,
            keys = keys.len()
        );
        span.follows_from(cause);
        let load = CatchUnwind(pin!(async { self.f.load(&keys).await }.instrument(span)));
        let outcome = self.load_within(pin!(load), requests).await;
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
        // Each request's answer, in order, computed before taking the lock.
        let results: Vec<Result<F::Value>> = match outcome {
            Ok(Ok(Loaded::InOrder(values))) if values.len() != keys.len() => {
                let e = Error::WrongCount {
                    expected: keys.len(),
                    got: values.len(),
                };
                vec![Err(e); n]
            }
            // No duplicates: each value moves to its request.
            Ok(Ok(Loaded::InOrder(values))) if slots.is_empty() => {
                values.into_iter().map(Ok).collect()
            }
            Ok(Ok(Loaded::InOrder(values))) => {
                slots.iter().map(|&i| Ok(values[i].clone())).collect()
            }
            Ok(Ok(Loaded::ByKey(mut values))) => requests
                .iter()
                .map(|r| {
                    let v = if slots.is_empty() {
                        values.remove(&r.key)
                    } else {
                        values.get(&r.key).cloned()
                    };
                    v.ok_or(Error::Missing)
                })
                .collect(),
            Ok(Err(e)) => vec![Err(Error::Loader(Arc::new(e.into()))); n],
            Err(message) => {
                tracing::error!(batch = %self.name, size = n, %message, "loader panicked");
                vec![Err(Error::LoaderPanicked(message)); n]
            }
        };
        let mut errors = 0u64;
        let mut wakers = Vec::with_capacity(n);
        {
            let mut st = self.lock();
            st.duplicates += (n - keys.len()) as u64;
            for (r, result) in requests.iter_mut().zip(results) {
                if r.done {
                    continue; // answered at its deadline
                }
                errors += u64::from(result.is_err());
                wakers.extend(st.answer(r, result));
            }
        }
        requests.clear();
        wake_all(wakers);
        if errors > 0 {
            self.errors.fetch_add(errors, Relaxed);
            self.metrics.errors.add(errors);
        }
    }
}

/// A batch task: load `batch`, then keep taking whatever queued meanwhile, so a busy
/// batcher reuses this task instead of spawning one per batch.
async fn run<F: BatchFn>(mut slot: Slot<F>, mut batch: Batch<F>, cause: tracing::Span) {
    slot.started = true;
    let shared = &slot.shared;
    // Callers may have given up while this task waited to be scheduled: check the
    // batch again, so it is as fresh as one the loop below forms and loads without
    // yielding.
    {
        let mut st = shared.lock();
        if batch.requests.iter().any(|r| st.gone(r)) {
            let before = batch.requests.len();
            let mut kept = Vec::with_capacity(before);
            for r in std::mem::take(&mut batch.requests) {
                if st.gone(&r) {
                    st.discard(r);
                } else {
                    kept.push(r);
                }
            }
            batch.requests = kept;
            st.requests -= (before - batch.requests.len()) as u64;
            if batch.requests.is_empty() {
                st.batches -= 1;
            }
        }
    }
    loop {
        if !batch.requests.is_empty() {
            shared.load_batch(&mut batch, &cause).await;
            // Natural batching: the callers just answered usually load again at once.
            // Let them run first, so their next keys join the batch this task takes
            // now (or fill one of their own) instead of trickling out one by one.
            tokio::task::yield_now().await;
        }
        let plan = {
            let mut st = shared.lock();
            batch.requests = shared.take(&mut st);
            if batch.requests.is_empty() {
                st.in_flight -= 1;
                slot.released = true;
                return;
            }
            let mut plan = Plan::none();
            shared.arm(&mut st, &mut plan);
            plan
        };
        shared.execute(plan);
    }
}

/// A hasher for the one map of a batch (its distinct keys): a multiply-rotate over
/// the key's words, far cheaper than SipHash for the usual integer and short string
/// ids. Flooding it with colliding keys costs at most `max_batch_size`² comparisons
/// in one batch, so the keyed hasher's protection buys nothing here.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl KeyHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(c);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The table indexes by the low bits and tags by the top ones: fold the high
        // half, which the multiply mixes best, into the low.
        self.0 ^ (self.0 >> 32)
    }
}

/// The distinct keys of `batch` in first-seen order, and the key index of each request
/// (empty when there are no duplicates, the common case, so answers can be moved).
fn distinct<K: Clone + Eq + std::hash::Hash>(batch: &[Request<K>]) -> (Vec<K>, Vec<usize>) {
    if batch.len() == 1 {
        return (vec![batch[0].key.clone()], Vec::new());
    }
    let mut index: HashMap<&K, usize, BuildHasherDefault<KeyHasher>> =
        HashMap::with_capacity_and_hasher(batch.len(), BuildHasherDefault::default());
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
            self.shared.plan(&mut st, Cause::Freed)
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
