//! Limits on password guessing: attempts per client address (sign-ins and
//! sign-ups alike, a token bucket), and failed sign-ins per account, with a delay
//! that grows with each failure and a lockout past the limit. Each refusal says
//! when to come back.
//!
//! An account's attempt counts as a failure the moment it is let through (a right
//! password then clears the account), so a thousand guesses sent at once cannot all
//! pass the check before the first is counted. IPv6 clients are keyed by their /64,
//! which one subscriber holds whole. Memory is bounded: past `MAX_KEYS` entries the
//! stale ones are forgotten, and if that is not enough, arbitrary others.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::SignInLimits;

/// A bound on remembered addresses and accounts.
const MAX_KEYS: usize = 100_000;
/// Failures an account may have before each further attempt waits; then the wait
/// doubles per failure (1 s, 2 s, 4 s, …) up to `MAX_DELAY`.
const FREE_FAILURES: u32 = 3;
const MAX_DELAY: Duration = Duration::from_secs(60);

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
        let address = client_key(address);
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

    /// Lets `account` try a password now, or says when it may; an attempt let
    /// through is counted as a failure at once (see the module's note).
    pub(super) fn attempt_account(&self, account: &str, now: Instant) -> Result<(), Throttled> {
        let window = self.limits.failure_window;
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let key = normalize(account);
        prune(&mut accounts, &key, |f| now.duration_since(f.first) >= window);
        let f = accounts.entry(key).or_insert(Failures { count: 0, first: now, last: now });
        if now.duration_since(f.first) >= window {
            *f = Failures { count: 0, first: now, last: now };
        }
        let reason = "too many failed sign-ins for this account";
        if f.count >= self.limits.failures_per_account.max(1) {
            return Err(Throttled { retry_after: window - now.duration_since(f.first), reason });
        }
        let (wait, since) = (delay_after(f.count), now.duration_since(f.last));
        if f.count > 0 && since < wait {
            return Err(Throttled { retry_after: wait - since, reason });
        }
        f.count += 1;
        f.last = now;
        Ok(())
    }

    /// A right password clears the account's failures.
    pub(super) fn succeeded(&self, account: &str) {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner).remove(&normalize(account));
    }
}

/// Usernames are at most 150 characters: a longer key is one no account has, and
/// is cut so that it costs no more to remember.
fn normalize(account: &str) -> String {
    account.trim().chars().take(150).collect::<String>().to_lowercase()
}

/// The key a client address is limited by: an IPv4 address (IPv4-mapped ones
/// included) as it is, an IPv6 address by its /64.
pub(crate) fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

fn delay_after(failures: u32) -> Duration {
    match failures.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(n) => Duration::from_secs(1u64 << n.min(6)).min(MAX_DELAY),
    }
}

/// Makes room for `key` when the map is full: forgets the entries `stale` says no
/// longer limit anything, then, if still over nine tenths full, arbitrary ones, so
/// the next scan is thousands of inserts away.
fn prune<K: Eq + Hash + Clone, V>(map: &mut HashMap<K, V>, key: &K, stale: impl Fn(&V) -> bool) {
    if map.len() >= MAX_KEYS && !map.contains_key(key) {
        map.retain(|_, v| !stale(v));
        let keep = MAX_KEYS * 9 / 10;
        if map.len() > keep {
            let drop: Vec<K> = map.keys().take(map.len() - keep).cloned().collect();
            for k in drop {
                map.remove(&k);
            }
        }
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
            assert!(t.attempt_account("Alice", now).is_ok());
        }
        assert_eq!(t.attempt_account("alice", now).unwrap_err().retry_after, Duration::from_secs(1));
        let later = now + Duration::from_secs(1);
        assert!(t.attempt_account("alice", later).is_ok());
        assert_eq!(t.attempt_account("ALICE", later).unwrap_err().retry_after, Duration::from_secs(2));
        assert!(t.attempt_account("alice", later + Duration::from_secs(2)).is_ok());
        let locked = t.attempt_account("alice", later + Duration::from_secs(60)).unwrap_err();
        assert_eq!(locked.retry_after, Duration::from_secs(900 - 61), "locked until the window has passed");
        assert!(t.attempt_account("alice", now + Duration::from_secs(900)).is_ok());
        assert!(t.attempt_account("bob", now).is_ok(), "per account");
    }

    #[test]
    fn a_burst_of_attempts_at_once_gets_only_the_free_ones() {
        let t = throttle();
        let now = Instant::now();
        let passed = (0..1000).filter(|_| t.attempt_account("carol", now).is_ok()).count();
        assert_eq!(passed, 3, "counted as they pass, not after the hash");
    }

    #[test]
    fn an_ipv6_subscriber_is_one_address() {
        let t = throttle();
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!((0..3).all(|_| t.attempt(a, now).is_ok()));
        assert!(t.attempt(b, now).is_err(), "the same /64");
        assert!(t.attempt(other, now).is_ok());
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn a_right_password_clears_the_failures() {
        let t = throttle();
        let now = Instant::now();
        (0..4).for_each(|_| {
            let _ = t.attempt_account("carol", now);
        });
        assert!(t.attempt_account("carol", now).is_err());
        t.succeeded("carol");
        assert!(t.attempt_account("carol", now).is_ok());
    }
}
