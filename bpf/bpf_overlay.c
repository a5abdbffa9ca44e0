/* from_overlay: tc ingress of the vxlan device (collect_md). Packets from pods on
 * other nodes, already decapsulated; the sender is resolved by its source IP in
 * this node's ipcache (identities are node-local). Replies of connections this node's
 * pods made through a Service are reverse-translated here, and so are those of NodePort
 * clients this node SNATed to a backend on another node (they then leave by the uplink). */
#include "lib/conntrack.h"
#include "lib/entry.h"
#include "lib/lb.h"
#include "lib/newflow.h"
#include "lib/policy.h"

int from_overlay(struct __sk_buff *skb)
{
	struct flow_ctx c = { .direction = DIR_INGRESS, .hook = HOOK_FROM_OVERLAY };
	struct endpoint_info *dst_ep;
	struct ipcache_value *peer;
	struct node_config *cfg;
	enum ct_status status;
	struct ct_value *ct;
	struct pkt p = {};
	int verdict, ret;
	__u64 now;

	/* No ARP across the overlay: the programs route pod traffic at L3. */
	if (!entry_prologue(skb, &cfg, &p, &c, false, &verdict))
		return verdict;

	peer = ipcache_lookup(p.saddr);
	c.src_identity = peer ? peer->identity : IDENTITY_WORLD;
	/* A sender that belongs to a known node must come from that node's underlay
	 * address: one node cannot speak for another node's pods. */
	if (peer && peer->tunnel_ip) {
		struct bpf_tunnel_key key = {};

		if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0 ||
		    key.remote_ipv4 != bpf_ntohl(peer->tunnel_ip))
			return drop(skb, cfg, &p, &c, DROP_INVALID_SOURCE);
	}
	dst_ep = endpoints.lookup(&p.daddr);
	if (dst_ep) {
		c.dst_identity = dst_ep->identity;
		c.dst_ep_id = dst_ep->ep_id;
	}

	now = bpf_ktime_get_ns();
	status = ct_lookup(skb, cfg, &p, now, &ct);
	c.ct_status = status;
	c.ct_known = 1;
	if (status != CT_NEW) {
		ret = lb_reverse(skb, &p, status, ct);
		if (ret < 0)
			return drop(skb, cfg, &p, &c, ret);
		/* A backend's reply to a NodePort client this node SNATed: out of the uplink. */
		if (ct && status != CT_ESTABLISHED && (ct->flags & CT_F_NODEPORT))
			return deliver_netdev(skb, cfg, &p, &c);
		if (!dst_ep)
			return drop(skb, cfg, &p, &c, DROP_UNKNOWN_DESTINATION);
		return deliver_local(skb, cfg, &p, &c, dst_ep);
	}
	if (!dst_ep)
		return drop(skb, cfg, &p, &c, DROP_UNKNOWN_DESTINATION);

	ret = policy_check(dst_ep, DIR_INGRESS, c.src_identity, peer ? peer->cidr_identity : 0,
			   &p, &c.ingress_ref);
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);
	/* From a node's own address: a NodePort client that node SNATed, whose replies must
	 * go back to it to be reverse-translated. */
	if (peer && peer->identity == IDENTITY_REMOTE_NODE)
		c.ct_flags |= CT_F_TUNNEL_REPLY;
	ret = new_flow_commit(skb, cfg, &p, &c, now);
	if (ret < 0)
		return drop(skb, cfg, &p, &c, ret);
	return deliver_local(skb, cfg, &p, &c, dst_ep);
}
