//! cortex-pool against its peers, each comparison in one criterion group:
//! - `pg_select_1/*`: `SELECT 1` through our PostgreSQL pool (timed acquire) vs a raw
//!   sqlx pool with the same size, on the PostgreSQL at `DATABASE_URL`
//!   (`eval "$(scripts/services.sh)"` starts one).
//!
//! Run: `cargo bench --bench pool`.

use std::time::Duration;

use cortex_core::metrics::Metrics;
use cortex_core::pool::{DbConfig, DbPool, PoolMetrics};
use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::postgres::PgPoolOptions;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://cortex@127.0.0.1:5432/cortex".to_owned())
}

fn pg_select_1(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = database_url();
    let config = DbConfig {
        url: url.clone(),
        pool_size: 4,
        max_overflow: 0,
        ..DbConfig::default()
    };
    let registry = Metrics::new();
    let (ours, raw) = rt.block_on(async {
        let ours = DbPool::postgres_with(config, PoolMetrics::new(&registry, "bench"))
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {url} is not reachable ({e}): run scripts/services.sh")
            });
        let raw = PgPoolOptions::new()
            .min_connections(4)
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is not reachable ({e})"));
        (ours, raw)
    });

    let mut group = c.benchmark_group("pg_select_1");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    group.bench_function("cortex DbPool::acquire", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = ours.acquire().await.expect("acquire");
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut **conn)
                .await
                .expect("SELECT 1");
            one
        });
    });
    group.bench_function("raw sqlx Pool::acquire", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = raw.acquire().await.expect("acquire");
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut *conn)
                .await
                .expect("SELECT 1");
            one
        });
    });
    group.finish();
}

criterion_group!(benches, pg_select_1);
criterion_main!(benches);
