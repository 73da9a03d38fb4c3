//! Addresses and prefixes, as the tables see them.
//!
//! The tables work on the address as an unsigned integer in host order (`u32` for IPv4,
//! `u128` for IPv6): the fastpath reads it from packet bytes with one `from_be_bytes`,
//! and every trie step is a shift. [`Address`] is the small set of bit operations the
//! trie needs, implemented for exactly those two types.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u128 {}
}

/// An IP address as an unsigned integer in host byte order: `u32` (IPv4) or `u128` (IPv6).
pub trait Address:
    Copy + Ord + Eq + std::hash::Hash + fmt::Debug + Send + Sync + 'static + sealed::Sealed
{
    /// Address width in bits.
    const BITS: u8;
    /// The all-zero address.
    const ZERO: Self;
    /// Bits resolved by the direct-pointing array at the top of the trie.
    const DIRECT_BITS: u8;
    /// The family's name, for messages.
    const FAMILY: &'static str;

    /// The address with every bit past the first `len` cleared.
    fn masked(self, len: u8) -> Self;
    /// Whether any bit past the first `len` is set.
    fn has_host_bits(self, len: u8) -> bool {
        self.masked(len) != self
    }
    /// The six bits starting `depth` bits from the top, zero-padded past the end.
    /// `depth` is below `BITS` for every node the trie builds.
    fn chunk(self, depth: u8) -> usize;
    /// The `n` bits (at most 60) starting `depth` bits from the top, zero-padded past the
    /// end, right-aligned. `depth` is below `BITS`.
    fn bits(self, depth: u8, n: u8) -> u64;
    /// How many leading bits `self` and `other` share.
    fn common_len(self, other: Self) -> u8;
    /// The direct-pointing slot: the top `DIRECT_BITS` bits.
    fn slot(self) -> usize;
    /// The last address of the prefix `self/len` (`self` must be masked to `len`).
    fn last_of(self, len: u8) -> Self;
    /// Formats the address the usual way (dotted quad, RFC 5952).
    fn fmt_addr(self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// Parses the usual text form.
    fn parse_addr(s: &str) -> Option<Self>;
}

/// The one implementation, for both widths: shifts stay below the width for every
/// `len` and `depth` the trie uses.
macro_rules! address {
    ($t:ty, $ip:ty, $direct:expr, $family:expr) => {
        impl Address for $t {
            const BITS: u8 = <$t>::BITS as u8;
            const ZERO: Self = 0;
            const DIRECT_BITS: u8 = $direct;
            const FAMILY: &'static str = $family;

            #[inline]
            fn masked(self, len: u8) -> Self {
                if len == 0 {
                    0
                } else {
                    self & (<$t>::MAX
                        << u32::from(<Self as Address>::BITS - len.min(<Self as Address>::BITS)))
                }
            }
            #[inline]
            fn chunk(self, depth: u8) -> usize {
                (self.wrapping_shl(u32::from(depth)) >> (<$t>::BITS - 6)) as usize
            }
            #[inline]
            fn bits(self, depth: u8, n: u8) -> u64 {
                if n == 0 {
                    return 0;
                }
                let top = u128::from(self) << (128 - <$t>::BITS);
                (top.wrapping_shl(u32::from(depth)) >> (128 - u32::from(n))) as u64
            }
            fn common_len(self, other: Self) -> u8 {
                (self ^ other).leading_zeros() as u8
            }
            #[inline]
            fn slot(self) -> usize {
                (self >> u32::from(<Self as Address>::BITS - Self::DIRECT_BITS)) as usize
            }
            #[inline]
            fn last_of(self, len: u8) -> Self {
                if len == 0 {
                    <$t>::MAX
                } else if len >= <Self as Address>::BITS {
                    self
                } else {
                    self | (<$t>::MAX >> u32::from(len))
                }
            }
            fn fmt_addr(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&<$ip>::from(self), f)
            }
            fn parse_addr(s: &str) -> Option<Self> {
                s.parse::<$ip>().ok().map(<$t>::from)
            }
        }
    };
}

address!(u32, Ipv4Addr, 18, "IPv4");
address!(u128, Ipv6Addr, 16, "IPv6");

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix length {len} is longer than the {bits} bits of an {family} address")]
    LengthTooLong {
        len: u8,
        bits: u8,
        family: &'static str,
    },
    #[error("{text:?} has bits set past its prefix length (the network address is {network})")]
    HostBitsSet { text: String, network: String },
    #[error("{text:?} is not an {family} prefix: expected ADDRESS/LENGTH")]
    Malformed { text: String, family: &'static str },
}

/// A route's destination: the first `len` bits of `addr`; the other bits are zero.
///
/// Ordered by address, then length: in that order every prefix comes after every prefix
/// that contains it, which is the order the table builder paints them in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix<A> {
    addr: A,
    len: u8,
}

/// An IPv4 prefix.
pub type Prefix4 = Prefix<u32>;
/// An IPv6 prefix.
pub type Prefix6 = Prefix<u128>;

impl<A: Address> Prefix<A> {
    /// A prefix; refuses a length past the address width and an address with host bits set.
    pub fn new(addr: A, len: u8) -> Result<Self, PrefixError> {
        if len > A::BITS {
            return Err(PrefixError::LengthTooLong {
                len,
                bits: A::BITS,
                family: A::FAMILY,
            });
        }
        if addr.has_host_bits(len) {
            let network = Prefix {
                addr: addr.masked(len),
                len,
            };
            return Err(PrefixError::HostBitsSet {
                text: format!("{}", Prefix { addr, len }),
                network: network.to_string(),
            });
        }
        Ok(Prefix { addr, len })
    }

    /// A search key for ordered maps of prefixes: no checks, host bits may be set.
    pub(crate) fn bound(addr: A, len: u8) -> Self {
        Prefix { addr, len }
    }

    /// The prefix of `addr` of length `len`, clearing host bits; `len` is capped at the width.
    pub fn new_masked(addr: A, len: u8) -> Self {
        let len = len.min(A::BITS);
        Prefix {
            addr: addr.masked(len),
            len,
        }
    }

    /// The network address.
    pub fn addr(&self) -> A {
        self.addr
    }

    /// The prefix length in bits.
    #[allow(clippy::len_without_is_empty)] // a length in bits, not a collection's size
    pub fn len(&self) -> u8 {
        self.len
    }

    /// The last address inside the prefix.
    pub fn last(&self) -> A {
        self.addr.last_of(self.len)
    }

    /// Whether `addr` lies inside the prefix.
    pub fn contains(&self, addr: A) -> bool {
        addr.masked(self.len) == self.addr
    }

    /// Whether `other` lies entirely inside this prefix (a prefix covers itself).
    pub fn covers(&self, other: &Prefix<A>) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl<A: Address> fmt::Display for Prefix<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt_addr(f)?;
        write!(f, "/{}", self.len)
    }
}

impl<A: Address> fmt::Debug for Prefix<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<A: Address> FromStr for Prefix<A> {
    type Err = PrefixError;

    /// Parses `ADDRESS/LENGTH`; a bare address is a host prefix (/32, /128).
    fn from_str(text: &str) -> Result<Self, PrefixError> {
        let malformed = || PrefixError::Malformed {
            text: text.to_string(),
            family: A::FAMILY,
        };
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => {
                // Only plain decimal digits: `u8::from_str` would take a leading '+'.
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed());
                }
                (a, l.parse::<u8>().map_err(|_| malformed())?)
            }
            None => (text, A::BITS),
        };
        let addr = A::parse_addr(addr).ok_or_else(malformed)?;
        Prefix::new(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for s in [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "192.0.2.1/32",
            "255.255.255.255/32",
        ] {
            assert_eq!(s.parse::<Prefix4>().unwrap().to_string(), s);
        }
        for s in ["::/0", "2001:db8::/32", "2001:db8::1/128", "fe80::/10"] {
            assert_eq!(s.parse::<Prefix6>().unwrap().to_string(), s);
        }
        assert_eq!("192.0.2.7".parse::<Prefix4>().unwrap().len(), 32);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = "10.0.0.1/8".parse::<Prefix4>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"10.0.0.1/8\" has bits set past its prefix length (the network address is 10.0.0.0/8)"
        );
        assert!(matches!(
            "10.0.0.0/33".parse::<Prefix4>(),
            Err(PrefixError::LengthTooLong { .. })
        ));
        assert!(matches!(
            "::/129".parse::<Prefix6>(),
            Err(PrefixError::LengthTooLong { .. })
        ));
        for bad in [
            "",
            "/",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0/8",
            "2001:db8::/32",
            "x/1",
        ] {
            assert!(bad.parse::<Prefix4>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bit_operations_at_the_edges() {
        assert_eq!(0xffff_ffffu32.masked(0), 0);
        assert_eq!(0xffff_ffffu32.masked(32), 0xffff_ffff);
        assert_eq!(0xffff_ffffu32.masked(1), 0x8000_0000);
        assert_eq!(0u32.last_of(0), u32::MAX);
        assert_eq!(0x0a00_0000u32.last_of(8), 0x0aff_ffff);
        assert_eq!(7u32.last_of(32), 7);
        assert_eq!(u128::MAX.masked(128), u128::MAX);
        assert_eq!(1u128.last_of(128), 1);
        assert_eq!(0u128.last_of(0), u128::MAX);
        // chunk() pads with zeros past the end of the address.
        assert_eq!(0xffff_ffffu32.chunk(30), 0b110000);
        assert_eq!(u128::MAX.chunk(124), 0b111100);
        assert_eq!(0x8000_0000u32.chunk(0), 0b100000);
        assert_eq!(0xc000_0000u32.slot(), 0b11 << 16);
        assert_eq!(0x1234_5678u32.bits(4, 12), 0x234);
        assert_eq!(0x1234_5678u32.bits(28, 8), 0x80);
        assert_eq!(0x1234_5678u32.bits(0, 0), 0);
        assert_eq!((0xabcu128 << 100).bits(16, 24), 0xabc << 12);
        assert_eq!(u128::MAX.bits(120, 12), 0xff0);
        assert_eq!(0x8000_0000u32.common_len(0), 0);
        assert_eq!(7u32.common_len(7), 32);
    }

    #[test]
    fn containment() {
        let p: Prefix4 = "10.0.0.0/8".parse().unwrap();
        let q: Prefix4 = "10.1.0.0/16".parse().unwrap();
        assert!(p.covers(&q) && !q.covers(&p) && p.covers(&p));
        assert!(p.contains(0x0a01_0203) && !p.contains(0x0b00_0000));
        assert_eq!(p.last(), 0x0aff_ffff);
    }
}
