/*
 * main.c - the command line (SPEC §1): run, check (-t), explain (-x),
 * versions (-V).
 */
#include <ev.h>
#include <maxminddb.h>
#include <openssl/crypto.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "explain.h"
#include "server.h"

static void usage(FILE *out)
{
	fprintf(out,
	    "usage: smtpgate [-c FILE] [-t] [-x 'KEY=VALUE ...'] [-V] [-h]\n"
	    "  -c FILE  configuration file (default %s)\n"
	    "  -t       check the configuration and exit\n"
	    "  -x '...' explain what rules and limits do to a made-up session\n"
	    "           (keys: ip helo sender rcpt user tls port; rcpt may repeat)\n"
	    "  -V       print versions and exit\n"
	    "  -h       this help\n", CONFIG_DEFAULT_FILE);
}

static void versions(void)
{
	char pcre[64] = "?";

	pcre2_config(PCRE2_CONFIG_VERSION, pcre);
	printf("smtpgate %s\n", SMTPGATE_VERSION);
	/* OpenSSL's own string reads "OpenSSL 3.0.x DATE". */
	printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
	printf("PCRE2 %s\n", pcre);
	printf("libmaxminddb %s\n", MMDB_lib_version());
	printf("libev %d.%d\n", ev_version_major(), ev_version_minor());
}

int main(int argc, char **argv)
{
	const char *file = CONFIG_DEFAULT_FILE;
	const char *explain = NULL;
	int check = 0, opt;

	while ((opt = getopt(argc, argv, "c:tx:Vh")) != -1) {
		switch (opt) {
		case 'c': file = optarg; break;
		case 't': check = 1; break;
		case 'x': explain = optarg; break;
		case 'V': versions(); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || (check && explain)) {
		usage(stderr);
		return 2;
	}

	/*
	 * Until the loop takes them, SIGHUP and SIGUSR1 would kill a daemon
	 * that a `systemctl reload` reached early: hold them (and the stop
	 * signals) pending; server_run() lets them in once it handles them.
	 */
	if (!check && !explain)
		server_block_signals();
	struct config *cfg = config_load(file, stderr);
	if (!cfg)
		return 1;
	if (check) {
		printf("%s: ok\n", file);
		config_unref(cfg);
		return 0;
	}
	if (explain) {
		int rc = explain_run(cfg, explain, stdout, stderr);
		config_unref(cfg);
		return rc;
	}
	return server_run(cfg);
}
