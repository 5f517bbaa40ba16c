/*
 * data.c - the DATA body scanner (SPEC §3.6): finds the one true end of a
 * message, <CR><LF>.<CR><LF>, across any read boundaries, and rewrites bare
 * newlines so that the MTA behind us can never see an end where we do not
 * (SMTP smuggling, CVE-2023-51764).
 *
 * Every body byte of every message goes through data_feed(), so ordinary
 * runs of bytes are found with memchr() and copied with memcpy(); the byte
 * state machine only runs at CR, LF and at the first byte of a line.
 */
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "data.h"

#define CR '\r'
#define LF '\n'

/* Room data_feed() keeps on top of DATA_EXPANSION * inlen: the bytes held
 * from the previous call (".\r") can be emitted as "..\r\n" plus one. */
#define DATA_SLACK 5
/* Room kept free before each step: the most one byte can produce (".\r" then "." gives "..\r\n.."). */
#define DATA_ROOM_STEP 6
/* ".\r\n": the part of the terminator that is not the last line's CRLF. */
#define DATA_DOT_LINE_LEN 3

/*
 * Scanner states.  Whatever is "pending" was consumed but not yet written,
 * because the next byte decides what it becomes.
 */
enum {
	ST_LINE_START = 0, /* after a real CRLF (or the 354): a '.' may end it */
	ST_MID,            /* inside a line */
	ST_CR,             /* pending CR: CRLF or a bare CR */
	ST_BARE_START,     /* after a bare newline (normalized): '.' is stuffed */
	ST_DOT,            /* pending '.' at a line start */
	ST_DOT_CR,         /* pending ".\r" at a line start */
};

void
data_begin(struct data_state *ds, enum bare_newline mode)
{
	memset(ds, 0, sizeof(*ds));
	ds->mode = mode;
	ds->st = ST_LINE_START;
}

struct emitter {
	char *out;
	size_t len;
	size_t dots;            /* transparency dots met (RFC 5321 4.5.2) */
};

static void
put(struct emitter *e, const char *s, size_t n)
{
	memcpy(e->out + e->len, s, n);
	e->len += n;
}

/*
 * One byte through the state machine.  Returns true when c completed the
 * terminator.  States that cannot be decided by c alone hand c on to the
 * state they fall into, so each byte is consumed exactly once.
 */
static bool
step(struct data_state *ds, struct emitter *e, char c)
{
	bool norm = ds->mode != BARE_NEWLINE_ALLOW;

	for (;;) {
		switch (ds->st) {
		case ST_LINE_START:
			if (c == '.') {
				ds->st = ST_DOT;
				return false;
			}
			ds->st = ST_MID;
			continue;
		case ST_BARE_START:
			if (c == '.') {
				/* The MTA will see this line start after a CRLF
				 * we made up; stuff it so it is never an end. */
				put(e, "..", 2);
				ds->st = ST_MID;
				return false;
			}
			ds->st = ST_MID;
			continue;
		case ST_MID:
			if (c == CR) {
				ds->st = ST_CR;
			} else if (c == LF) {
				ds->seen_bare = true;
				if (norm) {
					put(e, "\r\n", 2);
					ds->st = ST_BARE_START;
				} else {
					put(e, "\n", 1);
				}
			} else {
				put(e, &c, 1);
			}
			return false;
		case ST_CR:
			if (c == LF) {
				put(e, "\r\n", 2);
				ds->st = ST_LINE_START;
				return false;
			}
			ds->seen_bare = true;
			if (norm) {
				put(e, "\r\n", 2);
				ds->st = ST_BARE_START;
			} else {
				put(e, "\r", 1);
				ds->st = ST_MID;
			}
			continue;
		case ST_DOT:
			if (c == CR) {
				ds->st = ST_DOT_CR;
				return false;
			}
			if (c == LF && norm) {
				/* "\r\n.\n" is no end here; normalized without the
				 * stuffing it would become one at the MTA. */
				ds->seen_bare = true;
				put(e, "..\r\n", 4);
				ds->st = ST_BARE_START;
				return false;     /* the MTA keeps this dot: content */
			}
			/* An ordinary line (or one the client stuffed, "..x"),
			 * passed on unchanged. */
			put(e, ".", 1);
			ds->st = ST_MID;
			e->dots++;
			continue;
		case ST_DOT_CR:
			if (c == LF) {
				/* The CRLF before the dot was already written, or
				 * for an empty body the 354 line's CRLF serves as
				 * it: either way the MTA now sees CRLF.CRLF. */
				put(e, ".\r\n", DATA_DOT_LINE_LEN);
				ds->st = ST_LINE_START;
				return true;
			}
			ds->seen_bare = true;
			if (norm) {
				put(e, "..\r\n", 4);   /* the MTA keeps one dot */
				ds->st = ST_BARE_START;
			} else {
				e->dots++;
				put(e, ".\r", 2);
				ds->st = ST_MID;
			}
			continue;
		default:
			/* Not reachable from data_begin(); restart cleanly
			 * rather than write through an unknown state. */
			ds->st = ST_MID;
			continue;
		}
	}
}

/* Where the next CR or LF is in p[0..n), n when there is none. */
static size_t
next_newline_byte(const char *p, size_t n)
{
	size_t k = 0;

#if defined(__SSE2__)
	/* Both bytes in one pass: a body line is short, and two memchr()
	 * calls per line cost more in set-up than in scanning. */
	const __m128i cr = _mm_set1_epi8(CR), lf = _mm_set1_epi8(LF);
	for (; k + 16 <= n; k += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + k));
		unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr),
		    _mm_cmpeq_epi8(v, lf)));
		if (m != 0)
			return k + (size_t)__builtin_ctz(m);
	}
#endif
	for (; k < n; k++)
		if (p[k] == CR || p[k] == LF)
			return k;
	return n;
}

/*
 * The length of the longest prefix of p[0..n) that the scanner would pass
 * on unchanged from ST_MID or from ST_LINE_START before a byte other than
 * '.': ordinary bytes and CRLFs, each CRLF followed by a byte other than
 * '.'.  It stops before a bare CR or LF, before a CR whose LF is not in
 * sight yet, and just after a CRLF that a '.' or nothing follows, leaving
 * each of those to step().  *line_start tells whether it ended on a CRLF.
 */
static size_t
plain_run(const char *p, size_t n, bool *line_start)
{
	size_t k = 0;

	*line_start = false;
	for (;;) {
		k += next_newline_byte(p + k, n - k);
		if (k + 1 >= n || p[k] != CR || p[k + 1] != LF)
			return k;
		k += 2;
		*line_start = true;
		if (k == n || p[k] == '.')
			return k;
		if (p[k] != CR && p[k] != LF)
			*line_start = false;
	}
}

enum data_status
data_feed(struct data_state *ds, const char *in, size_t inlen,
    char *out, size_t outsz, size_t *consumed, size_t *produced)
{
	struct emitter e = { .out = out, .len = 0, .dots = 0 };
	size_t i = 0;
	enum data_status status = DATA_MORE;

	/*
	 * Scan as far as out has room: runs of bytes that pass unchanged are
	 * found in one pass and copied whole, so a full buffer's worth goes
	 * out in one piece, and the byte machine is entered only while a
	 * worst-case step still fits.  A caller that gives DATA_EXPANSION *
	 * inlen + DATA_SLACK bytes ("roomy") gets all its input taken, as the
	 * worst case of the whole call fits.
	 */
	bool roomy = outsz >= DATA_SLACK && (outsz - DATA_SLACK) / DATA_EXPANSION >= inlen;

	while (i < inlen && (roomy || outsz - e.len >= DATA_ROOM_STEP)) {
		if (ds->st == ST_MID || (ds->st == ST_LINE_START && in[i] != '.')) {
			size_t room = outsz - e.len, avail = inlen - i;
			bool line_start;
			size_t run = plain_run(in + i, avail < room ? avail : room, &line_start);
			if (run > 0) {
				put(&e, in + i, run);
				i += run;
				ds->st = line_start ? ST_LINE_START : ST_MID;
				continue;
			}
		}
		if (step(ds, &e, in[i++])) {
			status = DATA_END;
			break;
		}
	}

	/* RFC 1870 counts the message, not its transport: no dot a line
	 * begins with (the receiver deletes it), no terminator. */
	ds->bytes += i - e.dots;
	if (status == DATA_END)
		ds->bytes -= DATA_DOT_LINE_LEN;
	*consumed = i;
	*produced = e.len;
	return status;
}

uint64_t
data_size(const struct data_state *ds)
{
	/* A held "." or ".\r" at a line start may still be the terminator. */
	return ds->bytes - (ds->st == ST_DOT ? 1 : ds->st == ST_DOT_CR ? 2 : 0);
}
