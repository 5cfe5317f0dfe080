//! Print the text exposition of a small registry: Prometheus text, or OpenMetrics with
//! the argument `openmetrics`.
use std::time::Duration;

use cortex_metrics::prometheus::Format;

fn main() -> Result<(), cortex_metrics::Error> {
    let metrics = cortex_metrics::Metrics::new();
    metrics
        .operation_in("db", "users.by_id")
        .record(Duration::from_millis(3), true);
    metrics.record_endpoint("GET", "/users/{id}", 200, Duration::from_millis(12));
    metrics.histogram("batch.size").record(17);
    metrics.counter("cache.hits").add(5);
    metrics
        .counter_with("cache.misses", &[("cache", "users")])?
        .add(2);
    metrics.gauge_with("pool.idle", &[("pool", "db")])?.set(4.0);
    metrics
        .histogram_seconds("pool.acquire_wait")
        .record_duration(Duration::from_micros(700));
    let format = match std::env::args().nth(1).as_deref() {
        Some("openmetrics") => Format::OpenMetrics,
        _ => Format::Prometheus,
    };
    print!("{}", metrics.exposition(format));
    Ok(())
}
