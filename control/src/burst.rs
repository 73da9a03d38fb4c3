//! When learned routes go into the FIB: at the end of their burst.
//!
//! A full table streaming in, or a peer's routes going away, is built into one
//! snapshot at its end instead of into one intermediate snapshot after another, each
//! taking the CPU the speaker needs to finish the burst (on two cores that doubled the
//! time to a complete FIB). The speaker says when a peer's initial table is still
//! coming (`FibBatch::settling`); otherwise a burst has ended after a quiet time, and
//! no change ever waits longer than a bound.

use std::time::Duration;

/// Learned routes go into a snapshot once the speaker has sent nothing new for this
/// long...
pub const FIB_QUIET: Duration = Duration::from_millis(50);

/// ... or once the oldest change not yet built is this old, even if the speaker has not
/// stopped.
pub const FIB_MAX_DELAY: Duration = Duration::from_secs(1);

/// When learned routes are due in the FIB: at the end of their burst.
#[derive(Debug, Default)]
pub struct Burst {
    /// When the oldest change not yet built came.
    oldest: Option<std::time::Instant>,
    /// When the last batch of changes came.
    last: Option<std::time::Instant>,
    /// The speaker's word that a peer's initial table is still coming in.
    settling: bool,
    /// ... and that one has just ended (End-of-RIB): no need to wait for quiet.
    table_done: bool,
}

impl Burst {
    /// A batch from the speaker came at `now`, with changes or not.
    pub fn batch(&mut self, now: std::time::Instant, settling: bool, changes: bool) {
        // An initial table ended: what it brought goes in without waiting for quiet.
        let ended = self.settling && !settling;
        self.table_done |= ended && (changes || self.oldest.is_some());
        self.settling = settling;
        if changes {
            self.last = Some(now);
            self.oldest.get_or_insert(now);
        }
    }

    /// Whether the changes not yet built may go in now (`queued`: a batch waits to be
    /// read). True when there are none.
    pub fn over(&self, now: std::time::Instant, queued: bool) -> bool {
        let Some(oldest) = self.oldest else {
            return true;
        };
        let last = self.last.unwrap_or(oldest);
        now >= oldest + FIB_MAX_DELAY
            || (!queued && !self.settling && (self.table_done || now >= last + FIB_QUIET))
    }

    /// When [`Burst::over`] turns true with no other batch, if changes wait.
    pub fn due_at(&self) -> Option<std::time::Instant> {
        let oldest = self.oldest?;
        let latest = oldest + FIB_MAX_DELAY;
        if self.settling {
            // Until End-of-RIB (its batch wakes the loop) or the latest.
            return Some(latest);
        }
        let quiet = self.last.unwrap_or(oldest) + FIB_QUIET;
        Some(if self.table_done {
            oldest
        } else {
            quiet.min(latest)
        })
    }

    /// A build took every change.
    pub fn built(&mut self) {
        self.oldest = None;
        self.table_done = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_burst_goes_in_after_quiet_or_end_of_rib_and_never_later_than_the_limit() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut b = Burst::default();
        assert!(b.over(t0, false), "nothing pending");
        assert_eq!(b.due_at(), None);

        // Changes with no initial table coming: due after quiet, not while a batch is
        // queued.
        b.batch(ms(0), false, true);
        assert!(!b.over(ms(10), false));
        assert!(b.over(ms(50), false));
        assert!(!b.over(ms(50), true));
        b.batch(ms(40), false, true);
        assert!(
            !b.over(ms(60), false),
            "a newer batch restarts the quiet time"
        );
        assert_eq!(b.due_at(), Some(ms(90)));
        b.built();
        assert!(b.over(ms(60), false));

        // An initial table: no quiet time counts until End-of-RIB...
        b.batch(ms(100), true, true);
        assert!(!b.over(ms(400), false));
        assert_eq!(b.due_at(), Some(ms(1100)));
        // ... which goes in at once (its batch may be empty) ...
        b.batch(ms(450), false, false);
        assert!(b.over(ms(450), false));
        assert!(b.due_at().is_some_and(|t| t <= ms(450)));
        b.built();

        // An End-of-RIB with nothing waiting leaves no mark on the next change.
        b.batch(ms(500), true, false);
        b.batch(ms(510), false, false);
        b.batch(ms(520), false, true);
        assert!(!b.over(ms(530), false));
        b.built();

        // A table that never ends goes in at the limit.
        b.batch(ms(1000), true, true);
        b.batch(ms(1900), true, true);
        assert!(!b.over(ms(1999), false));
        assert!(b.over(ms(2000), true));
    }
}
