//! The in-process queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cortex_tasks::{
    BackgroundConfig, BackgroundTasks, Error, Policy, Priority, PriorityQueue, PriorityQueueConfig,
    Retry, TaskQueue, TaskQueueConfig, TaskStatus, admin,
};

type Res<T> = Result<T, std::io::Error>;

fn config(name: &str, workers: usize, size: usize) -> TaskQueueConfig {
    let mut c = TaskQueueConfig::default();
    c.name = name.into();
    c.max_workers = workers;
    c.max_queue_size = size;
    c
}

/// Ten thousand deliberate panics would bury the test output; other panics still print.
fn quiet_deliberate_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("on purpose") {
            default(info);
        }
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_tasks_with_panics_are_all_accounted_for() {
    quiet_deliberate_panics();
    let queue = TaskQueue::start(config("hundred_k", 4, 1000)).unwrap();
    let n = 100_000u64;
    for i in 0..n {
        queue
            .enqueue("work", async move {
                if i % 10 == 0 {
                    panic!("task {i} panicked on purpose");
                }
                Res::Ok(i)
            })
            .await
            .unwrap()
            .detach();
    }
    assert!(
        queue.wait_idle(Duration::from_secs(120)).await,
        "queue did not drain"
    );
    let s = queue.stats();
    assert_eq!(s.enqueued, n);
    assert_eq!(s.completed + s.failed, n, "{s:?}");
    assert_eq!(s.failed, n / 10);
    assert_eq!(s.completed, n - n / 10);
    assert_eq!((s.queued, s.running, s.cancelled), (0, 0, 0));
    // Panics are recorded with their message; records stay bounded (10 000 by default).
    // Records stay bounded: 10 000 finished ones by default (workers retire them in
    // batches, at the latest when they find the queue empty).
    assert!(
        settles(|| queue.list().len() == 10_000).await,
        "{}",
        queue.list().len()
    );
    let records = queue.list();
    let failed = records
        .iter()
        .find(|t| t.status == TaskStatus::Failed)
        .unwrap();
    let error = failed.error.as_deref().unwrap();
    assert!(error.contains("panicked on purpose"), "{error}");
}

/// Workers that outrun their producer sleep and are woken again thousands of times;
/// a wake-up lost on the way leaves the producer waiting for room that never comes
/// (an `EnqueueTimeout`), or the queue never idle. Few places make the producer wait
/// for room too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wake_up_is_lost_between_a_fast_producer_and_sleeping_workers() {
    for workers in [1, 2, 10] {
        let queue = {
            let mut c = config(&format!("wakeups_{workers}"), workers, 64);
            c.limits.enqueue_timeout = Duration::from_secs(10);
            TaskQueue::start(c).unwrap()
        };
        for round in 0..20u64 {
            for _ in 0..5_000 {
                queue
                    .enqueue("noop", async { Res::Ok(()) })
                    .await
                    .unwrap_or_else(|e| panic!("{workers} workers, round {round}: {e}"))
                    .detach();
            }
            assert!(
                queue.wait_idle(Duration::from_secs(10)).await,
                "{workers} workers, round {round}: {:?}",
                queue.stats()
            );
        }
        assert_eq!(queue.stats().completed, 100_000);
    }
}

#[tokio::test]
async fn a_panic_reaches_the_handle_with_its_message() {
    let queue = TaskQueue::start(config("panic_handle", 1, 10)).unwrap();
    let h = queue
        .enqueue("boom", async {
            if true { panic!("kaboom") } else { Res::Ok(()) }
        })
        .await
        .unwrap();
    match h.await {
        Err(Error::Panicked(msg)) => assert_eq!(msg, "kaboom"),
        other => panic!("expected a panic, got {other:?}"),
    }
    // The worker survived the panic.
    let h = queue.enqueue("after", async { Res::Ok(7) }).await.unwrap();
    assert_eq!(h.await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn cancelling_queued_and_running_tasks() {
    let queue = TaskQueue::start(config("cancel", 1, 10)).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    let running = queue
        .enqueue("long", async move {
            r.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            r.fetch_add(100, Ordering::SeqCst);
            Res::Ok(())
        })
        .await
        .unwrap();
    let r = Arc::clone(&ran);
    let queued = queue
        .enqueue("never", async move {
            r.fetch_add(1000, Ordering::SeqCst);
            Res::Ok(())
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(queue.get(running.id()).unwrap().status, TaskStatus::Running);
    assert_eq!(queue.get(queued.id()).unwrap().status, TaskStatus::Queued);

    queue.cancel(queued.id()).unwrap();
    assert_eq!(
        queue.get(queued.id()).unwrap().status,
        TaskStatus::Cancelled
    );
    assert_eq!(queue.stats().queued, 0);
    queue.cancel(running.id()).unwrap();
    let (running_id, queued_id) = (running.id(), queued.id());
    assert!(matches!(running.await, Err(Error::Cancelled)));
    assert!(matches!(queued.await, Err(Error::Cancelled)));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the running task stopped, the queued one never ran"
    );
    assert_eq!(queue.get(running_id).unwrap().status, TaskStatus::Cancelled);
    assert!(matches!(
        queue.cancel(queued_id),
        Err(Error::AlreadyFinished(_))
    ));
    let unknown = "ffff".parse().unwrap();
    assert!(matches!(queue.cancel(unknown), Err(Error::UnknownTask(_))));
    assert_eq!(queue.stats().cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_honours_its_deadline_and_reports_what_did_not_run() {
    let queue = TaskQueue::start(config("shutdown", 2, 10)).unwrap();
    let mut long = Vec::new();
    for _ in 0..2 {
        let h = queue
            .enqueue("long", async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Res::Ok(())
            })
            .await
            .unwrap();
        long.push(h.id());
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(
            queue
                .enqueue("waiting", async { Res::Ok(()) })
                .await
                .unwrap()
                .id(),
        );
    }
    let t0 = tokio::time::Instant::now();
    let report = queue.shutdown(Duration::from_secs(1)).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "{took:?}"
    );
    let mut aborted = report.aborted.clone();
    aborted.sort();
    let mut not_started = report.not_started.clone();
    not_started.sort();
    assert_eq!(aborted, long);
    assert_eq!(not_started, waiting);
    assert!(!report.is_complete());
    assert!(matches!(
        queue.enqueue("late", async { Res::Ok(()) }).await,
        Err(Error::ShutDown)
    ));
    let s = queue.stats();
    assert_eq!(
        (s.cancelled, s.completed, s.queued, s.running),
        (5, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_what_fits_in_the_deadline() {
    let queue = TaskQueue::start(config("drain", 2, 100)).unwrap();
    for i in 0..20u64 {
        queue
            .enqueue("short", async move {
                tokio::time::sleep(Duration::from_millis(10 * i)).await;
                Res::Ok(())
            })
            .await
            .unwrap()
            .detach();
    }
    let report = queue.shutdown(Duration::from_secs(60)).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.drained, 20);
    assert_eq!(queue.stats().completed, 20);
}

#[tokio::test]
async fn an_unknown_priority_is_rejected_with_the_valid_ones() {
    let queue = PriorityQueue::start(PriorityQueueConfig::default()).unwrap();
    let err = queue
        .enqueue_named("urgent", "x", async { Res::Ok(()) })
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::UnknownPriority(p) if p == "urgent"));
    assert_eq!(
        err.to_string(),
        "unknown priority \"urgent\"; valid priorities are high, normal, low"
    );
    let h = queue
        .enqueue_named("HIGH", "x", async { Res::Ok(1) })
        .await
        .unwrap();
    assert_eq!(h.await.unwrap(), 1);
    assert_eq!(queue.level_stats(Priority::High).completed, 1);
    assert_eq!(queue.level_stats(Priority::Low).enqueued, 0);
}

#[tokio::test(start_paused = true)]
async fn a_high_task_behind_ten_thousand_low_ones_starts_before_they_finish() {
    let mut c = PriorityQueueConfig::default();
    c.workers = 2;
    c.max_queue_size = 20_000;
    let queue = PriorityQueue::start(c).unwrap();
    let low_done = Arc::new(AtomicU64::new(0));
    for _ in 0..10_000 {
        let done = Arc::clone(&low_done);
        queue
            .try_enqueue(Priority::Low, "low", async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Res::Ok(())
            })
            .unwrap()
            .detach();
    }
    let done = Arc::clone(&low_done);
    let high = queue
        .enqueue(Priority::High, "high", async move {
            Res::Ok(done.load(Ordering::SeqCst))
        })
        .await
        .unwrap();
    let low_done_when_high_ran = high.await.unwrap();
    assert!(
        low_done_when_high_ran < 10,
        "high ran after {low_done_when_high_ran} low tasks"
    );
    assert!(queue.wait_idle(Duration::from_secs(3600)).await);
    assert_eq!(low_done.load(Ordering::SeqCst), 10_000);
}

#[tokio::test(start_paused = true)]
async fn weighted_fairness_keeps_low_work_moving_under_a_flood() {
    let mut c = PriorityQueueConfig::default().weighted();
    c.workers = 1;
    c.max_queue_size = 5000;
    let queue = PriorityQueue::start(c).unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Hold the only worker so everything below queues up first.
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = Arc::clone(&gate);
    queue
        .enqueue(Priority::High, "gate", async move {
            g.notified().await;
            Res::Ok(())
        })
        .await
        .unwrap()
        .detach();
    tokio::time::sleep(Duration::from_millis(1)).await;
    for (p, n) in [(Priority::High, 1000), (Priority::Low, 100)] {
        for _ in 0..n {
            let o = Arc::clone(&order);
            queue
                .try_enqueue(p, "flood", async move {
                    o.lock().unwrap().push(p);
                    Res::Ok(())
                })
                .unwrap()
                .detach();
        }
    }
    gate.notify_one();
    assert!(queue.wait_idle(Duration::from_secs(60)).await);
    let order = order.lock().unwrap();
    let first_hundred_low = order[..100].iter().filter(|p| **p == Priority::Low).count();
    // Weights 5:2 between the two busy levels: two low tasks in every seven picks.
    assert!(
        (25..=32).contains(&first_hundred_low),
        "{first_hundred_low} low tasks in the first 100"
    );
    assert_eq!(order.len(), 1100);
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_then_succeeds() {
    let queue = TaskQueue::start(config("retry", 1, 10)).unwrap();
    let tries = Arc::new(AtomicU64::new(0));
    let t = Arc::clone(&tries);
    let h = queue
        .task("flaky")
        .retry(Retry::exponential(3, Duration::from_secs(1)))
        .enqueue_with(move || {
            let n = t.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n < 3 {
                    Err(format!("try {n} failed"))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
    let id = h.id();
    let t0 = tokio::time::Instant::now();
    assert_eq!(h.await.unwrap(), 3);
    // Backoff 1 s, then 2 s.
    assert_eq!(t0.elapsed().as_secs(), 3);
    let info = queue.get(id).unwrap();
    assert_eq!((info.status, info.attempts), (TaskStatus::Completed, 3));
    assert_eq!(queue.stats().retried, 2);

    // Out of attempts: the last error is the one reported.
    let h = queue
        .task("hopeless")
        .retry(Retry::exponential(2, Duration::from_millis(5)))
        .enqueue_with(|| async { Err::<(), _>("still broken") })
        .await
        .unwrap();
    let id = h.id();
    assert!(matches!(h.await, Err(Error::Failed(e)) if e == "still broken"));
    assert_eq!(queue.get(id).unwrap().attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_task_over_its_timeout_fails() {
    let mut c = config("timeout", 1, 10);
    c.limits.task_timeout = Some(Duration::from_secs(2));
    let queue = TaskQueue::start(c).unwrap();
    let h = queue
        .enqueue("slow", async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Res::Ok(())
        })
        .await
        .unwrap();
    let id = h.id();
    assert!(matches!(h.await, Err(Error::TimedOut(d)) if d == Duration::from_secs(2)));
    let info = queue.get(id).unwrap();
    assert_eq!(info.status, TaskStatus::Failed);
    assert!(info.error.unwrap().contains("timed out"));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_pushes_back() {
    let queue = {
        let mut c = config("full", 1, 2);
        c.limits.enqueue_timeout = Duration::from_secs(5);
        TaskQueue::start(c).unwrap()
    };
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = Arc::clone(&gate);
    queue
        .enqueue("blocker", async move {
            g.notified().await;
            Res::Ok(())
        })
        .await
        .unwrap()
        .detach();
    tokio::time::sleep(Duration::from_millis(1)).await;
    for _ in 0..2 {
        queue
            .try_enqueue("fill", async { Res::Ok(()) })
            .unwrap()
            .detach();
    }
    assert!(matches!(
        queue.try_enqueue("over", async { Res::Ok(()) }),
        Err(Error::QueueFull { capacity: 2 })
    ));
    assert!(matches!(
        queue.enqueue("over", async { Res::Ok(()) }).await,
        Err(Error::EnqueueTimeout { waited }) if waited == Duration::from_secs(5)
    ));
    // Room comes back as soon as a worker takes a task.
    let q = queue.clone();
    let waiter = tokio::spawn(async move { q.enqueue("later", async { Res::Ok(5) }).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    gate.notify_one();
    assert_eq!(waiter.await.unwrap().unwrap().await.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn background_tasks_respect_max_concurrent_and_cancel_all() {
    let mut c = BackgroundConfig::default();
    c.max_concurrent = 3;
    let tasks = BackgroundTasks::start(c).unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    for _ in 0..12 {
        let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
        tasks
            .add_task("job", async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Res::Ok(())
            })
            .unwrap();
    }
    assert!(tasks.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    assert_eq!(tasks.stats().completed, 12);

    for _ in 0..5 {
        tasks
            .add_task("forever", async {
                tokio::time::sleep(Duration::from_secs(86_400)).await;
                Res::Ok(())
            })
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(tasks.active().len(), 5);
    assert_eq!(tasks.cancel_all(), 5);
    assert!(tasks.wait_idle(Duration::from_secs(1)).await);
    assert!(tasks.active().is_empty());
    assert_eq!(tasks.stats().cancelled, 5);
}

#[tokio::test]
async fn admin_routes_answer_with_status_and_json() {
    let queue = TaskQueue::start(config("admin", 1, 10)).unwrap();
    let done = queue.enqueue("done", async { Res::Ok(()) }).await.unwrap();
    let done_id = done.id();
    done.await.unwrap();
    let (status, body) = admin::list(&queue);
    assert_eq!(status, 200);
    assert_eq!(body["tasks"][0]["status"], "completed");
    assert_eq!(body["tasks"][0]["id"], done_id.to_string());
    let (status, body) = admin::get(&queue, &done_id.to_string());
    assert_eq!((status, body["name"].as_str()), (200, Some("done")));
    assert_eq!(admin::get(&queue, "abc").0, 404);
    assert_eq!(admin::get(&queue, "xyz").0, 400);
    // Already finished: 404.
    assert_eq!(admin::cancel(&queue, &done_id.to_string()).0, 404);
}

#[tokio::test]
async fn a_recorded_result_is_kept_in_the_record() {
    let queue = TaskQueue::start(config("recorded", 1, 10)).unwrap();
    let h = queue
        .task("sum")
        .enqueue_recorded(async { Res::Ok(vec![1, 2, 3]) })
        .await
        .unwrap();
    let id = h.id();
    assert_eq!(h.await.unwrap(), vec![1, 2, 3]);
    assert_eq!(
        queue.get(id).unwrap().result,
        Some(serde_json::json!([1, 2, 3]))
    );
}

#[tokio::test]
async fn task_fn_turns_calls_into_enqueues() {
    let queue = TaskQueue::start(config("task_fn", 2, 10)).unwrap();
    let double = queue.task_fn("double", |x: u32| async move { Res::Ok(x * 2) });
    let a = double(2).await.unwrap();
    let b = double(21).await.unwrap();
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (4, 42));
    assert_eq!(queue.stats().completed, 2);

    let queue = PriorityQueue::start(PriorityQueueConfig::default()).unwrap();
    let urgent = queue.task_fn(
        Priority::High,
        "urgent",
        |x: u32| async move { Res::Ok(x + 1) },
    );
    assert_eq!(urgent(1).await.unwrap().await.unwrap(), 2);
    assert_eq!(queue.level_stats(Priority::High).completed, 1);
}

/// Polls `check` (sleeping a millisecond in between) for at most a second.
async fn settles(check: impl Fn() -> bool) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while !check() {
        if std::time::Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

#[tokio::test]
async fn finished_records_expire_by_count_and_age() {
    let mut c = config("expire", 2, 100);
    c.limits.max_records = 10;
    let queue = TaskQueue::start(c).unwrap();
    for _ in 0..50 {
        queue
            .enqueue("t", async { Res::Ok(()) })
            .await
            .unwrap()
            .detach();
    }
    assert!(queue.wait_idle(Duration::from_secs(10)).await);
    // Workers retire finished records in batches, at the latest when they find the
    // queue empty, a moment after the last task counted as finished.
    assert!(
        settles(|| queue.list().len() == 10).await,
        "{}",
        queue.list().len()
    );
    assert_eq!(queue.clear_finished(Duration::ZERO), 10);
    assert!(queue.list().is_empty());
    assert_eq!(queue.stats().completed, 50);
}

/// Series are labeled with the queue's name and go to the registry the queue was given,
/// not the global one.
#[tokio::test]
async fn a_queue_records_into_the_registry_it_was_given() {
    let metrics = cortex_metrics::Metrics::new();
    let queue = TaskQueue::with_metrics(config("given_registry", 1, 10), &metrics).unwrap();
    let handle = queue
        .enqueue("x", async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    handle.await.unwrap();
    assert!(queue.wait_idle(Duration::from_secs(5)).await);
    let labels = [("queue", "given_registry")];
    let completed =
        |m: &cortex_metrics::Metrics| m.counter_with("tasks.completed", &labels).unwrap().total();
    assert_eq!(completed(&metrics), 1);
    assert_eq!(completed(cortex_metrics::global()), 0);
    assert_eq!(queue.stats().completed, 1);
}

/// The exposed line of `family` for the queue `queue`, e.g. `cortex_tasks_depth{queue="q"} 2`.
fn line(family: &str, queue: &str, value: &str) -> String {
    format!("{family}{{queue=\"{queue}\"}} {value}\n")
}

/// A unique queue name, so tests in one registry (or the global one) never share series.
fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "q-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One family per measure, the queue a label: depth and running gauges read live while
/// a task blocks, outcomes as `_total` counters, durations in seconds, and two queues
/// are two series of one family, never two families.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_export_labeled_families_gauges_and_seconds() {
    let metrics = cortex_metrics::Metrics::new();
    let (a, b) = (unique("a"), unique("b"));
    let t0 = std::time::Instant::now();
    let qa = TaskQueue::with_metrics(config(&a, 1, 10), &metrics).unwrap();
    let qb = TaskQueue::with_metrics(config(&b, 1, 10), &metrics).unwrap();

    // One task blocks the only worker of `a`; two more wait behind it.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut handles = Vec::new();
    for _ in 0..3 {
        let gate = gate.clone();
        let h = qa
            .enqueue("blocked", async move {
                let _ = gate.acquire().await.map(|p| p.forget());
                Res::Ok(())
            })
            .await
            .unwrap();
        handles.push(h);
    }
    assert!(
        settles(|| qa.stats().running == 1).await,
        "{:?}",
        qa.stats()
    );
    let text = metrics.prometheus();
    assert!(
        text.contains(&line("cortex_tasks_depth", &a, "2")),
        "{text}"
    );
    assert!(
        text.contains(&line("cortex_tasks_running", &a, "1")),
        "{text}"
    );
    assert!(
        text.contains(&line("cortex_tasks_depth", &b, "0")),
        "{text}"
    );
    assert!(
        text.contains(&line("cortex_tasks_running", &b, "0")),
        "{text}"
    );

    gate.add_permits(3);
    for h in handles {
        h.await.unwrap();
    }
    qb.enqueue("fails", async { Err::<(), _>(std::io::Error::other("no")) })
        .await
        .unwrap()
        .await
        .unwrap_err();
    let retried = qb
        .task("retried")
        .retry(Retry::exponential(2, Duration::from_millis(1)))
        .enqueue_with(|| async { Err::<(), _>("again") })
        .await
        .unwrap();
    retried.await.unwrap_err();
    // The only worker of `b` is held, so the task to cancel is still queued when the
    // cancel lands: it never starts.
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let holder = {
        let hold = hold.clone();
        qb.enqueue("holder", async move {
            let _ = hold.acquire().await.map(|p| p.forget());
            Res::Ok(())
        })
        .await
        .unwrap()
    };
    assert!(
        settles(|| qb.stats().running == 1).await,
        "{:?}",
        qb.stats()
    );
    let parked = qb
        .enqueue("cancelled", std::future::pending::<Res<()>>())
        .await
        .unwrap();
    qb.cancel(parked.id()).unwrap();
    parked.await.unwrap_err();
    hold.add_permits(1);
    holder.await.unwrap();
    assert!(qa.wait_idle(Duration::from_secs(5)).await);
    assert!(qb.wait_idle(Duration::from_secs(5)).await);
    let elapsed = t0.elapsed().as_secs_f64();

    let text = metrics.prometheus();
    for (family, queue, value) in [
        ("cortex_tasks_depth", &a, "0"),
        ("cortex_tasks_running", &a, "0"),
        ("cortex_tasks_completed_total", &a, "3"),
        ("cortex_tasks_failed_total", &a, "0"),
        ("cortex_tasks_wait_seconds_count", &a, "3"),
        ("cortex_tasks_run_seconds_count", &a, "3"),
        ("cortex_tasks_completed_total", &b, "1"),
        ("cortex_tasks_failed_total", &b, "2"),
        ("cortex_tasks_cancelled_total", &b, "1"),
        ("cortex_tasks_retried_total", &b, "1"),
        // Two attempts of the retried task, one of the failed one, the holder; the
        // cancelled task never started.
        ("cortex_tasks_run_seconds_count", &b, "4"),
    ] {
        assert!(
            text.contains(&line(family, queue, value)),
            "{family} {queue} {value}\n{text}"
        );
    }
    for family in [
        "# TYPE cortex_tasks_depth gauge\n",
        "# TYPE cortex_tasks_running gauge\n",
        "# TYPE cortex_tasks_completed_total counter\n",
        "# TYPE cortex_tasks_wait_seconds histogram\n",
        "# TYPE cortex_tasks_run_seconds histogram\n",
    ] {
        assert_eq!(text.matches(family).count(), 1, "{family}{text}");
    }
    assert!(
        text.contains(&format!(
            "cortex_tasks_run_seconds_bucket{{queue=\"{a}\",le=\"+Inf\"}} 3\n"
        )),
        "{text}"
    );
    // No family carries a queue's name.
    assert!(
        !text.contains(&format!("cortex_tasks_{}", a.replace('-', "_"))),
        "{text}"
    );
    // Seconds, not nanoseconds: the three runs of `a` took no longer in total than the
    // whole test (one worker runs them one after the other).
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cortex_tasks_run_seconds_sum{{queue=\"{a}\"}} ")))
        .expect("run sum of a")
        .parse()
        .unwrap();
    assert!(
        sum > 0.0 && sum <= elapsed,
        "{sum} s of runs in {elapsed} s"
    );

    // A queue that is gone reads NaN, not its last value.
    qa.shutdown(Duration::from_secs(5)).await;
    drop(qa);
    let gone = line("cortex_tasks_depth", &a, "NaN");
    assert!(
        settles(|| metrics.prometheus().contains(&gone)).await,
        "{}",
        metrics.prometheus()
    );
}

#[test]
fn bad_config_names_the_variable_and_value() {
    use cortex_support::{EnvSource, FromEnv};

    let vars = std::collections::HashMap::from([("TASKS_MAX_WORKERS", "0")]);
    let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
    match TaskQueueConfig::from_env_source(&EnvSource::from_fn(&lookup)) {
        Err(Error::InvalidConfig { key, value, .. }) => {
            assert_eq!((key, value.as_str()), ("TASKS_MAX_WORKERS", "0"));
        }
        other => panic!("{other:?}"),
    }

    let vars = std::collections::HashMap::from([("TASKS_MAX_QUEUE_SIZE", "lots")]);
    let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
    let err = TaskQueueConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap_err();
    assert!(
        err.to_string().contains("TASKS_MAX_QUEUE_SIZE") && err.to_string().contains("lots"),
        "{err}"
    );

    // The priority queue reads the same sizes, and its policy.
    let vars = std::collections::HashMap::from([
        ("TASKS_MAX_WORKERS", "4"),
        ("TASKS_MAX_QUEUE_SIZE", "20"),
        ("TASKS_PRIORITY_POLICY", "6, 3, 1"),
        ("TASKS_RETENTION", "2m"),
    ]);
    let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
    let c = PriorityQueueConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap();
    assert_eq!((c.workers, c.max_queue_size), (4, 20));
    assert_eq!(c.policy, Policy::Weighted(vec![6, 3, 1]));
    assert_eq!(c.limits.retention, Duration::from_secs(120));
    for bad in ["fair", "1,2", "0,1,1", "1,2,x"] {
        let vars = std::collections::HashMap::from([("TASKS_PRIORITY_POLICY", bad)]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        match PriorityQueueConfig::from_env_source(&EnvSource::from_fn(&lookup)) {
            Err(Error::InvalidConfig { key, value, .. }) => {
                assert_eq!((key, value.as_str()), ("TASKS_PRIORITY_POLICY", bad));
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    let vars = std::collections::HashMap::from([("TASKS_PRIORITY_POLICY", "Weighted")]);
    let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
    let c = PriorityQueueConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap();
    assert_eq!(c.policy, Policy::Weighted(vec![5, 3, 2]));

    // Starting outside a runtime is a clear error, not a panic.
    let err = TaskQueue::start(TaskQueueConfig::default()).unwrap_err();
    assert!(err.to_string().contains("runtime"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_task_waiting_to_retry_is_cancelled_by_shutdown_not_left_hanging() {
    let queue = TaskQueue::start(config("retry_shutdown", 1, 10)).unwrap();
    let h = queue
        .task("flaky")
        .retry(Retry::exponential(5, Duration::from_secs(600)))
        .enqueue_with(|| async { Err::<(), _>("down") })
        .await
        .unwrap();
    let id = h.id();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(queue.get(id).unwrap().status, TaskStatus::Retrying);
    let t0 = tokio::time::Instant::now();
    let report = queue.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.not_started, vec![id]);
    // Cancelled at the deadline (on the paused test clock), not after the backoff.
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(matches!(h.await, Err(Error::Cancelled)));
    assert_eq!(queue.get(id).unwrap().status, TaskStatus::Cancelled);
}

/// A worker count no machine could run, or a duration that overflows a clock, is
/// refused at start instead of panicking there or on first use.
#[tokio::test]
async fn huge_worker_counts_and_durations_are_refused() {
    let key_of = |r: Result<TaskQueue, Error>| match r {
        Err(Error::InvalidConfig { key, .. }) => key,
        Err(e) => panic!("expected InvalidConfig, got {e}"),
        Ok(_) => panic!("expected InvalidConfig, got a queue"),
    };
    assert_eq!(
        key_of(TaskQueue::start(config("huge_workers", usize::MAX, 10))),
        "workers"
    );
    let mut c = config("huge_timeout", 1, 1);
    c.limits.enqueue_timeout = Duration::MAX;
    assert_eq!(key_of(TaskQueue::start(c)), "enqueue_timeout");
    let mut c = config("huge_retention", 1, 1);
    c.limits.retention = Duration::from_secs(u64::MAX);
    assert_eq!(key_of(TaskQueue::start(c)), "retention");
    // A huge queue bound is fine: nothing is allocated for it up front.
    let queue = TaskQueue::start(config("huge_bound", 1, usize::MAX)).unwrap();
    queue.shutdown(Duration::from_secs(1)).await;

    let mut p = PriorityQueueConfig::default();
    p.workers = 1 << 40;
    assert!(matches!(
        PriorityQueue::start(p),
        Err(Error::InvalidConfig { key: "workers", .. })
    ));
}
