//! Baseline files (`Baselines::save`): written whole through a unique temporary file, so
//! concurrent writers never share a temporary and a reader never sees half a file.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cortex_profile::{Baselines, BenchResult, Error};

const THREADS: usize = 8;
const ROUNDS: usize = 10;

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Run `f(thread, round)` on `THREADS` threads started together.
fn on_threads(f: impl Fn(usize, usize) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for round in 0..ROUNDS {
                    f(t, round);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn concurrent_baseline_saves_leave_whole_files_and_no_temporaries() {
    let _heavy = crate::CPU_HEAVY.blocking_read();
    let dir = tempfile::tempdir().unwrap();
    let mut baselines = Baselines::new();
    for i in 0..2_000 {
        let samples = [
            Duration::from_micros(i + 1),
            Duration::from_micros(2 * i + 3),
        ];
        baselines.update(&BenchResult::from_samples(format!("operation.{i}"), &samples).unwrap());
    }
    let root = dir.path().to_owned();
    on_threads(move |t, round| {
        for name in [
            format!("b{t}.json"),
            "performance_baselines.json".to_owned(),
        ] {
            baselines
                .save(root.join(&name))
                .unwrap_or_else(|e| panic!("thread {t} round {round} {name}: {e}"));
        }
    });
    let mut expected: BTreeSet<String> = (0..THREADS).map(|t| format!("b{t}.json")).collect();
    expected.insert("performance_baselines.json".to_owned());
    assert_eq!(
        names_in(dir.path()),
        expected,
        "temporary files left behind"
    );
    for name in &expected {
        let loaded = Baselines::load(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name} is not whole: {e}"));
        assert_eq!(loaded.len(), 2_000, "{name}");
    }
}

#[test]
fn a_save_that_cannot_happen_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/dir/b.json");
    let err = Baselines::new().save(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing/dir/b.json"), "{err}");
}
