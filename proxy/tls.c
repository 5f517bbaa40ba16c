/*
 * tls.c - thin, non-blocking OpenSSL wrappers for sessions.
 */
#include "tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Lines of a key file looked at for an encryption header. */
#define TLS_KEY_SCAN_LINES 4

static void last_error(const char *what, char *err, size_t errsz)
{
	unsigned long e = ERR_get_error();
	char buf[TLS_ERR_MAX];

	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	else
		snprintf(buf, sizeof buf, "%s", errno ? strerror(errno) : "unknown error");
	snprintf(err, errsz, "%s: %s", what, buf);
	ERR_clear_error();
}

static int set_protocols(SSL_CTX *ctx, unsigned protocols)
{
	int min = TLS1_2_VERSION, max = TLS1_3_VERSION;

	if (protocols) {
		min = protocols & CONFIG_TLS_V1_2 ? TLS1_2_VERSION : TLS1_3_VERSION;
		max = protocols & CONFIG_TLS_V1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
	}
	return SSL_CTX_set_min_proto_version(ctx, min) && SSL_CTX_set_max_proto_version(ctx, max);
}

/* An encrypted key would make OpenSSL ask for a passphrase on the terminal,
 * freezing a reload; there is no one to answer, so there is no passphrase. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf; (void)size; (void)rwflag; (void)u;
	return -1;
}

/* A PEM key under a passphrase: PKCS#8 or the old "Proc-Type: 4,ENCRYPTED". */
static bool key_is_encrypted(const char *path)
{
	char line[256];
	bool enc = false;
	FILE *f = fopen(path, "r");

	if (!f)
		return false;
	for (int i = 0; i < TLS_KEY_SCAN_LINES && fgets(line, sizeof line, f); i++) {
		if (strstr(line, "ENCRYPTED")) {
			enc = true;
			break;
		}
	}
	fclose(f);
	return enc;
}

SSL_CTX *tls_server_ctx_new(const struct config_tls *t, char *err, size_t errsz,
    enum tls_part *part)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	*part = TLS_PART_NONE;
	if (!ctx) {
		last_error("cannot create a TLS context", err, errsz);
		return NULL;
	}
	/* Idle sessions give their 16+ KiB record buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/*
	 * A client that drops TCP without close_notify still gets the replies
	 * to what it sent, as in plaintext: truncation cannot fake an end of
	 * message in SMTP, whose DATA ends only at CRLF.CRLF.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	if (!set_protocols(ctx, t->protocols)) {
		*part = TLS_PART_PROTOCOLS;
		last_error("protocols", err, errsz);
		goto fail;
	}
	if (t->ciphers && !SSL_CTX_set_cipher_list(ctx, t->ciphers)) {
		*part = TLS_PART_CIPHERS;
		last_error("ciphers", err, errsz);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, t->certificate) != 1) {
		*part = TLS_PART_CERTIFICATE;
		last_error(t->certificate, err, errsz);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1) {
		*part = TLS_PART_KEY;
		if (key_is_encrypted(t->key)) {
			ERR_clear_error();
			snprintf(err, errsz, "%s: the key is encrypted; smtpgate takes no passphrase",
			    t->key);
		} else {
			last_error(t->key, err, errsz);
		}
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*part = TLS_PART_KEY;
		last_error("the key does not match the certificate", err, errsz);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *tls_client_ctx_new(const struct config_upstream *u, char *err, size_t errsz)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		last_error("cannot create a TLS context", err, errsz);
		return NULL;
	}
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (u->verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		int ok = u->ca ? SSL_CTX_load_verify_locations(ctx, u->ca, NULL)
		    : SSL_CTX_set_default_verify_paths(ctx);
		if (ok != 1) {
			last_error(u->ca ? u->ca : "default CA paths", err, errsz);
			SSL_CTX_free(ctx);
			return NULL;
		}
	}
	return ctx;
}

void tls_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

SSL *tls_new(SSL_CTX *ctx, int fd, const char *expect_ip)
{
	SSL *ssl = SSL_new(ctx);

	if (!ssl)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1)
		goto fail;
	if (expect_ip && SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) {
		/* The MTA is named by address in the config: its certificate must say so. */
		X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
		if (X509_VERIFY_PARAM_set1_ip_asc(vp, expect_ip) != 1)
			goto fail;
	}
	return ssl;
fail:
	SSL_free(ssl);
	return NULL;
}

void tls_free(SSL *ssl)
{
	SSL_free(ssl);
}

static int classify(SSL *ssl, int rc, enum tls_want *want)
{
	switch (SSL_get_error(ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		*want = TLS_WANT_READ;
		return -2;
	case SSL_ERROR_WANT_WRITE:
		*want = TLS_WANT_WRITE;
		return -2;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		ERR_clear_error();
		return -1;
	}
}

int tls_handshake(SSL *ssl, bool server, enum tls_want *want, char *err, size_t errsz)
{
	ERR_clear_error();   /* SSL_get_error() reads the queue: it must be ours */
	int rc = server ? SSL_accept(ssl) : SSL_connect(ssl);

	*want = TLS_WANT_NONE;
	if (rc == 1)
		return 1;
	int e = SSL_get_error(ssl, rc);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		*want = e == SSL_ERROR_WANT_READ ? TLS_WANT_READ : TLS_WANT_WRITE;
		return 0;
	}
	long v = SSL_get_verify_result(ssl);
	if (v != X509_V_OK) {
		snprintf(err, errsz, "certificate verification failed: %s",
		    X509_verify_cert_error_string(v));
		ERR_clear_error();
	} else {
		last_error("handshake failed", err, errsz);
	}
	return -1;
}

ssize_t tls_read(SSL *ssl, void *p, size_t n, enum tls_want *want)
{
	size_t got = 0;

	*want = TLS_WANT_NONE;
	ERR_clear_error();
	int rc = SSL_read_ex(ssl, p, n, &got);
	if (rc == 1)
		return (ssize_t)got;
	return classify(ssl, rc, want);
}

ssize_t tls_write(SSL *ssl, const void *p, size_t n, enum tls_want *want)
{
	size_t put = 0;

	*want = TLS_WANT_NONE;
	ERR_clear_error();
	int rc = SSL_write_ex(ssl, p, n, &put);
	if (rc == 1)
		return (ssize_t)put;
	return classify(ssl, rc, want);
}

const char *tls_version(const SSL *ssl)
{
	return SSL_get_version(ssl);
}

const char *tls_cipher(const SSL *ssl)
{
	return SSL_get_cipher_name(ssl);
}
