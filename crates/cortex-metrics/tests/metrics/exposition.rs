//! Prometheus family names: distinct registered names that sanitize to one metric name
//! must not produce duplicate families (Prometheus rejects the whole scrape for one).

use std::collections::HashMap;
use std::time::Duration;

use openmetrics_parser::{PrometheusType, PrometheusValue};

use cortex_metrics::Metrics;

/// Parse `text` and check that no family and no sample line (name plus labels) appears
/// twice; answer the families by HELP text.
fn parse_unique(text: &str) -> HashMap<String, (String, PrometheusType, Vec<PrometheusValue>)> {
    let exposition = openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|e| panic!("exposition does not parse: {e:?}\n{text}"));
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            *types.entry(name.to_owned()).or_insert(0) += 1;
        } else if !line.starts_with('#') {
            let series = line.rsplit_once(' ').unwrap().0;
            *samples.entry(series.to_owned()).or_insert(0) += 1;
        }
    }
    let dup: Vec<_> = types.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicate families {dup:?} in\n{text}");
    let dup: Vec<_> = samples.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicate samples {dup:?} in\n{text}");
    exposition
        .families
        .into_iter()
        .map(|(name, f)| {
            let values = f.iter_samples().map(|s| s.value.clone()).collect();
            (f.help.clone(), (name, f.family_type.clone(), values))
        })
        .collect()
}

fn summary_count(values: &[PrometheusValue]) -> Option<u64> {
    match values {
        [PrometheusValue::Summary(s)] => s.count,
        [PrometheusValue::Histogram(h)] => h.count,
        _ => None,
    }
}

/// The HELP text of a registry's value histogram `name`.
fn values_help(name: &str) -> String {
    format!("Values of {name} since start.")
}

fn counter_value(values: &[PrometheusValue]) -> Option<f64> {
    match values {
        [PrometheusValue::Counter(c)] => Some(c.value.as_f64()),
        _ => None,
    }
}

#[test]
fn names_that_sanitize_alike_stay_apart() {
    let metrics = Metrics::new();
    metrics.histogram("a.b").record(1);
    metrics.histogram("a_b").record(2);
    metrics.histogram("a_b").record(3);
    metrics.histogram("a-b").record(4);
    metrics.counter("c.d").add(1);
    metrics.counter("c_d").add(2);

    let text = metrics.prometheus();
    let families = parse_unique(&text);
    let help = |kind: &str, name: &str| {
        let help = match kind {
            "summary" => values_help(name),
            _ => format!("Count of {name} since start."),
        };
        families
            .get(&help)
            .unwrap_or_else(|| panic!("no family for {kind} {name} in\n{text}"))
            .clone()
    };
    // Both series present, each with its own records.
    assert_eq!(summary_count(&help("summary", "a.b").2), Some(1));
    assert_eq!(summary_count(&help("summary", "a_b").2), Some(2));
    assert_eq!(summary_count(&help("summary", "a-b").2), Some(1));
    assert_eq!(counter_value(&help("counter", "c.d").2), Some(1.0));
    assert_eq!(counter_value(&help("counter", "c_d").2), Some(2.0));
    // The first registered keeps the plain name; the others are told apart by a short
    // stable hash of their own name.
    assert_eq!(help("summary", "a.b").0, "cortex_a_b");
    let second = help("summary", "a_b").0;
    assert!(second.starts_with("cortex_a_b_") && second.len() == "cortex_a_b_".len() + 8);
    assert_eq!(help("counter", "c.d").0, "cortex_c_d_total");

    // The same registration order gives the same names, run after run.
    let again = Metrics::new();
    for name in ["a.b", "a_b", "a-b"] {
        again.histogram(name).record(1);
    }
    let again_families = parse_unique(&again.prometheus());
    let name_of = |fams: &HashMap<String, (String, PrometheusType, Vec<PrometheusValue>)>,
                   n: &str| {
        fams.iter()
            .find(|(help, _)| **help == values_help(n))
            .map(|(_, f)| f.0.clone())
            .unwrap()
    };
    for n in ["a.b", "a_b", "a-b"] {
        assert_eq!(name_of(&families, n), name_of(&again_families, n), "{n}");
    }
}

#[test]
fn names_that_meet_other_families_or_their_samples_stay_apart() {
    let metrics = Metrics::new();
    metrics
        .operation("op")
        .record(Duration::from_millis(1), false);
    metrics.record_endpoint("GET", "/x", 200, Duration::from_millis(1));
    // A counter `x` is the family `cortex_x_total`; a histogram `x_total` would be too.
    metrics.counter("x").add(1);
    metrics.histogram("x_total").record(1);
    // A summary `s` has samples `cortex_s_sum` and `cortex_s_count`.
    metrics.histogram("s").record(1);
    metrics.histogram("s_sum").record(1);
    metrics.histogram("s.count").record(1);
    // The registry's own families.
    metrics.histogram("operation_duration_seconds").record(1);
    metrics
        .histogram("http_request_duration_seconds_count")
        .record(1);
    metrics.counter("operation_errors").add(1);
    metrics.counter("http.requests").add(1);

    let text = metrics.prometheus();
    let families = parse_unique(&text);
    for name in [
        "x_total",
        "s",
        "s_sum",
        "s.count",
        "operation_duration_seconds",
        "http_request_duration_seconds_count",
    ] {
        let help = values_help(name);
        let f = families
            .get(&help)
            .unwrap_or_else(|| panic!("no family for {name} in\n{text}"));
        assert_eq!(summary_count(&f.2), Some(1), "{name}");
    }
    for name in ["x", "operation_errors", "http.requests"] {
        let f = families
            .get(&format!("Count of {name} since start."))
            .unwrap_or_else(|| panic!("no family for {name} in\n{text}"));
        assert_eq!(counter_value(&f.2), Some(1.0), "{name}");
    }
    // The registry's own families keep their names and their series.
    let ops = families
        .values()
        .find(|f| f.0 == "cortex_operation_errors_total")
        .unwrap();
    assert_eq!(counter_value(&ops.2), Some(1.0));
}

#[test]
fn a_snapshot_rendered_on_its_own_has_no_duplicate_families() {
    // `prometheus::render` of a snapshot from elsewhere (deserialized, merged) has no
    // registration order to go by: it disambiguates in snapshot order.
    let metrics = Metrics::new();
    metrics.histogram("a.b").record(1);
    metrics.histogram("a_b").record(1);
    metrics.counter("a.b").add(1);
    metrics.counter("a_b").add(1);
    let text = cortex_metrics::prometheus::render(&metrics.snapshot(), "svc");
    let families = parse_unique(&text);
    assert_eq!(families.len(), 4, "{text}");
}
