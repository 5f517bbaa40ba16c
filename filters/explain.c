/*
 * explain.c - the -x dry run.  Uses exactly the policy_check() the
 * sessions use, on a fresh clock, so what it prints is what would happen.
 */
#include "explain.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "policy.h"

struct made_up {
	struct sockaddr_storage ss;
	char *ip, *helo, *sender, *user;
	const char *rcpt[EXPLAIN_RCPT_MAX];
	unsigned nrcpt;
	bool tls;
	unsigned port;
};

static int explain_onoff(const char *v, bool *out)
{
	static const char *const on[] = { "on", "yes", "1" }, *const off[] = { "off", "no", "0" };

	for (size_t i = 0; i < sizeof on / sizeof on[0]; i++) {
		if (strcmp(v, on[i]) == 0 || strcmp(v, off[i]) == 0) {
			*out = strcmp(v, on[i]) == 0;
			return 0;
		}
	}
	return -1;
}

static int parse_description(char *text, struct made_up *m, FILE *out)
{
	for (char *save = NULL, *tok = strtok_r(text, " \t\n", &save); tok;
	    tok = strtok_r(NULL, " \t\n", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq) {
			fprintf(out, "explain: expected KEY=VALUE, got \"%s\"\n", tok);
			return -1;
		}
		*eq++ = '\0';
		/* "sender=" is the null reverse-path <>; nothing else may be empty. */
		if (*eq == '\0' && strcmp(tok, "sender") != 0) {
			fprintf(out, "explain: %s: empty value\n", tok);
			return -1;
		}
		if (strcmp(tok, "ip") == 0) {
			m->ip = eq;
		} else if (strcmp(tok, "helo") == 0) {
			m->helo = eq;
		} else if (strcmp(tok, "sender") == 0) {
			m->sender = eq;
		} else if (strcmp(tok, "user") == 0) {
			m->user = eq;
		} else if (strcmp(tok, "rcpt") == 0) {
			if (m->nrcpt == EXPLAIN_RCPT_MAX) {
				fprintf(out, "explain: more than %d rcpt\n", EXPLAIN_RCPT_MAX);
				return -1;
			}
			m->rcpt[m->nrcpt++] = eq;
		} else if (strcmp(tok, "tls") == 0) {
			if (explain_onoff(eq, &m->tls) < 0) {
				fprintf(out, "explain: tls: expected on or off, got \"%s\"\n", eq);
				return -1;
			}
		} else if (strcmp(tok, "port") == 0) {
			char *end;
			unsigned long v = strtoul(eq, &end, 10);
			if (eq[0] < '0' || eq[0] > '9' || *end != '\0' || v < 1 || v > 65535) {
				fprintf(out, "explain: port: expected 1 to 65535, got \"%s\"\n", eq);
				return -1;
			}
			m->port = (unsigned)v;
		} else {
			fprintf(out, "explain: unknown key \"%s\" (ip helo sender rcpt user tls port)\n", tok);
			return -1;
		}
	}
	if (!m->ip)
		m->ip = "192.0.2.1";
	struct sockaddr_in *s4 = (struct sockaddr_in *)&m->ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&m->ss;
	if (inet_pton(AF_INET, m->ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
	} else if (inet_pton(AF_INET6, m->ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
	} else {
		fprintf(out, "explain: ip=%s is not an address\n", m->ip);
		return -1;
	}
	return 0;
}

/* Prints the stage's verdict; returns true when the session ends there. */
static bool stage(const struct config *cfg, enum policy_stage st, const struct policy_facts *f,
    const char *what, FILE *out, bool *txn_refused)
{
	struct verdict v;

	policy_check(cfg, st, f, clock_now_ms(), &v);
	if (v.kind == VERDICT_PASS) {
		fprintf(out, "%-8s %s: pass\n", policy_stage_name(st), what);
		return false;
	}
	bool closes = v.kind == VERDICT_CLOSE || st == STAGE_CONNECT;
	fprintf(out, "%-8s %s: %s by %s -> \"%s\"\n", policy_stage_name(st), what,
	    closes ? "refused and closed" : "refused", v.name ? v.name : "?", v.reply);
	if (st == STAGE_MAIL && txn_refused)
		*txn_refused = true;
	return closes;
}

int explain_run(const struct config *cfg, const char *description, FILE *out)
{
	struct made_up m;
	struct policy_facts f;
	bool txn_refused = false;
	unsigned accepted = 0;

	memset(&m, 0, sizeof m);
	if (strlen(description) > EXPLAIN_INPUT_MAX) {
		fprintf(out, "explain: description too long\n");
		return 2;
	}
	char *text = strdup(description);
	if (!text)
		return 2;
	if (parse_description(text, &m, out) < 0) {
		free(text);
		return 2;
	}
	memset(&f, 0, sizeof f);
	f.addr = (const struct sockaddr *)&m.ss;
	f.ip = m.ip;
	f.port = m.port;
	f.tls = m.tls;
	clock_set_ms(1);   /* a fresh counter: limits act as on their first event */

	if (stage(cfg, STAGE_CONNECT, &f, m.ip, out, NULL))
		goto done;
	if (m.helo) {
		f.helo = m.helo;
		stage(cfg, STAGE_HELO, &f, m.helo, out, NULL);
	}
	if (m.user) {
		f.user = m.user;
		stage(cfg, STAGE_AUTH, &f, m.user, out, NULL);
	}
	if (m.sender) {
		f.sender = m.sender;
		if (stage(cfg, STAGE_MAIL, &f, m.sender, out, &txn_refused))
			goto done;
	}
	for (unsigned i = 0; i < m.nrcpt; i++) {
		if (txn_refused) {
			fprintf(out, "rcpt     %s: refused -> \"503 5.5.1 Error: need MAIL command\"\n", m.rcpt[i]);
			continue;
		}
		f.rcpt = m.rcpt[i];
		f.rcpts = accepted;
		if (!stage(cfg, STAGE_RCPT, &f, m.rcpt[i], out, NULL))
			accepted++;
	}
	if (m.nrcpt && !txn_refused && accepted == 0)
		fprintf(out, "data     : refused -> \"554 5.5.1 Error: no valid recipients\"\n");
done:
	clock_set_ms(0);
	free(text);
	return 0;
}
