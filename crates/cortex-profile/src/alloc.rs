//! An opt-in counting global allocator: process-wide allocation statistics, per-future
//! reports and named scopes (like `tracemalloc` snapshot diffs).
//!
//! Nothing is counted unless the binary installs the allocator:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: cortex_profile::CountingAllocator = cortex_profile::CountingAllocator::system();
//!
//! fn main() {
//!     let before = cortex_profile::allocation_stats();
//!     let v = std::hint::black_box(vec![0u8; 4096]);
//!     let after = cortex_profile::allocation_stats();
//!     assert!(cortex_profile::is_counting());
//!     assert!(after.bytes_allocated - before.bytes_allocated >= v.len() as u64);
//! }
//! ```
//!
//! Without it every function here still works and reports zeros; [`is_counting`] tells
//! which case applies.
//!
//! The allocator path never locks and never allocates: it updates relaxed atomics and
//! reads two const-initialised thread-locals (native TLS, so reading them cannot allocate).
//!
//! Attribution rules, chosen to keep the hot path to a few atomic adds:
//! - A deallocation is charged to whatever scope is active when it happens, not to the
//!   scope that made the allocation, so a scope that frees memory allocated elsewhere can
//!   show negative net bytes.
//! - `realloc` counts as one deallocation of the old size plus one allocation of the new.
//! - Memory used by tasks spawned from a profiled future is not attributed to it: those
//!   tasks are polled outside its scope.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

/// A [`GlobalAlloc`] that forwards to `A` (the system allocator by default) and counts
/// every allocation, process-wide, per profiled future and per named scope.
///
/// Install it with `#[global_allocator]`; the counters are process-wide statics, so any
/// instance records into the same totals.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAllocator<A = System> {
    inner: A,
}

impl<A> CountingAllocator<A> {
    /// Count the allocations served by `inner`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

impl CountingAllocator<System> {
    /// Count the allocations of the system allocator.
    pub const fn system() -> Self {
        Self::new(System)
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged and
// returns its result unchanged, so `inner`'s `GlobalAlloc` guarantees carry over. The
// bookkeeping only touches atomics and `Cell`s of `Copy` values: it never allocates (no
// re-entrancy) and never unwinds.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's contract for `alloc`.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            record_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's contract for `alloc_zeroed`.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            record_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded under the caller's contract for `dealloc`.
        unsafe { self.inner.dealloc(ptr, layout) };
        record_dealloc(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded under the caller's contract for `realloc`.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        // On failure the old block is untouched, so nothing changed.
        if !p.is_null() {
            record_dealloc(layout.size());
            record_alloc(new_size);
        }
        p
    }
}

// ---------------------------------------------------------------------------------------
// Process-wide counters.

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static DEALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES_ALLOCATED: AtomicU64 = AtomicU64::new(0);
static BYTES_FREED: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK_LIVE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The innermost [`Frame`] of [`profile_allocations`] being polled on this thread.
    static CURRENT_FRAME: Cell<*const Frame> = const { Cell::new(ptr::null()) };
    /// The slot of the innermost named scope being run on this thread, or `NO_SCOPE`.
    static CURRENT_SCOPE: Cell<usize> = const { Cell::new(NO_SCOPE) };
}

#[inline]
fn record_alloc(size: usize) {
    let size = size as u64;
    // Load first so the steady state is a shared read, not a write to a hot line.
    if !COUNTING.load(Relaxed) {
        COUNTING.store(true, Relaxed);
    }
    ALLOCATIONS.fetch_add(1, Relaxed);
    BYTES_ALLOCATED.fetch_add(size, Relaxed);
    let live = LIVE.fetch_add(size, Relaxed).wrapping_add(size);
    PEAK_LIVE.fetch_max(live, Relaxed);

    // `try_with` fails only during thread teardown; such allocations stay unattributed.
    let _ = CURRENT_SCOPE.try_with(|s| {
        if let Some(slot) = SLOTS.get(s.get()) {
            slot.allocations.fetch_add(1, Relaxed);
            slot.bytes_allocated.fetch_add(size, Relaxed);
        }
    });
    let _ = CURRENT_FRAME.try_with(|f| {
        let mut p = f.get();
        while !p.is_null() {
            // SAFETY: `CURRENT_FRAME` is non-null only while `Tracked::poll` runs on this
            // thread, and it holds a live `&Frame` for that whole call; each frame's
            // `parent` is the frame that was current when that poll began, which is still
            // being polled further up this thread's stack. `FrameGuard` restores the
            // previous value before the poll returns or unwinds.
            let frame = unsafe { &*p };
            frame.record_alloc(size);
            p = frame.parent.load(Relaxed);
        }
    });
}

#[inline]
fn record_dealloc(size: usize) {
    let size = size as u64;
    DEALLOCATIONS.fetch_add(1, Relaxed);
    BYTES_FREED.fetch_add(size, Relaxed);
    LIVE.fetch_sub(size, Relaxed);

    let _ = CURRENT_SCOPE.try_with(|s| {
        if let Some(slot) = SLOTS.get(s.get()) {
            slot.deallocations.fetch_add(1, Relaxed);
            slot.bytes_freed.fetch_add(size, Relaxed);
        }
    });
    let _ = CURRENT_FRAME.try_with(|f| {
        let mut p = f.get();
        while !p.is_null() {
            // SAFETY: as in `record_alloc`.
            let frame = unsafe { &*p };
            frame.record_dealloc(size);
            p = frame.parent.load(Relaxed);
        }
    });
}

/// Process-wide allocation totals since start-up (a plain, serde-able snapshot).
///
/// All zeros when the [`CountingAllocator`] is not installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocStats {
    /// Allocations served (a `realloc` counts as one allocation and one deallocation).
    pub allocations: u64,
    /// Deallocations.
    pub deallocations: u64,
    /// Bytes allocated in total.
    pub bytes_allocated: u64,
    /// Bytes freed in total.
    pub bytes_freed: u64,
    /// Bytes currently allocated.
    pub live_bytes: u64,
    /// The most bytes allocated at any one time.
    pub peak_live_bytes: u64,
}

/// The process-wide allocation totals.
///
/// All zeros when the [`CountingAllocator`] is not the global allocator.
pub fn allocation_stats() -> AllocStats {
    AllocStats {
        allocations: ALLOCATIONS.load(Relaxed),
        deallocations: DEALLOCATIONS.load(Relaxed),
        bytes_allocated: BYTES_ALLOCATED.load(Relaxed),
        bytes_freed: BYTES_FREED.load(Relaxed),
        live_bytes: LIVE.load(Relaxed),
        peak_live_bytes: PEAK_LIVE.load(Relaxed),
    }
}

/// Whether the [`CountingAllocator`] has served at least one allocation, i.e. whether it
/// is installed as the global allocator (the Rust runtime usually allocates before
/// `main`, so in practice this is `true` from the start when installed).
///
/// When `false`, every statistic of this module reads zero.
pub fn is_counting() -> bool {
    COUNTING.load(Relaxed)
}

// ---------------------------------------------------------------------------------------
// Per-future reports.

/// The counters of one [`profile_allocations`] call.
#[derive(Debug, Default)]
struct Frame {
    allocations: AtomicU64,
    deallocations: AtomicU64,
    bytes_allocated: AtomicU64,
    bytes_freed: AtomicU64,
    net: AtomicI64,
    peak_net: AtomicI64,
    /// The frame that was current when this one's latest poll began.
    parent: AtomicPtr<Frame>,
}

impl Frame {
    #[inline]
    fn record_alloc(&self, size: u64) {
        self.allocations.fetch_add(1, Relaxed);
        self.bytes_allocated.fetch_add(size, Relaxed);
        let size = size as i64;
        let net = self.net.fetch_add(size, Relaxed).wrapping_add(size);
        self.peak_net.fetch_max(net, Relaxed);
    }

    #[inline]
    fn record_dealloc(&self, size: u64) {
        self.deallocations.fetch_add(1, Relaxed);
        self.bytes_freed.fetch_add(size, Relaxed);
        self.net.fetch_sub(size as i64, Relaxed);
    }

    fn report(&self) -> AllocationReport {
        AllocationReport {
            allocations: self.allocations.load(Relaxed),
            deallocations: self.deallocations.load(Relaxed),
            bytes_allocated: self.bytes_allocated.load(Relaxed),
            bytes_freed: self.bytes_freed.load(Relaxed),
            net_bytes: self.net.load(Relaxed),
            peak_net_bytes: self.peak_net.load(Relaxed),
        }
    }
}

/// What one future allocated, from [`profile_allocations`].
///
/// All zeros when the [`CountingAllocator`] is not installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationReport {
    /// Allocations made while the future was being polled.
    pub allocations: u64,
    /// Deallocations made while the future was being polled (including memory it did not
    /// allocate itself).
    pub deallocations: u64,
    /// Bytes allocated.
    pub bytes_allocated: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// `bytes_allocated - bytes_freed`: what the future left allocated, e.g. in its output.
    /// Negative when it freed more than it allocated.
    pub net_bytes: i64,
    /// The highest value `net_bytes` reached while the future ran (at least 0): its
    /// high-water mark.
    pub peak_net_bytes: i64,
}

/// Run `fut` and report what it allocated, across all its polls, on whichever threads
/// they happen.
///
/// Reports nest inclusively: an allocation counts for the innermost
/// `profile_allocations` and for every enclosing one.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (v, report) = cortex_profile::profile_allocations(async { vec![0u8; 4096] }).await;
/// // Zeros unless the CountingAllocator is the global allocator.
/// assert!(report.bytes_allocated == 0 || report.net_bytes >= v.len() as i64);
/// # }
/// ```
pub async fn profile_allocations<F: Future>(fut: F) -> (F::Output, AllocationReport) {
    let frame = Frame::default();
    let out = Tracked {
        fut: pin!(fut),
        frame: &frame,
    }
    .await;
    (out, frame.report())
}

/// Polls `fut` with `frame` as this thread's current frame.
struct Tracked<'a, F> {
    fut: Pin<&'a mut F>,
    frame: &'a Frame,
}

impl<F: Future> Future for Tracked<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let frame: *const Frame = self.frame;
        let prev = CURRENT_FRAME.with(|c| c.replace(frame));
        self.frame.parent.store(prev.cast_mut(), Relaxed);
        let _guard = FrameGuard(prev);
        self.fut.as_mut().poll(cx)
    }
}

/// Restores the previous current frame, also when the poll unwinds.
struct FrameGuard(*const Frame);

impl Drop for FrameGuard {
    fn drop(&mut self) {
        let _ = CURRENT_FRAME.try_with(|c| c.set(self.0));
    }
}

// ---------------------------------------------------------------------------------------
// Named scopes.

/// Named slots; the last one is "(other)", for names that find no free slot.
const SCOPE_SLOTS: usize = 256;
const OTHER: usize = SCOPE_SLOTS;
const NO_SCOPE: usize = usize::MAX;
const OTHER_NAME: &str = "(other)";

#[derive(Debug)]
struct Slot {
    /// Set once, when the slot is claimed (a CAS inside `OnceLock`); never by the
    /// allocator, which only adds to the counters.
    name: OnceLock<&'static str>,
    allocations: AtomicU64,
    deallocations: AtomicU64,
    bytes_allocated: AtomicU64,
    bytes_freed: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            name: OnceLock::new(),
            allocations: AtomicU64::new(0),
            deallocations: AtomicU64::new(0),
            bytes_allocated: AtomicU64::new(0),
            bytes_freed: AtomicU64::new(0),
        }
    }

    fn stats(&self, name: &str) -> ScopeStats {
        let bytes_allocated = self.bytes_allocated.load(Relaxed);
        let bytes_freed = self.bytes_freed.load(Relaxed);
        ScopeStats {
            name: name.to_owned(),
            allocations: self.allocations.load(Relaxed),
            deallocations: self.deallocations.load(Relaxed),
            bytes_allocated,
            bytes_freed,
            live_bytes: bytes_allocated as i64 - bytes_freed as i64,
        }
    }
}

static SLOTS: [Slot; SCOPE_SLOTS + 1] = [const { Slot::new() }; SCOPE_SLOTS + 1];

/// The slot for `name`: found by content (the same name from two call sites shares a
/// slot), claimed on first use, "(other)" when the table is full.
fn slot_for(name: &'static str) -> usize {
    // FNV-1a: a fixed, allocation-free hash, so the probe sequence is stable.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let start = (h % SCOPE_SLOTS as u64) as usize;
    for i in 0..SCOPE_SLOTS {
        let idx = (start + i) % SCOPE_SLOTS;
        let owner = *SLOTS[idx].name.get_or_init(|| name);
        if ptr::eq(owner, name) || owner == name {
            return idx;
        }
    }
    OTHER
}

/// Allocation totals of one named scope (a plain, serde-able snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeStats {
    /// The scope name given to [`profile_scope`], or `"(other)"` for names that found the
    /// table of 256 scopes full.
    pub name: String,
    /// Allocations made inside the scope.
    pub allocations: u64,
    /// Deallocations made inside the scope.
    pub deallocations: u64,
    /// Bytes allocated inside the scope.
    pub bytes_allocated: u64,
    /// Bytes freed inside the scope (including memory allocated elsewhere).
    pub bytes_freed: u64,
    /// `bytes_allocated - bytes_freed`: what the scope left allocated. Negative when it
    /// freed memory allocated outside it.
    pub live_bytes: i64,
}

/// Run `fut` as the named scope `name`: what it allocates, across all its polls, adds to
/// `name`'s totals in [`scope_stats`].
///
/// Scopes attribute to the innermost scope only (like per-line statistics): an allocation
/// in a scope nested in another counts for the inner one.
pub async fn profile_scope<F: Future>(name: &'static str, fut: F) -> F::Output {
    Scoped {
        fut: pin!(fut),
        slot: slot_for(name),
    }
    .await
}

/// Run `f` as the named scope `name`; see [`profile_scope`].
pub fn profile_scope_sync<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    let _guard = ScopeGuard::enter(slot_for(name));
    f()
}

struct Scoped<'a, F> {
    fut: Pin<&'a mut F>,
    slot: usize,
}

impl<F: Future> Future for Scoped<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _guard = ScopeGuard::enter(self.slot);
        self.fut.as_mut().poll(cx)
    }
}

/// Makes `slot` the current scope and restores the previous one on drop (also on unwind).
struct ScopeGuard(usize);

impl ScopeGuard {
    fn enter(slot: usize) -> Self {
        Self(CURRENT_SCOPE.with(|c| c.replace(slot)))
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let _ = CURRENT_SCOPE.try_with(|c| c.set(self.0));
    }
}

/// Totals of every named scope used so far, by `bytes_allocated`, largest first.
///
/// All counters are zero when the [`CountingAllocator`] is not installed.
pub fn scope_stats() -> Vec<ScopeStats> {
    let mut out: Vec<ScopeStats> = SLOTS[..SCOPE_SLOTS]
        .iter()
        .filter_map(|s| s.name.get().map(|name| s.stats(name)))
        .collect();
    let other = SLOTS[OTHER].stats(OTHER_NAME);
    if other.allocations > 0 || other.deallocations > 0 {
        out.push(other);
    }
    out.sort_by(|a, b| {
        b.bytes_allocated
            .cmp(&a.bytes_allocated)
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// The `n` scopes that allocated the most bytes.
pub fn top_scopes(n: usize) -> Vec<ScopeStats> {
    let mut all = scope_stats();
    all.truncate(n);
    all
}

/// How one scope's totals changed between two [`scope_stats`] readings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeDiff {
    /// The scope name.
    pub name: String,
    /// Change in allocations.
    pub allocations_delta: i64,
    /// Change in bytes allocated: what the scope allocated in between.
    pub bytes_allocated_delta: i64,
    /// Change in bytes freed.
    pub bytes_freed_delta: i64,
    /// Change in live bytes: what the scope left allocated in between.
    pub live_bytes_delta: i64,
}

/// The per-scope allocation diff between two [`scope_stats`] readings: scopes that
/// changed, by absolute `bytes_allocated_delta`, then absolute `live_bytes_delta`,
/// largest first.
///
/// A scope missing from one side counts as zero there, so pass full [`scope_stats`]
/// readings rather than [`top_scopes`] ones.
pub fn diff_scopes(before: &[ScopeStats], after: &[ScopeStats]) -> Vec<ScopeDiff> {
    let zero = ScopeStats::default();
    let old: HashMap<&str, &ScopeStats> = before.iter().map(|s| (s.name.as_str(), s)).collect();
    let new: HashMap<&str, &ScopeStats> = after.iter().map(|s| (s.name.as_str(), s)).collect();
    let delta = |a: u64, b: u64| b as i64 - a as i64;
    let mut names: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    let mut out: Vec<ScopeDiff> = names
        .into_iter()
        .map(|name| {
            let a = old.get(name).copied().unwrap_or(&zero);
            let b = new.get(name).copied().unwrap_or(&zero);
            ScopeDiff {
                name: name.to_owned(),
                allocations_delta: delta(a.allocations, b.allocations),
                bytes_allocated_delta: delta(a.bytes_allocated, b.bytes_allocated),
                bytes_freed_delta: delta(a.bytes_freed, b.bytes_freed),
                live_bytes_delta: b.live_bytes - a.live_bytes,
            }
        })
        .filter(|d| {
            d.allocations_delta != 0
                || d.bytes_allocated_delta != 0
                || d.bytes_freed_delta != 0
                || d.live_bytes_delta != 0
        })
        .collect();
    out.sort_by(|a, b| {
        b.bytes_allocated_delta
            .unsigned_abs()
            .cmp(&a.bytes_allocated_delta.unsigned_abs())
            .then_with(|| {
                b.live_bytes_delta
                    .unsigned_abs()
                    .cmp(&a.live_bytes_delta.unsigned_abs())
            })
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(name: &str, bytes: u64, freed: u64) -> ScopeStats {
        ScopeStats {
            name: name.into(),
            allocations: bytes / 8,
            deallocations: freed / 8,
            bytes_allocated: bytes,
            bytes_freed: freed,
            live_bytes: bytes as i64 - freed as i64,
        }
    }

    #[test]
    fn diff_orders_by_byte_delta_and_skips_unchanged() {
        let before = [stats("a", 100, 0), stats("b", 80, 80), stats("same", 8, 0)];
        let after = [
            stats("a", 180, 0),
            stats("b", 800, 800),
            stats("same", 8, 0),
            stats("new", 16, 0),
        ];
        let d = diff_scopes(&before, &after);
        let names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "new"]);
        assert_eq!(d[0].bytes_allocated_delta, 720);
        assert_eq!(d[0].live_bytes_delta, 0);
        assert_eq!(d[1].live_bytes_delta, 80);
        assert_eq!(d[2].allocations_delta, 2);
    }

    #[test]
    fn slots_are_keyed_by_content_and_nest_innermost() {
        let owned: &'static str = String::from("alloc.unit.slot").leak();
        assert_eq!(slot_for("alloc.unit.slot"), slot_for(owned));
        assert_ne!(slot_for("alloc.unit.slot"), slot_for("alloc.unit.other"));
        profile_scope_sync("alloc.unit.outer", || {
            let outer = CURRENT_SCOPE.with(Cell::get);
            profile_scope_sync("alloc.unit.inner", || {
                assert_eq!(CURRENT_SCOPE.with(Cell::get), slot_for("alloc.unit.inner"));
            });
            assert_eq!(CURRENT_SCOPE.with(Cell::get), outer);
        });
        assert!(scope_stats().iter().any(|s| s.name == "alloc.unit.outer"));
    }
}
