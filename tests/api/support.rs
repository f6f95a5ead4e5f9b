//! Boots the real server on 127.0.0.1:0 over a fresh SQLite database in a temp
//! directory, and talks to it over real HTTP. Logs stay silent unless `TEST_LOG=1`.

use std::path::PathBuf;
use std::sync::Once;

use confab::app::App;
use confab::config::{Config, Secret};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// The signing key every test server uses, so tests can forge expired tokens.
pub(crate) const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

static LOGS: Once = Once::new();

fn init_logs() {
    LOGS.call_once(|| {
        if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
            tracing_subscriber::fmt().with_env_filter("info,sqlx=warn").with_test_writer().init();
        }
    });
}

pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) data_dir: PathBuf,
    /// Where `/metrics` is served when the test set `metrics_listen`.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

/// A registered, signed-in user.
#[derive(Debug, Clone)]
pub(crate) struct TestUser {
    pub(crate) id: i64,
    pub(crate) token: String,
    pub(crate) refresh: String,
}

impl TestApp {
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server with the demo marketplace loaded.
    pub(crate) async fn spawn_demo() -> Self {
        Self::start(|_| {}, true).await
    }

    pub(crate) async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        Self::start(configure, false).await
    }

    async fn start(configure: impl FnOnce(&mut Config), demo: bool) -> Self {
        init_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new(dir.path().join("data"));
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.jwt_secret = Some(Secret::new(JWT_SECRET));
        // Tests sign many users in from one address; the throttle's own tests lower it again.
        config.limits.sign_in.attempts_per_address_per_minute = 100_000;
        configure(&mut config);
        let data_dir = config.data_dir.clone();
        let app = App::build(config).await.expect("server builds");
        if demo {
            confab::demo::load(app.chat()).await.expect("demo loads");
        }
        let addr = app.local_addr().expect("bound address");
        let metrics_addr = app.metrics_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
            data_dir,
            metrics_addr,
            shutdown: Some(tx),
            server: Some(server),
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with an optional bearer token and raw body; returns the status
    /// and the body as JSON (`Value::Null` when it is not JSON).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().await.expect("request is answered");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(Method::GET, path, Some(token), None).await
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(Method::POST, path, Some(token), Some(body.to_string().into_bytes())).await
    }

    pub(crate) async fn post_anon(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(Method::POST, path, None, Some(body.to_string().into_bytes())).await
    }

    pub(crate) async fn post_raw(&self, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
        self.send(Method::POST, path, Some(token), Some(body.to_vec())).await
    }

    /// Registers `username` with `role` and signs in.
    pub(crate) async fn signup(&self, username: &str, role: &str) -> TestUser {
        let full_name = format!("{} {}", capitalize(username), if role == "client" { "Client" } else { "Freelancer" });
        let (status, body) = self
            .post_anon(
                "/api/auth/register/",
                json!({"username": username, "password": "testpass123", "full_name": full_name, "role": role}),
            )
            .await;
        assert_eq!(status, 201, "register {username}: {body}");
        self.login(username).await
    }

    pub(crate) async fn login(&self, username: &str) -> TestUser {
        let (status, body) =
            self.post_anon("/api/auth/token/", json!({"username": username, "password": "testpass123"})).await;
        assert_eq!(status, 200, "sign in {username}: {body}");
        TestUser {
            id: body["user"]["id"].as_i64().expect("user id"),
            token: body["access"].as_str().expect("access").to_owned(),
            refresh: body["refresh"].as_str().expect("refresh").to_owned(),
        }
    }

    /// Hire Me as `client` for `freelancer`; returns the thread id.
    pub(crate) async fn hire(&self, client: &TestUser, freelancer: &TestUser) -> String {
        let (status, body) =
            self.post("/api/chat/hire-freelancer/", &client.token, json!({"freelancer_id": freelancer.id})).await;
        assert!(status == 200 || status == 201, "hire: {status} {body}");
        body["thread"]["id"].as_str().expect("thread id").to_owned()
    }

    /// Sends `text` over REST into `thread`; returns the stored message.
    pub(crate) async fn say(&self, user: &TestUser, thread: &str, text: &str) -> Value {
        let (status, body) =
            self.post(&format!("/api/chat/threads/{thread}/messages/"), &user.token, json!({"text": text})).await;
        assert_eq!(status, 201, "send: {body}");
        body
    }

    /// The seqs of every message in `thread`, oldest first.
    pub(crate) async fn seqs(&self, user: &TestUser, thread: &str) -> Vec<i64> {
        let (status, body) = self.get(&format!("/api/chat/threads/{thread}/messages/?limit=200"), &user.token).await;
        assert_eq!(status, 200, "{body}");
        body["results"].as_array().expect("results").iter().map(|m| m["seq"].as_i64().expect("seq")).collect()
    }
}

impl TestApp {
    /// A client of a deployment that this test did not start (one behind a load
    /// balancer): the same helpers, nothing to stop.
    pub(crate) fn front(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
            data_dir: PathBuf::new(),
            metrics_addr: None,
            shutdown: None,
            server: None,
            _dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Forgets the server (a `front` owns none).
    pub(crate) fn detach(&mut self) {
        self.shutdown = None;
        self.server = None;
    }

    /// Stops the server as SIGTERM would and waits until it has finished.
    pub(crate) async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let finished = tokio::time::timeout(WAIT, server).await.expect("the server stops in time");
            finished.expect("the server task").expect("the server exits cleanly");
        }
    }

    /// Opens a WebSocket as `user` with `?token=` on `/ws/chat/`.
    pub(crate) async fn ws(&self, user: &TestUser) -> WsClient {
        WsClient::connect(&self.ws_url(&format!("/ws/chat/?token={}", user.token))).await
    }

    pub(crate) fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.base.replacen("http://", "ws://", 1))
    }
}

/// How long any single wait in a test may take before the test fails.
pub(crate) const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client whose every wait has a timeout.
pub(crate) struct WsClient {
    pub(crate) socket: Socket,
}

impl WsClient {
    pub(crate) async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        Self { socket }
    }

    pub(crate) async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        use futures::SinkExt;
        self.socket.send(WsFrame::text(text)).await.expect("frame sent");
    }

    /// The next JSON event (pings and pongs skipped); panics on close or timeout.
    pub(crate) async fn next(&mut self) -> Value {
        loop {
            match self.next_frame().await {
                WsFrame::Text(text) => return serde_json::from_str(text.as_str()).expect("events are JSON"),
                WsFrame::Ping(_) | WsFrame::Pong(_) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    async fn next_frame(&mut self) -> WsFrame {
        use futures::StreamExt;
        tokio::time::timeout(WAIT, self.socket.next())
            .await
            .expect("an event in time")
            .expect("the socket is open")
            .expect("a readable frame")
    }

    /// Reads until the server closes; returns the close code and the events before it.
    pub(crate) async fn until_close(&mut self) -> (u16, Vec<Value>) {
        use futures::StreamExt;
        let mut events = Vec::new();
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next()).await.expect("a close in time");
            match frame {
                Some(Ok(WsFrame::Text(text))) => events.push(serde_json::from_str(text.as_str()).expect("JSON")),
                Some(Ok(WsFrame::Close(Some(close)))) => return (u16::from(close.code), events),
                Some(Ok(WsFrame::Close(None))) | None => return (1005, events),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before close: {e}"),
            }
        }
    }

    /// Sends `ping` and asserts that `pong` is the very next event: nothing else was
    /// queued for this connection before it.
    pub(crate) async fn assert_nothing_pending(&mut self) {
        self.send(serde_json::json!({"type": "ping"})).await;
        assert_eq!(self.next().await, serde_json::json!({"type": "pong"}));
    }
}

pub(crate) use tokio_tungstenite::tungstenite::Message as WsFrame;

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The value of an unlabelled metric in Prometheus text.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

impl TestApp {
    /// One metric of this node, read from `/metrics`.
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = self.client.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        metric(&text, name)
    }
}

/// Asserts an error answer: the status and the contract's error code, with a detail.
#[track_caller]
pub(crate) fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "status of {}", answer.1);
    assert_eq!(answer.1["error"], code, "error code of {}", answer.1);
    assert!(answer.1["detail"].as_str().is_some_and(|d| !d.is_empty()), "a detail in {}", answer.1);
}
