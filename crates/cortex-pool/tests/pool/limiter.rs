//! The admission limiter and its tower layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cortex_pool::{Error, Limiter, LimiterConfig};

fn limiter(limit: usize, wait_ms: u64) -> Limiter {
    Limiter::new(LimiterConfig {
        limit,
        max_wait: Duration::from_millis(wait_ms),
        retry_after: Duration::from_secs(2),
    })
    .unwrap()
}

#[tokio::test]
async fn never_more_than_the_limit_and_saturation_is_typed() {
    let limiter = limiter(3, 5_000);
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (limiter, active, peak) = (limiter.clone(), active.clone(), peak.clone());
            tokio::spawn(async move {
                let _slot = limiter.acquire().await.unwrap();
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                active.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    let stats = limiter.stats();
    assert_eq!((stats.admitted, stats.rejected, stats.active), (50, 0, 0));
    assert_eq!(stats.peak_active, 3);

    let tight = self::limiter(1, 50);
    let _held = tight.acquire().await.unwrap();
    match tight.acquire().await {
        Err(Error::Saturated { limit, waited }) => {
            assert_eq!(limit, 1);
            assert!(waited >= Duration::from_millis(50));
        }
        other => panic!("expected Saturated, got {other:?}"),
    }
    assert_eq!(tight.stats().rejected, 1);
    let patient = self::limiter(1, 10_000);
    let _slot = patient.acquire().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), patient.acquire())
            .await
            .is_err()
    );
    assert_eq!(
        patient.stats().waiting,
        0,
        "a cancelled wait is not counted"
    );
    assert_eq!(tight.stats().active, 1);
}

#[test]
fn a_zero_limit_is_refused_naming_the_variable() {
    let err = Limiter::new(LimiterConfig {
        limit: 0,
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("DB_CONNECTION_LIMIT"), "{err}");
}

#[cfg(feature = "tower")]
#[tokio::test]
async fn the_layer_answers_503_with_retry_after_when_saturated() {
    use cortex_pool::LimiterLayer;
    use http::{Request, Response, StatusCode};
    use tower::{Layer, ServiceExt, service_fn};

    let limiter = limiter(1, 20);
    let svc = LimiterLayer::new(limiter.clone()).layer(service_fn(|_: Request<()>| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
    }));
    let slow = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rejected = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(rejected.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejected.headers()["retry-after"], "2");
    let ok = slow.await.unwrap().unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.into_body(), "ok");
}
