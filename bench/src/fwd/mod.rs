//! `xroute-bench fwd`: forwarding through a device under test (DUT), following
//! `../shared/BENCH-METHOD.md`.
//!
//! Topology: `gen ⇄ dut ⇄ sink`, three namespaces joined by veth pairs, with static
//! neighbours. The DUT, and its receiving veth's threaded NAPI, run on one CPU; the
//! generator and the sink on the other. Candidates, measured in the same run:
//! - `kernel`: Linux IPv4 forwarding;
//! - `devmap`: an in-kernel XDP redirect through a devmap with MAC rewrite (the
//!   machine's limit);
//! - `bare`: a bare AF_XDP forwarder — xroute's own worker (same rings, batches, shared
//!   UMEM) with the pipeline replaced by a MAC rewrite: the limit of the AF_XDP path;
//! - `xroute`: xroute's full pipeline on a node's tables (a 10-route FIB), and
//!   `xroute-1m` on the same node with the 1,050,000-route FIB;
//! - `nat-10`, `nat-10k`: the full pipeline through UDP ClusterIPs, 10 or 10,000
//!   services of `--service-backends` backends each (behind the sink), the generator
//!   aimed at the VIPs with 10,000 flows in all (conntrack hits after the first packet
//!   of each);
//! - `nft-10`, `nft-10k`: Linux forwarding with the same services as kube-proxy's
//!   nftables mode writes them (a verdict map from VIP, protocol and port to a chain
//!   per service, `numgen random` over a chain per endpoint that DNATs), conntrack on.
//!
//! The generator runs an `XDP_TX` program with `BPF_PROG_RUN` live frames "as if
//! received" on its veth (64-byte UDP, random flows and destinations, paced by a token
//! schedule in the program). The sink is a tcx ingress program that counts and drops
//! the generator's UDP (and lets anything else through, so iperf3 can run).

pub mod netns;

use anyhow::{bail, Context, Result};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{
    tc::TcAttachType, SchedClassifier, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode,
};
use aya::Ebpf;
use control::config::{Cidr, OneOrMany, Route};
use control::model::{build_tables, port_plan, Link, Neighbours};
use fastpath::counters::CoreCounters;
use fastpath::pipeline::Verdict;
use fastpath::snapshot::{Snapshot, SnapshotCell};
use fastpath::steer::Steering;
use fastpath::worker::{Idle, Worker, WorkerConfig};
use netns::{exec, ip, sh, within};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fwd.o"));

const GEN_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x02];
const SINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x50, 0x02];
const DUT_IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x10, 0x01];
const DUT_OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x50, 0x01];
const HOST_F_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x70, 0x01];
const HOST_K_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x70, 0x02];
const GEN_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const SINK_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);

#[derive(clap::Args, Debug)]
pub struct FwdArgs {
    /// Prefix of the benchmark's namespaces.
    #[arg(long, default_value = "xb")]
    pub prefix: String,
    /// Candidates, in the order they are measured in each round.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kernel,devmap,bare,xroute,xroute-1m"
    )]
    pub candidates: Vec<String>,
    /// Offered loads of the sweep, in Mpps (paced by the generator).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1,0.2,0.3,0.4,0.5,0.6,0.8"
    )]
    pub rates: Vec<f64>,
    /// Frame size in bytes (without the FCS).
    #[arg(long, default_value_t = 60)]
    pub frame: u32,
    /// Flows (source ports) the generator spreads over.
    #[arg(long, default_value_t = 1024)]
    pub flows: u32,
    /// Distinct destination addresses, random over the IPv4 unicast space.
    #[arg(long, default_value_t = 65536)]
    pub dsts: u32,
    /// Seconds per measured point.
    #[arg(long, default_value_t = 1.5)]
    pub seconds: f64,
    /// Rounds; every candidate is measured once per round, interleaved; medians reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Routes of the large FIB (the RouteViews table scaled, BENCH-METHOD's way).
    #[arg(long, default_value_t = 1_050_000)]
    pub routes: usize,
    /// The DUT's CPU; the generator and sink get the other one.
    #[arg(long, default_value_t = 0)]
    pub dut_cpu: usize,
    #[arg(long, default_value_t = 1)]
    pub gen_cpu: usize,
    /// How the AF_XDP workers (xroute's and the bare forwarder's) wait: spin, poll or
    /// priority (see `fastpath::worker::Idle`).
    #[arg(long, default_value = "priority")]
    pub idle: String,
    /// Also run iperf3 TCP (TSO/GSO off) through xroute and the kernel.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub iperf: bool,
    /// Backends of each service of the `nat-*` and `nft-*` candidates (at most 254).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=254))]
    pub service_backends: u32,
    /// Also measure new TCP connections per second through 10 ClusterIPs, xroute
    /// (`nat-10`) against nftables (`nft-10`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub conns: bool,
    /// Client threads of the connection-rate measurement (each one connection at a time).
    #[arg(long, default_value_t = 8)]
    pub conn_clients: usize,
}

/// Flows the service candidates' generator runs, over all their VIPs.
const SERVICE_FLOWS: u32 = 10_000;

/// The services a candidate serves (`nat-10k`: 10,000), if it is a service candidate.
fn services_of(name: &str) -> Option<u32> {
    let n = name
        .strip_prefix("nat-")
        .or_else(|| name.strip_prefix("nft-"))?;
    match n.strip_suffix('k') {
        Some(k) => k.parse::<u32>().ok().map(|k| k * 1000),
        None => n.parse().ok(),
    }
    .filter(|&n| (1..=65536).contains(&n))
}

/// Service `i`'s ClusterIP: 10.96.0.0/16, in order.
fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0000 | i)
}

/// Backend `j` of every service: 192.168.60.0/24, routed to the sink.
fn backend(j: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 60, 1 + j as u8)
}

/// The nftables ruleset kube-proxy's nftables mode writes for `services` UDP
/// ClusterIPs on port 9 with `backends` endpoints each (port 9 too).
/// With `tcp`, every service also has TCP port 80 (the connection-rate measurement).
fn nft_ruleset(services: u32, backends: u32, tcp: bool) -> String {
    let mut r = String::from("table ip kube-proxy {\n");
    r.push_str("  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n    elements = {\n");
    for i in 0..services {
        r.push_str(&format!("      {} . udp . 9 : goto service-{i},\n", vip(i)));
        if tcp {
            r.push_str(&format!(
                "      {} . tcp . 80 : goto service-{i}-tcp,\n",
                vip(i)
            ));
        }
    }
    r.push_str("    }\n  }\n");
    r.push_str("  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }\n");
    r.push_str(
        "  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }\n",
    );
    r.push_str("  chain mark-for-masquerade {\n    mark set mark or 0x4000\n  }\n");
    // The filter chains kube-proxy installs on every packet's way (new connections to
    // services without endpoints are rejected there) and the masquerade step.
    r.push_str("  set no-endpoint-services { type ipv4_addr . inet_proto . inet_service ; }\n");
    r.push_str("  chain filter-prerouting {\n    type filter hook prerouting priority dstnat - 10; policy accept;\n    ct state new ip daddr . meta l4proto . th dport @no-endpoint-services drop\n  }\n");
    r.push_str("  chain filter-forward {\n    type filter hook forward priority -110; policy accept;\n    ct state new ip daddr . meta l4proto . th dport @no-endpoint-services reject\n    ct state invalid drop\n  }\n");
    r.push_str("  chain nat-postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    mark & 0x4000 == 0 return\n    mark set mark xor 0x4000\n    masquerade fully-random\n  }\n");
    let protocols: &[(&str, &str, u16)] = if tcp {
        &[("", "udp", 9), ("-tcp", "tcp", 80)]
    } else {
        &[("", "udp", 9)]
    };
    for i in 0..services {
        for &(suffix, proto, port) in protocols {
            let arms: Vec<String> = (0..backends)
                .map(|j| format!("{j} : goto endpoint-{i}{suffix}-{j}"))
                .collect();
            r.push_str(&format!(
                "  chain service-{i}{suffix} {{\n    numgen random mod {backends} vmap {{ {} }}\n  }}\n",
                arms.join(", ")
            ));
            for j in 0..backends {
                let b = backend(j);
                r.push_str(&format!(
                    "  chain endpoint-{i}{suffix}-{j} {{\n    ip saddr {b} jump mark-for-masquerade\n    meta l4proto {proto} dnat to {b}:{port}\n  }}\n"
                ));
            }
        }
    }
    r.push_str("}\n");
    r
}

fn ns(p: &str, role: &str) -> String {
    format!("{p}-{role}")
}

/// Builds the three namespaces.
fn topology(a: &FwdArgs) -> Result<()> {
    let (g, d, s) = (
        ns(&a.prefix, "gen"),
        ns(&a.prefix, "dut"),
        ns(&a.prefix, "sink"),
    );
    for n in [&g, &d, &s] {
        sh(&["ip", "netns", "add", n])?;
        ip(n, "link set lo up")?;
        exec(n, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
    }
    ip(
        &g,
        &format!("link add xbg0 type veth peer name xbdi netns {d}"),
    )?;
    ip(
        &d,
        &format!("link add xbdo type veth peer name xbsk netns {s}"),
    )?;
    ip(&g, "link add xbgi0 type veth peer name xbgi1")?;
    ip(&d, "link add xbhf type veth peer name xbhk")?;
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    ip(&g, &format!("link set xbg0 address {}", mac(GEN_MAC)))?;
    ip(&d, &format!("link set xbdi address {}", mac(DUT_IN_MAC)))?;
    ip(&d, &format!("link set xbdo address {}", mac(DUT_OUT_MAC)))?;
    ip(&s, &format!("link set xbsk address {}", mac(SINK_MAC)))?;
    ip(&d, &format!("link set xbhf address {}", mac(HOST_F_MAC)))?;
    ip(&d, &format!("link set xbhk address {}", mac(HOST_K_MAC)))?;
    for (n, dev) in [
        (&g, "xbg0"),
        (&g, "xbgi0"),
        (&g, "xbgi1"),
        (&d, "xbdi"),
        (&d, "xbdo"),
        (&d, "xbhf"),
        (&d, "xbhk"),
        (&s, "xbsk"),
    ] {
        ip(n, &format!("link set {dev} up"))?;
    }
    ip(&g, &format!("addr add {GEN_IP}/32 dev xbg0"))?;
    ip(&g, "route add 10.244.1.1 dev xbg0 scope link")?;
    ip(&g, "route add default via 10.244.1.1 dev xbg0")?;
    ip(
        &g,
        &format!(
            "neigh replace 10.244.1.1 lladdr {} dev xbg0 nud permanent",
            mac(DUT_IN_MAC)
        ),
    )?;
    ip(&d, "addr add 192.168.50.1/24 dev xbdo")?;
    ip(&d, "addr add 10.244.1.1/32 dev xbdi")?;
    ip(&d, &format!("route add {GEN_IP}/32 dev xbdi"))?;
    ip(&d, &format!("route add default via {SINK_IP}"))?;
    ip(
        &d,
        &format!(
            "neigh replace {SINK_IP} lladdr {} dev xbdo nud permanent",
            mac(SINK_MAC)
        ),
    )?;
    ip(
        &d,
        &format!(
            "neigh replace {GEN_IP} lladdr {} dev xbdi nud permanent",
            mac(GEN_MAC)
        ),
    )?;
    exec(&d, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    exec(&d, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"])?;
    ip(&s, &format!("addr add {SINK_IP}/24 dev xbsk"))?;
    // The services' backends live in the sink (its TCP server answers for them all).
    for j in 0..a.service_backends {
        ip(&s, &format!("addr add {}/32 dev lo", backend(j)))?;
    }
    ip(&s, "route add 10.244.1.0/24 via 192.168.50.1")?;
    ip(
        &s,
        &format!(
            "neigh replace 192.168.50.1 lladdr {} dev xbsk nud permanent",
            mac(DUT_OUT_MAC)
        ),
    )?;
    // Frames into an AF_XDP port must carry complete checksums; GRO gives the
    // receiving veths NAPI (XDP frames need it), and TSO/GSO off makes TCP MTU-sized.
    for (n, dev) in [
        (&g, "xbg0"),
        (&s, "xbsk"),
        (&d, "xbhk"),
        (&d, "xbdo"),
        (&d, "xbdi"),
    ] {
        exec(
            n,
            &[
                "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "on",
            ],
        )?;
    }
    Ok(())
}

fn teardown(prefix: &str) {
    for role in ["gen", "dut", "sink"] {
        let n = ns(prefix, role);
        if std::path::Path::new(&format!("/run/netns/{n}")).exists() {
            if let Ok(pids) = sh(&["ip", "netns", "pids", &n]) {
                for pid in pids.split_whitespace() {
                    let _ = sh(&["kill", "-KILL", pid]);
                }
            }
            let _ = sh(&["ip", "netns", "del", &n]);
        }
    }
}

/// Puts the NAPI threads where BENCH-METHOD says: the DUT's receive stage on the DUT's
/// CPU, the sink's on the other.
fn place_napi(a: &FwdArgs) -> Result<()> {
    let d = ns(&a.prefix, "dut");
    let s = ns(&a.prefix, "sink");
    netns::pin(netns::napi_thread(&d, "xbdi")?, a.dut_cpu)?;
    // The sink must never be what limits a measurement: its receive stage preempts
    // the generator, which spins on the same CPU.
    let sink_napi = netns::napi_thread(&s, "xbsk")?;
    netns::pin(sink_napi, a.gen_cpu)?;
    sh(&["chrt", "-f", "-p", "20", &sink_napi.to_string()])?;
    if let Ok(t) = netns::napi_thread(&d, "xbdo") {
        netns::pin(t, a.dut_cpu)?;
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct GenConfig {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_ip: u32,
    flows: u32,
    dsts: u32,
    frame_len: u32,
    _pad: u32,
    interval_ns: u64,
}

// SAFETY: plain old data, laid out as `struct gen_config` in bpf/fwd.c.
unsafe impl aya::Pod for GenConfig {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RedirectConfig {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
}

// SAFETY: plain old data, laid out as `struct redirect_config` in bpf/fwd.c.
unsafe impl aya::Pod for RedirectConfig {}

/// The generator: its configuration map, its counters, and the thread running it.
struct Generator {
    config: Array<MapData, GenConfig>,
    pool: Array<MapData, u32>,
    /// The random destinations of the routing candidates.
    random: Vec<u32>,
    /// What the generator sends now (flows, destinations); `rate` paces it.
    base: GenConfig,
    routing: GenConfig,
    count: PerCpuArray<MapData, u64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Generator {
    fn start(a: &FwdArgs) -> Result<Generator> {
        let mut ebpf = Ebpf::load(PROGRAMS).context("loading bpf/fwd.o")?;
        let mut config: Array<MapData, GenConfig> =
            Array::try_from(ebpf.take_map("gen_cfg").context("gen_cfg")?)?;
        let mut pool: Array<MapData, u32> =
            Array::try_from(ebpf.take_map("dst_pool").context("dst_pool")?)?;
        let count: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(ebpf.take_map("gen_count").context("gen_count")?)?;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = Vec::new();
        for i in 0..a.dsts.min(65536) {
            // Unicast space outside the lab's own subnets: 1.0.0.0-223.255.255.255.
            let addr = loop {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let v = (rng >> 32) as u32;
                let first = v >> 24;
                if (1..224).contains(&first) && first != 10 && first != 127 && first != 192 {
                    break v;
                }
            };
            pool.set(i, addr.to_be(), 0)?;
            random.push(addr.to_be());
        }
        let base = GenConfig {
            dst_mac: DUT_IN_MAC,
            src_mac: GEN_MAC,
            src_ip: u32::from(GEN_IP).to_be(),
            flows: a.flows,
            dsts: a.dsts.min(65536),
            frame_len: a.frame.max(42),
            ..GenConfig::default()
        };
        config.set(0, base, 0)?;
        let stop = Arc::new(AtomicBool::new(false));
        let gen_ns = ns(&a.prefix, "gen");
        let cpu = a.gen_cpu;
        let frame_len = base.frame_len as usize;
        let stop2 = Arc::clone(&stop);
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<()> {
            let run = || -> Result<(Ebpf, u32)> {
                netns::enter(&gen_ns)?;
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let p: &mut Xdp = ebpf.program_mut("gen").context("gen")?.try_into()?;
                p.load()?;
                // Attached to an idle veth, so that each run skips synchronize_rcu().
                p.attach("xbgi0", XdpMode::Driver)
                    .context("attaching the generator to its idle veth")?;
                let name = std::ffi::CString::new("xbg0")?;
                // SAFETY: `name` is a valid C string for the duration of the call.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                if ifindex == 0 {
                    bail!("xbg0 not found in the generator's namespace");
                }
                Ok((ebpf, ifindex))
            };
            let (ebpf, ifindex) = match run() {
                Ok(v) => {
                    let _ = ready_tx.send(Ok(()));
                    v
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            let p: &Xdp = ebpf.program("gen").context("gen")?.try_into()?;
            let frame = vec![0u8; frame_len];
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex.
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(frame_len as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            while !stop2.load(Ordering::Relaxed) {
                let opts = TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&ctx),
                    repeat: 1 << 18,
                    attrs: TestRunAttrs::new().xdp_live_frames(64),
                    ..TestRunOptions::default()
                };
                if let Err(e) = p.test_run(opts) {
                    let e = anyhow::Error::from(e);
                    // A run interrupted by a signal has still sent what it sent.
                    let interrupted = e.chain().any(|c| {
                        c.downcast_ref::<std::io::Error>()
                            .is_some_and(|io| io.raw_os_error() == Some(libc::EINTR))
                    }) || format!("{e:#}").contains("os error 4)");
                    if !interrupted {
                        eprintln!(
                            "fwd: the generator stopped: BPF_PROG_RUN with live frames: {e:#}"
                        );
                        return Err(e);
                    }
                }
            }
            Ok(())
        });
        ready_rx
            .recv()
            .context("generator thread")?
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Generator {
            config,
            pool,
            random,
            base,
            routing: base,
            count,
            stop,
            thread: Some(thread),
        })
    }

    /// Aims the generator at the VIPs of `services` services, `SERVICE_FLOWS` flows
    /// over them all; `None`: at the routing candidates' random destinations.
    fn aim(&mut self, services: Option<u32>) -> Result<()> {
        match services {
            Some(n) => {
                for i in 0..n {
                    self.pool.set(i, u32::from(vip(i)).to_be(), 0)?;
                }
                self.base = GenConfig {
                    dsts: n,
                    flows: (SERVICE_FLOWS / n).max(1),
                    ..self.routing
                };
            }
            None => {
                for (i, &a) in self.random.iter().enumerate() {
                    self.pool.set(i as u32, a, 0)?;
                }
                self.base = self.routing;
            }
        }
        self.config.set(0, self.base, 0)?;
        Ok(())
    }

    /// Paces the generator at `mpps` (0: unpaced, as fast as it goes).
    fn rate(&mut self, mpps: f64) -> Result<()> {
        let mut c = self.base;
        c.interval_ns = if mpps > 0.0 { (1e3 / mpps) as u64 } else { 0 };
        self.config.set(0, c, 0)?;
        Ok(())
    }

    fn sent(&self) -> Result<u64> {
        Ok(self.count.get(&0, 0)?.iter().sum())
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sink: a tcx program that counts and drops, and an XDP one for DUTs that emit
/// XDP frames; both count into one map.
struct Sink {
    ebpf: Ebpf,
    ns: String,
    count: PerCpuArray<MapData, u64>,
    xdp: Option<aya::programs::xdp::XdpLinkId>,
}

impl Sink {
    fn attach(a: &FwdArgs) -> Result<Sink> {
        let sink_ns = ns(&a.prefix, "sink");
        let ns2 = sink_ns.clone();
        within(&sink_ns, move || {
            let mut ebpf = Ebpf::load(PROGRAMS)?;
            let count = PerCpuArray::try_from(ebpf.take_map("sink_count").context("sink_count")?)?;
            let p: &mut SchedClassifier =
                ebpf.program_mut("sink_tc").context("sink_tc")?.try_into()?;
            p.load()?;
            p.attach("xbsk", TcAttachType::Ingress)
                .context("tcx on the sink")?;
            let x: &mut Xdp = ebpf
                .program_mut("sink_xdp")
                .context("sink_xdp")?
                .try_into()?;
            x.load()?;
            Ok(Sink {
                ebpf,
                ns: ns2,
                count,
                xdp: None,
            })
        })
    }

    /// Counts in XDP (for XDP frames) or in tcx (for skbs).
    fn use_xdp(&mut self, on: bool) -> Result<()> {
        let ns = self.ns.clone();
        let x: &mut Xdp = self
            .ebpf
            .program_mut("sink_xdp")
            .context("sink_xdp")?
            .try_into()?;
        let link = self.xdp.take();
        std::thread::scope(|sc| {
            sc.spawn(|| -> Result<Option<aya::programs::xdp::XdpLinkId>> {
                netns::enter(&ns)?;
                if let Some(l) = link {
                    x.detach(l)?;
                }
                Ok(if on {
                    Some(x.attach("xbsk", XdpMode::Driver)?)
                } else {
                    None
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the sink thread panicked"))?
        })
        .map(|l| self.xdp = l)
    }

    fn received(&self) -> Result<u64> {
        Ok(self.count.get(&0, 0)?.iter().sum())
    }
}

/// CPU `cpu`'s busy time so far, in nanoseconds (wall minus idle and iowait).
fn cpu_busy_ns(cpu: usize) -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with(&format!("cpu{cpu} ")))
        .context("cpu line in /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok((total - idle) * 1_000_000_000 / hz)
}

/// One measured point.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    offered_mpps: f64,
    delivered_mpps: f64,
    busy: f64,
    ns_per_packet: f64,
}

fn measure(g: &mut Generator, s: &Sink, a: &FwdArgs, mpps: f64) -> Result<Point> {
    g.rate(mpps)?;
    std::thread::sleep(Duration::from_millis(300)); // settle
    let (g0, s0, c0, t0) = (
        g.sent()?,
        s.received()?,
        cpu_busy_ns(a.dut_cpu)?,
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    let (g1, s1, c1, t1) = (
        g.sent()?,
        s.received()?,
        cpu_busy_ns(a.dut_cpu)?,
        Instant::now(),
    );
    let secs = (t1 - t0).as_secs_f64();
    let wall = secs * 1e9;
    let delivered = (s1 - s0) as f64;
    let busy = ((c1 - c0) as f64 / wall).min(1.0);
    Ok(Point {
        offered_mpps: (g1 - g0) as f64 / secs / 1e6,
        delivered_mpps: delivered / secs / 1e6,
        busy,
        ns_per_packet: if delivered > 0.0 {
            (c1 - c0) as f64 / delivered
        } else {
            f64::INFINITY
        },
    })
}

/// A running candidate; dropping it stops it and detaches what it attached.
enum Dut {
    Kernel,
    /// Linux forwarding with an nftables ruleset in the namespace (flushed on drop).
    Nft(String),
    Redirect(#[allow(dead_code)] Ebpf),
    Worker {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
        counters: Arc<CoreCounters>,
    },
}

impl Drop for Dut {
    fn drop(&mut self) {
        if let Dut::Nft(ns) = self {
            let _ = exec(ns, &["nft", "flush", "ruleset"]);
            let _ = exec(ns, &["conntrack", "-F"]);
        }
        if let Dut::Worker { stop, thread, .. } = self {
            stop.store(true, Ordering::Relaxed);
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The node configuration xroute runs the DUT with: the generator is a pod, the sink
/// is the next hop of the default route on the uplink.
fn dut_config(
    extra_routes: &[lpm::Prefix4],
    services: u32,
    backends: u32,
    tcp: bool,
) -> Result<control::config::Config> {
    let mut text = format!(
        "node: dut\n\
         uplink: {{interface: xbdo, addresses: [192.168.50.1/24]}}\n\
         host_port: {{interface: xbhf, peer: xbhk}}\n\
         pod_cidrs: [10.244.1.0/24]\n\
         pods:\n  - {{interface: xbdi, ips: [{GEN_IP}], mac: \"0a:58:0a:f4:01:02\"}}\n\
         routes:\n  - {{prefix: 0.0.0.0/0, via: {SINK_IP}}}\n"
    );
    if services > 0 {
        let endpoints: Vec<String> = (0..backends).map(|j| backend(j).to_string()).collect();
        text.push_str("services:\n");
        let ports = if tcp {
            "{name: probe, protocol: UDP, port: 9}, {name: web, protocol: TCP, port: 80}"
        } else {
            "{protocol: UDP, port: 9}"
        };
        for i in 0..services {
            text.push_str(&format!(
                "  - {{name: s{i}, cluster_ips: [{}], ports: [{ports}], endpoints: [{}]}}\n",
                vip(i),
                endpoints.join(", ")
            ));
        }
    }
    let mut c = control::config::parse(&text, "bench").map_err(|e| anyhow::anyhow!("{e}"))?;
    c.routes.extend(extra_routes.iter().map(|&p| Route {
        prefix: Cidr::V4(p),
        via: OneOrMany::One(IpAddr::V4(SINK_IP)),
    }));
    Ok(c)
}

/// Starts candidate `name`; with `tcp`, its services also serve TCP port 80.
fn start(a: &FwdArgs, name: &str, big_fib: &[lpm::Prefix4], tcp: bool) -> Result<Dut> {
    let dut_ns = ns(&a.prefix, "dut");
    match name {
        "kernel" => Ok(Dut::Kernel),
        n if n.starts_with("nft-") => {
            let services =
                services_of(n).with_context(|| format!("{n}: nft-N or nft-Nk services"))?;
            let path = std::env::temp_dir().join(format!("{}-nft.conf", a.prefix));
            std::fs::write(&path, nft_ruleset(services, a.service_backends, tcp))?;
            let t0 = Instant::now();
            exec(&dut_ns, &["nft", "-f", &path.to_string_lossy()])
                .with_context(|| format!("loading the nftables ruleset of {services} services"))?;
            let _ = std::fs::remove_file(&path);
            eprintln!(
                "  {n}: ruleset of {services} services loaded in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            Ok(Dut::Nft(dut_ns))
        }
        "devmap" => within(&dut_ns, || {
            let mut ebpf = Ebpf::load(PROGRAMS)?;
            let mut cfg: Array<&mut MapData, RedirectConfig> =
                Array::try_from(ebpf.map_mut("redirect_cfg").context("redirect_cfg")?)?;
            cfg.set(
                0,
                RedirectConfig {
                    dst_mac: SINK_MAC,
                    src_mac: DUT_OUT_MAC,
                },
                0,
            )?;
            let out = std::ffi::CString::new("xbdo")?;
            // SAFETY: `out` is a valid C string for the duration of the call.
            let out_index = unsafe { libc::if_nametoindex(out.as_ptr()) };
            let mut egress: aya::maps::DevMap<&mut MapData> =
                aya::maps::DevMap::try_from(ebpf.map_mut("egress").context("egress")?)?;
            egress.set(0, out_index, None, 0)?;
            let p: &mut Xdp = ebpf
                .program_mut("redirect")
                .context("redirect")?
                .try_into()?;
            p.load()?;
            p.attach("xbdi", XdpMode::Driver)?;
            // The egress veth's peer needs NAPI for XDP frames: GRO is on at the sink.
            Ok(Dut::Redirect(ebpf))
        }),
        n if matches!(n, "bare" | "xroute" | "xroute-1m") || n.starts_with("nat-") => {
            let stop = Arc::new(AtomicBool::new(false));
            let counters = Arc::new(CoreCounters::default());
            let routes: Vec<lpm::Prefix4> = if name == "xroute-1m" {
                big_fib.to_vec()
            } else {
                Vec::new()
            };
            let services = services_of(name).unwrap_or(0);
            let config = dut_config(&routes, services, a.service_backends, tcp)?;
            let bare = name == "bare";
            let idle = match a.idle.as_str() {
                "spin" => Idle::Spin,
                "poll" => Idle::Poll,
                "priority" => Idle::Priority,
                other => bail!("--idle {other}: spin, poll or priority"),
            };
            let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), String>>();
            let (stop2, counters2, cpu) = (Arc::clone(&stop), Arc::clone(&counters), a.dut_cpu);
            let thread = std::thread::spawn(move || {
                let setup = || -> Result<(Vec<Steering>, Worker)> {
                    netns::enter(&dut_ns)?;
                    let plan = port_plan(&config);
                    // sysfs shows the root namespace's devices to this thread, so the
                    // links are the ones `topology` made.
                    let known = |dev: &str| match dev {
                        "xbdo" => DUT_OUT_MAC,
                        "xbhf" => HOST_F_MAC,
                        _ => DUT_IN_MAC,
                    };
                    let mut links = Vec::new();
                    let mut steering = Vec::new();
                    for (dev, mode, _) in &plan {
                        links.push(Link {
                            name: dev.clone(),
                            mac: known(dev),
                            mtu: 1500,
                        });
                        // The bare forwarder takes every frame on every port.
                        let mode = if bare {
                            fastpath::steer::SteerMode::All
                        } else {
                            *mode
                        };
                        steering.push(Steering::attach(dev, mode)?);
                    }
                    let (v4, v6) = control::model::uplink_destinations(&config);
                    steering[0].set_destinations(&v4, &v6)?;
                    let mut n = Neighbours::new();
                    n.insert(IpAddr::V4(SINK_IP), SINK_MAC);
                    // No pod egress: the routing candidates' frames go to random outside
                    // addresses, which egress would SNAT (a new flow per packet).
                    let proxy = control::services::Proxy::new(control::services::ProxySettings {
                        // The connection-rate run leaves every connection in
                        // TIME_WAIT for 120 s, as Linux's conntrack does: room for
                        // them all (xroute's default size).
                        conntrack_max: if tcp { 1 << 20 } else { 65536 },
                        pod_egress: false,
                        ..Default::default()
                    });
                    let tables = build_tables(&config, &links, HOST_K_MAC, &n, &proxy)
                        .map_err(anyhow::Error::msg)?;
                    let cell = Arc::new(SnapshotCell::new(Snapshot::new(tables)?));
                    let w = Worker::new(
                        WorkerConfig {
                            id: 0,
                            queue: 0,
                            core: Some(cpu),
                            idle,
                            icmp_errors: Default::default(),
                        },
                        &mut steering,
                        Some(control::model::HOST_PORT),
                        cell,
                        counters2,
                        stop2,
                    )?;
                    Ok((steering, w))
                };
                match setup() {
                    Ok((steering, w)) => {
                        let _ = ready_tx.send(Ok(()));
                        if bare {
                            // Port 2 is the generator's (a pod), port 0 the sink's (uplink).
                            w.run_with(Some(|port: u16, buf: &mut [u8], _len: &mut usize| {
                                if port != 2 || buf.len() < 12 {
                                    return Verdict::Drop(
                                        fastpath::counters::DropReason::LinkScope,
                                    );
                                }
                                buf[0..6].copy_from_slice(&SINK_MAC);
                                buf[6..12].copy_from_slice(&DUT_OUT_MAC);
                                Verdict::Tx(0)
                            }));
                        } else {
                            w.run();
                        }
                        drop(steering);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                    }
                }
            });
            ready_rx
                .recv()
                .context("DUT thread")?
                .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
            Ok(Dut::Worker {
                stop,
                thread: Some(thread),
                counters,
            })
        }
        other => bail!(
            "unknown candidate {other} (kernel, devmap, bare, xroute, xroute-1m, nat-N, nat-Nk, nft-N, nft-Nk)"
        ),
    }
}

/// Everything measured of one candidate in one round.
#[derive(Debug, Clone, Default)]
struct Round {
    sweep: Vec<Point>,
    peak: Point,
    overload: Point,
}

fn run_candidate(
    g: &mut Generator,
    s: &mut Sink,
    a: &FwdArgs,
    name: &str,
    big: &[lpm::Prefix4],
) -> Result<Round> {
    g.aim(services_of(name))?;
    let dut = start(a, name, big, false)?;
    s.use_xdp(name == "devmap")?;
    place_napi(a)?;
    let mut r = Round::default();
    for &rate in &a.rates {
        let p = measure(g, s, a, rate)?;
        if p.delivered_mpps > r.peak.delivered_mpps {
            r.peak = p;
        }
        r.sweep.push(p);
    }
    // Saturation: unpaced, the generator's full rate.
    let sat = measure(g, s, a, 0.0)?;
    if sat.delivered_mpps > r.peak.delivered_mpps {
        r.peak = sat;
    }
    r.sweep.push(sat);
    // 2x overload of the peak (unpaced if the generator cannot go that fast paced).
    r.overload = measure(g, s, a, 2.0 * r.peak.delivered_mpps)?;
    if let Dut::Worker { counters, .. } = &dut {
        let v = counters.read();
        eprintln!(
            "  {name}: worker rx {} tx {} kicks {} drops [{}]",
            v.rx_packets,
            v.tx_packets,
            v.kicks,
            drop_names(&v.drops)
        );
    }
    drop(dut);
    g.rate(0.001)?;
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// iperf3 TCP from the generator's namespace to the sink's through the DUT.
fn iperf(a: &FwdArgs) -> Result<f64> {
    let s = ns(&a.prefix, "sink");
    let g = ns(&a.prefix, "gen");
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &s, "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(400));
    let out = exec(
        &g,
        &[
            "taskset",
            "-c",
            &a.gen_cpu.to_string(),
            "iperf3",
            "-c",
            &SINK_IP.to_string(),
            "-p",
            "5201",
            "-t",
            "3",
            "-J",
        ],
    );
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_str(&out?)?;
    Ok(v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9)
}

/// A worker's non-zero drop counters, by name.
fn drop_names(drops: &[u64]) -> String {
    fastpath::counters::DropReason::ALL
        .iter()
        .filter(|r| drops[**r as usize] > 0)
        .map(|r| format!("{} {}", r.name(), drops[*r as usize]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one connection-rate run measured.
#[derive(Debug, Clone, Copy, Default)]
struct ConnRun {
    per_s: f64,
    failed: u64,
    busy: f64,
    ns_per_conn: f64,
}

/// New TCP connections through the DUT: `conn_clients` threads in the generator's
/// namespace connect to the 10 ClusterIPs' port 80 in turn, send one byte and their
/// FIN, read the answer and the server's FIN; a server in the sink's namespace accepts
/// for every backend address. The clients close first, so TIME_WAIT stays with them
/// (`tcp_tw_reuse` lets their ports be taken again): a server's TIME_WAIT would meet
/// the same client port again through another VIP, with another timestamp offset, and
/// refuse it. Clients and server run on the generator's CPU; the DUT's CPU time per
/// completed connection is the cost compared.
fn conns(a: &FwdArgs, services: u32) -> Result<ConnRun> {
    let (g, s) = (ns(&a.prefix, "gen"), ns(&a.prefix, "sink"));
    exec(&g, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = a.gen_cpu;
    // A socket stays in the namespace it was made in, whichever thread uses it.
    let listener = netns::within(&s, || {
        let l = std::net::TcpListener::bind("0.0.0.0:80").context("binding port 80")?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let mut servers = Vec::new();
    for _ in 0..4 {
        let (l, stop) = (listener.try_clone()?, Arc::clone(&stop));
        servers.push(std::thread::spawn(move || -> Result<()> {
            pin_self(cpu)?;
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        // The request and the client's FIN, then the answer and ours.
                        c.set_nonblocking(false)?;
                        c.set_read_timeout(Some(Duration::from_secs(1)))?;
                        let mut req = [0u8; 2];
                        let mut got = 0;
                        while let Ok(n @ 1..) = std::io::Read::read(&mut c, &mut req[got.min(1)..])
                        {
                            got += n;
                        }
                        if got == 1 {
                            let _ = std::io::Write::write_all(&mut c, b"y");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    Err(_) => {}
                }
            }
            Ok(())
        }));
    }
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = Vec::new();
    for t in 0..a.conn_clients {
        let (g, stop, done, failed) = (
            g.clone(),
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&failed),
        );
        clients.push(std::thread::spawn(move || -> Result<()> {
            netns::enter(&g)?;
            pin_self(cpu)?;
            let mut i = t as u32;
            let mut byte = [0u8; 2];
            while !stop.load(Ordering::Relaxed) {
                let to = std::net::SocketAddr::new(IpAddr::V4(vip(i % services)), 80);
                i = i.wrapping_add(1);
                let ok = (|| -> std::io::Result<bool> {
                    let mut c = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1))?;
                    c.set_read_timeout(Some(Duration::from_secs(1)))?;
                    std::io::Write::write_all(&mut c, b"x")?;
                    c.shutdown(std::net::Shutdown::Write)?;
                    let mut got = 0;
                    loop {
                        match std::io::Read::read(&mut c, &mut byte[got..])? {
                            0 => return Ok(got == 1),
                            n => got += n,
                        }
                        if got > 1 {
                            return Ok(false);
                        }
                    }
                })();
                match ok {
                    Ok(true) => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
            Ok(())
        }));
    }
    std::thread::sleep(Duration::from_millis(500)); // settle
    let (n0, f0, c0, t0) = (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        cpu_busy_ns(a.dut_cpu)?,
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(2.0 * a.seconds));
    let (n1, f1, c1, t1) = (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        cpu_busy_ns(a.dut_cpu)?,
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join()
            .map_err(|_| anyhow::anyhow!("a connection client panicked"))??;
    }
    for t in servers {
        t.join()
            .map_err(|_| anyhow::anyhow!("a connection server panicked"))??;
    }
    let secs = (t1 - t0).as_secs_f64();
    let n = (n1 - n0) as f64;
    Ok(ConnRun {
        per_s: n / secs,
        failed: f1 - f0,
        busy: ((c1 - c0) as f64 / (secs * 1e9)).min(1.0),
        ns_per_conn: if n > 0.0 {
            (c1 - c0) as f64 / n
        } else {
            f64::INFINITY
        },
    })
}

/// Pins the calling thread to `cpu`.
fn pin_self(cpu: usize) -> Result<()> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        bail!("cannot pin a thread to CPU {cpu}")
    }
}

pub fn fwd(a: FwdArgs, machine: &str) -> Result<()> {
    teardown(&a.prefix);
    let result = fwd_inner(&a, machine);
    teardown(&a.prefix);
    result
}

fn fwd_inner(a: &FwdArgs, machine: &str) -> Result<()> {
    topology(a)?;
    let big: Vec<lpm::Prefix4> = if a.candidates.iter().any(|c| c == "xroute-1m") {
        let t0 = Instant::now();
        let path = crate::tables::data_dir().join("routeviews-20151101-v4.tsv.gz");
        let table = crate::tables::load::<u32>(&path)?;
        let scaled = crate::tables::scale(&table, a.routes, 1);
        eprintln!(
            "fwd: {} routes for the large FIB ({:.1} s)",
            scaled.len(),
            t0.elapsed().as_secs_f64()
        );
        scaled
            .into_iter()
            .map(|r| r.0)
            .filter(|p| p.len() > 0)
            .collect()
    } else {
        Vec::new()
    };
    let mut sink = Sink::attach(a)?;
    let mut gen = Generator::start(a)?;
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); a.candidates.len()];
    for run in 0..a.runs {
        for (i, name) in a.candidates.iter().enumerate() {
            eprintln!("fwd: round {} of {}: {name}", run + 1, a.runs);
            rounds[i].push(run_candidate(&mut gen, &mut sink, a, name, &big)?);
        }
    }
    println!("# xroute-bench fwd");
    println!("machine: {machine}");
    println!(
        "frames {} bytes, {} flows, {} destinations (service candidates: {SERVICE_FLOWS} flows to their VIPs, {} backends each); DUT on CPU {}, generator and sink on CPU {}; {} s per point, {} rounds interleaved, medians",
        a.frame, a.flows, a.dsts, a.service_backends, a.dut_cpu, a.gen_cpu, a.seconds, a.runs
    );
    println!();
    println!("| candidate | peak Mpps at sink | CPU busy at peak | CPU ns/packet at peak | 2x overload Mpps | overload / peak |");
    println!("|---|---|---|---|---|---|");
    let mut overload_ratio = std::collections::HashMap::new();
    for (name, rs) in a.candidates.iter().zip(&rounds) {
        let peak = median(rs.iter().map(|r| r.peak.delivered_mpps).collect());
        let busy = median(rs.iter().map(|r| r.peak.busy).collect());
        let nsp = median(rs.iter().map(|r| r.peak.ns_per_packet).collect());
        let over = median(rs.iter().map(|r| r.overload.delivered_mpps).collect());
        let ratio = median(
            rs.iter()
                .map(|r| r.overload.delivered_mpps / r.peak.delivered_mpps)
                .collect(),
        );
        overload_ratio.insert(name.as_str(), ratio);
        println!(
            "| {name} | {peak:.3} | {:.0}% | {nsp:.0} | {over:.3} | {ratio:.2} |",
            busy * 100.0
        );
    }
    println!();
    println!("loss versus offered load (medians; offered = what the generator sent):");
    println!();
    let mut header = String::from("| candidate |");
    let mut rule = String::from("|---|");
    for r in &a.rates {
        header.push_str(&format!(" {r} Mpps |"));
        rule.push_str("---|");
    }
    header.push_str(" unpaced |");
    rule.push_str("---|");
    println!("{header}");
    println!("{rule}");
    for (name, rs) in a.candidates.iter().zip(&rounds) {
        let mut line = format!("| {name} |");
        for k in 0..=a.rates.len() {
            let loss = median(
                rs.iter()
                    .map(|r| {
                        let p = r.sweep[k];
                        if p.offered_mpps > 0.0 {
                            1.0 - p.delivered_mpps / p.offered_mpps
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            );
            let offered = median(rs.iter().map(|r| r.sweep[k].offered_mpps).collect());
            line.push_str(&format!(" {:.1}% of {offered:.2} |", loss.max(0.0) * 100.0));
        }
        println!("{line}");
    }
    let mut tcp = Vec::new();
    std::io::Write::flush(&mut std::io::stdout())?;
    drop(gen);
    if a.iperf {
        for name in ["kernel", "xroute"] {
            let mut v = Vec::new();
            for _ in 0..a.runs {
                let dut = start(a, name, &big, false)?;
                place_napi(a)?;
                v.push(iperf(a).with_context(|| format!("iperf3 through {name}"))?);
                drop(dut);
            }
            tcp.push((name, median(v)));
        }
    }

    if !tcp.is_empty() {
        println!();
        println!("iperf3 TCP, TSO/GSO off, {} runs, median:", a.runs);
        for (name, gbps) in &tcp {
            println!("- through {name}: {gbps:.2} Gbit/s");
        }
    }
    // New TCP connections through 10 ClusterIPs, the candidates interleaved per round.
    const CONN_CANDIDATES: [&str; 2] = ["nat-10", "nft-10"];
    let mut conn_runs: Vec<Vec<ConnRun>> = vec![Vec::new(); CONN_CANDIDATES.len()];
    if a.conns {
        for run in 0..a.runs {
            for (i, name) in CONN_CANDIDATES.iter().enumerate() {
                eprintln!("fwd: connections, round {} of {}: {name}", run + 1, a.runs);
                let dut = start(a, name, &big, true)?;
                place_napi(a)?;
                // The clients' receive stage too: unthreaded, it would run on the CPU
                // that sent to it (the DUT's) and charge their TCP to the DUT.
                netns::pin(
                    netns::napi_thread(&ns(&a.prefix, "gen"), "xbg0")?,
                    a.gen_cpu,
                )?;
                let r = conns(a, 10).with_context(|| format!("connections through {name}"))?;
                if let Dut::Worker { counters, .. } = &dut {
                    let v = counters.read();
                    eprintln!(
                        "  {name}: worker rx {} tx {} drops [{}]",
                        v.rx_packets,
                        v.tx_packets,
                        drop_names(&v.drops)
                    );
                }
                drop(dut);
                eprintln!(
                    "  {name}: {:.0} connections/s, {} failed, DUT busy {:.0}%, {:.0} ns each",
                    r.per_s,
                    r.failed,
                    r.busy * 100.0,
                    r.ns_per_conn
                );
                conn_runs[i].push(r);
            }
        }
        println!();
        println!(
            "new TCP connections through 10 ClusterIPs ({} clients, one connection each at a time; clients and server on CPU {}), {} rounds, medians:",
            a.conn_clients, a.gen_cpu, a.runs
        );
        println!();
        println!(
            "| candidate | connections/s | failed per run | DUT CPU busy | DUT CPU ns/connection |"
        );
        println!("|---|---|---|---|---|");
        for (name, rs) in CONN_CANDIDATES.iter().zip(&conn_runs) {
            println!(
                "| {name} | {:.0} | {:.0} | {:.0}% | {:.0} |",
                median(rs.iter().map(|r| r.per_s).collect()),
                median(rs.iter().map(|r| r.failed as f64).collect()),
                100.0 * median(rs.iter().map(|r| r.busy).collect()),
                median(rs.iter().map(|r| r.ns_per_conn).collect()),
            );
        }
    }
    println!();
    // Ratios are taken within each round (the candidates measured minutes apart at
    // most, on the same machine state), then the median over rounds.
    let per_round = |num: &str, den: &str, f: &dyn Fn(&Round) -> f64| -> Option<f64> {
        let i = a.candidates.iter().position(|c| c == num)?;
        let j = a.candidates.iter().position(|c| c == den)?;
        Some(median(
            rounds[i]
                .iter()
                .zip(&rounds[j])
                .map(|(x, y)| f(x) / f(y))
                .collect(),
        ))
    };
    let cost = |r: &Round| r.peak.ns_per_packet;
    if let Some(v) = per_round("bare", "xroute", &cost) {
        println!("ratio xroute_vs_bare {v:.3}");
    }
    if let Some(v) = per_round("kernel", "xroute", &cost) {
        println!("ratio xroute_vs_kernel {v:.3}");
    }
    if let Some(v) = per_round("xroute-1m", "xroute", &cost) {
        println!("ratio fib_1050k_cost_vs_10 {v:.3}");
    }
    if let Some(o) = overload_ratio.get("xroute") {
        println!("ratio overload {o:.3}");
    }
    if let Some(v) = per_round("bare", "nat-10", &cost) {
        println!("ratio nat_vs_bare {v:.3}");
    }
    if let Some(v) = per_round("nft-10", "nat-10", &cost) {
        println!("ratio nat_vs_nftables {v:.3}");
    }
    if let Some(v) = per_round("nft-10k", "nat-10k", &cost) {
        println!("ratio nat_vs_nftables_10k {v:.3}");
    }
    if let Some(v) = per_round("nat-10k", "nat-10", &cost) {
        println!("ratio services_10k_cost_vs_10 {v:.3}");
    }
    if let Some(v) = per_round("nft-10k", "nft-10", &cost) {
        println!("ratio nft_services_10k_cost_vs_10 {v:.3}");
    }
    if a.conns {
        let per_round_conn = |f: &dyn Fn(&ConnRun, &ConnRun) -> f64| {
            median(
                conn_runs[0]
                    .iter()
                    .zip(&conn_runs[1])
                    .map(|(x, n)| f(x, n))
                    .collect(),
            )
        };
        let v = per_round_conn(&|x, n| n.ns_per_conn / x.ns_per_conn);
        println!("ratio tcp_conn_cost_nat_vs_nftables {v:.3}");
        let v = per_round_conn(&|x, n| x.per_s / n.per_s);
        println!("ratio tcp_conn_rate_nat_vs_nftables {v:.3}");
    }
    Ok(())
}
