//! Cortex in one minute, with no setup: time some async work with cortex-metrics and
//! print what it measured, as a table and as Prometheus text.
//!
//! Run: `cargo run -p cortex-metrics --example quickstart`. It builds cortex-metrics,
//! its leaf and the crate's few dev-dependencies (75 crates), no driver or facade.

use std::time::Duration;

use cortex_metrics::{Metrics, TrackedExt};

/// Stand-in for real work: a lookup that fails for every tenth id.
async fn lookup(id: u64) -> Result<u64, String> {
    tokio::time::sleep(Duration::from_micros(200 + (id % 7) * 150)).await;
    if id.is_multiple_of(10) {
        Err(format!("user {id} not found"))
    } else {
        Ok(id * 2)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let metrics = Metrics::new();

    // 200 lookups, 20 at a time, each recorded with its outcome.
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..200u64 {
        let m = metrics.clone();
        tasks.spawn(async move { lookup(id).tracked_with(&m, "users.lookup").await });
        if tasks.len() >= 20 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}

    // A second operation in a category, recorded through a handle (no name lookup).
    let sort = metrics.operation_in("cpu", "sort.1k");
    for round in 0..500u64 {
        let mut v: Vec<u64> = (0..1000).map(|i| (i * 7919 + round) % 1009).collect();
        let start = std::time::Instant::now();
        v.sort_unstable();
        sort.record(start.elapsed(), v.windows(2).all(|w| w[0] <= w[1]));
    }

    let snap = metrics.snapshot();
    println!(
        "{:<14} {:>6} {:>6} {:>9} {:>9} {:>9}",
        "operation", "calls", "errors", "p50 ms", "p99 ms", "max ms"
    );
    for op in &snap.operations {
        let w = &op.window;
        println!(
            "{:<14} {:>6} {:>6} {:>9.3} {:>9.3} {:>9.3}",
            op.name, w.count, w.errors, w.latency.p50_ms, w.latency.p99_ms, w.latency.max_ms
        );
    }

    println!("Prometheus exposition:\n{}", metrics.prometheus());
    Ok(())
}
