//! Sequence windows of TCP flows: which segments belong in a flow's sequence space.
//!
//! kube-proxy drops what Linux's conntrack calls INVALID, chief among that a segment
//! outside its flow's window (a spurious retransmission from long ago, a segment from
//! another connection's history, a blind RST or FIN): let through, such a segment can
//! close a flow's entry or move its state, and under Linux's NAT it even left
//! untranslated and reset the client's connection (Kubernetes issue 74839). xroute
//! drops them too, unless `--conntrack-tcp-be-liberal` (kube-proxy's flag) says not to.
//!
//! # The check, and why it needs no write per packet
//!
//! Linux (after Rooij, "Real Stateful TCP Packet Filtering in IP Filter") keeps, per
//! side, the highest sequence number sent and the largest window seen, and updates
//! them on every segment. A shared table cannot afford a write per packet, so xroute
//! keeps each side's highest sequence number sent (`end`) as of the entry's last
//! write, and bounds the other side's window by the largest it can advertise, 65,535
//! shifted by the window scale both SYNs negotiated (RFC 7323). A segment of side S
//! (sequence `seq`, length `len` counting SYN and FIN) is in the window when
//!
//! - `seq + len >= end(S) - W`: a side retransmits at most what the other has not
//!   acknowledged, which is at most the other's window `W` behind its highest;
//! - `seq <= end(S) + W + W / 2 + 65,535`: a side sends at most one window `W` past
//!   the other's acknowledgment, itself at most `end(S)`; the rest is slack for the
//!   stored `end` lagging behind.
//!
//! The stored `end` lags because it is written only when a segment takes it more than
//! `W / 4` past it ([`advanced`]); a write that two workers race (last one stands)
//! loses at most that, and the next segment writes it again. A lagging `end` only
//! loosens the first bound and is covered by the slack of the second, so a segment a
//! TCP peer sends within the flow as this node saw it is not dropped. Acknowledgment
//! numbers are not checked. The fastpath leaves some segments unchecked: a bare SYN
//! outside SYN_SENT (a client reconnecting on the ports of a flow it lost; Linux
//! ignores it too), answers to the handshake before it completes (a RST for a closed
//! port), and it stops checking a flow that sends fragmented segments (their length is
//! not all in the first fragment) or whose entry fails the check after ten seconds
//! without a write (the flow went through another node meanwhile, as ECMP may move it
//! and move it back: the window seen here is stale, and the flow is not cut off).
//!
//! Flows whose handshake was not seen (picked up mid-stream: an agent restart, the
//! fabric moving the flow to this node) are not checked, as Linux marks them
//! "liberal": their window scales are not known.

use super::tcp::Direction;

/// The largest window scale (RFC 7323 2.3: a larger one is taken as 14).
pub const MAX_SCALE: u8 = 14;
/// The scale of a side whose SYN carried no window scale option.
pub const NO_SCALE: u8 = 15;

/// The sequence state of a tracked TCP flow: each side's highest sequence number sent
/// (sequence plus length) as of the last write, and each side's window scale; index 0
/// is the client (the flow's original direction), 1 the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Window {
    pub end: [u32; 2],
    /// 0..=[`MAX_SCALE`], or [`NO_SCALE`] for a client's SYN without the option (until
    /// the server's SYN-ACK, which settles both).
    pub scale: [u8; 2],
}

fn side(d: Direction) -> usize {
    match d {
        Direction::Original => 0,
        Direction::Reply => 1,
    }
}

/// The largest window a side with this scale can advertise.
pub fn max_window(scale: u8) -> u32 {
    65_535u32 << scale.min(MAX_SCALE)
}

/// The window of a flow whose client's SYN has sequence `seq`, length `len` (the SYN
/// counted) and window scale option `wscale`.
pub fn syn(seq: u32, len: u32, wscale: Option<u8>) -> Window {
    Window {
        end: [seq.wrapping_add(len), 0],
        scale: [wscale.map_or(NO_SCALE, |s| s.min(MAX_SCALE)), 0],
    }
}

/// The server's SYN-ACK (`seq`, `len`, `wscale`) completes `w`: scaling holds only if
/// both SYNs offered it (RFC 7323 2.2), otherwise neither side scales.
pub fn syn_ack(w: &mut Window, seq: u32, len: u32, wscale: Option<u8>) {
    w.end[1] = seq.wrapping_add(len);
    match wscale {
        Some(s) if w.scale[0] != NO_SCALE => w.scale[1] = s.min(MAX_SCALE),
        _ => w.scale = [0, 0],
    }
}

/// The other side's largest window, which bounds what side `d` has in flight.
fn peer_window(w: &Window, d: Direction) -> u32 {
    max_window(w.scale[1 - side(d)])
}

/// Whether a segment of side `d` with sequence `seq` and length `len` (SYN and FIN
/// counted) is within the flow's window (the module's bounds).
pub fn acceptable(w: &Window, d: Direction, seq: u32, len: u32) -> bool {
    let end = w.end[side(d)];
    let win = u64::from(peer_window(w, d));
    // One unsigned offset from the lowest acceptable sequence number: the range is
    // wider than half the sequence space at scale 14, where comparisons "before" and
    // "after" would wrap.
    let lowest = end.wrapping_sub(win as u32).wrapping_sub(len);
    let span = win + u64::from(len) + win + win / 2 + 65_535;
    u64::from(seq.wrapping_sub(lowest)) <= span
}

/// The side's new `end` when an acceptable segment takes it more than a quarter of the
/// peer's window past the stored one (the entry is then written), else `None`.
pub fn advanced(w: &Window, d: Direction, seq: u32, len: u32) -> Option<u32> {
    let end = w.end[side(d)];
    let reach = seq.wrapping_add(len);
    let ahead = reach.wrapping_sub(end);
    (ahead as i32 > 0 && ahead > peer_window(w, d) / 4).then_some(reach)
}

/// Takes the other side's end from `theirs` (the other direction's entry) where it is
/// further on than `mine`'s: `original` says whether `mine` is the client's entry.
pub fn merge_other(mine: &mut Window, theirs: &Window, original: bool) {
    let other = usize::from(original);
    let (a, b) = (mine.end[other], theirs.end[other]);
    if (b.wrapping_sub(a) as i32) > 0 {
        mine.end[other] = b;
    }
}

/// Sets side `d`'s stored end.
pub fn set_end(w: &mut Window, d: Direction, end: u32) {
    w.end[side(d)] = end;
}

#[cfg(test)]
mod tests {
    use super::Direction::{Original as O, Reply as R};
    use super::*;
    use proptest::prelude::*;

    fn handshake(c: u32, s: u32, cs: Option<u8>, ss: Option<u8>) -> Window {
        let mut w = syn(c, 1, cs);
        syn_ack(&mut w, s, 1, ss);
        w
    }

    #[test]
    fn scaling_needs_both_syns() {
        assert_eq!(handshake(1, 2, Some(7), Some(9)).scale, [7, 9]);
        assert_eq!(handshake(1, 2, None, Some(9)).scale, [0, 0]);
        assert_eq!(handshake(1, 2, Some(7), None).scale, [0, 0]);
        assert_eq!(handshake(1, 2, Some(20), Some(15)).scale, [14, 14]);
        assert_eq!(handshake(1, 2, Some(7), Some(9)).end, [2, 3]);
    }

    #[test]
    fn far_behind_far_ahead_and_the_wrap() {
        let w = handshake(u32::MAX - 10, 1000, None, None);
        let end = w.end[0];
        assert_eq!(end, u32::MAX - 9);
        // Next data, a retransmission of the first bytes, a keepalive probe.
        assert!(acceptable(&w, O, end, 1448));
        assert!(acceptable(&w, O, end.wrapping_sub(60_000), 1448));
        assert!(acceptable(&w, O, end.wrapping_sub(1), 0));
        // Across the wrap of the sequence space.
        assert!(acceptable(&w, O, end.wrapping_add(20_000), 1448));
        // More than a window behind; far ahead; half the space away.
        assert!(!acceptable(&w, O, end.wrapping_sub(70_000), 1000));
        assert!(!acceptable(&w, O, end.wrapping_add(200_000), 10));
        assert!(!acceptable(&w, O, end.wrapping_add(1 << 31), 10));
        // The server's own space.
        assert!(acceptable(&w, R, 1001, 100));
        assert!(!acceptable(&w, R, 1001 + 300_000, 100));
    }

    #[test]
    fn a_scaled_window_allows_that_much_more() {
        let w = handshake(0, 0, Some(7), Some(7));
        let win = max_window(7);
        assert!(acceptable(&w, O, 1u32.wrapping_sub(win - 10), 0));
        assert!(acceptable(&w, O, 1 + win, 1448));
        assert!(!acceptable(&w, O, 1u32.wrapping_sub(win + 10), 0));
        assert!(!acceptable(&w, O, 1 + 2 * win, 1448));
    }

    #[test]
    fn the_stored_end_moves_a_quarter_window_at_a_time() {
        let w = handshake(0, 0, None, None);
        assert_eq!(advanced(&w, O, 1, 1448), None);
        assert_eq!(advanced(&w, O, 16_000, 1448), Some(17_448));
        assert_eq!(advanced(&w, O, 0, 0), None, "behind: never back");
    }

    /// A sender and its receiver as TCP has them (RFC 793): the receiver acknowledges
    /// some prefix of what arrived and advertises some window no larger than its
    /// scale allows; the sender sends new data within it, or retransmits from the
    /// acknowledged point, or probes. Every segment it may send must be acceptable,
    /// whatever the stored end lags (written only as `advanced` says, any write
    /// lost to a race).
    #[derive(Debug, Clone)]
    enum Act {
        /// New data: this many segments of this length, as far as the window allows.
        Send(u32, u16),
        /// The receiver acknowledges this share (per mille) of what it has, with this
        /// share of its largest window.
        Ack(u16, u16),
        /// A retransmission from the acknowledged point.
        Retransmit(u32),
        /// A keepalive probe (one below the next sequence number).
        Probe,
        /// The other direction's worker wrote the flow back with the end from before
        /// the last write (it raced that write, and its write stood): the last write
        /// is lost.
        StaleWrite,
    }

    fn act() -> impl Strategy<Value = Act> {
        prop_oneof![
            4 => (1u32..65_536, 1u16..64).prop_map(|(l, n)| Act::Send(l, n)),
            2 => (0u16..=1000, 0u16..=1000).prop_map(|(a, w)| Act::Ack(a, w)),
            1 => (1u32..9000).prop_map(Act::Retransmit),
            1 => Just(Act::Probe),
            1 => Just(Act::StaleWrite),
        ]
    }

    proptest! {
        #[test]
        fn what_a_tcp_peer_sends_is_never_dropped(
            isn in any::<u32>(),
            scale in proptest::option::of(0u8..=MAX_SCALE),
            acts in proptest::collection::vec(act(), 1..200),
        ) {
            let mut w = handshake(isn, 7, scale, scale);
            let max = max_window(w.scale[1]);
            // The sender's next sequence number, the receiver's acknowledged point and
            // its advertised window (the SYN-ACK's, unscaled, at most 65,535).
            let (mut next, mut una, mut wnd) = (isn.wrapping_add(1), isn.wrapping_add(1), 65_535u32);
            // The stored end before the last write, and the writes since a race last
            // undid one (a race needs the other side's write to land between this
            // side's read and write; the fastpath merges the other entry's end
            // before it writes, so races are rare: one in four writes at most here).
            let mut before = (w.end[0], 0u32);
            let check = |w: &mut Window, seq: u32, len: u32, before: &mut (u32, u32)| {
                prop_assert!(acceptable(w, O, seq, len), "{w:?} seq {seq} len {len}");
                if let Some(e) = advanced(w, O, seq, len) {
                    *before = (w.end[0], before.1 + 1);
                    set_end(w, O, e);
                }
                Ok(())
            };
            for a in acts {
                match a {
                    Act::Send(len, n) => {
                        for _ in 0..n {
                            // What the window leaves (none when it shrank below
                            // what was sent).
                            let room = una.wrapping_add(wnd).wrapping_sub(next);
                            let len = if room <= wnd { len.min(room) } else { 0 };
                            if len == 0 {
                                break;
                            }
                            check(&mut w, next, len, &mut before)?;
                            next = next.wrapping_add(len);
                        }
                    }
                    Act::Ack(share, win) => {
                        let sent = next.wrapping_sub(una);
                        una = una.wrapping_add((u64::from(sent) * u64::from(share) / 1000) as u32);
                        wnd = (u64::from(max) * u64::from(win) / 1000) as u32;
                    }
                    Act::Retransmit(len) => {
                        let len = len.min(next.wrapping_sub(una));
                        check(&mut w, una, len, &mut before)?;
                    }
                    Act::Probe => check(&mut w, next.wrapping_sub(1), 0, &mut before)?,
                    Act::StaleWrite if before.1 >= 4 => {
                        w.end[0] = before.0;
                        before.1 = 0;
                    }
                    Act::StaleWrite => {}
                }
            }
        }

        /// Against a plain reference: a segment is acceptable exactly when some
        /// integer distance from the side's end that its sequence number stands for
        /// (the offset, or the offset less 2^32) lies between a window and its length
        /// behind and one and a half windows and 65,535 ahead; every scale, every
        /// offset.
        #[test]
        fn the_bounds_against_integer_distances(
            isn in any::<u32>(),
            scale in 0u8..=MAX_SCALE,
            offset in any::<u32>(),
            len in 0u32..65_538,
        ) {
            let w = handshake(isn, 7, Some(scale), Some(scale));
            let win = i64::from(max_window(scale));
            let end = w.end[0];
            let seq = end.wrapping_add(offset);
            let within = [i64::from(offset), i64::from(offset) - (1i64 << 32)]
                .iter()
                .any(|&d| d >= -win - i64::from(len) && d <= win + win / 2 + 65_535);
            prop_assert_eq!(acceptable(&w, O, seq, len), within, "{:?} seq {} len {}", w, seq, len);
        }
    }
}
