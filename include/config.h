/*
 * config.h - the parsed, immutable configuration (SPEC §2).
 *
 * A struct config is built once by config_load() and never changed after;
 * sessions hold a reference to the one they began with, so SIGHUP can swap
 * in a new one while old sessions finish under the old.
 */
#ifndef SMTPGATE_CONFIG_H
#define SMTPGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define CONFIG_DEFAULT_FILE "/etc/smtpgate/smtpgate.conf"
#define CONFIG_NAME_MAX 64         /* names of upstreams, rules, limits */
#define CONFIG_ADDR_STR_MAX 64     /* "[ffff:...:ffff]:65535" fits */
#define CONFIG_MAX_ERRORS 100      /* stop reporting after this many */
#define CONF_ERROR_MAX 1024        /* one error message, longer ones cut */
#define CONFIG_INCLUDE_DEPTH 16
/* Each is a socket or a connect target; the bounds keep the pairwise
 * duplicate checks (and a reload) quick. */
#define CONFIG_LISTENS_MAX 1024
#define CONFIG_UPSTREAMS_MAX 1024
#define CONFIG_SERVERS_MAX 64      /* per upstream */
#define CONFIG_WAIT_MAX_MS 86400000ULL  /* timeouts, pregreet, shutdown_grace: 1d */

enum log_target { LOG_TARGET_STDERR, LOG_TARGET_SYSLOG, LOG_TARGET_FILE };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };
enum bare_newline { BARE_NEWLINE_NORMALIZE, BARE_NEWLINE_REJECT, BARE_NEWLINE_ALLOW };
enum forward_mode { FORWARD_NONE, FORWARD_XCLIENT, FORWARD_PROXY_V1, FORWARD_PROXY_V2 };
enum tls_mode { TLS_MODE_NONE, TLS_MODE_STARTTLS, TLS_MODE_IMPLICIT };
enum auth_mode { AUTH_MODE_AS_MTA, AUTH_MODE_REQUIRE_TLS };

/* TLS protocol bits for cfg_tls.protocols */
#define CONFIG_TLS_V1_2 0x1u
#define CONFIG_TLS_V1_3 0x2u

struct config_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[CONFIG_ADDR_STR_MAX];     /* as written: "127.0.0.1:10025", "[::1]:25" */
};

struct ssl_ctx_st;

struct config_tls {
	char *certificate;                  /* NULL when no tls block */
	char *key;
	unsigned protocols;                 /* CONFIG_TLS_V1_* bits; 0 = library default */
	char *ciphers;                      /* NULL = library default */
	struct ssl_ctx_st *ctx;             /* built at load: a bad file is a config error */
};

struct config_upstream {
	char name[CONFIG_NAME_MAX];
	struct config_addr *servers;
	size_t nservers;
	enum forward_mode forward;          /* default FORWARD_NONE */
	bool starttls;                      /* default off */
	bool verify;                        /* default off */
	char *ca;                           /* NULL = system default */
	uint64_t connect_timeout_ms;        /* default 10s */
	struct ssl_ctx_st *tls_ctx;         /* when starttls: built at load */
};

#define CONFIG_WHERE_MAX 256             /* "FILE:LINE", longer paths cut */

struct config_listen {
	struct config_addr addr;
	const struct config_upstream *upstream;  /* points into config.upstreams */
	enum tls_mode tls;                  /* default none */
	bool proxy_protocol;                /* default off */
	uint64_t pregreet_ms;               /* 0 = off */
	char *banner;                       /* NULL = relay the upstream's */
	enum auth_mode auth;                /* default as the MTA says */
	int line;                           /* where it was declared, for messages */
	char where[CONFIG_WHERE_MAX];       /* "FILE:LINE" of the declaration */
};

struct config {
	int refs;                           /* see config_ref()/config_unref() */
	char *file;                         /* the top-level file as given */

	char *user;                         /* NULL = do not drop privileges */
	enum log_target log_target;         /* default stderr */
	char *log_file;                     /* when LOG_TARGET_FILE */
	enum log_format log_format;         /* default text */
	bool has_metrics;
	struct config_addr metrics;
	/* "FILE:LINE" of these directives, for errors found when applying them */
	char user_where[CONFIG_WHERE_MAX];
	char log_where[CONFIG_WHERE_MAX];
	char metrics_where[CONFIG_WHERE_MAX];

	unsigned max_sessions;              /* default 20000 */
	unsigned max_recipients;            /* default 1000 */
	uint64_t max_message_size;          /* default 50M; 0 = unlimited */
	uint64_t timeout_command_ms;        /* default 5m */
	uint64_t timeout_data_ms;           /* default 10m */
	uint64_t shutdown_grace_ms;         /* default 30s */
	enum bare_newline bare_newline;     /* default normalize */
	uint64_t limit_table_size;          /* default 1000000 */

	struct config_tls tls;

	struct config_upstream *upstreams;
	size_t nupstreams;
	struct config_listen *listens;
	size_t nlistens;
};

/*
 * Parse FILE into a new config with refs == 1.  On failure returns NULL and
 * writes one "FILE:LINE: message\n" per error to ERRS (which may be NULL).
 */
struct config *config_load(const char *file, FILE *errs);
struct config *config_ref(struct config *);
void config_unref(struct config *);

/* Parse "30s", "500ms", "5m", "2h", "1d" into milliseconds; 0 ok, -1 bad. */
int config_parse_duration(const char *s, uint64_t *ms);
/* Parse "512", "64K", "10M", "1G" into bytes; 0 ok, -1 bad. */
int config_parse_size(const char *s, uint64_t *bytes);
/* Parse "N/DURATION" into a count and a period in ms; 0 ok, -1 bad. */
int config_parse_rate(const char *s, uint64_t *count, uint64_t *period_ms);
/* Parse "1.2.3.4:25", "[::1]:25", "*:25" (any, v4); 0 ok, -1 bad. */
int config_parse_addr(const char *s, struct config_addr *out);

#endif
