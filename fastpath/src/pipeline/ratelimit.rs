//! The token bucket that limits the ICMP errors a worker sends (RFC 1812 4.3.2.8,
//! RFC 4443 2.4(f)): a router that answers every expired or unroutable packet with an
//! error can be made to flood a victim with them, or to spend its cycles building them.
//!
//! Per worker, so no state is shared: the node's limit is the per-worker rate times the
//! number of workers, as Linux's `icmp_msgs_per_sec` is per CPU. Integer arithmetic on
//! the batch's monotonic clock: credit is kept in nanoseconds, a token costs
//! `1e9 / rate` of them, and credit never exceeds `burst` tokens.

/// Linux's default rate (`net.ipv4.icmp_msgs_per_sec`).
pub const DEFAULT_PER_SEC: u32 = 1000;
/// Linux's default burst (`net.ipv4.icmp_msgs_burst`).
pub const DEFAULT_BURST: u32 = 50;

const NANOS: u64 = 1_000_000_000;

/// How many ICMP errors a worker may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens per second; 0 means no limit.
    pub per_sec: u32,
    /// The most tokens saved up.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_sec: DEFAULT_PER_SEC,
            burst: DEFAULT_BURST,
        }
    }
}

/// A worker's bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Nanoseconds one token costs (0: no limit).
    cost: u64,
    /// The most credit kept.
    cap: u64,
    credit: u64,
    last: u64,
}

impl TokenBucket {
    /// A full bucket at time `now` (nanoseconds of a monotonic clock).
    pub fn new(limit: RateLimit, now: u64) -> TokenBucket {
        let cost = if limit.per_sec == 0 {
            0
        } else {
            NANOS / u64::from(limit.per_sec)
        };
        let cap = cost.saturating_mul(u64::from(limit.burst.max(1)));
        TokenBucket {
            cost,
            cap,
            credit: cap,
            last: now,
        }
    }

    /// Takes a token at time `now` if there is one.
    #[inline]
    pub fn take(&mut self, now: u64) -> bool {
        if self.cost == 0 {
            return true;
        }
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        self.credit = self.credit.saturating_add(elapsed).min(self.cap);
        if self.credit >= self.cost {
            self.credit -= self.cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::new(RateLimit::default(), 0);
        let burst = (0..100).filter(|_| b.take(0)).count();
        assert_eq!(burst, 50);
        // One more every millisecond.
        assert!(!b.take(999_999));
        assert!(b.take(1_000_000));
        assert!(!b.take(1_000_000));
        // A second later: a full burst again, no more.
        let later = (0..100).filter(|_| b.take(2 * NANOS)).count();
        assert_eq!(later, 50);
    }

    #[test]
    fn zero_means_unlimited_and_time_going_back_gives_nothing() {
        let mut free = TokenBucket::new(
            RateLimit {
                per_sec: 0,
                burst: 0,
            },
            0,
        );
        assert!((0..10_000).all(|_| free.take(0)));
        let mut b = TokenBucket::new(
            RateLimit {
                per_sec: 10,
                burst: 1,
            },
            NANOS,
        );
        assert!(b.take(NANOS));
        assert!(!b.take(0), "an older time earns no credit");
        assert!(!b.take(NANOS + NANOS / 20));
        assert!(b.take(NANOS + NANOS / 10));
    }

    proptest! {
        /// Against the plain model: over any run of calls, what was allowed is at most
        /// the burst plus the rate times the time elapsed.
        #[test]
        fn never_more_than_burst_plus_rate(
            per_sec in 1u32..100_000,
            burst in 1u32..200,
            steps in proptest::collection::vec(0u64..5_000_000, 1..400),
        ) {
            let mut b = TokenBucket::new(RateLimit { per_sec, burst }, 0);
            let (mut now, mut allowed) = (0u64, 0u64);
            for s in steps {
                now += s;
                if b.take(now) {
                    allowed += 1;
                }
                // A token costs the whole nanoseconds of 1/rate.
                let bound = u64::from(burst) + now / (NANOS / u64::from(per_sec));
                prop_assert!(allowed <= bound, "{allowed} > {bound} at {now} ns");
            }
        }
    }
}
