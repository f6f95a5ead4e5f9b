-- An idempotency key is scoped to its sender and its thread: the same key in
-- another thread is another message. The old index (sender, key) is stricter, so
-- every stored row already satisfies the new one.
DROP INDEX messages_client_msg_id;
CREATE UNIQUE INDEX messages_client_msg_id ON messages (sender_id, thread_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
