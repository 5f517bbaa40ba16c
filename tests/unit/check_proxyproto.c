/*
 * check_proxyproto.c - the PROXY protocol parser and builder
 * (proxy/proxyproto.c): v1 and v2 headers, good and bad, every prefix of a
 * good one, and build -> parse round trips.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxyproto.h"
#include "suites.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define HDR_MAX 1024
#define ADDR_TEXT_MAX (INET6_ADDRSTRLEN + 8)

#define EXPECT(cond, ...) do { if (!(cond)) ck_abort_msg(__VA_ARGS__); } while (0)

/* "1.2.3.4:5", "[::1]:5", or "unspec" */
static void
addr_text(const struct sockaddr_storage *ss, char *buf, size_t sz)
{
	char a[INET6_ADDRSTRLEN];
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
		snprintf(buf, sz, "%s:%u", a, ntohs(s->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
		snprintf(buf, sz, "[%s]:%u", a, ntohs(s->sin6_port));
	} else {
		snprintf(buf, sz, "unspec");
	}
}

/* ---- headers as bytes --------------------------------------------------- */

#define V2SIG "\r\n\r\n\0\r\nQUIT\n"
#define V4ADDRS "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\x30\x39" "\x00\x19"
#define V6ADDRS "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01" \
	"\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02" "\x00\x01" "\xff\xff"

struct pp_case {
	const char *label;
	const char *in;
	size_t len;             /* 0: strlen(in) */
	enum proxyproto_status status;
	size_t consumed;        /* for OK */
	const char *src, *dst;  /* for OK, as addr_text() writes them */
};

#define S(x) x, sizeof(x) - 1

static const struct pp_case pp_cases[] = {
	/* v1 good */
	{ "v1 tcp4", "PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\r\n", 0, PROXYPROTO_OK, 44,
	  "192.0.2.1:12345", "198.51.100.2:25" },
	{ "v1 tcp4 then data", "PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\r\nEHLO x\r\n", 0,
	  PROXYPROTO_OK, 44, "192.0.2.1:12345", "198.51.100.2:25" },
	{ "v1 tcp6", "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", 0, PROXYPROTO_OK, 44,
	  "[2001:db8::1]:1", "[2001:db8::2]:65535" },
	{ "v1 tcp6 mapped", "PROXY TCP6 ::ffff:192.0.2.1 ::1 0 25\r\n", 0, PROXYPROTO_OK, 38,
	  "[::ffff:192.0.2.1]:0", "[::1]:25" },
	{ "v1 unknown", "PROXY UNKNOWN\r\n", 0, PROXYPROTO_OK, 15, "unspec", "unspec" },
	{ "v1 unknown with junk", "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", 0,
	  PROXYPROTO_OK, 59, "unspec", "unspec" },
	{ "v1 longest", "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", 0, PROXYPROTO_OK, 104,
	  "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
	  "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535" },
	{ "v1 unknown at the bound", "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 0, PROXYPROTO_OK, 107,
	  "unspec", "unspec" },
	/* v1 bad */
	{ "v1 unknown over the bound", "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 double space", "PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 LF only", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 trailing space", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 CR CR LF", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 octet 256", "PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 short ipv4", "PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 ipv6 in tcp4", "PROXY TCP4 ::1 ::1 1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 ipv4 in tcp6", "PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 port 65536", "PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 port leading zero", "PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 port sign", "PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 port negative", "PROXY TCP4 192.0.2.1 198.51.100.2 -1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 port 6 digits", "PROXY TCP4 192.0.2.1 198.51.100.2 000001 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 missing port", "PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 extra field", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 TCP5", "PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 lower case", "proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 tcp4 lower", "PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 no protocol", "PROXY \r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 unknown CR inside", "PROXY UNKNOWN a\rb\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 unknown LF only", "PROXY UNKNOWN\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 UNKNOWNX", "PROXY UNKNOWNX\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 overlong", "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 overlong no end", "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 address too long", "PROXY TCP4 1111111111111111 1.1.1.1 1 2", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v1 letter in ipv4", "PROXY TCP4 1.2.3.a", 0, PROXYPROTO_BAD, 0, 0, 0 },
	/* not a PROXY header at all: BAD at once */
	{ "SMTP", "EHLO x\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "HTTP", "GET / HTTP/1.0\r\n", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "one byte", "G", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "PROXX", "PROXX", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "PROXYZ", "PROXYZ", 0, PROXYPROTO_BAD, 0, 0, 0 },
	{ "v2 bad signature", S("\r\n\r\nX"), PROXYPROTO_BAD, 0, 0, 0 },
	{ "empty", "", 0, PROXYPROTO_AGAIN, 0, 0, 0 },
	/* v2 good */
	{ "v2 tcp4", S(V2SIG "\x21\x11\x00\x0c" V4ADDRS), PROXYPROTO_OK, 28,
	  "192.0.2.1:12345", "198.51.100.2:25" },
	{ "v2 tcp4 then data", S(V2SIG "\x21\x11\x00\x0c" V4ADDRS "EHLO"), PROXYPROTO_OK, 28,
	  "192.0.2.1:12345", "198.51.100.2:25" },
	{ "v2 tcp4 TLVs", S(V2SIG "\x21\x11\x00\x13" V4ADDRS "\x02\x00\x04host"), PROXYPROTO_OK, 35,
	  "192.0.2.1:12345", "198.51.100.2:25" },
	{ "v2 tcp6", S(V2SIG "\x21\x21\x00\x24" V6ADDRS), PROXYPROTO_OK, 52,
	  "[2001:db8::1]:1", "[2001:db8::2]:65535" },
	{ "v2 local", S(V2SIG "\x20\x00\x00\x00"), PROXYPROTO_OK, 16, "unspec", "unspec" },
	{ "v2 local with addresses", S(V2SIG "\x20\x11\x00\x0c" V4ADDRS), PROXYPROTO_OK, 28,
	  "unspec", "unspec" },
	{ "v2 proxy unspec", S(V2SIG "\x21\x00\x00\x00"), PROXYPROTO_OK, 16, "unspec", "unspec" },
	/* v2 bad */
	{ "v2 version 1", S(V2SIG "\x11\x11\x00\x0c" V4ADDRS), PROXYPROTO_BAD, 0, 0, 0 },
	{ "v2 version 3", S(V2SIG "\x31"), PROXYPROTO_BAD, 0, 0, 0 },
	{ "v2 command 2", S(V2SIG "\x22\x11\x00\x0c" V4ADDRS), PROXYPROTO_BAD, 0, 0, 0 },
	{ "v2 unix", S(V2SIG "\x21\x31"), PROXYPROTO_BAD, 0, 0, 0 },
	{ "v2 dgram", S(V2SIG "\x21\x12\x00\x0c" V4ADDRS), PROXYPROTO_BAD, 0, 0, 0 },
	{ "v2 tcp4 short", S(V2SIG "\x21\x11\x00\x0b"), PROXYPROTO_BAD, 0, 0, 0 },
	{ "v2 tcp6 short", S(V2SIG "\x21\x21\x00\x23"), PROXYPROTO_BAD, 0, 0, 0 },
	{ "v2 too long", S(V2SIG "\x21\x11\x02\x19"), PROXYPROTO_BAD, 0, 0, 0 },
	{ "v2 longest", S(V2SIG "\x21\x11\x02\x18"), PROXYPROTO_AGAIN, 0, 0, 0 },
};

START_TEST(test_parse_table)
{
	const struct pp_case *c = &pp_cases[_i];
	size_t len = c->len != 0 ? c->len : strlen(c->in);
	struct proxyproto_result res;
	size_t consumed;
	char src[ADDR_TEXT_MAX], dst[ADDR_TEXT_MAX];
	enum proxyproto_status st = proxyproto_parse(c->in, len, &res, &consumed);

	ck_assert_msg(st == c->status, "%s: status %d, want %d", c->label, st, c->status);
	if (st != PROXYPROTO_OK)
		return;
	ck_assert_msg(consumed == c->consumed, "%s: consumed %zu, want %zu", c->label, consumed,
	    c->consumed);
	addr_text(&res.src, src, sizeof(src));
	addr_text(&res.dst, dst, sizeof(dst));
	ck_assert_msg(strcmp(src, c->src) == 0 && strcmp(dst, c->dst) == 0,
	    "%s: got %s -> %s, want %s -> %s", c->label, src, dst, c->src, c->dst);
	socklen_t want_len = res.src.ss_family == AF_INET ? sizeof(struct sockaddr_in) :
	    res.src.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : 0;
	ck_assert_msg(res.srclen == want_len && res.dstlen == want_len, "%s: lengths %u/%u, want %u",
	    c->label, (unsigned)res.srclen, (unsigned)res.dstlen, (unsigned)want_len);
}
END_TEST

/* Every proper prefix of a good header asks for more, never BAD. */
START_TEST(test_parse_prefixes)
{
	const struct pp_case *c = &pp_cases[_i];
	size_t len = c->len != 0 ? c->len : strlen(c->in);
	struct proxyproto_result res;
	size_t consumed;

	if (c->status != PROXYPROTO_OK)
		return;
	for (size_t n = 0; n < c->consumed; n++) {
		enum proxyproto_status st = proxyproto_parse(c->in, n, &res, &consumed);
		EXPECT(st == PROXYPROTO_AGAIN, "%s: prefix of %zu: status %d, want AGAIN", c->label, n, st);
	}
	/* and more bytes after it do not change the answer */
	for (size_t n = c->consumed; n <= len; n++) {
		enum proxyproto_status st = proxyproto_parse(c->in, n, &res, &consumed);
		EXPECT(st == PROXYPROTO_OK && consumed == c->consumed, "%s: %zu bytes: status %d",
		    c->label, n, st);
	}
}
END_TEST

/* ---- build -> parse ----------------------------------------------------- */

struct rt_case {
	const char *label;
	int version;
	int family;
	const char *src, *dst;
	unsigned sport, dport;
	const char *want_v1;    /* the text for version 1 */
};

static const struct rt_case rt_cases[] = {
	{ "v1 tcp4", 1, AF_INET, "192.0.2.1", "198.51.100.2", 12345, 25,
	  "PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\r\n" },
	{ "v1 tcp6", 1, AF_INET6, "2001:db8::1", "2001:db8::2", 65535, 0,
	  "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n" },
	{ "v2 tcp4", 2, AF_INET, "10.0.0.1", "10.0.0.2", 1, 587, NULL },
	{ "v2 tcp6", 2, AF_INET6, "::1", "fe80::1", 40000, 25, NULL },
};

static void
make_addr(struct sockaddr_storage *ss, int family, const char *text, unsigned port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)ss;
		s->sin_family = AF_INET;
		s->sin_port = htons((uint16_t)port);
		ck_assert(inet_pton(AF_INET, text, &s->sin_addr) == 1);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons((uint16_t)port);
		ck_assert(inet_pton(AF_INET6, text, &s->sin6_addr) == 1);
	}
}

START_TEST(test_round_trip)
{
	const struct rt_case *c = &rt_cases[_i];
	struct sockaddr_storage src, dst;
	char out[HDR_MAX];
	struct proxyproto_result res;
	size_t consumed;
	char got[ADDR_TEXT_MAX], want[ADDR_TEXT_MAX];

	make_addr(&src, c->family, c->src, c->sport);
	make_addr(&dst, c->family, c->dst, c->dport);
	long n = proxyproto_build(c->version, (struct sockaddr *)&src, (struct sockaddr *)&dst,
	    out, sizeof(out));
	ck_assert_msg(n > 0, "%s: build returned %ld", c->label, n);
	if (c->want_v1 != NULL)
		ck_assert_msg((size_t)n == strlen(c->want_v1) && memcmp(out, c->want_v1, (size_t)n) == 0,
		    "%s: built \"%.*s\", want \"%s\"", c->label, (int)n, out, c->want_v1);
	enum proxyproto_status st = proxyproto_parse(out, (size_t)n, &res, &consumed);
	ck_assert_msg(st == PROXYPROTO_OK && consumed == (size_t)n, "%s: parse %d, consumed %zu of %ld",
	    c->label, st, consumed, n);
	addr_text(&res.src, got, sizeof(got));
	addr_text(&src, want, sizeof(want));
	ck_assert_msg(strcmp(got, want) == 0, "%s: src %s, want %s", c->label, got, want);
	addr_text(&res.dst, got, sizeof(got));
	addr_text(&dst, want, sizeof(want));
	ck_assert_msg(strcmp(got, want) == 0, "%s: dst %s, want %s", c->label, got, want);

	/* one byte short of room */
	ck_assert_msg(proxyproto_build(c->version, (struct sockaddr *)&src, (struct sockaddr *)&dst,
	    out, (size_t)n - 1) == -1, "%s: built into too small a buffer", c->label);
}
END_TEST

START_TEST(test_build_bad)
{
	struct sockaddr_storage v4, v6, un;
	char out[HDR_MAX];

	make_addr(&v4, AF_INET, "192.0.2.1", 1);
	make_addr(&v6, AF_INET6, "::1", 1);
	memset(&un, 0, sizeof(un));
	un.ss_family = AF_UNIX;
	ck_assert_int_eq(proxyproto_build(1, (struct sockaddr *)&v4, (struct sockaddr *)&v6,
	    out, sizeof(out)), -1);
	ck_assert_int_eq(proxyproto_build(2, (struct sockaddr *)&v6, (struct sockaddr *)&v4,
	    out, sizeof(out)), -1);
	ck_assert_int_eq(proxyproto_build(1, (struct sockaddr *)&un, (struct sockaddr *)&un,
	    out, sizeof(out)), -1);
	ck_assert_int_eq(proxyproto_build(3, (struct sockaddr *)&v4, (struct sockaddr *)&v4,
	    out, sizeof(out)), -1);
	ck_assert_int_eq(proxyproto_build(2, (struct sockaddr *)&v4, (struct sockaddr *)&v4,
	    out, 0), -1);
}
END_TEST

Suite *
proxyproto_suite(void)
{
	Suite *s = suite_create("proxyproto");
	TCase *tc = tcase_create("parse");
	tcase_add_loop_test(tc, test_parse_table, 0, NELEM(pp_cases));
	tcase_add_loop_test(tc, test_parse_prefixes, 0, NELEM(pp_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("build");
	tcase_add_loop_test(tc, test_round_trip, 0, NELEM(rt_cases));
	tcase_add_test(tc, test_build_bad);
	suite_add_tcase(s, tc);
	return s;
}
