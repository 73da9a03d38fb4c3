#!/usr/bin/env python3
"""Records what BIRD sends an iBGP peer, for the speaker's replay tests.

Run as root from this folder: `python3 record.py > bird-ibgp.messages`. It builds two
network namespaces joined by a veth (nothing in the root namespace), starts BIRD in
one with the routes below, plays a minimal BGP speaker (AS 64512, 192.0.2.1) in the
other, and prints every message BIRD sends as `<step> <hex>` lines:

  table      the initial table, up to BIRD's End-of-RIB
  uncover    after `disable cover`: the covering route 198.51.100.0/24 withdrawn
  recover    after `enable cover`: announced again

then deletes both namespaces.
"""
import os, socket, struct, subprocess, sys, tempfile, time

NS_US, NS_BIRD = "xrrec-us", "xrrec-bird"
CONF = """
router id 192.0.2.2;
protocol device { }
protocol static plain { ipv4; route 172.16.1.0/24 blackhole; }
protocol static tagged { ipv4;
  route 172.16.2.0/24 blackhole {
    bgp_community.add((64512, 100));
    bgp_ext_community.add((rt, 64512, 7));
    bgp_large_community.add((64512, 1, 2));
  };
}
protocol static far { ipv4; route 172.16.3.0/24 blackhole { bgp_next_hop = 198.51.100.1; }; }
protocol static cover { ipv4; route 198.51.100.0/24 blackhole; }
protocol bgp node {
  local 192.0.2.2 as 64512; neighbor 192.0.2.1 as 64512; direct;
  hold time 90; connect retry time 1;
  ipv4 { import none; export all; };
}
"""


def sh(*args):
    subprocess.run(args, check=True)


def read(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b


def message(s):
    head = read(s, 19)
    length = struct.unpack("!H", head[16:18])[0]
    return head + read(s, length - 19)


def send(s, kind, body):
    s.sendall(b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body)


def capture(s, step, until):
    """Prints messages until `until(msg)` says so (UPDATEs, NOTIFICATIONs)."""
    s.settimeout(10)
    while True:
        m = message(s)
        if m[18] == 4:  # KEEPALIVE
            send(s, 4, b"")
            continue
        print(step, m.hex())
        if until(m):
            return


def main():
    tmp = tempfile.mkdtemp()
    conf = os.path.join(tmp, "bird.conf")
    with open(conf, "w") as f:
        f.write(CONF)
    for ns in (NS_US, NS_BIRD):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", NS_US, "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", NS_BIRD)
        sh("ip", "-n", NS_US, "addr", "add", "192.0.2.1/24", "dev", "a0")
        sh("ip", "-n", NS_BIRD, "addr", "add", "192.0.2.2/24", "dev", "b0")
        for ns, dev in ((NS_US, "a0"), (NS_BIRD, "b0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        ctl = os.path.join(tmp, "bird.ctl")
        sh("ip", "netns", "exec", NS_BIRD, "bird", "-c", conf, "-s", ctl, "-P", os.path.join(tmp, "pid"))
        birdc = lambda *a: sh("ip", "netns", "exec", NS_BIRD, "birdc", "-s", ctl, *a)
        # Our side of the session runs inside our namespace: this script again.
        sh("ip", "netns", "exec", NS_US, sys.executable, os.path.abspath(__file__), "speak", ctl)
    finally:
        for pid in subprocess.run(["ip", "netns", "pids", NS_BIRD], capture_output=True, text=True).stdout.split():
            subprocess.run(["kill", "-9", pid])
        for ns in (NS_US, NS_BIRD):
            subprocess.run(["ip", "netns", "del", ns])


def speak(ctl):
    birdc = lambda *a: subprocess.run(
        ["ip", "netns", "exec", NS_BIRD, "birdc", "-s", ctl, *a], check=True, stdout=sys.stderr
    )
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("192.0.2.1", 179))
    lst.listen(1)
    lst.settimeout(20)
    s, _ = lst.accept()
    # OPEN: version 4, AS 64512, hold 90, id 192.0.2.1; capabilities: IPv4 unicast,
    # route refresh, four-octet AS.
    caps = bytes([1, 4, 0, 1, 0, 1]) + bytes([2, 0]) + bytes([65, 4]) + struct.pack("!I", 64512)
    params = bytes([2, len(caps)]) + caps
    send(s, 1, struct.pack("!BHH4sB", 4, 64512, 90, socket.inet_aton("192.0.2.1"), len(params)) + params)
    end_of_rib = lambda m: m[18] == 2 and len(m) == 23
    withdraws = lambda m: m[18] == 2 and struct.unpack("!H", m[19:21])[0] > 0
    announces = lambda m: m[18] == 2 and len(m) > 23 and struct.unpack("!H", m[19:21])[0] == 0
    capture(s, "open", lambda m: m[18] == 1)
    capture(s, "table", end_of_rib)
    birdc("disable", "cover")
    capture(s, "uncover", withdraws)
    birdc("enable", "cover")
    capture(s, "recover", announces)
    s.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["speak"]:
        speak(sys.argv[2])
    else:
        main()
