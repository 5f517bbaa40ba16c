/*
 * check_data.c - the DATA body scanner (proxy/data.c): the end of a message
 * at every read boundary, the SMTP smuggling bodies in every bare_newline
 * mode, and equivalence of one-shot and piecewise feeding.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "suites.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define BODY_MAX 4096
#define OUT_MAX (DATA_EXPANSION * BODY_MAX + 5)
#define RANDOM_ROUNDS 3000
#define RANDOM_LEN_MAX 300
#define PRNG_SEED 0x5eed5eedu

/* Check reports every passing ck_assert to the runner; in the hot loops
 * only a failure is worth a message. */
#define EXPECT(cond, ...) do { if (!(cond)) ck_abort_msg(__VA_ARGS__); } while (0)

static const enum bare_newline modes[] = {
	BARE_NEWLINE_NORMALIZE, BARE_NEWLINE_REJECT, BARE_NEWLINE_ALLOW,
};
static const char *const mode_names[] = { "normalize", "reject", "allow" };

struct fed {
	char out[OUT_MAX];
	size_t outlen;
	bool end;
	size_t consumed;        /* of the whole input */
	bool seen_bare;
	uint64_t bytes;
};

/* Output room per call; 0 gives plenty, so each call must take all its input. */
static size_t feed_outcap;

/* Feed in[0..len) in pieces ending at cuts[], stopping at DATA_END as a
 * session would (the rest is commands).  With a small feed_outcap a piece
 * takes several calls, as a session with a nearly full buffer makes them. */
static void
feed(enum bare_newline mode, const char *in, size_t len, const size_t *cuts,
    size_t ncuts, struct fed *f)
{
	struct data_state ds;
	size_t from = 0;

	data_begin(&ds, mode);
	memset(f, 0, sizeof(*f));
	for (size_t c = 0; c <= ncuts && !f->end; c++) {
		size_t to = c < ncuts ? cuts[c] : len;
		while (from < to && !f->end) {
			size_t consumed, produced;
			size_t room = OUT_MAX - f->outlen;
			if (feed_outcap && feed_outcap < room)
				room = feed_outcap;
			enum data_status st = data_feed(&ds, in + from, to - from, f->out + f->outlen,
			    room, &consumed, &produced);
			EXPECT(produced <= room, "produced %zu into %zu", produced, room);
			if (st == DATA_MORE && !feed_outcap)
				EXPECT(consumed == to - from, "MORE consumed %zu of %zu",
				    consumed, to - from);
			EXPECT(consumed > 0 || st == DATA_END, "no progress with %zu bytes of room", room);
			f->outlen += produced;
			from += consumed;
			f->end = st == DATA_END;
		}
	}
	f->consumed = from;
	f->seen_bare = ds.seen_bare;
	f->bytes = ds.bytes;
}

/* ---- the end of the message at every split ----------------------------- */

struct end_case {
	const char *label;
	const char *in;
	const char *want_out;
	size_t want_consumed;
	uint64_t want_bytes;
};

static const struct end_case end_cases[] = {
	{ "one line", "abc\r\n.\r\nQUIT\r\n", "abc\r\n.\r\n", 8, 5 },
	{ "empty body", ".\r\nQUIT\r\n", ".\r\n", 3, 0 },
	{ "empty line body", "\r\n.\r\n", "\r\n.\r\n", 5, 2 },
	{ "headers and body", "Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\n",
	  "Subject: x\r\n\r\nbody\r\n.\r\n", 23, 20 },
	/* RFC 1870: the transparency dots are not the message's */
	{ "stuffed lines", "..x\r\n..\r\n.\r\n", "..x\r\n..\r\n.\r\n", 12, 7 },
	{ "dot lines", ".a\r\n.\r\n", ".a\r\n.\r\n", 7, 3 },
	{ "dot line after CR CR LF", "a\r\r\n.\r\n", NULL, 7, 4 },
};

START_TEST(test_end_every_split)
{
	const struct end_case *c = &end_cases[_i];
	size_t len = strlen(c->in);
	struct fed f;

	for (size_t m = 0; m < NELEM(modes); m++) {
		for (size_t cut = 0; cut <= len; cut++) {
			feed(modes[m], c->in, len, &cut, 1, &f);
			ck_assert_msg(f.end, "%s/%s split at %zu: no end", c->label, mode_names[m], cut);
			ck_assert_msg(f.consumed == c->want_consumed, "%s/%s split at %zu: consumed %zu, want %zu",
			    c->label, mode_names[m], cut, f.consumed, c->want_consumed);
			ck_assert_msg(f.bytes == c->want_bytes, "%s/%s split at %zu: bytes %llu, want %llu",
			    c->label, mode_names[m], cut, (unsigned long long)f.bytes,
			    (unsigned long long)c->want_bytes);
			if (c->want_out != NULL)
				ck_assert_msg(f.outlen == strlen(c->want_out) &&
				    memcmp(f.out, c->want_out, f.outlen) == 0,
				    "%s/%s split at %zu: got \"%.*s\", want \"%s\"", c->label,
				    mode_names[m], cut, (int)f.outlen, f.out, c->want_out);
			ck_assert_msg(!f.seen_bare || c->want_out == NULL,
			    "%s/%s: seen_bare on a clean body", c->label, mode_names[m]);
		}
	}
}
END_TEST

/* ---- the smuggling bodies, mode by mode --------------------------------- */

/* Dots that begin a line after a real CRLF (or the body): transparency,
 * deleted by the receiver, so not counted in the size (RFC 1870). */
static size_t
line_start_dots(const char *in, size_t n, bool norm)
{
	size_t d = 0;

	for (size_t k = 0; k < n; k++) {
		if (in[k] != '.' || !(k == 0 || (k >= 2 && in[k - 1] == '\n' && in[k - 2] == '\r')))
			continue;
		/* normalized, a dot line a bare newline ends is stuffed and its
		 * dot stays content */
		bool bare_next = k + 1 < n && (in[k + 1] == '\n' ||
		    (in[k + 1] == '\r' && (k + 2 >= n || in[k + 2] != '\n')));
		if (!(norm && bare_next))
			d++;
	}
	return d;
}

struct smuggle_case {
	const char *label;
	enum bare_newline mode;
	const char *in;
	const char *want_out;   /* through the end */
	size_t want_consumed;
	bool want_bare;
};

#define N BARE_NEWLINE_NORMALIZE
#define R BARE_NEWLINE_REJECT
#define A BARE_NEWLINE_ALLOW
#define TAIL "b\r\n.\r\nQUIT\r\n"
#define TAIL_OUT "b\r\n.\r\n"

static const struct smuggle_case smuggle_cases[] = {
	{ "LF.LF normalize", N, "a\n.\n" TAIL, "a\r\n..\r\n" TAIL_OUT, 10, true },
	{ "LF.LF reject", R, "a\n.\n" TAIL, "a\r\n..\r\n" TAIL_OUT, 10, true },
	{ "LF.LF allow", A, "a\n.\n" TAIL, "a\n.\n" TAIL_OUT, 10, true },
	{ "CR.CR normalize", N, "a\r.\r" TAIL, "a\r\n..\r\n" TAIL_OUT, 10, true },
	{ "CR.CR reject", R, "a\r.\r" TAIL, "a\r\n..\r\n" TAIL_OUT, 10, true },
	{ "CR.CR allow", A, "a\r.\r" TAIL, "a\r.\r" TAIL_OUT, 10, true },
	{ "LF.CRLF normalize", N, "a\n.\r\n" TAIL, "a\r\n..\r\n" TAIL_OUT, 11, true },
	{ "LF.CRLF reject", R, "a\n.\r\n" TAIL, "a\r\n..\r\n" TAIL_OUT, 11, true },
	{ "LF.CRLF allow", A, "a\n.\r\n" TAIL, "a\n.\r\n" TAIL_OUT, 11, true },
	{ "CRLF.LF normalize", N, "a\r\n.\n" TAIL, "a\r\n..\r\n" TAIL_OUT, 11, true },
	{ "CRLF.LF reject", R, "a\r\n.\n" TAIL, "a\r\n..\r\n" TAIL_OUT, 11, true },
	{ "CRLF.LF allow", A, "a\r\n.\n" TAIL, "a\r\n.\n" TAIL_OUT, 11, true },
	{ "CRLF.CR normalize", N, "a\r\n.\r" TAIL, "a\r\n..\r\n" TAIL_OUT, 11, true },
	{ "CRLF.CR reject", R, "a\r\n.\r" TAIL, "a\r\n..\r\n" TAIL_OUT, 11, true },
	{ "CRLF.CR allow", A, "a\r\n.\r" TAIL, "a\r\n.\r" TAIL_OUT, 11, true },
	{ "CRLF.CR CRLF normalize", N, "a\r\n.\r\r\n" TAIL, "a\r\n..\r\n\r\n" TAIL_OUT, 13, true },
	{ "CRLF.CR CRLF allow", A, "a\r\n.\r\r\n" TAIL, "a\r\n.\r\r\n" TAIL_OUT, 13, true },
	{ "start LF. normalize", N, "\n.\r\n.\r\n", "\r\n..\r\n.\r\n", 7, true },
	{ "start LF. allow", A, "\n.\r\n.\r\n", "\n.\r\n.\r\n", 7, true },
	{ "start .LF normalize", N, ".\n" TAIL, "..\r\n" TAIL_OUT, 8, true },
	{ "start .LF allow", A, ".\n" TAIL, ".\n" TAIL_OUT, 8, true },
	{ "start .CR normalize", N, ".\rx" TAIL, "..\r\nx" TAIL_OUT, 9, true },
	{ "bare LF mid-line", N, "a\nb\r\n.\r\n", "a\r\nb\r\n.\r\n", 8, true },
	{ "bare LF then dots", N, "a\n..\r\n.\r\n", "a\r\n...\r\n.\r\n", 9, true },
	{ "bare CR then CRLF", N, "a\r\r\n.\r\n", "a\r\n\r\n.\r\n", 7, true },
	{ "bare CR then CRLF allow", A, "a\r\r\n.\r\n", "a\r\r\n.\r\n", 7, true },
	{ "LF LF", N, "a\n\nb\r\n.\r\n", "a\r\n\r\nb\r\n.\r\n", 9, true },
	{ "double smuggle", N, "a\r\n.\n\n.\n" TAIL, "a\r\n..\r\n\r\n..\r\n" TAIL_OUT, 14, true },
	{ "stuffed after CRLF", N, "a\r\n..b\r\n.\r\n", "a\r\n..b\r\n.\r\n", 11, false },
	{ "stuffed after CRLF allow", A, "a\r\n..b\r\n.\r\n", "a\r\n..b\r\n.\r\n", 11, false },
	{ "dot text", R, "a\r\n.b\r\n.\r\n", "a\r\n.b\r\n.\r\n", 10, false },
	{ "NUL and 8-bit pass", N, "a\x01\xff\r\n.\r\n", "a\x01\xff\r\n.\r\n", 8, false },
};

START_TEST(test_smuggling)
{
	const struct smuggle_case *c = &smuggle_cases[_i];
	size_t len = strlen(c->in);
	struct fed f;
	static size_t cuts[BODY_MAX];

	for (size_t k = 0; k < len; k++)
		cuts[k] = k;
	/* one shot, then byte by byte */
	for (int pass = 0; pass < 2; pass++) {
		feed(c->mode, c->in, len, cuts, pass == 0 ? 0 : len, &f);
		ck_assert_msg(f.end, "%s (pass %d): no end", c->label, pass);
		ck_assert_msg(f.outlen == strlen(c->want_out) && memcmp(f.out, c->want_out, f.outlen) == 0,
		    "%s (pass %d): got \"%.*s\", want \"%s\"", c->label, pass, (int)f.outlen,
		    f.out, c->want_out);
		ck_assert_msg(f.consumed == c->want_consumed, "%s (pass %d): consumed %zu, want %zu",
		    c->label, pass, f.consumed, c->want_consumed);
		ck_assert_msg(f.seen_bare == c->want_bare, "%s (pass %d): seen_bare %d, want %d",
		    c->label, pass, f.seen_bare, c->want_bare);
		size_t want_bytes = f.consumed - 3 -
		    line_start_dots(c->in, f.consumed - 3, c->mode != BARE_NEWLINE_ALLOW);
		ck_assert_msg(f.bytes == want_bytes, "%s: bytes %llu, want %zu", c->label,
		    (unsigned long long)f.bytes, want_bytes);
	}
}
END_TEST

/* ---- streaming details -------------------------------------------------- */

/* The count grows while streaming so max_message_size can be enforced. */
START_TEST(test_bytes_count)
{
	struct data_state ds;
	char out[64];
	size_t consumed, produced;

	data_begin(&ds, BARE_NEWLINE_NORMALIZE);
	ck_assert(data_feed(&ds, "abc", 3, out, sizeof(out), &consumed, &produced) == DATA_MORE);
	ck_assert_msg(ds.bytes == 3 && produced == 3, "bytes %llu produced %zu",
	    (unsigned long long)ds.bytes, produced);
	ck_assert(data_feed(&ds, "def\r", 4, out, sizeof(out), &consumed, &produced) == DATA_MORE);
	ck_assert_msg(ds.bytes == 7 && produced == 3, "held CR: bytes %llu produced %zu",
	    (unsigned long long)ds.bytes, produced);
	ck_assert(data_feed(&ds, "\n.\r", 3, out, sizeof(out), &consumed, &produced) == DATA_MORE);
	ck_assert_msg(produced == 2 && memcmp(out, "\r\n", 2) == 0, "held dot: produced %zu", produced);
	ck_assert(data_feed(&ds, "\nMAIL", 5, out, sizeof(out), &consumed, &produced) == DATA_END);
	ck_assert_msg(consumed == 1 && produced == 3 && memcmp(out, ".\r\n", 3) == 0,
	    "end: consumed %zu produced %zu", consumed, produced);
	ck_assert_msg(ds.bytes == 8, "end: bytes %llu, want 8", (unsigned long long)ds.bytes);
	ck_assert(!ds.seen_bare);

	/* A limit checked between reads never counts a terminator held back:
	 * "abc\r\n" is 5 octets at every split of the ".\r\n" after it. */
	static const char *const cuts[] = { "abc\r\n.", "abc\r\n.\r" };
	for (size_t k = 0; k < 2; k++) {
		data_begin(&ds, BARE_NEWLINE_NORMALIZE);
		ck_assert(data_feed(&ds, cuts[k], strlen(cuts[k]), out, sizeof(out), &consumed,
		    &produced) == DATA_MORE);
		ck_assert_msg(data_size(&ds) == 5, "cut %zu: size %llu, want 5", k,
		    (unsigned long long)data_size(&ds));
	}
}
END_TEST

/* A caller that passes too small an out buffer gets partial progress,
 * never an overflow. */
START_TEST(test_small_out)
{
	struct data_state ds;
	char out[13];
	size_t consumed, produced;

	/* Each bare LF becomes CRLF: 13 bytes of room hold four of them, and the
	 * scanner stops while a worst case step (6 bytes) would not fit. */
	data_begin(&ds, BARE_NEWLINE_NORMALIZE);
	ck_assert(data_feed(&ds, "\n\n\n\n\n\n", 6, out, sizeof(out), &consumed, &produced) == DATA_MORE);
	ck_assert_msg(consumed == 4 && produced == 8, "consumed %zu produced %zu", consumed, produced);
	ck_assert(memcmp(out, "\r\n\r\n\r\n\r\n", 8) == 0);
	/* A whole buffer of ordinary bytes goes through in one call. */
	static char big[65536], bigout[65536];
	memset(big, 'x', sizeof(big));
	data_begin(&ds, BARE_NEWLINE_NORMALIZE);
	ck_assert(data_feed(&ds, big, sizeof(big), bigout, sizeof(bigout), &consumed, &produced) == DATA_MORE);
	ck_assert_msg(consumed == sizeof(big) && produced == consumed, "big: consumed %zu", consumed);
	/* So does a buffer of CRLF lines into as much room: one write, not a
	 * full one and a few bytes after it. */
	for (size_t k = 0; k + 1 < sizeof(big); k += 80)
		memcpy(big + k, "\r\n", 2);
	data_begin(&ds, BARE_NEWLINE_NORMALIZE);
	ck_assert(data_feed(&ds, big + 2, sizeof(big) - 2, bigout, sizeof(bigout) - 2, &consumed, &produced) == DATA_MORE);
	ck_assert_msg(consumed == sizeof(big) - 2 && produced == consumed &&
	    memcmp(big + 2, bigout, consumed) == 0, "lines: consumed %zu", consumed);
}
END_TEST

/* ---- random bodies: piecewise == one shot, and the invariants ----------- */

static uint32_t
prng(uint32_t *s)
{
	/* xorshift32: reproducible without libc's rand() state */
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void
check_invariants(enum bare_newline mode, const char *in, const struct fed *f, const char *what)
{
	if (mode == BARE_NEWLINE_ALLOW) {
		/* Unchanged bytes; only held ones (a CR, ".", ".\r") may lag. */
		EXPECT(f->outlen <= f->consumed && f->consumed - f->outlen <= 2 &&
		    memcmp(f->out, in, f->outlen) == 0, "%s: allow changed bytes", what);
		if (f->end)
			EXPECT(f->outlen == f->consumed, "%s: allow end lost bytes", what);
		return;
	}
	/* No bare CR or LF reaches the MTA. */
	for (size_t k = 0; k < f->outlen; k++) {
		if (f->out[k] == '\r')
			EXPECT(k + 1 < f->outlen && f->out[k + 1] == '\n',
			    "%s: bare CR out at %zu", what, k);
		if (f->out[k] == '\n')
			EXPECT(k > 0 && f->out[k - 1] == '\r', "%s: bare LF out at %zu", what, k);
	}
	/* The MTA sees the end exactly where we do. */
	for (size_t k = 0; k + 5 <= f->outlen; k++)
		if (memcmp(f->out + k, "\r\n.\r\n", 5) == 0)
			EXPECT(f->end && k + 5 == f->outlen, "%s: early end at %zu", what, k);
	if (f->outlen >= 3 && memcmp(f->out, ".\r\n", 3) == 0)
		EXPECT(f->end && f->outlen == 3, "%s: early empty end", what);
	if (f->end)
		EXPECT(f->outlen >= 3 && memcmp(f->out + f->outlen - 3, ".\r\n", 3) == 0 &&
		    (f->outlen == 3 || (f->outlen >= 5 &&
		    memcmp(f->out + f->outlen - 5, "\r\n.\r\n", 5) == 0)),
		    "%s: bad terminator", what);
}

START_TEST(test_random_equivalence)
{
	static const char alphabet[] = { 'a', 'b', '.', '.', '\r', '\r', '\n', '\n', '\0' };
	uint32_t seed = PRNG_SEED + (uint32_t)_i;
	char in[RANDOM_LEN_MAX];
	static size_t cuts[RANDOM_LEN_MAX];
	static struct fed one, pieces;

	for (int round = 0; round < RANDOM_ROUNDS; round++) {
		size_t len = prng(&seed) % RANDOM_LEN_MAX;
		for (size_t k = 0; k < len; k++)
			in[k] = alphabet[prng(&seed) % sizeof(alphabet)];
		enum bare_newline mode = modes[round % NELEM(modes)];

		feed(mode, in, len, NULL, 0, &one);
		char what[64];
		snprintf(what, sizeof(what), "seed %u round %d %s", PRNG_SEED + (unsigned)_i, round,
		    mode_names[round % NELEM(modes)]);
		check_invariants(mode, in, &one, what);
		/* (exact byte counts are checked against the model below) */
		EXPECT(one.bytes <= one.consumed, "%s: bytes", what);
		if (!one.end)
			EXPECT(one.consumed == len, "%s: MORE count", what);

		/* byte by byte, at random cuts, and into small output buffers */
		for (int how = 0; how < 3; how++) {
			size_t ncuts = 0;
			for (size_t k = 0; k < len && how < 2; k++)
				if (how == 0 || prng(&seed) % 7 == 0)
					cuts[ncuts++] = k;
			feed_outcap = how == 2 ? 6 + prng(&seed) % 40 : 0;
			feed(mode, in, len, cuts, ncuts, &pieces);
			feed_outcap = 0;
			EXPECT(pieces.end == one.end && pieces.consumed == one.consumed &&
			    pieces.outlen == one.outlen && memcmp(pieces.out, one.out, one.outlen) == 0 &&
			    pieces.seen_bare == one.seen_bare && pieces.bytes == one.bytes,
			    "%s how %d: piecewise differs: end %d/%d consumed %zu/%zu out %zu/%zu",
			    what, how, pieces.end, one.end, pieces.consumed, one.consumed,
			    pieces.outlen, one.outlen);
		}
	}
}
END_TEST

/* ---- against a reference model, on bodies of long lines ---------------- */

#define MODEL_ROUNDS 2000
#define MODEL_PIECES_MAX 60
#define MODEL_RUN_MAX 60

/*
 * SPEC §3.6 written the plain way, with the whole input in view: what the
 * MTA must receive for in[0..len), and where the message ends.  It shares
 * no code with data.c, so the fast paths there are checked against it.
 */
static bool
model(bool norm, const char *in, size_t len, char *out, size_t *outlen, size_t *consumed,
    size_t *dots)
{
	size_t k = 0, o = 0;

	*dots = 0;
	bool real_start = true, bare_start = false;

	while (k < len) {
		char c = in[k];
		if (real_start && c == '.') {
			if (k + 2 < len && in[k + 1] == '\r' && in[k + 2] == '\n') {
				memcpy(out + o, ".\r\n", 3);
				*outlen = o + 3;
				*consumed = k + 3;
				return true;
			}
			bool bare_next = k + 1 < len && (in[k + 1] == '\n' ||
			    (in[k + 1] == '\r' && (k + 2 >= len || in[k + 2] != '\n')));
			/* A dot line that a bare newline ends would end the message
			 * at the MTA once normalized: stuff it (and the MTA keeps
			 * the client's dot as content). */
			if (norm && bare_next)
				out[o++] = '.';
			else
				(*dots)++;      /* the receiver deletes it (RFC 5321 4.5.2) */
			out[o++] = '.';
			k++;
			real_start = false;
			continue;
		}
		if (bare_start && c == '.') {
			out[o++] = '.';
			out[o++] = '.';
			k++;
			bare_start = false;
			continue;
		}
		real_start = bare_start = false;
		if (c == '\r' && k + 1 < len && in[k + 1] == '\n') {
			out[o++] = '\r';
			out[o++] = '\n';
			k += 2;
			real_start = true;
		} else if ((c == '\r' || c == '\n') && norm) {
			out[o++] = '\r';
			out[o++] = '\n';
			k++;
			bare_start = true;
		} else {
			out[o++] = c;
			k++;
		}
	}
	*outlen = o;
	*consumed = k;
	return false;
}

START_TEST(test_model_long_lines)
{
	static const char *const pieces[] = { ".", "\r", "\n", "\r\n", "\r\n.", "\r\n..", "\r\r\n" };
	uint32_t seed = PRNG_SEED ^ (uint32_t)(0x9e3779b9u * (unsigned)(_i + 1));
	static char in[BODY_MAX], want[OUT_MAX];
	static size_t cuts[BODY_MAX];
	static struct fed got;

	for (int round = 0; round < MODEL_ROUNDS; round++) {
		size_t len = 0;
		size_t npieces = prng(&seed) % MODEL_PIECES_MAX;
		for (size_t p = 0; p < npieces; p++) {
			/* ordinary runs long enough for a vector scan, then one
			 * newline-ish piece */
			size_t run = prng(&seed) % MODEL_RUN_MAX;
			for (size_t k = 0; k < run; k++)
				in[len++] = (char)('A' + prng(&seed) % 26);
			const char *pc = pieces[prng(&seed) % NELEM(pieces)];
			memcpy(in + len, pc, strlen(pc));
			len += strlen(pc);
		}
		static const char end[] = "\r\n.\r\nQUIT\r\n";
		memcpy(in + len, end, sizeof end - 1);
		len += sizeof end - 1;
		enum bare_newline mode = modes[round % NELEM(modes)];
		size_t wantlen, wantcons, dots;
		bool ended = model(mode != BARE_NEWLINE_ALLOW, in, len, want, &wantlen, &wantcons, &dots);
		ck_assert(ended);

		for (int how = 0; how < 3; how++) {
			size_t ncuts = 0;
			for (size_t k = 1; k < len && how == 1; k++)
				if (prng(&seed) % 53 == 0)
					cuts[ncuts++] = k;
			feed_outcap = how == 2 ? 6 + prng(&seed) % 200 : 0;
			feed(mode, in, len, cuts, ncuts, &got);
			feed_outcap = 0;
			EXPECT(got.end && got.consumed == wantcons && got.outlen == wantlen &&
			    memcmp(got.out, want, wantlen) == 0 && got.bytes == wantcons - 3 - dots,
			    "round %d %s how %d: end %d consumed %zu/%zu out %zu/%zu bytes %llu/%zu",
			    round, mode_names[round % NELEM(modes)], how, got.end, got.consumed,
			    wantcons, got.outlen, wantlen, (unsigned long long)got.bytes,
			    wantcons - 3 - dots);
		}
	}
}
END_TEST

Suite *
data_suite(void)
{
	Suite *s = suite_create("data");
	TCase *tc = tcase_create("end");
	tcase_add_loop_test(tc, test_end_every_split, 0, NELEM(end_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("smuggling");
	tcase_add_loop_test(tc, test_smuggling, 0, NELEM(smuggle_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("streaming");
	tcase_add_test(tc, test_bytes_count);
	tcase_add_test(tc, test_small_out);
	tcase_add_loop_test(tc, test_random_equivalence, 0, 4);
	tcase_add_loop_test(tc, test_model_long_lines, 0, 4);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}
