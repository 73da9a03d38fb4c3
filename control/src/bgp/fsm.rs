//! The BGP session state machine of RFC 4271 section 8, without I/O: events in,
//! actions out (holo's and smoltcp's shape: the caller owns sockets and clocks, so the
//! machine is tested exhaustively without either).
//!
//! The session task feeds it the events it sees — the TCP connection coming up or
//! failing, the messages it decoded, its timers firing — and carries out the actions
//! in order: send a message, (re)arm or stop a timer, open or drop the connection,
//! hand an UPDATE to the RIB, report the session up or down.

use super::frame::{code, Notification};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// What the peer's OPEN said, as far as the machine needs it (the caller has checked
/// the ASN, identifier and capabilities, and sends a NOTIFICATION itself otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerOpen {
    /// The peer's proposed hold time, in seconds (0, or at least 3).
    pub hold_time: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The operator (or the peering rules) started the session.
    Start {
        /// Passive: wait for the peer to connect instead of connecting.
        passive: bool,
    },
    Stop,
    ConnectRetryExpired,
    HoldExpired,
    KeepaliveExpired,
    /// A TCP connection is up (ours succeeded, or the peer's was accepted).
    TcpUp,
    TcpFailed,
    Open(PeerOpen),
    /// The OPEN (or another message) was malformed; the NOTIFICATION to send.
    BadMessage(Notification),
    Keepalive,
    Update,
    /// A ROUTE-REFRESH request (RFC 2918).
    RouteRefresh,
    /// The peer's NOTIFICATION.
    Notification(Notification),
}

/// The event as RFC 4271 8.1 names it (and, for an error, the NOTIFICATION sent).
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Start { passive: false } => f.write_str("ManualStart"),
            Event::Start { passive: true } => {
                f.write_str("ManualStart_with_PassiveTcpEstablishment")
            }
            Event::Stop => f.write_str("ManualStop"),
            Event::ConnectRetryExpired => f.write_str("ConnectRetryTimer_Expires"),
            Event::HoldExpired => f.write_str("HoldTimer_Expires"),
            Event::KeepaliveExpired => f.write_str("KeepaliveTimer_Expires"),
            Event::TcpUp => f.write_str("TcpConnectionConfirmed"),
            Event::TcpFailed => f.write_str("TcpConnectionFails"),
            Event::Open(_) => f.write_str("BGPOpen"),
            Event::BadMessage(n) => write!(f, "message error, sent {n}"),
            Event::Keepalive => f.write_str("KeepAliveMsg"),
            Event::Update => f.write_str("UpdateMsg"),
            Event::RouteRefresh => f.write_str("RouteRefreshMsg"),
            Event::Notification(n) => write!(f, "NotifMsg: {n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Connect,
    Listen,
    Drop,
    SendOpen,
    SendKeepalive,
    SendNotification(Notification),
    Arm(Timer, Duration),
    Stop(Timer),
    /// Give the UPDATE to the RIB.
    ProcessUpdate,
    /// Send the peer our routes again.
    ProcessRouteRefresh,
    /// The session is established: advertise the routes.
    Up,
    /// The session left Established: withdraw the peer's routes (or keep them as
    /// stale during a graceful restart).
    Down,
}

/// The timers' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub connect_retry: Duration,
    /// Our hold time (kube-router's `--bgp-holdtime`, 90 s).
    pub hold: Duration,
    /// The large hold time used until the OPENs are exchanged (RFC 4271: 4 minutes).
    pub open_hold: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            connect_retry: Duration::from_secs(5),
            hold: Duration::from_secs(90),
            open_hold: Duration::from_secs(240),
        }
    }
}

/// One session's state.
#[derive(Debug, Clone)]
pub struct Session {
    state: State,
    timers: Timers,
    passive: bool,
    /// The negotiated hold time (zero: no keepalives, no hold timer).
    hold: Duration,
}

impl Session {
    pub fn new(timers: Timers) -> Session {
        Session {
            state: State::Idle,
            timers,
            passive: false,
            hold: timers.hold,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The negotiated hold time, once OPENs were exchanged.
    pub fn hold_time(&self) -> Duration {
        self.hold
    }

    fn fsm_error(&self) -> Notification {
        // RFC 6608 subcodes: an unexpected message in OpenSent, OpenConfirm, Established.
        let subcode = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        };
        Notification {
            code: code::FSM,
            subcode,
            data: Vec::new(),
        }
    }

    /// Back to Idle after an error, with the connection dropped and the retry armed
    /// (RFC 4271 8.2.2, simplified: no damping of peer oscillations).
    fn reset(&mut self, out: &mut Vec<Action>, notify: Option<Notification>) {
        if let Some(n) = notify {
            out.push(Action::SendNotification(n));
        }
        out.push(Action::Drop);
        out.push(Action::Stop(Timer::Hold));
        out.push(Action::Stop(Timer::Keepalive));
        if self.state == State::Established {
            out.push(Action::Down);
        }
        self.state = if self.passive {
            out.push(Action::Listen);
            State::Active
        } else {
            State::Connect
        };
        out.push(Action::Arm(Timer::ConnectRetry, self.timers.connect_retry));
    }

    /// Handles one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        use Event as E;
        use State as S;
        match (self.state, event) {
            (S::Idle, E::Start { passive }) => {
                self.passive = passive;
                out.push(Action::Arm(Timer::ConnectRetry, self.timers.connect_retry));
                if passive {
                    out.push(Action::Listen);
                    self.state = S::Active;
                } else {
                    out.push(Action::Connect);
                    self.state = S::Connect;
                }
            }
            (S::Idle, _) => {}
            (_, E::Stop) => {
                out.push(Action::SendNotification(Notification {
                    code: code::CEASE,
                    subcode: 2, // administrative shutdown (RFC 4486)
                    data: Vec::new(),
                }));
                out.push(Action::Drop);
                out.push(Action::Stop(Timer::ConnectRetry));
                out.push(Action::Stop(Timer::Hold));
                out.push(Action::Stop(Timer::Keepalive));
                if self.state == S::Established {
                    out.push(Action::Down);
                }
                self.state = S::Idle;
            }
            (S::Connect | S::Active, E::ConnectRetryExpired) => {
                out.push(Action::Arm(Timer::ConnectRetry, self.timers.connect_retry));
                if !self.passive {
                    out.push(Action::Drop);
                    out.push(Action::Connect);
                    self.state = S::Connect;
                }
            }
            (S::Connect | S::Active, E::TcpUp) => {
                out.push(Action::Stop(Timer::ConnectRetry));
                out.push(Action::SendOpen);
                out.push(Action::Arm(Timer::Hold, self.timers.open_hold));
                self.state = S::OpenSent;
            }
            (S::Connect | S::Active, E::TcpFailed) => {
                out.push(Action::Drop);
                if self.passive {
                    out.push(Action::Listen);
                }
                self.state = if self.passive { S::Active } else { S::Connect };
            }
            (S::OpenSent, E::TcpFailed) => {
                out.push(Action::Drop);
                out.push(Action::Stop(Timer::Hold));
                out.push(Action::Arm(Timer::ConnectRetry, self.timers.connect_retry));
                if self.passive {
                    out.push(Action::Listen);
                }
                self.state = S::Active;
            }
            (S::OpenSent, E::Open(open)) => {
                // The hold time is the smaller of the two; zero means none (RFC 4271 4.2).
                let ours = self.timers.hold;
                let theirs = Duration::from_secs(u64::from(open.hold_time));
                self.hold = ours.min(theirs);
                out.push(Action::SendKeepalive);
                if self.hold.is_zero() {
                    out.push(Action::Stop(Timer::Hold));
                } else {
                    out.push(Action::Arm(Timer::Hold, self.hold));
                    out.push(Action::Arm(Timer::Keepalive, self.hold / 3));
                }
                self.state = S::OpenConfirm;
            }
            (S::OpenConfirm, E::Keepalive) => {
                if !self.hold.is_zero() {
                    out.push(Action::Arm(Timer::Hold, self.hold));
                }
                out.push(Action::Up);
                self.state = S::Established;
            }
            (S::OpenConfirm | S::Established, E::KeepaliveExpired) => {
                // With a hold time of zero no KEEPALIVE is sent periodically (RFC 4271
                // 4.4); a stale timer's expiry then re-arms nothing (a zero timer
                // would fire at once, for ever).
                if !self.hold.is_zero() {
                    out.push(Action::SendKeepalive);
                    out.push(Action::Arm(Timer::Keepalive, self.hold / 3));
                }
            }
            (S::Established, E::Keepalive) => {
                if !self.hold.is_zero() {
                    out.push(Action::Arm(Timer::Hold, self.hold));
                }
            }
            (S::Established, E::Update) => {
                if !self.hold.is_zero() {
                    out.push(Action::Arm(Timer::Hold, self.hold));
                }
                out.push(Action::ProcessUpdate);
            }
            (S::Established, E::RouteRefresh) => {
                if !self.hold.is_zero() {
                    out.push(Action::Arm(Timer::Hold, self.hold));
                }
                out.push(Action::ProcessRouteRefresh);
            }
            (S::OpenSent | S::OpenConfirm | S::Established, E::HoldExpired) => {
                let n = Notification {
                    code: code::HOLD_TIMER_EXPIRED,
                    subcode: 0,
                    data: Vec::new(),
                };
                self.reset(&mut out, Some(n));
            }
            (_, E::BadMessage(n)) => self.reset(&mut out, Some(n)),
            (_, E::Notification(_)) | (_, E::TcpFailed) => self.reset(&mut out, None),
            // Anything else in a state that does not expect it is an FSM error.
            (S::OpenSent | S::OpenConfirm | S::Established, _) => {
                let n = self.fsm_error();
                self.reset(&mut out, Some(n));
            }
            // Timers and messages without a connection are ignored.
            (S::Connect | S::Active, _) => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn established() -> Session {
        let mut s = Session::new(Timers::default());
        s.handle(Event::Start { passive: false });
        s.handle(Event::TcpUp);
        s.handle(Event::Open(PeerOpen { hold_time: 30 }));
        let a = s.handle(Event::Keepalive);
        assert!(a.contains(&Action::Up));
        s
    }

    #[test]
    fn a_session_comes_up_with_the_smaller_hold_time() {
        let mut s = Session::new(Timers::default());
        assert_eq!(
            s.handle(Event::Start { passive: false }),
            [
                Action::Arm(Timer::ConnectRetry, Duration::from_secs(5)),
                Action::Connect
            ]
        );
        assert_eq!(
            s.handle(Event::TcpUp),
            [
                Action::Stop(Timer::ConnectRetry),
                Action::SendOpen,
                Action::Arm(Timer::Hold, Duration::from_secs(240))
            ]
        );
        assert_eq!(
            s.handle(Event::Open(PeerOpen { hold_time: 30 })),
            [
                Action::SendKeepalive,
                Action::Arm(Timer::Hold, Duration::from_secs(30)),
                Action::Arm(Timer::Keepalive, Duration::from_secs(10))
            ]
        );
        assert_eq!(s.state(), State::OpenConfirm);
        s.handle(Event::Keepalive);
        assert_eq!(s.state(), State::Established);
        assert_eq!(
            s.handle(Event::Update),
            [
                Action::Arm(Timer::Hold, Duration::from_secs(30)),
                Action::ProcessUpdate
            ]
        );
    }

    #[test]
    fn hold_expiry_notifies_and_goes_down() {
        let mut s = established();
        let a = s.handle(Event::HoldExpired);
        assert_eq!(
            a[0],
            Action::SendNotification(Notification {
                code: 4,
                subcode: 0,
                data: vec![]
            })
        );
        assert!(a.contains(&Action::Down) && a.contains(&Action::Drop));
        assert_eq!(s.state(), State::Connect);
    }

    #[test]
    fn an_unexpected_message_is_an_fsm_error() {
        let mut s = Session::new(Timers::default());
        s.handle(Event::Start { passive: true });
        s.handle(Event::TcpUp);
        let a = s.handle(Event::Update);
        assert_eq!(
            a[0],
            Action::SendNotification(Notification {
                code: 5,
                subcode: 1,
                data: vec![]
            })
        );
        assert_eq!(s.state(), State::Active, "a passive session listens again");
    }

    #[test]
    fn zero_hold_time_means_no_keepalives() {
        let mut s = Session::new(Timers::default());
        s.handle(Event::Start { passive: false });
        s.handle(Event::TcpUp);
        let a = s.handle(Event::Open(PeerOpen { hold_time: 0 }));
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::Arm(Timer::Keepalive, _))));
        assert_eq!(s.hold_time(), Duration::ZERO);
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            any::<bool>().prop_map(|passive| Event::Start { passive }),
            Just(Event::Stop),
            Just(Event::ConnectRetryExpired),
            Just(Event::HoldExpired),
            Just(Event::KeepaliveExpired),
            Just(Event::TcpUp),
            Just(Event::TcpFailed),
            (0u16..100).prop_map(|h| Event::Open(PeerOpen { hold_time: h })),
            Just(Event::BadMessage(Notification {
                code: 3,
                subcode: 1,
                data: vec![]
            })),
            Just(Event::Keepalive),
            Just(Event::Update),
            Just(Event::RouteRefresh),
            Just(Event::Notification(Notification {
                code: 6,
                subcode: 2,
                data: vec![],
            })),
        ]
    }

    proptest! {
        /// Over any event sequence: Up and Down alternate, starting with Up; routes are
        /// processed only while established; a keepalive timer is never armed at
        /// zero; every NOTIFICATION is followed by dropping the connection.
        #[test]
        fn invariants_hold(events in proptest::collection::vec(arb_event(), 0..60)) {
            let mut s = Session::new(Timers::default());
            let mut up = false;
            for e in events {
                let before = s.state();
                let actions = s.handle(e);
                for (i, a) in actions.iter().enumerate() {
                    match a {
                        Action::Up => { prop_assert!(!up); up = true; }
                        Action::Down => { prop_assert!(up); up = false; }
                        Action::ProcessUpdate | Action::ProcessRouteRefresh => {
                            prop_assert_eq!(before, State::Established)
                        }
                        Action::Arm(Timer::Keepalive, d) => prop_assert!(!d.is_zero()),
                        Action::SendNotification(_) => prop_assert_eq!(actions.get(i + 1), Some(&Action::Drop)),
                        _ => {}
                    }
                }
                prop_assert_eq!(up, s.state() == State::Established);
            }
        }
    }
}
