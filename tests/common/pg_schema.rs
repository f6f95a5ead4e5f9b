//! A PostgreSQL schema of a test's own on the server at `CONFAB_TEST_DATABASE_URL`
//! (default: the local `test` database), dropped with everything in it when the test
//! ends. PostgreSQL must be running: tests fail, not skip, without it.

/// The server the tests use.
pub(crate) fn postgres_url() -> String {
    std::env::var("CONFAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub(crate) struct Schema {
    pub(crate) name: String,
    /// The database the schema is in.
    base: String,
}

impl Schema {
    pub(crate) async fn create() -> Self {
        Self::create_in(postgres_url()).await
    }

    /// A schema in the database at `base`.
    pub(crate) async fn create_in(base: String) -> Self {
        let admin =
            sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| panic!("PostgreSQL at {base} must be running: {e}"));
        let name = format!("confab_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&admin).await.expect("create schema");
        Self { name, base }
    }

    /// A schema in a database of its own whose default isolation is REPEATABLE READ,
    /// to show that the store does not depend on the server's default.
    #[allow(dead_code, reason = "used by the store tests only")]
    pub(crate) async fn create_repeatable_read() -> Self {
        let url = postgres_url();
        let admin =
            sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| panic!("PostgreSQL at {url} must be running: {e}"));
        let database = "confab_test_repeatable_read";
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(database)
            .fetch_optional(&admin)
            .await
            .expect("look up the database");
        if exists.is_none() {
            // Two test binaries may race to create it; the loser finds it made.
            let _ = sqlx::query(&format!("CREATE DATABASE {database}")).execute(&admin).await;
        }
        // Tests run this at once; an update that loses the race finds the setting made.
        let _ =
            sqlx::query(&format!("ALTER DATABASE {database} SET default_transaction_isolation TO 'repeatable read'"))
                .execute(&admin)
                .await;
        let (prefix, _) = url.rsplit_once('/').expect("a database URL with a path");
        let schema = Self::create_in(format!("{prefix}/{database}")).await;
        let raw = sqlx::PgPool::connect(&schema.url()).await.expect("connect to the repeatable-read database");
        let level: String = sqlx::query_scalar("SHOW transaction_isolation").fetch_one(&raw).await.expect("show");
        assert_eq!(level, "repeatable read", "the test database's default isolation");
        schema
    }

    /// A database URL whose connections use this schema.
    pub(crate) fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (name, base) = (self.name.clone(), self.base.clone());
        // Drop runs where no runtime can be awaited: use a thread and a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&base).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&pool).await;
                }
            });
        })
        .join();
    }
}
