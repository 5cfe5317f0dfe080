//! The command line: subcommands, flags and the parsers of their values.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::Param;
use crate::pgtune::{self, Algorithm, DbSize, DbType, Os, Storage};

/// PostgreSQL advice: pgtune's settings and EXPLAIN plan analysis.
#[derive(Debug, Parser)]
#[command(
    name = "cortex-dbtune",
    version,
    about,
    after_help = "Exit status: 0 done; 1 runtime error (cannot connect, the server refused, \
                  ...); 2 usage error (a bad flag or value, a missing setting); 3 findings at \
                  or above --fail-on (explain, check-system, maintenance, advise-indexes)."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Settings from machine resources, exactly as pgtune computes them.
    Pgtune(PgtuneArgs),
    /// EXPLAIN (ANALYZE, BUFFERS) a statement on a live server and report findings.
    /// The statement runs in a transaction that is rolled back.
    Explain(ExplainArgs),
    /// Check this host: OS, CPUs, memory, open-file limit, required environment
    /// variables (secrets masked), pool size against CPUs. Exits 3 when a check fails
    /// (or, with --fail-on warning, warns).
    CheckSystem(CheckSystemArgs),
    /// Suggest indexes for the given queries and pg_stat_statements' top queries,
    /// verified with HypoPG when it is installed (cost before and after). Only the
    /// statements of the advisor's own role are planned, unless a low-privilege plan
    /// role is set (--plan-role / DBTUNE_PLAN_ROLE) to plan other users' as.
    AdviseIndexes(AdviseArgs),
    /// Compare the live server's settings and statistics with pgtune's values for the
    /// given (or this host's) resources.
    Settings(SettingsArgs),
    /// Unused and duplicate indexes, dead tuples, estimated bloat, last vacuum and
    /// analyze, with suggested SQL.
    Maintenance(MaintenanceArgs),
}

/// Where to connect. The URL comes from the environment: a URL in the command line,
/// password included, is visible to every local user (`ps`, `/proc/PID/cmdline`).
#[derive(Debug, clap::Args)]
pub(crate) struct ConnArgs {
    /// The environment variable holding the postgres:// URL.
    #[arg(long, value_name = "NAME", default_value = "DATABASE_URL")]
    pub(crate) url_env: String,
    /// The postgres:// URL itself. Discouraged: other local users can read it, and its
    /// password, in the process list; prefer DATABASE_URL or --url-env.
    #[arg(long, value_name = "URL", conflicts_with = "url_env")]
    pub(crate) url: Option<String>,
}

impl ConnArgs {
    /// The URL: `--url` (with a warning), else the variable `--url-env` names, looked
    /// up with `lookup`.
    pub(crate) fn url(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, crate::Error> {
        if let Some(url) = &self.url {
            eprintln!(
                "warning: --url puts the URL, password included, in this process's command \
                 line, which every local user can read (ps, /proc/PID/cmdline); set \
                 DATABASE_URL or name a variable with --url-env instead"
            );
            return Ok(url.clone());
        }
        match lookup(&self.url_env) {
            Some(url) if !url.is_empty() => Ok(url),
            _ => Err(crate::Error::InvalidOption {
                name: "url",
                reason: format!(
                    "{} is not set: set it to a postgres:// URL (or name another variable \
                     with --url-env)",
                    self.url_env
                ),
            }),
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct AdviseArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    /// A query to find indexes for (repeatable). It is run with EXPLAIN ANALYZE inside
    /// a transaction that is rolled back.
    #[arg(long = "query")]
    pub(crate) queries: Vec<String>,
    /// Do not read pg_stat_statements.
    #[arg(long)]
    pub(crate) no_pg_stat_statements: bool,
    /// Do not verify with HypoPG (the advice is then unverified).
    #[arg(long)]
    pub(crate) no_hypopg: bool,
    /// How many of pg_stat_statements' top queries to look at.
    #[arg(long, default_value_t = 20)]
    pub(crate) top: u32,
    /// The share of the cost an index must save (0 ..< 1).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) min_cost_drop: f64,
    /// Plan pg_stat_statements texts as this low-privilege role (default
    /// $DBTUNE_PLAN_ROLE). Planning runs a statement's functions with the planner's
    /// privileges; without a plan role only the advisor's own statements are planned.
    #[arg(long, value_name = "ROLE")]
    pub(crate) plan_role: Option<String>,
    /// Plan the pg_stat_statements texts of this user (repeatable; default the
    /// comma-separated $DBTUNE_PLAN_USERS, else the advisor's own role and the plan
    /// role). Another user than the advisor's own needs a plan role.
    #[arg(long = "plan-user", value_name = "USER")]
    pub(crate) plan_users: Vec<String>,
    /// Exit 3 when a suggestion is at or above this level: critical = verified with a
    /// cost drop of 90% or more; warning = any verified suggestion. Unverified ones
    /// (no HypoPG) never count. Without it suggestions do not change the exit status.
    #[arg(long, value_enum)]
    pub(crate) fail_on: Option<FailOn>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SettingsFormat {
    Table,
    Json,
    Conf,
    Alter,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SettingsArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    /// Total RAM, e.g. 16GB; default this host's, or the container's cgroup memory
    /// limit when smaller.
    #[arg(long, value_parser = parse_ram)]
    pub(crate) ram: Option<u64>,
    /// CPU count; default this host's, or the container's cgroup CPU quota when smaller.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) cpus: Option<u32>,
    /// max_connections; default pgtune's for the workload.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connections: Option<u32>,
    /// The data disks' kind.
    #[arg(long, value_enum, default_value = "ssd")]
    pub(crate) storage: StorageArg,
    /// The workload.
    #[arg(long, value_enum, default_value = "web")]
    pub(crate) db_type: DbTypeArg,
    /// Output format: a table, JSON, postgresql.conf text or ALTER SYSTEM statements.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: SettingsFormat,
}

#[derive(Debug, clap::Args)]
pub(crate) struct MaintenanceArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    /// Exit 3 when a finding is at or above this level: critical = a table with more
    /// dead than live tuples; warning = also any table needing VACUUM, an unused or
    /// duplicate index, an orphaned temporary table. Without it findings do not change
    /// the exit status.
    #[arg(long, value_enum)]
    pub(crate) fail_on: Option<FailOn>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: ReportFormat,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CheckSystemArgs {
    /// The connection pool size to check against the CPUs.
    #[arg(long)]
    pub(crate) pool_size: Option<u32>,
    /// An environment variable that must be set (repeatable).
    #[arg(long = "require")]
    pub(crate) require: Vec<String>,
    /// The pool's overflow, shown beside the recommended one.
    #[arg(long)]
    pub(crate) max_overflow: Option<u32>,
    /// The statement timeout the service sets: seconds, or with a unit (500ms, 30s,
    /// 2m); shown beside the recommended one.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) statement_timeout: Option<Duration>,
    /// The async runtime's worker threads, shown beside the recommended count.
    #[arg(long)]
    pub(crate) worker_threads: Option<u32>,
    /// Exit 3 when a check is at or above this level: warning (a warning or a failing
    /// check) or critical (a failing check, the default).
    #[arg(long, value_enum, default_value = "critical")]
    pub(crate) fail_on: FailOn,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReportFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExplainArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    /// The statement, with $1, $2, ... for parameters.
    pub(crate) sql: String,
    /// A parameter value, in order. Typed by its look (null, true/false, integer,
    /// number, else text) or explicitly: text:V, int:V, float:V, bool:V, json:V.
    #[arg(long = "param", value_parser = parse_param)]
    pub(crate) params: Vec<Param>,
    /// Statement timeout: seconds, or with a unit (500ms, 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// The statement timeout in milliseconds: the old spelling of `--timeout`, kept so
    /// scripts keep working.
    #[arg(long, hide = true, conflicts_with = "timeout", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout_ms: Option<u64>,
    /// Exit 3 when a finding is at or above this level (warning or critical); without
    /// it findings do not change the exit status.
    #[arg(long, value_enum)]
    pub(crate) fail_on: Option<FailOn>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DbTypeArg {
    Web,
    Oltp,
    Dw,
    Desktop,
    Mixed,
}

impl From<DbTypeArg> for DbType {
    fn from(v: DbTypeArg) -> Self {
        match v {
            DbTypeArg::Web => DbType::Web,
            DbTypeArg::Oltp => DbType::Oltp,
            DbTypeArg::Dw => DbType::Dw,
            DbTypeArg::Desktop => DbType::Desktop,
            DbTypeArg::Mixed => DbType::Mixed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StorageArg {
    Ssd,
    Hdd,
    San,
    Nvme,
}

/// The operating system (pgtune's OS type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OsArg {
    Linux,
    Windows,
    Mac,
}

impl From<OsArg> for Os {
    fn from(v: OsArg) -> Self {
        match v {
            OsArg::Linux => Os::Linux,
            OsArg::Windows => Os::Windows,
            OsArg::Mac => Os::Mac,
        }
    }
}

/// The rules' generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AlgorithmArg {
    /// pgtune's 2025 release, commit 2f5122d7 (the default).
    Classic,
    /// pgtune's newest rules, commit 7caef27c: 4MB work_mem floor, 8GB
    /// maintenance_work_mem cap, jit, wal_compression, autovacuum and (PostgreSQL 18)
    /// io_method / io_workers.
    Modern,
}

/// The database's size against RAM (modern pgtune's "Total Data Size").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DbSizeArg {
    /// Smaller than RAM.
    #[value(name = "less-ram", alias = "less_ram")]
    Less,
    /// One to three times RAM.
    #[value(name = "mid-ram", alias = "mid_ram")]
    Mid,
    /// More than three times RAM.
    #[value(name = "greater-ram", alias = "greater_ram")]
    Greater,
}

impl From<DbSizeArg> for DbSize {
    fn from(v: DbSizeArg) -> Self {
        match v {
            DbSizeArg::Less => DbSize::LessRam,
            DbSizeArg::Mid => DbSize::MidRam,
            DbSizeArg::Greater => DbSize::GreaterRam,
        }
    }
}

impl From<AlgorithmArg> for Algorithm {
    fn from(v: AlgorithmArg) -> Self {
        match v {
            AlgorithmArg::Classic => Algorithm::Classic,
            AlgorithmArg::Modern => Algorithm::Modern,
        }
    }
}

/// The lowest finding level that makes the command exit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum FailOn {
    /// A warning or anything worse.
    Warning,
    /// Only a critical finding (a failing check for check-system).
    Critical,
}

impl From<StorageArg> for Storage {
    fn from(v: StorageArg) -> Self {
        match v {
            StorageArg::Ssd => Storage::Ssd,
            StorageArg::Hdd => Storage::Hdd,
            StorageArg::San => Storage::San,
            StorageArg::Nvme => Storage::Nvme,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ConfFormat {
    /// postgresql.conf lines under pgtune's input comments.
    Conf,
    /// `ALTER SYSTEM SET name = 'value';` lines under the same comments as SQL comments.
    Alter,
    /// A JSON object of name to value.
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PgtuneArgs {
    /// The workload.
    #[arg(long, value_enum)]
    pub(crate) db_type: DbTypeArg,
    /// Total RAM, e.g. 16GB, 512MB, 1TB.
    #[arg(long, value_parser = parse_ram)]
    pub(crate) ram: u64,
    /// CPU count; without it the parallel settings are left out.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) cpus: Option<u32>,
    /// max_connections; without it pgtune's default for the workload.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connections: Option<u32>,
    /// The data disks' kind.
    #[arg(long, value_enum)]
    pub(crate) storage: StorageArg,
    /// PostgreSQL major version (10..=18).
    #[arg(long)]
    pub(crate) pg_version: u32,
    /// The operating system: windows and mac have no effective_io_concurrency, windows
    /// caps maintenance_work_mem at 2GB - 1MB.
    #[arg(long, value_enum, default_value = "linux")]
    pub(crate) os: OsArg,
    /// The rules: classic = pgtune's 2025 release (unchanged output), modern = its
    /// newest rules (the README names the pgtune commit each matches).
    #[arg(long, value_enum, default_value = "classic")]
    pub(crate) algorithm: AlgorithmArg,
    /// The database's size against RAM (modern only): less-ram sets random_page_cost
    /// 1.1 and raises work_mem 30%, greater-ram lowers work_mem 10%.
    #[arg(long, value_enum, default_value = "mid-ram")]
    pub(crate) db_size: DbSizeArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "conf")]
    pub(crate) format: ConfFormat,
}

/// A duration in the one Cortex syntax (bare number = seconds, `500ms`, `30s`, `2m`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    cortex_support::duration::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// A memory size as pgtune writes it (`16GB`, `512MB`).
pub(crate) fn parse_ram(s: &str) -> Result<u64, String> {
    pgtune::parse_memory(s).map_err(|e| e.to_string())
}

/// A `--param` value: typed by its look, or by a `kind:` prefix.
pub(crate) fn parse_param(s: &str) -> Result<Param, String> {
    let bad = |t: &str| format!("{s:?} is not a valid {t}");
    if let Some((kind, v)) = s.split_once(':') {
        match kind {
            "text" => return Ok(Param::Text(v.to_string())),
            "int" => return v.parse().map(Param::Int).map_err(|_| bad("integer")),
            "float" => return v.parse().map(Param::Float).map_err(|_| bad("number")),
            "bool" => return v.parse().map(Param::Bool).map_err(|_| bad("boolean")),
            "json" => {
                return serde_json::from_str(v)
                    .map(Param::Json)
                    .map_err(|e| format!("{s:?} is not valid JSON: {e}"));
            }
            _ => {}
        }
    }
    Ok(match s {
        "null" => Param::Null,
        "true" => Param::Bool(true),
        "false" => Param::Bool(false),
        _ => match (s.parse::<i64>(), s.parse::<f64>()) {
            (Ok(i), _) => Param::Int(i),
            (_, Ok(f)) if f.is_finite() => Param::Float(f),
            _ => Param::Text(s.to_string()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_typed_by_look_or_prefix() {
        assert_eq!(parse_param("42"), Ok(Param::Int(42)));
        assert_eq!(parse_param("1.5"), Ok(Param::Float(1.5)));
        assert_eq!(parse_param("null"), Ok(Param::Null));
        assert_eq!(parse_param("true"), Ok(Param::Bool(true)));
        assert_eq!(parse_param("NaN"), Ok(Param::Text("NaN".into())));
        assert_eq!(parse_param("text:42"), Ok(Param::Text("42".into())));
        assert_eq!(parse_param("other:42"), Ok(Param::Text("other:42".into())));
        assert_eq!(
            parse_param(r#"json:{"a":1}"#),
            Ok(Param::Json(serde_json::json!({"a": 1})))
        );
        let err = parse_param("int:x").unwrap_err();
        assert!(err.contains("int:x"), "{err}");
        assert!(parse_param("json:{").is_err());
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        let err = parse_duration("soon").unwrap_err();
        assert!(err.contains("soon"), "{err}");
        assert_eq!(parse_ram("1GB"), Ok(1 << 30));
        assert!(parse_ram("lots").unwrap_err().contains("lots"));
    }

    #[test]
    fn flags_parse_into_commands() {
        let cli = Cli::try_parse_from(["cortex-dbtune", "explain", "--timeout", "1.5", "SELECT 1"])
            .unwrap();
        let Command::Explain(a) = cli.command else {
            panic!("not explain: {cli:?}")
        };
        assert_eq!(a.timeout, Duration::from_millis(1500));
        assert_eq!(a.conn.url_env, "DATABASE_URL");
        assert_eq!(a.format, ReportFormat::Table);
        // The old and the new timeout flag exclude each other.
        assert!(
            Cli::try_parse_from([
                "cortex-dbtune",
                "explain",
                "--timeout",
                "1",
                "--timeout-ms",
                "5",
                "SELECT 1"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["cortex-dbtune", "pgtune", "--db-type", "web"]).is_err());
    }

    #[test]
    fn the_url_comes_from_the_named_variable() {
        let conn = ConnArgs {
            url_env: "MY_DB".into(),
            url: None,
        };
        let set = |k: &str| (k == "MY_DB").then(|| "postgres://h/db".to_string());
        assert_eq!(conn.url(&set).unwrap(), "postgres://h/db");
        let err = conn.url(&|_| None).unwrap_err().to_string();
        assert!(err.contains("MY_DB is not set"), "{err}");
        let empty = conn.url(&|_| Some(String::new())).unwrap_err();
        assert!(empty.to_string().contains("MY_DB"), "{empty}");
        let given = ConnArgs {
            url_env: "MY_DB".into(),
            url: Some("postgres://x/y".into()),
        };
        assert_eq!(given.url(&|_| None).unwrap(), "postgres://x/y");
    }
}
