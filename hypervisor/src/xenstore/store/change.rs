//! Committed mutations, as written to the daemon's write-ahead journal.
//!
//! Replaying a store's changes in order with `Store::apply` on a fresh
//! `Store::new()` reproduces its committed tree exactly (values, permissions
//! and child creation order).
//!
//! Binary form (all integers little-endian, every field length-prefixed):
//!
//! ```text
//! Write:  0x01 | u32 path_len | path | u32 value_len | value | u16 n_perms | n_perms × (u8 access_bits, u16 domid)
//! Remove: 0x02 | u32 path_len | path
//! ```

use thiserror::Error;

use crate::xenstore::perms::{Access, Perm, PermList};

const TAG_WRITE: u8 = 1;
const TAG_REMOVE: u8 = 2;

/// One committed mutation of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set a node's value and permissions, creating it (appended to its
    /// parent's children) if it does not exist.
    Write {
        /// Canonical absolute path.
        path: String,
        /// The node's whole value.
        value: Vec<u8>,
        /// The node's whole permission list.
        perms: PermList,
    },
    /// Remove a node and its whole subtree.
    Remove {
        /// Canonical absolute path.
        path: String,
    },
}

/// Why bytes could not be decoded as a [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChangeDecodeError {
    /// The input ended inside a field.
    #[error("truncated change record")]
    Truncated,
    /// The first byte is not a known record tag.
    #[error("unknown change tag {0}")]
    BadTag(u8),
    /// The path is not UTF-8.
    #[error("change path is not UTF-8")]
    BadPath,
    /// A Write record without permissions.
    #[error("change has no permissions")]
    NoPerms,
    /// A permission entry with access bits above 3.
    #[error("bad access bits {0}")]
    BadAccess(u8),
    /// Bytes left after the record.
    #[error("{0} trailing bytes after change record")]
    Trailing(usize),
}

impl Change {
    /// The path the change applies to.
    pub fn path(&self) -> &str {
        match self {
            Change::Write { path, .. } | Change::Remove { path } => path,
        }
    }

    /// Appends the binary form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Change::Write { path, value, perms } => {
                out.push(TAG_WRITE);
                put_bytes(out, path.as_bytes());
                put_bytes(out, value);
                let n = u16::try_from(perms.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&n.to_le_bytes());
                for p in perms.entries().iter().take(usize::from(n)) {
                    out.push(p.access.bits());
                    out.extend_from_slice(&p.domid.to_le_bytes());
                }
            }
            Change::Remove { path } => {
                out.push(TAG_REMOVE);
                put_bytes(out, path.as_bytes());
            }
        }
    }

    /// Decodes exactly one record occupying all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Change, ChangeDecodeError> {
        let (change, used) = Change::decode_prefix(bytes)?;
        match bytes.len() - used {
            0 => Ok(change),
            n => Err(ChangeDecodeError::Trailing(n)),
        }
    }

    /// Decodes one record from the front of `bytes`, returning it and the
    /// number of bytes it used (for streams of records).
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Change, usize), ChangeDecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let change = match r.u8()? {
            TAG_WRITE => {
                let path = r.string()?;
                let value = r.bytes()?.to_vec();
                let n = r.u16()?;
                let mut entries = Vec::with_capacity(usize::from(n).min(r.remaining() / 3));
                for _ in 0..n {
                    let bits = r.u8()?;
                    let access =
                        Access::from_bits(bits).ok_or(ChangeDecodeError::BadAccess(bits))?;
                    let domid = r.u16()?;
                    entries.push(Perm::new(access, domid));
                }
                let perms = PermList::from_entries(entries).ok_or(ChangeDecodeError::NoPerms)?;
                Change::Write { path, value, perms }
            }
            TAG_REMOVE => Change::Remove { path: r.string()? },
            tag => return Err(ChangeDecodeError::BadTag(tag)),
        };
        Ok((change, r.pos))
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes.get(..len as usize).unwrap_or(bytes));
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ChangeDecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ChangeDecodeError::Truncated)?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or(ChangeDecodeError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ChangeDecodeError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self) -> Result<u16, ChangeDecodeError> {
        let b = self
            .take(2)?
            .try_into()
            .map_err(|_| ChangeDecodeError::Truncated)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, ChangeDecodeError> {
        let b = self
            .take(4)?
            .try_into()
            .map_err(|_| ChangeDecodeError::Truncated)?;
        Ok(u32::from_le_bytes(b))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ChangeDecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, ChangeDecodeError> {
        let raw = self.bytes()?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| ChangeDecodeError::BadPath)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn perms(s: &str) -> PermList {
        PermList::parse(s.split(',').map(str::as_bytes)).unwrap()
    }

    #[test]
    fn write_layout_is_as_documented() {
        let c = Change::Write {
            path: "/a".into(),
            value: b"xy".to_vec(),
            perms: perms("n0,r5"),
        };
        let mut out = Vec::new();
        c.encode(&mut out);
        assert_eq!(
            out,
            [1, 2, 0, 0, 0, b'/', b'a', 2, 0, 0, 0, b'x', b'y', 2, 0, 0, 0, 0, 1, 5, 0]
        );
        assert_eq!(Change::decode(&out), Ok(c));
    }

    #[test]
    fn remove_roundtrips_and_streams() {
        let a = Change::Remove {
            path: "/a/b".into(),
        };
        let b = Change::Write {
            path: "/c".into(),
            value: vec![0, 255],
            perms: perms("b3"),
        };
        let mut out = Vec::new();
        a.encode(&mut out);
        b.encode(&mut out);
        let (first, used) = Change::decode_prefix(&out).unwrap();
        assert_eq!(first, a);
        assert_eq!(Change::decode(&out[used..]), Ok(b));
        assert_eq!(
            Change::decode(&out),
            Err(ChangeDecodeError::Trailing(out.len() - used))
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(Change::decode(&[]), Err(ChangeDecodeError::Truncated));
        assert_eq!(Change::decode(&[9]), Err(ChangeDecodeError::BadTag(9)));
        assert_eq!(
            Change::decode(&[2, 255, 255, 255, 255]),
            Err(ChangeDecodeError::Truncated)
        );
        assert_eq!(
            Change::decode(&[2, 1, 0, 0, 0, 0xff]),
            Err(ChangeDecodeError::BadPath)
        );
        assert_eq!(
            Change::decode(&[1, 1, 0, 0, 0, b'/', 0, 0, 0, 0, 0, 0]),
            Err(ChangeDecodeError::NoPerms)
        );
        assert_eq!(
            Change::decode(&[1, 1, 0, 0, 0, b'/', 0, 0, 0, 0, 1, 0, 7, 0, 0]),
            Err(ChangeDecodeError::BadAccess(7))
        );
        // A huge perm count with no data must not allocate it up front.
        assert_eq!(
            Change::decode(&[1, 1, 0, 0, 0, b'/', 0, 0, 0, 0, 255, 255]),
            Err(ChangeDecodeError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Change::decode(&bytes);
        }

        #[test]
        fn encode_decode_roundtrip(
            path in "/[a-z0-9/_@-]{0,40}",
            value in proptest::collection::vec(any::<u8>(), 0..100),
            entries in proptest::collection::vec((0u8..4, any::<u16>()), 1..6),
            remove in any::<bool>(),
        ) {
            let c = if remove {
                Change::Remove { path }
            } else {
                let entries = entries.into_iter().map(|(a, d)| Perm::new(Access::from_bits(a).unwrap(), d)).collect();
                Change::Write { path, value, perms: PermList::from_entries(entries).unwrap() }
            };
            let mut out = Vec::new();
            c.encode(&mut out);
            prop_assert_eq!(Change::decode(&out), Ok(c));
        }
    }
}
