// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// The forwarding benchmark's BPF programs (BENCH-METHOD.md):
// - gen: run with BPF_PROG_RUN and BPF_F_TEST_XDP_LIVE_FRAMES "as if received" on the
//   generator's veth; rewrites the whole header of each frame (live-frame pages come
//   back carrying the DUT's edits), picks a flow and a destination at random, paces
//   itself with a token schedule, and sends with XDP_TX.
// - sink_tc: a tcx ingress program on the sink's veth that counts and drops.
// - redirect: the in-kernel XDP forwarder through a devmap (the machine's limit): MAC
//   rewrite, then redirect to the egress port.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define DSTS 65536

struct gen_config {
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u32 src_ip;    // network order
	__u32 flows;     // source ports used: 1024 + [0, flows)
	__u32 dsts;      // destinations used from `dst_pool`: [0, dsts)
	__u32 frame_len; // bytes of the frame (the IP total length follows from it)
	__u64 interval_ns; // 0: unpaced
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} gen_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DSTS);
	__type(key, __u32);
	__type(value, __u32);
} dst_pool SEC(".maps");

// Index 0: frames sent; 1: frames held back by pacing.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} gen_count SEC(".maps");

// Index 0: the next send time (pacing); one generator CPU only.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_clock SEC(".maps");

static __always_inline void bump(void *map, __u32 i)
{
	__u64 *c = bpf_map_lookup_elem(map, &i);
	if (c)
		*c += 1;
}

static __always_inline __u16 ip_checksum(struct iphdr *ip)
{
	__u32 sum = 0;
	__u16 *w = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SEC("xdp")
int gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct gen_config *cfg = bpf_map_lookup_elem(&gen_cfg, &zero);
	if (!cfg)
		return XDP_ABORTED;
	if (cfg->interval_ns) {
		__u64 *next = bpf_map_lookup_elem(&gen_clock, &zero);
		if (!next)
			return XDP_ABORTED;
		__u64 now = bpf_ktime_get_ns();
		if (now < *next) {
			bump(&gen_count, 1);
			return XDP_DROP;
		}
		// Never bank more than a few packets of credit after a stall.
		if (*next + 8 * cfg->interval_ns < now)
			*next = now;
		*next += cfg->interval_ns;
	}
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(eth->h_dest, cfg->dst_mac, 6);
	__builtin_memcpy(eth->h_source, cfg->src_mac, 6);
	eth->h_proto = bpf_htons(ETH_P_IP);
	__u32 r = bpf_get_prandom_u32();
	__u32 k = cfg->dsts ? (r >> 16) % cfg->dsts : 0;
	__u32 *dst = bpf_map_lookup_elem(&dst_pool, &k);
	if (!dst)
		return XDP_ABORTED;
	__u16 ip_len = cfg->frame_len - sizeof(*eth);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(ip_len);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = cfg->src_ip;
	ip->daddr = *dst;
	ip->check = ip_checksum(ip);
	__u32 flows = cfg->flows ? cfg->flows : 1;
	udp->source = bpf_htons(1024 + (r & 0xffff) % flows);
	udp->dest = bpf_htons(9);
	udp->len = bpf_htons(ip_len - sizeof(*ip));
	udp->check = 0;
	bump(&gen_count, 0);
	return XDP_TX;
}

// Index 0: packets, 1: bytes.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps");

// Counts a frame of the generator's UDP (port 9); false for anything else.
static __always_inline int count_generated(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP || udp->dest != bpf_htons(9))
		return 0;
	__u32 i = 0;
	__u64 *c = bpf_map_lookup_elem(&sink_count, &i);
	if (c)
		*c += 1;
	i = 1;
	c = bpf_map_lookup_elem(&sink_count, &i);
	if (c)
		*c += (__u64)(end - data);
	return 1;
}

// Only the generator's UDP is counted and dropped; anything else (iperf3) goes on to
// the stack.
SEC("classifier")
int sink_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	return count_generated(data, end) ? TC_ACT_SHOT : TC_ACT_OK;
}

// The sink for DUTs that emit XDP frames (the devmap redirect): counting them in XDP
// avoids turning each into an skb first.
SEC("xdp")
int sink_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	return count_generated(data, end) ? XDP_DROP : XDP_PASS;
}

struct redirect_config {
	__u8 dst_mac[6];
	__u8 src_mac[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redirect_config);
} redirect_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} egress SEC(".maps");

SEC("xdp")
int redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct redirect_config *cfg = bpf_map_lookup_elem(&redirect_cfg, &zero);
	struct ethhdr *eth = data;
	if (!cfg || (void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, cfg->dst_mac, 6);
	__builtin_memcpy(eth->h_source, cfg->src_mac, 6);
	return bpf_redirect_map(&egress, 0, 0);
}

// An XDP program that passes everything: attached to the generator's own veth so
// BPF_PROG_RUN's live frames skip synchronize_rcu(), and to veths that need NAPI.
SEC("xdp")
int pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
