/* Verdict bookkeeping: per-CPU counters for every packet, and ring buffer events
 * for each new connection allowed and each drop (when the config enables them). Both
 * carry a reason code (drop.h): REASON_FORWARDED or DROP_CODE(reason). */
#ifndef PODWIRE_EVENTS_H
#define PODWIRE_EVENTS_H

#include "maps.h"
#include "parse.h"

/* Who a verdict is about; filled as the program learns it. */
struct flow_ctx {
	__u32 src_identity;
	__u32 dst_identity;
	__u32 src_ep_id;
	__u32 dst_ep_id;
	__u32 egress_ref;
	__u32 ingress_ref;
	/* Set when the packet was sent to a Service frontend (lb.h): which Service, the
	 * frontend it was sent to, and CT_F_* of the translation. */
	__u32 service_id;
	__u32 frontend_addr;
	__u16 frontend_port;
	__u8 ct_flags;
	__u8 direction;
	__u8 hook;
	/* podwire trace (trace.h): the trace this packet belongs to (0: none), its
	 * TRACE_F_*, and conntrack's status of it once looked up (ct_known). */
	__u8 trace_flags;
	__u8 ct_status;
	__u8 ct_known;
	__u32 trace_id;
};

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

static __always_inline void emit(struct __sk_buff *skb, const struct node_config *cfg,
				 const struct pkt *p, const struct flow_ctx *c, __u8 type,
				 __u8 code)
{
	struct flow_event *e;

	if (!(cfg->flags & CFG_F_EVENTS))
		return;
	e = events.ringbuf_reserve(sizeof(*e));
	if (!e) {
		__u32 zero = 0;
		__u64 *lost = events_lost.lookup(&zero);

		if (lost)
			*lost += 1;
		return;
	}
	e->timestamp = bpf_ktime_get_ns();
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
	e->pad2 = 0;
	events.ringbuf_submit(e, 0);
}

/* A drop reason turned into the program's verdict. */
static __always_inline int drop(struct __sk_buff *skb, const struct node_config *cfg,
				const struct pkt *p, const struct flow_ctx *c, int reason)
{
	count(DROP_CODE(reason), c->direction, skb->len);
	emit(skb, cfg, p, c, EVENT_DROP, DROP_CODE(reason));
	if (c->trace_id)
		trace_hop(skb, p, c, TRACE_DROPPED, DROP_CODE(reason), 0);
	return TC_ACT_SHOT;
}

#endif
