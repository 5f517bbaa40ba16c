/*
 * tls-source.c - an smtp-source that can speak STARTTLS and implicit TLS.
 *
 *   tls-source [-s PARALLEL] [-m MESSAGES] [-l BODYBYTES] [-r RCPTS] [-d]
 *              [-T | -i] [-t TIMEOUT] [-b NADDR] [-H N] HOST:PORT
 *
 *   -s N   sessions in parallel (default 1; with -H: handshakes in flight, default 200)
 *   -m N   messages to send in all (default 1)
 *   -l N   body size in bytes, lines of 78 characters + CRLF (default 1024)
 *   -r N   recipients per message, RCPT TO:<1@bench.example> .. <N@...> (default 1)
 *   -d     keep sending messages over one session per parallel slot
 *          (without it: one message per session)
 *   -T     STARTTLS after EHLO, then EHLO again
 *   -i     implicit TLS: the handshake comes first
 *   -t S   seconds to wait for any one reply or handshake (default 60)
 *   -b N   bind client sockets to 127.0.0.2 .. 127.0.0.(N+1) in rotation
 *   -H N   hold mode: open N sessions, get each through the banner, EHLO (and
 *          TLS), print "held=N failed=F" once all are up, then hold them idle
 *          until SIGTERM/SIGINT or EOF on stdin; prints "dropped=D" at the end
 *
 * Load mode prints "messages=N failed=N seconds=X" (failed: sessions that
 * failed), after "tls=VERSION cipher=NAME" of the first TLS session, and exits 1 when any session failed; the first failures are
 * described on stderr.  The TLS client verifies nothing (a benchmark).
 *
 * One thread, epoll, every socket non-blocking; commands go in lock-step
 * (no PIPELINING), as smtp-source does.
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra tests/bench/tls-source.c \
 *      -o build/tls-source -lssl -lcrypto
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define RBUF_SIZE 8192
#define CMD_SIZE 640
#define MAX_FAIL_REPORTS 10

enum tls_mode { TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };

/* What a session is doing with its socket. */
enum io { IO_CONNECT, IO_HANDSHAKE, IO_WRITE, IO_READ, IO_HELD };

/* The reply a session waits for. */
enum want {
	W_BANNER, W_EHLO, W_STARTTLS, W_MAIL, W_RCPT, W_DATA, W_DOT, W_QUIT
};

static const char *const want_name[] = {
	"banner", "EHLO", "STARTTLS", "MAIL FROM", "RCPT TO", "DATA", "end of data", "QUIT",
};

struct sess {
	struct sess *prev, *next;        /* the list of live sessions */
	unsigned id;
	int fd;
	SSL *ssl;
	enum io io;
	enum want want;
	unsigned events;                 /* registered with epoll */
	unsigned need;                   /* wanted from epoll now */
	bool tls_done;
	bool in_setup;                   /* hold mode: counted in setup_active */
	int rcpt;                        /* recipients sent in this message */
	double deadline;
	const char *out;                 /* pending output: cmd or the shared body */
	size_t outlen, outoff;
	size_t rlen;
	char cmd[CMD_SIZE];
	char rbuf[RBUF_SIZE];
};

/* options */
static int opt_parallel = -1;
static long opt_messages = 1;
static long opt_bytes = 1024;
static int opt_rcpts = 1;
static bool opt_d;
static enum tls_mode opt_tls = TLS_NONE;
static double opt_timeout = 60.0;
static int opt_bind = 0;
static long opt_hold = 0;

static struct sockaddr_storage dst;
static socklen_t dstlen;
static SSL_CTX *ctx;
static int ep;
static char *body;                   /* headers, body, ".\r\n" */
static size_t bodylen;

/* counters */
static struct sess *live;
static unsigned next_id;
static long claimed;                 /* messages handed to sessions */
static long delivered;               /* messages the server accepted (250 after the dot) */
static long sessions_failed;
static long sessions_active;
static long sessions_opened;
static long setup_active;            /* hold mode: sessions not yet held */
static long held, dropped;
static int fail_reports;
static volatile sig_atomic_t stop_requested;
static char tls_desc[128];           /* protocol and cipher of the first TLS session */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("tls-source: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void usage(void)
{
	fprintf(stderr,
	    "usage: tls-source [-s PARALLEL] [-m MESSAGES] [-l BODYBYTES] [-r RCPTS] [-d]\n"
	    "                  [-T | -i] [-t TIMEOUT] [-b NADDR] [-H N] HOST:PORT\n");
	exit(2);
}

static long num_arg(const char *s, long min, long max, char opt)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < min || v > max)
		die("-%c: bad number '%s' (%ld..%ld)", opt, s, min, max);
	return v;
}

/* ------------------------------------------------------------------ setup */

static void parse_target(const char *arg)
{
	char host[256];
	const char *colon = strrchr(arg, ':');
	const char *port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	size_t hl;
	int rc;

	if (colon == NULL)
		die("target must be HOST:PORT, not '%s'", arg);
	hl = (size_t)(colon - arg);
	port = colon + 1;
	if (hl >= 2 && arg[0] == '[' && arg[hl - 1] == ']') {
		arg++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof host)
		die("bad host in '%s'", arg);
	memcpy(host, arg, hl);
	host[hl] = '\0';
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
		die("%s: %s", arg, gai_strerror(rc));
	memcpy(&dst, res->ai_addr, res->ai_addrlen);
	dstlen = res->ai_addrlen;
	freeaddrinfo(res);
	if (opt_bind && dst.ss_family != AF_INET)
		die("-b needs an IPv4 target");
}

/* Headers, then opt_bytes of body in lines of 78 characters + CRLF, then the dot. */
static void build_body(void)
{
	static const char hdr[] =
	    "From: <bench@example.com>\r\n"
	    "To: <1@bench.example>\r\n"
	    "Subject: tls-source benchmark message\r\n"
	    "\r\n";
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	size_t cap = sizeof hdr + (size_t)opt_bytes + 16;
	size_t n = 0, rem = (size_t)opt_bytes, k = 0;

	if ((body = malloc(cap)) == NULL)
		die("out of memory");
	memcpy(body, hdr, sizeof hdr - 1);
	n = sizeof hdr - 1;
	if (rem == 1)
		rem = 2;
	while (rem >= 2) {
		size_t line = rem - 2 < 78 ? rem - 2 : 78;

		if (rem - (line + 2) == 1)   /* never leave one byte over */
			line--;
		for (size_t i = 0; i < line; i++)
			body[n++] = alphabet[k++ % (sizeof alphabet - 1)];
		body[n++] = '\r';
		body[n++] = '\n';
		rem -= line + 2;
	}
	memcpy(body + n, ".\r\n", 3);
	bodylen = n + 3;
}

static void tls_init(void)
{
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		die("SSL_CTX_new failed");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_read_ahead(ctx, 1);   /* whole records per read(), not 5-byte headers */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);   /* a full handshake each time */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	    (opt_hold ? SSL_MODE_RELEASE_BUFFERS : 0));
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* ------------------------------------------------------------------ sessions */

static void ep_update(struct sess *s)
{
	struct epoll_event ev = { .events = s->need, .data.ptr = s };

	if (s->need == s->events)
		return;
	if (epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev) == -1)
		die("epoll_ctl: %s", strerror(errno));
	s->events = s->need;
}

static void sess_free(struct sess *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		live = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (s->ssl)
		SSL_free(s->ssl);
	close(s->fd);   /* also leaves the epoll set */
	if (s->in_setup)
		setup_active--;
	sessions_active--;
	free(s);
}

static void ssl_errors(char *buf, size_t sz)
{
	unsigned long e;
	size_t n = 0;

	buf[0] = '\0';
	while ((e = ERR_get_error()) != 0 && n + 2 < sz) {
		if (n)
			buf[n++] = ';', buf[n++] = ' ';
		ERR_error_string_n(e, buf + n, sz - n);
		n += strlen(buf + n);
	}
}

static void sess_fail(struct sess *s, const char *fmt, ...)
{
	if (fail_reports < MAX_FAIL_REPORTS) {
		va_list ap;

		fprintf(stderr, "tls-source: session %u: ", s->id);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	} else if (fail_reports == MAX_FAIL_REPORTS) {
		fprintf(stderr, "tls-source: (further session failures not described)\n");
	}
	fail_reports++;
	sessions_failed++;
	sess_free(s);
}

static void sess_send(struct sess *s, enum want w, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(s->cmd, sizeof s->cmd, fmt, ap);
	va_end(ap);
	s->out = s->cmd;
	s->outlen = (size_t)n;
	s->outoff = 0;
	s->want = w;
	s->io = IO_WRITE;
}

static void send_ehlo(struct sess *s)
{
	sess_send(s, W_EHLO, "EHLO tls-source.bench.example\r\n");
}

static void start_message(struct sess *s)
{
	s->rcpt = 0;
	sess_send(s, W_MAIL, "MAIL FROM:<bench@example.com>\r\n");
}

static bool start_tls(struct sess *s)
{
	if ((s->ssl = SSL_new(ctx)) == NULL || SSL_set_fd(s->ssl, s->fd) != 1) {
		char e[256];

		ssl_errors(e, sizeof e);
		sess_fail(s, "SSL_new: %s", e);
		return false;
	}
	SSL_set_connect_state(s->ssl);
	s->io = IO_HANDSHAKE;
	return true;
}

/*
 * A complete reply (possibly multi-line) is in rbuf[0..len).  Returns false
 * when the session is gone.
 */
static bool on_reply(struct sess *s, const char *reply, size_t len)
{
	char expect = s->want == W_DATA ? '3' : '2';

	if (reply[0] != expect) {
		/* the last line is the interesting one; trim CRLF */
		const char *last = reply, *p;
		int n;

		for (p = reply; p + 1 < reply + len; p++)
			if (*p == '\n')
				last = p + 1;
		n = (int)(reply + len - last);
		while (n > 0 && (last[n - 1] == '\r' || last[n - 1] == '\n'))
			n--;
		sess_fail(s, "%s: unexpected reply '%.*s'", want_name[s->want], n > 200 ? 200 : n, last);
		return false;
	}
	switch (s->want) {
	case W_BANNER:
		send_ehlo(s);
		break;
	case W_EHLO:
		if (opt_tls == TLS_STARTTLS && s->ssl == NULL) {
			sess_send(s, W_STARTTLS, "STARTTLS\r\n");
		} else if (opt_hold) {
			s->io = IO_HELD;
			s->in_setup = false;
			setup_active--;
			held++;
		} else {
			start_message(s);
		}
		break;
	case W_STARTTLS:
		if (s->rlen != 0) {
			sess_fail(s, "STARTTLS: %zu bytes after the 220 reply, before the handshake", s->rlen);
			return false;
		}
		return start_tls(s);
	case W_MAIL:
	case W_RCPT:
		if (s->rcpt < opt_rcpts) {
			s->rcpt++;
			sess_send(s, W_RCPT, "RCPT TO:<%d@bench.example>\r\n", s->rcpt);
		} else {
			sess_send(s, W_DATA, "DATA\r\n");
		}
		break;
	case W_DATA:
		s->out = body;
		s->outlen = bodylen;
		s->outoff = 0;
		s->want = W_DOT;
		s->io = IO_WRITE;
		break;
	case W_DOT:
		delivered++;
		if (opt_d && claimed < opt_messages) {
			claimed++;
			start_message(s);
		} else {
			sess_send(s, W_QUIT, "QUIT\r\n");
		}
		break;
	case W_QUIT:
		sess_free(s);
		return false;
	}
	return true;
}

/* Returns >0 bytes read, 0 would block (s->need set), -1 gone (failed). */
static ssize_t sess_read(struct sess *s)
{
	size_t room = sizeof s->rbuf - s->rlen;
	ssize_t n;

	if (room == 0) {
		sess_fail(s, "%s: reply longer than %zu bytes", want_name[s->want], sizeof s->rbuf);
		return -1;
	}
	if (s->ssl) {
		int r = SSL_read(s->ssl, s->rbuf + s->rlen, (int)room);

		if (r > 0)
			return r;
		switch (SSL_get_error(s->ssl, r)) {
		case SSL_ERROR_WANT_READ:
			s->need = EPOLLIN;
			return 0;
		case SSL_ERROR_WANT_WRITE:
			s->need = EPOLLOUT;
			return 0;
		case SSL_ERROR_ZERO_RETURN:
			sess_fail(s, "%s: TLS closed by the server (close_notify)", want_name[s->want]);
			return -1;
		default: {
			char e[256];
			int saved = errno;

			ssl_errors(e, sizeof e);
			sess_fail(s, "%s: TLS read failed: %s", want_name[s->want],
			    e[0] ? e : saved ? strerror(saved) : "connection closed by the server");
			return -1;
		}
		}
	}
	n = read(s->fd, s->rbuf + s->rlen, room);
	if (n > 0)
		return n;
	if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
		s->need = EPOLLIN;
		return 0;
	}
	sess_fail(s, "%s: %s", want_name[s->want],
	    n == 0 ? "connection closed by the server" : strerror(errno));
	return -1;
}

/* Returns 1 all written, 0 would block, -1 gone. */
static int sess_write(struct sess *s)
{
	while (s->outoff < s->outlen) {
		size_t left = s->outlen - s->outoff;

		if (s->ssl) {
			int r = SSL_write(s->ssl, s->out + s->outoff, left > INT32_MAX ? INT32_MAX : (int)left);

			if (r > 0) {
				s->outoff += (size_t)r;
				continue;
			}
			switch (SSL_get_error(s->ssl, r)) {
			case SSL_ERROR_WANT_READ:
				s->need = EPOLLIN;
				return 0;
			case SSL_ERROR_WANT_WRITE:
				s->need = EPOLLOUT;
				return 0;
			default: {
				char e[256];
				int saved = errno;

				ssl_errors(e, sizeof e);
				sess_fail(s, "sending for %s: TLS write failed: %s", want_name[s->want],
				    e[0] ? e : saved ? strerror(saved) : "connection closed");
				return -1;
			}
			}
		} else {
			ssize_t n = write(s->fd, s->out + s->outoff, left);

			if (n > 0) {
				s->outoff += (size_t)n;
				continue;
			}
			if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
				s->need = EPOLLOUT;
				return 0;
			}
			sess_fail(s, "sending for %s: %s", want_name[s->want], strerror(errno));
			return -1;
		}
	}
	return 1;
}

/* Looks for one complete reply in rbuf; returns its length or 0. */
static size_t reply_complete(const struct sess *s)
{
	size_t start = 0;

	for (size_t i = 0; i < s->rlen; i++) {
		if (s->rbuf[i] != '\n')
			continue;
		/* line [start, i]: final unless its 4th byte is '-' */
		if (i - start < 4 || s->rbuf[start + 3] != '-')
			return i + 1;
		start = i + 1;
	}
	return 0;
}

/* Advance a session as far as it goes without blocking. */
static void sess_drive(struct sess *s, unsigned events)
{
	for (;;) {
		switch (s->io) {
		case IO_CONNECT: {
			int err = 0;
			socklen_t el = sizeof err;

			if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
				s->need = EPOLLOUT;
				goto wait;
			}
			if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) == -1)
				err = errno;
			if (err) {
				sess_fail(s, "connect: %s", strerror(err));
				return;
			}
			s->deadline = now() + opt_timeout;
			if (opt_tls == TLS_IMPLICIT) {
				if (!start_tls(s))
					return;
			} else {
				s->io = IO_READ;
				s->want = W_BANNER;
			}
			break;
		}
		case IO_HANDSHAKE: {
			int r = SSL_do_handshake(s->ssl);

			if (r == 1) {
				s->tls_done = true;
				if (tls_desc[0] == '\0')
					snprintf(tls_desc, sizeof tls_desc, "tls=%s cipher=%s",
					    SSL_get_version(s->ssl), SSL_get_cipher_name(s->ssl));
				s->deadline = now() + opt_timeout;
				if (opt_tls == TLS_IMPLICIT) {
					s->io = IO_READ;
					s->want = W_BANNER;
				} else {
					send_ehlo(s);
				}
				break;
			}
			switch (SSL_get_error(s->ssl, r)) {
			case SSL_ERROR_WANT_READ:
				s->need = EPOLLIN;
				goto wait;
			case SSL_ERROR_WANT_WRITE:
				s->need = EPOLLOUT;
				goto wait;
			default: {
				char e[256];
				int saved = errno;

				ssl_errors(e, sizeof e);
				sess_fail(s, "TLS handshake failed: %s",
				    e[0] ? e : saved ? strerror(saved) : "connection closed by the server");
				return;
			}
			}
			break;   /* not reached */
		}
		case IO_WRITE: {
			int r = sess_write(s);

			if (r < 0)
				return;
			if (r == 0)
				goto wait;
			s->io = IO_READ;
			s->deadline = now() + opt_timeout;
			break;
		}
		case IO_READ: {
			size_t n = reply_complete(s);
			ssize_t got;

			if (n) {
				char reply[RBUF_SIZE];

				memcpy(reply, s->rbuf, n);
				memmove(s->rbuf, s->rbuf + n, s->rlen - n);
				s->rlen -= n;
				if (!on_reply(s, reply, n))
					return;
				break;
			}
			got = sess_read(s);
			if (got < 0)
				return;
			if (got == 0)
				goto wait;
			s->rlen += (size_t)got;
			break;
		}
		case IO_HELD: {
			/* anything from the server now, EOF included, means the session ended */
			char b[512];
			int r = s->ssl ? SSL_read(s->ssl, b, sizeof b) : (int)read(s->fd, b, sizeof b);

			if (r < 0 && (s->ssl ? SSL_get_error(s->ssl, r) == SSL_ERROR_WANT_READ
			    : (errno == EAGAIN || errno == EINTR))) {
				s->need = EPOLLIN;
				goto wait;
			}
			/* TLS 1.3 session tickets may arrive late: those come back as WANT_READ */
			dropped++;
			held--;
			if (fail_reports < MAX_FAIL_REPORTS) {
				int shown = 0;

				while (r > 0 && shown < r && b[shown] != '\r' && b[shown] != '\n')
					shown++;
				fprintf(stderr, "tls-source: session %u: %s while held%s%.*s\n", s->id,
				    r > 0 ? "the server spoke" : "closed by the server", r > 0 ? ": " : "", shown, b);
			}
			fail_reports++;
			sess_free(s);
			return;
		}
		}
		events = 0;
	}
wait:
	ep_update(s);
}

static void sess_open(void)
{
	struct sess *s = calloc(1, sizeof *s);
	struct epoll_event ev;
	int one = 1;

	if (s == NULL)
		die("out of memory");
	s->id = ++next_id;
	s->fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd == -1)
		die("socket: %s", strerror(errno));   /* out of descriptors: a setup problem */
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	s->next = live;
	if (live)
		live->prev = s;
	live = s;
	sessions_active++;
	sessions_opened++;
	if (opt_hold) {
		s->in_setup = true;
		setup_active++;
	}
	s->io = IO_CONNECT;
	s->deadline = now() + opt_timeout;
	s->need = s->events = EPOLLOUT;
	ev.events = EPOLLOUT;
	ev.data.ptr = s;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) == -1)
		die("epoll_ctl: %s", strerror(errno));
	if (opt_bind) {
		struct sockaddr_in src = { .sin_family = AF_INET };

		src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)((s->id - 1) % (unsigned)opt_bind));
		setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(s->fd, (struct sockaddr *)&src, sizeof src) == -1) {
			sess_fail(s, "bind: %s", strerror(errno));
			return;
		}
	}
	if (connect(s->fd, (struct sockaddr *)&dst, dstlen) == -1 && errno != EINPROGRESS) {
		sess_fail(s, "connect: %s", strerror(errno));
		return;
	}
}

/* Open sessions while there is work and room. */
static void top_up(void)
{
	if (opt_hold) {
		while (sessions_opened < opt_hold && setup_active < opt_parallel)
			sess_open();
		return;
	}
	if (opt_d) {
		/* one session per slot, opened once; a failed slot is not replaced */
		while (sessions_opened < opt_parallel && claimed < opt_messages) {
			claimed++;
			sess_open();
		}
		return;
	}
	while (sessions_active < opt_parallel && claimed < opt_messages) {
		claimed++;
		sess_open();
	}
}

static void check_timeouts(void)
{
	double t = now();
	struct sess *s = live, *nx;

	for (; s; s = nx) {
		nx = s->next;
		if (s->io == IO_HELD || t < s->deadline)
			continue;
		if (s->io == IO_CONNECT)
			sess_fail(s, "connect: no answer within %.0fs", opt_timeout);
		else if (s->io == IO_HANDSHAKE)
			sess_fail(s, "TLS handshake: no progress within %.0fs", opt_timeout);
		else if (s->io == IO_WRITE)
			sess_fail(s, "sending for %s: stalled for %.0fs (%zu of %zu bytes sent)",
			    want_name[s->want], opt_timeout, s->outoff, s->outlen);
		else
			sess_fail(s, "%s: no reply within %.0fs", want_name[s->want], opt_timeout);
	}
}

static void loop_once(int timeout_ms)
{
	struct epoll_event evs[256];
	int n = epoll_wait(ep, evs, 256, timeout_ms);

	if (n == -1) {
		if (errno == EINTR)
			return;
		die("epoll_wait: %s", strerror(errno));
	}
	for (int i = 0; i < n; i++) {
		if (evs[i].data.ptr == NULL) {   /* stdin */
			char b[256];

			if (read(0, b, sizeof b) <= 0)
				stop_requested = 1;
			continue;
		}
		sess_drive(evs[i].data.ptr, evs[i].events);
	}
}

int main(int argc, char **argv)
{
	double t0, t1, last_check;
	int c;

	while ((c = getopt(argc, argv, "s:m:l:r:dTit:b:H:")) != -1) {
		switch (c) {
		case 's': opt_parallel = (int)num_arg(optarg, 1, 100000, c); break;
		case 'm': opt_messages = num_arg(optarg, 1, 1000000000L, c); break;
		case 'l': opt_bytes = num_arg(optarg, 0, 1L << 30, c); break;
		case 'r': opt_rcpts = (int)num_arg(optarg, 1, 100000, c); break;
		case 'd': opt_d = true; break;
		case 'T': opt_tls = TLS_STARTTLS; break;
		case 'i': opt_tls = TLS_IMPLICIT; break;
		case 't': opt_timeout = (double)num_arg(optarg, 1, 86400, c); break;
		case 'b': opt_bind = (int)num_arg(optarg, 1, 250, c); break;
		case 'H': opt_hold = num_arg(optarg, 1, 1000000, c); break;
		default: usage();
		}
	}
	if (optind != argc - 1)
		usage();
	if (opt_parallel < 0)
		opt_parallel = opt_hold ? 200 : 1;
	parse_target(argv[optind]);
	signal(SIGPIPE, SIG_IGN);
	{
		struct sigaction sa = { .sa_handler = on_signal };

		sigemptyset(&sa.sa_mask);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
	}
	raise_nofile();
	build_body();
	if (opt_tls != TLS_NONE)
		tls_init();
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) == -1)
		die("epoll_create1: %s", strerror(errno));

	t0 = last_check = now();
	if (opt_hold) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
		bool reported = false;

		/* stdin EOF ends the hold; /dev/null or a file cannot be watched, then only signals do */
		epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
		while (!stop_requested) {
			top_up();
			if (!reported && sessions_opened == opt_hold && setup_active == 0) {
				printf("held=%ld failed=%ld seconds=%.3f\n", held, sessions_failed, now() - t0);
				fflush(stdout);
				reported = true;
			}
			loop_once(200);
			if (now() - last_check >= 1.0) {
				check_timeouts();
				last_check = now();
			}
		}
		if (tls_desc[0])
			printf("%s\n", tls_desc);
		printf("dropped=%ld held=%ld failed=%ld\n", dropped, held, sessions_failed);
		return sessions_failed || dropped || !reported ? 1 : 0;
	}

	for (;;) {
		top_up();
		if (sessions_active == 0)
			break;
		if (stop_requested) {
			fprintf(stderr, "tls-source: interrupted with %ld sessions open\n", sessions_active);
			break;
		}
		loop_once(200);
		if (now() - last_check >= 1.0) {
			check_timeouts();
			last_check = now();
		}
	}
	t1 = now();
	if (tls_desc[0])
		printf("%s\n", tls_desc);
	printf("messages=%ld failed=%ld seconds=%.3f\n", delivered, sessions_failed, t1 - t0);
	if (sessions_failed || delivered != opt_messages) {
		if (!sessions_failed)
			fprintf(stderr, "tls-source: %ld of %ld messages delivered\n", delivered, opt_messages);
		return 1;
	}
	return 0;
}
