//! Attacks on the HTTP layer, each answered without harm to other clients: slow
//! headers, slow bodies, too many connections, too many sockets from one address,
//! and `/metrics` kept off the public listener.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestApp;

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or 10 s pass); what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_dropped_at_the_header_deadline() {
    let app = TestApp::spawn_with(|c| c.http.header_timeout = Duration::from_millis(500)).await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    slow.write_all(b"X-Slow: 1\r\n").await.unwrap();
    let answer = read_to_close(&mut slow).await;
    assert!(started.elapsed() < Duration::from_secs(3), "dropped near the deadline: {:?}", started.elapsed());
    assert!(!answer.contains("200 OK"), "{answer}");
    // Everyone else is served meanwhile.
    assert_eq!(app.send(reqwest::Method::GET, "/healthz", None, None).await.0, 200);
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_is_answered_503_at_the_request_deadline() {
    let app = TestApp::spawn_with(|c| c.http_request_timeout = Duration::from_millis(500)).await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"POST /api/auth/token/ HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"user")
        .await
        .unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut got)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&got[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""error":"unavailable""#), "{answer}");
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_gets_503_with_the_error_body() {
    let app = TestApp::spawn_with(|c| c.http.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr(&app)).await.unwrap();
    extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#"{"error":"unavailable""#), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
    // A place frees when a connection closes.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut next = TcpStream::connect(addr(&app)).await.unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    assert!(read_to_close(&mut next).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn websockets_count_against_the_connection_cap_while_they_are_open() {
    // Three places: the test client's pooled connection (it signed up) and two sockets.
    let app = TestApp::spawn_with(|c| c.http.max_connections = 3).await;
    let alice = app.signup("alice", "client").await;
    let first = app.ws(&alice).await;
    let second = app.ws(&alice).await;
    let mut extra = TcpStream::connect(addr(&app)).await.unwrap();
    extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(read_to_close(&mut extra).await.starts_with("HTTP/1.1 503"), "the sockets hold their places");
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut next = TcpStream::connect(addr(&app)).await.unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    assert!(read_to_close(&mut next).await.starts_with("HTTP/1.1 200"), "closed sockets give their places back");
}

#[tokio::test]
async fn one_address_gets_a_bounded_number_of_websockets() {
    use tokio_tungstenite::tungstenite::Error;
    let app = TestApp::spawn_with(|c| c.ws.max_connections_per_address = 2).await;
    let alice = app.signup("alice", "client").await;
    let bob = app.signup("bob", "client").await;
    let _a = app.ws(&alice).await;
    let _b = app.ws(&bob).await;
    let url = app.ws_url(&format!("/ws/chat/?token={}", alice.token));
    match tokio_tungstenite::connect_async(url).await {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: serde_json::Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "rate_limited");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    drop(_b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _again = app.ws(&alice).await;
}

#[tokio::test]
async fn with_a_metrics_listener_metrics_are_served_there_and_not_on_the_public_address() {
    let app = TestApp::spawn_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let public = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let private = format!("http://{}/metrics", app.metrics_addr.unwrap());
    let answer = app.client.get(private).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("confab_ws_connections"));
}
