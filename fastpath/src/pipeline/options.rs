//! IPv4 options a router must process when it forwards (RFC 1812 5.3.13, RFC 791):
//! Record Route and Timestamp get this hop's address and time written into them;
//! source-routed packets are refused; malformed options are a parameter problem.
//!
//! Options are rare, so the fastpath handles them here rather than punting them: a punt
//! would have the kernel forward the packet, and back through the host port the
//! fastpath would forward it a second time. The walk is bounded by the header (at most
//! 40 bytes of options) and reads nothing outside it.
//!
//! Source routing (LSRR, SSRR) is refused as Linux refuses it by default
//! (`accept_source_route = 0`): a router must be able to turn it off (RFC 1812
//! 5.2.4.1), and Kubernetes nodes have no use for it.

/// IPv4 option types (IANA "IP Option Numbers").
mod kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const RECORD_ROUTE: u8 = 7;
    pub const TIMESTAMP: u8 = 68;
    pub const LOOSE_SOURCE_ROUTE: u8 = 131;
    pub const STRICT_SOURCE_ROUTE: u8 = 137;
}

/// Timestamp option flags (RFC 791).
mod ts_flag {
    pub const TIMESTAMPS: u8 = 0;
    pub const ADDRESSES: u8 = 1;
    pub const PRESPECIFIED: u8 = 3;
}

const FIXED_HEADER: usize = 20;

/// Why a packet's options keep it from being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Loose or strict source routing.
    SourceRoute,
    /// The option byte at this offset of the IP header is wrong: answer ICMP parameter
    /// problem pointing at it.
    Problem(u8),
}

/// Processes the options of `header` (the whole IPv4 header, options included) for a
/// packet this router forwards out of an interface whose address is `addr`, at
/// `ms_since_midnight` (UT). Returns whether it wrote anything (the caller then
/// recomputes the header checksum).
pub(crate) fn process(
    header: &mut [u8],
    addr: [u8; 4],
    ms_since_midnight: u32,
) -> Result<bool, Refusal> {
    let end = header.len();
    let mut at = FIXED_HEADER;
    let mut changed = false;
    while at < end {
        match header[at] {
            kind::END => break,
            kind::NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let problem = |offset: usize| Refusal::Problem(offset.min(usize::from(u8::MAX)) as u8);
        let Some(&len) = header.get(at + 1) else {
            return Err(problem(at + 1));
        };
        let len = usize::from(len);
        if len < 2 || at + len > end {
            return Err(problem(at + 1));
        }
        let option = &mut header[at..at + len];
        let done = match option[0] {
            kind::RECORD_ROUTE => record_route(option, addr),
            kind::TIMESTAMP => timestamp(option, addr, ms_since_midnight),
            kind::LOOSE_SOURCE_ROUTE | kind::STRICT_SOURCE_ROUTE => {
                return Err(Refusal::SourceRoute)
            }
            _ => Ok(false),
        };
        changed |= done.map_err(|offset| problem(at + offset))?;
        at += len;
    }
    Ok(changed)
}

/// Record Route: this hop's address goes where the pointer says, if there is room
/// (a full option is forwarded as it is). `Err` holds the faulty offset in the option.
fn record_route(option: &mut [u8], addr: [u8; 4]) -> Result<bool, usize> {
    let len = option.len();
    let ptr = usize::from(*option.get(2).ok_or(1usize)?);
    if ptr < 4 {
        return Err(2);
    }
    if ptr > len {
        return Ok(false); // full
    }
    if ptr + 3 > len {
        return Err(2);
    }
    option[ptr - 1..ptr + 3].copy_from_slice(&addr);
    option[2] = (ptr + 4) as u8;
    Ok(true)
}

/// Timestamp: this hop's time (and address, with flag 1; only where its address is
/// prespecified, with flag 3), or one more in the overflow count when the option is
/// full. An overflow count that overflows, or an unknown flag, is an error.
fn timestamp(option: &mut [u8], addr: [u8; 4], now: u32) -> Result<bool, usize> {
    let len = option.len();
    if len < 4 {
        return Err(1);
    }
    let ptr = usize::from(option[2]);
    let (overflow, flag) = (option[3] >> 4, option[3] & 0x0f);
    let entry = match flag {
        ts_flag::TIMESTAMPS => 4,
        ts_flag::ADDRESSES | ts_flag::PRESPECIFIED => 8,
        _ => return Err(3),
    };
    if ptr < 5 {
        return Err(2);
    }
    if ptr > len {
        if overflow == 0x0f {
            return Err(3);
        }
        option[3] = ((overflow + 1) << 4) | flag;
        return Ok(true);
    }
    if ptr + entry - 1 > len {
        return Err(2);
    }
    let slot = ptr - 1;
    let time = now.to_be_bytes();
    match flag {
        ts_flag::TIMESTAMPS => option[slot..slot + 4].copy_from_slice(&time),
        ts_flag::ADDRESSES => {
            option[slot..slot + 4].copy_from_slice(&addr);
            option[slot + 4..slot + 8].copy_from_slice(&time);
        }
        _ => {
            if option[slot..slot + 4] != addr {
                return Ok(false); // another hop's turn
            }
            option[slot + 4..slot + 8].copy_from_slice(&time);
        }
    }
    option[2] = (ptr + entry) as u8;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ME: [u8; 4] = [192, 0, 2, 1];
    const NOW: u32 = 0x0102_0304;

    fn header(options: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x40 | ((20 + options.len()) / 4) as u8;
        h.extend_from_slice(options);
        h
    }

    #[test]
    fn record_route_fills_the_next_slot_until_full() {
        // RR with room for two addresses, then END.
        let mut h = header(&[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(process(&mut h, ME, NOW), Ok(true));
        assert_eq!(&h[20..31], &[7, 11, 8, 192, 0, 2, 1, 0, 0, 0, 0]);
        assert_eq!(process(&mut h, [10, 0, 0, 1], NOW), Ok(true));
        assert_eq!(&h[22..31], &[12, 192, 0, 2, 1, 10, 0, 0, 1]);
        let full = h.clone();
        assert_eq!(process(&mut h, ME, NOW), Ok(false), "full: forwarded as is");
        assert_eq!(h, full);
    }

    #[test]
    fn timestamps_of_each_flag_and_the_overflow_count() {
        let mut h = header(&[68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(process(&mut h, ME, NOW), Ok(true));
        assert_eq!(&h[20..29], &[68, 12, 9, 0, 1, 2, 3, 4, 0]);
        let mut h = header(&[68, 12, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(process(&mut h, ME, NOW), Ok(true));
        assert_eq!(&h[20..32], &[68, 12, 13, 1, 192, 0, 2, 1, 1, 2, 3, 4]);
        // Full: the overflow count goes up, and an overflowing count is a problem.
        assert_eq!(process(&mut h, ME, NOW), Ok(true));
        assert_eq!(h[23], 0x11);
        h[23] = 0xf1;
        assert_eq!(process(&mut h, ME, NOW), Err(Refusal::Problem(23)));
        // Prespecified: only the named hop writes.
        let mut h = header(&[68, 12, 5, 3, 10, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(process(&mut h, ME, NOW), Ok(false));
        h[24..28].copy_from_slice(&ME);
        assert_eq!(process(&mut h, ME, NOW), Ok(true));
        assert_eq!(&h[28..32], &NOW.to_be_bytes());
        assert_eq!(h[22], 13);
    }

    #[test]
    fn source_routes_and_malformed_options_are_refused() {
        let mut h = header(&[131, 7, 4, 10, 0, 0, 1, 0]);
        assert_eq!(process(&mut h, ME, NOW), Err(Refusal::SourceRoute));
        let mut h = header(&[1, 1, 137, 7, 4, 10, 0, 0, 1]);
        h.extend_from_slice(&[0, 0, 0]);
        assert_eq!(process(&mut h, ME, NOW), Err(Refusal::SourceRoute));
        // A length running past the header, a length below 2, a pointer below its
        // minimum, an unknown timestamp flag.
        let mut h = header(&[7, 9, 4, 0]);
        assert_eq!(process(&mut h, ME, NOW), Err(Refusal::Problem(21)));
        let mut h = header(&[7, 1, 4, 0]);
        assert_eq!(process(&mut h, ME, NOW), Err(Refusal::Problem(21)));
        let mut h = header(&[7, 7, 3, 0, 0, 0, 0, 0]);
        assert_eq!(process(&mut h, ME, NOW), Err(Refusal::Problem(22)));
        let mut h = header(&[68, 8, 5, 2, 0, 0, 0, 0]);
        assert_eq!(process(&mut h, ME, NOW), Err(Refusal::Problem(23)));
        // An option type alone in the last byte has no length.
        let mut h = header(&[1, 1, 1, 7]);
        assert_eq!(process(&mut h, ME, NOW), Err(Refusal::Problem(24)));
        // Unknown options and padding pass untouched.
        let mut h = header(&[148, 4, 0, 0]);
        assert_eq!(process(&mut h, ME, NOW), Ok(false));
    }

    proptest! {
        /// Any option bytes: no panic, the fixed header untouched, and what changed
        /// lies inside a Record Route or Timestamp option.
        #[test]
        fn any_options_are_safe(options in proptest::collection::vec(any::<u8>(), 0..=40)) {
            let mut options = options;
            options.truncate(options.len() / 4 * 4);
            let mut h = header(&options);
            let before = h.clone();
            let result = process(&mut h, ME, NOW);
            prop_assert_eq!(&h[..20], &before[..20]);
            if result == Ok(false) {
                prop_assert_eq!(&h, &before, "nothing written, but bytes changed");
            }
            for (i, (a, b)) in h.iter().zip(&before).enumerate() {
                if a != b {
                    // Inside an option of a kind that is written (walk to find it).
                    let mut at = 20;
                    let mut inside = false;
                    while at < before.len() {
                        match before[at] {
                            0 => break,
                            1 => at += 1,
                            kind => {
                                let len = usize::from(*before.get(at + 1).unwrap_or(&0)).max(2);
                                if (at..at + len).contains(&i) {
                                    inside = kind == 7 || kind == 68;
                                    break;
                                }
                                at += len;
                            }
                        }
                    }
                    prop_assert!(inside, "byte {} changed outside RR/TS", i);
                }
            }
        }
    }
}
