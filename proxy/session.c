/*
 * session.c - one SMTP session: its life cycle, its I/O (plaintext or
 * TLS), its timers, and the pump that drives it (SPEC §3).
 *
 * Shape: every libev callback reads what it can into a buffer and then
 * calls sess_pump(), which parses client lines and upstream replies,
 * answers in command order through the pending queue, writes, and frees
 * the session when it is over.  See session_int.h for the split of files.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "metrics.h"
#include "proxyproto.h"
#include "session_int.h"

static const char *const state_names[] = {
	"proxyhdr", "tls", "pregreet", "greeting", "command", "auth", "data", "closing",
};

static unsigned nsessions;
static uint64_t next_id;
static struct session *all;           /* every live session, for session_close_all() */

static bool process_proxy_header(struct session *s);
static void client_ready(struct session *s);
static void client_tls_begin(struct session *s);

/* The client is known (socket or PROXY header): implicit TLS comes first. */
static void client_accepted(struct session *s)
{
	char port[8];

	snprintf(port, sizeof port, "%u", sess_addr_port((const struct sockaddr *)&s->lis->addr.ss));
	struct log_field lf[] = { F("ip", s->ip), FNUM("port", port), F("listener", s->lis->addr.text), FEND };
	log_event(s->id, "connect", lf);
	if (s->lis->tls == TLS_MODE_IMPLICIT) {
		client_tls_begin(s);
		return;
	}
	client_ready(s);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sess_set_state(struct session *s, enum state st)
{
	static int debug = -1;

	if (debug < 0)
		debug = getenv("SMTPGATE_DEBUG") != NULL;
	if (debug) {
		struct log_field f[] = { F("from", state_names[s->state]), F("to", state_names[st]), FEND };
		log_event(s->id, "state", f);
	}
	s->state = st;
}

static void log_reject(struct session *s, enum policy_stage stage, const struct verdict *v,
    const char *rcpt, size_t rcptlen)
{
	struct log_field f[] = {
		F("stage", policy_stage_name(stage)), F(v->what ? v->what : "rule", v->name),
		F("reply", v->reply),
		F("sender", s->sender), FN("rcpt", rcpt, rcptlen), F("helo", s->helo), FEND
	};
	log_event(s->id, "reject", f);
	s->refused++;
}

void sess_fill_facts(struct session *s, struct policy_facts *f)
{
	memset(f, 0, sizeof *f);
	f->addr = (const struct sockaddr *)&s->peer;
	f->ip = s->ip;
	f->port = sess_addr_port((const struct sockaddr *)&s->lis->addr.ss);
	f->tls = s->tls;
	f->helo = s->helo;
	f->user = s->user;
	f->sender = s->sender;
	f->rcpts = s->rcpts;
}

struct pending *sess_q_head(struct session *s)
{
	return s->qlen ? &s->q[s->qhead] : NULL;
}

void sess_q_pop(struct session *s)
{
	if (s->q[s->qhead].expect != EX_LOCAL)
		s->q_upstream--;
	s->qhead = (s->qhead + 1) % SESSION_PENDING_MAX;
	s->qlen--;
}

/* Forget every pending answer, local ones with their text. */
void sess_q_drop_all(struct session *s)
{
	struct pending *p;

	while ((p = sess_q_head(s))) {
		if (p->expect == EX_LOCAL)
			buf_drop(&s->lq, p->len);
		sess_q_pop(s);
	}
	s->mails_unanswered = 0;
}

void sess_q_push(struct session *s, enum expect ex, size_t len)
{
	if (s->qlen == SESSION_PENDING_MAX) {
		/* Callers stop reading before the queue fills; this is a bug. */
		log_event(s->id, "internal_error", (struct log_field[]){ F("what", "pending queue full"), FEND });
		s->dead = true;
		return;
	}
	struct pending *p = &s->q[(s->qhead + s->qlen) % SESSION_PENDING_MAX];
	p->expect = (uint8_t)ex;
	p->len = (uint16_t)len;
	s->qlen++;
	if (ex != EX_LOCAL)
		s->q_upstream++;
}

void sess_client_out(struct session *s, const char *p, size_t n)
{
	/* Callers keep cout under COUT_HIGH before producing, so this fits. */
	if (buf_append(&s->cout, p, n) < 0)
		s->dead = true;
}

/* Move local replies at the head of the queue to the client. */
void sess_flush_local(struct session *s)
{
	struct pending *p;

	while ((p = sess_q_head(s)) && p->expect == EX_LOCAL) {
		sess_client_out(s, buf_head(&s->lq), p->len);
		buf_drop(&s->lq, p->len);
		sess_q_pop(s);
	}
}

/* Answer the current command ourselves, in its place in the queue. */
void sess_reply_local(struct session *s, const char *text)
{
	char line[REPLY_LINE_MAX + 2];
	int n = snprintf(line, sizeof line - 2, "%s", text);

	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 3)
		n = (int)(sizeof line - 3);
	line[n++] = '\r';
	line[n++] = '\n';
	if (s->qlen == 0) {
		sess_client_out(s, line, (size_t)n);
		return;
	}
	if (buf_append(&s->lq, line, (size_t)n) < 0) {
		s->dead = true;
		return;
	}
	sess_q_push(s, EX_LOCAL, (size_t)n);
}

void sess_upstream_out(struct session *s, const char *p, size_t n)
{
	if (buf_append(&s->uout, p, n) < 0)
		s->dead = true;
}

/*
 * End the session: earlier local answers, then REPLY (may be NULL), then
 * close once the client has it.  An open DATA upstream is cut without the
 * final dot, so the MTA never gets a message we did not see end.
 */
void sess_end(struct session *s, const char *reply)
{
	if (s->state == ST_CLOSING)
		return;
	sess_upstream_close(s);
	sess_flush_local(s);
	if (reply) {
		char line[REPLY_LINE_MAX + 2];
		int n = snprintf(line, sizeof line, "%s\r\n", reply);
		if (n > 0 && (size_t)n < sizeof line)
			sess_client_out(s, line, (size_t)n);
	}
	sess_set_state(s, ST_CLOSING);
	ev_timer_stop(s->loop, &s->ctimer);
	ev_timer_set(&s->ctimer, SESSION_CLOSE_LINGER_MS / 1000.0, 0.);
	ev_timer_start(s->loop, &s->ctimer);
}

void sess_client_timer_again(struct session *s)
{
	uint64_t ms = s->state == ST_DATA ? s->cfg->timeout_data_ms : s->cfg->timeout_command_ms;
	s->ctimer.repeat = (double)ms / 1000.0;
	ev_timer_again(s->loop, &s->ctimer);
}

void sess_upstream_timer_again(struct session *s, uint64_t ms)
{
	s->utimer.repeat = (double)ms / 1000.0;
	ev_timer_again(s->loop, &s->utimer);
}

static void format_addr(const struct sockaddr *sa, char *out, size_t outsz)
{
	const void *a = sa->sa_family == AF_INET6
	    ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
	    : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
	if (!inet_ntop(sa->sa_family, a, out, (socklen_t)outsz))
		snprintf(out, outsz, "unknown");
}

unsigned sess_addr_port(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
	    : ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

/* An IPv4 client seen through an IPv6 socket is an IPv4 client. */
void sess_fold_mapped(struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return;
	struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = s6->sin6_port };
	memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	memset(ss, 0, sizeof *ss);
	memcpy(ss, &s4, sizeof s4);
	*len = sizeof s4;
}

int sess_set_nonblock_nodelay(int fd)
{
	int one = 1;
	/* Replies are small and latency-bound: never wait for delayed ACKs. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
		return -1;
	return 0;
}

void sess_txn_reset(struct session *s)
{
	s->txn = TXN_NONE;
	s->txn_seq++;
	s->rcpts = s->rcpts_refused = 0;
	free(s->sender);
	s->sender = NULL;
}

/* Refuse a command ourselves, per a verdict. */
void sess_refuse(struct session *s, enum policy_stage stage, const struct verdict *v,
    const char *rcpt, size_t rcptlen)
{
	log_reject(s, stage, v, rcpt, rcptlen);
	metrics_inc(METRIC_REFUSALS_TOTAL, "stage", policy_stage_name(stage), "name", v->name,
	    "action", v->kind == VERDICT_CLOSE ? "close" : "reject", NULL);
	if (v->kind == VERDICT_CLOSE) {
		sess_end(s, v->reply);
		return;
	}
	sess_reply_local(s, v->reply);
}

static bool process_proxy_header(struct session *s)
{
	struct proxyproto_result r;
	size_t used;

	switch (proxyproto_parse(buf_head(&s->cin), buf_len(&s->cin), &r, &used)) {
	case PROXYPROTO_AGAIN:
		if (buf_len(&s->cin) < PROXYPROTO_V2_MAX)
			return false;
		/* fall through */
	case PROXYPROTO_BAD:
		log_event(s->id, "proxy_header_invalid", NULL);
		sess_end(s, "421 4.7.0 Invalid PROXY protocol header");
		return true;
	case PROXYPROTO_OK:
		break;
	}
	buf_drop(&s->cin, used);
	if (r.src.ss_family != AF_UNSPEC) {
		s->peer = r.src;
		s->peerlen = r.srclen;
		s->local = r.dst;
		s->locallen = r.dstlen;
		sess_fold_mapped(&s->peer, &s->peerlen);
		format_addr((const struct sockaddr *)&s->peer, s->ip, sizeof s->ip);
	}
	client_accepted(s);
	return true;
}

static bool process_client(struct session *s)
{
	switch (s->state) {
	case ST_PROXYHDR:
		return buf_len(&s->cin) ? process_proxy_header(s) : false;
	case ST_PREGREET:
		if (buf_len(&s->cin) == 0)
			return false;
		{
			struct verdict v = { .kind = VERDICT_CLOSE, .what = "check", .name = "pregreet" };
			snprintf(v.reply, sizeof v.reply, "554 5.7.1 Protocol error: talked before greeting");
			buf_release(&s->cin);
			sess_refuse(s, STAGE_CONNECT, &v, NULL, 0);
		}
		return true;
	case ST_DATA:
		return sess_process_data(s);
	case ST_COMMAND:
	case ST_AUTH:
		return sess_process_commands(s);
	default:
		return false;
	}
}

/* ---- I/O: plaintext or TLS, the same for both sides ---------------------- */

/* >0 bytes, 0 closed, -1 error, -2 again (a TLS call notes what it waits for). */
static ssize_t io_read(int fd, struct ssl_st *ssl, void *p, size_t n, uint8_t *want)
{
	if (ssl) {
		enum tls_want w;
		ssize_t r = tls_read(ssl, p, n, &w);
		*want = (uint8_t)w;
		return r;
	}
	ssize_t r = recv(fd, p, n, 0);
	if (r < 0)
		return errno == EAGAIN || errno == EINTR ? -2 : -1;
	return r;
}

static ssize_t io_write(int fd, struct ssl_st *ssl, const void *p, size_t n, uint8_t *want)
{
	if (ssl) {
		enum tls_want w;
		ssize_t r = tls_write(ssl, p, n, &w);
		*want = (uint8_t)w;
		return r;
	}
	ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
	if (r < 0)
		return errno == EAGAIN || errno == EINTR ? -2 : -1;
	return r;
}

/* Read once into b; returns false when the peer is gone. */
static bool read_into(int fd, struct ssl_st *ssl, struct buf *b, uint8_t *want)
{
	long room = buf_prepare(b);

	if (room < 0)
		return false;
	if (room == 0)
		return true;
	*want = 0;
	ssize_t n = io_read(fd, ssl, buf_tail(b), (size_t)room, want);
	if (n > 0) {
		buf_commit(b, (size_t)n);
		return true;
	}
	if (buf_len(b) == 0)
		buf_release(b);
	return n == -2;
}

/*
 * Past COUT_HIGH the MTA's replies wait in its socket until the client
 * reads: the session waits on the client, not on the MTA.
 */
static bool client_backlogged(const struct session *s)
{
	return buf_len(&s->cout) > COUT_HIGH;
}

/* Returns true when bytes went out: room freed is progress for the pump. */
static bool flush_client(struct session *s)
{
	bool wrote = false;
	bool backlogged = client_backlogged(s);

	while (buf_len(&s->cout) > 0 && s->state != ST_TLS) {
		s->c_wwant = 0;
		ssize_t n = io_write(s->cfd, s->cssl, buf_head(&s->cout), buf_len(&s->cout), &s->c_wwant);
		if (n == -2)
			break;
		if (n <= 0) {
			s->dead = true;
			return wrote;
		}
		buf_drop(&s->cout, (size_t)n);
		wrote = true;
	}
	/* A client working through a backlog of replies is not idle. */
	if (wrote && backlogged && (s->state == ST_COMMAND || s->state == ST_AUTH))
		sess_client_timer_again(s);
	return wrote;
}

/*
 * Past the banner but short of READY (EHLO, STARTTLS, XCLIENT toward the
 * MTA): no reply of this connection has reached the client (its banner, or
 * during a reconnect nothing at all), so a server failing now can still give
 * way to the next one, as at connect.
 */
static bool upstream_preparing(const struct session *s)
{
	return s->up != UP_NONE && s->up != UP_BANNER && s->up != UP_REPLAY &&
	    s->up != UP_READY;
}

static bool flush_upstream(struct session *s)
{
	bool wrote = false;

	while (s->ufd >= 0 && s->up != UP_TLS && buf_len(&s->uout) > 0) {
		s->u_wwant = 0;
		ssize_t n = io_write(s->ufd, s->ussl, buf_head(&s->uout), buf_len(&s->uout), &s->u_wwant);
		if (n == -2)
			return wrote;
		if (n <= 0) {
			if (s->up == UP_BANNER || upstream_preparing(s)) {
				sess_upstream_failed(s, n < 0 ? strerror(errno) : "closed");
				return wrote;
			}
			log_event(s->id, "upstream_write_error", NULL);
			sess_upstream_error(s);
			sess_end(s, "421 4.4.2 Upstream connection lost");
			return wrote;
		}
		buf_drop(&s->uout, (size_t)n);
		wrote = true;
	}
	return wrote;
}

/* ---- TLS with the client ----------------------------------------------------- */

static void client_ready(struct session *s);

static bool client_tls_step(struct session *s);

static void client_tls_begin(struct session *s)
{
	s->starttls_pending = false;
	/* Plaintext the client sent behind STARTTLS is not to be trusted (CVE-2011-0411). */
	buf_release(&s->cin);
	memset(&s->lp, 0, sizeof s->lp);
	s->cssl = tls_new(s->cfg->tls.ctx, s->cfd, NULL);
	if (!s->cssl) {
		log_event(s->id, "tls_error", (struct log_field[]){ F("error", "cannot start TLS"), FEND });
		s->dead = true;
		return;
	}
	sess_set_state(s, ST_TLS);
	/* A handshake that stalls is idleness like any other. */
	s->ctimer.repeat = (double)s->cfg->timeout_command_ms / 1000.0;
	ev_timer_again(s->loop, &s->ctimer);
	client_tls_step(s);
}

static bool client_tls_step(struct session *s)
{
	char why[TLS_ERR_MAX];
	enum tls_want want;
	int rc = tls_handshake(s->cssl, true, &want, why, sizeof why);

	s->c_rwant = s->c_wwant = 0;
	if (rc == 0) {
		if (want == TLS_WANT_READ)
			s->c_rwant = TLS_WANT_READ;
		else
			s->c_wwant = TLS_WANT_WRITE;
		return false;
	}
	if (rc < 0) {
		log_event(s->id, "tls_error", (struct log_field[]){ F("error", why), FEND });
		s->dead = true;
		return true;
	}
	s->tls = true;
	struct log_field f[] = { F("tls", tls_version(s->cssl)), F("cipher", tls_cipher(s->cssl)), FEND };
	log_event(s->id, "tls", f);
	metrics_inc(METRIC_TLS_SESSIONS_TOTAL, "version", tls_version(s->cssl), NULL);
	if (s->lis->tls == TLS_MODE_IMPLICIT) {
		/* Implicit TLS (RFC 8314): the session proper starts now. */
		client_ready(s);
		return true;
	}
	/* RFC 3207: forget what the client said before; it must EHLO again.
	 * The MTA saw none of this, so it is told to forget too. */
	free(s->helo);
	s->helo = NULL;
	free(s->helo_pending);
	s->helo_pending = NULL;
	/* The MTA still has the plaintext EHLO name (which anyone on the path
	 * could have written): it hears a new one before any MAIL or AUTH. */
	s->need_helo = true;
	sess_txn_reset(s);
	if (s->up == UP_READY) {
		sess_upstream_out(s, "RSET\r\n", 6);
		sess_q_push(s, EX_SILENT, 0);
		if (s->q_upstream == 1)
			sess_upstream_timer_again(s, s->cfg->timeout_command_ms);
	}
	s->barrier = false;
	sess_set_state(s, ST_COMMAND);
	sess_client_timer_again(s);
	return true;
}

static void watch(struct session *s, ev_io *w, bool want)
{
	if (want)
		ev_io_start(s->loop, w);
	else
		ev_io_stop(s->loop, w);
}

static void update_watchers(struct session *s)
{
	bool reading = (s->state == ST_PROXYHDR || s->state == ST_PREGREET ||
	    s->state == ST_COMMAND || s->state == ST_AUTH || s->state == ST_DATA) &&
	    !s->starttls_pending && !s->client_eof && buf_len(&s->cin) < BUF_SIZE;

	/* A TLS read may wait for the socket to be writable, and a write readable. */
	watch(s, &s->crd, (reading && s->c_rwant != TLS_WANT_WRITE) ||
	    s->c_rwant == TLS_WANT_READ || s->c_wwant == TLS_WANT_READ);
	watch(s, &s->cwr, (buf_len(&s->cout) > 0 && s->c_wwant != TLS_WANT_READ) ||
	    s->c_rwant == TLS_WANT_WRITE || s->c_wwant == TLS_WANT_WRITE);
	if (s->ufd >= 0) {
		bool ureading = buf_len(&s->cout) <= COUT_HIGH &&
		    buf_len(&s->uin) < BUF_SIZE;
		watch(s, &s->urd, (ureading && s->u_rwant != TLS_WANT_WRITE) ||
		    s->u_rwant == TLS_WANT_READ || s->u_wwant == TLS_WANT_READ);
		watch(s, &s->uwr, (buf_len(&s->uout) > 0 && s->u_wwant != TLS_WANT_READ) ||
		    s->u_rwant == TLS_WANT_WRITE || s->u_wwant == TLS_WANT_WRITE);
	}
}

static void session_free(struct session *s);
static void client_read(struct session *s);
static void upstream_read(struct session *s);

/*
 * TLS can hold decrypted bytes the socket will never signal again, so they
 * are taken here whenever there is room for them.
 */
static bool drain_tls_pending(struct session *s)
{
	bool progress = false;

	if (s->cssl && s->state != ST_TLS && SSL_has_pending(s->cssl) &&
	    buf_len(&s->cin) < BUF_SIZE && !s->starttls_pending && !s->client_eof) {
		size_t before = buf_len(&s->cin);
		client_read(s);
		progress = buf_len(&s->cin) != before || s->client_eof;
	}
	if (s->ussl && s->up != UP_TLS && SSL_has_pending(s->ussl) && buf_len(&s->uin) < BUF_SIZE) {
		size_t before = buf_len(&s->uin);
		unsigned gen = s->up_gen;
		upstream_read(s);
		progress |= buf_len(&s->uin) != before || gen != s->up_gen;
	}
	return progress;
}

void sess_pump(struct session *s)
{
	bool progress = true;

	for (int i = 0; i < PUMP_ROUNDS_MAX && progress && !s->dead; i++) {
		progress = sess_process_upstream(s);
		progress |= process_client(s);
		progress |= flush_client(s);
		progress |= flush_upstream(s);
		if (s->starttls_pending && s->qlen == 0 && buf_len(&s->cout) == 0 && !s->dead &&
		    s->state != ST_CLOSING) {
			client_tls_begin(s);
			progress = true;
		}
		progress |= drain_tls_pending(s);
	}
	/*
	 * A client that sent its last byte is done once nothing it asked for
	 * is outstanding and nothing it sent still waits for the MTA to take
	 * it (a body held back by a slow MTA may still hold the final dot).
	 * A message it left unfinished dies with the upstream connection,
	 * never with a final dot.
	 */
	if (s->client_eof && !progress && s->qlen == 0 && buf_len(&s->cout) == 0 &&
	    buf_len(&s->uout) == 0 && (s->up == UP_READY || s->up == UP_NONE))
		s->dead = true;
	if (s->dead || (s->state == ST_CLOSING && buf_len(&s->cout) == 0)) {
		session_free(s);
		return;
	}
	update_watchers(s);
	/* Stopped by the round limit with work left: come back for it soon,
	 * after other sessions had their turn.  (Stopping a watcher clears a
	 * fed event, so session_free() cannot leave one behind.) */
	if (progress)
		ev_feed_event(s->loop, &s->cwr, EV_WRITE);
}

/*
 * A PROXY header is peeked at and then taken up to its last byte, never
 * past it: behind it may come a TLS ClientHello, which is OpenSSL's to read
 * from the socket.  Bytes of a header still incomplete are taken (they can
 * only be header), so level-triggered readiness does not spin.
 */
static void proxy_header_read(struct session *s)
{
	long room = buf_prepare(&s->cin);
	if (room < 0 || buf_len(&s->cin) >= PROXYPROTO_V2_MAX) {
		s->dead = true;
		return;
	}
	size_t cap = PROXYPROTO_V2_MAX - buf_len(&s->cin);
	if ((size_t)room < cap)
		cap = (size_t)room;
	ssize_t n = recv(s->cfd, buf_tail(&s->cin), cap, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		s->client_eof = true;
		return;
	}
	struct proxyproto_result r;
	size_t used, held = buf_len(&s->cin);
	size_t take = (size_t)n;
	if (proxyproto_parse(buf_head(&s->cin), held + (size_t)n, &r, &used) == PROXYPROTO_OK)
		take = used - held;
	ssize_t got = recv(s->cfd, buf_tail(&s->cin), take, 0);
	if (got != (ssize_t)take) {
		s->dead = true;
		return;
	}
	buf_commit(&s->cin, take);
}

static void client_read(struct session *s)
{
	if (s->state == ST_PROXYHDR) {
		proxy_header_read(s);
		return;
	}
	if (!read_into(s->cfd, s->cssl, &s->cin, &s->c_rwant)) {
		/*
		 * The client has stopped sending (it may still read: a script that
		 * pipelines everything and half-closes).  What it sent is still
		 * served; see the end of sess_pump().
		 */
		s->client_eof = true;
	} else if (s->state == ST_COMMAND || s->state == ST_AUTH || s->state == ST_DATA) {
		sess_client_timer_again(s);
	}
}

static void upstream_read(struct session *s)
{
	errno = 0;
	if (read_into(s->ufd, s->ussl, &s->uin, &s->u_rwant))
		return;
	if (s->up == UP_BANNER) {
		sess_upstream_failed(s, errno ? strerror(errno) : "closed before the banner");
	} else if (upstream_preparing(s)) {
		sess_upstream_failed(s, errno ? strerror(errno) : "closed during the set-up");
	} else if (s->state != ST_CLOSING) {
		sess_process_upstream(s);   /* relay what it said before it went */
		log_event(s->id, "upstream_closed", NULL);
		sess_upstream_error(s);
		sess_end(s, "421 4.4.2 Upstream connection lost");
	}
}

static void on_client_read(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;
	(void)loop;
	(void)revents;

	if (s->state == ST_TLS)
		client_tls_step(s);
	else if (s->c_wwant == TLS_WANT_READ && s->c_rwant != TLS_WANT_READ && buf_len(&s->cout))
		;   /* the write that waited for this goes out in the pump */
	else
		client_read(s);
	sess_pump(s);
}

static void on_client_write(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;
	(void)loop;
	(void)revents;

	if (s->state == ST_TLS)
		client_tls_step(s);
	else if (s->c_rwant == TLS_WANT_WRITE)
		client_read(s);
	sess_pump(s);
}

static void on_upstream_read(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;
	(void)loop;
	(void)revents;

	if (s->up == UP_TLS)
		sess_upstream_tls_step(s);
	else if (!(s->u_wwant == TLS_WANT_READ && s->u_rwant != TLS_WANT_READ && buf_len(&s->uout)))
		upstream_read(s);
	sess_pump(s);
}

static void on_upstream_write(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;
	(void)loop;
	(void)revents;

	if (s->up == UP_TLS)
		sess_upstream_tls_step(s);
	else if (s->u_rwant == TLS_WANT_WRITE)
		upstream_read(s);
	sess_pump(s);
}

static void upstream_timed_out(struct session *s)
{
	log_event(s->id, "upstream_timeout", NULL);
	sess_upstream_error(s);
	sess_end(s, "421 4.4.2 Upstream timeout");   /* cuts a body without its dot */
}

static void on_client_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = w->data;
	(void)loop;
	(void)revents;

	switch (s->state) {
	case ST_PREGREET:
		sess_set_state(s, ST_GREETING);
		sess_upstream_try(s);
		break;
	case ST_COMMAND:
	case ST_AUTH:
		if ((s->q_upstream > 0 || s->up != UP_READY) && !client_backlogged(s)) {
			/* Waiting for the MTA is not the client's idleness. */
			sess_client_timer_again(s);
			break;
		}
		/* fall through */
	case ST_DATA:
	case ST_PROXYHDR:
		if (s->state == ST_DATA && s->ufd >= 0 && buf_len(&s->uout) > 0) {
			/* The body stood still because the MTA took none of it:
			 * its stall, not the client's, and the log says so. */
			upstream_timed_out(s);
			break;
		}
		log_event(s->id, "timeout", (struct log_field[]){ F("state", state_names[s->state]), FEND });
		sess_end(s, "421 4.4.2 Timeout exceeded");
		break;
	case ST_TLS:
		/* Mid-handshake there is no channel for a 421: just close. */
		log_event(s->id, "timeout", (struct log_field[]){ F("state", state_names[s->state]), FEND });
		s->dead = true;
		break;
	case ST_CLOSING:
		s->dead = true;
		break;
	default:
		break;
	}
	sess_pump(s);
}

static void on_upstream_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = w->data;
	(void)loop;
	(void)revents;

	switch (s->up) {
	case UP_BANNER:
		sess_upstream_failed(s, "timeout waiting for the connect and banner");
		break;
	case UP_NONE:
		break;
	default:
		if (client_backlogged(s)) {
			/* The reply may be in the socket, unread because of the
			 * client: the client's timer judges this wait. */
			ev_timer_again(s->loop, &s->utimer);
			break;
		}
		if (upstream_preparing(s)) {
			if (s->lis->upstream->starttls && s->up != UP_XCLIENT)
				sess_upstream_tls_failed(s, "timeout during STARTTLS");
			else
				sess_upstream_failed(s, "timeout during the set-up");
			break;
		}
		upstream_timed_out(s);
		break;
	}
	sess_pump(s);
}

static void client_ready(struct session *s)
{
	struct policy_facts f;
	struct verdict v;

	sess_fill_facts(s, &f);
	policy_check(s->cfg, STAGE_CONNECT, &f, clock_now_ms(), &v);
	if (v.kind != VERDICT_PASS) {
		v.kind = VERDICT_CLOSE;   /* at connect every refusal closes */
		sess_refuse(s, STAGE_CONNECT, &v, NULL, 0);
		return;
	}
	if (s->lis->pregreet_ms) {
		sess_set_state(s, ST_PREGREET);
		/* The timer may still run from the PROXY header or the handshake. */
		ev_timer_stop(s->loop, &s->ctimer);
		ev_timer_set(&s->ctimer, (double)s->lis->pregreet_ms / 1000.0, 0.);
		ev_timer_start(s->loop, &s->ctimer);
		return;
	}
	sess_set_state(s, ST_GREETING);
	sess_upstream_try(s);
}

void session_start(struct ev_loop *loop, int fd, const struct sockaddr *peer,
    socklen_t peerlen, struct config *cfg, const struct config_listen *lis)
{
	static const char busy[] = "421 4.3.2 Too many sessions, try again later\r\n";

	if (nsessions >= cfg->max_sessions) {
		char ip[INET6_ADDRSTRLEN];
		format_addr(peer, ip, sizeof ip);
		(void)!write(fd, busy, sizeof busy - 1);
		close(fd);
		log_event(NULL, "refuse_max_sessions", (struct log_field[]){ F("ip", ip),
		    F("listener", lis->addr.text), FEND });
		metrics_inc(METRIC_REFUSALS_TOTAL, "stage", "connect", "name", "max_sessions",
		    "action", "close", NULL);
		return;
	}
	struct session *s = calloc(1, sizeof *s);
	if (!s) {
		close(fd);
		return;
	}
	metrics_inc(METRIC_SESSIONS_TOTAL, "listener", lis->addr.text, NULL);
	s->next = all;
	if (all)
		all->prev = s;
	all = s;
	nsessions++;
	if (!next_id) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		next_id = ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 40);
	}
	snprintf(s->id, sizeof s->id, "%010llx", (unsigned long long)(next_id++ & 0xffffffffffULL));
	s->loop = loop;
	s->cfg = config_ref(cfg);
	s->lis = lis;
	s->cfd = fd;
	s->ufd = -1;
	s->started = now_s();
	memcpy(&s->peer, peer, peerlen);
	s->peerlen = peerlen;
	sess_fold_mapped(&s->peer, &s->peerlen);
	format_addr((const struct sockaddr *)&s->peer, s->ip, sizeof s->ip);
	/* Only a PROXY header toward the MTA needs the address the client reached. */
	enum forward_mode fw = lis->upstream->forward;
	if (fw == FORWARD_PROXY_V1 || fw == FORWARD_PROXY_V2) {
		s->locallen = sizeof s->local;
		if (getsockname(fd, (struct sockaddr *)&s->local, &s->locallen) < 0)
			s->locallen = 0;
		sess_fold_mapped(&s->local, &s->locallen);
	}

	ev_io_init(&s->crd, on_client_read, fd, EV_READ);
	ev_io_init(&s->cwr, on_client_write, fd, EV_WRITE);
	ev_io_init(&s->urd, on_upstream_read, -1, EV_READ);
	ev_io_init(&s->uwr, on_upstream_write, -1, EV_WRITE);
	ev_init(&s->ctimer, on_client_timer);
	ev_init(&s->utimer, on_upstream_timer);
	s->crd.data = s->cwr.data = s->urd.data = s->uwr.data = s;
	s->ctimer.data = s->utimer.data = s;

	if (lis->proxy_protocol) {
		sess_set_state(s, ST_PROXYHDR);
		sess_client_timer_again(s);
	} else {
		client_accepted(s);
	}
	sess_pump(s);
}

static void session_free(struct session *s)
{
	char dur[32], msgs[16], refused[16];

	sess_upstream_close(s);
	ev_io_stop(s->loop, &s->crd);
	ev_io_stop(s->loop, &s->cwr);
	ev_timer_stop(s->loop, &s->ctimer);
	/* close_notify, so the client can tell our close from a truncation. */
	if (s->cssl && s->tls)
		SSL_shutdown(s->cssl);
	close(s->cfd);
	snprintf(dur, sizeof dur, "%.2fs", now_s() - s->started);
	snprintf(msgs, sizeof msgs, "%u", s->messages);
	snprintf(refused, sizeof refused, "%u", s->refused);
	struct log_field f[] = { F("duration", dur), FNUM("messages", msgs), FNUM("refused", refused), FEND };
	log_event(s->id, "close", f);
	buf_release(&s->cin);
	buf_release(&s->cout);
	buf_release(&s->lq);
	free(s->helo);
	free(s->helo_pending);
	if (s->cssl)
		tls_free(s->cssl);
	free(s->up_banner);
	free(s->user);
	free(s->auth);
	free(s->sender);
	free(s->msg_sender);
	config_unref(s->cfg);
	if (s->prev)
		s->prev->next = s->next;
	else
		all = s->next;
	if (s->next)
		s->next->prev = s->prev;
	nsessions--;
	free(s);
}

unsigned session_count(void)
{
	return nsessions;
}

void session_close_all(bool force)
{
	struct session *s = all, *next;

	for (; s; s = next) {
		next = s->next;
		sess_end(s, "421 4.3.2 Service shutting down");
		if (force)
			s->dead = true;
		sess_pump(s);   /* may free s */
	}
}
