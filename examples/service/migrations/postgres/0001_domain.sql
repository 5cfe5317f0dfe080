-- Users, workspaces, conversations and messages; messages partitioned by month.
CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workspaces (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    owner_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspaces_owner ON workspaces (owner_id);
CREATE INDEX workspaces_lower_name ON workspaces (lower(name));
-- Containment filters (`metadata @> $1`) use this index.
CREATE INDEX workspaces_metadata ON workspaces USING gin (metadata jsonb_path_ops);

CREATE TABLE conversations (
    id           bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    topic        text NOT NULL,
    participants jsonb NOT NULL DEFAULT '[]',
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_workspace ON conversations (workspace_id);

-- Partitioned by month of sent_at; the primary key must include the partition key.
-- A conversation's deletion removes its messages through the trigger-free foreign key
-- on each partition (declared on the parent, PostgreSQL 12+).
CREATE TABLE messages (
    id              bigserial,
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sender_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content         text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    sent_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, sent_at)
) PARTITION BY RANGE (sent_at);
CREATE INDEX messages_conversation_time ON messages (conversation_id, sent_at, id);
CREATE INDEX messages_sender ON messages (sender_id);
-- Rows outside every monthly partition land here instead of failing the insert.
CREATE TABLE messages_default PARTITION OF messages DEFAULT;

-- Creates the partitions of the month of `day` and of the `ahead` months after it.
-- Names and bounds come from dates, never from user input.
CREATE FUNCTION create_message_partitions(day date, ahead int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    made int := 0;
    start date;
    name text;
BEGIN
    FOR i IN 0..ahead LOOP
        start := date_trunc('month', day)::date + make_interval(months => i);
        name := format('messages_%s', to_char(start, 'YYYY_MM'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
                name, start, (start + interval '1 month')::date);
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END $$;

SELECT create_message_partitions(current_date, 2);

-- Per-user activity, refreshed CONCURRENTLY by a low-priority task (hence the unique
-- index); cache warming reads the most active users from it.
CREATE MATERIALIZED VIEW user_activity AS
SELECT u.id AS user_id,
       count(m.id) AS messages,
       max(m.sent_at) AS last_message_at
FROM users u LEFT JOIN messages m ON m.sender_id = u.id
GROUP BY u.id;
CREATE UNIQUE INDEX user_activity_user ON user_activity (user_id);
