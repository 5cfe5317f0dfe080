//! Print the Prometheus exposition of a small registry.
use std::time::Duration;

fn main() {
    let metrics = cortex_metrics::Metrics::new();
    metrics
        .operation_in("db", "users.by_id")
        .record(Duration::from_millis(3), true);
    metrics.record_endpoint("GET", "/users/{id}", 200, Duration::from_millis(12));
    metrics.histogram("batch.size").record(17);
    metrics.counter("cache.hits").add(5);
    print!("{}", metrics.prometheus());
}
