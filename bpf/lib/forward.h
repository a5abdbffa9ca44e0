/* Delivery once a packet is allowed: into a local pod, into the tunnel, or up the
 * host stack. */
#ifndef PODWIRE_FORWARD_H
#define PODWIRE_FORWARD_H

#include "events.h"
#include "maps.h"

/* identities are node-local (the receiver resolves the sender by source IP), so
 * the VNI carries nothing; one fixed value keeps captures readable. */
#define TUNNEL_VNI 2

static __always_inline struct ipcache_value *ipcache_lookup(__u32 ip)
{
	struct ipcache_key k = { .prefixlen = 32, .ip = ip };

	return ipcache.lookup(&k);
}

/* Let the packet go its way: from a pod up the host stack (the node itself, or the
 * world through its routing and masquerade); into the pod on to_pod's hook. */
static __always_inline int pass_on_family(struct __sk_buff *skb, const struct pkt *p,
					  const struct flow_ctx *c, bool v6)
{
	if (trace_delivered(skb, p, c, c->hook == HOOK_TO_POD ? TRACE_TO_POD : TRACE_TO_HOST,
			    v6))
		return TC_ACT_SHOT;
	count(REASON_FORWARDED, c->direction, skb->len);
	return TC_ACT_OK;
}

static __always_inline int pass_on(struct __sk_buff *skb, const struct pkt *p,
				   const struct flow_ctx *c)
{
	return pass_on_family(skb, p, c, false);
}

static __always_inline int pass_on6(struct __sk_buff *skb, const struct pkt *p,
				    const struct flow_ctx *c)
{
	return pass_on_family(skb, p, c, true);
}

/* Into a local pod: its MACs, then straight to the veth peer. redirect_peer skips
 * the host-side veth's egress hook, so to_pod never sees (nor re-evaluates) it.
 * A decapsulated frame still carries the remote pod's gateway MAC and so arrives
 * as PACKET_OTHERHOST, which the pod's IP layer would drop: mark it for the host. */
static __always_inline int deliver_local_family(struct __sk_buff *skb,
						const struct node_config *cfg,
						const struct pkt *p, const struct flow_ctx *c,
						struct endpoint_info *ep, bool v6)
{
	/* Both MACs in one write: the frame's destination then its source, as
	 * endpoint_info holds them. */
	_Static_assert(__builtin_offsetof(struct endpoint_info, host_mac) ==
		       __builtin_offsetof(struct endpoint_info, pod_mac) + ETH_ALEN,
		       "endpoint_info: host_mac must follow pod_mac");
	if (bpf_skb_store_bytes(skb, 0, ep->pod_mac, 2 * ETH_ALEN, 0) < 0)
		return drop_family(skb, cfg, p, c, DROP_MALFORMED, v6);
	if (skb->pkt_type != PACKET_HOST)
		bpf_skb_change_type(skb, PACKET_HOST);
	if (trace_delivered(skb, p, c, TRACE_TO_POD, v6))
		return TC_ACT_SHOT;
	count(REASON_FORWARDED, c->direction, skb->len);
	return bpf_redirect_peer(ep->ifindex, 0);
}

static __always_inline int deliver_local(struct __sk_buff *skb, const struct node_config *cfg,
					 const struct pkt *p, const struct flow_ctx *c,
					 struct endpoint_info *ep)
{
	return deliver_local_family(skb, cfg, p, c, ep, false);
}

/* Into the overlay towards tunnel_ip (the underlay is IPv4 for both families). */
static __always_inline int deliver_tunnel_family(struct __sk_buff *skb,
						 const struct node_config *cfg,
						 const struct pkt *p, const struct flow_ctx *c,
						 __u32 tunnel_ip, bool v6)
{
	struct bpf_tunnel_key key = {};

	if (!cfg->vxlan_ifindex)
		return drop_family(skb, cfg, p, c, DROP_NO_ROUTE, v6);
	key.remote_ipv4 = bpf_ntohl(tunnel_ip);
	key.tunnel_id = TUNNEL_VNI;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return drop_family(skb, cfg, p, c, DROP_NO_ROUTE, v6);
	if (c->trace_id)
		trace_hop(skb, p, c, TRACE_TO_TUNNEL, REASON_FORWARDED, tunnel_ip, v6);
	count(REASON_FORWARDED, c->direction, skb->len);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

static __always_inline int deliver_tunnel(struct __sk_buff *skb, const struct node_config *cfg,
					  const struct pkt *p, const struct flow_ctx *c,
					  __u32 tunnel_ip)
{
	return deliver_tunnel_family(skb, cfg, p, c, tunnel_ip, false);
}

/* bcc 0.26 declares bpf_redirect_neigh() without its plen argument; the kernel's has it. */
static long (*redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;

/* Out of the node's uplink to the next hop its routes name, with that hop's MAC from the
 * neighbour subsystem (resolved when not known yet): a NodePort's reply, which the host
 * stack would drop for its source, the node's own address. */
static __always_inline int deliver_netdev(struct __sk_buff *skb, const struct node_config *cfg,
					  const struct pkt *p, const struct flow_ctx *c)
{
	if (!cfg->uplink_ifindex)
		return drop(skb, cfg, p, c, DROP_NO_ROUTE);
	count(REASON_FORWARDED, c->direction, skb->len);
	return redirect_neigh(cfg->uplink_ifindex, NULL, 0, 0);
}

/* Route an allowed packet from a pod: local pod, remote node, else the host stack. */
static __always_inline int deliver(struct __sk_buff *skb, const struct node_config *cfg,
				   const struct pkt *p, const struct flow_ctx *c)
{
	struct endpoint_info *ep = endpoints.lookup((__u32 *)&p->daddr);
	struct ipcache_value *dst;

	if (ep)
		return deliver_local(skb, cfg, p, c, ep);
	dst = ipcache_lookup(p->daddr);
	if (dst && dst->tunnel_ip && dst->tunnel_ip != cfg->node_ip)
		return deliver_tunnel(skb, cfg, p, c, dst->tunnel_ip);
	return pass_on(skb, p, c);
}

#endif
