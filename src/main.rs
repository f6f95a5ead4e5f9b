//! The `confab` binary: parses the command line and runs a subcommand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use confab::app::{self, App};
use confab::auth::{JwtKeys, TokenKind};
use confab::bus::LocalBus;
use confab::chat::Chat;
use confab::config::{Cli, Command, Config, Limits, LogFormat, ServeArgs, StoreArgs, TokensArgs};
use confab::demo;
use confab::store::{self, Store};
use confab::ws::Hub;
use serde_json::json;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    confab::memory::configure();
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    match &cli.command {
        Some(Command::Serve(args)) => runtime.worker_threads(args.worker_threads()),
        None => runtime.worker_threads(cli.serve.worker_threads()),
        _ => &mut runtime,
    };
    runtime.enable_all().build().context("starting the async runtime")?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = match &cli.command {
        Some(Command::Serve(a)) => a.log_format,
        None => cli.serve.log_format,
        _ => LogFormat::Text,
    };
    init_logging(format);
    match cli.command {
        None => serve(&cli.serve).await,
        Some(Command::Serve(args)) => serve(&args).await,
        Some(Command::Migrate(args)) => migrate(&args).await,
        Some(Command::Demo(args)) => load_demo(&args).await,
        Some(Command::Tokens(args)) => tokens(&args).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::from(args);
    let app = App::build(config).await?;
    if args.demo {
        let loaded = demo::load(app.chat()).await.context("loading the demo marketplace")?;
        tracing::info!(
            users = loaded.users,
            jobs = loaded.jobs,
            "demo marketplace loaded (password: {})",
            demo::PASSWORD
        );
    }
    let addr = app.local_addr()?;
    tracing::info!(%addr, workers = args.worker_threads(), "confab is listening on http://{addr}/ (API reference: http://{addr}/api/openapi.json)");
    app.run_until_stopped(app::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The store a command names, opened and migrated.
async fn open_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    store::connect(args.database_url().expose(), store::StoreOptions::default()).await.context("opening the database")
}

/// The use-cases for a command that serves no connections: events go to an empty hub.
async fn open_chat(args: &StoreArgs) -> anyhow::Result<Chat> {
    let store = open_store(args).await?;
    let hub = Arc::new(Hub::new(1, &prometheus::Registry::new())?);
    Ok(Chat::new(store, Arc::new(LocalBus::new(hub)), Limits::default())?)
}

/// Migrating needs the store alone: no use-cases, no committer, no hub.
async fn migrate(args: &StoreArgs) -> anyhow::Result<()> {
    open_store(args).await?;
    tracing::info!("the database schema is up to date");
    Ok(())
}

async fn load_demo(args: &StoreArgs) -> anyhow::Result<()> {
    let chat = open_chat(args).await?;
    let loaded = demo::load(&chat).await.context("loading the demo marketplace")?;
    tracing::info!(users = loaded.users, jobs = loaded.jobs, "demo marketplace loaded (password: {})", demo::PASSWORD);
    Ok(())
}

async fn tokens(args: &TokensArgs) -> anyhow::Result<()> {
    let chat = open_chat(&args.store).await?;
    let secret = app::jwt_secret(&args.store.data_dir, args.jwt_secret.as_ref())?;
    let ttl = Duration::from_secs(args.ttl);
    let keys = JwtKeys::new(&secret, ttl, ttl);
    let mut out = BTreeMap::new();
    for username in &args.users {
        let user = chat
            .store()
            .user_by_username(username)
            .await?
            .with_context(|| format!("no user named {username:?} (run `confab demo` first?)"))?;
        let access = keys.issue(user.id, TokenKind::Access, Some(ttl))?;
        let refresh = keys.issue_refresh(user.id, None)?;
        chat.remember_refresh(user.id, &refresh).await?;
        out.insert(username.clone(), json!({"user": user, "access": access, "refresh": refresh.token}));
    }
    let text = serde_json::to_string_pretty(&out)?;
    app::write_private(&args.out, text.as_bytes(), true).with_context(|| format!("writing {}", args.out.display()))?;
    tracing::info!(path = %args.out.display(), users = out.len(), "tokens written");
    Ok(())
}
