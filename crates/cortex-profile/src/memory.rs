//! The memory profiler: periodic snapshots of process memory (from `/proc/self/status`)
//! and, when the [`CountingAllocator`](crate::CountingAllocator) is installed, of
//! allocation totals and the top named scopes; comparisons, growth and high-memory
//! warnings.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alloc::{
    AllocStats, ScopeDiff, ScopeStats, allocation_stats, diff_scopes, is_counting, scope_stats,
};
use crate::{Error, Result};
use cortex_support::{EnvSource, EnvVar, FromEnv};

const MIB: u64 = 1024 * 1024;
/// How many scopes a snapshot lists.
const TOP_SCOPES: usize = 10;

/// Settings of the [`MemoryProfiler`].
///
/// Read from the environment with [`ProfilerConfig::from_env`]; the variables are listed
/// in [`FromEnv::VARS`] (and, from it, in the crate README). In JSON, durations are
/// fractional seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfilerConfig {
    /// Whether [`MemoryProfiler::spawn`] takes periodic snapshots.
    ///
    /// Default: `false` (`ENABLE_MEMORY_PROFILING`).
    pub enabled: bool,
    /// Time between periodic snapshots; must not be zero.
    ///
    /// Default: 300 s (`MEMORY_SNAPSHOT_INTERVAL`).
    #[serde(with = "cortex_support::duration::secs")]
    pub snapshot_interval: Duration,
    /// How many snapshots are kept, oldest dropped first; at least 1 (2 for
    /// [`MemoryProfiler::compare`] to have something to compare).
    ///
    /// Default: 10 (`MEMORY_SNAPSHOT_COUNT`).
    pub snapshot_count: usize,
    /// Resident memory, in MiB, above which a snapshot is flagged `high_memory` and a
    /// warning is logged.
    ///
    /// Default: 1024 (`MEMORY_HIGH_THRESHOLD_MB`).
    pub high_threshold_mb: u64,
}

impl Default for ProfilerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            snapshot_interval: Duration::from_secs(300),
            snapshot_count: 10,
            high_threshold_mb: 1024,
        }
    }
}

impl FromEnv for ProfilerConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "ENABLE_MEMORY_PROFILING",
            default: "false",
            doc: "Whether `MemoryProfiler::spawn` takes periodic snapshots.",
        },
        EnvVar {
            name: "MEMORY_SNAPSHOT_INTERVAL",
            default: "5m",
            doc: "Time between periodic snapshots; must be positive.",
        },
        EnvVar {
            name: "MEMORY_SNAPSHOT_COUNT",
            default: "10",
            doc: "Snapshots kept, oldest dropped first; at least 1.",
        },
        EnvVar {
            name: "MEMORY_HIGH_THRESHOLD_MB",
            default: "1024",
            doc: "Resident MiB above which a snapshot is flagged `high_memory` and a warning logged.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let d = Self::default();
        let config = Self {
            enabled: env.bool("ENABLE_MEMORY_PROFILING")?.unwrap_or(d.enabled),
            snapshot_interval: env
                .duration("MEMORY_SNAPSHOT_INTERVAL")?
                .unwrap_or(d.snapshot_interval),
            snapshot_count: env
                .parse("MEMORY_SNAPSHOT_COUNT")?
                .unwrap_or(d.snapshot_count),
            high_threshold_mb: env
                .parse("MEMORY_HIGH_THRESHOLD_MB")?
                .unwrap_or(d.high_threshold_mb),
        };
        config.validate()?;
        Ok(config)
    }
}

impl ProfilerConfig {
    /// Defaults overridden by the environment variables of [`FromEnv::VARS`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when one is set to a bad value.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    /// Check the values that parse but cannot work.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `snapshot_count` or `snapshot_interval` is zero.
    pub fn validate(&self) -> Result<()> {
        if self.snapshot_count == 0 {
            return Err(Error::InvalidConfig {
                key: "MEMORY_SNAPSHOT_COUNT",
                value: "0".into(),
                reason: "at least one snapshot must be kept".into(),
            });
        }
        if self.snapshot_interval.is_zero() {
            return Err(Error::InvalidConfig {
                key: "MEMORY_SNAPSHOT_INTERVAL",
                value: "0".into(),
                reason: "the interval must be positive".into(),
            });
        }
        Ok(())
    }
}

/// Memory of this process as the kernel sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMemory {
    /// Resident set size (`VmRSS`).
    pub rss_bytes: u64,
    /// Virtual memory size (`VmSize`).
    pub virtual_bytes: u64,
    /// Peak resident set size (`VmHWM`; the current RSS if the kernel does not report it).
    pub peak_rss_bytes: u64,
}

/// Read this process's memory from `/proc/self/status`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read or lacks `VmRSS`/`VmSize`;
/// [`Error::Unsupported`] outside Linux.
#[cfg(target_os = "linux")]
pub fn process_memory() -> Result<ProcessMemory> {
    const PATH: &str = "/proc/self/status";
    let io = |source| Error::Io {
        path: PATH.into(),
        source,
    };
    let text = std::fs::read_to_string(PATH).map_err(io)?;
    parse_status(&text).ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no VmRSS or VmSize line",
        ))
    })
}

/// Read this process's memory from `/proc/self/status`.
///
/// # Errors
/// Always [`Error::Unsupported`]: there is no `/proc` outside Linux.
#[cfg(not(target_os = "linux"))]
pub fn process_memory() -> Result<ProcessMemory> {
    Err(Error::Unsupported {
        what: "process memory from /proc",
    })
}

/// Parse the `Vm*:  1234 kB` lines of `/proc/<pid>/status`.
#[cfg(any(target_os = "linux", test))]
fn parse_status(text: &str) -> Option<ProcessMemory> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb.saturating_mul(1024))
        })
    };
    let rss_bytes = field("VmRSS")?;
    Some(ProcessMemory {
        rss_bytes,
        virtual_bytes: field("VmSize")?,
        peak_rss_bytes: field("VmHWM").unwrap_or(rss_bytes),
    })
}

/// One reading of the profiler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// When it was taken, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Process memory.
    pub process: ProcessMemory,
    /// Allocation totals, when the counting allocator is installed.
    pub alloc: Option<AllocStats>,
    /// The named scopes that allocated the most bytes (up to 10; empty when the counting
    /// allocator is not installed).
    pub top_scopes: Vec<ScopeStats>,
    /// Whether resident memory exceeded `high_threshold_mb`.
    pub high_memory: bool,
}

/// The change between the last two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryComparison {
    /// Time between the two snapshots, in milliseconds.
    pub elapsed_ms: u64,
    /// Change in resident memory.
    pub rss_delta_bytes: i64,
    /// Change in virtual memory.
    pub virtual_delta_bytes: i64,
    /// Change in bytes allocated and not freed, when the counting allocator is installed.
    pub live_bytes_delta: Option<i64>,
    /// Per-scope allocation diff, largest change first (see [`diff_scopes`]).
    pub scopes: Vec<ScopeDiff>,
}

/// Resident memory at one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GrowthPoint {
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Resident memory, in MiB.
    pub rss_mb: f64,
}

/// Resident memory over the kept snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryGrowth {
    /// One point per kept snapshot, oldest first.
    pub points: Vec<GrowthPoint>,
    /// Growth from the oldest to the newest point, in MiB per minute; `None` with fewer
    /// than two points or no time between them.
    pub rate_mb_per_min: Option<f64>,
}

/// Everything the profiler knows, e.g. for an `/admin/memory` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// Whether periodic profiling is enabled.
    pub enabled: bool,
    /// The config in use.
    pub config: ProfilerConfig,
    /// A reading taken now (not kept), or the latest kept snapshot if that fails.
    pub current: Option<MemorySnapshot>,
    /// Resident memory over the kept snapshots.
    pub growth: MemoryGrowth,
    /// The change between the last two kept snapshots.
    pub comparison: Option<MemoryComparison>,
}

/// A kept snapshot plus what comparisons need but the snapshot does not show.
#[derive(Debug)]
struct Entry {
    snapshot: MemorySnapshot,
    at: Instant,
    /// Every scope, not just the top ones, so diffs see scopes leaving the top list.
    scopes: Vec<ScopeStats>,
}

/// Counts of a [`MemoryProfiler`] since it was made, for a health or admin endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryProfilerStats {
    /// Snapshots taken and kept (periodic or by [`MemoryProfiler::take_snapshot`]).
    pub snapshots_taken: u64,
    /// Snapshots that failed (process memory could not be read).
    pub snapshot_failures: u64,
    /// Snapshots taken above `high_threshold_mb` (each logged a warning).
    pub high_memory_snapshots: u64,
    /// Snapshots kept now (at most `snapshot_count`).
    pub snapshots_kept: usize,
}

#[derive(Debug)]
struct Inner {
    config: ProfilerConfig,
    entries: Mutex<VecDeque<Entry>>,
    taken: AtomicU64,
    failures: AtomicU64,
    high: AtomicU64,
    /// Bumped by [`MemoryProfiler::stop`]; dropped with the last clone, which also stops
    /// the loops.
    stop: watch::Sender<u64>,
}

/// Takes and keeps memory snapshots; cheap to clone (all clones share the snapshots).
///
/// ```
/// use cortex_profile::{ProfilerConfig, MemoryProfiler};
///
/// let profiler = MemoryProfiler::new(ProfilerConfig::default())?;
/// # #[cfg(target_os = "linux")] {
/// let snapshot = profiler.take_snapshot()?;
/// assert!(snapshot.process.rss_bytes > 0);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct MemoryProfiler {
    inner: Arc<Inner>,
}

impl MemoryProfiler {
    /// A profiler with `config`; nothing runs until [`spawn`](Self::spawn).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the config does not [validate](ProfilerConfig::validate).
    pub fn new(config: ProfilerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                entries: Mutex::new(VecDeque::new()),
                taken: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                high: AtomicU64::new(0),
                stop: watch::Sender::new(0),
            }),
        })
    }

    /// The config in use.
    pub fn config(&self) -> &ProfilerConfig {
        &self.inner.config
    }

    /// Take a snapshot and keep it (dropping the oldest beyond `snapshot_count`); log a
    /// warning with the top allocation scopes when resident memory exceeds the threshold.
    ///
    /// # Errors
    /// Those of [`process_memory`].
    pub fn take_snapshot(&self) -> Result<MemorySnapshot> {
        let (snapshot, scopes) = self.capture().inspect_err(|_| {
            self.inner.failures.fetch_add(1, Relaxed);
        })?;
        self.inner.taken.fetch_add(1, Relaxed);
        if snapshot.high_memory {
            self.inner.high.fetch_add(1, Relaxed);
            warn_high(&snapshot, self.inner.config.high_threshold_mb);
        }
        let mut entries = self.entries();
        entries.push_back(Entry {
            snapshot: snapshot.clone(),
            at: Instant::now(),
            scopes,
        });
        while entries.len() > self.inner.config.snapshot_count {
            entries.pop_front();
        }
        Ok(snapshot)
    }

    /// What the profiler has done since it was made (shared by all clones).
    ///
    /// ```
    /// use cortex_profile::{MemoryProfiler, ProfilerConfig};
    ///
    /// let profiler = MemoryProfiler::new(ProfilerConfig::default())?;
    /// assert_eq!(profiler.stats().snapshots_taken, 0);
    /// # #[cfg(target_os = "linux")] {
    /// profiler.take_snapshot()?;
    /// assert_eq!(profiler.stats().snapshots_taken, 1);
    /// assert_eq!(profiler.stats().snapshots_kept, 1);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> MemoryProfilerStats {
        MemoryProfilerStats {
            snapshots_taken: self.inner.taken.load(Relaxed),
            snapshot_failures: self.inner.failures.load(Relaxed),
            high_memory_snapshots: self.inner.high.load(Relaxed),
            snapshots_kept: self.entries().len(),
        }
    }

    /// The kept snapshots, oldest first.
    pub fn snapshots(&self) -> Vec<MemorySnapshot> {
        self.entries().iter().map(|e| e.snapshot.clone()).collect()
    }

    /// The change between the last two kept snapshots; `None` with fewer than two.
    pub fn compare(&self) -> Option<MemoryComparison> {
        let entries = self.entries();
        let n = entries.len();
        let (a, b) = (entries.get(n.checked_sub(2)?)?, entries.get(n - 1)?);
        let delta = |x: u64, y: u64| y as i64 - x as i64;
        let (pa, pb) = (&a.snapshot.process, &b.snapshot.process);
        Some(MemoryComparison {
            elapsed_ms: millis(b.at.saturating_duration_since(a.at)),
            rss_delta_bytes: delta(pa.rss_bytes, pb.rss_bytes),
            virtual_delta_bytes: delta(pa.virtual_bytes, pb.virtual_bytes),
            live_bytes_delta: match (&a.snapshot.alloc, &b.snapshot.alloc) {
                (Some(x), Some(y)) => Some(delta(x.live_bytes, y.live_bytes)),
                _ => None,
            },
            scopes: diff_scopes(&a.scopes, &b.scopes),
        })
    }

    /// Resident memory over the kept snapshots, with the growth rate.
    pub fn growth(&self) -> MemoryGrowth {
        let entries = self.entries();
        let points: Vec<GrowthPoint> = entries
            .iter()
            .map(|e| GrowthPoint {
                timestamp_ms: e.snapshot.timestamp_ms,
                rss_mb: e.snapshot.process.rss_bytes as f64 / MIB as f64,
            })
            .collect();
        let rate_mb_per_min = match (
            entries.front(),
            entries.back(),
            points.first(),
            points.last(),
        ) {
            (Some(a), Some(b), Some(p), Some(q)) if points.len() >= 2 => {
                let minutes = b.at.saturating_duration_since(a.at).as_secs_f64() / 60.0;
                (minutes > 0.0).then(|| (q.rss_mb - p.rss_mb) / minutes)
            }
            _ => None,
        };
        MemoryGrowth {
            points,
            rate_mb_per_min,
        }
    }

    /// Everything the profiler knows: a current reading (not kept), growth and the last
    /// comparison.
    pub fn report(&self) -> MemoryReport {
        let current = match self.capture() {
            Ok((snapshot, _)) => Some(snapshot),
            Err(_) => self.entries().back().map(|e| e.snapshot.clone()),
        };
        MemoryReport {
            enabled: self.inner.config.enabled,
            config: self.inner.config.clone(),
            current,
            growth: self.growth(),
            comparison: self.compare(),
        }
    }

    /// Take a snapshot now and then every `snapshot_interval` on the current Tokio
    /// runtime, until [`stop`](Self::stop) is called, the returned handle is aborted, or
    /// the last clone of the profiler is dropped. Failed snapshots are logged, never fatal.
    ///
    /// Returns `None`, starting nothing, when profiling is disabled or no Tokio runtime
    /// is running.
    pub fn spawn(&self) -> Option<JoinHandle<()>> {
        if !self.inner.config.enabled {
            return None;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("memory profiling not started: no Tokio runtime is running");
            return None;
        };
        if let Err(error) = self.take_snapshot() {
            tracing::warn!(%error, "memory snapshot failed");
        }
        let mut stop = self.inner.stop.subscribe();
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let interval = self.inner.config.snapshot_interval;
        Some(runtime.spawn(async move {
            let mut next = tokio::time::Instant::now() + interval;
            loop {
                // `Ok` means stop() was called or every profiler clone is gone.
                if tokio::time::timeout_at(next, stop.changed()).await.is_ok() {
                    break;
                }
                let Some(inner) = weak.upgrade() else { break };
                if let Err(error) = (MemoryProfiler { inner }).take_snapshot() {
                    tracing::warn!(%error, "memory snapshot failed");
                }
                next += interval;
                // After a long stall, do not fire a burst of catch-up snapshots.
                let now = tokio::time::Instant::now();
                if next < now {
                    next = now + interval;
                }
            }
        }))
    }

    /// End every loop started by [`spawn`](Self::spawn) on this profiler or its clones.
    pub fn stop(&self) {
        self.inner.stop.send_modify(|generation| *generation += 1);
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        // The deque is valid after any panic (pushes and pops are atomic with respect
        // to it), so a poisoned lock is still safe to use.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot (not kept, no warning) and the full scope list.
    fn capture(&self) -> Result<(MemorySnapshot, Vec<ScopeStats>)> {
        let process = process_memory()?;
        let counting = is_counting();
        let scopes = if counting { scope_stats() } else { Vec::new() };
        let threshold = self.inner.config.high_threshold_mb.saturating_mul(MIB);
        let snapshot = MemorySnapshot {
            timestamp_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(millis)
                .unwrap_or(0),
            process,
            alloc: counting.then(allocation_stats),
            top_scopes: scopes.iter().take(TOP_SCOPES).cloned().collect(),
            high_memory: process.rss_bytes > threshold,
        };
        Ok((snapshot, scopes))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn warn_high(snapshot: &MemorySnapshot, threshold_mb: u64) {
    let mut top = String::new();
    for s in &snapshot.top_scopes {
        let _ = write!(
            top,
            "{}{}: {} B allocated, {} B live",
            if top.is_empty() { "" } else { "; " },
            s.name,
            s.bytes_allocated,
            s.live_bytes
        );
    }
    if top.is_empty() {
        top.push_str("(no allocation scopes recorded)");
    }
    tracing::warn!(
        rss_mb = snapshot.process.rss_bytes / MIB,
        threshold_mb,
        top_scopes = %top,
        "high memory usage"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tx\nVmPeak:\t  9000 kB\nVmSize:\t  8000 kB\nVmHWM:\t  3000 kB\n\
                    VmRSS:\t  2000 kB\nThreads:\t1\n";
        let m = parse_status(text).unwrap_or_default();
        assert_eq!(m.rss_bytes, 2000 * 1024);
        assert_eq!(m.virtual_bytes, 8000 * 1024);
        assert_eq!(m.peak_rss_bytes, 3000 * 1024);
        assert_eq!(parse_status("VmSize: 1 kB\n"), None);
    }

    #[test]
    fn config_defaults_and_env() {
        let vars = HashMap::from([
            ("ENABLE_MEMORY_PROFILING", "on"),
            ("MEMORY_SNAPSHOT_INTERVAL", "0.5"),
            ("MEMORY_SNAPSHOT_COUNT", "3"),
        ]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        let c = ProfilerConfig::from_env_source(&EnvSource::from_fn(&lookup));
        let c = c.unwrap_or_default();
        assert!(c.enabled);
        assert_eq!(c.snapshot_interval, Duration::from_millis(500));
        assert_eq!(c.snapshot_count, 3);
        assert_eq!(c.high_threshold_mb, 1024);

        let zero = |k: &str| (k == "MEMORY_SNAPSHOT_COUNT").then(|| "0".to_string());
        let err = ProfilerConfig::from_env_source(&EnvSource::from_fn(&zero));
        assert!(matches!(
            err,
            Err(Error::InvalidConfig {
                key: "MEMORY_SNAPSHOT_COUNT",
                ..
            })
        ));
    }
}
