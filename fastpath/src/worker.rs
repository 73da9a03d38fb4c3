//! A poll-mode worker: one queue of every port, one shared UMEM, one pinned thread.
//!
//! Every port's socket for this worker's queue is bound to the same UMEM, so a frame
//! received on one port is transmitted on another without a copy: its descriptor moves
//! from the receive ring to the other port's transmit ring, and comes back through that
//! port's completion ring into the worker's free list, from which every fill ring is
//! kept topped up. Frames are handled in batches of up to [`BATCH`]: the snapshot is
//! loaded once per round, the batch's IPv4 destinations are looked up together, and
//! each transmit ring is kicked once per batch.
//!
//! When no frame has arrived for a while the worker can wait in `poll(2)` instead of
//! spinning ([`Idle::Poll`], VPP's adaptive mode); under load it never blocks.
//!
//! This is one of the two modules allowed `unsafe`: UMEM frames are shared with the
//! kernel, and xsk-rs leaves to its caller the rule that a frame is touched only while
//! userspace owns it.

use crate::counters::{CoreCounters, DropReason, Tally};
use crate::pipeline::ratelimit::RateLimit;
use crate::pipeline::{forward, ipv4_destination, ipv4_flow, Local, Verdict};
use crate::snapshot::{PortId, SnapshotCell};
use crate::steer::Steering;
use lpm::NextHop;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// The most frames handled per port per round.
pub const BATCH: usize = 64;
/// Size of every ring (fill, completion, receive, transmit).
const RING: u32 = 2048;
/// UMEM frame size: an MTU-sized frame plus the room an ICMP error may add.
const FRAME: u32 = 2048;
/// Empty rounds before an [`Idle::Poll`] worker sleeps in `poll(2)`.
const SPIN_ROUNDS: u32 = 1024;
/// Transmit kicks per port per batch at most.
const MAX_KICKS: usize = 4;
/// How long one such sleep lasts at most.
const POLL_MS: i32 = 1;

/// What a worker does when no frame arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idle {
    /// Spin: lowest latency, a whole core always busy (benchmarks, dedicated cores);
    /// an empty round yields the CPU to other runnable threads, such as the ports'
    /// receive stage when it shares the core.
    Spin,
    /// Spin a little, then wait in `poll(2)` for up to a millisecond.
    #[default]
    Poll,
    /// Run at real-time priority (SCHED_FIFO) above the receive stage that shares the
    /// core, and sleep in `poll(2)` as soon as the rings are empty: the kernel wakes
    /// the worker when it has delivered frames, the worker takes them at once, and
    /// under overload the receive stage only runs while the worker has nothing to do,
    /// so excess frames are dropped before anyone copies them (no receive livelock).
    Priority,
}

/// The SCHED_FIFO priority of [`Idle::Priority`] workers.
const FIFO_PRIORITY: libc::c_int = 10;
/// Empty rounds before an [`Idle::Priority`] worker sleeps.
const PRIORITY_SPIN_ROUNDS: u32 = 8;

/// Where a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Numbers the worker's counters.
    pub id: usize,
    /// The queue of every port this worker owns.
    pub queue: u32,
    /// The core to pin to, if any.
    pub core: Option<usize>,
    pub idle: Idle,
    /// How many ICMP errors the worker sends.
    pub icmp_errors: RateLimit,
}

/// A failure to set up a worker's sockets, with what to check.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker {worker}: creating its UMEM of {frames} frames: {reason}")]
    Umem {
        worker: usize,
        frames: u32,
        reason: String,
    },
    #[error(
        "worker {worker}: AF_XDP socket on {interface} queue {queue}: {reason} \
         (is the interface up, does it have that queue, and are we root?)"
    )]
    Socket {
        worker: usize,
        interface: String,
        queue: u32,
        reason: String,
    },
    #[error(transparent)]
    Steer(#[from] crate::steer::SteerError),
    #[error("worker {0}: no ports")]
    NoPorts(usize),
}

/// One port's rings, for this worker's queue.
struct PortRings {
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
    /// Whether this is the port punts go to (its full ring counts as `punt_full`).
    host: bool,
}

/// The kernel's counters of one AF_XDP socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17): how many frames one `sendto` may transmit
/// in copy mode (32 before).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// Lets one kick transmit a whole ring in copy mode, where the kernel supports it.
fn raise_tx_budget(fd: RawFd, budget: u32) -> std::io::Result<()> {
    // SAFETY: `budget` is a valid u32 for reads of its size during the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a socket's kernel counters; safe to call from any thread while the socket is
/// open (the worker keeps its sockets open until the process ends).
pub fn xsk_stats(fd: RawFd) -> std::io::Result<XskStats> {
    let mut s = libc::xdp_statistics {
        rx_dropped: 0,
        rx_invalid_descs: 0,
        tx_invalid_descs: 0,
        rx_ring_full: 0,
        rx_fill_ring_empty_descs: 0,
        tx_ring_empty_descs: 0,
    };
    let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: `s` and `len` are valid for writes of the sizes given, and getsockopt
    // writes at most `len` bytes into `s`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut s as *mut libc::xdp_statistics).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(XskStats {
        rx_dropped: s.rx_dropped,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: s.tx_ring_empty_descs,
    })
}

/// A worker, its sockets bound and its fill rings stocked, ready to [`Worker::run`].
pub struct Worker {
    config: WorkerConfig,
    umem: Umem,
    ports: Vec<PortRings>,
    /// Frames userspace owns and nobody uses; capacity for every frame, so pushing
    /// never allocates.
    free: Vec<FrameDesc>,
    cell: Arc<SnapshotCell>,
    counters: Arc<CoreCounters>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("ports", &self.ports.len())
            .field("free", &self.free.len())
            .finish()
    }
}

impl Worker {
    /// Binds a socket on `config.queue` of every port in `steering` (in [`PortId`]
    /// order) to one new UMEM, registers each with its port's steering program, and
    /// stocks the fill rings. `host_port` is the port punts go to.
    pub fn new(
        config: WorkerConfig,
        steering: &mut [Steering],
        host_port: Option<PortId>,
        cell: Arc<SnapshotCell>,
        counters: Arc<CoreCounters>,
        stop: Arc<AtomicBool>,
    ) -> Result<Worker, WorkerError> {
        let worker = config.id;
        if steering.is_empty() {
            return Err(WorkerError::NoPorts(worker));
        }
        let frames = steering.len() as u32 * RING * 2;
        let umem_error = |reason: String| WorkerError::Umem {
            worker,
            frames,
            reason,
        };
        let ring = QueueSize::new(RING).map_err(|e| umem_error(e.to_string()))?;
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME).map_err(|e| umem_error(e.to_string()))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| umem_error(e.to_string()))?;
        let count = NonZeroU32::new(frames).ok_or_else(|| umem_error("no frames".into()))?;
        let (umem, descs) =
            Umem::new(umem_config, count, false).map_err(|e| umem_error(e.to_string()))?;
        let socket_config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            // Our own program steers; libxdp must not load its default one.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let mut ports = Vec::with_capacity(steering.len());
        for (id, steer) in steering.iter_mut().enumerate() {
            let interface = steer.interface().to_string();
            let socket_error = |reason: String| WorkerError::Socket {
                worker,
                interface: interface.clone(),
                queue: config.queue,
                reason,
            };
            let name = interface
                .parse()
                .map_err(|e: std::ffi::NulError| socket_error(e.to_string()))?;
            // SAFETY: each (interface, queue) pair is bound once from this UMEM (the
            // agent gives every port once and every worker its own queue), and the
            // libxdp program load is inhibited as xsk-rs requires for shared UMEMs.
            let (tx, rx, rings) = unsafe { Socket::new(socket_config, &umem, &name, config.queue) }
                .map_err(|e| socket_error(e.to_string()))?;
            let (fq, cq) = rings.ok_or_else(|| {
                socket_error("the pair was already bound from this UMEM".to_string())
            })?;
            steer.bind(config.queue, rx.fd())?;
            if let Err(e) = raise_tx_budget(rx.fd().as_raw_fd(), RING) {
                tracing::debug!(interface, error = %e, "kernel keeps 32 frames per transmit kick");
            }
            ports.push(PortRings {
                tx,
                rx,
                fq,
                cq,
                host: host_port == Some(id as PortId),
            });
        }
        let mut free = Vec::with_capacity(descs.len());
        free.extend(descs);
        let mut w = Worker {
            config,
            umem,
            ports,
            free,
            cell,
            counters,
            stop,
        };
        for p in 0..w.ports.len() {
            w.refill(p, RING as usize);
        }
        Ok(w)
    }

    /// The sockets' descriptors, in port order, for [`xsk_stats`].
    pub fn socket_fds(&self) -> Vec<RawFd> {
        self.ports.iter().map(|p| p.rx.fd().as_raw_fd()).collect()
    }

    /// Gives port `p`'s fill ring up to `want` free frames, and wakes the kernel if the
    /// ring says it waits for that (`need_wakeup`: a driver that found the fill ring
    /// empty stops receiving until it is told there are frames again). Returns whether
    /// it woke it.
    fn refill(&mut self, p: usize, want: usize) -> bool {
        let port = &mut self.ports[p];
        let room = port.fq.nb_free(want as u32) as usize;
        let n = room.min(want).min(self.free.len());
        if n > 0 {
            let from = self.free.len() - n;
            // SAFETY: frames in the free list belong to this UMEM and nobody else holds
            // them; once produced they leave the list and are not touched until the
            // receive ring returns them.
            let done = unsafe { port.fq.produce(&self.free[from..]) };
            if done == n {
                self.free.truncate(from);
            }
        }
        // The flag is read after the producer index is published (libxdp's
        // `xsk_ring_prod__needs_wakeup` loads it after `produce`'s release store), so a
        // kernel that set it before seeing our frames is always woken.
        if port.fq.needs_wakeup() {
            // A zero-timeout poll: the kernel's wakeup for the fill ring (the
            // descriptor is the socket's, which is bound to this UMEM's fill ring).
            let _ = port.fq.wakeup(port.rx.fd_mut(), 0);
            return true;
        }
        false
    }

    /// Pins the thread (if asked), then forwards with the pipeline ([`forward`]) until
    /// the stop flag is set.
    pub fn run(self) {
        self.run_with(None::<fn(PortId, &mut [u8], &mut usize) -> Verdict>)
    }

    /// As [`Worker::run`], but frames are decided by `decide` instead of the pipeline
    /// when it is given (the benchmarks' bare forwarder: the same rings and batches,
    /// no parsing or lookup).
    pub fn run_with<D>(mut self, mut decide: Option<D>)
    where
        D: FnMut(PortId, &mut [u8], &mut usize) -> Verdict,
    {
        if let Some(core) = self.config.core {
            let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
            if !pinned {
                tracing::warn!(worker = self.config.id, core, "could not pin the worker");
            }
        }
        if self.config.idle == Idle::Priority {
            let param = libc::sched_param {
                sched_priority: FIFO_PRIORITY,
            };
            // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0
            // is the calling thread.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
                tracing::warn!(
                    worker = self.config.id,
                    error = %std::io::Error::last_os_error(),
                    "could not raise the worker to SCHED_FIFO; it runs at normal priority"
                );
            }
        }
        tracing::info!(
            worker = self.config.id,
            queue = self.config.queue,
            core = ?self.config.core,
            ports = self.ports.len(),
            "worker running"
        );
        let nports = self.ports.len();
        let mut rx = [FrameDesc::default(); BATCH];
        let mut done = [FrameDesc::default(); BATCH * 4];
        let mut out: Vec<Vec<FrameDesc>> = (0..nports).map(|_| Vec::with_capacity(BATCH)).collect();
        let mut pollfds: Vec<libc::pollfd> = self
            .ports
            .iter()
            .map(|p| libc::pollfd {
                fd: p.rx.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut empty_rounds = 0u32;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let clock = std::time::Instant::now();
        let mut local = Local::new(self.config.icmp_errors, unix_ms);
        while !self.stop.load(Relaxed) {
            let snapshot = self.cell.load();
            // One clock read per round (vDSO, no system call): the ICMP error budget
            // and IPv4 timestamps use it.
            local.now = clock.elapsed().as_nanos() as u64;
            local.seconds = crate::clock::seconds();
            let mut received = 0;
            for p in 0..nports {
                // Completed transmissions come back to the free list first, so that the
                // fill ring can be topped up before receiving.
                // SAFETY: descriptors from the completion ring are frames the kernel
                // has finished with; they become ours again.
                let n = unsafe { self.ports[p].cq.consume(&mut done) };
                self.free.extend_from_slice(&done[..n]);
                let woke = self.refill(p, BATCH * 2);
                // SAFETY: received descriptors are frames the kernel filled and gave
                // back; until we produce them again only this thread touches them.
                let n = unsafe { self.ports[p].rx.consume(&mut rx) };
                if n == 0 {
                    if woke {
                        let t = Tally {
                            fill_kicks: 1,
                            ..Tally::default()
                        };
                        self.counters.publish(0, snapshot.generation(), &t);
                    }
                    continue;
                }
                received += n;
                let mut t = Tally {
                    fill_kicks: u64::from(woke),
                    ..Tally::default()
                };
                let started = std::time::Instant::now();
                match decide.as_mut() {
                    None => self.handle(
                        p as PortId,
                        &snapshot,
                        &mut local,
                        &mut rx[..n],
                        &mut out,
                        &mut t,
                    ),
                    Some(d) => self.handle_with(p as PortId, d, &mut rx[..n], &mut out, &mut t),
                }
                self.transmit(&mut out, &mut t);
                t.batch_ns = started.elapsed().as_nanos().max(1) as u64;
                self.counters.publish(n, snapshot.generation(), &t);
            }
            drop(snapshot);
            if received > 0 {
                empty_rounds = 0;
            } else if self.config.idle != Idle::Spin {
                empty_rounds += 1;
                let spin = if self.config.idle == Idle::Poll {
                    SPIN_ROUNDS
                } else {
                    PRIORITY_SPIN_ROUNDS
                };
                if empty_rounds >= spin {
                    // SAFETY: `pollfds` is a valid array of `nports` pollfd structs.
                    unsafe { libc::poll(pollfds.as_mut_ptr(), nports as libc::nfds_t, POLL_MS) };
                }
            } else {
                // Nothing arrived: give the CPU to whatever else is runnable here, the
                // ports' receive stage (threaded NAPI) first of all, instead of burning
                // the rest of the time slice.
                std::thread::yield_now();
            }
        }
        tracing::info!(worker = self.config.id, "worker stopped");
    }

    /// Decides one batch received on `port`, sorting frames to `out` by egress port.
    fn handle(
        &mut self,
        port: PortId,
        snapshot: &crate::snapshot::Snapshot,
        local: &mut Local,
        rx: &mut [FrameDesc],
        out: &mut [Vec<FrameDesc>],
        t: &mut Tally,
    ) {
        // The batch's IPv4 destinations, looked up together, and their flows'
        // conntrack entries prefetched, so that the batch's cache misses overlap.
        let mut keys = [0u32; BATCH];
        let mut slot = [usize::MAX; BATCH];
        let mut k = 0;
        let conntrack = snapshot
            .services
            .active()
            .then_some(&*snapshot.services.conntrack);
        for (i, desc) in rx.iter().enumerate() {
            // SAFETY: the frame was just received and only this thread holds it.
            let data = unsafe { self.umem.data(desc) };
            t.rx_bytes += data.len() as u64;
            if let Some(dst) = ipv4_destination(&data) {
                keys[k] = dst;
                slot[i] = k;
                k += 1;
                if let Some(ct) = conntrack {
                    if let Some(flow) = ipv4_flow(&data) {
                        ct.prefetch4(&flow);
                    }
                }
            }
        }
        t.rx_packets += rx.len() as u64;
        let mut routes: [Option<NextHop>; BATCH] = [None; BATCH];
        snapshot.fib4.lookup_batch(&keys[..k], &mut routes[..k]);
        for (i, desc) in rx.iter_mut().enumerate() {
            let route4 = routes.get(slot[i]).copied();
            // SAFETY: as above; the mutable view ends before the descriptor is queued.
            let mut data = unsafe { self.umem.data_mut(desc) };
            let mut len = data.contents().len();
            data.cursor().set_pos(usize::MAX); // expose the whole frame
            let verdict = forward(
                snapshot,
                local,
                port,
                data.contents_mut(),
                &mut len,
                route4,
                t,
            );
            data.cursor().set_pos(len);
            self.queue(*desc, verdict, out, t);
        }
    }

    /// Sends a decided frame to its egress port's list, or back to the free list.
    #[inline]
    fn queue(
        &mut self,
        desc: FrameDesc,
        verdict: Verdict,
        out: &mut [Vec<FrameDesc>],
        t: &mut Tally,
    ) {
        match verdict {
            Verdict::Tx(to) if usize::from(to) < out.len() => out[usize::from(to)].push(desc),
            Verdict::Tx(_) => {
                t.drop(DropReason::NoRoute);
                self.free.push(desc);
            }
            Verdict::Drop(reason) => {
                t.drop(reason);
                self.free.push(desc);
            }
        }
    }

    /// Decides one batch with a custom function.
    fn handle_with<D>(
        &mut self,
        port: PortId,
        decide: &mut D,
        rx: &mut [FrameDesc],
        out: &mut [Vec<FrameDesc>],
        t: &mut Tally,
    ) where
        D: FnMut(PortId, &mut [u8], &mut usize) -> Verdict,
    {
        t.rx_packets += rx.len() as u64;
        for desc in rx.iter_mut() {
            // SAFETY: the frame was just received and only this thread holds it; the
            // mutable view ends before the descriptor is queued.
            let mut data = unsafe { self.umem.data_mut(desc) };
            let mut len = data.contents().len();
            t.rx_bytes += len as u64;
            data.cursor().set_pos(usize::MAX);
            let verdict = decide(port, data.contents_mut(), &mut len);
            data.cursor().set_pos(len);
            self.queue(*desc, verdict, out, t);
        }
    }

    /// Queues each port's frames on its transmit ring and kicks it once.
    fn transmit(&mut self, out: &mut [Vec<FrameDesc>], t: &mut Tally) {
        for (q, frames) in out.iter_mut().enumerate() {
            if frames.is_empty() {
                continue;
            }
            let port = &mut self.ports[q];
            let room = port.tx.nb_free(frames.len() as u32) as usize;
            let sent = room.min(frames.len());
            // SAFETY: these frames are ours (received and decided this batch) and
            // belong to this UMEM; after producing we do not touch them until the
            // completion ring returns them.
            let produced = unsafe { port.tx.produce(&frames[..sent]) };
            for d in &frames[..produced] {
                t.tx_bytes += d.lengths().data() as u64;
            }
            t.tx_packets += produced as u64;
            let full = if port.host {
                DropReason::PuntFull
            } else {
                DropReason::TxRingFull
            };
            for d in &frames[produced..] {
                t.drop(full);
                self.free.push(*d);
            }
            frames.clear();
            // In copy mode the kernel transmits only in `sendto`, at most a budget of
            // frames per call: kick until the ring is drained, a bounded number of times.
            for _ in 0..MAX_KICKS {
                if !port.tx.needs_wakeup() {
                    break;
                }
                t.kicks += 1;
                if port.tx.wakeup().is_err() {
                    t.tx_errors += 1;
                    break;
                }
                if port.tx.nb_free(RING) >= RING {
                    break;
                }
            }
        }
    }
}
