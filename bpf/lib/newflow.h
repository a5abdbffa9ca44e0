/* The tail every new connection takes once policy allowed it, whichever hook saw it. */
#ifndef PODWIRE_NEWFLOW_H
#define PODWIRE_NEWFLOW_H

#include "conntrack.h"
#include "events.h"

/* Record the connection in conntrack and report it as a flow event (when events are
 * on). 0 to go on with delivery, or a drop reason (CT_FULL). */
static __always_inline int new_flow_commit(struct __sk_buff *skb,
					   const struct node_config *cfg, const struct pkt *p,
					   const struct flow_ctx *c, __u64 now)
{
	int ret = ct_create(p, now, c->egress_ref, c->ingress_ref);

	if (ret < 0)
		return ret;
	emit(skb, cfg, p, c, EVENT_FLOW, REASON_FORWARDED);
	return 0;
}

#endif
