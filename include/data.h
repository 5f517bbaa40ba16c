/*
 * data.h - the DATA body state machine (SPEC §3.6): find the one true end
 * of a message (<CR><LF>.<CR><LF>) across any read boundaries, and apply
 * bare_newline normalize|reject|allow on the way.  Pure: no I/O.
 *
 * The proxy and the MTA must never disagree on where a message ends
 * (SMTP smuggling, CVE-2023-51764): only CRLF.CRLF ends DATA here, and in
 * normalize mode every bare CR or bare LF becomes CRLF and the line it
 * starts is dot-stuffed, so "<LF>.<LF>" reaches the MTA as "\r\n..\r\n".
 */
#ifndef SMTPGATE_DATA_H
#define SMTPGATE_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The worst-case growth of output over input (a bare LF becomes CR LF '.'). */
#define DATA_EXPANSION 3

struct data_state {
	enum bare_newline mode;
	int st;                   /* internal scanner state; 0 = start of a line */
	bool seen_bare;           /* a bare CR or LF was seen in this message */
	uint64_t bytes;           /* message bytes so far, as RFC 1870 counts them: input
	                           * before normalizing, without the dot a line begins
	                           * with (transparency) and without the end */
};

enum data_status {
	DATA_MORE,                /* all input consumed; the end not yet seen */
	DATA_END,                 /* the end was seen; *consumed stops just after it */
};

/* Start a message: the state is as just after the 354 (start of a line). */
void data_begin(struct data_state *ds, enum bare_newline mode);

/*
 * Scan in[0..inlen) and write what the MTA must receive to out, as far as
 * outsz allows (any size works; a large one moves a whole buffer at once).
 * Sets *consumed (bytes of in used) and *produced (bytes written to out);
 * the caller keeps in[*consumed..] for the next call.  On DATA_END, out
 * ends with ".\r\n" right after the CRLF that ended the last line (or,
 * for an empty body, the 354's), and the bytes after *consumed belong to
 * the command stream.  Bytes held back while deciding (a CR that may start
 * a CRLF) are kept in the state, never lost.
 */
enum data_status data_feed(struct data_state *ds, const char *in, size_t inlen,
    char *out, size_t outsz, size_t *consumed, size_t *produced);

/* The message size so far that is sure to count: ds->bytes without bytes
 * held at a line start that may yet turn out to be the terminator.  What a
 * size limit is checked against while the body streams. */
uint64_t data_size(const struct data_state *ds);

#endif
