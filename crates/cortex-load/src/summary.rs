//! The result of a run: counts, latency percentiles, errors grouped by endpoint, and
//! the text report.

use std::fmt::Write as _;

use cortex_metrics::{Histogram, HistogramBuckets, HistogramSnapshot};

use crate::config::HttpVersion;
use serde::{Deserialize, Serialize};

/// Closed or open loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// Each user sends, waits for the answer, thinks, sends again. Latency is measured
    /// from the real send time, so a server stall delays the next requests instead of
    /// showing in the percentiles (coordinated omission).
    Closed,
    /// Requests follow a fixed schedule (`rate` per second in total); latency is
    /// measured from the intended send time, so a stall shows in the percentiles.
    Open,
}

/// Why a request failed without an HTTP answer, as grouped in the summary and written
/// to output files (as its [`as_str`](Self::as_str) name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No answer within the timeout.
    Timeout,
    /// The connection could not be established.
    Connect,
    /// The connection failed while sending or receiving (reset, protocol error).
    Http,
    /// The TLS handshake failed: most often the server's certificate is not trusted
    /// (see [`LoadConfig::ca_file`](crate::LoadConfig::ca_file)) or names another host.
    Tls,
}

impl ErrorKind {
    /// Short name used in reports and output files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Http => "http",
            Self::Tls => "tls",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Latency statistics in milliseconds (within
/// [`cortex_metrics::RELATIVE_ERROR`] of the exact values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Fastest request.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
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
    /// Slowest request.
    pub max_ms: f64,
}

impl Latency {
    /// From a snapshot of a histogram of nanoseconds.
    pub fn from_nanos(s: &HistogramSnapshot) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            min_ms: ms(s.min),
            mean_ms: s.mean / 1e6,
            p50_ms: ms(s.p50),
            p90_ms: ms(s.p90),
            p95_ms: ms(s.p95),
            p99_ms: ms(s.p99),
            p999_ms: ms(s.p999),
            max_ms: ms(s.max),
        }
    }
}

/// Failed requests of one endpoint with one status or error kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorGroup {
    /// Path sent.
    pub endpoint: String,
    /// Method sent.
    pub method: String,
    /// HTTP status, when an answer came (>= 400).
    pub status: Option<u16>,
    /// Why no answer came (`timeout`, `connect`, `http`, `tls` in JSON).
    pub error: Option<ErrorKind>,
    /// Number of requests.
    pub count: u64,
}

/// Requests of one scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// Scenario name.
    pub scenario: String,
    /// Path sent.
    pub endpoint: String,
    /// Method sent.
    pub method: String,
    /// Requests sent.
    pub total: u64,
    /// Requests that failed (status >= 400 or no answer).
    pub failures: u64,
}

/// One point of the latency-by-percentile curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// Percentile, `0..100`.
    pub percentile: f64,
    /// Latency at that percentile, ms.
    pub latency_ms: f64,
}

/// The outcome of a load test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Closed or open loop.
    pub mode: Mode,
    /// Simulated users (connections).
    pub users: u32,
    /// Target rate (open loop), requests per second.
    pub target_rate: Option<f64>,
    /// Requests completed (answered or failed).
    pub total: u64,
    /// Requests answered with a status below 400.
    pub successes: u64,
    /// Requests answered with 400 or more, or not answered.
    pub failures: u64,
    /// Successes over total, percent.
    pub success_rate: f64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Wall time of the run, seconds.
    pub duration_secs: f64,
    /// `total / duration_secs`.
    pub requests_per_sec: f64,
    /// Latency of every request, failed ones included (a timeout counts as the time
    /// waited). Open loop: from the intended send time.
    pub latency: Latency,
    /// Requests per scenario.
    pub endpoints: Vec<EndpointStats>,
    /// Failures grouped by endpoint and status or error kind, most frequent first.
    pub errors: Vec<ErrorGroup>,
    /// Latency by percentile, for plots (0% to 99.999% on a log scale, then 100%).
    pub percentiles: Vec<PercentilePoint>,
    /// The HTTP version the run's connections spoke: [`HttpVersion::Http1`] (`"1.1"`)
    /// or [`HttpVersion::Http2`] (`"2"`), never `Auto`. On `https://` the server picks
    /// by ALPN (every connection of a run asks the same, so they agree); if any
    /// connection spoke HTTP/2 the run did. A run that opened no connection reports
    /// the version asked for, HTTP/1.1 for `auto`. A summary saved before this field
    /// existed reads back as HTTP/1.1, the only version spoken then.
    #[serde(default = "http1")]
    pub http_version: HttpVersion,
    /// The recorded latency histogram (nanoseconds), for exact percentile
    /// distributions (the CLI's `.hgrm` file). Not serialized: `None` in a summary read
    /// back from JSON.
    #[serde(skip)]
    pub latency_buckets: Option<LatencyBuckets>,
}

/// The buckets of a run's latency histogram (nanoseconds), as
/// [`cortex_metrics::Histogram::buckets`] returns them: every recorded request is
/// counted in exactly one bucket.
#[derive(Clone, Debug)]
pub struct LatencyBuckets(pub HistogramBuckets);

impl LatencyBuckets {
    /// The buckets.
    pub fn buckets(&self) -> &HistogramBuckets {
        &self.0
    }
}

impl PartialEq for LatencyBuckets {
    /// Same buckets with the same counts, and the same exact min and max.
    fn eq(&self, other: &Self) -> bool {
        self.0.min() == other.0.min()
            && self.0.max() == other.0.max()
            && self.0.iter().eq(other.0.iter())
    }
}

/// The version of summaries saved without one.
fn http1() -> HttpVersion {
    HttpVersion::Http1
}

impl Summary {
    /// The latency-by-percentile curve of a histogram of nanoseconds: points evenly
    /// spaced on the `log10(1 / (1 - p))` axis of HdrHistogram plots, plus the max.
    pub(crate) fn curve(h: &Histogram) -> Vec<PercentilePoint> {
        let mut points = Vec::new();
        // 10 points per decade from 0% to 99.999%.
        for i in 0..=50 {
            let x = f64::from(i) / 10.0;
            let p = 1.0 - 10f64.powf(-x);
            if let Some(v) = h.quantile(p) {
                points.push(PercentilePoint {
                    // Rounded so the files show 99.9, not 99.90000000000001.
                    percentile: (p * 1e8).round() / 1e6,
                    latency_ms: v as f64 / 1e6,
                });
            }
        }
        if let Some(v) = h.quantile(1.0) {
            points.push(PercentilePoint {
                percentile: 100.0,
                latency_ms: v as f64 / 1e6,
            });
        }
        points
    }

    /// A human-readable report: counts, success rate, throughput, latency
    /// percentiles, per-endpoint counts and errors grouped by endpoint and status.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let mode = match (self.mode, self.target_rate) {
            (Mode::Open, Some(r)) => format!("open loop, {r} req/s target"),
            _ => "closed loop".to_owned(),
        };
        let _ = writeln!(
            out,
            "Load test: {} users, {mode}, HTTP/{}",
            self.users,
            self.http_version.as_str()
        );
        let _ = writeln!(
            out,
            "Requests:   {} total, {} succeeded, {} failed ({:.2}% success)",
            self.total, self.successes, self.failures, self.success_rate
        );
        let _ = writeln!(
            out,
            "Duration:   {:.2} s, {:.1} req/s, {} bytes received",
            self.duration_secs, self.requests_per_sec, self.bytes_received
        );
        if let (Mode::Open, Some(target)) = (self.mode, self.target_rate)
            && self.requests_per_sec < 0.95 * target
        {
            // Latencies stay honest (measured from the schedule), but the reader must
            // know the schedule was not kept.
            let _ = writeln!(
                out,
                "Rate:       target {target} req/s NOT reached ({:.1} req/s): the server or the {} users are the limit",
                self.requests_per_sec, self.users
            );
        }
        let l = &self.latency;
        let _ = writeln!(
            out,
            "Latency ms: min {:.3}  mean {:.3}  p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.min_ms, l.mean_ms, l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        if self.endpoints.len() > 1 {
            let _ = writeln!(out, "Scenarios:");
            for e in &self.endpoints {
                let _ = writeln!(
                    out,
                    "  {:<20} {:<7} {:<30} {:>10} requests {:>8} failed",
                    e.scenario, e.method, e.endpoint, e.total, e.failures
                );
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "Errors:     none");
        } else {
            let _ = writeln!(out, "Errors by endpoint and status:");
            for e in &self.errors {
                let what = match (e.status, &e.error) {
                    (Some(s), _) => format!("HTTP {s}"),
                    (None, Some(k)) => k.as_str().to_owned(),
                    (None, None) => "unknown".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "  {:<7} {:<30} {:<10} {:>10}",
                    e.method, e.endpoint, what, e.count
                );
            }
        }
        out
    }

    /// The latency-by-percentile plot as a standalone SVG document.
    pub fn plot_svg(&self) -> String {
        super::plot::percentile_svg(self)
    }
}
