/*
 * buf.h - fixed-size I/O buffers taken from a pool when there are bytes to
 * hold and given back as soon as they drain, so an idle session costs no
 * buffer memory (as haproxy does).  The all-zero struct is a valid empty
 * buffer.
 */
#ifndef SMTPGATE_BUF_H
#define SMTPGATE_BUF_H

#include <stddef.h>
#include <stdint.h>

#define BUF_SIZE 65536              /* relay buffers: large writes, few syscalls */
#define BUF_POOL_KEEP 128           /* free chunks kept for reuse (8 MiB at most) */

struct buf {
	char *data;                     /* NULL while empty */
	uint32_t off, len;              /* bytes held are data[off .. off+len) */
};

static inline const char *buf_head(const struct buf *b) { return b->data + b->off; }
static inline size_t buf_len(const struct buf *b) { return b->len; }

/* Room at the tail, after moving held bytes to the front; -1 on ENOMEM. */
long buf_prepare(struct buf *b);
static inline char *buf_tail(struct buf *b) { return b->data + b->off + b->len; }
static inline void buf_commit(struct buf *b, size_t n) { b->len += (uint32_t)n; }

/* Append n bytes; -1 when they do not fit (or ENOMEM), nothing appended. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Drop n bytes from the front; the chunk goes back to the pool when empty. */
void buf_drop(struct buf *b, size_t n);
void buf_release(struct buf *b);
/* Free the pool's cached chunks (at exit, for leak checkers). */
void buf_pool_drain(void);

#endif
