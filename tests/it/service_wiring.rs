//! The facade's wiring: `Cortex::builder(..).build()` starts every part from one
//! config, and `shutdown(deadline)` stops them in order and reports what it cut short.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cortex_core::support::FromEnv;
use cortex_core::tasks::Priority;
use cortex_core::{Cortex, CortexConfig, Database};

#[tokio::test]
async fn shutdown_runs_closers_drains_and_reports_what_did_not_finish() {
    let cortex = Cortex::builder(CortexConfig::default())
        .build()
        .await
        .unwrap();
    assert!(matches!(cortex.database(), Database::Sqlite(_)));
    assert!(cortex.redis().is_none() && cortex.durable().is_none());

    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    cortex.on_shutdown("flag", move || flag.store(true, Ordering::SeqCst));
    let quick = cortex
        .tasks()
        .enqueue(Priority::High, "quick", async {
            Ok::<_, std::io::Error>(1)
        })
        .await
        .unwrap();
    assert_eq!(quick.await.unwrap(), 1);
    let stuck = cortex
        .tasks()
        .enqueue(Priority::Low, "stuck", async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap()
        .detach();

    let report = tokio::time::timeout(
        Duration::from_secs(30),
        cortex.shutdown(Duration::from_millis(300)),
    )
    .await
    .expect("shutdown overran its deadline by far");
    assert!(closed.load(Ordering::SeqCst), "the closer did not run");
    assert_eq!(report.closed, ["flag"]);
    assert_eq!(report.tasks_aborted, [stuck.to_string()], "{report:?}");
    assert!(!report.is_complete());
    // After shutdown the queue refuses work.
    let late = cortex
        .tasks()
        .enqueue(Priority::High, "late", async {
            Ok::<_, std::io::Error>(())
        })
        .await;
    assert!(late.is_err());
}

#[tokio::test]
async fn a_bad_variable_is_named_in_the_error() {
    // One part's config, through the facade's error type, as from_env reports it.
    let lookup = |k: &str| (k == "DB_CONNECTION_LIMIT").then(|| "many".to_owned());
    let env = cortex_core::support::env::EnvSource::from_fn(&lookup);
    let err = cortex_core::Error::from(
        cortex_core::pool::LimiterConfig::from_env_source(&env).unwrap_err(),
    );
    let text = err.to_string();
    assert!(
        text.contains("DB_CONNECTION_LIMIT") && text.contains("many"),
        "{text}"
    );
    assert!(!err.is_retryable());
}
