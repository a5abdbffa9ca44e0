/* The IPv6 load balancer: a ClusterIP frontend translated to a backend, its replies back,
 * in the order of IPv4's (lb.h) and of Cilium's lb6_* (bpf/lib/lb.h): the backend a
 * connection was given is kept in a CT_SCOPE_SERVICE entry of conntrack6 under the tuple
 * the client sent, the hook goes on with the translated tuple (conntrack, policy against
 * the backend), and the connection's entry keeps what its replies get back (rev_addr6 and
 * rev_port of its ct6_value), so they are reverse-translated for as long as it lives,
 * whatever becomes of the frontend. A frontend without backends is refused at once with
 * an ICMPv6 port unreachable (lb6_refuse).
 *
 * These steps run in programs of their own (bpf_lb6.c), tail-called through lb6_progs:
 * inlined, the 16-byte rewrites took from_pod6 past the verifier's million instructions.
 * TCP and UDP frontends; a pod reaching itself (hairpin) and ICMPv6 errors about a
 * Service connection, both ways, as IPv4 (lb.h). SCTP is IPv4's only so far. */
#ifndef PODWIRE_LB6_H
#define PODWIRE_LB6_H

#include "conntrack6.h"
#include "lb.h"
#include "maps.h"
#include "parse6.h"

#define LB6_SADDR_OFF (ETH_HLEN + 8)
#define LB6_DADDR_OFF (ETH_HLEN + 24)
#define ICMPV6_PORT_UNREACH 4

static __always_inline bool lb6_proto(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

/* The source a pod reaching itself through a Service is given (types.h). */
static __always_inline struct ip6_addr lb6_hairpin_ip(void)
{
	struct ip6_addr a = { .w = { bpf_htonl(LB6_HAIRPIN_IP_HIGH), 0, 0,
				     bpf_htonl(LB_HAIRPIN_IP) } };

	return a;
}

/* Slot 0 of the internal frontend p is sent to, or NULL. */
static __always_inline struct lb_value *lb6_frontend_of(const struct pkt *p)
{
	struct lb6_key k = { .address = p->daddr6, .port = p->dport, .proto = p->proto,
			     .scope = LB_SCOPE_INTERNAL };

	if (!lb6_proto(p->proto))
		return NULL;
	return lb6_services.lookup(&k);
}

/* Rewrite one address (at addr_off) and its port (at port_off in the L4 header) with the
 * L4 checksum updated; IPv6 has no header checksum, its addresses are in the pseudo
 * header. */
static __always_inline int lb6_rewrite(struct __sk_buff *skb, const struct pkt *p,
				       __u32 addr_off, struct ip6_addr *old_addr,
				       struct ip6_addr *new_addr, __u32 port_off, __u16 old_port,
				       __u16 new_port)
{
	__u64 l4_flags = BPF_F_PSEUDO_HDR;
	__u32 csum_off = 0;
	__s64 diff;

	if (p->later_fragment) {
		/* No L4 header here; the first fragment's carried the checksum. */
	} else if (p->proto == IPPROTO_TCP) {
		csum_off = p->l4_off + 16;
	} else if (p->proto == IPPROTO_ICMPV6) {
		csum_off = p->l4_off + 2; /* an error's own addresses: no ports to change */
	} else {
		csum_off = p->l4_off + 6;
		l4_flags |= BPF_F_MARK_MANGLED_0; /* a zero UDP checksum means none: keep it */
	}
	diff = bpf_csum_diff((__be32 *)old_addr, sizeof(*old_addr), (__be32 *)new_addr,
			     sizeof(*new_addr), 0);
	if (diff < 0)
		return DROP_MALFORMED;
	if (csum_off && bpf_l4_csum_replace(skb, csum_off, 0, diff, l4_flags) < 0)
		return DROP_MALFORMED;
	if (bpf_skb_store_bytes(skb, addr_off, new_addr, sizeof(*new_addr), 0) < 0)
		return DROP_MALFORMED;
	if (old_port != new_port && !p->later_fragment) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, sizeof(new_port)) < 0 ||
		    bpf_skb_store_bytes(skb, p->l4_off + port_off, &new_port, sizeof(new_port),
					0) < 0)
			return DROP_MALFORMED;
	}
	return 0;
}

/* A backend for a new connection: the one ClientIP affinity remembers while it is fresh
 * and its frontend still holds it in the remembered slot, else a slot at random (recorded
 * for affinity), as lb_select. */
static __always_inline int lb6_select(const struct lb6_key *frontend,
				      const struct lb_value *svc, const struct ip6_addr *client,
				      __u64 now, __u32 *backend_id)
{
	struct lb6_affinity_key ak = { .client = *client, .service_id = svc->service_id };
	struct lb6_key k = *frontend;
	struct lb_value *slot;

	if (svc->affinity_timeout) {
		struct lb_affinity_value *av = lb6_affinity.lookup(&ak);

		if (av && now - av->last_used <= (__u64)svc->affinity_timeout * CT_NSEC_PER_SEC &&
		    av->slot && av->slot <= svc->count) {
			k.slot = av->slot;
			slot = lb6_services.lookup(&k);
			if (slot && slot->backend_id == av->backend_id) {
				*backend_id = av->backend_id;
				av->last_used = now;
				return 0;
			}
		}
	}
	k.slot = bpf_get_prandom_u32() % svc->count + 1;
	slot = lb6_services.lookup(&k);
	if (!slot)
		return DROP_NO_SERVICE_BACKEND; /* the agent is shrinking it: slot 0 went first */
	*backend_id = slot->backend_id;
	if (svc->affinity_timeout) {
		struct lb_affinity_value av = { .last_used = now, .backend_id = slot->backend_id,
						.slot = k.slot };

		lb6_affinity.update(&ak, &av);
	}
	return 0;
}

/* The backend of this packet's connection: the one its CT_SCOPE_SERVICE entry remembers
 * while that backend exists, else a new choice, remembered (lb_backend_of). */
static __always_inline int lb6_backend_of(const struct node_config *cfg, const struct pkt *p,
					  const struct lb6_key *frontend,
					  const struct lb_value *svc, __u64 now,
					  struct lb6_backend **backend)
{
	struct ct6_key sk = { .scope = CT_SCOPE_SERVICE };
	struct ct6_value *sv, fresh = { .ct = { .service_id = svc->service_id } };
	__u32 backend_id = 0;
	int ret;

	ct6_key_of(p, &sk);
	sv = conntrack6.lookup(&sk);
	if (sv && ct_alive(cfg, &sv->ct, p->proto, now) && !ct_reopens(&sv->ct, p)) {
		*backend = lb6_backends.lookup(&sv->ct.backend_id);
		if (*backend) {
			ct_update_service(&sv->ct, p);
			ct_touch(&sv->ct, now);
			return 0;
		}
	}
	ret = lb6_select(frontend, svc, &p->saddr6, now, &backend_id);
	if (ret < 0)
		return ret;
	*backend = lb6_backends.lookup(&backend_id);
	if (!*backend)
		return DROP_NO_SERVICE_BACKEND;
	fresh.ct.backend_id = backend_id;
	ct_fill_new(p, now, &fresh.ct);
	if (conntrack6.update(&sk, &fresh) < 0)
		return DROP_CT_FULL;
	return 0;
}

/* A packet to an internal frontend, DNATed to its connection's backend, and SNATed to the
 * hairpin address when that is the client itself (CT_F_HAIRPIN in c): 0 (p then holds the
 * translated tuple, c the Service and frontend port) or a drop reason;
 * DROP_NO_SERVICE_BACKEND is answered with lb6_refuse. */
static __always_inline int lb6_translate(struct __sk_buff *skb, const struct node_config *cfg,
					 struct pkt *p, struct flow_ctx *c, __u64 now)
{
	struct lb6_key k = { .address = p->daddr6, .port = p->dport, .proto = p->proto,
			     .scope = LB_SCOPE_INTERNAL };
	struct lb6_backend *be = NULL;
	struct ip6_addr backend, client, hairpin;
	struct lb_value *svc;
	int ret;

	if (!lb6_proto(p->proto))
		return 0;
	svc = lb6_services.lookup(&k);
	if (!svc)
		return 0; /* removed since from_pod6 looked */
	c->service_id = svc->service_id;
	c->frontend_port = p->dport;
	if (!svc->count)
		return DROP_NO_SERVICE_BACKEND;
	ret = lb6_backend_of(cfg, p, &k, svc, now, &be);
	if (ret < 0)
		return ret;
	backend = be->address;
	ret = lb6_rewrite(skb, p, LB6_DADDR_OFF, &k.address, &backend, LB_L4_DPORT, p->dport,
			  be->port);
	if (ret < 0)
		return ret;
	p->daddr6 = backend;
	p->dport = be->port;
	client = p->saddr6;
	if (!ip6_equal(&backend, &client))
		return 0;
	/* Hairpin: the pod's kernel would drop a packet from its own address. */
	hairpin = lb6_hairpin_ip();
	ret = lb6_rewrite(skb, p, LB6_SADDR_OFF, &client, &hairpin, LB_L4_SPORT, p->sport,
			  p->sport);
	if (ret < 0)
		return ret;
	p->saddr6 = hairpin;
	c->ct_flags |= CT_F_HAIRPIN;
	return 0;
}

/* The entry of the connection a reply (p) belongs to, as from_pod6 and from_overlay6 found
 * it (ct6_lookup), or NULL when it was collected since. */
static __always_inline struct ct6_value *lb6_reply_entry(const struct pkt *p)
{
	struct ct6_key fwd = {}, k = { .scope = CT_SCOPE_FLOW };

	ct6_key_of(p, &fwd);
	ct6_reverse(&fwd, &k);
	return conntrack6.lookup(&k);
}

/* A reply of a connection made through a Service (its entry v): back from the frontend's
 * address and port, and to the pod's own address after a hairpin (client and backend are
 * one pod there). */
static __always_inline int lb6_rev_nat(struct __sk_buff *skb, struct pkt *p,
				       const struct ct6_value *v)
{
	struct ip6_addr from = v->rev_addr6, old = p->saddr6;
	int ret;

	if (v->ct.flags & CT_F_HAIRPIN) {
		struct ip6_addr hairpin = p->daddr6;

		ret = lb6_rewrite(skb, p, LB6_DADDR_OFF, &hairpin, &old, LB_L4_DPORT, p->dport,
				  p->dport);
		if (ret < 0)
			return ret;
		p->daddr6 = old;
	}

	ret = lb6_rewrite(skb, p, LB6_SADDR_OFF, &old, &from, LB_L4_SPORT, p->sport,
			  v->ct.rev_port);
	if (ret < 0)
		return ret;
	p->saddr6 = from;
	p->sport = v->ct.rev_port;
	return 0;
}

/* Where the packet an ICMPv6 error quotes lies (parse_icmp6_inner reads its tuple): its
 * IPv6 header right after the error's 8 bytes, its ports right after that. */
#define LB6_QUOTE_OFF(p) ((p)->l4_off + 8)
#define LB6_QUOTE_PORTS_OFF(p) (LB6_QUOTE_OFF(p) + IPV6_HLEN)

/* One address (at off in the quoted header) and a port (at port_off in its ports) of the
 * quoted packet: the ICMPv6 checksum covers them as message bytes, no pseudo header. The
 * quoted L4 checksum is left as it is: receivers do not check what an error quotes. */
static __always_inline int lb6_requote(struct __sk_buff *skb, const struct pkt *p, __u32 off,
				       struct ip6_addr *old_addr, struct ip6_addr *new_addr,
				       __u32 port_off, __u16 old_port, __u16 new_port)
{
	__u32 csum_off = p->l4_off + 2;
	__s64 diff;

	diff = bpf_csum_diff((__be32 *)old_addr, sizeof(*old_addr), (__be32 *)new_addr,
			     sizeof(*new_addr), 0);
	if (diff < 0 || bpf_l4_csum_replace(skb, csum_off, 0, diff, 0) < 0 ||
	    bpf_skb_store_bytes(skb, LB6_QUOTE_OFF(p) + off, new_addr, sizeof(*new_addr), 0) < 0)
		return DROP_MALFORMED;
	if (old_port != new_port &&
	    (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, sizeof(new_port)) < 0 ||
	     bpf_skb_store_bytes(skb, LB6_QUOTE_PORTS_OFF(p) + port_off, &new_port,
				 sizeof(new_port), 0) < 0))
		return DROP_MALFORMED;
	return 0;
}

/* An ICMPv6 error about a packet a Service connection's client sent (quoting client ->
 * backend; v the connection's entry), on its way to the client: the quoted packet is
 * given the frontend as destination again, so the client's socket finds it (a UDP socket
 * connected to a ClusterIP gets ECONNREFUSED from a backend's port unreachable, a packet
 * too big lowers its path MTU), and the error comes from the frontend when the backend
 * sent it (a router on the way keeps its own address). After a hairpin the error,
 * addressed to the hairpin address, goes to the pod itself, quoting its own address as
 * the source. As lb_rev_nat_icmp for IPv4. */
static __always_inline int lb6_rev_nat_icmp(struct __sk_buff *skb, struct pkt *p,
					    const struct ct6_value *v)
{
	struct ip6_addr frontend = v->rev_addr6, old;
	struct ct6_key q = {};
	int ret;

	ret = parse_icmp6_inner(skb, p, &q);
	if (ret < 0)
		return ret;
	old = q.daddr;
	ret = lb6_requote(skb, p, LB6_DADDR_OFF - ETH_HLEN, &old, &frontend, LB_L4_DPORT,
			  q.dport, v->ct.rev_port);
	if (ret < 0)
		return ret;
	if (v->ct.flags & CT_F_HAIRPIN) {
		struct ip6_addr hairpin = q.saddr, self = q.daddr; /* its own backend */

		ret = lb6_requote(skb, p, LB6_SADDR_OFF - ETH_HLEN, &hairpin, &self,
				  LB_L4_SPORT, 0, 0);
		if (ret < 0)
			return ret;
		ret = lb6_rewrite(skb, p, LB6_DADDR_OFF, &hairpin, &self, 0, 0, 0);
		if (ret < 0)
			return ret;
		p->daddr6 = self;
	}
	if (!ip6_equal(&p->saddr6, &q.daddr))
		return 0; /* from a router on the way: its own address stays */
	ret = lb6_rewrite(skb, p, LB6_SADDR_OFF, &old, &frontend, 0, 0, 0);
	if (ret < 0)
		return ret;
	p->saddr6 = frontend;
	return 0;
}

/* The internal frontend whose reply an ICMPv6 error quotes (q, its tuple: frontend ->
 * client), or NULL. */
static __always_inline struct lb_value *lb6_quoted_frontend(struct __sk_buff *skb,
							    const struct pkt *p,
							    struct ct6_key *q)
{
	struct lb6_key k = { .scope = LB_SCOPE_INTERNAL };

	if (parse_icmp6_inner(skb, p, q) < 0 || !lb6_proto(q->proto))
		return NULL;
	k.address = q->saddr;
	k.port = q->sport;
	k.proto = q->proto;
	return lb6_services.lookup(&k);
}

/* Whether p, an ICMPv6 error, is the client's about a reply of an internal frontend, sent
 * to it: from_pod6 then hands it to lb6_frontend_icmp. */
static __always_inline bool lb6_frontend_icmp_of(struct __sk_buff *skb, const struct pkt *p)
{
	struct ct6_key q = {};

	return is_icmp6_error(p) && lb6_quoted_frontend(skb, p, &q) &&
	       ip6_equal(&q.saddr, &p->daddr6);
}

/* That error, on to the backend that sent the reply, quoting the reply as the backend sent
 * it (backend -> client, or -> the hairpin address after a hairpin, then also from it), so
 * the backend's socket finds it: a packet too big lowers its path MTU, a port unreachable
 * refuses it. Only while the connection as the backend has it is still this client's, as
 * lb_frontend_icmp for IPv4; else DROP_UNKNOWN_DESTINATION: addressed to a ClusterIP, it
 * would reach no socket. c is given the Service as lb6_frontend gives it. */
static __always_inline int lb6_to_backend_icmp(struct __sk_buff *skb,
					       const struct node_config *cfg, struct pkt *p,
					       struct flow_ctx *c, __u64 now)
{
	struct ct6_key q = {}, client = {}, backend_side = { .scope = CT_SCOPE_FLOW };
	struct ip6_addr frontend, backend, hairpin = lb6_hairpin_ip();
	struct ct6_value *sv, *fv;
	struct lb6_backend *be;
	struct lb_value *svc;
	bool is_hairpin;
	int ret;

	svc = lb6_quoted_frontend(skb, p, &q);
	if (!svc)
		return DROP_UNKNOWN_DESTINATION;
	/* The client's connection to the frontend names its backend ... */
	ct6_reverse(&q, &client);
	client.scope = CT_SCOPE_SERVICE;
	sv = conntrack6.lookup(&client);
	if (!sv || !ct_alive(cfg, &sv->ct, client.proto, now))
		return DROP_UNKNOWN_DESTINATION;
	be = lb6_backends.lookup(&sv->ct.backend_id);
	if (!be)
		return DROP_UNKNOWN_DESTINATION;
	/* ... and the connection as the backend has it must still be this client's. */
	backend = be->address;
	is_hairpin = ip6_equal(&backend, &client.saddr);
	backend_side.saddr = client.saddr;
	if (is_hairpin)
		backend_side.saddr = hairpin;
	backend_side.sport = client.sport;
	backend_side.daddr = backend;
	backend_side.dport = be->port;
	backend_side.proto = client.proto;
	fv = conntrack6.lookup(&backend_side);
	if (!fv || !ct_alive(cfg, &fv->ct, client.proto, now) ||
	    fv->ct.service_id != svc->service_id || is_hairpin != !!(fv->ct.flags & CT_F_HAIRPIN))
		return DROP_UNKNOWN_DESTINATION;

	frontend = q.saddr;
	ret = lb6_requote(skb, p, LB6_SADDR_OFF - ETH_HLEN, &frontend, &backend, LB_L4_SPORT,
			  q.sport, be->port);
	if (ret < 0)
		return ret;
	ret = lb6_rewrite(skb, p, LB6_DADDR_OFF, &frontend, &backend, 0, 0, 0);
	if (ret < 0)
		return ret;
	p->daddr6 = backend;
	if (is_hairpin) {
		struct ip6_addr self = client.saddr;

		ret = lb6_requote(skb, p, LB6_DADDR_OFF - ETH_HLEN, &self, &hairpin, LB_L4_DPORT,
				  0, 0);
		if (ret < 0)
			return ret;
		ret = lb6_rewrite(skb, p, LB6_SADDR_OFF, &self, &hairpin, 0, 0, 0);
		if (ret < 0)
			return ret;
		p->saddr6 = hairpin;
		c->ct_flags |= CT_F_HAIRPIN;
	}
	c->service_id = svc->service_id;
	c->frontend_port = q.sport;
	return 0;
}

/* The ICMPv6 port unreachable a refused client gets (RFC 4443 3.1): the error's header
 * and as much of the packet as IPv4's refusal quotes (its IPv6 header and 8 bytes). */
struct lb6_icmp_refusal {
	struct ip6_hdr ip;
	__u8 type;
	__u8 code;
	__u16 csum;
	__u32 unused;
	__u8 quote[IPV6_HLEN + 8];
} __attribute__((aligned(4)));

/* The ICMPv6 checksum's pseudo header after the addresses: upper-layer length and next
 * header, both as 32-bit words (RFC 8200 8.1). */
struct lb6_pseudo_tail {
	__u32 length;
	__u32 nexthdr;
};

/* Turn the packet into that error, from the frontend, and hand it back into the client pod
 * (skb->ingress_ifindex is the host veth whose peer it is), as lb_refuse does for IPv4.
 * The caller has counted and reported the drop. */
static __always_inline int lb6_refuse(struct __sk_buff *skb, const struct pkt *p)
{
	struct lb6_icmp_refusal r = {};
	struct lb6_pseudo_tail tail = {
		.length = bpf_htonl(sizeof(r) - sizeof(r.ip)),
		.nexthdr = bpf_htonl(IPPROTO_ICMPV6),
	};
	__u8 eth[ETH_HLEN], swapped[ETH_HLEN];
	__s64 sum;

	if (p->later_fragment)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, r.quote, sizeof(r.quote)) < 0)
		return TC_ACT_SHOT;
	__builtin_memcpy(swapped, eth + 6, 6);
	__builtin_memcpy(swapped + 6, eth, 6);
	__builtin_memcpy(swapped + 12, eth + 12, 2);

	r.ip.version_tc = 0x60;
	r.ip.payload_len = bpf_htons(sizeof(r) - sizeof(r.ip));
	r.ip.nexthdr = IPPROTO_ICMPV6;
	r.ip.hop_limit = 64;
	r.ip.saddr = p->daddr6;
	r.ip.daddr = p->saddr6;
	r.type = ICMPV6_DEST_UNREACH;
	r.code = ICMPV6_PORT_UNREACH;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.ip.saddr, 2 * sizeof(r.ip.saddr), 0);
	if (sum < 0)
		return TC_ACT_SHOT;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&tail, sizeof(tail), sum);
	if (sum < 0)
		return TC_ACT_SHOT;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.type, sizeof(r) - sizeof(r.ip), sum);
	if (sum < 0)
		return TC_ACT_SHOT;
	r.csum = lb_csum_fold(sum);

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(r), 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &r, sizeof(r), BPF_F_INVALIDATE_HASH) < 0)
		return TC_ACT_SHOT;
	if (skb->pkt_type != PACKET_HOST)
		bpf_skb_change_type(skb, PACKET_HOST);
	return bpf_redirect_peer(skb->ingress_ifindex, 0);
}

#endif
