//! The control plane: the BGP speaker (session, RIB, policy), the Kubernetes and static
//! file sources, the cluster model, the snapshot builder and kernel sync (rtnetlink).
//! The only crate that talks to BGP peers, Kubernetes and netlink.
//!
//! So far: the static file source ([`config`]), the snapshot builder for it
//! ([`model`]) and kernel sync for links and neighbours ([`kernel`]). BGP and
//! Kubernetes come with their issues.
#![forbid(unsafe_code)]

pub mod bgp;
pub mod config;
pub mod kernel;
pub mod model;
