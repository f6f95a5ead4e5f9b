//! The store conformance suite (`store/conformance.rs`) on every backend,
//! each test on a fresh database: a temporary SQLite file, or a schema of its own
//! in PostgreSQL (see `common/pg_schema.rs`; `scripts/test.sh` starts the server).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

#[macro_use]
#[path = "store/conformance.rs"]
mod conformance;
#[path = "common/pg_schema.rs"]
mod pg_schema;

use std::sync::Arc;

use confab::store::{PostgresStore, SqliteStore, Store, StoreOptions};

/// Every store under test records webhook events, so the suite covers them too.
const OPTIONS: StoreOptions = StoreOptions { events: true };
use pg_schema::Schema;
use tempfile::TempDir;

async fn sqlite() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::connect(&url).await.expect("open sqlite").with_options(OPTIONS);
    store.migrate().await.expect("migrate sqlite");
    (Arc::new(store), dir)
}

async fn postgres() -> (Arc<dyn Store>, Schema) {
    let schema = Schema::create().await;
    let store = PostgresStore::connect(&schema.url()).await.expect("connect").with_options(OPTIONS);
    store.migrate().await.expect("migrate postgres");
    (Arc::new(store), schema)
}

/// PostgreSQL on a database whose default isolation is REPEATABLE READ: the store
/// sets READ COMMITTED itself, which its savepoint retry needs.
async fn postgres_repeatable_read() -> (Arc<dyn Store>, Schema) {
    let schema = Schema::create_repeatable_read().await;
    let store = PostgresStore::connect(&schema.url()).await.expect("connect").with_options(OPTIONS);
    store.migrate().await.expect("migrate postgres");
    (Arc::new(store), schema)
}

mod sqlite {
    conformance_tests!(super::sqlite());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_sender_is_refused_alone_and_no_row_lacks_its_parent() {
        let (store, dir) = super::sqlite().await;
        crate::conformance::an_unknown_sender_is_refused_alone_in_its_batch(store).await;
        let db = rusqlite::Connection::open(dir.path().join("test.db")).unwrap();
        let orphans: i64 = db.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
        assert_eq!(orphans, 0);
    }
}

mod postgres {
    conformance_tests!(super::postgres());

    /// The messages table has no foreign keys (migration 0005): the batch proves each
    /// message's thread and sender itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_sender_is_refused_alone_and_no_row_lacks_its_parent() {
        let (store, schema) = super::postgres().await;
        crate::conformance::an_unknown_sender_is_refused_alone_in_its_batch(store).await;
        let db = sqlx::PgPool::connect(&schema.url()).await.unwrap();
        let orphans: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM threads t WHERE t.id = m.thread_id) \
             OR (m.sender_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.sender_id)) \
             OR (m.actor_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.actor_id))",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(orphans, 0);
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&db).await.unwrap();
        assert_eq!(stored, 2, "the known senders' messages are stored");
    }
}

mod postgres_repeatable_read {
    conformance_tests!(super::postgres_repeatable_read());
}
