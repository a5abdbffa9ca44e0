/* Programs on a pod's host-side veth: from_pod (tc ingress: what the pod sends) and
 * to_pod (tc egress: what reaches the pod through the host stack). */
#include "lib/conntrack.h"
#include "lib/entry.h"
#include "lib/lb.h"
#include "lib/newflow.h"
#include "lib/policy.h"

/* What a pod sends: anti-spoofing, Service translation, conntrack (replies of
 * Service connections reverse-translated, and ICMP errors about them sent on to the
 * backend), the sender's egress policy, then the receiver's ingress policy when it is
 * local, then delivery. */
int from_pod(struct __sk_buff *skb)
{
	struct flow_ctx c = { .direction = DIR_EGRESS, .hook = HOOK_FROM_POD };
	struct endpoint_info *src, *dst_ep;
	struct ipcache_value *peer, *self;
	struct node_config *cfg;
	enum ct_status status;
	struct ct_value *ct;
	struct pkt p = {};
	__u32 cidr = 0, client;
	bool audit;
	int verdict, ret;
	__u64 now;

	if (!entry_prologue(skb, &cfg, &p, &c, true, &verdict))
		return verdict;

	src = endpoints.lookup(&p.saddr);
	if (!src || src->ifindex != skb->ingress_ifindex)
		return drop(skb, cfg, &p, &c, DROP_INVALID_SOURCE);
	c.src_identity = src->identity;
	c.src_ep_id = src->ep_id;
	client = p.saddr;
	trace_mark_live(skb, &p, &c, src->ep_id);

	now = bpf_ktime_get_ns();
	ret = lb_frontend(skb, cfg, &p, &c, LB_SCOPE_INTERNAL, now);
	if (ret == DROP_NO_SERVICE_BACKEND) {
		drop(skb, cfg, &p, &c, ret);
		return lb_refuse(skb, &p, true);
	}
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);

	status = ct_lookup(skb, cfg, &p, now, &ct);
	c.ct_status = status;
	c.ct_known = 1;
	if (status != CT_NEW) {
		ret = lb_reverse(skb, &p, status, ct);
		if (ret < 0)
			return drop(skb, cfg, &p, &c, ret);
		return lb_deliver_reply(skb, cfg, &p, &c, status, ct);
	}
	/* An ICMP error about a Service's reply, sent to its frontend: on to the backend. */
	ret = lb_frontend_icmp(skb, cfg, &p, &c, LB_SCOPE_INTERNAL, now);
	if (ret == LB_RELATED)
		return deliver(skb, cfg, &p, &c);
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);

	dst_ep = endpoints.lookup(&p.daddr);
	peer = ipcache_lookup(p.daddr);
	if (dst_ep) {
		c.dst_identity = dst_ep->identity;
		c.dst_ep_id = dst_ep->ep_id;
	} else {
		c.dst_identity = peer ? peer->identity : IDENTITY_WORLD;
	}
	if (peer)
		cidr = peer->cidr_identity;
	self = ipcache_lookup(client); /* p.saddr is LB_HAIRPIN_IP after a hairpin */
	/* A pod reaching itself through a Service is its own loopback, which no policy
	 * judges (the evaluator's self pairs; Cilium skips policy for hairpin flows too). */
	if (c.ct_flags & CT_F_HAIRPIN)
		goto commit;
	ret = policy_check(src, DIR_EGRESS, c.dst_identity, cidr, &p, &c.egress_ref, &audit);
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);
	flow_audit(&c, DIR_EGRESS, audit);

	if (dst_ep) {
		c.direction = DIR_INGRESS;
		ret = policy_check(dst_ep, DIR_INGRESS, c.src_identity,
				   self ? self->cidr_identity : 0, &p, &c.ingress_ref, &audit);
		if (ret < 0)
			return drop(skb, cfg, &p, &c, ret);
		flow_audit(&c, DIR_INGRESS, audit);
		c.direction = DIR_EGRESS;
	}

commit:
	ret = new_flow_commit(skb, cfg, &p, &c, now);
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);
	return deliver(skb, cfg, &p, &c);
}

/* Traffic the host stack routed to the pod: the node itself (always allowed, the
 * Kubernetes rule), replies from the world after un-NAT, kube-proxy DNAT. Packets
 * podwire redirected with redirect_peer never pass here. */
int to_pod(struct __sk_buff *skb)
{
	struct flow_ctx c = { .direction = DIR_INGRESS, .hook = HOOK_TO_POD };
	struct endpoint_info *dst_ep;
	struct ipcache_value *peer;
	struct node_config *cfg;
	enum ct_status status;
	struct ct_value *ct;
	struct pkt p = {};
	int verdict, ret;
	bool audit;
	__u64 now;

	if (!entry_prologue(skb, &cfg, &p, &c, true, &verdict))
		return verdict;

	dst_ep = endpoints.lookup(&p.daddr);
	if (!dst_ep || dst_ep->ifindex != skb->ifindex)
		return drop(skb, cfg, &p, &c, DROP_UNKNOWN_DESTINATION);
	c.dst_identity = dst_ep->identity;
	c.dst_ep_id = dst_ep->ep_id;

	now = bpf_ktime_get_ns();
	status = ct_lookup(skb, cfg, &p, now, &ct);
	c.ct_status = status;
	c.ct_known = 1;
	if (status != CT_NEW)
		return pass_on(skb, &p, &c);

	peer = ipcache_lookup(p.saddr);
	c.src_identity = peer ? peer->identity : IDENTITY_WORLD;
	if (c.src_identity != IDENTITY_HOST) {
		ret = policy_check(dst_ep, DIR_INGRESS, c.src_identity,
				   peer ? peer->cidr_identity : 0, &p, &c.ingress_ref, &audit);
		if (ret < 0)
			return drop(skb, cfg, &p, &c, ret);
		flow_audit(&c, DIR_INGRESS, audit);
	}

	ret = new_flow_commit(skb, cfg, &p, &c, now);
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);
	return pass_on(skb, &p, &c);
}
