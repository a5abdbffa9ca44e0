/* The load balancer: Services translated per packet, in the order of Cilium's
 * bpf/lib/lb.h. A packet to a frontend (lb_services slot 0) keeps the backend its
 * connection was given (a CT_SCOPE_SERVICE entry of the tuple the client sent) or is
 * given one (ClientIP affinity, else at random), and is DNATed to it; the hook then
 * goes on with the translated tuple (conntrack, policy against the backend), and the
 * connection's entry records the reverse translation its replies get (lb_rev_nat).
 * A frontend without backends is refused at once (lb_refuse).
 *
 * NodePorts reached from outside (bpf_host.c) take the same steps in the EXTERNAL scope;
 * with externalTrafficPolicy Cluster the client is also SNATed to the address it reached
 * (kube-proxy's masquerade), so replies return through this node wherever the backend
 * is, and leave through the uplink (lb_deliver_reply). */
#ifndef PODWIRE_LB_H
#define PODWIRE_LB_H

#include "conntrack.h"
#include "crc32c.h"
#include "events.h"
#include "forward.h"
#include "maps.h"
#include "parse.h"

/* Offsets in an IPv4 packet after the Ethernet header (options would come later). */
#define LB_IP_CSUM_OFF (ETH_HLEN + 10)
#define LB_IP_SADDR_OFF (ETH_HLEN + 12)
#define LB_IP_DADDR_OFF (ETH_HLEN + 16)
#define LB_L4_SPORT 0
#define LB_L4_DPORT 2
#define LB_SCTP_CSUM 8 /* the CRC32c in the SCTP common header */
/* lb_frontend_icmp's answer for an ICMP error it sent on to a backend: the hook delivers
 * it as it is. */
#define LB_RELATED 1
/* Random source ports tried for a SNATed NodePort client before giving up. */
#define LB_SNAT_TRIES 8

static __always_inline bool lb_proto(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* SCTP's CRC32c after a port (at port_off in the common header) changed by diff (old
 * xor new): updated from the change alone (crc32c.h). The checksum lies in the packet
 * low byte first (RFC 9260 appendix B), as a little-endian load reads it. A fragment's
 * CRC covers bytes it does not hold, so a fragmented packet cannot be translated. */
static __always_inline int lb_sctp_port_csum(struct __sk_buff *skb, const struct pkt *p,
					     __u32 port_off, __u16 diff)
{
	__u32 csum, off = p->l4_off + LB_SCTP_CSUM;

	if (p->more_fragments)
		return DROP_SCTP_FRAGMENT;
	if (p->l3_end < p->l4_off + SCTP_COMMON_HLEN ||
	    bpf_skb_load_bytes(skb, off, &csum, sizeof(csum)) < 0)
		return DROP_MALFORMED_SCTP;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	csum = __builtin_bswap32(csum);
#endif
	csum ^= crc32c_field_delta(diff, p->l3_end - p->l4_off - port_off - sizeof(diff));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	csum = __builtin_bswap32(csum);
#endif
	if (bpf_skb_store_bytes(skb, off, &csum, sizeof(csum), 0) < 0)
		return DROP_MALFORMED_SCTP;
	return 0;
}

/* Rewrite one address (saddr or daddr) and its port (sport or dport) with the IP and
 * L4 checksums updated. SCTP's CRC32c covers no pseudo-header, so an address change
 * leaves it right; a port change updates it (lb_sctp_port_csum). */
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
		if (p->proto == IPPROTO_SCTP) {
			int ret = lb_sctp_port_csum(skb, p, port_off, old_port ^ new_port);

			if (ret < 0)
				return ret;
		}
		if (bpf_skb_store_bytes(skb, p->l4_off + port_off, &new_port, sizeof(new_port),
					0) < 0)
			return DROP_MALFORMED;
	}
	return 0;
}

/* A backend for a new connection: the one ClientIP affinity remembers while it is
 * fresh and the frontend still holds it in the slot it was chosen from (a backend that
 * left the Service, or was only moved by a change, is forgotten: one lookup, whatever
 * the count), else a slot at random (recorded for affinity). */
static __always_inline int lb_select(const struct lb_key *frontend, const struct lb_value *svc,
				     __u32 client, __u64 now, __u32 *backend_id)
{
	struct lb_affinity_key ak = { .client = client, .service_id = svc->service_id };
	struct lb_key k = *frontend;
	struct lb_value *slot;

	if (svc->affinity_timeout) {
		struct lb_affinity_value *av = lb_affinity.lookup(&ak);

		if (av && now - av->last_used <= (__u64)svc->affinity_timeout * CT_NSEC_PER_SEC &&
		    av->slot && av->slot <= svc->count) {
			k.slot = av->slot;
			slot = lb_services.lookup(&k);
			if (slot && slot->backend_id == av->backend_id) {
				*backend_id = av->backend_id;
				av->last_used = now;
				return 0;
			}
		}
	}
	k.slot = bpf_get_prandom_u32() % svc->count + 1;
	slot = lb_services.lookup(&k);
	if (!slot)
		return DROP_NO_SERVICE_BACKEND; /* the agent is shrinking it: slot 0 went first */
	*backend_id = slot->backend_id;
	if (svc->affinity_timeout) {
		struct lb_affinity_value av = { .last_used = now, .backend_id = slot->backend_id,
						.slot = k.slot };

		lb_affinity.update(&ak, &av);
	}
	return 0;
}

/* A source port for a NodePort client SNATed to nat_addr on its way to a backend: one
 * that no live connection of another client to that backend holds (network order), or 0
 * when a few random tries find none. */
static __always_inline __u16 lb_snat_port(const struct node_config *cfg, const struct pkt *p,
					  __u32 nat_addr, const struct lb_backend *be, __u64 now)
{
	struct ct_key k = { .saddr = nat_addr, .daddr = be->address, .dport = be->port,
			    .proto = p->proto, .scope = CT_SCOPE_FLOW };
	struct ct_value *v;
	int i;

#pragma unroll
	for (i = 0; i < LB_SNAT_TRIES; i++) {
		k.sport = bpf_htons(LB_SNAT_PORT_MIN + bpf_get_prandom_u32() %
				    (LB_SNAT_PORT_MAX - LB_SNAT_PORT_MIN + 1));
		v = conntrack.lookup(&k);
		if (!v || !ct_alive(cfg, v, p->proto, now) ||
		    (v->nat_addr == p->saddr && v->nat_port == p->sport))
			return k.sport;
	}
	return 0;
}

/* The backend of this packet's connection: the one its CT_SCOPE_SERVICE entry
 * remembers while that backend exists (one deleted since gets a fresh choice: a TCP
 * connection then ends with the new backend's RST, UDP moves on), else a new choice,
 * remembered. With snat, also the source port the client is given (*nat_port), chosen
 * with the backend and remembered with it. */
static __always_inline int lb_backend_of(const struct node_config *cfg, const struct pkt *p,
					 const struct lb_key *frontend, const struct lb_value *svc,
					 __u64 now, bool snat, struct lb_backend **backend,
					 __u16 *nat_port)
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
			*nat_port = sv->nat_port;
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
	if (snat) {
		fresh.nat_port = lb_snat_port(cfg, p, frontend->address, *backend, now);
		if (!fresh.nat_port)
			return DROP_NO_NAT_PORT;
	}
	*nat_port = fresh.nat_port;
	return ct_create(p, CT_SCOPE_SERVICE, now, &fresh);
}

/* The packet an ICMP error quotes, after the error's 8-byte header: where its IP header
 * and its ports lie, and its tuple (scope 0). */
struct lb_quote {
	__u32 ip_off;
	__u32 ports_off;
	struct ct_key tuple;
};

static __always_inline int lb_quote_of(struct __sk_buff *skb, const struct pkt *p,
				       struct lb_quote *q)
{
	struct iphdr ip;
	__u16 ports[2];

	q->ip_off = p->l4_off + 8;
	if (bpf_skb_load_bytes(skb, q->ip_off, &ip, sizeof(ip)) < 0 || ip.version != 4 ||
	    ip.ihl < 5)
		return DROP_MALFORMED;
	q->ports_off = q->ip_off + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, q->ports_off, ports, sizeof(ports)) < 0)
		return DROP_MALFORMED;
	q->tuple.saddr = ip.saddr;
	q->tuple.daddr = ip.daddr;
	q->tuple.sport = ports[0];
	q->tuple.dport = ports[1];
	q->tuple.proto = ip.protocol;
	return 0;
}

/* Give the quoted packet the tuple to. The quoted IP header's checksum follows its
 * addresses, and the two changes cancel out in the ICMP checksum, which so only
 * follows the ports. The quoted L4 checksum is left as it is: receivers do not check
 * what an error quotes. */
static __always_inline int lb_requote(struct __sk_buff *skb, const struct pkt *p,
				      const struct lb_quote *q, const struct ct_key *to)
{
	__u32 icmp_csum = p->l4_off + 2, ip_csum = q->ip_off + 10;

	if (to->saddr != q->tuple.saddr &&
	    (bpf_l3_csum_replace(skb, ip_csum, q->tuple.saddr, to->saddr, sizeof(to->saddr)) < 0 ||
	     bpf_skb_store_bytes(skb, q->ip_off + 12, &to->saddr, sizeof(to->saddr), 0) < 0))
		return DROP_MALFORMED;
	if (to->daddr != q->tuple.daddr &&
	    (bpf_l3_csum_replace(skb, ip_csum, q->tuple.daddr, to->daddr, sizeof(to->daddr)) < 0 ||
	     bpf_skb_store_bytes(skb, q->ip_off + 16, &to->daddr, sizeof(to->daddr), 0) < 0))
		return DROP_MALFORMED;
	if (to->sport != q->tuple.sport &&
	    (bpf_l4_csum_replace(skb, icmp_csum, q->tuple.sport, to->sport, sizeof(to->sport)) < 0 ||
	     bpf_skb_store_bytes(skb, q->ports_off + LB_L4_SPORT, &to->sport, sizeof(to->sport),
				 0) < 0))
		return DROP_MALFORMED;
	if (to->dport != q->tuple.dport &&
	    (bpf_l4_csum_replace(skb, icmp_csum, q->tuple.dport, to->dport, sizeof(to->dport)) < 0 ||
	     bpf_skb_store_bytes(skb, q->ports_off + LB_L4_DPORT, &to->dport, sizeof(to->dport),
				 0) < 0))
		return DROP_MALFORMED;
	return 0;
}

/* One address of the outer IP header (at off: LB_IP_SADDR_OFF or LB_IP_DADDR_OFF) with
 * the header's checksum; ICMP has no pseudo-header. */
static __always_inline int lb_readdress(struct __sk_buff *skb, __u32 off, __u32 old_addr,
					__u32 new_addr)
{
	if (old_addr == new_addr)
		return 0;
	if (bpf_l3_csum_replace(skb, LB_IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) < 0 ||
	    bpf_skb_store_bytes(skb, off, &new_addr, sizeof(new_addr), 0) < 0)
		return DROP_MALFORMED;
	return 0;
}

/* An ICMP error about a reply a Service connection's client got, on its way to the
 * frontend that reply came from: a port unreachable from a client whose socket is gone,
 * a frag-needed from a router on a narrower way to the client. It goes on to the backend
 * that sent the reply, quoting the reply as the backend sent it (backend -> client, or
 * -> the node's SNAT address and port), so the backend's socket finds it: without this
 * a NodePort client behind a link narrower than the backend's is a PMTU black hole. A
 * SNATed client's error comes from the node's address then, as netfilter's NAT makes
 * it for an error related to a masqueraded connection. c is given the Service and the
 * SNAT as lb_frontend gives them; an error about anything else leaves p and c as they
 * are. A pod that reached itself (hairpin) is told as its backend side knows the
 * client: quoting backend -> LB_HAIRPIN_IP, from LB_HAIRPIN_IP (its kernel takes nothing
 * from its own address). LB_RELATED when translated (conntrack's CT_RELATED: the connection was found
 * here), 0 when left alone, or a drop reason. The hook asks where the verifier meets
 * fewest states (from_pod: once conntrack knows nothing of the error) and delivers a
 * translated error at once. */
static __always_inline int lb_frontend_icmp(struct __sk_buff *skb, const struct node_config *cfg,
					    struct pkt *p, struct flow_ctx *c, __u8 scope,
					    __u64 now)
{
	struct ct_key client = {}, backend_side = {}, to;
	struct lb_quote q = {};
	struct lb_backend *be;
	struct ct_value *sv, *fv;
	struct lb_value *svc;
	struct lb_key k = {};
	__u32 from = 0;
	bool snat, hairpin;
	int ret;

	if (!is_icmp_error(p) || lb_quote_of(skb, p, &q) < 0 || !lb_proto(q.tuple.proto) ||
	    q.tuple.saddr != p->daddr)
		return 0;
	k.address = q.tuple.saddr;
	k.port = q.tuple.sport;
	k.proto = q.tuple.proto;
	k.scope = scope;
	svc = lb_services.lookup(&k);
	if (!svc)
		return 0;
	/* The client's connection to the frontend names its backend ... */
	ct_reverse(&q.tuple, &client);
	client.scope = CT_SCOPE_SERVICE;
	sv = conntrack.lookup(&client);
	if (!sv || !ct_alive(cfg, sv, client.proto, now))
		return 0;
	be = lb_backends.lookup(&sv->backend_id);
	if (!be)
		return 0;
	/* ... and the connection as the backend has it must still be this client's. */
	hairpin = !sv->nat_port && be->address == client.saddr;
	if (sv->nat_port)
		from = k.address;
	else if (hairpin)
		from = bpf_htonl(LB_HAIRPIN_IP);
	backend_side.saddr = from ? from : client.saddr;
	backend_side.sport = sv->nat_port ? sv->nat_port : client.sport;
	backend_side.daddr = be->address;
	backend_side.dport = be->port;
	backend_side.proto = client.proto;
	backend_side.scope = CT_SCOPE_FLOW;
	fv = conntrack.lookup(&backend_side);
	if (!fv || !ct_alive(cfg, fv, client.proto, now) || fv->service_id != svc->service_id)
		return 0;
	snat = fv->flags & CT_F_SNAT;
	if (snat && (fv->nat_addr != client.saddr || fv->nat_port != client.sport))
		return 0;
	if (hairpin != !!(fv->flags & CT_F_HAIRPIN))
		return 0;

	ct_reverse(&backend_side, &to);
	ret = lb_requote(skb, p, &q, &to);
	if (ret < 0)
		return ret;
	ret = lb_readdress(skb, LB_IP_DADDR_OFF, p->daddr, be->address);
	if (ret < 0)
		return ret;
	p->daddr = be->address;
	c->service_id = svc->service_id;
	c->frontend_addr = k.address;
	c->frontend_port = k.port;
	if (snat || hairpin) {
		ret = lb_readdress(skb, LB_IP_SADDR_OFF, p->saddr, from);
		if (ret < 0)
			return ret;
		p->saddr = from;
	}
	if (snat) {
		c->nat_addr = client.saddr;
		c->nat_port = client.sport;
		c->ct_flags |= CT_F_SNAT;
	}
	if (hairpin)
		c->ct_flags |= CT_F_HAIRPIN;
	c->ct_status = CT_RELATED;
	c->ct_known = 1;
	return LB_RELATED;
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
	__u16 nat_port = 0;
	bool snat;
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
	snat = scope == LB_SCOPE_EXTERNAL && !(svc->flags & LB_F_KEEP_CLIENT);
	ret = lb_backend_of(cfg, p, &k, svc, now, snat, &be, &nat_port);
	if (ret < 0)
		return ret;

	ret = lb_rewrite(skb, p, LB_IP_DADDR_OFF, p->daddr, be->address, LB_L4_DPORT, p->dport,
			 be->port);
	if (ret < 0)
		return ret;
	if (nat_port) {
		/* externalTrafficPolicy Cluster: from the address the client reached. */
		ret = lb_rewrite(skb, p, LB_IP_SADDR_OFF, p->saddr, k.address, LB_L4_SPORT,
				 p->sport, nat_port);
		if (ret < 0)
			return ret;
		c->nat_addr = p->saddr;
		c->nat_port = p->sport;
		p->saddr = k.address;
		p->sport = nat_port;
		c->ct_flags |= CT_F_SNAT;
	} else if (be->address == p->saddr) {
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
 * a hairpin (client and backend are one pod there) or a NodePort's SNAT. */
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
	} else if (v->flags & CT_F_SNAT) {
		ret = lb_rewrite(skb, p, LB_IP_DADDR_OFF, p->daddr, v->nat_addr, LB_L4_DPORT,
				 p->dport, v->nat_port);
		if (ret < 0)
			return ret;
		p->daddr = v->nat_addr;
		p->dport = v->nat_port;
	}
	ret = lb_rewrite(skb, p, LB_IP_SADDR_OFF, p->saddr, v->rev_addr, LB_L4_SPORT, p->sport,
			 v->rev_port);
	if (ret < 0)
		return ret;
	p->saddr = v->rev_addr;
	p->sport = v->rev_port;
	return 0;
}

/* An ICMP error about a client's packet to a backend, on its way to the client: the
 * quoted packet is given the frontend as destination again (so the client's socket
 * finds it: a UDP socket connected to a ClusterIP gets ECONNREFUSED from a backend's
 * port unreachable), and the error comes from the frontend when the backend sent it.
 * A NodePort client this node SNATed (CT_F_SNAT): the quoted source, the node's
 * address and port from the SNAT range, becomes the client's own address and port
 * again, and the error is addressed to the client instead of the node, as Cilium's
 * nat.h does for ICMP errors about a SNATed tuple (frag-needed reaches the client's
 * PMTU, port unreachable its socket). After a hairpin the error, addressed to
 * LB_HAIRPIN_IP, goes to the pod itself, quoting its own address as the source. */
static __always_inline int lb_rev_nat_icmp(struct __sk_buff *skb, struct pkt *p,
					   const struct ct_value *v)
{
	struct lb_quote q = {};
	struct ct_key to;
	int ret;

	ret = lb_quote_of(skb, p, &q);
	if (ret < 0)
		return ret;
	to = q.tuple;
	to.daddr = v->rev_addr;
	to.dport = v->rev_port;
	if (v->flags & CT_F_SNAT) {
		to.saddr = v->nat_addr;
		to.sport = v->nat_port;
	} else if (v->flags & CT_F_HAIRPIN) {
		to.saddr = q.tuple.daddr; /* the client is its own backend */
	}
	ret = lb_requote(skb, p, &q, &to);
	if (ret < 0)
		return ret;
	if (to.saddr != q.tuple.saddr) {
		ret = lb_readdress(skb, LB_IP_DADDR_OFF, p->daddr, to.saddr);
		if (ret < 0)
			return ret;
		p->daddr = to.saddr;
	}
	if (p->saddr != q.tuple.daddr)
		return 0; /* from a router on the way: its own address stays */
	ret = lb_readdress(skb, LB_IP_SADDR_OFF, p->saddr, v->rev_addr);
	if (ret < 0)
		return ret;
	p->saddr = v->rev_addr;
	return 0;
}

/* What a hook does with a packet conntrack found (status, entry): a reply or an error
 * on its way to the client of a Service connection is reverse-translated. 0 or a drop
 * reason. */
static __always_inline int lb_reverse(struct __sk_buff *skb, struct pkt *p,
				      enum ct_status status, const struct ct_value *v)
{
	if (!v || !v->service_id)
		return 0;
	if (status == CT_REPLY)
		return lb_rev_nat(skb, p, v);
	if (status == CT_RELATED)
		return lb_rev_nat_icmp(skb, p, v);
	return 0;
}

/* Where a packet conntrack found goes once lb_reverse is done: a NodePort's reply out of
 * the node's uplink, a reply to a node that reached this one's pod through the overlay
 * back into the tunnel to it, anything else its usual way. */
static __always_inline int lb_deliver_reply(struct __sk_buff *skb, const struct node_config *cfg,
					    const struct pkt *p, const struct flow_ctx *c,
					    enum ct_status status, const struct ct_value *v)
{
	if (v && status != CT_ESTABLISHED) {
		if (v->flags & CT_F_NODEPORT)
			return deliver_netdev(skb, cfg, p, c);
		if (v->flags & CT_F_TUNNEL_REPLY)
			return deliver_tunnel(skb, cfg, p, c, p->daddr);
	}
	return deliver(skb, cfg, p, c);
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

/* Turn the packet into that ICMP error, from the frontend, and hand it back the way it
 * came: into the client pod (peer: skb->ingress_ifindex is the host veth whose peer it
 * is), or out of the device it arrived on. A packet with IP options is only dropped.
 * The caller has counted and reported the drop. */
static __always_inline int lb_refuse(struct __sk_buff *skb, const struct pkt *p, bool peer)
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
	if (!peer)
		return bpf_redirect(skb->ingress_ifindex, 0);
	if (skb->pkt_type != PACKET_HOST)
		bpf_skb_change_type(skb, PACKET_HOST);
	return bpf_redirect_peer(skb->ingress_ifindex, 0);
}

#endif
