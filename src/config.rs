//! The command line and environment: one clap struct per subcommand, each flag
//! with an environment variable of the same meaning, so `confab --help` is the
//! configuration reference. Defaults run with nothing installed, each written
//! once (a `DEFAULT` const the flag and `Default` share). A leaf: the limit structs
//! of the layers above live here, so they import config and config imports none of them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Seconds in a day, for the flags counted in days.
const DAY: u64 = 24 * 3600;

/// A value that must not reach a log: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A URL as it may be logged: the password (in the authority or a `password=`
/// query parameter) replaced by `***`. Unlike a [`Secret`]'s `Debug`, it keeps
/// the host and database, which an error about a connection must name.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (rest, query) = rest.split_once('?').map_or((rest, None), |(r, q)| (r, Some(q)));
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{credentials}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut shown = format!("{scheme}://{authority}");
    if let Some(path) = path {
        shown.push('/');
        shown.push_str(path);
    }
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

#[derive(Debug, Parser)]
#[command(name = "confab", version, about = "Real-time chat server for online marketplaces")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand, `confab` serves with these options.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API, the WebSocket endpoint and the web UI (the default).
    /// Boxed: far larger than the other commands' arguments.
    Serve(Box<ServeArgs>),
    /// Bring the database schema up to date and exit.
    Migrate(StoreArgs),
    /// Load the demo marketplace (safe to run again: it adds only what is missing).
    Demo(StoreArgs),
    /// Write access and refresh tokens for named users to a JSON file.
    Tokens(TokensArgs),
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the SQLite database and the generated signing key.
    #[arg(long, env = "CONFAB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default: `confab.db` in the data directory.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<Secret>,
}

impl StoreArgs {
    /// The database URL in force: the given one, or the SQLite file in the data dir.
    pub fn database_url(&self) -> Secret {
        self.database_url
            .clone()
            .unwrap_or_else(|| Secret::new(format!("sqlite://{}", self.data_dir.join("confab.db").display())))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "CONFAB_LISTEN", default_value_t = Config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// `redis://…` joins the other nodes through Redis pub/sub; unset means the
    /// in-process bus (one node).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<Secret>,
    /// Prefix of this deployment's Redis channels, so deployments can share a Redis.
    #[arg(long, env = "CONFAB_REDIS_PREFIX", default_value = Config::DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,
    /// Web origins besides the server's own that may embed the chat widget
    /// (comma-separated, e.g. `https://market.example`): their WebSocket handshakes
    /// are accepted and REST answers their CORS preflights. Others are refused with 403.
    #[arg(long, env = "CONFAB_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<String>,
    /// HS256 signing key shared by all nodes (at least 32 characters); generated
    /// into the data directory when unset.
    #[arg(long, env = "CONFAB_JWT_SECRET")]
    pub jwt_secret: Option<Secret>,
    /// Load the demo marketplace before serving.
    #[arg(long)]
    pub demo: bool,
    /// Longest message text, in characters.
    #[arg(long, env = "CONFAB_MAX_TEXT_CHARS", default_value_t = Limits::DEFAULT.max_text_chars)]
    pub max_text_chars: usize,
    /// Largest request body, in bytes; larger ones get 413.
    #[arg(long, env = "CONFAB_MAX_BODY_BYTES", default_value_t = Config::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Messages, typing and read frames a user may send per second (all devices together).
    #[arg(long, env = "CONFAB_RATE_LIMIT", default_value_t = Limits::DEFAULT.messages_per_second)]
    pub rate_limit: u32,
    /// How many of those a user may send in one burst.
    #[arg(long, env = "CONFAB_RATE_BURST", default_value_t = Limits::DEFAULT.message_burst)]
    pub rate_burst: u32,
    /// Hire Me, proposals and proposal chats one user may start per minute, on average.
    #[arg(long, env = "CONFAB_WORKFLOWS_PER_MINUTE", default_value_t = Limits::DEFAULT.workflows_per_minute)]
    pub workflows_per_minute: u32,
    /// …and in a burst.
    #[arg(long, env = "CONFAB_WORKFLOW_BURST", default_value_t = Limits::DEFAULT.workflow_burst)]
    pub workflow_burst: u32,
    /// Seconds a client has to send a request's headers; slower ones are dropped.
    #[arg(long, env = "CONFAB_HTTP_HEADER_TIMEOUT", default_value_t = HttpLimits::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub http_header_timeout: u64,
    /// Seconds a request (its body included) may take before it is answered 503.
    #[arg(long, env = "CONFAB_HTTP_REQUEST_TIMEOUT", default_value_t = Config::DEFAULT_REQUEST_TIMEOUT.as_secs())]
    pub http_request_timeout: u64,
    /// Connections open at once, HTTP and WebSocket; past it, 503. Default: the
    /// process's descriptor limit less 256 (for the database, logs and Redis).
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// WebSocket connections from one client address.
    #[arg(
        long,
        env = "CONFAB_WS_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = WsLimits::DEFAULT.max_connections_per_address,
    )]
    pub ws_max_connections_per_address: usize,
    /// Serve `/metrics` on this address (e.g. 127.0.0.1:9100) instead of the public one.
    #[arg(long, env = "CONFAB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Threads that run connections and requests. Default: one per core, less one
    /// with SQLite, whose writer thread commits every message and needs a core of
    /// its own. Nodes sharing a machine should split its cores between them.
    #[arg(long, env = "CONFAB_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
    /// Sign-in and sign-up attempts one client address may make per minute; past it, 429.
    #[arg(
        long,
        env = "CONFAB_SIGNIN_ATTEMPTS_PER_MINUTE",
        default_value_t = SignInLimits::DEFAULT.attempts_per_address_per_minute,
    )]
    pub signin_attempts_per_minute: u32,
    /// Failed sign-ins one account may have within the failure window before it is
    /// locked for the rest of the window (each failure past the third also delays the next try).
    #[arg(
        long,
        env = "CONFAB_SIGNIN_FAILURES_PER_ACCOUNT",
        default_value_t = SignInLimits::DEFAULT.failures_per_account,
    )]
    pub signin_failures_per_account: u32,
    /// The failure window, in seconds.
    #[arg(long, env = "CONFAB_SIGNIN_FAILURE_WINDOW", default_value_t = SignInLimits::DEFAULT.failure_window.as_secs())]
    pub signin_failure_window: u64,
    /// Take the client's address from the last entry of `X-Forwarded-For` (set this
    /// only behind a proxy that appends it, such as deploy/nginx.conf); otherwise
    /// the address is the TCP peer's.
    #[arg(long, env = "CONFAB_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// Frames queued for one WebSocket connection; a client further behind is closed with 1013.
    #[arg(long, env = "CONFAB_WS_QUEUE", default_value_t = WsLimits::DEFAULT.queue)]
    pub ws_queue: usize,
    /// Bytes of frames queued for one WebSocket connection; a client further behind is closed with 1013.
    #[arg(long, env = "CONFAB_WS_QUEUE_BYTES", default_value_t = WsLimits::DEFAULT.queue_bytes)]
    pub ws_queue_bytes: usize,
    /// Largest WebSocket frame, in bytes; larger ones close the connection with 1009.
    /// Smaller frames whose text is over the limit get a `payload_too_large` error.
    #[arg(long, env = "CONFAB_WS_MAX_FRAME_BYTES", default_value_t = WsLimits::DEFAULT.max_frame_bytes)]
    pub ws_max_frame_bytes: usize,
    /// Seconds between server pings.
    #[arg(long, env = "CONFAB_WS_PING_INTERVAL", default_value_t = WsLimits::DEFAULT.ping_interval.as_secs())]
    pub ws_ping_interval: u64,
    /// Seconds without any frame from the client (pongs count) before the server closes it.
    #[arg(long, env = "CONFAB_WS_IDLE_TIMEOUT", default_value_t = WsLimits::DEFAULT.idle_timeout.as_secs())]
    pub ws_idle_timeout: u64,
    /// Seconds a socket write may take (a client that stopped reading, or vanished);
    /// past it the connection is closed with 1013 and its memory freed.
    #[arg(long, env = "CONFAB_WS_WRITE_TIMEOUT", default_value_t = WsLimits::DEFAULT.write_timeout.as_secs())]
    pub ws_write_timeout: u64,
    /// Open WebSocket connections per user on one node.
    #[arg(
        long,
        env = "CONFAB_WS_MAX_CONNECTIONS_PER_USER",
        default_value_t = WsLimits::DEFAULT.max_connections_per_user,
    )]
    pub ws_max_connections_per_user: usize,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "CONFAB_ACCESS_TOKEN_TTL", default_value_t = Config::DEFAULT_ACCESS_TOKEN_TTL.as_secs())]
    pub access_token_ttl: u64,
    /// Lifetime of refresh tokens, in seconds.
    #[arg(long, env = "CONFAB_REFRESH_TOKEN_TTL", default_value_t = Config::DEFAULT_REFRESH_TOKEN_TTL.as_secs())]
    pub refresh_token_ttl: u64,
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "CONFAB_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Plugging into a marketplace that has its own users (docs/integration.md). All
/// of it is off until set.
#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    /// HS256 key (at least 32 characters) the marketplace signs its users' tokens with.
    #[arg(long, env = "CONFAB_HOST_JWT_SECRET", conflicts_with = "host_jwt_public_key")]
    pub host_jwt_secret: Option<Secret>,
    /// A PEM file with the public key of the marketplace's RS256 or ES256 user tokens.
    #[arg(long, env = "CONFAB_HOST_JWT_PUBLIC_KEY")]
    pub host_jwt_public_key: Option<PathBuf>,
    /// The `iss` every host token must carry.
    #[arg(long, env = "CONFAB_HOST_JWT_ISSUER")]
    pub host_jwt_issuer: Option<String>,
    /// The key (at least 32 characters) of `/api/server/`, the marketplace backend's API.
    #[arg(long, env = "CONFAB_SERVER_API_KEY")]
    pub server_api_key: Option<Secret>,
    /// Where every event is POSTed (message.created, thread.created, thread.read).
    #[arg(long, env = "CONFAB_WEBHOOK_URL", requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// The key (at least 32 characters) of the webhooks' `Confab-Signature`.
    #[arg(long, env = "CONFAB_WEBHOOK_SECRET", requires = "webhook_url")]
    pub webhook_secret: Option<Secret>,
    /// Seconds before a failed delivery is tried again; each next wait doubles.
    #[arg(long, env = "CONFAB_WEBHOOK_FIRST_RETRY", default_value_t = WebhookConfig::DEFAULT_FIRST_RETRY.as_secs())]
    pub webhook_first_retry: u64,
    /// Delivery attempts of one event before it is given up (it stays replayable).
    #[arg(long, env = "CONFAB_WEBHOOK_MAX_ATTEMPTS", default_value_t = WebhookConfig::DEFAULT_MAX_ATTEMPTS)]
    pub webhook_max_attempts: u32,
    /// Days events are kept for replay (`GET /api/server/events/`) once sent.
    #[arg(long, env = "CONFAB_EVENT_RETENTION_DAYS", default_value_t = HostConfig::RETENTION.as_secs() / DAY)]
    pub event_retention_days: u64,
}

/// Host tokens, the server API and webhooks, as configured.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub jwt_secret: Option<Secret>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub server_api_key: Option<Secret>,
    pub webhook: Option<WebhookConfig>,
    /// How long sent events stay replayable.
    pub event_retention: Duration,
}

/// Where and how events are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: Secret,
    /// The wait for the receiver's answer (the contract's 10 s).
    pub timeout: Duration,
    /// The delay before the second attempt; each next one doubles (with jitter), so
    /// the default's first 8 attempts span more than an hour.
    pub first_retry: Duration,
    /// The longest delay between two attempts.
    pub max_retry: Duration,
    pub max_attempts: u32,
}

impl WebhookConfig {
    pub const DEFAULT_FIRST_RETRY: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 12;

    pub fn new(url: impl Into<String>, secret: Secret) -> Self {
        Self {
            url: url.into(),
            secret,
            timeout: Duration::from_secs(10),
            first_retry: Self::DEFAULT_FIRST_RETRY,
            max_retry: Duration::from_secs(6 * 3600),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl HostConfig {
    /// Retention's default: the contract's week.
    pub const RETENTION: Duration = Duration::from_secs(7 * DAY);
}

impl Default for HostConfig {
    /// Nothing of the host's configured; events kept the contract's week (a derived
    /// default would keep them for no time at all).
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key: None,
            jwt_issuer: None,
            server_api_key: None,
            webhook: None,
            event_retention: Self::RETENTION,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TokensArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The signing key (as for `serve`); default: the one in the data directory.
    #[arg(long, env = "CONFAB_JWT_SECRET")]
    pub jwt_secret: Option<Secret>,
    /// Comma-separated usernames.
    #[arg(long, value_delimiter = ',', required = true)]
    pub users: Vec<String>,
    /// Where to write the tokens.
    #[arg(long, default_value = "workflow_test_tokens.json")]
    pub out: PathBuf,
    /// Lifetime of the access tokens, in seconds (long by default: they are for test tooling).
    #[arg(long, default_value_t = DAY)]
    pub ttl: u64,
}

/// Everything a server needs to start, resolved from the flags (or built directly by tests).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Secret,
    pub jwt_secret: Option<Secret>,
    pub redis_url: Option<Secret>,
    pub redis_prefix: String,
    /// Normalized (`scheme://host[:port]`, no trailing slash).
    pub allowed_origins: Vec<String>,
    /// Whether the client's address is the last `X-Forwarded-For` entry.
    pub trust_forwarded_for: bool,
    pub limits: Limits,
    pub max_body_bytes: usize,
    /// Header-read deadline and the connection cap of the accept loop.
    pub http: HttpLimits,
    /// Time a request may take before it is answered 503.
    pub http_request_timeout: Duration,
    /// Where `/metrics` is served when not on the public listener.
    pub metrics_listen: Option<SocketAddr>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub ws: WsLimits,
    pub host: HostConfig,
}

/// The bounds of WebSocket connections; each has its reason beside its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Frames queued per connection: about a minute of a busy chat, a few MB at most.
    pub queue: usize,
    /// Bytes of frames queued per connection: the frame bound alone let a client that
    /// stopped reading hold ~15 MiB of long messages before it was closed.
    pub queue_bytes: usize,
    /// Largest frame read: the contract's 1 MiB, far above the longest message text,
    /// so an over-long message gets an `error` that names it rather than a close.
    pub max_frame_bytes: usize,
    /// Pings keep proxies from dropping quiet connections and find dead ones.
    pub ping_interval: Duration,
    /// A client silent this long (three missed pings) is gone.
    pub idle_timeout: Duration,
    /// A write that does not complete in this long means a client that stopped
    /// reading (or a dead link): its frames would pile up in memory.
    pub write_timeout: Duration,
    /// How long a client that did not send a token may take to send its `auth` frame.
    pub auth_timeout: Duration,
    /// Enough for every device a person has; a bound so one account cannot hold many sockets.
    pub max_connections_per_user: usize,
    /// One office or carrier NAT holds many users; one attacker's address should not
    /// hold the node's sockets.
    pub max_connections_per_address: usize,
}

impl WsLimits {
    /// The defaults, the flags' included.
    pub const DEFAULT: Self = Self {
        queue: 1024,
        queue_bytes: 4 * 1024 * 1024,
        max_frame_bytes: 1024 * 1024,
        ping_interval: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(90),
        write_timeout: Duration::from_secs(10),
        auth_timeout: Duration::from_secs(5),
        max_connections_per_user: 16,
        max_connections_per_address: 1000,
    };
}

impl Default for WsLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The bounds of the use-cases a deployment can tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest message text in characters: long enough for any chat message, short
    /// enough that one message cannot balloon every recipient's memory.
    pub max_text_chars: usize,
    /// Messages (and typing and read frames) a user may send per second, on average…
    pub messages_per_second: u32,
    /// …and in a burst: enough for a person, far below what a flooding script sends.
    pub message_burst: u32,
    /// Hire Me, proposals and proposal chats a user may start per minute, on
    /// average, and in a burst: each opens a thread with someone else.
    pub workflows_per_minute: u32,
    pub workflow_burst: u32,
    /// Password guessing: attempts per address, failures per account.
    pub sign_in: SignInLimits,
    /// Sends waiting for the committer; past this, senders wait (back-pressure).
    /// The default is two of the committer's largest batches.
    pub send_queue: usize,
}

impl Limits {
    /// The defaults, the flags' included.
    pub const DEFAULT: Self = Self {
        max_text_chars: 4000,
        messages_per_second: 20,
        message_burst: 60,
        workflows_per_minute: 30,
        workflow_burst: 60,
        sign_in: SignInLimits::DEFAULT,
        send_queue: 8192,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The limits on password guessing a deployment can tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    /// Sign-in and sign-up attempts per client address per minute.
    pub attempts_per_address_per_minute: u32,
    /// Failed sign-ins per account within `failure_window` before it is locked
    /// until the window has passed.
    pub failures_per_account: u32,
    pub failure_window: Duration,
}

impl SignInLimits {
    /// The defaults, the flags' included.
    pub const DEFAULT: Self = Self {
        attempts_per_address_per_minute: 30,
        failures_per_account: 10,
        failure_window: Duration::from_secs(900),
    };
}

impl Default for SignInLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The bounds of the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers once it starts one.
    pub header_timeout: Duration,
    /// Connections open at once (HTTP and WebSocket); past it, a 503.
    pub max_connections: usize,
}

impl HttpLimits {
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for HttpLimits {
    /// The header deadline, and as many connections as the descriptor limit allows.
    fn default() -> Self {
        Self { header_timeout: Self::DEFAULT_HEADER_TIMEOUT, max_connections: default_max_connections() }
    }
}

/// The process's descriptor limit less what the database, Redis and logs need:
/// past it, an accepted socket would fail anyway, and the store with it.
fn default_max_connections() -> usize {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    usize::try_from(soft.saturating_sub(256)).unwrap_or(usize::MAX).max(64)
}

impl ServeArgs {
    /// The runtime's worker threads: as given, or by [`default_workers`].
    pub fn worker_threads(&self) -> usize {
        let sqlite = self.store.database_url().expose().starts_with("sqlite:");
        self.worker_threads.map_or_else(|| default_workers(sqlite, cores()), usize::from)
    }
}

/// One worker per core; with SQLite one core is left to the message writer, which
/// every message waits for (on 2 cores, one worker carried 1.06× the messages a
/// second of two: `docs/benchmarks.md`, 2026-12-04, fourth session).
pub fn default_workers(sqlite: bool, cores: usize) -> usize {
    if sqlite { cores.saturating_sub(1).max(1) } else { cores.max(1) }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The defaults of the flags that have no limits struct of their own (`--help` shows them).
impl Config {
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    pub const DEFAULT_REDIS_PREFIX: &str = "confab";
    pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(900);
    pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(7 * DAY);

    /// The defaults, on a given data directory: what `confab serve` does with no flags.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let store = StoreArgs { data_dir: data_dir.into(), database_url: None };
        Self {
            listen: Self::DEFAULT_LISTEN,
            database_url: store.database_url(),
            data_dir: store.data_dir,
            jwt_secret: None,
            redis_url: None,
            redis_prefix: Self::DEFAULT_REDIS_PREFIX.to_owned(),
            allowed_origins: Vec::new(),
            trust_forwarded_for: false,
            limits: Limits::DEFAULT,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            http: HttpLimits::default(),
            http_request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            metrics_listen: None,
            access_token_ttl: Self::DEFAULT_ACCESS_TOKEN_TTL,
            refresh_token_ttl: Self::DEFAULT_REFRESH_TOKEN_TTL,
            ws: WsLimits::DEFAULT,
            host: HostConfig::default(),
        }
    }
}

impl From<&ServeArgs> for Config {
    fn from(a: &ServeArgs) -> Self {
        Self {
            listen: a.listen,
            data_dir: a.store.data_dir.clone(),
            database_url: a.store.database_url(),
            jwt_secret: a.jwt_secret.clone(),
            redis_url: a.redis_url.clone(),
            redis_prefix: a.redis_prefix.clone(),
            allowed_origins: a.allowed_origins.clone(),
            trust_forwarded_for: a.trust_forwarded_for,
            limits: Limits {
                max_text_chars: a.max_text_chars,
                messages_per_second: a.rate_limit,
                message_burst: a.rate_burst,
                workflows_per_minute: a.workflows_per_minute,
                workflow_burst: a.workflow_burst,
                sign_in: SignInLimits {
                    attempts_per_address_per_minute: a.signin_attempts_per_minute.max(1),
                    failures_per_account: a.signin_failures_per_account.max(1),
                    failure_window: Duration::from_secs(a.signin_failure_window.max(1)),
                },
                ..Limits::DEFAULT
            },
            max_body_bytes: a.max_body_bytes,
            http: HttpLimits {
                header_timeout: Duration::from_secs(a.http_header_timeout.max(1)),
                max_connections: a.max_connections.unwrap_or_else(default_max_connections).max(1),
            },
            http_request_timeout: Duration::from_secs(a.http_request_timeout.max(1)),
            metrics_listen: a.metrics_listen,
            access_token_ttl: Duration::from_secs(a.access_token_ttl),
            refresh_token_ttl: Duration::from_secs(a.refresh_token_ttl),
            ws: WsLimits {
                queue: a.ws_queue.max(16),
                // Room for a few of the longest messages, so no single one is refused.
                queue_bytes: a.ws_queue_bytes.max(256 * 1024),
                max_frame_bytes: a.ws_max_frame_bytes,
                ping_interval: Duration::from_secs(a.ws_ping_interval.max(1)),
                idle_timeout: Duration::from_secs(a.ws_idle_timeout.max(1)),
                write_timeout: Duration::from_secs(a.ws_write_timeout.max(1)),
                auth_timeout: WsLimits::DEFAULT.auth_timeout,
                max_connections_per_user: a.ws_max_connections_per_user.max(1),
                max_connections_per_address: a.ws_max_connections_per_address.max(1),
            },
            host: HostConfig {
                jwt_secret: a.host.host_jwt_secret.clone(),
                jwt_public_key: a.host.host_jwt_public_key.clone(),
                jwt_issuer: a.host.host_jwt_issuer.clone(),
                server_api_key: a.host.server_api_key.clone(),
                webhook: a.host.webhook_url.as_ref().zip(a.host.webhook_secret.as_ref()).map(|(url, secret)| {
                    WebhookConfig {
                        max_attempts: a.host.webhook_max_attempts.max(1),
                        first_retry: Duration::from_secs(a.host.webhook_first_retry.max(1)),
                        ..WebhookConfig::new(url, secret.clone())
                    }
                }),
                event_retention: Duration::from_secs(a.host.event_retention_days.max(1) * DAY),
            },
        }
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, without path or slash.
///
/// # Errors
/// Anything else, with what was expected.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '@']) => Ok(s.to_ascii_lowercase()),
        _ => Err(format!("{s:?} is not an origin; expected scheme://host[:port], e.g. https://market.example")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_url_never_shows_its_password() {
        assert_eq!(super::redact_url("postgres://app:s3cret@db:5432/chat"), "postgres://app:***@db:5432/chat");
        assert_eq!(super::redact_url("redis://:pw@cache:6379"), "redis://:***@cache:6379");
        assert_eq!(super::redact_url("postgres://db/chat"), "postgres://db/chat");
        assert_eq!(super::redact_url("postgres://db/chat?user=a&password=b"), "postgres://db/chat?user=a&password=***");
    }

    #[test]
    fn no_subcommand_means_serve_with_the_documented_defaults() {
        let cli = Cli::try_parse_from(["confab"]).unwrap();
        assert!(cli.command.is_none());
        let config = Config::from(&cli.serve);
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_url.expose(), "sqlite://./data/confab.db");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
        assert!(config.allowed_origins.is_empty());
    }

    #[test]
    fn sqlite_leaves_its_writer_a_core_and_a_given_count_wins() {
        assert_eq!([1, 2, 4, 16].map(|cores| default_workers(true, cores)), [1, 1, 3, 15]);
        assert_eq!([1, 2, 4].map(|cores| default_workers(false, cores)), [1, 2, 4]);
        let given = Cli::try_parse_from(["confab", "--worker-threads", "3"]).unwrap();
        assert_eq!(given.serve.worker_threads(), 3);
        let pg = Cli::try_parse_from(["confab", "serve", "--database-url", "postgres://db/chat"]).unwrap();
        let Some(Command::Serve(pg)) = pg.command else { panic!("serve") };
        assert_eq!(pg.worker_threads(), cores());
        assert!(Cli::try_parse_from(["confab", "--worker-threads", "0"]).is_err(), "a runtime needs a worker");
    }

    #[test]
    fn config_new_is_what_the_flags_default_to() {
        let cli = Cli::try_parse_from(["confab"]).unwrap();
        let parsed = Config::from(&cli.serve);
        let built = Config::new(&parsed.data_dir);
        assert_eq!((built.listen, &built.redis_prefix), (parsed.listen, &parsed.redis_prefix));
        assert_eq!((built.limits, built.ws, built.http), (parsed.limits, parsed.ws, parsed.http));
        assert_eq!(
            (built.max_body_bytes, built.http_request_timeout),
            (parsed.max_body_bytes, parsed.http_request_timeout)
        );
        assert_eq!(
            (built.access_token_ttl, built.refresh_token_ttl),
            (parsed.access_token_ttl, parsed.refresh_token_ttl)
        );
        assert_eq!(built.host.event_retention, parsed.host.event_retention);
        let host = &cli.serve.host;
        let webhook = WebhookConfig::new("http://x", Secret::new("s"));
        assert_eq!(
            (Duration::from_secs(host.webhook_first_retry), host.webhook_max_attempts),
            (webhook.first_retry, webhook.max_attempts)
        );
    }

    #[test]
    fn allowed_origins_are_a_comma_separated_list_of_origins() {
        let cli = Cli::try_parse_from(["confab", "--allowed-origins", "https://Market.example/,http://localhost:3000"])
            .unwrap();
        assert_eq!(cli.serve.allowed_origins, vec!["https://market.example", "http://localhost:3000"]);
        assert!(Cli::try_parse_from(["confab", "--allowed-origins", "market.example"]).is_err());
        assert!(Cli::try_parse_from(["confab", "--allowed-origins", "https://market.example/path"]).is_err());
    }
}
