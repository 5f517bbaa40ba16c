/*
 * tls.h - OpenSSL 3 for both sides: the proxy's own certificate for
 * clients (STARTTLS and implicit TLS) and STARTTLS toward the MTA.
 * Contexts are built at config load, so a bad certificate is a config
 * error, and I/O is non-blocking, driven by libev.
 */
#ifndef SMTPGATE_TLS_H
#define SMTPGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"

#define TLS_ERR_MAX 256

struct ssl_ctx_st;
struct ssl_st;

/* The directive of a tls { } block a failure is about, for its FILE:LINE. */
enum tls_part { TLS_PART_NONE, TLS_PART_PROTOCOLS, TLS_PART_CIPHERS, TLS_PART_CERTIFICATE,
	TLS_PART_KEY };

/* Server side, from the tls { } block; NULL, a reason in err and the
 * directive at fault in *part on failure. */
struct ssl_ctx_st *tls_server_ctx_new(const struct config_tls *t, char *err, size_t errsz,
    enum tls_part *part);
/* Client side toward an upstream (verify, ca); NULL and a reason on failure. */
struct ssl_ctx_st *tls_client_ctx_new(const struct config_upstream *u, char *err, size_t errsz);
void tls_ctx_free(struct ssl_ctx_st *ctx);

/* A new connection on fd; for a client connection, expect_ip is the
 * address the MTA's certificate must name when verifying (may be NULL). */
struct ssl_st *tls_new(struct ssl_ctx_st *ctx, int fd, const char *expect_ip);
void tls_free(struct ssl_st *ssl);

/* What the library waits for before the call can make progress. */
enum tls_want { TLS_WANT_NONE = 0, TLS_WANT_READ = 1, TLS_WANT_WRITE = 2 };

/* 1 done, 0 call again when *want is ready, -1 failed (reason in err). */
int tls_handshake(struct ssl_st *ssl, bool server, enum tls_want *want, char *err, size_t errsz);

/* >0 bytes, 0 orderly close, -1 error, -2 again (see *want). */
ssize_t tls_read(struct ssl_st *ssl, void *p, size_t n, enum tls_want *want);
ssize_t tls_write(struct ssl_st *ssl, const void *p, size_t n, enum tls_want *want);

/* "TLSv1.3", and the cipher's name, for the log. */
const char *tls_version(const struct ssl_st *ssl);
const char *tls_cipher(const struct ssl_st *ssl);

#endif
