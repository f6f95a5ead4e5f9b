//! Behaviours every [`Store`] must show, one `async fn` each, run by
//! `tests/store.rs` against every implementation on a fresh database. They panic
//! on failure like any test.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::join_all;
use serde_json::json;

use confab::domain::{
    ClientMsgId, Cursor, JobId, JobStatus, MessageKind, Money, PageRequest, Profile, Role, Seq, SystemMessage,
    ThreadId, Timestamp, User, UserId,
};
use confab::store::{
    Delivery, EventKind, ExternalJob, ExternalUser, InboxFrom, NewJob, NewMessage, NewProposal, NewSystemMessage,
    NewUser, OpenThread, RefreshToken, Rotation, Store, StoreError, ThreadKey,
};

async fn user(store: &dyn Store, name: &str, role: Role) -> User {
    store
        .create_user(NewUser {
            username: name.to_owned(),
            password_hash: "not-a-real-hash".to_owned(),
            full_name: format!("{name} Person"),
            role,
            profile: Profile::default(),
        })
        .await
        .unwrap()
}

fn system(actor: &User, text: &str) -> Option<SystemMessage> {
    Some(SystemMessage { actor: actor.id, text: text.to_owned(), metadata: json!({"action": "test"}) })
}

async fn direct(store: &dyn Store, a: &User, b: &User) -> ThreadId {
    let open = OpenThread { key: ThreadKey::Direct { a: a.id, b: b.id }, first_message: None };
    store.open_thread(open).await.unwrap().thread_id
}

async fn send(
    store: &dyn Store,
    thread: ThreadId,
    from: &User,
    text: &str,
    key: Option<&str>,
) -> confab::store::Appended {
    let new = NewMessage {
        thread_id: thread,
        sender: from.id,
        text: text.to_owned(),
        client_msg_id: key.map(|k| ClientMsgId::parse(k).unwrap()),
    };
    store.append_message(new).await.unwrap()
}

pub(crate) async fn a_taken_username_is_a_conflict(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice", Role::Client).await;
    let again = store
        .create_user(NewUser {
            username: "alice".to_owned(),
            password_hash: "h".to_owned(),
            full_name: "Other".to_owned(),
            role: Role::Freelancer,
            profile: Profile::default(),
        })
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.user(alice.id).await.unwrap(), Some(alice.clone()));
    let (found, hash) = store.credentials("alice").await.unwrap().unwrap();
    assert_eq!((found, hash.as_str()), (alice, "not-a-real-hash"));
    assert!(store.credentials("nobody").await.unwrap().is_none());
}

pub(crate) async fn profiles_and_jobs_round_trip_and_page(store: Arc<dyn Store>) {
    let client = user(&*store, "client", Role::Client).await;
    let mut freelancers = Vec::new();
    for i in 0..3 {
        let f = user(&*store, &format!("f{i}"), Role::Freelancer).await;
        let profile = Profile {
            headline: format!("Headline {i}"),
            skills: vec!["Rust".to_owned(), format!("skill {i}")],
            hourly_rate: Some(Money::from_cents(1050 + i)),
        };
        store.set_profile(f.id, &profile).await.unwrap();
        freelancers.push(f);
    }
    let first = store.freelancers(PageRequest { limit: 2, offset: 0 }).await.unwrap();
    assert!(first.has_more);
    assert_eq!(first.results.len(), 2);
    assert_eq!(first.results[0].user, freelancers[0]);
    assert_eq!(first.results[0].skills, vec!["Rust".to_owned(), "skill 0".to_owned()]);
    assert_eq!(first.results[0].hourly_rate, Some(Money::from_cents(1050)));
    let rest = store.freelancers(PageRequest { limit: 2, offset: 2 }).await.unwrap();
    assert!(!rest.has_more);
    assert_eq!(rest.results.len(), 1);
    assert!(store.freelancer(client.id).await.unwrap().is_none(), "a client is not a freelancer");

    let job = store
        .create_job(NewJob { client: client.id, title: "T".to_owned(), description: "D".to_owned() })
        .await
        .unwrap();
    assert_eq!(job.client, client);
    assert_eq!(store.job(job.id).await.unwrap(), Some(job.clone()));
    assert!(store.job(JobId(job.id.0 + 100)).await.unwrap().is_none());
    assert_eq!(store.jobs(PageRequest::default()).await.unwrap().results, vec![job]);
}

pub(crate) async fn concurrent_opens_of_one_pair_make_one_thread_and_one_system_message(store: Arc<dyn Store>) {
    let client = user(&*store, "client", Role::Client).await;
    let freelancer = user(&*store, "freelancer", Role::Freelancer).await;
    let opens = (0..50).map(|_| {
        let store = store.clone();
        let open = OpenThread {
            key: ThreadKey::Direct { a: client.id, b: freelancer.id },
            first_message: system(&client, "hello"),
        };
        tokio::spawn(async move { store.open_thread(open).await.unwrap() })
    });
    let results: Vec<_> = join_all(opens).await.into_iter().map(Result::unwrap).collect();
    let ids: HashSet<ThreadId> = results.iter().map(|o| o.thread_id).collect();
    assert_eq!(ids.len(), 1, "one thread");
    assert_eq!(results.iter().filter(|o| o.created).count(), 1, "created once");
    let thread = *ids.iter().next().unwrap();
    let messages = store.messages(thread, Cursor::Latest, 200).await.unwrap();
    assert_eq!(messages.results.len(), 1, "one system message");
    let m = &messages.results[0];
    assert_eq!((m.seq, m.kind, m.sender_id, m.actor_id), (Seq(1), MessageKind::System, None, Some(client.id)));
    assert_eq!(m.metadata, json!({"action": "test"}));
    // The pair in the other order finds the same thread.
    let reversed = OpenThread { key: ThreadKey::Direct { a: freelancer.id, b: client.id }, first_message: None };
    assert_eq!(store.open_thread(reversed).await.unwrap().thread_id, thread);
    assert_eq!(store.direct_thread(freelancer.id, client.id).await.unwrap(), Some(thread));
}

pub(crate) async fn a_job_thread_and_the_direct_thread_of_a_pair_are_different(store: Arc<dyn Store>) {
    let client = user(&*store, "client", Role::Client).await;
    let freelancer = user(&*store, "freelancer", Role::Freelancer).await;
    let job = store.create_job(NewJob { client: client.id, title: "J".into(), description: "D".into() }).await.unwrap();
    let other =
        store.create_job(NewJob { client: client.id, title: "K".into(), description: "D".into() }).await.unwrap();
    let d = direct(&*store, &client, &freelancer).await;
    let open = |job: JobId| OpenThread {
        key: ThreadKey::Job { job, a: freelancer.id, b: client.id },
        first_message: system(&freelancer, "proposal"),
    };
    let j1 = store.open_thread(open(job.id)).await.unwrap();
    let j1_again = store.open_thread(open(job.id)).await.unwrap();
    let j2 = store.open_thread(open(other.id)).await.unwrap();
    assert!(j1.created && !j1_again.created && j2.created);
    assert_eq!(j1.thread_id, j1_again.thread_id);
    assert!(j1_again.first_message.is_none());
    let ids: HashSet<_> = [d, j1.thread_id, j2.thread_id].into_iter().collect();
    assert_eq!(ids.len(), 3);
    let record = store.thread(j1.thread_id, client.id).await.unwrap().unwrap();
    assert_eq!(record.job.map(|j| j.title), Some("J".to_owned()));
}

pub(crate) async fn concurrent_appends_take_seqs_without_gaps_or_repeats(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let sends = (0..10).map(|sender| {
        let store = store.clone();
        let from = if sender % 2 == 0 { a.id } else { b.id };
        tokio::spawn(async move {
            for i in 0..10 {
                let new =
                    NewMessage { thread_id: thread, sender: from, text: format!("{sender}/{i}"), client_msg_id: None };
                store.append_message(new).await.unwrap();
            }
        })
    });
    for r in join_all(sends).await {
        r.unwrap();
    }
    let page = store.messages(thread, Cursor::After(Seq(0)), 200).await.unwrap();
    let seqs: Vec<i64> = page.results.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
}

pub(crate) async fn a_repeated_client_msg_id_returns_the_first_message(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let first = send(&*store, thread, &a, "once", Some("c-1")).await;
    assert!(!first.duplicate);
    let again = send(&*store, thread, &a, "once", Some("c-1")).await;
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);
    // Another sender may use the same key.
    let theirs = send(&*store, thread, &b, "mine", Some("c-1")).await;
    assert!(!theirs.duplicate);

    let sends = (0..50).map(|_| {
        let store = store.clone();
        let new = NewMessage {
            thread_id: thread,
            sender: a.id,
            text: "racing".to_owned(),
            client_msg_id: Some(ClientMsgId::parse("c-2").unwrap()),
        };
        tokio::spawn(async move { store.append_message(new).await.unwrap() })
    });
    let results: Vec<_> = join_all(sends).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    assert_eq!(results.iter().map(|r| r.message.id).collect::<HashSet<_>>().len(), 1);
    let seqs: Vec<i64> =
        store.messages(thread, Cursor::Latest, 200).await.unwrap().results.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, vec![1, 2, 3], "no seq was burnt by a duplicate");
}

pub(crate) async fn a_batch_commits_together_and_refuses_only_its_bad_messages(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let new = |text: &str, thread_id, key: Option<&str>| NewMessage {
        thread_id,
        sender: a.id,
        text: text.to_owned(),
        client_msg_id: key.map(|k| ClientMsgId::parse(k).unwrap()),
    };
    let batch = vec![
        new("one", thread, Some("k")),
        new("lost", ThreadId::generate(), None),
        new("two", thread, None),
        new("one", thread, Some("k")),
        new("not one", thread, Some("k")),
    ];
    let results = store.append_messages(batch).await.unwrap();
    assert_eq!(results.len(), 5);
    let first = results[0].as_ref().unwrap();
    assert!(!first.duplicate && first.message.seq == Seq(1));
    assert!(matches!(results[1], Err(StoreError::NotFound(_))));
    assert_eq!(results[2].as_ref().unwrap().message.seq, Seq(2));
    let again = results[3].as_ref().unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);
    assert!(matches!(results[4], Err(StoreError::KeyReused)), "{:?}", results[4]);
    let stored: Vec<String> =
        store.messages(thread, Cursor::Latest, 10).await.unwrap().results.into_iter().map(|m| m.text).collect();
    assert_eq!(stored, vec!["one".to_owned(), "two".to_owned()]);
    assert_eq!(store.thread_heads(b.id).await.unwrap(), vec![(thread, Seq(2))]);
}

pub(crate) async fn appending_to_an_unknown_thread_is_not_found(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let new = NewMessage { thread_id: ThreadId::generate(), sender: a.id, text: "x".into(), client_msg_id: None };
    assert!(matches!(store.append_message(new).await, Err(StoreError::NotFound(_))));
}

pub(crate) async fn appending_as_an_unknown_sender_is_refused_and_stores_nothing(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let before = store.messages(thread, Cursor::Latest, 10).await.unwrap().results;
    let stranger = UserId(a.id.0.max(b.id.0) + 1000);
    let new = NewMessage { thread_id: thread, sender: stranger, text: "x".into(), client_msg_id: None };
    assert!(store.append_message(new).await.is_err());
    assert_eq!(store.messages(thread, Cursor::Latest, 10).await.unwrap().results, before);
    assert_eq!(send(&*store, thread, &a, "after", None).await.message.seq, Seq(before.len() as i64 + 1));
}

/// SQLite's message writer checks senders itself (its connection leaves foreign
/// keys unchecked), so an unknown one is refused alone and the rest of its batch
/// is stored. Returns the thread, so the caller can look for orphans.
pub(crate) async fn an_unknown_sender_is_refused_alone_in_its_batch(store: Arc<dyn Store>) -> ThreadId {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let stranger = UserId(a.id.0.max(b.id.0) + 1000);
    let new =
        |sender: UserId, text: &str| NewMessage { thread_id: thread, sender, text: text.into(), client_msg_id: None };
    let batch = vec![new(a.id, "one"), new(stranger, "lost"), new(b.id, "two"), new(stranger, "lost again")];
    let results = store.append_messages(batch).await.unwrap();
    assert!(matches!(results[1], Err(StoreError::NotFound("user"))), "{:?}", results[1]);
    assert!(matches!(results[3], Err(StoreError::NotFound("user"))), "{:?}", results[3]);
    let stored: Vec<String> =
        store.messages(thread, Cursor::Latest, 10).await.unwrap().results.into_iter().map(|m| m.text).collect();
    assert_eq!(stored, vec!["one".to_owned(), "two".to_owned()]);
    thread
}

pub(crate) async fn text_is_stored_verbatim(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let text = "Robert'); DROP TABLE messages;-- <b>bold</b> \u{1F600} \"quotes\" \\ back\nslash";
    let sent = send(&*store, thread, &a, text, None).await;
    let stored = store.messages(thread, Cursor::Latest, 10).await.unwrap();
    assert_eq!(stored.results, vec![sent.message.clone()]);
    assert_eq!(stored.results[0].text, text);
}

pub(crate) async fn releasing_memory_loses_nothing_and_the_store_goes_on(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let first = send(&*store, thread, &a, "before", None).await;
    // While other work runs, too: a busy connection is skipped, never waited for.
    let (released, page) = tokio::join!(store.release_memory(), store.messages(thread, Cursor::Latest, 10));
    released.unwrap();
    assert_eq!(page.unwrap().results, vec![first.message.clone()]);
    store.release_memory().await.unwrap();
    let second = send(&*store, thread, &b, "after", None).await;
    assert_eq!(second.message.seq, Seq(2));
    let stored = store.messages(thread, Cursor::Latest, 10).await.unwrap();
    assert_eq!(stored.results, vec![first.message, second.message]);
}

pub(crate) async fn message_pages_follow_their_cursor_in_seq_order(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    for i in 1..=10 {
        send(&*store, thread, &a, &format!("m{i}"), None).await;
    }
    let seqs =
        |p: &confab::domain::Page<confab::domain::MessageRecord>| p.results.iter().map(|m| m.seq.0).collect::<Vec<_>>();
    let latest = store.messages(thread, Cursor::Latest, 3).await.unwrap();
    assert_eq!((seqs(&latest), latest.has_more), (vec![8, 9, 10], true));
    let before = store.messages(thread, Cursor::Before(Seq(8)), 3).await.unwrap();
    assert_eq!((seqs(&before), before.has_more), (vec![5, 6, 7], true));
    let first = store.messages(thread, Cursor::Before(Seq(3)), 5).await.unwrap();
    assert_eq!((seqs(&first), first.has_more), (vec![1, 2], false));
    let after = store.messages(thread, Cursor::After(Seq(2)), 3).await.unwrap();
    assert_eq!((seqs(&after), after.has_more), (vec![3, 4, 5], true));
    let tail = store.messages(thread, Cursor::After(Seq(8)), 3).await.unwrap();
    assert_eq!((seqs(&tail), tail.has_more), (vec![9, 10], false));
    let none = store.messages(thread, Cursor::After(Seq(10)), 3).await.unwrap();
    assert_eq!((seqs(&none), none.has_more), (vec![], false));
    // Both bounds: strictly between, the first `limit` of them, in seq order.
    let between = store.messages(thread, Cursor::Between(Seq(2), Seq(9)), 3).await.unwrap();
    assert_eq!((seqs(&between), between.has_more), (vec![3, 4, 5], true));
    let rest = store.messages(thread, Cursor::Between(Seq(5), Seq(9)), 3).await.unwrap();
    assert_eq!((seqs(&rest), rest.has_more), (vec![6, 7, 8], false));
    let empty = store.messages(thread, Cursor::Between(Seq(4), Seq(5)), 3).await.unwrap();
    assert_eq!((seqs(&empty), empty.has_more), (vec![], false));
    let reversed = store.messages(thread, Cursor::Between(Seq(8), Seq(3)), 3).await.unwrap();
    assert_eq!(seqs(&reversed), Vec::<i64>::new());
}

pub(crate) async fn read_markers_move_forward_only_and_drive_unread_counts(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let outsider = user(&*store, "c", Role::Client).await;
    let open = OpenThread { key: ThreadKey::Direct { a: a.id, b: b.id }, first_message: system(&a, "hello") };
    let thread = store.open_thread(open).await.unwrap().thread_id;
    for i in 0..4 {
        send(&*store, thread, &a, &format!("{i}"), None).await;
    }
    send(&*store, thread, &b, "reply", None).await;
    // b has 5 unread (the system message a caused, and a's 4); a has 1 (b's reply).
    assert_eq!(store.thread(thread, b.id).await.unwrap().unwrap().unread_count, 5);
    assert_eq!(store.thread(thread, a.id).await.unwrap().unwrap().unread_count, 1);
    assert_eq!(store.unread_from(b.id, a.id).await.unwrap(), 4, "only a's own messages, not the system one");
    assert_eq!(store.unread_by_thread(b.id).await.unwrap(), vec![(thread, 5)]);

    let marker = store.mark_read(thread, b.id, Some(Seq(3))).await.unwrap();
    assert_eq!((marker.up_to_seq, marker.unread_count, marker.moved), (Seq(3), 2, true));
    let back = store.mark_read(thread, b.id, Some(Seq(1))).await.unwrap();
    assert_eq!((back.up_to_seq, back.moved), (Seq(3), false), "a read marker never moves back");
    let same = store.mark_read(thread, b.id, Some(Seq(3))).await.unwrap();
    assert_eq!((same.up_to_seq, same.unread_count, same.moved), (Seq(3), 2, false), "nor is rewritten in place");
    let past = store.mark_read(thread, b.id, Some(Seq(1000))).await.unwrap();
    assert_eq!((past.up_to_seq, past.unread_count), (Seq(6), 0), "nor past the last message");
    let all = store.mark_read(thread, a.id, None).await.unwrap();
    assert_eq!((all.up_to_seq, all.unread_count), (Seq(6), 0));
    assert!(store.unread_by_thread(b.id).await.unwrap().is_empty());
    assert!(matches!(store.mark_read(thread, outsider.id, None).await, Err(StoreError::NotFound(_))));

    let record = store.thread(thread, a.id).await.unwrap().unwrap();
    let markers: Vec<(UserId, Seq)> = record.participants.iter().map(|p| (p.user.id, p.last_read_seq)).collect();
    assert_eq!(markers, vec![(a.id, Seq(6)), (b.id, Seq(6))]);
}

pub(crate) async fn a_thread_is_invisible_to_outsiders(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let c = user(&*store, "c", Role::Client).await;
    let thread = direct(&*store, &a, &b).await;
    assert!(store.thread(thread, c.id).await.unwrap().is_none());
    assert!(store.thread(ThreadId::generate(), a.id).await.unwrap().is_none());
    assert!(store.inbox(c.id, InboxFrom::Start, 50).await.unwrap().results.is_empty());
    let members: Vec<UserId> = store.participants(thread).await.unwrap().iter().map(|p| p.user.id).collect();
    assert_eq!(members, vec![a.id, b.id]);
    assert!(store.participants(ThreadId::generate()).await.unwrap().is_empty());
}

/// A client, "me", with a direct thread to each of three freelancers, oldest first.
async fn three_direct_threads(store: &dyn Store) -> (User, Vec<ThreadId>) {
    let me = user(store, "me", Role::Client).await;
    let mut threads = Vec::new();
    for i in 0..3 {
        let other = user(store, &format!("o{i}"), Role::Freelancer).await;
        threads.push(direct(store, &me, &other).await);
    }
    (me, threads)
}

pub(crate) async fn the_inbox_lists_threads_by_latest_activity(store: Arc<dyn Store>) {
    let (me, threads) = three_direct_threads(&*store).await;
    let first = send(&*store, threads[0], &me, "bump the oldest", None).await;
    let inbox = store.inbox(me.id, InboxFrom::Start, 2).await.unwrap();
    assert!(inbox.has_more);
    let ids: Vec<ThreadId> = inbox.results.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![threads[0], threads[2]]);
    assert_eq!(inbox.results[0].last_message.as_ref(), Some(&first.message));
    assert_eq!(inbox.results[0].participants.len(), 2);
    assert!(inbox.results[1].last_message.is_none());
    let rest = store.inbox(me.id, InboxFrom::Offset(2), 2).await.unwrap();
    assert_eq!(rest.results.iter().map(|t| t.id).collect::<Vec<_>>(), vec![threads[1]]);
    assert!(!rest.has_more);
}

pub(crate) async fn a_batch_over_several_threads_moves_each_threads_seq_and_activity(store: Arc<dyn Store>) {
    let (me, threads) = three_direct_threads(&*store).await;
    let new = |thread_id| NewMessage { thread_id, sender: me.id, text: "x".to_owned(), client_msg_id: None };
    // Thread 2 gets none.
    let batch = vec![new(threads[0]), new(threads[1]), new(threads[0]), new(threads[1]), new(threads[0])];
    let seqs: Vec<i64> =
        store.append_messages(batch).await.unwrap().into_iter().map(|r| r.unwrap().message.seq.0).collect();
    assert_eq!(seqs, vec![1, 1, 2, 2, 3]);
    let order = |page: confab::domain::Page<confab::domain::ThreadRecord>| {
        page.results.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    // Both of the batch's threads are now ahead of the one it did not touch (which
    // of the two leads is the store's: they were committed at the same instant).
    let inbox = order(store.inbox(me.id, InboxFrom::Start, 10).await.unwrap());
    assert_eq!(inbox[2], threads[2]);
    let mut heads = store.thread_heads(me.id).await.unwrap();
    heads.sort();
    let mut expected = vec![(threads[0], Seq(3)), (threads[1], Seq(2)), (threads[2], Seq(0))];
    expected.sort();
    assert_eq!(heads, expected, "each thread's seq is where its last message left it");
    // A later batch goes on from there, and its thread leads the inbox.
    for (thread, seq) in [(threads[1], 3), (threads[0], 4)] {
        let next = store.append_messages(vec![new(thread)]).await.unwrap().remove(0).unwrap();
        assert_eq!(next.message.seq, Seq(seq));
        assert_eq!(order(store.inbox(me.id, InboxFrom::Start, 10).await.unwrap())[0], thread);
    }
}

pub(crate) async fn a_proposal_and_its_thread_are_written_together_or_not_at_all(store: Arc<dyn Store>) {
    let client = user(&*store, "client", Role::Client).await;
    let freelancer = user(&*store, "freelancer", Role::Freelancer).await;
    let job = store.create_job(NewJob { client: client.id, title: "J".into(), description: "D".into() }).await.unwrap();
    let proposal = || NewProposal {
        job: job.id,
        freelancer: freelancer.clone(),
        cover_letter: "Hire me".into(),
        bid_amount: Money::from_cents(50_050),
    };
    let open = || OpenThread {
        key: ThreadKey::Job { job: job.id, a: freelancer.id, b: client.id },
        first_message: system(&freelancer, "proposal"),
    };
    let (p, opened) = store.submit_proposal(proposal(), open()).await.unwrap();
    assert!(opened.created);
    assert_eq!((p.thread_id, p.bid_amount, p.job_id), (opened.thread_id, Money::from_cents(50_050), job.id));
    let again = store.submit_proposal(proposal(), open()).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let messages = store.messages(opened.thread_id, Cursor::Latest, 10).await.unwrap();
    assert_eq!(messages.results.len(), 1, "the refused proposal wrote nothing");

    // A refused proposal that would have created its thread leaves no thread behind.
    let other = user(&*store, "other", Role::Freelancer).await;
    let job2 =
        store.create_job(NewJob { client: client.id, title: "K".into(), description: "D".into() }).await.unwrap();
    let open2 = || OpenThread {
        key: ThreadKey::Job { job: job2.id, a: other.id, b: client.id },
        first_message: system(&other, "proposal"),
    };
    let p2 = || NewProposal {
        job: job2.id,
        freelancer: other.clone(),
        cover_letter: "x".into(),
        bid_amount: Money::from_cents(1),
    };
    let (_, first) = store.submit_proposal(p2(), open2()).await.unwrap();
    assert!(first.created);
    let before = store.inbox(client.id, InboxFrom::Start, 50).await.unwrap().results.len();
    assert!(store.submit_proposal(p2(), open2()).await.is_err());
    assert_eq!(store.inbox(client.id, InboxFrom::Start, 50).await.unwrap().results.len(), before);
}

pub(crate) async fn a_client_msg_id_is_scoped_to_its_sender_and_thread(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let c = user(&*store, "c", Role::Freelancer).await;
    let with_b = direct(&*store, &a, &b).await;
    let with_c = direct(&*store, &a, &c).await;
    let hello_b = send(&*store, with_b, &a, "hello b", Some("c-1")).await;
    // A client whose keys restart each session uses `c-1` again in another thread.
    let hello_c = send(&*store, with_c, &a, "hello c", Some("c-1")).await;
    assert!(!hello_c.duplicate, "the same key in another thread is another message");
    assert_ne!(hello_c.message.id, hello_b.message.id);
    assert_eq!((hello_c.message.thread_id, hello_c.message.text.as_str()), (with_c, "hello c"));

    // The same key in the same thread with another text is refused; nothing changes.
    let reused = NewMessage {
        thread_id: with_b,
        sender: a.id,
        text: "something else".to_owned(),
        client_msg_id: Some(ClientMsgId::parse("c-1").unwrap()),
    };
    assert!(matches!(store.append_message(reused).await, Err(StoreError::KeyReused)));
    let stored = store.messages(with_b, Cursor::Latest, 10).await.unwrap().results;
    assert_eq!(stored, vec![hello_b.message.clone()]);
    assert_eq!(store.thread_heads(b.id).await.unwrap(), vec![(with_b, Seq(1))], "no seq was taken");
    // A retry with the same text gets the first message.
    let retry = send(&*store, with_b, &a, "hello b", Some("c-1")).await;
    assert!(retry.duplicate);
    assert_eq!(retry.message, hello_b.message);
}

pub(crate) async fn concurrent_reuses_of_a_key_store_one_message_and_refuse_other_texts(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let sends = (0..50).map(|i| {
        let store = store.clone();
        let new = NewMessage {
            thread_id: thread,
            sender: a.id,
            text: if i % 2 == 0 { "even".to_owned() } else { "odd".to_owned() },
            client_msg_id: Some(ClientMsgId::parse("k").unwrap()),
        };
        tokio::spawn(async move { store.append_message(new).await })
    });
    let results: Vec<_> = join_all(sends).await.into_iter().map(Result::unwrap).collect();
    let stored = store.messages(thread, Cursor::Latest, 200).await.unwrap().results;
    assert_eq!(stored.len(), 1, "one message for one key");
    let winner = &stored[0];
    assert_eq!(winner.seq, Seq(1));
    for result in results {
        match result {
            Ok(appended) => {
                assert_eq!(appended.message.id, winner.id);
            }
            Err(StoreError::KeyReused) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

pub(crate) async fn an_inbox_walk_by_cursor_repeats_nothing_and_skips_only_what_moved(store: Arc<dyn Store>) {
    let me = user(&*store, "me", Role::Client).await;
    let mut threads = Vec::new();
    for i in 0..7 {
        let other = user(&*store, &format!("o{i}"), Role::Freelancer).await;
        threads.push(direct(&*store, &me, &other).await);
    }
    // Inbox order now: 6, 5, 4, 3, 2, 1, 0.
    let first = store.inbox(me.id, InboxFrom::Start, 3).await.unwrap();
    let ids =
        |p: &confab::domain::Page<confab::domain::ThreadRecord>| p.results.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!((ids(&first), first.has_more), (vec![threads[6], threads[5], threads[4]], true));
    // Live activity during the walk: a seen thread and an unseen one move to the top.
    send(&*store, threads[5], &me, "seen, moved", None).await;
    send(&*store, threads[2], &me, "unseen, moved", None).await;
    let cursor = first.results.last().unwrap().cursor();
    let second = store.inbox(me.id, InboxFrom::After(cursor), 3).await.unwrap();
    assert_eq!((ids(&second), second.has_more), (vec![threads[3], threads[1], threads[0]], false));
    let mut walked: Vec<ThreadId> = ids(&first);
    walked.extend(ids(&second));
    assert_eq!(walked.iter().collect::<HashSet<_>>().len(), walked.len(), "no thread twice");
    assert!(!walked.contains(&threads[2]), "only the thread that moved to the top was skipped");
    // The walk from the start again shows the new order.
    let again = store.inbox(me.id, InboxFrom::Start, 2).await.unwrap();
    assert_eq!(ids(&again), vec![threads[2], threads[5]]);
}

fn refresh(id: &str, family: &str, user: &User, ttl_ms: i64) -> RefreshToken {
    RefreshToken {
        id: id.to_owned(),
        family: family.to_owned(),
        user: user.id,
        expires_at: Timestamp::from_millis(Timestamp::now().millis() + ttl_ms).unwrap(),
    }
}

pub(crate) async fn a_refresh_token_rotates_once_and_a_reuse_spends_its_family(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice", Role::Client).await;
    let day = 86_400_000;
    store.add_refresh_token(refresh("t1", "f1", &alice, day)).await.unwrap();
    store.add_refresh_token(refresh("other", "f2", &alice, day)).await.unwrap();
    assert_eq!(store.rotate_refresh_token("t1", refresh("t2", "f1", &alice, day)).await.unwrap(), Rotation::Rotated);
    assert_eq!(store.rotate_refresh_token("t2", refresh("t3", "f1", &alice, day)).await.unwrap(), Rotation::Rotated);
    // t1 again: copied. The family is spent, t3 with it; nothing new is recorded.
    assert_eq!(store.rotate_refresh_token("t1", refresh("t4", "f1", &alice, day)).await.unwrap(), Rotation::Reused);
    assert_eq!(store.rotate_refresh_token("t3", refresh("t5", "f1", &alice, day)).await.unwrap(), Rotation::Reused);
    assert_eq!(store.rotate_refresh_token("t4", refresh("t6", "f1", &alice, day)).await.unwrap(), Rotation::Unknown);
    // Another sign-in of the same user is untouched.
    assert_eq!(store.rotate_refresh_token("other", refresh("o2", "f2", &alice, day)).await.unwrap(), Rotation::Rotated);
    assert_eq!(store.rotate_refresh_token("nope", refresh("x", "f9", &alice, day)).await.unwrap(), Rotation::Unknown);
    // A token presented with another family is not rotated, and stays live.
    assert_eq!(store.rotate_refresh_token("o2", refresh("y", "f1", &alice, day)).await.unwrap(), Rotation::Unknown);
    assert_eq!(store.rotate_refresh_token("o2", refresh("o3", "f2", &alice, day)).await.unwrap(), Rotation::Rotated);
}

pub(crate) async fn concurrent_rotations_of_one_refresh_token_rotate_it_once(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice", Role::Client).await;
    store.add_refresh_token(refresh("t1", "f1", &alice, 86_400_000)).await.unwrap();
    let rotations = join_all((0..8).map(|n| {
        let store = store.clone();
        let next = refresh(&format!("n{n}"), "f1", &alice, 86_400_000);
        async move { store.rotate_refresh_token("t1", next).await.unwrap() }
    }))
    .await;
    assert_eq!(rotations.iter().filter(|r| **r == Rotation::Rotated).count(), 1, "{rotations:?}");
    assert_eq!(rotations.iter().filter(|r| **r == Rotation::Reused).count(), 7, "{rotations:?}");
    // The reuses spent the family, the winner's new token too.
    for n in 0..8 {
        let r = store.rotate_refresh_token(&format!("n{n}"), refresh(&format!("m{n}"), "f1", &alice, 1000)).await;
        assert_ne!(r.unwrap(), Rotation::Rotated);
    }
}

pub(crate) async fn expired_refresh_tokens_are_not_rotated_and_are_forgotten(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice", Role::Client).await;
    store.add_refresh_token(refresh("old", "f1", &alice, -1000)).await.unwrap();
    // Expired but not spent: not a copy (the JWT's leeway lets it through for a few
    // seconds), so its sign-in is not revoked.
    assert_eq!(store.rotate_refresh_token("old", refresh("x0", "f1", &alice, 1000)).await.unwrap(), Rotation::Unknown);
    // Writing another forgets it; presented again it is unknown.
    store.add_refresh_token(refresh("new", "f1", &alice, 86_400_000)).await.unwrap();
    assert_eq!(store.rotate_refresh_token("old", refresh("x", "f1", &alice, 1000)).await.unwrap(), Rotation::Unknown);
    assert_eq!(
        store.rotate_refresh_token("new", refresh("n2", "f1", &alice, 1000)).await.unwrap(),
        Rotation::Rotated,
        "the family lives on"
    );
}

pub(crate) async fn concurrent_proposals_of_one_freelancer_store_one_and_one_thread(store: Arc<dyn Store>) {
    let client = user(&*store, "client", Role::Client).await;
    let freelancer = user(&*store, "freelancer", Role::Freelancer).await;
    let job = store.create_job(NewJob { client: client.id, title: "J".into(), description: "D".into() }).await.unwrap();
    let submits = (0..50).map(|i| {
        let store = store.clone();
        let new = NewProposal {
            job: job.id,
            freelancer: freelancer.clone(),
            cover_letter: format!("take {i}"),
            bid_amount: Money::from_cents(100 + i),
        };
        let open = OpenThread {
            key: ThreadKey::Job { job: job.id, a: freelancer.id, b: client.id },
            first_message: system(&freelancer, "proposal"),
        };
        tokio::spawn(async move { store.submit_proposal(new, open).await })
    });
    let results: Vec<_> = join_all(submits).await.into_iter().map(Result::unwrap).collect();
    let stored: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(stored.len(), 1, "one proposal");
    assert!(stored[0].1.created, "its thread was created by it");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(refused, StoreError::Conflict(_)), "{refused:?}");
    }
    let inbox = store.inbox(client.id, InboxFrom::Start, 50).await.unwrap().results;
    assert_eq!(inbox.len(), 1, "one thread");
    let messages = store.messages(inbox[0].id, Cursor::Latest, 10).await.unwrap().results;
    assert_eq!(messages.len(), 1, "one system message");
}

fn external(id: &str, name: &str, role: Role, username: Option<&str>) -> ExternalUser {
    ExternalUser { external_id: id.to_owned(), username: username.map(str::to_owned), full_name: name.to_owned(), role }
}

pub(crate) async fn host_users_are_provisioned_once_by_external_id_and_updated(store: Arc<dyn Store>) {
    let confab_user = user(&*store, "local", Role::Client).await;
    assert_eq!(confab_user.external_id, None);
    let (ann, created) = store.upsert_external_user(external("h-1", "Ann", Role::Client, Some("ann"))).await.unwrap();
    assert!(created);
    assert_eq!((ann.username.as_str(), ann.external_id.as_deref(), ann.role), ("ann", Some("h-1"), Role::Client));
    let (again, created) =
        store.upsert_external_user(external("h-1", "Ann Lee", Role::Freelancer, None)).await.unwrap();
    assert!(!created);
    assert_eq!((again.id, again.username.as_str(), again.full_name.as_str()), (ann.id, "ann", "Ann Lee"));
    assert_eq!(again.role, Role::Freelancer);
    assert_eq!(store.user_by_external_id("h-1").await.unwrap(), Some(again.clone()));
    assert_eq!(store.user(ann.id).await.unwrap(), Some(again));
    assert_eq!(store.user_by_external_id("h-2").await.unwrap(), None);
    // Someone else's username is refused, whether on creation or on update.
    let taken = store.upsert_external_user(external("h-2", "Bob", Role::Client, Some("local"))).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(store.user_by_external_id("h-2").await.unwrap(), None, "nothing written");
    let renamed = store.upsert_external_user(external("h-1", "Ann", Role::Client, Some("local"))).await;
    assert!(matches!(renamed, Err(StoreError::Conflict(_))), "{renamed:?}");
    // Without a username, a new user is named by their external id.
    let (bob, _) = store.upsert_external_user(external("h-2", "Bob", Role::Client, None)).await.unwrap();
    assert_eq!(bob.username, "h-2");
    // Concurrent first uses make one user.
    let racers = (0..8).map(|_| {
        let store = store.clone();
        async move { store.upsert_external_user(external("h-3", "Cy", Role::Client, None)).await }
    });
    let results = join_all(racers).await;
    let ids: HashSet<UserId> = results.iter().filter_map(|r| r.as_ref().ok()).map(|(u, _)| u.id).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| matches!(r, Ok((_, true)))).count(), 1, "created once");
}

pub(crate) async fn host_jobs_are_upserted_by_external_id(store: Arc<dyn Store>) {
    let (client, _) = store.upsert_external_user(external("c-1", "Cat", Role::Client, None)).await.unwrap();
    let job = |title: &str, status| ExternalJob {
        external_id: "j-1".to_owned(),
        client: client.id,
        title: title.to_owned(),
        description: "d".to_owned(),
        status,
    };
    let (first, created) = store.upsert_external_job(job("Logo", JobStatus::Open)).await.unwrap();
    assert!(created);
    assert_eq!((first.external_id.as_deref(), first.client.id), (Some("j-1"), client.id));
    assert_eq!(first.client.external_id.as_deref(), Some("c-1"));
    let (second, created) = store.upsert_external_job(job("Logo v2", JobStatus::Closed)).await.unwrap();
    assert!(!created);
    assert_eq!((second.id, second.title.as_str(), second.status), (first.id, "Logo v2", JobStatus::Closed));
    assert_eq!(store.job(first.id).await.unwrap(), Some(second));
    let local = store.create_job(NewJob { client: client.id, title: "t".into(), description: "d".into() }).await;
    assert_eq!(local.unwrap().external_id, None);
}

pub(crate) async fn a_host_system_message_is_idempotent_by_key_and_unread_for_everyone(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let new = |text: &str, key: Option<&str>| NewSystemMessage {
        thread_id: thread,
        text: text.to_owned(),
        metadata: json!({"event": "offer_accepted"}),
        client_msg_id: key.map(|k| ClientMsgId::parse(k).unwrap()),
    };
    let first = store.append_system_message(new("Offer accepted", Some("k1"))).await.unwrap();
    assert!(!first.duplicate);
    let m = &first.message;
    assert_eq!((m.kind, m.sender_id, m.actor_id, m.seq), (MessageKind::System, None, None, Seq(1)));
    assert_eq!(m.metadata, json!({"event": "offer_accepted"}));
    let again = store.append_system_message(new("Offer accepted", Some("k1"))).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.id, m.id);
    let reused = store.append_system_message(new("Something else", Some("k1"))).await;
    assert!(matches!(reused, Err(StoreError::KeyReused)), "{reused:?}");
    // A user's key of the same name is another message.
    send(&*store, thread, &a, "mine", Some("k1")).await;
    let unkeyed = store.append_system_message(new("Payment released", None)).await.unwrap();
    assert_eq!(unkeyed.message.seq, Seq(3));
    for viewer in [a.id, b.id] {
        let unread = store.thread(thread, viewer).await.unwrap().unwrap().unread_count;
        assert_eq!(unread, if viewer == a.id { 2 } else { 3 }, "system messages are unread for everyone");
    }
    let unknown = NewSystemMessage { thread_id: ThreadId::generate(), ..new("x", None) };
    assert!(matches!(store.append_system_message(unknown).await, Err(StoreError::NotFound(_))));
}

pub(crate) async fn seqs_stay_gapless_when_system_messages_come_between_sends(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let thread = direct(&*store, &a, &b).await;
    let other = direct(&*store, &a, &user(&*store, "c", Role::Freelancer).await).await;
    let system = |text: &str| NewSystemMessage {
        thread_id: thread,
        text: text.to_owned(),
        metadata: json!({}),
        client_msg_id: None,
    };
    let batch = |n: usize| -> Vec<NewMessage> {
        (0..n)
            .flat_map(|i| {
                [thread, other].map(|t| NewMessage {
                    thread_id: t,
                    sender: a.id,
                    text: format!("m{i}"),
                    client_msg_id: None,
                })
            })
            .collect()
    };
    let seqs = |results: Vec<confab::store::Result<confab::store::Appended>>| -> Vec<(ThreadId, i64)> {
        results.into_iter().map(|r| r.unwrap().message).map(|m| (m.thread_id, m.seq.0)).collect()
    };
    assert_eq!(
        seqs(store.append_messages(batch(2)).await.unwrap()),
        [(thread, 1), (other, 1), (thread, 2), (other, 2)]
    );
    // Another writer's seq in between: the next batch goes on after it.
    assert_eq!(store.append_system_message(system("between")).await.unwrap().message.seq, Seq(3));
    assert_eq!(seqs(store.append_messages(batch(1)).await.unwrap()), [(thread, 4), (other, 3)]);
    // A commit that takes no seq (a read marker) changes nothing.
    store.mark_read(thread, b.id, None).await.unwrap();
    assert_eq!(seqs(store.append_messages(batch(1)).await.unwrap()), [(thread, 5), (other, 4)]);
    assert_eq!(store.append_system_message(system("again")).await.unwrap().message.seq, Seq(6));
    assert_eq!(send(&*store, thread, &a, "last", None).await.message.seq, Seq(7));
    let stored = store.messages(thread, Cursor::Latest, 50).await.unwrap().results;
    let mut stored: Vec<i64> = stored.iter().map(|m| m.seq.0).collect();
    stored.sort_unstable();
    assert_eq!(stored, (1..=7).collect::<Vec<_>>());
}

pub(crate) async fn events_are_recorded_with_what_they_describe_in_one_gapless_order(store: Arc<dyn Store>) {
    let a = user(&*store, "a", Role::Client).await;
    let b = user(&*store, "b", Role::Freelancer).await;
    let open = OpenThread { key: ThreadKey::Direct { a: a.id, b: b.id }, first_message: system(&a, "hi") };
    let thread = store.open_thread(open.clone()).await.unwrap().thread_id;
    store.open_thread(open).await.unwrap();
    let batch: Vec<NewMessage> = (0..3)
        .map(|i| NewMessage {
            thread_id: thread,
            sender: a.id,
            text: format!("m{i}"),
            client_msg_id: Some(ClientMsgId::parse("same").unwrap()).filter(|_| i < 2),
        })
        .collect();
    store.append_messages(batch).await.unwrap();
    store.mark_read(thread, b.id, None).await.unwrap();
    store.mark_read(thread, b.id, None).await.unwrap();
    let page = store.events_after(0, 100).await.unwrap();
    let kinds: Vec<(i64, EventKind, Option<Seq>)> =
        page.results.iter().map(|e| (e.seq, e.kind, e.thread_seq)).collect();
    assert_eq!(
        kinds,
        vec![
            (1, EventKind::ThreadCreated, None),
            (2, EventKind::MessageCreated, Some(Seq(1))),
            (3, EventKind::MessageCreated, Some(Seq(2))),
            (4, EventKind::MessageCreated, Some(Seq(3))),
            (5, EventKind::ThreadRead, Some(Seq(3))),
        ],
        "a find-or-create that found, a repeated key and a read that moves nothing record nothing"
    );
    assert_eq!(page.results[4].user_id, Some(b.id));
    assert!(page.results.iter().all(|e| e.thread_id == thread && e.attempts == 0));
    let second = store.events_after(2, 2).await.unwrap();
    assert_eq!((second.results.iter().map(|e| e.seq).collect::<Vec<_>>(), second.has_more), (vec![3, 4], true));
    // A failed event holds back the later events of its thread, not of others.
    let c = user(&*store, "c", Role::Client).await;
    let other = direct(&*store, &c, &b).await;
    send(&*store, other, &c, "elsewhere", None).await;
    let now = Timestamp::now();
    let later = Timestamp::from_millis(now.millis() + 60_000).unwrap();
    assert_eq!(store.due_events(now, 100).await.unwrap().len(), 7);
    let outcomes = [(1, Delivery::Delivered), (2, Delivery::Retry { at: later, error: "503".into() })];
    store.record_deliveries(&outcomes).await.unwrap();
    let due: Vec<i64> = store.due_events(now, 100).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(due, vec![6, 7], "thread.created of the other thread and its message");
    // An event recorded after `now` is not due yet, and holds nothing back.
    let before = Timestamp::from_millis(now.millis() - 60_000).unwrap();
    assert!(store.due_events(before, 100).await.unwrap().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    send(&*store, other, &c, "newer", None).await;
    let due: Vec<i64> = store.due_events(now, 100).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(due, vec![6, 7], "the newer message waits its turn, its thread goes on");
    let retried = store.due_events(later, 100).await.unwrap();
    assert_eq!(retried.iter().map(|e| (e.seq, e.attempts)).collect::<Vec<_>>()[..2], [(2, 1), (3, 0)]);
    store.record_deliveries(&[(2, Delivery::GaveUp { error: "410".into() })]).await.unwrap();
    assert_eq!(store.due_events(now, 1).await.unwrap()[0].seq, 3, "a given-up event no longer holds its thread");
    let backlog = store.event_backlog().await.unwrap();
    assert_eq!(backlog.pending, 6);
    assert!(backlog.oldest.is_some());
    // Sent and given-up events are pruned once past retention; waiting ones stay.
    assert_eq!(store.prune_events(Timestamp::from_millis(now.millis() + 1000).unwrap()).await.unwrap(), 2);
    assert_eq!(store.events_after(0, 100).await.unwrap().results.first().map(|e| e.seq), Some(3));
}

pub(crate) async fn one_holder_has_the_event_lease_until_it_lapses(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let until = Timestamp::from_millis(now.millis() + 30_000).unwrap();
    assert!(store.take_event_lease("a", now, until).await.unwrap());
    assert!(!store.take_event_lease("b", now, until).await.unwrap(), "a holds it");
    assert!(store.take_event_lease("a", now, until).await.unwrap(), "a renews it");
    let lapsed = Timestamp::from_millis(until.millis() + 1).unwrap();
    assert!(
        store.take_event_lease("b", lapsed, Timestamp::from_millis(lapsed.millis() + 30_000).unwrap()).await.unwrap()
    );
    assert!(!store.take_event_lease("a", lapsed, until).await.unwrap());
}

/// Every behaviour by name, so a backend's test file can list them all and a
/// missing one fails to compile.
macro_rules! conformance_tests {
    ($make:expr) => {
        conformance_tests!(@each $make;
            a_taken_username_is_a_conflict,
            profiles_and_jobs_round_trip_and_page,
            concurrent_opens_of_one_pair_make_one_thread_and_one_system_message,
            a_job_thread_and_the_direct_thread_of_a_pair_are_different,
            concurrent_appends_take_seqs_without_gaps_or_repeats,
            a_repeated_client_msg_id_returns_the_first_message,
            a_client_msg_id_is_scoped_to_its_sender_and_thread,
            concurrent_reuses_of_a_key_store_one_message_and_refuse_other_texts,
            an_inbox_walk_by_cursor_repeats_nothing_and_skips_only_what_moved,
            concurrent_proposals_of_one_freelancer_store_one_and_one_thread,
            a_batch_commits_together_and_refuses_only_its_bad_messages,
            a_batch_over_several_threads_moves_each_threads_seq_and_activity,
            appending_to_an_unknown_thread_is_not_found,
            appending_as_an_unknown_sender_is_refused_and_stores_nothing,
            text_is_stored_verbatim,
            releasing_memory_loses_nothing_and_the_store_goes_on,
            message_pages_follow_their_cursor_in_seq_order,
            read_markers_move_forward_only_and_drive_unread_counts,
            a_thread_is_invisible_to_outsiders,
            the_inbox_lists_threads_by_latest_activity,
            a_proposal_and_its_thread_are_written_together_or_not_at_all,
            a_refresh_token_rotates_once_and_a_reuse_spends_its_family,
            concurrent_rotations_of_one_refresh_token_rotate_it_once,
            expired_refresh_tokens_are_not_rotated_and_are_forgotten,
            host_users_are_provisioned_once_by_external_id_and_updated,
            host_jobs_are_upserted_by_external_id,
            a_host_system_message_is_idempotent_by_key_and_unread_for_everyone,
            seqs_stay_gapless_when_system_messages_come_between_sends,
            events_are_recorded_with_what_they_describe_in_one_gapless_order,
            one_holder_has_the_event_lease_until_it_lapses
        );
    };
    (@each $make:expr; $($name:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make.await;
                crate::conformance::$name(store).await;
            }
        )+
    };
}
