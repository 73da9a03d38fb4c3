//! `xroute run`: the agent on the static file source.
//!
//! Startup, in order: read the configuration, read the ports' links, attach the
//! steering programs, build and publish the first snapshot, bind every worker's
//! sockets, start the workers on their cores, start the stats endpoint, then run the
//! control loop ([`control::engine`]) until SIGINT or SIGTERM. On the way out the
//! workers stop, and the steering programs detach when dropped.

use crate::bgp::BgpFlags;
use crate::stats::{router, Sources, WorkerHandle};
use control::config::IdleMode;
use control::engine::{build::snapshot, BgpStart, Engine, Setup};
use control::kernel;
use control::model::{port_plan, uplink_destinations, Fib, Neighbours, HOST_PORT, UPLINK_PORT};
use fastpath::counters::CoreCounters;
use fastpath::snapshot::SnapshotCell;
use fastpath::steer::Steering;
use fastpath::worker::{Idle, Worker, WorkerConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
    #[command(flatten)]
    pub proxy: crate::proxy::ProxyFlags,
}

pub fn run(args: RunArgs) -> Result<(), String> {
    control::os::tune_allocator();
    let config = control::config::load(&args.config).map_err(|e| e.to_string())?;
    // Flags first: a bad one stops the start before any port is touched.
    let proxy_settings = args.proxy.settings()?;
    for n in args.proxy.notes() {
        tracing::warn!("{n}");
    }
    let proxy = Arc::new(control::services::Proxy::new(proxy_settings));
    // What the proxy's flags admit of the services is what BGP sees too.
    let config = proxy.admit(&config);
    let bgp_options = if args.bgp.run_router {
        let options = args.bgp.options()?;
        control::bgp::cluster::router_id(args.bgp.router_id.as_deref(), &config)
            .map_err(|e| e.to_string())?;
        Some(options)
    } else {
        None
    };
    let plan = port_plan(&config);
    let links = plan
        .iter()
        .map(|(name, _, _)| kernel::read_link(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let kernel_end = kernel::read_link(&config.host_port.peer).map_err(|e| e.to_string())?;
    // The interface indexes the kernel's events name: the ports' (to follow their
    // MTU), the uplink's (its neighbours) and the host port's kernel end (its routes).
    let port_indexes = plan
        .iter()
        .map(|(name, _, _)| kernel::ifindex(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let uplink_index = port_indexes[usize::from(UPLINK_PORT)];
    let host_index = kernel::ifindex(&config.host_port.peer).map_err(|e| e.to_string())?;

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

    if proxy.settings.run {
        // The host's stack must never take a port SNATed flows use.
        let (lo, hi) = proxy.settings.snat_ports;
        control::os::reserve_ports(lo, hi).map_err(|e| e.to_string())?;
    }
    // The first snapshot, before any neighbour is known: the workers start with it.
    let mut fib = Fib::new(&config).map_err(|e| format!("building the forwarding tables: {e}"))?;
    let first = snapshot(
        &config,
        &links,
        &kernel_end,
        &Neighbours::new(),
        &mut fib,
        &proxy,
    )
    .map_err(|e| e.to_string())?;
    if proxy.settings.run {
        let node_ports = control::services::steered_node_ports(&first.services.frontends);
        let addrs: Vec<IpAddr> = config.uplink.addresses.iter().map(|a| a.addr).collect();
        steering[usize::from(UPLINK_PORT)]
            .set_node(&addrs, &node_ports, proxy.settings.snat_ports)
            .map_err(|e| e.to_string())?;
    }
    let cell = Arc::new(SnapshotCell::new(first));
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
    let setup = Setup {
        config_path: args.config.clone(),
        config: config.clone(),
        links,
        port_indexes,
        kernel_end,
        host_index,
        uplink_index,
        fib,
        cell: Arc::clone(&cell),
        proxy: Arc::clone(&proxy),
        steering: Some(Arc::clone(&steering)),
        bgp: bgp_options.map(|options| BgpStart {
            router_id: args.bgp.router_id.clone(),
            options,
        }),
    };
    let result = runtime.block_on(async {
        let engine = Engine::start(setup).await.map_err(|e| e.to_string())?;
        let sources = Arc::new(Sources {
            node: config.node.clone(),
            ports: plan.iter().map(|(n, _, _)| n.clone()).collect(),
            workers: handles,
            cell: Arc::clone(&cell),
            steering: Arc::clone(&steering),
            bgp: engine.bgp(),
            control: engine.view(),
            proxy: Arc::clone(&proxy),
        });
        let addr = SocketAddr::new(args.metrics_addr, args.metrics_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("stats endpoint on {addr}: {e} (use --metrics-port)"))?;
        tracing::info!(%addr, "stats endpoint listening");
        if proxy.settings.run {
            tokio::spawn(crate::healthcheck::run(Arc::clone(&cell)));
        }
        let app = router(Arc::clone(&sources));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "stats endpoint stopped");
            }
        });
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
        println!(
            "xroute: node {} forwarding on {} port(s) with {} worker(s)",
            config.node,
            plan.len(),
            cores.len()
        );
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
            }
        };
        engine.run(stop).await.map_err(|e| e.to_string())
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    // The steering programs detach as the last reference to them goes.
    drop(steering);
    result
}
