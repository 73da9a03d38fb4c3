//! `xroute run`: the agent on the static file source.
//!
//! Startup, in order: read the configuration, read the ports' links, attach the
//! steering programs, build and publish the first snapshot, bind every worker's
//! sockets, start the workers on their cores, then run the control loop (kernel
//! neighbour sync, the stats endpoint) until SIGINT or SIGTERM. On the way out the
//! workers stop, and the steering programs detach when dropped.

use crate::stats::{router, Sources, WorkerHandle};
use control::config::{Config, IdleMode};
use control::kernel;
use control::model::{
    build_tables, port_plan, uplink_destinations, uplink_next_hops, Link, Neighbours, HOST_PORT,
    UPLINK_PORT,
};
use fastpath::counters::CoreCounters;
use fastpath::snapshot::{Snapshot, SnapshotCell};
use fastpath::steer::Steering;
use fastpath::worker::{Idle, Worker, WorkerConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the kernel's neighbour table is read back.
const NEIGHBOUR_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The node's configuration (static YAML source).
    #[arg(long)]
    pub config: PathBuf,
    /// Address the stats endpoint listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub metrics_addr: IpAddr,
    /// Port of the stats endpoint (`/metrics`, `/stats`).
    #[arg(long, default_value_t = crate::DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,
}

fn tables(
    config: &Config,
    links: &[Link],
    kernel: &Link,
    n: &Neighbours,
) -> Result<Snapshot, String> {
    let t = build_tables(config, links, kernel.mac, n)
        .map_err(|e| format!("building the forwarding tables: {e}"))?;
    Snapshot::new(t).map_err(|e| format!("the forwarding tables are inconsistent: {e}"))
}

pub fn run(args: RunArgs) -> Result<(), String> {
    let config = control::config::load(&args.config).map_err(|e| e.to_string())?;
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
    let cell = Arc::new(SnapshotCell::new(tables(
        &config,
        &links,
        &kernel_end,
        &neighbours,
    )?));
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
    let sources = Arc::new(Sources {
        node: config.node.clone(),
        ports: plan.iter().map(|(n, _, _)| n.clone()).collect(),
        workers: handles,
        cell: Arc::clone(&cell),
        steering: Arc::new(Mutex::new(steering)),
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the control runtime: {e}"))?;
    let result = runtime.block_on(async {
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
        let netlink = kernel::connect()?;
        let hops = uplink_next_hops(&config);
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
        println!(
            "xroute: node {} forwarding on {} port(s) with {} worker(s)",
            config.node,
            plan.len(),
            cores.len()
        );
        loop {
            for &hop in hops.iter().filter(|h| !neighbours.contains_key(h)) {
                if let Err(e) = kernel::ensure_managed(&netlink, uplink_index, hop).await {
                    tracing::warn!(error = %e, "neighbour");
                }
            }
            match kernel::neighbours(&netlink, uplink_index).await {
                Ok(mut now) => {
                    now.retain(|ip, _| hops.contains(ip));
                    if now != neighbours {
                        neighbours = now;
                        match tables(&config, &links, &kernel_end, &neighbours) {
                            Ok(s) => {
                                let g = cell.publish(s);
                                tracing::info!(
                                    generation = g,
                                    resolved = neighbours.len(),
                                    "snapshot published"
                                );
                            }
                            Err(e) => tracing::error!(error = %e, "snapshot not published"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading neighbours"),
            }
            tokio::select! {
                _ = tokio::time::sleep(NEIGHBOUR_POLL) => {}
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
            }
        }
        Ok::<(), String>(())
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    // The steering programs detach as the last reference to them goes.
    drop(sources);
    result
}
