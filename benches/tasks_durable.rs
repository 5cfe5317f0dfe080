//! End-to-end throughput of the durable queue: enqueue N no-op tasks, two in-process
//! workers drain them, measured until the queue's counters say all completed.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). The comparison with
//! apalis-redis (deep and shallow queues, one run) is `scripts/queue-vs-apalis.sh`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cortex_core::tasks::durable::{DurableConfig, DurableQueue, Registry, Worker};
use cortex_core::tasks::{BoxError, Priority};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const N: u64 = 20_000;
const CHUNK: usize = 1000;

static RATES: Mutex<Vec<f64>> = Mutex::new(Vec::new());

async fn one_run(q: &DurableQueue) -> Duration {
    let base = q.stats().await.expect("stats").completed;
    let payloads = vec![(); CHUNK];
    let t0 = Instant::now();
    // The chunks go out concurrently: they pipeline on the one shared connection.
    let chunks = (0..N / CHUNK as u64).map(|_| q.enqueue_many("noop", &payloads, Priority::Normal));
    for r in futures_util::future::join_all(chunks).await {
        r.expect("enqueue");
    }
    let enqueued = t0.elapsed();
    while q.stats().await.expect("stats").completed < base + N {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let d = t0.elapsed();
    if std::env::var_os("DURABLE_BENCH_DEBUG").is_some() {
        eprintln!("enqueued in {enqueued:?}, all done in {d:?}");
    }
    RATES
        .lock()
        .expect("rates lock")
        .push(N as f64 / d.as_secs_f64());
    d
}

fn durable_tasks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let config = DurableConfig {
        name: format!("bench-{}", std::process::id()),
        concurrency: 64,
        batch: 64,
        result_ttl: Duration::from_secs(120),
        ..DurableConfig::default()
    };
    let (q, workers) = rt.block_on(async {
        let q = DurableQueue::connect(&url, config)
            .await
            .unwrap_or_else(|e| panic!("cannot reach Redis at {url}: {e}"));
        q.purge().await.expect("purge");
        let q = DurableQueue::connect(&url, q.config().clone())
            .await
            .expect("reconnect");
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let mut reg = Registry::new();
                reg.register("noop", |(): ()| async { Ok::<_, BoxError>(()) });
                Worker::new(q.clone(), reg).spawn()
            })
            .collect();
        (q, workers)
    });

    let mut group = c.benchmark_group("durable_tasks");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(N));
    group.bench_function("noop_20k_2_workers", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let q = q.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += one_run(&q).await;
                }
                total
            }
        });
    });
    group.finish();

    rt.block_on(async {
        for w in workers {
            w.shutdown(Duration::from_secs(5)).await;
        }
        q.purge().await.expect("purge");
    });
    let mut rates = RATES.lock().expect("rates lock").clone();
    rates.sort_by(f64::total_cmp);
    if let Some(median) = rates.get(rates.len() / 2) {
        println!(
            "durable_tasks: median {median:.0} jobs/s over {} runs of {N} no-op tasks (min {:.0}, max {:.0}); scripts/queue-vs-apalis.sh compares with apalis",
            rates.len(),
            rates.first().copied().unwrap_or_default(),
            rates.last().copied().unwrap_or_default(),
        );
    }
}

criterion_group!(benches, durable_tasks);
criterion_main!(benches);
