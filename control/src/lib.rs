//! The control plane: the BGP speaker (session, RIB, policy), the Kubernetes and static
//! file sources, the cluster model, the snapshot builder and kernel sync (rtnetlink).
//! The only crate that talks to BGP peers, Kubernetes and netlink.
//!
//! So far: the control loop ([`engine`]), the static file source ([`config`]), the
//! snapshot builder for it ([`model`]), kernel sync for links, neighbours and routes
//! ([`kernel`]), the BGP speaker ([`bgp`]) and the service proxy's model of the
//! configured services ([`services`]). Kubernetes comes with its issue.
//!
//! `unsafe` is denied everywhere but in [`bgp::socket`], which sets the TCP-MD5
//! socket option (no crate wraps it), and [`os`], which sets a thread's nice value and trims the heap.
#![deny(unsafe_code)]

pub mod bgp;
pub mod burst;
pub mod config;
pub mod engine;
pub mod kernel;
pub mod model;
pub mod os;
pub mod services;
