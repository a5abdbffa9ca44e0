/* Connection tracking of IPv6 packets: the conntrack6 map, keyed by 128-bit addresses,
 * with the same states, timeouts and per-entry steps as IPv4 (conntrack.h) on the
 * ct_value part of its entries (ct6_value). A connection made through a Service keeps its
 * service_id, rev_port and frontend address (rev_addr6, lb6.h). */
#ifndef PODWIRE_CONNTRACK6_H
#define PODWIRE_CONNTRACK6_H

#include "conntrack.h"
#include "maps.h"
#include "parse6.h"

/* ICMPv6 entries live as long as ICMP ones (ct_icmp): the timeouts are IPv4's. */
static __always_inline __u8 ct6_timeout_proto(__u8 proto)
{
	return proto == IPPROTO_ICMPV6 ? IPPROTO_ICMP : proto;
}

static __always_inline void ct6_key_of(const struct pkt *p, struct ct6_key *k)
{
	k->saddr = p->saddr6;
	k->daddr = p->daddr6;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
}

static __always_inline void ct6_reverse(const struct ct6_key *k, struct ct6_key *r)
{
	r->saddr = k->daddr;
	r->daddr = k->saddr;
	r->sport = k->dport;
	r->dport = k->sport;
	r->proto = k->proto;
}

/* ct_lookup for IPv6: an ICMPv6 error about a live connection (either direction of
 * it) is CT_RELATED, as an ICMP error is for IPv4. *entry is the entry an
 * ESTABLISHED or REPLY packet hit, or the one of the initiator's packet a RELATED error
 * quotes (so one about a Service connection's client is translated, lb6.h); NULL
 * otherwise. */
static __always_inline enum ct_status ct6_lookup(struct __sk_buff *skb,
						 const struct node_config *cfg,
						 const struct pkt *p, __u64 now,
						 struct ct_value **entry)
{
	struct ct6_key fwd = {}, rev = {};
	struct ct6_value *v;

	*entry = NULL;
	ct6_key_of(p, &fwd);
	v = conntrack6.lookup(&fwd);
	if (v && ct_alive(cfg, &v->ct, ct6_timeout_proto(p->proto), now))
		return ct_hit_forward(&v->ct, p, now, entry);

	ct6_reverse(&fwd, &rev);
	v = conntrack6.lookup(&rev);
	if (v && ct_alive(cfg, &v->ct, ct6_timeout_proto(p->proto), now))
		return ct_hit_reply(&v->ct, p, now, entry);

	if (is_icmp6_error(p)) {
		struct ct6_key inner = {};

		if (parse_icmp6_inner(skb, p, &inner) < 0)
			return CT_NEW;
		v = conntrack6.lookup(&inner);
		if (v && ct_alive(cfg, &v->ct, ct6_timeout_proto(inner.proto), now)) {
			*entry = &v->ct;
			return CT_RELATED;
		}
		ct6_reverse(&inner, &rev);
		v = conntrack6.lookup(&rev);
		if (v && ct_alive(cfg, &v->ct, ct6_timeout_proto(inner.proto), now))
			return CT_RELATED;
	}
	return CT_NEW;
}

/* ct_create for IPv6: 0, or DROP_CT_FULL when conntrack6 is full. */
static __always_inline int ct6_create(const struct pkt *p, __u64 now, struct ct6_value *v)
{
	struct ct6_key k = { .scope = CT_SCOPE_FLOW };

	ct6_key_of(p, &k);
	ct_fill_new(p, now, &v->ct);
	if (conntrack6.update(&k, v) < 0)
		return DROP_CT_FULL;
	return 0;
}

#endif
