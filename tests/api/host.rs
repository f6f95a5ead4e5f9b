//! Host integration end to end: a marketplace backend signs tokens for its own
//! users, calls the server API, and receives signed webhooks (API.md, "Plugging
//! into a marketplace that has its own users"). On SQLite and on PostgreSQL.

use std::time::Duration;

use confab::config::{Config, Secret, WebhookConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::pg_schema::Schema;
use crate::receiver::{self, Receiver, WEBHOOK_SECRET};
use crate::support::{TestApp, TestUser, WsClient, assert_error};

const HOST_SECRET: &str = "host-secret-host-secret-host-secret!!";
const SERVER_KEY: &str = "server-key-server-key-server-key-000";
const ISSUER: &str = "https://market.example";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str, name: &str, role: &str) -> Value {
    json!({"sub": sub, "name": name, "role": role, "exp": now() + 600, "iss": ISSUER})
}

fn host_token(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(HOST_SECRET.as_bytes()))
        .expect("signed")
}

/// Host tokens and the server API on; `webhook` when given.
fn integrated(c: &mut Config, webhook: Option<&Receiver>) {
    c.host.jwt_secret = Some(Secret::new(HOST_SECRET));
    c.host.jwt_issuer = Some(ISSUER.to_owned());
    c.host.server_api_key = Some(Secret::new(SERVER_KEY));
    if let Some(r) = webhook {
        c.host.webhook = Some(WebhookConfig {
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_millis(400),
            ..WebhookConfig::new(r.url.clone(), Secret::new(WEBHOOK_SECRET))
        });
    }
}

async fn spawn(webhook: Option<&Receiver>, postgres: Option<&Schema>) -> TestApp {
    let db = postgres.map(Schema::url);
    TestApp::spawn_with(move |c| {
        integrated(c, webhook);
        if let Some(db) = db {
            c.database_url = Secret::new(db);
        }
    })
    .await
}

/// A host user as the tests hold them: their id here, and the host's token.
async fn host_user(app: &TestApp, sub: &str, name: &str, role: &str) -> TestUser {
    let token = host_token(&claims(sub, name, role));
    let (status, me) = app.get("/api/auth/me/", &token).await;
    assert_eq!(status, 200, "{me}");
    TestUser { id: me["id"].as_i64().expect("id"), token, refresh: String::new() }
}

async fn a_host_token_provisions_a_user_who_hires_chats_and_syncs(postgres: Option<&Schema>) {
    let app = spawn(None, postgres).await;
    let mut fran_claims = claims("f-77", "Fran Host", "freelancer");
    fran_claims["username"] = json!("fran");
    let fran_token = host_token(&fran_claims);
    let (status, me) = app.get("/api/auth/me/", &fran_token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!((me["username"].clone(), me["external_id"].clone()), (json!("fran"), json!("f-77")));
    let fran = TestUser { id: me["id"].as_i64().unwrap(), token: fran_token, refresh: String::new() };
    let carl = host_user(&app, "c-1", "Carl Host", "client").await;
    // The same sub again is the same user; a new name or role updates them.
    let (_, again) = app.get("/api/auth/me/", &host_token(&claims("c-1", "Carl Renamed", "client"))).await;
    assert_eq!((again["id"].as_i64(), again["full_name"].clone()), (Some(carl.id), json!("Carl Renamed")));
    let local = app.signup("local", "client").await;
    let (_, local_me) = app.get("/api/auth/me/", &local.token).await;
    assert!(local_me.get("external_id").is_none(), "users who signed up here have none: {local_me}");

    let thread = app.hire(&carl, &fran).await;
    let mut fran_ws = app.ws(&fran).await;
    let mut carl_ws = app.ws(&carl).await;
    carl_ws.send(json!({"type": "message", "thread_id": thread, "text": "Hello Fran", "client_msg_id": "h-1"})).await;
    assert_eq!(carl_ws.next().await["type"], "message_ack");
    let got = fran_ws.next().await;
    assert_eq!((got["type"].clone(), got["message"]["text"].clone()), (json!("new_message"), json!("Hello Fran")));
    // Each token names its user as the host sees them now: Carl's says "Carl Host".
    assert_eq!(got["message"]["sender"]["full_name"], "Carl Host");
    // A second device syncs everything from the start.
    let mut fran2 = app.ws(&fran).await;
    fran2.send(json!({"type": "sync", "threads": {thread.clone(): 0}})).await;
    let seqs: Vec<Value> =
        [fran2.next().await, fran2.next().await].iter().map(|e| e["message"]["seq"].clone()).collect();
    assert_eq!(seqs, vec![json!(1), json!(2)]);
    assert_eq!(fran2.next().await["type"], "synced");
    // And over REST, with the auth frame too.
    assert_eq!(app.seqs(&fran, &thread).await, vec![1, 2]);
    let mut framed = WsClient::connect(&app.ws_url("/ws/chat/")).await;
    framed.send(json!({"type": "auth", "token": fran.token})).await;
    framed.assert_nothing_pending().await;
    app.say(&carl, &thread, "seen by the framed socket").await;
    assert_eq!(framed.next().await["message"]["text"], "seen by the framed socket");
    // A fresh host token renews a socket opened with one.
    let mut renewed = fran_claims.clone();
    renewed["exp"] = json!(now() + 1200);
    framed.send(json!({"type": "auth", "token": host_token(&renewed)})).await;
    assert_eq!(framed.next().await["type"], "authed");
}

#[tokio::test]
async fn a_host_token_provisions_a_user_who_hires_chats_and_syncs_on_sqlite() {
    a_host_token_provisions_a_user_who_hires_chats_and_syncs(None).await;
}

#[tokio::test]
async fn a_host_token_provisions_a_user_who_hires_chats_and_syncs_on_postgres() {
    a_host_token_provisions_a_user_who_hires_chats_and_syncs(Some(&Schema::create().await)).await;
}

async fn refused_everywhere(app: &TestApp, token: &str, why: &str) {
    let answer = app.get("/api/auth/me/", token).await;
    assert_eq!((answer.0, answer.1["error"].clone()), (401, json!("unauthorized")), "{why}: {}", answer.1);
    match tokio_tungstenite::connect_async(app.ws_url(&format!("/ws/chat/?token={token}"))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401, "{why}"),
        other => panic!("{why}: expected 401 before the upgrade, got {other:?}"),
    }
}

async fn tampered_expired_wrong_issuer_wrong_algorithm_and_bad_claims_host_tokens_are_refused(
    postgres: Option<&Schema>,
) {
    let app = spawn(None, postgres).await;
    let good = claims("u-1", "Una", "client");
    let token = host_token(&good);
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut forged_claims = good.clone();
    forged_claims["sub"] = json!("admin");
    let forged_body = host_token(&forged_claims).split('.').nth(1).unwrap().to_owned();
    refused_everywhere(&app, &format!("{head}.{forged_body}.{signature}"), "tampered").await;
    let other_key = EncodingKey::from_secret(b"not-the-host-secret-not-the-host-secret");
    refused_everywhere(&app, &jsonwebtoken::encode(&Header::new(Algorithm::HS256), &good, &other_key).unwrap(), "key")
        .await;
    let hs512 = EncodingKey::from_secret(HOST_SECRET.as_bytes());
    refused_everywhere(&app, &jsonwebtoken::encode(&Header::new(Algorithm::HS512), &good, &hs512).unwrap(), "alg")
        .await;
    let unsigned =
        format!("{}.{}.", base64_url(br#"{"alg":"none","typ":"JWT"}"#), base64_url(good.to_string().as_bytes()));
    refused_everywhere(&app, &unsigned, "alg none").await;
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 600);
    refused_everywhere(&app, &host_token(&expired), "expired").await;
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    refused_everywhere(&app, &host_token(&no_exp), "no exp").await;
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://elsewhere.example");
    refused_everywhere(&app, &host_token(&wrong_iss), "issuer").await;
    let mut no_iss = good.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    refused_everywhere(&app, &host_token(&no_iss), "no issuer").await;
    for (field, value) in
        [("sub", json!("")), ("sub", json!("x".repeat(129))), ("role", json!("admin")), ("name", json!(""))]
    {
        let mut bad = good.clone();
        bad[field] = value;
        refused_everywhere(&app, &host_token(&bad), field).await;
    }
    // None of those made a user; the good token still works.
    let (status, _) = app.get("/api/auth/me/", &token).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tampered_expired_wrong_issuer_wrong_algorithm_and_bad_claims_host_tokens_are_refused_on_sqlite() {
    tampered_expired_wrong_issuer_wrong_algorithm_and_bad_claims_host_tokens_are_refused(None).await;
}

#[tokio::test]
async fn tampered_expired_wrong_issuer_wrong_algorithm_and_bad_claims_host_tokens_are_refused_on_postgres() {
    tampered_expired_wrong_issuer_wrong_algorithm_and_bad_claims_host_tokens_are_refused(Some(&Schema::create().await))
        .await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A key pair made with openssl: (private PEM, public PEM file).
fn key_pair(dir: &std::path::Path, algorithm: &[&str]) -> (Vec<u8>, std::path::PathBuf) {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let made = std::process::Command::new("openssl")
        .args(["genpkey"])
        .args(algorithm)
        .arg("-out")
        .arg(&private)
        .status()
        .expect("openssl runs");
    assert!(made.success());
    let mut out = std::process::Command::new("openssl");
    out.arg("pkey").arg("-in").arg(&private).args(["-pubout", "-out"]).arg(&public);
    assert!(out.status().expect("openssl runs").success());
    (std::fs::read(&private).unwrap(), public)
}

#[tokio::test]
async fn rs256_and_es256_host_tokens_verify_with_the_public_key_and_nothing_else_does() {
    for (algorithm, args) in [
        (Algorithm::RS256, &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..]),
        (Algorithm::ES256, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = key_pair(dir.path(), args);
        let public_pem = std::fs::read(&public).unwrap();
        let app = TestApp::spawn_with(|c| {
            c.host.jwt_public_key = Some(public);
            c.host.jwt_issuer = Some(ISSUER.to_owned());
        })
        .await;
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let good = claims("k-1", "Kim", "freelancer");
        let token = jsonwebtoken::encode(&Header::new(algorithm), &good, &key).unwrap();
        let (status, me) = app.get("/api/auth/me/", &token).await;
        assert_eq!((status, me["external_id"].clone()), (200, json!("k-1")), "{algorithm:?}: {me}");
        // The classic confusion: HS256 with the public key as the secret.
        let confused = EncodingKey::from_secret(&public_pem);
        let forged = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &good, &confused).unwrap();
        refused_everywhere(&app, &forged, "HS256 over the public key").await;
        refused_everywhere(&app, &host_token(&good), "a shared secret where a key pair is configured").await;
    }
}

async fn the_server_api_takes_only_its_key_and_user_routes_refuse_it(postgres: Option<&Schema>) {
    let app = spawn(None, postgres).await;
    let local = app.signup("local", "client").await;
    let host = host_user(&app, "h-1", "Hal", "client").await;
    let body = json!({"full_name": "Pat", "role": "freelancer"});
    for token in
        [local.token.as_str(), host.token.as_str(), "", "server-key-server-key-server-key-001", JWT_SECRET_HINT]
    {
        let answer =
            app.send(reqwest::Method::PUT, "/api/server/users/p-1/", Some(token), Some(body.to_string().into())).await;
        assert_error(&answer, 401, "unauthorized");
        assert_error(&app.get("/api/server/events/", token).await, 401, "unauthorized");
    }
    let none = app.send(reqwest::Method::GET, "/api/server/events/", None, None).await;
    assert_error(&none, 401, "unauthorized");
    for path in ["/api/auth/me/", "/api/chat/threads/", "/api/jobs/"] {
        assert_error(&app.get(path, SERVER_KEY).await, 401, "unauthorized");
    }
    match tokio_tungstenite::connect_async(app.ws_url(&format!("/ws/chat/?token={SERVER_KEY}"))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let ok =
        app.send(reqwest::Method::PUT, "/api/server/users/p-1/", Some(SERVER_KEY), Some(body.to_string().into())).await;
    assert_eq!(ok.0, 201, "{}", ok.1);
}

#[tokio::test]
async fn the_server_api_takes_only_its_key_and_user_routes_refuse_it_on_sqlite() {
    the_server_api_takes_only_its_key_and_user_routes_refuse_it(None).await;
}

#[tokio::test]
async fn the_server_api_takes_only_its_key_and_user_routes_refuse_it_on_postgres() {
    the_server_api_takes_only_its_key_and_user_routes_refuse_it(Some(&Schema::create().await)).await;
}

/// Not a credential of any kind: the user JWT signing key.
const JWT_SECRET_HINT: &str = crate::support::JWT_SECRET;

async fn put(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.send(reqwest::Method::PUT, path, Some(SERVER_KEY), Some(body.to_string().into())).await
}

async fn the_server_api_upserts_users_and_jobs_and_host_jobs_take_proposals(postgres: Option<&Schema>) {
    let app = spawn(None, postgres).await;
    let (status, created) =
        put(&app, "/api/server/users/c-9/", json!({"full_name": "Cleo", "role": "client", "username": "cleo"})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["user"]["external_id"], "c-9");
    let (status, updated) = put(&app, "/api/server/users/c-9/", json!({"full_name": "Cleo B", "role": "client"})).await;
    assert_eq!(
        (status, updated["user"]["id"].clone(), updated["user"]["username"].clone()),
        (200, created["user"]["id"].clone(), json!("cleo"))
    );
    app.signup("taken", "client").await;
    assert_error(
        &put(&app, "/api/server/users/c-10/", json!({"full_name": "X", "role": "client", "username": "taken"})).await,
        409,
        "conflict",
    );
    assert_error(
        &put(&app, "/api/server/users/c-10/", json!({"full_name": "X", "role": "boss"})).await,
        400,
        "validation_failed",
    );
    assert_error(&put(&app, "/api/server/users/c-10/", json!({"role": "client"})).await, 400, "validation_failed");
    assert_error(
        &app.send(reqwest::Method::PUT, "/api/server/users/c-10/", Some(SERVER_KEY), Some(b"{".to_vec())).await,
        400,
        "invalid_json",
    );
    let long = format!("/api/server/users/{}/", "x".repeat(129));
    assert_error(&put(&app, &long, json!({"full_name": "X", "role": "client"})).await, 400, "validation_failed");

    let job = json!({"title": "Logo design", "description": "A logo", "client_external_id": "c-9"});
    let (status, made) = put(&app, "/api/server/jobs/j-1/", job.clone()).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        (made["job"]["external_id"].clone(), made["job"]["client"]["external_id"].clone()),
        (json!("j-1"), json!("c-9"))
    );
    let (status, same) = put(&app, "/api/server/jobs/j-1/", job.clone()).await;
    assert_eq!((status, same["job"]["id"].clone()), (200, made["job"]["id"].clone()));
    assert_error(
        &put(&app, "/api/server/jobs/j-2/", json!({"title": "T", "client_external_id": "nobody"})).await,
        404,
        "not_found",
    );
    put(&app, "/api/server/users/f-9/", json!({"full_name": "Finn", "role": "freelancer"})).await;
    assert_error(
        &put(&app, "/api/server/jobs/j-2/", json!({"title": "T", "client_external_id": "f-9"})).await,
        400,
        "validation_failed",
    );
    assert_error(
        &put(&app, "/api/server/jobs/j-2/", json!({"title": "T", "client_external_id": "c-9", "status": "gone"})).await,
        400,
        "validation_failed",
    );

    // A host freelancer proposes on the host job; the job thread is with its client.
    let finn = host_user(&app, "f-9", "Finn", "freelancer").await;
    let job_id = made["job"]["id"].as_i64().unwrap();
    let (status, proposal) = app
        .post(&format!("/api/jobs/{job_id}/proposals/"), &finn.token, json!({"cover_letter": "Me!", "bid_amount": 300}))
        .await;
    assert_eq!(status, 201, "{proposal}");
    let names: Vec<Value> =
        proposal["thread"]["participants"].as_array().unwrap().iter().map(|p| p["external_id"].clone()).collect();
    assert!(names.contains(&json!("c-9")) && names.contains(&json!("f-9")), "{names:?}");
    assert_eq!(proposal["thread"]["job"]["id"], job_id);
    // Closing the job on the host closes it here.
    put(
        &app,
        "/api/server/jobs/j-1/",
        json!({"title": "Logo design", "client_external_id": "c-9", "status": "closed"}),
    )
    .await;
    let (_, shown) = app.get(&format!("/api/jobs/{job_id}/"), &finn.token).await;
    assert_eq!(shown["status"], "closed");
}

#[tokio::test]
async fn the_server_api_upserts_users_and_jobs_and_host_jobs_take_proposals_on_sqlite() {
    the_server_api_upserts_users_and_jobs_and_host_jobs_take_proposals(None).await;
}

#[tokio::test]
async fn the_server_api_upserts_users_and_jobs_and_host_jobs_take_proposals_on_postgres() {
    the_server_api_upserts_users_and_jobs_and_host_jobs_take_proposals(Some(&Schema::create().await)).await;
}

#[tokio::test]
async fn a_host_system_message_is_delivered_live_and_idempotent_by_key() {
    let app = spawn(None, None).await;
    let carl = host_user(&app, "c-1", "Carl", "client").await;
    let fran = host_user(&app, "f-1", "Fran", "freelancer").await;
    let thread = app.hire(&carl, &fran).await;
    let (mut carl_ws, mut fran_ws) = (app.ws(&carl).await, app.ws(&fran).await);
    let path = format!("/api/server/threads/{thread}/messages/");
    let body = json!({"text": "Offer accepted", "metadata": {"event": "offer_accepted", "amount": 300}, "client_msg_id": "offer-1"});
    let (status, message) = app.post(&path, SERVER_KEY, body.clone()).await;
    assert_eq!(status, 201, "{message}");
    assert_eq!(
        (message["kind"].clone(), message["sender"].clone(), message["seq"].clone()),
        (json!("system"), Value::Null, json!(2))
    );
    assert_eq!(message["metadata"]["event"], "offer_accepted");
    for ws in [&mut carl_ws, &mut fran_ws] {
        let got = ws.next().await;
        assert_eq!((got["type"].clone(), got["message"]["id"].clone()), (json!("new_message"), message["id"].clone()));
    }
    let (status, again) = app.post(&path, SERVER_KEY, body).await;
    assert_eq!((status, again["id"].clone()), (201, message["id"].clone()), "the first message, not a second one");
    carl_ws.assert_nothing_pending().await;
    let other = json!({"text": "Another text", "client_msg_id": "offer-1"});
    assert_error(&app.post(&path, SERVER_KEY, other).await, 409, "conflict");
    assert_error(&app.post(&path, SERVER_KEY, json!({"text": ""})).await, 400, "validation_failed");
    assert_error(&app.post(&path, SERVER_KEY, json!({"text": "x", "metadata": [1]})).await, 400, "validation_failed");
    let unknown = format!("/api/server/threads/{}/messages/", uuid::Uuid::new_v4());
    assert_error(&app.post(&unknown, SERVER_KEY, json!({"text": "x"})).await, 404, "not_found");
    assert_error(&app.post(&path, &carl.token, json!({"text": "x"})).await, 401, "unauthorized");
    // It is unread for both, and in the history.
    let (_, threads) = app.get("/api/chat/threads/", &carl.token).await;
    assert_eq!(threads["results"][0]["unread_count"], 1, "the system message of the hire is the client's own");
    assert_eq!(app.seqs(&fran, &thread).await, vec![1, 2]);
}

#[tokio::test]
async fn without_the_settings_nothing_of_the_integration_is_reachable() {
    let app = TestApp::spawn().await;
    let local = app.signup("local", "client").await;
    for path in ["/api/server/events/", "/api/server/users/x/"] {
        assert_error(&app.get(path, &local.token).await, 404, "not_found");
        assert_error(&app.get(path, SERVER_KEY).await, 404, "not_found");
    }
    let (_, doc) = app.send(reqwest::Method::GET, "/api/openapi.json", None, None).await;
    assert!(doc["paths"].as_object().unwrap().keys().all(|p| !p.starts_with("/api/server/")));
    let integrated = spawn(None, None).await;
    let (_, doc) = integrated.send(reqwest::Method::GET, "/api/openapi.json", None, None).await;
    assert!(doc["paths"]["/api/server/events/"].is_object(), "documented where it exists");
    let (status, _) = app.get("/api/auth/me/", &host_token(&claims("u-1", "Una", "client"))).await;
    assert_eq!(status, 401);
}

/// Some of everything: a thread created by Hire Me (its first message), messages
/// over WebSocket and REST, a read, a host system message; answers the thread and
/// how many events that made.
async fn make_events(app: &TestApp, carl: &TestUser, fran: &TestUser, messages: usize) -> (String, i64) {
    let thread = app.hire(carl, fran).await;
    let mut ws = app.ws(carl).await;
    for i in 0..messages {
        ws.send(json!({"type": "message", "thread_id": thread, "text": format!("m{i}")})).await;
    }
    for _ in 0..messages {
        assert_eq!(ws.next().await["type"], "message_ack");
    }
    app.say(fran, &thread, "reply").await;
    let (status, _) = app.post(&format!("/api/chat/threads/{thread}/read/"), &fran.token, json!({})).await;
    assert_eq!(status, 200);
    let (status, _) =
        app.post(&format!("/api/server/threads/{thread}/messages/"), SERVER_KEY, json!({"text": "Paid"})).await;
    assert_eq!(status, 201);
    // thread.created, the hire's message, the messages, the reply, the read, the system message.
    (thread, 2 + messages as i64 + 3)
}

async fn every_event_reaches_the_receiver_once_signed_and_in_order(postgres: Option<&Schema>) {
    let receiver = Receiver::start().await;
    let app = spawn(Some(&receiver), postgres).await;
    let carl = host_user(&app, "c-1", "Carl", "client").await;
    let fran = host_user(&app, "f-1", "Fran", "freelancer").await;
    let olga = host_user(&app, "f-2", "Olga", "freelancer").await;
    let (thread, n1) = make_events(&app, &carl, &fran, 20).await;
    let (_, n2) = make_events(&app, &carl, &olga, 5).await;
    let events = receiver::check(&receiver.wait_for((n1 + n2) as usize).await, n1 + n2, false);
    let first = &events[&1];
    assert_eq!(
        (first["type"].clone(), first["data"]["thread"]["id"].clone()),
        (json!("thread.created"), json!(thread))
    );
    assert_eq!(first["data"]["thread"]["participants"].as_array().map(Vec::len), Some(2));
    assert_eq!(events[&2]["data"]["message"]["kind"], "system");
    assert_eq!(events[&3]["data"]["message"]["text"], "m0");
    let read = events.values().find(|e| e["type"] == "thread.read").expect("a read event");
    assert_eq!((read["data"]["user_id"].as_i64(), read["data"]["up_to_seq"].clone()), (Some(fran.id), json!(22)));
    assert!(events.values().all(|e| e["id"].as_str().is_some_and(|id| id.len() == 36) && e["created_at"].is_string()));
    // The replay route returns the same events, in seq order, across pages.
    let mut replayed = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = app.get(&format!("/api/server/events/?after={after}&limit=7"), SERVER_KEY).await;
        assert_eq!(status, 200, "{page}");
        let results = page["results"].as_array().unwrap();
        replayed.extend(results.iter().map(|e| (e["seq"].as_i64().unwrap(), e["id"].clone(), e["type"].clone())));
        after = results.last().map_or(after, |e| e["seq"].as_i64().unwrap());
        if page["has_more"] == false {
            break;
        }
    }
    let sent: Vec<(i64, Value, Value)> = events.iter().map(|(s, e)| (*s, e["id"].clone(), e["type"].clone())).collect();
    assert_eq!(replayed, sent);
    let (_, tail) = app.get(&format!("/api/server/events/?after={}", n1 + n2 - 2), SERVER_KEY).await;
    assert_eq!(tail["results"].as_array().map(Vec::len), Some(2));
    assert_error(&app.get("/api/server/events/?after=-1", SERVER_KEY).await, 400, "validation_failed");
    assert_error(&app.get("/api/server/events/?limit=0", SERVER_KEY).await, 400, "validation_failed");
    assert_eq!(app.metric("confab_webhook_pending_events").await, 0.0);
    assert!(app.metric("confab_webhook_attempts_total{outcome=\"delivered\"}").await >= (n1 + n2) as f64);
    assert_eq!(app.metric("confab_webhook_leader").await, 1.0);
}

#[tokio::test]
async fn every_event_reaches_the_receiver_once_signed_and_in_order_on_sqlite() {
    every_event_reaches_the_receiver_once_signed_and_in_order(None).await;
}

#[tokio::test]
async fn every_event_reaches_the_receiver_once_signed_and_in_order_on_postgres() {
    every_event_reaches_the_receiver_once_signed_and_in_order(Some(&Schema::create().await)).await;
}

async fn a_receiver_that_answers_503_for_a_while_gets_every_event_afterwards_in_order(postgres: Option<&Schema>) {
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let app = spawn(Some(&receiver), postgres).await;
    let carl = host_user(&app, "c-1", "Carl", "client").await;
    let fran = host_user(&app, "f-1", "Fran", "freelancer").await;
    let olga = host_user(&app, "f-2", "Olga", "freelancer").await;
    let (_, n1) = make_events(&app, &carl, &fran, 10).await;
    let (_, n2) = make_events(&app, &carl, &olga, 10).await;
    // Refused a few times each (the first events of both threads), while the
    // server stays ready and the backlog is visible.
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    while receiver.refused() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "the receiver was not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.delivered().len(), 0);
    let (status, _) = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 200, "a receiver that is down does not make the node unready");
    assert!(app.metric("confab_webhook_attempts_total{outcome=\"failed\"}").await >= 6.0);
    // The backlog gauge is measured once a second while there is work.
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    while app.metric("confab_webhook_pending_events").await != (n1 + n2) as f64 {
        assert!(tokio::time::Instant::now() < deadline, "the backlog never showed every event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.answer(200);
    receiver::check(&receiver.wait_for((n1 + n2) as usize).await, n1 + n2, false);
}

#[tokio::test]
async fn a_receiver_that_answers_503_for_a_while_gets_every_event_afterwards_in_order_on_sqlite() {
    a_receiver_that_answers_503_for_a_while_gets_every_event_afterwards_in_order(None).await;
}

#[tokio::test]
async fn a_receiver_that_answers_503_for_a_while_gets_every_event_afterwards_in_order_on_postgres() {
    a_receiver_that_answers_503_for_a_while_gets_every_event_afterwards_in_order(Some(&Schema::create().await)).await;
}

#[tokio::test]
async fn an_event_that_keeps_failing_is_given_up_after_its_attempts_and_stays_replayable() {
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let app = TestApp::spawn_with(|c| {
        integrated(c, Some(&receiver));
        if let Some(w) = c.host.webhook.as_mut() {
            w.max_attempts = 3;
        }
    })
    .await;
    let carl = host_user(&app, "c-1", "Carl", "client").await;
    let fran = host_user(&app, "f-1", "Fran", "freelancer").await;
    app.hire(&carl, &fran).await;
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    while app.metric("confab_webhook_attempts_total{outcome=\"gave_up\"}").await < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "never gave up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.refused(), 6, "3 attempts of each of the 2 events, in order");
    let (_, replay) = app.get("/api/server/events/", SERVER_KEY).await;
    assert_eq!(replay["results"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn sent_events_are_forgotten_after_the_retention_window_and_seqs_go_on() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(|c| {
        integrated(c, Some(&receiver));
        c.host.event_retention = Duration::from_secs(1);
    })
    .await;
    let carl = host_user(&app, "c-1", "Carl", "client").await;
    let fran = host_user(&app, "f-1", "Fran", "freelancer").await;
    let thread = app.hire(&carl, &fran).await;
    receiver.wait_for(2).await;
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    loop {
        let (_, page) = app.get("/api/server/events/", SERVER_KEY).await;
        if page["results"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "sent events were never forgotten: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.say(&fran, &thread, "later").await;
    let delivered = receiver.wait_for(3).await;
    assert_eq!(delivered[2]["seq"], 3, "a pruned outbox does not reuse seqs");
    let (_, page) = app.get("/api/server/events/?after=0", SERVER_KEY).await;
    assert_eq!(page["results"][0]["seq"], 3);
}

async fn events_pending_when_the_server_is_killed_are_delivered_after_its_restart(postgres: Option<&Schema>) {
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--host-jwt-secret",
        HOST_SECRET,
        "--host-jwt-issuer",
        ISSUER,
        "--server-api-key",
        SERVER_KEY,
        "--webhook-url",
        &receiver.url,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--webhook-first-retry",
        "1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(schema) = postgres {
        args.extend(["--database-url".to_owned(), schema.url()]);
    }
    let mut server = crate::crash::Server::start_with(dir.path(), &args);
    let front = TestApp::front(&server.base);
    let carl = host_user(&front, "c-1", "Carl", "client").await;
    let fran = host_user(&front, "f-1", "Fran", "freelancer").await;
    let (_, n) = make_events(&front, &carl, &fran, 30).await;
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    while receiver.refused() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no delivery was tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal("-KILL");
    server.wait(Duration::from_secs(10));
    receiver.answer(200);
    let _restarted = crate::crash::Server::start_with(dir.path(), &args);
    receiver::check(&receiver.wait_for(n as usize).await, n, false);
}

#[tokio::test]
async fn events_pending_when_the_server_is_killed_are_delivered_after_its_restart_on_sqlite() {
    events_pending_when_the_server_is_killed_are_delivered_after_its_restart(None).await;
}

#[tokio::test]
async fn events_pending_when_the_server_is_killed_are_delivered_after_its_restart_on_postgres() {
    events_pending_when_the_server_is_killed_are_delivered_after_its_restart(Some(&Schema::create().await)).await;
}

#[tokio::test]
async fn two_postgres_nodes_deliver_each_event_once_between_them() {
    let receiver = Receiver::start().await;
    let cluster = Cluster::start_configured(2, |c| integrated(c, Some(&receiver))).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let carl = host_user(a, "c-1", "Carl", "client").await;
    let fran = host_user(b, "f-1", "Fran", "freelancer").await;
    let olga = host_user(b, "f-2", "Olga", "freelancer").await;
    let (_, n1) = make_events(a, &carl, &fran, 20).await;
    let (_, n2) = make_events(b, &carl, &olga, 20).await;
    receiver::check(&receiver.wait_for((n1 + n2) as usize).await, n1 + n2, false);
    let leaders = a.metric("confab_webhook_leader").await + b.metric("confab_webhook_leader").await;
    assert_eq!(leaders, 1.0, "one node delivers at a time");
}
