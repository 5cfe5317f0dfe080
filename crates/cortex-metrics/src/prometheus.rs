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
//!   character outside `[a-zA-Z0-9_]` turned into `_`. The HELP line gives the name as registered.
//!
//! Label values are escaped (`\\`, `\"`, `\n`), so any operation name is safe.
//!
//! # Names that sanitize alike
//! `a.b`, `a-b` and `a_b` all sanitize to `a_b`, and a histogram `x_total` would land
//! on the family of a counter `x`, a histogram `s_sum` on the `_sum` sample of a
//! histogram `s`, a histogram `operation_duration_seconds` on a family of the registry.
//! Two families of one name make Prometheus reject the whole scrape, so names are kept
//! apart, deterministically:
//! - a [`Metrics`](crate::Metrics) registry assigns the exposed name when a histogram
//!   or counter is **registered** (first use of its name). The first name to claim a
//!   family keeps the plain name; a later one whose family, or any sample name of it
//!   (`_sum`, `_count`), is already taken gets the plain name suffixed with `_` and 8
//!   hex digits of a stable hash of its own registered name (FNV-1a), e.g.
//!   `cortex_a_b_e2300e48` for `a_b` registered after `a.b`; counters keep `_total`
//!   last. The registry's own families are claimed first, so a user name never
//!   displaces them. The name, once assigned, never changes for the life of the
//!   registry; the same names registered in the same order get the same exposed names
//!   in every run. A warning naming both the registered and the exposed name is logged
//!   when a suffix is given.
//! - [`render`] of a snapshot on its own (no registry) applies the same rule in
//!   snapshot order (histograms, then counters, each sorted by name).

use std::collections::HashSet;
use std::fmt::Write;

use crate::HistogramSnapshot;
use crate::snapshot::{LatencySummary, MetricsSnapshot};

/// The content type to answer a scrape with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Render `snap` with metric names prefixed by `namespace`. Histograms and counters
/// whose names sanitize alike are told apart as the [module docs](self) say.
pub fn render(snap: &MetricsSnapshot, namespace: &str) -> String {
    render_with(snap, namespace, |_| None, |_| None)
}

/// Render with the family names a registry assigned (`histogram(name)`,
/// `counter(name)`: the full family name, namespace included). A name without an
/// assignment, or whose assignment is taken in this rendering, gets one here.
pub(crate) fn render_with(
    snap: &MetricsSnapshot,
    namespace: &str,
    histogram: impl Fn(&str) -> Option<String>,
    counter: impl Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(4096);
    let ns = sanitize(namespace);
    let (histogram_families, counter_families) = family_names(snap, &ns, histogram, counter);

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

    for (h, name) in snap.histograms.iter().zip(&histogram_families) {
        family(
            &mut out,
            name,
            "summary",
            &format!(
                "Values of {}: quantiles over the current window, sum and count since start.",
                h.name
            ),
            true,
        );
        summary_values(&mut out, name, &h.window, &h.total);
    }
    for (c, name) in snap.counters.iter().zip(&counter_families) {
        family(
            &mut out,
            name,
            "counter",
            &format!("Count of {} since start.", c.name),
            true,
        );
        sample(&mut out, name, &[], c.total as f64);
    }
    out
}

/// The family name of every histogram and counter of `snap`, in snapshot order:
/// assigned names first (when still free), then the others claimed in snapshot order.
fn family_names(
    snap: &MetricsSnapshot,
    ns: &str,
    histogram: impl Fn(&str) -> Option<String>,
    counter: impl Fn(&str) -> Option<String>,
) -> (Vec<String>, Vec<String>) {
    let mut claims = Claims::new(ns);
    let mut hist: Vec<Option<String>> = snap
        .histograms
        .iter()
        .map(|h| histogram(&h.name).filter(|f| claims.try_take(Kind::Summary, f)))
        .collect();
    let mut count: Vec<Option<String>> = snap
        .counters
        .iter()
        .map(|c| counter(&c.name).filter(|f| claims.try_take(Kind::Counter, f)))
        .collect();
    for (h, slot) in snap.histograms.iter().zip(&mut hist) {
        if slot.is_none() {
            *slot = Some(claims.claim(Kind::Summary, &h.name));
        }
    }
    for (c, slot) in snap.counters.iter().zip(&mut count) {
        if slot.is_none() {
            *slot = Some(claims.claim(Kind::Counter, &c.name));
        }
    }
    (
        hist.into_iter().map(Option::unwrap_or_default).collect(),
        count.into_iter().map(Option::unwrap_or_default).collect(),
    )
}

/// What a named series is exposed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A summary family `F`: samples `F`, `F_sum`, `F_count`.
    Summary,
    /// A counter family `F_total`: one sample of that name.
    Counter,
}

impl Kind {
    /// Every metric name a family of this kind uses.
    fn names(self, family: &str) -> Vec<String> {
        match self {
            Kind::Summary => vec![
                family.to_owned(),
                format!("{family}_sum"),
                format!("{family}_count"),
            ],
            Kind::Counter => vec![family.to_owned()],
        }
    }

    /// The family name for the sanitized `base`.
    fn family(self, ns: &str, base: &str) -> String {
        match self {
            Kind::Summary => format!("{ns}_{base}"),
            Kind::Counter => format!("{ns}_{base}_total"),
        }
    }
}

/// The metric names taken so far in one exposition: the registry's own families, then
/// every named histogram and counter as it claims its family.
#[derive(Debug)]
pub(crate) struct Claims {
    ns: String,
    taken: HashSet<String>,
}

impl Claims {
    /// The registry's own families under namespace `ns` (already sanitized), taken.
    pub(crate) fn new(ns: &str) -> Self {
        let mut claims = Self {
            ns: ns.to_owned(),
            taken: HashSet::new(),
        };
        for (kind, family) in [
            (Kind::Summary, format!("{ns}_operation_duration_seconds")),
            (Kind::Counter, format!("{ns}_operation_errors_total")),
            (Kind::Summary, format!("{ns}_http_request_duration_seconds")),
            (Kind::Counter, format!("{ns}_http_requests_total")),
        ] {
            claims.taken.extend(kind.names(&family));
        }
        claims
    }

    /// Take `family` if none of its names is taken.
    fn try_take(&mut self, kind: Kind, family: &str) -> bool {
        let names = kind.names(family);
        if names.iter().any(|n| self.taken.contains(n)) {
            return false;
        }
        self.taken.extend(names);
        true
    }

    /// The family `name` of `kind` has when nothing else claims it.
    pub(crate) fn plain(&self, kind: Kind, name: &str) -> String {
        kind.family(&self.ns, &sanitize(name))
    }

    /// The family for the series `name` of `kind`: the plain sanitized name when free,
    /// else that name suffixed with a stable hash of `name` (see the module docs).
    pub(crate) fn claim(&mut self, kind: Kind, name: &str) -> String {
        let base = sanitize(name);
        let plain = kind.family(&self.ns, &base);
        if self.try_take(kind, &plain) {
            return plain;
        }
        // A second hash (seeded) only if the first suffixed name is taken too, which
        // takes a 32-bit collision or a name chosen to look like a suffixed one.
        for seed in 0u64.. {
            let family = kind.family(&self.ns, &format!("{base}_{:08x}", short_hash(name, seed)));
            if self.try_take(kind, &family) {
                return family;
            }
        }
        unreachable!("the seeds run out after every family name was taken")
    }
}

/// 32 bits of FNV-1a over `seed` then `name`: stable across runs, platforms and Rust
/// versions (unlike `DefaultHasher`).
fn short_hash(name: &str, seed: u64) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed
        .to_le_bytes()
        .into_iter()
        .filter(|_| seed > 0)
        .chain(name.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
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
pub(crate) fn sanitize(name: &str) -> String {
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

    #[test]
    fn claims_keep_families_and_their_samples_apart() {
        let mut c = Claims::new("ns");
        assert_eq!(c.claim(Kind::Summary, "a.b"), "ns_a_b");
        let second = c.claim(Kind::Summary, "a_b");
        assert_eq!(second, format!("ns_a_b_{:08x}", short_hash("a_b", 0)));
        // The suffix depends on the name only: stable from run to run.
        assert_eq!(short_hash("a_b", 0), 0xe2300e48);
        // A summary's `_sum` sample, a counter's family, the registry's own families.
        assert_eq!(c.claim(Kind::Summary, "s"), "ns_s");
        assert_ne!(c.claim(Kind::Summary, "s_sum"), "ns_s_sum");
        assert_eq!(c.claim(Kind::Counter, "x"), "ns_x_total");
        assert_ne!(c.claim(Kind::Summary, "x_total"), "ns_x_total");
        assert_ne!(
            c.claim(Kind::Counter, "http_requests"),
            "ns_http_requests_total"
        );
        // A name made to look like the suffixed one still gets a family of its own.
        let lookalike = second.trim_start_matches("ns_").to_owned();
        let third = c.claim(Kind::Summary, &lookalike);
        assert!(third != second && third.starts_with(&second), "{third}");
    }
}
