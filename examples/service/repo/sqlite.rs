//! The SQLite dialect: JSON kept as text (checked by `json_valid`), queried with
//! `json_extract` and `json_each`.

use async_trait::async_trait;
use cortex_core::pool::DbPool;
use sqlx::{QueryBuilder, Sqlite};

use super::{
    ConversationRow, DbResult, MessageRow, PageSpec, Repo, SummaryRow, UserRow, WorkspaceFilter,
    WorkspaceRow, conn, conversation, embedded_migrator, message, summary, user, workspace,
};
use crate::model::*;

/// The schema, one entry per file of `examples/service/migrations/sqlite/`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "domain",
        include_str!("../migrations/sqlite/0001_domain.sql"),
    ),
    (
        2,
        "summaries",
        include_str!("../migrations/sqlite/0002_summaries.sql"),
    ),
];

pub struct SqliteRepo {
    pool: DbPool<Sqlite>,
}

impl SqliteRepo {
    /// Run the migrations, then serve from `pool`.
    pub async fn new(pool: &DbPool<Sqlite>) -> Result<Self, sqlx::migrate::MigrateError> {
        embedded_migrator(MIGRATIONS).run(pool.inner()).await?;
        Ok(Self { pool: pool.clone() })
    }
}

macro_rules! user_columns {
    () => {
        "id, name, email, created_at"
    };
}
macro_rules! workspace_columns {
    () => {
        "id, name, description, owner_id, metadata, created_at, updated_at"
    };
}
macro_rules! conversation_columns {
    () => {
        "id, workspace_id, topic, participants, metadata, created_at"
    };
}
macro_rules! message_columns {
    () => {
        "id, conversation_id, sender_id, content, metadata, sent_at"
    };
}

#[async_trait]
impl Repo for SqliteRepo {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1")
            .execute(&mut **conn(&self.pool).await?)
            .await
            .map(drop)
    }

    async fn create_user(&self, new: &NewUser, now: i64) -> DbResult<User> {
        let sql = concat!(
            "INSERT INTO users (name, email, created_at) VALUES (?, ?, ?) RETURNING ",
            user_columns!(),
            ""
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
        // One statement for any number of ids: the list travels as one bound JSON array.
        let list = serde_json::to_string(wanted).unwrap_or_else(|_| "[]".into());
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id IN (SELECT value FROM json_each(?))"
        );
        let rows: Vec<UserRow> = sqlx::query_as(sql)
            .bind(list)
            .fetch_all(&mut **conn(&self.pool).await?)
            .await?;
        Ok(rows.into_iter().map(user).collect())
    }

    async fn list_users(&self, page: PageSpec) -> DbResult<Vec<User>> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY id LIMIT ? OFFSET ?"
        );
        let rows: Vec<UserRow> = sqlx::query_as(sql)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&mut **conn(&self.pool).await?)
            .await?;
        Ok(rows.into_iter().map(user).collect())
    }

    async fn update_user(&self, id: i64, patch: &UserPatch) -> DbResult<Option<User>> {
        let sql = concat!(
            "UPDATE users SET name = coalesce(?, name), email = coalesce(?, email) \
             WHERE id = ? RETURNING ",
            user_columns!(),
            ""
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
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&mut **conn(&self.pool).await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_exists(&self, id: i64) -> DbResult<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?)")
            .bind(id)
            .fetch_one(&mut **conn(&self.pool).await?)
            .await
    }

    async fn active_users(&self, limit: i64) -> DbResult<Vec<i64>> {
        sqlx::query_scalar(
            "SELECT owner_id FROM workspaces GROUP BY owner_id ORDER BY max(updated_at) DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&mut **conn(&self.pool).await?)
        .await
    }

    async fn create_workspace(&self, new: &NewWorkspace, now: i64) -> DbResult<Workspace> {
        let sql = concat!(
            "INSERT INTO workspaces (name, description, owner_id, metadata, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING ",
            workspace_columns!(),
            ""
        );
        let row: WorkspaceRow = sqlx::query_as(sql)
            .bind(&new.name)
            .bind(&new.description)
            .bind(new.owner_id)
            .bind(new.metadata.to_string())
            .bind(now)
            .bind(now)
            .fetch_one(&mut **conn(&self.pool).await?)
            .await?;
        Ok(workspace(row))
    }

    async fn workspace(&self, id: i64) -> DbResult<Option<Workspace>> {
        let sql = concat!(
            "SELECT ",
            workspace_columns!(),
            " FROM workspaces WHERE id = ?"
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
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id, name, owner_id, updated_at FROM workspaces WHERE 1 = 1");
        if let Some(owner) = filter.owner_id {
            q.push(" AND owner_id = ").push_bind(owner);
        }
        if let Some(name) = &filter.name {
            q.push(" AND lower(name) = lower(")
                .push_bind(name.clone())
                .push(")");
        }
        if let Some(MetadataFilter(wanted)) = &filter.metadata {
            // Both sides go through json_extract, so strings, numbers, booleans and
            // nested values compare in one representation. Keys were checked to be
            // plain words; the path and the value are bound, never formatted in.
            for (key, value) in wanted {
                q.push(" AND json_extract(metadata, ")
                    .push_bind(format!("$.\"{key}\""))
                    .push(") = json_extract(")
                    .push_bind(value.to_string())
                    .push(", '$')");
            }
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page.limit);
        q.push(" OFFSET ").push_bind(page.offset);
        let rows: Vec<(i64, String, i64, i64)> = q
            .build_query_as()
            .fetch_all(&mut **conn(&self.pool).await?)
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
            "UPDATE workspaces SET name = coalesce(?, name), description = coalesce(?, description), \
             metadata = coalesce(?, metadata), updated_at = ? WHERE id = ? RETURNING ",
            workspace_columns!(),
            ""
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
        sqlx::query_scalar("DELETE FROM workspaces WHERE id = ? RETURNING owner_id")
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await
    }

    async fn workspace_owner(&self, id: i64) -> DbResult<Option<i64>> {
        sqlx::query_scalar("SELECT owner_id FROM workspaces WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await
    }

    async fn workspace_summary(&self, id: i64) -> DbResult<Option<WorkspaceSummary>> {
        // Messages are counted per conversation first, then a window over the
        // workspace rolls those up without a second pass over messages.
        let row: Option<SummaryRow> = sqlx::query_as(
            "WITH per_conversation AS ( \
                 SELECT c.id, c.workspace_id, count(m.id) AS messages, max(m.sent_at) AS last_at \
                 FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id \
                 WHERE c.workspace_id = ?1 GROUP BY c.id, c.workspace_id) \
             SELECT w.id, w.name, count(pc.id) OVER ws, coalesce(sum(pc.messages) OVER ws, 0), \
                    max(pc.last_at) OVER ws \
             FROM workspaces w LEFT JOIN per_conversation pc ON pc.workspace_id = w.id \
             WHERE w.id = ?1 WINDOW ws AS (PARTITION BY w.id) LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut **conn(&self.pool).await?)
        .await?;
        Ok(row.map(summary))
    }

    async fn user_workspaces(&self, owner: i64) -> DbResult<Vec<WorkspaceSummary>> {
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT w.id, w.name, count(DISTINCT c.id), count(m.id), max(m.sent_at) \
             FROM workspaces w \
             LEFT JOIN conversations c ON c.workspace_id = w.id \
             LEFT JOIN messages m ON m.conversation_id = c.id \
             WHERE w.owner_id = ? GROUP BY w.id, w.name ORDER BY w.id",
        )
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
             VALUES (?, ?, ?, ?, ?) RETURNING ",
            conversation_columns!(),
            ""
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
            " FROM conversations WHERE id = ?"
        );
        let row: Option<ConversationRow> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await?;
        Ok(row.map(conversation))
    }

    async fn list_conversations(&self, ws: i64, page: PageSpec) -> DbResult<Vec<Conversation>> {
        let sql = concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE workspace_id = ? ORDER BY id LIMIT ? OFFSET ?"
        );
        let rows: Vec<ConversationRow> = sqlx::query_as(sql)
            .bind(ws)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&mut **conn(&self.pool).await?)
            .await?;
        Ok(rows.into_iter().map(conversation).collect())
    }

    async fn update_conversation(
        &self,
        id: i64,
        patch: &ConversationPatch,
    ) -> DbResult<Option<Conversation>> {
        let sql = concat!(
            "UPDATE conversations SET topic = coalesce(?, topic), \
             participants = coalesce(?, participants), metadata = coalesce(?, metadata) \
             WHERE id = ? RETURNING ",
            conversation_columns!(),
            ""
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
        sqlx::query_scalar("DELETE FROM conversations WHERE id = ? RETURNING workspace_id")
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await
    }

    async fn conversation_owner(&self, id: i64) -> DbResult<Option<(i64, i64)>> {
        sqlx::query_as(
            "SELECT c.workspace_id, w.owner_id FROM conversations c \
             JOIN workspaces w ON w.id = c.workspace_id WHERE c.id = ?",
        )
        .bind(id)
        .fetch_optional(&mut **conn(&self.pool).await?)
        .await
    }

    async fn create_message(&self, conv: i64, new: &NewMessage, now: i64) -> DbResult<Message> {
        let sql = concat!(
            "INSERT INTO messages (conversation_id, sender_id, content, metadata, sent_at) \
             VALUES (?, ?, ?, ?, ?) RETURNING ",
            message_columns!(),
            ""
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
        let sql = concat!("SELECT ", message_columns!(), " FROM messages WHERE id = ?");
        let row: Option<MessageRow> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await?;
        Ok(row.map(message))
    }

    async fn messages_after(
        &self,
        conv: i64,
        after: Option<Cursor>,
        limit: i64,
    ) -> DbResult<Vec<Message>> {
        let after = after.unwrap_or(Cursor {
            sent_at: i64::MIN,
            id: i64::MIN,
        });
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conversation_id = ? AND (sent_at, id) > (?, ?) \
             ORDER BY sent_at, id LIMIT ?"
        );
        let rows: Vec<MessageRow> = sqlx::query_as(sql)
            .bind(conv)
            .bind(after.sent_at)
            .bind(after.id)
            .bind(limit)
            .fetch_all(&mut **conn(&self.pool).await?)
            .await?;
        Ok(rows.into_iter().map(message).collect())
    }

    async fn delete_message(&self, id: i64) -> DbResult<Option<i64>> {
        sqlx::query_scalar("DELETE FROM messages WHERE id = ? RETURNING conversation_id")
            .bind(id)
            .fetch_optional(&mut **conn(&self.pool).await?)
            .await
    }

    async fn recent_contents(&self, conv: i64, limit: i64) -> DbResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT content FROM messages WHERE conversation_id = ? ORDER BY sent_at DESC, id DESC LIMIT ?",
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
             VALUES (?, ?, ?, ?) \
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
