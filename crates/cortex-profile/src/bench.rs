//! Timing an operation: warm-up, timed iterations, summary statistics, comparison.

use std::fmt;
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const DEFAULT_WARMUP: u32 = 10;
const DEFAULT_ITERATIONS: u32 = 100;

/// A benchmark of one operation: `warmup` untimed calls, then `iterations` timed ones.
///
/// Every call is timed on its own with [`Instant`], so the samples include the time to
/// create the future and await it; the output goes through [`black_box`] so the work is
/// not optimised away.
///
/// ```
/// use cortex_profile::Benchmark;
///
/// let result = Benchmark::new("sum")
///     .warmup(5)
///     .iterations(50)
///     .run_sync(|| (0..1_000u64).sum::<u64>())?;
/// assert_eq!(result.iterations, 50);
/// assert!(result.min_ns <= result.median_ns && result.median_ns <= result.max_ns);
/// println!("{result}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Async operations run on the caller's runtime:
///
/// ```
/// use std::time::Duration;
/// use cortex_profile::Benchmark;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let result = Benchmark::new("sleep")
///     .warmup(1)
///     .iterations(5)
///     .run(|| tokio::time::sleep(Duration::from_millis(1)))
///     .await?;
/// assert!(result.median() >= Duration::from_millis(1));
/// # Ok(())
/// # }
/// ```
#[must_use = "a Benchmark does nothing until `run` or `run_sync` is called"]
#[derive(Debug, Clone)]
pub struct Benchmark {
    name: String,
    warmup: u32,
    iterations: u32,
}

impl Benchmark {
    /// A benchmark named `name` (the operation name used in baselines and tables).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            warmup: DEFAULT_WARMUP,
            iterations: DEFAULT_ITERATIONS,
        }
    }

    /// Untimed calls before measuring (caches, connections, JIT-like lazy init).
    /// Default: 10. Zero is allowed.
    pub fn warmup(mut self, n: u32) -> Self {
        self.warmup = n;
        self
    }

    /// Timed calls. Default: 100. Must be at least 1.
    pub fn iterations(mut self, n: u32) -> Self {
        self.iterations = n;
        self
    }

    /// Run an async operation: `f` is called once per iteration and its future awaited.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the name is empty or `iterations` is zero.
    pub async fn run<F, Fut>(self, mut f: F) -> Result<BenchResult>
    where
        F: FnMut() -> Fut,
        Fut: Future,
    {
        self.validate()?;
        for _ in 0..self.warmup {
            black_box(f().await);
        }
        let mut samples = Vec::with_capacity(self.iterations as usize);
        for _ in 0..self.iterations {
            let start = Instant::now();
            let out = f().await;
            samples.push(start.elapsed());
            black_box(out);
        }
        self.finish(&samples)
    }

    /// Run a synchronous operation.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the name is empty or `iterations` is zero.
    pub fn run_sync<F, T>(self, mut f: F) -> Result<BenchResult>
    where
        F: FnMut() -> T,
    {
        self.validate()?;
        for _ in 0..self.warmup {
            black_box(f());
        }
        let mut samples = Vec::with_capacity(self.iterations as usize);
        for _ in 0..self.iterations {
            let start = Instant::now();
            let out = f();
            samples.push(start.elapsed());
            black_box(out);
        }
        self.finish(&samples)
    }

    fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if self.iterations == 0 {
            return Err(Error::InvalidInput {
                what: "iterations",
                value: "0".to_owned(),
                reason: "at least one timed iteration is needed".to_owned(),
            });
        }
        Ok(())
    }

    fn finish(self, samples: &[Duration]) -> Result<BenchResult> {
        let result = BenchResult::from_samples(self.name, samples)?;
        tracing::debug!(
            name = %result.name,
            iterations = result.iterations,
            median_ns = result.median_ns,
            "benchmark finished"
        );
        Ok(result)
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::InvalidInput {
            what: "operation name",
            value: name.to_owned(),
            reason: "must not be empty".to_owned(),
        });
    }
    Ok(())
}

/// Summary of one benchmark run. Durations are whole nanoseconds.
///
/// Percentiles use the nearest-rank definition on the sorted samples: `pN` is the
/// sample at rank `ceil(N/100 * n)` (1-based), so it is always a measured value. The
/// median is the middle sample, or the mean of the two middle samples when `n` is even.
/// `stddev_ns` is the sample standard deviation (`n - 1` denominator; 0 for one sample).
/// `ops_per_sec` is `iterations / total` (the total floored at 1 ns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// The operation name.
    pub name: String,
    /// Timed iterations (warm-up calls excluded).
    pub iterations: u32,
    /// Sum of all timed samples.
    pub total_ns: u64,
    /// Fastest sample.
    pub min_ns: u64,
    /// Slowest sample.
    pub max_ns: u64,
    /// Arithmetic mean, rounded to the nanosecond.
    pub mean_ns: u64,
    /// Median.
    pub median_ns: u64,
    /// 95th percentile (nearest rank).
    pub p95_ns: u64,
    /// 99th percentile (nearest rank).
    pub p99_ns: u64,
    /// Sample standard deviation.
    pub stddev_ns: f64,
    /// Throughput: iterations per second of measured time.
    pub ops_per_sec: f64,
}

impl BenchResult {
    /// Summarise timings measured elsewhere (one `Duration` per call).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `name` is empty, `samples` is empty or holds more
    /// than `u32::MAX` samples.
    pub fn from_samples(name: impl Into<String>, samples: &[Duration]) -> Result<Self> {
        let name = name.into();
        validate_name(&name)?;
        let n = samples.len();
        let iterations =
            u32::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| Error::InvalidInput {
                    what: "sample count",
                    value: n.to_string(),
                    reason: format!("expected between 1 and {}", u32::MAX),
                })?;
        let mut ns: Vec<u64> = samples.iter().map(|d| saturating_nanos(*d)).collect();
        ns.sort_unstable();

        let total: u128 = ns.iter().map(|&v| u128::from(v)).sum();
        let mean = total as f64 / n as f64;
        let variance = if n > 1 {
            ns.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let median = if n % 2 == 1 {
            ns[n / 2]
        } else {
            // Mean of the two middle samples without overflow.
            let (a, b) = (ns[n / 2 - 1], ns[n / 2]);
            a + (b - a) / 2
        };
        let total_ns = u64::try_from(total).unwrap_or(u64::MAX);
        Ok(Self {
            name,
            iterations,
            total_ns,
            min_ns: ns[0],
            max_ns: ns[n - 1],
            mean_ns: mean.round() as u64,
            median_ns: median,
            p95_ns: nearest_rank(&ns, 95),
            p99_ns: nearest_rank(&ns, 99),
            stddev_ns: variance.sqrt(),
            ops_per_sec: n as f64 * 1e9 / total.max(1) as f64,
        })
    }

    /// Sum of all timed samples.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.total_ns)
    }

    /// Fastest sample.
    pub fn min(&self) -> Duration {
        Duration::from_nanos(self.min_ns)
    }

    /// Slowest sample.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// Mean.
    pub fn mean(&self) -> Duration {
        Duration::from_nanos(self.mean_ns)
    }

    /// Median.
    pub fn median(&self) -> Duration {
        Duration::from_nanos(self.median_ns)
    }

    /// 95th percentile.
    pub fn p95(&self) -> Duration {
        Duration::from_nanos(self.p95_ns)
    }

    /// 99th percentile.
    pub fn p99(&self) -> Duration {
        Duration::from_nanos(self.p99_ns)
    }
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} iterations, median {}, p95 {}, p99 {}, min {}, max {}, mean {} ± {}, {:.1} ops/s",
            self.name,
            self.iterations,
            fmt_ns(self.median_ns),
            fmt_ns(self.p95_ns),
            fmt_ns(self.p99_ns),
            fmt_ns(self.min_ns),
            fmt_ns(self.max_ns),
            fmt_ns(self.mean_ns),
            fmt_ns(self.stddev_ns.round() as u64),
            self.ops_per_sec,
        )
    }
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted, non-empty `ns`: rank `ceil(p * n / 100)`, 1-based.
fn nearest_rank(ns: &[u64], p: usize) -> u64 {
    let rank = (p * ns.len()).div_ceil(100).max(1);
    ns[rank.min(ns.len()) - 1]
}

/// A human duration: `850 ns`, `12.34 µs`, `2.05 ms`, `1.50 s`.
pub(crate) fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.2} µs", v / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", v / 1e6),
        _ => format!("{:.2} s", v / 1e9),
    }
}

/// Several results ranked by median, fastest first. Its `Display` is an aligned table.
///
/// ```
/// use std::time::Duration;
/// use cortex_profile::{BenchResult, compare};
///
/// let fast = BenchResult::from_samples("fast", &[Duration::from_micros(10)])?;
/// let slow = BenchResult::from_samples("slow", &[Duration::from_micros(25)])?;
/// let table = compare(&[slow, fast]);
/// assert_eq!(table.rows[0].name, "fast");
/// assert_eq!(table.rows[1].relative, 2.5);
/// println!("{table}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// One row per result, sorted by median (ties keep the input order).
    pub rows: Vec<ComparisonRow>,
}

/// One row of a [`Comparison`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    /// The operation name.
    pub name: String,
    /// Median.
    pub median_ns: u64,
    /// 95th percentile.
    pub p95_ns: u64,
    /// Throughput.
    pub ops_per_sec: f64,
    /// `median / fastest median`: 1.0 for the fastest, 2.0 for twice as slow.
    pub relative: f64,
}

/// Rank `results` by median; `relative` is each median over the fastest median.
pub fn compare(results: &[BenchResult]) -> Comparison {
    let mut sorted: Vec<&BenchResult> = results.iter().collect();
    sorted.sort_by_key(|r| r.median_ns);
    let fastest = sorted.first().map_or(0, |r| r.median_ns);
    let rows = sorted
        .into_iter()
        .map(|r| ComparisonRow {
            name: r.name.clone(),
            median_ns: r.median_ns,
            p95_ns: r.p95_ns,
            ops_per_sec: r.ops_per_sec,
            // A zero median only comes from synthetic results; floor it so the ratio
            // stays finite (and serialisable).
            relative: if r.median_ns == fastest {
                1.0
            } else {
                r.median_ns as f64 / fastest.max(1) as f64
            },
        })
        .collect();
    Comparison { rows }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = ["Operation", "Median", "p95", "ops/s", "Relative"];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                let relative = if r.relative <= 1.0 {
                    format!("{:.2}x", r.relative)
                } else {
                    format!("{:.2}x slower", r.relative)
                };
                [
                    r.name.clone(),
                    fmt_ns(r.median_ns),
                    fmt_ns(r.p95_ns),
                    format!("{:.1}", r.ops_per_sec),
                    relative,
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        write_row(f, &header.map(String::from), &widths)?;
        let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        writeln!(f, "{}", "-".repeat(rule))?;
        for row in &cells {
            write_row(f, row, &widths)?;
        }
        Ok(())
    }
}

/// Name left-aligned, numbers right-aligned, the last column left-aligned.
fn write_row(f: &mut fmt::Formatter<'_>, row: &[String; 5], widths: &[usize; 5]) -> fmt::Result {
    // `{:>w$}` pads by chars, which is right for the `µ` in durations.
    write!(f, "{:<w$}", row[0], w = widths[0])?;
    for i in 1..4 {
        write!(f, "  {:>w$}", row[i], w = widths[i])?;
    }
    writeln!(f, "  {}", row[4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn statistics_from_known_samples() {
        // 1..=100 ms: nearest-rank p95 is the 95th sample, p99 the 99th.
        let samples: Vec<u64> = (1..=100).rev().collect();
        let r = BenchResult::from_samples("x", &ms(&samples)).unwrap();
        assert_eq!(r.iterations, 100);
        assert_eq!(r.min_ns, 1_000_000);
        assert_eq!(r.max_ns, 100_000_000);
        assert_eq!(r.median_ns, 50_500_000);
        assert_eq!(r.p95_ns, 95_000_000);
        assert_eq!(r.p99_ns, 99_000_000);
        assert_eq!(r.mean_ns, 50_500_000);
        assert_eq!(r.total_ns, 5_050_000_000);
        assert!((r.ops_per_sec - 100.0 / 5.05).abs() < 1e-9);
        // Sample stddev of 1..=100 is sqrt(841.666..) ms.
        assert!((r.stddev_ns / 1e6 - 841.666_666_7_f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn small_samples() {
        let r = BenchResult::from_samples("x", &ms(&[3])).unwrap();
        assert_eq!(
            (r.median_ns, r.p95_ns, r.p99_ns),
            (3_000_000, 3_000_000, 3_000_000)
        );
        assert_eq!(r.stddev_ns, 0.0);
        let r = BenchResult::from_samples("x", &ms(&[4, 1, 3])).unwrap();
        assert_eq!(r.median_ns, 3_000_000);
        assert_eq!(r.p95_ns, 4_000_000);
        assert!(BenchResult::from_samples("x", &[]).is_err());
        assert!(BenchResult::from_samples(" ", &ms(&[1])).is_err());
    }

    #[test]
    fn invalid_benchmarks_are_rejected() {
        let err = Benchmark::new("x")
            .iterations(0)
            .run_sync(|| 1)
            .unwrap_err();
        assert!(err.to_string().contains("iterations"), "{err}");
        let err = Benchmark::new("").run_sync(|| 1).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidInput {
                what: "operation name",
                ..
            }
        ));
    }

    #[test]
    fn durations_format_with_units() {
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(12_340), "12.34 µs");
        assert_eq!(fmt_ns(2_050_000), "2.05 ms");
        assert_eq!(fmt_ns(1_500_000_000), "1.50 s");
    }

    #[test]
    fn table_is_aligned() {
        let a = BenchResult::from_samples("a-long-name", &ms(&[2])).unwrap();
        let b = BenchResult::from_samples("b", &ms(&[1])).unwrap();
        let table = compare(&[a, b]).to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[2].starts_with("b ") && lines[2].ends_with("1.00x"),
            "{table}"
        );
        assert!(lines[3].ends_with("2.00x slower"), "{table}");
        // The ops/s column ends at the same place on every line.
        let end = |l: &str| l.find("ops/s").map(|i| i + 5);
        let col = end(lines[0]).unwrap();
        assert_eq!(&lines[2][col - 6..col], "1000.0");
        assert_eq!(&lines[3][col - 5..col], "500.0");
    }
}
