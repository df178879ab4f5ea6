//! netem-style impairment values as users write them (`tc qdisc … netem delay 10ms 2ms
//! loss 1%`): a delay or jitter is a number with a unit (`us`/`usec`, `ms`/`msec`,
//! `s`/`sec`; a bare number is microseconds, as tc reads it) and a loss is a
//! percentage (`1%`, `0.5%`, or a bare number meaning percent).

use std::time::Duration;

/// A value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetemError {
    /// Not a time.
    #[error("bad time `{0}' (expected a number with us, ms or s, e.g. 10ms)")]
    BadTime(String),
    /// Not a percentage from 0 to 100.
    #[error("bad loss `{0}' (expected a percentage from 0 to 100, e.g. 1% or 0.5%)")]
    BadLoss(String),
}

/// Reads a delay or jitter (at most one hour).
pub fn parse_time(text: &str) -> Result<Duration, NetemError> {
    let bad = || NetemError::BadTime(text.to_string());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let scale_us = match unit.trim() {
        "" | "us" | "usec" | "usecs" => 1.0,
        "ms" | "msec" | "msecs" => 1_000.0,
        "s" | "sec" | "secs" => 1_000_000.0,
        _ => return Err(bad()),
    };
    let us = value * scale_us;
    if !us.is_finite() || !(0.0..=3_600_000_000.0).contains(&us) {
        return Err(bad());
    }
    Ok(Duration::from_micros(us.round() as u64))
}

/// Reads a loss percentage into parts per million.
pub fn parse_loss(text: &str) -> Result<u32, NetemError> {
    let bad = || NetemError::BadLoss(text.to_string());
    let t = text.trim();
    let num = t.strip_suffix('%').unwrap_or(t).trim();
    let pct: f64 = num.parse().map_err(|_| bad())?;
    if !pct.is_finite() || !(0.0..=100.0).contains(&pct) {
        return Err(bad());
    }
    Ok((pct * 10_000.0).round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times_read_like_tc() {
        assert_eq!(parse_time("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_time("2.5ms"), Ok(Duration::from_micros(2500)));
        assert_eq!(parse_time("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_time("750us"), Ok(Duration::from_micros(750)));
        assert_eq!(parse_time("100"), Ok(Duration::from_micros(100)));
        for bad in ["", "ms", "10 parsecs", "-1ms", "1e9s", "fast"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn losses_read_as_percent() {
        assert_eq!(parse_loss("1%"), Ok(10_000));
        assert_eq!(parse_loss("0.5%"), Ok(5_000));
        assert_eq!(parse_loss("100%"), Ok(1_000_000));
        assert_eq!(parse_loss("3"), Ok(30_000));
        for bad in ["101%", "-1%", "lots", "%"] {
            assert!(parse_loss(bad).is_err(), "{bad}");
        }
        assert!(parse_loss("101%").unwrap_err().to_string().contains("101%"));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,16}") {
            let _ = parse_time(&s);
            let _ = parse_loss(&s);
        }
    }
}
