/*
 * log.c - event lines to stderr, syslog or a file, as text or JSON.
 */
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_target log_target = LOG_TARGET_STDERR;
static enum log_format log_fmt = LOG_FORMAT_TEXT;
static char *log_path;
static FILE *log_fp;
static int log_fd = 2;                /* where batched lines go: stderr or the file */

/*
 * Lines are batched and written once per event-loop iteration (log_flush()
 * from the loop's prepare hook), so a busy proxy pays one write() for many
 * lines instead of one per line.
 */
static char pending[LOG_BATCH_MAX];
static size_t pending_len;
static bool log_batching;

static const char hexdig[] = "0123456789abcdef";

struct out {
	char *p;
	size_t len, cap;     /* cap excludes the final NUL */
	int full;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->len + n > o->cap) {
		n = o->cap - o->len;
		o->full = 1;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void putc1(struct out *o, char c)
{
	put(o, &c, 1);
}

/* Text values are quoted when they hold a space, '=' or '"', or are empty. */
static int needs_quotes(const char *v, size_t n)
{
	if (n == 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f)
			return 1;
	}
	return 0;
}

/*
 * The length of the well-formed UTF-8 sequence of two or more bytes at p
 * (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF) and
 * its code point in *cp, or 0.
 */
static size_t utf8_decode(const unsigned char *p, size_t n, unsigned *cp)
{
	size_t len;
	unsigned lo = 0x80, hi = 0xbf;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (len > n)
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	*cp = p[0] & (0x7fu >> len);
	for (size_t k = 1; k < len; k++) {
		if (k > 1 && (p[k] < 0x80 || p[k] > 0xbf))
			return 0;
		*cp = *cp << 6 | (p[k] & 0x3fu);
	}
	return len;
}

/*
 * Characters that are well-formed but unsafe in a log line: C1 controls,
 * U+2028/2029 (line ends for some readers) and the bidi embeddings and
 * isolates, which can make a line read otherwise than it is written.
 */
static bool unsafe_char(unsigned cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || (cp >= 0x2028 && cp <= 0x202e) ||
	    (cp >= 0x2066 && cp <= 0x2069);
}

static void put_hex_escape(struct out *o, unsigned cp, enum log_format fmt)
{
	char esc[6];

	if (fmt == LOG_FORMAT_JSON) {
		esc[0] = '\\';
		esc[1] = 'u';
		for (int k = 0; k < 4; k++)
			esc[2 + k] = hexdig[(cp >> (12 - 4 * k)) & 15];
		put(o, esc, 6);
	} else {
		esc[0] = '\\';
		esc[1] = 'x';
		esc[2] = hexdig[(cp >> 4) & 15];
		esc[3] = hexdig[cp & 15];
		put(o, esc, 4);
	}
}

/*
 * Escape so the value can never end the line or the JSON string early.
 * Well-formed UTF-8 (a name, an SMTPUTF8 address) is kept as it is; unsafe
 * characters are escaped as the character (JSON) or as their bytes (text),
 * and any other byte outside printable ASCII as itself.
 */
static void put_escaped(struct out *o, const char *v, size_t n, enum log_format fmt)
{
	size_t cut = n > LOG_VALUE_MAX ? LOG_VALUE_MAX : n;

	for (size_t i = 0; i < cut; i++) {
		unsigned char c = (unsigned char)v[i];
		unsigned cp = 0;
		size_t u = c >= 0x80 ? utf8_decode((const unsigned char *)v + i, cut - i, &cp) : 0;
		if (u && !unsafe_char(cp)) {
			put(o, v + i, u);
			i += u - 1;
		} else if (u && fmt == LOG_FORMAT_JSON) {
			put_hex_escape(o, cp, fmt);
			i += u - 1;
		} else if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };
			put(o, esc, 2);
		} else if (c < 0x20 || c >= 0x7f) {
			put_hex_escape(o, c, fmt);
		} else {
			putc1(o, (char)c);
		}
	}
	if (cut < n)
		put(o, "...", 3);
}

static void put_field(struct out *o, const char *key, const char *val, size_t n,
    enum log_format fmt, int first, int number)
{
	if (fmt == LOG_FORMAT_JSON) {
		if (!first)
			putc1(o, ',');
		putc1(o, '"');
		put(o, key, strlen(key));
		if (number) {
			put(o, "\":", 2);
			put(o, val, n);
		} else {
			put(o, "\":\"", 3);
			put_escaped(o, val, n, fmt);
			putc1(o, '"');
		}
		return;
	}
	if (!first)
		putc1(o, ' ');
	put(o, key, strlen(key));
	putc1(o, '=');
	if (needs_quotes(val, n)) {
		putc1(o, '"');
		put_escaped(o, val, n, fmt);
		putc1(o, '"');
	} else {
		put(o, val, n);
	}
}

size_t log_format_line(enum log_format fmt, const char *session, const char *event,
    const struct log_field *fields, char *buf, size_t bufsz)
{
	struct out o = { buf, 0, bufsz > 6 ? bufsz - 6 : 0, 0 };
	int first = 1;

	if (bufsz == 0)
		return 0;
	if (fmt == LOG_FORMAT_JSON)
		putc1(&o, '{');
	if (session) {
		put_field(&o, "session", session, strlen(session), fmt, first, 0);
		first = 0;
	}
	if (fmt == LOG_FORMAT_JSON) {
		put_field(&o, "event", event, strlen(event), fmt, first, 0);
	} else {
		if (!first)
			putc1(&o, ' ');
		put(&o, event, strlen(event));
	}
	first = 0;
	size_t whole = o.len;   /* end of the last field that fit entirely */
	for (const struct log_field *f = fields; f && f->key && !o.full; f++) {
		if (!f->val)
			continue;
		size_t n = f->len == (size_t)-1 ? strlen(f->val) : f->len;
		/* Only digits may go out unquoted: anything else stays a string. */
		int number = f->number && n > 0 && strspn(f->val, "0123456789") >= n;
		put_field(&o, f->key, f->val, n, fmt, first, number);
		if (!o.full)
			whole = o.len;
	}
	/* A cut line keeps only whole fields, so it still parses; the 6 spare
	 * bytes hold the cut marker or the closing brace, and "\n\0". */
	if (o.full) {
		o.len = whole;
		if (fmt == LOG_FORMAT_TEXT) {
			memcpy(o.p + o.len, " ...", 4);
			o.len += 4;
		}
	}
	if (fmt == LOG_FORMAT_JSON)
		o.p[o.len++] = '}';
	o.p[o.len++] = '\n';
	o.p[o.len] = '\0';
	return o.len;
}

FILE *log_file_open(const char *file)
{
	return fopen(file, "a");
}

int log_use(enum log_target target, FILE *fp, const char *file, enum log_format format)
{
	char *path = NULL;

	if (fp && !(path = strdup(file))) {
		fclose(fp);
		return -1;
	}
	log_close();
	log_target = target;
	log_fmt = format;
	log_fp = fp;
	log_fd = fp ? fileno(fp) : STDERR_FILENO;
	log_path = path;
	if (target == LOG_TARGET_SYSLOG)
		openlog("smtpgate", LOG_PID | LOG_NDELAY, LOG_MAIL);
	return 0;
}

int log_open(enum log_target target, const char *file, enum log_format format)
{
	FILE *fp = NULL;

	if (target == LOG_TARGET_FILE && !(fp = log_file_open(file)))
		return -1;
	return log_use(target, fp, file, format);
}

int log_reopen(void)
{
	if (log_target != LOG_TARGET_FILE)
		return 0;
	FILE *fp = fopen(log_path, "a");
	if (!fp)
		return -1;
	log_flush();
	fclose(log_fp);
	log_fp = fp;
	log_fd = fileno(fp);
	return 0;
}

void log_close(void)
{
	log_flush();
	if (log_fp)
		fclose(log_fp);
	if (log_target == LOG_TARGET_SYSLOG)
		closelog();
	log_fp = NULL;
	log_fd = STDERR_FILENO;
	free(log_path);
	log_path = NULL;
	log_target = LOG_TARGET_STDERR;
}

void log_event(const char *session, const char *event, const struct log_field *fields)
{
	char line[LOG_LINE_MAX];
	size_t n = log_format_line(log_fmt, session, event, fields, line, sizeof line);

	switch (log_target) {
	case LOG_TARGET_SYSLOG:
		line[n - 1] = '\0';
		syslog(LOG_INFO, "%s", line);
		break;
	case LOG_TARGET_FILE:
	case LOG_TARGET_STDERR:
		if (pending_len + n > sizeof pending)
			log_flush();
		memcpy(pending + pending_len, line, n);
		pending_len += n;
		if (!log_batching)
			log_flush();
		break;
	}
}

void log_flush(void)
{
	size_t off = 0;

	/* Whole lines only, so lines stay whole when several writers share the fd. */
	while (off < pending_len) {
		ssize_t w = write(log_fd, pending + off, pending_len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;           /* nowhere to log to: drop rather than block */
		off += (size_t)w;
	}
	pending_len = 0;
}

void log_set_batching(bool on)
{
	log_batching = on;
	if (!on)
		log_flush();
}

void log_msg(const char *event, const char *fmt, ...)
{
	char msg[LOG_VALUE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct log_field f[] = { { "msg", msg, (size_t)-1, 0 }, { NULL, NULL, 0, 0 } };
	log_event(NULL, event, f);
}
