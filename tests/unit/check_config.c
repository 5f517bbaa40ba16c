/*
 * check_config.c - tests of the configuration language: value parsers, the
 * lexer's tree (through conflex.h), whole files loaded with config_load(),
 * includes, and the shipped sample etc/smtpgate.conf.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config.h"
#include "conflex.h"
#include "suites.h"

/* TLS contexts are built at load, so configs with a tls block need real files. */
#define UNIT_CERT "/tmp/smtpgate-unit-cert.pem"
#define UNIT_KEY "/tmp/smtpgate-unit-key.pem"

static void write_cert_and_key(void)
{
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *fp;

	ck_assert_ptr_nonnull(pkey);
	ck_assert_ptr_nonnull(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pkey);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, name);
	ck_assert_int_gt(X509_sign(x, pkey, EVP_sha256()), 0);
	ck_assert_ptr_nonnull(fp = fopen(UNIT_CERT, "w"));
	PEM_write_X509(fp, x);
	fclose(fp);
	ck_assert_ptr_nonnull(fp = fopen(UNIT_KEY, "w"));
	PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL);
	fclose(fp);
	X509_free(x);
	EVP_PKEY_free(pkey);
}

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- helpers ------------------------------------------------------------ */

/* Error output of the code under test, collected in memory. */
struct capture {
	FILE *fp;
	char *buf;
	size_t len;
};

static void
cap_open(struct capture *c)
{
	c->buf = NULL;
	c->len = 0;
	c->fp = open_memstream(&c->buf, &c->len);
	ck_assert_ptr_nonnull(c->fp);
}

/* The text written so far; stays valid until cap_free(). */
static const char *
cap_text(struct capture *c)
{
	ck_assert_int_eq(fflush(c->fp), 0);
	return c->buf == NULL ? "" : c->buf;
}

static void
cap_free(struct capture *c)
{
	ck_assert_int_eq(fclose(c->fp), 0);
	free(c->buf);
}

static int
count_lines(const char *s)
{
	int n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

static void
write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	ck_assert_msg(fp != NULL, "cannot create %s", path);
	ck_assert_int_eq(fputs(text, fp) >= 0, 1);
	ck_assert_int_eq(fclose(fp), 0);
}

/* TEXT into a new file under /tmp, whose name goes to PATH. */
static void
write_temp(const char *text, char path[static 64])
{
	int fd;

	strcpy(path, "/tmp/smtpgate-check-XXXXXX");
	fd = mkstemp(path);
	ck_assert_msg(fd >= 0, "mkstemp failed");
	ck_assert_int_eq(close(fd), 0);
	write_file(path, text);
}

/* ---- durations, sizes, rates, addresses -------------------------------- */

struct num_case {
	const char *in;
	int ret;
	uint64_t want;
};

static const struct num_case duration_cases[] = {
	{ "500ms", 0, 500 }, { "30s", 0, 30000 }, { "5m", 0, 300000 },
	{ "2h", 0, 7200000 }, { "1d", 0, 86400000 }, { "0s", 0, 0 },
	{ "007s", 0, 7000 },
	{ "", -1, 0 }, { "30", -1, 0 }, { "s", -1, 0 }, { "30x", -1, 0 },
	{ "30 s", -1, 0 }, { " 30s", -1, 0 }, { "-1s", -1, 0 },
	{ "+1s", -1, 0 }, { "1.5s", -1, 0 }, { "30S", -1, 0 },
	{ "30sms", -1, 0 }, { "1m1s", -1, 0 },
	{ "213503982335d", -1, 0 },            /* ms overflow 2^64 */
	{ "99999999999999999999s", -1, 0 },    /* number overflow */
};

START_TEST(test_duration)
{
	const struct num_case *c = &duration_cases[_i];
	uint64_t got = 0;
	int ret = config_parse_duration(c->in, &got);

	ck_assert_msg(ret == c->ret, "duration \"%s\": got return %d, want %d",
	    c->in, ret, c->ret);
	if (c->ret == 0)
		ck_assert_msg(got == c->want, "duration \"%s\": got %llu, "
		    "want %llu", c->in, (unsigned long long)got,
		    (unsigned long long)c->want);
}
END_TEST

static const struct num_case size_cases[] = {
	{ "512", 0, 512 }, { "0", 0, 0 }, { "64K", 0, 65536 },
	{ "64k", 0, 65536 }, { "10M", 0, 10485760 }, { "10m", 0, 10485760 },
	{ "1G", 0, 1073741824 }, { "1g", 0, 1073741824 },
	{ "", -1, 0 }, { "K", -1, 0 }, { "1T", -1, 0 }, { "1KB", -1, 0 },
	{ "-1", -1, 0 }, { "1.5M", -1, 0 }, { "1 K", -1, 0 },
	{ "17179869184G", -1, 0 },             /* 2^34 G = 2^64 */
	{ "18446744073709551616", -1, 0 },     /* 2^64 */
};

START_TEST(test_size)
{
	const struct num_case *c = &size_cases[_i];
	uint64_t got = 0;
	int ret = config_parse_size(c->in, &got);

	ck_assert_msg(ret == c->ret, "size \"%s\": got return %d, want %d",
	    c->in, ret, c->ret);
	if (c->ret == 0)
		ck_assert_msg(got == c->want, "size \"%s\": got %llu, want %llu",
		    c->in, (unsigned long long)got,
		    (unsigned long long)c->want);
}
END_TEST

static const struct rate_case {
	const char *in;
	int ret;
	uint64_t count, period;
} rate_cases[] = {
	{ "30/1m", 0, 30, 60000 }, { "500/1d", 0, 500, 86400000 },
	{ "30/m", 0, 30, 60000 }, { "1/s", 0, 1, 1000 },
	{ "5/1h", 0, 5, 3600000 }, { "10/500ms", 0, 10, 500 },
	{ "1000/h", 0, 1000, 3600000 },
	{ "30", -1, 0, 0 }, { "/1m", -1, 0, 0 }, { "0/1m", -1, 0, 0 },
	{ "30/0s", -1, 0, 0 }, { "30/", -1, 0, 0 }, { "30/1", -1, 0, 0 },
	{ "30/1x", -1, 0, 0 }, { "a/1m", -1, 0, 0 }, { "30/1m/2", -1, 0, 0 },
	{ "-1/1m", -1, 0, 0 }, { "", -1, 0, 0 },
};

START_TEST(test_rate)
{
	const struct rate_case *c = &rate_cases[_i];
	uint64_t count = 0, period = 0;
	int ret = config_parse_rate(c->in, &count, &period);

	ck_assert_msg(ret == c->ret, "rate \"%s\": got return %d, want %d",
	    c->in, ret, c->ret);
	if (c->ret == 0)
		ck_assert_msg(count == c->count && period == c->period,
		    "rate \"%s\": got %llu/%llums, want %llu/%llums", c->in,
		    (unsigned long long)count, (unsigned long long)period,
		    (unsigned long long)c->count,
		    (unsigned long long)c->period);
}
END_TEST

static const struct addr_case {
	const char *in;
	int ret;
	int family;
	const char *ip;
	unsigned port;
} addr_cases[] = {
	{ "127.0.0.1:25", 0, AF_INET, "127.0.0.1", 25 },
	{ "0.0.0.0:65535", 0, AF_INET, "0.0.0.0", 65535 },
	{ "*:25", 0, AF_INET, "0.0.0.0", 25 },
	{ "[::1]:25", 0, AF_INET6, "::1", 25 },
	{ "[::]:2525", 0, AF_INET6, "::", 2525 },
	{ "[2001:db8::7]:1", 0, AF_INET6, "2001:db8::7", 1 },
	{ "127.0.0.1", -1, 0, NULL, 0 },
	{ "127.0.0.1:0", -1, 0, NULL, 0 },
	{ "127.0.0.1:65536", -1, 0, NULL, 0 },
	{ "127.0.0.1:", -1, 0, NULL, 0 },
	{ "127.0.0.1:+25", -1, 0, NULL, 0 },
	{ "127.0.0.1:25x", -1, 0, NULL, 0 },
	{ "::1:25", -1, 0, NULL, 0 },
	{ "[::1]25", -1, 0, NULL, 0 },
	{ "[1.2.3.4]:25", -1, 0, NULL, 0 },
	{ "localhost:25", -1, 0, NULL, 0 },
	{ "1.2.3:25", -1, 0, NULL, 0 },
	{ ":25", -1, 0, NULL, 0 },
	{ "", -1, 0, NULL, 0 },
	{ "[1111:2222:3333:4444:5555:6666:7777:8888]:65535xxxxxxxxxxxxxxxxxxxx",
	  -1, 0, NULL, 0 },
};

START_TEST(test_addr)
{
	const struct addr_case *c = &addr_cases[_i];
	struct config_addr a;
	char ip[INET6_ADDRSTRLEN] = "";
	unsigned port;
	int ret = config_parse_addr(c->in, &a);

	ck_assert_msg(ret == c->ret, "addr \"%s\": got return %d, want %d",
	    c->in, ret, c->ret);
	if (c->ret != 0)
		return;
	ck_assert_msg(a.ss.ss_family == c->family, "addr \"%s\": got family "
	    "%d, want %d", c->in, a.ss.ss_family, c->family);
	if (c->family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)&a.ss;
		ck_assert_ptr_nonnull(inet_ntop(AF_INET, &s->sin_addr, ip,
		    sizeof(ip)));
		port = ntohs(s->sin_port);
		ck_assert_uint_eq(a.len, sizeof(*s));
	} else {
		const struct sockaddr_in6 *s =
		    (const struct sockaddr_in6 *)&a.ss;
		ck_assert_ptr_nonnull(inet_ntop(AF_INET6, &s->sin6_addr, ip,
		    sizeof(ip)));
		port = ntohs(s->sin6_port);
		ck_assert_uint_eq(a.len, sizeof(*s));
	}
	ck_assert_msg(strcmp(ip, c->ip) == 0 && port == c->port,
	    "addr \"%s\": got %s port %u, want %s port %u", c->in, ip, port,
	    c->ip, c->port);
	ck_assert_msg(strcmp(a.text, c->in) == 0, "addr \"%s\": got text "
	    "\"%s\"", c->in, a.text);
}
END_TEST

/* ---- the lexer's tree ---------------------------------------------------- */

/* A tree as one line: "LINE:word word { LINE:word }; LINE:word". */
static void
dump_block(const struct conf_block *blk, FILE *out)
{
	const struct conf_stmt *st;
	const struct conf_word *w;
	size_t i, j;

	for (i = 0; i < blk->nstmts; i++) {
		st = &blk->stmts[i];
		fprintf(out, "%s%d:", i > 0 ? "; " : "", st->line);
		for (j = 0; j < st->nwords; j++) {
			w = &st->words[j];
			if (j > 0)
				fputc(' ', out);
			if (w->kind == CONF_WORD_STRING)
				fprintf(out, "\"%s\"", w->text);
			else if (w->kind == CONF_WORD_REGEX)
				fprintf(out, "/%s/%s%s", w->text,
				    w->flags & CONF_REGEX_CASELESS ? "i" : "",
				    w->flags & CONF_REGEX_EXTENDED ? "x" : "");
			else
				fputs(w->text, out);
		}
		if (st->block != NULL) {
			fputs(" { ", out);
			dump_block(st->block, out);
			fputs(" }", out);
		}
	}
}

static const struct lex_case {
	const char *label;
	const char *text;
	const char *tree;
	const char *errors;         /* exact, file named "T" */
} lex_cases[] = {
	{ "lines", "user a\nlog stderr text\n",
	  "1:user a; 2:log stderr text", "" },
	{ "semicolons", "a 1; b 2;c 3",
	  "1:a 1; 1:b 2; 1:c 3", "" },
	{ "empty statements", ";;\n;\n a;", "3:a", "" },
	{ "comments", "# x\na b # c\n  # d\nc \"#not\" x#y\n",
	  "2:a b; 4:c \"#not\" x", "" },
	{ "crlf", "a b\r\nc d\r\n", "1:a b; 2:c d", "" },
	{ "string escapes", "a \"x \\\"y\\\" \\\\z\" \"\"",
	  "1:a \"x \"y\" \\z\" \"\"", "" },
	{ "string next to word", "a\"b c\"d", "1:a \"b c\" d", "" },
	{ "one-line block", "rule x { when ip 1.2.3.4; action exempt }",
	  "1:rule x { 1:when ip 1.2.3.4; 1:action exempt }", "" },
	{ "nested blocks", "a {\n b {\n  c 1\n }\n d\n} e\n",
	  "1:a { 2:b { 3:c 1 }; 5:d }; 6:e", "" },
	{ "statements after }", "a { b } c; d {}\n\ne",
	  "1:a { 1:b }; 1:c; 1:d {  }; 3:e", "" },
	{ "block over lines", "a {\n\n b\n}\n\nc",
	  "1:a { 3:b }; 6:c", "" },
	{ "regex in when", "when helo /^(localhost|\\[?127\\.)/i",
	  "1:when helo /^(localhost|\\[?127\\.)/i", "" },
	{ "regex slash escape and flags", "when sender /a\\/b/ix",
	  "1:when sender /a/b/ix", "" },
	{ "regex keeps # and ;", "when rcpt /a#b;c{}/ x",
	  "1:when rcpt /a#b;c{}/ x", "" },
	{ "regex then string", "when rcpt /a/i\"s\"",
	  "1:when rcpt /a/i \"s\"", "" },
	{ "regex inside a block", "rule r {\n when helo /x y/\n}",
	  "1:rule r { 2:when helo /x y/ }", "" },
	{ "slash outside when is a word", "key /etc/x.pem\n/x/ y",
	  "1:key /etc/x.pem; 2:/x/ y", "" },
	{ "quoted when is not when", "\"when\" /a b/",
	  "1:\"when\" /a b/", "" },
	{ "unterminated string", "a 1\nb \"xyz\nc 3\n",
	  "1:a 1; 3:c 3", "T:2: unterminated string\n" },
	{ "bad escape", "a \"x\\ny\"\nb",
	  "2:b", "T:1: invalid escape \"\\n\" in string "
	  "(only \\\" and \\\\ are allowed)\n" },
	{ "unterminated block", "a {\n b 1\n",
	  "", "T:1: \"{\" is never closed\n" },
	{ "unterminated inner block", "a {\n b {\n}\n",
	  "", "T:1: \"{\" is never closed\n" },
	{ "two unterminated blocks", "x\na {\n b {\n c\n",
	  "1:x", "T:3: \"{\" is never closed\nT:2: \"{\" is never closed\n" },
	{ "unexpected }", "a\n}\nb", "1:a; 3:b", "T:2: unexpected \"}\"\n" },
	{ "unknown regex flag", "when helo /x/g\nok",
	  "2:ok", "T:1: unknown regular expression flag \"g\" "
	  "(only i and x)\n" },
	{ "unterminated regex", "when helo /abc\nx",
	  "2:x", "T:1: unterminated regular expression\n" },
	{ "block without directive", "{ a }\nb",
	  "2:b", "T:1: a block must follow a directive\n" },
	{ "nesting too deep", "a{a{a{a{a{a{a{a{a{a{ x }}}}}}}}}}\nb",
	  "1:a { 1:a { 1:a { 1:a { 1:a { 1:a { 1:a { 1:a {  } } } } } } } }; "
	  "2:b", "T:1: blocks nested more than 8 deep\n" },
	{ "several errors", "a \"x\nb }\nc \"y\n",
	  "2:b", "T:1: unterminated string\nT:2: unexpected \"}\"\n"
	  "T:3: unterminated string\n" },
	{ "bad include", "include\ninclude a b\n",
	  "", "T:1: include: expected one path\n"
	  "T:2: include: expected one path\n" },
	{ "nul byte", "a\nb\0c", "", "T:2: file contains a NUL byte\n" },
};

START_TEST(test_lex)
{
	const struct lex_case *c = &lex_cases[_i];
	struct conf_errs errs;
	struct capture tree, cerr;
	struct conf_tree *t;
	size_t len = strlen(c->text);

	if (strcmp(c->label, "nul byte") == 0)
		len = 5;
	cap_open(&tree);
	cap_open(&cerr);
	errs.out = cerr.fp;
	errs.count = 0;
	t = conf_parse_string("T", c->text, len, &errs);
	ck_assert_ptr_nonnull(t);
	dump_block(&t->top, tree.fp);
	ck_assert_msg(strcmp(cap_text(&tree), c->tree) == 0,
	    "%s: got tree\n  %s\nwant\n  %s", c->label, cap_text(&tree),
	    c->tree);
	ck_assert_msg(strcmp(cap_text(&cerr), c->errors) == 0,
	    "%s: got errors\n%swant\n%s", c->label, cap_text(&cerr),
	    c->errors);
	ck_assert_msg(errs.count == count_lines(c->errors),
	    "%s: got count %d, want %d", c->label, errs.count,
	    count_lines(c->errors));
	conf_tree_free(t);
	cap_free(&tree);
	cap_free(&cerr);
}
END_TEST

START_TEST(test_lex_long_word)
{
	struct conf_errs errs = { NULL, 0 };
	struct conf_tree *t;
	char *text;
	size_t n = CONF_TOKEN_MAX + 10;

	/* "a xxx…\nb \"xxx…\"\nc" with over-long words on lines 1 and 2 */
	text = malloc(2 * n + 32);
	ck_assert_ptr_nonnull(text);
	strcpy(text, "a ");
	memset(text + 2, 'x', n);
	strcpy(text + 2 + n, "\nb \"");
	memset(text + 6 + n, 'y', n);
	strcpy(text + 6 + 2 * n, "\"\nc");
	t = conf_parse_string("T", text, strlen(text), &errs);
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(errs.count, 2);
	ck_assert_uint_eq(t->top.nstmts, 1);
	ck_assert_str_eq(t->top.stmts[0].words[0].text, "c");
	ck_assert_int_eq(t->top.stmts[0].line, 3);
	conf_tree_free(t);

	/* exactly CONF_TOKEN_MAX is still fine */
	memset(text, 'z', CONF_TOKEN_MAX);
	text[CONF_TOKEN_MAX] = '\0';
	t = conf_parse_string("T", text, strlen(text), &errs);
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(errs.count, 2);
	ck_assert_uint_eq(strlen(t->top.stmts[0].words[0].text),
	    CONF_TOKEN_MAX);
	conf_tree_free(t);
	free(text);
}
END_TEST

/* ---- whole files: good ---------------------------------------------------- */

#define MINIMAL "upstream u { server 127.0.0.1:2526 }\nlisten 127.0.0.1:2525\n"

static void
check_defaults(const struct config *cfg)
{
	ck_assert_ptr_null(cfg->user);
	ck_assert_int_eq(cfg->log_target, LOG_TARGET_STDERR);
	ck_assert_int_eq(cfg->log_format, LOG_FORMAT_TEXT);
	ck_assert(!cfg->has_metrics);
	ck_assert_uint_eq(cfg->max_sessions, 20000);
	ck_assert_uint_eq(cfg->max_recipients, 1000);
	ck_assert_uint_eq(cfg->max_message_size, 50u * 1024 * 1024);
	ck_assert_uint_eq(cfg->timeout_command_ms, 300000);
	ck_assert_uint_eq(cfg->timeout_data_ms, 600000);
	ck_assert_uint_eq(cfg->shutdown_grace_ms, 30000);
	ck_assert_int_eq(cfg->bare_newline, BARE_NEWLINE_NORMALIZE);
	ck_assert_uint_eq(cfg->limit_table_size, 1000000);
	ck_assert_ptr_null(cfg->tls.certificate);
	ck_assert_uint_eq(cfg->nupstreams, 1);
	ck_assert_str_eq(cfg->upstreams[0].name, "u");
	ck_assert_uint_eq(cfg->upstreams[0].nservers, 1);
	ck_assert_str_eq(cfg->upstreams[0].servers[0].text, "127.0.0.1:2526");
	ck_assert_int_eq(cfg->upstreams[0].forward, FORWARD_NONE);
	ck_assert(!cfg->upstreams[0].starttls);
	ck_assert(!cfg->upstreams[0].verify);
	ck_assert_ptr_null(cfg->upstreams[0].ca);
	ck_assert_uint_eq(cfg->upstreams[0].connect_timeout_ms, 10000);
	ck_assert_uint_eq(cfg->nlistens, 1);
	ck_assert_str_eq(cfg->listens[0].addr.text, "127.0.0.1:2525");
	ck_assert_ptr_eq(cfg->listens[0].upstream, &cfg->upstreams[0]);
	ck_assert_int_eq(cfg->listens[0].tls, TLS_MODE_NONE);
	ck_assert(!cfg->listens[0].proxy_protocol);
	ck_assert_uint_eq(cfg->listens[0].pregreet_ms, 0);
	ck_assert_ptr_null(cfg->listens[0].banner);
	ck_assert_int_eq(cfg->listens[0].auth, AUTH_MODE_AS_MTA);
	ck_assert_int_eq(cfg->listens[0].line, 2);
}

static void
check_full(const struct config *cfg)
{
	const struct config_upstream *a, *b;

	ck_assert_str_eq(cfg->user, "nobody");
	ck_assert_int_eq(cfg->log_target, LOG_TARGET_FILE);
	ck_assert_str_eq(cfg->log_file, "/var/log/smtpgate.log");
	ck_assert_int_eq(cfg->log_format, LOG_FORMAT_JSON);
	ck_assert(cfg->has_metrics);
	ck_assert_str_eq(cfg->metrics.text, "127.0.0.1:9325");
	ck_assert_uint_eq(cfg->max_sessions, 10);
	ck_assert_uint_eq(cfg->max_recipients, 20);
	ck_assert_uint_eq(cfg->max_message_size, 10u * 1024 * 1024);
	ck_assert_uint_eq(cfg->timeout_command_ms, 60000);
	ck_assert_uint_eq(cfg->timeout_data_ms, 500);
	ck_assert_uint_eq(cfg->shutdown_grace_ms, 0);
	ck_assert_int_eq(cfg->bare_newline, BARE_NEWLINE_REJECT);
	ck_assert_uint_eq(cfg->limit_table_size, 5);
	ck_assert_str_eq(cfg->tls.certificate, UNIT_CERT);
	ck_assert_str_eq(cfg->tls.key, UNIT_KEY);
	ck_assert_uint_eq(cfg->tls.protocols, CONFIG_TLS_V1_2 | CONFIG_TLS_V1_3);
	ck_assert_str_eq(cfg->tls.ciphers, "HIGH:!aNULL");
	ck_assert_uint_eq(cfg->nupstreams, 2);
	a = &cfg->upstreams[0];
	b = &cfg->upstreams[1];
	ck_assert_str_eq(a->name, "mta-1");
	ck_assert_uint_eq(a->nservers, 2);
	ck_assert_str_eq(a->servers[1].text, "[::1]:10025");
	ck_assert_int_eq(a->servers[1].ss.ss_family, AF_INET6);
	ck_assert_int_eq(a->forward, FORWARD_XCLIENT);
	ck_assert(a->starttls);
	ck_assert(a->verify);
	ck_assert_str_eq(a->ca, UNIT_CERT);
	ck_assert_uint_eq(a->connect_timeout_ms, 2000);
	ck_assert_str_eq(b->name, "b");
	ck_assert_int_eq(b->forward, FORWARD_PROXY_V1);
	ck_assert_uint_eq(cfg->nlistens, 2);
	ck_assert_ptr_eq(cfg->listens[0].upstream, b);
	ck_assert_int_eq(cfg->listens[0].tls, TLS_MODE_IMPLICIT);
	ck_assert(cfg->listens[0].proxy_protocol);
	ck_assert_uint_eq(cfg->listens[0].pregreet_ms, 2000);
	ck_assert_str_eq(cfg->listens[0].banner, "mx \"1\" ESMTP");
	ck_assert_int_eq(cfg->listens[0].auth, AUTH_MODE_REQUIRE_TLS);
	ck_assert_ptr_eq(cfg->listens[1].upstream, a);
	ck_assert_int_eq(cfg->listens[1].tls, TLS_MODE_STARTTLS);
	ck_assert_str_eq(cfg->listens[1].addr.text, "*:25");
}

static void
check_one_line(const struct config *cfg)
{
	ck_assert_uint_eq(cfg->nupstreams, 1);
	ck_assert_uint_eq(cfg->upstreams[0].nservers, 2);
	ck_assert_int_eq(cfg->upstreams[0].forward, FORWARD_PROXY_V2);
	ck_assert_uint_eq(cfg->nlistens, 2);
	ck_assert_ptr_eq(cfg->listens[0].upstream, &cfg->upstreams[0]);
	ck_assert_ptr_eq(cfg->listens[1].upstream, &cfg->upstreams[0]);
	ck_assert_str_eq(cfg->listens[0].banner, "a \\ b");
	ck_assert_uint_eq(cfg->max_sessions, 3);
}

static void
check_syslog(const struct config *cfg)
{
	ck_assert_int_eq(cfg->log_target, LOG_TARGET_SYSLOG);
	ck_assert_int_eq(cfg->log_format, LOG_FORMAT_TEXT);
	ck_assert_uint_eq(cfg->max_message_size, 0);
	ck_assert_int_eq(cfg->bare_newline, BARE_NEWLINE_ALLOW);
	ck_assert_uint_eq(cfg->tls.protocols, CONFIG_TLS_V1_3);
	ck_assert_ptr_null(cfg->tls.ciphers);
}

static void
check_stderr_json(const struct config *cfg)
{
	ck_assert_int_eq(cfg->log_target, LOG_TARGET_STDERR);
	ck_assert_int_eq(cfg->log_format, LOG_FORMAT_JSON);
	ck_assert_ptr_null(cfg->log_file);
}

static const struct good_case {
	const char *label;
	const char *text;
	void (*check)(const struct config *);
} good_cases[] = {
	{ "minimal, defaults", MINIMAL, check_defaults },
	{ "every directive",
	  "# all of them, listens before the upstreams they name\n"
	  "user \"nobody\"\n"
	  "log /var/log/smtpgate.log json\n"
	  "metrics 127.0.0.1:9325\n"
	  "max_sessions 10\n"
	  "max_recipients 20\n"
	  "max_message_size 10M\n"
	  "timeout command 1m\n"
	  "timeout data 500ms\n"
	  "shutdown_grace 0s\n"
	  "bare_newline reject\n"
	  "limit_table_size 5\n"
	  "tls {\n"
	  "  certificate " UNIT_CERT "\n"
	  "  key " UNIT_KEY "\n"
	  "  protocols TLSv1.2 TLSv1.3\n"
	  "  ciphers \"HIGH:!aNULL\"\n"
	  "}\n"
	  "listen 0.0.0.0:465 {\n"
	  "  upstream b\n"
	  "  tls implicit\n"
	  "  proxy_protocol on\n"
	  "  pregreet 2s\n"
	  "  banner \"mx \\\"1\\\" ESMTP\"\n"
	  "  auth require-tls\n"
	  "}\n"
	  "listen *:25 { upstream mta-1; tls starttls; auth as-mta }\n"
	  "upstream mta-1 {\n"
	  "  server 127.0.0.1:10025\n"
	  "  server [::1]:10025\n"
	  "  forward xclient\n"
	  "  starttls on\n"
	  "  verify on\n"
	  "  ca " UNIT_CERT "\n"
	  "  timeout connect 2s\n"
	  "}\n"
	  "upstream b { server 10.0.0.1:25; forward proxy-v1 }\n",
	  check_full },
	{ "one line",
	  "upstream u { server 1.2.3.4:25; server [::1]:10025; forward proxy-v2 }"
	  "; listen *:25 { banner \"a \\\\ b\" } listen [::]:25; "
	  "max_sessions 3 # done\n",
	  check_one_line },
	{ "syslog, unlimited size",
	  "log syslog\nmax_message_size 0\nbare_newline allow\n"
	  "tls { certificate " UNIT_CERT "; key " UNIT_KEY "; protocols TLSv1.3 }\n" MINIMAL,
	  check_syslog },
	{ "stderr json", "log stderr json\n" MINIMAL, check_stderr_json },
	{ "glob that matches nothing",
	  "include /nonexistent-smtpgate-dir/*.conf\n" MINIMAL, NULL },
	{ "comments and blank lines",
	  "\n# c\n   \nupstream u {  # c\n\n server 127.0.0.1:1 # c\n}\n"
	  "listen 127.0.0.1:2 # c\n", NULL },
};

START_TEST(test_good)
{
	const struct good_case *c = &good_cases[_i];
	struct capture cerr;
	struct config *cfg;
	char path[64];

	write_temp(c->text, path);
	cap_open(&cerr);
	cfg = config_load(path, cerr.fp);
	ck_assert_msg(cfg != NULL, "%s: got errors\n%s", c->label,
	    cap_text(&cerr));
	ck_assert_msg(cap_text(&cerr)[0] == '\0', "%s: got output %s",
	    c->label, cap_text(&cerr));
	ck_assert_int_eq(cfg->refs, 1);
	ck_assert_str_eq(cfg->file, path);
	if (c->check != NULL)
		c->check(cfg);
	config_unref(cfg);
	cap_free(&cerr);
	ck_assert_int_eq(unlink(path), 0);
}
END_TEST

/* ---- whole files: bad ------------------------------------------------------ */

static const struct bad_case {
	const char *label;
	const char *text;
	int line;                   /* of the first error */
	const char *msg;            /* the first error starts with this */
	int nerrors;
} bad_cases[] = {
	{ "unknown directive", MINIMAL "foo bar\n", 3,
	  "unknown directive \"foo\"", 1 },
	{ "verify without starttls", "upstream u { server 127.0.0.1:1; verify on }\n"
	  "listen 127.0.0.1:2525 { upstream u }\n", 1,
	  "upstream u: verify on needs starttls on", 1 },
	{ "a broken upstream is not also unknown", "upstream u {\n server 127.0.0.1:1\n"
	  " starttls on\n verify on\n ca /nonexistent/ca.pem\n}\nlisten 127.0.0.1:2525 { upstream u }\n", 5,
	  "upstream u: ", 1 },
	{ "auth require-tls without tls", MINIMAL "listen 127.0.0.1:2527 {\n upstream u\n"
	  " auth require-tls\n}\n", 5, "auth require-tls: listen 127.0.0.1:2527 has no tls", 1 },
	{ "unknown directive in a block",
	  "upstream u {\n server 1.2.3.4:25\n bogus 1\n}\nlisten *:25\n", 3,
	  "unknown directive \"bogus\" in upstream block", 1 },
	{ "unknown directive in listen", MINIMAL "listen *:26 { x }\n", 3,
	  "unknown directive \"x\" in listen block", 1 },
	{ "when outside a rule", MINIMAL "when ip 1.2.3.4\n", 3,
	  "unknown directive \"when\"", 1 },
	{ "rule not yet", MINIMAL
	  "rule x { when helo /^a/i; action exempt }\n", 3,
	  "\"rule\" is not supported by this build yet", 1 },
	{ "limit not yet", MINIMAL "\nlimit l { key ip; count connections; "
	  "rate 30/1m }\n", 4, "\"limit\" is not supported by this build yet",
	  1 },
	{ "geoip not yet", "geoip /x.mmdb\n" MINIMAL, 1,
	  "\"geoip\" is not supported by this build yet", 1 },
	{ "limits not yet", MINIMAL "limits redis 127.0.0.1:6379 { }", 3,
	  "\"limits\" is not supported by this build yet", 1 },
	{ "quoted directive", MINIMAL "\"user\" x\n", 3,
	  "expected a directive, got \"user\"", 1 },
	{ "not a number", "max_sessions abc\n" MINIMAL, 1,
	  "max_sessions: expected a number, got \"abc\"", 1 },
	{ "number too small", "max_sessions 0\n" MINIMAL, 1,
	  "max_sessions: 0 is out of range (1 to 1000000)", 1 },
	{ "number overflow", "max_recipients 99999999999999999999999\n"
	  MINIMAL, 1, "max_recipients: expected a number", 1 },
	{ "negative number", "limit_table_size -1\n" MINIMAL, 1,
	  "limit_table_size: expected a number, got \"-1\"", 1 },
	{ "too many arguments", "max_sessions 1 2\n" MINIMAL, 1,
	  "max_sessions: expected 1 argument, got 2", 1 },
	{ "too few arguments", "user\n" MINIMAL, 1,
	  "user: expected 1 argument, got 0", 1 },
	{ "block where none belongs", "user x { }\n" MINIMAL, 1,
	  "user: does not take a { block }", 1 },
	{ "duration without unit", "timeout data 10\n" MINIMAL, 1,
	  "timeout: expected a duration such as 500ms, 30s, 5m, 2h or 1d, "
	  "got \"10\"", 1 },
	{ "timeout kind", "timeout idle 1s\n" MINIMAL, 1,
	  "timeout: expected command or data, got \"idle\"", 1 },
	{ "zero timeout", "timeout command 0s\n" MINIMAL, 1,
	  "timeout: must be longer than 0", 1 },
	{ "bad size", "max_message_size 10MB\n" MINIMAL, 1,
	  "max_message_size: expected a size such as 512, 64K, 10M or 1G, "
	  "got \"10MB\"", 1 },
	{ "bare_newline", "bare_newline fix\n" MINIMAL, 1,
	  "bare_newline: expected normalize, reject or allow, got \"fix\"", 1 },
	{ "log typo", "log syslgo\n" MINIMAL, 1,
	  "log: expected stderr, syslog or a file path", 1 },
	{ "log format", "log stderr xml\n" MINIMAL, 1,
	  "log: expected text or json, got \"xml\"", 1 },
	{ "metrics address", "metrics 9325\n" MINIMAL, 1,
	  "metrics: expected an address such as 127.0.0.1:25", 1 },
	{ "directive twice", "user nobody\nuser b\n" MINIMAL, 2,
	  "user: already given on line 1", 1 },
	{ "unknown user", "user nosuchuser-sg\n" MINIMAL, 1,
	  "user: no such user nosuchuser-sg", 1 },
	{ "tls twice", "tls { certificate " UNIT_CERT "; key " UNIT_KEY " }\n"
	  "tls { certificate a; key b }\n" MINIMAL, 2, "tls: already given on line 1", 1 },
	{ "tls certificate missing", MINIMAL "tls { certificate /nonexistent/c.pem; key " UNIT_KEY " }\n",
	  3, "tls: /nonexistent/c.pem: ", 1 },
	{ "tls key not the certificate's", MINIMAL "tls { certificate " UNIT_CERT "; key " UNIT_CERT " }\n",
	  3, "tls: " UNIT_CERT ": ", 1 },
	{ "upstream ca missing", "upstream u { server 127.0.0.1:25; starttls on; verify on; ca /nonexistent/ca.pem }\n"
	  "listen 127.0.0.1:2\n", 1, "upstream u: /nonexistent/ca.pem: ", 1 },
	{ "tls without block", "tls\n" MINIMAL, 1,
	  "tls: expected a { block }", 1 },
	{ "certificate without key", MINIMAL "tls {\n certificate /c.pem\n}\n",
	  3, "tls: needs both a certificate and a key", 1 },
	{ "tls protocol", "tls { certificate " UNIT_CERT "; key " UNIT_KEY "\n protocols TLSv1.1 }\n"
	  MINIMAL, 2, "protocols: expected TLSv1.2 or TLSv1.3, got \"TLSv1.1\"",
	  1 },
	{ "unknown in tls", "tls { certificate " UNIT_CERT "; key " UNIT_KEY "; dhparam x }\n"
	  MINIMAL, 1, "unknown directive \"dhparam\" in tls block", 1 },
	{ "duplicate upstream", MINIMAL "upstream u { server 1.1.1.1:25 }\n",
	  3, "upstream: \"u\" is already defined", 1 },
	{ "upstream without server", MINIMAL "upstream v {\n forward none\n}\n",
	  3, "upstream v: needs at least one server", 1 },
	{ "upstream bad name", MINIMAL "upstream a/b { server 1.1.1.1:25 }\n",
	  3, "upstream: a name may hold only", 1 },
	{ "upstream without block", MINIMAL "upstream v\n", 3,
	  "upstream: expected a { block }", 1 },
	{ "forward", "upstream u { server 1.1.1.1:25\n forward haproxy }\n"
	  "listen *:25\n", 2, "forward: expected none, xclient, proxy-v1 or "
	  "proxy-v2, got \"haproxy\"", 1 },
	{ "on/off", "upstream u { server 1.1.1.1:25\n starttls yes }\n"
	  "listen *:25\n", 2, "starttls: expected on or off, got \"yes\"", 1 },
	{ "upstream timeout", "upstream u {\n server 1.1.1.1:25\n"
	  " timeout data 1s }\nlisten *:25\n", 3,
	  "timeout: expected connect, got \"data\"", 1 },
	{ "server address", "upstream u {\n server mx.example:25\n}\n"
	  "listen *:25\n", 2, "server: expected an address", 1 },
	{ "listen names a missing upstream", MINIMAL
	  "listen *:26 {\n tls none\n upstream nope\n}\n", 5,
	  "upstream: no upstream named \"nope\"", 1 },
	{ "listen must name one of two", MINIMAL
	  "upstream v { server 1.1.1.1:25 }\n", 2,
	  "listen 127.0.0.1:2525: name one of the upstreams", 1 },
	{ "listen with no upstream", "\nlisten *:25\n", 2,
	  "listen *:25: no upstream is defined", 1 },
	{ "starttls without certificate", MINIMAL
	  "listen *:465 {\n\n tls implicit\n}\n", 5,
	  "tls: implicit needs a global tls block with a certificate", 1 },
	{ "duplicate listen", "upstream u { server 1.1.1.1:25 }\nlisten *:25\n"
	  "listen 0.0.0.0:25\n", 3,
	  "listen: 0.0.0.0:25 is already declared at /tmp/", 1 },
	{ "listen address", MINIMAL "listen 127.0.0.1\n", 3,
	  "listen: expected an address", 1 },
	{ "banner with control character", MINIMAL
	  "listen *:1 { banner \"a\tb\" }\n", 3,
	  "banner: must not hold control characters", 1 },
	{ "banner with 8-bit text", MINIMAL
	  "listen *:1 { banner \"caf\xc3\xa9\" }\n", 3,
	  "banner: must be US-ASCII", 1 },
	{ "timeout command twice", "timeout command 5s\ntimeout data 1m\n"
	  "timeout command 6s\n" MINIMAL, 3,
	  "timeout command: already given on line 1", 1 },
	{ "timeout data twice", "timeout data 5s; timeout data 6s\n" MINIMAL, 1,
	  "timeout data: already given on line 1", 1 },
	{ "v4-mapped listen", "upstream u { server 1.1.1.1:25 }\n"
	  "listen [::ffff:127.0.0.1]:25\n", 2,
	  "listen: write the IPv4 address [::ffff:127.0.0.1]:25 without ::ffff:", 1 },
	{ "v4-mapped metrics", "metrics [::ffff:127.0.0.1]:9325\n" MINIMAL, 1,
	  "metrics: write the IPv4 address", 1 },
	{ "listen under a wildcard", "upstream u { server 1.1.1.1:25 }\n"
	  "listen *:25\nlisten 127.0.0.1:25\n", 3,
	  "listen 127.0.0.1:25: overlaps listen *:25 at /tmp/", 1 },
	{ "metrics on a listen port", "metrics 127.0.0.1:2525\n" MINIMAL, 1,
	  "metrics 127.0.0.1:2525: the port is taken by listen 127.0.0.1:2525", 1 },
	{ "metrics under a wildcard listen", "metrics 127.0.0.1:25\n"
	  "upstream u { server 1.1.1.1:25 }\nlisten [::]:25\nlisten *:25\n", 1,
	  "metrics 127.0.0.1:25: the port is taken by listen *:25", 1 },
	{ "log in a missing directory", "log /nonexistent-sg/x.log\n" MINIMAL, 1,
	  "log: directory /nonexistent-sg: No such file or directory", 1 },
	{ "log is a directory", "log /tmp\n" MINIMAL, 1,
	  "log: /tmp is a directory", 1 },
	{ "control bytes quoted visibly", "us\x1b[2Jer x\n" MINIMAL, 1,
	  "unknown directive \"us\\x1b[2Jer\"", 1 },
	{ "a byte-order mark shown", "\xef\xbb\xbfuser x\n" MINIMAL, 1,
	  "unknown directive \"\\xef\\xbb\\xbfuser\"", 1 },
	{ "empty banner", MINIMAL "listen *:1 { banner \"\" }\n", 3,
	  "banner: must not be empty", 1 },
	{ "no listen", "user nobody\n\n", 2, "no listen directive: nothing to do", 1 },
	{ "empty file", "", 1, "no listen directive: nothing to do", 1 },
	{ "unterminated string", MINIMAL "user \"x\n", 3,
	  "unterminated string", 1 },
	{ "unterminated block", MINIMAL "\nupstream v {\n server 1.1.1.1:25\n",
	  4, "\"{\" is never closed", 1 },
	{ "include missing", MINIMAL "include /nonexistent-smtpgate.conf\n", 3,
	  "include: cannot read \"/nonexistent-smtpgate.conf\": No such file "
	  "or directory", 1 },
	{ "a wait past a day", MINIMAL "listen *:1 { pregreet 100000000000d }\n", 3,
	  "pregreet: 100000000000d is longer than 1d", 1 },
	{ "a pattern in a directory", MINIMAL "include /nonexistent-sg/*/*.conf\n", 3,
	  "include: cannot read \"/nonexistent-sg/*/*.conf\": a pattern may only be in "
	  "the file name", 1 },
	{ "include of a device", MINIMAL "include /dev/null\n", 3,
	  "include: cannot read \"/dev/null\": not a regular file", 1 },
	{ "upstream is the listener itself", "upstream u { server 127.0.0.1:2525 }\n"
	  "listen 127.0.0.1:2525\n", 2,
	  "listen 127.0.0.1:2525: its sessions come back to it through server 127.0.0.1:2525 "
	  "of upstream u (a loop)", 1 },
	{ "loopback upstream on a wildcard listener", "upstream u { server 127.0.0.5:25 }\n"
	  "listen 127.0.0.1:2525\nlisten *:25\n", 3,
	  "listen *:25: its sessions come back to it through server 127.0.0.5:25", 1 },
	{ "two listeners sending to each other",
	  "upstream a { server 127.0.0.1:2002 }\nupstream b { server [::ffff:127.0.0.1]:2001 }\n"
	  "listen 127.0.0.1:2001 { upstream a }\nlisten 127.0.0.1:2002 { upstream b }\n", 3,
	  "listen 127.0.0.1:2001: its sessions come back to it through server "
	  "127.0.0.1:2002 of upstream a (a loop)", 2 },
	{ "a chain of listeners is no loop",
	  "upstream a { server 127.0.0.1:2002 }\nupstream b { server 10.0.0.1:25 }\n"
	  "listen 127.0.0.1:2001 { upstream a }\nlisten 127.0.0.1:2002 { upstream b }\n"
	  "max_sessions x\n", 5, "max_sessions: expected a number", 1 },
	{ "wildcard server", "upstream u { server *:25 }\nlisten 127.0.0.1:2525\n", 1,
	  "server *:25: a wildcard is no address to connect to", 1 },
	{ "errors collected", "max_sessions x\nfoo\n" MINIMAL "bar\n", 1,
	  "max_sessions: expected a number", 3 },
};

START_TEST(test_bad)
{
	const struct bad_case *c = &bad_cases[_i];
	struct capture cerr;
	struct config *cfg;
	char path[64], want[512];
	const char *got;

	write_temp(c->text, path);
	cap_open(&cerr);
	cfg = config_load(path, cerr.fp);
	got = cap_text(&cerr);
	ck_assert_msg(cfg == NULL, "%s: loaded, want an error", c->label);
	snprintf(want, sizeof(want), "%s:%d: %s", path, c->line, c->msg);
	ck_assert_msg(strncmp(got, want, strlen(want)) == 0,
	    "%s: got\n%swant\n%s...", c->label, got, want);
	ck_assert_msg(count_lines(got) == c->nerrors,
	    "%s: got %d errors, want %d:\n%s", c->label, count_lines(got),
	    c->nerrors, got);
	cap_free(&cerr);
	ck_assert_int_eq(unlink(path), 0);
}
END_TEST

START_TEST(test_too_many_errors)
{
	struct capture cerr;
	char path[64], *text, *last;
	const char *got;
	size_t i;

	text = malloc(150 * 4 + 1);
	ck_assert_ptr_nonnull(text);
	for (i = 0; i < 150; i++)
		memcpy(text + 4 * i, "foo\n", 4);
	text[150 * 4] = '\0';
	write_temp(text, path);
	free(text);
	cap_open(&cerr);
	ck_assert_ptr_null(config_load(path, cerr.fp));
	got = cap_text(&cerr);
	ck_assert_int_eq(count_lines(got), CONFIG_MAX_ERRORS + 1);
	last = strstr(got, ":101: too many errors, giving up\n");
	ck_assert_msg(last != NULL, "got\n%s", got);
	cap_free(&cerr);
	ck_assert_int_eq(unlink(path), 0);
}
END_TEST

START_TEST(test_missing_file)
{
	struct capture cerr;

	cap_open(&cerr);
	ck_assert_ptr_null(config_load("/nonexistent/smtpgate.conf", cerr.fp));
	ck_assert_str_eq(cap_text(&cerr), "/nonexistent/smtpgate.conf:0: "
	    "cannot read: No such file or directory\n");
	cap_free(&cerr);
	/* errs may be NULL */
	ck_assert_ptr_null(config_load("/nonexistent/smtpgate.conf", NULL));
}
END_TEST

START_TEST(test_refs)
{
	struct config *cfg, *again;
	char path[64];

	write_temp(MINIMAL, path);
	cfg = config_load(path, NULL);
	ck_assert_ptr_nonnull(cfg);
	again = config_ref(cfg);
	ck_assert_ptr_eq(again, cfg);
	ck_assert_int_eq(cfg->refs, 2);
	config_unref(again);
	ck_assert_int_eq(cfg->refs, 1);
	config_unref(cfg);
	config_unref(NULL);
	ck_assert_int_eq(unlink(path), 0);
}
END_TEST

/* ---- include ---------------------------------------------------------------- */

struct incdir {
	char dir[64];
	char paths[8][128];
	int n;
};

static const char *
inc_write(struct incdir *d, const char *name, const char *text)
{
	char path[sizeof(d->paths[0])];

	ck_assert_int_lt(d->n, 8);
	snprintf(path, sizeof(path), "%s/%s", d->dir, name);
	memcpy(d->paths[d->n], path, sizeof(path));
	write_file(d->paths[d->n], text);
	return d->paths[d->n++];
}

static void
inc_cleanup(struct incdir *d, const char *subdir)
{
	char path[128];

	while (d->n > 0)
		ck_assert_int_eq(unlink(d->paths[--d->n]), 0);
	if (subdir != NULL) {
		snprintf(path, sizeof(path), "%s/%s", d->dir, subdir);
		ck_assert_int_eq(rmdir(path), 0);
	}
	ck_assert_int_eq(rmdir(d->dir), 0);
}

static void
inc_setup(struct incdir *d, const char *subdir)
{
	char path[128];

	d->n = 0;
	strcpy(d->dir, "/tmp/smtpgate-check-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(d->dir));
	if (subdir != NULL) {
		snprintf(path, sizeof(path), "%s/%s", d->dir, subdir);
		ck_assert_int_eq(mkdir(path, 0700), 0);
	}
}

START_TEST(test_include_glob)
{
	struct incdir d;
	struct capture cerr;
	struct config *cfg;
	const char *main_conf;

	inc_setup(&d, "conf.d");
	main_conf = inc_write(&d, "main.conf",
	    "include conf.d/*.conf\n"
	    "listen 127.0.0.1:2525 {\n include \"listen.inc\"\n}\n");
	inc_write(&d, "conf.d/a.conf", "upstream a {\n server 127.0.0.1:1\n}\n");
	inc_write(&d, "conf.d/b.conf", "max_sessions 7; max_recipients 8\n");
	inc_write(&d, "conf.d/ignored.txt", "garbage\n");
	inc_write(&d, "listen.inc", "banner hello\n");
	cap_open(&cerr);
	cfg = config_load(main_conf, cerr.fp);
	ck_assert_msg(cfg != NULL, "got\n%s", cap_text(&cerr));
	ck_assert_uint_eq(cfg->nupstreams, 1);
	ck_assert_str_eq(cfg->upstreams[0].name, "a");
	ck_assert_uint_eq(cfg->max_sessions, 7);
	ck_assert_uint_eq(cfg->max_recipients, 8);
	ck_assert_str_eq(cfg->listens[0].banner, "hello");
	ck_assert_ptr_eq(cfg->listens[0].upstream, &cfg->upstreams[0]);
	config_unref(cfg);
	cap_free(&cerr);
	inc_cleanup(&d, "conf.d");
}
END_TEST

START_TEST(test_include_errors)
{
	struct incdir d;
	struct capture cerr;
	const char *main_conf, *bad, *got;
	char want[512];

	inc_setup(&d, NULL);
	main_conf = inc_write(&d, "main.conf",
	    "upstream u { server 127.0.0.1:1 }\n"
	    "include bad.conf\n"
	    "listen *:25\n"
	    "include missing.conf\n");
	bad = inc_write(&d, "bad.conf", "\n# two\nbogus 1\n\"x\n");
	cap_open(&cerr);
	ck_assert_ptr_null(config_load(main_conf, cerr.fp));
	got = cap_text(&cerr);
	snprintf(want, sizeof(want),
	    "%s:4: unterminated string\n"
	    "%s:4: include: cannot read \"%s/missing.conf\": No such file or "
	    "directory\n"
	    "%s:3: unknown directive \"bogus\"\n", bad, main_conf, d.dir, bad);
	ck_assert_msg(strcmp(got, want) == 0, "got\n%swant\n%s", got, want);
	cap_free(&cerr);
	inc_cleanup(&d, NULL);
}
END_TEST

/* The first of a twice-given directive may sit in another file. */
START_TEST(test_include_again)
{
	struct incdir d;
	struct capture cerr;
	const char *main_conf, *inc, *got;
	char want[512];

	inc_setup(&d, NULL);
	main_conf = inc_write(&d, "main.conf",
	    "max_sessions 5\n"
	    "include again.conf\n"
	    "upstream u { server 127.0.0.1:1 }\n"
	    "listen *:25\n");
	inc = inc_write(&d, "again.conf", "\nmax_sessions 6\n");
	cap_open(&cerr);
	ck_assert_ptr_null(config_load(main_conf, cerr.fp));
	got = cap_text(&cerr);
	snprintf(want, sizeof(want),
	    "%s:2: max_sessions: already given at %s:1\n", inc, main_conf);
	ck_assert_msg(strcmp(got, want) == 0, "got\n%swant\n%s", got, want);
	cap_free(&cerr);
	inc_cleanup(&d, NULL);
}
END_TEST

START_TEST(test_include_cycle)
{
	struct incdir d;
	struct capture cerr;
	const char *main_conf, *got;

	inc_setup(&d, NULL);
	main_conf = inc_write(&d, "main.conf",
	    "include loop.conf\n" MINIMAL);
	inc_write(&d, "loop.conf", "\ninclude loop.conf\n");
	cap_open(&cerr);
	ck_assert_ptr_null(config_load(main_conf, cerr.fp));
	got = cap_text(&cerr);
	ck_assert_msg(count_lines(got) == 1 &&
	    strstr(got, "loop.conf:2: include: nested more than 16 deep") !=
	    NULL, "got\n%s", got);
	cap_free(&cerr);
	inc_cleanup(&d, NULL);
}
END_TEST

/* A NUL in an included file is reported at its own line. */
START_TEST(test_include_nul_line)
{
	struct incdir d;
	struct capture cerr;
	const char *main_conf, *inc, *got;
	FILE *fp;

	inc_setup(&d, NULL);
	main_conf = inc_write(&d, "main.conf", "include nul.conf\n" MINIMAL);
	inc = inc_write(&d, "nul.conf", "");
	fp = fopen(inc, "wb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite("a 1\nb 2\nc\0d\n", 1, 13, fp), 13);
	ck_assert_int_eq(fclose(fp), 0);
	cap_open(&cerr);
	ck_assert_ptr_null(config_load(main_conf, cerr.fp));
	got = cap_text(&cerr);
	ck_assert_msg(count_lines(got) == 1 && strstr(got, "nul.conf:3: file contains a NUL byte") != NULL,
	    "got\n%s", got);
	cap_free(&cerr);
	inc_cleanup(&d, NULL);
}
END_TEST

/* Glob characters in the including file's directory are no pattern. */
START_TEST(test_include_glob_chars_in_dir)
{
	struct incdir d;
	struct capture cerr;
	const char *main_conf, *got;

	inc_setup(&d, "c[1]");
	main_conf = inc_write(&d, "c[1]/main.conf",
	    "include extra.conf\n"
	    "include missing.conf\n" MINIMAL);
	inc_write(&d, "c[1]/extra.conf", "max_sessions BROKEN\n");
	cap_open(&cerr);
	ck_assert_ptr_null(config_load(main_conf, cerr.fp));
	got = cap_text(&cerr);
	ck_assert_msg(count_lines(got) == 2 &&
	    strstr(got, "c[1]/main.conf:2: include: cannot read") != NULL &&
	    strstr(got, "c[1]/extra.conf:1: max_sessions: expected a number") != NULL,
	    "got\n%s", got);
	cap_free(&cerr);
	inc_cleanup(&d, "c[1]");
}
END_TEST

/* A pattern that matches nothing but names a file is that file. */
START_TEST(test_include_pattern_naming_a_file)
{
	struct incdir d;
	struct capture cerr;
	const char *main_conf, *got;

	inc_setup(&d, NULL);
	main_conf = inc_write(&d, "main.conf", "include \"lit[1].conf\"\n" MINIMAL);
	inc_write(&d, "lit[1].conf", "max_sessions x\n");
	cap_open(&cerr);
	ck_assert_ptr_null(config_load(main_conf, cerr.fp));
	got = cap_text(&cerr);
	ck_assert_msg(count_lines(got) == 1 &&
	    strstr(got, "lit[1].conf:1: max_sessions: expected a number") != NULL,
	    "got\n%s", got);
	cap_free(&cerr);
	inc_cleanup(&d, NULL);
}
END_TEST

/* Each file includes the next four times: 5,461 reads, refused past 1,024. */
START_TEST(test_include_fan_out)
{
	struct incdir d;
	struct capture cerr;
	const char *main_conf, *got;
	char name[16], text[128];

	inc_setup(&d, NULL);
	main_conf = inc_write(&d, "main.conf", "include l1.conf\n" MINIMAL);
	for (int i = 1; i <= 6; i++) {
		snprintf(name, sizeof name, "l%d.conf", i);
		snprintf(text, sizeof text, "include l%d.conf\ninclude l%d.conf\n"
		    "include l%d.conf\ninclude l%d.conf\n", i + 1, i + 1, i + 1, i + 1);
		inc_write(&d, name, text);
	}
	inc_write(&d, "l7.conf", "# leaf\n");
	cap_open(&cerr);
	ck_assert_ptr_null(config_load(main_conf, cerr.fp));
	got = cap_text(&cerr);
	ck_assert_msg(count_lines(got) == 1 &&
	    strstr(got, "include: more than 1024 files read in all") != NULL,
	    "got\n%s", got);
	cap_free(&cerr);
	inc_cleanup(&d, NULL);
}
END_TEST

/* 300,000 words (a `;` each) are past CONF_WORDS_MAX: one error, and quickly. */
START_TEST(test_too_many_words)
{
	size_t n = 300000, len = 2 * n;
	char *text = malloc(len + 1);
	struct conf_errs e = { NULL, 0 };
	struct conf_tree *t;

	ck_assert_ptr_nonnull(text);
	for (size_t i = 0; i < n; i++)
		memcpy(text + 2 * i, "a;", 2);
	text[len] = '\0';
	t = conf_parse_string("T", text, len, &e);
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(e.count, 1);
	ck_assert_uint_le(t->nwords, CONF_WORDS_MAX + 1);
	conf_tree_free(t);
	free(text);
}
END_TEST

/* ---- the shipped sample ----------------------------------------------------- */

START_TEST(test_sample)
{
	struct capture cerr;
	struct config *cfg;

	cap_open(&cerr);
	cfg = config_load("etc/smtpgate.conf", cerr.fp);
	ck_assert_msg(cfg != NULL, "etc/smtpgate.conf (run from the repository "
	    "root): got\n%s", cap_text(&cerr));
	ck_assert_int_eq(cfg->log_target, LOG_TARGET_STDERR);
	ck_assert_int_eq(cfg->log_format, LOG_FORMAT_TEXT);
	ck_assert_uint_eq(cfg->nlistens, 1);
	ck_assert_str_eq(cfg->listens[0].addr.text, "127.0.0.1:2525");
	ck_assert_uint_eq(cfg->nupstreams, 1);
	ck_assert_ptr_eq(cfg->listens[0].upstream, &cfg->upstreams[0]);
	ck_assert_uint_eq(cfg->upstreams[0].nservers, 1);
	ck_assert_str_eq(cfg->upstreams[0].servers[0].text, "127.0.0.1:2526");
	ck_assert_int_eq(cfg->upstreams[0].forward, FORWARD_NONE);
	ck_assert_int_eq(cfg->listens[0].tls, TLS_MODE_NONE);
	config_unref(cfg);
	cap_free(&cerr);
}
END_TEST

Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("values");
	tcase_add_loop_test(tc, test_duration, 0, NCASES(duration_cases));
	tcase_add_loop_test(tc, test_size, 0, NCASES(size_cases));
	tcase_add_loop_test(tc, test_rate, 0, NCASES(rate_cases));
	tcase_add_loop_test(tc, test_addr, 0, NCASES(addr_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("lexer");
	tcase_add_loop_test(tc, test_lex, 0, NCASES(lex_cases));
	tcase_add_test(tc, test_lex_long_word);
	suite_add_tcase(s, tc);

	tc = tcase_create("load");
	tcase_add_unchecked_fixture(tc, write_cert_and_key, NULL);
	tcase_add_loop_test(tc, test_good, 0, NCASES(good_cases));
	tcase_add_loop_test(tc, test_bad, 0, NCASES(bad_cases));
	tcase_add_test(tc, test_too_many_errors);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_refs);
	tcase_add_test(tc, test_include_glob);
	tcase_add_test(tc, test_include_errors);
	tcase_add_test(tc, test_include_cycle);
	tcase_add_test(tc, test_include_again);
	tcase_add_test(tc, test_include_nul_line);
	tcase_add_test(tc, test_include_glob_chars_in_dir);
	tcase_add_test(tc, test_include_pattern_naming_a_file);
	tcase_add_test(tc, test_include_fan_out);
	tcase_add_test(tc, test_too_many_words);
	tcase_add_test(tc, test_sample);
	suite_add_tcase(s, tc);
	return s;
}
