//! A lock-free, sharded, HDR-style histogram.
//!
//! Layout: values are split into "magnitudes" (powers of two). Magnitude 0 holds the
//! values `0..2048` exactly; magnitude `k >= 1` holds `[1024 << k, 2048 << k)` in 1024
//! equal sub-buckets of width `1 << k`. Every bucket is therefore narrower than 1/1024 of
//! the values it holds: a reported value is within 0.1% of a recorded one (3 significant
//! digits, as HdrHistogram with `sigfig = 3`), over the whole `u64` range.
//!
//! Why it is fast:
//! - Recording is one relaxed `fetch_add` on a bucket, plus two plain loads for the exact
//!   min and max (written only when a new extreme arrives). No lock, no allocation once
//!   a magnitude has been seen. Count, sum and mean are derived from the buckets when
//!   read, so the hot path does not pay for them.
//! - Each thread records into one of several shards (picked once per thread), each on its
//!   own cache lines, so two cores recording at once do not fight over one line.
//! - Bucket arrays of a magnitude are allocated the first time a shard sees a value of
//!   that magnitude (8 KiB each): a latency histogram touches a handful of them.
//!
//! Windows: [`Histogram::reset_window`] remembers the counts at that moment; the window is
//! "now minus then", bucket by bucket. Counters only grow, so a record racing with the
//! reset lands in exactly one of the two windows and in the cumulative totals: nothing
//! is lost, and recording never waits for a reset.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// log2 of the sub-bucket count: 2048 sub-buckets give 3 significant digits.
const SUB_BITS: u32 = 11;
const SUB_COUNT: usize = 1 << SUB_BITS;
const HALF: usize = SUB_COUNT / 2;
/// Magnitude 0 plus one per remaining bit of a `u64`.
const MAGNITUDES: usize = 64 - SUB_BITS as usize + 1;

/// The largest relative error of a value reported by a [`Histogram`]: 1/1024 (< 0.1%).
pub const RELATIVE_ERROR: f64 = 1.0 / HALF as f64;

/// Percentiles reported in every snapshot, as fractions.
pub(crate) const QUANTILES: [f64; 5] = [0.5, 0.9, 0.95, 0.99, 0.999];

/// Magnitude and slot of a value.
#[inline(always)]
fn index(value: u64) -> (usize, usize) {
    let magnitude = (64 - (value | (SUB_COUNT as u64 - 1)).leading_zeros() - SUB_BITS) as usize;
    let sub = (value >> magnitude) as usize;
    if magnitude == 0 {
        (0, sub)
    } else {
        (magnitude, sub - HALF)
    }
}

/// Lowest and highest value that fall into a bucket.
fn bucket_range(magnitude: usize, slot: usize) -> (u64, u64) {
    if magnitude == 0 {
        (slot as u64, slot as u64)
    } else {
        let low = ((slot + HALF) as u64) << magnitude;
        (low, low + ((1u64 << magnitude) - 1))
    }
}

fn slots(magnitude: usize) -> usize {
    if magnitude == 0 { SUB_COUNT } else { HALF }
}

thread_local! {
    static SHARD_HINT: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// The shard index of the calling thread, assigned round-robin on first use so that the
/// threads of a runtime (created together) land on distinct shards.
#[inline(always)]
pub(crate) fn thread_shard() -> usize {
    SHARD_HINT.with(|hint| {
        let v = hint.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_SHARD.fetch_add(1, Relaxed);
        hint.set(v);
        v
    })
}

/// Shards per histogram: twice the cores (so a few extra threads rarely collide),
/// a power of two, between 2 and 64.
pub(crate) fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        (cores * 2).next_power_of_two().clamp(2, 64)
    })
}

#[repr(align(128))]
struct Shard {
    min: AtomicU64,
    max: AtomicU64,
    buckets: [OnceLock<Box<[AtomicU64]>>; MAGNITUDES],
}

impl Shard {
    fn new() -> Self {
        Self {
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

/// A concurrent histogram of `u64` values (nanoseconds, bytes, batch sizes...) with
/// bounded memory, 0.1% relative error, a resettable window and cumulative totals.
///
/// ```
/// use cortex_metrics::Histogram;
///
/// let h = Histogram::new();
/// for v in 1..=1000u64 {
///     h.record(v);
/// }
/// let s = h.snapshot();
/// assert_eq!(s.count, 1000);
/// assert_eq!(s.p50, 500);
/// assert_eq!(s.max, 1000);
/// ```
pub struct Histogram {
    shards: Box<[Shard]>,
    mask: usize,
    /// Counts at the last window reset (`None`: the window is everything).
    baseline: Mutex<Option<Counts>>,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("Histogram")
            .field("count", &s.count)
            .field("min", &s.min)
            .field("max", &s.max)
            .field("p50", &s.p50)
            .field("p99", &s.p99)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram. Allocates the shards (about 1.5 KiB each); bucket arrays come
    /// later, per magnitude seen.
    pub fn new() -> Self {
        let n = shard_count();
        Self {
            shards: (0..n).map(|_| Shard::new()).collect(),
            mask: n - 1,
            baseline: Mutex::new(None),
        }
    }

    /// Record one value. Lock-free; allocates only the first time this thread's shard
    /// sees a value of a new power of two.
    #[inline]
    pub fn record(&self, value: u64) {
        let shard = &self.shards[thread_shard() & self.mask];
        let (magnitude, slot) = index(value);
        let bucket = shard.buckets[magnitude].get_or_init(|| new_buckets(slots(magnitude)));
        bucket[slot].fetch_add(1, Relaxed);
        if value < shard.min.load(Relaxed) {
            shard.min.fetch_min(value, Relaxed);
        }
        if value > shard.max.load(Relaxed) {
            shard.max.fetch_max(value, Relaxed);
        }
    }

    /// Record a duration as nanoseconds (saturating at `u64::MAX`, about 584 years).
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// All values recorded since creation.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts = self.counts();
        let (min, max) = self.extremes();
        counts.summary(min, max)
    }

    /// Values recorded since the last [`reset_window`](Self::reset_window) (or creation).
    pub fn window(&self) -> HistogramSnapshot {
        self.snapshot_counts().window.summary()
    }

    /// Both at once, from one read of the counters: `(window, cumulative)`.
    pub fn snapshots(&self) -> (HistogramSnapshot, HistogramSnapshot) {
        let p = self.snapshot_counts();
        (p.window.summary(), p.total.summary())
    }

    /// Window and cumulative counts from one read, with the exact extremes.
    pub(crate) fn snapshot_counts(&self) -> PeriodCounts {
        let all = self.counts();
        let (min, max) = self.extremes();
        let mut window = all.clone();
        if let Some(base) = self.lock_baseline().as_ref() {
            window.subtract(base);
        }
        PeriodCounts {
            window: Period {
                counts: window,
                min,
                max,
            },
            total: Period {
                counts: all,
                min,
                max,
            },
        }
    }

    /// The value at quantile `q` (`0.0..=1.0`, nearest rank) over all values recorded,
    /// within [`RELATIVE_ERROR`]; `None` when empty.
    ///
    /// ```
    /// let h = cortex_metrics::Histogram::new();
    /// (1..=100u64).for_each(|v| h.record(v));
    /// assert_eq!(h.quantile(0.25), Some(25));
    /// ```
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let (min, max) = self.extremes();
        self.counts()
            .value_at(q)
            .map(|v| v.clamp(min.min(max), max))
    }

    /// Start a new window and return the one that ended. Recording goes on undisturbed;
    /// the cumulative totals keep everything. The ended windows and the current one add
    /// up to the cumulative totals exactly, however records and resets interleave.
    pub fn reset_window(&self) -> HistogramSnapshot {
        let mut baseline = self.lock_baseline();
        let now = self.counts();
        let (min, max) = self.extremes();
        let mut ended = now.clone();
        if let Some(base) = baseline.as_ref() {
            ended.subtract(base);
        }
        *baseline = Some(now);
        ended.summary(min, max)
    }

    /// The counts of every bucket, merged over shards.
    pub(crate) fn counts(&self) -> Counts {
        let mut merged: Vec<Option<Box<[u64]>>> = (0..MAGNITUDES).map(|_| None).collect();
        for shard in self.shards.iter() {
            for (m, cell) in shard.buckets.iter().enumerate() {
                if let Some(b) = cell.get() {
                    let dst = merged[m].get_or_insert_with(|| vec![0; b.len()].into_boxed_slice());
                    for (d, s) in dst.iter_mut().zip(b.iter()) {
                        *d += s.load(Relaxed);
                    }
                }
            }
        }
        Counts { magnitudes: merged }
    }

    pub(crate) fn extremes(&self) -> (u64, u64) {
        self.shards.iter().fold((u64::MAX, 0), |(lo, hi), s| {
            (lo.min(s.min.load(Relaxed)), hi.max(s.max.load(Relaxed)))
        })
    }

    fn lock_baseline(&self) -> std::sync::MutexGuard<'_, Option<Counts>> {
        // A poisoned lock only means a reader panicked mid-copy of plain integers.
        self.baseline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn new_buckets(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Counts plus the exact extremes of all time, for one period.
pub(crate) struct Period {
    pub(crate) counts: Counts,
    pub(crate) min: u64,
    pub(crate) max: u64,
}

impl Period {
    pub(crate) fn summary(&self) -> HistogramSnapshot {
        self.counts.summary(self.min, self.max)
    }
}

/// Window and cumulative counts of one histogram, read once.
pub(crate) struct PeriodCounts {
    pub(crate) window: Period,
    pub(crate) total: Period,
}

/// Plain (non-atomic) bucket counts: a frozen copy of a histogram.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    magnitudes: Vec<Option<Box<[u64]>>>,
}

impl Counts {
    /// `self -= base`, bucket by bucket (saturating: counters only grow).
    fn subtract(&mut self, base: &Counts) {
        for (mine, theirs) in self.magnitudes.iter_mut().zip(base.magnitudes.iter()) {
            if let (Some(m), Some(t)) = (mine.as_mut(), theirs.as_ref()) {
                for (a, b) in m.iter_mut().zip(t.iter()) {
                    *a = a.saturating_sub(*b);
                }
            }
        }
    }

    /// `self += other`, e.g. to merge the success and error histograms of an operation.
    pub(crate) fn add(&mut self, other: &Counts) {
        if self.magnitudes.len() < other.magnitudes.len() {
            self.magnitudes.resize_with(other.magnitudes.len(), || None);
        }
        for (mine, theirs) in self.magnitudes.iter_mut().zip(other.magnitudes.iter()) {
            if let Some(t) = theirs {
                let m = mine.get_or_insert_with(|| vec![0; t.len()].into_boxed_slice());
                for (a, b) in m.iter_mut().zip(t.iter()) {
                    *a += *b;
                }
            }
        }
    }

    /// Non-empty buckets in ascending value order: `(low, high, count)`.
    fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.magnitudes
            .iter()
            .enumerate()
            .filter_map(|(m, b)| b.as_ref().map(|b| (m, b)))
            .flat_map(|(m, b)| {
                b.iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(move |(s, c)| {
                        let (lo, hi) = bucket_range(m, s);
                        (lo, hi, *c)
                    })
            })
    }

    /// Summarize, clamping bucket bounds to the exact extremes `min..=max` seen by the
    /// histogram (the extremes of all time: a window's own extremes come from its
    /// buckets, never beyond what was really recorded).
    pub(crate) fn summary(&self, min: u64, max: u64) -> HistogramSnapshot {
        let mut count = 0u64;
        let mut sum = 0u128;
        let mut lowest = None;
        let mut highest = 0;
        for (lo, hi, c) in self.buckets() {
            count += c;
            // The middle of a bucket is within half a bucket width of every value in it.
            sum += u128::from(lo / 2 + hi / 2 + (lo & hi & 1)) * u128::from(c);
            lowest.get_or_insert(lo);
            highest = hi;
        }
        if count == 0 {
            return HistogramSnapshot::default();
        }
        let clamp = |v: u64| v.clamp(min.min(max), max);
        let lowest = clamp(lowest.unwrap_or(0));
        let highest = clamp(highest);
        let mut quantiles = [0u64; QUANTILES.len()];
        let ranks = QUANTILES.map(|q| rank(q, count));
        let mut seen = 0u64;
        let mut next = 0;
        for (_, hi, c) in self.buckets() {
            seen += c;
            while next < ranks.len() && seen >= ranks[next] {
                quantiles[next] = clamp(hi).max(lowest);
                next += 1;
            }
            if next == ranks.len() {
                break;
            }
        }
        HistogramSnapshot {
            count,
            sum: u64::try_from(sum).unwrap_or(u64::MAX),
            mean: sum as f64 / count as f64,
            min: lowest,
            max: highest,
            p50: quantiles[0],
            p90: quantiles[1],
            p95: quantiles[2],
            p99: quantiles[3],
            p999: quantiles[4],
        }
    }

    /// Classic cumulative bucket counts for the bounds `les` (ascending, in exported
    /// units; a recorded value `v` is `v / scale` of them): for each bound, the values
    /// `<=` it; then the total count and the (midpoint-derived) sum in recorded units.
    ///
    /// A bucket is counted under a bound when its midpoint is at most the bound, so the
    /// values below 2048 (one per bucket) are placed exactly and any other value is
    /// placed on the wrong side of a bound only when it lies within one bucket width,
    /// under [`RELATIVE_ERROR`] of the bound, of it.
    pub(crate) fn cumulative(&self, les: &[f64], scale: f64) -> (Vec<u64>, u64, u128) {
        // The bounds in recorded units; the tiny nudge keeps `0.0005 * 1e9` from
        // landing on 499999.99999 and flooring one below the bound.
        let bounds: Vec<u64> = les
            .iter()
            .map(|le| {
                let b = (le * scale * (1.0 + 1e-12)).floor();
                if b <= 0.0 {
                    0
                } else if b >= u64::MAX as f64 {
                    u64::MAX
                } else {
                    b as u64
                }
            })
            .collect();
        let mut out = vec![0u64; bounds.len()];
        let mut count = 0u64;
        let mut sum = 0u128;
        let mut next = 0;
        for (lo, hi, c) in self.buckets() {
            let mid = lo / 2 + hi / 2 + (lo & hi & 1);
            while next < bounds.len() && mid > bounds[next] {
                out[next] = count;
                next += 1;
            }
            count += c;
            sum += u128::from(mid) * u128::from(c);
        }
        for slot in &mut out[next..] {
            *slot = count;
        }
        (out, count, sum)
    }

    /// The value at quantile `q` (0.0..=1.0): the highest value of the bucket holding the
    /// rank `ceil(q * count)`; `None` when empty.
    pub(crate) fn value_at(&self, q: f64) -> Option<u64> {
        let count: u64 = self.buckets().map(|(_, _, c)| c).sum();
        if count == 0 {
            return None;
        }
        let r = rank(q, count);
        let mut seen = 0;
        self.buckets().find_map(|(_, hi, c)| {
            seen += c;
            (seen >= r).then_some(hi)
        })
    }
}

/// Nearest-rank: the smallest rank whose cumulative share reaches `q`, at least 1.
fn rank(q: f64, count: u64) -> u64 {
    ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count)
}

/// A plain, serde-able summary of a [`Histogram`].
///
/// Percentiles use the nearest-rank definition and are within [`RELATIVE_ERROR`] of the
/// exact value computed from the same samples; `min` and `max` are exact for the
/// cumulative snapshot. `sum` and `mean` are derived from bucket midpoints, also within
/// 0.1%. All values are in the unit recorded (nanoseconds for durations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Number of values.
    pub count: u64,
    /// Sum of the values (saturating at `u64::MAX`: 584 years of nanoseconds).
    pub sum: u64,
    /// Mean of the values (0 when empty).
    pub mean: f64,
    /// Smallest value.
    pub min: u64,
    /// Largest value.
    pub max: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

impl HistogramSnapshot {
    /// The percentiles in [`QUANTILES`] order, with their fractions.
    pub(crate) fn quantiles(&self) -> [(f64, u64); 5] {
        [
            (QUANTILES[0], self.p50),
            (QUANTILES[1], self.p90),
            (QUANTILES[2], self.p95),
            (QUANTILES[3], self.p99),
            (QUANTILES[4], self.p999),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_range_agree() {
        for v in [
            0u64,
            1,
            2047,
            2048,
            2049,
            4095,
            4096,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let (m, s) = index(v);
            let (lo, hi) = bucket_range(m, s);
            assert!(lo <= v && v <= hi, "{v} not in [{lo}, {hi}]");
            assert!(
                (hi - lo) as f64 <= lo as f64 * RELATIVE_ERROR,
                "bucket too wide at {v}"
            );
        }
    }

    #[test]
    fn small_values_are_exact() {
        let h = Histogram::new();
        for v in [3u64, 1, 2, 2047] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!((s.count, s.min, s.max, s.sum), (4, 1, 2047, 2053));
        assert_eq!(s.p50, 2);
    }

    #[test]
    fn window_subtracts_baseline() {
        let h = Histogram::new();
        h.record(10);
        h.reset_window();
        h.record(20);
        h.record(30);
        let (w, all) = h.snapshots();
        assert_eq!(w.count, 2);
        assert_eq!(w.min, 20);
        assert_eq!(all.count, 3);
        assert_eq!(all.min, 10);
        assert_eq!(Histogram::new().snapshot(), HistogramSnapshot::default());
    }

    #[test]
    fn cumulative_buckets_count_values_at_or_below_each_bound() {
        let h = Histogram::new();
        for v in [1u64, 2, 2, 3, 10, 2047, 500_000, 500_001, 10_000_000] {
            h.record(v);
        }
        let (le, count, _) = h.counts().cumulative(&[0.5, 2.0, 2.5, 10.0, 2047.0], 1.0);
        assert_eq!(le, vec![0, 3, 3, 5, 6]);
        assert_eq!(count, 9);
        // Seconds: 0.0005 s is 500 000 ns. 500 000 and 500 001 share an HDR bucket
        // (499 968..=500 223) that straddles the bound: both land on one side of it,
        // an error under 0.1% of the bound.
        let (le, _, _) = h.counts().cumulative(&[0.0005, 0.001, 0.01, 100.0], 1e9);
        assert!(le[0] == 6 || le[0] == 8, "{le:?}");
        assert_eq!(&le[1..], &[8, 9, 9]);
    }
}
