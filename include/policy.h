/*
 * policy.h - what the session asks at each stage, and the verdict it gets.
 *
 * A policy is a function of (config, session facts, now) returning a
 * verdict; it does no I/O.  Built-in limits (max_recipients, SIZE) live
 * here now; rules, limits and geo plug in behind the same call.
 */
#ifndef SMTPGATE_POLICY_H
#define SMTPGATE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

#define POLICY_REPLY_MAX 512

enum policy_stage {
	STAGE_CONNECT, STAGE_HELO, STAGE_AUTH, STAGE_MAIL, STAGE_RCPT, STAGE_DATA,
	STAGE_COUNT
};

/* What the session knows so far; strings are NUL-terminated or NULL. */
struct policy_facts {
	const struct sockaddr *addr;     /* the client, after any PROXY header */
	const char *ip;                  /* its text form */
	unsigned port;                   /* the listener's port */
	bool tls;
	const char *helo;
	const char *user;                /* after a successful AUTH */
	const char *sender;              /* "" for the null sender */
	uint64_t size;                   /* MAIL's SIZE=, 0 when not given */
	const char *rcpt;                /* the RCPT being judged */
	unsigned rcpts;                  /* recipients accepted so far in this transaction */
};

enum verdict_kind {
	VERDICT_PASS,
	VERDICT_REFUSE,                  /* reply, the command is refused, the session goes on */
	VERDICT_CLOSE,                   /* reply, then close the session */
};

struct verdict {
	enum verdict_kind kind;
	const char *what;                /* "rule", "limit" or "check": the log's key for name */
	const char *name;                /* what fired: a rule or limit name */
	char reply[POLICY_REPLY_MAX];    /* "452 4.5.3 Error: too many recipients", no CRLF */
};

const char *policy_stage_name(enum policy_stage);

/* Judge one stage; fills v (PASS when nothing fires). */
void policy_check(const struct config *cfg, enum policy_stage stage,
    const struct policy_facts *facts, uint64_t now_ms, struct verdict *v);

#endif
