//! The `NETLINK_ROUTE` socket: send one request, collect its replies and its ACK.
//!
//! Rules followed (`man 7 netlink`, `Documentation/userspace-api/netlink/intro.rst`):
//! requests carry `NLM_F_ACK` and end at the `NLMSG_ERROR` whose code is 0 or `-errno`;
//! dumps (`NLM_F_DUMP`) are multi-part and end at `NLMSG_DONE`, whose payload holds an
//! error code too; a dump whose messages carry `NLM_F_DUMP_INTR` saw the table change
//! underneath and must be restarted; replies whose sequence number or port id is not ours
//! are leftovers and are skipped; only datagrams from the kernel (port 0) are accepted.

use super::uapi::*;
use super::wire::{self, AckError, MessageBuilder, NlMsg, WireError};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why a request did not complete.
#[derive(Debug)]
pub(crate) enum RequestError {
    /// Socket-level failure.
    Io(io::Error),
    /// Undecodable reply.
    Wire(WireError),
    /// The kernel answered with an error.
    Kernel(AckError),
    /// A dump was interrupted by a concurrent change (`NLM_F_DUMP_INTR`).
    Interrupted,
}

impl From<WireError> for RequestError {
    fn from(e: WireError) -> Self {
        RequestError::Wire(e)
    }
}

/// How long to wait for the kernel before declaring the socket stuck.
const RECV_TIMEOUT_SECS: libc::time_t = 30;

/// A bound `NETLINK_ROUTE` socket. Bound to the network namespace of the thread that
/// created it, for its whole life.
#[derive(Debug)]
pub(crate) struct NetlinkSocket {
    fd: OwnedFd,
    port: u32,
    seq: Cell<u32>,
    buf: RefCell<Vec<u8>>,
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: fd is a valid socket; the option value points to a live c_int of the size
    // passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl NetlinkSocket {
    /// Opens and binds a socket in the calling thread's network namespace, with extended
    /// ACKs (error strings from the kernel) and capped ACKs (no echo of our request).
    pub(crate) fn open() -> io::Result<NetlinkSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a freshly created fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_nl of `len` bytes.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                len,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut bound: libc::sockaddr_nl = addr;
        let mut blen = len;
        // SAFETY: bound/blen describe a writable sockaddr_nl.
        if unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                (&mut bound as *mut libc::sockaddr_nl).cast(),
                &mut blen,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // Both options exist since Linux 4.12/4.3; an older kernel just gives terser errors.
        let _ = setsockopt_int(&fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let _ = setsockopt_int(&fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: tv is a live timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NetlinkSocket {
            fd,
            port: bound.nl_pid,
            seq: Cell::new(1),
            buf: RefCell::new(vec![0; 32 * 1024]),
        })
    }

    fn next_seq(&self) -> u32 {
        let s = self.seq.get().wrapping_add(1).max(1);
        self.seq.set(s);
        s
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; zero = the kernel (pid 0, no groups).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: bytes is a live buffer of the length passed; `to` is a valid address.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    (&to as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n as usize != bytes.len() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short send on netlink socket",
                ));
            }
            return Ok(());
        }
    }

    /// Receives one datagram into `buf` (grown to fit, found with `MSG_PEEK|MSG_TRUNC`);
    /// returns its length and whether it came from the kernel.
    fn recv(&self, buf: &mut Vec<u8>) -> io::Result<(usize, bool)> {
        loop {
            // SAFETY: buf is a live writable buffer of buf.len() bytes.
            let peek = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            };
            if peek < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if peek as usize > buf.len() {
                buf.resize(peek as usize, 0);
            }
            // SAFETY: sockaddr_nl is plain data.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut flen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: buf and from/flen are live writable buffers of the sizes passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut flen,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Ok((n as usize, from.nl_pid == 0));
        }
    }

    /// Sends a non-dump request with `NLM_F_ACK` and passes every reply message to
    /// `on_reply` until the ACK arrives.
    pub(crate) fn request(
        &self,
        builder: MessageBuilder,
        mut on_reply: impl FnMut(&NlMsg<'_>) -> Result<(), WireError>,
    ) -> Result<(), RequestError> {
        let seq = self.next_seq();
        let mut b = builder;
        // Every request is acknowledged, so success is confirmed, not assumed.
        b.add_flags(NLM_F_ACK);
        let bytes = b.finish(seq)?;
        self.send(&bytes).map_err(RequestError::Io)?;
        let mut buf = self.buf.borrow_mut();
        loop {
            let (n, from_kernel) = self.recv(&mut buf).map_err(RequestError::Io)?;
            if !from_kernel {
                continue;
            }
            for msg in wire::messages(&buf[..n]) {
                let msg = msg?;
                if msg.seq != seq || (msg.port != self.port && msg.port != 0) {
                    continue;
                }
                match msg.msg_type {
                    NLMSG_ERROR => {
                        let ack = wire::parse_ack(msg.flags, msg.payload)?;
                        return if ack.errno == 0 {
                            Ok(())
                        } else {
                            Err(RequestError::Kernel(ack))
                        };
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    NLMSG_DONE => return Ok(()),
                    _ => on_reply(&msg)?,
                }
            }
        }
    }

    /// Sends a dump request and passes every message of the multi-part reply to `on_item`
    /// until `NLMSG_DONE`. Returns `Interrupted` if the kernel flagged the dump as
    /// inconsistent; the caller restarts it.
    pub(crate) fn dump(
        &self,
        builder: MessageBuilder,
        mut on_item: impl FnMut(&NlMsg<'_>) -> Result<(), WireError>,
    ) -> Result<(), RequestError> {
        let seq = self.next_seq();
        let bytes = builder.finish(seq)?;
        self.send(&bytes).map_err(RequestError::Io)?;
        let mut buf = self.buf.borrow_mut();
        let mut interrupted = false;
        loop {
            let (n, from_kernel) = self.recv(&mut buf).map_err(RequestError::Io)?;
            if !from_kernel {
                continue;
            }
            for msg in wire::messages(&buf[..n]) {
                let msg = msg?;
                if msg.seq != seq || (msg.port != self.port && msg.port != 0) {
                    continue;
                }
                if msg.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match msg.msg_type {
                    NLMSG_DONE => {
                        // NLMSG_DONE carries an int error code (0 normally), like nlmsgerr
                        // without the echoed header; extended-ACK TLVs may follow it.
                        if msg.payload.len() >= 4 {
                            let code = i32::from_ne_bytes([
                                msg.payload[0],
                                msg.payload[1],
                                msg.payload[2],
                                msg.payload[3],
                            ]);
                            if code < 0 {
                                let mut message = None;
                                if msg.flags & NLM_F_ACK_TLVS != 0 {
                                    for a in wire::attrs(&msg.payload[4..]).flatten() {
                                        if a.kind == NLMSGERR_ATTR_MSG {
                                            message = Some(a.string());
                                        }
                                    }
                                }
                                return Err(RequestError::Kernel(AckError {
                                    errno: code.checked_neg().unwrap_or(i32::MAX),
                                    message,
                                }));
                            }
                        }
                        return if interrupted {
                            Err(RequestError::Interrupted)
                        } else {
                            Ok(())
                        };
                    }
                    NLMSG_ERROR => {
                        let ack = wire::parse_ack(msg.flags, msg.payload)?;
                        if ack.errno != 0 {
                            return Err(RequestError::Kernel(ack));
                        }
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    _ => on_item(&msg)?,
                }
            }
        }
    }
}
