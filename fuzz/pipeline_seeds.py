#!/usr/bin/env python3
"""Writes fuzz/seeds/pipeline/svc-*: frames that reach the service stage of the
pipeline fuzz target's node (fuzz_targets/pipeline.rs: its CONFIG and its populated
conntrack), each with the input port as its first byte. Run from fuzz/."""
import os
import socket
import struct

UPLINK, HOST, VP1, VP2 = 0, 1, 2, 3
LINK = {p: bytes([2, 0, 0, 0, 0, p]) for p in range(5)}
POD_MAC = {VP1: bytes.fromhex("0a580af40102"), VP2: bytes.fromhex("0a580af40103")}
ROUTER = bytes([2, 1, 1, 1, 1, 1])


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(port, ethertype, payload):
    src = ROUTER if port == UPLINK else POD_MAC.get(port, bytes(6))
    return bytes([port]) + LINK[port] + src + struct.pack("!H", ethertype) + payload


def ipv4(src, dst, proto, l4, ident=0x1234, frag=0x4000, ttl=64):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + l4


def pseudo4(src, dst, proto, n):
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, n)


def tcp(src, dst, sport, dport, flags, pseudo=pseudo4):
    t = struct.pack("!HHIIBBHHH", sport, dport, 1000, 5000 if flags & 0x10 else 0,
                    5 << 4, flags, 64240, 0, 0)
    c = csum(pseudo(src, dst, 6, len(t)) + t)
    return t[:16] + struct.pack("!H", c) + t[18:]


def udp(src, dst, sport, dport, data, pseudo=pseudo4):
    u = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    c = csum(pseudo(src, dst, 17, len(u)) + u) or 0xFFFF
    return u[:6] + struct.pack("!H", c) + u[8:]


def tcp4(port, src, dst, sport, dport, flags):
    return eth(port, 0x0800, ipv4(src, dst, 6, tcp(src, dst, sport, dport, flags)))


def udp4(port, src, dst, sport, dport, data=b"query"):
    return eth(port, 0x0800, ipv4(src, dst, 17, udp(src, dst, sport, dport, data)))


def pseudo6(src, dst, proto, n):
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!IxxxB", n, proto))


def ipv6(src, dst, nh, l4):
    return (struct.pack("!IHBB", 6 << 28, len(l4), nh, 64) + socket.inet_pton(socket.AF_INET6, src)
            + socket.inet_pton(socket.AF_INET6, dst) + l4)


SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
seeds = {
    # A pod's new connection to the ClusterIP, and the tracked flow's next segments.
    "svc-clusterip-syn": tcp4(VP2, "10.244.1.3", "10.96.0.10", 41000, 80, SYN),
    "svc-tracked-ack": tcp4(VP2, "10.244.1.3", "10.96.0.10", 40000, 80, ACK),
    "svc-tracked-fin": tcp4(VP2, "10.244.1.3", "10.96.0.10", 40000, 80, FIN | ACK),
    "svc-tracked-reply": tcp4(VP1, "10.244.1.2", "10.244.1.3", 8080, 40000, ACK),
    "svc-tracked-rst": tcp4(VP2, "10.244.1.3", "10.96.0.10", 40000, 80, RST),
    # The UDP flow whose backend is gone, and a new one through the ClusterIP.
    "svc-udp-gone": udp4(VP2, "10.244.1.3", "10.96.0.10", 5353, 53),
    "svc-udp-new": udp4(VP2, "10.244.1.3", "10.96.0.10", 5400, 53),
    # No endpoints: rejected.
    "svc-empty-syn": tcp4(VP2, "10.244.1.3", "10.96.0.12", 41001, 80, SYN),
    "svc-empty-udp": udp4(VP2, "10.244.1.3", "10.96.0.12", 41002, 80),
    # From outside: the NodePort's tracked SNAT flow, a new one, the Local policy's,
    # the LoadBalancer IP from inside and outside its source ranges, an ExternalIP.
    "svc-nodeport-tracked": tcp4(UPLINK, "192.168.200.9", "192.168.100.11", 33000, 30080, ACK),
    "svc-nodeport-syn": tcp4(UPLINK, "192.168.200.9", "192.168.100.11", 33001, 30080, SYN),
    "svc-nodeport-udp": udp4(UPLINK, "192.168.200.9", "192.168.100.11", 33002, 30053),
    "svc-nodeport-local": tcp4(UPLINK, "192.168.200.9", "192.168.100.11", 33003, 30081, SYN),
    "svc-lb-allowed": tcp4(UPLINK, "192.168.200.9", "198.51.100.20", 33004, 80, SYN),
    "svc-lb-refused": tcp4(UPLINK, "192.168.200.200", "198.51.100.20", 33005, 80, SYN),
    "svc-externalip": tcp4(UPLINK, "192.168.200.9", "198.51.100.10", 33006, 80, SYN),
    # The backend's answer to the SNATed flow (to the node's SNAT port).
    "svc-snat-reply": tcp4(VP1, "10.244.1.2", "192.168.100.11", 8080, 61001, ACK),
    # Hairpin: a backend reaching its own service.
    "svc-hairpin": tcp4(VP1, "10.244.1.2", "10.96.0.10", 41003, 80, SYN),
    # Echo through the ClusterIP.
    "svc-echo": eth(VP2, 0x0800, ipv4("10.244.1.3", "10.96.0.10", 1,
                   (lambda m: m[:2] + struct.pack("!H", csum(m)) + m[4:])(
                       struct.pack("!BBHHH", 8, 0, 0, 0x77, 1) + b"ping"))),
    # Pod egress (SNAT to the node) to outside the cluster.
    "svc-egress": tcp4(VP2, "10.244.1.3", "192.168.200.9", 41004, 443, SYN),
}
# A first fragment of a NodePort datagram, and a later one.
whole = udp("192.168.200.9", "192.168.100.11", 33007, 30053, bytes(range(256)) * 4)
seeds["svc-frag-first"] = eth(UPLINK, 0x0800, ipv4("192.168.200.9", "192.168.100.11", 17,
                                                   whole[:512], ident=0x2468, frag=0x2000))
seeds["svc-frag-later"] = eth(UPLINK, 0x0800, ipv4("192.168.200.9", "192.168.100.11", 17,
                                                   whole[512:], ident=0x2468, frag=512 // 8))
# A router's "fragmentation needed" about the NodePort flow's answer to the client.
quoted = ipv4("192.168.100.11", "192.168.200.9", 6,
              tcp("192.168.100.11", "192.168.200.9", 30080, 33000, ACK))[:28]
icmp = struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + quoted
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
seeds["svc-icmp-frag-needed"] = eth(UPLINK, 0x0800, ipv4("192.168.200.1", "192.168.100.11", 1, icmp))
# A backend's port unreachable about the tracked UDP flow's datagram.
quoted = ipv4("10.244.1.3", "10.244.1.2", 17, udp("10.244.1.3", "10.244.1.2", 5353, 53, b"q"))[:28]
icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
seeds["svc-icmp-port-unreachable"] = eth(VP1, 0x0800, ipv4("10.244.1.2", "10.244.1.3", 1, icmp))
# IPv6: a pod's connection to the ClusterIP, and the tracked IPv6 flow.
src6, vip6 = "fd00:1::2", "fd00:96::10"
seeds["svc-ipv6-syn"] = eth(VP1, 0x86DD, ipv6(src6, vip6, 6, tcp(src6, vip6, 41005, 80, SYN, pseudo6)))
seeds["svc-ipv6-tracked"] = eth(VP1, 0x86DD, ipv6(src6, vip6, 6, tcp(src6, vip6, 40000, 80, ACK, pseudo6)))

# The routing paths around the service stage: pod to pod, an ARP request for the
# gateway, a VLAN-tagged frame, a TTL about to expire, IPv6 to outside.
seeds["route-pod-to-pod"] = udp4(VP1, "10.244.1.2", "10.244.1.3", 4000, 5001)
seeds["route-ttl-1"] = eth(VP1, 0x0800, ipv4("10.244.1.2", "192.168.200.9", 17,
                                            udp("10.244.1.2", "192.168.200.9", 4000, 5001, b"x"), ttl=1))
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + POD_MAC[VP1] + socket.inet_aton("10.244.1.2") \
    + bytes(6) + socket.inet_aton("10.244.1.1")
seeds["route-arp-request"] = bytes([VP1]) + b"\xff" * 6 + POD_MAC[VP1] + b"\x08\x06" + arp
tagged = udp4(VP1, "10.244.1.2", "10.244.1.3", 4000, 5001)
seeds["route-vlan-tagged"] = tagged[:13] + b"\x81\x00\x00\x64" + tagged[13:]
seeds["route-ipv6-out"] = eth(VP1, 0x86DD, ipv6(src6, "2001:db8::9", 17,
                                               udp(src6, "2001:db8::9", 4000, 53, b"q", pseudo6)))

os.makedirs("seeds/pipeline", exist_ok=True)
for name, frame in seeds.items():
    with open(os.path.join("seeds/pipeline", name), "wb") as f:
        f.write(frame)
print(len(seeds), "seeds")
