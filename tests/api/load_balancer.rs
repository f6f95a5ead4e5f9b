//! The documented nginx configuration (`deploy/nginx.conf`), run by the real nginx
//! in front of two nodes: REST and WebSocket upgrades pass through it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::cluster::Cluster;
use crate::support::{TestApp, WAIT, WsClient};

struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Runs deploy/nginx.conf with its upstream servers and port replaced by these.
    async fn start(nodes: &[TestApp]) -> Self {
        let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf")).expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let upstreams: String = nodes
            .iter()
            .map(|n| format!("        server {} max_fails=3 fail_timeout=10s;\n", n.base.trim_start_matches("http://")))
            .collect();
        let mut out = String::new();
        let mut replaced = false;
        for line in conf.lines() {
            if line.trim_start().starts_with("server 127.0.0.1:808") {
                if !replaced {
                    out.push_str(&upstreams);
                    replaced = true;
                }
            } else if line.trim() == "listen 127.0.0.1:8080;" {
                out.push_str(&format!("        listen 127.0.0.1:{port};\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        assert!(
            replaced && out.contains(&format!("listen 127.0.0.1:{port};")),
            "the config's upstream and listen lines changed"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, out).expect("write config");
        let nginx = if std::path::Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
        let global = format!("daemon off; pid {}/nginx.pid;", dir.path().display());
        let child = Command::new(nginx)
            .args(["-p", &dir.path().display().to_string(), "-c", &path.display().to_string(), "-g", &global])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs (scripts/services.sh installs it)");
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "nginx did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: the master stops its workers and exits (SIGKILL would orphan them).
        let _ = Command::new("kill").args(["-QUIT", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_documented_nginx_config_balances_rest_and_websockets_over_the_nodes() {
    let cluster = Cluster::start(2).await;
    let nginx = Nginx::start(&cluster.nodes).await;
    // Drive everything through nginx, as a client of the deployment would.
    let mut front = TestApp::front(&format!("http://127.0.0.1:{}", nginx.port));
    let alice = front.signup("alice", "client").await;
    let bob = front.signup("bob", "freelancer").await;
    let thread = front.hire(&alice, &bob).await;
    assert_eq!(front.get("/api/auth/me", &alice.token).await.0, 200, "no trailing slash, no redirect");

    // Round robin spreads these over both nodes.
    let mut devices: Vec<WsClient> = Vec::new();
    for user in [&alice, &bob, &alice, &bob] {
        devices.push(front.ws(user).await);
    }
    // A connection joins its node's hub just after the upgrade: wait for it.
    for node in &cluster.nodes {
        let deadline = tokio::time::Instant::now() + crate::support::WAIT;
        loop {
            let metrics = node.client.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
            if !metrics.contains("confab_ws_connections 0") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "every node got connections through nginx");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for device in &mut devices {
        device.assert_nothing_pending().await;
    }

    devices[0]
        .send(json!({"type": "message", "thread_id": thread, "text": "through nginx", "client_msg_id": "n-1"}))
        .await;
    assert_eq!(devices[0].next().await["type"], "message_ack");
    for device in &mut devices[1..] {
        let event = device.next().await;
        assert_eq!(
            (event["type"].as_str(), event["message"]["text"].as_str()),
            (Some("new_message"), Some("through nginx"))
        );
    }
    front.detach();
}
