use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::json;

use crate::support::{TestApp, assert_error, metric};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    let (status, body) = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!((status, body), (200, json!({"status": "ready", "database": "ok", "bus": "ok"})));
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern_and_status() {
    let app = TestApp::spawn().await;
    let alice = app.signup("alice", "client").await;
    app.get("/api/chat/threads/", &alice.token).await;
    app.get("/api/chat/threads/0192f1e0-0000-7000-8000-000000000000/", &alice.token).await;
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert!(
        text.contains(r#"confab_http_requests_total{method="POST",route="/api/auth/register",status="201"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"confab_http_requests_total{method="GET",route="/api/chat/threads/{id}",status="404"} 1"#));
    assert!(text.contains("confab_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn the_openapi_document_lists_every_rest_route_of_the_contract() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.send(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: BTreeSet<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "/api/auth/register/",
        "/api/auth/token/",
        "/api/auth/token/refresh/",
        "/api/auth/me/",
        "/api/freelancers/",
        "/api/freelancers/{id}/",
        "/api/jobs/",
        "/api/jobs/{id}/",
        "/api/jobs/{id}/proposals/",
        "/api/chat/hire-freelancer/",
        "/api/chat/proposal-chat/",
        "/api/chat/threads/",
        "/api/chat/threads/{id}/",
        "/api/chat/threads/{id}/messages/",
        "/api/chat/threads/{id}/read/",
        "/api/messaging/messages/",
        "/api/messaging/messages/user/{id}/unread/",
        "/api/messaging/unread/",
    ]
    .into_iter()
    .collect();
    assert_eq!(paths, expected);
    assert!(doc["components"]["schemas"]["Message"]["properties"]["client_msg_id"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn every_path_answers_with_and_without_its_trailing_slash_and_never_redirects() {
    let app = TestApp::spawn().await;
    let alice = app.signup("alice", "client").await;
    for path in ["/api/auth/me/", "/api/auth/me", "/api/chat/threads/", "/api/chat/threads", "/healthz/"] {
        let res = app.client.get(app.url(path)).bearer_auth(&alice.token).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_error_shape() {
    let app = TestApp::spawn().await;
    assert_error(&app.send(Method::GET, "/api/nothing/here/", None, None).await, 404, "not_found");
    let wrong_method = app.send(Method::DELETE, "/api/auth/me/", None, None).await;
    assert_eq!(wrong_method.0, 405);
    assert!(wrong_method.1["error"].is_string());
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_payload_too_large() {
    let app = TestApp::spawn_with(|c| c.max_body_bytes = 1024).await;
    let body = json!({"username": "x".repeat(2000), "password": "testpass123", "full_name": "X", "role": "client"});
    let answer = app.post_anon("/api/auth/register/", body).await;
    assert_error(&answer, 413, "payload_too_large");
}

#[tokio::test]
async fn without_a_configured_secret_the_signing_key_is_generated_once_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn_with(|c| c.jwt_secret = None).await;
    let alice = app.signup("alice", "client").await;
    let key = app.data_dir.join("jwt_secret");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&key).unwrap().len() >= 32);
    assert_eq!(app.get("/api/auth/me/", &alice.token).await.0, 200);
}

#[tokio::test]
async fn metrics_show_the_committer_and_the_connection_queues() {
    let app = TestApp::spawn().await;
    let alice = app.signup("alice", "client").await;
    let bob = app.signup("bob", "freelancer").await;
    let thread = app.hire(&alice, &bob).await;
    let (mut a, mut b) = (app.ws(&alice).await, app.ws(&bob).await);
    for n in 0..3 {
        a.send(
            json!({"type": "message", "thread_id": thread, "text": format!("m{n}"), "client_msg_id": format!("k{n}")}),
        )
        .await;
    }
    for _ in 0..3 {
        assert_eq!(b.next().await["type"], "new_message");
    }
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    // Hire Me's find-or-create is not a batch of sends; the three messages are.
    assert_eq!(metric(&text, "confab_commit_batch_messages_sum"), 3.0, "{text}");
    assert!(metric(&text, "confab_commit_batch_messages_count") >= 1.0);
    assert!(metric(&text, "confab_commit_store_seconds_count") >= 1.0);
    assert!(metric(&text, "confab_ws_queue_depth_count") >= 3.0, "each delivery woke a writer with a queue");
    assert_eq!(metric(&text, "confab_ws_connections"), 2.0);
    assert!(text.contains("confab_password_hash_wait_seconds_count"));
}

#[tokio::test]
async fn memory_is_given_back_once_load_ends() {
    let app =
        TestApp::spawn_with(|c| (c.limits.messages_per_second, c.limits.message_burst) = (100_000, 100_000)).await;
    const TRIMS: &str = "confab_memory_trims_total";
    assert_eq!(app.metric(TRIMS).await, 0.0, "an idle node has nothing to give back");
    let alice = app.signup("alice", "client").await;
    let bob = app.signup("bob", "freelancer").await;
    let thread = app.hire(&alice, &bob).await;
    let mut b = app.ws(&bob).await;
    // Load: sends over REST, each delivered to bob's socket.
    for n in 0..300 {
        let path = format!("/api/chat/threads/{thread}/messages/");
        assert_eq!(app.post(&path, &alice.token, json!({"text": format!("m{n}")})).await.0, 201);
        assert_eq!(b.next().await["type"], "new_message");
    }
    // The trimmer looks every 5 s; the first quiet look after the load trims.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        if app.metric(TRIMS).await >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no trim after the load ended");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    // Nothing was lost, and the node goes on.
    let path = format!("/api/chat/threads/{thread}/messages/?limit=200");
    let (status, page) = app.get(&path, &alice.token).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["results"].as_array().map(Vec::len), Some(200), "{page}");
    assert_eq!(
        app.post(&format!("/api/chat/threads/{thread}/messages/"), &alice.token, json!({"text": "after"})).await.0,
        201
    );
    assert_eq!(b.next().await["message"]["text"], "after");
}
