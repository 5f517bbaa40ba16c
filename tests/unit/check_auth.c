/* check_auth.c - user names from AUTH exchanges; secrets never kept. */
#include <check.h>
#include <string.h>

#include "auth.h"
#include "suites.h"

struct auth_case {
	const char *label;
	const char *cmd;                 /* the AUTH argument */
	const char *resp[3];             /* client answers to 334s */
	const char *want;                /* NULL: the name stays unknown */
};

static const struct auth_case cases[] = {
	/* "\0alice\0secret" */
	{ "PLAIN initial", "PLAIN AGFsaWNlAHNlY3JldA==", { NULL }, "alice" },
	{ "PLAIN lower-case", "plain AGFsaWNlAHNlY3JldA==", { NULL }, "alice" },
	/* "admin\0bob\0pw": authzid admin, authcid bob */
	{ "PLAIN authzid", "PLAIN YWRtaW4AYm9iAHB3", { NULL }, "bob" },
	{ "PLAIN after 334", "PLAIN", { "AGFsaWNlAHNlY3JldA==", NULL }, "alice" },
	{ "PLAIN no padding", "PLAIN AGFsaWNlAHNlY3JldA", { NULL }, "alice" },
	{ "PLAIN cancelled", "PLAIN", { "*", NULL }, NULL },
	{ "PLAIN garbage", "PLAIN !!!!", { NULL }, NULL },
	{ "PLAIN one NUL", "PLAIN YWxpY2UAc2VjcmV0", { NULL }, NULL },
	{ "LOGIN", "LOGIN", { "Y2Fyb2w=", "cGFzc3dvcmQ=", NULL }, "carol" },
	{ "LOGIN initial", "LOGIN Y2Fyb2w=", { "cGFzc3dvcmQ=", NULL }, "carol" },
	/* "dave 0123456789abcdef" */
	{ "CRAM-MD5", "CRAM-MD5", { "ZGF2ZSAwMTIzNDU2Nzg5YWJjZGVm", NULL }, "dave" },
	/* "n,,n=er=3Din,r=abc" */
	{ "SCRAM", "SCRAM-SHA-256 biwsbj1lcj0zRGluLHI9YWJj", { NULL }, "er=in" },
	{ "unknown mech", "XOAUTH2 dXNlcj1mcmVk", { NULL }, NULL },
};

START_TEST(test_auth_user)
{
	const struct auth_case *c = &cases[_i];
	struct auth_state a;

	auth_begin(&a, c->cmd, strlen(c->cmd));
	for (int i = 0; i < 3 && c->resp[i]; i++)
		auth_response(&a, c->resp[i], strlen(c->resp[i]));
	if (!c->want) {
		ck_assert_msg(!a.known, "%s: got user %s, want none", c->label, a.user);
		return;
	}
	ck_assert_msg(a.known, "%s: no user, want %s", c->label, c->want);
	ck_assert_msg(strcmp(a.user, c->want) == 0, "%s: got %s want %s", c->label, a.user, c->want);
}
END_TEST

START_TEST(test_base64_bounds)
{
	unsigned char out[4];
	ck_assert_int_eq(auth_base64_decode("YWJj", 4, out, sizeof out), 3);
	ck_assert_int_eq(auth_base64_decode("YWJjZGVm", 8, out, sizeof out), -1);
	ck_assert_int_eq(auth_base64_decode("YW=j", 4, out, sizeof out), -1);
	ck_assert_int_eq(auth_base64_decode("", 0, out, sizeof out), 0);
}
END_TEST

Suite *auth_suite(void)
{
	Suite *s = suite_create("auth");
	TCase *tc = tcase_create("user");
	tcase_add_loop_test(tc, test_auth_user, 0, (int)(sizeof cases / sizeof cases[0]));
	tcase_add_test(tc, test_base64_bounds);
	suite_add_tcase(s, tc);
	return s;
}
