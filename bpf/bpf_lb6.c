/* The IPv6 load balancer's programs (lib/lb6.h), tail-called through lb6_progs so that
 * each of them, from_pod6 and from_overlay6 stays well within the verifier's limits. */
#include "lib/entry6.h"
#include "lib/forward6.h"
#include "lib/lb6.h"

/* From from_pod6, for a packet to an IPv6 frontend: the backend's address and port put in,
 * then from_pod6 again, which judges the translated packet (conntrack, egress policy
 * against the backend) with the Service in lb6_translated. A frontend without backends is
 * answered at once. */
int lb6_frontend(struct __sk_buff *skb)
{
	struct flow_ctx c = { .direction = DIR_EGRESS, .hook = HOOK_FROM_POD };
	struct lb6_translated *handed;
	struct endpoint_info *src;
	struct node_config *cfg;
	struct ip6_addr addr, frontend;
	struct pkt p = {};
	__u32 zero = 0;
	int verdict, ret;

	if (!entry6_prologue(skb, &cfg, &p, &c, true, true, &verdict))
		return verdict;
	frontend = p.daddr6;
	addr = p.saddr6;
	src = endpoints6.lookup(&addr);
	if (src) {
		c.src_identity = src->identity;
		c.src_ep_id = src->ep_id;
	}
	ret = lb6_translate(skb, cfg, &p, &c, bpf_ktime_get_ns());
	if (ret == DROP_NO_SERVICE_BACKEND) {
		drop6(skb, cfg, &p, &c, ret);
		return lb6_refuse(skb, &p);
	}
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	handed = lb6_translated.lookup(&zero);
	if (!handed)
		return drop6(skb, cfg, &p, &c, DROP_NO_CONFIG);
	handed->service_id = c.service_id;
	handed->frontend_port = c.frontend_port;
	handed->frontend_addr = frontend;
	handed->ct_flags = c.ct_flags;
	progs6.call(skb, HOOK_FROM_POD);
	handed->service_id = 0; /* no from_pod6 to go on with */
	return drop6(skb, cfg, &p, &c, DROP_UNSUPPORTED_L3);
}

/* From from_pod6 or from_overlay6 (skb->cb's hook), for a reply of a connection made
 * through a Service: back from the frontend its entry keeps, then delivered as that hook
 * delivers a reply. */
int lb6_reply(struct __sk_buff *skb)
{
	__u32 hook = skb->cb[LB6_CB_HOOK];
	struct flow_ctx c = {
		.direction = hook == HOOK_FROM_POD ? DIR_EGRESS : DIR_INGRESS,
		.hook = hook, .ct_status = CT_REPLY, .ct_known = 1,
	};
	struct node_config *cfg;
	struct ct6_value *ct;
	struct pkt p = {};
	int verdict, ret;

	if (!entry6_prologue(skb, &cfg, &p, &c, false, false, &verdict))
		return verdict;
	ct = lb6_reply_entry(&p);
	if (!ct)
		return drop6(skb, cfg, &p, &c, DROP_UNKNOWN_DESTINATION); /* collected since */
	c.service_id = ct->ct.service_id;
	c.frontend_port = ct->ct.rev_port;
	ret = lb6_rev_nat(skb, &p, ct);
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	return deliver6(skb, cfg, &p, &c);
}

/* From from_pod6, for the client's ICMPv6 error about a reply it got from a frontend, sent
 * to that frontend: on to the backend that sent the reply (lb6_to_backend_icmp). */
int lb6_frontend_icmp(struct __sk_buff *skb)
{
	struct flow_ctx c = { .direction = DIR_EGRESS, .hook = HOOK_FROM_POD,
			      .ct_status = CT_RELATED, .ct_known = 1 };
	struct endpoint_info *src;
	struct node_config *cfg;
	struct ip6_addr addr;
	struct pkt p = {};
	int verdict, ret;

	if (!entry6_prologue(skb, &cfg, &p, &c, true, false, &verdict))
		return verdict;
	addr = p.saddr6;
	src = endpoints6.lookup(&addr);
	if (src) {
		c.src_identity = src->identity;
		c.src_ep_id = src->ep_id;
	}
	ret = lb6_to_backend_icmp(skb, cfg, &p, &c, bpf_ktime_get_ns());
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	return deliver6(skb, cfg, &p, &c);
}

/* From from_pod6 or from_overlay6 (skb->cb's hook), for an ICMPv6 error about what a
 * Service connection's client sent: translated back to what the client sent, then
 * delivered as the hook delivers a reply. */
int lb6_related(struct __sk_buff *skb)
{
	__u32 hook = skb->cb[LB6_CB_HOOK];
	struct flow_ctx c = {
		.direction = hook == HOOK_FROM_POD ? DIR_EGRESS : DIR_INGRESS,
		.hook = hook, .ct_status = CT_RELATED, .ct_known = 1,
	};
	struct ct6_key quoted = { .scope = CT_SCOPE_FLOW };
	struct node_config *cfg;
	struct ct6_value *ct;
	struct pkt p = {};
	int verdict, ret;

	if (!entry6_prologue(skb, &cfg, &p, &c, false, false, &verdict))
		return verdict;
	ret = parse_icmp6_inner(skb, &p, &quoted);
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	ct = conntrack6.lookup(&quoted);
	if (!ct)
		return drop6(skb, cfg, &p, &c, DROP_UNKNOWN_DESTINATION); /* collected since */
	c.service_id = ct->ct.service_id;
	c.frontend_port = ct->ct.rev_port;
	ret = lb6_rev_nat_icmp(skb, &p, ct);
	if (ret < 0)
		return drop6(skb, cfg, &p, &c, ret);
	return deliver6(skb, cfg, &p, &c);
}
