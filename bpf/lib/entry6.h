/* The first steps of every IPv6 entry program (tail-called from its IPv4 hook,
 * entry.h): the node's settings, a safe IPv6 parse with its extension headers, and
 * neighbour discovery, which passes at the veth hooks as ARP does, whatever the policy
 * says (the pod's gateway fe80::1 has a permanent neighbour entry, cni/veth.py, so this
 * is what a pod or the node solicits beyond it). */
#ifndef PODWIRE_ENTRY6_H
#define PODWIRE_ENTRY6_H

#include "maps.h"
#include "forward.h"
#include "parse6.h"

/* True when the caller goes on with the parsed IPv6 packet; false when the program is
 * done and returns *verdict. traced (a constant): the program can see a packet podwire
 * trace follows (trace.h), the first of a TCP or UDP connection; the load balancer's
 * programs for replies and ICMPv6 errors cannot, and skip the tracing that would cost
 * them verifier budget they lack. */
static __always_inline bool entry6_prologue(struct __sk_buff *skb, struct node_config **cfg,
					    struct pkt *p, struct flow_ctx *c, bool pass_nd,
					    bool traced, int *verdict)
{
	__u32 zero = 0;
	int ret;

	*cfg = config.lookup(&zero);
	if (!*cfg) {
		count(DROP_CODE(DROP_NO_CONFIG), c->direction, skb->len);
		*verdict = TC_ACT_SHOT;
		return false;
	}
	ret = parse_ipv6(skb, p);
	if (ret < 0) {
		*verdict = drop6(skb, *cfg, p, c, ret);
		return false;
	}
	if (pass_nd && is_link_control6(p)) {
		*verdict = pass_on6(skb, p, c);
		return false;
	}
	if (traced)
		trace_arm(p, c);
	return true;
}

#endif
