//! Files written by the crate (`Metrics::export_json`): a unique
//! temporary file in the target's directory, synced, then renamed, so concurrent
//! writers never share a temporary file and a reader never sees half a file.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cortex_metrics::{Error, Metrics, MetricsSnapshot};

const THREADS: usize = 8;
const ROUNDS: usize = 10;

/// A registry whose JSON is large enough (a few hundred KiB) for writes to overlap.
fn busy_registry() -> Metrics {
    let metrics = Metrics::new();
    for i in 0..200 {
        let op = metrics.operation_in("cat", &format!("operation.number.{i}"));
        for us in [1, 10, 100, 1000] {
            op.record(Duration::from_micros(us * (i + 1)), us != 10);
        }
    }
    metrics
}

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
fn concurrent_json_exports_leave_whole_files_and_no_temporaries() {
    let _heavy = crate::CPU_HEAVY.blocking_read();
    let dir = tempfile::tempdir().unwrap();
    let metrics = busy_registry();
    let root = dir.path().to_owned();
    on_threads(move |t, round| {
        // Its own file, one without an extension next to it (`m3` and `m3.json` once
        // shared a temporary name), and one file every thread writes.
        for name in [
            format!("m{t}.json"),
            format!("m{t}"),
            "shared.json".to_owned(),
        ] {
            let path = root.join(&name);
            metrics
                .export_json(&path)
                .unwrap_or_else(|e| panic!("thread {t} round {round} {name}: {e}"));
        }
    });
    let mut expected: BTreeSet<String> = (0..THREADS)
        .flat_map(|t| [format!("m{t}.json"), format!("m{t}")])
        .collect();
    expected.insert("shared.json".to_owned());
    assert_eq!(
        names_in(dir.path()),
        expected,
        "temporary files left behind"
    );
    for name in &expected {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let snap: MetricsSnapshot = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name} is not a whole snapshot: {e}"));
        assert_eq!(snap.operations.len(), 200, "{name}");
    }
}

#[test]
fn a_write_that_cannot_happen_names_the_path_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = busy_registry();

    // No such directory.
    let missing = dir.path().join("missing/dir/m.json");
    let err = metrics.export_json(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing/dir/m.json"), "{err}");

    // The target is a directory: the rename fails, the directory and its content stay,
    // and the temporary file is removed.
    let target = dir.path().join("taken.json");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let err = metrics.export_json(&target).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &target),
        "{err:?}"
    );
    assert!(err.to_string().contains("taken.json"), "{err}");
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"x");
    assert_eq!(
        names_in(dir.path()),
        BTreeSet::from(["taken.json".to_owned()]),
        "temporary file left behind"
    );
}
