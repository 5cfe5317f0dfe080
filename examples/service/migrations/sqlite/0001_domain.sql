-- Users, workspaces, conversations and messages. Times are Unix milliseconds.
CREATE TABLE users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    email      TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE workspaces (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    owner_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX workspaces_owner ON workspaces (owner_id);
CREATE INDEX workspaces_lower_name ON workspaces (lower(name));

CREATE TABLE conversations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    topic        TEXT NOT NULL,
    participants TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(participants)),
    metadata     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at   INTEGER NOT NULL
);
CREATE INDEX conversations_workspace ON conversations (workspace_id);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sender_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content         TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    sent_at         INTEGER NOT NULL
);
-- Keyset pagination walks this index: (conversation, time, id).
CREATE INDEX messages_conversation_time ON messages (conversation_id, sent_at, id);
CREATE INDEX messages_sender ON messages (sender_id);
