//! The PostgreSQL dialect: jsonb with a GIN index for containment, times as
//! `timestamptz` (answered as Unix milliseconds), messages partitioned by month, and a
//! materialized view of user activity.
//!
//! Writes, cache fills and the checks inside a writing request go to the primary
//! ([`conn`]); the uncached list and single reads go through [`read_conn`], to a read
//! replica when there is one: the rule and why are in the [`super`] module docs.

use async_trait::async_trait;
use cortex_core::pool::DbPool;
use sqlx::{Postgres, QueryBuilder};

use super::{
    ConversationRow, DbResult, MessageRow, PageSpec, Repo, SummaryRow, UserRow, WorkspaceFilter,
    WorkspaceRow, conn, conversation, embedded_migrator, message, pool_error, read_conn, summary,
    user, workspace,
};
use crate::model::*;

/// The schema, one entry per file of `examples/service/migrations/postgres/`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "domain",
        include_str!("../migrations/postgres/0001_domain.sql"),
    ),
    (
        2,
        "summaries",
        include_str!("../migrations/postgres/0002_summaries.sql"),
    ),
];

pub struct PostgresRepo {
    pool: DbPool<Postgres>,
    /// The primary's WAL position after the migrations (with read replicas): replica
    /// reads wait for a replica that has the schema (see [`read_conn`]).
    schema_lsn: Option<u64>,
}

impl PostgresRepo {
    /// Run the migrations, then serve from `pool`.
    pub async fn new(pool: &DbPool<Postgres>) -> Result<Self, sqlx::migrate::MigrateError> {
        embedded_migrator(MIGRATIONS).run(pool.inner()).await?;
        let schema_lsn = if pool.replicas().is_empty() {
            None
        } else {
            let mut session = pool.session();
            session
                .mark_written_now()
                .await
                .map_err(|e| sqlx::migrate::MigrateError::Execute(pool_error(e)))?;
            session.written_lsn()
        };
        Ok(Self {
            pool: pool.clone(),
            schema_lsn,
        })
    }

    /// Make sure the partitions of this month and the next `ahead` exist; answers how
    /// many were made.
    pub async fn create_partitions(&self, ahead: i32) -> DbResult<i32> {
        sqlx::query_scalar("SELECT create_message_partitions(current_date, $1)")
            .bind(ahead)
            .fetch_one(&mut **conn(&self.pool).await?)
            .await
    }

    /// Refresh the activity view without blocking its readers.
    pub async fn refresh_activity(&self) -> DbResult<()> {
        sqlx::query("REFRESH MATERIALIZED VIEW CONCURRENTLY user_activity")
            .execute(&mut **conn(&self.pool).await?)
            .await
            .map(drop)
    }
}

macro_rules! ms {
    ($col:literal) => {
        concat!("(extract(epoch FROM ", $col, ") * 1000)::bigint")
    };
}

macro_rules! user_columns {
    () => {
        concat!("id, name, email, ", ms!("created_at"))
    };
}

macro_rules! workspace_columns {
    () => {
        concat!(
            "id, name, description, owner_id, metadata::text, ",
            ms!("created_at"),
            ", ",
            ms!("updated_at")
        )
    };
}

macro_rules! conversation_columns {
    () => {
        concat!(
            "id, workspace_id, topic, participants::text, metadata::text, ",
            ms!("created_at")
        )
    };
}

macro_rules! message_columns {
    () => {
        concat!(
            "id, conversation_id, sender_id, content, metadata::text, ",
            ms!("sent_at")
        )
    };
}

/// A bound Unix-milliseconds parameter as a `timestamptz`.
macro_rules! at {
    ($n:literal) => {
        concat!("to_timestamp($", $n, "::float8 / 1000)")
    };
}

#[async_trait]
impl Repo for PostgresRepo {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1")
            .execute(&mut **conn(&self.pool).await?)
            .await
            .map(drop)
    }

    async fn create_user(&self, new: &NewUser, now: i64) -> DbResult<User> {
        let sql = concat!(
            "INSERT INTO users (name, email, created_at) VALUES ($1, $2, ",
            at!("3"),
            ") RETURNING ",
            user_columns!()
        );
        let row: UserRow = sqlx::query_as(sql)
            .bind(&new.name)
            .bind(&new.email)
            .bind(now)
            .fetch_one(&mut **conn(&self.pool).await?)
            .await?;
        Ok(user(row))
    }

    async fn users_by_ids(&self, wanted: &[i64]) -> DbResult<Vec<User>> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = ANY($1)");
        let rows: Vec<UserRow> = sqlx::query_as(sql)
            .bind(wanted)
            .fetch_all(&mut **conn(&self.pool).await?)
            .await?;
        Ok(rows.into_iter().map(user).collect())
    }

    async fn list_users(&self, page: PageSpec) -> DbResult<Vec<User>> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY id LIMIT $1 OFFSET $2"
        );
        let rows: Vec<UserRow> = sqlx::query_as(sql)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&mut **read_conn(&self.pool, self.schema_lsn).await?)
            .await?;
        Ok(rows.into_iter().map(user).collect())
    }

    async fn update_user(&self, id: i64, patch: &UserPatch) -> DbResult<Option<User>> {
        let sql = concat!(
            "UPDATE users SET name = coalesce($1, name), email = coalesce($2, email) \
             WHERE id = $3 RETURNING ",
            user_columns!()
        );
        let row: Option<UserRow> = sqlx::query_as(sql)
            .bind(&patch.name)
            .bind(&patch.email)
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await?;
        Ok(row.map(user))
    }

    async fn delete_user(&self, id: i64) -> DbResult<bool> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut **conn(&self.pool).await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_exists(&self, id: i64) -> DbResult<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
            .bind(id)
            .fetch_one(&mut **conn(&self.pool).await?)
            .await
    }

    async fn active_users(&self, limit: i64) -> DbResult<Vec<i64>> {
        sqlx::query_scalar(
            "SELECT user_id FROM user_activity WHERE messages > 0 \
             ORDER BY last_message_at DESC, messages DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut **conn(&self.pool).await?)
        .await
    }

    async fn create_workspace(&self, new: &NewWorkspace, now: i64) -> DbResult<Workspace> {
        let sql = concat!(
            "INSERT INTO workspaces (name, description, owner_id, metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $4::jsonb, ",
            at!("5"),
            ", ",
            at!("5"),
            ") RETURNING ",
            workspace_columns!()
        );
        let row: WorkspaceRow = sqlx::query_as(sql)
            .bind(&new.name)
            .bind(&new.description)
            .bind(new.owner_id)
            .bind(new.metadata.to_string())
            .bind(now)
            .fetch_one(&mut **conn(&self.pool).await?)
            .await?;
        Ok(workspace(row))
    }

    async fn workspace(&self, id: i64) -> DbResult<Option<Workspace>> {
        let sql = concat!(
            "SELECT ",
            workspace_columns!(),
            " FROM workspaces WHERE id = $1"
        );
        let row: Option<WorkspaceRow> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await?;
        Ok(row.map(workspace))
    }

    async fn list_workspaces(
        &self,
        filter: &WorkspaceFilter,
        page: PageSpec,
    ) -> DbResult<Vec<WorkspaceItem>> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
            "SELECT id, name, owner_id, ",
            ms!("updated_at"),
            " FROM workspaces WHERE true"
        ));
        if let Some(owner) = filter.owner_id {
            q.push(" AND owner_id = ").push_bind(owner);
        }
        if let Some(name) = &filter.name {
            q.push(" AND lower(name) = lower(")
                .push_bind(name.clone())
                .push(")");
        }
        if let Some(MetadataFilter(wanted)) = &filter.metadata {
            // Containment answered by the GIN index; the object is one bound value.
            q.push(" AND metadata @> ")
                .push_bind(serde_json::Value::Object(wanted.clone()).to_string())
                .push("::jsonb");
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page.limit);
        q.push(" OFFSET ").push_bind(page.offset);
        let rows: Vec<(i64, String, i64, i64)> = q
            .build_query_as()
            .fetch_all(&mut **read_conn(&self.pool, self.schema_lsn).await?)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, owner_id, updated_at)| WorkspaceItem {
                id,
                name,
                owner_id,
                updated_at,
            })
            .collect())
    }

    async fn update_workspace(
        &self,
        id: i64,
        patch: &WorkspacePatch,
        now: i64,
    ) -> DbResult<Option<Workspace>> {
        let sql = concat!(
            "UPDATE workspaces SET name = coalesce($1, name), description = coalesce($2, description), \
             metadata = coalesce($3::jsonb, metadata), updated_at = ",
            at!("4"),
            " WHERE id = $5 RETURNING ",
            workspace_columns!()
        );
        let row: Option<WorkspaceRow> = sqlx::query_as(sql)
            .bind(&patch.name)
            .bind(&patch.description)
            .bind(patch.metadata.as_ref().map(ToString::to_string))
            .bind(now)
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await?;
        Ok(row.map(workspace))
    }

    async fn delete_workspace(&self, id: i64) -> DbResult<Option<i64>> {
        sqlx::query_scalar("DELETE FROM workspaces WHERE id = $1 RETURNING owner_id")
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await
    }

    async fn workspace_owner(&self, id: i64) -> DbResult<Option<i64>> {
        sqlx::query_scalar("SELECT owner_id FROM workspaces WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await
    }

    async fn workspace_summary(&self, id: i64) -> DbResult<Option<WorkspaceSummary>> {
        let row: Option<SummaryRow> = sqlx::query_as(concat!(
            "WITH per_conversation AS ( \
                 SELECT c.id, c.workspace_id, count(m.id) AS messages, max(m.sent_at) AS last_at \
                 FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id \
                 WHERE c.workspace_id = $1 GROUP BY c.id, c.workspace_id) \
             SELECT w.id, w.name, count(pc.id) OVER ws, \
                    coalesce(sum(pc.messages) OVER ws, 0)::bigint, ",
            ms!("max(pc.last_at) OVER ws"),
            " FROM workspaces w LEFT JOIN per_conversation pc ON pc.workspace_id = w.id \
             WHERE w.id = $1 WINDOW ws AS (PARTITION BY w.id) LIMIT 1"
        ))
        .bind(id)
        .fetch_optional(&mut **read_conn(&self.pool, self.schema_lsn).await?)
        .await?;
        Ok(row.map(summary))
    }

    async fn user_workspaces(&self, owner: i64) -> DbResult<Vec<WorkspaceSummary>> {
        let rows: Vec<SummaryRow> = sqlx::query_as(concat!(
            "SELECT w.id, w.name, count(DISTINCT c.id), count(m.id), ",
            ms!("max(m.sent_at)"),
            " FROM workspaces w \
             LEFT JOIN conversations c ON c.workspace_id = w.id \
             LEFT JOIN messages m ON m.conversation_id = c.id \
             WHERE w.owner_id = $1 GROUP BY w.id, w.name ORDER BY w.id"
        ))
        .bind(owner)
        .fetch_all(&mut **conn(&self.pool).await?)
        .await?;
        Ok(rows.into_iter().map(summary).collect())
    }

    async fn create_conversation(
        &self,
        ws: i64,
        new: &NewConversation,
        now: i64,
    ) -> DbResult<Conversation> {
        let sql = concat!(
            "INSERT INTO conversations (workspace_id, topic, participants, metadata, created_at) \
             VALUES ($1, $2, $3::jsonb, $4::jsonb, ",
            at!("5"),
            ") RETURNING ",
            conversation_columns!()
        );
        let row: ConversationRow = sqlx::query_as(sql)
            .bind(ws)
            .bind(&new.topic)
            .bind(serde_json::to_string(&new.participants).unwrap_or_else(|_| "[]".into()))
            .bind(new.metadata.to_string())
            .bind(now)
            .fetch_one(&mut **conn(&self.pool).await?)
            .await?;
        Ok(conversation(row))
    }

    async fn conversation(&self, id: i64) -> DbResult<Option<Conversation>> {
        let sql = concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE id = $1"
        );
        let row: Option<ConversationRow> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut **read_conn(&self.pool, self.schema_lsn).await?)
            .await?;
        Ok(row.map(conversation))
    }

    async fn list_conversations(&self, ws: i64, page: PageSpec) -> DbResult<Vec<Conversation>> {
        let sql = concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE workspace_id = $1 ORDER BY id LIMIT $2 OFFSET $3"
        );
        let rows: Vec<ConversationRow> = sqlx::query_as(sql)
            .bind(ws)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&mut **read_conn(&self.pool, self.schema_lsn).await?)
            .await?;
        Ok(rows.into_iter().map(conversation).collect())
    }

    async fn update_conversation(
        &self,
        id: i64,
        patch: &ConversationPatch,
    ) -> DbResult<Option<Conversation>> {
        let sql = concat!(
            "UPDATE conversations SET topic = coalesce($1, topic), \
             participants = coalesce($2::jsonb, participants), metadata = coalesce($3::jsonb, metadata) \
             WHERE id = $4 RETURNING ",
            conversation_columns!()
        );
        let participants = patch
            .participants
            .as_ref()
            .map(|p| serde_json::to_string(p).unwrap_or_else(|_| "[]".into()));
        let row: Option<ConversationRow> = sqlx::query_as(sql)
            .bind(&patch.topic)
            .bind(participants)
            .bind(patch.metadata.as_ref().map(ToString::to_string))
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await?;
        Ok(row.map(conversation))
    }

    async fn delete_conversation(&self, id: i64) -> DbResult<Option<i64>> {
        sqlx::query_scalar("DELETE FROM conversations WHERE id = $1 RETURNING workspace_id")
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await
    }

    async fn conversation_owner(&self, id: i64) -> DbResult<Option<(i64, i64)>> {
        sqlx::query_as(
            "SELECT c.workspace_id, w.owner_id FROM conversations c \
             JOIN workspaces w ON w.id = c.workspace_id WHERE c.id = $1",
        )
        .bind(id)
        .fetch_optional(&mut **conn(&self.pool).await?)
        .await
    }

    async fn create_message(&self, conv: i64, new: &NewMessage, now: i64) -> DbResult<Message> {
        let sql = concat!(
            "INSERT INTO messages (conversation_id, sender_id, content, metadata, sent_at) \
             VALUES ($1, $2, $3, $4::jsonb, ",
            at!("5"),
            ") RETURNING ",
            message_columns!()
        );
        let row: MessageRow = sqlx::query_as(sql)
            .bind(conv)
            .bind(new.sender_id)
            .bind(&new.content)
            .bind(new.metadata.to_string())
            .bind(now)
            .fetch_one(&mut **conn(&self.pool).await?)
            .await?;
        Ok(message(row))
    }

    async fn message(&self, id: i64) -> DbResult<Option<Message>> {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE id = $1"
        );
        let row: Option<MessageRow> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut **read_conn(&self.pool, self.schema_lsn).await?)
            .await?;
        Ok(row.map(message))
    }

    async fn messages_after(
        &self,
        conv: i64,
        after: Option<Cursor>,
        limit: i64,
    ) -> DbResult<Vec<Message>> {
        let rows: Vec<MessageRow> = match after {
            None => {
                let sql = concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE conversation_id = $1 ORDER BY sent_at, id LIMIT $2"
                );
                sqlx::query_as(sql)
                    .bind(conv)
                    .bind(limit)
                    .fetch_all(&mut **read_conn(&self.pool, self.schema_lsn).await?)
                    .await?
            }
            Some(c) => {
                let sql = concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE conversation_id = $1 AND (sent_at, id) > (",
                    at!("2"),
                    ", $3) ORDER BY sent_at, id LIMIT $4"
                );
                sqlx::query_as(sql)
                    .bind(conv)
                    .bind(c.sent_at)
                    .bind(c.id)
                    .bind(limit)
                    .fetch_all(&mut **read_conn(&self.pool, self.schema_lsn).await?)
                    .await?
            }
        };
        Ok(rows.into_iter().map(message).collect())
    }

    async fn delete_message(&self, id: i64) -> DbResult<Option<i64>> {
        sqlx::query_scalar("DELETE FROM messages WHERE id = $1 RETURNING conversation_id")
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await
    }

    async fn recent_contents(&self, conv: i64, limit: i64) -> DbResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT content FROM messages WHERE conversation_id = $1 ORDER BY sent_at DESC, id DESC LIMIT $2",
        )
        .bind(conv)
        .bind(limit)
        .fetch_all(&mut **conn(&self.pool).await?)
        .await
    }

    async fn record_summary(
        &self,
        message: i64,
        conv: i64,
        summary: &serde_json::Value,
        now: i64,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO message_summaries (message_id, conversation_id, summary, updated_at) \
             VALUES ($1, $2, $3::jsonb, $4) \
             ON CONFLICT (message_id) DO UPDATE SET summary = excluded.summary, \
             runs = message_summaries.runs + 1, updated_at = excluded.updated_at",
        )
        .bind(message)
        .bind(conv)
        .bind(summary.to_string())
        .bind(now)
        .execute(&mut **conn(&self.pool).await?)
        .await?;
        Ok(())
    }
}
