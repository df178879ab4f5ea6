//! The vif `rate=` grammar (`RATE/s[@INTERVAL]`) and the backend `rate` key.
//!
//! Two textual forms describe one [`Rate`]:
//!
//! * the user form written in a vif spec, parsed by [`parse_rate_spec`] exactly as
//!   libxlu's `xlu_vif_parse_rate` does in Xen 4.17 (reference §7, "Rate syntax");
//! * the backend xenstore key `rate` = `"<credit_bytes>,<credit_usec>"` (reference §1.8,
//!   §4.6), produced by [`Rate`]'s `Display` and parsed back by its `FromStr`, which is
//!   what netback uses to read the key.
//!
//! ## Quirks kept from libxlu
//!
//! * Numbers are read with C `strtoull(.., 0)` base auto-detection. The regular
//!   expressions admit only decimal digits, so hexadecimal cannot occur, but a leading
//!   `0` switches to **octal**: `010MB/s` is 8 MB/s, and `08MB/s` reads as `0` (the
//!   octal scan stops at `8`) and is refused as a zero rate. The unit is then taken
//!   from the characters right after the octal digits, exactly like xl: in `018Kb/s`
//!   the scan stops at `8`, so no multiplier applies and the rate is 1 byte/s.
//! * Multipliers are decimal (G = 10^9, M = 10^6, K = 10^3); a lower-case `b` means
//!   bits and divides by 8 (integer division, after the multiplier).
//! * The number before the unit must be 1..=2^32−1; the interval number too, and the
//!   interval in microseconds after its unit must still fit in 32 bits.
//! * `bytes_per_interval = bytes_per_sec × interval_usecs / 10^6` (integer), which may
//!   legitimately be 0 for tiny rates (`1B/s` ⇒ `"0,50000"`), as in xl.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Replenishment interval used when a rate has no `@INTERVAL` part: 50 ms
/// (libxlu `xlu_vif_parse_rate`, reference §7).
pub const DEFAULT_RATE_INTERVAL_USECS: u32 = 50_000;

/// A credit-based transmit rate limit: `bytes_per_interval` bytes may be sent every
/// `interval_usecs` microseconds (netback's `credit_bytes` / `credit_usec`, §1.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rate {
    /// Credit granted per replenishment interval, in bytes.
    pub bytes_per_interval: u64,
    /// Length of the replenishment interval, in microseconds.
    pub interval_usecs: u32,
}

/// Why a rate string (user form or backend key form) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Nothing before the `@` (libxlu: "no rate specified").
    #[error("no rate specified in `{spec}'")]
    NoRate {
        /// The whole rate specification.
        spec: String,
    },
    /// The rate part does not match `^[0-9]+[GMK]?[Bb]/s$`.
    #[error("invalid rate `{rate}' (expected a number, an optional G/M/K, then B/s or b/s, e.g. 10Mb/s)")]
    InvalidRate {
        /// The rate part (before any `@`).
        rate: String,
    },
    /// The rate number is 0 (possibly because of the octal quirk) or above 2^32−1.
    #[error("rate out of range in `{rate}': the number must be 1..=4294967295{}", octal_hint(.rate))]
    RateOutOfRange {
        /// The rate part (before any `@`).
        rate: String,
    },
    /// The interval part does not match `^[0-9]+[mu]?s?$`.
    #[error("invalid replenishment interval `{interval}' (expected a number followed by s, ms, m, us, u or nothing)")]
    InvalidInterval {
        /// The interval part (after the `@`).
        interval: String,
    },
    /// The interval is 0 or does not fit in 32 bits of microseconds.
    #[error("replenishment interval out of range in `{interval}': must be 1..=4294967295 microseconds{}", octal_hint(.interval))]
    IntervalOutOfRange {
        /// The interval part (after the `@`).
        interval: String,
    },
    /// bytes-per-second × interval does not fit in 64 bits (libxlu "rate overflow").
    #[error("rate overflow in `{spec}': bytes per second times the interval exceeds 64 bits")]
    Overflow {
        /// The whole rate specification.
        spec: String,
    },
    /// A backend `rate` key that is not `"<decimal bytes>,<decimal usecs>"`.
    #[error("invalid backend rate key `{text}' (expected \"<bytes>,<usecs>\", both decimal)")]
    BadBackendKey {
        /// The key's value.
        text: String,
    },
}

/// Extra explanation for numbers starting with `0`, which libxlu reads as octal.
fn octal_hint(text: &str) -> &'static str {
    let bytes = text.as_bytes();
    if bytes.len() > 1 && bytes[0] == b'0' && bytes[1].is_ascii_digit() {
        " (note: a leading 0 makes the number octal, as in xl)"
    } else {
        ""
    }
}

/// Result of C `strtoull(s, &end, 0)` on a string that starts with ASCII digits:
/// the value (saturated, as with `ERANGE`), whether it overflowed, and the byte index
/// where the scan stopped. Only decimal and octal can occur here because callers have
/// already checked that the text starts with `[0-9]+` followed by a non-`x` unit.
fn strtoull_auto_base(text: &str) -> (u64, bool, usize) {
    let bytes = text.as_bytes();
    let octal = bytes.len() > 1 && bytes[0] == b'0';
    let radix: u64 = if octal { 8 } else { 10 };
    let mut value: u64 = 0;
    let mut overflow = false;
    let mut end = 0;
    for &b in bytes {
        let digit = match b {
            b'0'..=b'9' if u64::from(b - b'0') < radix => u64::from(b - b'0'),
            _ => break,
        };
        match value.checked_mul(radix).and_then(|v| v.checked_add(digit)) {
            Some(v) => value = v,
            None => {
                overflow = true;
                value = u64::MAX;
            }
        }
        end += 1;
    }
    (value, overflow, end)
}

/// Does `text` match `^[0-9]+[GMK]?[Bb]/s$` (libxlu `vif_bytes_per_sec_re`)?
fn matches_rate_re(text: &str) -> bool {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = text.as_bytes().get(digits..).unwrap_or_default();
    let rest = match rest.first() {
        Some(b'G' | b'M' | b'K') => rest.get(1..).unwrap_or_default(),
        _ => rest,
    };
    matches!(rest, [b'B' | b'b', b'/', b's'])
}

/// Does `text` match `^[0-9]+[mu]?s?$` (libxlu `vif_internal_usec_re`)?
fn matches_interval_re(text: &str) -> bool {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = text.as_bytes().get(digits..).unwrap_or_default();
    let rest = match rest.first() {
        Some(b'm' | b'u') => rest.get(1..).unwrap_or_default(),
        _ => rest,
    };
    matches!(rest, [] | [b's'])
}

/// Parses the `RATE/s` part into bytes per second (libxlu
/// `vif_parse_rate_bytes_per_sec`, including the octal and unit-after-scan quirks).
fn parse_bytes_per_sec(rate: &str) -> Result<u64, RateError> {
    if !matches_rate_re(rate) {
        return Err(RateError::InvalidRate {
            rate: rate.to_owned(),
        });
    }
    let (number, overflow, end) = strtoull_auto_base(rate);
    if overflow || number == 0 || number > u64::from(u32::MAX) {
        return Err(RateError::RateOutOfRange {
            rate: rate.to_owned(),
        });
    }
    let unit = rate.as_bytes().get(end..).unwrap_or_default();
    let first = unit.first().copied();
    let second = unit.get(1).copied();
    // number ≤ 2^32−1, so even ×10^9 stays below 2^63: no overflow possible.
    let mut bytes_per_sec = match first {
        Some(b'G') => number * 1_000_000_000,
        Some(b'M') => number * 1_000_000,
        Some(b'K') => number * 1_000,
        _ => number,
    };
    if first == Some(b'b') || second == Some(b'b') {
        bytes_per_sec /= 8;
    }
    Ok(bytes_per_sec)
}

/// Parses the `INTERVAL` part into microseconds (libxlu
/// `vif_parse_rate_interval_usecs`, including the octal quirk).
fn parse_interval_usecs(interval: &str) -> Result<u32, RateError> {
    let out_of_range = || RateError::IntervalOutOfRange {
        interval: interval.to_owned(),
    };
    if !matches_interval_re(interval) {
        return Err(RateError::InvalidInterval {
            interval: interval.to_owned(),
        });
    }
    let (number, overflow, end) = strtoull_auto_base(interval);
    if overflow || number == 0 || number > u64::from(u32::MAX) {
        return Err(out_of_range());
    }
    let usecs = match interval.as_bytes().get(end) {
        None | Some(b's') => number * 1_000_000,
        Some(b'm') => number * 1_000,
        // "u"/"us", or a digit left over by the octal scan: taken as microseconds.
        Some(_) => number,
    };
    u32::try_from(usecs).map_err(|_| out_of_range())
}

/// Parses a vif `rate=` value, `RATE/s[@INTERVAL]`, exactly as xl 4.17 does
/// (libxlu `xlu_vif_parse_rate`, reference §7): e.g. `10Mb/s` ⇒ 62500 bytes per
/// 50000 µs, `1MB/s@20ms` ⇒ 20000 bytes per 20000 µs. See the module docs for quirks.
pub fn parse_rate_spec(spec: &str) -> Result<Rate, RateError> {
    let (rate, interval) = match spec.split_once('@') {
        Some((rate, interval)) => (rate, Some(interval)),
        None => (spec, None),
    };
    if rate.is_empty() {
        return Err(RateError::NoRate {
            spec: spec.to_owned(),
        });
    }
    let bytes_per_sec = parse_bytes_per_sec(rate)?;
    let interval_usecs = match interval {
        Some(interval) => parse_interval_usecs(interval)?,
        None => DEFAULT_RATE_INTERVAL_USECS,
    };
    let product = bytes_per_sec
        .checked_mul(u64::from(interval_usecs))
        .ok_or_else(|| RateError::Overflow {
            spec: spec.to_owned(),
        })?;
    Ok(Rate {
        bytes_per_interval: product / 1_000_000,
        interval_usecs,
    })
}

impl Rate {
    /// The backend xenstore key name this value is written under (§4.6).
    pub const BACKEND_KEY: &'static str = "rate";
}

/// Formats the backend key value `"<bytes_per_interval>,<interval_usecs>"` exactly as
/// libxl writes it (`"%"PRIu64",%"PRIu32`, reference §4.6).
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.bytes_per_interval, self.interval_usecs)
    }
}

/// Parses the backend key value `"<credit_bytes>,<credit_usec>"` as netback reads it
/// (reference §1.8): two non-empty runs of decimal digits separated by one comma,
/// nothing else. Unlike the kernel's `simple_strtoul`, values that do not fit
/// (bytes in 64 bits, usecs in 32 bits) are refused instead of wrapping.
impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || RateError::BadBackendKey {
            text: text.to_owned(),
        };
        let (bytes, usecs) = text.split_once(',').ok_or_else(bad)?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(bytes) || !all_digits(usecs) {
            return Err(bad());
        }
        Ok(Rate {
            bytes_per_interval: bytes.parse().map_err(|_| bad())?,
            interval_usecs: usecs.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(spec: &str) -> String {
        parse_rate_spec(spec).unwrap().to_string()
    }

    #[test]
    fn brief_vectors() {
        assert_eq!(key("10Mb/s"), "62500,50000");
        assert_eq!(key("250KB/s"), "12500,50000");
        assert_eq!(key("1MB/s@20ms"), "20000,20000");
        assert_eq!(key("10Mb/s@20ms"), "25000,20000");
    }

    /// Expected outputs of Xen's tools/xl/check-xl-vif-parse.
    #[test]
    fn check_xl_vif_parse_accepts() {
        for spec in [
            "16000000b/s",
            "16000000b/s@50ms",
            "2000000B/s",
            "2000000B/s@50ms",
            "16Mb/s",
            "16Mb/s@50ms",
            "2MB/s",
            "2MB/s@50ms",
        ] {
            assert_eq!(key(spec), "100000,50000", "{spec}");
        }
        for spec in ["16Kb/s", "16Kb/s@50ms", "2KB/s", "2KB/s@50ms"] {
            assert_eq!(key(spec), "100,50000", "{spec}");
        }
        for spec in ["8Gb/s", "8Gb/s@50ms", "1GB/s", "1GB/s@50ms"] {
            assert_eq!(key(spec), "50000000,50000", "{spec}");
        }
        for spec in ["80Mb/s@1s", "10MB/s@1s"] {
            assert_eq!(key(spec), "10000000,1000000", "{spec}");
        }
    }

    /// Rejections listed in Xen's tools/xl/check-xl-vif-parse.
    #[test]
    fn check_xl_vif_parse_rejects() {
        for spec in ["foo", "10MB", "10MB/m", "10ZB", "10ZB/s", "10ZB/m"] {
            assert!(
                matches!(parse_rate_spec(spec), Err(RateError::InvalidRate { .. })),
                "{spec}"
            );
        }
        for spec in [
            "4294967296b/s",
            "4294967296Kb/s",
            "4294967296Mb/s",
            "4294967296Gb/s",
            "0B/s",
        ] {
            assert!(
                matches!(parse_rate_spec(spec), Err(RateError::RateOutOfRange { .. })),
                "{spec}"
            );
        }
        for spec in ["10Mb/s@foo", "10Mb/s@10h", "10MB/s@foo", "10MB/s@10h"] {
            assert!(
                matches!(
                    parse_rate_spec(spec),
                    Err(RateError::InvalidInterval { .. })
                ),
                "{spec}"
            );
        }
        for spec in [
            "1B/s@4294967296us",
            "1B/s@4294968ms",
            "1B/s@4295s",
            "1B/s@0us",
        ] {
            assert!(
                matches!(
                    parse_rate_spec(spec),
                    Err(RateError::IntervalOutOfRange { .. })
                ),
                "{spec}"
            );
        }
        for spec in ["4294967295GB/s@5us", "4296MB/s@4294s"] {
            assert!(
                matches!(parse_rate_spec(spec), Err(RateError::Overflow { .. })),
                "{spec}"
            );
        }
        assert!(matches!(
            parse_rate_spec("@"),
            Err(RateError::NoRate { .. })
        ));
    }

    #[test]
    fn interval_units() {
        assert_eq!(key("1MB/s@20m"), "20000,20000");
        assert_eq!(key("1MB/s@20000us"), "20000,20000");
        assert_eq!(key("1MB/s@20000u"), "20000,20000");
        assert_eq!(key("1MB/s@2"), "2000000,2000000");
        assert_eq!(key("1MB/s@2s"), "2000000,2000000");
        assert!(matches!(
            parse_rate_spec("1MB/s@"),
            Err(RateError::InvalidInterval { .. })
        ));
        assert!(matches!(
            parse_rate_spec("1MB/s@1ms@2"),
            Err(RateError::InvalidInterval { .. })
        ));
        assert!(matches!(
            parse_rate_spec("1MB/s@ms"),
            Err(RateError::InvalidInterval { .. })
        ));
    }

    #[test]
    fn octal_quirk() {
        // 010 octal = 8 → 8 MB/s.
        assert_eq!(key("010MB/s"), "400000,50000");
        // "08" scans as octal 0 → refused, with a hint.
        let err = parse_rate_spec("08MB/s").unwrap_err();
        assert!(matches!(err, RateError::RateOutOfRange { .. }));
        assert!(err.to_string().contains("octal"), "{err}");
        // "018Kb/s": scan stops at '8'; xl looks at '8' and 'K' → no multiplier and
        // no bit division: 1 byte/s.
        assert_eq!(key("018Kb/s@1s"), "1,1000000");
        // "018b/s": xl looks at '8' and 'b' → bits: 1/8 = 0 bytes/s.
        assert_eq!(key("018b/s@1s"), "0,1000000");
        // "019KB/s": 1 byte per second, no multiplier.
        assert_eq!(key("019KB/s@1s"), "1,1000000");
        // Octal interval: 010ms = 8 ms.
        assert_eq!(key("1MB/s@010ms"), "8000,8000");
        // "018ms": scan stops at '8' → taken as 1 microsecond.
        assert_eq!(key("1MB/s@018ms"), "1,1");
        assert!(matches!(
            parse_rate_spec("1MB/s@09ms"),
            Err(RateError::IntervalOutOfRange { .. })
        ));
    }

    #[test]
    fn tiny_rate_rounds_down_to_zero_like_xl() {
        assert_eq!(key("1B/s"), "0,50000");
    }

    #[test]
    fn errors_name_the_text() {
        let err = parse_rate_spec("10MB").unwrap_err().to_string();
        assert!(err.contains("`10MB'"), "{err}");
        let err = parse_rate_spec("10MB/s@10h").unwrap_err().to_string();
        assert!(err.contains("`10h'"), "{err}");
        let err = parse_rate_spec("4294967296b/s").unwrap_err().to_string();
        assert!(err.contains("4294967296b/s"), "{err}");
        assert!(!err.contains("octal"), "{err}");
    }

    #[test]
    fn huge_numbers_saturate_into_range_errors() {
        assert!(matches!(
            parse_rate_spec("99999999999999999999999999B/s"),
            Err(RateError::RateOutOfRange { .. })
        ));
        assert!(matches!(
            parse_rate_spec("1B/s@99999999999999999999999"),
            Err(RateError::IntervalOutOfRange { .. })
        ));
    }

    #[test]
    fn backend_key_form() {
        let rate: Rate = "62500,50000".parse().unwrap();
        assert_eq!(
            rate,
            Rate {
                bytes_per_interval: 62500,
                interval_usecs: 50000
            }
        );
        assert_eq!("0,0".parse::<Rate>().unwrap().interval_usecs, 0);
        for bad in [
            "",
            ",",
            "1,",
            ",1",
            "1;2",
            "1,2,3",
            " 1,2",
            "1,2 ",
            "+1,2",
            "-1,2",
            "0x10,2",
            "1,4294967296",
            "18446744073709551616,1",
            "10Mb/s",
        ] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(matches!(err, RateError::BadBackendKey { .. }), "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    proptest! {
        #[test]
        fn display_from_str_round_trip(bytes in any::<u64>(), usecs in any::<u32>()) {
            let rate = Rate { bytes_per_interval: bytes, interval_usecs: usecs };
            prop_assert_eq!(rate.to_string().parse::<Rate>().unwrap(), rate);
        }

        #[test]
        fn spec_parser_never_panics(spec in ".{0,40}") {
            let _ = parse_rate_spec(&spec);
            let _ = spec.parse::<Rate>();
        }

        #[test]
        fn decimal_rates_follow_the_formula(
            n in 1u64..=u64::from(u32::MAX),
            unit in prop::sample::select(vec!["", "K", "M", "G"]),
            bits in any::<bool>(),
            ms in 1u32..=4_294_967,
        ) {
            let spec = format!("{n}{unit}{}/s@{ms}ms", if bits { "b" } else { "B" });
            let mult = match unit { "K" => 1_000, "M" => 1_000_000, "G" => 1_000_000_000, _ => 1 };
            let bps = n * mult / if bits { 8 } else { 1 };
            let usecs = u64::from(ms) * 1000;
            match parse_rate_spec(&spec) {
                Ok(rate) => {
                    prop_assert_eq!(u64::from(rate.interval_usecs), usecs);
                    prop_assert_eq!(u128::from(rate.bytes_per_interval),
                        u128::from(bps) * u128::from(usecs) / 1_000_000);
                }
                Err(RateError::Overflow { .. }) => {
                    prop_assert!(u128::from(bps) * u128::from(usecs) > u128::from(u64::MAX));
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
