//! Argon2id with the crate's defaults (OWASP's parameters: 19 MiB, 2 passes).
//! Hashing costs tens of milliseconds of CPU and 19 MiB on purpose, so it runs on
//! a few threads of its own, one per core, each reusing one block of memory:
//! callers wait in a queue (the wait is in `/metrics`) instead of each taking a
//! thread and 19 MiB (64 concurrent sign-ups once held 64 threads and, with glibc
//! keeping every arena, gigabytes). Never on the async runtime.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use prometheus::{Histogram, HistogramOpts, IntGauge, Registry};
use tokio::sync::{mpsc, oneshot};

/// Hashes waiting for a hashing thread; past this, callers wait to queue.
const QUEUE: usize = 1024;
/// A stored hash for accounts that do not exist: verifying against it costs what
/// verifying a real password costs, so a sign-in does not tell which usernames exist.
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Why hashing failed: the hasher is gone (shutting down) or refused its input.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password hasher has stopped")]
    Stopped,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

enum Work {
    Hash { password: String, reply: oneshot::Sender<Result<String, HashError>> },
    Verify { password: String, phc: String, reply: oneshot::Sender<bool> },
}

struct Job {
    work: Work,
    queued: Instant,
}

/// The hashing threads and their queue.
pub struct Hasher {
    queue: mpsc::Sender<Job>,
    waiting: IntGauge,
    wait: Histogram,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("waiting", &self.waiting.get()).finish_non_exhaustive()
    }
}

impl Hasher {
    /// Starts `workers` hashing threads (at least one); they end when the hasher is dropped.
    ///
    /// # Errors
    /// A thread that cannot be started, or metrics that cannot be made.
    pub fn start(workers: usize) -> std::io::Result<Arc<Self>> {
        let (queue, jobs) = mpsc::channel::<Job>(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        let waiting = IntGauge::new("password_hash_queue", "Password hashes waiting for a hashing thread")
            .map_err(std::io::Error::other)?;
        let wait = Histogram::with_opts(
            HistogramOpts::new("password_hash_wait_seconds", "Time a password hash waited for a hashing thread")
                .buckets(vec![0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .map_err(std::io::Error::other)?;
        for n in 0..workers.max(1) {
            let (jobs, waiting, wait) = (jobs.clone(), waiting.clone(), wait.clone());
            std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || work(&jobs, &waiting, &wait))?;
        }
        Ok(Arc::new(Self { queue, waiting, wait }))
    }

    /// Puts the hasher's figures in `/metrics`.
    ///
    /// # Errors
    /// A name that is already registered.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.waiting.clone()))?;
        registry.register(Box::new(self.wait.clone()))
    }

    async fn run<T>(&self, work: impl FnOnce(oneshot::Sender<T>) -> Work) -> Result<T, HashError> {
        let (reply, answer) = oneshot::channel();
        self.waiting.inc();
        let sent = self.queue.send(Job { work: work(reply), queued: Instant::now() }).await;
        if sent.is_err() {
            self.waiting.dec();
            return Err(HashError::Stopped);
        }
        answer.await.map_err(|_| HashError::Stopped)
    }

    /// Hashes a password into a self-describing PHC string.
    ///
    /// # Errors
    /// The hasher has stopped.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(|reply| Work::Hash { password, reply }).await?
    }

    /// Whether `password` matches `phc` (`None`: no such account, which costs the
    /// same and never matches); a malformed stored hash never matches.
    ///
    /// # Errors
    /// The hasher has stopped.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let (phc, real) = match phc {
            Some(phc) => (phc, true),
            None => (DUMMY.to_owned(), false),
        };
        let matched = self.run(|reply| Work::Verify { password, phc, reply }).await?;
        Ok(matched && real)
    }
}

/// One hashing thread: takes jobs until the queue closes, reusing one buffer while
/// a burst lasts and giving it back to the system when the queue runs dry, so a
/// server's RSS returns to its idle level after a wave of sign-ins.
fn work(jobs: &Mutex<mpsc::Receiver<Job>>, waiting: &IntGauge, wait: &Histogram) {
    // Allocated by the first hash of a burst: a server nobody signs in to keeps none.
    let mut memory = Vec::new();
    loop {
        // Nothing queued: the burst is over. Give the buffer back before waiting,
        // whether for the queue or for the lock (the other threads wait on the lock).
        if waiting.get() == 0 && !memory.is_empty() {
            memory = Vec::new();
            crate::memory::give_back();
        }
        // The lock is the line: one idle thread waits on the queue, the others on it.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).blocking_recv();
        let Some(job) = job else { return };
        waiting.dec();
        wait.observe(job.queued.elapsed().as_secs_f64());
        match job.work {
            Work::Hash { password, reply } => {
                let _ = reply.send(hash_with(&password, &mut memory));
            }
            Work::Verify { password, phc, reply } => {
                let _ = reply.send(verify_with(&password, &phc, &mut memory));
            }
        }
    }
}

fn hash_with(password: &str, memory: &mut Vec<Block>) -> Result<String, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Failed(e.to_string());
    let params = Params::DEFAULT;
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.as_salt().decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    fill(memory, params.block_count());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, &mut memory[..])
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

fn verify_with(password: &str, phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(hash.algorithm), Params::try_from(&hash)) else {
        return false;
    };
    let version = hash.version.map_or(Ok(Version::V0x13), Version::try_from);
    let (Ok(version), Some(salt), Some(expected)) = (version, hash.salt, hash.hash) else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    fill(memory, params.block_count());
    let hashed = Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
        password.as_bytes(),
        salt_raw,
        &mut out,
        &mut memory[..params.block_count()],
    );
    // `Output` compares in constant time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
}

/// Makes sure the buffer holds `blocks`; a stored hash with a larger memory cost
/// (from other parameters) grows it for that one hash, then it shrinks back.
fn fill(memory: &mut Vec<Block>, blocks: usize) {
    let default = Params::DEFAULT.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    } else if memory.len() > default.max(blocks) {
        memory.truncate(default.max(blocks));
        memory.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = Hasher::start(2).unwrap();
        let h = hasher.hash("testpass123".to_owned()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(hasher.verify("testpass123".to_owned(), Some(h.clone())).await.unwrap());
        assert!(!hasher.verify("testpass124".to_owned(), Some(h.clone())).await.unwrap());
        assert!(!hasher.verify("testpass123".to_owned(), Some("not a hash".to_owned())).await.unwrap());
        assert!(!hasher.verify("testpass123".to_owned(), None).await.unwrap(), "no account never matches");
        // Hashes made by the crate's own hasher (every account stored so far) still verify.
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let old = Argon2::default().hash_password(b"legacy", &salt).unwrap().to_string();
        assert!(hasher.verify("legacy".to_owned(), Some(old)).await.unwrap());
    }

    #[tokio::test]
    async fn many_concurrent_hashes_queue_for_the_bounded_threads() {
        let hasher = Hasher::start(2).unwrap();
        let hashes = (0..8).map(|i| {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(format!("password {i}")).await.unwrap() })
        });
        let done = futures::future::join_all(hashes).await;
        assert_eq!(done.iter().filter(|h| h.is_ok()).count(), 8);
        assert_eq!(hasher.waiting.get(), 0, "nothing left in the queue");
        assert_eq!(hasher.wait.get_sample_count(), 8, "every hash's wait was measured");
    }
}
