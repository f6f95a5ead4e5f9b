//! The `history` scenario against the real server: what it preloads is stored, and
//! every history page it reads is counted.

mod common;

use std::time::Duration;

use confab_loadgen::{history, pairs, users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_preloads_at_least_what_it_was_asked_then_measures_sends_and_pages() {
    let (base, _dir) = common::confab(|_| {}).await;
    let signed = users::sign_up(&base, "h", 4, 4).await.unwrap();
    let send = pairs::Options {
        window: 4,
        rate: None,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(500),
        grace: Duration::from_millis(500),
        verify_pairs: 2,
        server_pid: None,
        random_keys: false,
    };
    let options = history::Options { preload: 200, send, pages: 20, page_limit: 10 };
    let report = history::run(std::slice::from_ref(&base), &signed, &options).await.unwrap();
    assert!(report.preloaded >= 200, "{report:?}");
    assert!(report.send.acked > 0 && report.send.lost_undelivered == 0, "{report:?}");
    assert_eq!(report.send.lost_in_store, Some(0), "{report:?}");
    assert_eq!((report.page_ms.count, report.page_errors), (20, 0), "{report:?}");
    // The preload really is in the store: the first pair's history holds its share.
    let client = reqwest::Client::new();
    let page: serde_json::Value = client
        .get(format!("{base}/api/messaging/messages/?user_id={}&limit=1", signed[1].id))
        .bearer_auth(&signed[0].token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newest = page["results"][0]["seq"].as_i64().unwrap();
    assert!(newest as u64 >= report.preloaded / 4, "a pair holds about half of all: {newest} of {}", report.preloaded);
}
