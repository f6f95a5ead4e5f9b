//! The use-cases: register and sign in, the marketplace, Hire Me and proposals,
//! sending, reading and paging messages. REST and WebSocket both call these, so
//! authorization, idempotency and seq are written once. Talks only to the `Store`
//! trait; imports no axum, sqlx or redis.

mod accounts;
mod committer;
mod host;
mod marketplace;
mod members;
mod messaging;
mod rate;
mod throttle;
mod workflows;

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Hasher;
use crate::bus::Bus;
use crate::config::Limits;
use crate::domain::{ErrorCode, ValidationError};
use crate::store::{Store, StoreError};

pub use accounts::Registration;
pub use host::{HostJob, HostUser};
pub use messaging::{Inbox, PendingSend, PreparedSend, Preparing, SendTarget, Sent, SyncPlan, UnreadTotals};
pub(crate) use throttle::client_key;
pub use workflows::{Opening, ProposalSubmitted};

use committer::{CommitMetrics, Job};
use members::Members;
use rate::RateLimiter;
use throttle::SignInThrottle;

/// The application's use-cases over a store and a bus.
#[derive(Clone)]
pub struct Chat {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    limits: Limits,
    members: Arc<Members>,
    rate: Arc<RateLimiter>,
    workflow_rate: Arc<RateLimiter>,
    throttle: Arc<SignInThrottle>,
    sends: mpsc::Sender<Job>,
    committer: Arc<Committer>,
    hasher: Arc<Hasher>,
}

/// The committer task and how to stop it.
struct Committer {
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    metrics: CommitMetrics,
}

impl Chat {
    /// Starts the use-cases, with the task that commits sent messages and the
    /// password-hashing threads (one per core).
    ///
    /// # Errors
    /// A hashing thread (or a metric) that cannot be made.
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, limits: Limits) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let hasher = Hasher::start(cores)?;
        let (sends, jobs) = mpsc::channel(limits.send_queue.max(1));
        let stop = CancellationToken::new();
        let metrics = CommitMetrics::new().map_err(std::io::Error::other)?;
        let task = committer::spawn(store.clone(), bus.clone(), jobs, stop.clone(), metrics.clone());
        Ok(Self {
            store,
            bus,
            limits,
            members: Arc::new(Members::default()),
            rate: Arc::new(RateLimiter::new(f64::from(limits.messages_per_second), limits.message_burst)),
            workflow_rate: Arc::new(RateLimiter::new(
                f64::from(limits.workflows_per_minute) / 60.0,
                limits.workflow_burst,
            )),
            throttle: Arc::new(SignInThrottle::new(limits.sign_in)),
            sends,
            committer: Arc::new(Committer { stop, task: Mutex::new(Some(task)), metrics }),
            hasher,
        })
    }

    /// Gives back the memory that load left in caches: the members cache, the
    /// refilled rate buckets, and the store's caches. For when the node goes quiet
    /// (`memory::spawn_trimmer`): what stays allocated after a burst pins the
    /// allocator's pages, however little of each page it uses.
    pub async fn release_memory(&self) {
        self.members.clear();
        self.rate.forget_full();
        self.workflow_rate.forget_full();
        if let Err(e) = self.store.release_memory().await {
            tracing::warn!(error = %crate::domain::error_chain(&e), "freeing the store's caches failed");
        }
    }

    /// Puts the committer's and the password hasher's figures in `/metrics`.
    ///
    /// # Errors
    /// A name that is already registered.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        self.committer.metrics.register(registry)?;
        self.hasher.register(registry)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Whether the committer is running: without it no message can be stored.
    pub fn is_healthy(&self) -> bool {
        let task = self.committer.task.lock().unwrap_or_else(PoisonError::into_inner);
        task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stores every send queued so far, then stops taking new ones; for shutdown.
    pub async fn finish_sends(&self) {
        self.committer.stop.cancel();
        let task = self.committer.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the message committer failed");
        }
    }
}

/// Why a use-case failed: a refusal with the contract's code, or a fault of ours.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{code}: {detail}")]
    Rejected { code: ErrorCode, detail: String },
    /// `rate_limited`, with when to try again.
    #[error("rate_limited: {detail}")]
    Limited { detail: String, retry_after: std::time::Duration },
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn rejected(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::Rejected { code, detail: detail.into() }
    }

    pub fn not_found(what: &str) -> Self {
        Self::rejected(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::rejected(ErrorCode::Forbidden, detail)
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::rejected(ErrorCode::ValidationFailed, detail)
    }

    /// When a `rate_limited` refusal may be tried again, if it says.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Limited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Rejected { code, .. } => *code,
            Self::Limited { .. } => ErrorCode::RateLimited,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// What the client is told: the refusal's reason, never an internal cause.
    pub fn detail(&self) -> String {
        match self {
            Self::Rejected { detail, .. } | Self::Limited { detail, .. } => detail.clone(),
            Self::Unavailable(_) => "the database is unavailable; try again shortly".to_owned(),
            Self::Internal(_) => "internal server error".to_owned(),
        }
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Self::rejected(e.code(), e.detail())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::rejected(ErrorCode::Conflict, format!("already exists ({what})")),
            StoreError::NotFound(what) => Self::not_found(what),
            StoreError::KeyReused => Self::rejected(
                ErrorCode::Conflict,
                "this client_msg_id was already used in this thread for another text; use a new key",
            ),
            e @ StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Other(e) => Self::Internal(e),
        }
    }
}
