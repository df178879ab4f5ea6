//! DNS message header and question (RFC 1035 §4.1.1, §4.1.2), read with bounds checks
//! only: the forwarder relays messages and needs nothing past the question.

/// Header length.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Longest label.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest query the forwarder accepts: the classic UDP limit (RFC 1035 §4.2.1). Queries,
/// EDNS OPT record included, are far smaller.
pub const MAX_QUERY_LEN: usize = 512;

const QR: u16 = 0x8000;
const OPCODE_MASK: u16 = 0x7800;
const TC: u16 = 0x0200;

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DnsError {
    /// Shorter than a header, or the question runs past the end.
    #[error("truncated DNS message")]
    Truncated,
    /// Longer than [`MAX_QUERY_LEN`].
    #[error("oversized DNS query")]
    Oversized,
    /// A response where a query was expected, or the reverse.
    #[error("wrong QR bit")]
    WrongDirection,
    /// Not a standard query (opcode 0).
    #[error("unsupported opcode")]
    UnsupportedOpcode,
    /// No question, or answer/authority records in a query.
    #[error("bad section counts")]
    BadCounts,
    /// A label longer than 63, a name longer than 255, or a compression pointer in the
    /// question.
    #[error("bad question name")]
    BadName,
}

/// The fields of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsHeader {
    /// Message id.
    pub id: u16,
    /// Flags word.
    pub flags: u16,
    /// Questions.
    pub qdcount: u16,
    /// Answers.
    pub ancount: u16,
    /// Authority records.
    pub nscount: u16,
    /// Additional records.
    pub arcount: u16,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl DnsHeader {
    /// Reads the header.
    pub fn parse(b: &[u8]) -> Result<DnsHeader, DnsError> {
        let g = |at| u16_at(b, at).ok_or(DnsError::Truncated);
        Ok(DnsHeader {
            id: g(0)?,
            flags: g(2)?,
            qdcount: g(4)?,
            ancount: g(6)?,
            nscount: g(8)?,
            arcount: g(10)?,
        })
    }

    /// A response.
    pub const fn is_response(&self) -> bool {
        self.flags & QR != 0
    }

    /// The opcode.
    pub const fn opcode(&self) -> u8 {
        ((self.flags & OPCODE_MASK) >> 11) as u8
    }
}

/// The first question: where it lies in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Question {
    /// Offset of the name.
    pub start: usize,
    /// Offset just past QCLASS.
    pub end: usize,
}

impl Question {
    /// The question's bytes (name, type, class).
    pub fn bytes<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        msg.get(self.start..self.end).unwrap_or(&[])
    }
}

/// Reads the first question (uncompressed labels, RFC 1035 §4.1.2).
pub fn parse_question(b: &[u8]) -> Result<Question, DnsError> {
    let mut i = HEADER_LEN;
    let mut name_len = 0;
    loop {
        let len = usize::from(*b.get(i).ok_or(DnsError::Truncated)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len > MAX_LABEL_LEN {
            return Err(DnsError::BadName); // compression pointer or reserved label type
        }
        name_len += len + 1;
        if name_len + 1 > MAX_NAME_LEN {
            return Err(DnsError::BadName);
        }
        i += 1 + len;
    }
    let end = i + 4;
    if end > b.len() {
        return Err(DnsError::Truncated);
    }
    Ok(Question {
        start: HEADER_LEN,
        end,
    })
}

/// Checks a guest's query: standard query, one or more questions, no answer or authority
/// records, at most one additional (EDNS OPT), within [`MAX_QUERY_LEN`]. Returns its
/// header and first question.
pub fn check_query(b: &[u8]) -> Result<(DnsHeader, Question), DnsError> {
    if b.len() > MAX_QUERY_LEN {
        return Err(DnsError::Oversized);
    }
    let h = DnsHeader::parse(b)?;
    if h.is_response() {
        return Err(DnsError::WrongDirection);
    }
    if h.opcode() != 0 {
        return Err(DnsError::UnsupportedOpcode);
    }
    if h.qdcount == 0 || h.ancount != 0 || h.nscount != 0 || h.arcount > 1 {
        return Err(DnsError::BadCounts);
    }
    Ok((h, parse_question(b)?))
}

/// Question sections equal up to ASCII case in the name (resolvers and 0x20-randomising
/// servers may change case; RFC 4343).
pub fn same_question(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// Sets the id in place.
pub fn set_id(b: &mut [u8], id: u16) {
    if let Some(s) = b.get_mut(0..2) {
        s.copy_from_slice(&id.to_be_bytes());
    }
}

/// Turns a response in place into its truncated form (header and question only, TC set,
/// other sections empty) and returns its new length (RFC 2181 §9).
pub fn truncate_response(b: &mut [u8], q: &Question) -> usize {
    if let Some(flags) = u16_at(b, 2) {
        let _ = b
            .get_mut(2..4)
            .map(|s| s.copy_from_slice(&(flags | TC).to_be_bytes()));
    }
    if let Some(s) = b.get_mut(4..12) {
        s.copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    }
    q.end.min(b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A query for example.com A with RD.
    pub(crate) fn query(id: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        q
    }

    #[test]
    fn accepts_a_query_and_finds_the_question() {
        let q = query(0x1234);
        let (h, qs) = check_query(&q).unwrap();
        assert_eq!(h.id, 0x1234);
        assert_eq!(qs.bytes(&q), b"\x07example\x03com\x00\x00\x01\x00\x01");
        assert!(same_question(
            qs.bytes(&q),
            b"\x07EXAMPLE\x03cOm\x00\x00\x01\x00\x01"
        ));
        assert!(!same_question(
            qs.bytes(&q),
            b"\x07example\x03com\x00\x00\x1c\x00\x01"
        ));
    }

    #[test]
    fn refuses_bad_queries() {
        let q = query(1);
        assert_eq!(check_query(&q[..11]), Err(DnsError::Truncated));
        assert_eq!(check_query(&q[..q.len() - 1]), Err(DnsError::Truncated));
        let mut r = q.clone();
        r[2] |= 0x80;
        assert_eq!(check_query(&r), Err(DnsError::WrongDirection));
        let mut r = q.clone();
        r[2] |= 0x28; // opcode 5 (UPDATE)
        assert_eq!(check_query(&r), Err(DnsError::UnsupportedOpcode));
        let mut r = q.clone();
        r[5] = 0;
        assert_eq!(check_query(&r), Err(DnsError::BadCounts));
        let mut r = q.clone();
        r[7] = 1;
        assert_eq!(check_query(&r), Err(DnsError::BadCounts));
        let mut r = q.clone();
        r[12] = 0xc0; // compression pointer
        assert_eq!(check_query(&r), Err(DnsError::BadName));
        let mut long = q[..12].to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(check_query(&long), Err(DnsError::BadName));
        let mut big = q.clone();
        big.resize(MAX_QUERY_LEN + 1, 0);
        assert_eq!(check_query(&big), Err(DnsError::Oversized));
    }

    #[test]
    fn truncation() {
        let mut r = query(9);
        r[2] |= 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        let q = parse_question(&r).unwrap();
        let n = truncate_response(&mut r, &q);
        assert_eq!(n, 12 + 17);
        let h = DnsHeader::parse(&r[..n]).unwrap();
        assert!(h.flags & TC != 0);
        assert_eq!((h.qdcount, h.ancount), (1, 0));
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = check_query(&b);
            let _ = parse_question(&b);
            let _ = DnsHeader::parse(&b);
            if let Ok(q) = parse_question(&b) {
                prop_assert!(q.end <= b.len());
                let mut c = b.clone();
                prop_assert!(truncate_response(&mut c, &q) <= b.len());
            }
        }
    }
}
