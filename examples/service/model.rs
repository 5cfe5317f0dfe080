//! The domain: users, workspaces, conversations, messages; request bodies and their
//! checks. Times are Unix milliseconds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub created_at: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workspace {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub owner_id: i64,
    pub metadata: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A workspace in a list: only the columns a list shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceItem {
    pub id: i64,
    pub name: String,
    pub owner_id: i64,
    pub updated_at: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub owner_id: i64,
    #[serde(default = "empty_object")]
    pub metadata: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<Value>,
}

/// Conversation and message counts and the last message time of one workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceSummary {
    pub id: i64,
    pub name: String,
    pub conversation_count: i64,
    pub message_count: i64,
    pub last_activity: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conversation {
    pub id: i64,
    pub workspace_id: i64,
    pub topic: String,
    pub participants: Vec<i64>,
    pub metadata: Value,
    pub created_at: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    pub topic: String,
    #[serde(default)]
    pub participants: Vec<i64>,
    #[serde(default = "empty_object")]
    pub metadata: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationPatch {
    pub topic: Option<String>,
    pub participants: Option<Vec<i64>>,
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub id: i64,
    pub conversation_id: i64,
    pub sender_id: i64,
    pub content: String,
    pub metadata: Value,
    pub sent_at: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    pub sender_id: i64,
    pub content: String,
    #[serde(default = "empty_object")]
    pub metadata: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

const MAX_NAME: usize = 200;
const MAX_TEXT: usize = 10_000;
const MAX_METADATA_BYTES: usize = 8 * 1024;
const MAX_PARTICIPANTS: usize = 100;

pub fn check_name(field: &str, value: &str) -> ApiResult<()> {
    let len = value.trim().chars().count();
    if len == 0 || value.chars().count() > MAX_NAME {
        return Err(ApiError::validation(format!(
            "{field} must be 1 to {MAX_NAME} characters, not blank"
        )));
    }
    Ok(())
}

pub fn check_email(value: &str) -> ApiResult<()> {
    let ok = value.len() <= 254
        && value.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !host.contains('@')
        });
    if !ok {
        return Err(ApiError::validation(format!(
            "email {value:?} is not an address"
        )));
    }
    Ok(())
}

pub fn check_text(field: &str, value: &str) -> ApiResult<()> {
    if value.trim().is_empty() || value.chars().count() > MAX_TEXT {
        return Err(ApiError::validation(format!(
            "{field} must be 1 to {MAX_TEXT} characters, not blank"
        )));
    }
    Ok(())
}

pub fn check_description(value: &str) -> ApiResult<()> {
    if value.chars().count() > MAX_TEXT {
        return Err(ApiError::validation(format!(
            "description is over {MAX_TEXT} characters"
        )));
    }
    Ok(())
}

pub fn check_metadata(value: &Value) -> ApiResult<()> {
    if !value.is_object() {
        return Err(ApiError::validation("metadata must be a JSON object"));
    }
    if value.to_string().len() > MAX_METADATA_BYTES {
        return Err(ApiError::validation(format!(
            "metadata is over {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(())
}

pub fn check_participants(ids: &[i64]) -> ApiResult<()> {
    if ids.len() > MAX_PARTICIPANTS {
        return Err(ApiError::validation(format!(
            "at most {MAX_PARTICIPANTS} participants"
        )));
    }
    Ok(())
}

impl NewUser {
    pub fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_email(&self.email)
    }
}

impl UserPatch {
    pub fn check(&self) -> ApiResult<()> {
        if let Some(name) = &self.name {
            check_name("name", name)?;
        }
        if let Some(email) = &self.email {
            check_email(email)?;
        }
        Ok(())
    }
}

impl NewWorkspace {
    pub fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_description(&self.description)?;
        check_metadata(&self.metadata)
    }
}

impl WorkspacePatch {
    pub fn check(&self) -> ApiResult<()> {
        if let Some(name) = &self.name {
            check_name("name", name)?;
        }
        if let Some(d) = &self.description {
            check_description(d)?;
        }
        if let Some(m) = &self.metadata {
            check_metadata(m)?;
        }
        Ok(())
    }
}

impl NewConversation {
    pub fn check(&self) -> ApiResult<()> {
        check_name("topic", &self.topic)?;
        check_participants(&self.participants)?;
        check_metadata(&self.metadata)
    }
}

impl ConversationPatch {
    pub fn check(&self) -> ApiResult<()> {
        if let Some(topic) = &self.topic {
            check_name("topic", topic)?;
        }
        if let Some(p) = &self.participants {
            check_participants(p)?;
        }
        if let Some(m) = &self.metadata {
            check_metadata(m)?;
        }
        Ok(())
    }
}

impl NewMessage {
    pub fn check(&self) -> ApiResult<()> {
        check_text("content", &self.content)?;
        check_metadata(&self.metadata)
    }
}

/// Where a page of messages ends: the last message's time and id. Sent to clients as
/// an opaque hex string, so they pass it back without building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub sent_at: i64,
    pub id: i64,
}

impl Cursor {
    pub fn encode(self) -> String {
        let text = format!("{}:{}", self.sent_at, self.id);
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(raw: &str) -> ApiResult<Self> {
        let bad = || {
            ApiError::bad_request(
                "bad_cursor",
                format!("cursor {raw:?} is not one this service made"),
            )
        };
        if raw.is_empty() || raw.len() > 80 || !raw.len().is_multiple_of(2) {
            return Err(bad());
        }
        let bytes: Vec<u8> = (0..raw.len())
            .step_by(2)
            .map(|i| {
                raw.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (sent_at, id) = text.split_once(':').ok_or_else(bad)?;
        Ok(Self {
            sent_at: sent_at.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// A metadata filter: `metadata={"team":"core"}` matches workspaces whose metadata
/// contains every given key with that value. Keys are checked, values are bound.
#[derive(Debug, Clone)]
pub struct MetadataFilter(pub Map<String, Value>);

impl MetadataFilter {
    pub const MAX_KEYS: usize = 8;

    pub fn parse(raw: &str) -> ApiResult<Self> {
        let bad = |why: &str| {
            ApiError::bad_request(
                "bad_metadata_filter",
                format!("metadata filter {raw:?}: {why}"),
            )
        };
        let value: Value = serde_json::from_str(raw).map_err(|_| bad("not JSON"))?;
        let Value::Object(map) = value else {
            return Err(bad("not a JSON object"));
        };
        if map.is_empty() || map.len() > Self::MAX_KEYS {
            return Err(bad("give 1 to 8 keys"));
        }
        for key in map.keys() {
            let ok = !key.is_empty()
                && key.len() <= 64
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(bad("keys are 1 to 64 letters, digits, '_' or '-'"));
            }
        }
        Ok(Self(map))
    }
}

pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            sent_at: 1_700_000_000_000,
            id: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()).ok(), Some(c));
        for bad in ["", "zz", "abc", "3a", &"41".repeat(50)] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_filters_check_keys() {
        assert!(MetadataFilter::parse(r#"{"team":"core"}"#).is_ok());
        for bad in ["[]", "{}", "nope", r#"{"a.b":1}"#, r#"{"a\"":1}"#] {
            assert!(MetadataFilter::parse(bad).is_err(), "{bad}");
        }
    }
}
