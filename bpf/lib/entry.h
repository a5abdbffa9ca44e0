/* The first steps of every entry program: the node's settings, ARP, the L3 check and a
 * safe IPv4 parse. Kept in one place so the three hooks cannot drift apart. IPv6 goes
 * on in the hook's IPv6 program (entry6.h), reached by a tail call. */
#ifndef PODWIRE_ENTRY_H
#define PODWIRE_ENTRY_H

#include "maps.h"
#include "forward.h"
#include "parse.h"
#include "parse6.h"

#define ETH_P_IP_BE 0x0008  /* htons(ETH_P_IP) */
#define ETH_P_ARP_BE 0x0608 /* htons(ETH_P_ARP) */

/* ARP passes where pods and the host resolve each other (the veth hooks); IPv6 is
 * handed to the hook's IPv6 program (progs6); anything else, and IPv6 when that program
 * is missing, is dropped UNSUPPORTED_L3 (passing it would reach the node around policy).
 * True when the caller goes on with the parsed IPv4 packet; false when the program is
 * done and returns *verdict. */
static __always_inline bool entry_prologue(struct __sk_buff *skb, struct node_config **cfg,
					   struct pkt *p, struct flow_ctx *c, bool pass_arp,
					   int *verdict)
{
	__u32 zero = 0;
	int ret;

	/* First, before this program's state grows: the tail call returns only when there
	 * is no IPv6 program for the hook. */
	if (skb->protocol == ETH_P_IPV6_BE)
		progs6.call(skb, c->hook);
	*cfg = config.lookup(&zero);
	if (!*cfg) {
		/* Counted only: without the config there is no telling whether events are on. */
		count(DROP_CODE(DROP_NO_CONFIG), c->direction, skb->len);
		*verdict = TC_ACT_SHOT;
		return false;
	}
	if (pass_arp && skb->protocol == ETH_P_ARP_BE) {
		*verdict = pass_on(skb, p, c);
		return false;
	}
	if (skb->protocol != ETH_P_IP_BE) {
		*verdict = drop(skb, *cfg, p, c, DROP_UNSUPPORTED_L3);
		return false;
	}
	ret = parse_ipv4(skb, p);
	if (ret < 0) {
		*verdict = drop(skb, *cfg, p, c, ret);
		return false;
	}
	trace_arm(p, c);
	return true;
}

#endif
