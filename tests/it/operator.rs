//! What an operator installs next to the service: the Grafana dashboard
//! (`docs/grafana/cortex.json`) and the Prometheus alert rules
//! (`docs/prometheus/alerts.yml`, unit-tested by `alerts.test.yml`).
//!
//! promtool checks and unit-tests the rules (a missing promtool fails, never skips), and
//! every series the dashboard and the rules query is checked against the `/metrics` of a
//! running example service on PostgreSQL and Redis, with an MCP service configured,
//! after traffic that touches every component it wires: a renamed or unexported family
//! fails here instead of leaving an empty panel or an alert that can never fire.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::prometheus::tool;
use crate::service::{Service, seed};
use crate::service_pg::Stack;

const DASHBOARD: &str = "docs/grafana/cortex.json";
const RULES: &str = "docs/prometheus/alerts.yml";
const RULE_TESTS: &str = "docs/prometheus/alerts.test.yml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let full = root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Runs promtool with `args` in the workspace root; its stdout, or a panic with all it said.
async fn promtool(args: &[&str]) -> String {
    let bin: PathBuf = tool("promtool", "PROMTOOL");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(&bin)
            .args(args)
            .current_dir(root())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("promtool {args:?} did not finish within 60 s"))
    .unwrap_or_else(|e| panic!("could not run {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The alert names of the rules file, in order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// The `expr` of every rule: inline (`expr: up == 0`) or a block scalar (`expr: |`
/// followed by the lines indented deeper than the key).
fn rule_exprs(rules: &str) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = rules.lines().collect();
    let mut exprs = vec![];
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !(rest.starts_with('|') || rest.starts_with('>')) {
            exprs.push(rest.to_owned());
            continue;
        }
        let mut block = String::new();
        while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line)) {
            block.push_str(lines[i].trim());
            block.push('\n');
            i += 1;
        }
        exprs.push(block);
    }
    exprs
}

/// The queries of a dashboard: every `expr` (panel targets), and the `query` and
/// `definition` strings of its template variables, each with where it is (panel title
/// or variable name).
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, place: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                let here = map
                    .get("title")
                    .or_else(|| map.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or(place);
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "query" | "definition", Value::String(s)) => {
                            out.push((here.to_owned(), s.clone()));
                        }
                        _ => walk(value, here, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, place, out)),
            _ => {}
        }
    }
    let mut out = vec![];
    walk(dashboard, "dashboard", &mut out);
    out
}

/// Every metric name in a PromQL text: the words `cortex_...` and `process_...`
/// (`\b(cortex|process)_[a-z0-9_]+`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || !word(bytes[i - 1]);
        let prefix = ["cortex_", "process_"]
            .into_iter()
            .find(|p| bytes[i..].starts_with(p.as_bytes()));
        match prefix {
            Some(p) if at_boundary => {
                let start = i;
                let mut end = i + p.len();
                while end < bytes.len()
                    && (bytes[end].is_ascii_lowercase()
                        || bytes[end].is_ascii_digit()
                        || bytes[end] == b'_')
                {
                    end += 1;
                }
                if end > start + p.len() {
                    names.insert(expr[start..end].to_owned());
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    names
}

/// The family a sample name belongs to: a histogram's `_bucket`, `_sum` and `_count`
/// samples map to the histogram.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .into_iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Which metric families each query uses: family -> the places (panels, rules) using it.
fn families_used<'a>(
    queries: impl IntoIterator<Item = (String, &'a str)>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (place, expr) in queries {
        for name in metric_names(expr) {
            used.entry(family(&name).to_owned())
                .or_default()
                .insert(place.clone());
        }
    }
    used
}

/// The families of a Prometheus text exposition: the `# TYPE` names and, for any
/// family declared without one, the names of its samples.
fn exposed_families(exposition: &str) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                families.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line
                .split(|c: char| c == '{' || c.is_whitespace())
                .next()
                .unwrap_or("");
            families.insert(name.to_owned());
        }
    }
    families
}

/// The families `used` needs that `exposition` lacks, each with the places using it.
fn missing(
    used: &BTreeMap<String, BTreeSet<String>>,
    exposition: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let exposed = exposed_families(exposition);
    used.iter()
        .filter(|(family, _)| !exposed.contains(*family))
        .map(|(f, places)| (f.clone(), places.clone()))
        .collect()
}

/// Every query of the dashboard and the rules, with where it is (`panel "..."`,
/// `variable "..."`, `alert ...`).
fn queries_of_dashboard_and_rules() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let rules = read(RULES);
    let names = alert_names(&rules);
    let exprs = rule_exprs(&rules);
    assert_eq!(
        names.len(),
        exprs.len(),
        "one expr per alert: {names:?}\n{exprs:#?}"
    );
    let panel_queries = dashboard_exprs(&dashboard)
        .into_iter()
        .map(|(panel, expr)| (format!("panel {panel:?}"), expr));
    let rule_queries = names
        .iter()
        .zip(exprs)
        .map(|(name, expr)| (format!("alert {name}"), expr));
    panel_queries.chain(rule_queries).collect()
}

/// Every family the dashboard and the rules query, with the panels and alerts using it.
fn families_of_dashboard_and_rules() -> BTreeMap<String, BTreeSet<String>> {
    let queries = queries_of_dashboard_and_rules();
    families_used(queries.iter().map(|(p, e)| (p.clone(), e.as_str())))
}

/// The label names of each family of an exposition (a histogram's under its family
/// name too).
fn exposed_labels(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        let keys = if line[name_end..].starts_with('{') {
            matcher_keys(&line[name_end..]).0
        } else {
            BTreeSet::new()
        };
        for n in [name, family(name)] {
            labels.entry(n.to_owned()).or_default().extend(keys.clone());
        }
    }
    labels
}

/// The keys of a `{k="v", k2=~"v2"}` label set or selector at the start of `text`, and
/// the bytes it takes. Values are skipped with their escapes, so a quoted `}` or `,`
/// does not end it.
fn matcher_keys(text: &str) -> (BTreeSet<String>, usize) {
    let b = text.as_bytes();
    let mut keys = BTreeSet::new();
    let mut i = 1; // past '{'
    let skip_spaces = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_spaces(&mut i);
        if i >= b.len() || b[i] == b'}' {
            return (keys, i + 1);
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        keys.insert(text[start..i].to_owned());
        while i < b.len() && b[i] != b'"' {
            i += 1;
        }
        i += 1; // past the opening quote
        while i < b.len() && b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        i += 1; // past the closing quote
        skip_spaces(&mut i);
        if i < b.len() && b[i] == b',' {
            i += 1;
        }
    }
}

/// The label names a PromQL text refers to: in `by (...)` and `on (...)` lists and in
/// selector matchers, outside quoted strings.
fn labels_referenced(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut labels = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' => {
                let (keys, len) = matcher_keys(&expr[i..]);
                labels.extend(keys);
                i += len;
            }
            _ if (i == 0 || !word(b[i - 1]))
                && (expr[i..].starts_with("by") || expr[i..].starts_with("on"))
                && expr[i + 2..].trim_start().starts_with('(') =>
            {
                let open = i + 2 + expr[i + 2..].find('(').unwrap();
                let close = open + expr[open..].find(')').unwrap();
                labels.extend(
                    expr[open + 1..close]
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
                i = close + 1;
            }
            _ => i += 1,
        }
    }
    labels
}

/// Labels a query groups, joins or filters on that none of its families carry (the
/// labels Prometheus adds, `job` and `instance`, and the bucket bound `le` aside): such
/// a panel shows one unnamed series, such a rule never matches.
fn unknown_labels(queries: &[(String, String)], exposition: &str) -> Vec<String> {
    let exposed = exposed_labels(exposition);
    let mut problems = vec![];
    for (place, expr) in queries {
        let carried: BTreeSet<&String> = metric_names(expr)
            .iter()
            .filter_map(|n| exposed.get(n.as_str()).or_else(|| exposed.get(family(n))))
            .flatten()
            .collect();
        for label in labels_referenced(expr) {
            if !["job", "instance", "le"].contains(&label.as_str()) && !carried.contains(&label) {
                problems.push(format!("{place}: label {label:?} in {expr}"));
            }
        }
    }
    problems
}

#[tokio::test]
async fn promtool_accepts_the_alert_rules() {
    let rules = read(RULES);
    let count = alert_names(&rules).len();
    assert!(count >= 8, "{count} alerts in {RULES}");
    let said = promtool(&["check", "rules", RULES]).await;
    assert!(
        said.contains(&format!("SUCCESS: {count} rules found")),
        "promtool did not check all {count} rules:\n{said}"
    );
}

#[tokio::test]
async fn the_alert_rules_pass_their_unit_tests_and_each_has_a_firing_and_a_quiet_case() {
    let said = promtool(&["test", "rules", RULE_TESTS]).await;
    assert!(said.contains("SUCCESS"), "{said}");
    // Each alert is tested both ways: some evaluation expects it, another expects
    // nothing (before its `for:` has passed, or for the healthy series).
    let tests = read(RULE_TESTS);
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("alertname:") {
            let next = lines[i + 1..].iter().find(|l| !l.is_empty()).unwrap();
            if *next == "exp_alerts: []" {
                quiet.insert(name.trim().to_owned());
            } else {
                firing.insert(name.trim().to_owned());
            }
        }
    }
    for name in alert_names(&read(RULES)) {
        assert!(firing.contains(&name), "no test where {name} fires");
        assert!(quiet.contains(&name), "no test where {name} must not fire");
    }
}

#[tokio::test]
async fn promtool_parses_every_query_of_the_dashboard() {
    // Each panel query as a recording rule, its variables given values, so promtool's
    // PromQL parser reads every one of them.
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut count = 0;
    for (panel, expr) in dashboard_exprs(&dashboard) {
        if expr.starts_with("label_values(") || expr == "prometheus" {
            continue; // template variable queries: Grafana's, not PromQL
        }
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        count += 1;
        let _ = write!(
            rules,
            "      - record: dashboard:query_{count}\n        # {panel}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        );
    }
    assert!(count >= 40, "{count} panel queries");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, &rules).unwrap();
    let said = promtool(&["check", "rules", file.to_str().unwrap()]).await;
    assert!(
        said.contains(&format!("SUCCESS: {count} rules found")),
        "{said}\n{rules}"
    );
}

#[test]
fn the_dashboard_is_an_importable_grafana_dashboard() {
    let text = read(DASHBOARD);
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    assert_eq!(
        var("DS_PROMETHEUS").map(|v| (&v["type"], &v["query"])),
        Some((&json!("datasource"), &json!("prometheus")))
    );
    assert!(
        var("job").is_some() && var("instance").is_some(),
        "{vars:?}"
    );

    let panels = dashboard["panels"].as_array().unwrap();
    let mut titles = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{title} is wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        assert!(titles.insert(title), "two panels named {title}");
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries nothing");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(!metric_names(expr).is_empty(), "{title}: {expr}");
            // Per-instance and per-job choices apply to every panel.
            assert!(expr.contains("$job"), "{title} ignores $job: {expr}");
        }
    }
    // The panels operators asked for.
    let all = serde_json::to_string(panels).unwrap();
    for needle in [
        "histogram_quantile(0.99, sum by (le) (rate(cortex_http_request_duration_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(cortex_http_request_duration_seconds_bucket",
        "status=~\\\"5..\\\"",
        "cortex_pool_in_use",
        "cortex_pool_max_size",
        "cortex_pool_acquire_wait_seconds_bucket",
        "cortex_cache_hits_total",
        "cortex_tasks_depth",
        "cortex_durable_pending",
        "cortex_durable_dead_letters",
        "process_resident_memory_bytes",
        "$__rate_interval",
    ] {
        assert!(all.contains(needle), "no panel queries {needle}");
    }
}

#[test]
fn the_name_check_finds_a_family_the_exposition_lacks() {
    let exposition = "# TYPE cortex_pool_in_use gauge\ncortex_pool_in_use{pool=\"db\"} 1\n\
        # TYPE cortex_pool_acquire_wait_seconds histogram\n\
        cortex_pool_acquire_wait_seconds_bucket{pool=\"db\",le=\"+Inf\"} 3\n\
        process_resident_memory_bytes 1e6\n";
    let exprs = [
        (
            "p99".to_owned(),
            "histogram_quantile(0.99, sum by (le) (rate(cortex_pool_acquire_wait_seconds_bucket[5m])))",
        ),
        (
            "ratio".to_owned(),
            "cortex_pool_in_use / cortex_nope_total + process_resident_memory_bytes",
        ),
    ];
    let used = families_used(exprs.iter().map(|(p, e)| (p.clone(), *e)));
    assert_eq!(
        used.keys().collect::<Vec<_>>(),
        [
            "cortex_nope_total",
            "cortex_pool_acquire_wait_seconds",
            "cortex_pool_in_use",
            "process_resident_memory_bytes"
        ]
    );
    let gone = missing(&used, exposition);
    assert_eq!(
        gone.keys().collect::<Vec<_>>(),
        ["cortex_nope_total"],
        "{gone:?}"
    );
    // Not fooled by look-alikes: a longer word, a variable.
    assert!(metric_names("xcortex_a{job=~\"$job\"}[$__rate_interval]").is_empty());
    assert_eq!(
        metric_names("sum by (pool) (cortex_pool_size{job=~\"$job\"})"),
        BTreeSet::from(["cortex_pool_size".to_owned()])
    );
    // Labels: grouping, joins and matchers, not label values nor functions.
    assert_eq!(
        labels_referenced(
            "sum by (le, pool) (rate(x{job=~\"$job\", status=~\"5.., {on} (by)\"}[1m])) / on (pool) y"
        ),
        BTreeSet::from(["job", "le", "pool", "status"].map(str::to_owned))
    );
    let wrong = [(
        "p".to_owned(),
        "sum by (cache) (cortex_pool_in_use) + sum by (pool) (cortex_pool_in_use)".to_owned(),
    )];
    assert_eq!(
        unknown_labels(&wrong, exposition),
        [format!("p: label \"cache\" in {}", wrong[0].1)]
    );
    // The rule extraction reads inline and block exprs.
    let rules = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      - alert: B\n        expr: |\n          sum(\n            cortex_x_total)\n          > 1\n        labels:\n          severity: warning\n";
    assert_eq!(alert_names(rules), ["A", "B"]);
    assert_eq!(
        rule_exprs(rules),
        ["up == 0", "sum(\ncortex_x_total)\n> 1\n"]
    );
}

/// Traffic that touches every component the service wires: the routes (and a 404), the
/// cache (a miss, then hits), the batcher, the pools, the durable queue (a message's
/// summary task, run by the worker) and, through that task, the MCP service.
async fn drive_traffic(s: &Service) {
    let (uid, wid, cid) = seed(s).await;
    for _ in 0..3 {
        assert_eq!(s.get(&format!("/workspaces/{wid}")).await.status, 200);
    }
    assert_eq!(s.get(&format!("/users?ids={uid},4242")).await.status, 200);
    assert_eq!(s.get("/nowhere").await.status, 404);
    let posted = s
        .post(
            &format!("/conversations/{cid}/messages"),
            json!({"sender_id": uid, "content": "summarize this for the dashboard"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let task = posted.body["task_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut info = Value::Null;
    while Instant::now() < deadline {
        info = s
            .admin(reqwest::Method::GET, &format!("/admin/tasks/{task}"))
            .await
            .body;
        if info["status"] == "completed" || info["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(info["status"], "completed", "{info}");
    assert_eq!(
        info["result"]["source"], "cognition",
        "the MCP call: {info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_of_the_dashboard_and_the_rules_is_exposed_by_the_service() {
    let used = families_of_dashboard_and_rules();
    assert!(used.len() >= 30, "{} families: {used:?}", used.len());

    let server = cortex_core::mcp::testing::TestServer::start()
        .await
        .unwrap();
    let url = server.url();
    let stack = Stack::new().await;
    let mut s = stack
        .start(&[
            ("COGNITION_SERVICE_URL", url.as_str()),
            ("COGNITION_SUMMARY_TOOL", "echo"),
        ])
        .await;
    let ready = s.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    drive_traffic(&s).await;

    // Levels read from Redis may land a refresh later: bounded wait for the families.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (exposition, gone) = loop {
        let exposition = s
            .http
            .get(format!("{}/metrics", s.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let gone = missing(&used, &exposition);
        if gone.is_empty() || Instant::now() > deadline {
            break (exposition, gone);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let report: Vec<String> = gone
        .iter()
        .map(|(family, places)| {
            let places: Vec<&str> = places.iter().map(String::as_str).collect();
            format!("{family} (used by {})", places.join(", "))
        })
        .collect();
    assert!(
        gone.is_empty(),
        "families the dashboard or the rules query that the service does not expose:\n  {}\n--- exposition ---\n{exposition}",
        report.join("\n  ")
    );

    // Every label a query groups, joins or filters on is one its families carry.
    let queries = queries_of_dashboard_and_rules();
    let problems = unknown_labels(&queries, &exposition);
    assert!(
        problems.is_empty(),
        "labels the service's series do not carry:\n  {}",
        problems.join("\n  ")
    );

    // The checks are not vacuous: a made-up family, and a label no family carries, are
    // reported against this very exposition.
    let mut with_bad = used.clone();
    with_bad.insert(
        "cortex_nope_total".to_owned(),
        BTreeSet::from(["a made-up panel".to_owned()]),
    );
    let bad = missing(&with_bad, &exposition);
    assert_eq!(bad.keys().collect::<Vec<_>>(), ["cortex_nope_total"]);
    let wrong = [(
        "a made-up panel".to_owned(),
        "sum by (name) (rate(cortex_cache_hits_total[1m]))".to_owned(),
    )];
    assert_eq!(unknown_labels(&wrong, &exposition).len(), 1);
    s.assert_alive().await;
}
