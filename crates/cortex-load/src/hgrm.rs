//! The latency-by-percentile table in the HdrHistogram percentile-distribution text
//! format (`.hgrm`), values in milliseconds, as HdrHistogram's
//! `outputPercentileDistribution` and wrk2's `--latency` print it, so the files load in
//! the usual HdrHistogram plotters.
//!
//! The rows come from [`Summary::percentiles`]: the run's latency histogram
//! (cortex-metrics, HDR-style buckets of 3 significant digits) read at 10 points per
//! decade of `1 / (1 - percentile)`, from 0% to 99.999%, then 100%. Each value is
//! within [`cortex_metrics::RELATIVE_ERROR`] of the exact one. `TotalCount` is the
//! nearest-rank count at that percentile (`ceil(p × total)`); the summary does not
//! carry the bucket counts themselves, and rows past the point where that count
//! reaches the total are left out (the last row is the max, as in the reference
//! output). `StdDeviation` is computed from the same curve (the summary keeps no sum
//! of squares), so it is an estimate within the spacing of those points.

use std::fmt::Write as _;

use cortex_load::Summary;

/// Magnitudes of the cortex-metrics histogram: magnitude 0 plus one per bit of a
/// `u64` above the 11 bits of a sub-bucket index (64 - 11 + 1).
const BUCKETS: u32 = 54;
/// Sub-buckets per magnitude: 2048, 3 significant digits.
const SUB_BUCKETS: u32 = 2048;

/// The `.hgrm` text of a run.
pub(crate) fn percentile_distribution(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let total = s.total;
    let count_at = |fraction: f64| -> u64 {
        // Nearest rank, at least 1 (the first row holds the minimum).
        ((fraction * total as f64).ceil() as u64).clamp(1, total.max(1))
    };
    let mut printed_max = false;
    for (i, p) in s.percentiles.iter().enumerate() {
        let fraction = p.percentile / 100.0;
        let count = count_at(fraction);
        if p.percentile >= 100.0 {
            let _ = writeln!(out, "{:>12.3} {:>14.12} {:>10}", p.latency_ms, 1.0, total);
            printed_max = true;
            break;
        }
        if i > 0 && count >= total {
            continue;
        }
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {:>14.2}",
            p.latency_ms,
            fraction,
            count,
            1.0 / (1.0 - fraction)
        );
    }
    if !printed_max && total > 0 {
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10}",
            s.latency.max_ms, 1.0, total
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        s.latency.mean_ms,
        std_deviation(s)
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        s.latency.max_ms, total
    );
    let _ = writeln!(
        out,
        "#[Buckets = {BUCKETS:>12}, SubBuckets     = {SUB_BUCKETS:>12}]"
    );
    out
}

/// Standard deviation (ms) of the distribution whose quantile function is the
/// summary's percentile curve, by the trapezoid rule between its points.
fn std_deviation(s: &Summary) -> f64 {
    let (mut mean, mut square) = (0.0, 0.0);
    for w in s.percentiles.windows(2) {
        let dp = (w[1].percentile - w[0].percentile) / 100.0;
        let (a, b) = (w[0].latency_ms, w[1].latency_ms);
        mean += dp * (a + b) / 2.0;
        square += dp * (a * a + b * b) / 2.0;
    }
    (square - mean * mean).max(0.0).sqrt()
}
