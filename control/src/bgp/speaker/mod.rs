//! The speaker: one tokio task owning the Loc-RIB, every peer's session handle and
//! Adj-RIB-Out, the listeners of the BGP port, and the routes this node originates.
//!
//! - Import: an UPDATE's paths pass the import policy (AS loop, ORIGINATOR_ID and
//!   CLUSTER_LIST loops, `customimportreject`, our own next hop) and enter the Loc-RIB
//!   as that peer's paths (the Adj-RIB-In after policy); counts of what was refused
//!   are kept per peer.
//! - Decision: [`rib::decide`] per prefix, equal paths forming the ECMP group.
//! - FIB: every change of a best path not originated here goes out in batches, one
//!   per burst of messages, to whoever syncs the forwarding tables and the kernel.
//! - Export, per peer: this node's routes to cluster peers (pod CIDRs) and to
//!   external peers (per the advertise flags, decided by the caller); iBGP-learned
//!   routes only when reflecting (RFC 4456: client routes to everybody, non-client
//!   routes to clients, with ORIGINATOR_ID and CLUSTER_LIST); nothing learned goes to
//!   external peers (kube-router's export policy). Toward eBGP: our ASN (after the
//!   `path-prepend` ASNs) on the AS_PATH, next-hop self, no LOCAL_PREF. Adj-RIB-Out
//!   remembers what each peer was sent, so only differences go on the wire.
//! - Graceful restart (RFC 4724) as helper: a peer whose session drops without a
//!   NOTIFICATION keeps its routes, marked stale, until it comes back and sends
//!   End-of-RIB (then the stale ones still unrefreshed go) or its restart time ends.
//!   As restarting speaker: with `restarting` set, the FIB keeps its previous routes
//!   and the first batch waits for every peer's End-of-RIB or the deferral time.
//!
//! The speaker's task and its inputs are here; its parts each have a file: [`policy`]
//! (import and export), [`adj_rib_out`] (what peers were sent, FIB batches),
//! [`graceful_restart`] (stale paths) and [`status`] (answers in the types of
//! [`super::northbound`]).

use super::annotations::NodeBgp;
use super::fsm::{State, Timers};
use super::nexthop::{Held, Reachability, Resolution, Resolved};
use super::northbound::rib_path;
pub use super::northbound::{
    as_path_text, ext_community_text, state_name, GlobalStatus, NeighborStatus, Query, Reply,
    RibEntry, RibPath,
};
use super::peering::Neighbor;
use super::rib::{
    self, AsSegment, Best, Change, Origin, PathAttrs, PeerId, Rib, RibChanges, Source,
};
use super::session::{self, Command, Event};
use super::socket::{self, Dial};
use super::wire::{self, Family, GracefulRestart, Open};
use crate::config::Cidr;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The peer id of this node's own routes in the Loc-RIB.
const LOCAL: PeerId = 0;

/// A peer counts as sending its initial table until its End-of-RIB, or for this long
/// after the session came up if it sends none (RFC 4724 makes the marker optional
/// without graceful restart).
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// Graceful restart settings (kube-router's `--bgp-graceful-restart*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    pub time: Duration,
    pub deferral: Duration,
    /// This speaker has just restarted (R bit; defer the first FIB batch).
    pub restarting: bool,
}

/// The speaker's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Where to listen (port included); empty: no listening, active sessions only.
    pub listen: Vec<SocketAddr>,
    pub hold_time: Duration,
    pub connect_retry: Duration,
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// Our route-reflector cluster ID, if we are a server.
    pub rr_cluster_id: Option<u32>,
    /// This node's annotations: prepend, communities, import rejects.
    pub node: NodeBgp,
    /// `--override-nexthop`: next-hop self on reflected routes too.
    pub override_nexthop: bool,
    /// Next hops for the family the session's own address is not of.
    pub next_hop4: Option<Ipv4Addr>,
    pub next_hop6: Option<Ipv6Addr>,
    /// The node's connected subnets and static routes, which learned next hops must
    /// be reached through.
    pub reachability: Reachability,
}

/// A route this node originates, with where it may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Local {
    pub prefix: Cidr,
    /// To the other nodes of the cluster (iBGP).
    pub to_cluster: bool,
    /// To external peers.
    pub to_external: bool,
}

/// What the speaker is asked.
#[derive(Debug)]
pub enum Input {
    /// The sessions to run (the peering rules' output); others are stopped.
    Neighbors(Vec<Neighbor>),
    /// The routes to originate, replacing the previous set.
    Locals(Vec<Local>),
    /// This node's annotation settings changed (prepend, communities, import
    /// rejects): exports are recomputed, and peers asked to refresh when the import
    /// rejects changed.
    Node(NodeBgp),
    /// Our ASN or route-reflector cluster changed: every session restarts.
    Identity {
        asn: u32,
        rr_cluster_id: Option<u32>,
    },
    Query(Query, oneshot::Sender<Reply>),
    /// The agent stops: every session closes with a Cease NOTIFICATION (administrative
    /// shutdown, RFC 4486), except those that negotiated graceful restart, which just
    /// end so that the peer keeps our routes; then the speaker ends and answers.
    Shutdown(oneshot::Sender<()>),
}

/// The agent's side of the speaker.
#[derive(Debug, Clone)]
pub struct Handle {
    pub input: mpsc::UnboundedSender<Input>,
}

impl Handle {
    pub async fn query(&self, q: Query) -> Option<Reply> {
        let (tx, rx) = oneshot::channel();
        self.input.send(Input::Query(q, tx)).ok()?;
        rx.await.ok()
    }

    /// Closes every session with a Cease and ends the speaker; returns when the
    /// sessions have written their NOTIFICATIONs (or after [`SHUTDOWN_WAIT`]).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.input.send(Input::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(SHUTDOWN_WAIT + Duration::from_secs(1), rx).await;
        }
    }
}

/// How long the speaker waits at shutdown for its sessions to send their Cease.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

struct Negotiated {
    theirs: Open,
    families: Vec<Family>,
    local: IpAddr,
    asn4: bool,
    gr: bool,
}

struct Peer {
    n: Neighbor,
    id: PeerId,
    handle: session::Handle,
    state: State,
    since: Instant,
    up: Option<Negotiated>,
    source: Source,
    adj_out: HashMap<Cidr, Arc<PathAttrs>>,
    rejected: HashSet<Cidr>,
    /// Prefixes kept from before a graceful restart, not yet refreshed.
    stale: HashSet<Cidr>,
    stale_until: Option<Instant>,
    updates_received: u64,
    updates_sent: u64,
    last_error: Option<String>,
    /// Families whose End-of-RIB arrived since the session came up.
    eor: Vec<Family>,
    /// Paths refused, by reason (each reason is logged once per session).
    refused: BTreeMap<&'static str, u64>,
}

impl Peer {
    fn ibgp(&self, asn: u32) -> bool {
        self.n.asn == asn
    }
}

pub use super::rib::FibBatch;

/// Starts the speaker. Its FIB batches go to `fib`.
pub async fn spawn(
    config: Config,
    fib: mpsc::UnboundedSender<FibBatch>,
) -> Result<Handle, super::Error> {
    let mut listeners = Vec::new();
    for addr in &config.listen {
        listeners.push(
            socket::listen(*addr).map_err(|source| super::Error::Listen {
                addr: *addr,
                source,
            })?,
        );
    }
    let (input, input_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::channel(1024);
    let s = Speaker::new(config, fib, events_tx, listeners);
    // The speaker (the Loc-RIB and its decisions) has a thread of its own, so that it
    // never shares one with the sessions decoding what it takes in.
    crate::os::spawn_thread("xroute-bgp", s.run(input_rx, events_rx))?;
    Ok(Handle { input })
}

/// Per-UPDATE working buffers.
#[derive(Default)]
struct Scratch {
    changes: RibChanges,
    p4: Vec<lpm::Prefix4>,
    p6: Vec<lpm::Prefix6>,
}

struct Speaker {
    /// The runtime the sessions run on.
    sessions: tokio::runtime::Handle,
    scratch: Scratch,
    config: Config,
    peers: BTreeMap<PeerId, Peer>,
    by_address: HashMap<IpAddr, PeerId>,
    next_id: PeerId,
    rib: Rib,
    locals: HashMap<Cidr, Local>,
    fib: mpsc::UnboundedSender<FibBatch>,
    events: mpsc::Sender<Event>,
    pending_fib: FibBatch,
    /// What the last FIB batch said of initial tables still coming in.
    settling: bool,
    /// Prefixes whose export must be recomputed.
    dirty: HashSet<Cidr>,
    deferring: Option<Instant>,
    listeners: Arc<Vec<TcpListener>>,
    /// Paths whose next hop cannot be reached: out of the Loc-RIB until it can
    /// ([`super::nexthop`]).
    held: Held,
    /// (peer, next hop) of paths in the Loc-RIB whose next hop is reached through
    /// other routes: checked again when routes change.
    recursive: HashSet<(PeerId, IpAddr)>,
}

async fn accept_any(
    listeners: &[TcpListener],
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    let futs = listeners.iter().map(|l| Box::pin(l.accept()));
    futures::future::select_all(futs).await.0
}

impl Speaker {
    fn new(
        config: Config,
        fib: mpsc::UnboundedSender<FibBatch>,
        events: mpsc::Sender<Event>,
        listeners: Vec<TcpListener>,
    ) -> Speaker {
        let deferring = config
            .graceful_restart
            .filter(|g| g.restarting)
            .map(|g| Instant::now() + g.deferral);
        Speaker {
            sessions: tokio::runtime::Handle::current(),
            scratch: Scratch::default(),
            config,
            peers: BTreeMap::new(),
            by_address: HashMap::new(),
            next_id: LOCAL + 1,
            rib: Rib::new(),
            locals: HashMap::new(),
            fib,
            events,
            pending_fib: FibBatch::default(),
            settling: false,
            dirty: HashSet::new(),
            deferring,
            listeners: Arc::new(listeners),
            held: Held::default(),
            recursive: HashSet::new(),
        }
    }

    async fn run(
        mut self,
        mut input: mpsc::UnboundedReceiver<Input>,
        mut events: mpsc::Receiver<Event>,
    ) {
        let listeners = Arc::clone(&self.listeners);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                i = input.recv() => match i {
                    Some(Input::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(i) => self.input(i),
                    None => break,
                },
                Some(e) = events.recv() => {
                    self.event(e);
                    // Take what else is queued before flushing: one batch per burst.
                    let mut n = 0;
                    while n < 4096 {
                        match events.try_recv() {
                            Ok(e) => self.event(e),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                a = accept_any(&listeners) => match a {
                    Ok((stream, from)) => self.accept(stream, from),
                    Err(e) => tracing::warn!(error = %e, "accepting a BGP connection"),
                },
                _ = sleep_until(deadline) => self.expire(),
            }
            self.flush();
        }
        for (_, p) in std::mem::take(&mut self.peers) {
            let _ = p.handle.commands.send(Command::Stop);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.stale_until)
            .chain(self.deferring)
            .min()
    }

    fn accept(&mut self, stream: tokio::net::TcpStream, from: SocketAddr) {
        let ip = canonical(from.ip());
        match self.by_address.get(&ip).and_then(|id| self.peers.get(id)) {
            Some(p) => {
                if let Some(ttl) = self.ttl(&p.n) {
                    if let Err(e) = socket::set_ttl(&stream, ttl) {
                        tracing::warn!(%from, error = %e, "setting the TTL of a BGP connection");
                    }
                }
                if p.handle.incoming.try_send(stream.into()).is_err() {
                    tracing::debug!(%from, "BGP connection dropped: the session is busy");
                }
            }
            None => tracing::info!(%from, "BGP connection from an unknown address refused"),
        }
    }

    fn input(&mut self, i: Input) {
        match i {
            Input::Neighbors(n) => self.set_neighbors(n),
            Input::Locals(l) => self.set_locals(l),
            Input::Node(node) => self.set_node(node),
            Input::Identity { asn, rr_cluster_id } => {
                if (asn, rr_cluster_id) != (self.config.asn, self.config.rr_cluster_id) {
                    tracing::info!(
                        asn,
                        ?rr_cluster_id,
                        "BGP identity changed: sessions restart"
                    );
                    self.config.asn = asn;
                    self.config.rr_cluster_id = rr_cluster_id;
                    let all: Vec<Neighbor> = self.peers.values().map(|p| p.n.clone()).collect();
                    self.set_neighbors(Vec::new());
                    self.set_neighbors(all);
                }
            }
            Input::Query(q, tx) => {
                let _ = tx.send(self.query(q));
            }
            // The loop takes it (and ends); it never reaches here.
            Input::Shutdown(_) => {}
        }
    }

    /// Tells every session to stop (a Cease, or no NOTIFICATION at all where graceful
    /// restart was negotiated) and waits, bounded, for their tasks to end.
    async fn shutdown(&mut self) {
        let restarting = self
            .peers
            .values()
            .filter(|p| p.up.as_ref().is_some_and(|u| u.gr))
            .count();
        tracing::info!(
            peers = self.peers.len(),
            graceful_restart = restarting,
            "BGP speaker stopping: Cease to every peer but those helping a graceful restart"
        );
        for p in self.peers.values() {
            let gr = p.up.as_ref().is_some_and(|u| u.gr);
            let _ = p
                .handle
                .commands
                .send(if gr { Command::Abandon } else { Command::Stop });
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while self.peers.values().any(|p| !p.handle.finished()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.peers.clear();
    }

    fn set_node(&mut self, node: NodeBgp) {
        if node == self.config.node {
            return;
        }
        let rejects_changed = node.import_reject != self.config.node.import_reject;
        let communities_changed = node.communities != self.config.node.communities;
        self.config.node = node;
        if communities_changed {
            // Our own paths carry the communities: originate them again.
            let locals: Vec<Local> = self.locals.drain().map(|(_, l)| l).collect();
            let src = self.local_source();
            let changes: Vec<Change<Cidr>> = locals
                .iter()
                .filter_map(|l| self.rib.update(l.prefix, src, None))
                .collect();
            self.changed(changes);
            self.set_locals(locals);
        }
        // Prepends change every export.
        self.dirty.extend(self.rib.prefixes());
        if rejects_changed {
            let ids: Vec<PeerId> = self.peers.keys().copied().collect();
            for id in ids {
                self.refresh_from(id);
            }
        }
    }

    /// Asks a peer to send its routes again (after an import policy change).
    fn refresh_from(&mut self, id: PeerId) {
        let Some(p) = self.peers.get(&id) else { return };
        let Some(up) = &p.up else { return };
        if up.theirs.route_refresh {
            for &f in &up.families {
                let _ = p.handle.commands.send(Command::Refresh(f));
            }
        } else {
            tracing::warn!(peer = %p.n.address, "peer lacks route refresh: the new import policy applies to its next updates");
        }
    }

    fn ours(&self) -> Open {
        Open {
            asn: self.config.asn,
            hold_time: u16::try_from(self.config.hold_time.as_secs()).unwrap_or(u16::MAX),
            router_id: self.config.router_id,
            asn4: true,
            families: Family::ALL.to_vec(),
            route_refresh: true,
            graceful_restart: self.config.graceful_restart.map(|g| GracefulRestart {
                restarting: g.restarting,
                time: u16::try_from(g.time.as_secs()).unwrap_or(4095).min(4095),
                families: Family::ALL.iter().map(|&f| (f, true)).collect(),
            }),
        }
    }

    /// The TTL of our segments to `n`: its multihop TTL if set, else 1 for an external
    /// peer (directly connected, as GoBGP and so kube-router have it), else the
    /// system's default.
    fn ttl(&self, n: &Neighbor) -> Option<u8> {
        if n.multihop_ttl > 0 {
            Some(n.multihop_ttl)
        } else if n.asn != self.config.asn {
            Some(1)
        } else {
            None
        }
    }

    fn session_config(&self, id: PeerId, n: &Neighbor) -> session::Config {
        session::Config {
            peer: id,
            dial: Dial {
                remote: SocketAddr::new(n.address, n.port),
                local_ip: n.local_ip,
                password: n.password.clone(),
                ttl: self.ttl(n),
            },
            remote_asn: n.asn,
            passive: false,
            ours: self.ours(),
            timers: Timers {
                connect_retry: self.config.connect_retry,
                hold: self.config.hold_time,
                ..Timers::default()
            },
        }
    }

    fn set_md5(&self, address: IpAddr, key: &[u8]) {
        for l in self.listeners.iter() {
            let Ok(a) = l.local_addr() else { continue };
            if a.is_ipv4() == address.is_ipv4() {
                if let Err(e) = socket::set_md5(l, address, key) {
                    // Removing a key that was never set is not an error worth a word.
                    if !key.is_empty() {
                        tracing::error!(error = %e, "BGP listener");
                    }
                }
            }
        }
    }

    fn set_neighbors(&mut self, wanted: Vec<Neighbor>) {
        let wanted: HashMap<IpAddr, Neighbor> = wanted
            .into_iter()
            .map(|n| (canonical(n.address), n))
            .collect();
        // Stop sessions that are gone or changed.
        let gone: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| wanted.get(&canonical(p.n.address)) != Some(&p.n))
            .map(|p| p.id)
            .collect();
        for id in gone {
            if let Some(p) = self.peers.remove(&id) {
                tracing::info!(peer = %p.n.address, "BGP neighbour removed");
                self.by_address.remove(&canonical(p.n.address));
                if p.n.password.is_some() {
                    self.set_md5(p.n.address, b"");
                }
                let _ = p.handle.commands.send(Command::Stop);
                self.remove_paths(&p.source);
            }
        }
        for (addr, n) in wanted {
            if self.by_address.contains_key(&addr) {
                continue;
            }
            if let Some(key) = &n.password {
                self.set_md5(n.address, key);
            }
            let id = self.next_id;
            // Sessions run on the agent's runtime, beside the speaker's thread.
            let _runtime = self.sessions.enter();
            let handle = session::spawn(self.session_config(id, &n), self.events.clone());
            tracing::info!(peer = %n.address, asn = n.asn, "BGP neighbour added");
            self.add_peer(n, handle);
        }
    }

    /// Takes a neighbour whose session runs as `handle`; returns its id.
    fn add_peer(&mut self, n: Neighbor, handle: session::Handle) -> PeerId {
        let id = self.next_id;
        self.next_id += 1;
        let addr = canonical(n.address);
        {
            let source = Source {
                peer: id,
                router_id: Ipv4Addr::UNSPECIFIED,
                address: n.address,
                ebgp: n.asn != self.config.asn,
                local: false,
            };
            self.by_address.insert(addr, id);
            self.peers.insert(
                id,
                Peer {
                    n,
                    id,
                    handle,
                    state: State::Idle,
                    since: Instant::now(),
                    up: None,
                    source,
                    adj_out: HashMap::new(),
                    rejected: HashSet::new(),
                    stale: HashSet::new(),
                    stale_until: None,
                    updates_received: 0,
                    updates_sent: 0,
                    last_error: None,
                    eor: Vec::new(),
                    refused: BTreeMap::new(),
                },
            );
        }
        id
    }

    fn local_source(&self) -> Source {
        Source {
            peer: LOCAL,
            router_id: self.config.router_id,
            address: IpAddr::V4(self.config.router_id),
            ebgp: false,
            local: true,
        }
    }

    fn set_locals(&mut self, locals: Vec<Local>) {
        let new: HashMap<Cidr, Local> = locals.into_iter().map(|l| (l.prefix, l)).collect();
        let src = self.local_source();
        let mut changes = Vec::new();
        let old: Vec<Cidr> = self.locals.keys().copied().collect();
        for prefix in old {
            if !new.contains_key(&prefix) {
                changes.extend(self.rib.update(prefix, src, None));
                self.dirty.insert(prefix);
            }
        }
        for (prefix, l) in &new {
            if self.locals.get(prefix) == Some(l) {
                continue;
            }
            // The next hop is filled in per peer on export (next-hop self).
            let attrs = PathAttrs {
                origin: Origin::Igp,
                as_path: Vec::new(),
                next_hop: match prefix {
                    Cidr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    Cidr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                },
                med: None,
                local_pref: None,
                communities: self.config.node.communities.clone(),
                ext_communities: Vec::new(),
                large_communities: Vec::new(),
                originator_id: None,
                cluster_list: Vec::new(),
            };
            changes.extend(self.rib.update(*prefix, src, Some(Arc::new(attrs))));
            self.dirty.insert(*prefix);
        }
        self.locals = new;
        self.changed(changes);
    }

    /// Takes a peer's paths out of the Loc-RIB (and those waiting for their next hop).
    fn remove_paths(&mut self, source: &Source) {
        self.held.forget_peer(source.peer);
        self.recursive.retain(|&(peer, _)| peer != source.peer);
        let mut changes = std::mem::take(&mut self.scratch.changes);
        changes.clear();
        self.rib.remove_peer(source, &mut changes);
        self.changed_batch(&changes);
        self.scratch.changes = changes;
        self.recheck_next_hops();
    }

    /// Whether a peer is one hop away (eBGP without multihop): its next hops must be
    /// on a connected subnet.
    fn direct(&self, p: &Peer) -> bool {
        self.ttl(&p.n) == Some(1)
    }

    /// After a change of the Loc-RIB: paths held back for their next hop go in if it
    /// can be reached now, and paths whose recursive next hop cannot be reached any
    /// more (or only through the path's own prefix) come out, until nothing moves (each
    /// move can change what resolves). One resolution per distinct next hop.
    fn recheck_next_hops(&mut self) {
        const ROUNDS: usize = 8;
        for _ in 0..ROUNDS {
            if self.held.is_empty() && self.recursive.is_empty() {
                return;
            }
            let mut moved: Vec<Change<Cidr>> = Vec::new();
            // Reachable now: into the Loc-RIB.
            for (peer, nh) in self.held.next_hops() {
                let Some((source, direct)) =
                    self.peers.get(&peer).map(|p| (p.source, self.direct(p)))
                else {
                    continue;
                };
                let Some(r) = self.config.reachability.resolve(nh, direct, &self.rib) else {
                    continue;
                };
                for (prefix, attrs) in self.held.paths(peer, nh) {
                    if !r.allows(&prefix) {
                        continue;
                    }
                    self.held.forget(peer, &prefix);
                    if r.how == Resolution::Recursive {
                        self.recursive.insert((peer, nh));
                    }
                    tracing::info!(peer = %source.address, %prefix, next_hop = %nh, "next hop reachable now: path eligible");
                    moved.extend(self.rib.update(prefix, source, Some(attrs)));
                }
            }
            // Not reachable any more, or only through a path's own prefix: held back.
            let pairs: Vec<(PeerId, IpAddr)> = self.recursive.iter().copied().collect();
            for (peer, nh) in pairs {
                let Some((source, direct)) =
                    self.peers.get(&peer).map(|p| (p.source, self.direct(p)))
                else {
                    self.recursive.remove(&(peer, nh));
                    continue;
                };
                let candidates = match self.config.reachability.resolve(nh, direct, &self.rib) {
                    // Only a path for a prefix it resolves through can be wrong now.
                    Some(r) => r.through,
                    None => {
                        self.recursive.remove(&(peer, nh));
                        self.rib.peer_prefixes(peer)
                    }
                };
                for prefix in candidates {
                    let path = self
                        .rib
                        .paths(&prefix)
                        .into_iter()
                        .find(|path| path.source.peer == peer && path.attrs.next_hop == nh);
                    if let Some(path) = path {
                        tracing::info!(peer = %source.address, %prefix, next_hop = %nh, "next hop not reachable (or only through this prefix): path held back");
                        self.held.hold(peer, prefix, path.attrs);
                        moved.extend(self.rib.update(prefix, source, None));
                    }
                }
            }
            if moved.is_empty() {
                return;
            }
            self.changed(moved);
        }
        tracing::warn!(
            "next hops still changing after {ROUNDS} rounds; checked again at the next change"
        );
    }

    /// [`Speaker::changed`] for a batch from the Loc-RIB.
    fn changed_batch(&mut self, changes: &RibChanges) {
        let reflecting = self.config.rr_cluster_id.is_some();
        let local = changes
            .v4
            .decisions()
            .iter()
            .chain(changes.v6.decisions())
            .any(|d| d.local);
        if reflecting || local {
            for (prefix, d) in changes.iter() {
                if reflecting || d.is_some_and(|d| d.local) {
                    self.dirty.insert(prefix);
                }
            }
        }
        self.pending_fib.extend(changes);
    }

    /// Records Loc-RIB changes: for the FIB and for export.
    fn changed(&mut self, changes: impl IntoIterator<Item = Change<Cidr>>) {
        // Learned paths are exported only when reflecting (kube-router's policy sends
        // external peers our own prefixes alone, and iBGP-learned paths go to iBGP
        // peers only through a reflector); our own prefixes mark themselves dirty
        // where they change. So without a cluster id a learned change exports nothing.
        let reflecting = self.config.rr_cluster_id.is_some();
        for c in changes {
            let local = c.best.as_ref().is_some_and(|b| b.local);
            if reflecting || local {
                self.dirty.insert(c.prefix);
            }
            self.pending_fib.push(&c);
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::State { peer, state } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.state != state {
                        p.state = state;
                        if state == State::Established || p.up.is_none() {
                            p.since = Instant::now();
                        }
                    }
                }
            }
            Event::Up {
                peer,
                ours,
                theirs,
                local,
            } => self.up(peer, &ours, theirs, local),
            Event::Down {
                peer,
                reason,
                graceful,
            } => self.down(peer, reason, graceful),
            Event::Update { peer, update } => self.update(peer, update),
            Event::Refresh { peer, family } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.adj_out.retain(|prefix, _| Family::of(prefix) != family);
                }
                self.advertise_all(peer, Some(family));
            }
        }
    }

    fn up(&mut self, id: PeerId, ours: &Open, theirs: Open, local: IpAddr) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let families = ours.common_families(&theirs);
        let gr = ours.graceful_restart.is_some() && theirs.graceful_restart.is_some();
        p.source.router_id = theirs.router_id;
        p.since = Instant::now();
        p.state = State::Established;
        p.eor.clear();
        p.adj_out.clear();
        p.refused.clear();
        p.up = Some(Negotiated {
            asn4: theirs.asn4,
            theirs,
            families,
            local: canonical(local),
            gr,
        });
        // Paths kept over a graceful restart still carry the old router id; they are
        // refreshed by the peer's new UPDATEs and the rest go at End-of-RIB.
        self.advertise_all(id, None);
    }

    fn down(&mut self, id: PeerId, reason: String, graceful: bool) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let was_up = p.up.take();
        p.last_error = Some(reason);
        // Paths held for their next hop come again with the next session.
        self.held.forget_peer(id);
        p.adj_out.clear();
        p.since = Instant::now();
        let restart_time = was_up
            .as_ref()
            .and_then(|u| u.theirs.graceful_restart.as_ref())
            .map(|g| Duration::from_secs(u64::from(g.time)));
        match (graceful, restart_time) {
            (true, Some(t)) if !t.is_zero() => {
                // RFC 4724 4.2: keep the routes, stale, for the restart time.
                p.stale = self.rib.peer_prefixes(id).into_iter().collect();
                p.stale_until = Some(Instant::now() + t);
                tracing::info!(peer = %p.n.address, routes = p.stale.len(), secs = t.as_secs(), "graceful restart: routes kept as stale");
            }
            _ => {
                p.stale.clear();
                p.stale_until = None;
                p.rejected.clear();
                let src = p.source;
                self.remove_paths(&src);
            }
        }
    }

    fn update(&mut self, id: PeerId, u: wire::Update) {
        let Some(p) = self.peers.get(&id) else { return };
        let Some(up) = &p.up else { return };
        let src = p.source;
        let ibgp = p.ibgp(self.config.asn);
        let direct = self.direct(p);
        let mut refused: Vec<(&'static str, Cidr)> = Vec::new();
        let mut held: Vec<(Cidr, Arc<PathAttrs>)> = Vec::new();
        // Buffers kept from one UPDATE to the next: no allocation per message.
        let Scratch {
            mut changes,
            mut p4,
            mut p6,
        } = std::mem::take(&mut self.scratch);
        changes.clear();
        let mut rejected = Vec::new();
        let split = |prefixes: &mut dyn Iterator<Item = Cidr>, p4: &mut Vec<_>, p6: &mut Vec<_>| {
            p4.clear();
            p6.clear();
            for c in prefixes {
                match c {
                    Cidr::V4(x) => p4.push(x),
                    Cidr::V6(x) => p6.push(x),
                }
            }
        };
        split(&mut u.withdrawn.iter().copied(), &mut p4, &mut p6);
        self.rib.v4.withdraw(src, &p4, &mut changes.v4);
        self.rib.v6.withdraw(src, &p6, &mut changes.v6);
        for (attrs, prefixes) in &u.announced {
            let attrs = if ibgp || attrs.local_pref.is_none() {
                Arc::clone(attrs)
            } else {
                // LOCAL_PREF from an external peer is ignored (RFC 4271 5.1.5).
                let mut a = (**attrs).clone();
                a.local_pref = None;
                Arc::new(a)
            };
            let verdict = self.import_attrs(p, up, &attrs);
            // RFC 4271 9.1.2: a path whose next hop cannot be reached is not eligible;
            // it waits aside for a route that reaches it.
            let reach: Option<Resolved> = match verdict {
                Ok(()) => self
                    .config
                    .reachability
                    .resolve(attrs.next_hop, direct, &self.rib),
                Err(_) => None,
            };
            if reach
                .as_ref()
                .is_some_and(|r| r.how == Resolution::Recursive)
            {
                self.recursive.insert((id, attrs.next_hop));
            }
            let first_refused = rejected.len();
            let first_held = held.len();
            let mut accepted = prefixes.iter().copied().filter(|prefix| {
                match verdict.and_then(|()| self.import_prefix(up, prefix)) {
                    // Eligible unless it resolves through its own prefix.
                    Ok(()) if reach.as_ref().is_some_and(|r| r.allows(prefix)) => true,
                    Ok(()) => {
                        held.push((*prefix, Arc::clone(&attrs)));
                        false
                    }
                    Err(why) => {
                        refused.push((why, *prefix));
                        rejected.push(*prefix);
                        false
                    }
                }
            });
            split(&mut accepted, &mut p4, &mut p6);
            self.rib.v4.announce(src, &attrs, &p4, &mut changes.v4);
            self.rib.v6.announce(src, &attrs, &p6, &mut changes.v6);
            // Refused and held paths replace what the peer sent before: out of the
            // Loc-RIB.
            split(
                &mut rejected[first_refused..]
                    .iter()
                    .copied()
                    .chain(held[first_held..].iter().map(|(p, _)| *p)),
                &mut p4,
                &mut p6,
            );
            self.rib.v4.withdraw(src, &p4, &mut changes.v4);
            self.rib.v6.withdraw(src, &p6, &mut changes.v6);
        }
        // What the peer says now of a prefix replaces a path held back for it.
        if !self.held.is_empty() {
            let told = u
                .withdrawn
                .iter()
                .chain(u.announced.iter().flat_map(|(_, v)| v.iter()));
            for prefix in told {
                self.held.forget(id, prefix);
            }
        }
        for (prefix, attrs) in held {
            refused.push(("next hop unreachable", prefix));
            self.held.hold(id, prefix, attrs);
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.updates_received += 1;
        for (why, prefix) in refused {
            let n = p.refused.entry(why).or_insert(0);
            if *n == 0 {
                tracing::info!(
                    peer = %p.n.address,
                    %prefix,
                    reason = why,
                    "route refused (logged once per peer and reason; counted in `xroute bgp neighbors`)"
                );
            }
            *n += 1;
        }
        if !p.rejected.is_empty() || !p.stale.is_empty() {
            let refreshed = u
                .withdrawn
                .iter()
                .chain(u.announced.iter().flat_map(|(_, v)| v.iter()));
            for prefix in refreshed {
                p.rejected.remove(prefix);
                p.stale.remove(prefix);
            }
        }
        p.rejected.extend(rejected);
        let eor = u.end_of_rib;
        self.changed_batch(&changes);
        self.scratch = Scratch { changes, p4, p6 };
        self.recheck_next_hops();
        if let Some(f) = eor {
            if let Some(p) = self.peers.get_mut(&id) {
                if !p.eor.contains(&f) {
                    p.eor.push(f);
                }
            }
            self.sweep_stale(id, Some(f));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (what a dual-stack listener reports).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// `outer` covers `inner`: same family, shorter or equal, and contains it.
pub fn covers(outer: &Cidr, inner: &Cidr) -> bool {
    match (outer, inner) {
        (Cidr::V4(o), Cidr::V4(i)) => o.covers(i),
        (Cidr::V6(o), Cidr::V6(i)) => o.covers(i),
        _ => false,
    }
}

mod adj_rib_out;
mod graceful_restart;
mod policy;
mod status;

#[cfg(test)]
pub(crate) mod replay;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_communities_read_as_operators_write_them() {
        assert_eq!(ext_community_text(0x0002_fde8_0000_0064), "rt:65000:100");
        assert_eq!(ext_community_text(0x0103_c000_0201_0007), "soo:192.0.2.1:7");
        assert_eq!(ext_community_text(0x0202_fa56_ea00_0009), "rt:4200000000:9");
        assert_eq!(
            ext_community_text(0x4300_0000_0000_0001),
            "0x4300000000000001"
        );
    }
}
