use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::histogram::{Counts, Period};
use crate::snapshot::{
    CallStats, CategorySnapshot, CounterSnapshot, EndpointSnapshot, LastCall, LatencySummary,
    MetricsSnapshot, NamedHistogram, OperationSnapshot, RequestStats,
};
use crate::{Counter, Error, Histogram, HistogramSnapshot, MetricsConfig, Result};

/// The name under which records beyond a series cap are kept.
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

/// A map of named series with a cap. Reads are lock-free and write nothing shared
/// (an `ArcSwap` load), so two cores looking up names do not contend; adding a series
/// copies the map, which happens once per name.
struct Family<K, V> {
    map: ArcSwap<HashMap<K, Arc<V>>>,
    /// Serializes writers so no insert is lost between copy and swap.
    write: Mutex<()>,
}

impl<K: Eq + Hash + Clone, V> Family<K, V> {
    fn new() -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
        }
    }

    /// Run `f` on the series for `key`, if it exists, without touching its refcount.
    #[inline]
    fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.load().get(key).map(|v| f(v))
    }

    fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.load().get(key).cloned()
    }

    /// The series for `key`, created by `make`; past `cap` series, the one for
    /// `overflow` instead.
    fn get_or_insert(&self, key: K, cap: usize, overflow: K, make: impl Fn(&K) -> V) -> Arc<V> {
        if let Some(v) = self.get(&key) {
            return v;
        }
        // Poisoning only means a panic in another insert: the map itself is intact.
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.map.load_full();
        if let Some(v) = current.get(&key) {
            return v.clone();
        }
        // The overflow series counts toward the cap: at most `cap` series in all.
        let key = if current.len() + 1 >= cap {
            overflow
        } else {
            key
        };
        if let Some(v) = current.get(&key) {
            return v.clone();
        }
        let value = Arc::new(make(&key));
        let mut next = HashMap::clone(&current);
        next.insert(key, value.clone());
        self.map.store(Arc::new(next));
        value
    }

    fn len(&self) -> usize {
        self.map.load().len()
    }

    fn entries(&self) -> Vec<(K, Arc<V>)> {
        self.map
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

struct Inner {
    config: MetricsConfig,
    operations: Family<Arc<str>, Operation>,
    /// Route template, then method: two lookups by `&str`, so recording a request
    /// allocates nothing.
    endpoints: Family<Arc<str>, Family<Arc<str>, Endpoint>>,
    /// Number of (route, method) series; held while adding one, to enforce the cap.
    endpoint_series: Mutex<usize>,
    histograms: Family<Arc<str>, Histogram>,
    counters: Family<Arc<str>, Counter>,
    window_started_ms: AtomicU64,
}

/// A registry of operation, endpoint, histogram and counter metrics.
///
/// Cheap to clone (one `Arc`); share one per service, or use [`global()`].
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
    /// [`Error::InvalidConfig`] when the config does not [validate](MetricsConfig::validate).
    pub fn with_config(config: MetricsConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::with_config_unchecked(config))
    }

    fn with_config_unchecked(config: MetricsConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                operations: Family::new(),
                endpoints: Family::new(),
                endpoint_series: Mutex::new(0),
                histograms: Family::new(),
                counters: Family::new(),
                window_started_ms: AtomicU64::new(unix_ms(SystemTime::now())),
            }),
        }
    }

    /// The config in force.
    pub fn config(&self) -> &MetricsConfig {
        &self.inner.config
    }

    /// The handle of operation `name` (created on first use, without a category).
    pub fn operation(&self, name: &str) -> Arc<Operation> {
        if let Some(op) = self.inner.operations.get(name) {
            return op;
        }
        self.insert_operation(name, None)
    }

    /// The handle of operation `name` in `category`. The category is fixed when the
    /// operation is first registered.
    pub fn operation_in(&self, category: &str, name: &str) -> Arc<Operation> {
        if let Some(op) = self.inner.operations.get(name) {
            return op;
        }
        self.insert_operation(name, Some(category))
    }

    fn insert_operation(&self, name: &str, category: Option<&str>) -> Arc<Operation> {
        let category: Option<Arc<str>> = category.map(Arc::from);
        self.inner.operations.get_or_insert(
            Arc::from(name),
            self.inner.config.max_operations,
            Arc::from(OVERFLOW_SERIES),
            |k| Operation::new(k.clone(), category.clone()),
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
    /// path; past [`MetricsConfig::max_endpoints`] series, requests are recorded under
    /// [`OVERFLOW_SERIES`].
    pub fn record_endpoint(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let recorded = self
            .inner
            .endpoints
            .with(route, |methods| {
                methods.with(method, |e| e.record(status, elapsed))
            })
            .flatten();
        if recorded.is_none() {
            self.insert_endpoint(method, route).record(status, elapsed);
        }
    }

    fn insert_endpoint(&self, method: &str, route: &str) -> Arc<Endpoint> {
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
        // The overflow series counts toward the cap: at most `max_endpoints` in all.
        let route = if *series + 1 >= self.inner.config.max_endpoints {
            OVERFLOW_SERIES
        } else {
            route
        };
        let methods = self.inner.endpoints.get_or_insert(
            Arc::from(route),
            usize::MAX,
            Arc::from(OVERFLOW_SERIES),
            |_| Family::new(),
        );
        if let Some(e) = methods.get(method) {
            return e;
        }
        *series += 1;
        methods.get_or_insert(Arc::from(method), usize::MAX, Arc::from(method), |_| {
            Endpoint::new()
        })
    }

    /// The value histogram `name` (batch sizes, payload bytes...), created on first use.
    pub fn histogram(&self, name: &str) -> Arc<Histogram> {
        self.inner.histograms.get(name).unwrap_or_else(|| {
            self.inner.histograms.get_or_insert(
                Arc::from(name),
                self.inner.config.max_operations,
                Arc::from(OVERFLOW_SERIES),
                |_| Histogram::new(),
            )
        })
    }

    /// The counter `name` (cache hits, retries...), created on first use.
    pub fn counter(&self, name: &str) -> Arc<Counter> {
        self.inner.counters.get(name).unwrap_or_else(|| {
            self.inner.counters.get_or_insert(
                Arc::from(name),
                self.inner.config.max_operations,
                Arc::from(OVERFLOW_SERIES),
                |_| Counter::new(),
            )
        })
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
            h.reset_window();
        }
        for (_, c) in self.inner.counters.entries() {
            c.reset_window();
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
                let (window, total) = h.snapshots();
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
                window: c.window(),
                total: c.total(),
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

    /// Write the snapshot as JSON to `path` (through a temporary file, so a reader
    /// never sees half a file).
    ///
    /// # Errors
    /// [`Error::Io`] naming the path when it cannot be written.
    pub fn export_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, self.to_json()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The Prometheus text exposition of everything (see [`crate::prometheus`]).
    pub fn prometheus(&self) -> String {
        crate::prometheus::render(&self.snapshot(), &self.inner.config.namespace)
    }
}
