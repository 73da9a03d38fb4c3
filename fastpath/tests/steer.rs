//! The XDP steering program itself, run on crafted frames with `BPF_PROG_RUN` (root:
//! it attaches to a veth in a namespace the test makes and deletes). With no socket
//! bound, a frame for the fastpath falls back to the kernel, so the verdict is read
//! from the program's counters.

use fastpath::steer::{SteerMode, Steering};
use std::net::IpAddr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::Command;

const NODE4: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
const NODE_PORT: u16 = 30053;

fn ip(args: &[&str]) {
    let s = Command::new("ip").args(args).status().expect("running ip");
    assert!(s.success(), "ip {}", args.join(" "));
}

/// A namespace, deleted when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// UDP from port 4000 to `dport`, 16 bytes of it in this fragment.
fn udp(dport: u16) -> Vec<u8> {
    let mut u = vec![0u8; 16];
    u[0..2].copy_from_slice(&4000u16.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&1000u16.to_be_bytes());
    u
}

/// An IPv4 UDP frame; `frag`: the flags and offset field (0x2000: more fragments).
fn v4(ident: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&(20 + payload.len() as u16).to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = 17;
    h[12..16].copy_from_slice(&CLIENT4.octets());
    h[16..20].copy_from_slice(&NODE4.octets());
    f.extend_from_slice(&h);
    f.extend_from_slice(payload);
    f
}

/// An IPv6 UDP frame, with a Fragment header (`ident`, offset field: offset << 3 |
/// M) when `frag` is given.
fn v6(frag: Option<(u32, u16)>, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let mut body = Vec::new();
    let next = match frag {
        Some((ident, off)) => {
            body.extend_from_slice(&[17, 0]);
            body.extend_from_slice(&off.to_be_bytes());
            body.extend_from_slice(&ident.to_be_bytes());
            44
        }
        None => 17,
    };
    body.extend_from_slice(payload);
    let mut h = [0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&CLIENT6.octets());
    h[24..40].copy_from_slice(&NODE6.octets());
    f.extend_from_slice(&h);
    f.extend_from_slice(&body);
    f
}

/// Where the program sends `frame`: "fastpath" or "kernel".
fn verdict(s: &Steering, frame: &[u8]) -> &'static str {
    let before = s.stats().expect("stats");
    s.run_frame(frame).expect("BPF_PROG_RUN");
    let after = s.stats().expect("stats");
    match (
        after.redirected - before.redirected,
        after.passed - before.passed,
    ) {
        (1, 0) => "fastpath",
        (0, 1) => "kernel",
        other => panic!("counters moved by {other:?}"),
    }
}

#[test]
fn fragments_to_the_node_follow_their_first_fragment() {
    let ns = Netns(format!("xrst-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&[
        "-n", &ns.0, "link", "add", "st0", "type", "veth", "peer", "name", "st1",
    ]);
    ip(&["-n", &ns.0, "link", "set", "st0", "up"]);
    ip(&["-n", &ns.0, "link", "set", "st1", "up"]);
    let name = ns.0.clone();
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{name}")).expect("the namespace");
        // SAFETY: setns reads the descriptor, which `f` keeps open for the call; it
        // moves this thread only, which ends with the test.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let mut s = Steering::attach("st0", SteerMode::Cluster).expect("attaching");
        s.set_node(
            &[IpAddr::V4(NODE4), IpAddr::V6(NODE6)],
            &[(17, NODE_PORT)],
            (61000, 65535),
        )
        .expect("the node's addresses");
        let later = [0u8; 16];

        // IPv4. Not fragmented: by its port.
        assert_eq!(verdict(&s, &v4(1, 0, &udp(NODE_PORT))), "fastpath");
        assert_eq!(verdict(&s, &v4(2, 0, &udp(22))), "kernel");
        // A NodePort datagram in fragments: the later ones follow the first.
        assert_eq!(
            verdict(&s, &v4(0x4242, 0x2000, &udp(NODE_PORT))),
            "fastpath"
        );
        assert_eq!(verdict(&s, &v4(0x4242, 0x2002, &later)), "fastpath");
        assert_eq!(verdict(&s, &v4(0x4242, 0x0004, &later)), "fastpath");
        // Another datagram's later fragment (or one whose first has not come):
        // the kernel's.
        assert_eq!(verdict(&s, &v4(0x4343, 0x0002, &later)), "kernel");
        // The kernel's datagram in fragments stays with the kernel.
        assert_eq!(verdict(&s, &v4(0x5000, 0x2000, &udp(22))), "kernel");
        assert_eq!(verdict(&s, &v4(0x5000, 0x0002, &later)), "kernel");
        // A reply to an SNATed flow in fragments (destination port in the range).
        let mut reply = udp(62000);
        reply[0..2].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(verdict(&s, &v4(0x6000, 0x2000, &reply)), "fastpath");
        assert_eq!(verdict(&s, &v4(0x6000, 0x0002, &later)), "fastpath");
        // The same IP ID again, for a datagram the kernel takes: its later fragments
        // stay with the kernel too (the first fragment forgot the old datagram).
        assert_eq!(verdict(&s, &v4(0x4242, 0x2000, &udp(22))), "kernel");
        assert_eq!(verdict(&s, &v4(0x4242, 0x0002, &later)), "kernel");

        // IPv6, the same through a Fragment header.
        assert_eq!(verdict(&s, &v6(None, &udp(NODE_PORT))), "fastpath");
        assert_eq!(verdict(&s, &v6(None, &udp(22))), "kernel");
        assert_eq!(
            verdict(&s, &v6(Some((7, 0x0001)), &udp(NODE_PORT))),
            "fastpath"
        );
        assert_eq!(verdict(&s, &v6(Some((7, 0x0010)), &later)), "fastpath");
        assert_eq!(verdict(&s, &v6(Some((8, 0x0010)), &later)), "kernel");
        assert_eq!(verdict(&s, &v6(Some((9, 0x0001)), &udp(22))), "kernel");
        assert_eq!(verdict(&s, &v6(Some((9, 0x0010)), &later)), "kernel");
        assert_eq!(verdict(&s, &v6(Some((7, 0x0001)), &udp(22))), "kernel");
        assert_eq!(verdict(&s, &v6(Some((7, 0x0010)), &later)), "kernel");
        // A fragment header cut short: the kernel's.
        let mut short = v6(Some((10, 0x0001)), &[]);
        short.truncate(14 + 40 + 4);
        assert_eq!(verdict(&s, &short), "kernel");
    })
    .join()
    .expect("the steering checks");
}
