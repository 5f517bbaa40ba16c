/*
 * config.c - the meaning of the configuration language (SPEC §2): walks the
 * statement tree from conflex.c and builds the immutable, reference-counted
 * struct config.  Each directive is one entry of a table {name, handler};
 * values become numbers and enums here, so nothing compares config strings
 * at run time.  Errors are collected, not stopped at, so `smtpgate -t` shows
 * them all at once.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "conflex.h"
#include "tls.h"

#define BANNER_MAX 400          /* leaves room in a 512-octet reply line */
#define DIRECTIVES_MAX 32       /* entries of one table, for duplicate checks */
#define SHOW "%.80s"            /* how much of a bad value a message quotes */

/* What config.c still needs of a listen once every upstream is known. */
struct listen_pending {
	const char *file;
	char upstream[CONFIG_NAME_MAX]; /* "" = none named */
	int upstream_line;
	int tls_line;
	int auth_line;
};

struct loader {
	struct config *cfg;
	struct conf_errs *errs;
	struct listen_pending *pending; /* parallel to cfg->listens */
	char (*broken)[CONFIG_NAME_MAX]; /* upstreams declared with errors */
	size_t nbroken;
	/* `timeout` repeats (command, data), each kind only once. */
	const struct conf_stmt *timeout_command, *timeout_data;
	const struct conf_stmt *metrics;
};

typedef int (*handler_fn)(struct loader *, const struct conf_stmt *, void *);

enum block_use { BLOCK_NO, BLOCK_YES, BLOCK_MAYBE };

struct directive {
	const char *name;
	handler_fn handler;         /* NULL: in the SPEC, not in this build */
	int min_args, max_args;     /* words after the name; -1 = any number */
	enum block_use block;
	bool repeatable;
};

struct keyword {
	const char *word;
	int value;
};

static void
err(struct loader *L, const struct conf_stmt *st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
err(struct loader *L, const struct conf_stmt *st, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	conf_error(L->errs, st->file, st->line, "%s", msg);
}

/* "NAME: already given at FILE:LINE": the first may be in another file. */
static void
err_again(struct loader *L, const struct conf_stmt *st, const char *name,
    const struct conf_stmt *first)
{
	if (strcmp(first->file, st->file) == 0)
		err(L, st, "%s: already given on line %d", name, first->line);
	else
		err(L, st, "%s: already given at %s:%d", name, first->file,
		    first->line);
}

/* ---- values ---------------------------------------------------------- */

/* Decimal digits only (no sign, no space), at most UINT64_MAX. */
static int
parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

static size_t
digits(const char *s)
{
	size_t n = 0;

	while (s[n] >= '0' && s[n] <= '9')
		n++;
	return n;
}

static int
mul(uint64_t a, uint64_t b, uint64_t *out)
{
	if (b != 0 && a > UINT64_MAX / b)
		return -1;
	*out = a * b;
	return 0;
}

static int
unit_ms(const char *unit, uint64_t *ms)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 },
		{ "h", 3600000 }, { "d", 86400000 },
	};
	size_t i;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(unit, units[i].unit) == 0) {
			*ms = units[i].ms;
			return 0;
		}
	}
	return -1;
}

int
config_parse_duration(const char *s, uint64_t *ms)
{
	uint64_t n, unit;
	size_t nd = digits(s);

	/* a bare number is refused: "timeout data 10" could mean anything */
	if (parse_u64(s, nd, &n) == -1 || unit_ms(s + nd, &unit) == -1)
		return -1;
	return mul(n, unit, ms);
}

int
config_parse_size(const char *s, uint64_t *bytes)
{
	uint64_t n, unit = 1;
	size_t nd = digits(s);

	if (parse_u64(s, nd, &n) == -1)
		return -1;
	switch (s[nd]) {
	case '\0': unit = 1; break;
	case 'K': case 'k': unit = 1024; break;
	case 'M': case 'm': unit = 1024 * 1024; break;
	case 'G': case 'g': unit = 1024 * 1024 * 1024; break;
	default: return -1;
	}
	if (s[nd] != '\0' && s[nd + 1] != '\0')
		return -1;
	return mul(n, unit, bytes);
}

int
config_parse_rate(const char *s, uint64_t *count, uint64_t *period_ms)
{
	const char *slash = strchr(s, '/');
	uint64_t n, ms;

	if (slash == NULL || parse_u64(s, (size_t)(slash - s), &n) == -1 ||
	    n == 0)
		return -1;
	/* "30/m" reads as "30/1m" */
	if (unit_ms(slash + 1, &ms) == -1 &&
	    config_parse_duration(slash + 1, &ms) == -1)
		return -1;
	if (ms == 0)
		return -1;
	*count = n;
	*period_ms = ms;
	return 0;
}

int
config_parse_addr(const char *s, struct config_addr *out)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
	char host[INET6_ADDRSTRLEN];
	const char *colon, *h = s;
	size_t hlen;
	uint64_t port;

	memset(out, 0, sizeof(*out));
	if (strlen(s) >= sizeof(out->text) || (colon = strrchr(s, ':')) == NULL)
		return -1;
	hlen = (size_t)(colon - s);
	if (parse_u64(colon + 1, strlen(colon + 1), &port) == -1 ||
	    port == 0 || port > 65535)
		return -1;
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		h++;
		hlen -= 2;
		if (hlen >= sizeof(host))
			return -1;
		memcpy(host, h, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		out->len = sizeof(*sin6);
	} else {
		if (hlen >= sizeof(host))
			return -1;
		memcpy(host, h, hlen);
		host[hlen] = '\0';
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		if (strcmp(host, "*") == 0)
			sin->sin_addr.s_addr = htonl(INADDR_ANY);
		else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -1;
		out->len = sizeof(*sin);
	}
	strcpy(out->text, s);
	return 0;
}

static bool
same_addr(const struct config_addr *a, const struct config_addr *b)
{
	const struct sockaddr_in *a4, *b4;
	const struct sockaddr_in6 *a6, *b6;

	if (a->ss.ss_family != b->ss.ss_family)
		return false;
	if (a->ss.ss_family == AF_INET) {
		a4 = (const struct sockaddr_in *)&a->ss;
		b4 = (const struct sockaddr_in *)&b->ss;
		return a4->sin_port == b4->sin_port &&
		    a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	}
	a6 = (const struct sockaddr_in6 *)&a->ss;
	b6 = (const struct sockaddr_in6 *)&b->ss;
	return a6->sin6_port == b6->sin6_port &&
	    memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr)) == 0;
}

/*
 * Two listening sockets of one family on one port cannot both be bound when
 * either is the wildcard (Linux refuses it even with SO_REUSEADDR).
 */
static bool
addr_overlap(const struct config_addr *a, const struct config_addr *b)
{
	static const struct in6_addr any6 = IN6ADDR_ANY_INIT;
	const struct sockaddr_in *a4, *b4;
	const struct sockaddr_in6 *a6, *b6;

	if (a->ss.ss_family != b->ss.ss_family)
		return false;
	if (a->ss.ss_family == AF_INET) {
		a4 = (const struct sockaddr_in *)&a->ss;
		b4 = (const struct sockaddr_in *)&b->ss;
		return a4->sin_port == b4->sin_port &&
		    (a4->sin_addr.s_addr == b4->sin_addr.s_addr ||
		    a4->sin_addr.s_addr == htonl(INADDR_ANY) ||
		    b4->sin_addr.s_addr == htonl(INADDR_ANY));
	}
	a6 = (const struct sockaddr_in6 *)&a->ss;
	b6 = (const struct sockaddr_in6 *)&b->ss;
	return a6->sin6_port == b6->sin6_port &&
	    (memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr)) == 0 ||
	    memcmp(&a6->sin6_addr, &any6, sizeof(any6)) == 0 ||
	    memcmp(&b6->sin6_addr, &any6, sizeof(any6)) == 0);
}

static bool
addr_is_any(const struct config_addr *a)
{
	static const struct in6_addr any6 = IN6ADDR_ANY_INIT;

	if (a->ss.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr == htonl(INADDR_ANY);
	return memcmp(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr, &any6, sizeof(any6)) == 0;
}

static uint16_t
addr_port(const struct config_addr *a)
{
	if (a->ss.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&a->ss)->sin_port;
	return ((const struct sockaddr_in6 *)&a->ss)->sin6_port;
}

/*
 * A connect to SERVER would reach listener LN: the same address, or a
 * loopback one on a wildcard listener (a wildcard listener's other local
 * addresses are not known here).  [::ffff:127.0.0.1]:25 reaches an IPv4
 * listener.
 */
static bool
listen_catches(const struct config_addr *ln, const struct config_addr *server)
{
	static const struct in6_addr lo6 = IN6ADDR_LOOPBACK_INIT;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&server->ss;
	struct config_addr folded;

	/* the common answer, cheaply: find_loops() asks for every pair */
	if (addr_port(ln) != addr_port(server))
		return false;
	if (server->ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		/* built apart and copied in, as sess_fold_mapped() does: written
		 * through a sockaddr_in pointer, the storage's family could be
		 * read back stale under strict aliasing */
		struct sockaddr_in s4;
		memset(&s4, 0, sizeof s4);
		s4.sin_family = AF_INET;
		s4.sin_port = s6->sin6_port;
		memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
		memset(&folded, 0, sizeof folded);
		memcpy(&folded.ss, &s4, sizeof s4);
		folded.len = sizeof s4;
		server = &folded;
		s6 = NULL;
	}
	if (same_addr(ln, server))
		return true;
	if (!addr_overlap(ln, server) || !addr_is_any(ln))
		return false;
	if (server->ss.ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)&server->ss)->sin_addr.s_addr) >> 24) == 127;
	return memcmp(&s6->sin6_addr, &lo6, sizeof(lo6)) == 0;
}

/*
 * "FILE:LINE" for errors found once the tree is gone (binding, opening the
 * log).  A path too long for it loses its head, never the line: the file's
 * own name and the line are what the admin needs.
 */
static void
set_where(char out[CONFIG_WHERE_MAX], const struct conf_stmt *st)
{
	char line[16];
	size_t llen = (size_t)snprintf(line, sizeof line, ":%d", st->line);
	size_t flen = strlen(st->file), room = CONFIG_WHERE_MAX - 1 - llen;

	if (flen <= room) {
		memcpy(out, st->file, flen);
	} else {
		memcpy(out, "...", 3);
		memcpy(out + 3, st->file + flen - (room - 3), room - 3);
		flen = room;
	}
	memcpy(out + flen, line, llen + 1);
}

/* ---- arguments of one statement --------------------------------------- */

static const char *
arg(const struct conf_stmt *st, size_t i)
{
	return st->words[i].text;
}

static int
get_number(struct loader *L, const struct conf_stmt *st, size_t i,
    uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v;

	if (parse_u64(arg(st, i), strlen(arg(st, i)), &v) == -1) {
		err(L, st, "%s: expected a number, got \"" SHOW "\"",
		    arg(st, 0), arg(st, i));
		return -1;
	}
	if (v < min || v > max) {
		err(L, st, "%s: %s is out of range (%llu to %llu)", arg(st, 0),
		    arg(st, i), (unsigned long long)min,
		    (unsigned long long)max);
		return -1;
	}
	*out = v;
	return 0;
}

static int
get_unsigned(struct loader *L, const struct conf_stmt *st, size_t i,
    unsigned min, unsigned max, unsigned *out)
{
	uint64_t v;

	if (get_number(L, st, i, min, max, &v) == -1)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int
get_duration(struct loader *L, const struct conf_stmt *st, size_t i,
    bool zero_ok, uint64_t *ms)
{
	uint64_t v;

	if (config_parse_duration(arg(st, i), &v) == -1) {
		err(L, st, "%s: expected a duration such as 500ms, 30s, 5m, "
		    "2h or 1d, got \"" SHOW "\"", arg(st, 0), arg(st, i));
		return -1;
	}
	if (v == 0 && !zero_ok) {
		err(L, st, "%s: must be longer than 0", arg(st, 0));
		return -1;
	}
	/* a wait of more than a day is a typo, not a policy */
	if (v > CONFIG_WAIT_MAX_MS) {
		err(L, st, "%s: " SHOW " is longer than 1d", arg(st, 0), arg(st, i));
		return -1;
	}
	*ms = v;
	return 0;
}

static int
get_keyword(struct loader *L, const struct conf_stmt *st, size_t i,
    const struct keyword *kw, const char *expected, int *out)
{
	for (; kw->word != NULL; kw++) {
		if (strcmp(arg(st, i), kw->word) == 0) {
			*out = kw->value;
			return 0;
		}
	}
	err(L, st, "%s: expected %s, got \"" SHOW "\"", arg(st, 0), expected,
	    arg(st, i));
	return -1;
}

static int
get_onoff(struct loader *L, const struct conf_stmt *st, bool *out)
{
	static const struct keyword kw[] = {
		{ "on", 1 }, { "off", 0 }, { NULL, 0 },
	};
	int v;

	if (get_keyword(L, st, 1, kw, "on or off", &v) == -1)
		return -1;
	*out = v != 0;
	return 0;
}

static int
get_string(struct loader *L, const struct conf_stmt *st, size_t i,
    char **out)
{
	if (arg(st, i)[0] == '\0') {
		err(L, st, "%s: must not be empty", arg(st, 0));
		return -1;
	}
	if ((*out = strdup(arg(st, i))) == NULL) {
		err(L, st, "out of memory");
		return -1;
	}
	return 0;
}

static int
get_addr(struct loader *L, const struct conf_stmt *st, size_t i,
    struct config_addr *out)
{
	if (config_parse_addr(arg(st, i), out) == -1) {
		err(L, st, "%s: expected an address such as 127.0.0.1:25, "
		    "[::1]:25 or *:25, got \"" SHOW "\"", arg(st, 0),
		    arg(st, i));
		return -1;
	}
	return 0;
}

/*
 * An address smtpgate listens on.  An IPv6 listener is IPv6-only (so that
 * [::]:25 and 0.0.0.0:25 can coexist), which a v4-mapped address cannot be.
 */
static int
get_bind_addr(struct loader *L, const struct conf_stmt *st, size_t i,
    struct config_addr *out)
{
	if (get_addr(L, st, i, out) == -1)
		return -1;
	if (out->ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(
	    &((const struct sockaddr_in6 *)&out->ss)->sin6_addr)) {
		err(L, st, "%s: write the IPv4 address %s without ::ffff:",
		    arg(st, 0), out->text);
		return -1;
	}
	return 0;
}

/* Names of upstreams (and later rules, limits) appear in logs and metrics
 * labels: keep them to characters that need no quoting there. */
static int
get_name(struct loader *L, const struct conf_stmt *st, size_t i, char *out)
{
	const char *s = arg(st, i);
	size_t n;

	for (n = 0; s[n] != '\0'; n++) {
		if (!isalnum((unsigned char)s[n]) && s[n] != '-' &&
		    s[n] != '_' && s[n] != '.') {
			err(L, st, "%s: a name may hold only letters, digits, "
			    "\"-\", \"_\" and \".\", got \"" SHOW "\"",
			    arg(st, 0), s);
			return -1;
		}
	}
	if (n == 0 || n >= CONFIG_NAME_MAX) {
		err(L, st, "%s: a name must have 1 to %d characters",
		    arg(st, 0), CONFIG_NAME_MAX - 1);
		return -1;
	}
	memcpy(out, s, n + 1);
	return 0;
}

/* ---- the walk --------------------------------------------------------- */

/*
 * Run every statement of BLK through TABLE.  The shape of a statement (its
 * argument count, its block) is checked here so handlers only judge values.
 * WHERE names the block in messages ("" at the top level).
 */
static void
run_block(struct loader *L, const struct conf_block *blk,
    const struct directive *table, size_t n, const char *where, void *ctx)
{
	const struct conf_stmt *seen[DIRECTIVES_MAX] = { NULL };
	const struct conf_stmt *st;
	const struct directive *d;
	size_t i, j, k, nargs;

	for (i = 0; i < blk->nstmts && L->errs->count <= CONFIG_MAX_ERRORS;
	    i++) {
		st = &blk->stmts[i];
		nargs = st->nwords - 1;
		if (st->words[0].kind != CONF_WORD_BARE) {
			err(L, st, "expected a directive, got \"" SHOW "\"%s",
			    arg(st, 0), where);
			continue;
		}
		for (j = 0, d = NULL; j < n && d == NULL; j++)
			if (strcmp(table[j].name, arg(st, 0)) == 0)
				d = &table[j];
		if (d == NULL) {
			err(L, st, "unknown directive \"" SHOW "\"%s",
			    arg(st, 0), where);
			continue;
		}
		if (d->handler == NULL) {
			err(L, st, "\"%s\" is not supported by this build yet",
			    d->name);
			continue;
		}
		k = (size_t)(d - table);
		if (!d->repeatable && seen[k] != NULL) {
			err_again(L, st, d->name, seen[k]);
			continue;
		}
		seen[k] = st;
		if (nargs < (size_t)d->min_args ||
		    (d->max_args >= 0 && nargs > (size_t)d->max_args)) {
			if (d->min_args == d->max_args)
				err(L, st, "%s: expected %d argument%s, got %zu",
				    d->name, d->min_args,
				    d->min_args == 1 ? "" : "s", nargs);
			else if (d->max_args < 0)
				err(L, st, "%s: expected at least %d "
				    "argument%s, got %zu", d->name,
				    d->min_args, d->min_args == 1 ? "" : "s",
				    nargs);
			else
				err(L, st, "%s: expected %d to %d arguments, "
				    "got %zu", d->name, d->min_args,
				    d->max_args, nargs);
			continue;
		}
		if (st->block != NULL && d->block == BLOCK_NO) {
			err(L, st, "%s: does not take a { block }", d->name);
			continue;
		}
		if (st->block == NULL && d->block == BLOCK_YES) {
			err(L, st, "%s: expected a { block }", d->name);
			continue;
		}
		(void)d->handler(L, st, ctx);
	}
}

#define RUN(L, blk, table, where, ctx) do {				\
	_Static_assert(sizeof(table) / sizeof(table[0]) <= DIRECTIVES_MAX, \
	    "directive table too long");				\
	run_block(L, blk, table, sizeof(table) / sizeof(table[0]),	\
	    where, ctx);						\
} while (0)

/* ---- tls { } ---------------------------------------------------------- */

static int
tls_certificate(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	return get_string(L, st, 1, &((struct config_tls *)ctx)->certificate);
}

static int
tls_key(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	return get_string(L, st, 1, &((struct config_tls *)ctx)->key);
}

static int
tls_protocols(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	static const struct keyword kw[] = {
		{ "TLSv1.2", CONFIG_TLS_V1_2 }, { "TLSv1.3", CONFIG_TLS_V1_3 },
		{ NULL, 0 },
	};
	struct config_tls *tls = ctx;
	size_t i;
	int bit;

	for (i = 1; i < st->nwords; i++) {
		if (get_keyword(L, st, i, kw, "TLSv1.2 or TLSv1.3", &bit) ==
		    -1)
			return -1;
		tls->protocols |= (unsigned)bit;
	}
	return 0;
}

static int
tls_ciphers(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	return get_string(L, st, 1, &((struct config_tls *)ctx)->ciphers);
}

static const struct directive tls_table[] = {
	{ "certificate", tls_certificate, 1, 1, BLOCK_NO, false },
	{ "key", tls_key, 1, 1, BLOCK_NO, false },
	{ "protocols", tls_protocols, 1, 2, BLOCK_NO, false },
	{ "ciphers", tls_ciphers, 1, 1, BLOCK_NO, false },
};

static int
global_tls(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	struct config_tls *tls = &L->cfg->tls;

	(void)ctx;
	RUN(L, st->block, tls_table, " in tls block", tls);
	if (tls->certificate == NULL || tls->key == NULL) {
		err(L, st, "tls: needs both a certificate and a key");
		return -1;
	}
	char why[TLS_ERR_MAX];
	enum tls_part part;
	if ((tls->ctx = tls_server_ctx_new(tls, why, sizeof why, &part)) == NULL) {
		/* At the line of the directive at fault, when there is one. */
		static const char *const names[] = {
			[TLS_PART_PROTOCOLS] = "protocols", [TLS_PART_CIPHERS] = "ciphers",
			[TLS_PART_CERTIFICATE] = "certificate", [TLS_PART_KEY] = "key",
		};
		const struct conf_stmt *at = st;
		for (size_t i = 0; part != TLS_PART_NONE && i < st->block->nstmts; i++)
			if (strcmp(arg(&st->block->stmts[i], 0), names[part]) == 0)
				at = &st->block->stmts[i];
		err(L, at, "tls: %s", why);
		return -1;
	}
	return 0;
}

/* ---- upstream NAME { } ------------------------------------------------ */

static int
up_server(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	struct config_upstream *up = ctx;
	struct config_addr addr, *servers;

	if (get_addr(L, st, 1, &addr) == -1)
		return -1;
	if (addr_is_any(&addr)) {
		err(L, st, "server %s: a wildcard is no address to connect to", addr.text);
		return -1;
	}
	if (up->nservers >= CONFIG_SERVERS_MAX) {
		err(L, st, "server: more than %d in one upstream", CONFIG_SERVERS_MAX);
		return -1;
	}
	if ((servers = conf_grow(up->servers, up->nservers,
	    sizeof(*servers))) == NULL) {
		err(L, st, "out of memory");
		return -1;
	}
	up->servers = servers;
	up->servers[up->nservers++] = addr;
	return 0;
}

static int
up_forward(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	static const struct keyword kw[] = {
		{ "none", FORWARD_NONE }, { "xclient", FORWARD_XCLIENT },
		{ "proxy-v1", FORWARD_PROXY_V1 },
		{ "proxy-v2", FORWARD_PROXY_V2 }, { NULL, 0 },
	};
	int v;

	if (get_keyword(L, st, 1, kw, "none, xclient, proxy-v1 or proxy-v2",
	    &v) == -1)
		return -1;
	((struct config_upstream *)ctx)->forward = (enum forward_mode)v;
	return 0;
}

static int
up_starttls(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	return get_onoff(L, st, &((struct config_upstream *)ctx)->starttls);
}

static int
up_verify(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	return get_onoff(L, st, &((struct config_upstream *)ctx)->verify);
}

static int
up_ca(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	return get_string(L, st, 1, &((struct config_upstream *)ctx)->ca);
}

static int
up_timeout(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	if (strcmp(arg(st, 1), "connect") != 0) {
		err(L, st, "timeout: expected connect, got \"" SHOW "\"",
		    arg(st, 1));
		return -1;
	}
	return get_duration(L, st, 2, false,
	    &((struct config_upstream *)ctx)->connect_timeout_ms);
}

static const struct directive upstream_table[] = {
	{ "server", up_server, 1, 1, BLOCK_NO, true },
	{ "forward", up_forward, 1, 1, BLOCK_NO, false },
	{ "starttls", up_starttls, 1, 1, BLOCK_NO, false },
	{ "verify", up_verify, 1, 1, BLOCK_NO, false },
	{ "ca", up_ca, 1, 1, BLOCK_NO, false },
	{ "timeout", up_timeout, 2, 2, BLOCK_NO, false },
};

static void
free_upstream(struct config_upstream *up)
{
	free(up->servers);
	free(up->ca);
	tls_ctx_free(up->tls_ctx);
}

static int
global_upstream(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	struct config *cfg = L->cfg;
	struct config_upstream up, *ups;
	bool keep = true;
	size_t i;

	(void)ctx;
	memset(&up, 0, sizeof(up));
	up.forward = FORWARD_NONE;
	up.connect_timeout_ms = 10000;
	if (get_name(L, st, 1, up.name) == -1)
		keep = false;
	if (keep && cfg->nupstreams >= CONFIG_UPSTREAMS_MAX) {
		err(L, st, "upstream: more than %d", CONFIG_UPSTREAMS_MAX);
		keep = false;
	}
	for (i = 0; keep && i < cfg->nupstreams; i++) {
		if (strcmp(cfg->upstreams[i].name, up.name) == 0) {
			err(L, st, "upstream: \"%s\" is already defined",
			    up.name);
			keep = false;
		}
	}
	/* a rejected upstream's block is still read, for its own errors */
	RUN(L, st->block, upstream_table, " in upstream block", &up);
	/* a server line that failed was reported already */
	for (i = 0; i < st->block->nstmts; i++)
		if (strcmp(arg(&st->block->stmts[i], 0), "server") == 0)
			break;
	if (i == st->block->nstmts) {
		err(L, st, "upstream %s: needs at least one server", up.name);
		keep = false;
	}
	if (keep && up.starttls) {
		char why[TLS_ERR_MAX];
		if ((up.tls_ctx = tls_client_ctx_new(&up, why, sizeof why)) == NULL) {
			/* with a ca of its own, that file is what failed */
			const struct conf_stmt *at = st;
			for (i = 0; up.verify && up.ca != NULL && i < st->block->nstmts; i++)
				if (strcmp(arg(&st->block->stmts[i], 0), "ca") == 0)
					at = &st->block->stmts[i];
			err(L, at, "upstream %s: %s", up.name, why);
			keep = false;
		}
	}
	if (up.verify && !up.starttls) {
		err(L, st, "upstream %s: verify on needs starttls on (nothing would be verified)",
		    up.name);
		keep = false;
	}
	if (!keep) {
		/* Known by name, so a listen naming it gets no second error. */
		char (*b)[CONFIG_NAME_MAX] = up.name[0] ? conf_grow(L->broken, L->nbroken,
		    sizeof(*L->broken)) : NULL;
		if (b) {
			L->broken = b;
			memcpy(L->broken[L->nbroken++], up.name, CONFIG_NAME_MAX);
		}
		free_upstream(&up);
		return -1;
	}
	if ((ups = conf_grow(cfg->upstreams, cfg->nupstreams,
	    sizeof(*ups))) == NULL) {
		free_upstream(&up);
		err(L, st, "out of memory");
		return -1;
	}
	cfg->upstreams = ups;
	cfg->upstreams[cfg->nupstreams++] = up;
	return 0;
}

/* ---- listen ADDR { } -------------------------------------------------- */

struct listen_ctx {
	struct config_listen *ln;
	struct listen_pending *pend;
};

static int
ln_upstream(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	struct listen_ctx *lc = ctx;

	if (get_name(L, st, 1, lc->pend->upstream) == -1)
		return -1;
	lc->pend->upstream_line = st->line;
	return 0;
}

static int
ln_tls(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	static const struct keyword kw[] = {
		{ "none", TLS_MODE_NONE }, { "starttls", TLS_MODE_STARTTLS },
		{ "implicit", TLS_MODE_IMPLICIT }, { NULL, 0 },
	};
	struct listen_ctx *lc = ctx;
	int v;

	if (get_keyword(L, st, 1, kw, "none, starttls or implicit", &v) == -1)
		return -1;
	lc->ln->tls = (enum tls_mode)v;
	lc->pend->tls_line = st->line;
	return 0;
}

static int
ln_proxy_protocol(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	return get_onoff(L, st, &((struct listen_ctx *)ctx)->ln->proxy_protocol);
}

static int
ln_pregreet(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	return get_duration(L, st, 1, true,
	    &((struct listen_ctx *)ctx)->ln->pregreet_ms);
}

static int
ln_banner(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	const char *s = arg(st, 1);
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		/* It goes on the wire after "220 " (RFC 5321 textstring). */
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f) {
			err(L, st, "banner: must not hold control characters");
			return -1;
		}
		if (c > 0x7f) {
			err(L, st, "banner: must be US-ASCII (RFC 5321 greeting text)");
			return -1;
		}
	}
	if (i > BANNER_MAX) {
		err(L, st, "banner: longer than %d characters", BANNER_MAX);
		return -1;
	}
	return get_string(L, st, 1, &((struct listen_ctx *)ctx)->ln->banner);
}

static int
ln_auth(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	static const struct keyword kw[] = {
		{ "require-tls", AUTH_MODE_REQUIRE_TLS },
		{ "as-mta", AUTH_MODE_AS_MTA }, { NULL, 0 },
	};
	int v;

	if (get_keyword(L, st, 1, kw, "require-tls or as-mta", &v) == -1)
		return -1;
	((struct listen_ctx *)ctx)->ln->auth = (enum auth_mode)v;
	((struct listen_ctx *)ctx)->pend->auth_line = st->line;
	return 0;
}

static const struct directive listen_table[] = {
	{ "upstream", ln_upstream, 1, 1, BLOCK_NO, false },
	{ "tls", ln_tls, 1, 1, BLOCK_NO, false },
	{ "proxy_protocol", ln_proxy_protocol, 1, 1, BLOCK_NO, false },
	{ "pregreet", ln_pregreet, 1, 1, BLOCK_NO, false },
	{ "banner", ln_banner, 1, 1, BLOCK_NO, false },
	{ "auth", ln_auth, 1, 1, BLOCK_NO, false },
};

static int
global_listen(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	struct config *cfg = L->cfg;
	struct config_listen ln, *lns;
	struct listen_pending pend, *pends;
	struct listen_ctx lc = { &ln, &pend };
	bool keep = true;
	size_t i;

	(void)ctx;
	memset(&ln, 0, sizeof(ln));
	memset(&pend, 0, sizeof(pend));
	ln.tls = TLS_MODE_NONE;
	ln.auth = AUTH_MODE_AS_MTA;
	ln.line = st->line;
	set_where(ln.where, st);
	pend.file = st->file;
	if (get_bind_addr(L, st, 1, &ln.addr) == -1)
		keep = false;
	if (keep && cfg->nlistens >= CONFIG_LISTENS_MAX) {
		err(L, st, "listen: more than %d", CONFIG_LISTENS_MAX);
		keep = false;
	}
	for (i = 0; keep && i < cfg->nlistens; i++) {
		if (same_addr(&cfg->listens[i].addr, &ln.addr)) {
			err(L, st, "listen: %s is already declared at %s:%d",
			    ln.addr.text, L->pending[i].file,
			    cfg->listens[i].line);
			keep = false;
		}
	}
	if (st->block != NULL)
		RUN(L, st->block, listen_table, " in listen block", &lc);
	if (!keep) {
		free(ln.banner);
		return -1;
	}
	if ((pends = conf_grow(L->pending, cfg->nlistens, sizeof(*pends))) == NULL) {
		free(ln.banner);
		err(L, st, "out of memory");
		return -1;
	}
	L->pending = pends;
	if ((lns = conf_grow(cfg->listens, cfg->nlistens, sizeof(*lns))) == NULL) {
		free(ln.banner);
		err(L, st, "out of memory");
		return -1;
	}
	cfg->listens = lns;
	L->pending[cfg->nlistens] = pend;
	cfg->listens[cfg->nlistens++] = ln;
	return 0;
}

/* ---- globals ---------------------------------------------------------- */

static int
global_user(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	(void)ctx;
	set_where(L->cfg->user_where, st);
	if (get_string(L, st, 1, &L->cfg->user) < 0)
		return -1;
	/* Known now, not after the listeners are bound: -t must catch it. */
	errno = 0;
	if (getpwnam(L->cfg->user) == NULL) {
		err(L, st, "user: no such user %s%s%s", L->cfg->user,
		    errno ? ": " : "", errno ? strerror(errno) : "");
		return -1;
	}
	return 0;
}

/*
 * The log is opened before privileges are dropped, so permissions are the
 * start's business; a missing directory or a directory in the way is a
 * mistake -t can name.
 */
static int
check_log_path(struct loader *L, const struct conf_stmt *st, const char *path)
{
	struct stat sb;
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t n = (size_t)(slash - path);

	if (stat(path, &sb) == 0) {
		if (S_ISDIR(sb.st_mode)) {
			err(L, st, "log: %s is a directory", path);
			return -1;
		}
		return 0;
	}
	if (n >= sizeof dir) {
		err(L, st, "log: path too long");
		return -1;
	}
	memcpy(dir, path, n);
	dir[n] = '\0';
	if (n == 0)
		return 0;                       /* "/file": the root exists */
	int rc = stat(dir, &sb);
	/* A reload runs as `user`, who may not search a root-only parent:
	 * only what is surely wrong is an error. */
	if (rc != 0 && errno != ENOENT && errno != ENOTDIR)
		return 0;
	if (rc != 0 || !S_ISDIR(sb.st_mode)) {
		err(L, st, "log: directory %s: %s", dir,
		    rc != 0 ? strerror(errno) : "not a directory");
		return -1;
	}
	return 0;
}

static int
global_log(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	static const struct keyword formats[] = {
		{ "text", LOG_FORMAT_TEXT }, { "json", LOG_FORMAT_JSON },
		{ NULL, 0 },
	};
	struct config *cfg = L->cfg;
	const char *target = arg(st, 1);
	int v;

	(void)ctx;
	set_where(cfg->log_where, st);
	if (strcmp(target, "stderr") == 0) {
		cfg->log_target = LOG_TARGET_STDERR;
	} else if (strcmp(target, "syslog") == 0) {
		cfg->log_target = LOG_TARGET_SYSLOG;
	} else if (strchr(target, '/') != NULL) {
		/* a path needs a "/": "log syslgo" is a typo, not a file */
		cfg->log_target = LOG_TARGET_FILE;
		if (get_string(L, st, 1, &cfg->log_file) == -1)
			return -1;
		if (check_log_path(L, st, cfg->log_file) == -1)
			return -1;
	} else {
		err(L, st, "log: expected stderr, syslog or a file path "
		    "(with a \"/\"), got \"" SHOW "\"", target);
		return -1;
	}
	if (st->nwords == 3) {
		if (get_keyword(L, st, 2, formats, "text or json", &v) == -1)
			return -1;
		cfg->log_format = (enum log_format)v;
	}
	return 0;
}

static int
global_metrics(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	(void)ctx;
	set_where(L->cfg->metrics_where, st);
	if (get_bind_addr(L, st, 1, &L->cfg->metrics) == -1)
		return -1;
	L->cfg->has_metrics = true;
	L->metrics = st;
	return 0;
}

static int
global_max_sessions(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	(void)ctx;
	return get_unsigned(L, st, 1, 1, 1000000, &L->cfg->max_sessions);
}

static int
global_max_recipients(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	(void)ctx;
	return get_unsigned(L, st, 1, 1, 1000000, &L->cfg->max_recipients);
}

static int
global_max_message_size(struct loader *L, const struct conf_stmt *st,
    void *ctx)
{
	(void)ctx;
	if (config_parse_size(arg(st, 1), &L->cfg->max_message_size) == -1) {
		err(L, st, "max_message_size: expected a size such as 512, "
		    "64K, 10M or 1G, got \"" SHOW "\"", arg(st, 1));
		return -1;
	}
	return 0;
}

static int
global_timeout(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	const struct conf_stmt **seen = NULL;
	uint64_t *ms = NULL;

	(void)ctx;
	if (strcmp(arg(st, 1), "command") == 0) {
		seen = &L->timeout_command;
		ms = &L->cfg->timeout_command_ms;
	} else if (strcmp(arg(st, 1), "data") == 0) {
		seen = &L->timeout_data;
		ms = &L->cfg->timeout_data_ms;
	}
	if (seen != NULL) {
		if (*seen != NULL) {
			err_again(L, st, strcmp(arg(st, 1), "data") == 0
			    ? "timeout data" : "timeout command", *seen);
			return -1;
		}
		*seen = st;
		return get_duration(L, st, 2, false, ms);
	}
	err(L, st, "timeout: expected command or data, got \"" SHOW "\"",
	    arg(st, 1));
	return -1;
}

static int
global_shutdown_grace(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	(void)ctx;
	return get_duration(L, st, 1, true, &L->cfg->shutdown_grace_ms);
}

static int
global_bare_newline(struct loader *L, const struct conf_stmt *st, void *ctx)
{
	static const struct keyword kw[] = {
		{ "normalize", BARE_NEWLINE_NORMALIZE },
		{ "reject", BARE_NEWLINE_REJECT },
		{ "allow", BARE_NEWLINE_ALLOW }, { NULL, 0 },
	};
	int v;

	(void)ctx;
	if (get_keyword(L, st, 1, kw, "normalize, reject or allow", &v) == -1)
		return -1;
	L->cfg->bare_newline = (enum bare_newline)v;
	return 0;
}

static int
global_limit_table_size(struct loader *L, const struct conf_stmt *st,
    void *ctx)
{
	(void)ctx;
	return get_number(L, st, 1, 1, 100000000, &L->cfg->limit_table_size);
}

/* `timeout` is repeatable because command and data are two settings. */
static const struct directive global_table[] = {
	{ "user", global_user, 1, 1, BLOCK_NO, false },
	{ "log", global_log, 1, 2, BLOCK_NO, false },
	{ "metrics", global_metrics, 1, 1, BLOCK_NO, false },
	{ "max_sessions", global_max_sessions, 1, 1, BLOCK_NO, false },
	{ "max_recipients", global_max_recipients, 1, 1, BLOCK_NO, false },
	{ "max_message_size", global_max_message_size, 1, 1, BLOCK_NO, false },
	{ "timeout", global_timeout, 2, 2, BLOCK_NO, true },
	{ "shutdown_grace", global_shutdown_grace, 1, 1, BLOCK_NO, false },
	{ "bare_newline", global_bare_newline, 1, 1, BLOCK_NO, false },
	{ "limit_table_size", global_limit_table_size, 1, 1, BLOCK_NO, false },
	{ "tls", global_tls, 0, 0, BLOCK_YES, false },
	{ "upstream", global_upstream, 1, 1, BLOCK_YES, true },
	{ "listen", global_listen, 1, 1, BLOCK_MAYBE, true },
	/* in the SPEC, coming with later features */
	{ "rule", NULL, 0, -1, BLOCK_MAYBE, true },
	{ "limit", NULL, 0, -1, BLOCK_MAYBE, true },
	{ "geoip", NULL, 0, -1, BLOCK_MAYBE, true },
	{ "limits", NULL, 0, -1, BLOCK_MAYBE, true },
};

/*
 * Listener I's upstream has a server that is listener J: a hop back into
 * smtpgate.  A chain of such hops may be meant; a cycle never is (each
 * session would open another until max_sessions is full).
 */
static const struct config_addr *
hop(const struct config *cfg, size_t i, size_t j)
{
	const struct config_upstream *u = cfg->listens[i].upstream;

	for (size_t k = 0; u != NULL && k < u->nservers; k++)
		if (listen_catches(&cfg->listens[j].addr, &u->servers[k]))
			return &u->servers[k];
	return NULL;
}

/* Bit J of row I of an N x N bit matrix WORDS 64-bit words wide. */
#define BIT(m, words, i, j) ((m)[(i) * (words) + (j) / 64] & (1ull << ((j) % 64)))

static void
find_loops(struct loader *L)
{
	struct config *cfg = L->cfg;
	size_t n = cfg->nlistens, words = (n + 63) / 64, i, j, k;
	uint64_t *reach;

	if (n == 0)
		return;
	if ((reach = calloc(n * words, sizeof(*reach))) == NULL) {
		conf_error(L->errs, cfg->file, 0, "out of memory");
		return;
	}
	for (i = 0; i < n; i++)
		for (j = 0; j < n; j++)
			if (hop(cfg, i, j) != NULL)
				reach[i * words + j / 64] |= 1ull << (j % 64);
	/* Warshall: what a listener's sessions reach, however many hops on */
	for (k = 0; k < n; k++)
		for (i = 0; i < n; i++)
			if (BIT(reach, words, i, k))
				for (size_t w = 0; w < words; w++)
					reach[i * words + w] |= reach[k * words + w];
	for (i = 0; i < n; i++) {
		if (!BIT(reach, words, i, i))
			continue;
		/* name the first hop that leads back */
		for (j = 0; j < n; j++) {
			const struct config_addr *via = hop(cfg, i, j);
			if (via != NULL && (j == i || BIT(reach, words, j, i))) {
				conf_error(L->errs, L->pending[i].file, cfg->listens[i].line,
				    "listen %s: its sessions come back to it through "
				    "server %s of upstream %s (a loop)",
				    cfg->listens[i].addr.text, via->text,
				    cfg->listens[i].upstream->name);
				break;
			}
		}
	}
	free(reach);
}

#undef BIT

/* What can only be judged once the whole file has been read. */
static void
resolve(struct loader *L, const struct conf_tree *tree)
{
	struct config *cfg = L->cfg;
	struct config_listen *ln;
	struct listen_pending *p;
	size_t i, j;

	if (cfg->nlistens == 0 && L->errs->count == 0)
		conf_error(L->errs, cfg->file, tree->last_line,
		    "no listen directive: nothing to do");
	for (i = 0; i < cfg->nlistens; i++) {
		ln = &cfg->listens[i];
		p = &L->pending[i];
		if (p->upstream[0] != '\0') {
			for (j = 0; j < cfg->nupstreams; j++)
				if (strcmp(cfg->upstreams[j].name,
				    p->upstream) == 0)
					ln->upstream = &cfg->upstreams[j];
			for (j = 0; ln->upstream == NULL && j < L->nbroken; j++)
				if (strcmp(L->broken[j], p->upstream) == 0)
					break;
			if (ln->upstream == NULL && j == L->nbroken)
				conf_error(L->errs, p->file, p->upstream_line,
				    "upstream: no upstream named \"%s\"",
				    p->upstream);
		} else if (cfg->nupstreams == 1) {
			ln->upstream = &cfg->upstreams[0];
		} else if (cfg->nupstreams == 0) {
			/* a broken upstream has had its own error */
			if (L->nbroken == 0)
				conf_error(L->errs, p->file, ln->line,
				    "listen %s: no upstream is defined",
				    ln->addr.text);
		} else {
			conf_error(L->errs, p->file, ln->line,
			    "listen %s: name one of the upstreams with "
			    "\"upstream NAME\"", ln->addr.text);
		}
		/* Exact duplicates were refused where the second was read. */
		for (j = 0; j < i; j++)
			if (addr_overlap(&cfg->listens[j].addr, &ln->addr) &&
			    !same_addr(&cfg->listens[j].addr, &ln->addr))
				conf_error(L->errs, p->file, ln->line,
				    "listen %s: overlaps listen %s at %s:%d (one "
				    "of them is a wildcard on the same port)",
				    ln->addr.text, cfg->listens[j].addr.text,
				    L->pending[j].file, cfg->listens[j].line);
		if (L->metrics != NULL && addr_overlap(&cfg->metrics, &ln->addr))
			conf_error(L->errs, L->metrics->file, L->metrics->line,
			    "metrics %s: the port is taken by listen %s at %s:%d",
			    cfg->metrics.text, ln->addr.text, p->file, ln->line);
		if (ln->auth == AUTH_MODE_REQUIRE_TLS && ln->tls == TLS_MODE_NONE)
			conf_error(L->errs, p->file, p->auth_line,
			    "auth require-tls: listen %s has no tls, so AUTH could never be used",
			    ln->addr.text);
		if (ln->tls != TLS_MODE_NONE && cfg->tls.certificate == NULL)
			conf_error(L->errs, p->file, p->tls_line,
			    "tls: %s needs a global tls block with a "
			    "certificate", ln->tls == TLS_MODE_STARTTLS ?
			    "starttls" : "implicit");
	}
	find_loops(L);
}

struct config *
config_load(const char *file, FILE *errs)
{
	struct conf_errs e = { errs, 0 };
	struct loader L;
	struct conf_tree *tree;
	struct config *cfg;

	if ((cfg = calloc(1, sizeof(*cfg))) == NULL ||
	    (cfg->file = strdup(file)) == NULL) {
		free(cfg);
		conf_error(&e, file, 0, "out of memory");
		return NULL;
	}
	cfg->refs = 1;
	cfg->log_target = LOG_TARGET_STDERR;
	cfg->log_format = LOG_FORMAT_TEXT;
	cfg->max_sessions = 20000;
	cfg->max_recipients = 1000;
	cfg->max_message_size = 50ull * 1024 * 1024;
	cfg->timeout_command_ms = 5 * 60 * 1000;
	cfg->timeout_data_ms = 10 * 60 * 1000;
	cfg->shutdown_grace_ms = 30 * 1000;
	cfg->bare_newline = BARE_NEWLINE_NORMALIZE;
	cfg->limit_table_size = 1000000;

	if ((tree = conf_parse_file(file, &e)) == NULL) {
		config_unref(cfg);
		return NULL;
	}
	memset(&L, 0, sizeof(L));
	L.cfg = cfg;
	L.errs = &e;
	RUN(&L, &tree->top, global_table, "", NULL);
	if (e.count <= CONFIG_MAX_ERRORS)
		resolve(&L, tree);
	free(L.pending);
	free(L.broken);
	conf_tree_free(tree);
	if (e.count > 0) {
		config_unref(cfg);
		return NULL;
	}
	return cfg;
}

struct config *
config_ref(struct config *cfg)
{
	cfg->refs++;
	return cfg;
}

void
config_unref(struct config *cfg)
{
	size_t i;

	if (cfg == NULL || --cfg->refs > 0)
		return;
	for (i = 0; i < cfg->nupstreams; i++)
		free_upstream(&cfg->upstreams[i]);
	free(cfg->upstreams);
	for (i = 0; i < cfg->nlistens; i++)
		free(cfg->listens[i].banner);
	free(cfg->listens);
	tls_ctx_free(cfg->tls.ctx);
	free(cfg->tls.certificate);
	free(cfg->tls.key);
	free(cfg->tls.ciphers);
	free(cfg->user);
	free(cfg->log_file);
	free(cfg->file);
	free(cfg);
}
