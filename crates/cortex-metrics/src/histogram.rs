//! A lock-free, sharded, HDR-style histogram.
//!
//! Layout: values are split into rows of 1024 buckets, one row per power of two. Row 0
//! holds the values `0..1024` and row 1 the values `1024..2048`, exactly; row `r >= 2`
//! holds `[1024 << (r - 1), 2048 << (r - 1))` in 1024 equal buckets of width
//! `1 << (r - 1)`. Every bucket is therefore narrower than 1/1024 of the values it
//! holds: a reported value is within 0.1% of a recorded one (3 significant digits, as
//! HdrHistogram with `sigfig = 3`), over the whole `u64` range. Rows of one fixed length
//! let a record find its bucket with a mask instead of a bounds check.
//!
//! Why it is fast:
//! - Each recording thread owns a shard exclusively: the process hands out "slots"
//!   (one bit each in [`CLAIMED`]) and the thread holding slot `i` is the only writer of
//!   shard `i` of every histogram. A record is therefore a relaxed load and a relaxed
//!   store on a bucket (no locked read-modify-write), plus two plain loads for the exact
//!   min and max (stored only when a new extreme arrives). No lock, no allocation once a
//!   row has been seen. Count, sum and mean are derived from the buckets when read,
//!   so the hot path does not pay for them.
//! - The thread finds its slot in a `const` thread-local (one load); each shard sits on
//!   its own cache lines, so two cores recording at once do not share a line.
//! - A row is allocated the first time a shard sees a value in it (8 KiB each): a
//!   latency histogram touches a handful of them.
//!
//! Threads that exit give their slot back (a thread-local destructor); the counts stay
//! in the shard, and the next thread to take the slot goes on adding to them: the
//! release of the slot and its next claim order the last owner's stores before the next
//! owner's loads, so nothing is lost or counted twice. When more threads record than
//! there are slots, the extra ones record with an atomic `fetch_add` into a separate set
//! of shared shards (never into an owned one), and take a slot as soon as one is free.
//!
//! Windows: [`Histogram::reset_window`] remembers the counts at that moment; the window is
//! "now minus then", bucket by bucket. Counters only grow, so a record racing with the
//! reset lands in exactly one of the two windows and in the cumulative totals: nothing
//! is lost, and recording never waits for a reset.

use std::cell::Cell;
use std::sync::atomic::{
    AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// log2 of the buckets per row: 1024 buckets per power of two give 3 significant digits.
const ROW_BITS: u32 = 10;
const ROW_LEN: usize = 1 << ROW_BITS;
/// Row 0 (`0..1024`) plus one per remaining bit of a `u64`.
const ROWS: usize = 64 - ROW_BITS as usize + 1;

/// The largest relative error of a value reported by a [`Histogram`]: 1/1024 (< 0.1%).
pub const RELATIVE_ERROR: f64 = 1.0 / ROW_LEN as f64;

/// Percentiles reported in every snapshot, as fractions.
pub(crate) const QUANTILES: [f64; 5] = [0.5, 0.9, 0.95, 0.99, 0.999];

/// Row and slot of a value. The slot is masked, so indexing a row needs no bounds check.
#[inline(always)]
fn index(value: u64) -> (usize, usize) {
    let row = (64 - (value | (ROW_LEN as u64 - 1)).leading_zeros() - ROW_BITS) as usize;
    let shift = row.saturating_sub(1);
    (row, (value >> shift) as usize & (ROW_LEN - 1))
}

/// Lowest and highest value that fall into a bucket.
fn bucket_range(row: usize, slot: usize) -> (u64, u64) {
    if row == 0 {
        (slot as u64, slot as u64)
    } else {
        let shift = row - 1;
        let low = ((slot + ROW_LEN) as u64) << shift;
        (low, low + ((1u64 << shift) - 1))
    }
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

/// Slots taken by live threads, one bit per slot: slot `i` makes its thread the only
/// writer of shard `i` of every histogram. [`shard_count`] is at most 64, so one word
/// holds them all. Every change is a read-modify-write (a claim's `Acquire` CAS, an
/// exit's `Release` `fetch_and`), so each claim synchronizes with every earlier release.
static CLAIMED: AtomicU64 = AtomicU64::new(0);
/// Spreads the threads without a slot over the shared shards.
static NEXT_SHARED: AtomicUsize = AtomicUsize::new(0);

/// [`SLOT`] before the thread's first record.
const UNCLAIMED: usize = usize::MAX;
/// [`SLOT`] bit of a thread without a slot; the low bits pick its shared shard.
const SHARED: usize = 1 << (usize::BITS - 1);

thread_local! {
    /// The calling thread's slot: an owned shard index (below [`shard_count`]), or
    /// `SHARED | k`, or [`UNCLAIMED`]. `const` and without a destructor, so reading it is
    /// one load, and it stays readable while the thread's other destructors run.
    static SLOT: Cell<usize> = const { Cell::new(UNCLAIMED) };
    /// Gives the slot back when the thread exits.
    static OWNER: SlotOwner = const { SlotOwner(Cell::new(UNCLAIMED)) };
}

/// The slot a thread holds, returned to [`CLAIMED`] by its destructor at thread exit.
struct SlotOwner(Cell<usize>);

impl Drop for SlotOwner {
    fn drop(&mut self) {
        let slot = self.0.replace(UNCLAIMED);
        if slot < 64 {
            // Records from destructors that run after this one take the shared path.
            SLOT.set(SHARED | NEXT_SHARED.fetch_add(1, Relaxed));
            // Release: this thread's last stores into shard `slot` happen before the next
            // owner's first load of them.
            CLAIMED.fetch_and(!(1u64 << slot), Release);
        }
    }
}

/// Take the lowest free slot, if any.
fn claim_slot() -> Option<usize> {
    let owned = shard_count();
    let all = if owned >= 64 {
        u64::MAX
    } else {
        (1u64 << owned) - 1
    };
    let mut claimed = CLAIMED.load(Relaxed);
    loop {
        let free = !claimed & all;
        if free == 0 {
            return None;
        }
        let slot = free.trailing_zeros();
        // Acquire: see every store the previous owners of the slot made.
        match CLAIMED.compare_exchange_weak(claimed, claimed | (1u64 << slot), Acquire, Relaxed) {
            Ok(_) => return Some(slot as usize),
            Err(now) => claimed = now,
        }
    }
}

/// The calling thread's slot, claiming one if it has none and one is free: `None` when
/// every slot is taken or the thread is exiting (its [`OWNER`] is gone, so a slot taken
/// now could never be given back).
fn own_slot() -> Option<usize> {
    let slot = SLOT.get();
    if slot < 64 {
        return Some(slot);
    }
    OWNER
        .try_with(|owner| {
            if owner.0.get() != UNCLAIMED {
                return None;
            }
            let slot = claim_slot()?;
            owner.0.set(slot);
            SLOT.set(slot);
            Some(slot)
        })
        .ok()
        .flatten()
}

/// The shard of the calling thread when it holds a slot, for tests.
#[cfg(test)]
pub(crate) fn owned_slot() -> Option<usize> {
    let slot = SLOT.get();
    (slot < 64).then_some(slot)
}

/// One row of bucket counts.
type Row = [AtomicU64; ROW_LEN];

#[repr(align(128))]
struct Shard {
    min: AtomicU64,
    max: AtomicU64,
    rows: [OnceLock<Box<Row>>; ROWS],
}

impl Shard {
    fn new() -> Self {
        Self {
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
            rows: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Record into a shard the calling thread owns: it is the only writer, so a load and
    /// a store cannot lose a concurrent increment.
    #[inline(always)]
    fn record_owned(&self, value: u64) {
        let (row, slot) = index(value);
        match self.rows[row].get() {
            Some(row) => {
                let bucket = &row[slot];
                bucket.store(bucket.load(Relaxed).wrapping_add(1), Relaxed);
                if value < self.min.load(Relaxed) {
                    self.min.store(value, Relaxed);
                }
                if value > self.max.load(Relaxed) {
                    self.max.store(value, Relaxed);
                }
            }
            // Out of line and last, so the common path saves no registers for a call.
            None => self.record_owned_new_row(value),
        }
    }

    #[cold]
    #[inline(never)]
    fn record_owned_new_row(&self, value: u64) {
        self.rows[index(value).0].get_or_init(new_row);
        self.record_owned(value);
    }

    /// Record into a shard other threads may write at the same time.
    fn record_shared(&self, value: u64) {
        let (row, slot) = index(value);
        self.rows[row].get_or_init(new_row)[slot].fetch_add(1, Relaxed);
        if value < self.min.load(Relaxed) {
            self.min.fetch_min(value, Relaxed);
        }
        if value > self.max.load(Relaxed) {
            self.max.fetch_max(value, Relaxed);
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
    /// Shard `i` is written only by the thread holding slot `i`.
    owned: Box<[Shard]>,
    /// Written with atomic read-modify-writes by threads without a slot.
    shared: Box<[Shard]>,
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
    /// An empty histogram. Allocates the shards (896 B each, one per slot plus a quarter
    /// as many shared ones); rows of buckets come later, as values land in them.
    pub fn new() -> Self {
        let n = shard_count();
        Self {
            owned: (0..n).map(|_| Shard::new()).collect(),
            shared: (0..(n / 4).max(1)).map(|_| Shard::new()).collect(),
            baseline: Mutex::new(None),
        }
    }

    /// Record one value. Lock-free and wait-free on a thread that holds a slot (a load
    /// and a store); allocates only the first time this thread's shard sees a value of a
    /// new power of two.
    #[inline]
    pub fn record(&self, value: u64) {
        // Every slot is below `shard_count()`, the length of `owned`: a thread without
        // one (UNCLAIMED or SHARED) misses here and takes the slow path.
        match self.owned.get(SLOT.get()) {
            Some(shard) => shard.record_owned(value),
            None => self.record_unowned(value),
        }
    }

    /// The first record of a thread (which claims a slot), and every record of a thread
    /// that found none free (which tries again, then adds atomically to a shared shard).
    #[cold]
    #[inline(never)]
    fn record_unowned(&self, value: u64) {
        if let Some(shard) = own_slot().and_then(|slot| self.owned.get(slot)) {
            return shard.record_owned(value);
        }
        let mut slot = SLOT.get();
        if slot == UNCLAIMED {
            slot = SHARED | NEXT_SHARED.fetch_add(1, Relaxed);
            SLOT.set(slot);
        }
        self.shared[(slot & !SHARED) % self.shared.len()].record_shared(value);
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

    /// A frozen copy of every bucket recorded since creation, with the exact extremes:
    /// iterate it with [`HistogramBuckets::iter`], e.g. to write an HdrHistogram-style
    /// percentile distribution.
    ///
    /// ```
    /// let h = cortex_metrics::Histogram::new();
    /// [5u64, 5, 3_000_000].iter().for_each(|v| h.record(*v));
    /// let buckets = h.buckets();
    /// let all: Vec<_> = buckets.iter().collect();
    /// assert_eq!((all[0].low, all[0].high, all[0].count), (5, 5, 2));
    /// assert!(all[1].low <= 3_000_000 && 3_000_000 <= all[1].high);
    /// assert_eq!((buckets.count(), buckets.max()), (3, Some(3_000_000)));
    /// ```
    pub fn buckets(&self) -> HistogramBuckets {
        let counts = self.counts();
        let (min, max) = self.extremes();
        HistogramBuckets { counts, min, max }
    }

    /// The counts of every bucket, merged over shards.
    pub(crate) fn counts(&self) -> Counts {
        let mut merged: Vec<Option<Box<[u64]>>> = (0..ROWS).map(|_| None).collect();
        for shard in self.owned.iter().chain(self.shared.iter()) {
            for (m, cell) in shard.rows.iter().enumerate() {
                if let Some(b) = cell.get() {
                    let dst = merged[m].get_or_insert_with(|| vec![0; b.len()].into_boxed_slice());
                    for (d, s) in dst.iter_mut().zip(b.iter()) {
                        *d += s.load(Relaxed);
                    }
                }
            }
        }
        Counts { rows: merged }
    }

    pub(crate) fn extremes(&self) -> (u64, u64) {
        let shards = self.owned.iter().chain(self.shared.iter());
        shards.fold((u64::MAX, 0), |(lo, hi), s| {
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

fn new_row() -> Box<Row> {
    Box::new(std::array::from_fn(|_| AtomicU64::new(0)))
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
    rows: Vec<Option<Box<[u64]>>>,
}

impl Counts {
    /// `self -= base`, bucket by bucket (saturating: counters only grow).
    fn subtract(&mut self, base: &Counts) {
        for (mine, theirs) in self.rows.iter_mut().zip(base.rows.iter()) {
            if let (Some(m), Some(t)) = (mine.as_mut(), theirs.as_ref()) {
                for (a, b) in m.iter_mut().zip(t.iter()) {
                    *a = a.saturating_sub(*b);
                }
            }
        }
    }

    /// `self += other`, e.g. to merge the success and error histograms of an operation.
    pub(crate) fn add(&mut self, other: &Counts) {
        if self.rows.len() < other.rows.len() {
            self.rows.resize_with(other.rows.len(), || None);
        }
        for (mine, theirs) in self.rows.iter_mut().zip(other.rows.iter()) {
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
        self.rows
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

/// One bucket of a [`Histogram`]: `count` values were recorded between `low` and `high`
/// inclusive. Below 2048 a bucket holds one value (`low == high`); above, its width is
/// under [`RELATIVE_ERROR`] of `low`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// The lowest value the bucket holds.
    pub low: u64,
    /// The highest value the bucket holds.
    pub high: u64,
    /// How many recorded values fell into it (never 0: empty buckets are skipped).
    pub count: u64,
}

/// A frozen copy of a [`Histogram`]'s buckets, from [`Histogram::buckets`].
#[derive(Clone, Debug)]
pub struct HistogramBuckets {
    counts: Counts,
    min: u64,
    max: u64,
}

impl HistogramBuckets {
    /// The non-empty buckets in ascending value order.
    pub fn iter(&self) -> impl Iterator<Item = Bucket> + '_ {
        self.counts
            .buckets()
            .map(|(low, high, count)| Bucket { low, high, count })
    }

    /// The number of values recorded (the sum of the buckets' counts).
    pub fn count(&self) -> u64 {
        self.iter().map(|b| b.count).sum()
    }

    /// The exact smallest value recorded; `None` when empty.
    pub fn min(&self) -> Option<u64> {
        (self.min <= self.max).then_some(self.min)
    }

    /// The exact largest value recorded; `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.min <= self.max).then_some(self.max)
    }
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
            1023,
            1024,
            1025,
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

    /// The buckets tile `0..=u64::MAX` without gap or overlap, in row and slot order.
    #[test]
    fn buckets_are_contiguous() {
        let mut next = 0u64;
        for row in 0..ROWS {
            for slot in 0..ROW_LEN {
                let (lo, hi) = bucket_range(row, slot);
                assert_eq!(lo, next, "row {row} slot {slot}");
                assert_eq!(index(lo), (row, slot));
                assert_eq!(index(hi), (row, slot));
                next = hi.wrapping_add(1);
            }
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
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

    /// Expected bucket counts of `values`, from `index` alone (no shards involved).
    fn expected(values: impl Iterator<Item = u64>) -> std::collections::BTreeMap<u64, u64> {
        let mut want = std::collections::BTreeMap::new();
        for v in values {
            let (m, s) = index(v);
            *want.entry(bucket_range(m, s).0).or_insert(0) += 1;
        }
        want
    }

    fn recorded(h: &Histogram) -> std::collections::BTreeMap<u64, u64> {
        h.buckets().iter().map(|b| (b.low, b.count)).collect()
    }

    /// The buckets whose count differs: `(low, recorded, expected)`.
    fn differences(
        got: &std::collections::BTreeMap<u64, u64>,
        want: &std::collections::BTreeMap<u64, u64>,
    ) -> Vec<(u64, u64, u64)> {
        let lows: std::collections::BTreeSet<u64> =
            got.keys().chain(want.keys()).copied().collect();
        let count = |m: &std::collections::BTreeMap<u64, u64>, k| m.get(&k).copied().unwrap_or(0);
        lows.into_iter()
            .map(|k| (k, count(got, k), count(want, k)))
            .filter(|(_, g, w)| g != w)
            .collect()
    }

    /// More threads alive at once than there are slots: the extra ones record through the
    /// shared shards, half of all threads exit midway and new ones take their slots, and
    /// every bucket ends up with exactly the values recorded into it.
    #[test]
    fn more_threads_than_slots_and_exits_lose_nothing() {
        let h = std::sync::Arc::new(Histogram::new());
        let threads = shard_count() * 2 + 3;
        let per_thread = 100_000u64;
        // Every other record lands in one bucket, so a lost update would show there.
        let value = |t: usize, i: u64| {
            if i.is_multiple_of(2) {
                42
            } else {
                (t as u64 * 7_919 + i * 13) % 3_000 + (i % 7) * 1_000_000
            }
        };
        let all_alive = std::sync::Arc::new(std::sync::Barrier::new(threads));
        let first_wave: Vec<_> = (0..threads)
            .map(|t| {
                let (h, all_alive) = (h.clone(), all_alive.clone());
                std::thread::spawn(move || {
                    h.record(value(t, 0));
                    let had_slot = owned_slot().is_some();
                    // Every thread has recorded before any goes on (or exits): only
                    // `shard_count()` of them can hold a slot now.
                    all_alive.wait();
                    // Odd threads exit halfway; even ones record everything.
                    let end = if t % 2 == 1 {
                        per_thread / 2
                    } else {
                        per_thread
                    };
                    for i in 1..end {
                        h.record(value(t, i));
                    }
                    had_slot
                })
            })
            .collect();
        let with_slot = first_wave
            .into_iter()
            .map(|j| j.join().expect("recording thread panicked"))
            .filter(|had| *had)
            .count();
        assert!(
            with_slot <= shard_count(),
            "{with_slot} threads held one of {} slots at once",
            shard_count()
        );
        // New threads finish the odd threads' work on recycled slots.
        let second_wave: Vec<_> = (0..threads)
            .filter(|t| t % 2 == 1)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in per_thread / 2..per_thread {
                        h.record(value(t, i));
                    }
                })
            })
            .collect();
        for j in second_wave {
            j.join().expect("recording thread panicked");
        }
        let all = (0..threads).flat_map(|t| (0..per_thread).map(move |i| value(t, i)));
        assert_eq!(differences(&recorded(&h), &expected(all.clone())), vec![]);
        let s = h.snapshot();
        assert_eq!(s.count, threads as u64 * per_thread);
        assert_eq!(
            (s.min, s.max),
            (all.clone().min().unwrap(), all.max().unwrap())
        );
    }

    fn shard_total(shard: &Shard) -> u64 {
        let buckets = shard.rows.iter().filter_map(OnceLock::get);
        buckets
            .flat_map(|b| b.iter())
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// Once every slot is held, a thread records into a shared shard, never into a shard
    /// another thread owns (where its increments could be lost).
    #[test]
    fn a_thread_without_a_slot_never_writes_an_owned_shard() {
        let mut holders = Vec::new();
        let mut checked = None;
        // Each thread keeps the slot it gets until the end, so within `shard_count() + 1`
        // threads one finds them all taken.
        for _ in 0..=shard_count() {
            let (release, released) = std::sync::mpsc::channel::<()>();
            let (report, reported) = std::sync::mpsc::channel();
            let thread = std::thread::spawn(move || {
                let h = Histogram::new();
                h.record(1);
                let shards = |s: &[Shard]| s.iter().map(shard_total).sum::<u64>();
                let outcome = owned_slot()
                    .is_none()
                    .then(|| (shards(&h.owned), shards(&h.shared)));
                report.send(outcome).expect("the test waits for the report");
                let _ = released.recv_timeout(std::time::Duration::from_secs(60));
            });
            let outcome = reported
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the recording thread reports");
            holders.push((release, thread));
            if outcome.is_some() {
                checked = outcome;
                break;
            }
        }
        for (release, thread) in holders {
            drop(release);
            thread.join().expect("recording thread panicked");
        }
        assert_eq!(
            checked,
            Some((0, 1)),
            "(owned, shared) counts of a slot-less record"
        );
    }

    /// A thread recording from another thread-local's destructor, after its slot was
    /// given back, still records (through a shared shard).
    #[test]
    fn records_from_thread_exit_are_kept() {
        struct RecordOnExit(std::sync::Arc<Histogram>);
        impl Drop for RecordOnExit {
            fn drop(&mut self) {
                self.0.record(77);
            }
        }
        thread_local! {
            static ON_EXIT: std::cell::RefCell<Option<RecordOnExit>> =
                const { std::cell::RefCell::new(None) };
        }
        let h = std::sync::Arc::new(Histogram::new());
        let h2 = h.clone();
        std::thread::spawn(move || {
            ON_EXIT.with(|e| *e.borrow_mut() = Some(RecordOnExit(h2.clone())));
            h2.record(5);
        })
        .join()
        .expect("recording thread panicked");
        assert_eq!(
            differences(&recorded(&h), &expected([5u64, 77].into_iter())),
            vec![]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Waves of threads (up to three times the slots) record at once and exit, with
        /// window resets racing them: the buckets hold exactly the values recorded, and
        /// the ended windows plus the current one add up to the total.
        #[test]
        fn concurrent_waves_of_threads_count_exactly(
            threads in 1usize..=(shard_count() * 3 + 1),
            waves in 1usize..=3,
            values in proptest::collection::vec(0u64..50_000_000_000, 1..300),
        ) {
            let h = std::sync::Arc::new(Histogram::new());
            let mut windows = 0u64;
            for _ in 0..waves {
                let start = std::sync::Arc::new(std::sync::Barrier::new(threads));
                let joins: Vec<_> = (0..threads)
                    .map(|t| {
                        let (h, start, values) = (h.clone(), start.clone(), values.clone());
                        std::thread::spawn(move || {
                            start.wait();
                            for v in values.iter().cycle().skip(t).take(values.len()) {
                                h.record(*v);
                            }
                        })
                    })
                    .collect();
                windows += h.reset_window().count;
                for j in joins {
                    j.join().expect("recording thread panicked");
                }
            }
            let per_wave = threads * waves;
            let all = values.iter().flat_map(|v| std::iter::repeat_n(*v, per_wave));
            proptest::prop_assert_eq!(differences(&recorded(&h), &expected(all)), vec![]);
            let total = h.snapshot();
            proptest::prop_assert_eq!(total.count, (values.len() * per_wave) as u64);
            proptest::prop_assert_eq!(windows + h.window().count, total.count);
            proptest::prop_assert_eq!(total.min, *values.iter().min().unwrap());
            proptest::prop_assert_eq!(total.max, *values.iter().max().unwrap());
        }
    }
}
