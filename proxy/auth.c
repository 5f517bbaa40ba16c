/*
 * auth.c - extract the user name from PLAIN, LOGIN, CRAM-MD5 and SCRAM
 * exchanges.  The MTA checks the credentials; we only want the name for
 * rules, limits and the log, and must never keep or log a password.
 */
#include "auth.h"

#include <string.h>
#include <strings.h>

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long auth_base64_decode(const char *in, size_t len, unsigned char *out, size_t outsz)
{
	unsigned acc = 0, bits = 0;
	size_t n = 0, i = 0;

	for (; i < len && in[i] != '='; i++) {
		int v = b64val((unsigned char)in[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n == outsz)
				return -1;
			out[n++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	for (; i < len; i++)
		if (in[i] != '=')
			return -1;
	return (long)n;
}

static void set_user(struct auth_state *a, const unsigned char *p, size_t n)
{
	if (n > AUTH_USER_MAX)
		n = AUTH_USER_MAX;
	memcpy(a->user, p, n);
	a->user[n] = '\0';
	a->known = true;
}

/* SCRAM client-first: gs2-header "n,," / "y,," / "p=cb,," [a=authzid], then n=user. */
static void scram_user(struct auth_state *a, const unsigned char *p, size_t n)
{
	size_t commas = 0, i = 0;

	for (; i < n && commas < 2; i++)
		if (p[i] == ',')
			commas++;
	if (commas < 2 || i + 2 > n || p[i] != 'n' || p[i + 1] != '=')
		return;
	i += 2;
	size_t o = 0;
	for (; i < n && p[i] != ',' && o < AUTH_USER_MAX; i++) {
		/* saslname escapes: =2C is ',' and =3D is '=' */
		if (p[i] == '=' && i + 2 < n && p[i + 1] == '2' && (p[i + 2] == 'C' || p[i + 2] == 'c')) {
			a->user[o++] = ',';
			i += 2;
		} else if (p[i] == '=' && i + 2 < n && p[i + 1] == '3' && (p[i + 2] == 'D' || p[i + 2] == 'd')) {
			a->user[o++] = '=';
			i += 2;
		} else {
			a->user[o++] = (char)p[i];
		}
	}
	a->user[o] = '\0';
	a->known = o > 0;
}

static void learn(struct auth_state *a, const char *b64, size_t len)
{
	unsigned char buf[AUTH_DECODED_MAX];
	long n;

	if (len == 1 && b64[0] == '=')
		len = 0;                      /* "=" is an empty initial response */
	n = auth_base64_decode(b64, len, buf, sizeof buf);
	if (n < 0)
		return;
	switch (a->mech) {
	case AUTH_MECH_PLAIN: {
		/* authzid NUL authcid NUL passwd: the authcid is who logs in. */
		unsigned char *z1 = memchr(buf, '\0', (size_t)n);
		if (z1) {
			unsigned char *start = z1 + 1;
			unsigned char *z2 = memchr(start, '\0', (size_t)(buf + n - start));
			if (z2)
				set_user(a, start, (size_t)(z2 - start));
		}
		break;
	}
	case AUTH_MECH_LOGIN:
		if (!a->known)
			set_user(a, buf, (size_t)n);
		break;
	case AUTH_MECH_CRAM_MD5: {
		/* "user hexdigest": the name is everything before the last space. */
		long sp = n - 1;
		while (sp >= 0 && buf[sp] != ' ')
			sp--;
		if (sp > 0)
			set_user(a, buf, (size_t)sp);
		break;
	}
	case AUTH_MECH_SCRAM:
		if (!a->known)
			scram_user(a, buf, (size_t)n);
		break;
	default:
		break;
	}
	explicit_bzero(buf, sizeof buf);
}

void auth_begin(struct auth_state *a, const char *arg, size_t len)
{
	size_t w = 0;

	memset(a, 0, sizeof *a);
	while (w < len && arg[w] != ' ')
		w++;
	size_t ml = w < sizeof a->mech_name - 1 ? w : sizeof a->mech_name - 1;
	memcpy(a->mech_name, arg, ml);
	a->mech_name[ml] = '\0';
	if (w == 5 && strncasecmp(arg, "PLAIN", 5) == 0)
		a->mech = AUTH_MECH_PLAIN;
	else if (w == 5 && strncasecmp(arg, "LOGIN", 5) == 0)
		a->mech = AUTH_MECH_LOGIN;
	else if (w == 8 && strncasecmp(arg, "CRAM-MD5", 8) == 0)
		a->mech = AUTH_MECH_CRAM_MD5;
	else if (w > 6 && strncasecmp(arg, "SCRAM-", 6) == 0)
		a->mech = AUTH_MECH_SCRAM;
	while (w < len && arg[w] == ' ')
		w++;
	if (w < len)
		learn(a, arg + w, len - w);
}

void auth_response(struct auth_state *a, const char *line, size_t len)
{
	a->responses++;
	if (len == 1 && line[0] == '*')
		return;                       /* the client cancels */
	/* LOGIN's second answer is the password, CRAM's only one the digest. */
	if (a->mech == AUTH_MECH_LOGIN && a->responses > 1 && a->known)
		return;
	learn(a, line, len);
}
