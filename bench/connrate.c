/* connrate: new TCP connections per second, with no interpreter in the way. The
 * benchmarks compile it with gcc when they run (bench/traffic.py) and start each side
 * in its own network namespace.
 *
 *   connrate serve ADDR PORT
 *       Accept and close every connection until SIGINT or SIGTERM, then print
 *       "accepted N".
 *   connrate connect ADDR PORT SECONDS PARALLEL
 *       Keep PARALLEL non-blocking connects in flight for SECONDS, then print
 *       "completed N failed M seconds S".
 *
 * One connection, as counted: the client's SYN, the server's SYN-ACK and the client's
 * ACK (connect() completing with SO_ERROR 0 means the SYN-ACK arrived and the ACK was
 * sent), then the client closes with SO_LINGER 0, an RST, so no TIME_WAIT builds up and
 * the source ports cycle; the server accepts it and closes its side. A connect that
 * fails (refused, timed out, no port free) counts as failed. Single-threaded on epoll,
 * so one process and one core stand for each side. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EVENTS 256

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

static int serve(const struct sockaddr_in *sa)
{
	struct epoll_event ev = { .events = EPOLLIN }, events[EVENTS];
	struct sigaction act = { .sa_handler = on_signal };
	unsigned long long accepted = 0;
	int one = 1, lfd, ep, fd;

	sigaction(SIGINT, &act, NULL);
	sigaction(SIGTERM, &act, NULL);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 || listen(lfd, 65535) < 0) {
		perror("connrate: listen");
		return 1;
	}
	ep = epoll_create1(0);
	ev.data.fd = lfd;
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) {
		perror("connrate: epoll");
		return 1;
	}
	/* Ready to accept: the caller waits for this line before it starts the client. */
	printf("listening\n");
	fflush(stdout);
	while (!stopping) {
		if (epoll_wait(ep, events, EVENTS, 100) < 0 && errno != EINTR) {
			perror("connrate: epoll_wait");
			return 1;
		}
		while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
			close(fd);
			accepted++;
		}
	}
	printf("accepted %llu\n", accepted);
	return 0;
}

/* Start one connect; 0 when it is in flight (or already done: counted), -1 on a failure
 * counted in *failed. */
static int start(int ep, const struct sockaddr_in *sa, unsigned long long *done,
		 unsigned long long *failed)
{
	struct linger abort_close = { .l_onoff = 1, .l_linger = 0 };
	struct epoll_event ev = { .events = EPOLLOUT };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	if (fd < 0) {
		perror("connrate: socket");
		exit(1);
	}
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
		(*done)++;
		close(fd);
		return 0;
	}
	if (errno != EINPROGRESS) {
		(*failed)++;
		close(fd);
		return -1;
	}
	ev.data.fd = fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		perror("connrate: epoll_ctl");
		exit(1);
	}
	return 0;
}

static int connect_loop(const struct sockaddr_in *sa, double seconds, int parallel)
{
	struct epoll_event events[EVENTS];
	unsigned long long done = 0, failed = 0;
	double started, deadline;
	int ep, i, n, err;
	socklen_t len;

	ep = epoll_create1(0);
	if (ep < 0) {
		perror("connrate: epoll");
		return 1;
	}
	started = now_s();
	deadline = started + seconds;
	for (i = 0; i < parallel; i++)
		while (start(ep, sa, &done, &failed) < 0 && now_s() < deadline)
			;
	while (now_s() < deadline) {
		n = epoll_wait(ep, events, EVENTS, 10);
		for (i = 0; i < n; i++) {
			err = 0;
			len = sizeof(err);
			getsockopt(events[i].data.fd, SOL_SOCKET, SO_ERROR, &err, &len);
			if (err)
				failed++;
			else
				done++;
			close(events[i].data.fd); /* SO_LINGER 0: an RST, no TIME_WAIT */
			/* A failed start leaves a slot empty; the next completion refills it. */
			while (start(ep, sa, &done, &failed) < 0 && now_s() < deadline)
				;
		}
	}
	printf("completed %llu failed %llu seconds %.6f\n", done, failed, now_s() - started);
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa;

	if (argc == 4 && !strcmp(argv[1], "serve"))
		return address(argv[2], argv[3], &sa) ? 2 : serve(&sa);
	if (argc == 6 && !strcmp(argv[1], "connect") && atof(argv[4]) > 0 && atoi(argv[5]) > 0)
		return address(argv[2], argv[3], &sa) ? 2 :
		       connect_loop(&sa, atof(argv[4]), atoi(argv[5]));
	fprintf(stderr, "usage: connrate serve ADDR PORT\n"
			"       connrate connect ADDR PORT SECONDS PARALLEL\n");
	return 2;
}
