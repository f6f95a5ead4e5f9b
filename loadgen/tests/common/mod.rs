//! The real Confab server for the load generator's tests, on port 0.
#![allow(clippy::unwrap_used, reason = "test support: a failure here is a failed test")]

use confab::config::Config;

/// Starts a server (limits raised for load, then `configure`d); its base URL and
/// the directory that holds its data (the server lives while the test runs).
pub(crate) async fn confab(configure: impl FnOnce(&mut Config)) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.limits.messages_per_second = 100_000;
    config.limits.message_burst = 100_000;
    config.limits.sign_in.attempts_per_address_per_minute = 100_000;
    configure(&mut config);
    let app = confab::app::App::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (base, dir)
}
