#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
//!
//! # How a run works
//!
//! HTTP load testing: simulated users sending weighted scenarios to one target over
//! keep-alive HTTP/1.1 (or HTTP/2, feature `http2`), in a closed or an open loop,
//! with latencies in [`cortex_metrics::Histogram`]s.
//!
//! # Closed and open loop
//!
//! - **Closed loop** (default): each user sends a request, waits for the answer,
//!   pauses for the think time, sends the next. Latency is measured from the real
//!   send time. A server stall delays the *next* requests instead of appearing in the
//!   percentiles: this is coordinated omission, and it is what most tools measure.
//! - **Open loop** ([`LoadConfig::rate`]): requests follow a fixed schedule of `rate`
//!   per second in total. Whichever user (connection) is free takes the next slot,
//!   waits for its time and sends; latency is measured from the *intended* send time,
//!   as wrk2 does. When every connection is busy, the next slot waits for one and
//!   that wait is part of its latency, so a server stall shows in p99. A connection
//!   that is free early sleeps until its slot and is timed from its wake-up: tokio's
//!   timer has 1 ms granularity, and that lateness is the generator's, not the
//!   server's.
//!
//! # Think time
//!
//! A user pauses 0.1 s between requests by default in closed-loop runs by request
//! count ([`DEFAULT_THINK_TIME`]), as a person reading an answer would; runs by duration
//! and open-loop runs default to no pause, since they measure throughput or a fixed
//! rate. [`LoadConfig::think_time`] (CLI `--think-time`) overrides both; the open
//! loop ignores it (the schedule decides when requests go).
//!
//! # Bounds
//!
//! A run ends after its request count or duration; requests in flight then finish or
//! time out ([`LoadConfig::timeout`] covers connecting, sending and reading the whole
//! answer). Requests go only to the host and port of [`LoadConfig::url`]: scenario
//! endpoints are paths; an absolute URL to another origin is refused.
//!
//! # HTTPS
//!
//! With the `tls` feature, `https://` targets are load-tested over rustls with the ring
//! provider, passed to rustls explicitly (no process-wide provider is installed). The
//! server certificate is checked against the bundled web roots (`webpki-roots`), or
//! only against the certificates of [`LoadConfig::ca_file`] (CLI `--cacert`);
//! [`LoadConfig::insecure`] (CLI `--insecure`) skips the check. A request whose TLS
//! handshake fails counts as [`ErrorKind::Tls`]. Each user keeps its TLS connection
//! alive like a plain one. Without the feature, an `https://` URL is refused with
//! [`LoadError::TlsNotEnabled`].
//!
//! # Memory and speed
//!
//! Counts are kept per user and merged at the end; latencies go to one lock-free,
//! per-thread-sharded histogram. With an output file, finished requests are streamed
//! in batches through a bounded channel to one writer thread; nothing per request is
//! held in memory. HTTP/1.1 requests are serialized once per scenario and written as
//! they are; answers are parsed in one reused buffer per connection, driven inside the
//! user's task (no channel, no allocation per request; HTTP/2 goes through hyper). With
//! [`LoadConfig::threads`] users run on dedicated single-threaded runtimes. The clock
//! is read once per request in a closed loop.
//!
//! # Output files
//!
//! Chosen by the extension of [`LoadConfig::output`]:
//! - `.json`: `{"requests":[{...},...],"summary":{...}}`. Requests come first because
//!   they are written while the run goes on; the [`Summary`] is known last. A request
//!   is `{"id":1,"endpoint":"/x","method":"GET","status":200,"duration_us":812,
//!   "success":true,"error":null,"bytes":12,"timestamp_ms":1795790304980}`
//!   (`status` is `null` and `error` one of `timeout`, `connect`, `http`, `tls` when no
//!   answer came).
//! - `.csv`: the header `id,endpoint,method,status,duration_us,success,error,bytes,timestamp_ms`
//!   and one row per request (same fields; empty `status` or `error` for "none").
//!   The summary goes to a sidecar JSON file, [`summary_path`]
//!   (`results.csv` -> `results.summary.json`), so the CSV stays a plain table.
//! - `.txt`: the text report ([`Summary::report`]) only.
//!
//! `id` is the completion order; `duration_us` is the latency as in the summary;
//! `timestamp_ms` is the (intended) send time in Unix milliseconds.
//!
//! # Progress
//!
//! With [`LoadConfig::progress`], progress goes to stderr (stdout stays clean for the
//! report): a bar redrawn with `\r` when stderr is a terminal, a plain line every 5 s
//! otherwise.

mod config;
mod error;
mod h1;
#[cfg(feature = "http2")]
mod http2;
mod output;
mod plot;
mod progress;
mod run;
mod summary;
#[cfg(feature = "tls")]
mod tls;

pub use self::config::{
    DEFAULT_THINK_TIME, HttpVersion, LoadConfig, MAX_DURATION, MAX_USERS, Scenario,
};
pub use self::error::{LoadError, Result};
pub use self::output::summary_path;
pub use self::run::{LoadTest, StopHandle};
pub use self::summary::{
    EndpointStats, ErrorGroup, ErrorKind, Latency, LatencyBuckets, Mode, PercentilePoint, Summary,
};

#[cfg(test)]
mod prop_tests;
