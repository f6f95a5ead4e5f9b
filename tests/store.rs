//! The store conformance suite (`confab::store::conformance`) on every backend,
//! each test on a fresh database: a temporary SQLite file, or a new schema in the
//! PostgreSQL server at `CONFAB_TEST_DATABASE_URL` (default: the local `test`
//! database), dropped afterwards. PostgreSQL must be running: these tests fail, not
//! skip, without it (`.ci/run` starts it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::str::FromStr;
use std::sync::Arc;

use confab::store::{PostgresStore, SqliteStore, Store};
use sqlx::postgres::PgConnectOptions;
use tempfile::TempDir;

async fn sqlite() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::connect(&url).await.expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    (Arc::new(store), dir)
}

fn postgres_url() -> String {
    std::env::var("CONFAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of its own, dropped (with everything in it) when the test ends.
struct Schema {
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime that could still be polled: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&postgres_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&pool).await;
                }
            });
        })
        .join();
    }
}

async fn postgres() -> (Arc<dyn Store>, Schema) {
    let url = postgres_url();
    let admin =
        sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| panic!("PostgreSQL at {url} must be running: {e}"));
    let name = format!("confab_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&admin).await.expect("create schema");
    let options = PgConnectOptions::from_str(&url).unwrap().options([("search_path", name.as_str())]);
    let store = PostgresStore::connect_with(options).await.expect("connect");
    store.migrate().await.expect("migrate postgres");
    (Arc::new(store), Schema { name })
}

mod sqlite {
    confab::store_conformance_tests!(super::sqlite());
}

mod postgres {
    confab::store_conformance_tests!(super::postgres());
}
