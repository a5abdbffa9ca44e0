/* The first steps of every entry program: the node's settings, ARP, the L3 check and a
 * safe IPv4 parse. Kept in one place so the three hooks cannot drift apart. */
#ifndef PODWIRE_ENTRY_H
#define PODWIRE_ENTRY_H

#include "forward.h"

#define ETH_P_IP_BE 0x0008  /* htons(ETH_P_IP) */
#define ETH_P_ARP_BE 0x0608 /* htons(ETH_P_ARP) */
/* entry_prologue's answer when the caller goes on with a parsed IPv4 packet. */
#define ENTRY_CONTINUE -1

/* ARP passes where pods and the host resolve each other (the veth hooks); anything
 * else that is not IPv4 (IPv6 included: the cluster is IPv4-only, and passing it
 * would reach the node around policy) is dropped UNSUPPORTED_L3.
 * Returns ENTRY_CONTINUE, or the TC verdict the caller must return. */
static __always_inline int entry_prologue(struct __sk_buff *skb, struct node_config **cfg,
					  struct pkt *p, struct flow_ctx *c, bool pass_arp)
{
	__u32 zero = 0;
	int ret;

	*cfg = config.lookup(&zero);
	if (!*cfg) {
		count(DROP_NO_CONFIG, c->direction, skb->len);
		return TC_ACT_SHOT;
	}
	if (pass_arp && skb->protocol == ETH_P_ARP_BE) {
		count(DROP_FORWARDED, c->direction, skb->len);
		return TC_ACT_OK;
	}
	if (skb->protocol != ETH_P_IP_BE)
		return drop(skb, *cfg, p, c, DROP_UNSUPPORTED_L3);
	ret = parse_ipv4(skb, p);
	if (ret)
		return drop(skb, *cfg, p, c, ret);
	return ENTRY_CONTINUE;
}

#endif
