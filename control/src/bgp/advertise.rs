//! What a node originates, by kube-router's rules: its pod CIDRs (to the other nodes,
//! and to external peers with `--advertise-pod-cidr`) and its services' ClusterIPs,
//! ExternalIPs and LoadBalancer IPs (to external peers, per the `--advertise-*`
//! flags, which a service's `kube-router.io/service.advertise.*` annotation
//! overrides either way). A service whose traffic policy for an address kind is
//! Local, or that is annotated `kube-router.io/service.local: "true"`, is advertised
//! only from nodes with a local endpoint, so the outside router spreads its traffic
//! by ECMP over just the nodes that can serve it.

use super::annotations::{AnnotationError, PREFIX};
use super::peering::BgpOptions;
use super::speaker::Local;
use crate::config::{Cidr, Service, TrafficPolicy};
use lpm::{Prefix4, Prefix6};
use std::net::IpAddr;

fn host(ip: IpAddr) -> Cidr {
    match ip {
        IpAddr::V4(a) => Cidr::V4(Prefix4::new_masked(u32::from(a), 32)),
        IpAddr::V6(a) => Cidr::V6(Prefix6::new_masked(u128::from(a), 128)),
    }
}

/// Reads a boolean annotation as Go's `strconv.ParseBool` does.
fn flag(s: &Service, name: &str, errors: &mut Vec<AnnotationError>) -> Option<bool> {
    let v = s.annotations.get(&format!("{PREFIX}{name}"))?;
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        other => {
            errors.push(AnnotationError {
                node: format!("service {}/{}", s.namespace, s.name),
                annotation: name.to_string(),
                peer: None,
                message: format!("`{other}` is not true or false; the flag's default applies"),
            });
            None
        }
    }
}

/// This node's routes to originate. `pod_cidrs` are this node's.
pub fn locals(
    pod_cidrs: &[Cidr],
    services: &[Service],
    options: &BgpOptions,
) -> (Vec<Local>, Vec<AnnotationError>) {
    let mut out: Vec<Local> = pod_cidrs
        .iter()
        .map(|&prefix| Local {
            prefix,
            to_cluster: true,
            to_external: options.advertise_pod_cidr,
        })
        .collect();
    let mut errors = Vec::new();
    for s in services {
        let local_annotation = flag(s, "service.local", &mut errors).unwrap_or(false);
        // A local endpoint that can take traffic: ready, or serving while terminating.
        let has_local = s.endpoints.iter().any(|e| {
            let (ready, serving, _) = e.conditions();
            (ready || serving) && pod_cidrs.iter().any(|p| p.contains(e.ip()))
        });
        let kinds = [
            (
                &s.cluster_ips,
                "service.advertise.clusterip",
                options.advertise_cluster_ip,
                s.internal_traffic_policy,
            ),
            (
                &s.external_ips,
                "service.advertise.externalip",
                options.advertise_external_ip,
                s.external_traffic_policy,
            ),
            (
                &s.load_balancer_ips,
                "service.advertise.loadbalancerip",
                options.advertise_loadbalancer_ip,
                s.external_traffic_policy,
            ),
        ];
        for (ips, annotation, default, policy) in kinds {
            let advertise = flag(s, annotation, &mut errors).unwrap_or(default);
            let local_only = local_annotation || policy == TrafficPolicy::Local;
            if !advertise || (local_only && !has_local) {
                continue;
            }
            for &ip in ips {
                let prefix = host(ip);
                if out.iter().any(|l| l.prefix == prefix) {
                    continue;
                }
                out.push(Local {
                    prefix,
                    to_cluster: false,
                    to_external: true,
                });
            }
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointConfig;
    use std::collections::BTreeMap;

    fn p(s: &str) -> Cidr {
        let (a, l) = s.split_once('/').unwrap();
        host(a.parse().unwrap()).with_len(l.parse().unwrap())
    }

    trait WithLen {
        fn with_len(self, l: u8) -> Cidr;
    }
    impl WithLen for Cidr {
        fn with_len(self, l: u8) -> Cidr {
            match self {
                Cidr::V4(x) => Cidr::V4(Prefix4::new_masked(x.addr(), l)),
                Cidr::V6(x) => Cidr::V6(Prefix6::new_masked(x.addr(), l)),
            }
        }
    }

    fn svc(ann: &[(&str, &str)], policy: TrafficPolicy, endpoints: &[&str]) -> Service {
        Service {
            name: "web".into(),
            namespace: "default".into(),
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            external_ips: vec!["198.51.100.10".parse().unwrap()],
            load_balancer_ips: vec!["203.0.113.10".parse().unwrap()],
            external_traffic_policy: policy,
            internal_traffic_policy: TrafficPolicy::Cluster,
            endpoints: endpoints
                .iter()
                .map(|e| EndpointConfig::Ip(e.parse().unwrap()))
                .collect(),
            ports: Vec::new(),
            session_affinity: Default::default(),
            session_affinity_timeout: None,
            load_balancer_source_ranges: Vec::new(),
            health_check_node_port: None,
            annotations: ann
                .iter()
                .map(|(k, v)| (format!("kube-router.io/{k}"), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn external(l: &[Local]) -> Vec<String> {
        l.iter()
            .filter(|l| l.to_external)
            .map(|l| l.prefix.to_string())
            .collect()
    }

    #[test]
    fn pod_cidrs_go_to_the_cluster_and_to_external_peers_by_flag() {
        let pods = [p("10.244.1.0/24")];
        let (l, _) = locals(&pods, &[], &BgpOptions::default());
        assert_eq!(
            l,
            vec![Local {
                prefix: pods[0],
                to_cluster: true,
                to_external: true
            }]
        );
        let o = BgpOptions {
            advertise_pod_cidr: false,
            ..BgpOptions::default()
        };
        assert!(external(&locals(&pods, &[], &o).0).is_empty());
    }

    #[test]
    fn service_addresses_follow_flags_and_annotations() {
        let pods = [p("10.244.1.0/24")];
        let o = BgpOptions {
            advertise_pod_cidr: false,
            ..BgpOptions::default()
        };
        let s = svc(&[], TrafficPolicy::Cluster, &[]);
        assert!(external(&locals(&pods, std::slice::from_ref(&s), &o).0).is_empty());
        let all = BgpOptions {
            advertise_cluster_ip: true,
            advertise_external_ip: true,
            advertise_loadbalancer_ip: true,
            ..o.clone()
        };
        assert_eq!(
            external(&locals(&pods, std::slice::from_ref(&s), &all).0),
            ["10.96.0.10/32", "198.51.100.10/32", "203.0.113.10/32"]
        );
        let off = svc(
            &[("service.advertise.externalip", "false")],
            TrafficPolicy::Cluster,
            &[],
        );
        assert_eq!(
            external(&locals(&pods, &[off], &all).0),
            ["10.96.0.10/32", "203.0.113.10/32"]
        );
        let on = svc(
            &[("service.advertise.clusterip", "true")],
            TrafficPolicy::Cluster,
            &[],
        );
        assert_eq!(external(&locals(&pods, &[on], &o).0), ["10.96.0.10/32"]);
    }

    #[test]
    fn local_policy_needs_a_local_endpoint() {
        let pods = [p("10.244.1.0/24")];
        let o = BgpOptions {
            advertise_pod_cidr: false,
            advertise_external_ip: true,
            advertise_cluster_ip: true,
            ..BgpOptions::default()
        };
        let remote_only = svc(&[], TrafficPolicy::Local, &["10.244.2.5"]);
        assert_eq!(
            external(&locals(&pods, &[remote_only], &o).0),
            ["10.96.0.10/32"],
            "the ClusterIP follows the internal policy (Cluster)"
        );
        let here = svc(&[], TrafficPolicy::Local, &["10.244.1.5"]);
        assert_eq!(
            external(&locals(&pods, &[here], &o).0),
            ["10.96.0.10/32", "198.51.100.10/32"]
        );
        let annotated = svc(
            &[("service.local", "true")],
            TrafficPolicy::Cluster,
            &["10.244.2.5"],
        );
        assert!(external(&locals(&pods, &[annotated], &o).0).is_empty());
    }

    #[test]
    fn a_bad_boolean_is_reported_with_the_service() {
        let s = svc(&[("service.local", "yes")], TrafficPolicy::Cluster, &[]);
        let (_, e) = locals(&[], &[s], &BgpOptions::default());
        assert_eq!(e.len(), 1);
        assert!(e[0].to_string().contains("service default/web"), "{}", e[0]);
    }
}
