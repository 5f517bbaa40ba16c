/* check_log.c - log lines: escaping makes a stranger's bytes harmless. */
#include <check.h>
#include <string.h>

#include "log.h"
#include "suites.h"

struct log_case {
	const char *label;
	enum log_format fmt;
	const char *val;
	size_t len;
	const char *want;
};

#define V(s) s, sizeof(s) - 1

static const struct log_case cases[] = {
	{ "plain text", LOG_FORMAT_TEXT, V("mx.example"), "session=s1 connect helo=mx.example\n" },
	{ "space quoted", LOG_FORMAT_TEXT, V("a b"), "session=s1 connect helo=\"a b\"\n" },
	{ "empty quoted", LOG_FORMAT_TEXT, V(""), "session=s1 connect helo=\"\"\n" },
	{ "CRLF escaped", LOG_FORMAT_TEXT, V("x\r\nsession=evil close"),
	  "session=s1 connect helo=\"x\\x0d\\x0asession=evil close\"\n" },
	{ "quote and backslash", LOG_FORMAT_TEXT, V("a\"b\\c"), "session=s1 connect helo=\"a\\\"b\\\\c\"\n" },
	{ "ESC and NUL", LOG_FORMAT_TEXT, V("\x1b[31m\0"), "session=s1 connect helo=\"\\x1b[31m\\x00\"\n" },
	{ "UTF-8 kept", LOG_FORMAT_TEXT, V("caf\xc3\xa9"), "session=s1 connect helo=\"caf\xc3\xa9\"\n" },
	{ "json UTF-8 kept", LOG_FORMAT_JSON, V("jos\xc3\xa9@\xe4\xbe\x8b.\xf0\x9f\x93\xa7"),
	  "{\"session\":\"s1\",\"event\":\"connect\",\"helo\":\"jos\xc3\xa9@\xe4\xbe\x8b.\xf0\x9f\x93\xa7\"}\n" },
	/* not UTF-8: a lone byte, overlong '/', a surrogate, past U+10FFFF,
	 * a cut sequence, and U+009B (CSI, a C1 control) */
	{ "8-bit not UTF-8", LOG_FORMAT_TEXT, V("\xe9\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xc3"),
	  "session=s1 connect helo=\"\\xe9\\xc0\\xaf\\xed\\xa0\\x80\\xf4\\x90\\x80\\x80\\xc3\"\n" },
	{ "line separator and bidi override escaped", LOG_FORMAT_TEXT, V("a\xe2\x80\xa8" "b\xe2\x80\xae" "c"),
	  "session=s1 connect helo=\"a\\xe2\\x80\\xa8b\\xe2\\x80\\xaec\"\n" },
	{ "json line separator and isolate escaped", LOG_FORMAT_JSON, V("a\xe2\x80\xa9" "b\xe2\x81\xa6"),
	  "{\"session\":\"s1\",\"event\":\"connect\",\"helo\":\"a\\u2029b\\u2066\"}\n" },
	{ "C1 control escaped", LOG_FORMAT_JSON, V("a\xc2\x9b" "31m"),
	  "{\"session\":\"s1\",\"event\":\"connect\",\"helo\":\"a\\u009b31m\"}\n" },
	{ "json plain", LOG_FORMAT_JSON, V("mx"), "{\"session\":\"s1\",\"event\":\"connect\",\"helo\":\"mx\"}\n" },
	{ "json controls", LOG_FORMAT_JSON, V("a\nb\"c\\"),
	  "{\"session\":\"s1\",\"event\":\"connect\",\"helo\":\"a\\u000ab\\\"c\\\\\"}\n" },
};

START_TEST(test_log_escape)
{
	const struct log_case *c = &cases[_i];
	struct log_field f[] = { { "helo", c->val, c->len, 0 }, { NULL, NULL, 0, 0 } };
	char out[LOG_LINE_MAX];

	size_t n = log_format_line(c->fmt, "s1", "connect", f, out, sizeof out);
	ck_assert_msg(n == strlen(out), "%s: length %zu vs %zu", c->label, n, strlen(out));
	ck_assert_msg(strcmp(out, c->want) == 0, "%s: got %s want %s", c->label, out, c->want);
}
END_TEST

START_TEST(test_log_numbers)
{
	char out[LOG_LINE_MAX];
	struct log_field f[] = { { "size", "1832", (size_t)-1, 1 }, { "rcpts", "2x", (size_t)-1, 1 },
		{ NULL, NULL, 0, 0 } };

	log_format_line(LOG_FORMAT_JSON, "s1", "message", f, out, sizeof out);
	ck_assert_str_eq(out, "{\"session\":\"s1\",\"event\":\"message\",\"size\":1832,\"rcpts\":\"2x\"}\n");
	log_format_line(LOG_FORMAT_TEXT, "s1", "message", f, out, sizeof out);
	ck_assert_str_eq(out, "session=s1 message size=1832 rcpts=2x\n");
}
END_TEST

START_TEST(test_log_cut)
{
	char big[LOG_LINE_MAX * 2];
	char out[LOG_LINE_MAX];
	struct log_field f[9];

	memset(big, 'a', sizeof big);
	for (int i = 0; i < 8; i++)
		f[i] = (struct log_field){ "k", big, LOG_VALUE_MAX * 2, 0 };
	f[8] = (struct log_field){ NULL, NULL, 0, 0 };
	for (int fmt = LOG_FORMAT_TEXT; fmt <= LOG_FORMAT_JSON; fmt++) {
		size_t n = log_format_line((enum log_format)fmt, "s1", "x", f, out, sizeof out);
		ck_assert_uint_le(n, sizeof out - 1);
		ck_assert_int_eq(out[n - 1], '\n');
		ck_assert_ptr_null(memchr(out, '\n', n - 1));
		if (fmt == LOG_FORMAT_JSON)
			ck_assert_int_eq(out[n - 2], '}');
	}
}
END_TEST

Suite *log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("format");
	tcase_add_loop_test(tc, test_log_escape, 0, (int)(sizeof cases / sizeof cases[0]));
	tcase_add_test(tc, test_log_cut);
	tcase_add_test(tc, test_log_numbers);
	suite_add_tcase(s, tc);
	return s;
}
