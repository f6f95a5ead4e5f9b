use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::cluster::{Cluster, OwnRedis, redis_url};
use crate::link::{Link, Mode};
use crate::support::{TestApp, TestUser, WAIT};

fn seq(event: &Value) -> i64 {
    event["message"]["seq"].as_i64().unwrap()
}

async fn replay(client: &mut crate::support::WsClient) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let event = client.next().await;
        if event["type"] == "synced" {
            return events;
        }
        events.push(event);
    }
}

/// Registers `alice` (client) and `bob` (freelancer) through node 0 and opens their thread.
async fn pair(cluster: &Cluster) -> (TestUser, TestUser, String) {
    let a = &cluster.nodes[0];
    let alice = a.signup("alice", "client").await;
    let bob = a.signup("bob", "freelancer").await;
    let thread = a.hire(&alice, &bob).await;
    (alice, bob, thread)
}

#[tokio::test]
async fn users_on_different_nodes_exchange_messages_both_ways_on_every_device() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (alice, bob, thread) = pair(&cluster).await;
    let (mut alice_a, mut alice_b, mut bob_b) = (a.ws(&alice).await, b.ws(&alice).await, b.ws(&bob).await);
    cluster.wait_subscribed(alice.id, 2).await;
    cluster.wait_subscribed(bob.id, 1).await;

    alice_a.send(json!({"type": "message", "thread_id": thread, "text": "from node A", "client_msg_id": "a-1"})).await;
    let ack = alice_a.next().await;
    assert_eq!((ack["type"].as_str(), seq(&ack)), (Some("message_ack"), 2));
    for device in [&mut alice_b, &mut bob_b] {
        let event = device.next().await;
        assert_eq!(event["type"], "new_message");
        assert_eq!(event["message"], ack["message"]);
    }

    bob_b.send(json!({"type": "message", "recipient_id": alice.id, "text": "from node B"})).await;
    assert_eq!(bob_b.next().await["type"], "message_ack");
    for device in [&mut alice_a, &mut alice_b] {
        let event = device.next().await;
        assert_eq!((event["message"]["text"].as_str(), seq(&event)), (Some("from node B"), 3));
    }

    // Typing and read receipts cross nodes too, to the other participant only.
    alice_a.send(json!({"type": "typing", "thread_id": thread})).await;
    assert_eq!(bob_b.next().await["type"], "typing");
    bob_b.send(json!({"type": "read", "thread_id": thread, "up_to_seq": 2})).await;
    for device in [&mut alice_a, &mut alice_b] {
        assert_eq!(
            device.next().await,
            json!({"type": "read", "thread_id": thread, "user_id": bob.id, "up_to_seq": 2})
        );
    }
    for device in [&mut alice_a, &mut alice_b, &mut bob_b] {
        device.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn concurrent_calls_spread_over_nodes_stay_exactly_once() {
    let cluster = Cluster::start(3).await;
    let a = &cluster.nodes[0];
    let client = a.signup("carol", "client").await;
    let freelancer = a.signup("fred", "freelancer").await;
    let hires = (0..30).map(|i| {
        let node = &cluster.nodes[i % 3];
        node.post("/api/chat/hire-freelancer/", &client.token, json!({"freelancer_id": freelancer.id}))
    });
    let answers = join_all(hires).await;
    assert_eq!(answers.iter().filter(|(s, _)| *s == 201).count(), 1);
    assert_eq!(answers.iter().filter(|(s, _)| *s == 200).count(), 29);
    let ids: HashSet<&str> = answers.iter().map(|(_, b)| b["thread"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1);
    let thread = ids.into_iter().next().unwrap().to_owned();

    let sends = (0..30).map(|i| {
        let node = &cluster.nodes[i % 3];
        let path = format!("/api/chat/threads/{thread}/messages/");
        let token = client.token.clone();
        async move { node.post(&path, &token, json!({"text": "once", "client_msg_id": "same"})).await }
    });
    let answers = join_all(sends).await;
    assert!(answers.iter().all(|(s, _)| *s == 201));
    assert_eq!(answers.iter().map(|(_, m)| m["id"].as_str().unwrap()).collect::<HashSet<_>>().len(), 1);

    let racing = (0..3).map(|n| {
        let (node, thread) = (&cluster.nodes[n], thread.clone());
        let user = if n == 1 { freelancer.clone() } else { client.clone() };
        async move {
            for i in 0..10 {
                let path = format!("/api/chat/threads/{thread}/messages/");
                assert_eq!(node.post(&path, &user.token, json!({"text": format!("{n}-{i}")})).await.0, 201);
            }
        }
    });
    join_all(racing).await;
    assert_eq!(a.seqs(&client, &thread).await, (1..=32).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stopped_nodes_clients_reconnect_to_another_node_and_sync_without_loss() {
    let mut cluster = Cluster::start(2).await;
    let (alice, bob, thread) = pair(&cluster).await;
    let mut bob_a = cluster.nodes[0].ws(&bob).await;
    let mut alice_b = cluster.nodes[1].ws(&alice).await;
    cluster.wait_subscribed(bob.id, 1).await;
    for n in 0..10 {
        alice_b.send(json!({"type": "message", "thread_id": thread, "text": format!("before {n}")})).await;
        assert_eq!(alice_b.next().await["type"], "message_ack");
    }
    let mut last = 1;
    for _ in 0..10 {
        last = seq(&bob_a.next().await);
    }
    assert_eq!(last, 11);

    cluster.nodes[0].stop().await;
    assert_eq!(bob_a.until_close().await.0, 1001);
    for n in 0..10 {
        alice_b.send(json!({"type": "message", "thread_id": thread, "text": format!("while away {n}")})).await;
        assert_eq!(alice_b.next().await["type"], "message_ack");
    }

    let mut bob_b = cluster.nodes[1].ws(&bob).await;
    bob_b.send(json!({"type": "sync", "threads": {thread.clone(): last}})).await;
    let missed = replay(&mut bob_b).await;
    assert_eq!(missed.iter().map(seq).collect::<Vec<_>>(), (12..=21).collect::<Vec<_>>());
    assert_eq!(missed[0]["message"]["text"], "while away 0");
}

#[tokio::test]
async fn a_redis_restart_mid_conversation_loses_nothing_acked() {
    let mut redis = OwnRedis::start().await;
    let cluster = Cluster::start_on(2, redis.url()).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (alice, bob, thread) = pair(&cluster).await;
    let mut alice_a = a.ws(&alice).await;
    let mut bob_b = b.ws(&bob).await;
    cluster.wait_subscribed(bob.id, 1).await;
    alice_a.send(json!({"type": "message", "thread_id": thread, "text": "before"})).await;
    assert_eq!(alice_a.next().await["type"], "message_ack");
    assert_eq!(seq(&bob_b.next().await), 2);

    redis.stop();
    let ready = |node: &TestApp| node.client.get(node.url("/readyz")).send();
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready(a).await.unwrap().status() != 503 {
        assert!(tokio::time::Instant::now() < deadline, "readyz never reported the bus down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body: Value = ready(a).await.unwrap().json().await.unwrap();
    assert_eq!((body["bus"].as_str(), body["database"].as_str()), (Some("unavailable"), Some("ok")));

    // Sending goes on while the bus is away: stored, acked, and delivered on this node.
    let mut alice_a2 = a.ws(&alice).await;
    for n in 0..5 {
        alice_a.send(json!({"type": "message", "thread_id": thread, "text": format!("during {n}"), "client_msg_id": format!("d{n}")})).await;
        assert_eq!(alice_a.next().await["type"], "message_ack");
        assert_eq!(alice_a2.next().await["message"]["text"], format!("during {n}"));
    }

    redis.restart().await;
    // Once the bus is back, connections that may have missed events are closed so they sync.
    assert_eq!(bob_b.until_close().await.0, 1013);
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready(b).await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "readyz never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bob_again = b.ws(&bob).await;
    bob_again.send(json!({"type": "sync", "threads": {thread.clone(): 2}})).await;
    let missed = replay(&mut bob_again).await;
    let texts: Vec<&str> = missed.iter().map(|e| e["message"]["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["during 0", "during 1", "during 2", "during 3", "during 4"]);

    // And live delivery across nodes works again.
    cluster.wait_subscribed(bob.id, 1).await;
    let mut alice_a3 = a.ws(&alice).await;
    alice_a3.send(json!({"type": "message", "thread_id": thread, "text": "after"})).await;
    assert_eq!(alice_a3.next().await["type"], "message_ack");
    assert_eq!(bob_again.next().await["message"]["text"], "after");
}

/// Reads one device's events of a round: `expected` messages of `thread`, each the
/// next seq after `last`, acks included; a `read` event may only name a message
/// this connection already has. Returns the new last seq.
async fn round_on(
    device: &mut crate::support::WsClient,
    thread: &str,
    mut last: i64,
    expected: usize,
    label: &str,
) -> i64 {
    let mut messages = 0;
    while messages < expected {
        let event = device.next().await;
        match event["type"].as_str() {
            Some("new_message" | "message_ack") => {
                assert_eq!(event["message"]["thread_id"], thread, "{label}");
                assert_eq!(seq(&event), last + 1, "{label}: seqs strictly increasing, no gap: {event}");
                last += 1;
                messages += 1;
                if messages == expected / 2 {
                    device.send(json!({"type": "read", "thread_id": thread, "up_to_seq": last})).await;
                }
            }
            Some("read") => {
                let up_to = event["up_to_seq"].as_i64().unwrap();
                assert!(up_to <= last, "{label}: read of {up_to} before message {up_to} (at {last})");
            }
            _ => panic!("{label}: unexpected event {event}"),
        }
    }
    last
}

#[tokio::test]
async fn every_connection_sees_the_thread_in_seq_order_while_devices_on_both_nodes_send_at_once() {
    const PER_DEVICE: usize = 25;
    // Node B hears node A (and A hears B) 5 ms late through the bus, so B's own later
    // messages reach B's connections first unless the writers put them in order.
    let redis_port = redis_url().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(6379);
    let laggy = Link::start(format!("127.0.0.1:{redis_port}"), Mode::Lag(Duration::from_millis(5))).await;
    let cluster = Cluster::start_each(vec![redis_url(), laggy.redis_url()]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (alice, bob, thread) = pair(&cluster).await;
    let mut devices = vec![a.ws(&alice).await, b.ws(&alice).await, a.ws(&bob).await, b.ws(&bob).await];
    cluster.wait_subscribed(alice.id, 2).await;
    cluster.wait_subscribed(bob.id, 2).await;
    // Like the web app, each device syncs first, so it knows where the thread stands.
    for device in &mut devices {
        device.send(json!({"type": "sync", "threads": {}})).await;
        let replayed = replay(device).await;
        assert_eq!(replayed.iter().map(seq).collect::<Vec<_>>(), vec![1]);
    }
    let mut last = vec![1; devices.len()];
    for round in 0..5 {
        let sends = devices.iter_mut().enumerate().map(|(d, device)| {
            let thread = thread.clone();
            async move {
                for n in 0..PER_DEVICE {
                    let key = format!("r{round}-d{d}-{n}");
                    device
                        .send(json!({"type": "message", "thread_id": thread, "text": key, "client_msg_id": key}))
                        .await;
                }
            }
        });
        join_all(sends).await;
        let expected = PER_DEVICE * devices.len();
        for (d, device) in devices.iter_mut().enumerate() {
            last[d] = round_on(device, &thread, last[d], expected, &format!("round {round}, device {d}")).await;
        }
        assert!(last.iter().all(|l| *l == last[0]), "every device reached the same seq: {last:?}");
    }
    // Nothing else is pending but the read receipts of the last round.
    for (d, device) in devices.iter_mut().enumerate() {
        device.send(json!({"type": "ping"})).await;
        loop {
            let event = device.next().await;
            match event["type"].as_str() {
                Some("pong") => break,
                Some("read") => assert!(event["up_to_seq"].as_i64().unwrap() <= last[d], "{event}"),
                _ => panic!("device {d}: unexpected event {event}"),
            }
        }
    }
    let (_, stored) = a.get(&format!("/api/chat/threads/{thread}/"), &alice.token).await;
    assert_eq!(stored["last_message"]["seq"].as_i64(), Some(last[0]), "every stored message was delivered");
}
