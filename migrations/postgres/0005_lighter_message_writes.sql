-- The message batch writes thousands of rows a second, and two of its costs bought
-- nothing (`docs/benchmarks.md`, 2026-12-07, two nodes):
--
-- The foreign keys of messages ran three lookups a row (thread, sender, actor),
-- half of the batch insert's time. Every write of a message proves its parents
-- itself: it takes the next seq of its thread by updating that thread's row in the
-- same transaction (no row, no seq, no message), and the batch reads its senders
-- from users first. Neither threads nor users are ever deleted.
ALTER TABLE messages
    DROP CONSTRAINT messages_thread_id_fkey,
    DROP CONSTRAINT messages_sender_id_fkey,
    DROP CONSTRAINT messages_actor_id_fkey;

-- Every batch moves each of its threads' activity; an index on it made each such
-- update write a new entry in every index of threads (no heap-only update), and the
-- index served nothing: an inbox is read from the viewer's participant rows.
-- Room left in each page keeps the new row version on its page.
DROP INDEX threads_activity;
ALTER TABLE threads SET (fillfactor = 50);
