//! `confab-loadgen`: see the crate's documentation and `docs/benchmarks.md`.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use confab_loadgen::{pairs, relay, users};

#[derive(Parser)]
#[command(name = "confab-loadgen", about = "Load generator for servers that keep Confab's wire contract")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Users in pairs messaging each other by recipient_id, closed loop.
    Pairs {
        /// The server, e.g. http://127.0.0.1:8080.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Unacknowledged messages per user.
        #[arg(long, default_value_t = 8)]
        window: usize,
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
    },
    /// The baseline: a bare in-memory relay keeping just enough of the contract for `pairs`.
    Relay {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Relay { listen } => {
            let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
            eprintln!("relay listening on http://{}/", listener.local_addr()?);
            relay::serve(listener, None).await?;
        }
        Command::Pairs {
            base,
            users: count,
            window,
            warmup,
            seconds,
            grace,
            verify_pairs,
            server_pid,
            signup_concurrency,
            prefix,
            json,
        } => {
            let base = base.trim_end_matches('/').to_owned();
            let signed_in = users::sign_up(&base, &prefix, count, signup_concurrency).await?;
            let options = pairs::Options {
                window,
                warmup: Duration::from_secs(warmup),
                duration: Duration::from_secs(seconds),
                grace: Duration::from_secs(grace),
                verify_pairs,
                server_pid,
            };
            let report = pairs::run(&base, &signed_in, &options).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let d = &report.delivery_ms;
                println!(
                    "pairs: {} users, window {}, {:.0} s\n  acked {:.0} msg/s, delivered {:.0} msg/s\n  delivery ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n  ack ms p50 {:.2} p99 {:.2}\n  errors {:?}\n  lost: {} undelivered, {} missing from the store (of {} checked)\n  server: cpu {} rss {}",
                    report.users,
                    report.window,
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
