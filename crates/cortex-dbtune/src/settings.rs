//! The live server's settings and statistics against pgtune's recommendations, and
//! the recommendations as `postgresql.conf` text or `ALTER SYSTEM` statements.
//!
//! Every name and value that goes into generated text is validated first: the name
//! must be one of the server's `pg_settings`, the value must match the setting's
//! type and unit (see [`validate_value`]). The statements never end with
//! `ALTER SYSTEM RESET ALL` (which would undo every change);
//! they end with `SELECT pg_reload_conf();`.
//!
//! ```
//! use cortex_dbtune::settings::{Recommendation, alter_system_statements};
//!
//! let rec = Recommendation {
//!     name: "work_mem".into(),
//!     current: Some("4MB".into()),
//!     recommended: "20164kB".into(),
//!     reason: "pgtune".into(),
//!     vartype: Some("integer".into()),
//!     unit: Some("kB".into()),
//!     enumvals: vec![],
//!     context: Some("user".into()),
//! };
//! let sql = alter_system_statements(&[rec])?;
//! assert_eq!(sql, ["ALTER SYSTEM SET work_mem = '20164kB';", "SELECT pg_reload_conf();"]);
//! # Ok::<(), cortex_dbtune::Error>(())
//! ```

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::pgtune::{self, DbType, PgtuneInput, Storage, format_kb};
use crate::plan::quote_literal;
use crate::{Error, Result};

/// One row of `pg_settings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PgSetting {
    /// Name.
    pub name: String,
    /// Value in the base unit, as `pg_settings.setting` shows it.
    pub setting: String,
    /// Base unit (`8kB`, `kB`, `MB`, `ms`, `s`, `min`), if any.
    pub unit: Option<String>,
    /// `bool`, `integer`, `real`, `string` or `enum`.
    pub vartype: String,
    /// Where the value comes from (`default`, `configuration file`, ...).
    pub source: String,
    /// When a change applies (`postmaster` = restart, `sighup` = reload, ...).
    pub context: String,
    /// The allowed values of an enum.
    pub enumvals: Vec<String>,
}

impl PgSetting {
    /// The value with its unit, memory in pgtune's style (`128MB`, `20164kB`), time as
    /// `N` + unit (`30s`); `-1` and other negative values as they are.
    pub fn normalized(&self) -> String {
        normalize(&self.setting, self.unit.as_deref())
    }
}

/// `setting` in `unit` as pgtune would write it (see [`PgSetting::normalized`]).
pub fn normalize(setting: &str, unit: Option<&str>) -> String {
    if setting == "0" {
        return "0".to_string();
    }
    // Time in the largest unit that divides it evenly, as people write it (`30s`).
    let ms_per_unit = match unit {
        Some("ms") => Some(1),
        Some("s") => Some(1000),
        Some("min") => Some(60_000),
        _ => None,
    };
    if let (Some(k), Ok(v)) = (ms_per_unit, setting.parse::<u64>()) {
        let ms = v * k;
        let (n, u) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "min"),
            (1000, "s"),
            (1, "ms"),
        ]
        .into_iter()
        .find(|(d, _)| ms.is_multiple_of(*d))
        .unwrap_or((1, "ms"));
        return format!("{}{u}", ms / n);
    }
    let kb_per_unit = match unit {
        Some("B") => None,
        Some("kB") => Some(1),
        Some("8kB") => Some(8),
        Some("16kB") => Some(16),
        Some("32kB") => Some(32),
        Some("MB") => Some(1024),
        _ => {
            return match unit {
                Some(u) if setting.parse::<f64>().is_ok_and(|v| v >= 0.0) => {
                    format!("{setting}{u}")
                }
                _ => setting.to_string(),
            };
        }
    };
    match (kb_per_unit, setting.parse::<u64>()) {
        (Some(k), Ok(v)) => format_kb(v * k),
        _ => setting.to_string(),
    }
}

/// Server-wide figures of the live server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// `server_version_num`, e.g. 150008.
    pub version_num: i32,
    /// `server_version`, e.g. `15.8 (Debian ...)`.
    pub version: String,
    /// Backends in `pg_stat_activity` (all kinds of client backends).
    pub connections_in_use: i64,
    /// `max_connections`.
    pub max_connections: i64,
    /// The current database's `blks_hit / (blks_hit + blks_read)`, when it read any.
    pub cache_hit_ratio: Option<f64>,
    /// Blocks read from disk or the OS cache in the current database.
    pub blocks_read: i64,
    /// Temporary files written by the current database's queries.
    pub temp_files: i64,
    /// Their total size in bytes.
    pub temp_bytes: i64,
    /// Checkpoints started because `checkpoint_timeout` elapsed.
    pub checkpoints_timed: i64,
    /// Checkpoints requested (WAL reached `max_wal_size`, or an explicit CHECKPOINT).
    pub checkpoints_requested: i64,
}

/// What [`read_live`] reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveServer {
    /// Server-wide figures.
    pub stats: ServerStats,
    /// All of `pg_settings`.
    pub settings: Vec<PgSetting>,
}

impl LiveServer {
    /// The setting called `name`.
    pub fn setting(&self, name: &str) -> Option<&PgSetting> {
        self.settings.iter().find(|s| s.name == name)
    }

    /// The server's major version (15 for 150008).
    pub fn major_version(&self) -> u32 {
        (self.stats.version_num / 10_000).max(0) as u32
    }
}

/// Reads the version, `pg_settings`, connections, the cache hit ratio, temp files and
/// checkpoint counts of the server `pool` is connected to.
pub async fn read_live(pool: &PgPool) -> Result<LiveServer> {
    let row = sqlx::query(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version'), \
         (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), \
         current_setting('max_connections')::bigint",
    )
    .fetch_one(pool)
    .await?;
    let version_num: i32 = row.try_get(0)?;
    let db = sqlx::query(
        "SELECT blks_hit, blks_read, temp_files, temp_bytes FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await?;
    let hit: i64 = db.try_get(0)?;
    let read: i64 = db.try_get(1)?;
    // PostgreSQL 17 moved the checkpoint counters to pg_stat_checkpointer.
    let ckpt_sql = if version_num >= 170_000 {
        "SELECT num_timed, num_requested FROM pg_stat_checkpointer"
    } else {
        "SELECT checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter"
    };
    let ck = sqlx::query(ckpt_sql).fetch_one(pool).await?;
    let stats = ServerStats {
        version_num,
        version: row.try_get(1)?,
        connections_in_use: row.try_get(2)?,
        max_connections: row.try_get(3)?,
        cache_hit_ratio: (hit + read > 0).then(|| hit as f64 / (hit + read) as f64),
        blocks_read: read,
        temp_files: db.try_get(2)?,
        temp_bytes: db.try_get(3)?,
        checkpoints_timed: ck.try_get(0)?,
        checkpoints_requested: ck.try_get(1)?,
    };
    let rows = sqlx::query(
        "SELECT name, setting, unit, vartype, source, context, coalesce(enumvals, '{}') \
         FROM pg_settings ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    let settings = rows
        .iter()
        .map(|r| {
            Ok(PgSetting {
                name: r.try_get(0)?,
                setting: r.try_get(1)?,
                unit: r.try_get(2)?,
                vartype: r.try_get(3)?,
                source: r.try_get(4)?,
                context: r.try_get(5)?,
                enumvals: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(LiveServer { stats, settings })
}

/// A setting: its current and recommended value, why, and what the server says about
/// it (type, unit, context), used to validate the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Setting name.
    pub name: String,
    /// Its current value, normalized ([`normalize`]); `None` when not read from a
    /// server.
    pub current: Option<String>,
    /// The recommended value.
    pub recommended: String,
    /// Why.
    pub reason: String,
    /// `pg_settings.vartype`; `None` when the server does not know the name (such a
    /// recommendation is refused by the generators).
    pub vartype: Option<String>,
    /// `pg_settings.unit`.
    pub unit: Option<String>,
    /// `pg_settings.enumvals` for enums.
    pub enumvals: Vec<String>,
    /// `pg_settings.context`: `postmaster` settings need a restart.
    pub context: Option<String>,
}

impl Recommendation {
    /// Whether the current value differs from the recommendation.
    pub fn differs(&self) -> bool {
        self.current.as_deref() != Some(self.recommended.as_str())
    }

    /// Whether applying it needs a server restart (`context = 'postmaster'`).
    pub fn needs_restart(&self) -> bool {
        self.context.as_deref() == Some("postmaster")
    }
}

/// The comparison of a live server with the recommendations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsReport {
    /// Server-wide figures.
    pub server: ServerStats,
    /// What the recommendations were computed from.
    pub input: PgtuneInput,
    /// One row per recommended setting.
    pub recommendations: Vec<Recommendation>,
    /// What the statistics suggest beyond the formulas.
    pub observations: Vec<String>,
}

fn is_setting_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

fn is_number(v: &str, real: bool) -> bool {
    let v = v.strip_prefix('-').unwrap_or(v);
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) if real => (i, Some(f)),
        _ => (v, None),
    };
    !int.is_empty()
        && int.chars().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()))
}

/// Checks `value` against a setting's type and unit: `bool` on/off/true/false/yes/no/
/// 1/0; `integer` and `real` a number with, when the setting has a unit, an optional
/// unit of the same kind (memory `B kB MB GB TB`, time `us ms s min h d`); `enum` one
/// of `enumvals`; `string` only letters, digits and ` _.,:/-` (no quote, backslash or
/// newline). Anything else is an [`Error::InvalidOption`].
pub fn validate_value(
    name: &str,
    value: &str,
    vartype: &str,
    unit: Option<&str>,
    enumvals: &[String],
) -> Result<()> {
    let bad = |why: &str| Error::InvalidOption {
        name: "setting value",
        reason: format!("{value:?} for {name}: {why}"),
    };
    let ok = match vartype {
        "bool" => ["on", "off", "true", "false", "yes", "no", "1", "0"]
            .contains(&value.to_ascii_lowercase().as_str()),
        "integer" | "real" => {
            let real = vartype == "real";
            let units: &[&str] = match unit {
                Some("B" | "kB" | "8kB" | "16kB" | "32kB" | "MB") => &["B", "kB", "MB", "GB", "TB"],
                Some("us" | "ms" | "s" | "min") => &["us", "ms", "s", "min", "h", "d"],
                _ => &[],
            };
            let num = units
                .iter()
                .filter_map(|u| value.strip_suffix(u))
                .find(|n| is_number(n, real));
            num.is_some() || is_number(value, real)
        }
        "enum" => enumvals.iter().any(|e| e == value),
        "string" => value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.,:/-".contains(c)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(&format!("not a valid {vartype} value")))
    }
}

fn validate(rec: &Recommendation) -> Result<()> {
    if !is_setting_name(&rec.name) {
        return Err(Error::InvalidOption {
            name: "setting name",
            reason: format!("{:?} is not a setting name", rec.name),
        });
    }
    let Some(vartype) = rec.vartype.as_deref() else {
        return Err(Error::InvalidOption {
            name: "setting name",
            reason: format!("{:?} is not in the server's pg_settings", rec.name),
        });
    };
    validate_value(
        &rec.name,
        &rec.recommended,
        vartype,
        rec.unit.as_deref(),
        &rec.enumvals,
    )
}

/// Recommendations beyond pgtune's formulas: logging of slow
/// statements, checkpoints, connections, lock waits and temp files; autovacuum; a
/// statement timeout.
fn extra_recommendations() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "log_min_duration_statement",
            "1s",
            "log statements slower than 1 s to find the queries worth tuning",
        ),
        (
            "log_checkpoints",
            "on",
            "see how often and why checkpoints run",
        ),
        ("log_connections", "on", "audit and count connection churn"),
        (
            "log_lock_waits",
            "on",
            "log waits longer than deadlock_timeout: lock contention shows up",
        ),
        (
            "log_temp_files",
            "0",
            "log every temporary file: each one is a sort or hash that outgrew work_mem",
        ),
        (
            "autovacuum",
            "on",
            "dead tuples must be reclaimed and statistics kept fresh",
        ),
        (
            "autovacuum_vacuum_scale_factor",
            "0.05",
            "vacuum large tables after 5% of rows changed instead of 20%",
        ),
        (
            "autovacuum_analyze_scale_factor",
            "0.02",
            "refresh statistics after 2% of rows changed instead of 10%",
        ),
        (
            "statement_timeout",
            "30s",
            "a runaway query cannot hold a connection forever",
        ),
    ]
}

/// The pgtune input from the host (RAM and CPUs via [`crate::system::gather`]) for a
/// web workload on SSD and the given major version (clamped to pgtune's range).
pub fn host_input(pg_version: u32) -> Result<PgtuneInput> {
    let facts = crate::system::gather();
    let total = facts
        .memory_total_bytes
        .ok_or_else(|| Error::InvalidOption {
            name: "ram",
            reason: "the host's memory could not be read; give it explicitly".to_string(),
        })?;
    Ok(PgtuneInput {
        db_type: DbType::Web,
        // pgtune computes in whole kB.
        total_memory_bytes: total / 1024 * 1024,
        cpus: u32::try_from(facts.cpus).ok(),
        connections: None,
        storage: Storage::Ssd,
        pg_version: pg_version.clamp(pgtune::MIN_PG_VERSION, pgtune::MAX_PG_VERSION),
    })
}

/// Compares a live server with pgtune's values for `input` plus the logging,
/// autovacuum and timeout recommendations, and adds observations from the statistics.
pub fn compare(live: &LiveServer, input: &PgtuneInput) -> Result<SettingsReport> {
    let mut pairs: Vec<(String, String, String)> = pgtune::pgtune(input)?
        .into_iter()
        .map(|s| (s.name.to_string(), s.value, s.reason))
        .collect();
    pairs.extend(
        extra_recommendations()
            .into_iter()
            .map(|(n, v, r)| (n.to_string(), v.to_string(), r.to_string())),
    );
    let recommendations = pairs
        .into_iter()
        .map(|(name, recommended, reason)| {
            let s = live.setting(&name);
            Recommendation {
                current: s.map(PgSetting::normalized),
                vartype: s.map(|s| s.vartype.clone()),
                unit: s.and_then(|s| s.unit.clone()),
                enumvals: s.map(|s| s.enumvals.clone()).unwrap_or_default(),
                context: s.map(|s| s.context.clone()),
                name,
                recommended,
                reason,
            }
        })
        .collect();
    Ok(SettingsReport {
        server: live.stats.clone(),
        input: input.clone(),
        recommendations,
        observations: observations(&live.stats),
    })
}

/// What the statistics say, beyond the formulas.
pub fn observations(s: &ServerStats) -> Vec<String> {
    let mut out = Vec::new();
    // Below 99% with a meaningful number of reads: a hot set that does not fit.
    if let Some(r) = s
        .cache_hit_ratio
        .filter(|&r| r < 0.99 && s.blocks_read > 10_000)
    {
        out.push(format!(
            "cache hit ratio {:.2}% is below 99%: raise shared_buffers (and check \
             effective_cache_size) so the working set stays in memory",
            r * 100.0
        ));
    }
    if s.checkpoints_requested > s.checkpoints_timed && s.checkpoints_requested > 0 {
        out.push(format!(
            "{} checkpoints were requested against {} timed: WAL fills max_wal_size before \
             checkpoint_timeout; raise max_wal_size",
            s.checkpoints_requested, s.checkpoints_timed
        ));
    }
    if s.temp_files > 0 {
        out.push(format!(
            "{} temporary files ({} bytes) were written: sorts and hashes spill to disk; \
             raise work_mem (per operation, so mind max_connections)",
            s.temp_files, s.temp_bytes
        ));
    }
    if s.max_connections > 0 && s.connections_in_use * 10 > s.max_connections * 8 {
        out.push(format!(
            "{} of {} connections in use (over 80%): use a connection pooler or raise \
             max_connections",
            s.connections_in_use, s.max_connections
        ));
    }
    out
}

/// Reads the live server and compares it ([`compare`]); without `input`, the host's
/// resources and the server's version ([`host_input`]).
pub async fn settings_report(pool: &PgPool, input: Option<PgtuneInput>) -> Result<SettingsReport> {
    let live = read_live(pool).await?;
    let input = match input {
        Some(i) => i,
        None => host_input(live.major_version())?,
    };
    compare(&live, &input)
}

/// The `postgresql.conf` section a setting belongs in.
fn section(name: &str) -> &'static str {
    match name {
        "max_connections" | "superuser_reserved_connections" => "connections",
        "shared_buffers" | "work_mem" | "maintenance_work_mem" | "huge_pages" => "memory",
        "effective_cache_size"
        | "random_page_cost"
        | "effective_io_concurrency"
        | "default_statistics_target" => "planner",
        n if n.contains("parallel") || n == "max_worker_processes" => "parallel",
        n if n.starts_with("checkpoint") || n.contains("wal") => "checkpoints/WAL",
        n if n.starts_with("log_") => "logging",
        n if n.starts_with("autovacuum") => "autovacuum",
        "statement_timeout" | "idle_in_transaction_session_timeout" | "lock_timeout" => {
            "statement_timeout"
        }
        _ => "other",
    }
}

const SECTIONS: [&str; 9] = [
    "connections",
    "memory",
    "planner",
    "parallel",
    "checkpoints/WAL",
    "logging",
    "autovacuum",
    "statement_timeout",
    "other",
];

/// The recommendations as `postgresql.conf` text, by section (connections, memory,
/// planner, parallel, checkpoints/WAL, logging, autovacuum, statement_timeout), each
/// value single-quoted. Every name and value is validated first.
pub fn to_postgresql_conf(recs: &[Recommendation]) -> Result<String> {
    for r in recs {
        validate(r)?;
    }
    let mut out = String::from("# Generated by cortex-dbtune\n");
    for sec in SECTIONS {
        let in_sec: Vec<&Recommendation> =
            recs.iter().filter(|r| section(&r.name) == sec).collect();
        if in_sec.is_empty() {
            continue;
        }
        out.push_str(&format!("\n# --- {sec} ---\n"));
        for r in in_sec {
            let restart = if r.needs_restart() { " (restart)" } else { "" };
            // The reason is ours, but keep a comment on one line whatever it holds.
            let reason = r.reason.replace(['\n', '\r'], " ");
            out.push_str(&format!(
                "{} = {}\t# {reason}{restart}\n",
                r.name,
                quote_literal(&r.recommended)
            ));
        }
    }
    Ok(out)
}

/// `ALTER SYSTEM SET name = 'value';` per recommendation (validated), then
/// `SELECT pg_reload_conf();` — never `ALTER SYSTEM RESET ALL`, which would undo them.
/// When some need a restart (`context = 'postmaster'`), a last line comments which.
pub fn alter_system_statements(recs: &[Recommendation]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for r in recs {
        validate(r)?;
        out.push(format!(
            "ALTER SYSTEM SET {} = {};",
            r.name,
            quote_literal(&r.recommended)
        ));
    }
    out.push("SELECT pg_reload_conf();".to_string());
    let restart: Vec<&str> = recs
        .iter()
        .filter(|r| r.needs_restart())
        .map(|r| r.name.as_str())
        .collect();
    if !restart.is_empty() {
        out.push(format!(
            "-- needs a server restart to apply (context = postmaster): {}",
            restart.join(", ")
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        name: &str,
        value: &str,
        vartype: &str,
        unit: Option<&str>,
        ctx: &str,
    ) -> Recommendation {
        Recommendation {
            name: name.into(),
            current: None,
            recommended: value.into(),
            reason: "r".into(),
            vartype: Some(vartype.into()),
            unit: unit.map(Into::into),
            enumvals: vec!["off".into(), "on".into(), "try".into()],
            context: Some(ctx.into()),
        }
    }

    #[test]
    fn normalizes_like_pgtune() {
        assert_eq!(normalize("16384", Some("8kB")), "128MB");
        assert_eq!(normalize("4096", Some("kB")), "4MB");
        assert_eq!(normalize("20164", Some("kB")), "20164kB");
        assert_eq!(normalize("1024", Some("MB")), "1GB");
        assert_eq!(normalize("-1", Some("8kB")), "-1");
        assert_eq!(normalize("0", Some("ms")), "0");
        assert_eq!(normalize("0", Some("kB")), "0");
        assert_eq!(normalize("30000", Some("ms")), "30s");
        assert_eq!(normalize("1500", Some("ms")), "1500ms");
        assert_eq!(normalize("60", Some("s")), "1min");
        assert_eq!(normalize("1440", Some("min")), "1d");
        assert_eq!(normalize("0.5", Some("ms")), "0.5ms");
        assert_eq!(normalize("-1", Some("ms")), "-1");
        assert_eq!(normalize("0.9", None), "0.9");
        assert_eq!(normalize("on", None), "on");
    }

    #[test]
    fn validator_rejects_injection() {
        let ok = |n, v, t, u| validate_value(n, v, t, u, &[]).is_ok();
        assert!(ok("shared_buffers", "4GB", "integer", Some("8kB")));
        assert!(ok("shared_buffers", "524288", "integer", Some("8kB")));
        assert!(ok("statement_timeout", "30s", "integer", Some("ms")));
        assert!(ok("random_page_cost", "1.1", "real", None));
        assert!(ok(
            "log_min_duration_statement",
            "-1",
            "integer",
            Some("ms")
        ));
        assert!(ok("log_checkpoints", "on", "bool", None));
        assert!(!ok(
            "shared_buffers",
            "4GB'; DROP TABLE x; --",
            "integer",
            Some("8kB")
        ));
        assert!(!ok("shared_buffers", "4s", "integer", Some("8kB")));
        assert!(!ok("max_connections", "1.5", "integer", None));
        assert!(!ok("random_page_cost", "1.", "real", None));
        assert!(!ok("log_checkpoints", "maybe", "bool", None));
        assert!(!ok(
            "application_name",
            "x'\nshared_buffers = 1",
            "string",
            None
        ));
        let r = rec("huge_pages", "try' ; SELECT 1", "enum", None, "postmaster");
        assert!(alter_system_statements(&[r]).is_err());
        let mut r = rec("work_mem", "4MB", "integer", Some("kB"), "user");
        r.name = "work_mem = 1; DROP".into();
        assert!(alter_system_statements(std::slice::from_ref(&r)).is_err());
        assert!(to_postgresql_conf(&[r]).is_err());
        let mut r = rec("no_such_setting", "1", "integer", None, "user");
        r.vartype = None;
        let e = alter_system_statements(&[r]).unwrap_err();
        assert!(e.to_string().contains("pg_settings"), "{e}");
    }

    #[test]
    fn alter_system_text_is_exact() {
        let recs = [
            rec(
                "shared_buffers",
                "4GB",
                "integer",
                Some("8kB"),
                "postmaster",
            ),
            rec("work_mem", "20164kB", "integer", Some("kB"), "user"),
            rec("random_page_cost", "1.1", "real", None, "user"),
            rec("huge_pages", "off", "enum", None, "postmaster"),
        ];
        assert_eq!(
            alter_system_statements(&recs).unwrap().join("\n"),
            "ALTER SYSTEM SET shared_buffers = '4GB';\n\
             ALTER SYSTEM SET work_mem = '20164kB';\n\
             ALTER SYSTEM SET random_page_cost = '1.1';\n\
             ALTER SYSTEM SET huge_pages = 'off';\n\
             SELECT pg_reload_conf();\n\
             -- needs a server restart to apply (context = postmaster): shared_buffers, huge_pages"
        );
        let conf = to_postgresql_conf(&recs).unwrap();
        assert!(
            conf.contains("\n# --- memory ---\nshared_buffers = '4GB'\t# r (restart)\n"),
            "{conf}"
        );
        assert!(conf.find("# --- memory ---") < conf.find("# --- planner ---"));
        assert!(!conf.to_ascii_uppercase().contains("RESET"));
    }

    #[test]
    fn observations_from_stats() {
        let s = ServerStats {
            version_num: 150_008,
            version: "15.8".into(),
            connections_in_use: 90,
            max_connections: 100,
            cache_hit_ratio: Some(0.9),
            blocks_read: 1_000_000,
            temp_files: 3,
            temp_bytes: 1 << 20,
            checkpoints_timed: 1,
            checkpoints_requested: 9,
        };
        let o = observations(&s).join("\n");
        for needle in ["shared_buffers", "max_wal_size", "work_mem", "pooler"] {
            assert!(o.contains(needle), "{needle}: {o}");
        }
    }
}
