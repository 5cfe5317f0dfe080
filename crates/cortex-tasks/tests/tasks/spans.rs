//! The `task.run` debug span: an in-process task's run is a child of the span that
//! enqueued it; a durable task's run records the trace id of the `traceparent` its
//! enqueuer had, and its handler runs in that trace.

use std::time::Duration;

use cortex_tasks::{TaskQueue, TaskQueueConfig};
use tracing::Instrument;

use cortex_support::test_util::spans::Capture;

#[tokio::test]
async fn an_in_process_run_is_a_child_of_the_span_that_enqueued_it() {
    let (spans, _guard) = Capture::install();
    let mut config = TaskQueueConfig::default();
    config.name = "spans".into();
    config.max_workers = 1;
    let queue = TaskQueue::start(config).unwrap();
    let handle = queue
        .enqueue("send_mail", async {
            tracing::debug_span!("smtp").in_scope(|| Ok::<_, std::io::Error>(()))
        })
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    // The request span is closed by now: the run still hangs under it.
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("task hung")
        .unwrap();

    let run = spans.one("task.run");
    assert_eq!(run.parent, Some("request"));
    assert_eq!(run.field("queue"), Some("spans"));
    assert_eq!(run.field("task"), Some("send_mail"));
    assert_eq!(run.field("attempt"), Some("1"));
    assert_eq!(run.field("outcome"), Some("ok"));
    assert_eq!(run.field("task_id").map(str::len), Some(16));
    assert_eq!(spans.one("smtp").parent, Some("task.run"));
}

#[tokio::test]
async fn a_task_enqueued_outside_any_span_runs_in_a_root_span() {
    let (spans, _guard) = Capture::install();
    let queue = TaskQueue::start(TaskQueueConfig::default()).unwrap();
    let handle = queue
        .enqueue("t", async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("task hung")
        .unwrap();
    assert_eq!(spans.one("task.run").parent, None);
}

#[cfg(feature = "durable")]
#[tokio::test]
async fn a_durable_run_records_the_trace_id_given_at_enqueue() {
    use cortex_tasks::durable::{Registry, Worker};
    use cortex_tasks::{BoxError, TaskStatus, TraceParent};

    use crate::durable::{config, connect};

    let (spans, _guard) = Capture::install();
    let cfg = config("spans");
    let name = cfg.name.clone();
    let q = connect(cfg).await;
    let mut reg = Registry::new();
    reg.register("traced", |n: u64| async move {
        // The handler runs in a child of the enqueuer's trace context, if it had one.
        let tp = TraceParent::current().map_or_else(|| "none".to_owned(), |t| t.to_string());
        Ok::<_, BoxError>(format!("{n} {tp}"))
    });
    let worker = Worker::new(q.clone(), reg).spawn();

    let given =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let traced = given
        .clone()
        .scope(q.enqueue("traced", &7u64))
        .await
        .unwrap();
    let plain = q.enqueue("traced", &8u64).await.unwrap();
    let done = q.wait(traced, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    let result = done.result.unwrap();
    let (n, seen) = result.as_str().unwrap().split_once(' ').unwrap();
    assert_eq!(n, "7");
    let seen = TraceParent::parse(seen).unwrap();
    assert_eq!(seen.trace_id(), given.trace_id());
    assert_ne!(seen.parent_id(), given.parent_id());
    // Enqueued with no trace context: stored without one, and the handler has none.
    let plain = q.wait(plain, Duration::from_secs(10)).await.unwrap();
    assert_eq!(plain.result, Some(serde_json::json!("8 none")), "{plain:?}");
    worker.shutdown(Duration::from_secs(5)).await;

    let runs = spans.named("task.run");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let run = runs
        .iter()
        .find(|r| r.field("trace_id").is_some())
        .expect("a run with a trace id");
    assert_eq!(
        run.field("trace_id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(run.field("queue"), Some(name.as_str()));
    assert_eq!(run.field("task"), Some("traced"));
    assert_eq!(run.field("task_id"), Some(traced.to_string().as_str()));
    assert_eq!(run.field("attempt"), Some("1"));
    assert_eq!(run.field("outcome"), Some("ok"));
    assert_eq!(run.parent, None);
    assert!(runs.iter().any(|r| r.field("trace_id").is_none()));
    q.purge().await.unwrap();
}
