//! `xroute-bench bgp-ingest`: a full table announced over one BGP session to the xroute
//! agent and, in the same run, to BIRD, each in its own namespace and each started
//! fresh for every round (the two take turns).
//!
//! The sender (this process, in a third namespace) connects, exchanges OPENs and
//! KEEPALIVEs, and from Established writes the pre-encoded UPDATEs as fast as the
//! receiver takes them, then End-of-RIB. Measured per round:
//! - time from Established to the last route in the Loc-RIB (the routes accepted from
//!   the sender: xroute's `/bgp/neighbors`, BIRD's `show protocols all`), both polled
//!   every 50 ms;
//! - for xroute, time to the forwarding snapshot holding all of them (`/stats`'
//!   `learned_routes`);
//! - resident memory per route: the receiver's RSS after ingestion minus before the
//!   session, over the route count.
//!
//! xroute installs the routes into the kernel as it does in production (toward its
//! host port, from its own thread); BIRD runs without a kernel protocol, because its
//! kernel export runs in its one thread and would slow its RIB: the comparison is
//! the most favourable to BIRD.
//!
//! The table: the RouteViews IPv4 table scaled to `--routes` (bench::tables), prefixes
//! in multicast space left out (not announceable), each with a plausible AS path: the
//! sender's AS, one of eight tier-1 ASes (up to three per origin, by prefix) and, for
//! a third of origins, a regional AS, then the origin AS. Prefixes with one path are
//! packed into UPDATEs as a real table dump packs them.

use crate::fwd::netns::{exec, ip, sh, within};
use crate::tables;
use anyhow::{anyhow, bail, Context, Result};
use control::bgp::frame::{next_message, MAX_LEN};
use control::bgp::rib::{AsSegment, Origin, PathAttrs};
use control::bgp::wire::{self, Decoding, Family, Message, Open};
use control::config::Cidr;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Routes in the table (the RouteViews table scaled up).
    #[arg(long, default_value_t = 1_050_000)]
    pub routes: usize,
    /// Rounds; each round runs xroute then BIRD, each started fresh.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The xroute binary [default: `xroute` beside this one].
    #[arg(long)]
    pub xroute: Option<PathBuf>,
    /// Namespace prefix.
    #[arg(long, default_value = "xrbi")]
    pub prefix: String,
}

const SENDER: &str = "192.168.60.1";
const XROUTE_IP: &str = "192.168.60.11";
const BIRD_IP: &str = "192.168.60.21";
const SENDER_ASN: u32 = 64700;
const METRICS_PORT: u16 = 9253;

/// The UPDATEs of the table, in order, as one byte stream.
fn table_stream(routes: usize) -> Result<(Vec<u8>, usize, usize)> {
    let real = tables::load::<u32>(&tables::data_dir().join("routeviews-20151101-v4.tsv.gz"))?;
    let scaled = tables::scale(&real, routes + routes / 8, 1);
    let prefixes: Vec<(Cidr, u32)> = scaled
        .iter()
        .map(|(p, asn)| (Cidr::V4(*p), *asn))
        // Not the node's own pod CIDRs (10.244.0.0/16), which would lose to its own, nor
        // the spaces routers refuse as martians (0/8, 127/8, 224/3).
        .filter(|(c, _)| {
            let Cidr::V4(p) = c else { return false };
            let first = p.addr() >> 24;
            wire::encodable(c)
                && p.addr() >> 16 != 0x0af4
                && first != 0
                && first != 127
                && first < 224
        })
        .take(routes)
        .collect();
    if prefixes.len() < routes {
        bail!("only {} announceable prefixes", prefixes.len());
    }
    const TIER1: [u32; 8] = [174, 1299, 2914, 3257, 3356, 3491, 6453, 6762];
    const REGIONAL: [u32; 6] = [6939, 9002, 4637, 7473, 20485, 31133];
    let mut by_path: HashMap<Vec<u32>, Vec<Cidr>> = HashMap::new();
    let mut order: Vec<Vec<u32>> = Vec::new();
    for (c, origin) in prefixes {
        // An origin reaches the sender over one of up to three upstreams, by prefix
        // (as multihomed origins' prefixes do), so paths outnumber origins.
        let Cidr::V4(p) = c else { continue };
        let spread = (p.addr().wrapping_mul(0x9e37_79b9) >> 24) % 3;
        let mut path = vec![SENDER_ASN, TIER1[((origin + spread) % 8) as usize]];
        if origin % 3 == 0 {
            path.push(REGIONAL[(origin / 3 % 6) as usize]);
        }
        path.push(origin);
        let e = by_path.entry(path.clone()).or_default();
        if e.is_empty() {
            order.push(path);
        }
        e.push(c);
    }
    let mut stream = Vec::new();
    let mut messages = 0;
    for path in &order {
        let attrs = PathAttrs {
            origin: Origin::Igp,
            as_path: vec![AsSegment::Sequence(path.clone())],
            next_hop: IpAddr::V4(SENDER.parse()?),
            med: None,
            local_pref: None,
            communities: Vec::new(),
            ext_communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
        };
        for m in wire::encode_announce(Family::Ipv4, &by_path[path], &attrs, true) {
            stream.extend_from_slice(&m);
            messages += 1;
        }
    }
    stream.extend_from_slice(&wire::encode_end_of_rib(Family::Ipv4));
    Ok((stream, messages, order.len()))
}

fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>> {
    loop {
        match next_message(buf, MAX_LEN) {
            Ok(Some(n)) => {
                let m = buf[..n].to_vec();
                buf.drain(..n);
                return Ok(m);
            }
            Ok(None) => {}
            Err(n) => bail!("bad message from the receiver: {n:?}"),
        }
        let mut chunk = [0u8; 4096];
        let k = s.read(&mut chunk).context("reading from the receiver")?;
        if k == 0 {
            bail!("the receiver closed the session");
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// Opens the session from the sender's namespace; returns the stream once
/// Established, with the instant it became so.
fn session(to: &str, asn: u32) -> Result<(TcpStream, Instant)> {
    let addr = SocketAddr::new(to.parse()?, 179);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    let open = Open {
        asn: SENDER_ASN,
        hold_time: 240,
        router_id: SENDER.parse()?,
        asn4: true,
        families: vec![Family::Ipv4],
        route_refresh: true,
        graceful_restart: None,
    };
    s.write_all(&wire::encode_open(&open))?;
    let mut buf = Vec::new();
    let mut theirs = None;
    while theirs.is_none() {
        let m = read_message(&mut s, &mut buf)?;
        match wire::decode(&m, Decoding { asn4: true }) {
            Ok(Message::Open(o)) => theirs = Some(o),
            Ok(Message::Notification(n)) => bail!("{to} refused the session: {n:?}"),
            _ => {}
        }
    }
    if theirs.as_ref().map(|o| o.asn) != Some(asn) {
        bail!("{to} is AS {:?}, not {asn}", theirs.map(|o| o.asn));
    }
    s.write_all(&wire::encode_keepalive())?;
    loop {
        let m = read_message(&mut s, &mut buf)?;
        if let Ok(Message::Keepalive) = wire::decode(&m, Decoding { asn4: true }) {
            return Ok((s, Instant::now()));
        }
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

fn http_get(path: &str) -> Result<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", METRICS_PORT))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    let body = r.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok(serde_json::from_str(body)?)
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Xroute,
    Bird,
}

struct Round {
    rib: Duration,
    fib: Option<Duration>,
    send: Duration,
    bytes_per_route: f64,
}

struct Bench {
    prefix: String,
    dir: PathBuf,
    xroute: PathBuf,
}

impl Bench {
    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    fn setup(&self) -> Result<()> {
        let sw = self.ns("sw");
        for n in ["sw", "send", "xr", "bird"] {
            sh(&["ip", "netns", "add", &self.ns(n)])?;
            ip(&self.ns(n), "link set lo up")?;
        }
        ip(&sw, "link add br0 type bridge")?;
        ip(&sw, "link set br0 up")?;
        for (i, (n, addr, dev)) in [
            ("send", SENDER, "eth0"),
            ("xr", XROUTE_IP, "up0"),
            ("bird", BIRD_IP, "eth0"),
        ]
        .iter()
        .enumerate()
        {
            let ns = self.ns(n);
            ip(
                &sw,
                &format!("link add p{i} type veth peer name {dev} netns {ns}"),
            )?;
            ip(&sw, &format!("link set p{i} master br0 up"))?;
            ip(&ns, &format!("addr add {addr}/24 dev {dev}"))?;
            ip(&ns, &format!("link set {dev} up"))?;
        }
        let xr = self.ns("xr");
        ip(&xr, "link add xrf0 type veth peer name xrk0")?;
        ip(&xr, "link set xrf0 up")?;
        ip(&xr, "link set xrk0 up")?;
        let core = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        std::fs::write(
            self.dir.join("node.yaml"),
            format!(
                "node: bench\ncores: [{core}]\nuplink: {{interface: up0, addresses: [{XROUTE_IP}/24]}}\n\
                 host_port: {{interface: xrf0, peer: xrk0}}\npod_cidrs: [10.244.1.0/24]\n"
            ),
        )?;
        std::fs::write(
            self.dir.join("bird.conf"),
            format!(
                "router id {BIRD_IP};\nprotocol device {{ }}\n\
                 protocol bgp sender {{ local {BIRD_IP} as 64512; neighbor {SENDER} as {SENDER_ASN}; hold time 240;\n\
                 \x20 ipv4 {{ import all; export none; }};\n}}\n"
            ),
        )?;
        Ok(())
    }

    fn teardown(&self) {
        for n in ["send", "xr", "bird", "sw"] {
            let ns = self.ns(n);
            if let Ok(pids) = sh(&["ip", "netns", "pids", &ns]) {
                for p in pids.split_whitespace() {
                    let _ = sh(&["kill", "-KILL", p]);
                }
            }
            let _ = sh(&["ip", "netns", "del", &ns]);
        }
    }

    /// Starts the receiver; returns its pid once it answers.
    fn start(&self, t: Target) -> Result<u32> {
        match t {
            Target::Xroute => {
                let log = std::fs::File::create(self.dir.join("xroute.log"))?;
                let child = Command::new("ip")
                    .args(["netns", "exec", &self.ns("xr")])
                    .arg(&self.xroute)
                    .args(["run", "--config"])
                    .arg(self.dir.join("node.yaml"))
                    .args([
                        &format!("--peer-router-ips={SENDER}"),
                        &format!("--peer-router-asns={SENDER_ASN}"),
                        "--bgp-holdtime=240s",
                    ])
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                    )
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("starting xroute")?;
                let pid = child.id();
                std::mem::forget(child);
                let ok = within(&self.ns("xr"), || {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while Instant::now() < deadline {
                        if http_get("/bgp/global").is_ok() {
                            return Ok(true);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Ok(false)
                })?;
                if !ok {
                    bail!(
                        "xroute did not come up; see {}",
                        self.dir.join("xroute.log").display()
                    );
                }
                Ok(pid)
            }
            Target::Bird => {
                let ctl = self.dir.join("bird.ctl");
                let pidf = self.dir.join("bird.pid");
                exec(
                    &self.ns("bird"),
                    &[
                        "bird",
                        "-c",
                        &self.dir.join("bird.conf").to_string_lossy(),
                        "-s",
                        &ctl.to_string_lossy(),
                        "-P",
                        &pidf.to_string_lossy(),
                    ],
                )?;
                std::thread::sleep(Duration::from_millis(500));
                Ok(std::fs::read_to_string(&pidf)?.trim().parse()?)
            }
        }
    }

    fn stop(&self, pid: u32) {
        let _ = sh(&["kill", "-TERM", &pid.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            if std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            }) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = sh(&["kill", "-KILL", &pid.to_string()]);
        // xroute leaves its kernel routes (for a graceful restart): start clean.
        let _ = ip(&self.ns("xr"), "route flush proto bgp");
    }

    /// The routes the receiver took from the sender into its Loc-RIB, and for xroute
    /// the learned routes in its newest forwarding snapshot. Both are O(1) queries
    /// (per-peer counters), so polling does not load the receiver.
    fn counts(&self, t: Target) -> Result<(usize, usize)> {
        match t {
            Target::Xroute => {
                let n = http_get("/bgp/neighbors")?;
                let accepted = n
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["address"] == SENDER))
                    .and_then(|p| p["accepted"].as_u64())
                    .unwrap_or(0);
                let s = http_get("/stats")?;
                Ok((
                    accepted as usize,
                    s["learned_routes"].as_u64().unwrap_or(0) as usize,
                ))
            }
            Target::Bird => {
                let out = Command::new("birdc")
                    .args([
                        "-s",
                        &self.dir.join("bird.ctl").to_string_lossy(),
                        "show",
                        "protocols",
                        "all",
                        "sender",
                    ])
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                // "Routes:         1050000 imported, 0 exported, ..."
                let n = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Routes:"))
                    .and_then(|l| l.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                Ok((n, 0))
            }
        }
    }

    fn round(&self, t: Target, stream: &std::sync::Arc<Vec<u8>>, routes: usize) -> Result<Round> {
        let pid = self.start(t)?;
        std::thread::sleep(Duration::from_millis(500));
        let before = rss_kib(pid)?;
        let (to, asn) = match t {
            Target::Xroute => (XROUTE_IP, 64512),
            Target::Bird => (BIRD_IP, 64512),
        };
        let (tx, rx) = std::sync::mpsc::channel::<Result<(Instant, Duration)>>();
        let stream2 = std::sync::Arc::clone(stream);
        let sender_ns = self.ns("send");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = std::sync::Arc::clone(&stop);
        let sender = std::thread::spawn(move || {
            let tx2 = tx.clone();
            let r = within(&sender_ns, move || {
                let (mut s, up) = session(to, asn)?;
                // Drain whatever the receiver sends while we write.
                let mut r = s.try_clone()?;
                std::thread::spawn(move || {
                    let mut sink = [0u8; 65536];
                    while r.read(&mut sink).is_ok_and(|n| n > 0) {}
                });
                s.write_all(&stream2)?;
                let _ = tx2.send(Ok((up, up.elapsed())));
                // Keep the session open (with KEEPALIVEs) while the receiver is measured.
                let mut last = Instant::now();
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    if last.elapsed() > Duration::from_secs(20) {
                        s.write_all(&wire::encode_keepalive())?;
                        last = Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            });
            if let Err(e) = r {
                let _ = tx.send(Err(e));
            }
        });
        let ns = match t {
            Target::Xroute => self.ns("xr"),
            Target::Bird => self.ns("bird"),
        };
        // Established is the sender's instant; the poller records when the counts
        // are complete and takes the sender's instants at the end.
        let deadline = Instant::now() + Duration::from_secs(600);
        let dir = self.dir.clone();
        let me = Bench {
            prefix: self.prefix.clone(),
            dir,
            xroute: self.xroute.clone(),
        };
        let polled = within(&ns, move || {
            let mut up_at: Option<(Instant, Duration)> = None;
            let (mut rib, mut fib): (Option<Instant>, Option<Instant>) = (None, None);
            loop {
                if up_at.is_none() {
                    match rx.try_recv() {
                        Ok(r) => up_at = Some(r?),
                        Err(std::sync::mpsc::TryRecvError::Empty) => {}
                        Err(e) => bail!("sender: {e}"),
                    }
                }
                let (r, f) = me.counts(t).unwrap_or((0, 0));
                let now = Instant::now();
                if r >= routes && rib.is_none() {
                    rib = Some(now);
                }
                if f >= routes && fib.is_none() {
                    fib = Some(now);
                }
                let done = rib.is_some() && (matches!(t, Target::Bird) || fib.is_some());
                if done {
                    // The sender's thread reports Established once its write ends.
                    while up_at.is_none() {
                        up_at = Some(rx.recv_timeout(Duration::from_secs(60))??);
                    }
                    return Ok((up_at, rib, fib));
                }
                if now > deadline {
                    bail!("{t:?}: {r} routes in the RIB and {f} in the FIB after 600 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let after = rss_kib(pid);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = sender.join();
        let (up_at, rib_at, fib_at) = match polled {
            Ok(v) => v,
            Err(e) => {
                self.stop(pid);
                return Err(e);
            }
        };
        let after = after?;
        let (established, send) = up_at.ok_or_else(|| anyhow!("no Established instant"))?;
        self.stop(pid);
        let rib = rib_at
            .map(|r| r.saturating_duration_since(established))
            .unwrap_or_default();
        Ok(Round {
            rib,
            fib: fib_at.map(|f| f.saturating_duration_since(established)),
            send,
            bytes_per_route: (after.saturating_sub(before) * 1024) as f64 / routes as f64,
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn ingest(a: IngestArgs, machine: &str) -> Result<()> {
    for tool in ["bird", "birdc", "ip"] {
        sh(&["sh", "-c", &format!("command -v {tool}")])
            .with_context(|| format!("bgp-ingest needs {tool} (apt-get install bird2 iproute2)"))?;
    }
    let xroute = match a.xroute {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("no directory for this binary"))?
            .join("xroute"),
    };
    if !xroute.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p agent) or give --xroute",
            xroute.display()
        );
    }
    let t0 = Instant::now();
    let (stream, messages, paths) = table_stream(a.routes)?;
    println!(
        "# bgp-ingest: {} IPv4 routes, {} AS paths, {} UPDATEs, {:.1} MB on the wire (built in {:.1} s)",
        a.routes,
        paths,
        messages,
        stream.len() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    println!("# machine: {machine}");
    let stream = std::sync::Arc::new(stream);
    let bench = Bench {
        prefix: a.prefix.clone(),
        dir: PathBuf::from(format!("/tmp/{}", a.prefix)),
        xroute,
    };
    std::fs::create_dir_all(&bench.dir)?;
    bench.teardown();
    bench.setup()?;
    let result = (|| -> Result<Vec<(Round, Round)>> {
        let mut rounds = Vec::new();
        for i in 0..a.rounds {
            let x = bench.round(Target::Xroute, &stream, a.routes)?;
            let b = bench.round(Target::Bird, &stream, a.routes)?;
            println!(
                "round {i}: xroute rib {:.2} s fib {:.2} s (sender done {:.2} s) {:.0} B/route | bird rib {:.2} s (sender done {:.2} s) {:.0} B/route | rate ratio {:.2}",
                x.rib.as_secs_f64(),
                x.fib.unwrap_or_default().as_secs_f64(),
                x.send.as_secs_f64(),
                x.bytes_per_route,
                b.rib.as_secs_f64(),
                b.send.as_secs_f64(),
                b.bytes_per_route,
                b.rib.as_secs_f64() / x.rib.as_secs_f64()
            );
            rounds.push((x, b));
        }
        Ok(rounds)
    })();
    bench.teardown();
    let rounds = result?;
    let xr = median(rounds.iter().map(|r| r.0.rib.as_secs_f64()).collect());
    let xf = median(
        rounds
            .iter()
            .map(|r| r.0.fib.unwrap_or_default().as_secs_f64())
            .collect(),
    );
    let br = median(rounds.iter().map(|r| r.1.rib.as_secs_f64()).collect());
    let ratio = median(
        rounds
            .iter()
            .map(|r| r.1.rib.as_secs_f64() / r.0.rib.as_secs_f64())
            .collect(),
    );
    let xb = median(rounds.iter().map(|r| r.0.bytes_per_route).collect());
    let bb = median(rounds.iter().map(|r| r.1.bytes_per_route).collect());
    println!(
        "medians: xroute {:.0} routes/s to the Loc-RIB ({xr:.2} s), FIB snapshot at {xf:.2} s, {xb:.0} B/route; BIRD {:.0} routes/s ({br:.2} s), {bb:.0} B/route",
        a.routes as f64 / xr,
        a.routes as f64 / br
    );
    println!("ratio rib_rate_xroute_vs_bird {ratio:.2}");
    println!("ratio bytes_per_route_xroute {xb:.0}");
    println!("ratio bytes_per_route_bird {bb:.0}");
    Ok(())
}
