//! The control loop: what keeps the fastpath's snapshot true to the node.
//!
//! One task, woken by whichever comes first: the kernel's neighbour and link changes
//! ([`kernel::subscribe`]), the BGP speaker's FIB batches, the end of a snapshot build,
//! or the poll timer (ask the kernel to resolve missing next hops, read its neighbour
//! table back, look at the configuration file). Each job has a module:
//!
//! - [`neighbours`]: the uplink next hops wanted and their MACs.
//! - [`build`]: snapshot builds off the control thread, one at a time, learned routes
//!   at the end of their burst.
//! - [`routing`]: the BGP speaker, its plan, the kernel's copy of the learned routes.
//! - [`watch`]: edits of the configuration file.
//!
//! The agent starts the ports and the workers, then hands the loop its inputs
//! ([`Setup`]) and a future that ends it (a signal); the stats endpoint reads [`View`].

pub mod build;
pub mod neighbours;
pub mod routing;
pub mod watch;

use crate::bgp::peering::BgpOptions;
use crate::bgp::speaker;
use crate::config::Config;
use crate::kernel::{self, KernelEvent};
use crate::model::{uplink_next_hops, Fib, Link};
use build::{Builds, Inputs};
use fastpath::snapshot::SnapshotCell;
use fastpath::wire::ethernet::Mac;
use neighbours::NeighbourSync;
use routing::Routing;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use watch::ConfigWatch;

/// How often new uplink next hops are handed to the kernel to resolve, and the
/// configuration file is looked at.
const NEIGHBOUR_POLL: Duration = Duration::from_millis(500);

/// How often the kernel's neighbour table is read back whole, besides following its
/// changes (a netlink subscription loses messages when its buffer overflows).
const NEIGHBOUR_RESYNC: Duration = Duration::from_secs(10);

/// How often the conntrack tables are swept for their occupancy (expired entries are
/// freed on the way; workers never need it, they reuse expired slots).
const CONNTRACK_SWEEP: Duration = Duration::from_secs(10);

/// Why the control loop could not start or had to end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error(transparent)]
    Bgp(#[from] crate::bgp::Error),
    #[error("building the forwarding tables: {0}")]
    Build(#[from] crate::model::BuildError),
    #[error("the forwarding tables are inconsistent: {0}")]
    Snapshot(#[from] fastpath::snapshot::SnapshotError),
    #[error("the FIB build thread failed: {0}")]
    BuildThread(#[from] tokio::task::JoinError),
}

/// What the control loop last did, for the stats endpoint.
#[derive(Debug, Default)]
pub struct View {
    /// The resolved uplink neighbours the snapshot forwards with.
    pub neighbours: Mutex<Vec<(IpAddr, Mac)>>,
    /// Neighbour MACs and port MTUs changed by the kernel's announcements (its netlink
    /// subscription), not by a table dump.
    pub events: AtomicU64,
    /// Whole neighbour table reads (the periodic catch-up).
    pub dumps: AtomicU64,
    /// Routes learned by BGP in the newest published snapshot.
    pub learned_in_snapshot: AtomicUsize,
}

/// The BGP speaker's settings from the flags.
#[derive(Debug, Clone)]
pub struct BgpStart {
    /// kube-router's `--router-id`.
    pub router_id: Option<String>,
    pub options: BgpOptions,
}

/// What the loop starts from: the configuration and the ports as the agent set them
/// up, the FIB the first snapshot was built from and the cell it was published in.
#[derive(Debug)]
pub struct Setup {
    pub config_path: PathBuf,
    pub config: Config,
    /// The ports' links, in [`crate::model::port_plan`] order, and their interface
    /// indexes.
    pub links: Vec<Link>,
    pub port_indexes: Vec<u32>,
    /// The host port's kernel end.
    pub kernel_end: Link,
    pub host_index: u32,
    pub uplink_index: u32,
    pub fib: Fib,
    pub cell: Arc<SnapshotCell>,
    /// The service proxy's tables, which every snapshot shares.
    pub proxy: Arc<crate::services::Proxy>,
    /// The ports' steering programs (the uplink's at [`crate::model::UPLINK_PORT`]):
    /// changed services change what the uplink steers to the fastpath.
    pub steering: Option<Arc<std::sync::Mutex<Vec<fastpath::steer::Steering>>>>,
    /// `None`: no BGP (`--run-router=false`).
    pub bgp: Option<BgpStart>,
}

#[derive(Debug)]
pub struct Engine {
    watch: ConfigWatch,
    config: Arc<Config>,
    links: Arc<Vec<Link>>,
    port_indexes: Vec<u32>,
    kernel_end: Arc<Link>,
    uplink_index: u32,
    cell: Arc<SnapshotCell>,
    proxy: Arc<crate::services::Proxy>,
    steering: Option<Arc<std::sync::Mutex<Vec<fastpath::steer::Steering>>>>,
    /// The services changed: once their snapshot is out, the uplink steers their
    /// addresses and the conntrack table is swept.
    sweep_after_publish: bool,
    view: Arc<View>,
    netlink: kernel::Handle,
    events: tokio::sync::mpsc::UnboundedReceiver<KernelEvent>,
    neighbours: NeighbourSync,
    builds: Builds,
    routing: Option<Routing>,
    kernel_routes: Option<kernel::RouteSync>,
    /// The service ranges' kernel routes, out of the host port (`host_index`).
    service_routes: Vec<crate::config::Cidr>,
    host_index: u32,
}

impl Engine {
    /// Opens the netlink sockets and starts the BGP speaker; on a tokio runtime.
    pub async fn start(s: Setup) -> Result<Engine, Error> {
        let netlink = kernel::connect()?;
        let events = kernel::subscribe()?;
        let mut routing = match &s.bgp {
            Some(b) => Some(
                Routing::start(
                    b.router_id.as_deref(),
                    &b.options,
                    &s.config,
                    &netlink,
                    s.host_index,
                )
                .await?,
            ),
            None => None,
        };
        // F7: the node's own stack reaches the services' ClusterIPs through the host
        // port, where the fastpath translates them (as it reaches BGP-learned routes).
        // Installed here, kept out of the learned routes' sync (whose first batch
        // after a graceful restart would take them for a previous run's).
        let service_routes: Vec<crate::config::Cidr> = if s.proxy.settings.run {
            s.proxy.settings.cluster_ip_ranges.clone()
        } else {
            Vec::new()
        };
        if let Some(r) = routing.as_mut() {
            for p in &service_routes {
                r.keep_route(p);
            }
        }
        let kernel_routes = match routing.as_mut() {
            Some(r) => Some(r.kernel_task()?),
            None => None,
        };
        let (v4, v6) = crate::bgp::cluster::node_addresses(&s.config);
        for p in &service_routes {
            let src = match p {
                crate::config::Cidr::V4(_) => v4.map(IpAddr::V4),
                crate::config::Cidr::V6(_) => v6.map(IpAddr::V6),
            };
            kernel::route_replace(&netlink, p, s.host_index, src).await?;
        }
        Ok(Engine {
            watch: ConfigWatch::new(&s.config_path),
            neighbours: NeighbourSync::new(s.uplink_index, uplink_next_hops(&s.config)),
            config: Arc::new(s.config),
            links: Arc::new(s.links),
            port_indexes: s.port_indexes,
            kernel_end: Arc::new(s.kernel_end),
            uplink_index: s.uplink_index,
            cell: s.cell,
            proxy: s.proxy,
            steering: s.steering,
            sweep_after_publish: false,
            view: Arc::new(View::default()),
            netlink,
            events,
            builds: Builds::new(s.fib),
            routing,
            kernel_routes,
            service_routes,
            host_index: s.host_index,
        })
    }

    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view)
    }

    /// The BGP speaker, when it runs.
    pub fn bgp(&self) -> Option<speaker::Handle> {
        self.routing.as_ref().map(|r| r.handle().clone())
    }

    /// Runs until `stop` ends, then stops the speaker (see [`Routing::stop`]). The
    /// speaker is stopped on an error too: peers get their Cease, and without graceful
    /// restart the kernel routes go, before the error is returned.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        let result = self.serve(stop).await;
        if self.routing.is_none() {
            // With BGP they go with the learned ones (or stay for a graceful restart).
            for p in &self.service_routes {
                if let Err(e) = kernel::route_delete(&self.netlink, p, self.host_index).await {
                    tracing::warn!(error = %e, "removing a service range's kernel route");
                }
            }
        }
        if let Some(r) = self.routing.as_ref() {
            let stopped = r.stop(self.kernel_routes.as_ref()).await;
            if let Err(e) = stopped {
                if result.is_ok() {
                    return Err(e);
                }
                tracing::error!(error = %e, "stopping BGP after an error");
            }
        }
        result
    }

    async fn serve(&mut self, stop: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(stop);
        let mut next_poll = Instant::now();
        let mut next_dump = Instant::now();
        let mut next_sweep = Instant::now() + CONNTRACK_SWEEP;
        loop {
            if Instant::now() >= next_sweep {
                next_sweep = Instant::now() + CONNTRACK_SWEEP;
                let proxy = Arc::clone(&self.proxy);
                let config = Arc::clone(&self.config);
                let generation = proxy.generation();
                tokio::task::spawn_blocking(move || {
                    proxy.periodic_sweep(&config, generation, fastpath::clock::seconds())
                });
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + NEIGHBOUR_POLL;
                if self.poll(Instant::now() >= next_dump).await {
                    next_dump = Instant::now() + NEIGHBOUR_RESYNC;
                }
            }
            let queued = self.routing.as_ref().is_some_and(Routing::queued);
            let now = std::time::Instant::now();
            if self.builds.due(now, queued) {
                let inputs = Inputs {
                    config: Arc::clone(&self.config),
                    links: Arc::clone(&self.links),
                    kernel: Arc::clone(&self.kernel_end),
                    neighbours: self.neighbours.table().clone(),
                    proxy: Arc::clone(&self.proxy),
                };
                self.builds.start_if_due(now, queued, inputs);
            }
            let due_at = self
                .builds
                .due_at()
                .map_or(next_poll, Instant::from_std)
                .min(next_poll);
            let batches = next_batches(&mut self.routing);
            let built = self.builds.finished();
            tokio::select! {
                _ = tokio::time::sleep_until(due_at) => {}
                event = self.events.recv() => match event {
                    Some(KernelEvent::Resync) => next_dump = Instant::now(),
                    Some(e) => {
                        if apply_event(&mut self.neighbours, &mut self.links, &self.port_indexes, e) {
                            self.view.events.fetch_add(1, Ordering::Relaxed);
                            self.builds.mark_dirty();
                            publish_neighbours(&self.view, &self.neighbours);
                        }
                    }
                    None => {
                        tracing::warn!("the kernel's neighbour and link change subscription ended; subscribing again");
                        self.events = kernel::subscribe()?;
                    }
                },
                Some(changes) = batches => {
                    if let Some(sync) = self.kernel_routes.as_ref().filter(|_| !changes.is_empty()) {
                        sync.batch(kernel::RouteBatch::of(&changes))?;
                    }
                    self.builds.learned(std::time::Instant::now(), changes);
                }
                built = built => {
                    let built = built?;
                    let hops = self.config.on_uplink(built.hops);
                    if self.neighbours.set_learned(hops) {
                        // A new next hop: ask the kernel to resolve it now, not at the
                        // next poll, so its routes forward sooner.
                        next_poll = Instant::now();
                    }
                    match built.snapshot {
                        Some(Ok(s)) => {
                            let g = self.cell.publish(s);
                            if std::mem::take(&mut self.sweep_after_publish) {
                                self.steer_services();
                                self.sweep_removed_backends();
                            }
                            self.view.learned_in_snapshot.store(built.learned, Ordering::Relaxed);
                            tracing::debug!(generation = g, resolved = self.neighbours.table().len(), learned = built.learned, "snapshot published");
                        }
                        Some(Err(e)) => tracing::error!(error = %e, "snapshot not published"),
                        None => {}
                    }
                }
                _ = &mut stop => return Ok(()),
            }
        }
    }

    /// The poll: asks the kernel to resolve the missing next hops, reads its table
    /// back when [`NeighbourSync::dump_wanted`] or `dump_due`, and looks at the
    /// configuration file. `true` if the table was read.
    async fn poll(&mut self, dump_due: bool) -> bool {
        let missing = self.neighbours.missing();
        for &hop in &missing {
            if let Err(e) = kernel::ensure_managed(&self.netlink, self.uplink_index, hop).await {
                tracing::warn!(error = %e, "neighbour");
            }
        }
        let dumped = self.neighbours.dump_wanted() || dump_due;
        if dumped {
            self.view.dumps.fetch_add(1, Ordering::Relaxed);
            match kernel::neighbours(&self.netlink, self.uplink_index).await {
                Ok(now) => {
                    if self.neighbours.replace(now) {
                        self.builds.mark_dirty();
                        publish_neighbours(&self.view, &self.neighbours);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading neighbours"),
            }
        }
        if self.watch.changed() {
            self.reload();
        }
        dumped
    }

    /// The configuration file changed: what applies live does (BGP's part; the
    /// services, with the flows of removed backends cleaned up once the new snapshot
    /// is out).
    fn reload(&mut self) {
        let c = match crate::config::load(self.watch.path()) {
            Ok(c) => self.proxy.admit(&c),
            Err(e) => {
                tracing::error!(error = %e, "configuration changed but does not load; keeping the running one");
                return;
            }
        };
        if !c.same_but_live_parts(&self.config) {
            tracing::warn!("configuration changed beyond annotations, nodes and services: those parts apply at the next start");
        }
        if c.services != self.config.services {
            let mut next = (*self.config).clone();
            next.services = c.services.clone();
            self.config = Arc::new(next);
            self.builds.mark_dirty();
            self.proxy.services_changed();
            self.sweep_after_publish = true;
            tracing::info!(services = c.services.len(), "services changed");
        }
        if let Some(r) = self.routing.as_mut() {
            r.reload(&c);
        }
    }

    /// After a snapshot with changed services is out: the uplink steers their VIPs and
    /// NodePorts to the fastpath (and no longer those of removed ones).
    fn steer_services(&self) {
        let Some(steering) = &self.steering else {
            return;
        };
        let (v4, v6) = crate::model::uplink_destinations(&self.config);
        let node_ports = crate::services::steered_node_ports(&self.cell.load().services.frontends);
        let mut steering = steering.lock().unwrap_or_else(|p| p.into_inner());
        let Some(uplink) = steering.get_mut(usize::from(crate::model::UPLINK_PORT)) else {
            return;
        };
        let done = uplink
            .set_destinations(&v4, &v6)
            .and_then(|()| uplink.set_node_ports(&node_ports));
        match done {
            Ok(()) => tracing::info!(
                destinations = v4.len() + v6.len(),
                node_ports = node_ports.len(),
                "uplink steering follows the services"
            ),
            Err(e) => {
                tracing::error!(error = %e, "uplink steering not updated for the changed services")
            }
        }
    }

    /// After a snapshot with changed services is out: the flows of backends that are
    /// gone are dealt with (UDP forgotten, TCP marked for a RST), off the loop.
    fn sweep_removed_backends(&self) {
        let proxy = Arc::clone(&self.proxy);
        let config = Arc::clone(&self.config);
        tokio::task::spawn_blocking(move || {
            let (gone, kept) = proxy.forget_removed_backends(&config, fastpath::clock::seconds());
            tracing::info!(gone, live = kept, "flows of removed backends cleaned up");
        });
    }
}

/// The speaker's next batches, or never without a speaker.
async fn next_batches(routing: &mut Option<Routing>) -> Option<crate::bgp::rib::FibBatch> {
    match routing {
        Some(r) => r.batches().await,
        None => std::future::pending().await,
    }
}

/// A neighbour or link change from the kernel; `true` if the snapshot must change.
fn apply_event(
    neighbours: &mut NeighbourSync,
    links: &mut Arc<Vec<Link>>,
    port_indexes: &[u32],
    event: KernelEvent,
) -> bool {
    match event {
        KernelEvent::Neighbour { ifindex, addr, mac } => {
            let changed = neighbours.event(ifindex, addr, mac);
            if changed {
                tracing::debug!(%addr, ?mac, "neighbour changed");
            }
            changed
        }
        KernelEvent::Mtu { ifindex, mtu } => {
            let mtu = mtu.min(u32::from(u16::MAX)) as u16;
            let Some(i) = port_indexes.iter().position(|&x| x == ifindex) else {
                return false;
            };
            if links[i].mtu == mtu {
                return false;
            }
            tracing::info!(port = links[i].name.as_str(), mtu, "port MTU changed");
            Arc::make_mut(links)[i].mtu = mtu;
            true
        }
        KernelEvent::Resync => false,
    }
}

fn publish_neighbours(view: &View, n: &NeighbourSync) {
    if let Ok(mut v) = view.neighbours.lock() {
        *v = n.sorted();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Arc<Vec<Link>> {
        Arc::new(vec![
            Link {
                name: "up0".into(),
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
            },
            Link {
                name: "xrf0".into(),
                mac: [2, 0, 0, 0, 0, 2],
                mtu: 1500,
            },
        ])
    }

    #[test]
    fn a_port_mtu_change_is_followed_other_interfaces_are_not() {
        let mut n = NeighbourSync::new(10, Vec::new());
        let mut l = links();
        let mtu = |ifindex, mtu| KernelEvent::Mtu { ifindex, mtu };
        assert!(apply_event(&mut n, &mut l, &[10, 11], mtu(11, 9000)));
        assert_eq!(l[1].mtu, 9000);
        assert!(
            !apply_event(&mut n, &mut l, &[10, 11], mtu(11, 9000)),
            "unchanged"
        );
        assert!(
            !apply_event(&mut n, &mut l, &[10, 11], mtu(12, 1280)),
            "not a port"
        );
        assert_eq!(l[0].mtu, 1500);
        // Above what a frame length holds: capped, not wrapped.
        assert!(apply_event(&mut n, &mut l, &[10, 11], mtu(10, 70_000)));
        assert_eq!(l[0].mtu, u16::MAX);
    }

    #[test]
    fn a_wanted_neighbours_new_mac_changes_the_snapshot() {
        let hop: IpAddr = "192.168.100.1".parse().unwrap();
        let mut n = NeighbourSync::new(10, vec![hop]);
        let mut l = links();
        let event = |mac| KernelEvent::Neighbour {
            ifindex: 10,
            addr: hop,
            mac,
        };
        assert!(apply_event(&mut n, &mut l, &[10, 11], event(Some([9; 6]))));
        assert!(!apply_event(&mut n, &mut l, &[10, 11], event(Some([9; 6]))));
        assert!(apply_event(&mut n, &mut l, &[10, 11], event(Some([8; 6]))));
        let view = View::default();
        publish_neighbours(&view, &n);
        assert_eq!(*view.neighbours.lock().unwrap(), vec![(hop, [8; 6])]);
    }
}
