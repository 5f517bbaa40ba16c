/*
 * fuzz_data.c - libFuzzer harness for the DATA body scanner (proxy/data.c):
 * the same body fed in one piece and at input-chosen split points must give
 * the same bytes, and what reaches the MTA must end exactly where we end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

#include "data.h"

#define BODY_MAX 65536
#define OUT_MAX (DATA_EXPANSION * BODY_MAX + 5)
#define TERM "\r\n.\r\n"
#define TERM_LEN 5
#define DOT_LINE_LEN 3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

struct run {
	char out[OUT_MAX];
	size_t outlen, consumed;
	bool end, seen_bare;
	uint64_t bytes;
};

static uint32_t
next_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* cut_seed 0: one piece; otherwise random pieces of 1..16 bytes. */
static void
run(enum bare_newline mode, const char *in, size_t len, uint32_t cut_seed, struct run *r)
{
	struct data_state ds;
	size_t from = 0;

	data_begin(&ds, mode);
	r->outlen = 0;
	r->end = false;
	while (from < len && !r->end) {
		size_t piece = cut_seed == 0 ? len - from : 1 + next_rand(&cut_seed) % 16;
		if (piece > len - from)
			piece = len - from;
		size_t consumed, produced;
		/* Plenty of room takes the whole piece; a nearly full buffer (as a
		 * session's can be) takes part of it, but always makes progress. */
		size_t room = DATA_EXPANSION * piece + 5;
		bool tight = cut_seed != 0 && next_rand(&cut_seed) % 4 == 0;
		if (tight)
			room = 6 + next_rand(&cut_seed) % 24;
		enum data_status st = data_feed(&ds, in + from, piece, r->out + r->outlen, room,
		    &consumed, &produced);
		REQUIRE(consumed <= piece && produced <= room);
		REQUIRE(st == DATA_END || consumed == piece || (tight && consumed > 0));
		r->outlen += produced;
		from += consumed;
		r->end = st == DATA_END;
		REQUIRE(ds.bytes <= from);
	}
	r->consumed = from;
	r->seen_bare = ds.seen_bare;
	r->bytes = ds.bytes;
}

static void
check(enum bare_newline mode, const char *in, const struct run *r)
{
	if (r->end) {
		/* the size leaves out the terminator and transparency dots
		 * (RFC 1870); exact counts are in tests/unit/check_data.c */
		REQUIRE(r->bytes + DOT_LINE_LEN <= r->consumed);
		REQUIRE(memcmp(in + r->consumed - DOT_LINE_LEN, ".\r\n", DOT_LINE_LEN) == 0);
		REQUIRE(r->outlen == DOT_LINE_LEN ||
		    (r->outlen >= TERM_LEN && memcmp(r->out + r->outlen - TERM_LEN, TERM, TERM_LEN) == 0));
		REQUIRE(r->outlen >= DOT_LINE_LEN &&
		    memcmp(r->out + r->outlen - DOT_LINE_LEN, ".\r\n", DOT_LINE_LEN) == 0);
	}
	if (mode == BARE_NEWLINE_ALLOW) {
		REQUIRE(r->outlen <= r->consumed && memcmp(r->out, in, r->outlen) == 0);
		if (r->end)
			REQUIRE(r->outlen == r->consumed);
	} else {
		for (size_t k = 0; k < r->outlen; k++) {
			if (r->out[k] == '\r')
				REQUIRE(k + 1 < r->outlen && r->out[k + 1] == '\n');
			if (r->out[k] == '\n')
				REQUIRE(k > 0 && r->out[k - 1] == '\r');
		}
	}
	/* Whatever the mode, the MTA sees no end before ours: the stream
	 * after the 354 starts as if after a CRLF. */
	if (r->outlen >= DOT_LINE_LEN && memcmp(r->out, ".\r\n", DOT_LINE_LEN) == 0)
		REQUIRE(r->end && r->outlen == DOT_LINE_LEN);
	const char *p = r->out;
	size_t left = r->outlen;
	const char *hit;
	while (left >= TERM_LEN && (hit = memmem(p, left, TERM, TERM_LEN)) != NULL) {
		REQUIRE(r->end && hit + TERM_LEN == r->out + r->outlen);
		left -= (size_t)(hit - p) + 1;
		p = hit + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run one, pieces;

	if (size < 2 || size - 2 > BODY_MAX)
		return 0;
	enum bare_newline mode = data[0] % 3 == 0 ? BARE_NEWLINE_NORMALIZE :
	    data[0] % 3 == 1 ? BARE_NEWLINE_REJECT : BARE_NEWLINE_ALLOW;
	uint32_t seed = (uint32_t)data[1] | 0x100u;
	const char *in = (const char *)data + 2;
	size_t len = size - 2;

	run(mode, in, len, 0, &one);
	check(mode, in, &one);
	run(mode, in, len, seed, &pieces);
	check(mode, in, &pieces);
	REQUIRE(one.end == pieces.end && one.consumed == pieces.consumed);
	REQUIRE(one.outlen == pieces.outlen && memcmp(one.out, pieces.out, one.outlen) == 0);
	REQUIRE(one.seen_bare == pieces.seen_bare && one.bytes == pieces.bytes);
	return 0;
}
