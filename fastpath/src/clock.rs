//! The connection tracking clock: whole seconds since the process first asked, plus
//! one (0 marks a free slot in the tables). Workers and the control side read the same
//! clock, so an entry written by one expires for all at the same second.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Seconds since the clock started, from 1; an atomic load and a vDSO clock read.
#[inline]
pub fn seconds() -> u32 {
    let epoch = EPOCH.get_or_init(Instant::now);
    (epoch.elapsed().as_secs().min(u64::from(u32::MAX - 1)) as u32) + 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn starts_at_one_and_never_goes_back() {
        let a = super::seconds();
        assert!(a >= 1);
        assert!(super::seconds() >= a);
    }
}
