//! Progress on stderr (stdout stays for the report): a bar redrawn in place on a
//! terminal, a plain line every 5 s otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::run::Shared;

/// Counters of one user, on their own cache lines: each user writes only its own, so
/// progress costs no shared-line traffic on the hot path.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct UserProgress {
    done: AtomicU64,
    failed: AtomicU64,
}

impl UserProgress {
    /// Publish the user's totals (single writer: plain stores, no read-modify-write).
    #[inline]
    pub(crate) fn set(&self, done: u64, failed: u64) {
        self.done.store(done, Relaxed);
        self.failed.store(failed, Relaxed);
    }
}

/// The running progress task.
#[derive(Debug)]
pub(crate) struct Progress {
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Stop and clear the bar.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

pub(crate) fn spawn(shared: Arc<Shared>) -> Progress {
    let (stop, mut stopped) = oneshot::channel();
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => break,
            }
            let (done, failed) = shared.progress.iter().fold((0, 0), |(d, f), p| {
                (d + p.done.load(Relaxed), f + p.failed.load(Relaxed))
            });
            let now = Instant::now();
            let rate = (done - last.1.min(done)) as f64 / (now - last.0).as_secs_f64().max(1e-9);
            last = (now, done);
            let line = line(&shared, done, failed, rate, tty);
            let mut err = std::io::stderr().lock();
            let _ = if tty {
                write!(err, "\r\x1b[2K{line}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        }
        if tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    });
    Progress { stop, handle }
}

fn line(s: &Shared, done: u64, failed: u64, rate: f64, tty: bool) -> String {
    let elapsed = s.start.elapsed().as_secs_f64();
    let (fraction, what) = match (s.expected, s.end) {
        (Some(total), _) => (
            done as f64 / total.max(1) as f64,
            format!("{done}/{total} requests"),
        ),
        (None, Some(end)) => {
            let total = (end - s.start).as_secs_f64();
            (
                elapsed / total,
                format!("{done} requests, {elapsed:.0}/{total:.0} s"),
            )
        }
        (None, None) => (0.0, format!("{done} requests")),
    };
    let fraction = fraction.clamp(0.0, 1.0);
    if tty {
        let filled = (fraction * 30.0).round() as usize;
        format!(
            "[{}{}] {what}  {rate:.0} req/s  {failed} errors",
            "#".repeat(filled),
            "-".repeat(30 - filled)
        )
    } else {
        format!(
            "progress: {:.0}% {what}, {rate:.0} req/s, {failed} errors",
            fraction * 100.0
        )
    }
}
