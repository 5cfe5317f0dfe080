//! `--fail-on` thresholds: `METRIC OP VALUE`, checked against the summary after the
//! run so a CI job can gate on them through the exit status.
//!
//! Metrics and the value each takes:
//! - `error-rate`: failed requests over all, a percentage with `%` (`error-rate>1%`);
//! - `failures` (or `errors`): failed requests, a whole number (`failures>0`);
//! - `rps`: requests per second achieved, a number (`rps<500`);
//! - `min`, `mean`, `p50`, `p90`, `p95`, `p99`, `p99.9` (or `p999`), `max`: latency,
//!   a duration with its unit (`p99>250ms`, `max>=2s`); a bare number is refused, since
//!   seconds or milliseconds would be a guess.
//!
//! `OP` is `>`, `>=`, `<` or `<=`: the threshold is *crossed* (the run fails) when the
//! comparison holds. Spaces around the parts are allowed.

use cortex_load::Summary;
use cortex_support::duration::parse_duration;

/// What a threshold measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    ErrorRate,
    Failures,
    Rps,
    Min,
    Mean,
    P50,
    P90,
    P95,
    P99,
    P999,
    Max,
}

impl Metric {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "error-rate" => Self::ErrorRate,
            "failures" | "errors" => Self::Failures,
            "rps" => Self::Rps,
            "min" => Self::Min,
            "mean" => Self::Mean,
            "p50" => Self::P50,
            "p90" => Self::P90,
            "p95" => Self::P95,
            "p99" => Self::P99,
            "p99.9" | "p999" => Self::P999,
            "max" => Self::Max,
            _ => return None,
        })
    }

    /// The measured value, in the unit the limit is kept in (percent, count, req/s,
    /// ms).
    fn of(self, s: &Summary) -> f64 {
        let l = &s.latency;
        match self {
            Self::ErrorRate if s.total == 0 => 0.0,
            Self::ErrorRate => s.failures as f64 * 100.0 / s.total as f64,
            Self::Failures => s.failures as f64,
            Self::Rps => s.requests_per_sec,
            Self::Min => l.min_ms,
            Self::Mean => l.mean_ms,
            Self::P50 => l.p50_ms,
            Self::P90 => l.p90_ms,
            Self::P95 => l.p95_ms,
            Self::P99 => l.p99_ms,
            Self::P999 => l.p999_ms,
            Self::Max => l.max_ms,
        }
    }

    /// The measured value as the report shows it.
    fn show(self, v: f64) -> String {
        match self {
            Self::ErrorRate => format!("{v:.3}%"),
            Self::Failures => format!("{v}"),
            Self::Rps => format!("{v:.1} req/s"),
            _ => format!("{v:.3} ms"),
        }
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

/// One parsed `--fail-on` threshold.
#[derive(Clone, Debug)]
pub(crate) struct Threshold {
    /// As given, for messages.
    text: String,
    metric: Metric,
    op: Op,
    /// In the metric's unit (percent, count, req/s, ms).
    limit: f64,
}

/// The outcome of one threshold.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Verdict {
    /// The threshold as given.
    pub(crate) threshold: String,
    /// The measured value (percent, count, req/s or ms).
    pub(crate) value: f64,
    /// Whether the run failed it.
    pub(crate) crossed: bool,
    /// `p99 = 1.234 ms`.
    #[serde(skip)]
    pub(crate) shown: String,
}

/// Parse a `--fail-on` value; the error says what was expected (clap names the value
/// and the flag).
pub(crate) fn parse(text: &str) -> Result<Threshold, String> {
    let at = text
        .find(['<', '>'])
        .ok_or("expected METRIC OP VALUE with OP one of > >= < <= (e.g. 'p99>250ms')")?;
    let name = text[..at].trim().to_ascii_lowercase();
    let metric = Metric::parse(&name).ok_or_else(|| {
        format!(
            "unknown metric {name:?}: expected error-rate, failures, rps, min, mean, p50, p90, p95, p99, p99.9 or max"
        )
    })?;
    let rest = &text[at..];
    let (op, value) = match rest.as_bytes() {
        [b'>', b'=', ..] => (Op::Ge, &rest[2..]),
        [b'<', b'=', ..] => (Op::Le, &rest[2..]),
        [b'>', ..] => (Op::Gt, &rest[1..]),
        _ => (Op::Lt, &rest[1..]),
    };
    let value = value.trim();
    let limit = match metric {
        Metric::ErrorRate => {
            let number = value
                .strip_suffix('%')
                .ok_or_else(|| format!("{value:?}: error-rate takes a percentage, e.g. 1%"))?;
            let p: f64 = number
                .trim()
                .parse()
                .map_err(|_| format!("{value:?} is not a percentage"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{value:?}: a percentage is between 0% and 100%"));
            }
            p
        }
        Metric::Failures => value
            .parse::<u64>()
            .map(|n| n as f64)
            .map_err(|_| format!("{value:?}: failures takes a whole number"))?,
        Metric::Rps => {
            let r: f64 = value
                .parse()
                .map_err(|_| format!("{value:?}: rps takes a number of requests per second"))?;
            if !(r.is_finite() && r >= 0.0) {
                return Err(format!("{value:?}: rps takes a finite number >= 0"));
            }
            r
        }
        _ => {
            if !value.ends_with(|c: char| c.is_ascii_alphabetic()) {
                return Err(format!(
                    "{value:?}: a latency needs its unit (250ms, 1.5s, 800us)"
                ));
            }
            parse_duration(value)
                .map_err(|e| format!("{value:?}: {e}"))?
                .as_secs_f64()
                * 1e3
        }
    };
    Ok(Threshold {
        text: text.trim().to_owned(),
        metric,
        op,
        limit,
    })
}

impl Threshold {
    /// Check the summary against this threshold.
    pub(crate) fn check(&self, s: &Summary) -> Verdict {
        let value = self.metric.of(s);
        let crossed = match self.op {
            Op::Gt => value > self.limit,
            Op::Ge => value >= self.limit,
            Op::Lt => value < self.limit,
            Op::Le => value <= self.limit,
        };
        let name = self.text[..self.text.find(['<', '>']).unwrap_or(0)].trim();
        Verdict {
            threshold: self.text.clone(),
            value,
            crossed,
            shown: format!("{name} = {}", self.metric.show(value)),
        }
    }
}
