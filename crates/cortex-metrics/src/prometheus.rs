//! Prometheus text exposition (format 0.0.4, the default) and OpenMetrics 1.0 text of a
//! [`Metrics`](crate::Metrics) registry or of a [`MetricsSnapshot`].
//!
//! Families of a registry, with `<ns>` the [`MetricsConfig::namespace`](crate::MetricsConfig::namespace):
//! - `<ns>_operation_duration_seconds` (histogram; labels `operation`, `category`);
//! - `<ns>_operation_errors_total` (counter);
//! - `<ns>_http_request_duration_seconds` (histogram; labels `method`, `route`);
//! - `<ns>_http_requests_total` (counter; labels `method`, `route`, `status`);
//! - `<ns>_<name>` (histogram, in the recorded unit) for a
//!   [`Metrics::histogram`](crate::Metrics::histogram), `<ns>_<name>_seconds`
//!   (histogram, seconds) for a [`Metrics::histogram_seconds`](crate::Metrics::histogram_seconds),
//!   `<ns>_<name>_total` (counter) for a [`Metrics::counter`](crate::Metrics::counter) and
//!   `<ns>_<name>` (gauge) for a [`Metrics::gauge`](crate::Metrics::gauge) or
//!   [`gauge_fn`](crate::Metrics::gauge_fn), with any character outside `[a-zA-Z0-9_]`
//!   turned into `_`. The HELP line gives the name as registered. Series registered
//!   under one name with labels (`counter_with`, ...) are series of the same family,
//!   one per label set;
//! - `process_resident_memory_bytes` and `process_virtual_memory_bytes` (gauges, Linux,
//!   unless [`MetricsConfig::export_process`](crate::MetricsConfig::export_process) is off).
//!
//! # Histograms
//! Every histogram family is a classic Prometheus histogram: `_bucket{le="..."}`
//! samples (cumulative: each counts the values `<=` its bound, the last is `le="+Inf"`),
//! `_sum` and `_count`, all since the registry was created, so they can be summed over
//! replicas and fed to `histogram_quantile`. Bounds are
//! [`MetricsConfig::histogram_buckets`](crate::MetricsConfig::histogram_buckets) (seconds)
//! for durations and [`value_buckets`](crate::MetricsConfig::value_buckets) for values.
//! The counts are derived, when scraped, from the HDR buckets the values were recorded
//! into (recording does no extra work): a value below 2048 (ns, or units) is placed
//! exactly; any other value is placed on the wrong side of a bound only when it lies
//! within [`RELATIVE_ERROR`](crate::RELATIVE_ERROR) (0.1%) of the bound. `_sum` is derived
//! from bucket midpoints, within the same 0.1%.
//!
//! With [`MetricsConfig::export_summaries`](crate::MetricsConfig::export_summaries), each
//! histogram family `F` also gets a summary family of the current window (quantiles
//! 0.5, 0.9, 0.95, 0.99, 0.999 since the last [`Metrics::reset`](crate::Metrics::reset);
//! `_sum`, `_count` since start): `F_window`, or for `..._seconds` families
//! `..._window_seconds`. [`render`] of a bare snapshot (which carries no buckets) exports
//! summaries in place of histograms.
//!
//! Label values are escaped (`\\`, `\"`, `\n`), so any operation name or label value is safe.
//!
//! # OpenMetrics
//! [`Format::from_accept`] picks OpenMetrics when the scraper's `Accept` header asks for
//! `application/openmetrics-text`; the output then names counter families without
//! `_total` in `HELP`/`TYPE` lines (samples keep it), escapes `"` in HELP text too, and
//! ends with `# EOF`.
//!
//! # Names that sanitize alike
//! `a.b`, `a-b` and `a_b` all sanitize to `a_b`, and a histogram `x_total` would land
//! on the family of a counter `x`, a histogram `s_sum` on the `_sum` sample of a
//! histogram `s`, a histogram `operation_duration_seconds` on a family of the registry.
//! Two families of one name make Prometheus reject the whole scrape, so names are kept
//! apart, deterministically:
//! - a [`Metrics`](crate::Metrics) registry assigns the exposed name when a series is
//!   **registered** (first use of its kind and name; labeled series of one name share
//!   it). The first name to claim a family keeps the plain name; a later one whose
//!   family, or any sample name of it (`_bucket`, `_sum`, `_count`, the window summary's,
//!   a counter's name without `_total`), is already taken gets the plain name suffixed
//!   with `_` and 8 hex digits of a stable hash of its own registered name (FNV-1a),
//!   e.g. `cortex_a_b_e2300e48` for `a_b` registered after `a.b`; counters keep
//!   `_total` last and `_seconds` histograms `_seconds`. The registry's own families
//!   are claimed first, so a user name never displaces them. The name, once assigned,
//!   never changes for the life of the registry; the same names registered in the same
//!   order get the same exposed names in every run. A warning naming both the
//!   registered and the exposed name is logged when a suffix is given.
//! - [`render`] of a snapshot on its own (no registry) applies the same rule in
//!   snapshot order (histograms, then counters, then labeled series, each sorted).

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use crate::snapshot::{LatencySummary, MetricsSnapshot, SeriesKind};

/// The content type of the Prometheus text format (the default).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A text exposition format.
///
/// ```
/// use cortex_metrics::prometheus::Format;
///
/// let om = Format::from_accept("application/openmetrics-text;version=1.0.0,text/plain;q=0.5");
/// assert_eq!(om, Format::OpenMetrics);
/// assert_eq!(Format::from_accept("text/plain"), Format::Prometheus);
/// assert_eq!(Format::from_accept("application/openmetrics-text;q=0"), Format::Prometheus);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Prometheus text format 0.0.4.
    #[default]
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format to answer a scrape whose `Accept` header is `accept` with:
    /// OpenMetrics when a media range `application/openmetrics-text` is accepted (its
    /// `q` is not 0), else Prometheus text.
    pub fn from_accept(accept: &str) -> Self {
        let wants_openmetrics = accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Render `snap` with metric names prefixed by `namespace`, in Prometheus text. Names
/// that sanitize alike are told apart as the [module docs](self) say. A snapshot
/// carries no bucket counts, so its histograms are exported as summaries (window
/// quantiles, `_sum` and `_count` since start); a registry's
/// [`prometheus`](crate::Metrics::prometheus) exports histograms.
pub fn render(snap: &MetricsSnapshot, namespace: &str) -> String {
    render_as(snap, namespace, Format::Prometheus)
}

/// [`render`] in `format`.
pub fn render_as(snap: &MetricsSnapshot, namespace: &str, format: Format) -> String {
    let ns = sanitize(namespace);
    let mut claims = Claims::new(&ns);
    let mut x = Exposition::default();

    let name = format!("{ns}_operation_duration_seconds");
    for op in &snap.operations {
        let labels = op_labels(&op.name, op.category.as_deref());
        let f = x.family(&name, Type::Summary, OPERATION_WINDOW_HELP);
        f.push(
            labels,
            latency_summary(&op.window.latency, op.total.total_ms, op.total.count),
        );
    }
    operation_errors(&mut x, &ns, snap);
    let name = format!("{ns}_http_request_duration_seconds");
    for e in &snap.endpoints {
        let labels = endpoint_labels(&e.method, &e.route);
        let f = x.family(&name, Type::Summary, HTTP_WINDOW_HELP);
        f.push(
            labels,
            latency_summary(&e.window.latency, e.total.total_ms, e.total.count),
        );
    }
    http_requests(&mut x, &ns, snap);
    for h in &snap.histograms {
        let name = claims.claim(Kind::Summary, &h.name);
        let quantiles = h.window.quantiles().map(|(q, v)| (q, v as f64)).to_vec();
        x.family(&name, Type::Summary, &window_help(&h.name)).push(
            Vec::new(),
            Value::Summary {
                quantiles,
                sum: h.total.sum as f64,
                count: h.total.count,
            },
        );
    }
    for c in &snap.counters {
        let name = claims.claim(Kind::Counter, &c.name);
        x.family(&name, Type::Counter, &counter_help(&c.name))
            .push(Vec::new(), Value::Number(c.total as f64));
    }
    for s in &snap.series {
        let (kind, ty, scale) = match s.kind {
            SeriesKind::Counter => (Kind::Counter, Type::Counter, 1.0),
            SeriesKind::Gauge => (Kind::Gauge, Type::Gauge, 1.0),
            SeriesKind::Histogram => (Kind::Summary, Type::Summary, 1.0),
            SeriesKind::HistogramSeconds => (Kind::SecondsSummary, Type::Summary, 1e9),
        };
        let name = claims.claim(kind, &s.name);
        let labels = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let value = match &s.histogram {
            Some(h) => Value::Summary {
                quantiles: h
                    .window
                    .quantiles()
                    .map(|(q, v)| (q, v as f64 / scale))
                    .to_vec(),
                sum: h.total.sum as f64 / scale,
                count: h.total.count,
            },
            None => Value::Number(s.value),
        };
        x.family(&name, ty, &series_help(s.kind, &s.name))
            .push(labels, value);
    }
    x.write(format)
}

pub(crate) const OPERATION_HELP: &str =
    "Latency of operations since start (successes and failures).";
pub(crate) const OPERATION_WINDOW_HELP: &str =
    "Latency of operations: quantiles over the current window, sum and count since start.";
pub(crate) const HTTP_HELP: &str = "Latency of HTTP requests per route template since start.";
pub(crate) const HTTP_WINDOW_HELP: &str = "Latency of HTTP requests per route template: quantiles over the current window, sum and count since start.";

pub(crate) fn window_help(name: &str) -> String {
    format!("Values of {name}: quantiles over the current window, sum and count since start.")
}

pub(crate) fn counter_help(name: &str) -> String {
    format!("Count of {name} since start.")
}

pub(crate) fn series_help(kind: SeriesKind, name: &str) -> String {
    match kind {
        SeriesKind::Counter => counter_help(name),
        SeriesKind::Gauge => format!("Current value of {name}."),
        SeriesKind::Histogram => format!("Values of {name} since start."),
        SeriesKind::HistogramSeconds => format!("Durations of {name} since start."),
    }
}

pub(crate) fn op_labels(name: &str, category: Option<&str>) -> Labels {
    // Every series of a family carries the same label names: an operation without
    // a category has an empty `category`.
    vec![
        ("operation".to_owned(), name.to_owned()),
        ("category".to_owned(), category.unwrap_or("").to_owned()),
    ]
}

pub(crate) fn endpoint_labels(method: &str, route: &str) -> Labels {
    vec![
        ("method".to_owned(), method.to_owned()),
        ("route".to_owned(), route.to_owned()),
    ]
}

/// `<ns>_operation_errors_total` from the snapshot's operations.
pub(crate) fn operation_errors(x: &mut Exposition, ns: &str, snap: &MetricsSnapshot) {
    let name = format!("{ns}_operation_errors_total");
    for op in &snap.operations {
        x.family(&name, Type::Counter, "Failed operation calls since start.")
            .push(
                vec![("operation".to_owned(), op.name.clone())],
                Value::Number(op.total.errors as f64),
            );
    }
}

/// `<ns>_http_requests_total` from the snapshot's endpoints.
pub(crate) fn http_requests(x: &mut Exposition, ns: &str, snap: &MetricsSnapshot) {
    let name = format!("{ns}_http_requests_total");
    for e in &snap.endpoints {
        for (status, n) in &e.total.statuses {
            let mut labels = endpoint_labels(&e.method, &e.route);
            labels.push(("status".to_owned(), status.to_string()));
            x.family(
                &name,
                Type::Counter,
                "HTTP requests per route template and status since start.",
            )
            .push(labels, Value::Number(*n as f64));
        }
    }
}

/// A duration summary in seconds: window quantiles, `_sum` and `_count` since start.
pub(crate) fn latency_summary(window: &LatencySummary, total_ms: f64, count: u64) -> Value {
    let w = window;
    Value::Summary {
        quantiles: vec![
            (0.5, secs(w.p50_ms)),
            (0.9, secs(w.p90_ms)),
            (0.95, secs(w.p95_ms)),
            (0.99, secs(w.p99_ms)),
            (0.999, secs(w.p999_ms)),
        ],
        sum: secs(total_ms),
        count,
    }
}

/// Milliseconds (derived from whole nanoseconds) to seconds with a single rounding, so
/// 0.131 µs prints as `0.000000131`, not `0.00000013100000000000002`.
pub(crate) fn secs(ms: f64) -> f64 {
    (ms * 1e6).round() / 1e9
}

/// Whole nanoseconds to seconds with a single rounding.
pub(crate) fn ns_to_secs(ns: f64) -> f64 {
    ns.round() / 1e9
}

/// Label pairs of one series, in output order.
pub(crate) type Labels = Vec<(String, String)>;

/// The type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Type {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

/// The value of one series.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    /// A counter or gauge.
    Number(f64),
    /// Cumulative counts per bound (`le`, count), then the sum and count of all.
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    },
    /// Quantiles (`quantile`, value), then the sum and count.
    Summary {
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: u64,
    },
}

/// One family to write.
#[derive(Debug)]
pub(crate) struct FamilyOut {
    name: String,
    ty: Type,
    help: String,
    series: Vec<(Labels, Value)>,
}

impl FamilyOut {
    pub(crate) fn push(&mut self, labels: Labels, value: Value) {
        self.series.push((labels, value));
    }
}

/// Families in output order; series of one family name gather under one header.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    families: Vec<FamilyOut>,
    index: HashMap<String, usize>,
}

impl Exposition {
    /// The family `name`, created (with `ty` and `help`) on first use.
    pub(crate) fn family(&mut self, name: &str, ty: Type, help: &str) -> &mut FamilyOut {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.families.push(FamilyOut {
                    name: name.to_owned(),
                    ty,
                    help: help.to_owned(),
                    series: Vec::new(),
                });
                self.index.insert(name.to_owned(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// The text in `format`.
    pub(crate) fn write(&self, format: Format) -> String {
        let om = format == Format::OpenMetrics;
        let mut out = String::with_capacity(4096);
        for f in self.families.iter().filter(|f| !f.series.is_empty()) {
            let (ty, head) = match f.ty {
                Type::Counter => (
                    "counter",
                    // OpenMetrics names the counter family without `_total`.
                    if om {
                        f.name.strip_suffix("_total").unwrap_or(&f.name)
                    } else {
                        &f.name
                    },
                ),
                Type::Gauge => ("gauge", f.name.as_str()),
                Type::Histogram => ("histogram", f.name.as_str()),
                Type::Summary => ("summary", f.name.as_str()),
            };
            // HELP escapes backslash and newline; OpenMetrics escapes quotes too.
            let mut help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
            if om {
                help = help.replace('"', "\\\"");
            }
            let _ = writeln!(out, "# HELP {head} {help}\n# TYPE {head} {ty}");
            for (labels, value) in &f.series {
                write_series(&mut out, &f.name, labels, value);
            }
        }
        if om {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn write_series(out: &mut String, name: &str, labels: &Labels, value: &Value) {
    match value {
        Value::Number(v) => sample(out, name, labels, None, *v),
        Value::Histogram {
            buckets,
            sum,
            count,
        } => {
            let bucket = format!("{name}_bucket");
            for (le, n) in buckets {
                sample(out, &bucket, labels, Some(("le", &number(*le))), *n as f64);
            }
            sample(out, &bucket, labels, Some(("le", "+Inf")), *count as f64);
            sample(out, &format!("{name}_sum"), labels, None, *sum);
            sample(out, &format!("{name}_count"), labels, None, *count as f64);
        }
        Value::Summary {
            quantiles,
            sum,
            count,
        } => {
            for (q, v) in quantiles {
                sample(out, name, labels, Some(("quantile", &number(*q))), *v);
            }
            sample(out, &format!("{name}_sum"), labels, None, *sum);
            sample(out, &format!("{name}_count"), labels, None, *count as f64);
        }
    }
}

/// A number as both formats spell it: `+Inf`, `-Inf`, `NaN`, else plain decimal.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

fn sample(out: &mut String, name: &str, labels: &Labels, extra: Option<(&str, &str)>, value: f64) {
    out.push_str(name);
    let extra = extra.into_iter();
    let all = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra);
    let mut first = true;
    for (k, v) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label(out, v);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&number(value));
    out.push('\n');
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

/// What a named series is exposed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A summary family `F`: samples `F`, `F_sum`, `F_count`.
    Summary,
    /// A summary of durations in seconds, `F_seconds` (a bare snapshot's rendering).
    SecondsSummary,
    /// A counter family `F_total`: one sample of that name; OpenMetrics calls the
    /// family `F`.
    Counter,
    /// A gauge family `F`.
    Gauge,
    /// A histogram `F` in the recorded unit: `F_bucket`, `F_sum`, `F_count`, and the
    /// window summary `F_window`.
    Histogram,
    /// A histogram `F_seconds`, with the window summary `F_window_seconds`.
    SecondsHistogram,
}

/// The window summary of the histogram family `family`.
pub(crate) fn window_family(family: &str) -> String {
    match family.strip_suffix("_seconds") {
        Some(stem) => format!("{stem}_window_seconds"),
        None => format!("{family}_window"),
    }
}

impl Kind {
    /// Every metric name a family of this kind uses.
    fn names(self, family: &str) -> Vec<String> {
        let summary = |f: &str| vec![f.to_owned(), format!("{f}_sum"), format!("{f}_count")];
        match self {
            Kind::Summary | Kind::SecondsSummary => summary(family),
            Kind::Counter => {
                let mut names = vec![family.to_owned()];
                names.extend(family.strip_suffix("_total").map(str::to_owned));
                names
            }
            Kind::Gauge => vec![family.to_owned()],
            Kind::Histogram | Kind::SecondsHistogram => {
                let mut names = summary(family);
                names.push(format!("{family}_bucket"));
                names.extend(summary(&window_family(family)));
                names
            }
        }
    }

    /// The family name for the sanitized `base`.
    fn family(self, ns: &str, base: &str) -> String {
        match self {
            Kind::Summary | Kind::Gauge | Kind::Histogram => format!("{ns}_{base}"),
            Kind::Counter => format!("{ns}_{base}_total"),
            Kind::SecondsSummary | Kind::SecondsHistogram => {
                let stem = base.strip_suffix("_seconds").unwrap_or(base);
                format!("{ns}_{stem}_seconds")
            }
        }
    }
}

/// The process gauges, outside the namespace as client libraries name them.
pub(crate) const PROCESS_RESIDENT: &str = "process_resident_memory_bytes";
/// See [`PROCESS_RESIDENT`].
pub(crate) const PROCESS_VIRTUAL: &str = "process_virtual_memory_bytes";

/// The metric names taken so far in one exposition: the registry's own families, then
/// every named series as it claims its family. A kind and name claimed once keep their
/// family, so labeled series of one name share it.
#[derive(Debug)]
pub(crate) struct Claims {
    ns: String,
    taken: HashSet<String>,
    assigned: HashMap<(Kind, String), String>,
}

impl Claims {
    /// The registry's own families under namespace `ns` (already sanitized), taken.
    pub(crate) fn new(ns: &str) -> Self {
        let mut claims = Self {
            ns: ns.to_owned(),
            taken: HashSet::new(),
            assigned: HashMap::new(),
        };
        for (kind, family) in [
            (Kind::Histogram, format!("{ns}_operation_duration_seconds")),
            (Kind::Counter, format!("{ns}_operation_errors_total")),
            (
                Kind::Histogram,
                format!("{ns}_http_request_duration_seconds"),
            ),
            (Kind::Counter, format!("{ns}_http_requests_total")),
            (Kind::Gauge, PROCESS_RESIDENT.to_owned()),
            (Kind::Gauge, PROCESS_VIRTUAL.to_owned()),
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

    /// The family for the series `name` of `kind`: the one it was given before, else
    /// the plain sanitized name when free, else that name suffixed with a stable hash
    /// of `name` (see the module docs).
    pub(crate) fn claim(&mut self, kind: Kind, name: &str) -> String {
        if let Some(f) = self.assigned.get(&(kind, name.to_owned())) {
            return f.clone();
        }
        let family = self.claim_new(kind, name);
        self.assigned
            .insert((kind, name.to_owned()), family.clone());
        family
    }

    fn claim_new(&mut self, kind: Kind, name: &str) -> String {
        let base = sanitize(name);
        let plain = kind.family(&self.ns, &base);
        if self.try_take(kind, &plain) {
            return plain;
        }
        let base = match kind {
            Kind::SecondsHistogram | Kind::SecondsSummary => {
                base.strip_suffix("_seconds").unwrap_or(&base).to_owned()
            }
            _ => base,
        };
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
        let labels = vec![("op".to_owned(), "a\"b\\c\nd".to_owned())];
        sample(&mut out, "m", &labels, None, 1.0);
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
