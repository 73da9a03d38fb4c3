//! BGP in the agent: kube-router's flags (checked into `BgpOptions`), and `xroute bgp
//! global|neighbors|rib`, which prints the running agent's view laid out like gobgp's.
//! The cluster model's side is `control::bgp::cluster`.

use crate::status::http_get;
use control::bgp::annotations::global_peers;
use control::bgp::peering::{BgpOptions, DEFAULT_CLUSTER_ASN};
use control::bgp::speaker::{GlobalStatus, NeighborStatus, RibEntry};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// kube-router's BGP flags, with its names and defaults. Booleans take `--flag`,
/// `--flag=true` or `--flag=false`.
#[derive(Debug, Clone, clap::Args)]
pub struct BgpFlags {
    /// Run the BGP speaker (kube-router's `--run-router`).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub run_router: bool,
    /// ASN of the cluster's nodes (64512 when unset).
    #[arg(long)]
    pub cluster_asn: Option<u32>,
    /// Peer with the other nodes over iBGP.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_ibgp: bool,
    /// Every node peers with every other node; with false, only nodes with the same
    /// `kube-router.io/node.asn` annotation peer.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub nodes_full_mesh: bool,
    /// External peers for every node, comma separated.
    #[arg(long, default_value = "")]
    pub peer_router_ips: String,
    /// Their ASNs, one per IP.
    #[arg(long, default_value = "")]
    pub peer_router_asns: String,
    /// Their ports, one per IP (179 when blank).
    #[arg(long, default_value = "")]
    pub peer_router_ports: String,
    /// Their TCP-MD5 passwords, base64-encoded, one per IP (blank for none).
    #[arg(long, default_value = "")]
    pub peer_router_passwords: String,
    /// A file holding the passwords list instead (commas or new lines).
    #[arg(long)]
    pub peer_router_passwords_file: Option<PathBuf>,
    /// eBGP multihop TTL for external peers (2 or more; 0: directly connected).
    #[arg(long, default_value_t = 0)]
    pub peer_router_multihop_ttl: u8,
    /// The port BGP listens and connects on.
    #[arg(long, default_value_t = 179)]
    pub bgp_port: u16,
    /// Hold time (Go duration: 90s, 1m30s), at least 3s.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub bgp_holdtime: Duration,
    /// Graceful restart (RFC 4724), as helper and restarting speaker.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub bgp_graceful_restart: bool,
    /// How long peers keep our routes while we restart.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub bgp_graceful_restart_time: Duration,
    /// How long a restarting xroute waits for its peers' End-of-RIB before
    /// replacing the kernel routes it left behind.
    #[arg(long, default_value = "360s", value_parser = parse_duration)]
    pub bgp_graceful_restart_deferral_time: Duration,
    /// BGP identifier: an IPv4 address, or `generate` (from the node name). The
    /// node's IPv4 address when unset.
    #[arg(long)]
    pub router_id: Option<String>,
    /// Next-hop self on routes reflected to iBGP peers as well.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub override_nexthop: bool,
    /// Advertise the node's pod CIDR to external peers.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub advertise_pod_cidr: bool,
    /// Advertise services' ClusterIPs to external peers.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub advertise_cluster_ip: bool,
    /// Advertise services' ExternalIPs to external peers.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub advertise_external_ip: bool,
    /// Advertise services' LoadBalancer IPs to external peers.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub advertise_loadbalancer_ip: bool,
}

/// Go's `time.ParseDuration` for the units BGP timers use: `h`, `m`, `s`, `ms`, in
/// sequence (`1m30s`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("`{s}`: a number needs a unit (h, m, s, ms)"))?;
        let (num, tail) = rest.split_at(digits);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (like 90s or 1m30s)"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(format!("`{s}`: unknown unit `{unit}` (h, m, s, ms)")),
        };
        total += Duration::from_secs_f64(n * secs);
        rest = tail;
    }
    Ok(total)
}

impl BgpFlags {
    /// The flags as peering options, checked as kube-router checks them.
    pub fn options(&self) -> Result<BgpOptions, String> {
        let asn = self.cluster_asn.unwrap_or(DEFAULT_CLUSTER_ASN);
        if !control::bgp::annotations::valid_asn(asn) {
            return Err(format!(
                "--cluster-asn {asn} is reserved; pick 64512-65534 or 4200000000-4294967294"
            ));
        }
        let hold = self.bgp_holdtime;
        if hold < Duration::from_secs(3) || hold > Duration::from_secs(65535) {
            return Err(format!(
                "--bgp-holdtime {}s: must be between 3s and 18h12m15s",
                hold.as_secs()
            ));
        }
        let passwords = match &self.peer_router_passwords_file {
            Some(f) => {
                if !self.peer_router_passwords.is_empty() {
                    return Err(
                        "give --peer-router-passwords or --peer-router-passwords-file, not both"
                            .into(),
                    );
                }
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("--peer-router-passwords-file {}: {e}", f.display()))?;
                text.split(['\n', ','])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(",")
            }
            None => self.peer_router_passwords.clone(),
        };
        let peers = global_peers(
            &self.peer_router_ips,
            &self.peer_router_asns,
            &passwords,
            &self.peer_router_ports,
        )
        .map_err(|e| e.to_string())?;
        if self.peer_router_multihop_ttl == 1 {
            return Err(
                "--peer-router-multihop-ttl 1 means directly connected: use 0, or 2 and more"
                    .into(),
            );
        }
        Ok(BgpOptions {
            cluster_asn: asn,
            enable_ibgp: self.enable_ibgp,
            nodes_full_mesh: self.nodes_full_mesh,
            global_peers: peers,
            multihop_ttl: self.peer_router_multihop_ttl,
            bgp_port: self.bgp_port,
            hold_time: hold,
            graceful_restart: self.bgp_graceful_restart,
            graceful_restart_time: self.bgp_graceful_restart_time,
            graceful_restart_deferral_time: self.bgp_graceful_restart_deferral_time,
            router_id: None,
            override_nexthop: self.override_nexthop,
            advertise_pod_cidr: self.advertise_pod_cidr,
            advertise_cluster_ip: self.advertise_cluster_ip,
            advertise_external_ip: self.advertise_external_ip,
            advertise_loadbalancer_ip: self.advertise_loadbalancer_ip,
        })
    }
}

// --- xroute bgp ------------------------------------------------------------------

#[derive(Debug, clap::Args)]
pub struct BgpArgs {
    #[command(subcommand)]
    pub what: BgpWhat,
    /// Address of the agent's stats endpoint.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub metrics_addr: IpAddr,
    /// Port of the agent's stats endpoint.
    #[arg(long, global = true, default_value_t = crate::DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,
    /// Print the agent's JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum BgpWhat {
    /// Router id, AS and listen port.
    Global,
    /// The peers: AS, up/down time, state, received and accepted routes.
    Neighbors,
    /// The Loc-RIB: every path, the best marked.
    Rib {
        /// ipv4 or ipv6.
        #[arg(long, default_value = "ipv4")]
        family: String,
    },
}

fn get<T: serde::de::DeserializeOwned>(at: SocketAddr, path: &str) -> Result<T, String> {
    let body = http_get(at, path)?;
    serde_json::from_str(&body).map_err(|e| format!("the agent's {path} answer: {e}: {body}"))
}

fn duration_text(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

pub fn bgp(args: BgpArgs) -> Result<(), String> {
    let port = SocketAddr::new(args.metrics_addr, args.metrics_port);
    if args.json {
        let path = match &args.what {
            BgpWhat::Global => "/bgp/global".to_string(),
            BgpWhat::Neighbors => "/bgp/neighbors".to_string(),
            BgpWhat::Rib { family } => format!("/bgp/rib?family={family}"),
        };
        println!("{}", http_get(port, &path)?);
        return Ok(());
    }
    match args.what {
        BgpWhat::Global => {
            let g: GlobalStatus = get(port, "/bgp/global")?;
            println!("AS:        {}", g.asn);
            println!("Router-ID: {}", g.router_id);
            let ports: Vec<String> = g.listen.iter().map(|a| a.port().to_string()).collect();
            let addrs: Vec<String> = g.listen.iter().map(|a| a.ip().to_string()).collect();
            println!(
                "Listening Port: {}, Addresses: {}",
                ports.first().map_or("-", String::as_str),
                addrs.join(", ")
            );
            if let Some(c) = g.rr_cluster_id {
                println!("Route reflector cluster: {c}");
            }
            println!("Prefixes in the Loc-RIB: {}", g.prefixes);
        }
        BgpWhat::Neighbors => {
            let ns: Vec<NeighborStatus> = get(port, "/bgp/neighbors")?;
            println!(
                "{:<40} {:>10} {:>12} {:<12} |#{:>8} {:>8} {:>8}",
                "Peer", "AS", "Up/Down", "State", "Received", "Accepted", "Sent"
            );
            for n in ns {
                println!(
                    "{:<40} {:>10} {:>12} {:<12} |{:>9} {:>8} {:>8}",
                    n.address,
                    n.asn,
                    duration_text(n.since),
                    state_abbrev(&n.state),
                    n.received,
                    n.accepted,
                    n.advertised
                );
            }
        }
        BgpWhat::Rib { family } => {
            let f = match family.as_str() {
                "ipv4" | "ipv4-unicast" => "ipv4",
                "ipv6" | "ipv6-unicast" => "ipv6",
                other => return Err(format!("--family {other}: ipv4 or ipv6")),
            };
            let rib: Vec<RibEntry> = get(port, &format!("/bgp/rib?family={f}"))?;
            println!(
                "   {:<44} {:<40} {:<24} {:>10}  Attrs",
                "Network", "Next Hop", "AS_PATH", "Age"
            );
            for e in rib {
                for p in e.paths {
                    let mark = match (p.best, p.multipath) {
                        (true, _) => "*>",
                        (false, true) => "*=",
                        _ => "* ",
                    };
                    let path = if p.as_path.is_empty() {
                        p.origin.to_string()
                    } else {
                        format!("{} {}", p.as_path, p.origin)
                    };
                    let mut attrs = vec![format!("from {}", p.from)];
                    if let Some(lp) = p.local_pref {
                        attrs.push(format!("LocalPref: {lp}"));
                    }
                    if let Some(m) = p.med {
                        attrs.push(format!("Med: {m}"));
                    }
                    if !p.communities.is_empty() {
                        attrs.push(format!("Community: {}", p.communities.join(" ")));
                    }
                    let next_hop = if p.next_hop.is_unspecified() {
                        "0.0.0.0 (self)".to_string()
                    } else {
                        p.next_hop.to_string()
                    };
                    println!(
                        "{mark} {:<44} {:<40} {:<24} {:>10}  [{}]",
                        e.prefix,
                        next_hop,
                        path,
                        duration_text(u64::from(p.age)),
                        attrs.join("] [")
                    );
                }
            }
        }
    }
    Ok(())
}

fn state_abbrev(s: &str) -> &str {
    match s {
        "established" => "Establ",
        "idle" => "Idle",
        "connect" => "Connect",
        "active" => "Active",
        "opensent" => "Opensent",
        "openconfirm" => "Openconfirm",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("90x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }
}
