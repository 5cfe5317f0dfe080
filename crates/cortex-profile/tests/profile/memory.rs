//! Memory profiling: the counting allocator, scopes and the profiler.
//!
//! These tests assume the test binary's `main.rs` installs
//! `#[global_allocator] static GLOBAL: CountingAllocator = CountingAllocator::system();`
//! (it cannot be done per test); `counting_allocator_is_installed` fails loudly if not.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use cortex_profile::{
    Error, MemoryProfiler, ProfilerConfig, allocation_stats, diff_scopes, is_counting,
    process_memory, profile_allocations, profile_scope, profile_scope_sync, scope_stats,
    top_scopes,
};
use cortex_support::{EnvSource, FromEnv};

const MIB: usize = 1 << 20;

/// Process-wide numbers move when concurrent tests allocate or free, so a check on them
/// passes if any of a few attempts does.
fn retry(mut attempt: impl FnMut() -> Result<(), String>) {
    let mut errors = Vec::new();
    for _ in 0..5 {
        match attempt() {
            Ok(()) => return,
            Err(e) => errors.push(e),
        }
    }
    panic!("every attempt failed: {errors:#?}");
}

fn check(ok: bool, what: impl Into<String>) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.into()) }
}

/// Tests that read process-wide numbers (live bytes, RSS) or move them by megabytes run
/// one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[test]
fn counting_allocator_is_installed() {
    black_box(vec![1u8; 16]);
    assert!(
        is_counting(),
        "the test binary must install CountingAllocator"
    );
    assert!(allocation_stats().allocations > 0);
}

#[tokio::test]
async fn profile_allocations_counts_one_future_and_its_output() {
    // Not for its own numbers (per future): its MiB-sized frees would skew others.
    let _serial = SERIAL.lock().await;
    let (kept, report) = profile_allocations(async {
        let scratch = black_box(vec![0u8; MIB]);
        tokio::task::yield_now().await;
        drop(scratch);
        let kept = black_box(vec![1u8; MIB]);
        tokio::task::yield_now().await;
        kept
    })
    .await;
    assert_eq!(kept.len(), MIB);
    assert!(report.allocations >= 2, "{report:?}");
    assert!(report.bytes_allocated >= 2 * MIB as u64, "{report:?}");
    assert!(report.bytes_freed >= MIB as u64, "{report:?}");
    // The kept Vec is still allocated; the dropped one is not.
    assert!(report.net_bytes >= MIB as i64, "{report:?}");
    assert!(report.net_bytes < 2 * MIB as i64, "{report:?}");
    assert!(report.peak_net_bytes >= MIB as i64, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_allocations_follows_polls_across_threads_and_nests() {
    // Not for its own numbers (per future): its MiB-sized frees would skew others.
    let _serial = SERIAL.lock().await;
    let task = tokio::spawn(profile_allocations(async {
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(black_box(vec![0u8; 64 * 1024]));
            tokio::task::yield_now().await;
        }
        let (inner_vec, inner) = profile_allocations(async { black_box(vec![0u8; MIB]) }).await;
        held.push(inner_vec);
        (held, inner)
    }));
    let ((held, inner), outer) = task.await.unwrap();
    assert_eq!(held.len(), 9);
    assert!(inner.bytes_allocated >= MIB as u64, "{inner:?}");
    assert!(inner.bytes_allocated < MIB as u64 + 64 * 1024, "{inner:?}");
    // Reports nest inclusively: the outer one saw the inner allocation too.
    assert!(
        outer.bytes_allocated >= inner.bytes_allocated + 8 * 64 * 1024,
        "{outer:?}"
    );
    assert!(outer.net_bytes >= (MIB + 8 * 64 * 1024) as i64, "{outer:?}");
}

#[tokio::test]
async fn profile_scope_attributes_to_its_name_and_diff_shows_it() {
    // Not for its own numbers (per future): its MiB-sized frees would skew others.
    let _serial = SERIAL.lock().await;
    let before = scope_stats();
    let out = profile_scope("it.scope.two_mib", async {
        let v = black_box(vec![7u8; 2 * MIB]);
        tokio::task::yield_now().await;
        v.len()
    })
    .await;
    assert_eq!(out, 2 * MIB);
    let kept = profile_scope_sync("it.scope.sync_kept", || black_box(vec![0u64; 1024]));
    let after = scope_stats();

    let scope = after.iter().find(|s| s.name == "it.scope.two_mib").unwrap();
    assert!(scope.bytes_allocated >= 2 * MIB as u64, "{scope:?}");
    assert!(scope.bytes_freed >= 2 * MIB as u64, "{scope:?}");

    let diff = diff_scopes(&before, &after);
    let d = diff.iter().find(|d| d.name == "it.scope.two_mib").unwrap();
    assert!(d.bytes_allocated_delta >= 2 * MIB as i64, "{d:?}");
    assert!(d.allocations_delta >= 1, "{d:?}");
    let s = diff
        .iter()
        .find(|d| d.name == "it.scope.sync_kept")
        .unwrap();
    assert!(s.live_bytes_delta >= 8 * 1024, "{s:?}");
    assert_eq!(kept.len(), 1024);
    // Sorted by absolute byte delta.
    let keys: Vec<u64> = diff
        .iter()
        .map(|d| d.bytes_allocated_delta.unsigned_abs())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] >= w[1]), "{keys:?}");

    let top = top_scopes(1);
    assert_eq!(top.len(), 1);
    assert!(top[0].bytes_allocated >= 2 * MIB as u64);
}

#[tokio::test]
async fn live_bytes_rise_while_a_box_is_held() {
    let _serial = SERIAL.lock().await;
    retry(|| {
        let before = allocation_stats();
        let held = black_box(vec![1u8; MIB].into_boxed_slice());
        let during = allocation_stats();
        drop(held);
        let after = allocation_stats();
        let rise = during.live_bytes as i64 - before.live_bytes as i64;
        check(
            rise.abs_diff(MIB as i64) <= 64 * 1024,
            format!("rise {rise}"),
        )?;
        check(
            during.peak_live_bytes >= during.live_bytes,
            "peak below live",
        )?;
        check(
            after.bytes_freed - during.bytes_freed >= MIB as u64,
            "drop not counted",
        )
    });
}

#[cfg(target_os = "linux")]
#[test]
fn process_memory_is_plausible() {
    let m = process_memory().unwrap();
    assert!(m.rss_bytes > MIB as u64, "{m:?}");
    assert!(m.virtual_bytes >= m.rss_bytes, "{m:?}");
    assert!(m.peak_rss_bytes >= m.rss_bytes, "{m:?}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn profiler_keeps_snapshot_count_and_compares_the_last_two() {
    let _serial = SERIAL.lock().await;
    let config = ProfilerConfig {
        snapshot_count: 3,
        ..ProfilerConfig::default()
    };
    let profiler = MemoryProfiler::new(config).unwrap();
    assert!(profiler.compare().is_none());
    profiler.take_snapshot().unwrap();
    assert!(
        profiler.compare().is_none(),
        "one snapshot cannot be compared"
    );

    let mut second = None;
    retry(|| {
        profiler.take_snapshot().map_err(|e| e.to_string())?;
        // Touch every page of 16 MiB so it is resident, not just reserved.
        let mut buf = vec![0u8; 16 * MIB];
        for page in buf.chunks_mut(4096) {
            page[0] = 1;
        }
        let buf = black_box(buf);
        let snapshot = profiler.take_snapshot().map_err(|e| e.to_string())?;
        drop(buf);
        let cmp = profiler.compare().ok_or("no comparison")?;
        check(cmp.rss_delta_bytes >= 8 * MIB as i64, format!("{cmp:?}"))?;
        let live = cmp.live_bytes_delta.ok_or("no live bytes")?;
        check(live >= 15 * MIB as i64, format!("{cmp:?}"))?;
        second = Some(snapshot);
        Ok(())
    });
    let second = second.unwrap();
    assert!(second.alloc.is_some());

    for _ in 0..3 {
        profiler.take_snapshot().unwrap();
    }
    let kept = profiler.snapshots();
    assert_eq!(kept.len(), 3);
    assert!(
        kept.windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
    );
    assert!(!kept.contains(&second), "the oldest snapshots are dropped");

    let growth = profiler.growth();
    assert_eq!(growth.points.len(), 3);
    assert!(growth.points.iter().all(|p| p.rss_mb > 1.0));
    let report = profiler.report();
    assert!(!report.enabled);
    assert!(report.current.is_some() && report.comparison.is_some());
    assert!(
        serde_json::to_string(&report)
            .unwrap()
            .contains("rss_bytes")
    );
}

#[cfg(target_os = "linux")]
#[test]
fn zero_threshold_flags_high_memory() {
    let config = ProfilerConfig {
        high_threshold_mb: 0,
        ..ProfilerConfig::default()
    };
    let profiler = MemoryProfiler::new(config).unwrap();
    let _ = profile_scope_sync("it.high.scope", || black_box(vec![0u8; 4096]));
    let snapshot = profiler.take_snapshot().unwrap();
    assert!(snapshot.high_memory);
    assert!(!snapshot.top_scopes.is_empty() && snapshot.top_scopes.len() <= 10);
    let stats = profiler.stats();
    assert_eq!(
        (
            stats.snapshots_taken,
            stats.high_memory_snapshots,
            stats.snapshots_kept,
            stats.snapshot_failures
        ),
        (1, 1, 1, 0),
        "{stats:?}"
    );
    let normal = MemoryProfiler::new(ProfilerConfig::default()).unwrap();
    assert!(!normal.take_snapshot().unwrap().high_memory);
    assert_eq!(normal.stats().high_memory_snapshots, 0);
}

#[cfg(target_os = "linux")]
#[test]
fn stats_count_taken_and_kept_snapshots() {
    let config = ProfilerConfig {
        snapshot_count: 2,
        ..ProfilerConfig::default()
    };
    let profiler = MemoryProfiler::new(config).unwrap();
    let clone = profiler.clone();
    for _ in 0..3 {
        clone.take_snapshot().unwrap();
    }
    let stats = profiler.stats();
    assert_eq!(stats.snapshots_taken, 3, "{stats:?}");
    assert_eq!(stats.snapshots_kept, 2, "the oldest is dropped: {stats:?}");
    assert_eq!(stats.snapshot_failures, 0);
    let json = serde_json::to_value(stats).unwrap();
    assert_eq!(json["snapshots_taken"], 3);
}

#[test]
fn from_env_source_rejects_bad_values_naming_the_variable() {
    let vars = HashMap::from([("MEMORY_SNAPSHOT_COUNT", "abc")]);
    let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
    let err = ProfilerConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { key: "MEMORY_SNAPSHOT_COUNT", value, .. } if value == "abc"),
        "{err:?}"
    );
    assert!(err.to_string().contains("MEMORY_SNAPSHOT_COUNT"));

    let zero = |k: &str| (k == "MEMORY_SNAPSHOT_COUNT").then(|| "0".to_string());
    assert!(ProfilerConfig::from_env_source(&EnvSource::from_fn(&zero)).is_err());
    let none = |_: &str| None;
    assert_eq!(
        ProfilerConfig::from_env_source(&EnvSource::from_fn(&none)).unwrap(),
        ProfilerConfig::default()
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn spawn_snapshots_every_interval_until_stopped() {
    let disabled = MemoryProfiler::new(ProfilerConfig::default()).unwrap();
    assert!(disabled.spawn().is_none());

    let config = ProfilerConfig {
        enabled: true,
        snapshot_interval: Duration::from_millis(50),
        snapshot_count: 10,
        ..ProfilerConfig::default()
    };
    let profiler = MemoryProfiler::new(config).unwrap();
    let handle = profiler.spawn().unwrap();
    assert_eq!(
        profiler.snapshots().len(),
        1,
        "a start snapshot is taken at spawn"
    );
    // Real time (paused time needs tokio's test-util): wait for two ticks, bounded,
    // rather than assume how many fit in a sleep on a busy machine.
    tokio::time::timeout(Duration::from_secs(10), async {
        while profiler.snapshots().len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the loop takes a snapshot every interval");
    profiler.stop();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    let stopped = profiler.snapshots().len();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(profiler.snapshots().len(), stopped);

    // Dropping the last clone also ends the loop.
    let handle = profiler.spawn().unwrap();
    drop(profiler);
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
}
