//! The `xs_wire` codec: message header, message types, error names and
//! incremental framing of a xenstore byte stream.
//!
//! Every message in either direction is a 16-byte little-endian header
//! (`type`, `req_id`, `tx_id`, `len`) followed by `len` payload bytes, with
//! `len <= XENSTORE_PAYLOAD_MAX` (xen-networking.md §4.1, `io/xs_wire.h`).

use thiserror::Error;

/// Size of the `xsd_sockmsg` header in bytes (§4.1).
pub const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: the largest payload allowed in either direction (§4.1).
pub const PAYLOAD_MAX: usize = 4096;
/// `XS_TYPE_COUNT` in Xen 4.17: every type number at or above it is unknown (§4.2).
pub const TYPE_COUNT: u32 = 23;
/// `XS_INVALID` (§4.2).
pub const TYPE_INVALID: u32 = 0xFFFF;

/// `enum xsd_sockmsg_type` of Xen 4.17 (§4.2, §9). Number 20 (the removed
/// `XS_RESTRICT`) is deliberately absent: the daemon answers it with `ENOSYS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MsgType {
    /// `XS_CONTROL` (alias `XS_DEBUG`): daemon control commands, privileged.
    Control = 0,
    /// `XS_DIRECTORY`: list the children of a node.
    Directory = 1,
    /// `XS_READ`: read a node's value.
    Read = 2,
    /// `XS_GET_PERMS`: read a node's permission list.
    GetPerms = 3,
    /// `XS_WATCH`: register a watch.
    Watch = 4,
    /// `XS_UNWATCH`: remove a watch.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`.
    TransactionEnd = 7,
    /// `XS_INTRODUCE`: announce a new domain (privileged).
    Introduce = 8,
    /// `XS_RELEASE`: forget a domain (privileged).
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = 10,
    /// `XS_WRITE`.
    Write = 11,
    /// `XS_MKDIR`.
    Mkdir = 12,
    /// `XS_RM`.
    Rm = 13,
    /// `XS_SET_PERMS`.
    SetPerms = 14,
    /// `XS_WATCH_EVENT`: unsolicited event, daemon to client only.
    WatchEvent = 15,
    /// `XS_ERROR`: error reply, daemon to client only.
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED` (privileged since XSA-115).
    IsDomainIntroduced = 17,
    /// `XS_RESUME` (privileged).
    Resume = 18,
    /// `XS_SET_TARGET` (privileged).
    SetTarget = 19,
    /// `XS_RESET_WATCHES`.
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`.
    DirectoryPart = 22,
}

impl MsgType {
    /// Maps a wire type number to a 4.17 message type; `None` for 20, ≥ 23
    /// and anything else unknown (the daemon answers those with `ENOSYS`).
    pub fn from_u32(value: u32) -> Option<MsgType> {
        use MsgType::*;
        Some(match value {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            _ => return None,
        })
    }

    /// The wire number of this type.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

/// The errno names xenstored sends in `XS_ERROR` payloads, in `xsd_errors`
/// table order, with their Linux numbers (§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[allow(clippy::upper_case_acronyms)]
pub enum XsError {
    /// Invalid argument: bad path, wrong argument count, bad NUL framing.
    #[error("EINVAL")]
    EINVAL,
    /// Permission denied, or a privileged operation from an unprivileged caller.
    #[error("EACCES")]
    EACCES,
    /// Already exists (duplicate watch).
    #[error("EEXIST")]
    EEXIST,
    /// Is a directory.
    #[error("EISDIR")]
    EISDIR,
    /// No such node, transaction or watch.
    #[error("ENOENT")]
    ENOENT,
    /// Out of memory (also: commit of a transaction that had a failed write).
    #[error("ENOMEM")]
    ENOMEM,
    /// Quota exceeded (nodes, node size, transactions, permissions).
    #[error("ENOSPC")]
    ENOSPC,
    /// I/O error / internal inconsistency.
    #[error("EIO")]
    EIO,
    /// Directory not empty.
    #[error("ENOTEMPTY")]
    ENOTEMPTY,
    /// Unknown or unsupported message type.
    #[error("ENOSYS")]
    ENOSYS,
    /// Read-only.
    #[error("EROFS")]
    EROFS,
    /// Busy: transaction start inside a transaction.
    #[error("EBUSY")]
    EBUSY,
    /// Try again: transaction conflict at commit.
    #[error("EAGAIN")]
    EAGAIN,
    /// Already connected.
    #[error("EISCONN")]
    EISCONN,
    /// Too big: reply over 4096 bytes, too many watches.
    #[error("E2BIG")]
    E2BIG,
    /// Operation not permitted: unprivileged owner change.
    #[error("EPERM")]
    EPERM,
}

impl XsError {
    /// Every error, in `xsd_errors` table order (§4.3).
    pub const ALL: [XsError; 16] = [
        XsError::EINVAL,
        XsError::EACCES,
        XsError::EEXIST,
        XsError::EISDIR,
        XsError::ENOENT,
        XsError::ENOMEM,
        XsError::ENOSPC,
        XsError::EIO,
        XsError::ENOTEMPTY,
        XsError::ENOSYS,
        XsError::EROFS,
        XsError::EBUSY,
        XsError::EAGAIN,
        XsError::EISCONN,
        XsError::E2BIG,
        XsError::EPERM,
    ];

    /// The name sent on the wire (without the terminating NUL).
    pub fn name(self) -> &'static str {
        match self {
            XsError::EINVAL => "EINVAL",
            XsError::EACCES => "EACCES",
            XsError::EEXIST => "EEXIST",
            XsError::EISDIR => "EISDIR",
            XsError::ENOENT => "ENOENT",
            XsError::ENOMEM => "ENOMEM",
            XsError::ENOSPC => "ENOSPC",
            XsError::EIO => "EIO",
            XsError::ENOTEMPTY => "ENOTEMPTY",
            XsError::ENOSYS => "ENOSYS",
            XsError::EROFS => "EROFS",
            XsError::EBUSY => "EBUSY",
            XsError::EAGAIN => "EAGAIN",
            XsError::EISCONN => "EISCONN",
            XsError::E2BIG => "E2BIG",
            XsError::EPERM => "EPERM",
        }
    }

    /// The Linux errno value (§4.3, §9).
    pub fn errno(self) -> i32 {
        match self {
            XsError::EINVAL => 22,
            XsError::EACCES => 13,
            XsError::EEXIST => 17,
            XsError::EISDIR => 21,
            XsError::ENOENT => 2,
            XsError::ENOMEM => 12,
            XsError::ENOSPC => 28,
            XsError::EIO => 5,
            XsError::ENOTEMPTY => 39,
            XsError::ENOSYS => 38,
            XsError::EROFS => 30,
            XsError::EBUSY => 16,
            XsError::EAGAIN => 11,
            XsError::EISCONN => 106,
            XsError::E2BIG => 7,
            XsError::EPERM => 1,
        }
    }

    /// Parses an error name as a client does; unknown names are `None`
    /// (libxenstore then reports `EINVAL`).
    pub fn from_name(name: &[u8]) -> Option<XsError> {
        XsError::ALL
            .iter()
            .copied()
            .find(|e| e.name().as_bytes() == name)
    }
}

/// The 16-byte `xsd_sockmsg` header, little-endian on the wire (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Message type number (`XS_*`); kept raw so unknown types survive decoding.
    pub msg_type: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 = none.
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl Header {
    /// Decodes a header from its 16 wire bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Header {
            msg_type: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }

    /// Encodes the header to its 16 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.msg_type.to_le_bytes());
        out[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.len.to_le_bytes());
        out
    }
}

/// One whole xenstore message: header fields plus payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Message type number (`XS_*`).
    pub msg_type: u32,
    /// Request id (echoed in replies; 0 in watch events).
    pub req_id: u32,
    /// Transaction id (echoed in replies; 0 in watch events).
    pub tx_id: u32,
    /// Payload bytes (at most [`PAYLOAD_MAX`] for anything the daemon sends).
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with the given fields.
    pub fn new(msg_type: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Message {
        Message {
            msg_type: msg_type.as_u32(),
            req_id,
            tx_id,
            payload,
        }
    }

    /// A request whose payload is `args`, each followed by a NUL (the
    /// `xs_talkv` convention for string arguments).
    pub fn request(msg_type: MsgType, tx_id: u32, args: &[&[u8]]) -> Message {
        let mut payload = Vec::new();
        for arg in args {
            payload.extend_from_slice(arg);
            payload.push(0);
        }
        Message::new(msg_type, 0, tx_id, payload)
    }

    /// The decoded type, if it is a 4.17 type.
    pub fn kind(&self) -> Option<MsgType> {
        MsgType::from_u32(self.msg_type)
    }

    /// The header describing this message.
    pub fn header(&self) -> Header {
        Header {
            msg_type: self.msg_type,
            req_id: self.req_id,
            tx_id: self.tx_id,
            len: u32::try_from(self.payload.len()).unwrap_or(u32::MAX),
        }
    }

    /// A successful reply to `self`: same type, req_id and tx_id (§4.1).
    pub fn reply(&self, payload: Vec<u8>) -> Message {
        Message {
            msg_type: self.msg_type,
            req_id: self.req_id,
            tx_id: self.tx_id,
            payload,
        }
    }

    /// The `OK\0` reply to `self`.
    pub fn reply_ok(&self) -> Message {
        self.reply(b"OK\0".to_vec())
    }

    /// An `XS_ERROR` reply to `self` carrying `ENAME\0`; req_id and tx_id are
    /// preserved (§4.1, §4.3).
    pub fn reply_error(&self, error: XsError) -> Message {
        let mut payload = Vec::with_capacity(error.name().len() + 1);
        payload.extend_from_slice(error.name().as_bytes());
        payload.push(0);
        Message {
            msg_type: MsgType::Error.as_u32(),
            req_id: self.req_id,
            tx_id: self.tx_id,
            payload,
        }
    }

    /// A `XS_WATCH_EVENT` carrying `path\0token\0`, with req_id = tx_id = 0.
    pub fn watch_event(path: &[u8], token: &[u8]) -> Message {
        let mut payload = Vec::with_capacity(path.len() + token.len() + 2);
        payload.extend_from_slice(path);
        payload.push(0);
        payload.extend_from_slice(token);
        payload.push(0);
        Message::new(MsgType::WatchEvent, 0, 0, payload)
    }

    /// For an `XS_ERROR` message, the error it carries.
    pub fn error(&self) -> Option<XsError> {
        if self.msg_type != MsgType::Error.as_u32() {
            return None;
        }
        let name = self.payload.strip_suffix(b"\0").unwrap_or(&self.payload);
        XsError::from_name(name)
    }

    /// Appends the header and payload to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header().encode());
        out.extend_from_slice(&self.payload);
    }

    /// The message as one byte vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out);
        out
    }
}

/// A framing error: the stream can no longer be trusted and the shell must
/// drop the connection (robustness §3 e1, XSA-420).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A header announced a payload longer than [`PAYLOAD_MAX`].
    #[error("xenstore payload length {0} exceeds {PAYLOAD_MAX}")]
    PayloadTooLong(u32),
}

/// Incremental framing of a xenstore byte stream.
///
/// Bytes are pushed as they arrive; whole messages come out. The header's
/// `len` is validated before any payload is buffered, so a hostile length
/// never causes an allocation (robustness §3 e1). After an error the
/// decoder stays poisoned and repeats the error.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    poisoned: Option<FrameError>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.poisoned.is_some() {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// True when a partial message is buffered (EOF now would truncate it).
    pub fn has_partial(&self) -> bool {
        self.buffered() > 0
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or a
    /// framing error (the connection must be dropped).
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        let pending = self.buf.get(self.start..).unwrap_or(&[]);
        let Some(head) = pending.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::parse(head);
        let len = header.len as usize;
        if len > PAYLOAD_MAX {
            let err = FrameError::PayloadTooLong(header.len);
            self.poisoned = Some(err);
            self.buf = Vec::new();
            self.start = 0;
            return Err(err);
        }
        let Some(payload) = pending.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let msg = Message {
            msg_type: header.msg_type,
            req_id: header.req_id,
            tx_id: header.tx_id,
            payload: payload.to_vec(),
        };
        self.start += HEADER_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn type_numbers_match_xs_wire_h() {
        let expected = [
            (0, MsgType::Control),
            (1, MsgType::Directory),
            (2, MsgType::Read),
            (3, MsgType::GetPerms),
            (4, MsgType::Watch),
            (5, MsgType::Unwatch),
            (6, MsgType::TransactionStart),
            (7, MsgType::TransactionEnd),
            (8, MsgType::Introduce),
            (9, MsgType::Release),
            (10, MsgType::GetDomainPath),
            (11, MsgType::Write),
            (12, MsgType::Mkdir),
            (13, MsgType::Rm),
            (14, MsgType::SetPerms),
            (15, MsgType::WatchEvent),
            (16, MsgType::Error),
            (17, MsgType::IsDomainIntroduced),
            (18, MsgType::Resume),
            (19, MsgType::SetTarget),
            (21, MsgType::ResetWatches),
            (22, MsgType::DirectoryPart),
        ];
        for (n, t) in expected {
            assert_eq!(MsgType::from_u32(n), Some(t));
            assert_eq!(t.as_u32(), n);
        }
        assert_eq!(MsgType::from_u32(20), None);
        assert_eq!(MsgType::from_u32(TYPE_COUNT), None);
        assert_eq!(MsgType::from_u32(TYPE_INVALID), None);
        assert_eq!(MsgType::from_u32(u32::MAX), None);
    }

    #[test]
    fn errno_table_matches_section_4_3() {
        let numbers: Vec<i32> = XsError::ALL.iter().map(|e| e.errno()).collect();
        assert_eq!(
            numbers,
            [22, 13, 17, 21, 2, 12, 28, 5, 39, 38, 30, 16, 11, 106, 7, 1]
        );
        for e in XsError::ALL {
            assert_eq!(XsError::from_name(e.name().as_bytes()), Some(e));
            assert_eq!(e.to_string(), e.name());
        }
        assert_eq!(XsError::from_name(b"EWHAT"), None);
    }

    #[test]
    fn header_is_little_endian() {
        let h = Header {
            msg_type: 2,
            req_id: 0x0403_0201,
            tx_id: 7,
            len: 0x1000,
        };
        let bytes = h.encode();
        assert_eq!(bytes, [2, 0, 0, 0, 1, 2, 3, 4, 7, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(Header::parse(&bytes), h);
    }

    #[test]
    fn replies_keep_ids_and_errors_carry_names() {
        let req = Message::new(MsgType::Read, 9, 3, b"/a\0".to_vec());
        let ok = req.reply_ok();
        assert_eq!((ok.msg_type, ok.req_id, ok.tx_id), (2, 9, 3));
        assert_eq!(ok.payload, b"OK\0");
        let err = req.reply_error(XsError::ENOENT);
        assert_eq!((err.msg_type, err.req_id, err.tx_id), (16, 9, 3));
        assert_eq!(err.payload, b"ENOENT\0");
        assert_eq!(err.error(), Some(XsError::ENOENT));
        let ev = Message::watch_event(b"/a", b"tok");
        assert_eq!((ev.msg_type, ev.req_id, ev.tx_id), (15, 0, 0));
        assert_eq!(ev.payload, b"/a\0tok\0");
    }

    #[test]
    fn decoder_reassembles_split_messages() {
        let a = Message::request(MsgType::Write, 0, &[b"/x", b"v"]);
        let b = Message::request(MsgType::Read, 5, &[b"/x"]);
        let mut bytes = a.encode();
        bytes.extend(b.encode());
        let mut dec = FrameDecoder::new();
        for chunk in bytes.chunks(3) {
            dec.push(chunk);
        }
        assert_eq!(dec.next_message().unwrap(), Some(a));
        assert_eq!(dec.next_message().unwrap(), Some(b));
        assert_eq!(dec.next_message().unwrap(), None);
        assert!(!dec.has_partial());
    }

    #[test]
    fn decoder_waits_for_whole_payload() {
        let m = Message::request(MsgType::Read, 0, &[b"/local/domain/0/name"]);
        let bytes = m.encode();
        let mut dec = FrameDecoder::new();
        dec.push(&bytes[..10]);
        assert_eq!(dec.next_message().unwrap(), None);
        dec.push(&bytes[10..20]);
        assert_eq!(dec.next_message().unwrap(), None);
        assert!(dec.has_partial());
        dec.push(&bytes[20..]);
        assert_eq!(dec.next_message().unwrap(), Some(m));
    }

    #[test]
    fn over_long_payload_poisons_without_allocating() {
        let mut dec = FrameDecoder::new();
        let h = Header {
            msg_type: 2,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        };
        dec.push(&h.encode());
        assert_eq!(dec.next_message(), Err(FrameError::PayloadTooLong(4097)));
        assert_eq!(dec.buffered(), 0);
        dec.push(&Message::request(MsgType::Read, 0, &[b"/"]).encode());
        assert_eq!(dec.next_message(), Err(FrameError::PayloadTooLong(4097)));
        // Exactly 4096 is fine.
        let mut dec = FrameDecoder::new();
        let m = Message::new(MsgType::Write, 0, 0, vec![b'a'; PAYLOAD_MAX]);
        dec.push(&m.encode());
        assert_eq!(dec.next_message().unwrap(), Some(m));
        // u32::MAX length is rejected from the header alone.
        let mut dec = FrameDecoder::new();
        let mut bytes = [0u8; HEADER_LEN];
        bytes[12..].copy_from_slice(&u32::MAX.to_le_bytes());
        dec.push(&bytes);
        assert_eq!(
            dec.next_message(),
            Err(FrameError::PayloadTooLong(u32::MAX))
        );
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_garbage(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)) {
            let mut dec = FrameDecoder::new();
            for c in &chunks {
                dec.push(c);
                while let Ok(Some(m)) = dec.next_message() {
                    prop_assert!(m.payload.len() <= PAYLOAD_MAX);
                }
            }
        }

        #[test]
        fn encode_then_decode_roundtrips(
            msgs in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            split in 1usize..50,
        ) {
            let msgs: Vec<Message> = msgs.into_iter().map(|(t, r, x, p)| Message { msg_type: t, req_id: r, tx_id: x, payload: p }).collect();
            let mut bytes = Vec::new();
            for m in &msgs { m.encode_into(&mut bytes); }
            let mut dec = FrameDecoder::new();
            let mut out = Vec::new();
            for chunk in bytes.chunks(split) {
                dec.push(chunk);
                while let Some(m) = dec.next_message().unwrap() { out.push(m); }
            }
            prop_assert_eq!(out, msgs);
        }
    }
}
