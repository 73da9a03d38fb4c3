//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages: echo, the errors a router sends,
//! and IPv6 neighbour discovery (RFC 4861), which the fastpath answers for its pods.

use super::checksum;
use super::{read_u16, write_u16, Malformed, Result};

/// ICMPv4 types, and the messages the fastpath reads and writes.
pub mod v4 {
    use super::{Header, Packet};

    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;

    /// Whether a message of this type is an error (RFC 1812 4.3.2.7: no error is sent
    /// about one); echo, router discovery, timestamp, information and address mask
    /// messages are not.
    pub fn is_error(msg_type: u8) -> bool {
        !matches!(msg_type, ECHO_REPLY | ECHO_REQUEST | 9 | 10 | 13..=18)
    }

    /// An ICMPv4 message's header: what [`Repr::emit`] writes in the first 8 bytes;
    /// the body (echo data, the quoted datagram of an error) is what follows them in
    /// the buffer already.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Repr {
        EchoRequest {
            ident: u16,
            seq: u16,
        },
        EchoReply {
            ident: u16,
            seq: u16,
        },
        /// With code 4 (fragmentation needed), the next hop's MTU (RFC 1191).
        DstUnreachable {
            code: u8,
            next_hop_mtu: u16,
        },
        TimeExceeded {
            code: u8,
        },
        /// The octet of the quoted header at fault (RFC 792).
        ParamProblem {
            pointer: u8,
        },
        /// Any other message, as its type and code.
        Other {
            msg_type: u8,
            code: u8,
        },
    }

    impl Repr {
        /// Reads a checked message's header.
        pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
            let (code, rest) = (p.code(), p.rest());
            let word = |i: usize| u16::from_be_bytes([rest[i], rest[i + 1]]);
            match p.msg_type() {
                ECHO_REQUEST if code == 0 => Repr::EchoRequest {
                    ident: word(0),
                    seq: word(2),
                },
                ECHO_REPLY if code == 0 => Repr::EchoReply {
                    ident: word(0),
                    seq: word(2),
                },
                DEST_UNREACHABLE => Repr::DstUnreachable {
                    code,
                    next_hop_mtu: word(2),
                },
                TIME_EXCEEDED => Repr::TimeExceeded { code },
                PARAM_PROBLEM => Repr::ParamProblem { pointer: rest[0] },
                msg_type => Repr::Other { msg_type, code },
            }
        }

        /// Writes the header into `p` and the checksum over the whole buffer.
        pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
            let (msg_type, code, rest) = match *self {
                Repr::EchoRequest { ident, seq } => (ECHO_REQUEST, 0, Header::echo(ident, seq)),
                Repr::EchoReply { ident, seq } => (ECHO_REPLY, 0, Header::echo(ident, seq)),
                Repr::DstUnreachable { code, next_hop_mtu } => {
                    let m = next_hop_mtu.to_be_bytes();
                    (DEST_UNREACHABLE, code, [0, 0, m[0], m[1]])
                }
                Repr::TimeExceeded { code } => (TIME_EXCEEDED, code, [0; 4]),
                Repr::ParamProblem { pointer } => (PARAM_PROBLEM, 0, [pointer, 0, 0, 0]),
                Repr::Other { msg_type, code } => (msg_type, code, p.rest()),
            };
            Header {
                msg_type,
                code,
                rest,
            }
            .emit(p, 0);
        }
    }
}

/// ICMPv6 types, and the messages the fastpath reads and writes.
pub mod v6 {
    use super::{field, Header, Malformed, Packet, Result};
    use crate::wire::ethernet::Mac;

    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;

    /// Neighbour advertisement flags (RFC 4861 4.4).
    pub mod na_flags {
        pub const ROUTER: u8 = 0x80;
        pub const SOLICITED: u8 = 0x40;
        pub const OVERRIDE: u8 = 0x20;
    }

    /// The target link-layer address option (RFC 4861 4.6.1), and its length.
    const TARGET_LLADDR: u8 = 2;
    const LLADDR_OPTION_LEN: usize = 8;

    /// Whether a message of this type is an error (RFC 4443 2.1: types below 128).
    pub fn is_error(msg_type: u8) -> bool {
        msg_type < 128
    }

    /// An ICMPv6 message's header (and, for neighbour discovery, its body): what
    /// [`Repr::emit`] writes; the body of echo and error messages is what follows the
    /// 8-byte header in the buffer already.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Repr {
        EchoRequest {
            ident: u16,
            seq: u16,
        },
        EchoReply {
            ident: u16,
            seq: u16,
        },
        DstUnreachable {
            code: u8,
        },
        PacketTooBig {
            mtu: u32,
        },
        TimeExceeded {
            code: u8,
        },
        ParamProblem {
            code: u8,
            pointer: u32,
        },
        NeighborSolicit {
            target: [u8; 16],
        },
        /// With the target link-layer address option when `lladdr` is given.
        NeighborAdvert {
            flags: u8,
            target: [u8; 16],
            lladdr: Option<Mac>,
        },
        /// Any other message, as its type and code.
        Other {
            msg_type: u8,
            code: u8,
        },
    }

    impl Repr {
        /// Reads a checked message's header; a neighbour solicitation or
        /// advertisement too short for its target is [`Malformed`].
        pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
            let (code, rest) = (p.code(), p.rest());
            let word = |i: usize| u16::from_be_bytes([rest[i], rest[i + 1]]);
            Ok(match p.msg_type() {
                ECHO_REQUEST if code == 0 => Repr::EchoRequest {
                    ident: word(0),
                    seq: word(2),
                },
                ECHO_REPLY if code == 0 => Repr::EchoReply {
                    ident: word(0),
                    seq: word(2),
                },
                DEST_UNREACHABLE => Repr::DstUnreachable { code },
                PACKET_TOO_BIG => Repr::PacketTooBig {
                    mtu: u32::from_be_bytes(rest),
                },
                TIME_EXCEEDED => Repr::TimeExceeded { code },
                PARAM_PROBLEM => Repr::ParamProblem {
                    code,
                    pointer: u32::from_be_bytes(rest),
                },
                NEIGHBOR_SOLICIT if code == 0 => Repr::NeighborSolicit {
                    target: p.nd_target().ok_or(Malformed)?,
                },
                NEIGHBOR_ADVERT if code == 0 => Repr::NeighborAdvert {
                    flags: rest[0],
                    target: p.nd_target().ok_or(Malformed)?,
                    lladdr: None,
                },
                msg_type => Repr::Other { msg_type, code },
            })
        }

        /// How many bytes [`Repr::emit`] writes.
        pub fn header_len(&self) -> usize {
            match self {
                Repr::NeighborSolicit { .. } => field::ND_TARGET.end,
                Repr::NeighborAdvert { lladdr, .. } => {
                    field::ND_TARGET.end + lladdr.map_or(0, |_| LLADDR_OPTION_LEN)
                }
                _ => field::HEADER,
            }
        }

        /// Writes the message into `p`, which must hold [`Repr::header_len`] bytes,
        /// and the checksum over the whole buffer from the pseudo-header sum `pseudo`.
        pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, pseudo: u32) {
            let (msg_type, code, rest) = match *self {
                Repr::EchoRequest { ident, seq } => (ECHO_REQUEST, 0, Header::echo(ident, seq)),
                Repr::EchoReply { ident, seq } => (ECHO_REPLY, 0, Header::echo(ident, seq)),
                Repr::DstUnreachable { code } => (DEST_UNREACHABLE, code, [0; 4]),
                Repr::PacketTooBig { mtu } => (PACKET_TOO_BIG, 0, mtu.to_be_bytes()),
                Repr::TimeExceeded { code } => (TIME_EXCEEDED, code, [0; 4]),
                Repr::ParamProblem { code, pointer } => {
                    (PARAM_PROBLEM, code, pointer.to_be_bytes())
                }
                Repr::NeighborSolicit { target } => {
                    p.buffer.as_mut()[field::ND_TARGET].copy_from_slice(&target);
                    (NEIGHBOR_SOLICIT, 0, [0; 4])
                }
                Repr::NeighborAdvert {
                    flags,
                    target,
                    lladdr,
                } => {
                    let b = p.buffer.as_mut();
                    b[field::ND_TARGET].copy_from_slice(&target);
                    if let Some(mac) = lladdr {
                        let at = field::ND_TARGET.end;
                        b[at] = TARGET_LLADDR;
                        b[at + 1] = (LLADDR_OPTION_LEN / 8) as u8;
                        b[at + 2..at + LLADDR_OPTION_LEN].copy_from_slice(&mac);
                    }
                    (NEIGHBOR_ADVERT, 0, [flags, 0, 0, 0])
                }
                Repr::Other { msg_type, code } => (msg_type, code, p.rest()),
            };
            Header {
                msg_type,
                code,
                rest,
            }
            .emit(p, pseudo);
        }
    }
}

/// The 8-byte header both families' messages are written through.
struct Header {
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
}

impl Header {
    fn echo(ident: u16, seq: u16) -> [u8; 4] {
        let (i, s) = (ident.to_be_bytes(), seq.to_be_bytes());
        [i[0], i[1], s[0], s[1]]
    }

    fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, pseudo: u32) {
        p.set_msg_type(self.msg_type);
        p.set_code(self.code);
        p.set_rest(self.rest);
        p.fill_checksum(pseudo);
    }
}

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// Echo identifier and sequence; the unused/pointer/MTU word of errors; the flags
    /// of a neighbour advertisement.
    pub const REST: Range<usize> = 4..8;
    pub const HEADER: usize = 8;
    /// The target address of a neighbour solicitation or advertisement.
    pub const ND_TARGET: Range<usize> = 8..24;
}

view!(
    /// A view of an ICMPv4 or ICMPv6 message; the buffer ends where the IP payload ends.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// The 8-byte header fits.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < field::HEADER {
            return Err(Malformed);
        }
        Ok(())
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The second 32-bit word (echo id and sequence, error fields, ND flags).
    pub fn rest(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::REST]
            .try_into()
            .unwrap_or_default()
    }

    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::REST.start)
    }

    pub fn echo_seq(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::REST.start + 2)
    }

    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER..]
    }

    /// The target address of a neighbour solicitation or advertisement, if the message
    /// is one and is long enough to hold it.
    pub fn nd_target(&self) -> Option<[u8; 16]> {
        let t = self.msg_type();
        if t != v6::NEIGHBOR_SOLICIT && t != v6::NEIGHBOR_ADVERT {
            return None;
        }
        self.buffer.as_ref().get(field::ND_TARGET)?.try_into().ok()
    }

    /// Whether the checksum is right; `pseudo` is 0 for ICMPv4 and the IPv6
    /// pseudo-header sum for ICMPv6.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::fold(checksum::sum(pseudo, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    pub fn set_rest(&mut self, rest: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&rest);
    }

    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::HEADER..]
    }

    /// Computes and stores the checksum (`pseudo` as in [`Packet::verify_checksum`]).
    pub fn fill_checksum(&mut self, pseudo: u32) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, 0);
        let c = checksum::checksum(pseudo, self.buffer.as_ref());
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ICMPv4 echo request, id 0x1234, seq 1, payload "hi", as `ping` sends it.
    const ECHO: [u8; 10] = [8, 0, 0x7d, 0x61, 0x12, 0x34, 0x00, 0x01, b'h', b'i'];

    #[test]
    fn deconstruct_echo() {
        let p = Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq()),
            (v4::ECHO_REQUEST, 0, 0x1234, 1)
        );
        assert_eq!(p.body(), b"hi");
        assert!(p.verify_checksum(0));
        assert_eq!(p.nd_target(), None);
    }

    #[test]
    fn construct_echo_reply() {
        let mut b = ECHO;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(v4::ECHO_REPLY);
        p.fill_checksum(0);
        assert!(p.verify_checksum(0));
        assert_eq!(&b[..4], &[0, 0, 0x85, 0x61]);
    }

    #[test]
    fn neighbour_solicitation() {
        // Who has 2001:db8::1, from 2001:db8::2 (solicited-node multicast).
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let dst = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1];
        let target = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut b = vec![v6::NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
        b.extend(target);
        let pseudo = checksum::pseudo_ipv6(&src, &dst, 58, b.len() as u32);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(pseudo);
        assert!(p.verify_checksum(pseudo));
        assert_eq!(p.nd_target(), Some(target));
        assert_eq!(Packet::new_checked(&b[..20]).unwrap().nd_target(), None);
    }

    #[test]
    fn impossible_lengths() {
        assert!(Packet::new_checked(&ECHO[..7]).is_err());
        assert!(Packet::new_checked(&ECHO[..8]).unwrap().body().is_empty());
    }

    #[test]
    fn echo_and_error_reprs_round_trip() {
        let p = Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(
            v4::Repr::parse(&p),
            v4::Repr::EchoRequest {
                ident: 0x1234,
                seq: 1
            }
        );
        let mut b = ECHO;
        v4::Repr::EchoReply {
            ident: 0x1234,
            seq: 1,
        }
        .emit(&mut Packet::new_checked(&mut b[..]).unwrap());
        assert_eq!(&b[..4], &[0, 0, 0x85, 0x61], "as the golden echo reply");
        let mut e = [0u8; 8];
        let too_big = v4::Repr::DstUnreachable {
            code: 4,
            next_hop_mtu: 1400,
        };
        too_big.emit(&mut Packet::new_unchecked(&mut e[..]));
        assert_eq!(e, [3, 4, 0xf7, 0x83, 0, 0, 0x05, 0x78]);
        assert_eq!(
            v4::Repr::parse(&Packet::new_checked(&e[..]).unwrap()),
            too_big
        );
        assert!(v4::is_error(3) && !v4::is_error(8) && !v4::is_error(14));
        assert!(v6::is_error(2) && !v6::is_error(128));
    }

    #[test]
    fn neighbour_advertisement_repr() {
        let src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let na = v6::Repr::NeighborAdvert {
            flags: v6::na_flags::ROUTER | v6::na_flags::SOLICITED,
            target: src,
            lladdr: Some([2, 0, 0, 0, 0, 1]),
        };
        assert_eq!(na.header_len(), 32);
        let mut b = [0u8; 32];
        let pseudo = checksum::pseudo_ipv6(&src, &dst, 58, 32);
        na.emit(&mut Packet::new_unchecked(&mut b[..]), pseudo);
        assert_eq!(&b[..2], &[136, 0]);
        assert_eq!(&b[4..8], &[0xc0, 0, 0, 0]);
        assert_eq!(&b[24..32], &[2, 1, 2, 0, 0, 0, 0, 1]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(pseudo));
        assert_eq!(
            v6::Repr::parse(&p),
            Ok(v6::Repr::NeighborAdvert {
                flags: 0xc0,
                target: src,
                lladdr: None
            })
        );
        assert_eq!(
            v6::Repr::parse(&Packet::new_checked(&b[..20]).unwrap()),
            Err(Malformed),
            "too short for its target"
        );
    }
}
