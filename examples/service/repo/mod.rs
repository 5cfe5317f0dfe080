//! Storage behind one trait, one implementation per SQL dialect: the SQL of each
//! backend lives in its own file, every value bound, never formatted in.

mod postgres;
mod sqlite;

pub use self::postgres::PostgresRepo;
pub use self::sqlite::SqliteRepo;

use async_trait::async_trait;
use cortex_core::pool::{DbConn, DbPool};

use crate::model::*;

pub type DbResult<T> = Result<T, sqlx::Error>;

/// A connection through the pool's own `acquire`, so every query's wait, hold time and
/// span are recorded (`cortex_pool_acquire_wait_seconds{pool="db"}`), with the pool's
/// error turned into the sqlx one the repositories answer with.
pub async fn conn<DB: sqlx::Database>(pool: &DbPool<DB>) -> DbResult<DbConn<DB>> {
    use cortex_core::pool::Error as E;
    pool.acquire().await.map_err(|e| match e {
        E::Database(e) => e,
        E::Timeout { .. } | E::Saturated { .. } => sqlx::Error::PoolTimedOut,
        E::Closed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Io(std::io::Error::other(other)),
    })
}

/// A migrator over migrations compiled into the binary (`include_str!`), so the service
/// migrates its database from wherever it runs, and no database is needed to build it.
/// Each entry is (version, description, SQL), as a `<version>_<description>.sql` file
/// would give them.
fn embedded_migrator(migrations: &[(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Limit and offset of a numbered page; `offset` is capped by the handlers.
#[derive(Debug, Clone, Copy)]
pub struct PageSpec {
    pub limit: i64,
    pub offset: i64,
}

/// What `GET /workspaces` filters on.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceFilter {
    pub owner_id: Option<i64>,
    pub name: Option<String>,
    pub metadata: Option<MetadataFilter>,
}

#[async_trait]
pub trait Repo: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> DbResult<()>;

    async fn create_user(&self, new: &NewUser, now: i64) -> DbResult<User>;
    /// Every user of `ids` that exists, in any order (the batcher's one query).
    async fn users_by_ids(&self, ids: &[i64]) -> DbResult<Vec<User>>;
    async fn list_users(&self, page: PageSpec) -> DbResult<Vec<User>>;
    async fn update_user(&self, id: i64, patch: &UserPatch) -> DbResult<Option<User>>;
    async fn delete_user(&self, id: i64) -> DbResult<bool>;
    async fn user_exists(&self, id: i64) -> DbResult<bool>;
    /// Users with the most recent messages or workspaces, for cache warming.
    async fn active_users(&self, limit: i64) -> DbResult<Vec<i64>>;

    async fn create_workspace(&self, new: &NewWorkspace, now: i64) -> DbResult<Workspace>;
    async fn workspace(&self, id: i64) -> DbResult<Option<Workspace>>;
    async fn list_workspaces(
        &self,
        filter: &WorkspaceFilter,
        page: PageSpec,
    ) -> DbResult<Vec<WorkspaceItem>>;
    async fn update_workspace(
        &self,
        id: i64,
        patch: &WorkspacePatch,
        now: i64,
    ) -> DbResult<Option<Workspace>>;
    /// Deletes and answers the owner, so the caller can invalidate the owner's list.
    async fn delete_workspace(&self, id: i64) -> DbResult<Option<i64>>;
    async fn workspace_owner(&self, id: i64) -> DbResult<Option<i64>>;
    async fn workspace_summary(&self, id: i64) -> DbResult<Option<WorkspaceSummary>>;
    /// The summaries of every workspace `owner` has (the cached per-user list).
    async fn user_workspaces(&self, owner: i64) -> DbResult<Vec<WorkspaceSummary>>;

    async fn create_conversation(
        &self,
        workspace: i64,
        new: &NewConversation,
        now: i64,
    ) -> DbResult<Conversation>;
    async fn conversation(&self, id: i64) -> DbResult<Option<Conversation>>;
    async fn list_conversations(
        &self,
        workspace: i64,
        page: PageSpec,
    ) -> DbResult<Vec<Conversation>>;
    async fn update_conversation(
        &self,
        id: i64,
        patch: &ConversationPatch,
    ) -> DbResult<Option<Conversation>>;
    /// Deletes and answers the workspace it was in.
    async fn delete_conversation(&self, id: i64) -> DbResult<Option<i64>>;
    /// The workspace of a conversation, and the workspace's owner.
    async fn conversation_owner(&self, id: i64) -> DbResult<Option<(i64, i64)>>;

    async fn create_message(
        &self,
        conversation: i64,
        new: &NewMessage,
        now: i64,
    ) -> DbResult<Message>;
    async fn message(&self, id: i64) -> DbResult<Option<Message>>;
    /// Up to `limit` messages after `after` in (time, id) order: keyset pagination.
    async fn messages_after(
        &self,
        conversation: i64,
        after: Option<Cursor>,
        limit: i64,
    ) -> DbResult<Vec<Message>>;
    /// Deletes and answers the conversation it was in.
    async fn delete_message(&self, id: i64) -> DbResult<Option<i64>>;
    /// The newest `limit` message texts of a conversation, newest first.
    async fn recent_contents(&self, conversation: i64, limit: i64) -> DbResult<Vec<String>>;
}

/// Parse a JSON column; a stored value is valid JSON (the schema checks it).
fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

fn ids(text: &str) -> Vec<i64> {
    serde_json::from_str(text).unwrap_or_default()
}

// Rows as both dialects answer them (times as Unix milliseconds, JSON as text), and
// their models: one conversion for both backends.
type UserRow = (i64, String, String, i64);
type WorkspaceRow = (i64, String, String, i64, String, i64, i64);
type ConversationRow = (i64, i64, String, String, String, i64);
type MessageRow = (i64, i64, i64, String, String, i64);
type SummaryRow = (i64, String, i64, i64, Option<i64>);

fn user((id, name, email, created_at): UserRow) -> User {
    User {
        id,
        name,
        email,
        created_at,
    }
}

fn workspace(
    (id, name, description, owner_id, metadata, created_at, updated_at): WorkspaceRow,
) -> Workspace {
    Workspace {
        id,
        name,
        description,
        owner_id,
        metadata: json(&metadata),
        created_at,
        updated_at,
    }
}

fn conversation(
    (id, workspace_id, topic, participants, metadata, created_at): ConversationRow,
) -> Conversation {
    Conversation {
        id,
        workspace_id,
        topic,
        participants: ids(&participants),
        metadata: json(&metadata),
        created_at,
    }
}

fn message((id, conversation_id, sender_id, content, metadata, sent_at): MessageRow) -> Message {
    Message {
        id,
        conversation_id,
        sender_id,
        content,
        metadata: json(&metadata),
        sent_at,
    }
}

fn summary(
    (id, name, conversation_count, message_count, last_activity): SummaryRow,
) -> WorkspaceSummary {
    WorkspaceSummary {
        id,
        name,
        conversation_count,
        message_count,
        last_activity,
    }
}
