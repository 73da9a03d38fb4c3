//! The service model kube-proxy works from, and its choice of endpoints.
//!
//! A [`Service`] has frontends (ClusterIPs, ExternalIPs, LoadBalancer ingress IPs, each
//! with every [`ServicePort`]; NodePorts on the node's addresses), traffic policies, an
//! optional ClientIP affinity and source ranges, and endpoints with the conditions of
//! an EndpointSlice. Which endpoints a flow may reach is [`Service::usable`]: kube-proxy's
//! categorisation, so that a cluster that moves from kube-proxy to xroute keeps its
//! behaviour:
//!
//! - ready endpoints; when none is ready, the serving ones that are terminating
//!   (KEP-1669: a rolling update of the last pods does not drop traffic);
//! - with a `Local` policy (`externalTrafficPolicy` for traffic from outside the
//!   cluster, `internalTrafficPolicy` for traffic from pods and nodes), only this
//!   node's, with the same fallback among them;
//! - none: the service rejects (ICMP port unreachable, TCP RST), as kube-proxy does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    /// Known to Kubernetes, not served by xroute: reported, never silently dropped.
    Sctp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// Where a flow to a service comes from, which decides the policy that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A pod or a node of the cluster, to a ClusterIP: `internalTrafficPolicy`.
    Internal,
    /// Outside the cluster, to a NodePort, an ExternalIP or a LoadBalancer IP:
    /// `externalTrafficPolicy`.
    External,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name: endpoints name their ports the same way.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// An endpoint with an EndpointSlice's conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: IpAddr,
    /// Its port for each service port name.
    pub ports: BTreeMap<String, u16>,
    /// On this node.
    pub local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// A backend for one service port: an endpoint's address and its port for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
}

impl Backend {
    /// The bytes that name the backend in a Maglev table: every node must derive the
    /// same, so they are the address (16 bytes, IPv4 mapped) and the port.
    pub fn key(&self) -> [u8; 18] {
        let mut k = [0u8; 18];
        let a = match self.addr {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        k[..16].copy_from_slice(&a.octets());
        k[16..].copy_from_slice(&self.port.to_be_bytes());
        k
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub external_policy: TrafficPolicy,
    pub internal_policy: TrafficPolicy,
    /// `sessionAffinity: ClientIP` and its timeout.
    pub affinity: Option<Duration>,
    /// `loadBalancerSourceRanges`, as (network address, prefix length); empty: any.
    pub source_ranges: Vec<(IpAddr, u8)>,
    /// `healthCheckNodePort`: where the node answers load balancers' health checks
    /// with its count of local ready endpoints.
    pub health_check_node_port: Option<u16>,
    pub endpoints: Vec<Endpoint>,
}

impl Service {
    /// This node's ready endpoints, counted as kube-proxy's health check counts them:
    /// by address (one pod serving several ports is one), in each family apart (a
    /// dual-stack pod is one: kube-proxy runs a proxier per family), the larger count.
    /// Terminating ones are not counted, so that load balancers drain the node.
    pub fn local_ready_endpoints(&self) -> usize {
        let mut addrs: Vec<IpAddr> = self
            .endpoints
            .iter()
            .filter(|e| e.local && e.ready)
            .filter(|e| self.ports.iter().any(|p| e.ports.contains_key(&p.name)))
            .map(|e| e.addr)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        let v6 = addrs.iter().filter(|a| a.is_ipv6()).count();
        v6.max(addrs.len() - v6)
    }

    /// The backends a flow from `origin` to service port `port` (by name) may reach,
    /// sorted; empty when the service must reject it.
    pub fn usable(&self, port: &str, origin: Origin) -> Vec<Backend> {
        let policy = match origin {
            Origin::Internal => self.internal_policy,
            Origin::External => self.external_policy,
        };
        self.usable_with(port, policy)
    }

    /// Whether the port has any endpoint that could take traffic anywhere: without one
    /// the service rejects (ICMP port unreachable, TCP RST); with one but none usable
    /// here (a Local policy, endpoints on other nodes) packets are dropped, as
    /// kube-proxy does.
    pub fn has_endpoints(&self, port: &str) -> bool {
        !self.usable_with(port, TrafficPolicy::Cluster).is_empty()
    }

    /// The backends of service port `port` under `policy`, sorted.
    pub fn usable_with(&self, port: &str, policy: TrafficPolicy) -> Vec<Backend> {
        self.usable_in(port, policy, None)
    }

    /// The same, of one family only (`v6`), as a VIP of that family reaches them: the
    /// families are separate EndpointSlices, each chosen from on its own.
    pub fn usable_in(&self, port: &str, policy: TrafficPolicy, v6: Option<bool>) -> Vec<Backend> {
        let local_only = policy == TrafficPolicy::Local;
        let candidates = || {
            self.endpoints
                .iter()
                .filter(move |e| !local_only || e.local)
                .filter(move |e| v6.is_none_or(|v6| e.addr.is_ipv6() == v6))
                .filter_map(|e| e.ports.get(port).map(|&p| (e, p)))
        };
        let ready = candidates().any(|(e, _)| e.ready);
        let mut out: Vec<Backend> = candidates()
            .filter(|(e, _)| {
                if ready {
                    e.ready
                } else {
                    e.serving && e.terminating
                }
            })
            .map(|(e, port)| Backend { addr: e.addr, port })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether a client address may reach the service's external frontends.
    pub fn source_allowed(&self, client: IpAddr) -> bool {
        self.source_ranges.is_empty()
            || self
                .source_ranges
                .iter()
                .any(|&(net, len)| in_prefix(client, net, len))
    }
}

/// `addr` is inside `net/len` (the same family only).
pub fn in_prefix(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep(last: u8, local: bool, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addr: IpAddr::from([10, 244, u8::from(!local), last]),
            ports: BTreeMap::from([("http".to_string(), 8080)]),
            local,
            ready,
            serving,
            terminating,
        }
    }

    fn service(endpoints: Vec<Endpoint>) -> Service {
        Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ips: vec![IpAddr::from([10, 96, 0, 10])],
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30080),
            }],
            external_policy: TrafficPolicy::Cluster,
            internal_policy: TrafficPolicy::Cluster,
            affinity: None,
            source_ranges: Vec::new(),
            health_check_node_port: None,
            endpoints,
        }
    }

    fn addrs(b: &[Backend]) -> Vec<u8> {
        b.iter()
            .map(|b| match b.addr {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    #[test]
    fn ready_endpoints_first_then_serving_terminating_ones() {
        // One ready, one terminating but serving: only the ready one.
        let s = service(vec![
            ep(1, true, true, true, false),
            ep(2, false, false, true, true),
        ]);
        assert_eq!(addrs(&s.usable("http", Origin::External)), [1]);
        // None ready: the serving terminating one (KEP-1669), never a non-serving one.
        let s = service(vec![
            ep(2, false, false, true, true),
            ep(3, false, false, false, true),
            ep(4, false, false, false, false),
        ]);
        assert_eq!(addrs(&s.usable("http", Origin::Internal)), [2]);
    }

    #[test]
    fn local_policies_keep_to_this_nodes_endpoints() {
        let mut s = service(vec![
            ep(1, true, false, true, true),
            ep(2, false, true, true, false),
        ]);
        s.external_policy = TrafficPolicy::Local;
        // External: only local, and the local one is terminating: it is used (the
        // fallback applies among local endpoints), not the remote ready one.
        assert_eq!(addrs(&s.usable("http", Origin::External)), [1]);
        // Internal traffic keeps the Cluster policy: the remote ready one.
        assert_eq!(addrs(&s.usable("http", Origin::Internal)), [2]);
        s.internal_policy = TrafficPolicy::Local;
        assert_eq!(addrs(&s.usable("http", Origin::Internal)), [1]);
        // No local endpoint at all: nothing (the service rejects here).
        s.endpoints.remove(0);
        assert!(s.usable("http", Origin::External).is_empty());
    }

    #[test]
    fn an_endpoint_without_the_named_port_is_not_a_backend_of_it() {
        let mut e = ep(5, true, true, true, false);
        e.ports = BTreeMap::from([("metrics".to_string(), 9100)]);
        let s = service(vec![e, ep(6, true, true, true, false)]);
        assert_eq!(addrs(&s.usable("http", Origin::Internal)), [6]);
        assert_eq!(
            s.usable("metrics", Origin::Internal),
            [Backend {
                addr: IpAddr::from([10, 244, 0, 5]),
                port: 9100
            }]
        );
    }

    #[test]
    fn source_ranges_admit_their_clients_only() {
        let mut s = service(Vec::new());
        assert!(
            s.source_allowed(IpAddr::from([203, 0, 113, 9])),
            "no ranges: any"
        );
        s.source_ranges = vec![(IpAddr::from([192, 168, 200, 0]), 24)];
        assert!(s.source_allowed(IpAddr::from([192, 168, 200, 10])));
        assert!(!s.source_allowed(IpAddr::from([192, 168, 201, 10])));
        assert!(
            !s.source_allowed("fd00:200::10".parse().unwrap()),
            "other family"
        );
    }

    #[test]
    fn backend_keys_are_the_same_for_the_same_backend_only() {
        let a = Backend {
            addr: IpAddr::from([10, 244, 1, 2]),
            port: 8080,
        };
        let mapped = Backend {
            addr: "::ffff:10.244.1.2".parse().unwrap(),
            port: 8080,
        };
        assert_eq!(a.key(), mapped.key(), "IPv4 is keyed as IPv4-mapped IPv6");
        assert_ne!(a.key(), Backend { port: 8081, ..a }.key());
    }

    /// The reference: kube-proxy's categorisation written plainly.
    fn reference(s: &Service, port: &str, origin: Origin) -> Vec<Backend> {
        let local_only = match origin {
            Origin::Internal => s.internal_policy == TrafficPolicy::Local,
            Origin::External => s.external_policy == TrafficPolicy::Local,
        };
        let mut pool = Vec::new();
        for e in &s.endpoints {
            if local_only && !e.local {
                continue;
            }
            if let Some(&p) = e.ports.get(port) {
                pool.push((e.clone(), p));
            }
        }
        let mut chosen: Vec<Backend> = pool
            .iter()
            .filter(|(e, _)| e.ready)
            .map(|(e, p)| Backend {
                addr: e.addr,
                port: *p,
            })
            .collect();
        if chosen.is_empty() {
            chosen = pool
                .iter()
                .filter(|(e, _)| e.serving && e.terminating)
                .map(|(e, p)| Backend {
                    addr: e.addr,
                    port: *p,
                })
                .collect();
        }
        chosen.sort();
        chosen.dedup();
        chosen
    }

    proptest! {
        #[test]
        fn usable_matches_the_reference(
            eps in proptest::collection::vec((1u8..30, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()), 0..12),
            ext_local in any::<bool>(),
            int_local in any::<bool>(),
        ) {
            let endpoints = eps
                .into_iter()
                .map(|(last, local, ready, serving, terminating, named)| {
                    let mut e = ep(last, local, ready, serving, terminating);
                    if !named {
                        e.ports = BTreeMap::from([("other".to_string(), 1)]);
                    }
                    e
                })
                .collect();
            let mut s = service(endpoints);
            s.external_policy = if ext_local { TrafficPolicy::Local } else { TrafficPolicy::Cluster };
            s.internal_policy = if int_local { TrafficPolicy::Local } else { TrafficPolicy::Cluster };
            for origin in [Origin::Internal, Origin::External] {
                prop_assert_eq!(s.usable("http", origin), reference(&s, "http", origin));
            }
        }
    }
}
