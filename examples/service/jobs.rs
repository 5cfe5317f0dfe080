//! Background work: a summary of a conversation after each posted message (through the
//! cognition MCP service when it is configured, locally otherwise), and cache warming.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cortex_core::mcp::{CallOptions, McpClient};
use cortex_core::tasks::durable::{DurableQueue, Registry};
use cortex_core::tasks::{Priority, PriorityQueue, TaskId, admin};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::Shared;
use crate::error::{ApiError, ApiResult};
use crate::repo::Repo;

/// Where tasks run: in this process, or (with Redis) on a durable queue that every
/// instance shares.
pub enum Jobs {
    InProcess(PriorityQueue, Sealer),
    Durable(DurableQueue),
}

/// The in-process queue numbers its tasks in order; the ids this service hands out
/// carry a keyed tag after the number (SipHash, keys drawn at start), so nobody can
/// guess another task's id from their own. Durable ids are random already.
#[derive(Default)]
pub struct Sealer(std::hash::RandomState);

impl Sealer {
    fn tag(&self, id: TaskId) -> String {
        format!("{:016x}", self.0.hash_one(id.as_u64()))
    }

    fn seal(&self, id: TaskId) -> String {
        format!("{id}{}", self.tag(id))
    }

    /// The queue's id inside a sealed one: `Ok(None)` when it is not one we handed
    /// out, `Err(())` when it is not hex at all (a 400, as the queue's own check says).
    fn open(&self, public: &str) -> Result<Option<TaskId>, ()> {
        if public.is_empty() || !public.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        let Some((id, tag)) = public.split_at_checked(16).filter(|_| public.len() == 32) else {
            return Ok(None);
        };
        let id: TaskId = id.parse().map_err(|_| ())?;
        Ok((self.tag(id) == tag).then_some(id))
    }

    fn unknown(public: &str) -> (u16, Value) {
        (404, json!({ "error": format!("unknown task {public}") }))
    }
}

/// The name durable summary tasks are enqueued under; every instance registers it.
pub const SUMMARIZE: &str = "summarize_conversation";

/// The payload of a durable summary task.
#[derive(Debug, Serialize, Deserialize)]
pub struct SummaryJob {
    pub conversation_id: i64,
    /// The posted message the summary follows; its row in `message_summaries` is the
    /// task's effect. Absent in tasks queued before the field existed: those store
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
}

/// What a durable handler needs; set once the service is built (the worker starts
/// with the parts, before the repository exists, and a task arriving that early is
/// retried).
pub type HandlerDeps = Arc<OnceLock<(Arc<dyn Repo>, Option<McpClient>)>>;

/// The durable handlers of this service.
pub fn registry(deps: HandlerDeps) -> Registry {
    let mut registry = Registry::new();
    registry.register(SUMMARIZE, move |job: SummaryJob| {
        let deps = deps.clone();
        async move {
            let (repo, cognition) = deps.get().cloned().ok_or("the service is still starting")?;
            summarize(repo, cognition, job.conversation_id, job.message_id).await
        }
    });
    registry
}

/// `high`, `normal` or `low`; anything else is a 400 listing the valid names.
pub fn check_priority(name: &str) -> ApiResult<Priority> {
    name.parse::<Priority>()
        .map_err(|e| ApiError::bad_request("bad_priority", e.to_string()))
}

impl Jobs {
    /// Enqueue the summary of `conversation` after `message` at `priority`; answers the
    /// task id.
    pub async fn summarize(
        &self,
        state: &Shared,
        conversation: i64,
        message: i64,
        priority: &str,
    ) -> ApiResult<String> {
        let priority = check_priority(priority)?;
        match self {
            Self::InProcess(queue, sealer) => {
                let repo = state.repo.clone();
                let cognition = state.cortex.mcp_client("cognition").cloned();
                let handle = queue
                    .task(priority, SUMMARIZE)
                    .timeout(Duration::from_secs(60))
                    .enqueue_recorded(summarize(repo, cognition, conversation, Some(message)))
                    .await?;
                Ok(sealer.seal(handle.detach()))
            }
            Self::Durable(queue) => {
                let job = SummaryJob {
                    conversation_id: conversation,
                    message_id: Some(message),
                };
                let id = queue.enqueue_with(SUMMARIZE, &job, priority).await?;
                Ok(id.to_string())
            }
        }
    }

    pub async fn list(&self) -> (u16, Value) {
        match self {
            Self::InProcess(queue, sealer) => {
                let (status, mut body) = admin::list(queue);
                if let Some(tasks) = body["tasks"].as_array_mut() {
                    for task in tasks {
                        if let Some(id) =
                            task["id"].as_str().and_then(|id| id.parse::<TaskId>().ok())
                        {
                            task["id"] = json!(sealer.seal(id));
                        }
                    }
                }
                (status, body)
            }
            Self::Durable(queue) => admin::durable_list(queue).await,
        }
    }

    pub async fn get(&self, id: &str) -> (u16, Value) {
        match self {
            Self::InProcess(queue, sealer) => match sealer.open(id) {
                Ok(Some(inner)) => admin::get(queue, &inner.to_string()),
                Ok(None) => Sealer::unknown(id),
                Err(()) => admin::get(queue, id),
            },
            Self::Durable(queue) => admin::durable_get(queue, id).await,
        }
    }

    pub async fn cancel(&self, id: &str) -> (u16, Value) {
        match self {
            Self::InProcess(queue, sealer) => match sealer.open(id) {
                Ok(Some(inner)) => admin::cancel(queue, &inner.to_string()),
                Ok(None) => Sealer::unknown(id),
                Err(()) => admin::cancel(queue, id),
            },
            Self::Durable(queue) => admin::durable_cancel(queue, id).await,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The summary of a conversation's latest messages, stored for `message` (the one whose
/// posting asked for it) and answered.
///
/// The row is written before the task's outcome is recorded, so a worker that dies
/// between the two leaves a task that runs again and rewrites the same row: the effect
/// is idempotent, and `runs` shows the repeat.
pub async fn summarize(
    repo: Arc<dyn Repo>,
    cognition: Option<McpClient>,
    conversation: i64,
    message: Option<i64>,
) -> Result<Value, BoxError> {
    let summary = make_summary(&*repo, cognition, conversation).await?;
    if let Some(message) = message {
        repo.record_summary(message, conversation, &summary, crate::model::now_ms())
            .await?;
    }
    Ok(summary)
}

async fn make_summary(
    repo: &dyn Repo,
    cognition: Option<McpClient>,
    conversation: i64,
) -> Result<Value, BoxError> {
    let texts = repo.recent_contents(conversation, 50).await?;
    if let Some(client) = cognition {
        // The tool's name is the cognition service's; `COGNITION_SUMMARY_TOOL` names
        // another (the arguments carry the texts both as a list and as one message).
        let tool = std::env::var("COGNITION_SUMMARY_TOOL").unwrap_or_else(|_| "summarize".into());
        // A summary changes nothing on the server, so the call is safe to repeat after a
        // timeout or a cut connection: mark it so the client may retry it.
        let answer = client
            .call_tool_with(
                &tool,
                json!({ "conversation_id": conversation, "message": texts.join("\n"), "texts": texts }),
                CallOptions::new().idempotent(),
            )
            .await?;
        let text: Vec<String> = answer
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        metrics::counter!("summaries_total", "source" => "cognition").increment(1);
        return Ok(
            json!({ "conversation_id": conversation, "source": "cognition", "summary": text.join("\n") }),
        );
    }
    // Through the `metrics` facade, as any crate of the service would record.
    metrics::counter!("summaries_total", "source" => "local").increment(1);
    Ok(local_summary(conversation, &texts))
}

/// Without a cognition service: message and word counts and the most used words.
fn local_summary(conversation: i64, texts: &[String]) -> Value {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut words = 0;
    for text in texts {
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() > 3)
        {
            words += 1;
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
    }
    let mut top: Vec<(String, usize)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(5);
    json!({
        "conversation_id": conversation,
        "source": "local",
        "messages": texts.len(),
        "words": words,
        "top_words": top.into_iter().map(|(w, _)| w).collect::<Vec<_>>(),
    })
}

/// Load the workspace lists (and each workspace) of the most active users into the
/// cache, so their first reads after a start or an expiry are hits.
pub async fn warm(state: Shared) -> cortex_core::cache::WarmReport {
    let users = match state.repo.active_users(state.settings.warm_users).await {
        Ok(users) => users,
        Err(e) => {
            tracing::warn!(error = %e, "cache warming: could not list active users");
            vec![]
        }
    };
    let report = cortex_core::cache::warm(users, 4, |owner| {
        let state = state.clone();
        async move {
            let list = crate::handlers::load_user_workspaces(&state, owner).await?;
            for ws in list {
                crate::handlers::load_workspace(&state, ws.id).await?;
            }
            Ok::<_, ApiError>(())
        }
    })
    .await;
    tracing::info!(?report, "cache warmed");
    report
}
