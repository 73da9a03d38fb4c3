//! The XDP steering program on one port: loads `xdp/steer.c` (compiled by `build.rs`),
//! attaches it through a BPF link, and keeps its maps: which AF_XDP socket serves each
//! queue, and, on the uplink, which destinations the fastpath takes.
//!
//! Native (driver) mode is tried first; if the device refuses it, generic (skb) mode
//! is used and the reason is logged and kept ([`Steering::fallback`]). Dropping a
//! [`Steering`] detaches the program.

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use lpm::{Prefix4, Prefix6};
use std::collections::HashSet;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// How often, and how far apart, attaching is tried again (2 s in all).
const ATTACH_TRIES: u32 = 20;
const ATTACH_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.o"));

/// What the program sends to the fastpath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerMode {
    /// Every frame (pod ports, the host port).
    All = 0,
    /// IPv4/IPv6 frames to the cluster destinations set with
    /// [`Steering::set_destinations`]; everything else passes to the kernel (the uplink).
    Cluster = 1,
}

/// A failure to load, attach or update the steering program, with the port it was for.
#[derive(Debug, thiserror::Error)]
#[error("XDP steering program on {interface}: {what}: {source}")]
pub struct SteerError {
    interface: String,
    what: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// The steering program attached to one port.
pub struct Steering {
    ebpf: Ebpf,
    interface: String,
    native: bool,
    fallback: Option<String>,
    dst4: HashSet<Prefix4>,
    dst6: HashSet<Prefix6>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("interface", &self.interface)
            .field("native", &self.native)
            .finish()
    }
}

impl Steering {
    /// Loads the program and attaches it to `interface`.
    pub fn attach(interface: &str, mode: SteerMode) -> Result<Steering, SteerError> {
        let err = |what: &'static str| {
            move |e: Box<dyn std::error::Error + Send + Sync>| SteerError {
                interface: interface.to_string(),
                what,
                source: e,
            }
        };
        let mut ebpf = Ebpf::load(PROGRAM).map_err(|e| err("loading the object")(e.into()))?;
        {
            let map = ebpf
                .map_mut("mode")
                .ok_or_else(|| err("the object")("it has no `mode` map".into()))?;
            let mut modes: Array<&mut MapData, u32> =
                Array::try_from(map).map_err(|e| err("the `mode` map")(e.into()))?;
            modes
                .set(0, mode as u32, 0)
                .map_err(|e| err("setting the mode")(e.into()))?;
        }
        let program: &mut Xdp = ebpf
            .program_mut("xroute_steer")
            .ok_or_else(|| err("the object")("it has no `xroute_steer` program".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| err("the program")(e.into()))?;
        program
            .load()
            .map_err(|e| err("loading into the kernel (are you root?)")(e.into()))?;
        // The kernel detaches a dead process's XDP link only after the process is
        // gone (the link's last reference is dropped from a work queue): an agent
        // restarted at once can find the previous run's program still attached for a
        // moment. Both modes are tried again for a bounded time before giving up.
        let mut tries = 0;
        let (native, fallback) = loop {
            match program.attach(interface, XdpMode::Driver) {
                Ok(_) => break (true, None),
                Err(native_error) => {
                    let reason = format!("native XDP refused: {native_error}");
                    match program.attach(interface, XdpMode::Skb) {
                        Ok(_) => {
                            tracing::warn!(interface, %reason, "XDP steering runs in generic mode");
                            break (false, Some(reason));
                        }
                        Err(e) if tries >= ATTACH_TRIES => {
                            return Err(err("attaching (native and generic mode both failed)")(
                                e.into(),
                            ))
                        }
                        Err(_) => {
                            tries += 1;
                            std::thread::sleep(ATTACH_RETRY);
                        }
                    }
                }
            }
        };
        if tries > 0 {
            tracing::info!(
                interface,
                tries,
                "XDP steering attached after the previous program left"
            );
        }
        Ok(Steering {
            ebpf,
            interface: interface.to_string(),
            native,
            fallback,
            dst4: HashSet::new(),
            dst6: HashSet::new(),
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Whether the program runs in the driver (native XDP).
    pub fn native(&self) -> bool {
        self.native
    }

    /// Why native mode was refused, if it was.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Sends the frames the program steers on `queue` to the AF_XDP socket `socket`.
    pub fn bind(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), SteerError> {
        let iface = self.interface.clone();
        let map = self
            .ebpf
            .map_mut("xsks")
            .ok_or_else(|| fail(&iface, "the object", MissingMap("xsks")))?;
        let mut xsks = XskMap::try_from(map).map_err(|e| fail(&iface, "the `xsks` map", e))?;
        xsks.set(queue, socket.as_raw_fd(), 0)
            .map_err(|e| fail(&iface, "binding a socket to its queue", e))
    }

    /// Makes `v4` and `v6` the destinations the program steers to the fastpath (in
    /// [`SteerMode::Cluster`]): adds the new ones first, then removes the old, so a
    /// destination in both sets is never briefly missing.
    pub fn set_destinations(&mut self, v4: &[Prefix4], v6: &[Prefix6]) -> Result<(), SteerError> {
        let iface = self.interface.clone();
        let want4: HashSet<Prefix4> = v4.iter().copied().collect();
        let want6: HashSet<Prefix6> = v6.iter().copied().collect();
        {
            let map = self
                .ebpf
                .map_mut("dst4")
                .ok_or_else(|| fail(&iface, "the object", MissingMap("dst4")))?;
            let mut dst4: LpmTrie<&mut MapData, u32, u32> =
                LpmTrie::try_from(map).map_err(|e| fail(&iface, "the `dst4` map", e))?;
            for p in want4.difference(&self.dst4) {
                dst4.insert(&Key::new(u32::from(p.len()), p.addr().to_be()), 1, 0)
                    .map_err(|e| fail(&iface, "adding a destination", e))?;
            }
            for p in self.dst4.difference(&want4) {
                dst4.remove(&Key::new(u32::from(p.len()), p.addr().to_be()))
                    .map_err(|e| fail(&iface, "removing a destination", e))?;
            }
        }
        {
            let map = self
                .ebpf
                .map_mut("dst6")
                .ok_or_else(|| fail(&iface, "the object", MissingMap("dst6")))?;
            let mut dst6: LpmTrie<&mut MapData, [u8; 16], u32> =
                LpmTrie::try_from(map).map_err(|e| fail(&iface, "the `dst6` map", e))?;
            for p in want6.difference(&self.dst6) {
                dst6.insert(&Key::new(u32::from(p.len()), p.addr().to_be_bytes()), 1, 0)
                    .map_err(|e| fail(&iface, "adding a destination", e))?;
            }
            for p in self.dst6.difference(&want6) {
                dst6.remove(&Key::new(u32::from(p.len()), p.addr().to_be_bytes()))
                    .map_err(|e| fail(&iface, "removing a destination", e))?;
            }
        }
        self.dst4 = want4;
        self.dst6 = want6;
        Ok(())
    }

    /// Makes `addrs` the node's addresses on this port, with the NodePorts
    /// (`(IP protocol, port)`) and the SNAT port range the fastpath serves on them;
    /// the rest of their traffic stays the kernel's. Replaces what was set before.
    pub fn set_node(
        &mut self,
        addrs: &[IpAddr],
        node_ports: &[(u8, u16)],
        snat: (u16, u16),
    ) -> Result<(), SteerError> {
        let iface = self.interface.clone();
        {
            let m = self
                .ebpf
                .map_mut("node4")
                .ok_or_else(|| fail(&iface, "the object", MissingMap("node4")))?;
            let mut node4: HashMap<&mut MapData, u32, u32> =
                HashMap::try_from(m).map_err(|e| fail(&iface, "the `node4` map", e))?;
            let old: Vec<u32> = node4.keys().filter_map(Result::ok).collect();
            for k in old {
                let _ = node4.remove(&k);
            }
            for a in addrs {
                if let IpAddr::V4(a) = a {
                    node4
                        .insert(u32::from_ne_bytes(a.octets()), 1, 0)
                        .map_err(|e| fail(&iface, "adding a node address", e))?;
                }
            }
        }
        {
            let m = self
                .ebpf
                .map_mut("node6")
                .ok_or_else(|| fail(&iface, "the object", MissingMap("node6")))?;
            let mut node6: HashMap<&mut MapData, [u8; 20], u32> =
                HashMap::try_from(m).map_err(|e| fail(&iface, "the `node6` map", e))?;
            let old: Vec<[u8; 20]> = node6.keys().filter_map(Result::ok).collect();
            for k in old {
                let _ = node6.remove(&k);
            }
            for a in addrs {
                if let IpAddr::V6(a) = a {
                    let mut k = [0u8; 20];
                    k[..4].copy_from_slice(&128u32.to_ne_bytes());
                    k[4..].copy_from_slice(&a.octets());
                    node6
                        .insert(k, 1, 0)
                        .map_err(|e| fail(&iface, "adding a node address", e))?;
                }
            }
        }
        self.set_node_ports(node_ports)?;
        let m = self
            .ebpf
            .map_mut("snat")
            .ok_or_else(|| fail(&iface, "the object", MissingMap("snat")))?;
        let mut range: Array<&mut MapData, [u32; 2]> =
            Array::try_from(m).map_err(|e| fail(&iface, "the `snat` map", e))?;
        range
            .set(0, [u32::from(snat.0), u32::from(snat.1)], 0)
            .map_err(|e| fail(&iface, "setting the SNAT port range", e))
    }

    /// Makes `node_ports` (`(IP protocol, port)`) the NodePorts steered on the node's
    /// addresses: those no longer wanted are removed, the new ones added, the others
    /// left in place (no moment where a kept one passes to the kernel).
    pub fn set_node_ports(&mut self, node_ports: &[(u8, u16)]) -> Result<(), SteerError> {
        let iface = self.interface.clone();
        let m = self
            .ebpf
            .map_mut("node_ports")
            .ok_or_else(|| fail(&iface, "the object", MissingMap("node_ports")))?;
        let mut ports: HashMap<&mut MapData, u32, u32> =
            HashMap::try_from(m).map_err(|e| fail(&iface, "the `node_ports` map", e))?;
        let want: HashSet<u32> = node_ports
            .iter()
            .map(|&(proto, port)| (u32::from(proto) << 16) | u32::from(port))
            .collect();
        let old: HashSet<u32> = ports.keys().filter_map(Result::ok).collect();
        for k in old.difference(&want) {
            ports
                .remove(k)
                .map_err(|e| fail(&iface, "removing a NodePort", e))?;
        }
        for k in want.difference(&old) {
            ports
                .insert(*k, 1, 0)
                .map_err(|e| fail(&iface, "adding a NodePort", e))?;
        }
        Ok(())
    }

    /// Runs the program once on `frame` as if this port had received it
    /// (`BPF_PROG_RUN`, no device involved), for tests and diagnosis; its decision
    /// shows in [`Steering::stats`] (with no socket bound, a frame for the fastpath
    /// falls back to the kernel), and the program's return value is returned.
    pub fn run_frame(&self, frame: &[u8]) -> Result<u32, SteerError> {
        use aya::programs::{TestRun, TestRunOptions};
        let iface = self.interface.clone();
        let p: &Xdp = self
            .ebpf
            .program("xroute_steer")
            .ok_or_else(|| fail(&iface, "the object", MissingProgram))?
            .try_into()
            .map_err(|e| fail(&iface, "the program", e))?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        p.test_run(opts)
            .map(|r| r.return_value)
            .map_err(|e| fail(&iface, "running the program on a frame", e))
    }

    /// How many frames the program sent to the fastpath and passed to the kernel, over
    /// all CPUs.
    pub fn stats(&self) -> Result<SteerStats, SteerError> {
        let iface = self.interface.clone();
        let map = self
            .ebpf
            .map("stats")
            .ok_or_else(|| fail(&iface, "the object", MissingMap("stats")))?;
        let stats: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| fail(&iface, "the `stats` map", e))?;
        let sum = |i: u32| -> Result<u64, SteerError> {
            let v = stats
                .get(&i, 0)
                .map_err(|e| fail(&iface, "reading statistics", e))?;
            Ok(v.iter().sum())
        };
        Ok(SteerStats {
            redirected: sum(0)?,
            passed: sum(1)?,
        })
    }
}

/// What the steering program decided, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Sent towards the fastpath's socket (a frame with no socket on its queue falls
    /// back to the kernel and is still counted here).
    pub redirected: u64,
    /// Passed to the kernel.
    pub passed: u64,
}

fn fail(
    interface: &str,
    what: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> SteerError {
    SteerError {
        interface: interface.to_string(),
        what,
        source: Box::new(e),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the object has no `{0}` map")]
struct MissingMap(&'static str);

#[derive(Debug, thiserror::Error)]
#[error("the object has no `xroute_steer` program")]
struct MissingProgram;
