//! Property tests of the Prometheus text exposition: whatever names, label names and
//! label values a caller registers, the text parses line by line as valid exposition,
//! every label value reads back as given, and names that sanitize alike stay apart.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use cortex_metrics::{Error, Metrics};

/// Bounded CI time and no regression files written into the source tree.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, the metric name rule.
fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, the label name rule.
fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A sample value as the text format spells it.
fn is_value(s: &str) -> bool {
    matches!(s, "NaN" | "+Inf" | "-Inf") || s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Label names and values, unescaped.
type Labels = Vec<(String, String)>;

/// Registers one series with the given labels.
type Register<'a> = &'a dyn Fn(&[(&str, &str)]) -> Result<(), Error>;

/// The labels of `{...}` at the start of `s`, unescaped, and the text after `}`.
/// Only `\\`, `\"` and `\n` escapes are valid.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or("no =\" after a label name")?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of {name}")),
                Some((i, '"')) => break i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape \\{other:?} in {name}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &after[end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Check `text` line by line as Prometheus text exposition 0.0.4 and answer every label
/// value it holds, unescaped.
fn check_exposition(text: &str) -> Result<HashSet<String>, String> {
    let mut families: HashSet<String> = HashSet::new();
    let mut current: Option<(String, String)> = None;
    let mut samples: HashSet<String> = HashSet::new();
    let mut values = HashSet::new();
    let body = text.strip_suffix('\n').ok_or("no final newline")?;
    for line in body.split('\n') {
        let fail = |why: String| format!("{why} in line {line:?}");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if !is_metric_name(name) {
                return Err(fail(format!("bad HELP name {name:?}")));
            }
            let mut chars = help.chars();
            while let Some(c) = chars.next() {
                if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                    return Err(fail("bad escape in HELP".to_owned()));
                }
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').ok_or_else(|| fail("no type".into()))?;
            if !is_metric_name(name) {
                return Err(fail(format!("bad TYPE name {name:?}")));
            }
            if !matches!(
                ty,
                "counter" | "gauge" | "summary" | "histogram" | "untyped"
            ) {
                return Err(fail(format!("bad type {ty:?}")));
            }
            if !families.insert(name.to_owned()) {
                return Err(fail(format!("duplicate family {name}")));
            }
            current = Some((name.to_owned(), ty.to_owned()));
        } else if line.starts_with('#') {
            return Err(fail("unknown comment".to_owned()));
        } else {
            let name_len = line
                .find(['{', ' '])
                .ok_or_else(|| fail("no value".into()))?;
            let name = &line[..name_len];
            if !is_metric_name(name) {
                return Err(fail(format!("bad sample name {name:?}")));
            }
            let (labels, after) = if line[name_len..].starts_with('{') {
                parse_labels(&line[name_len..]).map_err(fail)?
            } else {
                (Vec::new(), &line[name_len..])
            };
            let value = after
                .strip_prefix(' ')
                .ok_or_else(|| fail("no space before the value".into()))?;
            if !is_value(value) {
                return Err(fail(format!("bad value {value:?}")));
            }
            let (family, ty) = current
                .as_ref()
                .ok_or_else(|| fail("sample before any TYPE".into()))?;
            let tail = name.strip_prefix(family.as_str());
            let belongs = match ty.as_str() {
                "summary" => matches!(tail, Some("" | "_sum" | "_count")),
                "histogram" => matches!(tail, Some("_bucket" | "_sum" | "_count")),
                _ => tail == Some(""),
            };
            if !belongs {
                return Err(fail(format!("sample outside its family {family} ({ty})")));
            }
            let mut names = HashSet::new();
            for (k, v) in &labels {
                if !names.insert(k) {
                    return Err(fail(format!("label {k} twice")));
                }
                values.insert(v.clone());
            }
            let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            if !samples.insert(series.to_owned()) {
                return Err(fail("duplicate sample".to_owned()));
            }
        }
    }
    Ok(values)
}

/// Names a caller might register: any text, and short ones that sanitize alike or look
/// like another family's samples.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-c._ -]{1,4}(_total|_sum|_count|_seconds|_bucket)?",
        "(http_requests|operation_errors|operation_duration)(_total|_seconds)?",
    ]
}

/// Label names: mostly valid, some not (those must be refused, naming the name).
fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z_][a-zA-Z0-9_]{0,6}",
        1 => any::<String>(),
        1 => Just("le".to_owned()),
    ]
}

/// One registration of any kind, with up to two labels.
#[derive(Debug, Clone)]
enum Reg {
    Counter(String, Vec<(String, String)>),
    Histogram(String, Vec<(String, String)>),
    Seconds(String, Vec<(String, String)>),
    Gauge(String, Vec<(String, String)>),
    Operation(Option<String>, String),
    Endpoint(String, String, u16),
}

fn labels() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((label_name(), any::<String>()), 0..3)
}

fn reg() -> impl Strategy<Value = Reg> {
    prop_oneof![
        (name(), labels()).prop_map(|(n, l)| Reg::Counter(n, l)),
        (name(), labels()).prop_map(|(n, l)| Reg::Histogram(n, l)),
        (name(), labels()).prop_map(|(n, l)| Reg::Seconds(n, l)),
        (name(), labels()).prop_map(|(n, l)| Reg::Gauge(n, l)),
        (proptest::option::of(any::<String>()), any::<String>())
            .prop_map(|(c, n)| Reg::Operation(c, n)),
        (any::<String>(), any::<String>(), 100..600u16)
            .prop_map(|(m, r, s)| Reg::Endpoint(m, r, s)),
    ]
}

/// Register `regs` into `metrics`; answer the label values that must be exposed.
fn register(metrics: &Metrics, regs: &[Reg]) -> Result<Vec<String>, TestCaseError> {
    let mut exposed = Vec::new();
    let mut ops = HashSet::new();
    fn labeled(
        exposed: &mut Vec<String>,
        labels: &[(String, String)],
        f: Register<'_>,
    ) -> Result<(), TestCaseError> {
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut seen = HashSet::new();
        let valid = labels.iter().all(|(k, _)| {
            is_label_name(k)
                && !k.starts_with("__")
                && k != "le"
                && k != "quantile"
                && seen.insert(k)
        });
        match f(&l) {
            Ok(()) => {
                prop_assert!(valid, "accepted {labels:?}");
                exposed.extend(labels.iter().map(|(_, v)| v.clone()));
            }
            Err(e) => {
                prop_assert!(!valid, "refused {labels:?}: {e}");
                let text = e.to_string();
                prop_assert!(
                    labels.iter().any(|(k, _)| text.contains(&format!("{k:?}"))),
                    "{text} names none of {labels:?}"
                );
            }
        }
        Ok(())
    }
    for r in regs {
        match r {
            Reg::Counter(n, l) => labeled(&mut exposed, l, &|l| {
                metrics.counter_with(n, l).map(|c| c.add(3))
            })?,
            Reg::Histogram(n, l) => labeled(&mut exposed, l, &|l| {
                metrics.histogram_with(n, l).map(|h| h.record(7))
            })?,
            Reg::Seconds(n, l) => labeled(&mut exposed, l, &|l| {
                metrics
                    .histogram_seconds_with(n, l)
                    .map(|h| h.record_duration(Duration::from_millis(5)))
            })?,
            Reg::Gauge(n, l) => labeled(&mut exposed, l, &|l| {
                metrics.gauge_with(n, l).map(|g| g.set(-2.5))
            })?,
            Reg::Operation(c, n) => {
                let op = match c {
                    Some(c) => metrics.operation_in(c, n),
                    None => metrics.operation(n),
                };
                op.record(Duration::from_millis(3), false);
                exposed.push(n.clone());
                // The category is fixed when the operation is first registered.
                if ops.insert(n.clone()) {
                    exposed.extend(c.clone());
                }
            }
            Reg::Endpoint(m, route, s) => {
                metrics.record_endpoint(m, route, *s, Duration::from_millis(2));
                exposed.push(route.clone());
            }
        }
    }
    Ok(exposed)
}

fn regs() -> impl Strategy<Value = Vec<Reg>> {
    proptest::collection::vec(reg(), 1..8)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_names_and_labels_render_valid_exposition(regs in regs()) {
        let metrics = Metrics::new();
        let exposed = register(&metrics, &regs)?;
        let text = metrics.prometheus();
        let values = check_exposition(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        for v in exposed {
            prop_assert!(values.contains(&v), "label value {v:?} not read back from\n{text}");
        }
    }

    #[test]
    fn names_that_sanitize_alike_get_families_of_their_own(
        base in "[a-c]{1,3}",
        seps in proptest::collection::vec("[._ :/-]", 2..6),
    ) {
        let metrics = Metrics::new();
        let names: HashSet<String> = seps.iter().map(|s| format!("{base}{s}x")).collect();
        for n in &names {
            metrics.counter(n).add(1);
            metrics.histogram(n).record(1);
        }
        let text = metrics.prometheus();
        check_exposition(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        // Each registered name has its own counter family, found by its HELP text.
        let mut by_help = HashMap::new();
        for line in text.lines().filter_map(|l| l.strip_prefix("# HELP ")) {
            let (family, help) = line.split_once(' ').unwrap_or((line, ""));
            prop_assert!(by_help.insert(help.to_owned(), family.to_owned()).is_none(), "{line}");
        }
        for n in &names {
            let help = format!("Count of {} since start.", n.replace('\\', "\\\\"));
            prop_assert!(by_help.contains_key(&help), "no family for {n:?} in\n{text}");
        }
    }
}

/// One large exposition from [`regs`], the same every run (a fixed seed), for
/// `promtool check metrics` in the families test: 256 cases' worth of registrations in
/// one registry.
pub(crate) fn generated_exposition() -> String {
    let mut runner = TestRunner::deterministic();
    let metrics = Metrics::new();
    for _ in 0..256 {
        let regs = regs().new_tree(&mut runner).unwrap().current();
        register(&metrics, &regs).unwrap();
    }
    let text = metrics.prometheus();
    check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    text
}
