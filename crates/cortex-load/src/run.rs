//! The run: one task per simulated user, each with its own keep-alive HTTP/1.1
//! connection, in a closed or an open loop.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cortex_metrics::Histogram;
use http::Method;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use super::config::{HttpVersion, LoadConfig, OutputFormat, Plan, Prepared};
use super::error::{LoadError, Result};
use super::h1;
use super::output::{Record, Writer};
use super::progress::{self, UserProgress};
use super::summary::{
    EndpointStats, ErrorGroup, ErrorKind, Latency, LatencyBuckets, Mode, Summary,
};

/// Records sent to the writer per channel message: batching keeps the channel out of
/// the per-request cost.
const BATCH: usize = 64;

/// A validated load test, ready to run.
///
/// ```no_run
/// # async fn demo() -> Result<(), cortex_load::LoadError> {
/// use cortex_load::{LoadConfig, LoadTest, Scenario};
///
/// let config = LoadConfig {
///     url: "http://127.0.0.1:8080".into(),
///     scenarios: vec![Scenario::get("/health")],
///     users: 8,
///     requests_per_user: 100,
///     ..LoadConfig::default()
/// };
/// let summary = LoadTest::new(config)?.run().await?;
/// println!("{}", summary.report());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LoadTest {
    config: LoadConfig,
    plan: Arc<Plan>,
    stop: Arc<Stop>,
}

/// Ends a running [`LoadTest`] early (e.g. on Ctrl-C): users send no new request,
/// those in flight finish or time out, and `run` returns the summary so far. A user
/// waiting (its ramp-up start, its think time, its open-loop slot, a connection being
/// opened) stops waiting at once.
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<Stop>);

impl StopHandle {
    /// Ask the run to stop.
    pub fn stop(&self) {
        self.0.stop();
    }
}

/// The stop signal: a flag read between requests (no wake-up cost per request) and a
/// notification that ends every wait at once.
#[derive(Debug, Default)]
struct Stop {
    flag: AtomicBool,
    /// `Notify` is not tied to a runtime, so it wakes users on every `--threads`
    /// runtime alike.
    notify: Notify,
}

impl Stop {
    fn stop(&self) {
        self.flag.store(true, Relaxed);
        self.notify.notify_waiters();
    }

    fn is_stopped(&self) -> bool {
        self.flag.load(Relaxed)
    }

    /// Resolves once the run is asked to stop (at once if it already was).
    async fn stopped(&self) {
        // Registered before the flag is read: a stop between the read and the wait
        // still wakes this one (`notify_waiters` reaches every `Notified` created).
        let notified = self.notify.notified();
        if self.is_stopped() {
            return;
        }
        notified.await;
    }

    /// `f`'s output, or `None` if the run is asked to stop first.
    async fn or_stop<F: Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.stopped() => None,
            r = f => Some(r),
        }
    }
}

/// Why [`send`] returned without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NoAnswer {
    /// The request failed: counted.
    Failed(ErrorKind),
    /// The run was asked to stop while the connection was being opened: nothing was
    /// sent, nothing is counted.
    Stopped,
}

impl From<ErrorKind> for NoAnswer {
    fn from(k: ErrorKind) -> Self {
        Self::Failed(k)
    }
}

/// What every user task reads.
#[derive(Debug)]
pub(crate) struct Shared {
    plan: Arc<Plan>,
    addr: SocketAddr,
    users: u32,
    per_user: u64,
    /// Open loop: total requests when running by count.
    total_slots: u64,
    /// Open loop: nanoseconds between two slots of the schedule.
    slot_nanos: Option<f64>,
    /// Open loop: the next slot of the schedule, taken by whichever user is free.
    next_slot: AtomicU64,
    pub(crate) start: Instant,
    start_unix_ms: u64,
    pub(crate) end: Option<Instant>,
    ramp_up: Duration,
    think: Duration,
    timeout: Duration,
    /// Latency in nanoseconds. Shared on purpose: the cortex-metrics histogram is
    /// lock-free and sharded per thread, so users on different cores do not contend,
    /// and it has no public merge for per-user copies.
    latency: Histogram,
    pub(crate) progress: Box<[UserProgress]>,
    pub(crate) expected: Option<u64>,
    stop: Arc<Stop>,
    /// Whether a connection spoke HTTP/2, for the summary's `http_version`.
    spoke_h2: AtomicBool,
    /// Whether a connection spoke HTTP/1.1.
    spoke_h1: AtomicBool,
}

/// Counts of one user, merged at the end.
#[derive(Debug, Default)]
struct UserStats {
    total: u64,
    successes: u64,
    bytes: u64,
    /// `(total, failures)` per scenario.
    per_scenario: Vec<(u64, u64)>,
    errors: HashMap<(usize, Failure), u64>,
}

/// A failure, as grouped in the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Failure {
    Status(u16),
    Error(ErrorKind),
}

impl LoadTest {
    /// Validate the configuration: zero users, zero requests, no scenarios, a bad URL
    /// or weight are refused with an error naming the value.
    pub fn new(config: LoadConfig) -> Result<Self> {
        let plan = Arc::new(config.plan()?);
        Ok(Self {
            config,
            plan,
            stop: Arc::new(Stop::default()),
        })
    }

    /// A handle to end the run early.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.stop))
    }

    /// The configuration.
    pub fn config(&self) -> &LoadConfig {
        &self.config
    }

    /// Run the test to its end: every request sent or the duration passed, then the
    /// requests in flight answered or timed out. Fails before sending anything if the
    /// target does not accept a connection or the output file cannot be created.
    pub async fn run(&self) -> Result<Summary> {
        let c = &self.config;
        let addr = preflight(&self.plan.target.addr, c.timeout).await?;
        let format = c.output.as_deref().map(OutputFormat::of).transpose()?;
        let writer = match (&c.output, format) {
            (Some(path), Some(f @ (OutputFormat::Json | OutputFormat::Csv))) => {
                Some(Writer::start(path, f, &self.plan)?)
            }
            _ => None,
        };

        let start = Instant::now();
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let per_user = if c.duration.is_some() {
            u64::MAX
        } else {
            c.requests_per_user
        };
        let expected = c
            .duration
            .is_none()
            .then(|| c.requests_per_user.saturating_mul(u64::from(c.users)));
        let shared = Arc::new(Shared {
            plan: Arc::clone(&self.plan),
            addr,
            users: c.users,
            per_user,
            total_slots: expected.unwrap_or(u64::MAX),
            slot_nanos: c.rate.map(|r| 1e9 / r),
            next_slot: AtomicU64::new(0),
            start,
            start_unix_ms,
            end: c.duration.map(|d| start + d),
            ramp_up: c.ramp_up,
            think: c.effective_think_time(),
            timeout: c.timeout,
            latency: Histogram::new(),
            progress: (0..c.users).map(|_| UserProgress::default()).collect(),
            expected,
            stop: Arc::clone(&self.stop),
            spoke_h2: AtomicBool::new(false),
            spoke_h1: AtomicBool::new(false),
        });

        let progress = c.progress.then(|| progress::spawn(Arc::clone(&shared)));
        let mut merged = UserStats {
            per_scenario: vec![(0, 0); self.plan.scenarios.len()],
            ..UserStats::default()
        };
        if c.threads == 0 {
            let mut tasks = Vec::with_capacity(c.users as usize);
            for u in 0..c.users {
                let tx = writer.as_ref().map(Writer::sender);
                tasks.push(tokio::spawn(user(Arc::clone(&shared), u, tx)));
            }
            for t in tasks {
                // A user task only ends by returning; a panic would be a bug, and
                // losing its counts is better than losing the run.
                if let Ok(s) = t.await {
                    merged.merge(s);
                }
            }
        } else {
            for s in run_on_threads(&shared, c.threads, writer.as_ref()).await? {
                merged.merge(s);
            }
        }
        let elapsed = start.elapsed();
        if let Some(p) = progress {
            p.finish().await;
        }
        let summary = self.summarize(&shared, merged, elapsed);
        if let Some(w) = writer {
            w.finish(&summary).await?;
        }
        if let (Some(path), Some(OutputFormat::Text)) = (&c.output, format) {
            std::fs::write(path, summary.report()).map_err(|source| LoadError::Output {
                path: path.clone(),
                source,
            })?;
        }
        Ok(summary)
    }

    fn summarize(&self, shared: &Shared, s: UserStats, elapsed: Duration) -> Summary {
        let plan = &self.plan;
        // Scenarios may share an endpoint (different headers or bodies): failures are
        // grouped by what was sent to the server, endpoint and method.
        let mut grouped: std::collections::BTreeMap<(&str, &str, Failure), u64> =
            std::collections::BTreeMap::new();
        for (&(i, f), &count) in &s.errors {
            let p = &plan.scenarios[i];
            *grouped
                .entry((p.endpoint.as_str(), p.method.as_str(), f))
                .or_default() += count;
        }
        let mut errors: Vec<ErrorGroup> = grouped
            .into_iter()
            .map(|((endpoint, method, f), count)| {
                let (status, error) = match f {
                    Failure::Status(st) => (Some(st), None),
                    Failure::Error(k) => (None, Some(k)),
                };
                ErrorGroup {
                    endpoint: endpoint.to_owned(),
                    method: method.to_owned(),
                    status,
                    error,
                    count,
                }
            })
            .collect();
        errors.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.endpoint.cmp(&b.endpoint))
                .then_with(|| a.status.cmp(&b.status))
        });
        let endpoints = plan
            .scenarios
            .iter()
            .zip(&s.per_scenario)
            .map(|(p, &(total, failures))| EndpointStats {
                scenario: p.name.clone(),
                endpoint: p.endpoint.clone(),
                method: p.method.to_string(),
                total,
                failures,
            })
            .collect();
        let secs = elapsed.as_secs_f64();
        let failures = s.total - s.successes;
        Summary {
            mode: if self.config.rate.is_some() {
                Mode::Open
            } else {
                Mode::Closed
            },
            users: self.config.users,
            target_rate: self.config.rate,
            total: s.total,
            successes: s.successes,
            failures,
            success_rate: if s.total == 0 {
                0.0
            } else {
                s.successes as f64 * 100.0 / s.total as f64
            },
            bytes_received: s.bytes,
            duration_secs: secs,
            requests_per_sec: if secs > 0.0 {
                s.total as f64 / secs
            } else {
                0.0
            },
            latency: Latency::from_nanos(&shared.latency.snapshot()),
            endpoints,
            errors,
            percentiles: Summary::curve(&shared.latency),
            http_version: if shared.spoke_h2.load(Relaxed) {
                HttpVersion::Http2
            } else if shared.spoke_h1.load(Relaxed) {
                HttpVersion::Http1
            } else {
                match self.plan.http_version {
                    HttpVersion::Http2 => HttpVersion::Http2,
                    _ => HttpVersion::Http1,
                }
            },
            latency_buckets: Some(LatencyBuckets(shared.latency.buckets())),
        }
    }
}

impl UserStats {
    fn merge(&mut self, o: UserStats) {
        self.total += o.total;
        self.successes += o.successes;
        self.bytes += o.bytes;
        for (m, t) in self.per_scenario.iter_mut().zip(o.per_scenario) {
            m.0 += t.0;
            m.1 += t.1;
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// Run the users on `threads` dedicated single-threaded runtimes, users dealt
/// round-robin. Each connection then lives on one thread with its own I/O driver: no
/// work stealing, no cross-thread wake-ups, measurably more requests per CPU second
/// than one multi-threaded runtime.
async fn run_on_threads(
    shared: &Arc<Shared>,
    threads: usize,
    writer: Option<&Writer>,
) -> Result<Vec<UserStats>> {
    let threads = threads.min(shared.users as usize).max(1);
    let mut done = Vec::with_capacity(threads);
    for t in 0..threads {
        let shared = Arc::clone(shared);
        let txs: Vec<_> = (0..shared.users)
            .filter(|u| *u as usize % threads == t)
            .map(|u| (u, writer.map(Writer::sender)))
            .collect();
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| LoadError::Runtime { source })?;
        std::thread::Builder::new()
            .name(format!("cortex-load-{t}"))
            .spawn(move || {
                let stats = runtime.block_on(async move {
                    let tasks: Vec<_> = txs
                        .into_iter()
                        .map(|(u, tx)| tokio::spawn(user(Arc::clone(&shared), u, tx)))
                        .collect();
                    let mut all = Vec::with_capacity(tasks.len());
                    for task in tasks {
                        if let Ok(s) = task.await {
                            all.push(s);
                        }
                    }
                    all
                });
                let _ = result_tx.send(stats);
            })
            .map_err(|source| LoadError::Runtime { source })?;
        done.push(result_rx);
    }
    let mut all = Vec::with_capacity(shared.users as usize);
    for rx in done {
        // A thread that panicked drops its sender: its users' counts are lost, the
        // rest of the run is kept.
        if let Ok(stats) = rx.await {
            all.extend(stats);
        }
    }
    Ok(all)
}

/// Resolve the target and open (and drop) one connection, so that a wrong port fails
/// fast with a clear message instead of a run full of connect errors.
async fn preflight(addr: &str, timeout: Duration) -> Result<SocketAddr> {
    let unreachable = |source| LoadError::Unreachable {
        addr: addr.to_owned(),
        source,
    };
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| unreachable(std::io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| unreachable(std::io::Error::other("no address found")))?;
    tokio::time::timeout(timeout, TcpStream::connect(resolved))
        .await
        .map_err(|_| unreachable(std::io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?;
    Ok(resolved)
}

/// SplitMix64: a few instructions per number, plenty for picking scenarios.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One user: its connection, its loop, its local counts.
async fn user(shared: Arc<Shared>, u: u32, tx: Option<mpsc::Sender<Vec<Record>>>) -> UserStats {
    let s = &*shared;
    let n = s.plan.scenarios.len();
    let mut stats = UserStats {
        per_scenario: vec![(0, 0); n],
        ..UserStats::default()
    };
    // Users start evenly spread over the ramp-up.
    if !s.ramp_up.is_zero() {
        let offset = s.ramp_up.mul_f64(f64::from(u) / f64::from(s.users));
        let start = tokio::time::sleep_until((s.start + offset).into());
        if s.stop.or_stop(start).await.is_none() {
            return stats;
        }
    }
    let mut rng = Rng(u64::from(u).wrapping_mul(0xA076_1D64_78BD_642F) ^ s.start_unix_ms);
    let mut conn: Option<Conn> = None;
    let mut batch = tx.as_ref().map(|_| Vec::with_capacity(BATCH));
    // One timer per user for the request timeouts, re-armed lazily (see below):
    // cheaper than a new `timeout` or a timer reset per request.
    let mut timer = pin!(tokio::time::sleep(s.timeout));
    let progress = &s.progress[u as usize];
    let mut sent = 0u64;
    // The clock is read once per request in a closed loop without think time: the
    // end of one request is the start of the next.
    let mut now = Instant::now();
    loop {
        if s.stop.is_stopped() {
            break;
        }
        // When the request is sent, and when its latency counts from.
        let (sending, intended) = match s.slot_nanos {
            None => {
                if sent >= s.per_user || s.end.is_some_and(|e| now >= e) {
                    break;
                }
                (now, now)
            }
            Some(slot) => {
                let i = s.next_slot.fetch_add(1, Relaxed);
                if i >= s.total_slots {
                    break;
                }
                let t = s.start + Duration::from_nanos((i as f64 * slot) as u64);
                let now = Instant::now();
                // Past the end, stop even if the schedule is behind (the target is
                // slower than the rate): a backlog must not stretch the run.
                if s.end.is_some_and(|e| t >= e || now >= e) {
                    break;
                }
                if t > now {
                    // A free connection waiting for its slot: measure from the
                    // wake-up, so the timer's 1 ms granularity is not counted as
                    // server latency. Only a slot that is already due (every
                    // connection was busy) counts from its intended time.
                    if s.stop
                        .or_stop(tokio::time::sleep_until(t.into()))
                        .await
                        .is_none()
                    {
                        break;
                    }
                    let woke = Instant::now();
                    (woke, woke)
                } else {
                    (now, t)
                }
            }
        };
        let idx = s.plan.pick(rng.next());
        let scenario = &s.plan.scenarios[idx];
        let deadline = tokio::time::Instant::from_std(sending + s.timeout);
        let result = {
            let mut request = pin!(send(&mut conn, s, scenario));
            loop {
                tokio::select! {
                    biased;
                    r = &mut request => break r,
                    () = &mut timer => {
                        // The timer is re-armed lazily: it fires at the deadline of an
                        // earlier request, and only then moves to this one's. Most
                        // requests never touch the timer wheel.
                        if tokio::time::Instant::now() >= deadline {
                            timer.as_mut().reset(deadline + s.timeout);
                            break Err(NoAnswer::Failed(ErrorKind::Timeout));
                        }
                        timer.as_mut().reset(deadline);
                    }
                }
            }
        };
        let result = match result {
            Ok(answer) => Ok(answer),
            Err(NoAnswer::Failed(k)) => {
                // The connection is in an unknown state (a request may be in flight).
                conn = None;
                Err(k)
            }
            Err(NoAnswer::Stopped) => break,
        };
        now = Instant::now();
        let latency = now.saturating_duration_since(intended);
        s.latency.record_duration(latency);
        sent += 1;
        stats.total += 1;
        stats.per_scenario[idx].0 += 1;
        let (status, bytes, error) = match result {
            Ok((status, bytes)) => (status, bytes, None),
            Err(k) => (0, 0, Some(k)),
        };
        stats.bytes += bytes;
        let success = error.is_none() && status < 400;
        if success {
            stats.successes += 1;
        } else {
            stats.per_scenario[idx].1 += 1;
            let f = error.map_or(Failure::Status(status), Failure::Error);
            *stats.errors.entry((idx, f)).or_default() += 1;
        }
        progress.set(stats.total, stats.total - stats.successes);
        if let (Some(b), Some(tx)) = (batch.as_mut(), tx.as_ref()) {
            b.push(Record {
                scenario: idx as u32,
                status,
                error,
                duration_us: latency.as_micros() as u64,
                bytes,
                timestamp_ms: s.start_unix_ms
                    + intended.saturating_duration_since(s.start).as_millis() as u64,
            });
            if b.len() == BATCH {
                let full = std::mem::replace(b, Vec::with_capacity(BATCH));
                // The writer only goes away on an I/O error, reported at the end.
                let _ = tx.send(full).await;
                // A full channel may have made this wait: not the next request's.
                now = Instant::now();
            }
        }
        if s.slot_nanos.is_none() && !s.think.is_zero() {
            let next = now + s.think;
            if sent >= s.per_user || s.end.is_some_and(|e| next >= e) {
                break;
            }
            if s.stop.or_stop(tokio::time::sleep(s.think)).await.is_none() {
                break;
            }
            now = Instant::now();
        }
    }
    if let (Some(b), Some(tx)) = (batch, tx.as_ref())
        && !b.is_empty()
    {
        let _ = tx.send(b).await;
    }
    stats
}

/// What a user's connection runs over.
#[cfg(not(feature = "tls"))]
type Stream = TcpStream;
#[cfg(feature = "tls")]
type Stream = crate::tls::Stream;

/// A user's keep-alive connection. It is driven inside the user's task (no task of
/// its own), so a request costs no cross-task wake-up.
/// (hyper runs an HTTP/2 connection in tasks of its own.)
enum Conn {
    H1(h1::Conn<Stream>),
    #[cfg(feature = "http2")]
    H2(crate::http2::Conn),
}

impl Conn {
    /// Whether this connection speaks HTTP/2.
    fn is_h2(&self) -> bool {
        match self {
            Self::H1(_) => false,
            #[cfg(feature = "http2")]
            Self::H2(_) => true,
        }
    }

    /// Whether the next request may go on this connection.
    fn is_reusable(&self) -> bool {
        match self {
            Self::H1(c) => c.is_reusable(),
            #[cfg(feature = "http2")]
            Self::H2(c) => c.is_reusable(),
        }
    }
}

/// Send one request on the user's connection (opening it if needed) and read the
/// whole answer. Returns the status and the body size.
async fn send(
    conn: &mut Option<Conn>,
    s: &Shared,
    p: &Prepared,
) -> std::result::Result<(u16, u64), NoAnswer> {
    let mut fresh = false;
    loop {
        let c = match conn {
            Some(c) if c.is_reusable() => c,
            _ => {
                fresh = true;
                // Opening a connection is a wait the stop ends (a slow or silent
                // server); nothing was sent yet, so nothing is lost.
                let opened = s
                    .stop
                    .or_stop(connect(s.addr, &s.plan))
                    .await
                    .ok_or(NoAnswer::Stopped)??;
                if opened.is_h2() {
                    s.spoke_h2.store(true, Relaxed);
                } else {
                    s.spoke_h1.store(true, Relaxed);
                }
                conn.insert(opened)
            }
        };
        // `Ok(None)`: not the request's fault on a reused connection (the server
        // closed it while idle); send again once on a new one.
        let result = match c {
            Conn::H1(c) => match c.exchange(&p.h1, p.method == Method::HEAD).await {
                Ok(answer) => Ok(Some(answer)),
                Err(h1::Error::Stale) => Ok(None),
                Err(h1::Error::Http) => Err(ErrorKind::Http),
            },
            #[cfg(feature = "http2")]
            Conn::H2(c) => match c.exchange(p).await {
                Ok(answer) => Ok(Some(answer)),
                Err(crate::http2::Error::NotSent) => Ok(None),
                Err(crate::http2::Error::Http) => Err(ErrorKind::Http),
            },
        };
        match result? {
            Some(answer) => return Ok(answer),
            None if !fresh => *conn = None,
            None => return Err(ErrorKind::Http.into()),
        }
    }
}

/// A new keep-alive connection with TCP_NODELAY (small requests must not wait for
/// Nagle), over TLS for an `https://` target. A failed TLS handshake is
/// [`ErrorKind::Tls`], anything else [`ErrorKind::Connect`].
async fn connect(addr: SocketAddr, plan: &Plan) -> std::result::Result<Conn, ErrorKind> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|_| ErrorKind::Connect)?;
    tcp.set_nodelay(true).map_err(|_| ErrorKind::Connect)?;
    #[cfg(not(feature = "tls"))]
    let (stream, negotiated_h2) = (tcp, false);
    #[cfg(feature = "tls")]
    let stream = match &plan.tls {
        None => crate::tls::Stream::Plain(tcp),
        Some(tls) => crate::tls::Stream::Tls(Box::new(
            tls.connect(tcp).await.map_err(|_| ErrorKind::Tls)?,
        )),
    };
    #[cfg(feature = "tls")]
    let negotiated_h2 = stream.negotiated_h2();
    // Forced HTTP/2 goes ahead without ALPN's agreement (prior knowledge): a server
    // that does not speak it fails the requests, which says so.
    if negotiated_h2 || plan.http_version == HttpVersion::Http2 {
        #[cfg(feature = "http2")]
        return crate::http2::Conn::handshake(stream)
            .await
            .map(Conn::H2)
            .map_err(|_| ErrorKind::Connect);
    }
    Ok(Conn::H1(h1::Conn::new(stream)))
}
