// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// xroute's XDP steering program. One copy is loaded per port. It decides, for each
// received frame, whether the fastpath takes it (redirect into the AF_XDP socket bound
// to the frame's receive queue) or the kernel does (XDP_PASS).
//
// - Pod ports and the host port (mode STEER_ALL): every frame goes to the fastpath.
// - The uplink (mode STEER_CLUSTER): only IPv4/IPv6 frames whose destination is in
//   `dst4`/`dst6` (pod CIDRs, service VIPs) go to the fastpath, and those to the node's
//   addresses for a NodePort or answering a flow the fastpath SNATed to the node. ARP, neighbour
//   discovery and everything for the node itself (BGP, SSH, kubelet) pass to the kernel
//   untouched.
//
//   A fragmented datagram to the node's addresses is judged by its first fragment
//   (the only one with ports): when that goes to the fastpath, the datagram's
//   identity is kept in `frag4`/`frag6` and its later fragments follow it; those of
//   datagrams whose first fragment the kernel took (or that came first) stay with the
//   kernel, which reassembles them.
// - Every port: 802.1Q/802.1ad-tagged frames pass to the kernel untouched.
//
// If no socket is bound to the queue, the redirect falls back to XDP_PASS: a port whose
// worker is gone degrades to the kernel, it does not black-hole.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define STEER_ALL 0
#define STEER_CLUSTER 1

#define MAX_QUEUES 64

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Index 0: the steering mode of this port.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} mode SEC(".maps");

struct key4 {
	__u32 prefix_len;
	__u32 addr; // network order
};

struct key6 {
	__u32 prefix_len;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct key4);
	__type(value, __u32);
} dst4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct key6);
	__type(value, __u32);
} dst6 SEC(".maps");

// The node's own addresses on this port: traffic to them stays the kernel's, but for
// NodePorts (`node_ports`, keyed by protocol << 16 | port) and the replies of flows the
// fastpath SNATed to the node (ports in `snat`'s range, ICMP echo identifiers in it,
// ICMP errors quoting such a flow).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} node4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct key6);
	__type(value, __u32);
} node6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} node_ports SEC(".maps");

// Fragmented datagrams to the node whose first fragment went to the fastpath, by
// what RFC 791 / RFC 8200 reassembly matches fragments by, with the time the first
// fragment came (bpf_ktime_get_ns). An entry older than the kernel's reassembly
// timeout (ipfrag_time 30 s, ip6frag_time 60 s) counts as absent, and a first
// fragment the kernel takes deletes the entry of its key (an IP ID used again), so a
// later fragment follows only a first fragment of its own datagram. LRU, as large as
// the fastpath's own fragments table: the oldest go first when it is full.
struct frag4_key {
	__u32 saddr;
	__u32 daddr;
	__u16 id;
	__u8 proto;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct frag4_key);
	__type(value, __u64);
} frag4 SEC(".maps");

struct frag6_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct frag6_key);
	__type(value, __u64);
} frag6 SEC(".maps");

#define FRAG4_TIMEOUT_NS (30ULL * 1000000000ULL)
#define FRAG6_TIMEOUT_NS (60ULL * 1000000000ULL)

// Whether `first` (the time a first fragment was recorded, or none) is recent.
static __always_inline int recent(const __u64 *first, __u64 timeout)
{
	return first && bpf_ktime_get_ns() - *first < timeout;
}

struct port_range {
	__u32 lo;
	__u32 hi;
};

// Index 0: the SNAT port range (host order; lo > hi: none).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct port_range);
} snat SEC(".maps");

// Per-CPU counts of what the program decided, read by the agent.
#define STAT_REDIRECT 0
#define STAT_PASS 1
#define STAT_COUNT 2

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &which);
	if (c)
		*c += 1;
}

static __always_inline int pass(void)
{
	count(STAT_PASS);
	return XDP_PASS;
}

static __always_inline int to_fastpath(struct xdp_md *ctx)
{
	count(STAT_REDIRECT);
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

static __always_inline int in_snat(__u16 port_be)
{
	__u32 zero = 0;
	struct port_range *r = bpf_map_lookup_elem(&snat, &zero);
	__u32 p = bpf_ntohs(port_be);
	return r && r->lo <= p && p <= r->hi;
}

static __always_inline int node_port(__u8 proto, __u16 port_be)
{
	__u32 k = ((__u32)proto << 16) | bpf_ntohs(port_be);
	return bpf_map_lookup_elem(&node_ports, &k) != 0;
}

// Whether a packet to one of the node's addresses, its transport header at `l4`
// (protocol `proto`), is the fastpath's: a NodePort, or a reply to a flow it SNATed.
// `inner` is set when `l4` is the quoted packet of an ICMP error: then the quoted
// packet went from the node, so its source port (or echo identifier) is the one to
// look at.
static __always_inline int node_traffic(void *l4, void *end, __u8 proto, int v6)
{
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		__u16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return 0;
		return node_port(proto, ports[1]) || in_snat(ports[1]);
	}
	__u8 icmp = v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
	if (proto != icmp)
		return 0;
	__u8 *m = l4;
	if ((void *)(m + 8) > end)
		return 0;
	__u8 type = m[0];
	__u8 echo_reply = v6 ? 129 : 0;
	if (type == echo_reply)
		return in_snat(*(__u16 *)(m + 4));
	int error = v6 ? (type >= 1 && type <= 4) : (type == 3 || type == 11 || type == 12);
	if (!error)
		return 0;
	// The quoted packet: the node's own (SNATed) flow, source port in the range.
	__u8 *q = m + 8;
	__u8 qproto;
	if (v6) {
		struct ipv6hdr *ip6 = (void *)q;
		if ((void *)(ip6 + 1) > end)
			return 0;
		qproto = ip6->nexthdr;
		q = (void *)(ip6 + 1);
	} else {
		struct iphdr *ip = (void *)q;
		if ((void *)(ip + 1) > end)
			return 0;
		qproto = ip->protocol;
		__u32 ihl = ip->ihl * 4;
		if (ihl < 20 || ihl > 60)
			return 0;
		q = q + ihl;
	}
	if ((void *)(q + 8) > end)
		return 0;
	if (qproto == IPPROTO_TCP || qproto == IPPROTO_UDP)
		return in_snat(*(__u16 *)q);
	if (qproto == icmp)
		return in_snat(*(__u16 *)(q + 4));
	return 0;
}

SEC("xdp")
int xroute_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	__u32 *m = bpf_map_lookup_elem(&mode, &zero);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return pass();
	__u16 proto = eth->h_proto;
	void *l3 = eth + 1;
	// VLAN-tagged frames (802.1Q, 802.1ad) are the kernel's on every port: the
	// fastpath does not model which VLAN a routed frame leaves on, and must not punt
	// one back with its tag.
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return pass();
	if (!m || *m == STEER_ALL)
		return to_fastpath(ctx);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return pass();
		struct key4 k = {.prefix_len = 32, .addr = ip->daddr};
		if (bpf_map_lookup_elem(&dst4, &k))
			return to_fastpath(ctx);
		__u32 daddr = ip->daddr;
		if (!bpf_map_lookup_elem(&node4, &daddr))
			return pass();
		struct frag4_key fk = {
			.saddr = ip->saddr, .daddr = daddr, .id = ip->id, .proto = ip->protocol};
		// Later fragments carry no ports: they follow their first fragment.
		if (ip->frag_off & bpf_htons(0x1fff)) {
			if (recent(bpf_map_lookup_elem(&frag4, &fk), FRAG4_TIMEOUT_NS))
				return to_fastpath(ctx);
			return pass();
		}
		int first = ip->frag_off & bpf_htons(0x2000);
		__u32 ihl = ip->ihl * 4;
		if (ihl >= 20 && ihl <= 60 && node_traffic((void *)ip + ihl, end, ip->protocol, 0)) {
			if (first) {
				__u64 now = bpf_ktime_get_ns();
				bpf_map_update_elem(&frag4, &fk, &now, BPF_ANY);
			}
			return to_fastpath(ctx);
		}
		if (first)
			bpf_map_delete_elem(&frag4, &fk);
		return pass();
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return pass();
		struct key6 k = {.prefix_len = 128};
		__builtin_memcpy(k.addr, &ip6->daddr, 16);
		if (bpf_map_lookup_elem(&dst6, &k))
			return to_fastpath(ctx);
		if (!bpf_map_lookup_elem(&node6, &k))
			return pass();
		// Only an upper-layer header right after the fixed one (or after a Fragment
		// header right after it) is looked at.
		void *l4 = ip6 + 1;
		__u8 next = ip6->nexthdr;
		if (next == IPPROTO_FRAGMENT) {
			__u8 *f = l4;
			if ((void *)(f + 8) > end)
				return pass();
			struct frag6_key fk = {};
			__builtin_memcpy(fk.saddr, &ip6->saddr, 16);
			__builtin_memcpy(fk.daddr, &ip6->daddr, 16);
			__builtin_memcpy(&fk.id, f + 4, 4);
			// Offset (13 bits) and M flag, network order.
			__u16 off = ((__u16)f[2] << 8) | f[3];
			if (off & 0xfff8) {
				if (recent(bpf_map_lookup_elem(&frag6, &fk), FRAG6_TIMEOUT_NS))
					return to_fastpath(ctx);
				return pass();
			}
			if (node_traffic(f + 8, end, f[0], 1)) {
				if (off & 1) {
					__u64 now = bpf_ktime_get_ns();
					bpf_map_update_elem(&frag6, &fk, &now, BPF_ANY);
				}
				return to_fastpath(ctx);
			}
			if (off & 1)
				bpf_map_delete_elem(&frag6, &fk);
			return pass();
		}
		if (node_traffic(l4, end, next, 1))
			return to_fastpath(ctx);
		return pass();
	}
	return pass();
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
