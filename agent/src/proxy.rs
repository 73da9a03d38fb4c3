//! The service proxy's flags: kube-proxy's names for connection tracking, kube-router's
//! for the rest, and what they become ([`control::services::ProxySettings`]).

use crate::bgp::parse_duration;
use control::config::Cidr;
use control::services::ProxySettings;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct ProxyFlags {
    /// Serve services (ClusterIPs, ExternalIPs, LoadBalancer IPs, NodePorts) in the
    /// fastpath.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub run_service_proxy: bool,
    /// Flows the connection tracking table holds; its memory is taken at start: each
    /// family's table has 4 slots a flow (both directions, at most half full), rounded
    /// up to a power of two, 56 bytes an IPv4 slot and 104 an IPv6 one (640 MiB at the
    /// default).
    #[arg(long, default_value_t = 1_000_000)]
    pub conntrack_max: usize,
    /// Idle timeout of established TCP flows.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_established: Duration,
    /// Idle timeout of TCP flows in CLOSE_WAIT.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_close_wait: Duration,
    /// Idle timeout of UDP flows not replied to.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub conntrack_udp_timeout: Duration,
    /// Idle timeout of UDP flows with traffic both ways.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub conntrack_udp_timeout_stream: Duration,
    /// kube-router's TCP timeout: when not 0s, replaces the established timeout.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub service_tcp_timeout: Duration,
    /// kube-router's TCP FIN timeout: when not 0s, the timeout of closing flows.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub service_tcpfin_timeout: Duration,
    /// kube-router's UDP timeout: when not 0s, replaces both UDP timeouts.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub service_udp_timeout: Duration,
    /// Let TCP segments outside their flow's sequence window through (kube-proxy's
    /// flag, Linux's nf_conntrack_tcp_be_liberal); without it they are dropped as
    /// conntrack's INVALID, as kube-proxy drops them.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub conntrack_tcp_be_liberal: bool,
    /// SNAT every flow to a service, not only those that need it.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub masquerade_all: bool,
    /// SNAT pods' traffic to outside the cluster to the node's address.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_pod_egress: bool,
    /// Source ports of SNATed flows (FIRST-LAST); they are reserved in the host's stack
    /// (`net.ipv4.ip_local_reserved_ports`) so that it never uses them.
    #[arg(long, default_value = "61000-65535")]
    pub snat_port_range: String,
    /// The largest Maglev table of one service (a prime of Maglev's list is taken).
    #[arg(long, default_value_t = nat::maglev::DEFAULT_MAX_SIZE)]
    pub maglev_table_max: u32,
    /// The cluster's pod CIDRs, one per family (kube-router's): pod traffic to them is
    /// not egress (needed where the other nodes' pod CIDRs are learned by BGP rather
    /// than listed in the file).
    #[arg(long, value_delimiter = ',')]
    pub cluster_cidr: Vec<String>,
    /// CIDRs ClusterIPs are assigned from, one per family (kube-router's): inside the
    /// cluster for pod egress; no ExternalIP or LoadBalancer IP may lie in them.
    #[arg(long, value_delimiter = ',', default_value = control::services::DEFAULT_CLUSTER_IP_RANGE)]
    pub service_cluster_ip_range: Vec<String>,
    /// CIDRs ExternalIPs may come from (with --strict-external-ip-validation).
    #[arg(long, value_delimiter = ',')]
    pub service_external_ip_range: Vec<String>,
    /// CIDRs LoadBalancer IPs may come from (with --strict-external-ip-validation).
    #[arg(long, value_delimiter = ',')]
    pub loadbalancer_ip_range: Vec<String>,
    /// Serve and advertise only the ExternalIPs and LoadBalancer IPs inside their
    /// ranges (none when no range is given), as kube-router does.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub strict_external_ip_validation: bool,
    /// The NodePort range (FIRST-LAST or FIRST:LAST), as the API server's: a NodePort
    /// outside it is reported (and served).
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Serve NodePorts on every node address, not only on the first of each family.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub nodeport_bindon_all_ip: bool,
    /// kube-router's global hairpin; xroute hairpins every frontend whatever it says.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub hairpin_mode: bool,
    /// kube-router's CIDRs of IPVS services not to delete; checked, nothing else to do
    /// (xroute keeps its services in its own tables, never in another's).
    #[arg(long, value_delimiter = ',')]
    pub excluded_cidrs: Vec<String>,
    /// Let the TCP flows of a removed backend run on for --ipvs-graceful-period before
    /// they are reset (without it: reset at once). UDP flows go at once either way.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub ipvs_graceful_termination: bool,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ipvs_graceful_period: Duration,
}

/// Parses each of `values` as a CIDR, naming `flag` when one is not.
fn cidrs(flag: &str, values: &[String]) -> Result<Vec<Cidr>, String> {
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse::<Cidr>()
                .map_err(|e| format!("--{flag}: `{v}`: {e}"))
        })
        .collect()
}

/// Parses `FIRST-LAST` (both inclusive, FIRST ≤ LAST, FIRST at least 1024).
pub fn parse_port_range(flag: &str, s: &str) -> Result<(u16, u16), String> {
    let (a, b) = parse_range(flag, s)?;
    if a < 1024 {
        return Err(format!(
            "--{flag}: {a}-{b} takes well-known ports (below 1024)"
        ));
    }
    Ok((a, b))
}

/// Parses `FIRST-LAST` or `FIRST:LAST` (both inclusive, FIRST ≤ LAST, not 0).
fn parse_range(flag: &str, s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("--{flag}: `{s}` is not a port range (like 30000-32767)");
    let (a, b) = s
        .split_once('-')
        .or_else(|| s.split_once(':'))
        .ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a > b {
        return Err(format!("--{flag}: {a} is above {b}"));
    }
    if a == 0 {
        return Err(format!("--{flag}: port 0 is not a port"));
    }
    Ok((a, b))
}

impl ProxyFlags {
    pub fn settings(&self) -> Result<ProxySettings, String> {
        let mut s = ProxySettings {
            run: self.run_service_proxy,
            conntrack_max: self.conntrack_max,
            maglev_max: self.maglev_table_max,
            snat_ports: parse_port_range("snat-port-range", &self.snat_port_range)?,
            masquerade_all: self.masquerade_all,
            tcp_be_liberal: self.conntrack_tcp_be_liberal,
            pod_egress: self.enable_pod_egress,
            ..ProxySettings::default()
        };
        s.cluster_ip_ranges = cidrs("service-cluster-ip-range", &self.service_cluster_ip_range)?;
        if s.cluster_ip_ranges.len() > 2
            || (s.cluster_ip_ranges.len() == 2
                && s.cluster_ip_ranges[0].network().is_ipv6()
                    == s.cluster_ip_ranges[1].network().is_ipv6())
        {
            return Err(format!(
                "--service-cluster-ip-range: `{}`: at most one range per family (IPv4, IPv6)",
                self.service_cluster_ip_range.join(",")
            ));
        }
        s.cluster_cidrs = cidrs("cluster-cidr", &self.cluster_cidr)?;
        s.external_ip_ranges = cidrs("service-external-ip-range", &self.service_external_ip_range)?;
        s.load_balancer_ip_ranges = cidrs("loadbalancer-ip-range", &self.loadbalancer_ip_range)?;
        s.strict_external_ips = self.strict_external_ip_validation;
        s.node_port_range = parse_range("service-node-port-range", &self.service_node_port_range)?;
        s.node_port_all_ips = self.nodeport_bindon_all_ip;
        cidrs("excluded-cidrs", &self.excluded_cidrs)?;
        if self.ipvs_graceful_termination {
            if self.ipvs_graceful_period.is_zero() {
                return Err("--ipvs-graceful-period must be greater than 0".into());
            }
            s.graceful = Some(self.ipvs_graceful_period);
        }
        if self.conntrack_max == 0 {
            return Err("--conntrack-max must be at least 1".into());
        }
        if self.maglev_table_max < nat::maglev::SIZES[0] {
            return Err(format!(
                "--maglev-table-max must be at least {}",
                nat::maglev::SIZES[0]
            ));
        }
        let t = &mut s.timeouts;
        t.established = self.conntrack_tcp_timeout_established;
        t.close_wait = self.conntrack_tcp_timeout_close_wait;
        t.udp = self.conntrack_udp_timeout;
        t.udp_stream = self.conntrack_udp_timeout_stream;
        if !self.service_tcp_timeout.is_zero() {
            t.established = self.service_tcp_timeout;
        }
        if !self.service_tcpfin_timeout.is_zero() {
            t.fin_wait = self.service_tcpfin_timeout;
            t.time_wait = self.service_tcpfin_timeout;
        }
        if !self.service_udp_timeout.is_zero() {
            t.udp = self.service_udp_timeout;
            t.udp_stream = self.service_udp_timeout;
        }
        Ok(s)
    }
}

impl ProxyFlags {
    /// What the flags ask that xroute does differently, to log at start.
    pub fn notes(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.hairpin_mode {
            v.push(
                "--hairpin-mode: xroute hairpins every service frontend (ClusterIP, \
                 NodePort, ExternalIP, LoadBalancer IP) whatever this flag and the \
                 service.hairpin annotations say, as kube-proxy does: a pod reaching its \
                 own service sees the VIP as the source"
                    .to_string(),
            );
        }
        if !self.excluded_cidrs.is_empty() {
            v.push(format!(
                "--excluded-cidrs {}: xroute serves services from its own tables and never \
                 deletes another's IPVS services, so there is nothing to exclude",
                self.excluded_cidrs.join(",")
            ));
        }
        if self.strict_external_ip_validation && self.service_external_ip_range.is_empty() {
            v.push(
                "--strict-external-ip-validation with no --service-external-ip-range: no \
                 ExternalIP is served or advertised"
                    .to_string(),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("x", "61000-65535"), Ok((61000, 65535)));
        assert!(parse_port_range("x", "65535-61000").is_err());
        assert!(parse_port_range("x", "80-90").is_err());
        assert!(parse_port_range("x", "61000").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        proxy: ProxyFlags,
    }

    fn settings(args: &[&str]) -> Result<ProxySettings, String> {
        use clap::Parser;
        let cli = Cli::try_parse_from(std::iter::once("xroute").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.proxy.settings()
    }

    /// The proxy's on/off flags and the timeouts, from kube-proxy's flags and
    /// kube-router's (whose, when given, win), with their defaults.
    #[test]
    fn switches_and_timeouts_from_their_flags() {
        let d = settings(&[]).unwrap();
        assert!(d.run && d.pod_egress && !d.masquerade_all && !d.tcp_be_liberal);
        assert_eq!(d.conntrack_max, 1_000_000);
        assert_eq!(d.snat_ports, (61000, 65535));
        let h = |n: u64| Duration::from_secs(n * 3600);
        let t = d.timeouts;
        assert_eq!((t.established, t.close_wait), (h(24), h(1)));
        assert_eq!(
            (t.udp, t.udp_stream, t.fin_wait, t.time_wait),
            (
                Duration::from_secs(30),
                Duration::from_secs(120),
                Duration::from_secs(120),
                Duration::from_secs(120)
            )
        );
        let s = settings(&[
            "--run-service-proxy=false",
            "--enable-pod-egress=false",
            "--masquerade-all",
            "--conntrack-tcp-be-liberal",
            "--conntrack-tcp-timeout-established=2h",
            "--conntrack-tcp-timeout-close-wait=10m",
            "--conntrack-udp-timeout=15s",
            "--conntrack-udp-timeout-stream=60s",
        ])
        .unwrap();
        assert!(!s.run && !s.pod_egress && s.masquerade_all && s.tcp_be_liberal);
        let t = s.timeouts;
        assert_eq!(
            (t.established, t.close_wait),
            (h(2), Duration::from_secs(600))
        );
        assert_eq!(
            (t.udp, t.udp_stream),
            (Duration::from_secs(15), Duration::from_secs(60))
        );
        // kube-router's: established, the closing states, and UDP both ways.
        let s = settings(&[
            "--conntrack-tcp-timeout-established=2h",
            "--service-tcp-timeout=90m",
            "--service-tcpfin-timeout=45s",
            "--service-udp-timeout=20s",
        ])
        .unwrap();
        let t = s.timeouts;
        assert_eq!(t.established, Duration::from_secs(90 * 60));
        assert_eq!(
            (t.fin_wait, t.time_wait),
            (Duration::from_secs(45), Duration::from_secs(45))
        );
        assert_eq!(
            (t.udp, t.udp_stream),
            (Duration::from_secs(20), Duration::from_secs(20))
        );
    }

    #[test]
    fn kube_router_flags_and_their_defaults() {
        let d = settings(&[]).unwrap();
        assert_eq!(d.cluster_ip_ranges.len(), 1);
        assert_eq!(d.cluster_ip_ranges[0].to_string(), "10.96.0.0/12");
        assert!(d.strict_external_ips && d.external_ip_ranges.is_empty());
        assert_eq!(d.node_port_range, (30000, 32767));
        assert!(!d.node_port_all_ips && d.graceful.is_none());
        let s = settings(&[
            "--service-cluster-ip-range=10.96.0.0/12,fd00:96::/108",
            "--service-external-ip-range=198.51.100.0/24",
            "--service-external-ip-range=203.0.113.0/24",
            "--loadbalancer-ip-range=192.0.2.0/24",
            "--strict-external-ip-validation=false",
            "--service-node-port-range=30000:31000",
            "--nodeport-bindon-all-ip",
            "--ipvs-graceful-termination",
            "--ipvs-graceful-period=5s",
            "--excluded-cidrs=10.0.0.0/8",
            "--hairpin-mode",
        ])
        .unwrap();
        assert_eq!(s.cluster_ip_ranges.len(), 2);
        assert_eq!(s.external_ip_ranges.len(), 2);
        assert_eq!(s.load_balancer_ip_ranges.len(), 1);
        assert!(!s.strict_external_ips && s.node_port_all_ips);
        assert_eq!(s.node_port_range, (30000, 31000));
        assert_eq!(s.graceful, Some(Duration::from_secs(5)));
        for (bad, want) in [
            (
                "--service-cluster-ip-range=10.96.0.0/12,10.100.0.0/16",
                "at most one range per family",
            ),
            (
                "--service-external-ip-range=198.51.100.0/33",
                "--service-external-ip-range",
            ),
            ("--excluded-cidrs=banana", "--excluded-cidrs: `banana`"),
            (
                "--service-node-port-range=32767-30000",
                "32767 is above 30000",
            ),
        ] {
            let e = settings(&[bad]).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let e =
            settings(&["--ipvs-graceful-termination", "--ipvs-graceful-period=0s"]).unwrap_err();
        assert!(e.contains("greater than 0"), "{e}");
    }
}
