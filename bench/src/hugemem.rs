//! A zeroed `u32` array in anonymous memory advised to use transparent huge pages, for
//! the DIR-24-8 baseline's 64 MiB `tbl24` (DPDK maps it from hugetlbfs: measuring it on
//! 4 KiB pages would charge the baseline TLB misses it does not have in production).

use std::io;

/// A fixed-size, zero-initialised array of `u32` backed by its own mapping.
#[derive(Debug)]
pub struct HugeArray {
    ptr: *mut u32,
    len: usize,
}

// SAFETY: HugeArray owns its mapping exclusively, like a Box<[u32]>; shared access is
// read-only through `&self`.
unsafe impl Send for HugeArray {}
// SAFETY: as above: `&HugeArray` only hands out `&[u32]`.
unsafe impl Sync for HugeArray {}

const HUGE: usize = 2 << 20;

impl HugeArray {
    /// Maps `len` zeroed entries, asking for huge pages (best effort: if the kernel has
    /// transparent huge pages off, the array still works on small pages).
    pub fn zeroed(len: usize) -> io::Result<Self> {
        let bytes = (len * 4).div_ceil(HUGE) * HUGE;
        // SAFETY: an anonymous private mapping with no address hint; the result is
        // checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `p..p+bytes` is the mapping just created; madvise only changes paging.
        unsafe { libc::madvise(p, bytes, libc::MADV_HUGEPAGE) };
        Ok(HugeArray { ptr: p.cast(), len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub fn as_slice(&self) -> &[u32] {
        // SAFETY: `ptr` is a live, zero-initialised mapping of at least `len` u32s, owned
        // by self; `&self` excludes any `&mut` to it.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [u32] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for HugeArray {
    fn drop(&mut self) {
        let bytes = (self.len * 4).div_ceil(HUGE) * HUGE;
        // SAFETY: unmaps exactly the mapping created in `zeroed`; no reference outlives self.
        unsafe { libc::munmap(self.ptr.cast(), bytes) };
    }
}
