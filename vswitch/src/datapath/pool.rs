//! Packet buffers in dom0's own memory.
//!
//! Every frame the switch holds lives in a buffer carved out of dom0's guest memory, so
//! a grant copy can name it as a plain dom0 frame (`DOMID_SELF`, no grant) and the
//! kernel can `readv`/`writev` it directly. Buffers are fixed-size (17 frames: room for
//! a 64 KiB GSO frame plus headroom), preallocated, and recycled through a free list:
//! no allocation per packet. A buffer may be shared read-only by several pending
//! transmissions (flooding, rx backlogs); it goes back to the free list when the last
//! holder releases it.
//!
//! Dom0 never grants these frames to anyone, so no other party writes them; that is
//! what makes handing out slices sound.

#![allow(unsafe_code)]

use std::sync::Arc;

use hypervisor::memory::{Gfn, GuestMemory, PAGE_SIZE};

/// Frames per buffer: 65535-byte frames plus headroom for L2 header growth.
pub const BUF_FRAMES: u64 = 17;
/// Bytes per buffer.
pub const BUF_SIZE: usize = BUF_FRAMES as usize * PAGE_SIZE;
/// Headroom before a received frame, so stages may prepend (e.g. a VLAN tag).
pub const HEADROOM: usize = 64;

/// A buffer handle (index into the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufId(u32);

/// The pool.
pub struct BufferPool {
    mem: Arc<GuestMemory>,
    base_gfn: Gfn,
    base: *mut u8,
    refs: Vec<u16>,
    free: Vec<u32>,
    exhausted: u64,
}

// SAFETY: the pool is owned by one datapath thread at a time; the raw pointer refers to
// dom0's private frames kept alive by `mem`.
unsafe impl Send for BufferPool {}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("buffers", &self.refs.len())
            .field("free", &self.free.len())
            .finish()
    }
}

/// Errors setting up a pool.
#[derive(Debug, thiserror::Error)]
#[error("dom0 memory cannot hold {wanted} buffers from frame {base}: {source}")]
pub struct PoolError {
    wanted: u32,
    base: Gfn,
    source: hypervisor::memory::MemError,
}

impl BufferPool {
    /// A pool of `count` buffers in dom0 frames `base_gfn ..`. The frames must be
    /// reserved for this pool alone (dom0 never grants them).
    pub fn new(mem: Arc<GuestMemory>, base_gfn: Gfn, count: u32) -> Result<BufferPool, PoolError> {
        let frames = u64::from(count) * BUF_FRAMES;
        // SAFETY: the caller reserves frames base_gfn..base_gfn+frames of dom0 memory for
        // this pool; nobody else reads or writes them while the pool (and `mem`) lives.
        let base = unsafe { mem.private_frames(base_gfn, frames) }.map_err(|source| PoolError {
            wanted: count,
            base: base_gfn,
            source,
        })?;
        Ok(BufferPool {
            mem,
            base_gfn,
            base,
            refs: vec![0; count as usize],
            free: (0..count).rev().collect(),
            exhausted: 0,
        })
    }

    /// Takes a free buffer (reference count 1), or `None` when all are in use.
    #[inline]
    pub fn alloc(&mut self) -> Option<BufId> {
        match self.free.pop() {
            Some(i) => {
                self.refs[i as usize] = 1;
                Some(BufId(i))
            }
            None => {
                self.exhausted += 1;
                None
            }
        }
    }

    /// Adds a holder.
    #[inline]
    pub fn retain(&mut self, id: BufId) {
        let r = &mut self.refs[id.0 as usize];
        *r = r.saturating_add(1);
    }

    /// Drops a holder; the buffer is free again when the last one is gone.
    #[inline]
    pub fn release(&mut self, id: BufId) {
        let r = &mut self.refs[id.0 as usize];
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 {
            self.free.push(id.0);
        }
    }

    /// Holders of a buffer (a stage may write in place only when it is the only one).
    #[inline]
    pub fn holders(&self, id: BufId) -> u16 {
        self.refs[id.0 as usize]
    }

    /// Buffers currently free.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Buffers in the pool.
    pub fn capacity(&self) -> usize {
        self.refs.len()
    }

    /// How often an allocation found the pool empty.
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }

    /// Raw pointer to byte `off` of buffer `id` (for iovecs handed to the kernel).
    #[inline]
    pub fn ptr(&self, id: BufId, off: usize) -> *mut u8 {
        debug_assert!(off <= BUF_SIZE);
        // SAFETY: id < count (ids only come from this pool) and off ≤ BUF_SIZE, so the
        // result stays inside the reserved region.
        unsafe { self.base.add(id.0 as usize * BUF_SIZE + off.min(BUF_SIZE)) }
    }

    /// The bytes `off..off + len` of a buffer.
    #[inline]
    pub fn bytes(&self, id: BufId, off: usize, len: usize) -> &[u8] {
        let off = off.min(BUF_SIZE);
        let len = len.min(BUF_SIZE - off);
        // SAFETY: in bounds as computed above; the region is private to this pool and
        // only mutated through `bytes_mut`, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr(id, off), len) }
    }

    /// The bytes `off..off + len` of a buffer, writable.
    #[inline]
    pub fn bytes_mut(&mut self, id: BufId, off: usize, len: usize) -> &mut [u8] {
        let off = off.min(BUF_SIZE);
        let len = len.min(BUF_SIZE - off);
        // SAFETY: in bounds; `&mut self` guarantees no other slice of the pool is live.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(id, off), len) }
    }

    /// Copies `len` bytes between two buffers (or within one, non-overlapping).
    #[inline]
    pub fn copy(&mut self, src: BufId, src_off: usize, dst: BufId, dst_off: usize, len: usize) {
        let len = len
            .min(BUF_SIZE - src_off.min(BUF_SIZE))
            .min(BUF_SIZE - dst_off.min(BUF_SIZE));
        // SAFETY: both ranges lie inside the pool (clamped above); `&mut self` means no
        // slice of the pool is live; distinct buffers never overlap, and within one
        // buffer `copy` (memmove) is used.
        unsafe { std::ptr::copy(self.ptr(src, src_off), self.ptr(dst, dst_off), len) };
    }

    /// The dom0 frame and in-page offset holding byte `off` of a buffer (a grant-copy
    /// endpoint naming dom0's own frame).
    #[inline]
    pub fn frame_of(&self, id: BufId, off: usize) -> (Gfn, usize) {
        let abs = id.0 as usize * BUF_SIZE + off;
        (self.base_gfn + (abs / PAGE_SIZE) as u64, abs % PAGE_SIZE)
    }

    /// Dom0's memory.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.mem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_share_release() {
        let mem = Arc::new(GuestMemory::new("pool", 64).unwrap());
        let mut p = BufferPool::new(mem, 2, 3).unwrap();
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        let c = p.alloc().unwrap();
        assert!(p.alloc().is_none());
        assert_eq!(p.exhausted(), 1);
        p.bytes_mut(b, 10, 4).copy_from_slice(b"abcd");
        assert_eq!(p.bytes(b, 10, 4), b"abcd");
        let (gfn, off) = p.frame_of(b, 10);
        assert_eq!((gfn, off), (2 + BUF_FRAMES, 10));
        let mut back = [0u8; 4];
        p.memory().read(gfn, off, &mut back).unwrap();
        assert_eq!(&back, b"abcd");
        p.retain(a);
        p.release(a);
        assert_eq!(p.free_count(), 0);
        p.release(a);
        p.release(c);
        assert_eq!(p.free_count(), 2);
        assert!(BufferPool::new(Arc::new(GuestMemory::new("p2", 16).unwrap()), 0, 1).is_err());
    }
}
