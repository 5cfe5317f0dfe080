use std::time::Duration;

use cortex_support::keyspace::{Component, check_prefix};
use cortex_support::{EnvSource, EnvVar, FromEnv};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use crate::{MAX_CONCURRENCY, MAX_DURATION};

/// The most entries one read takes (`batch`).
pub const MAX_BATCH: usize = 10_000;

/// The key prefix of the durable queue named `queue_name`: `cortex:tasks:{queue_name}:`,
/// braces included.
///
/// Every key the queue writes starts with it (streams, task records, dead letters,
/// counters, the worker list), and [`DurableQueue::purge`](super::DurableQueue::purge)
/// deletes exactly the keys that match `{prefix}*`. The braces are a Redis Cluster hash
/// tag: Redis hashes only the text inside the first `{…}` of a key, so every key of one
/// queue lands in one hash slot, as its scripts and multi-key commands need on a
/// cluster (keys of different queues are spread over the slots). The name is checked
/// first, so no queue's keys can fall under another queue's prefix, be matched by a
/// glob or move to another slot: one to 64 characters out of `A-Z a-z 0-9 _ . -` (no
/// `:`, braces, whitespace, control characters or the glob characters `* ? [ ] \`).
/// The prefix lies under [`Component::Tasks`]'s reserved prefix and passes
/// [`check_prefix`](cortex_support::keyspace::check_prefix).
///
/// ```
/// use cortex_tasks::durable::key_prefix;
///
/// assert_eq!(key_prefix("emails")?, "cortex:tasks:{emails}:");
/// assert!(key_prefix("a:b").is_err());
/// assert!(key_prefix("jobs*").is_err());
/// assert!(key_prefix("{x}").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::InvalidConfig`] (key `name`) naming the refused value.
pub fn key_prefix(queue_name: &str) -> Result<String> {
    check_queue_name(queue_name)?;
    let prefix = format!("{}{{{queue_name}}}:", Component::Tasks.reserved_prefix());
    check_prefix(Component::Tasks, &prefix)
        .map_err(|e| invalid("name", queue_name, &e.to_string()))?;
    Ok(prefix)
}

/// The prefix releases before one-slot queues used, `cortex:tasks:<name>:` (no hash
/// tag): only read, to refuse starting over tasks left there (see
/// [`Error::LegacyKeys`]). It never nests with a [`key_prefix`]: after `cortex:tasks:`
/// one starts with `{`, which no queue name holds.
pub(crate) fn legacy_key_prefix(queue_name: &str) -> Result<String> {
    check_queue_name(queue_name)?;
    Ok(format!(
        "{}{queue_name}:",
        Component::Tasks.reserved_prefix()
    ))
}

fn check_queue_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("a queue name cannot be empty")
    } else if name.contains(':') {
        Some("a queue name cannot hold ':': its keys would fall under another queue's prefix")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("a queue name cannot hold whitespace or control characters")
    } else if name.contains(['*', '?', '[', ']', '\\']) {
        Some(
            "a queue name cannot hold the glob characters * ? [ ] \\ (purge matches keys by pattern)",
        )
    } else if name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("a queue name holds 1 to 64 characters out of A-Z a-z 0-9 _ . -")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(invalid("name", name, reason)),
        None => Ok(()),
    }
}

/// Settings of a durable queue and of its workers.
///
/// Durations are (de)serialized as seconds, fractions allowed, like every Cortex setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DurableConfig {
    /// Queue name; keys live under `cortex:tasks:{name}:`, braces included (one hash slot
    /// per queue, see [`key_prefix`]). One to 64
    /// characters out of `A-Z a-z 0-9 _ . -`. Default `"default"`.
    pub name: String,
    /// Consumer group every worker of this queue joins. Default `"workers"`.
    pub group: String,
    /// Tasks run at once per worker, 1 to [`MAX_CONCURRENCY`]. Default 10.
    pub concurrency: usize,
    /// A delivered task idle this long (its worker stopped refreshing it) is reclaimed by
    /// another worker. Default 30 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub visibility_timeout: Duration,
    /// Attempts before a task is dead-lettered. Default 3.
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts: `base * 2^(attempt-1)`,
    /// capped at 5 minutes, then jittered to between half and all of that, so tasks
    /// that failed together do not all retry at the same instant. Default 1 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub retry_backoff: Duration,
    /// Status records expire this long after the task finished. Default 1 h.
    #[serde(with = "cortex_support::duration::secs")]
    pub result_ttl: Duration,
    /// How long one read waits for new tasks (`XREADGROUP BLOCK`). Default 1 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub block: Duration,
    /// Most tasks taken per read (`XREADGROUP COUNT`), 1 to [`MAX_BATCH`]. Default 64.
    pub batch: usize,
    /// Bound on every Redis call (`TASKS_OP_TIMEOUT`). Keep it below the deadline of
    /// whoever enqueues (a request timeout), so an outage reaches them as an error
    /// rather than as their own timeout. Default 5 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub op_timeout: Duration,
    /// Bound on one attempt of a task; `None` (the default) for no bound.
    #[serde(with = "cortex_support::duration::opt_secs")]
    pub task_timeout: Option<Duration>,
    /// Most dead letters kept in the `dead` stream. Adding one beyond the cap deletes
    /// the oldest (exactly, oldest first); each time this happens a warning is logged
    /// (at most one every minute) and the `durable.dead_trimmed` counter (labeled
    /// `queue="<name>"`) counts the deleted ones. `0` keeps every dead letter. Default
    /// 100 000.
    pub dead_letter_cap: u64,
    /// How often each worker reads the queue's pending and dead-letter counts from
    /// Redis for its `durable.pending` and `durable.dead_letters` gauges (each read
    /// bounded by `op_timeout`; a failed one keeps the last values). 10 ms to 365 days.
    /// Default 5 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub stats_interval: Duration,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            group: "workers".to_owned(),
            concurrency: 10,
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(1),
            result_ttl: Duration::from_secs(3600),
            block: Duration::from_secs(1),
            batch: 64,
            op_timeout: Duration::from_secs(5),
            task_timeout: None,
            dead_letter_cap: 100_000,
            stats_interval: Duration::from_secs(5),
        }
    }
}

impl FromEnv for DurableConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = crate::vars::DURABLE;

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(name) = env.var("TASKS_QUEUE_NAME") {
            c.name = name.trim().to_owned();
        }
        if let Some(n) = env.parse::<usize>("TASKS_CONCURRENCY")? {
            c.concurrency = n;
        }
        if let Some(d) = env.duration("TASKS_VISIBILITY_TIMEOUT")? {
            c.visibility_timeout = d;
        }
        if let Some(n) = env.parse::<u32>("TASKS_MAX_ATTEMPTS")? {
            c.max_attempts = n;
        }
        if let Some(n) = env.parse::<u64>("TASKS_DEAD_LETTER_CAP")? {
            c.dead_letter_cap = n;
        }
        if let Some(d) = env.duration("TASKS_OP_TIMEOUT")? {
            c.op_timeout = d;
        }
        if let Some(d) = env.duration("TASKS_STATS_INTERVAL")? {
            c.stats_interval = d;
        }
        c.validate()
            .map_err(|e| crate::vars::name_variable(e, env, &ENV_VARS))?;
        Ok(c)
    }
}

impl DurableConfig {
    /// The defaults overridden by the environment: `TASKS_QUEUE_NAME`,
    /// `TASKS_CONCURRENCY`, `TASKS_VISIBILITY_TIMEOUT` (`30`, `500ms`, `2m`),
    /// `TASKS_MAX_ATTEMPTS`, `TASKS_DEAD_LETTER_CAP`, `TASKS_OP_TIMEOUT` and
    /// `TASKS_STATS_INTERVAL` ([`FromEnv::VARS`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when one does not parse or the result
    /// does not [`validate`](Self::validate).
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first rejected setting.
    pub fn validate(&self) -> Result<()> {
        check_queue_name(&self.name)?;
        if self.group.is_empty() || self.group.len() > 64 {
            return Err(invalid("group", &self.group, "expected 1 to 64 characters"));
        }
        let counts = [
            ("concurrency", self.concurrency, MAX_CONCURRENCY),
            ("batch", self.batch, MAX_BATCH),
            (
                "max_attempts",
                self.max_attempts as usize,
                u32::MAX as usize,
            ),
        ];
        for (key, v, max) in counts {
            if v == 0 || v > max {
                return Err(invalid(key, &v.to_string(), &format!("must be 1 to {max}")));
            }
        }
        let durations = [
            (
                "visibility_timeout",
                self.visibility_timeout,
                Duration::from_millis(30),
            ),
            ("op_timeout", self.op_timeout, Duration::from_millis(1)),
            ("block", self.block, Duration::from_millis(1)),
            ("retry_backoff", self.retry_backoff, Duration::ZERO),
            ("result_ttl", self.result_ttl, Duration::ZERO),
            (
                "stats_interval",
                self.stats_interval,
                Duration::from_millis(10),
            ),
            (
                "task_timeout",
                self.task_timeout.unwrap_or_default(),
                Duration::ZERO,
            ),
        ];
        for (key, d, min) in durations {
            if d < min || d > MAX_DURATION {
                return Err(invalid(
                    key,
                    &format!("{d:?}"),
                    &format!(
                        "must be {min:?} to {} days",
                        MAX_DURATION.as_secs() / 86_400
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Settings that environment variables set, so an error names the variable.
const ENV_VARS: [(&str, &str); 7] = [
    ("name", "TASKS_QUEUE_NAME"),
    ("concurrency", "TASKS_CONCURRENCY"),
    ("visibility_timeout", "TASKS_VISIBILITY_TIMEOUT"),
    ("max_attempts", "TASKS_MAX_ATTEMPTS"),
    ("dead_letter_cap", "TASKS_DEAD_LETTER_CAP"),
    ("op_timeout", "TASKS_OP_TIMEOUT"),
    ("stats_interval", "TASKS_STATS_INTERVAL"),
];

fn invalid(key: &'static str, value: &str, reason: &str) -> Error {
    Error::InvalidConfig {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_overrides_and_validation() {
        let vars = HashMap::from([
            ("TASKS_QUEUE_NAME", "emails"),
            ("TASKS_CONCURRENCY", "4"),
            ("TASKS_VISIBILITY_TIMEOUT", "2.5"),
            ("TASKS_MAX_ATTEMPTS", "7"),
        ]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        let c = DurableConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap();
        assert_eq!(c.name, "emails");
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.visibility_timeout, Duration::from_millis(2500));
        assert_eq!(c.max_attempts, 7);

        let bad = HashMap::from([("TASKS_QUEUE_NAME", "a b")]);
        let lookup = |k: &str| bad.get(k).map(|v| v.to_string());
        let err = DurableConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");

        let bad = HashMap::from([("TASKS_CONCURRENCY", "many")]);
        let lookup = |k: &str| bad.get(k).map(|v| v.to_string());
        let err = DurableConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap_err();
        assert!(err.to_string().contains("TASKS_CONCURRENCY"), "{err}");
    }

    #[test]
    fn huge_values_are_refused_naming_the_setting_or_variable() {
        let cases: [(&str, &str); 4] = [
            ("TASKS_CONCURRENCY", "18446744073709551615"),
            ("TASKS_CONCURRENCY", "1000001"),
            ("TASKS_VISIBILITY_TIMEOUT", "1e15"),
            ("TASKS_MAX_ATTEMPTS", "0"),
        ];
        for (var, value) in cases {
            let vars = HashMap::from([(var, value)]);
            let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
            match DurableConfig::from_env_source(&EnvSource::from_fn(&lookup)) {
                Err(Error::InvalidConfig { key, .. }) => assert_eq!(key, var, "{value}"),
                other => panic!("{var}={value}: {other:?}"),
            }
        }
        let vars = HashMap::from([
            ("TASKS_DEAD_LETTER_CAP", "7"),
            ("TASKS_STATS_INTERVAL", "250ms"),
            ("TASKS_OP_TIMEOUT", "1.5"),
        ]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        let c = DurableConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap();
        assert_eq!(c.op_timeout, Duration::from_millis(1500));
        assert_eq!(c.dead_letter_cap, 7);
        assert_eq!(c.stats_interval, Duration::from_millis(250));
        // A sampling interval that would hammer Redis is refused, naming the variable.
        for value in ["0", "1ms"] {
            let vars = HashMap::from([("TASKS_STATS_INTERVAL", value)]);
            let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
            match DurableConfig::from_env_source(&EnvSource::from_fn(&lookup)) {
                Err(Error::InvalidConfig { key, .. }) => assert_eq!(key, "TASKS_STATS_INTERVAL"),
                other => panic!("{value}: {other:?}"),
            }
        }
        // No bound at all would let an outage hang every call.
        for value in ["0", "-1", "soon"] {
            let vars = HashMap::from([("TASKS_OP_TIMEOUT", value)]);
            let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
            match DurableConfig::from_env_source(&EnvSource::from_fn(&lookup)) {
                Err(Error::InvalidConfig { key, .. }) => assert_eq!(key, "TASKS_OP_TIMEOUT"),
                other => panic!("{value}: {other:?}"),
            }
        }

        let max = DurableConfig {
            concurrency: MAX_CONCURRENCY,
            batch: MAX_BATCH,
            visibility_timeout: MAX_DURATION,
            block: MAX_DURATION,
            op_timeout: MAX_DURATION,
            result_ttl: MAX_DURATION,
            task_timeout: Some(MAX_DURATION),
            stats_interval: MAX_DURATION,
            ..DurableConfig::default()
        };
        max.validate().unwrap();
        // The sums the worker forms stay representable.
        let _ = max.block + max.op_timeout;
        let _ = std::time::Instant::now() + max.visibility_timeout * 2;
        for c in [
            DurableConfig {
                batch: MAX_BATCH + 1,
                ..DurableConfig::default()
            },
            DurableConfig {
                retry_backoff: MAX_DURATION + Duration::from_secs(1),
                ..DurableConfig::default()
            },
            DurableConfig {
                task_timeout: Some(Duration::MAX),
                ..DurableConfig::default()
            },
        ] {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig { .. })),
                "{c:?}"
            );
        }
    }

    /// What Redis Cluster hashes of a key: the text inside the first `{…}` when it is
    /// not empty, else the whole key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn key_prefixes_are_reserved_for_tasks_and_never_nest() {
        let good = ["default", "emails", "a", "A-b_c.9", &"x".repeat(64)];
        for name in good {
            let p = key_prefix(name).unwrap();
            assert_eq!(p, format!("cortex:tasks:{{{name}}}:"));
            // The hash tag is the whole name: Redis hashes the text inside the first
            // `{…}`, so every key of the queue shares the name's slot.
            assert_eq!(hash_tag(&p), name);
            check_prefix(Component::Tasks, &p).unwrap();
            assert!(!p.starts_with(Component::Cache.reserved_prefix()));
            for other in good {
                if other != name {
                    assert!(!cortex_support::keyspace::overlaps(
                        &p,
                        &key_prefix(other).unwrap()
                    ));
                }
            }
        }
        let bad = [
            "",
            "a:b",
            ":",
            "a b",
            "tab\t",
            "nl\n",
            "\u{7f}",
            "*",
            "jobs*",
            "j?bs",
            "[ab]",
            "a]",
            "back\\slash",
            "é",
            "{tag}",
            "a{b",
            "a}b",
            "{}",
            &"x".repeat(65),
        ];
        for name in bad {
            match key_prefix(name) {
                Err(Error::InvalidConfig { key, value, reason }) => {
                    assert_eq!((key, value.as_str()), ("name", name), "{reason}");
                }
                other => panic!("{name:?}: {other:?}"),
            }
            let c = DurableConfig {
                name: name.to_owned(),
                ..DurableConfig::default()
            };
            let err = c.validate().unwrap_err();
            assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
        }
    }

    #[test]
    fn serde_round_trip_uses_seconds() {
        let c = DurableConfig::default();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["visibility_timeout"], 30.0);
        let back: DurableConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let partial: DurableConfig = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(partial.concurrency, 10);
    }
}
