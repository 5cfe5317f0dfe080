//! Every environment variable this crate reads, with its default and meaning: the one
//! source of the README's table (checked by `the_readme_lists_every_variable`).
//!
//! Kept outside the `durable` module so the table is checked whatever the features.

use cortex_support::{EnvSource, EnvVar};

use crate::Error;

/// The queue-size variables [`TaskQueueConfig`](crate::TaskQueueConfig) and
/// [`PriorityQueueConfig`](crate::PriorityQueueConfig) both read.
const SIZES: [EnvVar; 2] = [
    EnvVar {
        name: "TASKS_MAX_WORKERS",
        default: "10",
        doc: "Workers of an in-process queue (a priority queue's are shared by its levels), 1 to 1 000 000.",
    },
    EnvVar {
        name: "TASKS_MAX_QUEUE_SIZE",
        default: "1000",
        doc: "Tasks waiting at most (per level in a priority queue); beyond it `enqueue` waits and `try_enqueue` fails.",
    },
];

/// [`Limits`](crate::Limits), which every in-process queue config embeds.
const LIMITS: [EnvVar; 4] = [
    EnvVar {
        name: "TASKS_ENQUEUE_TIMEOUT",
        default: "30s",
        doc: "How long `enqueue` waits for room before `EnqueueTimeout`.",
    },
    EnvVar {
        name: "TASKS_TASK_TIMEOUT",
        default: "unset",
        doc: "Limit on each attempt of an in-process task unless it sets its own (unset: none).",
    },
    EnvVar {
        name: "TASKS_RETENTION",
        default: "1h",
        doc: "How long finished in-process tasks stay queryable.",
    },
    EnvVar {
        name: "TASKS_MAX_RECORDS",
        default: "10000",
        doc: "Most finished in-process task records kept (oldest go first).",
    },
];

const POLICY: EnvVar = EnvVar {
    name: "TASKS_PRIORITY_POLICY",
    default: "strict",
    doc: "How a priority queue picks the next level: `strict`, `weighted` (5/3/2) or three weights `high,normal,low`.",
};

/// [`TaskQueueConfig`](crate::TaskQueueConfig)'s variables.
pub(crate) const TASK_QUEUE: &[EnvVar] = &[
    SIZES[0], SIZES[1], LIMITS[0], LIMITS[1], LIMITS[2], LIMITS[3],
];

/// [`PriorityQueueConfig`](crate::PriorityQueueConfig)'s variables.
pub(crate) const PRIORITY_QUEUE: &[EnvVar] = &[
    SIZES[0], SIZES[1], POLICY, LIMITS[0], LIMITS[1], LIMITS[2], LIMITS[3],
];

/// The durable queue's variables (`durable::DurableConfig`); in the README's table
/// whatever the features.
#[cfg_attr(
    not(any(feature = "durable", test)),
    expect(
        dead_code,
        reason = "read by DurableConfig, which the durable feature adds"
    )
)]
pub(crate) const DURABLE: &[EnvVar] = &[
    EnvVar {
        name: "TASKS_QUEUE_NAME",
        default: "default",
        doc: "Durable queue name: 1 to 64 of `A-Z a-z 0-9 _ . -`; its keys live under `cortex:tasks:{<name>}:` (braces included: one hash slot).",
    },
    EnvVar {
        name: "TASKS_CONCURRENCY",
        default: "10",
        doc: "Durable tasks one worker runs at once, 1 to 1 000 000.",
    },
    EnvVar {
        name: "TASKS_VISIBILITY_TIMEOUT",
        default: "30s",
        doc: "A durable task idle this long (its worker stopped refreshing it) is reclaimed by another worker; 30ms to 365 days.",
    },
    EnvVar {
        name: "TASKS_MAX_ATTEMPTS",
        default: "3",
        doc: "Attempts before a durable task is dead-lettered, at least 1.",
    },
    EnvVar {
        name: "TASKS_DEAD_LETTER_CAP",
        default: "100000",
        doc: "Most dead letters kept (older ones are deleted with a warning); `0` keeps all.",
    },
    EnvVar {
        name: "TASKS_OP_TIMEOUT",
        default: "5s",
        doc: "Bound on every Redis call of a durable queue (an enqueue included): keep it below the caller's own deadline so an outage answers an error, not a timeout; 1ms to 365 days.",
    },
    EnvVar {
        name: "TASKS_STATS_INTERVAL",
        default: "5s",
        doc: "How often a durable worker reads the queue's pending and dead-letter counts for its gauges; 10ms to 365 days.",
    },
];

/// Renames the setting an [`Error::InvalidConfig`] names to the variable its value came
/// from, when that variable is set (`fields`: setting, variable).
pub(crate) fn name_variable(
    e: Error,
    env: &EnvSource<'_>,
    fields: &[(&'static str, &'static str)],
) -> Error {
    match e {
        Error::InvalidConfig { key, value, reason } => {
            let key = fields
                .iter()
                .find(|(field, var)| *field == key && env.var(var).is_some())
                .map_or(key, |(_, var)| *var);
            Error::InvalidConfig { key, value, reason }
        }
        e => e,
    }
}

/// Every variable once, in the README's order.
#[cfg(test)]
pub(crate) fn all() -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = Vec::new();
    for v in TASK_QUEUE.iter().chain(PRIORITY_QUEUE).chain(DURABLE) {
        if !out.iter().any(|o| o.name == v.name) {
            out.push(*v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_lists_every_variable() {
        let readme = include_str!("../README.md");
        if let Err(e) = cortex_support::env::check_readme(readme, &super::all()) {
            panic!("{e}");
        }
    }
}
