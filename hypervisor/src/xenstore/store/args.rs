//! Request payload parsing with C xenstored's exact rules (`get_string`,
//! `get_strings`, `onearg`, `xs_count_strings`, `atoi`).

/// The NUL-terminated strings of a payload, in order; a trailing
/// unterminated tail is not a string (C `get_strings`).
pub(crate) fn strings(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let n = count_nuls(payload);
    payload.split(|&b| b == 0).take(n)
}

/// Number of NUL bytes (C `xs_count_strings`).
pub(crate) fn count_nuls(payload: &[u8]) -> usize {
    payload.iter().filter(|&&b| b == 0).count()
}

/// The single argument of a one-argument request: the payload must contain
/// exactly one NUL, as its last byte (C `onearg`; robustness §3 e4).
pub(crate) fn onearg(payload: &[u8]) -> Option<&[u8]> {
    let (&last, arg) = payload.split_last()?;
    if last != 0 || arg.contains(&0) {
        return None;
    }
    Some(arg)
}

/// C `atoi`: optional leading whitespace and sign, then decimal digits up to
/// the first other byte; 0 when there are none. Saturates instead of
/// overflowing.
pub(crate) fn atoi(s: &[u8]) -> i64 {
    let mut rest = s;
    while let Some((&c, tail)) = rest.split_first() {
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            rest = tail;
        } else {
            break;
        }
    }
    let mut negative = false;
    if let Some((&c, tail)) = rest.split_first() {
        if c == b'-' || c == b'+' {
            negative = c == b'-';
            rest = tail;
        }
    }
    let mut value: i64 = 0;
    for &c in rest {
        if !c.is_ascii_digit() {
            break;
        }
        value = value.saturating_mul(10).saturating_add(i64::from(c - b'0'));
    }
    if negative {
        value.saturating_neg()
    } else {
        value
    }
}

/// `atoi` stored into a C `unsigned int`: the `int` result reinterpreted
/// (so "-1" becomes 4294967295).
pub(crate) fn atoi_u32(s: &[u8]) -> u32 {
    atoi(s) as i32 as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_ignore_unterminated_tail() {
        assert_eq!(
            strings(b"a\0b\0").collect::<Vec<_>>(),
            [b"a" as &[u8], b"b"]
        );
        assert_eq!(strings(b"a\0b").collect::<Vec<_>>(), [b"a" as &[u8]]);
        assert_eq!(strings(b"\0\0").collect::<Vec<_>>(), [b"" as &[u8], b""]);
        assert_eq!(strings(b"").count(), 0);
        assert_eq!(strings(b"abc").count(), 0);
    }

    #[test]
    fn onearg_needs_exactly_one_final_nul() {
        assert_eq!(onearg(b"/a\0"), Some(&b"/a"[..]));
        assert_eq!(onearg(b"\0"), Some(&b""[..]));
        assert_eq!(onearg(b""), None);
        assert_eq!(onearg(b"/a"), None);
        assert_eq!(onearg(b"/a\0\0"), None);
        assert_eq!(onearg(b"/a\0b\0"), None);
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi(b"42"), 42);
        assert_eq!(atoi(b"  -7x"), -7);
        assert_eq!(atoi(b"+3"), 3);
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(atoi(b""), 0);
        assert_eq!(atoi(b"99999999999999999999999"), i64::MAX);
        assert_eq!(atoi_u32(b"-1"), u32::MAX);
        assert_eq!(atoi_u32(b"5"), 5);
    }
}
