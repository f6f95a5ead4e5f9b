//! A PostgreSQL schema of a test's own on the server at `CONFAB_TEST_DATABASE_URL`
//! (default: the local `test` database), dropped with everything in it when the test
//! ends. PostgreSQL must be running: tests fail, not skip, without it.

/// The server the tests use.
pub(crate) fn postgres_url() -> String {
    std::env::var("CONFAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub(crate) struct Schema {
    pub(crate) name: String,
}

impl Schema {
    pub(crate) async fn create() -> Self {
        let url = postgres_url();
        let admin =
            sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| panic!("PostgreSQL at {url} must be running: {e}"));
        let name = format!("confab_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&admin).await.expect("create schema");
        Self { name }
    }

    /// A database URL whose connections use this schema.
    pub(crate) fn url(&self) -> String {
        let base = postgres_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-csearch_path%3D{}", self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs where no runtime can be awaited: use a thread and a runtime of its own.
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
