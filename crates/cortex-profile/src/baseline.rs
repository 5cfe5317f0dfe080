//! Stored baselines and the regression check a CI job fails on.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::bench::fmt_ns;
use crate::{BenchResult, Error, Result};
use cortex_support::{EnvSource, EnvVar, FromEnv};

const FILE_VAR: &str = "PERFORMANCE_BASELINE_FILE";
const MEDIAN_VAR: &str = "PERFORMANCE_MEDIAN_THRESHOLD";
const P95_VAR: &str = "PERFORMANCE_P95_THRESHOLD";
const THROUGHPUT_VAR: &str = "PERFORMANCE_THROUGHPUT_THRESHOLD";

/// How much worse than the baseline a metric may get, as fractions (`0.10` = 10%).
///
/// A metric exactly at its threshold is not a regression; only "over" is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegressionThresholds {
    /// Allowed increase of the median. Default: `0.10`.
    pub median: f64,
    /// Allowed increase of the 95th percentile. Default: `0.15`.
    pub p95: f64,
    /// Allowed decrease of the throughput. Default: `0.10`.
    pub throughput: f64,
}

impl Default for RegressionThresholds {
    fn default() -> Self {
        Self {
            median: 0.10,
            p95: 0.15,
            throughput: 0.10,
        }
    }
}

/// Where baselines live and how strict the check is.
///
/// Read from the environment with [`BaselineConfig::from_env`]; the variables are listed
/// in [`FromEnv::VARS`] (and, from it, in the crate README).
///
/// ```
/// use std::collections::HashMap;
/// use cortex_profile::BaselineConfig;
/// use cortex_support::{EnvSource, FromEnv};
///
/// let vars = HashMap::from([("PERFORMANCE_MEDIAN_THRESHOLD", "0.2")]);
/// let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
/// let config = BaselineConfig::from_env_source(&EnvSource::from_fn(&lookup))?;
/// assert_eq!(config.thresholds.median, 0.2);
/// assert_eq!(config.thresholds.p95, 0.15);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaselineConfig {
    /// The baselines file. Default: `performance_baselines.json` (relative to the
    /// working directory; `PERFORMANCE_BASELINE_FILE`).
    pub file: PathBuf,
    /// Regression thresholds. Default: see [`RegressionThresholds`].
    pub thresholds: RegressionThresholds,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("performance_baselines.json"),
            thresholds: RegressionThresholds::default(),
        }
    }
}

impl FromEnv for BaselineConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: FILE_VAR,
            default: "performance_baselines.json",
            doc: "The baselines file (relative to the working directory).",
        },
        EnvVar {
            name: MEDIAN_VAR,
            default: "0.10",
            doc: "Allowed increase of the median over its baseline, as a fraction.",
        },
        EnvVar {
            name: P95_VAR,
            default: "0.15",
            doc: "Allowed increase of the 95th percentile, as a fraction.",
        },
        EnvVar {
            name: THROUGHPUT_VAR,
            default: "0.10",
            doc: "Allowed decrease of the throughput (ops/s), as a fraction.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut config = Self::default();
        if let Some(file) = env.var(FILE_VAR) {
            config.file = PathBuf::from(file);
        }
        let t = &mut config.thresholds;
        for (key, slot) in [
            (MEDIAN_VAR, &mut t.median),
            (P95_VAR, &mut t.p95),
            (THROUGHPUT_VAR, &mut t.throughput),
        ] {
            if let Some(v) = env.parse::<f64>(key)? {
                *slot = v;
            }
        }
        config.validate()?;
        Ok(config)
    }
}

impl BaselineConfig {
    /// Defaults overridden by the environment variables of [`FromEnv::VARS`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a threshold is not a finite,
    /// non-negative number.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    /// Check the thresholds (useful after deserialising a config).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of the first threshold that is
    /// negative, NaN or infinite.
    pub fn validate(&self) -> Result<()> {
        let t = &self.thresholds;
        for (key, v) in [
            (MEDIAN_VAR, t.median),
            (P95_VAR, t.p95),
            (THROUGHPUT_VAR, t.throughput),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::InvalidConfig {
                    key,
                    value: v.to_string(),
                    reason: "expected a finite, non-negative fraction such as 0.10".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The stored reference numbers of one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Median, nanoseconds.
    pub median_ns: u64,
    /// 95th percentile, nanoseconds.
    pub p95_ns: u64,
    /// Throughput, operations per second.
    pub ops_per_sec: f64,
    /// Timed iterations behind these numbers.
    pub iterations: u32,
    /// When it was recorded, seconds since the Unix epoch.
    pub recorded_at: u64,
}

impl From<&BenchResult> for Baseline {
    fn from(r: &BenchResult) -> Self {
        Self {
            median_ns: r.median_ns,
            p95_ns: r.p95_ns,
            ops_per_sec: r.ops_per_sec,
            iterations: r.iterations,
            recorded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// Baselines by operation name; stored as one JSON object keyed by name (sorted, so the
/// file diffs well under version control).
///
/// ```
/// use std::time::Duration;
/// use cortex_profile::{BenchResult, Baselines, RegressionThresholds};
///
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("performance_baselines.json");
/// let mut baselines = Baselines::load(&path)?; // empty when the file does not exist
/// let before = BenchResult::from_samples("query", &[Duration::from_millis(10)])?;
/// baselines.update(&before);
/// baselines.save(&path)?;
///
/// let after = BenchResult::from_samples("query", &[Duration::from_millis(13)])?;
/// let report = Baselines::load(&path)?.check(&[after], &RegressionThresholds::default());
/// assert!(report.has_regressions());
/// println!("{report}");
/// // In a CI binary: `return report.exit_code();`
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Baselines {
    operations: BTreeMap<String, Baseline>,
}

impl Baselines {
    /// No baselines.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read `path`; a missing file is empty baselines (the first run records them).
    ///
    /// This is blocking file I/O on a small file.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path when it cannot be read, [`Error::Json`] naming the
    /// path when it does not hold baselines.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// Write to `path` atomically: a temporary file of its own in the same directory
    /// (unique per call, so concurrent saves from threads or processes never share
    /// one), synced, then renamed over `path`. Readers never see a half-written file,
    /// and a failed save leaves the previous file as it was.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path` when the file cannot be written or renamed (the
    /// temporary file is removed), [`Error::Json`] if encoding fails.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut json = serde_json::to_vec_pretty(self).map_err(|source| Error::Json {
            path: path.to_owned(),
            source,
        })?;
        json.push(b'\n');
        cortex_support::file::write_atomic(path, |out| out.write_all(&json)).map_err(|source| {
            Error::Io {
                path: path.to_owned(),
                source,
            }
        })?;
        tracing::debug!(path = %path.display(), operations = self.len(), "baselines saved");
        Ok(())
    }

    /// Record `result` as the baseline of its operation (replacing any previous one),
    /// stamped with the current time.
    pub fn update(&mut self, result: &BenchResult) {
        self.operations
            .insert(result.name.clone(), Baseline::from(result));
    }

    /// The baseline of `operation`.
    pub fn get(&self, operation: &str) -> Option<&Baseline> {
        self.operations.get(operation)
    }

    /// Remove the baseline of `operation`, returning it.
    pub fn remove(&mut self, operation: &str) -> Option<Baseline> {
        self.operations.remove(operation)
    }

    /// All baselines, sorted by operation name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Baseline)> {
        self.operations.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// No operations.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Compare `results` with the baselines. Operations without a baseline are
    /// [`Verdict::New`]; baselines without a result are ignored.
    pub fn check(
        &self,
        results: &[BenchResult],
        thresholds: &RegressionThresholds,
    ) -> RegressionReport {
        let operations = results
            .iter()
            .map(|r| match self.operations.get(&r.name) {
                None => OperationReport {
                    name: r.name.clone(),
                    verdict: Verdict::New,
                    deltas: None,
                    breached: Vec::new(),
                },
                Some(base) => judge(r, base, thresholds),
            })
            .collect::<Vec<_>>();
        for op in operations
            .iter()
            .filter(|o| o.verdict == Verdict::Regressed)
        {
            tracing::warn!(operation = %op.name, breached = ?op.breached, "performance regression");
        }
        RegressionReport {
            thresholds: *thresholds,
            operations,
        }
    }
}

fn judge(r: &BenchResult, base: &Baseline, t: &RegressionThresholds) -> OperationReport {
    let deltas = Deltas {
        median_pct: pct_change(base.median_ns as f64, r.median_ns as f64),
        p95_pct: pct_change(base.p95_ns as f64, r.p95_ns as f64),
        throughput_pct: pct_change(base.ops_per_sec, r.ops_per_sec),
    };
    // Both sides in percent: a change of exactly the threshold (1000 -> 1100 ns at 0.10)
    // computes to the same float on both sides and is not flagged.
    let mut breached = Vec::new();
    if deltas.median_pct > t.median * 100.0 {
        breached.push(Metric::Median);
    }
    if deltas.p95_pct > t.p95 * 100.0 {
        breached.push(Metric::P95);
    }
    if -deltas.throughput_pct > t.throughput * 100.0 {
        breached.push(Metric::Throughput);
    }
    OperationReport {
        name: r.name.clone(),
        verdict: if breached.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Regressed
        },
        deltas: Some(deltas),
        breached,
    }
}

/// Percent change from `base` to `now`; 0 when `base` cannot be judged against (zero or
/// not finite, which no real run records), so it is never NaN or infinite.
fn pct_change(base: f64, now: f64) -> f64 {
    let pct = (now - base) / base * 100.0;
    if base > 0.0 && pct.is_finite() {
        pct
    } else {
        0.0
    }
}

/// The outcome for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Within every threshold.
    Ok,
    /// At least one metric breached its threshold.
    Regressed,
    /// No baseline yet: nothing to compare with, never a regression.
    New,
}

/// A metric the check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Metric {
    /// The median got slower.
    Median,
    /// The 95th percentile got slower.
    P95,
    /// Throughput dropped.
    Throughput,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Median => "median",
            Self::P95 => "p95",
            Self::Throughput => "throughput",
        })
    }
}

/// Change from the baseline in percent (`+20.0` = 20% higher). Positive is worse for
/// the durations, negative is worse for throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Deltas {
    /// Median change.
    pub median_pct: f64,
    /// 95th percentile change.
    pub p95_pct: f64,
    /// Throughput change.
    pub throughput_pct: f64,
}

/// The check of one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationReport {
    /// The operation name.
    pub name: String,
    /// The outcome.
    pub verdict: Verdict,
    /// Changes from the baseline; `None` for [`Verdict::New`].
    pub deltas: Option<Deltas>,
    /// The metrics over their threshold (empty unless regressed).
    pub breached: Vec<Metric>,
}

/// The result of [`Baselines::check`]; `Display` prints one aligned line per operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    /// The thresholds applied.
    pub thresholds: RegressionThresholds,
    /// One entry per checked result, in input order.
    pub operations: Vec<OperationReport>,
}

impl RegressionReport {
    /// Whether any operation regressed.
    pub fn has_regressions(&self) -> bool {
        self.regressions().next().is_some()
    }

    /// The regressed operations.
    pub fn regressions(&self) -> impl Iterator<Item = &OperationReport> {
        self.operations
            .iter()
            .filter(|o| o.verdict == Verdict::Regressed)
    }

    /// [`ExitCode::FAILURE`] when any operation regressed, else [`ExitCode::SUCCESS`],
    /// to return from a CI binary's `main`.
    pub fn exit_code(&self) -> ExitCode {
        if self.has_regressions() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.operations
            .iter()
            .filter(|o| o.verdict == verdict)
            .count()
    }
}

impl fmt::Display for RegressionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.thresholds;
        writeln!(
            f,
            "performance check: {} regressed, {} ok, {} new \
             (limits: median +{:.1}%, p95 +{:.1}%, throughput -{:.1}%)",
            self.count(Verdict::Regressed),
            self.count(Verdict::Ok),
            self.count(Verdict::New),
            t.median * 100.0,
            t.p95 * 100.0,
            t.throughput * 100.0,
        )?;
        let width = self
            .operations
            .iter()
            .map(|o| o.name.chars().count())
            .max()
            .unwrap_or(0);
        for op in &self.operations {
            let verdict = match op.verdict {
                Verdict::Ok => "ok",
                Verdict::Regressed => "REGRESSED",
                Verdict::New => "new",
            };
            write!(f, "  {verdict:<9}  {:<width$}", op.name)?;
            match &op.deltas {
                None => writeln!(f, "  (no baseline)")?,
                Some(d) => {
                    write!(
                        f,
                        "  median {:>+7.1}%  p95 {:>+7.1}%  ops/s {:>+7.1}%",
                        d.median_pct, d.p95_pct, d.throughput_pct
                    )?;
                    if op.breached.is_empty() {
                        writeln!(f)?;
                    } else {
                        let names: Vec<String> =
                            op.breached.iter().map(ToString::to_string).collect();
                        writeln!(f, "  breached: {}", names.join(", "))?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "median {}, p95 {}, {:.1} ops/s ({} iterations)",
            fmt_ns(self.median_ns),
            fmt_ns(self.p95_ns),
            self.ops_per_sec,
            self.iterations
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<BaselineConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = |k: &str| map.get(k).cloned();
        BaselineConfig::from_env_source(&EnvSource::from_fn(&lookup))
    }

    #[test]
    fn config_defaults_and_overrides() {
        assert_eq!(config(&[]).unwrap(), BaselineConfig::default());
        let c = config(&[
            (FILE_VAR, "/tmp/b.json"),
            (P95_VAR, "0.3"),
            (THROUGHPUT_VAR, "0"),
        ])
        .unwrap();
        assert_eq!(c.file, PathBuf::from("/tmp/b.json"));
        assert_eq!(c.thresholds.p95, 0.3);
        assert_eq!(c.thresholds.throughput, 0.0);
        assert_eq!(c.thresholds.median, 0.10);
    }

    #[test]
    fn bad_thresholds_name_the_variable() {
        for (key, value) in [
            (MEDIAN_VAR, "ten"),
            (P95_VAR, "-0.1"),
            (THROUGHPUT_VAR, "inf"),
            (MEDIAN_VAR, "NaN"),
        ] {
            let err = config(&[(key, value)]).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidConfig { key: k, .. } if *k == key),
                "{key}={value}: {err}"
            );
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn the_readme_lists_every_variable() {
        let vars: Vec<EnvVar> = crate::ProfilerConfig::VARS
            .iter()
            .chain(BaselineConfig::VARS)
            .copied()
            .collect();
        cortex_support::env::check_readme(include_str!("../README.md"), &vars).unwrap();
    }

    #[test]
    fn zero_baseline_is_not_nan() {
        assert_eq!(pct_change(0.0, 5.0), 0.0);
        assert_eq!(pct_change(f64::NAN, 5.0), 0.0);
        assert_eq!(pct_change(200.0, 150.0), -25.0);
    }
}
