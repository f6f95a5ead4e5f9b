use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::support::{TestApp, TestUser, WsClient, WsFrame, assert_error};

async fn pair(app: &TestApp) -> (TestUser, TestUser) {
    (app.signup("alice", "client").await, app.signup("bob", "freelancer").await)
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["message"]["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn the_seed_direct_message_exchange_arrives_field_by_field() {
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    a.send(json!({"type": "message", "recipient_id": bob.id, "text": "Hello!", "client_msg_id": "c-1"})).await;

    let ack = a.next().await;
    assert_eq!(ack["type"], "message_ack");
    assert_eq!(ack["client_msg_id"], "c-1");
    let received = b.next().await;
    assert_eq!(received["type"], "new_message");
    let m = &received["message"];
    assert_eq!(&ack["message"], m, "the ack carries the same message");
    assert_eq!(m["sender"], json!({"id": alice.id, "username": "alice", "full_name": "Alice Client"}));
    assert_eq!(m["recipient"], json!({"id": bob.id, "username": "bob", "full_name": "Bob Freelancer"}));
    assert_eq!(m["text"], "Hello!");
    assert_eq!(m["seq"], 1);
    assert_eq!(m["kind"], "user");
    assert_eq!(m["is_read"], false);
    assert_eq!(m["metadata"], json!({}));
    assert_eq!(m["client_msg_id"], "c-1");
    assert!(m["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(uuid::Uuid::parse_str(m["id"].as_str().unwrap()).is_ok());
    let thread = m["thread_id"].as_str().unwrap();

    // Bob answers by thread id; the stored history is what was delivered.
    b.send(json!({"type": "message", "thread_id": thread, "text": "Hi Alice"})).await;
    assert_eq!(b.next().await["type"], "message_ack");
    let reply = a.next().await;
    assert_eq!((reply["type"].clone(), reply["message"]["seq"].clone()), (json!("new_message"), json!(2)));
    let (_, history) = app.get(&format!("/api/messaging/messages/?user_id={}", bob.id), &alice.token).await;
    assert_eq!(history["results"][0], *m);
    assert_eq!(history["results"][1], reply["message"]);
}

#[tokio::test]
async fn a_token_is_accepted_from_the_query_the_subprotocol_or_a_first_auth_frame() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let thread = app.hire(&alice, &bob).await;

    let mut request = app.ws_url("/ws/messaging").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", format!("bearer, {}", alice.token).parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    let mut by_protocol = WsClient { socket };
    by_protocol.assert_nothing_pending().await;

    let mut by_frame = WsClient::connect(&app.ws_url("/ws/chat/")).await;
    by_frame.send(json!({"type": "auth", "token": bob.token})).await;
    by_frame.assert_nothing_pending().await;
    app.say(&alice, &thread, "both see this").await;
    assert_eq!(by_protocol.next().await["message"]["text"], "both see this");
    assert_eq!(by_frame.next().await["message"]["text"], "both see this");
}

#[tokio::test]
async fn missing_forged_expired_and_refresh_tokens_are_refused() {
    use tokio_tungstenite::tungstenite::Error;
    let app = TestApp::spawn_with(|c| c.ws.auth_timeout = Duration::from_millis(300)).await;
    let alice = app.signup("alice", "client").await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"token_type": "access", "user_id": alice.id, "sub": alice.id.to_string(), "iss": "confab", "aud": "confab",
        "iat": now - 3600, "exp": now - 600, "jti": "x"});
    let key = jsonwebtoken::EncodingKey::from_secret(crate::support::JWT_SECRET.as_bytes());
    let expired = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    for token in ["not.a.token", alice.refresh.as_str(), expired.as_str()] {
        let url = app.ws_url(&format!("/ws/chat/?token={token}"));
        match tokio_tungstenite::connect_async(url).await {
            Err(Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected 401 before the upgrade, got {other:?}"),
        }
    }
    let mut silent = WsClient::connect(&app.ws_url("/ws/chat/")).await;
    assert_eq!(silent.until_close().await.0, 4401, "no auth frame in time");
    let mut wrong = WsClient::connect(&app.ws_url("/ws/chat/")).await;
    wrong.send(json!({"type": "auth", "token": alice.refresh})).await;
    assert_eq!(wrong.until_close().await.0, 4401, "a refresh token in the auth frame");
    let mut chatty = WsClient::connect(&app.ws_url("/ws/chat/")).await;
    chatty.send(json!({"type": "ping"})).await;
    assert_eq!(chatty.until_close().await.0, 4401, "anything but auth first");
}

#[tokio::test]
async fn every_device_gets_the_message_and_only_the_sending_one_gets_the_ack() {
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let thread = app.hire(&alice, &bob).await;
    let (mut a1, mut a2, mut b1, mut b2) =
        (app.ws(&alice).await, app.ws(&alice).await, app.ws(&bob).await, app.ws(&bob).await);
    a1.send(json!({"type": "message", "thread_id": thread, "text": "from a1", "client_msg_id": "k"})).await;
    assert_eq!(a1.next().await["type"], "message_ack");
    for device in [&mut a2, &mut b1, &mut b2] {
        let event = device.next().await;
        assert_eq!((event["type"].as_str(), event["message"]["text"].as_str()), (Some("new_message"), Some("from a1")));
    }
    // A message sent over REST reaches every device, the sender's included, as new_message.
    app.say(&bob, &thread, "from rest").await;
    for device in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let event = device.next().await;
        assert_eq!((event["type"].as_str(), event["message"]["seq"].as_i64()), (Some("new_message"), Some(3)));
        device.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn workflow_system_messages_arrive_live() {
    let app = TestApp::spawn().await;
    let (client, freelancer) = pair(&app).await;
    let mut f = app.ws(&freelancer).await;
    let mut c = app.ws(&client).await;
    let thread = app.hire(&client, &freelancer).await;
    for device in [&mut f, &mut c] {
        let event = device.next().await;
        assert_eq!(event["type"], "new_message");
        assert_eq!(event["message"]["thread_id"], thread);
        assert_eq!(event["message"]["kind"], "system");
        assert_eq!(event["message"]["text"], "Client Alice Client started a conversation with you");
    }
    let (_, job) = app.post("/api/jobs/", &client.token, json!({"title": "Logo", "description": "A logo"})).await;
    app.post("/api/chat/proposal-chat/", &freelancer.token, json!({"job_id": job["id"]})).await;
    let event = c.next().await;
    assert_eq!(event["message"]["text"], "Freelancer Bob Freelancer has submitted a proposal for job: Logo");
    assert_eq!(event["message"]["metadata"]["action"], "proposal");
    // Hiring again creates nothing, so nothing is delivered.
    app.hire(&client, &freelancer).await;
    f.next().await;
    f.assert_nothing_pending().await;
}

#[tokio::test]
async fn concurrent_senders_over_ws_and_rest_are_delivered_once_in_seq_order_to_every_device() {
    const EACH: usize = 20;
    let app = TestApp::spawn_with(|c| {
        c.limits.messages_per_second = 1000;
        c.limits.message_burst = 1000;
    })
    .await;
    let (alice, bob) = pair(&app).await;
    let thread = app.hire(&alice, &bob).await;
    let mut devices = [app.ws(&alice).await, app.ws(&alice).await, app.ws(&bob).await, app.ws(&bob).await];
    let ws_senders = devices.iter_mut().take(3).enumerate().map(|(i, device)| {
        let thread = thread.clone();
        async move {
            for n in 0..EACH {
                let key = format!("ws{i}-{n}");
                device.send(json!({"type": "message", "thread_id": thread, "text": key, "client_msg_id": key})).await;
            }
        }
    });
    let rest_senders = [&alice, &bob].into_iter().map(|user| {
        let (app, thread) = (&app, thread.clone());
        async move {
            for n in 0..EACH {
                let (status, _) = app
                    .post(
                        &format!("/api/chat/threads/{thread}/messages/"),
                        &user.token,
                        json!({"text": format!("rest-{n}")}),
                    )
                    .await;
                assert_eq!(status, 201);
            }
        }
    });
    tokio::join!(join_all(ws_senders), join_all(rest_senders));

    let total = 5 * EACH;
    let expected: Vec<i64> = (2..=1 + total as i64).collect();
    for (i, device) in devices.iter_mut().enumerate() {
        let mut events = Vec::new();
        while events.len() < total {
            events.push(device.next().await);
        }
        assert_eq!(seqs(&events), expected, "device {i} sees every message once, in seq order");
        let acks: Vec<&Value> = events.iter().filter(|e| e["type"] == "message_ack").collect();
        if i < 3 {
            assert_eq!(acks.len(), EACH, "device {i} is acked for each of its own messages");
            assert!(acks.iter().all(|a| a["client_msg_id"].as_str().unwrap().starts_with(&format!("ws{i}-"))));
        } else {
            assert!(acks.is_empty());
        }
        device.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn a_client_that_was_away_recovers_exactly_the_missed_messages_with_sync() {
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let mut b = app.ws(&bob).await;
    let thread = app.hire(&alice, &bob).await;
    let first = b.next().await;
    assert_eq!(first["message"]["seq"], 1);
    drop(b);

    let mut a = app.ws(&alice).await;
    for n in 0..30 {
        a.send(json!({"type": "message", "thread_id": thread, "text": format!("missed {n}")})).await;
    }
    for _ in 0..30 {
        assert_eq!(a.next().await["type"], "message_ack");
    }
    // A thread Bob has never seen, which his sync does not name.
    let carol = app.signup("carol", "client").await;
    let other = app.hire(&carol, &bob).await;

    let mut b = app.ws(&bob).await;
    b.send(json!({"type": "sync", "threads": {thread.clone(): 1}})).await;
    let mut replayed = Vec::new();
    loop {
        let event = b.next().await;
        if event["type"] == "synced" {
            break;
        }
        assert_eq!(event["type"], "new_message");
        replayed.push(event);
    }
    let (ours, theirs): (Vec<Value>, Vec<Value>) =
        replayed.into_iter().partition(|e| e["message"]["thread_id"] == thread);
    assert_eq!(seqs(&ours), (2..=31).collect::<Vec<_>>());
    assert_eq!(ours[0]["message"]["text"], "missed 0");
    assert_eq!(seqs(&theirs), vec![1]);
    assert_eq!(theirs[0]["message"]["thread_id"], other);

    b.send(json!({"type": "sync", "threads": {thread.clone(): 31, other.clone(): 1}})).await;
    assert_eq!(b.next().await, json!({"type": "synced"}), "nothing more to replay");

    // A send repeated after a reconnect is acked with the first message, even though
    // this connection already saw that message in the replay.
    a.send(json!({"type": "message", "thread_id": thread, "text": "once", "client_msg_id": "r-1"})).await;
    let first = a.next().await;
    let seen = b.next().await;
    assert_eq!(seen["message"], first["message"]);
    b.send(json!({"type": "sync", "threads": {thread.clone(): 31}})).await;
    let after = b.next().await;
    assert_eq!(after["type"], "synced", "a connection is never sent the same message twice: {after}");
    let mut a2 = app.ws(&alice).await;
    a2.send(json!({"type": "sync", "threads": {thread.clone(): 31}})).await;
    assert_eq!(a2.next().await["message"]["seq"], 32);
    assert_eq!(a2.next().await["type"], "synced");
    a2.send(json!({"type": "message", "thread_id": thread, "text": "once", "client_msg_id": "r-1"})).await;
    let again = a2.next().await;
    assert_eq!((again["type"].clone(), &again["message"]), (json!("message_ack"), &first["message"]));
    b.send(json!({"type": "sync", "threads": {"not-a-thread": 0}})).await;
    assert_eq!(b.next().await["error"], "validation_failed");
    b.send(json!({"type": "sync", "threads": {thread.clone(): -1}})).await;
    assert_eq!(b.next().await["error"], "validation_failed");
}

#[tokio::test]
async fn a_reader_that_cannot_keep_up_is_closed_with_1013_and_recovers_with_sync() {
    let app = TestApp::spawn_with(|c| {
        c.ws.queue = 16;
        c.limits.max_text_chars = 16_000;
        c.limits.messages_per_second = 100_000;
        c.limits.message_burst = 100_000;
    })
    .await;
    let (alice, bob) = pair(&app).await;
    let thread = app.hire(&alice, &bob).await;

    // Bob's socket takes little and he reads nothing, so the server's queue for him fills.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let url = app.ws_url(&format!("/ws/chat/?token={}", bob.token));
    let plain = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (socket, _) = tokio_tungstenite::client_async(url, plain).await.unwrap();
    let mut slow = WsClient { socket };

    let text = "x".repeat(15_000);
    let path = format!("/api/chat/threads/{thread}/messages/");
    let mut sent = 1; // the hire's system message
    let closed = loop {
        let batch = (0..20).map(|_| app.post(&path, &alice.token, json!({"text": text})));
        assert!(join_all(batch).await.iter().all(|(s, _)| *s == 201));
        sent += 20;
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if metrics.contains("confab_ws_slow_consumer_closes_total 1") {
            break true;
        }
        if sent > 3000 {
            break false;
        }
    };
    assert!(closed, "the slow reader was closed after {sent} messages");

    let (code, events) = slow.until_close().await;
    assert_eq!(code, 1013);
    let got = seqs(&events);
    assert!(got.len() < sent, "some messages were not delivered live");
    let start = got.first().copied().unwrap_or(1);
    assert_eq!(got, (start..start + got.len() as i64).collect::<Vec<_>>(), "what was delivered was in order");

    let mut again = app.ws(&bob).await;
    let last = got.last().copied().unwrap_or(0);
    again.send(json!({"type": "sync", "threads": {thread.clone(): last}})).await;
    let mut recovered = Vec::new();
    loop {
        let event = again.next().await;
        if event["type"] == "synced" {
            break;
        }
        recovered.push(event);
    }
    assert_eq!(seqs(&recovered), ((last + 1)..=sent as i64).collect::<Vec<_>>(), "sync recovers exactly the rest");
}

#[tokio::test]
async fn bad_frames_get_error_events_and_the_connection_stays_usable() {
    let app = TestApp::spawn_with(|c| c.limits.max_text_chars = 50).await;
    let (alice, bob) = pair(&app).await;
    let carol = app.signup("carol", "client").await;
    let theirs = app.hire(&carol, &bob).await;
    let mut a = app.ws(&alice).await;
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("{not json".to_owned(), "invalid_json", None),
        ("[1, 2]".to_owned(), "validation_failed", None),
        (json!({"type": "shout"}).to_string(), "validation_failed", None),
        (json!({"text": "no type"}).to_string(), "validation_failed", None),
        (
            json!({"type": "message", "recipient_id": bob.id, "client_msg_id": "k1"}).to_string(),
            "validation_failed",
            Some("k1"),
        ),
        (
            json!({"type": "message", "recipient_id": bob.id, "text": 5, "client_msg_id": "k2"}).to_string(),
            "validation_failed",
            Some("k2"),
        ),
        (
            json!({"type": "message", "recipient_id": bob.id, "text": "", "client_msg_id": "k3"}).to_string(),
            "validation_failed",
            Some("k3"),
        ),
        (
            json!({"type": "message", "recipient_id": bob.id, "text": "x".repeat(51), "client_msg_id": "k4"})
                .to_string(),
            "payload_too_large",
            Some("k4"),
        ),
        (
            json!({"type": "message", "text": "where to?", "client_msg_id": "k5"}).to_string(),
            "validation_failed",
            Some("k5"),
        ),
        (
            json!({"type": "message", "recipient_id": 9999, "text": "nobody", "client_msg_id": "k6"}).to_string(),
            "not_found",
            Some("k6"),
        ),
        (
            json!({"type": "message", "thread_id": theirs, "text": "not mine", "client_msg_id": "k7"}).to_string(),
            "not_found",
            Some("k7"),
        ),
        (
            json!({"type": "message", "thread_id": "nope", "text": "bad id", "client_msg_id": "k8"}).to_string(),
            "not_found",
            Some("k8"),
        ),
        (json!({"type": "typing", "thread_id": theirs}).to_string(), "not_found", None),
        (json!({"type": "read", "thread_id": theirs, "up_to_seq": 1}).to_string(), "not_found", None),
        (json!({"type": "typing"}).to_string(), "validation_failed", None),
    ];
    for (frame, code, key) in cases {
        a.send_text(&frame).await;
        let event = a.next().await;
        assert_eq!(event["type"], "error", "{frame}");
        assert_eq!(event["error"], code, "{frame}: {event}");
        assert!(event["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(event["client_msg_id"].as_str(), key, "{frame}");
    }
    {
        use futures::SinkExt;
        a.socket.send(WsFrame::binary(vec![1, 2, 3])).await.unwrap();
    }
    assert_eq!(a.next().await["error"], "validation_failed");
    a.send(json!({"type": "message", "recipient_id": bob.id, "text": "still here"})).await;
    assert_eq!(a.next().await["type"], "message_ack");
    let (_, their_history) = app.get(&format!("/api/chat/threads/{theirs}/messages/"), &carol.token).await;
    assert_eq!(their_history["results"].as_array().unwrap().len(), 1, "nothing reached the foreign thread");
}

#[tokio::test]
async fn an_over_long_text_in_a_frame_up_to_1_mib_is_refused_by_key_and_the_socket_stays_open() {
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let mut a = app.ws(&alice).await;
    for (size, key) in [(100 * 1024, "big-1"), (1000 * 1024, "big-2")] {
        a.send(json!({"type": "message", "recipient_id": bob.id, "text": "x".repeat(size), "client_msg_id": key}))
            .await;
        let error = a.next().await;
        assert_eq!((error["type"].as_str(), error["error"].as_str()), (Some("error"), Some("payload_too_large")));
        assert_eq!(error["client_msg_id"], key, "the error names the message that failed");
    }
    a.send(json!({"type": "message", "recipient_id": bob.id, "text": "small", "client_msg_id": "ok"})).await;
    let ack = a.next().await;
    assert_eq!((ack["type"].as_str(), ack["message"]["seq"].as_i64()), (Some("message_ack"), Some(1)));
    // Only a frame over 1 MiB closes the connection.
    a.send(json!({"type": "message", "recipient_id": bob.id, "text": "x".repeat(1100 * 1024)})).await;
    assert_eq!(a.until_close().await.0, 1009);
}

#[tokio::test]
async fn a_request_that_is_no_websocket_handshake_gets_the_contracts_error_body() {
    let app = TestApp::spawn().await;
    let alice = app.signup("alice", "client").await;
    let plain = app.get(&format!("/ws/chat/?token={}", alice.token), &alice.token).await;
    assert_error(&plain, 426, "validation_failed");
    let bad_query = app.get("/ws/chat/?token=a&token=b", &alice.token).await;
    assert_error(&bad_query, 400, "validation_failed");
}

#[tokio::test]
async fn a_key_is_scoped_to_its_thread_and_a_reused_key_with_other_text_is_a_conflict() {
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let carol = app.signup("carol", "freelancer").await;
    let mut a = app.ws(&alice).await;
    a.send(json!({"type": "message", "recipient_id": bob.id, "text": "hello b", "client_msg_id": "c-1"})).await;
    let to_bob = a.next().await;
    assert_eq!((to_bob["type"].as_str(), to_bob["message"]["text"].as_str()), (Some("message_ack"), Some("hello b")));
    // A client whose keys restart each session sends `c-1` to someone else: a new message.
    a.send(json!({"type": "message", "recipient_id": carol.id, "text": "hello c", "client_msg_id": "c-1"})).await;
    let to_carol = a.next().await;
    assert_eq!(to_carol["type"], "message_ack");
    assert_eq!(
        (to_carol["message"]["text"].as_str(), to_carol["client_msg_id"].as_str()),
        (Some("hello c"), Some("c-1"))
    );
    assert_ne!(to_carol["message"]["thread_id"], to_bob["message"]["thread_id"]);
    // The same key in the same thread with the same text is a retry: the first message.
    a.send(json!({"type": "message", "recipient_id": bob.id, "text": "hello b", "client_msg_id": "c-1"})).await;
    let retry = a.next().await;
    assert_eq!((retry["type"].as_str(), &retry["message"]), (Some("message_ack"), &to_bob["message"]));
    // With another text it is refused, echoing the key, and nothing is stored.
    a.send(json!({"type": "message", "recipient_id": bob.id, "text": "hello again", "client_msg_id": "c-1"})).await;
    let refused = a.next().await;
    assert_eq!((refused["type"].as_str(), refused["error"].as_str()), (Some("error"), Some("conflict")));
    assert_eq!(refused["client_msg_id"], "c-1");
    let thread = to_bob["message"]["thread_id"].as_str().unwrap();
    let (_, history) = app.get(&format!("/api/chat/threads/{thread}/messages/"), &alice.token).await;
    let texts: Vec<&str> = history["results"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["hello b"]);
    a.assert_nothing_pending().await;
}

#[tokio::test]
async fn a_workflows_first_message_reaches_both_participants_before_a_concurrent_second() {
    let app = TestApp::spawn().await;
    for round in 0..10 {
        let client = app.signup(&format!("client{round}"), "client").await;
        let freelancer = app.signup(&format!("freelancer{round}"), "freelancer").await;
        // No sync: the connections know nothing of the thread, so only the order in
        // which the node publishes can keep seq 1 first.
        let mut c = app.ws(&client).await;
        let mut f = app.ws(&freelancer).await;
        let hire = app.post("/api/chat/hire-freelancer/", &client.token, json!({"freelancer_id": freelancer.id}));
        // Each round sends a little later, to land in another part of the hire's work.
        let send = async {
            tokio::time::sleep(Duration::from_micros(500 * round)).await;
            f.send(json!({"type": "message", "recipient_id": client.id, "text": "hi", "client_msg_id": "x"})).await;
        };
        let ((status, body), ()) = tokio::join!(hire, send);
        assert!(status == 200 || status == 201, "round {round}: {status}");
        // The freelancer's ack says how many messages there are: when the send came
        // first it made the thread, and the hire found it, with no system message.
        let mut seen = Vec::new();
        let mut count = None;
        while count.is_none_or(|n| seen.len() < n) {
            let event = f.next().await;
            let seq = event["message"]["seq"].as_i64().unwrap();
            if event["type"] == "message_ack" {
                count = Some(seq as usize);
            }
            seen.push(seq);
        }
        let expected: Vec<i64> = (1..=seen.len() as i64).collect();
        assert_eq!(seen, expected, "round {round}: the freelancer's events");
        let thread = body["thread"]["id"].as_str().unwrap();
        assert_eq!(app.seqs(&client, thread).await, expected, "round {round}: stored");
        let mut theirs = Vec::new();
        for _ in 0..expected.len() {
            theirs.push(c.next().await["message"]["seq"].as_i64().unwrap());
        }
        assert_eq!(theirs, expected, "round {round}: the client's events");
        c.assert_nothing_pending().await;
        f.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_the_connection_with_1009() {
    let app = TestApp::spawn_with(|c| c.ws.max_frame_bytes = 1024).await;
    let alice = app.signup("alice", "client").await;
    let mut a = app.ws(&alice).await;
    a.send(json!({"type": "message", "recipient_id": 2, "text": "x".repeat(2000)})).await;
    assert_eq!(a.until_close().await.0, 1009);
}

#[tokio::test]
async fn typing_and_read_events_reach_the_other_participants_only() {
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let carol = app.signup("carol", "freelancer").await;
    let thread = app.hire(&alice, &bob).await;
    app.say(&alice, &thread, "are you there?").await;
    let (mut a1, mut a2, mut b, mut outsider) =
        (app.ws(&alice).await, app.ws(&alice).await, app.ws(&bob).await, app.ws(&carol).await);

    a1.send(json!({"type": "typing", "thread_id": thread})).await;
    assert_eq!(
        b.next().await,
        json!({"type": "typing", "thread_id": thread, "user": {"id": alice.id, "username": "alice", "full_name": "Alice Client", "role": "client"}})
    );
    b.send(json!({"type": "read", "thread_id": thread, "up_to_seq": 2})).await;
    for device in [&mut a1, &mut a2] {
        assert_eq!(
            device.next().await,
            json!({"type": "read", "thread_id": thread, "user_id": bob.id, "up_to_seq": 2})
        );
    }
    // A read over REST is announced the same way.
    app.post(&format!("/api/chat/threads/{thread}/read/"), &alice.token, json!({})).await;
    assert_eq!(b.next().await, json!({"type": "read", "thread_id": thread, "user_id": alice.id, "up_to_seq": 2}));
    let (_, page) = app.get(&format!("/api/chat/threads/{thread}/messages/"), &alice.token).await;
    assert_eq!(page["results"][1]["is_read"], true);

    for device in [&mut a1, &mut a2, &mut b, &mut outsider] {
        device.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn an_outsider_receives_nothing_of_a_thread() {
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let carol = app.signup("carol", "freelancer").await;
    let mut outsider = app.ws(&carol).await;
    let mut b = app.ws(&bob).await;
    let thread = app.hire(&alice, &bob).await;
    app.say(&alice, &thread, "private").await;
    assert_eq!(b.next().await["message"]["seq"], 1);
    assert_eq!(b.next().await["message"]["text"], "private");
    outsider.assert_nothing_pending().await;
    outsider.send(json!({"type": "sync", "threads": {}})).await;
    assert_eq!(outsider.next().await, json!({"type": "synced"}), "sync replays only the caller's threads");
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_gets_rate_limited_errors_and_the_connection_survives() {
    let app = TestApp::spawn_with(|c| {
        c.limits.messages_per_second = 1;
        c.limits.message_burst = 5;
    })
    .await;
    let (alice, bob) = pair(&app).await;
    let mut a = app.ws(&alice).await;
    for n in 0..20 {
        a.send(json!({"type": "message", "recipient_id": bob.id, "text": "flood", "client_msg_id": format!("f{n}")}))
            .await;
    }
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        let event = a.next().await;
        let kind = if event["type"] == "error" {
            event["error"].as_str().unwrap().to_owned()
        } else {
            event["type"].as_str().unwrap().to_owned()
        };
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(kinds.get("message_ack").is_some_and(|n| (5..=6).contains(n)), "{kinds:?}");
    assert!(kinds.get("rate_limited").is_some_and(|n| *n >= 14), "{kinds:?}");
    a.assert_nothing_pending().await;
    // REST sends count against the same budget.
    let thread = app.hire(&alice, &bob).await;
    let answer = app.post(&format!("/api/chat/threads/{thread}/messages/"), &alice.token, json!({"text": "x"})).await;
    assert_error(&answer, 429, "rate_limited");
}

#[tokio::test]
async fn connections_per_user_are_bounded() {
    let app = TestApp::spawn_with(|c| c.ws.max_connections_per_user = 2).await;
    let alice = app.signup("alice", "client").await;
    let (_a1, _a2) = (app.ws(&alice).await, app.ws(&alice).await);
    match tokio_tungstenite::connect_async(app.ws_url(&format!("/ws/chat/?token={}", alice.token))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout_while_a_live_one_stays() {
    let app = TestApp::spawn_with(|c| {
        c.ws.ping_interval = Duration::from_millis(50);
        c.ws.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let alice = app.signup("alice", "client").await;
    let mut silent = app.ws(&alice).await;
    let mut live = app.ws(&alice).await;
    // The live client reads (and so answers pings) for longer than the idle timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(900);
    let mut pings = 0;
    while tokio::time::Instant::now() < deadline {
        use futures::StreamExt;
        if let Ok(Some(Ok(WsFrame::Ping(_)))) =
            tokio::time::timeout(Duration::from_millis(100), live.socket.next()).await
        {
            pings += 1;
        }
    }
    assert!(pings >= 3, "the server pings ({pings})");
    live.assert_nothing_pending().await;
    let (code, _) = silent.until_close().await;
    assert_eq!(code, 1001);
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_every_acked_message_is_stored() {
    let mut app = TestApp::spawn_with(|c| {
        c.limits.messages_per_second = 10_000;
        c.limits.message_burst = 10_000;
    })
    .await;
    let (alice, bob) = pair(&app).await;
    let thread = app.hire(&alice, &bob).await;
    let mut a = app.ws(&alice).await;
    for n in 0..200 {
        a.send(json!({"type": "message", "thread_id": thread, "text": "bye", "client_msg_id": format!("s{n}")})).await;
    }
    let ack = a.next().await;
    assert_eq!(ack["type"], "message_ack");
    app.stop().await;
    let (code, rest) = a.until_close().await;
    assert_eq!(code, 1001);
    let acked: HashSet<String> = std::iter::once(&ack)
        .chain(rest.iter())
        .filter(|e| e["type"] == "message_ack")
        .map(|e| e["client_msg_id"].as_str().unwrap().to_owned())
        .collect();

    let url = format!("sqlite://{}", app.data_dir.join("confab.db").display());
    let store = confab::store::SqliteStore::connect(&url).await.unwrap();
    let id = confab::domain::ThreadId::parse(&thread).unwrap();
    use confab::store::Store;
    // All of them: the 200 sends and the thread's system message (one page of 200
    // would miss the last send when every one of them was acked).
    let stored = store.messages(id, confab::domain::Cursor::After(confab::domain::Seq(0)), 1000).await.unwrap();
    let stored_keys: HashSet<String> =
        stored.results.iter().filter_map(|m| m.client_msg_id.as_deref().map(str::to_owned)).collect();
    assert!(!acked.is_empty());
    assert_eq!(acked, stored_keys, "every stored message was acked before the close, and every acked one stored");
}

#[tokio::test]
async fn a_socket_closes_with_4401_when_its_token_expires() {
    let app = TestApp::spawn_with(|c| c.access_token_ttl = Duration::from_secs(2)).await;
    let alice = app.signup("alice", "client").await;
    let mut ws = app.ws(&alice).await;
    ws.assert_nothing_pending().await;
    let started = std::time::Instant::now();
    let (code, _) = ws.until_close().await;
    assert_eq!(code, 4401);
    // At the expiry plus the 5 s clock leeway every token check allows.
    let elapsed = started.elapsed();
    assert!(elapsed > Duration::from_secs(5) && elapsed < Duration::from_secs(8), "closed at {elapsed:?}");
}

#[tokio::test]
async fn an_auth_frame_with_a_fresh_token_keeps_the_socket_open_until_that_one_expires() {
    let app = TestApp::spawn_with(|c| c.access_token_ttl = Duration::from_secs(3)).await;
    let alice = app.signup("alice", "client").await;
    let mut ws = app.ws(&alice).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = app.login("alice").await;
    ws.send(json!({"type": "auth", "token": fresh.token})).await;
    let authed = ws.next().await;
    assert_eq!(authed["type"], "authed", "{authed}");
    let exp = authed["exp"].as_i64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now + 1..=now + 3).contains(&exp), "the fresh token's expiry: {exp} (now {now})");
    // Past the first token's expiry, the socket still works.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    ws.assert_nothing_pending().await;
    let (code, _) = ws.until_close().await;
    assert_eq!(code, 4401, "then it closes when the fresh one expires");
}

#[tokio::test]
async fn an_auth_frame_with_a_token_that_expires_sooner_brings_the_close_nearer() {
    let app = TestApp::spawn().await;
    let alice = app.signup("alice", "client").await;
    let mut ws = app.ws(&alice).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"token_type": "access", "user_id": alice.id, "sub": alice.id.to_string(), "iss": "confab", "aud": "confab",
        "iat": now, "exp": now + 1, "jti": "sooner"});
    let key = jsonwebtoken::EncodingKey::from_secret(crate::support::JWT_SECRET.as_bytes());
    let sooner = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let started = std::time::Instant::now();
    ws.send(json!({"type": "auth", "token": sooner})).await;
    assert_eq!(ws.next().await["type"], "authed");
    let (code, _) = ws.until_close().await;
    assert_eq!(code, 4401);
    // At that token's expiry plus the 5 s clock leeway, long before the first one's.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "closed at {elapsed:?}");
}

#[tokio::test]
async fn an_auth_frame_with_another_users_token_closes_at_once_and_a_bad_one_is_refused() {
    let app = TestApp::spawn().await;
    let alice = app.signup("alice", "client").await;
    let bob = app.signup("bob", "client").await;
    let mut ws = app.ws(&alice).await;
    for bad in [json!({"type": "auth", "token": "not.a.token"}), json!({"type": "auth", "token": alice.refresh})] {
        ws.send(bad).await;
        let answer = ws.next().await;
        assert_eq!((answer["type"].as_str(), answer["error"].as_str()), (Some("error"), Some("unauthorized")));
    }
    ws.send(json!({"type": "auth"})).await;
    assert_eq!(ws.next().await["error"], "validation_failed");
    ws.assert_nothing_pending().await;
    ws.send(json!({"type": "auth", "token": bob.token})).await;
    let (code, _) = ws.until_close().await;
    assert_eq!(code, 4401);
}

#[tokio::test]
async fn typing_events_are_passed_on_at_most_once_per_interval() {
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let thread = app.hire(&alice, &bob).await;
    let (mut a, mut b) = (app.ws(&alice).await, app.ws(&bob).await);
    for _ in 0..5 {
        a.send(json!({"type": "typing", "thread_id": thread})).await;
    }
    a.send(json!({"type": "message", "thread_id": thread, "text": "done typing", "client_msg_id": "t-1"})).await;
    assert_eq!(b.next().await["type"], "typing");
    let next = b.next().await;
    assert_eq!((next["type"].as_str(), next["message"]["text"].as_str()), (Some("new_message"), Some("done typing")));
}

#[tokio::test]
async fn a_sync_loop_is_paced_one_sync_per_interval() {
    let app = TestApp::spawn().await;
    let (alice, bob) = pair(&app).await;
    let thread = app.hire(&alice, &bob).await;
    app.say(&alice, &thread, "hello").await;
    let mut ws = app.ws(&alice).await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        ws.send(json!({"type": "sync", "threads": {}})).await;
    }
    let mut synced = Vec::new();
    while synced.len() < 3 {
        let event = ws.next().await;
        if event["type"] == "synced" {
            synced.push(started.elapsed());
        }
    }
    assert!(synced[0] < Duration::from_millis(900), "the first at once: {synced:?}");
    assert!(synced[2] >= Duration::from_secs(2), "then one a second: {synced:?}");
    ws.assert_nothing_pending().await;
}

#[tokio::test]
async fn sends_past_a_full_committer_queue_wait_for_room_and_are_all_stored_and_acked_in_order() {
    let app = TestApp::spawn_with(|c| {
        c.limits.send_queue = 4;
        c.limits.messages_per_second = 1_000;
        c.limits.message_burst = 1_000;
    })
    .await;
    let (alice, bob) = pair(&app).await;
    let thread = app.hire(&alice, &bob).await;
    let mut a = app.ws(&alice).await;

    // Another connection holds SQLite's write lock: the committer's first batch
    // waits for it, and the sends behind it fill the queue of 4.
    let db = rusqlite::Connection::open(app.data_dir.join("confab.db")).expect("the database opens");
    db.execute_batch("BEGIN IMMEDIATE").expect("the write lock");
    for i in 0..40 {
        a.send(
            json!({"type": "message", "thread_id": thread, "text": format!("m{i}"), "client_msg_id": format!("k-{i}")}),
        )
        .await;
    }
    a.send(json!({"type": "ping"})).await;
    let early = tokio::time::timeout(Duration::from_millis(500), a.next()).await;
    assert!(early.is_err(), "the connection waits for room and reads no frame meanwhile: {early:?}");

    db.execute_batch("ROLLBACK").expect("the write lock released");
    // The pong answers a frame read once the last send was queued, not stored, so
    // it may come before the last acks.
    let (mut keys, mut pong) = (Vec::new(), false);
    while keys.len() < 40 || !pong {
        let event = a.next().await;
        match event["type"].as_str() {
            Some("message_ack") => keys.push(event["client_msg_id"].as_str().unwrap().to_owned()),
            Some("pong") => pong = true,
            _ => panic!("only acks and the pong: {event}"),
        }
    }
    let sent: Vec<String> = (0..40).map(|i| format!("k-{i}")).collect();
    assert_eq!(keys, sent, "every send acked once, in the order sent");
    let stored = app.seqs(&bob, &thread).await;
    assert_eq!(stored, (1..=41).collect::<Vec<_>>(), "the hire's message and the 40");
}
