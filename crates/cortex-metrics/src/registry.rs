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
use crate::prometheus::{
    Claims, Exposition, Format, Kind, Labels, Type, Value, sanitize, window_family,
};
use crate::snapshot::{
    CallStats, CategorySnapshot, CounterSnapshot, EndpointSnapshot, LastCall, LatencySummary,
    MetricsSnapshot, NamedHistogram, OperationSnapshot, RequestStats, SeriesHistogram, SeriesKind,
    SeriesSnapshot,
};
use crate::{Counter, Error, Gauge, Histogram, HistogramSnapshot, MetricsConfig, Result};

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

/// A gauge read when scraped.
type GaugeFn = Arc<dyn Fn() -> f64 + Send + Sync>;

/// The value of one labeled series.
enum SeriesValue {
    Counter(Arc<Counter>),
    /// A gauge, shadowed by the callback while one is set.
    Gauge(Arc<Gauge>, Mutex<Option<GaugeFn>>),
    Histogram(Arc<Histogram>),
}

/// One series of a [`Labeled`] family.
struct LabeledSeries {
    labels: Labels,
    value: SeriesValue,
    /// The `metrics` facade's handle of a histogram, made once: `histogram!` registers
    /// on every call, and wrapping the histogram anew each time would allocate.
    #[cfg(feature = "recorder")]
    facade: OnceLock<metrics::Histogram>,
}

/// The series of one kind and name, one per label set, and their exposed family name.
struct Labeled {
    family: Box<str>,
    series: Family<LabeledSeries>,
}

/// A labeled series with its kind, registered name and family name.
type LabeledEntry = (SeriesKind, Arc<str>, Box<str>, Arc<LabeledSeries>);

/// The kinds of labeled series, in export order.
const SERIES_KINDS: [SeriesKind; 4] = [
    SeriesKind::Counter,
    SeriesKind::Gauge,
    SeriesKind::Histogram,
    SeriesKind::HistogramSeconds,
];

fn kind_index(kind: SeriesKind) -> usize {
    match kind {
        SeriesKind::Counter => 0,
        SeriesKind::Gauge => 1,
        SeriesKind::Histogram => 2,
        _ => 3,
    }
}

fn claim_kind(kind: SeriesKind) -> Kind {
    match kind {
        SeriesKind::Counter => Kind::Counter,
        SeriesKind::Gauge => Kind::Gauge,
        SeriesKind::Histogram => Kind::Histogram,
        _ => Kind::SecondsHistogram,
    }
}

/// Check label names (`[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-prefixed, not `le` or
/// `quantile`, no repeats) and answer the labels sorted by name.
fn check_labels(labels: &[(&str, &str)]) -> Result<Labels> {
    let mut out: Labels = Vec::with_capacity(labels.len());
    for (name, value) in labels {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        let reason = if !valid {
            Some("must match [a-zA-Z_][a-zA-Z0-9_]*")
        } else if name.starts_with("__") {
            Some("names starting with `__` are reserved for Prometheus")
        } else if matches!(*name, "le" | "quantile") {
            Some("`le` and `quantile` are the bucket and quantile labels of the exposition")
        } else if out.iter().any(|(n, _)| n == name) {
            Some("given twice")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::InvalidInput {
                what: "label name",
                value: (*name).to_owned(),
                reason: reason.to_owned(),
            });
        }
        out.push(((*name).to_owned(), (*value).to_owned()));
    }
    out.sort();
    Ok(out)
}

thread_local! {
    /// The key buffer of [`find_key`]: finding an existing series allocates nothing.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Run `f` on the [`label_key`] of `labels` (any order) built in a reused buffer;
/// `None` when a label name repeats (such a set is never a key: let the caller refuse it).
fn find_key<R>(labels: &[(&str, &str)], f: impl FnOnce(&str) -> R) -> Option<R> {
    KEY.with(|buf| {
        let mut key = buf.try_borrow_mut().ok()?;
        key.clear();
        let mut last: Option<&str> = None;
        for _ in 0..labels.len() {
            // Labels are few: pick the next name by a scan rather than sorting a copy.
            let (k, v) = labels
                .iter()
                .filter(|(n, _)| last.is_none_or(|l| *n > l))
                .min_by_key(|(n, _)| *n)?;
            use std::fmt::Write as _;
            let _ = write!(key, "{}:{k}{}:{v};", k.len(), v.len());
            last = Some(k);
        }
        Some(f(&key))
    })
}

/// A map key for a label set: lengths first, so no two sets share one.
fn label_key(labels: &Labels) -> String {
    let mut key = String::new();
    for (k, v) in labels {
        use std::fmt::Write as _;
        let _ = write!(key, "{}:{k}{}:{v};", k.len(), v.len());
    }
    key
}

/// Bytes of `VmRSS` and `VmSize` from `/proc/self/status` (Linux; `None` elsewhere).
fn process_memory() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let kib = l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim();
            kib.parse::<f64>().ok().map(|k| k * 1024.0)
        })
    };
    Some((field("VmRSS:")?, field("VmSize:")?))
}

/// The classic histogram value of `counts` for the bounds `les`, values scaled down by
/// `scale` (1e9: nanoseconds to seconds).
fn histogram_value(counts: &Counts, les: &[f64], scale: f64) -> Value {
    let (cumulative, count, sum) = counts.cumulative(les, scale);
    Value::Histogram {
        buckets: les.iter().copied().zip(cumulative).collect(),
        sum: if scale == 1e9 {
            crate::prometheus::ns_to_secs(sum as f64)
        } else {
            sum as f64 / scale
        },
        count,
    }
}

/// The window summary value of `h`, values scaled down by `scale`.
fn window_value(window: &HistogramSnapshot, total: &HistogramSnapshot, scale: f64) -> Value {
    Value::Summary {
        quantiles: window
            .quantiles()
            .map(|(q, v)| (q, v as f64 / scale))
            .to_vec(),
        sum: total.sum as f64 / scale,
        count: total.count,
    }
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
    /// Gauges, seconds histograms and labeled series, one map per [`SERIES_KINDS`].
    labeled: [Family<Labeled>; 4],
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
                labeled: [
                    Family::new("labeled counters"),
                    Family::new("gauges"),
                    Family::new("labeled histograms"),
                    Family::new("seconds histograms"),
                ],
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
    /// Exported in the recorded unit, without a unit suffix, with the
    /// [`value_buckets`](MetricsConfig::value_buckets) layout; for durations use
    /// [`histogram_seconds`](Self::histogram_seconds).
    ///
    /// Past [`MetricsConfig::max_operations`] histograms, a new name gets the
    /// [`OVERFLOW_SERIES`] histogram.
    pub fn histogram(&self, name: &str) -> Arc<Histogram> {
        self.named(
            &self.inner.histograms,
            Kind::Histogram,
            name,
            Histogram::new,
        )
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

    /// The series of `kind`, `name` and `labels`, created by `make` on first use.
    /// Families of one kind are capped at [`MetricsConfig::max_operations`], and so are
    /// the label sets of one family: past a cap, the overflow family or series (every
    /// label value [`OVERFLOW_SERIES`]).
    fn labeled(
        &self,
        kind: SeriesKind,
        name: &str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> SeriesValue,
    ) -> Result<Arc<LabeledSeries>> {
        let families = &self.inner.labeled[kind_index(kind)];
        // The hot path: an existing series, found without allocating. Its key exists
        // only if its label names were checked when it was created.
        let found = find_key(labels, |key| {
            families.with(name, |f| f.series.get(key)).flatten()
        })
        .flatten();
        if let Some(s) = found {
            return Ok(s);
        }
        let labels = check_labels(labels)?;
        Ok(self.create_labeled(kind, name, labels, make))
    }

    fn create_labeled(
        &self,
        kind: SeriesKind,
        name: &str,
        labels: Labels,
        make: impl FnOnce() -> SeriesValue,
    ) -> Arc<LabeledSeries> {
        let families = &self.inner.labeled[kind_index(kind)];
        let cap = self.inner.config.max_operations;
        let key = label_key(&labels);
        if let Some(s) = families.with(name, |f| f.series.get(&key)).flatten() {
            return s;
        }
        let family = families.get_or_insert(name, cap, |k, _| Labeled {
            family: self.claim(claim_kind(kind), k),
            series: Family::new("label sets"),
        });
        family.series.get_or_insert(&key, cap, |_, overflow| {
            let labels = if overflow {
                labels
                    .into_iter()
                    .map(|(k, _)| (k, OVERFLOW_SERIES.to_owned()))
                    .collect()
            } else {
                labels
            };
            LabeledSeries {
                labels,
                value: make(),
                #[cfg(feature = "recorder")]
                facade: OnceLock::new(),
            }
        })
    }

    /// The counter `name` with `labels`: one series of the family `<ns>_<name>_total`
    /// (shared with [`counter(name)`](Self::counter), which is the series without
    /// labels), e.g. `cortex_cache_hits_total{cache="users"}`. Keep the handle on hot
    /// paths: the lookup builds a key.
    ///
    /// Label values are any text (escaped on export). Past
    /// [`MetricsConfig::max_operations`] label sets of one name, new sets share the
    /// series whose label values are all [`OVERFLOW_SERIES`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming a label name that does not match
    /// `[a-zA-Z_][a-zA-Z0-9_]*`, starts with `__`, is `le` or `quantile`, or is given twice.
    ///
    /// ```
    /// let metrics = cortex_metrics::Metrics::new();
    /// let hits = metrics.counter_with("cache.hits", &[("cache", "users")])?;
    /// hits.add(2);
    /// metrics.counter_with("cache.hits", &[("cache", "sessions")])?.increment();
    /// let text = metrics.prometheus();
    /// assert!(text.contains("cortex_cache_hits_total{cache=\"users\"} 2\n"));
    /// assert!(text.contains("cortex_cache_hits_total{cache=\"sessions\"} 1\n"));
    /// assert!(metrics.counter_with("x", &[("bad-name", "v")]).is_err());
    /// # Ok::<(), cortex_metrics::Error>(())
    /// ```
    pub fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> Result<Arc<Counter>> {
        if labels.is_empty() {
            return Ok(self.counter(name));
        }
        let s = self.labeled(SeriesKind::Counter, name, labels, || {
            SeriesValue::Counter(Arc::new(Counter::new()))
        })?;
        match &s.value {
            SeriesValue::Counter(c) => Ok(c.clone()),
            _ => unreachable!("the counter map holds counters only"),
        }
    }

    /// The value histogram `name` with `labels`: one series of the family of
    /// [`histogram(name)`](Self::histogram) (in the recorded unit).
    ///
    /// # Errors
    /// As [`counter_with`](Self::counter_with), for a bad label name.
    pub fn histogram_with(&self, name: &str, labels: &[(&str, &str)]) -> Result<Arc<Histogram>> {
        if labels.is_empty() {
            return Ok(self.histogram(name));
        }
        self.histogram_series(SeriesKind::Histogram, name, labels)
    }

    /// The duration histogram `name`: record nanoseconds
    /// ([`Histogram::record_duration`]); exported in seconds as the histogram family
    /// `<ns>_<name>_seconds` (a name already ending in `_seconds` gets no second one)
    /// with the [`histogram_buckets`](MetricsConfig::histogram_buckets) layout.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let metrics = cortex_metrics::Metrics::new();
    /// metrics.histogram_seconds("pool.db.acquire_wait").record_duration(Duration::from_millis(3));
    /// let text = metrics.prometheus();
    /// assert!(text.contains("# TYPE cortex_pool_db_acquire_wait_seconds histogram\n"));
    /// assert!(text.contains("cortex_pool_db_acquire_wait_seconds_bucket{le=\"0.005\"} 1\n"));
    /// assert!(text.contains("cortex_pool_db_acquire_wait_seconds_count 1\n"));
    /// ```
    pub fn histogram_seconds(&self, name: &str) -> Arc<Histogram> {
        let s = self.create_labeled(SeriesKind::HistogramSeconds, name, Vec::new(), || {
            SeriesValue::Histogram(Arc::new(Histogram::new()))
        });
        match &s.value {
            SeriesValue::Histogram(h) => h.clone(),
            _ => unreachable!("the histogram maps hold histograms only"),
        }
    }

    /// The duration histogram `name` with `labels`, in the family of
    /// [`histogram_seconds(name)`](Self::histogram_seconds).
    ///
    /// # Errors
    /// As [`counter_with`](Self::counter_with), for a bad label name.
    pub fn histogram_seconds_with(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<Arc<Histogram>> {
        self.histogram_series(SeriesKind::HistogramSeconds, name, labels)
    }

    fn histogram_series(
        &self,
        kind: SeriesKind,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<Arc<Histogram>> {
        let s = self.labeled(kind, name, labels, || {
            SeriesValue::Histogram(Arc::new(Histogram::new()))
        })?;
        match &s.value {
            SeriesValue::Histogram(h) => Ok(h.clone()),
            _ => unreachable!("the histogram maps hold histograms only"),
        }
    }

    /// The facade handle of the histogram `name` with `labels` (a duration histogram
    /// when `seconds`), made by `make` once per labeled series.
    #[cfg(feature = "recorder")]
    pub(crate) fn facade_histogram(
        &self,
        seconds: bool,
        name: &str,
        labels: &[(&str, &str)],
        make: impl FnOnce(Arc<Histogram>) -> metrics::Histogram,
    ) -> Result<metrics::Histogram> {
        if labels.is_empty() && !seconds {
            return Ok(make(self.histogram(name)));
        }
        let kind = if seconds {
            SeriesKind::HistogramSeconds
        } else {
            SeriesKind::Histogram
        };
        let s = self.labeled(kind, name, labels, || {
            SeriesValue::Histogram(Arc::new(Histogram::new()))
        })?;
        match &s.value {
            SeriesValue::Histogram(h) => Ok(s.facade.get_or_init(|| make(h.clone())).clone()),
            _ => unreachable!("the histogram maps hold histograms only"),
        }
    }

    /// The gauge `name` (no labels), exported as the gauge family `<ns>_<name>`.
    ///
    /// ```
    /// let metrics = cortex_metrics::Metrics::new();
    /// metrics.gauge("queue.depth").set(7.0);
    /// assert!(metrics.prometheus().contains("cortex_queue_depth 7\n"));
    /// ```
    pub fn gauge(&self, name: &str) -> Arc<Gauge> {
        let s = self.create_labeled(SeriesKind::Gauge, name, Vec::new(), || {
            SeriesValue::Gauge(Arc::new(Gauge::new()), Mutex::new(None))
        });
        match &s.value {
            SeriesValue::Gauge(g, _) => g.clone(),
            _ => unreachable!("the gauge map holds gauges only"),
        }
    }

    /// The gauge `name` with `labels`, in the family of [`gauge(name)`](Self::gauge).
    /// While a [`gauge_fn`](Self::gauge_fn) callback is set for the same series, the
    /// callback's value is exported instead.
    ///
    /// # Errors
    /// As [`counter_with`](Self::counter_with), for a bad label name.
    ///
    /// ```
    /// let metrics = cortex_metrics::Metrics::new();
    /// let open = metrics.gauge_with("pool.connections", &[("pool", "db"), ("state", "open")])?;
    /// open.inc();
    /// assert!(metrics.prometheus().contains("cortex_pool_connections{pool=\"db\",state=\"open\"} 1\n"));
    /// # Ok::<(), cortex_metrics::Error>(())
    /// ```
    pub fn gauge_with(&self, name: &str, labels: &[(&str, &str)]) -> Result<Arc<Gauge>> {
        let s = self.labeled(SeriesKind::Gauge, name, labels, || {
            SeriesValue::Gauge(Arc::new(Gauge::new()), Mutex::new(None))
        })?;
        match &s.value {
            SeriesValue::Gauge(g, _) => Ok(g.clone()),
            _ => unreachable!("the gauge map holds gauges only"),
        }
    }

    /// A gauge read by calling `read` when scraped (and snapshotted): pool sizes,
    /// queue lengths, anything cheaper to read on demand than to keep current. It is
    /// the series `name` with `labels` of the gauge family; calling again for the same
    /// series replaces the callback (a recreated pool takes over its series).
    ///
    /// The registry keeps `read` for its own life: capture a
    /// [`Weak`](std::sync::Weak) to what it reads, not an `Arc`, and answer `f64::NAN`
    /// once it is gone. `read` runs on the scraping thread, under no lock of the
    /// registry; keep it quick and non-blocking.
    ///
    /// # Errors
    /// As [`counter_with`](Self::counter_with), for a bad label name.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    ///
    /// let metrics = cortex_metrics::Metrics::new();
    /// let idle = Arc::new(AtomicUsize::new(3));
    /// let weak = Arc::downgrade(&idle);
    /// metrics.gauge_fn("pool.idle", &[("pool", "db")], move || {
    ///     weak.upgrade().map_or(f64::NAN, |n| n.load(Ordering::Relaxed) as f64)
    /// })?;
    /// assert!(metrics.prometheus().contains("cortex_pool_idle{pool=\"db\"} 3\n"));
    /// # Ok::<(), cortex_metrics::Error>(())
    /// ```
    pub fn gauge_fn(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        read: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Result<()> {
        let s = self.labeled(SeriesKind::Gauge, name, labels, || {
            SeriesValue::Gauge(Arc::new(Gauge::new()), Mutex::new(None))
        })?;
        if let SeriesValue::Gauge(_, callback) = &s.value {
            *callback
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(read));
        }
        Ok(())
    }

    /// Every labeled series, by kind, name, then labels.
    fn labeled_entries(&self) -> Vec<LabeledEntry> {
        let mut out = Vec::new();
        for (kind, families) in SERIES_KINDS.iter().zip(&self.inner.labeled) {
            let mut fams = families.entries();
            fams.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, fam) in fams {
                let mut series = fam.series.entries();
                series.sort_by(|a, b| a.1.labels.cmp(&b.1.labels));
                for (_, s) in series {
                    out.push((*kind, name.clone(), fam.family.clone(), s));
                }
            }
        }
        out
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
        for (_, _, _, s) in self.labeled_entries() {
            match &s.value {
                SeriesValue::Counter(c) => c.reset_window(),
                SeriesValue::Histogram(h) => {
                    h.reset_window();
                }
                SeriesValue::Gauge(..) => {}
            }
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

        let series = self
            .labeled_entries()
            .into_iter()
            .map(|(kind, name, _, s)| {
                let (value, histogram) = match &s.value {
                    SeriesValue::Counter(c) => (c.total() as f64, None),
                    SeriesValue::Gauge(g, f) => (gauge_value(g, f), None),
                    SeriesValue::Histogram(h) => {
                        let (window, total) = h.snapshots();
                        (0.0, Some(SeriesHistogram { window, total }))
                    }
                };
                SeriesSnapshot {
                    name: name.to_string(),
                    kind,
                    labels: s.labels.clone(),
                    value,
                    histogram,
                }
            })
            .collect();

        MetricsSnapshot {
            window_started_unix_ms: self.inner.window_started_ms.load(Relaxed),
            taken_unix_ms: unix_ms(SystemTime::now()),
            operations,
            categories,
            endpoints,
            histograms,
            counters,
            series,
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

    /// The Prometheus text exposition (format 0.0.4) of everything: see
    /// [`crate::prometheus`] for the families. Histogram, counter and gauge families
    /// carry the names given when their series were registered.
    pub fn prometheus(&self) -> String {
        self.exposition(Format::Prometheus)
    }

    /// The text exposition in `format` (pick it from the scrape's `Accept` header with
    /// [`Format::from_accept`]).
    ///
    /// ```
    /// use cortex_metrics::{Metrics, prometheus::Format};
    ///
    /// let metrics = Metrics::new();
    /// metrics.counter("jobs.done").increment();
    /// let text = metrics.exposition(Format::OpenMetrics);
    /// assert!(text.contains("# TYPE cortex_jobs_done counter\ncortex_jobs_done_total 1\n"));
    /// assert!(text.ends_with("# EOF\n"));
    /// ```
    pub fn exposition(&self, format: Format) -> String {
        let config = &self.inner.config;
        let ns = sanitize(&config.namespace);
        let (seconds, values) = (&config.histogram_buckets, &config.value_buckets);
        let summaries = config.export_summaries;
        let snap = self.snapshot();
        let mut x = Exposition::default();
        let p = crate::prometheus::Exposition::family;

        let name = format!("{ns}_operation_duration_seconds");
        let mut ops = self.inner.operations.entries();
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, op) in &ops {
            let mut counts = op.ok.counts();
            counts.add(&op.err.counts());
            p(
                &mut x,
                &name,
                Type::Histogram,
                crate::prometheus::OPERATION_HELP,
            )
            .push(
                crate::prometheus::op_labels(op.name(), op.category()),
                histogram_value(&counts, seconds, 1e9),
            );
        }
        if summaries {
            let window = window_family(&name);
            for op in &snap.operations {
                p(
                    &mut x,
                    &window,
                    Type::Summary,
                    crate::prometheus::OPERATION_WINDOW_HELP,
                )
                .push(
                    crate::prometheus::op_labels(&op.name, op.category.as_deref()),
                    crate::prometheus::latency_summary(
                        &op.window.latency,
                        op.total.total_ms,
                        op.total.count,
                    ),
                );
            }
        }
        crate::prometheus::operation_errors(&mut x, &ns, &snap);

        let name = format!("{ns}_http_request_duration_seconds");
        let mut endpoints: Vec<(Arc<str>, Arc<str>, Arc<Endpoint>)> = Vec::new();
        for (route, methods) in self.inner.endpoints.entries() {
            for (method, e) in methods.entries() {
                endpoints.push((route.clone(), method, e));
            }
        }
        endpoints.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        for (route, method, e) in &endpoints {
            p(&mut x, &name, Type::Histogram, crate::prometheus::HTTP_HELP).push(
                crate::prometheus::endpoint_labels(method, route),
                histogram_value(&e.latency.counts(), seconds, 1e9),
            );
        }
        if summaries {
            let window = window_family(&name);
            for e in &snap.endpoints {
                p(
                    &mut x,
                    &window,
                    Type::Summary,
                    crate::prometheus::HTTP_WINDOW_HELP,
                )
                .push(
                    crate::prometheus::endpoint_labels(&e.method, &e.route),
                    crate::prometheus::latency_summary(
                        &e.window.latency,
                        e.total.total_ms,
                        e.total.count,
                    ),
                );
            }
        }
        crate::prometheus::http_requests(&mut x, &ns, &snap);

        let mut hists = self.inner.histograms.entries();
        hists.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, h) in &hists {
            let help = crate::prometheus::series_help(SeriesKind::Histogram, name);
            p(&mut x, &h.family, Type::Histogram, &help)
                .push(Vec::new(), histogram_value(&h.series.counts(), values, 1.0));
            if summaries {
                let (window, total) = h.series.snapshots();
                p(
                    &mut x,
                    &window_family(&h.family),
                    Type::Summary,
                    &crate::prometheus::window_help(name),
                )
                .push(Vec::new(), window_value(&window, &total, 1.0));
            }
        }
        let mut counters = self.inner.counters.entries();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, c) in &counters {
            p(
                &mut x,
                &c.family,
                Type::Counter,
                &crate::prometheus::counter_help(name),
            )
            .push(Vec::new(), Value::Number(c.series.total() as f64));
        }

        for (kind, name, family, s) in self.labeled_entries() {
            let help = crate::prometheus::series_help(kind, &name);
            let labels = s.labels.clone();
            match &s.value {
                SeriesValue::Counter(c) => p(&mut x, &family, Type::Counter, &help)
                    .push(labels, Value::Number(c.total() as f64)),
                SeriesValue::Gauge(g, f) => p(&mut x, &family, Type::Gauge, &help)
                    .push(labels, Value::Number(gauge_value(g, f))),
                SeriesValue::Histogram(h) => {
                    let (les, scale) = if kind == SeriesKind::HistogramSeconds {
                        (seconds, 1e9)
                    } else {
                        (values, 1.0)
                    };
                    p(&mut x, &family, Type::Histogram, &help)
                        .push(labels.clone(), histogram_value(&h.counts(), les, scale));
                    if summaries {
                        let (window, total) = h.snapshots();
                        p(
                            &mut x,
                            &window_family(&family),
                            Type::Summary,
                            &crate::prometheus::window_help(&name),
                        )
                        .push(labels, window_value(&window, &total, scale));
                    }
                }
            }
        }

        if config.export_process
            && let Some((rss, vsz)) = process_memory()
        {
            p(
                &mut x,
                crate::prometheus::PROCESS_RESIDENT,
                Type::Gauge,
                "Resident memory size in bytes.",
            )
            .push(Vec::new(), Value::Number(rss));
            p(
                &mut x,
                crate::prometheus::PROCESS_VIRTUAL,
                Type::Gauge,
                "Virtual memory size in bytes.",
            )
            .push(Vec::new(), Value::Number(vsz));
        }
        x.write(format)
    }
}

/// A gauge's exported value: its callback's answer while one is set.
fn gauge_value(gauge: &Gauge, callback: &Mutex<Option<GaugeFn>>) -> f64 {
    // Clone the callback out, so it runs under no lock.
    let f = callback
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    f.map_or_else(|| gauge.get(), |f| f())
}
