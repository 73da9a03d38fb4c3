//! The cluster model as the BGP speaker sees it: this node's peering and originated
//! routes from the configuration and kube-router's flags and annotations ([`plan`]),
//! the speaker's settings ([`speaker_config`]), and what to tell a running speaker
//! when the model changes ([`changes`]).

use super::advertise;
use super::annotations::AnnotationError;
use super::nexthop::Reachability;
use super::peering::{peering, BgpOptions, ClusterNode, Peering};
use super::speaker::{self, GracefulRestartConfig, Input, Local};
use super::Error;
use crate::config::{Config, IfAddr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The node's first address of each family on the uplink.
pub fn node_addresses(c: &Config) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let mut v4 = None;
    let mut v6 = None;
    for a in &c.uplink.addresses {
        let IfAddr { addr, .. } = *a;
        match addr {
            IpAddr::V4(x) if v4.is_none() => v4 = Some(x),
            IpAddr::V6(x) if v6.is_none() && x.segments()[0] & 0xffc0 != 0xfe80 => v6 = Some(x),
            _ => {}
        }
    }
    (v4, v6)
}

/// The cluster model's nodes (this one included) for the peering rules.
fn cluster(c: &Config) -> Vec<ClusterNode> {
    let (v4, v6) = node_addresses(c);
    let me_ip = v4.map(IpAddr::V4).or(v6.map(IpAddr::V6));
    let mut nodes = Vec::new();
    if let Some(ip) = me_ip {
        nodes.push(ClusterNode {
            name: c.node.clone(),
            ip,
            annotations: c.annotations.clone(),
        });
    }
    nodes.extend(c.nodes.iter().map(|n| ClusterNode {
        name: n.name.clone(),
        ip: n.ip,
        annotations: n.annotations.clone(),
    }));
    nodes
}

/// What the speaker needs from the cluster model, recomputed on every change.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub peering: Peering,
    pub locals: Vec<Local>,
}

/// Computes this node's peering and originated routes; bad annotations are logged
/// (naming node and annotation) and left out. `Err` when BGP cannot run here.
pub fn plan(c: &Config, options: &BgpOptions) -> Result<Plan, Error> {
    let (p, errors) = peering(&c.node, &cluster(c), options);
    report(&errors);
    let peering = p.ok_or_else(|| Error::NoPeering(errors.clone()))?;
    let (locals, errors) = advertise::locals(&c.pod_cidrs, &c.services, options);
    report(&errors);
    Ok(Plan { peering, locals })
}

fn report(errors: &[AnnotationError]) {
    for e in errors {
        tracing::error!("{e}; left out, the rest keeps working");
    }
}

/// The BGP identifier: kube-router's `--router-id` (an IPv4 address, or `generate`
/// for one derived from the node name), else the node's IPv4 address.
pub fn router_id(flag: Option<&str>, c: &Config) -> Result<Ipv4Addr, Error> {
    match flag {
        Some("generate") => {
            // FNV-1a of the node name: stable across restarts, distinct per node.
            let mut h: u32 = 0x811c_9dc5;
            for b in c.node.bytes() {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            Ok(Ipv4Addr::from(h))
        }
        Some(s) => s.parse().map_err(|_| Error::RouterId(s.into())),
        None => node_addresses(c).0.ok_or(Error::NoRouterId),
    }
}

/// The speaker's settings.
pub fn speaker_config(
    router_id_flag: Option<&str>,
    options: &BgpOptions,
    c: &Config,
    plan: &Plan,
    restarting: bool,
) -> Result<speaker::Config, Error> {
    let (v4, v6) = node_addresses(c);
    Ok(speaker::Config {
        asn: plan.peering.asn,
        router_id: router_id(router_id_flag, c)?,
        listen: vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), options.bgp_port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), options.bgp_port),
        ],
        hold_time: options.hold_time,
        connect_retry: Duration::from_secs(5),
        graceful_restart: options.graceful_restart.then_some(GracefulRestartConfig {
            time: options.graceful_restart_time,
            deferral: options.graceful_restart_deferral_time,
            restarting,
        }),
        rr_cluster_id: plan.peering.rr_cluster_id,
        node: plan.peering.node.clone(),
        override_nexthop: options.override_nexthop,
        next_hop4: v4,
        next_hop6: v6,
        reachability: Reachability {
            connected: c.uplink.addresses.iter().map(|a| a.subnet()).collect(),
            statics: c.routes.iter().map(|r| r.prefix).collect(),
        },
    })
}

/// Sends the speaker what changed between two plans.
pub fn apply(handle: &speaker::Handle, old: Option<&Plan>, new: &Plan) {
    for i in changes(old, new) {
        let _ = handle.input.send(i);
    }
}

/// What the speaker must be told when the plan goes from `old` (none at the start) to
/// `new`.
pub fn changes(old: Option<&Plan>, new: &Plan) -> Vec<Input> {
    let mut out = Vec::new();
    let mut send = |i| out.push(i);
    if old.map(|o| (o.peering.asn, o.peering.rr_cluster_id))
        != Some((new.peering.asn, new.peering.rr_cluster_id))
        && old.is_some()
    {
        send(Input::Identity {
            asn: new.peering.asn,
            rr_cluster_id: new.peering.rr_cluster_id,
        });
    }
    if old.map(|o| &o.peering.node) != Some(&new.peering.node) {
        send(Input::Node(new.peering.node.clone()));
    }
    if old.map(|o| &o.peering.neighbors) != Some(&new.peering.neighbors) {
        send(Input::Neighbors(new.peering.neighbors.clone()));
    }
    if old.map(|o| &o.locals) != Some(&new.locals) {
        send(Input::Locals(new.locals.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::peering::BgpOptions;

    const NODE: &str = "\
node: node1
uplink: {interface: up0, addresses: [192.168.100.11/24, fd00:100::11/64]}
host_port: {interface: xrf0, peer: xrk0}
pod_cidrs: [10.244.1.0/24]
nodes:
  - {name: node2, ip: 192.168.100.12}
";

    fn config(extra: &str) -> Config {
        crate::config::parse(&format!("{NODE}{extra}"), "t.yaml").unwrap()
    }

    #[test]
    fn router_ids_from_the_flag_the_name_or_the_address() {
        let c = config("");
        let id = |flag, c: &Config| router_id(flag, c).unwrap();
        assert_eq!(id(None, &c), Ipv4Addr::new(192, 168, 100, 11));
        assert_eq!(id(Some("10.0.0.9"), &c), Ipv4Addr::new(10, 0, 0, 9));
        let generated = id(Some("generate"), &c);
        assert_eq!(id(Some("generate"), &c), generated, "stable");
        let mut other = c.clone();
        other.node = "node2".into();
        assert_ne!(id(Some("generate"), &other), generated, "per node");
        assert!(matches!(
            router_id(Some("nonsense"), &c),
            Err(Error::RouterId(s)) if s == "nonsense"
        ));
        let mut no_v4 = c.clone();
        no_v4.uplink.addresses.clear();
        assert!(matches!(router_id(None, &no_v4), Err(Error::NoRouterId)));
    }

    #[test]
    fn a_plan_change_tells_the_speaker_only_what_changed() {
        let options = BgpOptions::default();
        let first = plan(&config(""), &options).unwrap();
        let all = changes(None, &first);
        assert!(matches!(
            all[..],
            [Input::Node(_), Input::Neighbors(_), Input::Locals(_)]
        ));
        assert!(changes(Some(&first), &first).is_empty());
        // Another node joins: only the neighbours change.
        let more = plan(&config("  - {name: node3, ip: 192.168.100.13}\n"), &options).unwrap();
        let c = changes(Some(&first), &more);
        assert!(
            matches!(&c[..], [Input::Neighbors(n)] if n.len() == 2),
            "{c:?}"
        );
        // An ASN change restarts every session (Identity), and says so first.
        let moved = Plan {
            peering: Peering {
                asn: 64513,
                ..first.peering.clone()
            },
            ..first.clone()
        };
        assert!(matches!(
            changes(Some(&first), &moved)[..],
            [Input::Identity { asn: 64513, .. }]
        ));
    }
}
