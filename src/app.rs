//! Builds a server from a [`Config`]: opens the store, loads the signing key, builds
//! the state and merges the REST and WebSocket routers, binds the listener; then
//! serves until a shutdown signal. Binding before serving lets tests use port 0 and
//! connect at once, with no sleep.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use axum::extract::FromRef;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{HostKeys, JwtKeys};
use crate::bus::{Bus, LocalBus, RedisBus};
use crate::chat::Chat;
use crate::config::{Config, HostConfig, Secret, redact_url};
use crate::http::{self, HttpState, Metrics};
use crate::ws::{self, Hub, WsState};
use crate::{server, store, webhook};

/// How long shutdown waits for WebSocket sessions: their acks and close frames
/// (5 s) and the clients' answers (5 s), with room to spare.
const SESSIONS_GRACE: Duration = Duration::from_secs(15);

/// Shorter secrets are guessable offline from any token; 32 bytes matches HS256's key size.
const MIN_SECRET_LEN: usize = 32;
const SECRET_FILE: &str = "jwt_secret";
const LOCK_FILE: &str = "confab.lock";

/// What the routes share, built once; the REST routes and the WebSocket's each
/// take their part of it ([`HttpState`], [`WsState`]). Cloned cheaply (`Arc`s).
#[derive(Clone)]
pub struct AppState {
    pub chat: Chat,
    pub keys: Arc<JwtKeys>,
    /// The host marketplace's token key, when it signs tokens for its users.
    pub host_keys: Option<Arc<HostKeys>>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// This node's live WebSocket connections.
    pub hub: Arc<Hub>,
    /// Cancelled when the server stops: WebSocket readers stop taking frames.
    pub shutdown: CancellationToken,
    /// The WebSocket sessions, so shutdown can wait for them to close.
    pub sessions: TaskTracker,
}

impl FromRef<AppState> for HttpState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            chat: state.chat.clone(),
            keys: state.keys.clone(),
            host_keys: state.host_keys.clone(),
            metrics: state.metrics.clone(),
            config: state.config.clone(),
        }
    }
}

impl FromRef<AppState> for WsState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            chat: state.chat.clone(),
            keys: state.keys.clone(),
            host_keys: state.host_keys.clone(),
            hub: state.hub.clone(),
            limits: Arc::new(state.config.ws),
            allowed_origins: Arc::new(state.config.allowed_origins.clone()),
            trust_forwarded_for: state.config.trust_forwarded_for,
            shutdown: state.shutdown.clone(),
            sessions: state.sessions.clone(),
        }
    }
}

/// A server that is bound and ready to serve.
pub struct App {
    listener: TcpListener,
    /// `/metrics`, when it is served apart from the public listener.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    /// Stops webhook delivery (handing its lease over) when the node stops.
    webhooks: CancellationToken,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
    /// Held while the node runs: one node per data directory and per SQLite file.
    _locks: (std::fs::File, Option<std::fs::File>),
}

impl App {
    /// Connects and migrates the store, loads the key, and binds the listener.
    ///
    /// # Errors
    /// A store that cannot be opened, a bad secret, or an address that cannot be bound.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        let database_lock = match config.database_url.expose() {
            url if url.starts_with("sqlite:") => store::SqliteStore::lock_for_node(url)?,
            _ => None,
        };
        let options = store::StoreOptions { events: config.host.webhook.is_some() };
        let store = store::connect(config.database_url.expose(), options).await.context("opening the database")?;
        let secret = jwt_secret(&config.data_dir, config.jwt_secret.as_ref())?;
        let keys = JwtKeys::new(&secret, config.access_token_ttl, config.refresh_token_ttl);
        let metrics = Arc::new(Metrics::new()?);
        let hub = Arc::new(Hub::new(config.ws.max_connections_per_user, metrics.registry())?);
        let bus: Arc<dyn Bus> = match &config.redis_url {
            Some(url) => Arc::new(RedisBus::connect(url.expose(), &config.redis_prefix, hub.clone()).await?),
            None => Arc::new(LocalBus::new(hub.clone())),
        };
        hub.attach(&bus);
        let host_keys = host_keys(&config.host)?;
        check_host_secrets(&config.host)?;
        let chat = Chat::new(store, bus, config.limits).context("starting the password hashers")?;
        chat.register_metrics(metrics.registry())?;
        let webhooks = CancellationToken::new();
        let mut dispatcher = None;
        if let Some(webhook) = &config.host.webhook {
            let retention = config.host.event_retention;
            let holder = node_name(&config.data_dir);
            let task =
                webhook::spawn(chat.clone(), webhook.clone(), retention, holder, metrics.registry(), webhooks.clone())
                    .context("starting webhook delivery")?;
            dispatcher = Some(task);
            tracing::info!(url = %redact_url(&webhook.url), "delivering events to the webhook");
        }
        let state = AppState {
            chat,
            keys: Arc::new(keys),
            host_keys,
            metrics,
            config: Arc::new(config),
            hub,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
        };
        let (chat, hub) = (state.chat.clone(), state.hub.clone());
        let release = move || {
            let (chat, hub) = (chat.clone(), hub.clone());
            async move {
                chat.release_memory().await;
                hub.release_memory();
            }
        };
        crate::memory::spawn_trimmer(release, state.metrics.registry(), state.shutdown.clone())
            .context("starting the memory trimmer")?;
        let listener =
            TcpListener::bind(state.config.listen).await.with_context(|| format!("binding {}", state.config.listen))?;
        let metrics_listener = match state.config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding {addr} for /metrics"))?),
            None => None,
        };
        Ok(Self { listener, metrics_listener, state, webhooks, dispatcher, _locks: (data_dir_lock, database_lock) })
    }

    /// The address actually bound (the real port when the config said 0).
    ///
    /// # Errors
    /// Only if the OS cannot report the socket's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address `/metrics` is served on when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn chat(&self) -> &Chat {
        &self.state.chat
    }

    /// Serves until `shutdown` completes; then stops accepting, finishes in-flight
    /// requests, closes every WebSocket with 1001, and stores every message already
    /// queued before returning.
    ///
    /// # Errors
    /// An I/O error of the listener.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (token, hub) = (self.state.shutdown.clone(), self.state.hub.clone());
        let (sessions, chat) = (self.state.sessions.clone(), self.state.chat.clone());
        let stop_accepting = CancellationToken::new();
        let stopping = (token.clone(), stop_accepting.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => {},
                () = stopping.0.cancelled() => {},
            }
            stopping.1.cancel();
        });
        let limits = self.state.config.http;
        let rest = HttpState::from_ref(&self.state);
        if let Some(listener) = self.metrics_listener {
            let metrics = http::metrics_service(rest.clone());
            tokio::spawn(server::serve(listener, metrics, limits, stop_accepting.clone()));
        }
        // One app: the WebSocket routes answer through the REST routes' middleware.
        let routes = http::router(rest.clone()).merge(ws::router(WsState::from_ref(&self.state)));
        let service = http::service(http::with_middleware(routes, &rest));
        server::serve(self.listener, service, limits, stop_accepting).await;
        // Stop reading frames, store what was accepted (its acks are queued), then
        // let every writer flush and close with 1001.
        token.cancel();
        chat.finish_sends().await;
        hub.close_all();
        sessions.close();
        if tokio::time::timeout(SESSIONS_GRACE, sessions.wait()).await.is_err() {
            tracing::warn!("some WebSocket sessions did not close in time");
        }
        self.webhooks.cancel();
        if let Some(task) = self.dispatcher
            && tokio::time::timeout(Duration::from_secs(2), task).await.is_err()
        {
            tracing::warn!("webhook delivery did not stop in time");
        }
        chat.bus().close();
        Ok(())
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

/// This node's name among the deployment's: its host and data directory, which
/// only one node at a time may hold (`lock_data_dir`). The same after a restart.
fn node_name(data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{host}:{}", dir.display())
}

/// The host marketplace's token key, when one is configured.
///
/// # Errors
/// A secret that is too short, or a public key file that cannot be read or parsed.
fn host_keys(host: &HostConfig) -> anyhow::Result<Option<Arc<HostKeys>>> {
    let issuer = host.jwt_issuer.as_deref();
    if let Some(secret) = &host.jwt_secret {
        anyhow::ensure!(
            secret.expose().len() >= MIN_SECRET_LEN,
            "CONFAB_HOST_JWT_SECRET must be at least {MIN_SECRET_LEN} characters"
        );
        return Ok(Some(Arc::new(HostKeys::hs256(secret.expose().as_bytes(), issuer))));
    }
    let Some(path) = &host.jwt_public_key else { return Ok(None) };
    let pem = std::fs::read(path).with_context(|| format!("reading the host token key {}", path.display()))?;
    let keys = HostKeys::from_public_key_pem(&pem, issuer)
        .map_err(|e| anyhow::anyhow!("the host token key {}: {e}", path.display()))?;
    Ok(Some(Arc::new(keys)))
}

/// The server API key and the webhook secret are guessable when short; a webhook
/// URL must be one a client can POST to.
///
/// # Errors
/// The first setting that is not usable, named.
fn check_host_secrets(host: &HostConfig) -> anyhow::Result<()> {
    if let Some(key) = &host.server_api_key {
        anyhow::ensure!(
            key.expose().len() >= MIN_SECRET_LEN,
            "CONFAB_SERVER_API_KEY must be at least {MIN_SECRET_LEN} characters"
        );
    }
    if let Some(webhook) = &host.webhook {
        anyhow::ensure!(
            webhook.secret.expose().len() >= MIN_SECRET_LEN,
            "CONFAB_WEBHOOK_SECRET must be at least {MIN_SECRET_LEN} characters"
        );
        let url = reqwest::Url::parse(&webhook.url)
            .map_err(|e| anyhow::anyhow!("CONFAB_WEBHOOK_URL {:?} is not a URL: {e}", webhook.url))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "CONFAB_WEBHOOK_URL must be an http:// or https:// URL"
        );
    }
    Ok(())
}

/// Two nodes on one data directory would share its key file and, on SQLite, its
/// database; the second one stops with an error that says so.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let hint = "give each node its own --data-dir";
    Ok(crate::lockfile::lock(&data_dir.join(LOCK_FILE), "the data directory's lock", hint)?)
}

/// The signing key: the configured one, or the one kept in the data directory
/// (generated with mode 0600 on first start, so every restart keeps sessions valid).
///
/// # Errors
/// A configured secret that is too short, or a key file that cannot be read or written.
pub fn jwt_secret(data_dir: &Path, configured: Option<&Secret>) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = configured {
        anyhow::ensure!(
            s.expose().len() >= MIN_SECRET_LEN,
            "CONFAB_JWT_SECRET must be at least {MIN_SECRET_LEN} characters"
        );
        return Ok(s.expose().as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= MIN_SECRET_LEN => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{} is shorter than {MIN_SECRET_LEN} characters; delete it to generate a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let secret: String = {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rngs::OsRng.r#gen();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    write_private(&path, secret.as_bytes(), false).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a new JWT signing key");
    Ok(secret.into_bytes())
}

/// Writes a file only its owner can read (it holds credentials).
///
/// # Errors
/// Any I/O error, or an existing file when `replace` is false (so two nodes
/// starting at once cannot each write a different key).
pub fn write_private(path: &Path, contents: &[u8], replace: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    if replace {
        options.write(true).create(true).truncate(true);
    } else {
        options.write(true).create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}
