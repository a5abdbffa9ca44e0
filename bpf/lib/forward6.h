/* Delivery of an allowed IPv6 packet: into a local pod, into the tunnel (the underlay
 * stays IPv4: ipcache_value.tunnel_ip), or up the host stack; and the tail of a new
 * IPv6 connection (conntrack6, then the flow report both families share). A reply of a
 * connection made through a Service is handed to lb6_reply first (lb6_reply_of). */
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
	return pass_on6(skb, p, c);
}

/* A packet conntrack found, at a hook where a Service connection's client is (from_pod6,
 * from_overlay6): a reply of such a connection goes to lb6_reply, an ICMPv6 error about
 * what its client sent to lb6_related, which find its entry, translate and deliver it;
 * anything else returns 0 and goes on. One that finds no program is
 * DROP_UNSUPPORTED_L3: untranslated, the client could only reset it or not know it. */
static __always_inline int lb6_reply_of(struct __sk_buff *skb, enum ct_status status,
					const struct ct_value *ct, __u8 hook)
{
	if ((status != CT_REPLY && status != CT_RELATED) || !ct || !ct->service_id)
		return 0;
	skb->cb[LB6_CB_HOOK] = hook;
	lb6_progs.call(skb, status == CT_REPLY ? LB6_PROG_REPLY : LB6_PROG_RELATED);
	return DROP_UNSUPPORTED_L3;
}

/* new_flow_commit for IPv6: a connection translated by lb6_frontend (c->service_id) keeps
 * what its replies get back (lb6_reply): the frontend's port, and its address
 * (frontend, NULL for a connection made through none). */
static __always_inline int new_flow_commit6(struct __sk_buff *skb,
					    const struct node_config *cfg, const struct pkt *p,
					    const struct flow_ctx *c,
					    const struct ip6_addr *frontend, __u64 now)
{
	struct ct6_value v = {
		.ct = {
			.egress_ref = c->egress_ref,
			.ingress_ref = c->ingress_ref,
			.flags = c->ct_flags,
			.service_id = c->service_id,
			.rev_port = c->frontend_port,
		},
	};
	int ret;

	if (frontend)
		v.rev_addr6 = *frontend;
	ret = ct6_create(p, now, &v);
	if (ret < 0)
		return ret;
	new_flow_report(skb, cfg, p, c, true);
	return 0;
}

#endif
