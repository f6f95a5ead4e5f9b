-- Host integration (all of it optional). Users and jobs a marketplace owns carry
-- its ids; NULL for those made on Confab.
ALTER TABLE users ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX users_external_id ON users (external_id) WHERE external_id IS NOT NULL;
ALTER TABLE jobs ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX jobs_external_id ON jobs (external_id) WHERE external_id IS NOT NULL;
-- System messages the host posts are idempotent by their key within the thread.
CREATE UNIQUE INDEX messages_system_key ON messages (thread_id, client_msg_id)
    WHERE sender_id IS NULL AND client_msg_id IS NOT NULL;

-- The webhook outbox: a row per event, written in the transaction of what it
-- describes. `seq` comes from `event_counter`, whose row lock is held to the
-- commit, so seqs have no gaps and commit in order. What the event says is read
-- when it is sent: `thread_seq` is the message's seq (message.created) or the
-- read marker (thread.read), `user_id` the reader.
CREATE TABLE events (
    seq             BIGINT PRIMARY KEY,
    id              UUID    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL CHECK (kind IN ('message.created', 'thread.created', 'thread.read')),
    thread_id       UUID    NOT NULL,
    thread_seq      BIGINT,
    user_id         BIGINT,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    failed_at       BIGINT,
    last_error      TEXT
);
CREATE INDEX events_pending ON events (seq) WHERE delivered_at IS NULL AND failed_at IS NULL;
-- The events waiting for a retry: few, and they hold back the rest of their thread.
CREATE INDEX events_waiting ON events (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX events_created ON events (created_at);
CREATE TABLE event_counter (id BIGINT PRIMARY KEY CHECK (id = 1), last BIGINT NOT NULL);
INSERT INTO event_counter (id, last) VALUES (1, 0);
-- One node delivers at a time: the holder renews its lease while it runs.
CREATE TABLE event_lease (id BIGINT PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, until BIGINT NOT NULL);
INSERT INTO event_lease (id, holder, until) VALUES (1, '', 0);
