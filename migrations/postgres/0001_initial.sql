-- The same schema as the SQLite store's, in PostgreSQL types. Timestamps are
-- milliseconds since the epoch in both, so the two stores agree to the millisecond.
CREATE TABLE users (
    id                BIGSERIAL PRIMARY KEY,
    username          TEXT   NOT NULL UNIQUE,
    password_hash     TEXT   NOT NULL,
    full_name         TEXT   NOT NULL,
    role              TEXT   NOT NULL CHECK (role IN ('client', 'freelancer')),
    headline          TEXT   NOT NULL DEFAULT '',
    skills            TEXT   NOT NULL DEFAULT '[]',
    hourly_rate_cents BIGINT,
    created_at        BIGINT NOT NULL
);

CREATE TABLE jobs (
    id          BIGSERIAL PRIMARY KEY,
    client_id   BIGINT NOT NULL REFERENCES users (id),
    title       TEXT   NOT NULL,
    description TEXT   NOT NULL,
    status      TEXT   NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  BIGINT NOT NULL
);
CREATE INDEX jobs_client ON jobs (client_id);

-- Inbox order: every thread event takes the next value, across all nodes.
CREATE SEQUENCE thread_activity;

CREATE TABLE threads (
    id         UUID   PRIMARY KEY,
    kind       TEXT   NOT NULL CHECK (kind IN ('direct', 'job', 'group')),
    job_id     BIGINT REFERENCES jobs (id),
    user_lo    BIGINT REFERENCES users (id),
    user_hi    BIGINT REFERENCES users (id),
    last_seq   BIGINT NOT NULL DEFAULT 0,
    activity   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX threads_direct_pair ON threads (user_lo, user_hi) WHERE kind = 'direct';
CREATE UNIQUE INDEX threads_job_pair ON threads (job_id, user_lo, user_hi) WHERE kind = 'job';
CREATE INDEX threads_activity ON threads (activity);

CREATE TABLE thread_participants (
    thread_id     UUID   NOT NULL REFERENCES threads (id),
    user_id       BIGINT NOT NULL REFERENCES users (id),
    last_read_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (thread_id, user_id)
);
CREATE INDEX thread_participants_user ON thread_participants (user_id);

CREATE TABLE messages (
    id            UUID   PRIMARY KEY,
    thread_id     UUID   NOT NULL REFERENCES threads (id),
    seq           BIGINT NOT NULL,
    kind          TEXT   NOT NULL CHECK (kind IN ('user', 'system')),
    sender_id     BIGINT REFERENCES users (id),
    actor_id      BIGINT REFERENCES users (id),
    text          TEXT   NOT NULL,
    metadata      TEXT   NOT NULL DEFAULT '{}',
    client_msg_id TEXT,
    created_at    BIGINT NOT NULL,
    UNIQUE (thread_id, seq)
);
CREATE UNIQUE INDEX messages_client_msg_id ON messages (sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;

CREATE TABLE proposals (
    id               BIGSERIAL PRIMARY KEY,
    job_id           BIGINT NOT NULL REFERENCES jobs (id),
    freelancer_id    BIGINT NOT NULL REFERENCES users (id),
    cover_letter     TEXT   NOT NULL,
    bid_amount_cents BIGINT NOT NULL,
    thread_id        UUID   NOT NULL REFERENCES threads (id),
    created_at       BIGINT NOT NULL,
    UNIQUE (job_id, freelancer_id)
);
