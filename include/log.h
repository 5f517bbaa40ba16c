/*
 * log.h - one line per event, as key=value text or one JSON object (SPEC §4).
 *
 * Values come from strangers (HELO names, addresses, replies), so every
 * value is escaped on the way out: no control character, quote or
 * backslash reaches the log raw, and a client cannot forge a line.
 */
#ifndef SMTPGATE_LOG_H
#define SMTPGATE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define LOG_LINE_MAX 4096         /* a longer line is cut, marked with "..." */
#define LOG_VALUE_MAX 512         /* one value is cut past this many bytes */
#define LOG_BATCH_MAX 65536       /* lines held between two flushes */

struct log_field {
	const char *key;
	const char *val;              /* NULL: the field is left out */
	size_t len;                   /* (size_t)-1: val is NUL-terminated */
	int number;                   /* a decimal count: a JSON number, not a string */
};

/* Configure where lines go; returns 0, or -1 when FILE cannot be opened. */
int log_open(enum log_target target, const char *file, enum log_format format);
/*
 * The same in two steps, so a reload can fail before anything changed:
 * log_file_open() (NULL with errno set), then log_use(), which takes FP
 * over (NULL for stderr and syslog).
 */
FILE *log_file_open(const char *file);
int log_use(enum log_target target, FILE *fp, const char *file, enum log_format format);
/* SIGUSR1: reopen the log file so logrotate can move it. */
int log_reopen(void);
void log_close(void);
/* Batch lines until log_flush() (the event loop calls it once per turn). */
void log_set_batching(bool on);
void log_flush(void);

/*
 * Write one event.  SESSION may be NULL for process-wide events.  The
 * fields end with a {NULL} entry.
 */
void log_event(const char *session, const char *event, const struct log_field *fields);

/* Format the escaped line into out (for the tests); returns its length. */
size_t log_format_line(enum log_format fmt, const char *session, const char *event,
    const struct log_field *fields, char *out, size_t outsz);

/* Process-wide messages that are not session events (start-up, reload). */
void log_msg(const char *event, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
