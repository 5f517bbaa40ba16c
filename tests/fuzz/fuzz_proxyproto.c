/*
 * fuzz_proxyproto.c - libFuzzer harness for the PROXY protocol parser and
 * builder (proxy/proxyproto.c): no prefix of a header that parses may be
 * BAD, and what parses rebuilds and parses back to the same addresses.
 */
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"

#define OUT_MAX 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static bool
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port &&
		    memcmp(&x->sin_addr, &y->sin_addr, sizeof(x->sin_addr)) == 0;
	}
	const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
	const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
	return x->sin6_port == y->sin6_port &&
	    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct proxyproto_result res, res2;
	size_t consumed, consumed2;

	enum proxyproto_status st = proxyproto_parse(buf, size, &res, &consumed);
	if (st != PROXYPROTO_OK)
		return 0;
	REQUIRE(consumed > 0 && consumed <= size && consumed <= PROXYPROTO_V2_MAX);
	for (size_t n = 0; n < consumed; n++)
		REQUIRE(proxyproto_parse(buf, n, &res2, &consumed2) == PROXYPROTO_AGAIN);

	int fam = res.src.ss_family;
	REQUIRE(fam == res.dst.ss_family);
	if (fam == AF_UNSPEC) {
		REQUIRE(res.srclen == 0 && res.dstlen == 0);
		return 0;
	}
	REQUIRE(fam == AF_INET || fam == AF_INET6);
	for (int version = 1; version <= 2; version++) {
		char out[OUT_MAX];
		long n = proxyproto_build(version, (struct sockaddr *)&res.src,
		    (struct sockaddr *)&res.dst, out, sizeof(out));
		REQUIRE(n > 0 && (size_t)n <= sizeof(out));
		REQUIRE(proxyproto_parse(out, (size_t)n, &res2, &consumed2) == PROXYPROTO_OK);
		REQUIRE(consumed2 == (size_t)n);
		REQUIRE(same_addr(&res.src, &res2.src) && same_addr(&res.dst, &res2.dst));
	}
	return 0;
}
