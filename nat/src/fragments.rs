//! The later fragments of translated IPv4 and IPv6 datagrams.
//!
//! Only a datagram's first fragment carries the ports its flow is found by; the
//! others carry the IP header alone. When a first fragment is translated, the
//! translation of its addresses is kept here under the datagram's identity (source,
//! destination, protocol and identification: what RFC 791 reassembly matches
//! fragments by, and how Cilium tracks them), and each later fragment with that
//! identity gets the same addresses, so all of them reach the same backend and its
//! reassembly. IPv6 datagrams are identified by source, destination and the Fragment
//! header's identification (RFC 8200 4.5). A later fragment seen before its first one is not found (the caller
//! counts it).
//!
//! The table is the connection tracking one ([`crate::conntrack::table`]): fixed
//! memory, shared by every worker, no lock; entries live [`TIMEOUT`] seconds (Linux's
//! `ipfrag_time`), a full window evicts its stalest.

use crate::conntrack::table::{Inserted, Table};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Seconds a datagram's translation is kept after its first fragment (Linux's
/// `net.ipv4.ipfrag_time`).
pub const TIMEOUT: u32 = 30;

/// A datagram's identity: what every one of its fragments carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Datagram {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ident: u16,
}

/// What a datagram's fragments become, and whose they are (for the service's
/// counters); of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation<A = Ipv4Addr> {
    pub src: A,
    pub dst: A,
    /// The service port ([`crate::frontend::port_id`]; 0: not a service's, as pod
    /// egress).
    pub service: u32,
    pub backend: A,
    pub backend_port: u16,
}

/// An IPv6 datagram's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Datagram6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub ident: u32,
}

/// What an IPv6 datagram's fragments become.
pub type Translation6 = Translation<Ipv6Addr>;

/// The translations of datagrams whose first fragment went through.
#[derive(Debug)]
pub struct Fragments {
    table: Table<2, 3>,
    table6: Table<5, 8>,
}

fn words(a: Ipv6Addr) -> [u64; 2] {
    let v = u128::from(a);
    [(v >> 64) as u64, v as u64]
}

fn addr(hi: u64, lo: u64) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(hi) << 64 | u128::from(lo))
}

fn key6(d: &Datagram6) -> [u64; 5] {
    let (s, t) = (words(d.src), words(d.dst));
    [s[0], s[1], t[0], t[1], 1 << 63 | u64::from(d.ident)]
}

fn key(d: &Datagram) -> [u64; 2] {
    [
        u64::from(u32::from(d.src)) << 32 | u64::from(u32::from(d.dst)),
        // The top bit keeps the word apart from a free slot's zeros.
        1 << 63 | u64::from(d.protocol) << 16 | u64::from(d.ident),
    ]
}

impl Fragments {
    /// A table of at least `entries` datagrams (0: the smallest table).
    pub fn new(entries: usize) -> Fragments {
        Fragments {
            table: Table::new(entries),
            table6: Table::new(entries),
        }
    }

    /// Datagrams of each family it holds at most.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn memory(&self) -> usize {
        self.table.memory() + self.table6.memory()
    }

    /// Evictions (a full window) and inserts refused (every slot being written), of
    /// the IPv4 and the IPv6 table.
    pub fn counters(&self) -> [&crate::conntrack::table::Counters; 2] {
        [&self.table.counters, &self.table6.counters]
    }

    /// Keeps `t` for the later fragments of `d`, from second `now`.
    pub fn put(&self, d: &Datagram, t: &Translation, now: u32) -> Inserted {
        let value = [
            u64::from(u32::from(t.src)) << 32 | u64::from(u32::from(t.dst)),
            u64::from(u32::from(t.backend)) << 32 | u64::from(t.backend_port),
            u64::from(t.service) << 32 | u64::from(now.saturating_add(TIMEOUT)),
        ];
        self.table.insert(&key(d), value, now, true)
    }

    /// The translation of `d`'s fragments at second `now`.
    pub fn get(&self, d: &Datagram, now: u32) -> Option<Translation> {
        let v = self.table.get(&key(d), now)?;
        Some(Translation {
            src: Ipv4Addr::from((v[0] >> 32) as u32),
            dst: Ipv4Addr::from(v[0] as u32),
            backend: Ipv4Addr::from((v[1] >> 32) as u32),
            backend_port: v[1] as u16,
            service: (v[2] >> 32) as u32,
        })
    }

    /// Keeps `t` for the later fragments of IPv6 datagram `d`, from second `now`.
    pub fn put6(&self, d: &Datagram6, t: &Translation6, now: u32) -> Inserted {
        let (s, x, b) = (words(t.src), words(t.dst), words(t.backend));
        let value = [
            s[0],
            s[1],
            x[0],
            x[1],
            b[0],
            b[1],
            u64::from(t.backend_port),
            u64::from(t.service) << 32 | u64::from(now.saturating_add(TIMEOUT)),
        ];
        self.table6.insert(&key6(d), value, now, true)
    }

    /// The translation of IPv6 datagram `d`'s fragments at second `now`.
    pub fn get6(&self, d: &Datagram6, now: u32) -> Option<Translation6> {
        let v = self.table6.get(&key6(d), now)?;
        Some(Translation6 {
            src: addr(v[0], v[1]),
            dst: addr(v[2], v[3]),
            backend: addr(v[4], v[5]),
            backend_port: v[6] as u16,
            service: (v[7] >> 32) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn datagram(n: u32) -> Datagram {
        Datagram {
            src: Ipv4Addr::from(0x0af4_0000 | (n % 7)),
            dst: Ipv4Addr::from(0x0a60_0000 | (n % 5)),
            protocol: if n % 2 == 0 { 17 } else { 6 },
            ident: (n / 70) as u16,
        }
    }

    fn translation(n: u32) -> Translation {
        Translation {
            src: Ipv4Addr::from(n),
            dst: Ipv4Addr::from(!n),
            service: n.rotate_left(9),
            backend: Ipv4Addr::from(n ^ 0x5555_5555),
            backend_port: n as u16,
        }
    }

    proptest! {
        /// Against a map with expiry, in a table large enough never to be full.
        #[test]
        fn matches_a_map_with_expiry(
            ops in proptest::collection::vec((0u32..2000, any::<bool>(), 0u32..12), 1..400)
        ) {
            let f = Fragments::new(1 << 14);
            let mut reference: HashMap<Datagram, (Translation, u32)> = HashMap::new();
            let mut now = 1;
            for (n, put, tick) in ops {
                let d = datagram(n);
                if put {
                    let t = translation(n.wrapping_add(now));
                    prop_assert_eq!(f.put(&d, &t, now), Inserted::Stored);
                    reference.insert(d, (t, now + TIMEOUT));
                } else {
                    let want = reference
                        .get(&d)
                        .filter(|(_, until)| *until > now)
                        .map(|(t, _)| *t);
                    prop_assert_eq!(f.get(&d, now), want);
                }
                now += tick;
            }
        }
    }

    fn datagram6(n: u32) -> Datagram6 {
        Datagram6 {
            src: Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(n % 7)),
            dst: Ipv6Addr::from(0xfd96_u128 << 112 | u128::from(n % 5) << 64),
            ident: n / 35,
        }
    }

    fn translation6(n: u32) -> Translation6 {
        let w = |x: u32| Ipv6Addr::from(u128::from(x) << 96 | u128::from(!x));
        Translation6 {
            src: w(n),
            dst: w(!n),
            service: n.rotate_left(9),
            backend: w(n ^ 0x5555_5555),
            backend_port: n as u16,
        }
    }

    proptest! {
        /// The IPv6 table against the same reference.
        #[test]
        fn v6_matches_a_map_with_expiry(
            ops in proptest::collection::vec((0u32..2000, any::<bool>(), 0u32..12), 1..400)
        ) {
            let f = Fragments::new(1 << 14);
            let mut reference: HashMap<Datagram6, (Translation6, u32)> = HashMap::new();
            let mut now = 1;
            for (n, put, tick) in ops {
                let d = datagram6(n);
                if put {
                    let t = translation6(n.wrapping_add(now));
                    prop_assert_eq!(f.put6(&d, &t, now), Inserted::Stored);
                    reference.insert(d, (t, now + TIMEOUT));
                } else {
                    let want = reference
                        .get(&d)
                        .filter(|(_, until)| *until > now)
                        .map(|(t, _)| *t);
                    prop_assert_eq!(f.get6(&d, now), want);
                }
                now += tick;
            }
        }
    }

    #[test]
    fn identities_differ_by_every_field_and_entries_expire() {
        let f = Fragments::new(64);
        let d = Datagram {
            src: Ipv4Addr::new(10, 244, 1, 2),
            dst: Ipv4Addr::new(10, 96, 0, 10),
            protocol: 17,
            ident: 7,
        };
        let t = translation(42);
        f.put(&d, &t, 100);
        assert_eq!(f.get(&d, 100 + TIMEOUT - 1), Some(t));
        assert_eq!(f.get(&d, 100 + TIMEOUT), None, "expired");
        for other in [
            Datagram { ident: 8, ..d },
            Datagram { protocol: 6, ..d },
            Datagram {
                src: Ipv4Addr::new(10, 244, 1, 3),
                ..d
            },
            Datagram {
                dst: Ipv4Addr::new(10, 96, 0, 11),
                ..d
            },
        ] {
            assert_eq!(f.get(&other, 101), None, "{other:?}");
        }
    }
}
