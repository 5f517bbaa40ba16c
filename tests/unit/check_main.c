/* check_main.c - runs every Check suite of smtpgate's pure modules. */
#include <check.h>
#include <stdlib.h>

#include "suites.h"

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	srunner_add_suite(sr, smtp_suite());
	srunner_add_suite(sr, data_suite());
	srunner_add_suite(sr, proxyproto_suite());
	srunner_add_suite(sr, log_suite());
	srunner_add_suite(sr, auth_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
