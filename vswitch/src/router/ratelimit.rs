//! A token bucket for the rate limits of the L3 cores: ICMP errors (Linux
//! `icmp_msgs_per_sec`/`icmp_msgs_burst`, RFC 1812 §4.3.2.8), ARP requests (RFC 1122
//! §2.3.2.1: "no more than one ARP request per second per destination", plus a global
//! cap), DHCP messages per port (robustness.md §3 d1).
//!
//! Firecracker's rate limiter shape (ecosystem.md §B3): a standalone type with its own
//! tests. Time is passed in; the bucket never reads a clock.

use crate::time::Timestamp;

/// A rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second (0: the burst is all there ever is).
    pub per_sec: u32,
    /// Bucket size: most tokens that can be taken back to back.
    pub burst: u32,
}

impl RateLimit {
    /// A limit of `per_sec` with room for `burst`.
    pub const fn new(per_sec: u32, burst: u32) -> Self {
        RateLimit { per_sec, burst }
    }
}

/// A token bucket that starts full. Tokens are kept in thousandths so that a rate of a
/// few per second refills smoothly at millisecond resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    limit: RateLimit,
    milli_tokens: u64,
    last: Timestamp,
}

impl TokenBucket {
    /// A full bucket.
    pub const fn new(limit: RateLimit) -> Self {
        TokenBucket {
            limit,
            milli_tokens: limit.burst as u64 * 1000,
            last: Timestamp::ZERO,
        }
    }

    /// The configured limit.
    pub const fn limit(&self) -> RateLimit {
        self.limit
    }

    fn refill(&mut self, now: Timestamp) {
        let elapsed_ms = now.millis().saturating_sub(self.last.millis());
        if now > self.last {
            self.last = now;
        }
        // per_sec tokens/s = per_sec milli-tokens/ms.
        let add = elapsed_ms.saturating_mul(u64::from(self.limit.per_sec));
        let cap = u64::from(self.limit.burst) * 1000;
        self.milli_tokens = self.milli_tokens.saturating_add(add).min(cap);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whole tokens available at `now` (refills first).
    pub fn available(&mut self, now: Timestamp) -> u32 {
        self.refill(now);
        u32::try_from(self.milli_tokens / 1000).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(RateLimit::new(2, 3));
        let t0 = Timestamp::from_secs(10);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        // 2/s: one token after 500 ms, not before.
        assert!(!b.try_take(Timestamp::from_millis(10_499)));
        assert!(b.try_take(Timestamp::from_millis(10_500)));
        assert!(!b.try_take(Timestamp::from_millis(10_500)));
        // A long pause refills only up to the burst.
        assert_eq!(b.available(Timestamp::from_secs(100)), 3);
    }

    #[test]
    fn zero_rate_and_backwards_clock() {
        let mut b = TokenBucket::new(RateLimit::new(0, 1));
        assert!(b.try_take(Timestamp::from_secs(5)));
        assert!(!b.try_take(Timestamp::from_secs(500)));
        let mut c = TokenBucket::new(RateLimit::new(1000, 1));
        assert!(c.try_take(Timestamp::from_secs(5)));
        // A clock that goes backwards neither panics nor refills.
        assert!(!c.try_take(Timestamp::from_secs(4)));
        assert!(c.try_take(Timestamp::from_millis(5_001)));
    }
}
