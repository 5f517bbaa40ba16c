/*
 * proxyproto.c - the PROXY protocol (haproxy's proxy-protocol.txt), v1 and
 * v2: parse the header a load balancer puts before the client's first
 * byte, and build one toward the MTA.  The parser is strict and decides as
 * early as it can, so a client that is not a load balancer is refused
 * before it can send much.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proxyproto.h"

#define V1_PREFIX "PROXY "
#define V1_PREFIX_LEN (sizeof(V1_PREFIX) - 1)
#define V1_PORT_DIGITS_MAX 5          /* "65535" */
#define V1_PORT_MAX 65535
#define V1_FIELDS 4                   /* src, dst, sport, dport */

static const char v2_sig[] = "\r\n\r\n\0\r\nQUIT\n";
#define V2_SIG_LEN 12
#define V2_HDR_LEN 16                 /* signature, ver/cmd, fam, length */
#define V2_VERSION 0x20
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_FAM_UNSPEC 0x00
#define V2_FAM_TCP4 0x11
#define V2_FAM_TCP6 0x21
#define V2_ADDR_LEN_TCP4 12           /* 2 x 4 address bytes + 2 x 2 ports */
#define V2_ADDR_LEN_TCP6 36           /* 2 x 16 + 2 x 2 */

/* ---- v1 ----------------------------------------------------------------- */

struct v1_proto {
	const char *name;
	int family;
	size_t addr_max;        /* longest textual address */
	const char *addr_chars;
};

static const struct v1_proto v1_protos[] = {
	{ "TCP4", AF_INET, INET_ADDRSTRLEN - 1, "0123456789." },
	{ "TCP6", AF_INET6, INET6_ADDRSTRLEN - 1, "0123456789abcdefABCDEF:." },
	{ "UNKNOWN", AF_UNSPEC, 0, NULL },
};

static bool
set_addr(struct sockaddr_storage *ss, socklen_t *sslen, int family,
    const char *text, size_t n)
{
	char tmp[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, text, n);
	tmp[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		*sslen = sizeof(*sin);
		return inet_pton(AF_INET, tmp, &sin->sin_addr) == 1;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	sin6->sin6_family = AF_INET6;
	*sslen = sizeof(*sin6);
	return inet_pton(AF_INET6, tmp, &sin6->sin6_addr) == 1;
}

static void
set_port(struct sockaddr_storage *ss, unsigned port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/* A port: 0..65535 in decimal, no sign, no leading zero. */
static bool
parse_port(const char *s, size_t n, unsigned *port)
{
	unsigned v = 0;

	if (n == 0 || n > V1_PORT_DIGITS_MAX || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > V1_PORT_MAX)
		return false;
	*port = v;
	return true;
}

/*
 * buf[0..len) starts with "PROXY ".  The fields after the protocol are
 * checked as they arrive (their characters and lengths), and in full once
 * the line is complete, so a prefix that cannot become a header is BAD at
 * once.
 */
static enum proxyproto_status
parse_v1(const char *buf, size_t len, struct proxyproto_result *res, size_t *consumed)
{
	size_t n = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;
	const char *lf = memchr(buf, '\n', n);
	size_t end = lf != NULL ? (size_t)(lf - buf) : n;   /* scan limit */
	size_t pos = V1_PREFIX_LEN;
	const struct v1_proto *proto = NULL;

	/* The protocol word, up to a space or the CR. */
	size_t w = pos;
	while (w < end && buf[w] != ' ' && buf[w] != '\r')
		w++;
	for (size_t i = 0; i < sizeof(v1_protos) / sizeof(v1_protos[0]); i++) {
		size_t plen = strlen(v1_protos[i].name);
		if (w - pos <= plen && memcmp(buf + pos, v1_protos[i].name, w - pos) == 0 &&
		    (w == end || w - pos == plen)) {
			proto = &v1_protos[i];
			break;
		}
	}
	if (proto == NULL)
		return PROXYPROTO_BAD;
	if (w == end)
		goto partial;

	if (proto->family == AF_UNSPEC) {
		/* The receiver must ignore what follows UNKNOWN up to CRLF. */
		const char *cr = memchr(buf + w, '\r', end - w);
		if (cr != NULL && (size_t)(cr - buf) + 1 < end)
			return PROXYPROTO_BAD;  /* CR not just before the LF */
		if (lf == NULL)
			goto partial;
		if (cr == NULL)
			return PROXYPROTO_BAD;
		memset(res, 0, sizeof(*res));
		*consumed = end + 1;
		return PROXYPROTO_OK;
	}

	/* Four fields, each after exactly one space. */
	const char *field[V1_FIELDS];
	size_t flen[V1_FIELDS];
	size_t nf = 0;
	pos = w;
	while (nf < V1_FIELDS) {
		if (pos == end)
			goto partial;
		if (buf[pos] != ' ')
			return PROXYPROTO_BAD;
		pos++;
		size_t s = pos;
		bool is_addr = nf < 2;
		const char *ok = is_addr ? proto->addr_chars : "0123456789";
		size_t max = is_addr ? proto->addr_max : V1_PORT_DIGITS_MAX;
		while (pos < end && buf[pos] != ' ' && buf[pos] != '\r') {
			if (strchr(ok, buf[pos]) == NULL || pos - s >= max)
				return PROXYPROTO_BAD;
			pos++;
		}
		if (pos == end)
			goto partial;
		if (pos == s)
			return PROXYPROTO_BAD;
		field[nf] = buf + s;
		flen[nf] = pos - s;
		nf++;
		if ((buf[pos] == '\r') != (nf == V1_FIELDS))
			return PROXYPROTO_BAD;
	}
	/* buf[pos] is the CR; the LF must follow it at once. */
	if (pos + 1 < end)
		return PROXYPROTO_BAD;
	if (lf == NULL)
		goto partial;

	struct proxyproto_result r;
	unsigned sport, dport;
	memset(&r, 0, sizeof(r));
	if (!set_addr(&r.src, &r.srclen, proto->family, field[0], flen[0]) ||
	    !set_addr(&r.dst, &r.dstlen, proto->family, field[1], flen[1]) ||
	    !parse_port(field[2], flen[2], &sport) ||
	    !parse_port(field[3], flen[3], &dport))
		return PROXYPROTO_BAD;
	set_port(&r.src, sport);
	set_port(&r.dst, dport);
	*res = r;
	*consumed = end + 1;
	return PROXYPROTO_OK;

partial:
	/* The scan ran out before the line's syntax did: fine while the LF
	 * is still to come and can come within the bound. */
	if (lf != NULL || len >= PROXYPROTO_V1_MAX)
		return PROXYPROTO_BAD;
	return PROXYPROTO_AGAIN;
}

/* ---- v2 ----------------------------------------------------------------- */

static enum proxyproto_status
parse_v2(const unsigned char *b, size_t len, struct proxyproto_result *res, size_t *consumed)
{
	if (len > V2_SIG_LEN) {
		if ((b[12] & 0xf0) != V2_VERSION)
			return PROXYPROTO_BAD;
		if ((b[12] & 0x0f) != V2_CMD_LOCAL && (b[12] & 0x0f) != V2_CMD_PROXY)
			return PROXYPROTO_BAD;
	}
	bool local = len > V2_SIG_LEN && (b[12] & 0x0f) == V2_CMD_LOCAL;
	if (len > V2_SIG_LEN + 1 && !local && b[13] != V2_FAM_UNSPEC &&
	    b[13] != V2_FAM_TCP4 && b[13] != V2_FAM_TCP6)
		return PROXYPROTO_BAD;
	if (len < V2_HDR_LEN)
		return PROXYPROTO_AGAIN;

	size_t alen = (size_t)b[14] << 8 | b[15];
	if (V2_HDR_LEN + alen > PROXYPROTO_V2_MAX)
		return PROXYPROTO_BAD;
	if (!local && ((b[13] == V2_FAM_TCP4 && alen < V2_ADDR_LEN_TCP4) ||
	    (b[13] == V2_FAM_TCP6 && alen < V2_ADDR_LEN_TCP6)))
		return PROXYPROTO_BAD;
	if (len < V2_HDR_LEN + alen)
		return PROXYPROTO_AGAIN;

	/* What follows the addresses (TLVs) is of no use to us. */
	const unsigned char *a = b + V2_HDR_LEN;
	memset(res, 0, sizeof(*res));
	if (!local && b[13] == V2_FAM_TCP4) {
		struct sockaddr_in *s = (struct sockaddr_in *)&res->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&res->dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);
		memcpy(&d->sin_port, a + 10, 2);
		res->srclen = res->dstlen = sizeof(struct sockaddr_in);
	} else if (!local && b[13] == V2_FAM_TCP6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&res->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&res->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
		res->srclen = res->dstlen = sizeof(struct sockaddr_in6);
	}
	*consumed = V2_HDR_LEN + alen;
	return PROXYPROTO_OK;
}

enum proxyproto_status
proxyproto_parse(const char *buf, size_t len, struct proxyproto_result *res,
    size_t *consumed)
{
	*consumed = 0;
	if (len == 0)
		return PROXYPROTO_AGAIN;
	if (buf[0] == 'P') {
		size_t n = len < V1_PREFIX_LEN ? len : V1_PREFIX_LEN;
		if (memcmp(buf, V1_PREFIX, n) != 0)
			return PROXYPROTO_BAD;
		if (len <= V1_PREFIX_LEN)
			return PROXYPROTO_AGAIN;
		return parse_v1(buf, len, res, consumed);
	}
	size_t n = len < V2_SIG_LEN ? len : V2_SIG_LEN;
	if (memcmp(buf, v2_sig, n) != 0)
		return PROXYPROTO_BAD;
	return parse_v2((const unsigned char *)buf, len, res, consumed);
}

/* ---- building ----------------------------------------------------------- */

static long
build_v1(const struct sockaddr *src, const struct sockaddr *dst, char *out, size_t outsz)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	unsigned sport, dport;
	const char *proto;

	if (src->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)src;
		const struct sockaddr_in *b = (const struct sockaddr_in *)dst;
		inet_ntop(AF_INET, &a->sin_addr, s, sizeof(s));
		inet_ntop(AF_INET, &b->sin_addr, d, sizeof(d));
		sport = ntohs(a->sin_port);
		dport = ntohs(b->sin_port);
		proto = "TCP4";
	} else {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)src;
		const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)dst;
		inet_ntop(AF_INET6, &a->sin6_addr, s, sizeof(s));
		inet_ntop(AF_INET6, &b->sin6_addr, d, sizeof(d));
		sport = ntohs(a->sin6_port);
		dport = ntohs(b->sin6_port);
		proto = "TCP6";
	}
	int n = snprintf(out, outsz, "PROXY %s %s %s %u %u\r\n", proto, s, d, sport, dport);
	if (n < 0 || (size_t)n >= outsz)
		return -1;
	return n;
}

static long
build_v2(const struct sockaddr *src, const struct sockaddr *dst, char *out, size_t outsz)
{
	bool v4 = src->sa_family == AF_INET;
	size_t alen = v4 ? V2_ADDR_LEN_TCP4 : V2_ADDR_LEN_TCP6;
	unsigned char *o = (unsigned char *)out;

	if (outsz < V2_HDR_LEN + alen)
		return -1;
	memcpy(o, v2_sig, V2_SIG_LEN);
	o[12] = V2_VERSION | V2_CMD_PROXY;
	o[13] = v4 ? V2_FAM_TCP4 : V2_FAM_TCP6;
	o[14] = (unsigned char)(alen >> 8);
	o[15] = (unsigned char)(alen & 0xff);
	unsigned char *a = o + V2_HDR_LEN;
	if (v4) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)src;
		const struct sockaddr_in *d = (const struct sockaddr_in *)dst;
		memcpy(a, &s->sin_addr, 4);
		memcpy(a + 4, &d->sin_addr, 4);
		memcpy(a + 8, &s->sin_port, 2);
		memcpy(a + 10, &d->sin_port, 2);
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)src;
		const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)dst;
		memcpy(a, &s->sin6_addr, 16);
		memcpy(a + 16, &d->sin6_addr, 16);
		memcpy(a + 32, &s->sin6_port, 2);
		memcpy(a + 34, &d->sin6_port, 2);
	}
	return (long)(V2_HDR_LEN + alen);
}

long
proxyproto_build(int version, const struct sockaddr *src, const struct sockaddr *dst,
    char *out, size_t outsz)
{
	if (src == NULL || dst == NULL || src->sa_family != dst->sa_family ||
	    (src->sa_family != AF_INET && src->sa_family != AF_INET6))
		return -1;
	if (version == 1)
		return build_v1(src, dst, out, outsz);
	if (version == 2)
		return build_v2(src, dst, out, outsz);
	return -1;
}
