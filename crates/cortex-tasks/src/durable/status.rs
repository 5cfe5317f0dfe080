//! A task's record in Redis (a hash) read back as a [`TaskInfo`].

use std::collections::HashMap;

use super::redis_util::from_ms;
use crate::{TaskId, TaskInfo, TaskStatus};

/// The record's fields as a [`TaskInfo`]; `None` when it has no known status (no
/// record, or not one of ours).
pub(crate) fn parse_info(id: TaskId, m: &HashMap<String, String>) -> Option<TaskInfo> {
    let status = match m.get("status")?.as_str() {
        "queued" => TaskStatus::Queued,
        "running" => TaskStatus::Running,
        "retrying" => TaskStatus::Retrying,
        "completed" => TaskStatus::Completed,
        "failed" => TaskStatus::Failed,
        "cancelled" => TaskStatus::Cancelled,
        _ => return None,
    };
    let time = |k: &str| m.get(k).and_then(|v| v.parse::<u64>().ok()).map(from_ms);
    let mut info = TaskInfo::queued(
        id,
        m.get("handler").cloned().unwrap_or_default(),
        m.get("priority").and_then(|p| p.parse().ok()),
    );
    info.status = status;
    info.queued_at = time("queued_at").unwrap_or(info.queued_at);
    info.started_at = time("started_at");
    info.finished_at = time("finished_at");
    info.attempts = m.get("attempts").and_then(|v| v.parse().ok()).unwrap_or(0);
    info.error = m.get("error").filter(|e| !e.is_empty()).cloned();
    info.result = m.get("result").and_then(|r| serde_json::from_str(r).ok());
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Priority;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_finished_record_reads_back_whole() {
        let id = TaskId::from_u64(9);
        let info = parse_info(
            id,
            &map(&[
                ("status", "completed"),
                ("handler", "send"),
                ("priority", "high"),
                ("queued_at", "1000"),
                ("started_at", "1500"),
                ("finished_at", "2000"),
                ("attempts", "2"),
                ("error", "first try failed"),
                ("result", "{\"ok\":true}"),
            ]),
        )
        .expect("a record");
        assert_eq!((info.id, info.status), (id, TaskStatus::Completed));
        assert_eq!(
            (info.name.as_str(), info.priority),
            ("send", Some(Priority::High))
        );
        assert_eq!(info.started_at, Some(from_ms(1500)));
        assert_eq!(info.finished_at, Some(from_ms(2000)));
        assert_eq!(info.queued_at, from_ms(1000));
        assert_eq!(info.attempts, 2);
        assert_eq!(info.error.as_deref(), Some("first try failed"));
        assert_eq!(info.result, Some(serde_json::json!({"ok": true})));
    }

    #[test]
    fn missing_or_odd_fields_do_not_make_up_values() {
        let info = parse_info(
            TaskId::from_u64(1),
            &map(&[("status", "queued"), ("error", "")]),
        )
        .expect("a record");
        assert_eq!((info.status, info.attempts), (TaskStatus::Queued, 0));
        assert!(info.error.is_none() && info.result.is_none() && info.started_at.is_none());
        assert!(parse_info(TaskId::from_u64(1), &HashMap::new()).is_none());
        assert!(parse_info(TaskId::from_u64(1), &map(&[("status", "lost")])).is_none());
    }
}
