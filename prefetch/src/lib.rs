//! A prefetch hint as a safe function: asks the CPU to bring the cache line holding a
//! value into its caches, and returns at once. Batched lookups (VPP's shape) prefetch
//! every key's slot, then look each up, so that the cache misses of a batch overlap
//! instead of coming one after another.
//!
//! Why it exists: safe Rust has no prefetch, and a load in its place is no substitute
//! (a load that misses holds its place in the CPU's reorder buffer until the data
//! comes, so a batch of them stalls once the buffer fills). The crates that must stay
//! free of `unsafe` (`lpm`, `nat`: `#![forbid(unsafe_code)]`) call this one instead.
//! Justified by `xroute-bench nat --runs 3 --cpu 0` (`bench/RESULTS.md`): conntrack
//! lookups at 1M flows in batches of 64 went from 14.5 M/s without it to 19.3 M/s with
//! it, in one hour on one machine.
#![no_std]

/// Hints that `value`'s cache line will be read soon (into every cache level). On
/// other architectures than x86_64 it does nothing.
#[inline(always)]
pub fn read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `_mm_prefetch` is unsafe only for its `target_feature(sse)`, and SSE
        // is part of the x86_64 baseline every x86_64 target enables. A prefetch reads
        // nothing into the program, writes nothing and never faults; the address is
        // of a live reference besides.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hint_changes_nothing() {
        let words = [7u64; 16];
        for w in &words {
            super::read(w);
        }
        assert!(words.iter().all(|&w| w == 7));
    }
}
