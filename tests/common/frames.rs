//! Crafted Ethernet frames and a way to send them from inside a namespace: what a
//! hostile guest (or a hostile neighbour on the uplink) can put on its wire.
//!
//! [`inject`] opens an `AF_PACKET`/`SOCK_RAW` socket on a helper thread that has
//! `setns`'d into the namespace, binds it to one interface and sends the frames
//! verbatim, so the kernel adds nothing and checks nothing beyond the Ethernet header
//! length. The test's own threads never change namespace.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A MAC address as 6 bytes.
pub type Mac = [u8; 6];

/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn mac(s: &str) -> Mac {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad MAC {s:?}")))
        .collect();
    v.try_into().unwrap_or_else(|_| panic!("bad MAC {s:?}"))
}

/// Formats a MAC as `domnet fdb show` prints it (lower-case, colon-separated).
pub fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The n-th of a family of locally administered unicast MACs `02:xx:n(4 bytes)`.
pub fn numbered_mac(family: u8, n: u32) -> Mac {
    let b = n.to_be_bytes();
    [0x02, family, b[0], b[1], b[2], b[3]]
}

/// An Ethernet header followed by `payload`.
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// RFC 1071 one's-complement sum, folded.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A complete Ethernet/IPv4/UDP frame with valid checksums.
pub fn udp4(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    data: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + data.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    let mut pseudo = Vec::with_capacity(12 + udp_len);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let c = checksum(&pseudo);
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());

    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&udp);
    ethernet(dst_mac, src_mac, 0x0800, &ip)
}

/// An Ethernet/ARP frame (`op` 1 = request, 2 = reply) for IPv4 over Ethernet.
pub fn arp(
    dst_mac: Mac,
    src_mac: Mac,
    op: u16,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender_ip.octets());
    a.extend_from_slice(&target_mac);
    a.extend_from_slice(&target_ip.octets());
    ethernet(dst_mac, src_mac, 0x0806, &a)
}

/// A frame of an experimental EtherType (IEEE 802 local experimental 0x88b5) padded to
/// the Ethernet minimum: something every switch forwards and no stack answers.
pub fn experimental(dst: Mac, src: Mac) -> Vec<u8> {
    ethernet(dst, src, 0x88b5, &[0u8; 46])
}

fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// An `AF_PACKET` raw socket bound to `ifname` in the calling thread's namespace.
fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let name = CString::new(ifname).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(os_err("socket(AF_PACKET)"));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: name is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(os_err(&format!("if_nametoindex({ifname})")));
    }
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid starting value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binding our socket to a properly initialised sockaddr_ll of its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(os_err("bind(AF_PACKET)"));
    }
    Ok(fd)
}

/// Sends `count` frames out of `ifname` in network namespace `netns`; frame `i` is
/// what `make(i, buf)` leaves in `buf`. A full qdisc (`ENOBUFS`) is waited out and
/// retried. Returns the number of frames the kernel accepted (`count` unless an error
/// other than back-pressure occurred, which is returned).
pub fn inject(
    netns: &str,
    ifname: &str,
    count: u64,
    make: impl FnMut(u64, &mut Vec<u8>) + Send,
) -> io::Result<u64> {
    inject_paced(netns, ifname, count, None, make)
}

/// [`inject`], pausing `pause.1` after every `pause.0` frames: a TAP has no
/// back-pressure (a full queue drops silently, counted in the sender's `tx_dropped`),
/// so a sender that should mostly reach the reader must not outrun it.
pub fn inject_paced(
    netns: &str,
    ifname: &str,
    count: u64,
    pause: Option<(u64, Duration)>,
    mut make: impl FnMut(u64, &mut Vec<u8>) + Send,
) -> io::Result<u64> {
    let path = format!("/run/netns/{netns}");
    std::thread::scope(|s| {
        s.spawn(move || -> io::Result<u64> {
            let ns = std::fs::File::open(&path)?;
            // SAFETY: setns on this helper thread only (CLONE_NEWNET may be changed
            // per thread); the thread ends when the frames are sent.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(os_err("setns"));
            }
            let fd = packet_socket(ifname)?;
            let mut buf = Vec::with_capacity(2048);
            for i in 0..count {
                if let Some((every, pause)) = pause {
                    if i > 0 && i % every.max(1) == 0 {
                        std::thread::sleep(pause);
                    }
                }
                buf.clear();
                make(i, &mut buf);
                let mut retries = 0;
                loop {
                    // SAFETY: sending from a live buffer of the given length.
                    let n =
                        unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
                    if n >= 0 {
                        break;
                    }
                    let e = io::Error::last_os_error();
                    let busy = matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN));
                    if !busy || retries > 10_000 {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("send of frame {i} ({} bytes): {e}", buf.len()),
                        ));
                    }
                    retries += 1;
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            Ok(count)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("injector thread panicked")))
    })
}

/// Sends the given frames (see [`inject`]).
pub fn inject_frames(netns: &str, ifname: &str, frames: &[Vec<u8>]) -> io::Result<u64> {
    inject(netns, ifname, frames.len() as u64, |i, buf| {
        buf.extend_from_slice(&frames[i as usize])
    })
}
