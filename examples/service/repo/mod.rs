//! Storage behind one trait, one implementation per SQL dialect: the SQL of each
//! backend lives in its own file, every value bound, never formatted in.
//!
//! # Which server answers (PostgreSQL with `DB_REPLICA_URLS`)
//!
//! Every query goes through [`conn`] (the primary) except the few reads that
//! [`read_conn`] sends to a read replica. The rule:
//!
//! - **Replica** ([`read_conn`]): reads that answer a request directly and fill no cache:
//!   the list endpoints (`GET /users` by page, `GET /workspaces`,
//!   `GET /workspaces/{id}/conversations`, `GET /conversations/{id}/messages`) and the
//!   single reads that are not cached (`GET /workspaces/{id}/summary`,
//!   `GET /conversations/{id}`, `GET /messages/{id}`). They may lag the primary by at
//!   most `DB_REPLICA_MAX_LAG` (a replica further behind takes no reads), unless the
//!   request carries `x-cortex-written-lsn` (see below). A replica takes them only
//!   once it has replayed this process's migrations.
//! - **Primary** ([`conn`]), everything else:
//!   - every write, and every read in the same request as a write (the checks before
//!     it: `user_exists`, `workspace_owner`, `conversation_owner`, the workspaces of a
//!     user being deleted), so a request never acts on a stale view of the data;
//!   - every read that fills a cache (`workspace`, `user_workspaces`, the warming
//!     `active_users`): a stale replica row written into the cache would outlive the
//!     invalidation that already went by, and be served for the entry's whole TTL;
//!   - the batched user lookups (`users_by_ids`): one query serves many requests, so it
//!     cannot honor one request's `x-cortex-written-lsn`;
//!   - the summary task's `recent_contents`: it runs right after the message it
//!     summarizes was written, in another request's stead.
//!
//! Read-your-writes across requests: with replicas, every successful request that is
//! not a `GET` answers the header `x-cortex-written-lsn` (the primary's WAL position
//! after it, a decimal number). A client that sends it back on later requests gets
//! replica reads that include its writes: a replica is used only once it has replayed
//! past that position, otherwise the primary answers (`cortex_pool::Session`). Without
//! the header, a list may miss a row written less than `DB_REPLICA_MAX_LAG` ago.
//!
//! SQLite has no replicas: its repository reads through [`conn`] alone.

mod postgres;
mod sqlite;

pub use self::postgres::PostgresRepo;
pub use self::sqlite::SqliteRepo;

use async_trait::async_trait;
use cortex_core::pool::{DbConn, DbPool};

use crate::model::*;

pub type DbResult<T> = Result<T, sqlx::Error>;

/// A connection to the primary through the pool's own `acquire`, so every query's
/// wait, hold time and span are recorded (`cortex_pool_acquire_wait_seconds{pool="db"}`),
/// with the pool's error turned into the sqlx one the repositories answer with.
pub async fn conn<DB: sqlx::Database>(pool: &DbPool<DB>) -> DbResult<DbConn<DB>> {
    pool.acquire().await.map_err(pool_error)
}

/// A connection for a read that may come from a replica: only for the reads the module
/// docs list (never one that fills a cache, never one in a request that writes). A
/// healthy replica (lag within `DB_REPLICA_MAX_LAG`) that has replayed past `schema`
/// answers, else the primary: replicas being down is never an error here. `schema` is
/// the primary's WAL position after this process ran its migrations, so a replica a few
/// milliseconds behind a fresh migration never answers "relation does not exist". When
/// the request carries `x-cortex-written-lsn` ([`WRITTEN_LSN`]), the replica must have
/// replayed past that too. Waits and holds are recorded under the replica's own pool
/// name (`pool="db-replica-0"`); errors map as for [`conn`].
pub async fn read_conn(
    pool: &DbPool<sqlx::Postgres>,
    schema: Option<u64>,
) -> DbResult<DbConn<sqlx::Postgres>> {
    let floor = written_lsn().max(schema);
    let got = match floor {
        Some(lsn) => {
            // One comparison with the replica's last checked position; one extra round
            // trip only while that check is older than `lsn`.
            let session = pool.session().with_written_lsn(Some(lsn));
            session.acquire_read().await
        }
        None => pool.acquire_read().await,
    };
    got.map_err(pool_error)
}

tokio::task_local! {
    /// The primary's WAL position this request's client has written up to (its
    /// `x-cortex-written-lsn` header), set by the router around the handler.
    pub static WRITTEN_LSN: u64;
}

/// The position of [`WRITTEN_LSN`] when the request gave one.
fn written_lsn() -> Option<u64> {
    WRITTEN_LSN.try_with(|lsn| *lsn).ok()
}

/// The pool's error as the sqlx one the repositories answer with.
pub fn pool_error(e: cortex_core::pool::Error) -> sqlx::Error {
    use cortex_core::pool::Error as E;
    match e {
        E::Database(e) => e,
        E::Timeout { .. } | E::Saturated { .. } => sqlx::Error::PoolTimedOut,
        E::Closed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Io(std::io::Error::other(other)),
    }
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
    /// Store the summary made after `message`: an upsert, so a summary task that runs
    /// again (durable tasks run at least once) leaves one row, its `runs` counting the
    /// runs.
    async fn record_summary(
        &self,
        message: i64,
        conversation: i64,
        summary: &serde_json::Value,
        now: i64,
    ) -> DbResult<()>;
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
