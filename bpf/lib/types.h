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

/* endpoints.flags. ISOLATED: a NetworkPolicy selects the pod that way, so what no
 * NetworkPolicy allows is denied once the Admin tier has passed it on. TIERED: a cluster
 * policy (Admin or Baseline tier) selects it, so policy is looked up even when no
 * NetworkPolicy isolates it. AUDIT: every NetworkPolicy isolating it that way is in audit
 * mode, so what they would deny is forwarded and reported (REASON_AUDIT). */
#define EP_F_INGRESS_ISOLATED 1
#define EP_F_EGRESS_ISOLATED 2
#define EP_F_INGRESS_TIERED 4
#define EP_F_EGRESS_TIERED 8
#define EP_F_INGRESS_AUDIT 16
#define EP_F_EGRESS_AUDIT 32

/* policy_key.direction and the direction counters and events are kept under. */
#define DIR_INGRESS 0
#define DIR_EGRESS 1
#define DIR_MAX 2

/* Where a packet was seen (flow_event.hook). */
#define HOOK_FROM_POD 1
#define HOOK_TO_POD 2
#define HOOK_FROM_OVERLAY 3
/* The node's uplink (bpf_host.c): NodePorts reached from outside. */
#define HOOK_FROM_NETDEV 4
#define HOOK_MAX 5

/* flow_event.family: the IP version of the packet it reports. */
#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

/* flow_event.type */
#define EVENT_FLOW 1 /* a new connection was allowed */
#define EVENT_DROP 2 /* a packet was dropped; reason says why */

/* node_config.flags */
#define CFG_F_EVENTS 1

/* node_config.aggregation: how much the datapath summarises before it reports (events.h).
 * NONE: an event per new connection and per dropped packet. CONNECTION: an event per new
 * connection; the drops of one flow (5-tuple, reason, direction, hook) are counted in
 * flow_aggregates and reported by the agent as one record per flow and interval. MAX:
 * new connections too are counted there, and the source port is left out of the flow, so
 * one client's connections (or a flood from random ports) to one port are one record. */
#define AGG_NONE 0
#define AGG_CONNECTION 1
#define AGG_MAX 2

/* events_lost index: where an event was lost before the agent read it. */
#define EVENTS_LOST_RING 0 /* no room in the ring buffer (the reader was too slow) */
#define EVENTS_LOST_RATE 1 /* over the node's event rate limit */
#define EVENTS_LOST_TABLE 2 /* a new flow to count while flow_aggregates was full */
#define EVENTS_LOST_MAX 3

/* ct_value.state: the phases of a connection, each with its idle timeout. TCP and SCTP
 * go OPENING (a SYN, an INIT) -> ESTABLISHED (the responder's ACK, its COOKIE-ACK) ->
 * CLOSING (FIN or RST; SHUTDOWN, SHUTDOWN-ACK, SHUTDOWN-COMPLETE or ABORT); other
 * protocols go NEW -> ESTABLISHED on the first reply. */
#define CT_STATE_NEW 0
#define CT_STATE_OPENING 1
#define CT_STATE_ESTABLISHED 2
#define CT_STATE_CLOSING 3

/* An IPv6 address as the packet holds it (network order), in 32-bit words so it is
 * compared and copied a word at a time. */
struct ip6_addr {
	__u32 w[4];
};

struct endpoint_info {
	__u32 ifindex; /* host-side veth */
	__u32 ep_id;
	__u32 identity;
	__u32 flags;
	/* In a frame's order, destination then source: delivery writes both at once. */
	__u8 pod_mac[6];
	__u8 host_mac[6];
};

struct ipcache_key {
	__u32 prefixlen;
	__u32 ip;
};

struct ipcache6_key {
	__u32 prefixlen;
	struct ip6_addr ip;
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

/* policy_value.admin_action, baseline_action: what a cluster policy rule does. NONE:
 * no rule of that tier matches here. AUDIT is a Deny of a policy in audit mode: the
 * packet is forwarded and reported. */
#define POLICY_ACTION_NONE 0
#define POLICY_ACTION_ACCEPT 1
#define POLICY_ACTION_DENY 2
#define POLICY_ACTION_PASS 3
#define POLICY_ACTION_AUDIT 4

/* What one key says for each tier, already merged by the agent with every wider key of
 * the same peer (agent/policy_compiler.py), so the longest match of each of the three
 * lookups carries all that applies to its peer key. The lookups are then combined: in
 * each cluster tier the lowest rank decides (the first rule in precedence order); a
 * NetworkPolicy allow anywhere allows. Rank 0 is the agent's "changing" deny, written
 * for the instant of an update (agent/reconcile.py); rule ranks start at 1. */
struct policy_value {
	__u32 policy_ref; /* the NetworkPolicy that allows, 0: none */
	__u32 admin_ref;  /* the Admin rule (agent's rule table), 0: none */
	__u32 admin_rank;
	__u32 baseline_ref;
	__u32 baseline_rank;
	__u8 admin_action;
	__u8 baseline_action;
	__u8 pad[2];
};

/* ct_key.scope: an entry of the tuple as delivered (the connection itself), or of
 * the tuple a client sent to a Service frontend, which remembers the backend chosen
 * for it (Cilium's CT_SERVICE) so every packet of the connection goes to the same one. */
#define CT_SCOPE_FLOW 0
#define CT_SCOPE_SERVICE 1

/* ct_value.flags */
#define CT_F_HAIRPIN 1 /* the client reached itself: its source was SNATed to LB_HAIRPIN_IP */
/* A NodePort connection from outside (bpf_host.c): its replies, reverse-translated, leave
 * through the node's uplink (lb_to_netdev): the host stack would drop a packet coming in
 * from a pod with the node's own address as source. */
#define CT_F_NODEPORT 2
/* ...whose client was SNATed to the frontend's address (externalTrafficPolicy Cluster):
 * replies are sent back to nat_addr:nat_port. */
#define CT_F_SNAT 4
/* A connection a node's own address opened through the overlay (a NodePort that node
 * SNATed): replies go back through the tunnel to that node, which reverse-translates. */
#define CT_F_TUNNEL_REPLY 8

/* 5-tuple of the initiator. ICMP echo uses the echo id as both ports, so the
 * reversed tuple of a reply equals the request's. */
struct ct_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

/* The same for IPv6 (conntrack6.h); its entries are ct6_value. */
struct ct6_key {
	struct ip6_addr saddr;
	struct ip6_addr daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct ct_value {
	__u64 last_seen; /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u64 created;
	__u32 egress_ref;  /* policy_ref that allowed it on egress, 0 = not isolated */
	__u32 ingress_ref; /* same for ingress */
	/* Reverse translation of a connection made through a Service (CT_SCOPE_FLOW at the
	 * client's node): replies leave with rev_addr:rev_port as their source. 0: none. */
	__u32 service_id;
	__u32 rev_addr;
	__u32 backend_id; /* CT_SCOPE_SERVICE: the backend this connection was given */
	__u16 rev_port;
	__u8 state;
	__u8 seen_reply;
	__u8 flags; /* CT_F_* */
	__u8 pad;
	/* CT_SCOPE_SERVICE of a SNATed NodePort connection: the source port its client was
	 * given (nat_addr unused). CT_SCOPE_FLOW with CT_F_SNAT: the client's own address and
	 * port, which replies get back as destination. Both 0: no SNAT. */
	__u16 nat_port;
	__u32 nat_addr;
};

/* conntrack6's value: ct_value, whose rev_addr (32 bits) cannot hold an IPv6 frontend, and
 * that frontend's address, which a Service connection's replies get as source (lb6.h). In
 * the entry itself, as IPv4's rev_addr: the replies of an open connection keep it after
 * its frontend is deleted. */
struct ct6_value {
	struct ct_value ct;
	struct ip6_addr rev_addr6;
};

/* The load balancer (bpf/lib/lb.h). A frontend is an address:port/protocol seen from a
 * scope; its entries are Cilium's slots: slot 0 is the service (count of backends, its
 * id, affinity timeout, flags), slots 1..count name one backend each. */
#define LB_SCOPE_INTERNAL 0 /* pods and the node itself */
#define LB_SCOPE_EXTERNAL 1 /* clients outside the cluster, through a NodePort */

/* lb_value.flags (slot 0) */
#define LB_F_KEEP_CLIENT 1 /* externalTrafficPolicy Local: no SNAT, local backends only */
#define LB_F_NODE_PORT 2

/* A pod reaching itself through a Service is given this source (host byte order here),
 * as Cilium does: its own address as source would be dropped by its kernel. */
#define LB_HAIRPIN_IP 0xa9fe2a01 /* 169.254.42.1 */
/* IPv6's: 100::a9fe:2a01, LB_HAIRPIN_IP in the last word of the discard-only prefix
 * 100::/64 (RFC 6666), which is no one's address and which a router drops. Not link-local:
 * the pod would solicit a neighbour for that instead of replying through its gateway.
 * The first word (host byte order), the middle two are 0. */
#define LB6_HAIRPIN_IP_HIGH 0x01000000

/* The source ports a NodePort client SNATed to the node is given (host byte order): above
 * Linux's default ephemeral range (32768-60999), so the node's own sockets keep theirs. */
#define LB_SNAT_PORT_MIN 61000
#define LB_SNAT_PORT_MAX 65535

struct lb_key {
	__u32 address;
	__u16 port;
	__u8 proto;
	__u8 scope;
	__u16 slot;
	__u8 pad[2];
};

struct lb_value {
	__u32 backend_id; /* slots 1..count */
	__u32 service_id; /* slot 0: the agent's index of "namespace/name" */
	__u32 affinity_timeout; /* slot 0: ClientIP affinity in seconds, 0 = none */
	__u16 count; /* slot 0: backends that take new connections */
	__u8 flags; /* slot 0: LB_F_* */
	__u8 pad;
};

struct lb_backend {
	__u32 address;
	__u16 port;
	__u8 pad[2];
};

/* The IPv6 load balancer (lb6.h): the same slots, values and backend ids as IPv4's, keyed
 * by 128-bit addresses in maps of their own. */
struct lb6_key {
	struct ip6_addr address;
	__u16 port;
	__u8 proto;
	__u8 scope;
	__u16 slot;
	__u8 pad[2];
};

struct lb6_backend {
	struct ip6_addr address;
	__u16 port;
	__u8 pad[2];
};

struct lb6_affinity_key {
	struct ip6_addr client;
	__u32 service_id;
};

/* The IPv6 load balancer's programs (bpf_lb6.c), by their slot of lb6_progs: from_pod6
 * tail-calls FRONTEND for a packet to an IPv6 frontend, and from_pod6 and from_overlay6
 * tail-call REPLY for a reply of a connection made through one, RELATED for an ICMPv6
 * error about what its client sent; from_pod6 tail-calls FRONTEND_ICMP for the client's
 * ICMPv6 error about a reply, sent to the frontend. Each verifies alone, so none of them
 * carries the others' 16-byte rewrites. */
#define LB6_PROG_FRONTEND 0
#define LB6_PROG_REPLY 1
#define LB6_PROG_RELATED 2
#define LB6_PROG_FRONTEND_ICMP 3
#define LB6_PROG_MAX 4

/* skb->cb word from_pod6 and from_overlay6 pass to lb6_reply, written just before the
 * tail call: the caller's hook. lb6_reply finds the connection's entry itself. */
#define LB6_CB_HOOK 0

/* What lb6_frontend hands back to from_pod6 with the translated packet, in the per-CPU
 * lb6_translated: a tail call runs on the CPU of its caller with nothing in between, and
 * from_pod6 clears it once read. Not skb->cb: a packet arrives with what the layers before
 * left there, so every IPv4 entry program would have to clear it for every IPv6 packet;
 * this way only the two programs that pass it touch it. service_id 0: not translated. */
struct lb6_translated {
	__u32 service_id;
	__u16 frontend_port; /* network order */
	__u8 ct_flags; /* CT_F_HAIRPIN: the source is LB6_HAIRPIN_IP_HIGH's address */
	__u8 pad;
	struct ip6_addr frontend_addr;
};

/* ClientIP session affinity: which backend a client last used for a service. */
struct lb_affinity_key {
	__u32 client;
	__u32 service_id;
};

/* A socket of the node itself that a socket program sent to a backend (bpf_sock.c):
 * what it receives from that backend is given the frontend's address as source. */
struct lb_sock_key {
	__u64 cookie; /* bpf_get_socket_cookie() */
	__u32 address;
	__u16 port;
	__u8 pad[2];
};

struct lb_sock_value {
	__u32 address;
	__u16 port;
	__u8 pad[2];
};

/* The same for an IPv6 socket sent to an IPv6 backend (connect6, sendmsg6). An IPv6
 * socket sent to an IPv4 backend through an IPv4-mapped address (::ffff:a.b.c.d) is
 * remembered in IPv4's: the address it reads back holds the IPv4 one. */
struct lb6_sock_key {
	__u64 cookie;
	struct ip6_addr address;
	__u16 port;
	__u8 pad[6];
};

struct lb6_sock_value {
	struct ip6_addr address;
	__u16 port;
	__u8 pad[2];
};

struct lb_affinity_value {
	__u64 last_used; /* bpf_ktime_get_ns() */
	__u32 backend_id;
	__u16 slot; /* the frontend slot that held backend_id: still its, or forgotten */
	__u16 pad;
};

/* Fragments: the first fragment records its ports so later ones share its verdict. */
struct frag_key {
	__u32 saddr;
	__u32 daddr;
	__u16 id;
	__u8 proto;
	__u8 pad;
};

/* An IPv6 fragment header's identification is 32 bits; proto is the upper layer's. */
struct frag6_key {
	struct ip6_addr saddr;
	struct ip6_addr daddr;
	__u32 id;
	__u8 proto;
	__u8 pad[3];
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
	/* The node's network namespace (SO_NETNS_COOKIE): the socket programs, attached
	 * to a cgroup every node's processes share, act only in this one. 0: in none. */
	__u64 netns_cookie;
	/* The device NodePorts arrive on (from_netdev), where their replies leave. 0: none. */
	__u32 uplink_ifindex;
	__u32 aggregation; /* AGG_* */
	/* The ring buffer's rate limit, per CPU (a GCRA: each event costs event_cost_ns of
	 * budget, at most event_burst_ns ahead of now). 0: no limit. */
	__u64 event_cost_ns;
	__u64 event_burst_ns;
};

/* podwire trace (bpf/lib/trace.h). A packet whose DSCP (IPv4 TOS, IPv6 traffic class) is
 * an armed tag reports every hook it crosses, with what was decided there, to the
 * trace_events ring. */
#define TRACE_TAGS 64 /* one slot per DSCP value; 0 is never a tag */
#define TRACE_EVENTS_BYTES 65536
/* Injected by the agent: dropped where it would be delivered. Only the packet with the
 * tag's ip_id is, so a pod that sends this DSCP itself loses nothing to a trace. */
#define TRACE_F_CONSUME 1
#define TRACE_F_LIVE 2 /* a pod's own packet the datapath marked: delivered, tag cleared */

struct trace_tag {
	__u32 trace_id; /* 0: the tag is not armed */
	__u16 flags; /* TRACE_F_* */
	/* TRACE_F_CONSUME: the injected packet's IPv4 id, or the low 16 bits of its IPv6
	 * flow label; network order */
	__u16 ip_id;
};

/* Arms --live: the next packet the endpoint sends to daddr:dport/proto (an IPv6 one:
 * daddr6, daddr 0) is marked. */
struct trace_live {
	__u32 daddr;
	__u16 dport;
	__u8 proto;
	__u8 tag;
	struct ip6_addr daddr6;
};

/* trace_event.outcome: where the packet went from the hook. */
#define TRACE_TO_POD 1 /* into a local pod (an injected packet stops here) */
#define TRACE_TO_TUNNEL 2 /* into the overlay, to tunnel_ip */
#define TRACE_TO_HOST 3 /* up the node's own stack */
#define TRACE_DROPPED 4 /* reason says why */

/* What conntrack said of the packet (conntrack.h's enum ct_status). */
#define CT_STATUS_NEW 0
#define CT_STATUS_ESTABLISHED 1 /* a packet in the initiator's direction */
#define CT_STATUS_REPLY 2
#define CT_STATUS_RELATED 3 /* an ICMP error about a tracked connection */
#define CT_STATUS_UNKNOWN 255 /* the hook left before looking */

struct trace_event {
	__u64 timestamp; /* bpf_ktime_get_ns() */
	__u32 trace_id;
	__u32 saddr; /* as the hook left it: after a Service translation */
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 hook;
	__u8 outcome; /* TRACE_TO_* */
	__u8 reason; /* REASON_FORWARDED or a drop code */
	__u8 ct_status; /* CT_STATUS_* */
	__u8 direction;
	__u8 tcp_flags;
	/* FAMILY_IPV4: the addresses are saddr, daddr (an IPv4 hop's record ends before
	 * saddr6: TRACE_EVENT_V4_SIZE); FAMILY_IPV6: saddr6, daddr6, and frontend_addr is 0
	 * (the agent names an IPv6 frontend from service_id and frontend_port). */
	__u8 family;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 src_ep_id;
	__u32 dst_ep_id;
	__u32 egress_ref;
	__u32 ingress_ref;
	__u32 service_id;
	__u32 frontend_addr;
	__u16 frontend_port;
	__u16 pad2;
	__u32 tunnel_ip; /* TRACE_TO_TUNNEL: the node it was sent to (the underlay is IPv4) */
	__u32 ifindex; /* the device the hook runs on */
	struct ip6_addr saddr6;
	struct ip6_addr daddr6;
};

/* The bytes of an IPv4 hop in the ring: the struct up to its IPv6 addresses. */
#define TRACE_EVENT_V4_SIZE __builtin_offsetof(struct trace_event, saddr6)

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
	__u16 frontend_port; /* the Service port it was sent to, 0 when none */
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 src_ep_id;
	__u32 dst_ep_id;
	__u32 egress_ref;
	__u32 ingress_ref;
	__u32 len;
	__u32 service_id; /* the Service it went through (lb_value.service_id), 0 when none */
	__u32 frontend_addr; /* the address the client sent it to, 0 when none */
	/* FAMILY_IPV4: the addresses are saddr, daddr; FAMILY_IPV6: saddr6, daddr6. An
	 * IPv4 event in the ring ends before saddr6 (FLOW_EVENT_V4_SIZE): a third fewer
	 * bytes a record, so a ring holds 40% more of them. */
	__u32 family;
	struct ip6_addr saddr6;
	struct ip6_addr daddr6;
};

/* The bytes of an IPv4 event in the ring: the struct up to its IPv6 addresses. */
#define FLOW_EVENT_V4_SIZE __builtin_offsetof(struct flow_event, saddr6)

/* A flow as flow_aggregates counts it: under AGG_MAX sport is 0. */
struct flow_agg_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 reason;
	__u8 direction;
	__u8 hook;
};

/* An IPv6 flow as flow_aggregates6 counts it: flow's saddr and daddr are 0. */
struct flow_agg6_key {
	struct flow_agg_key flow;
	struct ip6_addr saddr6;
	struct ip6_addr daddr6;
};

/* The first packet's event, and the totals since: packets and bytes only grow (atomic
 * adds), so the agent reports the difference from what it reported before and no count
 * is lost between the datapath and the agent. */
struct flow_agg_value {
	struct flow_event first;
	__u64 last_seen; /* bpf_ktime_get_ns() of the latest packet */
	__u64 packets;
	__u64 bytes;
};

/* The rate limiter's state, per CPU: the GCRA's theoretical arrival time. */
struct event_rate_state {
	__u64 tat;
};

#endif
