//! PostgreSQL settings from machine resources, with exactly pgtune's values.
//!
//! Memory is computed in kB (1 GB = 1,048,576 kB) and rounded down as pgtune does,
//! values are rendered as `NGB`, `NMB` or `NkB`, and the settings come in pgtune's order.
//! Two generations of pgtune's rules are offered ([`Algorithm`]), each pinned to one
//! commit of pgtune's source (<https://github.com/le0pard/pgtune>, the formulas in
//! `src/features/configuration/configurationSlice.js`, the order and rendering in
//! `src/common/components/configurationView/index.jsx`):
//!
//! | algorithm | upstream commit | date | formulas |
//! |---|---|---|---|
//! | [`Algorithm::Classic`] | `2f5122d714c721b6e2e078714805ff213cfef912` | 2025-09-26 | the 2025 release (PostgreSQL 10 to 18), unchanged since `e2c7f3997cdeedabf141eab3e57c2d37075afbae` (2025-05-05) |
//! | [`Algorithm::Modern`] | `7caef27c204d304623eda21f23e7d56c1ad78d36` | 2026-07-30 | last changed in `830d3bb36876013e9f56b87faa025b82f4f93e64` (2026-06-09) |
//!
//! Each matches its commit for every input that commit accepts, OS included
//! ([`Os`]); the unit tests hold a table of inputs with the values the commit's formulas
//! give. Beyond them: classic also takes `nvme` storage (its commit has no NVMe choice;
//! it gets the modern commit's NVMe values), and both take inputs pgtune's form refuses
//! but its formulas handle (RAM under 512 MB, fewer than 20 connections).
//!
//! ```
//! use cortex_dbtune::pgtune::{pgtune, DbType, PgtuneInput, Storage, parse_memory};
//!
//! let input = PgtuneInput {
//!     db_type: DbType::Web,
//!     total_memory_bytes: parse_memory("16GB")?,
//!     cpus: Some(8),
//!     connections: None,
//!     storage: Storage::Ssd,
//!     pg_version: 15,
//! };
//! let settings = pgtune(&input)?;
//! assert_eq!(settings[1].name, "shared_buffers");
//! assert_eq!(settings[1].value, "4GB");
//! # Ok::<(), cortex_dbtune::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const KB: u64 = 1024;
const MB_KB: u64 = 1024;
const GB_KB: u64 = 1024 * 1024;

/// The smallest amount of memory accepted: pgtune's form takes whole MB or GB, so 1 MB.
pub const MIN_MEMORY_BYTES: u64 = 1024 * 1024;
/// The largest amount of memory [`Algorithm::Classic`] accepts: its pgtune caps numbers
/// at 999,999 and its largest unit is GB.
pub const MAX_MEMORY_BYTES: u64 = 999_999 * 1024 * 1024 * 1024;
/// The largest amount of memory [`Algorithm::Modern`] accepts: its pgtune caps numbers
/// at 999,999 and has a TB unit.
pub const MAX_MEMORY_BYTES_MODERN: u64 = 999_999 * 1024 * 1024 * 1024 * 1024;
/// The lowest PostgreSQL major version pgtune (2025) offers.
pub const MIN_PG_VERSION: u32 = 10;
/// The highest PostgreSQL major version pgtune (2025) offers.
pub const MAX_PG_VERSION: u32 = 18;
/// The most connections or CPUs an input may give: PostgreSQL's limit on
/// `max_connections` and `max_worker_processes` (`MAX_BACKENDS`, 2^18 - 1). A larger
/// value would be written out as a setting the server refuses at start.
pub const MAX_BACKENDS: u32 = 262_143;

/// What the database mainly serves; picks pgtune's ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DbType {
    /// Web application: many short queries.
    Web,
    /// Online transaction processing.
    Oltp,
    /// Data warehouse: few large analytical queries.
    Dw,
    /// A developer's desktop: PostgreSQL shares the machine.
    Desktop,
    /// Mixed workload.
    Mixed,
}

impl DbType {
    /// The lowercase name, as pgtune and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DbType::Web => "web",
            DbType::Oltp => "oltp",
            DbType::Dw => "dw",
            DbType::Desktop => "desktop",
            DbType::Mixed => "mixed",
        }
    }
}

impl fmt::Display for DbType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DbType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "web" => Ok(DbType::Web),
            "oltp" => Ok(DbType::Oltp),
            "dw" => Ok(DbType::Dw),
            "desktop" => Ok(DbType::Desktop),
            "mixed" => Ok(DbType::Mixed),
            _ => Err(Error::InvalidChoice {
                what: "database type",
                value: s.to_string(),
                expected: "web, oltp, dw, desktop, mixed",
            }),
        }
    }
}

/// The data disks' kind; picks `random_page_cost` and `effective_io_concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Storage {
    /// Solid-state drives.
    Ssd,
    /// Spinning disks.
    Hdd,
    /// A storage area network.
    San,
    /// NVMe solid-state drives: `random_page_cost` as SSD and
    /// `effective_io_concurrency` 1000, as the modern pgtune commit has them (the
    /// classic commit has no NVMe choice and borrows these values).
    Nvme,
}

impl Storage {
    /// The lowercase name, as pgtune and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Ssd => "ssd",
            Storage::Hdd => "hdd",
            Storage::San => "san",
            Storage::Nvme => "nvme",
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Storage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ssd" => Ok(Storage::Ssd),
            "hdd" => Ok(Storage::Hdd),
            "san" => Ok(Storage::San),
            "nvme" => Ok(Storage::Nvme),
            _ => Err(Error::InvalidChoice {
                what: "storage",
                value: s.to_string(),
                expected: "ssd, hdd, san, nvme",
            }),
        }
    }
}

/// pgtune's inputs; the OS, the algorithm and the data size are [`PgtuneOptions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgtuneInput {
    /// The workload.
    pub db_type: DbType,
    /// Total RAM in bytes; [`parse_memory`] reads `"16GB"`, `"512MB"`, `"1TB"`.
    pub total_memory_bytes: u64,
    /// CPU count; without it (or under 4) the parallel settings are left out.
    pub cpus: Option<u32>,
    /// `max_connections`; without it pgtune's per-type default applies.
    pub connections: Option<u32>,
    /// The data disks' kind.
    pub storage: Storage,
    /// PostgreSQL major version ([`MIN_PG_VERSION`]..=[`MAX_PG_VERSION`]).
    pub pg_version: u32,
}

/// The operating system PostgreSQL runs on (pgtune's "OS Type").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Os {
    /// Linux: every setting applies.
    #[default]
    Linux,
    /// Windows: no `effective_io_concurrency` (no `posix_fadvise`), and
    /// `maintenance_work_mem` capped 1 MB under 2 GB (2 GB is refused there; modern:
    /// up to PostgreSQL 17, where also `work_mem` is capped so).
    Windows,
    /// macOS: no `effective_io_concurrency` (no `posix_fadvise`); modern: no huge pages.
    Mac,
}

impl Os {
    /// The lowercase name, as pgtune and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
            Os::Mac => "mac",
        }
    }
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Os {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "linux" => Ok(Os::Linux),
            "windows" => Ok(Os::Windows),
            "mac" => Ok(Os::Mac),
            _ => Err(Error::InvalidChoice {
                what: "OS",
                value: s.to_string(),
                expected: "linux, windows, mac",
            }),
        }
    }
}

/// Which generation of pgtune's rules to apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Algorithm {
    /// pgtune's 2025 release, commit `2f5122d714c721b6e2e078714805ff213cfef912`
    /// (2025-09-26), the default; its output never changes.
    #[default]
    Classic,
    /// pgtune's newest rules, commit `7caef27c204d304623eda21f23e7d56c1ad78d36`
    /// (2026-07-30): `work_mem` at least 4 MB and scaled by [`DbSize`],
    /// `maintenance_work_mem` capped at 8 GB, `huge_pages` from `shared_buffers`, a
    /// `random_page_cost` of 4 for data warehouses larger than RAM, and `jit`,
    /// `wal_compression`, `autovacuum_max_workers`, `autovacuum_work_mem`, and
    /// (PostgreSQL 18) `io_method` and `io_workers`.
    Modern,
}

impl Algorithm {
    /// The lowercase name, as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Classic => "classic",
            Algorithm::Modern => "modern",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The database's total size against RAM (modern pgtune's "Total Data Size"); only
/// [`Algorithm::Modern`] takes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DbSize {
    /// Smaller than RAM: every read is served from memory, so `random_page_cost` is
    /// 1.1 whatever the storage, and `work_mem` is raised by 30%.
    LessRam,
    /// One to three times RAM (pgtune's default).
    #[default]
    MidRam,
    /// More than three times RAM: `work_mem` is lowered by 10% to leave the page cache
    /// room.
    GreaterRam,
}

impl DbSize {
    /// The name as pgtune spells it (`less_ram`, `mid_ram`, `greater_ram`).
    pub fn as_str(self) -> &'static str {
        match self {
            DbSize::LessRam => "less_ram",
            DbSize::MidRam => "mid_ram",
            DbSize::GreaterRam => "greater_ram",
        }
    }
}

impl fmt::Display for DbSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DbSize {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "less_ram" => Ok(DbSize::LessRam),
            "mid_ram" => Ok(DbSize::MidRam),
            "greater_ram" => Ok(DbSize::GreaterRam),
            _ => Err(Error::InvalidChoice {
                what: "database size",
                value: s.to_string(),
                expected: "less_ram, mid_ram, greater_ram",
            }),
        }
    }
}

/// The inputs beside [`PgtuneInput`]: the OS, the algorithm and (modern only) the data
/// size. The default (Linux, [`Algorithm::Classic`], [`DbSize::MidRam`]) gives exactly
/// [`pgtune`]'s output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PgtuneOptions {
    /// The operating system.
    pub os: Os,
    /// The rules' generation.
    pub algorithm: Algorithm,
    /// The database's size against RAM; anything but [`DbSize::MidRam`] needs
    /// [`Algorithm::Modern`] (the classic commit has no such input).
    #[serde(default)]
    pub db_size: DbSize,
}

impl PgtuneOptions {
    /// Options for `os` and `algorithm`, with the default data size.
    pub fn new(os: Os, algorithm: Algorithm) -> Self {
        PgtuneOptions {
            os,
            algorithm,
            db_size: DbSize::default(),
        }
    }

    /// These options with the data size `db_size`.
    pub fn with_db_size(mut self, db_size: DbSize) -> Self {
        self.db_size = db_size;
        self
    }
}

/// One recommended setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The `postgresql.conf` name.
    pub name: &'static str,
    /// The value exactly as pgtune renders it (`"4GB"`, `"64kB"`, `"1.1"`, `"200"`).
    pub value: String,
    /// Why this value: the rule that produced it.
    pub reason: String,
}

/// Parses a memory size: an integer and a unit `kB`, `MB`, `GB` or `TB` (case-insensitive,
/// binary multiples as PostgreSQL uses them), e.g. `"16GB"`, `"512MB"`, `"1TB"`.
pub fn parse_memory(text: &str) -> Result<u64> {
    let invalid = || Error::InvalidMemory {
        value: text.to_string(),
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| invalid())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "kb" => KB,
        "mb" => KB * KB,
        "gb" => KB * KB * KB,
        "tb" => KB * KB * KB * KB,
        _ => return Err(invalid()),
    };
    n.checked_mul(mult).ok_or_else(invalid)
}

/// Renders a kB amount as pgtune does: `NGB` when it divides evenly into GB, else `NMB`
/// when it divides into MB, else `NkB`.
pub fn format_kb(kb: u64) -> String {
    if kb.is_multiple_of(GB_KB) {
        format!("{}GB", kb / GB_KB)
    } else if kb.is_multiple_of(MB_KB) {
        format!("{}MB", kb / MB_KB)
    } else {
        format!("{kb}kB")
    }
}

fn validate(input: &PgtuneInput, opts: &PgtuneOptions) -> Result<u64> {
    let bytes = input.total_memory_bytes;
    let modern = opts.algorithm == Algorithm::Modern;
    if bytes < MIN_MEMORY_BYTES {
        return Err(Error::MemoryTooSmall {
            bytes,
            min_bytes: MIN_MEMORY_BYTES,
        });
    }
    let (max, max_text) = if modern {
        (MAX_MEMORY_BYTES_MODERN, "999999TB")
    } else {
        (MAX_MEMORY_BYTES, "999999GB")
    };
    if bytes > max {
        return Err(Error::InvalidOption {
            name: "total_memory_bytes",
            reason: format!(
                "{bytes} bytes is above the {} algorithm's maximum of {max_text}",
                opts.algorithm
            ),
        });
    }
    if !bytes.is_multiple_of(KB) {
        return Err(Error::MemoryNotWholeKb { bytes });
    }
    if input.cpus == Some(0) {
        return Err(Error::InvalidCpus { cpus: 0 });
    }
    if input.connections == Some(0) {
        return Err(Error::InvalidConnections { connections: 0 });
    }
    for (name, n) in [("cpus", input.cpus), ("connections", input.connections)] {
        if let Some(n) = n.filter(|n| *n > MAX_BACKENDS) {
            return Err(Error::InvalidOption {
                name,
                reason: format!("{n} is above PostgreSQL's limit of {MAX_BACKENDS}"),
            });
        }
    }
    if !(MIN_PG_VERSION..=MAX_PG_VERSION).contains(&input.pg_version) {
        return Err(Error::UnsupportedVersion {
            version: input.pg_version,
            min: MIN_PG_VERSION,
            max: MAX_PG_VERSION,
        });
    }
    if !modern && opts.db_size != DbSize::MidRam {
        return Err(Error::InvalidOption {
            name: "db_size",
            reason: format!(
                "{} needs the modern algorithm: the classic pgtune has no data size input",
                opts.db_size
            ),
        });
    }
    Ok(bytes / KB)
}

fn setting(name: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Setting {
    Setting {
        name,
        value: value.into(),
        reason: reason.into(),
    }
}

/// Computes pgtune's settings for `input` on Linux with [`Algorithm::Classic`], in
/// pgtune's output order.
///
/// Errors (each naming the value): memory under 1 MB or not a whole number of kB, zero
/// CPUs, zero connections, CPUs or connections above [`MAX_BACKENDS`], a PostgreSQL
/// version outside 10..=18.
pub fn pgtune(input: &PgtuneInput) -> Result<Vec<Setting>> {
    pgtune_with(input, &PgtuneOptions::default())
}

/// Computes the settings for `input` on `opts.os` with `opts.algorithm`; the errors
/// are [`pgtune`]'s, plus memory above the algorithm's maximum and a data size other
/// than [`DbSize::MidRam`] with [`Algorithm::Classic`].
///
/// ```
/// use cortex_dbtune::pgtune::{pgtune_with, Algorithm, DbType, Os, PgtuneInput, PgtuneOptions, Storage};
///
/// let input = PgtuneInput {
///     db_type: DbType::Web,
///     total_memory_bytes: 1 << 30,
///     cpus: None,
///     connections: None,
///     storage: Storage::Nvme,
///     pg_version: 18,
/// };
/// let s = pgtune_with(&input, &PgtuneOptions::new(Os::Linux, Algorithm::Modern))?;
/// let get = |n: &str| s.iter().find(|s| s.name == n).map(|s| s.value.as_str());
/// assert_eq!(get("work_mem"), Some("4MB")); // the 4 MB floor
/// assert_eq!(get("io_method"), Some("io_uring"));
/// # Ok::<(), cortex_dbtune::Error>(())
/// ```
pub fn pgtune_with(input: &PgtuneInput, opts: &PgtuneOptions) -> Result<Vec<Setting>> {
    use DbType::*;
    let ram_kb = validate(input, opts)?;
    let modern = opts.algorithm == Algorithm::Modern;
    let t = input.db_type;
    let v = input.pg_version;
    // Modern pgtune lifts its Windows limits from PostgreSQL 18 (64-bit sizes there).
    let windows_2gb = opts.os == Os::Windows && (!modern || v <= 17);
    let mut out = Vec::with_capacity(24);

    let max_connections = input.connections.unwrap_or(match t {
        Web => 200,
        Oltp => 300,
        Dw => 40,
        Desktop => 20,
        Mixed => 100,
    });
    out.push(setting(
        "max_connections",
        max_connections.to_string(),
        if input.connections.is_some() {
            "as given".to_string()
        } else {
            format!("pgtune's default for a {t} workload")
        },
    ));

    // Desktop leaves most memory to the other programs on the machine. (pgtune's
    // Windows limit of 512MB applies before PostgreSQL 10 only, below MIN_PG_VERSION.)
    let shared_buffers = if t == Desktop {
        ram_kb / 16
    } else {
        ram_kb / 4
    };
    out.push(setting(
        "shared_buffers",
        format_kb(shared_buffers),
        if t == Desktop {
            "1/16 of RAM: a desktop shares memory with other programs"
        } else {
            "1/4 of RAM: the rest is left to the OS page cache"
        },
    ));

    let effective_cache_size = if t == Desktop {
        ram_kb / 4
    } else {
        ram_kb * 3 / 4
    };
    out.push(setting(
        "effective_cache_size",
        format_kb(effective_cache_size),
        if t == Desktop {
            "1/4 of RAM: the memory the planner may assume caches data"
        } else {
            "3/4 of RAM: shared buffers plus the OS page cache the planner may assume"
        },
    ));

    // The cap; a value reaching it becomes the cap, on Windows (which refuses 2GB) 1MB
    // under it.
    let mwm_cap = if modern && !windows_2gb {
        8 * GB_KB
    } else {
        2 * GB_KB
    };
    let mut mwm = if t == Dw { ram_kb / 8 } else { ram_kb / 16 };
    if mwm >= mwm_cap {
        mwm = if windows_2gb {
            mwm_cap - MB_KB
        } else {
            mwm_cap
        };
    }
    out.push(setting(
        "maintenance_work_mem",
        format_kb(mwm),
        format!(
            "RAM/{} capped at {}: faster VACUUM and CREATE INDEX",
            if t == Dw { 8 } else { 16 },
            if windows_2gb {
                "2GB - 1MB (Windows refuses 2GB)"
            } else if modern {
                "8GB"
            } else {
                "2GB"
            }
        ),
    ));

    out.push(setting(
        "checkpoint_completion_target",
        "0.9",
        "spread checkpoint writes over 90% of the interval",
    ));

    // 3% of shared_buffers up to 16MB; near 16MB rounds up; at least 32kB.
    let max_wal = 16 * MB_KB;
    let mut wal_buffers = (3 * shared_buffers / 100).min(max_wal);
    if wal_buffers > 14 * MB_KB && wal_buffers < max_wal {
        wal_buffers = max_wal;
    }
    wal_buffers = wal_buffers.max(32);
    out.push(setting(
        "wal_buffers",
        format_kb(wal_buffers),
        "3% of shared_buffers, capped at 16MB (PostgreSQL's auto-tuning rule), at least 32kB",
    ));

    out.push(setting(
        "default_statistics_target",
        if t == Dw { "500" } else { "100" },
        if t == Dw {
            "finer statistics for analytical queries"
        } else {
            "PostgreSQL's default"
        },
    ));

    let (random_page_cost, why) = if modern && opts.db_size == DbSize::LessRam {
        (
            "1.1",
            "the data fits in RAM: reads come from memory, not the disk",
        )
    } else if input.storage == Storage::Hdd {
        (
            "4",
            "random reads cost 4x sequential ones on spinning disks",
        )
    } else if modern && t == Dw {
        (
            "4",
            "PostgreSQL's default: a lower cost makes the planner pick index scans for \
             large warehouse reads, slower than sequential scans",
        )
    } else {
        (
            "1.1",
            "random reads cost about as much as sequential ones on SSD/SAN/NVMe",
        )
    };
    out.push(setting("random_page_cost", random_page_cost, why));

    // Only where posix_fadvise exists: pgtune writes it for Linux alone.
    if opts.os == Os::Linux {
        out.push(setting(
            "effective_io_concurrency",
            match input.storage {
                Storage::Hdd => "2",
                Storage::Ssd => "200",
                Storage::San => "300",
                Storage::Nvme => "1000",
            },
            format!(
                "concurrent I/O requests {} storage handles well",
                input.storage
            ),
        ));
    }

    let cpus = input.cpus.filter(|&c| c >= 4);
    let workers = cpus.unwrap_or(8);
    // Real division as in pgtune (JavaScript numbers); every operand is an integer
    // below 2^53, so f64 gives the same result, and so do the products with 1.3 and
    // 0.9 below (one IEEE multiplication each, as in JavaScript).
    let w = (ram_kb - shared_buffers) as f64
        / ((u64::from(max_connections) + u64::from(workers)) * 3) as f64;
    let (divisor, work_mem) = match t {
        Web | Oltp => (1, w.floor()),
        Dw | Mixed => (2, (w / 2.0).floor()),
        Desktop => (6, (w / 6.0).floor()),
    };
    let (work_mem, size_note) = match (modern, opts.db_size) {
        (true, DbSize::LessRam) => ((work_mem * 1.3).floor(), " x 1.3 (data fits in RAM)"),
        (true, DbSize::GreaterRam) => ((work_mem * 0.9).floor(), " x 0.9 (data > 3x RAM)"),
        _ => (work_mem, ""),
    };
    let floor = if modern { 4 * MB_KB } else { 64 };
    let mut work_mem = (work_mem as u64).max(floor);
    let win_cap = modern && windows_2gb;
    if win_cap {
        work_mem = work_mem.min(2 * GB_KB - MB_KB);
    }
    out.push(setting(
        "work_mem",
        format_kb(work_mem),
        format!(
            "(RAM - shared_buffers) / ((max_connections + {workers} workers) x 3){}{size_note}, \
             at least {}{}",
            if divisor > 1 {
                format!(" / {divisor}")
            } else {
                String::new()
            },
            format_kb(floor),
            if win_cap {
                ", at most 2GB - 1MB (Windows)"
            } else {
                ""
            }
        ),
    ));

    // Classic: by RAM; modern: by shared_buffers, never on macOS (no huge pages there).
    let (huge, why) = if !modern {
        if ram_kb >= 32 * GB_KB {
            (true, "RAM >= 32GB: huge pages cut page-table overhead")
        } else {
            (false, "RAM < 32GB: huge pages bring little")
        }
    } else if opts.os == Os::Mac {
        (false, "macOS: PostgreSQL has no huge pages there")
    } else if shared_buffers >= 2 * GB_KB {
        (
            true,
            "shared_buffers >= 2GB: huge pages cut page-table overhead",
        )
    } else {
        (false, "shared_buffers < 2GB: huge pages bring little")
    };
    out.push(setting("huge_pages", if huge { "try" } else { "off" }, why));

    if modern {
        modern_settings(input, opts, mwm, &mut out);
    }

    let (min_wal, max_wal) = match t {
        Web | Mixed => (GB_KB, 4 * GB_KB),
        Oltp => (2 * GB_KB, 8 * GB_KB),
        Dw => (4 * GB_KB, 16 * GB_KB),
        Desktop => (100 * MB_KB, 2 * GB_KB),
    };
    out.push(setting(
        "min_wal_size",
        format_kb(min_wal),
        format!("WAL kept for a {t} write volume"),
    ));
    out.push(setting(
        "max_wal_size",
        format_kb(max_wal),
        format!("fewer forced checkpoints for a {t} write volume"),
    ));

    if let Some(c) = cpus {
        let half = c.div_ceil(2);
        let per_gather = if t == Dw { half } else { half.min(4) };
        out.push(setting(
            "max_worker_processes",
            c.to_string(),
            "one background worker per CPU",
        ));
        out.push(setting(
            "max_parallel_workers_per_gather",
            per_gather.to_string(),
            if t == Dw {
                "half the CPUs per query: analytical queries gain from parallelism"
            } else {
                "half the CPUs, at most 4: more workers bring little to short queries"
            },
        ));
        out.push(setting(
            "max_parallel_workers",
            c.to_string(),
            "one parallel worker per CPU",
        ));
        // The setting exists from PostgreSQL 11; pgtune leaves it out for 10.
        if v >= 11 {
            out.push(setting(
                "max_parallel_maintenance_workers",
                half.min(4).to_string(),
                "half the CPUs, at most 4, for parallel index builds",
            ));
        }
    }

    if t == Desktop {
        out.push(setting(
            "wal_level",
            "minimal",
            "a desktop needs no replication or archiving",
        ));
        out.push(setting(
            "max_wal_senders",
            "0",
            "must be 0 when wal_level = minimal",
        ));
    }
    Ok(out)
}

/// The `io_method` modern pgtune picks for PostgreSQL 18 and later: `io_uring` on
/// Linux (needs a server built with liburing: see [`pgtune_warnings_with`]), `worker`
/// elsewhere.
fn io_method(input: &PgtuneInput, os: Os) -> Option<&'static str> {
    match (input.pg_version >= 18, os) {
        (false, _) => None,
        (true, Os::Linux) => Some("io_uring"),
        (true, _) => Some("worker"),
    }
}

/// The settings [`Algorithm::Modern`] writes between `huge_pages` and `min_wal_size`,
/// each only where its pgtune commit writes it; `mwm` is `maintenance_work_mem` in kB.
fn modern_settings(input: &PgtuneInput, opts: &PgtuneOptions, mwm: u64, out: &mut Vec<Setting>) {
    use DbType::*;
    let t = input.db_type;
    let v = input.pg_version;
    // JIT (on by default from PostgreSQL 12) costs short queries planning time and CPU
    // spikes; dw and desktop keep the server's default.
    if v >= 12 && matches!(t, Web | Oltp | Mixed) {
        out.push(setting(
            "jit",
            "off",
            "short queries pay JIT compilation time without gaining from it",
        ));
    }
    if v >= 15 {
        out.push(setting(
            "wal_compression",
            "lz4",
            "compressed full-page images with lz4 (PostgreSQL 15+): less WAL for less CPU \
             than pglz; needs a server built with lz4",
        ));
    } else {
        out.push(setting(
            "wal_compression",
            "on",
            "compressed full-page images (pglz): less WAL for a little CPU",
        ));
    }
    // PostgreSQL's default is 3; only larger machines get more.
    let av_workers = match input.cpus {
        Some(c) if c >= 32 => Some(5),
        Some(c) if c >= 16 => Some(4),
        _ => None,
    };
    if let Some(n) = av_workers {
        out.push(setting(
            "autovacuum_max_workers",
            n.to_string(),
            "more CPUs: more tables vacuumed at once (4 from 16 CPUs, 5 from 32)",
        ));
    }
    // Each autovacuum worker would otherwise take maintenance_work_mem (up to 8GB).
    let threshold = 2 * GB_KB;
    if mwm >= threshold {
        let windows_2gb = opts.os == Os::Windows && v <= 17;
        let value = if windows_2gb {
            threshold - MB_KB
        } else {
            threshold
        };
        out.push(setting(
            "autovacuum_work_mem",
            format_kb(value),
            "maintenance_work_mem >= 2GB: each autovacuum worker capped at 2GB",
        ));
    }
    let method = io_method(input, opts.os);
    if let Some(m) = method {
        out.push(setting(
            "io_method",
            m,
            if m == "io_uring" {
                "asynchronous I/O through io_uring (PostgreSQL 18 on Linux); needs a server \
                 built with liburing"
            } else {
                "asynchronous I/O through I/O worker processes (PostgreSQL 18; no io_uring \
                 off Linux)"
            },
        ));
    }
    // Only for io_method = worker, and only above PostgreSQL's default of 3.
    if let (Some("worker"), Some(c)) = (method, input.cpus) {
        let n = (c / 4).clamp(3, 32);
        if n > 3 {
            out.push(setting(
                "io_workers",
                n.to_string(),
                "a quarter of the CPUs, at most 32, for io_method = worker",
            ));
        }
    }
}

/// pgtune's warnings for `input` with [`Algorithm::Classic`]: RAM under 256 MB or over
/// 100 GB.
pub fn pgtune_warnings(input: &PgtuneInput) -> Vec<String> {
    pgtune_warnings_with(input, &PgtuneOptions::default())
}

/// pgtune's warnings for `input` with `opts`: RAM under 256 MB or over 100 GB, and for
/// [`Algorithm::Modern`] also the build options `wal_compression = lz4` and
/// `io_method = io_uring` need, and that a data warehouse larger than RAM on fast
/// storage keeps `random_page_cost` at PostgreSQL's default.
pub fn pgtune_warnings_with(input: &PgtuneInput, opts: &PgtuneOptions) -> Vec<String> {
    let b = input.total_memory_bytes;
    let mut out = Vec::new();
    if b < 256 * 1024 * 1024 {
        out.push("this tool is not optimal for low memory systems (under 256MB)".to_string());
    } else if b > 100 * 1024 * 1024 * 1024 {
        out.push("this tool is not optimal for very high memory systems (over 100GB)".to_string());
    }
    if opts.algorithm != Algorithm::Modern {
        return out;
    }
    if input.pg_version >= 15 {
        out.push(
            "wal_compression = lz4 requires PostgreSQL to be compiled with --with-lz4".to_string(),
        );
    }
    if io_method(input, opts.os) == Some("io_uring") {
        out.push(
            "io_method = io_uring requires PostgreSQL to be compiled with --with-liburing"
                .to_string(),
        );
    }
    if input.db_type == DbType::Dw
        && input.storage != Storage::Hdd
        && opts.db_size != DbSize::LessRam
    {
        let drive = match input.storage {
            Storage::Ssd => "SSDs",
            Storage::Nvme => "NVMe drives",
            _ => "SAN storage",
        };
        out.push(format!(
            "cost parameters for data warehouses on {drive} are left at defaults to avoid \
             catastrophic index scan selections; monitor query planner behavior and adjust \
             random_page_cost if necessary"
        ));
    }
    out
}

/// pgtune's `postgresql.conf` lines: `name = value`, one per setting, in order.
pub fn to_conf(settings: &[Setting]) -> String {
    settings
        .iter()
        .map(|s| format!("{} = {}\n", s.name, s.value))
        .collect()
}

/// Every setting name [`pgtune_with`] can write: [`to_alter_system`] writes no other.
pub const SETTING_NAMES: &[&str] = &[
    "max_connections",
    "shared_buffers",
    "effective_cache_size",
    "maintenance_work_mem",
    "checkpoint_completion_target",
    "wal_buffers",
    "default_statistics_target",
    "random_page_cost",
    "effective_io_concurrency",
    "work_mem",
    "huge_pages",
    "min_wal_size",
    "max_wal_size",
    "max_worker_processes",
    "max_parallel_workers_per_gather",
    "max_parallel_workers",
    "max_parallel_maintenance_workers",
    "wal_level",
    "max_wal_senders",
    "jit",
    "wal_compression",
    "autovacuum_max_workers",
    "autovacuum_work_mem",
    "io_method",
    "io_workers",
];

/// The input lines pgtune prints above its settings, without the comment marker:
/// `DB Version: 15`, `OS Type: linux`, `DB Type: web`, `Total Memory (RAM): 16 GB`,
/// `CPUs num: 8` and `Connections num: 200` (each only when given), `Data Storage: ssd`
/// (with [`Algorithm::Modern`], a whole number of TB is written `2 TB`, as its form has
/// that unit).
pub fn header_lines(input: &PgtuneInput, opts: &PgtuneOptions) -> Vec<String> {
    let b = input.total_memory_bytes;
    // Modern pgtune has a TB unit; classic's largest is GB.
    let ram = if opts.algorithm == Algorithm::Modern && b.is_multiple_of(KB * KB * KB * KB) {
        format!("{} TB", b / (KB * KB * KB * KB))
    } else if b.is_multiple_of(KB * KB * KB) {
        format!("{} GB", b / (KB * KB * KB))
    } else if b.is_multiple_of(KB * KB) {
        format!("{} MB", b / (KB * KB))
    } else {
        format!("{} kB", b / KB)
    };
    let mut out = vec![
        format!("DB Version: {}", input.pg_version),
        format!("OS Type: {}", opts.os),
        format!("DB Type: {}", input.db_type),
        format!("Total Memory (RAM): {ram}"),
    ];
    if let Some(c) = input.cpus {
        out.push(format!("CPUs num: {c}"));
    }
    if let Some(c) = input.connections {
        out.push(format!("Connections num: {c}"));
    }
    out.push(format!("Data Storage: {}", input.storage));
    out
}

/// `ALTER SYSTEM SET name = 'value';` lines, one per setting, in order.
///
/// The statement is built from checked parts only: the name must be one of
/// [`SETTING_NAMES`] (so a plain lowercase identifier), and the value is written as a
/// string literal with `'` doubled; a value holding a control character is refused.
///
/// ```
/// use cortex_dbtune::pgtune::{to_alter_system, Setting};
///
/// let s = [Setting { name: "work_mem", value: "4MB".into(), reason: String::new() }];
/// assert_eq!(to_alter_system(&s)?, "ALTER SYSTEM SET work_mem = '4MB';\n");
/// # Ok::<(), cortex_dbtune::Error>(())
/// ```
pub fn to_alter_system(settings: &[Setting]) -> Result<String> {
    let mut out = String::new();
    for s in settings {
        if !SETTING_NAMES.contains(&s.name) {
            return Err(Error::InvalidOption {
                name: "setting",
                reason: format!("{:?} is not a setting pgtune writes", s.name),
            });
        }
        if s.value.chars().any(char::is_control) {
            return Err(Error::InvalidOption {
                name: "setting",
                reason: format!(
                    "the value of {} ({:?}) holds a control character",
                    s.name, s.value
                ),
            });
        }
        out.push_str(&format!(
            "ALTER SYSTEM SET {} = '{}';\n",
            s.name,
            s.value.replace('\'', "''")
        ));
    }
    Ok(out)
}

/// The settings as a JSON object of name to value string, for programmatic use
/// (`serde_json::Map` sorts keys; [`to_json`] keeps pgtune's order).
pub fn to_json_value(settings: &[Setting]) -> serde_json::Value {
    serde_json::Value::Object(
        settings
            .iter()
            .map(|s| {
                (
                    s.name.to_string(),
                    serde_json::Value::from(s.value.as_str()),
                )
            })
            .collect(),
    )
}

/// A JSON object of setting name to value string, keys in pgtune's order (written by
/// hand because `serde_json::Map` sorts its keys without the `preserve_order` feature).
pub fn to_json(settings: &[Setting]) -> String {
    let fields: Vec<String> = settings
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                serde_json::Value::from(s.name),
                serde_json::Value::from(s.value.as_str())
            )
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        db_type: DbType,
        ram: &str,
        cpus: Option<u32>,
        connections: Option<u32>,
        storage: Storage,
        pg_version: u32,
    ) -> PgtuneInput {
        PgtuneInput {
            db_type,
            total_memory_bytes: parse_memory(ram).unwrap(),
            cpus,
            connections,
            storage,
            pg_version,
        }
    }

    fn pairs(i: &PgtuneInput) -> Vec<(&'static str, String)> {
        pgtune(i)
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.value))
            .collect()
    }

    fn expect(i: PgtuneInput, want: &[(&str, &str)]) {
        let got = pairs(&i);
        let got: Vec<(&str, &str)> = got.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(got, want, "input {i:?}");
    }

    // Every expected value below was computed by hand from the classic formulas (pgtune
    // 2f5122d7, which the workspace's pgtune spec writes down);
    // the arithmetic is in the comments so a reviewer can re-check it.

    #[test]
    fn web_16gb_8cpus_ssd_pg15() {
        // RAM = 16,777,216 kB; sb = 4,194,304 (4GB); ecs = 12,582,912 (12GB);
        // mwm = RAM/16 = 1,048,576 (1GB); wal = 3% sb = 125,829 -> cap 16MB;
        // work_mem = 12,582,912 / ((200 + 8) * 3) = 20164.92 -> 20164kB.
        expect(
            input(DbType::Web, "16GB", Some(8), None, Storage::Ssd, 15),
            &[
                ("max_connections", "200"),
                ("shared_buffers", "4GB"),
                ("effective_cache_size", "12GB"),
                ("maintenance_work_mem", "1GB"),
                ("checkpoint_completion_target", "0.9"),
                ("wal_buffers", "16MB"),
                ("default_statistics_target", "100"),
                ("random_page_cost", "1.1"),
                ("effective_io_concurrency", "200"),
                ("work_mem", "20164kB"),
                ("huge_pages", "off"),
                ("min_wal_size", "1GB"),
                ("max_wal_size", "4GB"),
                ("max_worker_processes", "8"),
                ("max_parallel_workers_per_gather", "4"),
                ("max_parallel_workers", "8"),
                ("max_parallel_maintenance_workers", "4"),
            ],
        );
    }

    #[test]
    fn oltp_32gb_4cpus_hdd_pg16_boundaries() {
        // 32GB is the huge_pages boundary (>=), 4 CPUs the parallel boundary, and
        // RAM/16 = 2,097,152 kB is exactly the 2GB cap.
        // work_mem = (33,554,432 - 8,388,608) / ((300 + 4) * 3) = 25,165,824 / 912
        //          = 27594.1 -> 27594kB; per gather = ceil(4/2) = 2.
        expect(
            input(DbType::Oltp, "32GB", Some(4), None, Storage::Hdd, 16),
            &[
                ("max_connections", "300"),
                ("shared_buffers", "8GB"),
                ("effective_cache_size", "24GB"),
                ("maintenance_work_mem", "2GB"),
                ("checkpoint_completion_target", "0.9"),
                ("wal_buffers", "16MB"),
                ("default_statistics_target", "100"),
                ("random_page_cost", "4"),
                ("effective_io_concurrency", "2"),
                ("work_mem", "27594kB"),
                ("huge_pages", "try"),
                ("min_wal_size", "2GB"),
                ("max_wal_size", "8GB"),
                ("max_worker_processes", "4"),
                ("max_parallel_workers_per_gather", "2"),
                ("max_parallel_workers", "4"),
                ("max_parallel_maintenance_workers", "2"),
            ],
        );
    }

    #[test]
    fn dw_64gb_16cpus_san_pg17() {
        // mwm = RAM/8 = 8GB -> capped 2GB; per gather = ceil(16/2) = 8, no cap for dw;
        // maintenance workers = min(8, 4) = 4;
        // work_mem = (67,108,864 - 16,777,216) / ((40 + 16) * 3) / 2
        //          = 299,593.14 / 2 = 149,796.57 -> 149796kB.
        expect(
            input(DbType::Dw, "64GB", Some(16), None, Storage::San, 17),
            &[
                ("max_connections", "40"),
                ("shared_buffers", "16GB"),
                ("effective_cache_size", "48GB"),
                ("maintenance_work_mem", "2GB"),
                ("checkpoint_completion_target", "0.9"),
                ("wal_buffers", "16MB"),
                ("default_statistics_target", "500"),
                ("random_page_cost", "1.1"),
                ("effective_io_concurrency", "300"),
                ("work_mem", "149796kB"),
                ("huge_pages", "try"),
                ("min_wal_size", "4GB"),
                ("max_wal_size", "16GB"),
                ("max_worker_processes", "16"),
                ("max_parallel_workers_per_gather", "8"),
                ("max_parallel_workers", "16"),
                ("max_parallel_maintenance_workers", "4"),
            ],
        );
    }

    #[test]
    fn desktop_8gb_no_cpus_ssd_pg14() {
        // sb = RAM/16 = 524,288 (512MB); ecs = RAM/4 = 2GB; mwm = 512MB;
        // wal = 3% of 524,288 = 15,728 kB, strictly between 14MB and 16MB -> 16MB;
        // work_mem = (8,388,608 - 524,288) / ((20 + 8) * 3) / 6 = 93,622.86 / 6
        //          = 15,603.8 -> 15603kB. No CPUs: no parallel settings.
        expect(
            input(DbType::Desktop, "8GB", None, None, Storage::Ssd, 14),
            &[
                ("max_connections", "20"),
                ("shared_buffers", "512MB"),
                ("effective_cache_size", "2GB"),
                ("maintenance_work_mem", "512MB"),
                ("checkpoint_completion_target", "0.9"),
                ("wal_buffers", "16MB"),
                ("default_statistics_target", "100"),
                ("random_page_cost", "1.1"),
                ("effective_io_concurrency", "200"),
                ("work_mem", "15603kB"),
                ("huge_pages", "off"),
                ("min_wal_size", "100MB"),
                ("max_wal_size", "2GB"),
                ("wal_level", "minimal"),
                ("max_wal_senders", "0"),
            ],
        );
    }

    #[test]
    fn mixed_4gb_2cpus_50conns_pg13() {
        // 2 CPUs (< 4): no parallel settings, and work_mem counts 8 workers;
        // work_mem = (4,194,304 - 1,048,576) / ((50 + 8) * 3) / 2 = 18,078.9 / 2
        //          = 9,039.4 -> 9039kB; mwm = 262,144 (256MB); wal 31,457 -> 16MB.
        expect(
            input(DbType::Mixed, "4GB", Some(2), Some(50), Storage::Ssd, 13),
            &[
                ("max_connections", "50"),
                ("shared_buffers", "1GB"),
                ("effective_cache_size", "3GB"),
                ("maintenance_work_mem", "256MB"),
                ("checkpoint_completion_target", "0.9"),
                ("wal_buffers", "16MB"),
                ("default_statistics_target", "100"),
                ("random_page_cost", "1.1"),
                ("effective_io_concurrency", "200"),
                ("work_mem", "9039kB"),
                ("huge_pages", "off"),
                ("min_wal_size", "1GB"),
                ("max_wal_size", "4GB"),
            ],
        );
    }

    #[test]
    fn work_mem_floor_with_many_connections() {
        // 1GB RAM, 5000 connections: (1,048,576 - 262,144) / ((5000 + 4) * 3)
        //   = 786,432 / 15,012 = 52.4 -> below the floor -> 64kB.
        // wal = 3% of 262,144 = 7,864.32 -> 7864kB (not a whole MB).
        expect(
            input(DbType::Web, "1GB", Some(4), Some(5000), Storage::Ssd, 15),
            &[
                ("max_connections", "5000"),
                ("shared_buffers", "256MB"),
                ("effective_cache_size", "768MB"),
                ("maintenance_work_mem", "64MB"),
                ("checkpoint_completion_target", "0.9"),
                ("wal_buffers", "7864kB"),
                ("default_statistics_target", "100"),
                ("random_page_cost", "1.1"),
                ("effective_io_concurrency", "200"),
                ("work_mem", "64kB"),
                ("huge_pages", "off"),
                ("min_wal_size", "1GB"),
                ("max_wal_size", "4GB"),
                ("max_worker_processes", "4"),
                ("max_parallel_workers_per_gather", "2"),
                ("max_parallel_workers", "4"),
                ("max_parallel_maintenance_workers", "2"),
            ],
        );
    }

    #[test]
    fn tiny_desktop_wal_buffers_minimum_and_low_memory_warning() {
        // 16MB RAM = 16,384 kB: sb = 1,024 (1MB); wal = 3% = 30.72 -> 30 -> minimum 32kB;
        // ecs = 4,096 (4MB); mwm = 1,024 (1MB);
        // work_mem = (16,384 - 1,024) / (28 * 3) / 6 = 182.86 / 6 = 30.5 -> floor 64kB.
        let i = input(DbType::Desktop, "16MB", None, None, Storage::Hdd, 12);
        assert_eq!(pgtune_warnings(&i).len(), 1);
        expect(
            i,
            &[
                ("max_connections", "20"),
                ("shared_buffers", "1MB"),
                ("effective_cache_size", "4MB"),
                ("maintenance_work_mem", "1MB"),
                ("checkpoint_completion_target", "0.9"),
                ("wal_buffers", "32kB"),
                ("default_statistics_target", "100"),
                ("random_page_cost", "4"),
                ("effective_io_concurrency", "2"),
                ("work_mem", "64kB"),
                ("huge_pages", "off"),
                ("min_wal_size", "100MB"),
                ("max_wal_size", "2GB"),
                ("wal_level", "minimal"),
                ("max_wal_senders", "0"),
            ],
        );
    }

    #[test]
    fn mb_rendering_when_not_whole_gb() {
        // 6GB = 6,291,456 kB: sb = 1,572,864 = 1536MB; ecs = 4,718,592 = 4608MB;
        // mwm = 393,216 = 384MB; work_mem = 4,718,592 / 624 = 7,561.8 -> 7561kB.
        let got = pairs(&input(DbType::Web, "6GB", None, None, Storage::Ssd, 15));
        let get = |n: &str| got.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get("shared_buffers").as_deref(), Some("1536MB"));
        assert_eq!(get("effective_cache_size").as_deref(), Some("4608MB"));
        assert_eq!(get("maintenance_work_mem").as_deref(), Some("384MB"));
        assert_eq!(get("work_mem").as_deref(), Some("7561kB"));
        assert_eq!(get("max_worker_processes"), None);
    }

    #[test]
    fn one_tb_web_64cpus_pg18_and_high_memory_warning() {
        // RAM = 1,073,741,824 kB; sb = 256GB; ecs = 768GB; mwm = 64GB -> 2GB cap;
        // work_mem = 805,306,368 / ((200 + 64) * 3) = 1,016,800.97 -> 1016800kB.
        let i = input(DbType::Web, "1TB", Some(64), None, Storage::Ssd, 18);
        assert_eq!(pgtune_warnings(&i).len(), 1);
        let got = pairs(&i);
        let get = |n: &str| got.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get("shared_buffers").as_deref(), Some("256GB"));
        assert_eq!(get("effective_cache_size").as_deref(), Some("768GB"));
        assert_eq!(get("maintenance_work_mem").as_deref(), Some("2GB"));
        assert_eq!(get("work_mem").as_deref(), Some("1016800kB"));
        assert_eq!(get("huge_pages").as_deref(), Some("try"));
        assert_eq!(get("max_parallel_workers_per_gather").as_deref(), Some("4"));
        assert_eq!(
            get("max_parallel_maintenance_workers").as_deref(),
            Some("4")
        );
    }

    #[test]
    fn pg10_has_no_parallel_maintenance_workers() {
        // The setting exists from PostgreSQL 11; pgtune writes it only for >= 11.
        // work_mem = 12,582,912 / ((200 + 12) * 3) = 19,784.5 -> 19784kB.
        let got = pairs(&input(
            DbType::Web,
            "16GB",
            Some(12),
            None,
            Storage::Ssd,
            10,
        ));
        let tail: Vec<(&str, &str)> = got[13..].iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(
            tail,
            [
                ("max_worker_processes", "12"),
                ("max_parallel_workers_per_gather", "4"),
                ("max_parallel_workers", "12"),
            ]
        );
        assert_eq!(got[9], ("work_mem", "19784kB".to_string()));
        let v11 = pairs(&input(
            DbType::Web,
            "16GB",
            Some(12),
            None,
            Storage::Ssd,
            11,
        ));
        assert_eq!(
            v11.last().unwrap(),
            &("max_parallel_maintenance_workers", "4".to_string())
        );
    }

    #[test]
    fn odd_cpus_round_up_and_just_under_32gb() {
        // 5 CPUs: ceil(5/2) = 3 for both per-gather and maintenance workers.
        // 32767MB < 32GB: huge_pages off.
        let got = pairs(&input(
            DbType::Oltp,
            "32767MB",
            Some(5),
            None,
            Storage::Ssd,
            15,
        ));
        let get = |n: &str| got.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get("max_parallel_workers_per_gather").as_deref(), Some("3"));
        assert_eq!(
            get("max_parallel_maintenance_workers").as_deref(),
            Some("3")
        );
        assert_eq!(get("huge_pages").as_deref(), Some("off"));
        // 3 CPUs: under 4, no parallel settings.
        let got = pairs(&input(DbType::Oltp, "8GB", Some(3), None, Storage::Ssd, 15));
        assert!(got.iter().all(|(n, _)| !n.starts_with("max_parallel")));
    }

    #[test]
    fn invalid_inputs_are_typed_errors_naming_the_value() {
        let mut i = input(DbType::Web, "16GB", Some(0), None, Storage::Ssd, 15);
        let e = pgtune(&i).unwrap_err();
        assert!(matches!(e, Error::InvalidCpus { cpus: 0 }), "{e}");
        i.cpus = None;
        i.connections = Some(0);
        assert!(matches!(pgtune(&i), Err(Error::InvalidConnections { .. })));
        // Above PostgreSQL's own limit: a setting the server would refuse at start.
        i.connections = Some(MAX_BACKENDS);
        assert!(pgtune(&i).is_ok());
        i.connections = Some(MAX_BACKENDS + 1);
        let e = pgtune(&i).unwrap_err();
        assert!(
            e.to_string().contains("connections") && e.to_string().contains("262144"),
            "{e}"
        );
        i.connections = None;
        i.cpus = Some(u32::MAX);
        let e = pgtune(&i).unwrap_err();
        assert!(
            e.to_string().contains("cpus") && e.to_string().contains("4294967295"),
            "{e}"
        );
        i.cpus = None;
        i.pg_version = 9;
        let e = pgtune(&i).unwrap_err();
        assert!(e.to_string().contains('9'), "{e}");
        assert!(matches!(e, Error::UnsupportedVersion { version: 9, .. }));
        i.pg_version = 19;
        assert!(matches!(
            pgtune(&i),
            Err(Error::UnsupportedVersion { version: 19, .. })
        ));
        i.pg_version = 15;
        i.total_memory_bytes = 512 * 1024;
        let e = pgtune(&i).unwrap_err();
        assert!(e.to_string().contains("524288"), "{e}");
        i.total_memory_bytes = 0;
        assert!(matches!(
            pgtune(&i),
            Err(Error::MemoryTooSmall { bytes: 0, .. })
        ));
        i.total_memory_bytes = 2 * 1024 * 1024 + 1;
        assert!(matches!(pgtune(&i), Err(Error::MemoryNotWholeKb { .. })));
    }

    #[test]
    fn parse_memory_units() {
        assert_eq!(parse_memory("16GB").unwrap(), 16 << 30);
        assert_eq!(parse_memory("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1TB").unwrap(), 1 << 40);
        assert_eq!(parse_memory("64kB").unwrap(), 64 << 10);
        assert_eq!(parse_memory("8 gb").unwrap(), 8 << 30);
        for bad in [
            "",
            "GB",
            "16",
            "1.5GB",
            "-1GB",
            "16GiB",
            "99999999999999999999TB",
        ] {
            let e = parse_memory(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn conf_and_json_rendering() {
        let s = pgtune(&input(DbType::Desktop, "8GB", None, None, Storage::Ssd, 14)).unwrap();
        let conf = to_conf(&s);
        assert!(conf.starts_with("max_connections = 20\nshared_buffers = 512MB\n"));
        assert!(conf.ends_with("wal_level = minimal\nmax_wal_senders = 0\n"));
        let json = to_json(&s);
        assert!(json.starts_with(r#"{"max_connections":"20","shared_buffers":"512MB""#));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v, to_json_value(&s));
        assert_eq!(v["work_mem"], "15603kB");
        assert_eq!(v.as_object().unwrap().len(), s.len());
    }

    #[test]
    fn every_type_and_storage_is_accepted() {
        for t in [
            DbType::Web,
            DbType::Oltp,
            DbType::Dw,
            DbType::Desktop,
            DbType::Mixed,
        ] {
            for st in [Storage::Ssd, Storage::Hdd, Storage::San, Storage::Nvme] {
                for v in MIN_PG_VERSION..=MAX_PG_VERSION {
                    let s = pgtune(&input(t, "2GB", Some(8), None, st, v)).unwrap();
                    assert!(
                        s.iter()
                            .all(|x| !x.value.is_empty() && !x.reason.is_empty())
                    );
                    assert_eq!(t.as_str().parse::<DbType>().unwrap(), t);
                    assert_eq!(st.as_str().parse::<Storage>().unwrap(), st);
                }
            }
        }
    }

    fn get(s: &[Setting], name: &str) -> Option<String> {
        s.iter().find(|s| s.name == name).map(|s| s.value.clone())
    }

    #[test]
    fn os_changes_io_concurrency_and_the_windows_cap() {
        let i = input(DbType::Dw, "64GB", None, None, Storage::San, 16);
        let on = |os| pgtune_with(&i, &PgtuneOptions::new(os, Algorithm::Classic)).unwrap();
        assert_eq!(on(Os::Linux), pgtune(&i).unwrap());
        assert_eq!(get(&on(Os::Linux), "maintenance_work_mem").unwrap(), "2GB");
        assert_eq!(
            get(&on(Os::Windows), "maintenance_work_mem").unwrap(),
            "2047MB"
        );
        assert_eq!(get(&on(Os::Mac), "maintenance_work_mem").unwrap(), "2GB");
        assert_eq!(
            get(&on(Os::Linux), "effective_io_concurrency").unwrap(),
            "300"
        );
        assert_eq!(get(&on(Os::Windows), "effective_io_concurrency"), None);
        assert_eq!(get(&on(Os::Mac), "effective_io_concurrency"), None);
        // Under the cap Windows changes nothing there.
        let small = input(DbType::Web, "4GB", None, None, Storage::Ssd, 16);
        let w = pgtune_with(&small, &PgtuneOptions::new(Os::Windows, Algorithm::Classic));
        assert_eq!(get(&w.unwrap(), "maintenance_work_mem").unwrap(), "256MB");
        for os in [Os::Linux, Os::Windows, Os::Mac] {
            assert_eq!(os.as_str().parse::<Os>().unwrap(), os);
        }
        let e = "beos".parse::<Os>().unwrap_err().to_string();
        assert!(e.contains("beos"), "{e}");
    }

    #[test]
    fn modern_floor_cap_and_extra_settings() {
        let m = PgtuneOptions::new(Os::Linux, Algorithm::Modern);
        // 256GB dw: RAM/8 = 32GB, capped at 8GB (classic: 2GB).
        let big = input(DbType::Dw, "256GB", Some(32), None, Storage::Hdd, 18);
        let s = pgtune_with(&big, &m).unwrap();
        assert_eq!(get(&s, "maintenance_work_mem").unwrap(), "8GB");
        assert_eq!(
            get(&pgtune(&big).unwrap(), "maintenance_work_mem").unwrap(),
            "2GB"
        );
        // dw keeps the server's jit; 32 CPUs: 5 autovacuum workers, each capped at 2GB
        // since maintenance_work_mem >= 2GB; io_uring on Linux with PostgreSQL 18.
        assert_eq!(get(&s, "jit"), None);
        assert_eq!(get(&s, "autovacuum_max_workers").unwrap(), "5");
        assert_eq!(get(&s, "autovacuum_work_mem").unwrap(), "2GB");
        assert_eq!(get(&s, "io_method").unwrap(), "io_uring");
        assert_eq!(get(&s, "io_workers"), None);
        assert_eq!(get(&s, "wal_compression").unwrap(), "lz4");
        // 1GB, 1000 connections: W = 786432 / 3024 = 260kB, raised to 4MB.
        let tiny = input(DbType::Web, "1GB", None, Some(1000), Storage::Ssd, 14);
        let s = pgtune_with(&tiny, &m).unwrap();
        assert_eq!(get(&s, "work_mem").unwrap(), "4MB");
        assert_eq!(get(&pgtune(&tiny).unwrap(), "work_mem").unwrap(), "260kB");
        assert_eq!(get(&s, "io_method"), None);
        assert_eq!(get(&s, "jit").unwrap(), "off");
        assert_eq!(get(&s, "wal_compression").unwrap(), "on");
        // Every modern setting at once (Windows, PostgreSQL 18, 64 CPUs): every name
        // written is one SETTING_NAMES lists, so ALTER SYSTEM takes it.
        let all = input(DbType::Web, "256GB", Some(64), None, Storage::Ssd, 18);
        let s = pgtune_with(&all, &PgtuneOptions::new(Os::Windows, Algorithm::Modern)).unwrap();
        for name in ["jit", "autovacuum_work_mem", "io_method", "io_workers"] {
            assert!(get(&s, name).is_some(), "{name}");
        }
        assert!(s.iter().all(|x| SETTING_NAMES.contains(&x.name)));
        assert_eq!(Algorithm::default(), Algorithm::Classic);
    }

    #[test]
    fn db_size_names_and_terabyte_header() {
        for d in [DbSize::LessRam, DbSize::MidRam, DbSize::GreaterRam] {
            assert_eq!(d.as_str().parse::<DbSize>().unwrap(), d);
            assert_eq!(d.as_str().replace('_', "-").parse::<DbSize>().unwrap(), d);
        }
        let e = "huge".parse::<DbSize>().unwrap_err().to_string();
        assert!(e.contains("huge") && e.contains("less_ram"), "{e}");
        assert_eq!(DbSize::default(), DbSize::MidRam);
        // Modern pgtune's form has a TB unit, classic's stops at GB.
        let i = input(DbType::Web, "2TB", None, None, Storage::Ssd, 18);
        let ram = |a| header_lines(&i, &PgtuneOptions::new(Os::Linux, a))[3].clone();
        assert_eq!(ram(Algorithm::Modern), "Total Memory (RAM): 2 TB");
        assert_eq!(ram(Algorithm::Classic), "Total Memory (RAM): 2048 GB");
    }

    #[test]
    fn header_and_alter_system() {
        let i = input(DbType::Oltp, "1536MB", Some(4), Some(30), Storage::Nvme, 17);
        assert_eq!(
            header_lines(&i, &PgtuneOptions::new(Os::Mac, Algorithm::Classic)),
            [
                "DB Version: 17",
                "OS Type: mac",
                "DB Type: oltp",
                "Total Memory (RAM): 1536 MB",
                "CPUs num: 4",
                "Connections num: 30",
                "Data Storage: nvme",
            ]
        );
        let quoted = [setting("wal_level", "a'b", "r")];
        assert_eq!(
            to_alter_system(&quoted).unwrap(),
            "ALTER SYSTEM SET wal_level = 'a''b';\n"
        );
        // A name outside the known list, or a control character, is refused.
        let e = to_alter_system(&[setting("x; DROP TABLE t", "1", "r")]).unwrap_err();
        assert!(e.to_string().contains("DROP TABLE"), "{e}");
        let e = to_alter_system(&[setting("work_mem", "1\n2", "r")]).unwrap_err();
        assert!(e.to_string().contains("work_mem"), "{e}");
    }
}
