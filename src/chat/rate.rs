//! Per-user token buckets: a user may send `per_second` frames a second on average,
//! with bursts up to `burst`, summed over all their devices and both REST and
//! WebSocket, so one flooding client cannot take the server from everyone else.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use foldhash::HashMap;

use crate::domain::UserId;

/// A bound on remembered users; past it, idle (full) buckets are forgotten.
const MAX_USERS: usize = 100_000;

#[derive(Debug)]
pub(super) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<UserId, (f64, Instant)>>,
}

impl RateLimiter {
    pub(super) fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second: per_second.max(0.0), burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Forgets the buckets that have refilled (a full bucket is what a user without
    /// one gets), and gives the map's spare room back: for when the node goes quiet.
    pub(super) fn forget_full(&self) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        self.drop_full(&mut buckets, Instant::now());
        buckets.shrink_to_fit();
    }

    /// The tokens a bucket holds at `now`, before the cap of `burst`.
    fn level(&self, (tokens, at): (f64, Instant), now: Instant) -> f64 {
        tokens + now.duration_since(at).as_secs_f64() * self.per_second
    }

    fn drop_full(&self, buckets: &mut HashMap<UserId, (f64, Instant)>, now: Instant) {
        buckets.retain(|_, bucket| self.level(*bucket, now) < self.burst);
    }

    /// Takes one token for `user`; false when their bucket is empty.
    pub(super) fn allow(&self, user: UserId) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_USERS && !buckets.contains_key(&user) {
            self.drop_full(&mut buckets, now);
        }
        let bucket = buckets.entry(user).or_insert((self.burst, now));
        *bucket = (self.level(*bucket, now).min(self.burst), now);
        let tokens = &mut bucket.0;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_until_tokens_refill() {
        let limiter = RateLimiter::new(0.0, 3);
        let results: Vec<bool> = (0..5).map(|_| limiter.allow(UserId(1))).collect();
        assert_eq!(results, vec![true, true, true, false, false]);
        assert!(limiter.allow(UserId(2)), "buckets are per user");
    }

    #[test]
    fn forgetting_full_buckets_keeps_the_ones_still_refilling() {
        let limiter = RateLimiter::new(0.0, 3);
        assert!(limiter.allow(UserId(1)));
        let refilled = RateLimiter::new(1e9, 3);
        assert!(refilled.allow(UserId(1)));
        std::thread::sleep(std::time::Duration::from_millis(1));
        limiter.forget_full();
        refilled.forget_full();
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1, "a bucket that is not full is kept");
        assert!(refilled.buckets.lock().unwrap().is_empty(), "a full bucket is forgotten");
        let results: Vec<bool> = (0..3).map(|_| limiter.allow(UserId(1))).collect();
        assert_eq!(results, vec![true, true, false], "the kept bucket still counts what was taken");
    }
}
