/*
 * proxyproto.h - parse an inbound PROXY protocol header, v1 (text) or v2
 * (binary), as sent by a load balancer, and build one toward the MTA.
 * Pure: no I/O.
 */
#ifndef SMTPGATE_PROXYPROTO_H
#define SMTPGATE_PROXYPROTO_H

#include <stddef.h>
#include <sys/socket.h>

#define PROXYPROTO_V1_MAX 107       /* the spec's bound, CRLF included */
#define PROXYPROTO_V2_MAX (16 + 536) /* header + the largest address block we accept */

enum proxyproto_status {
	PROXYPROTO_AGAIN,   /* need more bytes */
	PROXYPROTO_OK,      /* header parsed; *consumed bytes are the header */
	PROXYPROTO_BAD,     /* malformed, unsupported or over the bounds */
};

struct proxyproto_result {
	/* For "PROXY UNKNOWN" and v2 LOCAL the family is AF_UNSPEC: keep the
	 * socket's own addresses. */
	struct sockaddr_storage src;
	struct sockaddr_storage dst;
	socklen_t srclen, dstlen;
};

enum proxyproto_status proxyproto_parse(const char *buf, size_t len,
    struct proxyproto_result *res, size_t *consumed);

/*
 * Build a v1 (version 1) or v2 (version 2) header for src -> dst into out;
 * returns its length or -1 when outsz is too small or the families differ.
 */
long proxyproto_build(int version, const struct sockaddr *src, const struct sockaddr *dst,
    char *out, size_t outsz);

#endif
