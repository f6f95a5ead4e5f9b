use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::json;

use crate::support::{JWT_SECRET, TestApp, assert_error};

#[tokio::test]
async fn register_answers_201_with_the_public_user_and_never_the_password() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post_anon(
            "/api/auth/register/",
            json!({"username": "alice", "password": "s3cret-pass", "full_name": "Alice Smith", "role": "freelancer"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(body, json!({"user": {"id": 1, "username": "alice", "full_name": "Alice Smith", "role": "freelancer"}}));
}

#[tokio::test]
async fn a_taken_username_is_409_conflict_and_the_first_account_is_untouched() {
    let app = TestApp::spawn().await;
    app.signup("alice", "client").await;
    let again = app
        .post_anon(
            "/api/auth/register/",
            json!({"username": "alice", "password": "other-password", "full_name": "Imposter", "role": "freelancer"}),
        )
        .await;
    assert_error(&again, 409, "conflict");
    let alice = app.login("alice").await;
    let (_, me) = app.get("/api/auth/me/", &alice.token).await;
    assert_eq!(me["full_name"], "Alice Client");
}

#[tokio::test]
async fn registration_refuses_bad_fields_with_validation_failed_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let good = json!({"username": "bob", "password": "testpass123", "full_name": "Bob", "role": "client"});
    let with = |key: &str, value: serde_json::Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let mut without_role = good.clone();
    without_role.as_object_mut().unwrap().remove("role");
    let cases = [
        with("username", json!("has space")),
        with("username", json!("")),
        with("username", json!("x".repeat(151))),
        with("password", json!("short")),
        with("full_name", json!("   ")),
        with("full_name", json!("nul\u{0}byte")),
        with("role", json!("admin")),
        with("role", json!(3)),
        with("hourly_rate", json!(-5)),
        with("unexpected", json!("field")),
        without_role,
    ];
    for body in cases {
        let answer = app.post_anon("/api/auth/register/", body.clone()).await;
        assert_error(&answer, 400, "validation_failed");
    }
    let broken = app.send(Method::POST, "/api/auth/register/", None, Some(b"{\"username\": ".to_vec())).await;
    assert_error(&broken, 400, "invalid_json");
    // None of them created an account.
    let (status, _) = app.post_anon("/api/auth/token/", json!({"username": "bob", "password": "testpass123"})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_freelancer_can_register_with_a_profile() {
    let app = TestApp::spawn().await;
    let body = json!({"username": "fay", "password": "testpass123", "full_name": "Fay", "role": "freelancer",
        "headline": "Rust developer", "skills": ["Rust", "Tokio"], "hourly_rate": 99.5});
    assert_eq!(app.post_anon("/api/auth/register/", body).await.0, 201);
    let fay = app.login("fay").await;
    let (status, profile) = app.get(&format!("/api/freelancers/{}/", fay.id), &fay.token).await;
    assert_eq!(status, 200);
    assert_eq!(
        profile,
        json!({"id": fay.id, "username": "fay", "full_name": "Fay", "role": "freelancer",
            "headline": "Rust developer", "skills": ["Rust", "Tokio"], "hourly_rate": 99.5})
    );
}

#[tokio::test]
async fn signing_in_returns_access_and_refresh_tokens_and_the_user() {
    let app = TestApp::spawn().await;
    app.signup("carol", "client").await;
    let (status, body) =
        app.post_anon("/api/auth/token/", json!({"username": "carol", "password": "testpass123"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"], json!({"id": 1, "username": "carol", "full_name": "Carol Client", "role": "client"}));
    let access = body["access"].as_str().unwrap();
    assert_ne!(access, body["refresh"].as_str().unwrap());
    let (status, me) = app.get("/api/auth/me/", access).await;
    assert_eq!((status, me), (200, body["user"].clone()));
}

#[tokio::test]
async fn a_wrong_password_or_unknown_user_is_401() {
    let app = TestApp::spawn().await;
    app.signup("dave", "client").await;
    let wrong = app.post_anon("/api/auth/token/", json!({"username": "dave", "password": "not-the-password"})).await;
    assert_error(&wrong, 401, "unauthorized");
    let unknown = app.post_anon("/api/auth/token/", json!({"username": "nobody", "password": "testpass123"})).await;
    assert_error(&unknown, 401, "unauthorized");
    assert_eq!(wrong.1["detail"], unknown.1["detail"], "the answer does not tell which was wrong");
}

#[tokio::test]
async fn a_refresh_token_yields_a_new_access_token_but_is_refused_as_one() {
    let app = TestApp::spawn().await;
    let erin = app.signup("erin", "client").await;
    let (status, body) = app.post_anon("/api/auth/token/refresh/", json!({"refresh": erin.refresh})).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["access", "refresh"], "a new pair");
    assert_eq!(app.get("/api/auth/me/", body["access"].as_str().unwrap()).await.0, 200);

    assert_error(&app.get("/api/auth/me/", &erin.refresh).await, 401, "unauthorized");
    let access_as_refresh = app.post_anon("/api/auth/token/refresh/", json!({"refresh": erin.token})).await;
    assert_error(&access_as_refresh, 401, "unauthorized");
}

#[tokio::test]
async fn missing_malformed_forged_and_expired_tokens_are_401() {
    let app = TestApp::spawn().await;
    let frank = app.signup("frank", "client").await;
    assert_error(&app.send(Method::GET, "/api/auth/me/", None, None).await, 401, "unauthorized");
    assert_error(&app.get("/api/auth/me/", "not.a.jwt").await, 401, "unauthorized");

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let sign = |secret: &str, exp: i64| {
        let claims = json!({"token_type": "access", "user_id": frank.id, "sub": frank.id.to_string(),
            "iss": "confab", "aud": "confab", "iat": now - 3600, "exp": exp, "jti": "t"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(app.get("/api/auth/me/", &sign(JWT_SECRET, now + 600)).await.0, 200, "the forging itself is right");
    let forged = sign("some-other-secret-some-other-secret", now + 600);
    assert_error(&app.get("/api/auth/me/", &forged).await, 401, "unauthorized");
    let expired = sign(JWT_SECRET, now - 600);
    let answer = app.get("/api/auth/me/", &expired).await;
    assert_error(&answer, 401, "unauthorized");
    assert!(answer.1["detail"].as_str().unwrap().contains("expired"));
    // Signed with the right secret, but not issued by Confab for Confab.
    for (iss, aud) in [("someone-else", "confab"), ("confab", "another-app")] {
        let claims = json!({"token_type": "access", "user_id": frank.id, "sub": frank.id.to_string(),
            "iss": iss, "aud": aud, "iat": now, "exp": now + 600, "jti": "t"});
        let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        assert_error(&app.get("/api/auth/me/", &token).await, 401, "unauthorized");
    }
}

async fn refresh(app: &TestApp, token: &str) -> (u16, serde_json::Value) {
    app.post_anon("/api/auth/token/refresh/", json!({"refresh": token})).await
}

#[tokio::test]
async fn a_refresh_spends_its_token_and_a_spent_one_signs_the_whole_sign_in_out() {
    let app = TestApp::spawn().await;
    let erin = app.signup("erin", "client").await;
    let other_device = app.login("erin").await; // another sign-in of the same user
    let (status, first) = refresh(&app, &erin.refresh).await;
    assert_eq!(status, 200);
    let r1 = first["refresh"].as_str().unwrap().to_owned();
    let (status, second) = refresh(&app, &r1).await;
    assert_eq!(status, 200, "the new one works once");
    let r2 = second["refresh"].as_str().unwrap().to_owned();

    // The first token again: someone kept a copy. Refused, and the sign-in is revoked.
    let (status, body) = refresh(&app, &erin.refresh).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    assert!(body["detail"].as_str().unwrap().contains("already used"), "{body}");
    assert_error(&refresh(&app, &r2).await, 401, "unauthorized");
    // The other sign-in is untouched.
    assert_eq!(refresh(&app, &other_device.refresh).await.0, 200);
}

#[tokio::test]
async fn two_refreshes_racing_with_one_token_rotate_it_once() {
    let app = TestApp::spawn().await;
    let erin = app.signup("erin", "client").await;
    let answers = futures::future::join_all((0..4).map(|_| refresh(&app, &erin.refresh))).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "{answers:?}");
    // The losers presented a spent token: the winner's new one is revoked too.
    let (_, winner) = answers.iter().find(|(s, _)| *s == 200).unwrap();
    assert_error(&refresh(&app, winner["refresh"].as_str().unwrap()).await, 401, "unauthorized");
}

/// A sign-in through reqwest, keeping the answer's headers.
async fn sign_in_raw(app: &TestApp, username: &str, password: &str, from: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(app.url("/api/auth/token/"))
        .json(&json!({"username": username, "password": password}));
    if let Some(addr) = from {
        req = req.header("x-forwarded-for", addr);
    }
    req.send().await.unwrap()
}

async fn assert_throttled(res: reqwest::Response) -> u64 {
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(retry >= 1, "Retry-After in whole seconds: {retry}");
    retry
}

#[tokio::test]
async fn one_address_gets_its_sign_in_attempts_per_minute_then_429_with_retry_after() {
    let app = TestApp::spawn_with(|c| c.limits.sign_in.attempts_per_address_per_minute = 5).await;
    app.signup("alice", "client").await; // a sign-up and a sign-in: two attempts
    for _ in 0..3 {
        assert_eq!(sign_in_raw(&app, "alice", "wrong-password", None).await.status(), 401);
    }
    let retry = assert_throttled(sign_in_raw(&app, "alice", "testpass123", None).await).await;
    assert!(retry <= 12, "one attempt comes back every 12 s: {retry}");
    // Sign-ups count against the same address.
    let signup = json!({"username": "bob", "password": "testpass123", "full_name": "Bob", "role": "client"});
    assert_error(&app.post_anon("/api/auth/register/", signup).await, 429, "rate_limited");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_one_limited() {
    let app = TestApp::spawn_with(|c| {
        c.limits.sign_in.attempts_per_address_per_minute = 2;
        c.trust_forwarded_for = true;
    })
    .await;
    app.signup("alice", "client").await; // from the proxy's own address: uses its two
    for _ in 0..2 {
        assert_eq!(sign_in_raw(&app, "alice", "wrong-password", Some("spoofed, 203.0.113.7")).await.status(), 401);
    }
    assert_throttled(sign_in_raw(&app, "alice", "wrong-password", Some("203.0.113.7")).await).await;
    // Another client behind the same proxy is not.
    assert_eq!(sign_in_raw(&app, "alice", "testpass123", Some("198.51.100.9")).await.status(), 200);
}

#[tokio::test]
async fn failed_sign_ins_lock_the_account_but_not_the_others() {
    let app = TestApp::spawn_with(|c| c.limits.sign_in.failures_per_account = 3).await;
    app.signup("alice", "client").await;
    app.signup("bob", "client").await;
    for _ in 0..3 {
        assert_eq!(sign_in_raw(&app, "alice", "wrong-password", None).await.status(), 401);
    }
    // Locked: even the right password waits, and is not checked.
    let retry = assert_throttled(sign_in_raw(&app, "alice", "testpass123", None).await).await;
    assert!(retry > 800, "locked for the rest of the 15-minute window: {retry}");
    assert_eq!(sign_in_raw(&app, "bob", "testpass123", None).await.status(), 200);
    // An unknown username is counted like a real one: no tell which exist.
    for _ in 0..3 {
        assert_eq!(sign_in_raw(&app, "nobody", "wrong-password", None).await.status(), 401);
    }
    assert_throttled(sign_in_raw(&app, "nobody", "wrong-password", None).await).await;
}

#[tokio::test]
async fn failures_past_the_third_delay_the_next_try() {
    let app = TestApp::spawn().await;
    app.signup("alice", "client").await;
    for _ in 0..3 {
        assert_eq!(sign_in_raw(&app, "alice", "wrong-password", None).await.status(), 401);
    }
    assert_throttled(sign_in_raw(&app, "alice", "testpass123", None).await).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(sign_in_raw(&app, "alice", "testpass123", None).await.status(), 200, "after the delay");
    // The success cleared the failures.
    assert_eq!(sign_in_raw(&app, "alice", "wrong-password", None).await.status(), 401);
    assert_eq!(sign_in_raw(&app, "alice", "testpass123", None).await.status(), 200);
}
