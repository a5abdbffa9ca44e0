/* The load balancer: Services translated per packet, in the order of Cilium's
 * bpf/lib/lb.h. A packet to a frontend (lb_services slot 0) keeps the backend its
 * connection was given (a CT_SCOPE_SERVICE entry of the tuple the client sent) or is
 * given one (ClientIP affinity, else at random), and is DNATed to it; the hook then
 * goes on with the translated tuple (conntrack, policy against the backend), and the
 * connection's entry records the reverse translation its replies get (lb_rev_nat).
 * A frontend without backends is refused at once (lb_refuse). */
#ifndef PODWIRE_LB_H
#define PODWIRE_LB_H

#include "conntrack.h"
#include "events.h"
#include "maps.h"
#include "parse.h"

/* Offsets in an IPv4 packet after the Ethernet header (options would come later). */
#define LB_IP_CSUM_OFF (ETH_HLEN + 10)
#define LB_IP_SADDR_OFF (ETH_HLEN + 12)
#define LB_IP_DADDR_OFF (ETH_HLEN + 16)
#define LB_L4_SPORT 0
#define LB_L4_DPORT 2

static __always_inline bool lb_proto(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* Rewrite one address (saddr or daddr) and its port (sport or dport) with the IP and
 * L4 checksums updated. SCTP's CRC32c covers no pseudo-header, so an address change
 * leaves it right; a port change would need it recomputed (not done: see lb_frontend). */
static __always_inline int lb_rewrite(struct __sk_buff *skb, const struct pkt *p,
				      __u32 addr_off, __u32 old_addr, __u32 new_addr,
				      __u32 port_off, __u16 old_port, __u16 new_port)
{
	__u64 l4_flags = BPF_F_PSEUDO_HDR;
	__u32 csum_off = 0;

	if (p->later_fragment) {
		/* No L4 header here; the first fragment's carried the checksum. */
	} else if (p->proto == IPPROTO_TCP) {
		csum_off = p->l4_off + 16;
	} else if (p->proto == IPPROTO_UDP) {
		csum_off = p->l4_off + 6;
		l4_flags |= BPF_F_MARK_MANGLED_0; /* a zero UDP checksum means none: keep it */
	}
	if (old_addr != new_addr) {
		if (csum_off && bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
						    l4_flags | sizeof(new_addr)) < 0)
			return DROP_MALFORMED;
		if (bpf_l3_csum_replace(skb, LB_IP_CSUM_OFF, old_addr, new_addr,
					sizeof(new_addr)) < 0)
			return DROP_MALFORMED;
		if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) < 0)
			return DROP_MALFORMED;
	}
	if (old_port != new_port && !p->later_fragment) {
		if (csum_off && bpf_l4_csum_replace(skb, csum_off, old_port, new_port,
						    sizeof(new_port)) < 0)
			return DROP_MALFORMED;
		if (bpf_skb_store_bytes(skb, p->l4_off + port_off, &new_port, sizeof(new_port),
					0) < 0)
			return DROP_MALFORMED;
	}
	return 0;
}

/* A backend for a new connection: the one ClientIP affinity remembers while it is
 * fresh and still exists, else a slot at random (recorded for affinity). */
static __always_inline int lb_select(const struct lb_key *frontend, const struct lb_value *svc,
				     __u32 client, __u64 now, __u32 *backend_id)
{
	struct lb_affinity_key ak = { .client = client, .service_id = svc->service_id };
	struct lb_key k = *frontend;
	struct lb_value *slot;

	if (svc->affinity_timeout) {
		struct lb_affinity_value *av = lb_affinity.lookup(&ak);

		if (av && now - av->last_used <= (__u64)svc->affinity_timeout * CT_NSEC_PER_SEC &&
		    lb_backends.lookup(&av->backend_id)) {
			*backend_id = av->backend_id;
			av->last_used = now;
			return 0;
		}
	}
	k.slot = bpf_get_prandom_u32() % svc->count + 1;
	slot = lb_services.lookup(&k);
	if (!slot)
		return DROP_NO_SERVICE_BACKEND; /* the agent is shrinking it: slot 0 went first */
	*backend_id = slot->backend_id;
	if (svc->affinity_timeout) {
		struct lb_affinity_value av = { .last_used = now, .backend_id = slot->backend_id };

		lb_affinity.update(&ak, &av);
	}
	return 0;
}

/* The backend of this packet's connection: the one its CT_SCOPE_SERVICE entry
 * remembers while that backend exists (one deleted since gets a fresh choice: a TCP
 * connection then ends with the new backend's RST, UDP moves on), else a new choice,
 * remembered. */
static __always_inline int lb_backend_of(const struct node_config *cfg, const struct pkt *p,
					 const struct lb_key *frontend, const struct lb_value *svc,
					 __u64 now, struct lb_backend **backend)
{
	struct ct_key sk = {};
	struct ct_value *sv, fresh = { .service_id = svc->service_id };
	__u32 backend_id = 0;
	int ret;

	ct_key_of(p, &sk);
	sk.scope = CT_SCOPE_SERVICE;
	sv = conntrack.lookup(&sk);
	if (sv && ct_alive(cfg, sv, p->proto, now) && !ct_reopens(sv, p)) {
		*backend = lb_backends.lookup(&sv->backend_id);
		if (*backend) {
			ct_update_service(sv, p);
			ct_touch(sv, now);
			return 0;
		}
	}
	ret = lb_select(frontend, svc, p->saddr, now, &backend_id);
	if (ret < 0)
		return ret;
	*backend = lb_backends.lookup(&backend_id);
	if (!*backend)
		return DROP_NO_SERVICE_BACKEND;
	fresh.backend_id = backend_id;
	return ct_create(p, CT_SCOPE_SERVICE, now, &fresh);
}

/* At a client's hook, before conntrack: 0 when the packet is no frontend's or was
 * translated to a backend (p then holds the translated tuple and c the frontend), else
 * a drop reason; DROP_NO_SERVICE_BACKEND is answered with lb_refuse. */
static __always_inline int lb_frontend(struct __sk_buff *skb, const struct node_config *cfg,
				       struct pkt *p, struct flow_ctx *c, __u8 scope, __u64 now)
{
	struct lb_key k = { .address = p->daddr, .port = p->dport, .proto = p->proto,
			    .scope = scope };
	struct lb_backend *be = NULL;
	struct lb_value *svc;
	__u32 hairpin_ip;
	int ret;

	if (!lb_proto(p->proto))
		return 0;
	svc = lb_services.lookup(&k);
	if (!svc)
		return 0;
	c->service_id = svc->service_id;
	c->frontend_addr = p->daddr;
	c->frontend_port = p->dport;
	if (!svc->count)
		return DROP_NO_SERVICE_BACKEND;
	ret = lb_backend_of(cfg, p, &k, svc, now, &be);
	if (ret < 0)
		return ret;

	/* SCTP: a backend port other than the frontend's would need the CRC32c redone,
	 * which is not done here (the agent's Services keep SCTP ports equal). */
	ret = lb_rewrite(skb, p, LB_IP_DADDR_OFF, p->daddr, be->address, LB_L4_DPORT, p->dport,
			 be->port);
	if (ret < 0)
		return ret;
	if (be->address == p->saddr) {
		/* Hairpin: the pod's kernel would drop a packet from its own address. */
		hairpin_ip = bpf_htonl(LB_HAIRPIN_IP);
		ret = lb_rewrite(skb, p, LB_IP_SADDR_OFF, p->saddr, hairpin_ip, LB_L4_SPORT,
				 p->sport, p->sport);
		if (ret < 0)
			return ret;
		p->saddr = hairpin_ip;
		c->ct_flags |= CT_F_HAIRPIN;
	}
	p->daddr = be->address;
	p->dport = be->port;
	return 0;
}

/* A reply of a connection made through a Service (its entry carries service_id):
 * back from the frontend's address and port, and to the client's own address after
 * a hairpin (client and backend are one pod there). */
static __always_inline int lb_rev_nat(struct __sk_buff *skb, struct pkt *p,
				      const struct ct_value *v)
{
	int ret;

	if (v->flags & CT_F_HAIRPIN) {
		ret = lb_rewrite(skb, p, LB_IP_DADDR_OFF, p->daddr, p->saddr, LB_L4_DPORT,
				 p->dport, p->dport);
		if (ret < 0)
			return ret;
		p->daddr = p->saddr;
	}
	ret = lb_rewrite(skb, p, LB_IP_SADDR_OFF, p->saddr, v->rev_addr, LB_L4_SPORT, p->sport,
			 v->rev_port);
	if (ret < 0)
		return ret;
	p->saddr = v->rev_addr;
	p->sport = v->rev_port;
	return 0;
}

/* The ICMP port unreachable a refused client gets: RFC 792's header, the original IP
 * header and the first 8 bytes of its payload. 4-byte aligned for bpf_csum_diff. */
struct lb_icmp_refusal {
	struct iphdr ip;
	__u8 type;
	__u8 code;
	__u16 csum;
	__u32 unused;
	__u8 quote[sizeof(struct iphdr) + 8];
} __attribute__((aligned(4)));

#define ICMP_PORT_UNREACH 3

static __always_inline __u16 lb_csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* Turn the packet into that ICMP error, from the frontend, and hand it back into the
 * client pod (skb->ingress_ifindex is the host veth whose peer it is). A packet with IP
 * options is only dropped. The caller has counted and reported the drop. */
static __always_inline int lb_refuse(struct __sk_buff *skb, const struct pkt *p)
{
	struct lb_icmp_refusal r = {};
	__u8 eth[ETH_HLEN], swapped[ETH_HLEN];
	__s64 sum;

	if (p->later_fragment || p->l4_off != ETH_HLEN + sizeof(struct iphdr))
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, r.quote, sizeof(r.quote)) < 0)
		return TC_ACT_SHOT;
	__builtin_memcpy(swapped, eth + 6, 6);
	__builtin_memcpy(swapped + 6, eth, 6);
	__builtin_memcpy(swapped + 12, eth + 12, 2);

	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tos = 0xc0; /* internetwork control, as Linux sends its ICMP errors */
	r.ip.tot_len = bpf_htons(sizeof(r));
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = p->daddr;
	r.ip.daddr = p->saddr;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.ip, sizeof(r.ip), 0);
	if (sum < 0)
		return TC_ACT_SHOT;
	r.ip.check = lb_csum_fold(sum);
	r.type = ICMP_DEST_UNREACH;
	r.code = ICMP_PORT_UNREACH;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.type, sizeof(r) - sizeof(r.ip), 0);
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
