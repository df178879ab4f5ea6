//! Classic libpcap capture files (the format `tcpdump -w` writes and `tcpdump -r` reads):
//! a 24-byte global header, then a 16-byte record header before each frame. Ethernet link
//! type, microsecond timestamps, snap length 65535 by default. Used by `domnet capture` and
//! by tests (smoltcp's `PcapWriter` middleware, ecosystem.md §B1).

use std::io::{self, Write};
use std::time::Duration;

/// Magic number of a microsecond-resolution pcap file, written little-endian (readers
/// detect the byte order from it).
pub const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
/// `LINKTYPE_ETHERNET` (tcpdump.org link-layer header types).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Default snap length: whole frames up to 64 KiB.
pub const DEFAULT_SNAPLEN: u32 = 65535;

/// Writes a pcap stream into any `Write`. Each record is two `write_all` calls and no
/// allocation; wrap the sink in a `BufWriter` for files.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header with the default snap length.
    pub fn new(out: W) -> io::Result<Self> {
        Self::with_snaplen(out, DEFAULT_SNAPLEN)
    }

    /// Writes the global header; frames longer than `snaplen` are cut to it (and the
    /// record keeps their original length). A `snaplen` of 0 means the default.
    pub fn with_snaplen(mut out: W, snaplen: u32) -> io::Result<Self> {
        let snaplen = if snaplen == 0 {
            DEFAULT_SNAPLEN
        } else {
            snaplen
        };
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&PCAP_MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes()); // version 2.4
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone (8..12) and sigfigs (12..16) stay 0.
        h[16..20].copy_from_slice(&snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, snaplen })
    }

    /// Appends one frame captured at `since_epoch` (wall-clock time since the Unix epoch;
    /// seconds wrap in 2106 as the format's 32-bit field does).
    pub fn write_frame(&mut self, since_epoch: Duration, frame: &[u8]) -> io::Result<()> {
        let incl = frame.len().min(self.snaplen as usize);
        let orig = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(since_epoch.as_secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&since_epoch.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&(incl as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(&frame[..incl])
    }

    /// Flushes the sink.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The sink.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The sink, writable (e.g. to drain a `Vec` sink after each record).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Returns the sink.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::{self, L2Header};
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;

    fn sample() -> Vec<u8> {
        let mut buf = [0u8; 128];
        let n = build::ipv4_udp(
            &mut buf,
            L2Header::new(MacAddr::BROADCAST, MacAddr([0, 0x16, 0x3e, 0, 0, 1])),
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(10, 0, 0, 255),
            5353,
            5353,
            b"hello",
        )
        .unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn layout() {
        let f = sample();
        let mut w = PcapWriter::with_snaplen(Vec::new(), 40).unwrap();
        w.write_frame(Duration::new(1_700_000_000, 123_456_789), &f)
            .unwrap();
        let b = w.into_inner();
        assert_eq!(&b[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 40);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 1);
        let r = &b[24..];
        assert_eq!(
            u32::from_le_bytes(r[0..4].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(r[8..12].try_into().unwrap()), 40);
        assert_eq!(
            u32::from_le_bytes(r[12..16].try_into().unwrap()) as usize,
            f.len()
        );
        assert_eq!(&r[16..], &f[..40]);
    }

    /// `tcpdump -r` must read what we write (skipped where tcpdump is not installed).
    #[test]
    fn tcpdump_reads_it() {
        let Ok(out) = std::process::Command::new("tcpdump")
            .arg("--version")
            .output()
        else {
            return;
        };
        if !out.status.success() {
            return;
        }
        let path = std::env::temp_dir().join(format!("vswitch-pcap-{}.pcap", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let mut w = PcapWriter::new(io::BufWriter::new(file)).unwrap();
        let f = sample();
        w.write_frame(Duration::from_secs(1), &f).unwrap();
        w.write_frame(Duration::from_secs(2), &f).unwrap();
        w.flush().unwrap();
        drop(w);
        let out = std::process::Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("10.0.0.5.5353 > 10.0.0.255.5353"), "{text}");
    }
}
