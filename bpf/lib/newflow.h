/* The tail every new connection takes once policy allowed it, whichever hook saw it. */
#ifndef PODWIRE_NEWFLOW_H
#define PODWIRE_NEWFLOW_H

#include "conntrack.h"
#include "events.h"

/* Report a connection just recorded as a flow event (when events are on). A side
 * forwarded by audit mode makes the event REASON_AUDIT about that side (ingress first),
 * counted under REASON_AUDIT too. Both families' commits end here. */
static __always_inline void new_flow_report(struct __sk_buff *skb,
					    const struct node_config *cfg, const struct pkt *p,
					    const struct flow_ctx *c, bool v6)
{
	struct flow_ctx audited;

	if (!c->audit) {
		emit_family(skb, cfg, p, c, EVENT_FLOW, REASON_FORWARDED, v6);
		return;
	}
	audited = *c;
	audited.direction = c->audit & (1 << DIR_INGRESS) ? DIR_INGRESS : DIR_EGRESS;
	count(REASON_AUDIT, audited.direction, skb->len);
	emit_family(skb, cfg, p, &audited, EVENT_FLOW, REASON_AUDIT, v6);
}

/* Record the connection in conntrack and report it (new_flow_report). A connection made
 * through a Service records its reverse translation. 0 to go on with delivery, or a
 * drop reason (CT_FULL). */
static __always_inline int new_flow_commit(struct __sk_buff *skb,
					   const struct node_config *cfg, const struct pkt *p,
					   const struct flow_ctx *c, __u64 now)
{
	struct ct_value v = {
		.egress_ref = c->egress_ref,
		.ingress_ref = c->ingress_ref,
		.service_id = c->service_id,
		.rev_addr = c->frontend_addr,
		.rev_port = c->frontend_port,
		.nat_addr = c->nat_addr,
		.nat_port = c->nat_port,
		.flags = c->ct_flags,
	};
	int ret = ct_create(p, CT_SCOPE_FLOW, now, &v);

	if (ret < 0)
		return ret;
	new_flow_report(skb, cfg, p, c, false);
	return 0;
}

#endif
