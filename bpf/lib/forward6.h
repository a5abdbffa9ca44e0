/* Delivery of an allowed IPv6 packet: into a local pod, into the tunnel (the underlay
 * stays IPv4: ipcache_value.tunnel_ip), or up the host stack; and the tail of a new
 * IPv6 connection (conntrack6, then the flow report both families share). */
#ifndef PODWIRE_FORWARD6_H
#define PODWIRE_FORWARD6_H

#include "conntrack6.h"
#include "forward.h"
#include "maps.h"
#include "newflow.h"

static __always_inline struct ipcache_value *ipcache6_lookup(const struct ip6_addr *ip)
{
	struct ipcache6_key k = { .prefixlen = 128, .ip = *ip };

	return ipcache6.lookup(&k);
}

static __always_inline int deliver6(struct __sk_buff *skb, const struct node_config *cfg,
				    const struct pkt *p, const struct flow_ctx *c)
{
	struct ip6_addr daddr = p->daddr6;
	struct endpoint_info *ep = endpoints6.lookup(&daddr);
	struct ipcache_value *dst;

	if (ep)
		return deliver_local_family(skb, cfg, p, c, ep, true);
	dst = ipcache6_lookup(&daddr);
	if (dst && dst->tunnel_ip && dst->tunnel_ip != cfg->node_ip)
		return deliver_tunnel_family(skb, cfg, p, c, dst->tunnel_ip, true);
	return pass_on(skb, p, c);
}

/* new_flow_commit for IPv6. */
static __always_inline int new_flow_commit6(struct __sk_buff *skb,
					    const struct node_config *cfg, const struct pkt *p,
					    const struct flow_ctx *c, __u64 now)
{
	struct ct_value v = {
		.egress_ref = c->egress_ref,
		.ingress_ref = c->ingress_ref,
		.flags = c->ct_flags,
	};
	int ret = ct6_create(p, now, &v);

	if (ret < 0)
		return ret;
	new_flow_report(skb, cfg, p, c, true);
	return 0;
}

#endif
