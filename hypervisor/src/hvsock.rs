//! The hypervisor socket: how a separate process becomes a domain's frontend.
//!
//! Each guest domain gets `RUN_DIR/hv/dom<D>.sock` (a `SOCK_SEQPACKET` unix socket); a
//! connection acts as domain D, as its xenstore socket does. One request per packet,
//! JSON; one answer per packet, JSON, with file descriptors passed by `SCM_RIGHTS`
//! where the answer says so — the vhost-user model. What crosses is exactly Xen's ABI:
//! the domain's memory (a sealed memfd: grant table in frames `0..grant_frames`, the
//! rest free for rings and buffers), event channels (one eventfd per port: read it to
//! acknowledge; write the peer's to notify), and the domain's xenstore socket. The
//! protocol is documented in `docs/hypervisor-socket.md`.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::evtchn::{EventFd, Port};
use crate::hv::Hypervisor;
use crate::DomId;

/// Largest request or answer.
pub const MAX_PACKET: usize = 4096;

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HvRequest {
    /// Identify the domain; the answer carries its memory (fd 0).
    Hello,
    /// `EVTCHNOP_alloc_unbound` for `remote`; the answer carries the port's eventfd.
    AllocUnbound {
        /// Who may bind.
        remote: DomId,
    },
    /// `EVTCHNOP_bind_interdomain`; the answer carries the new port's eventfd.
    BindInterdomain {
        /// Peer domain.
        remote_dom: DomId,
        /// Peer port.
        remote_port: Port,
    },
    /// The peer's eventfd of an interdomain port (write 1 to notify it).
    Notifier {
        /// Our port.
        port: Port,
    },
    /// `EVTCHNOP_send` (slower than writing the notifier; for completeness).
    Send {
        /// Our port.
        port: Port,
    },
    /// `EVTCHNOP_close`.
    Close {
        /// Our port.
        port: Port,
    },
    /// `EVTCHNOP_status`.
    Status {
        /// Our port.
        port: Port,
    },
}

/// An answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct HvAnswer {
    /// Success.
    pub ok: bool,
    /// Error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Positive errno of the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// Our domain (Hello).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domid: Option<DomId>,
    /// Frames of memory (Hello).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    /// Grant-table frames at the start of memory (Hello).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_frames: Option<u32>,
    /// Our xenstore socket (Hello).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xenstore: Option<String>,
    /// A port (AllocUnbound, BindInterdomain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// Port status (Status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl HvAnswer {
    fn err(e: impl std::fmt::Display, errno: i32) -> HvAnswer {
        HvAnswer {
            ok: false,
            error: Some(e.to_string()),
            errno: Some(errno),
            ..HvAnswer::default()
        }
    }
}

/// Where a domain's hypervisor socket lives.
pub fn socket_path(run_dir: &Path, domid: DomId) -> PathBuf {
    run_dir.join("hv").join(format!("dom{domid}.sock"))
}

// ---- SCM_RIGHTS packets ---------------------------------------------------------------

fn send_packet(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // Room for up to 4 fds.
    let mut cbuf = [0u64; 8];
    // SAFETY: zeroed msghdr is valid; all pointers below refer to live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let n = fds.len().min(4);
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) } as usize;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer is large enough for one cmsg with n fds (checked
        // by construction: 64 bytes ≥ CMSG_SPACE(16)), and CMSG_FIRSTHDR points into it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((n * std::mem::size_of::<RawFd>()) as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<RawFd>(), n);
        }
    }
    // SAFETY: sendmsg on a socket we own with a fully initialised msghdr.
    let rc = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv_packet(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: as in send_packet.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: recvmsg into live buffers described by msg.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel filled in, within controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*c).cmsg_len - libc::CMSG_LEN(0) as usize;
                let count = payload / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "packet too large",
        ));
    }
    Ok((n as usize, fds))
}

fn seqpacket_listener(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: socket/bind/listen with checked results; the sockaddr is built below
    // with a length-checked copy of the path.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as u16;
        let bytes = cpath.as_bytes_with_nul();
        if bytes.len() > addr.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket path too long",
            ));
        }
        for (i, b) in bytes.iter().enumerate() {
            addr.sun_path[i] = *b as libc::c_char;
        }
        if libc::bind(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as u32,
        ) < 0
            || libc::listen(fd, 16) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(UnixListener::from(owned))
    }
}

fn seqpacket_connect(path: &Path) -> io::Result<OwnedFd> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: as in seqpacket_listener.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as u16;
        let bytes = cpath.as_bytes_with_nul();
        if bytes.len() > addr.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket path too long",
            ));
        }
        for (i, b) in bytes.iter().enumerate() {
            addr.sun_path[i] = *b as libc::c_char;
        }
        if libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as u32,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(owned)
    }
}

// ---- server -----------------------------------------------------------------------------

/// Serves one domain's hypervisor socket (a thread per connection; the traffic is
/// control only). Stops when the listener is removed.
pub struct HvSocketServer {
    path: PathBuf,
    /// A duplicate of the listening socket, to shut it down from outside the thread.
    listener: OwnedFd,
}

impl HvSocketServer {
    /// Binds `socket_path(run_dir, domid)` and serves it on a background thread.
    pub fn start(
        hv: Arc<Hypervisor>,
        run_dir: &Path,
        domid: DomId,
        xenstore: PathBuf,
    ) -> io::Result<HvSocketServer> {
        let path = socket_path(run_dir, domid);
        let listener = seqpacket_listener(&path)?;
        let dup = OwnedFd::from(listener.try_clone()?);
        std::thread::Builder::new()
            .name(format!("hvsock-dom{domid}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            let hv = Arc::clone(&hv);
                            let xenstore = xenstore.clone();
                            let fd = OwnedFd::from(stream);
                            let _ = std::thread::Builder::new()
                                .name(format!("hvsock-dom{domid}-conn"))
                                .spawn(move || serve_conn(hv, domid, xenstore, fd));
                        }
                        Err(_) => break,
                    }
                }
            })?;
        Ok(HvSocketServer {
            path,
            listener: dup,
        })
    }
}

impl Drop for HvSocketServer {
    fn drop(&mut self) {
        // Wakes the accept loop (shutdown makes accept fail) and removes the socket.
        // SAFETY: shutdown on our own duplicate of the listening socket; it makes the
        // accept loop's accept fail so the thread ends.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_conn(hv: Arc<Hypervisor>, domid: DomId, xenstore: PathBuf, fd: OwnedFd) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut owned_ports: BTreeSet<Port> = BTreeSet::new();
    loop {
        let n = match recv_packet(fd.as_raw_fd(), &mut buf) {
            Ok((0, _)) | Err(_) => break,
            Ok((n, _fds)) => n,
        };
        let (answer, fds) = match serde_json::from_slice::<HvRequest>(&buf[..n]) {
            Ok(req) => handle(&hv, domid, &xenstore, req, &mut owned_ports),
            Err(e) => (
                HvAnswer::err(format!("malformed request: {e}"), libc::EINVAL),
                Vec::new(),
            ),
        };
        let data = serde_json::to_vec(&answer).unwrap_or_default();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        if send_packet(fd.as_raw_fd(), &data, &raw).is_err() {
            break;
        }
    }
    // A frontend process that went away leaves its ports to the domain (like a hung
    // guest); they are closed when the domain is destroyed.
    debug!(
        "hvsock dom{domid}: connection closed ({} ports allocated)",
        owned_ports.len()
    );
}

fn handle(
    hv: &Hypervisor,
    domid: DomId,
    xenstore: &Path,
    req: HvRequest,
    owned: &mut BTreeSet<Port>,
) -> (HvAnswer, Vec<OwnedFd>) {
    let ev = hv.evtchn();
    let eventfd = |port: Port| -> Result<OwnedFd, Box<HvAnswer>> {
        ev.pending_fd(domid, port)
            .map_err(|e| Box::new(HvAnswer::err(e, e.errno())))?
            .try_clone_fd()
            .map_err(|e| Box::new(HvAnswer::err(e, libc::EMFILE)))
    };
    let ok = HvAnswer {
        ok: true,
        ..HvAnswer::default()
    };
    match req {
        HvRequest::Hello => {
            let Some(dom) = hv.domain(domid) else {
                return (HvAnswer::err("domain is gone", libc::ESRCH), Vec::new());
            };
            match dom.memory().fd().try_clone_to_owned() {
                Ok(memfd) => (
                    HvAnswer {
                        domid: Some(domid),
                        frames: Some(dom.memory().frames()),
                        grant_frames: Some(dom.grants.nr_frames()),
                        xenstore: Some(xenstore.display().to_string()),
                        ..ok
                    },
                    vec![memfd],
                ),
                Err(e) => (HvAnswer::err(e, libc::EMFILE), Vec::new()),
            }
        }
        HvRequest::AllocUnbound { remote } => match ev.alloc_unbound(domid, remote) {
            Ok(port) => match eventfd(port) {
                Ok(fd) => {
                    owned.insert(port);
                    (
                        HvAnswer {
                            port: Some(port),
                            ..ok
                        },
                        vec![fd],
                    )
                }
                Err(a) => (*a, Vec::new()),
            },
            Err(e) => (HvAnswer::err(e, e.errno()), Vec::new()),
        },
        HvRequest::BindInterdomain {
            remote_dom,
            remote_port,
        } => match ev.bind_interdomain(domid, remote_dom, remote_port) {
            Ok(port) => match eventfd(port) {
                Ok(fd) => {
                    owned.insert(port);
                    (
                        HvAnswer {
                            port: Some(port),
                            ..ok
                        },
                        vec![fd],
                    )
                }
                Err(a) => (*a, Vec::new()),
            },
            Err(e) => (HvAnswer::err(e, e.errno()), Vec::new()),
        },
        HvRequest::Notifier { port } => match ev.notifier_fd(domid, port) {
            Ok(fd) => (ok, vec![fd]),
            Err(e) => (HvAnswer::err(e, e.errno()), Vec::new()),
        },
        HvRequest::Send { port } => match ev.send(domid, port) {
            Ok(()) => (ok, Vec::new()),
            Err(e) => (HvAnswer::err(e, e.errno()), Vec::new()),
        },
        HvRequest::Close { port } => match ev.close(domid, port) {
            Ok(()) => {
                owned.remove(&port);
                (ok, Vec::new())
            }
            Err(e) => (HvAnswer::err(e, e.errno()), Vec::new()),
        },
        HvRequest::Status { port } => match ev.status(domid, port) {
            Ok(st) => (
                HvAnswer {
                    status: serde_json::to_value(st).ok(),
                    ..ok
                },
                Vec::new(),
            ),
            Err(e) => (HvAnswer::err(e, e.errno()), Vec::new()),
        },
    }
}

// ---- client -------------------------------------------------------------------------------

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum HvClientError {
    /// Socket trouble.
    #[error("hypervisor socket: {0}")]
    Io(#[from] io::Error),
    /// The daemon refused.
    #[error("hypervisor: {msg} (errno {errno})")]
    Refused {
        /// Message.
        msg: String,
        /// errno.
        errno: i32,
    },
    /// The answer lacked something it should carry.
    #[error("hypervisor socket protocol: {0}")]
    Protocol(String),
}

/// What `Hello` tells an external frontend.
#[derive(Debug)]
pub struct HvHello {
    /// Our domain.
    pub domid: DomId,
    /// Memory frames.
    pub frames: u64,
    /// Grant-table frames at the start of memory.
    pub grant_frames: u32,
    /// Our xenstore socket.
    pub xenstore: PathBuf,
    /// The memory (sealed memfd).
    pub memory: OwnedFd,
}

/// A connection to a domain's hypervisor socket.
#[derive(Debug)]
pub struct HvClient {
    fd: OwnedFd,
}

impl HvClient {
    /// Connects.
    pub fn connect(path: &Path) -> Result<HvClient, HvClientError> {
        Ok(HvClient {
            fd: seqpacket_connect(path)?,
        })
    }

    fn call(&self, req: &HvRequest) -> Result<(HvAnswer, Vec<OwnedFd>), HvClientError> {
        let data = serde_json::to_vec(req).map_err(|e| HvClientError::Protocol(e.to_string()))?;
        send_packet(self.fd.as_raw_fd(), &data, &[])?;
        let mut buf = vec![0u8; MAX_PACKET];
        let (n, fds) = recv_packet(self.fd.as_raw_fd(), &mut buf)?;
        if n == 0 {
            return Err(HvClientError::Protocol("connection closed".into()));
        }
        let a: HvAnswer = serde_json::from_slice(&buf[..n])
            .map_err(|e| HvClientError::Protocol(e.to_string()))?;
        if !a.ok {
            return Err(HvClientError::Refused {
                msg: a.error.unwrap_or_default(),
                errno: a.errno.unwrap_or(libc::EINVAL),
            });
        }
        Ok((a, fds))
    }

    fn one_fd(fds: Vec<OwnedFd>) -> Result<OwnedFd, HvClientError> {
        fds.into_iter()
            .next()
            .ok_or_else(|| HvClientError::Protocol("answer carried no fd".into()))
    }

    /// `Hello`: our domain, its memory and xenstore socket.
    pub fn hello(&self) -> Result<HvHello, HvClientError> {
        let (a, fds) = self.call(&HvRequest::Hello)?;
        let missing = |w: &str| HvClientError::Protocol(format!("hello without {w}"));
        Ok(HvHello {
            domid: a.domid.ok_or_else(|| missing("domid"))?,
            frames: a.frames.ok_or_else(|| missing("frames"))?,
            grant_frames: a.grant_frames.ok_or_else(|| missing("grant_frames"))?,
            xenstore: a
                .xenstore
                .map(PathBuf::from)
                .ok_or_else(|| missing("xenstore"))?,
            memory: Self::one_fd(fds)?,
        })
    }

    /// `alloc_unbound`: the port and its pending eventfd.
    pub fn alloc_unbound(&self, remote: DomId) -> Result<(Port, EventFd), HvClientError> {
        let (a, fds) = self.call(&HvRequest::AllocUnbound { remote })?;
        let port = a
            .port
            .ok_or_else(|| HvClientError::Protocol("no port".into()))?;
        Ok((port, EventFd::from_fd(Self::one_fd(fds)?)))
    }

    /// The peer's eventfd of an interdomain port.
    pub fn notifier(&self, port: Port) -> Result<EventFd, HvClientError> {
        let (_, fds) = self.call(&HvRequest::Notifier { port })?;
        Ok(EventFd::from_fd(Self::one_fd(fds)?))
    }

    /// `send`.
    pub fn send(&self, port: Port) -> Result<(), HvClientError> {
        self.call(&HvRequest::Send { port }).map(|_| ())
    }

    /// `close`.
    pub fn close(&self, port: Port) -> Result<(), HvClientError> {
        self.call(&HvRequest::Close { port }).map(|_| ())
    }

    /// `status`.
    pub fn status(&self, port: Port) -> Result<serde_json::Value, HvClientError> {
        let (a, _) = self.call(&HvRequest::Status { port })?;
        Ok(a.status.unwrap_or_default())
    }

    /// Sends raw bytes as one packet and returns the raw answer (protocol tests).
    pub fn raw(&self, bytes: &[u8]) -> Result<Vec<u8>, HvClientError> {
        send_packet(self.fd.as_raw_fd(), bytes, &[])?;
        let mut buf = vec![0u8; MAX_PACKET];
        let (n, _) = recv_packet(self.fd.as_raw_fd(), &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DomainRequest, Registry, RegistryChange};

    #[test]
    fn an_external_frontend_gets_memory_and_event_channels() {
        let mut reg = Registry::new();
        let hv = Arc::new(Hypervisor::new(reg.get(0).unwrap()).unwrap());
        let info = reg
            .plan_create(
                &DomainRequest {
                    name: "ext".into(),
                    uuid: "00000000-0000-4000-8000-000000000001".into(),
                    memory_mib: 4,
                    vcpus: 1,
                    domid: None,
                    max_grant_frames: 2,
                },
                0,
            )
            .unwrap();
        reg.apply(&RegistryChange::Created(info.clone()));
        hv.instantiate(&info).unwrap();
        let dir = std::env::temp_dir().join(format!("hvsock-{}", std::process::id()));
        let server =
            HvSocketServer::start(Arc::clone(&hv), &dir, info.domid, "/x/socket".into()).unwrap();
        let c = HvClient::connect(&socket_path(&dir, info.domid)).unwrap();
        let hello = c.hello().unwrap();
        assert_eq!(
            (hello.domid, hello.frames, hello.grant_frames),
            (info.domid, 1024, 2)
        );
        // The memfd maps the very same frames.
        let mem = crate::memory::GuestMemory::from_fd(hello.memory).unwrap();
        mem.write(5, 0, b"shared").unwrap();
        let mut back = [0u8; 6];
        hv.domain(info.domid)
            .unwrap()
            .memory()
            .read(5, 0, &mut back)
            .unwrap();
        assert_eq!(&back, b"shared");
        // Event channels: alloc, the backend binds, notifications both ways.
        let (port, pending) = c.alloc_unbound(0).unwrap();
        assert!(c.notifier(port).is_err(), "no peer yet");
        let bport = hv.evtchn().bind_interdomain(0, info.domid, port).unwrap();
        let to_backend = c.notifier(port).unwrap();
        let backend_pending = hv.evtchn().pending_fd(0, bport).unwrap();
        assert!(backend_pending.consume(), "new bindings start pending");
        to_backend.signal();
        assert!(backend_pending.consume());
        hv.evtchn().send(0, bport).unwrap();
        assert!(pending.consume());
        assert_eq!(c.status(port).unwrap()["state"], "interdomain");
        // Garbage is refused without killing the connection.
        let raw = c.raw(b"{not json").unwrap();
        assert!(String::from_utf8_lossy(&raw).contains("malformed"));
        c.close(port).unwrap();
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
