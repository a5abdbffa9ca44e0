/* Every struct shared between the datapath and the agent, defined once.
 *
 * Plain C (only <linux/types.h>) so both bcc and gcc compile it: the struct layout
 * test builds a tiny gcc program from this header and compares sizes and offsets
 * with agent/structs.py. IPv4 addresses and ports are in network byte order. */
#ifndef PODWIRE_TYPES_H
#define PODWIRE_TYPES_H

#include <linux/types.h>

/* Reserved identities (docs/contracts.md). IDENTITY_ANY is the policy key's "any
 * peer"; the others are what an address that is no pod stands for. */
#define IDENTITY_ANY 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2
#define IDENTITY_REMOTE_NODE 3

/* endpoints.flags */
#define EP_F_INGRESS_ISOLATED 1
#define EP_F_EGRESS_ISOLATED 2

/* policy_key.direction and the direction counters and events are kept under. */
#define DIR_INGRESS 0
#define DIR_EGRESS 1
#define DIR_MAX 2

/* Where a packet was seen (flow_event.hook). */
#define HOOK_FROM_POD 1
#define HOOK_TO_POD 2
#define HOOK_FROM_OVERLAY 3

/* flow_event.type */
#define EVENT_FLOW 1 /* a new connection was allowed */
#define EVENT_DROP 2 /* a packet was dropped; reason says why */

/* node_config.flags */
#define CFG_F_EVENTS 1

/* ct_value.state: the phases of a connection, each with its idle timeout. TCP and SCTP
 * go OPENING (a SYN, an INIT) -> ESTABLISHED (the responder's ACK, its COOKIE-ACK) ->
 * CLOSING (FIN or RST; SHUTDOWN, SHUTDOWN-ACK, SHUTDOWN-COMPLETE or ABORT); other
 * protocols go NEW -> ESTABLISHED on the first reply. */
#define CT_STATE_NEW 0
#define CT_STATE_OPENING 1
#define CT_STATE_ESTABLISHED 2
#define CT_STATE_CLOSING 3

struct endpoint_info {
	__u32 ifindex; /* host-side veth */
	__u32 ep_id;
	__u32 identity;
	__u32 flags;
	__u8 pod_mac[6];
	__u8 host_mac[6];
};

struct ipcache_key {
	__u32 prefixlen;
	__u32 ip;
};

struct ipcache_value {
	__u32 identity;
	__u32 cidr_identity;
	__u32 tunnel_ip; /* underlay address of the node that owns the prefix, 0 if none */
	__u32 flags;
};

/* LPM trie key: the bytes after prefixlen are matched most significant first, so
 * it is packed. ep_id, direction, identity and proto are always matched in full
 * (prefixlen >= POLICY_PREFIX_ANY_PROTO), so their byte order is host order; dport is
 * network order because port ranges match its leading bits (prefixlen 80..96). */
struct policy_key {
	__u32 prefixlen;
	__u32 ep_id;
	__u8 direction;
	__u32 identity;
	__u8 proto;
	__u16 dport;
} __attribute__((packed));

/* policy_key.prefixlen: the peer on any protocol and port, on any port of one
 * protocol, on one port. A port range is aligned blocks between the last two. */
#define POLICY_PREFIX_ANY_PROTO 72
#define POLICY_PREFIX_ANY_PORT 80
#define POLICY_PREFIX_FULL 96

struct policy_value {
	__u32 policy_ref;
	__u32 flags;
};

/* 5-tuple of the initiator. ICMP echo uses the echo id as both ports, so the
 * reversed tuple of a reply equals the request's. */
struct ct_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct ct_value {
	__u64 last_seen; /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u64 created;
	__u32 egress_ref;  /* policy_ref that allowed it on egress, 0 = not isolated */
	__u32 ingress_ref; /* same for ingress */
	__u8 state;
	__u8 seen_reply;
	__u8 pad[6];
};

/* Fragments: the first fragment records its ports so later ones share its verdict. */
struct frag_key {
	__u32 saddr;
	__u32 daddr;
	__u16 id;
	__u8 proto;
	__u8 pad;
};

struct frag_value {
	__u16 sport;
	__u16 dport;
};

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

/* Node-wide settings, one entry. Timeouts in seconds. */
struct node_config {
	__u32 vxlan_ifindex;
	__u32 node_ip;
	__u32 flags;
	__u32 ct_tcp_syn;
	__u32 ct_tcp_established;
	__u32 ct_tcp_closing;
	__u32 ct_udp;
	__u32 ct_icmp;
	__u32 ct_other;
	__u32 ct_sctp_init;
	__u32 ct_sctp_established;
	__u32 ct_sctp_closing;
};

struct flow_event {
	__u64 timestamp; /* bpf_ktime_get_ns() */
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 type;
	__u8 reason;
	__u8 direction;
	__u8 hook;
	__u8 pad[2];
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 src_ep_id;
	__u32 dst_ep_id;
	__u32 egress_ref;
	__u32 ingress_ref;
	__u32 len;
};

#endif
