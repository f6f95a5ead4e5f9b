//! The `confab` binary itself: its subcommands, start-up errors and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use confab::domain::PageRequest;
use confab::store::{SqliteStore, Store};

const BIN: &str = env!("CARGO_BIN_EXE_confab");

fn confab(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("CONFAB_DATA_DIR", dir)
        .env_remove("DATABASE_URL")
        .env_remove("CONFAB_JWT_SECRET")
        .env("RUST_LOG", "info")
        .output()
        .expect("confab runs")
}

async fn store(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::connect(&format!("sqlite://{}", dir.join("confab.db").display())).await.expect("open")
}

#[tokio::test]
async fn migrate_then_demo_twice_loads_the_demo_marketplace_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = confab(&["migrate"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema is up to date"));

    for expected in ["users=7 jobs=5", "users=0 jobs=0"] {
        let out = confab(&["demo"], dir.path());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(expected), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let store = store(dir.path()).await;
    let page = PageRequest { limit: 200, offset: 0 };
    assert_eq!(store.freelancers(page).await.unwrap().results.len(), 5);
    assert_eq!(store.jobs(page).await.unwrap().results.len(), 5);
    let client = store.user_by_username("testclient").await.unwrap().unwrap();
    assert_eq!(client.role, confab::domain::Role::Client);
}

#[tokio::test]
async fn tokens_writes_working_tokens_for_named_users_to_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    assert!(confab(&["demo"], dir.path()).status.success());
    let out_file = dir.path().join("workflow_test_tokens.json");
    let out_arg = out_file.to_str().unwrap();
    let out = confab(&["tokens", "--users", "testclient,testfreelancer", "--out", out_arg], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777, 0o600);
    let tokens: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(tokens["testfreelancer"]["user"]["username"], "testfreelancer");

    // A server on the same data directory (so the same generated key) accepts them.
    let mut config = confab::config::Config::new(dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let app = confab::app::App::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let me: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/auth/me/"))
        .bearer_auth(tokens["testclient"]["access"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "testclient");

    let unknown = confab(&["tokens", "--users", "nobody", "--out", out_arg], dir.path());
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nobody"));
}

#[test]
fn bad_configuration_fails_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", "mysql://localhost/x"])
        .env("CONFAB_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"));

    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CONFAB_DATA_DIR", dir.path())
        .env("CONFAB_JWT_SECRET", "too-short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32 characters"));
}

#[test]
fn bad_host_integration_settings_fail_at_start_and_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--host-jwt-secret", "short"], "CONFAB_HOST_JWT_SECRET must be at least 32"),
        (&["--server-api-key", "short"], "CONFAB_SERVER_API_KEY must be at least 32"),
        (
            &["--webhook-url", "http://127.0.0.1:9/h", "--webhook-secret", "short"],
            "CONFAB_WEBHOOK_SECRET must be at least 32",
        ),
        (&["--webhook-url", "ftp://x", "--webhook-secret", &"s".repeat(32)], "must be an http:// or https:// URL"),
        (&["--host-jwt-public-key", "/nonexistent.pem"], "reading the host token key /nonexistent.pem"),
    ];
    for (args, expected) in cases {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("CONFAB_DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = Command::new(BIN).args(["serve", "--webhook-url", "http://x"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--webhook-secret"), "a URL needs its secret");
}

/// The documented demo of the host integration runs as written: users and a job over
/// the server API, host tokens, a hire, and every event verified by the example receiver.
#[test]
fn the_host_integration_demo_runs_end_to_end() {
    let out = Command::new("bash")
        .arg("examples/integration/demo.sh")
        .env("CONFAB_BIN", BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for seen in ["1 thread.created", "2 message.created", "4 thread.read", "Offer accepted", "external_id"] {
        assert!(stdout.contains(seen), "{seen:?} missing from\n{stdout}");
    }
}

#[test]
fn an_unreachable_database_or_redis_is_named_without_its_password_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", "postgres://app:s3cret@127.0.0.1:1/chat"])
        .env("CONFAB_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("postgres://app:***@127.0.0.1:1/chat"), "{stderr}");
    assert!(stderr.contains("check that the server is running"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");

    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--redis-url", "redis://:hidden@127.0.0.1:1"])
        .env("CONFAB_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Redis at redis://:***@127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hidden"), "{stderr}");
}

#[test]
fn serve_logs_its_address_answers_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--demo"])
        .env("CONFAB_DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "no address logged in time");
        let line = lines.next().expect("a log line").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let health = std::net::TcpStream::connect(&addr).and_then(|mut s| {
        use std::io::{Read, Write};
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    });
    assert!(health.unwrap().starts_with("HTTP/1.1 200"));

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutdown requested")), "{rest:?}");
}
