//! The control plane: the BGP speaker (session, RIB, policy), the Kubernetes and static
//! file sources, the cluster model, the snapshot builder and kernel sync (rtnetlink).
//! The only crate that talks to BGP peers, Kubernetes and netlink.
//!
//! Nothing is here yet: the fastpath and BGP issues fill it.
#![forbid(unsafe_code)]
