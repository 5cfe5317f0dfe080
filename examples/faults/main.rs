//! The fault suite: two example-service instances on a private PostgreSQL, Redis (with
//! the durable task queue) and MCP server, under cortex-load, while each dependency
//! fails and comes back. Run by `scripts/faults.sh` (short form, a few minutes) and
//! `scripts/faults.sh --long` (longer windows and a 30 minute soak).
//!
//! ```text
//! faults --service BIN --load BIN [--long] [--out DIR] [--only NAME,...] [--soak DURATION]
//! ```
//!
//! For each fault it records what callers saw (from cortex-load's per-request records
//! and the suite's own posts), checks that only documented errors came back, that the
//! error rate went back to zero within [`RECOVERY_BOUND`], that no request waited past
//! the service's request timeout and that no instance crashed but the one killed. After
//! the run it waits for the queue to drain and counts, from the database and the
//! dead-letter stream, every accepted task: done once, done more than once (the effect
//! is an upsert, so a repeat is harmless), dead-lettered with its error, or lost (must
//! be none). It exits 1 when any check fails, naming each.

// A program, not a library: `pub` marks what a module offers the others.
#![allow(unreachable_pub)]

mod plot;
mod sql;
mod stack;
mod traffic;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cortex_core::pool::RedisConfig;
use cortex_core::tasks::durable::{DurableConfig, DurableQueue};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, sleep_until};

use crate::stack::{Instance, Mcp, Postgres, Redis};
use crate::traffic::{Ledger, LoadRun, Rec, now_ms};

/// Why the suite could not run, or a check that failed.
#[derive(Debug)]
pub struct Fail(pub String);

impl Fail {
    /// Wrap an I/O error with what was being done.
    pub fn io(what: &'static str) -> impl Fn(std::io::Error) -> Fail {
        move |e| Fail(format!("{what}: {e}"))
    }

    /// Wrap any error with what was being done.
    pub fn any<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Fail {
        move |e| Fail(format!("{what}: {e}"))
    }
}

/// The service's request timeout in the suite (`CORTEX_REQUEST_TIMEOUT`): no answer may
/// take longer than this plus [`LATENCY_SLACK`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scheduling and connection set-up on a loaded two-core machine.
const LATENCY_SLACK: Duration = Duration::from_secs(1);
/// The error rate is back to zero at most this long after a fault ends.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// Resident memory of the instance never killed may grow at most this much over the run.
const RSS_GROWTH_BOUND_MIB: f64 = 64.0;
/// How long a dependency stays down.
const HOLD: Duration = Duration::from_secs(10);
/// How long the killed instance stays down.
const INSTANCE_DOWN: Duration = Duration::from_secs(5);
/// The time before a fault and the longest a fault (and its restart) may take.
const PRE: Duration = Duration::from_secs(2);
const FAULT_MAX: Duration = Duration::from_secs(16);
/// Tasks enqueued through the killed instance right before the kill.
const BURST: usize = 100;
const QUEUE: &str = "faults";
/// How long the queue may take to finish its tasks once the load has stopped.
const DRAIN_BOUND: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    RedisStop,
    PgRestart,
    PgFull,
    McpKill,
    InstanceKill,
    RedisPause,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::RedisStop,
        Fault::PgRestart,
        Fault::PgFull,
        Fault::McpKill,
        Fault::InstanceKill,
        Fault::RedisPause,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::RedisStop => "redis-stop",
            Fault::PgRestart => "pg-restart",
            Fault::PgFull => "pg-full",
            Fault::McpKill => "mcp-kill",
            Fault::InstanceKill => "instance-kill",
            Fault::RedisPause => "redis-pause",
        }
    }

    fn describe(self) -> String {
        match self {
            Fault::RedisStop => format!(
                "Redis stopped (SIGTERM) for {} s, then started",
                HOLD.as_secs()
            ),
            Fault::PgRestart => "PostgreSQL restarted (fast shutdown)".into(),
            Fault::PgFull => format!(
                "PostgreSQL refuses connections for {} s (another client holds every slot; the service's connections cut)",
                HOLD.as_secs()
            ),
            Fault::McpKill => format!(
                "MCP server killed (SIGKILL) for {} s, then started",
                HOLD.as_secs()
            ),
            Fault::InstanceKill => format!(
                "instance 1 killed (SIGKILL) right after {BURST} posts, started {} s later",
                INSTANCE_DOWN.as_secs()
            ),
            Fault::RedisPause => format!(
                "Redis paused (CLIENT PAUSE ALL) for {} s, longer than every timeout",
                HOLD.as_secs() + 2
            ),
        }
    }

    /// Whether reads must go on while it lasts (the cache falls back to the database).
    fn reads_must_go_on(self) -> bool {
        matches!(self, Fault::RedisStop | Fault::McpKill)
    }
}

struct Options {
    service: PathBuf,
    load: PathBuf,
    long: bool,
    out: PathBuf,
    only: Option<Vec<Fault>>,
    soak: Duration,
}

fn usage() -> &'static str {
    "usage: faults --service BIN --load BIN [--long] [--out DIR] [--only NAME,...] [--soak DURATION]\n\
     faults: redis-stop, pg-restart, pg-full, mcp-kill, instance-kill, redis-pause"
}

fn options() -> Result<Options, Fail> {
    let mut args = std::env::args().skip(1);
    let (mut service, mut load, mut long, mut out, mut only, mut soak) = (
        None,
        None,
        false,
        PathBuf::from("target/faults"),
        None,
        None,
    );
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| Fail(format!("{flag} needs a value\n{}", usage())))
        };
        match arg.as_str() {
            "--service" => service = Some(PathBuf::from(value("--service")?)),
            "--load" => load = Some(PathBuf::from(value("--load")?)),
            "--out" => out = PathBuf::from(value("--out")?),
            "--long" => long = true,
            "--soak" => {
                let v = value("--soak")?;
                soak = Some(
                    cortex_support::duration::parse_duration(&v)
                        .map_err(|e| Fail(format!("--soak {v:?}: {e}")))?,
                );
            }
            "--only" => {
                let v = value("--only")?;
                let picked = v
                    .split(',')
                    .map(|n| {
                        Fault::ALL
                            .into_iter()
                            .find(|f| f.name() == n.trim())
                            .ok_or_else(|| {
                                Fail(format!("--only: unknown fault {n:?}\n{}", usage()))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                only = Some(picked);
            }
            "-h" | "--help" => return Err(Fail(usage().into())),
            other => return Err(Fail(format!("unknown argument {other:?}\n{}", usage()))),
        }
    }
    let need = |v: Option<PathBuf>, flag: &str| {
        v.ok_or_else(|| Fail(format!("{flag} is required\n{}", usage())))
    };
    Ok(Options {
        service: need(service, "--service")?,
        load: need(load, "--load")?,
        soak: soak.unwrap_or(if long {
            Duration::from_secs(30 * 60)
        } else {
            Duration::ZERO
        }),
        long,
        out,
        only,
    })
}

/// What one fault did and what the checks found.
struct Outcome {
    fault: Fault,
    inject_ms: u64,
    restore_ms: u64,
    end_ms: u64,
    note: String,
    row: Row,
}

#[derive(Default)]
struct Row {
    saw: String,
    recover_ms: u64,
    max_latency_ms: f64,
    reads_ok_during: usize,
    accepted: usize,
    lost: usize,
    duplicates: usize,
    dead: usize,
    failures: Vec<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    // reqwest is built without a default TLS provider; the suite speaks plain HTTP,
    // but building a client needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = match options() {
        Ok(o) => o,
        Err(Fail(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Fail(e)) => {
            eprintln!("faults: could not run: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(o: Options) -> Result<bool, Fail> {
    std::fs::create_dir_all(&o.out).map_err(Fail::io("--out"))?;
    let work = tempfile::Builder::new()
        .prefix("cortex-faults-")
        .tempdir()
        .map_err(Fail::io("a work folder"))?;
    let dir = work.path();
    // The postgres user (when running as root) reaches its data folder through this one.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(Fail::io("chmod the work folder"))?;
    say(&format!("work folder {}", dir.display()));
    let result = suite(&o, dir).await;
    // The servers' and instances' logs outlive the work folder, for a failed check.
    for entry in std::fs::read_dir(dir)
        .map_err(Fail::io("the work folder"))?
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log")
            && let Some(name) = path.file_name()
        {
            let _ = std::fs::copy(&path, o.out.join(name));
        }
    }
    result
}

async fn suite(o: &Options, dir: &Path) -> Result<bool, Fail> {
    let mut redis = Redis::start(&dir.join("redis")).await?;
    let mut pg = Postgres::start(&dir.join("pg")).await?;
    sql::setup(&pg.admin_url("postgres")).await?;
    let mut mcp = Mcp::start(dir).await?;
    say(&format!(
        "redis :{}, postgres :{}, mcp :{}",
        redis.port, pg.port, mcp.port
    ));

    let app_url = format!("postgres://app@127.0.0.1:{}/faults", pg.port);
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", app_url.as_str()),
        ("REDIS_URL", redis.url().as_str()),
        ("COGNITION_SERVICE_URL", mcp.url().as_str()),
        ("COGNITION_SUMMARY_TOOL", "echo"),
        ("TASKS_QUEUE_NAME", QUEUE),
        ("TASKS_VISIBILITY_TIMEOUT", "5"),
        ("TASKS_MAX_ATTEMPTS", "8"),
        // Below the request timeout: an outage answers 503, not the request's 504.
        ("TASKS_OP_TIMEOUT", "2"),
        (
            "CORTEX_REQUEST_TIMEOUT",
            &REQUEST_TIMEOUT.as_secs().to_string(),
        ),
        ("DB_POOL_SIZE", "6"),
        ("DB_MAX_OVERFLOW", "4"),
        ("DB_POOL_TIMEOUT", "2"),
        ("REDIS_POOL_TIMEOUT", "1"),
        ("DB_CONNECTION_LIMIT", "1000"),
        ("CORTEX_ADMIN_TOKEN", "faults"),
        ("LOG_LEVEL", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([(
        "RUST_LOG".to_owned(),
        // More of the instances' logs, to look into a failed check.
        std::env::var("FAULTS_RUST_LOG").unwrap_or_else(|_| "warn".into()),
    )])
    .collect();
    let mut instances = Vec::new();
    for (i, name) in ["instance-0", "instance-1"].into_iter().enumerate() {
        let mut env = env.clone();
        env.push((
            "CORTEX_DATA_DIR".into(),
            dir.join(format!("data{i}")).display().to_string(),
        ));
        instances.push(Instance::start(name, &o.service, env, dir).await?);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(Fail::any("http client"))?;
    for i in &instances {
        wait_healthy(&http, &i.base()).await?;
    }
    let (user, workspace, conversation) = seed(&http, &instances[0].base()).await?;
    let scenario = dir.join("scenario.json");
    std::fs::write(
        &scenario,
        traffic::scenario(user, workspace, conversation).to_string(),
    )
    .map_err(Fail::io("write the scenario"))?;

    let faults: Vec<Fault> = o.only.clone().unwrap_or_else(|| Fault::ALL.to_vec());
    let observe = if o.long {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(15)
    };
    let warmup = Duration::from_secs(8);
    let slot = PRE + FAULT_MAX + observe;
    let total = warmup + slot * faults.len() as u32 + Duration::from_secs(3);
    let users = if o.long { 8 } else { 4 };
    say(&format!(
        "{} faults, {} s each, load {} users per instance for {} s",
        faults.len(),
        slot.as_secs(),
        users,
        total.as_secs()
    ));
    let loads: Vec<LoadRun> = instances
        .iter()
        .enumerate()
        .map(|(i, inst)| LoadRun::start(&o.load, i, &inst.base(), &scenario, users, total, dir))
        .collect::<Result<_, _>>()?;
    let ledger = Ledger::new(conversation, user);
    let stop = Arc::new(AtomicBool::new(false));
    let bases: Vec<String> = instances.iter().map(Instance::base).collect();
    let posting = ledger.run(
        bases.clone(),
        Duration::from_millis(if o.long { 50 } else { 100 }),
        stop.clone(),
    );
    let start = Instant::now();

    sleep_until(start + warmup).await;
    let rss_before = instances[0].rss_mib().unwrap_or(f64::NAN);
    let mut outcomes = Vec::new();
    for (k, &fault) in faults.iter().enumerate() {
        let slot_start = start + warmup + slot * k as u32;
        sleep_until(slot_start + PRE).await;
        say(&format!("fault {}: {}", fault.name(), fault.describe()));
        let inject_ms = now_ms();
        let (restore_ms, note) = inject(
            fault,
            &mut redis,
            &mut pg,
            &mut mcp,
            &mut instances,
            &ledger,
            &bases,
            &app_url,
            &http,
        )
        .await?;
        let slot_end = slot_start + slot;
        if Instant::now() > slot_start + PRE + FAULT_MAX {
            say(&format!(
                "  {} took longer than its {} s",
                fault.name(),
                FAULT_MAX.as_secs()
            ));
        }
        // Crashes show up as exits while the slot runs out.
        while Instant::now() < slot_end {
            for i in instances.iter_mut() {
                i.check_alive();
            }
            sleep(Duration::from_secs(1)).await;
        }
        outcomes.push(Outcome {
            fault,
            inject_ms,
            restore_ms,
            end_ms: now_ms(),
            note,
            row: Row::default(),
        });
    }

    // The loads end on their own; then the ledger stops and the queue drains.
    let mut recs: Vec<Rec> = Vec::new();
    for load in loads {
        recs.extend(load.finish(Duration::from_secs(60)).await?);
    }
    stop.store(true, Ordering::Relaxed);
    posting.await.map_err(Fail::any("the ledger"))?;
    let posted = ledger.posts.lock().expect("ledger lock").clone();
    recs.extend(posted.iter().map(|p| p.rec.clone()));

    let queue = DurableQueue::connect(
        &RedisConfig {
            url: redis.url(),
            ..RedisConfig::default()
        },
        DurableConfig {
            name: QUEUE.into(),
            ..DurableConfig::default()
        },
    )
    .await
    .map_err(Fail::any("connect to the queue"))?;
    // A queue that does not drain fails the run, but the tables still say what
    // happened; the tasks not done are then named with their status.
    let mut failures: Vec<String> = Vec::new();
    let drained_in = match drain(&queue).await {
        Ok(d) => d,
        Err(Fail(e)) => {
            let effects = sql::effects(&pg.admin_url("faults")).await?;
            let mut why = Vec::new();
            for p in posted.iter().filter(|p| {
                p.message_id
                    .is_some_and(|id| effects.get(&id).is_none_or(|&runs| runs == 0))
            }) {
                if let Some(id) = p.task_id.as_deref().and_then(|t| t.parse().ok()) {
                    why.push(match queue.status(id).await {
                        Ok(info) => format!(
                            "{id}: {:?} after {} attempts ({})",
                            info.status,
                            info.attempts,
                            info.error.unwrap_or_default()
                        ),
                        Err(e) => format!("{id}: {e}"),
                    });
                }
                if why.len() == 3 {
                    break;
                }
            }
            failures.push(format!("{e}; tasks not done: {}", why.join("; ")));
            DRAIN_BOUND
        }
    };
    let stats = queue.stats().await.map_err(Fail::any("queue stats"))?;
    let dead_letters = queue
        .dead_letters(1_000_000)
        .await
        .map_err(Fail::any("dead letters"))?;
    let dead: HashMap<i64, String> = dead_letters
        .iter()
        .filter_map(|d| Some((d.payload["message_id"].as_i64()?, d.error.clone())))
        .collect();
    let effects = sql::effects(&pg.admin_url("faults")).await?;
    let rss_after = instances[0].rss_mib().unwrap_or(f64::NAN);

    // ---- checks ----
    for i in instances.iter_mut() {
        i.check_alive();
        failures.extend(i.crashes.iter().cloned());
    }
    let accepted: Vec<(u64, i64)> = posted
        .iter()
        .filter_map(|p| Some((p.rec.start_ms, p.message_id?)))
        .collect();
    // A fault's window opens PRE before it and closes PRE before the next one, so a
    // request that started just before a fault and was caught by it counts for it.
    let pre = PRE.as_millis() as u64;
    for k in 0..outcomes.len() {
        let from = outcomes[k].inject_ms - pre;
        let to = outcomes
            .get(k + 1)
            .map_or(u64::MAX, |next| next.inject_ms - pre);
        let row = judge(&outcomes[k], from, to, &recs, &accepted, &effects, &dead);
        outcomes[k].row = row;
    }
    let lost: Vec<i64> = accepted
        .iter()
        .filter(|(_, id)| effects.get(id).is_none_or(|&runs| runs == 0) && !dead.contains_key(id))
        .map(|&(_, id)| id)
        .collect();
    if !lost.is_empty() {
        failures.push(format!(
            "{} accepted tasks were neither done nor dead-lettered: messages {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        ));
    }
    // cortex-load's posts carry no ids: count them. Every 201 made a task; every task
    // is done or dead. More effects than 201s are posts whose answer was lost after
    // the task was queued (a timeout or cut connection, counted as failed by the caller).
    let load_accepted = recs.iter().filter(|r| r.post && r.status == 201).count();
    let done = effects.values().filter(|&&runs| runs > 0).count();
    let dead_or_done = done + dead.len();
    if dead_or_done < load_accepted {
        failures.push(format!(
            "{load_accepted} posts were answered 201 (suite and cortex-load) but only {dead_or_done} tasks are done or dead-lettered"
        ));
    }
    let duplicates = effects.values().filter(|&&runs| runs > 1).count();
    let extra_runs: i64 = effects.values().map(|&runs| (runs - 1).max(0)).sum();
    // Unknown (NaN) memory fails too.
    if !rss_after
        .partial_cmp(&(rss_before + RSS_GROWTH_BOUND_MIB))
        .is_some_and(std::cmp::Ordering::is_le)
    {
        failures.push(format!(
            "instance 0 grew from {rss_before:.1} MiB to {rss_after:.1} MiB (bound: +{RSS_GROWTH_BOUND_MIB} MiB)"
        ));
    }
    for log in instances.iter().map(Instance::log) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("panicked") {
            failures.push(format!("{} has a panic", log.display()));
        }
    }
    for out in &outcomes {
        for f in &out.row.failures {
            failures.push(format!("{}: {f}", out.fault.name()));
        }
    }

    // ---- soak (long form) ----
    let soak = if o.soak > Duration::ZERO {
        Some(soak_run(o, &instances, &scenario, dir, users).await?)
    } else {
        None
    };
    if let Some((_, soak_failures)) = &soak {
        failures.extend(soak_failures.iter().cloned());
    }

    // ---- report ----
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Fault suite ({} form): {} requests recorded, {} posts answered 201 ({} of them the suite's, with their ids).\n",
        if o.long { "long" } else { "short" },
        recs.len(),
        load_accepted,
        accepted.len(),
    );
    let _ = writeln!(
        report,
        "| fault | what callers saw | time to recover | tasks accepted (suite) | lost | duplicates | dead-lettered |\n|---|---|---|---|---|---|---|"
    );
    for out in &outcomes {
        let r = &out.row;
        let _ = writeln!(
            report,
            "| {} | {}{} | {:.1} s | {} | {} | {} | {} |",
            out.fault.describe(),
            r.saw,
            if out.note.is_empty() {
                String::new()
            } else {
                format!("; {}", out.note)
            },
            r.recover_ms as f64 / 1000.0,
            r.accepted,
            r.lost,
            r.duplicates,
            r.dead,
        );
    }
    let _ = writeln!(
        report,
        "\nAfter the run: queue drained in {:.1} s; queue counters enqueued {} completed {} failed {} retried {}; \
         {} messages stored, {} summaries done ({} run more than once, {} extra runs), {} dead letters; \
         tasks lost: {}; instance 0 resident memory {:.1} MiB at the first fault, {:.1} MiB at the end.",
        drained_in.as_secs_f64(),
        stats.enqueued,
        stats.completed,
        stats.failed,
        stats.retried,
        effects.len(),
        done,
        duplicates,
        extra_runs,
        dead.len(),
        lost.len(),
        rss_before,
        rss_after,
    );
    let max_latency = recs.iter().map(|r| r.dur_ms).fold(0.0, f64::max);
    let _ = writeln!(
        report,
        "Slowest answer of the run: {max_latency:.0} ms (request timeout {} s).",
        REQUEST_TIMEOUT.as_secs()
    );
    if let Some((line, _)) = &soak {
        let _ = writeln!(report, "{line}");
    }
    if failures.is_empty() {
        let _ = writeln!(report, "\nAll checks passed.");
    } else {
        let _ = writeln!(report, "\nFAILED checks:");
        for f in &failures {
            let _ = writeln!(report, "- {f}");
        }
    }
    print!("{report}");
    std::fs::write(o.out.join("report.md"), &report).map_err(Fail::io("write the report"))?;
    let results = json!({
        "form": if o.long { "long" } else { "short" },
        "faults": outcomes.iter().map(|out| json!({
            "fault": out.fault.name(),
            "inject_ms": out.inject_ms,
            "restore_ms": out.restore_ms,
            "end_ms": out.end_ms,
            "recover_ms": out.row.recover_ms,
            "max_latency_ms": out.row.max_latency_ms,
            "reads_ok_during": out.row.reads_ok_during,
            "accepted": out.row.accepted,
            "lost": out.row.lost,
            "duplicates": out.row.duplicates,
            "dead": out.row.dead,
            "saw": out.row.saw,
            "failures": out.row.failures,
        })).collect::<Vec<Value>>(),
        "lost": lost.len(),
        "failures": failures,
    });
    std::fs::write(o.out.join("results.json"), results.to_string())
        .map_err(Fail::io("write the results"))?;

    for i in instances.iter_mut() {
        i.stop().await?;
    }

    Ok(failures.is_empty())
}

fn say(line: &str) {
    eprintln!("faults: {line}");
}

async fn wait_healthy(http: &reqwest::Client, base: &str) -> Result<(), Fail> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/ready")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Fail(format!("{base}/ready did not answer 200 within 60 s")));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// A user, a workspace and a conversation for the load to read and post to.
async fn seed(http: &reqwest::Client, base: &str) -> Result<(i64, i64, i64), Fail> {
    let post = |path: &str, body: Value| {
        let request = http.post(format!("{base}{path}")).json(&body).send();
        async move {
            let r = request.await.map_err(Fail::any("seed"))?;
            let status = r.status();
            let body: Value = r.json().await.map_err(Fail::any("seed body"))?;
            if status.as_u16() != 201 {
                return Err(Fail(format!("seed answered {status}: {body}")));
            }
            body["id"]
                .as_i64()
                .ok_or_else(|| Fail(format!("seed: no id in {body}")))
        }
    };
    let user = post(
        "/users",
        json!({"name": "Faults", "email": "faults@example.com"}),
    )
    .await?;
    let workspace = post(
        "/workspaces",
        json!({"name": "Faults", "owner_id": user, "metadata": {"team": "faults"}}),
    )
    .await?;
    let conversation = post(
        &format!("/workspaces/{workspace}/conversations"),
        json!({"topic": "Faults", "participants": [user]}),
    )
    .await?;
    Ok((user, workspace, conversation))
}

/// Break one thing; answers when it was restored and a note on what was done.
#[allow(clippy::too_many_arguments)]
async fn inject(
    fault: Fault,
    redis: &mut Redis,
    pg: &mut Postgres,
    mcp: &mut Mcp,
    instances: &mut [Instance],
    ledger: &Ledger,
    bases: &[String],
    app_url: &str,
    http: &reqwest::Client,
) -> Result<(u64, String), Fail> {
    let note = match fault {
        Fault::RedisStop => {
            redis.stop().await?;
            sleep(HOLD).await;
            redis.up().await?;
            String::new()
        }
        Fault::PgRestart => {
            pg.stop_fast().await?;
            pg.up().await?;
            String::new()
        }
        Fault::PgFull => {
            let (taken, left) = sql::hog(&pg.admin_url("postgres"), app_url, HOLD).await?;
            format!("the other client held {taken} connections; the service kept {left}")
        }
        Fault::McpKill => {
            mcp.kill().await?;
            sleep(HOLD).await;
            mcp.up().await?;
            String::new()
        }
        Fault::InstanceKill => {
            // Tasks in flight: a burst through the instance, then the kill at once.
            let mut burst = tokio::task::JoinSet::new();
            for _ in 0..BURST {
                let ledger = ledger.clone();
                let base = bases[1].clone();
                burst.spawn(async move { ledger.post(1, &base).await });
            }
            while burst.join_next().await.is_some() {}
            instances[1].kill().await?;
            let killed = now_ms();
            sleep(INSTANCE_DOWN).await;
            instances[1].up().await?;
            wait_healthy(http, &bases[1]).await?;
            format!(
                "instance 1 answered again {:.1} s after the kill",
                (now_ms() - killed) as f64 / 1000.0
            )
        }
        Fault::RedisPause => {
            let pause = HOLD + Duration::from_secs(2);
            redis.pause(pause.as_millis() as u64).await?;
            sleep(pause).await;
            String::new()
        }
    };
    Ok((now_ms(), note))
}

/// The checks of one fault over the requests that started in `[from, to)`.
fn judge(
    out: &Outcome,
    from: u64,
    to: u64,
    recs: &[Rec],
    accepted: &[(u64, i64)],
    effects: &HashMap<i64, i64>,
    dead: &HashMap<i64, String>,
) -> Row {
    let mut row = Row::default();
    let window: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.start_ms >= from && r.start_ms < to)
        .collect();
    // The killed instance's callers see it gone until it is back: expected, not counted.
    let down = |r: &Rec| {
        out.fault == Fault::InstanceKill && r.instance == 1 && r.start_ms <= out.restore_ms
    };
    let mut saw: BTreeMap<(bool, u16, String), usize> = BTreeMap::new();
    let mut undocumented: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_error_end = 0u64;
    let mut last_error: Option<&Rec> = None;
    let mut down_errors = 0usize;
    for r in &window {
        *saw.entry((r.post, r.status, r.error.clone().unwrap_or_default()))
            .or_default() += 1;
        row.max_latency_ms = row.max_latency_ms.max(r.dur_ms);
        if !r.failed() {
            if !r.post && r.status == 200 && r.start_ms <= out.restore_ms {
                row.reads_ok_during += 1;
            }
            continue;
        }
        if down(r) {
            down_errors += 1;
            continue;
        }
        if r.end_ms() > last_error_end {
            last_error_end = r.end_ms();
            last_error = Some(*r);
        }
        // Documented: 503 (a dependency is unavailable, with Retry-After) and 504 (the
        // request timeout). A transport error or any other 5xx is not.
        if !matches!(r.status, 503 | 504) {
            let what = match (&r.error, r.status) {
                (Some(e), 0) => format!("no answer ({e})"),
                (e, s) => format!("{s} {}", e.clone().unwrap_or_default()),
            };
            *undocumented.entry(what).or_default() += 1;
        }
    }
    row.saw = saw
        .iter()
        .filter(|((_, status, _), _)| *status != 200 && *status != 201)
        .map(|((post, status, code), n)| {
            let method = if *post { "POST" } else { "GET" };
            match (*status, code.as_str()) {
                (0, e) => format!("{method} no answer ({e}) x{n}"),
                (s, "") => format!("{method} {s} x{n}"),
                (s, c) => format!("{method} {s} {c} x{n}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let ok: usize = saw
        .iter()
        .filter(|((_, s, _), _)| *s == 200 || *s == 201)
        .map(|(_, n)| n)
        .sum();
    row.saw = if row.saw.is_empty() {
        format!("no errors; {ok} answered 2xx")
    } else {
        format!("{}; {ok} answered 2xx", row.saw)
    };
    if down_errors > 0 {
        row.saw.push_str(&format!(
            "; {down_errors} requests to the killed instance found it gone"
        ));
    }
    row.recover_ms = last_error_end.saturating_sub(out.restore_ms);
    if row.recover_ms > RECOVERY_BOUND.as_millis() as u64 {
        row.failures.push(format!(
            "errors went on {:.1} s after the fault ended (bound {} s); the last: {:?}",
            row.recover_ms as f64 / 1000.0,
            RECOVERY_BOUND.as_secs(),
            last_error,
        ));
    }
    if !undocumented.is_empty() {
        row.failures
            .push(format!("undocumented errors: {undocumented:?}"));
    }
    let latency_bound = (REQUEST_TIMEOUT + LATENCY_SLACK).as_secs_f64() * 1000.0;
    if row.max_latency_ms > latency_bound {
        let slowest = window.iter().max_by(|a, b| a.dur_ms.total_cmp(&b.dur_ms));
        row.failures.push(format!(
            "an answer took {:.0} ms (bound {latency_bound:.0} ms): {slowest:?}, {} ms after the fault began",
            row.max_latency_ms,
            slowest.map_or(0, |r| r.start_ms.saturating_sub(out.inject_ms) as i64),
        ));
    }
    if out.fault.reads_must_go_on() && row.reads_ok_during == 0 {
        row.failures
            .push("no read was served while the fault lasted".into());
    }
    let ids: HashSet<i64> = accepted
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|&(_, id)| id)
        .collect();
    row.accepted = ids.len();
    for id in &ids {
        let runs = effects.get(id).map_or(0, |&runs| runs);
        if runs > 1 {
            row.duplicates += 1;
        }
        if dead.contains_key(id) {
            row.dead += 1;
        } else if runs == 0 {
            row.lost += 1;
        }
    }
    row
}

/// Wait until no task is queued or running (bounded).
async fn drain(queue: &DurableQueue) -> Result<Duration, Fail> {
    let started = Instant::now();
    let bound = DRAIN_BOUND;
    loop {
        let stats = queue.stats().await.map_err(Fail::any("queue stats"))?;
        if stats.queued == 0 && stats.running == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > bound {
            return Err(Fail(format!(
                "the queue did not drain within {bound:?}: {stats:?}"
            )));
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// The soak: load on both instances for `o.soak`, memory sampled every few seconds,
/// then p99 and error rate per interval from the records; writes `soak.svg`.
async fn soak_run(
    o: &Options,
    instances: &[Instance],
    scenario: &Path,
    dir: &Path,
    users: u32,
) -> Result<(String, Vec<String>), Fail> {
    say(&format!("soak: {} s", o.soak.as_secs()));
    let soak_dir = dir.join("soak");
    std::fs::create_dir_all(&soak_dir).map_err(Fail::io("soak dir"))?;
    let loads: Vec<LoadRun> = instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            LoadRun::start(&o.load, i, &inst.base(), scenario, users, o.soak, &soak_dir)
        })
        .collect::<Result<_, _>>()?;
    let start_ms = now_ms();
    let step = Duration::from_secs(10);
    let mut rss: Vec<(u64, Vec<f64>)> = Vec::new();
    let end = Instant::now() + o.soak;
    while Instant::now() < end {
        rss.push((
            now_ms(),
            instances
                .iter()
                .map(|i| i.rss_mib().unwrap_or(f64::NAN))
                .collect(),
        ));
        sleep(step.min(end.saturating_duration_since(Instant::now()))).await;
    }
    let mut recs = Vec::new();
    for load in loads {
        recs.extend(load.finish(Duration::from_secs(120)).await?);
    }
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for (t, mem) in &rss {
        let bin: Vec<&Rec> = recs
            .iter()
            .filter(|r| r.start_ms >= *t && r.start_ms < t + step.as_millis() as u64)
            .collect();
        let p99 = p99_ms(bin.iter().copied());
        let failed = bin.iter().filter(|r| r.failed()).count();
        let error_pct = if bin.is_empty() {
            0.0
        } else {
            100.0 * failed as f64 / bin.len() as f64
        };
        samples.push(plot::Sample {
            t_s: (t - start_ms) as f64 / 1000.0,
            rss_mib: mem.clone(),
            p99_ms: p99,
            error_pct,
        });
    }
    let title = format!(
        "Soak: two example-service instances on PostgreSQL + Redis + MCP, {} min of cortex-load ({} users each)",
        o.soak.as_secs() / 60,
        users
    );
    let svg_path = o.out.join("soak.svg");
    std::fs::write(&svg_path, plot::svg(&title, &samples))
        .map_err(Fail::io("write the soak plot"))?;
    let failed = recs.iter().filter(|r| r.failed()).count();
    if failed > 0 {
        failures.push(format!("soak: {failed} of {} requests failed", recs.len()));
    }
    let first = rss
        .iter()
        .find(|(_, m)| m[0].is_finite())
        .map(|(_, m)| m[0]);
    let last = rss
        .iter()
        .rev()
        .find(|(_, m)| m[0].is_finite())
        .map(|(_, m)| m[0]);
    if let (Some(a), Some(b)) = (first, last)
        && b > a + RSS_GROWTH_BOUND_MIB
    {
        failures.push(format!("soak: instance 0 grew from {a:.1} to {b:.1} MiB"));
    }
    let p99 = p99_ms(recs.iter());
    let line = format!(
        "Soak: {} s, {} requests, {failed} failed, p99 {p99:.1} ms, instance 0 memory {:.1} -> {:.1} MiB; plot {}.",
        o.soak.as_secs(),
        recs.len(),
        first.unwrap_or(f64::NAN),
        last.unwrap_or(f64::NAN),
        svg_path.display()
    );
    Ok((line, failures))
}

/// The 99th percentile of the records' durations (nearest rank), NaN for none.
fn p99_ms<'a>(recs: impl Iterator<Item = &'a Rec>) -> f64 {
    let mut ms: Vec<f64> = recs.map(|r| r.dur_ms).collect();
    ms.sort_by(f64::total_cmp);
    let rank = (ms.len() as f64 * 0.99).ceil() as usize;
    ms.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
}
