//! TCP state tracking, as Linux's conntrack tracks it (simplified to the states whose
//! timeouts matter), and the timeouts of every state, with kube-proxy's settings.
//!
//! Only the flags are read here: the table must know when a flow is set up,
//! established, closing and gone, to keep or drop its entry at the right time.
//! Sequence numbers are [`super::window`]'s.

use std::time::Duration;

/// A flow's TCP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// The client's SYN was seen.
    SynSent = 1,
    /// The server's SYN-ACK was seen.
    SynRecv = 2,
    Established = 3,
    /// One side sent a FIN.
    FinWait = 4,
    /// The other side acknowledged the FIN; it may still send.
    CloseWait = 5,
    /// Both sides sent a FIN.
    LastAck = 6,
    TimeWait = 7,
    /// A RST was seen.
    Close = 8,
}

impl State {
    pub fn from_u8(v: u8) -> Option<State> {
        Some(match v {
            1 => State::SynSent,
            2 => State::SynRecv,
            3 => State::Established,
            4 => State::FinWait,
            5 => State::CloseWait,
            6 => State::LastAck,
            7 => State::TimeWait,
            8 => State::Close,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            State::SynSent => "SYN_SENT",
            State::SynRecv => "SYN_RECV",
            State::Established => "ESTABLISHED",
            State::FinWait => "FIN_WAIT",
            State::CloseWait => "CLOSE_WAIT",
            State::LastAck => "LAST_ACK",
            State::TimeWait => "TIME_WAIT",
            State::Close => "CLOSE",
        }
    }
}

/// TCP header flags.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Whether a segment's flags are a combination TCP sends (Linux's conntrack table of
/// valid flags: PSH, ECE and CWR aside, a SYN, a SYN-ACK, a RST with or without ACK,
/// an ACK, a FIN with ACK, URG only beside SYN alone or an ACK). Others (no flag,
/// SYN with FIN or RST, FIN without ACK: scans and crafted frames) are invalid and
/// dropped, as kube-proxy drops conntrack's INVALID.
pub fn valid_flags(f: u8) -> bool {
    use flags::*;
    matches!(
        f & !(PSH | ECE | CWR),
        SYN | 0x22 /* SYN | URG */
            | 0x12 /* SYN | ACK */
            | RST
            | 0x14 /* RST | ACK */
            | 0x11 /* FIN | ACK */
            | 0x31 /* FIN | ACK | URG */
            | ACK
            | 0x30 /* ACK | URG */
    )
}

/// Which way a segment goes: from the client (the flow's first packet's sender), or
/// back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Original,
    Reply,
}

/// The state a segment with `f` flags opens a flow in, if it may open one (the
/// segment is the first of its flow we see, so it is the client's): a SYN opens a
/// connection; an ACK without SYN or RST picks up one already under way (Linux's
/// `nf_conntrack_tcp_loose`, which kube-proxy leaves on), so that connections survive
/// an agent restart, an evicted entry or the fabric moving a flow to another node
/// (Maglev picks the same backend there). A SYN-ACK or a RST without a flow is not a
/// connection of ours: "invalid", dropped as kube-proxy drops it, as are flags TCP
/// never sends ([`valid_flags`]).
pub fn open(f: u8) -> Option<State> {
    if !valid_flags(f) {
        return None;
    }
    match f & (flags::SYN | flags::ACK | flags::RST) {
        flags::SYN => Some(State::SynSent),
        flags::ACK => Some(State::Established),
        _ => None,
    }
}

/// Whether a segment on a flow in state `s` starts a new connection on the same
/// ports: a client's SYN after the old one closed. The caller forgets the old entry
/// and takes the new-flow path (a new backend choice), as Linux does.
pub fn reopens(s: State, f: u8, d: Direction) -> bool {
    matches!(s, State::TimeWait | State::Close)
        && d == Direction::Original
        && f & (flags::SYN | flags::ACK | flags::RST) == flags::SYN
}

/// The state after a segment with flags `f` in direction `d`, on a flow in state `s`
/// whose first FIN came from `closer` (meaningful from [`State::FinWait`] on); with
/// the closer after it (the segment's side when it is the first FIN). A FIN counts as
/// the second only from the other side: a retransmitted one leaves the state as it
/// is, and only the other side's ACK acknowledges the first.
pub fn next(s: State, closer: Direction, f: u8, d: Direction) -> (State, Direction) {
    use State::*;
    let (syn, ack, fin, rst) = (
        f & flags::SYN != 0,
        f & flags::ACK != 0,
        f & flags::FIN != 0,
        f & flags::RST != 0,
    );
    if rst {
        return (Close, closer);
    }
    let other = d != closer;
    let state = match s {
        SynSent if syn && ack && d == Direction::Reply => SynRecv,
        SynRecv | Established if fin => return (FinWait, d),
        SynRecv if ack && !syn && d == Direction::Original => Established,
        FinWait if fin && other => LastAck,
        FinWait if ack && other => CloseWait,
        CloseWait if fin && other => LastAck,
        LastAck if ack && !fin => TimeWait,
        // (A new connection on the same ports once the old one is gone is the
        // caller's, see `reopens`.)
        s => s,
    };
    (state, closer)
}

/// How long a flow lives in each state without traffic. kube-proxy's flags:
/// `--conntrack-tcp-timeout-established` (24 h) and
/// `--conntrack-tcp-timeout-close-wait` (1 h); the rest are Linux's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub syn_sent: Duration,
    pub syn_recv: Duration,
    pub established: Duration,
    pub fin_wait: Duration,
    pub close_wait: Duration,
    pub last_ack: Duration,
    pub time_wait: Duration,
    pub close: Duration,
    /// UDP: until a reply is seen (`--conntrack-udp-timeout`, Linux's 30 s) ...
    pub udp: Duration,
    /// ... and once both sides have sent (`--conntrack-udp-timeout-stream`, 120 s).
    pub udp_stream: Duration,
    /// ICMP echo, by identifier.
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        let s = Duration::from_secs;
        Timeouts {
            syn_sent: s(120),
            syn_recv: s(60),
            established: s(24 * 3600),
            fin_wait: s(120),
            close_wait: s(3600),
            last_ack: s(30),
            time_wait: s(120),
            close: s(10),
            udp: s(30),
            udp_stream: s(120),
            icmp: s(30),
        }
    }
}

impl Timeouts {
    pub fn tcp(&self, s: State) -> Duration {
        match s {
            State::SynSent => self.syn_sent,
            State::SynRecv => self.syn_recv,
            State::Established => self.established,
            State::FinWait => self.fin_wait,
            State::CloseWait => self.close_wait,
            State::LastAck => self.last_ack,
            State::TimeWait => self.time_wait,
            State::Close => self.close,
        }
    }

    /// How long a flow in state `s` lives while it is `picked_up` (first seen
    /// mid-stream, by an ACK, and not yet answered): no longer than an unanswered SYN,
    /// so that stray or spoofed ACKs cannot fill the table with day-long entries (as
    /// Linux lets unassured entries go first).
    pub fn tracked(&self, s: State, picked_up: bool) -> Duration {
        if picked_up {
            self.tcp(s).min(self.syn_sent)
        } else {
            self.tcp(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::Direction::{Original as O, Reply as R};
    use super::*;
    use proptest::prelude::*;

    /// A segment sequence and the state after each.
    fn walk(steps: &[(u8, Direction)]) -> Vec<State> {
        let mut s = open(steps[0].0).expect("a SYN opens the flow");
        let mut closer = O;
        let mut out = vec![s];
        for &(f, d) in &steps[1..] {
            (s, closer) = next(s, closer, f, d);
            out.push(s);
        }
        out
    }

    #[test]
    fn a_connection_from_handshake_to_time_wait() {
        use State::*;
        let states = walk(&[
            (SYN, O),
            (SYN | ACK, R),
            (ACK, O),
            (ACK, R),
            (FIN | ACK, O),
            (ACK, R),
            (FIN | ACK, R),
            (ACK, O),
        ]);
        assert_eq!(
            states,
            [
                SynSent,
                SynRecv,
                Established,
                Established,
                FinWait,
                CloseWait,
                LastAck,
                TimeWait
            ]
        );
    }

    #[test]
    fn a_reset_closes_from_any_state_and_a_new_syn_reopens() {
        for s in [State::SynSent, State::Established, State::CloseWait] {
            assert_eq!(next(s, O, RST, R).0, State::Close);
            assert_eq!(next(s, R, RST | ACK, O).0, State::Close);
        }
        assert!(reopens(State::Close, SYN, O));
        assert!(reopens(State::TimeWait, SYN, O));
        assert!(!reopens(State::TimeWait, SYN, R), "not from the server");
        assert!(!reopens(State::Established, SYN, O), "a retransmitted SYN");
    }

    #[test]
    fn a_syn_opens_a_flow_an_ack_picks_one_up() {
        assert_eq!(open(SYN), Some(State::SynSent));
        assert_eq!(open(ACK), Some(State::Established));
        assert_eq!(open(ACK | FIN), Some(State::Established));
        for f in [
            SYN | ACK,
            FIN,
            RST,
            SYN | RST,
            RST | ACK,
            0,
            SYN | FIN,
            SYN | ACK | URG,
        ] {
            assert_eq!(open(f), None, "{f:#x}");
        }
        assert_eq!(open(SYN | ECE | CWR), Some(State::SynSent));
        assert_eq!(open(ACK | PSH), Some(State::Established));
    }

    /// Against the table written out: the nine combinations TCP sends, with PSH, ECE
    /// and CWR free; nothing else.
    #[test]
    fn valid_flags_are_exactly_the_nine() {
        let nine = [
            SYN,
            SYN | URG,
            SYN | ACK,
            RST,
            RST | ACK,
            FIN | ACK,
            FIN | ACK | URG,
            ACK,
            ACK | URG,
        ];
        for f in 0..=255u8 {
            let core = f & !(PSH | ECE | CWR);
            assert_eq!(valid_flags(f), nine.contains(&core), "{f:#04x}");
        }
    }

    #[test]
    fn the_server_cannot_skip_the_handshake() {
        // An ACK from the server before its SYN-ACK does not establish.
        assert_eq!(next(State::SynSent, O, ACK, R).0, State::SynSent);
        // The client's ACK establishes only after the SYN-ACK.
        assert_eq!(next(State::SynSent, O, ACK, O).0, State::SynSent);
    }

    #[test]
    fn a_retransmitted_fin_is_not_the_second_and_a_half_close_stays_open() {
        use State::*;
        let states = walk(&[
            (SYN, O),
            (SYN | ACK, R),
            (ACK, O),
            (FIN | ACK, O),
            (FIN | ACK, O), // retransmitted
            (ACK, O),       // the client acknowledging the server's data
            (ACK, R),       // the server acknowledging the FIN
            (ACK, R),       // the server still sends (half close)
            (FIN | ACK, O), // retransmitted again
        ]);
        assert_eq!(
            &states[3..],
            [FinWait, FinWait, FinWait, CloseWait, CloseWait, CloseWait]
        );
        // The server's FIN then closes; the client's last ACK ends it.
        let states = walk(&[
            (SYN, O),
            (SYN | ACK, R),
            (ACK, O),
            (FIN | ACK, R),
            (ACK, O),
            (FIN | ACK, O),
            (ACK, R),
        ]);
        assert_eq!(&states[3..], [FinWait, CloseWait, LastAck, TimeWait]);
    }

    /// A segment of the generated conversations.
    fn segment() -> impl Strategy<Value = (u8, Direction)> {
        let f = prop_oneof![
            Just(SYN),
            Just(SYN | ACK),
            Just(ACK),
            Just(FIN | ACK),
            Just(FIN),
            Just(RST),
            Just(RST | ACK),
            Just(SYN | FIN),
        ];
        (f, prop_oneof![Just(O), Just(R)])
    }

    /// The reference: the state read off the whole history at once, each landmark
    /// the first segment of its kind after the one before it.
    fn reference(history: &[(u8, Direction)]) -> State {
        use State::*;
        if history.iter().any(|&(f, _)| f & RST != 0) {
            return Close;
        }
        let after = |from: Option<usize>, want: &dyn Fn(u8, Direction) -> bool| {
            let from = from?;
            (from + 1..history.len()).find(|&i| want(history[i].0, history[i].1))
        };
        let synack = after(Some(0), &|f, d| f & SYN != 0 && f & ACK != 0 && d == R);
        let established = after(synack, &|f, d| f & ACK != 0 && f & SYN == 0 && d == O);
        let first_fin = after(synack, &|f, _| f & FIN != 0);
        let closer = first_fin.map(|i| history[i].1);
        let second_fin = after(first_fin, &|f, d| f & FIN != 0 && Some(d) != closer);
        let acked = after(first_fin, &|f, d| f & ACK != 0 && Some(d) != closer);
        let last_ack = after(second_fin, &|f, _| f & ACK != 0 && f & FIN == 0);
        // The first FIN counts only before the handshake was complete or after; a
        // FIN between SYN-ACK and the client's ACK moves on from SYN_RECV too.
        if last_ack.is_some() {
            TimeWait
        } else if second_fin.is_some() {
            LastAck
        } else if acked.is_some_and(|a| second_fin.is_none_or(|s| a < s)) {
            CloseWait
        } else if first_fin.is_some() {
            FinWait
        } else if established.is_some() {
            Established
        } else if synack.is_some() {
            SynRecv
        } else {
            SynSent
        }
    }

    proptest::proptest! {
        /// Any conversation opened by a SYN, against the reference.
        #[test]
        fn matches_the_history_reference(rest in proptest::collection::vec(segment(), 0..14)) {
            let mut history = vec![(SYN, O)];
            history.extend(rest);
            let states = walk(&history);
            for n in 1..=history.len() {
                proptest::prop_assert_eq!(
                    states[n - 1],
                    reference(&history[..n]),
                    "after {:?}",
                    &history[..n]
                );
            }
        }
    }

    #[test]
    fn kube_proxys_timeouts_by_default() {
        let t = Timeouts::default();
        assert_eq!(t.tcp(State::Established), Duration::from_secs(86400));
        assert_eq!(t.tcp(State::CloseWait), Duration::from_secs(3600));
        for v in 1..=8 {
            let s = State::from_u8(v).unwrap();
            assert_eq!(s as u8, v);
            assert!(t.tcp(s) > Duration::ZERO, "{}", s.name());
        }
        assert_eq!(State::from_u8(0), None);
        assert_eq!(State::from_u8(9), None);
    }
}
