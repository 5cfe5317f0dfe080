//! The domain routes: users, workspaces, conversations, messages; health and readiness.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get, patch, post};
use cortex_core::cache::key_for;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{CACHE_USER_LIST_TTL, CACHE_WORKSPACE_TTL, Shared};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Id, Params};
use crate::model::*;
use crate::openapi::{Op, op};
use crate::repo::{PageSpec, WorkspaceFilter};

/// The domain routes, each with its description (see [`crate::openapi`]).
pub fn operations() -> Vec<(Op, MethodRouter<Shared>)> {
    const PAGE: &[(&str, &str)] = &[
        ("page", "page number, 1 to 1000"),
        ("per_page", "1 to 100, default 20"),
    ];
    let user = [("name", "string"), ("email", "string")];
    let workspace = [
        ("name", "string"),
        ("description", "string"),
        ("owner_id", "integer"),
        ("metadata", "object"),
    ];
    let conversation = [
        ("topic", "string"),
        ("participants", "integer[]"),
        ("metadata", "object"),
    ];
    vec![
        (op("get", "/health", "Liveness", 200, &[]), get(health)),
        (
            op(
                "get",
                "/ready",
                "Readiness: database, Redis (and its nodes), MCP services; read replicas shown",
                200,
                &[],
            ),
            get(ready),
        ),
        (
            op(
                "get",
                "/users",
                "Users by page, or many by id (batched)",
                200,
                &[400],
            )
            .query(&[
                ("ids", "comma-separated ids, at most 100"),
                ("page", "page number, 1 to 1000"),
                ("per_page", "1 to 100, default 20"),
            ]),
            get(list_users),
        ),
        (
            op("post", "/users", "Create a user", 201, &[409]).body(&user, &["name", "email"]),
            post(create_user),
        ),
        (
            op(
                "get",
                "/users/{id}",
                "A user (batched lookup)",
                200,
                &[400, 404],
            ),
            get(get_user),
        ),
        (
            op("patch", "/users/{id}", "Update a user", 200, &[404, 409]).body(&user, &[]),
            patch(update_user),
        ),
        (
            op(
                "delete",
                "/users/{id}",
                "Delete a user and what they own",
                204,
                &[400, 404],
            ),
            delete(delete_user),
        ),
        (
            op(
                "get",
                "/users/{id}/workspaces",
                "A user's workspaces with counts (cached 1 min)",
                200,
                &[400, 404],
            ),
            get(user_workspaces),
        ),
        (
            op(
                "get",
                "/workspaces",
                "Workspaces, filtered and paged",
                200,
                &[400],
            )
            .query(&[
                ("owner_id", "owner"),
                ("name", "name, any case"),
                ("metadata", "JSON object the metadata contains"),
                ("page", "page number, 1 to 1000"),
                ("per_page", "1 to 100, default 20"),
            ]),
            get(list_workspaces),
        ),
        (
            op("post", "/workspaces", "Create a workspace", 201, &[])
                .body(&workspace, &["name", "owner_id"]),
            post(create_workspace),
        ),
        (
            op(
                "get",
                "/workspaces/{id}",
                "A workspace (cached 5 min)",
                200,
                &[400, 404],
            ),
            get(get_workspace),
        ),
        (
            op(
                "patch",
                "/workspaces/{id}",
                "Update a workspace",
                200,
                &[404],
            )
            .body(&workspace[..2], &[]),
            patch(update_workspace),
        ),
        (
            op(
                "delete",
                "/workspaces/{id}",
                "Delete a workspace",
                204,
                &[400, 404],
            ),
            delete(delete_workspace),
        ),
        (
            op(
                "get",
                "/workspaces/{id}/summary",
                "Conversation and message counts, last activity",
                200,
                &[400, 404],
            ),
            get(workspace_summary),
        ),
        (
            op(
                "get",
                "/workspaces/{id}/conversations",
                "Conversations of a workspace",
                200,
                &[400, 404],
            )
            .query(PAGE),
            get(list_conversations),
        ),
        (
            op(
                "post",
                "/workspaces/{id}/conversations",
                "Start a conversation",
                201,
                &[404],
            )
            .body(&conversation, &["topic"]),
            post(create_conversation),
        ),
        (
            op(
                "get",
                "/conversations/{id}",
                "A conversation",
                200,
                &[400, 404],
            ),
            get(get_conversation),
        ),
        (
            op(
                "patch",
                "/conversations/{id}",
                "Update a conversation",
                200,
                &[404],
            )
            .body(&conversation, &[]),
            patch(update_conversation),
        ),
        (
            op(
                "delete",
                "/conversations/{id}",
                "Delete a conversation",
                204,
                &[400, 404],
            ),
            delete(delete_conversation),
        ),
        (
            op(
                "get",
                "/conversations/{id}/messages",
                "Messages, keyset pages",
                200,
                &[400, 404],
            )
            .query(&[
                ("after", "the `next` cursor of the previous page"),
                ("limit", "1 to 100, default 50"),
            ]),
            get(list_messages),
        ),
        (
            op(
                "post",
                "/conversations/{id}/messages",
                "Post a message; enqueues its summary task",
                201,
                &[404],
            )
            .query(&[("priority", "high, normal (default) or low")])
            .body(
                &[
                    ("sender_id", "integer"),
                    ("content", "string"),
                    ("metadata", "object"),
                ],
                &["sender_id", "content"],
            ),
            post(create_message),
        ),
        (
            op("get", "/messages/{id}", "A message", 200, &[400, 404]),
            get(get_message),
        ),
        (
            op(
                "delete",
                "/messages/{id}",
                "Delete a message",
                204,
                &[400, 404],
            ),
            delete(delete_message),
        ),
    ]
}

// ---- health ----

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the database (the primary), Redis (if used) and every MCP client answer;
/// 503 naming the parts that do not. On a Redis Cluster, Redis is ready while every
/// master that serves slots is up (a replica node down does not fail it).
///
/// Beside the parts: `redis_nodes`, each Redis node with its role, slots and whether it
/// is up (one entry for a single server), and `db_replicas`, each read replica
/// (`DB_REPLICA_URLS`) with whether it takes reads and its replay lag. A replica that is
/// down or lagging never fails readiness: reads then go to the primary.
async fn ready(State(state): State<Shared>) -> impl IntoResponse {
    let mut parts = serde_json::Map::new();
    let bound = Duration::from_secs(2);
    let db = async {
        matches!(
            tokio::time::timeout(bound, state.repo.ping()).await,
            Ok(Ok(()))
        )
    };
    let redis = async {
        let redis = state.cortex.redis()?;
        let (health, nodes) = tokio::join!(
            tokio::time::timeout(bound, redis.health()),
            tokio::time::timeout(bound, redis.nodes()),
        );
        let nodes: Vec<Value> = match nodes {
            Ok(Ok(nodes)) => nodes
                .iter()
                .map(|n| {
                    json!({
                        "address": n.address,
                        "role": n.role,
                        "up": n.up,
                        "slots": n.slots,
                    })
                })
                .collect(),
            _ => vec![],
        };
        Some((matches!(health, Ok(Ok(()))), nodes))
    };
    let (db, redis) = tokio::join!(db, redis);
    parts.insert("database".into(), json!(db));
    let mut ok = db;
    let mut redis_nodes = vec![];
    if let Some((up, nodes)) = redis {
        parts.insert("redis".into(), json!(up));
        ok &= up;
        redis_nodes = nodes;
    }
    for client in state.cortex.mcp_clients() {
        let up = client.is_healthy();
        parts.insert(format!("mcp:{}", client.service()), json!(up));
        ok &= up;
    }
    // From the pool's background checks: never waits on a replica. The URL stays out
    // (this route needs no token); the admin config shows it, redacted.
    let replicas: Vec<Value> = state
        .cortex
        .database()
        .replicas()
        .iter()
        .map(|r| json!({ "name": r.name, "up": r.up, "lag_seconds": r.lag_seconds }))
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ok,
            "parts": parts,
            "redis_nodes": redis_nodes,
            "db_replicas": replicas,
        })),
    )
}

// ---- paging ----

const MAX_PER_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

#[derive(Debug, Deserialize)]
struct PageParams {
    page: Option<i64>,
    per_page: Option<i64>,
}

impl PageParams {
    /// OFFSET pages, capped: deep pages cost a scan, so they stop at page 1000.
    fn spec(&self) -> ApiResult<PageSpec> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(20);
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(ApiError::bad_request(
                "bad_page",
                format!("page {page} is not in 1..={MAX_PAGE}"),
            ));
        }
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::bad_request(
                "bad_page",
                format!("per_page {per_page} is not in 1..={MAX_PER_PAGE}"),
            ));
        }
        Ok(PageSpec {
            limit: per_page,
            offset: (page - 1) * per_page,
        })
    }
}

// ---- caching ----

fn workspace_key(id: i64) -> String {
    key_for("ws", &id).unwrap_or_else(|_| format!("ws:{id}"))
}

fn user_list_key(owner: i64) -> String {
    key_for("user_ws", &owner).unwrap_or_else(|_| format!("user_ws:{owner}"))
}

impl From<cortex_core::cache::Error> for ApiError {
    fn from(e: cortex_core::cache::Error) -> Self {
        use cortex_core::cache::Error as E;
        match &e {
            // The load of a cached read is a database query: answer as the query would
            // have (a database going away is a 503, not a bug of ours).
            E::Loader(source) => match source.downcast_ref::<sqlx::Error>() {
                Some(db) => ApiError::from_sqlx(db),
                None => ApiError::internal("cached read", &e),
            },
            E::LoadTimeout { .. } => {
                ApiError::unavailable("database_busy", "the read took too long; try again", 1)
            }
            _ => ApiError::internal("cached read", &e),
        }
    }
}

/// Drop cached entries after a write.
///
/// The database already holds the write, so a failed invalidation does not fail the
/// request: it is retried in the background, with backoff, until it lands or the
/// longest cache TTL has passed (by then any old copy has expired on its own). Without
/// the retry, an old copy left in Redis would be served for the rest of its TTL.
async fn invalidate(state: &Shared, keys: &[String]) {
    for key in keys {
        if let Err(e) = state.cortex.cache().invalidate(key).await {
            tracing::warn!(key, error = %e, "cache invalidation failed; retrying in the background");
            tokio::spawn(retry_invalidation(
                state.cortex.cache().clone(),
                key.clone(),
            ));
        }
    }
}

async fn retry_invalidation(
    cache: std::sync::Arc<cortex_core::cache::CachedCalls<cortex_core::CortexCache>>,
    key: String,
) {
    let give_up = tokio::time::Instant::now() + CACHE_WORKSPACE_TTL.max(CACHE_USER_LIST_TTL);
    let mut delay = std::time::Duration::from_millis(50);
    while tokio::time::Instant::now() + delay < give_up {
        tokio::time::sleep(delay).await;
        match cache.invalidate(&key).await {
            Ok(_) => {
                tracing::info!(key, "cache invalidation landed on retry");
                return;
            }
            Err(e) => tracing::debug!(key, error = %e, "cache invalidation still failing"),
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
    tracing::warn!(
        key,
        "cache invalidation never landed; the old copy has expired by now"
    );
}

pub async fn load_workspace(state: &Shared, id: i64) -> ApiResult<Option<Workspace>> {
    if !state.settings.cache {
        return Ok(state.repo.workspace(id).await?);
    }
    let repo = state.repo.clone();
    Ok(state
        .cortex
        .cache()
        .get_or_load(
            &workspace_key(id),
            Some(CACHE_WORKSPACE_TTL),
            || async move { repo.workspace(id).await },
        )
        .await?)
}

pub async fn load_user_workspaces(state: &Shared, owner: i64) -> ApiResult<Vec<WorkspaceSummary>> {
    if !state.settings.cache {
        return Ok(state.repo.user_workspaces(owner).await?);
    }
    let repo = state.repo.clone();
    Ok(state
        .cortex
        .cache()
        .get_or_load(
            &user_list_key(owner),
            Some(CACHE_USER_LIST_TTL),
            || async move { repo.user_workspaces(owner).await },
        )
        .await?)
}

// ---- users ----

#[derive(Debug, Deserialize)]
struct UserListParams {
    ids: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

const MAX_IDS: usize = 100;

async fn list_users(
    State(state): State<Shared>,
    Params(q): Params<UserListParams>,
) -> ApiResult<Json<Value>> {
    let Some(raw) = q.ids else {
        let page = PageParams {
            page: q.page,
            per_page: q.per_page,
        }
        .spec()?;
        return Ok(Json(json!({ "users": state.repo.list_users(page).await? })));
    };
    let ids: Vec<i64> = raw
        .split(',')
        .map(|s| s.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            ApiError::bad_request(
                "bad_ids",
                format!("ids {raw:?} is not a comma-separated list of ids"),
            )
        })?;
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(ApiError::bad_request(
            "bad_ids",
            format!("give 1 to {MAX_IDS} ids"),
        ));
    }
    // Each id is its own load; the batcher folds them (and concurrent requests' ids)
    // into a few queries.
    let results = state.users.load_many(ids.iter().copied()).await;
    let mut users = vec![];
    let mut missing = vec![];
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(user) => users.push(user),
            Err(cortex_core::batch::Error::Missing) => missing.push(id),
            Err(e) => return Err(batch_error(e)),
        }
    }
    Ok(Json(json!({ "users": users, "missing": missing })))
}

fn batch_error(e: cortex_core::batch::Error) -> ApiError {
    if e.is_retryable() {
        ApiError::unavailable("busy", e.to_string(), 1)
    } else {
        ApiError::internal("user lookup", &e)
    }
}

async fn create_user(
    State(state): State<Shared>,
    Body(new): Body<NewUser>,
) -> ApiResult<impl IntoResponse> {
    new.check()?;
    let user = state.repo.create_user(&new, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn get_user(State(state): State<Shared>, Id(id): Id) -> ApiResult<Json<User>> {
    match state.users.load(id).await {
        Ok(user) => Ok(Json(user)),
        Err(cortex_core::batch::Error::Missing) => Err(ApiError::not_found("user", id)),
        Err(e) => Err(batch_error(e)),
    }
}

async fn update_user(
    State(state): State<Shared>,
    Id(id): Id,
    Body(patch): Body<UserPatch>,
) -> ApiResult<Json<User>> {
    patch.check()?;
    let user = state
        .repo
        .update_user(id, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found("user", id))?;
    Ok(Json(user))
}

async fn delete_user(State(state): State<Shared>, Id(id): Id) -> ApiResult<StatusCode> {
    // Their workspaces go with them (ON DELETE CASCADE): forget those cached too.
    let owned = state.repo.user_workspaces(id).await?;
    if !state.repo.delete_user(id).await? {
        return Err(ApiError::not_found("user", id));
    }
    let mut keys: Vec<String> = owned.iter().map(|w| workspace_key(w.id)).collect();
    keys.push(user_list_key(id));
    invalidate(&state, &keys).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn user_workspaces(State(state): State<Shared>, Id(id): Id) -> ApiResult<Json<Value>> {
    if !state.repo.user_exists(id).await? {
        return Err(ApiError::not_found("user", id));
    }
    Ok(Json(
        json!({ "workspaces": load_user_workspaces(&state, id).await? }),
    ))
}

// ---- workspaces ----

#[derive(Debug, Deserialize)]
struct WorkspaceListParams {
    owner_id: Option<i64>,
    name: Option<String>,
    metadata: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

async fn list_workspaces(
    State(state): State<Shared>,
    Params(q): Params<WorkspaceListParams>,
) -> ApiResult<Json<Value>> {
    let page = PageParams {
        page: q.page,
        per_page: q.per_page,
    }
    .spec()?;
    let filter = WorkspaceFilter {
        owner_id: q.owner_id,
        name: q.name,
        metadata: q
            .metadata
            .as_deref()
            .map(MetadataFilter::parse)
            .transpose()?,
    };
    Ok(Json(
        json!({ "workspaces": state.repo.list_workspaces(&filter, page).await? }),
    ))
}

async fn create_workspace(
    State(state): State<Shared>,
    Body(new): Body<NewWorkspace>,
) -> ApiResult<impl IntoResponse> {
    new.check()?;
    if !state.repo.user_exists(new.owner_id).await? {
        return Err(ApiError::validation(format!(
            "owner_id {} does not exist",
            new.owner_id
        )));
    }
    let ws = state.repo.create_workspace(&new, now_ms()).await?;
    invalidate(&state, &[user_list_key(ws.owner_id)]).await;
    Ok((StatusCode::CREATED, Json(ws)))
}

async fn get_workspace(State(state): State<Shared>, Id(id): Id) -> ApiResult<Json<Workspace>> {
    load_workspace(&state, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("workspace", id))
}

async fn update_workspace(
    State(state): State<Shared>,
    Id(id): Id,
    Body(patch): Body<WorkspacePatch>,
) -> ApiResult<Json<Workspace>> {
    patch.check()?;
    let ws = state
        .repo
        .update_workspace(id, &patch, now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found("workspace", id))?;
    invalidate(&state, &[workspace_key(id), user_list_key(ws.owner_id)]).await;
    Ok(Json(ws))
}

async fn delete_workspace(State(state): State<Shared>, Id(id): Id) -> ApiResult<StatusCode> {
    let owner = state
        .repo
        .delete_workspace(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace", id))?;
    invalidate(&state, &[workspace_key(id), user_list_key(owner)]).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn workspace_summary(
    State(state): State<Shared>,
    Id(id): Id,
) -> ApiResult<Json<WorkspaceSummary>> {
    state
        .repo
        .workspace_summary(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("workspace", id))
}

// ---- conversations ----

async fn list_conversations(
    State(state): State<Shared>,
    Id(id): Id,
    Params(q): Params<PageParams>,
) -> ApiResult<Json<Value>> {
    let page = q.spec()?;
    if state.repo.workspace_owner(id).await?.is_none() {
        return Err(ApiError::not_found("workspace", id));
    }
    Ok(Json(
        json!({ "conversations": state.repo.list_conversations(id, page).await? }),
    ))
}

async fn create_conversation(
    State(state): State<Shared>,
    Id(id): Id,
    Body(new): Body<NewConversation>,
) -> ApiResult<impl IntoResponse> {
    new.check()?;
    let owner = state
        .repo
        .workspace_owner(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace", id))?;
    let conversation = state.repo.create_conversation(id, &new, now_ms()).await?;
    invalidate(&state, &[user_list_key(owner)]).await;
    Ok((StatusCode::CREATED, Json(conversation)))
}

async fn get_conversation(
    State(state): State<Shared>,
    Id(id): Id,
) -> ApiResult<Json<Conversation>> {
    state
        .repo
        .conversation(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("conversation", id))
}

async fn update_conversation(
    State(state): State<Shared>,
    Id(id): Id,
    Body(patch): Body<ConversationPatch>,
) -> ApiResult<Json<Conversation>> {
    patch.check()?;
    state
        .repo
        .update_conversation(id, &patch)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("conversation", id))
}

async fn delete_conversation(State(state): State<Shared>, Id(id): Id) -> ApiResult<StatusCode> {
    let (_, owner) = state
        .repo
        .conversation_owner(id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation", id))?;
    state
        .repo
        .delete_conversation(id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation", id))?;
    invalidate(&state, &[user_list_key(owner)]).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- messages ----

#[derive(Debug, Deserialize)]
struct MessageListParams {
    after: Option<String>,
    limit: Option<i64>,
}

async fn list_messages(
    State(state): State<Shared>,
    Id(id): Id,
    Params(q): Params<MessageListParams>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PER_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_page",
            format!("limit {limit} is not in 1..={MAX_PER_PAGE}"),
        ));
    }
    let after = q.after.as_deref().map(Cursor::decode).transpose()?;
    if state.repo.conversation_owner(id).await?.is_none() {
        return Err(ApiError::not_found("conversation", id));
    }
    // One more than asked tells whether a next page exists.
    let mut messages = state.repo.messages_after(id, after, limit + 1).await?;
    let more = messages.len() as i64 > limit;
    messages.truncate(usize::try_from(limit).unwrap_or(0));
    let next = more
        .then(|| {
            messages.last().map(|m| {
                Cursor {
                    sent_at: m.sent_at,
                    id: m.id,
                }
                .encode()
            })
        })
        .flatten();
    Ok(Json(json!({ "messages": messages, "next": next })))
}

#[derive(Debug, Deserialize)]
struct PostParams {
    priority: Option<String>,
}

async fn create_message(
    State(state): State<Shared>,
    Id(id): Id,
    Params(q): Params<PostParams>,
    Body(new): Body<NewMessage>,
) -> ApiResult<impl IntoResponse> {
    new.check()?;
    let priority = q.priority.as_deref().unwrap_or("normal");
    crate::jobs::check_priority(priority)?;
    let (_, owner) = state
        .repo
        .conversation_owner(id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation", id))?;
    if !state.repo.user_exists(new.sender_id).await? {
        return Err(ApiError::validation(format!(
            "sender_id {} does not exist",
            new.sender_id
        )));
    }
    let message = state.repo.create_message(id, &new, now_ms()).await?;
    invalidate(&state, &[user_list_key(owner)]).await;
    let task = state
        .jobs
        .summarize(&state, id, message.id, priority)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "message": message, "task_id": task })),
    ))
}

async fn get_message(State(state): State<Shared>, Id(id): Id) -> ApiResult<Json<Message>> {
    state
        .repo
        .message(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("message", id))
}

async fn delete_message(State(state): State<Shared>, Id(id): Id) -> ApiResult<StatusCode> {
    let conversation = state
        .repo
        .delete_message(id)
        .await?
        .ok_or_else(|| ApiError::not_found("message", id))?;
    if let Some((_, owner)) = state.repo.conversation_owner(conversation).await? {
        invalidate(&state, &[user_list_key(owner)]).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
