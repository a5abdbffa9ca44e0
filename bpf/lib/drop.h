/* Drop reasons: the only list of them. podwire.bpf.constants reads this header, so the
 * names exist once.
 *
 * A step that may drop a packet returns 0 to go on or one of these reasons. They are
 * negative and far below the TC verdicts (TC_ACT_UNSPEC is -1, the others 0..8), as in
 * Cilium's bpf/lib/common.h, so a reason can never pass for a verdict. Forwarding is no
 * drop reason: counters and events carry a reason code instead, REASON_FORWARDED for a
 * packet that went on, DROP_CODE(reason) for a dropped one (1 for POLICY_DENIED, ...).
 * Codes stay below REASON_MAX, which sizes the metrics array. */
#ifndef PODWIRE_DROP_H
#define PODWIRE_DROP_H

#include <linux/types.h>

#define REASON_FORWARDED 0
#define REASON_MAX 32
/* Forwarded only because the policy that denies it is in audit mode (counted and
 * reported apart from REASON_FORWARDED): the highest code, so drop reasons keep room. */
#define REASON_AUDIT 31
#define DROP_CODE_BASE 128

enum drop_reason {
	DROP_POLICY_DENIED = -DROP_CODE_BASE - 1,
	DROP_INVALID_SOURCE = -DROP_CODE_BASE - 2,
	DROP_UNKNOWN_DESTINATION = -DROP_CODE_BASE - 3,
	DROP_NO_ROUTE = -DROP_CODE_BASE - 4,
	DROP_CT_FULL = -DROP_CODE_BASE - 5,
	DROP_MALFORMED = -DROP_CODE_BASE - 6,
	DROP_FRAG_NO_FIRST = -DROP_CODE_BASE - 7,
	DROP_UNSUPPORTED_L3 = -DROP_CODE_BASE - 8,
	DROP_NO_CONFIG = -DROP_CODE_BASE - 9,
	DROP_REDIRECT_FAILED = -DROP_CODE_BASE - 10,
	/* An SCTP common header cut short, or chunks that cannot be walked or bundle
	 * what RFC 9260 forbids (sctp.h): kept apart from MALFORMED so a count of it
	 * points at an SCTP sender. */
	DROP_MALFORMED_SCTP = -DROP_CODE_BASE - 11,
	/* Sent to a Service frontend that has no backend: the client is answered at
	 * once with an ICMP port unreachable from the frontend (lb.h). */
	DROP_NO_SERVICE_BACKEND = -DROP_CODE_BASE - 12,
	/* A NodePort client to be SNATed found no free source port (lb.h lb_snat_port). */
	DROP_NO_NAT_PORT = -DROP_CODE_BASE - 13,
	/* An SCTP packet whose port must change but which is an IP fragment: its CRC32c
	 * covers the whole packet, which one fragment does not hold. */
	DROP_SCTP_FRAGMENT = -DROP_CODE_BASE - 14,
	/* IPv6 extension headers (parse6.h). UNKNOWN: a header podwire does not walk (No
	 * Next Header, Mobility, HIP, Shim6, the experimental ones): what follows cannot be
	 * judged, so it is not let through. MALFORMED: one cut short, past the payload, or a
	 * hop-by-hop header anywhere but first. TOO_LONG: more than IPV6_EXT_MAX of them. */
	DROP_EXT_HEADER_UNKNOWN = -DROP_CODE_BASE - 15,
	DROP_EXT_HEADER_MALFORMED = -DROP_CODE_BASE - 16,
	DROP_EXT_CHAIN_TOO_LONG = -DROP_CODE_BASE - 17,
};

#define DROP_CODE(reason) ((__u8)(-(reason) - DROP_CODE_BASE))

#endif
