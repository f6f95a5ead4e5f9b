//! The browser app as a browser gets it: the shell on every route of the app,
//! assets under a versioned path with long caching and compression, and the
//! security headers.

use crate::support::TestApp;

async fn html(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).header("accept", "text/html").send().await.unwrap()
}

#[tokio::test]
async fn every_route_of_the_app_answers_with_the_shell_and_a_policy_against_inline_script() {
    let app = TestApp::spawn().await;
    for path in [
        "/",
        "/signin",
        "/signup/",
        "/freelancers",
        "/freelancers/2",
        "/jobs/1",
        "/my-jobs",
        "/dashboard/inbox",
        "/dashboard/inbox/0192f1e0-0000-7000-8000-000000000000",
        "/chat-demo",
    ] {
        let res = html(&app, path).await;
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8", "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}: the shell names the current version");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = res.text().await.unwrap();
        assert!(body.contains("<main id=\"main\""), "{path}");
        assert!(!body.contains("{{VERSION}}") && !body.contains("<script>"), "{path}: no inline script");
    }
    // Scripts and probes still get the JSON index at the root.
    let (status, index) = app.send(reqwest::Method::GET, "/", None, None).await;
    assert_eq!((status, index["openapi"].as_str()), (200, Some("/api/openapi.json")));
}

#[tokio::test]
async fn assets_are_versioned_cached_for_a_year_and_compressed() {
    let app = TestApp::spawn().await;
    let shell = html(&app, "/").await.text().await.unwrap();
    let start = shell.find("/assets/").unwrap();
    let script = &shell[start..start + shell[start..].find('"').unwrap()];
    assert!(script.ends_with("/app.css") || script.ends_with("/app.js"), "{script}");
    let version = script.split('/').nth(2).unwrap().to_owned();
    assert_eq!(version.len(), 16);

    let res = app
        .client
        .get(app.url(&format!("/assets/{version}/app.js")))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert!(res.headers()["content-type"].to_str().unwrap().contains("javascript"));

    let plain = app.client.get(app.url(&format!("/assets/{version}/confab-client.js"))).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none(), "no compression unless asked");
    assert!(plain.text().await.unwrap().contains("export class ConfabClient"));

    let stale = app.client.get(app.url("/assets/0000000000000000/app.css")).send().await.unwrap();
    assert_eq!((stale.status().as_u16(), stale.headers()["cache-control"].to_str().unwrap()), (200, "no-cache"));
    let missing = app.client.get(app.url(&format!("/assets/{version}/nope.js"))).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let tests = app.client.get(app.url(&format!("/assets/{version}/tests/client.test.js"))).send().await.unwrap();
    assert_eq!(tests.status(), 404, "the app's own tests are not in the binary");

    let widget = app.client.get(app.url("/widget.js")).send().await.unwrap();
    assert_eq!(widget.headers()["access-control-allow-origin"], "*");
    assert!(widget.text().await.unwrap().contains(&format!("./assets/{version}/widget.js")));
}

async fn handshake(app: &TestApp, user: &crate::support::TestUser, origin: &str) -> Result<(), u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.ws_url(&format!("/ws/chat/?token={}", user.token)).into_client_request().unwrap();
    request.headers_mut().insert("origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn only_the_servers_own_pages_and_allowed_origins_may_open_a_socket_or_call_across_origins() {
    let app = TestApp::spawn_with(|c| c.allowed_origins = vec!["https://market.example".to_owned()]).await;
    let alice = app.signup("alice", "client").await;
    let own = app.base.clone();
    assert_eq!(handshake(&app, &alice, &own).await, Ok(()), "the server's own pages");
    assert_eq!(handshake(&app, &alice, "https://market.example").await, Ok(()), "an allowed origin");
    assert_eq!(handshake(&app, &alice, "https://evil.example").await, Err(403), "any other site");

    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/chat/threads/"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://market.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://market.example");
    assert!(allowed.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}
