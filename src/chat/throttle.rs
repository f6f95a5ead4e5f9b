//! Limits on password guessing: attempts per client address (sign-ins and
//! sign-ups alike, a token bucket), and failed sign-ins per account, with a delay
//! that grows with each failure and a lockout past the limit. Each refusal says
//! when to come back. Memory is bounded: past `MAX_KEYS` entries, the ones that
//! no longer limit anything are forgotten.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A bound on remembered addresses and accounts.
const MAX_KEYS: usize = 100_000;
/// Failures an account may have before each further attempt waits; then the wait
/// doubles per failure (1 s, 2 s, 4 s, …) up to `MAX_DELAY`.
const FREE_FAILURES: u32 = 3;
const MAX_DELAY: Duration = Duration::from_secs(60);

/// The settings a deployment can tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    /// Sign-in and sign-up attempts per client address per minute.
    pub attempts_per_address_per_minute: u32,
    /// Failed sign-ins per account within `failure_window` before it is locked
    /// until the window has passed.
    pub failures_per_account: u32,
    pub failure_window: Duration,
}

impl Default for SignInLimits {
    fn default() -> Self {
        Self { attempts_per_address_per_minute: 30, failures_per_account: 10, failure_window: Duration::from_secs(900) }
    }
}

/// Why an attempt is refused: come back after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttled {
    pub(crate) retry_after: Duration,
    pub(crate) reason: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    last: Instant,
}

#[derive(Debug)]
pub(super) struct SignInThrottle {
    limits: SignInLimits,
    addresses: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    accounts: Mutex<HashMap<String, Failures>>,
}

impl SignInThrottle {
    pub(super) fn new(limits: SignInLimits) -> Self {
        Self { limits, addresses: Mutex::default(), accounts: Mutex::default() }
    }

    /// Takes one attempt from `address`'s bucket.
    pub(super) fn attempt(&self, address: IpAddr, now: Instant) -> Result<(), Throttled> {
        let per_minute = f64::from(self.limits.attempts_per_address_per_minute.max(1));
        let rate = per_minute / 60.0;
        let mut buckets = self.addresses.lock().unwrap_or_else(PoisonError::into_inner);
        prune(&mut buckets, &address, |(tokens, at)| {
            *tokens + now.duration_since(*at).as_secs_f64() * rate < per_minute
        });
        let (tokens, at) = buckets.entry(address).or_insert((per_minute, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let retry_after = Duration::from_secs_f64((1.0 - *tokens) / rate);
            Err(Throttled { retry_after, reason: "too many sign-in attempts from this address" })
        }
    }

    /// Whether `account` may try a password now.
    pub(super) fn check_account(&self, account: &str, now: Instant) -> Result<(), Throttled> {
        let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(f) = accounts.get(&normalize(account)) else { return Ok(()) };
        let window = self.limits.failure_window;
        if now.duration_since(f.first) >= window {
            return Ok(());
        }
        if f.count >= self.limits.failures_per_account.max(1) {
            let retry_after = window - now.duration_since(f.first);
            return Err(Throttled { retry_after, reason: "too many failed sign-ins for this account" });
        }
        let wait = delay_after(f.count);
        let since = now.duration_since(f.last);
        if since < wait {
            return Err(Throttled { retry_after: wait - since, reason: "too many failed sign-ins for this account" });
        }
        Ok(())
    }

    /// Counts a wrong password for `account`.
    pub(super) fn failed(&self, account: &str, now: Instant) {
        let window = self.limits.failure_window;
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let key = normalize(account);
        prune(&mut accounts, &key, |f| now.duration_since(f.first) >= window);
        let f = accounts.entry(key).or_insert(Failures { count: 0, first: now, last: now });
        if now.duration_since(f.first) >= window {
            *f = Failures { count: 0, first: now, last: now };
        }
        f.count += 1;
        f.last = now;
    }

    /// A right password clears the account's failures.
    pub(super) fn succeeded(&self, account: &str) {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner).remove(&normalize(account));
    }
}

fn normalize(account: &str) -> String {
    account.trim().to_lowercase()
}

fn delay_after(failures: u32) -> Duration {
    match failures.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(n) => Duration::from_secs(1u64 << n.min(6)).min(MAX_DELAY),
    }
}

/// Makes room for `key` when the map is full by forgetting entries `stale` says
/// no longer limit anything.
fn prune<K: Eq + Hash, V>(map: &mut HashMap<K, V>, key: &K, stale: impl Fn(&V) -> bool) {
    if map.len() >= MAX_KEYS && !map.contains_key(key) {
        map.retain(|_, v| !stale(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> SignInThrottle {
        SignInThrottle::new(SignInLimits {
            attempts_per_address_per_minute: 3,
            failures_per_account: 5,
            failure_window: Duration::from_secs(900),
        })
    }

    #[test]
    fn an_address_gets_its_attempts_per_minute_then_waits_for_the_next() {
        let t = throttle();
        let (a, b, now) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]), Instant::now());
        assert!((0..3).all(|_| t.attempt(a, now).is_ok()));
        let refused = t.attempt(a, now).unwrap_err();
        assert_eq!(refused.retry_after.as_secs(), 20, "one attempt comes back every 20 s");
        assert!(t.attempt(b, now).is_ok(), "per address");
        assert!(t.attempt(a, now + Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn failures_delay_each_next_attempt_more_then_lock_the_account() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.check_account("Alice", now).is_ok());
            t.failed("alice", now);
        }
        assert_eq!(t.check_account("alice", now).unwrap_err().retry_after, Duration::from_secs(1));
        let later = now + Duration::from_secs(1);
        assert!(t.check_account("alice", later).is_ok());
        t.failed("alice", later);
        assert_eq!(t.check_account("ALICE", later).unwrap_err().retry_after, Duration::from_secs(2));
        t.failed("alice", later + Duration::from_secs(2));
        let locked = t.check_account("alice", later + Duration::from_secs(60)).unwrap_err();
        assert_eq!(locked.retry_after, Duration::from_secs(900 - 61), "locked until the window has passed");
        assert!(t.check_account("alice", now + Duration::from_secs(900)).is_ok());
        assert!(t.check_account("bob", now).is_ok(), "per account");
    }

    #[test]
    fn a_right_password_clears_the_failures() {
        let t = throttle();
        let now = Instant::now();
        (0..4).for_each(|_| t.failed("carol", now));
        assert!(t.check_account("carol", now).is_err());
        t.succeeded("carol");
        assert!(t.check_account("carol", now).is_ok());
    }
}
