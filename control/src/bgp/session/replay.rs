//! A session task fed a recorded peer over an in-memory connection, without root,
//! sockets or peers: the bytes a real BIRD sent (`testdata/bird-ibgp.messages`) go in
//! as it sent them; what the session writes back and what it reports to the speaker
//! are checked. Time is tokio's paused clock, so the hold timer runs out at once and
//! nothing here depends on the machine's speed.

use super::*;
use crate::bgp::frame::code;
use crate::bgp::speaker::replay::recording;
use crate::bgp::wire::GracefulRestart;
use crate::config::Cidr;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::DuplexStream;

const PEER: PeerId = 1;
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn config() -> Config {
    Config {
        peer: PEER,
        dial: Dial {
            remote: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 179),
            local_ip: None,
            password: None,
            ttl: None,
        },
        remote_asn: 64512,
        // The test hands it the connection, as the listener would.
        passive: true,
        ours: Open {
            asn: 64512,
            hold_time: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            asn4: true,
            families: Family::ALL.to_vec(),
            route_refresh: true,
            // BIRD's recorded OPEN announces graceful restart too: it is negotiated.
            graceful_restart: Some(GracefulRestart {
                restarting: false,
                time: 120,
                families: vec![(Family::Ipv4, true), (Family::Ipv6, true)],
            }),
        },
        timers: Timers::default(),
    }
}

/// The recorded peer's end of a running session.
struct Peer {
    wire: DuplexStream,
    events: mpsc::Receiver<Event>,
    handle: Handle,
}

/// The message type of a whole message.
fn kind_of(m: &[u8]) -> u8 {
    m[18]
}

impl Peer {
    async fn connect() -> Peer {
        let (events_tx, events) = mpsc::channel(64);
        let handle = spawn(config(), events_tx);
        let (stream, wire) = Stream::pipe(LOCAL);
        handle.incoming.send(stream).await.unwrap();
        Peer {
            wire,
            events,
            handle,
        }
    }

    /// The next whole message the session wrote; `None` once it closed the connection.
    async fn read(&mut self) -> Option<Vec<u8>> {
        let mut m = vec![0u8; frame::HEADER_LEN];
        self.wire.read_exact(&mut m).await.ok()?;
        let len = usize::from(u16::from_be_bytes([m[16], m[17]]));
        assert!(
            (frame::HEADER_LEN..=frame::MAX_LEN).contains(&len),
            "bad length {len}"
        );
        m.resize(len, 0);
        self.wire
            .read_exact(&mut m[frame::HEADER_LEN..])
            .await
            .ok()?;
        Some(m)
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.wire.write_all(bytes).await.unwrap();
    }

    /// The next report that is not a state change (those are collected in `states`).
    async fn event(&mut self, states: &mut Vec<State>) -> Event {
        loop {
            match self.events.recv().await.expect("the session ended") {
                Event::State { peer, state } => {
                    assert_eq!(peer, PEER);
                    states.push(state);
                }
                e => return e,
            }
        }
    }

    /// The recorded OPEN in, ours out, KEEPALIVEs both ways: established.
    async fn establish(&mut self, states: &mut Vec<State>) -> Event {
        let ours = self.read().await.expect("our OPEN");
        match wire::decode(&ours, Decoding { asn4: false }) {
            Ok(Message::Open(o)) => assert_eq!(o, config().ours),
            other => panic!("the session's first message: {other:?}"),
        }
        let recorded = recording("bird-ibgp");
        let (step, open) = &recorded[0];
        assert_eq!(step, "open");
        self.write(open).await;
        let keepalive = self.read().await.expect("a KEEPALIVE for the OPEN");
        assert_eq!(kind_of(&keepalive), frame::kind::KEEPALIVE);
        self.write(&wire::encode_keepalive()).await;
        self.event(states).await
    }
}

fn notification(m: &[u8]) -> (u8, u8) {
    assert_eq!(kind_of(m), frame::kind::NOTIFICATION, "{m:02x?}");
    (m[19], m[20])
}

#[tokio::test(start_paused = true)]
async fn a_recorded_peer_comes_up_and_its_table_reaches_the_speaker() {
    let mut peer = Peer::connect().await;
    let mut states = Vec::new();
    match peer.establish(&mut states).await {
        Event::Up {
            peer: id,
            theirs,
            local,
            ..
        } => {
            assert_eq!(id, PEER);
            assert_eq!(theirs.asn, 64512);
            assert_eq!(theirs.router_id, Ipv4Addr::new(192, 0, 2, 2));
            assert_eq!(theirs.hold_time, 90);
            assert_eq!(
                local, LOCAL,
                "our address on the connection, for next-hop self"
            );
        }
        other => panic!("expected the session up, got {other:?}"),
    }
    // Up is reported as the state machine reaches Established; the state report
    // follows it.
    assert_eq!(states, [State::Active, State::OpenSent, State::OpenConfirm]);
    // The initial table, message by message as BIRD sent it: each reaches the speaker
    // decoded, in order.
    let mut announced: Vec<(String, IpAddr, Vec<u32>)> = Vec::new();
    let mut end_of_rib = None;
    for (step, bytes) in recording("bird-ibgp").iter().filter(|(s, _)| s == "table") {
        peer.write(bytes).await;
        match peer.event(&mut states).await {
            Event::Update { peer: id, update } => {
                assert_eq!(id, PEER);
                assert!(update.problems.is_empty(), "{step}: {:?}", update.problems);
                for (attrs, prefixes) in &update.announced {
                    for p in prefixes {
                        announced.push((p.to_string(), attrs.next_hop, attrs.communities.clone()));
                    }
                }
                end_of_rib = end_of_rib.or(update.end_of_rib);
            }
            other => panic!("{step}: expected an UPDATE, got {other:?}"),
        }
    }
    announced.sort();
    let via = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
    assert_eq!(
        announced,
        [
            ("172.16.1.0/24".to_string(), via([192, 0, 2, 2]), vec![]),
            (
                "172.16.2.0/24".to_string(),
                via([192, 0, 2, 2]),
                vec![(64512 << 16) | 100]
            ),
            ("172.16.3.0/24".to_string(), via([198, 51, 100, 1]), vec![]),
            ("198.51.100.0/24".to_string(), via([192, 0, 2, 2]), vec![]),
        ]
    );
    assert_eq!(end_of_rib, Some(Family::Ipv4));
    assert_eq!(
        states,
        [
            State::Active,
            State::OpenSent,
            State::OpenConfirm,
            State::Established
        ]
    );
    // A withdrawal, as BIRD sent it when the covering route went.
    let (_, uncover) = recording("bird-ibgp")
        .into_iter()
        .find(|(s, _)| s == "uncover")
        .unwrap();
    peer.write(&uncover).await;
    match peer.event(&mut states).await {
        Event::Update { update, .. } => assert_eq!(
            update.withdrawn,
            ["198.51.100.0/24".parse::<Cidr>().unwrap()]
        ),
        other => panic!("expected the withdrawal, got {other:?}"),
    }
    // The speaker's messages go out as they are.
    let eor = wire::encode_end_of_rib(Family::Ipv4);
    peer.handle
        .commands
        .send(Command::Send(vec![eor.clone()]))
        .unwrap();
    assert_eq!(peer.read().await.as_deref(), Some(&eor[..]));
    // Stopping: a Cease (administrative shutdown, RFC 4486), then the connection closes.
    peer.handle.commands.send(Command::Stop).unwrap();
    let last = peer.read().await.expect("a NOTIFICATION before the close");
    assert_eq!(notification(&last), (code::CEASE, 2));
    assert_eq!(peer.read().await, None, "the connection is closed");
}

#[tokio::test(start_paused = true)]
async fn an_overrunning_attribute_withdraws_and_a_lost_nlri_resets_with_3_1() {
    let mut peer = Peer::connect().await;
    let mut states = Vec::new();
    assert!(matches!(
        peer.establish(&mut states).await,
        Event::Up { .. }
    ));
    let (_, first) = recording("bird-ibgp")
        .into_iter()
        .find(|(s, _)| s == "table")
        .unwrap();
    // Its LOCAL_PREF one byte longer than the list has room for: RFC 7606 4 says
    // treat-as-withdraw, the NLRI found by the Total Path Attribute Length. The
    // session stays up.
    let mut overrun = first.clone();
    let lp = overrun
        .windows(3)
        .position(|w| w == [0x40, 5, 4])
        .expect("the recorded UPDATE has a LOCAL_PREF");
    overrun[lp + 2] = 5;
    peer.write(&overrun).await;
    match peer.event(&mut states).await {
        Event::Update { update, .. } => {
            assert_eq!(update.withdrawn, ["172.16.3.0/24".parse::<Cidr>().unwrap()]);
            assert!(update.announced.is_empty());
        }
        other => panic!("expected a withdrawal, got {other:?}"),
    }
    // The Total Path Attribute Length past the end of the message: the NLRI cannot be
    // located, the session is reset with 3/1.
    let mut lost = first;
    let withdrawn = usize::from(u16::from_be_bytes([lost[19], lost[20]]));
    let at = 21 + withdrawn;
    let past = u16::try_from(lost.len()).unwrap();
    lost[at..at + 2].copy_from_slice(&past.to_be_bytes());
    peer.write(&lost).await;
    let n = peer.read().await.expect("a NOTIFICATION");
    assert_eq!(notification(&n), (code::UPDATE_MESSAGE, 1));
    match peer.event(&mut states).await {
        Event::Down {
            peer: id, graceful, ..
        } => {
            assert_eq!(id, PEER);
            // Both sides announced graceful restart; a NOTIFICATION still ends the
            // session for good (RFC 4724 without RFC 8538).
            assert!(
                !graceful,
                "a NOTIFICATION ends the session without graceful restart"
            );
        }
        other => panic!("expected the session down, got {other:?}"),
    }
    assert_eq!(peer.read().await, None, "the connection is closed");
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_by_the_hold_timer_after_our_keepalives() {
    let mut peer = Peer::connect().await;
    let mut states = Vec::new();
    assert!(matches!(
        peer.establish(&mut states).await,
        Event::Up { .. }
    ));
    let started = Instant::now();
    // The peer says nothing more. We keep sending KEEPALIVEs (a third of the hold
    // time), then the hold timer ends the session (RFC 4271 6.5).
    let mut keepalives = 0;
    let last = loop {
        let m = peer.read().await.expect("a message before the close");
        if kind_of(&m) != frame::kind::KEEPALIVE {
            break m;
        }
        keepalives += 1;
    };
    assert_eq!(notification(&last), (code::HOLD_TIMER_EXPIRED, 0));
    assert!(keepalives >= 2, "a KEEPALIVE every third of the hold time");
    assert!(started.elapsed() >= Duration::from_secs(90));
    assert!(matches!(peer.event(&mut states).await, Event::Down { .. }));
}
