/*
 * buf.c - pooled fixed-size buffers; see buf.h for why they come and go.
 */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

struct chunk { struct chunk *next; };

static struct chunk *pool;
static unsigned pool_len;

static char *chunk_get(void)
{
	if (pool) {
		struct chunk *c = pool;
		pool = c->next;
		pool_len--;
		return (char *)c;
	}
	return malloc(BUF_SIZE);
}

static void chunk_put(char *p)
{
	if (pool_len >= BUF_POOL_KEEP) {
		free(p);
		return;
	}
	struct chunk *c = (struct chunk *)(void *)p;
	c->next = pool;
	pool = c;
	pool_len++;
}

long buf_prepare(struct buf *b)
{
	if (!b->data) {
		b->data = chunk_get();
		if (!b->data)
			return -1;
		b->off = b->len = 0;
	} else if (b->off > 0 && b->off + b->len > BUF_SIZE / 2) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
	}
	return (long)(BUF_SIZE - b->off - b->len);
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	long room = buf_prepare(b);

	if (room < 0 || (size_t)room < n) {
		if (b->data && b->off > 0) {
			memmove(b->data, b->data + b->off, b->len);
			b->off = 0;
			room = BUF_SIZE - b->len;
		}
		if (room < 0 || (size_t)room < n) {
			if (b->len == 0)
				buf_release(b);
			return -1;
		}
	}
	memcpy(buf_tail(b), p, n);
	b->len += (uint32_t)n;
	return 0;
}

void buf_drop(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_release(b);
		return;
	}
	b->off += (uint32_t)n;
	b->len -= (uint32_t)n;
}

void buf_release(struct buf *b)
{
	if (b->data)
		chunk_put(b->data);
	b->data = NULL;
	b->off = b->len = 0;
}

void buf_pool_drain(void)
{
	while (pool) {
		struct chunk *c = pool;
		pool = c->next;
		free(c);
	}
	pool_len = 0;
}
