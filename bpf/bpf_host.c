/* from_netdev: tc ingress of the node's uplink, the device holding its address. A packet
 * from outside (the world, another node) to a NodePort, `<node address>:nodePort`, is
 * translated to a backend on any node, in the order of Cilium's bpf_host.c nodeport path
 * (lb.h); everything else goes on to the host stack untouched, as if nothing were here.
 *
 * externalTrafficPolicy Local: only this node's backends, the client's address kept, so
 * the backend's ingress policy judges the client (ipBlock). Cluster: the client is SNATed
 * to the address it reached, as kube-proxy masquerades it; a backend here then sees this
 * node (allowed, as the node's own traffic is), one on another node sees this node's
 * address (remote-node, and an ipBlock holding it), and its replies come back through
 * the tunnel. Replies leave through the uplink again (lb_deliver_reply), and the client's
 * ICMP errors about them (a router's frag-needed on a narrower way to it) go on to the
 * backend that sent them. */
#include "lib/conntrack.h"
#include "lib/entry.h"
#include "lib/lb.h"
#include "lib/newflow.h"
#include "lib/policy.h"

int from_netdev(struct __sk_buff *skb)
{
	struct flow_ctx c = { .direction = DIR_INGRESS, .hook = HOOK_FROM_NETDEV };
	struct endpoint_info *dst_ep;
	struct ipcache_value *peer;
	struct node_config *cfg;
	enum ct_status status;
	struct ct_value *ct;
	struct pkt p = {};
	__u32 zero = 0;
	bool audit;
	int ret;
	__u64 now;

	/* The node's own traffic is not this program's to judge: whatever is no IPv4 packet
	 * it can read goes on as it came, uncounted. An ICMP error may be about a NodePort's
	 * reply (lb_frontend_icmp). */
	cfg = config.lookup(&zero);
	if (!cfg || skb->protocol != ETH_P_IP_BE || parse_ipv4(skb, &p) < 0 ||
	    !(lb_proto(p.proto) || is_icmp_error(&p)))
		return TC_ACT_OK;
	/* A traced packet from outside (bpf/lib/trace.h) reports this hop and the ones after
	 * it: what the NodePort translated it to, the backend's verdict, where it went. */
	trace_arm(&p, &c);

	peer = ipcache_lookup(p.saddr);
	c.src_identity = peer ? peer->identity : IDENTITY_WORLD;
	now = bpf_ktime_get_ns();
	ret = lb_frontend_icmp(skb, cfg, &p, &c, LB_SCOPE_EXTERNAL, now);
	if (ret == LB_RELATED)
		return deliver(skb, cfg, &p, &c);
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);
	ret = lb_frontend(skb, cfg, &p, &c, LB_SCOPE_EXTERNAL, now);
	if (!c.service_id)
		return TC_ACT_OK; /* no NodePort's */
	if (ret == DROP_NO_SERVICE_BACKEND) {
		drop(skb, cfg, &p, &c, ret);
		return lb_refuse(skb, &p, false);
	}
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);
	if (c.ct_flags & CT_F_SNAT)
		c.src_identity = IDENTITY_HOST;

	dst_ep = endpoints.lookup(&p.daddr);
	if (dst_ep) {
		c.dst_identity = dst_ep->identity;
		c.dst_ep_id = dst_ep->ep_id;
	} else {
		struct ipcache_value *dst = ipcache_lookup(p.daddr);

		c.dst_identity = dst ? dst->identity : IDENTITY_WORLD;
	}

	status = ct_lookup(skb, cfg, &p, now, &ct);
	if (status != CT_NEW) {
		/* A SNATed tuple is this client's only while its entry says so. */
		if ((c.ct_flags & CT_F_SNAT) && ct &&
		    (ct->nat_addr != c.nat_addr || ct->nat_port != c.nat_port))
			return drop(skb, cfg, &p, &c, DROP_NO_NAT_PORT);
		return deliver(skb, cfg, &p, &c);
	}

	/* The backend's ingress policy, when it is here and the client kept its address;
	 * a backend on another node is judged there (from_overlay). */
	if (dst_ep && c.src_identity != IDENTITY_HOST) {
		ret = policy_check(dst_ep, DIR_INGRESS, c.src_identity,
				   peer ? peer->cidr_identity : 0, &p, &c.ingress_ref, &audit);
		if (ret < 0)
			return drop(skb, cfg, &p, &c, ret);
		flow_audit(&c, DIR_INGRESS, audit);
	}
	c.ct_flags |= CT_F_NODEPORT;
	ret = new_flow_commit(skb, cfg, &p, &c, now);
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);
	return deliver(skb, cfg, &p, &c);
}
