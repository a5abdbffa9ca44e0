/* Policy decision: at most three LPM lookups (peer identity, peer cidr_identity, any
 * peer) whatever the number of policies or tiers. ICMP and other port-less protocols
 * look up port 0, so entries of POLICY_PREFIX_ANY_PROTO or POLICY_PREFIX_ANY_PORT
 * match them; NetworkPolicy ports never name ICMP.
 *
 * The tiers (docs/cluster-policy.md): the Admin tier's first matching rule (lowest
 * rank over the three lookups) decides unless it passes; then NetworkPolicy when one
 * isolates the pod; then the Baseline tier the same way; then allow. */
#ifndef PODWIRE_POLICY_H
#define PODWIRE_POLICY_H

#include "maps.h"
#include "parse.h"

/* The earliest rule of one tier seen so far. */
struct tier_pick {
	__u32 rank;
	__u32 ref;
	__u8 action;
};

static __always_inline void tier_take(struct tier_pick *t, __u8 action, __u32 rank,
				      __u32 ref)
{
	if (action != POLICY_ACTION_NONE && (t->action == POLICY_ACTION_NONE || rank < t->rank)) {
		t->action = action;
		t->rank = rank;
		t->ref = ref;
	}
}

struct policy_pick {
	struct tier_pick admin;
	struct tier_pick baseline;
	__u32 np_ref;
};

static __always_inline void policy_take(struct policy_pick *pick, const struct policy_value *v)
{
	if (!v)
		return;
	tier_take(&pick->admin, v->admin_action, v->admin_rank, v->admin_ref);
	tier_take(&pick->baseline, v->baseline_action, v->baseline_rank, v->baseline_ref);
	if (!pick->np_ref)
		pick->np_ref = v->policy_ref;
}

/* A tier's Accept, Deny or audited Deny decides; Pass and no match go on (-1). */
static __always_inline int tier_verdict(const struct tier_pick *t, __u32 *ref, bool *audit)
{
	if (t->action == POLICY_ACTION_ACCEPT || t->action == POLICY_ACTION_AUDIT) {
		*ref = t->ref;
		*audit = t->action == POLICY_ACTION_AUDIT;
		return 0;
	}
	if (t->action == POLICY_ACTION_DENY) {
		*ref = t->ref;
		return DROP_POLICY_DENIED;
	}
	return -1;
}

/* 0 when forwarded, else DROP_POLICY_DENIED. *ref names what decided (a NetworkPolicy's
 * ref or a cluster policy rule's; 0 when nothing isolates the endpoint that way), and
 * *audit is set when it is forwarded only because the denying policy is in audit mode. */
static __always_inline int policy_check(const struct endpoint_info *ep, __u8 direction,
					 __u32 identity, __u32 cidr_identity,
					 const struct pkt *p, __u32 *ref, bool *audit)
{
	bool ingress = direction == DIR_INGRESS;
	__u32 isolated = ingress ? EP_F_INGRESS_ISOLATED : EP_F_EGRESS_ISOLATED;
	__u32 tiered = ingress ? EP_F_INGRESS_TIERED : EP_F_EGRESS_TIERED;
	__u32 audited = ingress ? EP_F_INGRESS_AUDIT : EP_F_EGRESS_AUDIT;
	struct policy_pick pick = {};
	struct policy_key k = {};
	int ret;

	*ref = 0;
	*audit = false;
	if (!(ep->flags & (isolated | tiered)))
		return 0;

	k.prefixlen = POLICY_PREFIX_FULL;
	k.ep_id = ep->ep_id;
	k.direction = direction;
	k.identity = identity;
	k.proto = p->proto;
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP)
		k.dport = p->dport;

	policy_take(&pick, policy.lookup(&k));
	if (cidr_identity && cidr_identity != identity) {
		k.identity = cidr_identity;
		policy_take(&pick, policy.lookup(&k));
	}
	if (identity != IDENTITY_ANY) {
		k.identity = IDENTITY_ANY;
		policy_take(&pick, policy.lookup(&k));
	}

	ret = tier_verdict(&pick.admin, ref, audit);
	if (ret >= 0 || ret == DROP_POLICY_DENIED)
		return ret;
	if (ep->flags & isolated) {
		*ref = pick.np_ref;
		if (pick.np_ref)
			return 0;
		if (ep->flags & audited) {
			*audit = true;
			return 0;
		}
		return DROP_POLICY_DENIED;
	}
	ret = tier_verdict(&pick.baseline, ref, audit);
	if (ret >= 0 || ret == DROP_POLICY_DENIED)
		return ret;
	return 0;
}

#endif
