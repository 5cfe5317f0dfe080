//! `cortex-load`: an HTTP load generator (closed or open loop) over keep-alive
//! HTTP/1.1, or HTTP/2 (`--http2`, or ALPN on `https://`).
//!
//! ```text
//! cortex-load http://127.0.0.1:8080/health -c 50 -n 10000
//! cortex-load http://127.0.0.1:8080/ -c 64 -z 30s -q 2000 --hgrm lat.hgrm \
//!     --json --fail-on 'p99>250ms' --fail-on 'error-rate>1%'
//! ```
//!
//! Exit status:
//! - 0: the run completed and no `--fail-on` threshold was crossed (failed requests
//!   are in the report);
//! - 1: it could not run (bad input, unreachable target, output error);
//! - 2: command-line usage error (unknown flag, unparsable value or `--fail-on`);
//! - 3: a `--fail-on` threshold was crossed (each one is named on stderr);
//! - 4: no request succeeded (every request failed, or none completed);
//! - 130: a second Ctrl-C ended the process at once (the first one ends the run
//!   early and still prints the summary and writes the files).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use cortex_load::{HttpVersion, LoadConfig, LoadTest, Scenario, Summary};
use cortex_support::duration::parse_duration;

mod hgrm;
mod threshold;

use threshold::Threshold;

/// The run could not start or its files could not be written.
const EXIT_FAILURE: u8 = 1;
/// A `--fail-on` threshold was crossed.
const EXIT_THRESHOLD: u8 = 3;
/// No request succeeded.
const EXIT_NO_SUCCESS: u8 = 4;
/// A second Ctrl-C: 128 + SIGINT, as shells report it.
const EXIT_INTERRUPTED: i32 = 130;

/// Simulated users when neither `-c` nor `--users` is given.
const DEFAULT_USERS: &str = "50";

/// HTTP load generator: simulated users with keep-alive connections, closed loop or
/// open loop at a fixed rate (latency from the intended send time, as wrk2).
///
/// Durations (-z/--duration, --ramp-up, --think-time, --timeout) take a number with a
/// unit (500ms, 30s, 2m, 1h) or a plain number of seconds.
///
/// Exit status: 0 ok; 1 could not run; 2 usage error; 3 a --fail-on threshold was
/// crossed; 4 no request succeeded; 130 a second Ctrl-C (the first ends the run early
/// and still prints the summary).
#[derive(Debug, Parser)]
#[command(name = "cortex-load", version)]
#[command(group(ArgGroup::new("where").required(true).args(["target", "url"])))]
#[command(group(ArgGroup::new("amount").required(true).args(["requests_per_user", "duration", "requests"])))]
struct Args {
    /// Target, `http://host[:port][/path][?query]`, or `https://...` when built with
    /// the `tls` feature. Without --path or --scenario-file, its path and query are
    /// what every request asks for. Requests go only to this host and port.
    #[arg(value_name = "URL")]
    target: Option<String>,
    /// The target, as the positional URL (give one of the two).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// JSON array of scenarios: {"name","endpoint","method","payload","headers","weight"}.
    /// The URL's path is then the base path every endpoint is joined to.
    #[arg(long, conflicts_with_all = ["path", "method", "body", "body_file", "header"])]
    scenario_file: Option<PathBuf>,
    /// Path (and query) of the single scenario (default: the URL's path and query);
    /// the URL's path is then a base path it is joined to.
    #[arg(long)]
    path: Option<String>,
    /// Method of the single scenario.
    #[arg(short = 'm', long, default_value = "GET")]
    method: String,
    /// JSON body of the single scenario (sent with content-type: application/json).
    #[arg(short = 'd', long, value_name = "JSON", conflicts_with = "body_file")]
    body: Option<String>,
    /// JSON body of the single scenario, read from this file.
    #[arg(short = 'D', long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// Header `K: V` of the single scenario (repeatable).
    #[arg(short = 'H', long, value_name = "K:V")]
    header: Vec<String>,
    /// Simulated users (connections), one keep-alive connection each.
    #[arg(short = 'c', long, visible_alias = "connections", default_value = DEFAULT_USERS)]
    users: u32,
    /// Total requests, spread evenly over the users (rounded up to a multiple of the
    /// users, with a note); no think time unless --think-time is given.
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Requests per user (closed loop), or users × this in total (open loop).
    #[arg(long)]
    requests_per_user: Option<u64>,
    /// Run this long instead (500ms, 30s, 2m, or plain seconds).
    #[arg(short = 'z', long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Open loop: total requests per second across all users.
    #[arg(short = 'q', long)]
    rate: Option<f64>,
    /// Spread user starts over this period (500ms, 30s, 2m, or plain seconds).
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    ramp_up: Duration,
    /// Pause between a user's requests, closed loop (100ms, 0.5s, or plain seconds).
    /// Default: 100ms with --requests-per-user, 0 with -n, --duration or --rate.
    #[arg(long, value_parser = parse_duration)]
    think_time: Option<Duration>,
    /// Per-request timeout, connecting included (500ms, 30s, 2m, or plain seconds).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Bearer token.
    #[arg(long)]
    token: Option<String>,
    /// Write results: .json (summary + every request), .csv (every request, summary in
    /// `<name>.summary.json`) or .txt (report).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write a latency-by-percentile plot (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write the latency percentile distribution in HdrHistogram's text format
    /// (.hgrm, values in ms), for HdrHistogram plotters.
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
    /// Print the summary as JSON on stdout (and nothing else there), with the
    /// --fail-on verdicts under "thresholds".
    #[arg(long)]
    json: bool,
    /// Fail the run (exit 3) when METRIC OP VALUE holds, e.g. 'p99>250ms',
    /// 'error-rate>1%', 'rps<500', 'failures>0' (repeatable). Metrics: error-rate (%),
    /// failures, rps, min, mean, p50, p90, p95, p99, p99.9, max (a duration with its
    /// unit); OP: > >= < <=.
    #[arg(long, value_name = "THRESHOLD", value_parser = threshold::parse)]
    fail_on: Vec<Threshold>,
    /// Load-generator threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// https:// targets: trust only the CA certificates of this PEM file (instead of
    /// the bundled web roots). Needs the `tls` feature.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// https:// targets: do not verify the server certificate (the traffic is still
    /// encrypted, with whoever answers). Needs the `tls` feature.
    #[arg(long, conflicts_with = "cacert")]
    insecure: bool,
    /// HTTP version: auto (HTTP/1.1 on http://; on https:// the server's pick by ALPN,
    /// h2 or http/1.1), 1.1, or 2 (ALPN h2 only on https://, prior knowledge (h2c) on
    /// http://). HTTP/2 needs the `http2` feature (part of `tls`).
    #[arg(long, value_name = "VERSION", default_value = "auto", value_parser = parse_http_version)]
    http_version: HttpVersion,
    /// Use HTTP/2: the same as --http-version 2.
    #[arg(long, conflicts_with = "http_version")]
    http2: bool,
}

fn parse_http_version(s: &str) -> Result<HttpVersion, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an HTTP version: expected auto, 1.1 or 2"))
}

/// The target URL and the single scenario's path: without --path and
/// --scenario-file, `http://h/p?q` becomes the target `http://h` and the path `/p?q`,
/// so a URL is asked for exactly as written. A URL that does not parse is passed on
/// whole, for the configuration check to name it.
fn split_url(args: &Args) -> (String, Option<String>) {
    let url = args
        .target
        .as_deref()
        .or(args.url.as_deref())
        .unwrap_or_default()
        .to_owned();
    if args.path.is_some() || args.scenario_file.is_some() {
        return (url, args.path.clone());
    }
    match url.parse::<http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => {
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                let path = if path.is_empty() { "/" } else { path };
                (format!("{scheme}://{authority}"), Some(path.to_owned()))
            }
            _ => (url, None),
        },
        Err(_) => (url, None),
    }
}

fn scenarios(args: &Args, path: Option<String>) -> Result<Vec<Scenario>, String> {
    if let Some(file) = &args.scenario_file {
        return Scenario::load_file(file).map_err(|e| cortex_support::error_chain(&e));
    }
    let mut headers = BTreeMap::new();
    for h in &args.header {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("invalid --header {h:?}: expected K:V"))?;
        headers.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let payload =
        match (&args.body, &args.body_file) {
            (Some(text), _) => Some(
                serde_json::from_str(text).map_err(|e| format!("invalid --body: not JSON: {e}"))?,
            ),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read --body-file {}: {e}", file.display()))?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    format!("invalid --body-file {}: not JSON: {e}", file.display())
                })?)
            }
            (None, None) => None,
        };
    let endpoint = path.unwrap_or_default();
    Ok(vec![Scenario {
        name: if endpoint.is_empty() {
            "/".to_owned()
        } else {
            endpoint.clone()
        },
        endpoint,
        method: args.method.clone(),
        payload,
        headers,
        weight: 1.0,
    }])
}

/// Users and requests per user for `-n total` over `-c users`: at most `total` users,
/// each sending the same count, rounded up so no request of the total is dropped.
fn spread(total: u64, users: u32) -> (u32, u64) {
    let users = u32::try_from(total).map_or(users, |t| users.min(t)).max(1);
    (users, total.div_ceil(u64::from(users)))
}

fn config(args: &Args) -> Result<LoadConfig, String> {
    let (url, path) = split_url(args);
    let (users, requests_per_user, think_time) = match args.requests {
        Some(total) if args.users > 0 => {
            let (users, per_user) = spread(total, args.users);
            let sent = per_user * u64::from(users);
            if sent != total {
                eprintln!(
                    "cortex-load: -n {total} over {users} users: sending {sent} ({per_user} per user)"
                );
            }
            // A request count as a load generator means it: back to back.
            (
                users,
                per_user,
                Some(args.think_time.unwrap_or(Duration::ZERO)),
            )
        }
        // Zero users: let the configuration check name them.
        Some(total) => (args.users, total, args.think_time),
        None => (
            args.users,
            args.requests_per_user.unwrap_or(0),
            args.think_time,
        ),
    };
    Ok(LoadConfig {
        url,
        scenarios: scenarios(args, path)?,
        users,
        requests_per_user,
        duration: args.duration,
        rate: args.rate,
        ramp_up: args.ramp_up,
        think_time,
        timeout: args.timeout,
        token: args.token.clone(),
        output: args.output.clone(),
        progress: !args.quiet,
        threads: args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
        ca_file: args.cacert.clone(),
        insecure: args.insecure,
        http_version: if args.http2 {
            HttpVersion::Http2
        } else {
            args.http_version
        },
    })
}

/// Write `path` through a temporary file, naming it in the error.
fn write_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    cortex_support::file::write_atomic(path, |out| out.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Ctrl-C: the first ends the run early (the summary and files still come), a second
/// ends the process at once. The listener is registered before the run starts, so no
/// Ctrl-C falls between two waits.
fn on_ctrl_c(test: &LoadTest) -> Result<(), String> {
    let stop = test.stop_handle();
    #[cfg(unix)]
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot listen for Ctrl-C: {e}"))?;
    tokio::spawn(async move {
        #[cfg(unix)]
        let first = sigint.recv().await.is_some();
        #[cfg(not(unix))]
        let first = tokio::signal::ctrl_c().await.is_ok();
        if !first {
            return;
        }
        eprintln!("\ncortex-load: stopping (Ctrl-C); press Ctrl-C again to quit at once");
        stop.stop();
        #[cfg(unix)]
        let second = sigint.recv().await.is_some();
        #[cfg(not(unix))]
        let second = tokio::signal::ctrl_c().await.is_ok();
        if second {
            eprintln!("cortex-load: interrupted");
            std::process::exit(EXIT_INTERRUPTED);
        }
    });
    Ok(())
}

/// Print the summary (text or JSON), write the files, and decide the exit status.
fn finish(args: &Args, summary: &Summary) -> Result<ExitCode, String> {
    let verdicts: Vec<_> = args.fail_on.iter().map(|t| t.check(summary)).collect();
    if args.json {
        let mut v = serde_json::to_value(summary).map_err(|e| e.to_string())?;
        if let Some(map) = v.as_object_mut() {
            map.insert(
                "thresholds".to_owned(),
                serde_json::to_value(&verdicts).map_err(|e| e.to_string())?,
            );
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", summary.report());
    }
    if let Some(plot) = &args.plot {
        write_file(plot, &summary.plot_svg())?;
    }
    if let Some(path) = &args.hgrm {
        write_file(path, &hgrm::percentile_distribution(summary))?;
    }
    let mut code = ExitCode::SUCCESS;
    let crossed: Vec<_> = verdicts.iter().filter(|v| v.crossed).collect();
    for v in &crossed {
        eprintln!(
            "cortex-load: threshold crossed: {} ({})",
            v.threshold, v.shown
        );
    }
    if !crossed.is_empty() {
        code = ExitCode::from(EXIT_THRESHOLD);
    }
    if summary.successes == 0 {
        eprintln!(
            "cortex-load: no request succeeded ({} completed, {} failed)",
            summary.total, summary.failures
        );
        code = ExitCode::from(EXIT_NO_SUCCESS);
    }
    Ok(code)
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let test = LoadTest::new(config(&args)?).map_err(|e| cortex_support::error_chain(&e))?;
    on_ctrl_c(&test)?;
    let summary = test
        .run()
        .await
        .map_err(|e| cortex_support::error_chain(&e))?;
    finish(&args, &summary)
}

/// A fmt subscriber on stderr honouring `RUST_LOG`, `warn` when it is unset, so the
/// libraries' warnings (and, asked for, their debug spans) show beside the report. A
/// `RUST_LOG` that does not parse is named and `warn` is used.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("cortex-load: RUST_LOG={v:?} is not a valid filter ({e}); using warn");
            EnvFilter::new("warn")
        }),
        Err(_) => EnvFilter::new("warn"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    // The users run on their own threads (--threads); this runtime only waits,
    // writes progress and files.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cortex-load: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cortex-load: error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
