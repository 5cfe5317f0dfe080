-- The effect of a summary task: one row per posted message. Durable tasks run at least
-- once, so the write is an upsert keyed by the message: a run repeated after a crash
-- changes the row's summary to the same value and counts itself in `runs`, nothing
-- else. No foreign key: a message deleted before its summary ran must not make the
-- task fail forever.
CREATE TABLE message_summaries (
    message_id      BIGINT PRIMARY KEY,
    conversation_id BIGINT NOT NULL,
    summary         JSONB NOT NULL,
    runs            INTEGER NOT NULL DEFAULT 1 CHECK (runs > 0),
    updated_at      BIGINT NOT NULL
);
