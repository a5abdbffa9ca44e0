/* The node's own processes reaching Services (kubelet probes, hostNetwork pods):
 * cgroup sock_addr programs that translate at the socket, as Cilium's bpf_sock.c does,
 * so no packet of theirs needs translating. connect4/connect6 (TCP, connected UDP) and
 * sendmsg4/sendmsg6 (unconnected UDP) choose the backend; recvmsg4/recvmsg6 and
 * getpeername4/getpeername6 give the frontend back as the peer. An IPv6 socket's
 * IPv4-mapped address (::ffff:a.b.c.d) is an IPv4 one and goes through IPv4's maps (its
 * unconnected sends already reach sendmsg4: the kernel sends them as IPv4). Every lab
 * node's processes share one cgroup tree, so a program acts only for sockets of its own
 * node's network namespace (node_config.netns_cookie). */
#include "lib/lb.h"
#include "lib/lb6.h"

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

/* A frontend without backends refuses the call with ECONNREFUSED, as the datapath's
 * ICMP answer does for pods. */
static __always_inline int sock_refuse(void)
{
	bpf_set_retval(-ECONNREFUSED);
	return SOCK_REFUSE;
}

/* The backend of the IPv4 frontend *address:*port names, written over them, with the
 * frontend remembered for what comes back: SOCK_ALLOW (also when it names none) or
 * SOCK_REFUSE. */
static __always_inline int sock4_to_backend(struct bpf_sock_addr *ctx,
					    const struct node_config *cfg, __u8 proto,
					    __u32 *address, __u16 *port)
{
	struct lb_key k = { .address = *address, .port = *port, .proto = proto,
			    .scope = LB_SCOPE_INTERNAL };
	struct lb_sock_key sk = {};
	struct lb_sock_value sv = {};
	struct lb_backend *be;
	struct lb_value *svc;
	__u32 backend_id = 0;

	if (!lb_proto(proto))
		return SOCK_ALLOW;
	svc = lb_services.lookup(&k);
	if (!svc)
		return SOCK_ALLOW;
	if (!svc->count ||
	    lb_select(&k, svc, cfg->node_ip, bpf_ktime_get_ns(), &backend_id) < 0 ||
	    !(be = lb_backends.lookup(&backend_id)))
		return sock_refuse();
	sk.cookie = sock_cookie(ctx);
	sk.address = be->address;
	sk.port = be->port;
	sv.address = k.address;
	sv.port = k.port;
	lb_sock_revnat.update(&sk, &sv);
	*address = be->address;
	*port = be->port;
	return SOCK_ALLOW;
}

/* A peer *address:*port that is a backend this socket was sent to reads as the
 * frontend. */
static __always_inline void sock4_from_backend(struct bpf_sock_addr *ctx, __u32 *address,
					       __u16 *port)
{
	struct lb_sock_key sk = { .cookie = sock_cookie(ctx), .address = *address,
				  .port = *port };
	struct lb_sock_value *sv = lb_sock_revnat.lookup(&sk);

	if (sv) {
		*address = sv->address;
		*port = sv->port;
	}
}

static __always_inline int sock4_translate_call(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct node_config *cfg = sock_own_node(ctx);
	__u32 address = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;

	if (!cfg)
		return SOCK_ALLOW;
	if (sock4_to_backend(ctx, cfg, proto, &address, &port) == SOCK_REFUSE)
		return SOCK_REFUSE;
	ctx->user_ip4 = address;
	ctx->user_port = port;
	return SOCK_ALLOW;
}

static __always_inline int sock4_peer_as_frontend(struct bpf_sock_addr *ctx)
{
	__u32 address = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;

	if (!sock_own_node(ctx))
		return SOCK_ALLOW;
	sock4_from_backend(ctx, &address, &port);
	ctx->user_ip4 = address;
	ctx->user_port = port;
	return SOCK_ALLOW;
}

/* The IPv6 address the socket call names (user_ip6 is read and written a word at a
 * time). */
static __always_inline void sock6_address(const struct bpf_sock_addr *ctx, struct ip6_addr *a)
{
	a->w[0] = ctx->user_ip6[0];
	a->w[1] = ctx->user_ip6[1];
	a->w[2] = ctx->user_ip6[2];
	a->w[3] = ctx->user_ip6[3];
}

static __always_inline void sock6_set_address(struct bpf_sock_addr *ctx,
					      const struct ip6_addr *a)
{
	ctx->user_ip6[0] = a->w[0];
	ctx->user_ip6[1] = a->w[1];
	ctx->user_ip6[2] = a->w[2];
	ctx->user_ip6[3] = a->w[3];
}

/* ::ffff:a.b.c.d, an IPv4 address on an IPv6 socket (RFC 4291 2.5.5.2): its third word
 * (host order), after two zero words. */
#define SOCK6_V4_MAPPED_WORD 0xffff

static __always_inline bool sock6_v4_mapped(const struct ip6_addr *a)
{
	return !a->w[0] && !a->w[1] && a->w[2] == bpf_htonl(SOCK6_V4_MAPPED_WORD);
}

/* The node's IPv6 identity for ClientIP affinity: its IPv4 address, mapped (the node may
 * have no IPv6 address of its own, and no pod has a mapped one). */
static __always_inline void sock6_node_client(const struct node_config *cfg,
					      struct ip6_addr *client)
{
	client->w[0] = 0;
	client->w[1] = 0;
	client->w[2] = bpf_htonl(SOCK6_V4_MAPPED_WORD);
	client->w[3] = cfg->node_ip;
}

/* As sock4_to_backend, for an IPv6 frontend (lb6_select: the datapath's own choice). */
static __always_inline int sock6_to_backend(struct bpf_sock_addr *ctx,
					    const struct node_config *cfg, __u8 proto,
					    struct ip6_addr *address, __u16 *port)
{
	struct lb6_key k = { .address = *address, .port = *port, .proto = proto,
			     .scope = LB_SCOPE_INTERNAL };
	struct lb6_sock_key sk = {};
	struct lb6_sock_value sv = {};
	struct lb6_backend *be;
	struct ip6_addr client;
	struct lb_value *svc;
	__u32 backend_id = 0;

	if (!lb6_proto(proto))
		return SOCK_ALLOW;
	svc = lb6_services.lookup(&k);
	if (!svc)
		return SOCK_ALLOW;
	sock6_node_client(cfg, &client);
	if (!svc->count ||
	    lb6_select(&k, svc, &client, bpf_ktime_get_ns(), &backend_id) < 0 ||
	    !(be = lb6_backends.lookup(&backend_id)))
		return sock_refuse();
	sk.cookie = sock_cookie(ctx);
	sk.address = be->address;
	sk.port = be->port;
	sv.address = k.address;
	sv.port = k.port;
	lb6_sock_revnat.update(&sk, &sv);
	*address = be->address;
	*port = be->port;
	return SOCK_ALLOW;
}

static __always_inline void sock6_from_backend(struct bpf_sock_addr *ctx,
					       struct ip6_addr *address, __u16 *port)
{
	struct lb6_sock_key sk = { .cookie = sock_cookie(ctx), .address = *address,
				   .port = *port };
	struct lb6_sock_value *sv = lb6_sock_revnat.lookup(&sk);

	if (sv) {
		*address = sv->address;
		*port = sv->port;
	}
}

static __always_inline int sock6_translate_call(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct node_config *cfg = sock_own_node(ctx);
	struct ip6_addr address;
	__u16 port = (__u16)ctx->user_port;
	int ret;

	if (!cfg)
		return SOCK_ALLOW;
	sock6_address(ctx, &address);
	if (sock6_v4_mapped(&address))
		ret = sock4_to_backend(ctx, cfg, proto, &address.w[3], &port);
	else
		ret = sock6_to_backend(ctx, cfg, proto, &address, &port);
	if (ret == SOCK_REFUSE)
		return SOCK_REFUSE;
	sock6_set_address(ctx, &address);
	ctx->user_port = port;
	return SOCK_ALLOW;
}

static __always_inline int sock6_peer_as_frontend(struct bpf_sock_addr *ctx)
{
	struct ip6_addr address;
	__u16 port = (__u16)ctx->user_port;

	if (!sock_own_node(ctx))
		return SOCK_ALLOW;
	sock6_address(ctx, &address);
	if (sock6_v4_mapped(&address))
		sock4_from_backend(ctx, &address.w[3], &port);
	else
		sock6_from_backend(ctx, &address, &port);
	sock6_set_address(ctx, &address);
	ctx->user_port = port;
	return SOCK_ALLOW;
}

int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_translate_call(ctx, ctx->protocol);
}

int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_translate_call(ctx, IPPROTO_UDP);
}

int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_peer_as_frontend(ctx);
}

int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_peer_as_frontend(ctx);
}

int sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock6_translate_call(ctx, ctx->protocol);
}

int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_translate_call(ctx, IPPROTO_UDP);
}

int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_peer_as_frontend(ctx);
}

int sock_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock6_peer_as_frontend(ctx);
}
