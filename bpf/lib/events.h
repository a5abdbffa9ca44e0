/* Verdict bookkeeping: per-CPU counters for every packet (exact whatever the
 * aggregation), and reports of each new connection allowed and each drop when the
 * config enables them: ring buffer events, or per-flow counts in flow_aggregates
 * (node_config.aggregation, types.h). Both carry a reason code (drop.h):
 * REASON_FORWARDED or DROP_CODE(reason). Losses are counted by stage in events_lost. */
#ifndef PODWIRE_EVENTS_H
#define PODWIRE_EVENTS_H

#include <uapi/asm-generic/errno-base.h>
#include "flowctx.h"
#include "maps.h"
#include "parse.h"

static __always_inline void flow_audit(struct flow_ctx *c, __u8 direction, bool audit)
{
	if (audit)
		c->audit |= 1 << direction;
}

#include "trace.h"

static __always_inline void count(__u8 code, __u8 direction, __u32 len)
{
	__u32 idx = metrics_index(code, direction);
	struct metrics_value *m = metrics.lookup(&idx);

	if (m) {
		m->packets += 1;
		m->bytes += len;
	}
}

static __always_inline void lost(__u32 stage)
{
	__u64 *n = events_lost.lookup(&stage);

	if (n)
		*n += 1;
}

/* v6, here and below, is a constant at every call (false through emit and drop, true
 * through emit6 and drop6), so an IPv4 program carries none of IPv6's work: the IPv4
 * entry programs are close to the verifier's limit. */
static __always_inline void fill_event(struct flow_event *e, struct __sk_buff *skb,
				       const struct pkt *p, const struct flow_ctx *c,
				       __u8 type, __u8 code, __u64 now, bool v6)
{
	e->timestamp = now;
	e->saddr = p->saddr;
	e->daddr = p->daddr;
	e->sport = p->sport;
	e->dport = p->dport;
	e->proto = p->proto;
	e->tcp_flags = p->tcp_flags;
	e->type = type;
	e->reason = code;
	e->direction = c->direction;
	e->hook = c->hook;
	e->frontend_port = c->frontend_port;
	e->ifindex = skb->ifindex;
	e->src_identity = c->src_identity;
	e->dst_identity = c->dst_identity;
	e->src_ep_id = c->src_ep_id;
	e->dst_ep_id = c->dst_ep_id;
	e->egress_ref = c->egress_ref;
	e->ingress_ref = c->ingress_ref;
	e->len = skb->len;
	e->service_id = c->service_id;
	e->frontend_addr = c->frontend_addr;
	if (v6) {
		e->family = FAMILY_IPV6;
		e->saddr6 = p->saddr6;
		e->daddr6 = p->daddr6;
	} else {
		e->family = FAMILY_IPV4;
	}
}

/* The node's rate limit on ring buffer events (a GCRA per CPU, no division on the
 * packet path); true when this event may go. */
static __always_inline bool rate_allows(const struct node_config *cfg, __u64 now)
{
	struct event_rate_state *s;
	__u32 zero = 0;
	__u64 tat;

	if (!cfg->event_cost_ns)
		return true;
	s = event_rate.lookup(&zero);
	if (!s)
		return true;
	tat = s->tat > now ? s->tat : now;
	if (tat - now > cfg->event_burst_ns)
		return false;
	s->tat = tat + cfg->event_cost_ns;
	return true;
}

static __always_inline void send_event(struct __sk_buff *skb, const struct node_config *cfg,
				       const struct pkt *p, const struct flow_ctx *c, __u8 type,
				       __u8 code, __u64 now, bool v6)
{
	struct flow_event *e;
	void *ring;
	__u32 cpu;

	if (!rate_allows(cfg, now)) {
		lost(EVENTS_LOST_RATE);
		return;
	}
	/* This CPU's own ring (maps.h): producers on other CPUs never wait for its lock. A
	 * reserve fails only when the ring is full, and is counted lost at the ring. (The
	 * failures once seen with the ring nearly empty were the reader's: it zeroed the
	 * consumer position for a moment at each read, agent/ringbuf.py.) */
	cpu = bpf_get_smp_processor_id();
	ring = events.lookup(&cpu);
	if (!ring) {
		lost(EVENTS_LOST_RING);
		return;
	}
	e = bpf_ringbuf_reserve(ring, v6 ? sizeof(*e) : FLOW_EVENT_V4_SIZE, 0);
	if (!e) {
		lost(EVENTS_LOST_RING);
		return;
	}
	fill_event(e, skb, p, c, type, code, now, v6);
	/* Never wake the agent's reader: it reads on a clock (FLOW_READ_INTERVAL,
	 * agent/daemon.py). The ring's default wakes it at every event that finds it caught
	 * up, an interrupt on the packet path and a switch to the reader each: a node opening
	 * 10k connections/s paid 10k of both a second. A wake-up every so many events would
	 * cost the verifier a branch on every path that emits (from_pod verifies at about
	 * 517k of its 1M-instruction limit). */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/* Count the packet in its flow's aggregate. The first packet's event is kept whole, so
 * the record the agent makes names what the packet met. A new flow while the table is
 * full is counted lost at once: sending it to the ring instead would cost a flood of new
 * flows a ring event a packet, the cost aggregation is there to spare. */
static __always_inline void aggregate(struct __sk_buff *skb, const struct node_config *cfg,
				      const struct pkt *p, const struct flow_ctx *c,
				      __u8 type, __u8 code, __u64 now, bool v6)
{
	struct flow_agg_key key = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = cfg->aggregation == AGG_MAX ? 0 : p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.reason = code,
		.direction = c->direction,
		.hook = c->hook,
	};
	struct flow_agg6_key key6 = {};
	struct flow_agg_value *v, *fresh;
	__u32 zero = 0;
	int ret;

	if (v6) {
		key6.flow = key;
		key6.saddr6 = p->saddr6;
		key6.daddr6 = p->daddr6;
		v = flow_aggregates6.lookup(&key6);
	} else {
		v = flow_aggregates.lookup(&key);
	}
	if (v) {
		__sync_fetch_and_add(&v->packets, 1);
		__sync_fetch_and_add(&v->bytes, skb->len);
		v->last_seen = now;
		return;
	}
	fresh = flow_agg_scratch.lookup(&zero);
	if (!fresh) {
		lost(EVENTS_LOST_TABLE);
		return;
	}
	fill_event(&fresh->first, skb, p, c, type, code, now, v6);
	fresh->first.sport = key.sport;
	fresh->last_seen = now;
	fresh->packets = 1;
	fresh->bytes = skb->len;
	if (v6)
		ret = flow_aggregates6.insert(&key6, fresh);
	else
		ret = flow_aggregates.insert(&key, fresh);
	if (ret == 0)
		return;
	/* Another CPU made the entry first (-EEXIST), or the table is full. */
	v = NULL;
	if (ret == -EEXIST) {
		if (v6)
			v = flow_aggregates6.lookup(&key6);
		else
			v = flow_aggregates.lookup(&key);
	}
	if (!v) {
		lost(EVENTS_LOST_TABLE);
		return;
	}
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, skb->len);
	v->last_seen = now;
}

/* Report a verdict as the node's aggregation says: per event through the ring buffer, or
 * counted per flow for the agent to report. */
static __always_inline void emit_family(struct __sk_buff *skb, const struct node_config *cfg,
					const struct pkt *p, const struct flow_ctx *c,
					__u8 type, __u8 code, bool v6)
{
	__u64 now;

	if (!(cfg->flags & CFG_F_EVENTS))
		return;
	now = bpf_ktime_get_ns();
	if (cfg->aggregation == AGG_MAX ||
	    (cfg->aggregation == AGG_CONNECTION && type == EVENT_DROP))
		aggregate(skb, cfg, p, c, type, code, now, v6);
	else
		send_event(skb, cfg, p, c, type, code, now, v6);
}

static __always_inline void emit(struct __sk_buff *skb, const struct node_config *cfg,
				 const struct pkt *p, const struct flow_ctx *c, __u8 type,
				 __u8 code)
{
	emit_family(skb, cfg, p, c, type, code, false);
}

/* A drop reason turned into the program's verdict. */
static __always_inline int drop_family(struct __sk_buff *skb, const struct node_config *cfg,
				       const struct pkt *p, const struct flow_ctx *c, int reason,
				       bool v6)
{
	count(DROP_CODE(reason), c->direction, skb->len);
	emit_family(skb, cfg, p, c, EVENT_DROP, DROP_CODE(reason), v6);
	if (c->trace_id)
		trace_hop(skb, p, c, TRACE_DROPPED, DROP_CODE(reason), 0, v6);
	return TC_ACT_SHOT;
}

static __always_inline int drop(struct __sk_buff *skb, const struct node_config *cfg,
				const struct pkt *p, const struct flow_ctx *c, int reason)
{
	return drop_family(skb, cfg, p, c, reason, false);
}

/* The same for an IPv6 packet: its event carries the IPv6 addresses. */
static __always_inline int drop6(struct __sk_buff *skb, const struct node_config *cfg,
				 const struct pkt *p, const struct flow_ctx *c, int reason)
{
	return drop_family(skb, cfg, p, c, reason, true);
}

#endif
