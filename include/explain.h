/*
 * explain.h - `smtpgate -x`: run the policies over a made-up session and
 * say, stage by stage, what fires and what the client would be told.
 */
#ifndef SMTPGATE_EXPLAIN_H
#define SMTPGATE_EXPLAIN_H

#include <stdio.h>

#include "config.h"

#define EXPLAIN_RCPT_MAX 1000
#define EXPLAIN_INPUT_MAX 65536

/* Returns the exit code: 0, or 2 when the description cannot be parsed
 * (said on ERR). */
int explain_run(const struct config *cfg, const char *description, FILE *out, FILE *err);

#endif
