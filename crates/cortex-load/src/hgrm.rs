//! The latency-by-percentile table in the HdrHistogram percentile-distribution text
//! format (`.hgrm`), values in milliseconds, as HdrHistogram's
//! `outputPercentileDistribution` prints it with 5 percentile ticks per half distance
//! (what wrk2's `--latency` uses), so the files load in the usual HdrHistogram plotters.
//!
//! The rows come from the recorded buckets of the run's latency histogram
//! ([`Summary::latency_buckets`]: cortex-metrics, 3 significant digits, the same bucket
//! layout as an HdrHistogram of 3 digits: one value per bucket below 2048, then 1024
//! buckets per power of two). The walk is HdrHistogram's `PercentileIterator`: the
//! percentile level starts at 0 and, after each row, grows by `100 / ticks` where
//! `ticks = 5 × 2^(⌊log2(100 / (100 - level))⌋ + 1)`; a row is printed when the
//! cumulative count of the buckets so far reaches the level, with the bucket's highest
//! value and that exact cumulative count; a last row at 100% closes the table. The
//! footer's mean and standard deviation are HdrHistogram's: each bucket's count taken
//! at its "median equivalent value" (`low + (high - low + 1) / 2`, integer halving);
//! `Max` is the highest value of the top bucket (as HdrHistogram reports it), and
//! `Total count` the exact number of requests.

use std::fmt::Write as _;

use cortex_load::Summary;
use cortex_metrics::HistogramBuckets;

/// Bucket count of an HdrHistogram of 3 significant digits tracking up to `u64::MAX`
/// (one per power of two above the 11 bits of a sub-bucket index: 64 - 11 + 1).
const BUCKETS: u32 = 54;
/// Sub-buckets per bucket of an HdrHistogram of 3 significant digits.
const SUB_BUCKETS: u32 = 2048;
/// Percentile ticks per half distance to 100%, as wrk2 prints.
const TICKS_PER_HALF_DISTANCE: u64 = 5;
/// The histogram holds nanoseconds; the file shows milliseconds.
const NANOS_PER_MS: f64 = 1e6;

/// The `.hgrm` text of a run. A summary without buckets (read back from JSON) or an
/// empty run gives the header and a footer of zeros, as HdrHistogram does for an
/// empty histogram.
pub(crate) fn percentile_distribution(s: &Summary) -> String {
    match &s.latency_buckets {
        Some(b) => distribution(b.buckets()),
        None => distribution_of(&[]),
    }
}

/// The table of a histogram's buckets.
fn distribution(h: &HistogramBuckets) -> String {
    let buckets: Vec<(u64, u64, u64)> = h.iter().map(|b| (b.low, b.high, b.count)).collect();
    distribution_of(&buckets)
}

/// The table of `(low, high, count)` buckets in ascending order, counts non-zero.
fn distribution_of(buckets: &[(u64, u64, u64)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let total: u64 = buckets.iter().map(|b| b.2).sum();
    let ms = |v: u64| v as f64 / NANOS_PER_MS;
    if total > 0 {
        let mut level = 0.0f64;
        let mut seen = 0u64;
        for (i, &(_, high, count)) in buckets.iter().enumerate() {
            seen += count;
            let last = i + 1 == buckets.len();
            let reached = 100.0 * seen as f64 / total as f64;
            // HdrHistogram stays on a bucket while its cumulative percentile passes
            // levels and the histogram is not exhausted; at the last bucket it prints
            // the current level once, then the closing 100% row.
            while reached >= level {
                let fraction = level / 100.0;
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>14.12} {:>10} {:>14.2}",
                    ms(high),
                    fraction,
                    seen,
                    1.0 / (1.0 - fraction)
                );
                level = next_level(level);
                if last {
                    break;
                }
            }
            if last {
                let _ = writeln!(out, "{:>12.3} {:>14.12} {:>10}", ms(high), 1.0, seen);
            }
        }
    }
    let (mean, deviation) = mean_and_deviation(buckets, total);
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        mean / NANOS_PER_MS,
        deviation / NANOS_PER_MS
    );
    let max = buckets.last().map_or(0, |b| b.1);
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        ms(max),
        total
    );
    let _ = writeln!(
        out,
        "#[Buckets = {BUCKETS:>12}, SubBuckets     = {SUB_BUCKETS:>12}]"
    );
    out
}

/// HdrHistogram's `PercentileIterator.incrementIterationLevel`: the next percentile
/// level, ticks halving the distance to 100% every `TICKS_PER_HALF_DISTANCE` rows.
fn next_level(level: f64) -> f64 {
    let halvings = ((100.0 / (100.0 - level)).ln() / 2f64.ln()) as u32;
    // 2^63 at most: past that the level is 100% to f64 precision anyway.
    let ticks = TICKS_PER_HALF_DISTANCE.saturating_mul(1u64 << (halvings + 1).min(63));
    level + 100.0 / ticks as f64
}

/// HdrHistogram's `getMean` and `getStdDeviation`: each bucket's values at its
/// median equivalent value.
fn mean_and_deviation(buckets: &[(u64, u64, u64)], total: u64) -> (f64, f64) {
    if total == 0 {
        return (0.0, 0.0);
    }
    let median = |low: u64, high: u64| (low + ((high - low).saturating_add(1) >> 1)) as f64;
    let mean = buckets
        .iter()
        .map(|&(l, h, c)| median(l, h) * c as f64)
        .sum::<f64>()
        / total as f64;
    let square = buckets
        .iter()
        .map(|&(l, h, c)| {
            let d = median(l, h) - mean;
            d * d * c as f64
        })
        .sum::<f64>();
    (mean, (square / total as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of the table: `(value, percentile, total count)`.
    fn rows(text: &str) -> Vec<(f64, f64, u64)> {
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                (
                    c[0].parse().unwrap_or(f64::NAN),
                    c[1].parse().unwrap_or(f64::NAN),
                    c[2].parse().unwrap_or(u64::MAX),
                )
            })
            .collect()
    }

    #[test]
    fn one_to_four_ms_as_hdrhistogram_prints_it() {
        // Four values of 1, 2, 3, 4 ms, each alone in a bucket of width 1 µs here for
        // simplicity: HdrHistogram's walk over them (levels 0, 10, 20, ... with 5
        // ticks per half distance) repeats a value while its share passes levels.
        let b: Vec<(u64, u64, u64)> = (1..=4).map(|i| (i * 1_000_000, i * 1_000_000, 1)).collect();
        let text = distribution_of(&b);
        let r = rows(&text);
        let expected = [
            (1.0, 0.0, 1),
            (1.0, 0.1, 1),
            (1.0, 0.2, 1),
            (2.0, 0.3, 2),
            (2.0, 0.4, 2),
            (2.0, 0.5, 2),
            (3.0, 0.55, 3),
            (3.0, 0.6, 3),
            (3.0, 0.65, 3),
            (3.0, 0.7, 3),
            (3.0, 0.75, 3),
            (4.0, 0.775, 4),
            (4.0, 1.0, 4),
        ];
        assert_eq!(r.len(), expected.len(), "{text}");
        for (got, want) in r.iter().zip(expected) {
            assert_eq!(got.0, want.0, "{text}");
            assert!((got.1 - want.1).abs() < 1e-9, "{got:?} vs {want:?}\n{text}");
            assert_eq!(got.2, want.2, "{text}");
        }
        assert!(
            text.contains("#[Mean    =        2.500, StdDeviation   =        1.118]"),
            "{text}"
        );
        assert!(
            text.contains("#[Max     =        4.000, Total count    =            4]"),
            "{text}"
        );
    }

    #[test]
    fn empty_histogram_has_header_and_zero_footer() {
        let text = distribution_of(&[]);
        assert!(rows(&text).is_empty(), "{text}");
        assert!(text.contains("Total count    =            0]"), "{text}");
    }
}
