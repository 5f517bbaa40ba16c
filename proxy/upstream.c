/*
 * upstream.c - the MTA side of a session: connect with failover over the
 * `server` lines, the banner, XCLIENT or a PROXY header so the MTA judges
 * the real client, STARTTLS toward the MTA, and the MTA's replies relayed
 * in command order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "metrics.h"
#include "proxyproto.h"
#include "session_int.h"

#define HOSTNAME_MAX 255

static void upstream_ready(struct session *s, const char *banner, size_t len);
static void auth_done(struct session *s, int code);
static void greeting_taken(struct session *s, bool ehlo);

/* Our own name, for the EHLO we send when the client has not said one. */
static const char *hostname(void)
{
	static char name[HOSTNAME_MAX + 1];

	if (!name[0] && (gethostname(name, sizeof name - 1) < 0 || !name[0]))
		snprintf(name, sizeof name, "localhost");
	return name;
}

static void send_ehlo(struct session *s, const char *name)
{
	char line[HOSTNAME_MAX + 16];
	int n = snprintf(line, sizeof line, "EHLO %s\r\n", name);
	sess_upstream_out(s, line, (size_t)n);
	sess_upstream_timer_again(s, s->lis->upstream->connect_timeout_ms);
}

#define REPLY_UPSTREAM_TLS "421 4.7.0 TLS toward the mail server failed, try again later"

/*
 * A server that fails TLS gives way to the next, as a failed connect does
 * (one bad certificate must not stop all mail), at the start of a session
 * and in a reconnect alike.
 */
void sess_upstream_tls_failed(struct session *s, const char *why)
{
	const struct config_upstream *u = s->lis->upstream;
	struct log_field f[] = { F("server", u->servers[s->server].text), F("error", why), FEND };

	log_event(s->id, "upstream_tls_error", f);
	sess_upstream_error(s);
	s->up_tls_failed = true;
	sess_upstream_close(s);
	s->server++;
	sess_upstream_try(s);
}

static void send_xclient(struct session *s);

/* Encrypted (or not asked to be): say who the client is, or greet it. */
static void after_tls(struct session *s, const char *banner, size_t len)
{
	if (s->lis->upstream->forward == FORWARD_XCLIENT)
		send_xclient(s);
	else
		upstream_ready(s, banner, len);
}

/* One scratch buffer for every EHLO rewrite: the loop runs one at a time. */
static char ehlo_out[SMTP_REPLY_MAX + 256];

/* What an EHLO reply of the MTA offers; false when it is no EHLO reply. */
static bool ehlo_info(const char *r, size_t n, struct smtp_ehlo_info *info)
{
	struct smtp_ehlo_opts o = { .max_size = 0 };

	return smtp_ehlo_rewrite(r, n, &o, ehlo_out, sizeof ehlo_out, info) >= 0;
}

static void upstream_ehlo_reply(struct session *s, const char *r, size_t n, int code)
{
	struct smtp_ehlo_info info;

	if (code != 250 || !ehlo_info(r, n, &info) || !info.starttls) {
		sess_upstream_tls_failed(s, "the MTA does not offer STARTTLS");
		return;
	}
	sess_upstream_out(s, "STARTTLS\r\n", 10);
	s->up = UP_STARTTLS;
}

static void upstream_start_tls(struct session *s)
{
	const struct config_upstream *u = s->lis->upstream;
	char ip[INET6_ADDRSTRLEN];
	const struct sockaddr *sa = (const struct sockaddr *)&u->servers[s->server].ss;
	const void *a = sa->sa_family == AF_INET6
	    ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
	    : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

	if (!inet_ntop(sa->sa_family, a, ip, sizeof ip) ||
	    !(s->ussl = tls_new(u->tls_ctx, s->ufd, ip))) {
		sess_upstream_tls_failed(s, "cannot start TLS");
		return;
	}
	/* Nothing the MTA sent before the handshake may count as said under TLS. */
	buf_release(&s->uin);
	memset(&s->rp, 0, sizeof s->rp);
	s->up = UP_TLS;
	sess_upstream_tls_step(s);
}

void sess_upstream_tls_step(struct session *s)
{
	char why[TLS_ERR_MAX];
	enum tls_want want;
	int rc = tls_handshake(s->ussl, false, &want, why, sizeof why);

	if (rc < 0) {
		sess_upstream_tls_failed(s, why);
		return;
	}
	if (rc == 0) {
		s->u_rwant = want == TLS_WANT_READ ? TLS_WANT_READ : 0;
		s->u_wwant = want == TLS_WANT_WRITE ? TLS_WANT_WRITE : 0;
		return;
	}
	s->u_rwant = s->u_wwant = 0;
	struct log_field f[] = { F("server", s->lis->upstream->servers[s->server].text),
		F("tls", tls_version(s->ussl)), F("cipher", tls_cipher(s->ussl)), FEND };
	log_event(s->id, "upstream_tls", f);
	/* The MTA's session restarts under TLS (RFC 3207): EHLO again. */
	send_ehlo(s, hostname());
	s->up = UP_TLS_EHLO;
}

void sess_upstream_close(struct session *s)
{
	if (s->ufd < 0)
		return;
	ev_io_stop(s->loop, &s->urd);
	ev_io_stop(s->loop, &s->uwr);
	ev_timer_stop(s->loop, &s->utimer);
	if (s->ussl) {
		SSL_shutdown(s->ussl);
		tls_free(s->ussl);
		s->ussl = NULL;
	}
	close(s->ufd);
	s->ufd = -1;
	s->up = UP_NONE;
	s->u_rwant = s->u_wwant = 0;
	s->up_gen++;
	buf_release(&s->uin);
	buf_release(&s->uout);
	memset(&s->rp, 0, sizeof s->rp);
	/*
	 * Whatever the MTA still owed us is not coming.  Local answers queued
	 * ahead of the first lost reply go out; those behind it are dropped,
	 * since the client would pair them with the wrong commands.
	 */
	sess_flush_local(s);
	sess_q_drop_all(s);
}

void sess_upstream_error(struct session *s)
{
	const struct config_upstream *u = s->lis->upstream;

	if (s->server < u->nservers)
		metrics_inc(METRIC_UPSTREAM_ERRORS_TOTAL, "server", u->servers[s->server].text, NULL);
}

void sess_upstream_failed(struct session *s, const char *why)
{
	const struct config_upstream *u = s->lis->upstream;
	struct log_field f[] = { F("server", u->servers[s->server].text), F("error", why), FEND };

	log_event(s->id, "upstream_error", f);
	sess_upstream_error(s);
	sess_upstream_close(s);
	s->server++;
	sess_upstream_try(s);
}

void sess_upstream_try(struct session *s)
{
	const struct config_upstream *u = s->lis->upstream;

	for (; s->server < u->nservers; s->server++) {
		const struct config_addr *a = &u->servers[s->server];
		int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			/* smtpgate's own limit (descriptors, memory), not the MTA's
			 * fault: another server would fare no better */
			struct log_field f[] = { F("what", "upstream socket"), F("error", strerror(errno)), FEND };
			log_event(s->id, "resource_error", f);
			sess_end(s, "421 4.3.2 Service not available");
			return;
		}
		sess_set_nonblock_nodelay(fd);
		if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS) {
			struct log_field f[] = { F("server", a->text), F("error", strerror(errno)), FEND };
			log_event(s->id, "upstream_error", f);
			sess_upstream_error(s);
			close(fd);
			continue;
		}
		s->ufd = fd;
		ev_io_set(&s->urd, fd, EV_READ);
		ev_io_set(&s->uwr, fd, EV_WRITE);
		sess_upstream_timer_again(s, u->connect_timeout_ms);
		sess_upstream_connected(s);
		return;
	}
	log_event(s->id, "upstream_unavailable", NULL);
	sess_end(s, s->up_tls_failed ? REPLY_UPSTREAM_TLS : "421 4.3.2 Service not available");
}

/*
 * A PROXY header speaks one family.  A client folded to IPv4 behind an IPv6
 * destination (a dual-stack balancer says ::ffff:a.b.c.d for both) goes as
 * IPv4 when the destination folds too, else both go as IPv6.
 */
static void same_family(struct sockaddr_storage *src, struct sockaddr_storage *dst)
{
	socklen_t len = sizeof *dst;

	if (src->ss_family == dst->ss_family)
		return;
	if (src->ss_family == AF_INET)
		sess_fold_mapped(dst, &len);
	if (src->ss_family == dst->ss_family)
		return;
	struct sockaddr_storage *v4 = src->ss_family == AF_INET ? src :
	    dst->ss_family == AF_INET ? dst : NULL;
	if (!v4)
		return;
	struct sockaddr_in s4;
	memcpy(&s4, v4, sizeof s4);
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = s4.sin_port };
	s6.sin6_addr.s6_addr[10] = 0xff;
	s6.sin6_addr.s6_addr[11] = 0xff;
	memcpy(&s6.sin6_addr.s6_addr[12], &s4.sin_addr, 4);
	memset(v4, 0, sizeof *v4);
	memcpy(v4, &s6, sizeof s6);
}

/*
 * The connect is under way: queue what the MTA must hear first and wait for
 * its 220.  There is no separate wait for the connect to finish: a refused
 * connect shows up as an error on the first read or write, which fails over
 * like a banner that never came, and the wait costs a wake-up per session.
 */
void sess_upstream_connected(struct session *s)
{
	const struct config_upstream *u = s->lis->upstream;

	s->up = UP_BANNER;
	if (u->forward == FORWARD_PROXY_V1 || u->forward == FORWARD_PROXY_V2) {
		char hdr[PROXYPROTO_V2_MAX];
		struct sockaddr_storage src = s->peer, dst = s->local;
		same_family(&src, &dst);
		long n = proxyproto_build(u->forward == FORWARD_PROXY_V1 ? 1 : 2,
		    (const struct sockaddr *)&src, (const struct sockaddr *)&dst,
		    hdr, sizeof hdr);
		if (n < 0) {
			sess_upstream_failed(s, "cannot build PROXY header");
			return;
		}
		sess_upstream_out(s, hdr, (size_t)n);
	}
}

static void send_xclient(struct session *s)
{
	char line[256];
	const char *v6 = s->peer.ss_family == AF_INET6 ? "IPV6:" : "";
	int n = snprintf(line, sizeof line, "XCLIENT NAME=[UNAVAILABLE] ADDR=%s%s PORT=%u\r\n",
	    v6, s->ip, sess_addr_port((const struct sockaddr *)&s->peer));
	sess_upstream_out(s, line, (size_t)n);
	s->up = UP_XCLIENT;
}

/* The upstream greeted us (after XCLIENT, if any): now greet the client. */
static void upstream_ready(struct session *s, const char *banner, size_t len)
{
	s->up = UP_READY;
	ev_timer_stop(s->loop, &s->utimer);
	if (s->replay) {
		/* The MTA forgot the session when we cut it: say HELO again, quietly. */
		char line[SESSION_HELO_MAX + 16];
		int n = snprintf(line, sizeof line, "%s %s\r\n", s->helo_ehlo ? "EHLO" : "HELO",
		    s->helo ? s->helo : hostname());
		sess_upstream_out(s, line, (size_t)n);
		s->up = UP_REPLAY;
		sess_upstream_timer_again(s, s->cfg->timeout_command_ms);
		return;
	}
	if (s->state != ST_GREETING)
		return;
	if (s->lis->banner) {
		char line[REPLY_LINE_MAX + 2];
		int n = snprintf(line, sizeof line, "220 %s\r\n", s->lis->banner);
		if (n > 0 && (size_t)n < sizeof line)
			sess_client_out(s, line, (size_t)n);
	} else {
		sess_client_out(s, banner, len);
	}
	free(s->up_banner);
	s->up_banner = NULL;
	sess_set_state(s, ST_COMMAND);
	sess_client_timer_again(s);
}

static void relay_ehlo(struct session *s, const char *r, size_t n)
{
	struct smtp_ehlo_opts o = {
		.starttls = s->lis->tls == TLS_MODE_STARTTLS && !s->tls,
		.hide_auth = s->lis->auth == AUTH_MODE_REQUIRE_TLS && !s->tls,
		.max_size = s->cfg->max_message_size,
	};
	struct smtp_ehlo_info info;
	long len = smtp_ehlo_rewrite(r, n, &o, ehlo_out, sizeof ehlo_out, &info);

	if (len < 0) {
		/* Never relay what we could not rewrite (it may offer STARTTLS,
		 * XCLIENT or CHUNKING): the greeting line alone, no extensions. */
		const char *eol = memchr(r, '\n', n);
		size_t first = eol ? (size_t)(eol - r) : n;
		if (first > 0 && r[first - 1] == '\r')
			first--;
		sess_client_out(s, "250 ", 4);
		sess_client_out(s, r + (first > 4 ? 4 : first), first > 4 ? first - 4 : 0);
		sess_client_out(s, "\r\n", 2);
		s->up_pipelining = false;
		return;
	}
	s->up_pipelining = info.pipelining;
	sess_client_out(s, ehlo_out, (size_t)len);
}

static void log_message(struct session *s, const char *r, size_t n)
{
	char size[24], rcpts[16];

	/* The last line: where an MTA puts the queue id of a multi-line reply. */
	while (n && (r[n - 1] == '\r' || r[n - 1] == '\n'))
		n--;
	for (size_t k = n; k > 0; k--) {
		if (r[k - 1] == '\n') {
			r += k;
			n -= k;
			break;
		}
	}
	snprintf(size, sizeof size, "%llu", (unsigned long long)s->msg_size);
	snprintf(rcpts, sizeof rcpts, "%u", s->msg_rcpts);
	struct log_field f[] = { FN("reply", r, n), FNUM("size", size), FNUM("rcpts", rcpts),
		F("sender", s->msg_sender), F("tls", s->tls ? tls_version(s->cssl) : NULL), FEND };
	log_event(s->id, "message", f);
}

/*
 * A reply nobody asked for: the MTA is going away (421, relayed) or out of
 * step with us.  Either way the session cannot go on: every later reply
 * would answer the wrong command (a 250 to a NOOP taken for the 250 to a
 * final dot the MTA refused), and a body still streaming must not get its
 * dot, so the MTA is cut off at once.
 */
static void unsolicited_reply(struct session *s, const char *r, size_t n, int code)
{
	struct log_field f[] = { FN("reply", r, n > 200 ? 200 : n), FEND };
	log_event(s->id, "upstream_unsolicited", f);
	sess_flush_local(s);
	if (code == 421)
		sess_client_out(s, r, n);
	else
		sess_upstream_error(s);
	sess_end(s, code == 421 ? NULL : "421 4.4.2 Upstream protocol error");
}

static void upstream_reply(struct session *s, const char *r, size_t n, int code)
{
	switch (s->up) {
	case UP_BANNER:
		if (code != 220) {
			/* The MTA refuses the session itself: its word goes to the client. */
			if (s->state == ST_GREETING) {
				sess_client_out(s, r, n);
				sess_end(s, NULL);
			} else {
				sess_end(s, "421 4.3.2 Service not available");
			}
			return;
		}
		/* Kept: relayed once STARTTLS or XCLIENT toward the MTA is done. */
		free(s->up_banner);
		s->up_banner = strndup(r, n);
		if (!s->up_banner) {
			s->dead = true;
			return;
		}
		if (s->lis->upstream->starttls) {
			send_ehlo(s, hostname());
			s->up = UP_EHLO;
			return;
		}
		after_tls(s, r, n);
		return;
	case UP_EHLO:
		upstream_ehlo_reply(s, r, n, code);
		return;
	case UP_STARTTLS:
		if (code != 220) {
			sess_upstream_tls_failed(s, "the MTA refused STARTTLS");
			return;
		}
		upstream_start_tls(s);
		return;
	case UP_XCLIENT:
		/*
		 * Postfix answers XCLIENT with a new 220 greeting, which is the
		 * banner the client gets; others (smtp-sink) say 250, and the
		 * first banner stands.
		 */
		if (code == 220) {
			upstream_ready(s, r, n);
			return;
		}
		if (code >= 200 && code < 300) {
			upstream_ready(s, s->up_banner, strlen(s->up_banner));
			return;
		}
		log_event(s->id, "xclient_refused", (struct log_field[]){ FN("reply", r, n), FEND });
		sess_end(s, "421 4.3.2 Service not available");
		return;
	case UP_TLS_EHLO:
		if (code != 250) {
			sess_upstream_tls_failed(s, "the MTA refused EHLO after STARTTLS");
			return;
		}
		after_tls(s, s->up_banner, strlen(s->up_banner));
		return;
	case UP_REPLAY:
		if (code != 250) {
			sess_end(s, "421 4.3.2 Service not available");
			return;
		}
		if (s->helo_ehlo) {
			struct smtp_ehlo_info info;
			if (ehlo_info(r, n, &info))
				s->up_pipelining = info.pipelining;
		}
		s->up = UP_READY;
		s->replay = false;
		ev_timer_stop(s->loop, &s->utimer);
		return;
	case UP_READY:
		break;
	default:
		return;
	}

	sess_flush_local(s);
	struct pending *p = sess_q_head(s);
	if (!p) {
		unsolicited_reply(s, r, n, code);
		return;
	}
	enum expect ex = (enum expect)p->expect;
	uint16_t tag = p->len;
	sess_q_pop(s);

	switch (ex) {
	case EX_HELO:
	case EX_EHLO:
		if (code == 250 && ex == EX_EHLO)
			relay_ehlo(s, r, n);
		else
			sess_client_out(s, r, n);
		s->barrier = false;
		if (code == 250)
			greeting_taken(s, ex == EX_EHLO);
		free(s->helo_pending);
		s->helo_pending = NULL;
		break;
	case EX_DATA:
		sess_client_out(s, r, n);
		s->barrier = false;
		if (code == 354) {
			data_begin(&s->ds, s->cfg->bare_newline);
			sess_set_state(s, ST_DATA);
			sess_client_timer_again(s);
		}
		break;
	case EX_RCPT:
		sess_client_out(s, r, n);
		/* max_recipients counts the recipients the MTA took, in this
		 * transaction only (a pipelined RSET may have begun another). */
		if (code >= 300 && tag == s->txn_seq && s->rcpts > 0)
			s->rcpts--;
		break;
	case EX_MAIL:
		sess_client_out(s, r, n);
		if (s->mails_unanswered > 0)
			s->mails_unanswered--;
		/* The MTA refused the MAIL that opened our transaction: none is open. */
		if (code >= 300 && tag == s->txn_seq && s->txn == TXN_OPEN)
			s->txn = TXN_NONE;
		break;
	case EX_SILENT:
		break;
	case EX_DOT:
		sess_client_out(s, r, n);
		log_message(s, r, n);
		if (code >= 200 && code < 300)
			s->messages++;
		metrics_inc(METRIC_MESSAGES_TOTAL, "result", code < 300 ? "accepted" : "rejected", NULL);
		free(s->msg_sender);
		s->msg_sender = NULL;
		break;
	case EX_AUTH:
		sess_client_out(s, r, n);
		s->barrier = false;
		if (code == 334) {
			sess_set_state(s, ST_AUTH);
		} else {
			sess_set_state(s, ST_COMMAND);
			auth_done(s, code);
		}
		break;
	case EX_QUIT:
		sess_client_out(s, r, n);
		sess_end(s, NULL);
		return;
	default:
		sess_client_out(s, r, n);
		break;
	}
	if (code == 421) {
		/*
		 * RFC 5321 3.8: the MTA is closing the channel.  Its 421 is the
		 * client's last word too: the commands behind it get no answer
		 * of ours, and its close is no "connection lost" to add.
		 */
		if (ex == EX_SILENT)
			sess_client_out(s, r, n);
		sess_q_drop_all(s);
		sess_end(s, NULL);
		return;
	}
	sess_flush_local(s);
	if (s->q_upstream) {
		p = sess_q_head(s);
		sess_upstream_timer_again(s, p && p->expect == EX_DOT ? s->cfg->timeout_data_ms
		    : s->cfg->timeout_command_ms);
	} else {
		ev_timer_stop(s->loop, &s->utimer);
	}
}

/* RFC 5321 4.1.4: an accepted HELO/EHLO resets the transaction. */
static void greeting_taken(struct session *s, bool ehlo)
{
	free(s->helo);
	s->helo = s->helo_pending;
	s->helo_pending = NULL;
	s->helo_ehlo = ehlo;
	/* after STARTTLS, the MTA has now heard a name sent under TLS */
	s->need_helo = false;
	sess_txn_reset(s);
}

/* The MTA's last word on an AUTH exchange. */
static void auth_done(struct session *s, int code)
{
	if (!s->auth)
		return;
	if (code == 235) {
		free(s->user);
		/* A mechanism whose name we cannot read still authenticates. */
		s->user = strdup(s->auth->known ? s->auth->user : "");
		if (!s->user)
			s->dead = true;
	}
	char c[8];
	snprintf(c, sizeof c, "%d", code);
	struct log_field f[] = { F("mechanism", s->auth->mech_name),
		F("user", s->auth->known ? s->auth->user : NULL),
		F("result", code == 235 ? "ok" : "failed"), FNUM("code", c), FEND };
	log_event(s->id, "auth", f);
	explicit_bzero(s->auth, sizeof *s->auth);
	free(s->auth);
	s->auth = NULL;
}

bool sess_process_upstream(struct session *s)
{
	bool progress = false;

	while (s->ufd >= 0 && buf_len(&s->uin) > 0 && buf_len(&s->cout) <= COUT_HIGH &&
	    s->state != ST_CLOSING) {
		size_t rlen;
		int code;
		enum smtp_reply_status st = smtp_reply_next(&s->rp, buf_head(&s->uin),
		    buf_len(&s->uin), &rlen, &code);
		if (st == SMTP_REPLY_AGAIN) {
			if (buf_len(&s->uin) >= BUF_SIZE)
				st = SMTP_REPLY_BAD;
			else
				break;
		}
		if (st == SMTP_REPLY_BAD) {
			log_event(s->id, "upstream_protocol_error", NULL);
			sess_upstream_error(s);
			sess_end(s, "421 4.4.2 Upstream protocol error");
			return true;
		}
		memset(&s->rp, 0, sizeof s->rp);
		unsigned gen = s->up_gen;
		upstream_reply(s, buf_head(&s->uin), rlen, code);
		if (gen == s->up_gen)
			buf_drop(&s->uin, rlen);
		progress = true;
	}
	return progress;
}
