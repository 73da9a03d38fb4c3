//! Equal-cost multipath: a flow hash, and next-hop groups that map it to a member.
//!
//! A group is a power-of-two array of buckets, each holding a member; a flow takes the
//! bucket `hash & mask`, so all its packets take the same member, and a group of one
//! member never hashes (VPP's load-balance objects are shaped so). Members get buckets
//! in proportion to their weights, 16 per unit of the smallest share at least, so that
//! three equal members split 22/21/21 rather than 2/1/1.
//!
//! The hash is part of the contract with live traffic: changing it re-spreads every
//! flow at upgrade. A test pins its values.

/// Members of a group (next-hop indices) and their weights; why a group was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("a next-hop group needs at least one member")]
    Empty,
    #[error("member {member} of a next-hop group has weight 0")]
    ZeroWeight { member: u32 },
}

/// Most buckets a group has.
pub const MAX_BUCKETS: usize = 4096;

/// A next-hop group: members spread over power-of-two buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHopGroup {
    buckets: Box<[u32]>,
    mask: u32,
}

impl NextHopGroup {
    /// A group of `members`: (next-hop index, weight).
    pub fn new(members: &[(u32, u32)]) -> Result<NextHopGroup, GroupError> {
        if members.is_empty() {
            return Err(GroupError::Empty);
        }
        if let Some(&(member, _)) = members.iter().find(|m| m.1 == 0) {
            return Err(GroupError::ZeroWeight { member });
        }
        if let [(only, _)] = members {
            return Ok(NextHopGroup {
                buckets: Box::new([*only]),
                mask: 0,
            });
        }
        let total: u64 = members.iter().map(|m| u64::from(m.1)).sum();
        let min = members.iter().map(|m| u64::from(m.1)).min().unwrap_or(1);
        let want = (total / min * 16).clamp(1, MAX_BUCKETS as u64) as usize;
        let n = want.next_power_of_two().min(MAX_BUCKETS);
        // Largest remainder: each member gets floor(n * w / total), the leftovers go to
        // the largest fractions. Then the buckets are dealt round-robin, so that a
        // member's buckets are spread over the array rather than in one run.
        let mut shares: Vec<(u32, u64, u64)> = members
            .iter()
            .map(|&(m, w)| {
                (
                    m,
                    n as u64 * u64::from(w) / total,
                    n as u64 * u64::from(w) % total,
                )
            })
            .collect();
        let mut left = n as u64 - shares.iter().map(|s| s.1).sum::<u64>();
        let mut order: Vec<usize> = (0..shares.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(shares[i].2));
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            shares[i].1 += 1;
            left -= 1;
        }
        let mut buckets = Vec::with_capacity(n);
        while buckets.len() < n {
            for s in shares.iter_mut().filter(|s| s.1 > 0) {
                buckets.push(s.0);
                s.1 -= 1;
            }
        }
        Ok(NextHopGroup {
            buckets: buckets.into_boxed_slice(),
            mask: (n - 1) as u32,
        })
    }

    /// The member for a flow; `hash` is called only when the group has more than one
    /// bucket.
    #[inline]
    pub fn pick(&self, hash: impl FnOnce() -> u32) -> u32 {
        if self.mask == 0 {
            self.buckets[0]
        } else {
            self.buckets[(hash() & self.mask) as usize]
        }
    }

    /// The members, one per bucket (a member appears as often as its share).
    pub fn members(&self) -> &[u32] {
        &self.buckets
    }

    /// How many buckets.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }
}

const SEED: u64 = 0x243f_6a88_85a3_08d3; // pi's fraction: a fixed, arbitrary start

#[inline]
fn mix(h: u64, v: u64) -> u64 {
    let h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

/// murmur3's 64-bit finaliser, folded to 32 bits.
#[inline]
fn finish(mut h: u64) -> u32 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h ^ (h >> 32)) as u32
}

/// The flow hash of an IPv4 5-tuple (addresses in host order).
#[inline]
pub fn flow_hash_v4(src: u32, dst: u32, protocol: u8, src_port: u16, dst_port: u16) -> u32 {
    let addrs = (u64::from(src) << 32) | u64::from(dst);
    let rest = (u64::from(protocol) << 32) | (u64::from(src_port) << 16) | u64::from(dst_port);
    finish(mix(mix(SEED, addrs), rest))
}

/// The flow hash of an IPv6 5-tuple (addresses in host order).
#[inline]
pub fn flow_hash_v6(src: u128, dst: u128, protocol: u8, src_port: u16, dst_port: u16) -> u32 {
    let rest = (u64::from(protocol) << 32) | (u64::from(src_port) << 16) | u64::from(dst_port);
    let h = mix(mix(SEED, (src >> 64) as u64), src as u64);
    let h = mix(mix(h, (dst >> 64) as u64), dst as u64);
    finish(mix(h, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_hash_is_pinned() {
        // If this fails, the change re-spreads every live flow at upgrade: don't.
        let v4 = [
            flow_hash_v4(0x0a00_0002, 0x0a00_0103, 6, 40000, 80),
            flow_hash_v4(0x0a00_0002, 0x0a00_0103, 6, 40001, 80),
            flow_hash_v4(0, 0, 0, 0, 0),
        ];
        let v6 = flow_hash_v6(0x2001_0db8 << 96 | 2, 0x2001_0db8 << 96 | 3, 17, 5353, 53);
        assert_eq!(v4, PINNED_V4, "got {v4:#010x?}");
        assert_eq!(v6, PINNED_V6, "got {v6:#010x}");
    }

    const PINNED_V4: [u32; 3] = [0xfda1_c35d, 0xc451_d7db, 0x7ee0_1cac];
    const PINNED_V6: u32 = 0xfc10_212a;

    #[test]
    fn equal_members_share_evenly_and_flows_stick() {
        let g = NextHopGroup::new(&[(7, 1), (8, 1), (9, 1)]).unwrap();
        assert_eq!(g.buckets(), 64);
        let mut per: HashMap<u32, usize> = HashMap::new();
        for port in 0..30_000u16 {
            let h = flow_hash_v4(0x0a00_0002, 0x0a60_0001, 6, port, 80);
            let m = g.pick(|| h);
            assert_eq!(g.pick(|| h), m);
            *per.entry(m).or_default() += 1;
        }
        for n in per.values() {
            assert!((9_000..11_000).contains(n), "uneven spread: {per:?}");
        }
    }

    #[test]
    fn weights_and_single_members() {
        let g = NextHopGroup::new(&[(1, 3), (2, 1)]).unwrap();
        let ones = g.buckets.iter().filter(|&&m| m == 1).count();
        assert_eq!((g.buckets(), ones), (64, 48));
        let single = NextHopGroup::new(&[(5, 10)]).unwrap();
        assert_eq!(
            single.pick(|| unreachable!("a single member never hashes")),
            5
        );
        assert_eq!(NextHopGroup::new(&[]), Err(GroupError::Empty));
        assert_eq!(
            NextHopGroup::new(&[(1, 1), (4, 0)]),
            Err(GroupError::ZeroWeight { member: 4 })
        );
        let many: Vec<(u32, u32)> = (0..1000).map(|i| (i, 1 + i % 7)).collect();
        assert!(NextHopGroup::new(&many).unwrap().buckets() <= MAX_BUCKETS);
    }
}
