/*
 * explain.c - the -x dry run.  Uses exactly the policy_check() the
 * sessions use, on a fresh clock, so what it prints is what would happen.
 */
#include "explain.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "policy.h"

struct made_up {
	struct sockaddr_storage ss;
	char *ip, *helo, *sender, *user;   /* NULL: not given */
	const char *rcpt[EXPLAIN_RCPT_MAX];
	unsigned nrcpt;
	bool tls;
	unsigned tls_given;
	unsigned port;
};

static int explain_onoff(const char *v, bool *out)
{
	if (strcmp(v, "on") == 0 || strcmp(v, "off") == 0) {
		*out = v[1] == 'n';
		return 0;
	}
	return -1;
}

/*
 * The description comes from a shell and its values are echoed: control
 * characters would move the terminal's cursor, so they are shown as \xNN.
 */
static const char *vis(const char *s, char *buf, size_t n)
{
	size_t o = 0;

	for (; *s && o + 5 < n; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f)
			o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	buf[o] = '\0';
	return buf;
}

#define VIS_MAX 1024

/* A key that takes one value, given twice: say so rather than pick one. */
static int once(char **slot, char *value, const char *key, FILE *err)
{
	if (*slot) {
		fprintf(err, "explain: %s given twice\n", key);
		return -1;
	}
	*slot = value;
	return 0;
}

static int parse_description(char *text, struct made_up *m, FILE *err)
{
	char v[VIS_MAX];

	for (char *save = NULL, *tok = strtok_r(text, " \t\n", &save); tok;
	    tok = strtok_r(NULL, " \t\n", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq) {
			fprintf(err, "explain: expected KEY=VALUE, got \"%s\"\n", vis(tok, v, sizeof v));
			return -1;
		}
		*eq++ = '\0';
		/* "sender=" is the null reverse-path <>; nothing else may be empty. */
		if (*eq == '\0' && strcmp(tok, "sender") != 0) {
			fprintf(err, "explain: %s: empty value\n", vis(tok, v, sizeof v));
			return -1;
		}
		int rc = 0;
		if (strcmp(tok, "ip") == 0) {
			rc = once(&m->ip, eq, tok, err);
		} else if (strcmp(tok, "helo") == 0) {
			rc = once(&m->helo, eq, tok, err);
		} else if (strcmp(tok, "sender") == 0) {
			rc = once(&m->sender, eq, tok, err);
		} else if (strcmp(tok, "user") == 0) {
			rc = once(&m->user, eq, tok, err);
		} else if (strcmp(tok, "rcpt") == 0) {
			if (m->nrcpt == EXPLAIN_RCPT_MAX) {
				fprintf(err, "explain: more than %d rcpt\n", EXPLAIN_RCPT_MAX);
				return -1;
			}
			m->rcpt[m->nrcpt++] = eq;
		} else if (strcmp(tok, "tls") == 0) {
			if (m->tls_given++ || explain_onoff(eq, &m->tls) < 0) {
				fprintf(err, "explain: tls: expected on or off, once, got \"%s\"\n",
				    vis(eq, v, sizeof v));
				return -1;
			}
		} else if (strcmp(tok, "port") == 0) {
			char *end;
			unsigned long n = strtoul(eq, &end, 10);
			if (m->port || eq[0] < '0' || eq[0] > '9' || *end != '\0' || n < 1 || n > 65535) {
				fprintf(err, "explain: port: expected 1 to 65535, once, got \"%s\"\n",
				    vis(eq, v, sizeof v));
				return -1;
			}
			m->port = (unsigned)n;
		} else {
			fprintf(err, "explain: unknown key \"%s\" (ip helo sender rcpt user tls port)\n",
			    vis(tok, v, sizeof v));
			return -1;
		}
		if (rc < 0)
			return -1;
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
		fprintf(err, "explain: ip=%s is not an address\n", vis(m->ip, v, sizeof v));
		return -1;
	}
	return 0;
}

/* Prints the stage's verdict; returns true when the session ends there. */
static bool stage(const struct config *cfg, enum policy_stage st, const struct policy_facts *f,
    const char *what, FILE *out, bool *txn_refused)
{
	struct verdict v;

	char buf[VIS_MAX];

	/* the null reverse-path, as SMTP writes it */
	what = st == STAGE_MAIL && *what == '\0' ? "<>" : vis(what, buf, sizeof buf);
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

int explain_run(const struct config *cfg, const char *description, FILE *out, FILE *err)
{
	char buf[VIS_MAX];
	struct made_up m;
	struct policy_facts f;
	bool txn_refused = false;
	unsigned accepted = 0;

	memset(&m, 0, sizeof m);
	if (strlen(description) > EXPLAIN_INPUT_MAX) {
		fprintf(err, "explain: description too long\n");
		return 2;
	}
	char *text = strdup(description);
	if (!text)
		return 2;
	if (parse_description(text, &m, err) < 0) {
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
			fprintf(out, "rcpt     %s: refused -> \"503 5.5.1 Error: need MAIL command\"\n",
			    vis(m.rcpt[i], buf, sizeof buf));
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
