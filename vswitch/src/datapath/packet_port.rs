//! The uplink: an AF_PACKET socket on a NIC (promiscuous), with `PACKET_VNET_HDR` so
//! GSO and partial checksums survive in both directions (without it a userspace switch
//! cannot even carry TCP from veths with offloads on — anchors.md observation 5).
//!
//! The socket ignores its own outgoing frames (`PACKET_IGNORE_OUTGOING`). Keeping the
//! host stack from also processing frames that arrive on the NIC is the control
//! plane's job (a netdev ingress filter), since AF_PACKET only taps.

use std::any::Any;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use netcfg::tap::VirtioNetHdr;

use super::offload::{meta_from_vnet, vnet_from_meta};
use super::pool::{BUF_SIZE, HEADROOM};
use super::port::{DriverCounters, Pkt, Port, PortCtx};
use crate::counters::DropReason;
use crate::wire::FrameInfo;

const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// AF_PACKET's vnet header is the plain `virtio_net_hdr` (10 bytes, no num_buffers).
const VNET_LEN: usize = 10;

#[derive(Debug, Default, Clone, Copy)]
struct PacketCounters {
    rx_frames: u64,
    rx_gso_frames: u64,
    rx_truncated: u64,
    rx_bad_vnet_hdr: u64,
    rx_no_buffer: u64,
    rx_errors: u64,
    tx_frames: u64,
    tx_gso_frames: u64,
    tx_full: u64,
    tx_errors: u64,
    tx_unexpressible_offload: u64,
}

/// An AF_PACKET socket bound to one interface.
pub struct PacketPort {
    name: String,
    fd: OwnedFd,
    c: PacketCounters,
    /// Frames the kernel dropped on our socket (`PACKET_STATISTICS` resets on read).
    socket_drops: std::cell::Cell<u64>,
}

impl std::fmt::Debug for PacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketPort")
            .field("name", &self.name)
            .finish()
    }
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
    what: &str,
) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(rc, what)
}

impl PacketPort {
    /// Opens a promiscuous AF_PACKET socket on interface `ifindex` (in the calling
    /// thread's network namespace) and names the port `name`.
    pub fn open(name: impl Into<String>, ifindex: u32) -> io::Result<PacketPort> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) with valid constants; the fd is checked and owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        check(raw, "socket(AF_PACKET)")?;
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let f = fd.as_raw_fd();
        setsockopt_int(
            f,
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            1,
            "PACKET_VNET_HDR",
        )?;
        setsockopt_int(
            f,
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            1,
            "PACKET_IGNORE_OUTGOING",
        )?;
        let _ = setsockopt_int(
            f,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            8 << 20,
            "SO_RCVBUFFORCE",
        );
        let _ = setsockopt_int(
            f,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            8 << 20,
            "SO_SNDBUFFORCE",
        );
        // SAFETY: zeroed sockaddr_ll is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: bind with a live sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                f,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(rc, "bind(AF_PACKET)")?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        // SAFETY: setsockopt with a live packet_mreq of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                f,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        check(rc, "PACKET_ADD_MEMBERSHIP promisc")?;
        Ok(PacketPort {
            name: name.into(),
            fd,
            c: PacketCounters::default(),
            socket_drops: std::cell::Cell::new(0),
        })
    }

    fn socket_drops(&self) -> u64 {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: getsockopt into a live tpacket_stats with its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            self.socket_drops
                .set(self.socket_drops.get() + u64::from(st.tp_drops));
        }
        self.socket_drops.get()
    }
}

impl Port for PacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn fds(&self) -> Vec<RawFd> {
        vec![self.fd.as_raw_fd()]
    }

    fn receive(&mut self, ctx: &mut PortCtx<'_>, out: &mut Vec<Pkt>, budget: usize) -> bool {
        let mut hdr = [0u8; VNET_LEN];
        for _ in 0..budget {
            let Some(buf) = ctx.pool.alloc() else {
                self.c.rx_no_buffer += 1;
                return true;
            };
            let data = ctx.pool.bytes_mut(buf, HEADROOM, BUF_SIZE - HEADROOM);
            let mut iov = [
                libc::iovec {
                    iov_base: hdr.as_mut_ptr().cast(),
                    iov_len: VNET_LEN,
                },
                libc::iovec {
                    iov_base: data.as_mut_ptr().cast(),
                    iov_len: data.len(),
                },
            ];
            // SAFETY: zeroed msghdr is valid; we fill in the iovec array which outlives
            // the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = 2;
            // SAFETY: recvmsg on our socket with a valid msghdr.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
            if n < 0 {
                ctx.pool.release(buf);
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.c.rx_errors += 1;
                }
                return false;
            }
            let n = n as usize;
            if msg.msg_flags & libc::MSG_TRUNC != 0 {
                ctx.pool.release(buf);
                self.c.rx_truncated += 1;
                continue;
            }
            let Some(len) = n.checked_sub(VNET_LEN) else {
                ctx.pool.release(buf);
                self.c.rx_bad_vnet_hdr += 1;
                continue;
            };
            let mut full = [0u8; VirtioNetHdr::LEN];
            full[..VNET_LEN].copy_from_slice(&hdr);
            let meta = match VirtioNetHdr::decode(&full) {
                Ok(h) => meta_from_vnet(&h),
                Err(_) => {
                    ctx.pool.release(buf);
                    self.c.rx_bad_vnet_hdr += 1;
                    continue;
                }
            };
            self.c.rx_frames += 1;
            if meta.gso.is_some() {
                self.c.rx_gso_frames += 1;
            }
            out.push(Pkt {
                buf,
                off: HEADROOM,
                len,
                meta,
            });
        }
        true
    }

    fn transmit(
        &mut self,
        ctx: &mut PortCtx<'_>,
        pkt: &Pkt,
        info: &FrameInfo,
    ) -> Result<(), DropReason> {
        let Some(h) = vnet_from_meta(&pkt.meta, info) else {
            self.c.tx_unexpressible_offload += 1;
            return Err(DropReason::InvalidGso);
        };
        let hdr = h.encode();
        let frame = ctx.pool.bytes(pkt.buf, pkt.off, pkt.len);
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: VNET_LEN,
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: zeroed msghdr is valid; the iovecs point at live, read-only buffers
        // (sendmsg never writes through them).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = 2;
        // SAFETY: sendmsg on our socket with a valid msghdr.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) {
                self.c.tx_full += 1;
                return Err(DropReason::TxQueueFull);
            }
            self.c.tx_errors += 1;
            return Err(DropReason::TxError);
        }
        self.c.tx_frames += 1;
        if pkt.meta.gso.is_some() {
            self.c.tx_gso_frames += 1;
        }
        Ok(())
    }

    fn counters(&self) -> DriverCounters {
        let c = self.c;
        vec![
            ("rx_frames", c.rx_frames),
            ("rx_gso_frames", c.rx_gso_frames),
            ("rx_truncated", c.rx_truncated),
            ("rx_bad_vnet_hdr", c.rx_bad_vnet_hdr),
            ("rx_no_buffer", c.rx_no_buffer),
            ("rx_errors", c.rx_errors),
            ("socket_drops", self.socket_drops()),
            ("tx_frames", c.tx_frames),
            ("tx_gso_frames", c.tx_gso_frames),
            ("tx_full", c.tx_full),
            ("tx_errors", c.tx_errors),
            ("tx_unexpressible_offload", c.tx_unexpressible_offload),
        ]
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
