//! Per-source-address limit on failed logins: a token bucket per IP address.
//!
//! Each address starts with `burst` tokens. A password verification takes a token when it
//! starts and gives it back if the login succeeds, so failures (and verifications still
//! running, which bounds parallel guessing) use them up. One token comes back every `refill`.
//! While an address has no token left, its CONNECTs are refused at once, without looking at
//! the credentials (no verification cost). So an address gets `burst` guesses at once, then
//! one per `refill` period.
//!
//! Addresses whose bucket is full again are forgotten (the table is pruned when it grows past
//! `MAX_TRACKED`; a full table stops tracking new addresses rather than grow without bound).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens as of `at`.
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct FailureLimiter {
    burst: f64,
    refill: Duration,
    buckets: HashMap<IpAddr, Bucket>,
}

impl FailureLimiter {
    /// `burst == 0` disables the limit.
    pub fn new(burst: u32, refill: Duration) -> FailureLimiter {
        FailureLimiter {
            burst: f64::from(burst),
            refill,
            buckets: HashMap::new(),
        }
    }

    fn enabled(&self) -> bool {
        self.burst > 0.0
    }

    fn current(&self, b: &Bucket, now: Instant) -> f64 {
        if self.refill.is_zero() {
            return self.burst;
        }
        let gained = now.saturating_duration_since(b.at).as_secs_f64() / self.refill.as_secs_f64();
        (b.tokens + gained).min(self.burst)
    }

    /// Take a token for a verification from `ip`; false: refuse the CONNECT now.
    pub fn try_begin(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        let tokens = match self.buckets.get(&ip) {
            Some(b) => self.current(b, now),
            None => self.burst,
        };
        if tokens < 1.0 {
            return false;
        }
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_TRACKED {
            self.prune(now);
            if self.buckets.len() >= MAX_TRACKED {
                return true;
            }
        }
        self.buckets.insert(
            ip,
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
        );
        true
    }

    /// Is `ip` out of tokens (its CONNECTs are refused without verification)?
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.enabled()
            && self
                .buckets
                .get(&ip)
                .is_some_and(|b| self.current(b, now) < 1.0)
    }

    /// The verification begun with `try_begin` succeeded: give its token back.
    pub fn succeeded(&mut self, ip: IpAddr, now: Instant) {
        if let Some(b) = self.buckets.get(&ip).copied() {
            let tokens = (self.current(&b, now) + 1.0).min(self.burst);
            self.buckets.insert(ip, Bucket { tokens, at: now });
        }
    }

    fn prune(&mut self, now: Instant) {
        let burst = self.burst;
        let refill = self.refill;
        self.buckets.retain(|_, b| {
            let gained = if refill.is_zero() {
                burst
            } else {
                now.saturating_duration_since(b.at).as_secs_f64() / refill.as_secs_f64()
            };
            b.tokens + gained < burst
        });
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_refill() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            assert!(l.try_begin(ip, t0));
        }
        assert!(l.is_blocked(ip, t0));
        assert!(!l.try_begin(ip, t0));
        assert!(!l.is_blocked(other, t0));
        assert!(!l.try_begin(ip, t0 + Duration::from_secs(9)));
        assert!(l.try_begin(ip, t0 + Duration::from_secs(10)));
        assert!(!l.try_begin(ip, t0 + Duration::from_secs(11)));
        // A success gives its token back.
        let t1 = t0 + Duration::from_secs(100);
        assert!(l.try_begin(other, t1));
        l.succeeded(other, t1);
        for _ in 0..3 {
            assert!(l.try_begin(other, t1));
        }
        assert!(l.is_blocked(other, t1));
    }

    #[test]
    fn zero_burst_disables() {
        let ip: IpAddr = "::1".parse().unwrap();
        let mut l = FailureLimiter::new(0, Duration::from_secs(10));
        let now = Instant::now();
        for _ in 0..100 {
            assert!(l.try_begin(ip, now));
        }
        assert!(!l.is_blocked(ip, now));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn full_buckets_are_pruned() {
        let mut l = FailureLimiter::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.try_begin(a, t0));
        l.prune(t0 + Duration::from_secs(5));
        assert_eq!(l.tracked(), 0);
    }
}
