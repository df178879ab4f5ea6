//! Guest memory: a domain's pseudo-physical frames, backed by one sealed memfd.
//!
//! Every domain owns a memfd of `frames × 4096` bytes, addressed by guest frame number
//! (GFN). The daemon maps it once; an external frontend process receives the same fd
//! over SCM_RIGHTS and maps it too, so grant references name real shared pages.
//!
//! A guest may change any byte of its memory at any moment, so this module never hands
//! out a Rust reference into it: every access is bounds-checked and goes through
//! volatile or atomic operations on raw pointers (the rust-vmm `VolatileSlice` rule).
//! The fd is sealed against shrinking, so no peer can truncate it and make our mapping
//! SIGBUS (robustness.md a12).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// Xen's page size: every frame, ring and grant is 4096 bytes whatever the host uses.
pub const PAGE_SIZE: usize = 4096;

/// A guest frame number: the index of a 4096-byte frame in a domain's memory.
pub type Gfn = u64;

/// Why a guest-memory access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// The frame number is not inside this domain's memory.
    #[error("frame {gfn:#x} is outside guest memory ({frames} frames)")]
    FrameOutOfRange {
        /// The frame asked for.
        gfn: Gfn,
        /// How many frames the domain has.
        frames: u64,
    },
    /// `offset + len` crosses the end of the 4096-byte frame.
    #[error("access at offset {offset} of length {len} crosses the page boundary")]
    CrossesPage {
        /// Offset inside the frame.
        offset: usize,
        /// Length of the access.
        len: usize,
    },
    /// An atomic access at an address not aligned to its size.
    #[error("unaligned atomic access at offset {offset}")]
    Unaligned {
        /// Offset inside the frame.
        offset: usize,
    },
}

/// Errors creating or adopting a guest memory mapping.
#[derive(Debug, thiserror::Error)]
pub enum MemSetupError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// The operation that failed.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The fd offered as guest memory is unusable.
    #[error("invalid guest memory fd: {0}")]
    Invalid(String),
}

fn os(what: &'static str) -> MemSetupError {
    MemSetupError::Os {
        what,
        source: io::Error::last_os_error(),
    }
}

/// One domain's memory, mapped shared into this process.
pub struct GuestMemory {
    fd: OwnedFd,
    base: NonNull<u8>,
    frames: u64,
}

// SAFETY: the mapping is plain shared memory that stays valid for the lifetime of the
// struct; all access goes through volatile/atomic raw-pointer operations, which are sound
// from any thread (concurrent writers are expected — that is the point of guest memory).
unsafe impl Send for GuestMemory {}
// SAFETY: see `Send`; no method hands out references into the mapping.
unsafe impl Sync for GuestMemory {}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory")
            .field("fd", &self.fd.as_raw_fd())
            .field("frames", &self.frames)
            .finish()
    }
}

impl GuestMemory {
    /// Creates `frames` zeroed frames in a new memfd named `name`, seals its size and maps it.
    pub fn new(name: &str, frames: u64) -> Result<GuestMemory, MemSetupError> {
        if frames == 0 {
            return Err(MemSetupError::Invalid(
                "guest memory needs at least one frame".into(),
            ));
        }
        let cname = std::ffi::CString::new(name.replace('\0', "_"))
            .map_err(|e| MemSetupError::Invalid(e.to_string()))?;
        // SAFETY: cname is a valid NUL-terminated string; flags are valid memfd flags.
        let raw = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(os("memfd_create"));
        }
        // SAFETY: memfd_create returned a fresh fd that we now own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = frames
            .checked_mul(PAGE_SIZE as u64)
            .ok_or_else(|| MemSetupError::Invalid("guest memory size overflows".into()))?;
        let file = File::from(fd);
        file.set_len(len).map_err(|source| MemSetupError::Os {
            what: "ftruncate guest memory",
            source,
        })?;
        let fd = OwnedFd::from(file);
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on an fd we own with a valid command and argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(os("sealing guest memory"));
        }
        Self::map(fd, frames)
    }

    /// Adopts guest memory received from another process (the external-frontend path).
    ///
    /// The fd must be a memfd sealed against shrinking, so the sender cannot truncate
    /// it under our mapping; its size must be a whole number of frames.
    pub fn from_fd(fd: OwnedFd) -> Result<GuestMemory, MemSetupError> {
        // SAFETY: fcntl F_GET_SEALS on a valid fd.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(MemSetupError::Invalid("not a sealable memfd".into()));
        }
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(MemSetupError::Invalid(
                "memfd is not sealed against shrinking".into(),
            ));
        }
        let file = File::from(fd);
        let len = file
            .metadata()
            .map_err(|source| MemSetupError::Os {
                what: "fstat guest memory",
                source,
            })?
            .len();
        if len == 0 || len % PAGE_SIZE as u64 != 0 {
            return Err(MemSetupError::Invalid(format!(
                "size {len} is not a positive multiple of {PAGE_SIZE}"
            )));
        }
        Self::map(OwnedFd::from(file), len / PAGE_SIZE as u64)
    }

    fn map(fd: OwnedFd, frames: u64) -> Result<GuestMemory, MemSetupError> {
        let len = usize::try_from(frames * PAGE_SIZE as u64)
            .map_err(|_| MemSetupError::Invalid("guest memory too large".into()))?;
        // SAFETY: mapping a shared, readable/writable view of a file we hold open; the
        // kernel picks the address. The result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os("mmap guest memory"));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| os("mmap returned null"))?;
        Ok(GuestMemory { fd, base, frames })
    }

    /// The memfd, to pass to another process (SCM_RIGHTS) that will map the same frames.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Number of 4096-byte frames.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bounds check: returns a pointer to `offset` in frame `gfn` valid for `len` bytes.
    #[inline]
    fn ptr(&self, gfn: Gfn, offset: usize, len: usize) -> Result<*mut u8, MemError> {
        if gfn >= self.frames {
            return Err(MemError::FrameOutOfRange {
                gfn,
                frames: self.frames,
            });
        }
        if offset > PAGE_SIZE || len > PAGE_SIZE - offset {
            return Err(MemError::CrossesPage { offset, len });
        }
        // gfn < frames, so gfn * PAGE_SIZE + offset + len ≤ mapping length (no overflow:
        // the mapping length itself fitted in usize when we mapped it).
        let at = gfn as usize * PAGE_SIZE + offset;
        // SAFETY: `at` is inside the mapping by the checks above.
        Ok(unsafe { self.base.as_ptr().add(at) })
    }

    /// A raw pointer to `frames` consecutive frames starting at `gfn`, for memory this
    /// process owns outright (dom0's private buffer pool, which is never granted) and
    /// hands to the kernel (`readv`/`writev`) or slices itself.
    ///
    /// # Safety
    /// The caller must guarantee that no other party (guest, other process, other
    /// thread) accesses those frames while it uses the pointer, and must not use it
    /// past the lifetime of `self`.
    pub unsafe fn private_frames(&self, gfn: Gfn, frames: u64) -> Result<*mut u8, MemError> {
        let end = gfn.checked_add(frames).ok_or(MemError::FrameOutOfRange {
            gfn,
            frames: self.frames,
        })?;
        if frames == 0 || end > self.frames {
            return Err(MemError::FrameOutOfRange {
                gfn: end.saturating_sub(1),
                frames: self.frames,
            });
        }
        self.ptr(gfn, 0, 0)
    }

    /// A bounds-checked raw pointer to `len` bytes at `offset` of frame `gfn`, for handing
    /// guest pages to the kernel (`readv`/`writev` iovecs) without ever forming a Rust
    /// reference into memory a peer may write. The pointer is valid while `self` lives;
    /// whoever dereferences it must treat the bytes as volatile (a peer may change them).
    pub fn raw_ptr(&self, gfn: Gfn, offset: usize, len: usize) -> Result<*mut u8, MemError> {
        self.ptr(gfn, offset, len)
    }

    /// Copies `buf.len()` bytes out of frame `gfn` starting at `offset` (volatile reads).
    #[inline]
    pub fn read(&self, gfn: Gfn, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
        let src = self.ptr(gfn, offset, buf.len())?;
        // SAFETY: src is valid for buf.len() bytes (checked); buf is our own memory.
        unsafe { volatile_copy(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into frame `gfn` at `offset` (volatile writes).
    #[inline]
    pub fn write(&self, gfn: Gfn, offset: usize, data: &[u8]) -> Result<(), MemError> {
        let dst = self.ptr(gfn, offset, data.len())?;
        // SAFETY: dst is valid for data.len() bytes (checked); data is our own memory.
        unsafe { volatile_copy(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Fills `len` bytes of frame `gfn` at `offset` with zeroes.
    pub fn zero(&self, gfn: Gfn, offset: usize, len: usize) -> Result<(), MemError> {
        let dst = self.ptr(gfn, offset, len)?;
        for i in 0..len {
            // SAFETY: dst..dst+len is inside the mapping (checked above).
            unsafe { std::ptr::write_volatile(dst.add(i), 0) };
        }
        Ok(())
    }

    /// Copies between two guest memories (or within one) without a bounce buffer: the
    /// single data move of a grant-to-grant copy.
    #[inline]
    pub fn copy_between(
        src: &GuestMemory,
        src_gfn: Gfn,
        src_off: usize,
        dst: &GuestMemory,
        dst_gfn: Gfn,
        dst_off: usize,
        len: usize,
    ) -> Result<(), MemError> {
        let s = src.ptr(src_gfn, src_off, len)?;
        let d = dst.ptr(dst_gfn, dst_off, len)?;
        // SAFETY: both ranges are inside their mappings (checked). They may overlap only
        // if a guest granted the same frame twice; volatile_copy tolerates that (the
        // result is then unspecified bytes, never undefined behaviour in our process).
        unsafe { volatile_copy(s, d, len) };
        Ok(())
    }

    /// Atomically loads a little-endian u32 at `offset` of frame `gfn` (must be 4-aligned).
    #[inline]
    pub fn load_u32(&self, gfn: Gfn, offset: usize, order: Ordering) -> Result<u32, MemError> {
        Ok(self.atomic_u32(gfn, offset)?.load(order))
    }

    /// Atomically stores a u32 at `offset` of frame `gfn` (must be 4-aligned).
    #[inline]
    pub fn store_u32(
        &self,
        gfn: Gfn,
        offset: usize,
        value: u32,
        order: Ordering,
    ) -> Result<(), MemError> {
        self.atomic_u32(gfn, offset)?.store(value, order);
        Ok(())
    }

    /// Atomically loads a u16 at `offset` of frame `gfn` (must be 2-aligned).
    #[inline]
    pub fn load_u16(&self, gfn: Gfn, offset: usize, order: Ordering) -> Result<u16, MemError> {
        Ok(self.atomic_u16(gfn, offset)?.load(order))
    }

    /// Atomically stores a u16 at `offset` of frame `gfn` (must be 2-aligned).
    #[inline]
    pub fn store_u16(
        &self,
        gfn: Gfn,
        offset: usize,
        value: u16,
        order: Ordering,
    ) -> Result<(), MemError> {
        self.atomic_u16(gfn, offset)?.store(value, order);
        Ok(())
    }

    /// Compare-and-swap of a u16 (grant-entry flags are updated this way by both sides).
    /// Returns the value found: equal to `current` on success.
    #[inline]
    pub fn cas_u16(
        &self,
        gfn: Gfn,
        offset: usize,
        current: u16,
        new: u16,
    ) -> Result<u16, MemError> {
        let a = self.atomic_u16(gfn, offset)?;
        Ok(
            match a.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(v) | Err(v) => v,
            },
        )
    }

    // Atomics are the one kind of reference we form into shared memory: they are built
    // for concurrent mutation, live only inside these accessors and never escape.
    #[inline]
    fn atomic_u32(&self, gfn: Gfn, offset: usize) -> Result<&AtomicU32, MemError> {
        if offset % 4 != 0 {
            return Err(MemError::Unaligned { offset });
        }
        let p = self.ptr(gfn, offset, 4)?;
        // SAFETY: p is 4-aligned (page-aligned base + 4-aligned offset), valid for 4 bytes
        // for the lifetime of &self, and only ever accessed atomically or volatilely.
        Ok(unsafe { AtomicU32::from_ptr(p.cast::<u32>()) })
    }

    #[inline]
    fn atomic_u16(&self, gfn: Gfn, offset: usize) -> Result<&AtomicU16, MemError> {
        if offset % 2 != 0 {
            return Err(MemError::Unaligned { offset });
        }
        let p = self.ptr(gfn, offset, 2)?;
        // SAFETY: as in atomic_u32, for a 2-aligned 2-byte location.
        Ok(unsafe { AtomicU16::from_ptr(p.cast::<u16>()) })
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        let len = self.frames as usize * PAGE_SIZE;
        // SAFETY: unmapping exactly the region mapped in `map`; no references into it
        // exist (the API never hands any out).
        unsafe { libc::munmap(self.base.as_ptr().cast(), len) };
    }
}

/// Copies `len` bytes with volatile accesses, 8 bytes at a time where both sides allow.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes.
#[inline]
unsafe fn volatile_copy(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = 0;
    if (src as usize) % 8 == (dst as usize) % 8 {
        // Align to 8, then move words; guest pages are 4096-aligned so most copies
        // of whole slots take this path.
        while i < len && (src as usize + i) % 8 != 0 {
            std::ptr::write_volatile(dst.add(i), std::ptr::read_volatile(src.add(i)));
            i += 1;
        }
        while i + 32 <= len {
            let s = src.add(i).cast::<u64>();
            let d = dst.add(i).cast::<u64>();
            let a = std::ptr::read_volatile(s);
            let b = std::ptr::read_volatile(s.add(1));
            let c = std::ptr::read_volatile(s.add(2));
            let e = std::ptr::read_volatile(s.add(3));
            std::ptr::write_volatile(d, a);
            std::ptr::write_volatile(d.add(1), b);
            std::ptr::write_volatile(d.add(2), c);
            std::ptr::write_volatile(d.add(3), e);
            i += 32;
        }
        while i + 8 <= len {
            let v = std::ptr::read_volatile(src.add(i).cast::<u64>());
            std::ptr::write_volatile(dst.add(i).cast::<u64>(), v);
            i += 8;
        }
    } else {
        while i + 8 <= len {
            let v = std::ptr::read_volatile(src.add(i).cast::<[u8; 8]>());
            std::ptr::write_volatile(dst.add(i).cast::<[u8; 8]>(), v);
            i += 8;
        }
    }
    while i < len {
        std::ptr::write_volatile(dst.add(i), std::ptr::read_volatile(src.add(i)));
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_round_trip_and_bounds() {
        let m = GuestMemory::new("t", 4).unwrap();
        m.write(2, 100, b"hello").unwrap();
        let mut b = [0u8; 5];
        m.read(2, 100, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(
            m.read(4, 0, &mut b),
            Err(MemError::FrameOutOfRange { gfn: 4, frames: 4 })
        );
        assert_eq!(
            m.write(0, 4093, b"abcd"),
            Err(MemError::CrossesPage {
                offset: 4093,
                len: 4
            })
        );
        assert!(m.write(0, 4092, b"abcd").is_ok());
        assert_eq!(
            m.read(0, usize::MAX, &mut b),
            Err(MemError::CrossesPage {
                offset: usize::MAX,
                len: 5
            })
        );
        assert_eq!(
            m.load_u32(0, 2, Ordering::SeqCst),
            Err(MemError::Unaligned { offset: 2 })
        );
    }

    #[test]
    fn shared_through_the_fd() {
        let a = GuestMemory::new("t", 2).unwrap();
        let dup = a.fd().try_clone_to_owned().unwrap();
        let b = GuestMemory::from_fd(dup).unwrap();
        assert_eq!(b.frames(), 2);
        a.store_u32(1, 8, 0xdead_beef, Ordering::Release).unwrap();
        assert_eq!(b.load_u32(1, 8, Ordering::Acquire).unwrap(), 0xdead_beef);
        assert_eq!(b.cas_u16(1, 8, 0xbeef, 7).unwrap(), 0xbeef);
        assert_eq!(a.load_u16(1, 8, Ordering::SeqCst).unwrap(), 7);
    }

    #[test]
    fn unsealed_fd_is_refused() {
        let f = tempfile_fd();
        assert!(matches!(
            GuestMemory::from_fd(f),
            Err(MemSetupError::Invalid(_))
        ));
    }

    fn tempfile_fd() -> OwnedFd {
        let name = std::ffi::CString::new("unsealed").unwrap();
        // SAFETY: test helper creating a plain memfd.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        File::from(fd.try_clone().unwrap()).set_len(4096).unwrap();
        fd
    }

    #[test]
    fn copy_between_any_alignment() {
        let a = GuestMemory::new("a", 1).unwrap();
        let b = GuestMemory::new("b", 1).unwrap();
        let data: Vec<u8> = (0..200u8).collect();
        a.write(0, 3, &data).unwrap();
        for (so, dof) in [(3, 3), (3, 8), (3, 1)] {
            GuestMemory::copy_between(&a, 0, so, &b, 0, dof, 200).unwrap();
            let mut out = vec![0u8; 200];
            b.read(0, dof, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }
}
