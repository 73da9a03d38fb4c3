//! The service proxy's flags: kube-proxy's names for connection tracking, kube-router's
//! for the rest, and what they become ([`control::services::ProxySettings`]).

use crate::bgp::parse_duration;
use control::services::ProxySettings;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct ProxyFlags {
    /// Serve services (ClusterIPs, ExternalIPs, LoadBalancer IPs, NodePorts) in the
    /// fastpath.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub run_service_proxy: bool,
    /// Flows the connection tracking table holds; its memory is taken at start.
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
}

/// Parses `FIRST-LAST` (both inclusive, FIRST ≤ LAST, FIRST at least 1024).
pub fn parse_port_range(flag: &str, s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("--{flag}: `{s}` is not a port range (like 61000-65535)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a > b {
        return Err(format!("--{flag}: {a} is above {b}"));
    }
    if a < 1024 {
        return Err(format!(
            "--{flag}: {a}-{b} takes well-known ports (below 1024)"
        ));
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
            pod_egress: self.enable_pod_egress,
            ..ProxySettings::default()
        };
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
}
