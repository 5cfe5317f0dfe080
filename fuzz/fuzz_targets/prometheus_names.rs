//! Metric names and label values through the public registry and the text exposition
//! of cortex-metrics (the sanitizing and escaping functions are private; this is the
//! path every name and value takes to a scrape).
//!
//! Arbitrary names, label names and label values are registered as counters, gauges,
//! histograms, operations and HTTP endpoints; both formats (Prometheus 0.0.4 and
//! OpenMetrics 1.0) are rendered and every line is checked against the grammar.
//!
//! Properties, beyond "no panic":
//! - every line is `# HELP name text`, `# TYPE name type`, a sample
//!   `name{label="value",...} number`, or (OpenMetrics, last) `# EOF`;
//! - metric and label names match `[a-zA-Z_:][a-zA-Z0-9_:]*` / `[a-zA-Z_][a-zA-Z0-9_]*`;
//! - label values use only the escapes `\\`, `\"`, `\n`, and each registered label
//!   value comes back exactly when the escapes are undone (round trip);
//! - HELP text uses only the escapes `\\`, `\n` (and `\"` in OpenMetrics);
//! - each sample belongs to the family of the TYPE line before it, no family is
//!   declared twice, and no sample (name and label set) appears twice.
#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use cortex_metrics::prometheus::Format;
use cortex_metrics::{Metrics, MetricsConfig};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    counter: String,
    gauge: String,
    histogram: String,
    plain: String,
    label: String,
    values: Vec<String>,
    gauge_value: f64,
    category: String,
    operation: String,
    method: String,
    route: String,
    status: u16,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_number(s: &str) -> bool {
    matches!(s, "+Inf" | "-Inf" | "NaN") || s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Undo the HELP escapes; `None` on any other escape.
fn check_help(text: &str, om: bool) -> bool {
    let mut c = text.chars();
    while let Some(ch) = c.next() {
        if ch == '\\' {
            match c.next() {
                Some('\\' | 'n') => {}
                Some('"') if om => {}
                _ => return false,
            }
        } else if om && ch == '"' {
            return false;
        }
    }
    true
}

/// A parsed sample line: name, labels (values unescaped), value.
type Sample = (String, Vec<(String, String)>, String);

/// Parse one sample line.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            let eq = rest.find('=').ok_or("label without =")?;
            let key = &rest[..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &rest[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            } else {
                return Err("expected , or }".into());
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    if !is_number(value) {
        return Err(format!("bad value {value:?}"));
    }
    Ok((name.to_owned(), labels, value.to_owned()))
}

fn check(text: &str, om: bool, expected_values: &[&str]) {
    assert!(text.is_empty() || text.ends_with('\n'), "no final newline");
    let mut families = HashSet::new();
    let mut samples = HashSet::new();
    let mut head: Option<String> = None;
    let mut seen_values: HashSet<String> = HashSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_metric_name(name), "HELP of a bad name: {line:?}");
            assert!(check_help(help, om), "bad HELP escape: {line:?}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE has a type");
            assert!(is_metric_name(name), "TYPE of a bad name: {line:?}");
            assert!(
                matches!(
                    ty,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ),
                "bad type {line:?}"
            );
            assert!(
                families.insert(name.to_owned()),
                "family {name} declared twice\n{text}"
            );
            head = Some(name.to_owned());
        } else if *line == "# EOF" {
            assert!(om && n + 1 == lines.len(), "# EOF not last: {text}");
        } else {
            let (name, labels, _) =
                parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}\n{text}"));
            let head = head
                .as_deref()
                .unwrap_or_else(|| panic!("sample before TYPE: {line:?}"));
            let suffix = name
                .strip_prefix(head)
                .unwrap_or_else(|| panic!("sample {name} outside its family {head}\n{text}"));
            assert!(
                matches!(suffix, "" | "_total" | "_bucket" | "_sum" | "_count"),
                "sample {name} outside its family {head}"
            );
            let mut keys = HashSet::new();
            for (k, v) in &labels {
                assert!(keys.insert(k.clone()), "label {k} twice: {line:?}");
                seen_values.insert(v.clone());
            }
            let key = format!("{name}{labels:?}");
            assert!(samples.insert(key), "sample twice: {line:?}\n{text}");
        }
    }
    if om {
        assert_eq!(lines.last(), Some(&"# EOF"), "OpenMetrics without # EOF");
    }
    for v in expected_values {
        assert!(
            seen_values.contains(*v),
            "label value {v:?} lost in\n{text}"
        );
    }
}

fuzz_target!(|input: Input| {
    let metrics = Metrics::with_config(MetricsConfig {
        export_process: false,
        ..MetricsConfig::default()
    })
    .expect("the default config is valid");
    let label = if input.label.is_empty() {
        "k"
    } else {
        input.label.as_str()
    };
    let mut expected: Vec<&str> = Vec::new();
    for (i, v) in input.values.iter().take(4).enumerate() {
        let labels = [(label, v.as_str())];
        // An invalid label name is refused with an error naming it; the value is then
        // registered under a valid name, so it is still exposed.
        let labels: [(&str, &str); 1] = match metrics.counter_with(&input.counter, &labels) {
            Ok(c) => {
                c.increment();
                labels
            }
            Err(e) => {
                assert!(e.to_string().contains("label name"), "{e}");
                let fallback = [("k", v.as_str())];
                metrics
                    .counter_with(&input.counter, &fallback)
                    .expect("valid label")
                    .increment();
                fallback
            }
        };
        match i % 3 {
            0 => {
                if let Ok(g) = metrics.gauge_with(&input.gauge, &labels) {
                    g.set(input.gauge_value);
                }
            }
            1 => {
                if let Ok(h) = metrics.histogram_with(&input.histogram, &labels) {
                    h.record(i as u64);
                }
            }
            _ => {
                if let Ok(h) = metrics.histogram_seconds_with(&input.histogram, &labels) {
                    h.record_duration(Duration::from_millis(i as u64));
                }
            }
        }
        expected.push(v);
    }
    metrics.counter(&input.plain).increment();
    metrics.histogram(&input.plain).record(7);
    metrics.gauge(&input.plain).set(input.gauge_value);
    metrics
        .operation_in(&input.category, &input.operation)
        .record(Duration::from_millis(3), input.status.is_multiple_of(2));
    metrics.record_endpoint(
        &input.method,
        &input.route,
        input.status,
        Duration::from_millis(2),
    );
    expected.push(&input.operation);

    check(&metrics.exposition(Format::Prometheus), false, &expected);
    check(&metrics.exposition(Format::OpenMetrics), true, &expected);
});
