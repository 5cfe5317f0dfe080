//! cortex-cache against its peers, each comparison in one criterion group:
//! - `redis_get_set/50_tasks`: small-value GET and SET through our `RedisCache` vs raw
//!   redis-rs on one shared `MultiplexedConnection`, 50 concurrent tasks, on the Redis
//!   at `REDIS_URL` (`eval "$(scripts/services.sh)"` starts one). `redis-benchmark -c 50`
//!   is printed beside when it is installed.
//!
//! - `redis_concurrency`: single-key GET and SET throughput at 1 and 50 concurrent tasks,
//!   our `RedisCache` vs raw redis-rs on one shared `MultiplexedConnection` (the fastest
//!   plain alternative: it already pipelines the tasks' commands), and our cache built
//!   with `coalesce(true)` (`cortex coalesced ...`). GETs read existing
//!   keys. What each SET sends: ours `SET k v PX ttl` (it always sends an expiry); the
//!   peer `raw set px` sends the same `SET k v PX 300000` (the like-for-like peer), and
//!   `raw set` a bare `SET k v`, shown for reference only.
//!
//! Run: `cargo bench --bench cache --features cache,redis` (one group:
//! `-- redis_concurrency`).

#![allow(clippy::unwrap_used)] // a bench has no caller to hand an error to

use std::time::{Duration, Instant};

use cortex_core::cache::{Cache, RedisCache, RedisCacheConfig};
use cortex_core::pool::{RedisConfig, RedisPool};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TASKS: u64 = 50;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Split `iters` operations over 50 tasks; `op(i)` is one operation.
async fn spread<F, Fut>(iters: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    spread_over(TASKS, iters, op).await
}

/// Split `iters` operations over `tasks` tasks; `op(i)` is one operation.
async fn spread_over<F, Fut>(tasks: u64, iters: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per = iters.div_ceil(tasks);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    op(t * per + i).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

fn redis_benchmark_beside() {
    let url = redis_url();
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(6379);
    match std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "50",
            "-n",
            "100000",
            "-t",
            "get,set",
            "-q",
        ])
        .output()
    {
        Ok(out) if out.status.success() => {
            eprintln!("redis-benchmark -c 50 (same server, for reference):");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(l) = line.rsplit('\r').next() {
                    eprintln!("  {l}");
                }
            }
        }
        _ => eprintln!("redis-benchmark is not installed: no reference line"),
    }
}

/// The bench runtime (two workers, as the machine has two cores), our Redis pool on
/// `REDIS_URL`, and the peer's shared multiplexed connection to the same server.
fn setup() -> (
    tokio::runtime::Runtime,
    RedisPool,
    redis::aio::MultiplexedConnection,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = redis_url();
    let (pool, raw) = rt.block_on(async {
        let pool = RedisPool::new(RedisConfig {
            url: url.clone(),
            ..RedisConfig::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {url} is not reachable ({e}): run scripts/services.sh")
        });
        let raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (pool, raw)
    });
    (rt, pool, raw)
}

fn redis_get_set(c: &mut Criterion) {
    let (rt, pool, raw) = setup();
    // The cache may start background tasks when made: make it inside the runtime.
    let _in_runtime = rt.enter();
    let ours = RedisCache::new(
        pool,
        RedisCacheConfig {
            namespace: format!("cortex-bench:{}:", std::process::id()),
            ..RedisCacheConfig::default()
        },
    )
    .unwrap();
    redis_benchmark_beside();

    let mut group = c.benchmark_group("redis_get_set/50_tasks");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    group.bench_function("cortex RedisCache set", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let ours = ours.clone();
            spread(iters, move |i| {
                let ours = ours.clone();
                async move {
                    ours.set(&format!("k{}", i % 1000), b"value-16-bytes!!", None)
                        .await
                        .unwrap()
                }
            })
        });
    });
    group.bench_function("raw redis-rs set", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let raw = raw.clone();
            spread(iters, move |i| {
                let mut raw = raw.clone();
                async move {
                    redis::cmd("SET")
                        .arg(format!("cortex-bench-raw:k{}", i % 1000))
                        .arg(b"value-16-bytes!!")
                        .arg("PX")
                        .arg(300_000)
                        .query_async::<()>(&mut raw)
                        .await
                        .unwrap()
                }
            })
        });
    });
    group.bench_function("cortex RedisCache get", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let ours = ours.clone();
            spread(iters, move |i| {
                let ours = ours.clone();
                async move {
                    std::hint::black_box(ours.get(&format!("k{}", i % 1000)).await.unwrap());
                }
            })
        });
    });
    group.bench_function("raw redis-rs get", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let raw = raw.clone();
            spread(iters, move |i| {
                let mut raw = raw.clone();
                async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(format!("cortex-bench-raw:k{}", i % 1000))
                        .query_async(&mut raw)
                        .await
                        .unwrap();
                    std::hint::black_box(v);
                }
            })
        });
    });
    group.finish();
    rt.block_on(async { ours.clear().await.unwrap() });
}

/// GET and SET throughput at 1 and 50 tasks, ours and the peer in one group.
fn redis_concurrency(c: &mut Criterion) {
    use criterion::BenchmarkId;

    let (rt, pool, mut raw) = setup();
    let raw_prefix = format!("cortex-bench-raw:{}:", std::process::id());
    let (ours, coalesced, raw) = rt.block_on(async {
        let ours = RedisCache::new(
            pool.clone(),
            RedisCacheConfig {
                namespace: format!("cortex-bench:{}:conc:", std::process::id()),
                ..RedisCacheConfig::default()
            },
        )
        .unwrap();
        let coalesced = RedisCache::builder(pool)
            .namespace(format!("cortex-bench:{}:coal:", std::process::id()))
            .coalesce(true)
            .build()
            .unwrap();
        // The keys the GETs read: 1000 of them, on both sides.
        for i in 0..1000 {
            for cache in [&ours, &coalesced] {
                cache
                    .set(&format!("k{i}"), b"value-16-bytes!!", None)
                    .await
                    .unwrap();
            }
            redis::cmd("SET")
                .arg(format!("{raw_prefix}k{i}"))
                .arg(b"value-16-bytes!!")
                .arg("PX")
                .arg(300_000)
                .query_async::<()>(&mut raw)
                .await
                .unwrap();
        }
        (ours, coalesced, raw)
    });

    let mut group = c.benchmark_group("redis_concurrency");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for tasks in [1u64, 50] {
        for (name, cache) in [("cortex get", &ours), ("cortex coalesced get", &coalesced)] {
            group.bench_function(BenchmarkId::new(name, tasks), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let ours = cache.clone();
                    spread_over(tasks, iters, move |i| {
                        let ours = ours.clone();
                        async move {
                            std::hint::black_box(
                                ours.get(&format!("k{}", i % 1000)).await.unwrap(),
                            );
                        }
                    })
                });
            });
        }
        group.bench_function(BenchmarkId::new("raw get", tasks), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let raw = raw.clone();
                let prefix = raw_prefix.clone();
                spread_over(tasks, iters, move |i| {
                    let mut raw = raw.clone();
                    let key = format!("{prefix}k{}", i % 1000);
                    async move {
                        let v: Option<Vec<u8>> = redis::cmd("GET")
                            .arg(key)
                            .query_async(&mut raw)
                            .await
                            .unwrap();
                        std::hint::black_box(v);
                    }
                })
            });
        });
        for (name, cache) in [("cortex set", &ours), ("cortex coalesced set", &coalesced)] {
            group.bench_function(BenchmarkId::new(name, tasks), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let ours = cache.clone();
                    spread_over(tasks, iters, move |i| {
                        let ours = ours.clone();
                        async move {
                            ours.set(&format!("k{}", i % 1000), b"value-16-bytes!!", None)
                                .await
                                .unwrap()
                        }
                    })
                });
            });
        }
        for (name, px) in [("raw set px", true), ("raw set", false)] {
            group.bench_function(BenchmarkId::new(name, tasks), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let raw = raw.clone();
                    let prefix = raw_prefix.clone();
                    spread_over(tasks, iters, move |i| {
                        let mut raw = raw.clone();
                        let mut cmd = redis::cmd("SET");
                        cmd.arg(format!("{prefix}k{}", i % 1000))
                            .arg(b"value-16-bytes!!");
                        if px {
                            cmd.arg("PX").arg(300_000);
                        }
                        async move { cmd.query_async::<()>(&mut raw).await.unwrap() }
                    })
                });
            });
        }
    }
    group.finish();
    rt.block_on(async {
        ours.clear().await.unwrap();
        coalesced.clear().await.unwrap();
        // The bare `SET`s left keys without expiry: remove the peer's keys.
        let mut raw = raw.clone();
        let mut del = redis::cmd("DEL");
        for i in 0..1000 {
            del.arg(format!("{raw_prefix}k{i}"));
        }
        del.query_async::<u64>(&mut raw).await.unwrap();
    });
}

criterion_group!(benches, redis_get_set, redis_concurrency);
criterion_main!(benches);
