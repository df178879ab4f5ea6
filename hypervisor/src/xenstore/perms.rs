//! Node permissions (xen-networking.md §4.4).
//!
//! A node carries one or more `<letter><domid>` entries. The first entry
//! names the owner and, through its letter, the access of every domain not
//! listed later. A privileged connection or the owner (or a domain whose
//! SET_TARGET target is the owner) has full rights; anyone else gets the
//! first later entry naming its domid (or its target's), else the owner
//! entry's letter.

use thiserror::Error;

use crate::DomId;

/// What a permission entry grants (`XS_PERM_NONE/READ/WRITE`, `b` = both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The wire letter.
    pub fn letter(self) -> u8 {
        match self {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }

    /// Parses a wire letter.
    pub fn from_letter(letter: u8) -> Option<Access> {
        match letter {
            b'n' => Some(Access::None),
            b'r' => Some(Access::Read),
            b'w' => Some(Access::Write),
            b'b' => Some(Access::Both),
            _ => None,
        }
    }

    /// The `XS_PERM_*` bit value (NONE 0, READ 1, WRITE 2, both 3).
    pub fn bits(self) -> u8 {
        match self {
            Access::None => 0,
            Access::Read => 1,
            Access::Write => 2,
            Access::Both => 3,
        }
    }

    /// Inverse of [`Access::bits`].
    pub fn from_bits(bits: u8) -> Option<Access> {
        match bits {
            0 => Some(Access::None),
            1 => Some(Access::Read),
            2 => Some(Access::Write),
            3 => Some(Access::Both),
            _ => None,
        }
    }

    fn rights(self) -> Rights {
        match self {
            Access::None => Rights::NONE,
            Access::Read => Rights::READ,
            Access::Write => Rights::WRITE,
            Access::Both => Rights::READ.union(Rights::WRITE),
        }
    }
}

/// One permission entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// What is granted.
    pub access: Access,
    /// To which domain.
    pub domid: DomId,
}

impl Perm {
    /// An entry.
    pub fn new(access: Access, domid: DomId) -> Perm {
        Perm { access, domid }
    }
}

/// Why a permission string was rejected (`EINVAL` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PermParseError {
    /// No entries at all.
    #[error("empty permission list")]
    Empty,
    /// The letter is not one of `n r w b`.
    #[error("bad permission letter")]
    BadLetter,
    /// The domid is missing, malformed or above 65535.
    #[error("bad domid in permission")]
    BadDomid,
}

/// The rights a caller holds on a node: any of READ, WRITE, OWNER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights(0);
    /// `XS_PERM_READ`.
    pub const READ: Rights = Rights(1);
    /// `XS_PERM_WRITE`.
    pub const WRITE: Rights = Rights(2);
    /// `XS_PERM_OWNER`: may change the permissions.
    pub const OWNER: Rights = Rights(8);
    /// Everything (privileged callers and owners).
    pub const ALL: Rights = Rights(1 | 2 | 8);

    /// Both sets.
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// True when every right in `want` is held.
    pub fn contains(self, want: Rights) -> bool {
        self.0 & want.0 == want.0
    }

    /// True when any right in `want` is held (C's `parent_perm & perm`).
    pub fn intersects(self, want: Rights) -> bool {
        self.0 & want.0 != 0
    }
}

/// Who is asking: the identity permission checks are made against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The caller's domain.
    pub domid: DomId,
    /// Dom0 / socket connections: full access everywhere, no quotas.
    pub privileged: bool,
    /// The domain this one was made the device model of via SET_TARGET.
    pub target: Option<DomId>,
}

/// A node's permission list: at least one entry, the first being the owner
/// and the default access.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PermList(Vec<Perm>);

impl PermList {
    /// A single-entry list: `owner` with default access `access`.
    pub fn owner_only(owner: DomId, access: Access) -> PermList {
        PermList(vec![Perm::new(access, owner)])
    }

    /// A list from entries; `None` if empty.
    pub fn from_entries(entries: Vec<Perm>) -> Option<PermList> {
        if entries.is_empty() {
            None
        } else {
            Some(PermList(entries))
        }
    }

    /// Parses NUL-separated wire strings such as `n0`, `r5`, `b1`. Domids are
    /// read like C's `strtol(.., 0)`: decimal, `0x` hex or leading-`0` octal;
    /// signs, spaces and values above 65535 are rejected.
    pub fn parse<'a>(
        strings: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<PermList, PermParseError> {
        let entries = strings
            .into_iter()
            .map(parse_perm)
            .collect::<Result<Vec<_>, _>>()?;
        PermList::from_entries(entries).ok_or(PermParseError::Empty)
    }

    /// The entries, owner first.
    pub fn entries(&self) -> &[Perm] {
        &self.0
    }

    /// Number of entries (≥ 1).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The owner entry.
    pub fn owner_entry(&self) -> Perm {
        self.0
            .first()
            .copied()
            .unwrap_or(Perm::new(Access::None, 0))
    }

    /// The owning domain.
    pub fn owner(&self) -> DomId {
        self.owner_entry().domid
    }

    /// The same list with the owner replaced (nodes created by an
    /// unprivileged domain are owned by it, §4.4).
    pub fn with_owner(&self, owner: DomId) -> PermList {
        let mut out = self.clone();
        if let Some(first) = out.0.first_mut() {
            first.domid = owner;
        }
        out
    }

    /// Removes every non-owner entry naming `domid`; an owner entry naming it
    /// is handed to `new_owner` (XSA-322: a dead domain leaves no rights
    /// behind). Returns whether anything changed.
    pub fn strip_domain(&mut self, domid: DomId, new_owner: DomId) -> bool {
        let before = self.0.len();
        let mut changed = false;
        if let Some(first) = self.0.first_mut() {
            if first.domid == domid {
                first.domid = new_owner;
                changed = true;
            }
        }
        let mut index = 0;
        self.0.retain(|p| {
            index += 1;
            index == 1 || p.domid != domid
        });
        changed || self.0.len() != before
    }

    /// True when any entry (owner included) names `domid`.
    pub fn mentions(&self, domid: DomId) -> bool {
        self.0.iter().any(|p| p.domid == domid)
    }

    /// Appends the wire form, each entry NUL-terminated (`n0\0r5\0`).
    pub fn format_into(&self, out: &mut Vec<u8>) {
        for p in &self.0 {
            out.push(p.access.letter());
            out.extend_from_slice(p.domid.to_string().as_bytes());
            out.push(0);
        }
    }

    /// The comma-free display form used by `xenstore-ls -p`: `n0,r5`.
    pub fn to_display(&self) -> String {
        self.0
            .iter()
            .map(|p| format!("{}{}", p.access.letter() as char, p.domid))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The rights `caller` holds under this list (§4.4, C `perm_for_conn`).
    pub fn rights(&self, caller: &Caller) -> Rights {
        let owner = self.owner_entry();
        if caller.privileged || owner.domid == caller.domid || caller.target == Some(owner.domid) {
            return Rights::ALL;
        }
        self.0
            .iter()
            .skip(1)
            .find(|p| p.domid == caller.domid || caller.target == Some(p.domid))
            .map_or(owner.access.rights(), |p| p.access.rights())
    }
}

fn parse_perm(s: &[u8]) -> Result<Perm, PermParseError> {
    let (&letter, digits) = s.split_first().ok_or(PermParseError::BadLetter)?;
    let access = Access::from_letter(letter).ok_or(PermParseError::BadLetter)?;
    let domid = parse_c_unsigned(digits)
        .and_then(|v| DomId::try_from(v).ok())
        .ok_or(PermParseError::BadDomid)?;
    Ok(Perm::new(access, domid))
}

/// An unsigned number in `strtol(…, 0)` notation (decimal, `0x` hex, `0`
/// octal), the whole input, saturating well above any domid.
fn parse_c_unsigned(s: &[u8]) -> Option<u64> {
    let (radix, digits) = if let Some(hex) = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X"))
    {
        (16, hex)
    } else if s.len() > 1 && s.first() == Some(&b'0') {
        (8, s.get(1..).unwrap_or(&[]))
    } else {
        (10, s)
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)?;
        value = value
            .saturating_mul(u64::from(radix))
            .saturating_add(u64::from(d));
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> PermList {
        PermList::parse(s.split(',').map(str::as_bytes)).unwrap()
    }

    fn dom(domid: DomId) -> Caller {
        Caller {
            domid,
            privileged: false,
            target: None,
        }
    }

    #[test]
    fn parse_and_format_roundtrip() {
        let p = list("n0,r5,w3,b1");
        assert_eq!(p.len(), 4);
        assert_eq!(p.owner(), 0);
        let mut out = Vec::new();
        p.format_into(&mut out);
        assert_eq!(out, b"n0\0r5\0w3\0b1\0");
        assert_eq!(p.to_display(), "n0,r5,w3,b1");
    }

    #[test]
    fn parse_accepts_strtol_forms_and_rejects_junk() {
        assert_eq!(list("r0x10").owner(), 16);
        assert_eq!(list("r010").owner(), 8);
        assert_eq!(list("r65535").owner(), 65535);
        for bad in [
            "", "x1", "r", "r-1", "r 1", "r1a", "r65536", "r0x", "r09", "R1",
        ] {
            assert!(PermList::parse([bad.as_bytes()]).is_err(), "{bad:?}");
        }
        assert_eq!(
            PermList::parse(std::iter::empty()),
            Err(PermParseError::Empty)
        );
    }

    #[test]
    fn privileged_and_owner_get_everything() {
        let p = list("n5,r1");
        let dom0 = Caller {
            domid: 0,
            privileged: true,
            target: None,
        };
        assert_eq!(p.rights(&dom0), Rights::ALL);
        assert_eq!(p.rights(&dom(5)), Rights::ALL);
    }

    #[test]
    fn later_entry_then_owner_letter() {
        let p = list("r5,w2,b3,n2");
        assert_eq!(
            p.rights(&dom(2)),
            Rights::WRITE,
            "first matching entry wins"
        );
        assert_eq!(p.rights(&dom(3)), Rights::READ.union(Rights::WRITE));
        assert_eq!(
            p.rights(&dom(9)),
            Rights::READ,
            "owner letter is the default"
        );
        assert!(!p.rights(&dom(3)).contains(Rights::OWNER));
        let none = list("n0");
        assert_eq!(none.rights(&dom(1)), Rights::NONE);
    }

    #[test]
    fn set_target_acts_as_the_target() {
        let p = list("r5,w2");
        let dm = Caller {
            domid: 7,
            privileged: false,
            target: Some(5),
        };
        assert_eq!(p.rights(&dm), Rights::ALL);
        let dm2 = Caller {
            domid: 7,
            privileged: false,
            target: Some(2),
        };
        assert_eq!(p.rights(&dm2), Rights::WRITE);
    }

    #[test]
    fn rights_set_operations() {
        assert!(Rights::ALL.contains(Rights::WRITE.union(Rights::OWNER)));
        assert!(!Rights::WRITE.contains(Rights::WRITE.union(Rights::OWNER)));
        assert!(Rights::WRITE.intersects(Rights::WRITE.union(Rights::OWNER)));
        assert!(!Rights::READ.intersects(Rights::WRITE));
    }

    #[test]
    fn strip_domain_removes_entries_and_hands_over_ownership() {
        let mut p = list("n0,r5,b7,w5");
        assert!(p.strip_domain(5, 0));
        assert_eq!(p.to_display(), "n0,b7");
        assert!(!p.strip_domain(5, 0));
        let mut q = list("b5,r5,r1");
        assert!(q.strip_domain(5, 0));
        assert_eq!(q.to_display(), "b0,r1");
        assert!(q.mentions(1));
        assert!(!q.mentions(5));
        assert_eq!(list("n3,r4").with_owner(9).to_display(), "n9,r4");
    }

    #[test]
    fn access_bits_roundtrip() {
        for a in [Access::None, Access::Read, Access::Write, Access::Both] {
            assert_eq!(Access::from_bits(a.bits()), Some(a));
            assert_eq!(Access::from_letter(a.letter()), Some(a));
        }
        assert_eq!(Access::from_bits(4), None);
    }
}
