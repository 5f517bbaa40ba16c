/*
 * metrics.c - labelled counters in a fixed table, and a tiny HTTP/1.0
 * responder for Prometheus.  Label values come from the config and from
 * fixed stage names, so the table stays small; it is bounded anyway.
 */
#include "metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "log.h"

struct series {
	enum metric m;
	uint64_t value;
	char labels[METRICS_LABELS_MAX];
};

static const struct {
	const char *name, *help;
} info[METRIC_COUNT] = {
	[METRIC_SESSIONS_TOTAL] = { "smtpgate_sessions_total", "Sessions accepted, by listener." },
	[METRIC_MESSAGES_TOTAL] = { "smtpgate_messages_total",
		"Messages by result: accepted/rejected by the MTA, refused by smtpgate." },
	[METRIC_REFUSALS_TOTAL] = { "smtpgate_refusals_total", "Commands smtpgate refused itself." },
	[METRIC_UPSTREAM_ERRORS_TOTAL] = { "smtpgate_upstream_errors_total",
		"Failures to connect to or talk with an upstream server." },
	[METRIC_CONFIG_RELOADS_TOTAL] = { "smtpgate_config_reloads_total", "SIGHUP reloads by result." },
	[METRIC_TLS_SESSIONS_TOTAL] = { "smtpgate_tls_sessions_total",
		"Client TLS handshakes completed, by protocol version." },
};

static struct series table[METRICS_SERIES_MAX];
static size_t nseries;

static size_t escape_value(char *out, size_t outsz, const char *v)
{
	size_t n = 0;

	for (; *v && n + 2 < outsz; v++) {
		if (*v == '"' || *v == '\\') {
			out[n++] = '\\';
			out[n++] = *v;
		} else if (*v == '\n') {
			out[n++] = '\\';
			out[n++] = 'n';
		} else {
			out[n++] = *v;
		}
	}
	out[n] = '\0';
	return n;
}

static void metrics_vadd(enum metric m, uint64_t delta, va_list ap)
{
	char labels[METRICS_LABELS_MAX];
	size_t n = 0;

	for (const char *k; (k = va_arg(ap, const char *));) {
		const char *v = va_arg(ap, const char *);
		char esc[METRICS_LABELS_MAX];
		escape_value(esc, sizeof esc, v ? v : "");
		int w = snprintf(labels + n, sizeof labels - n, "%s%s=\"%s\"", n ? "," : "", k, esc);
		if (w < 0 || (size_t)w >= sizeof labels - n)
			break;
		n += (size_t)w;
	}
	labels[n] = '\0';

	for (size_t i = 0; i < nseries; i++) {
		if (table[i].m == m && strcmp(table[i].labels, labels) == 0) {
			if (table[i].value <= UINT64_MAX - delta)
				table[i].value += delta;
			return;
		}
	}
	if (nseries == METRICS_SERIES_MAX)
		return;
	table[nseries].m = m;
	table[nseries].value = delta;
	memcpy(table[nseries].labels, labels, n + 1);
	nseries++;
}

void metrics_inc(enum metric m, ...)
{
	va_list ap;

	va_start(ap, m);
	metrics_vadd(m, 1, ap);
	va_end(ap);
}

void metrics_touch(enum metric m, ...)
{
	va_list ap;

	va_start(ap, m);
	metrics_vadd(m, 0, ap);
	va_end(ap);
}

size_t metrics_render(char *out, size_t outsz, unsigned sessions_active)
{
	size_t n = 0;
	int w;

#define EMIT(...) do { \
	w = snprintf(out + n, outsz - n, __VA_ARGS__); \
	if (w < 0 || (size_t)w >= outsz - n) return n; \
	n += (size_t)w; \
} while (0)

	if (outsz == 0)
		return 0;
	EMIT("# HELP smtpgate_build_info smtpgate's version.\n# TYPE smtpgate_build_info gauge\n"
	    "smtpgate_build_info{version=\"%s\"} 1\n", SMTPGATE_VERSION);
	EMIT("# HELP smtpgate_sessions_active Sessions open now.\n# TYPE smtpgate_sessions_active gauge\n"
	    "smtpgate_sessions_active %u\n", sessions_active);
	EMIT("# HELP smtpgate_limit_keys Keys held for limits.\n# TYPE smtpgate_limit_keys gauge\n"
	    "smtpgate_limit_keys 0\n");
	for (int m = 0; m < METRIC_COUNT; m++) {
		EMIT("# HELP %s %s\n# TYPE %s counter\n", info[m].name, info[m].help, info[m].name);
		for (size_t i = 0; i < nseries; i++)
			if (table[i].m == (enum metric)m)
				EMIT("%s{%s} %llu\n", info[m].name, table[i].labels,
				    (unsigned long long)table[i].value);
	}
#undef EMIT
	return n;
}

/* ---- the HTTP side ---------------------------------------------------- */

struct conn {
	ev_io io;                        /* first: the callbacks cast it back */
	struct conn *prev, *next;
	ev_timer timer;
	int fd;
	size_t len, sent;
	bool responding;
	char *resp;
	char req[METRICS_REQUEST_MAX];
};

static struct conn *conns;           /* open scrapes, freed at metrics_close() */
static unsigned nconns;
static ev_io listen_io;
static ev_timer accept_pause;        /* rest after EMFILE, see on_accept() */
static int listen_fd = -1;
static struct ev_loop *mloop;
static unsigned (*active_fn)(void);

static void conn_free(struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nconns--;
	ev_io_stop(mloop, &c->io);
	ev_timer_stop(mloop, &c->timer);
	close(c->fd);
	free(c->resp);
	free(c);
}

static void respond(struct conn *c, const char *status, const char *type, const char *body, size_t blen)
{
	c->resp = malloc(blen + 256);
	if (!c->resp) {
		conn_free(c);
		return;
	}
	int h = snprintf(c->resp, 256, "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n", status, type, blen);
	memcpy(c->resp + h, body, blen);
	c->len = (size_t)h + blen;
	c->sent = 0;
	c->responding = true;
	ev_io_stop(mloop, &c->io);
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_io_start(mloop, &c->io);
}

static void handle_request(struct conn *c)
{
	/* A query string is ignored: scrape configs may add params. */
	if (strncmp(c->req, "GET /metrics", 12) == 0 && strchr(" ?\r", c->req[12]) && c->req[12]) {
		char *body = malloc(METRICS_RESPONSE_MAX);
		if (!body) {
			conn_free(c);
			return;
		}
		size_t n = metrics_render(body, METRICS_RESPONSE_MAX, active_fn ? active_fn() : 0);
		respond(c, "200 OK", "text/plain; version=0.0.4", body, n);
		free(body);
	} else if (strncmp(c->req, "GET /limits/", 12) == 0) {
		static const char msg[] = "{\"error\":\"limits are not supported by this build yet\"}\n";
		respond(c, "404 Not Found", "application/json", msg, sizeof msg - 1);
	} else if (strncmp(c->req, "GET ", 4) == 0) {
		static const char msg[] = "not found\n";
		respond(c, "404 Not Found", "text/plain", msg, sizeof msg - 1);
	} else {
		static const char msg[] = "read-only: GET only\n";
		respond(c, "405 Method Not Allowed", "text/plain", msg, sizeof msg - 1);
	}
}

static void on_conn_io(struct ev_loop *l, ev_io *w, int revents)
{
	struct conn *c = (struct conn *)w;
	(void)l; (void)revents;

	if (c->responding) {
		ssize_t n = write(c->fd, c->resp + c->sent, c->len - c->sent);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0 || (c->sent += (size_t)n) == c->len)
			conn_free(c);
		return;
	}
	ssize_t n = read(c->fd, c->req + c->len, sizeof c->req - 1 - c->len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_free(c);
		return;
	}
	c->len += (size_t)n;
	c->req[c->len] = '\0';
	if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n"))
		handle_request(c);
	else if (c->len == sizeof c->req - 1)
		respond(c, "413 Request Entity Too Large", "text/plain", "too large\n", 10);
}

static void on_conn_timeout(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l; (void)revents;
	conn_free(w->data);
}

static void on_accept_pause(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	if (listen_fd >= 0)
		ev_io_start(l, &listen_io);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents)
{
	(void)w; (void)revents;
	int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* The connection stays in the backlog and readiness would
			 * fire again at once: rest, as the SMTP listeners do. */
			ev_io_stop(l, &listen_io);
			ev_timer_set(&accept_pause, METRICS_ACCEPT_PAUSE_S, 0.);
			ev_timer_start(l, &accept_pause);
		}
		return;
	}
	if (nconns >= METRICS_CONNS_MAX) {
		/* The slot of the oldest client that has not finished asking goes
		 * to the newcomer: silent connections cannot keep scrapes out. */
		struct conn *oldest = NULL;
		for (struct conn *k = conns; k; k = k->next)
			if (!k->responding)
				oldest = k;
		if (oldest)
			conn_free(oldest);
	}
	struct conn *c = nconns < METRICS_CONNS_MAX ? calloc(1, sizeof *c) : NULL;
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	nconns++;
	ev_io_init(&c->io, on_conn_io, fd, EV_READ);
	ev_timer_init(&c->timer, on_conn_timeout, METRICS_CONN_TIMEOUT_S, 0.);
	c->timer.data = c;
	ev_io_start(l, &c->io);
	ev_timer_start(l, &c->timer);
}

int metrics_bind(const struct config_addr *addr)
{
	int one = 1;
	int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	/* IPv6-only as the SMTP listeners are, so the config check's idea of
	 * which addresses collide holds here too. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    (addr->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
	    bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 ||
	    listen(fd, METRICS_BACKLOG) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

void metrics_adopt(struct ev_loop *loop, int fd, unsigned (*active)(void))
{
	metrics_close();
	ev_timer_init(&accept_pause, on_accept_pause, METRICS_ACCEPT_PAUSE_S, 0.);
	mloop = loop;
	active_fn = active;
	listen_fd = fd;
	ev_io_init(&listen_io, on_accept, fd, EV_READ);
	ev_io_start(loop, &listen_io);
}

int metrics_listen(struct ev_loop *loop, const struct config_addr *addr, unsigned (*active)(void))
{
	int fd = metrics_bind(addr);

	if (fd < 0)
		return -1;
	metrics_adopt(loop, fd, active);
	return 0;
}

void metrics_close(void)
{
	while (conns)
		conn_free(conns);
	if (listen_fd < 0)
		return;
	ev_timer_stop(mloop, &accept_pause);
	ev_io_stop(mloop, &listen_io);
	close(listen_fd);
	listen_fd = -1;
}
