/* Connection tracking: lookup of the forward and the reversed tuple, TCP and SCTP
 * state from flags and chunks, idle timeouts from the config map. An entry idle
 * longer than its timeout counts as absent here already; the agent's GC deletes it
 * later. */
#ifndef PODWIRE_CONNTRACK_H
#define PODWIRE_CONNTRACK_H

#include "maps.h"
#include "parse.h"
#include "sctp.h"

enum ct_status {
	CT_NEW = CT_STATUS_NEW,
	CT_ESTABLISHED = CT_STATUS_ESTABLISHED, /* packet in the initiator's direction */
	CT_REPLY = CT_STATUS_REPLY,
	CT_RELATED = CT_STATUS_RELATED, /* ICMP error about a tracked connection */
};

#define CT_NSEC_PER_SEC 1000000000ULL
/* last_seen is refreshed at most once a second: timeouts count in seconds, and a
 * write per packet would bounce the entry's cache line between CPUs (the two
 * directions of a flow are often handled on different ones). */
#define CT_REFRESH_NS CT_NSEC_PER_SEC

/* The timeout of a handshake protocol's phase (TCP, SCTP). */
static __always_inline __u32 ct_phase_timeout(__u8 state, __u32 opening, __u32 established,
					      __u32 closing)
{
	if (state == CT_STATE_ESTABLISHED)
		return established;
	if (state == CT_STATE_CLOSING)
		return closing;
	return opening;
}

static __always_inline __u64 ct_timeout_ns(const struct node_config *cfg, __u8 proto,
					   __u8 state)
{
	__u32 s;

	if (proto == IPPROTO_TCP)
		s = ct_phase_timeout(state, cfg->ct_tcp_syn, cfg->ct_tcp_established,
				     cfg->ct_tcp_closing);
	else if (proto == IPPROTO_SCTP)
		s = ct_phase_timeout(state, cfg->ct_sctp_init, cfg->ct_sctp_established,
				     cfg->ct_sctp_closing);
	else if (proto == IPPROTO_UDP)
		s = cfg->ct_udp;
	else if (proto == IPPROTO_ICMP)
		s = cfg->ct_icmp;
	else
		s = cfg->ct_other;
	return (__u64)s * CT_NSEC_PER_SEC;
}

static __always_inline int ct_alive(const struct node_config *cfg,
				    const struct ct_value *v, __u8 proto, __u64 now)
{
	return now - v->last_seen <= ct_timeout_ns(cfg, proto, v->state);
}

static __always_inline void ct_key_of(const struct pkt *p, struct ct_key *k)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
}

static __always_inline void ct_reverse(const struct ct_key *k, struct ct_key *r)
{
	r->saddr = k->daddr;
	r->daddr = k->saddr;
	r->sport = k->dport;
	r->dport = k->sport;
	r->proto = k->proto;
}

static __always_inline void ct_touch(struct ct_value *v, __u64 now)
{
	if (now - v->last_seen > CT_REFRESH_NS)
		v->last_seen = now;
}

static __always_inline void ct_update_tcp(struct ct_value *v, __u8 flags, int reply)
{
	if ((flags & (TCP_FIN | TCP_RST)) && v->state != CT_STATE_CLOSING)
		v->state = CT_STATE_CLOSING;
	else if (v->state == CT_STATE_OPENING && reply && (flags & TCP_ACK))
		v->state = CT_STATE_ESTABLISHED;
}

/* INIT opened the entry; INIT-ACK and COOKIE-ECHO keep it opening, the responder's
 * COOKIE-ACK establishes it; SHUTDOWN, SHUTDOWN-ACK, SHUTDOWN-COMPLETE or ABORT from
 * either side close it. */
static __always_inline void ct_update_sctp(struct ct_value *v, __u16 chunks, int reply)
{
	if ((chunks & SCTP_CLOSE_CHUNKS) && v->state != CT_STATE_CLOSING)
		v->state = CT_STATE_CLOSING;
	else if (v->state == CT_STATE_OPENING && reply &&
		 (chunks & SCTP_BIT(SCTP_CHUNK_COOKIE_ACK)))
		v->state = CT_STATE_ESTABLISHED;
}

static __always_inline void ct_update(struct ct_value *v, const struct pkt *p, int reply)
{
	if (p->proto == IPPROTO_TCP)
		ct_update_tcp(v, p->tcp_flags, reply);
	else if (p->proto == IPPROTO_SCTP)
		ct_update_sctp(v, p->sctp_chunks, reply);
	else if (reply && v->state != CT_STATE_ESTABLISHED)
		v->state = CT_STATE_ESTABLISHED;
}

/* A packet of the initiator that starts a new connection on a tuple whose entry is
 * still alive (port reuse, an association restarted): it goes through policy again. */
static __always_inline bool ct_reopens(const struct ct_value *v, const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return v->state == CT_STATE_CLOSING &&
		       (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	if (p->proto == IPPROTO_SCTP)
		return v->state != CT_STATE_OPENING &&
		       (p->sctp_chunks & SCTP_BIT(SCTP_CHUNK_INIT));
	return false;
}

/* A live entry of the packet's own tuple: CT_ESTABLISHED, or CT_NEW when the packet
 * opens a new connection on it. Shared by both families (conntrack6.h). */
static __always_inline enum ct_status ct_hit_forward(struct ct_value *v, const struct pkt *p,
						     __u64 now, struct ct_value **entry)
{
	if (ct_reopens(v, p))
		return CT_NEW;
	ct_update(v, p, 0);
	ct_touch(v, now);
	*entry = v;
	return CT_ESTABLISHED;
}

/* A live entry of the reversed tuple: CT_REPLY, or CT_NEW for an SCTP INIT. */
static __always_inline enum ct_status ct_hit_reply(struct ct_value *v, const struct pkt *p,
						   __u64 now, struct ct_value **entry)
{
	/* An INIT from the responder opens an association of its own, which the
	 * initiator's policy decides on: no reply lets a peer open towards a pod. */
	if (p->proto == IPPROTO_SCTP && (p->sctp_chunks & SCTP_BIT(SCTP_CHUNK_INIT)))
		return CT_NEW;
	ct_update(v, p, 1);
	if (!v->seen_reply)
		v->seen_reply = 1;
	ct_touch(v, now);
	*entry = v;
	return CT_REPLY;
}

/* Which tuple to look up first. A responder's port is most often the lower one (a
 * server's port against its client's ephemeral one), so a TCP or UDP packet from the
 * lower port is taken for a reply and its reversed tuple is tried first: then every
 * packet of such a connection finds its entry with one lookup, where forward first
 * cost each reply a miss. The order changes only the cost: the two tuples of a TCP or
 * UDP connection are never both alive (a packet of a live entry's reversed tuple is
 * its reply, never a new connection), so the tuple that hits is the one the other
 * order finds too. SCTP (a responder's INIT opens an association of the reversed
 * tuple beside the live one) and ICMP keep forward first. */
static __always_inline bool ct_reply_likely(const struct pkt *p)
{
	return (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) &&
	       bpf_ntohs(p->sport) < bpf_ntohs(p->dport);
}

/* Is this packet part of a live connection? Refreshes the entry it hits, and hands it
 * back in *entry for CT_ESTABLISHED, CT_REPLY and a CT_RELATED error about the
 * initiator's packet (NULL otherwise): a reply or an error travelling to the client of
 * a connection made through a Service is reverse-translated from it (lb.h). */
static __always_inline enum ct_status ct_lookup(struct __sk_buff *skb, const struct node_config *cfg,
				     const struct pkt *p, __u64 now, struct ct_value **entry)
{
	struct ct_key fwd = {}, rev = {};
	bool reply = ct_reply_likely(p);
	struct ct_value *v;

	*entry = NULL;
	ct_key_of(p, &fwd);
	ct_reverse(&fwd, &rev);
	v = conntrack.lookup(reply ? &rev : &fwd);
	if (!v || !ct_alive(cfg, v, p->proto, now)) {
		reply = !reply;
		v = conntrack.lookup(reply ? &rev : &fwd);
		if (v && !ct_alive(cfg, v, p->proto, now))
			v = NULL;
	}
	if (v)
		return reply ? ct_hit_reply(v, p, now, entry) : ct_hit_forward(v, p, now, entry);

	if (is_icmp_error(p)) {
		struct ct_key inner = {};

		if (parse_icmp_inner(skb, p, &inner) < 0)
			return CT_NEW;
		v = conntrack.lookup(&inner);
		if (v && ct_alive(cfg, v, inner.proto, now)) {
			/* About a packet of the initiator: the error travels back to it, so
			 * a Service connection's error is reverse-translated (lb.h). */
			*entry = v;
			return CT_RELATED;
		}
		ct_reverse(&inner, &rev);
		v = conntrack.lookup(&rev);
		if (v && ct_alive(cfg, v, inner.proto, now))
			return CT_RELATED;
	}
	return CT_NEW;
}

/* The state of a connection first seen with this packet. */
static __always_inline __u8 ct_first_state(const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & (TCP_FIN | TCP_RST))
			return CT_STATE_CLOSING;
		if (p->tcp_flags & TCP_SYN)
			return CT_STATE_OPENING;
		return CT_STATE_ESTABLISHED; /* picked up mid-stream */
	}
	if (p->proto == IPPROTO_SCTP) {
		if (p->sctp_chunks & SCTP_CLOSE_CHUNKS)
			return CT_STATE_CLOSING;
		if (p->sctp_chunks & SCTP_BIT(SCTP_CHUNK_INIT))
			return CT_STATE_OPENING;
		return CT_STATE_ESTABLISHED;
	}
	return CT_STATE_NEW;
}

static __always_inline void ct_fill_new(const struct pkt *p, __u64 now, struct ct_value *v)
{
	v->last_seen = now;
	v->created = now;
	v->state = ct_first_state(p);
}

/* Record a new connection: 0, or DROP_CT_FULL only when the map is full (an expired
 * entry with the same key is overwritten in place). v holds what the caller knows of
 * it (policy refs, reverse translation); times and state are filled here. */
static __always_inline int ct_create(const struct pkt *p, __u8 scope, __u64 now,
				     struct ct_value *v)
{
	struct ct_key k = {};

	ct_key_of(p, &k);
	k.scope = scope;
	ct_fill_new(p, now, v);
	if (conntrack.update(&k, v) < 0)
		return DROP_CT_FULL;
	return 0;
}

/* A CT_SCOPE_SERVICE entry sees only the client's packets: its TCP or SCTP connection
 * counts as established once the client sends past its opening packet (as Cilium
 * judges by non-SYN packets), so it lives as long as the connection it belongs to. */
static __always_inline void ct_update_service(struct ct_value *v, const struct pkt *p)
{
	bool opening_only, closing;

	if (p->proto == IPPROTO_TCP) {
		closing = p->tcp_flags & (TCP_FIN | TCP_RST);
		opening_only = (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	} else if (p->proto == IPPROTO_SCTP) {
		closing = p->sctp_chunks & SCTP_CLOSE_CHUNKS;
		opening_only = p->sctp_chunks & SCTP_BIT(SCTP_CHUNK_INIT);
	} else {
		return;
	}
	if (closing && v->state != CT_STATE_CLOSING)
		v->state = CT_STATE_CLOSING;
	else if (v->state == CT_STATE_OPENING && !opening_only)
		v->state = CT_STATE_ESTABLISHED;
}

#endif
