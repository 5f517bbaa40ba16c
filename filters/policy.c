/*
 * policy.c - stage verdicts: the built-in limits of SPEC §2 globals.
 */
#include "policy.h"

#include <stdio.h>
#include <string.h>

static const char *const stage_names[STAGE_COUNT] = {
	[STAGE_CONNECT] = "connect", [STAGE_HELO] = "helo", [STAGE_AUTH] = "auth",
	[STAGE_MAIL] = "mail", [STAGE_RCPT] = "rcpt", [STAGE_DATA] = "data",
};

const char *policy_stage_name(enum policy_stage st)
{
	return st < STAGE_COUNT ? stage_names[st] : "?";
}

static void refuse(struct verdict *v, enum verdict_kind kind, const char *name, const char *reply)
{
	v->kind = kind;
	v->what = "limit";
	v->name = name;
	snprintf(v->reply, sizeof v->reply, "%s", reply);
}

void policy_check(const struct config *cfg, enum policy_stage stage,
    const struct policy_facts *f, uint64_t now_ms, struct verdict *v)
{
	(void)now_ms;
	v->kind = VERDICT_PASS;
	v->what = NULL;
	v->name = NULL;
	v->reply[0] = '\0';

	switch (stage) {
	case STAGE_MAIL:
		if (cfg->max_message_size && f->size > cfg->max_message_size)
			refuse(v, VERDICT_REFUSE, "max_message_size",
			    "552 5.3.4 Message size exceeds fixed maximum message size");
		break;
	case STAGE_RCPT:
		if (f->rcpts >= cfg->max_recipients)
			refuse(v, VERDICT_REFUSE, "max_recipients",
			    "452 4.5.3 Error: too many recipients");
		break;
	default:
		break;
	}
}
