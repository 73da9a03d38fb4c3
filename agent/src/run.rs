//! `xroute run`: the agent on the static file source.
//!
//! Startup, in order: read the configuration, read the ports' links, attach the
//! steering programs, build and publish the first snapshot, bind every worker's
//! sockets, start the workers on their cores, then run the control loop (kernel
//! neighbour sync, the stats endpoint) until SIGINT or SIGTERM. On the way out the
//! workers stop, and the steering programs detach when dropped.

use crate::bgp::BgpFlags;
use crate::stats::{router, KernelView, Sources, WorkerHandle};
use control::bgp::cluster as bgp;
use control::bgp::rib::FibBatch;
use control::bgp::speaker;
use control::burst::Burst;
use control::config::{Cidr, Config, IdleMode};
use control::kernel;
use control::model::{
    port_plan, uplink_destinations, uplink_next_hops, Fib, Link, Neighbours, HOST_PORT, UPLINK_PORT,
};
use fastpath::counters::CoreCounters;
use fastpath::snapshot::{Snapshot, SnapshotCell};
use fastpath::steer::Steering;
use fastpath::worker::{Idle, Worker, WorkerConfig};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A build that changed this many routes gives the heap's free memory back after.
const TRIM_AFTER: usize = 10_000;

/// Nice value of the FIB build thread (the blocking pool runs nothing else): below the
/// sessions and the speaker.
const FIB_BUILD_NICE: i32 = 10;

/// How often new uplink next hops are handed to the kernel to resolve, and the
/// configuration file is looked at.
const NEIGHBOUR_POLL: Duration = Duration::from_millis(500);

/// How often the kernel's neighbour table is read back whole, besides following its
/// changes (a netlink subscription loses messages when its buffer overflows).
const NEIGHBOUR_RESYNC: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The node's configuration (static YAML source).
    #[arg(long)]
    pub config: PathBuf,
    /// Address the stats endpoint listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub metrics_addr: IpAddr,
    /// Port of the stats endpoint (`/metrics`, `/stats`, `/bgp/...`).
    #[arg(long, default_value_t = crate::DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,
    /// ICMP errors (time exceeded, unreachable, too big) each worker may send per
    /// second (RFC 1812 4.3.2.8, RFC 4443 2.4; Linux's `icmp_msgs_per_sec`); 0: no limit.
    #[arg(long, default_value_t = fastpath::pipeline::ratelimit::DEFAULT_PER_SEC)]
    pub icmp_error_rate: u32,
    /// ... and how many it may send at once after a quiet time (Linux's
    /// `icmp_msgs_burst`).
    #[arg(long, default_value_t = fastpath::pipeline::ratelimit::DEFAULT_BURST)]
    pub icmp_error_burst: u32,
    #[command(flatten)]
    pub bgp: BgpFlags,
}

fn tables(
    config: &Config,
    links: &[Link],
    kernel: &Link,
    n: &Neighbours,
    fib: &mut Fib,
) -> Result<Snapshot, String> {
    let t = fib
        .tables(config, links, kernel.mac, n)
        .map_err(|e| format!("building the forwarding tables: {e}"))?;
    Snapshot::new(t).map_err(|e| format!("the forwarding tables are inconsistent: {e}"))
}

pub fn run(args: RunArgs) -> Result<(), String> {
    control::os::tune_allocator();
    let config = control::config::load(&args.config).map_err(|e| e.to_string())?;
    // Flags first: a bad one stops the start before any port is touched.
    let bgp_options = if args.bgp.run_router {
        Some(args.bgp.options()?)
    } else {
        None
    };
    let plan = port_plan(&config);
    let links = plan
        .iter()
        .map(|(name, _, _)| kernel::read_link(name))
        .collect::<Result<Vec<_>, _>>()?;
    let kernel_end = kernel::read_link(&config.host_port.peer)?;
    let uplink_index = kernel::ifindex(&config.uplink.interface)?;

    let mut steering = Vec::with_capacity(plan.len());
    for (name, mode, _) in &plan {
        let s = Steering::attach(name, *mode).map_err(|e| e.to_string())?;
        tracing::info!(
            port = name.as_str(),
            native = s.native(),
            fallback = s.fallback().unwrap_or(""),
            "steering attached"
        );
        steering.push(s);
    }
    let (v4, v6) = uplink_destinations(&config);
    steering[usize::from(UPLINK_PORT)]
        .set_destinations(&v4, &v6)
        .map_err(|e| e.to_string())?;

    let mut neighbours = Neighbours::new();
    let mut fib = Fib::new(&config).map_err(|e| format!("building the forwarding tables: {e}"))?;
    let cell = Arc::new(SnapshotCell::new(tables(
        &config,
        &links,
        &kernel_end,
        &neighbours,
        &mut fib,
    )?));
    // The FIB state moves into the build task and back: `None` while a build runs.
    let mut fib_state = Some(fib);
    let stop = Arc::new(AtomicBool::new(false));
    let cores = if config.cores.is_empty() {
        // One worker, on the last core: the first usually takes the interrupts.
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        vec![n - 1]
    } else {
        config.cores.clone()
    };
    let idle = match config.idle {
        IdleMode::Spin => Idle::Spin,
        IdleMode::Poll => Idle::Poll,
        IdleMode::Priority => Idle::Priority,
    };
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    for (id, &core) in cores.iter().enumerate() {
        let counters = Arc::new(CoreCounters::default());
        let worker = Worker::new(
            WorkerConfig {
                id,
                queue: id as u32,
                core: Some(core),
                idle,
                icmp_errors: fastpath::pipeline::ratelimit::RateLimit {
                    per_sec: args.icmp_error_rate,
                    burst: args.icmp_error_burst,
                },
            },
            &mut steering,
            Some(HOST_PORT),
            Arc::clone(&cell),
            Arc::clone(&counters),
            Arc::clone(&stop),
        )
        .map_err(|e| e.to_string())?;
        handles.push(WorkerHandle {
            id,
            core: Some(core),
            counters,
            sockets: worker.socket_fds(),
        });
        threads.push(
            std::thread::Builder::new()
                .name(format!("xroute-worker-{id}"))
                .spawn(move || worker.run())
                .map_err(|e| format!("starting worker {id}: {e}"))?,
        );
    }
    let steering = Arc::new(Mutex::new(steering));

    // Two threads: sessions, the speaker and kernel sync run side by side (the
    // workers have their own pinned threads).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("xroute-control")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the control runtime: {e}"))?;
    let result = runtime.block_on(async {
        let netlink = kernel::connect()?;
        let mut kernel_events = kernel::subscribe()?;
        let kernel_view = Arc::new(KernelView::default());
        // The ports' interface indexes, to follow their MTU.
        let port_indexes = plan
            .iter()
            .map(|(name, _, _)| kernel::ifindex(name))
            .collect::<Result<Vec<_>, _>>()?;
        let host_index = kernel::ifindex(&config.host_port.peer)?;
        let mut bgp_state = match &bgp_options {
            Some(options) => Some(
                BgpState::start(&args.bgp, options, &config, &netlink, host_index).await?,
            ),
            None => None,
        };
        let sources = Arc::new(Sources {
            node: config.node.clone(),
            ports: plan.iter().map(|(n, _, _)| n.clone()).collect(),
            workers: handles,
            cell: Arc::clone(&cell),
            steering: Arc::clone(&steering),
            bgp: bgp_state.as_ref().map(|b| b.handle.clone()),
            learned_in_snapshot: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            kernel: Arc::clone(&kernel_view),
        });
        let addr = SocketAddr::new(args.metrics_addr, args.metrics_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("stats endpoint on {addr}: {e} (use --metrics-port)"))?;
        tracing::info!(%addr, "stats endpoint listening");
        let app = router(Arc::clone(&sources));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "stats endpoint stopped");
            }
        });
        let static_hops = uplink_next_hops(&config);
        let mut config_stamp = stamp(&args.config);
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
        println!(
            "xroute: node {} forwarding on {} port(s) with {} worker(s)",
            config.node,
            plan.len(),
            cores.len()
        );
        let config = Arc::new(config.clone());
        let mut links = Arc::new(links.clone());
        let kernel_end = Arc::new(kernel_end.clone());
        // Snapshots are built off the control thread, one at a time; changes that
        // arrive meanwhile are coalesced into the next one.
        type Built = (Fib, Option<Result<Snapshot, String>>, usize, Vec<IpAddr>);
        let mut building: Option<tokio::task::JoinHandle<Built>> = None;
        let mut dirty = false;
        let mut learned_hops: Vec<IpAddr> = Vec::new();
        let mut pending = FibBatch::default();
        let mut burst = Burst::default();
        let mut next_poll = tokio::time::Instant::now();
        let mut next_dump = tokio::time::Instant::now();
        // The stats endpoint's copy of the neighbours is behind.
        let mut neighbours_changed = false;
        let kernel_sync = match bgp_state.as_mut() {
            Some(b) => Some(b.kernel_task()?),
            None => None,
        };
        loop {
            if tokio::time::Instant::now() >= next_poll {
                next_poll = tokio::time::Instant::now() + NEIGHBOUR_POLL;
                let mut hops = static_hops.clone();
                hops.extend(learned_hops.iter().copied());
                let mut missing = false;
                for &hop in hops.iter().filter(|h| !neighbours.contains_key(h)) {
                    missing = true;
                    if let Err(e) = kernel::ensure_managed(&netlink, uplink_index, hop).await {
                        tracing::warn!(error = %e, "neighbour");
                    }
                }
                // A hop the kernel had resolved before we wanted it sends no event: while
                // one is missing, the table is read at every poll.
                if missing || tokio::time::Instant::now() >= next_dump {
                    next_dump = tokio::time::Instant::now() + NEIGHBOUR_RESYNC;
                    kernel_view.dumps.fetch_add(1, Ordering::Relaxed);
                    match kernel::neighbours(&netlink, uplink_index).await {
                        Ok(mut now) => {
                            now.retain(|ip, _| hops.contains(ip));
                            if now != neighbours {
                                neighbours = now;
                                dirty = true;
                                neighbours_changed = true;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "reading neighbours"),
                    }
                }
                let now = stamp(&args.config);
                if now != config_stamp {
                    config_stamp = now;
                    if let Some(b) = bgp_state.as_mut() {
                        b.reload(&args.config, &config);
                    }
                }
            }
            // Learned routes wait for the end of their burst (a batch still queued
            // means it has not ended: this loop shares its threads with the sessions
            // and may come late); configuration and neighbour changes go in at once,
            // or with the burst if one is under way.
            let queued = bgp_state.as_ref().is_some_and(|b| !b.fib.is_empty());
            let over = burst.over(tokio::time::Instant::now().into_std(), queued);
            if building.is_none() && (dirty || !pending.is_empty()) && over {
                burst.built();
                let Some(mut state) = fib_state.take() else { break };
                let changes = std::mem::take(&mut pending);
                let force = std::mem::take(&mut dirty);
                let (c, l, k, n) = (
                    Arc::clone(&config),
                    Arc::clone(&links),
                    Arc::clone(&kernel_end),
                    neighbours.clone(),
                );
                // Staging the changes and rebuilding the touched parts of the tries
                // are the heavy part: off the control thread.
                building = Some(tokio::task::spawn_blocking(move || {
                    // Below the sessions and the speaker: while a table streams in,
                    // builds take what CPU is left and so take larger batches.
                    if let Err(e) = control::os::set_nice(FIB_BUILD_NICE) {
                        tracing::debug!(error = %e, "FIB build priority");
                    }
                    let changed = state.apply_batch(&changes);
                    drop(changes);
                    let snapshot = (force || changed > 0)
                        .then(|| tables(&c, &l, &k, &n, &mut state));
                    let count = state.learned_len();
                    let hops = state.learned_next_hops();
                    if changed >= TRIM_AFTER {
                        // A burst leaves its batches' memory free in the allocator's
                        // heaps: give it back.
                        control::os::trim_heap();
                    }
                    (state, snapshot, count, hops)
                }));
            }
            // When the pending learned routes are due, if nothing else wakes the loop.
            let due_at = match burst.due_at() {
                Some(t) if building.is_none() => tokio::time::Instant::from_std(t),
                _ => next_poll,
            };
            let fib = async {
                match bgp_state.as_mut() {
                    Some(b) => b.fib.recv().await,
                    None => std::future::pending().await,
                }
            };
            let built = async {
                match building.as_mut() {
                    Some(h) => h.await,
                    None => std::future::pending().await,
                }
            };
            if std::mem::take(&mut neighbours_changed) {
                if let Ok(mut view) = kernel_view.neighbours.lock() {
                    *view = neighbours.iter().map(|(a, m)| (*a, *m)).collect();
                    view.sort();
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next_poll.min(due_at)) => {}
                event = kernel_events.recv() => {
                    match event {
                        Some(kernel::KernelEvent::Neighbour { ifindex, addr, mac })
                            if ifindex == uplink_index
                                && (static_hops.contains(&addr) || learned_hops.contains(&addr)) =>
                        {
                            let changed = match mac {
                                Some(m) => neighbours.insert(addr, m) != Some(m),
                                None => neighbours.remove(&addr).is_some(),
                            };
                            if changed {
                                kernel_view.events.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(%addr, ?mac, "neighbour changed");
                                dirty = true;
                                neighbours_changed = true;
                            }
                        }
                        Some(kernel::KernelEvent::Neighbour { .. }) => {}
                        Some(kernel::KernelEvent::Mtu { ifindex, mtu }) => {
                            let mtu = mtu.min(u32::from(u16::MAX)) as u16;
                            if let Some(i) = port_indexes.iter().position(|&x| x == ifindex) {
                                if links[i].mtu != mtu {
                                    tracing::info!(port = links[i].name.as_str(), mtu, "port MTU changed");
                                    Arc::make_mut(&mut links)[i].mtu = mtu;
                                    kernel_view.events.fetch_add(1, Ordering::Relaxed);
                                    dirty = true;
                                }
                            }
                        }
                        Some(kernel::KernelEvent::Resync) => next_dump = tokio::time::Instant::now(),
                        None => {
                            tracing::warn!("the kernel's neighbour and link change subscription ended; subscribing again");
                            kernel_events = match kernel::subscribe() {
                                Ok(rx) => rx,
                                Err(e) => return Err(e),
                            };
                        }
                    }
                }
                Some(batch) = fib => {
                    let Some(b) = bgp_state.as_mut() else { continue };
                    let mut changes = batch;
                    while let Ok(more) = b.fib.try_recv() {
                        changes.append(more);
                    }
                    if let Some(sync) = kernel_sync.as_ref().filter(|_| !changes.is_empty()) {
                        sync.batch(kernel::RouteBatch::of(&changes))?;
                    }
                    burst.batch(std::time::Instant::now(), changes.settling, !changes.is_empty());
                    // While a build runs, changes wait; they go in when it ends.
                    pending.append(changes);
                }
                r = built => {
                    building = None;
                    match r {
                        Ok((state, snapshot, count, hops)) => {
                            fib_state = Some(state);
                            let hops = config.on_uplink(hops);
                            if hops.iter().any(|h| !neighbours.contains_key(h)) {
                                // A new next hop: ask the kernel to resolve it now, not
                                // at the next poll, so its routes forward sooner.
                                next_poll = tokio::time::Instant::now();
                            }
                            learned_hops = hops;
                            match snapshot {
                                Some(Ok(s)) => {
                                    let g = cell.publish(s);
                                    sources
                                        .learned_in_snapshot
                                        .store(count, std::sync::atomic::Ordering::Relaxed);
                                    tracing::debug!(generation = g, resolved = neighbours.len(), learned = count, "snapshot published");
                                }
                                Some(Err(e)) => tracing::error!(error = %e, "snapshot not published"),
                                None => {}
                            }
                        }
                        Err(e) => {
                            // A panic in the build: the agent ends with an error, never
                            // forwards on in silence.
                            return Err(format!("the FIB build thread failed: {e}"));
                        }
                    }
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
            }
        }
        // Stopping: every peer gets a Cease; without graceful restart the kernel routes
        // this agent installed go too (with it they stay, for the next run to take over).
        if let Some(b) = bgp_state.as_ref() {
            b.handle.shutdown().await;
            if let Some(sync) = kernel_sync.as_ref() {
                if b.options.graceful_restart {
                    tracing::info!("graceful restart: the kernel keeps the learned routes");
                } else {
                    let n = sync.remove_all().await?;
                    tracing::info!(routes = n, "kernel routes of the learned routes removed");
                }
            }
        }
        Ok::<(), String>(())
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    // The steering programs detach as the last reference to them goes.
    drop(steering);
    result
}

/// The configuration file's modification time and size, to notice edits.
fn stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The BGP speaker as the run loop drives it.
struct BgpState {
    handle: speaker::Handle,
    fib: tokio::sync::mpsc::UnboundedReceiver<FibBatch>,
    options: control::bgp::peering::BgpOptions,
    plan: bgp::Plan,
    host_index: u32,
    src4: Option<IpAddr>,
    src6: Option<IpAddr>,
    /// Kernel routes left by a previous run, kept until the first batch after a
    /// graceful restart.
    leftover: HashSet<Cidr>,
    /// Started by a graceful restart: the kernel keeps the old routes meanwhile.
    restarting: bool,
}

impl BgpState {
    async fn start(
        flags: &BgpFlags,
        options: &control::bgp::peering::BgpOptions,
        config: &Config,
        netlink: &kernel::Handle,
        host_index: u32,
    ) -> Result<BgpState, String> {
        let plan = bgp::plan(config, options)?;
        let leftover =
            kernel::previous_routes(netlink, host_index, options.graceful_restart).await?;
        let restarting = !leftover.is_empty();
        let sc = bgp::speaker_config(
            flags.router_id.as_deref(),
            options,
            config,
            &plan,
            restarting,
        )?;
        tracing::info!(asn = sc.asn, router_id = %sc.router_id, neighbours = plan.peering.neighbors.len(), "BGP speaker starting");
        let (tx, fib) = tokio::sync::mpsc::unbounded_channel();
        let handle = speaker::spawn(sc, tx).await?;
        bgp::apply(&handle, None, &plan);
        let (v4, v6) = bgp::node_addresses(config);
        Ok(BgpState {
            handle,
            fib,
            options: options.clone(),
            plan,
            host_index,
            src4: v4.map(IpAddr::V4),
            src6: v6.map(IpAddr::V6),
            leftover,
            restarting,
        })
    }

    /// Starts the task that keeps the kernel's routes as the learned ones.
    fn kernel_task(&mut self) -> Result<kernel::RouteSync, String> {
        kernel::spawn_route_sync(
            self.host_index,
            self.src4,
            self.src6,
            std::mem::take(&mut self.leftover),
            self.restarting,
        )
    }

    /// Re-reads the configuration: BGP's part (annotations, nodes, services) applies
    /// live.
    fn reload(&mut self, path: &std::path::Path, running: &Config) {
        let c = match control::config::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "configuration changed but does not load; keeping the running one");
                return;
            }
        };
        if !c.same_but_live_parts(running) {
            tracing::warn!("configuration changed beyond annotations, nodes and services: those parts apply at the next start");
        }
        match bgp::plan(&c, &self.options) {
            Ok(p) => {
                if p != self.plan {
                    tracing::info!(
                        neighbours = p.peering.neighbors.len(),
                        routes = p.locals.len(),
                        "BGP plan changed"
                    );
                    bgp::apply(&self.handle, Some(&self.plan), &p);
                    self.plan = p;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "BGP plan after the change; keeping the running one")
            }
        }
    }
}
