/* The IPv6 programs of a pod's host-side veth, tail-called by from_pod and to_pod
 * (entry.h) for an IPv6 packet: the same steps as IPv4 (bpf_pod.c) on the IPv6 maps.
 * Service translation and its replies' reverse run in programs of their own
 * (bpf_lb6.c), tail-called from here. */
#include "lib/conntrack6.h"
#include "lib/entry6.h"
#include "lib/forward6.h"
#include "lib/lb6.h"
#include "lib/policy.h"

/* What a pod sends: neighbour discovery passes; anti-spoofing (the source must be the
 * pod's own IPv6 address), Service translation (lb6_frontend, which comes back here with
 * the translated packet, its Service and frontend in lb6_translated), conntrack (a
 * Service connection's replies to lb6_reply), the sender's egress policy, the receiver's
 * ingress policy when it is local, then delivery. */
int from_pod6(struct __sk_buff *skb)
{
	struct flow_ctx c = { .direction = DIR_EGRESS, .hook = HOOK_FROM_POD };
	struct lb6_translated *handed;
	struct endpoint_info *src, *dst_ep;
	struct ipcache_value *peer, *self;
	struct node_config *cfg;
	enum ct_status status;
	struct ct_value *ct;
	struct ip6_addr addr, frontend = {};
	struct pkt p = {};
	__u32 cidr = 0, zero = 0;
	int verdict, ret;
	bool audit;
	__u64 now;

	if (!entry6_prologue(skb, &cfg, &p, &c, true, true, &verdict))
		return verdict;

	handed = lb6_translated.lookup(&zero);
	if (handed && handed->service_id) {
		c.service_id = handed->service_id;
		c.frontend_port = handed->frontend_port;
		c.ct_flags = handed->ct_flags;
		frontend = handed->frontend_addr;
		handed->service_id = 0;
	}
	/* After a hairpin the source is the hairpin address: the pod is the destination. */
	addr = c.ct_flags & CT_F_HAIRPIN ? p.daddr6 : p.saddr6;
	src = endpoints6.lookup(&addr);
	if (!src || src->ifindex != skb->ingress_ifindex)
		return drop6(skb, cfg, &p, &c, DROP_INVALID_SOURCE);
	c.src_identity = src->identity;
	c.src_ep_id = src->ep_id;
	trace_mark_live_family(skb, &p, &c, src->ep_id, true);
	if (!c.service_id && lb6_frontend_of(&p)) {
		lb6_progs.call(skb, LB6_PROG_FRONTEND);
		return drop6(skb, cfg, &p, &c, DROP_UNSUPPORTED_L3); /* no lb6_frontend */
	}

	now = bpf_ktime_get_ns();
	status = ct6_lookup(skb, cfg, &p, now, &ct);
	c.ct_status = status;
	c.ct_known = 1;
	if (status != CT_NEW) {
		ret = lb6_reply_of(skb, status, ct, HOOK_FROM_POD);
		if (ret < 0)
			return drop6(skb, cfg, &p, &c, ret);
		return deliver6(skb, cfg, &p, &c);
	}
	/* An ICMPv6 error about a Service's reply, sent to its frontend: on to the backend. */
	if (lb6_frontend_icmp_of(skb, &p)) {
		lb6_progs.call(skb, LB6_PROG_FRONTEND_ICMP);
		return drop6(skb, cfg, &p, &c, DROP_UNSUPPORTED_L3); /* no lb6_frontend_icmp */
	}

	addr = p.daddr6;
	dst_ep = endpoints6.lookup(&addr);
	peer = ipcache6_lookup(&addr);
	if (dst_ep) {
		c.dst_identity = dst_ep->identity;
		c.dst_ep_id = dst_ep->ep_id;
	} else {
		c.dst_identity = peer ? peer->identity : IDENTITY_WORLD;
	}
	if (peer)
		cidr = peer->cidr_identity;
	/* A pod reaching itself through a Service is its own loopback, which no policy
	 * judges (as from_pod). */
	if (c.ct_flags & CT_F_HAIRPIN)
		goto commit;
	ret = policy_check(src, DIR_EGRESS, c.dst_identity, cidr, &p, &c.egress_ref, &audit);
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	flow_audit(&c, DIR_EGRESS, audit);

	if (dst_ep) {
		addr = p.saddr6;
		self = ipcache6_lookup(&addr);
		c.direction = DIR_INGRESS;
		ret = policy_check(dst_ep, DIR_INGRESS, c.src_identity,
				   self ? self->cidr_identity : 0, &p, &c.ingress_ref, &audit);
		if (ret < 0)
			return drop6(skb, cfg, &p, &c, ret);
		flow_audit(&c, DIR_INGRESS, audit);
		c.direction = DIR_EGRESS;
	}

commit:
	ret = new_flow_commit6(skb, cfg, &p, &c, &frontend, now);
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	return deliver6(skb, cfg, &p, &c);
}

/* What the host stack routed to the pod over IPv6: the node (always allowed), anything
 * else by the pod's ingress policy; neighbour discovery passes. */
int to_pod6(struct __sk_buff *skb)
{
	struct flow_ctx c = { .direction = DIR_INGRESS, .hook = HOOK_TO_POD };
	struct endpoint_info *dst_ep;
	struct ipcache_value *peer;
	struct node_config *cfg;
	enum ct_status status;
	struct ct_value *ct;
	struct ip6_addr addr;
	struct pkt p = {};
	int verdict, ret;
	bool audit;
	__u64 now;

	if (!entry6_prologue(skb, &cfg, &p, &c, true, true, &verdict))
		return verdict;

	addr = p.daddr6;
	dst_ep = endpoints6.lookup(&addr);
	if (!dst_ep || dst_ep->ifindex != skb->ifindex)
		return drop6(skb, cfg, &p, &c, DROP_UNKNOWN_DESTINATION);
	c.dst_identity = dst_ep->identity;
	c.dst_ep_id = dst_ep->ep_id;

	now = bpf_ktime_get_ns();
	status = ct6_lookup(skb, cfg, &p, now, &ct);
	c.ct_status = status;
	c.ct_known = 1;
	if (status != CT_NEW)
		return pass_on6(skb, &p, &c);

	addr = p.saddr6;
	peer = ipcache6_lookup(&addr);
	c.src_identity = peer ? peer->identity : IDENTITY_WORLD;
	if (c.src_identity != IDENTITY_HOST) {
		ret = policy_check(dst_ep, DIR_INGRESS, c.src_identity,
				   peer ? peer->cidr_identity : 0, &p, &c.ingress_ref, &audit);
		if (ret < 0)
			return drop6(skb, cfg, &p, &c, ret);
		flow_audit(&c, DIR_INGRESS, audit);
	}

	ret = new_flow_commit6(skb, cfg, &p, &c, NULL, now);
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	return pass_on6(skb, &p, &c);
}
