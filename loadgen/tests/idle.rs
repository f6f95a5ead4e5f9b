//! The `idle` scenario against the real server: every connection opened is counted,
//! and the sample proves delivery to every connection of each recipient.

mod common;

use std::time::Duration;

use confab_loadgen::{idle, users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_counted_held_and_proven_live() {
    let (base, _dir) = common::confab(|_| {}).await;
    let signed = users::sign_up(&base, "idle", 10, 4).await.unwrap();
    let options = idle::Options {
        connections: 40,
        concurrency: 8,
        hold: Duration::from_millis(200),
        sample: 5,
        server_pid: Some(std::process::id()),
        steady: Duration::ZERO,
    };
    let report = idle::run(&base, &signed, &options).await.unwrap();
    assert_eq!((report.opened, report.failed, report.open_after_hold), (40, 0, 40), "{report:?}");
    assert!(report.connections_per_second > 0.0);
    assert!(report.server_rss_per_connection_kib.is_some());
    assert_eq!(report.sample_sent, 5);
    assert_eq!(report.sample_acked, 5, "{report:?}");
    // Each recipient has 4 connections and each sender 3 others: 7 deliveries a message.
    assert_eq!(report.sample_expected_deliveries, 35, "{report:?}");
    assert_eq!(report.sample_delivered, 35, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted_as_failed_or_not_held() {
    let (base, _dir) = common::confab(|c| {
        c.ws.max_connections_per_user = 2;
    })
    .await;
    let signed = users::sign_up(&base, "idle", 2, 2).await.unwrap();
    let options = idle::Options {
        connections: 6,
        concurrency: 1,
        hold: Duration::from_millis(100),
        sample: 0,
        server_pid: None,
        steady: Duration::ZERO,
    };
    let report = idle::run(&base, &signed, &options).await.unwrap();
    // The server refuses a user's third connection at the handshake (429), or, when
    // the second's session has not registered yet, just after it (a 1008 close).
    assert_eq!(report.open_after_hold, 4, "two users, two connections each: {report:?}");
    assert_eq!(report.failed + (report.opened - report.open_after_hold), 2, "{report:?}");
    assert_eq!(report.errors.values().sum::<u64>(), report.failed as u64);
}
