/* Drop reasons: the only list of them. agent/reasons.py reads this enum, so the
 * names exist once. 0 is not a drop: the counters use it for forwarded packets. */
#ifndef PODWIRE_DROP_H
#define PODWIRE_DROP_H

enum drop_reason {
	DROP_FORWARDED = 0,
	DROP_POLICY_DENIED = 1,
	DROP_INVALID_SOURCE = 2,
	DROP_UNKNOWN_DESTINATION = 3,
	DROP_NO_ROUTE = 4,
	DROP_CT_FULL = 5,
	DROP_MALFORMED = 6,
	DROP_FRAG_NO_FIRST = 7,
	DROP_UNSUPPORTED_L3 = 8,
	DROP_NO_CONFIG = 9,
	DROP_REDIRECT_FAILED = 10,
	DROP_MAX = 16,
};

#endif
