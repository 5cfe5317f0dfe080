//! The `pool.acquire` debug span: every pool and the limiter open one under the
//! caller's span, recording the wait and the outcome.

use std::time::Duration;

use cortex_pool::{Limiter, LimiterConfig, Manager, Pool};
use tracing::Instrument;

use cortex_support::test_util::spans::{Capture, Captured};

struct Numbers;

impl Manager for Numbers {
    type Object = u32;
    type Error = std::io::Error;

    async fn create(&self) -> Result<u32, std::io::Error> {
        Ok(1)
    }

    async fn recycle(&self, _obj: &mut u32) -> Result<(), std::io::Error> {
        Ok(())
    }
}

/// `span` is a `pool.acquire` of `pool` under `request` with a wait and `outcome`.
fn assert_acquire(span: &Captured, pool: &str, outcome: &str) {
    assert_eq!(span.parent, Some("request"), "{span:?}");
    assert_eq!(span.field("pool"), Some(pool), "{span:?}");
    assert_eq!(span.field("outcome"), Some(outcome), "{span:?}");
    let waited: u64 = span
        .field("wait_us")
        .expect("wait_us recorded")
        .parse()
        .unwrap();
    assert!(waited < 60_000_000, "{span:?}");
}

#[tokio::test]
async fn object_pool_and_limiter_acquires_record_wait_and_outcome_under_the_caller() {
    let (spans, _guard) = Capture::install();
    let pool = Pool::builder(Numbers).max_size(1).build().unwrap();
    let limiter = Limiter::new(LimiterConfig {
        limit: 1,
        max_wait: Duration::from_millis(10),
        retry_after: Duration::from_secs(1),
    })
    .unwrap();
    async {
        let held = pool.acquire().await.unwrap();
        // The only object is held: a try gets a timeout at once.
        assert!(pool.try_acquire().await.is_err());
        drop(held);
        let slot = limiter.acquire().await.unwrap();
        assert!(limiter.acquire().await.is_err());
        drop(slot);
    }
    .instrument(tracing::info_span!("request"))
    .await;

    let acquires = spans.named("pool.acquire");
    assert_eq!(acquires.len(), 4, "{acquires:?}");
    assert_acquire(&acquires[0], "object", "ok");
    assert_acquire(&acquires[1], "object", "timeout");
    assert_acquire(&acquires[2], "limiter", "ok");
    assert_acquire(&acquires[3], "limiter", "timeout");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_db_acquire_is_a_child_of_the_request() {
    use cortex_pool::{DbConfig, DbPool, PoolMetrics};

    let config = DbConfig {
        url: crate::database_url(),
        pool_size: 1,
        ..DbConfig::default()
    };
    let shown = cortex_support::redact::redact_url(&config.url);
    let pool = DbPool::postgres_with(config, PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {shown} is not reachable ({e})"));
    let (spans, _guard) = Capture::install();
    async { drop(pool.acquire().await.unwrap()) }
        .instrument(tracing::info_span!("request"))
        .await;
    assert_acquire(&spans.one("pool.acquire"), "db", "ok");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_acquire_is_a_child_of_the_request() {
    use cortex_pool::{PoolMetrics, RedisConfig, RedisPool};

    let config = RedisConfig {
        url: crate::redis_url(),
        pool_size: 1,
        ..RedisConfig::default()
    };
    let shown = cortex_support::redact::redact_url(&config.url);
    let pool = RedisPool::with_metrics(config, PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| panic!("Redis at {shown} is not reachable ({e})"));
    let (spans, _guard) = Capture::install();
    async { drop(pool.acquire().await.unwrap()) }
        .instrument(tracing::info_span!("request"))
        .await;
    assert_acquire(&spans.one("pool.acquire"), "redis", "ok");
}
