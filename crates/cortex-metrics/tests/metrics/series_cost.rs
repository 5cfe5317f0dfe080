//! What one series costs in heap bytes, measured with the counting allocator, and the
//! bounds the README states for them. Run with `--nocapture` to print the figures:
//!
//! ```text
//! cargo test -p cortex-metrics --test metrics series_cost -- --nocapture
//! ```

use std::sync::Arc;
use std::time::Duration;

use cortex_metrics::{Histogram, Metrics, MetricsConfig};
use cortex_profile::{is_counting, profile_allocations};

/// Shards per counter, as the crate picks them: twice the cores, a power of two, between
/// 2 and 64.
fn shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 2).next_power_of_two().clamp(2, 64)
}

/// Shards per histogram: one per recording slot (`shards()`) plus a quarter as many
/// shared ones (at least one) for the threads beyond the slots.
fn histogram_shards() -> usize {
    shards() + (shards() / 4).max(1)
}

/// One shard's fixed part (extremes and one empty slot per row).
const SHARD: i64 = 896;
/// One row of 1024 buckets: values below 1024, 1024 to 2047, then one per power of two.
const BUCKETS: i64 = 8 << 10;
/// All 55 rows in one shard: 440 KiB.
const FULL_SHARD: i64 = 55 * BUCKETS;

async fn net_bytes<T>(f: impl FnOnce() -> T) -> (T, i64) {
    let (v, report) = profile_allocations(async { f() }).await;
    (v, report.net_bytes)
}

#[tokio::test(flavor = "current_thread")]
async fn one_series_costs_what_the_readme_says() {
    assert!(is_counting());
    let s = shards() as i64;
    let hist_shards = histogram_shards() as i64;

    // A histogram at creation: its shards, no bucket array yet.
    let (h, created) = net_bytes(Histogram::new).await;
    println!("histogram, created ({hist_shards} shards): {created} B");
    assert!(
        created >= hist_shards * SHARD && created <= hist_shards * SHARD + 64,
        "{created}"
    );

    // Latencies from 1 µs to 10 s recorded on one thread (one shard): rows 0 to 24.
    let ((), latencies) = net_bytes(|| {
        let mut v = 1_000u64;
        while v <= 10_000_000_000 {
            h.record(v);
            v = v * 11 / 10;
        }
    })
    .await;
    println!("histogram, 1 µs..10 s recorded on one thread: +{latencies} B");
    assert_eq!(latencies, 25 * BUCKETS);

    // The whole u64 range on one thread: every row of one shard.
    let ((), full) = net_bytes(|| {
        for bit in 0..64 {
            h.record(1u64 << bit);
            h.record(u64::MAX >> bit);
        }
    })
    .await;
    println!(
        "histogram, all of u64 recorded on one thread: {} B per shard",
        latencies + full
    );
    assert_eq!(latencies + full, FULL_SHARD);

    // A window reset keeps a plain copy of the counts: one more shard's worth at most.
    let (_, baseline) = net_bytes(|| h.reset_window()).await;
    println!("histogram, window baseline after a reset: +{baseline} B");
    assert!(baseline <= FULL_SHARD + 4096, "{baseline}");
    let worst = created + hist_shards * FULL_SHARD + FULL_SHARD + 4096;
    println!("histogram, worst case (every shard full, one baseline): {worst} B");

    // Series of a registry, amortized over many, names and map entries included.
    const N: usize = 500;
    let config = MetricsConfig {
        max_endpoints: N + 1,
        max_operations: N + 1,
        ..MetricsConfig::default()
    };
    let metrics = Metrics::with_config(config).unwrap();
    let per = |bytes: i64| bytes / N as i64;

    let (ops, bytes) = net_bytes(|| {
        (0..N)
            .map(|i| metrics.operation_in("db", &format!("db.query.{i:04}")))
            .collect::<Vec<_>>()
    })
    .await;
    let op = per(bytes);
    println!("operation series (2 histograms), created: {op} B");
    assert!(op <= 2 * (hist_shards * SHARD + 64) + 512, "{op}");
    drop(ops);

    let ((), bytes) = net_bytes(|| {
        for i in 0..N {
            let route = format!("/api/v1/items/{i:04}");
            metrics.record_endpoint("GET", &route, 200, Duration::from_micros(200));
        }
    })
    .await;
    let endpoint = per(bytes);
    println!("endpoint series (histogram, 17 status counters), first request: {endpoint} B");
    // The histogram, one row, 17 counters of one cache line per shard.
    let endpoint_bound = hist_shards * SHARD + BUCKETS + 17 * (s * 128 + 64) + 1024;
    assert!(endpoint <= endpoint_bound, "{endpoint} > {endpoint_bound}");

    let (hs, bytes) = net_bytes(|| {
        (0..N)
            .map(|i| metrics.histogram(&format!("batch.size.{i:04}")))
            .collect::<Vec<Arc<Histogram>>>()
    })
    .await;
    let named = per(bytes);
    println!("named histogram, created: {named} B");
    // The name, its family name, the memo of both, and the seven metric names a
    // histogram family reserves (`_bucket`, `_sum`, `_count`, the window summary's).
    assert!(named <= hist_shards * SHARD + 1024, "{named}");
    drop(hs);

    let (cs, bytes) = net_bytes(|| {
        (0..N)
            .map(|i| metrics.counter(&format!("cache.hits.{i:04}")))
            .collect::<Vec<_>>()
    })
    .await;
    let counter = per(bytes);
    println!("counter, created: {counter} B");
    assert!(counter <= s * 128 + 768, "{counter}");
    drop(cs);

    // The default caps, at creation (nothing recorded) and in the worst case.
    let d = MetricsConfig::default();
    let (ops_cap, ep_cap) = (d.max_operations as i64, d.max_endpoints as i64);
    let at_creation = ops_cap * (op + named + counter) + ep_cap * endpoint;
    let histograms = 2 * ops_cap + ep_cap + ops_cap;
    let worst_total = at_creation + histograms * (hist_shards * FULL_SHARD + FULL_SHARD + 4096);
    println!(
        "default caps ({ops_cap} operations, histograms, counters; {ep_cap} endpoints), \
         {s} shards: {} MiB created, {} GiB worst case",
        at_creation >> 20,
        worst_total >> 30
    );
}
