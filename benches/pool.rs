//! cortex-pool against its peers, each comparison in one criterion group:
//! - `pg_select_1/*`: `SELECT 1` through our PostgreSQL pool (timed acquire) vs a raw
//!   sqlx pool with the same size, on the PostgreSQL at `DATABASE_URL`
//!   (`eval "$(scripts/services.sh)"` starts one).
//!
//! - `object_pool/acquire_release/{1,16,256}`: N tasks on a 2-worker runtime share
//!   acquire + release operations on a pool of 16 trivial objects: ours (metrics off and
//!   on), deadpool (managed) and bb8.
//! - `object_pool/acquire_yield_release/{16,256}`: the same, holding each object across
//!   a `yield_now`, so the pool runs dry and waiting is measured.
//!
//! Run: `cargo bench --bench pool` (`-- object_pool` or `-- pg_select_1` for one part).

// A bench has no caller to hand an error to.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use cortex_core::metrics::Metrics;
use cortex_core::pool::{DbConfig, DbPool, PoolMetrics};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

const MAX: usize = 16;

struct Nums;

impl cortex_core::pool::Manager for Nums {
    type Object = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn recycle(&self, _: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
}

struct DpNums;

impl deadpool::managed::Manager for DpNums {
    type Type = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn recycle(
        &self,
        _: &mut u64,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

struct Bb8Nums;

impl bb8::ManageConnection for Bb8Nums {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn is_valid(&self, _: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

/// Split `iters` acquire + release operations over `tasks` tasks sharing `pool`;
/// `$get` maps `&pool` to the acquire future.
macro_rules! run {
    ($pool:expr, $tasks:expr, $iters:expr, |$p:ident| $get:expr) => {
        run!($pool, $tasks, $iters, false, |$p| $get)
    };
    ($pool:expr, $tasks:expr, $iters:expr, $yield_held:expr, |$p:ident| $get:expr) => {{
        let (pool, tasks, iters) = ($pool.clone(), $tasks as u64, $iters);
        async move {
            let (per, extra) = (iters / tasks, iters % tasks);
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|i| {
                    let $p = pool.clone();
                    let n = per + u64::from(i < extra);
                    tokio::spawn(async move {
                        for _ in 0..n {
                            let held = std::hint::black_box($get.await.unwrap());
                            if $yield_held {
                                // Hold across a yield, so many tasks hold at once and
                                // the pool runs dry: the waiting path is measured too.
                                tokio::task::yield_now().await;
                            }
                            drop(held);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
            start.elapsed()
        }
    }};
}

fn acquire_release(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ours = cortex_core::pool::Pool::builder(Nums)
        .max_size(MAX)
        .build()
        .unwrap();
    let registry = cortex_core::metrics::Metrics::default();
    let ours_metrics = cortex_core::pool::Pool::builder(Nums)
        .max_size(MAX)
        .metrics(cortex_core::pool::PoolMetrics::new(&registry, "bench"))
        .build()
        .unwrap();
    let dp: deadpool::managed::Pool<DpNums> = deadpool::managed::Pool::builder(DpNums)
        .max_size(MAX)
        .build()
        .unwrap();
    let b8 = rt.block_on(
        bb8::Pool::builder()
            .max_size(MAX as u32)
            .test_on_check_out(false)
            .build(Bb8Nums),
    );
    let b8 = b8.unwrap();

    for tasks in [1usize, 16, 256] {
        let mut g = c.benchmark_group(format!("object_pool/acquire_release/{tasks}"));
        g.throughput(Throughput::Elements(1));
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        g.sample_size(30);
        g.bench_function("cortex", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| run!(ours, tasks, iters, |p| p.acquire()));
        });
        g.bench_function("cortex+metrics", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| run!(ours_metrics, tasks, iters, |p| p.acquire()));
        });
        g.bench_function("deadpool", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| run!(dp, tasks, iters, |p| p.get()));
        });
        g.bench_function("bb8", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| run!(b8, tasks, iters, |p| p.get()));
        });
        g.finish();
    }

    for tasks in [16usize, 256] {
        let mut g = c.benchmark_group(format!("object_pool/acquire_yield_release/{tasks}"));
        g.throughput(Throughput::Elements(1));
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        g.sample_size(30);
        g.bench_function("cortex", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| run!(ours, tasks, iters, true, |p| p.acquire()));
        });
        g.bench_function("deadpool", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| run!(dp, tasks, iters, true, |p| p.get()));
        });
        g.bench_function("bb8", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| run!(b8, tasks, iters, true, |p| p.get()));
        });
        g.finish();
    }
}

criterion_group!(benches, acquire_release, pg_select_1);
criterion_main!(benches);
