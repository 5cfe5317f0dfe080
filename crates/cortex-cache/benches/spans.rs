//! What the `cache.get` debug span costs a memory-store hit: no subscriber, a
//! subscriber that keeps only `info` and above (the span disabled), and one that keeps
//! everything (the span created, entered and closed).

use std::hint::black_box;

use cortex_cache::{Cache, MemoryConfig, MemoryStore};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

fn get_hit(c: &mut Criterion) {
    let store = MemoryStore::new(MemoryConfig::default()).expect("a valid config");
    store
        .set("k", b"value", None)
        .now_or_never()
        .expect("a memory set is ready at once")
        .expect("set");
    let get = || {
        black_box(
            store
                .get(black_box("k"))
                .now_or_never()
                .expect("a memory get is ready at once"),
        )
    };
    let mut group = c.benchmark_group("cache_get_span");
    group.bench_function("no_subscriber", |b| b.iter(get));
    {
        let info = tracing_subscriber::registry().with(LevelFilter::INFO);
        let _guard = tracing::subscriber::set_default(info);
        group.bench_function("debug_disabled", |b| b.iter(get));
    }
    {
        let all = tracing_subscriber::registry().with(LevelFilter::TRACE);
        let _guard = tracing::subscriber::set_default(all);
        group.bench_function("debug_enabled", |b| b.iter(get));
    }
    group.finish();
}

criterion_group!(benches, get_hit);
criterion_main!(benches);
