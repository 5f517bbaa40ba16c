/*
 * smtp.h - pure SMTP parsers: client command lines, upstream replies, and
 * the EHLO reply rewrite (SPEC §3.2).  No I/O, no allocation: bytes in,
 * result out, so Check can table-test them and libFuzzer can fuzz them.
 */
#ifndef SMTPGATE_SMTP_H
#define SMTPGATE_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_LINE_MAX 512           /* RFC 5321 §4.5.3.1.4, with CRLF */
#define SMTP_LINE_MAX_PARAMS 4096   /* MAIL/RCPT/AUTH with ESMTP parameters */
#define SMTP_AUTH_LINE_MAX 12288    /* an answer inside AUTH (RFC 4954 §4), with CRLF */
#define SMTP_PATH_MAX 256           /* RFC 5321 §4.5.3.1.3 */
#define SMTP_REPLY_LINE_MAX 2048    /* one upstream reply line, with CRLF */
#define SMTP_REPLY_MAX 16384        /* one whole (multi-line) upstream reply */

/* ---- command lines ------------------------------------------------------ */

enum smtp_line_status {
	SMTP_LINE_AGAIN,      /* no complete line yet: read more, call again */
	SMTP_LINE_OK,         /* a line of *linelen bytes (CRLF excluded) */
	SMTP_LINE_TOO_LONG,   /* over the limit (lp->max); the line is discarded up to its LF */
	SMTP_LINE_BAD,        /* NUL, bare CR or bare LF inside the line; discarded */
};

/*
 * Resumable line splitter.  The caller keeps its unread bytes at the start
 * of a buffer and passes them all each time; the splitter remembers how far
 * it has scanned so each byte is looked at once.  Zero it to start.
 */
struct smtp_lineparser {
	size_t max;           /* line limit with CRLF; 0 = SMTP_LINE_MAX_PARAMS */
	size_t scanned;       /* bytes of the current line already scanned */
	bool discarding;      /* inside an overlong line, skipping to LF */
	bool bad;             /* the current line held a NUL or bare CR */
};

/*
 * Look at buf[0..len).  Returns the status and sets *consumed to the number
 * of bytes the caller must drop from the front of its buffer (the line and
 * its terminator, or discarded bytes).  For SMTP_LINE_OK the line is
 * buf[0..*linelen).  AGAIN with *consumed > 0 happens while discarding.
 * TOO_LONG is returned once per overlong line, as soon as the line passes
 * the limit, so the reply need not wait for its end.
 */
enum smtp_line_status smtp_line_next(struct smtp_lineparser *lp,
    const char *buf, size_t len, size_t *linelen, size_t *consumed);

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,    /* relayed to the MTA as it is */
	SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_MAIL, SMTP_VERB_RCPT,
	SMTP_VERB_DATA, SMTP_VERB_RSET, SMTP_VERB_NOOP, SMTP_VERB_QUIT,
	SMTP_VERB_VRFY, SMTP_VERB_EXPN, SMTP_VERB_HELP, SMTP_VERB_AUTH,
	SMTP_VERB_STARTTLS, SMTP_VERB_BDAT,
	SMTP_VERB_COUNT
};

enum smtp_cmd_status {
	SMTP_CMD_OK,
	SMTP_CMD_SYNTAX,      /* 501 5.5.4 / 501 5.1.7 class: bad arguments */
	SMTP_CMD_TOO_LONG,    /* 500 5.5.2: over SMTP_LINE_MAX for this verb */
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg;      /* after the verb and its spaces; not terminated */
	size_t arglen;        /* trailing spaces removed */
	/* MAIL FROM / RCPT TO only: */
	const char *path;     /* the address without <>; "" (len 0) for <> */
	size_t pathlen;
	const char *params;   /* ESMTP parameters after the path, or NULL */
	size_t paramslen;
};

/*
 * Parse one line (CRLF excluded).  Verbs are case-insensitive.  MAIL needs
 * "FROM:" and RCPT "TO:" followed by a <path> (a space after the colon is
 * tolerated, as most MTAs do); a bare address without <> is SMTP_CMD_SYNTAX.
 * Returns SMTP_CMD_TOO_LONG when the line minus ESMTP parameters exceeds
 * SMTP_LINE_MAX - 2 octets.  The line's bytes are not modified.
 */
enum smtp_cmd_status smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd);

/* "MAIL", "RCPT", ... for logs; "?" for unknown. */
const char *smtp_verb_name(enum smtp_verb);

/*
 * Find an ESMTP parameter (case-insensitive keyword) in params; returns
 * true and sets *val and *vallen (vallen 0 for a keyword without "=value").
 */
bool smtp_param_find(const char *params, size_t len, const char *keyword,
    const char **val, size_t *vallen);

/* ---- upstream replies --------------------------------------------------- */

enum smtp_reply_status {
	SMTP_REPLY_AGAIN,     /* no complete reply yet */
	SMTP_REPLY_OK,        /* a complete reply of *replylen bytes at buf[0] */
	SMTP_REPLY_BAD,       /* not SMTP (bad code, mixed codes), or over the limits */
};

/* Resumable reply splitter; zero it to start, and after each OK reply. */
struct smtp_replyparser {
	size_t scanned;       /* bytes of the current reply already scanned */
	size_t linestart;     /* offset of the current line in the reply */
	int code;             /* code of the first line, 0 before it is known */
	unsigned lines;
};

#define SMTP_REPLY_LINES_MAX 128

/*
 * Look at buf[0..len) (the start of the reply is at buf[0]).  On OK, the
 * reply is buf[0..*replylen) including every CRLF, and *code is its 3-digit
 * code.  A reply line may end in a bare LF (tolerated from the MTA).
 */
enum smtp_reply_status smtp_reply_next(struct smtp_replyparser *rp,
    const char *buf, size_t len, size_t *replylen, int *code);

/* ---- the EHLO rewrite --------------------------------------------------- */

struct smtp_ehlo_opts {
	bool starttls;            /* advertise STARTTLS (the proxy terminates TLS) */
	bool hide_auth;           /* drop AUTH (auth require-tls, before TLS) */
	uint64_t max_size;        /* our max_message_size; 0 = no limit of ours */
};

/* What the MTA's EHLO reply said, for the session to use. */
struct smtp_ehlo_info {
	bool pipelining;
	bool starttls;
	bool auth;
	bool xclient;
	bool size;
	uint64_t size_value;      /* 0 = no limit stated */
};

/*
 * Rewrite a complete 250 EHLO reply in[0..len) into out (at most outsz
 * bytes): STARTTLS added or removed per opts, XCLIENT, XFORWARD, CHUNKING
 * and BINARYMIME removed, SIZE set to the lower of the MTA's and ours,
 * AUTH (and AUTH=...) dropped when hide_auth; every line but the last uses
 * "250-", the last "250 ".  Fills *info when not NULL.  Returns the length
 * written, or -1 when the input is not a 250 reply or out is too small.
 */
long smtp_ehlo_rewrite(const char *in, size_t len, const struct smtp_ehlo_opts *opts,
    char *out, size_t outsz, struct smtp_ehlo_info *info);

#endif
