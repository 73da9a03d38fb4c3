//! Per-core counters: written by one worker, read by the stats endpoint on another
//! thread, without locks and without stalling the worker.
//!
//! Each worker owns one [`CoreCounters`], cache-line aligned so that two workers never
//! share a line. The worker counts a batch in a plain [`Tally`] on its stack and
//! publishes it once per batch ([`CoreCounters::publish`]): one relaxed load and store
//! per counter that changed, no locked instruction, because there is a single writer.
//! Readers load each counter with `Relaxed`: they see every counter's latest published
//! value soon, never a torn one, and nothing orders counters among themselves (a
//! scrape may see a batch's rx before its tx), which is what a rate graph needs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame was dropped. Every drop has one; each indexes a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// A header failed its length check.
    Malformed,
    /// No route to the destination (an ICMP unreachable went back where allowed).
    NoRoute,
    /// TTL or hop limit ran out (an ICMP time exceeded went back where allowed).
    TtlExpired,
    /// The next hop's MAC is not known yet.
    NoNeighbour,
    /// Larger than the egress MTU and not to be fragmented.
    TooBig,
    /// A fragment the fastpath does not handle: one to the gateway address, a first
    /// fragment to a service without its ports.
    Fragment,
    /// The egress ring had no room.
    TxRingFull,
    /// Neither IPv4, IPv6 nor ARP.
    UnknownEthertype,
    /// The punt path to the kernel had no room.
    PuntFull,
    /// Link-scoped traffic the fastpath neither answers nor routes: ARP and neighbour
    /// discovery not for the gateway, multicast, link-local destinations.
    LinkScope,
    /// The frame was for the kernel, but no host port is configured.
    NoHostPort,
    /// A source address no router forwards (RFC 1812 5.3.7, RFC 4291 2.5): 0/8, 127/8,
    /// multicast, class E, limited broadcast; IPv6 unspecified, loopback, multicast,
    /// link-local.
    MartianSource,
    /// A destination no router forwards: 0/8, 127/8; IPv6 unspecified and loopback.
    MartianDestination,
    /// A unicast frame for another MAC than the port's own (RFC 1812 5.3.4 asks a router
    /// to route only what the link layer addressed to it).
    OtherHost,
    /// A unicast IP packet in a link-layer broadcast or multicast frame: not forwarded,
    /// and no ICMP error (RFC 1812 5.3.4, 4.3.2.7).
    LinkBroadcast,
    /// From a pod port, a source MAC or address that is not the pod's (BCP 38).
    Spoofed,
    /// IPv4 options that refuse forwarding: source routing (refused as Linux refuses it
    /// by default), or malformed options (answered with a parameter problem).
    Options,
    /// An 802.1Q-tagged frame: the steering program passes those to the kernel, so one
    /// here came through a program that did not.
    Tagged,
    /// To a VIP, on a port or protocol no service has there (refused as a closed port).
    NoService,
    /// To a service with no endpoint at all: rejected as kube-proxy rejects it (TCP RST,
    /// ICMP port unreachable).
    NoEndpoints,
    /// To a service with endpoints, none usable here (a Local policy with no local
    /// endpoint): dropped, as kube-proxy drops it.
    NoLocalEndpoint,
    /// From a client outside a LoadBalancer's `loadBalancerSourceRanges`.
    SourceRange,
    /// A TCP segment that neither opens nor belongs to a tracked flow (a SYN-ACK or RST
    /// out of the blue): conntrack's "invalid", dropped as kube-proxy drops it.
    Invalid,
    /// A packet of a flow whose backend was removed: TCP answered with a RST.
    BackendGone,
    /// The connection tracking table refused the new flow (full).
    ConntrackFull,
    /// A flow to SNAT, but the node has no address of its family.
    NoSnatAddress,
    /// Every SNAT port tried for a new flow was taken.
    SnatPortsExhausted,
    /// A later fragment of a datagram to a service whose first fragment was not seen
    /// (out of order, or its translation expired): its backend is not known.
    FragmentUntracked,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 28] = [
        DropReason::Malformed,
        DropReason::NoRoute,
        DropReason::TtlExpired,
        DropReason::NoNeighbour,
        DropReason::TooBig,
        DropReason::Fragment,
        DropReason::TxRingFull,
        DropReason::UnknownEthertype,
        DropReason::PuntFull,
        DropReason::LinkScope,
        DropReason::NoHostPort,
        DropReason::MartianSource,
        DropReason::MartianDestination,
        DropReason::OtherHost,
        DropReason::LinkBroadcast,
        DropReason::Spoofed,
        DropReason::Options,
        DropReason::Tagged,
        DropReason::NoService,
        DropReason::NoEndpoints,
        DropReason::NoLocalEndpoint,
        DropReason::SourceRange,
        DropReason::Invalid,
        DropReason::BackendGone,
        DropReason::ConntrackFull,
        DropReason::NoSnatAddress,
        DropReason::SnatPortsExhausted,
        DropReason::FragmentUntracked,
    ];
    /// How many reasons there are.
    pub const COUNT: usize = Self::ALL.len();

    /// The reason as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoRoute => "no_route",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::TooBig => "too_big",
            DropReason::Fragment => "fragment",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::PuntFull => "punt_full",
            DropReason::LinkScope => "link_scope",
            DropReason::NoHostPort => "no_host_port",
            DropReason::MartianSource => "martian_source",
            DropReason::MartianDestination => "martian_destination",
            DropReason::OtherHost => "other_host",
            DropReason::LinkBroadcast => "link_broadcast",
            DropReason::Spoofed => "spoofed",
            DropReason::Options => "ip_options",
            DropReason::Tagged => "tagged",
            DropReason::NoService => "no_service",
            DropReason::NoEndpoints => "no_endpoints",
            DropReason::NoLocalEndpoint => "no_local_endpoint",
            DropReason::SourceRange => "source_range",
            DropReason::Invalid => "conntrack_invalid",
            DropReason::BackendGone => "backend_gone",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::NoSnatAddress => "no_snat_address",
            DropReason::SnatPortsExhausted => "snat_ports_exhausted",
            DropReason::FragmentUntracked => "fragment_untracked",
        }
    }
}

/// Batch-size histogram buckets: sizes 1, 2–3, 4–7, … 64 and more.
pub const BATCH_BUCKETS: usize = 7;

fn batch_bucket(size: usize) -> usize {
    (usize::BITS - size.max(1).leading_zeros() - 1).min(BATCH_BUCKETS as u32 - 1) as usize
}

/// Batch time buckets: log-linear, four per power of two of nanoseconds (within 19 %
/// of the true value), from 1 ns to over a minute; a reader turns them into quantiles.
pub const LATENCY_BUCKETS: usize = 160;

/// The bucket of a batch that took `ns` nanoseconds.
#[inline]
pub fn latency_bucket(ns: u64) -> usize {
    let ns = ns.max(1);
    let log = 63 - ns.leading_zeros() as usize;
    let sub = if log >= 2 {
        ((ns >> (log - 2)) & 3) as usize
    } else {
        0
    };
    (log * 4 + sub).min(LATENCY_BUCKETS - 1)
}

/// The smallest time in bucket `i`, in nanoseconds.
pub fn latency_bucket_floor(i: usize) -> u64 {
    let (log, sub) = (i / 4, (i % 4) as u64);
    if log >= 2 {
        (1u64 << log) + (sub << (log - 2))
    } else {
        1u64 << log
    }
}

/// What one worker counted in one batch (plain integers on the worker's stack).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames handed to the kernel through the host port.
    pub punts: u64,
    pub drops: [u64; DropReason::COUNT],
    /// Calls into the kernel to wake a ring (`need_wakeup`).
    pub kicks: u64,
    /// ARP replies, neighbour advertisements and echo replies the fastpath sent itself.
    pub replies: u64,
    /// ICMP errors sent (time exceeded, unreachable, too big, parameter problem).
    pub icmp_errors: u64,
    /// ICMP errors not sent because the worker's rate limit was spent.
    pub icmp_suppressed: u64,
    /// Fill ring wakeups (`need_wakeup` set on a fill ring).
    pub fill_kicks: u64,
    /// Transmit kicks the kernel refused with an error other than "try again".
    pub tx_errors: u64,
    /// Packets the service stage translated.
    pub nat_packets: u64,
    /// Flows it set up.
    pub nat_new_flows: u64,
    /// TCP RSTs it sent (rejects, gone backends).
    pub resets: u64,
    /// How long the batch took to decide, in nanoseconds (0: not measured).
    pub batch_ns: u64,
}

impl Tally {
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
}

/// The counters of one worker.
#[derive(Debug)]
#[repr(align(128))] // two cache lines: the adjacent-line prefetcher pairs them
pub struct CoreCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    punts: AtomicU64,
    kicks: AtomicU64,
    replies: AtomicU64,
    icmp_errors: AtomicU64,
    icmp_suppressed: AtomicU64,
    fill_kicks: AtomicU64,
    tx_errors: AtomicU64,
    nat_packets: AtomicU64,
    nat_new_flows: AtomicU64,
    resets: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
    batches: [AtomicU64; BATCH_BUCKETS],
    batch_ns: [AtomicU64; LATENCY_BUCKETS],
    /// The snapshot generation the worker last ran a batch against.
    generation: AtomicU64,
}

impl Default for CoreCounters {
    fn default() -> CoreCounters {
        CoreCounters {
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            punts: AtomicU64::new(0),
            kicks: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            icmp_errors: AtomicU64::new(0),
            icmp_suppressed: AtomicU64::new(0),
            fill_kicks: AtomicU64::new(0),
            tx_errors: AtomicU64::new(0),
            nat_packets: AtomicU64::new(0),
            nat_new_flows: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            batches: std::array::from_fn(|_| AtomicU64::new(0)),
            batch_ns: std::array::from_fn(|_| AtomicU64::new(0)),
            generation: AtomicU64::new(0),
        }
    }
}

/// A reader's copy of one worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub punts: u64,
    pub kicks: u64,
    pub replies: u64,
    pub icmp_errors: u64,
    pub icmp_suppressed: u64,
    pub fill_kicks: u64,
    pub tx_errors: u64,
    pub nat_packets: u64,
    pub nat_new_flows: u64,
    pub resets: u64,
    pub drops: [u64; DropReason::COUNT],
    pub batches: [u64; BATCH_BUCKETS],
    /// Batches by the time they took ([`latency_bucket`]).
    pub batch_ns: Vec<u64>,
    pub generation: u64,
}

/// Adds to a counter that only this thread writes: no locked instruction needed.
#[inline]
fn bump(c: &AtomicU64, by: u64) {
    if by != 0 {
        c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
    }
}

impl CoreCounters {
    /// Publishes one batch of `size` frames run against snapshot `generation` (0: no
    /// batch, only counts such as a fill ring wakeup). Only the owning worker may call
    /// this (one writer per counter set).
    #[inline]
    pub fn publish(&self, size: usize, generation: u64, t: &Tally) {
        bump(&self.rx_packets, t.rx_packets);
        bump(&self.rx_bytes, t.rx_bytes);
        bump(&self.tx_packets, t.tx_packets);
        bump(&self.tx_bytes, t.tx_bytes);
        bump(&self.punts, t.punts);
        bump(&self.kicks, t.kicks);
        bump(&self.replies, t.replies);
        bump(&self.icmp_errors, t.icmp_errors);
        bump(&self.icmp_suppressed, t.icmp_suppressed);
        bump(&self.fill_kicks, t.fill_kicks);
        bump(&self.tx_errors, t.tx_errors);
        bump(&self.nat_packets, t.nat_packets);
        bump(&self.nat_new_flows, t.nat_new_flows);
        bump(&self.resets, t.resets);
        for (c, &n) in self.drops.iter().zip(&t.drops) {
            bump(c, n);
        }
        if size > 0 {
            bump(&self.batches[batch_bucket(size)], 1);
        }
        if t.batch_ns > 0 {
            bump(&self.batch_ns[latency_bucket(t.batch_ns)], 1);
        }
        self.generation.store(generation, Relaxed);
    }

    /// The current values, from any thread.
    pub fn read(&self) -> CounterValues {
        CounterValues {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            punts: self.punts.load(Relaxed),
            kicks: self.kicks.load(Relaxed),
            replies: self.replies.load(Relaxed),
            icmp_errors: self.icmp_errors.load(Relaxed),
            icmp_suppressed: self.icmp_suppressed.load(Relaxed),
            fill_kicks: self.fill_kicks.load(Relaxed),
            tx_errors: self.tx_errors.load(Relaxed),
            nat_packets: self.nat_packets.load(Relaxed),
            nat_new_flows: self.nat_new_flows.load(Relaxed),
            resets: self.resets.load(Relaxed),
            drops: std::array::from_fn(|i| self.drops[i].load(Relaxed)),
            batches: std::array::from_fn(|i| self.batches[i].load(Relaxed)),
            batch_ns: self.batch_ns.iter().map(|c| c.load(Relaxed)).collect(),
            generation: self.generation.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn batch_buckets() {
        let got: Vec<usize> = [0, 1, 2, 3, 4, 7, 8, 31, 32, 63, 64, 1000]
            .iter()
            .map(|&s| batch_bucket(s))
            .collect();
        assert_eq!(got, [0, 0, 1, 1, 2, 2, 3, 4, 5, 5, 6, 6]);
    }

    #[test]
    fn latency_buckets_hold_their_values() {
        for ns in [1u64, 2, 3, 5, 100, 1000, 12_345, 1 << 30, u64::MAX] {
            let b = latency_bucket(ns);
            assert!(latency_bucket_floor(b) <= ns, "{ns} below its bucket {b}");
            // (Below 4 ns a power of two has fewer than four values to split.)
            if ns >= 4 && b + 1 < LATENCY_BUCKETS {
                assert!(
                    latency_bucket_floor(b + 1) > ns,
                    "{ns} above its bucket {b}"
                );
            }
        }
        let floors: Vec<u64> = (0..LATENCY_BUCKETS).map(latency_bucket_floor).collect();
        assert!(floors.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn reason_names_are_unique_and_in_order() {
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn a_reader_sees_a_writers_counts_without_locks() {
        let c = Arc::new(CoreCounters::default());
        let writer = {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                for g in 1..=10_000u64 {
                    let mut t = Tally {
                        rx_packets: 64,
                        rx_bytes: 64 * 60,
                        tx_packets: 63,
                        ..Tally::default()
                    };
                    t.drop(DropReason::NoRoute);
                    c.publish(64, g, &t);
                }
            })
        };
        // Values only grow while the writer runs.
        let mut last = CounterValues::default();
        for _ in 0..1000 {
            let now = c.read();
            assert!(now.rx_packets >= last.rx_packets && now.generation >= last.generation);
            last = now;
        }
        writer.join().unwrap();
        let v = c.read();
        assert_eq!(
            (v.rx_packets, v.rx_bytes, v.tx_packets),
            (640_000, 640_000 * 60, 630_000)
        );
        assert_eq!(v.drops[DropReason::NoRoute as usize], 10_000);
        assert_eq!((v.batches[6], v.generation), (10_000, 10_000));
    }
}
