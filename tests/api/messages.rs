use std::collections::HashSet;

use futures::future::join_all;
use serde_json::json;

use crate::support::{TestApp, TestUser, assert_error};

async fn pair(app: &TestApp) -> (TestUser, TestUser, String) {
    let client = app.signup("carol", "client").await;
    let freelancer = app.signup("fred", "freelancer").await;
    let thread = app.hire(&client, &freelancer).await;
    (client, freelancer, thread)
}

#[tokio::test]
async fn a_message_sent_over_rest_has_every_field_of_the_contract() {
    let app = TestApp::spawn().await;
    let (client, freelancer, thread) = pair(&app).await;
    let (status, m) = app
        .post(
            &format!("/api/chat/threads/{thread}/messages/"),
            &freelancer.token,
            json!({"text": "Hi there!", "client_msg_id": "c-77f1"}),
        )
        .await;
    assert_eq!(status, 201);
    let keys: HashSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    let expected: HashSet<&str> = [
        "id",
        "thread_id",
        "seq",
        "kind",
        "sender",
        "recipient",
        "text",
        "metadata",
        "timestamp",
        "is_read",
        "client_msg_id",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);
    assert_eq!(m["thread_id"], thread);
    assert_eq!(m["seq"], 2);
    assert_eq!(m["kind"], "user");
    assert_eq!(m["sender"], json!({"id": freelancer.id, "username": "fred", "full_name": "Fred Freelancer"}));
    assert_eq!(m["recipient"], json!({"id": client.id, "username": "carol", "full_name": "Carol Client"}));
    assert_eq!(m["text"], "Hi there!");
    assert_eq!(m["metadata"], json!({}));
    assert_eq!(m["is_read"], false);
    assert_eq!(m["client_msg_id"], "c-77f1");
    let ts = m["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    assert!(uuid::Uuid::parse_str(m["id"].as_str().unwrap()).is_ok());

    let (_, page) = app.get(&format!("/api/chat/threads/{thread}/messages/"), &client.token).await;
    assert_eq!(page["results"][1], m, "history returns the stored message unchanged");
}

#[tokio::test]
async fn a_repeated_client_msg_id_returns_the_first_message_and_never_a_second() {
    let app = TestApp::spawn().await;
    let (client, _, thread) = pair(&app).await;
    let path = format!("/api/chat/threads/{thread}/messages/");
    let (s1, first) = app.post(&path, &client.token, json!({"text": "once", "client_msg_id": "k-1"})).await;
    let (s2, again) = app.post(&path, &client.token, json!({"text": "once", "client_msg_id": "k-1"})).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(again, first);
    // The same key with another text is another message under an old key: refused.
    let reused = app.post(&path, &client.token, json!({"text": "changed?", "client_msg_id": "k-1"})).await;
    assert_error(&reused, 409, "conflict");
    assert!(reused.1["detail"].as_str().unwrap().contains("k-1"), "{}", reused.1);

    let racing = (0..50).map(|_| app.post(&path, &client.token, json!({"text": "race", "client_msg_id": "k-2"})));
    let answers = join_all(racing).await;
    assert!(answers.iter().all(|(s, _)| *s == 201));
    assert_eq!(answers.iter().map(|(_, m)| m["id"].as_str().unwrap()).collect::<HashSet<_>>().len(), 1);
    assert_eq!(app.seqs(&client, &thread).await, vec![1, 2, 3]);
}

#[tokio::test]
async fn ten_concurrent_senders_leave_seqs_without_gap_or_repeat() {
    let app = TestApp::spawn().await;
    let (client, freelancer, thread) = pair(&app).await;
    let path = format!("/api/chat/threads/{thread}/messages/");
    let senders = (0..10).map(|i| {
        let (app, path) = (&app, &path);
        let user = if i % 2 == 0 { &client } else { &freelancer };
        async move {
            for n in 0..5 {
                let (status, _) = app.post(path, &user.token, json!({"text": format!("{i}-{n}")})).await;
                assert_eq!(status, 201);
            }
        }
    });
    join_all(senders).await;
    assert_eq!(app.seqs(&client, &thread).await, (1..=51).collect::<Vec<_>>());
}

#[tokio::test]
async fn history_pages_by_seq_cursor() {
    let app = TestApp::spawn().await;
    let (client, _, thread) = pair(&app).await;
    for i in 2..=12 {
        app.say(&client, &thread, &format!("m{i}")).await;
    }
    let page = |q: &str| {
        let path = format!("/api/chat/threads/{thread}/messages/?{q}");
        let token = client.token.clone();
        let (app, q) = (&app, q.to_owned());
        async move {
            let (status, body) = app.get(&path, &token).await;
            assert_eq!(status, 200, "{q}: {body}");
            let seqs: Vec<i64> =
                body["results"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
            (seqs, body["has_more"].as_bool().unwrap())
        }
    };
    assert_eq!(page("limit=3").await, (vec![10, 11, 12], true));
    assert_eq!(page("before_seq=10&limit=3").await, (vec![7, 8, 9], true));
    assert_eq!(page("before_seq=3&limit=3").await, (vec![1, 2], false));
    assert_eq!(page("after_seq=0&limit=4").await, (vec![1, 2, 3, 4], true));
    assert_eq!(page("after_seq=10").await, (vec![11, 12], false));
    assert_eq!(page("").await.0, (1..=12).collect::<Vec<_>>());
    // Both bounds: strictly between, the first `limit` of them.
    assert_eq!(page("after_seq=2&before_seq=9&limit=3").await, (vec![3, 4, 5], true));
    assert_eq!(page("before_seq=9&after_seq=5").await, (vec![6, 7, 8], false));
    assert_eq!(page("after_seq=5&before_seq=5").await, (vec![], false));
    for bad in
        ["limit=0", "limit=201", "limit=-1", "after_seq=-1", "before_seq=-5&after_seq=1", "after_seq=x", "cursor=3"]
    {
        let answer = app.get(&format!("/api/chat/threads/{thread}/messages/?{bad}"), &client.token).await;
        assert_error(&answer, 400, "validation_failed");
    }
}

#[tokio::test]
async fn bad_message_input_is_refused_and_stores_nothing() {
    let app = TestApp::spawn_with(|c| c.limits.max_text_chars = 20).await;
    let (client, _, thread) = pair(&app).await;
    let path = format!("/api/chat/threads/{thread}/messages/");
    for bad in [
        json!({"text": ""}),
        json!({"text": "   \n\t"}),
        json!({"text": "nul\u{0}"}),
        json!({"text": 5}),
        json!({"text": "ok", "client_msg_id": ""}),
        json!({"text": "ok", "client_msg_id": "x".repeat(101)}),
        json!({"text": "ok", "thread": "other"}),
        json!({}),
    ] {
        assert_error(&app.post(&path, &client.token, bad).await, 400, "validation_failed");
    }
    assert_error(&app.post(&path, &client.token, json!({"text": "x".repeat(21)})).await, 413, "payload_too_large");
    assert_error(&app.post_raw(&path, &client.token, b"{\"text\": \"unterminated").await, 400, "invalid_json");
    assert_error(&app.post_raw(&path, &client.token, b"text=hello").await, 400, "invalid_json");
    assert_eq!(
        app.post(&path, &client.token, json!({"text": "é".repeat(20)})).await.0,
        201,
        "the limit counts characters"
    );
    assert_eq!(app.seqs(&client, &thread).await, vec![1, 2]);
}

#[tokio::test]
async fn sql_and_html_in_a_message_are_stored_and_returned_verbatim() {
    let app = TestApp::spawn().await;
    let (client, freelancer, thread) = pair(&app).await;
    let text = "'; DROP TABLE messages; -- <script>alert(1)</script> & \u{1F389}";
    app.say(&client, &thread, text).await;
    let (_, page) = app.get(&format!("/api/chat/threads/{thread}/messages/"), &freelancer.token).await;
    assert_eq!(page["results"][1]["text"], text);
}

#[tokio::test]
async fn outsiders_get_404_for_a_thread_they_are_not_in() {
    let app = TestApp::spawn().await;
    let (client, _, thread) = pair(&app).await;
    let outsider = app.signup("olga", "freelancer").await;
    let base = format!("/api/chat/threads/{thread}");
    assert_error(&app.get(&format!("{base}/"), &outsider.token).await, 404, "not_found");
    assert_error(&app.get(&format!("{base}/messages/"), &outsider.token).await, 404, "not_found");
    assert_error(
        &app.post(&format!("{base}/messages/"), &outsider.token, json!({"text": "hi"})).await,
        404,
        "not_found",
    );
    assert_error(&app.post(&format!("{base}/read/"), &outsider.token, json!({})).await, 404, "not_found");
    let unknown = "/api/chat/threads/0192f1e0-0000-7000-8000-000000000000/";
    let never_existed = app.get(unknown, &outsider.token).await;
    assert_error(&never_existed, 404, "not_found");
    assert_eq!(never_existed.1, app.get(&format!("{base}/"), &outsider.token).await.1, "existence is not revealed");
    assert_error(&app.get("/api/chat/threads/not-a-uuid/", &client.token).await, 404, "not_found");
    assert_eq!(app.seqs(&client, &thread).await, vec![1]);
}

#[tokio::test]
async fn reading_moves_the_marker_and_the_unread_counts_follow() {
    let app = TestApp::spawn().await;
    let (client, freelancer, thread) = pair(&app).await;
    for text in ["one", "two", "three"] {
        app.say(&client, &thread, text).await;
    }
    let (_, t) = app.get(&format!("/api/chat/threads/{thread}/"), &freelancer.token).await;
    assert_eq!(t["unread_count"], 4);
    let (_, totals) = app.get("/api/messaging/unread/", &freelancer.token).await;
    assert_eq!(totals, json!({"total": 4, "threads": {thread.clone(): 4}}));
    let (_, from_client) =
        app.get(&format!("/api/messaging/messages/user/{}/unread/", client.id), &freelancer.token).await;
    assert_eq!(from_client, json!({"user_id": client.id, "unread_count": 3}));

    let read = format!("/api/chat/threads/{thread}/read/");
    assert_eq!(app.post(&read, &freelancer.token, json!({"up_to_seq": 2})).await, (200, json!({"unread_count": 2})));
    let (_, page) = app.get(&format!("/api/chat/threads/{thread}/messages/"), &client.token).await;
    let is_read: Vec<bool> =
        page["results"].as_array().unwrap().iter().map(|m| m["is_read"].as_bool().unwrap()).collect();
    assert_eq!(is_read, vec![true, true, false, false]);
    assert_eq!(app.post_raw(&read, &freelancer.token, b"").await, (200, json!({"unread_count": 0})), "default: all");
    let (_, totals) = app.get("/api/messaging/unread/", &freelancer.token).await;
    assert_eq!(totals, json!({"total": 0, "threads": {}}));
    assert_error(&app.post(&read, &freelancer.token, json!({"up_to_seq": -1})).await, 400, "validation_failed");
    assert_error(&app.post(&read, &freelancer.token, json!({"up_to_seq": "all"})).await, 400, "validation_failed");
}

#[tokio::test]
async fn the_inbox_lists_the_callers_threads_most_recent_first() {
    let app = TestApp::spawn().await;
    let client = app.signup("carol", "client").await;
    let f1 = app.signup("fred", "freelancer").await;
    let f2 = app.signup("gina", "freelancer").await;
    let t1 = app.hire(&client, &f1).await;
    let t2 = app.hire(&client, &f2).await;
    let ids = |inbox: &serde_json::Value| -> Vec<String> {
        inbox["results"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
    };
    let (_, inbox) = app.get("/api/chat/threads/", &client.token).await;
    assert_eq!(ids(&inbox), vec![t2.clone(), t1.clone()]);
    let reply = app.say(&f1, &t1, "bump").await;
    let (_, inbox) = app.get("/api/chat/threads/", &client.token).await;
    assert_eq!(ids(&inbox), vec![t1.clone(), t2.clone()]);
    assert_eq!(inbox["results"][0]["last_message"], reply);
    assert_eq!(inbox["results"][0]["unread_count"], 1);
    let (_, first) = app.get("/api/chat/threads/?limit=1", &client.token).await;
    assert_eq!((ids(&first), first["has_more"].clone()), (vec![t1], json!(true)));
    let next = first["next"].as_str().expect("a cursor to the next page").to_owned();
    let (_, second) = app.get(&format!("/api/chat/threads/?limit=1&cursor={next}"), &client.token).await;
    assert_eq!(
        (ids(&second), second["has_more"].clone(), second["next"].clone()),
        (vec![t2.clone()], json!(false), json!(null))
    );
    // Offset paging stays for older clients.
    let (_, legacy) = app.get("/api/chat/threads/?limit=1&offset=1", &client.token).await;
    assert_eq!((ids(&legacy), legacy["has_more"].clone()), (vec![t2], json!(false)));
    for bad in ["cursor=nope", "cursor=", "cursor=AAAA", &format!("cursor={next}&offset=1")] {
        assert_error(&app.get(&format!("/api/chat/threads/?{bad}"), &client.token).await, 400, "validation_failed");
    }
    let (_, theirs) = app.get("/api/chat/threads/", &f2.token).await;
    assert_eq!(theirs["results"].as_array().unwrap().len(), 1, "only the caller's own threads");
}

#[tokio::test]
async fn the_seed_messaging_routes_return_the_direct_conversation_oldest_first() {
    let app = TestApp::spawn().await;
    let (client, freelancer, thread) = pair(&app).await;
    app.say(&freelancer, &thread, "Hello!").await;
    app.say(&client, &thread, "Hi back").await;
    for path in [
        format!("/api/messaging/messages/?user_id={}", freelancer.id),
        format!("/api/messages/?user_id={}", freelancer.id),
    ] {
        let (status, page) = app.get(&path, &client.token).await;
        assert_eq!(status, 200);
        let texts: Vec<&str> =
            page["results"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, vec!["Client Carol Client started a conversation with you", "Hello!", "Hi back"]);
        assert_eq!(page["results"][1]["sender"]["id"], freelancer.id);
        assert_eq!(page["results"][1]["recipient"]["id"], client.id);
    }
    let stranger = app.signup("sam", "freelancer").await;
    let (status, empty) = app.get(&format!("/api/messaging/messages/?user_id={}", stranger.id), &client.token).await;
    assert_eq!((status, empty), (200, json!({"results": [], "has_more": false})));
    assert_error(&app.get("/api/messaging/messages/?user_id=999", &client.token).await, 404, "not_found");
    assert_error(&app.get("/api/messaging/messages/", &client.token).await, 400, "validation_failed");
    assert_error(&app.get("/api/messaging/messages/?user_id=abc", &client.token).await, 400, "validation_failed");
    assert_error(&app.get("/api/messaging/messages/user/999/unread/", &client.token).await, 404, "not_found");
}
