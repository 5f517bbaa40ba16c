/* suites.h - one Check suite per module under test. */
#ifndef SMTPGATE_SUITES_H
#define SMTPGATE_SUITES_H
#include <check.h>
Suite *config_suite(void);
Suite *smtp_suite(void);
Suite *data_suite(void);
Suite *proxyproto_suite(void);
Suite *log_suite(void);
Suite *auth_suite(void);
#endif
