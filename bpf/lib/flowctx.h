/* struct flow_ctx: what a hook has learned about the packet it is judging, shared by the
 * verdict bookkeeping (events.h) and podwire trace (trace.h). */
#ifndef PODWIRE_FLOWCTX_H
#define PODWIRE_FLOWCTX_H

#include <linux/types.h>

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
	/* A NodePort client SNATed to the node: its own address and port (CT_F_SNAT). */
	__u16 nat_port;
	__u32 nat_addr;
	__u8 ct_flags;
	__u8 direction;
	__u8 hook;
	/* 1 << direction for each side forwarded only because its denying policy is in
	 * audit mode (policy.h): the connection's event is then REASON_AUDIT. */
	__u8 audit;
	/* podwire trace (trace.h): the trace this packet belongs to (0: none), its
	 * TRACE_F_*, and conntrack's status of it once looked up (ct_known). */
	__u8 trace_flags;
	__u8 ct_status;
	__u8 ct_known;
	__u32 trace_id;
};

#endif
