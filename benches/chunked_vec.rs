//! `chunked_vec/push_1m`: pushing 1 000 000 `u64`s into `ChunkedVec` vs `Vec` (no
//! reserve), in one criterion group. Printed beside: the worst single push and the peak
//! live heap bytes of each, measured with the counting allocator installed here.
//!
//! Run: `cargo bench --bench chunked_vec`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cortex_core::cache::ChunkedVec;
use cortex_core::profile::{CountingAllocator, allocation_stats};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator::system();

const N: u64 = 1_000_000;

/// Worst single push and peak live bytes above the starting point, for one fill.
fn profile(mut push: impl FnMut(u64)) -> (Duration, u64) {
    let base = allocation_stats().live_bytes;
    let mut peak = 0;
    let mut worst = Duration::ZERO;
    for i in 0..N {
        let t = Instant::now();
        push(i);
        worst = worst.max(t.elapsed());
        // Sampled often enough to see a doubling (it lasts a whole memcpy).
        if i % 1024 == 0 || i.is_power_of_two() {
            peak = peak.max(allocation_stats().peak_live_bytes.saturating_sub(base));
        }
    }
    (worst, peak)
}

fn push_1m(c: &mut Criterion) {
    {
        let mut v = Vec::new();
        let (vw, vp) = profile(|i| v.push(i));
        drop(v);
        let mut cv = ChunkedVec::new();
        let (cw, cp) = profile(|i| cv.push(i));
        drop(cv);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprintln!("pushing 1M u64 (8 MB of data), one fill each:");
        eprintln!(
            "  Vec        worst push {vw:?}, peak heap {:.1} MiB",
            mib(vp)
        );
        eprintln!(
            "  ChunkedVec worst push {cw:?}, peak heap {:.1} MiB",
            mib(cp)
        );
    }
    let mut group = c.benchmark_group("chunked_vec/push_1m");
    group
        .throughput(Throughput::Elements(N))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    group.bench_function("ChunkedVec", |b| {
        b.iter(|| {
            let mut v = ChunkedVec::new();
            for i in 0..N {
                v.push(black_box(i));
            }
            v
        });
    });
    group.bench_function("Vec", |b| {
        b.iter(|| {
            let mut v = Vec::new();
            for i in 0..N {
                v.push(black_box(i));
            }
            v
        });
    });
    group.finish();
}

criterion_group!(benches, push_1m);
criterion_main!(benches);
