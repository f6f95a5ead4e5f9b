-- Accounts; freelancers carry their profile on the same row.
CREATE TABLE users (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    username          TEXT    NOT NULL UNIQUE,
    password_hash     TEXT    NOT NULL,
    full_name         TEXT    NOT NULL,
    role              TEXT    NOT NULL CHECK (role IN ('client', 'freelancer')),
    headline          TEXT    NOT NULL DEFAULT '',
    skills            TEXT    NOT NULL DEFAULT '[]',
    hourly_rate_cents INTEGER,
    created_at        INTEGER NOT NULL
);

CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id   INTEGER NOT NULL REFERENCES users (id),
    title       TEXT    NOT NULL,
    description TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  INTEGER NOT NULL
);
CREATE INDEX jobs_client ON jobs (client_id);

-- user_lo < user_hi are the two people of a direct or job thread; the partial
-- unique indexes make find-or-create exactly-once. `activity` orders inboxes: it
-- takes the next value across all threads whenever a thread is created or gets a
-- message, so it never ties the way a timestamp can.
CREATE TABLE threads (
    id               BLOB    PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('direct', 'job', 'group')),
    job_id           INTEGER REFERENCES jobs (id),
    user_lo          INTEGER REFERENCES users (id),
    user_hi          INTEGER REFERENCES users (id),
    last_seq         INTEGER NOT NULL DEFAULT 0,
    activity         INTEGER NOT NULL,
    created_at       INTEGER NOT NULL
);
CREATE INDEX threads_activity ON threads (activity);
CREATE UNIQUE INDEX threads_direct_pair ON threads (user_lo, user_hi) WHERE kind = 'direct';
CREATE UNIQUE INDEX threads_job_pair ON threads (job_id, user_lo, user_hi) WHERE kind = 'job';

CREATE TABLE thread_participants (
    thread_id     BLOB    NOT NULL REFERENCES threads (id),
    user_id       INTEGER NOT NULL REFERENCES users (id),
    last_read_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (thread_id, user_id)
) WITHOUT ROWID;
CREATE INDEX thread_participants_user ON thread_participants (user_id);

-- actor_id: who caused the message (the sender, or the user whose action wrote a
-- system message); a message is never unread for its actor.
CREATE TABLE messages (
    id            BLOB    PRIMARY KEY,
    thread_id     BLOB    NOT NULL REFERENCES threads (id),
    seq           INTEGER NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('user', 'system')),
    sender_id     INTEGER REFERENCES users (id),
    actor_id      INTEGER REFERENCES users (id),
    text          TEXT    NOT NULL,
    metadata      TEXT    NOT NULL DEFAULT '{}',
    client_msg_id TEXT,
    created_at    INTEGER NOT NULL,
    UNIQUE (thread_id, seq)
);
CREATE UNIQUE INDEX messages_client_msg_id ON messages (sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;

CREATE TABLE proposals (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           INTEGER NOT NULL REFERENCES jobs (id),
    freelancer_id    INTEGER NOT NULL REFERENCES users (id),
    cover_letter     TEXT    NOT NULL,
    bid_amount_cents INTEGER NOT NULL,
    thread_id        BLOB    NOT NULL REFERENCES threads (id),
    created_at       INTEGER NOT NULL,
    UNIQUE (job_id, freelancer_id)
);
