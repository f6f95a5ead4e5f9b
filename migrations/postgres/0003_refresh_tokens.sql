-- Refresh tokens are single-use: a refresh spends the token it was given and
-- records the next one of the same family (one sign-in). A spent token presented
-- again means it was copied: every token of its family is spent at once.
-- Rows past `expires_at` (unix milliseconds) are deleted as new ones are written.
CREATE TABLE refresh_tokens (
    id         TEXT    PRIMARY KEY,
    family     TEXT    NOT NULL,
    user_id    BIGINT  NOT NULL REFERENCES users (id),
    expires_at BIGINT  NOT NULL,
    spent      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
