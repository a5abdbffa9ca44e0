/* Every map, defined once. The loader creates and pins each map under PIN_DIR
 * before compiling (bcc 0.26 only opens pinned maps, it does not create them), so a
 * restarted agent adopts the live maps and their contents. podwire.bpf.constants reads
 * the declarations below (name, type, key, value, size, flags), so the loader creates
 * exactly these. A size that is a macro comes from the loader's -D flags and must match
 * what it created. */
#ifndef PODWIRE_MAPS_H
#define PODWIRE_MAPS_H

#include "types.h"
#include "drop.h"

#ifndef PIN_DIR
#error "PIN_DIR must be defined by the loader"
#endif

/* A map is pinned under its own name. */
#define PINNED(name) PIN_DIR "/" #name

/* BPF_RINGBUF_OUTPUT with a pinned path: bcc has no such macro, but its front end
 * accepts "<type>:<pin path>" in the section name like BPF_TABLE_PINNED does. */
#define BPF_RINGBUF_PINNED(_name, _bytes)                               \
	struct _name##_table_t {                                        \
		int key;                                                \
		u32 leaf;                                               \
		int (*ringbuf_output)(void *, u64, u64);                \
		void *(*ringbuf_reserve)(u64);                          \
		void (*ringbuf_discard)(void *, u64);                   \
		void (*ringbuf_submit)(void *, u64);                    \
		u32 max_entries;                                        \
	};                                                              \
	__attribute__((section("maps/ringbuf:" PINNED(_name))))         \
	struct _name##_table_t _name = { .max_entries = _bytes }

/* One ring buffer per CPU, each _bytes long: an array of ring buffer maps indexed by CPU,
 * which the loader creates (one inner ring per possible CPU) and fills before bcc opens
 * the pin (as BPF_TABLE_PINNED does), so the 1 entry declared here is never used. A program reserves in its own
 * CPU's ring (events_ring), so producers on two CPUs never contend for one ring. */
#define BPF_RINGBUF_PER_CPU_PINNED(_name, _bytes)                       \
	BPF_TABLE("array_of_maps:" PINNED(_name), __u32, __u32, _name, 1)

BPF_TABLE_PINNED("hash", __u32, struct endpoint_info, endpoints, EP_MAX,
		 PINNED(endpoints));
BPF_TABLE_PINNED("lpm_trie", struct ipcache_key, struct ipcache_value, ipcache,
		 IPCACHE_MAX, PINNED(ipcache), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct policy_key, struct policy_value, policy,
		 POLICY_MAX, PINNED(policy), BPF_F_NO_PREALLOC);
/* A preallocated HASH, not an LRU: when it is full a new connection is dropped
 * with CT_FULL, and a flood of new flows can never evict an established one. */
BPF_TABLE_PINNED("hash", struct ct_key, struct ct_value, conntrack, CT_MAX,
		 PINNED(conntrack));
BPF_TABLE_PINNED("lru_hash", struct frag_key, struct frag_value, fragments, FRAG_MAX,
		 PINNED(fragments));
/* IPv6 keeps maps of its own (as Cilium's cilium_ipcache v6 and ct6): the IPv4 keys stay
 * small, and each family's programs look up only its own. The values are shared, but
 * conntrack6's, which also holds an IPv6 frontend's address (ct6_value). */
BPF_TABLE_PINNED("hash", struct ip6_addr, struct endpoint_info, endpoints6, EP6_MAX,
		 PINNED(endpoints6));
BPF_TABLE_PINNED("lpm_trie", struct ipcache6_key, struct ipcache_value, ipcache6,
		 IPCACHE6_MAX, PINNED(ipcache6), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", struct ct6_key, struct ct6_value, conntrack6, CT6_MAX,
		 PINNED(conntrack6));
BPF_TABLE_PINNED("lru_hash", struct frag6_key, struct frag_value, fragments6, FRAG6_MAX,
		 PINNED(fragments6));
/* The IPv6 programs by the hook they serve (HOOK_*): an IPv4 entry program tail-calls
 * its hook's when a packet is IPv6 (entry.h), so each family's program stays within the
 * verifier's limits on its own. The loader fills it. */
BPF_TABLE_PINNED("prog", __u32, __u32, progs6, HOOK_MAX, PINNED(progs6));
/* Index metrics_index(code, direction): a reason code (drop.h) by direction. */
BPF_TABLE_PINNED("percpu_array", __u32, struct metrics_value, metrics,
		 REASON_MAX * DIR_MAX, PINNED(metrics));
/* Events lost before the agent read them, by EVENTS_LOST_* (types.h). */
BPF_TABLE_PINNED("percpu_array", __u32, __u64, events_lost, EVENTS_LOST_MAX,
		 PINNED(events_lost));
/* Flows the datapath counts instead of reporting each packet (AGG_*, events.h); the
 * agent reports and removes them. A plain HASH, not an LRU: an LRU would evict a flow
 * whose counts were not reported yet without a trace; when this one is full a new flow's
 * packets are counted as lost (EVENTS_LOST_TABLE), the metrics still count each one. */
BPF_TABLE_PINNED("hash", struct flow_agg_key, struct flow_agg_value, flow_aggregates,
		 FLOW_AGGREGATES_MAX, PINNED(flow_aggregates));
/* The same for IPv6 flows (their key holds the 128-bit addresses). */
BPF_TABLE_PINNED("hash", struct flow_agg6_key, struct flow_agg_value, flow_aggregates6,
		 FLOW_AGGREGATES6_MAX, PINNED(flow_aggregates6));
BPF_TABLE_PINNED("percpu_array", __u32, struct event_rate_state, event_rate, 1,
		 PINNED(event_rate));
/* Where a new flow's aggregate is built before it is inserted: a value that size on
 * the stack would crowd the entry programs' 512 bytes. */
BPF_TABLE_PINNED("percpu_array", __u32, struct flow_agg_value, flow_agg_scratch, 1,
		 PINNED(flow_agg_scratch));
BPF_TABLE_PINNED("array", __u32, struct node_config, config, 1, PINNED(config));
/* The load balancer: frontend slots (types.h), backends by id, and the ClientIP
 * affinity of clients (an LRU: a forgotten client is only given a fresh choice). */
BPF_TABLE_PINNED("hash", struct lb_key, struct lb_value, lb_services, LB_SERVICES_MAX,
		 PINNED(lb_services), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", __u32, struct lb_backend, lb_backends, LB_BACKENDS_MAX,
		 PINNED(lb_backends), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lru_hash", struct lb_affinity_key, struct lb_affinity_value, lb_affinity,
		 LB_AFFINITY_MAX, PINNED(lb_affinity));
BPF_TABLE_PINNED("lru_hash", struct lb_sock_key, struct lb_sock_value, lb_sock_revnat,
		 LB_SOCK_REVNAT_MAX, PINNED(lb_sock_revnat));
/* The IPv6 load balancer (types.h lb6_key): frontend slots, backends, affinities, the
 * node's own sockets' frontends (as lb_sock_revnat), and its programs. */
BPF_TABLE_PINNED("hash", struct lb6_key, struct lb_value, lb6_services, LB6_SERVICES_MAX,
		 PINNED(lb6_services), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", __u32, struct lb6_backend, lb6_backends, LB6_BACKENDS_MAX,
		 PINNED(lb6_backends), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lru_hash", struct lb6_affinity_key, struct lb_affinity_value, lb6_affinity,
		 LB6_AFFINITY_MAX, PINNED(lb6_affinity));
BPF_TABLE_PINNED("lru_hash", struct lb6_sock_key, struct lb6_sock_value, lb6_sock_revnat,
		 LB6_SOCK_REVNAT_MAX, PINNED(lb6_sock_revnat));
BPF_TABLE_PINNED("prog", __u32, __u32, lb6_progs, LB6_PROG_MAX, PINNED(lb6_progs));
BPF_TABLE_PINNED("percpu_array", __u32, struct lb6_translated, lb6_translated, 1,
		 PINNED(lb6_translated));
BPF_RINGBUF_PER_CPU_PINNED(events, EVENTS_BYTES);
/* podwire trace: armed tags by DSCP, --live marks by endpoint, the hops seen. */
BPF_TABLE_PINNED("array", __u32, struct trace_tag, trace_tags, TRACE_TAGS,
		 PINNED(trace_tags));
BPF_TABLE_PINNED("hash", __u32, struct trace_live, trace_live, TRACE_TAGS,
		 PINNED(trace_live));
BPF_RINGBUF_PINNED(trace_events, TRACE_EVENTS_BYTES);

static __always_inline __u32 metrics_index(__u8 code, __u8 direction)
{
	return code * DIR_MAX + direction;
}

#endif
