//! The speaker fed recorded peers, without root, sockets or peers (holo's test stubs).
//!
//! A recording (`testdata/*.messages`, made by `testdata/record.py` from a real BIRD)
//! is a list of `<step> <hex>` lines: the peer's OPEN, then every message it sent, in
//! order, in named steps (the initial table; after a route was withdrawn; after it came
//! back). A test replays them into the speaker through the same calls the sessions
//! make ([`Speaker::up`], [`Speaker::update`], [`Speaker::flush`]), and writes a
//! transcript of what came out after every message: the FIB changes, what the speaker
//! sent the peer, and the Loc-RIB as `xroute bgp rib` shows it. The transcript is
//! compared with `testdata/*.expected`; `XROUTE_REGENERATE=1` writes it anew (read the
//! diff before committing it).
//!
//! The topology of `bird-ibgp`:
//!
//! ```text
//!   node (AS 64512, 192.0.2.1) ---- iBGP ---- BIRD (AS 64512, 192.0.2.2)
//!                      192.0.2.0/24, the only connected subnet
//!   BIRD: 172.16.1.0/24 and 198.51.100.0/24 via itself; 172.16.2.0/24 with a
//!   community, an extended and a large one; 172.16.3.0/24 via 198.51.100.1, which only
//!   198.51.100.0/24 reaches (it comes second in the table, goes, and comes back).
//! ```

use super::*;
use std::fmt::Write as _;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bgp/testdata");

struct Replay {
    speaker: Speaker,
    fib: mpsc::UnboundedReceiver<FibBatch>,
    sent: BTreeMap<PeerId, mpsc::UnboundedReceiver<Command>>,
    out: String,
}

fn node_config() -> Config {
    Config {
        asn: 64512,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        listen: Vec::new(),
        hold_time: Duration::from_secs(90),
        connect_retry: Duration::from_secs(5),
        graceful_restart: None,
        rr_cluster_id: None,
        node: NodeBgp::default(),
        override_nexthop: false,
        next_hop4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        next_hop6: None,
        reachability: Reachability {
            connected: vec!["192.0.2.0/24".parse().unwrap()],
            statics: Vec::new(),
        },
    }
}

/// The recording's lines: (step, message bytes).
pub(crate) fn recording(name: &str) -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(format!("{DATA}/{name}.messages")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (step, hex) = l.split_once(' ').unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (step.to_string(), bytes)
        })
        .collect()
}

impl Replay {
    fn new(config: Config) -> Replay {
        let (fib_tx, fib) = mpsc::unbounded_channel();
        let (events, _) = mpsc::channel(16);
        Replay {
            speaker: Speaker::new(config, fib_tx, events, Vec::new()),
            fib,
            sent: BTreeMap::new(),
            out: String::new(),
        }
    }

    /// A neighbour whose session has come up with the peer's recorded OPEN.
    fn peer(&mut self, n: Neighbor, local: IpAddr, open: &[u8]) -> PeerId {
        let (handle, sent) = session::Handle::detached();
        let id = self.speaker.add_peer(n, handle);
        self.sent.insert(id, sent);
        let Ok(wire::Message::Open(theirs)) = wire::decode(open, wire::Decoding { asn4: false })
        else {
            panic!("the recording's first message is no OPEN")
        };
        let ours = self.speaker.ours();
        self.speaker.up(id, &ours, theirs, local);
        self.speaker.flush();
        self.record("up");
        id
    }

    /// One recorded message from peer `id`, as its session hands it on.
    fn message(&mut self, id: PeerId, step: &str, bytes: &[u8]) {
        match wire::decode(bytes, wire::Decoding { asn4: true }) {
            Ok(wire::Message::Update(u)) => {
                let what = describe(&u);
                self.speaker.update(id, u);
                self.speaker.flush();
                self.record(&format!("{step}: {what}"));
            }
            other => panic!("{step}: not an UPDATE: {other:?}"),
        }
    }

    /// Appends what came out since the last step.
    fn record(&mut self, step: &str) {
        let _ = writeln!(self.out, "== {step}");
        while let Ok(batch) = self.fib.try_recv() {
            for (prefix, hops) in batch.iter() {
                let _ = match hops {
                    Some(h) => writeln!(self.out, "fib + {prefix} via {h:?}"),
                    None => writeln!(self.out, "fib - {prefix}"),
                };
            }
        }
        for (peer, rx) in &mut self.sent {
            while let Ok(c) = rx.try_recv() {
                if let Command::Send(msgs) = c {
                    for m in msgs {
                        let text = match wire::decode(&m, wire::Decoding { asn4: true }) {
                            Ok(wire::Message::Update(u)) => describe(&u),
                            other => format!("{other:?}"),
                        };
                        let _ = writeln!(self.out, "sent to peer {peer}: {text}");
                    }
                }
            }
        }
        if let Reply::Rib(rows) = self.speaker.query(Query::Rib(Family::Ipv4)) {
            for r in rows {
                for p in r.paths {
                    let _ = writeln!(
                        self.out,
                        "rib {} via {}{}{}{} communities {:?} {:?} {:?}",
                        r.prefix,
                        p.next_hop,
                        if p.best { " best" } else { "" },
                        if p.multipath { " multipath" } else { "" },
                        if p.unreachable { " unreachable" } else { "" },
                        p.communities,
                        p.ext_communities,
                        p.large_communities,
                    );
                }
            }
        }
        if let Reply::Neighbors(ns) = self.speaker.query(Query::Neighbors) {
            for n in ns {
                let _ = writeln!(
                    self.out,
                    "neighbour {} held {} refused {:?}",
                    n.address, n.unreachable_next_hop, n.refused
                );
            }
        }
    }

    /// Compares the transcript with `testdata/<name>.expected`, or writes it there.
    fn check(&self, name: &str) {
        let path = format!("{DATA}/{name}.expected");
        if std::env::var_os("XROUTE_REGENERATE").is_some() {
            std::fs::write(&path, &self.out).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (XROUTE_REGENERATE=1 writes it)"));
        if expected != self.out {
            panic!(
                "the replay of {name} differs from {path}:\n--- expected\n{expected}\n--- got\n{}",
                self.out
            );
        }
    }
}

/// An UPDATE in a line: what it withdraws and announces, with the next hops.
fn describe(u: &wire::Update) -> String {
    let mut parts = Vec::new();
    if let Some(f) = u.end_of_rib {
        parts.push(format!("End-of-RIB {}", f.name()));
    }
    if !u.withdrawn.is_empty() {
        let w: Vec<String> = u.withdrawn.iter().map(|p| p.to_string()).collect();
        parts.push(format!("withdraw {}", w.join(" ")));
    }
    for (attrs, prefixes) in &u.announced {
        let a: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        parts.push(format!("announce {} via {}", a.join(" "), attrs.next_hop));
    }
    parts.join("; ")
}

/// BIRD's table over iBGP: the path via 198.51.100.1 waits until 198.51.100.0/24 is
/// learned, is installed then, leaves when it is withdrawn and comes back with it; the
/// communities of all three kinds are kept.
#[tokio::test]
async fn bird_ibgp_table_with_a_recursive_next_hop() {
    let rec = recording("bird-ibgp");
    let mut r = Replay::new(node_config());
    let bird = Neighbor {
        address: "192.0.2.2".parse().unwrap(),
        asn: 64512,
        port: 179,
        password: None,
        local_ip: None,
        internal: true,
        rr_client: false,
        multihop_ttl: 0,
    };
    let (step, open) = &rec[0];
    assert_eq!(step, "open");
    let id = r.peer(bird, "192.0.2.1".parse().unwrap(), open);
    for (n, (step, bytes)) in rec.iter().enumerate().skip(1) {
        r.message(id, &format!("{step} {n}"), bytes);
    }
    r.check("bird-ibgp");
    // What the transcript must say, whatever regenerating wrote.
    let o = &r.out;
    assert!(
        o.contains("rib 172.16.3.0/24 via 198.51.100.1 unreachable"),
        "{o}"
    );
    assert!(o.contains("fib + 172.16.3.0/24 via [198.51.100.1]"), "{o}");
    assert!(o.contains("fib - 172.16.3.0/24"), "{o}");
    assert!(o.contains(r#"["rt:64512:7"] ["64512:1:2"]"#), "{o}");
}
