//! The host port: a TAP device in dom0 named after the bridge (`xenbr0`), carrying
//! dom0's own address — what Open vSwitch calls an internal port.
//!
//! Frames move with their virtio-net header (`IFF_VNET_HDR`), so TCP crosses as 64 KiB
//! GSO frames with partial checksums instead of being segmented and checksummed in
//! software.

use std::any::Any;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};

use netcfg::tap::{Tap, VirtioNetHdr};

use super::offload::{meta_from_vnet, vnet_from_meta};
use super::pool::{BUF_SIZE, HEADROOM};
use super::port::{DriverCounters, Pkt, Port, PortCtx};
use crate::counters::DropReason;
use crate::meta::FrameMeta;
use crate::wire::FrameInfo;

/// Counters of a TAP port driver.
#[derive(Debug, Default, Clone, Copy)]
struct TapCounters {
    rx_frames: u64,
    rx_gso_frames: u64,
    rx_bad_vnet_hdr: u64,
    rx_no_buffer: u64,
    rx_errors: u64,
    tx_frames: u64,
    tx_gso_frames: u64,
    tx_full: u64,
    tx_errors: u64,
    tx_unexpressible_offload: u64,
}

/// A TAP device as a switch port.
pub struct TapPort {
    name: String,
    tap: Tap,
    vnet: bool,
    c: TapCounters,
}

impl std::fmt::Debug for TapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPort").field("name", &self.name).finish()
    }
}

impl TapPort {
    /// Wraps an open, non-blocking TAP (with or without a vnet header).
    pub fn new(name: impl Into<String>, tap: Tap) -> TapPort {
        let vnet = tap.has_vnet_hdr();
        TapPort {
            name: name.into(),
            tap,
            vnet,
            c: TapCounters::default(),
        }
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn fds(&self) -> Vec<RawFd> {
        vec![self.tap.as_raw_fd()]
    }

    fn receive(&mut self, ctx: &mut PortCtx<'_>, out: &mut Vec<Pkt>, budget: usize) -> bool {
        let mut hdr = [0u8; VirtioNetHdr::LEN];
        for _ in 0..budget {
            let Some(buf) = ctx.pool.alloc() else {
                self.c.rx_no_buffer += 1;
                return true;
            };
            let data = ctx.pool.bytes_mut(buf, HEADROOM, BUF_SIZE - HEADROOM);
            let r = if self.vnet {
                let mut iov = [IoSliceMut::new(&mut hdr), IoSliceMut::new(data)];
                self.tap.readv(&mut iov)
            } else {
                let mut iov = [IoSliceMut::new(data)];
                self.tap.readv(&mut iov)
            };
            let n = match r {
                Ok(n) => n,
                Err(e) => {
                    ctx.pool.release(buf);
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        self.c.rx_errors += 1;
                    }
                    return false;
                }
            };
            let (len, meta) = if self.vnet {
                let Some(len) = n.checked_sub(VirtioNetHdr::LEN) else {
                    ctx.pool.release(buf);
                    self.c.rx_bad_vnet_hdr += 1;
                    continue;
                };
                match VirtioNetHdr::decode(&hdr) {
                    Ok(h) => (len, meta_from_vnet(&h)),
                    Err(_) => {
                        ctx.pool.release(buf);
                        self.c.rx_bad_vnet_hdr += 1;
                        continue;
                    }
                }
            } else {
                (n, FrameMeta::default())
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
        let frame = ctx.pool.bytes(pkt.buf, pkt.off, pkt.len);
        let r = if self.vnet {
            let Some(h) = vnet_from_meta(&pkt.meta, info) else {
                self.c.tx_unexpressible_offload += 1;
                return Err(DropReason::InvalidGso);
            };
            let hdr = h.encode();
            self.tap.writev(&[IoSlice::new(&hdr), IoSlice::new(frame)])
        } else {
            self.tap.writev(&[IoSlice::new(frame)])
        };
        match r {
            Ok(_) => {
                self.c.tx_frames += 1;
                if pkt.meta.gso.is_some() {
                    self.c.tx_gso_frames += 1;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.c.tx_full += 1;
                Err(DropReason::TxQueueFull)
            }
            Err(_) => {
                self.c.tx_errors += 1;
                Err(DropReason::TxError)
            }
        }
    }

    fn counters(&self) -> DriverCounters {
        let c = self.c;
        vec![
            ("rx_frames", c.rx_frames),
            ("rx_gso_frames", c.rx_gso_frames),
            ("rx_bad_vnet_hdr", c.rx_bad_vnet_hdr),
            ("rx_no_buffer", c.rx_no_buffer),
            ("rx_errors", c.rx_errors),
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
