//! Prometheus text exposition (format 0.0.4) of a [`MetricsSnapshot`].
//!
//! Families, with `<ns>` the [`MetricsConfig::namespace`](crate::MetricsConfig::namespace):
//! - `<ns>_operation_duration_seconds` (summary; labels `operation`, `category`):
//!   quantiles over the current window, `_sum` and `_count` since start;
//! - `<ns>_operation_errors_total` (counter);
//! - `<ns>_http_request_duration_seconds` (summary; labels `method`, `route`);
//! - `<ns>_http_requests_total` (counter; labels `method`, `route`, `status`);
//! - `<ns>_<histogram name>` (summary, in the recorded unit) and
//!   `<ns>_<counter name>_total` (counter) for named histograms and counters, with any
//!   character outside `[a-zA-Z0-9_]` turned into `_`.
//!
//! Label values are escaped (`\\`, `\"`, `\n`), so any operation name is safe.

use std::fmt::Write;

use crate::HistogramSnapshot;
use crate::snapshot::{LatencySummary, MetricsSnapshot};

/// The content type to answer a scrape with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Render `snap` with metric names prefixed by `namespace`.
pub fn render(snap: &MetricsSnapshot, namespace: &str) -> String {
    let mut out = String::with_capacity(4096);
    let ns = sanitize(namespace);

    let name = format!("{ns}_operation_duration_seconds");
    family(
        &mut out,
        &name,
        "summary",
        "Latency of operations: quantiles over the current window, sum and count since start.",
        !snap.operations.is_empty(),
    );
    for op in &snap.operations {
        // Every series of a family carries the same label names: an operation without
        // a category has an empty `category`.
        let labels = [
            ("operation", op.name.as_str()),
            ("category", op.category.as_deref().unwrap_or("")),
        ];
        latency_summary(
            &mut out,
            &name,
            &labels,
            &op.window.latency,
            op.total.total_ms,
            op.total.count,
        );
    }

    let name = format!("{ns}_operation_errors_total");
    family(
        &mut out,
        &name,
        "counter",
        "Failed operation calls since start.",
        !snap.operations.is_empty(),
    );
    for op in &snap.operations {
        sample(
            &mut out,
            &name,
            &[("operation", op.name.as_str())],
            op.total.errors as f64,
        );
    }

    let name = format!("{ns}_http_request_duration_seconds");
    family(
        &mut out,
        &name,
        "summary",
        "Latency of HTTP requests per route template: quantiles over the current window, sum and count since start.",
        !snap.endpoints.is_empty(),
    );
    for e in &snap.endpoints {
        let labels = [("method", e.method.as_str()), ("route", e.route.as_str())];
        latency_summary(
            &mut out,
            &name,
            &labels,
            &e.window.latency,
            e.total.total_ms,
            e.total.count,
        );
    }

    let name = format!("{ns}_http_requests_total");
    family(
        &mut out,
        &name,
        "counter",
        "HTTP requests per route template and status since start.",
        !snap.endpoints.is_empty(),
    );
    for e in &snap.endpoints {
        for (status, n) in &e.total.statuses {
            let status = status.to_string();
            let labels = [
                ("method", e.method.as_str()),
                ("route", e.route.as_str()),
                ("status", status.as_str()),
            ];
            sample(&mut out, &name, &labels, *n as f64);
        }
    }

    for h in &snap.histograms {
        let name = format!("{ns}_{}", sanitize(&h.name));
        family(
            &mut out,
            &name,
            "summary",
            &format!(
                "Values of {}: quantiles over the current window, sum and count since start.",
                h.name
            ),
            true,
        );
        summary_values(&mut out, &name, &h.window, &h.total);
    }
    for c in &snap.counters {
        let name = format!("{ns}_{}_total", sanitize(&c.name));
        family(
            &mut out,
            &name,
            "counter",
            &format!("Count of {} since start.", c.name),
            true,
        );
        sample(&mut out, &name, &[], c.total as f64);
    }
    out
}

/// A duration summary in seconds: window quantiles, `_sum` and `_count` since start.
fn latency_summary(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    window: &LatencySummary,
    total_ms: f64,
    count: u64,
) {
    let w = window;
    for (q, ms) in [
        (0.5, w.p50_ms),
        (0.9, w.p90_ms),
        (0.95, w.p95_ms),
        (0.99, w.p99_ms),
        (0.999, w.p999_ms),
    ] {
        sample_q(out, name, labels, q, secs(ms));
    }
    sample(out, &format!("{name}_sum"), labels, secs(total_ms));
    sample(out, &format!("{name}_count"), labels, count as f64);
}

fn summary_values(
    out: &mut String,
    name: &str,
    window: &HistogramSnapshot,
    total: &HistogramSnapshot,
) {
    for (q, v) in window.quantiles() {
        sample_q(out, name, &[], q, v as f64);
    }
    sample(out, &format!("{name}_sum"), &[], total.sum as f64);
    sample(out, &format!("{name}_count"), &[], total.count as f64);
}

/// Milliseconds (derived from whole nanoseconds) to seconds with a single rounding, so
/// 0.131 µs prints as `0.000000131`, not `0.00000013100000000000002`.
fn secs(ms: f64) -> f64 {
    (ms * 1e6).round() / 1e9
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, any: bool) {
    if any {
        // HELP text escapes only backslash and newline.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
}

fn sample_q(out: &mut String, name: &str, labels: &[(&str, &str)], q: f64, value: f64) {
    let q = q.to_string();
    let mut all: Vec<(&str, &str)> = labels.to_vec();
    all.push(("quantile", q.as_str()));
    sample(out, name, &all, value);
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A valid metric name part: `[a-zA-Z0-9_]`, not starting with a digit.
fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_names_sanitized() {
        let mut out = String::new();
        sample(&mut out, "m", &[("op", "a\"b\\c\nd")], 1.0);
        assert_eq!(out, "m{op=\"a\\\"b\\\\c\\nd\"} 1\n");
        assert_eq!(sanitize("cache.hits-x"), "cache_hits_x");
        assert_eq!(sanitize("9lives"), "_9lives");
    }
}
