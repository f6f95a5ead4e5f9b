//! The message writer's workload on bare SQLite (through rusqlite), without the
//! server: batches of messages over 500 threads of two users each, inserted as
//! `store::sqlite_writer` does (one transaction a batch, the key index, each
//! thread's seq updated once a batch). Built against two rusqlite versions by
//! `sqlite_versions.sh`, it compares bundled SQLite versions and page sizes.
//!   sqlite_writer_load DB BATCH MESSAGES [SYNCHRONOUS]     (PAGE=1024 for the page size)
use std::collections::HashMap;
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior, params};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, batch, total, rest @ ..] = args.as_slice() else {
        eprintln!("usage: sqlite_writer_load DB BATCH MESSAGES [SYNCHRONOUS]");
        std::process::exit(2);
    };
    let (batch, total): (usize, usize) = (batch.parse().expect("BATCH"), total.parse().expect("MESSAGES"));
    let sync = rest.first().map_or("OFF", String::as_str);
    let page: usize = std::env::var("PAGE").map_or(4096, |p| p.parse().expect("PAGE"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let mut conn = Connection::open(path).expect("open");
    conn.execute_batch(&format!(
        "PRAGMA page_size = {page}; PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
         PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = {};",
        16384 * 4096 / page
    ))
    .expect("pragmas");
    conn.execute_batch(
        "CREATE TABLE threads (id BLOB PRIMARY KEY, last_seq INTEGER NOT NULL, activity INTEGER NOT NULL);
         CREATE TABLE messages (id BLOB PRIMARY KEY, thread_id BLOB NOT NULL, seq INTEGER NOT NULL,
           kind TEXT NOT NULL, sender_id INTEGER, actor_id INTEGER, text TEXT NOT NULL,
           metadata TEXT NOT NULL DEFAULT '{}', client_msg_id TEXT, created_at INTEGER NOT NULL,
           UNIQUE (thread_id, seq));
         CREATE UNIQUE INDEX messages_client_msg_id ON messages (sender_id, thread_id, client_msg_id)
           WHERE client_msg_id IS NOT NULL;",
    )
    .expect("schema");
    // Thread ids in no order, as v4 UUIDs are; message ids in time order, as v7 are.
    let threads: Vec<[u8; 16]> = (0..500u32)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
            id
        })
        .collect();
    for t in &threads {
        conn.execute("INSERT INTO threads VALUES (?1, 0, 0)", params![&t[..]]).expect("thread");
    }
    let (mut seqs, mut sent) = (vec![0i64; threads.len()], vec![0u64; 2 * threads.len()]);
    let (mut n, mut random) = (0u64, 88_172_645_463_325_252u64);
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (id, thread_id, seq, kind, sender_id, actor_id, text, metadata, \
                     client_msg_id, created_at) VALUES (?1, ?2, ?3, 'user', ?4, ?4, ?5, '{}', ?6, ?7) \
                     ON CONFLICT (sender_id, thread_id, client_msg_id) WHERE client_msg_id IS NOT NULL DO NOTHING",
                )
                .expect("insert");
            let mut tip =
                tx.prepare_cached("UPDATE threads SET last_seq = ?2, activity = ?3 WHERE id = ?1").expect("tip");
            let mut tips = HashMap::new();
            for _ in 0..batch {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                let user = usize::try_from(random % sent.len() as u64).expect("user");
                let thread = user / 2;
                seqs[thread] += 1;
                sent[user] += 1;
                n += 1;
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&n.to_be_bytes());
                id[8..].copy_from_slice(&random.to_le_bytes());
                let key = format!("lg-{user}-{}", sent[user]);
                let text = "a message of the length the load generator sends";
                let (sender, at) = (i64::try_from(user + 1).expect("user"), i64::try_from(n).expect("n"));
                insert
                    .execute(params![&id[..], &threads[thread][..], seqs[thread], sender, text, key, at])
                    .expect("message");
                tips.insert(thread, seqs[thread]);
            }
            for (thread, seq) in tips {
                tip.execute(params![&threads[thread][..], seq, i64::try_from(n).expect("n")]).expect("seq");
            }
        }
        tx.commit().expect("commit");
        done += batch;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "SQLite {} page {page} batch {batch}: {:.2} µs a message over {total}",
        rusqlite::version(),
        seconds * 1e6 / total as f64
    );
}
