//! `cortex-dbtune`: PostgreSQL settings from resources (as pgtune) and EXPLAIN analysis.

use std::process::ExitCode;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use cortex_dbtune::pgtune::{self, DbType, PgtuneInput, Storage};
use cortex_dbtune::{AnalyzeOptions, Param};

/// PostgreSQL advice: pgtune's settings and EXPLAIN plan analysis.
#[derive(Debug, Parser)]
#[command(name = "cortex-dbtune", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Settings from machine resources, exactly as pgtune computes them.
    Pgtune(PgtuneArgs),
    /// EXPLAIN (ANALYZE, BUFFERS) a statement on a live server and report findings.
    /// The statement runs in a transaction that is rolled back.
    Explain(ExplainArgs),
    /// Check this host: OS, CPUs, memory, open-file limit, required environment
    /// variables (secrets masked), pool size against CPUs. Exits 1 when a check fails.
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
struct ConnArgs {
    /// The environment variable holding the postgres:// URL.
    #[arg(long, value_name = "NAME", default_value = "DATABASE_URL")]
    url_env: String,
    /// The postgres:// URL itself. Discouraged: other local users can read it, and its
    /// password, in the process list; prefer DATABASE_URL or --url-env.
    #[arg(long, value_name = "URL", conflicts_with = "url_env")]
    url: Option<String>,
}

impl ConnArgs {
    /// The URL: `--url` (with a warning), else the variable `--url-env` names.
    fn url(&self) -> Result<String, cortex_dbtune::Error> {
        if let Some(url) = &self.url {
            eprintln!(
                "warning: --url puts the URL, password included, in this process's command \
                 line, which every local user can read (ps, /proc/PID/cmdline); set \
                 DATABASE_URL or name a variable with --url-env instead"
            );
            return Ok(url.clone());
        }
        match std::env::var(&self.url_env) {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => Err(cortex_dbtune::Error::InvalidOption {
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
struct AdviseArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// A query to find indexes for (repeatable). It is run with EXPLAIN ANALYZE inside
    /// a transaction that is rolled back.
    #[arg(long = "query")]
    queries: Vec<String>,
    /// Do not read pg_stat_statements.
    #[arg(long)]
    no_pg_stat_statements: bool,
    /// Do not verify with HypoPG (the advice is then unverified).
    #[arg(long)]
    no_hypopg: bool,
    /// How many of pg_stat_statements' top queries to look at.
    #[arg(long, default_value_t = 20)]
    top: u32,
    /// The share of the cost an index must save (0 ..< 1).
    #[arg(long, default_value_t = 0.5)]
    min_cost_drop: f64,
    /// Plan pg_stat_statements texts as this low-privilege role (default
    /// $DBTUNE_PLAN_ROLE). Planning runs a statement's functions with the planner's
    /// privileges; without a plan role only the advisor's own statements are planned.
    #[arg(long, value_name = "ROLE")]
    plan_role: Option<String>,
    /// Plan the pg_stat_statements texts of this user (repeatable; default the
    /// comma-separated $DBTUNE_PLAN_USERS, else the advisor's own role and the plan
    /// role). Another user than the advisor's own needs a plan role.
    #[arg(long = "plan-user", value_name = "USER")]
    plan_users: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SettingsFormat {
    Table,
    Json,
    Conf,
    Alter,
}

#[derive(Debug, clap::Args)]
struct SettingsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Total RAM, e.g. 16GB; default this host's.
    #[arg(long, value_parser = parse_ram)]
    ram: Option<u64>,
    /// CPU count; default this host's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cpus: Option<u32>,
    /// max_connections; default pgtune's for the workload.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    connections: Option<u32>,
    /// The data disks' kind.
    #[arg(long, value_enum, default_value = "ssd")]
    storage: StorageArg,
    /// The workload.
    #[arg(long, value_enum, default_value = "web")]
    db_type: DbTypeArg,
    /// Output format: a table, JSON, postgresql.conf text or ALTER SYSTEM statements.
    #[arg(long, value_enum, default_value = "table")]
    format: SettingsFormat,
}

#[derive(Debug, clap::Args)]
struct MaintenanceArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
}

fn runtime() -> Result<tokio::runtime::Runtime, cortex_dbtune::Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| cortex_dbtune::Error::InvalidOption {
            name: "runtime",
            reason: e.to_string(),
        })
}

/// Connects through cortex-pool: bounded connect and acquire, and a password in the
/// URL never reaches an error message.
async fn connect(
    url: String,
    size: u32,
) -> Result<cortex_pool::DbPool<sqlx::Postgres>, cortex_dbtune::Error> {
    // Shown in errors with the password masked.
    let shown = cortex_support::redact::redact_url(&url);
    let config = cortex_pool::DbConfig {
        url,
        pool_size: size,
        max_overflow: 0,
        pool_timeout: Duration::from_secs(10),
        ..cortex_pool::DbConfig::default()
    };
    cortex_pool::DbPool::postgres(config)
        .await
        .map_err(|e| cortex_dbtune::Error::InvalidOption {
            name: "url",
            reason: format!("cannot connect to PostgreSQL at {shown}: {e}"),
        })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, cortex_dbtune::Error> {
    let mut out = serde_json::to_string_pretty(v).map_err(cortex_dbtune::Error::PlanJson)?;
    out.push('\n');
    Ok(out)
}

fn run_advise(a: AdviseArgs) -> Result<(), cortex_dbtune::Error> {
    use cortex_dbtune::advisor::{AdviseOptions, QuerySource, advise_indexes};
    use std::fmt::Write as _;
    let url = a.conn.url()?;
    let plan_role = a.plan_role.or_else(|| {
        std::env::var("DBTUNE_PLAN_ROLE")
            .ok()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
    });
    let plan_users = if a.plan_users.is_empty() {
        std::env::var("DBTUNE_PLAN_USERS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        a.plan_users
    };
    let opts = AdviseOptions {
        use_pg_stat_statements: !a.no_pg_stat_statements,
        use_hypopg: !a.no_hypopg,
        top_statements: a.top,
        min_cost_drop: a.min_cost_drop,
        plan_role,
        plan_users,
        ..AdviseOptions::default()
    };
    let queries: Vec<QuerySource> = a.queries.into_iter().map(QuerySource::new).collect();
    let advice = runtime()?.block_on(async {
        // Two connections: the advisor checks a statement on one while it may hold
        // another for pg_stat_statements.
        let pool = connect(url, 2).await?;
        let r = advise_indexes(pool.inner(), &queries, &opts).await;
        pool.close().await;
        r
    })?;
    let out = match a.format {
        ReportFormat::Json => to_json(&advice)?,
        ReportFormat::Table => {
            let mut out = format!("{} index suggestion(s)\n", advice.len());
            for ad in &advice {
                let cost = match (ad.cost_before, ad.cost_after) {
                    (Some(b), Some(c)) => format!("cost {b:.2} -> {c:.2}"),
                    _ => "cost not verified".to_string(),
                };
                let _ = writeln!(out, "{};", ad.create_sql);
                let _ = writeln!(
                    out,
                    "    {} ({cost}); from: {}",
                    ad.note,
                    ad.source.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
            out
        }
    };
    emit(&out);
    Ok(())
}

fn run_settings(a: SettingsArgs) -> Result<(), cortex_dbtune::Error> {
    use cortex_dbtune::settings::{self, alter_system_statements, compare, read_live};
    use std::fmt::Write as _;
    let url = a.conn.url()?;
    let live = runtime()?.block_on(async {
        let pool = connect(url, 1).await?;
        let r = read_live(pool.inner()).await;
        pool.close().await;
        r
    })?;
    let mut input = match (a.ram, a.cpus) {
        // Nothing to read from the host when both are given.
        (Some(ram), Some(cpus)) => PgtuneInput {
            db_type: DbType::Web,
            total_memory_bytes: ram,
            cpus: Some(cpus),
            connections: None,
            storage: Storage::Ssd,
            pg_version: live
                .major_version()
                .clamp(pgtune::MIN_PG_VERSION, pgtune::MAX_PG_VERSION),
        },
        _ => settings::host_input(live.major_version())?,
    };
    if let Some(ram) = a.ram {
        input.total_memory_bytes = ram;
    }
    if let Some(cpus) = a.cpus {
        input.cpus = Some(cpus);
    }
    input.connections = a.connections;
    input.db_type = a.db_type.into();
    input.storage = a.storage.into();
    let report = compare(&live, &input)?;
    let out = match a.format {
        SettingsFormat::Json => to_json(&report)?,
        SettingsFormat::Conf => settings::to_postgresql_conf(&report.recommendations)?,
        SettingsFormat::Alter => {
            let mut s = alter_system_statements(&report.recommendations)?.join("\n");
            s.push('\n');
            s
        }
        SettingsFormat::Table => {
            let st = &report.server;
            let mut out = String::new();
            let _ = writeln!(
                out,
                "PostgreSQL {} | connections {}/{} | cache hit {} | temp files {} ({} bytes) | \
                 checkpoints requested {} / timed {}",
                st.version,
                st.connections_in_use,
                st.max_connections,
                st.cache_hit_ratio
                    .map_or("n/a".to_string(), |r| format!("{:.2}%", r * 100.0)),
                st.temp_files,
                st.temp_bytes,
                st.checkpoints_requested,
                st.checkpoints_timed
            );
            let _ = writeln!(
                out,
                "{:<36} {:<14} {:<14} REASON",
                "SETTING", "CURRENT", "RECOMMENDED"
            );
            for r in &report.recommendations {
                let mark = if r.differs() { "*" } else { " " };
                let restart = if r.needs_restart() { " (restart)" } else { "" };
                let _ = writeln!(
                    out,
                    "{mark}{:<35} {:<14} {:<14} {}{restart}",
                    r.name,
                    r.current.as_deref().unwrap_or("-"),
                    r.recommended,
                    r.reason
                );
            }
            for o in &report.observations {
                let _ = writeln!(out, "note: {o}");
            }
            out
        }
    };
    emit(&out);
    Ok(())
}

fn run_maintenance(a: MaintenanceArgs) -> Result<(), cortex_dbtune::Error> {
    use std::fmt::Write as _;
    let url = a.conn.url()?;
    let report = runtime()?.block_on(async {
        let pool = connect(url, 1).await?;
        let r = cortex_dbtune::maintenance::maintenance_report(pool.inner()).await;
        pool.close().await;
        r
    })?;
    let out = match a.format {
        ReportFormat::Json => to_json(&report)?,
        ReportFormat::Table => {
            let mut out = String::new();
            let _ = writeln!(out, "unused indexes: {}", report.unused_indexes.len());
            for u in &report.unused_indexes {
                let _ = writeln!(out, "  {} bytes  {}", u.size_bytes, u.sql);
            }
            let _ = writeln!(out, "duplicate indexes: {}", report.duplicate_indexes.len());
            for d in &report.duplicate_indexes {
                let _ = writeln!(out, "  keep {:?}: {}", d.keep, d.definition);
                for q in &d.sql {
                    let _ = writeln!(out, "    {q}");
                }
            }
            let orphans: Vec<_> = report
                .temp_tables
                .iter()
                .filter(|t| t.sql.is_some())
                .collect();
            let _ = writeln!(
                out,
                "temporary tables: {} ({} orphaned)",
                report.temp_tables.len(),
                orphans.len()
            );
            for t in &report.temp_tables {
                let _ = writeln!(
                    out,
                    "  {:<46} {:>10} bytes  owner {:?}{}",
                    format!("{}.{}", t.schema, t.table),
                    t.size_bytes,
                    t.owner,
                    t.sql
                        .as_deref()
                        .map(|q| format!("\n    {q}"))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(
                out,
                "tables: {:<40} {:>10} {:>10} {:>6} {:>6}  LAST VACUUM / ANALYZE",
                "", "LIVE", "DEAD", "DEAD%", "BLOAT%"
            );
            for t in &report.tables {
                let pct =
                    |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}", v * 100.0));
                let last = |a: &Option<String>, b: &Option<String>| {
                    a.clone()
                        .max(b.clone())
                        .unwrap_or_else(|| "never".to_string())
                };
                let _ = writeln!(
                    out,
                    "  {:<46} {:>10} {:>10} {:>6} {:>6}  {} / {}{}",
                    format!("{}.{}", t.schema, t.table),
                    t.live_tuples,
                    t.dead_tuples,
                    pct(t.dead_ratio),
                    pct(t.estimated_bloat_ratio),
                    last(&t.last_vacuum, &t.last_autovacuum),
                    last(&t.last_analyze, &t.last_autoanalyze),
                    if t.needs_vacuum {
                        format!("\n    {}", t.sql)
                    } else {
                        String::new()
                    }
                );
            }
            out
        }
    };
    emit(&out);
    Ok(())
}

#[derive(Debug, clap::Args)]
struct CheckSystemArgs {
    /// The connection pool size to check against the CPUs.
    #[arg(long)]
    pool_size: Option<u32>,
    /// An environment variable that must be set (repeatable).
    #[arg(long = "require")]
    require: Vec<String>,
    /// The pool's overflow, shown beside the recommended one.
    #[arg(long)]
    max_overflow: Option<u32>,
    /// The statement timeout the service sets: seconds, or with a unit (500ms, 30s,
    /// 2m); shown beside the recommended one.
    #[arg(long, value_parser = parse_duration)]
    statement_timeout: Option<Duration>,
    /// The async runtime's worker threads, shown beside the recommended count.
    #[arg(long)]
    worker_threads: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
}

/// Runs the checks; `Ok(true)` when none failed.
fn run_check_system(a: CheckSystemArgs) -> Result<bool, cortex_dbtune::Error> {
    use cortex_dbtune::system::{self, CheckOptions, CheckStatus};
    use std::fmt::Write as _;
    let facts = system::gather();
    let opts = CheckOptions {
        pool_size: a.pool_size,
        required_env: a.require,
        max_overflow: a.max_overflow,
        statement_timeout_ms: a
            .statement_timeout
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        worker_threads: a.worker_threads,
    };
    let checks = system::run_checks(&facts, &opts, &|k| std::env::var(k).ok());
    let defaults = system::compare_defaults(facts.cpus, &opts);
    let mut out = String::new();
    match a.format {
        ReportFormat::Json => {
            let v = serde_json::json!({ "facts": facts, "checks": checks, "defaults": defaults });
            out = serde_json::to_string_pretty(&v).map_err(cortex_dbtune::Error::PlanJson)?;
            out.push('\n');
        }
        ReportFormat::Table => {
            let _ = writeln!(
                out,
                "{:<8} {:<22} {:<32} MESSAGE",
                "STATUS", "CHECK", "VALUE"
            );
            for c in &checks {
                let status = match c.status {
                    CheckStatus::Ok => "ok",
                    CheckStatus::Warning => "warning",
                    CheckStatus::Fail => "FAIL",
                };
                let _ = writeln!(
                    out,
                    "{status:<8} {:<22} {:<32} {}",
                    c.name, c.value, c.message
                );
            }
            let _ = writeln!(
                out,
                "\n{:<22} {:>12} {:>12}",
                "DEFAULT", "CURRENT", "RECOMMENDED"
            );
            for d in &defaults {
                let _ = writeln!(
                    out,
                    "{:<22} {:>12} {:>12}",
                    d.name,
                    d.current.as_deref().unwrap_or("-"),
                    d.recommended
                );
            }
        }
    }
    emit(&out);
    Ok(checks.iter().all(|c| c.status != CheckStatus::Fail))
}

/// A duration in the one Cortex syntax (bare number = seconds, `500ms`, `30s`, `2m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    cortex_support::duration::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The statement, with $1, $2, ... for parameters.
    sql: String,
    /// A parameter value, in order. Typed by its look (null, true/false, integer,
    /// number, else text) or explicitly: text:V, int:V, float:V, bool:V, json:V.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<Param>,
    /// Statement timeout: seconds, or with a unit (500ms, 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// The statement timeout in milliseconds: the old spelling of `--timeout`, kept so
    /// scripts keep working.
    #[arg(long, hide = true, conflicts_with = "timeout", value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
}

fn parse_param(s: &str) -> Result<Param, String> {
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

fn run_explain(a: ExplainArgs) -> Result<(), cortex_dbtune::Error> {
    let url = a.conn.url()?;
    if a.timeout_ms.is_some() {
        eprintln!("warning: --timeout-ms is deprecated; use --timeout (e.g. 500ms, 30s)");
    }
    let opts = AnalyzeOptions {
        statement_timeout: a.timeout_ms.map_or(a.timeout, Duration::from_millis),
        ..AnalyzeOptions::default()
    };
    let analysis = runtime()?.block_on(async {
        let pool = connect(url, 1).await?;
        let r = cortex_dbtune::analyze_query(pool.inner(), &a.sql, &a.params, &opts).await;
        pool.close().await;
        r
    })?;
    use std::fmt::Write as _;
    let mut out = String::new();
    match a.format {
        ReportFormat::Json => {
            out =
                serde_json::to_string_pretty(&analysis).map_err(cortex_dbtune::Error::PlanJson)?;
            out.push('\n');
        }
        ReportFormat::Table => {
            let p = &analysis.plan;
            let _ = writeln!(
                out,
                "planning {:.3} ms, execution {:.3} ms, {} finding(s)",
                p.planning_time_ms.unwrap_or(0.0),
                p.execution_time_ms.unwrap_or(0.0),
                analysis.findings.len()
            );
            if !analysis.findings.is_empty() {
                let _ = writeln!(
                    out,
                    "{:<9} {:<23} {:<10} {:<18} {:>14} {:>12}",
                    "SEVERITY", "RULE", "NODE", "NODE TYPE", "MEASURED", "THRESHOLD"
                );
            }
            for f in &analysis.findings {
                let _ = writeln!(
                    out,
                    "{:<9} {:<23} {:<10} {:<18} {:>14.2} {:>12.2}",
                    f.severity.to_string(),
                    f.rule,
                    f.node_path,
                    f.node_type,
                    f.measured,
                    f.threshold
                );
                let _ = writeln!(out, "          {}", f.message);
                let _ = writeln!(out, "          fix: {}", f.suggestion);
            }
            for l in &analysis.lints {
                let _ = writeln!(
                    out,
                    "{:<9} {:<23} {}",
                    l.severity.to_string(),
                    l.rule,
                    l.message
                );
                let _ = writeln!(out, "          fix: {}", l.suggestion);
            }
        }
    }
    emit(&out);
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DbTypeArg {
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StorageArg {
    Ssd,
    Hdd,
    San,
}

impl From<StorageArg> for Storage {
    fn from(v: StorageArg) -> Self {
        match v {
            StorageArg::Ssd => Storage::Ssd,
            StorageArg::Hdd => Storage::Hdd,
            StorageArg::San => Storage::San,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConfFormat {
    Conf,
    Json,
}

#[derive(Debug, clap::Args)]
struct PgtuneArgs {
    /// The workload.
    #[arg(long, value_enum)]
    db_type: DbTypeArg,
    /// Total RAM, e.g. 16GB, 512MB, 1TB.
    #[arg(long, value_parser = parse_ram)]
    ram: u64,
    /// CPU count; without it the parallel settings are left out.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cpus: Option<u32>,
    /// max_connections; without it pgtune's default for the workload.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    connections: Option<u32>,
    /// The data disks' kind.
    #[arg(long, value_enum)]
    storage: StorageArg,
    /// PostgreSQL major version (10..=18).
    #[arg(long)]
    pg_version: u32,
    /// Output format.
    #[arg(long, value_enum, default_value = "conf")]
    format: ConfFormat,
}

/// Writes to stdout, ignoring a closed pipe (`| head`), where `print!` would panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn parse_ram(s: &str) -> Result<u64, String> {
    pgtune::parse_memory(s).map_err(|e| e.to_string())
}

fn run_pgtune(a: PgtuneArgs) -> Result<(), cortex_dbtune::Error> {
    let input = PgtuneInput {
        db_type: a.db_type.into(),
        total_memory_bytes: a.ram,
        cpus: a.cpus,
        connections: a.connections,
        storage: a.storage.into(),
        pg_version: a.pg_version,
    };
    let settings = pgtune::pgtune(&input)?;
    for w in pgtune::pgtune_warnings(&input) {
        eprintln!("warning: {w}");
    }
    match a.format {
        ConfFormat::Conf => emit(&pgtune::to_conf(&settings)),
        ConfFormat::Json => emit(&format!("{}\n", pgtune::to_json(&settings))),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pgtune(a) => run_pgtune(a).map(|()| true),
        Command::Explain(a) => run_explain(a).map(|()| true),
        Command::CheckSystem(a) => run_check_system(a),
        Command::AdviseIndexes(a) => run_advise(a).map(|()| true),
        Command::Settings(a) => run_settings(a).map(|()| true),
        Command::Maintenance(a) => run_maintenance(a).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
