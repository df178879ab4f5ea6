//! TAP devices from `/dev/net/tun` (`TUNSETIFF`), optionally inside a network namespace.
//!
//! The kernel refuses TAP creation over rtnetlink (`tun_validate` returns `EOPNOTSUPP`,
//! ecosystem.md §0), so a TAP is made the way Firecracker and QEMU make one: open
//! `/dev/net/tun`, `TUNSETIFF` with `IFF_TAP | IFF_NO_PI` (+ `IFF_VNET_HDR`,
//! `IFF_MULTI_QUEUE`). The device is created in the namespace of the thread that *opened*
//! the fd (the tun file's socket takes `current`'s netns at open), so [`Tap::create_in`]
//! opens it on a thread inside the target namespace; the fd then works from any thread.
//!
//! With a vnet header, every frame read or written is preceded by a 12-byte
//! [`VirtioNetHdr`] (`TUNSETVNETHDRSZ` 12, little-endian via `TUNSETVNETLE`), and
//! `TUNSETOFFLOAD` tells the kernel which offloads (checksum, TSO) the reader handles, so it
//! can hand over partial checksums and 64 KiB segments instead of finished frames.

mod vnet_hdr;

pub use vnet_hdr::{GsoType, VirtioNetHdr, VnetHdrError};

use crate::netns::{NetNs, NetNsError};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The clone device.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// A TAP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The configuration is impossible (bad name, offloads without a vnet header).
    #[error("invalid TAP configuration: {0}")]
    Invalid(String),
    /// A system call failed.
    #[error("{op} on TAP {name}: {source}")]
    Io {
        /// What was done (`"TUNSETIFF"`, `"open /dev/net/tun"`, ...).
        op: &'static str,
        /// The TAP's (requested) name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Entering the namespace failed.
    #[error(transparent)]
    Namespace(#[from] NetNsError),
}

/// Offloads the reader of a TAP accepts (`TUN_F_*` for `TUNSETOFFLOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TunOffloads(pub u32);

impl TunOffloads {
    /// `TUN_F_CSUM`: frames may carry partial checksums (`NEEDS_CSUM`).
    pub const CSUM: TunOffloads = TunOffloads(libc::TUN_F_CSUM);
    /// `TUN_F_TSO4`: TCP/IPv4 segmentation offload (needs `CSUM`).
    pub const TSO4: TunOffloads = TunOffloads(libc::TUN_F_TSO4);
    /// `TUN_F_TSO6`: TCP/IPv6 segmentation offload (needs `CSUM`).
    pub const TSO6: TunOffloads = TunOffloads(libc::TUN_F_TSO6);
    /// `TUN_F_TSO_ECN`: TSO with ECN.
    pub const TSO_ECN: TunOffloads = TunOffloads(libc::TUN_F_TSO_ECN);
    /// `TUN_F_USO4`: UDP/IPv4 segmentation offload.
    pub const USO4: TunOffloads = TunOffloads(libc::TUN_F_USO4);
    /// `TUN_F_USO6`: UDP/IPv6 segmentation offload.
    pub const USO6: TunOffloads = TunOffloads(libc::TUN_F_USO6);

    /// What Xen netfront/netback negotiate by default: checksum offload and TSO for both
    /// IP versions (`feature-no-csum-offload=0`, `feature-gso-tcpv4/6=1`).
    pub const XEN_DEFAULT: TunOffloads =
        TunOffloads(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6);
}

impl std::ops::BitOr for TunOffloads {
    type Output = TunOffloads;
    fn bitor(self, rhs: TunOffloads) -> TunOffloads {
        TunOffloads(self.0 | rhs.0)
    }
}

/// How to create (or attach to) a TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name; may contain `%d` for the kernel to pick a number (`tap%d`).
    pub name: String,
    /// Prefix frames with a [`VirtioNetHdr`] (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// Allow several queues (fds) on the device (`IFF_MULTI_QUEUE`); opening the same name
    /// again attaches another queue.
    pub multi_queue: bool,
    /// Put the fd in non-blocking mode.
    pub nonblocking: bool,
    /// Keep the device when the last fd closes (`TUNSETPERSIST`).
    pub persist: bool,
    /// Offloads to enable; requires `vnet_hdr` unless empty.
    pub offloads: TunOffloads,
}

impl TapConfig {
    /// A plain TAP named `name`: no vnet header, one queue, blocking, not persistent.
    pub fn new(name: &str) -> TapConfig {
        TapConfig {
            name: name.to_string(),
            vnet_hdr: false,
            multi_queue: false,
            nonblocking: false,
            persist: false,
            offloads: TunOffloads::default(),
        }
    }

    /// A guest-side TAP as the netfront uses it: vnet header, Xen's default offloads,
    /// non-blocking.
    pub fn with_offloads(name: &str) -> TapConfig {
        TapConfig {
            vnet_hdr: true,
            nonblocking: true,
            offloads: TunOffloads::XEN_DEFAULT,
            ..TapConfig::new(name)
        }
    }

    fn validate(&self) -> Result<(), TapError> {
        let n = &self.name;
        if n.is_empty() || n.len() > 15 || n.contains('/') || n.contains(':') || n.contains('\0') {
            return Err(TapError::Invalid(format!(
                "interface name {n:?} must be 1-15 bytes without '/', ':' or NUL"
            )));
        }
        if self.offloads.0 != 0 && !self.vnet_hdr {
            return Err(TapError::Invalid(
                "offloads need a virtio-net header (vnet_hdr)".into(),
            ));
        }
        Ok(())
    }
}

/// An open TAP queue. Dropping it closes the fd; a non-persistent TAP disappears with its
/// last queue.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    vnet_hdr: bool,
}

/// `struct ifreq` as TUNSETIFF uses it: 16-byte name, then `short ifr_flags`, padded to
/// the union's 24 bytes.
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn name_from(buf: &[u8; 16]) -> String {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Opens `/dev/net/tun` and attaches it to the TAP `cfg.name` in the calling thread's
/// namespace; returns the fd and the kernel's final name.
fn open_and_attach(cfg: &TapConfig) -> Result<(OwnedFd, String), TapError> {
    let io_err = |op, source| TapError::Io {
        op,
        name: cfg.name.clone(),
        source,
    };
    // SAFETY: the path is a NUL-terminated literal; the result is checked.
    let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io_err("open /dev/net/tun", io::Error::last_os_error()));
    }
    // SAFETY: raw is a fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ifr = IfReqFlags {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    ifr.name[..cfg.name.len()].copy_from_slice(cfg.name.as_bytes());
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if cfg.vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    if cfg.multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    ifr.flags = flags as libc::c_short;
    // SAFETY: fd is an open tun fd; ifr is a live ifreq-sized struct the kernel reads and
    // writes (name).
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut IfReqFlags) } < 0 {
        return Err(io_err("TUNSETIFF", io::Error::last_os_error()));
    }
    Ok((fd, name_from(&ifr.name)))
}

impl Tap {
    /// Creates (or attaches to) a TAP in the calling thread's namespace and applies the
    /// rest of `cfg`.
    pub fn create(cfg: &TapConfig) -> Result<Tap, TapError> {
        cfg.validate()?;
        let (fd, name) = open_and_attach(cfg)?;
        Tap::finish(fd, name, cfg)
    }

    /// Creates (or attaches to) a TAP inside `ns`. Only the open and `TUNSETIFF` run in the
    /// namespace; the returned fd is usable from any thread.
    pub fn create_in(ns: &NetNs, cfg: &TapConfig) -> Result<Tap, TapError> {
        cfg.validate()?;
        let (fd, name) = ns.run(|| open_and_attach(cfg))??;
        Tap::finish(fd, name, cfg)
    }

    fn finish(fd: OwnedFd, name: String, cfg: &TapConfig) -> Result<Tap, TapError> {
        let tap = Tap {
            fd,
            name,
            vnet_hdr: cfg.vnet_hdr,
        };
        if cfg.vnet_hdr {
            tap.set_vnet_hdr_len(VirtioNetHdr::LEN)?;
            tap.set_vnet_le()?;
        }
        if cfg.offloads.0 != 0 {
            tap.set_offloads(cfg.offloads)?;
        }
        if cfg.nonblocking {
            tap.set_nonblocking(true)?;
        }
        if cfg.persist {
            tap.set_persist(true)?;
        }
        Ok(tap)
    }

    fn io_err(&self, op: &'static str) -> TapError {
        TapError::Io {
            op,
            name: self.name.clone(),
            source: io::Error::last_os_error(),
        }
    }

    /// The interface name the kernel gave the TAP.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether frames carry a [`VirtioNetHdr`].
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Sets the vnet header length (`TUNSETVNETHDRSZ`; 10, 12 or more).
    pub fn set_vnet_hdr_len(&self, len: usize) -> Result<(), TapError> {
        let v = libc::c_int::try_from(len)
            .map_err(|_| TapError::Invalid(format!("vnet header length {len}")))?;
        // SAFETY: TUNSETVNETHDRSZ reads a c_int through the pointer, which is live.
        if unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETVNETHDRSZ,
                &v as *const libc::c_int,
            )
        } < 0
        {
            return Err(self.io_err("TUNSETVNETHDRSZ"));
        }
        Ok(())
    }

    /// Makes the vnet header little-endian regardless of host order (`TUNSETVNETLE`).
    fn set_vnet_le(&self) -> Result<(), TapError> {
        let one: libc::c_int = 1;
        // SAFETY: TUNSETVNETLE reads a c_int through the pointer, which is live.
        if unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETVNETLE,
                &one as *const libc::c_int,
            )
        } < 0
        {
            return Err(self.io_err("TUNSETVNETLE"));
        }
        Ok(())
    }

    /// Tells the kernel which offloads the reader handles (`TUNSETOFFLOAD`).
    pub fn set_offloads(&self, offloads: TunOffloads) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                offloads.0 as libc::c_ulong,
            )
        } < 0
        {
            return Err(self.io_err("TUNSETOFFLOAD"));
        }
        Ok(())
    }

    /// Keeps the device after the last fd closes, or not (`TUNSETPERSIST`).
    pub fn set_persist(&self, on: bool) -> Result<(), TapError> {
        // SAFETY: TUNSETPERSIST takes its argument by value.
        if unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETPERSIST,
                libc::c_ulong::from(on),
            )
        } < 0
        {
            return Err(self.io_err("TUNSETPERSIST"));
        }
        Ok(())
    }

    /// Switches `O_NONBLOCK`.
    pub fn set_nonblocking(&self, on: bool) -> Result<(), TapError> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: F_GETFL on a valid fd.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if fl < 0 {
            return Err(self.io_err("fcntl(F_GETFL)"));
        }
        let new = if on {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        // SAFETY: F_SETFL on a valid fd with flags derived from F_GETFL.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
            return Err(self.io_err("fcntl(F_SETFL)"));
        }
        Ok(())
    }

    /// Reads one frame (with its vnet header, if enabled) scattered over `bufs`; returns
    /// its length. `WouldBlock` when non-blocking and empty.
    pub fn readv(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let cnt = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: IoSliceMut is ABI-compatible with iovec; the slices are live and
        // writable for the call.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), bufs.as_mut_ptr().cast(), cnt) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame (with its vnet header, if enabled) gathered from `bufs`.
    pub fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let cnt = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: IoSlice is ABI-compatible with iovec; the slices are live for the call.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), bufs.as_ptr().cast(), cnt) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Reads one frame into `buf`.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.readv(&mut [IoSliceMut::new(buf)])
    }

    /// Writes one frame from `buf`.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.writev(&[IoSlice::new(buf)])
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Tap> for OwnedFd {
    fn from(t: Tap) -> OwnedFd {
        t.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::testing::*;
    use crate::rtnl::{LinkKind, Rtnl};
    use std::time::{Duration, Instant};

    const ETH_P_ALL: u16 = 0x0003;
    const TEST_ETHERTYPE: u16 = 0x88b5; // IEEE 802 local experimental

    /// An AF_PACKET socket bound to one interface, opened inside `ns`.
    fn packet_socket(ns: &NetNs, ifindex: u32) -> OwnedFd {
        ns.run(move || {
            // SAFETY: plain socket(2); checked.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    i32::from(ETH_P_ALL.to_be()),
                )
            };
            assert!(raw >= 0, "{}", io::Error::last_os_error());
            // SAFETY: fresh fd.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: sockaddr_ll is plain data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: sll is a valid sockaddr_ll.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            fd
        })
        .unwrap()
    }

    fn test_frame(tag: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6]; // broadcast
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, tag]);
        f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
        f.extend(std::iter::repeat_n(tag, 60));
        f
    }

    fn recv_matching(fd: &OwnedFd, want: &[u8]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: buf is live and writable.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && &buf[..n as usize] == want {
                return true;
            }
            if n < 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        false
    }

    /// Waits for a link to disappear. Closing our fd releases the TAP only once no forked
    /// child (another test spawning `ip`) still holds a copy of it between fork and exec.
    fn wait_gone(r: &Rtnl, name: &str, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if r.find_link(name).unwrap().is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn config_is_checked() {
        let mut c = TapConfig::new("tap0");
        c.offloads = TunOffloads::XEN_DEFAULT;
        assert!(matches!(Tap::create(&c), Err(TapError::Invalid(_))));
        assert!(matches!(
            Tap::create(&TapConfig::new("0123456789abcdef")),
            Err(TapError::Invalid(_))
        ));
    }

    #[test]
    fn tap_with_vnet_hdr_in_a_namespace_carries_frames_both_ways() {
        let ns = scratch();
        let tap = Tap::create_in(&ns, &TapConfig::with_offloads("eth0")).unwrap();
        assert_eq!(tap.name(), "eth0");
        assert!(tap.has_vnet_hdr());
        let details = ip_in(&ns, &["-d", "-o", "link", "show", "eth0"]);
        assert!(
            details.contains("tun type tap pi off vnet_hdr on persist off"),
            "{details}"
        );
        let r = Rtnl::open_in(&ns).unwrap();
        let link = r.link_by_name("eth0").unwrap();
        assert_eq!(link.kind, Some(LinkKind::Tun));
        r.set_up("eth0").unwrap();
        let sock = packet_socket(&ns, link.index);
        let rx_before = r.link_by_name("eth0").unwrap().stats.unwrap().rx_packets;

        // netfront -> guest kernel: write header + frame; the namespace's stack receives it.
        let frame = test_frame(7);
        let hdr = VirtioNetHdr::plain().encode();
        let n = tap
            .writev(&[IoSlice::new(&hdr), IoSlice::new(&frame)])
            .unwrap();
        assert_eq!(n, hdr.len() + frame.len());
        assert!(
            recv_matching(&sock, &frame),
            "frame written to the TAP never arrived"
        );
        let rx_after = r.link_by_name("eth0").unwrap().stats.unwrap().rx_packets;
        assert!(rx_after > rx_before, "rx counter did not move");

        // guest kernel -> netfront: send on the interface, read header + frame from the fd.
        let out = test_frame(9);
        // SAFETY: out is live; the socket is bound to the interface.
        let sent = unsafe { libc::send(sock.as_raw_fd(), out.as_ptr().cast(), out.len(), 0) };
        assert_eq!(sent as usize, out.len(), "{}", io::Error::last_os_error());
        let mut h = [0u8; VirtioNetHdr::LEN];
        let mut body = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(3);
        let got = loop {
            match tap.readv(&mut [IoSliceMut::new(&mut h), IoSliceMut::new(&mut body)]) {
                Ok(n) => {
                    let len = n - VirtioNetHdr::LEN;
                    if body[..len] == out[..] {
                        break Some(len);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "nothing read from the TAP");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(got, Some(out.len()));
        let hdr = VirtioNetHdr::decode(&h).unwrap();
        assert_eq!(hdr.gso_type, GsoType::None);

        // Non-blocking: an empty queue is WouldBlock, not a hang.
        let mut scratch_buf = [0u8; 64];
        loop {
            match tap.read(&mut scratch_buf) {
                Ok(_) => continue, // drain anything else (e.g. IPv6 router solicitations)
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        drop(tap);
        assert!(
            wait_gone(&r, "eth0", Duration::from_secs(3)),
            "non-persistent TAP must vanish"
        );
    }

    #[test]
    fn persistent_and_multi_queue_taps() {
        let ns = scratch();
        let r = Rtnl::open_in(&ns).unwrap();
        let mut cfg = TapConfig::new("vif%d");
        cfg.persist = true;
        let tap = Tap::create_in(&ns, &cfg).unwrap();
        assert_eq!(tap.name(), "vif0");
        let details = ip_in(&ns, &["-d", "-o", "link", "show", "vif0"]);
        assert!(
            details.contains("tun type tap pi off vnet_hdr off persist on"),
            "{details}"
        );
        drop(tap);
        assert!(
            !wait_gone(&r, "vif0", Duration::from_millis(300)),
            "persistent TAP outlives its fd"
        );
        let again = Tap::create_in(&ns, &TapConfig::new("vif0")).unwrap();
        again.set_persist(false).unwrap();
        drop(again);
        assert!(wait_gone(&r, "vif0", Duration::from_secs(3)));

        let mut mq = TapConfig::with_offloads("mq0");
        mq.multi_queue = true;
        let q0 = Tap::create_in(&ns, &mq).unwrap();
        let q1 = Tap::create_in(&ns, &mq).unwrap();
        assert_eq!(q0.name(), q1.name());
        // Attaching without IFF_MULTI_QUEUE to a multi-queue device is refused.
        assert!(Tap::create_in(&ns, &TapConfig::new("mq0")).is_err());
        // Not visible in our own namespace.
        assert!(Rtnl::open().unwrap().find_link("mq0").unwrap().is_none());
    }
}
