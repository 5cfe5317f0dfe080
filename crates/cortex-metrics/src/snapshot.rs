use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::HistogramSnapshot;

/// Latency percentiles in milliseconds, from a duration histogram (nanoseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Mean.
    pub mean_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

impl From<&HistogramSnapshot> for LatencySummary {
    fn from(h: &HistogramSnapshot) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            mean_ms: h.mean / 1e6,
            min_ms: ms(h.min),
            max_ms: ms(h.max),
            p50_ms: ms(h.p50),
            p90_ms: ms(h.p90),
            p95_ms: ms(h.p95),
            p99_ms: ms(h.p99),
            p999_ms: ms(h.p999),
        }
    }
}

/// Calls of one operation (or category) over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallStats {
    /// Calls.
    pub count: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed (an `Err`, a panic, or dropped before completion).
    pub errors: u64,
    /// `successes / count` (1.0 when there were no calls).
    pub success_rate: f64,
    /// Time spent in all calls.
    pub total_ms: f64,
    /// Latency of all calls, successful or not.
    pub latency: LatencySummary,
}

/// The most recent call of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastCall {
    /// How long it took.
    pub duration_ms: f64,
    /// Whether it succeeded.
    pub success: bool,
}

/// One operation: its window since the last reset and its totals since start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationSnapshot {
    /// The operation name.
    pub name: String,
    /// Its category, when it was registered with one.
    pub category: Option<String>,
    /// Since the last reset.
    pub window: CallStats,
    /// Since the registry was created.
    pub total: CallStats,
    /// The latest call.
    pub last: Option<LastCall>,
}

/// A category: the sum of the operations registered in it, over the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategorySnapshot {
    /// The category name.
    pub name: String,
    /// Calls, successes, errors and time (latency percentiles merged over the operations).
    pub window: CallStats,
}

/// HTTP requests of one endpoint over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestStats {
    /// Requests.
    pub count: u64,
    /// Time spent answering them.
    pub total_ms: f64,
    /// Latency.
    pub latency: LatencySummary,
    /// Requests per status code.
    pub statuses: BTreeMap<u16, u64>,
}

/// One endpoint: a method and a route template such as `/users/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointSnapshot {
    /// HTTP method: one of the standard nine, `OTHER` for any other method, or
    /// `(other)` for the overflow series.
    pub method: String,
    /// Route template (never the raw path), or `(other)` for the overflow series.
    pub route: String,
    /// Since the last reset.
    pub window: RequestStats,
    /// Since the registry was created.
    pub total: RequestStats,
}

/// A named value histogram (batch sizes, payload bytes...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedHistogram {
    /// The name.
    pub name: String,
    /// Since the last reset.
    pub window: HistogramSnapshot,
    /// Since the registry was created.
    pub total: HistogramSnapshot,
}

/// A named counter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// The name.
    pub name: String,
    /// Since the last reset.
    pub window: u64,
    /// Since the registry was created.
    pub total: u64,
}

/// Everything a [`Metrics`](crate::Metrics) registry holds, as plain data: what
/// `GET /metrics/performance` answers and what [`export_json`](crate::Metrics::export_json)
/// writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// When the current window started (Unix time, milliseconds).
    pub window_started_unix_ms: u64,
    /// When this snapshot was taken (Unix time, milliseconds).
    pub taken_unix_ms: u64,
    /// Operations, by name.
    pub operations: Vec<OperationSnapshot>,
    /// Categories, by name.
    pub categories: Vec<CategorySnapshot>,
    /// HTTP endpoints, by route then method.
    pub endpoints: Vec<EndpointSnapshot>,
    /// Value histograms, by name.
    pub histograms: Vec<NamedHistogram>,
    /// Counters, by name.
    pub counters: Vec<CounterSnapshot>,
    /// Gauges, seconds histograms and labeled series, by kind, name, then labels.
    #[serde(default)]
    pub series: Vec<SeriesSnapshot>,
}

/// What a [`SeriesSnapshot`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SeriesKind {
    /// A [`Counter`](crate::Counter): `value` is its total.
    Counter,
    /// A [`Gauge`](crate::Gauge) or a callback gauge: `value` is its value.
    Gauge,
    /// A value [`Histogram`](crate::Histogram), in the recorded unit.
    Histogram,
    /// A duration [`Histogram`](crate::Histogram) recorded in nanoseconds, exported in
    /// seconds.
    HistogramSeconds,
}

/// Window and cumulative summaries of a histogram series.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesHistogram {
    /// Since the last reset.
    pub window: HistogramSnapshot,
    /// Since the registry was created.
    pub total: HistogramSnapshot,
}

/// One gauge, seconds histogram or labeled series (see
/// [`Metrics::counter_with`](crate::Metrics::counter_with) and its siblings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesSnapshot {
    /// The name as registered.
    pub name: String,
    /// What it is.
    pub kind: SeriesKind,
    /// Label names and values, sorted by name.
    pub labels: Vec<(String, String)>,
    /// A counter's total or a gauge's value (0 for histograms).
    pub value: f64,
    /// A histogram's summaries (`None` for counters and gauges).
    pub histogram: Option<SeriesHistogram>,
}
