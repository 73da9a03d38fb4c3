//! The service proxy as the stats endpoint shows it: `GET /services` (every service
//! port with its VIPs, backends, their conditions and counters, as `ipvsadm -Ln
//! --stats` or `cilium service list` show theirs), `GET /conntrack` (the flows, with
//! their state, backend and time left; `?service=VIP:PORT` for one service's), their
//! series in `/metrics`, and the `xroute services` / `xroute conntrack` commands.

use crate::status::http_get;
use control::services::Proxy;
use fastpath::snapshot::SnapshotCell;
use nat::conntrack::flow::{flags, Direction, Fate, Nat, Tuple};
use nat::conntrack::tcp::State;
use nat::stats::PortDrop;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

#[derive(Debug, Serialize, Deserialize)]
pub struct BackendReport {
    pub addr: IpAddr,
    pub port: u16,
    pub local: bool,
    /// `ready`, `serving-terminating`, `terminating` or `not-ready`.
    pub state: String,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ServicePortReport {
    pub service: String,
    pub port_name: String,
    pub protocol: String,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `ADDRESS (KIND)`.
    pub frontends: Vec<String>,
    pub backends: Vec<BackendReport>,
    pub drops: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConntrackReport {
    /// Slots of each family's table (each flow takes two, one per direction).
    pub capacity_v4: usize,
    pub capacity_v6: usize,
    /// Live entries at the last sweep (every 10 s).
    pub entries_v4: usize,
    pub entries_v6: usize,
    pub memory_bytes: usize,
    pub inserts: u64,
    /// Live entries overwritten because their window was full (the stalest went).
    pub evictions: u64,
    /// Inserts refused.
    pub insert_failures: u64,
    /// The fragmented datagrams kept for their later fragments (both families):
    /// datagrams overwritten because their window was full, and inserts refused. Later
    /// fragments of a datagram lost this way are dropped as `fragment_untracked`.
    #[serde(default)]
    pub fragment_evictions: u64,
    #[serde(default)]
    pub fragment_insert_failures: u64,
}

/// The service ports of the current snapshot, with their counters.
pub fn services(cell: &SnapshotCell) -> Vec<ServicePortReport> {
    let s = cell.load();
    let f = &s.services.frontends;
    f.ports
        .iter()
        .map(|p| {
            let backends = p
                .backends
                .iter()
                .map(|b| {
                    let st = f.backend_stats(p.id, b.backend);
                    let n =
                        |c: Option<&std::sync::atomic::AtomicU64>| c.map_or(0, |c| c.load(Relaxed));
                    BackendReport {
                        addr: b.backend.addr,
                        port: b.backend.port,
                        local: b.local,
                        state: match (b.ready, b.serving, b.terminating) {
                            (true, _, _) => "ready",
                            (false, true, true) => "serving-terminating",
                            (false, _, true) => "terminating",
                            _ => "not-ready",
                        }
                        .to_string(),
                        packets: n(st.map(|s| &s.packets)),
                        bytes: n(st.map(|s| &s.bytes)),
                        flows: n(st.map(|s| &s.flows)),
                    }
                })
                .collect();
            let drops = PortDrop::ALL
                .iter()
                .map(|d| {
                    let v = f
                        .port_stats(p.id)
                        .map_or(0, |s| s.drops[*d as usize].load(Relaxed));
                    (d.name().to_string(), v)
                })
                .collect();
            let mut frontends: Vec<String> = p
                .vips
                .iter()
                .map(|(ip, kind)| format!("{} ({kind})", SocketAddr::new(*ip, p.port)))
                .collect();
            if let Some(np) = p.node_port {
                frontends.push(format!("*:{np} (NodePort)"));
            }
            ServicePortReport {
                service: p.service.clone(),
                port_name: p.port_name.clone(),
                protocol: format!("{:?}", p.protocol).to_uppercase(),
                port: p.port,
                node_port: p.node_port,
                frontends,
                backends,
                drops,
            }
        })
        .collect()
}

pub fn conntrack_summary(proxy: &Proxy) -> ConntrackReport {
    let ct = &proxy.conntrack;
    let c =
        |f: fn(&nat::conntrack::table::Counters) -> u64| f(&ct.v4.counters) + f(&ct.v6.counters);
    let fragments = |f: fn(&nat::conntrack::table::Counters) -> u64| {
        proxy.fragments.counters().into_iter().map(f).sum::<u64>()
    };
    ConntrackReport {
        capacity_v4: ct.v4.capacity(),
        capacity_v6: ct.v6.capacity(),
        entries_v4: proxy.live[0].load(Relaxed),
        entries_v6: proxy.live[1].load(Relaxed),
        memory_bytes: ct.memory(),
        inserts: c(|c| c.inserts.load(Relaxed)),
        evictions: c(|c| c.evictions.load(Relaxed)),
        insert_failures: c(|c| c.refused.load(Relaxed)),
        fragment_evictions: fragments(|c| c.evictions.load(Relaxed)),
        fragment_insert_failures: fragments(|c| c.refused.load(Relaxed)),
    }
}

/// One flow entry, as `xroute conntrack` lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct FlowReport {
    pub protocol: String,
    /// The tuple the packets carry, and the one they become.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub to_src: SocketAddr,
    pub to_dst: SocketAddr,
    /// `original` (from the client) or `reply`.
    pub direction: String,
    pub state: String,
    pub snat: bool,
    pub backend_gone: bool,
    pub seconds_left: u32,
}

fn flow<A: Into<IpAddr> + Copy>(t: &Tuple<A>, n: &Nat<A>, now: u32) -> FlowReport {
    let sock = |a: A, p: u16| SocketAddr::new(a.into(), p);
    let protocol = match t.protocol {
        6 => "TCP",
        17 => "UDP",
        1 | 58 => "ICMP",
        _ => "?",
    };
    let state = match t.protocol {
        6 => State::from_u8(n.state).map_or("?", State::name).to_string(),
        17 if n.state == 1 => "ASSURED".to_string(),
        17 => "UNREPLIED".to_string(),
        _ => String::new(),
    };
    FlowReport {
        protocol: protocol.to_string(),
        src: sock(t.src, t.sport),
        dst: sock(t.dst, t.dport),
        to_src: sock(n.src, n.sport),
        to_dst: sock(n.dst, n.dport),
        direction: match n.direction {
            Direction::Original => "original",
            Direction::Reply => "reply",
        }
        .to_string(),
        state,
        snat: n.flags & flags::SNAT != 0,
        backend_gone: n.flags & flags::BACKEND_GONE != 0,
        seconds_left: n.expires.saturating_sub(now),
    }
}

/// The flows' original-direction entries (at most `limit`), those to `service`
/// (`VIP:PORT`, or a NodePort as `*:PORT`) only if given.
pub fn flows(
    proxy: &Proxy,
    service: Option<SocketAddr>,
    node_port: Option<u16>,
    limit: usize,
) -> Vec<FlowReport> {
    let now = fastpath::clock::seconds();
    let ct = &proxy.conntrack;
    let mut out = Vec::new();
    let wanted = |dst: SocketAddr| {
        service.is_none_or(|s| s == dst) && node_port.is_none_or(|p| p == dst.port())
    };
    ct.sweep4(0, ct.v4.capacity(), now, |t, n| {
        let dst = SocketAddr::new(t.dst.into(), t.dport);
        if n.direction == Direction::Original && out.len() < limit && wanted(dst) {
            out.push(flow(t, n, now));
        }
        Fate::Keep
    });
    ct.sweep6(0, ct.v6.capacity(), now, |t, n| {
        let dst = SocketAddr::new(t.dst.into(), t.dport);
        if n.direction == Direction::Original && out.len() < limit && wanted(dst) {
            out.push(flow(t, n, now));
        }
        Fate::Keep
    });
    out
}

#[derive(Debug, clap::Args)]
pub struct ServicesArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub metrics_addr: IpAddr,
    #[arg(long, default_value_t = crate::DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xroute services`: every service port, its frontends and its backends with their
/// state and counters.
pub fn services_command(a: ServicesArgs) -> Result<(), String> {
    let body = http_get(SocketAddr::new(a.metrics_addr, a.metrics_port), "/services")?;
    if a.json {
        return emit(&format!("{body}\n"));
    }
    let ports: Vec<ServicePortReport> =
        serde_json::from_str(&body).map_err(|e| format!("bad /services: {e}"))?;
    emit(&render_services(&ports))
}

/// Writes a command's output; a reader that went away (`| head`) ends it quietly.
fn emit(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}

pub fn render_services(ports: &[ServicePortReport]) -> String {
    let mut out = String::new();
    for p in ports {
        out.push_str(&format!(
            "{} {} {}/{} -> {}\n",
            p.service,
            p.port_name,
            p.port,
            p.protocol,
            p.frontends.join(", ")
        ));
        if p.backends.is_empty() {
            out.push_str("  (no endpoints: rejected)\n");
        }
        for b in &p.backends {
            out.push_str(&format!(
                "  -> {:<40} {:<20} {:>6} flows {:>10} packets {:>12} bytes{}\n",
                SocketAddr::new(b.addr, b.port).to_string(),
                b.state,
                b.flows,
                b.packets,
                b.bytes,
                if b.local { "  local" } else { "" }
            ));
        }
        let drops: Vec<String> = p
            .drops
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if !drops.is_empty() {
            out.push_str(&format!("  drops: {}\n", drops.join(", ")));
        }
    }
    out
}

#[derive(Debug, clap::Args)]
pub struct ConntrackArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub metrics_addr: IpAddr,
    #[arg(long, default_value_t = crate::DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,
    /// Only the flows to this service frontend: VIP:PORT ([VIP]:PORT for IPv6), or
    /// *:PORT for a NodePort.
    #[arg(long)]
    pub service: Option<String>,
    /// At most this many flows.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

/// `xroute conntrack`: the tracked flows.
pub fn conntrack_command(a: ConntrackArgs) -> Result<(), String> {
    let mut path = format!("/conntrack?limit={}", a.limit);
    if let Some(s) = &a.service {
        path.push_str(&format!("&service={}", urlencode(s)));
    }
    let body = http_get(SocketAddr::new(a.metrics_addr, a.metrics_port), &path)?;
    if a.json {
        return emit(&format!("{body}\n"));
    }
    let flows: Vec<FlowReport> =
        serde_json::from_str(&body).map_err(|e| format!("bad /conntrack: {e}"))?;
    let mut out = String::new();
    for f in &flows {
        out.push_str(&format!(
            "{:<4} {} -> {} => {} -> {}  {:<12} {}s{}{}\n",
            f.protocol,
            f.src,
            f.dst,
            f.to_src,
            f.to_dst,
            f.state,
            f.seconds_left,
            if f.snat { " snat" } else { "" },
            if f.backend_gone { " backend-gone" } else { "" }
        ));
    }
    out.push_str(&format!("{} flows\n", flows.len()));
    emit(&out)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Parses `--service`: `VIP:PORT`, `[VIP6]:PORT` or `*:PORT`.
pub fn parse_service(s: &str) -> Result<(Option<SocketAddr>, Option<u16>), String> {
    if let Some(p) = s.strip_prefix("*:") {
        let port = p
            .parse()
            .map_err(|_| format!("service {s}: `{p}` is not a port"))?;
        return Ok((None, Some(port)));
    }
    let a: SocketAddr = s
        .parse()
        .map_err(|_| format!("service {s}: not VIP:PORT, [VIP]:PORT or *:PORT"))?;
    Ok((Some(a), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_filters() {
        assert_eq!(parse_service("*:30080"), Ok((None, Some(30080))));
        assert_eq!(
            parse_service("[fd00::1]:80").unwrap().0,
            Some("[fd00::1]:80".parse().unwrap())
        );
        assert!(parse_service("10.96.0.10").is_err());
        assert_eq!(urlencode("[fd00::1]:80"), "%5Bfd00%3A%3A1%5D%3A80");
    }
}
