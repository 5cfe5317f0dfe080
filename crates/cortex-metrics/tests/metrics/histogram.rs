//! Percentile accuracy against exact values, and no lost records under concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cortex_metrics::{Histogram, RELATIVE_ERROR};

/// xorshift64*: deterministic samples without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The exact nearest-rank quantile of sorted samples.
fn exact(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn check(name: &str, samples: Vec<u64>) {
    let h = Histogram::new();
    for &v in &samples {
        h.record(v);
    }
    let mut sorted = samples;
    sorted.sort_unstable();
    let s = h.snapshot();
    assert_eq!(s.count, sorted.len() as u64, "{name}: count");
    assert_eq!(s.min, sorted[0], "{name}: min is exact");
    assert_eq!(s.max, *sorted.last().unwrap(), "{name}: max is exact");
    for (q, got) in [
        (0.5, s.p50),
        (0.9, s.p90),
        (0.95, s.p95),
        (0.99, s.p99),
        (0.999, s.p999),
    ] {
        let want = exact(&sorted, q);
        let err = got.abs_diff(want) as f64;
        assert!(
            err <= want as f64 * RELATIVE_ERROR,
            "{name}: p{q} = {got}, exact {want}, error {err} over {}",
            want as f64 * RELATIVE_ERROR
        );
        assert_eq!(
            h.quantile(q),
            Some(got),
            "{name}: quantile({q}) agrees with the snapshot"
        );
    }
    let exact_sum: u128 = sorted.iter().map(|&v| u128::from(v)).sum();
    let exact_sum = exact_sum.min(u128::from(u64::MAX)); // the sum saturates
    let sum_err = (u128::from(s.sum)).abs_diff(exact_sum) as f64;
    assert!(
        sum_err <= exact_sum as f64 * RELATIVE_ERROR / 2.0 + 1.0,
        "{name}: sum {} vs {exact_sum}",
        s.sum
    );
}

#[test]
fn percentiles_match_exact_values_within_the_stated_error() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let n = 200_000;
    check(
        "uniform 0..1e6",
        (0..n).map(|_| rng.next() % 1_000_000).collect(),
    );
    check(
        "exponential, mean 2 ms in ns",
        (0..n)
            .map(|_| (-rng.unit().max(1e-12).ln() * 2e6) as u64)
            .collect(),
    );
    check(
        "log-normal-ish over 9 decades",
        (0..n)
            .map(|_| 10f64.powf(rng.unit() * 9.0) as u64)
            .collect(),
    );
    check(
        "bimodal: 99% fast, 1% 1000x slower",
        (0..n)
            .map(|i| {
                if i % 100 == 0 {
                    50_000_000 + rng.next() % 1000
                } else {
                    50_000 + rng.next() % 1000
                }
            })
            .collect(),
    );
    check(
        "small exact values",
        (0..n).map(|_| rng.next() % 2048).collect(),
    );
    check("constant", vec![123_456_789; 1000]);
    check("extremes", vec![0, 1, u64::MAX / 3, u64::MAX]);
}

#[test]
fn concurrent_records_lose_no_count() {
    let h = Arc::new(Histogram::new());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let h = h.clone();
                tokio::spawn(async move {
                    for i in 0..100_000u64 {
                        h.record(t * 1_000 + i % 5_000);
                        if i % 10_000 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let s = h.snapshot();
    assert_eq!(s.count, 800_000);
    assert_eq!(s.min, 0);
    assert_eq!(s.max, 7_000 + 4_999);
}

#[test]
fn reset_under_concurrent_recording_loses_nothing() {
    let h = Arc::new(Histogram::new());
    let stop = Arc::new(AtomicBool::new(false));
    let per_thread = 300_000u64;
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    h.record(t * 100_000 + i % 10_000);
                }
            })
        })
        .collect();
    // Reset as often as possible while both threads record; add up every window that ends.
    let resetter = {
        let h = h.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ended, mut resets) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                ended += h.reset_window().count;
                resets += 1;
            }
            (ended, resets)
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (ended, resets) = resetter.join().unwrap();
    let (window, total) = h.snapshots();
    assert!(resets > 10, "the resets ran concurrently ({resets})");
    assert_eq!(total.count, 2 * per_thread, "cumulative count lost records");
    assert_eq!(
        ended + window.count,
        total.count,
        "windows do not add up to the total"
    );
}

#[tokio::test]
async fn recording_allocates_nothing_after_warm_up() {
    let h = Histogram::new();
    let registry = cortex_metrics::Metrics::new();
    let op = registry.operation("warm");
    // Warm-up: the first value of each power of two allocates its bucket array.
    for v in 0..2_000_000u64 {
        h.record(v);
    }
    op.record(std::time::Duration::from_micros(5), true);
    op.record(std::time::Duration::from_micros(5), false);
    registry.record_endpoint(
        "GET",
        "/users/{id}",
        200,
        std::time::Duration::from_micros(5),
    );
    registry.record_endpoint(
        "GET",
        "/users/{id}",
        404,
        std::time::Duration::from_micros(5),
    );
    let ((), report) = cortex_profile::profile_allocations(async {
        for v in 0..2_000_000u64 {
            h.record(v);
            if v % 1000 == 0 {
                op.record(
                    std::time::Duration::from_nanos(4_500 + v % 900),
                    v % 2000 == 0,
                );
            }
        }
    })
    .await;
    assert!(
        cortex_profile::is_counting(),
        "the test binary installs the counting allocator"
    );
    assert_eq!(report.allocations, 0, "recording allocated: {report:?}");
}
