//! A [`metrics::Recorder`] that records into a [`Metrics`] registry, so code
//! instrumented with `metrics::counter!`, `gauge!` and `histogram!` lands in the same
//! exposition as everything else.
//!
//! How the `metrics` crate's series map onto the registry:
//! - `counter!(name, labels)`: [`Metrics::counter_with`]; a trailing `_total` of the
//!   name is dropped, since the exposition adds it (`requests_total` stays
//!   `<ns>_requests_total`, not `..._total_total`);
//! - `gauge!(name, labels)`: [`Metrics::gauge_with`];
//! - `histogram!(name, labels)`: a name ending in `_seconds` is a duration in seconds,
//!   recorded in nanoseconds into [`Metrics::histogram_seconds_with`] (exported as
//!   `<ns>_<name>`, seconds); any other name is a value histogram
//!   ([`Metrics::histogram_with`]) and its values are rounded to whole units (negative
//!   values count as 0): name a fractional measure in a finer unit.
//!
//! Descriptions and units given with `describe_*!` are not used: HELP lines name the
//! series as registered. A label name the registry refuses (see
//! [`Metrics::counter_with`]) gets a handle that records nothing, and a warning, at most
//! one a minute.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use cortex_support::warn::WarnLimiter;
use metrics::{Key, KeyName, Metadata, SharedString, Unit};

use crate::{Counter, Gauge, Histogram, Metrics};

/// A [`metrics::Recorder`] writing into a [`Metrics`] registry (feature `recorder`).
///
/// Install it once with [`metrics::set_global_recorder`], or use it for a scope with
/// [`metrics::with_local_recorder`]:
///
/// ```
/// use cortex_metrics::{Metrics, MetricsRecorder};
///
/// let registry = Metrics::new();
/// let recorder = MetricsRecorder::new(registry.clone());
/// metrics::with_local_recorder(&recorder, || {
///     metrics::counter!("jobs_total", "queue" => "mail").increment(2);
///     metrics::gauge!("queue_depth", "queue" => "mail").set(5.0);
///     metrics::histogram!("job_duration_seconds").record(0.003);
/// });
/// let text = registry.prometheus();
/// assert!(text.contains("cortex_jobs_total{queue=\"mail\"} 2\n"));
/// assert!(text.contains("cortex_queue_depth{queue=\"mail\"} 5\n"));
/// assert!(text.contains("cortex_job_duration_seconds_bucket{le=\"0.005\"} 1\n"));
/// ```
#[derive(Debug)]
pub struct MetricsRecorder {
    metrics: Metrics,
    refused: WarnLimiter,
    // `counter!` and its siblings register on every call; a handle made once per key is
    // found again by the key's precomputed hash, without parsing labels or allocating.
    counters: Handles<metrics::Counter>,
    gauges: Handles<metrics::Gauge>,
    histograms: Handles<metrics::Histogram>,
}

/// Handles already made, by key.
type Handles<T> = RwLock<HashMap<Key, T, BuildHasherDefault<KeyHash>>>;

/// A [`Key`] hashes itself by writing the hash it computed when it was made; this hasher
/// keeps that value instead of hashing it again. Other input (never written by `Key`) is
/// folded in with FNV-1a, so it stays a correct hasher.
#[derive(Default)]
struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// The handle for `key` in `map`, made by `make` the first time; a refused key
/// (`make` answers `None`) is not kept, so each later use warns (rate-limited) again.
fn cached<T: Clone>(map: &Handles<T>, key: &Key, make: impl FnOnce() -> Option<T>) -> Option<T> {
    if let Some(h) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
        return Some(h.clone());
    }
    let made = make()?;
    Some(
        map.write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_insert(made)
            .clone(),
    )
}

impl MetricsRecorder {
    /// A recorder writing into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            refused: WarnLimiter::new(Duration::from_secs(60)),
            counters: Handles::default(),
            gauges: Handles::default(),
            histograms: Handles::default(),
        }
    }

    /// Install it as the process's recorder, so `metrics::counter!` and the rest from
    /// any crate (user code, libraries instrumented with `metrics`) land in the registry.
    ///
    /// # Errors
    /// [`Error::RecorderInstalled`](crate::Error::RecorderInstalled) when a recorder is
    /// already installed (the `metrics` crate takes one per process, for its life).
    ///
    /// ```
    /// use cortex_metrics::{Error, Metrics, MetricsRecorder};
    ///
    /// let registry = Metrics::new();
    /// MetricsRecorder::new(registry.clone()).install()?;
    /// metrics::counter!("installs_total", "by" => "doc").increment(1);
    /// assert!(registry.prometheus().contains("cortex_installs_total{by=\"doc\"} 1\n"));
    /// let again = MetricsRecorder::new(Metrics::new()).install();
    /// assert!(matches!(again, Err(Error::RecorderInstalled)));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn install(self) -> crate::Result<()> {
        metrics::set_global_recorder(self).map_err(|_| crate::Error::RecorderInstalled)
    }

    /// The registry it writes into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn refused(&self, key: &Key, err: &crate::Error) {
        self.refused.note(|suppressed| {
            tracing::warn!(
                name = key.name(),
                error = %err,
                suppressed,
                "metrics series refused: its handle records nothing (at most one warning a minute)"
            );
        });
    }
}

/// Run `f` on the labels of `key`, on the stack for up to 8 labels: `histogram!` and
/// its siblings register on every call, so this path must not allocate.
fn with_labels<R>(key: &Key, f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
    let mut buf = [("", ""); 8];
    let mut n = 0;
    for l in key.labels() {
        if n == buf.len() {
            let all: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            return f(&all);
        }
        buf[n] = (l.key(), l.value());
        n += 1;
    }
    f(&buf[..n])
}

/// Serializes [`metrics::CounterFn::absolute`]: a read then an add must not interleave
/// with another one, or both would add the same difference.
static ABSOLUTE: Mutex<()> = Mutex::new(());

impl metrics::CounterFn for Counter {
    fn increment(&self, value: u64) {
        self.add(value);
    }

    fn absolute(&self, value: u64) {
        let _guard = ABSOLUTE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total = self.total();
        if value > total {
            self.add(value - total);
        }
    }
}

impl metrics::GaugeFn for Gauge {
    fn increment(&self, value: f64) {
        self.add(value);
    }

    fn decrement(&self, value: f64) {
        self.sub(value);
    }

    fn set(&self, value: f64) {
        Gauge::set(self, value);
    }
}

/// A `histogram!` in seconds, recorded as nanoseconds.
struct Seconds(Arc<Histogram>);

impl metrics::HistogramFn for Seconds {
    fn record(&self, value: f64) {
        // `as` saturates (and maps NaN and negatives to 0): a bad value cannot panic.
        self.0.record((value * 1e9) as u64);
    }
}

/// A value `histogram!`, rounded to whole units.
struct Values(Arc<Histogram>);

impl metrics::HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.record(value.round() as u64);
    }
}

impl metrics::Recorder for MetricsRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> metrics::Counter {
        cached(&self.counters, key, || {
            let name = key.name();
            let name = name.strip_suffix("_total").unwrap_or(name);
            match with_labels(key, |l| self.metrics.counter_with(name, l)) {
                Ok(c) => Some(metrics::Counter::from_arc(c)),
                Err(e) => {
                    self.refused(key, &e);
                    None
                }
            }
        })
        .unwrap_or_else(metrics::Counter::noop)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> metrics::Gauge {
        cached(&self.gauges, key, || {
            match with_labels(key, |l| self.metrics.gauge_with(key.name(), l)) {
                Ok(g) => Some(metrics::Gauge::from_arc(g)),
                Err(e) => {
                    self.refused(key, &e);
                    None
                }
            }
        })
        .unwrap_or_else(metrics::Gauge::noop)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        cached(&self.histograms, key, || {
            let name = key.name();
            let seconds = name.ends_with("_seconds");
            let made = with_labels(key, |labels| {
                self.metrics.facade_histogram(seconds, name, labels, |h| {
                    if seconds {
                        metrics::Histogram::from_arc(Arc::new(Seconds(h)))
                    } else {
                        metrics::Histogram::from_arc(Arc::new(Values(h)))
                    }
                })
            });
            made.map_err(|e| self.refused(key, &e)).ok()
        })
        .unwrap_or_else(metrics::Histogram::noop)
    }
}
