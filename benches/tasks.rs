//! `tasks/enqueue_to_done_100k/{2,10}_workers`: 100 000 no-op tasks from enqueue until
//! the last one finished, on a two-thread runtime, at 2 and at 10 workers, through
//! - cortex-tasks' `TaskQueue` (a bound of 1 000 waiting, status records, panic
//!   catching and metrics all on, as a user gets it by default),
//! - `tokio::spawn` into a `JoinSet`, joined to the end (no worker count: one task each),
//! - a plain pool sharing one bounded tokio mpsc channel (1 000): its receiver behind a
//!   mutex that every worker takes (the simplest queue a service writes), no records,
//! - a plain pool with one bounded tokio mpsc channel per worker (1 000 split evenly),
//!   fed round robin by the producer, each worker draining its own: the fastest plain
//!   pool, no records.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cortex_core::tasks::{TaskQueue, TaskQueueConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinSet;

const TASKS: u64 = 100_000;
const BOUND: usize = 1_000;

type Job = Box<dyn FnOnce() + Send>;

/// Counts finished jobs of a run and wakes the producer after the last one.
#[derive(Clone)]
struct Done {
    count: Arc<AtomicU64>,
    all: Arc<Notify>,
}

impl Done {
    fn new() -> Self {
        Self {
            count: Arc::new(AtomicU64::new(0)),
            all: Arc::new(Notify::new()),
        }
    }

    /// A no-op job that counts itself done.
    fn job(&self, n: u64) -> Job {
        let (count, all) = (Arc::clone(&self.count), Arc::clone(&self.all));
        Box::new(move || {
            if count.fetch_add(1, Ordering::AcqRel) + 1 == n {
                all.notify_one();
            }
        })
    }
}

/// Workers share one receiver behind a mutex.
struct SharedPool {
    tx: mpsc::Sender<Job>,
    done: Done,
}

impl SharedPool {
    fn start(workers: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(BOUND);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers {
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
            done: Done::new(),
        }
    }

    async fn run(&self, n: u64) {
        self.done.count.store(0, Ordering::SeqCst);
        for _ in 0..n {
            if self.tx.send(self.done.job(n)).await.is_err() {
                return;
            }
        }
        self.done.all.notified().await;
    }
}

/// One channel per worker, fed round robin.
struct PerWorkerPool {
    txs: Vec<mpsc::Sender<Job>>,
    done: Done,
}

impl PerWorkerPool {
    fn start(workers: usize) -> Self {
        let txs = (0..workers)
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<Job>((BOUND / workers).max(1));
                tokio::spawn(async move {
                    while let Some(job) = rx.recv().await {
                        job();
                    }
                });
                tx
            })
            .collect();
        Self {
            txs,
            done: Done::new(),
        }
    }

    async fn run(&self, n: u64) {
        self.done.count.store(0, Ordering::SeqCst);
        for i in 0..n {
            let tx = &self.txs[i as usize % self.txs.len()];
            if tx.send(self.done.job(n)).await.is_err() {
                return;
            }
        }
        self.done.all.notified().await;
    }
}

fn enqueue_to_done(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for workers in [2, 10] {
        let mut config = TaskQueueConfig::default();
        config.name = format!("bench_{workers}");
        config.max_workers = workers;
        config.max_queue_size = BOUND;
        let queue = rt
            .block_on(async { TaskQueue::start(config) })
            .expect("queue");
        let shared = rt.block_on(async { SharedPool::start(workers) });
        let per_worker = rt.block_on(async { PerWorkerPool::start(workers) });

        let mut group = c.benchmark_group(format!("tasks/enqueue_to_done_100k/{workers}_workers"));
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
        group.bench_function("mpsc_shared_pool", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let shared = &shared;
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        shared.run(TASKS).await;
                    }
                    start.elapsed()
                }
            });
        });
        group.bench_function("mpsc_per_worker_pool", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let per_worker = &per_worker;
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        per_worker.run(TASKS).await;
                    }
                    start.elapsed()
                }
            });
        });
        group.finish();
    }
}

criterion_group!(benches, enqueue_to_done);
criterion_main!(benches);
