use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::histogram::{Counts, Period};
use crate::prometheus::{Claims, Kind, sanitize};
use crate::snapshot::{
    CallStats, CategorySnapshot, CounterSnapshot, EndpointSnapshot, LastCall, LatencySummary,
    MetricsSnapshot, NamedHistogram, OperationSnapshot, RequestStats,
};
use crate::{Counter, Histogram, HistogramSnapshot, MetricsConfig, Result};

/// The name under which records beyond a series cap are kept: the operation, histogram
/// or counter name, and both the method and the route of the endpoint overflow series.
pub const OVERFLOW_SERIES: &str = "(other)";

/// One timed operation: latency of successes and of failures (kept apart, so a fast
/// failure cannot hide a slow success), and the latest call.
///
/// Get one with [`Metrics::operation`] and keep it: recording through the handle skips
/// the name lookup.
pub struct Operation {
    name: Arc<str>,
    category: Option<Arc<str>>,
    ok: Histogram,
    err: Histogram,
    /// `nanos << 1 | success`, `u64::MAX` before the first call.
    last: AtomicU64,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("name", &self.name)
            .field("category", &self.category)
            .finish_non_exhaustive()
    }
}

impl Operation {
    fn new(name: Arc<str>, category: Option<Arc<str>>) -> Self {
        Self {
            name,
            category,
            ok: Histogram::new(),
            err: Histogram::new(),
            last: AtomicU64::new(u64::MAX),
        }
    }

    /// Record one call.
    #[inline]
    pub fn record(&self, elapsed: Duration, success: bool) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX >> 2);
        if success {
            self.ok.record(nanos);
        } else {
            self.err.record(nanos);
        }
        // A plain store: the latest writer wins, which is what "last call" means.
        self.last.store(
            (nanos.min(u64::MAX >> 2) << 1) | u64::from(success),
            Relaxed,
        );
    }

    /// The operation name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The category it was registered in.
    pub fn category(&self) -> Option<&str> {
        self.category.as_deref()
    }

    /// A snapshot of this operation.
    pub fn snapshot(&self) -> OperationSnapshot {
        self.snapshot_with_counts().0
    }

    /// The snapshot plus the merged window counts (for category percentiles).
    fn snapshot_with_counts(&self) -> (OperationSnapshot, Counts) {
        let ok = self.ok.snapshot_counts();
        let err = self.err.snapshot_counts();
        let window = call_stats(&ok.window, &err.window);
        let total = call_stats(&ok.total, &err.total);
        let mut merged = ok.window.counts;
        merged.add(&err.window.counts);
        let last = match self.last.load(Relaxed) {
            u64::MAX => None,
            v => Some(LastCall {
                duration_ms: (v >> 1) as f64 / 1e6,
                success: v & 1 == 1,
            }),
        };
        let snap = OperationSnapshot {
            name: self.name.to_string(),
            category: self.category.as_deref().map(str::to_owned),
            window,
            total,
            last,
        };
        (snap, merged)
    }

    fn reset_window(&self) {
        self.ok.reset_window();
        self.err.reset_window();
    }

    fn extremes(&self) -> (u64, u64) {
        let (a, b) = (self.ok.extremes(), self.err.extremes());
        (a.0.min(b.0), a.1.max(b.1))
    }
}

fn call_stats(ok: &Period, err: &Period) -> CallStats {
    let mut all = ok.counts.clone();
    all.add(&err.counts);
    let latency = all.summary(ok.min.min(err.min), ok.max.max(err.max));
    let (successes, errors) = (ok.summary().count, err.summary().count);
    CallStats {
        count: latency.count,
        successes,
        errors,
        success_rate: rate(successes, latency.count),
        total_ms: latency.sum as f64 / 1e6,
        latency: LatencySummary::from(&latency),
    }
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// Requests per status code, lock-free: a small open-addressed table claimed by CAS.
struct StatusCounts {
    /// `code + 1`; 0 marks a free slot.
    keys: [AtomicU64; STATUS_SLOTS],
    counts: [Counter; STATUS_SLOTS],
    other: Counter,
}

const STATUS_SLOTS: usize = 16;

impl StatusCounts {
    fn new() -> Self {
        Self {
            keys: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: std::array::from_fn(|_| Counter::new()),
            other: Counter::new(),
        }
    }

    fn record(&self, status: u16) {
        let key = u64::from(status) + 1;
        let start = usize::from(status) % STATUS_SLOTS;
        for i in 0..STATUS_SLOTS {
            let slot = (start + i) % STATUS_SLOTS;
            let k = self.keys[slot].load(Relaxed);
            if k == key
                || (k == 0
                    && match self.keys[slot].compare_exchange(0, key, Relaxed, Relaxed) {
                        Ok(_) => true,
                        Err(found) => found == key,
                    })
            {
                self.counts[slot].increment();
                return;
            }
        }
        // More than 16 distinct codes on one endpoint: counted, under code 0.
        self.other.increment();
    }

    fn read(&self, window: bool) -> BTreeMap<u16, u64> {
        let value = |c: &Counter| if window { c.window() } else { c.total() };
        let mut out = BTreeMap::new();
        for (k, c) in self.keys.iter().zip(&self.counts) {
            let k = k.load(Relaxed);
            let n = value(c);
            if k != 0 && n > 0 {
                *out.entry(u16::try_from(k - 1).unwrap_or(0)).or_default() += n;
            }
        }
        let other = value(&self.other);
        if other > 0 {
            out.insert(0, other);
        }
        out
    }

    fn reset_window(&self) {
        self.counts.iter().for_each(Counter::reset_window);
        self.other.reset_window();
    }
}

/// One HTTP endpoint (method + route template).
struct Endpoint {
    latency: Histogram,
    statuses: StatusCounts,
}

impl Endpoint {
    fn new() -> Self {
        Self {
            latency: Histogram::new(),
            statuses: StatusCounts::new(),
        }
    }

    #[inline]
    fn record(&self, status: u16, elapsed: Duration) {
        self.latency.record_duration(elapsed);
        self.statuses.record(status);
    }
}

/// The `method` label of requests whose method is none of the standard nine: a
/// client can send any token as a method, and each must not become a series.
pub const OTHER_METHOD: &str = "OTHER";

/// The label of a request method: the method itself when it is one of `GET`, `HEAD`,
/// `POST`, `PUT`, `DELETE`, `CONNECT`, `OPTIONS`, `TRACE`, `PATCH` (case-sensitive, as
/// HTTP methods are), else [`OTHER_METHOD`].
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => OTHER_METHOD,
    }
}

/// Milliseconds since the first call, on the monotonic clock.
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A warning, at most once a minute per kind of series, that records of new names go
/// to the overflow series: a flood of names must not become a flood of log lines.
struct OverflowLog {
    what: &'static str,
    /// When the next warning may be logged ([`monotonic_ms`]).
    next_ms: AtomicU64,
    /// Overflowing lookups since the last warning.
    since_last: AtomicU64,
}

impl OverflowLog {
    const EVERY_MS: u64 = 60_000;

    fn new(what: &'static str) -> Self {
        Self {
            what,
            next_ms: AtomicU64::new(0),
            since_last: AtomicU64::new(0),
        }
    }

    #[cold]
    fn note(&self, cap: usize, name: &str) {
        self.since_last.fetch_add(1, Relaxed);
        let now = monotonic_ms();
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(Self::EVERY_MS), Relaxed, Relaxed)
                .is_ok()
        {
            let overflowed = self.since_last.swap(0, Relaxed);
            tracing::warn!(
                series = self.what,
                cap,
                name,
                overflowed,
                "series cap reached: records of new names go to the overflow series {OVERFLOW_SERIES:?} \
                 (at most one warning a minute; `overflowed` counts lookups since the last one)"
            );
        }
    }
}

/// A map of named series with a cap. Reads are lock-free and write nothing shared
/// (an `ArcSwap` load), so two cores looking up names do not contend; adding a series
/// copies the map, which happens once per name.
///
/// The cap holds under concurrent inserts: every insert runs under `write` and counts
/// the series in the map it replaces, so no racing insert can slip past it.
struct Family<V> {
    map: ArcSwap<HashMap<Arc<str>, Arc<V>>>,
    /// Serializes writers so no insert is lost between copy and swap.
    write: Mutex<()>,
    /// Set once the overflow series exists: a new name then goes to it without the lock.
    full: AtomicBool,
    log: OverflowLog,
}

impl<V> Family<V> {
    fn new(what: &'static str) -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
            full: AtomicBool::new(false),
            log: OverflowLog::new(what),
        }
    }

    /// Run `f` on the series for `key`, if it exists, without touching its refcount.
    #[inline]
    fn with<R>(&self, key: &str, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.map.load().get(key).map(|v| f(v))
    }

    fn get(&self, key: &str) -> Option<Arc<V>> {
        self.map.load().get(key).cloned()
    }

    /// The series for `key`, created by `make(key, false)`. Past `cap` series (the
    /// overflow series counts toward it), the [`OVERFLOW_SERIES`] one instead, created
    /// by `make(OVERFLOW_SERIES, true)`, and a rate-limited warning.
    fn get_or_insert(
        &self,
        key: &str,
        cap: usize,
        make: impl FnOnce(&Arc<str>, bool) -> V,
    ) -> Arc<V> {
        if let Some(v) = self.get(key) {
            return v;
        }
        if self.full.load(Acquire)
            && let Some(v) = self.get(OVERFLOW_SERIES)
        {
            self.log.note(cap, key);
            return v;
        }
        // Poisoning only means a panic in another insert: the map itself is intact.
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.map.load_full();
        if let Some(v) = current.get(key) {
            return v.clone();
        }
        let overflow = current.len() + 1 >= cap;
        let name: Arc<str> = Arc::from(if overflow { OVERFLOW_SERIES } else { key });
        let value = match current.get(&name) {
            Some(v) => v.clone(),
            None => {
                let value = Arc::new(make(&name, overflow));
                let mut next = HashMap::with_capacity(current.len() + 1);
                next.extend(current.iter().map(|(k, v)| (k.clone(), v.clone())));
                next.insert(name, value.clone());
                self.map.store(Arc::new(next));
                value
            }
        };
        if overflow {
            self.full.store(true, Release);
            self.log.note(cap, key);
        }
        value
    }

    fn len(&self) -> usize {
        self.map.load().len()
    }

    fn entries(&self) -> Vec<(Arc<str>, Arc<V>)> {
        self.map
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A named histogram or counter and the Prometheus family name it was given when it
/// was registered (see [`crate::prometheus`]).
struct Named<T> {
    series: Arc<T>,
    family: Box<str>,
}

struct Inner {
    config: MetricsConfig,
    operations: Family<Operation>,
    /// Route template, then method label: two lookups by `&str`, so recording a request
    /// allocates nothing.
    endpoints: Family<Family<Endpoint>>,
    /// Number of (route, method) series; held while adding one, to enforce the cap.
    endpoint_series: Mutex<usize>,
    /// Set once the endpoint overflow series exists.
    endpoints_full: AtomicBool,
    endpoint_log: OverflowLog,
    histograms: Family<Named<Histogram>>,
    counters: Family<Named<Counter>>,
    /// Prometheus names taken by the registry's families and by named histograms and
    /// counters; locked inside their family's `write` lock, never the other way round.
    claims: Mutex<Claims>,
    window_started_ms: AtomicU64,
}

/// A registry of operation, endpoint, histogram and counter metrics.
///
/// Cheap to clone (one `Arc`); share one per service, or use [`global()`].
///
/// Every kind of series has a cap ([`MetricsConfig`]), so names that come from input
/// (routes, methods, data-dependent operation names) cannot grow memory without bound;
/// past a cap, records of new names go to one [`OVERFLOW_SERIES`] series of that kind
/// and a warning is logged at most once a minute per kind.
///
/// ```
/// use std::time::Duration;
/// use cortex_metrics::Metrics;
///
/// let metrics = Metrics::new();
/// let query = metrics.operation_in("db", "users.by_id");
/// query.record(Duration::from_millis(3), true);
/// query.record(Duration::from_millis(9), false);
/// metrics.record_endpoint("GET", "/users/{id}", 200, Duration::from_millis(12));
///
/// let snap = metrics.snapshot();
/// assert_eq!(snap.operations[0].window.errors, 1);
/// assert_eq!(snap.categories[0].name, "db");
/// assert!(metrics.prometheus().contains("cortex_operation_duration_seconds"));
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("config", &self.inner.config)
            .field("operations", &self.inner.operations.len())
            .field("endpoints", &self.inner.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide registry used by [`TrackedExt::tracked`](crate::TrackedExt::tracked)
/// and [`track`](crate::track), with the default [`MetricsConfig`].
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Metrics {
    /// A registry with the default config.
    pub fn new() -> Self {
        Self::with_config_unchecked(MetricsConfig::default())
    }

    /// A registry with `config`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the config does not [validate](MetricsConfig::validate).
    pub fn with_config(config: MetricsConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::with_config_unchecked(config))
    }

    fn with_config_unchecked(config: MetricsConfig) -> Self {
        let claims = Claims::new(&sanitize(&config.namespace));
        Self {
            inner: Arc::new(Inner {
                config,
                operations: Family::new("operations"),
                endpoints: Family::new("endpoints"),
                endpoint_series: Mutex::new(0),
                endpoints_full: AtomicBool::new(false),
                endpoint_log: OverflowLog::new("endpoints"),
                histograms: Family::new("histograms"),
                counters: Family::new("counters"),
                claims: Mutex::new(claims),
                window_started_ms: AtomicU64::new(unix_ms(SystemTime::now())),
            }),
        }
    }

    /// The config in force.
    pub fn config(&self) -> &MetricsConfig {
        &self.inner.config
    }

    /// The handle of operation `name` (created on first use, without a category).
    ///
    /// Past [`MetricsConfig::max_operations`] operations, a new name gets the handle of
    /// the [`OVERFLOW_SERIES`] operation (which has no category).
    pub fn operation(&self, name: &str) -> Arc<Operation> {
        if let Some(op) = self.inner.operations.get(name) {
            return op;
        }
        self.insert_operation(name, None)
    }

    /// The handle of operation `name` in `category`. The category is fixed when the
    /// operation is first registered.
    ///
    /// Categories are rolled up from operations, so there are never more of them than
    /// operations ([`MetricsConfig::max_operations`]); past that cap, a new name gets the
    /// [`OVERFLOW_SERIES`] operation, which belongs to no category.
    pub fn operation_in(&self, category: &str, name: &str) -> Arc<Operation> {
        if let Some(op) = self.inner.operations.get(name) {
            return op;
        }
        self.insert_operation(name, Some(category))
    }

    fn insert_operation(&self, name: &str, category: Option<&str>) -> Arc<Operation> {
        self.inner.operations.get_or_insert(
            name,
            self.inner.config.max_operations,
            |k, overflow| {
                // The overflow series takes every category: it belongs to none.
                let category = category.filter(|_| !overflow).map(Arc::from);
                Operation::new(k.clone(), category)
            },
        )
    }

    /// Record one call of operation `name`. Looks the name up each time: keep the
    /// [`operation`](Self::operation) handle on hot paths.
    pub fn record(&self, name: &str, elapsed: Duration, success: bool) {
        if self
            .inner
            .operations
            .with(name, |op| op.record(elapsed, success))
            .is_none()
        {
            self.operation(name).record(elapsed, success);
        }
    }

    /// Record one HTTP request. `route` must be a template (`/users/{id}`), never the raw
    /// path. A method outside the standard nine (`GET HEAD POST PUT DELETE CONNECT
    /// OPTIONS TRACE PATCH`) is recorded as [`OTHER_METHOD`]. Past
    /// [`MetricsConfig::max_endpoints`] (method, route) series, requests of a new pair are
    /// recorded under one overflow series, method and route [`OVERFLOW_SERIES`].
    pub fn record_endpoint(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        // Only labels are ever keys: a standard method is found as given; any other
        // misses here and is found as `OTHER` below.
        let recorded = self
            .inner
            .endpoints
            .with(route, |methods| {
                methods.with(method, |e| e.record(status, elapsed))
            })
            .flatten();
        if recorded.is_none() {
            self.endpoint(method_label(method), route)
                .record(status, elapsed);
        }
    }

    fn endpoint(&self, method: &'static str, route: &str) -> Arc<Endpoint> {
        let existing = self
            .inner
            .endpoints
            .get(route)
            .and_then(|methods| methods.get(method));
        if let Some(e) = existing {
            return e;
        }
        if self.inner.endpoints_full.load(Acquire)
            && let Some(e) = self.overflow_endpoint()
        {
            self.inner
                .endpoint_log
                .note(self.inner.config.max_endpoints, route);
            return e;
        }
        self.insert_endpoint(method, route)
    }

    fn overflow_endpoint(&self) -> Option<Arc<Endpoint>> {
        self.inner
            .endpoints
            .get(OVERFLOW_SERIES)
            .and_then(|methods| methods.get(OVERFLOW_SERIES))
    }

    fn insert_endpoint(&self, method: &'static str, route: &str) -> Arc<Endpoint> {
        let mut series = self
            .inner
            .endpoint_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let existing = self
            .inner
            .endpoints
            .get(route)
            .and_then(|methods| methods.get(method));
        if let Some(e) = existing {
            return e;
        }
        let cap = self.inner.config.max_endpoints;
        // The overflow series counts toward the cap: at most `max_endpoints` in all.
        let overflow = *series + 1 >= cap;
        let (route_key, method_key) = if overflow {
            (OVERFLOW_SERIES, OVERFLOW_SERIES)
        } else {
            (route, method)
        };
        // The series count, under its lock, is the cap: these two maps need none.
        let methods = self
            .inner
            .endpoints
            .get_or_insert(route_key, usize::MAX, |_, _| Family::new("methods"));
        let e = match methods.get(method_key) {
            Some(e) => e,
            None => {
                *series += 1;
                methods.get_or_insert(method_key, usize::MAX, |_, _| Endpoint::new())
            }
        };
        if overflow {
            self.inner.endpoints_full.store(true, Release);
            self.inner.endpoint_log.note(cap, route);
        }
        e
    }

    /// The family name of a new histogram or counter `name` (see [`crate::prometheus`]).
    fn claim(&self, kind: Kind, name: &str) -> Box<str> {
        let mut claims = self
            .inner
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let family = claims.claim(kind, name);
        let plain = claims.plain(kind, name);
        drop(claims);
        if family != plain {
            tracing::warn!(
                name,
                family = %family,
                taken = %plain,
                "metric name collides with another once sanitized for Prometheus: exposed under a suffixed name"
            );
        }
        family.into_boxed_str()
    }

    /// The value histogram `name` (batch sizes, payload bytes...), created on first use.
    ///
    /// Past [`MetricsConfig::max_operations`] histograms, a new name gets the
    /// [`OVERFLOW_SERIES`] histogram.
    pub fn histogram(&self, name: &str) -> Arc<Histogram> {
        self.named(&self.inner.histograms, Kind::Summary, name, Histogram::new)
    }

    /// The counter `name` (cache hits, retries...), created on first use.
    ///
    /// Past [`MetricsConfig::max_operations`] counters, a new name gets the
    /// [`OVERFLOW_SERIES`] counter.
    pub fn counter(&self, name: &str) -> Arc<Counter> {
        self.named(&self.inner.counters, Kind::Counter, name, Counter::new)
    }

    /// The series `name` of a named family, created (and its exposed name claimed) on
    /// first use; past the cap, the family's overflow series.
    #[inline]
    fn named<T>(
        &self,
        family: &Family<Named<T>>,
        kind: Kind,
        name: &str,
        new: impl FnOnce() -> T,
    ) -> Arc<T> {
        if let Some(series) = family.with(name, |n| n.series.clone()) {
            return series;
        }
        family
            .get_or_insert(name, self.inner.config.max_operations, |k, _| Named {
                series: Arc::new(new()),
                family: self.claim(kind, k),
            })
            .series
            .clone()
    }

    /// Start a new window for everything. Cumulative totals keep counting, and a record
    /// made while the reset runs lands in exactly one window.
    pub fn reset(&self) {
        self.inner
            .window_started_ms
            .store(unix_ms(SystemTime::now()), Relaxed);
        for (_, op) in self.inner.operations.entries() {
            op.reset_window();
        }
        for (_, methods) in self.inner.endpoints.entries() {
            for (_, e) in methods.entries() {
                e.latency.reset_window();
                e.statuses.reset_window();
            }
        }
        for (_, h) in self.inner.histograms.entries() {
            h.series.reset_window();
        }
        for (_, c) in self.inner.counters.entries() {
            c.series.reset_window();
        }
    }

    /// Reset every [`MetricsConfig::reset_interval`] on the current tokio runtime;
    /// `None` when the interval is zero. Abort the handle to stop.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_reset_task(&self) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.inner.config.reset_interval;
        if every.is_zero() {
            return None;
        }
        // A weak reference: the task must not keep a dropped registry alive.
        let weak = Arc::downgrade(&self.inner);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(inner) => Metrics { inner }.reset(),
                    None => return,
                }
            }
        }))
    }

    /// Everything, as plain data, sorted by name.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut operations = Vec::new();
        let mut categories: BTreeMap<String, (Counts, u64, u64, u64, u64, f64)> = BTreeMap::new();
        for (_, op) in self.inner.operations.entries() {
            let (snap, counts) = op.snapshot_with_counts();
            if let Some(cat) = &snap.category {
                let w = &snap.window;
                let e = categories
                    .entry(cat.clone())
                    .or_insert_with(|| (Counts::default(), 0, 0, u64::MAX, 0, 0.0));
                e.0.add(&counts);
                e.1 += w.successes;
                e.2 += w.errors;
                if w.count > 0 {
                    let (min, max) = op.extremes();
                    e.3 = e.3.min(min);
                    e.4 = e.4.max(max);
                }
                e.5 += w.total_ms;
            }
            operations.push(snap);
        }
        operations.sort_by(|a, b| a.name.cmp(&b.name));
        let categories = categories
            .into_iter()
            .map(|(name, (counts, successes, errors, min, max, total_ms))| {
                let latency = counts.summary(min, max);
                CategorySnapshot {
                    name,
                    window: CallStats {
                        count: successes + errors,
                        successes,
                        errors,
                        success_rate: rate(successes, successes + errors),
                        total_ms,
                        latency: LatencySummary::from(&latency),
                    },
                }
            })
            .collect();

        let mut endpoints: Vec<EndpointSnapshot> = self
            .inner
            .endpoints
            .entries()
            .into_iter()
            .flat_map(|(route, methods)| {
                methods
                    .entries()
                    .into_iter()
                    .map(move |(method, e)| (method, route.clone(), e))
            })
            .map(|(method, route, e)| {
                let (w, t) = e.latency.snapshots();
                let stats = |h: &HistogramSnapshot, window| RequestStats {
                    count: h.count,
                    total_ms: h.sum as f64 / 1e6,
                    latency: LatencySummary::from(h),
                    statuses: e.statuses.read(window),
                };
                EndpointSnapshot {
                    method: method.to_string(),
                    route: route.to_string(),
                    window: stats(&w, true),
                    total: stats(&t, false),
                }
            })
            .collect();
        endpoints.sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));

        let mut histograms: Vec<NamedHistogram> = self
            .inner
            .histograms
            .entries()
            .into_iter()
            .map(|(name, h)| {
                let (window, total) = h.series.snapshots();
                NamedHistogram {
                    name: name.to_string(),
                    window,
                    total,
                }
            })
            .collect();
        histograms.sort_by(|a, b| a.name.cmp(&b.name));

        let mut counters: Vec<CounterSnapshot> = self
            .inner
            .counters
            .entries()
            .into_iter()
            .map(|(name, c)| CounterSnapshot {
                name: name.to_string(),
                window: c.series.window(),
                total: c.series.total(),
            })
            .collect();
        counters.sort_by(|a, b| a.name.cmp(&b.name));

        MetricsSnapshot {
            window_started_unix_ms: self.inner.window_started_ms.load(Relaxed),
            taken_unix_ms: unix_ms(SystemTime::now()),
            operations,
            categories,
            endpoints,
            histograms,
            counters,
        }
    }

    /// The snapshot as pretty JSON.
    pub fn to_json(&self) -> String {
        // Plain structs of numbers and strings: serialization cannot fail.
        serde_json::to_string_pretty(&self.snapshot()).unwrap_or_default()
    }

    /// Write the snapshot as pretty JSON to `path`, atomically: into a temporary file
    /// of its own in the same directory (unique per call, so concurrent exports, to one
    /// file or to several, never share one), synced, then renamed over `path`. A reader
    /// never sees half a file, and a failed export leaves the previous file as it was.
    ///
    /// This is blocking file I/O.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) naming the path when it cannot be written.
    pub fn export_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let snapshot = self.snapshot();
        let path = path.as_ref();
        cortex_support::file::write_atomic(path, |out| {
            serde_json::to_writer_pretty(&mut *out, &snapshot).map_err(std::io::Error::other)?;
            out.write_all(b"\n")
        })
        .map_err(|source| crate::Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The Prometheus text exposition of everything (see [`crate::prometheus`]), with
    /// the family names given to histograms and counters when they were registered.
    pub fn prometheus(&self) -> String {
        fn family<T>(named: &Named<T>) -> String {
            named.family.to_string()
        }
        crate::prometheus::render_with(
            &self.snapshot(),
            &self.inner.config.namespace,
            |name| self.inner.histograms.with(name, family),
            |name| self.inner.counters.with(name, family),
        )
    }
}
