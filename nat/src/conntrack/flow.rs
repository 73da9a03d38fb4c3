//! Flows as the table stores them: a tuple as its key, a translation as its value,
//! each packed into as few words as its family allows (IPv4: a key of 2 words and a
//! value of 4; IPv6: 5 and 7), and the table of both families.
//!
//! A flow through a service is two entries: the client's direction keyed by (client,
//! VIP) says "rewrite the destination to the backend (and the source to the node, with
//! SNAT)"; the reply direction keyed by (backend, client or node) says "rewrite the
//! source back to the VIP (and the destination to the client)". Both carry the flow's
//! state and its service, and are written together.

use super::table::{Fate as TableFate, Inserted, Table};
use super::window::Window;

/// What a sweep does with a flow entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate<N> {
    Keep,
    Free,
    /// Keep the key with this translation.
    Replace(N),
}
use std::net::{Ipv4Addr, Ipv6Addr};

/// Which way an entry's packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client, as the flow began.
    Original,
    /// Back to the client.
    Reply,
}

/// A flow's tuple as a packet carries it (for ICMP echo, both ports are the
/// identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple<A> {
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
}

impl<A: Copy> Tuple<A> {
    /// The tuple of the packets going the other way.
    pub fn reversed(&self) -> Tuple<A> {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            protocol: self.protocol,
        }
    }
}

/// What a worker does to a packet of a tracked flow: rewrite its addresses and ports
/// to these (those it keeps are given as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nat<A> {
    pub src: A,
    pub sport: u16,
    pub dst: A,
    pub dport: u16,
    pub direction: Direction,
    /// The TCP state ([`super::tcp::State`] as a byte), or for UDP 1 once replied.
    pub state: u8,
    /// [`flags`].
    pub flags: u8,
    /// The service's id, for its counters.
    pub service: u32,
    /// The second the entry expires at; never 0 for a live entry.
    pub expires: u32,
    /// A TCP flow's sequence window, both sides' (the same in both entries); checked
    /// with [`flags::WINDOW`] only.
    pub window: Window,
}

/// Flags of an entry.
pub mod flags {
    /// The backend was removed: UDP entries are deleted, a TCP flow's next packet is
    /// answered with a RST.
    pub const BACKEND_GONE: u8 = 0x01;
    /// The source was translated to the node (NodePort and LoadBalancer with the
    /// Cluster policy).
    pub const SNAT: u8 = 0x02;
    /// A TCP flow first seen mid-stream (an ACK opened it) whose other side has not
    /// answered yet: it lives no longer than an unanswered SYN
    /// ([`crate::conntrack::tcp::Timeouts::tracked`]).
    pub const PICKED_UP: u8 = 0x04;
    /// A TCP flow's first FIN came from the reply side (the backend or server), not
    /// the client ([`crate::conntrack::tcp::next`]'s closer).
    pub const FIN_BY_REPLY: u8 = 0x08;
    /// Both SYNs were seen: the flow's segments are checked against its
    /// [`super::Nat::window`] ([`crate::conntrack::window`]).
    pub const WINDOW: u8 = 0x10;
    /// The client's SYN was seen and its side of the window recorded (the server's
    /// SYN-ACK completes it: [`WINDOW`]).
    pub const SYN_SEEN: u8 = 0x20;
}

fn meta(n: &Nat<impl Copy>) -> u64 {
    (u64::from(n.dport) << 48)
        | (u64::from(n.sport) << 32)
        | (u64::from(n.direction == Direction::Reply) << 24)
        | (u64::from(n.state) << 16)
        | (u64::from(n.flags) << 8)
        | (u64::from(n.window.scale[0] & 0xf) << 4)
        | u64::from(n.window.scale[1] & 0xf)
}

fn window_word(n: &Nat<impl Copy>) -> u64 {
    (u64::from(n.window.end[0]) << 32) | u64::from(n.window.end[1])
}

fn tail(n: &Nat<impl Copy>) -> u64 {
    (u64::from(n.service) << 32) | u64::from(n.expires)
}

fn unpack<A>(src: A, dst: A, meta: u64, window: u64, tail: u64) -> Nat<A> {
    Nat {
        src,
        dst,
        dport: (meta >> 48) as u16,
        sport: (meta >> 32) as u16,
        direction: if (meta >> 24) & 1 == 1 {
            Direction::Reply
        } else {
            Direction::Original
        },
        state: (meta >> 16) as u8,
        flags: (meta >> 8) as u8,
        service: (tail >> 32) as u32,
        expires: tail as u32,
        window: Window {
            end: [(window >> 32) as u32, window as u32],
            scale: [((meta >> 4) & 0xf) as u8, (meta & 0xf) as u8],
        },
    }
}

fn ports(t: &Tuple<impl Copy>) -> u64 {
    (u64::from(t.sport) << 32) | (u64::from(t.dport) << 16) | u64::from(t.protocol)
}

/// The other direction's entry of a flow whose packets with tuple `t` become `n`: the
/// tuple the translated packet's answer carries, and what it becomes.
pub fn counterpart<A: Copy>(t: &Tuple<A>, n: &Nat<A>) -> (Tuple<A>, Nat<A>) {
    let key = Tuple {
        src: n.src,
        dst: n.dst,
        sport: n.sport,
        dport: n.dport,
        protocol: t.protocol,
    }
    .reversed();
    let value = Nat {
        src: t.dst,
        sport: t.dport,
        dst: t.src,
        dport: t.sport,
        direction: match n.direction {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        },
        ..*n
    };
    (key, value)
}

/// The packing of one address family.
pub trait Family: Copy {
    type Key;
    type Value;
    fn key(t: &Tuple<Self>) -> Self::Key;
    fn tuple(k: &Self::Key) -> Tuple<Self>;
    fn value(n: &Nat<Self>) -> Self::Value;
    fn nat(v: &Self::Value) -> Nat<Self>;
}

fn unports<A>(src: A, dst: A, w: u64) -> Tuple<A> {
    Tuple {
        src,
        dst,
        sport: (w >> 32) as u16,
        dport: (w >> 16) as u16,
        protocol: w as u8,
    }
}

impl Family for Ipv4Addr {
    type Key = [u64; 2];
    type Value = [u64; 4];
    fn key(t: &Tuple<Ipv4Addr>) -> [u64; 2] {
        [
            (u64::from(u32::from(t.src)) << 32) | u64::from(u32::from(t.dst)),
            ports(t),
        ]
    }
    fn tuple(k: &[u64; 2]) -> Tuple<Ipv4Addr> {
        unports(
            Ipv4Addr::from((k[0] >> 32) as u32),
            Ipv4Addr::from(k[0] as u32),
            k[1],
        )
    }
    fn value(n: &Nat<Ipv4Addr>) -> [u64; 4] {
        [
            (u64::from(u32::from(n.dst)) << 32) | u64::from(u32::from(n.src)),
            meta(n),
            window_word(n),
            tail(n),
        ]
    }
    fn nat(v: &[u64; 4]) -> Nat<Ipv4Addr> {
        let dst = Ipv4Addr::from((v[0] >> 32) as u32);
        let src = Ipv4Addr::from(v[0] as u32);
        unpack(src, dst, v[1], v[2], v[3])
    }
}

fn split(a: Ipv6Addr) -> [u64; 2] {
    let x = u128::from(a);
    [(x >> 64) as u64, x as u64]
}

fn join(hi: u64, lo: u64) -> Ipv6Addr {
    Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo))
}

impl Family for Ipv6Addr {
    type Key = [u64; 5];
    type Value = [u64; 7];
    fn key(t: &Tuple<Ipv6Addr>) -> [u64; 5] {
        let (s, d) = (split(t.src), split(t.dst));
        [s[0], s[1], d[0], d[1], ports(t)]
    }
    fn tuple(k: &[u64; 5]) -> Tuple<Ipv6Addr> {
        unports(join(k[0], k[1]), join(k[2], k[3]), k[4])
    }
    fn value(n: &Nat<Ipv6Addr>) -> [u64; 7] {
        let (d, s) = (split(n.dst), split(n.src));
        [d[0], d[1], s[0], s[1], meta(n), window_word(n), tail(n)]
    }
    fn nat(v: &[u64; 7]) -> Nat<Ipv6Addr> {
        unpack(join(v[2], v[3]), join(v[0], v[1]), v[4], v[5], v[6])
    }
}

/// Lookups a batch call takes at once.
pub const BATCH: usize = 64;

/// [`Conntrack::put4`]'s work for one family's table: the insert, and on an eviction the
/// evicted flow's other entry (if it still is its partner); a flow that evicted its own
/// other direction is refused (the caller removes both).
macro_rules! store {
    ($table:expr, $family:ty, $t:expr, $n:expr, $now:expr, $replace:expr) => {{
        let mut evicted = None;
        let r = $table.insert_reporting(
            &<$family>::key($t),
            <$family>::value($n),
            $now,
            $replace,
            &mut evicted,
        );
        if let Some(e) = evicted {
            let gone = <$family>::tuple(&e.key);
            let (other, _) = counterpart(&gone, &<$family>::nat(&e.value));
            if other == *$t {
                return Inserted::Refused;
            }
            // Only if that entry is still the evicted one's partner (its key may
            // belong to a newer flow by now).
            let partner = $table
                .get(&<$family>::key(&other), $now)
                .map(|v| counterpart(&other, &<$family>::nat(&v)).0);
            if partner == Some(gone) {
                $table.remove(&<$family>::key(&other), $now);
            }
        }
        r
    }};
}

/// The flows of both families.
#[derive(Debug)]
pub struct Conntrack {
    pub v4: Table<2, 4>,
    pub v6: Table<5, 7>,
}

impl Conntrack {
    /// Tables of `v4` and `v6` entries (each flow takes two).
    pub fn new(v4: usize, v6: usize) -> Conntrack {
        Conntrack {
            v4: Table::new(v4),
            v6: Table::new(v6),
        }
    }

    pub fn memory(&self) -> usize {
        self.v4.memory() + self.v6.memory()
    }

    pub fn get4(&self, t: &Tuple<Ipv4Addr>, now: u32) -> Option<Nat<Ipv4Addr>> {
        self.v4
            .get(&Ipv4Addr::key(t), now)
            .map(|v| Ipv4Addr::nat(&v))
    }

    pub fn get6(&self, t: &Tuple<Ipv6Addr>, now: u32) -> Option<Nat<Ipv6Addr>> {
        self.v6
            .get(&Ipv6Addr::key(t), now)
            .map(|v| Ipv6Addr::nat(&v))
    }

    /// Brings `t`'s entry toward the cache without waiting for it (a batch's lookups
    /// overlap their misses this way: prefetch them all, then look each up).
    #[inline]
    pub fn prefetch4(&self, t: &Tuple<Ipv4Addr>) {
        self.v4.prefetch(&Ipv4Addr::key(t));
    }

    /// [`Conntrack::prefetch4`] for an IPv6 flow.
    #[inline]
    pub fn prefetch6(&self, t: &Tuple<Ipv6Addr>) {
        self.v6.prefetch(&Ipv6Addr::key(t));
    }

    /// Looks up to [`BATCH`] tuples at once (their cache misses overlap); `out[i]` is
    /// `t[i]`'s entry. Longer slices are taken [`BATCH`] at a time.
    pub fn get4_batch(&self, t: &[Tuple<Ipv4Addr>], now: u32, out: &mut [Option<Nat<Ipv4Addr>>]) {
        let mut keys = [[0u64; 2]; BATCH];
        let mut values = [None; BATCH];
        for (t, out) in t.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            for (k, t) in keys.iter_mut().zip(t) {
                *k = Ipv4Addr::key(t);
            }
            let n = t.len().min(out.len());
            self.v4.get_batch(&keys[..n], now, &mut values[..n]);
            for (o, v) in out.iter_mut().zip(&values[..n]) {
                *o = v.as_ref().map(Ipv4Addr::nat);
            }
        }
    }

    /// From the control thread: over slots `from..from + count` of the IPv4 table,
    /// `fate` decides each live flow entry's (its tuple and translation): kept, freed,
    /// or rewritten (`Some` translation); expired ones are freed. Returns the live
    /// entries left.
    pub fn sweep4(
        &self,
        from: usize,
        count: usize,
        now: u32,
        mut fate: impl FnMut(&Tuple<Ipv4Addr>, &Nat<Ipv4Addr>) -> Fate<Nat<Ipv4Addr>>,
    ) -> usize {
        self.v4.sweep_with(from, count, now, |e| {
            match fate(&Ipv4Addr::tuple(&e.key), &Ipv4Addr::nat(&e.value)) {
                Fate::Keep => TableFate::Keep,
                Fate::Free => TableFate::Free,
                Fate::Replace(n) => TableFate::Replace(Ipv4Addr::value(&n)),
            }
        })
    }

    /// As [`Conntrack::sweep4`], for IPv6.
    pub fn sweep6(
        &self,
        from: usize,
        count: usize,
        now: u32,
        mut fate: impl FnMut(&Tuple<Ipv6Addr>, &Nat<Ipv6Addr>) -> Fate<Nat<Ipv6Addr>>,
    ) -> usize {
        self.v6.sweep_with(from, count, now, |e| {
            match fate(&Ipv6Addr::tuple(&e.key), &Ipv6Addr::nat(&e.value)) {
                Fate::Keep => TableFate::Keep,
                Fate::Free => TableFate::Free,
                Fate::Replace(n) => TableFate::Replace(Ipv6Addr::value(&n)),
            }
        })
    }

    /// Removes the entry for packets with tuple `t`; `true` if there was a live one.
    pub fn remove4(&self, t: &Tuple<Ipv4Addr>, now: u32) -> bool {
        self.v4.remove(&Ipv4Addr::key(t), now)
    }

    pub fn remove6(&self, t: &Tuple<Ipv6Addr>, now: u32) -> bool {
        self.v6.remove(&Ipv6Addr::key(t), now)
    }

    /// Stores an entry for packets with tuple `t`. A live entry evicted to make room
    /// (the table full) takes its flow's other direction with it: half a flow would
    /// keep translating one way while its reply tuple (a SNAT port) looked free to
    /// the next flow.
    pub fn put4(&self, t: &Tuple<Ipv4Addr>, n: &Nat<Ipv4Addr>, now: u32) -> Inserted {
        self.store4(t, n, now, true)
    }

    pub fn put6(&self, t: &Tuple<Ipv6Addr>, n: &Nat<Ipv6Addr>, now: u32) -> Inserted {
        self.store6(t, n, now, true)
    }

    /// As [`Conntrack::put4`], only where `t` has no live entry ([`Inserted::Exists`]).
    pub fn put4_new(&self, t: &Tuple<Ipv4Addr>, n: &Nat<Ipv4Addr>, now: u32) -> Inserted {
        self.store4(t, n, now, false)
    }

    /// As [`Conntrack::put6`], only where `t` has no live entry ([`Inserted::Exists`]).
    pub fn put6_new(&self, t: &Tuple<Ipv6Addr>, n: &Nat<Ipv6Addr>, now: u32) -> Inserted {
        self.store6(t, n, now, false)
    }

    fn store4(&self, t: &Tuple<Ipv4Addr>, n: &Nat<Ipv4Addr>, now: u32, replace: bool) -> Inserted {
        store!(self.v4, Ipv4Addr, t, n, now, replace)
    }

    fn store6(&self, t: &Tuple<Ipv6Addr>, n: &Nat<Ipv6Addr>, now: u32, replace: bool) -> Inserted {
        store!(self.v6, Ipv6Addr, t, n, now, replace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_evicted_entry_takes_its_flows_other_direction_with_it() {
        // A table far too small: every flow put in both directions, as the fastpath
        // stores them; whatever the evictions, no live entry is half a flow.
        let ct = Conntrack::new(64, 64);
        let a = |x: u32| Ipv4Addr::from(x);
        for i in 0..500u32 {
            let t = Tuple {
                src: a(0x0af4_0100 + i),
                dst: a(0x0a60_000a),
                sport: 1000 + i as u16,
                dport: 80,
                protocol: 6,
            };
            let n = Nat {
                src: a(0xc0a8_640b),
                sport: 61000 + i as u16,
                dst: a(0x0af4_0200 + i % 7),
                dport: 8080,
                direction: Direction::Original,
                state: 3,
                flags: flags::SNAT,
                service: 9,
                expires: 1000 + i,
                window: Default::default(),
            };
            let (k, v) = counterpart(&t, &n);
            ct.put4(&k, &v, 1);
            ct.put4(&t, &n, 1);
            let mut live = Vec::new();
            ct.sweep4(0, ct.v4.capacity(), 1, |t, n| {
                live.push((*t, *n));
                Fate::Keep
            });
            for (t, n) in &live {
                let (k, v) = counterpart(t, n);
                assert_eq!(
                    ct.get4(&k, 1),
                    Some(v),
                    "after flow {i}: {t:?} is half a flow"
                );
            }
        }
        assert!(
            ct.v4
                .counters
                .evictions
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
    }

    fn nat<A: Copy>(src: A, dst: A, x: (u16, u16, bool, u8, u8, u32, u32)) -> Nat<A> {
        Nat {
            src,
            sport: x.0,
            dst,
            dport: x.1,
            direction: if x.2 {
                Direction::Reply
            } else {
                Direction::Original
            },
            state: x.3,
            flags: x.4,
            service: x.5,
            expires: x.6,
            window: Window::default(),
        }
    }

    proptest! {
        /// Every field comes back as it went in, in both families.
        #[test]
        fn values_round_trip(
            a in any::<u32>(), b in any::<u32>(),
            c in any::<u128>(), d in any::<u128>(),
            x in (any::<u16>(), any::<u16>(), any::<bool>(), any::<u8>(), any::<u8>(), any::<u32>(), 1u32..),
            w in (any::<u32>(), any::<u32>(), 0u8..16, 0u8..16),
        ) {
            let window = Window { end: [w.0, w.1], scale: [w.2, w.3] };
            let n4 = Nat { window, ..nat(Ipv4Addr::from(a), Ipv4Addr::from(b), x) };
            prop_assert_eq!(Ipv4Addr::nat(&Ipv4Addr::value(&n4)), n4);
            let n6 = Nat { window, ..nat(Ipv6Addr::from(c), Ipv6Addr::from(d), x) };
            prop_assert_eq!(Ipv6Addr::nat(&Ipv6Addr::value(&n6)), n6);
        }

        /// Distinct tuples have distinct keys (the packing loses nothing), and a tuple
        /// reversed twice is itself.
        #[test]
        fn keys_are_injective(
            t in (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(), any::<u8>()),
            u in (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(), any::<u8>()),
        ) {
            let mk = |t: (u32, u32, u16, u16, u8)| Tuple {
                src: Ipv4Addr::from(t.0),
                dst: Ipv4Addr::from(t.1),
                sport: t.2,
                dport: t.3,
                protocol: t.4,
            };
            let (a, b) = (mk(t), mk(u));
            prop_assert_eq!(Ipv4Addr::key(&a) == Ipv4Addr::key(&b), a == b);
            prop_assert_eq!(Ipv4Addr::tuple(&Ipv4Addr::key(&a)), a);
            prop_assert_eq!(a.reversed().reversed(), a);
            let six = |t: Tuple<Ipv4Addr>| Tuple {
                src: t.src.to_ipv6_mapped(),
                dst: t.dst.to_ipv6_mapped(),
                sport: t.sport,
                dport: t.dport,
                protocol: t.protocol,
            };
            prop_assert_eq!(Ipv6Addr::key(&six(a)) == Ipv6Addr::key(&six(b)), a == b);
            prop_assert_eq!(Ipv6Addr::tuple(&Ipv6Addr::key(&six(a))), six(a));
        }
    }

    #[test]
    fn both_directions_of_a_flow_are_found() {
        let ct = Conntrack::new(1024, 1024);
        let client = Ipv4Addr::new(192, 168, 200, 10);
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let backend = Ipv4Addr::new(10, 244, 2, 2);
        let fwd = Tuple {
            src: client,
            dst: vip,
            sport: 40000,
            dport: 80,
            protocol: 6,
        };
        let out = Nat {
            src: client,
            sport: 40000,
            dst: backend,
            dport: 8080,
            direction: Direction::Original,
            state: 1,
            flags: 0,
            service: 7,
            expires: 100,
            window: Default::default(),
        };
        // The reply comes from the backend to the client.
        let reply = Tuple {
            src: backend,
            sport: 8080,
            dst: client,
            dport: 40000,
            protocol: 6,
        };
        let back = Nat {
            src: vip,
            sport: 80,
            dst: client,
            dport: 40000,
            direction: Direction::Reply,
            ..out
        };
        assert_eq!(ct.put4(&fwd, &out, 1), Inserted::Stored);
        assert_eq!(ct.put4(&reply, &back, 1), Inserted::Stored);
        assert_eq!(ct.get4(&fwd, 1), Some(out));
        assert_eq!(ct.get4(&reply, 1), Some(back));
        assert_eq!(ct.get4(&fwd.reversed(), 1), None, "not the reply's tuple");
        assert_eq!(ct.get4(&fwd, 100), None, "expired");
        let mut got = [None; 3];
        ct.get4_batch(&[fwd, fwd.reversed(), reply], 1, &mut got);
        assert_eq!(got, [Some(out), None, Some(back)]);
        assert!(ct.memory() > 0);
    }
}
