//! What a datapath port is: something with file descriptors to poll that yields frames
//! (`receive`) and takes frames (`transmit`), in batches.
//!
//! Port drivers: the host port (a TAP in dom0), the uplink (AF_PACKET on a NIC), vifs
//! (netback, in the `vif` crate) and in-daemon netfronts (also `vif`, on the frontend
//! worker, which only shuttle between a TAP and the rings and yield no frames here).

use std::any::Any;
use std::os::fd::RawFd;
use std::sync::Arc;

use hypervisor::hv::Hypervisor;

use super::pool::{BufId, BufferPool};
use crate::counters::DropReason;
use crate::meta::FrameMeta;
use crate::time::Timestamp;
use crate::wire::FrameInfo;

/// A frame held by the datapath: bytes `off..off + len` of a pool buffer, plus the
/// offload state that travels with it (GSO, partial checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pkt {
    /// The buffer.
    pub buf: BufId,
    /// Where the Ethernet header starts.
    pub off: usize,
    /// Frame length.
    pub len: usize,
    /// Offload metadata.
    pub meta: FrameMeta,
}

/// What a port may use while it runs: the buffer pool, the time, the hypervisor.
pub struct PortCtx<'a> {
    /// Dom0's packet buffers.
    pub pool: &'a mut BufferPool,
    /// The current time (one reading per loop round).
    pub now: Timestamp,
    /// Domains, grants and event channels.
    pub hv: &'a Arc<Hypervisor>,
    /// In `transmit`: the bridge port the frame entered the bridge on.
    pub ingress: Option<crate::port::PortId>,
    /// In `transmit`: the frame goes to this port only and nobody else holds its
    /// buffer, so the port may rewrite it in place and keep it (retain) instead of
    /// copying.
    pub exclusive: bool,
}

impl<'a> PortCtx<'a> {
    /// A context for calls other than `transmit`.
    pub fn new(pool: &'a mut BufferPool, now: Timestamp, hv: &'a Arc<Hypervisor>) -> PortCtx<'a> {
        PortCtx {
            pool,
            now,
            hv,
            ingress: None,
            exclusive: false,
        }
    }
}

/// Named counters of a port driver (ring errors, syscalls failing, backlog drops…).
pub type DriverCounters = Vec<(&'static str, u64)>;

/// A datapath port driver.
pub trait Port: Send {
    /// The port's name (`xenbr0`, `vif3.0`, `eth0`, …).
    fn name(&self) -> &str;

    /// File descriptors whose readability means "call `receive`" (re-read after
    /// [`Port::take_fds_changed`] reports a change, e.g. when a vif gets its rings).
    fn fds(&self) -> Vec<RawFd>;

    /// True once after the set of fds changed.
    fn take_fds_changed(&mut self) -> bool {
        false
    }

    /// Pulls up to `budget` frames arriving from outside the switch into `out`.
    /// Returns true when more are ready (the worker polls again soon).
    fn receive(&mut self, ctx: &mut PortCtx<'_>, out: &mut Vec<Pkt>, budget: usize) -> bool;

    /// The frames of the last `receive` have been forwarded: release what they hold
    /// (tx responses, buffers). Buffers are released by the worker, not here.
    fn complete_rx(&mut self, _ctx: &mut PortCtx<'_>) {}

    /// Sends a frame out of this port, now or later. `info` is the frame's one-pass
    /// parse (for offload offsets). A port that keeps the buffer for later must
    /// `ctx.pool.retain` it and release it when done.
    fn transmit(
        &mut self,
        ctx: &mut PortCtx<'_>,
        pkt: &Pkt,
        info: &FrameInfo,
    ) -> Result<(), DropReason>;

    /// End of a round: push responses, notify peers, flush queued output.
    fn flush(&mut self, _ctx: &mut PortCtx<'_>) {}

    /// When the port next needs [`Port::on_timer`].
    fn next_timer(&self) -> Option<Timestamp> {
        None
    }

    /// Timer work (backlog expiry, rate-limit refill, stall detection).
    fn on_timer(&mut self, _ctx: &mut PortCtx<'_>) {}

    /// Link state (carrier).
    fn carrier(&self) -> bool {
        true
    }

    /// Driver-level counters.
    fn counters(&self) -> DriverCounters {
        Vec::new()
    }

    /// Releases everything (buffers it retained) before removal.
    fn close(&mut self, _ctx: &mut PortCtx<'_>) {}

    /// For drivers that need to be reached by type (e.g. to connect a vif's rings).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Releases a buffer held in a queue: helper for drivers with backlogs.
pub fn release_all(pool: &mut BufferPool, bufs: impl IntoIterator<Item = BufId>) {
    for b in bufs {
        pool.release(b);
    }
}
