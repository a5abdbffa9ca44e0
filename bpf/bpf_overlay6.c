/* from_overlay6: IPv6 inner packets decapsulated on the vxlan device, tail-called by
 * from_overlay (entry.h). The underlay stays IPv4: a sender that belongs to a known node
 * must come from that node's underlay address, as for IPv4 (bpf_overlay.c). */
#include "lib/conntrack6.h"
#include "lib/entry6.h"
#include "lib/forward6.h"
#include "lib/policy.h"

int from_overlay6(struct __sk_buff *skb)
{
	struct flow_ctx c = { .direction = DIR_INGRESS, .hook = HOOK_FROM_OVERLAY };
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

	/* No neighbour discovery across the overlay: the programs route pods at L3. */
	if (!entry6_prologue(skb, &cfg, &p, &c, false, true, &verdict))
		return verdict;

	addr = p.saddr6;
	peer = ipcache6_lookup(&addr);
	c.src_identity = peer ? peer->identity : IDENTITY_WORLD;
	if (peer && peer->tunnel_ip) {
		struct bpf_tunnel_key key = {};

		if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0 ||
		    key.remote_ipv4 != bpf_ntohl(peer->tunnel_ip))
			return drop6(skb, cfg, &p, &c, DROP_INVALID_SOURCE);
	}
	addr = p.daddr6;
	dst_ep = endpoints6.lookup(&addr);
	if (dst_ep) {
		c.dst_identity = dst_ep->identity;
		c.dst_ep_id = dst_ep->ep_id;
	}

	now = bpf_ktime_get_ns();
	status = ct6_lookup(skb, cfg, &p, now, &ct);
	c.ct_status = status;
	c.ct_known = 1;
	if (!dst_ep)
		return drop6(skb, cfg, &p, &c, DROP_UNKNOWN_DESTINATION);
	if (status != CT_NEW) {
		/* A reply to a local client of a Service whose backend is on that node. */
		ret = lb6_reply_of(skb, status, ct, HOOK_FROM_OVERLAY);
		if (ret < 0)
			return drop6(skb, cfg, &p, &c, ret);
		return deliver_local_family(skb, cfg, &p, &c, dst_ep, true);
	}

	ret = policy_check(dst_ep, DIR_INGRESS, c.src_identity, peer ? peer->cidr_identity : 0,
			   &p, &c.ingress_ref, &audit);
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	flow_audit(&c, DIR_INGRESS, audit);
	ret = new_flow_commit6(skb, cfg, &p, &c, NULL, now);
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	return deliver_local_family(skb, cfg, &p, &c, dst_ep, true);
}
