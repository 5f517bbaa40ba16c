/*
 * fuzz_smtp.c - libFuzzer harness for the SMTP parsers (proxy/smtp.c): the
 * line splitter fed in input-chosen pieces, the command parser on every
 * line it yields, the reply splitter, and the EHLO rewrite, each checked
 * against the invariants the session code relies on.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp.h"

#define BUF_MAX (4 * SMTP_REPLY_MAX)
#define EHLO_OUT_MAX (2 * SMTP_REPLY_MAX)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static bool
within(const char *p, size_t n, const char *base, size_t len)
{
	return p >= base && p + n <= base + len;
}

static void
check_cmd(const char *line, size_t len)
{
	struct smtp_cmd cmd;
	enum smtp_cmd_status st = smtp_cmd_parse(line, len, &cmd);

	REQUIRE(st == SMTP_CMD_OK || st == SMTP_CMD_SYNTAX || st == SMTP_CMD_TOO_LONG);
	REQUIRE(cmd.verb < SMTP_VERB_COUNT);
	REQUIRE(smtp_verb_name(cmd.verb) != NULL);
	REQUIRE(within(cmd.arg, cmd.arglen, line, len));
	if (st != SMTP_CMD_OK)
		return;
	if (cmd.pathlen > 0) {
		REQUIRE(within(cmd.path, cmd.pathlen, line, len));
		REQUIRE(cmd.pathlen + 2 <= SMTP_PATH_MAX);
	}
	if (cmd.params != NULL) {
		REQUIRE(within(cmd.params, cmd.paramslen, line, len));
		const char *val;
		size_t vallen;
		if (smtp_param_find(cmd.params, cmd.paramslen, "SIZE", &val, &vallen))
			REQUIRE(within(val, vallen, cmd.params, cmd.paramslen));
	}
	if (cmd.verb != SMTP_VERB_AUTH && cmd.params == NULL)
		REQUIRE(len <= SMTP_LINE_MAX - 2);
}

/* Split data into lines, cutting the input where the fuzzer's own bytes
 * say (every byte < 8 ends a read), as a socket would. */
static void
fuzz_lines(const char *in, size_t len)
{
	static char buf[BUF_MAX];
	struct smtp_lineparser lp = { 0 };
	size_t have = 0, from = 0;

	while (from < len) {
		size_t to = from + 1;
		while (to < len && (unsigned char)in[to] >= 8)
			to++;
		if (have + (to - from) > sizeof(buf))
			return;
		memcpy(buf + have, in + from, to - from);
		have += to - from;
		from = to;
		for (;;) {
			size_t linelen, consumed;
			enum smtp_line_status st = smtp_line_next(&lp, buf, have, &linelen, &consumed);
			REQUIRE(consumed <= have);
			if (st == SMTP_LINE_OK) {
				/* CRLF, or a bare LF, which also ends a command line */
				REQUIRE((consumed == linelen + 2 && buf[linelen] == '\r') ||
				    (consumed == linelen + 1 && buf[linelen] == '\n'));
				REQUIRE(consumed <= SMTP_LINE_MAX_PARAMS);
				REQUIRE(memchr(buf, '\n', linelen) == NULL);
				REQUIRE(memchr(buf, '\r', linelen) == NULL);
				REQUIRE(memchr(buf, '\0', linelen) == NULL);
				check_cmd(buf, linelen);
			} else if (st == SMTP_LINE_BAD) {
				REQUIRE(consumed > 0 && buf[consumed - 1] == '\n');
			} else if (st == SMTP_LINE_TOO_LONG) {
				REQUIRE(consumed > 0 && consumed <= SMTP_LINE_MAX_PARAMS);
			} else if (consumed == 0) {
				REQUIRE(have < SMTP_LINE_MAX_PARAMS);
			}
			memmove(buf, buf + consumed, have - consumed);
			have -= consumed;
			if (st == SMTP_LINE_AGAIN && consumed == 0)
				break;
		}
	}
}

static void
fuzz_replies(const char *in, size_t len)
{
	struct smtp_replyparser rp = { 0 };
	size_t off = 0;

	/* fed as it grows, one byte more each time, to exercise resuming */
	for (size_t have = 1; off + have <= len; have++) {
		size_t rlen;
		int code;
		enum smtp_reply_status st = smtp_reply_next(&rp, in + off, have, &rlen, &code);
		if (st == SMTP_REPLY_BAD)
			return;
		if (st == SMTP_REPLY_OK) {
			REQUIRE(rlen == have && rlen <= SMTP_REPLY_MAX);
			REQUIRE(code >= 200 && code <= 599);
			REQUIRE(in[off + rlen - 1] == '\n');
			off += rlen;
			have = 0;
			memset(&rp, 0, sizeof(rp));
		} else {
			REQUIRE(have < SMTP_REPLY_MAX);
		}
	}
}

/* Is the capability text t (up to its CRLF) the keyword kw? */
static bool
cap_is(const char *t, size_t n, const char *kw)
{
	size_t k = strlen(kw);
	return n >= k && strncasecmp(t, kw, k) == 0 &&
	    (n == k || !(isalnum((unsigned char)t[k]) || t[k] == '-'));
}

static void
fuzz_ehlo(const char *in, size_t len, uint8_t flags)
{
	static char out[EHLO_OUT_MAX];
	struct smtp_ehlo_opts opts = {
		.starttls = flags & 1,
		.hide_auth = (flags & 2) != 0,
		.max_size = (flags & 4) ? 0 : (uint64_t)flags * 1000,
	};
	struct smtp_ehlo_info info;
	long n = smtp_ehlo_rewrite(in, len, &opts, out, sizeof(out), &info);
	if (n < 0)
		return;
	REQUIRE((size_t)n <= sizeof(out));
	/* The output is one well-formed 250 reply: "250-" lines, then one
	 * "250 " line, each ended by CRLF (a CR may remain inside the text,
	 * as the MTA sent it, but never an LF). */
	REQUIRE(n >= 6 && out[n - 2] == '\r' && out[n - 1] == '\n');
	size_t start = 0, lines = 0;
	unsigned starttls = 0;
	while (start < (size_t)n) {
		const char *lf = memchr(out + start, '\n', (size_t)n - start);
		REQUIRE(lf != NULL);
		size_t end = (size_t)(lf - out) + 1;
		bool last = end == (size_t)n;
		REQUIRE(end - start >= 6 && out[end - 2] == '\r');
		REQUIRE(memcmp(out + start, last ? "250 " : "250-", 4) == 0);
		const char *t = out + start + 4;
		size_t tn = end - start - 4;
		if (lines > 0) {
			REQUIRE(!cap_is(t, tn, "XCLIENT") && !cap_is(t, tn, "XFORWARD") &&
			    !cap_is(t, tn, "CHUNKING") && !cap_is(t, tn, "BINARYMIME"));
			REQUIRE(!opts.hide_auth || !cap_is(t, tn, "AUTH"));
			if (cap_is(t, tn, "STARTTLS"))
				starttls++;
		}
		start = end;
		lines++;
	}
	REQUIRE(starttls == (opts.starttls ? 1u : 0u));
	/* at most the MTA's lines plus SIZE and STARTTLS */
	REQUIRE(lines <= SMTP_REPLY_LINES_MAX + 2);
	(void)info;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *in = (const char *)data + 1;
	size_t len = size - 1;

	switch (data[0] % 3) {
	case 0:
		fuzz_lines(in, len);
		break;
	case 1:
		fuzz_replies(in, len);
		break;
	default:
		fuzz_ehlo(in, len, data[0]);
		break;
	}
	return 0;
}
