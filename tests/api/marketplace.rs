use serde_json::json;

use crate::support::{TestApp, assert_error};

#[tokio::test]
async fn signed_in_users_see_the_demo_freelancers_with_their_profiles() {
    let app = TestApp::spawn_demo().await;
    let client = app.login("testclient").await;
    let (status, page) = app.get("/api/freelancers/?limit=2", &client.token).await;
    assert_eq!(status, 200);
    assert_eq!(page["has_more"], true);
    assert_eq!(
        page["results"][0],
        json!({"id": 2, "username": "testfreelancer", "full_name": "Test Freelancer", "role": "freelancer",
            "headline": "Full-stack developer: React, Django and Rust",
            "skills": ["React", "Django", "Rust", "PostgreSQL"], "hourly_rate": 65.0})
    );
    let (status, all) = app.get("/api/freelancers/", &client.token).await;
    assert_eq!(status, 200);
    assert!(all["results"].as_array().unwrap().len() >= 5);
    assert!(all["results"].as_array().unwrap().iter().all(|f| f["role"] == "freelancer"));

    let (status, one) = app.get("/api/freelancers/2/", &client.token).await;
    assert_eq!((status, one["username"].clone()), (200, json!("testfreelancer")));
    assert_error(&app.get("/api/freelancers/1/", &client.token).await, 404, "not_found");
    assert_error(&app.get("/api/freelancers/abc/", &client.token).await, 404, "not_found");
    assert_error(&app.get("/api/freelancers/99999999999999999999/", &client.token).await, 404, "not_found");
    assert_error(&app.get("/api/freelancers/?limit=0", &client.token).await, 400, "validation_failed");
    assert_error(&app.get("/api/freelancers/?limit=201", &client.token).await, 400, "validation_failed");
    assert_error(&app.get("/api/freelancers/?limit=x", &client.token).await, 400, "validation_failed");
    assert_error(&app.send(reqwest::Method::GET, "/api/freelancers/", None, None).await, 401, "unauthorized");
}

#[tokio::test]
async fn clients_post_jobs_that_everyone_signed_in_can_read() {
    let app = TestApp::spawn().await;
    let client = app.signup("carol", "client").await;
    let freelancer = app.signup("fred", "freelancer").await;
    let (status, job) =
        app.post("/api/jobs/", &client.token, json!({"title": "Build a <b>site</b>", "description": "Soon."})).await;
    assert_eq!(status, 201);
    assert_eq!(job["title"], "Build a <b>site</b>");
    assert_eq!(job["status"], "open");
    assert_eq!(
        job["client"],
        json!({"id": client.id, "username": "carol", "full_name": "Carol Client", "role": "client"})
    );
    assert!(job["created_at"].as_str().unwrap().ends_with('Z'));
    let id = job["id"].as_i64().unwrap();

    let (status, read) = app.get(&format!("/api/jobs/{id}/"), &freelancer.token).await;
    assert_eq!((status, read), (200, job.clone()));
    let (_, list) = app.get("/api/jobs/", &freelancer.token).await;
    assert_eq!(list, json!({"results": [job], "has_more": false}));

    let by_freelancer = app.post("/api/jobs/", &freelancer.token, json!({"title": "T", "description": "D"})).await;
    assert_error(&by_freelancer, 403, "forbidden");
    assert_error(
        &app.post("/api/jobs/", &client.token, json!({"title": "", "description": "D"})).await,
        400,
        "validation_failed",
    );
    assert_error(&app.post("/api/jobs/", &client.token, json!({"title": "T"})).await, 400, "validation_failed");
    assert_error(&app.get("/api/jobs/999/", &client.token).await, 404, "not_found");
    let (_, list) = app.get("/api/jobs/", &freelancer.token).await;
    assert_eq!(list["results"].as_array().unwrap().len(), 1, "refused posts stored nothing");
}

#[tokio::test]
async fn a_proposal_is_stored_with_its_job_thread_and_system_message() {
    let app = TestApp::spawn().await;
    let client = app.signup("carol", "client").await;
    let freelancer = app.signup("fred", "freelancer").await;
    let (_, job) = app.post("/api/jobs/", &client.token, json!({"title": "Logo", "description": "A logo"})).await;
    let path = format!("/api/jobs/{}/proposals/", job["id"]);
    let (status, body) =
        app.post(&path, &freelancer.token, json!({"cover_letter": "I can do it", "bid_amount": "250.50"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], true);
    assert_eq!(body["proposal"]["bid_amount"], 250.5);
    assert_eq!(body["proposal"]["cover_letter"], "I can do it");
    assert_eq!(body["proposal"]["job_id"], job["id"]);
    let thread = &body["thread"];
    assert_eq!(body["proposal"]["thread_id"], thread["id"]);
    assert_eq!(body["redirect_url"], format!("/dashboard/inbox/{}", thread["id"].as_str().unwrap()));
    assert_eq!(thread["kind"], "job");
    assert_eq!(thread["job"], json!({"id": job["id"], "title": "Logo"}));
    assert_eq!(thread["last_message"]["text"], "Freelancer Fred Freelancer has submitted a proposal for job: Logo");

    // The client sees it as unread; the proposal-chat workflow finds the same thread.
    let (_, for_client) =
        app.get(&format!("/api/chat/threads/{}/", thread["id"].as_str().unwrap()), &client.token).await;
    assert_eq!(for_client["unread_count"], 1);
    let (status, chat) = app.post("/api/chat/proposal-chat/", &freelancer.token, json!({"job_id": job["id"]})).await;
    assert_eq!((status, &chat["thread"]["id"]), (200, &thread["id"]));

    let again = app.post(&path, &freelancer.token, json!({"cover_letter": "Again", "bid_amount": 1})).await;
    assert_error(&again, 409, "conflict");
    let thread_id = thread["id"].as_str().unwrap();
    assert_eq!(app.seqs(&client, thread_id).await, vec![1], "the refused proposal wrote nothing");
}

#[tokio::test]
async fn proposals_are_refused_with_the_contracts_codes() {
    let app = TestApp::spawn().await;
    let client = app.signup("carol", "client").await;
    let freelancer = app.signup("fred", "freelancer").await;
    let (_, job) = app.post("/api/jobs/", &client.token, json!({"title": "Logo", "description": "A logo"})).await;
    let path = format!("/api/jobs/{}/proposals/", job["id"]);
    let ok = json!({"cover_letter": "Hi", "bid_amount": 10});
    assert_error(&app.post(&path, &client.token, ok.clone()).await, 403, "forbidden");
    assert_error(&app.post("/api/jobs/999/proposals/", &freelancer.token, ok).await, 404, "not_found");
    for bad in [
        json!({"cover_letter": "Hi", "bid_amount": -1}),
        json!({"cover_letter": "Hi", "bid_amount": 10.001}),
        json!({"cover_letter": "Hi", "bid_amount": "ten"}),
        json!({"cover_letter": "", "bid_amount": 10}),
        json!({"bid_amount": 10}),
        json!({"cover_letter": "Hi", "bid_amount": 10, "extra": 1}),
    ] {
        assert_error(&app.post(&path, &freelancer.token, bad).await, 400, "validation_failed");
    }
    let (_, inbox) = app.get("/api/chat/threads/", &client.token).await;
    assert_eq!(inbox["results"], json!([]), "no refused proposal opened a thread");
}
