/*
 * auth.h - learn who is authenticating from an AUTH exchange relayed to
 * the MTA (SPEC §3.5).  Only the name is kept; decoded secrets are wiped
 * before returning.  Pure: no I/O, no allocation.
 */
#ifndef SMTPGATE_AUTH_H
#define SMTPGATE_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#define AUTH_USER_MAX 255
#define AUTH_DECODED_MAX 3072        /* a 4 KiB base64 line decodes to at most this */

enum auth_mech {
	AUTH_MECH_OTHER, AUTH_MECH_PLAIN, AUTH_MECH_LOGIN, AUTH_MECH_CRAM_MD5, AUTH_MECH_SCRAM,
};

struct auth_state {
	enum auth_mech mech;
	unsigned responses;              /* client responses seen after the AUTH line */
	bool known;                      /* user[] holds the name */
	char user[AUTH_USER_MAX + 1];
	char mech_name[32];
};

/* The AUTH command's argument: "MECH [initial-response]". */
void auth_begin(struct auth_state *a, const char *arg, size_t len);
/* One client line answering a 334 challenge. */
void auth_response(struct auth_state *a, const char *line, size_t len);

/* Decode base64 (RFC 4648, padding optional); -1 on bad input or overflow. */
long auth_base64_decode(const char *in, size_t len, unsigned char *out, size_t outsz);

#endif
