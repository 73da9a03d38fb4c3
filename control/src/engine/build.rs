//! Snapshot builds: one at a time, off the control thread, with what changed since the
//! last one coalesced into the next.
//!
//! Learned routes wait for the end of their burst ([`Burst`]); configuration, link and
//! neighbour changes mark the tables dirty and go in with the next build, at once or
//! with the burst if one is under way. The FIB state moves into the build task and back.

use super::Error;
use crate::bgp::rib::FibBatch;
use crate::burst::Burst;
use crate::config::Config;
use crate::model::{Fib, Link, Neighbours};
use crate::services::Proxy;
use fastpath::snapshot::Snapshot;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// A build that changed this many routes gives the heap's free memory back after.
const TRIM_AFTER: usize = 10_000;

/// Nice value of the FIB build thread (the blocking pool runs nothing else): below the
/// sessions and the speaker.
const FIB_BUILD_NICE: i32 = 10;

/// The snapshot of the configuration, the ports' links, the kernel end's MAC and the
/// resolved neighbours, with every change `fib` holds.
pub fn snapshot(
    config: &Config,
    links: &[Link],
    kernel: &Link,
    neighbours: &Neighbours,
    fib: &mut Fib,
    proxy: &Proxy,
) -> Result<Snapshot, Error> {
    let t = fib.tables(config, links, kernel.mac, neighbours, proxy)?;
    Ok(Snapshot::new(t)?)
}

/// What a build read: the inputs besides the FIB.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub config: Arc<Config>,
    pub links: Arc<Vec<Link>>,
    pub kernel: Arc<Link>,
    pub neighbours: Neighbours,
    pub proxy: Arc<Proxy>,
}

/// What a finished build hands back.
#[derive(Debug)]
pub struct Built {
    /// A new snapshot, or `None` when nothing changed it.
    pub snapshot: Option<Result<Snapshot, Error>>,
    /// Learned routes in the FIB.
    pub learned: usize,
    /// Their next hops.
    pub hops: Vec<IpAddr>,
}

#[derive(Debug)]
pub struct Builds {
    /// The FIB, `None` while a build has it.
    fib: Option<Fib>,
    running: Option<tokio::task::JoinHandle<(Fib, Built)>>,
    /// Something besides learned routes changed the tables.
    dirty: bool,
    pending: FibBatch,
    burst: Burst,
}

impl Builds {
    pub fn new(fib: Fib) -> Builds {
        Builds {
            fib: Some(fib),
            running: None,
            dirty: false,
            pending: FibBatch::default(),
            burst: Burst::default(),
        }
    }

    /// The configuration, a link or a neighbour changed: the next build rebuilds the
    /// snapshot even without route changes.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Learned route changes from the speaker, at `now`.
    pub fn learned(&mut self, now: Instant, changes: FibBatch) {
        self.burst.batch(now, changes.settling, !changes.is_empty());
        // While a build runs, changes wait; they go in when it ends.
        self.pending.append(changes);
    }

    /// Whether a build should start now (`queued`: a speaker batch waits to be read,
    /// so its burst has not ended).
    pub fn due(&self, now: Instant, queued: bool) -> bool {
        self.running.is_none()
            && self.fib.is_some()
            && (self.dirty || !self.pending.is_empty())
            && self.burst.over(now, queued)
    }

    /// When pending learned routes are due, if nothing else wakes the loop first.
    pub fn due_at(&self) -> Option<Instant> {
        if self.running.is_some() {
            return None;
        }
        self.burst.due_at()
    }

    /// Starts a build with `inputs` if one is [`Builds::due`]; `true` if it started.
    pub fn start_if_due(&mut self, now: Instant, queued: bool, inputs: Inputs) -> bool {
        if !self.due(now, queued) {
            return false;
        }
        let Some(mut fib) = self.fib.take() else {
            return false;
        };
        self.burst.built();
        let changes = std::mem::take(&mut self.pending);
        let force = std::mem::take(&mut self.dirty);
        // Staging the changes and rebuilding the touched parts of the tries are the
        // heavy part: off the control thread.
        self.running = Some(tokio::task::spawn_blocking(move || {
            // Below the sessions and the speaker: while a table streams in, builds take
            // what CPU is left and so take larger batches.
            if let Err(e) = crate::os::set_nice(FIB_BUILD_NICE) {
                tracing::debug!(error = %e, "FIB build priority");
            }
            let changed = fib.apply_batch(&changes);
            drop(changes);
            let snapshot = (force || changed > 0).then(|| {
                snapshot(
                    &inputs.config,
                    &inputs.links,
                    &inputs.kernel,
                    &inputs.neighbours,
                    &mut fib,
                    &inputs.proxy,
                )
            });
            let built = Built {
                snapshot,
                learned: fib.learned_len(),
                hops: fib.learned_next_hops(),
            };
            if changed >= TRIM_AFTER {
                // A burst leaves its batches' memory free in the allocator's heaps:
                // give it back.
                crate::os::trim_heap();
            }
            (fib, built)
        }));
        true
    }

    /// The running build's end (never, if none runs). A panic in the build is an
    /// error: the agent ends rather than forward on in silence.
    pub async fn finished(&mut self) -> Result<Built, Error> {
        let Some(running) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let r = running.await;
        self.running = None;
        let (fib, built) = r?;
        self.fib = Some(fib);
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::rib::FibBatch;
    use std::time::Duration;

    fn config() -> Config {
        crate::config::parse(
            "node: node1\n\
             uplink: {interface: up0, addresses: [192.168.100.11/24]}\n\
             host_port: {interface: xrf0, peer: xrk0}\n\
             pod_cidrs: [10.244.1.0/24]\n\
             gateway: {ipv4: 10.244.1.1}\n",
            "test.yaml",
        )
        .unwrap()
    }

    fn inputs(c: &Config) -> Inputs {
        let link = |name: &str, last: u8| Link {
            name: name.into(),
            mac: [2, 0, 0, 0, 0, last],
            mtu: 1500,
        };
        let links = crate::model::port_plan(c)
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| link(name, i as u8))
            .collect();
        Inputs {
            config: Arc::new(c.clone()),
            links: Arc::new(links),
            kernel: Arc::new(link("xrk0", 0xff)),
            neighbours: Neighbours::new(),
            proxy: Arc::new(Proxy::new(crate::services::ProxySettings {
                conntrack_max: 1024,
                ..Default::default()
            })),
        }
    }

    fn route_batch() -> FibBatch {
        let hop: IpAddr = "192.168.100.12".parse().unwrap();
        let mut b = FibBatch::default();
        b.v4.push((lpm::Prefix4::new_masked(0x0af4_0200, 24), 0));
        b.groups.push(Arc::from(vec![hop]));
        b
    }

    #[tokio::test]
    async fn nothing_changed_nothing_built_a_dirty_table_is_built_once() {
        let c = config();
        let mut b = Builds::new(Fib::new(&c).unwrap());
        let now = Instant::now();
        assert!(!b.start_if_due(now, false, inputs(&c)), "nothing to build");
        b.mark_dirty();
        assert!(b.start_if_due(now, false, inputs(&c)));
        assert!(
            !b.start_if_due(now, false, inputs(&c)),
            "one build at a time"
        );
        let built = b.finished().await.unwrap();
        assert!(matches!(built.snapshot, Some(Ok(_))));
        assert_eq!(built.learned, 0);
        assert!(
            !b.start_if_due(now, false, inputs(&c)),
            "the change is built"
        );
    }

    #[tokio::test]
    async fn learned_routes_wait_for_the_end_of_their_burst() {
        let c = config();
        let mut b = Builds::new(Fib::new(&c).unwrap());
        let t0 = Instant::now();
        b.learned(t0, route_batch());
        assert!(!b.due(t0, false), "the burst may go on");
        assert_eq!(b.due_at(), Some(t0 + crate::burst::FIB_QUIET));
        let later = t0 + crate::burst::FIB_QUIET + Duration::from_millis(1);
        assert!(!b.due(later, true), "a batch is still queued");
        assert!(b.start_if_due(later, false, inputs(&c)));
        assert_eq!(b.due_at(), None, "no deadline while a build runs");
        let built = b.finished().await.unwrap();
        assert!(matches!(built.snapshot, Some(Ok(_))));
        assert_eq!(built.learned, 1);
        assert_eq!(
            built.hops,
            vec!["192.168.100.12".parse::<IpAddr>().unwrap()]
        );
    }
}
