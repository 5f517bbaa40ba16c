/*
 * conflex.c - lexer of the configuration language (SPEC §2): text in, a tree
 * of statements out, each with its file and line, `include` expanded in
 * place.  It knows no directive but `include` and `when` (whose words may be
 * /regexes/); config.c gives the tree its meaning.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <fnmatch.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conflex.h"

enum tok { T_EOF, T_NL, T_SEMI, T_LBRACE, T_RBRACE, T_WORD, T_BAD };

struct lexer {
	struct conf_tree *tree;
	struct conf_errs *errs;
	const char *file;                   /* interned in tree->files */
	const char *p, *end;
	int line;
	int include_depth;                  /* 0 for the top file */
	size_t len;                         /* of the word in buf */
	bool toolong;
	char buf[CONF_TOKEN_MAX + 1];
};

static int parse_block(struct lexer *, struct conf_block *, int depth,
    int open_line);

/*
 * Messages quote the file's own bytes: control characters among them would
 * move the cursor or forge lines on the admin's terminal and in the log.
 * Bytes past ASCII are shown too, as C1 controls, bidi overrides or a BOM
 * would otherwise hide what is wrong with a word.
 */
static void
put_visible(FILE *out, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\x%02x", c);
		else
			fputc(c, out);
	}
}

void
conf_error(struct conf_errs *errs, const char *file, int line,
    const char *fmt, ...)
{
	char msg[CONF_ERROR_MAX];
	va_list ap;

	errs->count++;
	if (errs->out == NULL || errs->count > CONFIG_MAX_ERRORS + 1)
		return;
	if (errs->count == CONFIG_MAX_ERRORS + 1) {
		put_visible(errs->out, file);
		fprintf(errs->out, ":%d: too many errors, giving up\n", line);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	put_visible(errs->out, file);
	fprintf(errs->out, ":%d: ", line);
	put_visible(errs->out, msg);
	fputc('\n', errs->out);
}

/*
 * Make room for element N of an array that grows by doubling: its capacity
 * is the next power of two, so it needs no field of its own.  NULL when out
 * of memory (ARR is then untouched).
 */
void *
conf_grow(void *arr, size_t n, size_t size)
{
	size_t cap;

	if (n != 0 && (n & (n - 1)) != 0)
		return arr;
	cap = n == 0 ? 1 : 2 * n;
	if (cap > SIZE_MAX / size)
		return NULL;
	return realloc(arr, cap * size);
}

static void
free_stmt(struct conf_stmt *st)
{
	size_t i;

	for (i = 0; i < st->nwords; i++)
		free(st->words[i].text);
	free(st->words);
	if (st->block != NULL) {
		for (i = 0; i < st->block->nstmts; i++)
			free_stmt(&st->block->stmts[i]);
		free(st->block->stmts);
		free(st->block);
	}
	memset(st, 0, sizeof(*st));
}

void
conf_tree_free(struct conf_tree *tree)
{
	size_t i;

	if (tree == NULL)
		return;
	for (i = 0; i < tree->top.nstmts; i++)
		free_stmt(&tree->top.stmts[i]);
	free(tree->top.stmts);
	for (i = 0; i < tree->nfiles; i++)
		free(tree->files[i]);
	free(tree->files);
	free(tree);
}

/* Statements point at their file's name; the tree owns one copy of each. */
static const char *
intern_file(struct conf_tree *tree, const char *file)
{
	char **files, *copy;

	if ((copy = strdup(file)) == NULL)
		return NULL;
	if ((files = conf_grow(tree->files, tree->nfiles, sizeof(*files))) == NULL) {
		free(copy);
		return NULL;
	}
	tree->files = files;
	tree->files[tree->nfiles++] = copy;
	return copy;
}

/*
 * The whole file, bounded by CONF_FILE_MAX; -1 with errno set on failure,
 * -2 for an include that is not a regular file.  Nothing here may block
 * the loop at SIGHUP: includes must be regular files, and the top file,
 * which may be a pipe (`smtpgate -t -c /dev/stdin`), is read with a
 * deadline.
 */
static int
read_file(const char *path, bool top, char **out, size_t *outlen)
{
	struct stat sb;
	char *buf = NULL;
	size_t len = 0, cap;
	ssize_t n;
	int fd, saved;
	uint64_t deadline = 0;

	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(fd, &sb) == -1)
		goto fail;
	if (S_ISDIR(sb.st_mode)) {
		errno = EISDIR;
		goto fail;
	}
	if (!S_ISREG(sb.st_mode) && !top) {
		close(fd);
		return -2;
	}
	if (S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > CONF_FILE_MAX) {
		errno = EFBIG;
		goto fail;
	}
	/* one byte more than the file's size: a file that grows is seen */
	cap = S_ISREG(sb.st_mode) ? (size_t)sb.st_size + 1 : 8192;
	if ((buf = malloc(cap)) == NULL)
		goto fail;
	for (;;) {
		if (len == cap) {
			char *nbuf;
			if (cap > CONF_FILE_MAX) {
				errno = EFBIG;
				goto fail;
			}
			cap = cap * 2 > CONF_FILE_MAX + 1 ? CONF_FILE_MAX + 1 : cap * 2;
			if ((nbuf = realloc(buf, cap)) == NULL)
				goto fail;
			buf = nbuf;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			/* only a pipe or a device gets here */
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
			if (deadline == 0)
				deadline = now + CONF_PIPE_WAIT_MS;
			struct pollfd pfd = { fd, POLLIN, 0 };
			if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) == 0) {
				errno = ETIMEDOUT;
				goto fail;
			}
			continue;
		}
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > CONF_FILE_MAX) {
		errno = EFBIG;
		goto fail;
	}
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;
fail:
	saved = errno;
	close(fd);
	free(buf);
	errno = saved;
	return -1;
}

static bool
give_up(const struct lexer *lx)
{
	return lx->errs->count > CONFIG_MAX_ERRORS || lx->tree->too_large;
}

/* Counts one word against CONF_WORDS_MAX; false past it. */
static bool
take_word(struct lexer *lx)
{
	if (lx->tree->too_large)
		return false;
	if (++lx->tree->nwords <= CONF_WORDS_MAX)
		return true;
	conf_error(lx->errs, lx->file, lx->line,
	    "configuration too large: more than %u words", CONF_WORDS_MAX);
	lx->tree->too_large = true;
	return false;
}

static void
put(struct lexer *lx, char c)
{
	if (lx->len < CONF_TOKEN_MAX)
		lx->buf[lx->len++] = c;
	else
		lx->toolong = true;
}

static bool
is_delim(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';' ||
	    c == '{' || c == '}' || c == '#' || c == '"';
}

/* After the opening quote.  A string ends on its line: a lost quote then
 * costs one statement, not the rest of the file. */
static bool
lex_string(struct lexer *lx)
{
	bool ok = true;
	char c;

	for (;;) {
		if (lx->p == lx->end || *lx->p == '\n') {
			conf_error(lx->errs, lx->file, lx->line,
			    "unterminated string");
			return false;
		}
		c = *lx->p++;
		if (c == '"')
			return ok;
		if (c != '\\') {
			put(lx, c);
			continue;
		}
		if (lx->p < lx->end && (*lx->p == '"' || *lx->p == '\\')) {
			put(lx, *lx->p++);
		} else if (lx->p < lx->end && *lx->p != '\n') {
			conf_error(lx->errs, lx->file, lx->line,
			    "invalid escape \"\\%c\" in string (only \\\" and "
			    "\\\\ are allowed)", *lx->p);
			lx->p++;
			ok = false;
		}
	}
}

/* After the opening slash.  Escapes other than \/ are kept for PCRE2. */
static bool
lex_regex(struct lexer *lx, unsigned *flags)
{
	bool ok = true;
	char c;

	for (;;) {
		if (lx->p == lx->end || *lx->p == '\n') {
			conf_error(lx->errs, lx->file, lx->line,
			    "unterminated regular expression");
			return false;
		}
		c = *lx->p++;
		if (c == '/')
			break;
		if (c == '\\' && lx->p < lx->end && *lx->p != '\n') {
			c = *lx->p++;
			if (c != '/')
				put(lx, '\\');
		}
		put(lx, c);
	}
	while (lx->p < lx->end && !is_delim(*lx->p)) {
		c = *lx->p++;
		if (c == 'i') {
			*flags |= CONF_REGEX_CASELESS;
		} else if (c == 'x') {
			*flags |= CONF_REGEX_EXTENDED;
		} else {
			conf_error(lx->errs, lx->file, lx->line,
			    "unknown regular expression flag \"%c\" "
			    "(only i and x)", c);
			ok = false;
		}
	}
	return ok;
}

/* A T_WORD's text is left in lx->buf, the rest in W. */
static enum tok
next_token(struct lexer *lx, struct conf_word *w, bool regex_ok)
{
	bool ok = true;
	char c;

	for (;;) {
		if (give_up(lx))
			return T_EOF;
		while (lx->p < lx->end &&
		    (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\r'))
			lx->p++;
		if (lx->p == lx->end)
			return T_EOF;
		if (*lx->p != '#')
			break;
		while (lx->p < lx->end && *lx->p != '\n')
			lx->p++;
	}
	c = *lx->p++;
	switch (c) {
	case '\n':
		lx->line++;
		return T_NL;
	case ';':
		return T_SEMI;
	case '{':
		return T_LBRACE;
	case '}':
		return T_RBRACE;
	default:
		break;
	}

	lx->len = 0;
	lx->toolong = false;
	w->line = lx->line;
	w->flags = 0;
	if (c == '"') {
		w->kind = CONF_WORD_STRING;
		ok = lex_string(lx);
	} else if (c == '/' && regex_ok) {
		w->kind = CONF_WORD_REGEX;
		ok = lex_regex(lx, &w->flags);
	} else {
		w->kind = CONF_WORD_BARE;
		lx->p--;
		while (lx->p < lx->end && !is_delim(*lx->p))
			put(lx, *lx->p++);
	}
	lx->buf[lx->len] = '\0';
	if (lx->toolong) {
		conf_error(lx->errs, lx->file, w->line,
		    "word longer than %d characters", CONF_TOKEN_MAX);
		return T_BAD;
	}
	return ok ? T_WORD : T_BAD;
}

/* Past a block that is not kept, braces counted without recursion. */
static void
skip_block(struct lexer *lx)
{
	struct conf_word w;
	unsigned depth = 1;

	while (depth > 0) {
		switch (next_token(lx, &w, true)) {
		case T_EOF:
			return;
		case T_LBRACE:
			depth++;
			break;
		case T_RBRACE:
			depth--;
			break;
		default:
			break;
		}
	}
}

static int
add_word(struct conf_stmt *st, const struct conf_word *w, const char *text)
{
	struct conf_word *words;
	char *copy;

	if ((copy = strdup(text)) == NULL)
		return -1;
	if ((words = conf_grow(st->words, st->nwords, sizeof(*words))) == NULL) {
		free(copy);
		return -1;
	}
	st->words = words;
	st->words[st->nwords] = *w;
	st->words[st->nwords].text = copy;
	st->nwords++;
	return 0;
}

static bool
is_bare(const struct conf_word *w, const char *s)
{
	return w->kind == CONF_WORD_BARE && strcmp(w->text, s) == 0;
}

/* Read one file's statements into BLK; -1 only when out of memory. */
static int
include_one(struct lexer *lx, struct conf_block *blk, const char *path,
    int line, int depth)
{
	struct lexer *sub;
	char *text;
	const char *nul;
	size_t len;
	int r;

	if (lx->tree->too_large)
		return 0;
	if (++lx->tree->nreads > CONF_READS_MAX) {
		conf_error(lx->errs, lx->file, line,
		    "include: more than %u files read in all (includes that fan out?)",
		    CONF_READS_MAX);
		lx->tree->too_large = true;
		return 0;
	}
	if ((r = read_file(path, false, &text, &len)) < 0) {
		if (r == -1 && errno == ENOMEM)
			return -1;
		conf_error(lx->errs, lx->file, line,
		    "include: cannot read \"%s\": %s", path,
		    r == -2 ? "not a regular file" : strerror(errno));
		return 0;
	}
	/* on the heap: CONF_TOKEN_MAX per level of include */
	if ((sub = calloc(1, sizeof(*sub))) == NULL) {
		free(text);
		return -1;
	}
	sub->tree = lx->tree;
	sub->errs = lx->errs;
	sub->p = text;
	sub->end = text + len;
	sub->line = 1;
	sub->include_depth = lx->include_depth + 1;
	if ((sub->file = intern_file(lx->tree, path)) == NULL)
		r = -1;
	else if ((nul = memchr(text, '\0', len)) != NULL) {
		int nline = 1;
		for (const char *c = text; c < nul; c++)
			nline += *c == '\n';
		conf_error(lx->errs, sub->file, nline, "file contains a NUL byte");
		r = 0;
	} else
		r = parse_block(sub, blk, depth, 0);
	free(sub);
	free(text);
	return r;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The names in DIR matching PATTERN, sorted (a dot file only when the
 * pattern says so), into *OUT; -1 with errno set (ENOENT: no such
 * directory).  Any failure to read it is an error, never "nothing", or a
 * reload after dropping privileges would silently lose those files.
 */
static int
match_dir(const char *dir, const char *pattern, char ***out, size_t *n)
{
	DIR *d;
	struct dirent *de;
	char **names = NULL, **grown;
	int saved;

	*out = NULL;
	*n = 0;
	if ((d = opendir(dir)) == NULL)
		return -1;
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL)
			break;
		if (fnmatch(pattern, de->d_name, FNM_PERIOD) != 0)
			continue;
		if (*n >= CONF_READS_MAX) {
			errno = E2BIG;
			break;
		}
		if ((grown = conf_grow(names, *n, sizeof(*names))) == NULL)
			break;
		names = grown;
		if ((names[*n] = strdup(de->d_name)) == NULL)
			break;
		(*n)++;
	}
	saved = errno;
	closedir(d);
	if (saved != 0) {
		while (*n > 0)
			free(names[--*n]);
		free(names);
		errno = saved;
		return -1;
	}
	if (*n > 1)
		qsort(names, *n, sizeof(*names), cmp_names);
	*out = names;
	return 0;
}

static bool
has_pattern(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '*' || s[i] == '?' || s[i] == '[')
			return true;
	return false;
}

/*
 * `include PATH`: relative to the including file.  The file name of PATH
 * may be a pattern (`*`, `?`, `[...]`), which may match nothing (an empty
 * conf.d); its directories are taken as written, so every directory read
 * is one the admin named.  A name that exists is read as it is, pattern
 * characters and all.
 */
static int
do_include(struct lexer *lx, struct conf_block *blk,
    const struct conf_stmt *st, int depth)
{
	const char *path, *slash, *base;
	char *full, *dir, *one, **names;
	struct stat sb;
	size_t i, n, dirlen = 0, pdirlen;
	int r = 0;

	if (st->nwords != 2 || st->block != NULL) {
		conf_error(lx->errs, st->file, st->line,
		    "include: expected one path");
		return 0;
	}
	if (lx->include_depth + 1 > CONFIG_INCLUDE_DEPTH) {
		conf_error(lx->errs, st->file, st->line,
		    "include: nested more than %d deep (an include cycle?)",
		    CONFIG_INCLUDE_DEPTH);
		return 0;
	}
	path = st->words[1].text;
	slash = strrchr(lx->file, '/');
	if (path[0] != '/' && slash != NULL)
		dirlen = (size_t)(slash - lx->file) + 1;
	if ((full = malloc(dirlen + strlen(path) + 1)) == NULL)
		return -1;
	memcpy(full, lx->file, dirlen);
	strcpy(full + dirlen, path);
	base = strrchr(path, '/');
	pdirlen = base ? (size_t)(base - path) : 0;
	base = base ? base + 1 : path;

	if (!has_pattern(base, strlen(base)) || stat(full, &sb) == 0) {
		r = include_one(lx, blk, full, st->line, depth);
		free(full);
		return r;
	}
	/* FULL's directory, with its slash ("./" for a bare name) */
	if ((dir = malloc(strlen(full) - strlen(base) + 3)) == NULL) {
		free(full);
		return -1;
	}
	if (base == path && dirlen == 0)
		strcpy(dir, "./");
	else {
		memcpy(dir, full, strlen(full) - strlen(base));
		dir[strlen(full) - strlen(base)] = '\0';
	}
	if (match_dir(dir, base, &names, &n) == -1) {
		int e = errno;
		free(dir);
		if (e == ENOMEM) {
			free(full);
			return -1;
		}
		if (e == ENOENT && has_pattern(path, pdirlen))
			goto dir_pattern;
		/* no such directory: a pattern that matches nothing */
		if (e != ENOENT)
			conf_error(lx->errs, st->file, st->line,
			    "include: cannot read the directory of \"%s\": %s", full,
			    e == E2BIG ? "more files match than one load may read" :
			    strerror(e));
		free(full);
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (r == 0 && (one = malloc(strlen(dir) + strlen(names[i]) + 1)) == NULL)
			r = -1;
		if (r == 0) {
			strcpy(one, dir);
			strcat(one, names[i]);
			r = include_one(lx, blk, one, st->line, depth);
			free(one);
		}
		free(names[i]);
	}
	free(names);
	free(dir);
	free(full);
	return r;

dir_pattern:
	conf_error(lx->errs, st->file, st->line,
	    "include: cannot read \"%s\": a pattern may only be in the file name",
	    full);
	free(full);
	return 0;
}

/* A complete statement goes into BLK, is expanded (include), or dropped. */
static int
end_stmt(struct lexer *lx, struct conf_block *blk, struct conf_stmt *st,
    bool *broken, int depth)
{
	struct conf_stmt *stmts;
	int r = 0;

	if (*broken || st->nwords == 0) {
		free_stmt(st);
	} else if (is_bare(&st->words[0], "include")) {
		r = do_include(lx, blk, st, depth);
		free_stmt(st);
	} else if ((stmts = conf_grow(blk->stmts, blk->nstmts,
	    sizeof(*stmts))) == NULL) {
		free_stmt(st);
		r = -1;
	} else {
		blk->stmts = stmts;
		blk->stmts[blk->nstmts++] = *st;
		memset(st, 0, sizeof(*st));
	}
	*broken = false;
	return r;
}

/*
 * Statements until EOF, or until the `}` that closes the block opened on
 * OPEN_LINE (0: none is open).  0 when done, 1 when that `}` never came,
 * -1 when out of memory.
 */
static int
parse_block(struct lexer *lx, struct conf_block *blk, int depth,
    int open_line)
{
	struct conf_stmt st;
	struct conf_word w;
	bool broken = false, when;
	int line, r;

	memset(&st, 0, sizeof(st));
	for (;;) {
		when = st.nwords > 0 && is_bare(&st.words[0], "when");
		switch (next_token(lx, &w, when)) {
		case T_WORD:
			if (!take_word(lx)) {
				broken = true;
				break;
			}
			if (add_word(&st, &w, lx->buf) == -1)
				goto oom;
			if (st.nwords == 1) {
				st.file = lx->file;
				st.line = w.line;
			}
			break;
		case T_BAD:
			broken = true;
			break;
		case T_NL:
		case T_SEMI:
			if (end_stmt(lx, blk, &st, &broken, depth) == -1)
				goto oom;
			break;
		case T_LBRACE:
			line = lx->line;
			if (st.nwords == 0) {
				conf_error(lx->errs, lx->file, line,
				    "a block must follow a directive");
				broken = true;
			}
			if (depth + 1 > CONF_NESTING_MAX) {
				conf_error(lx->errs, lx->file, line,
				    "blocks nested more than %d deep",
				    CONF_NESTING_MAX);
				broken = true;
				skip_block(lx);
			} else {
				if ((st.block = calloc(1, sizeof(*st.block))) ==
				    NULL)
					goto oom;
				r = parse_block(lx, st.block, depth + 1, line);
				if (r == -1)
					goto oom;
				/* dropped, or it would stand for what it
				 * swallowed and cause errors of its own */
				if (r == 1)
					broken = true;
			}
			/* `}` ends the statement: `a { b } c` is two */
			if (end_stmt(lx, blk, &st, &broken, depth) == -1)
				goto oom;
			break;
		case T_RBRACE:
			if (end_stmt(lx, blk, &st, &broken, depth) == -1)
				goto oom;
			if (open_line > 0)
				return 0;
			conf_error(lx->errs, lx->file, lx->line,
			    "unexpected \"}\"");
			break;
		case T_EOF:
			if (end_stmt(lx, blk, &st, &broken, depth) == -1)
				goto oom;
			/* stopped early (a bound, too many errors): said already */
			if (open_line == 0 || give_up(lx))
				return 0;
			conf_error(lx->errs, lx->file, open_line,
			    "\"{\" is never closed");
			return 1;
		}
	}
oom:
	free_stmt(&st);
	return -1;
}

struct conf_tree *
conf_parse_string(const char *name, const char *text, size_t len,
    struct conf_errs *errs)
{
	struct conf_tree *tree;
	struct lexer *lx;
	const char *nul;
	int line;

	if ((tree = calloc(1, sizeof(*tree))) == NULL)
		goto oom;
	if ((lx = calloc(1, sizeof(*lx))) == NULL)
		goto oom;
	lx->tree = tree;
	lx->errs = errs;
	lx->p = text;
	lx->end = text + len;
	lx->line = 1;
	if ((lx->file = intern_file(tree, name)) == NULL) {
		free(lx);
		goto oom;
	}
	/* C strings from here on: a NUL would silently cut a word */
	if ((nul = memchr(text, '\0', len)) != NULL) {
		line = 1;
		for (; text < nul; text++)
			line += *text == '\n';
		conf_error(errs, lx->file, line, "file contains a NUL byte");
		free(lx);
		return tree;
	}
	if (parse_block(lx, &tree->top, 0, 0) == -1) {
		free(lx);
		goto oom;
	}
	/* the last line, not the empty one after its newline */
	tree->last_line = lx->line;
	if (len > 0 && text[len - 1] == '\n' && tree->last_line > 1)
		tree->last_line--;
	free(lx);
	return tree;
oom:
	conf_tree_free(tree);
	conf_error(errs, name, 0, "out of memory");
	return NULL;
}

struct conf_tree *
conf_parse_file(const char *file, struct conf_errs *errs)
{
	struct conf_tree *tree;
	char *text;
	size_t len;

	if (read_file(file, true, &text, &len) == -1) {
		conf_error(errs, file, 0, "cannot read: %s", strerror(errno));
		if ((tree = calloc(1, sizeof(*tree))) == NULL)
			conf_error(errs, file, 0, "out of memory");
		return tree;
	}
	tree = conf_parse_string(file, text, len, errs);
	free(text);
	return tree;
}
