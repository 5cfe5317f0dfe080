//! `tasks/enqueue_to_done_100k`: 100 000 no-op tasks from enqueue until the last one
//! finished, on a two-thread runtime, through
//! - cortex-tasks' `TaskQueue` (2 workers, a bound of 1 000 waiting, status records,
//!   panic catching and metrics all on, as a user gets it by default),
//! - `tokio::spawn` into a `JoinSet`, joined to the end,
//! - a plain worker pool: a bounded tokio mpsc channel (1 000) with one receiver
//!   shared by 2 workers behind a mutex (the simplest queue a service writes), no records.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cortex_core::tasks::{TaskQueue, TaskQueueConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinSet;

const TASKS: u64 = 100_000;
const WORKERS: usize = 2;
const BOUND: usize = 1_000;

type Job = Box<dyn FnOnce() + Send>;

/// The plain pool: workers share one receiver; a counter says when all are done.
struct MpscPool {
    tx: mpsc::Sender<Job>,
    done: Arc<AtomicU64>,
    all_done: Arc<Notify>,
}

impl MpscPool {
    fn start() -> Self {
        let (tx, rx) = mpsc::channel::<Job>(BOUND);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            let rx = Arc::clone(&rx);
            tokio::spawn(async move {
                loop {
                    let job = rx.lock().await.recv().await;
                    match job {
                        Some(job) => job(),
                        None => return,
                    }
                }
            });
        }
        Self {
            tx,
            done: Arc::new(AtomicU64::new(0)),
            all_done: Arc::new(Notify::new()),
        }
    }

    async fn run(&self, n: u64) {
        self.done.store(0, Ordering::SeqCst);
        for _ in 0..n {
            let (done, all_done) = (Arc::clone(&self.done), Arc::clone(&self.all_done));
            let job: Job = Box::new(move || {
                if done.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    all_done.notify_one();
                }
            });
            if self.tx.send(job).await.is_err() {
                return;
            }
        }
        self.all_done.notified().await;
    }
}

fn enqueue_to_done(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = TaskQueueConfig::default();
    config.name = "bench".into();
    config.max_workers = WORKERS;
    config.max_queue_size = BOUND;
    let queue = rt
        .block_on(async { TaskQueue::start(config) })
        .expect("queue");
    let pool = rt.block_on(async { MpscPool::start() });

    let mut group = c.benchmark_group("tasks/enqueue_to_done_100k");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(TASKS));
    group.bench_function("cortex_task_queue", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let queue = queue.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..TASKS {
                        queue
                            .enqueue("noop", async { Ok::<_, Infallible>(()) })
                            .await
                            .expect("enqueue")
                            .detach();
                    }
                    assert!(
                        queue.wait_idle(Duration::from_secs(60)).await,
                        "queue did not drain"
                    );
                }
                start.elapsed()
            }
        });
    });
    group.bench_function("tokio_joinset", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                let mut set = JoinSet::new();
                for _ in 0..TASKS {
                    set.spawn(async {});
                }
                while set.join_next().await.is_some() {}
            }
            start.elapsed()
        });
    });
    group.bench_function("mpsc_worker_pool", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = &pool;
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    pool.run(TASKS).await;
                }
                start.elapsed()
            }
        });
    });
    group.finish();
}

criterion_group!(benches, enqueue_to_done);
criterion_main!(benches);
