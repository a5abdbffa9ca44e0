/* Policy decision: at most three LPM lookups (peer identity, peer cidr_identity,
 * any peer) whatever the number of policies. ICMP and other port-less protocols
 * look up port 0, so entries of POLICY_PREFIX_ANY_PROTO or POLICY_PREFIX_ANY_PORT
 * match them; NetworkPolicy ports never name ICMP. */
#ifndef PODWIRE_POLICY_H
#define PODWIRE_POLICY_H

#include "maps.h"
#include "parse.h"

/* 0 when allowed (*ref names the allowing policy, 0 when the endpoint is not isolated
 * that way), else DROP_POLICY_DENIED. */
static __always_inline int policy_check(const struct endpoint_info *ep, __u8 direction,
					 __u32 identity, __u32 cidr_identity,
					 const struct pkt *p, __u32 *ref)
{
	__u32 isolated = direction == DIR_INGRESS ? EP_F_INGRESS_ISOLATED : EP_F_EGRESS_ISOLATED;
	struct policy_key k = {};
	struct policy_value *v;

	*ref = 0;
	if (!(ep->flags & isolated))
		return 0;

	k.prefixlen = POLICY_PREFIX_FULL;
	k.ep_id = ep->ep_id;
	k.direction = direction;
	k.identity = identity;
	k.proto = p->proto;
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP)
		k.dport = p->dport;

	v = policy.lookup(&k);
	if (!v && cidr_identity && cidr_identity != identity) {
		k.identity = cidr_identity;
		v = policy.lookup(&k);
	}
	if (!v && identity != IDENTITY_ANY) {
		k.identity = IDENTITY_ANY;
		v = policy.lookup(&k);
	}
	if (!v)
		return DROP_POLICY_DENIED;
	*ref = v->policy_ref;
	return 0;
}

#endif
