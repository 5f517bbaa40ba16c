/*
 * commands.c - the client's side of SMTP: each command line parsed, judged
 * by the policies at its stage, then forwarded or answered in its place in
 * the pending queue (RFC 2920); and the message body, streamed through the
 * DATA scanner to the MTA.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "metrics.h"
#include "session_int.h"

static char *strndup_bounded(const char *p, size_t n, size_t max)
{
	return strndup(p, n > max ? max : n);
}

static void set_str(char **dst, const char *p, size_t n, size_t max)
{
	free(*dst);
	*dst = strndup_bounded(p, n, max);
}

static void forward(struct session *s, const char *line, size_t len, enum expect ex)
{
	sess_upstream_out(s, line, len);
	sess_upstream_out(s, "\r\n", 2);
	sess_q_push(s, ex, ex == EX_MAIL || ex == EX_RCPT ? s->txn_seq : 0);
	if (s->q_upstream == 1)
		sess_upstream_timer_again(s, s->cfg->timeout_command_ms);
}

/*
 * The MTA's 250 is what makes a greeting count (RFC 5321 4.1.4): only then
 * do the name and the reset of the transaction apply (upstream.c), since a
 * refused HELO leaves the MTA's transaction open.  The reply is awaited
 * before the next command is read, as RFC 2920 has clients do anyway.
 */
static void cmd_helo(struct session *s, const char *line, size_t len, const struct smtp_cmd *c)
{
	char *name = strndup_bounded(c->arg, c->arglen, SESSION_HELO_MAX);
	struct policy_facts f;
	struct verdict v;

	if (name == NULL) {
		sess_end(s, "421 4.3.0 Out of memory, try again later");
		return;
	}

	sess_fill_facts(s, &f);
	f.helo = name;
	policy_check(s->cfg, STAGE_HELO, &f, clock_now_ms(), &v);
	if (v.kind != VERDICT_PASS) {
		/* logged with the name refused, which is then forgotten */
		char *held = s->helo;
		s->helo = name;
		sess_refuse(s, STAGE_HELO, &v, NULL, 0);
		s->helo = held;
		free(name);
		return;
	}
	free(s->helo_pending);
	s->helo_pending = name;
	forward(s, line, len, c->verb == SMTP_VERB_EHLO ? EX_EHLO : EX_HELO);
	s->barrier = true;
}

/* Returns false when the line is to be read again later (not taken yet). */
static bool cmd_mail(struct session *s, const char *line, size_t len, const struct smtp_cmd *c)
{
	const char *val;
	size_t vallen;
	uint64_t size = 0;

	if (s->need_helo) {
		sess_reply_local(s, SESS_REPLY_NEED_HELO);
		return true;
	}
	if (s->txn == TXN_OPEN) {
		/*
		 * Whether a transaction is open hangs on the MAIL before: wait
		 * for its reply, as the MTA reads this one only after answering
		 * that one.  Relayed, this MAIL would open a transaction never
		 * judged (its SIZE=, its recipients) should the MTA refuse the
		 * first; so a MAIL inside a transaction is answered here.
		 */
		if (s->mails_unanswered > 0)
			return false;
		sess_reply_local(s, "503 5.5.1 Error: nested MAIL command");
		return true;
	}
	sess_txn_reset(s);
	set_str(&s->sender, c->path, c->pathlen, SMTP_PATH_MAX);
	/* A SIZE= given twice is judged by its largest value: the MTA may
	 * well read the last one. */
	const char *p = c->params;
	size_t plen = c->params ? c->paramslen : 0;
	while (plen && smtp_param_find(p, plen, "SIZE", &val, &vallen)) {
		uint64_t one = 0;
		for (size_t i = 0; i < vallen && val[i] >= '0' && val[i] <= '9'; i++)
			one = one > UINT64_MAX / 10 - 10 ? UINT64_MAX : one * 10 + (uint64_t)(val[i] - '0');
		if (one > size)
			size = one;
		size_t used = (size_t)(val + vallen - p);
		p += used;
		plen -= used;
	}

	struct policy_facts f;
	struct verdict v;
	sess_fill_facts(s, &f);
	f.size = size;
	policy_check(s->cfg, STAGE_MAIL, &f, clock_now_ms(), &v);
	if (v.kind != VERDICT_PASS) {
		s->txn = TXN_REFUSED;
		sess_refuse(s, STAGE_MAIL, &v, NULL, 0);
		return true;
	}
	s->txn = TXN_OPEN;
	s->mails_unanswered++;
	forward(s, line, len, EX_MAIL);
	return true;
}

static void cmd_rcpt(struct session *s, const char *line, size_t len, const struct smtp_cmd *c)
{
	if (s->txn != TXN_OPEN) {
		/* Answered here: a RCPT we did not judge must not reach the MTA. */
		sess_reply_local(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	char rcpt[SMTP_PATH_MAX + 1];
	size_t rl = c->pathlen > SMTP_PATH_MAX ? SMTP_PATH_MAX : c->pathlen;
	memcpy(rcpt, c->path, rl);
	rcpt[rl] = '\0';

	struct policy_facts f;
	struct verdict v;
	sess_fill_facts(s, &f);
	f.rcpt = rcpt;
	policy_check(s->cfg, STAGE_RCPT, &f, clock_now_ms(), &v);
	if (v.kind != VERDICT_PASS) {
		s->rcpts_refused++;
		sess_refuse(s, STAGE_RCPT, &v, rcpt, rl);
		return;
	}
	s->rcpts++;
	forward(s, line, len, EX_RCPT);
}

static void cmd_data(struct session *s, const char *line, size_t len)
{
	if (s->txn != TXN_OPEN) {
		/* Postfix's words for a DATA with no recipient yet */
		sess_reply_local(s, "503 5.5.1 Error: need RCPT command");
		return;
	}
	if (s->rcpts == 0 && s->rcpts_refused > 0) {
		/* Every recipient was refused here: the MTA must not see DATA. */
		sess_reply_local(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	forward(s, line, len, EX_DATA);
	s->barrier = true;
}

static void cmd_auth(struct session *s, const char *line, size_t len, const struct smtp_cmd *c)
{
	if (s->lis->auth == AUTH_MODE_REQUIRE_TLS && !s->tls) {
		sess_reply_local(s, "530 5.7.0 Must issue a STARTTLS command first");
		return;
	}
	if (s->need_helo) {
		sess_reply_local(s, SESS_REPLY_NEED_HELO);
		return;
	}
	if (s->user) {
		sess_reply_local(s, "503 5.5.1 Error: already authenticated");
		return;
	}
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

/*
 * STARTTLS is ours: the proxy terminates the client's TLS.  The handshake
 * starts once "220 Ready" is out, and whatever the client pipelined behind
 * STARTTLS in plaintext is thrown away then (CVE-2011-0411).
 */
static void cmd_starttls(struct session *s)
{
	if (s->lis->tls != TLS_MODE_STARTTLS) {
		sess_reply_local(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (s->tls) {
		sess_reply_local(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	sess_reply_local(s, "220 2.0.0 Ready to start TLS");
	s->starttls_pending = true;
	s->barrier = true;
}

/* A line whose verb smtpgate must answer itself, never the MTA. */
static bool is_reserved_verb(const char *line, const struct smtp_cmd *c)
{
	static const char *const verbs[] = { "XCLIENT", "XFORWARD", NULL };
	/* The parser ended the verb at a blank or the end of the line. */
	size_t vl = 0;
	while (line + vl < c->arg && line[vl] != ' ' && line[vl] != '\t')
		vl++;
	for (const char *const *v = verbs; *v; v++)
		if (vl == strlen(*v) && strncasecmp(line, *v, vl) == 0)
			return true;
	return false;
}

/* Returns false when the line is left for later (see cmd_mail()). */
static bool client_line(struct session *s, const char *line, size_t len)
{
	struct smtp_cmd c;

	if (s->state == ST_AUTH) {
		/* An answer to a 334: passed as it is; we only learn the name. */
		if (s->auth)
			auth_response(s->auth, line, len);
		forward(s, line, len, EX_AUTH);
		s->barrier = true;
		return true;
	}
	switch (smtp_cmd_parse(line, len, &c)) {
	case SMTP_CMD_TOO_LONG:
		sess_reply_local(s, "500 5.5.2 Line too long");
		return true;
	case SMTP_CMD_SYNTAX:
		if (c.verb == SMTP_VERB_MAIL) {
			sess_reply_local(s, "501 5.1.7 Bad sender address syntax");
		} else if (c.verb == SMTP_VERB_RCPT) {
			/* a recipient refused here, as a rule or a limit would */
			if (s->txn == TXN_OPEN)
				s->rcpts_refused++;
			sess_reply_local(s, "501 5.1.3 Bad recipient address syntax");
		} else if (c.verb == SMTP_VERB_UNKNOWN) {
			sess_reply_local(s, "500 5.5.2 Error: bad syntax");
		} else {
			sess_reply_local(s, "501 5.5.4 Syntax error in parameters or arguments");
		}
		return true;
	case SMTP_CMD_OK:
		break;
	}

	switch (c.verb) {
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
		cmd_helo(s, line, len, &c);
		break;
	case SMTP_VERB_MAIL:
		return cmd_mail(s, line, len, &c);
	case SMTP_VERB_RCPT:
		cmd_rcpt(s, line, len, &c);
		break;
	case SMTP_VERB_DATA:
		cmd_data(s, line, len);
		break;
	case SMTP_VERB_RSET:
		sess_txn_reset(s);
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
		cmd_starttls(s);
		break;
	case SMTP_VERB_BDAT:
		/* CHUNKING is never advertised: its framing would hide the body's end. */
		sess_reply_local(s, "502 5.5.1 Error: command not implemented");
		break;
	default:
		if (is_reserved_verb(line, &c)) {
			sess_reply_local(s, "502 5.5.1 Error: command not implemented");
			break;
		}
		forward(s, line, len, EX_GENERIC);
		break;
	}
	return true;
}

static void data_aborted(struct session *s)
{
	enum abort_reason why = s->abort;
	const char *reply = why == ABORT_SIZE
	    ? "552 5.3.4 Message size exceeds fixed maximum message size"
	    : "550 5.5.2 Message contains bare CR or LF; refused";
	struct verdict v = { .kind = VERDICT_REFUSE,
		.what = why == ABORT_SIZE ? "limit" : "check",
		.name = why == ABORT_SIZE ? "max_message_size" : "bare_newline" };

	snprintf(v.reply, sizeof v.reply, "%s", reply);
	s->abort = ABORT_NONE;
	metrics_inc(METRIC_MESSAGES_TOTAL, "result", "refused", NULL);
	sess_refuse(s, STAGE_DATA, &v, NULL, 0);
	sess_txn_reset(s);
	if (++s->aborts >= SESSION_ABORTS_MAX) {
		/* Each refusal costs the MTA a new connection: not without end. */
		sess_end(s, "421 4.7.0 Too many refused messages, closing");
		return;
	}
	if (s->user) {
		/* The MTA's AUTH state went with the cut connection. */
		sess_end(s, "421 4.7.0 Session reset after refused message; please reconnect");
		return;
	}
	s->replay = true;
	s->server = 0;
	s->up_tls_failed = false;       /* a new round over the servers */
	sess_upstream_try(s);
}

static void data_end(struct session *s)
{
	sess_set_state(s, ST_COMMAND);
	sess_client_timer_again(s);
	if (s->abort) {
		data_aborted(s);
		return;
	}
	sess_q_push(s, EX_DOT, 0);
	sess_upstream_timer_again(s, s->cfg->timeout_data_ms);
	/* RFC 5321 4.1.1.4: the end of data ends the transaction, whatever the
	 * reply; commands pipelined behind the dot start a new one. */
	free(s->msg_sender);
	s->msg_sender = s->sender;
	s->sender = NULL;
	s->msg_rcpts = s->rcpts;
	s->msg_size = s->ds.bytes;
	sess_txn_reset(s);
}

bool sess_process_data(struct session *s)
{
	static char discard[BUF_SIZE];
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
		size_t used, made;
		enum data_status st = data_feed(&s->ds, buf_head(&s->cin), buf_len(&s->cin),
		    out, room, &used, &made);
		buf_drop(&s->cin, used);
		progress = true;

		uint64_t max = s->cfg->max_message_size;
		if (!s->abort && max && data_size(&s->ds) > max)
			s->abort = ABORT_SIZE;
		if (!s->abort && st == DATA_END && s->ds.seen_bare &&
		    s->cfg->bare_newline == BARE_NEWLINE_REJECT)
			s->abort = ABORT_BARE;
		if (s->abort) {
			/* Cut the MTA off before it can see an end. */
			if (s->ufd >= 0)
				sess_upstream_close(s);
		} else {
			buf_commit(&s->uout, made);
		}
		if (st == DATA_END)
			data_end(s);
	}
	return progress;
}

/* Parse and act on as many command lines as the queue and buffers allow. */
bool sess_process_commands(struct session *s)
{
	bool progress = false;

	while ((s->state == ST_COMMAND || s->state == ST_AUTH) && buf_len(&s->cin) > 0 &&
	    !s->barrier && !s->dead && s->up == UP_READY && s->qlen < SESSION_PENDING_MAX &&
	    buf_len(&s->cout) <= COUT_HIGH &&
	    (s->up_pipelining || s->q_upstream == 0)) {
		if (buf_prepare(&s->uout) < UOUT_ROOM_MIN)
			break;
		size_t linelen, used;
		/* An answer inside AUTH (a Kerberos or OAuth token) may be longer
		 * than a command: RFC 4954 §4 asks for 12288 octets. */
		s->lp.max = s->state == ST_AUTH ? SMTP_AUTH_LINE_MAX : 0;
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
		case SMTP_LINE_BAD:
			if (s->state == ST_AUTH) {
				/* The MTA waits for an answer to its 334: cancel
				 * the exchange (RFC 4954 "*") and let its reply
				 * answer this line, so both stay in step. */
				client_line(s, "*", 1);
			} else if (st == SMTP_LINE_TOO_LONG) {
				sess_reply_local(s, "500 5.5.2 Line too long");
			} else {
				sess_reply_local(s, "500 5.5.2 Syntax error: NUL or bare CR in command");
			}
			break;
		case SMTP_LINE_OK:
			if (!client_line(s, buf_head(&s->cin), linelen))
				return progress;   /* read again once the MTA has answered */
			/* An AUTH line may hold a password: gone from our buffer
			 * once it is on its way to the MTA. */
			if (s->auth && buf_len(&s->cin) >= linelen)
				explicit_bzero((char *)buf_head(&s->cin), linelen);
			break;
		}
		buf_drop(&s->cin, used);
		progress = true;
	}
	if (buf_len(&s->uout) == 0)
		buf_release(&s->uout);
	return progress;
}
