//! Giving freed memory back to the operating system.
//!
//! glibc's allocator keeps what a burst freed in its arenas, so RSS stays at its
//! peak long after the load ends. Two settings undo that for what matters here:
//! - Blocks of [`MMAP_THRESHOLD`] or more always get a mapping of their own, which
//!   `free` unmaps. By default glibc raises that threshold to the size of the last
//!   large block freed, so the second burst's 19 MiB Argon2 buffers land in a
//!   thread's arena, whose top `malloc_trim` never shrinks.
//! - [`give_back`] (`malloc_trim`) returns the free pages of every arena at the end
//!   of a burst, never on a hot path: after a wave of sign-ins (see `auth::password`),
//!   and once the node goes quiet after any load ([`spawn_trimmer`]), with the
//!   store's caches first.

use std::future::Future;
use std::time::Duration;

use prometheus::{IntCounter, Registry};
use tokio_util::sync::CancellationToken;

/// How often the trimmer looks at how busy the node was.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Busier than this share of one worker thread over a check is load; an idle
/// node's timers and pings stay far below it.
const BUSY_SHARE: f64 = 0.02;

/// Larger than any block the message path allocates (a batch of 4,096 sends is
/// under 1 MiB), smaller than an Argon2 buffer.
const MMAP_THRESHOLD: i32 = 8 * 1024 * 1024;

/// Sets the process's allocator up to give memory back (glibc); call once, first.
#[allow(unsafe_code)] // with `give_back` and `store/sqlite_vfs.rs`, the only unsafe: no safe wrapper exists
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes two integers and only changes the allocator's settings.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the allocator's free pages to the system (glibc); elsewhere, nothing.
#[allow(unsafe_code)]
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and only walks the allocator's own
    // free lists under its locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tells, from the runtime's busy time, when a burst of load has just ended.
#[derive(Debug, Default)]
struct QuietWatch {
    last: Option<Duration>,
    worked: bool,
}

impl QuietWatch {
    /// `busy` is the workers' busy time so far, read every `interval`: true once
    /// for a quiet interval that follows a busy one, so each burst is trimmed once
    /// and an idle node is never trimmed again and again.
    fn quiet_after_work(&mut self, busy: Duration, interval: Duration) -> bool {
        let spent = busy.saturating_sub(self.last.replace(busy).unwrap_or(busy));
        if spent.as_secs_f64() > interval.as_secs_f64() * BUSY_SHARE {
            self.worked = true;
            return false;
        }
        std::mem::take(&mut self.worked)
    }
}

/// Gives memory back each time the node goes quiet after load (counted in
/// `confab_memory_trims_total`): `release` (the store's caches), then the
/// allocator's free pages. Without it a node stays at the RSS of its busiest
/// minute. Runs until `stop`.
///
/// # Errors
/// The counter cannot be registered.
pub fn spawn_trimmer<F, Fut>(
    release: F,
    registry: &Registry,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, prometheus::Error>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let trims = IntCounter::new("memory_trims_total", "Times the node gave memory back after a burst of load")?;
    registry.register(Box::new(trims.clone()))?;
    let runtime = tokio::runtime::Handle::current().metrics();
    Ok(tokio::spawn(async move {
        let mut watch = QuietWatch::default();
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let busy = (0..runtime.num_workers()).map(|w| runtime.worker_total_busy_duration(w)).sum();
            if watch.quiet_after_work(busy, CHECK_EVERY) {
                release().await;
                if let Err(e) = tokio::task::spawn_blocking(give_back).await {
                    tracing::warn!(error = %e, "giving memory back failed");
                }
                trims.inc();
                tracing::debug!("the node is quiet: gave memory back");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(5);

    #[test]
    fn a_burst_is_trimmed_once_when_it_ends() {
        let mut watch = QuietWatch::default();
        let mut busy = Duration::ZERO;
        // Idle from the start: nothing to give back.
        assert!(!watch.quiet_after_work(busy, TICK));
        busy += Duration::from_millis(10);
        assert!(!watch.quiet_after_work(busy, TICK));
        // Load for two checks, then quiet: trimmed at the first quiet check only.
        for _ in 0..2 {
            busy += Duration::from_secs(4);
            assert!(!watch.quiet_after_work(busy, TICK));
        }
        busy += Duration::from_millis(20);
        assert!(watch.quiet_after_work(busy, TICK));
        assert!(!watch.quiet_after_work(busy, TICK));
        busy += Duration::from_millis(20);
        assert!(!watch.quiet_after_work(busy, TICK));
        // The next burst is trimmed again.
        busy += Duration::from_secs(1);
        assert!(!watch.quiet_after_work(busy, TICK));
        assert!(watch.quiet_after_work(busy, TICK));
    }

    #[tokio::test]
    async fn the_trimmer_stops_when_told() {
        let stop = CancellationToken::new();
        let task = spawn_trimmer(|| async {}, &Registry::new(), stop.clone()).unwrap();
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
