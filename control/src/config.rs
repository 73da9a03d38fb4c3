//! The static YAML source: one node's configuration in a file, the embedded default
//! that needs no cluster (the lab runs on it).
//!
//! ```yaml
//! node: node1
//! cores: [1]                 # one worker per core, each on its own queue of every port
//! idle: poll                 # spin, poll, or priority (SCHED_FIFO, sleeps when idle)
//! uplink:
//!   interface: up0
//!   addresses: [192.168.100.11/24]
//! host_port:
//!   interface: xrf0          # the fastpath's end of the veth pair into the node's stack
//!   peer: xrk0               # the kernel's end
//! pod_cidrs: [10.244.1.0/24]
//! gateway: {ipv4: 10.244.1.1} # optional: the first address of each pod CIDR
//! pods:
//!   - {name: p1, interface: vp1, ips: [10.244.1.2], mac: "0a:58:0a:f4:01:02"}
//! annotations:               # this node's, as its Node object carries them (BGP)
//!   kube-router.io/node.bgp.communities: "64512:100"
//! nodes:                     # the other nodes: BGP peers (pod_cidrs: static routes)
//!   - {name: node2, ip: 192.168.100.12, pod_cidrs: [10.244.2.0/24], annotations: {}}
//! routes:
//!   - {prefix: 192.168.200.0/24, via: 192.168.100.1}   # via: one address or a list (ECMP)
//! services:                  # advertised by BGP per the --advertise-* flags
//!   - name: web
//!     namespace: default
//!     cluster_ips: [10.96.0.10]
//!     external_ips: [198.51.100.10]
//!     load_balancer_ips: []
//!     external_traffic_policy: Local   # Cluster (default) or Local
//!     internal_traffic_policy: Cluster
//!     ports:                           # served by the service proxy
//!       - {name: http, protocol: TCP, port: 80, target_port: 8080, node_port: 30080}
//!     session_affinity: ClientIP       # None (default) or ClientIP
//!     session_affinity_timeout: 10800
//!     load_balancer_source_ranges: [192.168.200.0/24]
//!     health_check_node_port: 32000    # HTTP: this node's ready local endpoints
//!     endpoints:                       # local: inside this node's pod CIDRs
//!       - 10.244.1.2                   # ready, on the target ports
//!       - {ip: 10.244.2.2, ready: false, serving: true, terminating: true, ports: {http: 8080}}
//!     annotations: {kube-router.io/service.advertise.clusterip: "true"}
//! ```
//!
//! Unknown keys and wrong values are errors naming the file, the line and the key;
//! checks across keys (an address outside the pod CIDRs, a next hop off the uplink's
//! subnets) name them the same way.

use fastpath::wire::ethernet::Mac;
use lpm::{Prefix4, Prefix6};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

/// A node's configuration, parsed and checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's name.
    pub node: String,
    /// The cores workers are pinned to; worker `i` owns queue `i` of every port.
    #[serde(default)]
    pub cores: Vec<usize>,
    #[serde(default)]
    pub idle: IdleMode,
    pub uplink: Uplink,
    pub host_port: HostPort,
    pub pod_cidrs: Vec<Cidr>,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub nodes: Vec<PeerNode>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// This node's annotations (`kube-router.io/...`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub services: Vec<Service>,
}

/// A Kubernetes Service: what BGP advertises, and what the service proxy serves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub cluster_ips: Vec<IpAddr>,
    #[serde(default)]
    pub external_ips: Vec<IpAddr>,
    #[serde(default)]
    pub load_balancer_ips: Vec<IpAddr>,
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub internal_traffic_policy: TrafficPolicy,
    /// The service's ports; a service without any is advertised but not served.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity`.
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800).
    #[serde(default)]
    pub session_affinity_timeout: Option<u32>,
    /// `loadBalancerSourceRanges`: the clients its external frontends admit.
    #[serde(default)]
    pub load_balancer_source_ranges: Vec<Cidr>,
    /// `healthCheckNodePort`: the node answers HTTP on it with its count of local
    /// ready endpoints (200, or 503 with none), as kube-proxy does for load balancers.
    #[serde(default)]
    pub health_check_node_port: Option<u16>,
    /// Endpoints: an address (ready, the service's target ports), or one with an
    /// EndpointSlice's conditions and ports. Those inside this node's pod CIDRs are
    /// local.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    /// Needed when the service has more than one port (endpoints name their ports so).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub port: u16,
    /// The endpoints' port (default: `port`).
    #[serde(default)]
    pub target_port: Option<u16>,
    #[serde(default)]
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SessionAffinity {
    #[default]
    None,
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// An endpoint: its address alone, or with its conditions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum EndpointConfig {
    Ip(IpAddr),
    Full(Endpoint),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub ip: IpAddr,
    #[serde(default = "yes")]
    pub ready: bool,
    /// Default: as `ready`.
    #[serde(default)]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: bool,
    /// Its port by the service port's name (default: each port's target port).
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
}

fn yes() -> bool {
    true
}

impl EndpointConfig {
    pub fn ip(&self) -> IpAddr {
        match self {
            EndpointConfig::Ip(ip) => *ip,
            EndpointConfig::Full(e) => e.ip,
        }
    }

    /// Ready, serving, terminating.
    pub fn conditions(&self) -> (bool, bool, bool) {
        match self {
            EndpointConfig::Ip(_) => (true, true, false),
            EndpointConfig::Full(e) => (e.ready, e.serving.unwrap_or(e.ready), e.terminating),
        }
    }
}

fn default_namespace() -> String {
    "default".to_string()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdleMode {
    Spin,
    #[default]
    Poll,
    Priority,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    pub interface: String,
    /// The node's addresses on the uplink, with their subnets.
    pub addresses: Vec<IfAddr>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPort {
    /// The fastpath's end of the veth pair.
    pub interface: String,
    /// The kernel's end.
    pub peer: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    #[serde(default)]
    pub name: Option<String>,
    /// The host side of the pod's veth.
    pub interface: String,
    pub ips: Vec<IpAddr>,
    /// The MAC of the pod's own end (the CNI plugin that made the veth knows it).
    pub mac: MacAddr,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerNode {
    pub name: String,
    pub ip: IpAddr,
    /// Static routes to the node's pod CIDRs (leave empty when BGP learns them).
    #[serde(default)]
    pub pod_cidrs: Vec<Cidr>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub prefix: Cidr,
    pub via: OneOrMany<IpAddr>,
}

/// One value or a list of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// An IPv4 or IPv6 prefix (no host bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cidr {
    V4(Prefix4),
    V6(Prefix6),
}

impl Config {
    /// The addresses of `hops` on the uplink's subnets (the next hops the kernel can
    /// resolve there).
    pub fn on_uplink(&self, hops: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
        hops.into_iter()
            .filter(|h| {
                self.uplink
                    .addresses
                    .iter()
                    .any(|a| a.subnet().contains(*h))
            })
            .collect()
    }

    /// Whether `running` and this configuration differ only in the parts that apply
    /// while the agent runs: annotations, other nodes and services.
    pub fn same_but_live_parts(&self, running: &Config) -> bool {
        Config {
            annotations: running.annotations.clone(),
            nodes: running.nodes.clone(),
            services: running.services.clone(),
            ..self.clone()
        } == *running
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Cidr::V4(p), IpAddr::V4(a)) => p.contains(u32::from(a)),
            (Cidr::V6(p), IpAddr::V6(a)) => p.contains(u128::from(a)),
            _ => false,
        }
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        match (self, other) {
            (Cidr::V4(a), Cidr::V4(b)) => a.contains(b.addr()) || b.contains(a.addr()),
            (Cidr::V6(a), Cidr::V6(b)) => a.contains(b.addr()) || b.contains(a.addr()),
            _ => false,
        }
    }

    /// The prefix length.
    #[allow(clippy::len_without_is_empty)] // a length in bits, not a collection's size
    pub fn len(&self) -> u8 {
        match self {
            Cidr::V4(p) => p.len(),
            Cidr::V6(p) => p.len(),
        }
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        match self {
            Cidr::V4(p) => IpAddr::V4(Ipv4Addr::from(p.addr())),
            Cidr::V6(p) => IpAddr::V6(Ipv6Addr::from(p.addr())),
        }
    }

    /// The first address after the network address (a pod CIDR's default gateway).
    pub fn first_host(&self) -> IpAddr {
        match self {
            Cidr::V4(p) => IpAddr::V4(Ipv4Addr::from(p.addr().wrapping_add(1))),
            Cidr::V6(p) => IpAddr::V6(Ipv6Addr::from(p.addr().wrapping_add(1))),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4(p) => p.fmt(f),
            Cidr::V6(p) => p.fmt(f),
        }
    }
}

/// A value of the configuration that does not read as what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{text}`: {reason}")]
    Prefix { text: String, reason: String },
    #[error("`{0}` needs a subnet length, like 192.168.100.11/24")]
    NoLength(String),
    #[error("`{0}` is not an IP address")]
    NotAnAddress(String),
    #[error("`{len}` is not a subnet length from 0 to {max}")]
    BadLength { len: String, max: u8 },
    #[error("`{0}` is not a MAC address like 0a:58:0a:f4:01:02")]
    NotAMac(String),
}

impl FromStr for Cidr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Cidr, ValueError> {
        let bad = |e: &dyn fmt::Display| ValueError::Prefix {
            text: s.into(),
            reason: e.to_string(),
        };
        if s.contains(':') {
            s.parse().map(Cidr::V6).map_err(|e| bad(&e))
        } else {
            s.parse().map(Cidr::V4).map_err(|e| bad(&e))
        }
    }
}

/// An interface address with its subnet length, `192.168.100.11/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub len: u8,
}

impl IfAddr {
    /// The subnet the address is on.
    pub fn subnet(&self) -> Cidr {
        match self.addr {
            IpAddr::V4(a) => Cidr::V4(Prefix4::new_masked(u32::from(a), self.len)),
            IpAddr::V6(a) => Cidr::V6(Prefix6::new_masked(u128::from(a), self.len)),
        }
    }
}

impl FromStr for IfAddr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<IfAddr, ValueError> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| ValueError::NoLength(s.into()))?;
        let addr: IpAddr = a.parse().map_err(|_| ValueError::NotAnAddress(a.into()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = l
            .parse()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| ValueError::BadLength { len: l.into(), max })?;
        Ok(IfAddr { addr, len })
    }
}

/// A MAC address, `0a:58:0a:f4:01:02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub Mac);

impl FromStr for MacAddr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<MacAddr, ValueError> {
        parse_mac(s)
            .map(MacAddr)
            .ok_or_else(|| ValueError::NotAMac(s.into()))
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(Cidr, IfAddr, MacAddr);

/// What is wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// The key, as `pods[1].ips[0]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: ", self.file)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        key: String::new(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(&text, &file)
}

/// Parses and checks a configuration; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let config: Config = serde_yaml::from_str(text).map_err(|e| {
        // serde_yaml says "key.path: message at line L column C"; split that.
        let full = e.to_string();
        let body = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(b, _)| b);
        let (mut key, message) = match body.split_once(": ") {
            Some((k, m)) if !k.contains(' ') => (k.to_string(), m.to_string()),
            _ => (String::new(), body.to_string()),
        };
        let mut line = e.location().map(|l| l.line());
        // A wrong value is reported at its container; find the value itself.
        let quoted = message
            .split('`')
            .nth(1)
            .filter(|_| message.starts_with('`'));
        if let Some((k, l)) = quoted.and_then(|v| locate_value(text, &key, v)) {
            key = k;
            line = Some(l);
        }
        ConfigError {
            file: file.to_string(),
            line,
            key,
            message,
        }
    })?;
    check(&config).map_err(|(key, message)| ConfigError {
        file: file.to_string(),
        line: locate(text, &key),
        key,
        message,
    })?;
    Ok(config)
}

/// Checks across keys; the error names the key.
fn check(c: &Config) -> Result<(), (String, String)> {
    let e = |key: String, msg: String| Err((key, msg));
    if c.node.trim().is_empty() {
        return e("node".into(), "must not be empty".into());
    }
    if c.uplink.addresses.is_empty() {
        return e(
            "uplink.addresses".into(),
            "the node needs at least one address".into(),
        );
    }
    if c.pod_cidrs.is_empty() {
        return e("pod_cidrs".into(), "the node needs a pod CIDR".into());
    }
    let subnets: Vec<Cidr> = c.uplink.addresses.iter().map(IfAddr::subnet).collect();
    let on_link = |ip: IpAddr| subnets.iter().any(|s| s.contains(ip));
    let list = |cidrs: &[Cidr]| {
        cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut interfaces = HashSet::new();
    for (key, name) in [
        ("uplink.interface", &c.uplink.interface),
        ("host_port.interface", &c.host_port.interface),
        ("host_port.peer", &c.host_port.peer),
    ] {
        if name.is_empty() || !interfaces.insert(name.as_str()) {
            return e(key.into(), format!("`{name}` is empty or used twice"));
        }
    }
    if let Some(g) = c.gateway.ipv4 {
        if !c.pod_cidrs.iter().any(|p| p.contains(g.into())) {
            return e(
                "gateway.ipv4".into(),
                format!("{g} is outside the pod CIDRs ({})", list(&c.pod_cidrs)),
            );
        }
    }
    if let Some(g) = c.gateway.ipv6 {
        if !c.pod_cidrs.iter().any(|p| p.contains(g.into())) && !g.is_unicast_link_local() {
            return e(
                "gateway.ipv6".into(),
                format!(
                    "{g} is neither in the pod CIDRs ({}) nor link-local",
                    list(&c.pod_cidrs)
                ),
            );
        }
    }
    let mut pod_ips = HashSet::new();
    for (i, pod) in c.pods.iter().enumerate() {
        if !interfaces.insert(pod.interface.as_str()) {
            return e(
                format!("pods[{i}].interface"),
                format!("`{}` is used twice", pod.interface),
            );
        }
        if pod.ips.is_empty() {
            return e(format!("pods[{i}].ips"), "a pod needs an address".into());
        }
        for (j, &ip) in pod.ips.iter().enumerate() {
            if !c.pod_cidrs.iter().any(|p| p.contains(ip)) {
                return e(
                    format!("pods[{i}].ips[{j}]"),
                    format!("{ip} is outside the pod CIDRs ({})", list(&c.pod_cidrs)),
                );
            }
            if !pod_ips.insert(ip) {
                return e(format!("pods[{i}].ips[{j}]"), format!("{ip} is used twice"));
            }
        }
    }
    for (i, n) in c.nodes.iter().enumerate() {
        if !on_link(n.ip) {
            return e(
                format!("nodes[{i}].ip"),
                format!(
                    "{} is not on the uplink's subnets ({})",
                    n.ip,
                    list(&subnets)
                ),
            );
        }
        for (j, p) in n.pod_cidrs.iter().enumerate() {
            if let Some(ours) = c.pod_cidrs.iter().find(|o| o.overlaps(p)) {
                return e(
                    format!("nodes[{i}].pod_cidrs[{j}]"),
                    format!("{p} overlaps this node's pod CIDR {ours}"),
                );
            }
        }
    }
    for (i, r) in c.routes.iter().enumerate() {
        let via = r.via.as_slice();
        if via.is_empty() || via.len() > 64 {
            return e(format!("routes[{i}].via"), "give 1 to 64 next hops".into());
        }
        for (j, &v) in via.iter().enumerate() {
            let key = if matches!(r.via, OneOrMany::One(_)) {
                format!("routes[{i}].via")
            } else {
                format!("routes[{i}].via[{j}]")
            };
            if !on_link(v) {
                return e(
                    key,
                    format!("{v} is not on the uplink's subnets ({})", list(&subnets)),
                );
            }
            if v.is_ipv4() != matches!(r.prefix, Cidr::V4(_)) {
                return e(key, format!("{v} and {} are not the same family", r.prefix));
            }
        }
    }
    for (i, svc) in c.services.iter().enumerate() {
        let mut names = HashSet::new();
        for (j, p) in svc.ports.iter().enumerate() {
            if p.port == 0 || p.target_port == Some(0) || p.node_port == Some(0) {
                return e(
                    format!("services[{i}].ports[{j}]"),
                    "ports are 1 to 65535".into(),
                );
            }
            if svc.ports.len() > 1 && p.name.is_empty() {
                return e(
                    format!("services[{i}].ports[{j}].name"),
                    "a service with several ports names each".into(),
                );
            }
            // Kubernetes: port names are unique within a service, whatever the protocol.
            if !names.insert(&p.name) {
                return e(
                    format!("services[{i}].ports[{j}].name"),
                    format!("`{}` is used twice", p.name),
                );
            }
        }
        if svc.health_check_node_port == Some(0) {
            return e(
                format!("services[{i}].health_check_node_port"),
                "ports are 1 to 65535".into(),
            );
        }
        if let Some(t) = svc.session_affinity_timeout {
            if t == 0 || t > 86400 {
                return e(
                    format!("services[{i}].session_affinity_timeout"),
                    format!("{t}: seconds from 1 to 86400, as Kubernetes allows"),
                );
            }
        }
        for (j, ep) in svc.endpoints.iter().enumerate() {
            if let EndpointConfig::Full(full) = ep {
                for name in full.ports.keys() {
                    if !svc.ports.iter().any(|p| &p.name == name) {
                        return e(
                            format!("services[{i}].endpoints[{j}].ports"),
                            format!("`{name}` is not a port of the service"),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// The 1-based line where `key` (as `pods[1].ips[0]`) appears in `text`.
pub fn locate(text: &str, key: &str) -> Option<usize> {
    nodes(text)?
        .into_iter()
        .find(|(p, _, _)| p == key)
        .map(|(_, l, _)| l)
}

/// The key under `within` whose scalar value is `value`, and its line.
fn locate_value(text: &str, within: &str, value: &str) -> Option<(String, usize)> {
    nodes(text)?
        .into_iter()
        .find(|(p, _, v)| p.starts_with(within) && v.as_deref() == Some(value))
        .map(|(p, l, _)| (p, l))
}

/// Every key and value of `text` with its path and line, found by walking the YAML's
/// events with their positions.
fn nodes(text: &str) -> Option<Vec<(String, usize, Option<String>)>> {
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::Marker;

    enum Frame {
        Map {
            key: Option<String>,
            expect_key: bool,
        },
        Seq {
            index: usize,
        },
    }
    struct Walk {
        stack: Vec<Frame>,
        nodes: Vec<(String, usize, Option<String>)>,
    }
    impl Walk {
        fn path(&self) -> String {
            let mut p = String::new();
            for f in &self.stack {
                match f {
                    Frame::Map { key: Some(k), .. } => {
                        if !p.is_empty() {
                            p.push('.');
                        }
                        p.push_str(k);
                    }
                    Frame::Map { key: None, .. } => {}
                    Frame::Seq { index } => p.push_str(&format!("[{index}]")),
                }
            }
            p
        }
        /// A value (scalar or container) ended: advance the parent.
        fn value_done(&mut self) {
            match self.stack.last_mut() {
                Some(Frame::Map { expect_key, .. }) => *expect_key = true,
                Some(Frame::Seq { index }) => *index += 1,
                None => {}
            }
        }
        fn value_starts(&mut self, line: usize, scalar: Option<String>) {
            let p = self.path();
            self.nodes.push((p, line, scalar));
        }
    }
    impl MarkedEventReceiver for Walk {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            let line = mark.line();
            match ev {
                Event::Scalar(s, ..) => {
                    if let Some(Frame::Map { key, expect_key }) = self.stack.last_mut() {
                        if *expect_key {
                            *key = Some(s);
                            *expect_key = false;
                            let p = self.path();
                            self.nodes.push((p, line, None));
                            return;
                        }
                    }
                    self.value_starts(line, Some(s));
                    self.value_done();
                }
                Event::MappingStart(..) => {
                    self.value_starts(line, None);
                    self.stack.push(Frame::Map {
                        key: None,
                        expect_key: true,
                    });
                }
                Event::SequenceStart(..) => {
                    self.value_starts(line, None);
                    self.stack.push(Frame::Seq { index: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    self.stack.pop();
                    self.value_done();
                }
                Event::Alias(_) => self.value_done(),
                _ => {}
            }
        }
    }
    let mut walk = Walk {
        stack: Vec::new(),
        nodes: Vec::new(),
    };
    Parser::new_from_str(text).load(&mut walk, false).ok()?;
    Some(walk.nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
node: node1
cores: [1]
uplink:
  interface: up0
  addresses: [192.168.100.11/24]
host_port:
  interface: xrf0
  peer: xrk0
pod_cidrs: [10.244.1.0/24]
pods:
  - name: p1
    interface: vp1
    ips: [10.244.1.2]
    mac: 0a:58:0a:f4:01:02
nodes:
  - {name: node2, ip: 192.168.100.12, pod_cidrs: [10.244.2.0/24]}
routes:
  - prefix: 192.168.200.0/24
    via: 192.168.100.1
  - prefix: 0.0.0.0/0
    via: [192.168.100.1, 192.168.100.2]
";

    fn err(text: &str) -> String {
        parse(text, "node.yaml").unwrap_err().to_string()
    }

    #[test]
    fn live_parts_and_uplink_hops() {
        let running = parse(GOOD, "node.yaml").unwrap();
        let more_nodes = GOOD.replace(
            "nodes:\n",
            "nodes:\n  - {name: node3, ip: 192.168.100.13}\n",
        );
        assert!(parse(&more_nodes, "node.yaml")
            .unwrap()
            .same_but_live_parts(&running));
        let other_cores = GOOD.replace("cores: [1]", "cores: [0]");
        assert!(!parse(&other_cores, "node.yaml")
            .unwrap()
            .same_but_live_parts(&running));
        let hops = ["192.168.100.7", "10.1.2.3", "192.168.101.1"].map(|h| h.parse().unwrap());
        assert_eq!(running.on_uplink(hops), vec![hops[0]]);
    }

    #[test]
    fn a_full_config_parses() {
        let c = parse(GOOD, "node.yaml").unwrap();
        assert_eq!(c.node, "node1");
        assert_eq!(c.pods[0].mac.0, [0x0a, 0x58, 0x0a, 0xf4, 1, 2]);
        assert_eq!(c.routes[1].via.as_slice().len(), 2);
        assert_eq!(c.idle, IdleMode::Poll);
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let text = GOOD.replace("    ips: [10.244.1.2]", "    ips: [10.244.1.2]\n    ipz: 1");
        let e = err(&text);
        assert!(e.starts_with("node.yaml:14:"), "{e}");
        assert!(
            e.contains("pods[0]") && e.contains("unknown field `ipz`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_values_name_the_key_and_line() {
        let e = err(&GOOD.replace("0a:58:0a:f4:01:02", "0a:58:zz"));
        assert!(e.starts_with("node.yaml:14:"), "{e}");
        assert!(
            e.contains("pods[0].mac") && e.contains("not a MAC address"),
            "{e}"
        );
        let e = err(&GOOD.replace("[10.244.1.0/24]", "[10.244.1.0/33]"));
        assert!(
            e.starts_with("node.yaml:9:") && e.contains("pod_cidrs"),
            "{e}"
        );
    }

    #[test]
    fn checks_across_keys_name_the_key_and_line() {
        let e = err(&GOOD.replace("ips: [10.244.1.2]", "ips: [10.9.9.9]"));
        assert_eq!(
            e,
            "node.yaml:13: pods[0].ips[0]: 10.9.9.9 is outside the pod CIDRs (10.244.1.0/24)"
        );
        let e = err(&GOOD.replace("via: 192.168.100.1\n", "via: 10.0.0.1\n"));
        assert_eq!(
            e,
            "node.yaml:19: routes[0].via: 10.0.0.1 is not on the uplink's subnets (192.168.100.0/24)"
        );
        let e = err(&GOOD.replace("192.168.100.2]", "192.168.7.2]"));
        assert!(e.starts_with("node.yaml:21: routes[1].via[1]:"), "{e}");
        let e = err(&GOOD.replace("pod_cidrs: [10.244.2.0/24]", "pod_cidrs: [10.244.0.0/16]"));
        assert!(
            e.contains("nodes[0].pod_cidrs[0]: 10.244.0.0/16 overlaps"),
            "{e}"
        );
    }

    #[test]
    fn missing_keys_are_named() {
        let e = err(&GOOD.replace("node: node1\n", ""));
        assert!(e.contains("missing field `node`"), "{e}");
    }
}
