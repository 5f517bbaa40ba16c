/*
 * smtp.c - the pure SMTP parsers of SPEC §3.2: the client command line
 * splitter and parser, the upstream reply splitter, and the EHLO reply
 * rewrite.  Nothing here does I/O or allocates, so every function can be
 * table-tested and fuzzed on its own.
 */
#include <string.h>

#include "smtp.h"

#define CR '\r'
#define LF '\n'

/* A reply code is three digits, and the text starts after a fourth byte. */
#define REPLY_CODE_LEN 3
#define REPLY_PREFIX_LEN (REPLY_CODE_LEN + 1)   /* "250-" */
/* Room for "SIZE " and a uint64_t in decimal. */
#define SIZE_LINE_MAX 32
/* "250" + '-' or ' ' + CRLF around each capability. */
#define EHLO_LINE_OVERHEAD 6

/* ---- the line splitter -------------------------------------------------- */

enum smtp_line_status
smtp_line_next(struct smtp_lineparser *lp, const char *buf, size_t len,
    size_t *linelen, size_t *consumed)
{
	*linelen = 0;
	*consumed = 0;

	if (lp->discarding) {
		/* The overlong line was already answered; its bytes are dropped
		 * as they arrive so the caller's buffer never fills up. */
		const char *lf = memchr(buf, LF, len);
		if (lf == NULL) {
			*consumed = len;
			return SMTP_LINE_AGAIN;
		}
		*consumed = (size_t)(lf - buf) + 1;
		lp->discarding = false;
		lp->scanned = 0;
		lp->bad = false;
		return SMTP_LINE_AGAIN;
	}

	for (size_t i = lp->scanned; i < len; i++) {
		char c = buf[i];
		/* A CR is judged by the byte after it; the caller keeps the
		 * line's earlier bytes, so buf[i - 1] is still there. */
		bool after_cr = i > 0 && buf[i - 1] == CR;

		if (c == LF) {
			/*
			 * A bare LF ends a command line as CRLF would, as Postfix and
			 * most MTAs accept (SPEC §3.2 refuses only NUL and bare CR).
			 * Commands are re-sent to the MTA with CRLF, so the two can
			 * never read the line differently; the body is another matter
			 * (data.c).
			 */
			bool bad = lp->bad;
			lp->scanned = 0;
			lp->bad = false;
			*consumed = i + 1;
			if (bad)
				return SMTP_LINE_BAD;
			*linelen = after_cr ? i - 1 : i;
			return SMTP_LINE_OK;
		}
		if (after_cr || c == '\0')
			lp->bad = true;
		if (i + 1 >= (lp->max ? lp->max : SMTP_LINE_MAX_PARAMS)) {
			/* Without an LF within the limit the line cannot end
			 * within it. */
			*consumed = i + 1;
			lp->scanned = 0;
			lp->bad = false;
			lp->discarding = true;
			return SMTP_LINE_TOO_LONG;
		}
	}
	lp->scanned = len;
	return SMTP_LINE_AGAIN;
}

/* ---- the command parser ------------------------------------------------- */

enum arg_rule {
	ARG_ANY,        /* NOOP, HELP, and verbs we only relay */
	ARG_NONE,       /* RFC 5321 gives no arguments */
	ARG_REQUIRED,
	ARG_PATH,       /* MAIL FROM:<path> / RCPT TO:<path> */
};

struct verb_def {
	enum smtp_verb verb;
	const char *name;
	enum arg_rule rule;
	const char *prefix;     /* ARG_PATH: "FROM:" or "TO:" */
	bool path_may_be_empty; /* the null reverse-path <> */
	bool long_line_ok;      /* AUTH initial responses exceed 512 octets */
};

static const struct verb_def verbs[] = {
	{ SMTP_VERB_HELO, "HELO", ARG_REQUIRED, NULL, false, false },
	{ SMTP_VERB_EHLO, "EHLO", ARG_REQUIRED, NULL, false, false },
	{ SMTP_VERB_MAIL, "MAIL", ARG_PATH, "FROM:", true, false },
	{ SMTP_VERB_RCPT, "RCPT", ARG_PATH, "TO:", false, false },
	{ SMTP_VERB_DATA, "DATA", ARG_NONE, NULL, false, false },
	{ SMTP_VERB_RSET, "RSET", ARG_NONE, NULL, false, false },
	{ SMTP_VERB_NOOP, "NOOP", ARG_ANY, NULL, false, false },
	{ SMTP_VERB_QUIT, "QUIT", ARG_NONE, NULL, false, false },
	{ SMTP_VERB_VRFY, "VRFY", ARG_REQUIRED, NULL, false, false },
	{ SMTP_VERB_EXPN, "EXPN", ARG_REQUIRED, NULL, false, false },
	{ SMTP_VERB_HELP, "HELP", ARG_ANY, NULL, false, false },
	{ SMTP_VERB_AUTH, "AUTH", ARG_REQUIRED, NULL, false, true },
	{ SMTP_VERB_STARTTLS, "STARTTLS", ARG_NONE, NULL, false, false },
	{ SMTP_VERB_BDAT, "BDAT", ARG_REQUIRED, NULL, false, false },
};

static int
lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Case-insensitive: is s[0..len) exactly the NUL-terminated word? */
static bool
word_eq(const char *s, size_t len, const char *word)
{
	size_t i;
	for (i = 0; i < len; i++)
		if (word[i] == '\0' || lower((unsigned char)s[i]) != lower((unsigned char)word[i]))
			return false;
	return word[i] == '\0';
}

/* Case-insensitive: does s[0..len) start with the word? */
static bool
word_prefix(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);
	return n <= len && word_eq(s, n, word);
}

/*
 * Blanks between words: SP, and HTAB, because MTAs split on both (Postfix's
 * tokenizer does).  Were a tab not a separator here, "MAIL<TAB>FROM:" would
 * pass us as an unknown verb yet reach the MTA as MAIL.
 */
static bool
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool
is_verb_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static const struct verb_def *
verb_lookup(const char *s, size_t len)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (word_eq(s, len, verbs[i].name))
			return &verbs[i];
	return NULL;
}

const char *
smtp_verb_name(enum smtp_verb v)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "?";
}

static bool
is_ctl_or_space(unsigned char c)
{
	return c <= ' ' || c == 0x7f;
}

/*
 * Parse "<path>" at s[0..len): returns the offset just after '>' or 0 when
 * the path is malformed.  A '>' inside a quoted local part does not end it.
 * The path is returned with any source route (RFC 5321 §4.1.2 A-d-l, which
 * receivers must accept and may ignore) stripped.
 */
static size_t
parse_path(const char *s, size_t len, const char **path, size_t *pathlen)
{
	bool quoted = false;
	size_t i;

	if (len == 0 || s[0] != '<')
		return 0;
	for (i = 1; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (quoted) {
			if (c < ' ' || c == 0x7f)
				return 0;
			if (c == '\\') {
				/* quoted-pairSMTP: backslash and one printable byte */
				if (i + 1 >= len || (unsigned char)s[i + 1] < ' ' ||
				    (unsigned char)s[i + 1] == 0x7f)
					return 0;
				i++;
			} else if (c == '"') {
				quoted = false;
			}
			continue;
		}
		if (c == '>')
			break;
		if (c == '"')
			quoted = true;
		else if (c == '<' || is_ctl_or_space(c))
			return 0;
	}
	if (i >= len)
		return 0;           /* no closing '>' (or an unterminated quote) */
	/* SMTP_PATH_MAX counts the angle brackets (RFC 5321 §4.5.3.1.3). */
	if (i + 1 > SMTP_PATH_MAX)
		return 0;

	const char *p = s + 1;
	size_t n = i - 1;
	if (n > 0 && p[0] == '@') {
		const char *colon = memchr(p, ':', n);
		if (colon == NULL)
			return 0;
		n -= (size_t)(colon - p) + 1;
		p = colon + 1;
		if (n == 0)
			return 0;   /* a route to nobody */
	}
	*path = p;
	*pathlen = n;
	return i + 1;
}

static enum smtp_cmd_status
parse_path_arg(const struct verb_def *vd, const char *line, struct smtp_cmd *cmd)
{
	const char *a = cmd->arg;
	size_t alen = cmd->arglen;

	if (!word_prefix(a, alen, vd->prefix))
		return SMTP_CMD_SYNTAX;
	size_t off = strlen(vd->prefix);
	while (off < alen && is_blank(a[off]))
		off++;

	size_t end = parse_path(a + off, alen - off, &cmd->path, &cmd->pathlen);
	if (end == 0)
		return SMTP_CMD_SYNTAX;
	if (cmd->pathlen == 0 && !vd->path_may_be_empty)
		return SMTP_CMD_SYNTAX;
	off += end;

	/* The 512-octet limit applies to the command without its ESMTP
	 * parameters (RFC 5321 §4.5.3.1.4, RFC 1870 §3). */
	size_t base = (size_t)(a + off - line);
	if (base > SMTP_LINE_MAX - 2)
		return SMTP_CMD_TOO_LONG;

	if (off == alen)
		return SMTP_CMD_OK;
	if (!is_blank(a[off]))
		return SMTP_CMD_SYNTAX;
	while (off < alen && is_blank(a[off]))
		off++;
	cmd->params = a + off;
	cmd->paramslen = alen - off;   /* arg has no trailing spaces */
	return SMTP_CMD_OK;
}

enum smtp_cmd_status
smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd)
{
	memset(cmd, 0, sizeof(*cmd));
	cmd->path = "";

	/*
	 * The verb is letters and digits, and ends at a blank or the line's
	 * end.  Anything else (a leading blank, a control byte glued to the
	 * verb) is refused here rather than relayed: the MTA might read such a
	 * line as a command we never judged.
	 */
	size_t vlen = 0;
	while (vlen < len && is_verb_char(line[vlen]))
		vlen++;
	if (vlen == 0 || (vlen < len && !is_blank(line[vlen]))) {
		cmd->verb = SMTP_VERB_UNKNOWN;
		cmd->arg = line;
		cmd->arglen = len;
		return len > SMTP_LINE_MAX - 2 ? SMTP_CMD_TOO_LONG : SMTP_CMD_SYNTAX;
	}
	size_t off = vlen;
	while (off < len && is_blank(line[off]))
		off++;
	size_t alen = len - off;
	while (alen > 0 && is_blank(line[off + alen - 1]))
		alen--;
	cmd->arg = line + off;
	cmd->arglen = alen;

	const struct verb_def *vd = verb_lookup(line, vlen);
	if (vd == NULL) {
		cmd->verb = SMTP_VERB_UNKNOWN;
		return len > SMTP_LINE_MAX - 2 ? SMTP_CMD_TOO_LONG : SMTP_CMD_OK;
	}
	cmd->verb = vd->verb;

	if (vd->rule == ARG_PATH) {
		enum smtp_cmd_status st = parse_path_arg(vd, line, cmd);
		/* Without a well-formed path there are no parameters to
		 * discount: the whole line is held to the limit. */
		if (st != SMTP_CMD_OK) {
			cmd->path = "";
			cmd->pathlen = 0;
			cmd->params = NULL;
			cmd->paramslen = 0;
		}
		if (st == SMTP_CMD_SYNTAX && len > SMTP_LINE_MAX - 2)
			return SMTP_CMD_TOO_LONG;
		return st;
	}

	if (len > SMTP_LINE_MAX - 2 && !vd->long_line_ok)
		return SMTP_CMD_TOO_LONG;
	switch (vd->rule) {
	case ARG_NONE:
		return alen == 0 ? SMTP_CMD_OK : SMTP_CMD_SYNTAX;
	case ARG_REQUIRED:
		return alen > 0 ? SMTP_CMD_OK : SMTP_CMD_SYNTAX;
	case ARG_ANY:
	case ARG_PATH:
		break;
	}
	return SMTP_CMD_OK;
}

bool
smtp_param_find(const char *params, size_t len, const char *keyword,
    const char **val, size_t *vallen)
{
	size_t i = 0;

	*val = NULL;
	*vallen = 0;
	if (params == NULL)
		return false;
	while (i < len) {
		while (i < len && is_blank(params[i]))
			i++;
		size_t start = i;
		while (i < len && !is_blank(params[i]))
			i++;
		const char *p = params + start;
		size_t plen = i - start;
		if (plen == 0)
			break;
		const char *eq = memchr(p, '=', plen);
		size_t klen = eq != NULL ? (size_t)(eq - p) : plen;
		if (klen > 0 && word_eq(p, klen, keyword)) {
			if (eq != NULL) {
				*val = eq + 1;
				*vallen = plen - klen - 1;
			} else {
				*val = p + plen;
			}
			return true;
		}
	}
	return false;
}

/* ---- upstream replies --------------------------------------------------- */

/* The code of a reply line (its terminator removed), or -1 when the line
 * is not "DDD", "DDD text" or "DDD-text"; *more is set for "DDD-". */
static int
reply_line_code(const char *s, size_t n, bool *more)
{
	*more = false;
	if (n < REPLY_CODE_LEN)
		return -1;
	if (s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' ||
	    s[2] < '0' || s[2] > '9')
		return -1;
	if (n > REPLY_CODE_LEN) {
		if (s[REPLY_CODE_LEN] == '-')
			*more = true;
		else if (s[REPLY_CODE_LEN] != ' ')
			return -1;
	}
	return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

enum smtp_reply_status
smtp_reply_next(struct smtp_replyparser *rp, const char *buf, size_t len,
    size_t *replylen, int *code)
{
	*replylen = 0;
	*code = 0;

	for (size_t i = rp->scanned; i < len; i++) {
		if (buf[i] != LF) {
			/* Without an LF yet, this line or this reply has already
			 * reached its limit counting the terminator still to come. */
			if (i + 1 - rp->linestart >= SMTP_REPLY_LINE_MAX ||
			    i + 1 >= SMTP_REPLY_MAX)
				return SMTP_REPLY_BAD;
			continue;
		}
		size_t n = i - rp->linestart;
		if (n > 0 && buf[i - 1] == CR)
			n--;
		bool more;
		int c = reply_line_code(buf + rp->linestart, n, &more);
		if (c < 0 || (rp->code != 0 && c != rp->code))
			return SMTP_REPLY_BAD;
		rp->code = c;
		if (++rp->lines > SMTP_REPLY_LINES_MAX)
			return SMTP_REPLY_BAD;
		if (more) {
			rp->linestart = i + 1;
			continue;
		}
		*replylen = i + 1;
		*code = c;
		memset(rp, 0, sizeof(*rp));
		return SMTP_REPLY_OK;
	}
	rp->scanned = len;
	return SMTP_REPLY_AGAIN;
}

/* ---- the EHLO rewrite --------------------------------------------------- */

struct outbuf {
	char *p;
	size_t sz, len;
	size_t lastsep;         /* where the '-' of the latest line is */
	bool any;
	bool overflow;
};

static void
out_line(struct outbuf *o, const char *text, size_t n)
{
	if (o->overflow || o->sz - o->len < n + EHLO_LINE_OVERHEAD) {
		o->overflow = true;
		return;
	}
	memcpy(o->p + o->len, "250-", REPLY_PREFIX_LEN);
	o->lastsep = o->len + REPLY_CODE_LEN;
	o->len += REPLY_PREFIX_LEN;
	memcpy(o->p + o->len, text, n);
	o->len += n;
	o->p[o->len++] = CR;
	o->p[o->len++] = LF;
	o->any = true;
}

static size_t
fmt_u64(char *dst, uint64_t v)
{
	char tmp[SIZE_LINE_MAX];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	for (size_t i = 0; i < n; i++)
		dst[i] = tmp[n - 1 - i];
	return n;
}

static void
out_size(struct outbuf *o, uint64_t v)
{
	char line[SIZE_LINE_MAX] = "SIZE ";
	size_t n = strlen(line);
	n += fmt_u64(line + n, v);
	out_line(o, line, n);
}

/* RFC 5321 ehlo-keyword characters: ALPHA / DIGIT / "-". */
static bool
is_keyword_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-';
}

/*
 * Is the capability's keyword kw?  The keyword ends at the first byte that
 * cannot be part of one: a space, the '=' of the pre-RFC "AUTH=PLAIN" form,
 * or a stray control byte, so "STARTTLS\rX" is still taken for STARTTLS
 * (and removed) rather than relayed to a client that may split at the CR.
 */
static bool
cap_is(const char *t, size_t n, const char *kw)
{
	size_t k = strlen(kw);
	return n >= k && word_eq(t, k, kw) && (n == k || !is_keyword_char(t[k]));
}

/* A SIZE value, or 0 when absent or not a number (both mean no limit). */
static uint64_t
cap_size_value(const char *t, size_t n)
{
	size_t i = strlen("SIZE");
	uint64_t v = 0;

	while (i < n && t[i] == ' ')
		i++;
	for (; i < n; i++) {
		if (t[i] < '0' || t[i] > '9')
			return 0;
		unsigned d = (unsigned)(t[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return UINT64_MAX;
		v = v * 10 + d;
	}
	return v;
}

long
smtp_ehlo_rewrite(const char *in, size_t len, const struct smtp_ehlo_opts *opts,
    char *out, size_t outsz, struct smtp_ehlo_info *info)
{
	struct smtp_ehlo_info local;
	struct outbuf o = { .p = out, .sz = outsz };
	bool size_seen = false, last_seen = false;
	size_t pos = 0, lineno = 0;

	if (info == NULL)
		info = &local;
	memset(info, 0, sizeof(*info));

	while (pos < len) {
		if (last_seen)
			return -1;      /* bytes after the final "250 " line */
		const char *lf = memchr(in + pos, LF, len - pos);
		size_t end = lf != NULL ? (size_t)(lf - in) : len;
		const char *s = in + pos;
		size_t n = end - pos;
		pos = lf != NULL ? end + 1 : len;
		if (n > 0 && s[n - 1] == CR)
			n--;

		bool more;
		if (reply_line_code(s, n, &more) != 250)
			return -1;
		last_seen = !more;
		const char *t = s + (n > REPLY_CODE_LEN ? REPLY_PREFIX_LEN : n);
		size_t tn = n > REPLY_CODE_LEN ? n - REPLY_PREFIX_LEN : 0;

		/* Input the reply splitter would have refused is no EHLO reply. */
		if (lineno == SMTP_REPLY_LINES_MAX)
			return -1;
		if (lineno++ == 0) {
			out_line(&o, t, tn);    /* the greeting, always kept */
			continue;
		}
		/* An empty capability line (smtp-sink sends one) says nothing. */
		size_t blank = 0;
		while (blank < tn && t[blank] == ' ')
			blank++;
		if (blank == tn)
			continue;
		if (cap_is(t, tn, "PIPELINING")) {
			info->pipelining = true;
		} else if (cap_is(t, tn, "STARTTLS")) {
			info->starttls = true;
			continue;       /* the proxy, not the MTA, does TLS */
		} else if (cap_is(t, tn, "AUTH")) {
			info->auth = true;
			if (opts->hide_auth)
				continue;
		} else if (cap_is(t, tn, "XCLIENT")) {
			info->xclient = true;
			continue;
		} else if (cap_is(t, tn, "XFORWARD") || cap_is(t, tn, "CHUNKING") ||
		    cap_is(t, tn, "BINARYMIME")) {
			continue;
		} else if (cap_is(t, tn, "SIZE")) {
			uint64_t v = cap_size_value(t, tn);
			info->size = true;
			info->size_value = v;
			if (size_seen)
				continue;
			size_seen = true;
			if (opts->max_size != 0) {
				out_size(&o, v == 0 || v > opts->max_size ? opts->max_size : v);
				continue;
			}
		}
		out_line(&o, t, tn);
	}
	if (lineno == 0 || !last_seen)
		return -1;
	if (!size_seen && opts->max_size != 0)
		out_size(&o, opts->max_size);
	if (opts->starttls)
		out_line(&o, "STARTTLS", strlen("STARTTLS"));
	if (o.overflow || !o.any)
		return -1;
	out[o.lastsep] = ' ';
	return (long)o.len;
}
