/*
 * check_smtp.c - tables for the SMTP line splitter, the command parser,
 * the reply splitter and the EHLO rewrite (proxy/smtp.c).
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "smtp.h"
#include "suites.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define TRANSCRIPT_MAX 1024
#define FEED_BUF_MAX (4 * SMTP_REPLY_MAX)
#define SHOW_LINE_MAX 64    /* longer lines are shown as "#len" */

/* Check reports every passing ck_assert to the runner; in the hot loops
 * only a failure is worth a message. */
#define EXPECT(cond, ...) do { if (!(cond)) ck_abort_msg(__VA_ARGS__); } while (0)

/* ---- the line splitter -------------------------------------------------- */

static void
append(char *t, const char *s)
{
	size_t n = strlen(t);
	snprintf(t + n, TRANSCRIPT_MAX - n, "%s", s);
}

/*
 * Feed in[0..len) cut at the given points, as a caller that keeps its
 * unread bytes at the front of a buffer would, and describe every event:
 * "[line]" for OK (or "[#len]" when long), "<BAD>", "<LONG>".
 */
static void
lines_feed(const char *in, size_t len, const size_t *cuts, size_t ncuts, char *t)
{
	static char buf[FEED_BUF_MAX];
	struct smtp_lineparser lp;
	size_t have = 0, from = 0;

	memset(&lp, 0, sizeof(lp));
	t[0] = '\0';
	for (size_t c = 0; c <= ncuts; c++) {
		size_t to = c < ncuts ? cuts[c] : len;
		memcpy(buf + have, in + from, to - from);
		have += to - from;
		from = to;
		for (;;) {
			size_t linelen, consumed;
			enum smtp_line_status st = smtp_line_next(&lp, buf, have, &linelen, &consumed);
			char ev[SHOW_LINE_MAX + 8];
			if (st == SMTP_LINE_OK) {
				if (linelen <= SHOW_LINE_MAX)
					snprintf(ev, sizeof(ev), "[%.*s]", (int)linelen, buf);
				else
					snprintf(ev, sizeof(ev), "[#%zu]", linelen);
				append(t, ev);
			} else if (st == SMTP_LINE_BAD) {
				append(t, "<BAD>");
			} else if (st == SMTP_LINE_TOO_LONG) {
				append(t, "<LONG>");
			} else if (!lp.discarding && consumed == 0) {
				EXPECT(lp.scanned == have - consumed,
				    "AGAIN: scanned %zu, want %zu", lp.scanned, have - consumed);
			}
			memmove(buf, buf + consumed, have - consumed);
			have -= consumed;
			if (st == SMTP_LINE_AGAIN && consumed == 0)
				break;
		}
	}
}

#define LONG_A 5000
static char long_a[LONG_A + 1];

static const char *
repeat_a(size_t n)
{
	ck_assert(n <= LONG_A);
	memset(long_a, 'A', LONG_A);
	return long_a + LONG_A - n;
}

struct line_case {
	const char *label;
	const char *pre;        /* prefix, then pre_a 'A's, then post */
	size_t pre_a;
	const char *post;
	size_t postlen;         /* 0: strlen(post) */
	const char *want;
};

static const struct line_case line_cases[] = {
	{ "one line", "HELO a\r\n", 0, "", 0, "[HELO a]" },
	{ "two lines", "A\r\nB\r\n", 0, "", 0, "[A][B]" },
	{ "empty line", "\r\n", 0, "", 0, "[]" },
	{ "incomplete", "HELO", 0, "", 0, "" },
	{ "incomplete CR", "HELO\r", 0, "", 0, "" },
	{ "NUL", "HE", 0, "\0LO\r\n", 5, "<BAD>" },
	{ "NUL then good", "X", 0, "\0\r\nQUIT\r\n", 9, "<BAD>[QUIT]" },
	{ "bare CR", "HE\rLO\r\n", 0, "", 0, "<BAD>" },
	{ "bare CR first", "\rA\r\n", 0, "", 0, "<BAD>" },
	{ "CR CR LF", "A\r\r\n", 0, "", 0, "<BAD>" },
	{ "bare LF ends the line", "HELO\nQUIT\r\n", 0, "", 0, "[HELO][QUIT]" },
	{ "lone LF", "\n", 0, "", 0, "[]" },
	{ "bare CR and LF", "A\rB\nC\r\n", 0, "", 0, "<BAD>[C]" },
	{ "NUL then bare LF", "A", 0, "\0B\nC\n", 5, "<BAD>[C]" },
	{ "max line", "", SMTP_LINE_MAX_PARAMS - 2, "\r\n", 0, "[#4094]" },
	{ "one over", "", SMTP_LINE_MAX_PARAMS - 1, "\r\n", 0, "<LONG>" },
	{ "one over, recovery", "", SMTP_LINE_MAX_PARAMS - 1, "\r\nQUIT\r\n", 0, "<LONG>[QUIT]" },
	{ "overlong, no end yet", "", SMTP_LINE_MAX_PARAMS, "", 0, "<LONG>" },
	{ "overlong then recovery", "", LONG_A, "\r\nQUIT\r\n", 0, "<LONG>[QUIT]" },
	{ "overlong bare LF end", "", LONG_A, "\nNOOP\r\n", 0, "<LONG>[NOOP]" },
	{ "overlong with NUL", "", LONG_A, "\0\r\nQUIT\r\n", 9, "<LONG>[QUIT]" },
	{ "line then overlong", "RSET\r\n", LONG_A, "\r\nB\nC\r\n", 0, "[RSET]<LONG>[B][C]" },
	{ "CR at the limit", "", SMTP_LINE_MAX_PARAMS - 1, "\rX\r\nY\r\n", 0, "<LONG>[Y]" },
};

static size_t
line_case_build(const struct line_case *c, char *buf)
{
	size_t n = strlen(c->pre);
	size_t postlen = c->postlen != 0 ? c->postlen : strlen(c->post);
	memcpy(buf, c->pre, n);
	memcpy(buf + n, repeat_a(c->pre_a), c->pre_a);
	n += c->pre_a;
	memcpy(buf + n, c->post, postlen);
	return n + postlen;
}

START_TEST(test_line_table)
{
	static char in[FEED_BUF_MAX];
	char got[TRANSCRIPT_MAX];
	const struct line_case *c = &line_cases[_i];
	size_t len = line_case_build(c, in);

	lines_feed(in, len, NULL, 0, got);
	ck_assert_msg(strcmp(got, c->want) == 0, "%s: got %s, want %s", c->label, got, c->want);
}
END_TEST

/* Every split into two reads, and byte by byte, gives the one-shot result. */
START_TEST(test_line_splits)
{
	static char in[FEED_BUF_MAX];
	static size_t cuts[FEED_BUF_MAX];
	char got[TRANSCRIPT_MAX];
	const struct line_case *c = &line_cases[_i];
	size_t len = line_case_build(c, in);

	for (size_t cut = 0; cut <= len; cut++) {
		lines_feed(in, len, &cut, 1, got);
		EXPECT(strcmp(got, c->want) == 0, "%s split at %zu: got %s, want %s",
		    c->label, cut, got, c->want);
	}
	for (size_t k = 0; k < len; k++)
		cuts[k] = k;
	lines_feed(in, len, cuts, len, got);
	EXPECT(strcmp(got, c->want) == 0, "%s byte by byte: got %s, want %s",
	    c->label, got, c->want);
}
END_TEST

/* The reply can go out before the rest of an overlong line arrives. */
START_TEST(test_line_too_long_early)
{
	static char in[SMTP_LINE_MAX_PARAMS];
	struct smtp_lineparser lp = { 0 };
	size_t linelen, consumed;

	memset(in, 'A', sizeof(in));
	enum smtp_line_status st = smtp_line_next(&lp, in, sizeof(in) - 1, &linelen, &consumed);
	ck_assert_msg(st == SMTP_LINE_AGAIN && consumed == 0, "4095 bytes: got %d/%zu", st, consumed);
	st = smtp_line_next(&lp, in, sizeof(in), &linelen, &consumed);
	ck_assert_msg(st == SMTP_LINE_TOO_LONG && consumed == sizeof(in),
	    "4096 bytes: got %d/%zu, want TOO_LONG/%zu", st, consumed, sizeof(in));
	st = smtp_line_next(&lp, "AAA", 3, &linelen, &consumed);
	ck_assert_msg(st == SMTP_LINE_AGAIN && consumed == 3, "discarding: got %d/%zu", st, consumed);
	st = smtp_line_next(&lp, "A\nQUIT\r\n", 8, &linelen, &consumed);
	ck_assert_msg(st == SMTP_LINE_AGAIN && consumed == 2, "end of discard: got %d/%zu", st, consumed);
	st = smtp_line_next(&lp, "QUIT\r\n", 6, &linelen, &consumed);
	ck_assert_msg(st == SMTP_LINE_OK && linelen == 4 && consumed == 6, "resumed: got %d", st);

	/* Inside AUTH the caller raises the limit to RFC 4954's 12288. */
	static char big[SMTP_AUTH_LINE_MAX + 2];
	memset(big, 'B', sizeof(big));
	memcpy(big + SMTP_AUTH_LINE_MAX - 2, "\r\n", 2);
	struct smtp_lineparser alp = { .max = SMTP_AUTH_LINE_MAX };
	st = smtp_line_next(&alp, big, SMTP_AUTH_LINE_MAX, &linelen, &consumed);
	ck_assert_msg(st == SMTP_LINE_OK && linelen == SMTP_AUTH_LINE_MAX - 2,
	    "12286+CRLF: got %d/%zu", st, linelen);
	memset(big, 'B', sizeof(big));
	st = smtp_line_next(&alp, big, SMTP_AUTH_LINE_MAX, &linelen, &consumed);
	ck_assert_msg(st == SMTP_LINE_TOO_LONG, "12288 without LF: got %d", st);
}
END_TEST

/* ---- the command parser ------------------------------------------------- */

#define NOPARAMS NULL
#define ANY "\x01"          /* do not check this field */

struct cmd_case {
	const char *label;
	const char *line;
	enum smtp_cmd_status status;
	enum smtp_verb verb;
	const char *arg;
	const char *path;
	const char *params;
};

static const struct cmd_case cmd_cases[] = {
	{ "HELO", "HELO example.com", SMTP_CMD_OK, SMTP_VERB_HELO, "example.com", "", NOPARAMS },
	{ "ehlo spaces", "ehlo  example.com  ", SMTP_CMD_OK, SMTP_VERB_EHLO, "example.com", "", NOPARAMS },
	{ "HELO bare", "HELO", SMTP_CMD_SYNTAX, SMTP_VERB_HELO, ANY, ANY, ANY },
	{ "EHLO space only", "EHLO ", SMTP_CMD_SYNTAX, SMTP_VERB_EHLO, ANY, ANY, ANY },
	{ "MAIL", "MAIL FROM:<a@b>", SMTP_CMD_OK, SMTP_VERB_MAIL, "FROM:<a@b>", "a@b", NOPARAMS },
	{ "MAIL params", "mail from:<a@b> SIZE=100 BODY=8BITMIME", SMTP_CMD_OK, SMTP_VERB_MAIL,
	  ANY, "a@b", "SIZE=100 BODY=8BITMIME" },
	{ "MAIL params spaces", "MAIL FROM:<a@b>  SIZE=1  ", SMTP_CMD_OK, SMTP_VERB_MAIL,
	  "FROM:<a@b>  SIZE=1", "a@b", "SIZE=1" },
	{ "MAIL null path", "MAIL FROM:<>", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "", NOPARAMS },
	{ "MAIL null path params", "MAIL FROM:<> BODY=7BIT", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "", "BODY=7BIT" },
	{ "MAIL space after colon", "MAIL FROM: <a@b>", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "a@b", NOPARAMS },
	{ "MAIL spaces after colon", "MAIL FROM:   <a@b>", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "a@b", NOPARAMS },
	{ "MAIL trailing space", "MAIL FROM:<a@b> ", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "a@b", NOPARAMS },
	{ "MAIL no brackets", "MAIL FROM:a@b", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL unclosed", "MAIL FROM:<a@b", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL nested", "MAIL FROM:<<a@b>>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL space in path", "MAIL FROM:<a b@c>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL tab in path", "MAIL FROM:<a\tb@c>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL DEL in path", "MAIL FROM:<a\x7f@c>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL junk after path", "MAIL FROM:<a@b>x", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL no colon", "MAIL FROM <a@b>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL TO:", "MAIL TO:<a@b>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL alone", "MAIL", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL source route", "MAIL FROM:<@a,@b:user@c>", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "user@c", NOPARAMS },
	{ "MAIL route, no colon", "MAIL FROM:<@a>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL route to nobody", "MAIL FROM:<@a:>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "MAIL quoted", "MAIL FROM:<\"a b\"@c>", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "\"a b\"@c", NOPARAMS },
	{ "MAIL quoted >", "MAIL FROM:<\"a>b\"@c> SIZE=1", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "\"a>b\"@c", "SIZE=1" },
	{ "MAIL quoted pair", "MAIL FROM:<\"a\\\"b\"@c>", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "\"a\\\"b\"@c", NOPARAMS },
	{ "MAIL open quote", "MAIL FROM:<\"ab@c>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, ANY, ANY, ANY },
	{ "RCPT", "RCPT TO:<x@y>", SMTP_CMD_OK, SMTP_VERB_RCPT, "TO:<x@y>", "x@y", NOPARAMS },
	{ "RCPT Postmaster", "RCPT TO:<Postmaster>", SMTP_CMD_OK, SMTP_VERB_RCPT, ANY, "Postmaster", NOPARAMS },
	{ "RCPT null path", "RCPT TO:<>", SMTP_CMD_SYNTAX, SMTP_VERB_RCPT, ANY, ANY, ANY },
	{ "rcpt params", "rcpt to:<x@y> NOTIFY=NEVER", SMTP_CMD_OK, SMTP_VERB_RCPT, ANY, "x@y", "NOTIFY=NEVER" },
	{ "RCPT FROM:", "RCPT FROM:<x@y>", SMTP_CMD_SYNTAX, SMTP_VERB_RCPT, ANY, ANY, ANY },
	{ "DATA", "DATA", SMTP_CMD_OK, SMTP_VERB_DATA, "", "", NOPARAMS },
	{ "data trailing space", "data ", SMTP_CMD_OK, SMTP_VERB_DATA, "", "", NOPARAMS },
	{ "DATA arg", "DATA x", SMTP_CMD_SYNTAX, SMTP_VERB_DATA, ANY, ANY, ANY },
	{ "RSET", "RSET", SMTP_CMD_OK, SMTP_VERB_RSET, "", "", NOPARAMS },
	{ "RSET arg", "RSET all", SMTP_CMD_SYNTAX, SMTP_VERB_RSET, ANY, ANY, ANY },
	{ "QUIT", "QUIT", SMTP_CMD_OK, SMTP_VERB_QUIT, "", "", NOPARAMS },
	{ "QUIT arg", "QUIT now", SMTP_CMD_SYNTAX, SMTP_VERB_QUIT, ANY, ANY, ANY },
	{ "StartTLS", "StartTLS", SMTP_CMD_OK, SMTP_VERB_STARTTLS, "", "", NOPARAMS },
	{ "STARTTLS arg", "STARTTLS x", SMTP_CMD_SYNTAX, SMTP_VERB_STARTTLS, ANY, ANY, ANY },
	{ "NOOP", "NOOP", SMTP_CMD_OK, SMTP_VERB_NOOP, "", "", NOPARAMS },
	{ "NOOP arg", "NOOP hi there", SMTP_CMD_OK, SMTP_VERB_NOOP, "hi there", "", NOPARAMS },
	{ "HELP", "HELP", SMTP_CMD_OK, SMTP_VERB_HELP, "", "", NOPARAMS },
	{ "HELP arg", "help MAIL", SMTP_CMD_OK, SMTP_VERB_HELP, "MAIL", "", NOPARAMS },
	{ "VRFY bare", "VRFY", SMTP_CMD_SYNTAX, SMTP_VERB_VRFY, ANY, ANY, ANY },
	{ "VRFY", "VRFY bob", SMTP_CMD_OK, SMTP_VERB_VRFY, "bob", "", NOPARAMS },
	{ "EXPN bare", "EXPN", SMTP_CMD_SYNTAX, SMTP_VERB_EXPN, ANY, ANY, ANY },
	{ "EXPN", "EXPN staff", SMTP_CMD_OK, SMTP_VERB_EXPN, "staff", "", NOPARAMS },
	{ "AUTH", "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=", SMTP_CMD_OK, SMTP_VERB_AUTH,
	  "PLAIN dGVzdAB0ZXN0AHRlc3Q=", "", NOPARAMS },
	{ "AUTH bare", "AUTH", SMTP_CMD_SYNTAX, SMTP_VERB_AUTH, ANY, ANY, ANY },
	{ "BDAT", "BDAT 100 LAST", SMTP_CMD_OK, SMTP_VERB_BDAT, "100 LAST", "", NOPARAMS },
	{ "unknown verb", "XCLIENT ADDR=1.2.3.4", SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "ADDR=1.2.3.4", "", NOPARAMS },
	{ "verb prefix", "HELOX a", SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "a", "", NOPARAMS },
	{ "verb cut short", "HEL a", SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "a", "", NOPARAMS },
	{ "empty line", "", SMTP_CMD_SYNTAX, SMTP_VERB_UNKNOWN, ANY, ANY, ANY },
	/* blanks: a tab separates as a space does (MTAs split on both), and a
	 * line that does not start with a verb is never relayed */
	{ "MAIL tab", "MAIL\tFROM:<a@b>", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "a@b", NOPARAMS },
	{ "MAIL FROM: tab path", "MAIL FROM:\t<a@b>\tSIZE=5", SMTP_CMD_OK, SMTP_VERB_MAIL, ANY, "a@b", "SIZE=5" },
	{ "RCPT tab", "RCPT\tTO:<x@y>", SMTP_CMD_OK, SMTP_VERB_RCPT, ANY, "x@y", NOPARAMS },
	{ "DATA tab", "DATA\t", SMTP_CMD_OK, SMTP_VERB_DATA, "", "", NOPARAMS },
	{ "RSET tab", "RSET\t", SMTP_CMD_OK, SMTP_VERB_RSET, "", "", NOPARAMS },
	{ "EHLO tab", "EHLO\tx.example", SMTP_CMD_OK, SMTP_VERB_EHLO, "x.example", "", NOPARAMS },
	{ "BDAT tab", "BDAT\t10 LAST", SMTP_CMD_OK, SMTP_VERB_BDAT, "10 LAST", "", NOPARAMS },
	{ "unknown tab", "XCLIENT\tADDR=1.2.3.4", SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "ADDR=1.2.3.4", "", NOPARAMS },
	{ "leading space", " RCPT TO:<x@y>", SMTP_CMD_SYNTAX, SMTP_VERB_UNKNOWN, ANY, ANY, ANY },
	{ "leading tab", "\tMAIL FROM:<a@b>", SMTP_CMD_SYNTAX, SMTP_VERB_UNKNOWN, ANY, ANY, ANY },
	{ "vertical tab after verb", "MAIL\vFROM:<a@b>", SMTP_CMD_SYNTAX, SMTP_VERB_UNKNOWN, ANY, ANY, ANY },
	{ "control in verb", "MA\x01IL FROM:<a@b>", SMTP_CMD_SYNTAX, SMTP_VERB_UNKNOWN, ANY, ANY, ANY },
	{ "punctuation after verb", "QUIT.", SMTP_CMD_SYNTAX, SMTP_VERB_UNKNOWN, ANY, ANY, ANY },
};

static void
check_field(const char *label, const char *name, const char *got, size_t gotlen,
    const char *want)
{
	if (want == NULL) {
		ck_assert_msg(got == NULL, "%s: %s: got \"%.*s\", want NULL", label, name,
		    (int)gotlen, got != NULL ? got : "");
		return;
	}
	if (strcmp(want, ANY) == 0)
		return;
	ck_assert_msg(got != NULL && gotlen == strlen(want) && memcmp(got, want, gotlen) == 0,
	    "%s: %s: got \"%.*s\", want \"%s\"", label, name, (int)gotlen,
	    got != NULL ? got : "(null)", want);
}

START_TEST(test_cmd_table)
{
	const struct cmd_case *c = &cmd_cases[_i];
	struct smtp_cmd cmd;
	enum smtp_cmd_status st = smtp_cmd_parse(c->line, strlen(c->line), &cmd);

	ck_assert_msg(st == c->status, "%s: status %d, want %d", c->label, st, c->status);
	ck_assert_msg(cmd.verb == c->verb, "%s: verb %s, want %s", c->label,
	    smtp_verb_name(cmd.verb), smtp_verb_name(c->verb));
	check_field(c->label, "arg", cmd.arg, cmd.arglen, c->arg);
	check_field(c->label, "path", cmd.path, cmd.pathlen, c->path);
	check_field(c->label, "params", cmd.params, cmd.paramslen, c->params);
}
END_TEST

/* Lines built to the limits: "pre" + n fill bytes + "post". */
struct cmd_limit_case {
	const char *label;
	const char *pre;
	size_t fill;
	char fillc;
	const char *post;
	enum smtp_cmd_status status;
};

#define CMDMAX (SMTP_LINE_MAX - 2)

static const struct cmd_limit_case cmd_limit_cases[] = {
	{ "HELO at the limit", "HELO ", CMDMAX - 5, 'a', "", SMTP_CMD_OK },
	{ "HELO over the limit", "HELO ", CMDMAX - 4, 'a', "", SMTP_CMD_TOO_LONG },
	{ "unknown over the limit", "XYZZY ", CMDMAX - 5, 'a', "", SMTP_CMD_TOO_LONG },
	{ "NOOP over the limit", "NOOP ", CMDMAX, 'a', "", SMTP_CMD_TOO_LONG },
	{ "AUTH long initial response", "AUTH PLAIN ", 4000, 'A', "", SMTP_CMD_OK },
	{ "MAIL long params", "MAIL FROM:<a@b> X=", 3000, 'v', "", SMTP_CMD_OK },
	{ "RCPT long params", "RCPT TO:<a@b> X=", 3000, 'v', "", SMTP_CMD_OK },
	{ "MAIL base at the limit", "MAIL FROM:", CMDMAX - 10 - 5, ' ', "<a@b>", SMTP_CMD_OK },
	{ "MAIL base over the limit", "MAIL FROM:", CMDMAX - 10 - 4, ' ', "<a@b> X=1", SMTP_CMD_TOO_LONG },
	{ "MAIL long garbage", "MAIL FROM:", 600, 'x', "", SMTP_CMD_TOO_LONG },
	{ "path at the limit", "MAIL FROM:<", SMTP_PATH_MAX - 4, 'p', "@x>", SMTP_CMD_OK },
	{ "path over the limit", "MAIL FROM:<", SMTP_PATH_MAX - 3, 'p', "@x>", SMTP_CMD_SYNTAX },
};

START_TEST(test_cmd_limits)
{
	static char line[SMTP_LINE_MAX_PARAMS];
	const struct cmd_limit_case *c = &cmd_limit_cases[_i];
	struct smtp_cmd cmd;
	size_t n = strlen(c->pre);

	memcpy(line, c->pre, n);
	memset(line + n, c->fillc, c->fill);
	n += c->fill;
	memcpy(line + n, c->post, strlen(c->post));
	n += strlen(c->post);
	enum smtp_cmd_status st = smtp_cmd_parse(line, n, &cmd);
	ck_assert_msg(st == c->status, "%s (%zu bytes): status %d, want %d", c->label, n,
	    st, c->status);
}
END_TEST

struct param_case {
	const char *label;
	const char *params;
	const char *key;
	bool found;
	const char *val;
};

static const struct param_case param_cases[] = {
	{ "first", "SIZE=100 BODY=8BITMIME SMTPUTF8", "size", true, "100" },
	{ "middle", "SIZE=100 BODY=8BITMIME SMTPUTF8", "BODY", true, "8BITMIME" },
	{ "no value", "SIZE=100 BODY=8BITMIME SMTPUTF8", "smtputf8", true, "" },
	{ "absent", "SIZE=100 BODY=8BITMIME", "RET", false, NULL },
	{ "prefix only", "SIZE=100", "SIZ", false, NULL },
	{ "longer key", "SIZE=100", "SIZES", false, NULL },
	{ "double spaces", "A=1  B=2", "B", true, "2" },
	{ "empty value", "ENVID=", "ENVID", true, "" },
	{ "empty params", "", "SIZE", false, NULL },
};

START_TEST(test_param_find)
{
	const struct param_case *c = &param_cases[_i];
	const char *val;
	size_t vallen;
	bool found = smtp_param_find(c->params, strlen(c->params), c->key, &val, &vallen);

	ck_assert_msg(found == c->found, "%s: found %d, want %d", c->label, found, c->found);
	if (c->found)
		ck_assert_msg(vallen == strlen(c->val) && memcmp(val, c->val, vallen) == 0,
		    "%s: value \"%.*s\", want \"%s\"", c->label, (int)vallen, val, c->val);
}
END_TEST

START_TEST(test_param_find_null)
{
	const char *val;
	size_t vallen;
	ck_assert(!smtp_param_find(NULL, 0, "SIZE", &val, &vallen));
}
END_TEST

START_TEST(test_verb_name)
{
	ck_assert_str_eq(smtp_verb_name(SMTP_VERB_MAIL), "MAIL");
	ck_assert_str_eq(smtp_verb_name(SMTP_VERB_STARTTLS), "STARTTLS");
	ck_assert_str_eq(smtp_verb_name(SMTP_VERB_UNKNOWN), "?");
	ck_assert_str_eq(smtp_verb_name(SMTP_VERB_COUNT), "?");
}
END_TEST

/* ---- the reply splitter ------------------------------------------------- */

/* Like lines_feed: "code/len " per reply, "BAD" (and stop) on BAD. */
static void
replies_feed(const char *in, size_t len, const size_t *cuts, size_t ncuts, char *t)
{
	static char buf[FEED_BUF_MAX];
	struct smtp_replyparser rp;
	size_t have = 0, from = 0;

	memset(&rp, 0, sizeof(rp));
	t[0] = '\0';
	for (size_t c = 0; c <= ncuts; c++) {
		size_t to = c < ncuts ? cuts[c] : len;
		memcpy(buf + have, in + from, to - from);
		have += to - from;
		from = to;
		for (;;) {
			size_t rlen;
			int code;
			enum smtp_reply_status st = smtp_reply_next(&rp, buf, have, &rlen, &code);
			if (st == SMTP_REPLY_BAD) {
				append(t, "BAD");
				return;
			}
			if (st == SMTP_REPLY_AGAIN)
				break;
			char ev[32];
			snprintf(ev, sizeof(ev), "%d/%zu ", code, rlen);
			append(t, ev);
			memmove(buf, buf + rlen, have - rlen);
			have -= rlen;
			memset(&rp, 0, sizeof(rp));
		}
	}
}

struct reply_case {
	const char *label;
	const char *in;
	size_t fill_lines;      /* then this many "250-xxxx\r\n" lines */
	size_t fill_len;        /* then fill_reps "250-" lines this long with CRLF */
	size_t fill_reps;
	bool fill_ends;         /* the last of them is "250 ", ending the reply */
	const char *post;
	const char *want;
};

static const struct reply_case reply_cases[] = {
	{ "one line", "250 OK\r\n", 0, 0, 0, false, "", "250/8 " },
	{ "code alone", "250\r\n", 0, 0, 0, false, "", "250/5 " },
	{ "multi-line", "250-mx\r\n250-PIPELINING\r\n250 SIZE\r\n", 0, 0, 0, false, "", "250/34 " },
	{ "bare LF", "220 mx ESMTP\n", 0, 0, 0, false, "", "220/13 " },
	{ "bare LF multi-line", "250-a\n250 b\n", 0, 0, 0, false, "", "250/12 " },
	{ "two replies", "250 a\r\n354 go ahead\r\n", 0, 0, 0, false, "", "250/7 354/14 " },
	{ "incomplete", "250-a\r\n250 b", 0, 0, 0, false, "", "" },
	{ "5xx", "554-no\r\n554 really\r\n", 0, 0, 0, false, "", "554/20 " },
	{ "empty text", "250 \r\n", 0, 0, 0, false, "", "250/6 " },
	{ "mixed codes", "250-a\r\n251 b\r\n", 0, 0, 0, false, "", "BAD" },
	{ "first digit 1", "150 x\r\n", 0, 0, 0, false, "", "BAD" },
	{ "first digit 6", "650 x\r\n", 0, 0, 0, false, "", "BAD" },
	{ "letter", "25x x\r\n", 0, 0, 0, false, "", "BAD" },
	{ "four digits", "2500 x\r\n", 0, 0, 0, false, "", "BAD" },
	{ "short", "25\r\n", 0, 0, 0, false, "", "BAD" },
	{ "empty line", "\r\n", 0, 0, 0, false, "", "BAD" },
	{ "not smtp", "HTTP/1.1 400\r\n", 0, 0, 0, false, "", "BAD" },
	{ "bad continuation", "250-a\r\nfoo\r\n", 0, 0, 0, false, "", "BAD" },
	{ "line at the limit", "", 0, SMTP_REPLY_LINE_MAX, 1, false, "250 x\r\n", "250/2055 " },
	{ "line over the limit", "", 0, SMTP_REPLY_LINE_MAX + 1, 1, false, "250 x\r\n", "BAD" },
	{ "most lines", "", SMTP_REPLY_LINES_MAX - 1, 0, 0, false, "250 x\r\n", "250/1277 " },
	{ "too many lines", "", SMTP_REPLY_LINES_MAX, 0, 0, false, "250 x\r\n", "BAD" },
	{ "reply at the limit", "", 0, SMTP_REPLY_MAX / 8, 8, true, "", "250/16384 " },
	{ "reply just over", "250-a\r\n", 0, SMTP_REPLY_MAX / 8, 8, true, "", "BAD" },
	{ "reply over the limit", "", 0, SMTP_REPLY_LINE_MAX - 1, 9, false, "", "BAD" },
};

#define FILL_LINE "250-xxxx\r\n"

static size_t
reply_case_build(const struct reply_case *c, char *buf)
{
	size_t n = strlen(c->in);
	memcpy(buf, c->in, n);
	for (size_t k = 0; k < c->fill_lines; k++) {
		memcpy(buf + n, FILL_LINE, strlen(FILL_LINE));
		n += strlen(FILL_LINE);
	}
	for (size_t r = 0; r < c->fill_reps; r++) {
		memcpy(buf + n, c->fill_ends && r + 1 == c->fill_reps ? "250 " : "250-", 4);
		memset(buf + n + 4, 'y', c->fill_len - 6);
		memcpy(buf + n + c->fill_len - 2, "\r\n", 2);
		n += c->fill_len;
	}
	memcpy(buf + n, c->post, strlen(c->post));
	return n + strlen(c->post);
}

START_TEST(test_reply_table)
{
	static char in[FEED_BUF_MAX];
	char got[TRANSCRIPT_MAX];
	const struct reply_case *c = &reply_cases[_i];
	size_t len = reply_case_build(c, in);

	replies_feed(in, len, NULL, 0, got);
	ck_assert_msg(strcmp(got, c->want) == 0, "%s: got \"%s\", want \"%s\"", c->label, got, c->want);
}
END_TEST

START_TEST(test_reply_splits)
{
	static char in[FEED_BUF_MAX];
	static size_t cuts[FEED_BUF_MAX];
	char got[TRANSCRIPT_MAX];
	const struct reply_case *c = &reply_cases[_i];
	size_t len = reply_case_build(c, in);

	/* The big cases are exercised at a sample of split points. */
	size_t step = len > 512 ? 97 : 1;
	for (size_t cut = 0; cut <= len; cut += step) {
		replies_feed(in, len, &cut, 1, got);
		EXPECT(strcmp(got, c->want) == 0, "%s split at %zu: got \"%s\", want \"%s\"",
		    c->label, cut, got, c->want);
	}
	for (size_t k = 0; k < len; k++)
		cuts[k] = k;
	replies_feed(in, len, cuts, len, got);
	EXPECT(strcmp(got, c->want) == 0, "%s byte by byte: got \"%s\", want \"%s\"",
	    c->label, got, c->want);
}
END_TEST

/* ---- the EHLO rewrite --------------------------------------------------- */

#define POSTFIX_EHLO \
	"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n" \
	"250-ETRN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n" \
	"250-XCLIENT NAME ADDR PROTO HELO\r\n250-XFORWARD NAME ADDR\r\n" \
	"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250 CHUNKING\r\n"

#define POSTFIX_KEPT \
	"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n" \
	"250-ETRN\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n" \
	"250-ENHANCEDSTATUSCODES\r\n"

#define INFO_ALL { true, true, true, true, true, 10240000 }
#define INFO_NONE { false, false, false, false, false, 0 }

struct ehlo_case {
	const char *label;
	const char *in;
	struct smtp_ehlo_opts opts;
	const char *want;       /* NULL: -1 */
	struct smtp_ehlo_info info;
	size_t outsz;           /* 0: plenty */
};

static const struct ehlo_case ehlo_cases[] = {
	{ "smtp-sink's empty last line", "250-sink\r\n250-PIPELINING\r\n250 \r\n", { false, false, 1000 },
	  "250-sink\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
	  { .pipelining = true }, 0 },
	{ "postfix as is", POSTFIX_EHLO, { false, false, 0 },
	  POSTFIX_KEPT "250 8BITMIME\r\n", INFO_ALL, 0 },
	{ "postfix, starttls", POSTFIX_EHLO, { true, false, 0 },
	  POSTFIX_KEPT "250-8BITMIME\r\n250 STARTTLS\r\n", INFO_ALL, 0 },
	{ "postfix, hide auth", POSTFIX_EHLO, { false, true, 0 },
	  "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
	  "250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n", INFO_ALL, 0 },
	{ "ours lower", POSTFIX_EHLO, { false, false, 5000000 },
	  "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 5000000\r\n250-VRFY\r\n"
	  "250-ETRN\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n"
	  "250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n", INFO_ALL, 0 },
	{ "ours higher", POSTFIX_EHLO, { false, false, 20000000 },
	  POSTFIX_KEPT "250 8BITMIME\r\n", INFO_ALL, 0 },
	{ "MTA SIZE without value", "250-mx\r\n250-SIZE\r\n250 HELP\r\n", { false, false, 1000 },
	  "250-mx\r\n250-SIZE 1000\r\n250 HELP\r\n", { false, false, false, false, true, 0 }, 0 },
	{ "MTA SIZE 0", "250-mx\r\n250-SIZE 0\r\n250 HELP\r\n", { false, false, 1000 },
	  "250-mx\r\n250-SIZE 1000\r\n250 HELP\r\n", { false, false, false, false, true, 0 }, 0 },
	{ "MTA SIZE 0, ours 0", "250-mx\r\n250 SIZE 0\r\n", { false, false, 0 },
	  "250-mx\r\n250 SIZE 0\r\n", { false, false, false, false, true, 0 }, 0 },
	{ "no MTA SIZE", "250-mx\r\n250 PIPELINING\r\n", { false, false, 1000 },
	  "250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", { true, false, false, false, false, 0 }, 0 },
	{ "no MTA SIZE, starttls", "250-mx\r\n250 PIPELINING\r\n", { true, false, 1000 },
	  "250-mx\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n",
	  { true, false, false, false, false, 0 }, 0 },
	{ "single line", "250 mx\r\n", { false, false, 0 }, "250 mx\r\n", INFO_NONE, 0 },
	{ "single line, additions", "250 mx\r\n", { true, false, 100 },
	  "250-mx\r\n250-SIZE 100\r\n250 STARTTLS\r\n", INFO_NONE, 0 },
	{ "last line removed", "250-mx\r\n250 STARTTLS\r\n", { false, false, 0 },
	  "250 mx\r\n", { false, true, false, false, false, 0 }, 0 },
	{ "STARTTLS once", "250-mx\r\n250 STARTTLS\r\n", { true, false, 0 },
	  "250-mx\r\n250 STARTTLS\r\n", { false, true, false, false, false, 0 }, 0 },
	{ "lower case keywords", "250-mx\r\n250-starttls\r\n250-auth=PLAIN\r\n250-Xforward NAME\r\n"
	  "250-binarymime\r\n250-xclient ADDR\r\n250 chunking\r\n", { false, true, 0 },
	  "250 mx\r\n", { false, true, true, true, false, 0 }, 0 },
	{ "keyword must be whole", "250-mx\r\n250-STARTTLSX\r\n250 AUTHX\r\n", { false, true, 0 },
	  "250-mx\r\n250-STARTTLSX\r\n250 AUTHX\r\n", INFO_NONE, 0 },
	{ "control byte ends keyword", "250-mx\r\n250-STARTTLS\rX\r\n250 XCLIENT\tADDR\r\n",
	  { false, false, 0 }, "250 mx\r\n", { false, true, false, true, false, 0 }, 0 },
	{ "bare LF", "250-mx\n250-PIPELINING\n250 8BITMIME\n", { false, false, 0 },
	  "250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n", { true, false, false, false, false, 0 }, 0 },
	{ "huge SIZE", "250-mx\r\n250 SIZE 99999999999999999999999\r\n", { false, false, 1000 },
	  "250-mx\r\n250 SIZE 1000\r\n", { false, false, false, false, true, UINT64_MAX }, 0 },
	{ "not 250", "502 5.5.1 EHLO not implemented\r\n", { false, false, 0 }, NULL, INFO_NONE, 0 },
	{ "mixed codes", "250-mx\r\n251 x\r\n", { false, false, 0 }, NULL, INFO_NONE, 0 },
	{ "no last line", "250-mx\r\n250-SIZE\r\n", { false, false, 0 }, NULL, INFO_NONE, 0 },
	{ "after last line", "250 mx\r\n250 x\r\n", { false, false, 0 }, NULL, INFO_NONE, 0 },
	{ "empty", "", { false, false, 0 }, NULL, INFO_NONE, 0 },
	{ "out too small", "250-mx\r\n250 PIPELINING\r\n", { false, false, 0 }, NULL,
	  INFO_NONE, 20 },
	{ "out exactly", "250-mx\r\n250 PIPELINING\r\n", { false, false, 0 },
	  "250-mx\r\n250 PIPELINING\r\n", { true, false, false, false, false, 0 }, 24 },
};

START_TEST(test_ehlo_table)
{
	const struct ehlo_case *c = &ehlo_cases[_i];
	char out[4096];
	struct smtp_ehlo_info info;
	size_t outsz = c->outsz != 0 ? c->outsz : sizeof(out);
	long n = smtp_ehlo_rewrite(c->in, strlen(c->in), &c->opts, out, outsz, &info);

	if (c->want == NULL) {
		ck_assert_msg(n == -1, "%s: got %ld \"%.*s\", want -1", c->label, n,
		    n > 0 ? (int)n : 0, out);
		return;
	}
	ck_assert_msg(n >= 0 && (size_t)n == strlen(c->want) && memcmp(out, c->want, (size_t)n) == 0,
	    "%s: got %ld \"%.*s\", want \"%s\"", c->label, n, n > 0 ? (int)n : 0, out, c->want);
	ck_assert_msg(info.pipelining == c->info.pipelining && info.starttls == c->info.starttls &&
	    info.auth == c->info.auth && info.xclient == c->info.xclient &&
	    info.size == c->info.size && info.size_value == c->info.size_value,
	    "%s: info got p%d s%d a%d x%d z%d/%llu, want p%d s%d a%d x%d z%d/%llu", c->label,
	    info.pipelining, info.starttls, info.auth, info.xclient, info.size,
	    (unsigned long long)info.size_value, c->info.pipelining, c->info.starttls,
	    c->info.auth, c->info.xclient, c->info.size, (unsigned long long)c->info.size_value);
	/* The rewrite must itself be a well-formed 250 reply. */
	struct smtp_replyparser rp = { 0 };
	size_t rlen;
	int code;
	ck_assert_msg(smtp_reply_next(&rp, out, (size_t)n, &rlen, &code) == SMTP_REPLY_OK &&
	    rlen == (size_t)n && code == 250, "%s: output is not one 250 reply", c->label);
}
END_TEST

START_TEST(test_ehlo_null_info)
{
	struct smtp_ehlo_opts opts = { true, false, 0 };
	char out[64];
	long n = smtp_ehlo_rewrite("250 mx\r\n", 8, &opts, out, sizeof(out), NULL);
	ck_assert_int_eq(n, (long)strlen("250-mx\r\n250 STARTTLS\r\n"));
}
END_TEST

/* More lines than the reply splitter lets through is not an EHLO reply. */
START_TEST(test_ehlo_too_many_lines)
{
	static char in[(SMTP_REPLY_LINES_MAX + 1) * 16];
	struct smtp_ehlo_opts opts = { false, false, 0 };
	static char out[sizeof(in) * 2];
	size_t n = 0;

	for (unsigned k = 0; k < SMTP_REPLY_LINES_MAX; k++)
		n += (size_t)snprintf(in + n, sizeof(in) - n, "250-X%u\r\n", k);
	n += (size_t)snprintf(in + n, sizeof(in) - n, "250 LAST\r\n");
	long r = smtp_ehlo_rewrite(in, n, &opts, out, sizeof(out), NULL);
	ck_assert_msg(r == -1, "%u lines: got %ld, want -1", SMTP_REPLY_LINES_MAX + 1, r);
	/* one line fewer is fine */
	size_t cut = (size_t)(strstr(in, "250-X127\r\n") - in);
	memcpy(in + cut, "250 LAST\r\n", strlen("250 LAST\r\n"));
	r = smtp_ehlo_rewrite(in, cut + strlen("250 LAST\r\n"), &opts, out, sizeof(out), NULL);
	ck_assert_msg(r > 0, "%u lines: got %ld", SMTP_REPLY_LINES_MAX, r);
}
END_TEST

Suite *
smtp_suite(void)
{
	Suite *s = suite_create("smtp");
	TCase *tc = tcase_create("lines");
	tcase_add_loop_test(tc, test_line_table, 0, NELEM(line_cases));
	tcase_add_loop_test(tc, test_line_splits, 0, NELEM(line_cases));
	tcase_add_test(tc, test_line_too_long_early);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("commands");
	tcase_add_loop_test(tc, test_cmd_table, 0, NELEM(cmd_cases));
	tcase_add_loop_test(tc, test_cmd_limits, 0, NELEM(cmd_limit_cases));
	tcase_add_loop_test(tc, test_param_find, 0, NELEM(param_cases));
	tcase_add_test(tc, test_param_find_null);
	tcase_add_test(tc, test_verb_name);
	suite_add_tcase(s, tc);

	tc = tcase_create("replies");
	tcase_add_loop_test(tc, test_reply_table, 0, NELEM(reply_cases));
	tcase_add_loop_test(tc, test_reply_splits, 0, NELEM(reply_cases));
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("ehlo");
	tcase_add_loop_test(tc, test_ehlo_table, 0, NELEM(ehlo_cases));
	tcase_add_test(tc, test_ehlo_null_info);
	tcase_add_test(tc, test_ehlo_too_many_lines);
	suite_add_tcase(s, tc);
	return s;
}
