//! Kernel sync: what the fastpath needs from the node's own stack.
//!
//! - Links: an interface's MAC and MTU (from sysfs, which every kernel with a netdev
//!   has, so this works before the netlink socket is up).
//! - Neighbours: the fastpath does not ARP on the uplink; the kernel does. For every
//!   next hop on the uplink the agent asks the kernel for a *managed* neighbour entry
//!   (`NTF_EXT_MANAGED`, Linux 5.16+), which the kernel resolves and keeps resolved
//!   without traffic, and follows the entries' changes on a netlink subscription
//!   ([`subscribe`], `RTNLGRP_NEIGH`), with a dump now and then to catch up on what
//!   a full socket buffer lost. Until a MAC is known, the fastpath punts that next
//!   hop's packets to the kernel, which resolves and forwards them itself.
//! - Link changes (`RTNLGRP_LINK`): a port's MTU, so that too-big answers stay right.
//! - Routes: what BGP learned goes into the kernel's table too, out of the host port,
//!   so the node's own stack reaches it through the fastpath (flow F7).

use crate::config::Cidr;
use crate::model::{Link, Neighbours};
use fastpath::wire::ethernet::Mac;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
pub use rtnetlink::Handle;
use rtnetlink::RouteMessageBuilder;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What went wrong reading or changing the kernel's state, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "interface {name}: cannot read {path}: {source} (does it exist in this network namespace?)"
    )]
    LinkUnreadable {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {name} has no Ethernet address")]
    NoMac { name: String },
    #[error("interface {name}: unreadable MTU `{value}`")]
    BadMtu { name: String, value: String },
    #[error("interface {name} not found in this network namespace")]
    NoSuchInterface { name: String },
    #[error("{what}: {source}")]
    Socket {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("the kernel route sync thread {0}")]
    RouteSyncGone(&'static str),
    #[error(transparent)]
    Os(#[from] crate::os::Error),
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |source| Error::Netlink { what, source }
}

/// Reads an interface's MAC and MTU.
pub fn read_link(name: &str) -> Result<Link, Error> {
    let dir = format!("/sys/class/net/{name}");
    let read = |what: &str| {
        let path = format!("{dir}/{what}");
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|source| Error::LinkUnreadable {
                name: name.into(),
                path,
                source,
            })
    };
    let mac = crate::config::parse_mac(&read("address")?)
        .ok_or_else(|| Error::NoMac { name: name.into() })?;
    let value = read("mtu")?;
    let mtu = value.parse::<u32>().map_err(|_| Error::BadMtu {
        name: name.into(),
        value: value.clone(),
    })?;
    Ok(Link {
        name: name.to_string(),
        mac,
        mtu: mtu.min(u32::from(u16::MAX)) as u16,
    })
}

/// An interface's index.
pub fn ifindex(name: &str) -> Result<u32, Error> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::NoSuchInterface { name: name.into() })
}

/// Opens a netlink connection on the current tokio runtime.
pub fn connect() -> Result<Handle, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| Error::Socket {
        what: "opening a netlink socket",
        source,
    })?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Asks the kernel to resolve `addr` on interface `ifindex` and keep it resolved.
/// An entry that already exists is left as it is.
pub async fn ensure_managed(handle: &Handle, ifindex: u32, addr: IpAddr) -> Result<(), Error> {
    let mut req = handle
        .neighbours()
        .add(ifindex, addr)
        .state(NeighbourState::None);
    req.message_mut()
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_eexist() => Ok(()),
        Err(e) => Err(netlink(format!(
            "adding a managed neighbour entry for {addr}"
        ))(e)),
    }
}

fn libc_eexist() -> i32 {
    17 // EEXIST
}

/// The resolved neighbours on interface `ifindex` (entries with a MAC that is not
/// failed or incomplete).
pub async fn neighbours(handle: &Handle, ifindex: u32) -> Result<Neighbours, Error> {
    let mut dump = handle.neighbours().get().execute();
    let mut out = Neighbours::new();
    while let Some(msg) = dump
        .try_next()
        .await
        .map_err(netlink("dumping neighbours"))?
    {
        if let Some(KernelEvent::Neighbour {
            ifindex: at,
            addr,
            mac: Some(mac),
        }) = neighbour_event(msg, true)
        {
            if at == ifindex {
                out.insert(addr, mac);
            }
        }
    }
    Ok(out)
}

/// The routes of ours a previous run left in the kernel (out of the host port, interface
/// `ifindex`): kept and returned when `graceful_restart` (the next run takes them over
/// once its peers' tables are in), else removed at once (and none returned).
pub async fn previous_routes(
    handle: &Handle,
    ifindex: u32,
    graceful_restart: bool,
) -> Result<std::collections::HashSet<Cidr>, Error> {
    let old = our_routes(handle, ifindex).await?;
    if graceful_restart {
        if !old.is_empty() {
            tracing::info!(
                routes = old.len(),
                "graceful restart: keeping the kernel routes of the previous run"
            );
        }
        return Ok(old.into_iter().collect());
    }
    for prefix in &old {
        route_delete(handle, prefix, ifindex).await?;
    }
    Ok(std::collections::HashSet::new())
}

/// What the kernel said changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A neighbour entry on interface `ifindex`: its MAC, or `None` when it went or
    /// is not usable (incomplete, failed).
    Neighbour {
        ifindex: u32,
        addr: IpAddr,
        mac: Option<Mac>,
    },
    /// An interface's MTU (sent with every link change; the caller keeps what differs).
    Mtu { ifindex: u32, mtu: u32 },
    /// The subscription lost messages (the socket's buffer overflowed) or ended: what
    /// it follows must be read again by a dump.
    Resync,
}

/// Subscribes to the kernel's neighbour and link changes, on the current tokio
/// runtime. The receiver ends if the socket fails.
pub fn subscribe() -> Result<tokio::sync::mpsc::UnboundedReceiver<KernelEvent>, Error> {
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage as M;
    let (mut connection, _handle, mut messages) =
        rtnetlink::new_connection().map_err(|source| Error::Socket {
            what: "opening a netlink socket for kernel events",
            source,
        })?;
    let groups = rtnetlink::constants::RTMGRP_NEIGH | rtnetlink::constants::RTMGRP_LINK;
    use rtnetlink::sys::AsyncSocket;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, groups))
        .map_err(|source| Error::Socket {
            what: "subscribing to the kernel's neighbour and link changes",
            source,
        })?;
    tokio::spawn(connection);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(M::NewNeighbour(n)) => neighbour_event(n, true),
                NetlinkPayload::InnerMessage(M::DelNeighbour(n)) => neighbour_event(n, false),
                NetlinkPayload::InnerMessage(M::NewLink(l)) => {
                    l.attributes.iter().find_map(|a| match a {
                        rtnetlink::packet_route::link::LinkAttribute::Mtu(mtu) => {
                            Some(KernelEvent::Mtu {
                                ifindex: l.header.index,
                                mtu: *mtu,
                            })
                        }
                        _ => None,
                    })
                }
                NetlinkPayload::Overrun(_) | NetlinkPayload::Error(_) => Some(KernelEvent::Resync),
                _ => None,
            };
            if let Some(e) = event {
                if tx.send(e).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(KernelEvent::Resync);
    });
    Ok(rx)
}

fn neighbour_event(
    msg: rtnetlink::packet_route::neighbour::NeighbourMessage,
    present: bool,
) -> Option<KernelEvent> {
    let usable = present
        && !matches!(
            msg.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        );
    let mut addr = None;
    let mut mac: Option<Mac> = None;
    for a in msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                addr = Some(IpAddr::V4(v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                addr = Some(IpAddr::V6(v6))
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = l.as_slice().try_into().ok(),
            _ => {}
        }
    }
    Some(KernelEvent::Neighbour {
        ifindex: msg.header.ifindex,
        addr: addr?,
        mac: mac.filter(|_| usable),
    })
}

/// The routing protocol number xroute's kernel routes carry: RTPROT_BGP (`ip route`
/// shows `proto bgp`). With the host port as their interface, they are told from any
/// other daemon's and swept after a restart.
pub const ROUTE_PROTOCOL: u8 = 186;

fn route_message(prefix: &Cidr, ifindex: u32, src: Option<IpAddr>) -> RouteMessage {
    let proto = RouteProtocol::from(ROUTE_PROTOCOL);
    match *prefix {
        Cidr::V4(p) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(Ipv4Addr::from(p.addr()), p.len())
                .output_interface(ifindex)
                .scope(RouteScope::Link)
                .protocol(proto);
            if let Some(IpAddr::V4(s)) = src {
                b = b.pref_source(s);
            }
            b.build()
        }
        Cidr::V6(p) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(Ipv6Addr::from(p.addr()), p.len())
                .output_interface(ifindex)
                .protocol(proto);
            if let Some(IpAddr::V6(s)) = src {
                b = b.pref_source(s);
            }
            b.build()
        }
    }
}

/// Installs (or replaces) a route to `prefix` out of interface `ifindex` (the
/// kernel's end of the host port), so the node's own stack hands those packets to the
/// fastpath. `src` is the source address the stack picks for them.
pub async fn route_replace(
    handle: &Handle,
    prefix: &Cidr,
    ifindex: u32,
    src: Option<IpAddr>,
) -> Result<(), Error> {
    handle
        .route()
        .add(route_message(prefix, ifindex, src))
        .replace()
        .execute()
        .await
        .map_err(netlink(format!("kernel route to {prefix}")))
}

/// Removes our route to `prefix`; one already gone is not an error.
pub async fn route_delete(handle: &Handle, prefix: &Cidr, ifindex: u32) -> Result<(), Error> {
    match handle
        .route()
        .del(route_message(prefix, ifindex, None))
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -3 => Ok(()), // ESRCH
        Err(e) => Err(netlink(format!("removing kernel route to {prefix}"))(e)),
    }
}

/// The prefixes of the routes xroute installed (protocol [`ROUTE_PROTOCOL`], out of
/// interface `ifindex`) in the main table, both families.
pub async fn our_routes(handle: &Handle, ifindex: u32) -> Result<Vec<Cidr>, Error> {
    let mut out = Vec::new();
    for msg in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut dump = handle.route().get(msg).execute();
        while let Some(r) = dump.try_next().await.map_err(netlink("dumping routes"))? {
            let ours = r.header.protocol == RouteProtocol::from(ROUTE_PROTOCOL)
                && r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == ifindex));
            if !ours {
                continue;
            }
            let len = r.header.destination_prefix_length;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => {
                        out.push(Cidr::V4(lpm::Prefix4::new_masked(u32::from(*v4), len)))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(v6)) => {
                        out.push(Cidr::V6(lpm::Prefix6::new_masked(u128::from(*v6), len)))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

use crate::bgp::rib::FibBatch;

/// What the route-sync task is asked to do, in order.
#[derive(Debug)]
pub enum RouteWork {
    /// Install or remove these routes.
    Batch(RouteBatch),
    /// Remove every route of ours (the agent is stopping without graceful restart),
    /// then end; the answer is how many there were.
    RemoveAll(tokio::sync::oneshot::Sender<Result<usize, Error>>),
}

/// The route-sync task: send it [`RouteWork`]. A send fails only once the task has
/// ended; [`RouteSync::batch`] reports that instead of dropping the routes silently.
#[derive(Debug, Clone)]
pub struct RouteSync {
    tx: tokio::sync::mpsc::UnboundedSender<RouteWork>,
}

impl RouteSync {
    /// Queues a batch of route changes.
    pub fn batch(&self, b: RouteBatch) -> Result<(), Error> {
        self.tx
            .send(RouteWork::Batch(b))
            .map_err(|_| Error::RouteSyncGone("has ended: routes not installed"))
    }

    /// Removes every route of ours after the queued batches, and ends the task.
    pub async fn remove_all(&self) -> Result<usize, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(RouteWork::RemoveAll(tx))
            .map_err(|_| Error::RouteSyncGone("has ended"))?;
        rx.await
            .map_err(|_| Error::RouteSyncGone("ended before removing the routes"))?
    }
}

/// Routes to install (`true`) or remove, per family, compact: a backlog of a full
/// table costs 12 bytes a route for IPv4.
#[derive(Debug, Default)]
pub struct RouteBatch {
    pub v4: Vec<(lpm::Prefix4, bool)>,
    pub v6: Vec<(lpm::Prefix6, bool)>,
}

impl RouteBatch {
    /// What a batch of FIB changes asks of the kernel.
    pub fn of(b: &FibBatch) -> RouteBatch {
        RouteBatch {
            v4: b
                .v4
                .iter()
                .map(|&(p, g)| (p, g != FibBatch::NONE))
                .collect(),
            v6: b
                .v6
                .iter()
                .map(|&(p, g)| (p, g != FibBatch::NONE))
                .collect(),
        }
    }

    fn append(&mut self, mut other: RouteBatch) {
        self.v4.append(&mut other.v4);
        self.v6.append(&mut other.v6);
    }

    fn into_iter(self) -> impl Iterator<Item = (Cidr, bool)> {
        self.v4
            .into_iter()
            .map(|(p, x)| (Cidr::V4(p), x))
            .chain(self.v6.into_iter().map(|(p, x)| (Cidr::V6(p), x)))
    }
}

/// Starts the task that keeps the kernel's routes out of interface `ifindex` (the
/// host port's kernel end) as the learned routes are: it takes `(prefix, present)`
/// batches, coalesces what is queued, and installs or removes routes with several
/// netlink requests in flight, on a thread of its own at background priority with its
/// own netlink socket. `leftover` are routes of a previous run: removed at
/// once, or, when `keep_leftover` (a graceful restart), with the first batch unless
/// learned again.
pub fn spawn_route_sync(
    ifindex: u32,
    src4: Option<IpAddr>,
    src6: Option<IpAddr>,
    mut leftover: std::collections::HashSet<Cidr>,
    keep_leftover: bool,
) -> Result<RouteSync, Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RouteWork>();
    crate::os::spawn_thread("xroute-kroutes", async move {
        // Background priority: the kernel's copy of the routes serves the node's own
        // stack and may lag a burst; the sessions and the FIB come first.
        if let Err(e) = crate::os::set_nice(ROUTE_SYNC_NICE) {
            tracing::warn!(error = %e, "kernel route sync");
        }
        let netlink = match connect() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "kernel route sync not started");
                return;
            }
        };
        if !keep_leftover && !leftover.is_empty() {
            let n = leftover.len();
            let work: Vec<(Cidr, bool)> = leftover.drain().map(|p| (p, false)).collect();
            sync_routes(&netlink, ifindex, src4, src6, work).await;
            tracing::info!(routes = n, "kernel routes of a previous run removed");
        }
        let mut last: Option<tokio::sync::oneshot::Sender<Result<usize, Error>>> = None;
        while let Some(work) = rx.recv().await {
            let mut batch = match work {
                RouteWork::Batch(b) => b,
                RouteWork::RemoveAll(done) => {
                    last = Some(done);
                    break;
                }
            };
            // Let a burst settle first (a table streaming in): its routes then
            // go in once, after the sessions and the FIB are done with it,
            // rather than competing with them route by route.
            let started = tokio::time::Instant::now();
            while started.elapsed() < ROUTE_SYNC_MAX_WAIT {
                match tokio::time::timeout(ROUTE_SYNC_QUIET, rx.recv()).await {
                    Ok(Some(RouteWork::Batch(more))) => batch.append(more),
                    Ok(Some(RouteWork::RemoveAll(done))) => {
                        last = Some(done);
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            let mut batch: Box<dyn Iterator<Item = (Cidr, bool)> + Send> =
                Box::new(batch.into_iter());
            if !leftover.is_empty() {
                // After a graceful restart: what the new run does not learn
                // again goes now.
                let all: Vec<(Cidr, bool)> = batch.collect();
                for (p, _) in &all {
                    leftover.remove(p);
                }
                let gone: Vec<(Cidr, bool)> = leftover.drain().map(|p| (p, false)).collect();
                batch = Box::new(all.into_iter().chain(gone));
            }
            // In chunks, in order: each chunk's last word on a prefix counts,
            // and a chunk ends before the next starts, so the kernel ends with
            // the batch's last word while the work in flight stays bounded.
            let mut batch = batch.peekable();
            while batch.peek().is_some() {
                let chunk: std::collections::HashMap<Cidr, bool> =
                    batch.by_ref().take(ROUTE_SYNC_CHUNK).collect();
                sync_routes(&netlink, ifindex, src4, src6, chunk.into_iter().collect()).await;
            }
            if last.is_some() {
                break;
            }
        }
        if let Some(done) = last {
            // What this run (or a previous one) installed, read back from the kernel.
            let result = match our_routes(&netlink, ifindex).await {
                Ok(routes) => {
                    let n = routes.len();
                    let work = routes.into_iter().map(|p| (p, false)).collect();
                    sync_routes(&netlink, ifindex, src4, src6, work).await;
                    Ok(n)
                }
                Err(e) => Err(e),
            };
            let _ = done.send(result);
        }
    })?;
    Ok(RouteSync { tx })
}

/// Nice value of the kernel route sync thread.
const ROUTE_SYNC_NICE: i32 = 10;
/// The kernel route sync waits for this long without a new batch before it starts…
const ROUTE_SYNC_QUIET: std::time::Duration = std::time::Duration::from_millis(100);
/// …but never longer than this after the first.
const ROUTE_SYNC_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Routes deduplicated and sent together by the kernel route sync.
const ROUTE_SYNC_CHUNK: usize = 16384;

/// Installs (`true`) or removes each route, 64 requests in flight. Removing a route the
/// kernel does not have is no error.
async fn sync_routes(
    netlink: &Handle,
    ifindex: u32,
    src4: Option<IpAddr>,
    src6: Option<IpAddr>,
    work: Vec<(Cidr, bool)>,
) {
    use futures::StreamExt;
    futures::stream::iter(work)
        .for_each_concurrent(64, |(p, present)| async move {
            let src = match p {
                Cidr::V4(_) => src4,
                Cidr::V6(_) => src6,
            };
            let r = if present {
                route_replace(netlink, &p, ifindex, src).await
            } else {
                route_delete(netlink, &p, ifindex).await
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "kernel route");
            }
        })
        .await;
}
