//! One trace across the stack: an HTTP request's span is the parent of the pool and
//! cache spans it causes, and the durable task it enqueues runs, on another process,
//! under the same W3C trace id. Read from the two instances' JSON logs
//! (`LOG_FORMAT=json`), the way a log pipeline would.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::service::{Service, seed};
use crate::service_pg::Stack;

/// Debug spans of the service and the crates on the request's path; little else.
const FILTER: &str = "warn,service=debug,cortex_pool=debug,cortex_cache=debug,cortex_tasks=debug";

/// An instance of `stack` logging JSON into `log`.
async fn start(stack: &Stack, extra: &[(&str, &str)], log: &Path) -> Service {
    let mut env = vec![("LOG_FORMAT", "json"), ("RUST_LOG", FILTER)];
    env.extend_from_slice(extra);
    let (mut cmd, data) = stack.command(&env);
    cmd.stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    Service::spawn(cmd, data).await
}

/// Every JSON line of `log` (a line that is not JSON is a bug of the format).
fn lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The close events of spans whose name starts with `prefix`.
fn closed<'a>(lines: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["fields"]["message"] == "close")
        .filter(|l| {
            l["span"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

/// Whether `event`'s spans include the request span of trace `trace_id` (the span
/// list runs from the root to the span itself).
fn under_request(event: &Value, trace_id: &str) -> bool {
    event["spans"].as_array().is_some_and(|spans| {
        spans
            .iter()
            .any(|s| s["name"] == "http.request" && s["trace_id"] == trace_id)
    })
}

#[tokio::test]
async fn one_trace_runs_from_the_request_through_pool_and_cache_to_a_task_on_another_process() {
    let stack = Stack::new().await;
    let logs = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    // A takes the request and enqueues; only B runs durable tasks.
    let a = start(&stack, &[("CORTEX_WORKER", "off")], &log_a).await;
    let b = start(&stack, &[], &log_b).await;
    let (uid, _, cid) = seed(&a).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let posted = a
        .send(
            a.http
                .post(format!("{}/conversations/{cid}/messages", a.url))
                .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
                .json(&json!({"sender_id": uid, "content": "follow me"})),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let echoed = posted.headers["traceparent"].to_str().unwrap();
    assert!(
        echoed.starts_with(&format!("00-{trace_id}-")) && !echoed.contains("00f067aa0ba902b7"),
        "the response names a child of the caller's context: {echoed}"
    );

    // B picks the task up: bounded wait for its run span to close.
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let found = closed(&lines(&log_b), "task.run")
            .into_iter()
            .find(|l| l["span"]["trace_id"] == trace_id)
            .cloned();
        if let Some(run) = found {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "no task.run span with trace id {trace_id} on B within 30 s; B logged:\n{}",
            std::fs::read_to_string(&log_b).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["span"]["outcome"], "ok", "{run}");

    let a_lines = lines(&log_a);
    let request = closed(&a_lines, "http.request")
        .into_iter()
        .find(|l| l["span"]["trace_id"] == trace_id);
    assert!(
        request.is_some_and(|r| r["span"]["route"] == "/conversations/{id}/messages"),
        "A logged no request span for trace {trace_id}"
    );
    let db = closed(&a_lines, "pool.acquire")
        .into_iter()
        .filter(|l| l["span"]["pool"] == "db")
        .collect::<Vec<_>>();
    assert!(
        db.iter().any(|l| under_request(l, trace_id)),
        "no database pool.acquire span under the request of trace {trace_id}: {db:#?}"
    );
    for prefix in ["pool.acquire", "cache."] {
        let spans = closed(&a_lines, prefix);
        assert!(
            spans.iter().any(|l| under_request(l, trace_id)),
            "no {prefix} span under the request of trace {trace_id}; {prefix} spans on A: {spans:#?}"
        );
    }
    // Nothing on A ran the task: the trace crossed processes through the queue.
    // (A runs its in-process upkeep tasks; none of them is in this trace.)
    assert!(
        !closed(&a_lines, "task.run")
            .iter()
            .any(|l| l["span"]["trace_id"] == trace_id)
    );

    // The task counted itself through the `metrics` crate's facade; B's recorder put it
    // into the registry its /metrics serves.
    let scraped = b.get("/metrics").await;
    let text = scraped.body.as_str().unwrap_or_default();
    assert!(
        text.contains("cortex_summaries_total{source=\"local\"} 1\n"),
        "{text}"
    );
}
