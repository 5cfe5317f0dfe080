//! `pgtune_with` against pgtune's own formulas, input by input.
//!
//! Each table holds inputs and the `postgresql.conf` lines pgtune's source gives for
//! them at the commit the algorithm matches (le0pard/pgtune,
//! `src/features/configuration/configurationSlice.js` for the values and
//! `src/common/components/configurationView/index.jsx` for order, rendering and which
//! settings are left out):
//!
//! - classic: `2f5122d714c721b6e2e078714805ff213cfef912` (2025-09-26);
//! - modern: `7caef27c204d304623eda21f23e7d56c1ad78d36` (2026-07-30; its formulas last
//!   changed in `830d3bb36876013e9f56b87faa025b82f4f93e64`).
//!
//! The expected lines were produced once by evaluating that commit's formulas on these
//! inputs; the comments redo the arithmetic of the values that exercise a rule, so a
//! reader can check them by hand. The input tuple is (type, RAM, CPUs, connections,
//! storage, PostgreSQL version, OS, data size).

use DbSize::*;
use DbType::*;
use Os::*;
use Storage::*;
use cortex_dbtune::pgtune::{
    Algorithm, DbSize, DbType, Os, PgtuneInput, PgtuneOptions, Storage, parse_memory,
    pgtune_warnings_with, pgtune_with, to_conf,
};

type Input = (
    DbType,
    &'static str,
    Option<u32>,
    Option<u32>,
    Storage,
    u32,
    Os,
    DbSize,
);

struct Case {
    input: Input,
    want: &'static [&'static str],
}

fn run(
    algorithm: Algorithm,
    (t, ram, cpus, conns, st, v, os, size): Input,
) -> (PgtuneInput, PgtuneOptions) {
    let input = PgtuneInput {
        db_type: t,
        total_memory_bytes: parse_memory(ram).unwrap_or_else(|e| panic!("{ram}: {e}")),
        cpus,
        connections: conns,
        storage: st,
        pg_version: v,
    };
    (input, PgtuneOptions::new(os, algorithm).with_db_size(size))
}

fn check(algorithm: Algorithm, cases: &[Case]) {
    for c in cases {
        let (input, opts) = run(algorithm, c.input);
        let settings =
            pgtune_with(&input, &opts).unwrap_or_else(|e| panic!("{algorithm} {:?}: {e}", c.input));
        let conf = to_conf(&settings);
        let got: Vec<&str> = conf.lines().collect();
        assert_eq!(got, c.want, "{algorithm} {:?}", c.input);
    }
}

#[test]
fn classic_matches_pgtune_2f5122d7() {
    check(Algorithm::Classic, CLASSIC);
}

#[test]
fn modern_matches_pgtune_7caef27c() {
    check(Algorithm::Modern, MODERN);
}

#[test]
fn modern_warnings_follow_pgtune_7caef27c() {
    // The warnings pgtune shows above the settings, by kind, for each modern input.
    let kinds = |i: Input| -> Vec<&'static str> {
        let (input, opts) = run(Algorithm::Modern, i);
        pgtune_warnings_with(&input, &opts)
            .iter()
            .map(|w| {
                if w.contains("memory") {
                    "memory"
                } else if w.contains("lz4") {
                    "lz4"
                } else if w.contains("io_uring") {
                    "io_uring"
                } else if w.contains("random_page_cost") {
                    "dw_cost"
                } else {
                    panic!("unknown warning {w:?}")
                }
            })
            .collect()
    };
    let want: [&[&str]; 13] = [
        &["lz4", "io_uring"],
        &["memory", "lz4", "io_uring"],
        &["lz4", "dw_cost"],
        &["lz4"],
        &["lz4"],
        &[],
        &["memory", "lz4"],
        &["memory", "lz4"],
        &["memory", "lz4"],
        &[],
        &[],
        &["lz4", "dw_cost"],
        &[],
    ];
    assert_eq!(MODERN.len(), want.len());
    for (c, w) in MODERN.iter().zip(want) {
        assert_eq!(kinds(c.input), w, "{:?}", c.input);
    }
    // Classic warns about memory only.
    let (input, opts) = run(Algorithm::Classic, CLASSIC[0].input);
    assert!(pgtune_warnings_with(&input, &opts).is_empty());
}

#[test]
fn classic_refuses_a_data_size_and_modern_takes_terabytes() {
    let (input, opts) = run(
        Algorithm::Classic,
        (Web, "16GB", None, None, Ssd, 18, Linux, LessRam),
    );
    let e = pgtune_with(&input, &opts).unwrap_err().to_string();
    assert!(e.contains("less_ram") && e.contains("modern"), "{e}");
    // 999999TB is modern pgtune's largest input; classic's is 999999GB.
    let (input, opts) = run(
        Algorithm::Modern,
        (Web, "999999TB", None, None, Ssd, 18, Linux, MidRam),
    );
    let s = pgtune_with(&input, &opts).unwrap();
    assert_eq!(s[1].value, "255999744GB");
    let (input, opts) = run(
        Algorithm::Classic,
        (Web, "999999TB", None, None, Ssd, 18, Linux, MidRam),
    );
    let e = pgtune_with(&input, &opts).unwrap_err().to_string();
    assert!(e.contains("999999GB"), "{e}");
}

const CLASSIC: &[Case] = &[
    // RAM 16,777,216 kB; sb 4GB; W = 12,582,912 / ((200 + 8) * 3) = 20,164.9 -> 20164kB;
    // huge_pages by RAM (< 32GB: off) in the classic commit.
    Case {
        input: (Web, "16GB", Some(8), None, Ssd, 18, Linux, MidRam),
        want: &[
            "max_connections = 200",
            "shared_buffers = 4GB",
            "effective_cache_size = 12GB",
            "maintenance_work_mem = 1GB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "effective_io_concurrency = 200",
            "work_mem = 20164kB",
            "huge_pages = off",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
            "max_worker_processes = 8",
            "max_parallel_workers_per_gather = 4",
            "max_parallel_workers = 8",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // 32GB: the huge_pages boundary; RAM/16 = 2GB: exactly the cap; 4 CPUs: the parallel boundary.
    // W = 25,165,824 / ((300 + 4) * 3) = 27,594.1 -> 27594kB.
    Case {
        input: (Oltp, "32GB", Some(4), None, Hdd, 16, Linux, MidRam),
        want: &[
            "max_connections = 300",
            "shared_buffers = 8GB",
            "effective_cache_size = 24GB",
            "maintenance_work_mem = 2GB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 4",
            "effective_io_concurrency = 2",
            "work_mem = 27594kB",
            "huge_pages = try",
            "min_wal_size = 2GB",
            "max_wal_size = 8GB",
            "max_worker_processes = 4",
            "max_parallel_workers_per_gather = 2",
            "max_parallel_workers = 4",
            "max_parallel_maintenance_workers = 2",
        ],
    },
    // Windows: maintenance_work_mem 8GB -> 2GB cap -> 2GB - 1MB = 2047MB, no effective_io_concurrency;
    // W = 50,331,648 / ((40 + 16) * 3) / 2 = 149,796.6 -> 149796kB; dw: per gather = ceil(16/2) = 8.
    Case {
        input: (Dw, "64GB", Some(16), None, San, 17, Windows, MidRam),
        want: &[
            "max_connections = 40",
            "shared_buffers = 16GB",
            "effective_cache_size = 48GB",
            "maintenance_work_mem = 2047MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 500",
            "random_page_cost = 1.1",
            "work_mem = 149796kB",
            "huge_pages = try",
            "min_wal_size = 4GB",
            "max_wal_size = 16GB",
            "max_worker_processes = 16",
            "max_parallel_workers_per_gather = 8",
            "max_parallel_workers = 16",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // The classic commit keeps the Windows cap for PostgreSQL 18 too.
    Case {
        input: (Dw, "64GB", Some(16), None, San, 18, Windows, MidRam),
        want: &[
            "max_connections = 40",
            "shared_buffers = 16GB",
            "effective_cache_size = 48GB",
            "maintenance_work_mem = 2047MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 500",
            "random_page_cost = 1.1",
            "work_mem = 149796kB",
            "huge_pages = try",
            "min_wal_size = 4GB",
            "max_wal_size = 16GB",
            "max_worker_processes = 16",
            "max_parallel_workers_per_gather = 8",
            "max_parallel_workers = 16",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // macOS: no effective_io_concurrency. W = 7,864,320 / ((20 + 8) * 3) / 6 = 15,603.8 -> 15603kB;
    // wal_buffers = 3% of 512MB = 15,728kB, between 14MB and 16MB -> 16MB.
    Case {
        input: (Desktop, "8GB", None, None, Ssd, 14, Mac, MidRam),
        want: &[
            "max_connections = 20",
            "shared_buffers = 512MB",
            "effective_cache_size = 2GB",
            "maintenance_work_mem = 512MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "work_mem = 15603kB",
            "huge_pages = off",
            "min_wal_size = 100MB",
            "max_wal_size = 2GB",
            "wal_level = minimal",
            "max_wal_senders = 0",
        ],
    },
    // 2 CPUs: no parallel settings, 8 workers in work_mem: 3,145,728 / ((50 + 8) * 3) / 2 = 9,039.4.
    Case {
        input: (Mixed, "4GB", Some(2), Some(50), Ssd, 13, Linux, MidRam),
        want: &[
            "max_connections = 50",
            "shared_buffers = 1GB",
            "effective_cache_size = 3GB",
            "maintenance_work_mem = 256MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "effective_io_concurrency = 200",
            "work_mem = 9039kB",
            "huge_pages = off",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
        ],
    },
    // W = 786,432 / ((5000 + 4) * 3) = 52.4 -> the 64kB floor; wal_buffers 3% of 262,144 = 7,864.32 -> 7864kB.
    Case {
        input: (Web, "1GB", Some(4), Some(5000), Ssd, 15, Linux, MidRam),
        want: &[
            "max_connections = 5000",
            "shared_buffers = 256MB",
            "effective_cache_size = 768MB",
            "maintenance_work_mem = 64MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 7864kB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "effective_io_concurrency = 200",
            "work_mem = 64kB",
            "huge_pages = off",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
            "max_worker_processes = 4",
            "max_parallel_workers_per_gather = 2",
            "max_parallel_workers = 4",
            "max_parallel_maintenance_workers = 2",
        ],
    },
    // 16MB: sb 1,024 kB; wal_buffers 30 -> the 32kB minimum; W = 15,360 / 84 / 6 = 30.5 -> 64kB.
    Case {
        input: (Desktop, "16MB", None, None, Hdd, 12, Windows, MidRam),
        want: &[
            "max_connections = 20",
            "shared_buffers = 1MB",
            "effective_cache_size = 4MB",
            "maintenance_work_mem = 1MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 32kB",
            "default_statistics_target = 100",
            "random_page_cost = 4",
            "work_mem = 64kB",
            "huge_pages = off",
            "min_wal_size = 100MB",
            "max_wal_size = 2GB",
            "wal_level = minimal",
            "max_wal_senders = 0",
        ],
    },
    // 999GB = 1,047,527,424 kB: sb 261,881,856 = 255744MB (not whole GB);
    // W = 785,645,568 / ((1000 + 64) * 3) = 246,129.6 -> 246129kB.
    Case {
        input: (Oltp, "999GB", Some(64), Some(1000), Ssd, 11, Mac, MidRam),
        want: &[
            "max_connections = 1000",
            "shared_buffers = 255744MB",
            "effective_cache_size = 767232MB",
            "maintenance_work_mem = 2GB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "work_mem = 246129kB",
            "huge_pages = try",
            "min_wal_size = 2GB",
            "max_wal_size = 8GB",
            "max_worker_processes = 64",
            "max_parallel_workers_per_gather = 4",
            "max_parallel_workers = 64",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // PostgreSQL 10: no max_parallel_maintenance_workers (it exists from 11).
    Case {
        input: (Web, "2GB", Some(4), None, San, 10, Linux, MidRam),
        want: &[
            "max_connections = 200",
            "shared_buffers = 512MB",
            "effective_cache_size = 1536MB",
            "maintenance_work_mem = 128MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "effective_io_concurrency = 300",
            "work_mem = 2570kB",
            "huge_pages = off",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
            "max_worker_processes = 4",
            "max_parallel_workers_per_gather = 2",
            "max_parallel_workers = 4",
        ],
    },
    // 5 CPUs: ceil(5/2) = 3 workers per gather and for maintenance.
    Case {
        input: (Mixed, "6GB", Some(5), None, Hdd, 18, Linux, MidRam),
        want: &[
            "max_connections = 100",
            "shared_buffers = 1536MB",
            "effective_cache_size = 4608MB",
            "maintenance_work_mem = 384MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 4",
            "effective_io_concurrency = 2",
            "work_mem = 7489kB",
            "huge_pages = off",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
            "max_worker_processes = 5",
            "max_parallel_workers_per_gather = 3",
            "max_parallel_workers = 5",
            "max_parallel_maintenance_workers = 3",
        ],
    },
];

const MODERN: &[Case] = &[
    // huge_pages from shared_buffers (4GB >= 2GB: try); PostgreSQL 18 on Linux: io_method = io_uring.
    Case {
        input: (Web, "16GB", Some(8), None, Ssd, 18, Linux, MidRam),
        want: &[
            "max_connections = 200",
            "shared_buffers = 4GB",
            "effective_cache_size = 12GB",
            "maintenance_work_mem = 1GB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "effective_io_concurrency = 200",
            "work_mem = 20164kB",
            "huge_pages = try",
            "jit = off",
            "wal_compression = lz4",
            "io_method = io_uring",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
            "max_worker_processes = 8",
            "max_parallel_workers_per_gather = 4",
            "max_parallel_workers = 8",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // W = 201,326,592 / ((500 + 32) * 3) = 126,144.4 -> 126144; greater_ram: x 0.9 = 113,529.6 -> 113529kB;
    // RAM/16 = 16GB -> the 8GB cap, so autovacuum_work_mem 2GB; 32 CPUs: 5 autovacuum workers.
    Case {
        input: (
            Oltp,
            "256GB",
            Some(32),
            Some(500),
            Nvme,
            18,
            Linux,
            GreaterRam,
        ),
        want: &[
            "max_connections = 500",
            "shared_buffers = 64GB",
            "effective_cache_size = 192GB",
            "maintenance_work_mem = 8GB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "effective_io_concurrency = 1000",
            "work_mem = 113529kB",
            "huge_pages = try",
            "jit = off",
            "wal_compression = lz4",
            "autovacuum_max_workers = 5",
            "autovacuum_work_mem = 2GB",
            "io_method = io_uring",
            "min_wal_size = 2GB",
            "max_wal_size = 8GB",
            "max_worker_processes = 32",
            "max_parallel_workers_per_gather = 4",
            "max_parallel_workers = 32",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // dw larger than RAM on SSD: random_page_cost 4; dw: no jit; PostgreSQL 17: no io_method;
    // W = 50,331,648 / ((40 + 16) * 3) / 2 = 149,796.6 -> 149796kB; 16 CPUs: 4 autovacuum workers.
    Case {
        input: (Dw, "64GB", Some(16), None, Ssd, 17, Linux, MidRam),
        want: &[
            "max_connections = 40",
            "shared_buffers = 16GB",
            "effective_cache_size = 48GB",
            "maintenance_work_mem = 8GB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 500",
            "random_page_cost = 4",
            "effective_io_concurrency = 200",
            "work_mem = 149796kB",
            "huge_pages = try",
            "wal_compression = lz4",
            "autovacuum_max_workers = 4",
            "autovacuum_work_mem = 2GB",
            "min_wal_size = 4GB",
            "max_wal_size = 16GB",
            "max_worker_processes = 16",
            "max_parallel_workers_per_gather = 8",
            "max_parallel_workers = 16",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // less_ram: random_page_cost 1.1 and work_mem 149,796 x 1.3 = 194,734.8 -> 194734kB.
    Case {
        input: (Dw, "64GB", Some(16), None, Ssd, 17, Linux, LessRam),
        want: &[
            "max_connections = 40",
            "shared_buffers = 16GB",
            "effective_cache_size = 48GB",
            "maintenance_work_mem = 8GB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 500",
            "random_page_cost = 1.1",
            "effective_io_concurrency = 200",
            "work_mem = 194734kB",
            "huge_pages = try",
            "wal_compression = lz4",
            "autovacuum_max_workers = 4",
            "autovacuum_work_mem = 2GB",
            "min_wal_size = 4GB",
            "max_wal_size = 16GB",
            "max_worker_processes = 16",
            "max_parallel_workers_per_gather = 8",
            "max_parallel_workers = 16",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // macOS: huge_pages off, no effective_io_concurrency; desktop: no jit; hdd: random_page_cost 4.
    Case {
        input: (Desktop, "8GB", None, None, Hdd, 16, Mac, MidRam),
        want: &[
            "max_connections = 20",
            "shared_buffers = 512MB",
            "effective_cache_size = 2GB",
            "maintenance_work_mem = 512MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 4",
            "work_mem = 15603kB",
            "huge_pages = off",
            "wal_compression = lz4",
            "min_wal_size = 100MB",
            "max_wal_size = 2GB",
            "wal_level = minimal",
            "max_wal_senders = 0",
        ],
    },
    // PostgreSQL 13: wal_compression = on (pglz); 2 CPUs: no parallel or autovacuum settings.
    Case {
        input: (Mixed, "4GB", Some(2), Some(50), San, 13, Windows, MidRam),
        want: &[
            "max_connections = 50",
            "shared_buffers = 1GB",
            "effective_cache_size = 3GB",
            "maintenance_work_mem = 256MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "work_mem = 9039kB",
            "huge_pages = off",
            "jit = off",
            "wal_compression = on",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
        ],
    },
    // Windows, PostgreSQL 17: maintenance_work_mem 2047MB, so no autovacuum_work_mem;
    // W = 201,326,592 / ((200 + 64) * 3) = 254,200.2 -> 254200kB.
    Case {
        input: (Web, "256GB", Some(64), None, Ssd, 17, Windows, MidRam),
        want: &[
            "max_connections = 200",
            "shared_buffers = 64GB",
            "effective_cache_size = 192GB",
            "maintenance_work_mem = 2047MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "work_mem = 254200kB",
            "huge_pages = try",
            "jit = off",
            "wal_compression = lz4",
            "autovacuum_max_workers = 5",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
            "max_worker_processes = 64",
            "max_parallel_workers_per_gather = 4",
            "max_parallel_workers = 64",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // 4TB, Windows 17: W = 3,221,225,472 / ((20 + 4) * 3) / 2 = 22,369,621; x 1.3 = 29,080,507;
    // then the Windows cap 2GB - 1MB = 2047MB. less_ram: random_page_cost 1.1 even on hdd.
    Case {
        input: (Dw, "4TB", Some(4), Some(20), Hdd, 17, Windows, LessRam),
        want: &[
            "max_connections = 20",
            "shared_buffers = 1024GB",
            "effective_cache_size = 3072GB",
            "maintenance_work_mem = 2047MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 500",
            "random_page_cost = 1.1",
            "work_mem = 2047MB",
            "huge_pages = try",
            "wal_compression = lz4",
            "min_wal_size = 4GB",
            "max_wal_size = 16GB",
            "max_worker_processes = 4",
            "max_parallel_workers_per_gather = 2",
            "max_parallel_workers = 4",
            "max_parallel_maintenance_workers = 2",
        ],
    },
    // Windows, PostgreSQL 18: the 8GB cap without the 1MB cut; io_method = worker, io_workers 64/4 = 16.
    Case {
        input: (Web, "256GB", Some(64), None, Ssd, 18, Windows, MidRam),
        want: &[
            "max_connections = 200",
            "shared_buffers = 64GB",
            "effective_cache_size = 192GB",
            "maintenance_work_mem = 8GB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "work_mem = 254200kB",
            "huge_pages = try",
            "jit = off",
            "wal_compression = lz4",
            "autovacuum_max_workers = 5",
            "autovacuum_work_mem = 2GB",
            "io_method = worker",
            "io_workers = 16",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
            "max_worker_processes = 64",
            "max_parallel_workers_per_gather = 4",
            "max_parallel_workers = 64",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // W = 786,432 / ((1000 + 8) * 3) = 260.1 -> the 4MB floor; PostgreSQL 12: jit off, wal_compression on.
    Case {
        input: (Web, "1GB", None, Some(1000), Ssd, 12, Linux, MidRam),
        want: &[
            "max_connections = 1000",
            "shared_buffers = 256MB",
            "effective_cache_size = 768MB",
            "maintenance_work_mem = 64MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 7864kB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "effective_io_concurrency = 200",
            "work_mem = 4MB",
            "huge_pages = off",
            "jit = off",
            "wal_compression = on",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
        ],
    },
    // PostgreSQL 11: no jit (from 12); W = 1,179,648 / 912 = 1,293 x 0.9 = 1,163 -> the 4MB floor.
    Case {
        input: (Oltp, "1536MB", Some(4), None, Hdd, 11, Linux, GreaterRam),
        want: &[
            "max_connections = 300",
            "shared_buffers = 384MB",
            "effective_cache_size = 1152MB",
            "maintenance_work_mem = 96MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 11796kB",
            "default_statistics_target = 100",
            "random_page_cost = 4",
            "effective_io_concurrency = 2",
            "work_mem = 4MB",
            "huge_pages = off",
            "wal_compression = on",
            "min_wal_size = 2GB",
            "max_wal_size = 8GB",
            "max_worker_processes = 4",
            "max_parallel_workers_per_gather = 2",
            "max_parallel_workers = 4",
            "max_parallel_maintenance_workers = 2",
        ],
    },
    // W = 25,165,824 / ((40 + 200) * 3) / 2 = 17,476; x 0.9 = 15,728.4 -> 15728kB;
    // io_workers 200/4 = 50 -> at most 32; macOS: huge_pages off; dw: 100 workers per gather.
    Case {
        input: (Dw, "32GB", Some(200), None, Nvme, 18, Mac, GreaterRam),
        want: &[
            "max_connections = 40",
            "shared_buffers = 8GB",
            "effective_cache_size = 24GB",
            "maintenance_work_mem = 4GB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 500",
            "random_page_cost = 4",
            "work_mem = 15728kB",
            "huge_pages = off",
            "wal_compression = lz4",
            "autovacuum_max_workers = 5",
            "autovacuum_work_mem = 2GB",
            "io_method = worker",
            "io_workers = 32",
            "min_wal_size = 4GB",
            "max_wal_size = 16GB",
            "max_worker_processes = 200",
            "max_parallel_workers_per_gather = 100",
            "max_parallel_workers = 200",
            "max_parallel_maintenance_workers = 4",
        ],
    },
    // PostgreSQL 10: no max_parallel_maintenance_workers, no jit, wal_compression on.
    Case {
        input: (Web, "2GB", Some(4), None, San, 10, Linux, MidRam),
        want: &[
            "max_connections = 200",
            "shared_buffers = 512MB",
            "effective_cache_size = 1536MB",
            "maintenance_work_mem = 128MB",
            "checkpoint_completion_target = 0.9",
            "wal_buffers = 16MB",
            "default_statistics_target = 100",
            "random_page_cost = 1.1",
            "effective_io_concurrency = 300",
            "work_mem = 4MB",
            "huge_pages = off",
            "wal_compression = on",
            "min_wal_size = 1GB",
            "max_wal_size = 4GB",
            "max_worker_processes = 4",
            "max_parallel_workers_per_gather = 2",
            "max_parallel_workers = 4",
        ],
    },
];
