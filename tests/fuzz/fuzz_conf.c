/*
 * fuzz_conf.c - libFuzzer harness for the config lexer (proxy/conflex.c):
 * any bytes give a tree or errors, never a crash or a leak, and every
 * statement the tree keeps has a word and a line inside the input.
 */
#include <stdint.h>
#include <stdlib.h>

#include "conflex.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static void
check_block(const struct conf_block *b, int lines, int depth)
{
	REQUIRE(depth <= CONF_NESTING_MAX + 1);
	for (size_t i = 0; i < b->nstmts; i++) {
		const struct conf_stmt *st = &b->stmts[i];
		REQUIRE(st->nwords >= 1 && st->words != NULL);
		REQUIRE(st->file != NULL);
		/* lines of included files are their own; only the top's are bounded */
		REQUIRE(st->line >= 1);
		for (size_t w = 0; w < st->nwords; w++)
			REQUIRE(st->words[w].text != NULL);
		if (st->block != NULL)
			check_block(st->block, lines, depth + 1);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf_errs errs = { NULL, 0 };
	int lines = 1;

	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	/* "fuzz/T": includes resolve under a directory that does not exist */
	struct conf_tree *t = conf_parse_string("/nonexistent-fuzz/T", (const char *)data, size, &errs);
	REQUIRE(t != NULL);
	REQUIRE(t->nwords <= CONF_WORDS_MAX + 1);
	check_block(&t->top, lines, 0);
	conf_tree_free(t);
	return 0;
}
