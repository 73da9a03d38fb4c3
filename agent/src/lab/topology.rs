//! The lab's address plan, its namespaces and links, and each node's configuration.
//!
//! Both families everywhere: the IPv4 plan is kube-router's usual one (pod CIDRs in
//! 10.244.0.0/16), the IPv6 one mirrors it in unique local addresses (fd00::/8), so
//! nothing the lab sends can leave its namespaces even by mistake.

use super::Lab;

pub(super) const NODES: [u8; 2] = [1, 2];
/// The lab services' ports, each its own target port: the UDP echo, the exact TCP
/// transfer and iperf3 of every flow check. (The ECMP check's flows go to a port no
/// service has, 7779, and are refused by whichever node the fabric picks.)
/// `NP` stands for the UDP port's NodePort.
const SERVICE_PORTS: &str = "[{name: udp, protocol: UDP, port: 7777, node_port: NP}, \
    {name: tcp, port: 7778}, {name: iperf, port: 5201}]";

/// The UDP NodePorts of the two services (`externalTrafficPolicy` Cluster and Local).
pub(super) const NODE_PORT_CLUSTER: u16 = 30777;
pub(super) const NODE_PORT_LOCAL: u16 = 30778;
/// The Local service's `healthCheckNodePort`.
pub(super) const HEALTH_CHECK_PORT: u16 = 32100;
pub(super) const PODS: [u8; 2] = [2, 3];

/// An address family of the lab: which plan an address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub(super) fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// `ip`'s family option.
    pub(super) fn ip_flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }

    /// The fabric's address on the nodes' link.
    pub(super) fn fabric_ip(self) -> String {
        match self {
            Family::V4 => "192.168.100.1".into(),
            Family::V6 => "fd00:100::1".into(),
        }
    }

    /// The length of the nodes' link's prefix.
    pub(super) fn link_len(self) -> u8 {
        match self {
            Family::V4 => 24,
            Family::V6 => 64,
        }
    }

    pub(super) fn node_ip(self, n: u8) -> String {
        match self {
            Family::V4 => format!("192.168.100.{}", 10 + n),
            Family::V6 => format!("fd00:100::{}", 10 + n),
        }
    }

    /// The fabric's address on the client's link, and the client's.
    pub(super) fn client_gateway(self) -> String {
        match self {
            Family::V4 => "192.168.200.1".into(),
            Family::V6 => "fd00:200::1".into(),
        }
    }

    pub(super) fn client_ip(self) -> String {
        match self {
            Family::V4 => "192.168.200.10".into(),
            Family::V6 => "fd00:200::10".into(),
        }
    }

    /// The client's subnet, which the fabric announces to the nodes.
    pub(super) fn client_subnet(self) -> String {
        match self {
            Family::V4 => "192.168.200.0/24".into(),
            Family::V6 => "fd00:200::/64".into(),
        }
    }

    pub(super) fn pod_cidr(self, n: u8) -> String {
        match self {
            Family::V4 => format!("10.244.{n}.0/24"),
            Family::V6 => format!("fd00:10:244:{n}::/64"),
        }
    }

    pub(super) fn pod_ip(self, n: u8, p: u8) -> String {
        match self {
            Family::V4 => format!("10.244.{n}.{p}"),
            Family::V6 => format!("fd00:10:244:{n}::{p}"),
        }
    }

    /// The pods' gateway on node `n`: the fastpath answers for it.
    pub(super) fn gateway(self, n: u8) -> String {
        match self {
            Family::V4 => format!("10.244.{n}.1"),
            Family::V6 => format!("fd00:10:244:{n}::1"),
        }
    }

    pub(super) fn host_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// A service with endpoints on both nodes: both announce it, the fabric spreads it.
    pub(super) fn service_vip(self) -> String {
        match self {
            Family::V4 => "198.51.100.10".into(),
            Family::V6 => "fd00:198:51:100::10".into(),
        }
    }

    /// A service with `externalTrafficPolicy: Local` and its endpoint on node 1 only.
    pub(super) fn local_vip(self) -> String {
        match self {
            Family::V4 => "198.51.100.20".into(),
            Family::V6 => "fd00:198:51:100::20".into(),
        }
    }

    /// A LoadBalancer IP whose source ranges hold the client's subnet.
    pub(super) fn lb_vip(self) -> String {
        match self {
            Family::V4 => "203.0.113.40".into(),
            Family::V6 => "fd00:203:0:113::40".into(),
        }
    }

    /// A LoadBalancer IP whose source ranges leave the client out.
    pub(super) fn lb_closed_vip(self) -> String {
        match self {
            Family::V4 => "203.0.113.41".into(),
            Family::V6 => "fd00:203:0:113::41".into(),
        }
    }

    /// An ExternalIP of a service with no endpoint at all.
    pub(super) fn empty_vip(self) -> String {
        match self {
            Family::V4 => "198.51.100.50".into(),
            Family::V6 => "fd00:198:51:100::50".into(),
        }
    }

    /// The service without session affinity, for connections that spread.
    pub(super) fn spread_vip(self) -> String {
        match self {
            Family::V4 => "198.51.100.11".into(),
            Family::V6 => "fd00:198:51:100::11".into(),
        }
    }

    pub(super) fn spread_cluster_ip(self) -> String {
        match self {
            Family::V4 => "10.96.0.11".into(),
            Family::V6 => "fd00:96::11".into(),
        }
    }

    pub(super) fn cluster_ip(self) -> String {
        match self {
            Family::V4 => "10.96.0.10".into(),
            Family::V6 => "fd00:96::10".into(),
        }
    }

    /// `ip` and `port` as a socket address (IPv6 in brackets).
    pub(super) fn socket(self, ip: &str, port: u16) -> String {
        match self {
            Family::V4 => format!("{ip}:{port}"),
            Family::V6 => format!("[{ip}]:{port}"),
        }
    }
}

pub(super) fn pod_mac(n: u8, p: u8) -> String {
    format!("0a:58:0a:f4:{n:02x}:{p:02x}")
}

impl Lab {
    pub(super) fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.ns("fabric"), self.ns("client")];
        for n in NODES {
            v.push(self.node(n));
            for p in PODS {
                v.push(self.pod(n, p));
            }
        }
        v
    }

    fn sysctl(&self, ns: &str, kv: &str) -> Result<(), String> {
        self.exec(ns, &["sysctl", "-qw", kv]).map(drop)
    }

    /// Sending checksums must be complete in frames that reach an XDP port: AF_XDP
    /// copies bytes, and a checksum left for offload would leave wrong.
    fn no_offload(&self, ns: &str, dev: &str) -> Result<(), String> {
        self.exec(
            ns,
            &[
                "ethtool", "-K", dev, "tx", "off", "gso", "off", "tso", "off",
            ],
        )
        .map(drop)
    }

    /// Adds `addr/len` to `dev` in `ns`; IPv6 ones without duplicate address detection
    /// (every address in the lab is planned, and DAD would hold each back a second).
    fn addr(&self, ns: &str, f: Family, addr: &str, len: u8, dev: &str) -> Result<(), String> {
        let nodad = if f == Family::V6 { " nodad" } else { "" };
        self.ip(ns, &format!("addr add {addr}/{len} dev {dev}{nodad}"))
            .map(drop)
    }

    pub(super) fn build(&self) -> Result<(), String> {
        for ns in self.namespaces() {
            super::sh(&["ip", "netns", "add", &ns])?;
            self.ip(&ns, "link set lo up")?;
            // IPv6 on, quiet: no router solicitations or autoconfiguration, no DAD
            // (set before the links exist, so every link takes the defaults).
            for kv in [
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.default.accept_ra=0",
                "net.ipv6.conf.default.autoconf=0",
                "net.ipv6.conf.default.router_solicitations=0",
            ] {
                self.sysctl(&ns, kv)?;
            }
        }
        let fabric = self.ns("fabric");
        let client = self.ns("client");
        // No multicast snooping: neighbour discovery's multicast reaches every port
        // without waiting for MLD reports.
        self.ip(&fabric, "link add br0 type bridge mcast_snooping 0")?;
        self.ip(&fabric, "link set br0 up")?;
        for kv in [
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            // ECMP by flow (addresses and ports), as a fabric router spreading service
            // traffic would: the lab's checks send many flows from one client.
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv6.fib_multipath_hash_policy=1",
        ] {
            self.sysctl(&fabric, kv)?;
        }
        self.ip(
            &fabric,
            &format!("link add fc type veth peer name eth0 netns {client}"),
        )?;
        for f in Family::BOTH {
            let len = f.link_len();
            self.addr(&fabric, f, &f.fabric_ip(), len, "br0")?;
            self.addr(&fabric, f, &f.client_gateway(), len, "fc")?;
            self.addr(&client, f, &f.client_ip(), len, "eth0")?;
        }
        self.ip(&fabric, "link set fc up")?;
        self.ip(&client, "link set eth0 up")?;
        for f in Family::BOTH {
            self.ip(
                &client,
                &format!(
                    "{} route add default via {}",
                    f.ip_flag(),
                    f.client_gateway()
                ),
            )?;
        }
        self.no_offload(&fabric, "fc")?;
        self.no_offload(&client, "eth0")?;
        for n in NODES {
            self.build_node(n)?;
            let config = self.config(n);
            let path = self.dir.join(format!("node{n}.yaml"));
            std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    fn build_node(&self, n: u8) -> Result<(), String> {
        let fabric = self.ns("fabric");
        let node = self.node(n);
        for kv in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.forwarding=1",
        ] {
            self.sysctl(&node, kv)?;
        }
        // The uplink.
        self.ip(
            &fabric,
            &format!("link add f{n} type veth peer name up0 netns {node}"),
        )?;
        self.ip(&fabric, &format!("link set f{n} master br0 up"))?;
        self.no_offload(&fabric, &format!("f{n}"))?;
        self.ip(
            &node,
            &format!("link set up0 address 02:00:c0:a8:64:{:02x}", 10 + n),
        )?;
        for f in Family::BOTH {
            self.addr(&node, f, &f.node_ip(n), f.link_len(), "up0")?;
        }
        self.ip(&node, "link set up0 up")?;
        for f in Family::BOTH {
            self.ip(
                &node,
                &format!("{} route add default via {}", f.ip_flag(), f.fabric_ip()),
            )?;
        }
        // The host port: xrf0 is the fastpath's end, xrk0 the kernel's.
        self.ip(&node, "link add xrf0 type veth peer name xrk0")?;
        self.ip(&node, "link set xrf0 up")?;
        self.ip(&node, "link set xrk0 up")?;
        self.no_offload(&node, "xrk0")?;
        // The node's own pod CIDRs; the other nodes' come from BGP (xroute installs
        // them out of xrk0), and the fabric learns every pod CIDR from BGP too.
        for f in Family::BOTH {
            self.ip(
                &node,
                &format!("route add {} dev xrk0 src {}", f.pod_cidr(n), f.node_ip(n)),
            )?;
        }
        // The pods.
        for p in PODS {
            let pod = self.pod(n, p);
            let host_side = format!("vp{}", p - 1);
            self.ip(
                &node,
                &format!("link add {host_side} type veth peer name eth0 netns {pod}"),
            )?;
            self.ip(&node, &format!("link set {host_side} up"))?;
            self.ip(&pod, &format!("link set eth0 address {}", pod_mac(n, p)))?;
            for f in Family::BOTH {
                self.addr(&pod, f, &f.pod_ip(n, p), f.host_len(), "eth0")?;
            }
            self.ip(&pod, "link set eth0 up")?;
            for f in Family::BOTH {
                let flag = f.ip_flag();
                let gw = f.gateway(n);
                self.ip(&pod, &format!("{flag} route add {gw} dev eth0 scope link"))?;
                self.ip(&pod, &format!("{flag} route add default via {gw} dev eth0"))?;
            }
            self.no_offload(&pod, "eth0")?;
        }
        Ok(())
    }

    fn config(&self, n: u8) -> String {
        use Family::{V4, V6};
        let other = if n == 1 { 2 } else { 1 };
        let mut pods = String::new();
        for p in PODS {
            pods.push_str(&format!(
                "  - {{name: pod{}, interface: vp{}, ips: [{}, \"{}\"], mac: \"{}\"}}\n",
                p - 1,
                p - 1,
                V4.pod_ip(n, p),
                V6.pod_ip(n, p),
                pod_mac(n, p)
            ));
        }
        // Two nodes on two cores: each worker gets its own.
        format!(
            "# xroute lab: node{n}\n\
             node: node{n}\n\
             cores: [{core}]\n\
             idle: poll\n\
             uplink:\n  interface: up0\n  addresses: [{ip4}/24, \"{ip6}/64\"]\n\
             host_port:\n  interface: xrf0\n  peer: xrk0\n\
             pod_cidrs: [{cidr4}, \"{cidr6}\"]\n\
             gateway: {{ipv4: {gw4}, ipv6: \"{gw6}\"}}\n\
             pods:\n{pods}\
             nodes:\n  - {{name: node{other}, ip: {oip}}}\n\
             services:\n\
             \x20 - {{name: web, cluster_ips: [{c4}, \"{c6}\"], external_ips: [{vip4}, \"{vip6}\"], session_affinity: ClientIP, ports: {ports}, endpoints: [{e1}, {e2}, \"{e1_6}\", \"{e2_6}\"]}}\n\
             \x20 - {{name: spread, cluster_ips: [{s4}, \"{s6}\"], external_ips: [{svip4}, \"{svip6}\"], ports: [{{name: ident, port: 7779}}, {{name: tcp, port: 7778}}, {{name: udp, protocol: UDP, port: 7777}}], endpoints: [{e1}, {e2}, \"{e1_6}\", \"{e2_6}\"]}}\n\
             \x20 - {{name: local, external_ips: [{local4}, \"{local6}\"], external_traffic_policy: Local, health_check_node_port: {hc}, ports: {local_ports}, endpoints: [{e1}, \"{e1_6}\"]}}\n\
             \x20 - {{name: lb, load_balancer_ips: [{lb4}, \"{lb6}\"], load_balancer_source_ranges: [192.168.200.0/24, \"fd00:200::/64\"], ports: [{{name: ident, port: 7779}}], endpoints: [{e1}, {e2}, \"{e1_6}\", \"{e2_6}\"]}}\n\
             \x20 - {{name: lbclosed, load_balancer_ips: [{lbc4}, \"{lbc6}\"], load_balancer_source_ranges: [10.0.0.0/8, \"fd00:10::/32\"], ports: [{{name: ident, port: 7779}}], endpoints: [{e1}, {e2}, \"{e1_6}\", \"{e2_6}\"]}}\n\
             \x20 - {{name: empty, external_ips: [{empty4}, \"{empty6}\"], ports: [{{name: tcp, port: 7778}}, {{name: udp, protocol: UDP, port: 7777}}], endpoints: []}}\n",
            hc = HEALTH_CHECK_PORT,
            ports = SERVICE_PORTS.replace("NP", &NODE_PORT_CLUSTER.to_string()),
            local_ports = SERVICE_PORTS.replace("NP", &NODE_PORT_LOCAL.to_string()),
            core = (n as usize - 1) % std::thread::available_parallelism().map_or(1, |c| c.get()),
            ip4 = V4.node_ip(n),
            ip6 = V6.node_ip(n),
            cidr4 = V4.pod_cidr(n),
            cidr6 = V6.pod_cidr(n),
            gw4 = V4.gateway(n),
            gw6 = V6.gateway(n),
            oip = V4.node_ip(other),
            c4 = V4.cluster_ip(),
            c6 = V6.cluster_ip(),
            s4 = V4.spread_cluster_ip(),
            s6 = V6.spread_cluster_ip(),
            svip4 = V4.spread_vip(),
            svip6 = V6.spread_vip(),
            vip4 = V4.service_vip(),
            vip6 = V6.service_vip(),
            lb4 = V4.lb_vip(),
            lb6 = V6.lb_vip(),
            lbc4 = V4.lb_closed_vip(),
            lbc6 = V6.lb_closed_vip(),
            empty4 = V4.empty_vip(),
            empty6 = V6.empty_vip(),
            local4 = V4.local_vip(),
            local6 = V6.local_vip(),
            e1 = V4.pod_ip(1, 2),
            e2 = V4.pod_ip(2, 2),
            e1_6 = V6.pod_ip(1, 2),
            e2_6 = V6.pod_ip(2, 2),
        )
    }
}
