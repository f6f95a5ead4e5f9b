//! `confab-loadgen`: see the crate's documentation and `docs/benchmarks.md`.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use confab_loadgen::{history, idle, pairs, relay, stalled, users};

#[derive(Parser)]
#[command(name = "confab-loadgen", about = "Load generator for servers that keep Confab's wire contract")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Users in pairs messaging each other by recipient_id, closed loop (a window per
    /// user) or open loop (`--rate`).
    Pairs {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Unacknowledged messages per user.
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Open loop: messages per second across all users, sent on a fixed schedule
        /// whatever the answers (the window is then ignored).
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds of warm-up (not counted), then of measurement.
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Seconds after the end within which a delivery still counts.
        #[arg(long, default_value_t = 5)]
        grace: u64,
        /// Pairs whose history is read back to check that every ack is stored (0: none).
        #[arg(long, default_value_t = 20)]
        verify_pairs: usize,
        /// Idempotency keys spread at random over the key space, as clients' UUID v4
        /// keys are, instead of growing within each user's run.
        #[arg(long)]
        random_keys: bool,
    },
    /// Many authenticated connections held open: accept rate, server memory per
    /// connection, and a sample sent through them to prove they are live.
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connections per user (at most the server's per-user cap).
        #[arg(long, default_value_t = 16)]
        per_user: usize,
        /// Handshakes in flight at a time.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Seconds the connections are held before the server's memory is read.
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// Seconds the server's memory must be steady before each reading (before the
        /// connections open, and after the hold); longer than the server's 5 s check
        /// for a quiet moment to give memory back. 0 reads at once.
        #[arg(long, default_value_t = 6)]
        steady: u64,
        /// Connections that send a message to prove the rest are live.
        #[arg(long, default_value_t = 100)]
        sample: usize,
    },
    /// Connections that stop reading while others send to them: the server's
    /// memory meanwhile, and whether it closes them.
    Stalled {
        #[command(flatten)]
        target: Target,
        /// Pairs: one user stalls, the other sends to it.
        #[arg(long, default_value_t = 500)]
        pairs: usize,
        /// Stalled connections per stalled user (at most the server's per-user cap).
        #[arg(long, default_value_t = 4)]
        per_user: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Characters per message.
        #[arg(long, default_value_t = 2000)]
        text_len: usize,
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Seconds after the flood before the server's connections are counted
        /// (longer than its write timeout).
        #[arg(long, default_value_t = 15)]
        settle: u64,
    },
    /// Preloads messages, then measures sending and history pages.
    History {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Messages stored before measuring.
        #[arg(long, default_value_t = 1_000_000)]
        preload: u64,
        #[arg(long, default_value_t = 8)]
        window: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// History pages read after the send run, and their size.
        #[arg(long, default_value_t = 2000)]
        pages: usize,
        #[arg(long, default_value_t = 50)]
        page_limit: u32,
        /// Idempotency keys spread at random over the key space, as clients' UUID v4
        /// keys are, instead of growing within each user's run.
        #[arg(long)]
        random_keys: bool,
    },
    /// The baseline: a bare in-memory relay keeping just enough of the contract for `pairs`.
    Relay {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
    },
}

/// What every scenario is pointed at, and how it reports.
#[derive(clap::Args)]
struct Target {
    /// The server, e.g. http://127.0.0.1:8080; for `pairs`, several nodes of one
    /// deployment, comma-separated (users are spread over them; sign-ups go to the first).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    base: Vec<String>,
    /// The server's process id, to report its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Sign-ups and sign-ins at a time.
    #[arg(long, default_value_t = 64)]
    signup_concurrency: usize,
    /// Prefix of the users' names (a run's users can be signed in again by a later run).
    #[arg(long, default_value = "lg")]
    prefix: String,
    /// One JSON line with every figure instead of the summary.
    #[arg(long)]
    json: bool,
}

impl Target {
    /// Registers and signs in `count` users on the first server; answers every server.
    async fn users(&self, count: usize) -> anyhow::Result<(Vec<String>, Vec<users::SignedIn>)> {
        let bases: Vec<String> = self.base.iter().map(|b| b.trim_end_matches('/').to_owned()).collect();
        let first = bases.first().context("--base names no server")?;
        let signed_in = users::sign_up(first, &self.prefix, count, self.signup_concurrency).await?;
        Ok((bases, signed_in))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Relay { listen } => {
            let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
            eprintln!("relay listening on http://{}/", listener.local_addr()?);
            relay::serve(listener, None).await?;
        }
        Command::Idle { target, connections, per_user, concurrency, hold, sample, steady } => {
            let (base, signed_in) = target.users(connections.div_ceil(per_user.max(1)).max(2)).await?;
            let server_pid = target.server_pid;
            let options = idle::Options {
                connections,
                concurrency,
                hold: Duration::from_secs(hold),
                sample,
                server_pid,
                steady: Duration::from_secs(steady),
            };
            let r = idle::run(&base[0], &signed_in, &options).await?;
            if target.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let mib = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1} MiB"));
                println!(
                    "idle: {} of {} connections opened in {:.1} s ({:.0}/s), {} failed {:?}\n  open after the hold: {}\n  server rss {} before, {} held: {} per connection\n  sample: {} sent, {} acked, {} of {} deliveries",
                    r.opened,
                    r.requested,
                    r.connect_seconds,
                    r.connections_per_second,
                    r.failed,
                    r.errors,
                    r.open_after_hold,
                    mib(r.server_rss_before_mib),
                    mib(r.server_rss_held_mib),
                    r.server_rss_per_connection_kib.map_or("?".to_owned(), |k| format!("{k:.1} KiB")),
                    r.sample_sent,
                    r.sample_acked,
                    r.sample_delivered,
                    r.sample_expected_deliveries,
                );
            }
        }
        Command::Stalled { target, pairs, per_user, seconds, text_len, window, settle } => {
            let (base, signed_in) = target.users(pairs * 2).await?;
            let options = stalled::Options {
                per_user,
                flood: Duration::from_secs(seconds),
                text_len,
                window,
                settle: Duration::from_secs(settle),
                server_pid: target.server_pid,
            };
            let r = stalled::run(&base[0], &signed_in, &options).await?;
            if target.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let mib = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1} MiB"));
                let n = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.0}"));
                println!(
                    "stalled: {} stalled connections, {} senders, {} messages acked, errors {:?}\n  server rss {} before, {} at the peak ({} per stalled connection), {} after\n  server connections after: {}; closed for a write timeout: {}, for a full queue: {}",
                    r.stalled_connections,
                    r.senders,
                    r.messages_acked,
                    r.send_errors,
                    mib(r.server_rss_before_mib),
                    mib(r.server_rss_peak_mib),
                    r.server_rss_peak_per_stalled_kib.map_or("?".to_owned(), |k| format!("{k:.1} KiB")),
                    mib(r.server_rss_after_mib),
                    n(r.server_connections_after),
                    n(r.server_write_timeout_closes),
                    n(r.server_slow_consumer_closes),
                );
            }
        }
        Command::History { target, users: count, preload, window, seconds, pages, page_limit, random_keys } => {
            let (base, signed_in) = target.users(count).await?;
            let send = pairs::Options {
                window,
                rate: None,
                warmup: Duration::from_secs(5),
                duration: Duration::from_secs(seconds),
                grace: Duration::from_secs(5),
                verify_pairs: 20,
                server_pid: target.server_pid,
                random_keys,
            };
            let options = history::Options { preload, send, pages, page_limit };
            let r = history::run(&base, &signed_in, &options).await?;
            if target.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let p = &r.page_ms;
                println!(
                    "history: {} messages preloaded in {:.0} s\n  then sending: {:.0} msg/s, {} lost\n  history pages: p50 {:.2} p99 {:.2} max {:.2} ms ({} pages, {} errors)",
                    r.preloaded,
                    r.preload_seconds,
                    r.send.acked_per_second,
                    r.send.lost_undelivered + r.send.lost_in_store.unwrap_or(0),
                    p.p50,
                    p.p99,
                    p.max,
                    p.count,
                    r.page_errors,
                );
            }
        }
        Command::Pairs { target, users: count, window, rate, warmup, seconds, grace, verify_pairs, random_keys } => {
            let (base, signed_in) = target.users(count).await?;
            let options = pairs::Options {
                window,
                rate,
                warmup: Duration::from_secs(warmup),
                duration: Duration::from_secs(seconds),
                grace: Duration::from_secs(grace),
                verify_pairs,
                server_pid: target.server_pid,
                random_keys,
            };
            let report = pairs::run(&base, &signed_in, &options).await?;
            if target.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let d = &report.delivery_ms;
                let pace = report
                    .offered_per_second
                    .map_or(format!("window {}", report.window), |r| format!("open loop at {r:.0} msg/s"));
                println!(
                    "pairs: {} users, {pace}, {:.0} s\n  acked {:.0} msg/s, delivered {:.0} msg/s\n  delivery ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n  ack ms p50 {:.2} p99 {:.2}\n  errors {:?}\n  lost: {} undelivered, {} missing from the store (of {} checked)\n  server: cpu {} rss {}",
                    report.users,
                    report.seconds,
                    report.acked_per_second,
                    report.delivered_per_second,
                    d.p50,
                    d.p90,
                    d.p99,
                    d.p999,
                    d.max,
                    report.ack_ms.p50,
                    report.ack_ms.p99,
                    report.errors,
                    report.lost_undelivered,
                    report.lost_in_store.map_or("?".to_owned(), |n| n.to_string()),
                    report.verified_messages,
                    report.server_cpu_percent.map_or("?".to_owned(), |c| format!("{c:.0}%")),
                    report.server_rss_mib.map_or("?".to_owned(), |r| format!("{r:.0} MiB")),
                );
            }
        }
    }
    Ok(())
}
