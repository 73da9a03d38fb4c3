//! Kernel sync: what the fastpath needs from the node's own stack.
//!
//! - Links: an interface's MAC and MTU (from sysfs, which every kernel with a netdev
//!   has, so this works before the netlink socket is up).
//! - Neighbours: the fastpath does not ARP on the uplink; the kernel does. For every
//!   next hop on the uplink the agent asks the kernel for a *managed* neighbour entry
//!   (`NTF_EXT_MANAGED`, Linux 5.16+), which the kernel resolves and keeps resolved
//!   without traffic, and reads the resolved MACs back by a netlink dump. Until a MAC
//!   is known, the fastpath punts that next hop's packets to the kernel, which resolves
//!   and forwards them itself.

use crate::model::{Link, Neighbours};
use fastpath::wire::ethernet::Mac;
use futures::TryStreamExt;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourState,
};
use rtnetlink::Handle;
use std::net::IpAddr;

/// Reads an interface's MAC and MTU.
pub fn read_link(name: &str) -> Result<Link, String> {
    let dir = format!("/sys/class/net/{name}");
    let read = |what: &str| {
        std::fs::read_to_string(format!("{dir}/{what}"))
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("interface {name}: cannot read {dir}/{what}: {e} (does it exist in this network namespace?)"))
    };
    let mac = crate::config::parse_mac(&read("address")?)
        .ok_or_else(|| format!("interface {name} has no Ethernet address"))?;
    let mtu = read("mtu")?
        .parse::<u32>()
        .map_err(|e| format!("interface {name}: unreadable MTU: {e}"))?;
    Ok(Link {
        name: name.to_string(),
        mac,
        mtu: mtu.min(u32::from(u16::MAX)) as u16,
    })
}

/// An interface's index.
pub fn ifindex(name: &str) -> Result<u32, String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("interface {name} not found in this network namespace"))
}

/// Opens a netlink connection on the current tokio runtime.
pub fn connect() -> Result<Handle, String> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Asks the kernel to resolve `addr` on interface `ifindex` and keep it resolved.
/// An entry that already exists is left as it is.
pub async fn ensure_managed(handle: &Handle, ifindex: u32, addr: IpAddr) -> Result<(), String> {
    let mut req = handle
        .neighbours()
        .add(ifindex, addr)
        .state(NeighbourState::None);
    req.message_mut()
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_eexist() => Ok(()),
        Err(e) => Err(format!("adding a managed neighbour entry for {addr}: {e}")),
    }
}

fn libc_eexist() -> i32 {
    17 // EEXIST
}

/// The resolved neighbours on interface `ifindex` (entries with a MAC that is not
/// failed or incomplete).
pub async fn neighbours(handle: &Handle, ifindex: u32) -> Result<Neighbours, String> {
    let mut dump = handle.neighbours().get().execute();
    let mut out = Neighbours::new();
    while let Some(msg) = dump
        .try_next()
        .await
        .map_err(|e| format!("dumping neighbours: {e}"))?
    {
        if msg.header.ifindex != ifindex
            || matches!(
                msg.header.state,
                NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
            )
        {
            continue;
        }
        let mut addr = None;
        let mut mac: Option<Mac> = None;
        for a in msg.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    addr = Some(IpAddr::V4(v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    addr = Some(IpAddr::V6(v6))
                }
                NeighbourAttribute::LinkLayerAddress(l) => mac = l.as_slice().try_into().ok(),
                _ => {}
            }
        }
        if let (Some(addr), Some(mac)) = (addr, mac) {
            out.insert(addr, mac);
        }
    }
    Ok(out)
}
