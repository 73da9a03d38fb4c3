//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A forwarder changes a few fields (TTL, an address, a port) of every packet; updating
//! the checksum from the old and new values of those fields costs a few additions,
//! where recomputing it would read the whole header, or for TCP and UDP the whole
//! payload.

/// The one's-complement sum of `data` as 16-bit big-endian words (an odd last byte is
/// padded with zero), added to `initial`, not yet folded.
#[inline]
pub fn sum(initial: u32, data: &[u8]) -> u32 {
    let mut acc = u64::from(initial);
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold64(acc)
}

fn fold64(mut acc: u64) -> u32 {
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit sum to 16 bits (end-around carry).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data` (with its own checksum field zeroed) and an
/// initial sum (a pseudo-header's).
#[inline]
pub fn checksum(initial: u32, data: &[u8]) -> u16 {
    !fold(sum(initial, data))
}

/// The checksum after one 16-bit word of the covered data changed from `old` to `new`:
/// RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, which never yields the -0 (0xffff
/// for a non-zero sum) that equation 2 can.
#[inline]
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

/// The checksum after a 32-bit field (an IPv4 address) changed.
#[inline]
pub fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    let c = update16(checksum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// The checksum after a 128-bit field (an IPv6 address) changed.
#[inline]
pub fn update128(checksum: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    let mut acc = u32::from(!checksum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !fold(acc)
}

/// The sum of the IPv4 pseudo-header (RFC 768, RFC 793).
#[inline]
pub fn pseudo_ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, len: u16) -> u32 {
    let mut s = sum(0, &src);
    s = sum(s, &dst);
    s + u32::from(protocol) + u32::from(len)
}

/// The sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
#[inline]
pub fn pseudo_ipv6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u32 {
    let mut s = sum(0, src);
    s = sum(s, dst);
    fold64(u64::from(s) + u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(next_header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(0, &data), !0xddf2);
        assert_eq!(fold(sum(0, &[0xab])), 0xab00);
    }

    #[test]
    fn incremental_updates_match_a_full_recompute() {
        let mut data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        let before = checksum(0, &data);
        let (old16, old32) = (
            u16::from_be_bytes([data[8], data[9]]),
            u32::from_be_bytes([data[12], data[13], data[14], data[15]]),
        );
        data[8..10].copy_from_slice(&0xbeefu16.to_be_bytes());
        data[12..16].copy_from_slice(&0x0a00_0001u32.to_be_bytes());
        let want = checksum(0, &data);
        let got = update32(update16(before, old16, 0xbeef), old32, 0x0a00_0001);
        assert_eq!(got, want);
        let old: [u8; 16] = data[20..36].try_into().unwrap();
        let new = [0xfe; 16];
        data[20..36].copy_from_slice(&new);
        assert_eq!(update128(want, &old, &new), checksum(0, &data));
    }
}
