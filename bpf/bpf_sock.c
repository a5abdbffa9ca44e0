/* The node's own processes reaching Services (kubelet probes, hostNetwork pods):
 * cgroup sock_addr programs that translate at the socket, as Cilium's bpf_sock.c does,
 * so no packet of theirs needs translating. connect4 (TCP, connected UDP) and sendmsg4
 * (unconnected UDP) choose the backend; recvmsg4 and getpeername4 give the frontend back
 * as the peer. Every lab node's processes share one cgroup tree, so a program acts only
 * for sockets of its own node's network namespace (node_config.netns_cookie). */
#include "lib/lb.h"

#define SOCK_ALLOW 1
#define SOCK_REFUSE 0
#define ECONNREFUSED 111

/* bcc declares bpf_get_socket_cookie() as returning 32 bits; the kernel gives 64. */
static __u64 (*sock_cookie)(void *ctx) = (void *)BPF_FUNC_get_socket_cookie;

static __always_inline struct node_config *sock_own_node(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct node_config *cfg = config.lookup(&zero);

	if (!cfg || !cfg->netns_cookie || bpf_get_netns_cookie(ctx) != cfg->netns_cookie)
		return NULL;
	return cfg;
}

/* Point the socket's destination at a backend of the frontend it names, if it names
 * one; remember the frontend for what comes back. A frontend without backends refuses
 * the call with ECONNREFUSED, as the datapath's ICMP answer does for pods. */
static __always_inline int sock_to_backend(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct node_config *cfg = sock_own_node(ctx);
	struct lb_key k = {};
	struct lb_sock_key sk = {};
	struct lb_sock_value sv = {};
	struct lb_backend *be;
	struct lb_value *svc;
	__u32 backend_id = 0;

	if (!cfg || !lb_proto(proto))
		return SOCK_ALLOW;
	k.address = ctx->user_ip4;
	k.port = (__u16)ctx->user_port;
	k.proto = proto;
	k.scope = LB_SCOPE_INTERNAL;
	svc = lb_services.lookup(&k);
	if (!svc)
		return SOCK_ALLOW;
	if (!svc->count ||
	    lb_select(&k, svc, cfg->node_ip, bpf_ktime_get_ns(), &backend_id) < 0 ||
	    !(be = lb_backends.lookup(&backend_id))) {
		bpf_set_retval(-ECONNREFUSED);
		return SOCK_REFUSE;
	}
	sk.cookie = sock_cookie(ctx);
	sk.address = be->address;
	sk.port = be->port;
	sv.address = k.address;
	sv.port = k.port;
	lb_sock_revnat.update(&sk, &sv);
	ctx->user_ip4 = be->address;
	ctx->user_port = be->port;
	return SOCK_ALLOW;
}

/* A peer that is a backend this socket was sent to reads as the frontend. */
static __always_inline int sock_from_backend(struct bpf_sock_addr *ctx)
{
	struct lb_sock_key sk = {};
	struct lb_sock_value *sv;

	if (!sock_own_node(ctx))
		return SOCK_ALLOW;
	sk.cookie = sock_cookie(ctx);
	sk.address = ctx->user_ip4;
	sk.port = (__u16)ctx->user_port;
	sv = lb_sock_revnat.lookup(&sk);
	if (sv) {
		ctx->user_ip4 = sv->address;
		ctx->user_port = sv->port;
	}
	return SOCK_ALLOW;
}

int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_to_backend(ctx, ctx->protocol);
}

int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_to_backend(ctx, IPPROTO_UDP);
}

int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_from_backend(ctx);
}

int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock_from_backend(ctx);
}
