//! The credit-based tx rate limiter of netback (§1.8; Linux `tx_credit_exceeded`,
//! `tx_add_credit`, `xen_net_read_rate`, `xen_net_rate_changed`).
//!
//! A vif may send `credit_bytes` every `credit_usec` microseconds. Each queue keeps
//! `remaining_credit` and the start of its current window. Before a tx packet whose first
//! slot says `size` bytes is taken off the ring:
//!
//! 1. if `size ≤ remaining_credit`, spend it and go;
//! 2. otherwise, if a refill timer is pending, wait for it;
//! 3. if the window has ended (`now ≥ window_start + credit_usec/1000 ms`), start a new one
//!    at `now` and refill: `remaining = min(remaining + credit_bytes, max(131072,
//!    credit_bytes))` (saturating — the 128 KiB floor lets any packet through eventually);
//! 4. if still short, arm the timer at the end of the window, move the window start there
//!    and wait; when the timer fires it refills once more.
//!
//! Time is passed in as a [`Duration`] since the shell's monotonic epoch. Like Linux the
//! window length is whole milliseconds (`credit_usec / 1000`).

use std::time::Duration;

/// `max_burst` floor: a refill always allows at least 128 KiB.
pub const MIN_BURST_BYTES: u64 = 131_072;

/// How soon a wait may end at the earliest: the timer granularity (one jiffy at HZ=1000).
const MIN_WAIT: Duration = Duration::from_millis(1);

/// A vif's tx rate: `credit_bytes` per `credit_usec` (the backend key `rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxRate {
    /// Bytes of credit per window.
    pub credit_bytes: u64,
    /// Window length in microseconds.
    pub credit_usec: u64,
}

/// Why a `rate` value was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network rate limit {value:?} is not <bytes>,<usec>; traffic unlimited")]
pub struct RateKeyError {
    /// The value read.
    pub value: String,
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl TxRate {
    /// No limit (Linux: `credit_bytes = ULONG_MAX`, `credit_usec = 0`).
    pub const UNLIMITED: TxRate = TxRate {
        credit_bytes: u64::MAX,
        credit_usec: 0,
    };

    /// Parses the backend key `rate` = `"<credit_bytes>,<credit_usec>"`: two unsigned
    /// decimal numbers, nothing else (`xen_net_read_rate`; a number too big for 64 bits is
    /// refused rather than wrapped).
    pub fn parse(value: &str) -> Result<TxRate, RateKeyError> {
        let err = || RateKeyError {
            value: value.to_string(),
        };
        let (bytes, usec) = value.split_once(',').ok_or_else(err)?;
        Ok(TxRate {
            credit_bytes: parse_decimal(bytes).ok_or_else(err)?,
            credit_usec: parse_decimal(usec).ok_or_else(err)?,
        })
    }

    /// The rate for a `rate` key that may be absent: absent or unparsable ⇒ unlimited,
    /// Linux's choice (the caller logs the error of [`TxRate::parse`] if it wants to).
    pub fn from_key(value: Option<&str>) -> TxRate {
        value
            .and_then(|v| TxRate::parse(v).ok())
            .unwrap_or(TxRate::UNLIMITED)
    }

    /// True for [`TxRate::UNLIMITED`].
    pub fn is_unlimited(&self) -> bool {
        *self == TxRate::UNLIMITED
    }

    /// The refill window: `credit_usec / 1000` whole milliseconds.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.credit_usec / 1000)
    }

    /// `max_burst = max(131072, credit_bytes)`.
    pub fn max_burst(&self) -> u64 {
        self.credit_bytes.max(MIN_BURST_BYTES)
    }
}

impl Default for TxRate {
    fn default() -> Self {
        TxRate::UNLIMITED
    }
}

/// The limiter's answer for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditDecision {
    /// Credit was spent: take the packet.
    Go,
    /// Stop consuming tx requests until this time, then ask again.
    WaitUntil(Duration),
}

/// One queue's credit state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditLimiter {
    rate: TxRate,
    remaining: u64,
    window_start: Duration,
    timer: Option<Duration>,
}

fn saturating_add(t: Duration, d: Duration) -> Duration {
    t.checked_add(d).unwrap_or(Duration::MAX)
}

impl CreditLimiter {
    /// A limiter at connect time: full credit (`remaining = credit_bytes`), window starting
    /// `now`.
    pub fn new(rate: TxRate, now: Duration) -> CreditLimiter {
        CreditLimiter {
            rate,
            remaining: rate.credit_bytes,
            window_start: now,
            timer: None,
        }
    }

    /// The rate in force.
    pub fn rate(&self) -> TxRate {
        self.rate
    }

    /// Credit left in this window.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The armed refill timer, if any.
    pub fn timer(&self) -> Option<Duration> {
        self.timer
    }

    /// `tx_add_credit`.
    fn add_credit(&mut self) {
        self.remaining = self
            .remaining
            .saturating_add(self.rate.credit_bytes)
            .min(self.rate.max_burst());
    }

    /// Fires the refill timer if it is due (the timer callback).
    fn run_timer(&mut self, now: Duration) {
        if let Some(t) = self.timer {
            if now >= t {
                self.timer = None;
                self.add_credit();
            }
        }
    }

    /// May a packet of `size` bytes (the first tx slot's size) go now? Spends the credit
    /// if so (see the module steps).
    pub fn check(&mut self, size: u64, now: Duration) -> CreditDecision {
        self.run_timer(now);
        if size <= self.remaining {
            self.remaining -= size;
            return CreditDecision::Go;
        }
        if let Some(t) = self.timer {
            return CreditDecision::WaitUntil(t);
        }
        let next_credit = saturating_add(self.window_start, self.rate.window());
        if now >= next_credit {
            self.window_start = now;
            self.add_credit();
        }
        if size > self.remaining {
            let at = next_credit.max(saturating_add(now, MIN_WAIT));
            self.timer = Some(at);
            self.window_start = next_credit;
            return CreditDecision::WaitUntil(at);
        }
        self.remaining -= size;
        CreditDecision::Go
    }

    /// Applies a new `rate` live (`xen_net_rate_changed`): a pending refill timer is made
    /// due now; otherwise credit above the new `credit_bytes` is clamped to it.
    pub fn set_rate(&mut self, rate: TxRate, now: Duration) {
        self.rate = rate;
        if self.timer.is_some() {
            self.timer = Some(now);
        } else if self.remaining > rate.credit_bytes {
            self.remaining = rate.credit_bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rate_key_parsing_follows_xen_net_read_rate() {
        assert_eq!(
            TxRate::parse("1250000,50000"),
            Ok(TxRate {
                credit_bytes: 1_250_000,
                credit_usec: 50_000
            })
        );
        assert_eq!(TxRate::parse("0,0").map(|r| r.credit_bytes), Ok(0));
        for bad in [
            "",
            ",",
            "1,",
            ",1",
            "1",
            "1,2,3",
            " 1,2",
            "1 ,2",
            "1,2 ",
            "+1,2",
            "-1,2",
            "0x10,2",
            "1.5,2",
            "18446744073709551616,1",
        ] {
            assert!(TxRate::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(TxRate::from_key(None), TxRate::UNLIMITED);
        assert_eq!(TxRate::from_key(Some("junk")), TxRate::UNLIMITED);
        assert_eq!(TxRate::from_key(Some("100,2000")).credit_bytes, 100);
        assert!(TxRate::default().is_unlimited());
        assert_eq!(TxRate::parse("1,2500").unwrap().window(), ms(2), "whole ms");
    }

    #[test]
    fn unlimited_always_goes() {
        let mut l = CreditLimiter::new(TxRate::UNLIMITED, ms(0));
        for i in 0..1000 {
            assert_eq!(l.check(65535, ms(i)), CreditDecision::Go);
        }
    }

    #[test]
    fn spends_credit_then_waits_for_the_window_end() {
        // 10000 bytes per 100 ms.
        let rate = TxRate::parse("10000,100000").unwrap();
        let mut l = CreditLimiter::new(rate, ms(1000));
        assert_eq!(l.remaining(), 10000);
        assert_eq!(l.check(6000, ms(1000)), CreditDecision::Go);
        assert_eq!(l.check(4000, ms(1010)), CreditDecision::Go);
        assert_eq!(l.remaining(), 0);
        // Window ends at 1100: wait until then.
        assert_eq!(l.check(1500, ms(1020)), CreditDecision::WaitUntil(ms(1100)));
        assert_eq!(l.timer(), Some(ms(1100)));
        // Asking early again: still the timer.
        assert_eq!(l.check(1500, ms(1050)), CreditDecision::WaitUntil(ms(1100)));
        // The timer fires: refill (to min(0 + 10000, 131072)) and go.
        assert_eq!(l.check(1500, ms(1100)), CreditDecision::Go);
        assert_eq!(l.remaining(), 8500);
        assert_eq!(l.timer(), None);
    }

    #[test]
    fn refill_is_capped_at_max_burst_with_a_128k_floor() {
        let rate = TxRate::parse("1000,1000").unwrap(); // 1000 B/ms
        let mut l = CreditLimiter::new(rate, ms(0));
        // A 64 KiB GSO packet can pass after enough windows: the cap is 131072, not 1000.
        let mut t = 0;
        let mut waits = 0;
        loop {
            match l.check(65535, ms(t)) {
                CreditDecision::Go => break,
                CreditDecision::WaitUntil(at) => {
                    waits += 1;
                    assert!(at > ms(t));
                    t = u64::try_from(at.as_millis()).unwrap();
                }
            }
            assert!(
                waits < 200,
                "a packet under the 128 KiB floor always passes"
            );
        }
        assert!(t >= 64, "needs about 65 windows of 1000 bytes, took {t} ms");
        // A refill never lifts credit above max_burst = max(131072, credit_bytes).
        let mut l2 = CreditLimiter::new(rate, ms(0));
        l2.remaining = 131_000;
        assert_eq!(
            l2.check(131_500, ms(10_000)),
            CreditDecision::WaitUntil(ms(10_001))
        );
        assert_eq!(l2.remaining(), MIN_BURST_BYTES);
        // Linux quirk kept: after the refill the window start moves to the *old* window end
        // (here 1 ms), so the next check refills again at once.
        assert_eq!(
            l2.check(131_500, ms(10_001)),
            CreditDecision::WaitUntil(ms(10_002))
        );
        assert_eq!(l2.remaining(), MIN_BURST_BYTES);
        // Big credit_bytes: max_burst is credit_bytes itself.
        let big = TxRate {
            credit_bytes: 1 << 20,
            credit_usec: 1000,
        };
        assert_eq!(big.max_burst(), 1 << 20);
    }

    #[test]
    fn refill_add_saturates() {
        let rate = TxRate {
            credit_bytes: u64::MAX - 5,
            credit_usec: 1000,
        };
        let mut l = CreditLimiter::new(rate, ms(0));
        l.remaining = 10;
        l.add_credit();
        assert_eq!(l.remaining(), u64::MAX - 5, "clamped at max_burst, no wrap");
    }

    #[test]
    fn window_restarts_at_now_when_it_has_passed() {
        let rate = TxRate::parse("1000,10000").unwrap(); // 1000 B / 10 ms
        let mut l = CreditLimiter::new(rate, ms(0));
        assert_eq!(l.check(1000, ms(0)), CreditDecision::Go);
        // Long after the window: new window at 500, refill, go.
        assert_eq!(l.check(800, ms(500)), CreditDecision::Go);
        assert_eq!(l.remaining(), 200);
        // Next window ends at 510.
        assert_eq!(l.check(800, ms(505)), CreditDecision::WaitUntil(ms(510)));
    }

    #[test]
    fn zero_length_window_never_asks_to_wait_in_the_past() {
        let rate = TxRate {
            credit_bytes: 0,
            credit_usec: 500,
        };
        let mut l = CreditLimiter::new(rate, ms(5));
        assert_eq!(l.check(100, ms(5)), CreditDecision::WaitUntil(ms(6)));
        assert_eq!(l.check(100, ms(6)), CreditDecision::WaitUntil(ms(7)));
        assert_eq!(l.check(0, ms(7)), CreditDecision::Go);
    }

    #[test]
    fn live_rate_change() {
        let mut l = CreditLimiter::new(TxRate::UNLIMITED, ms(0));
        l.set_rate(TxRate::parse("5000,100000").unwrap(), ms(1));
        assert_eq!(l.remaining(), 5000, "clamped to the new credit_bytes");
        assert_eq!(l.check(5000, ms(1)), CreditDecision::Go);
        assert_eq!(l.check(100, ms(2)), CreditDecision::WaitUntil(ms(100)));
        // A change while the timer is pending makes it due now.
        l.set_rate(TxRate::UNLIMITED, ms(3));
        assert_eq!(l.timer(), Some(ms(3)));
        assert_eq!(l.check(100, ms(3)), CreditDecision::Go);
        assert_eq!(l.remaining(), u64::MAX - 100);
    }

    proptest! {
        /// Over any schedule, every wait lies ahead, and bytes sent never exceed the
        /// initial credit plus one max_burst refill per window-end and per timer (at most
        /// two refills per window length).
        #[test]
        fn never_exceeds_rate(
            bytes in 1u64..200_000,
            usec in 1000u64..200_000,
            steps in proptest::collection::vec((0u64..20, 1u64..65536), 1..300),
        ) {
            let rate = TxRate { credit_bytes: bytes, credit_usec: usec };
            let mut l = CreditLimiter::new(rate, ms(0));
            let mut now = 0u64;
            let mut sent = 0u64;
            for (dt, size) in steps {
                now += dt;
                match l.check(size, ms(now)) {
                    CreditDecision::Go => sent += size,
                    CreditDecision::WaitUntil(at) => prop_assert!(at > ms(now)),
                }
            }
            let windows = now / (usec / 1000) + 1;
            prop_assert!(sent <= bytes + 2 * windows * rate.max_burst());
        }

        /// Any key text either parses to the numbers it spells or yields unlimited.
        #[test]
        fn any_rate_text(s in "[0-9,a-z ]{0,12}") {
            let r = TxRate::from_key(Some(&s));
            if let Ok(p) = TxRate::parse(&s) {
                prop_assert_eq!(r, p);
                prop_assert_eq!(format!("{},{}", p.credit_bytes, p.credit_usec).len() <= s.len(), true);
            } else {
                prop_assert!(r.is_unlimited());
            }
        }
    }
}
