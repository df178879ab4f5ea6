//! Link impairments for test rigs: delay (with jitter) and random loss on one port,
//! what netem gives a kernel link (`tc qdisc add dev X root netem delay 10ms 2ms loss 1%`).
//!
//! This kernel-independent version lives in the switch because namespaces rigs are built
//! on may lack `sch_netem`. Rules, as netem applies them per direction:
//! * each frame is lost with probability `loss_ppm / 1e6`, independently;
//! * a kept frame is held until `now + delay ± jitter` (uniform), but never released
//!   before the frame ahead of it: order is kept (netem reorders only when asked to);
//! * at most `limit` frames wait per direction (netem's default `limit` is 1000);
//!   frames over it are dropped and counted.
//!
//! The core decides and orders; the shell owns the frames (a generic `T`) and the clock.

use core::time::Duration;
use std::collections::VecDeque;

use crate::time::Timestamp;

/// Settings of one port's impairment (both directions get the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImpairConfig {
    /// Added one-way latency.
    pub delay: Duration,
    /// Uniform variation of the delay, at most `delay`.
    pub jitter: Duration,
    /// Loss probability in parts per million (10_000 = 1 %).
    pub loss_ppm: u32,
    /// Most frames waiting per direction (0 means netem's 1000).
    pub limit: usize,
}

impl ImpairConfig {
    /// Whether the settings change nothing.
    pub fn is_noop(&self) -> bool {
        self.delay.is_zero() && self.jitter.is_zero() && self.loss_ppm == 0
    }

    fn limit(&self) -> usize {
        if self.limit == 0 {
            1000
        } else {
            self.limit
        }
    }
}

/// What happens to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImpairVerdict {
    /// Lost on the link.
    Lose,
    /// The queue is full: dropped.
    Overflow,
    /// Goes through now.
    Pass,
    /// Queued until the given time.
    Hold(Timestamp),
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairStats {
    /// Frames lost by `loss_ppm`.
    pub lost: u64,
    /// Frames dropped because `limit` were waiting.
    pub overflow: u64,
    /// Frames that were held.
    pub delayed: u64,
}

/// One direction of an impaired link: the decision rule and the waiting frames.
#[derive(Debug)]
pub struct ImpairQueue<T> {
    config: ImpairConfig,
    rng: u64,
    queue: VecDeque<(Timestamp, T)>,
    last_due: Timestamp,
    stats: ImpairStats,
}

impl<T> ImpairQueue<T> {
    /// A queue with `config`; `seed` drives loss and jitter (any value; 0 is remapped).
    pub fn new(config: ImpairConfig, seed: u64) -> Self {
        ImpairQueue {
            config,
            rng: seed | 1,
            queue: VecDeque::new(),
            last_due: Timestamp::ZERO,
            stats: ImpairStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ImpairConfig {
        &self.config
    }

    /// Changes the settings; frames already waiting keep their release times.
    pub fn set_config(&mut self, config: ImpairConfig) {
        self.config = config;
    }

    /// The counters.
    pub fn stats(&self) -> ImpairStats {
        self.stats
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: plenty for loss and jitter, and no allocation or syscall.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Decides the fate of a frame arriving at `now`; on [`ImpairVerdict::Hold`] the
    /// caller must [`ImpairQueue::push`] it.
    pub fn decide(&mut self, now: Timestamp) -> ImpairVerdict {
        let c = self.config;
        if c.loss_ppm > 0 && (self.next_random() % 1_000_000) < u64::from(c.loss_ppm) {
            self.stats.lost += 1;
            return ImpairVerdict::Lose;
        }
        if c.delay.is_zero() && c.jitter.is_zero() {
            // Nothing may overtake frames still waiting from before a change.
            if self.queue.is_empty() {
                return ImpairVerdict::Pass;
            }
        }
        if self.queue.len() >= c.limit() {
            self.stats.overflow += 1;
            return ImpairVerdict::Overflow;
        }
        let jitter = c.jitter.min(c.delay);
        let delay = if jitter.is_zero() {
            c.delay
        } else {
            let span = u64::try_from(jitter.as_micros())
                .unwrap_or(u64::MAX)
                .saturating_mul(2);
            let offset = self.next_random() % span.saturating_add(1);
            (c.delay + Duration::from_micros(offset)).saturating_sub(jitter)
        };
        let due = (now + delay).max(self.last_due);
        self.last_due = due;
        self.stats.delayed += 1;
        ImpairVerdict::Hold(due)
    }

    /// Queues a frame held until `due` (from [`ImpairQueue::decide`]).
    pub fn push(&mut self, due: Timestamp, frame: T) {
        self.queue.push_back((due, frame));
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.queue.front().map(|(t, _)| *t)
    }

    /// The next frame due at `now`, if any.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<T> {
        if self.queue.front().is_some_and(|(t, _)| *t <= now) {
            self.queue.pop_front().map(|(_, f)| f)
        } else {
            None
        }
    }

    /// Every waiting frame, due or not (the port goes away or the impairment is lifted).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queue.drain(..).map(|(_, f)| f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_millis(n)
    }

    #[test]
    fn noop_passes_everything() {
        let mut q: ImpairQueue<u32> = ImpairQueue::new(ImpairConfig::default(), 7);
        for i in 0..1000 {
            assert_eq!(q.decide(ms(i)), ImpairVerdict::Pass);
        }
        assert!(ImpairConfig::default().is_noop());
    }

    #[test]
    fn delay_holds_and_releases_in_order() {
        let cfg = ImpairConfig {
            delay: Duration::from_millis(10),
            ..ImpairConfig::default()
        };
        let mut q = ImpairQueue::new(cfg, 1);
        for i in 0..5u32 {
            let ImpairVerdict::Hold(due) = q.decide(ms(u64::from(i))) else {
                panic!("not held");
            };
            assert_eq!(due, ms(10 + u64::from(i)));
            q.push(due, i);
        }
        assert_eq!(q.next_due(), Some(ms(10)));
        assert_eq!(q.pop_due(ms(9)), None);
        assert_eq!(q.pop_due(ms(11)), Some(0));
        assert_eq!(q.pop_due(ms(11)), Some(1));
        assert_eq!(q.pop_due(ms(11)), None);
        assert_eq!(q.drain().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(q.stats().delayed, 5);
    }

    #[test]
    fn limit_overflows_and_counts() {
        let cfg = ImpairConfig {
            delay: Duration::from_millis(50),
            limit: 3,
            ..ImpairConfig::default()
        };
        let mut q = ImpairQueue::new(cfg, 1);
        for i in 0..3 {
            let ImpairVerdict::Hold(due) = q.decide(ms(0)) else {
                panic!()
            };
            q.push(due, i);
        }
        assert_eq!(q.decide(ms(0)), ImpairVerdict::Overflow);
        assert_eq!(q.stats().overflow, 1);
    }

    #[test]
    fn loss_rate_is_about_what_was_asked() {
        let cfg = ImpairConfig {
            loss_ppm: 100_000,
            ..ImpairConfig::default()
        };
        let mut q: ImpairQueue<()> = ImpairQueue::new(cfg, 12345);
        let lost = (0..100_000)
            .filter(|_| q.decide(ms(0)) == ImpairVerdict::Lose)
            .count();
        assert!(
            (9_000..11_000).contains(&lost),
            "lost {lost} of 100000 at 10 %"
        );
        let all = ImpairConfig {
            loss_ppm: 1_000_000,
            ..ImpairConfig::default()
        };
        let mut q: ImpairQueue<()> = ImpairQueue::new(all, 3);
        assert!((0..1000).all(|_| q.decide(ms(0)) == ImpairVerdict::Lose));
    }

    #[test]
    fn frames_held_before_a_change_are_not_overtaken() {
        let mut q = ImpairQueue::new(
            ImpairConfig {
                delay: Duration::from_millis(20),
                ..ImpairConfig::default()
            },
            1,
        );
        let ImpairVerdict::Hold(due) = q.decide(ms(0)) else {
            panic!()
        };
        q.push(due, 1);
        q.set_config(ImpairConfig::default());
        // Still queued behind the held frame.
        assert_eq!(q.decide(ms(1)), ImpairVerdict::Hold(ms(20)));
    }

    proptest! {
        #[test]
        fn jittered_release_times_stay_in_bounds_and_ordered(
            delay in 0u64..100, jitter in 0u64..100, arrivals in proptest::collection::vec(0u64..5, 1..200), seed: u64,
        ) {
            let cfg = ImpairConfig {
                delay: Duration::from_millis(delay),
                jitter: Duration::from_millis(jitter),
                ..ImpairConfig::default()
            };
            let mut q = ImpairQueue::new(cfg, seed);
            let mut now = 0;
            let mut last = Timestamp::ZERO;
            for gap in arrivals {
                now += gap;
                match q.decide(ms(now)) {
                    ImpairVerdict::Hold(due) => {
                        let j = jitter.min(delay);
                        prop_assert!(due >= last);
                        prop_assert!(due.millis() <= now + delay + j + 1);
                        prop_assert!(due.millis() + 1 >= (now + delay).saturating_sub(j) || due == last);
                        last = due;
                        q.push(due, ());
                    }
                    ImpairVerdict::Pass => prop_assert!(delay == 0 && jitter == 0),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
    }
}
