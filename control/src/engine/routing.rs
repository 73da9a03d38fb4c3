//! The BGP speaker as the control loop drives it: started from the flags and the
//! configuration, its plan re-read when the configuration changes, its FIB batches
//! received, the kernel's copy of the learned routes kept, and stopped with a Cease.

use super::Error;
use crate::bgp::cluster as bgp;
use crate::bgp::peering::BgpOptions;
use crate::bgp::rib::FibBatch;
use crate::bgp::speaker;
use crate::config::{Cidr, Config};
use crate::kernel;
use std::collections::HashSet;
use std::net::IpAddr;

#[derive(Debug)]
pub struct Routing {
    handle: speaker::Handle,
    fib: tokio::sync::mpsc::UnboundedReceiver<FibBatch>,
    options: BgpOptions,
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

impl Routing {
    /// Starts the speaker with kube-router's `--router-id` and the other BGP flags, on
    /// the configuration's plan; routes a previous run left in the kernel (out of
    /// interface `host_index`) are taken over with graceful restart, else removed.
    pub async fn start(
        router_id: Option<&str>,
        options: &BgpOptions,
        config: &Config,
        netlink: &kernel::Handle,
        host_index: u32,
    ) -> Result<Routing, Error> {
        let plan = bgp::plan(config, options)?;
        let leftover =
            kernel::previous_routes(netlink, host_index, options.graceful_restart).await?;
        let restarting = !leftover.is_empty();
        let sc = bgp::speaker_config(router_id, options, config, &plan, restarting)?;
        tracing::info!(asn = sc.asn, router_id = %sc.router_id, neighbours = plan.peering.neighbors.len(), "BGP speaker starting");
        let (tx, fib) = tokio::sync::mpsc::unbounded_channel();
        let handle = speaker::spawn(sc, tx).await?;
        bgp::apply(&handle, None, &plan);
        let (v4, v6) = bgp::node_addresses(config);
        Ok(Routing {
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

    /// The speaker, for the status endpoints.
    pub fn handle(&self) -> &speaker::Handle {
        &self.handle
    }

    /// Takes `p` out of the previous run's routes: a route this run installs itself
    /// (a service range), which the learned routes' sync must not remove.
    pub fn keep_route(&mut self, p: &crate::config::Cidr) {
        self.leftover.remove(p);
    }

    /// Starts the task that keeps the kernel's routes as the learned ones.
    pub fn kernel_task(&mut self) -> Result<kernel::RouteSync, Error> {
        Ok(kernel::spawn_route_sync(
            self.host_index,
            self.src4,
            self.src6,
            std::mem::take(&mut self.leftover),
            self.restarting,
        )?)
    }

    /// Whether a FIB batch waits to be read.
    pub fn queued(&self) -> bool {
        !self.fib.is_empty()
    }

    /// The next FIB batch with every one queued behind it; `None` once the speaker
    /// has ended.
    pub async fn batches(&mut self) -> Option<FibBatch> {
        let mut changes = self.fib.recv().await?;
        while let Ok(more) = self.fib.try_recv() {
            changes.append(more);
        }
        Some(changes)
    }

    /// The configuration changed to `new`: BGP's part (annotations, nodes, services)
    /// applies live.
    pub fn reload(&mut self, new: &Config) {
        match bgp::plan(new, &self.options) {
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

    /// Stopping: every peer gets a Cease; without graceful restart the kernel routes
    /// this agent installed go too (with it they stay, for the next run to take over).
    pub async fn stop(&self, kernel: Option<&kernel::RouteSync>) -> Result<(), Error> {
        self.handle.shutdown().await;
        if let Some(sync) = kernel {
            if self.options.graceful_restart {
                tracing::info!("graceful restart: the kernel keeps the learned routes");
            } else {
                let n = sync.remove_all().await?;
                tracing::info!(routes = n, "kernel routes of the learned routes removed");
            }
        }
        Ok(())
    }
}
