use futures::future::join_all;
use serde_json::json;

use crate::support::{TestApp, TestUser, assert_error};

#[tokio::test]
async fn hire_me_creates_the_direct_thread_with_the_seed_system_message() {
    let app = TestApp::spawn_demo().await;
    let client = app.login("testclient").await;
    let freelancer = app.login("testfreelancer").await;
    let (status, body) =
        app.post("/api/chat/hire-freelancer/", &client.token, json!({"freelancer_id": freelancer.id})).await;
    assert_eq!(status, 201);
    assert_eq!(body["created"], true);
    let thread = &body["thread"];
    let id = thread["id"].as_str().unwrap();
    assert_eq!(body["redirect_url"], format!("/dashboard/inbox/{id}"));
    assert_eq!(thread["kind"], "direct");
    assert_eq!(thread["job"], json!(null));
    assert_eq!(
        thread["participants"],
        json!([
            {"id": 1, "username": "testclient", "full_name": "Test Client", "role": "client"},
            {"id": 2, "username": "testfreelancer", "full_name": "Test Freelancer", "role": "freelancer"}
        ])
    );
    assert_eq!(thread["unread_count"], 0, "the client caused the system message");
    let m = &thread["last_message"];
    assert_eq!(m["kind"], "system");
    assert_eq!(m["seq"], 1);
    assert_eq!(m["sender"], json!(null));
    assert_eq!(m["text"], "Client Test Client started a conversation with you");
    assert_eq!(
        m["metadata"],
        json!({"action": "hire_freelancer", "client_id": 1, "client_name": "Test Client",
            "freelancer_id": 2, "freelancer_name": "Test Freelancer"})
    );
    assert_eq!(m["recipient"], json!({"id": 2, "username": "testfreelancer", "full_name": "Test Freelancer"}));

    let (_, for_freelancer) = app.get(&format!("/api/chat/threads/{id}/"), &freelancer.token).await;
    assert_eq!(for_freelancer["unread_count"], 1);
}

#[tokio::test]
async fn hire_me_again_answers_200_with_the_same_thread_and_no_second_message() {
    let app = TestApp::spawn_demo().await;
    let client = app.login("testclient").await;
    let freelancer = app.login("testfreelancer").await;
    let first = app.hire(&client, &freelancer).await;
    app.say(&freelancer, &first, "Hello!").await;
    let (status, body) =
        app.post("/api/chat/hire-freelancer", &client.token, json!({"freelancer_id": freelancer.id.to_string()})).await;
    assert_eq!(status, 200);
    assert_eq!((body["created"].clone(), body["thread"]["id"].as_str().unwrap()), (json!(false), first.as_str()));
    assert_eq!(app.seqs(&client, &first).await, vec![1, 2]);
}

#[tokio::test]
async fn fifty_concurrent_hire_calls_make_one_thread_and_one_system_message() {
    let app = TestApp::spawn_demo().await;
    let client = app.login("testclient").await;
    let freelancer = app.login("testfreelancer").await;
    let calls =
        (0..50).map(|_| app.post("/api/chat/hire-freelancer/", &client.token, json!({"freelancer_id": freelancer.id})));
    let answers = join_all(calls).await;
    assert_eq!(answers.iter().filter(|(s, _)| *s == 201).count(), 1, "created exactly once");
    assert_eq!(answers.iter().filter(|(s, _)| *s == 200).count(), 49);
    let ids: std::collections::HashSet<&str> =
        answers.iter().map(|(_, b)| b["thread"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1);
    let id = ids.into_iter().next().unwrap();
    assert_eq!(app.seqs(&client, id).await, vec![1]);
    let (_, inbox) = app.get("/api/chat/threads/", &freelancer.token).await;
    assert_eq!(inbox["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn hire_me_is_refused_with_the_contracts_codes_and_changes_nothing() {
    let app = TestApp::spawn_demo().await;
    let client = app.login("testclient").await;
    let freelancer = app.login("testfreelancer").await;
    let other_client = app.login("erin").await;
    let hire = |user: &TestUser, body| {
        let (app, token) = (&app, user.token.clone());
        async move { app.post("/api/chat/hire-freelancer/", &token, body).await }
    };
    assert_error(&hire(&freelancer, json!({"freelancer_id": client.id})).await, 403, "forbidden");
    assert_error(&hire(&client, json!({"freelancer_id": 9999})).await, 404, "not_found");
    assert_error(&hire(&client, json!({"freelancer_id": client.id})).await, 400, "validation_failed");
    assert_error(&hire(&client, json!({"freelancer_id": other_client.id})).await, 400, "validation_failed");
    for bad in [
        json!({}),
        json!({"freelancer_id": "abc"}),
        json!({"freelancer_id": -1}),
        json!({"freelancer_id": 0}),
        json!({"freelancer_id": 1e30}),
        json!({"freelancer_id": null}),
        json!({"freelancer_id": 2, "job_id": 3}),
        json!([2]),
    ] {
        assert_error(&hire(&client, bad).await, 400, "validation_failed");
    }
    assert_error(
        &app.post_raw("/api/chat/hire-freelancer/", &client.token, b"{freelancer_id: 2}").await,
        400,
        "invalid_json",
    );
    assert_error(&app.post_anon("/api/chat/hire-freelancer/", json!({"freelancer_id": 2})).await, 401, "unauthorized");
    for user in [&client, &freelancer, &other_client] {
        let (_, inbox) = app.get("/api/chat/threads/", &user.token).await;
        assert_eq!(inbox["results"], json!([]), "no thread was created");
    }
}

#[tokio::test]
async fn proposal_chat_opens_a_job_thread_apart_from_the_direct_thread() {
    let app = TestApp::spawn_demo().await;
    let client = app.login("testclient").await;
    let freelancer = app.login("testfreelancer").await;
    let direct = app.hire(&client, &freelancer).await;
    let (_, jobs) = app.get("/api/jobs/", &freelancer.token).await;
    let job = jobs["results"].as_array().unwrap().iter().find(|j| j["client"]["id"] == client.id).unwrap().clone();
    let (status, body) = app.post("/api/chat/proposal-chat/", &freelancer.token, json!({"job_id": job["id"]})).await;
    assert_eq!(status, 201);
    let thread = &body["thread"];
    assert_ne!(thread["id"].as_str().unwrap(), direct);
    assert_eq!(thread["kind"], "job");
    assert_eq!(thread["job"], json!({"id": job["id"], "title": job["title"]}));
    assert_eq!(body["redirect_url"], format!("/dashboard/inbox/{}", thread["id"].as_str().unwrap()));
    let m = &thread["last_message"];
    assert_eq!(
        m["text"],
        format!("Freelancer Test Freelancer has submitted a proposal for job: {}", job["title"].as_str().unwrap())
    );
    assert_eq!(
        m["metadata"],
        json!({"action": "proposal", "job_id": job["id"], "job_title": job["title"], "freelancer_id": 2,
            "freelancer_name": "Test Freelancer", "client_id": 1})
    );
    let (status, again) = app.post("/api/chat/proposal-chat", &freelancer.token, json!({"job_id": job["id"]})).await;
    assert_eq!((status, again["created"].clone(), &again["thread"]["id"]), (200, json!(false), &thread["id"]));

    let concurrent = join_all(
        (0..20).map(|_| app.post("/api/chat/proposal-chat/", &freelancer.token, json!({"job_id": job["id"]}))),
    )
    .await;
    assert!(concurrent.iter().all(|(s, b)| *s == 200 && b["thread"]["id"] == thread["id"]));
    assert_eq!(app.seqs(&client, thread["id"].as_str().unwrap()).await, vec![1]);

    assert_error(
        &app.post("/api/chat/proposal-chat/", &client.token, json!({"job_id": job["id"]})).await,
        403,
        "forbidden",
    );
    assert_error(
        &app.post("/api/chat/proposal-chat/", &freelancer.token, json!({"job_id": 999})).await,
        404,
        "not_found",
    );
    assert_error(
        &app.post("/api/chat/proposal-chat/", &freelancer.token, json!({"job_id": "x"})).await,
        400,
        "validation_failed",
    );
}

#[tokio::test]
async fn workflows_are_rate_limited_per_user() {
    let app = TestApp::spawn_with(|c| {
        c.limits.workflows_per_minute = 1;
        c.limits.workflow_burst = 3;
    })
    .await;
    let client = app.signup("carla", "client").await;
    let other = app.signup("otto", "client").await;
    let mut freelancers = Vec::new();
    for n in 0..4 {
        freelancers.push(app.signup(&format!("f{n}"), "freelancer").await);
    }
    for f in &freelancers[..3] {
        assert_eq!(app.post("/api/chat/hire-freelancer/", &client.token, json!({"freelancer_id": f.id})).await.0, 201);
    }
    let refused =
        app.post("/api/chat/hire-freelancer/", &client.token, json!({"freelancer_id": freelancers[3].id})).await;
    assert_error(&refused, 429, "rate_limited");
    // Nothing was opened by the refusal; another user is not limited by it.
    let (_, inbox) = app.get("/api/chat/threads/", &freelancers[3].token).await;
    assert_eq!(inbox["results"].as_array().unwrap().len(), 0);
    assert_eq!(
        app.post("/api/chat/hire-freelancer/", &other.token, json!({"freelancer_id": freelancers[3].id})).await.0,
        201
    );
}
