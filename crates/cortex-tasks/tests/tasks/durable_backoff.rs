//! Tasks waiting out a retry's backoff: the entry stays pending for the worker that
//! failed the attempt, so when that worker dies (or another reclaims the entry while it
//! waits) the task must still get its next attempt, and exactly one worker runs it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cortex_tasks::durable::{DurableConfig, Registry, Worker};
use cortex_tasks::{BoxError, TaskStatus};
use serde_json::Value;

use super::durable::{config, connect, eventually, spawn_proc};

/// A worker process fails the first attempt of `n` tasks and waits out a long
/// backoff; it is killed (SIGKILL) meanwhile. A worker with the default batch and
/// concurrency must reclaim the entries and run the next attempts within the
/// visibility timeout and a margin.
async fn killed_during_backoff(test: &str, n: usize) {
    let cfg = DurableConfig {
        visibility_timeout: Duration::from_secs(2),
        max_attempts: 5,
        block: Duration::from_secs(1),
        ..config(test)
    };
    let q = connect(cfg.clone()).await;
    // The process's `fail` handler always fails; its backoff (a minute) outlasts the
    // test, so only another worker can run the next attempts.
    let mut proc = spawn_proc(
        &cfg.name,
        &[
            "--visibility-timeout",
            "2",
            "--max-attempts",
            "5",
            "--backoff-ms",
            "60000",
        ],
    )
    .await;
    let ids = q
        .enqueue_many(
            "fail",
            &vec![Value::Null; n],
            cortex_tasks::Priority::Normal,
        )
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(30), || async {
            for id in &ids {
                let info = q.status(*id).await.expect("status");
                if !(info.status == TaskStatus::Retrying && info.attempts == 1) {
                    return false;
                }
            }
            true
        })
        .await,
        "the first attempts did not all fail into their backoff"
    );
    proc.child.kill().await.expect("SIGKILL the worker process");

    // Here the tasks succeed.
    let mut reg = Registry::new();
    reg.register("fail", |v: Value| async move { Ok::<_, BoxError>(v) });
    let rescuer = Worker::new(q.clone(), reg).spawn();
    // The visibility timeout, a reclaim tick per ten entries (its slots) and a generous
    // margin; the dead worker's backoff (a minute) is far longer.
    let done = eventually(Duration::from_secs(60), || async {
        for id in &ids {
            if !q.status(*id).await.expect("status").status.is_finished() {
                return false;
            }
        }
        true
    })
    .await;
    let mut stuck = Vec::new();
    for id in &ids {
        let info = q.status(*id).await.expect("status");
        if (info.status, info.attempts) != (TaskStatus::Completed, 2) {
            stuck.push(info);
        }
    }
    assert!(
        done && stuck.is_empty(),
        "{} of {n} tasks waiting out their backoff on a killed worker were not run again within 60 s; the first: {:?}",
        stuck.len(),
        stuck.first()
    );
    rescuer.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_in_backoff_on_a_killed_worker_is_run_by_another() {
    killed_during_backoff("backoff-kill", 1).await;
}

/// Many more entries than the rescuer has slots: it reclaims them a batch at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_in_backoff_on_a_killed_worker_are_all_run_by_another() {
    killed_during_backoff("backoff-kill-many", 100).await;
}

/// A worker whose refresh comes too late loses an entry it holds through a backoff to
/// another worker, which runs the next attempt. The first worker must not run it too
/// when its backoff ends: one owner, one run, one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reclaimed_during_its_backoff_is_run_by_its_new_owner_only() {
    // The first worker refreshes every second; the second reclaims what is idle for
    // 300 ms, so it takes the first worker's entry between two of its refreshes.
    let slow_cfg = DurableConfig {
        visibility_timeout: Duration::from_secs(3),
        // Its backoff (3 to 6 s) leaves the second worker ample time to reclaim.
        retry_backoff: Duration::from_secs(6),
        max_attempts: 5,
        ..config("backoff-reclaim")
    };
    let fast_cfg = DurableConfig {
        visibility_timeout: Duration::from_millis(300),
        ..slow_cfg.clone()
    };
    let q = connect(slow_cfg).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut reg = Registry::new();
    {
        let (calls, runs) = (calls.clone(), runs.clone());
        // Fails its first call; later calls succeed after eight seconds, longer than
        // the first worker's backoff, so a second run would overlap the first.
        reg.register("flaky", move |v: Value| {
            let (calls, runs) = (calls.clone(), runs.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err::<Value, BoxError>("down for now".into());
                }
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(8)).await;
                Ok(v)
            }
        });
    }
    let first = Worker::new(q.clone(), reg.clone()).spawn();
    let id = q.enqueue("flaky", &Value::Null).await.expect("enqueue");
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.status(id).await.expect("status").status == TaskStatus::Retrying
        })
        .await,
        "the first attempt did not fail into its backoff"
    );
    let second = Worker::new(connect(fast_cfg).await, reg).spawn();
    let info = q.wait(id, Duration::from_secs(20)).await.expect("status");
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    // The first worker's backoff ended during the run; let anything it did be flushed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the worker that lost the entry during its backoff ran the task again"
    );
    let s = q.stats().await.expect("stats");
    assert_eq!((s.completed, s.failed, s.queued), (1, 0, 0), "{s:?}");
    let info = q.status(id).await.expect("status");
    assert_eq!(
        (info.status, info.attempts),
        (TaskStatus::Completed, 2),
        "{info:?}"
    );
    second.shutdown(Duration::from_secs(5)).await;
    first.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
}
