/*
 * metrics.h - Prometheus counters (SPEC §4) and the read-only HTTP
 * listener that serves them at GET /metrics.
 */
#ifndef SMTPGATE_METRICS_H
#define SMTPGATE_METRICS_H

#include <ev.h>
#include <stddef.h>

#include "config.h"

#define METRICS_SERIES_MAX 1024      /* label sets kept; past it new ones are dropped */
#define METRICS_LABELS_MAX 192
#define METRICS_REQUEST_MAX 2048
#define METRICS_RESPONSE_MAX 262144
#define METRICS_CONN_TIMEOUT_S 5.0
#define METRICS_CONNS_MAX 16             /* scrapes at once; more are closed */
#define METRICS_BACKLOG 64
#define METRICS_ACCEPT_PAUSE_S 0.5        /* the listener rests this long when out of fds */

enum metric {
	METRIC_SESSIONS_TOTAL,           /* {listener} */
	METRIC_MESSAGES_TOTAL,           /* {result} */
	METRIC_REFUSALS_TOTAL,           /* {stage,name,action} */
	METRIC_UPSTREAM_ERRORS_TOTAL,    /* {server} */
	METRIC_CONFIG_RELOADS_TOTAL,     /* {result} */
	METRIC_TLS_SESSIONS_TOTAL,       /* {version} */
	METRIC_COUNT
};

/* Add one to the series of m with these label values (NULL-terminated
 * list of key, value pairs); values are escaped here. */
void metrics_inc(enum metric m, ...);
/* Create the series at 0 if it is not there, so it shows before its first event. */
void metrics_touch(enum metric m, ...);

/* The text exposition; returns its length (cut at outsz). */
size_t metrics_render(char *out, size_t outsz, unsigned sessions_active);

/* Serve GET /metrics on addr; -1 when it cannot be bound. */
int metrics_listen(struct ev_loop *loop, const struct config_addr *addr,
    unsigned (*active)(void));
/* The same in two steps, for reloads: a bound socket (-1, errno), then
 * serving on it instead of the old one. */
int metrics_bind(const struct config_addr *addr);
void metrics_adopt(struct ev_loop *loop, int fd, unsigned (*active)(void));
void metrics_close(void);

#endif
