/* connrate: new TCP connections per second, with no interpreter in the way. The
 * benchmarks compile it with gcc when they run (bench/connrate.py) and start each side
 * in its own network namespace.
 *
 *   connrate serve ADDR PORT
 *       Accept and close every connection until SIGINT or SIGTERM, then print
 *       "accepted N".
 *   connrate connect ADDR PORT SECONDS PARALLEL [CLIENTS]
 *       CLIENTS processes (1 unless given), each pinned to its own CPU (the client's
 *       index modulo the CPUs it may use) and each keeping PARALLEL non-blocking
 *       connects in flight for SECONDS, then print their sums as
 *       "completed N failed M seconds S".
 *
 * One connection, as counted: the client's SYN, the server's SYN-ACK and the client's
 * ACK (connect() completing with SO_ERROR 0 means the SYN-ACK arrived and the ACK was
 * sent), then the client resets it: connect() to AF_UNSPEC on an established socket
 * sends an RST and frees its source port (tcp_disconnect), so no TIME_WAIT builds up,
 * the ports cycle and the socket is connected again at once to a new port: four packets
 * a connection and no socket made or freed for it. The server accepts in batches, a
 * millisecond apart, so no connection wakes it (a wake-up per connection, an IPI from
 * the core that runs the handshake, was a tenth of that core's time), and closes what it
 * accepted HOLD_NS later: by then the client's RST has arrived (a completed connect
 * waits its turn among PARALLEL, a few milliseconds at most), so the close sends
 * nothing; closed at once, a quarter of them sent a FIN and went to TIME_WAIT. A connect
 * that fails (refused, timed out, no port free) counts as failed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EVENTS 256
#define ACCEPT_BATCH_NS 1000000L
#define HOLD_NS 20000000LL
#define HELD_MAX 16384 /* accepted sockets held at once; the oldest goes first when full */
#define MAX_CLIENTS 64

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int address(const char *ip, const char *port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((unsigned short)atoi(port));
	if (inet_pton(AF_INET, ip, &sa->sin_addr) != 1) {
		fprintf(stderr, "connrate: %s is not an IPv4 address\n", ip);
		return -1;
	}
	return 0;
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Accepted sockets by age, closed HOLD_NS after their accept (a ring). */
struct held {
	int fd[HELD_MAX];
	long long since[HELD_MAX];
	unsigned int head, count;
};

static void release_older(struct held *h, long long before)
{
	while (h->count && (h->since[h->head] < before || h->count == HELD_MAX)) {
		close(h->fd[h->head]);
		h->head = (h->head + 1) % HELD_MAX;
		h->count--;
	}
}

static int serve(const struct sockaddr_in *sa)
{
	const struct timespec batch = { .tv_nsec = ACCEPT_BATCH_NS };
	struct sigaction act = { .sa_handler = on_signal };
	static struct held held;
	unsigned long long accepted = 0;
	struct rlimit files;
	int one = 1, lfd, fd;
	long long now;

	sigaction(SIGINT, &act, NULL);
	sigaction(SIGTERM, &act, NULL);
	/* Room for the held sockets (the soft limit is often 1024). */
	if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
		files.rlim_cur = files.rlim_max;
		setrlimit(RLIMIT_NOFILE, &files);
	}
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 || listen(lfd, 65535) < 0) {
		perror("connrate: listen");
		return 1;
	}
	/* Ready to accept: the caller waits for this line before it starts the client. */
	printf("listening\n");
	fflush(stdout);
	while (!stopping) {
		nanosleep(&batch, NULL);
		now = now_ns();
		release_older(&held, now - HOLD_NS);
		while ((fd = accept4(lfd, NULL, NULL, 0)) >= 0) {
			accepted++;
			release_older(&held, now - HOLD_NS); /* the oldest, when the ring is full */
			held.fd[(held.head + held.count) % HELD_MAX] = fd;
			held.since[(held.head + held.count) % HELD_MAX] = now;
			held.count++;
		}
		if (errno == EMFILE || errno == ENFILE) {
			/* Out of descriptors for the hold: close everything held. */
			release_older(&held, now + 1);
			continue;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED) {
			perror("connrate: accept");
			return 1;
		}
	}
	release_older(&held, now_ns() + 1);
	printf("accepted %llu\n", accepted);
	return 0;
}

/* Connect fd (a fresh socket, or one just disconnected) to sa: 1 when connected at once,
 * 0 when in flight, -1 on a failure. */
static int dial(int fd, const struct sockaddr_in *sa)
{
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
		return 1;
	return errno == EINPROGRESS ? 0 : -1;
}

static int fresh_socket(int ep)
{
	struct epoll_event ev = { .events = EPOLLOUT };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	ev.data.fd = fd;
	if (fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		perror("connrate: socket");
		exit(1);
	}
	return fd;
}

/* Reset fd's connection (RST) and leave it unconnected, its port freed. */
static void reset(int fd)
{
	const struct sockaddr unspec = { .sa_family = AF_UNSPEC };

	connect(fd, &unspec, sizeof(unspec));
}

/* Keep fd's slot busy: connect it again until a connect is in flight or the run is
 * over, counting each one done at once or failed (a failed socket is replaced). */
static int redial(int ep, int fd, const struct sockaddr_in *sa, double deadline,
		  unsigned long long *done, unsigned long long *failed)
{
	int ret;

	while (now_s() < deadline) {
		ret = dial(fd, sa);
		if (ret == 0)
			break;
		if (ret > 0) {
			(*done)++;
			reset(fd);
			continue;
		}
		(*failed)++;
		close(fd);
		fd = fresh_socket(ep);
	}
	return fd;
}

static void connect_loop(const struct sockaddr_in *sa, double seconds, int parallel,
			 unsigned long long *counts)
{
	struct epoll_event events[EVENTS];
	unsigned long long done = 0, failed = 0;
	double deadline = now_s() + seconds;
	int ep, i, n, fd, err;
	socklen_t len;

	ep = epoll_create1(0);
	if (ep < 0) {
		perror("connrate: epoll");
		exit(1);
	}
	for (i = 0; i < parallel; i++)
		redial(ep, fresh_socket(ep), sa, deadline, &done, &failed);
	while (now_s() < deadline) {
		n = epoll_wait(ep, events, EVENTS, 10);
		for (i = 0; i < n; i++) {
			fd = events[i].data.fd;
			err = 0;
			len = sizeof(err);
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
			if (err) {
				failed++;
				close(fd);
				fd = fresh_socket(ep);
			} else {
				done++;
				reset(fd);
			}
			redial(ep, fd, sa, deadline, &done, &failed);
		}
	}
	counts[0] = done;
	counts[1] = failed;
}

/* Run `clients` connect loops in processes of their own, each on its own CPU, and print
 * their sums. */
static int connect_clients(const struct sockaddr_in *sa, double seconds, int parallel,
			   int clients)
{
	unsigned long long *counts, done = 0, failed = 0;
	cpu_set_t allowed, one;
	double started;
	int i, cpu, status, nth;
	pid_t pid;

	counts = mmap(NULL, sizeof(*counts) * 2 * clients, PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (counts == MAP_FAILED || sched_getaffinity(0, sizeof(allowed), &allowed) < 0) {
		perror("connrate: clients");
		return 1;
	}
	started = now_s();
	for (i = 0; i < clients; i++) {
		pid = fork();
		if (pid < 0) {
			perror("connrate: fork");
			return 1;
		}
		if (pid)
			continue;
		/* The (i mod allowed CPUs)-th CPU this process may use. */
		for (cpu = 0, nth = i % CPU_COUNT(&allowed); cpu < CPU_SETSIZE; cpu++)
			if (CPU_ISSET(cpu, &allowed) && nth-- == 0)
				break;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		if (sched_setaffinity(0, sizeof(one), &one) < 0) {
			perror("connrate: pin");
			_exit(1);
		}
		connect_loop(sa, seconds, parallel, counts + 2 * i);
		_exit(0);
	}
	for (i = 0; i < clients; i++) {
		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
			return 1;
	}
	for (i = 0; i < clients; i++) {
		done += counts[2 * i];
		failed += counts[2 * i + 1];
	}
	printf("completed %llu failed %llu seconds %.6f\n", done, failed, now_s() - started);
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa;
	int clients = argc == 7 ? atoi(argv[6]) : 1;

	if (argc == 4 && !strcmp(argv[1], "serve"))
		return address(argv[2], argv[3], &sa) ? 2 : serve(&sa);
	if ((argc == 6 || argc == 7) && !strcmp(argv[1], "connect") && atof(argv[4]) > 0 &&
	    atoi(argv[5]) > 0 && clients > 0 && clients <= MAX_CLIENTS)
		return address(argv[2], argv[3], &sa) ? 2 :
		       connect_clients(&sa, atof(argv[4]), atoi(argv[5]), clients);
	fprintf(stderr, "usage: connrate serve ADDR PORT\n"
			"       connrate connect ADDR PORT SECONDS PARALLEL [CLIENTS]\n");
	return 2;
}
