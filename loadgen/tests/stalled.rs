//! The `stalled` scenario against the real server: connections that stop reading
//! are closed by the server's write timeout, and the report counts them.

mod common;

use std::time::Duration;

use confab_loadgen::{stalled, users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_by_the_write_timeout_and_counted() {
    let (base, _dir) = common::confab(|c| {
        c.ws.write_timeout = Duration::from_millis(500);
        c.limits.max_text_chars = 16_000;
    })
    .await;
    let signed = users::sign_up(&base, "stall", 8, 4).await.unwrap();
    let options = stalled::Options {
        per_user: 3,
        flood: Duration::from_secs(3),
        text_len: 15_000,
        window: 8,
        settle: Duration::from_secs(2),
        server_pid: Some(std::process::id()),
    };
    let report = stalled::run(&base, &signed, &options).await.unwrap();
    assert_eq!((report.stalled_connections, report.senders), (12, 4), "{report:?}");
    assert!(report.messages_acked > 0 && report.send_errors.is_empty(), "{report:?}");
    assert_eq!(report.server_connections_after, Some(0.0), "every stalled connection was closed: {report:?}");
    let closed = report.server_write_timeout_closes.unwrap_or(0.0) + report.server_slow_consumer_closes.unwrap_or(0.0);
    // Each was closed for its queue, its writes, or first one and then the other.
    assert!((12.0..=24.0).contains(&closed), "{report:?}");
    assert!(report.server_rss_peak_per_stalled_kib.is_some());
}
