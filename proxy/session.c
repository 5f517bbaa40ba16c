/*
 * session.c - one SMTP session: the client, its upstream, and the state
 * machine between them (SPEC §3).
 *
 * Shape: every libev callback reads what it can into a buffer and then
 * calls pump(), which parses client lines and upstream replies, answers in
 * command order through the pending queue, writes, and frees the session
 * when it is over.  Nothing below pump() frees the session: handlers only
 * change state, so a handler can never leave a caller holding a dangling
 * pointer.
 *
 * Pipelining (RFC 2920): each command forwarded or answered locally gets an
 * entry in the pending queue; replies leave in queue order, so a local
 * refusal in the middle of a batch is answered in its place.
 */
#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "buf.h"
#include "clock.h"
#include "data.h"
#include "log.h"
#include "policy.h"
#include "proxyproto.h"
#include "smtp.h"

#define COUT_HIGH (BUF_SIZE / 4)         /* stop producing replies past this */
#define UOUT_ROOM_MIN (SMTP_LINE_MAX_PARAMS + 2)
#define DATA_ROOM_MIN 1024               /* less than this free: wait for the MTA */
#define PUMP_ROUNDS_MAX 64               /* bound on one pump; watchers resume the rest */
#define SESSION_ID_LEN 16
#define REPLY_LINE_MAX 512

/* What the client side is doing. */
enum state {
	ST_PROXYHDR,    /* reading the load balancer's PROXY header */
	ST_PREGREET,    /* holding the banner; a client that talks first is refused */
	ST_GREETING,    /* waiting for the upstream to be ready to send the banner */
	ST_COMMAND,     /* reading commands */
	ST_AUTH,        /* relaying the client's answers to a 334 challenge */
	ST_DATA,        /* streaming a message body */
	ST_CLOSING,     /* flushing the last replies, then free */
};

static const char *const state_names[] = {
	"proxyhdr", "pregreet", "greeting", "command", "auth", "data", "closing",
};

/* What the upstream link is doing. */
enum up_state {
	UP_NONE,        /* no connection */
	UP_CONNECTING,  /* non-blocking connect under way */
	UP_BANNER,      /* waiting for the 220 */
	UP_XCLIENT,     /* waiting for the 220 that follows XCLIENT */
	UP_REPLAY,      /* after a reconnect: waiting for the replayed EHLO's reply */
	UP_READY,
};

/* What a pending reply is for. */
enum expect {
	EX_LOCAL,       /* answered by us; the text waits in s->lq */
	EX_GENERIC, EX_EHLO, EX_MAIL, EX_RCPT, EX_DATA, EX_DOT, EX_AUTH, EX_QUIT, EX_RSET,
};

struct pending {
	uint8_t expect;
	uint16_t len;                    /* EX_LOCAL: bytes of text in s->lq */
};

enum txn { TXN_NONE, TXN_OPEN, TXN_REFUSED };
enum abort_reason { ABORT_NONE, ABORT_SIZE, ABORT_BARE };

struct session {
	struct ev_loop *loop;
	struct config *cfg;
	const struct config_listen *lis;
	char id[SESSION_ID_LEN + 1];
	enum state state;
	enum up_state up;
	unsigned server;                 /* index into the upstream's servers */
	unsigned up_gen;                 /* bumped whenever the upstream is closed */

	int cfd, ufd;
	ev_io crd, cwr, urd, uwr;
	ev_timer ctimer;                 /* client idle, pregreet, close linger */
	ev_timer utimer;                 /* upstream connect, banner, replies */
	struct buf cin, cout, uin, uout, lq;

	struct smtp_lineparser lp;
	struct smtp_replyparser rp;
	struct data_state ds;

	struct pending q[SESSION_PENDING_MAX];
	unsigned qhead, qlen;
	unsigned q_upstream;             /* entries the MTA still has to answer */
	bool barrier;                    /* DATA/AUTH/QUIT outstanding: read no further */
	bool up_pipelining;
	bool replay;                     /* reconnecting after an aborted message */
	bool dead;                       /* free at the end of this pump */

	struct sockaddr_storage peer, local;
	socklen_t peerlen, locallen;
	char ip[INET6_ADDRSTRLEN];
	char *helo;
	bool helo_ehlo;
	char *user;                      /* set when the MTA said 235 */
	struct auth_state *auth;         /* during an AUTH exchange only */
	char *sender;
	enum txn txn;
	unsigned rcpts, rcpts_refused;
	enum abort_reason abort;
	bool aborted_up;                 /* the upstream was cut for this abort */

	double started;
	unsigned messages, refused;
	struct session *prev, *next;
};

static unsigned nsessions;
static uint64_t next_id;
static struct session *all;           /* every live session, for session_close_all() */

static void pump(struct session *s);
static void upstream_try(struct session *s);
static void set_state(struct session *s, enum state st);
static void auth_done(struct session *s, int code);

/* ---- small helpers ------------------------------------------------------ */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *strndup_bounded(const char *p, size_t n, size_t max)
{
	return strndup(p, n > max ? max : n);
}

static void set_str(char **dst, const char *p, size_t n, size_t max)
{
	free(*dst);
	*dst = strndup_bounded(p, n, max);
}

#define F(k, v) { (k), (v), (size_t)-1 }
#define FN(k, v, n) { (k), (v), (n) }
#define FEND { NULL, NULL, 0 }

static void set_state(struct session *s, enum state st)
{
	if (getenv("SMTPGATE_DEBUG")) {
		struct log_field f[] = { F("from", state_names[s->state]), F("to", state_names[st]), FEND };
		log_event(s->id, "state", f);
	}
	s->state = st;
}

static void log_reject(struct session *s, enum policy_stage stage, const char *name,
    const char *reply, const char *rcpt, size_t rcptlen)
{
	struct log_field f[] = {
		F("stage", policy_stage_name(stage)), F("name", name), F("reply", reply),
		F("sender", s->sender), FN("rcpt", rcpt, rcptlen), F("helo", s->helo), FEND
	};
	log_event(s->id, "reject", f);
	s->refused++;
}

static void fill_facts(struct session *s, struct policy_facts *f)
{
	memset(f, 0, sizeof *f);
	f->addr = (const struct sockaddr *)&s->peer;
	f->ip = s->ip;
	f->port = ntohs(((const struct sockaddr_in *)&s->lis->addr.ss)->sin_port);
	f->helo = s->helo;
	f->user = s->user;
	f->sender = s->sender;
	f->rcpts = s->rcpts;
}

/* ---- the pending queue and replies ---------------------------------------- */

static struct pending *q_head(struct session *s)
{
	return s->qlen ? &s->q[s->qhead] : NULL;
}

static void q_pop(struct session *s)
{
	if (s->q[s->qhead].expect != EX_LOCAL)
		s->q_upstream--;
	s->qhead = (s->qhead + 1) % SESSION_PENDING_MAX;
	s->qlen--;
}

static void q_push(struct session *s, enum expect ex, size_t len)
{
	struct pending *p = &s->q[(s->qhead + s->qlen) % SESSION_PENDING_MAX];
	p->expect = (uint8_t)ex;
	p->len = (uint16_t)len;
	s->qlen++;
	if (ex != EX_LOCAL)
		s->q_upstream++;
}

static void client_out(struct session *s, const char *p, size_t n)
{
	/* Callers keep cout under COUT_HIGH before producing, so this fits. */
	if (buf_append(&s->cout, p, n) < 0)
		s->dead = true;
}

/* Move local replies at the head of the queue to the client. */
static void flush_local(struct session *s)
{
	struct pending *p;

	while ((p = q_head(s)) && p->expect == EX_LOCAL) {
		client_out(s, buf_head(&s->lq), p->len);
		buf_drop(&s->lq, p->len);
		q_pop(s);
	}
}

/* Answer the current command ourselves, in its place in the queue. */
static void reply_local(struct session *s, const char *text)
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
		client_out(s, line, (size_t)n);
		return;
	}
	if (buf_append(&s->lq, line, (size_t)n) < 0) {
		s->dead = true;
		return;
	}
	q_push(s, EX_LOCAL, (size_t)n);
}

static void upstream_out(struct session *s, const char *p, size_t n)
{
	if (buf_append(&s->uout, p, n) < 0)
		s->dead = true;
}

static void upstream_close(struct session *s)
{
	if (s->ufd < 0)
		return;
	ev_io_stop(s->loop, &s->urd);
	ev_io_stop(s->loop, &s->uwr);
	ev_timer_stop(s->loop, &s->utimer);
	close(s->ufd);
	s->ufd = -1;
	s->up = UP_NONE;
	s->up_gen++;
	buf_release(&s->uin);
	buf_release(&s->uout);
	memset(&s->rp, 0, sizeof s->rp);
	/* Whatever the MTA still owed us is not coming. */
	while (s->q_upstream) {
		struct pending *p = q_head(s);
		if (p->expect == EX_LOCAL) {
			flush_local(s);
			continue;
		}
		q_pop(s);
	}
}

/*
 * End the session: earlier local answers, then REPLY (may be NULL), then
 * close once the client has it.  An open DATA upstream is cut without the
 * final dot, so the MTA never gets a message we did not see end.
 */
static void session_end(struct session *s, const char *reply)
{
	if (s->state == ST_CLOSING)
		return;
	upstream_close(s);
	flush_local(s);
	if (reply) {
		char line[REPLY_LINE_MAX + 2];
		int n = snprintf(line, sizeof line, "%s\r\n", reply);
		if (n > 0 && (size_t)n < sizeof line)
			client_out(s, line, (size_t)n);
	}
	set_state(s, ST_CLOSING);
	ev_timer_stop(s->loop, &s->ctimer);
	ev_timer_set(&s->ctimer, SESSION_CLOSE_LINGER_MS / 1000.0, 0.);
	ev_timer_start(s->loop, &s->ctimer);
}

static void client_timer_again(struct session *s)
{
	uint64_t ms = s->state == ST_DATA ? s->cfg->timeout_data_ms : s->cfg->timeout_command_ms;
	s->ctimer.repeat = (double)ms / 1000.0;
	ev_timer_again(s->loop, &s->ctimer);
}

static void upstream_timer_again(struct session *s, uint64_t ms)
{
	s->utimer.repeat = (double)ms / 1000.0;
	ev_timer_again(s->loop, &s->utimer);
}

/* ---- upstream connection -------------------------------------------------- */

static void format_addr(const struct sockaddr *sa, char *out, size_t outsz)
{
	const void *a = sa->sa_family == AF_INET6
	    ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
	    : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
	if (!inet_ntop(sa->sa_family, a, out, (socklen_t)outsz))
		snprintf(out, outsz, "unknown");
}

static unsigned addr_port(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
	    : ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

/* An IPv4 client seen through an IPv6 socket is an IPv4 client. */
static void fold_mapped(struct sockaddr_storage *ss, socklen_t *len)
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

static int set_nonblock_nodelay(int fd)
{
	int one = 1;
	/* Replies are small and latency-bound: never wait for delayed ACKs. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
		return -1;
	return 0;
}

static void upstream_failed(struct session *s, const char *why)
{
	const struct config_upstream *u = s->lis->upstream;
	struct log_field f[] = { F("server", u->servers[s->server].text), F("error", why), FEND };

	log_event(s->id, "upstream_error", f);
	upstream_close(s);
	s->server++;
	upstream_try(s);
}

static void upstream_try(struct session *s)
{
	const struct config_upstream *u = s->lis->upstream;

	for (; s->server < u->nservers; s->server++) {
		const struct config_addr *a = &u->servers[s->server];
		int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			struct log_field f[] = { F("server", a->text), F("error", strerror(errno)), FEND };
			log_event(s->id, "upstream_error", f);
			continue;
		}
		set_nonblock_nodelay(fd);
		if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS) {
			struct log_field f[] = { F("server", a->text), F("error", strerror(errno)), FEND };
			log_event(s->id, "upstream_error", f);
			close(fd);
			continue;
		}
		s->ufd = fd;
		s->up = UP_CONNECTING;
		ev_io_set(&s->urd, fd, EV_READ);
		ev_io_set(&s->uwr, fd, EV_WRITE);
		upstream_timer_again(s, u->connect_timeout_ms);
		return;
	}
	log_event(s->id, "upstream_unavailable", NULL);
	session_end(s, "421 4.3.2 Service not available");
}

/* The TCP connection is up: say who the client is, then wait for the 220. */
static void upstream_connected(struct session *s)
{
	const struct config_upstream *u = s->lis->upstream;
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(s->ufd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		upstream_failed(s, strerror(err));
		return;
	}
	s->up = UP_BANNER;
	if (u->forward == FORWARD_PROXY_V1 || u->forward == FORWARD_PROXY_V2) {
		char hdr[PROXYPROTO_V2_MAX];
		long n = proxyproto_build(u->forward == FORWARD_PROXY_V1 ? 1 : 2,
		    (const struct sockaddr *)&s->peer, (const struct sockaddr *)&s->local,
		    hdr, sizeof hdr);
		if (n < 0) {
			upstream_failed(s, "cannot build PROXY header");
			return;
		}
		upstream_out(s, hdr, (size_t)n);
	}
}

static void send_xclient(struct session *s)
{
	char line[256];
	const char *v6 = s->peer.ss_family == AF_INET6 ? "IPV6:" : "";
	int n = snprintf(line, sizeof line, "XCLIENT NAME=[UNAVAILABLE] ADDR=%s%s PORT=%u\r\n",
	    v6, s->ip, addr_port((const struct sockaddr *)&s->peer));
	upstream_out(s, line, (size_t)n);
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
		    s->helo ? s->helo : "[UNAVAILABLE]");
		upstream_out(s, line, (size_t)n);
		s->up = UP_REPLAY;
		upstream_timer_again(s, s->cfg->timeout_command_ms);
		return;
	}
	if (s->state != ST_GREETING)
		return;
	if (s->lis->banner) {
		char line[REPLY_LINE_MAX + 2];
		int n = snprintf(line, sizeof line, "220 %s\r\n", s->lis->banner);
		if (n > 0 && (size_t)n < sizeof line)
			client_out(s, line, (size_t)n);
	} else {
		client_out(s, banner, len);
	}
	set_state(s, ST_COMMAND);
	client_timer_again(s);
}

/* ---- replies from the MTA ------------------------------------------------- */

static void relay_ehlo(struct session *s, const char *r, size_t n)
{
	static char out[SMTP_REPLY_MAX + 256];
	struct smtp_ehlo_opts o = {
		.starttls = false,
		.hide_auth = false,
		.max_size = s->cfg->max_message_size,
	};
	struct smtp_ehlo_info info;
	long len = smtp_ehlo_rewrite(r, n, &o, out, sizeof out, &info);

	if (len < 0) {
		client_out(s, r, n);
		return;
	}
	s->up_pipelining = info.pipelining;
	client_out(s, out, (size_t)len);
}

static void log_message(struct session *s, const char *r, size_t n)
{
	char size[24], rcpts[16];
	size_t first = n;
	const char *eol = memchr(r, '\n', n);

	if (eol)
		first = (size_t)(eol - r);
	while (first && (r[first - 1] == '\r' || r[first - 1] == '\n'))
		first--;
	snprintf(size, sizeof size, "%llu", (unsigned long long)s->ds.bytes);
	snprintf(rcpts, sizeof rcpts, "%u", s->rcpts);
	struct log_field f[] = { FN("reply", r, first), F("size", size), F("rcpts", rcpts),
		F("sender", s->sender), FEND };
	log_event(s->id, "message", f);
}

static void txn_reset(struct session *s)
{
	s->txn = TXN_NONE;
	s->rcpts = s->rcpts_refused = 0;
	free(s->sender);
	s->sender = NULL;
}

/* A reply nobody asked for: the MTA is going away (421) or confused. */
static void unsolicited_reply(struct session *s, const char *r, size_t n, int code)
{
	struct log_field f[] = { FN("reply", r, n > 200 ? 200 : n), FEND };
	log_event(s->id, "upstream_unsolicited", f);
	if (code == 421) {
		flush_local(s);
		client_out(s, r, n);
		upstream_close(s);
		session_end(s, NULL);
	}
}

static void upstream_reply(struct session *s, const char *r, size_t n, int code)
{
	switch (s->up) {
	case UP_BANNER:
		if (code != 220) {
			/* The MTA refuses the session itself: its word goes to the client. */
			if (s->state == ST_GREETING) {
				client_out(s, r, n);
				session_end(s, NULL);
			} else {
				session_end(s, "421 4.3.2 Service not available");
			}
			return;
		}
		if (s->lis->upstream->forward == FORWARD_XCLIENT)
			send_xclient(s);
		else
			upstream_ready(s, r, n);
		return;
	case UP_XCLIENT:
		if (code != 220) {
			struct log_field f[] = { FN("reply", r, n), FEND };
			log_event(s->id, "xclient_refused", f);
			session_end(s, "421 4.3.2 Service not available");
			return;
		}
		upstream_ready(s, r, n);
		return;
	case UP_REPLAY:
		if (code != 250) {
			session_end(s, "421 4.3.2 Service not available");
			return;
		}
		if (s->helo_ehlo) {
			static char out[SMTP_REPLY_MAX + 256];
			struct smtp_ehlo_opts o = { .max_size = 0 };
			struct smtp_ehlo_info info;
			if (smtp_ehlo_rewrite(r, n, &o, out, sizeof out, &info) >= 0)
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

	flush_local(s);
	struct pending *p = q_head(s);
	if (!p) {
		unsolicited_reply(s, r, n, code);
		return;
	}
	enum expect ex = (enum expect)p->expect;
	q_pop(s);

	switch (ex) {
	case EX_EHLO:
		if (code == 250)
			relay_ehlo(s, r, n);
		else
			client_out(s, r, n);
		break;
	case EX_DATA:
		client_out(s, r, n);
		s->barrier = false;
		if (code == 354) {
			data_begin(&s->ds, s->cfg->bare_newline);
			set_state(s, ST_DATA);
			client_timer_again(s);
		}
		break;
	case EX_DOT:
		client_out(s, r, n);
		log_message(s, r, n);
		if (code >= 200 && code < 300)
			s->messages++;
		txn_reset(s);
		break;
	case EX_AUTH:
		client_out(s, r, n);
		s->barrier = false;
		if (code == 334) {
			set_state(s, ST_AUTH);
		} else {
			set_state(s, ST_COMMAND);
			auth_done(s, code);
		}
		break;
	case EX_QUIT:
		client_out(s, r, n);
		session_end(s, NULL);
		return;
	default:
		client_out(s, r, n);
		break;
	}
	flush_local(s);
	if (s->q_upstream) {
		p = q_head(s);
		upstream_timer_again(s, p && p->expect == EX_DOT ? s->cfg->timeout_data_ms
		    : s->cfg->timeout_command_ms);
	} else {
		ev_timer_stop(s->loop, &s->utimer);
	}
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
		F("result", code == 235 ? "ok" : "failed"), F("code", c), FEND };
	log_event(s->id, "auth", f);
	explicit_bzero(s->auth, sizeof *s->auth);
	free(s->auth);
	s->auth = NULL;
}

static bool process_upstream(struct session *s)
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
			session_end(s, "421 4.4.2 Upstream protocol error");
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

/* ---- client commands ------------------------------------------------------ */

static void forward(struct session *s, const char *line, size_t len, enum expect ex)
{
	upstream_out(s, line, len);
	upstream_out(s, "\r\n", 2);
	q_push(s, ex, 0);
	if (s->q_upstream == 1)
		upstream_timer_again(s, s->cfg->timeout_command_ms);
}

/* Refuse a command ourselves, per a verdict. */
static void refuse(struct session *s, enum policy_stage stage, const struct verdict *v,
    const char *rcpt, size_t rcptlen)
{
	log_reject(s, stage, v->name, v->reply, rcpt, rcptlen);
	if (v->kind == VERDICT_CLOSE) {
		session_end(s, v->reply);
		return;
	}
	reply_local(s, v->reply);
}

static void cmd_helo(struct session *s, const char *line, size_t len, const struct smtp_cmd *c)
{
	set_str(&s->helo, c->arg, c->arglen, SESSION_HELO_MAX);
	s->helo_ehlo = c->verb == SMTP_VERB_EHLO;
	txn_reset(s);

	struct policy_facts f;
	struct verdict v;
	fill_facts(s, &f);
	policy_check(s->cfg, STAGE_HELO, &f, clock_now_ms(), &v);
	if (v.kind != VERDICT_PASS) {
		refuse(s, STAGE_HELO, &v, NULL, 0);
		return;
	}
	forward(s, line, len, s->helo_ehlo ? EX_EHLO : EX_GENERIC);
}

static void cmd_mail(struct session *s, const char *line, size_t len, const struct smtp_cmd *c)
{
	const char *val;
	size_t vallen;
	uint64_t size = 0;

	if (s->txn == TXN_OPEN) {
		forward(s, line, len, EX_MAIL);   /* the MTA says "nested MAIL" */
		return;
	}
	txn_reset(s);
	set_str(&s->sender, c->path, c->pathlen, SMTP_PATH_MAX);
	if (c->params && smtp_param_find(c->params, c->paramslen, "SIZE", &val, &vallen)) {
		for (size_t i = 0; i < vallen && val[i] >= '0' && val[i] <= '9'; i++)
			size = size > UINT64_MAX / 10 - 10 ? UINT64_MAX : size * 10 + (uint64_t)(val[i] - '0');
	}

	struct policy_facts f;
	struct verdict v;
	fill_facts(s, &f);
	f.size = size;
	policy_check(s->cfg, STAGE_MAIL, &f, clock_now_ms(), &v);
	if (v.kind != VERDICT_PASS) {
		s->txn = TXN_REFUSED;
		refuse(s, STAGE_MAIL, &v, NULL, 0);
		return;
	}
	s->txn = TXN_OPEN;
	forward(s, line, len, EX_MAIL);
}

static void cmd_rcpt(struct session *s, const char *line, size_t len, const struct smtp_cmd *c)
{
	if (s->txn == TXN_REFUSED) {
		reply_local(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->txn == TXN_NONE) {
		forward(s, line, len, EX_RCPT);   /* the MTA says 503 */
		return;
	}
	char rcpt[SMTP_PATH_MAX + 1];
	size_t rl = c->pathlen > SMTP_PATH_MAX ? SMTP_PATH_MAX : c->pathlen;
	memcpy(rcpt, c->path, rl);
	rcpt[rl] = '\0';

	struct policy_facts f;
	struct verdict v;
	fill_facts(s, &f);
	f.rcpt = rcpt;
	policy_check(s->cfg, STAGE_RCPT, &f, clock_now_ms(), &v);
	if (v.kind != VERDICT_PASS) {
		s->rcpts_refused++;
		refuse(s, STAGE_RCPT, &v, rcpt, rl);
		return;
	}
	s->rcpts++;
	forward(s, line, len, EX_RCPT);
}

static void cmd_data(struct session *s, const char *line, size_t len)
{
	if (s->txn == TXN_REFUSED) {
		reply_local(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->txn == TXN_OPEN && s->rcpts == 0 && s->rcpts_refused > 0) {
		/* Every recipient was refused here: the MTA must not see DATA. */
		reply_local(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	forward(s, line, len, EX_DATA);
	s->barrier = true;
}

static void cmd_auth(struct session *s, const char *line, size_t len, const struct smtp_cmd *c)
{
	if (!s->auth)
		s->auth = malloc(sizeof *s->auth);
	if (!s->auth) {
		s->dead = true;
		return;
	}
	auth_begin(s->auth, c->arg, c->arglen);
	forward(s, line, len, EX_AUTH);
	s->barrier = true;
}

/* A line whose verb smtpgate must answer itself, never the MTA. */
static bool is_reserved_verb(const char *line, size_t len)
{
	static const char *const verbs[] = { "XCLIENT", "XFORWARD", NULL };
	for (const char *const *v = verbs; *v; v++) {
		size_t vl = strlen(*v);
		if (len >= vl && strncasecmp(line, *v, vl) == 0 && (len == vl || line[vl] == ' '))
			return true;
	}
	return false;
}

static void client_line(struct session *s, const char *line, size_t len)
{
	struct smtp_cmd c;

	if (s->state == ST_AUTH) {
		/* An answer to a 334: passed as it is; we only learn the name. */
		if (s->auth)
			auth_response(s->auth, line, len);
		forward(s, line, len, EX_AUTH);
		s->barrier = true;
		return;
	}
	switch (smtp_cmd_parse(line, len, &c)) {
	case SMTP_CMD_TOO_LONG:
		reply_local(s, "500 5.5.2 Line too long");
		return;
	case SMTP_CMD_SYNTAX:
		if (c.verb == SMTP_VERB_MAIL)
			reply_local(s, "501 5.1.7 Bad sender address syntax");
		else if (c.verb == SMTP_VERB_RCPT)
			reply_local(s, "501 5.1.3 Bad recipient address syntax");
		else
			reply_local(s, "501 5.5.4 Syntax error in parameters or arguments");
		return;
	case SMTP_CMD_OK:
		break;
	}

	switch (c.verb) {
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
		cmd_helo(s, line, len, &c);
		break;
	case SMTP_VERB_MAIL:
		cmd_mail(s, line, len, &c);
		break;
	case SMTP_VERB_RCPT:
		cmd_rcpt(s, line, len, &c);
		break;
	case SMTP_VERB_DATA:
		cmd_data(s, line, len);
		break;
	case SMTP_VERB_RSET:
		txn_reset(s);
		forward(s, line, len, EX_RSET);
		break;
	case SMTP_VERB_QUIT:
		forward(s, line, len, EX_QUIT);
		s->barrier = true;
		break;
	case SMTP_VERB_AUTH:
		cmd_auth(s, line, len, &c);
		break;
	case SMTP_VERB_STARTTLS:
		reply_local(s, "502 5.5.1 STARTTLS not available");
		break;
	case SMTP_VERB_BDAT:
		/* CHUNKING is never advertised: its framing would hide the body's end. */
		reply_local(s, "502 5.5.1 Error: command not implemented");
		break;
	default:
		if (is_reserved_verb(line, len)) {
			reply_local(s, "502 5.5.1 Error: command not implemented");
			break;
		}
		forward(s, line, len, EX_GENERIC);
		break;
	}
}

/* ---- the message body ------------------------------------------------------ */

static void data_aborted(struct session *s)
{
	enum abort_reason why = s->abort;
	const char *reply = why == ABORT_SIZE
	    ? "552 5.3.4 Message size exceeds fixed maximum message size"
	    : "550 5.5.2 Message contains bare CR or LF; refused";
	struct verdict v = { .kind = VERDICT_REFUSE,
		.name = why == ABORT_SIZE ? "max_message_size" : "bare_newline" };

	snprintf(v.reply, sizeof v.reply, "%s", reply);
	s->abort = ABORT_NONE;
	refuse(s, STAGE_DATA, &v, NULL, 0);
	txn_reset(s);
	if (s->user) {
		/* The MTA's AUTH state went with the cut connection. */
		session_end(s, "421 4.7.0 Session reset after refused message; please reconnect");
		return;
	}
	s->replay = true;
	s->server = 0;
	upstream_try(s);
}

static void data_end(struct session *s)
{
	set_state(s, ST_COMMAND);
	client_timer_again(s);
	if (s->abort) {
		data_aborted(s);
		return;
	}
	q_push(s, EX_DOT, 0);
	upstream_timer_again(s, s->cfg->timeout_data_ms);
}

static bool process_data(struct session *s)
{
	static char discard[DATA_EXPANSION * BUF_SIZE + 8];
	bool progress = false;

	while (s->state == ST_DATA && buf_len(&s->cin) > 0) {
		char *out = discard;
		size_t room = sizeof discard;

		if (!s->abort) {
			long r = buf_prepare(&s->uout);
			if (r < 0) {
				s->dead = true;
				break;
			}
			if (r < DATA_ROOM_MIN)
				break;
			out = buf_tail(&s->uout);
			room = (size_t)r;
		}
		size_t n = (room - 5) / DATA_EXPANSION;
		if (n > buf_len(&s->cin))
			n = buf_len(&s->cin);
		size_t used, made;
		enum data_status st = data_feed(&s->ds, buf_head(&s->cin), n, out, room, &used, &made);
		buf_drop(&s->cin, used);
		progress = true;

		uint64_t max = s->cfg->max_message_size;
		if (!s->abort && max && s->ds.bytes > max)
			s->abort = ABORT_SIZE;
		if (!s->abort && st == DATA_END && s->ds.seen_bare &&
		    s->cfg->bare_newline == BARE_NEWLINE_REJECT)
			s->abort = ABORT_BARE;
		if (s->abort) {
			/* Cut the MTA off before it can see an end. */
			if (s->ufd >= 0)
				upstream_close(s);
		} else {
			buf_commit(&s->uout, made);
		}
		if (st == DATA_END)
			data_end(s);
	}
	return progress;
}

/* ---- client input ---------------------------------------------------------- */

static void client_ready(struct session *s);

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
		session_end(s, "421 4.7.0 Invalid PROXY protocol header");
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
		fold_mapped(&s->peer, &s->peerlen);
		format_addr((const struct sockaddr *)&s->peer, s->ip, sizeof s->ip);
	}
	client_ready(s);
	return true;
}

static bool process_client(struct session *s)
{
	bool progress = false;

	switch (s->state) {
	case ST_PROXYHDR:
		return buf_len(&s->cin) ? process_proxy_header(s) : false;
	case ST_PREGREET:
		if (buf_len(&s->cin) == 0)
			return false;
		{
			struct verdict v = { .kind = VERDICT_CLOSE, .name = "pregreet" };
			snprintf(v.reply, sizeof v.reply, "554 5.7.1 Protocol error: talked before greeting");
			buf_release(&s->cin);
			refuse(s, STAGE_CONNECT, &v, NULL, 0);
		}
		return true;
	case ST_DATA:
		return process_data(s);
	case ST_COMMAND:
	case ST_AUTH:
		break;
	default:
		return false;
	}

	while ((s->state == ST_COMMAND || s->state == ST_AUTH) && buf_len(&s->cin) > 0 &&
	    !s->barrier && !s->dead && s->up == UP_READY && s->qlen < SESSION_PENDING_MAX &&
	    buf_len(&s->cout) <= COUT_HIGH &&
	    (s->up_pipelining || s->q_upstream == 0)) {
		if (buf_prepare(&s->uout) < UOUT_ROOM_MIN)
			break;
		size_t linelen, used;
		enum smtp_line_status st = smtp_line_next(&s->lp, buf_head(&s->cin),
		    buf_len(&s->cin), &linelen, &used);
		switch (st) {
		case SMTP_LINE_AGAIN:
			if (used) {
				buf_drop(&s->cin, used);
				progress = true;
				continue;
			}
			return progress;
		case SMTP_LINE_TOO_LONG:
			reply_local(s, "500 5.5.2 Line too long");
			break;
		case SMTP_LINE_BAD:
			reply_local(s, "500 5.5.2 Syntax error: NUL, bare CR or bare LF in command");
			break;
		case SMTP_LINE_OK:
			client_line(s, buf_head(&s->cin), linelen);
			break;
		}
		buf_drop(&s->cin, used);
		progress = true;
		if (s->state == ST_DATA)
			return process_data(s) || progress;
	}
	if (buf_len(&s->uout) == 0)
		buf_release(&s->uout);
	return progress;
}

/* ---- I/O ---------------------------------------------------------------------- */

static void flush_client(struct session *s)
{
	while (buf_len(&s->cout) > 0) {
		ssize_t n = write(s->cfd, buf_head(&s->cout), buf_len(&s->cout));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				s->dead = true;
			return;
		}
		buf_drop(&s->cout, (size_t)n);
	}
}

static void flush_upstream(struct session *s)
{
	while (s->ufd >= 0 && s->up != UP_CONNECTING && buf_len(&s->uout) > 0) {
		ssize_t n = write(s->ufd, buf_head(&s->uout), buf_len(&s->uout));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN) {
				log_event(s->id, "upstream_write_error", NULL);
				session_end(s, "421 4.4.2 Upstream connection lost");
			}
			return;
		}
		buf_drop(&s->uout, (size_t)n);
	}
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
	bool reading = s->state == ST_PROXYHDR || s->state == ST_PREGREET ||
	    s->state == ST_COMMAND || s->state == ST_AUTH || s->state == ST_DATA;

	watch(s, &s->crd, reading && buf_len(&s->cin) < BUF_SIZE);
	watch(s, &s->cwr, buf_len(&s->cout) > 0);
	if (s->ufd >= 0) {
		watch(s, &s->urd, s->up != UP_CONNECTING && buf_len(&s->cout) <= COUT_HIGH &&
		    buf_len(&s->uin) < BUF_SIZE);
		watch(s, &s->uwr, s->up == UP_CONNECTING || buf_len(&s->uout) > 0);
	}
}

static void session_free(struct session *s);

static void pump(struct session *s)
{
	for (int i = 0; i < PUMP_ROUNDS_MAX && !s->dead; i++) {
		bool progress = process_upstream(s);
		progress |= process_client(s);
		flush_client(s);
		flush_upstream(s);
		if (!progress)
			break;
	}
	if (s->dead || (s->state == ST_CLOSING && buf_len(&s->cout) == 0)) {
		session_free(s);
		return;
	}
	update_watchers(s);
}

static bool read_into(int fd, struct buf *b, bool *eof)
{
	long room = buf_prepare(b);

	*eof = false;
	if (room <= 0)
		return room == 0;
	ssize_t n = read(fd, buf_tail(b), (size_t)room);
	if (n > 0) {
		buf_commit(b, (size_t)n);
		return true;
	}
	if (buf_len(b) == 0)
		buf_release(b);
	if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
		*eof = true;
		return false;
	}
	return true;
}

static void on_client_read(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;
	bool eof;
	(void)loop;
	(void)revents;

	if (!read_into(s->cfd, &s->cin, &eof) && eof) {
		/* Gone mid-DATA: the upstream is cut without the dot, so no message. */
		s->dead = true;
	} else if (s->state == ST_COMMAND || s->state == ST_AUTH || s->state == ST_DATA) {
		client_timer_again(s);
	}
	pump(s);
}

static void on_client_write(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	pump(w->data);
}

static void on_upstream_read(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;
	bool eof;
	(void)loop;
	(void)revents;

	if (!read_into(s->ufd, &s->uin, &eof) && eof) {
		if (s->up == UP_BANNER) {
			upstream_failed(s, "closed before the banner");
		} else if (s->state != ST_CLOSING) {
			process_upstream(s);   /* relay what it said before it went */
			log_event(s->id, "upstream_closed", NULL);
			session_end(s, "421 4.4.2 Upstream connection lost");
		}
	}
	pump(s);
}

static void on_upstream_write(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;
	(void)loop;
	(void)revents;

	if (s->up == UP_CONNECTING)
		upstream_connected(s);
	pump(s);
}

static void on_client_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = w->data;
	(void)loop;
	(void)revents;

	switch (s->state) {
	case ST_PREGREET:
		set_state(s, ST_GREETING);
		upstream_try(s);
		break;
	case ST_COMMAND:
	case ST_AUTH:
		if (s->q_upstream > 0 || s->up != UP_READY) {
			/* Waiting for the MTA is not the client's idleness. */
			client_timer_again(s);
			break;
		}
		/* fall through */
	case ST_DATA:
	case ST_PROXYHDR:
		log_event(s->id, "timeout", (struct log_field[]){ F("state", state_names[s->state]), FEND });
		session_end(s, "421 4.4.2 Timeout exceeded");
		break;
	case ST_CLOSING:
		s->dead = true;
		break;
	default:
		break;
	}
	pump(s);
}

static void on_upstream_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = w->data;
	(void)loop;
	(void)revents;

	switch (s->up) {
	case UP_CONNECTING:
	case UP_BANNER:
		upstream_failed(s, s->up == UP_CONNECTING ? "connect timeout" : "banner timeout");
		break;
	case UP_NONE:
		break;
	default:
		log_event(s->id, "upstream_timeout", NULL);
		session_end(s, "421 4.4.2 Upstream timeout");
		break;
	}
	pump(s);
}

/* ---- life and death ------------------------------------------------------------ */

static void client_ready(struct session *s)
{
	char port[8];
	struct policy_facts f;
	struct verdict v;

	snprintf(port, sizeof port, "%u", addr_port((const struct sockaddr *)&s->lis->addr.ss));
	struct log_field lf[] = { F("ip", s->ip), F("port", port), F("listener", s->lis->addr.text), FEND };
	log_event(s->id, "connect", lf);

	fill_facts(s, &f);
	policy_check(s->cfg, STAGE_CONNECT, &f, clock_now_ms(), &v);
	if (v.kind != VERDICT_PASS) {
		v.kind = VERDICT_CLOSE;   /* at connect every refusal closes */
		refuse(s, STAGE_CONNECT, &v, NULL, 0);
		return;
	}
	if (s->lis->pregreet_ms) {
		set_state(s, ST_PREGREET);
		ev_timer_set(&s->ctimer, (double)s->lis->pregreet_ms / 1000.0, 0.);
		ev_timer_start(s->loop, &s->ctimer);
		return;
	}
	set_state(s, ST_GREETING);
	upstream_try(s);
}

void session_start(struct ev_loop *loop, int fd, const struct sockaddr *peer,
    socklen_t peerlen, struct config *cfg, const struct config_listen *lis)
{
	static const char busy[] = "421 4.3.2 Too many sessions, try again later\r\n";

	if (nsessions >= cfg->max_sessions) {
		(void)!write(fd, busy, sizeof busy - 1);
		close(fd);
		log_event(NULL, "refuse_max_sessions", NULL);
		return;
	}
	struct session *s = calloc(1, sizeof *s);
	if (!s) {
		close(fd);
		return;
	}
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
	fold_mapped(&s->peer, &s->peerlen);
	format_addr((const struct sockaddr *)&s->peer, s->ip, sizeof s->ip);
	s->locallen = sizeof s->local;
	if (getsockname(fd, (struct sockaddr *)&s->local, &s->locallen) < 0)
		s->locallen = 0;
	fold_mapped(&s->local, &s->locallen);
	set_nonblock_nodelay(fd);

	ev_io_init(&s->crd, on_client_read, fd, EV_READ);
	ev_io_init(&s->cwr, on_client_write, fd, EV_WRITE);
	ev_io_init(&s->urd, on_upstream_read, -1, EV_READ);
	ev_io_init(&s->uwr, on_upstream_write, -1, EV_WRITE);
	ev_init(&s->ctimer, on_client_timer);
	ev_init(&s->utimer, on_upstream_timer);
	s->crd.data = s->cwr.data = s->urd.data = s->uwr.data = s;
	s->ctimer.data = s->utimer.data = s;

	if (lis->proxy_protocol) {
		set_state(s, ST_PROXYHDR);
		client_timer_again(s);
	} else {
		client_ready(s);
	}
	pump(s);
}

static void session_free(struct session *s)
{
	char dur[32], msgs[16], refused[16];

	upstream_close(s);
	ev_io_stop(s->loop, &s->crd);
	ev_io_stop(s->loop, &s->cwr);
	ev_timer_stop(s->loop, &s->ctimer);
	close(s->cfd);
	snprintf(dur, sizeof dur, "%.2fs", now_s() - s->started);
	snprintf(msgs, sizeof msgs, "%u", s->messages);
	snprintf(refused, sizeof refused, "%u", s->refused);
	struct log_field f[] = { F("duration", dur), F("messages", msgs), F("refused", refused), FEND };
	log_event(s->id, "close", f);
	buf_release(&s->cin);
	buf_release(&s->cout);
	buf_release(&s->lq);
	free(s->helo);
	free(s->user);
	free(s->auth);
	free(s->sender);
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
		session_end(s, "421 4.3.2 Service shutting down");
		if (force)
			s->dead = true;
		pump(s);   /* may free s */
	}
}
