/*
 * conflex.h - the configuration language below its meaning (SPEC §2): the
 * lexer and the generic tree of statements it builds, includes expanded.
 *
 * config.c gives the tree its meaning; keeping the two apart lets the tests
 * check quoting, `;`, blocks, regex tokens and includes without any directive,
 * and lets a new directive be added without touching the lexer.
 */
#ifndef SMTPGATE_CONFLEX_H
#define SMTPGATE_CONFLEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CONF_TOKEN_MAX 4096             /* longest word, string or regex */
#define CONF_NESTING_MAX 8              /* blocks inside blocks */
#define CONF_FILE_MAX (16u << 20)       /* bytes in one file */
/* Bounds on one whole load, includes and all: a config that fans out
 * (each file including the next several times) or repeats one file many
 * times is refused at once instead of eating the memory and the time of
 * the running proxy at SIGHUP. */
#define CONF_READS_MAX 1024             /* files read */
#define CONF_PIPE_WAIT_MS 5000         /* a top file that is a pipe: all of it by then */
#define CONF_WORDS_MAX (1u << 18)       /* words (a statement has one at least) */

enum conf_word_kind {
	CONF_WORD_BARE,                     /* user, 127.0.0.1:25, /etc/x.pem */
	CONF_WORD_STRING,                   /* "quoted", escapes resolved */
	CONF_WORD_REGEX,                    /* /re/flags, only in `when` */
};

/* conf_word.flags of a CONF_WORD_REGEX */
#define CONF_REGEX_CASELESS 0x1u        /* i */
#define CONF_REGEX_EXTENDED 0x2u        /* x */

struct conf_word {
	enum conf_word_kind kind;
	char *text;                         /* for a regex: the pattern, `\/` made `/` */
	unsigned flags;
	int line;
};

struct conf_block;

struct conf_stmt {
	const char *file;                   /* owned by the conf_tree */
	int line;                           /* of the first word */
	struct conf_word *words;            /* nwords >= 1 */
	size_t nwords;
	struct conf_block *block;           /* NULL when no `{ }` followed */
};

struct conf_block {
	struct conf_stmt *stmts;
	size_t nstmts;
};

struct conf_tree {
	struct conf_block top;
	char **files;                       /* every file read, for conf_stmt.file */
	size_t nfiles;
	int last_line;                      /* of the top file, for whole-file errors */
	size_t nreads;                      /* files read so far (CONF_READS_MAX) */
	size_t nwords;                      /* words so far (CONF_WORDS_MAX) */
	bool too_large;                     /* a bound was hit: reported, parsing stopped */
};

/* Errors are counted here and written as "FILE:LINE: message\n". */
struct conf_errs {
	FILE *out;                          /* may be NULL: count only */
	int count;
};

void conf_error(struct conf_errs *, const char *file, int line,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Build the tree of FILE (or of TEXT, named NAME in messages and used as the
 * base of relative includes).  Broken statements are reported to ERRS and
 * left out, so the caller can go on finding errors in the rest; check
 * errs->count.  NULL only when out of memory.
 */
struct conf_tree *conf_parse_file(const char *file, struct conf_errs *errs);
struct conf_tree *conf_parse_string(const char *name, const char *text,
    size_t len, struct conf_errs *errs);
void conf_tree_free(struct conf_tree *);

/*
 * Make room for element N of an array that grows by doubling: its capacity
 * is the next power of two, so it needs no field of its own.  NULL when out
 * of memory (ARR is then untouched).
 */
void *conf_grow(void *arr, size_t n, size_t size);

#endif
